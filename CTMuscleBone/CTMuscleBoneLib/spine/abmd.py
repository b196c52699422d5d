"""Lumbar AP-projection areal BMD (DXA-like) of L1-L4, per vertebra and combined.

A DXA spine scan projects the whole vertebra (body and posterior elements) along the
patient's antero-posterior axis and reports, per vertebra and for L1-L4 together, the
bone mineral content (BMC, g) in the projected bone area (cm2) and their ratio, the
areal BMD (aBMD, g/cm2). This module computes the same quantities from a calibrated CT
and the vertebra labels:

1. **density**: the calibration, converted to hydroxyapatite
   (:func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`), applied to the HU of the
   whole vertebra label;
2. **partial volume**: the mineral the scanner's blur moved just outside the label is
   returned to the label's surface voxels with the femur's method
   (:func:`CTMuscleBoneLib.femur.partial_volume.restore_edge_mineral`: a 3 mm shell,
   local soft-tissue background subtracted, other labelled structures such as the
   neighbouring vertebrae and the aorta keep their own half of every gap);
3. **BMC** = the sum of those densities x voxel volume (g);
4. **projection**: a parallel beam along patient posterior (LPS +y) onto a coronal
   image whose rows run inferiorly and columns towards the patient's left (the
   radiological AP view), :data:`PIXEL_MM` pixels on a lattice shared by all vertebrae
   (so their images can be pasted into one), with the density interpolated
   trilinearly along each ray (:mod:`.projection`; physical LPS geometry, so any
   storage orientation and spacing give the same image). Areal density = sum of
   density x path length (g/cm2);
5. **projected area**: the pixels whose ray passes through the vertebra: where the
   label, smoothed by a Gaussian of :data:`SMOOTH_SIGMA_VOXELS` voxels (removes the
   voxel staircase whose outermost corners would enlarge the outline) and interpolated
   trilinearly, reaches 0.5 somewhere along the ray. The area is counted with
   sub-pixel edges: a pixel within one pixel of the outline counts for the fraction
   ``0.5 + (m - 0.5) / (|grad m| * pixel)`` of it (``m`` the ray maximum), so that the
   area does not depend on where the pixel centres fall relative to the voxel faces;
6. **aBMD** = BMC / area: the mean areal density over the projected area (the edge
   mineral that interpolation spreads just outside the outline is part of the BMC, as
   in the femur's CT-aBMD).

``lumbar_L1_L4`` = total BMC / total area of the measurable complete vertebrae of
L1-L4 (ISCD 2019 adult official positions: use L1-L4, exclude vertebrae affected by
local structural change or artefact, use three or two if four cannot be used, never
classify from one). Its DXA-scale rows (DXA-equivalent aBMD, T-score, Z-score, %YAM,
category of site ``'lumbar'``) come from :func:`CTMuscleBoneLib.dxa.scores.score_rows`:
while the CT-to-DXA model is not validated (the shipped identity model, or any model
file with ``"validated": false``) the T-score, Z-score and %YAM are not measurable
(the aBMD is not on the DXA scale their reference values were made for) and the
category is 'indeterminate', each with the reason.

Not measurable (value None, ``not_measurable: reason``): no calibration; a vertebra
touching the image boundary or next to the air / padding outside a reconstructed
field of view (``partial``: its projection would miss bone; :func:`cut_by_fov`); metal or
cement in or near the vertebra (the lumbar module's rule,
:func:`CTMuscleBoneLib.spine.measure.metal_volume_mm3`).

Method, accuracy and limits: docs/lumbar_bmd.md, "Lumbar AP aBMD (DXA-like)".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..calibration.model import Calibration
from ..dxa.material import MaterialConversion, to_hydroxyapatite
from ..dxa.scores import (
    ScoreContext,
    score_context,
    score_methods,
    score_quantities,
    score_rows,
)
from ..errors import InputError
from ..femur.partial_volume import EDGE_MARGIN_MM, restore_edge_mineral
from ..fov import indices_touch_border
from ..image import CTImage, LabelMap
from ..results import NO_CALIBRATION_REASON, ResultRow
from .measure import LUMBAR_KEYS, METAL_HU, METAL_MARGIN_MM, METAL_MIN_VOLUME_MM3, metal_volume_mm3
from .projection import ProjectionGrid, crop_geometry, project_many

#: The vertebrae of the DXA lumbar spine site (ISCD: L1-L4).
ABMD_KEYS: tuple[str, ...] = LUMBAR_KEYS[:4]
#: Structure of the combined row.
COMBINED = "lumbar_L1_L4"
#: Site name of the DXA-scale rows (CT-to-DXA model line and reference table).
SITE = "lumbar"
#: Quantities: aBMD (g/cm2), BMC (g), projected area (cm2).
Q_ABMD, Q_BMC, Q_AREA = "abmd_ap", "bmc_ap", "area_ap"
#: Fewest measurable vertebrae for the combined value (ISCD: no diagnosis from one).
MIN_COMBINED = 2
#: Pixel of the AP projection, mm (CTMuscleBone choice: finer than any CT voxel used;
#: DXA spine pixels are about 0.5-1 mm).
PIXEL_MM = 0.5
#: Gaussian smoothing (sigma, in voxels) of the label before its outline is projected
#: (CTMuscleBone choice, checked on the vertebra phantoms: 0.5 leaves the staircase of
#: oblique grids, +3 % area; 0.75 keeps the area within about 2 % at 1-1.5 mm).
SMOOTH_SIGMA_VOXELS = 0.75
#: HU at or below which a voxel is air or padding outside the field of view (air is
#: -1000 HU by definition; lung parenchyma is about -850 HU and above).
PADDING_HU = -950.0
#: Fewest such voxels within two voxels of a vertebra that make it cut (noise guard).
MIN_PADDING_VOXELS = 5
#: Beam (patient posterior), image rows (inferior) and columns (patient left), LPS.
BEAM = np.array([0.0, 1.0, 0.0])
ROW_AXIS = np.array([0.0, 0.0, -1.0])
COL_AXIS = np.array([1.0, 0.0, 0.0])

METHOD = ("DXA-like AP aBMD: BMC / projected area of the whole vertebra (body and "
          "posterior elements), parallel-beam projection along patient posterior at "
          f"{PIXEL_MM:g} mm pixels, edge mineral within {EDGE_MARGIN_MM:g} mm of the label "
          "restored")
METHOD_BMC = ("mineral of the whole vertebra label plus the edge mineral within "
              f"{EDGE_MARGIN_MM:g} mm (local soft-tissue background subtracted)")
METHOD_AREA = ("area of the vertebra's AP projection (smoothed label outline, sub-pixel "
               "edges)")


@dataclass
class VertebraProjection:
    """The AP projection of one vertebra (for reports and Slicer).

    Attributes
    ----------
    key : str
        Anatomy key ('vertebrae_L1'...).
    areal_density_g_cm2 : np.ndarray, (n_rows, n_cols)
        Areal density of this vertebra's (HA-equivalent, edge-restored) mineral.
    footprint : np.ndarray of bool, (n_rows, n_cols)
        Pixels whose ray passes through the vertebra.
    coverage : np.ndarray of float, (n_rows, n_cols)
        Sub-pixel fraction of each pixel inside the outline (0..1); its sum x pixel
        area is ``area_cm2``.
    grid : ProjectionGrid
        Pixel [i, j] is the ray ``grid.origin_mm + i*pixel*ROW_AXIS + j*pixel*COL_AXIS
        + t*BEAM``; all vertebrae share one pixel lattice (:func:`compose`).
    bmc_g, area_cm2, abmd_g_cm2 : float
    restored_fraction : float
        Edge mineral returned from outside the label / mineral inside it.
    """

    key: str
    areal_density_g_cm2: np.ndarray
    footprint: np.ndarray
    coverage: np.ndarray
    grid: ProjectionGrid
    bmc_g: float
    area_cm2: float
    abmd_g_cm2: float
    restored_fraction: float


def _lattice_grid(points_mm: np.ndarray, margin_mm: float) -> ProjectionGrid:
    """AP grid covering LPS points (N, 3) + margin, on the lattice of pixel centres at
    integer multiples of :data:`PIXEL_MM` (shared by every vertebra)."""
    r, c, t = points_mm @ ROW_AXIS, points_mm @ COL_AXIS, points_mm @ BEAM
    r0 = np.floor((r.min() - margin_mm) / PIXEL_MM) * PIXEL_MM
    c0 = np.floor((c.min() - margin_mm) / PIXEL_MM) * PIXEL_MM
    nr = int(np.ceil((r.max() + margin_mm - r0) / PIXEL_MM)) + 1
    nc = int(np.ceil((c.max() + margin_mm - c0) / PIXEL_MM)) + 1
    return ProjectionGrid(r0 * ROW_AXIS + c0 * COL_AXIS, ROW_AXIS, COL_AXIS, BEAM, PIXEL_MM,
                          (nr, nc), (float(t.min() - margin_mm), float(t.max() + margin_mm)))


def subpixel_coverage(peak: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Fraction (0..1) of each pixel inside the 0.5 contour of ``peak`` (n_rows, n_cols).

    Near the contour the signed distance of a pixel centre to it is about
    ``(peak - 0.5) / |grad peak|`` (mm); a pixel counts for ``0.5 + distance / pixel``,
    clipped to 0..1. Elsewhere: 1 inside, 0 outside.
    """
    g_r, g_c = np.gradient(np.asarray(peak, dtype=float), pixel_mm)
    grad = np.hypot(g_r, g_c)
    inside = (peak >= 0.5).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        soft = np.clip(0.5 + (peak - 0.5) / (grad * pixel_mm), 0.0, 1.0)
    return np.where(grad > 1e-6, soft, inside)


