"""DXA-equivalent projection of a calibrated femur (CT-aBMD), after Uemura et al. 2022.

Steps (Uemura et al., Arch Osteoporos 2022, doi 10.1007/s11657-022-01063-3):

1. density (mg/cm3) inside the femur label, zero outside;
2. the DXA view: the neck axis in the coronal plane and the shaft axis vertical. The
   frame's vertical ``ez`` is the shaft axis (superior), the beam ``ey`` is
   perpendicular to both the shaft and the neck axes (pointing posteriorly), and
   ``ex = ey x ez`` (towards the patient's left), so the neck axis lies in the image
   plane;
3. parallel-beam projection along ``ey`` at 0.25 mm pixels: areal density (g/cm2) =
   sum of density (mg/cm3) x step (mm) x 1e-4.

Resampling: the density (zero outside the label) is interpolated trilinearly, which
conserves the mineral mass: the projection's sum equals the voxels' mass. The bone
outline (footprint) is where the label, smoothed by a Gaussian of half a voxel and
interpolated trilinearly, reaches 0.5 somewhere along the ray: the smoothing removes
the voxel staircase whose bumps would enlarge the outline. Because interpolation
spreads the edge mineral up to about a voxel outside the outline, a ROI's mineral
content (BMC) includes that thin band and its aBMD is BMC / area, as in DXA.

Partial volume: a scanner's blur moves part of the cortex's mineral up to ~2 FWHM
outside the label. Pass the density of :func:`.partial_volume.restore_edge_mineral`
(that mineral returned to the label's surface voxels) so the projection keeps it;
the raw density inside the label reads 4-9 % low at FWHM 1.2-2 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..image import Geometry
from ..spine.projection import ProjectionGrid, crop_geometry, project_many
from .landmarks import FemurLandmarks

#: Projection pixel size, mm (Uemura et al. 2022).
PIXEL_MM = 0.25
#: Extra space around the femur in the projection, mm.
MARGIN_MM = 4.0
#: The projection covers the femur from this far below the lesser trochanter up (mm),
#: or all of the femur when no lesser trochanter was found.
BELOW_LT_MM = 30.0
#: Gaussian smoothing (sigma, in voxels) of the label and density before resampling:
#: removes the voxel staircase whose bumps would otherwise enlarge the projected
#: outline (the maximum of a bumpy surface along a ray is biased outwards).
SMOOTH_SIGMA_VOXELS = 0.5


@dataclass(frozen=True)
class DXAFrame:
    """Orthonormal DXA view frame and the projection's pixel grid.

    Pixel ``[i, k]`` is the ray ``origin_mm + i*pixel_mm*ex + k*pixel_mm*ez + t*ey``.
    """

    origin_mm: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    ez: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]

    def to_plane_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """In-plane coordinates (..., 2) in mm (along ex, ez) of LPS points (..., 3)."""
        rel = np.asarray(points_mm, dtype=float) - self.origin_mm
        return np.stack([rel @ self.ex, rel @ self.ez], axis=-1)

    def to_pixel(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous pixel indices (..., 2) ``(i, k)`` of LPS points (..., 3)."""
        return self.to_plane_mm(points_mm) / self.pixel_mm

    def pixel_plane_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane mm coordinates (x, z), each (nx, nz), of every pixel centre."""
        i, k = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        return i * self.pixel_mm, k * self.pixel_mm


@dataclass
class Projection:
    """A DXA-equivalent projection of one femur.

    Attributes
    ----------
    areal_density_g_cm2 : np.ndarray, (nx, nz)
        Mass-conserving projection of the trilinearly interpolated density; up to
        ``spill_px`` pixels outside the footprint carry mineral of the bone's edge.
    footprint : np.ndarray of bool, (nx, nz)
        Pixels whose ray passes through bone (the smoothed label's 0.5 iso-surface).
    frame : DXAFrame
    spill_px : int
        Width (pixels) of the band outside the footprint that holds edge mineral; a
        ROI's BMC includes it (:func:`CTMuscleBoneLib.femur.rois.roi_value`).
    """

    areal_density_g_cm2: np.ndarray
    footprint: np.ndarray
    frame: DXAFrame
    spill_px: int = 0


def dxa_axes(landmarks: FemurLandmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ex, ey, ez) of the DXA view of a femur (see module docstring)."""
    ez = landmarks.shaft_axis / np.linalg.norm(landmarks.shaft_axis)
    ey = np.cross(ez, landmarks.neck_axis)
    ey = ey / np.linalg.norm(ey)
    if ey[1] < 0:
        ey = -ey
    ex = np.cross(ey, ez)
    return ex, ey, ez


def dxa_frame(landmarks: FemurLandmarks, points_mm: np.ndarray, pixel_mm: float = PIXEL_MM,
              margin_mm: float = MARGIN_MM) -> tuple[DXAFrame, tuple[float, float]]:
    """Frame covering the proximal femur points (N, 3) and the beam range (t0, t1) mm."""
    ex, ey, ez = dxa_axes(landmarks)
    h = points_mm @ ez
    if landmarks.lesser_trochanter_mm is not None:
        keep = h >= landmarks.lesser_trochanter_mm @ ez - BELOW_LT_MM
        pts = points_mm[keep]
    else:
        pts = points_mm
    x, y, z = pts @ ex, pts @ ey, pts @ ez
    x0, z0 = x.min() - margin_mm, z.min() - margin_mm
    nx = int(np.ceil((x.max() + margin_mm - x0) / pixel_mm)) + 1
    nz = int(np.ceil((z.max() + margin_mm - z0) / pixel_mm)) + 1
    origin = x0 * ex + z0 * ez
    frame = DXAFrame(origin, ex, ey, ez, pixel_mm, (nx, nz))
    return frame, (float(y.min() - margin_mm), float(y.max() + margin_mm))


def project(density_mg_cm3: np.ndarray, mask: np.ndarray, geometry: Geometry,
            landmarks: FemurLandmarks, pixel_mm: float = PIXEL_MM,
            step_mm: float | None = None, ray_pitch_mm: float | None = None) -> Projection:
    """Areal-density projection (g/cm2) of a femur in its DXA view.

    Parameters
    ----------
    density_mg_cm3 : np.ndarray, (n0, n1, n2)
        Calibrated density; only values inside ``mask`` are used.
    mask : np.ndarray of bool, (n0, n1, n2)
        The femur label.
    geometry : Geometry
    landmarks : FemurLandmarks
    pixel_mm : float
        Pixel size of the projection (0.25 mm after Uemura et al. 2022).
    step_mm : float, optional
        Sampling step along the beam; default half the smallest voxel spacing, at most
        0.5 mm. Rays are cast every half voxel (at least every ``pixel_mm``) and the
        ray image is interpolated bilinearly to ``pixel_mm`` pixels.

    Returns
    -------
    Projection
    """
    nzidx = np.argwhere(mask)
    lo = np.maximum(nzidx.min(axis=0) - 3, 0)
    hi = np.minimum(nzidx.max(axis=0) + 4, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    m = ndimage.gaussian_filter(mask[sl].astype(np.float32), SMOOTH_SIGMA_VOXELS)
    d = np.where(mask[sl], density_mg_cm3[sl], 0.0).astype(np.float32)
    pts = geometry.index_to_physical(nzidx)
    frame, t_range = dxa_frame(landmarks, pts, pixel_mm)
    # rays every half voxel, at least every pixel (shared ray caster: spine.projection)
    pitch = ray_pitch_mm or max(pixel_mm, min(geometry.spacing_mm) / 2.0)
    ncx = int(np.ceil((frame.shape[0] - 1) * pixel_mm / pitch)) + 2
    ncz = int(np.ceil((frame.shape[1] - 1) * pixel_mm / pitch)) + 2
    rays = ProjectionGrid(frame.origin_mm, frame.ex, frame.ez, frame.ey, pitch, (ncx, ncz),
                          t_range)
    areal, peak = project_many([(d, "sum"), (m, "max")], crop_geometry(geometry, lo, hi),
                               rays, step_mm)
    areal *= 1e-4  # mg/cm3 x mm -> g/cm2
    # rays every `pitch` mm -> pixels of `pixel_mm` by bilinear interpolation
    fi, fk = np.meshgrid(np.arange(frame.shape[0]) * (pixel_mm / pitch),
                         np.arange(frame.shape[1]) * (pixel_mm / pitch), indexing="ij")
    coords = np.stack([fi.ravel(), fk.ravel()])
    foot = ndimage.map_coordinates(peak, coords, order=1, prefilter=False).reshape(
        frame.shape) >= 0.5
    out = ndimage.map_coordinates(areal, coords, order=1, prefilter=False).reshape(frame.shape)
    spill_px = int(np.ceil((max(geometry.spacing_mm) + pitch) / pixel_mm))
    return Projection(out, foot, frame, spill_px)
