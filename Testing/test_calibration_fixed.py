"""Asynchronous calibration: a typed-in line, or one saved from a separate phantom scan."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.calibration.stored import (
    fixed_calibration,
    load_calibration,
    save_calibration,
)
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTMetadata
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import sha256_of_path


def test_fixed_line_is_applied_exactly():
    cal = fixed_calibration(0.8, -5.0, "HA")
    assert cal.method == "fixed" and cal.calibrated and cal.material == "HA"
    assert float(cal.bmd_mg_cm3(200.0)) == pytest.approx(0.8 * 200.0 - 5.0)
    assert any("asynchronous" in w for w in cal.warnings)


@pytest.mark.parametrize("slope, intercept, material, word", [
    (800.0, 0.0, "HA", "slope"),          # typed in the wrong unit
    (0.8, 5000.0, "HA", "intercept"),
    (float("nan"), 0.0, "HA", "finite"),
    (0.8, 0.0, "calcium", "material"),
])
def test_fixed_line_refuses_implausible_values(slope, intercept, material, word):
    with pytest.raises(InputError, match=word):
        fixed_calibration(slope, intercept, material)


def test_options_need_a_file_or_all_coefficients(tmp_path):
    with pytest.raises(InputError, match="calibration file"):
        pipeline.MeasureOptions(calibration="fixed")
    with pytest.raises(InputError, match="not found"):
        pipeline.MeasureOptions(calibration="fixed", calibration_file=tmp_path / "none.json")
    with pytest.raises(InputError, match="slope"):
        pipeline.MeasureOptions(calibration="fixed", fixed_slope_mg_cm3_per_hu=900.0,
                                fixed_intercept_mg_cm3=0.0, fixed_material="HA")
    ok = pipeline.MeasureOptions(calibration="fixed", fixed_slope_mg_cm3_per_hu=0.8,
                                 fixed_intercept_mg_cm3=0.0, fixed_material="HA")
    assert ok.calibration == "fixed"


def test_saved_calibration_round_trip_and_scanner_warnings(tmp_path):
    cal = fixed_calibration(0.75, 2.5, "K2HPO4", description="B-MAS200 (5 rods)")
    scan = CTMetadata(kvp=120.0, manufacturer="ACME", manufacturer_model="CT-1")
    path = save_calibration(cal, tmp_path / "cal.json", scan, "abc")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "ctmusclebone.calibration/1" and doc["scan"]["kvp"] == 120.0
    same = load_calibration(path, CTMetadata(kvp=120.0, manufacturer="acme"))
    assert (same.slope_mg_cm3_per_hu, same.intercept_mg_cm3, same.material) == \
        (0.75, 2.5, "K2HPO4")
    assert same.method == "fixed" and "separate scan" in same.description
    assert not any("kVp" in w for w in same.warnings)
    other = load_calibration(path, CTMetadata(kvp=100.0, manufacturer="Other"))
    assert any("100 kVp" in w for w in other.warnings)
    assert any("manufacturer" in w for w in other.warnings)
    (tmp_path / "bad.json").write_text('{"schema": "something else"}')
    with pytest.raises(InputError, match="not a CTMuscleBone calibration"):
        load_calibration(tmp_path / "bad.json")


def test_calibrate_then_measure_with_the_saved_line(tmp_path, capsys):
    """A phantom scan calibrated on its own gives the same BMD as the same phantom in
    the patient's scan (same scanner model: the synthetic phantom's HU are the same)."""
    rods = make_phantom(PhantomSpec(region="lumbar", spacing_mm=2.0, seed=21,
                                    calibration=True, calibration_definition="B-MAS200"))
    rods_ct = write_image(rods.ct.hu, rods.ct.geometry, tmp_path / "phantom_scan.nii.gz")
    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "--ct", str(rods_ct), "--phantom", "B-MAS200",
                 "--out", str(cal_path)]) == 0
    saved = json.loads(cal_path.read_text())
    assert saved["scan"]["sha256"] == sha256_of_path(rods_ct)

    patient = make_phantom(PhantomSpec(region="lumbar", spacing_mm=2.0, seed=22,
                                       calibration=True, calibration_definition="B-MAS200",
                                       vertebra_bmd_mg_cm3=110.0))
    ct = write_image(patient.ct.hu, patient.ct.geometry, tmp_path / "ct.nii.gz")
    labels, _ = write_label_map(patient.labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    assert main(["measure", "--ct", str(ct), "--labels", str(labels), "--quiet",
                 "--calibration", "fixed", "--calibration-file", str(cal_path),
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    entry = [c for c in res["provenance"]["coefficients"]
             if c.get("kind") == "HU-to-BMD calibration"][0]
    assert entry["method"] == "fixed" and entry["file_sha256"] == sha256_of_path(cal_path)

    # the same patient with its own (synchronous) phantom calibration
    sync = pipeline.measure(patient.ct, patient.labels,
                            pipeline.MeasureOptions(phantom="B-MAS200", bones=True))
    rows = {(r["structure"], r["quantity"]): r["value"] for r in res["rows"]}
    v_async = rows[("vertebrae_L3", "trabecular_vbmd")]
    v_sync = sync.value("vertebrae_L3", "trabecular_vbmd")
    assert v_async == pytest.approx(v_sync, rel=0.02)
    assert v_async == pytest.approx(110.0, rel=0.05)


def test_calibrate_refuses_a_folder_as_out(tmp_path, capsys):
    rc = main(["calibrate", "--ct", str(tmp_path / "x.nii.gz"), "--phantom", "B-MAS200",
               "--out", str(tmp_path)])
    assert rc == 2
    assert "folder" in capsys.readouterr().err


def test_remeasure_keeps_a_fixed_calibration():
    ph = make_phantom(PhantomSpec(region="lumbar", spacing_mm=3.0, seed=5))
    opts = pipeline.MeasureOptions(calibration="fixed", fixed_slope_mg_cm3_per_hu=0.8,
                                   fixed_intercept_mg_cm3=0.0, fixed_material="HA")
    first = pipeline.measure(ph.ct, ph.labels, opts)
    again = pipeline.remeasure(ph.ct, ph.labels, first, [])
    assert again.results.artifacts["calibration"] is first.artifacts["calibration"]
    assert again.changed_rows == set()
    assert replace(opts).calibration == "fixed"
