"""Hip bones (os coxae) and sacrum: homogeneous bone of a set mineral density.

Shapes (LPS mm, left hip bone; the right one is mirrored through x = 0), synthetic
and simplified, each part disjoint from the others so the analytic volume is the sum:

* acetabulum: half spherical shell around the femoral head centre H = (90, 0, 0),
  radii 30 (inner; clear of a femoral head of radius <= 27 mm) and 38 (outer), open
  towards inferolateral: the kept half has (p - H) . n >= 0, n = (-0.5, 0, 1)/|.|;
* ilium wing: box centre (100, 15, 85), half sizes 5 x 40 x 35;
* superior pubic ramus: capsule (60, -35, -20) to (15, -42, -28), radius 8;
* ischium: ellipsoid centre (72, 38, -25), semi-axes 10 x 12 x 12.

Sacrum: ellipsoid centre (0, 55, 25), semi-axes 40 x 18 x 30, tilted 20 deg about x
(top at z < 55, below L5).

The HU of each bone is ``scanner.hu_for_bmd(bmd)`` with the densities of the spec
(synthetic defaults 220 and 180 mg/cm3).
"""

from __future__ import annotations

import numpy as np

from . import layout
from .base import ScannerModel
from .shapes import Box, Capsule, Ellipsoid, SphericalShellCap, Union, rotation_about
from .solid import SolidComponent

ACETABULUM_R_IN_MM = 30.0
ACETABULUM_R_OUT_MM = 38.0


def hip_bone_shape(side: str) -> Union:
    """Analytic shape of the hip bone of ``side`` (union of 4 disjoint parts)."""
    s = layout.side_sign(side)
    return Union((
        SphericalShellCap(layout.head_center_mm(side), ACETABULUM_R_IN_MM,
                          ACETABULUM_R_OUT_MM, np.array([-0.5 * s, 0.0, 1.0])),
        Box((100.0 * s, 15.0, 85.0), (5.0, 40.0, 35.0)),
        Capsule((60.0 * s, -35.0, -20.0), (15.0 * s, -42.0, -28.0), 8.0),
        Ellipsoid((72.0 * s, 38.0, -25.0), (10.0, 12.0, 12.0)),
    ))


def sacrum_shape() -> Ellipsoid:
    """Analytic shape of the sacrum."""
    return Ellipsoid((0.0, 55.0, 25.0), (40.0, 18.0, 30.0), rotation_about("x", 20.0))


def pelvis_components(scanner: ScannerModel, hip_bmd_mg_cm3: float, sacrum_bmd_mg_cm3: float,
                      sides: tuple[str, ...] = ("left", "right"), hip: bool = True,
                      sacrum: bool = True) -> list[SolidComponent]:
    """Solid components of the hip bones and the sacrum."""
    out: list[SolidComponent] = []
    if hip:
        for side in sides:
            out.append(SolidComponent(f"hip_{side}", hip_bone_shape(side),
                                      float(scanner.hu_for_bmd(hip_bmd_mg_cm3))))
    if sacrum:
        out.append(SolidComponent("sacrum", sacrum_shape(),
                                  float(scanner.hu_for_bmd(sacrum_bmd_mg_cm3))))
    return out
