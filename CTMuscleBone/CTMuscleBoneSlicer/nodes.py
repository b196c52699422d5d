"""MRML nodes <-> CTMuscleBone core types (CT volume, label map, results).

Coordinate conventions
----------------------
Slicer works in **RAS** (+x right, +y anterior, +z superior) and ``arrayFromVolume``
returns arrays in **K, J, I** order. The core (:mod:`CTMuscleBoneLib.image`) works in
**LPS** with arrays in **I, J, K** (ITK index) order. So, with ``F = diag(-1, -1, 1)``::

    hu_ijk        = array_kji.transpose(2, 1, 0)
    direction_lps = F @ (IJKToRAS[:3, :3] / spacing)      # columns = array axes
    origin_lps    = F @ IJKToRAS[:3, 3]

Volumes under a parent transform are refused (harden the transform first): the core
measures in the physical space the voxel grid states.

Every function takes the scene and the nodes it works on as arguments (no use of
``slicer.mrmlScene``), so it runs headless with the ``slicer-core`` package; the
segmentation and volume logics are created on the fly when ``slicer.modules`` does
not provide them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap
from CTMuscleBoneLib.io_ct import parse_dicom_age

from . import terminology

#: LPS <-> RAS: flips x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Node attribute listing (JSON, value -> name) label values not imported as segments.
UNKNOWN_LABELS_ATTRIBUTE = "CTMuscleBone.UnknownLabels"
#: Attribute marking nodes (colour tables) this module created, value = purpose.
ROLE_ATTRIBUTE = "CTMuscleBone.Role"
#: DICOM tags read through the DICOM database (group,element as Slicer's database wants).
DICOM_TAGS = {
    "sex": "0010,0040",  # PatientSex
    "age": "0010,1010",  # PatientAge (AS, e.g. '065Y')
    "height": "0010,1020",  # PatientSize, metres
    "weight": "0010,1030",  # PatientWeight, kg
    "modality": "0008,0060",
    "kvp": "0018,0060",  # KVP: the thresholds' voltage (Pickhardt) and K2HPO4-to-HA ratio
    "contrast": "0018,0010",  # ContrastBolusAgent
}
#: Label values given to segments the anatomy table does not know (above every
#: canonical value, 1..255).
UNKNOWN_LABEL_BASE = 1000

#: Inferno colour map anchors (0..255 RGB at positions 0, 16, 32, ..., 240, 255 of 256):
#: sampled from matplotlib's "inferno" (Stéfan van der Walt and Nathaniel Smith, CC0),
#: values as in 3D Slicer's Base/Logic/Resources/ColorFiles/Inferno.txt. Perceptually
#: uniform and readable in grey scale; intermediate colours are linear interpolations.
INFERNO_ANCHORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 3), (10, 7, 35), (32, 12, 74), (60, 9, 101), (87, 15, 109), (112, 25, 110),
    (137, 34, 105), (163, 43, 97), (187, 55, 84), (209, 70, 67), (228, 90, 49),
    (241, 114, 29), (249, 142, 8), (251, 172, 16), (248, 203, 52), (241, 233, 104),
    (252, 254, 164),
)
INFERNO_POSITIONS: tuple[int, ...] = (*range(0, 256, 16), 255)


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------
def _slicer() -> Any:
    import slicer

    return slicer


def _vtk() -> Any:
    import vtk

    return vtk


def _segmentations_logic(scene: Any) -> Any:
    """``slicer.modules.segmentations.logic()``, or a headless one bound to ``scene``."""
    slicer = _slicer()
    try:
        logic = slicer.modules.segmentations.logic()
        if logic.GetMRMLScene() is scene:
            return logic
    except AttributeError:
        pass
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    return logic


def _matrix_to_array(vmatrix: Any) -> np.ndarray:
    return np.array([[vmatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _array_to_matrix(a: np.ndarray) -> Any:
    m = _vtk().vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def _string_array(values: Iterable[str]) -> Any:
    arr = _vtk().vtkStringArray()
    for v in values:
        arr.InsertNextValue(v)
    return arr


def _refuse_transformed(node: Any, what: str) -> None:
    if node.GetParentTransformNode() is not None:
        raise InputError(
            f"The {what} '{node.GetName()}' is under a transform. CTMuscleBone measures "
            "in the physical space of the voxel grid: harden the transform first (Data "
            "module, right-click the node, 'Harden transform')."
        )


def ijk_to_ras_matrix(geometry: Geometry) -> np.ndarray:
    """4x4 IJK -> RAS matrix (array axes in ITK index order) of a core geometry."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ geometry.affine_lps


def geometry_from_volume_node(volume_node: Any) -> Geometry:
    """Core geometry (LPS, IJK axis order) of a volume node's voxel grid.

    Raises
    ------
    InputError
        When the node has no image data or is under a transform.
    """
    _refuse_transformed(volume_node, "volume")
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"The volume '{volume_node.GetName()}' holds no image data.")
    m = _vtk().vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    ijk_to_ras = _matrix_to_array(m)
    spacing = np.array(volume_node.GetSpacing(), dtype=float)
    dirs_ras = ijk_to_ras[:3, :3] / spacing[None, :]
    return Geometry(
        shape=tuple(int(d) for d in image.GetDimensions()),
        spacing_mm=tuple(spacing),
        origin_mm=tuple(LPS_TO_RAS @ ijk_to_ras[:3, 3]),
        direction=LPS_TO_RAS @ dirs_ras,
    )


