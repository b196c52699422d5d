"""Reading DICOM CT series: :func:`read_dicom` (used by :func:`CTMuscleBoneLib.io_ct.read_ct`).

A folder is scanned recursively; files that are not DICOM (or DICOMDIR, or DICOM
without pixel data) are ignored. Image files are grouped by SeriesInstanceUID; files
without one (anonymised exports) are grouped by :data:`FALLBACK_SERIES_TAGS`
(StudyInstanceUID, FrameOfReferenceUID, SeriesNumber, description, orientation, image
size, pixel spacing) and a note says so. When
the folder holds several series and ``series_uid`` is not given, the series is chosen
by this rule (stated in ``metadata.notes``, with the reason each other series was not
chosen):

1. never chosen automatically: localizers / scouts (ImageType ``LOCALIZER``, ``SCOUT``),
   secondary captures (SOP class Secondary Capture: dose screens, screenshots), dose
   reports and other structured reports, and series of another modality (MR, PT, ...);
   a folder holding only these is refused (CT only);
2. candidates, in tiers: original axial CT series first; then series whose modality
   says nothing (``OT``, empty: judged by their HU later); then, only when there is
   neither, fallback series: derived / secondary images (ImageType ``DERIVED``,
   ``SECONDARY``, reformats) and non-axial stacks (slice normal further than 45 degrees
   from the patient's superior axis);
3. within a tier the series with the most slices (distinct slice positions) wins;
4. ties: the smallest slice thickness; then the lowest SeriesNumber; then the UID.

A series chosen with ``series_uid`` is read whatever its tier, except a non-CT modality
or a non-image object (refused).

Compressed transfer syntaxes (JPEG-LS, JPEG 2000, JPEG lossless, RLE, ...) of
single-frame series are decoded with pydicom and the decoders of the ``dicom`` extra
(pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg, pylibjpeg-rle, pyjpegls); a missing
decoder is an :class:`InputError` naming ``pip install "ctmusclebone[dicom]"``.
Uncompressed single-frame series are read with SimpleITK (GDCM); multi-frame files
(Enhanced CT) with pydicom, frame by frame, each frame's position and rescale taken from
its functional groups (:func:`_frame_headers`). Slices (or frames) must have a
PixelSpacing, be evenly spaced (no missing slice), at distinct positions and not
sheared (gantry tilt), and acquisitions of one series must not overlap; the refusals
name the slice positions and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .image import CTImage, CTMetadata, Geometry
from .io_common import (
    UNDECIDED_MODALITIES,
    _float_or_none,
    _geometry,
    _pixel_array_for_ct,
    _sitk,
    _str_or_none,
    refuse_non_finite,
)

#: SOP classes read as CT images (DICOM PS3.4 B.5): CT Image Storage, Enhanced CT.
CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")

#: Largest relative deviation of one slice gap from the median gap before a series is
#: refused as having missing or unevenly spaced slices (a CTMuscleBone choice: 10 %
#: tolerates rounding of positions in the header, not a missing slice).
MAX_SLICE_GAP_DEVIATION = 0.10

#: Largest in-plane shift between successive slices, as a fraction of the slice gap,
#: before the series is refused as gantry-tilted (sheared) (CTMuscleBone choice).
MAX_SLICE_SHEAR = 0.02

#: Largest difference in PixelSpacing (mm) between the slices of one series that is taken
#: as rounding in the header (project choice); a larger one refuses the series.
PIXEL_SPACING_TOLERANCE_MM = 1e-3


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


_SCAN_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality",
    "SeriesNumber", "SeriesDescription", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceThickness", "Rows", "Columns", "NumberOfFrames", "InstanceNumber", "RescaleSlope",
    "RescaleIntercept", "FrameOfReferenceUID", "PixelSpacing", "AcquisitionNumber",
    "ImageType", "GantryDetectorTilt",
]

#: Tags that identify a series when SeriesInstanceUID is empty or absent (anonymised
#: exports): files agreeing on all of them are taken as one series (CTMuscleBone rule).
FALLBACK_SERIES_TAGS: tuple[str, ...] = (
    "StudyInstanceUID", "FrameOfReferenceUID", "SeriesNumber", "Modality",
    "SeriesDescription", "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing",
)
#: Prefix of the series key made from :data:`FALLBACK_SERIES_TAGS`.
NO_UID_PREFIX = "no-uid-"
#: Suffix of the key of localizer images split off a series (:func:`_split_localizers`).
LOCALIZER_KEY_SUFFIX = " (its localizer images)"

#: SOP class UID prefixes never read as a CT volume (DICOM PS3.4 B.5): Secondary
#: Capture Image Storage (``...1.1.7``) and its multi-frame variants (``...1.1.7.1`` to
#: ``.7.4``); structured reports (``...1.1.88.*``, the X-Ray Radiation Dose SR is
#: ``...1.1.88.67``).
SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
STRUCTURED_REPORT_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
RADIATION_DOSE_SR_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.67",
                                 "1.2.840.10008.5.1.4.1.1.88.68")
#: Smallest |cosine| between the slice normal and the patient's superior axis for a
#: series to count as axial (cos 45 deg: the normal is nearer to superior than to any
#: other patient axis; gantry-tilted axial series stay axial). CTMuscleBone choice.
AXIAL_MIN_COSINE = float(np.cos(np.radians(45.0)))
#: Modalities that are images of another kind: refused (not judged by their values).
#: Anything but CT and :data:`UNDECIDED_MODALITIES` is such a modality.
_CT_MODALITY = "CT"
#: The install hint for missing DICOM decoders (the ``dicom`` extra of pyproject.toml).
DICOM_EXTRA_HINT = 'pip install "ctmusclebone[dicom]"'


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
    """One series found in a DICOM folder.

    Attributes
    ----------
    series_uid : str
    modality : str or None
    description : str or None
    series_number : int or None
    n_files : int
        Files of the series.
    n_slices : int
        Distinct slice positions (frames for a multi-frame file; 0 for a non-image).
    slice_thickness_mm : float or None
    files : tuple of str
        The files, in no particular order.
    skip_reason : str or None
        Why the series is never chosen automatically (localizer, dose report, secondary
        capture, not CT, ...); None for a CT volume candidate.
    fallback_reason : str or None
        Why the series is only a fallback candidate (derived / secondary image, not
        axial): chosen only when no original axial CT series is in the folder.
    """

    series_uid: str
    modality: str | None
    description: str | None
    series_number: int | None
    n_files: int
    n_slices: int
    slice_thickness_mm: float | None
    files: tuple[str, ...]
    skip_reason: str | None = None
    fallback_reason: str | None = None

    def describe(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        thick = (f", {self.slice_thickness_mm:g} mm slices"
                 if self.slice_thickness_mm is not None else "")
        num = f"#{self.series_number} " if self.series_number is not None else ""
        what = f"{self.n_slices} slices" if self.n_slices else f"{self.n_files} file(s)"
        return f"{num}{self.modality or '?'}{desc} ({what}{thick}; UID {self.series_uid})"

    @property
    def tier(self) -> int:
        """Choice tier: 0 original axial CT, 1 undecided modality, 2 fallback, 3 never."""
        if self.skip_reason is not None:
            return 3
        if self.fallback_reason is not None:
            return 2
        return 0 if (self.modality or "").upper() == _CT_MODALITY else 1


def _looks_like_raw_dicom(head: bytes) -> bool:
    """Whether bytes start like a DICOM data set without preamble and file meta (old
    exports, often without a file name ending): a little-endian tag of group 0x0008
    (identifying elements, the first in every image), explicit VR letters or an
    implicit-VR length."""
    if len(head) < 8 or head[:2] != b"\x08\x00":
        return False
    element = int.from_bytes(head[2:4], "little")
    if element > 0x0100:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return int.from_bytes(head[4:8], "little") < 1 << 16  # implicit VR: a sane length


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if _looks_like_raw_dicom(head):
        return True
    # Files without the 128-byte preamble (old ACR-NEMA style): ask pydicom to try.
    return path.suffix.lower() in (".dcm", ".ima", ".dicom")


def _scan_dicom(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    """DICOM files of ``folder`` grouped into series: series key -> [(path, header)].

    The key is the SeriesInstanceUID; files without one are grouped by
    :data:`FALLBACK_SERIES_TAGS` under a key starting with :data:`NO_UID_PREFIX`.
    Non-image objects (structured reports, presentation states) are kept, so that the
    series choice can say why they were skipped.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[tuple[Path, Any]]] = {}
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            p = Path(root) / name
            if name.upper() == "DICOMDIR" or not is_dicom_file(p):
                continue
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_SCAN_TAGS,
                                     force=True)
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError,
                    AttributeError, KeyError):
                continue
            if ds.get("Rows") is None and ds.get("SOPClassUID") is None:
                continue  # not a DICOM object we can name
            uid = _str_or_none(ds.get("SeriesInstanceUID")) or _fallback_series_key(ds)
            series.setdefault(uid, []).append((p, ds))
    return _split_localizers(series)


