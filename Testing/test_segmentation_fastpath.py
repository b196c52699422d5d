"""Fast paths of segmentation and measurement: same numbers as the direct computations.

* the pointwise Monte-Carlo head (``head`` placement) against softmax / entropy computed
  directly with the same dropout masks;
* a deterministic sliding-window pass with the ``head`` placement against one forward
  pass of the network;
* the body box (``crop_to_body``): same labels as without it, maps 0 outside;
* bounding boxes (``mask_bounding_box``, ``LabelMap.boxes``) and the femur point sets
  computed on them against ``np.argwhere`` on the whole volume.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.femur.landmarks import femur_points, surface_points  # noqa: E402
from CTMuscleBoneLib.fov import border_voxel_indices, border_voxels  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap, mask_bounding_box  # noqa: E402
from CTMuscleBoneLib.segmentation.config import (  # noqa: E402
    InferenceConfig,
    InputConfig,
    NetworkConfig,
)
from CTMuscleBoneLib.segmentation.inference import (  # noqa: E402
    argmax_on_grid,
    mc_sliding_window,
    pointwise_mc_statistics,
    predict,
    softmax_entropy,
)
from CTMuscleBoneLib.segmentation.network import build_network  # noqa: E402
from CTMuscleBoneLib.segmentation.preprocess import body_box, resample  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_softmax_entropy_matches_direct_and_survives_large_logits():
    z = torch.randn(7, 500, dtype=torch.float64) * 5
    z[:, 0] = torch.tensor([1000.0, 999.0, -1000.0, 0, 0, 0, 0], dtype=torch.float64)
    p, h = softmax_entropy(z.clone())
    ref = torch.softmax(z, 0)
    assert torch.allclose(p, ref, atol=1e-12)
    assert torch.allclose(h, torch.special.entr(ref).sum(0), atol=1e-9)
    assert torch.isfinite(h).all()


@pytest.mark.parametrize("p_drop", [0.3, 0.5])
def test_pointwise_statistics_equal_direct_computation_with_the_same_masks(p_drop):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 300, generator=g)
    w, b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    T = 7
    mean_p, var, ent = pointwise_mc_statistics(x, w, b, p_drop, T, np.random.default_rng(5))
    rng = np.random.default_rng(5)  # the same masks, drawn the same way
    # p = 0.5: 8 bits per mask (exact); p = 0.3: 16 bits
    dtype = np.uint8 if p_drop == 0.5 else np.uint16
    levels = 256 if p_drop == 0.5 else 65536
    threshold = round(levels * (1 - p_drop))
    probs = []
    for _ in range(T):
        bits = np.frombuffer(rng.bytes(np.dtype(dtype).itemsize * x.numel()),
                             dtype).reshape(x.shape)
        keep = torch.from_numpy(bits < threshold)
        probs.append(torch.softmax(w @ (x * keep / (1 - p_drop)) + b[:, None], 0))
    probs = torch.stack(probs)  # (T, C, n)
    assert torch.allclose(mean_p, probs.mean(0), atol=1e-6)
    assert torch.allclose(var, probs.var(0, unbiased=False).mean(0), atol=1e-6)
    h = torch.special.entr(probs).sum(1).mean(0)
    assert torch.allclose(ent, h, atol=1e-5)
    assert var.max() > 1e-4  # the masks differ between samples
    # deterministic: no masks
    p1, v1, e1 = pointwise_mc_statistics(x, w, b, p_drop, 1)
    assert v1 is None
    assert torch.allclose(p1, torch.softmax(w @ x + b[:, None], 0), atol=1e-6)


def test_head_placement_deterministic_window_pass_equals_forward():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                                      dropout_placement="head")).eval()
    assert net.pointwise_tail
    vol = np.random.default_rng(0).random((20, 16, 18), dtype=np.float32)
    cfg = InferenceConfig(patch_size=(16, 16, 16), overlap=0.25, mc_samples=1, seed=1)
    out = mc_sliding_window(vol, net, cfg, device="cpu")  # 2 x 1 x 2 windows
    with torch.no_grad():  # one window: the forward pass itself
        ref = torch.softmax(net(torch.from_numpy(vol[:16, :, :16])[None, None]), 1)[0]
    single = mc_sliding_window(vol[:16, :, :16], net, cfg, device="cpu")
    np.testing.assert_allclose(single.mean_probability, ref.numpy(), atol=1e-5)
    assert out.mean_probability.shape == (3, 20, 16, 18)
    np.testing.assert_allclose(out.mean_probability.sum(0), 1.0, atol=1e-5)
    mc = mc_sliding_window(vol, net, InferenceConfig(patch_size=(16, 16, 16), mc_samples=4,
                                                     mc_batch_size=2, seed=1), device="cpu")
    again = mc_sliding_window(vol, net, InferenceConfig(patch_size=(16, 16, 16), mc_samples=4,
                                                        mc_batch_size=4, seed=1), device="cpu")
    np.testing.assert_array_equal(mc.mean_probability, again.mean_probability)
    assert mc.predictive_variance.max() > 0


@pytest.mark.parametrize("dims", [3, 2])
def test_head_placement_draws_the_samples_once_per_voxel_of_the_blended_features(dims):
    """With the ``head`` placement the windows' features are blended (Gaussian weights)
    and the T samples drawn once per voxel: the output equals a direct computation of
    that, window by window with the network's own ``forward_features``. T = 1: the
    softmax of the blended logits; T = 4: :func:`pointwise_mc_volume` on the blended
    features with the run's mask seed. Chunks get their own masks."""
    from itertools import product

    from CTMuscleBoneLib.segmentation.inference import (
        importance_map,
        pointwise_mc_volume,
        window_seed,
        window_starts,
    )

    torch.manual_seed(1)
    net = build_network(NetworkConfig(spatial_dims=dims, out_channels=3, channels=(4, 8, 16),
                                      strides=(2, 2), dropout_placement="head",
                                      dropout_p=0.5)).eval()
    vol = np.random.default_rng(0).random((20, 24, 5 if dims == 2 else 18), dtype=np.float32)
    patch3 = (16, 16, 16) if dims == 3 else (16, 16, 1)
    wmap = importance_map(patch3, dims, "gaussian")
    feats = torch.zeros((4, *vol.shape))
    weights = torch.zeros(vol.shape)
    starts = list(product(*(window_starts(n, p, 0.5) for n, p in zip(vol.shape, patch3,
                                                                       strict=True))))
    with torch.no_grad():
        for st in starts:
            sl = tuple(slice(a, a + p) for a, p in zip(st, patch3, strict=True))
            x = torch.from_numpy(vol[sl])[None, None]
            f = net.forward_features(x if dims == 3 else x[..., 0]).x[0]
            feats[(slice(None), *sl)] += (f if dims == 3 else f[..., None]) * wmap
            weights[sl] += wmap
    feats /= weights
    w, b = net.head_weights()
    with torch.no_grad():
        logits = torch.einsum("cf,f...->c...", w, feats) + b[:, None, None, None]
    cfg = dict(patch_size=patch3[:dims], overlap=0.5, seed=7)
    det = mc_sliding_window(vol, net, InferenceConfig(mc_samples=1, **cfg), device="cpu")
    assert len(starts) > 1 and det.n_windows == len(starts)
    np.testing.assert_allclose(det.mean_probability, torch.softmax(logits, 0).numpy(),
                               atol=1e-5)
    mc = mc_sliding_window(vol, net, InferenceConfig(mc_samples=4, **cfg), device="cpu")
    buffer = feats.clone()  # 4 features >= 3 classes: the mean softmax replaces them
    with torch.no_grad():
        ref_v, _ = pointwise_mc_volume(buffer, 4, w, b, 0.5, 4, window_seed(7, 0))
    np.testing.assert_allclose(mc.mean_probability, buffer[:3].numpy(), atol=1e-5)
    np.testing.assert_allclose(mc.predictive_variance, ref_v.numpy(), atol=1e-6)
    assert mc.predictive_variance.max() > 1e-6  # dropout acted
    # chunks draw their own masks: constant features, two chunks, different samples
    same = torch.ones((4, 2, 8, 8))
    with torch.no_grad():
        pointwise_mc_volume(same, 4, w, b, 0.5, 2, 3, chunk_voxels=64)
    assert not torch.allclose(same[:3, 0], same[:3, 1])


