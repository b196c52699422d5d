"""DICOM Segmentation (SEG) of a label map, made with highdicom.

One segment per anatomy structure that has at least one voxel (label values the
anatomy table does not know are left out: they have no code). Segment numbers are
1..N in the order of the canonical label values; each segment carries:

* SegmentLabel: the display name (``Gluteus medius (left)``); TrackingID: the anatomy
  key; a TrackingUID;
* SegmentedPropertyCategory / SegmentedPropertyType: the SNOMED CT codes of the anatomy
  table (:mod:`CTMuscleBoneLib.anatomy`, the codes the 3D Slicer terminology uses), and
  the laterality (SNOMED CT Left / Right) as SegmentedPropertyTypeModifier;
* SegmentAlgorithmType AUTOMATIC with the algorithm named after the label source
  (:func:`algorithm_name`: the model or reader, never a file path); SEMIAUTOMATIC for a
  structure corrected by hand after it (its result rows flagged ``edited:``).

The segmentation type is BINARY (viewers without the 2024 LABELMAP type can read it);
frames are the source slices (:mod:`.source`): frame ``k`` of a segment is
``labels.array[:, :, k].T`` (rows = array axis 1, columns = axis 0), empty frames
omitted. Structures with an overlay (voxels shared with another structure) keep their
full mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..anatomy import BY_KEY
from ..image import LabelMap
from ..results import EDITED, flag_tag
from .codes import ALGORITHM_FAMILY_AI
from .source import SourceImages

#: Series number of the SEG (a CTMuscleBone choice).
SEG_SERIES_NUMBER = 9002
#: Label sources (``LabelMap.source``) that end in the path of the file or folder read,
#: or a Slicer node name: the SEG names the reader only (a path or node name often
#: carries the patient's name or ID, and it is no algorithm name).
_SOURCE_PREFIXES = ("TotalSegmentator v1 (total)", "TotalSegmentator v2 (total)",
                    "TotalSegmentator folder", "3D Slicer segmentation",
                    "CTMuscleBone label map")
#: Algorithm name of labels read from a label-map file with a names table.
LABEL_FILE_ALGORITHM = "label map file"
#: Series / content description words of a SEG or SR from a synthetic demo model.
SYNTHETIC_TAG = "SYNTHETIC DEMO MODEL"


def algorithm_name(source: str | None) -> str:
    """SegmentAlgorithmName of a label source: the model or reader, never a path.

    ``"ctmb-demo 0.3"`` (a model) stays; ``"TotalSegmentator v2 (total) /data/x.nii.gz"``
    becomes ``"TotalSegmentator v2 (total)"``; a label file read with a names table
    (``"/data/x.nii.gz (names: x.json)"``) or any other path becomes
    :data:`LABEL_FILE_ALGORITHM`. At most 64 characters (LO).
    """
    text = (source or "").strip()
    if not text:
        return "unspecified"
    for prefix in _SOURCE_PREFIXES:
        if text == prefix or text.startswith(prefix + " "):
            return prefix
    lowered = text.lower()
    if ("/" in text or "\\" in text or " (names: " in text
            or lowered.endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm"))):
        return LABEL_FILE_ALGORITHM
    return text[:64]


@dataclass
class SegmentInfo:
    """One segment of the written SEG."""

    number: int
    key: str
    label_value: int


def segments_of(labels: LabelMap) -> list[SegmentInfo]:
    """The segments a SEG of ``labels`` holds: known structures with voxels, in label order.
    """
    present = set(labels.present_keys())
    out: list[SegmentInfo] = []
    for value, key in sorted(labels.structures.items()):
        if key in present and key in BY_KEY:
            out.append(SegmentInfo(number=len(out) + 1, key=key, label_value=int(value)))
    return out


def _coded(code: tuple[str, str, str]) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def edited_keys(results: Any) -> frozenset[str]:
    """Anatomy keys with a result row flagged as corrected by hand (``edited:``, the
    flag :func:`CTMuscleBoneLib.pipeline.remeasure` sets), none without results."""
    if results is None:
        return frozenset()
    return frozenset(r.structure for r in results.rows if r.structure in BY_KEY
                     and any(flag_tag(f) == EDITED for f in r.flags))


def build_seg(labels: LabelMap, sources: SourceImages, segments: list[SegmentInfo],
              series_uid: str, sop_uid: str, deidentify: bool = False,
              model_warning: str | None = None,
              edited: frozenset[str] = frozenset()) -> Any:
    """Build the SEG dataset.

    Parameters
    ----------
    labels : LabelMap
        ``array`` (n0, n1, n2) on the grid of the source CT.
    sources : SourceImages
        Slice headers, one per ``k``.
    segments : list of SegmentInfo
        From :func:`segments_of` (not empty).
    series_uid, sop_uid : str
        UIDs of the SEG.
    model_warning : str, optional
        The clinical-use warning of a synthetic (demo) segmentation model: the series
        and content descriptions then say :data:`SYNTHETIC_TAG` (what a PACS lists).
    edited : frozenset of str
        Anatomy keys corrected by hand after the algorithm (:func:`edited_keys`): their
        segments are SEMIAUTOMATIC, the others AUTOMATIC.

    Returns
    -------
    highdicom.seg.Segmentation
    """
    import highdicom as hd
    from pydicom.dataset import Dataset

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name(labels.source), family=_coded(ALGORITHM_FAMILY_AI),
        version=__version__)
    descriptions = []
    for seg in segments:
        st = BY_KEY[seg.key]
        d = hd.seg.SegmentDescription(
            segment_number=seg.number,
            segment_label=st.display_name[:64],
            segmented_property_category=_coded(st.snomed_category),
            segmented_property_type=_coded(st.snomed_type),
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
                            if seg.key in edited
                            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=seg.key,
            display_color=hd.color.CIELabColor.from_rgb(*st.color_rgb)
            if hasattr(hd.color.CIELabColor, "from_rgb") else None,
        )
        if st.snomed_laterality is not None:
            item = Dataset()
            (item.CodeValue, item.CodingSchemeDesignator,
             item.CodeMeaning) = st.snomed_laterality
            d.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                item]
        descriptions.append(d)
    pixels = _frames(labels, segments)
    seg = hd.seg.Segmentation(
        source_images=sources.datasets,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="CTMuscleBone",
        manufacturer_model_name="CTMuscleBone",
        software_versions=__version__,
        device_serial_number="0",
        content_description=(f"{SYNTHETIC_TAG} - not for clinical use" if model_warning
                             else "Bone and muscle segmentation"),
        content_label="CTMB_SEG",
        series_description=("CTMuscleBone segmentation" + (f" ({SYNTHETIC_TAG})"
                                                           if model_warning else "")),
    )
    if deidentify:
        from .source import mark_deidentified

        mark_deidentified(seg)
    return seg


def _frames(labels: LabelMap, segments: list[SegmentInfo]) -> np.ndarray:
    """Frames (n2, n1, n0): label-map style (segment numbers) or, when a structure has
    an overlay, stacked style (n2, n1, n0, N) of uint8 masks."""
    arr = np.asarray(labels.array)
    if any(s.key in labels.overlays for s in segments):
        stacked = np.zeros(arr.shape[::-1] + (len(segments),), dtype=np.uint8)
        for s in segments:
            stacked[..., s.number - 1] = labels.mask(s.key).transpose(2, 1, 0)
        return stacked
    lut = np.zeros(int(arr.max()) + 1 if arr.size else 1, dtype=np.uint16)
    for s in segments:
        lut[s.label_value] = s.number
    clipped = np.where((arr >= 0) & (arr < lut.size), arr, 0)
    return np.ascontiguousarray(lut[clipped].transpose(2, 1, 0))
