"""DICOM input found wrong in a first-user review: multi-frame (Enhanced CT) files,
overlapping acquisitions in one series, a missing PixelSpacing, files without preamble.

Each test builds its DICOM with pydicom from the small phantom of test_io_ct.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.io_ct import read_ct
from test_io_ct import body_phantom, sha256, write_dicom_series

#: Enhanced CT Image Storage (DICOM PS3.4 B.5).
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-10.0, 20.0, 100.0)


def write_enhanced_ct(path: Path, hu: np.ndarray, frame_order: list[int] | None = None,
                      positions_mm: list[float] | None = None,
                      intercepts: list[float] | None = None) -> None:
    """Write ``hu`` (ITK order [i, j, k]) as one Enhanced CT multi-frame file.

    Slice ``k`` is at z = ``positions_mm[k]`` (default ORIGIN z + k x 2.5 mm); frames
    are stored in ``frame_order`` (slice indices; default ascending). Rescale slope 1;
    the intercept is shared (-1024) or, with ``intercepts``, one per slice in a
    per-frame PixelValueTransformationSequence.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    n = hu.shape[2]
    zs = positions_mm if positions_mm is not None else [ORIGIN[2] + k * SPACING[2]
                                                        for k in range(n)]
    order = frame_order if frame_order is not None else list(range(n))
    icps = intercepts if intercepts is not None else [-1024.0] * n

    def item(**values: object) -> Sequence:
        ds = Dataset()
        for key, value in values.items():
            setattr(ds, key, value)
        return Sequence([ds])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
    ds.SeriesNumber, ds.PatientID, ds.PatientName = 4, "CTMB-TEST", "Test^Phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    shared = Dataset()
    shared.PixelMeasuresSequence = item(PixelSpacing=[SPACING[1], SPACING[0]],
                                        SliceThickness=SPACING[2])
    shared.PlaneOrientationSequence = item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    if intercepts is None:
        shared.PixelValueTransformationSequence = item(
            RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")
    shared.CTXRayDetailsSequence = item(KVP=100)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, planes = [], []
    for k in order:
        frame = Dataset()
        frame.PlanePositionSequence = item(ImagePositionPatient=[ORIGIN[0], ORIGIN[1], zs[k]])
        if intercepts is not None:
            frame.PixelValueTransformationSequence = item(
                RescaleSlope=1, RescaleIntercept=icps[k], RescaleType="HU")
        frames.append(frame)
        planes.append((hu[:, :, k].T.astype(np.int32) - int(icps[k])).astype(np.uint16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(np.stack(planes)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def marked_position(ct) -> np.ndarray:
    """Physical position (LPS mm) of the phantom's single 1500 HU voxel."""
    idx = np.argwhere(ct.hu == 1500)
    assert len(idx) == 1
    return ct.geometry.index_to_physical(idx[0])


# the marked voxel [3, 4, 2] of body_phantom, written at ORIGIN with SPACING
MARK_MM = np.array([ORIGIN[0] + 3 * SPACING[0], ORIGIN[1] + 4 * SPACING[1],
                    ORIGIN[2] + 2 * SPACING[2]])


# ------------------------------------------------------------------------------------
# multi-frame (Enhanced CT): SimpleITK gave 1 mm spacing for unsorted frames and one
# rescale for all frames, without a word
# ------------------------------------------------------------------------------------
def test_enhanced_ct_with_unsorted_frames_keeps_geometry_and_hu(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "enh"
    write_enhanced_ct(folder / "mf.dcm", hu, frame_order=[3, 0, 6, 1, 7, 2, 5, 4])
    before = sha256(folder)
    ct = read_ct(folder)
    assert sha256(folder) == before  # input unchanged
    np.testing.assert_allclose(ct.geometry.spacing_mm, SPACING, atol=1e-6)
    np.testing.assert_allclose(ct.geometry.origin_mm, ORIGIN, atol=1e-6)
    np.testing.assert_array_equal(ct.hu, hu)
    np.testing.assert_allclose(marked_position(ct), MARK_MM, atol=1e-6)
    assert ct.metadata.kvp == 100.0 and ct.metadata.slice_thickness_mm == 2.5


def test_enhanced_ct_with_per_frame_rescale_is_rescaled_frame_by_frame(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "enh"
    write_enhanced_ct(folder / "mf.dcm", hu, intercepts=[-1024.0, -2048.0] * 4)
    ct = read_ct(folder)
    np.testing.assert_array_equal(ct.hu, hu)


@pytest.mark.parametrize("zs, message", [
    ([100.0, 102.5, 105.0, 107.5, 112.5, 115.0, 117.5, 120.0], "missing"),
    ([100.0, 102.5, 105.0, 107.5, 107.5, 110.0, 112.5, 115.0], "same position"),
])
def test_enhanced_ct_with_missing_or_duplicate_frames_is_refused(tmp_path, zs, message):
    folder = tmp_path / "enh"
    write_enhanced_ct(folder / "mf.dcm", body_phantom(), positions_mm=zs)
    with pytest.raises(InputError, match=message):
        read_ct(folder)


# ------------------------------------------------------------------------------------
# two acquisitions in one series whose slices interleave
# ------------------------------------------------------------------------------------
def _set_acquisition(folder: Path, number) -> None:
    import pydicom

    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.AcquisitionNumber = number(ds)
        ds.save_as(f, enforce_file_format=True)


def test_interleaved_acquisitions_of_one_series_are_refused(tmp_path):
    hu = body_phantom()
    uid = "1.2.826.0.1.3680043.8.498.77"
    root = tmp_path / "study"
    write_dicom_series(root / "a", hu, positions_mm=[100.0 + 5 * k for k in range(8)],
                       series_uid=uid)
    _set_acquisition(root / "a", lambda ds: 1)
    write_dicom_series(root / "b", hu + 300, positions_mm=[102.5 + 5 * k for k in range(8)],
                       series_uid=uid)
    _set_acquisition(root / "b", lambda ds: 2)
    with pytest.raises(InputError, match="acquisitions.*overlap.*folder of their own"):
        read_ct(root)


def test_acquisitions_one_after_another_are_one_volume(tmp_path):
    """Step-and-shoot scans number each rotation: contiguous acquisitions are read."""
    hu = body_phantom()
    folder = tmp_path / "step"
    write_dicom_series(folder, hu)
    _set_acquisition(folder, lambda ds: 1 + int(float(ds.ImagePositionPatient[2]) >= 110.0))
    ct = read_ct(folder)
    np.testing.assert_array_equal(ct.hu, hu)


# ------------------------------------------------------------------------------------
# PixelSpacing missing: SimpleITK used 1 mm
# ------------------------------------------------------------------------------------
def test_series_without_pixel_spacing_is_refused(tmp_path):
    import pydicom

    folder = tmp_path / "nops"
    write_dicom_series(folder, body_phantom())
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f, enforce_file_format=True)
    with pytest.raises(InputError, match="no PixelSpacing.*1 mm"):
        read_ct(folder)


# ------------------------------------------------------------------------------------
# files without preamble and without a file name ending were ignored
# ------------------------------------------------------------------------------------
def test_files_without_preamble_or_ending_are_read(tmp_path):
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    hu = body_phantom()
    src, folder = tmp_path / "src", tmp_path / "raw"
    write_dicom_series(src, hu)
    folder.mkdir()
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.file_meta
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)  # no preamble, no 'DICM', no file meta
        (folder / f.stem).write_bytes(fp.getvalue())
    ct = read_ct(folder)
    np.testing.assert_array_equal(ct.hu, hu)
    np.testing.assert_allclose(ct.geometry.spacing_mm, SPACING, atol=1e-6)


# ------------------------------------------------------------------------------------
# a localizer stored under the axial series' UID; a folder of one-slice series
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("localizer_first", [False, True])
def test_localizer_inside_the_axial_series_is_left_out(tmp_path, localizer_first):
    """The scout shares the axial series' UID (some scanners): the axial images are read
    (it was refused for mixed orientations, or, as the first file, the whole series was
    skipped as a localizer) and a note names the localizer."""
    hu = body_phantom()
    folder = tmp_path / "ct"
    uid = "1.2.826.0.1.3680043.8.498.77"
    write_dicom_series(folder / "axial", hu, series_uid=uid, shuffle=False)
    scout = np.full((24, 20, 1), -1000, dtype=np.int16)
    write_dicom_series(folder / ("0scout" if localizer_first else "zscout"), scout,
                       series_uid=uid, orientation=(1, 0, 0, 0, 0, -1),
                       image_type="ORIGINAL\\PRIMARY\\LOCALIZER", shuffle=False)
    before = sha256(folder)
    ct = read_ct(folder)
    assert sha256(folder) == before
    np.testing.assert_array_equal(ct.hu, hu)
    assert any("localizer" in n for n in ct.metadata.notes), ct.metadata.notes
    # the UID given explicitly reads the axial images too
    np.testing.assert_array_equal(read_ct(folder, series_uid=uid).hu, hu)


def test_folder_of_single_slice_series_says_so(tmp_path):
    hu = body_phantom()
    folder = tmp_path / "split"
    for k in range(hu.shape[2]):
        write_dicom_series(folder / f"s{k}", hu[:, :, k:k + 1], series_number=10 + k,
                           origin=(ORIGIN[0], ORIGIN[1], ORIGIN[2] + 2.5 * k),
                           frame_of_reference_uid="1.2.826.0.1.3680043.8.498.5")
    with pytest.raises(InputError) as exc:
        read_ct(folder)
    msg = str(exc.value)
    assert "\n" not in msg and "has a single slice" in msg
    assert f"{hu.shape[2]} single-slice series of this study" in msg
    assert "Re-export the images as one series" in msg
