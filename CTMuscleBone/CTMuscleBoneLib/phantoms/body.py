"""Body outline: trunk and thighs, subcutaneous fat layer, soft tissue inside.

The outline is a union of disjoint :class:`~.shapes.SweptEllipse` pieces (the trunk,
and one piece per thigh that follows the femoral shaft); the fat layer is the outline
minus the same pieces shrunk by the fat thickness, so its analytic volume is
``V(outer) - V(inner)``. Inside the inner outline everything not claimed later is
soft tissue (label 0). Layout: :mod:`.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy import structure
from . import layout
from .base import PaintBuffer
from .shapes import SweptEllipse, Union

Shafts = dict[str, layout.ShaftLine] | None


def _outline_parts(inset_mm_trunk: float, inset_mm_thigh: float, shafts: Shafts = None
                   ) -> tuple[SweptEllipse, ...]:
    tx, ty = layout.TRUNK_SEMI_MM
    parts = [SweptEllipse(layout.TRUNK_CENTER_XY_MM,
                          (tx - inset_mm_trunk, ty - inset_mm_trunk), *layout.TRUNK_Z_MM)]
    for side in ("left", "right"):
        p, slope = (shafts or {}).get(side) or layout.shaft_line(side)
        z0, z1 = layout.THIGH_Z_MM
        off = np.array(layout.THIGH_OFFSET_MM) * (layout.side_sign(side), 1.0)
        c0 = p[:2] + off + slope * (z0 - p[2])
        a, b = layout.THIGH_SEMI_MM
        parts.append(SweptEllipse(tuple(c0), (a - inset_mm_thigh, b - inset_mm_thigh),
                                  z0, z1, slope_xy=tuple(slope)))
    return tuple(parts)


def body_outer(shafts: Shafts = None) -> Union:
    """The skin surface (outer outline) as a union of disjoint shapes.

    ``shafts``: femoral shaft line per side (default :func:`.layout.shaft_line`)."""
    return Union(_outline_parts(0.0, 0.0, shafts))


def body_inner(shafts: Shafts = None) -> Union:
    """The outline minus the subcutaneous fat layer."""
    return Union(_outline_parts(layout.TRUNK_FAT_MM, layout.THIGH_FAT_MM, shafts))


@dataclass
class BodyComponent:
    """Paints the subcutaneous fat (label ``subcutaneous_fat``) and soft tissue (0).

    Parameters
    ----------
    fat_hu, soft_tissue_hu : float
        Noiseless HU of the fat layer and of the unlabelled tissue inside it.
    shafts : dict side -> (point, slope), optional
        Femoral shaft lines the thighs follow.
    """

    fat_hu: float
    soft_tissue_hu: float
    shafts: Shafts = None

    def __post_init__(self) -> None:
        self.outer = body_outer(self.shafts)
        self.inner = body_inner(self.shafts)
        self.label_value = structure("subcutaneous_fat").label_value

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.outer.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        p = buf.points_mm
        for out_part, in_part in zip(self.outer.parts, self.inner.parts, strict=True):
            sel = np.flatnonzero((p[:, 2] >= out_part.z0_mm) & (p[:, 2] <= out_part.z1_mm))
            if sel.size == 0:
                continue
            dx, dy = out_part.offsets(p[sel])
            outer = out_part.in_section(dx, dy)
            inner = outer & out_part.in_section(dx, dy, in_part.semi_axes_mm)
            fat = sel[outer & ~inner]
            buf.labels[fat] = self.label_value
            buf.hu[fat] = self.fat_hu
            soft = sel[inner]
            buf.labels[soft] = 0
            buf.hu[soft] = self.soft_tissue_hu

    def truth(self) -> dict:
        return {
            "key": "subcutaneous_fat", "label_value": self.label_value,
            "volume_cm3": (self.outer.volume_mm3 - self.inner.volume_mm3) / 1000.0,
            "body_volume_cm3": self.outer.volume_mm3 / 1000.0,
            "hu": float(self.fat_hu), "soft_tissue_hu": float(self.soft_tissue_hu),
        }
