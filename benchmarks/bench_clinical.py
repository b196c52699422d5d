"""Clinical-size benchmark: a 3-D Bayesian U-Net of nnU-Net size beside the nnU-Net predictor.

Run on demand; never timed in tests. One command runs everything for one model spacing,
prints a table and writes JSON:

    python benchmarks/bench_clinical.py --spacing 3.0 --out bench_3mm.json
    python benchmarks/bench_clinical.py --spacing 1.5 --repeats 1 --out bench_1p5mm.json
    python benchmarks/bench_clinical.py --quick            # small volume, for development
    python benchmarks/bench_clinical.py --our-backends torch,openvino   # ours with each

What it builds and measures
---------------------------
* CT: the synthetic CT of ``bench_segment.py`` (512 x 512 x 300 voxels at
  0.8 x 0.8 x 1.0 mm; ``--quick``: 256 x 256 x 100) and a reference label map on it
  (two femur cylinders, eight muscle sectors of the muscle ring) for the measure step.
* Our model: :class:`BayesianUNet` of nnU-Net 3d_fullres size: 6 stages with
  32-64-128-256-320-320 channels, 2 convolutions (3^3, instance norm, leaky ReLU) per
  stage, 65 output classes (background + the anatomy table's 10 bones and 54 muscles),
  dropout p = 0.5 at the default placement ``head``, random weights (timing needs no
  trained weights). Patch 128^3 (TotalSegmentator's nnU-Net patch), overlap 0.5 and
  Gaussian blending (nnU-Net's defaults), T = ``--samples`` (10).
* Ours end to end = ``predict`` (resample to the model grid, sliding window with T
  Monte-Carlo samples, uncertainty maps, labels and maps back on the CT grid) +
  ``measure_case`` (muscles; bones with ``calibration='none'``). A random network's
  labels are noise, a pathological input for every step after the network (65
  fragmented structures spanning the whole body); so the network runs for real and its
  mean softmax is then replaced by one shaped like a trained model's (0.9 on the
  reference label's channel; :func:`stand_in_trained_output`), and the measure step
  runs on the resulting label map. Median of ``--repeats`` runs; one deterministic pass
  (T = 1); the MC / deterministic ratio; peak RSS; where the time goes.
* The nnU-Net predictor (``nnunetv2.inference.predict_from_raw_data.nnUNetPredictor``,
  the engine TotalSegmentator runs) with ``dynamic_network_architectures``'
  ``PlainConvUNet`` of the same size (strided-convolution down-sampling, nnU-Net's
  choice), same patch, its default sliding window (step 0.5, Gaussian), one pass with
  test-time mirroring off and on, on the same model-grid input. Timed: its sliding
  window + argmax (its preprocessing and export are not included, so its number is a
  lower bound of its end-to-end time and the ratio ours / nnU-Net is conservative).
* CPU back ends on one window of our network (``--backend-window``, 64^3 by default:
  emulated bf16 on a CPU without native bf16 is slow; deterministic part + head):
  torch eager fp32, eager bf16 autocast, ``torch.compile``, ONNX Runtime, OpenVINO
  (each only when installed); bf16 labels against fp32 labels (Dice).
* ``--our-backends torch,openvino``: ours end to end with each back end of the core
  (``predict(..., backend=...)``, :mod:`CTMuscleBoneLib.segmentation.backends`) in the
  same run, with the ratios of the first to the others.

Install (benchmark only; not a runtime dependency). Install torch first so that pip
keeps it, then the ``bench`` extra with the same torch pinned::

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install -e ".[segmentation,bench]" "torch==2.13.0"
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_segment import rss_gb, synthetic_ct  # noqa: E402
from CTMuscleBoneLib.anatomy import BY_KEY, keys_in  # noqa: E402
from CTMuscleBoneLib.image import CTImage, LabelMap  # noqa: E402

#: nnU-Net 3d_fullres shape of TotalSegmentator-size models (6 stages, 32..320 features,
#: 2 convolutions per stage; Isensee et al., Nat Methods 18:203, 2021; nnU-Net's planner
#: caps features at 320 for 3-D).
CHANNELS = (32, 64, 128, 256, 320, 320)
#: 128^3 patch: the nnU-Net patch of TotalSegmentator's 1.5 mm model (its plans file).
PATCH = (128, 128, 128)
MUSCLE_SECTORS = ("gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
                  "gluteus_medius_right", "iliopsoas_left", "iliopsoas_right",
                  "autochthon_left", "autochthon_right")


def class_labels() -> dict[int, str]:
    """Output channel -> anatomy key: background + every bone and muscle (65 channels)."""
    keys = keys_in("bone") + keys_in("muscle")
    return {0: "background", **{i + 1: k for i, k in enumerate(keys)}}


def reference_labels(ct: CTImage) -> LabelMap:
    """Label map of the synthetic CT: femurs on the bone cylinders, muscle sectors.

    Bone (HU > 400) left / right of the midline -> femur_left / femur_right (LPS: +x is
    the patient's left); the muscle ring (0 < HU < 400, noise aside) is cut into eight
    angular sectors, one muscle each. Same in every slice.
    """
    plane = ct.hu[:, :, 0].astype(np.float32)
    n0, n1 = plane.shape
    x = (np.arange(n0)[:, None] - n0 / 2) + np.zeros((1, n1))
    y = (np.arange(n1)[None, :] - n1 / 2) + np.zeros((n0, 1))
    sector = (((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 8).astype(int)) % 8
    lab2 = np.zeros((n0, n1), np.uint8)
    muscle = (plane > 0) & (plane < 400)
    for i, key in enumerate(MUSCLE_SECTORS):
        lab2[muscle & (sector == i)] = BY_KEY[key].label_value
    lab2[(plane > 400) & (x > 0)] = BY_KEY["femur_left"].label_value
    lab2[(plane > 400) & (x < 0)] = BY_KEY["femur_right"].label_value
    lab = np.ascontiguousarray(np.broadcast_to(lab2[:, :, None], ct.hu.shape))
    keys = (*MUSCLE_SECTORS, "femur_left", "femur_right")
    return LabelMap(lab, ct.geometry, {BY_KEY[k].label_value: k for k in keys},
                    source="synthetic reference")


def stand_in_trained_output(ref: LabelMap, labels: dict[int, str]):
    """Context manager: ``predict`` sees the reference labels as the network's output.

    The network runs for real (all its time is counted); afterwards its mean softmax
    (random weights: noise labels, a pathological case for every step after it) is
    replaced by 0.9 on the reference label's channel (nearest neighbour on the model
    grid) and 0.1 / (C - 1) on the others, so that labels back to the CT grid, the
    largest-component clean-up and the review list work on a segmentation shaped like
    a trained model's. The uncertainty maps stay the network's.
    """
    import contextlib

    from CTMuscleBoneLib.segmentation import inference
    from CTMuscleBoneLib.segmentation.preprocess import labels_to_grid

    real = inference.mc_sliding_window
    channel_of = np.zeros(256, np.int64)
    for ch, key in labels.items():
        if key in BY_KEY:
            channel_of[BY_KEY[key].label_value] = ch

    def wrapped(volume, model, cfg, **kw):
        out = real(volume, model, cfg, **kw)
        grid = wrapped.grid
        ch = channel_of[labels_to_grid(ref, grid)]
        p = out.mean_probability
        if isinstance(p, np.ndarray):
            p.fill(0.1 / (p.shape[0] - 1))
            np.put_along_axis(p, ch[None], 0.9, axis=0)
        else:  # a tensor on the GPU
            import torch

            p.fill_(0.1 / (p.shape[0] - 1))
            p.scatter_(0, torch.as_tensor(ch[None], device=p.device), 0.9)
        return out

    real_prepare = inference.prepare_input

    def prepare(ct, cfg):
        x, grid = real_prepare(ct, cfg)
        wrapped.grid = grid
        return x, grid

    @contextlib.contextmanager
    def ctx():
        inference.mc_sliding_window, inference.prepare_input = wrapped, prepare
        try:
            yield
        finally:
            inference.mc_sliding_window, inference.prepare_input = real, real_prepare

    return ctx()


def our_network(n_classes: int, placement: str = "head"):
    """Our Bayesian U-Net of nnU-Net size, random weights (seed 0), eval mode."""
    import torch
    from CTMuscleBoneLib.segmentation.config import NetworkConfig
    from CTMuscleBoneLib.segmentation.network import build_network

    torch.manual_seed(0)
    cfg = NetworkConfig(out_channels=n_classes, channels=CHANNELS, strides=(2,) * 5,
                        norm="instance", act="leakyrelu", dropout_p=0.5,
                        dropout_placement=placement)
    return build_network(cfg).eval()


def nnunet_network(n_classes: int):
    """nnU-Net's PlainConvUNet of the same size (3d_fullres defaults), random weights."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    n = len(CHANNELS)
    return PlainConvUNet(
        input_channels=1, n_stages=n, features_per_stage=list(CHANNELS),
        conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
        num_classes=n_classes, n_conv_per_stage_decoder=[2] * (n - 1), conv_bias=True,
        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False).eval()


