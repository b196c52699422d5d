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


@dataclass(frozen=True)
class Habitus:
    """Body size: lean outline scale and subcutaneous fat thickness (synthetic).

    The lean (fat-free) outline is the layout's outline minus its fat layer
    (trunk 172 x 122 mm, thighs 64 x 76 mm semi-axes), scaled by ``lean_scale`` about
    its centre; the skin outline is the lean one plus the fat thickness. The defaults
    reproduce the layout (:mod:`.layout`) exactly.

    Attributes
    ----------
    trunk_fat_mm, thigh_fat_mm : float
        Subcutaneous fat thickness of trunk and thighs, mm (layout: 18 and 12).
    lean_scale : float
        Scale of the lean outline's semi-axes (1 = layout).
    trunk_z1_mm : float
        Top of the trunk outline, mm (layout 280; higher with six lumbar vertebrae).
    """

    trunk_fat_mm: float = layout.TRUNK_FAT_MM
    thigh_fat_mm: float = layout.THIGH_FAT_MM
    lean_scale: float = 1.0
    trunk_z1_mm: float = layout.TRUNK_Z_MM[1]

    def _semi_mm(self, layout_semi_mm: tuple[float, float], layout_fat_mm: float,
                 fat_mm: float, inner: bool) -> tuple[float, float]:
        """Lean outline of the layout scaled by ``lean_scale``, plus ``fat_mm`` for skin."""
        add = 0.0 if inner else fat_mm
        return tuple((s - layout_fat_mm) * self.lean_scale + add  # type: ignore[return-value]
                     for s in layout_semi_mm)

    def trunk_semi_mm(self, inner: bool) -> tuple[float, float]:
        """Semi-axes (x, y) of the trunk's skin (``inner`` False) or lean outline, mm."""
        return self._semi_mm(layout.TRUNK_SEMI_MM, layout.TRUNK_FAT_MM, self.trunk_fat_mm,
                             inner)

    def thigh_semi_mm(self, inner: bool) -> tuple[float, float]:
        """Semi-axes (x, y) of a thigh's skin (``inner`` False) or lean outline, mm."""
        return self._semi_mm(layout.THIGH_SEMI_MM, layout.THIGH_FAT_MM, self.thigh_fat_mm,
                             inner)


def _outline_parts(habitus: Habitus, inner: bool, shafts: Shafts = None
                   ) -> tuple[SweptEllipse, ...]:
    parts = [SweptEllipse(layout.TRUNK_CENTER_XY_MM, habitus.trunk_semi_mm(inner),
                          layout.TRUNK_Z_MM[0], habitus.trunk_z1_mm)]
    for side in ("left", "right"):
        p, slope = (shafts or {}).get(side) or layout.shaft_line(side)
        z0, z1 = layout.THIGH_Z_MM
        off = np.array(layout.THIGH_OFFSET_MM) * (layout.side_sign(side), 1.0)
        c0 = p[:2] + off + slope * (z0 - p[2])
        parts.append(SweptEllipse(tuple(c0), habitus.thigh_semi_mm(inner),
                                  z0, z1, slope_xy=tuple(slope)))
    return tuple(parts)


def body_outer(shafts: Shafts = None, habitus: Habitus | None = None) -> Union:
    """The skin surface (outer outline) as a union of disjoint shapes.

    ``shafts``: femoral shaft line per side (default :func:`.layout.shaft_line`);
    ``habitus``: body size (default the layout's)."""
    return Union(_outline_parts(habitus or Habitus(), False, shafts))


def body_inner(shafts: Shafts = None, habitus: Habitus | None = None) -> Union:
    """The outline minus the subcutaneous fat layer."""
    return Union(_outline_parts(habitus or Habitus(), True, shafts))


@dataclass
class BodyComponent:
    """Paints the subcutaneous fat (label ``subcutaneous_fat``) and soft tissue (0).

    Parameters
    ----------
    fat_hu, soft_tissue_hu : float
        Noiseless HU of the fat layer and of the unlabelled tissue inside it.
    shafts : dict side -> (point, slope), optional
        Femoral shaft lines the thighs follow.
    habitus : Habitus, optional
        Body size and fat thickness (default the layout's).
    """

    fat_hu: float
    soft_tissue_hu: float
    shafts: Shafts = None
    habitus: Habitus | None = None

    def __post_init__(self) -> None:
        self.habitus = self.habitus or Habitus()
        self.outer = body_outer(self.shafts, self.habitus)
        self.inner = body_inner(self.shafts, self.habitus)
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
            "trunk_fat_mm": float(self.habitus.trunk_fat_mm),
            "thigh_fat_mm": float(self.habitus.thigh_fat_mm),
            "lean_scale": float(self.habitus.lean_scale),
            "trunk_semi_mm": self.habitus.trunk_semi_mm(False),
            "thigh_semi_mm": self.habitus.thigh_semi_mm(False),
        }
