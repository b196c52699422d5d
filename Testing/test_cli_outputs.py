"""Command-line outputs: checked before work, all or nothing, one-line errors.

Each case runs the real command (``CTMuscleBoneLib.cli.main.main``) on files built here
and checks the exit code, the one-line message, that no traceback is printed, that
inputs are unchanged and that a failed run leaves no output behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.image import CTImage, Geometry
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import sha256_of_path


@pytest.fixture(scope="module")
def thigh_files(tmp_path_factory) -> dict[str, Path]:
    """A small thigh phantom CT and its true label map on disk."""
    d = tmp_path_factory.mktemp("thigh")
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=4.0, seed=11))
    ct = write_image(ph.ct.hu, ph.ct.geometry, d / "ct.nii.gz")
    labels, _ = write_label_map(ph.labels, d / "labels.nii.gz")
    return {"ct": ct, "labels": labels, "dir": d}


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("ctmusclebone: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_out_naming_a_file_is_refused_before_work(thigh_files, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels",
               str(thigh_files["labels"]), "--out", str(target), "--quiet"])
    assert rc == 2
    msg = _one_line_error(capsys.readouterr().err)
    assert "existing file" in msg
    assert target.read_text() == "keep me"


def test_out_under_a_file_is_refused(thigh_files, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels",
               str(thigh_files["labels"]), "--out", str(blocker / "sub"), "--quiet"])
    assert rc == 2
    assert "is a file" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("args, word", [
    (["--age", "-3"], "age"),
    (["--height", "0"], "height"),
    (["--sex", "X"], "Sex"),
])
def test_implausible_patient_facts_are_refused(thigh_files, tmp_path, capsys, args, word):
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels",
               str(thigh_files["labels"]), "--out", str(out), "--quiet", *args])
    assert rc == 2
    assert word.lower() in _one_line_error(capsys.readouterr().err).lower()
    assert not out.exists()


def test_measure_writes_summary_and_patient_provenance(thigh_files, tmp_path):
    import json

    before = sha256_of_path(thigh_files["ct"]), sha256_of_path(thigh_files["labels"])
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels",
               str(thigh_files["labels"]), "--out", str(out), "--quiet", "--sex", "F",
               "--height", "162", "--age", "70"])
    assert rc == 0
    assert (out / "summary.txt").is_file()
    d = json.loads((out / "results.json").read_text())
    p = d["provenance"]["patient"]
    assert (p["sex"], p["sex_source"]) == ("F", "option")
    assert p["height_m"] == pytest.approx(1.62) and p["age_years"] == 70
    assert (sha256_of_path(thigh_files["ct"]), sha256_of_path(thigh_files["labels"])) == before
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".out.partial")]


def test_missing_alm_model_is_refused_before_work(thigh_files, tmp_path, capsys):
    out = tmp_path / "analysis"
    rc = main(["analyze", "--ct", str(thigh_files["ct"]), "--samples", "1", "--quiet",
               "--alm-model", str(tmp_path / "missing.json"), "--out", str(out)])
    assert rc == 2
    assert "ALM model file not found" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_failed_analyze_leaves_no_output(thigh_files, tmp_path, capsys, monkeypatch):
    """A failure in measuring, after the segmentation was made, leaves nothing behind."""
    pytest.importorskip("torch")
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.errors import InputError

    def fail(*args, **kwargs):  # fault injection: the measuring step fails
        raise InputError("injected failure in measuring")

    monkeypatch.setattr(pipeline, "measure_case", fail)
    out = tmp_path / "analysis"
    rc = main(["analyze", "--ct", str(thigh_files["ct"]), "--samples", "1", "--quiet",
               "--out", str(out)])
    assert rc == 2
    assert "injected failure" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()  # no segmentation/ folder left behind
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_output(thigh_files, tmp_path, capsys, monkeypatch):
    """A failure while writing (after some files were written) leaves the folder as it was."""
    from CTMuscleBoneLib import results as results_mod

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier run")

    def fail(self, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(results_mod.Results, "write_json", fail)
    rc = main(["measure", "--ct", str(thigh_files["ct"]), "--labels",
               str(thigh_files["labels"]), "--out", str(out), "--quiet"])
    assert rc == 2
    assert "No space left" in _one_line_error(capsys.readouterr().err)
    assert sorted(q.name for q in out.iterdir()) == ["old.txt"]  # results.csv not kept
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]


def test_segment_refuses_an_mr_image(tmp_path, capsys):
    rng = np.random.default_rng(1)
    hu = rng.uniform(0, 900, size=(24, 24, 12)).astype(np.float32)
    mr = CTImage(hu, Geometry(hu.shape, (1.0, 1.0, 3.0)))
    path = write_image(mr.hu, mr.geometry, tmp_path / "mr.nii.gz")
    rc = main(["segment", "--ct", str(path), "--out", str(tmp_path / "seg"), "--quiet"])
    assert rc == 2
    assert "not Hounsfield" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize("command", [["demo"], ["segment", "--ct", "CT"]])
def test_missing_segmentation_extra_is_one_line(command, tmp_path, capsys, monkeypatch,
                                                thigh_files):
    for mod in ("torch", "monai", "safetensors"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed
    argv = [a if a != "CT" else str(thigh_files["ct"]) for a in command]
    rc = main([*argv, "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    msg = _one_line_error(capsys.readouterr().err)
    assert "ctmusclebone[segmentation]" in msg
    assert not (tmp_path / "o").exists()


def test_models_verify_without_segmentation_extra(capsys, monkeypatch):
    for mod in ("torch", "monai", "safetensors"):
        monkeypatch.setitem(sys.modules, mod, None)
    rc = main(["models", "verify", "ctmusclebone-demo-synthetic"])
    assert rc == 2
    assert "segmentation" in _one_line_error(capsys.readouterr().err)


# --- help texts and the README's command list ---------------------------------------------
def _subparsers():
    import argparse

    from CTMuscleBoneLib.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_and_says_its_default():
    import argparse

    for name, sp in _subparsers().items():
        for action in sp._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            if action.option_strings and action.default not in (None, False):
                text = sp.formatter_class(prog="x")._get_help_string(action)
                assert "default" in text.lower(), f"{name} {action.option_strings}"


def test_readme_command_list_matches_the_parsers():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```", 2)[1]
    commands = _subparsers()
    lines: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"ctmusclebone (\S+)", line.strip())
        if m:
            current = m.group(1)
            lines[current] = line
        elif current and line.startswith(" "):
            lines[current] += " " + line
    assert set(lines) == set(commands), "README command list and the parser disagree"
    for name, line in lines.items():
        sp = commands[name]
        known = {s for a in sp._actions for s in a.option_strings}
        for opt in re.findall(r"(--[a-z][a-z0-9-]*)", line.split("(")[0]):
            assert opt in known, f"README: ctmusclebone {name} has no {opt}"
        required = {a.option_strings[0] for a in sp._actions if a.required and a.option_strings}
        for opt in required:
            assert opt in line, f"README: ctmusclebone {name} lacks its required {opt}"