def project_vertebra(ct: CTImage, labels: LabelMap, key: str, mask: np.ndarray,
                     calibration_ha: Calibration,
                     margin_mm: float = EDGE_MARGIN_MM) -> VertebraProjection:
    """BMC, projected area, aBMD and images of one complete vertebra.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap
        On the CT grid (other structures keep their share of the edge shell).
    key : str
    mask : np.ndarray of bool, (n0, n1, n2)
        The vertebra label (non-empty).
    calibration_ha : Calibration
        Calibrated, hydroxyapatite scale (:func:`to_hydroxyapatite`).
    margin_mm : float
        Edge shell width (0: no partial-volume restoration).
    """
    g = ct.geometry
    em = restore_edge_mineral(ct.hu, mask, g, calibration_ha.bmd_mg_cm3, labels=labels,
                              femur_key=key, margin_mm=margin_mm)
    bmc_g = float(em.density_mg_cm3.sum() * g.voxel_volume_cm3 * 1e-3)
    idx = np.argwhere(mask)
    pad = int(np.ceil(3.0 * SMOOTH_SIGMA_VOXELS)) + 2
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, np.asarray(mask.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = crop_geometry(g, lo, hi)
    m = mask[box]
    density = np.zeros(m.shape, dtype=np.float32)
    density[m] = em.density_mg_cm3
    smooth = ndimage.gaussian_filter(m.astype(np.float32), SMOOTH_SIGMA_VOXELS)
    grid = _lattice_grid(g.index_to_physical(idx), float(max(g.spacing_mm)) * 2.0 + 2.0)
    areal, peak = project_many([(density, "sum"), (smooth, "max")], sub, grid)
    areal *= 1e-4  # mg/cm3 x mm -> g/cm2
    coverage = subpixel_coverage(peak, PIXEL_MM)
    area_cm2 = float(coverage.sum() * (PIXEL_MM / 10.0) ** 2)
    abmd = bmc_g / area_cm2 if area_cm2 > 0 else float("nan")
    return VertebraProjection(key, areal, peak >= 0.5, coverage, grid, bmc_g, area_cm2,
                              abmd, em.restored_fraction)


def compose(projections: Mapping[str, VertebraProjection]
            ) -> tuple[np.ndarray, dict[str, np.ndarray], ProjectionGrid] | None:
    """One AP image of several vertebrae (they share a pixel lattice).

    Returns
    -------
    (areal_density_g_cm2 (n_rows, n_cols), {key: footprint bool (n_rows, n_cols)}, grid)
    or None when there is no projection.
    """
    if not projections:
        return None
    rc = {k: (int(round(float(p.grid.origin_mm @ ROW_AXIS) / PIXEL_MM)),
              int(round(float(p.grid.origin_mm @ COL_AXIS) / PIXEL_MM)))
          for k, p in projections.items()}
    r0 = min(v[0] for v in rc.values())
    c0 = min(v[1] for v in rc.values())
    r1 = max(rc[k][0] + p.grid.shape[0] for k, p in projections.items())
    c1 = max(rc[k][1] + p.grid.shape[1] for k, p in projections.items())
    image = np.zeros((r1 - r0, c1 - c0))
    feet: dict[str, np.ndarray] = {}
    for k, p in projections.items():
        a, b = rc[k][0] - r0, rc[k][1] - c0
        sl = (slice(a, a + p.grid.shape[0]), slice(b, b + p.grid.shape[1]))
        image[sl] += p.areal_density_g_cm2
        feet[k] = np.zeros(image.shape, dtype=bool)
        feet[k][sl] = p.footprint
    t0 = min(p.grid.t_range_mm[0] for p in projections.values())
    t1 = max(p.grid.t_range_mm[1] for p in projections.values())
    grid = ProjectionGrid(r0 * PIXEL_MM * ROW_AXIS + c0 * PIXEL_MM * COL_AXIS, ROW_AXIS,
                          COL_AXIS, BEAM, PIXEL_MM, image.shape, (t0, t1))
    return image, feet, grid


def cut_by_fov(hu: np.ndarray, mask: np.ndarray) -> str | None:
    """Why a vertebra label is cut by the field of view, or None.

    Cut when the label touches the array's edge, or when voxels at the air / padding
    level (<= :data:`PADDING_HU`) lie within two voxels of it: a vertebra lies deep in
    the body, so air next to it is the outside of a reconstructed (e.g. circular)
    field of view that ends inside the bone without reaching the array's edge.
    """
    idx = np.argwhere(mask)
    if indices_touch_border(idx, mask.shape):
        return "the vertebra touches the image edge"
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    a = np.maximum(lo - 2, 0)
    b = np.minimum(hi + 3, np.asarray(mask.shape))
    box = tuple(slice(int(x), int(y)) for x, y in zip(a, b, strict=True))
    m = mask[box]
    near = ndimage.binary_dilation(m, iterations=2) & ~m
    if int((np.asarray(hu[box])[near] <= PADDING_HU).sum()) >= MIN_PADDING_VOXELS:
        return "air or padding outside the reconstructed field of view next to the vertebra"
    return None


def lumbar_abmd_rows(ct: CTImage, labels: LabelMap, calibration: Calibration,
                     ctx: ScoreContext | None = None, *,
                     exclude: Mapping[str, str] | None = None,
                     margin_mm: float = EDGE_MARGIN_MM
                     ) -> tuple[list[ResultRow], dict[str, VertebraProjection]]:
    """DXA-like AP aBMD of L1-L4 (see module docstring).

    Parameters
    ----------
    ct : CTImage
        HU; ``metadata.kvp`` chooses the K2HPO4 -> HA ratio.
    labels : LabelMap
        On the CT grid; vertebrae under ``vertebrae_L1`` .. ``vertebrae_L4``.
    calibration : Calibration
        HU -> mg/cm3 (K2HPO4 or HA); ``Calibration.none()``: every value not measurable.
    ctx : ScoreContext, optional
        CT-to-DXA model, reference table, sex and age (default: shipped identity model,
        NHANES III, header sex and age; :func:`CTMuscleBoneLib.analysis.bone_score_context`
        builds it from the measure options).
    exclude : mapping of str -> str, optional
        Vertebrae to leave out of the combined value, with the reason (e.g. a fracture
        graded by :mod:`.measure`); they keep their own row, flagged.
    margin_mm : float
        Edge-mineral shell width, mm (0 disables the partial-volume restoration).

    Returns
    -------
    rows : list of ResultRow
        Per vertebra present in the labels: ``abmd_ap`` (g/cm2), ``bmc_ap`` (g),
        ``area_ap`` (cm2); ``lumbar_L1_L4``: the same three, then the site 'lumbar'
        rows of :func:`score_rows` (``abmd_dxa_lumbar``, ``t_score_lumbar``,
        ``z_score_lumbar``, ``percent_yam_lumbar``, category).
    projections : dict of str -> VertebraProjection
        The measured vertebrae's AP images (:func:`compose` pastes them into one).

    Raises
    ------
    InputError
        When the label map is not on the CT's grid.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError("The label map is not on the CT's voxel grid; resample the "
                         "segmentation to the CT before measuring the lumbar aBMD.")
    ctx = ctx or score_context(ct)
    exclude = dict(exclude or {})
    ha_cal, conv = to_hydroxyapatite(calibration, ct.metadata.kvp)
    cal_flags = calibration.flags() + (conv.flags() if conv is not None else [])
    method_cal = _method_prefix(calibration, conv)
    present = set(labels.present_keys())
    rows: list[ResultRow] = []
    projections: dict[str, VertebraProjection] = {}
    notes: list[str] = []
    for key in ABMD_KEYS:
        level = key.removeprefix("vertebrae_")
        if key not in present:
            notes.append(f"{level} not in the labels")
            continue
        mask = labels.mask(key)
        flags: list[str] = []
        reason = None
        cut = cut_by_fov(ct.hu, mask)
        if cut is not None:
            flags.append(f"partial: cut by the field of view ({cut})")
            reason = ("vertebra cut by the field of view: the projection of part of a "
                      "vertebra is not its aBMD")
        metal = metal_volume_mm3(ct, mask)
        if metal >= METAL_MIN_VOLUME_MM3:
            reason = "; ".join(x for x in (reason, (
                f"metal or cement: {metal:.0f} mm3 above {METAL_HU:.0f} HU in or within "
                f"{METAL_MARGIN_MM:g} mm of the vertebra")) if x)
        if not calibration.calibrated:
            reason = "; ".join(x for x in (reason, NO_CALIBRATION_REASON) if x)
        if reason is not None:
            rows += _missing_rows(key, reason, flags, method_cal)
            notes.append(f"{level} left out: {reason.split(':')[0]}")
            continue
        proj = project_vertebra(ct, labels, key, mask, ha_cal, margin_mm)
        projections[key] = proj
        if key in exclude:
            flags.append(f"info: excluded from {COMBINED}: {exclude[key]}")
            notes.append(f"{level} excluded: {exclude[key]}")
        pv = (f"info: edge mineral restored: {100 * proj.restored_fraction:+.1f} % of the "
              "label's mineral") if margin_mm > 0 else "warning: no partial-volume restoration"
        rows += _value_rows(key, proj.abmd_g_cm2, proj.bmc_g, proj.area_cm2,
                            cal_flags + flags + [pv], method_cal, METHOD)
    rows += _combined_rows(projections, exclude, notes, cal_flags, method_cal, ctx,
                           calibration.calibrated)
    return rows, projections


def _method_prefix(calibration: Calibration, conv: MaterialConversion | None) -> str:
    if not calibration.calibrated:
        return ""
    text = calibration.method_text()
    return f"{text}; {conv.method_text()}; " if conv is not None else f"{text}; "


def _value_rows(structure: str, abmd: float, bmc: float, area: float, flags: list[str],
                method_cal: str, method: str) -> list[ResultRow]:
    return [ResultRow(structure, Q_ABMD, abmd, "g/cm2", method_cal + method, list(flags)),
            ResultRow(structure, Q_BMC, bmc, "g", method_cal + METHOD_BMC, list(flags)),
            ResultRow(structure, Q_AREA, area, "cm2", METHOD_AREA,
                      [f for f in flags if not f.startswith(("calibration", "uncalibrated"))])]


def _missing_rows(structure: str, reason: str, flags: list[str], method_cal: str
                  ) -> list[ResultRow]:
    na = [f"not_measurable: {reason}"] + flags
    return [ResultRow(structure, Q_ABMD, None, "g/cm2", method_cal + METHOD, list(na)),
            ResultRow(structure, Q_BMC, None, "g", method_cal + METHOD_BMC, list(na)),
            ResultRow(structure, Q_AREA, None, "cm2", METHOD_AREA, list(na))]


def _combined_rows(projections: dict[str, VertebraProjection], exclude: Mapping[str, str],
                   notes: list[str], cal_flags: list[str], method_cal: str,
                   ctx: ScoreContext, calibrated: bool) -> list[ResultRow]:
    used = [k for k in ABMD_KEYS if k in projections and k not in exclude]
    levels = ", ".join(k.removeprefix("vertebrae_") for k in used) or "none"
    method = f"total BMC / total projected area of {levels}; {METHOD}"
    info = [f"info: {n}" for n in notes]
    if len(used) < MIN_COMBINED:
        reason = (NO_CALIBRATION_REASON if not calibrated else
                  f"{len(used)} measurable complete "
                  f"{'vertebra' if len(used) == 1 else 'vertebrae'} of L1-L4; need >= "
                  f"{MIN_COMBINED} (ISCD: no diagnosis from a single vertebra)")
        rows = _missing_rows(COMBINED, reason, info, method_cal)
        methods = score_methods(SITE, ctx)
        for q, unit in score_quantities(SITE, ctx.reference):
            rows.append(ResultRow(COMBINED, q, None, unit, methods[q],
                                  [f"not_measurable: {reason}"] + info))
        return rows
    bmc = float(sum(projections[k].bmc_g for k in used))
    area = float(sum(projections[k].area_cm2 for k in used))
    abmd = bmc / area
    flags = list(cal_flags) + info
    if len(used) < len(ABMD_KEYS):
        flags.append(f"warning: combined from {len(used)} of 4 vertebrae ({levels}); "
                     "ISCD allows 3 or 2 when 4 cannot be used")
    return (_value_rows(COMBINED, abmd, bmc, area, flags, method_cal, method)
            + score_rows(COMBINED, SITE, abmd, ctx, flags))


__all__ = ["ABMD_KEYS", "COMBINED", "PIXEL_MM", "SITE", "VertebraProjection", "compose",
           "cut_by_fov", "lumbar_abmd_rows", "project_vertebra", "subpixel_coverage"]