def _array_ijk(volume_node: Any) -> np.ndarray:
    """A copy of a scalar volume's voxels, (n0, n1, n2) IJK order."""
    kji = _slicer().util.arrayFromVolume(volume_node)
    if kji.ndim != 3:
        raise InputError(
            f"The volume '{volume_node.GetName()}' has {kji.ndim - 3} component axis; "
            "CTMuscleBone needs a scalar (grey-level) CT volume."
        )
    return np.array(kji.transpose(2, 1, 0), order="C", copy=True)


# ------------------------------------------------------------------------------------
# 1. CT volume -> CTImage
# ------------------------------------------------------------------------------------
def patient_info_from_volume_node(volume_node: Any, database: Any = None) -> dict[str, Any]:
    """Patient facts from the DICOM header of the series a volume was loaded from.

    Parameters
    ----------
    volume_node : vtkMRMLVolumeNode
        Loaded by Slicer's DICOM module (attribute ``DICOM.instanceUIDs``).
    database : ctkDICOMDatabase, optional
        Default ``slicer.dicomDatabase``. Only ``instanceValue(uid, 'gggg,eeee')``
        is used.

    Returns
    -------
    dict
        Any of ``sex`` ('M'/'F'), ``age_years`` (float), ``height_m`` (float, metres;
        a PatientSize plausible only in cm is converted), ``weight_kg``, ``modality``,
        ``kvp`` (float, kV) and ``contrast_agent`` (the ContrastBolusAgent text); empty
        when the volume was not loaded from DICOM or no database is available.
    """
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return {}
    if database is None:
        database = getattr(_slicer(), "dicomDatabase", None)
    if database is None:
        return {}

    def value(tag: str) -> str:
        try:
            return str(database.instanceValue(uids[0], tag) or "").strip()
        except Exception:  # noqa: BLE001 - a database without the instance
            return ""

    info: dict[str, Any] = {}
    sex = value(DICOM_TAGS["sex"]).upper()
    if sex in ("M", "F"):
        info["sex"] = sex
    age = parse_dicom_age(value(DICOM_TAGS["age"]))
    if age is not None:
        info["age_years"] = age
    for key, tag in (("height_m", DICOM_TAGS["height"]), ("weight_kg", DICOM_TAGS["weight"])):
        try:
            v = float(value(tag))
        except ValueError:
            continue
        if not np.isfinite(v) or v <= 0:
            continue
        if key == "height_m" and 3.0 < v < 300.0:
            v /= 100.0  # given in cm although DICOM says metres
        elif key == "height_m" and v >= 300.0:
            continue
        info[key] = v
    modality = value(DICOM_TAGS["modality"])
    if modality:
        info["modality"] = modality
    try:
        kvp = float(value(DICOM_TAGS["kvp"]))
    except ValueError:
        kvp = float("nan")
    if np.isfinite(kvp) and kvp > 0:
        info["kvp"] = kvp
    contrast = value(DICOM_TAGS["contrast"])
    if contrast:
        info["contrast_agent"] = contrast
    return info


def ct_from_volume_node(volume_node: Any, database: Any = None) -> CTImage:
    """A :class:`CTImage` (copied voxels, LPS geometry) from a scalar volume node.

    Parameters
    ----------
    volume_node : vtkMRMLScalarVolumeNode
        Voxel values are taken as HU as they are (Slicer applies the DICOM rescale on
        loading).
    database : optional
        DICOM database for :func:`patient_info_from_volume_node`.

    Returns
    -------
    CTImage
        ``hu`` (n0, n1, n2) in IJK order, a copy (later edits of the node do not change
        it); metadata: the node name as ``source``, modality, tube voltage, contrast
        agent and patient facts from DICOM when available, else None.
    """
    geometry = geometry_from_volume_node(volume_node)
    hu = _array_ijk(volume_node)
    info = patient_info_from_volume_node(volume_node, database)
    meta = CTMetadata(
        modality=info.get("modality"),
        patient_sex=info.get("sex"),
        patient_age_years=info.get("age_years"),
        patient_height_m=info.get("height_m"),
        patient_weight_kg=info.get("weight_kg"),
        kvp=info.get("kvp"),
        contrast_agent=info.get("contrast_agent"),
        source=f"3D Slicer volume '{volume_node.GetName()}'",
    )
    return CTImage(hu=hu, geometry=geometry, metadata=meta)


