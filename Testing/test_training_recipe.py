"""Training on groups (thigh compartments, one lumbar class), parallel preparation,
cached class indices and the time-fitted schedule (the demo model's recipe)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib import anatomy  # noqa: E402
from CTMuscleBoneLib.image import Geometry, LabelMap  # noqa: E402
from CTMuscleBoneLib.segmentation.training.datasets import (  # noqa: E402
    SyntheticPhantomDataset,
    keep_structures,
    reference_for,
    scored_keys,
    source_missing,
)
from CTMuscleBoneLib.segmentation.training.train import (  # noqa: E402
    INDICES_PER_CLASS,
    _Prepared,
    class_indices,
    fitted_epochs,
    prepare_all,
    train,
)

V = {k: anatomy.structure(k).label_value for k in (
    "rectus_femoris_left", "vastus_lateralis_left", "adductor_longus_left", "sartorius_left",
    "vertebrae_L1", "vertebrae_L5", "quadriceps_femoris_left", "vertebrae_lumbar")}


def _labels() -> LabelMap:
    arr = np.zeros((6, 4, 3), np.uint8)
    arr[0] = V["rectus_femoris_left"]
    arr[1] = V["vastus_lateralis_left"]
    arr[2] = V["adductor_longus_left"]
    arr[3] = V["sartorius_left"]
    arr[4] = V["vertebrae_L1"]
    arr[5] = V["vertebrae_L5"]
    names = {v: k for k, v in V.items() if k not in ("quadriceps_femoris_left",
                                                     "vertebrae_lumbar")}
    return LabelMap(arr, Geometry(arr.shape, (1.0, 1.0, 1.0)), names)


def test_group_keys_take_their_members_voxels():
    lab = _labels()
    out = keep_structures(lab, ["quadriceps_femoris_left", "sartorius_left",
                                "vertebrae_lumbar"])
    q, lum = V["quadriceps_femoris_left"], V["vertebrae_lumbar"]
    assert (out.array[0] == q).all() and (out.array[1] == q).all()
    assert (out.array[2] == 0).all()  # adductor: not asked for
    assert (out.array[3] == V["sartorius_left"]).all()
    assert (out.array[4:] == lum).all()
    assert set(out.structures.values()) == {"quadriceps_femoris_left", "sartorius_left",
                                            "vertebrae_lumbar"}
    assert source_missing(lab, ["quadriceps_femoris_left", "gracilis_left"]) == \
        ["gracilis_left"]
    # a member asked for itself keeps its own label
    out2 = keep_structures(lab, ["quadriceps_femoris_left", "rectus_femoris_left"])
    assert (out2.array[0] == V["rectus_femoris_left"]).all()
    assert (out2.array[1] == q).all()


def test_reference_for_scores_numbered_levels_of_a_lumbar_class_model():
    assert scored_keys(["femur_left", "vertebrae_lumbar"]) == [
        "femur_left", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
        "vertebrae_L5", "vertebrae_lumbar"]
    ref, keys = reference_for(_labels(), ["vertebrae_lumbar", "quadriceps_femoris_left"])
    assert keys == ["vertebrae_L1", "vertebrae_L5", "quadriceps_femoris_left"]
    assert (ref.array[4] == V["vertebrae_L1"]).all() and (ref.array[0] ==
                                                           V["quadriceps_femoris_left"]).all()


def test_class_indices_are_each_class_voxels_capped_at_the_limit():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, (1, 40, 40, 30)).astype(np.uint8)
    target[0, :2, :2, :2] = 4  # 8 voxels of class 4; class 3 absent
    idx = class_indices(target, 5, seed=1)
    flat = target.ravel()
    assert len(idx) == 5 and idx[3].size == 0
    np.testing.assert_array_equal(idx[4], np.flatnonzero(flat == 4))
    for c in range(3):
        n = int((flat == c).sum())
        assert idx[c].size == min(n, INDICES_PER_CLASS)
        assert (flat[idx[c]] == c).all() and np.unique(idx[c]).size == idx[c].size


def test_parallel_preparation_equals_serial():
    from CTMuscleBoneLib.phantoms import PhantomSpec
    from CTMuscleBoneLib.segmentation.config import InputConfig

    specs = [PhantomSpec(region=(-150.0, -110.0), spacing_mm=6.0, seed=s) for s in (1, 2)]
    keys = {0: "background", 1: "femur_left", 2: "quadriceps_femoris_left"}
    ds = SyntheticPhantomDataset(specs, ["femur_left", "quadriceps_femoris_left"],
                                 cache=False)
    prep = _Prepared(ds, InputConfig(spacing_mm=(6.0, 6.0, 6.0)), keys, None)
    serial = prepare_all(prep, 0)
    parallel = prepare_all(prep, 2)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.target, b.target)
    assert (serial[0].target == 2).any() and (serial[0].target == 1).any()


def test_fitted_epochs_use_the_pace_after_the_first_epoch():
    # first epoch 30 s (start-up), then 2 s each: 3 done at 34 s; 90 % of 100 s = 90 s
    assert fitted_epochs(500, 3, [30.0, 32.0, 34.0], 100.0) == 3 + 28
    assert fitted_epochs(20, 3, [30.0, 32.0, 34.0], 100.0) == 20  # the recipe's cap
    assert fitted_epochs(500, 3, [30.0, 60.0, 95.0], 100.0) == 3  # over budget already
    assert fitted_epochs(500, 1, [10.0], 100.0) == 1 + 8


def test_time_budget_stops_training_after_the_epoch_past_it(tmp_path):
    from test_training import _cfg, _training_case

    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    lines: list[str] = []
    res = train(_cfg(epochs=50, val_every=50, max_minutes=1e-4), cases, tmp_path / "r",
                val_cases=cases[:1], device="cpu", log=lines.append)
    assert len(res.history) == 1
    assert any("stopping after epoch 1" in s for s in lines)
    assert "val_dice" in res.history[-1]  # the last epoch validated


def test_bundled_card_records_the_finetune_gpu_recipe_and_its_stages():
    """The bundled weights come from the recipe the code names (as run: a time budget of
    5.08 min fitted to 358 epochs), started from the stage before, which started from
    the full recipe: every stage is in the card."""
    import json
    from pathlib import Path

    from CTMuscleBoneLib.segmentation.training.make_demo_model import RECIPES

    card = json.loads((Path(__file__).resolve().parents[1] / "CTMuscleBone" / "Resources"
                       / "Models" / "ctmusclebone-demo-synthetic" / "card.json").read_text())
    recipe = RECIPES["finetune-gpu"]
    ran = card["training"]["recipe"]
    for key in ("batch_size", "lr", "seed", "samples_per_case", "patch_size"):
        assert ran[key] == recipe[key], key
    assert ran["phantoms"] == recipe["phantoms"]
    assert card["version"] == recipe["model"]["version"]
    assert card["inference"] == {**card["inference"], **recipe["inference"]}
    assert card["inference"]["shifted_samples"] is True
    assert card["architecture"]["dropout_placement"] == recipe["network"]["dropout_placement"]
    assert ran["device"] == "cuda" and ran["epochs_completed"] <= recipe["epochs"]
    assert "--recipe finetune" in card["training"]["command"]
    stage2 = ran["initialised_from"]
    assert stage2["version"] == "2.0.0" and stage2["training"]["recipe"]["device"] == "cpu"
    stage1 = stage2["training"]["recipe"]["initialised_from"]
    assert stage1["name"].endswith("-full-all")


def test_soft_target_recipes_change_only_what_they_state():
    """The two soft-target stages are their base stage (CPU: ``finetune``; GPU:
    ``finetune-gpu``) with partial-volume targets, half the learning rate, their own seed
    and version and, on the GPU, the 119 epochs the measured run fitted; nothing else
    (network, labels, input, phantoms, batch) differs, so their results compare."""
    from CTMuscleBoneLib.segmentation.training.make_demo_model import RECIPES
    from CTMuscleBoneLib.segmentation.training.train import TrainConfig

    for name, base, extra in (("finetune-pv", "finetune", set()),
                              ("finetune-gpu-pv", "finetune-gpu", {"epochs", "inference"})):
        soft, hard = RECIPES[name], RECIPES[base]
        changed = {k for k in soft.keys() | hard.keys() if soft.get(k) != hard.get(k)}
        assert changed == {"lr", "target", "seed", "model"} | extra, name
        assert soft["target"] == "partial_volume" and "target" not in hard
        assert soft["lr"] == hard["lr"] / 2
        assert {k for k in soft["model"] if soft["model"][k] != hard["model"][k]} == \
            {"version"}
        assert TrainConfig.from_dict(soft).target == "partial_volume"
    assert RECIPES["finetune-gpu-pv"]["epochs"] == 119
    # the GPU soft-target stage was measured without shifted samples (version 2.1.1's
    # only change to the third stage's inference)
    gpu_pv, gpu = RECIPES["finetune-gpu-pv"]["inference"], RECIPES["finetune-gpu"]["inference"]
    assert {k for k in gpu_pv.keys() | gpu.keys() if gpu_pv.get(k) != gpu.get(k)} == \
        {"shifted_samples"}
    assert gpu["shifted_samples"] is True and not gpu_pv.get("shifted_samples", False)
    assert RECIPES["finetune-gpu-pv"]["model"]["version"] not in \
        {RECIPES[r]["model"]["version"] for r in ("finetune-gpu", "finetune-pv")}


def test_finetune_recipes_need_the_model_they_continue(capsys):
    from CTMuscleBoneLib.segmentation.training.make_demo_model import main

    for recipe in ("finetune", "finetune-gpu", "finetune-pv", "finetune-gpu-pv"):
        with pytest.raises(SystemExit) as exc:
            main(["--recipe", recipe, "--out", "unused"])
        assert exc.value.code == 2
        assert f"--recipe {recipe} continues a model of the previous stage" in \
            capsys.readouterr().err


def test_held_out_scores_do_not_depend_on_the_worker_processes(tmp_path):
    """``evaluate_held_out(workers=2)`` splits the phantoms over two processes and gives
    the same per-case Dice, in the same order, as one process (a small model trained for
    one epoch on an 8 mm grid; T = 2; the 2-3.5 mm phantoms of the varied generator)."""
    from CTMuscleBoneLib.segmentation.training.make_demo_model import evaluate_held_out
    from CTMuscleBoneLib.segmentation.training.train import train
    from test_training import _cfg, _training_case

    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    cfg = _cfg(epochs=1, val_every=1, input={"spacing_mm": [8.0, 8.0, 8.0]},
               inference={"patch_size": [16, 16, 16], "mc_samples": 2, "mc_batch_size": 2})
    model = train(cfg, cases, tmp_path / "run", val_cases=cases[:1], device="cpu",
                  log=lambda s: None).model_dir
    one = evaluate_held_out(model, n=2, generator="varied", log=lambda s: None)
    two = evaluate_held_out(model, n=2, generator="varied", log=lambda s: None, workers=2)
    assert list(one["dice_per_case"]) == ["seed9000", "seed9001"]
    assert "Monte-Carlo inference (T = 2) and vertebra numbering" in one["data"]
    assert two["dice_per_case"] == one["dice_per_case"]
    assert two["structures"] == one["structures"]
    # not a comparison of empty masks: the barely trained model paints some femur
    assert all(case["femur_left"] > 0 for case in one["dice_per_case"].values())


@pytest.mark.parametrize(("shifted", "mirror", "t", "text"), [
    (True, False, 10, "T = 10, split 5 + 5 between the model grid and its half-voxel shift"),
    (True, False, 7, "T = 7, split 4 + 3 between the model grid and its half-voxel shift"),
    (False, True, 10, "T = 10, the last 5 on the left-right mirrored windows"),
    (False, False, 10, "T = 10"),
    (True, False, 1, "T = 1"),  # one pass: nothing to split
])
def test_held_out_record_says_how_the_samples_were_split(tmp_path, shifted, mirror, t, text):
    """The card's held-out record names the split of shifted or mirrored samples, read
    from the scored model's card (the bundled card's record was written by hand)."""
    import shutil

    from CTMuscleBoneLib.segmentation.training.make_demo_model import _samples_text

    bundled = Path(__file__).resolve().parents[1] / "CTMuscleBone" / "Resources" / \
        "Models" / "ctmusclebone-demo-synthetic"
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(bundled / "card.json", model / "card.json")
    card = json.loads((model / "card.json").read_text())
    card["inference"].update(shifted_samples=shifted, mirror_samples=mirror)
    (model / "card.json").write_text(json.dumps(card))
    assert _samples_text(model, t) == text
