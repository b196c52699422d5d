"""Automatic proximal-femur landmarks from a femur label mask, in LPS millimetres.

Replaces the hand-placed landmarks of Uemura et al. (Arch Osteoporos 2022) with:

* **head centre and radius**: least-squares sphere fit (algebraic fit, Kasa 1976, then
  two rounds of outlier rejection) to the femoral head surface. The surface is the set
  of midpoints between face-neighbouring voxels inside and outside the mask (unbiased
  by the half-voxel shrink of voxel centres); head points are those near the largest
  inscribed ball (maximum of the Euclidean distance map) and outside the cone of the
  neck;
* **neck axis**: the line from the head centre through the centroids of thin
  cross-sections perpendicular to it, along the narrow part of the neck (iterated);
  neck radius from the smallest cross-sectional area (area-equivalent circle);
* **head-neck junction**: the point on the neck axis where a cylinder of the neck
  radius meets the head sphere, ``C + sqrt(R^2 - r^2) n``;
* **shaft axis**: line through the centroids of cross-sections of the shaft 2 to 5 cm
  below the lesser trochanter (Uemura et al. 2022 use points 2 and 5 cm below it);
  first estimated from the distal shaft with the patient's superior axis as the start;
* **lesser trochanter**: the most prominent point in the posteromedial direction
  (relative to the shaft axis) below the neck (centroid of the points within one voxel
  of the maximum prominence).

Everything works on physical positions of voxel centres, so the results do not depend
on the image axis order, signs, obliquity or spacing; both sides use the same code
(medial is the direction from the shaft axis towards the head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import NotMeasurableError
from ..image import Geometry, mask_bounding_box

#: Distances (mm) below the lesser trochanter of the shaft segment used for the shaft
#: axis (Uemura et al. 2022: points 2 cm and 5 cm below the lesser trochanter).
SHAFT_SEGMENT_BELOW_LT_MM = (20.0, 50.0)
#: Window (mm along the shaft axis, relative to where the neck axis meets it) searched
#: for the lesser trochanter. CTMuscleBone choice, covers adult anatomy (the lesser
#: trochanter lies roughly 2-5 cm below that point).
LT_WINDOW_MM = (-80.0, -5.0)
#: Only the top part of the femur (mm from its most superior point) is searched for
#: the head, so that condyles in long scans do not compete.
HEAD_SEARCH_DEPTH_MM = 120.0
#: Smallest plausible femoral head radius (mm); below it no head is reported.
#: CTMuscleBone choice (adult heads are ~20-27 mm in radius).
MIN_HEAD_RADIUS_MM = 12.0
#: How much more prominent (mm) the lesser trochanter must be than the shaft 15-25 mm
#: below it. CTMuscleBone choice.
LT_MIN_PROMINENCE_MM = 2.0
#: Thickness of the shaft cross-section bins, in voxel spacings (an integer number of
#: slices per bin keeps the areas free of aliasing on axis-aligned grids).
SLAB_SPACINGS = 3

SUPERIOR = np.array([0.0, 0.0, 1.0])
POSTERIOR = np.array([0.0, 1.0, 0.0])


@dataclass
class FemurLandmarks:
    """Landmarks of one proximal femur (LPS mm; axes are unit vectors).

    Attributes
    ----------
    head_centre_mm, head_radius_mm, head_fit_rms_mm : sphere fit of the head.
    neck_axis : from the head centre along the neck, distally.
    neck_radius_mm : area-equivalent radius of the narrowest neck section.
    head_neck_junction_mm : on the neck axis, ``C + junction_distance_mm * neck_axis``.
    shaft_axis : along the shaft, superiorly; ``shaft_point_mm`` lies on it.
    neck_shaft_point_mm : point of the shaft axis closest to the neck axis.
    lesser_trochanter_mm : None when not found (femur cut above it).
    femur_bottom_mm : lowest extent of the femur along the shaft axis (its coordinate
        ``shaft_axis . p``), mm.
    notes : how each landmark was obtained when a fallback was used.
    """

    head_centre_mm: np.ndarray
    head_radius_mm: float
    head_fit_rms_mm: float
    neck_axis: np.ndarray
    neck_radius_mm: float
    junction_distance_mm: float
    shaft_axis: np.ndarray
    shaft_point_mm: np.ndarray
    neck_shaft_point_mm: np.ndarray
    lesser_trochanter_mm: np.ndarray | None
    femur_bottom_mm: float
    shaft_from_segment: bool = True
    lt_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def head_neck_junction_mm(self) -> np.ndarray:
        return self.head_centre_mm + self.junction_distance_mm * self.neck_axis

    @property
    def neck_shaft_angle_deg(self) -> float:
        """Angle between the neck axis (towards the head) and the distal shaft axis."""
        c = float(np.clip((-self.neck_axis) @ (-self.shaft_axis), -1.0, 1.0))
        return float(np.degrees(np.arccos(c)))

    def extent_below_lt_mm(self) -> float | None:
        """How far (mm) the femur reaches below the lesser trochanter, or None."""
        if self.lesser_trochanter_mm is None:
            return None
        return float(self.lesser_trochanter_mm @ self.shaft_axis - self.femur_bottom_mm)


# -- helpers ---------------------------------------------------------------------------
def _box_offset(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """The mask's bounding box (the whole array when empty) and its low corner (3,)."""
    box = mask_bounding_box(mask) or tuple(slice(0, n) for n in mask.shape)
    return box, np.array([b.start for b in box])


