"""Training: datasets (TotalSegmentator, images/labels), model-grid preparation, the
training loop (loss falls, checkpoints, resume) and the train CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.cli.main import main  # noqa: E402
from CTMuscleBoneLib.errors import InputError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap  # noqa: E402
from CTMuscleBoneLib.io_ct import write_image  # noqa: E402
from CTMuscleBoneLib.segmentation.config import InputConfig  # noqa: E402
from CTMuscleBoneLib.segmentation.model_card import ModelCard  # noqa: E402
from CTMuscleBoneLib.segmentation.training.datasets import (  # noqa: E402
    ImagesLabelsDataset,
    TotalSegmentatorDataset,
    TrainingCase,
)
from CTMuscleBoneLib.segmentation.training.prepare import prepare_case  # noqa: E402
from CTMuscleBoneLib.segmentation.training.train import TrainConfig, train  # noqa: E402

SHAPE = (20, 20, 20)
GEOM = Geometry(SHAPE, (4.0, 4.0, 4.0), (-40.0, -40.0, -40.0))


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CT (HU) and canonical labels: a bright ball (femur_left) and a box (glut. max. L)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(SHAPE)
    c = np.array([7, 9, 10]) + rng.integers(-1, 2, 3)
    ball = (i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2 <= 16
    box = np.zeros(SHAPE, bool)
    box[12:17, 4 + seed % 3:14, 5:15] = True
    hu = np.full(SHAPE, -80.0) + rng.normal(0, 10, SHAPE)
    hu[box] = 50 + rng.normal(0, 10, box.sum())
    hu[ball] = 700
    lab = np.zeros(SHAPE, np.uint8)
    lab[box] = 26
    lab[ball] = 1
    return hu.astype(np.float32), lab


def _training_case(seed: int) -> TrainingCase:
    hu, lab = _case(seed)
    return TrainingCase(f"c{seed}", CTImage(hu, GEOM),
                        LabelMap(lab, GEOM, {1: "femur_left", 26: "gluteus_maximus_left"}))


def _cfg(**kw) -> TrainConfig:  # noqa: ANN003
    d = {
        "structures": ["femur_left", "gluteus_maximus_left"],
        "network": {"channels": [8, 16], "strides": [2], "dropout_p": 0.1},
        "input": {"spacing_mm": [4.0, 4.0, 4.0]},
        "inference": {"patch_size": [16, 16, 16], "mc_samples": 2, "mc_batch_size": 2},
        "patch_size": [16, 16, 16], "batch_size": 2, "samples_per_case": 2,
        "epochs": 12, "val_every": 12, "lr": 0.03, "aug_prob": 0.0, "seed": 3,
        "model": {"name": "tiny-trained", "synthetic": True},
    }
    d.update(kw)
    return TrainConfig.from_dict(d)


# -- datasets --------------------------------------------------------------------------
def test_totalsegmentator_layout(tmp_path):
    for s in ("s0001", "s0002"):
        hu, lab = _case(int(s[-1]))
        write_image(hu.astype(np.int16), GEOM, tmp_path / s / "ct.nii.gz")
        seg = tmp_path / s / "segmentations"
        write_image(lab == 1, GEOM, seg / "femur_left.nii.gz")
        write_image(lab == 26, GEOM, seg / "gluteus_maximus_left.nii.gz")
        write_image(np.zeros(SHAPE, np.uint8) + (lab == 26), GEOM, seg / "spleen.nii.gz")
    (tmp_path / "meta.csv").write_text("not a subject\n")
    ds = TotalSegmentatorDataset(tmp_path, ["femur_left", "femur_right",
                                            "gluteus_maximus_left"])
    assert ds.names == ["s0001", "s0002"]
    case = ds[0]
    _, lab = _case(1)
    assert np.array_equal(case.labels.array, lab)  # canonical values 1 and 26
    assert sorted(case.labels.structures.values()) == ["femur_left", "gluteus_maximus_left"]
    assert case.missing == ["femur_right"]  # spleen is not asked for and ignored
    assert case.ct.hu.shape == SHAPE
    with pytest.raises(InputError, match="No subjects"):
        TotalSegmentatorDataset(tmp_path / "s0001" / "segmentations")


def test_images_labels_layout(tmp_path):
    hu, lab = _case(0)
    other = np.where(lab == 1, 7, np.where(lab == 26, 3, 0)).astype(np.uint8)
    write_image(hu, GEOM, tmp_path / "images" / "a.nii.gz")
    write_image(other, GEOM, tmp_path / "labels" / "a.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps(
        {"7": "Femur (left)", "3": "gluteus maximus left", "9": "tumour"}))
    ds = ImagesLabelsDataset(tmp_path, ["femur_left", "gluteus_maximus_left"])
    case = ds[0]
    assert np.array_equal(case.labels.array, lab)
    assert case.missing == []
    (tmp_path / "images" / "b.nii.gz").write_bytes((tmp_path / "images" / "a.nii.gz")
                                                   .read_bytes())
    with pytest.raises(InputError, match="has no label map"):
        ImagesLabelsDataset(tmp_path)


def test_prepare_case_maps_channels_and_resamples():
    case = _training_case(0)
    pc = prepare_case("x", case.ct, case.labels, InputConfig(spacing_mm=(4.0, 4.0, 4.0)),
                      {0: "background", 1: "gluteus_maximus_left", 2: "femur_left"})
    assert pc.image.shape[0] == 1 and pc.image.dtype == np.float32
    assert 0.0 <= pc.image.min() and pc.image.max() <= 1.0
    # the femur ball (canonical 1) is channel 2, the box (26) channel 1
    n_ball = int((case.labels.array == 1).sum())
    assert int((pc.target == 2).sum()) == n_ball
    assert int((pc.target == 1).sum()) == int((case.labels.array == 26).sum())
    pc8 = prepare_case("x", case.ct, case.labels, InputConfig(spacing_mm=(8.0, 8.0, 8.0)),
                       {0: "background", 1: "femur_left"})
    assert abs(int((pc8.target == 1).sum()) * 8 - n_ball) < 0.5 * n_ball


def test_config_validation():
    with pytest.raises(InputError, match="not anatomy keys"):
        _cfg(structures=["spleen"])
    with pytest.raises(InputError, match="multiples"):
        _cfg(patch_size=[15, 16, 16])
    with pytest.raises(InputError, match="unknown field"):
        TrainConfig.from_dict({"structures": ["femur_left"], "epoch": 3})


# -- training --------------------------------------------------------------------------
def test_training_loss_falls_and_model_folder_installs(tmp_path):
    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(3)]
    res = train(_cfg(), cases[:2], tmp_path / "run", val_cases=cases[2:], device="cpu",
                log=lambda s: None)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    card = ModelCard.load(res.model_dir)
    assert card.training.seed == 3
    assert card.validation["during_training"]["structures"]["femur_left"]["dice_mean"] > 0.5
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
    from CTMuscleBoneLib.segmentation.registry import verify_model

    verify_model(res.model_dir)


def test_resume_continues_and_seed_reproduces(tmp_path):
    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    cfg = _cfg(epochs=3, val_every=3)
    a = train(cfg, cases, tmp_path / "a", val_cases=cases[:1], device="cpu", log=lambda s: None)
    b = train(cfg, cases, tmp_path / "b", val_cases=cases[:1], device="cpu", log=lambda s: None)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.card.weights.sha256 == b.card.weights.sha256
    with pytest.raises(InputError, match=r"config differs.*\['lr'\]"):
        train(_cfg(epochs=3, val_every=3, lr=0.1), cases, tmp_path / "a", val_cases=cases[:1],
              resume=True, device="cpu", log=lambda s: None)
    longer = train(_cfg(epochs=4, val_every=3), cases, tmp_path / "b", val_cases=cases[:1],
                   resume=True, device="cpu", log=lambda s: None)
    assert [h["epoch"] for h in longer.history] == [1, 2, 3, 4]
    assert longer.history[:3] == b.history
    c = train(cfg, cases, tmp_path / "a", val_cases=cases[:1], resume=True, device="cpu",
              log=lambda s: None)
    assert len(c.history) == 3  # nothing left to do: resumed at the end
    with pytest.raises(InputError, match="Nothing to resume"):
        train(cfg, cases, tmp_path / "new", resume=True, device="cpu", log=lambda s: None)


def test_init_from_starts_at_the_given_weights_and_records_them(tmp_path):
    """Fine-tuning: the first epoch starts from the model's weights (its loss is the
    trained model's, far below a fresh start's); the card records the parent model;
    a model of another architecture or other labels is refused with the reason."""
    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    parent = train(_cfg(epochs=12, val_every=12), cases, tmp_path / "p", val_cases=cases[:1],
                   device="cpu", log=lambda s: None)
    fresh = train(_cfg(epochs=1, val_every=1), cases, tmp_path / "f", val_cases=cases[:1],
                  device="cpu", log=lambda s: None)
    tuned = train(_cfg(epochs=1, val_every=1), cases, tmp_path / "t", val_cases=cases[:1],
                  device="cpu", log=lambda s: None, init_from=parent.model_dir)
    assert tuned.history[0]["loss"] < 0.6 * fresh.history[0]["loss"]
    assert tuned.history[0]["loss"] < 1.5 * parent.history[-1]["loss"]
    rec = tuned.card.training.recipe["initialised_from"]
    assert rec["sha256"] == parent.card.weights.sha256
    assert rec["training"]["seed"] == parent.card.training.seed
    with pytest.raises(InputError, match=r"architecture differs.*channels"):
        train(_cfg(epochs=1, network={"channels": [4, 8], "strides": [2], "dropout_p": 0.1}),
              cases, tmp_path / "x", device="cpu", log=lambda s: None,
              init_from=parent.model_dir)
    with pytest.raises(InputError, match="labels differ"):
        train(_cfg(epochs=1, structures=["gluteus_maximus_left", "femur_left"]), cases,
              tmp_path / "y", device="cpu", log=lambda s: None, init_from=parent.model_dir)


def test_train_cli_images_labels(tmp_path, capsys):
    torch.set_num_threads(1)
    root = tmp_path / "data"
    for s in range(3):
        hu, lab = _case(s)
        write_image(hu, GEOM, root / "images" / f"c{s}.nii.gz")
        write_image(lab, GEOM, root / "labels" / f"c{s}.nii.gz")
    (root / "labels.json").write_text(json.dumps({"1": "femur_left",
                                                  "26": "gluteus_maximus_left"}))
    cfg = _cfg(epochs=2, val_every=1).to_dict()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    rc = main(["train", "--data", str(root), "--layout", "images-labels", "--config",
               str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0
    assert "models install" in capsys.readouterr().out
    assert (Path(tmp_path / "out" / "model" / "model.safetensors")).is_file()
    assert main(["train", "--layout", "totalseg", "--config", str(tmp_path / "cfg.json"),
                 "--out", str(tmp_path / "o2")]) == 2


def test_disk_cache_matches_memory(tmp_path):
    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    a = train(_cfg(epochs=2, val_every=2), cases, tmp_path / "m", val_cases=cases[:1],
              device="cpu", log=lambda s: None)
    b = train(_cfg(epochs=2, val_every=2, cache="disk"), cases, tmp_path / "d",
              val_cases=cases[:1], device="cpu", log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "d" / "cache").iterdir())[:1] == [
        "00000_case.image.npy"]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
