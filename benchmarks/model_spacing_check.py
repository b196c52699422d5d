"""Would another model grid lift the thin muscles? A side-by-side check.

Run on demand; not a test. The demo model runs on a 3 mm grid. Running the same weights
on a finer in-plane grid samples thin structures (gracilis, gluteus minimus) more
densely, but shows the network every object larger than it learnt it (2.7 mm: 1.11 x)
and costs up to (3 / s)^2 of the in-plane work. An oblique scan (a tilted gantry) keeps
its tilted axes on the model grid (``input.reorient: nearest_axis``) or is rotated onto
the patient axes (``axis_aligned``: the model then sees the body upright, as in most of
its training slices, at the cost of one more interpolation). This script measures such
grids without choosing on the phantoms the model card reports:

1. for each in-plane spacing and each ``reorient`` mode it writes a copy of the model
   folder whose card differs only in ``input.spacing_mm`` (the slice spacing of a 2-D
   model is kept) and ``input.reorient``;
2. it segments calibration phantoms (:func:`.synthetic.mixed_spec`, seeds ``50000..``:
   none of the demo model's training (20000..), held-out (30000..) or uncertainty-study
   (40000..) seeds; 1-3.5 mm, every orientation) with every copy through
   :func:`CTMuscleBoneLib.segmentation.uncertainty_study.run_study`, the steps of
   ``ctmusclebone segment`` (Monte-Carlo inference with the card's settings, vertebra
   numbering), one copy after the other, each building the phantoms itself (so its
   seconds are its own, building included);
3. it prints the mean Dice per structure and per case for each spacing, the failures
   (Dice < 0.8) and the seconds each copy took (building the phantoms included); the
   JSON adds the lowest Dice per structure and the failure-detection AUROC of the
   review score.

::

    python benchmarks/model_spacing_check.py --spacings 3.0 2.7 --phantoms 6 \\
        --workers 2 --out spacing.json
    python benchmarks/model_spacing_check.py --spacings 3.0 \\
        --reorients nearest_axis axis_aligned --seeds 50007 50008 50010 50011 --workers 2

(Only oblique scans differ between the two ``reorient`` modes: an axis-aligned scan gets
the same grid either way.)

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


def variant_name(in_plane_mm: float, reorient: str) -> str:
    """Key of one grid variant in the report: ``'3'``, ``'2.7'``, ``'3 axis_aligned'``."""
    return f"{in_plane_mm:g}" if reorient == "nearest_axis" else f"{in_plane_mm:g} {reorient}"


def spacing_copy(model_dir: Path, in_plane_mm: float, parent: Path,
                 reorient: str = "nearest_axis") -> Path:
    """A copy of ``model_dir`` whose card runs the weights on an in-plane grid of
    ``in_plane_mm`` (the slice axis of a 2-D model keeps its spacing), reoriented by
    ``reorient``."""
    from CTMuscleBoneLib.segmentation.model_card import CARD_FILE, ModelCard

    card = ModelCard.load(model_dir)  # validates the card before it is copied
    out = parent / f"inplane-{in_plane_mm:g}mm-{reorient}"
    shutil.copytree(model_dir, out)
    data = json.loads((out / CARD_FILE).read_text(encoding="utf-8"))
    spacing = list(data["input"]["spacing_mm"])
    axes = range(3) if card.architecture.spatial_dims == 3 else range(2)
    for a in axes:  # LPS axes; a 2-D model's slices run along the third
        spacing[a] = float(in_plane_mm)
    data["input"]["spacing_mm"] = spacing
    data["input"]["reorient"] = reorient
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
    ap.add_argument("--reorients", nargs="+", default=["nearest_axis"],
                    choices=["nearest_axis", "axis_aligned"],
                    help="input.reorient modes to compare")
    ap.add_argument("--phantoms", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="calibration seeds to use instead of --phantoms / --first-seed")
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
    for flag, values in (("--spacings", args.spacings), ("--reorients", args.reorients),
                         ("--seeds", args.seeds or [])):
        if len(set(values)) < len(values):
            print(f"model_spacing_check: error: {flag} names a value twice; give each "
                  "once.", file=sys.stderr)
            return 2
    try:
        model_dir = (Path(args.model) if (Path(args.model) / "card.json").is_file()
                     else find_model(args.model))
    except CTMuscleBoneError as e:
        print(f"model_spacing_check: error: {e}", file=sys.stderr)
        return 2
    seeds = args.seeds or [args.first_seed + i for i in range(args.phantoms)]
    cases = [(f"seed{seed}", "mixed", phantom_spec(seed, "mixed", "full", (1.0, 3.5)))
             for seed in seeds]
    variants = [(s, r) for s in args.spacings for r in args.reorients]
    names = [variant_name(s, r) for s, r in variants]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [str(spacing_copy(model_dir, s, Path(tmp), r)) for s, r in variants]
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
    print(f"\nmodel {args.model} (synthetic demo model), {len(seeds)} calibration "
          f"phantoms, seeds {', '.join(map(str, seeds))}; in-plane spacing (mm) and "
          "reorient mode per column")
    for k, name in enumerate(names):
        scores = [sc for part in results for sc in part[k][0].scores]
        by_structure: dict[str, list[float]] = {}
        by_case: dict[str, list[float]] = {}
        for sc in scores:
            if sc.dice is None:
                continue
            by_structure.setdefault(sc.structure, []).append(sc.dice)
            by_case.setdefault(sc.case, []).append(sc.dice)
        report[name] = {
            "seconds_total": sum(part[k][1] for part in results),
            "dice_mean": {key: float(np.mean(v)) for key, v in by_structure.items()},
            "dice_min": {key: float(np.min(v)) for key, v in by_structure.items()},
            "case_mean": {case: float(np.mean(v)) for case, v in by_case.items()},
            "failures": int(sum(sc.dice is not None and sc.dice < 0.8 for sc in scores)),
            "auroc": failure_detection_auroc(scores)}
    first = report[names[0]]
    w = max(10, *(len(n) + 2 for n in names))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:36}" + "".join(f"{v:>{w}}" for v in values))

    row("structure (mean Dice)", names)
    for key in first["dice_mean"]:
        row(key, [f"{report[n]['dice_mean'].get(key, float('nan')):.4f}" for n in names])
    row("mean over structures",
        [f"{np.mean(list(report[n]['dice_mean'].values())):.4f}" for n in names])
    for case in first["case_mean"]:
        row("case " + case, [f"{report[n]['case_mean'][case]:.4f}" for n in names])
    row("failures (Dice < 0.8)", [str(report[n]["failures"]) for n in names])
    row("seconds (all phantoms, 1 thread)", [f"{report[n]['seconds_total']:.0f}"
                                             for n in names])
    if args.out:
        from CTMuscleBoneLib.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps({
            "model": args.model, "seeds": seeds, "spacings_mm": args.spacings,
            "reorients": args.reorients, "results": report}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
