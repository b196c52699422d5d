"""Structure score variants, their evaluation statistics, the study runner and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.segmentation.evaluate import (
    ReliabilityCounts,
    StructureScore,
    add_reliability,
    failure_auroc,
    reliability_diagram,
    spearman_rho,
    variant_statistics,
)
from CTMuscleBoneLib.segmentation.uncertainty import (
    SCORE_VARIANTS,
    review_from_variants,
    structure_score_variants,
    structure_uncertainty,
)


# -- pure statistics against hand-computed values ----------------------------------------
def test_spearman_with_ties_hand_computed():
    # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): sum dxdy = 4.5, sum dx^2 = 4.5,
    # sum dy^2 = 5  ->  rho = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    assert spearman_rho([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(3 / np.sqrt(10))
    assert spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho([1, 2], [1, 2]) is None  # fewer than 3 pairs
    assert spearman_rho([1, 1, 1], [1, 2, 3]) is None  # constant column
    assert spearman_rho([1, 2, np.inf], [0, 1, 2]) == pytest.approx(1.0)
    with pytest.raises(InputError, match="NaN"):
        spearman_rho([1, np.nan, 2], [1, 2, 3])


def test_failure_auroc_with_ties_hand_computed():
    # failed (0.5, 0.3) vs ok (0.3, 0.1): pairs 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    auc, note = failure_auroc([0.5, 0.3, 0.3, 0.1], [True, True, False, False])
    assert auc == pytest.approx(0.875) and note == ""
    # a missed structure (+inf) ranks above every finite score
    auc, _ = failure_auroc([np.inf, 0.1, 0.2], [True, False, False])
    assert auc == 1.0
    assert failure_auroc([0.1, 0.2], [False, False]) == (None, "undefined: no failures in the set")
    assert failure_auroc([0.1, 0.2], [True, True])[0] is None


def _score(case: str, key: str, dice: float, **variants: float) -> StructureScore:
    return StructureScore(case, key, dice, None, 10, 10,
                          variants={k.replace("__", ":"): v for k, v in variants.items()})


def test_variant_statistics_pooled_and_per_case():
    v = "predictive_entropy__inside"
    scores = [
        _score("a", "s1", 0.95, **{v: 0.1}), _score("a", "s2", 0.70, **{v: 0.3}),
        _score("a", "s3", 0.85, **{v: 0.2}),
        _score("b", "s1", 0.90, **{v: 0.2}), _score("b", "s2", 0.60, **{v: 0.1}),
        _score("b", "s3", 0.99, **{v: 0.05}),
    ]
    # a missed structure: no score, Dice 0 -> counted as scored highest
    scores.append(StructureScore("b", "s4", 0.0, None, 0, 50))
    st = variant_statistics(scores, "predictive_entropy:inside")
    assert st.n_pairs == 7 and st.n_cases == 2 and st.n_failures == 3
    assert st.mean_dice == pytest.approx((0.95 + 0.7 + 0.85 + 0.9 + 0.6 + 0.99) / 7)
    # failures: 0.3, 0.1, inf; successes: 0.1, 0.2, 0.2, 0.05
    # 0.3 beats 4; 0.1 ties 1 (0.5) and beats 0.05 (1); inf beats 4 -> 9.5 / 12
    assert st.auroc == pytest.approx(9.5 / 12)
    # case a: rho(score, 1 - dice) = 1; case b: scores (0.2, 0.1, 0.05, inf) vs
    # 1 - dice (0.1, 0.4, 0.01, 1.0): ranks (3, 2, 1, 4) vs (2, 3, 1, 4) -> rho = 0.8
    assert st.spearman_case_mean == pytest.approx((1.0 + 0.8) / 2)
    assert st.n_cases_spearman == 2
    pooled = spearman_rho([0.1, 0.3, 0.2, 0.2, 0.1, 0.05, np.inf],
                          [0.05, 0.3, 0.15, 0.1, 0.4, 0.01, 1.0])
    assert st.spearman_pooled == pytest.approx(pooled)
    none = variant_statistics(scores[:6], "predictive_entropy:inside", failure_dice=0.5)
    assert none.auroc is None and "no failures" in none.auroc_note


def test_reliability_and_ece_hand_computed():
    counts = ReliabilityCounts.empty(10)
    counts.add(np.array([0.95, 0.95, 0.85, 0.35]), np.array([True, False, True, True]))
    d = reliability_diagram(counts)
    # bins (0.9, 1]: n 2, conf .95, acc .5; (0.8, 0.9]: conf .85, acc 1; (0.3, 0.4]: .35, 1
    assert d.count[9] == 2 and d.count[8] == 1 and d.count[3] == 1 and d.n_voxels == 4
    assert d.accuracy[9] == pytest.approx(0.5) and d.mean_confidence[3] == pytest.approx(0.35)
    assert d.accuracy[0] is None
    assert d.ece == pytest.approx((2 * 0.45 + 0.15 + 0.65) / 4)
    edge = ReliabilityCounts.empty(10)
    edge.add(np.array([0.0, 0.5, 1.0]), np.ones(3, bool))  # bins ((m-1)/M, m/M]
    assert edge.count[0] == 1 and edge.count[4] == 1 and edge.count[9] == 1
    assert reliability_diagram(ReliabilityCounts.empty()).ece is None
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        counts.add(np.array([1.5]), np.array([True]))


def test_reliability_compares_structures_by_key_near_structures():
    g = Geometry((12, 12, 12), (1.0, 1.0, 1.0))
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[4:8, 4:8, 4:8] = 1
    pred = np.where(ref > 0, 7, 0).astype(np.uint8)  # other value, same key
    pred[4, 4:8, 4:8] = 0  # one face missed: 16 wrong voxels
    conf = np.full(ref.shape, 0.95, np.float32)
    counts = ReliabilityCounts.empty(10)
    add_reliability(counts, conf, LabelMap(pred, g, {7: "femur_left"}),
                    LabelMap(ref, g, {1: "femur_left"}), margin_voxels=1)
    # region: the 4^3 cube grown by one face-connected dilation: 64 + 6 * 16 = 160
    assert counts.count.sum() == 160
    assert counts.sum_correct.sum() == 160 - 16


# -- score variants ---------------------------------------------------------------------
def test_score_variants_inside_and_band():
    labels = np.zeros((14, 14, 14), np.uint8)
    labels[3:11, 3:11, 3:11] = 1  # femur_left, 8^3 voxels
    var = np.where(labels > 0, 0.2, 0.0).astype(np.float32)
    ent = np.full(labels.shape, 0.5, np.float32)
    mi = np.where(labels > 0, 0.0, 1.0).astype(np.float32)
    maps = {"predictive_variance": var, "predictive_entropy": ent, "mutual_information": mi}
    (v,) = structure_score_variants(labels, maps, (1.0, 1.0, 1.0), ["femur_left"], band_mm=1.0)
    assert set(v.scores) == set(SCORE_VARIANTS)
    assert v.scores["predictive_variance:inside"] == pytest.approx(0.2)
    assert v.scores["predictive_entropy:band"] == pytest.approx(0.5)
    # band at 1 mm: inner shell 8^3 - 6^3 = 296, outer face shell 10^3 - 8^3 - 8 - 12*8
    outer = 6 * 64
    assert v.scores["mutual_information:band"] == pytest.approx(outer / (outer + 296))
    assert v.scores["predictive_variance:band"] == pytest.approx(0.2 * 296 / (outer + 296))
    # same numbers as the single-map summary
    (u,) = structure_uncertainty(labels, mi, (1.0, 1.0, 1.0), ["femur_left"], band_mm=1.0)
    assert u.mean_boundary == pytest.approx(v.scores["mutual_information:band"])
    # a grid coarser than band_mm still has the one-voxel shells
    (c,) = structure_score_variants(labels, maps, (5.0, 5.0, 5.0), ["femur_left"])
    assert c.scores["mutual_information:band"] == pytest.approx(outer / (outer + 296))


def test_review_from_variants_ranks_by_the_chosen_region():
    labels = np.zeros((20, 10, 10), np.uint8)
    labels[2:8, 2:8, 2:8] = 1   # femur_left
    labels[11:17, 2:8, 2:8] = 2  # femur_right
    u = np.zeros(labels.shape, np.float32)
    u[labels == 1] = 0.5        # left: uncertain inside
    u[10, :, :] = 2.0           # right: uncertain just outside its surface
    maps = {"predictive_entropy": u}
    vs = structure_score_variants(labels, maps, (1.0, 1.0, 1.0),
                                  ["femur_left", "femur_right", "sacrum"])
    inside = review_from_variants(vs, "predictive_entropy", "inside")
    band = review_from_variants(vs, "predictive_entropy", "band")
    assert [r.key for r in inside] == ["sacrum", "femur_left", "femur_right"]
    assert [r.key for r in band] == ["sacrum", "femur_right", "femur_left"]
    assert band[1].score == band[1].mean_boundary
    with pytest.raises(InputError, match="no map"):
        review_from_variants(vs, "mutual_information")


# -- the study runner and the CLI on tiny random models ----------------------------------
torch = pytest.importorskip("torch")
pytest.importorskip("monai")

TINY = {
    "structures": ["femur_left", "femur_right", "gluteus_maximus_left", "gluteus_medius_left",
                   "iliopsoas_left", "hip_left"],
    "network": {"channels": [4, 8], "strides": [2], "dropout_p": 0.3},
    "input": {"spacing_mm": [6.0, 6.0, 6.0]},
    "inference": {"patch_size": [64, 64, 32], "overlap": 0.0, "mc_samples": 3,
                  "mc_batch_size": 3, "label_resampling": "nearest"},
    "patch_size": [64, 64, 32],
    "model": {"name": "tiny", "synthetic": True, "license": "Apache-2.0"},
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> list[Path]:
    from CTMuscleBoneLib.segmentation.network import build_network
    from CTMuscleBoneLib.segmentation.training.train import TrainConfig, write_model_folder

    root = tmp_path_factory.mktemp("models")
    out = []
    for i, placement in enumerate(("head", "all")):
        d = json.loads(json.dumps(TINY))
        d["network"]["dropout_placement"] = placement
        d["model"]["name"] = f"tiny-{placement}"
        torch.manual_seed(i)
        cfg = TrainConfig.from_dict(d)
        write_model_folder(root / placement, cfg, build_network(cfg.network_config()), [])
        out.append(root / placement)
    return out


@pytest.fixture(scope="module")
def study(tiny_models):
    from CTMuscleBoneLib.segmentation import uncertainty_study as us

    specs = us.evaluation_specs(2, kinds=("clean", "noise"), region="hip",
                                spacing_range_mm=(5.5, 6.5), orientations=("LPS",))
    return specs, us.run_study(tiny_models, specs, device="auto")


def test_evaluation_specs_are_perturbed_and_held_out():
    from CTMuscleBoneLib.segmentation import uncertainty_study as us

    specs = us.evaluation_specs(9, region="hip", spacing_range_mm=(5.5, 6.5))
    kinds = [k for _, k, _ in specs]
    assert kinds == list(us.PERTURBATION_KINDS)
    by = {k: s for _, k, s in specs}
    assert by["noise"].noise_sd_hu > by["clean"].noise_sd_hu
    assert by["blur"].psf_fwhm_mm > by["clean"].psf_fwhm_mm and by["metal"].metal
    assert by["clean"].region == "hip"
    assert all(min(np.atleast_1d(s.spacing_mm)) >= 5.5 for s in by.values())
    assert all(s.seed >= us.EVAL_FIRST_SEED for s in by.values())
    with pytest.raises(InputError, match="kind"):
        us.evaluation_specs(2, kinds=("sunburn",))


def test_study_table_json_and_plots(study, tmp_path):
    from CTMuscleBoneLib.segmentation import uncertainty_study as us
    from CTMuscleBoneLib.segmentation.evaluate import variant_statistics

    specs, evals = study
    assert [e.placement for e in evals] == ["head", "all"]
    for ev in evals:
        assert len(ev.scores) == 2 * len(TINY["structures"])
        present = [s for s in ev.scores if s.pred_voxels]
        assert present and all(set(s.variants) == set(SCORE_VARIANTS) for s in present)
        assert ev.reliability is not None and ev.reliability.count.sum() > 0
    paths = us.write_outputs(tmp_path, evals, failure_dice=0.8)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(SCORE_VARIANTS)
    assert {(r["placement"], r["variant"]) for r in rows} == {
        (p, v) for p in ("head", "all") for v in SCORE_VARIANTS}
    doc = json.loads(paths["json"].read_text())
    assert doc["models"][0]["reliability"]["ece"] is not None
    for p in ("reliability", "scatter"):
        assert paths[p].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a threshold between the observed Dice values: failures and successes, AUROC defined
    dices = sorted({s.dice for s in evals[1].scores if s.dice is not None})
    assert len(dices) >= 2
    thr = 0.5 * (dices[0] + dices[-1])
    st = variant_statistics(evals[1].scores, "predictive_entropy:inside", thr)
    assert st.auroc is not None and 0.0 <= st.auroc <= 1.0
    assert st.n_failures == sum(1 for s in evals[1].scores
                                if s.dice is not None and s.dice < thr)
    # a set without failures: the AUROC is undefined and the table says why
    rows0 = us.table_rows(evals, failure_dice=0.0)
    assert all(r["auroc"] is None and "no failures" in r["auroc_note"] for r in rows0)
    assert "undefined: no failures" in us.format_table(rows0)


def test_study_entry_point(tiny_models, tmp_path, capsys):
    from CTMuscleBoneLib.segmentation import uncertainty_study as us

    rc = us.main(["--models", str(tiny_models[0]), "--phantoms", "1", "--kinds", "blur",
                  "--region", "hip", "--spacing-mm", "5.5", "6.5", "--orientations", "LPS",
                  "--samples", "2", "--no-plots",
                  "--out", str(tmp_path / "s")])
    assert rc == 0
    assert "predictive_variance:inside" in capsys.readouterr().out
    doc = json.loads((tmp_path / "s" / "uncertainty_variants.json").read_text())
    assert doc["phantoms"] == [{"case": f"phantom-{us.EVAL_FIRST_SEED}-blur", "kind": "blur"}]
    assert doc["models"][0]["mc_samples"] == 2
    assert us.main(["--models", str(tmp_path / "nope"), "--phantoms", "1",
                    "--out", str(tmp_path / "x")]) == 2


def test_segment_output_carries_variants_and_evaluate_reads_them(tiny_models, tmp_path,
                                                                 capsys):
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.io_ct import write_image, write_label_map
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.pipeline import Segmentation, write_segmentation
    from CTMuscleBoneLib.segmentation.registry import load_model

    card, net = load_model(str(tiny_models[1]))
    for i in range(2):
        ph = make_phantom(PhantomSpec(region="hip", spacing_mm=6.0, seed=i))
        write_label_map(ph.labels, tmp_path / "ref" / f"c{i}.nii.gz")
        if i == 0:  # as a site runs it: the segment command with --confidence
            write_image(ph.ct.hu, ph.ct.geometry, tmp_path / "c0_ct.nii.gz")
            assert main(["segment", "--ct", str(tmp_path / "c0_ct.nii.gz"), "--model",
                         str(tiny_models[1]), "--device", "cpu", "--confidence", "--quiet",
                         "--out", str(tmp_path / "pred" / "c0")]) == 0
            continue
        res = predict(ph.ct, net, card.input, card.inference, card.labels, device="cpu",
                      return_confidence=True)
        write_segmentation(Segmentation(card, res), ph.ct, tmp_path / "pred" / f"c{i}")
    review = json.loads((tmp_path / "pred" / "c0" / "review.json").read_text())
    assert review["review_region"] == "inside"
    assert set(review["score_variants"]["structures"]) == set(TINY["structures"])
    assert review["structures"][0]["key"] in TINY["structures"]  # old fields kept
    assert (tmp_path / "pred" / "c0" / "confidence.nii.gz").is_file()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--structures", *TINY["structures"], "--no-surface",
                 "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "mutual_information:band" in out and "ECE" in out
    for name in ("uncertainty_variants.csv", "uncertainty_variants.json", "reliability.png",
                 "score_vs_error.png", "evaluation.json"):
        assert (tmp_path / "ev" / name).is_file(), name
    doc = json.loads((tmp_path / "ev" / "uncertainty_variants.json").read_text())
    assert len(doc["table"]) == len(SCORE_VARIANTS)
    assert main(["evaluate", "--pred", str(tmp_path / "pred")]) == 2  # no --ref


def test_evaluate_model_on_phantoms_cli(tiny_models, tmp_path, capsys):
    from CTMuscleBoneLib.cli.main import main

    rc = main(["evaluate", "--model", str(tiny_models[0]), "--phantoms", "1",
               "--phantom-region", "hip", "--phantom-spacing", "5.5", "6.5", "--samples", "2",
               "--no-surface", "--no-plots", "--out", str(tmp_path / "m")])
    assert rc == 0
    assert "predictive_entropy:band" in capsys.readouterr().out
    with open(tmp_path / "m" / "uncertainty_variants.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(SCORE_VARIANTS)
    assert main(["evaluate", "--model", str(tiny_models[0]), "--ref", str(tmp_path)]) == 2


def test_runs_split_per_phantom_merge_into_the_joint_study(study, tiny_models, tmp_path,
                                                           capsys):
    """Each phantom of the joint study run on its own, written, then merged with
    ``--merge``: the same scores, reliability counts and table as the joint run."""
    from CTMuscleBoneLib.segmentation import uncertainty_study as us

    specs, joint = study
    runs = []
    for case, kind, spec in specs:
        evals = us.run_study(tiny_models, [(case, kind, spec)], device="auto")
        runs.append(us.write_outputs(tmp_path / case, evals, plots=False,
                                     extra={"phantoms": [{"case": case, "kind": kind}]}
                                     )["json"].parent)
    merged, phantoms = us.load_evaluations(runs)
    assert [p["case"] for p in phantoms] == [c for c, _, _ in specs]
    for a, b in zip(merged, joint, strict=True):
        assert (a.name, a.placement, a.mc_samples) == (b.name, b.placement, b.mc_samples)
        assert [s.to_dict() for s in a.scores] == [s.to_dict() for s in b.scores]
        np.testing.assert_array_equal(a.reliability.count, b.reliability.count)
        np.testing.assert_allclose(a.reliability.sum_confidence, b.reliability.sum_confidence,
                                   rtol=1e-9)
        np.testing.assert_allclose(a.reliability.sum_correct, b.reliability.sum_correct,
                                   rtol=1e-9)
    for ra, rb in zip(us.table_rows(merged, 0.8), us.table_rows(joint, 0.8), strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:  # the ECE from counts recovered from means: equal to rounding
            assert ra[k] == (pytest.approx(rb[k], rel=1e-9) if isinstance(rb[k], float)
                             else rb[k]), k
    assert us.main(["--merge", *map(str, runs), "--no-plots", "--out",
                    str(tmp_path / "m")]) == 0
    doc = json.loads((tmp_path / "m" / "uncertainty_variants.json").read_text())
    assert len(doc["models"][0]["scores"]) == len(joint[0].scores)
    capsys.readouterr()
    # a case twice, or no study output at all: refused with the reason
    with pytest.raises(InputError, match="more than one run"):
        us.load_evaluations([runs[0], runs[0]])
    assert us.main(["--merge", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "Cannot read the study output" in capsys.readouterr().err


def test_merge_refuses_a_damaged_study_output_with_a_message(tmp_path):
    from CTMuscleBoneLib.segmentation import uncertainty_study as us

    (tmp_path / "uncertainty_variants.json").write_text(
        json.dumps({"models": [{"name": "m", "placement": "head"}]}))
    with pytest.raises(InputError, match="cannot read.*rerun that part"):
        us.load_evaluations([tmp_path])


def test_printed_review_list_keeps_its_columns_aligned_for_long_names():
    """The volume and uncertainty columns end at the same place on every row, also when a
    display name is longer than the usual 32 characters."""
    from types import SimpleNamespace

    from CTMuscleBoneLib.segmentation.pipeline import format_review
    from CTMuscleBoneLib.segmentation.uncertainty import StructureUncertainty

    rows = [StructureUncertainty(k, v, True, vol, s, s, s, "predictive_variance", 2.0)
            for k, v, vol, s in (("thigh_posterior_compartment_left", 40, 80.0, 0.004),
                                 ("sartorius_right", 33, 26.9, 0.0035),
                                 ("femur_left", 1, 350.2, 0.0001))]
    rows.append(StructureUncertainty("gracilis_right", 35, False, 0.0, None, None, None,
                                     "predictive_variance", 2.0))
    seg = SimpleNamespace(card=SimpleNamespace(inference=SimpleNamespace(
        review_map="predictive_variance")), result=SimpleNamespace(
        review=rows, mc_samples=10, seed=0, vertebra_levels=None))
    lines = format_review(seg).splitlines()[1:]
    assert "Thigh posterior compartment (hamstrings) (left)" in lines[1]
    assert len({len(line) for line in lines}) == 1, lines
    assert lines[-1].rstrip().endswith("ABSENT")
