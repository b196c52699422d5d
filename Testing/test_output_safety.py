"""Outputs never destroy inputs or the user's files (atomic.py, every command's --out).

Each command case runs the real command (``CTMuscleBoneLib.cli.main.main``): it must
refuse with one ``ctmusclebone: error:`` line (exit 2), leave the input byte for byte as
it was, and name the user's path (never a hidden staging path).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import atomic
from CTMuscleBoneLib.atomic import (
    OUTPUT_MANIFEST,
    atomic_path,
    atomic_write_text,
    clear_noted_inputs,
    staged_output_dir,
)
from CTMuscleBoneLib.batch import BatchOptions, run_batch
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import sha256_of_path


@pytest.fixture(autouse=True)
def _forget_inputs():
    clear_noted_inputs()
    yield
    clear_noted_inputs()


@pytest.fixture(scope="module")
def thigh_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("thigh")
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=11))
    ct = write_image(ph.ct.hu, ph.ct.geometry, d / "ct.nii.gz")
    labels, sidecar = write_label_map(ph.labels, d / "labels.nii.gz")
    return {"ct": ct, "labels": labels, "sidecar": sidecar, "dir": d}


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("ctmusclebone: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert ".partial-" not in err
    return lines[0]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_of_path(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _measure(files, out, *extra) -> list[str]:
    return ["measure", "--ct", str(files["ct"]), "--labels", str(files["labels"]),
            "--out", str(out), "--quiet", "--calibration", "none", *extra]


# --- staged_output_dir ----------------------------------------------------------------------
def test_folder_where_an_output_file_goes_is_never_deleted(tmp_path):
    out = tmp_path / "o3"
    (out / "results.json").mkdir(parents=True)
    (out / "results.json" / "important.txt").write_text("x")
    with pytest.raises(InputError, match="folder .*results.json.*never deleted"), \
            staged_output_dir(out) as stage:
        (stage / "results.json").write_text("{}")
    assert (out / "results.json" / "important.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_file_where_an_output_folder_goes_is_never_replaced(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "ct").write_text("mine")
    with pytest.raises(InputError, match="a file where the output folder ct/"), \
            staged_output_dir(out) as stage:
        (stage / "ct").mkdir()
        (stage / "ct" / "a.dcm").write_text("a")
    assert (out / "ct").read_text() == "mine"


def test_own_folder_is_replaced_on_rerun_but_never_one_with_foreign_files(tmp_path):
    out = tmp_path / "o"
    for text in ("first", "second"):  # a rerun replaces the folder it wrote
        with staged_output_dir(out) as stage:
            (stage / "ct").mkdir()
            (stage / "ct" / "a.dcm").write_text(text)
            (stage / "results.json").write_text(text)
    assert (out / "ct" / "a.dcm").read_text() == "second"
    assert json.loads((out / OUTPUT_MANIFEST).read_text())["folders"] == {"ct": ["a.dcm"]}
    (out / "ct" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="did not write there.*mine.txt"), \
            staged_output_dir(out) as stage:
        (stage / "ct").mkdir()
        (stage / "ct" / "a.dcm").write_text("third")
    assert (out / "ct" / "mine.txt").read_text() == "keep"
    assert (out / "ct" / "a.dcm").read_text() == "second"


def test_folder_without_a_record_is_kept_and_an_empty_one_replaced(tmp_path):
    out = tmp_path / "o"
    (out / "segmentation").mkdir(parents=True)
    with staged_output_dir(out) as stage:  # empty: nothing to lose
        (stage / "segmentation").mkdir()
        (stage / "segmentation" / "labels.nii.gz").write_text("l")
    (out / "ct").mkdir()
    (out / "ct" / "CT_0001.dcm").write_text("user's series")
    with pytest.raises(InputError, match="did not write"), staged_output_dir(out) as stage:
        (stage / "ct").mkdir()
        (stage / "ct" / "x.dcm").write_text("x")
    assert (out / "ct" / "CT_0001.dcm").read_text() == "user's series"


@pytest.mark.parametrize("junk", [".DS_Store", "Thumbs.db", "desktop.ini", "._a.dcm"])
def test_a_file_browser_s_metadata_does_not_block_a_rerun(tmp_path, junk):
    """Opening an output folder in Finder or Explorer leaves metadata files there: the
    folder is still this tool's own and a rerun replaces it."""
    out = tmp_path / "o"
    for text in ("first", "second"):
        with staged_output_dir(out) as stage:
            (stage / "segmentation").mkdir()
            (stage / "segmentation" / "labels.nii.gz").write_text(text)
        (out / "segmentation" / junk).write_text("browser")
    assert (out / "segmentation" / "labels.nii.gz").read_text() == "second"