def _is_localizer(ds: Any) -> bool:
    image_type = _image_type(ds)
    return "LOCALIZER" in image_type or "SCOUT" in image_type


def _split_localizers(series: dict[str, list[tuple[Path, Any]]]
                      ) -> dict[str, list[tuple[Path, Any]]]:
    """Localizer images that share a series with axial images become their own group.

    Some scanners store the scout (ImageType ``LOCALIZER``) under the axial series' UID;
    left in, it would refuse the series (slices of different orientations) or, as its
    first file, make the whole series look like a localizer. The key of the split group
    is the UID plus :data:`LOCALIZER_KEY_SUFFIX`; ``--series UID`` reads the axial images.
    """
    out: dict[str, list[tuple[Path, Any]]] = {}
    for uid, items in series.items():
        scouts = [it for it in items if _is_localizer(it[1])]
        if scouts and len(scouts) < len(items):
            out[uid] = [it for it in items if not _is_localizer(it[1])]
            out[uid + LOCALIZER_KEY_SUFFIX] = scouts
        else:
            out[uid] = items
    return out


def _image_type(ds: Any) -> list[str]:
    value = ds.get("ImageType")
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


def _slice_normal(ds: Any) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    try:
        row = np.array([float(v) for v in iop[:3]])
        col = np.array([float(v) for v in iop[3:6]])
    except (TypeError, ValueError):
        return None
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else None


