"""A synthetic proximal femur with analytic geometry, densities and landmarks.

The femur is a union of convex solids in the LPS patient frame (mm): the head (sphere),
the neck (capsule from the head centre to the shaft axis), the shaft (cylinder with a
flat distal cut, the field-of-view edge, and a spherical proximal cap), the greater
trochanter (ellipsoid, superolateral) and the lesser trochanter (ellipsoid,
posteromedial below the neck). Each solid has an inner copy shrunk by the cortical
thickness (radii and semi-axes minus ``cortical_thickness_mm``; for the ellipsoids this
is an approximation of a constant-thickness shell). A point is

* **trabecular** (``trabecular_bmd_mg_cm3``) when inside the union of the inner solids,
* **cortical** (``cortical_bmd_mg_cm3``) when inside the union of the outer solids but
  not of the inner ones,
* outside the femur otherwise.

Every solid answers ``contains(points)`` (inclusion test on (N, 3) LPS points) and
``chord(origins, direction)`` (the exact interval where a line meets it), so the truth
is computed by exact line integrals: each ray's path length through the union of
solids is the length of a union of intervals. Volume-weighted densities of regions
(total proximal femur, neck, trochanteric region) and areal-density projections for
CT-aBMD are integrals over rays at a fine pixel pitch (0.2 mm and 0.25 mm by default),
so their only error is the 2-D sampling of the ray grid.

Densities and dimensions are synthetic defaults of the order of adult values
(head radius ~22 mm, neck-shaft angle ~130 deg, cortical ~900 mg/cm3, trabecular
~200 mg/cm3); they are **not** validated anatomy and model no particular person.

Painting: a femur voxel gets the canonical ``femur_left`` / ``femur_right`` label value
and the HU ``scanner.hu_for_bmd(density)``, so that ``scanner.bmd_for_hu(HU)`` returns
the set density exactly (the soft tissue around it is painted by other components and
overwritten where the femur is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from ..anatomy import BY_KEY
from .base import PaintBuffer, ScannerModel

_BIG = 1e9  # "infinite" line parameter, mm
_EMPTY = -1e30  # marker of an empty interval (lo = hi = _EMPTY)

#: Length of the femoral-neck band (ROI and 3-D region) distal to the head-neck
#: junction, mm: the 10 mm band of Uemura et al., Arch Osteoporos 2022 (see
#: docs/femur_bmd.md). Duplicated here on purpose so that the truth does not import
#: the measurement code.
NECK_BAND_MM = 10.0
#: Distance of the distal boundary of the total-hip ROI below the lesser trochanter, mm
#: (Uemura et al. 2022).
DISTAL_BELOW_LT_MM = 20.0
#: The neck region is limited to this multiple of the neck radius around the neck axis
#: (CTMuscleBone definition, keeps other parts of the femur out of the band).
NECK_REGION_RADIUS_FACTOR = 1.5


# -- convex primitives with exact chords -----------------------------------------------
def _interval_or_empty(lo: np.ndarray, hi: np.ndarray, ok: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    ok = ok & (hi > lo)
    return np.where(ok, lo, _EMPTY), np.where(ok, hi, _EMPTY)


def _quadratic_chord(a: np.ndarray | float, b: np.ndarray, c: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Interval where ``a t^2 + 2 b t + c <= 0`` (a > 0)."""
    a = np.asarray(a, dtype=float)
    disc = b * b - a * c
    ok = disc > 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    return _interval_or_empty((-b - sq) / a, (-b + sq) / a, ok)


