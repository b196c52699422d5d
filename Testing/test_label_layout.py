"""Anatomical layout of label maps (label_layout): left-right pairs, vertebral order,
the TotalSegmentator version they imply, mirrored headers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.analysis import measure_case
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.io_ct import read_ct, write_image
from CTMuscleBoneLib.io_labels import TOTALSEG_V1_TOTAL, TOTALSEG_V2_TOTAL, read_labels
from CTMuscleBoneLib.label_layout import (
    MIN_LEFT_RIGHT_SEPARATION_MM,
    apply_layout,
    check_layout,
    check_named_layout,
    label_centroids_mm,
    vertebra_rank,
)
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.phantoms.rasterize import ORIENTATIONS, REORIENT_EXAMPLES


# ------------------------------------------------------------------------------------
# centroids against analytic truth
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", REORIENT_EXAMPLES)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 3.5)])
def test_centroids_are_the_box_centres_in_patient_space(orientation, spacing):
    geom = Geometry((30, 26, 22), spacing, (-12.0, 40.0, -300.0),
                    ORIENTATIONS[orientation])
    a = np.zeros(geom.shape, dtype=np.uint16)
    a[2:9, 3:20, 5:8] = 7
    a[15:29, 0:4, 10:22] = 300
    got = label_centroids_mm(a, geom, pitch_mm=None)  # every voxel: exact
    sampled = label_centroids_mm(a, geom)  # every voxel within 2 mm pitch
    assert sorted(got) == sorted(sampled) == [7, 300]
    for value, box in ((7, [(2, 9), (3, 20), (5, 8)]), (300, [(15, 29), (0, 4), (10, 22)])):
        centre_index = np.array([(lo + hi - 1) / 2.0 for lo, hi in box])
        truth = geom.index_to_physical(centre_index[None])[0]
        np.testing.assert_allclose(got[value], truth, atol=1e-9)
        # sampled: off by at most half the sampled pitch along each axis
        step = np.maximum(1, np.floor(2.0 / np.asarray(spacing) + 1e-9))
        bound = float(np.linalg.norm(0.5 * (step - 1) * np.asarray(spacing))) + 1e-9
        assert np.linalg.norm(sampled[value] - truth) <= bound


def test_centroids_of_an_empty_map():
    geom = Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert label_centroids_mm(np.zeros(geom.shape, np.uint8), geom) == {}


# ------------------------------------------------------------------------------------
# the relations
# ------------------------------------------------------------------------------------
def test_vertebra_ranks_run_from_head_to_feet():
    names = ["vertebrae_C7", "vertebrae_T1", "vertebrae_T12", "vertebrae_L1", "vertebrae_L5",
             "sacrum"]
    ranks = [vertebra_rank(n) for n in names]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert vertebra_rank("vertebrae_S1") == vertebra_rank("sacrum")
    assert vertebra_rank("Vertebrae_l3") == vertebra_rank("vertebrae_L3")
    assert vertebra_rank("vertebrae_lumbar") is None and vertebra_rank("femur_left") is None


def test_left_right_margin_and_vertebral_order():
    m = MIN_LEFT_RIGHT_SEPARATION_MM
    ok = check_layout({"femur_left": [90, 0, 0], "femur_right": [-90, 0, 0],
                       "vertebrae_L1": [0, 0, 100], "vertebrae_L2": [0, 5, 70],
                       "sacrum": [0, 20, -40], "vertebrae_S1": [0, 20, -30]})
    assert ok.consistent and ok.n_relations == 3 and ok.n_left_right == 1
    # just inside / outside the margin
    assert check_layout({"x_left": [m + 0.1, 0, 0], "x_right": [0, 0, 0]}).consistent
    close = check_layout({"x_left": [m - 0.1, 0, 0], "x_right": [0, 0, 0]})
    assert not close.consistent and not close.violations[0].mirrored
    near = check_layout({"x_left": [m - 1.0, 0, 0], "x_right": [0, 0, 0]})
    assert f"lies only {m - 1.0:.0f} mm to the patient's left of 'x_right'" in near.describe()
    swapped = check_layout({"vertebrae_L2": [0, 0, 100], "vertebrae_L3": [0, 0, 130]})
    v = swapped.violations[0]
    assert (v.kind, v.first, v.second) == ("vertebral order", "vertebrae_L2", "vertebrae_L3")
    assert v.offset_mm == pytest.approx(-30.0) and "30 mm below" in v.describe()


def test_mirrored_needs_every_pair_and_at_least_two():
    one = check_layout({"a_left": [-50, 0, 0], "a_right": [50, 0, 0]})
    assert not one.consistent and not one.mirrored
    both = check_layout({"a_left": [-50, 0, 0], "a_right": [50, 0, 0],
                         "b_left": [-80, 0, 0], "b_right": [80, 0, 0]})
    assert both.mirrored
    mixed = check_layout({"a_left": [-50, 0, 0], "a_right": [50, 0, 0],
                          "b_left": [80, 0, 0], "b_right": [-80, 0, 0]})
    assert not mixed.mirrored and len(mixed.violations) == 1


# ------------------------------------------------------------------------------------
# the phantom's truth in every storage orientation
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSpec(spacing_mm=3.5, region="full"))


@pytest.mark.parametrize("orientation", REORIENT_EXAMPLES)
def test_phantom_truth_is_laid_out_anatomically(orientation):
    ph = make_phantom(PhantomSpec(spacing_mm=(2.5, 3.0, 3.5), region="full",
                                  orientation=orientation))
    check = check_named_layout(label_centroids_mm(ph.labels.array, ph.labels.geometry),
                               ph.labels.structures)
    assert check.consistent, check.describe()
    assert check.n_left_right >= 10
    assert check.n_relations - check.n_left_right >= 5  # L1 > ... > L5 > sacrum
    out, warnings = apply_layout(ph.labels)
    assert out is ph.labels and warnings == []


def _flip_axis_of_x(geom: Geometry) -> int:
    """The array axis that runs most along the patient's left-right (LPS x)."""
    return int(np.argmax(np.abs(np.asarray(geom.direction)[0])))


