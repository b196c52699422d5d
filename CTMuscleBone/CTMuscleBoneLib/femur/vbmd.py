"""Volumetric BMD (mg/cm3) of 3-D proximal-femur regions (the QCT counterpart of aBMD).

Regions (CTMuscleBone definitions, 3-D analogues of the DXA ROIs of
:mod:`~CTMuscleBoneLib.femur.rois`; vendors such as QCT Pro define theirs differently):

* ``total_proximal``: femur voxels above the plane perpendicular to the shaft axis
  20 mm below the lesser trochanter, femoral head included;
* ``neck``: femur voxels between the planes perpendicular to the neck axis through the
  head-neck junction and 10 mm distal to it, within 1.5 neck radii of the neck axis;
* ``trochanter``: voxels of ``total_proximal`` distal to the neck band (the
  trochanteric and intertrochanteric region).

vBMD = mean calibrated density of the region's voxels (= mass / volume, each voxel of
the same volume). With the density of :func:`.partial_volume.restore_edge_mineral`
this is the region's mineral, including what the scanner's blur moved just outside the
label, over the region's label volume (integral vBMD robust to partial volume).
"""

from __future__ import annotations

import numpy as np

from .landmarks import FemurLandmarks
from .rois import DISTAL_BELOW_LT_MM, NECK_BAND_MM, NECK_HALF_WIDTH_RADII

REGIONS = ("total_proximal", "neck", "trochanter")


def region_masks(points_mm: np.ndarray, lm: FemurLandmarks) -> dict[str, np.ndarray]:
    """Boolean (N,) per region for femur voxel centres (N, 3) LPS.

    Regions needing the lesser trochanter are absent from the result when it was not
    found.
    """
    rel = points_mm - lm.head_centre_mm
    s = rel @ lm.neck_axis
    perp = np.linalg.norm(rel - s[:, None] * lm.neck_axis, axis=1)
    sj = lm.junction_distance_mm
    out = {"neck": (s >= sj) & (s <= sj + NECK_BAND_MM) & (
        perp <= NECK_HALF_WIDTH_RADII * lm.neck_radius_mm)}
    if lm.lesser_trochanter_mm is not None:
        level = float(lm.lesser_trochanter_mm @ lm.shaft_axis) - DISTAL_BELOW_LT_MM
        above = points_mm @ lm.shaft_axis >= level
        out["total_proximal"] = above
        out["trochanter"] = above & (s >= sj + NECK_BAND_MM)
    return out


def region_stats(values: np.ndarray, mask: np.ndarray, voxel_volume_cm3: float
                 ) -> tuple[float, float]:
    """(mean of ``values`` in the region, region volume cm3); NaN mean when empty."""
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 0.0
    return float(np.mean(values[mask])), n * voxel_volume_cm3
