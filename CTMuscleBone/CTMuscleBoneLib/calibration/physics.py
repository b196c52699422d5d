"""X-ray physics of the phantomless calibration: attenuation tables, effective energy,
and the two-component HU -> mineral density model.

After Michalski et al., Med Eng Phys 78:55-63 (2020) ("CT-based internal density
calibration for opportunistic skeletal assessment using abdominal CT scans"):

1. Reference tissues of the scan (air, adipose, skeletal muscle, blood, cortical bone)
   have known elemental compositions and densities (ICRU Reports 44/46), hence a known
   linear attenuation coefficient ``mu_t(E) = rho_t (mu/rho)_t(E)`` at every energy.
2. The scan's **effective energy** is the energy at which the tabulated coefficients of
   the sampled tissues lie best on a straight line against their measured CT numbers
   (largest coefficient of determination r2 over a 0.25 keV grid).
3. That line converts HU to linear attenuation, ``mu = a * HU + b`` (1/cm).
4. A **two-component model** turns attenuation into mineral density: a voxel of bone
   is water in which mineral (K2HPO4 or hydroxyapatite) of partial density ``rho_m``
   displaces water, ``mu = mu_water + rho_m * ((mu/rho)_m - d_m (mu/rho)_water)``,
   with ``d_m`` the water volume displaced per gram of mineral. Because both steps are
   linear the result is a straight HU -> density line.

This module differs from Bonelab/Ogo's implementation (which regresses *mass* attenuation
on HU and uses a triglyceride/K2HPO4 mixture with an Archimedean density): it regresses
*linear* attenuation (the quantity a CT number measures) and uses the water/mineral base
of phantom calibration (QCT PRO's two-component model for K2HPO4), so that internal and
phantom calibrations share one density scale.

Reference material. The internal calibration reports **K2HPO4-equivalent** density only
(:data:`INTERNAL_MATERIAL`); HA-equivalent values come from the project's documented
conversion (:mod:`CTMuscleBoneLib.dxa.material`, Goodsitt 1992, single energy). From first
principles the two minerals in water add almost the same attenuation per gram: the HU per
mg/cm3 of HA is 0.96-1.00 times that of K2HPO4 over 80-140 kVp with the tabulated
coefficients and the displacement constants below (HA attenuates about 4 % more per gram,
displaces about 45 % more water per gram). That agrees with Goodsitt's *dual-energy* ratio
BMD_K2HPO4/BMD_HA of 0.96-1.02, not with his *single-energy* 0.86 (80 kVp) and 0.81 (140
kVp): the single-energy ratio belongs to the commercial standards (hydroxyapatite in a
water-equivalent plastic vs K2HPO4 in water) and the marrow of the measured objects, not
to the minerals, so it cannot be derived here. A physics "HA" line would disagree with
the phantom-calibrated HA scale by about 15-20 %; reporting K2HPO4 (the scale of QCT
PRO's two-component model and of Michalski et al.) and converting keeps one HA scale for
every calibration method.

Tables: ``attenuation/mass_attenuation.json`` (Elam et al. 2002 via xraydb, checked
against NIST to within 0.03 % at 40-80 keV; regenerate with
``Utilities/make_attenuation_tables.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from ..errors import InputError

#: Water displaced per gram of mineral, cm3/g. K2HPO4 in solution: 0.2174 g water per g
#: K2HPO4 (QCT PRO User Guide, Mindways Software, v5.0; the constant of the bundled
#: Mindways two-component definition). Hydroxyapatite powder in a water-equivalent
#: base: its solid volume, 1 / 3.16 g/cm3 (crystal density of HA). The HA constant serves
#: the synthetic phantoms (:mod:`CTMuscleBoneLib.phantoms.polychromatic`); the internal
#: calibration uses K2HPO4 only.
DISPLACEMENT_CM3_PER_G = {"K2HPO4": 0.2174, "HA": 1.0 / 3.16}
#: The one reference material of the internal calibration (see the module docstring).
INTERNAL_MATERIAL = "K2HPO4"
#: Energy range searched for the effective energy, keV (diagnostic CT at 80-140 kVp has
#: effective energies of about 40-90 keV; wider to see a fit that runs to a limit).
ENERGY_SEARCH_KEV = (30.0, 140.0)
ENERGY_STEP_KEV = 0.25
#: Reference tissues and the table entry of each (ICRU 44/46 adult compositions).
TISSUE_TABLE = {
    "air": "air",
    "adipose": "adipose",
    "skeletal_muscle": "skeletal_muscle",
    "blood": "blood",
    "cortical_bone": "cortical_bone",
}


@dataclass(frozen=True)
class AttenuationTables:
    """Mass attenuation coefficients on an energy grid.

    Attributes
    ----------
    energies_kev : np.ndarray, (n_energies,)
    mass_cm2_g : dict of str -> np.ndarray, (n_energies,)
        Total mass attenuation coefficient (with coherent scattering), cm2/g.
    density_g_cm3 : dict of str -> float
        Nominal density of each material (ICRU 44/46 for tissues).
    source : str
    """

    energies_kev: np.ndarray
    mass_cm2_g: dict[str, np.ndarray]
    density_g_cm3: dict[str, float]
    source: str

    def mass_attenuation(self, name: str, energy_kev: float | np.ndarray) -> np.ndarray:
        """(mu/rho) in cm2/g at the given energies (log-log interpolation)."""
        if name not in self.mass_cm2_g:
            raise InputError(f"No attenuation table for '{name}'; known: "
                             f"{', '.join(sorted(self.mass_cm2_g))}.")
        e = np.asarray(energy_kev, dtype=float)
        if np.any(e < self.energies_kev[0]) or np.any(e > self.energies_kev[-1]):
            raise InputError(f"Energy outside the attenuation tables "
                             f"({self.energies_kev[0]:g}-{self.energies_kev[-1]:g} keV).")
        return np.exp(np.interp(np.log(e), np.log(self.energies_kev),
                                np.log(self.mass_cm2_g[name])))

    def linear_attenuation(self, name: str, energy_kev: float | np.ndarray,
                           density_g_cm3: float | None = None) -> np.ndarray:
        """mu in 1/cm: (mu/rho) times the material's (or the given) density."""
        rho = self.density_g_cm3[name] if density_g_cm3 is None else density_g_cm3
        return self.mass_attenuation(name, energy_kev) * rho


