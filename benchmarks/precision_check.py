"""Labels of a trained model in bf16 / fp16 autocast against float32 (run on demand).

The performance goal allows reduced precision only where the labels hold (Dice >= 0.999
per structure against float32). This script segments one held-out phantom of the
demo model's generator (seed 30003, hip region, 3 mm CT) with the model at float32 and
at each requested precision (same seed), and prints the Dice of every structure, the
lowest, and the voxels that differ. The same seed gives the same dropout masks on a CPU;
on a GPU the fused dropout kernel may draw another mask for another dtype, so there
``--samples 1`` (no dropout: arithmetic alone) and ``--reseeded`` (float32 with another
seed: the Monte-Carlo noise floor) separate precision from sampling. On a CPU without native bf16
the bf16 run is emulated and slow (measured 23 x the float32 time); on a GPU pass
``--device cuda``.

    python benchmarks/precision_check.py --samples 2 --out /tmp/precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic")
    ap.add_argument("--precision", nargs="*", default=["bfloat16"],
                    choices=["bfloat16", "float16"],
                    help="bfloat16 and / or float16")
    ap.add_argument("--samples", type=int, default=10, help="Monte-Carlo samples T")
    ap.add_argument("--seed", type=int, default=30003, help="phantom seed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--reseeded", action="store_true",
                    help="also float32 with another dropout seed: the Monte-Carlo noise "
                    "floor the reduced precisions are read against")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from CTMuscleBoneLib.errors import CTMuscleBoneError

    try:
        return _run(args)
    except CTMuscleBoneError as e:  # a bad model, sample count or precision: no traceback
        print(f"precision_check: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """Segment the phantom at every requested precision; print and write the table."""

    import torch
    from CTMuscleBoneLib.phantoms import make_phantom
    from CTMuscleBoneLib.segmentation.evaluate import dice
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.registry import load_model
    from CTMuscleBoneLib.segmentation.training.make_demo_model import phantom_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    card, net = load_model(args.model)
    spec = replace(phantom_spec(args.seed, "patient_like", "hip", (1.0, 3.5)), spacing_mm=3.0)
    ct = make_phantom(spec).ct
    row: dict[str, object] = {"model": card.name, "phantom_seed": args.seed,
                              "mc_samples": args.samples, "device": args.device,
                              "torch": torch.__version__}
    labels: dict[str, np.ndarray] = {}
    structures: dict[int, str] = {}
    # (name, precision, dropout-seed offset); the first is the reference
    runs = [("float32", "float32", 0), *((p, p, 0) for p in args.precision)] + (
        [("float32_reseeded", "float32", 1)] if args.reseeded else [])
    for prec, precision, seed_offset in runs:
        cfg = replace(card.inference, precision=precision, mc_samples=args.samples,
                      seed=card.inference.seed + seed_offset)
        t = time.perf_counter()
        lm = predict(ct, net, card.input, cfg, card.labels, device=args.device).label_map
        row[f"{prec}_s"] = round(time.perf_counter() - t, 1)
        labels[prec], structures = lm.array, lm.structures
        print(f"{prec}: {row[f'{prec}_s']} s", flush=True)
    reference = {key: labels["float32"] == v for v, key in structures.items()}
    for prec, _, _ in runs[1:]:
        pairs = {key: dice(labels[prec] == v, reference[key])
                 for v, key in structures.items()}
        dice_by = {key: round(d, 4) for key, d in pairs.items() if d is not None}
        low = min(dice_by, key=dice_by.get)
        row[prec] = {"dice_min": dice_by[low], "dice_min_structure": low,
                     "dice_mean": round(float(np.mean(list(dice_by.values()))), 4),
                     "voxels_differing": int((labels["float32"] != labels[prec]).sum()),
                     "voxels": int(labels["float32"].size), "dice": dice_by,
                     "structure_voxels_float32": {key: int(reference[key].sum())
                                                  for key in dice_by},
                     "holds": dice_by[low] >= 0.999}
        print(f"{prec}: Dice against float32 min {dice_by[low]} ({low}), mean "
              f"{row[prec]['dice_mean']}, {row[prec]['voxels_differing']} of "
              f"{row[prec]['voxels']} voxels differ; holds (>= 0.999): {row[prec]['holds']}")
    if args.out:
        args.out.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
