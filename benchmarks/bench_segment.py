"""Benchmark of Bayesian U-Net segmentation (run on demand; not a test).

Builds a synthetic CT (default 512 x 512 x 300 voxels at 0.8 x 0.8 x 1.0 mm: a body
ellipse of muscle and fat with two bone cylinders, noise), a network of the demo size
(channels 8-16-32-64, 18 classes; or the installed demo model when one is found) and
measures, in one run:

* end-to-end ``predict`` with one deterministic pass (mc_samples = 1);
* end-to-end ``predict`` with Monte-Carlo dropout, T = 10 (median of ``--repeats``);
* the naive way: T independent full sliding-window passes with MONAI
  ``sliding_window_inference`` defaults (overlap 0.25, constant blending,
  sw_batch_size 1), dropout active, on the same preprocessed input (network time only,
  plus the running sums needed for the same uncertainty maps);
* ``measure_case`` on the segmentation (muscles, bones uncalibrated): the end-to-end
  time is segment (T = 10) + measure, as ``ctmusclebone analyze`` runs them;
* peak RSS (``resource.getrusage``) after our runs and after the naive run.

For a 2-D model the naive baseline runs MONAI's sliding window on every axial slice.

Goals (2-core CPU): end to end <= 90 s, RSS <= 4 GB, MC(T=10) / deterministic <= 3.

    python benchmarks/bench_segment.py --quick --out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

from CTMuscleBoneLib.errors import InputError  # noqa: E402
from CTMuscleBoneLib.image import CTImage, Geometry  # noqa: E402


def rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_ct(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 seed: int = 0) -> CTImage:
    """Body ellipse (muscle 50 HU, fat -100 HU rim), two bone cylinders (700 HU), noise."""
    rng = np.random.default_rng(seed)
    n0, n1, n2 = shape
    x = (np.arange(n0) - n0 / 2) * spacing[0]
    y = (np.arange(n1) - n1 / 2) * spacing[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    a, b = 0.42 * n0 * spacing[0], 0.32 * n1 * spacing[1]
    r = (xx / a) ** 2 + (yy / b) ** 2
    plane = np.full((n0, n1), -1000, np.int16)
    plane[r <= 1.0] = -100
    plane[r <= 0.75] = 50
    for cx in (-0.45 * a, 0.45 * a):
        plane[(xx - cx) ** 2 + yy**2 <= (0.12 * a) ** 2] = 700
    hu = np.empty(shape, np.int16)
    for k in range(n2):
        hu[:, :, k] = plane + rng.normal(0, 15, (n0, n1)).astype(np.int16)
    geom = Geometry(shape, spacing, (-n0 * spacing[0] / 2, -n1 * spacing[1] / 2, 0.0))
    return CTImage(hu, geom)


def demo_model():
    """The installed demo model, or an untrained network of the demo size."""
    from CTMuscleBoneLib.segmentation.config import InferenceConfig, InputConfig, NetworkConfig
    from CTMuscleBoneLib.segmentation.network import build_network

    try:
        from CTMuscleBoneLib.segmentation.registry import load_model

        card, net = load_model()
        return net, card.input, card.inference, card.labels, f"model '{card.name}'"
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to a random network
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
    import torch

    torch.manual_seed(0)
    from CTMuscleBoneLib.anatomy import keys_in

    keys = keys_in("bone")[:5] + keys_in("muscle")[:12]
    labels = {0: "background", **{i + 1: k for i, k in enumerate(keys)}}
    cfg = NetworkConfig(out_channels=len(labels), channels=(8, 16, 32, 64), strides=(2, 2, 2))
    net = build_network(cfg).eval()
    return net, InputConfig(), InferenceConfig(), labels, f"untrained demo-size net ({reason})"


def naive_mc(x: np.ndarray, net, patch, T: int) -> float:
    """T full MONAI sliding-window passes with dropout on; returns seconds."""
    import torch
    from CTMuscleBoneLib.segmentation.uncertainty import entropy
    from monai.inferers import sliding_window_inference

    xt = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    net.eval()
    net.set_mc_dropout(True)
    t0 = time.perf_counter()
    sum_p = sum_p2 = sum_h = None

    def one_pass() -> torch.Tensor:
        if net.config.spatial_dims == 3:
            return sliding_window_inference(xt, tuple(patch), 1, net)
        # 2-D model: MONAI's sliding window over every axial slice (model axis 2)
        return torch.stack([sliding_window_inference(xt[..., k], tuple(patch), 1, net)
                            for k in range(xt.shape[-1])], dim=-1)

    with torch.inference_mode():
        for _ in range(T):
            p = torch.softmax(one_pass(), 1)[0]
            h = entropy(p, axis=0)
            p2 = (p * p).sum(0)
            if sum_p is None:
                sum_p, sum_p2, sum_h = p, p2, h
            else:
                sum_p += p
                sum_p2 += p2
                sum_h += h
            del p
    mean_p = sum_p / T
    _var = (sum_p2 / T - (mean_p**2).sum(0)) / mean_p.shape[0]
    _mi = entropy(mean_p, axis=0) - sum_h / T
    net.set_mc_dropout(False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 x 256 x 100 volume")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--placement", default=None,
                    help="override dropout placement (all|decoder|bottleneck_decoder|head)")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import dataclasses

    import torch
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.network import build_network
    from CTMuscleBoneLib.segmentation.preprocess import prepare_input

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (256, 256, 100) if args.quick else (512, 512, 300)
    ct = synthetic_ct(shape, (0.8, 0.8, 1.0))
    net, input_cfg, inf_cfg, labels, model_desc = demo_model()
    if args.placement:
        state = net.state_dict()
        net = build_network(dataclasses.replace(net.config, dropout_placement=args.placement))
        net.load_state_dict(state)
        net.eval()
    T = args.samples
    det_cfg = dataclasses.replace(inf_cfg, mc_samples=1)
    mc_cfg = dataclasses.replace(inf_cfg, mc_samples=T)
    rss0 = rss_gb()

    from CTMuscleBoneLib.analysis import MeasureOptions, measure_case

    det = [predict(ct, net, input_cfg, det_cfg, labels, device="cpu").timings_s
           for _ in range(args.repeats)]
    mc, measure_s, end_to_end_s = [], [], []
    measure_refused = ""
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = predict(ct, net, input_cfg, mc_cfg, labels, device="cpu")
        t1 = time.perf_counter()
        try:
            measure_case(ct, res.label_map, MeasureOptions(calibration="none"))
        except InputError as exc:  # e.g. an untrained net's map refused as implausible
            measure_refused = str(exc).splitlines()[0][:160]
        t2 = time.perf_counter()
        mc.append(res.timings_s)
        measure_s.append(t2 - t1)
        end_to_end_s.append(t2 - t0)
        del res
    rss_ours = rss_gb()

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    row = {
        "volume": "x".join(map(str, shape)), "spacing_mm": [0.8, 0.8, 1.0],
        "model": model_desc, "dropout_placement": net.config.dropout_placement,
        "channels": list(net.config.channels), "classes": net.config.out_channels,
        "model_spacing_mm": list(input_cfg.spacing_mm), "patch": list(inf_cfg.patch_size),
        "overlap": inf_cfg.overlap, "mc_samples": T, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or "cpu",
        "det_total_s": med(det, "total"), "det_network_s": med(det, "network"),
        "mc_total_s": med(mc, "total"), "mc_network_s": med(mc, "network"),
        "mc_preprocess_s": med(mc, "preprocess"), "mc_to_ct_grid_s": med(mc, "to_ct_grid"),
        "measure_s": statistics.median(measure_s),
        "end_to_end_segment_measure_s": statistics.median(end_to_end_s),
        "rss_before_gb": rss0, "peak_rss_ours_gb": rss_ours,
    }
    if measure_refused:
        row["measure_refused"] = measure_refused
    row["ratio_mc_over_det_network"] = row["mc_network_s"] / row["det_network_s"]
    row["ratio_mc_over_det_total"] = row["mc_total_s"] / row["det_total_s"]
    if not args.no_naive:
        x, _ = prepare_input(ct, input_cfg)
        row["naive_network_s"] = naive_mc(x, net, inf_cfg.patch_size, T)
        row["speedup_vs_naive_network"] = row["naive_network_s"] / row["mc_network_s"]
        row["peak_rss_after_naive_gb"] = rss_gb()
    row["goal_end_to_end_90s"] = row["end_to_end_segment_measure_s"] <= 90
    row["goal_rss_4gb"] = row["peak_rss_ours_gb"] <= 4
    row["goal_ratio_3x"] = row["ratio_mc_over_det_network"] <= 3

    width = max(len(k) for k in row)
    for k, v in row.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
