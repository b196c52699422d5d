"""The module logic on real MRML classes (slicer-core): results go back onto the volume
segmented with the settings it was started with; the scene and the case are replaced only
when the import succeeds; nothing of ours is left behind (display nodes included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer_fixtures
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneSlicer import nodes
from CTMuscleBoneSlicer.logic import CREATED_FOR_ATTRIBUTE, AnalysisLogic
from CTMuscleBoneSlicer.parameters import CTMuscleBoneParameters
from CTMuscleBoneSlicer.process import ProcessRunner

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")


@pytest.fixture(scope="module")
def phantom():
    from CTMuscleBoneLib.phantoms.builder import PhantomSpec, make_phantom

    return make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, bones=(), vessels=False,
                                    muscles=("rectus_femoris", "sartorius")))


def _volume(scene, phantom, name="CT"):
    return nodes.volume_node_from_array(scene, phantom.ct.hu, phantom.geometry, name)


def _fake_outputs(out_dir: Path, phantom, heatmap_geometry: Geometry | None = None,
                  n_classes: int | None = 31) -> Path:
    """What the worker writes (outputs.json, labels, one uncertainty map, review.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, _ = write_label_map(phantom.labels, out_dir / "labels.nrrd")
    g = heatmap_geometry or phantom.geometry
    variance = np.linspace(0.0, 1.0, int(np.prod(g.shape)), dtype=np.float32).reshape(g.shape)
    heatmap = write_image(variance, g, out_dir / "uncertainty_predictive_variance.nrrd")
    review = out_dir / "review.json"
    review.write_text(json.dumps({"structures": [{"key": "sartorius_left", "score": 0.5}]}))
    files = {"labels": str(labels), "uncertainty_predictive_variance": str(heatmap),
             "review_json": str(review)}
    summary = {"files": files, "synthetic": True, "clinical_use_warning": "SYNTHETIC"}
    if n_classes is not None:  # written by the worker since the heatmap's fixed scale
        summary["n_classes"] = n_classes
    (out_dir / "outputs.json").write_text(json.dumps(summary))
    return out_dir


def _job(logic: AnalysisLogic, volume, params, tmp_path: Path, phantom, **kw):
    job = logic.prepare_job(volume, params, work_dir=tmp_path / "work")
    _fake_outputs(logic.work_dir / "out", phantom, **kw)
    return job


def _ids(scene) -> set[str]:
    c = scene.GetNodes()
    return {c.GetItemAsObject(i).GetID() for i in range(c.GetNumberOfItems())}


def _orphan_display_nodes(scene) -> set[str]:
    """Display nodes no displayable node of the scene shows through."""
    c = scene.GetNodes()
    all_nodes = [c.GetItemAsObject(i) for i in range(c.GetNumberOfItems())]
    used = {n.GetNthDisplayNodeID(k) for n in all_nodes
            if n.IsA("vtkMRMLDisplayableNode") for k in range(n.GetNumberOfDisplayNodes())}
    return {n.GetID() for n in all_nodes if n.IsA("vtkMRMLDisplayNode")} - used


# ------------------------------------------------------------------------------------
# 2. the results go to the CT segmented, with the settings it was started with
# ------------------------------------------------------------------------------------
def test_import_uses_the_recorded_volume_and_settings(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), heatmap_opacity=0.3,
                                    sex="F")
    logic = AnalysisLogic()
    job = _job(logic, volume, params, tmp_path, phantom)
    assert job.volume_node_id == volume.GetID() and job.ct_path.is_file()
    params.heatmap_opacity = 0.9  # the panel changes while the worker runs
    params.sex = "M"
    case = logic.import_segmentation()
    assert case.volume_node is volume and case.params.heatmap_opacity == 0.3
    assert case.params.sex == "F" and logic.job is None
    assert case.segmentation_node.GetAttribute(CREATED_FOR_ATTRIBUTE) == volume.GetID()
    for comp in slicer_env.composite_nodes():  # the heatmap shown with the recorded opacity
        assert comp.GetForegroundOpacity() == pytest.approx(0.3)
        assert comp.GetBackgroundVolumeID() == volume.GetID()


