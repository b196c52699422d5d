"""The Dice a perfect model can reach on a given model grid.

A model that runs on a coarser grid than the CT can at best know, for each model voxel,
what fraction of it each structure fills (its partial volume). This module builds those
fractions from a reference label map, brings them back to the CT grid exactly as
:func:`.inference.predict` brings a model's mean softmax back
(``label_resampling='probability'``: :func:`.inference.argmax_on_grid`; or ``'nearest'``),
and scores the result against the reference. The Dice it gives is the ceiling of any
model on that grid: a structure whose ceiling is below a target cannot reach it there,
whatever the training; one whose ceiling is well above it is limited by the model.

Partial volumes: :func:`.partial_volume.partial_volumes`.
"""

from __future__ import annotations

import numpy as np

from ..image import LabelMap
from .config import InputConfig
from .evaluate import dice
from .inference import argmax_on_grid
from .partial_volume import partial_volumes
from .preprocess import labels_to_grid, model_grid, resample


def grid_ceiling(reference: LabelMap, input_cfg: InputConfig,
                 label_resampling: str = "probability", source: str = "partial_volume"
                 ) -> dict[str, float | None]:
    """Per-structure Dice of a perfect model on ``input_cfg``'s model grid.

    Parameters
    ----------
    reference : LabelMap
        Reference labels on the CT grid, shape (n0, n1, n2).
    input_cfg : InputConfig
        The model's input (its ``spacing_mm`` and ``orientation`` define the grid).
    label_resampling : {'probability', 'nearest'}
        How labels come back to the CT grid (as :class:`.config.InferenceConfig`).
    source : {'partial_volume', 'nearest_labels'}
        What the perfect model outputs on the model grid: each structure's partial
        volume (the ceiling of the grid), or the one-hot nearest-neighbour labels a
        model trained on such targets learns to reproduce (``TrainConfig.target=
        'nearest'``: the ceiling of its training targets).

    Returns
    -------
    dict
        Anatomy key -> Dice of the ceiling labels against ``reference`` (None for a
        structure with no voxel).
    """
    if source not in ("partial_volume", "nearest_labels"):
        raise ValueError(f"source must be 'partial_volume' or 'nearest_labels', got "
                         f"{source!r}.")
    if label_resampling not in ("probability", "nearest"):
        raise ValueError(f"label_resampling must be 'probability' or 'nearest', got "
                         f"{label_resampling!r}.")
    geo = reference.geometry
    arr = reference.array
    grid = model_grid(geo, input_cfg)
    values = [0, *sorted(int(v) for v in reference.structures)]
    if source == "partial_volume":
        fractions = partial_volumes(reference, grid, values)
    else:
        on_grid = labels_to_grid(reference, grid)
        fractions = np.stack([(on_grid == v).astype(np.float32) for v in values])
    channels = np.argmax(fractions, axis=0)
    lut = np.asarray(values, dtype=np.int64)
    dtype = np.uint8 if max(values) <= 255 else np.int32
    labels = resample(lut[channels].astype(dtype), grid, geo, "nearest", 0, dtype)
    if label_resampling == "probability":
        argmax_on_grid(fractions, grid, geo, lut, labels, channels)
    return {key: dice(labels == v, arr == v) for v, key in reference.structures.items()}


def main(argv: list[str] | None = None) -> int:
    """Ceiling table of a model's grid on its held-out phantoms (or other seeds)."""
    import argparse
    import json
    import sys
    from dataclasses import replace

    from ..atomic import atomic_write_text
    from ..errors import CTMuscleBoneError
    from ..phantoms import make_phantom
    from .registry import load_model
    from .training.datasets import reference_for
    from .training.make_demo_model import HELD_OUT, phantom_spec

    ap = argparse.ArgumentParser(description="Dice ceiling of a model grid on held-out "
                                 "synthetic phantoms (perfect partial volumes).")
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic",
                    help="model folder or installed model name")
    ap.add_argument("--generator", default="mixed", choices=sorted(HELD_OUT))
    ap.add_argument("--phantoms", type=int, default=8, help="held-out phantoms to use")
    ap.add_argument("--spacing", type=float, nargs="*", default=[],
                    help="isotropic model spacings (mm) to try besides the card's")
    ap.add_argument("--nearest-targets", action="store_true",
                    help="add a column for the card's grid: its nearest-neighbour training "
                    "targets brought back as predict does (the ceiling of a model that "
                    "reproduces them exactly)")
    ap.add_argument("--out", help="JSON file: every phantom's ceilings")
    args = ap.parse_args(argv)
    try:
        card, _ = load_model(args.model)
        cfgs = {"card": card.input} | {f"{s:g} mm": replace(card.input, spacing_mm=(s, s, s))
                                       for s in args.spacing}
        columns = [*cfgs, *(["card, nearest targets"] if args.nearest_targets else [])]
        first, spacing_range = HELD_OUT[args.generator]
        per_case: dict[str, dict[str, dict[str, float | None]]] = {}
        for i in range(args.phantoms):
            spec = phantom_spec(first + i, args.generator, "full", spacing_range)
            ref, _ = reference_for(make_phantom(spec).labels, list(card.labels.values()))
            case = {name: grid_ceiling(ref, cfg) for name, cfg in cfgs.items()}
            if args.nearest_targets:
                case["card, nearest targets"] = grid_ceiling(ref, card.input,
                                                             source="nearest_labels")
            per_case[f"seed{first + i}"] = case
            print(f"phantom {first + i} done", file=sys.stderr, flush=True)
        if args.out:
            atomic_write_text(args.out, json.dumps({"model": card.name, "grids": {
                n: list(c.spacing_mm) for n, c in cfgs.items()}, "ceiling": per_case},
                indent=1))
    except CTMuscleBoneError as e:
        print(f"grid_ceiling: error: {e}", file=sys.stderr)
        return 2
    print("structure".ljust(36) + "".join(n.rjust(24 if "," in n else 12) for n in columns)
          + "   (mean Dice ceiling; min)")
    keys = sorted({k for case in per_case.values() for c in case.values() for k in c})
    for key in keys:
        cells = [[d for case in per_case.values() if (d := case[n].get(key)) is not None]
                 for n in columns]
        print(key.ljust(36) + "".join(
            (f"{np.mean(c):.3f} {min(c):.2f}" if c else "-").rjust(24 if "," in n else 12)
            for n, c in zip(columns, cells, strict=True)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
