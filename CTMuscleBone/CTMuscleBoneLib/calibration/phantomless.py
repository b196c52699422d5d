"""Physics-based phantomless (internal) calibration: :func:`physics_calibration`.

Samples the reference tissues of the scan (:mod:`.reference_tissues`), finds the
effective energy and the HU -> attenuation line (:mod:`.physics`), and converts it to a
HU -> mineral density line through the two-component water/mineral model, after
Michalski et al., Med Eng Phys 78:55-63 (2020). The result is a
:class:`~.model.Calibration` with method 'internal' whose ``details`` hold the effective
energy, the fit's r2, the samples used and the tissues refused (with reasons), and whose
``expected_error`` states the error to expect (flagged ``unvalidated:`` on every value).

The density scale is K2HPO4 only: HA-equivalent values come from the documented
K2HPO4 -> HA conversion (:mod:`CTMuscleBoneLib.dxa.material`), which the femoral and
lumbar-aBMD measurements apply; :mod:`.physics` explains why a physics HA line is not
offered.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..image import CTImage, LabelMap
from .model import Calibration, CalibrationRefused
from .physics import (
    ENERGY_SEARCH_KEV,
    INTERNAL_MATERIAL,
    fit_effective_energy,
    hu_to_mineral_line,
    load_tables,
    mineral_equivalent_mg_cm3,
)
from .reference_tissues import TISSUES, sample_reference_tissues

#: Minimum r2 of the effective-energy fit (unvalidated default: the synthetic phantoms
#: give r2 > 0.9999; a tissue off the line by artefact or wrong composition drops it).
MIN_R2 = 0.999
#: Largest |HU| the fitted line may give water: the tissues must sit on a
#: water-calibrated HU scale (unvalidated default; scanner water QA tolerance is about
#: +-4 HU, the fit adds the tissues' compositional spread).
MAX_WATER_HU = 40.0
#: Expected error of the physics-based internal calibration, percent of trabecular
#: vBMD (~100-200 mg/cm3) and of femoral CT-aBMD: the largest error against the truth
#: measured on the synthetic polychromatic phantoms at 80-140 kVp
#: (benchmarks/calibration_agreement.py, docs/calibration.md). Patients add the
#: biological spread of tissue composition, so real errors are larger.
EXPECTED_ERROR_PERCENT = 3.0
#: Slack on the soft-tissue energy range when checking the bone sample against it, keV
#: (unvalidated default).
ENERGY_TOL_KEV = 2.0
#: The same slack when fat or muscle was sampled by HU window (no label): a window
#: sample mixes in other soft tissue and shifts the soft-tissue energy by about 3 keV on
#: the synthetic phantoms at 120 kVp (unvalidated default).
ENERGY_TOL_WINDOW_KEV = 4.0
#: With no cortical bone sample the effective energy rests on air and soft tissue only.
EXPECTED_ERROR_NO_BONE_PERCENT = 10.0


def physics_calibration(
    ct: CTImage,
    labels: LabelMap | None = None,
    material: str = INTERNAL_MATERIAL,
    tissues: tuple[str, ...] = TISSUES,
    min_r2: float = MIN_R2,
) -> Calibration:
    """Phantomless calibration from the physics of the scan's own reference tissues.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
        Tissue labels (subcutaneous_fat, muscles, aorta / inferior_vena_cava, femur);
        HU windows are used for air, fat and muscle where labels are missing.
    material : {'K2HPO4'}
        Reference material of the density scale: K2HPO4 only (HA through
        :func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`).
    tissues : tuple of str
        Tissues to try (default all of :data:`.reference_tissues.TISSUES`).
    min_r2 : float
        Minimum r2 of the effective-energy fit.

    Returns
    -------
    Calibration
        method 'internal'; ``points`` are (tissue, HU, mineral-equivalent density at the
        effective energy).

    Raises
    ------
    InputError
        ``material`` other than K2HPO4.
    CalibrationRefused
        Fewer than 3 usable tissues, a poor fit, a line that misplaces water, or an
        effective energy at the edge of the search range.
    """
    if material != INTERNAL_MATERIAL:
        raise InputError(
            f"The phantomless calibration gives {INTERNAL_MATERIAL}-equivalent density only "
            f"(asked for '{material}'): first principles do not reproduce the published "
            "K2HPO4/HA ratio (docs/calibration.md). For hydroxyapatite convert the K2HPO4 "
            "result with CTMuscleBoneLib.dxa.material.to_hydroxyapatite (Goodsitt 1992), as "
            "the femoral and lumbar-aBMD measurements do.")
    tables = load_tables()
    samples, refused = sample_reference_tissues(ct, labels, tissues)
    names = [t for t in TISSUES if t in samples]
    details: dict = {
        "model": "physics-based internal calibration after Michalski et al. 2020",
        "material_note": ("K2HPO4-in-water two-component model (QCT PRO constant 0.2174); "
                          "HA-equivalent values only through the K2HPO4 -> HA conversion "
                          "(Goodsitt 1992)"),
        "samples": [samples[t].as_dict() for t in names],
        "refused": dict(refused),
        "attenuation_source": tables.source,
    }
    if len(names) < 3:
        why = "; ".join(f"{k}: {v}" for k, v in refused.items())
        raise CalibrationRefused(
            f"phantomless calibration needs at least 3 reference tissues; usable: "
            f"{', '.join(names) or 'none'} ({why}).")
    fit = fit_effective_energy({t: samples[t].mean_hu for t in names}, tables)
    soft = [t for t in names if t != "cortical_bone"]
    if "cortical_bone" in names and len(soft) >= 3:
        # the bone sample must agree with the energy range air and soft tissue allow: a
        # cortex read low by partial volume pulls the energy up and the BMD with it
        alone = fit_effective_energy({t: samples[t].mean_hu for t in soft}, tables)
        lo, hi = alone.energy_range_kev
        windowed = any("HU window" in samples[t].location for t in soft)
        tol = ENERGY_TOL_WINDOW_KEV if windowed else ENERGY_TOL_KEV
        if not lo - tol <= fit.energy_kev <= hi + tol:
            refused["cortical_bone"] = (
                f"the cortex sample ({samples['cortical_bone'].mean_hu:.0f} HU) puts the "
                f"effective energy at {fit.energy_kev:g} keV, outside the {lo:g}-{hi:g} keV "
                "that air and soft tissue allow: partial volume (thin cortex or blur) or "
                "not cortical bone")
            del samples["cortical_bone"]
            names = soft
            fit = alone
            details["samples"] = [samples[t].as_dict() for t in names]
            details["refused"] = dict(refused)
    details.update(effective_energy_kev=fit.energy_kev, r2=fit.r2,
                   energy_range_kev=list(fit.energy_range_kev),
                   water_hu_implied=fit.water_hu_implied)
    measured = ", ".join(f"{t} {samples[t].mean_hu:.0f} HU" for t in names)
    if fit.r2 < min_r2:
        raise CalibrationRefused(
            f"phantomless calibration fit is poor (r2 = {fit.r2:.5f} < {min_r2}): the "
            f"reference tissues ({measured}) do not follow their tabulated attenuation at "
            "any energy; artefacts, contrast or an unusual tissue composition.")
    if fit.energy_kev in ENERGY_SEARCH_KEV:
        raise CalibrationRefused(
            f"phantomless calibration: the effective energy runs to the search limit "
            f"({fit.energy_kev:g} keV) for the tissues ({measured}); not a plausible scan.")
    if abs(fit.water_hu_implied) > MAX_WATER_HU:
        raise CalibrationRefused(
            f"phantomless calibration: the tissue line puts water at "
            f"{fit.water_hu_implied:.0f} HU (|HU| > {MAX_WATER_HU:g}); the tissues "
            f"({measured}) are not on a water-calibrated HU scale.")
    slope, intercept = hu_to_mineral_line(fit, material, tables)
    warnings = [f"{k} not used: {v}" for k, v in refused.items()]
    bone = "cortical_bone" in samples
    err = EXPECTED_ERROR_PERCENT if bone else EXPECTED_ERROR_NO_BONE_PERCENT
    if not bone:
        warnings.append(
            "no cortical bone sample: the effective energy rests on air and soft tissue "
            f"(range {fit.energy_range_kev[0]:g}-{fit.energy_range_kev[1]:g} keV), so the "
            "mineral scale is less certain")
    kvp = ct.metadata.kvp
    expected = (f"phantomless internal calibration: expected error about +-{err:g} % of "
                "BMD (synthetic validation 80-140 kVp"
                + ("" if bone else ", without a bone sample a wider allowance") +
                "; patient tissue variability adds to it, see docs/calibration.md)")
    details["expected_error_percent"] = err
    mu = {t: float(tables.linear_attenuation(t, fit.energy_kev)) for t in names}
    points = tuple((t, float(samples[t].mean_hu),
                    float(mineral_equivalent_mg_cm3(mu[t], material, fit.energy_kev, tables)))
                   for t in names)
    return Calibration(
        method="internal",
        material=material,
        slope_mg_cm3_per_hu=float(slope),
        intercept_mg_cm3=float(intercept),
        r=float(np.sqrt(fit.r2)),
        n_points=len(names),
        description=(f"physics-based, {', '.join(names)}; effective energy "
                     f"{fit.energy_kev:g} keV" + (f" at {kvp:g} kVp" if kvp else "")
                     + f", r2={fit.r2:.5f}"),
        warnings=tuple(warnings),
        points=points,
        details=details,
        expected_error=expected,
    )
