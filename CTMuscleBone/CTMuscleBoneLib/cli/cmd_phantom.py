"""``ctmusclebone phantom``: write a synthetic phantom CT, its labels and its truth."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..alm import parse_height_m
from ..atomic import atomic_write_text
from ..errors import InputError

#: Said in truth.json of a phantom rendered without --kvp.
NOT_PHYSICAL_NOTE = (
    "Tissue CT numbers are round design values and bone follows a linear design line "
    "(truth 'scanner'): they do not come from one X-ray spectrum, so a phantomless "
    "(internal) calibration of this image does not reproduce the truth. Use a calibration "
    "phantom (--calibration-phantom) or render with --kvp."
)
SYNTHETIC_BANNER = (
    "SYNTHETIC PHANTOM: made by CTMuscleBone for testing and demonstration; "
    "not a patient image."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic CT phantom with ground-truth labels",
        description="Write a synthetic CT (ct.nii.gz), its ground-truth label map "
        "(labels.nii.gz + labels.labels.json, CTMuscleBone label values) and the "
        "analytic truth (truth.json) to --out. " + SYNTHETIC_BANNER,
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--region", default="hip", choices=["hip", "lumbar", "thigh", "full"],
                   help="body region the field of view covers")
    p.add_argument("--spacing", type=float, nargs="+", default=[2.0],
                   help="voxel size in mm: one value or three (default 2)")
    p.add_argument("--orientation", default="LPS",
                   choices=["LPS", "RAS", "permuted", "oblique"],
                   help="how the voxels are stored (the physical phantom is the same)")
    p.add_argument("--noise", type=float, default=10.0, help="noise SD in HU (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shapes and noise")
    p.add_argument("--calibration-phantom", action="store_true",
                   help="add a calibration phantom under the body")
    p.add_argument("--sex", default="F", choices=["M", "F"], help="patient sex in the header")
    p.add_argument("--height", type=float, default=1.60,
                   help="height in metres (1.62) or centimetres (162) (default 1.60)")
    p.add_argument("--kvp", type=float, default=None,
                   help="render every tissue, bone and rod CT number from one polychromatic "
                   "X-ray spectrum of this tube voltage (70-150 kV), so that phantomless "
                   "(internal) calibration applies (default: none: the builder's round "
                   "tissue numbers and linear bone line, on which internal calibration is "
                   "not meaningful)")
    g = p.add_argument_group("patient-like variation (docs/phantoms.md; synthetic ranges)")
    g.add_argument("--lumbar-count", type=int, default=5, choices=[4, 5, 6],
                   help="lumbar vertebrae: 4 (no L1), 5, or 6 (an extra one above L1, "
                   "labelled as a lumbar vertebra of unassigned level) (default 5)")
    g.add_argument("--trunk-fat-mm", type=float, default=None,
                   help="subcutaneous fat of the trunk, mm (default: the layout's 18)")
    g.add_argument("--thigh-fat-mm", type=float, default=None,
                   help="subcutaneous fat of the thighs, mm (default: the layout's 12)")
    g.add_argument("--muscle-atrophy", type=float, default=1.0,
                   help="factor (0.6-1.0) shrinking every muscle's cross-section "
                   "(default 1.0: none)")
    g.add_argument("--arms", action="store_true", help="arms at the sides (unlabelled)")
    g.add_argument("--blur", type=float, default=0.0,
                   help="scanner point-spread function FWHM, mm (default 0: none)")
    p.set_defaults(func=run)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_phantom(phantom: Any, out: Path, notes: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write a :class:`~CTMuscleBoneLib.phantoms.Phantom` as NIfTI + JSON into ``out``."""
    from ..io_ct import write_image, write_label_map

    out.mkdir(parents=True, exist_ok=True)
    ct_path = write_image(phantom.ct.hu, phantom.ct.geometry, out / "ct.nii.gz")
    label_path, sidecar = write_label_map(phantom.labels, out / "labels.nii.gz")
    truth_path = out / "truth.json"
    truth = _jsonable(phantom.truth)
    truth["note"] = " ".join((SYNTHETIC_BANNER, *notes))
    atomic_write_text(truth_path, json.dumps(truth, indent=1, allow_nan=False) + "\n")
    return {"ct": ct_path, "labels": label_path, "names": sidecar, "truth": truth_path}


