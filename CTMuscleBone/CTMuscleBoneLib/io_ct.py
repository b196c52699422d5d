"""Reading CT volumes (NIfTI, NRRD, MetaImage, DICOM series) and writing images.

:func:`read_ct` returns a :class:`~CTMuscleBoneLib.image.CTImage` in Hounsfield units
with its geometry in LPS millimetres (see :mod:`CTMuscleBoneLib.image`) and the header
facts that the file holds. It does not judge whether the image is a usable CT; that is
:func:`CTMuscleBoneLib.validation.check_ct`.

DICOM folders are read by :mod:`CTMuscleBoneLib.io_dicom` (series choice, slice
checks, multi-frame files, decoders).

Refusals common to every format (one place each): non-finite voxels
(:func:`refuse_non_finite`; NIfTI also on its raw bytes, since ITK reads NaN as 0),
NIfTI ``pixdim[1..3]`` zero, negative or non-finite (ITK would silently use 1 mm or
the absolute value; ``pixdim[0]`` = qfac = -1 is legal), zero/negative spacing and
non-orthonormal directions (:class:`~CTMuscleBoneLib.image.Geometry`; the message
names the file). A header modality that says nothing (MetaImage ``MET_MOD_UNKNOWN``
or ``MET_MOD_OTHER``) is stored as None with a note: the HU values decide
(:func:`CTMuscleBoneLib.validation.check_ct`).

Pixel values: SimpleITK (GDCM) applies RescaleSlope/RescaleIntercept. A CT file
without these tags whose values are all >= 0 is refused as unrescaled (raw detector
values, not HU: air would read 0 instead of -1000).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import InputError
from .image import CTImage, CTMetadata, Geometry, LabelMap, array_from_sitk, sitk_from_array
from .io_common import (
    UNDECIDED_MODALITIES,
    _geometry,
    _non_finite_message,
    _pixel_array_for_ct,
    _sitk,
    refuse_non_finite,
)

# the DICOM reader's public names, also reachable from here (read_ct reads DICOM too)
from .io_dicom import (
    DICOM_EXTRA_HINT,
    DicomSeriesInfo,
    is_dicom_file,
    list_dicom_series,
    parse_dicom_age,
    read_dicom,
)

__all__ = ["DICOM_EXTRA_HINT", "IMAGE_SUFFIXES", "UNDECIDED_MODALITIES", "WRITE_SUFFIXES",
           "DicomSeriesInfo", "image_stem", "label_sidecar_path", "list_dicom_series",
           "parse_dicom_age", "read_ct", "read_image", "read_nifti_header",
           "refuse_non_finite", "write_image", "write_label_map"]

#: File name endings read with SimpleITK's image IO (the format follows the ending).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings :func:`write_image` accepts.
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")




# ------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------
def _suffix_of(path: Path, suffixes: Iterable[str]) -> str | None:
    name = path.name.lower()
    for s in suffixes:
        if name.endswith(s):
            return s
    return None


def image_stem(name: str | os.PathLike[str]) -> str | None:
    """File name without its image ending (any of :data:`IMAGE_SUFFIXES`, any case).

    ``seg.nii.gz`` -> ``seg``; ``b.seg.nrrd`` -> ``b.seg``; ``notes.txt`` -> None. The
    one suffix rule used for sidecars, TotalSegmentator mask names and case names.
    """
    base = Path(name).name
    suffix = _suffix_of(Path(base), IMAGE_SUFFIXES)
    return base[: len(base) - len(suffix)] if suffix else None


















def _squeeze_to_3d(image: Any) -> Any:
    """Drop trailing singleton dimensions of a 4-D image (e.g. NIfTI with t = 1)."""
    sitk = _sitk()
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        if size[3] == 1:
            return sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
        raise InputError(
            f"The image is 4-D ({size[3]} volumes, e.g. a time series or several phases); "
            "CTMuscleBone needs one 3-D CT volume. Save the phase you want as its own file."
        )
    return image


# ------------------------------------------------------------------------------------
# image files
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NiftiHeader:
    """The raw NIfTI-1/-2 header fields that ITK hides or silently "repairs".

    Attributes
    ----------
    dim : tuple of int, (8,)
        ``dim[0]`` is the number of dimensions, ``dim[1:]`` the sizes.
    pixdim : tuple of float, (8,)
        ``pixdim[0]`` is qfac (+1 or -1, the sign of the third axis in the quaternion
        form; 0 is read as +1), ``pixdim[1:4]`` the voxel size in ``xyzt_units``.
    bitpix : int
    vox_offset : int
        Byte offset of the voxel data.
    datatype : int
        NIfTI datatype code (16 float32, 64 float64, 4 int16, ...).
    endian : str
        ``'<'`` or ``'>'``.
    """

    dim: tuple[int, ...]
    pixdim: tuple[float, ...]
    bitpix: int
    vox_offset: int
    datatype: int = 0
    endian: str = "<"

    @property
    def n_voxels(self) -> int:
        ndim = int(self.dim[0])
        if not 1 <= ndim <= 7:
            return 0
        return int(np.prod([max(int(d), 1) for d in self.dim[1:ndim + 1]], dtype=np.int64))


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """Raw NIfTI header of ``path`` (plain or gzip), or None if it is not NIfTI-1/-2.

    Raises
    ------
    InputError
        When the header itself is incomplete or the compressed stream is broken.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            hdr = f.read(540)
    except (EOFError, OSError, zlib.error):
        raise InputError(f"Cannot read '{path}': the compressed stream is damaged. "
                         "Copy or export it again.") from None
    if len(hdr) < 348:
        raise InputError(f"Cannot read '{path}': the NIfTI header is incomplete. "
                         "Copy or export it again.")
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", hdr[:4])[0]
        if sizeof_hdr == 348:
            return NiftiHeader(
                dim=struct.unpack(endian + "8h", hdr[40:56]),
                pixdim=struct.unpack(endian + "8f", hdr[76:108]),
                bitpix=struct.unpack(endian + "h", hdr[72:74])[0],
                vox_offset=int(struct.unpack(endian + "f", hdr[108:112])[0]),
                datatype=struct.unpack(endian + "h", hdr[70:72])[0],
                endian=endian,
            )
        if sizeof_hdr == 540 and len(hdr) >= 540:
            return NiftiHeader(
                dim=struct.unpack(endian + "8q", hdr[16:80]),
                pixdim=struct.unpack(endian + "8d", hdr[104:168]),
                bitpix=struct.unpack(endian + "h", hdr[14:16])[0],
                vox_offset=struct.unpack(endian + "q", hdr[168:176])[0],
                datatype=struct.unpack(endian + "h", hdr[12:14])[0],
                endian=endian,
            )
    return None  # not a NIfTI header we know; let ITK judge