def test_an_unrecorded_folder_message_says_what_to_do(tmp_path):
    out = tmp_path / "o"
    (out / "segmentation").mkdir(parents=True)
    (out / "segmentation" / "labels.nii.gz").write_text("an earlier run, no record")
    with pytest.raises(InputError, match="before output records were kept, delete or "
                                         "rename it"), staged_output_dir(out) as stage:
        (stage / "segmentation").mkdir()


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "o"
    with staged_output_dir(out) as stage:
        (stage / "ct").mkdir()
        (stage / "ct" / "a.dcm").write_text("first")
    real_replace = atomic.os.replace

    def failing(src, dst):  # the staged folder cannot be moved in
        if ".partial-" in str(src) and Path(dst) == out / "ct":
            raise OSError(28, "No space left on device", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError), staged_output_dir(out) as stage:
        (stage / "ct").mkdir()
        (stage / "ct" / "a.dcm").write_text("second")
    assert (out / "ct" / "a.dcm").read_text() == "first"
    assert not [p for p in out.iterdir() if ".old-" in p.name]


def test_each_command_protects_only_its_own_inputs(thigh_files, tmp_path):
    """In one process (a notebook calling main), an earlier run's inputs do not block a
    later run's outputs."""
    first = tmp_path / "first"
    assert main(_measure(thigh_files, first)) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(first / "results.json", copy / "old.json")
    atomic.note_inputs(copy / "old.json")  # as an earlier command would have
    assert main(_measure(thigh_files, copy)) == 0  # that note is gone: copy/ may be written
    assert (copy / "results.json").is_file() and (copy / "old.json").is_file()


