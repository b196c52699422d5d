"""Would a finer in-plane model grid lift the thin muscles? A side-by-side check.

Run on demand; not a test. The demo model runs on a 3 mm grid. Running the same weights
on a finer in-plane grid samples thin structures (gracilis, gluteus minimus) more
densely, but shows the network every object larger than it learnt it (2.7 mm: 1.11 x)
and costs (3 / s)^2 of the in-plane work. This script measures both effects without
choosing on the phantoms the model card reports:

1. for each in-plane spacing it writes a copy of the model folder whose card differs
   only in ``input.spacing_mm`` (the slice spacing of a 2-D model is kept);
2. it segments calibration phantoms (:func:`.synthetic.mixed_spec`, seeds ``50000..``:
   none of the demo model's training (20000..), held-out (30000..) or uncertainty-study
   (40000..) seeds; 1-3.5 mm, every orientation) with every copy through
   :func:`CTMuscleBoneLib.segmentation.uncertainty_study.run_study`, the steps of
   ``ctmusclebone segment`` (Monte-Carlo inference with the card's settings, vertebra
   numbering), each phantom built once and run through every copy;
3. it prints the mean Dice per structure and per case for each spacing, the failures
   (Dice < 0.8) and the seconds each copy took (building the phantoms included); the
   JSON adds the lowest Dice per structure and the failure-detection AUROC of the
   review score.

::

    python benchmarks/model_spacing_check.py --spacings 3.0 2.7 --phantoms 6 \\
        --workers 2 --out spacing.json

About 5 minutes per phantom and spacing on one CPU thread with the bundled model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

#: First calibration seed (none of the demo model's training, held-out or study seeds).
FIRST_SEED = 50000


def spacing_copy(model_dir: Path, in_plane_mm: float, parent: Path) -> Path:
    """A copy of ``model_dir`` whose card runs the weights on an in-plane grid of
    ``in_plane_mm`` (the slice axis of a 2-D model keeps its spacing)."""
    from CTMuscleBoneLib.segmentation.model_card import CARD_FILE, ModelCard

    card = ModelCard.load(model_dir)
    out = parent / f"inplane-{in_plane_mm:g}mm"
    shutil.copytree(model_dir, out)
    data = json.loads((out / CARD_FILE).read_text(encoding="utf-8"))
    spacing = list(data["input"]["spacing_mm"])
    axes = range(3) if card.architecture.spatial_dims == 3 else range(2)
    for a in axes:  # LPS axes; a 2-D model's slices run along the third
        spacing[a] = float(in_plane_mm)
    data["input"]["spacing_mm"] = spacing
    (out / CARD_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return out


def _part(model_dirs: list[str], cases: list, threads: int) -> list:
    """One process's share (top level: it is pickled)."""
    import torch
    from CTMuscleBoneLib.segmentation.uncertainty_study import run_study

    torch.set_num_threads(max(1, threads))
    out = []
    for d in model_dirs:  # one copy at a time: its seconds are its own
        t = time.perf_counter()
        (ev,) = run_study([d], cases, device="cpu")
        out.append((ev, time.perf_counter() - t))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic")
    ap.add_argument("--spacings", type=float, nargs="+", default=[3.0, 2.7],
                    help="in-plane model spacings to compare (mm)")
    ap.add_argument("--phantoms", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=FIRST_SEED)
    ap.add_argument("--workers", type=int, default=1, help="processes (1 thread each)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)
    from CTMuscleBoneLib.errors import CTMuscleBoneError
    from CTMuscleBoneLib.segmentation.evaluate import failure_detection_auroc
    from CTMuscleBoneLib.segmentation.registry import find_model
    from CTMuscleBoneLib.segmentation.training.make_demo_model import phantom_spec

    if args.phantoms < 1 or any(s <= 0 for s in args.spacings):
        print("model_spacing_check: error: --phantoms must be >= 1 and every spacing > 0.",
              file=sys.stderr)
        return 2
    try:
        model_dir = (Path(args.model) if (Path(args.model) / "card.json").is_file()
                     else find_model(args.model))
    except CTMuscleBoneError as e:
        print(f"model_spacing_check: error: {e}", file=sys.stderr)
        return 2
    cases = [(f"seed{args.first_seed + i}", "mixed",
              phantom_spec(args.first_seed + i, "mixed", "full", (1.0, 3.5)))
             for i in range(args.phantoms)]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [str(spacing_copy(model_dir, s, Path(tmp))) for s in args.spacings]
        workers = max(1, min(args.workers, len(cases)))
        parts = [cases[i::workers] for i in range(workers)]
        if workers == 1:
            results = [_part(dirs, parts[0], 1)]
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                results = list(pool.map(_part, [dirs] * workers, parts, [1] * workers))
    report: dict[str, dict] = {}
    print(f"\nmodel {args.model} (synthetic demo model), {args.phantoms} calibration "
          f"phantoms, seeds {args.first_seed}..; in-plane spacing (mm): {args.spacings}")
    for k, s in enumerate(args.spacings):
        scores = [sc for part in results for sc in part[k][0].scores]
        seconds = sum(part[k][1] for part in results)
        by_structure: dict[str, list[float]] = {}
        by_case: dict[str, list[float]] = {}
        for sc in scores:
            if sc.dice is None:
                continue
            by_structure.setdefault(sc.structure, []).append(sc.dice)
            by_case.setdefault(sc.case, []).append(sc.dice)
        auroc = failure_detection_auroc(scores)
        report[f"{s:g}"] = {
            "seconds_total": seconds,
            "dice_mean": {k2: float(np.mean(v)) for k2, v in by_structure.items()},
            "dice_min": {k2: float(np.min(v)) for k2, v in by_structure.items()},
            "case_mean": {k2: float(np.mean(v)) for k2, v in by_case.items()},
            "failures": int(sum(sc.dice is not None and sc.dice < 0.8 for sc in scores)),
            "auroc": auroc}
    keys = list(report[f"{args.spacings[0]:g}"]["dice_mean"])
    head = "".join(f"{s:>10g}" for s in args.spacings)
    print(f"{'structure (mean Dice)':36}{head}")
    for key in keys:
        row = "".join(f"{report[f'{s:g}']['dice_mean'].get(key, float('nan')):10.4f}"
                      for s in args.spacings)
        print(f"{key:36}{row}")
    for label, field in (("mean over structures", "dice_mean"),):
        row = "".join(f"{np.mean(list(report[f'{s:g}'][field].values())):10.4f}"
                      for s in args.spacings)
        print(f"{label:36}{row}")
    for case in report[f"{args.spacings[0]:g}"]["case_mean"]:
        row = "".join(f"{report[f'{s:g}']['case_mean'][case]:10.4f}" for s in args.spacings)
        print(f"{'case ' + case:36}{row}")
    print(f"{'failures (Dice < 0.8)':36}"
          + "".join(f"{report[f'{s:g}']['failures']:10d}" for s in args.spacings))
    print(f"{'seconds (all phantoms, 1 thread)':36}"
          + "".join(f"{report[f'{s:g}']['seconds_total']:10.0f}" for s in args.spacings))
    if args.out:
        from CTMuscleBoneLib.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps({
            "model": args.model, "phantoms": args.phantoms, "first_seed": args.first_seed,
            "spacings_mm": args.spacings, "results": report}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