def test_import_refuses_another_volume(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume, other = _volume(scene, phantom), _volume(scene, phantom, "other CT")
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path, phantom)
    n = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="belong to 'CT'"):
        logic.import_segmentation(other, CTMuscleBoneParameters())
    assert scene.GetNumberOfNodes() == n and logic.case is None


def test_import_refuses_a_removed_volume(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path, phantom)
    nodes.remove_with_display(scene, volume)
    n = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="no longer in the scene"):
        logic.import_segmentation()
    assert scene.GetNumberOfNodes() == n and logic.case is None


def test_import_refuses_a_volume_whose_grid_changed(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path, phantom)
    volume.SetSpacing(1.0, 1.0, 1.0)  # e.g. replaced by a resampled copy under the same ID
    with pytest.raises(InputError, match="voxel grid"):
        logic.import_segmentation()
    assert logic.case is None


# ------------------------------------------------------------------------------------
# 8. the uncertainty maps must be on the CT grid
# ------------------------------------------------------------------------------------
def test_heatmap_on_another_grid_is_refused(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    g = phantom.geometry
    shifted = Geometry(g.shape, g.spacing_mm, tuple(np.asarray(g.origin_mm) + 10.0),
                       g.direction)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path, phantom, heatmap_geometry=shifted)
    before = _ids(scene)
    with pytest.raises(InputError, match="not on the grid"):
        logic.import_segmentation()
    assert _ids(scene) == before


# ------------------------------------------------------------------------------------
# 3. build first, swap on success; only the same volume's nodes are replaced
# ------------------------------------------------------------------------------------
def test_failed_import_keeps_the_earlier_case_and_leaves_no_node(slicer_env, tmp_path,
                                                                 phantom, monkeypatch):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path / "a", phantom)
    first = logic.import_segmentation()
    before = _ids(scene)

    def broken(*_args, **_kw):
        raise RuntimeError("observer set-up failed")

    _job(logic, volume, CTMuscleBoneParameters(), tmp_path / "b", phantom)
    monkeypatch.setattr(nodes, "SegmentEditTracker", broken)
    with pytest.raises(RuntimeError, match="observer"):
        logic.import_segmentation()
    assert _ids(scene) == before  # the new segmentation removed, the earlier one kept
    assert logic.case is first
    assert scene.GetNodeByID(first.segmentation_node.GetID()) is not None


def test_new_analysis_replaces_only_the_same_volumes_nodes(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    a, b = _volume(scene, phantom, "A"), _volume(scene, phantom, "B")
    orphans = _orphan_display_nodes(scene)
    logic = AnalysisLogic()
    _job(logic, a, CTMuscleBoneParameters(), tmp_path / "a", phantom)
    case_a = logic.import_segmentation()
    _job(logic, b, CTMuscleBoneParameters(), tmp_path / "b", phantom)
    case_b = logic.import_segmentation()
    assert scene.GetNodeByID(case_a.segmentation_node.GetID()) is not None  # another CT's
    assert case_a.tracker is None  # the earlier case's observers removed
    seg_a = case_a.segmentation_node
    seg_a.GetSegmentation().GetSegment("sartorius_left").SetName("renamed")  # not tracked
    _job(logic, b, CTMuscleBoneParameters(), tmp_path / "b2", phantom)
    case_b2 = logic.import_segmentation()
    assert scene.GetNodeByID(case_b.segmentation_node.GetID()) is None  # replaced
    heatmap_b = case_b.heatmap_nodes["predictive_variance"]
    assert scene.GetNodeByID(heatmap_b.GetID()) is None
    assert scene.GetNodeByID(seg_a.GetID()) is not None
    assert case_b.tracker is None and case_b2.tracker is not None
    assert _orphan_display_nodes(scene) == orphans


def test_nodes_of_an_older_module_version_are_replaced(slicer_env, tmp_path, phantom):
    """A scene saved by a version that did not record the volume (no
    CREATED_FOR_ATTRIBUTE): a new analysis replaces those nodes, as that version did."""
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path / "old", phantom)
    old = logic.import_segmentation()
    old.segmentation_node.RemoveAttribute(CREATED_FOR_ATTRIBUTE)
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path / "new", phantom)
    new = logic.import_segmentation()
    assert scene.GetNodeByID(old.segmentation_node.GetID()) is None
    assert scene.GetNodeByID(new.segmentation_node.GetID()) is not None


