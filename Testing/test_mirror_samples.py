"""Test-time mirroring inside the Monte-Carlo loop (``InferenceConfig.mirror_samples``).

The last T // 2 samples of each window run on the window mirrored left-right; their
softmax is mirrored back with the left / right channels swapped. Checked against a
direct computation (dropout p = 0: every sample is the plain forward pass, so the mean
is (f(x) + M P f(M x)) / 2 exactly), for the mirror's equivariance (a mirrored input
gives the mirrored output with the sides swapped), and for the refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.errors import ModelError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry  # noqa: E402
from CTMuscleBoneLib.segmentation.config import (  # noqa: E402
    InferenceConfig,
    InputConfig,
    NetworkConfig,
)
from CTMuscleBoneLib.segmentation.inference import (  # noqa: E402
    mc_sliding_window,
    mirror_plan,
    predict,
)
from CTMuscleBoneLib.segmentation.network import build_network  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = {0: "background", 1: "femur_left", 2: "femur_right", 3: "sacrum",
          4: "gracilis_right", 5: "gracilis_left"}
SWAP = np.array([0, 2, 1, 3, 5, 4])


def test_mirror_plan_pairs_the_sides_and_finds_the_left_right_axis():
    plan = mirror_plan("LPS", LABELS, 6, 3)
    assert plan.axis == 0
    np.testing.assert_array_equal(plan.channels, SWAP)
    np.testing.assert_array_equal(plan.channels[plan.channels], np.arange(6))  # involution
    assert mirror_plan("PRS", LABELS, 6, 3).axis == 1
    assert mirror_plan("ASL", LABELS, 6, 3).axis == 2
    with pytest.raises(ModelError, match="slice axis"):
        mirror_plan("ASL", LABELS, 6, 2)
    with pytest.raises(ModelError, match="no channel is 'femur_right'"):
        mirror_plan("LPS", {0: "background", 1: "femur_left", 2: "sacrum"}, 3, 3)


def _net(dims: int, p: float, placement: str = "all", seed: int = 0):
    torch.manual_seed(seed)
    return build_network(NetworkConfig(spatial_dims=dims, out_channels=6, channels=(4, 8, 16),
                                       strides=(2, 2), dropout_p=p,
                                       dropout_placement=placement)).eval()


@pytest.mark.parametrize("dims", [3, 2])
def test_mirrored_samples_equal_the_direct_mean_without_dropout(dims):
    """p = 0: sample 1 is f(x), sample 2 is M P f(M x); the mean is their average and
    the predictive variance the per-voxel variance of the two, averaged over classes."""
    net = _net(dims, 0.0)
    shape = (16, 16, 16) if dims == 3 else (16, 16, 1)
    vol = np.random.default_rng(1).random(shape, dtype=np.float32)
    patch = (16, 16, 16) if dims == 3 else (16, 16)
    cfg = InferenceConfig(patch_size=patch, mc_samples=2, mc_batch_size=1)
    plan = mirror_plan("LPS", LABELS, 6, dims)
    out = mc_sliding_window(vol, net, cfg, device="cpu", mirror=plan)
    x = torch.from_numpy(vol)[None, None]
    if dims == 2:
        x = x[..., 0]
    with torch.no_grad():
        a = torch.softmax(net(x), 1)[0]
        b = torch.softmax(net(torch.flip(x, (2,))), 1)[0]
    b = torch.flip(b, (1,))[torch.as_tensor(SWAP)]
    if dims == 2:
        a, b = a[..., None], b[..., None]
    ref = ((a + b) / 2).numpy()
    np.testing.assert_allclose(out.mean_probability, ref, atol=1e-5)
    var = (((a - b) / 2) ** 2).mean(0).numpy()  # population variance of two samples
    np.testing.assert_allclose(out.predictive_variance, var, rtol=1e-3, atol=1e-9)
    assert var.max() > 1e-5  # the random network is not itself symmetric
    plain = mc_sliding_window(vol, net, cfg, device="cpu")
    np.testing.assert_allclose(plain.mean_probability, a.numpy(), atol=1e-5)


@pytest.mark.parametrize("dims", [3, 2])
def test_mirrored_input_gives_the_mirrored_output_with_the_sides_swapped(dims):
    """Without dropout the mirrored run is exactly equivariant, windows and blending
    included (24 voxels along the mirror axis: windows at 0 and 8, a layout that is its
    own mirror image)."""
    net = _net(dims, 0.0, seed=3)
    shape = (24, 20, 16) if dims == 3 else (24, 20, 3)
    vol = np.random.default_rng(2).random(shape, dtype=np.float32)
    patch = (16, 16, 16) if dims == 3 else (16, 16)
    cfg = InferenceConfig(patch_size=patch, overlap=0.5, mc_samples=2, mc_batch_size=2)
    plan = mirror_plan("LPS", LABELS, 6, dims)
    out = mc_sliding_window(vol, net, cfg, device="cpu", mirror=plan)
    flipped = mc_sliding_window(np.ascontiguousarray(vol[::-1]), net, cfg, device="cpu",
                                mirror=plan)
    np.testing.assert_allclose(flipped.mean_probability,
                               out.mean_probability[SWAP][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(flipped.predictive_variance,
                               out.predictive_variance[::-1], atol=1e-6)
    plain = mc_sliding_window(vol, net, cfg, device="cpu")
    assert np.abs(plain.mean_probability - out.mean_probability).max() > 1e-3


def test_mirrored_monte_carlo_run_is_reproducible_and_refused_for_the_head_placement():
    net = _net(3, 0.3)
    vol = np.random.default_rng(4).random((20, 16, 16), dtype=np.float32)
    cfg = InferenceConfig(patch_size=(16, 16, 16), mc_samples=5, mc_batch_size=2, seed=7)
    plan = mirror_plan("LPS", LABELS, 6, 3)
    a = mc_sliding_window(vol, net, cfg, device="cpu", mirror=plan)
    b = mc_sliding_window(vol, net, cfg, device="cpu", mirror=plan)
    np.testing.assert_array_equal(a.mean_probability, b.mean_probability)
    np.testing.assert_allclose(a.mean_probability.sum(0), 1.0, atol=1e-5)
    one = mc_sliding_window(vol, net, InferenceConfig(patch_size=(16, 16, 16),
                                                      mc_samples=1), device="cpu",
                            mirror=plan)  # T = 1: no mirrored sample (T // 2 = 0)
    det = mc_sliding_window(vol, net, InferenceConfig(patch_size=(16, 16, 16),
                                                      mc_samples=1), device="cpu")
    np.testing.assert_array_equal(one.mean_probability, det.mean_probability)
    with pytest.raises(ModelError, match="head only"):
        mc_sliding_window(vol, _net(3, 0.3, "head"), cfg, device="cpu", mirror=plan)


def test_predict_mirrors_along_the_models_left_right_axis_on_any_ct_orientation():
    """predict with mirror_samples on an RAS-stored CT: the model grid is LPS, so the
    mirror runs along its axis 0, and a CT mirrored left-right physically gives the
    mirrored labels with the sides swapped (p = 0: exact equivariance)."""
    net = _net(3, 0.0, seed=5)
    icfg = InputConfig(spacing_mm=(2.0, 2.0, 2.0), hu_window=(-150.0, 350.0))
    cfg = InferenceConfig(patch_size=(16, 16, 16), mc_samples=2, mirror_samples=True,
                          crop_to_body=False, largest_component=False,
                          label_resampling="nearest")
    rng = np.random.default_rng(6)
    hu = rng.uniform(-100, 300, (22, 16, 16)).astype(np.float32)
    ras = np.diag([-1.0, -1.0, 1.0])
    g = Geometry(hu.shape, (2.0, 2.0, 2.0), (21.0, 15.0, 0.0), ras)
    # RAS storage: array axis 0 runs to the patient's right (x = 21 ... -21 mm), so
    # reversing it mirrors the body through the sagittal plane x = 0; the model grid
    # (LPS, 2 mm, one voxel of margin: x = -23 ... 23, 24 voxels, windows at 0 and 8)
    # is its own mirror image
    res = predict(CTImage(hu, g), net, icfg, cfg, LABELS, device="cpu")
    mir = predict(CTImage(np.ascontiguousarray(hu[::-1]), g), net, icfg, cfg, LABELS,
                  device="cpu")
    value_of = {k: v for v, k in res.label_map.structures.items()}
    swap = {0: 0}
    for k, v in value_of.items():
        partner = k.replace("_left", "_right") if k.endswith("_left") else (
            k.replace("_right", "_left") if k.endswith("_right") else k)
        swap[v] = value_of.get(partner, v)
    lut = np.zeros(max(swap) + 1, np.int64)
    for v, w in swap.items():
        lut[v] = w
    np.testing.assert_array_equal(mir.label_map.array, lut[res.label_map.array][::-1])
    with pytest.raises(ModelError, match="mirror_samples must be true or false"):
        InferenceConfig(mirror_samples="yes")
    assert InferenceConfig.from_dict(cfg.to_dict()).mirror_samples is True