@lru_cache(maxsize=1)
def load_tables() -> AttenuationTables:
    """The bundled attenuation tables (read once)."""
    text = resources.files(__package__).joinpath("attenuation", "mass_attenuation.json"
                                                 ).read_text("utf-8")
    d = json.loads(text)
    mats = d["materials"]
    return AttenuationTables(
        energies_kev=np.asarray(d["energies_kev"], dtype=float),
        mass_cm2_g={k: np.asarray(v["mass_attenuation_cm2_g"], dtype=float)
                    for k, v in mats.items()},
        density_g_cm3={k: float(v["density_g_cm3"]) for k, v in mats.items()},
        source=str(d["source"]),
    )


def mineral_coefficient_cm2_g(material: str, energy_kev: float | np.ndarray,
                              tables: AttenuationTables | None = None) -> np.ndarray:
    """Attenuation added per gram of mineral replacing water, cm2/g.

    ``mu(rho_m) = mu_water + rho_m * k_m`` with
    ``k_m = (mu/rho)_m - d_m (mu/rho)_water * 1 g/cm3`` (:data:`DISPLACEMENT_CM3_PER_G`).
    """
    if material not in DISPLACEMENT_CM3_PER_G:
        raise InputError(f"Unknown mineral '{material}': use K2HPO4 or HA.")
    t = tables or load_tables()
    return (t.mass_attenuation(material, energy_kev)
            - DISPLACEMENT_CM3_PER_G[material] * t.linear_attenuation("water", energy_kev))


def mineral_equivalent_mg_cm3(mu_per_cm: float | np.ndarray, material: str, energy_kev: float,
                              tables: AttenuationTables | None = None) -> np.ndarray:
    """Mineral-in-water density (mg/cm3) with the attenuation ``mu_per_cm`` at one energy."""
    t = tables or load_tables()
    mu_w = float(t.linear_attenuation("water", energy_kev))
    k = float(mineral_coefficient_cm2_g(material, energy_kev, t))
    return 1000.0 * (np.asarray(mu_per_cm, dtype=float) - mu_w) / k