def test_mirrored_label_map_is_refused(phantom):
    labels = phantom.labels
    mirrored = LabelMap(np.flip(labels.array, _flip_axis_of_x(labels.geometry)).copy(),
                        labels.geometry, dict(labels.structures), source="test")
    with pytest.raises(InputError, match="Left and right are mirrored") as exc:
        measure_case(phantom.ct, mirrored)
    assert "header" in str(exc.value) and "\n" not in str(exc.value)


def test_swapped_pair_is_left_out_and_the_rest_measured(phantom):
    labels = phantom.labels
    fl, fr = labels.value_of("femur_left"), labels.value_of("femur_right")
    structures = dict(labels.structures)
    structures[fl], structures[fr] = "femur_right", "femur_left"
    bad = LabelMap(labels.array, labels.geometry, structures, source="test")
    out, warnings = apply_layout(bad)
    assert "femur_left" not in out.structures.values()
    assert "femur_right" not in out.structures.values()
    assert "left-right layout broken" in out.unknown[fl]
    assert len(warnings) == 1 and "femur_left" in warnings[0] and "right" in warnings[0]
    assert "gluteus_maximus_left" in out.structures.values()
    assert bad.structures[fl] == "femur_right"  # input not modified
    res = measure_case(phantom.ct, bad)
    assert not [r for r in res.rows if r.structure.startswith("femur")]
    assert any("femur_left and femur_right left out" in w for w in res.warnings)


