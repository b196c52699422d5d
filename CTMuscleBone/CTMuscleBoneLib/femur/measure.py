"""Femoral BMD of both femurs: CT-aBMD, DXA-equivalent aBMD, T-/Z-scores, vBMD, mean HU.

:func:`measure_femurs` runs, for each femur the label map contains, the checks
(:mod:`.checks`), the landmarks (:mod:`.landmarks`), the DXA-view projection
(:mod:`.dxa_projection`), the ROIs (:mod:`.rois`), vBMD (:mod:`.vbmd`) and the scores
(:mod:`CTMuscleBoneLib.dxa.scores`), and returns result rows plus the projections for
display.

Scale: the calibration is first put on the hydroxyapatite scale
(:func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`), so every vBMD and CT-aBMD
row is HA-equivalent and says so in its method; CT-aBMD is then converted to a
DXA-equivalent aBMD by the CT-to-DXA model, and only that value meets the reference
table and its criteria (with the unvalidated identity default, or any model not
validated, the T-score, Z-score and %YAM are not measurable and the category is
"indeterminate": :func:`CTMuscleBoneLib.dxa.scores.score_rows`).

A value that cannot be measured is a row with ``value=None`` and a
``not_measurable: <reason>`` flag. Without a calibration, only HU means and geometry
are measured and aBMD / vBMD / T-scores are not measurable (one flag: "no HU-to-BMD
calibration"). Only values that depend on the calibration carry its method text and
warnings; geometry and HU rows do not. A femur cut by the image boundary where the
cut may reach the measured proximal femur has ``partial: cut by the field of view
(...)`` on every row (a shaft cut below every measured region is an ``info`` note on
the volume row; :func:`_fov_flags`), its diagnostic categories are "indeterminate"
(:func:`_category_withheld`), and the total-hip rows name the field-of-view reason
whenever it applies, with or without calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..calibration import Calibration
from ..dxa.material import MaterialConversion, to_hydroxyapatite
from ..dxa.references import ReferenceTable
from ..dxa.scores import (
    ScoreContext,
    score_context,
    score_methods,
    score_quantities,
    score_rows,
)
from ..errors import InputError, NotMeasurableError
from ..fov import border_voxel_indices, inside_fov, outside_fov
from ..image import CTImage, LabelMap, mask_bounding_box
from ..results import NO_CALIBRATION_REASON, ResultRow
from .checks import check_femur, cut_edges
from .dxa_projection import PIXEL_MM, Projection, project
from .landmarks import FemurLandmarks, femur_points, find_landmarks
from .partial_volume import EDGE_MARGIN_MM, restore_edge_mineral
from .rois import (
    DISTAL_BELOW_LT_MM,
    PlaneLandmarks,
    neck_band,
    neck_mask,
    plane_landmarks,
    roi_value,
    total_hip_mask,
    total_hip_region,
)
from .vbmd import REGIONS, region_masks, region_stats

SIDES = ("left", "right")
SITES = ("total_hip", "femoral_neck")
METHOD_ABMD = ("CT-aBMD: density projected antero-posteriorly in the DXA view at 0.25 mm "
               "pixels, mean of the {roi} ROI (after Uemura et al., Arch Osteoporos 2022)")
METHOD_VBMD = "vBMD: mean calibrated density of the {region} region's femur voxels"
METHOD_HU = "mean HU of the {region} region's femur voxels"
METHOD_VOLUME = "voxel count x voxel volume"
METHOD_NSA = "angle between the neck axis and the shaft axis (automatic landmarks)"
METHOD_HEAD = "least-squares sphere fit to the femoral head"
#: Quantity prefixes whose values depend on the HU-to-BMD calibration.
CALIBRATED_PREFIXES = ("abmd_", "t_score_", "z_score_", "who_category_", "jsbmr_category_",
                       "percent_yam_", "vbmd_")


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
    provenance: list[dict[str, object]] = field(default_factory=list)


def quantities(reference: ReferenceTable | None = None) -> tuple[tuple[str, str], ...]:
    """(quantity, unit) of a femur's rows, in order; the category row's name depends on
    the reference's criteria ('who_category_*' or 'jsbmr_category_*')."""
    from ..dxa import load_reference

    ref = reference or load_reference("nhanes3")
    abmd = tuple((f"abmd_{site}", "g/cm2") for site in SITES)
    per_site = {site: score_quantities(site, ref) for site in SITES}
    scores = tuple(per_site[site][k] for k in range(len(per_site[SITES[0]])) for site in SITES)
    return abmd + scores + _OTHER_QUANTITIES


