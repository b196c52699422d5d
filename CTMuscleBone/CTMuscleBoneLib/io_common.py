"""Small helpers shared by the image-file and DICOM readers (:mod:`.io_ct`, :mod:`.io_dicom`).

SimpleITK import, header value parsing, the refusal of non-finite voxels, the pixel array
of a CT image in HU and its geometry.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError
from .image import Geometry, array_from_sitk


def _sitk() -> Any:
    import SimpleITK as sitk

    return sitk

def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None

def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None

def _non_finite_message(source: str, n_bad: int, n_total: int) -> str:
    return (f"'{source}' holds {n_bad} non-finite voxel value(s) (NaN or infinity) out of "
            f"{n_total}; voxel values must be finite. Replace them (e.g. by -1024 HU, "
            "air, outside the body) or export the image again.")

def refuse_non_finite(array: np.ndarray, source: str) -> None:
    """Raise :class:`InputError` when ``array`` holds NaN or infinity.

    The non-finite check of every CT reader (NIfTI, NRRD, MetaImage, DICOM) on the
    decoded voxels. ITK's NIfTI reader turns NaN into 0 (water) before this point, so
    NIfTI files are also checked on their raw bytes (:func:`_scan_nifti_data`).
    """
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    n_bad = int(array.size - np.count_nonzero(finite))
    raise InputError(_non_finite_message(source, n_bad, array.size))

def _pixel_array_for_ct(image: Any, source: str) -> np.ndarray:
    """ITK-order voxel array of a scalar SimpleITK image; float64 is stored as float32.

    Refuses colour/vector images and non-finite voxels (:func:`refuse_non_finite`).
    """
    sitk = _sitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"'{source}' has {image.GetNumberOfComponentsPerPixel()} values per voxel "
            "(colour or vector image); a CT holds one value (HU) per voxel. Export the "
            "CT as a grey-scale volume."
        )
    if image.GetPixelID() in (sitk.sitkFloat64,):
        image = sitk.Cast(image, sitk.sitkFloat32)
    array = array_from_sitk(image)
    refuse_non_finite(array, source)
    return array

def _geometry(image: Any, source: str | os.PathLike[str]) -> Geometry:
    """Geometry of a SimpleITK image; a refusal (spacing, direction) names the file."""
    try:
        return Geometry.from_sitk(image)
    except InputError as exc:
        raise InputError(f"'{source}': {exc}") from None

#: Header modalities that do not say what the image is; such images are judged by
#: their HU values (:func:`CTMuscleBoneLib.validation.check_ct`, which uses this set),
#: not refused. MetaImage writes ``MET_MOD_UNKNOWN`` (SimpleITK's default) or
#: ``MET_MOD_OTHER`` (compared without the ``MET_MOD_`` prefix); DICOM ``OT``.
UNDECIDED_MODALITIES: frozenset[str] = frozenset({"", "UNKNOWN", "OTHER", "OT"})
