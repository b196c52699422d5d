"""Reading CT volumes (NIfTI, NRRD, MetaImage, DICOM series) and writing images.

:func:`read_ct` returns a :class:`~CTMuscleBoneLib.image.CTImage` in Hounsfield units
with its geometry in LPS millimetres (see :mod:`CTMuscleBoneLib.image`) and the header
facts that the file holds. It does not judge whether the image is a usable CT; that is
:func:`CTMuscleBoneLib.validation.check_ct`.

DICOM folders
-------------
A folder is scanned recursively; files that are not DICOM (or DICOMDIR, or DICOM
without pixel data) are ignored. Image files are grouped by SeriesInstanceUID; files
without one (anonymised exports) are grouped by :data:`FALLBACK_SERIES_TAGS`
(StudyInstanceUID, FrameOfReferenceUID, SeriesNumber, description, orientation, image
size, pixel spacing) and a note says so. When
the folder holds several series and ``series_uid`` is not given, the series is chosen
by this rule (stated in ``metadata.notes``):

1. only CT series (Modality ``CT``) are candidates; when there is none, all series are;
2. the series with the most slices (distinct slice positions) wins;
3. ties: the smallest slice thickness; then the lowest SeriesNumber; then the UID.

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
import re
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

#: File name endings read with SimpleITK's image IO (the format follows the ending).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings :func:`write_image` accepts.
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

#: SOP classes read as CT images (DICOM PS3.4 B.5): CT Image Storage, Enhanced CT.
CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")

#: Largest relative deviation of one slice gap from the median gap before a series is
#: refused as having missing or unevenly spaced slices (a CTMuscleBone choice: 10 %
#: tolerates rounding of positions in the header, not a missing slice).
MAX_SLICE_GAP_DEVIATION = 0.10
#: Largest in-plane shift between successive slices, as a fraction of the slice gap,
#: before the series is refused as gantry-tilted (sheared) (CTMuscleBone choice).
MAX_SLICE_SHEAR = 0.02


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


def parse_dicom_age(age: str | None) -> float | None:
    """Patient age in years from a DICOM AS string ('065Y', '006M', '003W', '010D').

    Returns None for a missing or malformed value.
    """
    if not age:
        return None
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(age).upper())
    if not m:
        return None
    n = float(m.group(1))
    unit = m.group(2) or "Y"
    # Days per year 365.25, weeks per year 52.1775 (365.25 / 7).
    return {"Y": n, "M": n / 12.0, "W": n / 52.1775, "D": n / 365.25}[unit]


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


#: Header modalities that do not say what the image is; such images are judged by
#: their HU values (:func:`CTMuscleBoneLib.validation.check_ct`, which uses this set),
#: not refused. MetaImage writes ``MET_MOD_UNKNOWN`` (SimpleITK's default) or
#: ``MET_MOD_OTHER`` (compared without the ``MET_MOD_`` prefix); DICOM ``OT``.
UNDECIDED_MODALITIES: frozenset[str] = frozenset({"", "UNKNOWN", "OTHER", "OT"})


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
# DICOM
# ------------------------------------------------------------------------------------
_SCAN_TAGS = [
    "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesNumber",
    "SeriesDescription", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
    "Rows", "Columns", "NumberOfFrames", "InstanceNumber", "RescaleSlope", "RescaleIntercept",
    "FrameOfReferenceUID", "PixelSpacing", "AcquisitionNumber",
]

#: Tags that identify a series when SeriesInstanceUID is empty or absent (anonymised
#: exports): files agreeing on all of them are taken as one series (CTMuscleBone rule).
FALLBACK_SERIES_TAGS: tuple[str, ...] = (
    "StudyInstanceUID", "FrameOfReferenceUID", "SeriesNumber", "Modality",
    "SeriesDescription", "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing",
)
#: Prefix of the series key made from :data:`FALLBACK_SERIES_TAGS`.
NO_UID_PREFIX = "no-uid-"


def _fallback_series_key(ds: Any) -> str:
    """A series key from :data:`FALLBACK_SERIES_TAGS` for a file without a series UID."""
    import hashlib

    parts = []
    for tag in FALLBACK_SERIES_TAGS:
        value = ds.get(tag)
        if tag in ("ImageOrientationPatient", "PixelSpacing") and value is not None:
            value = tuple(round(float(v), 4) for v in value)
        parts.append(f"{tag}={value}")
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    number = _str_or_none(ds.get("SeriesNumber"))
    return f"{NO_UID_PREFIX}{number + '-' if number else ''}{digest}"


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series found in a DICOM folder.

    Attributes
    ----------
    series_uid : str
    modality : str or None
    description : str or None
    series_number : int or None
    n_files : int
        Image files of the series.
    n_slices : int
        Distinct slice positions (frames for a multi-frame file).
    slice_thickness_mm : float or None
    files : tuple of str
        The files, in no particular order.
    """

    series_uid: str
    modality: str | None
    description: str | None
    series_number: int | None
    n_files: int
    n_slices: int
    slice_thickness_mm: float | None
    files: tuple[str, ...]

    def describe(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        thick = (f", {self.slice_thickness_mm:g} mm slices"
                 if self.slice_thickness_mm is not None else "")
        num = f"#{self.series_number} " if self.series_number is not None else ""
        return (f"{num}{self.modality or '?'}{desc} ({self.n_slices} slices{thick}; "
                f"UID {self.series_uid})")


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # Files without the 128-byte preamble (old ACR-NEMA style): ask pydicom to try.
    return path.suffix.lower() in (".dcm", ".ima", ".dicom")


def _scan_dicom(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    """Image files of ``folder`` grouped into series: series key -> [(path, header)].

    The key is the SeriesInstanceUID; files without one are grouped by
    :data:`FALLBACK_SERIES_TAGS` under a key starting with :data:`NO_UID_PREFIX`.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[tuple[Path, Any]]] = {}
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            p = Path(root) / name
            if name.upper() == "DICOMDIR" or not _is_dicom_file(p):
                continue
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_SCAN_TAGS,
                                     force=p.suffix.lower() in (".dcm", ".ima", ".dicom"))
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError,
                    AttributeError, KeyError):
                continue
            if ds.get("Rows") is None:
                continue  # not an image (structured report, presentation state, ...)
            uid = _str_or_none(ds.get("SeriesInstanceUID")) or _fallback_series_key(ds)
            series.setdefault(uid, []).append((p, ds))
    return series


def _fallback_note(uid: str, n_files: int) -> str:
    return (f"The {n_files} DICOM file(s) of the chosen series have no SeriesInstanceUID "
            "(anonymised export?); they were grouped by StudyInstanceUID, "
            "FrameOfReferenceUID, SeriesNumber, description, orientation and image size "
            f"(series key {uid}). Check that this is the series you meant.")


def _series_info(uid: str, items: list[tuple[Path, Any]]) -> DicomSeriesInfo:
    ds0 = items[0][1]
    positions = set()
    frames = 0
    for _p, ds in items:
        ipp = ds.get("ImagePositionPatient")
        if ipp is not None:
            positions.add(tuple(round(float(v), 3) for v in ipp))
        frames += int(ds.get("NumberOfFrames") or 1)
    n_slices = max(len(positions), frames if len(items) == 1 else len(positions), 1)
    try:
        number = int(ds0.get("SeriesNumber")) if ds0.get("SeriesNumber") is not None else None
    except (TypeError, ValueError):
        number = None
    return DicomSeriesInfo(
        series_uid=uid,
        modality=_str_or_none(ds0.get("Modality")),
        description=_str_or_none(ds0.get("SeriesDescription")),
        series_number=number,
        n_files=len(items),
        n_slices=n_slices,
        slice_thickness_mm=_float_or_none(ds0.get("SliceThickness")),
        files=tuple(str(p) for p, _ in items),
    )


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeriesInfo]:
    """Image series in a DICOM folder (scanned recursively), in the preferred order.

    The first entry is the series :func:`read_ct` chooses when not told (see the module
    docstring for the rule). Non-DICOM files are ignored.

    Raises
    ------
    InputError
        When ``folder`` is not a folder or holds no DICOM image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder.")
    infos = [_series_info(uid, items) for uid, items in _scan_dicom(folder).items()]
    if not infos:
        raise InputError(
            f"No DICOM image was found in '{folder}' (or its sub-folders). Point to the "
            "folder that holds the CT series, or to a NIfTI/NRRD file."
        )
    return _order_series(infos)


def _order_series(infos: list[DicomSeriesInfo]) -> list[DicomSeriesInfo]:
    def key(s: DicomSeriesInfo) -> tuple:
        return (
            0 if (s.modality or "").upper() == "CT" else 1,
            -s.n_slices,
            s.slice_thickness_mm if s.slice_thickness_mm is not None else np.inf,
            s.series_number if s.series_number is not None else 10**9,
            s.series_uid,
        )

    return sorted(infos, key=key)


def _sorted_slices(items: list[tuple[Path, Any]]) -> list[Path]:
    """Files of a single-frame series sorted along the slice normal; checks spacing."""
    ds0 = items[0][1]
    iop = ds0.get("ImageOrientationPatient")
    if iop is None or any(ds.get("ImagePositionPatient") is None for _, ds in items):
        raise InputError(
            "The DICOM series lacks ImageOrientationPatient/ImagePositionPatient, so the "
            "slice geometry is unknown. Export the series with full geometry tags."
        )
    row = np.array([float(v) for v in iop[:3]])
    col = np.array([float(v) for v in iop[3:6]])
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in ds.get("ImagePositionPatient")] for _, ds in items])
    for _, ds in items[1:]:
        other = ds.get("ImageOrientationPatient")
        if other is None or not np.allclose([float(v) for v in other], list(iop), atol=1e-3):
            raise InputError(
                "The slices of the DICOM series have different orientations (a localiser "
                "or a reformatted stack mixed in). Select a single axial series."
            )
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise InputError(
            "The DICOM series has two or more slices at the same position (several "
            "acquisitions or phases share one SeriesInstanceUID). Split the series or "
            "export the phase you want on its own."
        )
    if len(gaps) >= 2:
        median = float(np.median(gaps))
        worst = float(np.max(np.abs(gaps - median)) / median)
        if worst > MAX_SLICE_GAP_DEVIATION:
            raise InputError(
                f"The DICOM series has missing or unevenly spaced slices (gaps from "
                f"{gaps.min():.3g} to {gaps.max():.3g} mm). Volumes would be wrong; "
                "re-export the complete series."
            )
    if len(gaps) >= 1:
        steps = np.diff(pos[order], axis=0)
        inplane = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
        if np.max(inplane / np.maximum(gaps, 1e-6)) > MAX_SLICE_SHEAR:
            raise InputError(
                "The DICOM slices are sheared (gantry tilt): slice positions do not follow "
                "the slice normal. Resample the series to an orthogonal grid first (e.g. "
                "load it in 3D Slicer, which corrects gantry tilt, and save it as NRRD)."
            )
    return [items[i][0] for i in order]


