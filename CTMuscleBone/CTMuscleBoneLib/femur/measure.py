"""Femoral BMD of both femurs: CT-aBMD (DXA-equivalent), T-scores, vBMD, mean HU.

:func:`measure_femurs` runs, for each femur the label map contains, the checks
(:mod:`.checks`), the landmarks (:mod:`.landmarks`), the DXA-view projection
(:mod:`.dxa_projection`), the ROIs (:mod:`.rois`), vBMD (:mod:`.vbmd`) and T-scores
(:mod:`.tscore`), and returns result rows plus the projections for display.

A value that cannot be measured is a row with ``value=None`` and a
``not_measurable: <reason>`` flag. Without a calibration, only HU means and geometry
are measured and aBMD / vBMD / T-scores are not measurable (one flag: "no HU-to-BMD
calibration"). Only values that depend on the calibration carry its method text and
warnings; geometry and HU rows do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..calibration import Calibration
from ..errors import InputError, NotMeasurableError
from ..image import CTImage, LabelMap
from ..results import NO_CALIBRATION_REASON, ResultRow
from . import tscore
from .checks import check_femur, touches_border
from .dxa_projection import PIXEL_MM, Projection, project
from .landmarks import FemurLandmarks, femur_points, find_landmarks
from .rois import (
    DISTAL_BELOW_LT_MM,
    PlaneLandmarks,
    neck_mask,
    plane_landmarks,
    roi_value,
    total_hip_mask,
)
from .vbmd import REGIONS, region_masks, region_stats

SIDES = ("left", "right")
SITES = ("total_hip", "femoral_neck")
METHOD_ABMD = ("CT-aBMD: density projected antero-posteriorly in the DXA view at 0.25 mm "
               "pixels, mean of the {roi} ROI (after Uemura et al., Arch Osteoporos 2022)")
METHOD_VBMD = "vBMD: mean calibrated density of the {region} region's femur voxels"
METHOD_HU = "mean HU of the {region} region's femur voxels"
METHOD_T = "T-score vs NHANES III white women 20-29 (Looker 1998)"
METHOD_WHO = ("WHO 1994: T >= -1 normal; -2.5 < T < -1 low bone mass; T <= -2.5 "
              "osteoporosis")
METHOD_YAM = "aBMD / young-adult mean (NHANES III white women 20-29) x 100"
METHOD_VOLUME = "voxel count x voxel volume"
METHOD_NSA = "angle between the neck axis and the shaft axis (automatic landmarks)"
METHOD_HEAD = "least-squares sphere fit to the femoral head"
FLAG_T = ("unvalidated: T-score from CT-aBMD against a DXA reference; reference values "
          "not verified against the primary table")
#: Reason of every calibration-dependent value when there is no calibration.
NO_CALIBRATION = NO_CALIBRATION_REASON
#: Quantity prefixes whose values depend on the HU-to-BMD calibration.
CALIBRATED_PREFIXES = ("abmd_", "t_score_", "who_category_", "percent_yam_", "vbmd_")


@dataclass
class FemurProjection:
    """What a report or Slicer needs to show one femur's DXA-view projection.

    Attributes
    ----------
    projection : Projection
        Areal density image (g/cm2, (nx, nz); axis 0 along ``frame.ex``, towards the
        patient's left; axis 1 along ``frame.ez``, superior), footprint and frame.
    pixel_mm : float
    roi_masks : dict[str, np.ndarray of bool]
        'total_hip' and/or 'femoral_neck' ROI masks, (nx, nz).
    landmarks_px : dict[str, np.ndarray]
        Continuous pixel coordinates (i, k) of 'head_centre', 'head_neck_junction',
        'lesser_trochanter' (when found), 'neck_shaft_point'.
    head_radius_px : float
    landmarks : FemurLandmarks
        The 3-D landmarks (LPS mm).
    """

    projection: Projection
    pixel_mm: float
    roi_masks: dict[str, np.ndarray]
    landmarks_px: dict[str, np.ndarray]
    head_radius_px: float
    landmarks: FemurLandmarks


@dataclass
class FemurOutput:
    """Rows for both femurs and the projections (per side) of those measured."""

    rows: list[ResultRow] = field(default_factory=list)
    projections: dict[str, FemurProjection] = field(default_factory=dict)
    landmarks: dict[str, FemurLandmarks] = field(default_factory=dict)


QUANTITIES: tuple[tuple[str, str], ...] = (
    ("abmd_total_hip", "g/cm2"),
    ("abmd_femoral_neck", "g/cm2"),
    ("t_score_total_hip", "SD"),
    ("t_score_femoral_neck", "SD"),
    ("who_category_total_hip", ""),
    ("who_category_femoral_neck", ""),
    ("percent_yam_total_hip", "%"),
    ("percent_yam_femoral_neck", "%"),
    ("vbmd_total_proximal", "mg/cm3"),
    ("vbmd_neck", "mg/cm3"),
    ("vbmd_trochanter", "mg/cm3"),
    ("mean_hu_total_proximal", "HU"),
    ("mean_hu_neck", "HU"),
    ("mean_hu_trochanter", "HU"),
    ("volume_total_proximal", "cm3"),
    ("neck_shaft_angle", "deg"),
    ("head_radius", "mm"),
)
UNITS = dict(QUANTITIES)


def quantity_method(quantity: str) -> str:
    """The method text of a femur quantity, without the calibration."""
    for region in REGIONS:
        if quantity == f"vbmd_{region}":
            return METHOD_VBMD.format(region=region)
        if quantity == f"mean_hu_{region}":
            return METHOD_HU.format(region=region)
    for site in SITES:
        roi = site.replace("_", " ")
        texts = {f"abmd_{site}": METHOD_ABMD.format(roi=roi), f"t_score_{site}": METHOD_T,
                 f"who_category_{site}": METHOD_WHO, f"percent_yam_{site}": METHOD_YAM}
        if quantity in texts:
            return texts[quantity]
    return {"volume_total_proximal": METHOD_VOLUME, "neck_shaft_angle": METHOD_NSA,
            "head_radius": METHOD_HEAD}.get(quantity, "")


def needs_calibration(quantity: str) -> bool:
    """True when the quantity is a mineral density or derived from one."""
    return quantity.startswith(CALIBRATED_PREFIXES)


class _Rows:
    """Collects the rows of one femur, filling in not-measurable ones at the end.

    The calibration's method text and warnings go only to the values that depend on
    it (:func:`needs_calibration`); the femur's check warnings go to every row.
    """

    def __init__(self, structure: str, calibration: Calibration, warnings: list[str]):
        self.structure = structure
        self.cal = calibration
        self.warnings = warnings
        self.rows: dict[str, ResultRow] = {}

    def _method(self, quantity: str, method: str) -> str:
        if needs_calibration(quantity) and self.cal.calibrated:
            return f"{self.cal.method_text()}; {method}"
        return method

    def add(self, quantity: str, value: float | str, method: str,
            flags: list[str] | None = None) -> None:
        if isinstance(value, float) and not np.isfinite(value):
            self.missing(quantity, "no femur voxels in the region")
            return
        cal_flags = self.cal.flags() if needs_calibration(quantity) else []
        self.rows[quantity] = ResultRow(
            self.structure, quantity, value, UNITS[quantity], self._method(quantity, method),
            cal_flags + list(self.warnings) + list(flags or []))

    def missing(self, quantity: str, reason: str) -> None:
        if quantity in self.rows:
            return
        self.rows[quantity] = ResultRow(
            self.structure, quantity, None, UNITS[quantity],
            self._method(quantity, quantity_method(quantity)),
            [f"not_measurable: {reason}"] + list(self.warnings))

    def all_missing(self, reason: str) -> list[ResultRow]:
        for q, _ in QUANTITIES:
            self.missing(q, reason)
        return self.result()

    def result(self) -> list[ResultRow]:
        return [self.rows[q] for q, _ in QUANTITIES if q in self.rows]


def _total_hip_reason(lm: FemurLandmarks) -> str | None:
    """Why the total hip / trochanter / total proximal regions cannot be measured."""
    if lm.lesser_trochanter_mm is None:
        return (f"{lm.lt_reason}; the total hip needs the femur from the head to 2 cm below "
                "the lesser trochanter (the femoral neck is still measured)")
    below = lm.extent_below_lt_mm()
    if below is not None and below < DISTAL_BELOW_LT_MM:
        return (f"femur cut by the field of view {below:.0f} mm below the lesser trochanter; "
                f"the total hip needs {DISTAL_BELOW_LT_MM:.0f} mm below it (the femoral "
                "neck is still measured)")
    return None


def measure_femur(ct: CTImage, mask: np.ndarray, side: str, calibration: Calibration
                  ) -> tuple[list[ResultRow], FemurProjection | None, FemurLandmarks | None]:
    """Rows (and projection, landmarks) of one femur; see :func:`measure_femurs`."""
    structure = f"femur_{side}"
    checks = check_femur(ct, mask, side)
    rows = _Rows(structure, calibration, checks.warnings)
    if checks.blocking:
        return rows.all_missing("; ".join(checks.blocking)), None, None
    g = ct.geometry
    try:
        lm = find_landmarks(mask, g)
    except NotMeasurableError as exc:
        return rows.all_missing(f"landmarks: {exc}"), None, None
    border = touches_border(mask)
    if border.any():
        bp = g.index_to_physical(np.argwhere(border))
        if (np.linalg.norm(bp - lm.head_centre_mm, axis=1) < 1.2 * lm.head_radius_mm).any():
            return rows.all_missing("femoral head cut by the field of view"), None, lm
    flags_lm = list(lm.notes)
    rows.add("neck_shaft_angle", lm.neck_shaft_angle_deg, METHOD_NSA, flags_lm)
    rows.add("head_radius", lm.head_radius_mm, METHOD_HEAD)

    pts = femur_points(mask, g)
    hu = np.asarray(ct.hu, dtype=np.float64)[mask]
    masks = region_masks(pts, lm)
    th_reason = _total_hip_reason(lm)
    if th_reason is not None:
        masks.pop("total_proximal", None)
        masks.pop("trochanter", None)
    dens = calibration.bmd_mg_cm3(hu) if calibration.calibrated else None
    for region in REGIONS:
        if region not in masks:
            for q in (f"vbmd_{region}", f"mean_hu_{region}"):
                rows.missing(q, th_reason or "region not found")
            if region == "total_proximal":
                rows.missing("volume_total_proximal", th_reason or "region not found")
            continue
        mean_hu, vol = region_stats(hu, masks[region], g.voxel_volume_cm3)
        rows.add(f"mean_hu_{region}", mean_hu, METHOD_HU.format(region=region), flags_lm)
        if region == "total_proximal":
            rows.add("volume_total_proximal", vol, METHOD_VOLUME, flags_lm)
        if dens is None:
            rows.missing(f"vbmd_{region}", NO_CALIBRATION)
        else:
            v, _ = region_stats(dens, masks[region], g.voxel_volume_cm3)
            rows.add(f"vbmd_{region}", v, METHOD_VBMD.format(region=region), flags_lm)

    if dens is None:
        for site in SITES:
            for q in ("abmd", "t_score", "who_category", "percent_yam"):
                rows.missing(f"{q}_{site}", NO_CALIBRATION)
        return rows.result(), None, lm

    density = np.zeros(mask.shape, dtype=np.float32)
    density[mask] = dens
    proj = project(density, mask, g, lm)
    frame = proj.frame
    plm: PlaneLandmarks = plane_landmarks(frame, lm.head_centre_mm, lm.neck_axis,
                                          lm.junction_distance_mm, lm.neck_radius_mm,
                                          lm.lesser_trochanter_mm)
    roi_masks: dict[str, np.ndarray] = {}
    site_masks = {"femoral_neck": neck_mask(proj.footprint, frame, plm)}
    if th_reason is None:
        site_masks["total_hip"] = total_hip_mask(proj.footprint, frame, plm)
    for site in SITES:
        if site not in site_masks:
            for q in ("abmd", "t_score", "who_category", "percent_yam"):
                rows.missing(f"{q}_{site}", th_reason or "ROI not found")
            continue
        rv = roi_value(proj.areal_density_g_cm2, site_masks[site], frame.pixel_mm,
                       proj.footprint, proj.spill_px)
        roi_masks[site] = rv.mask
        roi_name = site.replace("_", " ")
        rows.add(f"abmd_{site}", rv.abmd_g_cm2, METHOD_ABMD.format(roi=roi_name), flags_lm)
        if not np.isfinite(rv.abmd_g_cm2):
            continue
        t = tscore.t_score(rv.abmd_g_cm2, site)
        rows.add(f"t_score_{site}", t, METHOD_T, flags_lm + [FLAG_T])
        rows.add(f"who_category_{site}", tscore.who_category(t), METHOD_WHO,
                 flags_lm + [FLAG_T])
        rows.add(f"percent_yam_{site}", tscore.percent_young_adult_mean(rv.abmd_g_cm2, site),
                 METHOD_YAM, flags_lm + [FLAG_T])
    lpx = {"head_centre": frame.to_pixel(lm.head_centre_mm),
           "head_neck_junction": frame.to_pixel(lm.head_neck_junction_mm),
           "neck_shaft_point": frame.to_pixel(lm.neck_shaft_point_mm)}
    if lm.lesser_trochanter_mm is not None:
        lpx["lesser_trochanter"] = frame.to_pixel(lm.lesser_trochanter_mm)
    fp = FemurProjection(proj, frame.pixel_mm, roi_masks, lpx,
                         lm.head_radius_mm / frame.pixel_mm, lm)
    return rows.result(), fp, lm


def measure_femurs(ct: CTImage, labels: LabelMap, calibration: Calibration) -> FemurOutput:
    """Femoral BMD of each femur in the label map.

    Parameters
    ----------
    ct : CTImage
        HU volume.
    labels : LabelMap
        On the CT's grid; femurs are the anatomy keys ``femur_left`` / ``femur_right``.
        A side whose key the map does not list is skipped; a listed side with no voxels
        gets not-measurable rows.
    calibration : Calibration
        HU -> mg/cm3; ``Calibration.none()`` gives HU-only results.

    Returns
    -------
    FemurOutput
        ``rows`` (structure 'femur_left'/'femur_right'; quantities in :data:`QUANTITIES`),
        ``projections`` and ``landmarks`` per measured side.

    Raises
    ------
    InputError
        When the label map is not on the CT's grid.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(
            "The label map is not on the CT's voxel grid; resample the segmentation to the "
            "CT before measuring femoral BMD.")
    out = FemurOutput()
    for side in SIDES:
        key = f"femur_{side}"
        if labels.value_of(key) is None:
            continue
        mask = labels.mask(key)
        rows, proj, lm = measure_femur(ct, mask, side, calibration)
        out.rows.extend(rows)
        if proj is not None:
            out.projections[side] = proj
        if lm is not None:
            out.landmarks[side] = lm
    return out


__all__ = ["FemurOutput", "FemurProjection", "measure_femur", "measure_femurs", "PIXEL_MM"]
