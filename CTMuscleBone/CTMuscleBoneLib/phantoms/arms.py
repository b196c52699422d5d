"""Arms at the sides of the trunk: unlabelled skin/fat, muscle and a humerus-like bone.

In abdominal and pelvic CTs the arms often lie at the patient's sides; they are what
cuts the lateral field of view in real scans. Each arm is a vertical elliptic
cylinder (LPS mm) lateral of the trunk, from z = 0 to the top of the trunk:

* centre x = +-(trunk skin semi-axis x + :data:`ARM_GAP_MM` + arm skin semi-axis x),
  y = the trunk centre's y;
* skin outline: lean semi-axes :data:`ARM_LEAN_SEMI_MM` x the habitus' lean scale, plus
  the fat thickness (the thigh's: arms and thighs carry similar fat);
* muscle inside the fat layer; a bone cylinder of radius :data:`HUMERUS_RADIUS_MM` at
  the arm's centre with a cortex of :data:`HUMERUS_CORTEX_MM` (cortical and marrow
  densities converted to HU with the phantom's scanner).

Everything is label 0 (background): no structure of the anatomy table lies in the arm,
so no truth changes. Sizes and densities are synthetic design choices of adult order,
not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import layout
from .base import PaintBuffer, ScannerModel
from .body import Habitus
from .shapes import SweptEllipse

#: Air gap between trunk and arm skin, mm (synthetic).
ARM_GAP_MM = 10.0
#: Lean (fat-free) semi-axes (x, y) of the arm, mm (synthetic, upper-arm order).
ARM_LEAN_SEMI_MM = (36.0, 42.0)
#: Humerus-like bone: outer radius and cortical thickness, mm (synthetic).
HUMERUS_RADIUS_MM = 11.0
HUMERUS_CORTEX_MM = 3.0
#: Cortical and marrow mineral densities of the arm bone, mg/cm3 (synthetic,
#: unvalidated; of the order of QCT values of cortical bone and fatty marrow).
HUMERUS_CORTICAL_BMD_MG_CM3 = 800.0
HUMERUS_MARROW_BMD_MG_CM3 = 40.0
#: Lowest z of the arms, mm (synthetic: the hands lie beside the hips).
ARM_Z0_MM = 0.0


@dataclass
class ArmComponent:
    """One arm (see module docstring); paints label 0 only.

    Parameters
    ----------
    side : 'left' | 'right'
    habitus : Habitus
        Body size (trunk width places the arm; lean scale and thigh fat size it).
    fat_hu, muscle_hu : float
    scanner : ScannerModel
        Converts the bone densities to HU.
    """

    side: str
    habitus: Habitus
    fat_hu: float
    muscle_hu: float
    scanner: ScannerModel

    def __post_init__(self) -> None:
        h = self.habitus
        lx, ly = (v * h.lean_scale for v in ARM_LEAN_SEMI_MM)
        fat = h.thigh_fat_mm
        self.skin_semi_mm = (lx + fat, ly + fat)
        self.lean_semi_mm = (lx, ly)
        tx = h.trunk_semi_mm(False)[0]
        cx = layout.side_sign(self.side) * (tx + ARM_GAP_MM + self.skin_semi_mm[0])
        cy = layout.TRUNK_CENTER_XY_MM[1]
        self.centre_xy_mm = (float(cx), float(cy))
        self.z_mm = (ARM_Z0_MM, h.trunk_z1_mm)
        self.outer = SweptEllipse(self.centre_xy_mm, self.skin_semi_mm, *self.z_mm)
        self.cortical_hu = float(self.scanner.hu_for_bmd(HUMERUS_CORTICAL_BMD_MG_CM3))
        self.marrow_hu = float(self.scanner.hu_for_bmd(HUMERUS_MARROW_BMD_MG_CM3))

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.outer.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        p = buf.points_mm
        dx, dy = self.outer.offsets(p)
        inz = (p[:, 2] >= self.z_mm[0]) & (p[:, 2] <= self.z_mm[1])
        skin = inz & self.outer.in_section(dx, dy)
        lean = skin & self.outer.in_section(dx, dy, self.lean_semi_mm)
        r2 = dx * dx + dy * dy
        bone = lean & (r2 <= HUMERUS_RADIUS_MM**2)
        marrow = bone & (r2 <= (HUMERUS_RADIUS_MM - HUMERUS_CORTEX_MM) ** 2)
        buf.labels[skin] = 0
        buf.hu[skin] = self.fat_hu
        buf.hu[lean] = self.muscle_hu
        buf.hu[bone] = self.cortical_hu
        buf.hu[marrow] = self.marrow_hu

    def truth(self) -> dict:
        return {
            "side": self.side, "centre_xy_mm": self.centre_xy_mm, "z_mm": self.z_mm,
            "skin_semi_mm": self.skin_semi_mm, "lean_semi_mm": self.lean_semi_mm,
            "humerus_radius_mm": HUMERUS_RADIUS_MM, "humerus_cortex_mm": HUMERUS_CORTEX_MM,
            "cortical_hu": self.cortical_hu, "marrow_hu": self.marrow_hu,
            "labelled": False,
        }