@pytest.mark.parametrize(("placement", "shape"), [("all", (10, 12, 3)), ("head", (10, 12, 3)),
                                                 ("head", (16, 16, 3))])
def test_model_grid_outputs_own_compact_buffers(placement, shape):
    """A 2-D model pads a grid smaller than its patch (here 16 x 16), and the ``head``
    placement accumulates more feature channels (8) than classes (3). The outputs must
    not be views that keep those accumulators alive for as long as the caller holds
    them (with shifted samples ``predict`` holds the first half's while the second
    runs): each array's storage (the tensor its numpy array views) is its own size."""
    torch.manual_seed(3)
    net = build_network(NetworkConfig(spatial_dims=2, out_channels=3, channels=(8, 8),
                                      strides=(2,), dropout_placement=placement,
                                      dropout_p=0.3)).eval()
    vol = np.random.default_rng(1).random(shape, dtype=np.float32)
    cfg = InferenceConfig(patch_size=(16, 16), mc_samples=3, mc_batch_size=3, seed=5)
    out = mc_sliding_window(vol, net, cfg, device="cpu")
    for name in ("mean_probability", "predictive_variance", "predictive_entropy",
                 "mutual_information"):
        a = getattr(out, name)
        assert a.shape[-3:] == shape
        owner = a.base if isinstance(a.base, torch.Tensor) else torch.from_numpy(a)
        assert owner.untyped_storage().nbytes() == a.nbytes, name
    np.testing.assert_allclose(out.mean_probability.sum(0), 1.0, atol=1e-5)


