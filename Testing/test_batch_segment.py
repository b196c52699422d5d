"""A batch case without a label map is segmented with the demo model, then measured.

One tiny phantom (two 6 mm slices of the hip) keeps the network run short.
"""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.batch import BatchOptions, run_batch  # noqa: E402
from CTMuscleBoneLib.batch.options import fingerprint  # noqa: E402
from CTMuscleBoneLib.io_ct import write_image  # noqa: E402
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom  # noqa: E402
from CTMuscleBoneLib.pipeline import SegmentOptions  # noqa: E402


def test_case_without_labels_is_segmented_then_measured(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    ph = make_phantom(PhantomSpec(region=(0.0, 12.0), spacing_mm=6.0, seed=4))
    write_image(ph.ct.hu, ph.ct.geometry, src / "s01.nii.gz")
    options = BatchOptions(measure={"calibration": "none"},
                           segment=SegmentOptions(samples=1, seed=0, device="cpu"))
    out = tmp_path / "out"
    (record,) = run_batch(src, out, options).records
    assert record.status == "ok", record.error
    assert record.mode == "segment+measure" and record.n_rows > 0
    case = out / "cases" / "s01"
    assert (case / "segmentation" / "labels.nii.gz").is_file()
    assert (case / "segmentation" / "review.csv").is_file()
    results = json.loads((case / "results.json").read_text())
    assert results["provenance"]["models"][0]["synthetic"] is True
    assert any("not for clinical" in w for w in record.warnings)
    marker = json.loads((case / "done.json").read_text())
    assert marker["options"]["segment"]["samples"] == 1
    (again,) = run_batch(src, out, options).records
    assert again.resumed
    # the segmentation options count for a segmented case, not for a labelled one
    other = BatchOptions(measure={"calibration": "none"},
                         segment=SegmentOptions(samples=2, seed=0, device="cpu"))
    assert fingerprint(options, {}, True)[0] != fingerprint(other, {}, True)[0]
    assert fingerprint(options, {}, False)[0] == fingerprint(other, {}, False)[0]
    # every row of cohort.csv says how its case was segmented; the summary names the
    # cases the model segmented (a cohort may mix them with labelled cases)
    with open(out / "cohort.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["mode"] for r in rows} == {"segment+measure"}
    from CTMuscleBoneLib.cli.main import main
    assert main(["batch", str(src), "--out", str(out), "--calibration", "none",
                 "--samples", "1", "--seed", "0", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert ("1 of 1 case(s) had no label map and were segmented by the model "
            "(column 'mode' of cohort.csv and cases.csv): s01") in err