def run_nnunet(x: np.ndarray, n_classes: int, mirroring: bool, device: str = "cpu"
               ) -> dict[str, float]:
    """nnUNetPredictor sliding window (step 0.5, Gaussian) + argmax on the model grid.

    On a GPU everything stays on the device (``perform_everything_on_device``, nnU-Net's
    default there) and bf16/fp16 autocast is nnU-Net's own (it runs under
    ``torch.autocast`` on CUDA)."""
    from types import SimpleNamespace

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    dev = torch.device(device)
    net = nnunet_network(n_classes).to(dev)
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                           perform_everything_on_device=dev.type == "cuda", device=dev,
                           allow_tqdm=False)
    # manual_initialization needs plans files; these are the fields the sliding window reads
    pred.network = net
    pred.list_of_parameters = [net.state_dict()]
    pred.configuration_manager = SimpleNamespace(patch_size=list(PATCH))
    pred.label_manager = SimpleNamespace(num_segmentation_heads=n_classes)
    pred.allowed_mirroring_axes = (0, 1, 2)
    t0 = time.perf_counter()
    logits = pred.predict_logits_from_preprocessed_data(torch.from_numpy(x)[None])
    _labels = logits.argmax(0)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    del logits, _labels, pred, net
    gc.collect()
    return {"seconds": seconds, "rss_gb": rss_gb()}


