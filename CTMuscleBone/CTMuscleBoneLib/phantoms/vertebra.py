"""Synthetic lumbar vertebrae (L1-L5) of known trabecular density, optionally fractured.

A vertebra is described analytically in its own frame (origin at the body centre;
``u`` patient left, ``v`` posterior, ``w`` superior; the frame may be tilted in the
sagittal plane by ``tilt_deg`` to mimic lordosis) and painted onto voxel centres:

* **body**: an elliptic cylinder (width x depth x height) whose local height can be
  reduced Genant-style: *wedge* (anterior height = ratio x posterior height, linear
  along ``v``), *biconcave* (central height = ratio x rim height, profile
  ``1 - (1 - ratio)(1 - (rho / 0.8)^2)^2`` for a normalised radius ``rho < 0.8``: both
  endplates depressed centrally, the outer rim intact) or *crush* (the whole body
  ``ratio`` x its nominal height: compare with the neighbours); a cortical shell of
  constant thickness (side wall and endplates) around a uniform trabecular core;
* optional **realistic endplates**: ``endplate_irregularity_mm`` adds a smooth random
  relief (seeded; a few sinusoids of 8-20 mm wavelength, zero mean) to each endplate and
  ``rim_rounding_mm`` rounds the edge between endplate and side wall, as real bodies and
  their TotalSegmentator labels have; the truth heights stay the nominal ones;
* **posterior elements**: pedicles (elliptic cylinders along ``v``), a lamina (the
  posterior half of an elliptic ring around the spinal canal), a spinous process and
  two transverse processes (boxes), all of one "posterior element" density;
* optional **intervertebral disc** below the body (label 0) and optional **cement**
  (a vertebroplasty ball of ``cement_hu``) in the body centre.

Every voxel of body and posterior elements gets the canonical ``vertebrae_Lx`` label
value of :mod:`CTMuscleBoneLib.anatomy`; HU are set so that
``scanner.bmd_for_hu(hu)`` equals the specified density.

All sizes and densities are **synthetic defaults**, chosen to be of the order of adult
lumbar anatomy and QCT values; they are not population statistics and describe no
real person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from ..anatomy import BY_KEY
from ..spine.fracture import genant_grade
from .base import PaintBuffer, ScannerModel

FractureType = Literal["none", "wedge", "biconcave", "crush"]
#: Normalised radius inside which a biconcave fracture depresses the endplates
#: (synthetic: the ring apophysis at the rim stays intact).
BICONCAVE_RADIUS = 0.8
LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")

#: Synthetic default body sizes per level, (width, depth, height) mm. Of the order of
#: adult lumbar vertebral bodies (width ~40-50 mm, depth ~30-35 mm, height ~25-28 mm,
#: growing caudally); unvalidated, chosen for the phantom only.
DEFAULT_BODY_SIZE_MM: dict[str, tuple[float, float, float]] = {
    "L1": (42.0, 30.0, 25.0),
    "L2": (44.0, 31.0, 26.0),
    "L3": (46.0, 32.0, 27.0),
    "L4": (48.0, 33.0, 27.0),
    "L5": (50.0, 34.0, 26.0),
}

#: Synthetic default disc HU (intervertebral discs are roughly 70-100 HU on CT;
#: unvalidated phantom value).
DEFAULT_DISC_HU = 80.0
#: Synthetic default HU of vertebroplasty cement (PMMA with barium sulphate is very
#: radio-opaque, typically well above 1500 HU; unvalidated phantom value).
DEFAULT_CEMENT_HU = 2500.0


@dataclass(frozen=True)
class VertebraSpec:
    """Analytic description of one synthetic lumbar vertebra (synthetic defaults).

    Attributes
    ----------
    level : {'L1', 'L2', 'L3', 'L4', 'L5'}
    body_centre_mm : tuple of float, (3,)
        LPS centre of the vertebral body, mm.
    body_width_mm, body_depth_mm, body_height_mm : float or None
        Left-right, antero-posterior and supero-inferior size of the unfractured body;
        None = :data:`DEFAULT_BODY_SIZE_MM` of the level.
    cortical_thickness_mm : float
        Shell (side wall and endplates) thickness, mm (synthetic 1.2 mm).
    trabecular_bmd_mg_cm3, cortical_bmd_mg_cm3, posterior_bmd_mg_cm3 : float
        Mineral densities (scanner material, normally K2HPO4), mg/cm3.
    fracture : {'none', 'wedge', 'biconcave', 'crush'}
    fracture_ratio : float
        Reduced / reference height: anterior / posterior (wedge), central / rim
        (biconcave) or height / nominal height (crush). 1.0 = no fracture; Genant
        reduction = 1 - ratio.
    endplate_irregularity_mm : float
        Amplitude (max) of a smooth random relief on each endplate, mm (0 = flat).
    rim_rounding_mm : float
        Radius of the rounded edge between the endplates and the side wall, mm.
    irregularity_seed : int
        Seed of the relief.
    label_key : str or None
        Anatomy key painted instead of ``vertebrae_<level>`` (e.g. ``vertebrae_lumbar``
        for a sixth lumbar vertebra, which takes the shape of ``level``); None = the
        level's key.
    tilt_deg : float
        Sagittal tilt of the vertebra about the patient left axis (lordosis), degrees;
        positive turns the superior axis towards posterior (+y).
    disc_below_height_mm : float
        Height of an intervertebral disc painted just below the body (0 = none).
    disc_hu : float
    cement_radius_mm : float
        Radius of a cement ball at the body centre (0 = none).
    cement_hu : float
    """

    level: str = "L3"
    body_centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    body_width_mm: float | None = None
    body_depth_mm: float | None = None
    body_height_mm: float | None = None
    cortical_thickness_mm: float = 1.2
    trabecular_bmd_mg_cm3: float = 120.0
    cortical_bmd_mg_cm3: float = 500.0
    posterior_bmd_mg_cm3: float = 300.0
    fracture: FractureType = "none"
    fracture_ratio: float = 1.0
    tilt_deg: float = 0.0
    disc_below_height_mm: float = 0.0
    disc_hu: float = DEFAULT_DISC_HU
    cement_radius_mm: float = 0.0
    cement_hu: float = DEFAULT_CEMENT_HU
    endplate_irregularity_mm: float = 0.0
    rim_rounding_mm: float = 0.0
    irregularity_seed: int = 0
    label_key: str | None = None

    def __post_init__(self) -> None:
        if self.label_key is not None and self.label_key not in BY_KEY:
            raise ValueError(f"unknown anatomy key {self.label_key!r}")
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.fracture not in get_args(FractureType):
            raise ValueError(f"unknown fracture type {self.fracture!r}")
        if not 0.2 <= self.fracture_ratio <= 1.0:
            raise ValueError("fracture_ratio must lie in [0.2, 1]")

    @property
    def size_mm(self) -> tuple[float, float, float]:
        """(width, depth, height) of the unfractured body, mm."""
        w, d, h = DEFAULT_BODY_SIZE_MM[self.level]
        return (
            self.body_width_mm if self.body_width_mm is not None else w,
            self.body_depth_mm if self.body_depth_mm is not None else d,
            self.body_height_mm if self.body_height_mm is not None else h,
        )

    @property
    def key(self) -> str:
        return self.label_key or f"vertebrae_{self.level}"


@dataclass(frozen=True)
class VertebraTruth:
    """Analytic truth of a :class:`VertebraPhantom`.

    Heights are measured along the vertebra's own superior axis at the mid-sagittal
    plane: anterior (at the anterior wall), middle (centre) and posterior (posterior
    wall), mm. The trabecular core is uniform, so the analytic mean of any ROI inside
    it equals ``trabecular_hu`` (noiseless).
    """

    level: str
    key: str
    label_value: int
    body_centre_mm: tuple[float, float, float]
    superior_axis: tuple[float, float, float]
    body_width_mm: float
    body_depth_mm: float
    body_height_mm: float
    anterior_height_mm: float
    middle_height_mm: float
    posterior_height_mm: float
    fracture: str
    fracture_ratio: float
    height_reduction: float
    genant_grade: int
    trabecular_bmd_mg_cm3: float
    trabecular_hu: float
    roi_mean_hu: float
    roi_mean_bmd_mg_cm3: float
    cortical_thickness_mm: float
    has_cement: bool


class VertebraPhantom:
    """Paints one synthetic vertebra (see module docstring) on voxel centres.

    Parameters
    ----------
    spec : VertebraSpec
    scanner : ScannerModel
        Converts the densities to HU.
    """

    def __init__(self, spec: VertebraSpec, scanner: ScannerModel | None = None) -> None:
        self.spec = spec
        self.scanner = scanner if scanner is not None else ScannerModel()
        self.label_value = BY_KEY[spec.key].label_value
        w, d, h = spec.size_mm
        self.a_mm, self.b_mm, self.h_mm = w / 2.0, d / 2.0, h
        t = np.deg2rad(spec.tilt_deg)
        # columns: local u (left), v (posterior), w (superior) in LPS
        self.rotation = np.array(
            [[1.0, 0.0, 0.0], [0.0, np.cos(t), np.sin(t)], [0.0, -np.sin(t), np.cos(t)]]
        )
        self.centre = np.asarray(spec.body_centre_mm, dtype=float)
        # posterior element layout (synthetic proportions, mm, local frame)
        self.canal_v = self.b_mm + 9.0
        self.canal_semi = (11.0, 8.0)
        self.lamina_semi = (16.5, 14.0)
        self.pedicle_u = self.canal_semi[0] + 4.5
        self.pedicle_semi = (4.5, 6.0)  # (u, w) semi-axes
        self.tp_length = 22.0
        self.spinous_length = 25.0

    # -- geometry --------------------------------------------------------------------
    def local(self, points_mm: np.ndarray) -> np.ndarray:
        """Coordinates (N, 3) of LPS points in the vertebra frame (u, v, w), mm."""
        d = np.asarray(points_mm, dtype=float) - self.centre
        r = self.rotation
        return np.stack([d[:, 0] * r[0, k] + d[:, 1] * r[1, k] + d[:, 2] * r[2, k]
                         for k in range(3)], axis=1)

    def local_height(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Body height (mm) at local (u, v) positions (inside the ellipse)."""
        s = self.spec
        r = 1.0 - s.fracture_ratio
        if s.fracture == "wedge":
            frac = np.clip((v / self.b_mm + 1.0) / 2.0, 0.0, 1.0)  # 0 anterior, 1 posterior
            return self.h_mm * (s.fracture_ratio + r * frac)
        if s.fracture == "biconcave":
            rho2 = ((u / self.a_mm) ** 2 + (v / self.b_mm) ** 2) / BICONCAVE_RADIUS**2
            return self.h_mm * (1.0 - r * (1.0 - np.clip(rho2, 0.0, 1.0)) ** 2)
        if s.fracture == "crush":
            return np.full(np.shape(u), self.h_mm * s.fracture_ratio)
        return np.full(np.shape(u), self.h_mm)

    def _relief(self, u: np.ndarray, v: np.ndarray, which: int) -> np.ndarray:
        """Inward displacement (mm) of an endplate (0 bottom, 1 top) at (u, v)."""
        s = self.spec
        out = np.zeros(np.shape(u))
        if s.endplate_irregularity_mm > 0:
            rng = np.random.default_rng([s.irregularity_seed, which])
            n = 4
            wl = rng.uniform(8.0, 20.0, n)
            ang = rng.uniform(0.0, np.pi, n)
            ph = rng.uniform(0.0, 2 * np.pi, n)
            for k in range(n):
                arg = 2 * np.pi / wl[k] * (u * np.cos(ang[k]) + v * np.sin(ang[k])) + ph[k]
                out += np.sin(arg)
            out *= s.endplate_irregularity_mm / n
        if s.rim_rounding_mm > 0:
            rc = s.rim_rounding_mm
            rho = np.sqrt((u / self.a_mm) ** 2 + (v / self.b_mm) ** 2)
            inset = np.clip((1.0 - rho) * min(self.a_mm, self.b_mm), 0.0, rc)
            out += rc - np.sqrt(np.maximum(rc**2 - (rc - inset) ** 2, 0.0))
        return out

    def _surfaces(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bottom and top endplate positions along ``w`` at (u, v), mm."""
        half = self.local_height(u, v) / 2.0
        return -half + self._relief(u, v, 0), half - self._relief(u, v, 1)

    def body_mask(self, points_mm: np.ndarray) -> np.ndarray:
        """Which points (N, 3) lie in the vertebral body (cortex + trabecular), bool (N,)."""
        return self._body(self.local(points_mm))

    def _body(self, q: np.ndarray) -> np.ndarray:
        u, v, w = q[:, 0], q[:, 1], q[:, 2]
        inside = (u / self.a_mm) ** 2 + (v / self.b_mm) ** 2 <= 1.0
        lo, hi = self._surfaces(u, v)
        return inside & (w >= lo) & (w <= hi)

    def trabecular_mask(self, points_mm: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """Points (N, 3) inside the trabecular core shrunk by ``margin_mm``, bool (N,)."""
        return self._trabecular(self.local(points_mm), margin_mm)

    def _trabecular(self, q: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        u, v, w = q[:, 0], q[:, 1], q[:, 2]
        t = self.spec.cortical_thickness_mm + margin_mm
        a, b = self.a_mm - t, self.b_mm - t
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        lo, hi = self._surfaces(u, v)
        return inside & (w >= lo + t) & (w <= hi - t)

    def posterior_mask(self, points_mm: np.ndarray) -> np.ndarray:
        """Points (N, 3) in the posterior elements (outside the body), bool (N,)."""
        return self._posterior(self.local(points_mm))

    def _posterior(self, q: np.ndarray) -> np.ndarray:
        u, v, w = q[:, 0], q[:, 1], q[:, 2]
        h = self.h_mm
        # pedicles: elliptic cylinders along v, from inside the posterior wall to the canal
        wp = w - 0.2 * h
        ped = (
            (v >= self.b_mm - 3.0) & (v <= self.canal_v + 4.0)
            & (((np.abs(u) - self.pedicle_u) / self.pedicle_semi[0]) ** 2
               + (wp / self.pedicle_semi[1]) ** 2 <= 1.0)
        )
        # lamina: posterior half (plus 2 mm) of an elliptic ring around the canal
        dv = v - self.canal_v
        r_out = (u / self.lamina_semi[0]) ** 2 + (dv / self.lamina_semi[1]) ** 2
        r_in = (u / self.canal_semi[0]) ** 2 + (dv / self.canal_semi[1]) ** 2
        lam = (r_out <= 1.0) & (r_in > 1.0) & (dv >= -2.0) & (np.abs(w - 0.05 * h) <= 0.4 * h)
        # spinous process
        v0 = self.canal_v + self.lamina_semi[1] - 2.0
        spin = (
            (np.abs(u) <= 3.0) & (v >= v0) & (v <= v0 + self.spinous_length)
            & (np.abs(w + 0.1 * h) <= 0.3 * h)
        )
        # transverse processes
        tp = (
            (np.abs(u) >= self.pedicle_u) & (np.abs(u) <= self.pedicle_u + self.tp_length)
            & (np.abs(v - (self.canal_v - 1.0)) <= 3.5) & (np.abs(w - 0.15 * h) <= 5.0)
        )
        return ped | lam | spin | tp

    # -- Component protocol ------------------------------------------------------------
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS min and max corner (each (3,)) of a box containing the vertebra and disc."""
        half_u = self.pedicle_u + self.tp_length
        v_min = -self.b_mm
        v_max = self.canal_v + self.lamina_semi[1] - 2.0 + self.spinous_length
        w_lo = -self.h_mm / 2.0 - self.spec.disc_below_height_mm
        w_hi = self.h_mm / 2.0
        corners = np.array(
            [[u, v, w] for u in (-half_u, half_u) for v in (v_min, v_max) for w in (w_lo, w_hi)]
        )
        pts = corners @ self.rotation.T + self.centre
        return pts.min(axis=0) - 1.0, pts.max(axis=0) + 1.0

    def paint(self, buf: PaintBuffer) -> None:
        """Paint disc (label 0, only where unlabelled), posterior elements, body, cement."""
        s, sc = self.spec, self.scanner
        pts = buf.points_mm
        if pts.shape[0] == 0:
            return
        q = self.local(pts)
        u, v, w = q[:, 0], q[:, 1], q[:, 2]
        if s.disc_below_height_mm > 0:
            in_ell = (u / self.a_mm) ** 2 + (v / self.b_mm) ** 2 <= 1.0
            lo = -self.h_mm / 2.0 - s.disc_below_height_mm
            disc = in_ell & (w > lo) & (w < -self.h_mm / 2.0) & (buf.labels == 0)
            disc &= ~self._body(q)
            buf.hu[disc] = s.disc_hu
        post = self._posterior(q)
        buf.labels[post] = self.label_value
        buf.hu[post] = float(sc.hu_for_bmd(s.posterior_bmd_mg_cm3))
        body = self._body(q)
        buf.labels[body] = self.label_value
        buf.hu[body] = float(sc.hu_for_bmd(s.cortical_bmd_mg_cm3))
        trab = self._trabecular(q)
        buf.hu[trab] = float(sc.hu_for_bmd(s.trabecular_bmd_mg_cm3))
        if s.cement_radius_mm > 0:
            cem = np.sum(q**2, axis=1) <= s.cement_radius_mm**2
            buf.hu[cem & body] = s.cement_hu

    def truth(self) -> VertebraTruth:
        """Analytic truth (see :class:`VertebraTruth`)."""
        s = self.spec
        zero = np.zeros(1)
        h_ant = float(self.local_height(zero, np.array([-self.b_mm]))[0])
        h_mid = float(self.local_height(zero, zero)[0])
        h_post = float(self.local_height(zero, np.array([self.b_mm]))[0])
        reduction = 1.0 - s.fracture_ratio if s.fracture != "none" else 0.0
        hu = float(self.scanner.hu_for_bmd(s.trabecular_bmd_mg_cm3))
        w, d, h = s.size_mm
        return VertebraTruth(
            level=s.level,
            key=s.key,
            label_value=self.label_value,
            body_centre_mm=tuple(float(c) for c in self.centre),  # type: ignore[arg-type]
            superior_axis=tuple(float(c) for c in self.rotation[:, 2]),  # type: ignore[arg-type]
            body_width_mm=w,
            body_depth_mm=d,
            body_height_mm=h,
            anterior_height_mm=h_ant,
            middle_height_mm=h_mid,
            posterior_height_mm=h_post,
            fracture=s.fracture,
            fracture_ratio=s.fracture_ratio if s.fracture != "none" else 1.0,
            height_reduction=reduction,
            genant_grade=genant_grade(reduction),
            trabecular_bmd_mg_cm3=s.trabecular_bmd_mg_cm3,
            trabecular_hu=hu,
            roi_mean_hu=hu,
            roi_mean_bmd_mg_cm3=s.trabecular_bmd_mg_cm3,
            cortical_thickness_mm=s.cortical_thickness_mm,
            has_cement=s.cement_radius_mm > 0,
        )


def lumbar_spine(
    specs: Sequence[VertebraSpec] | None = None,
    scanner: ScannerModel | None = None,
    *,
    l1_centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    level_spacing_mm: float = 35.0,
    trabecular_bmd_mg_cm3: float = 120.0,
) -> list[VertebraPhantom]:
    """A stack of lumbar vertebrae with discs between them, ordered L5 (first) to L1.

    Parameters
    ----------
    specs : sequence of VertebraSpec or None
        The vertebrae to stack (any order, unique keys, their centres used as given;
        specs of the same shape level are stacked by the height of their centres);
        None = L1-L5 with default sizes, L1 body centre at ``l1_centre_mm`` and each
        lower level ``level_spacing_mm`` (synthetic 35 mm) further inferior.
    scanner : ScannerModel or None
    trabecular_bmd_mg_cm3 : float
        Trabecular density of the default vertebrae.

    Returns
    -------
    list of VertebraPhantom
        L5 first. Each vertebra with a lower neighbour gets a disc filling the gap
        between the two bodies (L5 and the lowest given level get none).
    """
    if specs is None:
        c = np.asarray(l1_centre_mm, dtype=float)
        specs = [
            VertebraSpec(level=lv, body_centre_mm=tuple(c - [0.0, 0.0, n * level_spacing_mm]),
                         trabecular_bmd_mg_cm3=trabecular_bmd_mg_cm3)
            for n, lv in enumerate(LEVELS)
        ]
    ordered = sorted(specs, key=lambda s: (LEVELS.index(s.level), -s.body_centre_mm[2]),
                     reverse=True)  # L5 first
    if len({s.key for s in ordered}) != len(ordered):
        raise ValueError("lumbar_spine: each level (anatomy key) may appear once")
    out: list[VertebraSpec] = []
    for i, s in enumerate(ordered):
        if i > 0 and s.disc_below_height_mm == 0:
            below = ordered[i - 1]
            gap = (
                float(np.linalg.norm(np.subtract(s.body_centre_mm, below.body_centre_mm)))
                - s.size_mm[2] / 2.0 - below.size_mm[2] / 2.0
            )
            if gap > 0:
                s = replace(s, disc_below_height_mm=gap)
        out.append(s)
    return [VertebraPhantom(s, scanner) for s in out]
