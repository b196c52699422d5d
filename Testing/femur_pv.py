"""Test / benchmark helper: femoral aBMD and vBMD with or without the partial-volume
correction, following the steps of ``femur.measure.measure_femur`` (landmarks,
density, DXA projection, ROIs, 3-D regions) so that the correction can be measured
independently of the result rows.
"""

from __future__ import annotations

import numpy as np
from CTMuscleBoneLib.femur.dxa_projection import project
from CTMuscleBoneLib.femur.landmarks import femur_points, find_landmarks
from CTMuscleBoneLib.femur.partial_volume import restore_edge_mineral
from CTMuscleBoneLib.femur.rois import neck_mask, plane_landmarks, roi_value, total_hip_mask
from CTMuscleBoneLib.femur.vbmd import REGIONS, region_masks, region_stats
from CTMuscleBoneLib.image import CTImage, LabelMap


def femur_values(ct: CTImage, labels: LabelMap, side: str, to_density,  # noqa: ANN001
                 restore: bool = True, use_labels: bool = True) -> dict[str, float]:
    """{'abmd_total_hip', 'abmd_femoral_neck' (g/cm2), 'vbmd_<region>' (mg/cm3),
    'restored_fraction'} of one femur."""
    key = f"femur_{side}"
    mask = labels.mask(key)
    g = ct.geometry
    lm = find_landmarks(mask, g)
    if restore:
        pv = restore_edge_mineral(ct.hu, mask, g, to_density,
                                  labels=labels if use_labels else None, femur_key=key)
        dens = pv.density_mg_cm3
        frac = pv.restored_fraction
    else:
        dens = np.asarray(to_density(np.asarray(ct.hu, dtype=np.float64)[mask]))
        frac = 0.0
    out: dict[str, float] = {"restored_fraction": frac}
    masks = region_masks(femur_points(mask, g), lm)
    for region in REGIONS:
        out[f"vbmd_{region}"] = region_stats(dens, masks[region], g.voxel_volume_cm3)[0]
    density = np.zeros(mask.shape, dtype=np.float32)
    density[mask] = dens
    proj = project(density, mask, g, lm)
    frame = proj.frame
    plm = plane_landmarks(frame, lm.head_centre_mm, lm.neck_axis, lm.junction_distance_mm,
                          lm.neck_radius_mm, lm.lesser_trochanter_mm)
    for site, roi in (("total_hip", total_hip_mask(proj.footprint, frame, plm)),
                      ("femoral_neck", neck_mask(proj.footprint, frame, plm))):
        out[f"abmd_{site}"] = roi_value(proj.areal_density_g_cm2, roi, frame.pixel_mm,
                                        proj.footprint, proj.spill_px).abmd_g_cm2
    return out
