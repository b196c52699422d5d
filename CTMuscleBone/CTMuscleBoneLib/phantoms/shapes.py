"""Analytic solids with exact volumes, defined in the LPS patient frame (millimetres).

Every shape answers three questions:

* ``contains(points_mm)``: which of the points, array (N, 3) LPS mm, lie inside
  (closed set; returns bool (N,));
* ``volume_mm3``: its exact analytic volume, mm^3;
* ``bounds_mm()``: LPS min and max corner (each (3,)) of a box containing it.

The phantom's truth volumes are these analytic volumes; a voxelisation at spacing ``h``
matches them to O(h / size), which the tests check at 1 mm.

Shapes
------
Ellipsoid, EllipticCylinder (any axis), Box (any rotation), Capsule, SweptEllipse
(horizontal elliptic cross-sections whose centre moves linearly with z: a sheared,
"oblique" cylinder with horizontal caps, volume = area x height by Cavalieri's
principle), SphericalShellCap (a spherical shell cut by a plane through its centre:
half a shell) and Union (of disjoint shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Shape(Protocol):
    """Protocol of the analytic solids in this module."""

    @property
    def volume_mm3(self) -> float: ...

    def contains(self, points_mm: np.ndarray) -> np.ndarray: ...

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]: ...


# -- rotations ---------------------------------------------------------------------------
def rotation_about(axis: str | np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation matrix (3, 3) about an LPS axis ('x', 'y', 'z' or a vector) by an angle.

    Right-handed: a positive angle turns +y towards +z about 'x', +z towards +x about
    'y' and +x towards +y about 'z'.
    """
    if isinstance(axis, str):
        axis = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]),
                "z": np.array([0, 0, 1.0])}[axis]
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    t = np.deg2rad(angle_deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * (kx @ kx)


def _local(points_mm: np.ndarray, center: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Coordinates (N, 3) of points in a shape's local frame (columns of ``rotation``)."""
    return (np.asarray(points_mm, dtype=float) - center) @ rotation


def _box_bounds(center: np.ndarray, rotation: np.ndarray, half: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    ext = np.abs(rotation) @ half
    return center - ext, center + ext


def _as3(v) -> np.ndarray:  # noqa: ANN001 - array-like
    a = np.asarray(v, dtype=float).reshape(3)
    return a


# -- primitives ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid.

    Parameters
    ----------
    center_mm : (3,) LPS mm
    semi_axes_mm : (3,) mm, along the columns of ``rotation``
    rotation : (3, 3), columns = LPS directions of the local axes (default identity)
    """

    center_mm: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", _as3(self.center_mm))
        object.__setattr__(self, "semi_axes_mm", _as3(self.semi_axes_mm))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=float))

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * np.pi * a * b * c

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        q = _local(points_mm, self.center_mm, self.rotation) / self.semi_axes_mm
        return np.einsum("ij,ij->i", q, q) <= 1.0

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        ext = np.sqrt(((self.rotation * self.semi_axes_mm[None, :]) ** 2).sum(axis=1))
        return self.center_mm - ext, self.center_mm + ext


@dataclass(frozen=True)
class EllipticCylinder:
    """Solid elliptic cylinder with flat caps perpendicular to its axis.

    Parameters
    ----------
    center_mm : (3,) LPS mm, centre of the axis segment
    semi_axes_mm : (2,) mm, ellipse semi-axes along ``rotation[:, 0]`` and ``[:, 1]``
    half_length_mm : float, half the length along the axis ``rotation[:, 2]``
    rotation : (3, 3), default identity (axis = LPS +z)
    """

    center_mm: np.ndarray
    semi_axes_mm: tuple[float, float]
    half_length_mm: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", _as3(self.center_mm))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=float))

    @property
    def volume_mm3(self) -> float:
        a, b = self.semi_axes_mm
        return np.pi * a * b * 2.0 * self.half_length_mm

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        q = _local(points_mm, self.center_mm, self.rotation)
        a, b = self.semi_axes_mm
        return ((q[:, 0] / a) ** 2 + (q[:, 1] / b) ** 2 <= 1.0) & (
            np.abs(q[:, 2]) <= self.half_length_mm)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.semi_axes_mm
        r = self.rotation
        ext = (np.sqrt((r[:, 0] * a) ** 2 + (r[:, 1] * b) ** 2)
               + np.abs(r[:, 2]) * self.half_length_mm)
        return self.center_mm - ext, self.center_mm + ext


@dataclass(frozen=True)
class Box:
    """Solid rectangular box.

    Parameters
    ----------
    center_mm : (3,) LPS mm
    half_sizes_mm : (3,) mm, along the columns of ``rotation``
    rotation : (3, 3), default identity
    """

    center_mm: np.ndarray
    half_sizes_mm: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", _as3(self.center_mm))
        object.__setattr__(self, "half_sizes_mm", _as3(self.half_sizes_mm))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=float))

    @property
    def volume_mm3(self) -> float:
        return float(8.0 * np.prod(self.half_sizes_mm))

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        q = _local(points_mm, self.center_mm, self.rotation)
        return np.all(np.abs(q) <= self.half_sizes_mm, axis=1)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return _box_bounds(self.center_mm, self.rotation, self.half_sizes_mm)


@dataclass(frozen=True)
class Capsule:
    """Solid capsule: points within ``radius_mm`` of the segment ``p0_mm``-``p1_mm``.

    Volume = pi r^2 L + 4/3 pi r^3.
    """

    p0_mm: np.ndarray
    p1_mm: np.ndarray
    radius_mm: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p0_mm", _as3(self.p0_mm))
        object.__setattr__(self, "p1_mm", _as3(self.p1_mm))

    @property
    def volume_mm3(self) -> float:
        length = float(np.linalg.norm(self.p1_mm - self.p0_mm))
        r = self.radius_mm
        return np.pi * r * r * length + 4.0 / 3.0 * np.pi * r ** 3

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        d = self.p1_mm - self.p0_mm
        dd = float(d @ d)
        rel = np.asarray(points_mm, dtype=float) - self.p0_mm
        t = np.clip(rel @ d / dd, 0.0, 1.0) if dd > 0 else np.zeros(len(rel))
        q = rel - t[:, None] * d[None, :]
        return np.einsum("ij,ij->i", q, q) <= self.radius_mm ** 2

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.minimum(self.p0_mm, self.p1_mm) - self.radius_mm
        hi = np.maximum(self.p0_mm, self.p1_mm) + self.radius_mm
        return lo, hi


@dataclass(frozen=True)
class SweptEllipse:
    """Horizontal ellipses swept along a straight line: a sheared cylinder.

    The cross-section at height ``z`` (``z0_mm <= z <= z1_mm``) is the ellipse with
    semi-axes ``semi_axes_mm`` (a along the in-plane direction at ``angle_deg`` from
    LPS +x towards +y, b perpendicular to it) centred at
    ``center_xy_mm + slope_xy * (z - z0_mm)``. Every axial cross-section has the same
    area, so the volume is exactly ``pi a b (z1 - z0)`` (Cavalieri's principle).

    Shapes sharing a slope keep their relative position in every axial slice: the
    thigh muscles follow the femoral shaft this way and stay disjoint.
    """

    center_xy_mm: tuple[float, float]
    semi_axes_mm: tuple[float, float]
    z0_mm: float
    z1_mm: float
    slope_xy: tuple[float, float] = (0.0, 0.0)
    angle_deg: float = 0.0

    @property
    def volume_mm3(self) -> float:
        a, b = self.semi_axes_mm
        return np.pi * a * b * (self.z1_mm - self.z0_mm)

    def center_at(self, z_mm: np.ndarray | float) -> np.ndarray:
        """Centre (..., 2) of the cross-section at height(s) ``z_mm`` (LPS x, y mm)."""
        z = np.asarray(z_mm, dtype=float)[..., None]
        return np.asarray(self.center_xy_mm) + np.asarray(self.slope_xy) * (z - self.z0_mm)

    def offsets(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In-plane offsets (dx, dy), each (N,) mm, of points from the section centre."""
        p = np.asarray(points_mm, dtype=float)
        (cx, cy), (sx, sy) = self.center_xy_mm, self.slope_xy
        dz = p[:, 2] - self.z0_mm
        dx = p[:, 0] - cx if sx == 0 else p[:, 0] - (cx + sx * dz)
        dy = p[:, 1] - cy if sy == 0 else p[:, 1] - (cy + sy * dz)
        return dx, dy

    def in_section(self, dx: np.ndarray, dy: np.ndarray,
                   semi_axes_mm: tuple[float, float] | None = None) -> np.ndarray:
        """Whether in-plane offsets lie in the (possibly resized) ellipse, bool (N,)."""
        a, b = self.semi_axes_mm if semi_axes_mm is None else semi_axes_mm
        if self.angle_deg:
            t = np.deg2rad(self.angle_deg)
            dx, dy = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
        return (dx / a) ** 2 + (dy / b) ** 2 <= 1.0

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(points_mm, dtype=float)
        dx, dy = self.offsets(p)
        return self.in_section(dx, dy) & (p[:, 2] >= self.z0_mm) & (p[:, 2] <= self.z1_mm)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.semi_axes_mm
        t = np.deg2rad(self.angle_deg)
        ex = np.hypot(a * np.cos(t), b * np.sin(t))
        ey = np.hypot(a * np.sin(t), b * np.cos(t))
        c0 = self.center_at(self.z0_mm)
        c1 = self.center_at(self.z1_mm)
        lo = np.minimum(c0, c1) - (ex, ey)
        hi = np.maximum(c0, c1) + (ex, ey)
        return np.array([lo[0], lo[1], self.z0_mm]), np.array([hi[0], hi[1], self.z1_mm])


@dataclass(frozen=True)
class SphericalShellCap:
    """Half a spherical shell: ``r_in <= |p - c| <= r_out`` and ``(p - c) . n >= 0``.

    Volume = 2/3 pi (r_out^3 - r_in^3) (the cutting plane passes through the centre).
    Used for the acetabulum around the femoral head.
    """

    center_mm: np.ndarray
    r_in_mm: float
    r_out_mm: float
    normal: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", _as3(self.center_mm))
        n = _as3(self.normal)
        object.__setattr__(self, "normal", n / np.linalg.norm(n))

    @property
    def volume_mm3(self) -> float:
        return 2.0 / 3.0 * np.pi * (self.r_out_mm ** 3 - self.r_in_mm ** 3)

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        q = np.asarray(points_mm, dtype=float) - self.center_mm
        r2 = np.einsum("ij,ij->i", q, q)
        return (r2 >= self.r_in_mm ** 2) & (r2 <= self.r_out_mm ** 2) & (q @ self.normal >= 0)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center_mm - self.r_out_mm, self.center_mm + self.r_out_mm


# -- combinations --------------------------------------------------------------------------
@dataclass(frozen=True)
class Union:
    """Union of shapes that the caller guarantees to be disjoint; volume = sum."""

    parts: tuple

    @property
    def volume_mm3(self) -> float:
        return float(sum(p.volume_mm3 for p in self.parts))

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(points_mm, dtype=float)
        inside = np.zeros(len(p), dtype=bool)
        for part in self.parts:
            lo, hi = part.bounds_mm()
            sel = np.all((p >= lo) & (p <= hi), axis=1)
            if sel.any():
                inside[sel] |= part.contains(p[sel])
        return inside

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        b = [p.bounds_mm() for p in self.parts]
        return np.min([x[0] for x in b], axis=0), np.max([x[1] for x in b], axis=0)

