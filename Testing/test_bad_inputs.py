"""Bad-input corpus for the readers (issue 9, items 1-2): each case is built here and
must give a one-line InputError naming the problem, or a result with a note; never a
silently wrong number; the input files stay unchanged (hashed before and after)."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.io_ct import read_ct, read_image, write_image, write_label_map
from CTMuscleBoneLib.io_labels import (
    TOTALSEG_V1_TOTAL,
    TOTALSEG_V2_TOTAL,
    read_labels,
)
from CTMuscleBoneLib.plausibility import apply_plausibility, check_label_plausibility
from CTMuscleBoneLib.validation import check_ct
from test_io_ct import body_phantom, write_dicom_series

GEOM = Geometry((24, 20, 8), (0.8, 0.8, 2.0), (-10.0, 5.0, 40.0))


def digest(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def read_unchanged(fn, path: Path, *args, **kwargs):
    """Call ``fn(path, ...)`` and assert that the input was not modified."""
    before = digest(path)
    try:
        return fn(path, *args, **kwargs)
    finally:
        assert digest(path) == before, f"{path} was modified"


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def patch_nifti(path: Path, offset: int, fmt: str, values: tuple) -> None:
    """Overwrite header bytes of a (possibly gzipped) NIfTI file built by the test."""
    gz = path.name.endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))


# ------------------------------------------------------------------------------------
# 1. non-finite voxels, every format
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused_in_every_format(tmp_path, name, bad):
    hu = body_phantom().astype(np.float32)
    hu[1:3, 2, 4] = bad
    path = write_image(hu, GEOM, tmp_path / name)
    with pytest.raises(InputError) as exc:
        read_unchanged(read_ct, path)
    msg = one_line(exc)
    assert "2 non-finite voxel" in msg and name in msg and "export" in msg


# ------------------------------------------------------------------------------------
# 2. NIfTI pixdim zero / negative; qfac -1 is legal
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
@pytest.mark.parametrize("axis,value", [(3, 0.0), (1, 0.0), (1, -0.8), (3, -2.0),
                                        (2, float("nan"))])
def test_nifti_zero_or_negative_pixdim_is_refused(tmp_path, name, axis, value):
    path = write_image(body_phantom(), GEOM, tmp_path / name)
    patch_nifti(path, 76 + 4 * axis, "<f", (value,))
    with pytest.raises(InputError) as exc:
        read_unchanged(read_ct, path)
    msg = one_line(exc)
    assert f"pixdim[{axis}]" in msg and "spacing" in msg


def test_nifti_label_map_with_zero_pixdim_is_refused(tmp_path):
    labels = np.zeros(GEOM.shape, dtype=np.uint8)
    labels[2:6, 2:6, 1:4] = 1
    path, _ = write_label_map(LabelMap(labels, GEOM, {1: "femur_left"}), tmp_path / "l.nii")
    patch_nifti(path, 76 + 12, "<f", (0.0,))
    with pytest.raises(InputError, match=r"pixdim\[3\]"):
        read_unchanged(read_labels, path, GEOM)
    with pytest.raises(InputError, match=r"pixdim\[3\]"):
        read_image(path)


def test_nifti_qfac_minus_one_is_not_negative_spacing(tmp_path):
    path = write_image(body_phantom(), GEOM, tmp_path / "ct.nii")
    patch_nifti(path, 76, "<f", (-1.0,))  # pixdim[0] = qfac
    ct = read_unchanged(read_ct, path)
    assert np.allclose(ct.geometry.spacing_mm, GEOM.spacing_mm, atol=1e-5)


def _raw_header(tmp_path: Path, kind: str, spacing: str) -> Path:
    (tmp_path / "v.raw").write_bytes(body_phantom().transpose(2, 1, 0).tobytes())
    if kind == "nhdr":
        path = tmp_path / "v.nhdr"
        path.write_text(
            "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
            f"sizes: 24 20 8\nspace directions: {spacing}\n"
            "kinds: domain domain domain\nendian: little\nencoding: raw\n"
            "space origin: (0,0,0)\ndata file: v.raw\n")
    else:
        path = tmp_path / "v.mhd"
        path.write_text(
            "ObjectType = Image\nNDims = 3\nBinaryData = True\n"
            f"BinaryDataByteOrderMSB = False\nElementSpacing = {spacing}\n"
            "DimSize = 24 20 8\nElementType = MET_SHORT\nElementDataFile = v.raw\n")
    return path


@pytest.mark.parametrize("kind,spacing", [("nhdr", "(1,0,0) (0,0,0) (0,0,2)"),
                                          ("mhd", "0.8 0 2")])
def test_zero_spacing_in_nrrd_and_metaimage_is_refused(tmp_path, kind, spacing):
    path = _raw_header(tmp_path, kind, spacing)
    with pytest.raises(InputError) as exc:
        read_unchanged(read_ct, path)
    msg = one_line(exc)
    assert "spacing of 0" in msg and path.name in msg


def test_negative_metaimage_spacing_is_a_flipped_axis_not_a_wrong_volume(tmp_path):
    path = _raw_header(tmp_path, "mhd", "-0.8 0.8 2")
    ct = read_unchanged(read_ct, path)
    assert ct.geometry.spacing_mm == (0.8, 0.8, 2.0)
    assert ct.geometry.direction[0, 0] == -1.0  # voxel i lies at x = -0.8 i mm


# ------------------------------------------------------------------------------------
# 3. non-orthonormal direction names the file
# ------------------------------------------------------------------------------------
def test_non_orthonormal_direction_is_refused_naming_the_file(tmp_path):
    (tmp_path / "skew.raw").write_bytes(body_phantom().transpose(2, 1, 0).tobytes())
    nhdr = tmp_path / "skew.nhdr"
    nhdr.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 24 20 8\nspace directions: (1,0,0) (0.5,1,0) (0,0,2)\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\n"
        "space origin: (0,0,0)\ndata file: skew.raw\n")
    with pytest.raises(InputError) as exc:
        read_unchanged(read_ct, nhdr)
    msg = one_line(exc)
    assert "skew.nhdr" in msg and "orthonormal" in msg


# ------------------------------------------------------------------------------------
# 4. modality UNKNOWN / OT / absent: judged by HU
# ------------------------------------------------------------------------------------
def _mha_with_modality(tmp_path: Path, hu: np.ndarray, modality: str | None) -> Path:
    path = write_image(hu, GEOM, tmp_path / "ct.mha")
    if modality is None:
        return path
    data = path.read_bytes()
    head, sep, rest = data.partition(b"ElementDataFile")
    path.write_bytes(head + f"Modality = {modality}\n".encode() + sep + rest)
    return path


@pytest.mark.parametrize("modality", ["MET_MOD_UNKNOWN", "MET_MOD_OTHER", None])
def test_metaimage_unknown_modality_is_judged_by_hu(tmp_path, modality):
    path = _mha_with_modality(tmp_path, body_phantom(), modality)
    ct = read_unchanged(read_ct, path)
    assert ct.metadata.modality is None
    check_ct(ct)  # a CT in HU passes
    if modality:
        assert any("judged by its HU" in n for n in ct.metadata.notes)


def test_metaimage_unknown_modality_without_hu_is_refused(tmp_path):
    path = _mha_with_modality(tmp_path, np.abs(body_phantom()) + 5, "MET_MOD_UNKNOWN")
    with pytest.raises(InputError, match="not Hounsfield"):
        check_ct(read_unchanged(read_ct, path))


def test_metaimage_mr_modality_is_still_refused(tmp_path):
    path = _mha_with_modality(tmp_path, body_phantom(), "MET_MOD_MR")
    with pytest.raises(InputError, match="modality 'MR'"):
        check_ct(read_unchanged(read_ct, path))


@pytest.mark.parametrize("modality", ["OT", ""])
def test_dicom_modality_ot_or_empty_is_judged_by_hu(tmp_path, modality):
    folder = tmp_path / "dcm"
    write_dicom_series(folder, body_phantom(), modality=modality)
    ct = read_unchanged(read_ct, folder)
    assert check_ct(ct) is not None


# ------------------------------------------------------------------------------------
# 5. DICOM without SeriesInstanceUID
# ------------------------------------------------------------------------------------
def _strip_series_uid(folder: Path) -> None:
    import pydicom

    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = ""
        ds.save_as(p)


def test_dicom_series_with_empty_uid_is_grouped_by_other_tags(tmp_path):
    folder = tmp_path / "anon"
    hu = body_phantom()
    write_dicom_series(folder, hu)
    _strip_series_uid(folder)
    ct = read_unchanged(read_ct, folder)
    assert ct.hu.shape == hu.shape
    assert np.array_equal(ct.hu, hu)
    assert any("no SeriesInstanceUID" in n for n in ct.metadata.notes)


def test_two_anonymised_series_stay_apart(tmp_path):
    folder = tmp_path / "anon"
    hu = body_phantom()
    write_dicom_series(folder / "a", hu, series_number=3)
    write_dicom_series(folder / "b", hu[:, :, :5], series_number=4, spacing=(0.7, 0.9, 5.0))
    _strip_series_uid(folder / "a")
    _strip_series_uid(folder / "b")
    ct = read_unchanged(read_ct, folder)
    assert ct.hu.shape == hu.shape  # the series with more slices, not a mix of both
    assert any("2 image series" in n for n in ct.metadata.notes)


# ------------------------------------------------------------------------------------
# 6. SliceThickness differing from the slice spacing
# ------------------------------------------------------------------------------------
def test_slice_thickness_differing_from_spacing_is_reported(tmp_path):
    folder = tmp_path / "dcm"
    write_dicom_series(folder, body_phantom(), spacing=(0.7, 0.9, 2.5), thickness=5.0,
                       contrast=None)
    ct = read_unchanged(read_ct, folder)
    assert ct.geometry.spacing_mm[2] == pytest.approx(2.5)  # geometry uses the spacing
    warnings = check_ct(ct)
    assert any("Slice thickness 5 mm differs from slice spacing 2.5 mm" in w
               and "overlapping" in w for w in warnings)
    assert any("5 mm thick" in w for w in warnings)  # thick-slice warning: thickness


# ------------------------------------------------------------------------------------
# 7. label map differing from the CT only in direction
# ------------------------------------------------------------------------------------
def test_label_map_differing_only_in_direction_is_resampled(tmp_path):
    ct_geom = Geometry((20, 20, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    lab_geom = Geometry((20, 20, 10), (1.0, 1.0, 1.0), (19.0, 19.0, 0.0),
                        np.diag([-1.0, -1.0, 1.0]))
    assert not lab_geom.same_grid(ct_geom)
    arr = np.zeros(lab_geom.shape, dtype=np.uint8)
    arr[1:5, 2:9, 3:6] = 1
    path, _ = write_label_map(LabelMap(arr, lab_geom, {1: "femur_left"}),
                              tmp_path / "l.nii.gz")
    lm = read_unchanged(read_labels, path, ct_geom)
    assert lm.geometry.same_grid(ct_geom)
    assert np.array_equal(lm.array, arr[::-1, ::-1, :])  # voxel (i, j) lies at (19-i, 19-j)
    assert any("resampled" in n for n in lm.notes)


# ------------------------------------------------------------------------------------
# 8. TotalSegmentator v1 maps
# ------------------------------------------------------------------------------------
def test_totalseg_v1_table_source_and_known_ids():
    assert len(TOTALSEG_V1_TOTAL) == 104
    assert TOTALSEG_V1_TOTAL[88] == "femur_left" and TOTALSEG_V2_TOTAL[88] == "iliopsoas_left"
    assert TOTALSEG_V1_TOTAL[92] == "sacrum" and TOTALSEG_V1_TOTAL[18] == "vertebrae_L5"
    assert TOTALSEG_V1_TOTAL[102] == "iliopsoas_left"


def _v1_array() -> np.ndarray:
    a = np.zeros(GEOM.shape, dtype=np.uint8)
    a[2:8, 2:8, 1:5] = 88    # v1 femur_left
    a[12:18, 2:8, 1:5] = 102  # v1 iliopsoas_left
    a[2:8, 12:18, 1:5] = 92   # v1 sacrum
    return a


def test_totalseg_v1_is_read_by_name(tmp_path):
    path = write_image(_v1_array(), GEOM, tmp_path / "seg.nii.gz")
    lm = read_unchanged(read_labels, path, GEOM, "totalseg-v1")
    assert lm.structures == {88: "femur_left", 102: "iliopsoas_left", 92: "sacrum"}
    assert "v1" in lm.source
    v2 = read_labels(path, GEOM, "totalseg-v2")
    assert v2.structures[88] == "iliopsoas_left"  # what a v2 table says
    plain = read_labels(path, GEOM, "totalseg")
    assert any("totalseg-v1" in n for n in plain.notes)


def test_sidecar_disagreeing_with_format_is_named(tmp_path):
    path = write_image(_v1_array(), GEOM, tmp_path / "seg.nii.gz")
    side = tmp_path / "seg.labels.json"
    side.write_text(json.dumps({str(k): v for k, v in TOTALSEG_V1_TOTAL.items()}))
    lm = read_unchanged(read_labels, path, GEOM, "totalseg")
    assert lm.structures[88] == "iliopsoas_left"  # the explicit format wins ...
    note = next(n for n in lm.notes if "disagrees" in n)  # ... with a warning
    assert "88: 'femur_left' vs 'iliopsoas_left'" in note
    assert "matches the TotalSegmentator v1 table" in note
    agree = read_labels(path, GEOM, "totalseg-v1")
    assert not any("disagrees" in n for n in agree.notes)


def test_v1_map_with_only_unknown_v2_names_suggests_v1(tmp_path):
    a = np.zeros(GEOM.shape, dtype=np.uint8)
    a[2:8, 2:8, 1:5] = 90   # v1 hip_left = v2 brain
    a[12:18, 2:8, 1:5] = 18  # v1 vertebrae_L5 = v2 small_bowel
    path = write_image(a, GEOM, tmp_path / "seg.nii.gz")
    with pytest.raises(InputError, match="totalseg-v1"):
        read_unchanged(read_labels, path, GEOM, "totalseg-v2")


# ------------------------------------------------------------------------------------
# 9. plausibility of each structure
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    return make_phantom(PhantomSpec(spacing_mm=3.0))


def _as_totalseg(labels: LabelMap, table: dict[int, str]) -> np.ndarray:
    by_key = {anatomy.key_for_name(n): v for v, n in table.items()}
    out = np.zeros(labels.array.shape, dtype=np.uint8)
    for value, key in labels.structures.items():
        if key in by_key:
            out[labels.array == value] = by_key[key]
    return out


def test_phantom_v2_map_read_as_v2_is_plausible(tmp_path, phantom):
    path = write_image(_as_totalseg(phantom.labels, TOTALSEG_V2_TOTAL), phantom.ct.geometry,
                       tmp_path / "seg.nii.gz")
    lm = read_labels(path, phantom.ct.geometry, "totalseg-v2")
    report = check_label_plausibility(phantom.ct, lm)
    assert len(report.checks) >= 10 and not report.implausible
    out, warnings = apply_plausibility(phantom.ct, lm)
    assert out is lm and warnings == []


def test_phantom_v1_map_read_as_v2_is_refused(tmp_path, phantom):
    path = write_image(_as_totalseg(phantom.labels, TOTALSEG_V1_TOTAL), phantom.ct.geometry,
                       tmp_path / "seg.nii.gz")
    lm = read_labels(path, phantom.ct.geometry, "totalseg")
    with pytest.raises(InputError) as exc:
        apply_plausibility(phantom.ct, lm)
    msg = one_line(exc)
    assert "TotalSegmentator v1" in msg and "totalseg-v1" in msg and "iliopsoas" in msg
    ok = read_labels(path, phantom.ct.geometry, "totalseg-v1")
    assert not check_label_plausibility(phantom.ct, ok).implausible


def test_single_mislabelled_structure_is_left_out(phantom):
    labels = phantom.labels
    femur = labels.value_of("femur_left")
    structures = {v: k for v, k in labels.structures.items() if k != "iliopsoas_left"}
    structures[femur] = "iliopsoas_left"  # the femur claims to be a muscle
    bad = LabelMap(labels.array, labels.geometry, structures, source="test")
    out, warnings = apply_plausibility(phantom.ct, bad)
    assert "iliopsoas_left" not in out.structures.values()
    assert "iliopsoas_left (left out" in out.unknown[femur]
    assert len(warnings) == 1 and "HU" in warnings[0] and "iliopsoas_left" in warnings[0]
    assert any("left out" in n for n in out.notes)
    assert out.mask("iliopsoas_left").sum() == 0
    assert bad.structures[femur] == "iliopsoas_left"  # input not modified


def test_fatty_muscle_is_plausible():
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(spacing_mm=3.0, muscle_fat_fraction=0.3))
    report = check_label_plausibility(ph.ct, ph.labels)
    muscles = [c for c in report.checks if c.structure_class == "muscle"]
    assert muscles and min(c.mean_hu for c in muscles) < 20  # fatty (~5 HU)
    assert not report.implausible


def test_small_bone_judged_only_when_not_cut_by_the_border():
    from CTMuscleBoneLib.image import CTImage

    g = Geometry((30, 30, 30), (1.0, 1.0, 1.0))
    hu = np.full(g.shape, 40.0)
    arr = np.zeros(g.shape, dtype=np.uint8)
    arr[10:20, 10:20, 10:20] = 1  # 1 cm3 "femur", inside the image
    hu[arr == 1] = 500.0
    ct = CTImage(hu, g)
    inside = check_label_plausibility(ct, LabelMap(arr, g, {1: "femur_left"}))
    assert "volume 1.0 cm3 < 40 cm3" in inside.implausible[0].reasons[0]
    cut = arr.copy()
    cut[10:20, 10:20, 0:10] = 1  # reaches the border: may be cut, not judged by volume
    hu[cut == 1] = 500.0
    assert not check_label_plausibility(ct, LabelMap(cut, g, {1: "femur_left"})).implausible


def test_real_totalseg_v2_labels_are_plausible(real_data_dir):
    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    lm = read_labels(real_data_dir / "lumbar_seg_totalseg.nii.gz", ct.geometry)
    report = check_label_plausibility(ct, lm)
    assert {c.structure_class for c in report.checks} >= {"muscle", "vertebra"}
    assert not report.implausible, report.describe()


def test_real_v2_labels_read_as_v1_are_refused(real_data_dir):
    # refused at reading: with v1 ids the structures are not where their names say
    # (label_layout), while with v2 ids every relation holds
    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    with pytest.raises(InputError, match="looks like a TotalSegmentator v2 map: use "
                       "label_format 'totalseg-v2'"):
        read_labels(real_data_dir / "lumbar_seg_totalseg.nii.gz", ct.geometry,
                    "totalseg-v1")


# ------------------------------------------------------------------------------------
# 10. one reader per format
# ------------------------------------------------------------------------------------
def test_training_reader_is_the_checked_reader(tmp_path):
    from CTMuscleBoneLib.segmentation.training import datasets

    assert datasets.read_image is read_image
    path = write_image(body_phantom(), GEOM, tmp_path / "ct.nii.gz")
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) - 200]))  # truncated
    with pytest.raises(InputError, match="truncated"):
        datasets.read_image(path)


def test_one_suffix_rule():
    from CTMuscleBoneLib.io_ct import image_stem, label_sidecar_path

    assert image_stem("Case1.NII.GZ") == "Case1"
    assert image_stem("b.seg.nrrd") == "b.seg"
    assert image_stem("v.nhdr") == "v" and image_stem("notes.txt") is None
    assert label_sidecar_path("b.seg.nrrd").name == f"{image_stem('b.seg.nrrd')}.labels.json"


def test_mask_folder_reader_overlap_rule_and_empty_masks(tmp_path):
    from CTMuscleBoneLib.io_labels import read_mask_folder

    a = np.zeros(GEOM.shape, dtype=np.uint8)
    a[2:8, 2:8, 1:5] = 1
    b = np.zeros(GEOM.shape, dtype=np.uint8)
    b[6:10, 2:8, 1:5] = 1  # overlaps a in 2 x 6 x 4 voxels
    write_image(a, GEOM, tmp_path / "femur_left.nii.gz")
    write_image(b, GEOM, tmp_path / "iliopsoas_left.nii.gz")
    write_image(np.zeros_like(a), GEOM, tmp_path / "femur_right.nii.gz")
    masks = read_unchanged(read_mask_folder, tmp_path)
    assert masks.names == {75: "femur_left", 88: "iliopsoas_left"}
    assert masks.empty == ["femur_right"]
    assert np.count_nonzero(masks.array == 75) == a.sum()  # first alphabetically keeps
    assert np.count_nonzero(masks.array == 88) == b.sum() - 48
    assert "48 voxels" in masks.notes[0]


# --- user JSON/CSV files that are not UTF-8 (one shared reader: user_files) --------------
UTF16_JSON = b"\xff\xfe{\x00}\x00"  # '{}' saved as UTF-16 with a byte-order mark


def _loaders():
    from CTMuscleBoneLib.alm import load_alm_model
    from CTMuscleBoneLib.calibration.definitions import load_phantom_definition
    from CTMuscleBoneLib.calibration.internal import load_internal_references
    from CTMuscleBoneLib.calibration.stored import load_calibration
    from CTMuscleBoneLib.dxa.conversion import load_dxa_model
    from CTMuscleBoneLib.dxa.references import load_reference
    from CTMuscleBoneLib.io_labels import read_names
    from CTMuscleBoneLib.muscle_l3 import load_l3_cutoffs

    return {"names": read_names, "alm-model": load_alm_model, "dxa-model": load_dxa_model,
            "bmd-reference": load_reference, "calibration-file": load_calibration,
            "references": load_internal_references, "phantom": load_phantom_definition,
            "l3-cutoffs": load_l3_cutoffs}


@pytest.mark.parametrize("option", ["names", "alm-model", "dxa-model", "bmd-reference",
                                    "calibration-file", "references", "phantom",
                                    "l3-cutoffs"])
def test_non_utf8_json_is_one_line_error_naming_the_file(tmp_path, option):
    p = tmp_path / "x.json"
    p.write_bytes(UTF16_JSON)
    with pytest.raises(InputError) as exc:
        read_unchanged(_loaders()[option], p)
    msg = one_line(exc)
    assert str(p) in msg and "UTF-16" in msg and "Save it as UTF-8" in msg
    p.write_bytes(b'{"a": "caf\xe9"}')  # Latin-1, no byte-order mark
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0xe9"):
        _loaders()[option](p)


@pytest.mark.parametrize("option", ["names", "alm-model", "dxa-model", "bmd-reference"])
def test_non_utf8_json_option_exits_2_without_traceback(tmp_path, capsys, option):
    from CTMuscleBoneLib.cli.main import main

    ct = write_image(body_phantom(), GEOM, tmp_path / "ct.nii.gz")
    labels = np.zeros(GEOM.shape, np.uint8)
    labels[4:10, 4:10, 2:6] = 1
    lab = write_image(labels, GEOM, tmp_path / "lab.nii.gz")
    p = tmp_path / "x.json"
    p.write_bytes(UTF16_JSON)
    assert main(["measure", "--ct", str(ct), "--labels", str(lab), "--quiet",
                 "--out", str(tmp_path / "out"), f"--{option}", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctmusclebone: error:"), err
    assert "UTF-16" in err[0] and str(p) in err[0]


def test_non_utf8_sidecar_and_csv_tables_are_one_line_errors(tmp_path):
    from CTMuscleBoneLib.batch.cases import read_case_list
    from CTMuscleBoneLib.tables import read_csv_table

    labels = np.zeros(GEOM.shape, np.uint8)
    labels[4:10, 4:10, 2:6] = 1
    path = write_image(labels, GEOM, tmp_path / "seg.nii.gz")
    side = tmp_path / "seg.labels.json"
    side.write_bytes(UTF16_JSON)
    with pytest.raises(InputError) as exc:
        read_unchanged(read_labels, path, GEOM)
    assert "seg.labels.json" in one_line(exc) and "UTF-16" in one_line(exc)
    table = tmp_path / "t.csv"
    table.write_bytes("case_id,ct\n".encode("utf-16"))
    for reader in (read_csv_table, read_case_list):
        with pytest.raises(InputError) as exc:
            reader(table)
        assert str(table) in one_line(exc) and "UTF-16" in one_line(exc)


def test_batch_case_with_non_utf8_sidecar_fails_naming_the_file(tmp_path):
    from CTMuscleBoneLib.batch import BatchOptions, run_batch

    src = tmp_path / "cases"
    src.mkdir()
    write_image(body_phantom(), GEOM, src / "c1.nii.gz")
    labels = np.zeros(GEOM.shape, np.uint8)
    labels[4:10, 4:10, 2:6] = 1
    write_image(labels, GEOM, src / "c1_labels.nii.gz")
    (src / "c1_labels.labels.json").write_bytes(UTF16_JSON)
    result = run_batch(src, tmp_path / "out", BatchOptions(measure={"calibration": "none"}),
                       workers=1)
    rec = result.records[0]
    assert rec.status == "failed" and rec.error_type == "InputError", rec.error
    assert "c1_labels.labels.json" in rec.error and "UTF-16" in rec.error


# --- label values beyond the supported range ----------------------------------------------
@pytest.mark.parametrize("value", [2**40, 2**32 + 41, 2**31])
def test_label_value_above_int32_is_refused_not_wrapped(tmp_path, value):
    import SimpleITK as sitk
    from CTMuscleBoneLib.image import sitk_from_array
    from CTMuscleBoneLib.io_labels import MAX_LABEL_VALUE

    a = np.zeros(GEOM.shape, np.int64)
    a[2:6, 2:6, 1:4] = 41
    a[10:14, 2:6, 1:4] = value  # wrapped to int32: 0 (background) or 41
    path = tmp_path / "big.nrrd"
    sitk.WriteImage(sitk_from_array(a, GEOM), str(path))
    (tmp_path / "big.labels.json").write_text(json.dumps({"41": "femur_left",
                                                          str(value): "femur_right"}))
    with pytest.raises(InputError) as exc:
        read_unchanged(read_labels, path, GEOM)
    msg = one_line(exc)
    assert str(value) in msg and str(MAX_LABEL_VALUE) in msg


# --- DICOM slices disagreeing on their in-plane grid ----------------------------------------
@pytest.mark.parametrize("tag", ["PixelSpacing", "Rows"])
def test_dicom_slices_with_different_grids_are_refused(tmp_path, tag):
    import pydicom

    folder = tmp_path / "dcm"
    uid = write_dicom_series(folder, body_phantom(), shuffle=False)
    files = sorted(folder.glob("*.dcm"))
    for f in files[::2]:
        ds = pydicom.dcmread(f)
        if tag == "PixelSpacing":
            ds.PixelSpacing = [1.8, 1.4]  # double the series' 0.9 x 0.7 mm
        else:  # a smaller image: 10 rows of the 20
            ds.Rows = 10
            ds.PixelData = ds.PixelData[: 10 * ds.Columns * 2]
        ds.save_as(f)
    with pytest.raises(InputError) as exc:
        read_unchanged(read_ct, folder)
    msg = one_line(exc)
    assert uid in msg
    if tag == "PixelSpacing":
        assert "PixelSpacing" in msg and "1.8 x 1.4 mm in 4 slice(s)" in msg
        assert "0.9 x 0.7 mm in 4 slice(s)" in msg
    else:
        assert "Rows x Columns" in msg and "10 x 24" in msg and "20 x 24" in msg


def test_dicom_pixel_spacing_rounding_is_accepted(tmp_path):
    import pydicom

    folder = tmp_path / "dcm"
    write_dicom_series(folder, body_phantom(), shuffle=False)
    f = sorted(folder.glob("*.dcm"))[3]
    ds = pydicom.dcmread(f)
    ds.PixelSpacing = [0.9000001, 0.6999999]
    ds.save_as(f)
    ct = read_ct(folder)
    assert np.allclose(ct.geometry.spacing_mm, (0.7, 0.9, 2.5))


# --- phantom command arguments ---------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--spacing", "2", "3"], "one value (isotropic) or three"),
    (["--spacing", "2", "3", "4", "5"], "got 4"),
    (["--spacing", "0.1"], "million voxels"),
    (["--spacing", "-1"], "positive"),
    (["--height", "-1"], "Height -1.0 is implausible"),
    (["--height", "1000"], "implausible"),
])
def test_phantom_arguments_are_checked_before_building(tmp_path, capsys, args, needle):
    from CTMuscleBoneLib.cli.main import main

    out = tmp_path / "o"
    assert main(["phantom", "--region", "thigh", "--out", str(out), *args]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("SYNTHETIC PHANTOM")]
    assert len(err) == 1 and err[0].startswith("ctmusclebone: error:") and needle in err[0]
    assert not out.exists()


def test_phantom_grid_limit_is_checked_without_allocating():
    import argparse

    from CTMuscleBoneLib.cli.cmd_phantom import MAX_PHANTOM_VOXELS, _checked_args

    def args(spacing, region="full"):
        return argparse.Namespace(spacing=spacing, region=region, height=1.6)

    assert _checked_args(args([2.0])) == (2.0, 1.6)
    assert _checked_args(args([1.0, 1.0, 3.0])) == ((1.0, 1.0, 3.0), 1.6)
    with pytest.raises(InputError, match=f"limit of {MAX_PHANTOM_VOXELS / 1e6:g} million"):
        _checked_args(args([0.3]))


def test_phantom_height_in_cm_is_read_as_cm_like_measure(capsys):
    import argparse

    from CTMuscleBoneLib.cli.cmd_phantom import _checked_args

    ns = argparse.Namespace(spacing=[2.0], region="thigh", height=170.0)
    assert _checked_args(ns) == (2.0, pytest.approx(1.70))
    assert "read as centimetres" in capsys.readouterr().err
