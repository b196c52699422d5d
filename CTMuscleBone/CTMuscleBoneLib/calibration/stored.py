"""Asynchronous calibration: a line typed in, or one saved from a separate phantom scan.

A phantom scanned on the same scanner and protocol as the patient, but not in the same
scan, calibrates later patient scans ("asynchronous" calibration: r 0.96-0.99 against
simultaneous calibration, Wang et al. 2017, per the project's domain notes). Two ways:

* :func:`fixed_calibration`: slope, intercept and reference material entered by the
  user (e.g. from the scanner's QA records);
* :func:`save_calibration` / :func:`load_calibration`: ``ctmusclebone calibrate`` fits a
  phantom scan and saves the line with the scanner facts of that scan (kVp,
  manufacturer, model, date, checksum); measuring a patient with ``--calibration fixed
  --calibration-file FILE`` loads it and warns when the patient scan's kVp or scanner
  differs (HU of bone depend on both, so the line would not apply).

Either way the calibration's method is ``'fixed'``, and its description says where the
line came from; the provenance of every result records it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import InputError
from ..image import CTMetadata
from ..user_files import read_json_file
from .model import MATERIALS, Calibration

#: Schema tag of a saved calibration file.
SCHEMA = "ctmusclebone.calibration/1"
#: Plausible slope range, mg/cm3 per HU (phantom fits give about 0.6-1.2; outside this
#: range the numbers were probably typed in the wrong unit).
SLOPE_RANGE = (0.2, 3.0)
#: Plausible intercept range, mg/cm3.
INTERCEPT_RANGE = (-300.0, 300.0)


def fixed_calibration(slope_mg_cm3_per_hu: float, intercept_mg_cm3: float, material: str,
                      description: str = "coefficients entered by the user") -> Calibration:
    """A calibration line given by its coefficients (asynchronous, not fitted on this scan).

    Parameters
    ----------
    slope_mg_cm3_per_hu : float
        Plausible range :data:`SLOPE_RANGE`.
    intercept_mg_cm3 : float
        Plausible range :data:`INTERCEPT_RANGE`.
    material : {'K2HPO4', 'HA'}
        Reference material of the density scale.
    description : str
        Where the line came from (goes to the method text and provenance).

    Raises
    ------
    InputError
        Non-finite or implausible coefficients, unknown material.
    """
    try:
        slope, intercept = float(slope_mg_cm3_per_hu), float(intercept_mg_cm3)
    except (TypeError, ValueError):
        raise InputError("Calibration slope and intercept must be numbers.") from None
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise InputError("Calibration slope and intercept must be finite numbers.")
    if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
        raise InputError(
            f"Calibration slope {slope:g} mg/cm3 per HU is implausible (expected "
            f"{SLOPE_RANGE[0]:g}-{SLOPE_RANGE[1]:g}); check the unit (mg/cm3 per HU).")
    if not INTERCEPT_RANGE[0] <= intercept <= INTERCEPT_RANGE[1]:
        raise InputError(
            f"Calibration intercept {intercept:g} mg/cm3 is implausible (expected "
            f"{INTERCEPT_RANGE[0]:g} to {INTERCEPT_RANGE[1]:g}).")
    if material not in MATERIALS:
        raise InputError(f"Unknown reference material '{material}'; use "
                         f"{' or '.join(MATERIALS)}.")
    return Calibration(method="fixed", material=material, slope_mg_cm3_per_hu=slope,
                       intercept_mg_cm3=intercept, description=description,
                       warnings=("asynchronous: the line was not fitted on this scan; it "
                                 "holds only for the same scanner and protocol",))


def save_calibration(cal: Calibration, path: str | os.PathLike[str],
                     scan: CTMetadata | None = None, scan_sha256: str | None = None) -> Path:
    """Save a fitted calibration and the facts of the scan it was fitted on (JSON, atomic).

    Raises
    ------
    InputError
        When ``cal`` holds no calibration line.
    """
    if not cal.calibrated:
        raise InputError("There is no calibration line to save (the calibration was "
                         f"refused or not made: {cal.description}).")
    meta = scan or CTMetadata()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "calibration": {k: v for k, v in asdict(cal).items()},
        "scan": {"kvp": meta.kvp, "manufacturer": meta.manufacturer,
                 "manufacturer_model": meta.manufacturer_model, "study_date": meta.study_date,
                 "source": meta.source, "sha256": scan_sha256},
    }
    doc["calibration"]["points"] = [list(p) for p in cal.points]
    doc["calibration"]["warnings"] = list(cal.warnings)
    path = Path(path)
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def load_calibration(path: str | os.PathLike[str],
                     patient_scan: CTMetadata | None = None) -> Calibration:
    """Load a saved calibration as a ``'fixed'`` (asynchronous) calibration.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_calibration` (``ctmusclebone calibrate``).
    patient_scan : CTMetadata, optional
        The scan it will be applied to: a different kVp or scanner adds a warning.

    Raises
    ------
    InputError
        Missing file, not a CTMuscleBone calibration, bad coefficients.
    """
    p = Path(path)
    doc = read_json_file(p, "calibration file")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{p} is not a CTMuscleBone calibration file (expected \"schema\": "
                         f"\"{SCHEMA}\"); make one with `ctmusclebone calibrate`.")
    c = doc.get("calibration") or {}
    scan = doc.get("scan") or {}
    origin = c.get("description") or "phantom scan"
    where = ", ".join(str(v) for v in (scan.get("manufacturer"), scan.get("manufacturer_model"),
                                       f"{scan['kvp']:g} kVp" if scan.get("kvp") else None,
                                       scan.get("study_date")) if v)
    cal = fixed_calibration(c.get("slope_mg_cm3_per_hu"), c.get("intercept_mg_cm3"),
                            str(c.get("material")),
                            description=f"saved from a separate scan: {origin}"
                            + (f" [{where}]" if where else "") + f"; file {p.name}")
    warnings = list(cal.warnings)
    if patient_scan is not None:
        kvp, pkvp = scan.get("kvp"), patient_scan.kvp
        if kvp is not None and pkvp is not None and abs(float(kvp) - float(pkvp)) > 0.5:
            warnings.append(f"the calibration scan was at {float(kvp):g} kVp, this scan at "
                            f"{float(pkvp):g} kVp: the line does not apply; calibrate at the "
                            "same kVp")
        for field_name, label in (("manufacturer", "scanner manufacturer"),
                                  ("manufacturer_model", "scanner model")):
            a, b = scan.get(field_name), getattr(patient_scan, field_name)
            if a and b and str(a).strip().lower() != str(b).strip().lower():
                warnings.append(f"{label} differs from the calibration scan ('{a}' vs "
                                f"'{b}'): the line may not apply")
    return Calibration(method="fixed", material=cal.material,
                       slope_mg_cm3_per_hu=cal.slope_mg_cm3_per_hu,
                       intercept_mg_cm3=cal.intercept_mg_cm3,
                       r=c.get("r"), n_points=int(c.get("n_points") or 0),
                       description=cal.description, warnings=tuple(warnings),
                       points=tuple(tuple(pt) for pt in c.get("points") or ()))