def conv_flops(net, patch: tuple[int, ...], device: str = "cpu") -> dict[str, float]:
    """Floating-point operations (2 per multiply-add) of one window through the network.

    Counted with forward hooks on every convolution and transposed convolution of one
    deterministic pass of a ``patch`` window: 2 x C_in/groups x prod(kernel) x C_out x
    (output voxels; input voxels for a transposed convolution). Normalisation,
    activation, softmax and blending are not counted (a small share).

    Returns
    -------
    dict with ``deterministic`` (everything up to the first dropout layer) and
    ``head_per_sample`` (the 1x1 output convolution) FLOPs per window.
    """
    import torch

    total = {"all": 0.0, "head": 0.0}
    head = net.head_weights()[0]

    def hook(mod, inp, out):
        k = float(np.prod(mod.kernel_size))
        c_in = mod.in_channels / mod.groups
        if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd):
            n = float(np.prod(inp[0].shape[2:])) * inp[0].shape[0]
        else:
            n = float(np.prod(out.shape[2:])) * out.shape[0]
        f = 2.0 * c_in * k * mod.out_channels * n
        total["all"] += f
        if mod.weight is head:
            total["head"] += f

    hooks = [m.register_forward_hook(hook) for m in net.modules()
             if isinstance(m, torch.nn.modules.conv._ConvNd)]
    try:
        with torch.inference_mode():
            net.to(device)(torch.zeros((1, 1, *patch), device=device))
    finally:
        for h in hooks:
            h.remove()
    return {"deterministic": total["all"] - total["head"], "head_per_sample": total["head"]}


#: Dense peak rates of the GPUs this benchmark reports against, FLOP/s (NVIDIA H100 /
#: H200 SXM datasheets: TF32 tensor 494.7 T, BF16 tensor 989.4 T, FP32 66.9 T; dense).
GPU_PEAK_FLOPS = {"bf16_tensor": 989.4e12, "tf32_tensor": 494.7e12, "fp32": 66.9e12}