def _slab_chord(s0: np.ndarray, ds: float, lo: float, hi: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Interval of t with ``lo <= s0 + t ds <= hi``."""
    if abs(ds) < 1e-12:
        ok = (s0 >= lo) & (s0 <= hi)
        return np.where(ok, -_BIG, _EMPTY), np.where(ok, _BIG, _EMPTY)
    t0, t1 = (lo - s0) / ds, (hi - s0) / ds
    return _interval_or_empty(np.minimum(t0, t1), np.maximum(t0, t1),
                              np.ones(s0.shape, dtype=bool))


def _intersect(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    ok = (a[1] > a[0]) & (b[1] > b[0])
    return _interval_or_empty(lo, hi, ok)


def _hull(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals known to overlap (pieces of one convex solid)."""
    lo = np.full(parts[0][0].shape, np.inf)
    hi = np.full(parts[0][0].shape, -np.inf)
    for a, b in parts:
        ok = b > a
        lo = np.where(ok, np.minimum(lo, a), lo)
        hi = np.where(ok, np.maximum(hi, b), hi)
    return _interval_or_empty(lo, hi, np.isfinite(lo))


def _cylinder_chord(w: np.ndarray, v: np.ndarray, axis: np.ndarray, r: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Chord of an infinite cylinder (axis through the origin of ``w``)."""
    wp = w - np.outer(w @ axis, axis)
    vp = v - (v @ axis) * axis
    a = float(vp @ vp)
    c = np.einsum("ij,ij->i", wp, wp) - r * r
    if a < 1e-12:
        ok = c < 0
        return np.where(ok, -_BIG, _EMPTY), np.where(ok, _BIG, _EMPTY)
    return _quadratic_chord(a, wp @ vp, c)


@dataclass(frozen=True)
class Sphere:
    center_mm: np.ndarray
    radius_mm: float

    def contains(self, p: np.ndarray) -> np.ndarray:
        q = p - self.center_mm
        return np.einsum("ij,ij->i", q, q) <= self.radius_mm ** 2

    def chord(self, o: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = o - self.center_mm
        return _quadratic_chord(1.0, w @ v, np.einsum("ij,ij->i", w, w) - self.radius_mm ** 2)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center_mm - self.radius_mm, self.center_mm + self.radius_mm


@dataclass(frozen=True)
class Capsule:
    """Points within ``radius_mm`` of the segment p0-p1."""

    p0_mm: np.ndarray
    p1_mm: np.ndarray
    radius_mm: float

    @cached_property
    def _axis(self) -> tuple[np.ndarray, float]:
        d = self.p1_mm - self.p0_mm
        length = float(np.linalg.norm(d))
        return d / length, length

    def contains(self, p: np.ndarray) -> np.ndarray:
        u, length = self._axis
        rel = p - self.p0_mm
        t = np.clip(rel @ u, 0.0, length)
        q = rel - t[:, None] * u
        return np.einsum("ij,ij->i", q, q) <= self.radius_mm ** 2

    def chord(self, o: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, length = self._axis
        w = o - self.p0_mm
        cyl = _intersect(_cylinder_chord(w, v, u, self.radius_mm),
                         _slab_chord(w @ u, float(v @ u), 0.0, length))
        s0 = Sphere(self.p0_mm, self.radius_mm).chord(o, v)
        s1 = Sphere(self.p1_mm, self.radius_mm).chord(o, v)
        return _hull([cyl, s0, s1])

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radius_mm
        return (np.minimum(self.p0_mm, self.p1_mm) - r, np.maximum(self.p0_mm, self.p1_mm) + r)


@dataclass(frozen=True)
class CappedCylinder:
    """Cylinder from ``base_mm`` along ``axis`` for ``length_mm`` (flat base) with a
    sphere of the same radius on the top end (convex when length >= radius)."""

    base_mm: np.ndarray
    axis: np.ndarray
    length_mm: float
    radius_mm: float

    @property
    def top_mm(self) -> np.ndarray:
        return self.base_mm + self.length_mm * self.axis

    def contains(self, p: np.ndarray) -> np.ndarray:
        rel = p - self.base_mm
        s = rel @ self.axis
        q = rel - s[:, None] * self.axis
        in_cyl = (np.einsum("ij,ij->i", q, q) <= self.radius_mm ** 2) & (s >= 0) & (
            s <= self.length_mm)
        return in_cyl | Sphere(self.top_mm, self.radius_mm).contains(p)

    def chord(self, o: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = o - self.base_mm
        cyl = _intersect(_cylinder_chord(w, v, self.axis, self.radius_mm),
                         _slab_chord(w @ self.axis, float(v @ self.axis), 0.0, self.length_mm))
        return _hull([cyl, Sphere(self.top_mm, self.radius_mm).chord(o, v)])

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        ext = self.radius_mm * np.sqrt(np.clip(1.0 - self.axis ** 2, 0.0, 1.0))
        lo = np.minimum(self.base_mm - ext, self.top_mm - self.radius_mm)
        hi = np.maximum(self.base_mm + ext, self.top_mm + self.radius_mm)
        return lo, hi


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes along the columns of ``rotation``."""

    center_mm: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray

    def contains(self, p: np.ndarray) -> np.ndarray:
        q = ((p - self.center_mm) @ self.rotation) / self.semi_axes_mm
        return np.einsum("ij,ij->i", q, q) <= 1.0

    def chord(self, o: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = ((o - self.center_mm) @ self.rotation) / self.semi_axes_mm
        vv = (v @ self.rotation) / self.semi_axes_mm
        return _quadratic_chord(float(vv @ vv), w @ vv, np.einsum("ij,ij->i", w, w) - 1.0)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        ext = np.sqrt(((self.rotation * self.semi_axes_mm[None, :]) ** 2).sum(axis=1))
        return self.center_mm - ext, self.center_mm + ext


def union_length(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Total length of the union of K intervals per row.

    Parameters
    ----------
    lo, hi : np.ndarray, (N, K)
        Interval ends; empty intervals have ``lo == hi``.

    Returns
    -------
    np.ndarray, (N,)
    """
    order = np.argsort(lo, axis=1)
    lo = np.take_along_axis(lo, order, axis=1)
    hi = np.take_along_axis(hi, order, axis=1)
    total = np.zeros(lo.shape[0])
    end = np.full(lo.shape[0], -np.inf)
    for k in range(lo.shape[1]):
        start = np.maximum(lo[:, k], end)
        total += np.maximum(hi[:, k] - start, 0.0)
        end = np.maximum(end, hi[:, k])
    return total


def _union_contains(parts: list, p: np.ndarray) -> np.ndarray:
    """Inside any of the parts (each tested only on points inside its bounding box)."""
    inside = np.zeros(len(p), dtype=bool)
    for part in parts:
        lo, hi = part.bounds_mm()
        sel = np.flatnonzero(np.all((p >= lo) & (p <= hi), axis=1))
        if sel.size:
            inside[sel] |= part.contains(p[sel])
    return inside


# -- specification and truth -----------------------------------------------------------
@dataclass(frozen=True)
class FemurSpec:
    """Parameters of a synthetic proximal femur (LPS mm, degrees, mg/cm3).

    All defaults are synthetic values of adult order of magnitude, not validated
    anatomy. ``neck_length_mm`` is the distance from the head centre to the point where
    the neck axis meets the shaft axis. ``anteversion_deg`` turns the neck axis
    anteriorly (towards LPS -y) out of the coronal plane. ``shaft_length_mm`` is the
    shaft length below that meeting point (its end is a flat cut). The lesser
    trochanter sits ``lesser_trochanter_drop_mm`` below the meeting point, in the
    posteromedial direction (45 deg between medial and posterior); the greater
    trochanter is superolateral.
    """

    side: Literal["left", "right"] = "left"
    head_centre_mm: tuple[float, float, float] | None = None  # default (+-90, 0, 0)
    head_radius_mm: float = 22.0
    neck_length_mm: float = 55.0
    neck_radius_mm: float = 15.0
    neck_shaft_angle_deg: float = 130.0
    anteversion_deg: float = 12.0
    shaft_radius_mm: float = 14.0
    shaft_length_mm: float = 110.0
    shaft_top_mm: float = 5.0  # cylinder top above the meeting point (then a sphere cap)
    greater_trochanter_offset_mm: tuple[float, float, float] = (6.0, 4.0, 15.0)
    greater_trochanter_semi_axes_mm: tuple[float, float, float] = (14.0, 15.0, 20.0)
    lesser_trochanter_drop_mm: float = 28.0
    lesser_trochanter_semi_axes_mm: tuple[float, float, float] = (9.0, 12.0, 8.0)  # (pm, sup, tan)
    cortical_thickness_mm: float = 3.0
    cortical_bmd_mg_cm3: float = 900.0
    trabecular_bmd_mg_cm3: float = 200.0

    def __post_init__(self) -> None:
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        if self.head_centre_mm is None:
            object.__setattr__(self, "head_centre_mm",
                               (90.0 if self.side == "left" else -90.0, 0.0, 0.0))
        t = self.cortical_thickness_mm
        smallest = min(self.neck_radius_mm, self.shaft_radius_mm,
                       *self.greater_trochanter_semi_axes_mm,
                       *self.lesser_trochanter_semi_axes_mm)
        if not 0 < t < smallest:
            raise ValueError("cortical thickness must be positive and below every radius")
        if not self.neck_radius_mm < self.head_radius_mm:
            raise ValueError("the neck must be narrower than the head")
        if self.shaft_top_mm < 0:
            raise ValueError("shaft_top_mm must be >= 0")


@dataclass(frozen=True)
class FemurTruth:
    """Analytic landmarks and expected values of a :class:`FemurPhantom`.

    Vectors are LPS unit vectors; points LPS mm.

    Attributes
    ----------
    head_centre_mm, head_radius_mm : femoral head sphere.
    neck_axis : unit vector from the head centre along the neck towards the shaft.
    shaft_axis : unit vector along the shaft, pointing superiorly (proximally).
    neck_radius_mm : radius of the (circular) neck.
    neck_shaft_point_mm : where the neck axis meets the shaft axis.
    lesser_trochanter_mm : most prominent posteromedial point of the lesser trochanter.
    head_neck_junction_mm : point on the neck axis where the neck cylinder meets the
        head sphere, ``C + sqrt(R^2 - r^2) * neck_axis``.
    density_mg_cm3 : {'cortical': ..., 'trabecular': ...}
    vbmd_mg_cm3 : volume-weighted mean density of the regions 'total_proximal', 'neck'
        and 'trochanter' (definitions in :meth:`FemurPhantom.region_intervals`).
    volume_cm3 : volumes of the same regions.
    """

    side: str
    head_centre_mm: np.ndarray
    head_radius_mm: float
    neck_axis: np.ndarray
    shaft_axis: np.ndarray
    neck_radius_mm: float
    neck_shaft_point_mm: np.ndarray
    lesser_trochanter_mm: np.ndarray
    head_neck_junction_mm: np.ndarray
    neck_shaft_angle_deg: float
    anteversion_deg: float
    density_mg_cm3: dict[str, float]
    vbmd_mg_cm3: dict[str, float] = field(default_factory=dict)
    volume_cm3: dict[str, float] = field(default_factory=dict)


# -- the phantom -----------------------------------------------------------------------
class FemurPhantom:
    """A proximal femur component (see module docstring).

    Parameters
    ----------
    spec : FemurSpec
    scanner : ScannerModel
        Converts the set densities to HU when painting.
    """

    def __init__(self, spec: FemurSpec, scanner: ScannerModel | None = None) -> None:
        self.spec = spec
        self.scanner = scanner or ScannerModel()
        self.label_value = BY_KEY[f"femur_{spec.side}"].label_value
        s = spec
        lat = np.array([1.0 if s.side == "left" else -1.0, 0.0, 0.0])  # lateral
        med = -lat
        post = np.array([0.0, 1.0, 0.0])
        up = np.array([0.0, 0.0, 1.0])
        theta = np.deg2rad(s.neck_shaft_angle_deg)
        av = np.deg2rad(s.anteversion_deg)
        horiz = np.cos(av) * med - np.sin(av) * post  # anterior = -y
        to_head = -np.cos(theta) * up + np.sin(theta) * horiz  # from the shaft to the head
        c = np.asarray(s.head_centre_mm, dtype=float)
        j = c - s.neck_length_mm * to_head
        self.head_centre = c
        self.neck_axis = -to_head
        self.shaft_axis = up
        self.meeting_point = j
        t = s.cortical_thickness_mm
        # lesser trochanter frame: u posteromedial, z up, w = z x u
        u_pm = (med + post) / np.sqrt(2.0)
        lt_rot = np.column_stack([u_pm, up, np.cross(up, u_pm)])
        lt_semi = np.asarray(s.lesser_trochanter_semi_axes_mm, dtype=float)
        lt_centre = j - s.lesser_trochanter_drop_mm * up + s.shaft_radius_mm * u_pm
        self.lesser_trochanter_point = lt_centre + lt_semi[0] * u_pm
        gt_rot = np.column_stack([lat, post, up])
        gt_off = np.asarray(s.greater_trochanter_offset_mm, dtype=float)
        gt_centre = j + gt_off[0] * lat + gt_off[1] * post + gt_off[2] * up
        gt_semi = np.asarray(s.greater_trochanter_semi_axes_mm, dtype=float)
        base = j - s.shaft_length_mm * up
        shaft_len = s.shaft_length_mm + s.shaft_top_mm

        def parts(d: float) -> list:
            return [
                Sphere(c, s.head_radius_mm - d),
                Capsule(c, j, s.neck_radius_mm - d),
                CappedCylinder(base, up, shaft_len, s.shaft_radius_mm - d),
                Ellipsoid(gt_centre, gt_semi - d, gt_rot),
                Ellipsoid(lt_centre, lt_semi - d, lt_rot),
            ]

        self.outer = parts(0.0)
        self.inner = parts(t)

    # -- Component protocol ------------------------------------------------------------
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        b = [p.bounds_mm() for p in self.outer]
        return np.min([x[0] for x in b], axis=0), np.max([x[1] for x in b], axis=0)

    def density_at(self, points_mm: np.ndarray) -> np.ndarray:
        """Mineral density (mg/cm3) at LPS points (N, 3); 0 outside the femur."""
        p = np.asarray(points_mm, dtype=float).reshape(-1, 3)
        outer = _union_contains(self.outer, p)
        inner = _union_contains(self.inner, p)
        s = self.spec
        return np.where(inner, s.trabecular_bmd_mg_cm3,
                        np.where(outer, s.cortical_bmd_mg_cm3, 0.0))

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        """Boolean (N,): inside the femur."""
        return _union_contains(self.outer, np.asarray(points_mm, dtype=float).reshape(-1, 3))

    def paint(self, buf: PaintBuffer) -> None:
        """Label femur voxels and give them the HU of their density (see module doc)."""
        dens = self.density_at(buf.points_mm)
        inside = dens > 0
        buf.labels[inside] = self.label_value
        buf.hu[inside] = np.asarray(self.scanner.hu_for_bmd(dens[inside]), dtype=np.float32)

    # -- exact line integrals ------------------------------------------------------------
    def line_integrals(self, origins_mm: np.ndarray, direction: np.ndarray,
                       region: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Exact integrals along lines ``o + t v`` through the femur.

        Parameters
        ----------
        origins_mm : np.ndarray, (N, 3)
        direction : np.ndarray, (3,) unit vector
        region : optional (lo, hi) arrays (N,): only the parts of the lines with
            ``lo <= t <= hi`` count.

        Returns
        -------
        mass : np.ndarray, (N,)
            Integral of the density, mg/cm3 x mm.
        length_mm : np.ndarray, (N,)
            Path length inside the femur, mm.
        """
        o = np.asarray(origins_mm, dtype=float).reshape(-1, 3)
        v = np.asarray(direction, dtype=float)
        v = v / np.linalg.norm(v)

        def lengths(parts: list) -> np.ndarray:
            ch = [p.chord(o, v) for p in parts]
            if region is not None:
                ch = [_intersect(c, region) for c in ch]
            lo = np.stack([c[0] for c in ch], axis=1)
            hi = np.stack([c[1] for c in ch], axis=1)
            return union_length(lo, hi)

        l_out = lengths(self.outer)
        l_in = lengths(self.inner)
        s = self.spec
        mass = s.cortical_bmd_mg_cm3 * (l_out - l_in) + s.trabecular_bmd_mg_cm3 * l_in
        return mass, l_out

    def projection(self, origin_mm: np.ndarray, ex: np.ndarray, ey: np.ndarray,
                   ez: np.ndarray, shape: tuple[int, int], pixel_mm: float) -> np.ndarray:
        """Analytic areal-density image (g/cm2) along ``ey`` (parallel beam).

        Pixel ``[i, k]`` is the line through ``origin + i*pixel*ex + k*pixel*ez`` along
        ``ey``: g/cm2 = integral of density (mg/cm3) over path (mm) x 1e-4.
        """
        ii, kk = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        pts = (np.asarray(origin_mm, dtype=float)[None, :]
               + (ii.ravel() * pixel_mm)[:, None] * np.asarray(ex)[None, :]
               + (kk.ravel() * pixel_mm)[:, None] * np.asarray(ez)[None, :])
        out = np.empty(len(pts))
        step = 200_000
        for a in range(0, len(pts), step):
            out[a:a + step] = self.line_integrals(pts[a:a + step], ey)[0]
        return (out * 1e-4).reshape(shape)

    # -- truth -------------------------------------------------------------------------
    @property
    def head_neck_junction_mm(self) -> np.ndarray:
        s = self.spec
        return self.head_centre + np.sqrt(s.head_radius_mm ** 2 - s.neck_radius_mm ** 2) * (
            self.neck_axis)

    def region_intervals(self, name: str, o: np.ndarray, v: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Interval of each line ``o + t v`` inside a 3-D analysis region.

        Regions (the same definitions as :mod:`CTMuscleBoneLib.femur.vbmd`, written
        again here from the analytic landmarks):

        * ``total_proximal``: above the plane perpendicular to the shaft axis 20 mm
          below the lesser trochanter (head included);
        * ``neck``: between the planes perpendicular to the neck axis through the
          head-neck junction and 10 mm distal to it, within 1.5 neck radii of the axis;
        * ``trochanter``: in ``total_proximal`` and distal to the neck band's distal
          plane.
        """
        a = self.shaft_axis
        level = float(self.lesser_trochanter_point @ a) - DISTAL_BELOW_LT_MM
        above = _slab_chord(o @ a, float(v @ a), level, _BIG)
        d = self.neck_axis
        s_j = float((self.head_neck_junction_mm - self.head_centre) @ d)
        s0 = (o - self.head_centre) @ d
        if name == "total_proximal":
            return above
        if name == "neck":
            band = _slab_chord(s0, float(v @ d), s_j, s_j + NECK_BAND_MM)
            cyl = _cylinder_chord(o - self.head_centre, v, d,
                                  NECK_REGION_RADIUS_FACTOR * self.spec.neck_radius_mm)
            return _intersect(band, cyl)
        if name == "trochanter":
            return _intersect(above, _slab_chord(s0, float(v @ d), s_j + NECK_BAND_MM, _BIG))
        raise KeyError(f"unknown femur region {name!r}")

    def region_integrals(self, name: str, pixel_mm: float = 0.2) -> tuple[float, float]:
        """(mass mg, volume cm3) of the femur inside a region, by exact vertical line
        integrals on a ``pixel_mm`` grid."""
        lo, hi = self.bounds_mm()
        xs = np.arange(lo[0] + pixel_mm / 2, hi[0], pixel_mm)
        ys = np.arange(lo[1] + pixel_mm / 2, hi[1], pixel_mm)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        o = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, lo[2] - 1.0)])
        v = np.array([0.0, 0.0, 1.0])
        mass = vol = 0.0
        step = 100_000
        for a in range(0, len(o), step):
            oo = o[a:a + step]
            m, length = self.line_integrals(oo, v, self.region_intervals(name, oo, v))
            mass += float(m.sum())
            vol += float(length.sum())
        area = pixel_mm * pixel_mm
        # mg/cm3 x mm x mm2 = mg/cm3 x mm3 = 1e-3 mg
        return mass * area * 1e-3, vol * area * 1e-3

    def truth(self, pixel_mm: float = 0.25) -> FemurTruth:
        """Analytic landmarks and region densities (cached per pixel size)."""
        cache = self.__dict__.setdefault("_truth_cache", {})
        if pixel_mm in cache:
            return cache[pixel_mm]
        s = self.spec
        vbmd, vol = {}, {}
        for name in ("total_proximal", "neck", "trochanter"):
            m, v = self.region_integrals(name, pixel_mm)
            vbmd[name] = m / v
            vol[name] = v
        t = FemurTruth(
            side=s.side,
            head_centre_mm=self.head_centre.copy(),
            head_radius_mm=s.head_radius_mm,
            neck_axis=self.neck_axis.copy(),
            shaft_axis=self.shaft_axis.copy(),
            neck_radius_mm=s.neck_radius_mm,
            neck_shaft_point_mm=self.meeting_point.copy(),
            lesser_trochanter_mm=self.lesser_trochanter_point.copy(),
            head_neck_junction_mm=self.head_neck_junction_mm,
            neck_shaft_angle_deg=s.neck_shaft_angle_deg,
            anteversion_deg=s.anteversion_deg,
            density_mg_cm3={"cortical": s.cortical_bmd_mg_cm3,
                            "trabecular": s.trabecular_bmd_mg_cm3},
            vbmd_mg_cm3=vbmd,
            volume_cm3=vol,
        )
        cache[pixel_mm] = t
        return t
