"""Problems of the whole CT or of the whole label map are named as such.

* A voxel spacing off by a common factor (mm stored as cm) or an HU scale off by a
  common offset (rescale intercept applied twice) makes every structure implausible
  in the same way: the refusal names the spacing or the HU scale and its fix, not the
  label scheme (``plausibility``, whole-image causes).
* A label map read with the wrong format that leaves nothing measurable (a
  CTMuscleBone map read as TotalSegmentator: its thigh muscles become organs and one
  "aorta") is refused, not written as a header-only table (``analysis.measure_case``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from CTMuscleBoneLib import plausibility
from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.io_ct import write_image, write_label_map
from CTMuscleBoneLib.io_labels import read_labels
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.plausibility import apply_plausibility, check_label_plausibility


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def hip():
    return make_phantom(PhantomSpec(spacing_mm=5.0))


def _with_spacing(ph, factor: float) -> tuple[CTImage, LabelMap]:
    """The phantom with its header spacing multiplied by ``factor`` (voxels unchanged)."""
    g = ph.ct.geometry
    geometry = Geometry(g.shape, tuple(s * factor for s in g.spacing_mm), g.origin_mm,
                        g.direction)
    ct = dataclasses.replace(ph.ct, geometry=geometry)
    labels = dataclasses.replace(ph.labels, geometry=geometry)
    return ct, labels


def _with_offset(ph, offset_hu: int) -> CTImage:
    return dataclasses.replace(ph.ct, hu=np.asarray(ph.ct.hu) + np.int16(offset_hu))


# ------------------------------------------------------------------------------------
# 3. whole-CT problems are not blamed on the label scheme
# ------------------------------------------------------------------------------------
def test_spacing_stored_in_cm_is_blamed_on_the_spacing(hip):
    ct, labels = _with_spacing(hip, 0.1)  # 5 mm stored as 0.5: "mm stored as cm"
    report = check_label_plausibility(ct, labels)
    assert report.map_implausible and report.cause == "spacing"
    with pytest.raises(InputError) as exc:
        apply_plausibility(ct, labels)
    msg = one_line(exc)
    assert "voxel spacing looks wrong" in msg and "mm stored as cm" in msg
    assert "too small" in msg and "Fix the voxel spacing" in msg
    assert "label scheme" not in msg and "TotalSegmentator" not in msg


def test_spacing_off_on_one_axis_is_blamed_on_the_spacing(hip):
    g = hip.ct.geometry
    geometry = Geometry(g.shape, (g.spacing_mm[0], g.spacing_mm[1], g.spacing_mm[2] / 10),
                        g.origin_mm, g.direction)
    ct = dataclasses.replace(hip.ct, geometry=geometry)
    labels = dataclasses.replace(hip.labels, geometry=geometry)
    with pytest.raises(InputError) as exc:
        apply_plausibility(ct, labels)
    msg = one_line(exc)
    assert "voxel spacing looks wrong" in msg and "on one axis" in msg
    assert "label scheme" not in msg


def test_spacing_too_large_is_refused_and_blamed_on_the_spacing(hip):
    # 4x per axis (64x in volume) stays under the CT check's 20 mm limit; the volume
    # maximums catch it (before, every volume was silently 64x too large)
    ct, labels = _with_spacing(hip, 4.0)
    with pytest.raises(InputError) as exc:
        apply_plausibility(ct, labels)
    msg = one_line(exc)
    assert "voxel spacing looks wrong" in msg and "too large" in msg
    assert "label scheme" not in msg


def test_intercept_applied_twice_is_blamed_on_the_hu_scale(hip):
    ct = _with_offset(hip, -1024)  # air at about -2048: passes the CT check
    with pytest.raises(InputError) as exc:
        measure_case(ct, hip.labels, MeasureOptions(bones=False))
    msg = one_line(exc)
    assert "HU scale looks wrong" in msg and "intercept applied twice" in msg
    assert "-10" in msg  # the offset, about -1024 HU
    assert "Re-export the CT" in msg
    assert "label scheme" not in msg and "TotalSegmentator" not in msg


def test_intercept_not_applied_is_named(hip):
    report = check_label_plausibility(_with_offset(hip, 1024), hip.labels)
    assert report.cause == "hu_scale" and "intercept not applied" in report.likely_cause


def test_plausible_phantom_has_no_whole_image_cause(hip):
    report = check_label_plausibility(hip.ct, hip.labels)
    assert not report.implausible and report.cause == "" and not report.map_implausible


def test_one_tissue_off_is_still_the_label_scheme(tmp_path, hip):
    # a CTMuscleBone map read as TotalSegmentator v2: thigh and hip muscles become
    # sacrum and lumbar vertebrae, all about 360 HU below bone, alike; one tissue off
    # is another tissue under its names, not an HU scale
    path, _ = write_label_map(hip.labels, tmp_path / "labels.nii.gz")
    lm = read_labels(path, hip.ct.geometry, "totalseg")
    report = check_label_plausibility(hip.ct, lm)
    assert report.cause == "scheme"
    with pytest.raises(InputError) as exc:
        apply_plausibility(hip.ct, lm)
    msg = one_line(exc)
    assert "wrong label scheme" in msg and "HU scale" not in msg
    # the names file beside the map says which table fits: quoted, not the v1 guess
    assert "matches the CTMuscleBone canonical table" in msg and "'json'" in msg
    assert "totalseg-v1" not in msg


def test_a_few_shifted_structures_are_left_out_not_blamed_on_the_scale(hip):
    # two muscles filled with bone: segment errors (left out), no common offset
    labels = hip.labels
    hu = np.asarray(hip.ct.hu).copy()
    for key in ("gluteus_minimus_left", "gluteus_minimus_right"):
        hu[labels.mask(key)] = 700
    ct = dataclasses.replace(hip.ct, hu=hu)
    out, warnings = apply_plausibility(ct, labels)
    assert len(warnings) == 2 and "gluteus_minimus_left" in out.unknown.get(
        labels.value_of("gluteus_minimus_left"), "")


# ------------------------------------------------------------------------------------
# 9. a map read with the wrong format that measures nothing is refused
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thigh():
    return make_phantom(PhantomSpec(region="thigh", spacing_mm=5.0))


def test_canonical_thigh_map_read_as_totalseg_is_refused(tmp_path, thigh):
    ct_path = write_image(np.asarray(thigh.ct.hu), thigh.ct.geometry, tmp_path / "ct.nii.gz")
    path, _ = write_label_map(thigh.labels, tmp_path / "labels.nii.gz")
    lm = read_labels(path, thigh.ct.geometry, "totalseg")
    # read as TotalSegmentator v2, two thigh muscles become aorta and IVC
    assert set(lm.present_keys()) <= {"aorta", "inferior_vena_cava"}
    with pytest.raises(InputError) as exc:
        measure_case(thigh.ct, lm)
    msg = one_line(exc)
    assert "Nothing was measured" in msg and "outside the anatomy table" in msg
    assert "wrong label format" in msg and "matches the CTMuscleBone canonical table" in msg
    # the same map read with its names file measures
    ok = read_labels(path, thigh.ct.geometry)
    assert measure_case(thigh.ct, ok, MeasureOptions(bones=False)).rows
    assert ct_path.exists()


def test_cli_refuses_a_map_read_with_the_wrong_format(tmp_path, thigh):
    from CTMuscleBoneLib.cli.main import main

    ct_path = write_image(np.asarray(thigh.ct.hu), thigh.ct.geometry, tmp_path / "ct.nii.gz")
    path, _ = write_label_map(thigh.labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(ct_path), "--labels", str(path), "--label-format",
               "totalseg", "--out", str(out), "--quiet"])
    assert rc != 0
    assert not (out / "results.csv").exists()


def test_helper_structures_alone_are_refused_without_a_sidecar(hip):
    # only vessels and fat (helpers): nothing measured, whatever the cause
    keep = {"aorta", "inferior_vena_cava", "subcutaneous_fat"}
    structures = {v: k for v, k in hip.labels.structures.items() if k in keep}
    lm = LabelMap(hip.labels.array, hip.labels.geometry, structures, source="test map")
    with pytest.raises(InputError) as exc:
        measure_case(hip.ct, lm)
    msg = one_line(exc)
    assert "Nothing was measured" in msg and "Check the label format" in msg


def test_bones_switched_off_with_only_bones_says_so(hip):
    keep = {"femur_left", "femur_right", "subcutaneous_fat"}
    structures = {v: k for v, k in hip.labels.structures.items() if k in keep}
    lm = LabelMap(hip.labels.array, hip.labels.geometry, structures, source="test map")
    with pytest.raises(InputError, match="Bone measurement is switched off"):
        measure_case(hip.ct, lm, MeasureOptions(bones=False))


# ------------------------------------------------------------------------------------
# a short crop whose structures all touch its ends: the vertebrae's cross-sections
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lumbar_slab():
    """A 30 mm slab through L3 of a lumbar phantom: every structure touches its ends,
    so no volume can be judged (like the real lumbar crop)."""
    ph = make_phantom(PhantomSpec(region="lumbar", spacing_mm=3.0, seed=3))
    g = ph.ct.geometry
    l3 = next(v for v, k in ph.labels.structures.items() if k == "vertebrae_L3")
    k = int(np.argwhere(ph.labels.array == l3)[:, 2].mean())
    box = (slice(0, g.shape[0]), slice(0, g.shape[1]), slice(k - 5, k + 5))
    lo = np.array([b.start for b in box], dtype=float)
    g2 = Geometry(tuple(b.stop - b.start for b in box), g.spacing_mm,
                  tuple(g.index_to_physical(lo)), g.direction)
    ct = dataclasses.replace(ph.ct, hu=np.ascontiguousarray(ph.ct.hu[box]), geometry=g2)
    labels = dataclasses.replace(ph.labels, array=np.ascontiguousarray(ph.labels.array[box]),
                                 geometry=g2, overlays={})
    return ct, labels


def test_short_crop_in_cm_is_refused_from_the_vertebra_cross_section(lumbar_slab):
    ct, labels = lumbar_slab
    report = check_label_plausibility(ct, labels)
    assert not report.map_implausible and not report.implausible  # right spacing: fine
    small = _with_spacing(type("P", (), {"ct": ct, "labels": labels}), 0.1)
    report = check_label_plausibility(*small)
    assert report.map_implausible and report.cause == "spacing"
    assert not report.implausible  # every structure touches the slab's ends
    with pytest.raises(InputError) as exc:
        apply_plausibility(*small)
    msg = one_line(exc)
    assert msg.startswith("The CT's voxel spacing looks wrong")
    assert "widest vertebra label" in msg and "mm stored as cm" in msg
    assert "Fix the voxel spacing" in msg and "label scheme" not in msg


def test_stray_vertebra_fragment_on_a_normal_ct_is_not_blamed_on_the_spacing(hip):
    """A 20-voxel fragment labelled L3 (a segmentation error) on a CT of normal size: the
    cross-section rule needs the whole CT to be small too, so only the fragment is
    left out (too small for a vertebra), the case is not refused."""
    arr = np.asarray(hip.labels.array).copy()
    l5 = next(v for v, k in hip.labels.structures.items() if k == "vertebrae_L5")
    l3 = l5 - 2
    assert hip.labels.structures[l3] == "vertebrae_L3"
    arr[arr == l5] = 0  # the fragment is the only vertebra
    arr[40:42, 10:12, 10:15] = l3  # 10 x 10 x 25 mm (20 voxels): 10 mm across
    labels = dataclasses.replace(hip.labels, array=arr)
    report = check_label_plausibility(hip.ct, labels)
    assert not report.map_implausible and report.cause == "segment"
    assert [c.key for c in report.implausible] == ["vertebrae_L3"]
    kept, warnings = apply_plausibility(hip.ct, labels)
    assert "vertebrae_L3" not in kept.structures.values() and len(warnings) == 1
    # the same labels with the spacing 10x too small are refused
    small = _with_spacing(type("P", (), {"ct": hip.ct, "labels": labels}), 0.1)
    assert check_label_plausibility(*small).cause == "spacing"


def test_vertebra_cross_section_is_the_larger_extent_and_ignores_side_cuts(lumbar_slab):
    ct, labels = lumbar_slab
    l3 = next(v for v, k in labels.structures.items() if k == "vertebrae_L3")
    box = labels.boxes()[l3]
    width = plausibility.vertebra_inplane_extent_mm(labels, l3, box)
    idx = np.argwhere(labels.array == l3)
    xy = ct.geometry.index_to_physical(idx)[:, :2]
    expected = max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1])) + 3.0
    assert width == pytest.approx(expected, abs=1e-6)
    assert 40.0 <= width <= 110.0  # a lumbar vertebra with its processes
    # cut through the middle by the right face: its cross-section is not whole
    mid = int(idx[:, 0].mean())
    cut = np.asarray(labels.array)[:mid + 1]
    g = ct.geometry
    g2 = Geometry((mid + 1,) + g.shape[1:], g.spacing_mm, g.origin_mm, g.direction)
    cut_labels = dataclasses.replace(labels, array=cut, geometry=g2)
    assert plausibility.vertebra_inplane_extent_mm(cut_labels, l3,
                                                   cut_labels.boxes()[l3]) is None


def test_real_crop_with_spacing_in_cm_is_refused(real_data_dir):
    from CTMuscleBoneLib.io_ct import read_ct
    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    labels = read_labels(real_data_dir / "lumbar_seg_totalseg.nii.gz", ct.geometry)
    assert not check_label_plausibility(ct, labels).map_implausible
    small = _with_spacing(type("P", (), {"ct": ct, "labels": labels}), 0.1)
    with pytest.raises(InputError) as exc:
        apply_plausibility(*small)
    msg = one_line(exc)
    assert "voxel spacing looks wrong" in msg and "mm stored as cm" in msg
