"""The Dice a perfect model can reach on a given model grid.

A model that runs on a coarser grid than the CT can at best know, for each model voxel,
what fraction of it each structure fills (its partial volume). This module builds those
fractions from a reference label map, brings them back to the CT grid exactly as
:func:`.inference.predict` brings a model's mean softmax back
(``label_resampling='probability'``: :func:`.inference.argmax_on_grid`; or ``'nearest'``),
and scores the result against the reference. The Dice it gives is the ceiling of any
model on that grid: a structure whose ceiling is below a target cannot reach it there,
whatever the training; one whose ceiling is well above it is limited by the model.

Partial volume: the one-hot mask of each structure averaged over one model voxel,
approximated by a Gaussian of the same variance (sigma = model spacing / sqrt(12) along
each CT axis, :func:`partial_volume_sigma`) on the CT grid, then sampled at the model
voxel centres by linear interpolation.
"""

from __future__ import annotations

import numpy as np

from ..image import LabelMap
from .config import InputConfig
from .evaluate import dice
from .inference import argmax_on_grid
from .preprocess import model_grid, resample


def partial_volume_sigma(ct_spacing_mm: np.ndarray, ct_direction: np.ndarray,
                         model_spacing_mm: np.ndarray, model_direction: np.ndarray
                         ) -> tuple[float, ...]:
    """Gaussian sigma (CT voxels per CT axis) of a model voxel's partial-volume window.

    A model voxel averages a box of its own size; the box is replaced by the centred
    Gaussian of the same variance (sigma = width / sqrt(12)), which, unlike a box of a
    whole number of CT voxels, has no half-voxel shift when the ratio of the spacings
    rounds to an even number, and follows non-integer ratios.

    Parameters
    ----------
    ct_spacing_mm, model_spacing_mm : (3,) mm
    ct_direction, model_direction : (3, 3)
        Direction cosines as columns (the :class:`~CTMuscleBoneLib.image.Geometry`
        convention).

    Returns
    -------
    tuple of 3 float
        Model spacing along each CT axis (projected: exact for the axis-aligned and
        permuted grids of ``reorient='nearest_axis'``) / sqrt(12), in CT voxels.
    """
    along = np.abs(np.asarray(ct_direction).T @ np.asarray(model_direction)) @ np.asarray(
        model_spacing_mm, float)
    return tuple(float(a / s / np.sqrt(12.0)) for a, s in zip(along, ct_spacing_mm,
                                                               strict=True))


def grid_ceiling(reference: LabelMap, input_cfg: InputConfig,
                 label_resampling: str = "probability") -> dict[str, float | None]:
    """Per-structure Dice of a perfect model on ``input_cfg``'s model grid.

    Parameters
    ----------
    reference : LabelMap
        Reference labels on the CT grid, shape (n0, n1, n2).
    input_cfg : InputConfig
        The model's input (its ``spacing_mm`` and ``orientation`` define the grid).
    label_resampling : {'probability', 'nearest'}
        How labels come back to the CT grid (as :class:`.config.InferenceConfig`).

    Returns
    -------
    dict
        Anatomy key -> Dice of the ceiling labels against ``reference`` (None for a
        structure with no voxel).
    """
    from scipy import ndimage

    if label_resampling not in ("probability", "nearest"):
        raise ValueError(f"label_resampling must be 'probability' or 'nearest', got "
                         f"{label_resampling!r}.")
    geo = reference.geometry
    arr = reference.array
    grid = model_grid(geo, input_cfg)
    values = [0, *sorted(int(v) for v in reference.structures)]
    sigma = partial_volume_sigma(np.asarray(geo.spacing_mm), np.asarray(geo.direction),
                                 np.asarray(grid.spacing_mm), np.asarray(grid.direction))
    fractions = np.empty((len(values), *grid.shape), np.float32)
    for i, v in enumerate(values):
        m = ndimage.gaussian_filter((arr == v).astype(np.float32), sigma, mode="nearest",
                                    truncate=3.0)
        fractions[i] = resample(m, geo, grid, "linear", 1.0 if v == 0 else 0.0)
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
    ap.add_argument("--out", help="JSON file: every phantom's ceilings")
    args = ap.parse_args(argv)
    try:
        card, _ = load_model(args.model)
        cfgs = {"card": card.input} | {f"{s:g} mm": replace(card.input, spacing_mm=(s, s, s))
                                       for s in args.spacing}
        first, spacing_range = HELD_OUT[args.generator]
        per_case: dict[str, dict[str, dict[str, float | None]]] = {}
        for i in range(args.phantoms):
            spec = phantom_spec(first + i, args.generator, "full", spacing_range)
            ref, _ = reference_for(make_phantom(spec).labels, list(card.labels.values()))
            per_case[f"seed{first + i}"] = {name: grid_ceiling(ref, cfg)
                                             for name, cfg in cfgs.items()}
            print(f"phantom {first + i} done", file=sys.stderr, flush=True)
        if args.out:
            atomic_write_text(args.out, json.dumps({"model": card.name, "grids": {
                n: list(c.spacing_mm) for n, c in cfgs.items()}, "ceiling": per_case},
                indent=1))
    except CTMuscleBoneError as e:
        print(f"grid_ceiling: error: {e}", file=sys.stderr)
        return 2
    print("structure".ljust(36) + "".join(n.rjust(12) for n in cfgs)
          + "   (mean Dice ceiling; min)")
    keys = sorted({k for case in per_case.values() for c in case.values() for k in c})
    for key in keys:
        cells = [[d for case in per_case.values() if (d := case[n].get(key)) is not None]
                 for n in cfgs]
        print(key.ljust(36) + "".join(
            (f"{np.mean(c):.3f} {min(c):.2f}" if c else "-").rjust(12) for c in cells))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