@pytest.mark.parametrize("command", ["analyze", "segment"])
def test_segmenting_commands_refuse_an_out_inside_the_input_before_work(
        command, thigh_files, tmp_path, capsys, monkeypatch):
    from CTMuscleBoneLib import pipeline

    def never(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(pipeline, "require_segmentation", never)
    monkeypatch.setattr(pipeline, "segment", never)
    monkeypatch.setattr(pipeline, "analyze", never)
    series = tmp_path / "series"  # a CT given as a folder (a DICOM series)
    series.mkdir()
    shutil.copy(thigh_files["ct"], series / "ct.nii.gz")
    before = _tree(series)
    assert main([command, "--ct", str(series), "--out", str(series / "out"), "--quiet"]) == 2
    assert "input" in _one_line_error(capsys.readouterr().err)
    assert _tree(series) == before
    assert sorted(p.name for p in series.iterdir()) == ["ct.nii.gz"]  # no staging folder


def test_analyze_refuses_a_foreign_segmentation_folder_before_work(
        thigh_files, tmp_path, capsys, monkeypatch):
    """`analyze` writes OUT/segmentation/: one holding the user's files is refused before
    the (minutes-long) segmentation, not after it."""
    from CTMuscleBoneLib import pipeline

    def never(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(pipeline, "analyze", never)
    out = tmp_path / "out"
    (out / "segmentation").mkdir(parents=True)
    (out / "segmentation" / "my_notes.txt").write_text("mine", encoding="utf-8")
    assert main(["analyze", "--ct", str(thigh_files["ct"]), "--out", str(out),
                 "--quiet"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "holds files CTMuscleBone did not write there (e.g. my_notes.txt)" in err
    assert (out / "segmentation" / "my_notes.txt").read_text(encoding="utf-8") == "mine"
    (out / "segmentation").rename(out / "elsewhere")
    (out / "segmentation").write_text("a file", encoding="utf-8")
    assert main(["analyze", "--ct", str(thigh_files["ct"]), "--out", str(out),
                 "--quiet"]) == 2
    assert "a file where the output folder segmentation/ goes" in _one_line_error(
        capsys.readouterr().err)


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_an_input_is_never_replaced(tmp_path, where):
    out = tmp_path / "o"
    (out / "ct").mkdir(parents=True)
    series = out / "ct" / "CT_0001.dcm"
    series.write_text("input")
    inputs = [out / "ct"] if where == "equal" else [series]
    with pytest.raises(InputError, match="input"), staged_output_dir(out, inputs) as stage:
        (stage / "ct").mkdir()
    assert series.read_text() == "input"


def test_staging_paths_never_reach_a_message(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied",
                              str(tmp_path / ".x.partial-abc" / "f"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as exc, staged_output_dir(tmp_path / "x"):
        pass
    assert exc.value.filename == str(tmp_path / "x")
    with pytest.raises(PermissionError) as exc, atomic_path(tmp_path / "fa.json"):
        pass
    assert exc.value.filename == str(tmp_path / "fa.json")


def test_output_file_under_a_file_says_the_parent_is_a_file(tmp_path):
    (tmp_path / "t_alm.csv").write_text("keep")
    with pytest.raises(InputError, match=r"t_alm.csv is a file, not a folder"):
        atomic_write_text(tmp_path / "t_alm.csv" / "z.json", "{}")


def test_noted_inputs_are_never_overwritten(tmp_path):
    src = tmp_path / "in.json"
    src.write_text("input")
    atomic.note_inputs(src)
    with pytest.raises(InputError, match="is an input"):
        atomic_write_text(src, "output")
    assert src.read_text() == "input"


# --- measure --------------------------------------------------------------------------------
def test_measure_never_replaces_an_input_dicom_series(thigh_files, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(_measure(thigh_files, first, "--dicom")) == 0  # a DICOM series in first/ct
    study = tmp_path / "study"
    shutil.copytree(first / "ct", study / "ct")
    before = _tree(study / "ct")
    rc = main(["measure", "--ct", str(study / "ct"), "--labels", str(thigh_files["labels"]),
               "--out", str(study), "--quiet", "--calibration", "none", "--dicom",
               "--deidentify"])
    assert rc == 2
    msg = _one_line_error(capsys.readouterr().err)
    assert str(study / "ct") in msg and "input" in msg
    assert _tree(study / "ct") == before
    assert not (study / "results.json").exists()


def test_measure_keeps_a_folder_named_like_an_output(thigh_files, tmp_path, capsys):
    out = tmp_path / "o3"
    (out / "results.json").mkdir(parents=True)
    (out / "results.json" / "important.txt").write_text("x")
    assert main(_measure(thigh_files, out)) == 2
    assert "results.json" in _one_line_error(capsys.readouterr().err)
    assert (out / "results.json" / "important.txt").read_text() == "x"


def test_measure_rerun_with_dicom_into_the_same_folder_still_works(thigh_files, tmp_path):
    out = tmp_path / "o"
    assert main(_measure(thigh_files, out, "--dicom")) == 0
    assert main(_measure(thigh_files, out, "--dicom")) == 0
    assert (out / "ct").is_dir() and (out / "results.json").is_file()


def test_measure_refuses_a_label_sidecar_as_an_output_folder(thigh_files, tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    labels = shutil.copy(thigh_files["labels"], d / "results.nii.gz")
    # the sidecar beside results.nii.gz would be results.json: an output name
    names = shutil.copy(thigh_files["sidecar"], d / "results.json")
    before = sha256_of_path(names)
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels", str(labels),
               "--out", str(d), "--quiet", "--calibration", "none"])
    assert rc == 2
    assert "input" in _one_line_error(capsys.readouterr().err)
    assert sha256_of_path(names) == before


def test_empty_out_is_refused(thigh_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_measure(thigh_files, "")) == 2
    assert "--out is empty" in _one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# --- fit-alm, fit-dxa, validate-bmd ---------------------------------------------------------
def _alm_pairs(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sex", "height_m", "dxa_alm_kg", "ct_lower_limb_lean_mass_kg"])
        for i in range(40):
            sex = "M" if i % 2 else "F"
            ct = rng.uniform(4, 12)
            w.writerow([sex, f"{rng.uniform(1.5, 1.85):.2f}",
                        f"{1.0 + 1.8 * ct + (2.5 if sex == 'M' else 0) + rng.normal(0, .3):.3f}",
                        f"{ct:.3f}"])
    return path


def _dxa_pairs(path: Path) -> Path:
    rng = np.random.default_rng(7)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "site", "ct_abmd_g_cm2", "dxa_abmd_g_cm2"])
        for i, x in enumerate(rng.uniform(0.45, 1.0, 30)):
            w.writerow([f"c{i}", "total_hip", f"{x:.5f}",
                        f"{0.1 + 0.95 * x + rng.normal(0, .015):.5f}"])
    return path


@pytest.mark.parametrize("command, make", [("fit-alm", _alm_pairs), ("fit-dxa", _dxa_pairs)])
def test_fit_never_overwrites_its_pairs(command, make, tmp_path, capsys):
    pairs = make(tmp_path / "pairs.csv")
    before = sha256_of_path(pairs)
    assert main([command, str(pairs), "--out", str(pairs)]) == 2
    assert ".json" in _one_line_error(capsys.readouterr().err)
    assert sha256_of_path(pairs) == before
    # a .json input given as --out is refused as an input, not overwritten
    as_json = shutil.copy(pairs, tmp_path / "pairs.json")
    if command == "fit-dxa":  # fit-dxa reads any suffix
        assert main([command, str(as_json), "--out", str(as_json)]) == 2
        assert "input" in _one_line_error(capsys.readouterr().err)
        assert sha256_of_path(as_json) == before


@pytest.mark.parametrize("command, make", [("fit-alm", _alm_pairs), ("fit-dxa", _dxa_pairs)])
@pytest.mark.parametrize("out, needle", [("", "--out is empty"), ("model.txt", "end in .json"),
                                         ("t_alm.csv/z.json", "t_alm.csv is a file")])
def test_fit_out_must_be_a_json_file_path(command, make, out, needle, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs = make(tmp_path / "pairs.csv")
    (tmp_path / "t_alm.csv").write_text("keep")
    assert main([command, str(pairs), "--out", out]) == 2
    msg = _one_line_error(capsys.readouterr().err)
    assert needle in msg
    assert (tmp_path / "t_alm.csv").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv", "t_alm.csv"]


def test_validate_bmd_never_overwrites_its_pairs(tmp_path, capsys):
    vdir = tmp_path / "vdir"
    vdir.mkdir()
    pairs = _dxa_pairs(vdir / "validate_bmd.csv")
    before = sha256_of_path(pairs)
    assert main(["validate-bmd", str(pairs), "--out", str(vdir), "--bootstrap", "50"]) == 2
    assert "input" in _one_line_error(capsys.readouterr().err)
    assert sha256_of_path(pairs) == before
    assert not (vdir / "validate_bmd.json").exists()


def test_validate_bmd_empty_out_is_refused(tmp_path, capsys):
    pairs = _dxa_pairs(tmp_path / "p.csv")
    assert main(["validate-bmd", str(pairs), "--out", "", "--bootstrap", "50"]) == 2
    assert "--out is empty" in _one_line_error(capsys.readouterr().err)


# --- batch ----------------------------------------------------------------------------------
def _batch_case(folder: Path, case_id: str = "c1") -> Path:
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=1))
    write_image(ph.ct.hu, ph.ct.geometry, folder / f"{case_id}.nii.gz")
    write_label_map(ph.labels, folder / f"{case_id}_labels.nii.gz")
    return folder


def test_batch_never_overwrites_its_case_list(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    src = _batch_case(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    cases = out / "cases.csv"
    cases.write_text("case_id,ct,labels,sex\n"
                     f"c1,{src / 'c1.nii.gz'},{src / 'c1_labels.nii.gz'},F\n")
    before = sha256_of_path(cases)
    assert main(["batch", str(cases), "--out", str(out), "--quiet",
                 "--calibration", "none"]) == 2
    msg = _one_line_error(capsys.readouterr().err)
    assert "cases.csv" in msg and "input" in msg
    assert sha256_of_path(cases) == before
    assert not (out / "cohort.csv").exists()


def test_batch_resume_sees_a_changed_names_sidecar(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _batch_case(src)
    sidecar = src / "c1_labels.labels.json"
    out = tmp_path / "out"
    options = BatchOptions(measure={"calibration": "none"})
    first = run_batch(src, out, options).records[0]
    assert first.status == "ok"

    def volume(structure: str) -> float:
        rows = json.loads((out / "cases" / "c1" / "results.json").read_text())["rows"]
        return next(r["value"] for r in rows
                    if r["structure"] == structure and r["quantity"] == "volume")

    a, b = "rectus_femoris_left", "vastus_lateralis_left"
    va, vb = volume(a), volume(b)
    assert abs(va - vb) > 1.0
    names = json.loads(sidecar.read_text())
    ka = next(k for k, v in names.items() if v == a)
    kb = next(k for k, v in names.items() if v == b)
    names[ka], names[kb] = b, a
    sidecar.write_text(json.dumps(names))
    second = run_batch(src, out, options).records[0]
    assert second.status == "ok" and not second.resumed
    assert volume(a) == pytest.approx(vb) and volume(b) == pytest.approx(va)
    assert run_batch(src, out, options).records[0].resumed  # unchanged: resumed again


# --- calibrate, evaluate --------------------------------------------------------------------
def test_calibrate_never_overwrites_its_phantom_definition(tmp_path, capsys):
    definition = tmp_path / "phantom.json"
    definition.write_text('{"name": "site phantom"}')
    before = sha256_of_path(definition)
    assert main(["calibrate", "--ct", str(tmp_path / "ct.nii.gz"), "--phantom",
                 str(definition), "--out", str(definition)]) == 2
    assert "input" in _one_line_error(capsys.readouterr().err)
    assert sha256_of_path(definition) == before


def test_evaluate_never_writes_into_an_input_folder(thigh_files, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(thigh_files["labels"], pred / "case.nii.gz")
    shutil.copy(thigh_files["sidecar"], pred / "case.labels.json")
    before = _tree(pred)
    for out in (pred, pred / "ev"):
        assert main(["evaluate", "--pred", str(pred), "--ref", str(thigh_files["labels"]),
                     "--out", str(out), "--no-surface"]) == 2
        assert "input" in _one_line_error(capsys.readouterr().err)
        assert _tree(pred) == before
    assert main(["evaluate", "--pred", str(pred), "--ref", str(thigh_files["labels"]),
                 "--out", str(tmp_path / "ev"), "--no-surface"]) == 0
    assert (tmp_path / "ev" / "evaluation.csv").is_file()
