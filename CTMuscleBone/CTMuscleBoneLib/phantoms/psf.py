"""Scanner point-spread function (PSF): an isotropic Gaussian blur in physical space.

A CT scanner does not show a sharp bone edge: the reconstructed image is the object
convolved with the scanner's point-spread function, whose full width at half maximum
(FWHM) is about 0.7-2 mm for clinical body kernels. The phantom models it as an
isotropic 3-D Gaussian of that FWHM, ``sigma_mm = FWHM / (2 sqrt(2 ln 2))``
(FWHM = 2.3548 sigma).

An isotropic Gaussian is separable along **any** orthonormal set of axes, so on a
voxel grid of any direction (LPS, RAS, permuted or oblique storage) and any
(anisotropic) spacing it is exactly a per-array-axis Gaussian with
``sigma_voxels[a] = sigma_mm / spacing_mm[a]``. The blur is applied to the noiseless,
point-sampled voxel values (:func:`blur_hu`); the discrete kernel is normalised, so the
sum of the voxel values (the mineral mass seen by a measurement) is unchanged away
from the array's edges. Noise is added after the blur (quantum noise is not blurred
by the PSF in the same way; the phantom keeps white noise).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..image import Geometry

#: FWHM / sigma of a Gaussian: 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))


def sigma_voxels(fwhm_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Per-array-axis Gaussian sigma (voxels), (3,), of an isotropic PSF of ``fwhm_mm``.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum of the PSF, mm (>= 0).
    spacing_mm : (3,) float
        Voxel size along array axes 0, 1, 2, mm.
    """
    if not np.isfinite(fwhm_mm) or fwhm_mm < 0:
        raise InputError(f"PSF FWHM {fwhm_mm} mm must be a finite number >= 0.")
    return fwhm_mm / FWHM_PER_SIGMA / np.asarray(spacing_mm, dtype=float)


#: Gaussian truncation (in sigmas) of the blur: scipy's ``gaussian_filter`` default.
TRUNCATE_SIGMAS = 4.0


def _fill_from_box(src: np.ndarray, geometry: Geometry, outside: np.ndarray,
                   sig: np.ndarray, box_mm: tuple[np.ndarray, np.ndarray]
                   ) -> np.ndarray | None:
    """``src`` with the outside voxels that the blur kernel reaches from inside set to
    the value of the voxel nearest to their projection onto the box; None when that
    voxel is not inside (a box thinner than a voxel diagonal: use the exact fill)."""
    radius = [int(TRUNCATE_SIGMAS * float(sd) + 0.5) for sd in sig]  # scipy's kernel radius
    reach = ndimage.maximum_filter(~outside, size=[2 * r + 1 for r in radius],
                                   mode="constant", cval=False)
    band = np.nonzero(outside & reach)
    if band[0].size == 0:
        return src
    idx = np.stack(band, axis=1).astype(float)
    pts = geometry.index_to_physical(idx)
    lo, hi = (np.asarray(b, dtype=float) for b in box_mm)
    d = np.minimum(0.5 * np.sqrt(3.0) * max(geometry.spacing_mm), (hi - lo) / 2.0)
    near = np.rint(geometry.physical_to_index(np.clip(pts, lo + d, hi - d))).astype(int)
    near = np.clip(near, 0, np.asarray(geometry.shape) - 1)
    near_t = tuple(near.T)
    if outside[near_t].any():
        return None
    out = src.copy()
    out[band] = src[near_t]
    return out


def blur_hu(hu: np.ndarray, geometry: Geometry, fwhm_mm: float,
            outside: np.ndarray | None = None,
            box_mm: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The HU volume seen through an isotropic Gaussian PSF of ``fwhm_mm``.

    Parameters
    ----------
    hu : np.ndarray, geometry.shape
        Noiseless HU.
    geometry : Geometry
        Grid of ``hu`` (spacing and direction; the result does not depend on the
        direction, see the module docstring).
    fwhm_mm : float
        PSF full width at half maximum, mm; 0 returns a float32 copy.
    outside : np.ndarray of bool, geometry.shape, optional
        Voxels that are not part of the scanned object (e.g. corners of an oblique
        grid outside the field of view). Before blurring they take the value of the
        nearest voxel that is not ``outside`` (as the array edges do, mode
        'nearest'), so they do not blur air into the object; the caller resets them.
    box_mm : (lo (3,), hi (3,)) LPS mm, optional
        The box ``outside`` is the complement of. When given, only the outside voxels
        within the kernel's reach of the inside are filled, each with the voxel
        nearest to its projection onto the box (shrunk by half a voxel diagonal): much
        faster than the exact nearest-voxel search on large oblique grids, and the
        same rule up to the choice among near-equidistant voxels.

    Returns
    -------
    np.ndarray of float32, geometry.shape
    """
    src = np.asarray(hu, dtype=np.float32)
    sig = sigma_voxels(fwhm_mm, geometry.spacing_mm)
    if fwhm_mm == 0:
        return src.copy()
    filled = None
    if box_mm is not None and outside is not None and outside.any() and not outside.all():
        filled = _fill_from_box(src, geometry, outside, sig, box_mm)
    if filled is not None:
        src = filled
    elif outside is not None and outside.any() and not outside.all():
        idx = ndimage.distance_transform_edt(outside, sampling=geometry.spacing_mm,
                                             return_distances=False, return_indices=True)
        src = src[tuple(idx)]
    return ndimage.gaussian_filter(src, sigma=tuple(float(s) for s in sig), mode="nearest")