def _skip_reasons(items: list[tuple[Path, Any]], n_slices: int) -> tuple[str | None, str | None]:
    """(skip reason, fallback reason) of a series; see :class:`DicomSeriesInfo`."""
    ds0 = items[0][1]
    sop = _str_or_none(ds0.get("SOPClassUID")) or ""
    modality = (_str_or_none(ds0.get("Modality")) or "").upper()
    image_type = _image_type(ds0)
    description = (_str_or_none(ds0.get("SeriesDescription")) or "").lower()
    if sop in RADIATION_DOSE_SR_SOP_CLASSES:
        return "radiation dose structured report (RDSR), not an image", None
    if sop.startswith(STRUCTURED_REPORT_SOP_PREFIX) or modality == "SR":
        return "structured report, not an image", None
    if ds0.get("Rows") is None:
        return f"not an image (SOP class {sop or 'unknown'})", None
    if sop == SECONDARY_CAPTURE_SOP_PREFIX or sop.startswith(SECONDARY_CAPTURE_SOP_PREFIX + "."):
        if "dose" in description or "SCREEN SAVE" in image_type:
            return "dose screen or screen capture (secondary capture)", None
        return "secondary capture (a picture of images, no geometry or HU)", None
    if "LOCALIZER" in image_type or "SCOUT" in image_type or "topogram" in description:
        return "localizer / scout (ImageType " + "\\".join(image_type) + ")", None
    if modality and modality != _CT_MODALITY and modality not in UNDECIDED_MODALITIES:
        return f"not CT (modality {modality})", None
    fallback = []
    if image_type[:1] == ["DERIVED"] or image_type[1:2] == ["SECONDARY"] or any(
            t in image_type for t in ("REFORMATTED", "MPR", "MIP", "PROJECTION IMAGE")):
        fallback.append("derived/secondary image (ImageType " + "\\".join(image_type) + ")")
    normal = _slice_normal(ds0)
    if normal is not None and abs(float(normal[2])) < AXIAL_MIN_COSINE:
        plane = ("sagittal" if abs(normal[0]) >= abs(normal[1]) else "coronal")
        fallback.append(f"not axial ({plane} slices)")
    if n_slices <= 1 and int(ds0.get("NumberOfFrames") or 1) <= 1:
        fallback.append("a single slice")
    return None, ("; ".join(fallback) or None)


def _fallback_note(uid: str, n_files: int) -> str:
    return (f"The {n_files} DICOM file(s) of the chosen series have no SeriesInstanceUID "
            "(anonymised export?); they were grouped by StudyInstanceUID, "
            "FrameOfReferenceUID, SeriesNumber, description, orientation and image size "
            f"(series key {uid}). Check that this is the series you meant.")


