"""Soft training targets: partial volumes on a model grid
(:mod:`CTMuscleBoneLib.segmentation.partial_volume`) and training against them
(``TrainConfig.target='partial_volume'``).

Truth: a half-space whose face lies on a CT voxel edge, on a 0.5 mm CT and a 3 mm model
grid: a model voxel's fraction is the overlap of its 3 mm box with the half-space, which
the module approximates by a Gaussian of the box's variance (sigma = 3 / sqrt(12) mm), so
the fraction is Phi((a - x) / sigma) at a model voxel centre x. A ball of radius 8 mm:
its fractions add up to its volume, 4/3 pi r^3, in every storage orientation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.anatomy import BY_KEY  # noqa: E402
from CTMuscleBoneLib.errors import InputError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap  # noqa: E402
from CTMuscleBoneLib.segmentation.config import InputConfig  # noqa: E402
from CTMuscleBoneLib.segmentation.partial_volume import partial_volumes  # noqa: E402
from CTMuscleBoneLib.segmentation.preprocess import model_grid  # noqa: E402
from CTMuscleBoneLib.segmentation.training.prepare import (  # noqa: E402
    SOFT_SCALE,
    prepare_case,
    soft_target,
)
from CTMuscleBoneLib.segmentation.training.train import (  # noqa: E402
    TrainConfig,
    _train_transforms,
    soft_to_float,
    train,
)

FEMUR, GLUT = BY_KEY["femur_left"].label_value, BY_KEY["gluteus_maximus_left"].label_value
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
MODEL = InputConfig(spacing_mm=(3.0, 3.0, 3.0))


def _grid(direction: np.ndarray, spacing_mm: float = 0.5, extent_mm: float = 40.0
          ) -> tuple[Geometry, np.ndarray]:
    """A cube of ``extent_mm`` centred on the origin; voxel centres at +-(k + 1/2) x
    spacing, so voxel edges fall on multiples of the spacing. Returns the geometry and
    the (n0, n1, n2, 3) LPS coordinates of the voxel centres."""
    n = int(round(extent_mm / spacing_mm))
    first = -(n - 1) / 2 * spacing_mm
    # storage axis a runs along LPS axis direction[:, a]; start at the LPS corner
    origin = direction @ np.full(3, first)
    g = Geometry((n,) * 3, (spacing_mm,) * 3, tuple(origin), direction)
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return g, g.index_to_physical(ijk).reshape(n, n, n, 3)


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["LPS", "permuted"])
def test_fraction_at_a_flat_face_is_the_gaussian_overlap(direction):
    g, xyz = _grid(direction)
    face_mm = 1.0  # on a CT voxel edge
    arr = np.where(xyz[..., 0] < face_mm, FEMUR, 0).astype(np.uint8)
    grid = model_grid(g, MODEL)
    frac = partial_volumes(LabelMap(arr, g, {FEMUR: "femur_left"}), grid, [0, FEMUR])
    assert frac.shape == (2, *grid.shape) and frac.dtype == np.float32
    np.testing.assert_allclose(frac.sum(0), 1.0, atol=1e-5)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1)
    centres = grid.index_to_physical(ijk.reshape(-1, 3)).reshape(*grid.shape, 3)
    inner = np.all(np.abs(centres) < 12.0, axis=-1)  # away from the CT's edges
    sigma = 3.0 / math.sqrt(12.0)
    x = centres[..., 0][inner]
    expected = np.array([0.5 * math.erfc((v - face_mm) / (sigma * math.sqrt(2))) for v in x])
    got = frac[1][inner]
    # the CT's own 0.5 mm steps and the linear sampling: measured <= 0.01
    assert np.max(np.abs(got - expected)) < 0.02
    # against the exact box overlap the Gaussian differs by up to ~0.04 (its tails)
    box = np.clip((face_mm - (x - 1.5)) / 3.0, 0.0, 1.0)
    assert np.max(np.abs(got - box)) < 0.06
    # the fractions are graded: some voxels neither empty nor full
    assert np.any((got > 0.2) & (got < 0.8))


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["LPS", "permuted"])
def test_fractions_of_a_ball_add_up_to_its_volume(direction):
    g, xyz = _grid(direction)
    r_mm = 8.0
    ball = np.linalg.norm(xyz - np.array([1.3, -0.7, 2.1]), axis=-1) <= r_mm
    arr = np.where(ball, GLUT, 0).astype(np.uint8)
    labels = LabelMap(arr, g, {GLUT: "gluteus_maximus_left"})
    grid = model_grid(g, MODEL)
    frac = partial_volumes(labels, grid, [0, GLUT])
    volume_mm3 = float(frac[1].sum()) * 27.0
    truth_mm3 = 4.0 / 3.0 * math.pi * r_mm ** 3
    assert abs(volume_mm3 / truth_mm3 - 1.0) < 0.02  # measured 0.3 %
    # nearest-neighbour labels on the same grid would miss by more on some placements;
    # the fractions hold the sub-voxel size, the argmax alone does not
    assert np.any((frac[1] > 0.05) & (frac[1] < 0.95))


def _case_labels() -> tuple[CTImage, LabelMap]:
    """1 mm CT: a femur ball, a gluteus box and a psoas slab the model does not know."""
    g, xyz = _grid(np.eye(3), spacing_mm=1.0, extent_mm=40.0)
    arr = np.zeros(g.shape, np.uint8)
    psoas = BY_KEY["psoas_major_left"].label_value
    arr[(xyz[..., 2] > 10.0)] = psoas
    arr[(np.abs(xyz[..., 0] - 8.0) < 5.0) & (np.abs(xyz[..., 1]) < 9.0)
        & (np.abs(xyz[..., 2]) < 9.0)] = GLUT
    arr[np.linalg.norm(xyz - np.array([-8.0, 0.0, 0.0]), axis=-1) <= 6.0] = FEMUR
    hu = np.where(arr == FEMUR, 700.0, np.where(arr > 0, 50.0, -80.0)).astype(np.float32)
    return CTImage(hu, g), LabelMap(arr, g, {FEMUR: "femur_left", GLUT:
                                            "gluteus_maximus_left",
                                            psoas: "psoas_major_left"})


def test_soft_target_maps_channels_and_counts_unknown_structures_as_background():
    ct, labels = _case_labels()
    keys = {0: "background", 1: "gluteus_maximus_left", 2: "femur_left"}
    grid = model_grid(ct.geometry, MODEL)
    soft = soft_target(labels, grid, keys)
    assert soft.shape == (3, *grid.shape) and soft.dtype == np.uint8
    total = soft.astype(int).sum(0)
    assert total.min() >= 254 and total.max() <= 256  # uint8 rounding of each channel
    femur_mm3 = float(soft[2].sum()) / SOFT_SCALE * 27.0
    assert abs(femur_mm3 / (4.0 / 3.0 * math.pi * 216.0) - 1.0) < 0.05
    box_mm3 = float(soft[1].sum()) / SOFT_SCALE * 27.0
    assert abs(box_mm3 / int((labels.array == GLUT).sum()) - 1.0) < 0.03
    # the psoas slab (not a channel) is background: nothing of it in channels 1-2
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1)
    z = grid.index_to_physical(ijk.reshape(-1, 3))[:, 2].reshape(grid.shape)
    assert soft[0][z > 14.0].min() >= 254
    pc = prepare_case("x", ct, labels, MODEL, keys, target="partial_volume")
    assert np.array_equal(pc.soft, soft)
    assert np.array_equal(pc.target[0], np.argmax(soft, axis=0))
    near = prepare_case("x", ct, labels, MODEL, keys)
    assert near.soft is None
    # both hard targets agree on most voxels (they differ only where fractions tie)
    assert np.mean(near.target == pc.target) > 0.97
    with pytest.raises(ValueError, match="target must be one of"):
        prepare_case("x", ct, labels, MODEL, keys, target="soft")


def test_soft_patches_are_probabilities_after_padding_and_augmentation():
    ct, labels = _case_labels()
    keys = {0: "background", 1: "gluteus_maximus_left", 2: "femur_left"}
    pc = prepare_case("x", ct, labels, MODEL, keys, target="partial_volume")
    cfg = TrainConfig.from_dict({
        "structures": ["gluteus_maximus_left", "femur_left"], "target": "partial_volume",
        "network": {"channels": [8, 16], "strides": [2]},
        "patch_size": [32, 32, 32], "samples_per_case": 3, "aug_prob": 1.0,
        "rotate_deg": 30.0, "seed": 1})
    tf = _train_transforms(cfg, 3, 3)
    tf.set_random_state(seed=4)
    # the case (16 model voxels a side) is smaller than the patch: padding is background
    out = tf({"image": pc.image, "label": pc.target, "soft": pc.soft})
    for d in out:
        s = torch.as_tensor(d["soft"])
        assert s.dtype == torch.float32 and tuple(s.shape) == (3, 32, 32, 32)
        torch.testing.assert_close(s.sum(0), torch.ones(32, 32, 32))
        assert float(s.min()) >= 0.0
        assert float(s[0, 0, 0, 0]) == 1.0  # a padded corner
        assert float(s[2].sum()) > 10.0  # the femur is inside
    t = soft_to_float(np.zeros((3, 2, 2, 2), np.uint8))
    assert torch.equal(t[0], torch.ones(2, 2, 2)) and float(t[1:].sum()) == 0.0


def test_config_refuses_an_unknown_target():
    with pytest.raises(InputError, match="target must be one of nearest, partial_volume"):
        TrainConfig.from_dict({"structures": ["femur_left"], "target": "soft"})


@pytest.mark.parametrize("target", ["partial_volume", "nearest"])
def test_training_against_partial_volumes(tmp_path, target):
    """The loss falls with soft targets, the network learns the structures as well as
    with nearest-neighbour targets (Dice of the deterministic prediction against the
    hard target) and the card records the target. Same cases and recipe as
    test_training.py's loop test, at a model grid twice as coarse as the CT."""
    from CTMuscleBoneLib.segmentation.model_card import ModelCard
    from CTMuscleBoneLib.segmentation.registry import verify_model
    from test_training import _cfg, _training_case

    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(3)]
    cfg = _cfg(target=target, input={"spacing_mm": [8.0, 8.0, 8.0]},
               inference={"patch_size": [8, 8, 8], "mc_samples": 2, "mc_batch_size": 2},
               patch_size=[8, 8, 8])
    res = train(cfg, cases[:2], tmp_path / "run", val_cases=cases[2:], device="cpu",
                log=lambda s: None)
    losses = [h["loss"] for h in res.history]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    card = ModelCard.load(res.model_dir)
    assert card.training.recipe["target"] == target
    dice = card.validation["during_training"]["structures"]
    assert dice["femur_left"]["dice_mean"] > 0.5
    assert dice["gluteus_maximus_left"]["dice_mean"] > 0.5
    verify_model(res.model_dir)


