"""``ctmusclebone analyze --report --deidentify``: the report of a segmented CT shows the
model's uncertainty heatmap and review list, and no identifier of the input."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.cli.cmd_phantom import write_phantom  # noqa: E402
from CTMuscleBoneLib.cli.main import main  # noqa: E402
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom  # noqa: E402


def test_analyze_report_has_the_uncertainty_and_no_identifier(tmp_path: Path) -> None:
    ph = make_phantom(PhantomSpec(region="hip", spacing_mm=6.0, seed=11))
    files = write_phantom(ph, tmp_path / "Doe_Jane")
    out = tmp_path / "out"
    assert main(["analyze", "--ct", str(files["ct"]), "--samples", "2", "--device", "cpu",
                 "--sex", "F", "--height", "1.6", "--no-figure", "--report", "--deidentify",
                 "--quiet", "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert "labels not made by the segmentation model" not in html  # heatmaps drawn
    assert "review first" in html  # the model's review list in the quality section
    assert "not for clinical" in html.lower()  # the demo-model banner
    for name in ("report.html", "results.json", "summary.txt", "segmentation/review.json"):
        assert "Doe_Jane" not in (out / name).read_text(encoding="utf-8"), name