def test_swapped_vertebra_levels_are_left_out(phantom):
    labels = phantom.labels
    l2, l4 = labels.value_of("vertebrae_L2"), labels.value_of("vertebrae_L4")
    structures = dict(labels.structures)
    structures[l2], structures[l4] = "vertebrae_L4", "vertebrae_L2"
    out, warnings = apply_layout(LabelMap(labels.array, labels.geometry, structures))
    kept = set(out.structures.values())
    assert {"vertebrae_L2", "vertebrae_L3", "vertebrae_L4"}.isdisjoint(kept)
    assert {"vertebrae_L1", "vertebrae_L5", "sacrum"} <= kept
    assert len(warnings) == 2 and all("vertebral order" in out.unknown[v] for v in (l2, l4))


# ------------------------------------------------------------------------------------
# TotalSegmentator v1 / v2: the layout picks the table
# ------------------------------------------------------------------------------------
def _v1_thoracic_map(orientation: str) -> tuple[np.ndarray, Geometry]:
    """A v1 'total' map of a chest and upper abdomen: T4-L1 and ribs 6-9 of both sides.

    With v2 ids T4-T8 read as L1-L5 and T9-T10 as the sacrum: bone either way, in
    head-to-feet order, so only the ribs (v2 femur, hip bone) and T11-L1 (v2 kidney
    cysts, prostate) show the wrong table. 3 mm voxels.
    """
    geom = Geometry((90, 60, 110), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0),
                    ORIENTATIONS[orientation])
    centre = geom.index_to_physical(np.array([[44.5, 29.5, 54.5]]))[0]
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in geom.shape), indexing="ij"), -1)
    xyz = geom.index_to_physical(idx.reshape(-1, 3)).reshape(*geom.shape, 3) - centre
    inv = {n: v for v, n in TOTALSEG_V1_TOTAL.items()}
    a = np.zeros(geom.shape, dtype=np.uint8)

    def box(value: int, c: tuple[float, float, float], half: tuple[float, float, float]):
        inside = np.all(np.abs(xyz - np.asarray(c)) <= np.asarray(half), axis=-1)
        a[inside] = value

    levels = [f"T{n}" for n in range(4, 13)] + ["L1"]  # T4 (top) .. L1
    for i, level in enumerate(levels):
        box(inv[f"vertebrae_{level}"], (0.0, 20.0, 130.0 - 28.0 * i), (18.0, 15.0, 11.0))
    for i, n in enumerate(range(6, 10)):  # ribs: lateral arcs as boxes
        z = 110.0 - 30.0 * i
        box(inv[f"rib_left_{n}"], (110.0, 0.0, z), (12.0, 40.0, 5.0))  # +x: patient left
        box(inv[f"rib_right_{n}"], (-110.0, 0.0, z), (12.0, 40.0, 5.0))
    return a, geom


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "oblique"])
def test_v1_chest_map_is_not_read_as_lumbar_spine(tmp_path, orientation):
    a, geom = _v1_thoracic_map(orientation)
    path = write_image(a, geom, tmp_path / "chest_totalseg.nii.gz")
    # explicit v2: refused, naming the version that fits
    with pytest.raises(InputError, match="looks like a TotalSegmentator v1 map: use "
                       "label_format 'totalseg-v1'") as exc:
        read_labels(path, geom, "totalseg-v2")
    assert "femur_left" in str(exc.value) or "hip_left" in str(exc.value)
    # unversioned: read as v1, said so; L1 is L1, and no sacrum, femur or hip bone
    lm = read_labels(path, geom, "totalseg")
    assert set(lm.structures.values()) == {"vertebrae_L1"}
    np.testing.assert_array_equal(lm.mask("vertebrae_L1"),
                                  a == {n: v for v, n in TOTALSEG_V1_TOTAL.items()}[
                                      "vertebrae_L1"])
    assert any("read as TotalSegmentator v1 ids" in n for n in lm.notes)
    assert not any("read as TotalSegmentator v2 ids" in n for n in lm.notes)
    assert "TotalSegmentator v1" in lm.source
    # with the v2 table these voxels would have been measured as L1-L5 and the sacrum
    assert {anatomy.key_for_name(TOTALSEG_V2_TOTAL[v]) for v in np.unique(a) if v} >= {
        "vertebrae_L1", "vertebrae_L5", "sacrum"}