def _choose_series(series: dict[str, list[tuple[Path, Any]]], series_uid: str | None,
                   folder: Path) -> tuple[str, list[str]]:
    infos = _order_series([_series_info(uid, items) for uid, items in series.items()])
    if not infos:
        raise InputError(
            f"No DICOM image was found in '{folder}' (or its sub-folders). Point to the "
            "folder that holds the CT series, or to a NIfTI/NRRD file."
        )
    notes: list[str] = []
    if series_uid is not None:
        chosen = next((s for s in infos if s.series_uid == series_uid), None)
        if chosen is None:
            listing = "; ".join(s.describe() for s in infos)
            raise InputError(
                f"Series {series_uid} is not in '{folder}'. Series found: {listing}."
            )
        if len(infos) > 1:
            others = "; ".join(s.describe() for s in infos if s is not chosen)
            notes.append(f"DICOM series chosen by the user: {chosen.describe()}. "
                         f"Other series in the folder: {others}.")
        return chosen.series_uid, notes
    chosen = infos[0]
    if len(infos) > 1:
        others = "; ".join(s.describe() for s in infos[1:])
        notes.append(
            f"The folder holds {len(infos)} image series; chosen by rule (CT series with "
            f"the most slices, ties: thinnest slices): {chosen.describe()}. Other series: "
            f"{others}. Choose another with series_uid (--series-uid)."
        )
    if (chosen.modality or "").upper() != "CT":
        notes.append(f"No CT series in the folder; read the {chosen.modality or 'unknown'} "
                     "series instead.")
    return chosen.series_uid, notes