def test_pointwise_mc_volume_in_place_equals_one_chunk_per_voxel_block():
    """The in-place buffer (more classes than features, several chunks) gives each chunk
    what :func:`pointwise_mc_statistics` gives it alone, with the same mask stream."""
    from CTMuscleBoneLib.segmentation.inference import pointwise_mc_volume

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn((3, 4, 5, 6), generator=gen)  # 3 features, 7 classes, 120 voxels
    w, b = torch.randn((7, 3), generator=gen), torch.randn(7, generator=gen)
    buffer = torch.zeros((7, 4, 5, 6))
    buffer[:3] = feats
    var, ent = pointwise_mc_volume(buffer, 3, w, b, 0.25, 5, seed=11, chunk_voxels=50)
    rng = np.random.default_rng(11)
    flat = feats.reshape(3, -1)
    for i0 in range(0, 120, 50):
        p, v, h = pointwise_mc_statistics(flat[:, i0:i0 + 50], w, b, 0.25, 5, rng)
        torch.testing.assert_close(buffer.reshape(7, -1)[:, i0:i0 + 50], p)
        torch.testing.assert_close(var.reshape(-1)[i0:i0 + 50], v)
        torch.testing.assert_close(ent.reshape(-1)[i0:i0 + 50], h)
    with pytest.raises(ValueError, match="channels"):
        pointwise_mc_volume(torch.zeros((5, 4, 5, 6)), 3, w, b, 0.25, 5, seed=1)


def _air_phantom() -> CTImage:
    """A soft-tissue block with a bright ball, in air (-1000 HU) with 20 voxels around."""
    geom = Geometry((60, 56, 40), (2.0, 2.0, 2.0), (-60.0, -56.0, -40.0))
    hu = np.full(geom.shape, -1000, np.int16)
    hu[20:40, 18:38, 10:30] = 40
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geom.shape], indexing="ij"), -1)
    hu[((idx - np.array([30, 28, 20])) ** 2).sum(-1) <= 25] = 300
    return CTImage(hu, geom)


def test_body_box_crop_keeps_labels_and_zeroes_maps_outside():
    ct = _air_phantom()
    box = body_box(ct, margin_mm=4.0)
    assert box == (slice(18, 42), slice(16, 40), slice(8, 32))
    torch.manual_seed(0)
    net = build_network(NetworkConfig(out_channels=2, channels=(4, 8), strides=(2,),
                                      dropout_placement="head", dropout_p=0.2)).eval()
    with torch.no_grad():  # a constant 'model': femur_left everywhere (p = 0.73)
        net.head.conv.weight.zero_()
        net.head.conv.bias.copy_(torch.tensor([0.0, 1.0]))
    labels = {0: "background", 1: "femur_left"}
    inp = InputConfig(spacing_mm=(2.0, 2.0, 2.0))
    icfg = InferenceConfig(patch_size=(16, 16, 16), mc_samples=3, seed=0)
    crop = predict(ct, net, inp, icfg, labels, device="cpu")
    full = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=3, seed=0,
                                                 crop_to_body=False), labels, device="cpu")
    assert crop.label_map.geometry.same_grid(ct.geometry)
    outside = np.ones(ct.geometry.shape, bool)
    outside[body_box(ct)] = False  # default margin 10 mm
    assert (full.label_map.array == 1).all()  # without the box: the model everywhere
    assert (crop.label_map.array[~outside] == 1).all()  # with it: the same inside,
    assert not crop.label_map.array[outside].any()  # background outside
    for name, u in crop.uncertainty.items():
        assert u.shape == ct.geometry.shape, name
        assert not u[outside].any(), name
        np.testing.assert_allclose(u[~outside], full.uncertainty[name][~outside], atol=1e-6)
    assert crop.uncertainty["predictive_entropy"][~outside].min() > 0.5


