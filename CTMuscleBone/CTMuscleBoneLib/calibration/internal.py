"""Table-based internal HU -> BMD calibration: a site's own reference-tissue table.

The default phantomless method is physics-based (:mod:`.phantomless`); this module is
used when a site passes a table of equivalent densities derived from its own
phantom-calibrated scans (``--references FILE``).

Reference tissues (air outside the body, subcutaneous fat, skeletal muscle, aortic
blood) are measured in the same scan and given equivalent mineral densities; a line
``density = slope * HU + intercept`` is fitted through them (approach 1 of the review
by Engelke et al., Curr Osteoporos Rep 2023, PMC9925590; air with blood or adipose as
in Lee et al., Bone 2017; air, adipose, blood and muscle among the references of
Michalski et al., Med Eng Phys 2020).

The equivalent densities come from the site's JSON table (no table is bundled: a
table is scanner- and kVp-specific). A table without ``"verified": true`` makes every
calibration carry a warning.

Contrast-enhanced scans: blood is excluded (and a warning given) when the metadata
name a contrast agent or the aorta is brighter than :data:`CONTRAST_BLOOD_HU`
(Kaesmacher et al., J Comput Assist Tomogr 2017: contrast biases blood-based
calibration by > 6 mg/mL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..anatomy import keys_in
from ..body import body_mask
from ..contrast import CONTRAST_BLOOD_HU, agent_from_header
from ..errors import InputError
from ..image import CTImage, LabelMap
from ..tissue import FAT_HU_RANGE, LEAN_HU_RANGE
from ..user_files import read_json_file
from .fit import fit_hu_to_density
from .model import MATERIALS, Calibration, CalibrationRefused
from .phantom_fit import robust_mean_sd

#: HU windows of the fallbacks when tissue labels are absent (docs/domain.md, Muscle:
#: adipose -190..-30 HU, lean muscle -29..150 HU); air: -1100..-900 HU.
FAT_WINDOW_HU = FAT_HU_RANGE
MUSCLE_WINDOW_HU = LEAN_HU_RANGE
AIR_WINDOW_HU = (-1100.0, -900.0)
#: Distance kept from the body surface when sampling air (mm), avoiding the skin edge.
AIR_MARGIN_MM = 10.0
#: Minimum voxels for a reference tissue to be used.
MIN_VOXELS = 50
#: Minimum Pearson r of the internal fit (unvalidated default).
MIN_R_INTERNAL = 0.99

REFERENCE_KEYS = ("air", "subcutaneous_fat", "skeletal_muscle", "blood")


def load_internal_references(path: str | Path | dict) -> dict[str, Any]:
    """Read a site's reference-tissue table (JSON file path or parsed dict).

    Raises
    ------
    InputError
        Unreadable file, unknown material, or a tissue without a numeric
        ``equivalent_density_mg_cm3``.
    """
    if isinstance(path, dict):
        data, where = path, "internal reference table"
    elif path is None:
        raise InputError("A reference-tissue table is needed (a JSON file of equivalent "
                         "densities from your phantom-calibrated scans); without one use the "
                         "physics-based internal calibration.")
    else:
        where = f"internal reference table {path}"
        data = read_json_file(path, "internal reference table")
    if not isinstance(data, dict) or data.get("material") not in MATERIALS:
        raise InputError(f"{where}: needs 'material' ({' or '.join(MATERIALS)}) and "
                         "'references'.")
    refs = data.get("references")
    if not isinstance(refs, dict) or not refs:
        raise InputError(f"{where}: 'references' must map tissue names "
                         f"({', '.join(REFERENCE_KEYS)}) to objects.")
    for name, ref in refs.items():
        if name not in REFERENCE_KEYS:
            raise InputError(f"{where}: unknown tissue '{name}'; use {REFERENCE_KEYS}.")
        v = ref.get("equivalent_density_mg_cm3") if isinstance(ref, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise InputError(f"{where}: tissue '{name}' needs a numeric "
                             "'equivalent_density_mg_cm3'.")
    return data


def measure_reference_tissues(
    ct: CTImage, labels: LabelMap | None = None
) -> tuple[dict[str, tuple[float, int]], list[str]]:
    """Robust mean CT number (and voxel count) of each reference tissue found.

    Returns
    -------
    values : dict of str -> (mean_hu, n_voxels)
    notes : list of str
        How each tissue was found (labels or HU-window fallback).
    """
    hu = ct.hu
    body = body_mask(hu)
    notes: list[str] = []
    out: dict[str, tuple[float, int]] = {}
    # air: outside the body, away from its surface, within the air window
    sp = np.asarray(ct.spacing_mm)
    it = max(1, int(round(AIR_MARGIN_MM / float(sp.min()))))
    near_body = ndimage.binary_dilation(body, iterations=it)
    air = ~near_body & (hu >= AIR_WINDOW_HU[0]) & (hu <= AIR_WINDOW_HU[1])
    if air.sum() >= MIN_VOXELS:
        m, _, n = robust_mean_sd(hu[air])
        out["air"] = (m, n)
    inner = ndimage.binary_erosion(body, iterations=1)

    def labelled(keys: list[str]) -> np.ndarray | None:
        if labels is None:
            return None
        mask = np.zeros(hu.shape, dtype=bool)
        for k in keys:
            if k in labels.structures.values():
                mask |= labels.mask(k)
        if mask.sum() < MIN_VOXELS:
            return None
        eroded = ndimage.binary_erosion(mask)
        return eroded if eroded.sum() >= MIN_VOXELS else mask

    fat = labelled(["subcutaneous_fat"])
    if fat is None:
        fat = inner & (hu >= FAT_WINDOW_HU[0]) & (hu <= FAT_WINDOW_HU[1])
        notes.append(f"fat: HU window {FAT_WINDOW_HU[0]:g}..{FAT_WINDOW_HU[1]:g} inside the "
                     "body (no subcutaneous_fat label)")
    else:
        notes.append("fat: subcutaneous_fat label")
    if fat.sum() >= MIN_VOXELS:
        out["subcutaneous_fat"] = robust_mean_sd(hu[fat])[::2]
    muscle = labelled(keys_in("muscle"))
    if muscle is None:
        muscle = inner & (hu >= MUSCLE_WINDOW_HU[0]) & (hu <= MUSCLE_WINDOW_HU[1])
        notes.append(f"muscle: HU window {MUSCLE_WINDOW_HU[0]:g}..{MUSCLE_WINDOW_HU[1]:g} "
                     "inside the body (no muscle labels; includes other soft tissue)")
    else:
        notes.append("muscle: muscle labels")
    if muscle.sum() >= MIN_VOXELS:
        values = hu[muscle]
        values = values[(values >= MUSCLE_WINDOW_HU[0]) & (values <= MUSCLE_WINDOW_HU[1])]
        if values.size >= MIN_VOXELS:
            out["skeletal_muscle"] = robust_mean_sd(values)[::2]
    blood = labelled(["aorta"])
    if blood is not None:
        out["blood"] = robust_mean_sd(hu[blood])[::2]
        notes.append("blood: aorta label")
    return out, notes


def internal_calibration(
    ct: CTImage,
    labels: LabelMap | None,
    references: str | Path | dict,
    min_r: float = MIN_R_INTERNAL,
) -> Calibration:
    """Phantomless calibration from reference tissues of the same scan.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
        Muscle labels, ``subcutaneous_fat`` and ``aorta`` are used when present; HU
        windows otherwise (blood needs the ``aorta`` label).
    references : path, dict or None
        The site's equivalent-density table (see :func:`load_internal_references`).
    min_r : float
        Minimum Pearson r of the fit (with 3 or more tissues).

    Raises
    ------
    CalibrationRefused
        Fewer than 2 usable tissues, or a poor fit.
    """
    table = load_internal_references(references)
    refs = table["references"]
    measured, notes = measure_reference_tissues(ct, labels)
    warnings: list[str] = []
    if not table.get("verified", False):
        warnings.append("internal calibration uses a reference table not marked verified "
                        "(equivalent densities should come from phantom-calibrated scans of "
                        "this scanner and kVp)")
    kvp = ct.metadata.kvp
    if kvp is not None and table.get("kvp") is not None and abs(kvp - table["kvp"]) > 1:
        warnings.append(f"scan at {kvp:g} kVp but reference densities are for "
                        f"{table['kvp']:g} kVp: internal calibration is kVp-specific")
    agent = agent_from_header(ct.metadata)
    if "blood" in measured:
        contrast_reason = None
        if agent:
            contrast_reason = f"contrast agent '{agent}' in the metadata"
        elif measured["blood"][0] > CONTRAST_BLOOD_HU:
            contrast_reason = (f"aortic blood at {measured['blood'][0]:.0f} HU "
                               f"(> {CONTRAST_BLOOD_HU:g} HU)")
        if contrast_reason:
            warnings.append(f"contrast-enhanced scan ({contrast_reason}): blood excluded from "
                            "the calibration; contrast also raises bone HU")
            del measured["blood"]
    elif agent:
        warnings.append(f"contrast-enhanced scan (contrast agent '{agent}'): contrast raises "
                        "bone HU")
    names = [k for k in REFERENCE_KEYS if k in measured and k in refs]
    if len(names) < 2:
        raise CalibrationRefused(
            f"internal calibration needs at least 2 reference tissues; found "
            f"{', '.join(names) or 'none'} (air outside the body, fat, muscle, aorta): the "
            "field of view may be cut at the skin, or labels are missing."
        )
    hu = np.array([measured[k][0] for k in names])
    rho = np.array([float(refs[k]["equivalent_density_mg_cm3"]) for k in names])
    fit = fit_hu_to_density(hu, rho)
    if not np.isfinite(fit.slope_mg_cm3_per_hu) or (len(names) > 2 and fit.r < min_r):
        raise CalibrationRefused(
            f"internal calibration fit is poor (r = {fit.r:.4f}): reference tissue CT "
            f"numbers {dict(zip(names, np.round(hu, 1).tolist(), strict=True))} do not lie "
            "on a line; check for artefacts or contrast."
        )
    if len(names) == 2:
        warnings.append("only 2 reference tissues: the line passes through both exactly; "
                        "its quality cannot be checked")
    return Calibration(
        method="internal",
        material=str(table["material"]),
        slope_mg_cm3_per_hu=fit.slope_mg_cm3_per_hu,
        intercept_mg_cm3=fit.intercept_mg_cm3,
        r=fit.r,
        n_points=len(names),
        description=f"internal: {', '.join(names)} ({'; '.join(notes)})",
        warnings=tuple(warnings),
        points=tuple((k, float(h), float(d)) for k, h, d in zip(names, hu, rho, strict=True)),
    )
