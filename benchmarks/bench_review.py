"""Benchmark of the review list's boundary bands (run on demand; not a test).

The review list scores every structure over the +-2 mm band around its surface
(``review_region='band'``). The band was first computed with two Euclidean distance
transforms per structure; it is now one erosion and one dilation with a ball
(:func:`CTMuscleBoneLib.segmentation.uncertainty.boundary_band`, the same voxels:
``Testing/test_segmentation_inference.py``). This script times both side by side in one
run, on the label map of the clinical benchmark's synthetic CT (512 x 512 x 300 at
0.8 x 0.8 x 1.0 mm, two femurs and eight muscle sectors) brought to model grids of
1.5 mm and 3 mm, and the whole ``structure_score_variants`` step with the new band.

    python benchmarks/bench_review.py --out /tmp/review.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_clinical import reference_labels  # noqa: E402
from bench_segment import synthetic_ct  # noqa: E402
from CTMuscleBoneLib.segmentation.config import InputConfig  # noqa: E402
from CTMuscleBoneLib.segmentation.preprocess import model_grid, resample  # noqa: E402
from CTMuscleBoneLib.segmentation.uncertainty import (  # noqa: E402
    _structure_regions,
    boundary_band,
    structure_score_variants,
)

BAND_MM = 2.0
FACE = ndimage.generate_binary_structure(3, 1)


def band_by_distance_transforms(mask: np.ndarray, spacing: tuple[float, ...],
                                band_mm: float) -> np.ndarray:
    """The earlier band: two Euclidean distance transforms, thresholded."""
    d_in = ndimage.distance_transform_edt(mask, sampling=spacing)
    d_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    band = (mask & (d_in <= band_mm)) | (~mask & (d_out <= band_mm))
    band |= mask & ndimage.binary_dilation(~mask, FACE)
    band |= ~mask & ndimage.binary_dilation(mask, FACE)
    return band


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_grid(ct, ref, spacing_mm: float, repeats: int) -> dict[str, object]:  # noqa: ANN001
    """One row: the reference labels on an isotropic model grid, both bands timed."""
    grid = model_grid(ct.geometry, InputConfig(spacing_mm=(spacing_mm,) * 3))
    lab = resample(ref.array, ct.geometry, grid, "nearest", 0, np.uint8)
    sp = grid.spacing_mm
    masks = [mask for _, _, _, mask, _ in _structure_regions(lab, sp, ref.structures, BAND_MM)
             if mask is not None]
    same = all(np.array_equal(boundary_band(m, sp, BAND_MM),
                              band_by_distance_transforms(m, sp, BAND_MM)) for m in masks)
    old = _median_s(lambda: [band_by_distance_transforms(m, sp, BAND_MM) for m in masks],
                    repeats)
    new = _median_s(lambda: [boundary_band(m, sp, BAND_MM) for m in masks], repeats)
    umap = np.random.default_rng(0).random(lab.shape, dtype=np.float32)
    step = _median_s(lambda: structure_score_variants(
        lab, {"predictive_variance": umap}, sp, ref.structures), repeats)
    return {"spacing_mm": spacing_mm, "grid": list(grid.shape), "structures": len(masks),
            "band_distance_transforms_s": round(old, 3),
            "band_erosion_dilation_s": round(new, 3), "speed_up": round(old / new, 1),
            "same_voxels": same, "structure_score_variants_s": round(step, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spacing", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--quick", action="store_true", help="256 x 256 x 100 CT")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    shape = (256, 256, 100) if args.quick else (512, 512, 300)
    ct = synthetic_ct(shape, (0.8, 0.8, 1.0))
    ref = reference_labels(ct)
    rows = [_time_grid(ct, ref, s, args.repeats) for s in args.spacing]
    print(f"{'grid':>16} {'structs':>7} {'EDT band s':>11} {'ball band s':>11} "
          f"{'speed-up':>8} {'same':>5} {'scores s':>9}")
    for r in rows:
        print(f"{'x'.join(map(str, r['grid'])):>16} {r['structures']:>7} "
              f"{r['band_distance_transforms_s']:>11} {r['band_erosion_dilation_s']:>11} "
              f"{r['speed_up']:>8} {str(r['same_voxels']):>5} "
              f"{r['structure_score_variants_s']:>9}")
    if args.out:
        args.out.write_text(json.dumps({"ct_shape": list(shape), "band_mm": BAND_MM,
                                        "repeats": args.repeats, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
