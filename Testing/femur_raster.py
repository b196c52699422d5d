"""Test helper: rasterise phantom components onto any voxel grid (no phantom builder).

Used by the femur tests until/unless the shared phantom assembly is used: it paints a
soft-tissue background of 40 HU (a synthetic value) and then each component, at the
physical centres of the voxels of a :class:`~CTMuscleBoneLib.image.Geometry`.
"""

from __future__ import annotations

import numpy as np
from CTMuscleBoneLib.anatomy import canonical_label_names
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.phantoms.base import PaintBuffer

SOFT_TISSUE_HU = 40.0


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """Right-handed rotation (3, 3) about an LPS axis."""
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    i = "xyz".index(axis)
    j, k = [a for a in range(3) if a != i]
    r = np.eye(3)
    r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
    return r


ORIENTATIONS: dict[str, np.ndarray] = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),  # axes: y, z, x (LPS)
    "oblique": rotation("z", 20.0) @ rotation("x", 12.0) @ np.diag([1.0, -1.0, -1.0]),
}


def grid_around(lo_mm: np.ndarray, hi_mm: np.ndarray, spacing_mm: tuple[float, float, float],
                direction: np.ndarray, margin_mm: float = 6.0) -> Geometry:
    """Geometry with the given axes and spacing covering the LPS box [lo, hi] + margin."""
    lo = np.asarray(lo_mm, float) - margin_mm
    hi = np.asarray(hi_mm, float) + margin_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    m = direction * np.asarray(spacing_mm)[None, :]
    idx = corners @ np.linalg.inv(m).T
    i0 = np.floor(idx.min(axis=0))
    i1 = np.ceil(idx.max(axis=0))
    shape = tuple(int(v) for v in (i1 - i0 + 1))
    origin = i0 @ m.T
    return Geometry(shape, tuple(spacing_mm), tuple(origin), direction)


def rasterize(components: list, geometry: Geometry, background_hu: float = SOFT_TISSUE_HU
              ) -> tuple[CTImage, LabelMap]:
    """CT (HU) and label map of the components painted in order on ``geometry``."""
    n = int(np.prod(geometry.shape))
    hu = np.full(n, background_hu, dtype=np.float32)
    labels = np.zeros(n, dtype=np.int16)
    idx = np.indices(geometry.shape).reshape(3, -1).T
    pts = geometry.index_to_physical(idx)
    for comp in components:
        lo, hi = comp.bounds_mm()
        sel = np.flatnonzero(np.all((pts >= lo) & (pts <= hi), axis=1))
        buf = PaintBuffer(pts[sel], labels[sel].copy(), hu[sel].copy())
        comp.paint(buf)
        labels[sel] = buf.labels
        hu[sel] = buf.hu
    ct = CTImage(hu.reshape(geometry.shape), geometry)
    lm = LabelMap(labels.reshape(geometry.shape), geometry, canonical_label_names(),
                  source="phantom ground truth")
    return ct, lm


def truth_landmarks(phantom):  # noqa: ANN001, ANN201 - FemurPhantom -> FemurLandmarks
    """The phantom's analytic landmarks as a FemurLandmarks (for the analytic projection)."""
    from CTMuscleBoneLib.femur.landmarks import FemurLandmarks

    t = phantom.truth()
    return FemurLandmarks(
        head_centre_mm=t.head_centre_mm, head_radius_mm=t.head_radius_mm, head_fit_rms_mm=0.0,
        neck_axis=t.neck_axis, neck_radius_mm=t.neck_radius_mm,
        junction_distance_mm=float(np.sqrt(t.head_radius_mm ** 2 - t.neck_radius_mm ** 2)),
        shaft_axis=t.shaft_axis, shaft_point_mm=t.neck_shaft_point_mm,
        neck_shaft_point_mm=t.neck_shaft_point_mm, lesser_trochanter_mm=t.lesser_trochanter_mm,
        femur_bottom_mm=float(phantom.bounds_mm()[0] @ t.shaft_axis))


def analytic_abmd(phantom, pixel_mm: float = 0.25) -> dict[str, float]:  # noqa: ANN001
    """aBMD (g/cm2) of the total hip and neck ROIs on the exact projection of the phantom.

    The projection is computed from the implicit solids (exact line integrals along the
    beam, :meth:`FemurPhantom.projection`) in the DXA frame of the analytic landmarks;
    only the ROI rules are shared with the measurement.
    """
    from CTMuscleBoneLib.femur.dxa_projection import dxa_frame
    from CTMuscleBoneLib.femur.rois import (
        neck_mask,
        plane_landmarks,
        roi_value,
        total_hip_mask,
    )

    lm = truth_landmarks(phantom)
    lo, hi = phantom.bounds_mm()
    g = np.stack(np.meshgrid(*[np.arange(a, b, 2.0) for a, b in zip(lo, hi, strict=True)],
                             indexing="ij"), axis=-1).reshape(-1, 3)
    pts = g[phantom.contains(g)]
    frame, _ = dxa_frame(lm, pts, pixel_mm)
    img = phantom.projection(frame.origin_mm, frame.ex, frame.ey, frame.ez, frame.shape,
                             pixel_mm)
    foot = img > 0
    plm = plane_landmarks(frame, lm.head_centre_mm, lm.neck_axis, lm.junction_distance_mm,
                          lm.neck_radius_mm, lm.lesser_trochanter_mm)
    return {
        "total_hip": roi_value(img, total_hip_mask(foot, frame, plm), pixel_mm).abmd_g_cm2,
        "femoral_neck": roi_value(img, neck_mask(foot, frame, plm), pixel_mm).abmd_g_cm2,
    }
