"""The source CT images a DICOM SEG refers to.

A DICOM Segmentation is defined on source images: its frames refer to them (per-frame
Derivation Image / Source Image references) and share their Frame of Reference. Two
cases (the rule of :func:`source_images`):

* **Referenced source** -- the CT was read from a single-frame DICOM series whose
  SOPInstanceUIDs are known for every slice (:attr:`CTMetadata.sop_instance_uids`) and
  the output is not de-identified: the headers are rebuilt from the CT's geometry and
  header facts with the source's Study, Series, Frame of Reference and SOP Instance
  UIDs, so the SEG and SR refer to the original series in the archive. No image is
  written.
* **Derived source** -- the input was NIfTI/NRRD/MetaImage (no DICOM source), a
  multi-frame file, or ``deidentify=True``: a new study, series and frame of reference
  (new UIDs) are made and the CT is written beside the SEG as a DICOM CT series
  (``ct/``, one CT Image Storage file per slice, HU rounded to integers, RescaleSlope 1,
  RescaleIntercept 0), so that every reference of the SEG and SR resolves and a DICOM
  viewer can show the segmentation over its CT.

Geometry: array axis 0 (``i``) runs along a row (DICOM column index), axis 1 (``j``)
down the columns (row index), axis 2 (``k``) is the slice. Slice ``k`` has
ImagePositionPatient = origin + k * spacing[2] * direction[:, 2],
ImageOrientationPatient = (direction[:, 0], direction[:, 1]) and PixelSpacing =
(spacing[1], spacing[0]) (row spacing first, DICOM PS3.3 C.7.6.2.1.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..image import CTImage, CTMetadata

#: SOP class of the written derived CT slices (DICOM PS3.4 B.5: CT Image Storage).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Enhanced CT Image Storage: a multi-frame source, not referenced slice by slice.
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: Series number of the derived CT series (a CTMuscleBone choice).
DERIVED_CT_SERIES_NUMBER = 9001


@dataclass
class SourceImages:
    """Source CT slice headers of a SEG, in array order along axis 2.

    Attributes
    ----------
    datasets : list of pydicom.Dataset
        One header per slice (no pixel data unless ``derived``).
    derived : bool
        True when new UIDs were made (the CT must be written as a DICOM series for the
        references to resolve, :func:`write_source_series`).
    reason : str
        Why the source is referenced or derived (for messages and tests).
    """

    datasets: list[Any]
    derived: bool
    reason: str


def _dicom_date_time(now: datetime) -> tuple[str, str]:
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def source_images(ct: CTImage, deidentify: bool = False) -> SourceImages:
    """Headers of the source slices of ``ct`` (see the module docstring for the rule).

    Parameters
    ----------
    ct : CTImage
        ``hu`` (n0, n1, n2), HU; geometry LPS mm; metadata from the reader.
    deidentify : bool
        De-identified output: patient identifiers, dates and every source UID are
        left out (``CTMuscleBoneLib.deidentify.deidentify_metadata``), and the source
        is derived (new UIDs).

    Returns
    -------
    SourceImages
    """
    from pydicom.uid import generate_uid

    meta = ct.metadata
    if deidentify:
        from ..deidentify import deidentify_metadata

        meta = deidentify_metadata(meta)
    n_slices = ct.geometry.shape[2]
    uids = meta.sop_instance_uids
    referenced = (
        not deidentify
        and uids is not None and len(uids) == n_slices
        and bool(meta.study_instance_uid) and bool(meta.series_instance_uid)
        and bool(meta.frame_of_reference_uid)
        and (meta.sop_class_uid or CT_IMAGE_STORAGE) != ENHANCED_CT_IMAGE_STORAGE
    )
    if referenced:
        reason = (f"refers to the source DICOM series {meta.series_instance_uid} "
                  f"({n_slices} slices, frame of reference {meta.frame_of_reference_uid})")
        study_uid, series_uid = meta.study_instance_uid, meta.series_instance_uid
        for_uid = meta.frame_of_reference_uid
        sop_class = meta.sop_class_uid or CT_IMAGE_STORAGE
        sop_uids = list(uids)  # type: ignore[arg-type]
    else:
        if deidentify:
            reason = ("de-identified output: a de-identified copy of the CT is written as a "
                      "new DICOM series (new UIDs, no dates) and referenced")
        elif meta.series_instance_uid or meta.sop_instance_uids:
            reason = ("the DICOM source cannot be referred to slice by slice (multi-frame "
                      "file, unknown instances or no frame of reference): the CT is "
                      "written as a new DICOM series")
        else:
            reason = ("the input was not DICOM: the CT is written as a new DICOM series (new "
                      "study, series and frame of reference UIDs) and referenced")
        study_uid = generate_uid()
        series_uid, for_uid = generate_uid(), generate_uid()
        sop_class = CT_IMAGE_STORAGE
        sop_uids = [generate_uid() for _ in range(n_slices)]
    datasets = [_slice_header(ct, meta, k, study_uid, series_uid, for_uid, sop_class,
                              sop_uids[k], derived=not referenced, deidentify=deidentify)
                for k in range(n_slices)]
    return SourceImages(datasets=datasets, derived=not referenced, reason=reason)


def _slice_header(ct: CTImage, meta: CTMetadata, k: int, study_uid: str, series_uid: str,
                  for_uid: str, sop_class: str, sop_uid: str, derived: bool,
                  deidentify: bool) -> Any:
    from pydicom.dataset import Dataset

    g = ct.geometry
    direction = g.direction
    position = np.asarray(g.origin_mm) + k * g.spacing_mm[2] * direction[:, 2]
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    # patient module (PS3.3 C.7.1.1): type 2 attributes present, empty when unknown
    ds.PatientName = meta.patient_name or ""
    ds.PatientID = meta.patient_id or ""
    ds.PatientBirthDate = meta.patient_birth_date or ""
    ds.PatientSex = meta.patient_sex or ""
    if meta.patient_age:
        ds.PatientAge = meta.patient_age
    if meta.patient_height_m is not None:
        ds.PatientSize = f"{meta.patient_height_m:.3f}"
    if meta.patient_weight_kg is not None:
        ds.PatientWeight = f"{meta.patient_weight_kg:.1f}"
    # general study module (PS3.3 C.7.2.1)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = meta.study_date or ""
    ds.StudyTime = meta.study_time or ""
    ds.StudyID = meta.study_id or ""
    ds.AccessionNumber = meta.accession_number or ""
    ds.ReferringPhysicianName = meta.referring_physician_name or ""
    if meta.study_description:
        ds.StudyDescription = meta.study_description
    # series, frame of reference, equipment
    ds.SeriesInstanceUID = series_uid
    if derived:
        ds.SeriesNumber = DERIVED_CT_SERIES_NUMBER
        ds.SeriesDescription = "CT (DICOM copy by CTMuscleBone)"
    else:
        ds.SeriesNumber = meta.series_number if meta.series_number is not None else ""
        if meta.series_description:
            ds.SeriesDescription = meta.series_description
    ds.InstanceNumber = k + 1
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = ("" if derived else meta.manufacturer) or ""
    if derived:
        ds.SoftwareVersions = f"CTMuscleBone {__version__}"
    # image plane and pixel modules (PS3.3 C.7.6.2, C.7.6.3)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"] if derived else ["ORIGINAL", "PRIMARY",
                                                                      "AXIAL"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in
                                  list(direction[:, 0]) + list(direction[:, 1])]
    ds.PixelSpacing = [f"{g.spacing_mm[1]:.6f}", f"{g.spacing_mm[0]:.6f}"]
    ds.SliceThickness = f"{(meta.slice_thickness_mm or g.spacing_mm[2]):.6f}"
    ds.Rows, ds.Columns = g.shape[1], g.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "HU"
    # type 2 attributes of the CT Image and General Series modules (PS3.3 C.8.2.1,
    # C.7.3.1: PatientPosition is required for CT): present, empty when unknown
    ds.KVP = f"{meta.kvp:g}" if meta.kvp is not None and not deidentify else ""
    ds.AcquisitionNumber = ""
    ds.PatientPosition = ""
    if deidentify:
        mark_deidentified(ds)
    set_character_set(ds)
    return ds


#: Text value representations whose values follow SpecificCharacterSet (PS3.5 6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
#: Unicode in UTF-8 (PS3.3 C.12.1.1.2), for headers holding non-ASCII text.
UTF8_CHARACTER_SET = "ISO_IR 192"


def needs_utf8(texts: Any) -> bool:
    """True when any of ``texts`` (strings) has a character outside ASCII."""
    return any(not str(t).isascii() for t in texts if t is not None)


def set_character_set(ds: Any) -> None:
    """Declare UTF-8 (``ISO_IR 192``) on a dataset whose text has non-ASCII characters.

    Without SpecificCharacterSet a DICOM reader takes text as ASCII (ISO-IR 6):
    pydicom then writes ``Müller`` as Latin-1 bytes and ``山田`` as ``??``, so the
    SEG and SR would name another patient than the source. ASCII-only headers are
    left without the attribute (the default).
    """
    texts = [e.value for e in ds.iterall() if e.VR in _TEXT_VRS and e.value]
    if needs_utf8(texts):
        ds.SpecificCharacterSet = UTF8_CHARACTER_SET


def mark_deidentified(ds: Any) -> None:
    """Set PatientIdentityRemoved and the de-identification method (PS3.15 E.1) on a
    dataset whose identifiers were left out."""
    from pydicom.dataset import Dataset

    from .codes import DEIDENTIFICATION_CODES

    ds.PatientIdentityRemoved = "YES"
    # LO, at most 64 characters; the codes below say which PS3.15 options apply
    ds.DeidentificationMethod = "CTMuscleBone: identifiers, dates and source UIDs removed"
    items = []
    for value, scheme, meaning in DEIDENTIFICATION_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items


def write_source_series(ct: CTImage, sources: SourceImages,
                        folder: str | os.PathLike[str]) -> list[Path]:
    """Write the derived source slices with the CT's pixels (HU rounded, int16).

    Parameters
    ----------
    ct : CTImage
        ``hu`` (n0, n1, n2) in HU.
    sources : SourceImages
        From :func:`source_images` with ``derived`` True.
    folder : path-like
        Created; one file per slice ``CT_<k>.dcm``, each written atomically.

    Returns
    -------
    list of Path
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.clip(np.rint(np.asarray(ct.hu, dtype=np.float64)), -32768, 32767).astype(np.int16)
    paths = []
    for k, header in enumerate(sources.datasets):
        ds = header.copy()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.PixelData = np.ascontiguousarray(hu[:, :, k].T).tobytes()
        path = folder / f"CT_{k + 1:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