# ------------------------------------------------------------------------------------
# 2. array -> volume node
# ------------------------------------------------------------------------------------
def volume_node_from_array(scene: Any, array_ijk: np.ndarray, geometry: Geometry, name: str,
                           class_name: str = "vtkMRMLScalarVolumeNode") -> Any:
    """Add a volume node holding an IJK-order array on a core geometry.

    Parameters
    ----------
    scene : vtkMRMLScene
    array_ijk : np.ndarray, (n0, n1, n2)
        Voxel values (copied). bool becomes uint8; int64 becomes int32 (VTK does not
        display "long long" volumes).
    geometry : Geometry
        LPS grid of the array.
    name : str
    class_name : str
        ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLLabelMapVolumeNode``.

    Returns
    -------
    vtkMRMLVolumeNode
        With default display nodes.
    """
    array_ijk = np.asarray(array_ijk)
    if tuple(array_ijk.shape) != geometry.shape:
        raise ValueError(f"array shape {array_ijk.shape} != geometry {geometry.shape}")
    if array_ijk.dtype == bool:
        array_ijk = array_ijk.astype(np.uint8)
    elif array_ijk.dtype in (np.int64, np.uint64):
        array_ijk = array_ijk.astype(np.int32)
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(_array_to_matrix(ijk_to_ras_matrix(geometry)))
    _slicer().util.updateVolumeFromArray(node, np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    node.CreateDefaultDisplayNodes()
    return node


# ------------------------------------------------------------------------------------
# 3. LabelMap -> segmentation node
# ------------------------------------------------------------------------------------
def _import_labels(scene: Any, seg_node: Any, array_ijk: np.ndarray, geometry: Geometry,
                   segment_ids: list[str]) -> None:
    """Import label values 1..n of ``array_ijk`` into segments ``segment_ids[v - 1]``."""
    if not segment_ids:
        return
    dtype = np.uint8 if len(segment_ids) < 256 else np.uint16
    lm = volume_node_from_array(scene, array_ijk.astype(dtype), geometry, "__ctmb_temp__",
                                "vtkMRMLLabelMapVolumeNode")
    try:
        ok = _segmentations_logic(scene).ImportLabelmapToSegmentationNode(
            lm, seg_node, _string_array(segment_ids))
        if not ok:
            raise RuntimeError(f"Importing segments {segment_ids} failed.")
    finally:
        remove_with_display(scene, lm)


def remove_with_display(scene: Any, node: Any) -> None:
    """Remove ``node`` and its display nodes from ``scene`` (``RemoveNode`` alone leaves
    the display nodes behind).

    The node goes first: a volume shown in a slice view that loses its display node gets
    a new one from the slice logic, which would then be left behind.
    """
    displays = []
    if node.IsA("vtkMRMLDisplayableNode"):  # listed first: each removal shortens the list
        displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    scene.RemoveNode(node)
    for d in displays:
        if d is not None and scene.GetNodeByID(d.GetID()) is not None:
            scene.RemoveNode(d)


def segmentation_node_from_label_map(scene: Any, labels: LabelMap, reference_volume_node: Any,
                                     name: str) -> Any:
    """A segmentation node with one segment per anatomy structure of a label map.

    Parameters
    ----------
    scene : vtkMRMLScene
    labels : LabelMap
        On the reference volume's grid (normally the CT's).
    reference_volume_node : vtkMRMLVolumeNode or None
        Sets the segmentation's reference geometry (the CT).
    name : str

    Returns
    -------
    vtkMRMLSegmentationNode
        Segments in label-value order: id = anatomy key, name =
        ``Structure.display_name``, colour from the anatomy table, terminology tag
        :func:`terminology.terminology_entry_for`. Structures absent from the array
        get no segment. Structures in ``labels.overlays`` (overlapping others) are
        imported from their full masks, each on its own layer, so no voxel is lost.
        Labels the anatomy table does not know (``labels.unknown``) are not imported;
        they are listed (JSON value -> name) in the node attribute
        :data:`UNKNOWN_LABELS_ATTRIBUTE`.
    """
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg_node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = seg_node.GetSegmentation()
    overlays = labels.overlays
    keys = [k for k in labels.present_keys() if k in anatomy.BY_KEY]
    for key in keys:
        st = anatomy.structure(key)
        segmentation.AddEmptySegment(key, st.display_name, [c / 255.0 for c in st.color_rgb])
        segment = segmentation.GetSegment(key)
        segment.SetTerminology(terminology.terminology_entry_for(key))
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
    # Structures without overlap share one layer, imported in one go.
    shared = [k for k in keys if k not in overlays]
    values = [labels.value_of(k) for k in shared]
    lut = np.zeros(max(values, default=0) + 2, dtype=np.uint16)  # value -> 1..n; others -> 0
    lut[values] = np.arange(1, len(values) + 1)
    remapped = lut[np.clip(labels.array, 0, len(lut) - 1)]  # one pass, not one per structure
    _import_labels(scene, seg_node, remapped, labels.geometry, shared)
    for key in (k for k in keys if k in overlays):
        mask = np.asarray(overlays[key], dtype=bool)
        _import_labels(scene, seg_node, mask.astype(np.uint8), labels.geometry, [key])
    if labels.unknown:
        seg_node.SetAttribute(UNKNOWN_LABELS_ATTRIBUTE,
                              json.dumps({str(v): n for v, n in sorted(labels.unknown.items())}))
    return seg_node


# ------------------------------------------------------------------------------------
# 4. segmentation node -> LabelMap
# ------------------------------------------------------------------------------------
def segment_key(segment_id: str, segment: Any) -> str | None:
    """Anatomy key of a segment, or None.

    Tried in order: the segment id when it is an anatomy key; the terminology tag's
    category/type/laterality codes (:func:`terminology.key_for_terminology_entry`);
    the segment name through :func:`CTMuscleBoneLib.anatomy.key_for_name` (which knows
    display names and TotalSegmentator names such as ``gluteus_maximus_left``).
    """
    if segment_id in anatomy.BY_KEY:
        return segment_id
    key = terminology.key_for_terminology_entry(segment.GetTerminology())
    if key is not None:
        return key
    return anatomy.key_for_name(segment.GetName() or "")


def _export_labels(segmentation_node: Any, segment_ids: list[str], reference_volume_node: Any
                   ) -> np.ndarray:
    """Segments exported together on the reference volume's grid, in one call.

    ``ExportSegmentsToLabelmapNode`` with the reference geometry's extent and no colour
    table: Slicer's ``vtkSegmentation::GenerateMergedLabelmap`` resamples each segment
    to the grid and paints it, in the order of ``segment_ids``, with value index + 1, so
    a later segment wins a shared voxel.

    Returns
    -------
    np.ndarray of int16, (n0, n1, n2)
        IJK order, the reference volume's shape; 0 = no segment, v = ``segment_ids[v - 1]``.
    """
    slicer = _slicer()
    shape = tuple(int(d) for d in reference_volume_node.GetImageData().GetDimensions())
    if not segment_ids:  # an empty list would export every segment
        return np.zeros(shape, dtype=np.int16)
    scene = segmentation_node.GetScene()
    lm = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__ctmb_temp__")
    try:
        ok = _segmentations_logic(scene).ExportSegmentsToLabelmapNode(
            segmentation_node, _string_array(segment_ids), lm, reference_volume_node,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise RuntimeError(f"Export of segments {segment_ids} failed.")
        kji = slicer.util.arrayFromVolume(lm)
        labels = np.array(kji.transpose(2, 1, 0), order="C", copy=True)
    finally:
        display = lm.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        remove_with_display(scene, lm)
        if color is not None and color.GetAttribute(ROLE_ATTRIBUTE) is None \
                and color.GetType() == color.User:
            scene.RemoveNode(color)
    if labels.shape != shape:
        raise RuntimeError(f"Export of segments gave a {labels.shape} array on a {shape} grid.")
    return labels


def segment_mask(segmentation_node: Any, segment_id: str, reference_volume_node: Any
                 ) -> np.ndarray:
    """One segment's full binary mask on the reference volume's grid.

    Exported on its own (``ExportSegmentsToLabelmapNode`` with the reference geometry's
    extent), so voxels it shares with other segments are kept.

    Returns
    -------
    np.ndarray of bool, (n0, n1, n2)
        IJK order, the reference volume's shape.
    """
    return _export_labels(segmentation_node, [segment_id], reference_volume_node) != 0


def _disjoint_groups(segmentation: Any, segment_ids: list[str]) -> list[list[int]]:
    """Positions (in ``segment_ids``) grouped so that no two segments of a group overlap.

    Segments sharing a binary-labelmap layer hold one label value per voxel, so they cannot
    overlap unless two of them have the same label value (then they go to different
    groups). Groups are in order of their first segment; positions ascend in each.
    """
    binary = _slicer().vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    groups: list[list[int]] = []
    values: list[set[int]] = []
    by_layer: dict[int, list[int]] = {}  # layer -> indices into ``groups``
    for position, segment_id in enumerate(segment_ids):
        layer = segmentation.GetLayerIndex(segment_id, binary)
        value = int(segmentation.GetSegment(segment_id).GetLabelValue())
        candidates = by_layer.setdefault(layer, []) if layer >= 0 else []
        for g in candidates:
            if value not in values[g]:
                groups[g].append(position)
                values[g].add(value)
                break
        else:
            groups.append([position])
            values.append({value})
            if layer >= 0:
                candidates.append(len(groups) - 1)
    return groups


def _slot_order(slots: list[str], nonempty: np.ndarray) -> list[str]:
    """Slots in order of their first non-empty segment."""
    return list(dict.fromkeys(s for s, ok in zip(slots, nonempty, strict=True) if ok))


def label_map_from_segmentation_node(segmentation_node: Any, reference_volume_node: Any
                                     ) -> LabelMap:
    """A :class:`LabelMap` on the reference volume's grid from a segmentation node.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode
    reference_volume_node : vtkMRMLVolumeNode
        The CT: the label map has its grid and geometry (LPS).

    Returns
    -------
    LabelMap
        Segments are mapped to anatomy keys by :func:`segment_key` and get the
        structure's canonical label value; unmatched ones go to ``unknown`` (values from
        :data:`UNKNOWN_LABEL_BASE`, in order of appearance). Segments are painted in
        segment order (a later segment wins a shared voxel; two segments mapping to one
        key are merged, with a note, and painted at the place of the first); every
        structure that lost voxels that way has its full mask in ``overlays``. Empty
        segments are left out (with a note).

    Notes
    -----
    All segments are exported to one label map in one ``ExportSegmentsToLabelmapNode``
    call (:func:`_export_labels`), in the order of their structures. When the segments
    lie on several binary-labelmap layers (they may overlap), each layer is also exported
    once, which gives the empty segments and the full masks of the structures that lost
    voxels; with one layer nothing can overlap and the one export says everything.
    Memory: a few int16/uint16 arrays of the grid's size plus the overlapping masks.
    """
    _refuse_transformed(segmentation_node, "segmentation")
    geometry = geometry_from_volume_node(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segmentation.GetSegmentIDs())
    n = len(ids)
    segments = [segmentation.GetSegment(sid) for sid in ids]
    names = [segment.GetName() or sid for sid, segment in zip(ids, segments, strict=True)]
    keys = [segment_key(sid, segment) for sid, segment in zip(ids, segments, strict=True)]
    slots = [k if k is not None else f"unknown:{name}"
             for k, name in zip(keys, names, strict=True)]
    slot_sizes: dict[str, int] = {}
    for slot in slots:
        slot_sizes[slot] = slot_sizes.get(slot, 0) + 1
    if n:
        segmentation.CreateRepresentation(
            _slicer().vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
    groups = _disjoint_groups(segmentation, ids)

    nonempty = np.ones(n, dtype=bool)  # assumed until the export says otherwise
    for _attempt in range(2):
        slot_order = _slot_order(slots, nonempty)
        rank = {slot: r for r, slot in enumerate(slot_order, start=1)}
        order = sorted((p for p in range(n) if nonempty[p]), key=lambda p: rank[slots[p]])
        merged = _export_labels(segmentation_node, [ids[p] for p in order],
                                reference_volume_node)
        counts = np.zeros(n, dtype=np.int64)
        lost: set[str] = set()
        pieces: dict[str, list[np.ndarray]] = {}  # known slot -> full masks of its segments
        if len(groups) <= 1:  # no overlap possible: the merged export is every mask
            exported = np.bincount(merged.ravel(), minlength=len(order) + 1)[1:]
            counts[order] = exported[:len(order)]
        else:
            rank_lut = np.zeros(len(order) + 1, dtype=np.uint16)
            rank_lut[1:] = [rank[slots[p]] for p in order]
            winner_rank = rank_lut[merged]  # rank of the slot painted last at each voxel
            for group in groups:
                layer = _export_labels(segmentation_node, [ids[p] for p in group],
                                       reference_volume_node)
                counts[group] = np.bincount(layer.ravel(), minlength=len(group) + 1)[1:]
                own_lut = np.zeros(len(group) + 1, dtype=np.uint16)
                own_lut[1:] = [rank.get(slots[p], 0) for p in group]
                losing = layer[(layer > 0) & (own_lut[layer] != winner_rank)]
                losers = {group[v - 1] for v in np.unique(losing)}
                for k, p in enumerate(group):
                    if keys[p] is None or counts[p] == 0:
                        continue
                    if p in losers or slot_sizes[slots[p]] > 1:
                        pieces.setdefault(slots[p], []).append(layer == k + 1)
                    if p in losers:
                        lost.add(slots[p])
                del layer
            del winner_rank
        found = counts > 0
        true_order = _slot_order(slots, found)
        settled = [s for s in slot_order if s in set(true_order)] == true_order
        nonempty = found
        if settled:
            break
        # the first segment of a structure was empty: its place in the painting order is
        # that of its first non-empty segment, so export again in that order
    else:  # pragma: no cover - the second attempt uses the emptiness the first one found
        raise RuntimeError("Segment order could not be settled.")

    notes: list[str] = []
    seen: set[str] = set()
    for p in range(n):
        name, key, slot = names[p], keys[p], slots[p]
        if not nonempty[p]:
            notes.append(f"Segment '{name}' is empty; left out.")
            continue
        if slot in seen:
            notes.append(f"Segment '{name}' is a second segment of "
                         f"'{key or name}'; merged with the first.")
            continue
        seen.add(slot)
        if key is not None and key != ids[p] and key != anatomy.key_for_name(name):
            notes.append(f"Segment '{name}' identified as '{key}' by its terminology codes.")
    structures: dict[int, str] = {}
    unknown: dict[int, str] = {}
    values: dict[str, int] = {}
    for slot in _slot_order(slots, nonempty):
        if not slot.startswith("unknown:"):
            values[slot] = anatomy.structure(slot).label_value
            structures[values[slot]] = slot
        else:
            values[slot] = UNKNOWN_LABEL_BASE + len(unknown)
            unknown[values[slot]] = names[slots.index(slot)]
    value_lut = np.zeros(len(order) + 1, dtype=np.uint16)
    value_lut[1:] = [values.get(slots[p], 0) for p in order]  # an empty one paints nothing
    array = value_lut[merged]
    overlays = {slot: np.logical_or.reduce(pieces[slot]) for slot in values if slot in lost}
    if overlays:
        notes.append("Overlapping segments: " + ", ".join(sorted(overlays))
                     + " measured each on its own full mask.")
    return LabelMap(array=array, geometry=geometry, structures=structures, unknown=unknown,
                    source=f"3D Slicer segmentation '{segmentation_node.GetName()}'",
                    notes=tuple(notes), overlays=overlays)


# ------------------------------------------------------------------------------------
# 5. edit tracking
# ------------------------------------------------------------------------------------
class SegmentEditTracker:
    """Collects the ids of segments changed in a segmentation node.

    Observes the node's ``vtkSegmentation`` events ``SegmentModified`` (name, colour,
    tags), ``SegmentAdded``, ``SegmentRemoved`` and ``RepresentationModified`` (voxel
    content; what Segment Editor effects and ``updateSegmentBinaryLabelmapFromArray``
    fire), each carrying the segment id. An edit with "overwrite other segments"
    also takes voxels from segments no event names: pass ``reference_volume_node`` to
    :meth:`changed_keys` to find those by comparing masks.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode
    """

    _EVENTS = ("SegmentModified", "SegmentAdded", "SegmentRemoved", "RepresentationModified")

    def __init__(self, segmentation_node: Any) -> None:
        slicer = _slicer()
        vtk = _vtk()
        self.segmentation_node = segmentation_node
        self._segmentation = segmentation_node.GetSegmentation()
        self.changed_ids: set[str] = set()
        #: Segments removed since the last reset (they may be gone from the node).
        self.removed_ids: set[str] = set()
        self.content_changed = False
        self._tags: list[int] = []

        def make(event_name: str) -> Any:
            @vtk.calldata_type(vtk.VTK_STRING)
            def callback(caller: Any, event: Any, segment_id: str | None = None) -> None:
                if segment_id:
                    self.changed_ids.add(segment_id)
                    if event_name == "SegmentRemoved":
                        self.removed_ids.add(segment_id)
                if event_name == "RepresentationModified":
                    self.content_changed = True
            return callback

        self._callbacks = []
        for event_name in self._EVENTS:
            cb = make(event_name)
            self._callbacks.append(cb)
            event_id = getattr(slicer.vtkSegmentation, event_name)
            self._tags.append(self._segmentation.AddObserver(event_id, cb))

    def reset(self) -> None:
        """Forget the changes seen so far (after a remeasurement)."""
        self.changed_ids.clear()
        self.removed_ids.clear()
        self.content_changed = False

    def remove(self) -> None:
        """Remove the observers (call when the node or the panel goes away)."""
        for tag in self._tags:
            self._segmentation.RemoveObserver(tag)
        self._tags.clear()

    def changed_keys(self, label_map: LabelMap, reference_volume_node: Any = None,
                     current: LabelMap | None = None) -> set[str]:
        """Anatomy keys of the changed segments.

        Parameters
        ----------
        label_map : LabelMap
            The labels the last measurement used.
        reference_volume_node : vtkMRMLVolumeNode, optional
            When given and voxel content changed, every segment's mask is also compared
            with ``label_map`` (finds segments that lost voxels to an overwriting edit).
        current : LabelMap, optional
            The node's segments as they are now (:func:`label_map_from_segmentation_node`).
            When given, the answer is the keys whose mask differs between ``label_map``
            and ``current`` (:func:`changed_mask_keys`), whatever events were seen: an
            edit no event names (Segment Editor undo/redo restores segments with
            ``SegmentModified`` events of every segment, a script changing the internal
            labelmap fires none) is found, and a change that leaves the mask as it was
            (colour, name within the same structure, status tag, an undone edit) is not
            reported as an edit.

        Returns
        -------
        set of str
            Keys of changed, added and removed segments (segment ids that are no anatomy
            key are mapped through :func:`segment_key`; a removed one through its id or
            the keys ``label_map`` knows).
        """
        if current is not None:
            return changed_mask_keys(label_map, current)
        keys: set[str] = set()
        for segment_id in self.changed_ids:
            segment = self._segmentation.GetSegment(segment_id)
            key = segment_key(segment_id, segment) if segment is not None else (
                segment_id if segment_id in anatomy.BY_KEY else anatomy.key_for_name(segment_id))
            if key is not None:
                keys.add(key)
        if self.content_changed and reference_volume_node is not None:
            for segment_id in self._segmentation.GetSegmentIDs():
                segment = self._segmentation.GetSegment(segment_id)
                key = segment_key(segment_id, segment)
                if key is None or key in keys:
                    continue
                mask = segment_mask(self.segmentation_node, segment_id, reference_volume_node)
                if not np.array_equal(mask, label_map.mask(key)):
                    keys.add(key)
        return keys


def changed_mask_keys(before: LabelMap, after: LabelMap) -> set[str]:
    """Anatomy keys whose mask differs between two label maps on the same grid.

    One pass over the arrays finds the label values at the voxels that differ; the
    structures with a full mask in ``overlays`` (in either map) are compared by their
    full masks instead, so a structure is not reported because an overlapping neighbour
    took or gave back voxels of its painted part. A structure present in one map only
    counts as changed (added or removed).
    """
    keys: set[str] = set()
    overlaid = set(before.overlays) | set(after.overlays)
    if before.array.shape != after.array.shape:
        return {k for k in (*before.structures.values(), *after.structures.values())}
    differ = before.array != after.array
    if differ.any():
        for labels, values in ((before, before.array[differ]), (after, after.array[differ])):
            for value in np.unique(values):
                key = labels.structures.get(int(value))
                if key is not None and key not in overlaid:
                    keys.add(key)
    for key in overlaid:
        if not np.array_equal(before.mask(key), after.mask(key)):
            keys.add(key)
    return keys


# ------------------------------------------------------------------------------------
# 6. results table
# ------------------------------------------------------------------------------------
TABLE_COLUMNS = ("structure", "key", "quantity", "value", "unit", "flags", "edited")


def table_rows(results: Any, edited: Iterable[tuple[str, str]] = frozenset()
               ) -> list[tuple[str, ...]]:
    """The rows of the results table, one per ``results.rows`` entry, in order.

    Parameters
    ----------
    results : Results
    edited : set of (structure key, quantity)
        Rows changed by a remeasurement after a hand edit.

    Returns
    -------
    list of tuple of str
        ``(structure display name, key, quantity, value, unit, flags, edited)``: the
        display name and the value text exactly as ``results.csv`` writes them
        (:meth:`ResultRow.display_value`, rounded per quantity; '' when not
        measurable), flags joined by '; ', edited 'yes' or ''.
    """
    edited = set(edited)
    return [(row.display_name, row.structure, row.quantity, row.display_value(), row.unit,
             "; ".join(row.flags), "yes" if (row.structure, row.quantity) in edited else "")
            for row in results.rows]


def update_table_node(table_node: Any, results: Any,
                      edited_rows: Iterable[tuple[str, str]] = frozenset()) -> Any:
    """Fill a ``vtkMRMLTableNode`` with :func:`table_rows` (string columns
    :data:`TABLE_COLUMNS`); replaces what it held. Returns the node."""
    vtk = _vtk()
    rows = table_rows(results, edited_rows)
    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for c, name in enumerate(TABLE_COLUMNS):
            column = vtk.vtkStringArray()
            column.SetName(name)
            for row in rows:
                column.InsertNextValue(row[c])
            table_node.AddColumn(column)
        table_node.SetColumnLongName("value", "Value as written to results.csv")
        table_node.SetColumnLongName("edited", "Changed by a remeasurement after a hand edit")
    finally:
        table_node.EndModify(was_modifying)
    return table_node


def table_node_rows(table_node: Any) -> list[tuple[str, ...]]:
    """Cell texts of a table node, row by row (for checks and tests)."""
    table = table_node.GetTable()
    n_cols = table.GetNumberOfColumns()
    return [tuple(table_node.GetCellText(r, c) for c in range(n_cols))
            for r in range(table_node.GetNumberOfRows())]


# ------------------------------------------------------------------------------------
# 7. uncertainty heatmap
# ------------------------------------------------------------------------------------
def inferno_rgb(n: int = 256) -> np.ndarray:
    """Inferno colour map, (n, 3) floats in 0..1, interpolated from the anchors."""
    x = np.linspace(0.0, 255.0, n)
    anchors = np.asarray(INFERNO_ANCHORS, dtype=float) / 255.0
    return np.stack([np.interp(x, INFERNO_POSITIONS, anchors[:, c]) for c in range(3)], axis=1)


def heatmap_color_node(scene: Any, name: str = "CTMuscleBone Inferno") -> Any:
    """The perceptual (inferno) colour table node for heatmaps; created once per scene.

    Entry 0 (the lowest 1/256 of the window: zero uncertainty, e.g. outside the body) is
    transparent: Slicer's scalar volume display takes the alpha of the colour table into
    the foreground layer (``vtkMRMLScalarVolumeDisplayNode``: MapToColors RGBA, ExtractAlpha,
    AlphaLogic), so an opaque near-black entry 0 would darken the whole CT under the map
    by the heatmap opacity, not only where the model is uncertain.
    """
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(ROLE_ATTRIBUTE) == "heatmap":
            rgba = [0.0] * 4
            if node.GetColor(0, rgba) and rgba[3] != 0.0:  # a scene saved by an older version
                node.SetColor(0, "0", rgba[0], rgba[1], rgba[2], 0.0)
            return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    rgb = inferno_rgb(256)
    node.SetNumberOfColors(len(rgb))
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, f"{i}", float(r), float(g), float(b), 0.0 if i == 0 else 1.0)
    node.SetAttribute(ROLE_ATTRIBUTE, "heatmap")
    node.SetHideFromEditors(False)
    return node


def show_uncertainty_heatmap(scene: Any, uncertainty_node: Any, ct_node: Any,
                             opacity: float = 0.5, threshold: float | None = None,
                             visible: bool = True, full_scale: float | None = None) -> Any:
    """Show an uncertainty map over the CT in every slice view.

    Parameters
    ----------
    scene : vtkMRMLScene
    uncertainty_node : vtkMRMLScalarVolumeNode
        Non-negative uncertainty map (e.g. from :func:`volume_node_from_array`).
    ct_node : vtkMRMLScalarVolumeNode
        Background.
    opacity : float
        Foreground opacity 0..1.
    threshold : float or None
        Values below it are transparent (None: all shown).
    visible : bool
        False sets the foreground opacity to 0 (the layers are kept).
    full_scale : float or None
        The value shown in full colour, the same for every case
        (:func:`CTMuscleBoneLib.segmentation.uncertainty.two_class_tie_value`); None:
        the map's own maximum (colours then differ in meaning between cases).

    Returns
    -------
    vtkMRMLColorTableNode
        The inferno colour node assigned; window/level spans 0..full scale.
    """
    color = heatmap_color_node(scene)
    if uncertainty_node.GetDisplayNode() is None:
        uncertainty_node.CreateDefaultDisplayNodes()
    display = uncertainty_node.GetDisplayNode()
    if full_scale is not None and np.isfinite(full_scale) and full_scale > 0:
        vmax = float(full_scale)
    else:
        values = _slicer().util.arrayFromVolume(uncertainty_node)
        vmax = float(np.nanmax(values)) if values.size else 0.0
        if not np.isfinite(vmax) or vmax <= 0:
            vmax = 1.0
    was_modifying = display.StartModify()
    try:
        display.SetAndObserveColorNodeID(color.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, vmax)
        display.AutoThresholdOff()
        if threshold is None:
            display.ApplyThresholdOff()
        else:
            display.SetThreshold(float(threshold), max(vmax, float(threshold)))
            display.ApplyThresholdOn()
    finally:
        display.EndModify(was_modifying)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        comp = composites.GetItemAsObject(i)
        comp.SetBackgroundVolumeID(ct_node.GetID())
        comp.SetForegroundVolumeID(uncertainty_node.GetID())
        comp.SetForegroundOpacity(float(opacity) if visible else 0.0)
    return color


# ------------------------------------------------------------------------------------
# 8. jump to a segment
# ------------------------------------------------------------------------------------
def center_on_segment(scene: Any, segmentation_node: Any, segment_id: str
                      ) -> tuple[float, float, float] | None:
    """Centre every slice view on a segment.

    Returns
    -------
    (r, a, s) or None
        The RAS point used (``GetSegmentCenterRAS``: a point inside the segment), mm;
        None when the segment is empty or absent (views are not moved).
    """
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        return None
    center = segmentation_node.GetSegmentCenterRAS(segment_id)
    if center is None:
        return None
    r, a, s = (float(c) for c in center)
    slicer = _slicer()
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s,
                                         slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return r, a, s


# ------------------------------------------------------------------------------------
# 9. femur DXA-view projections
# ------------------------------------------------------------------------------------
#: Label values of the femur ROI label map (the neck is painted over the total hip).
FEMUR_ROI_VALUES = {"total_hip": 1, "femoral_neck": 2}


@dataclass
class FemurProjectionNodes:
    """Nodes showing one femur's DXA-view projection.

    Attributes
    ----------
    density : vtkMRMLScalarVolumeNode
        Areal density, g/cm2, one slice thick.
    rois : vtkMRMLLabelMapVolumeNode
        ROIs (:data:`FEMUR_ROI_VALUES`) on the same grid.
    """

    density: Any
    rois: Any


def projection_geometry(projection: Any, plane_point_mm: np.ndarray | None = None) -> Geometry:
    """3-D geometry (one slice thick) of a DXA-view projection image.

    The (nx, nz) image becomes an (nx, 1, nz) volume: axis 0 along the frame's ``ex``,
    axis 1 along the beam ``ey``, axis 2 along ``ez``, pixel size ``frame.pixel_mm``.
    The plane passes through ``plane_point_mm`` (LPS; e.g. the femoral head centre),
    so the image lies over the femur in the 3-D scene.
    """
    frame = projection.frame
    origin = np.asarray(frame.origin_mm, dtype=float)
    if plane_point_mm is not None:
        ey = np.asarray(frame.ey, dtype=float)
        origin = origin + (np.asarray(plane_point_mm) - origin) @ ey * ey
    nx, nz = frame.shape
    return Geometry(shape=(nx, 1, nz), spacing_mm=(frame.pixel_mm,) * 3, origin_mm=tuple(origin),
                    direction=np.column_stack([frame.ex, frame.ey, frame.ez]))


def _femur_roi_color_node(scene: Any) -> Any:
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(ROLE_ATTRIBUTE) == "femur_rois":
            return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "CTMuscleBone femur ROIs")
    node.SetTypeToUser()
    node.SetNumberOfColors(3)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    node.SetColor(1, "total hip", 0.2, 0.6, 1.0, 1.0)
    node.SetColor(2, "femoral neck", 1.0, 0.5, 0.1, 1.0)
    node.SetAttribute(ROLE_ATTRIBUTE, "femur_rois")
    return node


def femur_projection_nodes(scene: Any, results: Any) -> dict[str, FemurProjectionNodes]:
    """Volume nodes of the femur DXA-view projections of a measurement.

    Parameters
    ----------
    scene : vtkMRMLScene
    results : Results
        ``results.artifacts['femur']`` is the femur output (``.projections``: side ->
        ``FemurProjection``), present when femurs were measured.

    Returns
    -------
    dict
        Side ('left'/'right') -> :class:`FemurProjectionNodes`; empty when there are no
        projections.
    """
    femur = (getattr(results, "artifacts", None) or {}).get("femur")
    projections = getattr(femur, "projections", None) or {}
    out: dict[str, FemurProjectionNodes] = {}
    for side, fp in projections.items():
        proj = fp.projection
        landmarks = getattr(fp, "landmarks", None)
        point = getattr(landmarks, "head_centre_mm", None)
        geometry = projection_geometry(proj, point)
        image = np.asarray(proj.areal_density_g_cm2, dtype=np.float32)[:, None, :]
        density = volume_node_from_array(scene, image, geometry,
                                         f"Femur {side} DXA-view aBMD (g/cm2)")
        rois = np.zeros(geometry.shape, dtype=np.uint8)
        for roi, value in FEMUR_ROI_VALUES.items():
            mask = fp.roi_masks.get(roi)
            if mask is not None:
                rois[np.asarray(mask, dtype=bool)[:, None, :]] = value
        roi_node = volume_node_from_array(scene, rois, geometry, f"Femur {side} DXA ROIs",
                                          "vtkMRMLLabelMapVolumeNode")
        roi_node.GetDisplayNode().SetAndObserveColorNodeID(_femur_roi_color_node(scene).GetID())
        out[side] = FemurProjectionNodes(density=density, rois=roi_node)
    return out


def vertebral_roi_segmentation(scene: Any, results: Any, geometry: Geometry,
                               reference_volume_node: Any,
                               name: str = "CTMuscleBone trabecular ROIs") -> Any:
    """A segmentation node of the trabecular ROIs the lumbar vBMD values came from.

    Parameters
    ----------
    scene : vtkMRMLScene
    results : Results
        ``results.artifacts['spine']`` (``{vertebra key: VertebraAnalysis}``, from
        :func:`CTMuscleBoneLib.spine.measure.analyse_spine`), present when vertebrae
        were measured.
    geometry : Geometry
        The CT grid the ROI voxel indices refer to.
    reference_volume_node : vtkMRMLVolumeNode
    name : str

    Returns
    -------
    vtkMRMLSegmentationNode or None
        One segment per vertebra with a ROI, named "L3 trabecular ROI" and coloured
        like the vertebra; None when no ROI was measured.
    """
    spine = (getattr(results, "artifacts", None) or {}).get("spine") or {}
    rois = {k: a.roi for k, a in spine.items()
            if getattr(a, "roi", None) is not None and len(a.roi.index)}
    if not rois:
        return None
    array = np.zeros(geometry.shape, dtype=np.uint8)
    structures: dict[int, str] = {}
    for n, (key, roi) in enumerate(sorted(rois.items()), start=1):
        array[tuple(np.asarray(roi.index).T)] = n
        structures[n] = key
    seg_node = segmentation_node_from_label_map(scene, LabelMap(array, geometry, structures),
                                                reference_volume_node, name)
    segmentation = seg_node.GetSegmentation()
    for key in structures.values():
        segment = segmentation.GetSegment(key)
        if segment is not None:
            segment.SetName(f"{key.replace('vertebrae_', '')} trabecular ROI")
    return seg_node
