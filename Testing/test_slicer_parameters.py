"""Panel parameters <-> a real vtkMRMLScriptedModuleNode (slicer-core); core options;
dependency check; sample data phantom file."""

from __future__ import annotations

import dataclasses
import json

import pytest
import slicer_fixtures
from CTMuscleBoneSlicer.install import (
    DICOM_PACKAGES,
    REPORT_PACKAGES,
    SEGMENTATION_PACKAGES,
    missing_packages,
    read_requirements,
    requirement_name,
    requirements_file,
    requirements_for,
)
from CTMuscleBoneSlicer.parameters import INPUT_VOLUME_ROLE, CTMuscleBoneParameters

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")


def _parameter_node(scene):
    import slicer

    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetAttribute("ModuleName", "CTMuscleBone")  # as ScriptedLoadableModuleLogic does
    return scene.AddNode(node)


def test_parameters_round_trip_through_a_scripted_module_node(slicer_env):
    import slicer

    volume = slicer_env.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    p = CTMuscleBoneParameters(
        input_volume_id=volume.GetID(), sex="F", age_years=72.5, height_m=1.55,
        model="my-model", mc_samples=7, device="cpu", calibration="fixed", phantom="QRM-BDC",
        fixed_slope_mg_cm3_per_hu=0.81, fixed_intercept_mg_cm3=-2.5, fixed_material="HA",
        density_model="hu_linear", criteria="ewgsop2", heatmap_opacity=0.3,
        heatmap_threshold=0.02, heatmap_visible=False, output_folder="/some/folder",
        deidentify=True, export_dicom=True)
    node = _parameter_node(slicer_env.scene)
    p.to_parameter_node(node)
    assert node.GetNodeReference(INPUT_VOLUME_ROLE) is volume
    assert node.GetParameter("heatmap_visible") == "false"
    assert CTMuscleBoneParameters.from_parameter_node(node) == p

    # the settings persist with the scene: write the scene XML and read it into a new one
    slicer_env.scene.SetSaveToXMLString(1)
    slicer_env.scene.Commit()
    xml = slicer_env.scene.GetSceneXMLString()
    scene2 = slicer.vtkMRMLScene()
    scene2.SetLoadFromXMLString(1)
    scene2.SetSceneXMLString(xml)
    scene2.Import()
    nodes2 = scene2.GetNodesByClass("vtkMRMLScriptedModuleNode")
    node2 = next(nodes2.GetItemAsObject(i) for i in range(nodes2.GetNumberOfItems())
                 if nodes2.GetItemAsObject(i).GetAttribute("ModuleName") == "CTMuscleBone")
    assert CTMuscleBoneParameters.from_parameter_node(node2) == p
    scene2.Clear(True)


def test_empty_or_bad_parameter_node_gives_defaults(slicer_env):
    node = _parameter_node(slicer_env.scene)
    assert CTMuscleBoneParameters.from_parameter_node(node) == CTMuscleBoneParameters()
    node.SetParameter("device", "tpu")
    node.SetParameter("mc_samples", "many")
    node.SetParameter("heatmap_opacity", "7")
    p = CTMuscleBoneParameters.from_parameter_node(node)
    assert (p.device, p.mc_samples, p.heatmap_opacity) == ("auto", 0, 1.0)


