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


def blur_hu(hu: np.ndarray, geometry: Geometry, fwhm_mm: float,
            outside: np.ndarray | None = None) -> np.ndarray:
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

    Returns
    -------
    np.ndarray of float32, geometry.shape
    """
    src = np.asarray(hu, dtype=np.float32)
    sig = sigma_voxels(fwhm_mm, geometry.spacing_mm)
    if fwhm_mm == 0:
        return src.copy()
    if outside is not None and outside.any() and not outside.all():
        idx = ndimage.distance_transform_edt(outside, sampling=geometry.spacing_mm,
                                             return_distances=False, return_indices=True)
        src = src[tuple(idx)]
    return ndimage.gaussian_filter(src, sigma=tuple(float(s) for s in sig), mode="nearest")