#: NIfTI datatype codes of floating-point voxels -> numpy type character.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _scan_nifti_data(path: Path, header: NiftiHeader) -> tuple[str | None, int]:
    """One pass over a NIfTI file: (why it is truncated or None, non-finite voxels).

    ITK reads a truncated NIfTI (plain or gzip) without an error, filling the missing
    voxels, and reads NaN as 0, so both are checked here on the raw bytes: the size
    must reach ``vox_offset`` + voxels x ``bitpix``/8, and float voxels are counted for
    NaN/infinity (NIfTI-1 and NIfTI-2 layouts, either byte order).
    """
    n_vox = header.n_voxels
    if n_vox == 0:
        return None, 0
    offset = max(header.vox_offset, 348)
    expected = offset + n_vox * max(int(header.bitpix), 1) // 8
    ftype = _NIFTI_FLOAT_TYPES.get(int(header.datatype))
    dtype = np.dtype(header.endian + ftype) if ftype else None
    gz = path.name.lower().endswith(".gz")
    if dtype is None and not gz:
        size = path.stat().st_size
        return (f"{size} bytes instead of {expected}" if size < expected else None), 0
    size, n_bad, pending = 0, 0, b""
    data_end = offset + n_vox * (dtype.itemsize if dtype is not None else 0)
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            while chunk := f.read(1 << 24):
                start = size
                size += len(chunk)
                if dtype is None or size <= offset or start >= data_end:
                    continue
                part = pending + chunk[max(offset - start, 0): max(data_end - start, 0)]
                usable = len(part) - len(part) % dtype.itemsize
                values = np.frombuffer(part[:usable], dtype=dtype)
                n_bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                pending = part[usable:]
    except (EOFError, OSError, zlib.error):
        return "the compressed stream ends early", n_bad
    return (f"{size} bytes instead of {expected}" if size < expected else None), n_bad


