"""Segmentation node -> LabelMap in one export: the same LabelMap as exporting each segment
on its own (the former algorithm, kept here as the reference), on real MRML classes."""

from __future__ import annotations

import types

import numpy as np
import pytest
import slicer
import slicer_fixtures
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneSlicer import nodes
from test_slicer_adapter import GEOMETRIES

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")

BINARY = "Binary labelmap"


def _reference_label_map(segmentation_node, reference_volume_node) -> LabelMap:
    """The former algorithm: every segment exported on its own, painted in segment order."""
    geometry = nodes.geometry_from_volume_node(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    notes: list[str] = []
    masks: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    names: dict[str, str] = {}
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        name = segment.GetName() or segment_id
        mask = nodes.segment_mask(segmentation_node, segment_id, reference_volume_node)
        if not mask.any():
            notes.append(f"Segment '{name}' is empty; left out.")
            continue
        key = nodes.segment_key(segment_id, segment)
        slot = key if key is not None else f"unknown:{name}"
        if slot in masks:
            notes.append(f"Segment '{name}' is a second segment of "
                         f"'{key or name}'; merged with the first.")
            masks[slot] = masks[slot] | mask
            continue
        masks[slot] = mask
        kinds[slot] = "known" if key is not None else "unknown"
        names[slot] = name
        if key is not None and key != segment_id and key != anatomy.key_for_name(name):
            notes.append(f"Segment '{name}' identified as '{key}' by its terminology codes.")
    array = np.zeros(geometry.shape, dtype=np.uint16)
    structures: dict[int, str] = {}
    unknown: dict[int, str] = {}
    values: dict[str, int] = {}
    n_unknown = 0
    for slot, mask in masks.items():
        if kinds[slot] == "known":
            value = anatomy.structure(slot).label_value
            structures[value] = slot
        else:
            value = nodes.UNKNOWN_LABEL_BASE + n_unknown
            n_unknown += 1
            unknown[value] = names[slot]
        values[slot] = value
        array[mask] = value
    overlays = {slot: mask for slot, mask in masks.items()
                if kinds[slot] == "known" and np.any(array[mask] != values[slot])}
    if overlays:
        notes.append("Overlapping segments: " + ", ".join(sorted(overlays))
                     + " measured each on its own full mask.")
    return LabelMap(array=array, geometry=geometry, structures=structures, unknown=unknown,
                    source=f"3D Slicer segmentation '{segmentation_node.GetName()}'",
                    notes=tuple(notes), overlays=overlays)


def _assert_same(new: LabelMap, ref: LabelMap) -> None:
    assert new.array.dtype == ref.array.dtype and new.array.shape == ref.array.shape
    np.testing.assert_array_equal(new.array, ref.array)
    assert new.geometry.same_grid(ref.geometry, tol_mm=1e-9)
    assert list(new.structures.items()) == list(ref.structures.items())
    assert list(new.unknown.items()) == list(ref.unknown.items())
    assert new.notes == ref.notes
    assert new.source == ref.source
    assert set(new.overlays) == set(ref.overlays)
    for key, mask in ref.overlays.items():
        np.testing.assert_array_equal(np.asarray(new.overlays[key], bool), mask)


class _CountingLogic:
    """The segmentations logic, counting ``ExportSegmentsToLabelmapNode`` calls."""

    def __init__(self, logic) -> None:
        self.logic = logic
        self.exports: list[list[str]] = []

    def ExportSegmentsToLabelmapNode(self, seg, ids, *args):  # noqa: N802 - VTK's name
        self.exports.append([ids.GetValue(i) for i in range(ids.GetNumberOfValues())])
        return self.logic.ExportSegmentsToLabelmapNode(seg, ids, *args)

    def __getattr__(self, name):
        return getattr(self.logic, name)


@pytest.fixture
def counting(slicer_env, monkeypatch):
    counter = _CountingLogic(slicer_env.logics["segmentations"])
    modules = types.SimpleNamespace(**vars(slicer.modules))
    modules.segmentations = types.SimpleNamespace(logic=lambda: counter)
    monkeypatch.setattr(slicer, "modules", modules)
    return counter


# ------------------------------------------------------------------------------------
# segmentations to compare on
# ------------------------------------------------------------------------------------
def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def _add(seg, segment_id: str, name: str, mask_ijk: np.ndarray | None, volume) -> str:
    """A segment on its own layer (``updateSegmentBinaryLabelmapFromArray``), or empty."""
    sid = seg.GetSegmentation().AddEmptySegment(segment_id, name)
    if mask_ijk is not None:
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            np.ascontiguousarray(mask_ijk.transpose(2, 1, 0)).astype(np.uint8), seg, sid, volume)
    return sid