def _dicom_metadata(path: Path, notes: list[str], source: str) -> CTMetadata:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    sex = _str_or_none(ds.get("PatientSex"))
    sex = sex.upper() if sex and sex.upper() in ("M", "F") else None
    height = _float_or_none(ds.get("PatientSize"))
    if height is not None and height <= 0:
        height = None
    if height is not None and 3.0 < height < 300.0:
        notes.append(f"PatientSize {height:g} is not in metres (DICOM unit); read as cm.")
        height = height / 100.0
    elif height is not None and height >= 300.0:
        notes.append(f"PatientSize {height:g} is not a plausible height; ignored.")
        height = None
    weight = _float_or_none(ds.get("PatientWeight"))
    if weight is not None and weight <= 0:
        weight = None
    return CTMetadata(
        modality=_str_or_none(ds.get("Modality")),
        kvp=_float_or_none(ds.get("KVP")),
        manufacturer=_str_or_none(ds.get("Manufacturer")),
        manufacturer_model=_str_or_none(ds.get("ManufacturerModelName")),
        patient_sex=sex,
        patient_age_years=parse_dicom_age(_str_or_none(ds.get("PatientAge"))),
        patient_height_m=height,
        patient_weight_kg=weight,
        study_date=_str_or_none(ds.get("StudyDate")),
        contrast_agent=_str_or_none(ds.get("ContrastBolusAgent")),
        slice_thickness_mm=_float_or_none(ds.get("SliceThickness")),
        series_instance_uid=_str_or_none(ds.get("SeriesInstanceUID")),
        series_description=_str_or_none(ds.get("SeriesDescription")),
        study_instance_uid=_str_or_none(ds.get("StudyInstanceUID")),
        patient_id=_str_or_none(ds.get("PatientID")),
        source=source,
        notes=tuple(notes),
    )