def _series_info(uid: str, items: list[tuple[Path, Any]]) -> DicomSeriesInfo:
    ds0 = items[0][1]
    positions = set()
    frames = 0
    n_images = 0
    for _p, ds in items:
        if ds.get("Rows") is None:
            continue
        n_images += 1
        ipp = ds.get("ImagePositionPatient")
        if ipp is not None:
            positions.add(tuple(round(float(v), 3) for v in ipp))
        frames += int(ds.get("NumberOfFrames") or 1)
    n_slices = (max(len(positions), frames if n_images == 1 else len(positions), 1)
                if n_images else 0)
    try:
        number = int(ds0.get("SeriesNumber")) if ds0.get("SeriesNumber") is not None else None
    except (TypeError, ValueError):
        number = None
    skip, fallback = _skip_reasons(items, n_slices)
    return DicomSeriesInfo(
        series_uid=uid,
        modality=_str_or_none(ds0.get("Modality")),
        description=_str_or_none(ds0.get("SeriesDescription")),
        series_number=number,
        n_files=len(items),
        n_slices=n_slices,
        slice_thickness_mm=_float_or_none(ds0.get("SliceThickness")),
        files=tuple(str(p) for p, _ in items),
        skip_reason=skip,
        fallback_reason=fallback,
    )


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeriesInfo]:
    """Image series in a DICOM folder (scanned recursively), in the preferred order.

    The first entry is the series :func:`read_ct` chooses when not told (see the module
    docstring for the rule); series that are never chosen automatically (localizers,
    secondary captures, non-CT) come last with their ``skip_reason``. Non-image objects
    (dose reports and other structured reports) and non-DICOM files are not listed.

    Raises
    ------
    InputError
        When ``folder`` is not a folder or holds no DICOM image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder.")
    infos = [i for i in (_series_info(uid, items) for uid, items in _scan_dicom(folder).items())
             if i.n_slices > 0]
    if not infos:
        raise InputError(
            f"No DICOM image was found in '{folder}' (or its sub-folders). Point to the "
            "folder that holds the CT series, or to a NIfTI/NRRD file."
        )
    return _order_series(infos)


def _order_series(infos: list[DicomSeriesInfo]) -> list[DicomSeriesInfo]:
    def key(s: DicomSeriesInfo) -> tuple:
        return (
            s.tier,
            -s.n_slices,
            s.slice_thickness_mm if s.slice_thickness_mm is not None else np.inf,
            s.series_number if s.series_number is not None else 10**9,
            s.series_uid,
        )

    return sorted(infos, key=key)


def _positions_text(values_mm: Iterable[float], limit: int = 8) -> str:
    values = [f"{v:.4g}" for v in values_mm]
    if len(values) > limit:
        values = values[: limit - 1] + ["...", values[-1]]
    return ", ".join(values)


def _grid_value(ds: Any, what: str) -> tuple[float, ...] | None:
    """(row, column) PixelSpacing in mm or (Rows, Columns) of one slice; None if absent."""
    try:
        if what == "spacing":
            value = ds.get("PixelSpacing")
            return None if value is None else tuple(float(v) for v in value)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        return None if rows is None or cols is None else (int(rows), int(cols))
    except (TypeError, ValueError):
        return None


def _check_slice_grid(items: list[tuple[Path, Any]], uid: str) -> None:
    """Refuse a single-frame series whose slices disagree on PixelSpacing or on
    Rows/Columns: the volume would take one slice's grid for all (wrong volumes).

    The message names the series, each value found, how many slices have it and one
    file with it.
    """
    for what, name, unit, same in (
            ("size", "image size (Rows x Columns)", "",
             lambda a, b: a == b),
            ("spacing", "PixelSpacing", " mm",
             lambda a, b: len(a) == len(b) and np.allclose(a, b, rtol=1e-4,
                                                           atol=PIXEL_SPACING_TOLERANCE_MM))):
        groups: list[tuple[tuple[float, ...] | None, list[Path]]] = []
        for path, ds in items:
            value = _grid_value(ds, what)
            for ref, files in groups:
                if (value is None and ref is None) or (
                        value is not None and ref is not None and same(value, ref)):
                    files.append(path)
                    break
            else:
                groups.append((value, [path]))
        if len(groups) > 1:
            found = "; ".join(
                ("missing" if v is None else " x ".join(f"{x:g}" for x in v) + unit)
                + f" in {len(files)} slice(s) (e.g. {files[0].name})"
                for v, files in groups[:4])
            more = f" (and {len(groups) - 4} more values)" if len(groups) > 4 else ""
            raise InputError(
                f"The slices of the DICOM series {uid} disagree on {name}: {found}{more}. "
                "One grid would be applied to all slices and volumes would be wrong. "
                "Re-export the series from the archive, or choose another series with "
                "--series / series_uid."
            )


def _refuse_overlapping_acquisitions(items: list[tuple[Path, Any]], along: np.ndarray) -> None:
    """Refuse a series whose acquisitions (AcquisitionNumber) cover overlapping ranges.

    Two scans sharing one SeriesInstanceUID (phases, a repeated scan) whose slices lie
    at different but interleaved positions would otherwise be sorted into one evenly
    spaced volume mixing both scans (wrong HU, half the slice gap). Acquisitions that
    follow one another along the slice normal (step-and-shoot scans number each
    rotation) are one volume and pass. Slices without AcquisitionNumber are not judged.
    """
    numbers = [_str_or_none(ds.get("AcquisitionNumber")) for _, ds in items]
    if any(n is None for n in numbers) or len(set(numbers)) < 2:
        return
    ranges: dict[str, list[float]] = {}
    for number, z in zip(numbers, along, strict=True):
        lo_hi = ranges.setdefault(str(number), [float(z), float(z)])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], float(z)), max(lo_hi[1], float(z))
    spans = sorted(ranges.items(), key=lambda kv: kv[1][0])
    for (a, (_, a_hi)), (b, (b_lo, _)) in zip(spans, spans[1:], strict=False):
        if b_lo < a_hi - 1e-3:
            listed = "; ".join(
                f"AcquisitionNumber {n}: {numbers.count(n)} slices from {lo:.4g} to {hi:.4g} mm"
                for n, (lo, hi) in spans[:4])
            raise InputError(
                f"The DICOM series holds {len(spans)} acquisitions whose slice ranges "
                f"overlap ({listed}, along the slice normal): acquisitions {a} and {b} "
                "would be interleaved into one volume mixing two scans. Copy the files of "
                "the acquisition you want into a folder of their own and read that folder."
            )


def _sorted_slices(items: list[tuple[Path, Any]]) -> list[int]:
    """Indices of a single-frame series' files sorted along the slice normal.

    Checks one orientation, distinct positions, even gaps and no gantry tilt; the
    messages name the slice positions (mm along the slice normal) and what to do.
    """
    ds0 = items[0][1]
    iop = ds0.get("ImageOrientationPatient")
    if iop is None or any(ds.get("ImagePositionPatient") is None for _, ds in items):
        raise InputError(
            "The DICOM series lacks ImageOrientationPatient/ImagePositionPatient, so the "
            "slice geometry is unknown. Export the series with full geometry tags."
        )
    normal = _slice_normal(ds0)
    if normal is None:
        raise InputError("The DICOM series has an invalid ImageOrientationPatient (row and "
                         "column directions parallel). Export the series again.")
    pos = np.array([[float(v) for v in ds.get("ImagePositionPatient")] for _, ds in items])
    for _, ds in items[1:]:
        other = ds.get("ImageOrientationPatient")
        if other is None or not np.allclose([float(v) for v in other], list(iop), atol=1e-3):
            raise InputError(
                "The slices of the DICOM series have different orientations (a localiser "
                "or a reformatted stack mixed in). Select a single axial series."
            )
    along = pos @ normal
    _refuse_overlapping_acquisitions(items, along)
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    same = np.flatnonzero(gaps < 1e-3)
    if same.size:
        raise InputError(
            "The DICOM series has two or more slices at the same position ("
            f"{_positions_text(along[same])} mm along the slice normal): several "
            "acquisitions or phases share one SeriesInstanceUID. Split the series or "
            "export the phase you want on its own."
        )
    if len(gaps) >= 2:
        median = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - median) / median > MAX_SLICE_GAP_DEVIATION)
        if bad.size:
            where = "; ".join(f"{gaps[b]:.3g} mm between {along[b]:.4g} and "
                              f"{along[b + 1]:.4g}" for b in bad[:5])
            more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
            missing = int(round(float(np.sum(np.maximum(gaps[bad] / median - 1.0, 0.0)))))
            raise InputError(
                f"The DICOM series has missing or unevenly spaced slices: the usual gap is "
                f"{median:.3g} mm, but {where}{more} (slice positions in mm along the slice "
                f"normal; about {missing} slice(s) missing). Volumes would be wrong. "
                "Re-export the complete series from the archive (all images), or choose "
                "another series with --series / series_uid."
            )
    if len(gaps) >= 1:
        steps = np.diff(pos[order], axis=0)
        inplane = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
        shear = inplane / np.maximum(gaps, 1e-6)
        if np.max(shear) > MAX_SLICE_SHEAR:
            tilt_deg = float(np.degrees(np.arctan(np.median(shear))))
            header = _float_or_none(ds0.get("GantryDetectorTilt"))
            said = f"; GantryDetectorTilt says {header:g} deg" if header is not None else ""
            first, last = pos[order[0]], pos[order[-1]]
            raise InputError(
                f"The DICOM slices are sheared (gantry tilt of about {tilt_deg:.1f} deg"
                f"{said}): each slice is shifted {np.median(inplane):.3g} mm in-plane "
                f"against the next; the first slice is at ({_positions_text(first)}) mm and "
                f"the last at ({_positions_text(last)}) mm (LPS). Resample the series to an "
                "orthogonal grid first (e.g. load it in 3D Slicer, which corrects gantry "
                "tilt, and save it as NRRD), or use a series reconstructed without tilt."
            )
    return [int(i) for i in order]


def _choose_series(series: dict[str, list[tuple[Path, Any]]], series_uid: str | None,
                   folder: Path) -> tuple[str, list[str]]:
    every = _order_series([_series_info(uid, items) for uid, items in series.items()])
    infos = [s for s in every if s.n_slices > 0]
    if not infos:
        raise InputError(
            f"No DICOM image was found in '{folder}' (or its sub-folders). Point to the "
            "folder that holds the CT series, or to a NIfTI/NRRD file."
        )
    notes: list[str] = []
    if series_uid is not None:
        chosen = next((s for s in every if s.series_uid == series_uid), None)
        if chosen is None:
            listing = "; ".join(s.describe() for s in infos)
            raise InputError(
                f"Series {series_uid} is not in '{folder}'. Series found: {listing}."
            )
        if chosen.skip_reason is not None and (
                chosen.n_slices == 0 or chosen.skip_reason.startswith("not CT")):
            raise InputError(
                f"The series {chosen.describe()} cannot be read as a CT: "
                f"{chosen.skip_reason}. CTMuscleBone measures Hounsfield units on CT "
                "images only; choose the axial CT series."
            )
        if len(every) > 1:
            others = "; ".join(s.describe() for s in every if s is not chosen)
            notes.append(f"DICOM series chosen by the user: {chosen.describe()}. "
                         f"Other series in the folder: {others}.")
        if chosen.skip_reason or chosen.fallback_reason:
            notes.append(f"The chosen series is a {chosen.skip_reason or chosen.fallback_reason}"
                         "; check that it is the CT volume you meant.")
        return chosen.series_uid, notes
    chosen = every[0]
    if chosen.tier == 3:
        listing = "; ".join(f"{s.describe()}: {s.skip_reason}" for s in every)
        raise InputError(
            f"No CT image series in '{folder}'. Found: {listing}. CTMuscleBone measures "
            "Hounsfield units on CT only; point to the folder of the axial CT series (or "
            "to a NIfTI/NRRD CT)."
        )
    if len(every) > 1:
        lines = []
        for s in every[1:]:
            why = s.skip_reason or (
                f"fallback only: {s.fallback_reason}" if s.fallback_reason and chosen.tier < 2
                else "fewer slices or thicker slices than the chosen series")
            lines.append(f"{s.describe()}: {why}")
        n_other = len(every) - len(infos)
        other = f" and {n_other} non-image series" if n_other else ""
        notes.append(
            f"The folder holds {len(infos)} image series{other}; chosen by rule (original axial CT "
            f"series with the most slices, ties: thinnest slices, then lowest series "
            f"number): {chosen.describe()}. Not chosen: {'; '.join(lines)}. Choose another "
            "with series_uid (--series)."
        )
    if chosen.tier == 1:
        notes.append(f"The chosen series does not say it is CT (modality "
                     f"'{chosen.modality or ''}'); it is judged by its HU values.")
    if chosen.tier == 2:
        notes.append(f"No original axial CT series in the folder; read a fallback series "
                     f"({chosen.fallback_reason}). Check that it is the CT volume you meant.")
    return chosen.series_uid, notes


def _uid_list(values: Iterable[Any]) -> tuple[str, ...] | None:
    out = tuple(_str_or_none(v) or "" for v in values)
    return out if out and all(out) else None


def _functional_group_value(group: Any, tag: str) -> Any:
    """``tag`` from the first item of any sequence of a functional group item, or None."""
    for element in group:
        if element.VR == "SQ" and element.value and element.value[0].get(tag) is not None:
            return element.value[0].get(tag)
    return None


def _dicom_metadata(path: Path, notes: list[str], source: str,
                    sop_instance_uids: tuple[str, ...] | None = None) -> CTMetadata:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    if shared_seq:  # enhanced multi-frame: acquisition facts live in functional groups
        for tag in ("KVP", "SliceThickness", "ContrastBolusAgent"):
            if ds.get(tag) is None:
                value = _functional_group_value(shared_seq[0], tag)
                if value is not None:
                    setattr(ds, tag, value)
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
    try:
        number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") is not None else None
    except (TypeError, ValueError):
        number = None
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
        frame_of_reference_uid=_str_or_none(ds.get("FrameOfReferenceUID")),
        sop_class_uid=_str_or_none(ds.get("SOPClassUID")),
        sop_instance_uids=sop_instance_uids,
        series_number=number,
        patient_name=_str_or_none(ds.get("PatientName")),
        patient_birth_date=_str_or_none(ds.get("PatientBirthDate")),
        patient_age=_str_or_none(ds.get("PatientAge")),
        study_time=_str_or_none(ds.get("StudyTime")),
        study_id=_str_or_none(ds.get("StudyID")),
        study_description=_str_or_none(ds.get("StudyDescription")),
        accession_number=_str_or_none(ds.get("AccessionNumber")),
        referring_physician_name=_str_or_none(ds.get("ReferringPhysicianName")),
    )


def _transfer_syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _decoder_for(transfer_syntax: Any, where: str) -> Any:
    """The pydicom decoder of a compressed transfer syntax, or an InputError saying what
    to install (the ``dicom`` extra) or that the compression is not supported."""
    from pydicom.pixels import get_decoder

    name = getattr(transfer_syntax, "name", str(transfer_syntax))
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise InputError(
            f"{where} is compressed with '{name}' ({transfer_syntax}), which CTMuscleBone "
            "cannot decode. Export the series uncompressed (e.g. dcmtk 'dcmdjpeg' / gdcmconv "
            "--raw) or with JPEG-LS, JPEG 2000, JPEG lossless or RLE."
        ) from None
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in getattr(decoder, "missing_dependencies", []))
        raise InputError(
            f"{where} is compressed with '{name}' and no decoder for it is installed"
            f"{f' ({missing})' if missing else ''}. Install the DICOM decoders with: "
            f"{DICOM_EXTRA_HINT}"
        )
    return decoder


#: Where an enhanced multi-frame header keeps each per-frame value: (functional group
#: sequence, attribute). Looked up in the frame's PerFrameFunctionalGroupsSequence item,
#: then in the SharedFunctionalGroupsSequence, then at the top level (DICOM PS3.3 C.7.6.16).
_FRAME_TAGS: tuple[tuple[str, str], ...] = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness"),
    ("PixelValueTransformationSequence", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept"),
)


def _is_multiframe(ds: Any) -> bool:
    try:
        return int(ds.get("NumberOfFrames") or 1) > 1 or (
            ds.get("PerFrameFunctionalGroupsSequence") is not None)
    except (TypeError, ValueError):
        return False


def _frame_headers(path: Path, ds: Any) -> list[tuple[Path, Any]]:
    """One small header per frame of a multi-frame file (Enhanced / Legacy Converted CT).

    Each holds the frame's ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
    SliceThickness, RescaleSlope/RescaleIntercept (per-frame functional group, else
    shared group, else top level), Rows, Columns, Modality, GantryDetectorTilt and
    the attribute ``frame_index`` (the frame's 0-based index in the file), so that the checks of a
    single-frame series (:func:`_check_slice_grid`, :func:`_sorted_slices`) apply to
    frames unchanged. A file that is not multi-frame is returned as it is.
    """
    if not _is_multiframe(ds):
        return [(path, ds)]
    import pydicom
    from pydicom.dataset import Dataset

    full = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    n = int(full.get("NumberOfFrames") or 1)
    shared_seq = full.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per = full.get("PerFrameFunctionalGroupsSequence") or []
    frames = []
    for k in range(n):
        groups = [g for g in ((per[k] if k < len(per) else None), shared) if g is not None]
        header = Dataset()
        for seq, tag in _FRAME_TAGS:
            value = None
            for group in groups:
                items = group.get(seq)
                if items and items[0].get(tag) is not None:
                    value = items[0].get(tag)
                    break
            if value is None:
                value = full.get(tag)
            if value is not None:
                setattr(header, tag, value)
        for tag in ("Rows", "Columns", "Modality", "GantryDetectorTilt", "SOPClassUID",
                    "SeriesInstanceUID"):
            if full.get(tag) is not None:
                setattr(header, tag, full.get(tag))
        header.frame_index = k  # a Python attribute, not a DICOM element
        frames.append((path, header))
    return frames


def _read_slices_pydicom(items: list[tuple[Path, Any]], order: list[int], uid: str,
                         folder: Path) -> tuple[np.ndarray, Geometry]:
    """Decode a series with pydicom: compressed single-frame files and multi-frame files.

    ``items`` are (file, header) per slice; a header with ``frame_index`` is one frame of
    a multi-frame file (:func:`_frame_headers`). Rescale slope and intercept come from
    each slice's header (per frame for multi-frame files). Returns HU in ITK index order
    ``[i, j, k]`` (``i`` = column, ``j`` = row, ``k`` = slice sorted along the slice
    normal) and the geometry from the headers: origin = ImagePositionPatient of the
    first sorted slice, direction columns = row direction, column direction and slice
    normal, spacing = (column spacing, row spacing, median slice gap) -- the same
    convention as SimpleITK's series reader.
    """
    import pydicom

    where = f"The DICOM series {uid} in '{folder}'"
    decoded: dict[Path, np.ndarray] = {}
    planes = []
    for idx in order:
        path, header = items[idx]
        frame = getattr(header, "frame_index", None)
        stored = decoded.get(path)
        if stored is None:
            try:
                ds = pydicom.dcmread(path, force=True)
            except (ValueError, OSError, EOFError, TypeError, AttributeError, KeyError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise InputError(f"Cannot read '{path}' of {where}: the file is damaged "
                                 f"({detail}). Re-export the series.") from None
            syntax = _transfer_syntax(ds)
            if bool(getattr(syntax, "is_compressed", False)):
                _decoder_for(syntax, where)  # InputError naming what to install
            try:
                samples = int(ds.get("SamplesPerPixel") or 1)
                stored = ds.pixel_array
            except (RuntimeError, ValueError, OSError, EOFError, TypeError, AttributeError,
                    KeyError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise InputError(
                    f"Cannot decode '{path}' of {where}: the file is damaged or truncated "
                    f"({detail}). Re-export the series."
                ) from None
            if samples != 1 or stored.ndim not in (2, 3) or (
                    frame is None and stored.ndim != 2):
                raise InputError(
                    f"'{path}' holds {'colour' if samples != 1 else f'{stored.ndim}-D'} "
                    "pixel data; a CT slice is a grey-scale image. Choose the CT series.")
            if frame is not None:
                if stored.ndim == 2:
                    stored = stored[None]
                decoded[path] = stored  # several frames of this file follow
        plane = stored if frame is None else stored[int(frame)]
        slope = _float_or_none(header.get("RescaleSlope"))
        intercept = _float_or_none(header.get("RescaleIntercept"))
        if slope is not None and intercept is not None:
            if float(slope).is_integer() and float(intercept).is_integer():
                plane = plane.astype(np.int32) * int(slope) + int(intercept)
            else:
                plane = (plane.astype(np.float64) * slope + intercept).astype(np.float32)
        else:
            plane = plane.astype(np.int32)
        planes.append(np.asarray(plane).T)  # rows = j, columns = i -> [i, j]
    if any(p.dtype.kind == "f" for p in planes):
        planes = [p.astype(np.float32) for p in planes]
    hu = np.stack(planes, axis=2)
    if hu.dtype.kind == "i" and hu.size and -32768 <= hu.min() and hu.max() <= 32767:
        hu = hu.astype(np.int16)
    ds0 = items[order[0]][1]
    iop = [float(v) for v in ds0.get("ImageOrientationPatient")]
    row, col = np.array(iop[:3]), np.array(iop[3:6])
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in items[i][1].get("ImagePositionPatient")]
                    for i in order])
    gaps = np.diff(pos @ normal)
    spacing = ds0.get("PixelSpacing")
    if spacing is None:
        raise InputError(f"{where} has no PixelSpacing, so the voxel size is unknown. "
                         "Export the series with its geometry tags.")
    dz = float(np.median(gaps)) if gaps.size else (_float_or_none(ds0.get("SliceThickness"))
                                                  or 1.0)
    geometry = Geometry(shape=hu.shape, spacing_mm=(float(spacing[1]), float(spacing[0]), dz),
                        origin_mm=tuple(pos[0]),
                        direction=np.stack([row, col, normal], axis=1))
    refuse_non_finite(hu, where)
    return hu, geometry


def _single_slice_message(series: dict[str, list[tuple[Path, Any]]], uid: str) -> str:
    """Why a single-slice series cannot be read, naming a folder of one-slice series."""
    text = (f"The DICOM series {uid} has a single slice; CTMuscleBone needs a volume (a "
            "stack of slices).")
    study = _str_or_none(series[uid][0][1].get("StudyInstanceUID"))
    singles = [u for u, items in series.items()
               if len(items) == 1 and items[0][1].get("Rows") is not None
               and not _is_localizer(items[0][1])
               and _str_or_none(items[0][1].get("StudyInstanceUID")) == study]
    if len(singles) >= 3:
        return (f"{text} The folder holds {len(singles)} single-slice series of this study: "
                "each image seems to have its own SeriesInstanceUID (an export that split "
                "the series). Re-export the images as one series from the PACS or "
                "workstation, or convert them to one NIfTI volume (e.g. dcm2niix) and give "
                "that.")
    return f"{text} Choose the full axial series."


def read_dicom(folder: Path, series_uid: str | None, only_file: Path | None = None) -> CTImage:
    sitk = _sitk()
    series = _scan_dicom(folder)
    if only_file is not None and series_uid is None:
        for uid, items in series.items():
            if any(p.resolve() == only_file.resolve() for p, _ in items):
                series_uid = uid
                break
    uid, notes = _choose_series(series, series_uid, folder)
    items = [(p, ds) for p, ds in series[uid] if ds.get("Rows") is not None]
    if uid.startswith(NO_UID_PREFIX):
        notes.append(_fallback_note(uid, len(items)))
    multiframe = any(_is_multiframe(ds) for _, ds in items)
    transfer_syntax = _transfer_syntax(items[0][1])
    compressed = bool(getattr(transfer_syntax, "is_compressed", False))
    sop_uids: tuple[str, ...] | None = None
    image = None
    try:
        if multiframe:
            # Per-frame geometry and rescale are read from the functional groups here:
            # SimpleITK (GDCM) silently gives 1 mm spacing for unsorted or unevenly
            # spaced frames and applies one rescale to all frames.
            items = [frame for p, ds in items for frame in _frame_headers(p, ds)]
        if len(items) > 1:
            _check_slice_grid(items, uid)
        if items[0][1].get("PixelSpacing") is None:
            raise InputError(
                f"The DICOM series {uid} in '{folder}' has no PixelSpacing, so the in-plane "
                "voxel size is unknown (readers would silently use 1 mm and areas and "
                "volumes would be wrong). Export the series with its PixelSpacing tag."
            )
        order = _sorted_slices(items) if len(items) > 1 else [0]
        files = list(dict.fromkeys(items[i][0] for i in order))
        if not multiframe:
            sop_uids = _uid_list(items[i][1].get("SOPInstanceUID") for i in order)
        if len(order) == 1:
            raise InputError(_single_slice_message(series, uid))
        if compressed or multiframe:
            hu, geometry = _read_slices_pydicom(items, order, uid, folder)
            if compressed:
                kind = " (multi-frame)" if multiframe else ""
                notes.append(f"Decoded from {transfer_syntax.name}{kind} with pydicom.")
            else:
                notes.append("Multi-frame DICOM read with pydicom (positions and rescale of "
                             "each frame from its functional groups).")
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in files])
            # the slice grid was judged above (_check_slice_grid): ITK's own warning on
            # small spacing differences would only print to the terminal
            shown = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
            try:
                image = reader.Execute()
            finally:
                sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        hint = (f" If the series is compressed, install the decoders: {DICOM_EXTRA_HINT}."
                if compressed else "")
        raise InputError(
            f"Cannot read the DICOM series {uid} in '{folder}': a file is damaged, "
            f"truncated or uses an unsupported compression ({detail}). Re-export the "
            f"series.{hint}"
        ) from None
    if image is not None:
        if image.GetDimension() == 2 or (image.GetDimension() == 3 and len(files) == 1):
            raise InputError(_single_slice_message(series, uid))
        geometry = _geometry(image, f"DICOM series {uid} in {folder}")
        hu = _pixel_array_for_ct(image, f"DICOM series {uid} in {folder}")
    ds0 = items[0][1]
    has_rescale = ds0.get("RescaleSlope") is not None and ds0.get("RescaleIntercept") is not None
    modality = (_str_or_none(ds0.get("Modality")) or "").upper()
    if not has_rescale:
        if modality == "CT" and hu.size and float(hu.min()) >= 0:
            raise InputError(
                "The CT series has no RescaleSlope/RescaleIntercept and its values are all "
                ">= 0, so they are raw stored values, not Hounsfield units (air would read "
                "-1000 HU). Export the series with its rescale tags (or as HU NIfTI/NRRD)."
            )
        if modality == "CT":
            notes.append("The series has no RescaleSlope/RescaleIntercept; its values "
                         "already look like HU (air below 0) and are used as stored.")
    meta = _dicom_metadata(files[0], notes, source=str(folder), sop_instance_uids=sop_uids)
    return CTImage(hu=hu, geometry=geometry, metadata=meta)
