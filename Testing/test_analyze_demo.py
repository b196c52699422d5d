"""``ctmusclebone demo`` and ``analyze`` end to end with the committed demo model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    # The demo as users run it (T = 10 MC samples). With T = 2 the demo model's mean
    # softmax sometimes leaves a hole inside a femoral head (largest inscribed ball
    # 11.4 mm, below the 12 mm landmark threshold), so the head is not found.
    assert main(["demo", "--out", str(out), "--spacing", "3.0", "--quiet"]) == 0
    return out


def test_demo_writes_a_readable_results_folder(demo_dir: Path) -> None:
    for name in ("README.txt", "results.csv", "results.json", "summary.txt", "overview.png",
                 "demo_check.csv", "input/ct.nii.gz", "input/truth.json",
                 "segmentation/labels.nii.gz", "segmentation/review.csv",
                 "segmentation/uncertainty_predictive_variance.nii.gz"):
        assert (demo_dir / name).is_file(), name
    assert (demo_dir / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (demo_dir / "summary.txt").read_text()
    assert "Muscles" in summary and "Review list" in summary
    assert "synthetic" in summary.lower()


def test_demo_results_say_the_model_is_synthetic(demo_dir: Path) -> None:
    d = json.loads((demo_dir / "results.json").read_text())
    models = d["provenance"]["models"]
    assert models and models[0]["synthetic"] is True
    assert any("not for clinical" in w for w in d["warnings"])
    assert d["provenance"]["label_source"].startswith("ctmusclebone-demo-synthetic")


def test_demo_segmentation_and_bmd_agree_with_the_phantom(demo_dir: Path) -> None:
    with open(demo_dir / "demo_check.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dice"]]
    assert rows and min(float(r["dice"]) for r in rows) > 0.8
    with open(demo_dir / "results.csv", newline="") as f:
        res = {(r["structure"], r["quantity"]): r for r in csv.DictReader(f)}
    # the femurs are measured with the phantom calibration found under the body
    assert "phantom calibration" in res[("femur_left", "abmd_total_hip")]["method"]
    assert float(res[("gluteus_maximus_left", "volume")]["value"]) > 50.0


def _demo_femurs(demo_dir: Path) -> list:
    """The demo phantom's femurs, rebuilt from the spec the demo wrote to truth.json."""
    from CTMuscleBoneLib.phantoms import PhantomSpec
    from CTMuscleBoneLib.phantoms.base import ScannerModel
    from CTMuscleBoneLib.phantoms.builder import femur_components

    truth = json.loads((demo_dir / "input" / "truth.json").read_text())
    spec = dict(truth["spec"])
    spec["scanner"] = ScannerModel(**spec["scanner"])
    spec.update({k: tuple(spec[k]) for k in ("bones", "sides", "metal")})
    femurs = femur_components(PhantomSpec(**spec))
    for f in femurs:  # the rebuilt femur is the one the demo painted
        written = truth["components"][f"femur_{f.spec.side}"]
        assert f.truth().head_centre_mm == pytest.approx(written["head_centre_mm"])
        assert f.truth().vbmd_mg_cm3 == pytest.approx(written["vbmd_mg_cm3"])
    return femurs