def _shared_layer(scene, ct_node, g: Geometry):
    """Several structures, a duplicate and an unknown segment, all on one layer."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "shared")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    ids = ["femur_left", "gluteus_maximus_left", "liver", "Femur (left)", "vertebrae_L3"]
    arr = np.zeros(g.shape, np.uint8)
    arr[1:4, 1:3, 1:3] = 1
    arr[5:8, 1:4, 2:5] = 2
    arr[0, 7, 0] = 3
    arr[1:3, 5:8, 5:7] = 4  # a second piece of the left femur
    arr[2:4, 5:7, 3:5] = 5
    for sid in ids:
        seg.GetSegmentation().AddEmptySegment(sid, sid)
    nodes._import_labels(scene, seg, arr, g, ids)
    return seg


def _layers(scene, ct_node, g: Geometry):
    """Overlapping segments on several layers, next to a shared layer; a structure made
    of two segments with another one between them; an empty and an unknown segment."""
    seg = _shared_layer(scene, ct_node, g)
    s = g.shape
    _add(seg, "gluteus_medius_left", "gluteus_medius_left", _box(s, (1, 1, 1), (6, 6, 5)),
         ct_node)
    _add(seg, "gluteus_minimus_left", "gluteus_minimus_left", _box(s, (4, 3, 2), (8, 7, 6)),
         ct_node)
    _add(seg, "empty", "Segment_empty", None, ct_node)
    _add(seg, "Segment_9", "Gluteus medius (left)", _box(s, (6, 0, 0), (9, 3, 3)), ct_node)
    _add(seg, "kidney", "kidney", _box(s, (0, 0, 4), (3, 3, 7)), ct_node)
    return seg


def _duplicate_after_empty(scene, ct_node, g: Geometry):
    """The first segment of a structure is empty; its second one overlaps a segment that
    comes between them (the structure is painted where its first non-empty segment is)."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "dup")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    s = g.shape
    _add(seg, "femur_left", "femur_left", None, ct_node)
    _add(seg, "sartorius_left", "sartorius_left", _box(s, (1, 1, 1), (5, 5, 5)), ct_node)
    _add(seg, "Segment_3", "Femur (left)", _box(s, (3, 3, 3), (8, 7, 6)), ct_node)
    _add(seg, "Segment_4", "Sartorius (left)", _box(s, (6, 0, 0), (9, 2, 2)), ct_node)
    return seg


