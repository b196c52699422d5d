"""The worker process of the Slicer module, without Qt and without the Slicer application.

- ProcessRunner: progress lines parsed, cancel ends the child and its children within
  2 s, a failing child gives a clear message;
- worker.py: refuses an MR-like image and a missing model (CTMB-ERROR, exit 2);
- one real run of the worker on a tiny synthetic CT with the bundled demo model, started
  by the module logic (CT written through a storage node, as in Slicer), then imported,
  measured, edited, re-measured and exported with real MRML nodes (slicer-core).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import slicer_fixtures
from CTMuscleBoneSlicer.parameters import CTMuscleBoneParameters
from CTMuscleBoneSlicer.process import (
    Failed,
    Finished,
    Log,
    ProcessRunner,
    Progress,
    format_error,
    format_progress,
    parse_line,
    worker_script,
)

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")


def _child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


# -- protocol ----------------------------------------------------------------------
def test_parse_progress_error_and_other_lines():
    assert parse_line("CTMB-PROGRESS 0.25 window 3/12\n") == Progress(0.25, "window 3/12")
    assert parse_line("CTMB-PROGRESS 1.7 done") == Progress(1.0, "done")
    assert parse_line("CTMB-PROGRESS abc x") == Log("CTMB-PROGRESS abc x")
    assert parse_line("CTMB-PROGRESS nan x") == Log("CTMB-PROGRESS nan x")
    assert parse_line("CTMB-ERROR The image is not a CT.") == "The image is not a CT."
    assert parse_line("hello") == Log("hello")
    assert parse_line(format_progress(0.5, "two\nlines")) == Progress(0.5, "two lines")
    assert parse_line(format_error("a\nb")) == "a b"


def test_runner_reports_progress_logs_and_success(tmp_path):
    runner = ProcessRunner(_child(tmp_path, """
        import sys
        print("CTMB-PROGRESS 0.0 start", flush=True)
        print("some log line", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        print("CTMB-PROGRESS 0.5 half", flush=True)
        print("CTMB-PROGRESS 1.0 done", flush=True)
    """))
    runner.start()
    events = runner.wait(timeout_s=20)
    assert [e for e in events if isinstance(e, Progress)] == [
        Progress(0.0, "start"), Progress(0.5, "half"), Progress(1.0, "done")]
    assert Log("some log line") in events
    assert Log("to stderr", "stderr") in events
    assert events[-1] == Finished(0)
    assert runner.poll() == []  # the final event comes once
    assert runner.finished and not runner.running


def test_failing_child_gives_its_error_line(tmp_path):
    runner = ProcessRunner(_child(tmp_path, """
        import sys
        print("CTMB-PROGRESS 0.1 reading", flush=True)
        print("CTMB-ERROR The image has no slices: load the whole series.", flush=True)
        sys.exit(2)
    """))
    runner.start()
    final = runner.wait(timeout_s=20)[-1]
    assert isinstance(final, Failed) and not final.cancelled
    assert final.returncode == 2
    assert final.message == "The image has no slices: load the whole series."


def test_crashing_child_gives_the_end_of_its_stderr(tmp_path):
    runner = ProcessRunner(_child(tmp_path, """
        raise RuntimeError("boom in the network")
    """))
    runner.start()
    final = runner.wait(timeout_s=20)[-1]
    assert isinstance(final, Failed) and final.returncode == 1
    assert "exit code 1" in final.message
    assert "RuntimeError: boom in the network" in final.message


def test_missing_executable_raises_on_start(tmp_path):
    runner = ProcessRunner([str(tmp_path / "no-such-python")])
    with pytest.raises(OSError):
        runner.start()


@pytest.mark.skipif(os.name == "nt", reason="process groups checked on POSIX")
def test_cancel_kills_child_and_grandchild_within_2_s(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    runner = ProcessRunner(_child(tmp_path, f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a child that ignores SIGTERM
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(g.pid))
        print("CTMB-PROGRESS 0.1 sleeping", flush=True)
        time.sleep(60)
    """))
    runner.start()
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "child did not start"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    t0 = time.monotonic()
    assert runner.cancel(timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0
    assert not runner.running
    events = runner.wait(timeout_s=5)
    assert isinstance(events[-1], Failed) and events[-1].cancelled
    time.sleep(0.2)
    assert not _alive(grandchild)  # the grandchild is gone too


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie left to a non-reaping init counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


# -- worker --------------------------------------------------------------------------
def _tiny_ct(path: Path, spacing_mm: float = 4.0) -> Path:
    """A 6 cm slab of the hip phantom through the gluteus maximus (~40 model windows)."""
    from CTMuscleBoneLib.io_ct import write_image
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    p = make_phantom(PhantomSpec(region="hip", spacing_mm=spacing_mm, seed=3,
                                 fov_mm=((-204, -128, -70), (208, 172, -10))))
    return write_image(p.ct.hu, p.ct.geometry, path)


def _run_worker(*args: str, timeout_s: float = 60) -> list:
    runner = ProcessRunner([sys.executable, str(worker_script()), *args])
    runner.start()
    return runner.wait(timeout_s=timeout_s)


def test_worker_refuses_an_mr_like_image(tmp_path):
    from CTMuscleBoneLib.image import Geometry
    from CTMuscleBoneLib.io_ct import write_image

    rng = np.random.default_rng(0)
    mr = rng.uniform(0, 900, size=(32, 32, 16)).astype(np.int16)  # no air, no HU scale
    geometry = Geometry(shape=mr.shape, spacing_mm=(1.0, 1.0, 3.0))
    path = write_image(mr, geometry, tmp_path / "mr.nrrd")
    events = _run_worker("--ct", str(path), "--out", str(tmp_path / "out"))
    final = events[-1]
    assert isinstance(final, Failed) and final.returncode == 2
    assert "CT" in final.message
    assert not (tmp_path / "out" / "outputs.json").exists()


def test_worker_reports_an_unknown_model(tmp_path):
    ct = _tiny_ct(tmp_path / "ct.nrrd", spacing_mm=6.0)
    events = _run_worker("--ct", str(ct), "--out", str(tmp_path / "out"),
                         "--model", "no-such-model-xyz")
    final = events[-1]
    assert isinstance(final, Failed) and final.returncode == 2
    assert "no-such-model-xyz" in final.message


def test_worker_on_tiny_ct_then_import_measure_edit_remeasure_export(tmp_path, slicer_env):
    """One real run of the worker (bundled demo model, 2 MC samples), driven by the logic."""
    import slicer
    from CTMuscleBoneLib.io_ct import read_ct
    from CTMuscleBoneSlicer import nodes
    from CTMuscleBoneSlicer.logic import AnalysisLogic

    ct = read_ct(_tiny_ct(tmp_path / "ct.nrrd"))
    volume = nodes.volume_node_from_array(slicer_env.scene, ct.hu, ct.geometry, "CT")
    params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), sex="F", height_m=1.6,
                                    age_years=70, mc_samples=2, device="cpu")
    logic = AnalysisLogic()
    n_nodes = slicer_env.scene.GetNumberOfNodes()
    t0 = time.monotonic()
    runner = logic.start_segmentation(volume, params, work_dir=tmp_path / "work")
    assert slicer_env.scene.GetNumberOfNodes() == n_nodes  # storage node removed again
    events = runner.wait(timeout_s=120)
    elapsed = time.monotonic() - t0
    final = events[-1]
    assert isinstance(final, Finished), getattr(final, "message", final)
    fractions = [e.fraction for e in events if isinstance(e, Progress)]
    assert len(fractions) > 5 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    print(f"worker run: {elapsed:.1f} s")

    case = logic.import_segmentation(volume, params)
    assert case.synthetic_model and "not for clinical" in case.clinical_use_warning.lower()
    scores = [r["score"] for r in case.review if r.get("score") is not None]
    assert scores and scores == sorted(scores, reverse=True)  # most uncertain first
    assert case.segmentation_node.GetSegmentation().GetNumberOfSegments() > 5
    # every structure on the review list is a segment the reviewer can jump to (the lumbar
    # class is listed by numbered vertebra, the segments the labels hold)
    missing = [r["key"] for r in case.review
               if r.get("present") and logic.segment_id_for(r["key"]) is None]
    assert not missing, missing
    assert set(case.heatmap_arrays) and case.heatmap_nodes
    # the heatmap's full scale is the model's two-class tie, the same on every case
    from CTMuscleBoneLib.segmentation import registry
    n_classes = registry.check_model_folder(registry.find_model(registry.DEFAULT_MODEL)
                                            ).n_channels
    assert case.n_classes == n_classes
    shown = next(iter(case.heatmap_nodes.values())).GetDisplayNode()
    assert shown.GetWindowLevelMax() in (pytest.approx(0.5 / n_classes),
                                         pytest.approx(np.log(2.0)))

    results = logic.measure(params)
    assert len(nodes.table_node_rows(case.table_node)) == len(results.rows)
    key = next(r["key"] for r in case.review
               if r.get("present") and results.get(r["key"], "volume") is not None
               and r["key"].startswith("gluteus_maximus"))
    segment_id = logic.segment_id_for(key)
    assert logic.center_on(key) == segment_id

    # a Segment Editor-like edit: drop half of the segment's voxels
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentation_node, segment_id, volume)
    edited = mask.copy()
    zs = np.nonzero(edited.any(axis=(1, 2)))[0]
    edited[: zs[len(zs) // 2]] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, case.segmentation_node, segment_id,
                                                     volume)
    before = results.get(key, "volume").value
    n_before = slicer_env.scene.GetNumberOfNodes()
    re = logic.remeasure(params)
    # the source images (femur views, vertebral ROIs) are replaced, not duplicated
    assert slicer_env.scene.GetNumberOfNodes() == n_before
    assert re.edited_structures == {key}
    assert re.results.get(key, "volume").value < before
    assert (key, "volume") in re.changed_rows
    assert all(s == key or not s.startswith("gluteus_maximus") for s, _ in re.changed_rows)

    def save_node(node, path):  # slicer.util.saveNode needs the application
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(path)
        return bool(storage.WriteData(node))

    paths = logic.export(tmp_path / "export", save_node=save_node)
    for name in ("segmentation",):
        assert Path(paths[name]).is_file()
    for name in ("results.csv", "results.json", "summary.txt", "report.html", "report.pdf"):
        assert (tmp_path / "export" / name).is_file()
    html = (tmp_path / "export" / "report.html").read_text(encoding="utf-8")
    assert '<figure data-key="muscles"><h3>' in html  # the muscle slices with the heatmap,
    assert "uncertainty map shown" in html  # drawn from the panel's uncertainty map
    # the report, the summary and the results say the segmentation came from the
    # synthetic demo model, as the panel does
    warning = case.clinical_use_warning
    assert warning and warning in html
    summary_text = (tmp_path / "export" / "summary.txt").read_text(encoding="utf-8")
    assert summary_text.count(warning) == 1  # once, at the top
    assert summary_text.lstrip().startswith(warning) or \
        summary_text.index(warning) < summary_text.index("Patient")
    exported = json.loads((tmp_path / "export" / "results.json").read_text(encoding="utf-8"))
    assert any(m.get("synthetic") for m in exported["provenance"]["models"])
    _check_dicom_and_deidentified_export(logic, tmp_path, save_node, key)
    logic.cleanup_work_dir()
    assert not (tmp_path / "work").exists()


def _check_dicom_and_deidentified_export(logic, tmp_path: Path, save_node, key: str) -> None:
    """Export with the panel's "DICOM SEG + SR" box, with and without "De-identify", for a
    CT whose header names the patient: the DICOM files read back with pydicom, the SR holds
    the table's numbers, and with de-identify on no exported file names the patient."""
    from dataclasses import replace

    import pydicom

    case = logic.case
    name, patient_id = "Doe^Jane", "PID-4711"
    case.ct = replace(case.ct, metadata=replace(case.ct.metadata, patient_name=name,
                                                patient_id=patient_id))
    named = logic.export(tmp_path / "named", save_node=save_node, report=False, dicom=True)
    seg = pydicom.dcmread(named["dicom_seg"])
    assert seg.Modality == "SEG" and str(seg.PatientName) == name  # the control
    out = tmp_path / "anonymous"
    paths = logic.export(out, save_node=save_node, report=True, dicom=True, deidentify=True)
    seg = pydicom.dcmread(out / "segmentation.dcm")
    sr = pydicom.dcmread(out / "measurements_sr.dcm")
    assert Path(paths["dicom_seg"]) == out / "segmentation.dcm"
    assert seg.Modality == "SEG" and sr.Modality == "SR"
    assert seg.NumberOfFrames > 0 and len(seg.SegmentSequence) > 5
    numbers = [float(e.value) for e in sr.iterall() if e.keyword == "NumericValue"]
    volume = case.results.get(key, "volume").value
    assert any(abs(v - volume) <= 1e-6 * max(1.0, abs(volume)) for v in numbers)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "ct").is_dir() and len(files) > 8
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".pdf":
            continue  # compressed streams: its text is the HTML's (same report model)
        for secret in (name, patient_id):
            assert secret.encode() not in data, (path.name, secret)
    for ds in (seg, sr, pydicom.dcmread(next((out / "ct").glob("*.dcm")))):
        assert str(ds.PatientName) != name and ds.PatientIdentityRemoved == "YES"


