"""Cohort batch runs: isolation of broken cases, resume, cohort tables, local pool vs Dask.

The cohort is built here from small synthetic phantoms (6 mm voxels) with their true
label maps, so every case is measured (no network); three broken cases sit among
them: an MR image, a corrupt file and a label map of another image (no overlap).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.batch import (
    BatchOptions,
    BatchProgress,
    discover_cases,
    run_batch,
    run_case,
)
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry
from CTMuscleBoneLib.io_ct import read_ct, write_image, write_label_map
from CTMuscleBoneLib.io_labels import read_labels
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import format_value

OPTIONS = BatchOptions(measure={"calibration": "none"})
GOOD = ["c01_thigh", "c03_lumbar", "c06_hip"]
BROKEN = {"c02_mr": "not Hounsfield", "c04_corrupt": "damaged",
          "c05_grid": "does not overlap"}
#: Tolerance of the vastus lateralis volume (~135 cm3) against its analytic truth at
#: 6 mm voxels: the voxelised rim (whole voxels in or out) moves it by a few percent.
VOLUME_REL_TOL = 0.05


def _write_case(folder: Path, case_id: str, ph) -> None:
    write_image(ph.ct.hu, ph.ct.geometry, folder / f"{case_id}.nii.gz")
    write_label_map(ph.labels, folder / f"{case_id}_labels.nii.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three good phantom cases and three broken ones, sorted so the broken are inside."""
    d = tmp_path_factory.mktemp("cohort")
    phantoms = {}
    for case_id, region, seed in (("c01_thigh", "thigh", 1), ("c03_lumbar", "lumbar", 3),
                                  ("c06_hip", "hip", 6)):
        phantoms[case_id] = make_phantom(PhantomSpec(region=region, spacing_mm=6.0,
                                                     seed=seed))
        _write_case(d, case_id, phantoms[case_id])
    thigh = phantoms["c01_thigh"]
    # an MR image (values 0..900, no air) with the thigh's labels
    mr = np.random.default_rng(2).uniform(0, 900, thigh.ct.hu.shape).astype(np.float32)
    write_image(mr, thigh.ct.geometry, d / "c02_mr.nii.gz")
    write_label_map(thigh.labels, d / "c02_mr_labels.nii.gz")
    # a corrupt file: a gzip stream cut in the middle
    good = (d / "c01_thigh.nii.gz").read_bytes()
    (d / "c04_corrupt.nii.gz").write_bytes(good[: len(good) // 2])
    write_label_map(thigh.labels, d / "c04_corrupt_labels.nii.gz")
    # a label map of another image: the grid 2 m away from the CT
    write_image(thigh.ct.hu, thigh.ct.geometry, d / "c05_grid.nii.gz")
    g = thigh.labels.geometry
    far = Geometry(g.shape, g.spacing_mm, tuple(np.add(g.origin_mm, (0, 0, 2000.0))),
                   g.direction)
    write_label_map(replace(thigh.labels, geometry=far), d / "c05_grid_labels.nii.gz")
    (d / "notes.txt").write_text("not a case\n")
    return d


@pytest.fixture(scope="module")
def local_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    return run_batch(cohort, out, OPTIONS, workers=1), out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in (out / "cases").rglob("*") if p.is_file()}


# --- discovery ----------------------------------------------------------------------------
def test_folder_discovery_pairs_labels_by_name(cohort):
    cases = discover_cases(cohort)
    assert [c.case_id for c in cases] == sorted([*GOOD, *BROKEN])
    for c in cases:
        assert c.labels is not None and Path(c.labels).name == f"{c.case_id}_labels.nii.gz"


def test_dicom_study_folder_is_a_case_with_labels_beside_it(cohort, tmp_path):
    from test_io_ct import write_dicom_series

    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=1))
    g = ph.ct.geometry
    assert np.allclose(g.direction, np.eye(3))
    src = tmp_path / "in"
    write_dicom_series(src / "study7", ph.ct.hu, spacing=g.spacing_mm, origin=g.origin_mm,
                       contrast=None)
    write_label_map(ph.labels, src / "study7_labels.nii.gz")
    shutil.copy(cohort / "c01_thigh.nii.gz", src / "c01_thigh.nii.gz")
    (case_nifti, case_dicom) = discover_cases(src)
    assert case_dicom.case_id == "study7" and Path(case_dicom.ct).is_dir()
    assert case_nifti.labels is None  # no label map beside it: it would be segmented
    record = run_case(case_dicom, OPTIONS, str(tmp_path / "out"))
    assert record.status == "ok", record.error
    rows = _read_csv(tmp_path / "out" / "cases" / "study7" / "results.csv")
    volumes = {r["structure"]: r["value"] for r in rows if r["quantity"] == "volume"}
    truth = ph.truth.structures["vastus_lateralis_left"]
    assert float(volumes["vastus_lateralis_left"]) == pytest.approx(
        truth.voxel_volume_cm3, abs=0.05)  # the same voxels, read from DICOM
    patient = json.loads((tmp_path / "out" / "cases" / "study7" / "results.json")
                         .read_text())["provenance"]["patient"]
    assert patient["sex"] == "F"  # from the DICOM header: no option, no CSV value


