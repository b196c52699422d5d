"""Building blocks of the synthetic phantoms: components painted onto any voxel grid.

A phantom is described once, analytically, in the **patient frame** (LPS millimetres:
+x patient left, +y posterior, +z superior) as a list of components painted in order
(body, fat, muscles, bones, calibration rods, metal). Rasterising evaluates each
component at the physical centres of the voxels of any :class:`~CTMuscleBoneLib.image.Geometry`
(any spacing, origin, axis order, oblique direction), so the same physical phantom can
be stored in many orientations and the measurements compared.

Labels are binary at voxel centres and the noiseless HU of a voxel is the value of
the last component that claims it, so the analytic truth (volumes, mean HU, densities)
holds up to the voxelisation of the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ScannerModel:
    """The synthetic scanner's linear relation between HU and bone mineral density.

    ``bmd_mg_cm3 = slope_mg_cm3_per_hu * hu + intercept_mg_cm3``: the same relation a
    phantom calibration should recover. The defaults are synthetic, chosen to be of
    the order of clinical K2HPO4 calibrations at 120 kVp; they describe no real scanner.
    """

    slope_mg_cm3_per_hu: float = 0.80
    intercept_mg_cm3: float = -2.0
    material: str = "K2HPO4"

    def hu_for_bmd(self, bmd_mg_cm3: float | np.ndarray) -> float | np.ndarray:
        """HU that this scanner shows for a mineral density (mg/cm3)."""
        return (np.asarray(bmd_mg_cm3) - self.intercept_mg_cm3) / self.slope_mg_cm3_per_hu

    def bmd_for_hu(self, hu: float | np.ndarray) -> float | np.ndarray:
        """Mineral density (mg/cm3) for a HU value."""
        return self.slope_mg_cm3_per_hu * np.asarray(hu) + self.intercept_mg_cm3


@dataclass
class PaintBuffer:
    """Voxels being painted: their positions and the label / HU written so far.

    Attributes
    ----------
    points_mm : np.ndarray, (N, 3)
        LPS positions of the voxel centres, mm.
    labels : np.ndarray of int16, (N,)
        Canonical label values (see :mod:`CTMuscleBoneLib.anatomy`); 0 = none.
    hu : np.ndarray of float32, (N,)
        Noiseless HU.
    """

    points_mm: np.ndarray
    labels: np.ndarray
    hu: np.ndarray


class Component(Protocol):
    """Something that paints part of a phantom.

    The rasteriser (:mod:`CTMuscleBoneLib.phantoms.rasterize`) calls :meth:`bounds_mm`
    once and then :meth:`paint` on buffers holding only voxel centres inside that box,
    in chunks of slices, so a component must paint each point independently of the
    others in the buffer (no assumption about which points or how many arrive).
    """

    def paint(self, buf: PaintBuffer) -> None:
        """Overwrite ``buf.labels`` and ``buf.hu`` where this component is."""
        ...

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS min and max corner (mm, each shape (3,)) of a box containing the component.

        Points outside the box are never passed to :meth:`paint`.
        """
        ...

    def truth(self) -> Any:
        """Analytic ground truth of the component (a dict or a dataclass)."""
        ...