@dataclass(frozen=True)
class EffectiveEnergyFit:
    """Result of the effective-energy search.

    Attributes
    ----------
    energy_kev : float
        Energy of the best straight line of tabulated mu against measured HU.
    r2 : float
        Its coefficient of determination.
    energy_range_kev : (float, float)
        Energies whose r2 is within the tolerance of the best (how sharply the tissues
        pin the energy down: wide without a bone sample).
    slope_per_cm_per_hu, intercept_per_cm : float
        ``mu = slope * HU + intercept`` at that energy (1/cm).
    water_hu_implied : float
        HU the line gives water (a check of the scanner's water calibration; about 0).
    tissues : tuple of str
    """

    energy_kev: float
    r2: float
    energy_range_kev: tuple[float, float]
    slope_per_cm_per_hu: float
    intercept_per_cm: float
    water_hu_implied: float
    tissues: tuple[str, ...]


def fit_effective_energy(measured_hu: dict[str, float],
                         tables: AttenuationTables | None = None,
                         search_kev: tuple[float, float] = ENERGY_SEARCH_KEV) -> EffectiveEnergyFit:
    """Energy at which the tissues' tabulated linear attenuation best fits their HU.

    Parameters
    ----------
    measured_hu : dict of tissue -> mean HU
        At least 3 tissues among :data:`TISSUE_TABLE` (two points always lie on a line).

    Raises
    ------
    InputError
        Fewer than 3 tissues or an unknown tissue name.
    """
    t = tables or load_tables()
    names = tuple(measured_hu)
    bad = [n for n in names if n not in TISSUE_TABLE]
    if bad:
        raise InputError(f"Unknown reference tissue(s) {bad}; use {sorted(TISSUE_TABLE)}.")
    if len(names) < 3:
        raise InputError("The effective energy needs at least 3 reference tissues.")
    hu = np.array([measured_hu[n] for n in names], dtype=float)
    energies = np.arange(search_kev[0], search_kev[1] + 1e-9, ENERGY_STEP_KEV)
    mu = np.stack([t.linear_attenuation(TISSUE_TABLE[n], energies) for n in names])  # (n, E)
    x = hu - hu.mean()
    sxx = float((x**2).sum())
    y = mu - mu.mean(axis=0)
    sxy = x @ y
    syy = (y**2).sum(axis=0)
    r2 = sxy**2 / (sxx * syy)
    i = int(np.argmax(r2))
    # tolerance: energies whose residual sum of squares is at most twice the best one's
    sse = np.maximum(syy * (1.0 - r2), 0.0)
    near = energies[sse <= 2.0 * sse[i] + 1e-15 * float(syy[i])]
    a = float(sxy[i] / sxx)
    b = float(mu[:, i].mean() - a * hu.mean())
    mu_w = float(t.linear_attenuation("water", energies[i]))
    return EffectiveEnergyFit(
        energy_kev=float(energies[i]), r2=float(r2[i]),
        energy_range_kev=(float(near.min()), float(near.max())),
        slope_per_cm_per_hu=a, intercept_per_cm=b,
        water_hu_implied=float((mu_w - b) / a), tissues=names)


def hu_to_mineral_line(fit: EffectiveEnergyFit, material: str,
                       tables: AttenuationTables | None = None) -> tuple[float, float]:
    """(slope mg/cm3 per HU, intercept mg/cm3) of mineral density from HU.

    ``rho_m = (a HU + b - mu_water) / k_m`` at the effective energy.
    """
    t = tables or load_tables()
    k = float(mineral_coefficient_cm2_g(material, fit.energy_kev, t))
    mu_w = float(t.linear_attenuation("water", fit.energy_kev))
    return 1000.0 * fit.slope_per_cm_per_hu / k, 1000.0 * (fit.intercept_per_cm - mu_w) / k


def tissue_hu_at(energy_kev: float, tissue: str, tables: AttenuationTables | None = None
                 ) -> float:
    """Monoenergetic CT number of a table material: 1000 (mu / mu_water - 1)."""
    t = tables or load_tables()
    return float(1000.0 * (t.linear_attenuation(tissue, energy_kev)
                           / t.linear_attenuation("water", energy_kev) - 1.0))