def _duplicate_around_other(scene, ct_node, g: Geometry):
    """A structure in two segments with an overlapping one between them: the later piece
    loses the shared voxels to the one in between (the structure is painted first)."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "dup2")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    s = g.shape
    _add(seg, "femur_left", "femur_left", _box(s, (0, 0, 0), (3, 3, 3)), ct_node)
    _add(seg, "sartorius_left", "sartorius_left", _box(s, (1, 1, 1), (5, 5, 5)), ct_node)
    _add(seg, "Segment_3", "Femur (left)", _box(s, (3, 3, 3), (8, 7, 6)), ct_node)
    return seg


BUILDERS = {"shared_layer": _shared_layer, "layers": _layers,
            "duplicate_after_empty": _duplicate_after_empty,
            "duplicate_around_other": _duplicate_around_other}


@pytest.mark.parametrize("geometry", ["identity", "oblique"])
@pytest.mark.parametrize("case", list(BUILDERS))
def test_one_export_gives_the_per_segment_label_map(slicer_env, counting, case, geometry):
    g = GEOMETRIES[geometry]
    scene = slicer_env.scene
    ct_node = nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")
    seg = BUILDERS[case](scene, ct_node, g)
    ref = _reference_label_map(seg, ct_node)
    n_nodes = scene.GetNumberOfNodes()
    counting.exports.clear()
    new = nodes.label_map_from_segmentation_node(seg, ct_node)
    _assert_same(new, ref)
    assert scene.GetNumberOfNodes() == n_nodes  # no temporary node (or colour table) left
    segmentation = seg.GetSegmentation()
    n_segments = segmentation.GetNumberOfSegments()
    n_layers = segmentation.GetNumberOfLayers(BINARY)
    if n_layers == 1:
        assert len(counting.exports) == 1
    else:
        assert len(counting.exports) in (1 + n_layers, 2 * (1 + n_layers))
    assert len(counting.exports[0]) <= n_segments
    if case == "shared_layer":
        assert n_layers == 1 and n_segments == 5  # the old algorithm: 5 exports
        assert list(new.unknown.values()) == ["liver"]
        assert any("second segment" in n for n in new.notes)
    if case == "layers":
        assert {"gluteus_medius_left", "femur_left"} <= set(new.overlays)
        assert any("empty" in n for n in new.notes)
        assert list(new.unknown.values()) == ["liver", "kidney"]
    if case == "duplicate_after_empty":
        assert set(new.overlays) == {"sartorius_left"}  # femur is painted after sartorius
        assert len(counting.exports) == 2 * (1 + n_layers)  # the order was settled again
    if case == "duplicate_around_other":
        assert set(new.overlays) == {"femur_left"}


def test_internal_labelmap_geometry_differs_from_the_reference(slicer_env, counting):
    """Segments held on a finer, shifted grid are resampled to the CT grid as before."""
    scene = slicer_env.scene
    g = GEOMETRIES["oblique"]
    ct_node = nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")
    fine = Geometry((20, 15, 16), (0.5, 0.5, 0.5),
                    tuple(np.asarray(g.origin_mm) + g.direction @ np.array([-1.0, 0.25, -0.5])),
                    g.direction)
    fine_node = nodes.volume_node_from_array(scene, np.zeros(fine.shape, np.int16), fine,
                                             "fine")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(fine_node)
    s = fine.shape
    _add(seg, "femur_left", "femur_left", _box(s, (2, 2, 2), (11, 9, 9)), fine_node)
    _add(seg, "femur_right", "femur_right", _box(s, (7, 5, 4), (17, 14, 12)), fine_node)
    _add(seg, "liver", "liver", _box(s, (0, 0, 12), (6, 5, 16)), fine_node)
    _add(seg, "tiny", "sartorius_left", _box(s, (19, 14, 15), (20, 15, 16)), fine_node)
    binary = seg.GetSegmentation().GetSegment("femur_left").GetRepresentation(BINARY)
    assert binary.GetSpacing() == pytest.approx((0.5, 0.5, 0.5))
    ref = _reference_label_map(seg, ct_node)
    counting.exports.clear()
    new = nodes.label_map_from_segmentation_node(seg, ct_node)
    _assert_same(new, ref)
    assert new.structures and new.array.any()
    assert len(counting.exports) == 1 + seg.GetSegmentation().GetNumberOfLayers(BINARY)


def test_segment_mask_still_exports_one_full_segment(slicer_env):
    g = GEOMETRIES["identity"]
    scene = slicer_env.scene
    ct_node = nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")
    seg = _duplicate_around_other(scene, ct_node, g)
    np.testing.assert_array_equal(nodes.segment_mask(seg, "sartorius_left", ct_node),
                                  _box(g.shape, (1, 1, 1), (5, 5, 5)))


def test_no_segments_gives_an_empty_label_map(slicer_env, counting):
    g = GEOMETRIES["identity"]
    scene = slicer_env.scene
    ct_node = nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "none")
    new = nodes.label_map_from_segmentation_node(seg, ct_node)
    _assert_same(new, _reference_label_map(seg, ct_node))
    assert not new.array.any() and counting.exports == []
