"""Lumbar spine trabecular HU and volumetric BMD (QCT style) from a CT and its labels.

For each lumbar vertebra label (L1-L5) present:

1. spine axis through the neighbouring vertebral bodies' centres (a first body
   separation in the patient frame gives them; else patient superior);
2. body cut from the posterior elements (:mod:`.body_separation`);
3. metal / cement check: a cluster of voxels above :data:`METAL_HU` of at least
   :data:`METAL_MIN_VOLUME_MM3` in the label or within :data:`METAL_MARGIN_MM` of it makes
   the vertebra not measurable;
4. trabecular ROI (:mod:`.trabecular_roi`): mean and SD of HU; vBMD through the
   calibration (not measurable without one);
5. body heights and a Genant-style grade (:mod:`.fracture`); a body cut by the field of
   view is flagged partial, not graded, and measured only if the ROI still fits in
   the visible part (the ROI keeps its margin from the image edge).

Summaries ``lumbar_L1_L2`` and ``lumbar_L1_L4``: mean trabecular vBMD (and HU) of the
complete, measurable, unfractured vertebrae, its hydroxyapatite (HA) equivalent and the
ACR category; fractured vertebrae are excluded with a note (see
:func:`excluded_as_fractured`). The ACR thresholds are defined in mg/cm3 HA on the mean
of two vertebrae, so the category is computed from the HA-equivalent mean
(:func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`: a K2HPO4 density is divided by
Goodsitt's kVp-dependent ratio) and only from two or more vertebrae; otherwise it is
``None`` with the reason. When the mean has an interval (the phantomless calibration's
stated +-10 %, or the K2HPO4-to-HA ratio's range when the kVp is unknown) that reaches
across 80 or 120 mg/cm3, the category is ``"indeterminate"`` with the interval in a
``warning: category withheld:`` flag (as the Genant grade is uncertain when its
height-loss interval spans two grades). Uncalibrated: ``vertebrae_L1`` gets the
opportunistic category of Pickhardt et al. from its trabecular HU, only at 120 kVp: at
another or an unknown kVp it is ``"indeterminate"`` with the reason
(:func:`pickhardt_kvp_reason`). On a
contrast-enhanced scan both categories are made ``"indeterminate"`` later
(:func:`CTMuscleBoneLib.contrast.make_categories_indeterminate`).

Sources of the thresholds
-------------------------
* ACR-SPR-SSR Practice Parameter for the Performance of Musculoskeletal Quantitative
  Computed Tomography (QCT), revised 2018: lumbar trabecular vBMD (mean of two
  vertebrae) > 120 mg/cm3 normal, 80-120 mg/cm3 low bone mass, < 80 mg/cm3
  osteoporosis. The primary document was not reachable here; the same three ranges,
  attributed to the ACR and defined on the mean of two lumbar vertebral bodies, are
  reproduced in the Chinese expert consensus on QCT (Quant Imaging Med Surg 2019;
  PMC7495321, Table 2), which is what this code was checked against.
* Pickhardt PJ et al., Ann Intern Med 2013;158:588-595 (2067 CT-DXA pairs, 120 kVp):
  L1 trabecular attenuation <= 160 HU was 90 % sensitive and <= 110 HU more than 90 %
  specific for DXA-defined osteoporosis (checked against the published abstract).
* Metal: > 2000-3000 HU (project domain notes, docs/lumbar_bmd.md); 2000 HU is used.
* Reference material: BMD_K2HPO4 / BMD_HA = 0.86 at 80 kVp to 0.81 at 140 kVp (Goodsitt,
  Bone Miner 1992;19:145-158), applied through :mod:`CTMuscleBoneLib.dxa.material` (the
  one table; 120 kVp assumed and flagged when the kVp is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..calibration.model import Calibration
from ..dxa.material import MaterialConversion, to_hydroxyapatite
from ..errors import InputError
from ..fov import indices_touch_border, inside_fov, outside_fov
from ..image import CTImage, Geometry, LabelMap
from ..results import INDETERMINATE, NO_CALIBRATION_REASON, ResultRow, withheld_flag
from ..tissue import METAL_OR_CEMENT_HU
from ..validation import effective_slice_thickness_mm
from .body_separation import BodySeparation, separate_body
from .fracture import (
    FractureAssessment,
    VertebralHeights,
    assess_fracture,
    body_heights,
    excludes_from_summaries,
)
from .trabecular_roi import MIN_ROI_VOLUME_CM3, MIN_ROI_VOXELS, TrabecularROI, trabecular_roi

LUMBAR_KEYS: tuple[str, ...] = tuple(f"vertebrae_L{n}" for n in range(1, 6))

#: Metal / bone cement threshold, HU (one rule: :mod:`CTMuscleBoneLib.tissue`).
METAL_HU = METAL_OR_CEMENT_HU
#: Smallest cluster above :data:`METAL_HU` counted as metal or cement, mm^3 (project
#: default: larger than an isolated noisy voxel at sub-millimetre spacing).
METAL_MIN_VOLUME_MM3 = 10.0
#: Neighbourhood of the vertebra label searched for metal, mm (project default: screws
#: and cement can lie just outside a label drawn around the bone).
METAL_MARGIN_MM = 5.0
#: Slice thickness above which a warning is added (domain notes: 5 mm slices make
#: volumes and BMD coarse; 3 mm is the limit named in the project brief).
MAX_SLICE_THICKNESS_MM = 3.0
#: Largest angle between the neighbour-based spine axis and patient superior, degrees.
MAX_AXIS_TILT_DEG = 35.0

#: ACR 2018 thresholds, mg/cm3 (see module docstring).
ACR_NORMAL_ABOVE = 120.0
ACR_OSTEOPOROSIS_BELOW = 80.0
#: Pickhardt et al. 2013 L1 thresholds, HU (see module docstring).
PICKHARDT_SENSITIVE_HU = 160.0
PICKHARDT_SPECIFIC_HU = 110.0
#: Tube voltage the Pickhardt thresholds were derived at, kVp, and the difference from it
#: still taken as that voltage (header values are whole kV; the tolerance only absorbs
#: rounding such as 119.9). Any other or unknown kVp: the category is indeterminate.
PICKHARDT_KVP = 120.0
PICKHARDT_KVP_TOLERANCE = 1.0

#: Dense-voxel check of the trabecular ROI (project defaults, not validated). A voxel is
#: "dense" when its HU exceeds the ROI's median by more than DENSE_OFFSET_HU and by more
#: than DENSE_NOISE_SDS robust SDs (1.4826 x the median absolute deviation). 150 HU is
#: more than the whole span of trabecular L1 attenuation between osteoporosis and a
#: young-adult normal (Pickhardt 2013: <= 110 HU; Hendrickson 2018: 236 HU), so a voxel
#: that far above its own ROI's median is not trabecular bone of that patient; it is
#: 4 or more SDs of the image noise in trabecular bone (15-40 HU on clinical CT; 35 HU in
#: L2 of the real test scan), so noise alone puts < 0.01 % of the voxels there, and the
#: 4-SD term keeps it so on noisier scans. A bone island (400-800 HU), the sclerotic rim
#: of a Schmorl node or contrast lies above it.
DENSE_OFFSET_HU = 150.0
#: See :data:`DENSE_OFFSET_HU`: robust SDs of the ROI above its median.
DENSE_NOISE_SDS = 4.0
#: Fraction of dense ROI voxels above which the vertebra is flagged (project default,
#: not validated): 2 % of voxels 300-600 HU above the trabecular level move the mean by
#: 6-12 HU, about 5-10 % of a typical vBMD, as much as a calibration's error.
DENSE_FRACTION = 0.02
#: Tag of the heterogeneous-ROI warning (the mean is not changed).
DENSE_TAG = "heterogeneous ROI"
#: The flag of a vertebra whose body is cut by the field of view; such a vertebra is
#: never used by the summaries (:func:`summary_exclusion` reads it back).
BODY_CUT_FLAG = "partial: cut by the field of view (the vertebral body)"
#: End of the fracture flag of a vertebra excluded from the summaries.
FRACTURE_EXCLUDED = ": excluded from lumbar summaries"
#: Minimum number of vertebrae the ACR criteria are defined on (mean of two).
ACR_MIN_VERTEBRAE = 2

ROI_METHOD = "mean HU in a central trabecular ROI of the vertebral body"
PICKHARDT_REF = "Pickhardt et al., Ann Intern Med 2013;158:588-595"
ACR_REF = "ACR-SPR-SSR practice parameter for QCT (2018)"
VBMD_METHOD = "trabecular mean HU converted by the HU-to-BMD calibration"
#: Prefix of the information flag of a relaxed trabecular ROI.
ROI_RELAXED = "info: ROI relaxed"


def acr_category(vbmd_mg_cm3: float) -> str:
    """ACR 2018 lumbar QCT category of a mean trabecular vBMD.

    Parameters
    ----------
    vbmd_mg_cm3 : float
        Mean trabecular vBMD of two or more vertebrae in mg/cm3 **hydroxyapatite** (the
        scale of the thresholds); convert a K2HPO4 value first
        (:func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`).
    """
    if vbmd_mg_cm3 > ACR_NORMAL_ABOVE:
        return "normal"
    if vbmd_mg_cm3 >= ACR_OSTEOPOROSIS_BELOW:
        return "low bone mass (osteopenia)"
    return "osteoporosis"


def pickhardt_category(l1_hu: float) -> str:
    """Opportunistic category of the L1 trabecular HU (Pickhardt et al. 2013)."""
    if l1_hu <= PICKHARDT_SPECIFIC_HU:
        return "osteoporosis likely (L1 <= 110 HU: > 90 % specific)"
    if l1_hu <= PICKHARDT_SENSITIVE_HU:
        return ("low bone density possible (L1 <= 160 HU: 90 % sensitive); "
                "confirm with DXA or calibrated QCT")
    return "osteoporosis unlikely (L1 > 160 HU)"


@dataclass
class VertebraAnalysis:
    """Everything measured on one vertebra (rows are built from it).

    ``not_measurable`` holds the reason when the trabecular values cannot be given.
    """

    key: str
    partial: bool = False
    body_partial: bool = False
    body: BodySeparation | None = None
    roi: TrabecularROI | None = None
    heights: VertebralHeights | None = None
    fracture: FractureAssessment | None = None
    mean_hu: float | None = None
    sd_hu: float | None = None
    vbmd_mg_cm3: float | None = None
    dense_fraction: float | None = None
    metal_volume_mm3: float = 0.0
    not_measurable: str | None = None
    flags: list[str] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------
def dense_voxel_check(values_hu: np.ndarray) -> tuple[float, float, float]:
    """Fraction of trabecular ROI voxels far above the ROI's own trabecular level.

    Parameters
    ----------
    values_hu : np.ndarray, (n,)
        HU of the ROI voxels.

    Returns
    -------
    (fraction, threshold_hu, mean_without_hu)
        Fraction of voxels above ``threshold_hu`` = median + max(:data:`DENSE_OFFSET_HU`,
        :data:`DENSE_NOISE_SDS` x 1.4826 x MAD), in [0, 1]; the mean HU of the other
        voxels (for the flag's text only: the reported mean keeps every voxel).
    """
    v = np.asarray(values_hu, dtype=np.float64).ravel()
    med = float(np.median(v))
    robust_sd = 1.4826 * float(np.median(np.abs(v - med)))
    threshold = med + max(DENSE_OFFSET_HU, DENSE_NOISE_SDS * robust_sd)
    dense = v > threshold
    rest = v[~dense]
    return float(dense.mean()), threshold, float(rest.mean()) if rest.size else med


def _dense_flag(fraction: float, n_voxels: int, threshold_hu: float, mean_hu: float,
                mean_without_hu: float) -> str:
    return (f"{DENSE_TAG}: {100 * fraction:.1f} % of the trabecular ROI voxels "
            f"({round(fraction * n_voxels)} of {n_voxels}) lie far above its trabecular bone "
            f"(> {threshold_hu:.0f} HU, the ROI median + max({DENSE_OFFSET_HU:g} HU, "
            f"{DENSE_NOISE_SDS:g} robust SD)); check for a bone island, sclerosis (e.g. the "
            f"rim of a Schmorl node) or contrast. The mean {mean_hu:.1f} HU includes them "
            f"(without them {mean_without_hu:.1f} HU). Flagged above "
            f"{100 * DENSE_FRACTION:g} % of the voxels (unvalidated project default)")


def summary_exclusion(flags: Sequence[str]) -> str | None:
    """Why a vertebra whose row carries ``flags`` is not used by the lumbar summaries.

    Reads back the flags :func:`spine_rows` writes (one rule for reports and tables):
    a vertebral body cut by the field of view, or a fracture that excludes it.

    Returns
    -------
    str or None
        The reason ('vertebral body cut by the field of view', 'fractured'), or None when
        the flags do not exclude it (a not-measurable vertebra has no value anyway).
    """
    if BODY_CUT_FLAG in flags:
        return "vertebral body cut by the field of view"
    if any(f.startswith("fracture:") and f.endswith(FRACTURE_EXCLUDED) for f in flags):
        return "fractured"
    return None


def excluded_as_fractured(res: VertebraAnalysis) -> bool:
    """True when a vertebra's fracture grade excludes it from the lumbar summaries.

    Delegates to :func:`.fracture.excludes_from_summaries`: only a confident grade 2-3
    excludes; a confident grade 1 or a grade the geometry cannot support (``uncertain``:
    its height-loss interval spans two Genant classes) keeps the vertebra in the
    summaries, flagged.
    """
    return excludes_from_summaries(res.fracture)  # confident grade >= 2 only (fracture.py)


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
           for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return None
    return np.array([i[0] for i in idx]), np.array([i[-1] for i in idx])


def metal_volume_mm3(ct: CTImage, mask: np.ndarray) -> float:
    """Volume (mm^3) of the largest cluster above :data:`METAL_HU` in or near a label.

    Parameters
    ----------
    ct : CTImage
    mask : np.ndarray of bool, (n0, n1, n2)
        The vertebra label.
    """
    box = _bbox(mask)
    if box is None:
        return 0.0
    sp = np.asarray(ct.geometry.spacing_mm)
    pad = np.ceil(METAL_MARGIN_MM / sp).astype(int) + 1
    lo = np.maximum(box[0] - pad, 0)
    hi = np.minimum(box[1] + pad + 1, np.asarray(mask.shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    hot = np.asarray(ct.hu[sl]) > METAL_HU
    if not hot.any():
        return 0.0
    near = ndimage.distance_transform_edt(~mask[sl], sampling=sp) <= METAL_MARGIN_MM
    comp, n = ndimage.label(hot & near, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return 0.0
    sizes = np.bincount(comp.ravel())[1:]
    return float(sizes.max() * ct.geometry.voxel_volume_mm3)


def _spine_axis(
    key: str, centroids: dict[str, np.ndarray], usable: set[str]
) -> np.ndarray | None:
    """Local spine axis from the body centres of the neighbouring levels, or None.

    ``centroids`` are body centres from a first separation in the patient frame (whole
    vertebra centroids would tilt the axis: the posterior elements' share differs by
    level). Only levels in ``usable`` (not cut by the field of view) are used.
    """
    n = LUMBAR_KEYS.index(key)
    above = LUMBAR_KEYS[n - 1] if n > 0 else None
    below = LUMBAR_KEYS[n + 1] if n + 1 < len(LUMBAR_KEYS) else None
    up = centroids[above] if above in usable else centroids[key]
    down = centroids[below] if below in usable else centroids[key]
    d = up - down
    if np.linalg.norm(d) < 1e-6:
        return None
    d = d / np.linalg.norm(d)
    if np.degrees(np.arccos(np.clip(d[2], -1.0, 1.0))) > MAX_AXIS_TILT_DEG:
        return None
    return d


# -- analysis --------------------------------------------------------------------------
def analyse_spine(
    ct: CTImage, labels: LabelMap, calibration: Calibration
) -> dict[str, VertebraAnalysis]:
    """Analyse every lumbar vertebra label present (see module docstring).

    Returns
    -------
    dict[str, VertebraAnalysis]
        Keyed by anatomy key, in the order L1..L5, present levels only.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(
            "The label map is not on the CT's voxel grid (size, spacing, origin or "
            "orientation differ). Resample the labels onto the CT before measuring."
        )
    geometry: Geometry = ct.geometry
    present = set(labels.present_keys())
    keys = [k for k in LUMBAR_KEYS if k in present]
    masks = {k: labels.mask(k) for k in keys}
    # padding outside the reconstructed field of view cuts a vertebra as the grid's edge
    # does; labelled padding voxels are not bone
    outside = outside_fov(ct.hu)
    out: dict[str, VertebraAnalysis] = {}
    for k in keys:
        out[k] = VertebraAnalysis(key=k, partial=indices_touch_border(np.argwhere(masks[k]),
                                                               geometry.shape, outside))
        masks[k] = inside_fov(masks[k], outside)
    complete = {k for k in keys if not out[k].partial}
    # pass 1: bodies in the patient frame; their centres give the local spine axis
    first = {k: separate_body(masks[k], geometry, None) for k in keys}
    centres = {k: b.centre_mm for k, b in first.items()}
    thickness = effective_slice_thickness_mm(ct)

    for k in keys:
        res = out[k]
        axis = _spine_axis(k, centres, complete)
        body = first[k] if axis is None else separate_body(masks[k], geometry, axis)
        res.body = body
        res.body_partial = indices_touch_border(body.body_index, geometry.shape, outside)
        if res.partial:
            res.flags.append(BODY_CUT_FLAG if res.body_partial else
                             "partial: cut by the field of view (the posterior elements only)")
        if thickness > MAX_SLICE_THICKNESS_MM:
            res.flags.append(
                f"warning: slice thickness {thickness:.3g} mm > {MAX_SLICE_THICKNESS_MM:g} mm: "
                "partial-volume effects make ROI values and heights less reliable"
            )
        res.metal_volume_mm3 = metal_volume_mm3(ct, masks[k])
        if res.metal_volume_mm3 >= METAL_MIN_VOLUME_MM3:
            res.not_measurable = (
                f"metal or cement: {res.metal_volume_mm3:.0f} mm3 above {METAL_HU:.0f} HU in "
                f"or within {METAL_MARGIN_MM:g} mm of the vertebra"
            )
        roi = trabecular_roi(body, geometry)
        res.roi = roi
        if roi.relaxed:
            res.flags.append(
                f"{ROI_RELAXED} to {roi.margin_mm:g} mm margin, scale {roi.scale:g} "
                "(default ROI too small at this voxel size)"
            )
        if res.not_measurable is None and not roi.sufficient:
            res.not_measurable = (
                f"too few trabecular ROI voxels ({roi.n_voxels} voxels, "
                f"{roi.volume_cm3:.2f} cm3; need >= {MIN_ROI_VOXELS} and "
                f">= {MIN_ROI_VOLUME_CM3:g} cm3)"
                + (": vertebral body cut by the field of view" if res.body_partial else "")
            )
        if res.not_measurable is None:
            values = np.asarray(ct.hu[tuple(roi.index.T)], dtype=np.float64)
            res.mean_hu = float(values.mean())
            res.sd_hu = float(values.std(ddof=1)) if values.size > 1 else 0.0
            frac, threshold, without = dense_voxel_check(values)
            res.dense_fraction = frac
            if frac > DENSE_FRACTION:  # flagged only; the mean keeps every voxel
                res.flags.append(_dense_flag(frac, values.size, threshold, res.mean_hu,
                                             without))
            if calibration.calibrated:
                res.vbmd_mg_cm3 = float(calibration.bmd_mg_cm3(res.mean_hu))
        if not res.body_partial:
            res.heights = body_heights(body)

    for k in keys:
        res = out[k]
        if res.heights is None:
            continue
        lvl = LUMBAR_KEYS.index(k)
        nb = [out[j].heights for j in LUMBAR_KEYS[max(lvl - 1, 0): lvl + 2]
              if j != k and j in out and out[j].heights is not None]
        res.fracture = assess_fracture(res.heights, [h for h in nb if h is not None])
    return out


# -- rows ------------------------------------------------------------------------------
def _na(reason: str) -> list[str]:
    return [f"not_measurable: {reason}"]


def _vbmd_method(calibration: Calibration, method: str = VBMD_METHOD) -> str:
    """Method text of a vBMD value: the calibration's text only when there is one."""
    return f"{method}; {calibration.method_text()}" if calibration.calibrated else method


def _fracture_text(f: FractureAssessment) -> str:
    if f.reduction is None or f.grade is None:  # inconsistent heights: no number
        return "fracture: Genant grade not measurable (heights inconsistent)"
    lo, hi = f.interval if f.interval is not None else (f.reduction, f.reduction)
    if f.uncertain and f.grade_range is not None:  # never a plain 'fracture' tag
        return (f"fracture uncertain: Genant grade uncertain "
                f"({f.grade_range[0]}-{f.grade_range[1]}; "
                f"{f.kind}, {100 * f.reduction:.0f} % height loss, interval "
                f"{100 * lo:.0f}-{100 * hi:.0f} %)")
    return f"fracture: Genant grade {f.grade} ({f.kind}, {100 * f.reduction:.0f} % height loss)"


def _vertebra_rows(res: VertebraAnalysis, calibration: Calibration,
                   ha: tuple[Calibration, MaterialConversion | None]) -> list[ResultRow]:
    k, rows = res.key, []
    flags = list(res.flags)
    if excluded_as_fractured(res):
        flags.append(_fracture_text(res.fracture) + FRACTURE_EXCLUDED)
    elif res.fracture is not None and (res.fracture.grade or 0) > 0:
        flags.append(_fracture_text(res.fracture) + ": kept in lumbar summaries")
    roi = res.roi
    roi_text = ROI_METHOD
    if roi is not None:
        roi_text += (f" (elliptic cylinder, {roi.margin_mm:g} mm from the body surface, "
                     "basivertebral zone excluded)")
    na = _na(res.not_measurable) if res.not_measurable else []
    rows.append(ResultRow(k, "trabecular_mean_hu", res.mean_hu, "HU", roi_text, na + flags))
    rows.append(ResultRow(k, "trabecular_sd_hu", res.sd_hu, "HU", roi_text, na + flags))
    if not calibration.calibrated:
        vb_flags = _na(NO_CALIBRATION_REASON)
    elif res.not_measurable:
        vb_flags = na
    else:
        vb_flags = calibration.flags()
    rows.append(ResultRow(k, "trabecular_vbmd", res.vbmd_mg_cm3, "mg/cm3",
                          _vbmd_method(calibration), vb_flags + flags))
    ha_cal, conv = ha
    ha_value = (float(ha_cal.bmd_mg_cm3(res.mean_hu))
                if res.vbmd_mg_cm3 is not None and res.mean_hu is not None else None)
    rows.append(ResultRow(k, "trabecular_vbmd_ha", ha_value, "mg/cm3",
                          _ha_method(calibration, conv),
                          vb_flags + (conv.flags() if conv and ha_value is not None else [])
                          + flags))
    rows.append(ResultRow(k, "roi_volume", roi.volume_cm3 if roi is not None else None, "cm3",
                          "ROI voxel count x voxel volume",
                          ([] if roi is not None else _na("no ROI")) + res.flags))
    f = res.fracture
    grade_method = "Genant semi-quantitative grade from body height ratios (Genant 1993)"
    if f is None:
        reason = ("vertebral body cut by the field of view" if res.body_partial
                  else "body heights not measurable")
        rows.append(ResultRow(k, "fracture_grade", None, "1", grade_method, _na(reason)))
        rows.append(ResultRow(k, "height_reduction", None, "%", grade_method, _na(reason)))
    else:
        ratios = ", ".join(f"{name} {r:.2f}" for name, r in f.ratios.items())
        keep = [x for x in res.flags  # ROI matters, not the heights
                if not x.startswith(ROI_RELAXED) and not x.startswith(DENSE_TAG)]
        if f.reduction is None:  # impossible geometry: no number is printed
            reason = _na("; ".join(f.reasons) or "heights inconsistent")
            rows.append(ResultRow(k, "fracture_grade", None, "1", grade_method, reason + keep))
            rows.append(ResultRow(k, "height_reduction", None, "%", grade_method, reason + keep))
            return rows
        if f.uncertain:  # reads as uncertain ('fracture uncertain'), never as 'fracture'
            gflags = ["fracture uncertain: " + "; ".join(f.reasons)]
        else:
            gflags = [_fracture_text(f)] if (f.grade or 0) > 0 else []
        gflags += keep
        grade_flags = (_na("Genant grade uncertain: " + "; ".join(f.reasons)) + keep
                       if f.uncertain else gflags)
        rows.append(ResultRow(k, "fracture_grade", f.confident_grade, "1",
                              f"{grade_method}; {ratios}", grade_flags))
        rows.append(ResultRow(k, "height_reduction", 100.0 * f.reduction, "%",
                              f"largest of wedge, biconcave and crush height loss; {ratios}",
                              gflags))
    return rows


def _ha_method(calibration: Calibration, conv: MaterialConversion | None,
               method: str = VBMD_METHOD) -> str:
    """Method text of an HA-equivalent value: the calibration, then the conversion."""
    text = _vbmd_method(calibration, method)
    return f"{text}; {conv.method_text()}" if conv is not None else text


def _stated_error_fraction(calibration: Calibration) -> float | None:
    """The calibration's stated relative error (fraction), or None when it states none.

    Only the phantomless calibration states one, as ``details['expected_error_percent']``
    (the number behind its ``expected_error`` text; docs/calibration.md).
    """
    value = (calibration.details or {}).get("expected_error_percent")
    try:
        pct = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return pct / 100.0 if np.isfinite(pct) and pct > 0 else None


def _acr_interval(ha_mg_cm3: float, calibration: Calibration,
                  conv: MaterialConversion | None = None
                  ) -> tuple[float, float, list[str]] | None:
    """The interval of an HA-equivalent value on the ACR scale, or None when none is known.

    The interval combines the calibration's stated relative error (phantomless) and,
    for a K2HPO4 calibration of a scan whose kVp is unknown, the K2HPO4-to-HA ratio's
    range over the published voltages (Goodsitt 1992: 0.86 at 80 kVp to 0.81 at
    140 kVp) instead of the assumed 120 kVp ratio.

    Returns
    -------
    (low, high, reasons) or None
        Interval ends in mg/cm3 HA and one text per source of the interval.
    """
    err = _stated_error_fraction(calibration) or 0.0
    low_factor, high_factor, reasons = 1.0 - err, 1.0 + err, []
    if err:
        reasons.append(f"the calibration's stated error (+-{100 * err:g} %)")
    if conv is not None and conv.converted and not conv.kvp_known:
        from ..dxa.material import load_material_table

        table = load_material_table()
        low_factor *= conv.ratio / float(np.max(table.ratio))
        high_factor *= conv.ratio / float(np.min(table.ratio))
        reasons.append(f"the unknown kVp (K2HPO4-to-HA ratio {float(np.min(table.ratio)):.2f}"
                       f"-{float(np.max(table.ratio)):.2f} instead of the assumed "
                       f"{conv.ratio:.3f})")
    if not reasons:
        return None
    return ha_mg_cm3 * low_factor, ha_mg_cm3 * high_factor, reasons


def _straddle_flag(ha_mg_cm3: float, calibration: Calibration,
                   conv: MaterialConversion | None = None) -> str | None:
    """The reason the ACR category is indeterminate, or None when it is not.

    The category is indeterminate when the value's interval (:func:`_acr_interval`)
    reaches across an ACR threshold, as the Genant grade is when its height-loss
    interval spans two grades (:func:`_fracture_text`): the class could be either.
    Whole interval in one class: None (the category stands, with the calibration's
    flags).
    """
    interval = _acr_interval(ha_mg_cm3, calibration, conv)
    if interval is None:
        return None
    lo, hi, reasons = interval
    if acr_category(lo) == acr_category(hi):
        return None
    crossed = [t for t in (ACR_OSTEOPOROSIS_BELOW, ACR_NORMAL_ABOVE) if lo <= t <= hi]
    names = " and ".join(f"{t:g} mg/cm3" for t in crossed)
    todo = []
    if _stated_error_fraction(calibration):
        todo.append("calibrate with a phantom scanned with the patient (or a stored "
                    "calibration of this scanner and protocol)")
    if conv is not None and conv.converted and not conv.kvp_known:
        todo.append("state the kVp (--kvp), measure the DICOM series (its header gives "
                    "the kVp) or calibrate with a hydroxyapatite phantom")
    return withheld_flag(
        f"HA-equivalent {ha_mg_cm3:.1f} mg/cm3, interval {lo:.1f}-{hi:.1f} mg/cm3 with "
        f"{' and '.join(reasons)}, reaches across the {names} ACR "
        f"threshold{'s' if len(crossed) > 1 else ''} (category '{acr_category(lo)}' to "
        f"'{acr_category(hi)}'); for a category, " + " or ".join(todo))


def _summary_rows(
    name: str,
    keys: Sequence[str],
    results: dict[str, VertebraAnalysis],
    calibration: Calibration,
    min_count: int,
    ha: tuple[Calibration, MaterialConversion | None],
) -> list[ResultRow]:
    used, notes, cut = [], [], []
    for k in keys:
        r = results.get(k)
        level = k.replace("vertebrae_", "")
        if r is None:
            notes.append(f"{level} not in the labels")
        elif r.body_partial:
            cut.append(level)  # complete vertebrae only: a cut body is never averaged in
        elif r.not_measurable:
            notes.append(f"{level} not measurable")
        elif excluded_as_fractured(r):
            notes.append(f"{level} excluded: fractured (Genant grade {r.fracture.grade})")
        else:
            used.append(r)
            if r.partial:
                notes.append(f"{level}: posterior elements cut by the field of view, "
                             "vertebral body complete")
    if cut:
        notes.append(f"{', '.join(cut)} left out: vertebral body cut by the field of view")
    method = f"mean over {', '.join(r.key for r in used) or 'no vertebra'}"
    flags = [f"info: {x}" for x in notes]
    if 0 < len(used) < ACR_MIN_VERTEBRAE:
        flags.append("warning: one vertebra only; the ACR criteria use the mean of two")
    dense = [r.key.replace("vertebrae_", "") for r in used
             if r.dense_fraction is not None and r.dense_fraction > DENSE_FRACTION]
    if dense:
        flags.append(f"{DENSE_TAG}: dense voxels in the trabecular ROI of "
                     f"{', '.join(dense)} (see the vertebra's rows); the mean includes them")
    enough = len(used) >= min_count
    few = _na(f"{len(used)} complete, measurable, unfractured "
              f"{'vertebra' if len(used) == 1 else 'vertebrae'} of {len(keys)}; "
              f"need >= {min_count}"
              + (f" ({', '.join(cut)}: body cut by the field of view)" if cut else ""))
    rows = [ResultRow(name, "trabecular_mean_hu",
                      float(np.mean([r.mean_hu for r in used])) if enough else None, "HU",
                      method, (flags if enough else few + flags))]
    ha_cal, conv = ha
    if not calibration.calibrated or not enough:
        reason = _na(NO_CALIBRATION_REASON) if not calibration.calibrated else few
        rows.append(ResultRow(name, "trabecular_vbmd", None, "mg/cm3",
                              _vbmd_method(calibration, method), reason + flags))
        rows.append(ResultRow(name, "trabecular_vbmd_ha", None, "mg/cm3",
                              _ha_method(calibration, conv, method), reason + flags))
        rows.append(ResultRow(name, "acr_category", None, "", ACR_REF, reason + flags))
        return rows
    assert conv is not None  # calibrated: to_hydroxyapatite always returns a conversion
    vbmd = float(np.mean([r.vbmd_mg_cm3 for r in used]))
    ha_vbmd = float(np.mean([ha_cal.bmd_mg_cm3(r.mean_hu) for r in used]))
    cflags = calibration.flags() + flags
    hflags = calibration.flags() + conv.flags() + flags
    rows.append(ResultRow(name, "trabecular_vbmd", vbmd, "mg/cm3",
                          f"{method}; {calibration.method_text()}", cflags))
    rows.append(ResultRow(name, "trabecular_vbmd_ha", ha_vbmd, "mg/cm3",
                          f"{method}; {calibration.method_text()}; {conv.method_text()}",
                          hflags))
    acr_method = (f"{ACR_REF}: > {ACR_NORMAL_ABOVE:g} normal, {ACR_OSTEOPOROSIS_BELOW:g}-"
                  f"{ACR_NORMAL_ABOVE:g} low bone mass, < {ACR_OSTEOPOROSIS_BELOW:g} mg/cm3 "
                  "osteoporosis (hydroxyapatite, mean of two vertebrae)")
    if len(used) < ACR_MIN_VERTEBRAE:
        levels = ", ".join(r.key.replace("vertebrae_", "") for r in used)
        # a number exists (one vertebra's vBMD) but not on the criteria's scale (a mean
        # of two): indeterminate, as every withheld category
        rows.append(ResultRow(name, "acr_category", INDETERMINATE, "", acr_method, hflags + [
            withheld_flag(f"the ACR criteria are defined on the mean of {ACR_MIN_VERTEBRAE} "
                          f"vertebrae; only {len(used)} ({levels}) is complete, measurable "
                          "and unfractured: check the other levels' rows")]))
        return rows
    if conv.converted:
        used_text = (f"applied to the HA-equivalent mean vBMD {ha_vbmd:.1f} mg/cm3 = "
                     f"{vbmd:.1f} mg/cm3 {conv.from_material} / {conv.ratio:.3f} "
                     f"({conv.kvp:g} kVp; Goodsitt, Bone Miner 1992)")
    else:
        used_text = (f"applied to the mean vBMD {ha_vbmd:.1f} mg/cm3 HA "
                     "(hydroxyapatite calibration, no conversion)")
    straddle = _straddle_flag(ha_vbmd, calibration, conv)
    rows.append(ResultRow(
        name, "acr_category", acr_category(ha_vbmd) if straddle is None else INDETERMINATE,
        "", f"{acr_method}; {used_text}",
        hflags + ([straddle] if straddle else [])
        + ["info: the ACR thresholds assume the density scale of the clinical QCT systems "
           "used to derive them"],
    ))
    return rows


def _pickhardt_row(results: dict[str, VertebraAnalysis], ct: CTImage) -> ResultRow:
    l1 = results.get("vertebrae_L1")
    method = f"L1 trabecular HU against {PICKHARDT_REF} thresholds (160 / 110 HU)"
    if l1 is None:
        return ResultRow("vertebrae_L1", "opportunistic_category", None, "", method,
                         _na("L1 not in the labels"))
    if l1.body_partial:
        return ResultRow("vertebrae_L1", "opportunistic_category", None, "", method,
                         _na("L1 vertebral body cut by the field of view"))
    if l1.mean_hu is None:
        return ResultRow("vertebrae_L1", "opportunistic_category", None, "", method,
                         _na(l1.not_measurable or "L1 trabecular HU not measurable"))
    flags = ["unvalidated: single-centre thresholds derived at 120 kVp"]
    if l1.fracture is not None and (l1.fracture.grade or 0) > 0:
        flags.append(_fracture_text(l1.fracture))
    off_kvp = pickhardt_kvp_reason(ct.metadata.kvp)
    if off_kvp is not None:
        return ResultRow("vertebrae_L1", "opportunistic_category", INDETERMINATE, "", method,
                         [off_kvp] + flags + l1.flags)
    return ResultRow("vertebrae_L1", "opportunistic_category", pickhardt_category(l1.mean_hu),
                     "", method, flags + l1.flags)


def pickhardt_kvp_reason(kvp: float | None) -> str | None:
    """Why the Pickhardt category cannot be given at this tube voltage, or None.

    Pickhardt's L1 thresholds were derived at 120 kVp, and bone HU depend on the kVp
    (higher at lower voltages), so the category is given only for a scan known to be at
    :data:`PICKHARDT_KVP` (+- :data:`PICKHARDT_KVP_TOLERANCE`). An unknown kVp (a NIfTI
    file has no header to say it, and the user did not state it with ``--kvp``) gives no
    category either: 100 kVp and lower protocols are common, and they read bone HU high.

    Parameters
    ----------
    kvp : float or None
        The scan's tube voltage (``CTMetadata.kvp``), None when unknown.

    Returns
    -------
    str or None
        A ``warning: category withheld:`` flag naming the problem and what to do, or
        None at 120 kVp.
    """
    calibrate = ("calibrate HU to BMD (phantom or internal calibration) for the ACR "
                 "category")
    if kvp is None:
        return withheld_flag(
            "tube voltage unknown (no kVp in the image header, e.g. a NIfTI file): the "
            f"{PICKHARDT_REF} L1 thresholds were derived at {PICKHARDT_KVP:g} kVp and bone "
            "HU change with kVp; state the kVp (--kvp, MeasureOptions.kvp) or measure the "
            f"DICOM series (its header gives it), or {calibrate}")
    if abs(kvp - PICKHARDT_KVP) > PICKHARDT_KVP_TOLERANCE:
        return withheld_flag(
            f"scan at {kvp:g} kVp: the {PICKHARDT_REF} L1 thresholds were derived at "
            f"{PICKHARDT_KVP:g} kVp and bone HU change with kVp (higher at lower kVp); use "
            f"a {PICKHARDT_KVP:g} kVp scan, or {calibrate}")
    return None


def measure_spine(ct: CTImage, labels: LabelMap, calibration: Calibration) -> list[ResultRow]:
    """Lumbar trabecular HU / vBMD, ROI volume and fracture grade per vertebra, plus summaries.

    Parameters
    ----------
    ct : CTImage
        The CT in HU.
    labels : LabelMap
        On the CT's grid; vertebrae under the keys ``vertebrae_L1`` .. ``vertebrae_L5``.
    calibration : Calibration
        HU to mineral density; ``Calibration.none()`` gives HU only.

    Returns
    -------
    list of ResultRow
        Per vertebra: ``trabecular_mean_hu``, ``trabecular_sd_hu`` (HU),
        ``trabecular_vbmd`` (mg/cm3 of the calibration's material),
        ``trabecular_vbmd_ha`` (mg/cm3 hydroxyapatite), ``roi_volume`` (cm3),
        ``fracture_grade`` (0-3), ``height_reduction`` (%). Summaries ``lumbar_L1_L2``
        and ``lumbar_L1_L4``: ``trabecular_mean_hu``, ``trabecular_vbmd``,
        ``trabecular_vbmd_ha``, ``acr_category`` (from ``trabecular_vbmd_ha``, two or more
        vertebrae only; ``"indeterminate"`` when the value's interval reaches across a
        threshold). Uncalibrated: ``vertebrae_L1`` / ``opportunistic_category``
        (``"indeterminate"`` unless the scan is known to be at 120 kVp).
    """
    return spine_rows(analyse_spine(ct, labels, calibration), calibration, ct)


def spine_rows(
    results: dict[str, VertebraAnalysis], calibration: Calibration, ct: CTImage
) -> list[ResultRow]:
    """Result rows (see :func:`measure_spine`) from an :func:`analyse_spine` result."""
    rows: list[ResultRow] = []
    if not results:
        reason = _na("no lumbar vertebra (L1-L5) in the labels")
        for name in ("lumbar_L1_L2", "lumbar_L1_L4"):
            rows.append(ResultRow(name, "trabecular_vbmd", None, "mg/cm3",
                                  _vbmd_method(calibration), list(reason)))
        return rows
    ha = to_hydroxyapatite(calibration, ct.metadata.kvp)  # the ACR thresholds are HA
    for res in results.values():
        rows += _vertebra_rows(res, calibration, ha)
    rows += _summary_rows("lumbar_L1_L2", LUMBAR_KEYS[:2], results, calibration, 1, ha)
    rows += _summary_rows("lumbar_L1_L4", LUMBAR_KEYS[:4], results, calibration, 2, ha)
    if not calibration.calibrated:
        rows.append(_pickhardt_row(results, ct))
    return rows
