"""``evaluate`` scores what the prediction misses: a structure in the reference and
absent from the prediction is Dice 0 (missed), one only in the prediction Dice 0
(false positive); an empty prediction is scored, not passed; a CT given as a prediction
is refused; an unpaired case is named. The AUROC and the volume agreement count missed
structures as the module docstring says."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.segmentation.evaluate import (
    NOTE_FALSE_POSITIVE,
    NOTE_MISSED,
    StructureScore,
    evaluate_label_maps,
    failure_detection_auroc,
    summarise,
    variant_statistics,
    volume_agreement,
)

GEOM = Geometry((16, 16, 16), (2.0, 2.0, 2.0))
KEYS = ("femur_left", "gracilis_left", "gluteus_maximus_left", "sartorius_left")


def _map(keys=KEYS) -> LabelMap:
    """Each structure a 4x4x4 block of its own; perfect prediction = same map."""
    arr = np.zeros(GEOM.shape, dtype=np.uint8)
    structures = {}
    for i, key in enumerate(KEYS):
        if key in keys:
            v = BY_KEY[key].label_value
            arr[1 + 4 * (i % 3):5 + 4 * (i % 3), 2 + 6 * (i // 3):6 + 6 * (i // 3), 4:8] = v
            structures[v] = key
    return LabelMap(arr, GEOM, structures)


def test_missed_and_false_positive_structures_score_dice_zero() -> None:
    ref = _map(("femur_left", "gracilis_left", "gluteus_maximus_left"))
    pred = _map(("gluteus_maximus_left", "sartorius_left"))  # misses 2, adds 1
    by = {s.structure: s for s in evaluate_label_maps(pred, ref, case="c")}
    assert set(by) == set(KEYS)
    for key in ("femur_left", "gracilis_left"):
        assert by[key].dice == 0.0 and by[key].assd_mm is None
        assert by[key].missed and by[key].note == NOTE_MISSED
    assert by["sartorius_left"].dice == 0.0 and by["sartorius_left"].false_positive
    assert by["sartorius_left"].note == NOTE_FALSE_POSITIVE
    assert by["gluteus_maximus_left"].dice == 1.0 and by["gluteus_maximus_left"].note == ""
    (s,) = [x for x in summarise(list(by.values())) if x.structure == "femur_left"]
    assert s.n_missed == 1 and s.dice_mean == 0.0


def test_missed_structure_counts_as_most_uncertain_in_both_aurocs() -> None:
    """The legacy AUROC agrees with the review variant: a missed structure, which has no
    uncertainty score, counts as scored above every present one."""
    mk = lambda key, d, u, n_p=10: StructureScore("c", key, d, None, n_p, 10, u)  # noqa: E731
    scores = [mk("a", 0.95, 0.1), mk("b", 0.9, 0.3), mk("c", 0.5, 0.2),
              mk("d", 0.0, None, n_p=0)]  # d missed: no score
    # failures c (0.2) and d (top) vs successes a (0.1), b (0.3): 3 of 4 pairs ordered
    assert failure_detection_auroc(scores) == pytest.approx(0.75)
    assert variant_statistics(scores, None).auroc == pytest.approx(0.75)


def test_volume_agreement_counts_misses_and_false_positives() -> None:
    ref, pred = _map(("femur_left",)), _map(())
    scores = []
    for i in range(3):
        scores += evaluate_label_maps(pred if i == 0 else ref, ref, case=f"c{i}",
                                      with_surface=False)
    scores += evaluate_label_maps(ref, _map(()), case="c3", with_surface=False)  # FP
    (va,) = volume_agreement(scores)
    assert va.n_cases == 4
    vol = 64 * GEOM.voxel_volume_cm3
    assert va.bias_cm3 == pytest.approx((-vol + vol) / 4)


def _write_cases(tmp_path: Path, pred: dict[str, LabelMap], ref: dict[str, LabelMap]) -> None:
    for side, maps in (("pred", pred), ("ref", ref)):
        for name, lm in maps.items():
            write_label_map(lm, tmp_path / side / f"{name}.nii.gz")


def test_cli_scores_structures_removed_from_the_prediction(tmp_path: Path, capsys) -> None:
    full = _map()
    # the prediction's table names every class (as ``segment``'s sidecar does); two are
    # absent from its map
    cut = dataclasses.replace(_map(("gluteus_maximus_left", "sartorius_left")),
                              structures=full.structures)
    _write_cases(tmp_path, {"c1": cut, "c2": full}, {"c1": full, "c2": full})
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "failed structures (Dice < 0.8): 2 of 8 (2 missed, 0 false positive)" in out
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    missed = [(s["case"], s["structure"]) for s in doc["scores"] if s["dice"] == 0.0]
    assert sorted(missed) == [("c1", "femur_left"), ("c1", "gracilis_left")]
    assert doc["n_missed"] == 2 and doc["n_false_positive"] == 0
    with open(tmp_path / "ev" / "evaluation.csv", newline="") as f:
        notes = {(r["case"], r["structure"]): r["note"] for r in csv.DictReader(f)}
    assert notes[("c1", "femur_left")] == NOTE_MISSED and notes[("c2", "femur_left")] == ""


def test_cli_scores_an_empty_prediction_as_all_missed(tmp_path: Path, capsys) -> None:
    _write_cases(tmp_path, {"c1": _map(())}, {"c1": _map()})
    assert main(["evaluate", "--pred", str(tmp_path / "pred" / "c1.nii.gz"),
                 "--ref", str(tmp_path / "ref" / "c1.nii.gz"), "--no-surface"]) == 0
    assert "failed structures (Dice < 0.8): 4 of 4 (4 missed" in capsys.readouterr().out


def test_cli_refuses_when_nothing_is_labelled(tmp_path: Path, capsys) -> None:
    _write_cases(tmp_path, {"c1": _map(())}, {"c1": _map(())})
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref",
                 str(tmp_path / "ref")]) == 2
    assert "Nothing to score" in capsys.readouterr().err


def test_cli_refuses_a_ct_as_prediction(tmp_path: Path, capsys) -> None:
    _write_cases(tmp_path, {}, {"c1": _map()})
    ct = np.random.default_rng(0).integers(-1000, 1200, GEOM.shape).astype(np.int16)
    write_image(ct, GEOM, tmp_path / "ct.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "ct.nii.gz"), "--ref",
                 str(tmp_path / "ref" / "c1.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "negative values" in err[0] and "not CT images" in err[0]
    write_image(ct.astype(np.float32) / 7.0, GEOM, tmp_path / "f.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "f.nii.gz"), "--ref",
                 str(tmp_path / "ref" / "c1.nii.gz")]) == 2
    assert "non-integer values" in capsys.readouterr().err


def test_cli_names_unpaired_cases_and_refuses_a_name_twice(tmp_path: Path, capsys) -> None:
    _write_cases(tmp_path, {"c1": _map(), "extra": _map()}, {"c1": _map(), "lonely": _map()})
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--no-surface", "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "prediction(s) without a reference of the same name, left out: extra" in err
    assert "reference(s) without a prediction of the same name, left out: lonely" in err
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert doc["unmatched"] == {"predictions": ["extra"], "references": ["lonely"]}
    write_label_map(_map(), tmp_path / "other" / "c1.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), str(tmp_path / "other"),
                 "--ref", str(tmp_path / "ref")]) == 2
    assert "two label maps give the case name 'c1'" in capsys.readouterr().err


def test_cli_leaves_out_structures_the_prediction_table_does_not_name(tmp_path: Path,
                                                                      capsys) -> None:
    """A reference structure that the model's table does not name (the model does not
    segment it) is not a miss: it is not scored, and it is listed."""
    ref = _map()
    pred = _map(("gluteus_maximus_left", "sartorius_left"))  # its table names these two
    _write_cases(tmp_path, {"c1": pred}, {"c1": ref})
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "ev")]) == 0
    captured = capsys.readouterr()
    assert "failed structures (Dice < 0.8): 0 of 2" in captured.out
    assert "not scored" in captured.err
    assert "femur_left" in captured.err and "gracilis_left" in captured.err
    # --structures scores them anyway (missed)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--structures", *KEYS]) == 0
    assert "2 of 4 (2 missed, 0 false positive)" in capsys.readouterr().out


def test_a_miss_in_a_case_without_uncertainty_is_not_ranked() -> None:
    """Only a case that came with uncertainty ranks its missed structures as the most
    uncertain; a miss in a case without a review list is left out of the AUROC."""
    ref = _map(("femur_left", "gracilis_left", "gluteus_maximus_left"))
    poor = _map(("femur_left", "gracilis_left", "gluteus_maximus_left"))
    g = BY_KEY["gracilis_left"].label_value
    poor.array[(poor.array == g) & (np.indices(GEOM.shape)[2] >= 6)] = 0  # half: Dice 0.67
    with_review = evaluate_label_maps(poor, ref, case="a", with_surface=False,
                                      uncertainty={"femur_left": 0.1, "gracilis_left": 0.05,
                                                   "gluteus_maximus_left": 0.2})
    assert {s.structure for s in with_review if s.dice < 0.8} == {"gracilis_left"}
    # case a: its one failure has the lowest score -> AUROC 0
    assert failure_detection_auroc(with_review) == pytest.approx(0.0)
    without = evaluate_label_maps(_map(("femur_left",)), ref, case="b", with_surface=False)
    # case b's two misses (no review list) must not count as detected failures
    assert failure_detection_auroc(with_review + without) == pytest.approx(0.0)
    assert variant_statistics(with_review + without, None).auroc == pytest.approx(0.0)
    assert all(not s.case_has_uncertainty for s in without)