def _check_nifti_spacing(path: Path, header: NiftiHeader) -> None:
    """Refuse a NIfTI voxel size of 0, negative or non-finite in ``pixdim[1..3]``.

    ITK (nifti1_io) replaces a zero pixdim by 1 mm and a negative one by its absolute
    value without a word, which gives wrong volumes. Rule (CTMuscleBone choice):
    zero, negative or non-finite ``pixdim[1..3]`` are refused (the NIfTI standard
    allows neither). ``pixdim[0]`` (qfac) of -1 is legal: it flips the third axis of
    the quaternion orientation and is not a negative spacing.
    """
    ndim = min(max(int(header.dim[0]), 0), 3)
    bad = [(a, float(header.pixdim[a])) for a in range(1, ndim + 1)
           if not np.isfinite(header.pixdim[a]) or header.pixdim[a] <= 0]
    if bad:
        listed = ", ".join(f"pixdim[{a}] = {v:g}" for a, v in bad)
        raise InputError(
            f"'{path}' has an invalid voxel size in its NIfTI header ({listed}); readers "
            "would silently use 1 mm or the absolute value, and volumes would be wrong. "
            "Set the true voxel spacing (pixdim) and save the image again."
        )


def _read_image_file(path: Path) -> tuple[Any, dict[str, str]]:
    """Read an image file with SimpleITK; returns the image and its header key/values.

    The single image-file reader of the package (CT, label maps, masks): NIfTI files
    are checked for truncation and for zero/negative voxel sizes first.
    """
    sitk = _sitk()
    if path.name.lower().endswith((".nii", ".nii.gz")):
        nifti = read_nifti_header(path)
        if nifti is not None:
            why, n_bad = _scan_nifti_data(path, nifti)
            if why is not None:
                raise InputError(
                    f"Cannot read '{path}': the file is truncated or damaged ({why}). "
                    "Copy or export it again."
                )
            _check_nifti_spacing(path, nifti)
            if n_bad:
                raise InputError(_non_finite_message(str(path), n_bad, nifti.n_voxels))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        header = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "rror" in ln), "")
        detail = " ".join(detail.split())[:200]
        if "Zero-valued spacing" in detail:
            raise InputError(
                f"'{path}' has a voxel spacing of 0 in its header; volumes cannot be "
                "computed. Set the true voxel spacing and save the image again."
            ) from None
        raise InputError(
            f"Cannot read '{path}': the file is damaged, truncated or not a valid image "
            f"({detail or 'reader failed'}). Re-export or copy it again."
        ) from None
    return image, header


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, Geometry]:
    """Read any image file (label map, mask, CT) as (array, geometry), unjudged.

    Parameters
    ----------
    path : path-like
        NIfTI, NRRD or MetaImage file; a 4-D file with one volume is squeezed to 3-D.

    Returns
    -------
    array : np.ndarray, (n0, n1, n2)
        Voxels in ITK index order, the file's data type.
    geometry : Geometry
        LPS mm.

    Raises
    ------
    InputError
        Unreadable, truncated, zero/negative NIfTI spacing, non-orthonormal direction,
        several volumes, several components.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' does not exist. Check the path.")
    image, _ = _read_image_file(path)
    image = _squeeze_to_3d(image)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}' has several values per voxel; expected a scalar image.")
    return array_from_sitk(image), _geometry(image, path)




def _read_image_ct(path: Path) -> CTImage:
    image, header = _read_image_file(path)
    image = _squeeze_to_3d(image)
    geometry = _geometry(image, path)
    hu = _pixel_array_for_ct(image, str(path))
    mod = (header.get("Modality", "") or header.get("modality", "")).strip().upper()
    if mod.startswith("MET_MOD_"):
        mod = mod[len("MET_MOD_"):]
    notes: tuple[str, ...] = ()
    modality = mod or None
    if mod and mod in UNDECIDED_MODALITIES:
        modality = None
        notes = (f"The header modality '{mod}' does not say CT; the image is judged by its "
                 "HU values.",)
    meta = CTMetadata(modality=modality, source=str(path), notes=notes)
    return CTImage(hu=hu, geometry=geometry, metadata=meta)


# ------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------
def read_ct(path: str | os.PathLike[str], series_uid: str | None = None) -> CTImage:
    """Read a CT volume in HU.

    Parameters
    ----------
    path : str or path-like
        A NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage
        (``.mha``, ``.mhd``) file, a DICOM folder (scanned recursively), or one DICOM
        file (its series is read from the file's folder).
    series_uid : str, optional
        SeriesInstanceUID to read from a DICOM folder holding several series.

    Returns
    -------
    CTImage
        ``hu`` (n0, n1, n2) in ITK index order, HU; geometry in LPS mm; metadata from
        the header (DICOM) with ``notes`` saying e.g. which series was chosen.

    Raises
    ------
    InputError
        Missing, unreadable, truncated or unsupported input; a 2-D image; an unrescaled
        DICOM CT; a DICOM series with missing slices, duplicated positions or gantry tilt.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"'{p}' does not exist. Check the path.")
    if p.is_dir():
        return read_dicom(p, series_uid)
    if _suffix_of(p, IMAGE_SUFFIXES):
        if series_uid is not None:
            raise InputError("series_uid applies to DICOM input only, not to "
                             f"'{p.name}'.")
        return _read_image_ct(p)
    if is_dicom_file(p):
        return read_dicom(p.parent, series_uid, only_file=p)
    raise InputError(
        f"'{p.name}' is not a supported CT file. Give a NIfTI (.nii, .nii.gz), NRRD "
        "(.nrrd, .nhdr), MetaImage (.mha, .mhd) file or a DICOM folder."
    )