def test_reset_cancels_the_worker_and_forgets_the_case(slicer_env, tmp_path, phantom):
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    logic = AnalysisLogic()
    _job(logic, volume, CTMuscleBoneParameters(), tmp_path, phantom)
    case = logic.import_segmentation()
    tracker = case.tracker
    logic.runner = ProcessRunner([sys.executable, "-c", "import time; time.sleep(60)"])
    logic.runner.start()
    proc = logic.runner.proc
    logic.work_dir = tmp_path / "running"
    logic.work_dir.mkdir()
    logic.reset()
    assert proc.wait(timeout=5) is not None
    assert logic.case is None and logic.job is None and logic.runner is None
    assert not (tmp_path / "running").exists()
    assert tracker._tags == []  # observers removed
    assert scene.GetNodeByID(case.segmentation_node.GetID()) is not None  # nodes kept


# ------------------------------------------------------------------------------------
# 6. no display node left behind
# ------------------------------------------------------------------------------------
def test_remeasure_and_remove_leave_no_orphan_display_nodes(slicer_env):
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    scene = slicer_env.scene
    ph = make_phantom(PhantomSpec(region="lumbar", spacing_mm=4.0, seed=4,
                                  muscles=("psoas_major",)))
    volume = nodes.volume_node_from_array(scene, ph.ct.hu, ph.ct.geometry, "CT")
    seg = nodes.segmentation_node_from_label_map(scene, ph.labels, volume, "user labels")
    orphans = _orphan_display_nodes(scene)
    params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), calibration="none")
    logic = AnalysisLogic()
    logic.measure_user_segmentation(volume, seg, params)
    sources = list(logic.case.source_image_nodes)
    assert sources  # the vertebral ROIs
    logic.measure(params)  # replaces the source images
    assert all(scene.GetNodeByID(n.GetID()) is None for n in sources)
    assert _orphan_display_nodes(scene) == orphans
    logic.remove_created_nodes(volume)
    assert _orphan_display_nodes(scene) == orphans
    assert scene.GetNodeByID(seg.GetID()) is not None  # the user's segmentation is kept


# ------------------------------------------------------------------------------------
# the heatmap's scale is the same on every case
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [31, None])
def test_heatmap_scale_is_the_two_class_tie_and_the_threshold_a_fraction(
        slicer_env, tmp_path, phantom, n_classes):
    """Full colour where the samples split evenly between two structures (1 / (2 C) for
    the predictive variance), not at each map's own maximum (which made a confident case
    look as hot as an uncertain one); the threshold is a fraction of that scale. Outputs
    of an older worker without the class count keep the map's own maximum as the scale."""
    scene = slicer_env.scene
    volume = _volume(scene, phantom)
    params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), heatmap_threshold=0.4)
    logic = AnalysisLogic()
    job = logic.prepare_job(volume, params, work_dir=tmp_path / "work")
    _fake_outputs(logic.work_dir / "out", phantom, n_classes=n_classes)
    assert job is not None
    case = logic.import_segmentation()
    display = case.heatmap_nodes["predictive_variance"].GetDisplayNode()
    full = 0.5 / 31 if n_classes else 1.0  # the fake map runs 0..1
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(full)
    assert display.GetApplyThreshold()
    assert display.GetLowerThreshold() == pytest.approx(0.4 * full)