def test_v2_map_stays_v2(tmp_path, phantom):
    inv = {anatomy.key_for_name(n): v for v, n in TOTALSEG_V2_TOTAL.items()}
    out = np.zeros(phantom.labels.array.shape, dtype=np.uint8)
    for value, key in phantom.labels.structures.items():
        if key in inv:
            out[phantom.labels.array == value] = inv[key]
    path = write_image(out, phantom.ct.geometry, tmp_path / "seg_totalseg.nii.gz")
    lm = read_labels(path, phantom.ct.geometry, "totalseg")
    note = [n for n in lm.notes if "read as TotalSegmentator" in n]
    # this map keeps its layout under v1 ids too: the plain note (v2 assumed) stays
    assert len(note) == 1 and "read as TotalSegmentator v2 ids; for a" in note[0]
    assert {"femur_left", "vertebrae_L1", "sacrum"} <= set(lm.structures.values())
    # read as v1 the pelvis keeps its layout (v2 L1-L5 become v1 T4-T8, the muscle
    # pairs become v1 pairs of one side each): the CT numbers refuse it instead
    # (test_bad_inputs, plausibility)
    as_v1 = read_labels(path, phantom.ct.geometry, "totalseg-v1")
    with pytest.raises(InputError, match="do not look like what their labels claim"):
        measure_case(phantom.ct, as_v1)


# ------------------------------------------------------------------------------------
# the real CT (TotalSegmentator v2 labels), and the same labels with v1 ids
# ------------------------------------------------------------------------------------
def test_real_v1_map_is_recognised(tmp_path, real_data_dir):
    import SimpleITK as sitk

    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    v2_path = real_data_dir / "lumbar_seg_totalseg.nii.gz"
    img = sitk.ReadImage(str(v2_path))
    a = sitk.GetArrayViewFromImage(img)
    inv = {n: v for v, n in TOTALSEG_V1_TOTAL.items()}
    v1 = np.zeros(a.shape, dtype=np.uint8)
    for value in np.unique(a):
        name = TOTALSEG_V2_TOTAL.get(int(value))
        if value and name in inv:
            v1[a == value] = inv[name]
    out = sitk.GetImageFromArray(v1)
    out.CopyInformation(img)
    v1_path = tmp_path / "lumbar_v1_totalseg.nii.gz"
    sitk.WriteImage(out, str(v1_path))

    truth = read_labels(v2_path, ct.geometry, "totalseg-v2")
    lm = read_labels(v1_path, ct.geometry, "totalseg")
    assert any("read as TotalSegmentator v1 ids" in n for n in lm.notes)
    assert sorted(lm.structures.values()) == sorted(truth.structures.values())
    for key in ("vertebrae_L1", "vertebrae_L2", "autochthon_left", "iliopsoas_right"):
        assert int(lm.mask(key).sum()) == int(truth.mask(key).sum()) > 0
    with pytest.raises(InputError, match="looks like a TotalSegmentator v1 map"):
        read_labels(v1_path, ct.geometry, "totalseg-v2")
    # the real v2 map read as 'totalseg': the layout confirms v2 and says why not v1
    plain = read_labels(v2_path, ct.geometry, "totalseg")
    note = [n for n in plain.notes if "read as TotalSegmentator" in n]
    assert len(note) == 1 and "read as TotalSegmentator v2 ids: with them all" in note[0]
    assert "while with v1 ids" in note[0]
    # the real v2 map itself: every relation holds
    check = check_named_layout(label_centroids_mm(truth.array, truth.geometry),
                               truth.structures)
    assert check.consistent and check.n_relations >= 3
    res = measure_case(ct, dataclasses.replace(truth))
    assert not any("layout broken" in w for w in res.warnings)
