"""The demo phantom with the demo body and with the layout's standard body (run on demand).

The demo phantom (:func:`CTMuscleBoneLib.phantoms.demo.demo_spec`) is an older woman's
body: muscles at 80 % of the layout's cross-section with fat planes between them,
30 / 18 mm of subcutaneous fat. The layout's *standard* body keeps every muscle at full
size, touching its neighbours with no fat plane, and the layout's own subcutaneous fat
(``muscle_atrophy`` 1.0, ``trunk_fat_mm`` / ``thigh_fat_mm`` unset); everything else
(seed, 2 mm voxels, fat infiltration, noise, blur, calibration phantom, 95 mg/cm3 lumbar
BMD) is the demo's. For each body this script segments the phantom with a model through
the library API (:func:`CTMuscleBoneLib.pipeline.analyze`, Monte-Carlo inference),
scores the labels against the phantom's truth merged into the model's groups (a
structure the model paints and the phantom lacks, such as the iliacus, scores Dice 0, as
in the demo's ``demo_check.csv``), and
measures the headline values on the model's labels and on the truth labels with the
same code (:func:`CTMuscleBoneLib.pipeline.measure_case`), as the demo's self-check
does::

    python benchmarks/demo_body_check.py --body demo standard --out demo_body.json

On 2 CPU cores each body takes about 3 minutes with the bundled model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

from CTMuscleBoneLib.phantoms.demo import (  # noqa: E402
    DEMO_HEADLINE_ROWS as HEADLINE_ROWS,  # the demo self-check's rows
)


def body_spec(body: str, spacing_mm: float) -> object:
    """The demo phantom's spec with the ``demo`` or the layout's ``standard`` body."""
    from CTMuscleBoneLib.phantoms.demo import demo_spec

    spec = demo_spec(spacing_mm)
    if body == "standard":
        spec = replace(spec, muscle_atrophy=1.0, trunk_fat_mm=None, thigh_fat_mm=None)
    return spec


def check_body(body: str, model: str, spacing_mm: float, samples: int | None,
               device: str) -> dict:
    """Dice per structure and headline values (model labels vs truth labels) of one body."""
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.phantoms import make_phantom
    from CTMuscleBoneLib.phantoms.demo import DEMO_PATIENT
    from CTMuscleBoneLib.pipeline import MeasureOptions, SegmentOptions
    from CTMuscleBoneLib.segmentation.evaluate import evaluate_label_maps
    from CTMuscleBoneLib.segmentation.training.datasets import reference_for

    t0 = time.perf_counter()
    phantom = make_phantom(body_spec(body, spacing_mm))
    options = MeasureOptions(sex=DEMO_PATIENT["sex"], height_m=DEMO_PATIENT["height_m"],
                             age_years=DEMO_PATIENT["age_years"],
                             phantom=DEMO_PATIENT["phantom"])
    analysis = pipeline.analyze(phantom.ct, SegmentOptions(model=model, samples=samples,
                                                           device=device), options)
    keys = [k for k in analysis.segmentation.card.labels.values() if k != "background"]
    truth_labels, scored = reference_for(phantom.labels, keys)
    scores = evaluate_label_maps(analysis.segmentation.result.label_map, truth_labels,
                                 scored, case=body, with_surface=False)
    dice = {s.structure: s.dice for s in scores if s.dice is not None}
    truth = pipeline.measure_case(phantom.ct, truth_labels, options)
    headline = {}
    for structure, quantity in HEADLINE_ROWS:
        a, b = analysis.results.get(structure, quantity), truth.get(structure, quantity)
        va = a.value if a is not None and isinstance(a.value, int | float) else None
        vb = b.value if b is not None and isinstance(b.value, int | float) else None
        row = a if a is not None else b
        headline[f"{structure} {quantity}"] = {
            "model": va, "truth_labels": vb, "unit": (row.unit if row is not None else "") or "",
            "difference_percent": 100.0 * (va - vb) / vb if va is not None and vb else None}
    return {"body": body, "model": analysis.segmentation.card.name,
            "model_version": analysis.segmentation.card.version,
            "mean_dice": sum(dice.values()) / len(dice) if dice else None,
            "lowest": min(dice.items(), key=lambda kv: kv[1]) if dice else None,
            "dice": dice, "headline": headline, "seconds": time.perf_counter() - t0}


def _print_run(r: dict) -> None:
    """One body's figures: mean and lowest Dice, each headline value with its unit."""
    print(f"{r['body']} body ({r['model']} {r['model_version']}, {r['seconds']:.0f} s): "
          f"mean Dice {r['mean_dice']:.3f} over {len(r['dice'])} structures, lowest "
          f"{r['lowest'][0]} {r['lowest'][1]:.3f}", flush=True)
    for name, h in r["headline"].items():
        d = h["difference_percent"]
        model, truth = (_with_unit(h[k], h["unit"]) for k in ("model", "truth_labels"))
        print(f"  {name}: model {model}, truth labels {truth}"
              + (f" ({d:+.1f} %)" if d is not None else ""), flush=True)


def _with_unit(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.3f} {unit}".rstrip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--body", nargs="+", default=["demo", "standard"],
                    choices=["demo", "standard"])
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic")
    ap.add_argument("--spacing", type=float, default=2.0, help="phantom voxel size, mm")
    ap.add_argument("--samples", type=int, help="Monte-Carlo samples T (default: the card's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="JSON file for every figure")
    args = ap.parse_args(argv)
    from CTMuscleBoneLib.errors import CTMuscleBoneError
    from CTMuscleBoneLib.segmentation.registry import verify_model

    runs = []
    try:
        verify_model(args.model)  # a missing or damaged model is named before any phantom
        for body in args.body:
            runs.append(check_body(body, args.model, args.spacing, args.samples,
                                   args.device))
            _print_run(runs[-1])
    except CTMuscleBoneError as exc:
        print(f"demo_body_check: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        from CTMuscleBoneLib.atomic import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