def test_segment_and_measure_options():
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.calibration.model import Calibration
    from CTMuscleBoneLib.calibration.stored import fixed_calibration
    from CTMuscleBoneLib.errors import InputError

    p = CTMuscleBoneParameters(sex="M", height_m=1.8, age_years=0, mc_samples=0, device="cpu",
                               phantom="B-MAS200")
    seg = p.to_segment_options(seed=4)
    assert seg == pipeline.SegmentOptions(model=None, samples=None, seed=4, device="cpu")
    m = p.to_measure_options()
    assert isinstance(m, pipeline.MeasureOptions)
    assert (m.sex, m.height_m, m.age_years, m.calibration, m.phantom) == (
        "M", 1.8, None, "auto", "B-MAS200")
    assert m.kvp is None  # 0: from the DICOM header (unknown for a NIfTI volume)
    assert CTMuscleBoneParameters(kvp=120.0).to_measure_options().kvp == 120.0
    with pytest.raises(InputError, match="tube voltage"):
        CTMuscleBoneParameters(kvp=20.0).to_measure_options()
    assert CTMuscleBoneParameters(calibration="internal", phantom="B-MAS200"
                                  ).to_measure_options().phantom is None
    fixed = CTMuscleBoneParameters(calibration="fixed", fixed_slope_mg_cm3_per_hu=0.8,
                                   fixed_intercept_mg_cm3=-1.0).to_measure_options()
    assert fixed.calibration == "fixed"
    assert (fixed.fixed_slope_mg_cm3_per_hu, fixed.fixed_intercept_mg_cm3,
            fixed.fixed_material) == (0.8, -1.0, "K2HPO4")
    cal = fixed_calibration(fixed.fixed_slope_mg_cm3_per_hu, fixed.fixed_intercept_mg_cm3,
                            fixed.fixed_material)
    assert isinstance(cal, Calibration) and cal.method == "fixed"
    assert cal.bmd_mg_cm3(100.0) == pytest.approx(79.0)
    with pytest.raises(InputError):  # an implausible line is refused by the core
        CTMuscleBoneParameters(calibration="fixed", fixed_slope_mg_cm3_per_hu=80.0
                               ).to_measure_options()


def test_every_field_has_a_default_and_a_simple_type():
    for f in dataclasses.fields(CTMuscleBoneParameters):
        assert isinstance(f.default, (str, int, float, bool)), f.name


def test_missing_packages():
    assert missing_packages(["numpy>=1.0", "pytest"]) == []
    assert missing_packages(["numpy>=999"]) == ["numpy>=999"]
    assert missing_packages(["surely-not-installed-pkg-ctmb"]) == ["surely-not-installed-pkg-ctmb"]
    assert missing_packages(['surely-not-installed-pkg-ctmb; python_version < "3"']) == []


def test_requirements_file_lists_each_group_not_torch_with_the_extras_floors():
    import re
    from pathlib import Path

    reqs = read_requirements(requirements_file())
    names = [requirement_name(r) for r in reqs]
    assert sorted(names) == sorted(SEGMENTATION_PACKAGES + REPORT_PACKAGES + DICOM_PACKAGES)
    assert "torch" not in names  # through the PyTorch extension
    assert requirements_for(["highdicom"]) == ["highdicom>=0.23"]
    with pytest.raises(ValueError, match="torch not listed"):
        requirements_for(["torch"])
    # the same version floors as the pip extras (segmentation, reports, dicom)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    extras = set(re.findall(r'"([A-Za-z0-9_.-]+>=[0-9.]+)"', pyproject))
    assert set(reqs) <= extras, set(reqs) - extras


def test_demo_ct_file_is_built_once_and_reused(tmp_path, monkeypatch):
    from CTMuscleBoneLib.io_ct import read_ct
    from CTMuscleBoneSlicer import sample_data

    path = sample_data.write_demo_ct(tmp_path, spacing_mm=8.0)
    ct = read_ct(path)
    assert ct.geometry.spacing_mm == pytest.approx((8.0, 8.0, 8.0))
    assert ct.hu.min() <= -900 and ct.hu.max() > 500  # air and bone: a CT in HU
    stamp = json.loads((tmp_path / (sample_data.FILE_NAME + ".json")).read_text())
    assert stamp["seed"] == sample_data.DEMO_SEED
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(sample_data, "demo_phantom", None)  # must not be rebuilt
    assert sample_data.write_demo_ct(tmp_path, spacing_mm=8.0) == path
    assert path.stat().st_mtime_ns == mtime
