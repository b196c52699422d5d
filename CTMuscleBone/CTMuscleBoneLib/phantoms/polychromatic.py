"""Physically consistent tissue and bone CT numbers from an X-ray spectrum.

The builder (:mod:`.builder`) paints HU from a linear scanner model and round tissue
numbers. For validating phantomless calibration the HU of air, fat, muscle, blood, soft
tissue, bone and calibration rods must come from one physics, so this module derives
them from the materials' elemental composition (attenuation tables of
:mod:`CTMuscleBoneLib.calibration.physics`) and a polychromatic spectrum:

* **Spectrum**: Kramers' law bremsstrahlung of a tungsten anode, photon number per keV
  ``N(E) ~ (kVp - E) / E`` (no characteristic lines), hardened by aluminium and copper
  filtration (synthetic defaults 6 mm Al + 0.1 mm Cu, of the order of clinical CT total
  filtration; unvalidated) and by a water-equivalent body path (200 mm default).
* **Detection**: energy-integrating, weight ``E N(E)``.
* **CT number of a material**: ``1000 (mu_eff - mu_eff,water) / mu_eff,water`` with
  ``mu_eff`` the detected-spectrum-weighted mean linear attenuation (first-order
  polychromatic model: linear in composition, so mixtures of water and mineral stay
  linear in mineral density, as on a scanner's calibration line).
* **Bone** is water with mineral (K2HPO4 or HA) of the stated density displacing water
  (:func:`CTMuscleBoneLib.calibration.physics.mineral_coefficient_cm2_g`): the synthetic
  :class:`~.base.ScannerModel` becomes this line. The femoral cortex is ICRU cortical
  bone: its density in the spec is set to the mineral-equivalent of ICRU cortical bone at
  the spectrum, so its HU is that of the real tissue and the truth stays on the scale.

Limits: no ray-dependent beam hardening (one hardening path for every voxel), no scatter,
no characteristic lines, no detector response beyond energy weighting, no bow-tie filter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..calibration.physics import AttenuationTables, load_tables, mineral_coefficient_cm2_g
from ..errors import InputError
from .base import ScannerModel

#: kVp range of the model (clinical CT), kV.
KVP_RANGE = (70.0, 150.0)
#: Lowest energy of the spectrum grid, keV (below it the filtration absorbs everything).
E_MIN_KEV = 10.0


@dataclass(frozen=True)
class XraySpectrum:
    """A filtered, body-hardened bremsstrahlung spectrum (synthetic defaults).

    Attributes
    ----------
    kvp : float
        Tube voltage, kV (70-150).
    al_mm, cu_mm : float
        Aluminium and copper filtration, mm.
    water_mm : float
        Water-equivalent body path hardening the beam, mm.
    """

    kvp: float = 120.0
    al_mm: float = 6.0
    cu_mm: float = 0.1
    water_mm: float = 200.0

    def __post_init__(self) -> None:
        if not KVP_RANGE[0] <= self.kvp <= KVP_RANGE[1]:
            raise InputError(f"kVp {self.kvp} outside the spectrum model's range "
                             f"{KVP_RANGE[0]:g}-{KVP_RANGE[1]:g} kV.")

    def weights(self, tables: AttenuationTables | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Energies (keV) and normalised detected weights ``E N(E) exp(-sum mu t)``."""
        t = tables or load_tables()
        e = np.arange(E_MIN_KEV, self.kvp, 0.5)
        n = (self.kvp - e) / e
        att = (t.linear_attenuation("aluminium", e) * self.al_mm / 10.0
               + t.linear_attenuation("copper", e) * self.cu_mm / 10.0
               + t.linear_attenuation("water", e) * self.water_mm / 10.0)
        w = e * n * np.exp(-att)
        return e, w / w.sum()

    def mu_eff(self, material: str, density_g_cm3: float | None = None,
               tables: AttenuationTables | None = None) -> float:
        """Spectrum-weighted linear attenuation of a table material, 1/cm."""
        t = tables or load_tables()
        e, w = self.weights(t)
        return float((w * t.linear_attenuation(material, e, density_g_cm3)).sum())

    def hu(self, material: str, tables: AttenuationTables | None = None) -> float:
        """CT number of a table material (ICRU density)."""
        t = tables or load_tables()
        return 1000.0 * (self.mu_eff(material, tables=t) / self.mu_eff("water", tables=t) - 1.0)

    def hu_per_mg_cm3(self, mineral: str, tables: AttenuationTables | None = None) -> float:
        """HU added per mg/cm3 of mineral replacing water."""
        t = tables or load_tables()
        e, w = self.weights(t)
        k = float((w * mineral_coefficient_cm2_g(mineral, e, t)).sum())
        return 1000.0 * k / 1000.0 / self.mu_eff("water", tables=t)

    def mean_energy_kev(self, tables: AttenuationTables | None = None) -> float:
        """Detected-weight mean energy, keV (information)."""
        e, w = self.weights(tables)
        return float((e * w).sum())


def polychromatic_overrides(spectrum: XraySpectrum, mineral: str = "K2HPO4"
                            ) -> dict[str, Any]:
    """PhantomSpec fields that make a phantom's HU physically consistent.

    Returns
    -------
    dict
        ``hu_fat``, ``hu_muscle``, ``hu_blood``, ``hu_soft_tissue``, ``hu_air``,
        ``scanner`` (the mineral-in-water line) and ``femur`` (cortical density =
        mineral-equivalent of ICRU cortical bone).
    """
    t = load_tables()
    per_mg = spectrum.hu_per_mg_cm3(mineral, t)
    scanner = ScannerModel(slope_mg_cm3_per_hu=1.0 / per_mg, intercept_mg_cm3=0.0,
                           material=mineral)
    cortical = spectrum.hu("cortical_bone", t) / per_mg
    return {
        "hu_fat": spectrum.hu("adipose", t),
        "hu_muscle": spectrum.hu("skeletal_muscle", t),
        "hu_blood": spectrum.hu("blood", t),
        "hu_soft_tissue": spectrum.hu("soft_tissue", t),
        "hu_air": spectrum.hu("air", t),
        "scanner": scanner,
        "femur": {"cortical_bmd_mg_cm3": float(cortical)},
    }


def make_polychromatic_phantom(spectrum: XraySpectrum, mineral: str = "K2HPO4", **spec: Any):
    """:func:`~.builder.make_phantom` with HU from ``spectrum`` and the scan's kVp in the
    metadata. ``spec`` holds further PhantomSpec fields (a ``femur`` dict is merged).

    ``mineral``: the scanner line's material (K2HPO4 default, the scale of the internal
    calibration). The calibration phantom under the body defaults to one of the same
    material (Mindways Model 3 for K2HPO4, B-MAS200 for HA), so a phantom calibration
    states the material its line really has.
    """
    from .builder import make_phantom

    spec.setdefault("calibration_definition",
                    "Mindways Model 3" if mineral == "K2HPO4" else "B-MAS200")
    over = polychromatic_overrides(spectrum, mineral)
    over["femur"] = {**over["femur"], **spec.pop("femur", {})}
    ph = make_phantom(**{**over, **spec})
    meta = dataclasses.replace(ph.ct.metadata, kvp=float(spectrum.kvp))
    ph.ct = dataclasses.replace(ph.ct, metadata=meta)
    ph.truth.notes.append(f"polychromatic HU: {spectrum} ({mineral} in water)")
    return ph