#: Largest phantom grid the command builds, in voxels (a project choice: building needs
#: about 20 bytes per voxel, so this is about 3 GB of memory and a few minutes; the full
#: region at 0.8 mm).
MAX_PHANTOM_VOXELS = 150_000_000
#: Approximate field of view (mm along x, y, z) of each region's default layout, for the
#: grid-size estimate made before anything is allocated (the builder computes the exact
#: one; arms, thicker fat, a calibration phantom or the oblique orientation enlarge it).
REGION_FOV_MM = {"thigh": (420.0, 360.0, 220.0), "hip": (420.0, 360.0, 220.0),
                 "lumbar": (420.0, 360.0, 260.0), "full": (420.0, 360.0, 600.0)}


def _checked_args(args: argparse.Namespace) -> tuple[float | tuple[float, ...], float]:
    """(spacing, height in m) from the arguments; InputError for a wrong number of
    spacing values, a non-positive spacing, a grid above :data:`MAX_PHANTOM_VOXELS` or an
    implausible height (the ``measure`` rule: metres, or centimetres with a note)."""
    values = [float(v) for v in args.spacing]
    if len(values) not in (1, 3):
        raise InputError(f"--spacing takes one value (isotropic) or three (x y z) in mm, "
                         f"got {len(values)}: {' '.join(f'{v:g}' for v in values)}.")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"--spacing must be positive numbers of mm, got "
                         f"{' '.join(f'{v:g}' for v in values)}.")
    per_axis = values * 3 if len(values) == 1 else values
    fov = REGION_FOV_MM.get(args.region, max(REGION_FOV_MM.values()))
    voxels = float(np.prod([np.ceil(f / s) for f, s in zip(fov, per_axis, strict=True)]))
    if voxels > MAX_PHANTOM_VOXELS:
        coarsest = float(np.cbrt(np.prod(fov) / MAX_PHANTOM_VOXELS))
        raise InputError(
            f"A {args.region} phantom at --spacing {' '.join(f'{v:g}' for v in values)} mm "
            f"would have about {voxels / 1e6:,.0f} million voxels (about "
            f"{voxels * 20 / 2**30:,.0f} GiB of memory to build), above the limit of "
            f"{MAX_PHANTOM_VOXELS / 1e6:g} million; use a spacing of at least "
            f"{np.ceil(coarsest * 10) / 10:g} mm.")
    height_m, note = parse_height_m(args.height)
    if note:
        print(f"Note: {note}.", file=sys.stderr)
    return (values[0] if len(values) == 1 else tuple(values)), height_m


def run(args: argparse.Namespace) -> int:
    from ..phantoms import PhantomSpec, make_phantom
    from ..phantoms.polychromatic import XraySpectrum, make_polychromatic_phantom

    spacing, height_m = _checked_args(args)
    fields = dict(region=args.region, spacing_mm=spacing, orientation=args.orientation,
                  noise_sd_hu=args.noise, seed=args.seed,
                  calibration=args.calibration_phantom, sex=args.sex, height_m=height_m,
                  lumbar_count=args.lumbar_count, trunk_fat_mm=args.trunk_fat_mm,
                  thigh_fat_mm=args.thigh_fat_mm, muscle_atrophy=args.muscle_atrophy,
                  arms=args.arms, psf_fwhm_mm=args.blur)
    print(SYNTHETIC_BANNER, file=sys.stderr)
    if args.kvp is None:
        phantom = make_phantom(PhantomSpec(**fields))
        notes: tuple[str, ...] = (NOT_PHYSICAL_NOTE,)
    else:
        phantom = make_polychromatic_phantom(XraySpectrum(kvp=args.kvp), **fields)
        notes = (f"CT numbers from a polychromatic {args.kvp:g} kVp spectrum "
                 "(CTMuscleBoneLib.phantoms.polychromatic).",)
    paths = write_phantom(phantom, Path(args.out), notes)
    print(f"Phantom {phantom.ct.geometry.describe()}")
    for k, v in paths.items():
        print(f"  {k:7s} {v}")
    print(f"Measure it: ctmusclebone measure --ct {paths['ct']} --labels {paths['labels']} "
          f"--out {Path(args.out) / 'results'}")
    return 0
