"""The calibration result every BMD value carries.

``bmd_mg_cm3 = slope_mg_cm3_per_hu * hu + intercept_mg_cm3`` in the stated reference
material (K2HPO4 or hydroxyapatite, "HA"): the two are not interchangeable (Goodsitt,
Bone Miner 1992;19:145-158), so the material is always part of the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import NotMeasurableError

Method = Literal["phantom", "internal", "fixed", "none"]
MATERIALS = ("K2HPO4", "HA")


@dataclass(frozen=True)
class Calibration:
    """A linear HU -> mineral density calibration, or the explicit absence of one.

    Attributes
    ----------
    method : {'phantom', 'internal', 'fixed', 'none'}
        'fixed': an asynchronous line (typed in, or saved from a separate phantom scan;
        see :mod:`CTMuscleBoneLib.calibration.stored`).
    material : str or None
        Reference material of the density scale: 'K2HPO4' or 'HA'; None when method
        is 'none'.
    slope_mg_cm3_per_hu, intercept_mg_cm3 : float or None
        The line; None when method is 'none'.
    r : float or None
        Pearson r of the fit over the calibration points (quality), or None.
    n_points : int
        Number of calibration points (rods or reference tissues) used.
    description : str
        Human text: which phantom or tissues, e.g. "B-MAS200 (5 rods)".
    warnings : tuple of str
        E.g. contrast-enhanced scan with blood as a reference.
    points : tuple of (str, float, float)
        (name, measured HU, assigned density mg/cm3) of each calibration point.
    details : dict
        Method-specific record for the provenance (phantomless: effective energy, r2,
        samples with location / volume / mean / SD, tissues refused; phantom search:
        the candidates tried and their fit).
    expected_error : str
        The error to expect from the method where it is not validated on this scanner
        (phantomless calibration); every calibrated value carries it as an
        ``unvalidated:`` flag.
    """

    method: Method
    material: str | None = None
    slope_mg_cm3_per_hu: float | None = None
    intercept_mg_cm3: float | None = None
    r: float | None = None
    n_points: int = 0
    description: str = ""
    warnings: tuple[str, ...] = ()
    points: tuple[tuple[str, float, float], ...] = field(default=())
    details: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    expected_error: str = ""

    @classmethod
    def none(cls, reason: str = "no calibration requested") -> Calibration:
        """No calibration: results are reported in HU only and labelled uncalibrated."""
        return cls(method="none", description=reason)

    @property
    def calibrated(self) -> bool:
        return self.method != "none" and self.slope_mg_cm3_per_hu is not None

    def bmd_mg_cm3(self, hu: np.ndarray | float) -> np.ndarray:
        """Mineral density (mg/cm3 of :attr:`material`) for HU values (any shape).

        Raises
        ------
        NotMeasurableError
            When there is no calibration.
        """
        if not self.calibrated:
            raise NotMeasurableError(
                "no HU-to-BMD calibration: only HU values can be reported "
                f"({self.description or 'uncalibrated'})"
            )
        assert self.slope_mg_cm3_per_hu is not None and self.intercept_mg_cm3 is not None
        return self.slope_mg_cm3_per_hu * np.asarray(hu, dtype=np.float64) + self.intercept_mg_cm3

    def method_text(self) -> str:
        """Short text for a result row's ``method`` column."""
        if not self.calibrated:
            return "uncalibrated (HU only)"
        q = f", r={self.r:.4f}" if self.r is not None else ""
        return f"{self.method} calibration ({self.description}; {self.material}{q})"

    def flags(self) -> list[str]:
        """Flags every calibrated value carries (uncalibrated, warnings)."""
        out = [] if self.calibrated else ["uncalibrated: HU only"]
        if self.calibrated and self.expected_error:
            out.append(f"unvalidated: {self.expected_error}")
        return out + [f"calibration: {w}" for w in self.warnings]


class CalibrationRefused(NotMeasurableError):
    """A calibration was attempted but its data cannot be trusted (the message says why:
    poor fit, missing rods, metal near the rods, no usable reference tissue)."""