def test_demo_femoral_bmd_agrees_with_the_analytic_truth(demo_dir: Path) -> None:
    """CT-aBMD against the exact projection of the phantom femur (as in test_femur.py)
    and vBMD against the analytic region density.

    Tolerances: test_femur.py holds aBMD within 3 % and vBMD within 2 % with the true
    labels at <= 2 mm. Here the voxels are 3 mm and the femur is the demo model's
    segmentation: measured with the true labels at 3 mm the demo phantom gives total hip
    -2 %, neck +3 %, vBMD 0 %; with the model's labels total hip -8 to -10 %, neck
    +2 to +3 %, vBMD -4 % (the segmentation misses part of the cortex). Since the
    partial-volume step returns mineral just outside the label to the femur
    (femur/partial_volume.py), the cortex the model missed is counted again, but over the
    model's smaller volume: vBMD then reads about +7 % (measured). Hence 12 % for aBMD
    and 10 % for vBMD: a calibration, unit or projection error (g/cm2 vs mg/cm2, HA vs
    K2HPO4 at 15-20 %, a missing slope) still fails on the neck or the vBMD.
    """
    from femur_raster import analytic_abmd

    with open(demo_dir / "results.csv", newline="") as f:
        res = {(r["structure"], r["quantity"]): r for r in csv.DictReader(f)}
    femurs = _demo_femurs(demo_dir)
    assert {f.spec.side for f in femurs} == {"left", "right"}
    for femur in femurs:
        s = f"femur_{femur.spec.side}"
        truth = analytic_abmd(femur)
        for site in ("total_hip", "femoral_neck"):
            row = res[(s, f"abmd_{site}")]
            assert row["unit"] == "g/cm2"
            assert float(row["value"]) == pytest.approx(truth[site], rel=0.12), (s, site)
        vbmd = float(res[(s, "vbmd_total_proximal")]["value"])
        assert vbmd == pytest.approx(femur.truth().vbmd_mg_cm3["total_proximal"], rel=0.10), s


def test_demo_self_check_compares_measurements_on_truth_labels(demo_dir: Path) -> None:
    """The self-check measures the phantom's ground-truth labels with the same code and
    prints the headline values beside the model's; the femurs agree within the 12 % of
    the aBMD test above."""
    import re

    summary = (demo_dir / "summary.txt").read_text()
    assert "Measurements on the model's segmentation vs on the phantom's ground-truth" \
        in summary
    for side in ("left", "right"):
        m = re.search(rf"femur_{side} abmd_total_hip: model ([\d.]+) g/cm2, truth labels "
                      rf"([\d.]+) g/cm2 \(([-+][\d.]+) %\)", summary)
        assert m, side
        model, truth, pct = (float(x) for x in m.groups())
        assert pct == pytest.approx(100 * (model - truth) / truth, abs=0.06)
        assert abs(pct) < 12.0


def test_demo_reports_lumbar_bmd_alm_and_smi_close_to_the_truth_labels(
        demo_dir: Path) -> None:
    """Every headline value of the mission is measured on the demo, and the self-check
    puts it beside the same measurement on the phantom's true labels: L1-L4 trabecular
    vBMD within 3 % (measured: within 0.3 %), ALM and SMI within 15 % (measured: -3.3 %
    at 2 mm with version 2.1.1, -6.6 % with 2.1.0; the model's thigh muscles are slightly
    under-segmented). A model that does
    not segment the vertebrae or the thigh muscles fails here."""
    import re

    summary = (demo_dir / "summary.txt").read_text()
    assert "not measured (the model does not segment" not in summary
    for level in ("L1", "L2", "L3", "L4"):
        m = re.search(rf"vertebrae_{level} trabecular_vbmd: model ([\d.]+) mg/cm3, truth "
                      rf"labels ([\d.]+) mg/cm3 \(([-+][\d.]+) %\)", summary)
        assert m, level
        assert abs(float(m.group(3))) < 3.0, (level, m.group(0))
    for quantity, unit in (("alm", "kg"), ("smi", "kg/m2")):
        m = re.search(rf"patient {quantity}: model ([\d.]+) {unit}, truth labels ([\d.]+) "
                      rf"{unit} \(([-+][\d.]+) %\)", summary)
        assert m, quantity
        assert abs(float(m.group(3))) < 15.0, m.group(0)
    with open(demo_dir / "results.csv", newline="") as f:
        res = {(r["structure"], r["quantity"]): r for r in csv.DictReader(f)}
    assert float(res[("vertebrae_L1", "trabecular_vbmd")]["value"]) == pytest.approx(95.0,
                                                                                   rel=0.05)