def femur_points(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """LPS positions (N, 3) of the centres of the mask's voxels."""
    box, lo = _box_offset(mask)
    return geometry.index_to_physical(np.argwhere(mask[box]) + lo)


def surface_points(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Midpoints (M, 3) LPS between face neighbours on either side of the mask surface."""
    box, off = _box_offset(mask)  # outside the box the mask is False: same points
    padded = np.pad(mask[box], 1)
    out = []
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a] = slice(0, -1)
        hi[a] = slice(1, None)
        diff = padded[tuple(lo)] != padded[tuple(hi)]
        idx = np.argwhere(diff).astype(float)
        idx[:, a] += 0.5
        out.append(idx - 1.0 + off)  # undo the padding and the crop
    return geometry.index_to_physical(np.concatenate(out))


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere through points (N, 3): (centre (3,), radius)."""
    a = np.column_stack([2.0 * points, np.ones(len(points))])
    b = np.einsum("ij,ij->i", points, points)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    c = sol[:3]
    r = float(np.sqrt(max(sol[3] + c @ c, 0.0)))
    return c, r


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _slab_profile(points: np.ndarray, origin: np.ndarray, axis: np.ndarray, s0: float,
                  s1: float, width: float, voxel_mm3: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-sections perpendicular to ``axis`` in bins of ``width`` from s0 to s1.

    Returns bin centres s (B,), areas mm^2 (B,) and centroids (B, 3) (NaN when empty).
    """
    nb = max(int(np.floor((s1 - s0) / width)), 0)
    if nb == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, 3))
    s = (points - origin) @ axis
    b = np.floor((s - s0) / width).astype(int)
    ok = (b >= 0) & (b < nb)
    b, p = b[ok], points[ok]
    counts = np.bincount(b, minlength=nb).astype(float)
    cent = np.stack([np.bincount(b, weights=p[:, k], minlength=nb) for k in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cent = cent / counts[:, None]
    centres = s0 + (np.arange(nb) + 0.5) * width
    return centres, counts * voxel_mm3 / width, cent


def _fit_line(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Line through points (K, 3) by PCA: (point, unit direction with dir . ref > 0)."""
    m = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - m, full_matrices=False)
    d = vt[0]
    return m, d if d @ reference > 0 else -d


def _closest_on_first(p1: np.ndarray, d1: np.ndarray, p2: np.ndarray, d2: np.ndarray
                      ) -> np.ndarray:
    """Point of line 1 closest to line 2."""
    w = p1 - p2
    a, b, c = d1 @ d1, d1 @ d2, d2 @ d2
    d, e = d1 @ w, d2 @ w
    den = a * c - b * b
    t = 0.0 if abs(den) < 1e-9 else (b * e - c * d) / den
    return p1 + t * d1


# -- the steps ---------------------------------------------------------------------------
def _head(mask: np.ndarray, geometry: Geometry, pts: np.ndarray, surf: np.ndarray
          ) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Head centre, radius, fit RMS and a first neck direction."""
    top = pts[:, 2].max()
    box, lo = _box_offset(mask)
    crop = mask[box]
    edt = ndimage.distance_transform_edt(np.pad(crop, 1), sampling=geometry.spacing_mm)[
        1:-1, 1:-1, 1:-1]
    cidx = np.argwhere(crop) + lo
    cpts = geometry.index_to_physical(cidx)
    vals = edt[crop]
    allowed = cpts[:, 2] >= top - HEAD_SEARCH_DEPTH_MM
    if not allowed.any():
        allowed[:] = True
    k = int(np.argmax(np.where(allowed, vals, -1.0)))
    c0, r0 = cpts[k], float(vals[k]) + 0.5 * min(geometry.spacing_mm)
    if r0 < MIN_HEAD_RADIUS_MM:
        raise NotMeasurableError(
            f"no femoral head found (largest inscribed ball radius {r0:.1f} mm < "
            f"{MIN_HEAD_RADIUS_MM:.0f} mm): the head is missing or the label is incomplete")
    dist = np.linalg.norm(pts - c0, axis=1)
    shell = (dist > 1.3 * r0) & (dist < 2.2 * r0)
    if shell.sum() < 10:
        raise NotMeasurableError("no femoral neck found next to the head")
    n0 = _unit(pts[shell].mean(axis=0) - c0)
    c, r = c0, r0
    tol = max(2.0, 1.5 * max(geometry.spacing_mm))
    rms = np.inf
    for it in range(4):
        rel = surf - c
        d = np.linalg.norm(rel, axis=1)
        cosang = (rel @ n0) / np.maximum(d, 1e-9)
        if it == 0:
            sel = (d > 0.6 * r) & (d < 1.6 * r) & (cosang < 0.55)
        else:
            sel = (np.abs(d - r) < tol) & (cosang < 0.55)
        if sel.sum() < 20:
            raise NotMeasurableError("too few femoral head surface points for a sphere fit")
        c, r = fit_sphere(surf[sel])
        rms = float(np.sqrt(np.mean((np.linalg.norm(surf[sel] - c, axis=1) - r) ** 2)))
        shell = (np.linalg.norm(pts - c, axis=1) > 1.3 * r) & (
            np.linalg.norm(pts - c, axis=1) < 2.2 * r)
        if shell.sum() >= 10:
            n0 = _unit(pts[shell].mean(axis=0) - c)
    return c, r, rms, n0


def _neck(pts: np.ndarray, c: np.ndarray, r: float, n0: np.ndarray, geometry: Geometry
          ) -> tuple[np.ndarray, float]:
    """Neck axis (unit, distal) and neck radius from cross-sections along it."""
    vox = geometry.voxel_volume_mm3
    width = max(geometry.spacing_mm)
    near = pts[np.linalg.norm(pts - c, axis=1) < 3.0 * r]
    n = n0
    radius = 0.5 * r
    for _ in range(4):
        rel = near - c
        s = rel @ n
        perp = np.linalg.norm(rel - s[:, None] * n, axis=1)
        sub = near[perp < 1.2 * r]
        sc, area, cent = _slab_profile(sub, c, n, 0.6 * r, 2.4 * r, width, vox)
        if len(sc) < 3 or not np.isfinite(area).any():
            raise NotMeasurableError("the femoral neck could not be traced from the head")
        search = (sc >= 0.7 * r) & (sc <= 2.2 * r) & (area > 0)
        if not search.any():
            raise NotMeasurableError("the femoral neck could not be traced from the head")
        amin = float(area[search].min())
        necky = search & (area <= 1.15 * amin)
        radius = float(np.sqrt(np.median(area[necky]) / np.pi))
        g = cent[necky]
        v = (g - c).sum(axis=0)
        n = _unit(v)
    return n, radius


def _shaft_initial(pts: np.ndarray, c: np.ndarray, r: float, geometry: Geometry
                   ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Shaft axis from the distal shaft (slabs along the current axis estimate)."""
    vox = geometry.voxel_volume_mm3
    axis = SUPERIOR.copy()
    width = SLAB_SPACINGS * max(geometry.spacing_mm)  # whole voxels per bin: no aliasing
    point = None
    found = False
    for _ in range(2):
        h = pts @ axis
        h0 = float(h.min())
        top = float(c @ axis - 2.0 * r)
        sc, area, cent = _slab_profile(pts, np.zeros(3), axis, h0, top, width, vox)
        if len(sc) < 4:
            break
        base = float(np.median(area[1:min(len(area), 11)]))
        k = 1
        while k < len(area) and 0 < area[k] < 1.15 * base:
            k += 1
        seg = cent[1:k]
        seg = seg[np.all(np.isfinite(seg), axis=1)]
        if len(seg) < 3:
            break
        point, axis = _fit_line(seg, SUPERIOR)
        found = True
    if point is None:
        h = pts @ axis
        point = pts[h <= h.min() + 3.0].mean(axis=0)
    return axis, point, found


def _lesser_trochanter(pts: np.ndarray, c: np.ndarray, axis: np.ndarray, point: np.ndarray,
                       n: np.ndarray, geometry: Geometry
                       ) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """Most prominent posteromedial point below the neck; (point or None, J, reason)."""
    j = _closest_on_first(point, axis, c, n)
    m = c - j
    m = _unit(m - (m @ axis) * axis)
    p = POSTERIOR - (POSTERIOR @ axis) * axis - (POSTERIOR @ m) * m
    u = _unit(m + _unit(p))
    rel = pts - j
    h = rel @ axis
    win = (h >= LT_WINDOW_MM[0]) & (h <= LT_WINDOW_MM[1])
    if win.sum() < 10:
        return None, j, "no femur below the neck (the femur is cut at the neck)"
    prom = rel[win] @ u
    top = float(prom.max())
    cap = pts[win][prom >= top - max(geometry.spacing_mm)]
    lt = cap.mean(axis=0)
    bottom = float(h.min())
    lt_h = float((lt - j) @ axis)
    # A lesser trochanter is a local maximum of prominence: the shaft 15-25 mm below it
    # must be present and less prominent (by LT_MIN_PROMINENCE_MM).
    below = (h >= lt_h - 25.0) & (h <= lt_h - 15.0)
    if lt_h - bottom < 15.0 or not below.any():
        return None, j, (
            "lesser trochanter not in the image: the femur is cut at or above it (the "
            f"femur ends {-bottom:.0f} mm below the point where the neck and shaft axes "
            "meet)")
    if float((rel[below] @ u).max()) > top - LT_MIN_PROMINENCE_MM:
        return None, j, ("lesser trochanter not found: no posteromedial prominence below "
                         "the neck (the femur may be cut at or above it)")
    return lt, j, None


def _shaft_segment(pts: np.ndarray, axis: np.ndarray, lt: np.ndarray, geometry: Geometry
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Shaft line from the segment 2-5 cm below the lesser trochanter (or what exists)."""
    vox = geometry.voxel_volume_mm3
    h = pts @ axis
    lt_h = float(lt @ axis)
    lo = max(lt_h - SHAFT_SEGMENT_BELOW_LT_MM[1], float(h.min()) + 1.0)
    hi = lt_h - SHAFT_SEGMENT_BELOW_LT_MM[0]
    width = SLAB_SPACINGS * max(geometry.spacing_mm)
    sc, area, cent = _slab_profile(pts, np.zeros(3), axis, lo, hi, width, vox)
    ok = (area > 0) & np.all(np.isfinite(cent), axis=1) if len(sc) else np.zeros(0, bool)
    if ok.sum() < 3:
        return None
    return _fit_line(cent[ok], SUPERIOR)


def find_landmarks(mask: np.ndarray, geometry: Geometry) -> FemurLandmarks:
    """Landmarks of the femur in a boolean mask (ITK index order) on ``geometry``.

    Raises
    ------
    NotMeasurableError
        When the head or neck cannot be found (the reason is in the message).
    """
    pts = femur_points(mask, geometry)
    if len(pts) < 50:
        raise NotMeasurableError(f"femur label too small ({len(pts)} voxels)")
    surf = surface_points(mask, geometry)
    c, r, rms, n0 = _head(mask, geometry, pts, surf)
    n, neck_r = _neck(pts, c, r, n0, geometry)
    notes: list[str] = []
    axis, point, found = _shaft_initial(pts, c, r, geometry)
    if not found:
        notes.append("shaft axis: too little shaft in the image; the patient's superior "
                     "axis was used")
    lt, j, lt_reason = _lesser_trochanter(pts, c, axis, point, n, geometry)
    from_segment = False
    if lt is not None:
        for _ in range(2):
            line = _shaft_segment(pts, axis, lt, geometry)
            if line is None:
                break
            point, axis = line
            from_segment = True
            lt, j, lt_reason = _lesser_trochanter(pts, c, axis, point, n, geometry)
            if lt is None:
                break
    if lt is not None and not from_segment:
        notes.append("shaft axis: fitted to the shaft above 2 cm below the lesser "
                     "trochanter (the image ends too close below it)")
    j = _closest_on_first(point, axis, c, n)
    junction = float(np.sqrt(max(r * r - neck_r * neck_r, 0.0))) if neck_r < r else 0.5 * r
    return FemurLandmarks(
        head_centre_mm=c, head_radius_mm=r, head_fit_rms_mm=rms, neck_axis=n,
        neck_radius_mm=neck_r, junction_distance_mm=junction, shaft_axis=axis,
        shaft_point_mm=point, neck_shaft_point_mm=j, lesser_trochanter_mm=lt,
        femur_bottom_mm=float((pts @ axis).min()), shaft_from_segment=from_segment,
        lt_reason=lt_reason, notes=notes)
