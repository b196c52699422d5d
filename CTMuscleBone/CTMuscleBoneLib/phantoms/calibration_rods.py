"""A synthetic calibration phantom: rods of known mineral density in a resin block.

The block lies under the patient (posterior, larger +y in LPS: a supine patient lies
on the table with the phantom between back and table). Rods are cylinders along z
(superior-inferior), in one row along x in the definition's order, labelled
``calibration_rod_k`` (k = 1..n). Each rod's CT number is what the
:class:`~CTMuscleBoneLib.phantoms.base.ScannerModel` shows for its density (for the
two-component Mindways model, with the water term of the QCT PRO User Guide), so a
phantom calibration should recover the scanner's line.

Geometry defaults (rod diameter 12 mm, pitch 25 mm) are synthetic choices used when
the definition gives none; they describe no real phantom.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..anatomy import BY_KEY
from ..calibration.definitions import PhantomDefinition, load_phantom_definition
from .base import PaintBuffer, ScannerModel

#: Synthetic default rod diameter and pitch (mm) when the definition has none.
DEFAULT_ROD_DIAMETER_MM = 12.0
DEFAULT_ROD_PITCH_MM = 25.0
#: Water-equivalent resin of the phantom body (synthetic: phantom resins are about
#: water-equivalent, ~0-20 HU).
RESIN_HU = 15.0


class CalibrationRodsPhantom:
    """Component painting a calibration phantom (resin block with rods).

    Parameters
    ----------
    definition : str, dict or PhantomDefinition
        Bundled name ('B-MAS200', 'Mindways Model 3', 'QRM-BDC'), file path or definition.
    scanner : ScannerModel
        HU <-> density relation used to give each rod its CT number.
    centre_mm : (3,) float
        LPS centre of the rod row (and of the block), mm.
    rod_length_mm : float
        Length of the rods and the block along z, mm.
    rod_diameter_mm, rod_pitch_mm : float or None
        Rod diameter and centre spacing; default: definition's layout, else synthetic
        defaults.
    margin_mm : float
        Resin around the outermost rods, mm.
    resin_hu : float
        CT number of the resin block.
    rod_hu_override : dict of int -> float
        Force the CT number of rod k (1-based), e.g. to make a wrong rod in tests.
    omit_rods : tuple of int
        Rods (1-based) left out (a missing rod: resin is painted instead).
    """

    def __init__(
        self,
        definition: str | dict | PhantomDefinition = "B-MAS200",
        scanner: ScannerModel | None = None,
        centre_mm: tuple[float, float, float] = (0.0, 140.0, 0.0),
        rod_length_mm: float = 200.0,
        rod_diameter_mm: float | None = None,
        rod_pitch_mm: float | None = None,
        margin_mm: float = 12.0,
        resin_hu: float = RESIN_HU,
        rod_hu_override: dict[int, float] | None = None,
        omit_rods: tuple[int, ...] = (),
    ) -> None:
        self.definition = load_phantom_definition(definition)
        self.scanner = scanner or ScannerModel()
        self.centre_mm = np.asarray(centre_mm, dtype=float)
        self.rod_length_mm = float(rod_length_mm)
        self.rod_diameter_mm = float(rod_diameter_mm or self.definition.rod_diameter_mm
                                     or DEFAULT_ROD_DIAMETER_MM)
        self.rod_pitch_mm = float(rod_pitch_mm or self.definition.rod_pitch_mm
                                  or max(DEFAULT_ROD_PITCH_MM, 2 * self.rod_diameter_mm))
        self.margin_mm = float(margin_mm)
        self.resin_hu = float(resin_hu)
        self.rod_hu_override = dict(rod_hu_override or {})
        self.omit_rods = tuple(omit_rods)

    # -- geometry --------------------------------------------------------------------
    @property
    def n_rods(self) -> int:
        return len(self.definition.rods)

    def rod_centres_mm(self) -> np.ndarray:
        """LPS centres (x, y, z) of the rods at the middle of their length, (n_rods, 3)."""
        n = self.n_rods
        offsets = (np.arange(n) - (n - 1) / 2.0) * self.rod_pitch_mm
        c = np.tile(self.centre_mm, (n, 1))
        c[:, 0] += offsets
        return c

    def rod_hu(self) -> np.ndarray:
        """Noiseless CT number of each rod, (n_rods,)."""
        hu = np.asarray(self.definition.expected_hu(self.scanner.slope_mg_cm3_per_hu,
                                                    self.scanner.intercept_mg_cm3), dtype=float)
        for k, v in self.rod_hu_override.items():
            hu[k - 1] = v
        return hu

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS (min corner, max corner) of the resin block, mm."""
        half_x = (self.n_rods - 1) / 2.0 * self.rod_pitch_mm + self.rod_diameter_mm / 2 \
            + self.margin_mm
        half_y = self.rod_diameter_mm / 2 + self.margin_mm
        half = np.array([half_x, half_y, self.rod_length_mm / 2.0])
        return self.centre_mm - half, self.centre_mm + half

    # -- Component protocol ----------------------------------------------------------
    def paint(self, buf: PaintBuffer) -> None:
        """Paint the resin block (label 0) and the rods (calibration_rod_k)."""
        lo, hi = self.bounds_mm()
        p = buf.points_mm
        in_block = np.all((p >= lo) & (p <= hi), axis=1)
        buf.hu[in_block] = self.resin_hu
        buf.labels[in_block] = 0
        r2 = (self.rod_diameter_mm / 2.0) ** 2
        in_z = np.abs(p[:, 2] - self.centre_mm[2]) <= self.rod_length_mm / 2.0
        for k, (c, hu) in enumerate(zip(self.rod_centres_mm(), self.rod_hu(), strict=True),
                                    start=1):
            if k in self.omit_rods:
                continue
            inside = in_z & ((p[:, 0] - c[0]) ** 2 + (p[:, 1] - c[1]) ** 2 <= r2)
            buf.hu[inside] = hu
            buf.labels[inside] = BY_KEY[f"calibration_rod_{k}"].label_value

    def truth(self) -> dict[str, Any]:
        """Analytic truth: the scanner's line and each rod's density, HU, centre, label."""
        rods = []
        for k, (rod, c, hu) in enumerate(zip(self.definition.rods, self.rod_centres_mm(),
                                             self.rod_hu(), strict=True), start=1):
            rods.append({
                "key": f"calibration_rod_{k}",
                "label_value": BY_KEY[f"calibration_rod_{k}"].label_value,
                "name": rod.name,
                "density_mg_cm3": rod.density_mg_cm3,
                "hu": float(hu),
                "centre_mm": [float(v) for v in c],
                "diameter_mm": self.rod_diameter_mm,
                "present": k not in self.omit_rods,
            })
        return {
            "phantom": self.definition.name,
            "material": self.definition.material,
            "slope_mg_cm3_per_hu": self.scanner.slope_mg_cm3_per_hu,
            "intercept_mg_cm3": self.scanner.intercept_mg_cm3,
            "resin_hu": self.resin_hu,
            "rods": rods,
        }
