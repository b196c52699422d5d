"""Batch defects found by a first-user review: case lists as spreadsheets save them,
label maps named ``_Labels``, an earlier batch's output inside the input folder, results
edited after a case finished, resume across versions and ``.mhd`` data files.

One small labelled phantom (thigh, 6 mm voxels) is copied into each test's cohort, so
every case is measured (no network) in well under a second.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.batch import BatchOptions, discover_cases, run_batch
from CTMuscleBoneLib.batch import runner as batch_runner
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

OPTIONS = BatchOptions(measure={"calibration": "none"})


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory) -> Path:
    """``ct.nii.gz``, ``labels.nii.gz`` and its names sidecar of one small phantom."""
    d = tmp_path_factory.mktemp("phantom")
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=1))
    write_image(ph.ct.hu, ph.ct.geometry, d / "ct.nii.gz")
    write_label_map(ph.labels, d / "labels.nii.gz")
    return d


def _cohort(phantom_files: Path, folder: Path, ids: tuple[str, ...] = ("a",),
            labels_suffix: str = "_labels") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case_id in ids:
        shutil.copy(phantom_files / "ct.nii.gz", folder / f"{case_id}.nii.gz")
        shutil.copy(phantom_files / "labels.nii.gz",
                    folder / f"{case_id}{labels_suffix}.nii.gz")
        shutil.copy(phantom_files / "labels.labels.json",
                    folder / f"{case_id}{labels_suffix}.labels.json")
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- case lists -------------------------------------------------------------------------
def test_case_list_as_a_spreadsheet_saves_it_is_read(tmp_path):
    """Upper-case column names, unnamed empty trailing columns and ``,,,`` rows (blank
    spreadsheet rows) are accepted; messages give the file's own line numbers."""
    p = tmp_path / "list.csv"
    p.write_text("Case_ID, CT ,Labels,Sex,,\n"
                 "a,a.nii.gz,a_labels.nii.gz,F,,\n"
                 ",,,,,\n"
                 "\n"
                 "b,b.nii.gz,,M,,\n"
                 ",,,,,\n", encoding="utf-8")
    cases = discover_cases(p)
    assert [(c.case_id, c.sex) for c in cases] == [("a", "F"), ("b", "M")]
    assert cases[0].labels is not None and cases[1].labels is None
    p.write_text("case_id,ct\na,a.nii.gz\n\n,\nb,\n", encoding="utf-8")
    with pytest.raises(InputError, match="^Line 5 of .* has no case_id or no ct"):
        discover_cases(p)


@pytest.mark.parametrize("text, match", [
    ("case_id;ct;labels\na;a.nii.gz;\n", "separates its columns with semicolons"),
    ("case_id\tct\na\ta.nii.gz\n", "separates its columns with tabs"),
    ("case_id,ct,sex,sex\na,a.nii.gz,M,F\n", "has column.s. sex twice"),
    ("case_id,ct,labels\na,a.nii.gz,a_labels.nii.gz,F\n",
     "Line 2 of .* has 4 cells but the header 3"),
    ("case_id,ct,\na,a.nii.gz,F\n", "Line 2 of .* a value in a column without a name"),
])
def test_case_list_that_would_lose_a_value_is_refused(tmp_path, text, match):
    """A value the reader would drop or misplace silently stops the batch instead: a
    list separated by semicolons or tabs, a column given twice (which sex?), a row with
    more cells than the header, a value under a column without a name."""
    p = tmp_path / "list.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match):
        discover_cases(p)


# --- folders ----------------------------------------------------------------------------
def test_label_map_suffix_in_any_case_pairs_with_its_ct(phantom_files, tmp_path):
    """``a_Labels.nii.gz`` is a's label map, not a CT of its own (then a would be
    segmented by the model and 'a_Labels' fail as a non-HU image)."""
    src = _cohort(phantom_files, tmp_path / "in", labels_suffix="_Labels")
    (case,) = discover_cases(src)
    assert case.case_id == "a" and Path(case.labels).name == "a_Labels.nii.gz"


def test_earlier_batch_output_inside_the_input_folder_is_not_a_case(phantom_files,
                                                                    tmp_path):
    """A second run with another --out does not take the first run's output folder
    (inside the input folder) for a DICOM study."""
    src = _cohort(phantom_files, tmp_path / "in")
    first = run_batch(src, src / "results1", OPTIONS)
    assert [r.status for r in first.records] == ["ok"], first.records[0].error
    assert [c.case_id for c in discover_cases(src)] == ["a"]
    (src / "results1" / "cases.json").unlink()  # a run killed before its tables
    (src / "results1" / "cohort.csv").unlink()
    assert [c.case_id for c in discover_cases(src)] == ["a"]


# --- resume and the cohort table ----------------------------------------------------------
def test_results_edited_after_the_case_are_recomputed_not_reused(phantom_files, tmp_path):
    """A results.csv re-saved by a spreadsheet (a BOM, an edited value) is not copied
    into cohort.csv on a rerun: the case is recomputed."""
    src = _cohort(phantom_files, tmp_path / "in", ids=("a", "b"))
    out = tmp_path / "out"
    first = run_batch(src, out, OPTIONS)
    assert all(r.status == "ok" for r in first.records)
    good = (out / "cohort.csv").read_text(encoding="utf-8")
    results = out / "cases" / "a" / "results.csv"
    lines = results.read_text(encoding="utf-8").splitlines(keepends=True)
    cells = lines[1].split(",")
    cells[4] = "999999"  # the value column of the first row
    results.write_text("\ufeff" + lines[0] + ",".join(cells) + "".join(lines[2:]),
                       encoding="utf-8")
    rerun = run_batch(src, out, OPTIONS)
    status = {r.case_id: r for r in rerun.records}
    assert status["a"].status == "ok" and not status["a"].resumed
    assert status["b"].resumed
    assert (out / "cohort.csv").read_text(encoding="utf-8") == good