def test_cancel_stops_the_real_worker_within_2_s_and_leaves_no_outputs(tmp_path):
    ct = _tiny_ct(tmp_path / "ct.nrrd", spacing_mm=6.0)
    runner = ProcessRunner([sys.executable, str(worker_script()), "--ct", str(ct),
                            "--out", str(tmp_path / "out"), "--samples", "2", "--device", "cpu"])
    runner.start()
    deadline = time.monotonic() + 120
    while not (runner.last_progress and "window" in runner.last_progress.message):
        assert runner.running and time.monotonic() < deadline, "worker did not reach the network"
        runner.poll()
        time.sleep(0.05)
    t0 = time.monotonic()
    assert runner.cancel(timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0
    final = runner.wait(timeout_s=5)[-1]
    assert isinstance(final, Failed) and final.cancelled
    assert not (tmp_path / "out" / "outputs.json").exists()


# -- cancel escalation (Windows has no SIGKILL) ----------------------------------------
def test_cancel_steps_kill_the_tree_on_windows_and_escalate_on_posix():
    from CTMuscleBoneSlicer.process import cancel_steps

    assert cancel_steps("posix") == (False, True)  # SIGTERM to the group, then SIGKILL
    assert cancel_steps("nt") == (True, True)  # the tree at once (terminate orphans it)


class _StubbornChild:
    """A Popen stand-in that survives terminate() and ends only when its tree is killed."""

    pid = 4242
    returncode = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("stub", timeout)
        return self.returncode

    def terminate(self):
        self.calls.append("terminate")


def test_cancel_on_windows_reaches_the_tree_kill(monkeypatch):
    """With os.name 'nt' and no signal.SIGKILL (as on Windows) cancel() must kill the tree;
    the former code sent SIGTERM (terminate) twice and never got there."""
    from CTMuscleBoneSlicer import process

    child = _StubbornChild()

    def kill_tree(pid):
        child.calls.append(f"kill_tree {pid}")
        child.returncode = 1

    monkeypatch.setattr(process, "_kill_tree_windows", kill_tree)
    monkeypatch.delattr(process.signal, "SIGKILL")
    runner = ProcessRunner(["stub"])
    runner.proc = child
    monkeypatch.setattr(process.os, "name", "nt")  # only the stub is touched from here on
    try:
        ok = runner.cancel(timeout_s=0.2)
    finally:
        monkeypatch.undo()
    assert ok and "kill_tree 4242" in child.calls