def _read_dicom(folder: Path, series_uid: str | None, only_file: Path | None = None) -> CTImage:
    sitk = _sitk()
    series = _scan_dicom(folder)
    if only_file is not None and series_uid is None:
        for uid, items in series.items():
            if any(p.resolve() == only_file.resolve() for p, _ in items):
                series_uid = uid
                break
    uid, notes = _choose_series(series, series_uid, folder)
    items = series[uid]
    if uid.startswith(NO_UID_PREFIX):
        notes.append(_fallback_note(uid, len(items)))
    multiframe = len(items) == 1 and int(items[0][1].get("NumberOfFrames") or 1) > 1
    try:
        if multiframe:
            image = sitk.ReadImage(str(items[0][0]))
            files = [items[0][0]]
        else:
            files = _sorted_slices(items) if len(items) > 1 else [items[0][0]]
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in files])
            image = reader.Execute()
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"Cannot read the DICOM series {uid} in '{folder}': a file is damaged, "
            f"truncated or uses an unsupported compression ({detail}). Re-export the series."
        ) from None
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and len(files) == 1
                                     and not multiframe):
        raise InputError(
            f"The DICOM series {uid} has a single slice; CTMuscleBone needs a volume "
            "(a stack of slices). Choose the full axial series."
        )
    geometry = _geometry(image, f"DICOM series {uid} in {folder}")
    hu = _pixel_array_for_ct(image, f"DICOM series {uid} in {folder}")
    ds0 = items[0][1]
    has_rescale = ds0.get("RescaleSlope") is not None and ds0.get("RescaleIntercept") is not None
    modality = (_str_or_none(ds0.get("Modality")) or "").upper()
    if not has_rescale and not multiframe:
        if modality == "CT" and hu.size and float(hu.min()) >= 0:
            raise InputError(
                "The CT series has no RescaleSlope/RescaleIntercept and its values are all "
                ">= 0, so they are raw stored values, not Hounsfield units (air would read "
                "-1000 HU). Export the series with its rescale tags (or as HU NIfTI/NRRD)."
            )
        if modality == "CT":
            notes.append("The series has no RescaleSlope/RescaleIntercept; its values "
                         "already look like HU (air below 0) and are used as stored.")
    meta = _dicom_metadata(files[0], notes, source=str(folder))
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
        return _read_dicom(p, series_uid)
    if _suffix_of(p, IMAGE_SUFFIXES):
        if series_uid is not None:
            raise InputError("series_uid applies to DICOM input only, not to "
                             f"'{p.name}'.")
        return _read_image_ct(p)
    if _is_dicom_file(p):
        return _read_dicom(p.parent, series_uid, only_file=p)
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
