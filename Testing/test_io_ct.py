"""Tests of CT input (NIfTI, NRRD, MHA, DICOM series) and image output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry, sitk_from_array
from CTMuscleBoneLib.io_ct import (
    label_sidecar_path,
    list_dicom_series,
    parse_dicom_age,
    read_ct,
    write_image,
)


# ------------------------------------------------------------------------------------
# synthetic data
# ------------------------------------------------------------------------------------
def body_phantom(shape=(24, 20, 8)) -> np.ndarray:
    """Air around an elliptic body: fat rim -100, muscle 40, a 700 HU bone; int16 HU."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ci, cj = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    r = ((i - ci) / (shape[0] * 0.42)) ** 2 + ((j - cj) / (shape[1] * 0.42)) ** 2
    sl = np.full(shape[:2], -1000, dtype=np.int16)
    sl[r < 1.0] = -100
    sl[r < 0.6] = 40
    sl[r < 0.1] = 700
    vol = np.repeat(sl[:, :, None], shape[2], axis=2).astype(np.int16)
    vol += np.arange(shape[2], dtype=np.int16)[None, None, :]  # slice-dependent values
    vol[3, 4, 2] = 1500  # a marked voxel
    return vol


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() \
        else [Path(path)]
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def write_dicom_series(folder: Path, hu: np.ndarray, spacing=(0.7, 0.9, 2.5),
                       origin=(-10.0, 20.0, 100.0), series_uid: str | None = None,
                       modality: str = "CT", rescale: bool = True, kvp: float = 120.0,
                       thickness: float | None = None, description: str = "Abdomen 2.5",
                       patient_size: float = 1.72, contrast: str | None = "OMNIPAQUE 350",
                       positions_mm: list[float] | None = None, shuffle: bool = True,
                       series_number: int = 3, frame_of_reference_uid: str | None = None,
                       transfer_syntax: str | None = None, image_type: str | None = None,
                       orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
                       sop_class: str | None = None, study_uid: str | None = None) -> str:
    """Write ``hu`` (ITK order [i, j, k]) as a CT Image Storage series, one file per slice.

    Rescale: stored = HU + 1024 (unsigned), RescaleSlope 1, RescaleIntercept -1024.
    Without ``rescale`` the HU are stored as signed values and the tags are omitted.
    ``transfer_syntax``: a compressed syntax UID encodes the pixels with pydicom's
    encoders (RLE natively, JPEG-LS with pyjpegls, JPEG 2000 with pylibjpeg-openjpeg).
    ``orientation``: ImageOrientationPatient; slice ``k`` is at ``origin + z_k * normal``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or "1.2.826.0.1.3680043.8.498.1"
    frame_of_reference_uid = frame_of_reference_uid or f"{study_uid}.{series_number}"
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    n = hu.shape[2]
    zs = positions_mm if positions_mm is not None else [origin[2] + k * spacing[2]
                                                        for k in range(n)]
    order = list(range(n))
    if shuffle:
        order = list(np.random.default_rng(0).permutation(n))
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class or CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.FrameOfReferenceUID = frame_of_reference_uid
        if image_type is not None:
            ds.ImageType = image_type.split("\\")
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        ds.PatientID = "CTMB-TEST"
        ds.PatientName = "Test^Phantom"
        ds.PatientSex = "F"
        ds.PatientAge = "065Y"
        ds.PatientSize = patient_size
        ds.PatientWeight = 58.5
        ds.StudyDate = "20240131"
        ds.Manufacturer = "ACME"
        ds.ManufacturerModelName = "Scanner 9000"
        ds.KVP = kvp
        if contrast is not None:
            ds.ContrastBolusAgent = contrast
        ds.SliceThickness = thickness if thickness is not None else spacing[2]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (j), column spacing (i)
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [float(v) for v in
                                   np.array([origin[0], origin[1], 0.0]) + zs[k] * normal]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        plane = np.ascontiguousarray(hu[:, :, k].T)  # rows = j, columns = i
        if rescale:
            ds.PixelRepresentation = 0
            ds.RescaleSlope = 1
            ds.RescaleIntercept = -1024
            stored = (plane.astype(np.int32) + 1024).astype(np.uint16)
        else:
            ds.PixelRepresentation = 1
            stored = plane.astype(np.int16)
        ds.PixelData = stored.tobytes()
        if transfer_syntax is not None:
            ds.compress(transfer_syntax, stored)
        ds.save_as(folder / f"IM{int(k) * 7919 % 1000:04d}_{k}.dcm", enforce_file_format=True)
    return series_uid


# ------------------------------------------------------------------------------------
# image files
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha"])
def test_file_roundtrip_same_hu_and_geometry(tmp_path, name):
    hu = body_phantom()
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = Geometry(hu.shape, (0.8, 1.1, 2.0), (-12.5, 30.25, -400.0), direction)
    path = tmp_path / name
    write_image(hu, g, path)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left
    ct = read_ct(path)
    np.testing.assert_array_equal(ct.hu, hu)
    assert ct.geometry.same_grid(g)
    assert ct.metadata.source == str(path)
    assert ct.metadata.kvp is None and ct.metadata.patient_sex is None


def test_write_image_rejects_unknown_suffix(tmp_path):
    g = Geometry((2, 2, 2), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="nii.gz"):
        write_image(np.zeros((2, 2, 2)), g, tmp_path / "x.png")


def test_label_sidecar_path():
    assert label_sidecar_path("/a/seg.nii.gz") == Path("/a/seg.labels.json")
    assert label_sidecar_path("/a/b.seg.nrrd").name == "b.seg.labels.json"


def _reorient(hu, spacing, origin, perm, flips):
    """The same physical volume stored with permuted and flipped array axes."""
    g0 = Geometry(hu.shape, spacing, origin, np.eye(3))
    arr = hu
    for ax in flips:
        arr = np.flip(arr, axis=ax)
    arr = np.ascontiguousarray(arr.transpose(perm))
    # new axis a = old axis perm[a]; a flipped old axis runs backwards from its far end
    direction = np.zeros((3, 3))
    start_idx = np.zeros(3)
    for a, old in enumerate(perm):
        sign = -1.0 if old in flips else 1.0
        direction[:, a] = g0.direction[:, old] * sign
        if old in flips:
            start_idx[old] = hu.shape[old] - 1
    new_origin = g0.index_to_physical(start_idx)
    return arr, Geometry(arr.shape, tuple(spacing[p] for p in perm), tuple(new_origin),
                         direction)


def test_orientation_ras_lps_permuted_give_same_physical_positions(tmp_path):
    hu = body_phantom()
    spacing, origin = (0.8, 1.1, 2.0), (5.0, -7.0, 12.0)
    variants = {
        "lps": ((0, 1, 2), ()),
        "ras": ((0, 1, 2), (0, 1)),
        "permuted": ((2, 0, 1), (1,)),
    }
    positions = {}
    for name, (perm, flips) in variants.items():
        arr, g = _reorient(hu, spacing, origin, perm, flips)
        for suffix in (".nii.gz", ".nrrd"):
            path = tmp_path / f"{name}{suffix}"
            write_image(arr, g, path)
            ct = read_ct(path)
            idx = np.argwhere(ct.hu == 1500)
            assert len(idx) == 1
            positions[name + suffix] = ct.geometry.index_to_physical(idx[0])
            assert int(ct.hu.sum()) == int(hu.sum())
    expected = Geometry(hu.shape, spacing, origin).index_to_physical(np.array([3, 4, 2]))
    for pos in positions.values():
        np.testing.assert_allclose(pos, expected, atol=1e-3)


def test_ras_nifti_written_by_other_tool_is_read_as_lps(tmp_path):
    """A NIfTI header is RAS; SimpleITK converts it, our geometry stays LPS."""
    hu = body_phantom()
    img = sitk_from_array(hu, Geometry(hu.shape, (1.0, 1.0, 1.0), (10.0, 20.0, 30.0),
                                       np.diag([-1.0, -1.0, 1.0])))
    path = tmp_path / "ras.nii.gz"
    sitk.WriteImage(img, str(path))
    ct = read_ct(path)
    assert ct.geometry.axis_for("left") == (0, -1)
    assert ct.geometry.axis_for("posterior") == (1, -1)
    np.testing.assert_allclose(ct.geometry.origin_mm, (10.0, 20.0, 30.0), atol=1e-4)


def test_two_d_image_is_refused(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((20, 20), dtype=np.int16) - 1000)
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputError, match="3-D"):
        read_ct(path)


def test_truncated_nifti_is_refused(tmp_path):
    hu = body_phantom((40, 40, 20))
    path = tmp_path / "ct.nii"
    write_image(hu, Geometry(hu.shape, (1.0, 1.0, 1.0)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged|truncated"):
        read_ct(path)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_ct(tmp_path / "nope.nii.gz")
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    with pytest.raises(InputError, match="not a supported"):
        read_ct(txt)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="No DICOM image"):
        read_ct(empty)


def test_4d_with_several_volumes_is_refused(tmp_path):
    arr = np.zeros((2, 4, 5, 6), dtype=np.int16)
    img = sitk.GetImageFromArray(arr, isVector=False)  # 4-D scalar, size (6, 5, 4, 2)
    path = tmp_path / "four_d.nii.gz"
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputError, match="4-D"):
        read_ct(path)


# ------------------------------------------------------------------------------------
# DICOM
# ------------------------------------------------------------------------------------
def test_dicom_series_reads_hu_geometry_metadata(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "dicom"
    uid = write_dicom_series(folder, hu)
    (folder / "README.txt").write_text("not dicom")
    (folder / "junk.dcm").write_bytes(b"garbage" * 10)
    before = sha256(folder)
    ct = read_ct(folder)
    assert sha256(folder) == before  # input unchanged
    np.testing.assert_array_equal(ct.hu, hu)
    g = ct.geometry
    np.testing.assert_allclose(g.spacing_mm, (0.7, 0.9, 2.5), atol=1e-6)
    np.testing.assert_allclose(g.origin_mm, (-10.0, 20.0, 100.0), atol=1e-6)
    np.testing.assert_allclose(g.direction, np.eye(3), atol=1e-6)
    m = ct.metadata
    assert m.modality == "CT"
    assert m.kvp == 120.0
    assert m.patient_sex == "F"
    assert m.patient_age_years == 65.0
    assert m.patient_height_m == pytest.approx(1.72)
    assert m.patient_weight_kg == pytest.approx(58.5)
    assert m.study_date == "20240131"
    assert m.contrast_agent == "OMNIPAQUE 350"
    assert m.slice_thickness_mm == 2.5
    assert m.series_instance_uid == uid
    assert m.study_instance_uid == "1.2.826.0.1.3680043.8.498.1"
    assert m.series_description == "Abdomen 2.5"
    assert m.manufacturer == "ACME" and m.manufacturer_model == "Scanner 9000"
    assert m.notes == ()


def test_single_dicom_file_reads_its_series(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "d"
    write_dicom_series(folder, hu)
    one = sorted(folder.glob("*.dcm"))[0]
    ct = read_ct(one)
    np.testing.assert_array_equal(ct.hu, hu)


def test_two_series_choice_rule_and_user_choice(tmp_path):
    hu = body_phantom()
    root = tmp_path / "study"
    big = write_dicom_series(root / "a" / "deep", hu, description="thin", series_number=2)
    small = write_dicom_series(root / "b", hu[:, :, :5], description="short",
                               series_number=1)
    series = list_dicom_series(root)
    assert [s.series_uid for s in series] == [big, small]
    assert series[0].n_slices == 8 and series[1].n_slices == 5
    ct = read_ct(root)
    assert ct.metadata.series_instance_uid == big
    assert ct.hu.shape == hu.shape
    note = " ".join(ct.metadata.notes)
    assert big in note and small in note and "most slices" in note
    ct2 = read_ct(root, series_uid=small)
    assert ct2.hu.shape == (24, 20, 5)
    assert ct2.metadata.series_instance_uid == small
    with pytest.raises(InputError, match="not in"):
        read_ct(root, series_uid="1.2.3.4")


def test_series_tie_goes_to_thinnest_slices_and_ct_first(tmp_path):
    hu = body_phantom()
    root = tmp_path / "study"
    thick = write_dicom_series(root / "thick", hu, thickness=5.0, series_number=1)
    thin = write_dicom_series(root / "thin", hu, thickness=1.0, series_number=2)
    mr = write_dicom_series(root / "mr", np.repeat(hu, 2, axis=2), modality="MR")
    order = [s.series_uid for s in list_dicom_series(root)]
    assert order == [thin, thick, mr]
    assert read_ct(root).metadata.series_instance_uid == thin


def test_truncated_dicom_is_refused(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "d"
    write_dicom_series(folder, hu)
    victim = sorted(folder.glob("*.dcm"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 300])
    with pytest.raises(InputError, match="damaged|truncated"):
        read_ct(folder)


def test_unrescaled_dicom_is_refused(tmp_path):
    raw = (body_phantom() + 1024).astype(np.int16)  # stored values, all >= 0
    folder = tmp_path / "raw"
    write_dicom_series(folder, raw, rescale=False)
    with pytest.raises(InputError, match="RescaleSlope"):
        read_ct(folder)


def test_dicom_without_rescale_but_hu_values_is_read_with_note(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "signed"
    write_dicom_series(folder, hu, rescale=False)
    ct = read_ct(folder)
    np.testing.assert_array_equal(ct.hu, hu)
    assert any("RescaleSlope" in n for n in ct.metadata.notes)


def test_missing_slice_and_duplicate_positions_are_refused(tmp_path):
    hu = body_phantom()
    zs = [0.0, 2.5, 5.0, 7.5, 12.5, 15.0, 17.5, 20.0]  # 10.0 missing
    write_dicom_series(tmp_path / "gap", hu, positions_mm=zs)
    with pytest.raises(InputError, match="missing"):
        read_ct(tmp_path / "gap")
    zs = [0.0, 2.5, 5.0, 5.0, 7.5, 10.0, 12.5, 15.0]
    write_dicom_series(tmp_path / "dup", hu, positions_mm=zs)
    with pytest.raises(InputError, match="same position"):
        read_ct(tmp_path / "dup")


def test_patient_size_in_cm_is_converted_with_note(tmp_path):
    folder = tmp_path / "cm"
    write_dicom_series(folder, body_phantom(), patient_size=168.0)
    ct = read_ct(folder)
    assert ct.metadata.patient_height_m == pytest.approx(1.68)
    assert any("PatientSize" in n for n in ct.metadata.notes)


def test_parse_dicom_age():
    assert parse_dicom_age("065Y") == 65.0
    assert parse_dicom_age("006M") == 0.5
    assert parse_dicom_age("052W") == pytest.approx(52 / 52.1775)
    assert parse_dicom_age("") is None and parse_dicom_age("abc") is None


# ------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------
def test_real_ct_reads_and_is_unchanged(real_data_dir):
    path = real_data_dir / "lumbar_ct.nii.gz"
    before = sha256(path)
    mtime = os.path.getmtime(path)
    ct = read_ct(path)
    assert sha256(path) == before and os.path.getmtime(path) == mtime
    assert ct.hu.shape == (122, 101, 30)
    assert ct.hu.min() <= -1000 and 500 < ct.hu.max() < 3000
    np.testing.assert_allclose(ct.geometry.spacing_mm, (3.0, 3.0, 3.0))
    assert ct.geometry.axis_for("superior") == (2, 1)


def test_geometry_description_says_when_the_grid_is_oblique():
    """The orientation letters name the nearest patient axes; an oblique grid says how
    far it is from them."""
    from CTMuscleBoneLib.image import Geometry

    assert Geometry((4, 5, 6), (1.0, 1.0, 2.0)).describe() == (
        "4x5x6 voxels, 1x1x2 mm, orientation LPS (LPS letters)")
    a = np.radians(30.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
    text = Geometry((4, 5, 6), (1.0, 1.0, 2.0), direction=rot).describe()
    assert text.endswith("orientation LPS (LPS letters, oblique: up to 30 deg off)")
