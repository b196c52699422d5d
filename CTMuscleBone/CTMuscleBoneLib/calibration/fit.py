"""Straight-line fits of calibration points (pure functions on small arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class LineFit:
    """``density = slope * hu + intercept`` and the Pearson r of the points."""

    slope_mg_cm3_per_hu: float
    intercept_mg_cm3: float
    r: float


def fit_hu_to_density(hu: np.ndarray, density_mg_cm3: np.ndarray) -> LineFit:
    """Least-squares line of CT number on density, inverted to density per HU.

    The measurement error is in the CT numbers (rod densities are certified), so HU
    is regressed on density (``hu = a * rho + b``) and the line inverted:
    ``rho = hu / a - b / a``.

    Parameters
    ----------
    hu : np.ndarray, (n,)
        Measured CT numbers.
    density_mg_cm3 : np.ndarray, (n,)
        Assigned densities.
    """
    x = np.asarray(density_mg_cm3, dtype=float)
    y = np.asarray(hu, dtype=float)
    if x.size < 2 or x.size != y.size:
        raise InputError("A calibration line needs at least 2 points with HU and density.")
    if np.ptp(x) == 0:
        raise InputError("Calibration points all have the same density: no line can be fitted.")
    a, b = np.polyfit(x, y, 1)
    # two points always lie on a line: r is then +-1 and says nothing about quality
    r = float(np.corrcoef(x, y)[0, 1]) if x.size > 2 else float(np.sign(a))
    if a <= 0:
        return LineFit(float("nan"), float("nan"), r)
    return LineFit(float(1.0 / a), float(-b / a), r)


def fit_two_component(
    hu: np.ndarray,
    k2hpo4_mg_cm3: np.ndarray,
    water_mg_cm3: np.ndarray,
    water_displacement: float = 0.2174,
    water_reference_mg_cm3: float = 999.6,
) -> LineFit:
    """Two-component water/K2HPO4 fit of Mindways phantoms.

    QCT PRO User Guide (Mindways Software, v5.0 rev 20110801), as implemented in
    Bonelab/Ogo ``ogo/calib/mindways_calibration.py``::

        hu - rho_water = sigma_ref * rho_K2HPO4 + beta_ref
        sigma_ct = sigma_ref - 0.2174,  beta_ct = beta_ref + 999.6
        rho_K2HPO4 = (hu - beta_ct) / sigma_ct

    ``r`` is the Pearson r of the first regression.
    """
    k = np.asarray(k2hpo4_mg_cm3, dtype=float)
    lhs = np.asarray(hu, dtype=float) - np.asarray(water_mg_cm3, dtype=float)
    if k.size < 2 or np.ptp(k) == 0:
        raise InputError("The two-component fit needs at least 2 rods of different K2HPO4.")
    sigma_ref, beta_ref = np.polyfit(k, lhs, 1)
    r = float(np.corrcoef(k, lhs)[0, 1]) if k.size > 2 else 1.0
    sigma_ct = sigma_ref - water_displacement
    beta_ct = beta_ref + water_reference_mg_cm3
    if sigma_ct <= 0:
        return LineFit(float("nan"), float("nan"), r)
    return LineFit(float(1.0 / sigma_ct), float(-beta_ct / sigma_ct), r)
