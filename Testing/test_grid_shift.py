"""Sub-voxel shifted samples (``InferenceConfig.shifted_samples``, :mod:`.grid_shift`).

Checked: the shifted model grid (position, shape, coverage); the multi-grid argmax
against a brute-force interpolation of every voxel (and SimpleITK's resampling),
including grids that disagree everywhere; the review scores as the halves' weighted
means; the analytic gain on a thin
cylinder (nearest-neighbour labels of two interleaved 3 mm grids against one); the
wiring of ``predict`` (p = 0: the label is the argmax of the two grids' network outputs,
exactly); and the refusals.
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.errors import ModelError
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.segmentation.config import InferenceConfig, InputConfig
from CTMuscleBoneLib.segmentation.evaluate import dice
from CTMuscleBoneLib.segmentation.grid_shift import (
    argmax_on_grids,
    combine_score_variants,
    interpolate_at,
    shift_vector,
    shifted_seed,
    split_samples,
)
from CTMuscleBoneLib.segmentation.preprocess import labels_to_grid, model_grid, resample

ROT = np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1.0]])


def test_shift_split_and_seed():
    assert shift_vector(2) == (0.5, 0.5, 0.0)  # in-plane only: same slices
    assert shift_vector(3) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        shift_vector(1)
    assert split_samples(10) == (5, 5)
    assert split_samples(7) == (4, 3)
    assert split_samples(2) == (1, 1)
    with pytest.raises(ValueError):
        split_samples(1)
    from CTMuscleBoneLib.segmentation.inference import window_seed

    s = shifted_seed(0)
    assert s == shifted_seed(0) and s != shifted_seed(1)
    assert s not in {window_seed(0, w) for w in range(64)} and s != 0


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), ROT])
def test_shifted_model_grid_moves_half_a_voxel_and_still_covers_the_ct(direction):
    ct = Geometry((40, 31, 17), (0.8, 1.1, 2.5), (12.0, -40.0, 7.0), direction)
    cfg = InputConfig(spacing_mm=(3.0, 3.0, 3.0))
    g0 = model_grid(ct, cfg)
    g1 = model_grid(ct, cfg, shift_voxels=(0.5, 0.5, 0.0))
    assert g1.shape == g0.shape and g1.spacing_mm == g0.spacing_mm
    np.testing.assert_allclose(g1.direction, g0.direction)
    # g1's voxel (i, j, k) sits at g0's continuous index (i + 0.5, j + 0.5, k)
    np.testing.assert_allclose(g0.physical_to_index(g1.index_to_physical(
        np.array([[0, 0, 0], [3, 5, 2]]))), [[0.5, 0.5, 0.0], [3.5, 5.5, 2.0]], atol=1e-9)
    n = np.asarray(ct.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    cont = g1.physical_to_index(ct.index_to_physical(corners))
    assert cont.min() >= 0 and (cont <= np.asarray(g1.shape) - 1).all()


def _blobs(shape, n_classes, seed):
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    centres = rng.uniform(0, min(shape) - 1, (n_classes, 3))
    logits = -((idx[None] - centres[:, None, None, None]) ** 2).sum(-1) / 8.0
    p = np.exp(logits - logits.max(0))
    return (p / p.sum(0)).astype(np.float32)


def _brute_force(parts, target, lut):
    """Every target voxel interpolated from every grid, weighted mean, argmax."""
    idx = np.argwhere(np.ones(target.shape, bool))
    phys = target.index_to_physical(idx)
    w = np.asarray([p[2] for p in parts], float)
    w /= w.sum()
    acc = sum(wk * interpolate_at(p, g, g.physical_to_index(phys))
              for (p, g, _), wk in zip(parts, w, strict=True))
    return lut[acc.argmax(1)].reshape(target.shape)


def test_argmax_on_grids_equals_brute_force_on_an_oblique_target():
    src0 = Geometry((12, 10, 9), (3.0, 3.0, 3.0), (-18.0, -15.0, -12.0))
    src1 = Geometry((12, 10, 9), (3.0, 3.0, 3.0), (-16.5, -13.5, -12.0))  # half-voxel shift
    tgt = Geometry((25, 22, 18), (1.1, 1.0, 1.3), (-12.0, -10.0, -8.0), ROT)
    p0, p1 = _blobs(src0.shape, 4, 0), _blobs(src1.shape, 4, 1)
    lut = np.array([0, 3, 5, 7])
    parts = [(p0, src0, 5.0), (p1, src1, 3.0)]
    fast = argmax_on_grids(parts, tgt, lut)
    # voxels inside both model grids (predict's model grid covers its target; outside a
    # grid the nearest-neighbour first guess is background)
    phys = tgt.index_to_physical(np.argwhere(np.ones(tgt.shape, bool)))
    inside = np.ones(len(phys), bool)
    for g in (src0, src1):
        c = g.physical_to_index(phys)
        inside &= ((c >= -0.5) & (c <= np.asarray(g.shape) - 0.5)).all(1)
    inside = inside.reshape(tgt.shape)
    assert inside.mean() > 0.5
    np.testing.assert_array_equal(fast[inside], _brute_force(parts, tgt, lut)[inside])
    # one grid: the same as SimpleITK's linear resampling of every class (up to the
    # clamped edge voxels)
    one = argmax_on_grids([(p0, src0, 1.0)], tgt, lut)
    ref = np.stack([resample(p0[c], src0, tgt, "linear", 0.0) for c in range(4)])
    assert (one == lut[ref.argmax(0)]).mean() > 0.9995
    assert (fast != one).any()  # the second grid changed labels


def test_argmax_on_grids_where_the_grids_disagree_everywhere():
    """Grid 0 says class 1 everywhere (no boundary shell), grid 1 class 2 with more
    weight: no voxel is in a shell, so only the disagreement test sends them to be
    interpolated; the weighted mean picks class 2."""
    g = Geometry((6, 6, 6), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    tgt = Geometry((9, 9, 9), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0))
    a = np.zeros((3, 6, 6, 6), np.float32)
    b = a.copy()
    a[1], b[2] = 0.6, 0.7
    a[0], b[0] = 0.4, 0.3
    lut = np.array([0, 4, 9])
    out = argmax_on_grids([(a, g, 1.0), (b, g, 2.0)], tgt, lut)
    assert (out == 9).all()
    assert (argmax_on_grids([(a, g, 3.0), (b, g, 1.0)], tgt, lut) == 4).all()
    with pytest.raises(ValueError, match="weights"):
        argmax_on_grids([(a, g, 0.0)], tgt, lut)
    with pytest.raises(ValueError, match="same channels"):
        argmax_on_grids([(a, g, 1.0), (b[:2], g, 1.0)], tgt, lut)


def test_score_variants_are_the_halves_weighted_means():
    """Each half scores every structure on its own grid; the review scores are the
    weighted means over the halves that scored a variant (renormalised), present when
    either half has the structure, volume the weighted mean (0 where absent)."""
    from CTMuscleBoneLib.segmentation.uncertainty import StructureScoreVariants as V

    a = [V("femur_left", 1, True, 10.0, {"predictive_variance:band": 0.2,
                                          "predictive_entropy:band": None}),
         V("sacrum", 3, True, 4.0, {"predictive_variance:band": 0.1}),
         V("gracilis_left", 5, False, 0.0, {"predictive_variance:band": None})]
    b = [V("femur_left", 1, True, 14.0, {"predictive_variance:band": 0.5,
                                          "predictive_entropy:band": 0.3}),
         V("gracilis_left", 5, True, 2.0, {"predictive_variance:band": 0.4}),
         V("vertebrae_L1", 41, True, 6.0, {"predictive_variance:band": 0.7})]
    out = {v.key: v for v in combine_score_variants([a, b], [3, 1])}
    assert list(out) == ["femur_left", "sacrum", "gracilis_left", "vertebrae_L1"]
    assert out["femur_left"].scores["predictive_variance:band"] == pytest.approx(0.275)
    assert out["femur_left"].scores["predictive_entropy:band"] == pytest.approx(0.3)
    assert out["femur_left"].volume_cm3 == pytest.approx(11.0)
    assert out["sacrum"].scores["predictive_variance:band"] == pytest.approx(0.1)
    assert out["gracilis_left"].present
    assert out["gracilis_left"].scores["predictive_variance:band"] == pytest.approx(0.4)
    assert out["gracilis_left"].volume_cm3 == pytest.approx(0.5)
    assert out["vertebrae_L1"].label_value == 41
    with pytest.raises(ValueError, match="weights"):
        combine_score_variants([a], [0])
    with pytest.raises(ValueError, match="same non-zero length"):
        combine_score_variants([a, b], [1])


@pytest.mark.parametrize(("spacing_mm", "radius_mm", "floor"),
                         [(1.13, 4.0, 0.87), (1.13, 6.0, 0.91), (0.87, 6.0, 0.91)])
def test_two_interleaved_grids_of_nearest_labels_approach_the_partial_volume(
        spacing_mm, radius_mm, floor):
    """Thin cylinders (radius 4 or 6 mm, along the slices, at 6 random in-plane
    positions) on a CT grid whose spacing does not divide the model's 3 mm: their
    nearest-neighbour labels on the model grid, brought back as predict does, one grid
    against the mean of two half-voxel-shifted grids. The truth is the cylinder. One
    grid's aliased labels score 0.80-0.90 (what a model trained on such targets can
    reproduce); two grids must score clearly higher on average (measured 0.909 / 0.931 /
    0.933 against 0.805 / 0.896 / 0.890; the partial volumes give 0.886 / 0.957 / 0.951)."""
    rng = np.random.default_rng(0)
    cfg = InputConfig(spacing_mm=(3.0, 3.0, 3.0))
    scores: dict[str, list[float]] = {"one": [], "two": []}
    n = int(40 / spacing_mm)
    for _ in range(6):
        centre = rng.uniform(-1.5, 1.5, 2)
        ct = Geometry((n, n, 8), (spacing_mm, spacing_mm, 2.5),
                      (-20.0 + rng.uniform(0, 1), -20.0 + rng.uniform(0, 1), 0.0))
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        xy = ct.index_to_physical(np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], 1))
        disk = (np.hypot(xy[:, 0] - centre[0], xy[:, 1] - centre[1]) <= radius_mm)
        arr = np.repeat(disk.reshape(n, n)[:, :, None], 8, axis=2).astype(np.uint8)
        arr[:, :, [0, -1]] = 0
        ref = LabelMap(arr, ct, {1: "gracilis_left"})
        for name, shifts in {"one": [(0.0, 0.0, 0.0)],
                             "two": [(0.0, 0.0, 0.0), shift_vector(2)]}.items():
            parts = []
            for sv in shifts:
                g = model_grid(ct, cfg, shift_voxels=sv)
                lab = labels_to_grid(ref, g)
                parts.append((np.stack([lab == 0, lab == 1]).astype(np.float32), g, 1.0))
            scores[name].append(dice(argmax_on_grids(parts, ct, np.array([0, 1])) == 1,
                                     arr == 1))
    one, two = np.mean(scores["one"]), np.mean(scores["two"])
    assert two > one + 0.03, scores
    assert two >= floor, scores


def test_config_refusals_and_round_trip():
    with pytest.raises(ModelError, match="shifted_samples must be true or false"):
        InferenceConfig(shifted_samples="yes")
    with pytest.raises(ModelError, match="cannot both be on"):
        InferenceConfig(shifted_samples=True, mirror_samples=True)
    with pytest.raises(ModelError, match="label_resampling 'probability'"):
        InferenceConfig(shifted_samples=True, label_resampling="nearest")
    cfg = InferenceConfig(shifted_samples=True)
    assert InferenceConfig.from_dict(cfg.to_dict()).shifted_samples is True
    assert InferenceConfig.from_dict({}).shifted_samples is False  # older cards: off


torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("dims", [2, 3])
def test_predict_labels_are_the_argmax_of_both_grids_outputs(dims):
    """p = 0 (every sample is the plain forward pass): predict's label equals the
    argmax of the two grids' sliding-window outputs (ceil(T/2) and T//2 samples) on
    the CT grid, each computed here from prepare_input on its own grid; the maps are
    finite, the combined mean sums to 1 and the run is repeatable."""
    from CTMuscleBoneLib.segmentation.config import NetworkConfig
    from CTMuscleBoneLib.segmentation.inference import (
        _channel_values,
        mc_sliding_window,
        predict,
    )
    from CTMuscleBoneLib.segmentation.network import build_network
    from CTMuscleBoneLib.segmentation.preprocess import prepare_input

    torch.manual_seed(2)
    net = build_network(NetworkConfig(spatial_dims=dims, out_channels=3, channels=(4, 8),
                                      strides=(2,), dropout_p=0.0,
                                      dropout_placement="all")).eval()
    with torch.no_grad():  # larger weights: every class wins somewhere
        for prm in net.parameters():
            prm.normal_(0.0, 0.6)
    labels = {0: "background", 1: "gracilis_left", 2: "gracilis_right"}
    icfg = InputConfig(spacing_mm=(3.0, 3.0, 3.0), hu_window=(-150.0, 350.0))
    patch = (16, 16) if dims == 2 else (16, 16, 16)
    cfg = InferenceConfig(patch_size=patch, mc_samples=3, mc_batch_size=2,
                          shifted_samples=True, crop_to_body=False,
                          largest_component=False, return_probabilities=True)
    rng = np.random.default_rng(4)
    hu = rng.uniform(-100, 300, (30, 26, 14)).astype(np.float32)
    ct = CTImage(hu, Geometry(hu.shape, (1.3, 1.7, 2.2), (5.0, -3.0, 2.0), ROT))
    res = predict(ct, net, icfg, cfg, labels, device="cpu")
    again = predict(ct, net, icfg, cfg, labels, device="cpu")
    np.testing.assert_array_equal(res.label_map.array, again.label_map.array)
    parts = []
    for sv, n in (((0.0, 0.0, 0.0), 2), (shift_vector(dims), 1)):
        x, grid = prepare_input(ct, icfg, sv)
        one = InferenceConfig(patch_size=patch, mc_samples=n, mc_batch_size=1)
        out = mc_sliding_window(np.ascontiguousarray(x), net, one, device="cpu")
        parts.append((np.asarray(out.mean_probability), grid, float(n)))
    lut, _ = _channel_values(labels, 3)
    expect = argmax_on_grids(parts, ct.geometry, lut)
    np.testing.assert_array_equal(res.label_map.array, expect)
    # the maps and the probabilities: the halves' weighted means, each from its own grid
    halves = []
    for sv, n in (((0.0, 0.0, 0.0), 2), (shift_vector(dims), 1)):
        x, grid = prepare_input(ct, icfg, sv)
        one = InferenceConfig(patch_size=patch, mc_samples=n, mc_batch_size=1)
        halves.append((mc_sliding_window(np.ascontiguousarray(x), net, one, device="cpu"),
                       grid, n / 3))
    for name in ("predictive_entropy", "predictive_variance"):
        ref = sum(w * resample(getattr(o, name), g, ct.geometry, "linear", 0.0)
                  for o, g, w in halves)
        np.testing.assert_allclose(res.uncertainty[name], ref, atol=1e-5)
    ref_p = sum(w * resample(np.ascontiguousarray(o.mean_probability[1]), g, ct.geometry,
                             "linear", 0.0) for o, g, w in halves)
    np.testing.assert_allclose(res.probabilities[1], ref_p, atol=1e-5)
    assert len(np.unique(expect)) >= 2  # boundaries to move
    plain = predict(ct, net, icfg, InferenceConfig(patch_size=patch, mc_samples=3,
                                                   crop_to_body=False,
                                                   largest_component=False), labels,
                    device="cpu")
    assert (plain.label_map.array != res.label_map.array).any()  # the shift mattered
    np.testing.assert_allclose(res.probabilities.sum(0), 1.0, atol=1e-4)
    for m in res.uncertainty.values():
        assert np.isfinite(m).all() and (m >= 0).all()
    assert res.mc_samples == 3
    # T = 1 (one deterministic pass): nothing to split, the one grid runs
    one_pass = {shifted: predict(ct, net, icfg, InferenceConfig(
        patch_size=patch, mc_samples=1, shifted_samples=shifted, crop_to_body=False,
        largest_component=False), labels, device="cpu").label_map.array
        for shifted in (True, False)}
    np.testing.assert_array_equal(one_pass[True], one_pass[False])