def _check_write_suffix(path: Path) -> None:
    if _suffix_of(path, WRITE_SUFFIXES) is None:
        raise InputError(
            f"Cannot write '{path.name}': use a .nii.gz, .nii, .nrrd or .mha file name."
        )


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike[str]) -> Path:
    """Write a volume atomically as NIfTI, NRRD or MetaImage (chosen by the file name).

    Parameters
    ----------
    array : np.ndarray, (n0, n1, n2)
        Voxel values in ITK index order (bool is written as uint8).
    geometry : Geometry
        Grid of ``array``; written to the header (NIfTI stores it as RAS, converted
        back to LPS on reading).
    path : path-like
        Destination; compressed for ``.nii.gz``, ``.nrrd`` and ``.mha``.

    Returns
    -------
    Path
        ``path``.
    """
    sitk = _sitk()
    path = Path(path)
    _check_write_suffix(path)
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    image = sitk_from_array(array, geometry)
    compress = not path.name.lower().endswith(".nii")
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def label_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar beside a label-map file: ``seg.nii.gz`` -> ``seg.labels.json``."""
    path = Path(path)
    suffix = _suffix_of(path, IMAGE_SUFFIXES) or "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.stem
    return path.with_name(f"{stem}.labels.json")


def write_label_map(labels: LabelMap, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a label map (NIfTI/NRRD/MHA) and its sidecar JSON, both atomically.

    The sidecar ``<name>.labels.json`` maps label value (as a string) to the anatomy key
    for known structures and to the source's name for unknown ones, the format
    :func:`CTMuscleBoneLib.io_labels.read_labels` reads back.

    Returns
    -------
    (Path, Path)
        Image path and sidecar path.
    """
    path = Path(path)
    _check_write_suffix(path)
    arr = np.asarray(labels.array)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise InputError("A label map cannot hold negative label values.")
    dtype = np.uint8 if hi <= 255 else (np.uint16 if hi <= 65535 else np.int32)
    write_image(arr.astype(dtype, copy=False), labels.geometry, path)
    table = {str(v): k for v, k in sorted(labels.structures.items())}
    for v, name in sorted(labels.unknown.items()):
        table.setdefault(str(v), name)
    table = dict(sorted(table.items(), key=lambda kv: int(kv[0])))
    sidecar = label_sidecar_path(path)
    atomic_write_text(sidecar, json.dumps(table, indent=1) + "\n")
    return path, sidecar
