"""Bayesian U-Net: network, Monte-Carlo inference, uncertainty maps and review list.

Tiny volumes (24^3 voxels at 2 mm) and a tiny network (channels 4, 8, 16) trained for
100 steps on a synthetic two-class problem (bright ellipsoid vs soft tissue).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.errors import CancelledError, InputError, ModelError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry  # noqa: E402
from CTMuscleBoneLib.segmentation.config import (  # noqa: E402
    InferenceConfig,
    InputConfig,
    NetworkConfig,
)
from CTMuscleBoneLib.segmentation.inference import mc_sliding_window, predict  # noqa: E402
from CTMuscleBoneLib.segmentation.network import build_network  # noqa: E402
from CTMuscleBoneLib.segmentation.preprocess import (  # noqa: E402
    labels_to_grid,
    normalize_hu,
)
from CTMuscleBoneLib.segmentation.uncertainty import (  # noqa: E402
    MCAccumulator,
    review_list,
    structure_uncertainty,
)

LABELS = {0: "background", 1: "femur_left"}
INPUT = InputConfig(spacing_mm=(2.0, 2.0, 2.0))
CENTRE_MM = np.array([4.0, -6.0, 2.0])
RADII_MM = np.array([14.0, 9.0, 11.0])
HU_IN, HU_OUT = 300.0, 0.0


def _ellipsoid(points_mm: np.ndarray, centre=CENTRE_MM, radii=RADII_MM) -> np.ndarray:
    return (((points_mm - centre) / radii) ** 2).sum(-1) <= 1.0


def _phantom(geometry: Geometry) -> tuple[CTImage, np.ndarray]:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1)
    inside = _ellipsoid(geometry.index_to_physical(idx))
    hu = np.where(inside, HU_IN, HU_OUT).astype(np.int16)
    return CTImage(hu, geometry), inside


def _lps_geometry(n: int = 24) -> Geometry:
    return Geometry((n, n, n), (2.0, 2.0, 2.0), (-23.0, -23.0, -23.0))


def _random_training_batch(rng: np.random.Generator, n: int = 16) -> tuple[np.ndarray, ...]:
    x = np.empty((2, 1, n, n, n), np.float32)
    y = np.empty((2, n, n, n), np.int64)
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(float)
    for b in range(2):
        c = rng.uniform(3, n - 3, 3)
        r = rng.uniform(2.5, 6.0, 3)
        inside = (((grid - c) / r) ** 2).sum(-1) <= 1
        hu = np.where(inside, HU_IN, HU_OUT) + rng.normal(0, 20, inside.shape)
        x[b, 0] = normalize_hu(hu, INPUT)
        y[b] = inside
    return x, y


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_net():
    torch.manual_seed(0)
    cfg = NetworkConfig(out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                        dropout_p=0.3, dropout_placement="decoder")
    net = build_network(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    net.train()
    for _ in range(100):
        x, y = _random_training_batch(rng)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def _icfg(**kw) -> InferenceConfig:
    base = dict(patch_size=(16, 16, 16), overlap=0.25, mc_samples=6, mc_batch_size=3, seed=1)
    base.update(kw)
    return InferenceConfig(**base)


# -- configuration ------------------------------------------------------------------------
def test_configs_round_trip_json_and_reject_bad_values():
    for obj in (NetworkConfig(out_channels=3, channels=(8, 16), strides=(2,)), InputConfig(),
                InferenceConfig()):
        again = type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))
        assert again == obj
    with pytest.raises(ModelError, match="dropout_placement"):
        NetworkConfig(out_channels=2, dropout_placement="everywhere")
    with pytest.raises(ModelError, match="strides"):
        NetworkConfig(out_channels=2, channels=(4, 8, 16), strides=(2,))
    with pytest.raises(ModelError, match="orientation"):
        InputConfig(orientation="LLS")
    with pytest.raises(ModelError, match="unknown field"):
        InferenceConfig.from_dict({"patch": [16, 16, 16]})
    net = NetworkConfig(out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    with pytest.raises(ModelError, match="multiples"):
        InferenceConfig(patch_size=(18, 16, 16)).check_against(net)


def test_core_import_does_not_import_torch():
    code = ("import sys; import CTMuscleBoneLib, CTMuscleBoneLib.segmentation.config, "
            "CTMuscleBoneLib.segmentation.uncertainty, CTMuscleBoneLib.segmentation.preprocess;"
            "print('torch' in sys.modules, 'monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]
                                             / "CTMuscleBone"))
    assert out.stdout.split() == ["False", "False"]


# -- network ------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["all", "decoder", "bottleneck_decoder", "head"])
def test_split_forward_equals_full_forward_with_same_masks(placement):
    cfg = NetworkConfig(out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                        dropout_placement=placement)
    net = build_network(cfg).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    net.set_mc_dropout(True)
    assert all(m.training for m in net.dropout_layers)
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    with torch.no_grad():
        torch.manual_seed(5)
        split = net.forward_stochastic(net.forward_features(x), 4)
        torch.manual_seed(5)
        naive = net(torch.cat([x] * 4))  # the naive loop's batch: same masks
    assert split.shape == (4, 2, 3, 8, 8, 8)
    assert torch.allclose(split.reshape(8, 3, 8, 8, 8), naive, atol=1e-5)
    assert not torch.allclose(split[0], split[1])  # dropout is active: samples differ
    net.eval()  # eval() keeps MC dropout on
    assert all(m.training for m in net.dropout_layers)
    net.set_mc_dropout(False)
    with torch.no_grad():
        det = net.forward_stochastic(net.forward_features(x), 3)
        assert torch.allclose(det[0], net(x), atol=1e-6)
        assert torch.equal(det[0], det[2])


def test_deterministic_pass_equals_mc_mean_without_dropout():
    cfg = NetworkConfig(out_channels=3, channels=(4, 8, 16), strides=(2, 2), dropout_p=0.0,
                        dropout_placement="all")
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    vol = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    mc = mc_sliding_window(vol, net, _icfg(mc_samples=4), device="cpu")
    det = mc_sliding_window(vol, net, _icfg(mc_samples=1), device="cpu")
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(vol)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(det.mean_probability, ref, atol=1e-5)
    np.testing.assert_allclose(mc.mean_probability, ref, atol=1e-5)
    assert mc.predictive_variance.max() < 1e-6  # float32 rounding of sum-of-squares
    assert mc.mutual_information.max() < 1e-5


def test_accumulators_do_not_grow_with_samples(trained_net):
    acc = MCAccumulator()
    p = torch.softmax(torch.randn(2, 3, 8, 8, 8), 1)
    acc.update(p)
    size = acc.nbytes
    for _ in range(10):
        acc.update(p)
    assert acc.nbytes == size and acc.count == 22
    vol = np.zeros((20, 20, 20), np.float32)
    a = mc_sliding_window(vol, trained_net, _icfg(mc_samples=2), device="cpu")
    b = mc_sliding_window(vol, trained_net, _icfg(mc_samples=9), device="cpu")
    assert a.accumulator_bytes == b.accumulator_bytes == (2 + 3) * 4 * 20**3


def test_welford_matches_direct_statistics():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=(7, 5)).transpose(0, 2, 1)  # (T=7, C=3, 5)
    acc = MCAccumulator()
    for chunk in (p[:2], p[2:3], p[3:]):
        acc.update(chunk)
    np.testing.assert_allclose(acc.predictive_variance, p.var(0).mean(0), atol=1e-12)
    h = lambda q: -(q * np.log(q)).sum(0)  # noqa: E731
    np.testing.assert_allclose(acc.predictive_entropy, h(p.mean(0)), atol=1e-12)
    np.testing.assert_allclose(acc.mutual_information,
                               h(p.mean(0)) - np.mean([h(q) for q in p], 0), atol=1e-12)


# -- inference on the CT grid -------------------------------------------------------------
def _orientations() -> dict[str, Geometry]:
    lps = _lps_geometry()
    n = lps.shape[0] - 1
    ras = Geometry(lps.shape, lps.spacing_mm,
                   tuple(lps.index_to_physical(np.array([n, n, 0]))), np.diag([-1.0, -1.0, 1.0]))
    perm = Geometry(lps.shape, lps.spacing_mm, lps.origin_mm, np.eye(3)[:, [2, 0, 1]])
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)],
                          [0, np.sin(a / 2), np.cos(a / 2)]])
    centre = lps.index_to_physical(np.array([n / 2] * 3))
    obl_origin = centre - rot @ (np.array(lps.spacing_mm) * n / 2)
    oblique = Geometry(lps.shape, lps.spacing_mm, tuple(obl_origin), rot)
    return {"LPS": lps, "RAS": ras, "permuted": perm, "oblique": oblique}


def test_output_on_input_grid_in_any_orientation(trained_net):
    results = {}
    for name, geom in _orientations().items():
        ct, truth = _phantom(geom)
        res = predict(ct, trained_net, INPUT, _icfg(mc_samples=2), LABELS, device="cpu")
        assert res.label_map.geometry.same_grid(geom)
        assert res.label_map.array.shape == geom.shape
        for u in res.uncertainty.values():
            assert u.shape == geom.shape and u.dtype == np.float32
        pred = res.label_map.array == 1
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        assert dice > 0.8, (name, dice)
        results[name] = res
    # Same physical points -> same labels: compare every result with the LPS one
    # resampled (nearest neighbour) onto its grid; exact for the axis-aligned storages.
    ref = results["LPS"].label_map
    for name, res in results.items():
        ref_on_grid = labels_to_grid(ref, res.label_map.geometry)
        agree = (ref_on_grid == res.label_map.array).mean()
        assert agree > (0.999 if name != "oblique" else 0.95), (name, agree)


def test_axis_aligned_reorient_rotates_only_oblique_scans(trained_net):
    """``reorient='axis_aligned'``: the model grid lies along the patient axes. Axis-
    aligned storages (LPS, RAS, permuted) get the very grid of ``nearest_axis``; an
    oblique scan gets a rotated grid that still covers every CT voxel centre, and its
    labels come back on the CT grid with the anatomy in place."""
    from dataclasses import replace

    from CTMuscleBoneLib.segmentation.preprocess import model_direction, model_grid

    aligned = replace(INPUT, reorient="axis_aligned")
    geoms = _orientations()
    for name, geom in geoms.items():
        np.testing.assert_array_equal(model_direction(geom.direction, aligned), np.eye(3))
        g_near, g_aligned = model_grid(geom, INPUT), model_grid(geom, aligned)
        if name != "oblique":
            assert g_aligned.same_grid(g_near, tol_mm=1e-9), name
    oblique = geoms["oblique"]
    g_near, g_aligned = model_grid(oblique, INPUT), model_grid(oblique, aligned)
    assert not np.allclose(g_near.direction, g_aligned.direction)
    np.testing.assert_allclose(g_near.direction, oblique.direction, atol=1e-12)
    n = np.asarray(oblique.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    at = g_aligned.physical_to_index(oblique.index_to_physical(corners))
    assert (at >= 1 - 1e-9).all() and (at <= np.asarray(g_aligned.shape) - 2 + 1e-9).all()

    ct, truth = _phantom(oblique)
    ref = predict(ct, trained_net, INPUT, _icfg(mc_samples=2), LABELS, device="cpu")
    res = predict(ct, trained_net, aligned, _icfg(mc_samples=2), LABELS, device="cpu")
    assert res.label_map.geometry.same_grid(oblique)
    pred = res.label_map.array == 1
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8
    # another grid, the same anatomy: the two modes agree almost everywhere, not exactly
    agree = (ref.label_map.array == res.label_map.array).mean()
    assert 0.95 < agree < 1.0, agree


def test_uncertainty_higher_where_input_is_ambiguous(trained_net):
    geom = Geometry((32, 24, 24), (2.0, 2.0, 2.0), (-31.0, -23.0, -23.0))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geom.shape], indexing="ij"), -1)
    pts = geom.index_to_physical(idx)
    inside = _ellipsoid(pts, np.array([-16.0, 0, 0]), np.array([9.0, 9, 9])) | _ellipsoid(
        pts, np.array([16.0, 0, 0]), np.array([9.0, 9, 9]))
    hu = np.where(inside, HU_IN, HU_OUT).astype(np.float32)
    rng = np.random.default_rng(0)
    right = slice(16, 32)
    # Right half made ambiguous: HU half-way between the two classes, plus noise.
    hu[right] = 150.0 + rng.normal(0, 30, hu[right].shape)
    res = predict(CTImage(hu, geom), trained_net, INPUT, _icfg(mc_samples=8), LABELS,
                  device="cpu")
    for name, u in res.uncertainty.items():
        left_mean, right_mean = float(u[2:14].mean()), float(u[18:30].mean())
        assert right_mean > 1.3 * left_mean, (name, left_mean, right_mean)


def test_same_seed_same_output_different_seed_different_uncertainty(trained_net):
    ct, _ = _phantom(_lps_geometry())
    a = predict(ct, trained_net, INPUT, _icfg(seed=3), LABELS, device="cpu")
    b = predict(ct, trained_net, INPUT, _icfg(seed=3, sw_batch_size=4), LABELS, device="cpu")
    c = predict(ct, trained_net, INPUT, _icfg(seed=4), LABELS, device="cpu")
    np.testing.assert_array_equal(a.label_map.array, b.label_map.array)
    for name in a.uncertainty:
        np.testing.assert_allclose(a.uncertainty[name], b.uncertainty[name], atol=1e-6)
        assert not np.allclose(a.uncertainty[name], c.uncertainty[name], atol=1e-6)


def test_progress_and_cancellation(trained_net):
    ct, _ = _phantom(_lps_geometry())
    seen: list[float] = []
    predict(ct, trained_net, INPUT, _icfg(mc_samples=2), LABELS, device="cpu",
            progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 4
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        predict(ct, trained_net, INPUT, _icfg(), LABELS, device="cpu", cancel=cancel)
    cancel2 = threading.Event()

    def stop_midway(f: float, msg: str) -> None:
        if "window" in msg:
            cancel2.set()

    with pytest.raises(CancelledError):
        predict(ct, trained_net, INPUT, _icfg(), LABELS, device="cpu", progress=stop_midway,
                cancel=cancel2)


def test_two_d_model_runs_on_axial_slices():
    cfg = NetworkConfig(out_channels=2, spatial_dims=2, channels=(4, 8), strides=(2,))
    net = build_network(cfg)
    ct, _ = _phantom(Geometry((20, 18, 6), (2.0, 2.0, 3.0)))
    res = predict(ct, net, INPUT, InferenceConfig(patch_size=(16, 16), mc_samples=3),
                  LABELS, device="cpu")
    assert res.label_map.array.shape == (20, 18, 6)
    assert res.uncertainty["predictive_variance"].max() > 0


# -- review list --------------------------------------------------------------------------
def test_corrupted_structure_comes_first_in_review():
    labels = np.zeros((30, 30, 20), np.uint8)
    labels[2:12, 2:12, 2:18] = 1  # femur_left
    labels[16:28, 2:12, 2:18] = 2  # femur_right
    labels[2:12, 16:28, 2:18] = 3  # hip_left
    rng = np.random.default_rng(0)
    umap = rng.uniform(0.0, 0.02, labels.shape).astype(np.float32)
    umap[labels == 2] += 0.2  # the corrupted structure
    keys = ["femur_left", "femur_right", "hip_left", "sacrum"]
    ranked = review_list(labels, umap, (1.0, 1.0, 2.0), keys)
    assert [s.key for s in ranked[:2]] == ["sacrum", "femur_right"]  # absent, then corrupt
    assert not ranked[0].present and ranked[0].score is None
    assert ranked[1].score == pytest.approx(float(umap[labels == 2].mean()))
    assert ranked[1].volume_cm3 == pytest.approx(12 * 10 * 16 * 2.0 / 1000)



def test_structure_emptied_on_the_ct_grid_goes_to_the_top_of_the_review():
    """A structure scored on the model grid but with no voxel in the final label map (a
    sliver lost to the resampling, the clean-up or the other half of shifted samples)
    is absent: listed first, with the other absent ones, its volume 0; the order of the
    rest is kept (failed on the old code, which only cleared ``present``)."""
    from CTMuscleBoneLib.segmentation.inference import _review_volumes_on_ct_grid

    labels = np.zeros((30, 30, 20), np.uint8)
    labels[2:12, 2:12, 2:18] = 1  # femur_left
    labels[16:28, 2:12, 2:18] = 2  # femur_right
    labels[2:12, 16:28, 2:18] = 3  # hip_left
    umap = np.full(labels.shape, 0.01, np.float32)
    umap[labels == 2] = 0.2
    umap[labels == 3] = 0.1
    keys = ["femur_left", "femur_right", "hip_left", "sacrum"]
    model_grid = review_list(labels, umap, (1.0, 1.0, 1.0), keys)
    assert [s.key for s in model_grid] == ["sacrum", "femur_right", "hip_left", "femur_left"]
    final = labels.copy()
    final[final == 3] = 0  # hip_left lost on the CT grid
    out = _review_volumes_on_ct_grid(model_grid, final, 0.002)
    assert {s.key for s in out[:2]} == {"sacrum", "hip_left"}  # both absent
    assert [s.key for s in out[2:]] == ["femur_right", "femur_left"]
    hip = next(s for s in out if s.key == "hip_left")
    assert not hip.present and hip.volume_cm3 == 0.0
    assert hip.score == pytest.approx(0.1)  # the model-grid score is kept
    assert out[2].volume_cm3 == pytest.approx(12 * 10 * 16 * 0.002)  # femur_right

def test_boundary_band_is_physical():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    umap = np.zeros(labels.shape, np.float32)
    umap[labels == 0] = 1.0  # uncertain only outside the structure
    (item,) = structure_uncertainty(labels, umap, (1.0, 1.0, 1.0), ["femur_left"], band_mm=1.0)
    # band = 1-voxel shells inside (10^3 - 8^3 = 488) and outside (12^3 - 10^3 - 8 corners
    # at sqrt(2)..sqrt(3) mm are > 1 mm: 6 faces x 100 = 600 voxels)
    assert item.mean_inside == 0.0
    assert item.mean_boundary == pytest.approx(600 / (600 + 488))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (0.8, 0.8, 2.0), (3.0, 3.0, 3.0),
                                     (1.0, 2.5, 0.7)])
@pytest.mark.parametrize("band_mm", [0.0, 1.0, 2.0, 3.7, 6.0])
def test_boundary_band_equals_the_thresholded_distance_transforms(spacing, band_mm):
    """The band by erosion / dilation with a ball is the set the two Euclidean distance
    transforms give (inside within band_mm of an outside voxel, outside within band_mm
    of the mask, plus the face neighbours of the surface), anisotropic spacing and a
    mask that touches the array border included."""
    from CTMuscleBoneLib.segmentation.uncertainty import boundary_band
    from scipy import ndimage

    rng = np.random.default_rng(int(band_mm * 10) + int(spacing[2] * 10))
    mask = ndimage.gaussian_filter(rng.random((36, 31, 27)), 2.0) > 0.5
    mask[:4, :, :3] = True
    face = ndimage.generate_binary_structure(3, 1)
    d_in = ndimage.distance_transform_edt(mask, sampling=spacing)
    d_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    ref = (mask & (d_in <= band_mm)) | (~mask & (d_out <= band_mm))
    ref |= mask & ndimage.binary_dilation(~mask, face)
    ref |= ~mask & ndimage.binary_dilation(mask, face)
    band = boundary_band(mask, spacing, band_mm)
    np.testing.assert_array_equal(band, ref)
    assert band.sum() > 0 and (~band).sum() > 0


@pytest.mark.parametrize("n_classes", [2, 5, 31])
def test_two_class_tie_is_what_the_maps_give_for_a_coin_flip(n_classes):
    """Half the samples one-hot on class 0, half on class 1: the accumulator's maps equal
    the heatmap's full scale (variance 1 / (2 C), entropy and mutual information ln 2)."""
    from CTMuscleBoneLib.segmentation.uncertainty import two_class_tie_value

    probs = np.zeros((10, n_classes, 3), dtype=np.float64)
    probs[:5, 0] = 1.0
    probs[5:, 1] = 1.0
    acc = MCAccumulator()
    acc.update(probs[:3])
    acc.update(probs[3:])  # merged in two batches, as windows are
    for name, value in (("predictive_variance", acc.predictive_variance),
                        ("predictive_entropy", acc.predictive_entropy),
                        ("mutual_information", acc.mutual_information)):
        np.testing.assert_allclose(value, two_class_tie_value(name, n_classes), rtol=1e-9)
    with pytest.raises(InputError):
        two_class_tie_value("variance", n_classes)
    with pytest.raises(InputError):
        two_class_tie_value("predictive_entropy", 1)
