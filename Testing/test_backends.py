"""Inference back ends (segmentation/backends.py): OpenVINO runs the deterministic part
of a head-placement network and gives the labels and maps of torch; refusals name the
reason (wrong placement, GPU, unknown name, package missing)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.errors import InputError, ModelError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry  # noqa: E402
from CTMuscleBoneLib.pipeline import SegmentOptions  # noqa: E402
from CTMuscleBoneLib.segmentation.backends import feature_runner  # noqa: E402
from CTMuscleBoneLib.segmentation.config import (  # noqa: E402
    InferenceConfig,
    InputConfig,
    NetworkConfig,
)
from CTMuscleBoneLib.segmentation.inference import mc_sliding_window, predict  # noqa: E402
from CTMuscleBoneLib.segmentation.network import build_network  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = {0: "background", 1: "femur_left", 2: "gluteus_maximus_left"}


def _net(placement: str = "head", dims: int = 3):
    torch.manual_seed(0)
    net = build_network(NetworkConfig(spatial_dims=dims, in_channels=1, out_channels=3,
                                      channels=(8, 16, 32), strides=(2, 2), dropout_p=0.2,
                                      dropout_placement=placement))
    # BatchNorm statistics that are not the identity (as after training)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _ct() -> CTImage:
    rng = np.random.default_rng(1)
    shape = (40, 36, 30)
    i, j, k = np.indices(shape)
    hu = np.full(shape, -900.0, np.float32)
    body = ((i - 20) ** 2 / 18 ** 2 + (j - 18) ** 2 / 15 ** 2) <= 1
    hu[body] = 40.0
    hu[((i - 14) ** 2 + (j - 18) ** 2 + (k - 15) ** 2) <= 25] = 900.0
    hu += rng.normal(0, 20, shape).astype(np.float32)
    return CTImage(hu, Geometry(shape, (2.0, 2.0, 2.5), (0.0, 0.0, 0.0)))


def test_openvino_gives_the_labels_and_maps_of_torch():
    pytest.importorskip("openvino")
    net = _net()
    inp = InputConfig(spacing_mm=(2.0, 2.0, 2.0))
    inf = InferenceConfig(patch_size=(16, 16, 16), overlap=0.25, sw_batch_size=3,
                          mc_samples=6, mc_batch_size=3, crop_to_body=False)
    ref = predict(_ct(), net, inp, inf, LABELS, device="cpu")
    ov = predict(_ct(), net, inp, inf, LABELS, device="cpu", backend="openvino")
    agree = float(np.mean(ref.label_map.array == ov.label_map.array))
    assert agree >= 0.999, agree
    for name, m in ref.uncertainty.items():
        np.testing.assert_allclose(ov.uncertainty[name], m, atol=2e-4, err_msg=name)
    # the random network labels more than one class, so the comparison is not vacuous
    assert len(np.unique(ref.label_map.array)) >= 2


def test_openvino_features_equal_torch_features_for_every_batch_shape():
    """Window batches of different sizes (the last batch is smaller) each get their own
    compiled model; 2-D networks too."""
    pytest.importorskip("openvino")
    for dims, shape in ((3, (16, 16, 16)), (2, (32, 32))):
        net = _net(dims=dims)
        run = feature_runner(net, "openvino", torch.device("cpu"))
        for b in (3, 1):
            x = torch.rand((b, 1, *shape), generator=torch.Generator().manual_seed(b))
            with torch.inference_mode():
                want = net.forward_features(x)
            got = run(x)
            assert got.step == want.step and not got.skips
            torch.testing.assert_close(got.x, want.x, atol=1e-4, rtol=1e-4)
        assert len(run._compiled) == 2 and run.compile_seconds > 0


def test_compiled_runner_is_reused_until_the_weights_change():
    """A second run of the same network compiles nothing (its compile time is 0); a
    weight changed in place gives a new runner, whose output follows the new weights."""
    pytest.importorskip("openvino")
    net = _net()
    vol = np.random.default_rng(0).random((20, 20, 20), np.float32)
    cfg = InferenceConfig(patch_size=(16, 16, 16), mc_samples=2, mc_batch_size=2)
    first = mc_sliding_window(vol, net, cfg, device="cpu", backend="openvino")
    again = mc_sliding_window(vol, net, cfg, device="cpu", backend="openvino")
    assert first.timings_s["backend_compile"] > 0
    assert again.timings_s["backend_compile"] == 0
    cpu = torch.device("cpu")
    runner = feature_runner(net, "openvino", cpu)
    assert feature_runner(net, "openvino", cpu) is runner
    with torch.no_grad():
        net.head.conv.weight.mul_(1.0)  # in place: same values, new version
        next(net.parameters()).add_(0.5)
    fresh = feature_runner(net, "openvino", cpu)
    assert fresh is not runner
    x = torch.rand((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        want = net.forward_features(x).x
    torch.testing.assert_close(fresh(x).x, want, atol=1e-4, rtol=1e-4)


def test_refusals_name_the_reason(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(ModelError, match="Unknown inference back end"):
        feature_runner(_net(), "tensorrt", cpu)
    with pytest.raises(ModelError, match="runs on the CPU"):
        feature_runner(_net(), "openvino", torch.device("cuda"))
    with pytest.raises(InputError, match="Unknown back end"):
        SegmentOptions(backend="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed
    with pytest.raises(ModelError, match="needs the openvino package"):
        feature_runner(_net(), "openvino", cpu)


def test_openvino_refuses_a_network_with_dropout_inside():
    pytest.importorskip("openvino")
    with pytest.raises(ModelError, match="head"):
        feature_runner(_net("all"), "openvino", torch.device("cpu"))
