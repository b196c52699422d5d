"""MRML nodes <-> core types, with the real MRML classes of slicer-core (headless)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import slicer
import slicer_fixtures
import vtk
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.io_labels import read_labels
from CTMuscleBoneLib.results import ResultRow, Results, display_name
from CTMuscleBoneSlicer import nodes, terminology

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")

F = np.diag([-1.0, -1.0, 1.0])


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


GEOMETRIES = {
    "identity": Geometry((9, 8, 7), (1.0, 1.0, 1.0)),
    "ras_flipped": Geometry((9, 8, 7), (1.0, 1.0, 1.0), (12.0, -5.0, 3.0),
                            np.diag([-1.0, -1.0, 1.0])),
    "permuted": Geometry((9, 8, 7), (1.0, 1.5, 2.0), (1.0, 2.0, 3.0),
                         np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])),
    "oblique": Geometry((9, 8, 7), (1.0, 1.0, 1.0), (-20.0, 30.0, 40.0),
                        _rotation([1, 2, 3], 20.0)),
    "anisotropic": Geometry((9, 8, 7), (0.7, 0.9, 2.5), (5.0, 6.0, -7.0),
                            _rotation([0, 0, 1], 20.0) @ np.diag([1.0, -1.0, -1.0])),
}


def _ras_of_index(node, ijk) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array(m.MultiplyPoint([*map(float, ijk), 1.0])[:3])


def _ct_node(scene, g: Geometry):
    """An all-zero CT volume node on ``g``."""
    return nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")


# ------------------------------------------------------------------------------------
# volumes
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_volume_round_trip_keeps_values_and_positions(slicer_env, name):
    g = GEOMETRIES[name]
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 2000, g.shape).astype(np.int16)
    marked = (6, 2, 5)
    hu[marked] = 3000
    node = nodes.volume_node_from_array(slicer_env.scene, hu, g, "ct")
    # Slicer's own view of the node: KJI array, IJK->RAS matrix
    kji = slicer.util.arrayFromVolume(node)
    assert kji[marked[2], marked[1], marked[0]] == 3000
    np.testing.assert_allclose(_ras_of_index(node, marked),
                               F @ g.index_to_physical(np.array(marked)), atol=1e-6)
    ct = nodes.ct_from_volume_node(node)
    assert ct.geometry.same_grid(g, tol_mm=1e-6)
    np.testing.assert_array_equal(ct.hu, hu)
    assert ct.hu.dtype == np.int16
    assert not np.shares_memory(ct.hu, kji)
    assert ct.metadata.modality is None and "ct" in ct.metadata.source


@pytest.mark.parametrize("name", ["oblique", "anisotropic"])
def test_ct_from_node_made_by_slicer_util(slicer_env, name):
    """Independent of our writer: a node from slicer.util.addVolumeFromArray."""
    g = GEOMETRIES[name]
    kji = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape[::-1])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = F @ g.direction * np.asarray(g.spacing_mm)[None, :]
    ijk_to_ras[:3, 3] = F @ np.asarray(g.origin_mm)
    node = slicer.util.addVolumeFromArray(kji, ijk_to_ras, "ct")
    ct = nodes.ct_from_volume_node(node)
    for ijk in [(0, 0, 0), (8, 1, 3), (2, 7, 6)]:
        assert ct.hu[ijk] == kji[ijk[2], ijk[1], ijk[0]]
        np.testing.assert_allclose(F @ ct.geometry.index_to_physical(np.array(ijk)),
                                   _ras_of_index(node, ijk), atol=1e-6)
    kji[0, 0, 0] = -5  # the CT is a copy
    assert ct.hu[0, 0, 0] == 0


def test_transformed_volume_is_refused(slicer_env):
    from CTMuscleBoneLib.errors import InputError

    node = _ct_node(slicer_env.scene, Geometry((3, 3, 3), (1, 1, 1)))
    tnode = slicer_env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(tnode.GetID())
    with pytest.raises(InputError, match="Harden"):
        nodes.ct_from_volume_node(node)


class _FakeDicomDatabase:
    def __init__(self, values):
        self.values = values

    def instanceValue(self, uid, tag):  # noqa: N802 - ctkDICOMDatabase's name
        assert uid == "1.2.3"
        return self.values.get(tag, "")


def test_patient_info_from_dicom_database(slicer_env):
    node = _ct_node(slicer_env.scene, Geometry((3, 3, 3), (1, 1, 1)))
    assert nodes.patient_info_from_volume_node(node) == {}  # not from DICOM
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    assert nodes.patient_info_from_volume_node(node) == {}  # no database headless
    db = _FakeDicomDatabase({"0010,0040": "F", "0010,1010": "071Y", "0010,1020": "162",
                             "0008,0060": "CT"})
    info = nodes.patient_info_from_volume_node(node, db)
    assert info == {"sex": "F", "age_years": 71.0, "height_m": 1.62, "modality": "CT"}
    ct = nodes.ct_from_volume_node(node, db)
    assert (ct.metadata.patient_sex, ct.metadata.patient_height_m) == ("F", 1.62)
    assert ct.metadata.kvp is None and ct.metadata.contrast_agent is None
    # the tube voltage (Pickhardt's 120 kVp, the K2HPO4-to-HA ratio) and a stated
    # contrast agent reach the core as a DICOM file's header would
    db.values.update({"0018,0060": "100", "0018,0010": "IOMERON 350"})
    info = nodes.patient_info_from_volume_node(node, db)
    assert info["kvp"] == 100.0 and info["contrast_agent"] == "IOMERON 350"
    ct = nodes.ct_from_volume_node(node, db)
    assert (ct.metadata.kvp, ct.metadata.contrast_agent) == (100.0, "IOMERON 350")
    db.values["0018,0060"] = "n/a"
    assert "kvp" not in nodes.patient_info_from_volume_node(node, db)


# ------------------------------------------------------------------------------------
# label maps <-> segmentations
# ------------------------------------------------------------------------------------
KEYS = ("femur_left", "gluteus_maximus_left", "vertebrae_L3", "sartorius_right")


def _labels(g: Geometry, unknown: bool = True) -> LabelMap:
    arr = np.zeros(g.shape, dtype=np.uint16)
    arr[1:4, 1:3, 1:3] = anatomy.structure("femur_left").label_value
    arr[5:8, 1:4, 2:5] = anatomy.structure("gluteus_maximus_left").label_value
    arr[2:4, 5:7, 4:6] = anatomy.structure("vertebrae_L3").label_value
    arr[6, 6, 6] = anatomy.structure("sartorius_right").label_value
    structures = {anatomy.structure(k).label_value: k for k in KEYS}
    extra = {}
    if unknown:
        arr[0, 7, 0] = 250
        extra = {250: "liver"}
    return LabelMap(arr, g, structures, unknown=extra, source="test")


def _labelled(scene, name: str, unknown: bool = False):
    """(labels, CT node, segmentation node made from the labels) on ``GEOMETRIES[name]``."""
    labels = _labels(GEOMETRIES[name], unknown)
    ct_node = _ct_node(scene, labels.geometry)
    return labels, ct_node, nodes.segmentation_node_from_label_map(scene, labels, ct_node,
                                                                   "labels")


def _segments(seg_node) -> dict[str, object]:
    s = seg_node.GetSegmentation()
    return {sid: s.GetSegment(sid) for sid in s.GetSegmentIDs()}


@pytest.mark.parametrize("name", ["identity", "oblique", "anisotropic"])
def test_label_map_segmentation_round_trip(slicer_env, name):
    g = GEOMETRIES[name]
    labels, ct_node, seg = _labelled(slicer_env.scene, name, unknown=True)
    segs = _segments(seg)
    assert list(segs) == sorted(KEYS, key=lambda k: anatomy.structure(k).label_value)
    for key, segment in segs.items():
        st = anatomy.structure(key)
        assert segment.GetName() == st.display_name
        np.testing.assert_allclose(segment.GetColor(), np.array(st.color_rgb) / 255.0)
        assert segment.GetTerminology() == terminology.terminology_entry_for(key)
    assert json.loads(seg.GetAttribute(nodes.UNKNOWN_LABELS_ATTRIBUTE)) == {"250": "liver"}
    back = nodes.label_map_from_segmentation_node(seg, ct_node)
    assert back.geometry.same_grid(g, tol_mm=1e-6)
    expected = np.where(labels.array == 250, 0, labels.array)
    np.testing.assert_array_equal(back.array, expected)
    assert back.structures == labels.structures
    assert back.unknown == {}
    assert not getattr(back, "overlays", {})


def test_overlapping_segments_keep_full_masks(slicer_env):
    g = GEOMETRIES["oblique"]
    ct_node = _ct_node(slicer_env.scene, g)
    seg = slicer_env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    a = np.zeros(g.shape, bool)
    a[1:6, 1:6, 1:5] = True
    b = np.zeros(g.shape, bool)
    b[4:8, 3:7, 2:6] = True
    for key, mask in (("gluteus_medius_left", a), ("gluteus_minimus_left", b)):
        seg.GetSegmentation().AddEmptySegment(key, key)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.transpose(2, 1, 0).astype(np.uint8), seg, key, ct_node)
    back = nodes.label_map_from_segmentation_node(seg, ct_node)
    assert set(back.overlays) == {"gluteus_medius_left"}  # the earlier segment lost voxels
    np.testing.assert_array_equal(back.overlays["gluteus_medius_left"], a)
    np.testing.assert_array_equal(back.mask("gluteus_medius_left"), a)
    np.testing.assert_array_equal(back.mask("gluteus_minimus_left"), b)
    # ... and back into a segmentation: both full masks again
    seg2 = nodes.segmentation_node_from_label_map(slicer_env.scene, back, ct_node, "again")
    np.testing.assert_array_equal(nodes.segment_mask(seg2, "gluteus_medius_left", ct_node), a)
    np.testing.assert_array_equal(nodes.segment_mask(seg2, "gluteus_minimus_left", ct_node), b)


def test_totalsegmentator_names_and_tags_map_to_keys(slicer_env):
    g = GEOMETRIES["identity"]
    ct_node = _ct_node(slicer_env.scene, g)
    seg = slicer_env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    names = ["gluteus_maximus_left", "femur_right", "vertebrae_L3", "liver", "Segment_X"]
    tag = ("Segmentation category and type - Total Segmentator~SCT^123037004^Anatomical "
           "Structure~SCT^78333006^Gluteus medius muscle~SCT^7771000^Left~Anatomic codes - "
           "DICOM master list~^^~^^")
    for n, name in enumerate(names):
        sid = seg.GetSegmentation().AddEmptySegment("", name)
        if name == "Segment_X":
            seg.GetSegmentation().GetSegment(sid).SetTerminology(tag)
        mask = np.zeros(g.shape[::-1], np.uint8)
        mask[n, 0, 0] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, ct_node)
    back = nodes.label_map_from_segmentation_node(seg, ct_node)
    assert sorted(back.structures.values()) == sorted(
        ["gluteus_maximus_left", "femur_right", "vertebrae_L3", "gluteus_medius_left"])
    assert list(back.unknown.values()) == ["liver"]
    assert back.mask("gluteus_medius_left")[0, 0, 4]
    assert any("terminology" in n for n in back.notes)


# ------------------------------------------------------------------------------------
# edits
# ------------------------------------------------------------------------------------
def _phantom():
    from CTMuscleBoneLib.phantoms.builder import PhantomSpec, make_phantom

    return make_phantom(PhantomSpec(region="thigh", spacing_mm=4.0, bones=(), vessels=False,
                                    muscles=("rectus_femoris", "sartorius")))


def _phantom_in_scene(scene):
    """The thigh phantom as a volume node and a segmentation node, read back."""
    phantom = _phantom()
    ct_node = nodes.volume_node_from_array(scene, phantom.ct.hu, phantom.geometry, "ct")
    ct = nodes.ct_from_volume_node(ct_node)
    seg = nodes.segmentation_node_from_label_map(scene, phantom.labels, ct_node, "labels")
    return ct_node, ct, seg, nodes.label_map_from_segmentation_node(seg, ct_node)


def test_edit_is_tracked_and_remeasured(slicer_env):
    ct_node, ct, seg, labels = _phantom_in_scene(slicer_env.scene)
    tracker = nodes.SegmentEditTracker(seg)
    try:
        key = "rectus_femoris_left"
        mask = labels.mask(key).copy()
        idx = np.argwhere(mask)
        mask[tuple(idx[idx[:, 2] == idx[:, 2].max()].T)] = False  # shave the top slice
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.transpose(2, 1, 0).astype(np.uint8), seg, key, ct_node)
        assert tracker.changed_keys(labels) == {key}
        assert tracker.changed_keys(labels, ct_node) == {key}
        edited = nodes.label_map_from_segmentation_node(seg, ct_node)
        np.testing.assert_array_equal(edited.mask(key), mask)

        from CTMuscleBoneLib import pipeline

        options = pipeline.MeasureOptions(calibration="none")
        before = pipeline.measure(ct, labels, options)
        re = pipeline.remeasure(ct, edited, before, tracker.changed_keys(labels), options)
        changed_structures = {s for s, _ in re.changed_rows}
        assert key in changed_structures
        assert changed_structures <= {key, "thigh_left", "thigh_total", "lower_limb_left",
                                      "lower_limb_total", "patient"}
        old = {(r.structure, r.quantity): r for r in before.rows}
        for row in re.results.rows:
            if row.structure.startswith(("rectus_femoris_right", "sartorius")):
                assert row.value == old[(row.structure, row.quantity)].value
        tracker.reset()
        assert tracker.changed_keys(labels) == set()
    finally:
        tracker.remove()
    seg.GetSegmentation().GetSegment("sartorius_left").SetName("renamed")
    assert tracker.changed_keys(labels) == set()  # observers removed


def test_edit_that_swaps_sides_leaves_the_pair_out(slicer_env):
    # a reviewer paints each rectus femoris into the other side's segment: the pair
    # breaks the left-right layout (label_layout), both are left out on re-measuring,
    # and the untouched sartorius keeps its values
    ct_node, ct, seg, labels = _phantom_in_scene(slicer_env.scene)
    tracker = nodes.SegmentEditTracker(seg)
    try:
        left, right = "rectus_femoris_left", "rectus_femoris_right"
        mask_l, mask_r = labels.mask(left).copy(), labels.mask(right).copy()
        for key, mask in ((left, mask_r), (right, mask_l)):
            slicer.util.updateSegmentBinaryLabelmapFromArray(
                mask.transpose(2, 1, 0).astype(np.uint8), seg, key, ct_node)
        edited = nodes.label_map_from_segmentation_node(seg, ct_node)
        assert tracker.changed_keys(labels) == {left, right}

        from CTMuscleBoneLib import pipeline

        options = pipeline.MeasureOptions(calibration="none")
        before = pipeline.measure(ct, labels, options)
        re = pipeline.remeasure(ct, edited, before, tracker.changed_keys(labels), options)
        got = {r.structure for r in re.results.rows}
        assert left not in got and right not in got
        assert any(f"{left} and {right} left out" in w for w in re.results.warnings)
        old = {(r.structure, r.quantity): r.value for r in before.rows}
        for row in re.results.rows:
            if row.structure.startswith("sartorius"):
                assert row.value == old[(row.structure, row.quantity)]
    finally:
        tracker.remove()


def test_tracker_finds_segments_overwritten_by_an_edit(slicer_env):
    labels, ct_node, seg = _labelled(slicer_env.scene, "identity")
    tracker = nodes.SegmentEditTracker(seg)
    try:
        # a direct edit of the shared layer: femur_left takes all of gluteus_maximus_left
        # (as painting with "overwrite other segments" does; no event names the loser)
        seg_obj = seg.GetSegmentation()
        arr = slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, "femur_left")
        femur_value = seg_obj.GetSegment("femur_left").GetLabelValue()
        gm_value = seg_obj.GetSegment("gluteus_maximus_left").GetLabelValue()
        arr[arr == gm_value] = femur_value
        seg_obj.GetSegment("femur_left").Modified()
        # the segment-level event names only femur_left; content comparison finds both
        assert "gluteus_maximus_left" not in tracker.changed_keys(labels)
        seg_obj.InvokeEvent(slicer.vtkSegmentation.RepresentationModified)
        assert tracker.changed_keys(labels, ct_node) == {"femur_left", "gluteus_maximus_left"}
        now = nodes.label_map_from_segmentation_node(seg, ct_node)  # same answer, no export
        assert tracker.changed_keys(labels, current=now) == {"femur_left", "gluteus_maximus_left"}
    finally:
        tracker.remove()


def test_tracker_sees_added_and_removed_segments(slicer_env):
    labels, _, seg = _labelled(slicer_env.scene, "identity")
    tracker = nodes.SegmentEditTracker(seg)
    try:
        seg.GetSegmentation().RemoveSegment("vertebrae_L3")
        seg.GetSegmentation().AddEmptySegment("", "Gluteus medius (right)")
        assert tracker.changed_keys(labels) == {"vertebrae_L3", "gluteus_medius_right"}
        assert tracker.removed_ids == {"vertebrae_L3"}
    finally:
        tracker.remove()


# ------------------------------------------------------------------------------------
# table, heatmap, navigation, projections
# ------------------------------------------------------------------------------------
def _results() -> Results:
    r = Results()
    r.extend([
        ResultRow("gluteus_medius_left", "volume", 123.456789, "cm3", "count"),
        ResultRow("femur_left", "abmd_total_hip", None, "g/cm2", "proj",
                  ["not_measurable: no calibration"]),
        ResultRow("femur_left", "who_category_total_hip", "osteopenia", ""),
        ResultRow("lower_limb_total", "mass", 1234, "g", "", ["a", "b"]),
        ResultRow("patient", "smi", float("nan"), "kg/m2"),
    ])
    return r


def test_table_node_equals_results(slicer_env):
    results = _results()
    edited = {("gluteus_medius_left", "volume")}
    rows = nodes.table_rows(results, edited)
    assert rows[0] == ("Gluteus medius (left)", "gluteus_medius_left", "volume", "123.5", "cm3",
                       "", "yes")  # volumes: one decimal (results.DISPLAY_DECIMALS)
    assert rows[1][3] == "" and rows[1][5] == "not_measurable: no calibration"
    assert rows[2][3] == "osteopenia" and rows[4][3] == ""
    assert rows[3][0] == display_name("lower_limb_total") and rows[3][5] == "a; b"
    # names and values exactly as results.csv writes them
    csv_rows = list(csv.DictReader(io.StringIO(results.to_csv_text())))
    assert [r[3] for r in rows] == [c["value"] for c in csv_rows]
    assert [r[0] for r in rows] == [c["display_name"] for c in csv_rows]
    table = slicer_env.scene.AddNewNodeByClass("vtkMRMLTableNode")
    nodes.update_table_node(table, results, edited)
    assert table.GetNumberOfColumns() == len(nodes.TABLE_COLUMNS)
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == \
        list(nodes.TABLE_COLUMNS)
    assert nodes.table_node_rows(table) == rows
    assert len(rows) == len(results.rows)
    for row, res in zip(rows, results.rows, strict=True):
        assert (row[1], row[2], row[4]) == (res.structure, res.quantity, res.unit)
    nodes.update_table_node(table, Results(rows=results.rows[:2]))  # replaced, not appended
    assert table.GetNumberOfRows() == 2 and nodes.table_node_rows(table)[0][6] == ""


def test_uncertainty_heatmap(slicer_env):
    g = GEOMETRIES["oblique"]
    scene = slicer_env.scene
    ct_node = _ct_node(scene, g)
    unc = np.linspace(0, 0.8, np.prod(g.shape)).reshape(g.shape).astype(np.float32)
    unc_node = nodes.volume_node_from_array(scene, unc, g, "uncertainty")
    color = nodes.show_uncertainty_heatmap(scene, unc_node, ct_node, opacity=0.4, threshold=0.1)
    display = unc_node.GetDisplayNode()
    assert display.GetColorNodeID() == color.GetID()
    assert color.GetNumberOfColors() == 256
    rgba = [0.0] * 4
    color.GetColor(0, rgba)
    np.testing.assert_allclose(rgba[:3], np.array(nodes.INFERNO_ANCHORS[0]) / 255)
    color.GetColor(255, rgba)
    np.testing.assert_allclose(rgba[:3], np.array(nodes.INFERNO_ANCHORS[-1]) / 255)
    assert not display.GetAutoWindowLevel()
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(0.8)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.1)
    composites = slicer_env.composite_nodes()
    assert len(composites) == 3
    for comp in composites:
        assert comp.GetBackgroundVolumeID() == ct_node.GetID()
        assert comp.GetForegroundVolumeID() == unc_node.GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(0.4)
    again = nodes.show_uncertainty_heatmap(scene, unc_node, ct_node, visible=False)
    assert again.GetID() == color.GetID()  # reused
    assert not display.GetApplyThreshold()
    assert all(c.GetForegroundOpacity() == 0.0 for c in composites)


def test_center_on_segment_moves_every_slice_view(slicer_env):
    g = GEOMETRIES["anisotropic"]
    labels, ct_node, seg = _labelled(slicer_env.scene, "anisotropic")
    center = nodes.center_on_segment(slicer_env.scene, seg, "gluteus_maximus_left")
    idx = np.argwhere(labels.mask("gluteus_maximus_left"))
    lo = g.index_to_physical(idx) @ F.T  # RAS of the segment's voxels
    assert center is not None
    assert np.min(np.linalg.norm(lo - np.array(center), axis=1)) < 2.6  # inside / at a voxel
    assert len(slicer_env.slice_nodes()) == 3
    for sn in slicer_env.slice_nodes():
        m = sn.GetSliceToRAS()
        np.testing.assert_allclose([m.GetElement(r, 3) for r in range(3)], center, atol=1e-6)
    assert nodes.center_on_segment(slicer_env.scene, seg, "no_such_segment") is None


def test_seg_nrrd_round_trip(slicer_env, tmp_path):
    g = GEOMETRIES["oblique"]
    scene = slicer_env.scene
    labels, ct_node, seg = _labelled(scene, "oblique")
    path = tmp_path / "labels.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(writer)
    writer.SetFileName(str(path))
    assert writer.WriteData(seg)
    seg2 = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "read")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(reader)
    reader.SetFileName(str(path))
    assert reader.ReadData(seg2)
    a, b = _segments(seg), _segments(seg2)
    assert list(a) == list(b)
    for sid in a:
        assert b[sid].GetName() == a[sid].GetName()
        np.testing.assert_allclose(b[sid].GetColor(), a[sid].GetColor(), atol=1e-6)
        assert b[sid].GetTerminology() == terminology.terminology_entry_for(sid)
    back = nodes.label_map_from_segmentation_node(seg2, ct_node)
    np.testing.assert_array_equal(back.array, labels.array)
    # the core reads our file too, to the same keys and voxels
    core = read_labels(path, g, label_format="seg.nrrd")
    assert sorted(core.structures.values()) == sorted(labels.structures.values())
    for key in labels.structures.values():
        np.testing.assert_array_equal(core.mask(key), labels.mask(key))


def test_femur_projection_nodes(slicer_env):
    from CTMuscleBoneLib.femur.dxa_projection import DXAFrame, Projection
    from CTMuscleBoneLib.femur.measure import FemurOutput, FemurProjection

    ex, ey, ez = np.eye(3)
    frame = DXAFrame(np.array([10.0, 0.0, -5.0]), ex, ey, ez, 0.25, (40, 60))
    density = np.random.default_rng(0).random((40, 60))
    roi_th = np.zeros((40, 60), bool)
    roi_th[5:30, 10:50] = True
    roi_neck = np.zeros((40, 60), bool)
    roi_neck[20:25, 40:45] = True
    landmarks = type("L", (), {"head_centre_mm": np.array([12.0, 33.0, 4.0])})()
    fp = FemurProjection(Projection(density, roi_th, frame), 0.25,
                         {"total_hip": roi_th, "femoral_neck": roi_neck}, {}, 5.0, landmarks)
    results = Results(artifacts={"femur": FemurOutput(projections={"left": fp})})
    out = nodes.femur_projection_nodes(slicer_env.scene, results)
    assert list(out) == ["left"]
    dens = slicer.util.arrayFromVolume(out["left"].density)  # K, J, I
    assert dens.shape == (60, 1, 40)
    np.testing.assert_allclose(dens[:, 0, :].T, density, rtol=1e-6)
    rois = slicer.util.arrayFromVolume(out["left"].rois)[:, 0, :].T
    assert (rois == 2).sum() == roi_neck.sum()
    assert (rois >= 1).sum() == roi_th.sum()
    # pixel (i, k) lies at origin + i*0.25*ex + k*0.25*ez, in the plane of the head centre
    lps = F @ _ras_of_index(out["left"].density, (4, 0, 8))
    np.testing.assert_allclose(lps, [10.0 + 1.0, 33.0, -5.0 + 2.0], atol=1e-6)
    assert nodes.femur_projection_nodes(slicer_env.scene, Results()) == {}


def test_vertebral_roi_segmentation_shows_the_measured_voxels(slicer_env):
    """The trabecular ROIs the lumbar values came from, as a segmentation: each segment
    holds exactly the ROI voxels of its vertebra."""
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(region="lumbar", spacing_mm=3.0, seed=4,
                                  orientation="oblique", muscles=("psoas_major",)))
    res = pipeline.measure(ph.ct, ph.labels, pipeline.MeasureOptions(calibration="none"))
    spine = res.artifacts["spine"]
    ct_node = nodes.volume_node_from_array(slicer_env.scene, ph.ct.hu, ph.ct.geometry, "ct")
    seg = nodes.vertebral_roi_segmentation(slicer_env.scene, res, ph.ct.geometry, ct_node)
    assert seg is not None
    segmentation = seg.GetSegmentation()
    measured = [k for k, a in spine.items() if a.roi is not None and len(a.roi.index)]
    assert sorted(segmentation.GetSegmentIDs()) == sorted(measured)
    for key in measured:
        assert segmentation.GetSegment(key).GetName() == \
            f"{key.replace('vertebrae_', '')} trabecular ROI"
        mask = nodes.segment_mask(seg, key, ct_node)
        expected = np.zeros(ph.ct.geometry.shape, dtype=bool)
        expected[tuple(spine[key].roi.index.T)] = True
        assert np.array_equal(mask, expected), key
    empty = Results()
    assert nodes.vertebral_roi_segmentation(slicer_env.scene, empty, ph.ct.geometry,
                                            ct_node) is None