def test_bounding_boxes_and_femur_points_match_whole_volume():
    rng = np.random.default_rng(1)
    mask = np.zeros((30, 25, 20), bool)
    mask[5:12, 8:20, 3:9] = rng.random((7, 12, 6)) > 0.3
    box = mask_bounding_box(mask)
    nz = np.argwhere(mask)
    assert box == tuple(slice(int(a), int(b) + 1)
                        for a, b in zip(nz.min(0), nz.max(0), strict=True))
    assert mask_bounding_box(np.zeros((3, 3, 3), bool)) is None
    g = Geometry(mask.shape, (0.7, 0.8, 1.5), (3.0, -2.0, 5.0))
    np.testing.assert_array_equal(femur_points(mask, g), g.index_to_physical(nz))
    # surface points: the direct formula on the padded whole volume
    padded = np.pad(mask, 1)
    ref = []
    for a in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[a], hi[a] = slice(0, -1), slice(1, None)
        idx = np.argwhere(padded[tuple(lo)] != padded[tuple(hi)]).astype(float)
        idx[:, a] += 0.5
        ref.append(idx - 1.0)
    np.testing.assert_allclose(surface_points(mask, g), g.index_to_physical(np.concatenate(ref)))
    lab = np.zeros(mask.shape, np.uint8)
    lab[mask] = 3
    lab[20:22, 1:4, 15:16] = 7
    lm = LabelMap(lab, g, {3: "femur_left", 7: "femur_right", 9: "sacrum"})
    assert lm.boxes() == {3: box, 7: (slice(20, 22), slice(1, 4), slice(15, 16))}
    assert lm.present_keys() == ["femur_left", "femur_right"]


def test_border_voxel_indices_equal_argwhere_of_border_voxels():
    rng = np.random.default_rng(0)
    for shape in [(5, 6, 7), (1, 4, 4), (3, 1, 2)]:
        m = rng.random(shape) > 0.5
        np.testing.assert_array_equal(border_voxel_indices(m), np.argwhere(border_voxels(m)))
        assert border_voxel_indices(np.zeros(shape, bool)).shape == (0, 3)


def test_argmax_on_grid_equals_argmax_of_resampled_probabilities():
    """The boundary-shell shortcut against SimpleITK's linear resampling of every class."""
    rng = np.random.default_rng(0)
    src = Geometry((12, 10, 9), (3.0, 3.0, 3.0), (-18.0, -15.0, -12.0))
    a = np.deg2rad(10.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    tgt = Geometry((25, 22, 18), (1.1, 1.0, 1.3), (-12.0, -10.0, -8.0), rot)
    # smooth 4-class probabilities: blobs
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in src.shape], indexing="ij"), -1)
    centres = rng.uniform(0, 9, (4, 3))
    logits = -((idx[None] - centres[:, None, None, None]) ** 2).sum(-1) / 8.0
    prob = np.exp(logits) / np.exp(logits).sum(0)
    prob = prob.astype(np.float32)
    lut = np.array([0, 3, 5, 7])
    nn = resample(lut.astype(np.uint8)[prob.argmax(0)], src, tgt, "nearest", 0, np.uint8)
    fast = nn.copy()
    argmax_on_grid(prob, src, tgt, lut, fast)
    ref = np.stack([resample(prob[c], src, tgt, "linear", 0.0) for c in range(4)])
    expect = lut[ref.argmax(0)].astype(np.uint8)
    assert (fast != nn).any()  # the shell was recomputed
    assert (fast == expect).mean() > 0.9995


def test_entropy_by_slab_equals_the_whole_volume_entropy():
    """The slab-by-slab entropy of the mean softmax (no (C, volume) temporary) against
    the whole-volume formula, on a cropped (non-contiguous) view and with 1-slice slabs."""
    from CTMuscleBoneLib.segmentation.inference import _entropy_by_slab
    from CTMuscleBoneLib.segmentation.uncertainty import entropy

    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn((5, 9, 7, 6), generator=gen) * 3, 0)
    view = p[:, :8, :6]
    for max_elements in (1, 50, 1 << 24):
        torch.testing.assert_close(_entropy_by_slab(view, max_elements), entropy(view, 0))