def window_backends(net, n_classes: int, which: list[str],
                    window: tuple[int, int, int]) -> dict[str, object]:
    """Seconds for one window (deterministic pass + head) per CPU back end."""
    import tempfile

    import torch

    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, *window), np.float32))
    out: dict[str, object] = {"window": "x".join(map(str, window))}
    net.set_mc_dropout(False)

    def timed(fn, n=2) -> float:
        fn()  # warm-up (compilation, allocation)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    with torch.inference_mode():
        ref = net(x)
        ref_lab = ref.argmax(1)
        out["eager_fp32_s"] = timed(lambda: net(x))
        if "bf16" in which:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = net(x).float()
            out["eager_bf16_s"] = timed(lambda: _autocast_run(net, x))
            out["bf16_label_dice_vs_fp32"] = _mean_dice(y.argmax(1), ref_lab, n_classes)
    if "compile" in which:
        try:
            cnet = torch.compile(net)
            with torch.inference_mode():
                t0 = time.perf_counter()
                y = cnet(x)  # the first call compiles
                out["compile_first_call_s"] = time.perf_counter() - t0
                out["compile_label_dice_vs_fp32"] = _mean_dice(y.argmax(1), ref_lab, n_classes)
                out["compile_s"] = timed(lambda: cnet(x))
        except Exception as exc:  # noqa: BLE001 - report, do not abort the benchmark
            out["compile_error"] = str(exc).splitlines()[0][:120]
    onnx_path = Path(tempfile.mkdtemp()) / "unet.onnx"
    if {"onnxruntime", "openvino"} & set(which):
        try:
            torch.onnx.export(net, (x,), str(onnx_path), input_names=["x"],
                              output_names=["y"], opset_version=17, dynamo=False)
        except Exception as exc:  # noqa: BLE001
            out["onnx_export_error"] = str(exc).splitlines()[0][:120]
    if "onnxruntime" in which and onnx_path.exists():
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            feed = {"x": x.numpy()}
            out["onnxruntime_s"] = timed(lambda: sess.run(None, feed))
            y = torch.from_numpy(sess.run(None, feed)[0])
            out["onnxruntime_label_agreement"] = float((y.argmax(1) == ref_lab).float().mean())
        except Exception as exc:  # noqa: BLE001
            out["onnxruntime_error"] = str(exc).splitlines()[0][:120]
    if "openvino" in which and onnx_path.exists():
        try:
            import openvino as ov

            core = ov.Core()
            model = core.compile_model(str(onnx_path), "CPU",
                                       {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
            req = model.create_infer_request()
            feed = {0: x.numpy()}
            out["openvino_s"] = timed(lambda: req.infer(feed))
            y = torch.from_numpy(np.asarray(req.infer(feed)[model.output(0)]))
            out["openvino_label_agreement"] = float((y.argmax(1) == ref_lab).float().mean())
            out["openvino_precision"] = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        except Exception as exc:  # noqa: BLE001
            out["openvino_error"] = str(exc).splitlines()[0][:120]
    try:  # nnU-Net's network on the same window (eager fp32), when installed
        nn_net = nnunet_network(n_classes)
        with torch.inference_mode():
            out["nnunet_plainconvunet_eager_fp32_s"] = timed(lambda: nn_net(x))
    except ImportError:
        pass
    base = out["eager_fp32_s"]
    for k in ("eager_bf16_s", "compile_s", "onnxruntime_s", "openvino_s"):
        if k in out:
            out[k.replace("_s", "_speedup")] = base / out[k]
    return out


def _autocast_run(net, x):
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x)


def _mean_dice(a, b, n_classes: int) -> float:
    """Mean Dice over the classes present in either label tensor."""
    dices = []
    for c in range(n_classes):
        pa, pb = a == c, b == c
        s = int(pa.sum()) + int(pb.sum())
        if s:
            dices.append(2 * int((pa & pb).sum()) / s)
    return float(np.mean(dices))


def top_functions(prof: cProfile.Profile, n: int = 12) -> list[str]:
    """The ``n`` functions with the most own time, as text lines."""
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(n)
    lines = [ln.rstrip() for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    root = str(ROOT) + os.sep
    return [ln.replace(root, "") for ln in lines[start:start + n + 1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--spacing", type=float, default=3.0, help="model grid spacing, mm")
    ap.add_argument("--quick", action="store_true", help="256 x 256 x 100 volume")
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours (median)")
    ap.add_argument("--samples", type=int, default=10, help="Monte-Carlo samples T")
    ap.add_argument("--placement", default="head", help="dropout placement")
    ap.add_argument("--mc-batch", type=int, default=2,
                    help="InferenceConfig.mc_batch_size (samples per stochastic batch)")
    ap.add_argument("--mirroring", default="off,on",
                    help="nnU-Net runs: comma list of off/on; empty for none")
    ap.add_argument("--backends", default="bf16,compile,onnxruntime,openvino",
                    help="back ends beside torch eager fp32 (one window); empty for none")
    ap.add_argument("--backends-only", action="store_true",
                    help="only the back-end comparison on one window")
    ap.add_argument("--no-profile", action="store_true",
                    help="do not profile the last run of ours (cProfile)")
    ap.add_argument("--backend-window", type=int, default=64,
                    help="edge of the cubic window the back ends are timed on, voxels")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (ours and nnU-Net)")
    ap.add_argument("--precision", default="float32",
                    help="our network's arithmetic: float32 or bfloat16 (GPU)")
    ap.add_argument("--our-backends", default="torch",
                    help="comma list of back ends ours runs end to end with, in this order "
                    "(torch, openvino; the first one's figures are the headline, the others "
                    "get a __<name> suffix and ratios against the first)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)

    import torch
    from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
    from CTMuscleBoneLib.segmentation.config import InferenceConfig, InputConfig
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.preprocess import prepare_input

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (256, 256, 100) if args.quick else (512, 512, 300)
    ct = synthetic_ct(shape, (0.8, 0.8, 1.0))
    ref = reference_labels(ct)
    labels = class_labels()
    n_classes = len(labels)
    net = our_network(n_classes, args.placement)
    input_cfg = InputConfig(spacing_mm=(args.spacing,) * 3)
    T = args.samples
    mc_cfg = InferenceConfig(patch_size=PATCH, overlap=0.5, blend_mode="gaussian",
                             mc_samples=T, mc_batch_size=min(T, args.mc_batch), seed=0,
                             precision=args.precision)
    cuda = args.device.startswith("cuda")
    det_cfg = dataclasses.replace(mc_cfg, mc_samples=1, mc_batch_size=1)
    opts = MeasureOptions(calibration="none")
    row: dict[str, object] = {
        "volume": "x".join(map(str, shape)), "ct_spacing_mm": [0.8, 0.8, 1.0],
        "model_spacing_mm": args.spacing, "channels": list(CHANNELS), "classes": n_classes,
        "patch": list(PATCH), "overlap": mc_cfg.overlap, "dropout_placement": args.placement,
        "mc_samples": T, "repeats": args.repeats, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu": _cpu_name(),
        "gpu": torch.cuda.get_device_name() if cuda else "none",
        "precision": args.precision,
        "rss_start_gb": rss_gb(),
    }
    print(f"# {row['volume']} CT, model grid {args.spacing} mm, T = {T}, "
          f"{row['torch_threads']} threads, {row['cpu']}", flush=True)
    if args.backends_only:
        which = [b for b in args.backends.split(",") if b]
        row["backends_one_window"] = window_backends(net, n_classes, which,
                                                     (args.backend_window,) * 3)
        return _finish(row, args.out)

    def run(cfg, backend):
        with stand_in_trained_output(ref, labels):
            return predict(ct, net, input_cfg, cfg, labels, device=args.device,
                           backend=backend)

    def run_ours(backend: str, sfx: str, profile: bool) -> None:
        """One deterministic pass and ``repeats`` T-sample runs; keys end in ``sfx``."""
        if cuda:  # the first call of a process pays cuDNN's set-up: warm up, untimed
            run(det_cfg, backend)
        det = run(det_cfg, backend)
        row[f"det_total_s{sfx}"] = det.timings_s["total"]
        row[f"det_network_s{sfx}"] = det.timings_s["network"]
        if "model_grid" not in row:
            from CTMuscleBoneLib.segmentation.inference import window_starts

            row["model_grid"] = "x".join(map(str, det.model_grid.shape))
            row["model_grid_voxels"] = int(np.prod(det.model_grid.shape))
            row["n_windows"] = int(np.prod([len(window_starts(max(n, p), p, mc_cfg.overlap))
                                            for n, p in zip(det.model_grid.shape, PATCH,
                                                            strict=True)]))
        del det
        print(f"[{backend}] deterministic pass {row[f'det_total_s{sfx}']:.1f} s", flush=True)
        runs, measure_s, e2e_s = [], [], []
        prof = None
        for i in range(args.repeats):
            gc.collect()
            if profile and i == args.repeats - 1:
                prof = cProfile.Profile()  # the last run is profiled (overhead: Python calls)
                prof.enable()
            t0 = time.perf_counter()
            res = run(mc_cfg, backend)
            t1 = time.perf_counter()
            measure_case(ct, res.label_map, opts)
            t2 = time.perf_counter()
            if prof is not None:
                prof.disable()
                row[f"profile_top_tottime{sfx}"] = top_functions(prof)
            runs.append(res.timings_s)
            measure_s.append(t2 - t1)
            e2e_s.append(t2 - t0)
            print(f"[{backend}] ours T={T}: segment {t1 - t0:.1f} s + measure {t2 - t1:.1f} s",
                  flush=True)
            del res
        row[f"peak_rss_ours_gb{sfx}"] = rss_gb()
        for key in runs[0]:
            row[f"mc_{key}_s{sfx}"] = statistics.median(r[key] for r in runs)
        row[f"measure_s{sfx}"] = statistics.median(measure_s)
        row[f"ours_end_to_end_s{sfx}"] = statistics.median(e2e_s)
        row[f"ratio_mc_over_det_network{sfx}"] = (row[f"mc_network_s{sfx}"]
                                                  / row[f"det_network_s{sfx}"])
        row[f"ratio_mc_over_det_total{sfx}"] = (row[f"mc_total_s{sfx}"]
                                                / row[f"det_total_s{sfx}"])

    our_backends = [b for b in args.our_backends.split(",") if b] or ["torch"]
    for j, backend in enumerate(our_backends):
        # the first back end gives the unsuffixed keys the goals below are read from
        run_ours(backend, "" if j == 0 else f"__{backend}",
                 profile=not args.no_profile and j == 0)
    for backend in our_backends[1:]:
        row[f"ratio_end_to_end_{our_backends[0]}_over_{backend}"] = (
            row["ours_end_to_end_s"] / row[f"ours_end_to_end_s__{backend}"])
        row[f"ratio_network_{our_backends[0]}_over_{backend}"] = (
            row["mc_network_s"] / row[f"mc_network_s__{backend}"])
        row[f"ratio_deterministic_part_{our_backends[0]}_over_{backend}"] = (
            row["mc_network_deterministic_s"]
            / row[f"mc_network_deterministic_s__{backend}"])

    x, _grid = prepare_input(ct, input_cfg)
    for mode in [m for m in args.mirroring.split(",") if m]:
        try:
            r = run_nnunet(np.ascontiguousarray(x), n_classes, mirroring=(mode == "on"),
                           device=args.device)
        except ImportError as e:  # the bench extra is not installed
            row[f"nnunet_mirroring_{mode}_s"] = f"not run: {e}"
            continue
        row[f"nnunet_mirroring_{mode}_s"] = r["seconds"]
        row[f"peak_rss_after_nnunet_{mode}_gb"] = r["rss_gb"]
        print(f"nnU-Net predictor, mirroring {mode}: {r['seconds']:.1f} s", flush=True)
    del x
    if isinstance(row.get("nnunet_mirroring_off_s"), float):
        row["ratio_ours_e2e_over_nnunet_single_pass"] = (
            row["ours_end_to_end_s"] / row["nnunet_mirroring_off_s"])
        row["goal_ours_le_2x_nnunet"] = row["ratio_ours_e2e_over_nnunet_single_pass"] <= 2
    which = [b for b in args.backends.split(",") if b]
    if which:
        row["backends_one_window"] = window_backends(net, n_classes, which,
                                                     (args.backend_window,) * 3)
    flops = conv_flops(net, PATCH, args.device)
    n_win = row.get("n_windows")
    if n_win:
        if net.pointwise_tail:  # the samples are drawn once per model-grid voxel
            head_flop = (T * flops["head_per_sample"] / float(np.prod(PATCH))
                         * float(row["model_grid_voxels"]))
        else:  # the samples run per window (approximate for placements beyond the head)
            head_flop = n_win * T * flops["head_per_sample"]
        net_flop = n_win * flops["deterministic"] + head_flop
        row["network_tflop"] = net_flop / 1e12
        row["network_tflop_per_s"] = net_flop / row["mc_network_s"] / 1e12
        if cuda:
            for k, peak in GPU_PEAK_FLOPS.items():
                row[f"fraction_of_peak_{k}"] = net_flop / row["mc_network_s"] / peak
            row["goal_gpu_1p5mm_le_10s"] = row["ours_end_to_end_s"] <= 10
    row["goal_mc_le_1p5x_det"] = row["ratio_mc_over_det_network"] <= 1.5
    row["goal_measure_lt_5s"] = row["measure_s"] < 5
    row["goal_rss_le_6gb"] = row["peak_rss_ours_gb"] <= 6

    return _finish(row, args.out)


def _finish(row: dict[str, object], out: Path | None) -> int:
    print_table(row)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def print_table(row: dict[str, object]) -> None:
    """Key / value table; nested dicts and lists indented below their key."""
    width = max(len(k) for k in row)
    for k, v in row.items():
        if isinstance(v, dict):
            print(k)
            for k2, v2 in v.items():
                print(f"  {k2:<{width - 2}}  {v2:.3f}" if isinstance(v2, float)
                      else f"  {k2:<{width - 2}}  {v2}")
        elif isinstance(v, list) and v and isinstance(v[0], str):
            print(k)
            for line in v:
                print(f"  {line}")
        else:
            print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
