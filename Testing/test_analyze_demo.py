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
    assert main(["demo", "--out", str(out), "--spacing", "3.0", "--samples", "2",
                 "--quiet"]) == 0
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
    # the demo model does not segment vertebrae; the femurs are measured with the
    # phantom calibration found under the body
    abmd = res[("femur_left", "abmd_total_hip")]
    assert abmd["value"] and 0.3 < float(abmd["value"]) < 2.0
    assert "phantom calibration" in abmd["method"]
    assert float(res[("gluteus_maximus_left", "volume")]["value"]) > 50.0
