"""Vertebral body heights and Genant-style fracture grading.

Heights are measured along the vertebra's superior axis in a mid-sagittal band
(``|u| <= 0.25 x`` half-width) at the anterior wall, the middle and the posterior
wall, as the six points of quantitative morphometry. Three regions are used:
anterior, 5-15 % of the depth behind the anterior wall; posterior, 5-15 % in front of
the posterior wall; middle, the centre (+-10 % of the half-width, +-5 % of the depth,
at least one column). The body is divided into columns: the voxel grid's own columns
when an array axis lies within 5 degrees of the superior axis, else square cells two
voxels wide (an oblique grid puts many voxel columns through each); a column's height
is the extent of its voxel centres along the axis plus one voxel's extent (a grid
column belongs to the region holding its mean position; with cells, the voxels in the
region are grouped), and a region's height is the median over its columns. Regions
inside the walls avoid the rounded corners of real bodies and labels; the anterior
and posterior heights are then extrapolated linearly from the region centres to the
walls (exact for a wedge; no change when the two are equal).

Grading (Genant HK, Wu CY, van Kuijk C, Nevitt MC, J Bone Miner Res 1993;8:1137-1148:
grade 1 mild = 20-25 %, grade 2 moderate = 25-40 %, grade 3 severe > 40 % reduction of
anterior, middle and/or posterior height) from the largest of:

* wedge: ``1 - anterior / posterior``;
* biconcave: ``1 - middle / max(anterior, posterior)``;
* crush: ``1 - posterior / reference``, the reference being the mean posterior height of
  the measured neighbouring vertebrae (one level above and below), when there are any.

Genant's method is a visual, semi-quantitative reading; the quantitative height ratios
here are its common morphometric approximation. Heights are uncertain by about one
voxel along the axis; when that is more than 2 mm the grade carries a flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .body_separation import BodySeparation

#: Voxel extent along the superior axis above which heights are flagged as uncertain
#: (project default: 2 mm, +10 % for a slightly tilted axis).
UNCERTAIN_VOXEL_MM = 2.2
#: Largest angle between an array axis and the superior axis for which heights are
#: taken along true voxel columns (project default).
GRID_COLUMN_MAX_DEG = 5.0


def genant_grade(height_reduction: float) -> int:
    """Genant grade of a fractional height reduction: 0 (< 20 %), 1 (20-25 %),
    2 (25-40 %), 3 (>= 40 %) (Genant et al., J Bone Miner Res 1993;8:1137-1148)."""
    if height_reduction < 0.20:
        return 0
    if height_reduction < 0.25:
        return 1
    if height_reduction < 0.40:
        return 2
    return 3


@dataclass(frozen=True)
class VertebralHeights:
    """Anterior, middle and posterior body heights (mm) and their resolution (mm)."""

    anterior_mm: float
    middle_mm: float
    posterior_mm: float
    resolution_mm: float


@dataclass(frozen=True)
class FractureAssessment:
    """Genant-style grade from body heights.

    Attributes
    ----------
    grade : int
        0 (none) to 3 (severe).
    reduction : float
        Largest fractional height reduction (0-1).
    kind : str
        'none', 'wedge', 'biconcave' or 'crush' (which ratio gave ``reduction``).
    ratios : dict[str, float]
        'anterior/posterior', 'middle/max(anterior,posterior)', 'posterior/neighbours'.
    uncertain : bool
        True when the height resolution exceeds :data:`UNCERTAIN_VOXEL_MM`.
    """

    grade: int
    reduction: float
    kind: str
    ratios: dict[str, float]
    uncertain: bool


def _grid_aligned_axis(body: BodySeparation) -> int | None:
    """Array axis within :data:`GRID_COLUMN_MAX_DEG` of the superior axis, or None."""
    dots = np.abs(body.grid_direction.T @ body.axes[:, 2])
    axis = int(np.argmax(dots))
    return axis if dots[axis] >= np.cos(np.deg2rad(GRID_COLUMN_MAX_DEG)) else None


def _heights_of(loc: np.ndarray, ids: np.ndarray, ext_w: float) -> np.ndarray:
    """Per group id: (mean u, mean v, extent along w + one voxel), shape (C, 3)."""
    _, ids = np.unique(ids, axis=0, return_inverse=True)
    ids = ids.ravel()
    n = int(ids.max()) + 1
    count = np.bincount(ids, minlength=n).astype(float)
    wmax = np.full(n, -np.inf)
    wmin = np.full(n, np.inf)
    np.maximum.at(wmax, ids, loc[:, 2])
    np.minimum.at(wmin, ids, loc[:, 2])
    return np.column_stack([np.bincount(ids, loc[:, 0], minlength=n) / count,
                            np.bincount(ids, loc[:, 1], minlength=n) / count,
                            wmax - wmin + ext_w])


def _region_height(body: BodySeparation, region, cell_mm: float) -> tuple[float, float]:
    """Median column height (mm) in a region of the (u, v) plane and its mean v (mm).

    ``region(u, v) -> bool`` selects columns (grid-aligned case: by a column's mean
    position) or voxels (oblique case: then grouped into cells of ``cell_mm``).
    """
    loc = body.body_local_mm
    ext_w = float(body.voxel_extent_mm[2])
    axis = _grid_aligned_axis(body)
    if axis is not None:
        cols = _heights_of(loc, np.delete(body.body_index, axis, axis=1), ext_w)
        cols = cols[region(cols[:, 0], cols[:, 1])]
    else:
        sel = region(loc[:, 0], loc[:, 1])
        if not sel.any():
            return float("nan"), float("nan")
        pts = loc[sel]
        cols = _heights_of(pts, np.floor(pts[:, :2] / cell_mm).astype(np.int64), ext_w)
    if cols.shape[0] == 0:
        return float("nan"), float("nan")
    return float(np.median(cols[:, 2])), float(cols[:, 1].mean())


def body_heights(body: BodySeparation) -> VertebralHeights:
    """Anterior, middle and posterior heights of a body (see module docstring)."""
    a, b = body.half_width_mm, body.half_depth_mm
    d = 2.0 * b
    ext = body.voxel_extent_mm
    step = float(max(ext[0], ext[1]))
    cell = 2.0 * step  # oblique grids: every layer of the body has a voxel in each cell
    band_u = max(0.25 * a, step)
    inner = max(0.15 * d, 0.05 * d + step)
    ha, va = _region_height(
        body, lambda u, v: (np.abs(u) <= band_u) & (v >= -b + 0.05 * d) & (v <= -b + inner),
        cell)
    hp, vp = _region_height(
        body, lambda u, v: (np.abs(u) <= band_u) & (v >= b - inner) & (v <= b - 0.05 * d),
        cell)
    # the middle is the centre point of morphometry: a narrower region than the bands
    cu, cv = max(0.1 * a, step), max(0.05 * d, 0.5 * step)
    hm, _ = _region_height(body, lambda u, v: (np.abs(u) <= cu) & (np.abs(v) <= cv), cell)
    if np.isfinite(ha) and np.isfinite(hp) and vp - va > step:
        slope = (hp - ha) / (vp - va)
        ha, hp = ha + slope * (-b - va), hp + slope * (b - vp)
    return VertebralHeights(float(ha), float(hm), float(hp), float(ext[2]))


def assess_fracture(
    heights: VertebralHeights, neighbours: Sequence[VertebralHeights] = ()
) -> FractureAssessment:
    """Genant grade from a body's heights and (optionally) its neighbours' heights."""
    ha, hm, hp = heights.anterior_mm, heights.middle_mm, heights.posterior_mm
    ratios: dict[str, float] = {}
    if np.isfinite(ha) and np.isfinite(hp) and hp > 0:
        ratios["anterior/posterior"] = ha / hp
    ref_ap = max((x for x in (ha, hp) if np.isfinite(x)), default=float("nan"))
    if np.isfinite(hm) and np.isfinite(ref_ap) and ref_ap > 0:
        ratios["middle/max(anterior,posterior)"] = hm / ref_ap
    ref = [n.posterior_mm for n in neighbours if np.isfinite(n.posterior_mm)]
    if ref and np.isfinite(hp):
        ratios["posterior/neighbours"] = hp / float(np.mean(ref))
    kinds = {
        "anterior/posterior": "wedge",
        "middle/max(anterior,posterior)": "biconcave",
        "posterior/neighbours": "crush",
    }
    reduction, kind = 0.0, "none"
    for name, r in ratios.items():
        if 1.0 - r > reduction:
            reduction, kind = 1.0 - r, kinds[name]
    grade = genant_grade(reduction)
    return FractureAssessment(
        grade=grade,
        reduction=reduction,
        kind=kind if grade > 0 else "none",
        ratios=ratios,
        uncertain=heights.resolution_mm > UNCERTAIN_VOXEL_MM,
    )
