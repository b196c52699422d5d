"""Tests of label-map input: formats, name mapping, grid policy and refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry, LabelMap, sitk_from_array
from CTMuscleBoneLib.io_ct import read_ct, write_image, write_label_map
from CTMuscleBoneLib.io_labels import TOTALSEG_V2_TOTAL, read_labels, read_names

CT_GEOM = Geometry((20, 20, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def totalseg_array() -> np.ndarray:
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 75    # femur_left
    a[10:14, 2:6, 1:4] = 76  # femur_right
    a[2:6, 10:14, 5:8] = 88  # iliopsoas_left
    a[8:12, 8:12, 0:3] = 25  # sacrum
    a[8:12, 8:12, 3:5] = 26  # vertebrae_S1 (also the sacrum here)
    a[15:19, 15:19, 5:9] = 5  # liver (not in the anatomy table)
    return a


def test_totalseg_table_matches_v2_ids():
    assert len(TOTALSEG_V2_TOTAL) == 117
    expect = {25: "sacrum", 26: "vertebrae_S1", 27: "vertebrae_L5", 31: "vertebrae_L1",
              32: "vertebrae_T12", 52: "aorta", 63: "inferior_vena_cava", 75: "femur_left",
              76: "femur_right", 77: "hip_left", 78: "hip_right", 80: "gluteus_maximus_left",
              85: "gluteus_minimus_right", 86: "autochthon_left", 89: "iliopsoas_right",
              92: "rib_left_1", 115: "rib_right_12", 117: "costal_cartilages"}
    for k, v in expect.items():
        assert TOTALSEG_V2_TOTAL[k] == v


def test_totalseg_multilabel(tmp_path):
    path = tmp_path / "seg_totalseg.nii.gz"
    write_image(totalseg_array(), CT_GEOM, path)
    before = sha256(path)
    lm = read_labels(path, CT_GEOM)  # auto: 'totalseg' in the name
    assert sha256(path) == before
    assert lm.structures == {75: "femur_left", 76: "femur_right", 88: "iliopsoas_left",
                             25: "sacrum"}
    assert lm.unknown == {5: "liver"}
    assert lm.mask("sacrum").sum() == 4 * 4 * 5  # S1 merged into the sacrum
    assert lm.mask("femur_left").sum() == 48
    assert any("merged" in n for n in lm.notes)
    assert any("liver" in n for n in lm.notes)
    assert lm.geometry.same_grid(CT_GEOM)


def test_auto_without_names_or_hint_asks_for_format(tmp_path):
    path = tmp_path / "seg.nii.gz"
    write_image(totalseg_array(), CT_GEOM, path)
    with pytest.raises(InputError, match="label format"):
        read_labels(path, CT_GEOM)
    assert read_labels(path, CT_GEOM, "totalseg").value_of("femur_right") == 76


def test_canonical(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    for n, key in enumerate(["femur_left", "gluteus_medius_right", "vertebrae_L3"]):
        a[n * 5:n * 5 + 3, 0:3, 0:3] = anatomy.structure(key).label_value
    path = tmp_path / "canon.nrrd"
    write_image(a, CT_GEOM, path)
    lm = read_labels(path, CT_GEOM, "canonical")
    assert sorted(lm.present_keys()) == ["femur_left", "gluteus_medius_right", "vertebrae_L3"]
    assert lm.unknown == {}


@pytest.mark.parametrize("sidecar", ["labels.json", "json", "csv"])
def test_sidecar_autodetect(tmp_path, sidecar):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[0:4, 0:4, 0:4] = 1
    a[5:9, 5:9, 5:9] = 2
    a[10:12, 10:12, 0:2] = 3
    path = tmp_path / "my_labels.nii.gz"
    write_image(a, CT_GEOM, path)
    names = {1: "Gluteus maximus (left)", 2: "L1", 3: "kidney_left"}
    side = tmp_path / f"my_labels.{sidecar}"
    if sidecar == "csv":
        side.write_text("value,name\n" + "".join(f"{k},{v}\n" for k, v in names.items()))
    else:
        side.write_text(json.dumps({str(k): v for k, v in names.items()}))
    lm = read_labels(path, CT_GEOM)
    assert lm.structures == {1: "gluteus_maximus_left", 2: "vertebrae_L1"}
    assert lm.unknown == {3: "kidney_left"}


def test_names_argument_and_name_to_value_json(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint16)
    a[0:4, 0:4, 0:4] = 300
    path = tmp_path / "x.mha"
    write_image(a, CT_GEOM, path)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"aorta": 300}))
    lm = read_labels(path, CT_GEOM, names=names)
    assert lm.structures == {300: "aorta"}
    assert read_names(names) == {300: "aorta"}


def test_write_label_map_roundtrip(tmp_path):
    a = totalseg_array()
    lm = LabelMap(a, CT_GEOM, {75: "femur_left", 76: "femur_right", 88: "iliopsoas_left",
                               25: "sacrum", 26: "sacrum"}, unknown={5: "liver"})
    img_path, side = write_label_map(lm, tmp_path / "out.nii.gz")
    assert side == tmp_path / "out.labels.json"
    assert json.loads(side.read_text())["5"] == "liver"
    back = read_labels(img_path, CT_GEOM)
    assert back.structures == {75: "femur_left", 76: "femur_right", 88: "iliopsoas_left",
                               25: "sacrum"}
    assert back.unknown == {5: "liver"}
    assert back.mask("sacrum").sum() == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.labels.json", "out.nii.gz"]


def test_other_grid_same_space_is_resampled_with_note(tmp_path):
    coarse = Geometry((10, 10, 5), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    a = np.zeros(coarse.shape, dtype=np.uint8)
    a[2:5, 2:5, 1:3] = 75
    path = tmp_path / "coarse_totalseg.nii.gz"
    write_image(a, coarse, path)
    lm = read_labels(path, CT_GEOM)
    assert lm.array.shape == CT_GEOM.shape and lm.geometry.same_grid(CT_GEOM)
    expect = np.zeros(CT_GEOM.shape, dtype=bool)
    expect[4:10, 4:10, 2:6] = True
    np.testing.assert_array_equal(lm.mask("femur_left"), expect)
    assert any("resampled" in n and "nearest-neighbour" in n for n in lm.notes)


def test_flipped_storage_of_same_grid_is_resampled_exactly(tmp_path):
    a = totalseg_array()
    flipped = np.ascontiguousarray(a[::-1, ::-1, :])
    g = Geometry(CT_GEOM.shape, CT_GEOM.spacing_mm,
                 tuple(CT_GEOM.index_to_physical(np.array([19, 19, 0]))),
                 np.diag([-1.0, -1.0, 1.0]))
    path = tmp_path / "ras_totalseg.nii.gz"
    write_image(flipped, g, path)
    lm = read_labels(path, CT_GEOM)
    assert lm.mask("femur_left").sum() == 48
    np.testing.assert_array_equal(lm.mask("femur_left"), a == 75)


def test_labels_elsewhere_are_refused(tmp_path):
    far = Geometry(CT_GEOM.shape, CT_GEOM.spacing_mm, (500.0, 0.0, 0.0))
    path = tmp_path / "far_totalseg.nii.gz"
    write_image(totalseg_array(), far, path)
    with pytest.raises(InputError, match="does not overlap"):
        read_labels(path, CT_GEOM)


def test_partly_outside_is_resampled_with_loss_note(tmp_path):
    shifted = Geometry(CT_GEOM.shape, CT_GEOM.spacing_mm, (-4.0, 0.0, 0.0))
    path = tmp_path / "shift_totalseg.nii.gz"
    write_image(totalseg_array(), shifted, path)
    lm = read_labels(path, CT_GEOM)
    assert any("outside the CT" in n for n in lm.notes)
    assert lm.mask("femur_left").sum() == 2 * 4 * 3  # columns 2,3 fall outside


def test_empty_map_is_refused(tmp_path):
    path = tmp_path / "empty_totalseg.nii.gz"
    write_image(np.zeros(CT_GEOM.shape, dtype=np.uint8), CT_GEOM, path)
    with pytest.raises(InputError, match="empty"):
        read_labels(path, CT_GEOM)


def test_only_unknown_names_are_refused_with_list(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[0:3, 0:3, 0:3] = 1
    a[5:8, 5:8, 5:8] = 5
    path = tmp_path / "organs_totalseg.nii.gz"
    write_image(a, CT_GEOM, path)
    with pytest.raises(InputError, match="spleen.*liver|1: spleen, 5: liver"):
        read_labels(path, CT_GEOM)


def test_non_integer_and_negative_labels_are_refused(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.float32)
    a[0:3, 0:3, 0:3] = 0.5
    path = tmp_path / "prob_totalseg.nii.gz"
    write_image(a, CT_GEOM, path)
    with pytest.raises(InputError, match="non-integer"):
        read_labels(path, CT_GEOM)
    a[0:3, 0:3, 0:3] = 75.0  # whole numbers stored as float: accepted with a note
    write_image(a, CT_GEOM, path)
    lm = read_labels(path, CT_GEOM)
    assert lm.structures == {75: "femur_left"} and lm.array.dtype.kind == "u"
    assert any("floating point" in n for n in lm.notes)
    b = np.zeros(CT_GEOM.shape, dtype=np.int16)
    b[0, 0, 0] = -1
    b[1, 1, 1] = 75
    write_image(b, CT_GEOM, tmp_path / "neg_totalseg.nii.gz")
    with pytest.raises(InputError, match="negative"):
        read_labels(tmp_path / "neg_totalseg.nii.gz", CT_GEOM)


def test_totalseg_folder(tmp_path):
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for name, box in [("femur_left", np.s_[2:6, 2:6, 1:4]),
                      ("iliopsoas_right", np.s_[10:14, 10:14, 5:8]),
                      ("liver", np.s_[15:19, 0:4, 0:4]), ("spleen", None)]:
        m = np.zeros(CT_GEOM.shape, dtype=np.uint8)
        if box is not None:
            m[box] = 1
        write_image(m, CT_GEOM, folder / f"{name}.nii.gz")
    lm = read_labels(folder, CT_GEOM)
    assert lm.structures == {75: "femur_left", 89: "iliopsoas_right"}
    assert lm.unknown == {5: "liver"}
    assert lm.mask("iliopsoas_right").sum() == 48


def _write_seg_nrrd(path: Path, layers: list[np.ndarray], segments: list[dict]) -> None:
    if len(layers) == 1:
        img = sitk_from_array(layers[0], CT_GEOM)
    else:
        comps = [sitk_from_array(x, CT_GEOM) for x in layers]
        img = sitk.Compose(comps)
    for n, seg in enumerate(segments):
        for k, v in seg.items():
            img.SetMetaData(f"Segment{n}_{k}", str(v))
    sitk.WriteImage(img, str(path), True)


def test_seg_nrrd_single_and_merged_layers(tmp_path):
    l0 = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    l0[2:6, 2:6, 1:4] = 1
    l0[10:14, 2:6, 1:4] = 2
    l1 = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    l1[2:6, 10:14, 5:8] = 1
    segs = [
        {"ID": "Segment_1", "Name": "Femur left", "LabelValue": 1, "Layer": 0},
        {"ID": "Segment_2", "Name": "Structure X", "LabelValue": 2, "Layer": 0,
         "Terminology": "Segmentation category and type - DICOM master list~SCT^123037004^"
                        "Anatomical Structure~SCT^71341001^Femur~SCT^24028007^Right~"
                        "Anatomic codes~^^~^^"},
        {"ID": "Segment_3", "Name": "iliopsoas_left", "LabelValue": 1, "Layer": 1},
    ]
    one = tmp_path / "one.seg.nrrd"
    _write_seg_nrrd(one, [l0], segs[:2])
    lm = read_labels(one, CT_GEOM)
    assert sorted(lm.structures.values()) == ["femur_left", "femur_right"]
    two = tmp_path / "two.seg.nrrd"
    _write_seg_nrrd(two, [l0, l1], segs)
    lm2 = read_labels(two, CT_GEOM)
    assert sorted(lm2.present_keys()) == ["femur_left", "femur_right", "iliopsoas_left"]
    assert lm2.mask("iliopsoas_left").sum() == 48 and lm2.mask("femur_left").sum() == 48
    assert any("merged" in n for n in lm2.notes)
    l1[2:4, 2:4, 1:3] = 1  # overlaps 'Femur left'
    _write_seg_nrrd(two, [l0, l1], segs)
    with pytest.raises(InputError, match="overlaps"):
        read_labels(two, CT_GEOM)


def test_real_labels_with_sidecar(real_data_dir):
    ct_path = real_data_dir / "lumbar_ct.nii.gz"
    seg_path = real_data_dir / "lumbar_seg_totalseg.nii.gz"
    side = real_data_dir / "lumbar_seg_totalseg.labels.json"
    hashes = [sha256(p) for p in (ct_path, seg_path, side)]
    ct = read_ct(ct_path)
    lm = read_labels(seg_path, ct.geometry)
    assert [sha256(p) for p in (ct_path, seg_path, side)] == hashes
    present = set(lm.present_keys())
    for key in ("iliopsoas_left", "iliopsoas_right", "autochthon_left", "autochthon_right",
                "vertebrae_L1", "vertebrae_L2", "aorta"):
        assert key in present
    unknown = set(lm.unknown.values())
    assert {"rib_left_12", "rib_right_11", "liver", "spleen", "vertebrae_T12"} <= unknown
    assert lm.geometry.same_grid(ct.geometry)
    # the sidecar's numbers are the TotalSegmentator v2 ids
    assert read_labels(seg_path, ct.geometry, "totalseg").structures == lm.structures