def test_self_check_lines_name_why_a_row_is_not_measurable() -> None:
    from CTMuscleBoneLib.cli.cmd_demo import truth_measurement_check
    from CTMuscleBoneLib.results import ResultRow, Results

    model = Results(rows=[ResultRow("patient", "alm", None, "kg", "m",
                                    ["not_measurable: no thigh muscles"]),
                          ResultRow("femur_left", "abmd_total_hip", 0.9, "g/cm2", "m", [])])
    truth = Results(rows=[ResultRow("patient", "alm", 20.0, "kg", "m", []),
                          ResultRow("femur_left", "abmd_total_hip", 1.0, "g/cm2", "m", [])])
    lines = truth_measurement_check(model, truth)
    assert any("femur_left abmd_total_hip: model 0.900 g/cm2, truth labels 1.000 g/cm2 "
               "(-10.0 %)" in s for s in lines)
    assert any("not measurable on the model: no thigh muscles" in s for s in lines)
    both = truth_measurement_check(model, Results(rows=[model.rows[0]]))
    assert any("alm: not measurable on either (no thigh muscles)" in s for s in both)


def test_self_check_names_headline_values_the_model_does_not_segment():
    from CTMuscleBoneLib.cli.cmd_demo import truth_measurement_check
    from CTMuscleBoneLib.results import ResultRow, Results

    only_femur = Results(rows=[ResultRow("femur_left", "abmd_total_hip", 1.0, "g/cm2", "m",
                                         [])])
    lines = truth_measurement_check(only_femur, only_femur)
    assert lines[-1].startswith("  not measured (the model does not segment their "
                                "structures): femur_right abmd_total_hip")
    assert "vertebrae_L1 trabecular_vbmd" in lines[-1] and "patient smi" in lines[-1]


def test_absent_rows_are_explained_against_the_phantom_truth():
    from CTMuscleBoneLib.cli.cmd_demo import absent_structure_lines

    lines = absent_structure_lines(["iliacus_left", "gracilis_right"],
                                   {"gracilis_right", "femur_left"})
    assert len(lines) == 2
    assert lines[0].startswith("ABSENT in the review list and absent from the phantom too")
    assert "Iliacus (left)" in lines[0] and "Gracilis" not in lines[0]
    assert lines[1].startswith("ABSENT in the review list but present in the phantom")
    assert "Gracilis (right)" in lines[1]
    assert absent_structure_lines([], {"femur_left"}) == []


def test_demo_summary_explains_the_structures_the_phantom_lacks(demo_dir: Path) -> None:
    """The demo model has iliacus channels the phantoms never paint: its review list
    shows them ABSENT, and the self-check says why."""
    summary = (demo_dir / "summary.txt").read_text()
    review = [ln for ln in summary.splitlines() if ln.rstrip().endswith("ABSENT")]
    assert review, "the demo's review list has no ABSENT row"
    line = next(ln for ln in summary.splitlines()
                if ln.startswith("ABSENT in the review list and absent from the phantom"))
    for row in review:
        name = row.split(maxsplit=1)[1].rsplit(None, 2)[0].strip()
        assert name in line
    assert "ABSENT in the review list but present in the phantom" not in summary


def _demo_body_check():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_body_check.py"
    spec = importlib.util.spec_from_file_location("demo_body_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_body_check_compares_the_self_checks_rows_on_the_two_bodies() -> None:
    """benchmarks/demo_body_check.py measures the demo's headline rows, and its standard
    body is the demo phantom with only the body layout changed (full-size muscles, the
    layout's subcutaneous fat): same seed, voxels, tissue values, noise and BMD."""
    from dataclasses import fields

    from CTMuscleBoneLib.cli.cmd_demo import SELF_CHECK_ROWS
    from CTMuscleBoneLib.phantoms.demo import demo_spec

    bench = _demo_body_check()
    assert bench.HEADLINE_ROWS == SELF_CHECK_ROWS
    demo, standard = bench.body_spec("demo", 2.0), bench.body_spec("standard", 2.0)
    assert demo == demo_spec(2.0)
    changed = {f.name for f in fields(demo)
               if getattr(demo, f.name) != getattr(standard, f.name)}
    assert changed == {"muscle_atrophy", "trunk_fat_mm", "thigh_fat_mm"}
    assert standard.muscle_atrophy == 1.0 and demo.muscle_atrophy < 1.0
