"""Cost and effect of sub-voxel shifted samples (``InferenceConfig.shifted_samples``).

Run on demand; not a test. Segments the demo phantom (``phantoms.demo``, the case of
``ctmusclebone demo``) with a model's card as it is and with ``shifted_samples`` flipped,
each run in its own process (so each peak RSS is that mode's own), the modes alternated
``--repeats`` times, and prints per mode: the median wall time of ``predict``, the
ratio of the medians, the peak RSS, and the Dice of every structure against the
phantom's truth labels (the thin ones listed first)::

    python benchmarks/bench_shifted_samples.py --repeats 3 --out shifted.json

Wall times are on whatever machine runs it (the machine and its cores are printed); the
Dice does not depend on the repeat (fixed seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

THIN = ("gracilis_left", "gracilis_right", "gluteus_minimus_left", "gluteus_minimus_right",
        "sartorius_left", "sartorius_right")


def one_run(model: str, shifted: bool, threads: int) -> dict:
    """Segment the demo phantom once; time, peak RSS and Dice per structure."""
    import resource
    import time
    from dataclasses import replace

    import torch
    from CTMuscleBoneLib.phantoms import make_phantom
    from CTMuscleBoneLib.phantoms.demo import demo_spec
    from CTMuscleBoneLib.segmentation.evaluate import dice
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.registry import load_model
    from CTMuscleBoneLib.segmentation.training.datasets import reference_for

    if threads:
        torch.set_num_threads(threads)
    card, net = load_model(model)
    phantom = make_phantom(demo_spec())
    ref, _ = reference_for(phantom.labels, card.structure_keys)
    cfg = replace(card.inference, shifted_samples=shifted, mirror_samples=False)
    t = time.perf_counter()
    res = predict(phantom.ct, net, card.input, cfg, card.labels, device="cpu")
    seconds = time.perf_counter() - t
    lab = res.label_map.array
    scores = {}
    for v, key in ref.structures.items():
        truth = ref.array == v
        if truth.any():
            scores[key] = round(float(dice(lab == v, truth)), 4)
    return {"seconds": seconds,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "dice": scores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.model, args.child == "on", args.threads)))
        return 0
    from CTMuscleBoneLib.errors import CTMuscleBoneError
    from CTMuscleBoneLib.segmentation.registry import load_model

    try:
        card, _ = load_model(args.model)
    except CTMuscleBoneError as e:
        print(f"bench_shifted_samples: error: {e}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "CTMuscleBone")}
    for _ in range(max(1, args.repeats)):
        for mode in ("off", "on"):
            p = subprocess.run([sys.executable, __file__, "--model", args.model, "--threads",
                                str(args.threads), "--child", mode],
                               capture_output=True, text=True, env=env, check=False)
            if p.returncode:
                print(p.stderr, file=sys.stderr)
                return 1
            runs[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(f"shifted {mode}: {runs[mode][-1]['seconds']:.1f} s", flush=True)
    summary = {m: {"median_s": statistics.median(r["seconds"] for r in rs),
                   "peak_rss_gb": max(r["peak_rss_gb"] for r in rs),
                   "dice": rs[0]["dice"]} for m, rs in runs.items()}
    ratio = summary["on"]["median_s"] / summary["off"]["median_s"]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"model {card.name} {card.version}, T = {card.inference.mc_samples} "
          f"(synthetic demo model, demo phantom)")
    for m in ("off", "on"):
        s = summary[m]
        print(f"shifted_samples {m:>3}: median {s['median_s']:.1f} s, peak RSS "
              f"{s['peak_rss_gb']:.2f} GB")
    print(f"ratio on / off: {ratio:.2f}")
    keys = [k for k in THIN if k in summary["off"]["dice"]] + sorted(
        k for k in summary["off"]["dice"] if k not in THIN)
    print(f"{'structure':34}{'Dice off':>10}{'Dice on':>10}")
    for k in keys:
        print(f"{k:34}{summary['off']['dice'][k]:10.3f}{summary['on']['dice'].get(k, 0):10.3f}")
    mean = {m: statistics.mean(summary[m]["dice"].values()) for m in ("off", "on")}
    print(f"{'mean':34}{mean['off']:10.3f}{mean['on']:10.3f}")
    if args.out:
        from CTMuscleBoneLib.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps({
            "machine": platform.platform(), "cores": os.cpu_count(),
            "model": card.name, "version": card.version, "runs": runs, "summary": summary,
            "ratio_on_off": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
