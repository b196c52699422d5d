"""DXA-style regions of interest on a femur projection and their areal BMD.

After Uemura et al., Arch Osteoporos 2022 (see docs/femur_bmd.md):

* **total hip**: femur pixels above the horizontal line 20 mm below the lesser
  trochanter (the shaft is vertical in the DXA view), excluding the head, which lies
  on the far side of the line through the head-neck junction perpendicular to the
  neck axis;
* **femoral neck**: the 10 mm band just distal to that junction line, across the
  neck (limited to 1.5 neck radii either side of the neck axis so that no other part
  of the femur enters it);
* **aBMD** = mean areal density (g/cm2) of the ROI's pixels (= BMC / area), taken over
  the largest connected component of the ROI (8-connectivity).

All inputs are in the projection plane: points in mm along (ex, ez) of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .dxa_projection import DXAFrame

#: Distal boundary of the total hip ROI below the lesser trochanter, mm (Uemura 2022).
DISTAL_BELOW_LT_MM = 20.0
#: Width of the femoral neck band distal to the head-neck junction, mm (Uemura 2022).
NECK_BAND_MM = 10.0
#: Half-width of the neck band across the neck, in neck radii (CTMuscleBone choice).
NECK_HALF_WIDTH_RADII = 1.5


@dataclass(frozen=True)
class PlaneLandmarks:
    """Landmarks in the projection plane, mm (x along ex, z along ez from the origin).

    Attributes
    ----------
    head_centre : (2,)
    neck_dir : (2,) unit vector of the neck axis from the head distally
    junction_distance_mm : distance of the head-neck junction from the head centre
    neck_radius_mm : float
    lesser_trochanter : (2,) or None
    """

    head_centre: np.ndarray
    neck_dir: np.ndarray
    junction_distance_mm: float
    neck_radius_mm: float
    lesser_trochanter: np.ndarray | None

    @property
    def junction(self) -> np.ndarray:
        return self.head_centre + self.junction_distance_mm * self.neck_dir


@dataclass
class RoiValue:
    """A region of interest and its areal BMD.

    Attributes
    ----------
    mask : np.ndarray of bool, (nx, nz)
    abmd_g_cm2 : float
    bmc_g : float
        Bone mineral content (sum of areal density x pixel area).
    area_cm2 : float
    """

    mask: np.ndarray
    abmd_g_cm2: float
    bmc_g: float
    area_cm2: float


def plane_landmarks(frame: DXAFrame, head_centre_mm: np.ndarray, neck_axis: np.ndarray,
                    junction_distance_mm: float, neck_radius_mm: float,
                    lesser_trochanter_mm: np.ndarray | None) -> PlaneLandmarks:
    """Project 3-D landmarks (LPS) into the projection plane of ``frame``."""
    c = frame.to_plane_mm(head_centre_mm)
    n = np.array([neck_axis @ frame.ex, neck_axis @ frame.ez])
    n = n / np.linalg.norm(n)
    lt = None if lesser_trochanter_mm is None else frame.to_plane_mm(lesser_trochanter_mm)
    return PlaneLandmarks(c, n, float(junction_distance_mm), float(neck_radius_mm), lt)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of a 2-D mask (empty mask stays empty)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _neck_coordinates(frame: DXAFrame, lm: PlaneLandmarks) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """(s, perp, z) of every pixel centre, mm: along the neck axis from the head centre,
    across it, and vertical (along ez)."""
    x, z = frame.pixel_plane_mm()
    dx, dz = x - lm.head_centre[0], z - lm.head_centre[1]
    s = dx * lm.neck_dir[0] + dz * lm.neck_dir[1]
    perp = -dx * lm.neck_dir[1] + dz * lm.neck_dir[0]
    return s, perp, z


def total_hip_region(frame: DXAFrame, lm: PlaneLandmarks) -> np.ndarray:
    """The total hip's cut lines as a pixel mask (bool (nx, nz)), bone or not: above the
    line 20 mm below the lesser trochanter and distal to the head-neck junction line."""
    if lm.lesser_trochanter is None:
        raise ValueError("the total hip ROI needs the lesser trochanter")
    s, _, z = _neck_coordinates(frame, lm)
    return (z >= lm.lesser_trochanter[1] - DISTAL_BELOW_LT_MM) & (s >= lm.junction_distance_mm)


def neck_band(frame: DXAFrame, lm: PlaneLandmarks) -> np.ndarray:
    """The femoral neck band's cut lines as a pixel mask (bool (nx, nz)), bone or not:
    the 10 mm band distal to the head-neck junction line (any distance from the axis)."""
    s, _, _ = _neck_coordinates(frame, lm)
    return (s >= lm.junction_distance_mm) & (s <= lm.junction_distance_mm + NECK_BAND_MM)


def total_hip_mask(footprint: np.ndarray, frame: DXAFrame, lm: PlaneLandmarks) -> np.ndarray:
    """Total hip ROI (bool (nx, nz)); requires the lesser trochanter."""
    return largest_component(footprint & total_hip_region(frame, lm))


def neck_mask(footprint: np.ndarray, frame: DXAFrame, lm: PlaneLandmarks) -> np.ndarray:
    """Femoral neck ROI (bool (nx, nz))."""
    _, perp, _ = _neck_coordinates(frame, lm)
    roi = footprint & neck_band(frame, lm) & (
        np.abs(perp) <= NECK_HALF_WIDTH_RADII * lm.neck_radius_mm)
    return largest_component(roi)


def roi_value(areal_density_g_cm2: np.ndarray, mask: np.ndarray, pixel_mm: float,
              footprint: np.ndarray | None = None, spill_px: int = 0,
              region: np.ndarray | None = None) -> RoiValue:
    """aBMD = BMC / area of a ROI (the mean areal density of its pixels).

    When ``spill_px`` > 0, the BMC also counts the pixels outside ``footprint`` within
    ``spill_px`` pixels of the ROI: the edge mineral that interpolation moved just
    outside the outline (see :mod:`.dxa_projection`). ``region`` (bool (nx, nz), the
    ROI's cut lines: :func:`total_hip_region`, :func:`neck_band`) limits that band to
    the part of the outline beside the ROI: without it the band reaches ``spill_px``
    beyond each line that cuts the bone (the head-neck junction line, the neck band's
    distal line, the total hip's distal line) and counts the edge mineral of bone
    outside the ROI (femoral neck +3.8 % at 0.7 x 0.7 x 5 mm voxels).
    """
    n = int(mask.sum())
    if n == 0:
        return RoiValue(mask, float("nan"), 0.0, 0.0)
    px_cm2 = (pixel_mm / 10.0) ** 2
    total = float(areal_density_g_cm2[mask].sum())
    if spill_px > 0 and footprint is not None:
        grown = ndimage.binary_dilation(mask, np.ones((3, 3), dtype=bool), spill_px)
        band = grown & ~footprint
        if region is not None:
            band &= region
        total += float(areal_density_g_cm2[band].sum())
    bmc = total * px_cm2
    area = n * px_cm2
    return RoiValue(mask, bmc / area, bmc, area)