def test_discovery_refusals(tmp_path):
    (tmp_path / "a_labels.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="has no CT named 'a'"):
        discover_cases(tmp_path)
    with pytest.raises(InputError, match="No case found"):
        discover_cases(_empty(tmp_path))
    bad = tmp_path / "list.csv"
    bad.write_text("case_id,ct,bmi\nx,x.nii.gz,20\n")
    with pytest.raises(InputError, match="unknown column"):
        discover_cases(bad)
    bad.write_text("case_id,ct\nx,a.nii.gz\nX,b.nii.gz\n")
    with pytest.raises(InputError, match="appears twice"):
        discover_cases(bad)
    bad.write_text("case_id,ct\n../up,a.nii.gz\n")
    with pytest.raises(InputError, match="cannot name an output folder"):
        discover_cases(bad)


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


# --- isolation, reporting, cohort table ------------------------------------------------------
def test_broken_cases_are_reported_and_the_others_complete(local_run, cohort):
    result, out = local_run
    status = {r.case_id: r for r in result.records}
    assert [r.case_id for r in result.records] == sorted([*GOOD, *BROKEN])
    for case_id in GOOD:
        assert status[case_id].status == "ok", status[case_id].error
        assert (out / "cases" / case_id / "done.json").is_file()
    for case_id, words in BROKEN.items():
        rec = status[case_id]
        assert rec.status == "failed" and rec.error_type == "InputError"
        assert words in rec.error, rec.error
        assert not (out / "cases" / case_id / "done.json").exists()
        assert json.loads((out / "cases" / case_id / "error.json").read_text())["error"] \
            == rec.error
    cases = {row["case_id"]: row for row in _read_csv(out / "cases.csv")}
    assert set(cases) == set(status)
    for case_id, words in BROKEN.items():
        assert cases[case_id]["status"] == "failed" and words in cases[case_id]["error"]
    assert cases["c01_thigh"]["ct_sha256"] and cases["c01_thigh"]["labels_sha256"]
    doc = json.loads((out / "cases.json").read_text())
    assert doc["summary"] == {"n_cases": 6, "n_ok": 3, "n_failed": 3, "n_resumed": 0}
    assert doc["complete"] is True
    # no staging folder left behind
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]