_OTHER_QUANTITIES: tuple[tuple[str, str], ...] = (
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
#: Quantities with the default (NHANES III / WHO) reference.
QUANTITIES: tuple[tuple[str, str], ...] = quantities()
UNITS = dict(QUANTITIES)


def quantity_method(quantity: str, scores: ScoreContext | None = None) -> str:
    """The method text of a femur quantity, without the calibration."""
    for region in REGIONS:
        if quantity == f"vbmd_{region}":
            return METHOD_VBMD.format(region=region)
        if quantity == f"mean_hu_{region}":
            return METHOD_HU.format(region=region)
    for site in SITES:
        if quantity == f"abmd_{site}":
            return METHOD_ABMD.format(roi=site.replace("_", " "))
        if scores is not None:
            texts = score_methods(site, scores)
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

    def __init__(self, structure: str, calibration: Calibration, warnings: list[str],
                 scores: ScoreContext, conversion: MaterialConversion | None = None):
        self.structure = structure
        self.cal = calibration
        self.conversion = conversion
        self.warnings = warnings
        self.scores = scores
        self.quantities = quantities(scores.reference)
        self.units = dict(self.quantities)
        self.rows: dict[str, ResultRow] = {}

    def _method(self, quantity: str, method: str) -> str:
        if needs_calibration(quantity) and self.cal.calibrated:
            conv = f"; {self.conversion.method_text()}" if self.conversion else ""
            return f"{self.cal.method_text()}{conv}; {method}"
        return method

    def _cal_flags(self, quantity: str) -> list[str]:
        if not needs_calibration(quantity):
            return []
        return self.cal.flags() + (self.conversion.flags() if self.conversion else [])

    def add(self, quantity: str, value: float | str, method: str,
            flags: list[str] | None = None) -> None:
        if isinstance(value, float) and not np.isfinite(value):
            self.missing(quantity, "no femur voxels in the region")
            return
        self.rows[quantity] = ResultRow(
            self.structure, quantity, value, self.units[quantity],
            self._method(quantity, method),
            self._cal_flags(quantity) + list(self.warnings) + list(flags or []))

    def put(self, row: ResultRow) -> None:
        """A ready row (from :func:`score_rows`): calibration text and warnings added."""
        q = row.quantity
        if row.value is None:
            flags = list(row.flags) + list(self.warnings)
        else:
            flags = self._cal_flags(q) + list(self.warnings) + list(row.flags)
        self.rows[q] = ResultRow(self.structure, q, row.value, row.unit,
                                 self._method(q, row.method), flags)

    def missing(self, quantity: str, reason: str) -> None:
        if quantity in self.rows:
            return
        self.rows[quantity] = ResultRow(
            self.structure, quantity, None, self.units[quantity],
            self._method(quantity, quantity_method(quantity, self.scores)),
            [f"not_measurable: {reason}"] + list(self.warnings))

    def site_missing(self, site: str, reason: str) -> None:
        """The aBMD and every score row of ``site`` not measurable for ``reason``."""
        for q in site_quantities(site, self.scores.reference):
            self.missing(q, reason)

    def all_missing(self, reason: str) -> list[ResultRow]:
        for q, _ in self.quantities:
            self.missing(q, reason)
        return self.result()

    def result(self) -> list[ResultRow]:
        for q, _ in self.quantities:  # no row silently dropped
            self.missing(q, "not measured")
        return [self.rows[q] for q, _ in self.quantities]


def site_quantities(site: str, reference: ReferenceTable) -> list[str]:
    """The aBMD quantity of ``site`` and its score quantities."""
    return [f"abmd_{site}"] + [q for q, _ in score_quantities(site, reference)]


def _total_hip_reason(lm: FemurLandmarks, edges: list[str]) -> str | None:
    """Why the total hip / trochanter / total proximal regions cannot be measured.

    ``edges``: image edges the femur touches (:func:`.checks.cut_edges`); a femur cut at
    the inferior edge gets the field-of-view reason.
    """
    needs = (f"the total hip needs the femur from the head to {DISTAL_BELOW_LT_MM / 10:.0f} "
             "cm below the lesser trochanter (the femoral neck is still measured)")
    cut_below = "inferior" in edges
    if lm.lesser_trochanter_mm is None:
        if cut_below:
            return ("the field of view ends above the lesser trochanter (femur cut at the "
                    f"inferior image edge); {needs}")
        return f"{lm.lt_reason}; {needs}"
    below = lm.extent_below_lt_mm()
    if below is not None and below < DISTAL_BELOW_LT_MM:
        where = ("femur cut by the field of view" if cut_below
                 else "the femur label ends")
        return (f"{where} {below:.0f} mm below the lesser trochanter; the total hip needs "
                f"{DISTAL_BELOW_LT_MM:.0f} mm below it (the femoral neck is still measured)")
    return None


def _fov_flags(edges: list[str], lm: FemurLandmarks | None) -> tuple[str | None, str | None]:
    """Flags of a femur touching the image edge: (flag of every row, flag of the volume row).

    The femur is ``partial: cut by the field of view (...)`` on every row when the cut
    may reach the measured proximal femur: any edge other than the inferior one, an
    inferior cut above or less than :data:`DISTAL_BELOW_LT_MM` below the lesser
    trochanter, or landmarks not found. A cut of the shaft only, below every measured
    region (the usual hip CT), leaves those values complete: it is noted as ``info`` on
    the ``volume_total_proximal`` row instead of a warning on every row.
    """
    if not edges:
        return None, None
    where = ", ".join(edges)
    below = lm.extent_below_lt_mm() if lm is not None else None
    detail = ""
    if lm is not None and "inferior" in edges:
        detail = ("; at or above the lesser trochanter" if below is None
                  else f"; {below:.0f} mm below the lesser trochanter")
    text = f"cut by the field of view ({where} image edge{detail})"
    if edges == ["inferior"] and below is not None and below >= DISTAL_BELOW_LT_MM:
        return None, f"info: femur {text}; the measured regions are complete"
    return f"partial: {text}", None


def _category_withheld(fov_flag: str | None) -> str | None:
    """Why the diagnostic category of a femur is withheld, or None.

    A femur cut by the field of view where the cut may reach the measured regions
    (``fov_flag`` from :func:`_fov_flags`) is not measured as a whole femur would be (its
    projection misses bone, and its landmarks and regions may move): its aBMD and
    T-score are given, flagged ``partial``, but a category from them could be off by a
    class (project rule: a category only from a number on the scale its thresholds were
    made for).
    """
    if fov_flag is None:
        return None
    text = fov_flag.split(": ", 1)[1]
    return (f"femur {text}: its aBMD is not that of the whole femur; measure a scan that "
            "shows the whole proximal femur")


def fill_cavities(mask: np.ndarray, labels: LabelMap | None = None,
                  outside: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The femur mask with its enclosed cavities filled, and the number of voxels filled.

    A cavity is a set of voxels that the label encloses completely (not connected to the
    rest of the image through non-femur voxels, 6-connectivity): unlabelled marrow or
    segmentation noise inside the bone. Left unfilled, a cavity has no density in the
    projection and vBMD, and it shrinks the largest inscribed ball the head is found by
    (1 % of the interior voxels missing made the femur not measurable, "no femoral head
    found"; a 12 mm unlabelled core in the head put the head on the trochanter). Voxels
    of another labelled structure (``labels``) or outside the field of view
    (``outside``) are not filled.
    """
    box = mask_bounding_box(mask)
    if box is None:
        return mask, 0
    crop = mask[box]
    holes = ndimage.binary_fill_holes(crop) & ~crop
    if labels is not None:
        holes &= np.asarray(labels.array)[box] == 0
    if outside is not None:
        holes &= ~np.asarray(outside)[box]
    n = int(holes.sum())
    if n == 0:
        return mask, 0
    filled = mask.copy()
    filled[box] |= holes
    return filled, n


def measure_femur(ct: CTImage, mask: np.ndarray, side: str, calibration: Calibration,
                  scores: ScoreContext | None = None, labels: LabelMap | None = None,
                  margin_mm: float = EDGE_MARGIN_MM
                  ) -> tuple[list[ResultRow], FemurProjection | None, FemurLandmarks | None]:
    """Rows (and projection, landmarks) of one femur; see :func:`measure_femurs`.

    ``margin_mm``: edge-mineral shell of :func:`.partial_volume.restore_edge_mineral`
    (0 measures inside the label only).
    """
    scores = scores or score_context(ct)
    structure = f"femur_{side}"
    outside = outside_fov(ct.hu)  # padding outside the reconstructed field of view
    edges = cut_edges(mask, ct.geometry, outside) if mask.any() else []
    mask = inside_fov(mask, outside)  # labelled padding is not bone
    g = ct.geometry
    mask, n_filled = fill_cavities(mask, labels, outside)
    checks = check_femur(ct, mask, side)
    if n_filled:
        checks.warnings.append(
            f"info: {n_filled} voxels ({n_filled * g.voxel_volume_cm3:.2f} cm3) enclosed by "
            "the femur label but not in it were counted as femur (holes in the label)")
    ha_cal, conversion = to_hydroxyapatite(calibration, ct.metadata.kvp)
    rows = _Rows(structure, calibration, checks.warnings, scores, conversion)
    if checks.blocking:
        return rows.all_missing("; ".join(checks.blocking)), None, None
    try:
        lm = find_landmarks(mask, g)
    except NotMeasurableError as exc:
        flag, _ = _fov_flags(edges, None)
        rows.warnings = rows.warnings + ([flag] if flag else [])
        return rows.all_missing(f"landmarks: {exc}"), None, None
    flag, volume_note = _fov_flags(edges, lm)
    if flag:
        rows.warnings = rows.warnings + [flag]
    border = border_voxel_indices(mask, outside)
    if len(border):
        bp = g.index_to_physical(border)
        if (np.linalg.norm(bp - lm.head_centre_mm, axis=1) < 1.2 * lm.head_radius_mm).any():
            return rows.all_missing("femoral head cut by the field of view"), None, lm
    flags_lm = list(lm.notes)
    rows.add("neck_shaft_angle", lm.neck_shaft_angle_deg, METHOD_NSA, flags_lm)
    rows.add("head_radius", lm.head_radius_mm, METHOD_HEAD)

    pts = femur_points(mask, g)
    hu = np.asarray(ct.hu)[mask].astype(np.float64)
    masks = region_masks(pts, lm)
    th_reason = _total_hip_reason(lm, edges)
    if th_reason is not None:
        masks.pop("total_proximal", None)
        masks.pop("trochanter", None)
    # densities on the hydroxyapatite scale (K2HPO4 calibrations converted), with the
    # mineral the scanner's blur moved just outside the label returned to it
    # (partial_volume.py; other structures in ``labels`` keep theirs)
    dens = (restore_edge_mineral(ct.hu, mask, g, ha_cal.bmd_mg_cm3, labels=labels,
                                 femur_key=structure, margin_mm=margin_mm).density_mg_cm3
            if ha_cal.calibrated else None)

    def uncalibrated(reason: str | None) -> str:
        """The reason of a calibrated value without calibration (FOV reason first)."""
        return f"{reason}; and {NO_CALIBRATION_REASON}" if reason else NO_CALIBRATION_REASON

    for region in REGIONS:
        if region not in masks:
            for q in (f"vbmd_{region}", f"mean_hu_{region}"):
                why = th_reason or "region not found"
                rows.missing(q, uncalibrated(why) if q.startswith("vbmd") and dens is None
                             else why)
            if region == "total_proximal":
                rows.missing("volume_total_proximal", th_reason or "region not found")
            continue
        mean_hu, vol = region_stats(hu, masks[region], g.voxel_volume_cm3)
        rows.add(f"mean_hu_{region}", mean_hu, METHOD_HU.format(region=region), flags_lm)
        if region == "total_proximal":
            rows.add("volume_total_proximal", vol, METHOD_VOLUME,
                     flags_lm + ([volume_note] if volume_note else []))
        if dens is None:
            rows.missing(f"vbmd_{region}", NO_CALIBRATION_REASON)
        else:
            v, _ = region_stats(dens, masks[region], g.voxel_volume_cm3)
            rows.add(f"vbmd_{region}", v, METHOD_VBMD.format(region=region), flags_lm)

    if dens is None:
        rows.site_missing("total_hip", uncalibrated(th_reason))
        rows.site_missing("femoral_neck", NO_CALIBRATION_REASON)
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
    # the ROIs' cut lines: the edge-mineral band outside the outline counts only beside
    # the ROI (rois.roi_value)
    site_regions = {"femoral_neck": neck_band(frame, plm)}
    if th_reason is None:
        site_masks["total_hip"] = total_hip_mask(proj.footprint, frame, plm)
        site_regions["total_hip"] = total_hip_region(frame, plm)
    for site in SITES:
        if site not in site_masks:
            rows.site_missing(site, th_reason or "ROI not found")
            continue
        rv = roi_value(proj.areal_density_g_cm2, site_masks[site], frame.pixel_mm,
                       proj.footprint, proj.spill_px, site_regions[site])
        roi_masks[site] = rv.mask
        roi_name = site.replace("_", " ")
        if not np.isfinite(rv.abmd_g_cm2):
            rows.site_missing(site, f"no femur pixels in the {roi_name} ROI")
            continue
        rows.add(f"abmd_{site}", rv.abmd_g_cm2, METHOD_ABMD.format(roi=roi_name), flags_lm)
        for row in score_rows(structure, site, rv.abmd_g_cm2, scores, flags_lm,
                              withhold_category=_category_withheld(flag)):
            rows.put(row)
    lpx = {"head_centre": frame.to_pixel(lm.head_centre_mm),
           "head_neck_junction": frame.to_pixel(lm.head_neck_junction_mm),
           "neck_shaft_point": frame.to_pixel(lm.neck_shaft_point_mm)}
    if lm.lesser_trochanter_mm is not None:
        lpx["lesser_trochanter"] = frame.to_pixel(lm.lesser_trochanter_mm)
    fp = FemurProjection(proj, frame.pixel_mm, roi_masks, lpx,
                         lm.head_radius_mm / frame.pixel_mm, lm)
    return rows.result(), fp, lm


def measure_femurs(ct: CTImage, labels: LabelMap, calibration: Calibration,
                   scores: ScoreContext | None = None,
                   keys: tuple[str, ...] = ("femur_left", "femur_right")) -> FemurOutput:
    """Femoral BMD of each femur in the label map.

    Parameters
    ----------
    ct : CTImage
        HU volume; ``metadata.kvp`` chooses the K2HPO4 -> HA ratio.
    labels : LabelMap
        On the CT's grid; femurs are the anatomy keys ``femur_left`` / ``femur_right``.
        A side whose key the map does not list is skipped; a listed side with no voxels
        gets not-measurable rows.
    calibration : Calibration
        HU -> mg/cm3 (K2HPO4 or HA; converted to HA); ``Calibration.none()`` gives
        HU-only results.
    scores : ScoreContext, optional
        CT-to-DXA model, reference table, sex and age for the DXA-scale rows (default:
        :func:`CTMuscleBoneLib.dxa.scores.score_context`: identity model, NHANES III,
        header sex and age).
    keys : tuple of str
        The femurs to measure (after an edit, only the edited one); the other structures
        of ``labels`` still tell the partial-volume step where the femur's neighbours are.

    Returns
    -------
    FemurOutput
        ``rows`` (structure 'femur_left'/'femur_right'; quantities of
        :func:`quantities`), ``projections`` and ``landmarks`` per measured side,
        ``provenance`` entries (material conversion, CT-to-DXA model, reference).

    Raises
    ------
    InputError
        When the label map is not on the CT's grid.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(
            "The label map is not on the CT's voxel grid; resample the segmentation to the "
            "CT before measuring femoral BMD.")
    scores = scores or score_context(ct)
    out = FemurOutput()
    for side in SIDES:
        key = f"femur_{side}"
        if key not in keys or labels.value_of(key) is None:
            continue
        mask = labels.mask(key)
        rows, proj, lm = measure_femur(ct, mask, side, calibration, scores, labels=labels)
        out.rows.extend(rows)
        if proj is not None:
            out.projections[side] = proj
        if lm is not None:
            out.landmarks[side] = lm
    _, conversion = to_hydroxyapatite(calibration, ct.metadata.kvp)
    if conversion is not None:
        out.provenance.append(conversion.provenance_entry())
    out.provenance.append(scores.model.provenance_entry())
    out.provenance.append(scores.reference.provenance_entry())
    return out


__all__ = ["FemurOutput", "FemurProjection", "measure_femur",
           "measure_femurs", "quantities", "PIXEL_MM"]
