"""Muscles of the phantom: analytic shapes with intramuscular fat of a known fraction.

Layout (LPS mm, left side; the right side is mirrored through x = 0). Thigh muscles
are :class:`~.shapes.SweptEllipse` cross-sections that follow the femoral shaft axis
S(z) (:func:`.layout.shaft_line`), given as offsets (dx lateral-positive, dy
posterior-positive) from S, so they keep their arrangement in every axial slice and
stay >= 22 mm less the shear (2.5 mm) from the shaft axis, clear of a shaft of radius
<= 16 mm. They run from z = -290 to -95 (below the lesser trochanter), with a small
common shear (:data:`THIGH_MUSCLE_SHEAR`). Hip and trunk muscles are fixed shapes.
All values are synthetic design choices; volumes are analytic.

=====================  =============================================================
muscle                 shape (left)
=====================  =============================================================
gluteus_maximus        vertical elliptic cylinder, centre (85, 92), 42 x 18, z -35..55
gluteus_medius         ellipsoid, centre (145, 15, 80), semi-axes 18 x 40 x 30
gluteus_minimus        ellipsoid, centre (116, 15, 48), semi-axes 9 x 28 x 12
iliopsoas              vertical elliptic cylinder, centre (75, -62), 18 x 14, z -38..45
psoas_major            vertical elliptic cylinder, centre (45, 22), 14 x 14, z 65..245
autochthon             vertical elliptic cylinder, centre (32, 105), 20 x 15, z 65..265
vastus_intermedius     S + (0, -31), 19 x 8
rectus_femoris         S + (0, -58), 15 x 11
vastus_lateralis       S + (33, -6), 10 x 22
vastus_medialis        S + (-35, -32), 11 x 13
sartorius              S + (-36, -62), 9 x 9
adductor_longus        S + (-56, -12), 9 x 13
adductor_brevis        S + (-40, 2), 8 x 8
adductor_magnus        S + (-38, 30), 15 x 16
gracilis               S + (-62, 14), 6 x 6
biceps_femoris         S + (18, 36), 11 x 11
semitendinosus         S + (-10, 48), 9 x 9
semimembranosus        S + (-6, 30), 6 x 6
=====================  =============================================================

Intramuscular fat: a smooth Gaussian-like random field (a sum of random cosines,
"random Fourier features", correlation length ``FAT_FIELD_LENGTH_MM``) is defined in
physical space from a seed; voxels where the field is below its ``fraction``-quantile
(estimated on points sampled uniformly inside the muscle's shape) get the fat HU.
The pattern is therefore the same physical pattern in every storage orientation and
the realised fraction equals the designed one up to sampling and voxelisation.

Atrophy (:func:`atrophied_shape`): a factor f shrinks a muscle's axial cross-section
about its own axis (semi-axes in x and y times f, centre line and z extent kept), so
its volume is exactly f^2 times the original; the builder paints the space the muscle
left as unlabelled fat (:class:`IntermuscularFat`), as in atrophic muscle replaced by
fat. Six lumbar vertebrae (:func:`extended_shape`) lengthen psoas and autochthon
cranially by the extra vertebra's pitch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..anatomy import structure
from . import layout
from .base import PaintBuffer
from .shapes import Ellipsoid, SweptEllipse

#: Correlation length of the intramuscular fat field, mm (synthetic: marbling streaks
#: a few mm wide).
FAT_FIELD_LENGTH_MM = 3.0
#: Number of random cosines in the fat field.
FAT_FIELD_TERMS = 12
#: Points sampled inside a muscle to set the fat threshold.
FAT_QUANTILE_SAMPLES = 8000

#: Thigh muscles: (key base, (dx, dy) from the shaft axis, (a, b) semi-axes), mm.
THIGH_MUSCLES: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
    ("vastus_intermedius", (0.0, -31.0), (19.0, 8.0)),
    ("rectus_femoris", (0.0, -58.0), (15.0, 11.0)),
    ("vastus_lateralis", (33.0, -6.0), (10.0, 22.0)),
    ("vastus_medialis", (-35.0, -32.0), (11.0, 13.0)),
    ("sartorius", (-36.0, -62.0), (9.0, 9.0)),
    ("adductor_longus", (-56.0, -12.0), (9.0, 13.0)),
    ("adductor_brevis", (-40.0, 2.0), (8.0, 8.0)),
    ("adductor_magnus", (-38.0, 30.0), (15.0, 16.0)),
    ("gracilis", (-62.0, 14.0), (6.0, 6.0)),
    ("biceps_femoris", (18.0, 36.0), (11.0, 11.0)),
    ("semitendinosus", (-10.0, 48.0), (9.0, 9.0)),
    ("semimembranosus", (-6.0, 30.0), (6.0, 6.0)),
)
#: z range of the thigh muscles, mm.
THIGH_MUSCLE_Z_MM = (-290.0, -95.0)
#: Extra slope (dx/dz lateral-positive, dy/dz) of all thigh muscles relative to the
#: shaft axis, about the middle of their z range: +-2.0 / 1.5 mm over their length.
#: Synthetic: it makes axial cross-sections drift across the voxel lattice so the
#: voxel count of a muscle averages out boundary aliasing (a cross-section that is
#: identical in every slice would repeat one slice's lattice error), and it keeps the
#: muscles >= 17.5 mm from the shaft axis.
THIGH_MUSCLE_SHEAR = (0.02, 0.015)

#: Every muscle key base the phantom can contain.
MUSCLE_BASES: tuple[str, ...] = (
    "gluteus_maximus", "gluteus_medius", "gluteus_minimus", "iliopsoas", "psoas_major",
    "autochthon", *(m[0] for m in THIGH_MUSCLES),
)


def muscle_shape(base: str, side: str, shaft: layout.ShaftLine | None = None):  # noqa: ANN201
    """Analytic shape of muscle ``base`` on ``side`` ('left' | 'right').

    ``shaft``: the femoral shaft line (point, slope) thigh muscles follow (default
    :func:`.layout.shaft_line`)."""
    s = layout.side_sign(side)
    if base == "gluteus_maximus":
        return SweptEllipse((85.0 * s, 92.0), (42.0, 18.0), -35.0, 55.0)
    if base == "gluteus_medius":
        return Ellipsoid((145.0 * s, 15.0, 80.0), (18.0, 40.0, 30.0))
    if base == "gluteus_minimus":
        return Ellipsoid((116.0 * s, 15.0, 48.0), (9.0, 28.0, 12.0))
    if base == "iliopsoas":
        return SweptEllipse((75.0 * s, -62.0), (18.0, 14.0), -38.0, 45.0)
    if base == "psoas_major":
        return SweptEllipse((45.0 * s, 22.0), (14.0, 14.0), 65.0, 245.0)
    if base == "autochthon":
        return SweptEllipse((32.0 * s, 105.0), (20.0, 15.0), 65.0, 265.0)
    for name, (dx, dy), semi in THIGH_MUSCLES:
        if name == base:
            p, slope = shaft if shaft is not None else layout.shaft_line(side)
            z0, z1 = THIGH_MUSCLE_Z_MM
            shear = np.array(THIGH_MUSCLE_SHEAR) * (s, 1.0)
            c0 = (p[:2] + np.array([dx * s, dy]) + slope * (z0 - p[2])
                  + shear * (z0 - (z0 + z1) / 2.0))
            return SweptEllipse(tuple(c0), semi, z0, z1, slope_xy=tuple(slope + shear))
    raise KeyError(f"no phantom muscle '{base}'")


#: Muscles that run along the lumbar spine and reach one pitch higher with six lumbar
#: vertebrae.
SPINAL_MUSCLES = ("psoas_major", "autochthon")


def extended_shape(shape, base: str, extra_mm: float):  # noqa: ANN001, ANN201
    """``shape`` with its top raised by ``extra_mm`` for the spinal muscles (psoas,
    autochthon); other muscles, or ``extra_mm`` = 0, unchanged."""
    if extra_mm == 0 or base not in SPINAL_MUSCLES:
        return shape
    return replace(shape, z1_mm=shape.z1_mm + extra_mm)


def atrophied_shape(shape, factor: float):  # noqa: ANN001, ANN201
    """``shape`` with its axial cross-section shrunk by ``factor`` about its own axis.

    SweptEllipse: semi-axes (a, b) -> (f a, f b), same centre line and z range;
    axis-aligned Ellipsoid: x and y semi-axes times f. The volume is f^2 times the
    original exactly. ``factor`` 1 returns the shape itself.
    """
    if factor == 1.0:
        return shape
    if isinstance(shape, SweptEllipse):
        a, b = shape.semi_axes_mm
        return replace(shape, semi_axes_mm=(a * factor, b * factor))
    if isinstance(shape, Ellipsoid) and np.allclose(shape.rotation, np.eye(3)):
        a, b, c = shape.semi_axes_mm
        return Ellipsoid(shape.center_mm, (a * factor, b * factor, c))
    raise TypeError(f"cannot atrophy a {type(shape).__name__}")


@dataclass
class IntermuscularFat:
    """Paints fat HU, unlabelled (0), inside ``shape``: the space an atrophied muscle
    left (the muscle itself is painted afterwards, on top)."""

    shape: object
    fat_hu: float

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.shape.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        inside = self.shape.contains(buf.points_mm)
        buf.labels[inside] = 0
        buf.hu[inside] = self.fat_hu

    def truth(self) -> dict:
        return {"volume_cm3": self.shape.volume_mm3 / 1000.0, "hu": float(self.fat_hu)}


def _sample_inside(shape, n: int, rng: np.random.Generator) -> np.ndarray:  # noqa: ANN001
    lo, hi = shape.bounds_mm()
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        pts = rng.uniform(lo, hi, size=(2 * n, 3))
        pts = pts[shape.contains(pts)]
        out.append(pts)
        got += len(pts)
    return np.concatenate(out)[:n]


@dataclass
class FatField:
    """A smooth random field on LPS space: sum of ``terms`` random cosines.

    ``value(p) = sqrt(2 / K) sum_k cos(w_k . p + phi_k)``, with ``w_k ~ N(0, I / L^2)``
    and ``phi_k ~ U(0, 2 pi)``: approximately Gaussian, unit variance, correlation
    length ``length_mm``.
    """

    seed: int
    length_mm: float = FAT_FIELD_LENGTH_MM
    terms: int = FAT_FIELD_TERMS
    omega: np.ndarray = field(init=False)
    phase: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.omega = rng.normal(0.0, 1.0 / self.length_mm, size=(self.terms, 3))
        self.phase = rng.uniform(0.0, 2 * np.pi, size=self.terms)

    def value(self, points_mm: np.ndarray) -> np.ndarray:
        """Field values (N,) at LPS points (N, 3)."""
        arg = np.asarray(points_mm, dtype=float) @ self.omega.T + self.phase
        return np.sqrt(2.0 / self.terms) * np.cos(arg.astype(np.float32)).sum(axis=1)


@dataclass
class MuscleComponent:
    """One muscle: label of ``key``, muscle HU, and fat HU on a known voxel fraction.

    Parameters
    ----------
    key : str
        Anatomy key, e.g. ``gluteus_medius_left``.
    shape : analytic shape (:mod:`.shapes`)
    muscle_hu, fat_hu : float
        Noiseless HU of lean muscle and of intramuscular fat.
    fat_fraction : float
        Designed fraction (0..1) of the muscle's volume that is fat.
    seed : int
        Seed of the fat field (the builder derives it from the phantom seed and key).
    atrophy : float
        Cross-section factor this muscle was shrunk by (1 = none; ``shape`` is the
        shrunk shape), recorded in the truth.
    """

    key: str
    shape: object
    muscle_hu: float
    fat_hu: float
    fat_fraction: float = 0.0
    seed: int = 0
    atrophy: float = 1.0

    def __post_init__(self) -> None:
        self.label_value = structure(self.key).label_value
        self.field = FatField(self.seed)
        self._threshold: float | None = None

    @property
    def threshold(self) -> float:
        """Field value below which a voxel is fat: the ``fat_fraction`` quantile of the
        field over points sampled uniformly in the shape (computed once, seeded)."""
        if self._threshold is None:
            if self.fat_fraction <= 0:
                self._threshold = -np.inf
            else:
                rng = np.random.default_rng(self.seed + 1)
                pts = _sample_inside(self.shape, FAT_QUANTILE_SAMPLES, rng)
                self._threshold = float(np.quantile(self.field.value(pts), self.fat_fraction))
        return self._threshold

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.shape.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        inside = self.shape.contains(buf.points_mm)
        buf.labels[inside] = self.label_value
        hu = np.full(int(inside.sum()), self.muscle_hu, dtype=np.float32)
        if self.fat_fraction > 0 and hu.size:
            fat = self.field.value(buf.points_mm[inside]) < self.threshold
            hu[fat] = self.fat_hu
        buf.hu[inside] = hu

    def expected_hu(self, fat_fraction: float | None = None) -> float:
        """Noiseless mean HU for a fat fraction (default: the designed one)."""
        f = self.fat_fraction if fat_fraction is None else fat_fraction
        return float((1 - f) * self.muscle_hu + f * self.fat_hu)

    def truth(self) -> dict:
        return {
            "key": self.key, "label_value": self.label_value,
            "volume_cm3": self.shape.volume_mm3 / 1000.0,
            "muscle_hu": float(self.muscle_hu), "fat_hu": float(self.fat_hu),
            "fat_fraction_designed": float(self.fat_fraction),
            "hu_mean_designed": self.expected_hu(), "shape": type(self.shape).__name__,
            "atrophy_factor": float(self.atrophy),
            "volume_before_atrophy_cm3": self.shape.volume_mm3 / 1000.0 / self.atrophy**2,
        }
