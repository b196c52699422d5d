"""Metal implants and their streak artefacts (HU only: labels are left unchanged).

Implants (LPS mm, synthetic sizes):

* ``femoral_stem_left`` / ``femoral_stem_right``: two capsules of radius 6 mm, from
  the middle of the femoral neck (head centre + 0.55 (shaft point - head centre)) to
  the neck-shaft point of the shaft axis, then down the shaft axis to z = -170;
* ``pedicle_screw_L1`` .. ``pedicle_screw_L5``: two capsules of radius 3.25 mm from
  (+-22, 85, zc) to (+-10, 35, zc), zc the level's body centre height.

Metal is ``METAL_HU`` (3071 HU, the top of the common 12-bit CT range; real titanium
or CoCr reads at or above it). Streaks: in each axial plane within 10 mm of the
implant's z range, ``amplitude cos(2 m phi) exp(-r / 40 mm)`` is added around the
implant's axis point (m = 6 dark/bright pairs, r and phi polar coordinates): a
crude, synthetic imitation of beam hardening, enough to make nearby HU unreliable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import layout
from .base import PaintBuffer
from .shapes import Capsule, Union

METAL_HU = 3071.0
STREAK_PAIRS = 6
STREAK_DECAY_MM = 40.0
STREAK_RADIUS_MM = 120.0


def implant_shape(name: str, shafts: dict[str, layout.ShaftLine] | None = None) -> Union:
    """Analytic shape of a named implant (see module docstring); ``shafts`` gives the
    femoral shaft line per side (default :func:`.layout.shaft_line`)."""
    if name.startswith("femoral_stem_"):
        side = name.rsplit("_", 1)[1]
        if side not in ("left", "right"):
            raise InputError(f"Unknown implant '{name}': use femoral_stem_left or _right.")
        head = layout.head_center_mm(side)
        p, slope = (shafts or {}).get(side) or layout.shaft_line(side)
        neck = head + 0.55 * (p - head)
        bottom = np.array([*(p[:2] + slope * (-170.0 - p[2])), -170.0])
        return Union((Capsule(neck, p, 6.0), Capsule(p, bottom, 6.0)))
    if name.startswith("pedicle_screw_"):
        level = name.rsplit("_", 1)[1].upper()
        if level not in layout.LUMBAR_LEVELS:
            raise InputError(f"Unknown implant '{name}': use pedicle_screw_L1 .. _L5.")
        zc = float(layout.lumbar_center_mm(level)[2])
        return Union(tuple(Capsule((22.0 * s, 85.0, zc), (10.0 * s, 35.0, zc), 3.25)
                           for s in (1.0, -1.0)))
    raise InputError(
        f"Unknown implant '{name}': use femoral_stem_left, femoral_stem_right or "
        "pedicle_screw_L1 .. pedicle_screw_L5."
    )


@dataclass
class MetalComponent:
    """Paints ``METAL_HU`` inside an implant; labels are kept (metal sits in bone)."""

    name: str
    hu: float = METAL_HU
    shafts: dict | None = None

    def __post_init__(self) -> None:
        self.shape = implant_shape(self.name, self.shafts)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.shape.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        buf.hu[self.shape.contains(buf.points_mm)] = self.hu

    def truth(self) -> dict:
        return {"name": self.name, "hu": self.hu, "shape": "union of capsules"}


@dataclass
class StreakComponent:
    """Adds streak artefacts (HU only) in axial planes around an implant."""

    name: str
    amplitude_hu: float
    shafts: dict | None = None

    def __post_init__(self) -> None:
        self.shape = implant_shape(self.name, self.shafts)
        lo, hi = self.shape.bounds_mm()
        self.center_xy = (lo[:2] + hi[:2]) / 2.0
        self.z_range = (lo[2] - 10.0, hi[2] + 10.0)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        r = STREAK_RADIUS_MM
        return (np.array([*(self.center_xy - r), self.z_range[0]]),
                np.array([*(self.center_xy + r), self.z_range[1]]))

    def paint(self, buf: PaintBuffer) -> None:
        d = buf.points_mm[:, :2] - self.center_xy
        r = np.hypot(d[:, 0], d[:, 1])
        phi = np.arctan2(d[:, 1], d[:, 0])
        inside_body = buf.hu > -500.0  # no streaks painted into air
        add = self.amplitude_hu * np.cos(2 * STREAK_PAIRS * phi) * np.exp(-r / STREAK_DECAY_MM)
        buf.hu[inside_body] += add[inside_body].astype(buf.hu.dtype)

    def truth(self) -> dict:
        return {"name": self.name, "amplitude_hu": self.amplitude_hu}