def test_results_unreadable_at_table_time_fail_the_case_not_the_batch(phantom_files,
                                                                     tmp_path,
                                                                     monkeypatch):
    """A results.csv broken between the case's end and the tables (here after the case
    is resumed) fails that case with a one-line error; the others are in cohort.csv."""
    from CTMuscleBoneLib.batch import cohort as batch_cohort

    src = _cohort(phantom_files, tmp_path / "in", ids=("a", "b"))
    out = tmp_path / "out"
    run_batch(src, out, OPTIONS)
    real = batch_cohort.case_rows

    def break_a(out_dir: Path, case_id: str) -> list[list[str]]:
        if case_id == "a":
            (out_dir / "cases" / "a" / "results.csv").write_bytes(b"\xff\xfe garbage\n")
        return real(out_dir, case_id)

    monkeypatch.setattr(batch_cohort, "case_rows", break_a)
    result = run_batch(src, out, OPTIONS)
    monkeypatch.setattr(batch_cohort, "case_rows", real)
    status = {r.case_id: r for r in result.records}
    assert status["b"].status == "ok"
    assert status["a"].status == "failed"
    assert "run the batch again" in status["a"].error and "\n" not in status["a"].error
    ids = {r["case_id"] for r in _rows(out / "cohort.csv")}
    assert ids == {"b"}
    assert {r["case_id"]: r["status"] for r in _rows(out / "cases.csv")} == {
        "a": "failed", "b": "ok"}
    again = run_batch(src, out, OPTIONS)  # recomputed
    assert [r.status for r in again.records] == ["ok", "ok"]
    assert not again.records[0].resumed and again.records[1].resumed


def test_cases_of_another_software_version_are_recomputed(phantom_files, tmp_path,
                                                          monkeypatch):
    """A rerun after an upgrade does not mix the old version's numbers into the cohort."""
    src = _cohort(phantom_files, tmp_path / "in")
    out = tmp_path / "out"
    run_batch(src, out, OPTIONS)
    monkeypatch.setattr(batch_runner, "__version__", "99.0.0")
    (record,) = run_batch(src, out, OPTIONS).records
    assert record.status == "ok" and not record.resumed
    marker = json.loads((out / "cases" / "a" / "done.json").read_text(encoding="utf-8"))
    assert marker["software"] == "CTMuscleBone 99.0.0"
    (record,) = run_batch(src, out, OPTIONS).records
    assert record.resumed


def test_changed_voxels_of_a_metaimage_header_are_recomputed(phantom_files, tmp_path):
    """The CT's ``.raw`` data file changed, its ``.mhd`` header not: the case is
    recomputed (the header's checksum alone would have resumed the old numbers)."""
    import SimpleITK as sitk

    src = tmp_path / "in"
    src.mkdir()
    image = sitk.ReadImage(str(phantom_files / "ct.nii.gz"))
    sitk.WriteImage(image, str(src / "m.mhd"))
    shutil.copy(phantom_files / "labels.nii.gz", src / "m_labels.nii.gz")
    shutil.copy(phantom_files / "labels.labels.json", src / "m_labels.labels.json")
    assert batch_runner.detached_data_files(str(src / "m.mhd")) == [src / "m.raw"]
    out = tmp_path / "out"
    (first,) = run_batch(src, out, OPTIONS).records
    assert first.status == "ok", first.error
    header = (src / "m.mhd").read_bytes()
    hu = sitk.GetArrayFromImage(image)  # z, y, x: the order of the voxels in m.raw
    assert (src / "m.raw").stat().st_size == hu.nbytes
    np.where(hu > 200, hu + 100, hu).astype(hu.dtype).tofile(src / "m.raw")
    assert (src / "m.mhd").read_bytes() == header
    (second,) = run_batch(src, out, OPTIONS).records
    assert second.status == "ok" and not second.resumed
    assert second.ct_sha256 == first.ct_sha256  # the header's checksum, as before


def test_detached_data_file_forms(tmp_path):
    """``LOCAL`` (no data file), ``LIST`` and numbered-file patterns of the headers."""
    mhd = tmp_path / "a.mhd"
    mhd.write_text("NDims = 3\nElementDataFile = LOCAL\n")
    assert batch_runner.detached_data_files(str(mhd)) == []
    mhd.write_text("NDims = 3\nElementDataFile = s%02d.raw 1 3 1\n")
    assert [p.name for p in batch_runner.detached_data_files(str(mhd))] == [
        "s01.raw", "s02.raw", "s03.raw"]
    nhdr = tmp_path / "b.nhdr"
    nhdr.write_text("NRRD0004\ntype: short\ndata file: LIST\nx.raw\ny.raw\n")
    assert [p.name for p in batch_runner.detached_data_files(str(nhdr))] == [
        "x.raw", "y.raw"]
    assert batch_runner.detached_data_files(str(tmp_path / "c.nii.gz")) == []