def test_bounding_box_smoothing_equals_smoothing_the_whole_grid():
    """partial_volumes smooths each structure inside its grown bounding box; the result
    equals the plain definition (every mask smoothed over the whole CT grid, background
    the unlisted rest), here with a structure touching the CT's edge, one the map lacks
    and an oblique model grid (measured: equal to 1.2e-7 on the held-out phantoms)."""
    from CTMuscleBoneLib.segmentation.partial_volume import partial_volume_sigma
    from CTMuscleBoneLib.segmentation.preprocess import resample
    from scipy import ndimage

    ct, labels = _case_labels()  # the psoas slab touches the CT's upper z face
    arr = labels.array
    theta = np.radians(20.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0],
                    [0.0, 0.0, 1.0]])
    g = ct.geometry
    tilted = LabelMap(arr, Geometry(g.shape, g.spacing_mm, tuple(rot @ np.asarray(
        g.origin_mm)), rot), labels.structures)
    psoas = BY_KEY["psoas_major_left"].label_value
    values = [0, GLUT, FEMUR, BY_KEY["sacrum"].label_value]  # psoas unlisted, sacrum absent
    for lab in (labels, tilted):
        grid = model_grid(lab.geometry, MODEL)
        got = partial_volumes(lab, grid, values)
        sigma = partial_volume_sigma(np.asarray(lab.geometry.spacing_mm),
                                     np.asarray(lab.geometry.direction),
                                     np.asarray(grid.spacing_mm), np.asarray(grid.direction))
        listed = np.isin(arr, [GLUT, FEMUR])
        for i, v in enumerate(values):
            mask = ~listed if v == 0 else arr == v
            want = resample(ndimage.gaussian_filter(mask.astype(np.float32), sigma,
                                                    mode="nearest", truncate=3.0),
                            lab.geometry, grid, "linear", 1.0 if v == 0 else 0.0)
            np.testing.assert_allclose(got[i], np.clip(want, 0.0, 1.0), atol=1e-5)
        assert not got[3].any()  # the sacrum is absent
        assert (arr == psoas).any()


def test_disk_cache_keeps_soft_targets_apart_and_matches_memory(tmp_path):
    """With ``cache='disk'`` the soft targets are cached beside the image, under names
    that a nearest-neighbour run in the same folder does not read, and the losses equal
    those of the in-memory cache."""
    from test_training import _cfg, _training_case

    torch.set_num_threads(1)
    cases = [_training_case(s) for s in range(2)]
    kw = {"epochs": 2, "val_every": 2, "target": "partial_volume",
          "input": {"spacing_mm": [8.0, 8.0, 8.0]}, "patch_size": [8, 8, 8],
          "inference": {"patch_size": [8, 8, 8], "mc_samples": 2, "mc_batch_size": 2}}
    a = train(_cfg(**kw), cases, tmp_path / "m", val_cases=cases[:1], device="cpu",
              log=lambda s: None)
    b = train(_cfg(cache="disk", **kw), cases, tmp_path / "d", val_cases=cases[:1],
              device="cpu", log=lambda s: None)
    names = sorted(p.name for p in (tmp_path / "d" / "cache").iterdir())
    assert names[:3] == ["00000_case.image.npy", "00000_case.label_pv.npy",
                         "00000_case.soft.npy"]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
