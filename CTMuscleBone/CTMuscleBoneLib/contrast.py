"""Is the scan contrast-enhanced? One rule, used by the CT check, the calibration and
the result flags.

Iodinated contrast raises the CT numbers of blood and, less, of bone and muscle:
L1 trabecular attenuation is +11 +- 19 HU higher in the portal-venous phase than
unenhanced (Pickhardt et al., AJR 2016); femoral-neck CT-aBMD +0.032 g/cm2; every
calibration method is biased by more than 6 mg/cm3 (Kaesmacher et al., J Comput Assist
Tomogr 2017; figures from the project's domain notes). Published corrections are
phase-, scanner- and protocol-specific linear offsets (e.g. subtracting a phase-specific
HU offset from L1 attenuation); none is validated for every protocol, so CTMuscleBone
applies none by default: it flags every HU- and BMD-based value of an enhanced scan
instead, and gives no category from them: every category whose number depends on the CT
numbers (ACR, WHO/JSBMR, Pickhardt, L3 muscle attenuation) is ``"indeterminate"``
on an enhanced scan, because its thresholds were made on unenhanced CT
(docs/calibration.md). Categories from areas and volumes (L3 SMI, sarcopenia) are kept.

Evidence, in order:

1. the header: DICOM ContrastBolusAgent (0018,0010) naming an agent;
2. blood: the robust mean HU of the labelled aorta or inferior vena cava (eroded away
   from the wall) above :data:`CONTRAST_BLOOD_HU`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .image import CTImage, CTMetadata, LabelMap
from .results import INDETERMINATE, ResultRow, is_category, withheld_flag

#: Unenhanced blood is about 30-60 HU (its attenuation follows the haematocrit; even
#: polycythaemic blood stays below about 80 HU); enhanced aorta and IVC in the
#: portal-venous phase are usually well above 130 HU. Unvalidated default between the two.
CONTRAST_BLOOD_HU = 110.0
#: Header values of ContrastBolusAgent that mean "no contrast".
NO_CONTRAST_WORDS = frozenset({"", "none", "no", "n", "nil", "0", "non", "without",
                               "no contrast", "nc", "native", "unenhanced"})
#: Blood-pool structures of the anatomy table, and the voxels a mean needs.
BLOOD_POOL_KEYS = ("aorta", "inferior_vena_cava")
MIN_BLOOD_VOXELS = 30

#: Flag carried by every HU- or BMD-based row of an enhanced scan.
CONTRAST_FLAG = ("contrast: contrast-enhanced scan; HU and BMD read high (L1 about +11 HU "
                 "portal-venous, Pickhardt 2016); no correction applied")


@dataclass
class ContrastFinding:
    """The evidence for contrast enhancement.

    Attributes
    ----------
    enhanced : bool or None
        True when any evidence says enhanced; False when the header says no contrast or
        a labelled blood pool is unenhanced; None when nothing tells.
    evidence : list of str
        One sentence per piece of evidence.
    blood_hu : dict of str -> float
        Robust mean HU of each labelled blood-pool structure measured.
    """

    enhanced: bool | None = None
    evidence: list[str] = field(default_factory=list)
    blood_hu: dict[str, float] = field(default_factory=dict)


def agent_from_header(meta: CTMetadata) -> str | None:
    """The contrast agent the header names, or None (absent or a 'no contrast' word)."""
    agent = (meta.contrast_agent or "").strip()
    return None if agent.lower() in NO_CONTRAST_WORDS else agent


def blood_pool_hu(ct: CTImage, labels: LabelMap | None) -> dict[str, float]:
    """Median HU of each labelled blood-pool structure, eroded by one voxel.

    Returns {key: HU} for the structures with at least :data:`MIN_BLOOD_VOXELS` voxels
    left after erosion (the median resists calcified plaque and partial volume).
    """
    out: dict[str, float] = {}
    if labels is None:
        return out
    present = set(labels.present_keys())
    for key in BLOOD_POOL_KEYS:
        if key not in present:
            continue
        core = ndimage.binary_erosion(labels.mask(key))
        if int(core.sum()) >= MIN_BLOOD_VOXELS:
            out[key] = float(np.median(ct.hu[core]))
    return out


def detect_contrast(ct: CTImage, labels: LabelMap | None = None) -> ContrastFinding:
    """Decide from the header and the labelled blood pool whether the scan is enhanced."""
    finding = ContrastFinding()
    agent = agent_from_header(ct.metadata)
    if agent is not None:
        finding.enhanced = True
        finding.evidence.append(f"header names a contrast agent ('{agent}')")
    elif ct.metadata.contrast_agent is not None:
        finding.enhanced = False
        finding.evidence.append(f"header says no contrast ('{ct.metadata.contrast_agent}')")
    finding.blood_hu = blood_pool_hu(ct, labels)
    for key, hu in finding.blood_hu.items():
        name = key.replace("_", " ")
        if hu > CONTRAST_BLOOD_HU:
            finding.enhanced = True
            finding.evidence.append(f"{name} at {hu:.0f} HU (> {CONTRAST_BLOOD_HU:g} HU)")
        else:
            if finding.enhanced is None:
                finding.enhanced = False
            finding.evidence.append(f"{name} at {hu:.0f} HU (unenhanced range)")
    return finding


#: Units whose values depend on the CT numbers (HU, densities, areal densities and the
#: scores derived from them).
HU_DEPENDENT_UNITS = frozenset({"HU", "mg/cm3", "g/cm2", "SD", "%"})
#: Quantity name fragments of rows computed from such values: the bone categories
#: (``acr_category``, ``opportunistic_category``, ``who_category_<site>``,
#: ``jsbmr_category_<site>``), scores, HU and BMD, and the L3 muscle attenuation cut-offs
#: (``low_attenuation_<id>``, from the mean HU of the muscle). The L3 SMI cut-offs
#: (``low_smi_<id>``) and ``sarcopenia_low_muscle_mass`` come from areas and volumes in a
#: wide HU window, which contrast barely moves: not listed.
HU_DEPENDENT_QUANTITIES = ("category", "t_score", "z_score", "yam", "hu", "bmd",
                           "attenuation")


def depends_on_hu(unit: str, quantity: str) -> bool:
    """True for a row whose value comes from CT numbers (and so moves with contrast)."""
    q = quantity.lower()
    return unit in HU_DEPENDENT_UNITS or any(part in q for part in HU_DEPENDENT_QUANTITIES)


def contrast_category_flag(finding: ContrastFinding) -> str:
    """The flag of a category made indeterminate by contrast: evidence and what to do."""
    evidence = "; ".join(finding.evidence) or "contrast enhancement detected"
    return withheld_flag(
        f"contrast-enhanced scan ({evidence}): the category's thresholds were made on "
        "unenhanced CT and contrast raises HU and BMD (L1 about +11 HU portal-venous, "
        "Pickhardt 2016; every calibration biased, Kaesmacher 2017); measure a "
        "non-contrast scan (or the unenhanced phase) of this patient for a category")


def make_categories_indeterminate(rows: Iterable[ResultRow],
                                  finding: ContrastFinding) -> list[ResultRow]:
    """Apply the contrast rule to the rows of an enhanced scan, in place.

    Every HU- or BMD-based row (:func:`depends_on_hu`) gets a contrast flag. A category
    row (:func:`CTMuscleBoneLib.results.is_category`) among them gets no category: a
    value becomes :data:`~CTMuscleBoneLib.results.INDETERMINATE` (a not-measurable
    None stays None) and its flag, :func:`contrast_category_flag`, gives the evidence
    and what to do. Numeric rows (HU, vBMD, aBMD, scores) keep their values with
    :data:`CONTRAST_FLAG`.

    Parameters
    ----------
    rows : iterable of ResultRow
        The rows of one scan.
    finding : ContrastFinding
        Its contrast evidence; nothing is changed unless ``finding.enhanced`` is True.

    Returns
    -------
    list of ResultRow
        The category rows made indeterminate (value was not None).
    """
    changed: list[ResultRow] = []
    if not finding.enhanced:
        return changed
    cat_flag = contrast_category_flag(finding)
    for r in rows:
        if not depends_on_hu(r.unit, r.quantity):
            continue
        if is_category(r.quantity):
            if r.value is not None:
                r.value = INDETERMINATE
                changed.append(r)
            if cat_flag not in r.flags:
                r.flags.append(cat_flag)
        elif CONTRAST_FLAG not in r.flags:
            r.flags.append(CONTRAST_FLAG)
    return changed