def test_cohort_csv_holds_every_row_of_every_good_case(local_run, cohort):
    result, out = local_run
    rows = _read_csv(out / "cohort.csv")
    assert list(rows[0]) == ["case_id", "mode", "structure", "display_name", "quantity",
                             "value", "unit", "method", "flags"]
    assert {r["case_id"] for r in rows} == set(GOOD)
    assert {r["mode"] for r in rows} == {"measure"}  # every case has its label map
    for case_id in GOOD:  # the same lines as the case's own results.csv
        own = _read_csv(out / "cases" / case_id / "results.csv")
        mine = [{k: v for k, v in r.items() if k not in ("case_id", "mode")} for r in rows
                if r["case_id"] == case_id]
        assert mine == own and len(own) == next(
            x.n_rows for x in result.records if x.case_id == case_id)
    # the batch's numbers are pipeline.measure's, and near the phantom's truth
    ct = read_ct(cohort / "c01_thigh.nii.gz")
    labels = read_labels(cohort / "c01_thigh_labels.nii.gz", ct.geometry)
    direct = pipeline.measure(ct, labels, pipeline.MeasureOptions(calibration="none"))
    got = {(r["structure"], r["quantity"]): r["value"] for r in rows
           if r["case_id"] == "c01_thigh"}
    for row in direct.rows:
        assert got[(row.structure, row.quantity)] == row.display_value()
    truth = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=1)).truth
    key = "vastus_lateralis_left"
    expected = truth.structures[key].volume_in_fov_cm3
    assert float(got[(key, "volume")]) == pytest.approx(expected, rel=VOLUME_REL_TOL)
    assert format_value(direct.value(key, "volume"), "cm3", "volume") == got[(key, "volume")]


# --- resume -----------------------------------------------------------------------------------
def test_rerun_resumes_finished_cases_and_retries_failed(local_run, cohort, tmp_path):
    _, first = local_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    before = _mtimes(out)
    rerun = run_batch(cohort, out, OPTIONS)
    status = {r.case_id: r for r in rerun.records}
    assert all(status[c].resumed and status[c].status == "ok" for c in GOOD)
    assert all(not status[c].resumed and status[c].status == "failed" for c in BROKEN)
    after = _mtimes(out)
    done = [k for k in before if k.split(os.sep)[1] in GOOD]
    assert done and all(after[k] == before[k] for k in done)  # not rewritten
    assert (out / "cohort.csv").read_text() == (first / "cohort.csv").read_text()
    assert json.loads((out / "cases.json").read_text())["summary"]["n_resumed"] == 3


def test_stale_staging_folder_of_a_killed_run_is_removed(cohort, tmp_path):
    out = tmp_path / "out"
    stale = out / "cases" / ".c01_thigh.partial-k1ll3d"
    stale.mkdir(parents=True)
    (stale / "results.csv").write_text("half\n")
    other = out / "cases" / ".c01_thigh.partial-x.partial-keep"  # not this case's stage
    other.mkdir()
    spec = next(c for c in discover_cases(cohort) if c.case_id == "c01_thigh")
    assert run_case(spec, OPTIONS, str(out)).status == "ok"
    assert not stale.exists() and other.exists()
    with pytest.raises(InputError, match="is the input folder"):
        run_batch(cohort, cohort, OPTIONS)


