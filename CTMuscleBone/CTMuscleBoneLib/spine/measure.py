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
measurable, unfractured vertebrae with the ACR category; fractured vertebrae are
excluded with a note (see :func:`excluded_as_fractured`). Uncalibrated:
``vertebrae_L1`` gets the opportunistic category of Pickhardt et al. from its
trabecular HU.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..calibration.model import Calibration
from ..errors import InputError
from ..fov import indices_touch_border
from ..image import CTImage, Geometry, LabelMap
from ..results import NO_CALIBRATION_REASON, ResultRow
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

ROI_METHOD = "mean HU in a central trabecular ROI of the vertebral body"
PICKHARDT_REF = "Pickhardt et al., Ann Intern Med 2013;158:588-595"
ACR_REF = "ACR-SPR-SSR practice parameter for QCT (2018)"
VBMD_METHOD = "trabecular mean HU converted by the HU-to-BMD calibration"
#: Prefix of the information flag of a relaxed trabecular ROI.
ROI_RELAXED = "info: ROI relaxed"


def acr_category(vbmd_mg_cm3: float) -> str:
    """ACR 2018 lumbar QCT category of a mean trabecular vBMD (mg/cm3)."""
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
    metal_volume_mm3: float = 0.0
    not_measurable: str | None = None
    flags: list[str] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------
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
    out: dict[str, VertebraAnalysis] = {}
    for k in keys:
        out[k] = VertebraAnalysis(key=k, partial=indices_touch_border(np.argwhere(masks[k]),
                                                               geometry.shape))
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
        res.body_partial = indices_touch_border(body.body_index, geometry.shape)
        if res.partial:
            where = "the vertebral body" if res.body_partial else "the posterior elements only"
            res.flags.append(f"partial: cut by the field of view ({where})")
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
    if f.uncertain and f.grade_range is not None:
        return (f"fracture: Genant grade uncertain ({f.grade_range[0]}-{f.grade_range[1]}; "
                f"{f.kind}, {100 * f.reduction:.0f} % height loss, interval "
                f"{100 * lo:.0f}-{100 * hi:.0f} %)")
    return f"fracture: Genant grade {f.grade} ({f.kind}, {100 * f.reduction:.0f} % height loss)"


def _vertebra_rows(res: VertebraAnalysis, calibration: Calibration) -> list[ResultRow]:
    k, rows = res.key, []
    flags = list(res.flags)
    if excluded_as_fractured(res):
        flags.append(_fracture_text(res.fracture) + ": excluded from lumbar summaries")
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
        keep = [x for x in res.flags if not x.startswith(ROI_RELAXED)]
        if f.reduction is None:  # impossible geometry: no number is printed
            reason = _na("; ".join(f.reasons) or "heights inconsistent")
            rows.append(ResultRow(k, "fracture_grade", None, "1", grade_method, reason + keep))
            rows.append(ResultRow(k, "height_reduction", None, "%", grade_method, reason + keep))
            return rows
        gflags = [_fracture_text(f)] if (f.grade or 0) > 0 or f.uncertain else []
        if f.uncertain:
            gflags.append("uncertain: " + "; ".join(f.reasons))
        gflags += keep
        grade_flags = (_na("Genant grade uncertain: " + "; ".join(f.reasons))
                       if f.uncertain else [])
        rows.append(ResultRow(k, "fracture_grade", f.confident_grade, "1",
                              f"{grade_method}; {ratios}", grade_flags + gflags))
        rows.append(ResultRow(k, "height_reduction", 100.0 * f.reduction, "%",
                              f"largest of wedge, biconcave and crush height loss; {ratios}",
                              gflags))
    return rows


def _summary_rows(
    name: str,
    keys: Sequence[str],
    results: dict[str, VertebraAnalysis],
    calibration: Calibration,
    min_count: int,
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
    if 0 < len(used) < 2:
        flags.append("warning: one vertebra only; the ACR criteria use the mean of two")
    enough = len(used) >= min_count
    few = _na(f"{len(used)} complete, measurable, unfractured vertebrae of {len(keys)}; "
              f"need >= {min_count}"
              + (f" ({', '.join(cut)}: body cut by the field of view)" if cut else ""))
    rows = [ResultRow(name, "trabecular_mean_hu",
                      float(np.mean([r.mean_hu for r in used])) if enough else None, "HU",
                      method, (flags if enough else few + flags))]
    if not calibration.calibrated:
        reason = _na(NO_CALIBRATION_REASON)
        rows.append(ResultRow(name, "trabecular_vbmd", None, "mg/cm3",
                              _vbmd_method(calibration, method), reason + flags))
        rows.append(ResultRow(name, "acr_category", None, "", ACR_REF, reason + flags))
        return rows
    if not enough:
        rows.append(ResultRow(name, "trabecular_vbmd", None, "mg/cm3",
                              _vbmd_method(calibration, method), few + flags))
        rows.append(ResultRow(name, "acr_category", None, "", ACR_REF, few + flags))
        return rows
    vbmd = float(np.mean([r.vbmd_mg_cm3 for r in used]))
    cflags = calibration.flags() + flags
    rows.append(ResultRow(name, "trabecular_vbmd", vbmd, "mg/cm3",
                          f"{method}; {calibration.method_text()}", cflags))
    rows.append(ResultRow(
        name, "acr_category", acr_category(vbmd), "",
        f"{ACR_REF}: > 120 normal, 80-120 low bone mass, < 80 mg/cm3 osteoporosis",
        cflags + [f"info: density scale {calibration.material} (the ACR thresholds assume "
                  "the scale of the clinical QCT system used to derive them)"],
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
    kvp = ct.metadata.kvp
    if kvp is not None and abs(kvp - 120.0) > 1.0:
        flags.append(f"warning: scan at {kvp:g} kVp; the thresholds were derived at 120 kVp")
    if l1.fracture is not None and (l1.fracture.grade or 0) > 0:
        flags.append(_fracture_text(l1.fracture))
    return ResultRow("vertebrae_L1", "opportunistic_category", pickhardt_category(l1.mean_hu),
                     "", method, flags + l1.flags)


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
        ``trabecular_vbmd`` (mg/cm3), ``roi_volume`` (cm3), ``fracture_grade`` (0-3),
        ``height_reduction`` (%). Summaries ``lumbar_L1_L2`` and ``lumbar_L1_L4``:
        ``trabecular_mean_hu``, ``trabecular_vbmd``, ``acr_category``. Uncalibrated:
        ``vertebrae_L1`` / ``opportunistic_category``.
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
    for res in results.values():
        rows += _vertebra_rows(res, calibration)
    rows += _summary_rows("lumbar_L1_L2", LUMBAR_KEYS[:2], results, calibration, 1)
    rows += _summary_rows("lumbar_L1_L4", LUMBAR_KEYS[:4], results, calibration, 2)
    if not calibration.calibrated:
        rows.append(_pickhardt_row(results, ct))
    return rows