def test_changed_input_or_option_recomputes(cohort, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("c01_thigh.nii.gz", "c01_thigh_labels.nii.gz", "c01_thigh_labels.labels.json",
                 "c03_lumbar.nii.gz", "c03_lumbar_labels.nii.gz",
                 "c03_lumbar_labels.labels.json"):
        shutil.copy(cohort / name, src / name)
    out = tmp_path / "out"
    run_batch(src, out, OPTIONS)
    stamp = (out / "cases" / "c03_lumbar" / "done.json").stat().st_mtime_ns
    # a changed label map: the lumbar case's psoas removed
    ct = read_ct(src / "c03_lumbar.nii.gz")
    labels = read_labels(src / "c03_lumbar_labels.nii.gz", ct.geometry)
    value = next(v for v, k in labels.structures.items() if k.startswith("psoas"))
    arr = np.where(labels.array == value, 0, labels.array)
    write_label_map(replace(labels, array=arr), src / "c03_lumbar_labels.nii.gz")
    second = {r.case_id: r for r in run_batch(src, out, OPTIONS).records}
    assert second["c01_thigh"].resumed and not second["c03_lumbar"].resumed
    assert (out / "cases" / "c03_lumbar" / "done.json").stat().st_mtime_ns != stamp
    cohort_rows = _read_csv(out / "cohort.csv")
    assert not any(r["structure"] == labels.structures[value] and r["case_id"] == "c03_lumbar"
                   and r["quantity"] == "volume" and r["value"] not in ("",)
                   for r in cohort_rows)
    # a changed option recomputes every case
    other = BatchOptions(measure={"calibration": "none", "criteria": "ewgsop2"})
    third = run_batch(src, out, other).records
    assert [r.resumed for r in third] == [False, False]
    assert all(r.status == "ok" for r in third)


# --- parallel: process pool and Dask give the same table --------------------------------------
def test_two_local_workers_give_the_same_cohort(local_run, cohort, tmp_path):
    _, first = local_run
    result = run_batch(cohort, tmp_path / "out", OPTIONS, workers=2)
    assert {r.case_id: r.status for r in result.records} == {
        **{c: "ok" for c in GOOD}, **{c: "failed" for c in BROKEN}}
    assert len({r.worker for r in result.records}) >= 1
    assert all(r.worker.split(":")[1] != str(os.getpid()) for r in result.records)
    assert (tmp_path / "out" / "cohort.csv").read_text() == (first / "cohort.csv").read_text()


def test_dask_cluster_gives_the_same_cohort(local_run, cohort, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, first = local_run
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        result = run_batch(cohort, tmp_path / "out", OPTIONS,
                           scheduler=cluster.scheduler_address)
        rerun = run_batch(cohort, tmp_path / "out", OPTIONS,
                          scheduler=cluster.scheduler_address)
    status = {r.case_id: r for r in result.records}
    for case_id, words in BROKEN.items():
        assert status[case_id].status == "failed" and words in status[case_id].error
    assert all(status[c].status == "ok" for c in GOOD)
    assert all(r.worker.split(":")[1] != str(os.getpid()) for r in result.records)
    assert (tmp_path / "out" / "cohort.csv").read_text() == (first / "cohort.csv").read_text()
    assert {r.case_id for r in rerun.records if r.resumed} == set(GOOD)


def test_unreachable_scheduler_is_refused_with_its_address():
    pytest.importorskip("distributed")
    from CTMuscleBoneLib.batch.executors import DaskExecutor

    with pytest.raises(InputError, match="Cannot connect to the Dask scheduler tcp://127"):
        DaskExecutor("tcp://127.0.0.1:9", timeout_s=1.0)


# --- CSV list: per-case facts override the batch's ---------------------------------------------
def test_csv_list_overrides_patient_facts_per_case(cohort, tmp_path):
    listing = tmp_path / "cases.csv"
    rel = os.path.relpath(cohort, tmp_path)
    listing.write_text(
        "case_id,ct,labels,sex,age,height,weight\n"
        f"a,{rel}/c01_thigh.nii.gz,{rel}/c01_thigh_labels.nii.gz,F,70,158,55\n"
        f"b,{rel}/c01_thigh.nii.gz,{rel}/c01_thigh_labels.nii.gz,,,,\n"
        f"c,{rel}/c01_thigh.nii.gz,{rel}/c01_thigh_labels.nii.gz,X,,,\n")
    options = BatchOptions(measure={"calibration": "none", "sex": "M", "height_m": 1.80})
    result = run_batch(listing, tmp_path / "out", options)
    status = {r.case_id: r for r in result.records}
    assert status["a"].status == status["b"].status == "ok"
    assert status["c"].status == "failed" and "Sex 'X'" in status["c"].error
    patient = {c: json.loads((tmp_path / "out" / "cases" / c / "results.json").read_text())
               ["provenance"]["patient"] for c in ("a", "b")}
    assert patient["a"]["sex"] == "F" and patient["a"]["height_m"] == pytest.approx(1.58)
    assert patient["b"]["sex"] == "M" and patient["b"]["height_m"] == pytest.approx(1.80)


# --- command line, progress, Ctrl-C and crash resume -------------------------------------------
def test_cli_batch_reports_failures_with_exit_code_1(local_run, cohort, tmp_path, capsys):
    rc = main(["batch", str(cohort), "--out", str(tmp_path / "out"), "--calibration", "none"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "6/6 cases" in err and "3 failed" in err
    for case_id, words in BROKEN.items():
        assert f"{case_id}: " in err and words in err
    assert (tmp_path / "out" / "cohort.csv").read_text() == \
        (local_run[1] / "cohort.csv").read_text()


def test_cli_options_reach_every_case_and_its_marker(cohort, tmp_path):
    listing = tmp_path / "one.csv"
    listing.write_text(f"case_id,ct,labels\nt,{cohort}/c01_thigh.nii.gz,"
                       f"{cohort}/c01_thigh_labels.nii.gz\n")
    out = tmp_path / "out"
    rc = main(["batch", str(listing), "--out", str(out), "--calibration", "none", "--sex", "F",
               "--height", "162", "--weight", "60", "--criteria", "ewgsop2", "--quiet"])
    assert rc == 0
    marker = json.loads((out / "cases" / "t" / "done.json").read_text())
    measure = marker["options"]["measure"]
    assert measure["criteria"] == "ewgsop2" and measure["height_m"] == pytest.approx(1.62)
    assert measure["sex"] == "F" and measure["weight_kg"] == 60
    patient = json.loads((out / "cases" / "t" / "results.json").read_text())["provenance"][
        "patient"]
    assert patient["height_m"] == pytest.approx(1.62)


def test_progress_estimates_time_left():
    import io

    from CTMuscleBoneLib.batch.runner import CaseRecord

    buf = io.StringIO()
    bar = BatchProgress(stream=buf)
    bar.begin(4, "local")
    bar.update(CaseRecord("a", status="ok", resumed=True))
    assert "left" not in buf.getvalue().splitlines()[-1]  # no rate from a resumed case
    bar.update(CaseRecord("b", status="ok"))
    bar.update(CaseRecord("c", status="failed", error="bad\nmore"))
    lines = buf.getvalue().splitlines()
    assert "2/4 cases" in lines[-2] and "left" in lines[-2]
    assert "1 failed" in lines[-1] and "c failed: bad" in lines[-1]


def _batch_command(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "CTMuscleBoneLib.cli.main", "batch", str(src), "--out",
            str(out), "--calibration", "none"]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "SIGKILL"),
                    reason="needs POSIX named pipes and signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, getattr(signal, "SIGKILL", 9)],
                         ids=["ctrl-c", "crash"])
def test_interrupted_batch_resumes_without_recomputing(cohort, tmp_path, sig):
    """The batch stops after its first case (the second case's CT is a FIFO nobody
    writes, so it waits there); a rerun keeps the finished case and completes."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("c01_thigh.nii.gz", "c01_thigh_labels.nii.gz", "c01_thigh_labels.labels.json",
                 "c03_lumbar_labels.nii.gz", "c03_lumbar_labels.labels.json"):
        shutil.copy(cohort / name, src / name)
    os.mkfifo(src / "c03_lumbar.nii.gz")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(pipeline.__file__).parents[1])}
    # A child inherits an ignored SIGINT (pytest started as a background job of a
    # non-interactive shell, as CI runners may do), and Python then installs no Ctrl-C
    # handler: the batch would rightly ignore the signal. A handled SIGINT is reset to
    # the default on exec, so the batch starts as it would from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(_batch_command(src, out), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    marker = out / "cases" / "c01_thigh" / "done.json"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        partial = json.loads((out / "cases.json").read_text())
        assert partial["complete"] is False
        assert [c["case_id"] for c in partial["cases"]] == ["c01_thigh"]
    else:
        assert proc.returncode == -signal.SIGKILL
    stamp = marker.stat().st_mtime_ns
    (src / "c03_lumbar.nii.gz").unlink()
    shutil.copy(cohort / "c03_lumbar.nii.gz", src / "c03_lumbar.nii.gz")
    done = subprocess.run(_batch_command(src, out), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.stat().st_mtime_ns == stamp
    cases = {c["case_id"]: c for c in json.loads((out / "cases.json").read_text())["cases"]}
    assert cases["c01_thigh"]["resumed"] and not cases["c03_lumbar"]["resumed"]
    rows = _read_csv(out / "cohort.csv")
    assert {r["case_id"] for r in rows} == {"c01_thigh", "c03_lumbar"}
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]


def test_case_finished_after_its_last_reply_is_listed_when_interrupted(cohort, tmp_path,
                                                                        monkeypatch):
    """The race of an interruption: a worker has written a case's ``done.json`` but the
    batch never received its record. The partial tables still list that case (read from
    its marker, the unfinished case's inputs untouched), and a rerun resumes it."""
    from CTMuscleBoneLib.batch import executors

    src = tmp_path / "in"
    src.mkdir()
    for name in ("c01_thigh.nii.gz", "c01_thigh_labels.nii.gz",
                 "c01_thigh_labels.labels.json"):
        shutil.copy(cohort / name, src / name)
    out = tmp_path / "out"

    def finish_first_then_interrupt(self, fn, items, *args):
        fn(items[0], *args)  # its done.json is written, its reply is lost
        raise KeyboardInterrupt
        yield  # a generator, like the real one

    monkeypatch.setattr(executors.LocalExecutor, "map_unordered", finish_first_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_batch(src, out, OPTIONS)
    partial = json.loads((out / "cases.json").read_text())
    assert partial["complete"] is False
    [case] = partial["cases"]
    marker = json.loads((out / "cases" / "c01_thigh" / "done.json").read_text())
    assert case["case_id"] == "c01_thigh" and case["status"] == "ok" and not case["resumed"]
    assert case["ct_sha256"] == marker["ct_sha256"] and case["n_rows"] == marker["n_rows"] > 0
    assert {r["case_id"] for r in _read_csv(out / "cohort.csv")} == {"c01_thigh"}
    monkeypatch.undo()
    assert run_batch(src, out, OPTIONS).records[0].resumed


def test_a_marker_of_an_earlier_run_is_not_taken_for_this_runs(cohort, tmp_path):
    from CTMuscleBoneLib.batch.cases import CaseSpec
    from CTMuscleBoneLib.batch.runner import record_written_since

    spec = CaseSpec("c01_thigh", str(cohort / "c01_thigh.nii.gz"),
                    str(cohort / "c01_thigh_labels.nii.gz"))
    assert record_written_since(spec, OPTIONS, str(tmp_path), 0.0) is None  # no marker
    assert run_case(spec, OPTIONS, str(tmp_path)).status == "ok"
    assert record_written_since(spec, OPTIONS, str(tmp_path), 0.0).status == "ok"
    assert record_written_since(spec, OPTIONS, str(tmp_path), time.time() + 60) is None


# --- per-case report and DICOM outputs, de-identified cohort tables ----------------------------
def test_output_options_count_in_the_fingerprint(tmp_path):
    from CTMuscleBoneLib.batch.options import fingerprint

    base = fingerprint(OPTIONS, {}, segmented=False)[0]
    for change in ({"report": True}, {"dicom": True}, {"deidentify": True}):
        assert fingerprint(replace(OPTIONS, **change), {}, segmented=False)[0] != base, change
    names = tmp_path / "names.json"
    names.write_text('{"1": "femur_left"}')
    with_names = replace(OPTIONS, names=str(names))
    first = fingerprint(with_names, {}, segmented=False)[0]
    assert first != base
    names.write_text('{"1": "femur_right"}')  # the names file's content counts, not its path
    assert fingerprint(with_names, {}, segmented=False)[0] != first
    assert fingerprint(with_names, {}, segmented=True)[0] == fingerprint(
        OPTIONS, {}, segmented=True)[0]  # no label map: the names do not apply


def test_report_dicom_and_deidentify_per_case_with_resume(tmp_path):
    """A DICOM study (patient 'Test^Phantom', ID 'CTMB-TEST') in a folder named after the
    patient: a plain run, then the CLI with --report --dicom --deidentify recomputes the
    case, writes its report and DICOM files into its folder and leaves every identifier out
    of the case's files and the cohort tables; a third run resumes."""
    from test_io_ct import write_dicom_series

    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=1))
    g = ph.ct.geometry
    src = tmp_path / "Doe_Jane_archive"
    series_uid = write_dicom_series(src / "p001", ph.ct.hu, spacing=g.spacing_mm,
                                    origin=g.origin_mm, contrast=None)
    write_label_map(ph.labels, src / "p001_labels.nii.gz")
    out = tmp_path / "out"
    (plain,) = run_batch(src, out, OPTIONS).records
    assert plain.status == "ok", plain.error
    case = out / "cases" / "p001"
    assert "Doe_Jane_archive" in (out / "cases.csv").read_text()  # the control: paths shown
    assert not (case / "report.html").exists()

    args = ["batch", str(src), "--out", str(out), "--calibration", "none", "--report",
            "--dicom", "--deidentify", "--quiet"]
    assert main(args) == 0
    (record,) = json.loads((out / "cases.json").read_text())["cases"]
    assert record["status"] == "ok" and not record["resumed"]  # recomputed: new outputs
    for name in ("report.html", "report.pdf", "segmentation.dcm", "measurements_sr.dcm",
                 "results.csv", "results.json", "summary.txt", "done.json"):
        assert (case / name).is_file(), name
    secrets = ("Test^Phantom", "CTMB-TEST", "Doe_Jane", series_uid, "20240131")
    texts = [out / "cohort.csv", out / "cases.csv", out / "cases.json",
             *(p for p in case.iterdir() if p.suffix in (".csv", ".json", ".txt", ".html"))]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        leaked = [s for s in secrets if s in text]
        assert not leaked, (path.name, leaked)
    cases = _read_csv(out / "cases.csv")
    assert cases[0]["case_id"] == "p001" and cases[0]["ct"] == "[removed]"
    assert cases[0]["ct_sha256"] == plain.ct_sha256  # the checksum stays
    import pydicom

    seg = pydicom.dcmread(case / "segmentation.dcm")
    sr = pydicom.dcmread(case / "measurements_sr.dcm")
    assert seg.Modality == "SEG" and sr.Modality == "SR"
    for ds in (seg, sr):
        assert str(ds.PatientName) != "Test^Phantom" and ds.PatientID != "CTMB-TEST"
        assert ds.PatientIdentityRemoved == "YES"
    # the SEG refers to the de-identified copy of the CT written beside it, not the source
    copies = sorted((case / "ct").glob("*.dcm"))
    assert len(copies) == g.shape[2]
    ref = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert ref != series_uid and ref == pydicom.dcmread(copies[0]).SeriesInstanceUID
    html = (case / "report.html").read_text(encoding="utf-8")
    volume = next(r for r in _read_csv(case / "results.csv")
                  if r["structure"] == "vastus_lateralis_left" and r["quantity"] == "volume")
    assert volume["value"] in html  # the report shows the case's numbers

    assert main(args) == 0  # same options: nothing recomputed
    (again,) = json.loads((out / "cases.json").read_text())["cases"]
    assert again["resumed"]


def test_report_option_without_its_packages_stops_before_any_case(cohort, tmp_path,
                                                                   monkeypatch):
    import importlib.util

    from CTMuscleBoneLib.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "reportlab" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"ctmusclebone\[reports\]"):
        run_batch(cohort, tmp_path / "out", replace(OPTIONS, report=True))
    assert not (tmp_path / "out" / "cases").exists()
