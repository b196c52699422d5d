"""DICOM input from real archives: several studies and series, localizers, dose reports,
secondary captures, derived series, non-CT series, compressed transfer syntaxes, and
the refusals of missing slices and gantry tilt (CTMuscleBoneLib.io_ct).

Series are written with pydicom (``write_dicom_series`` of test_io_ct); compressed ones
are encoded with pydicom 3's encoders (RLE natively, JPEG-LS with pyjpegls, JPEG 2000
with pylibjpeg-openjpeg) and, for JPEG lossless (process 14, first-order prediction),
which no installed package encodes, with the small lossless-JPEG encoder below
(ITU-T T.81 annex H).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.io_ct import DICOM_EXTRA_HINT, list_dicom_series, read_ct
from test_io_ct import body_phantom, sha256, write_dicom_series

CORONAL = (1, 0, 0, 0, 0, -1)


def _write_dose_sr(folder: Path, study_uid: str) -> str:
    """A minimal X-Ray Radiation Dose SR object (no pixels), as scanners store it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 999
    ds.SeriesDescription = "Dose Report"
    ds.PatientID = "CTMB-TEST"
    ds.save_as(folder / "dose_sr.dcm", enforce_file_format=True)
    return ds.SeriesInstanceUID


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Two studies: the axial CT (8 slices) among a localizer, a coronal reformat with
    more slices, a dose screen, a dose SR, a shorter CT of another study and an MR with
    more slices."""
    root = tmp_path_factory.mktemp("archive")
    hu = body_phantom()
    study1, study2 = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"
    uids = {
        "axial": write_dicom_series(root / "s1" / "axial", hu, study_uid=study1,
                                    series_number=2, image_type="ORIGINAL\\PRIMARY\\AXIAL"),
        "localizer": write_dicom_series(root / "s1" / "scout", hu[:, :, :2],
                                        study_uid=study1, series_number=1,
                                        image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
                                        orientation=CORONAL, description="Topogram"),
        "reformat": write_dicom_series(root / "s1" / "mpr",
                                       np.concatenate([hu, hu], axis=2), study_uid=study1,
                                       series_number=5, orientation=CORONAL,
                                       image_type="DERIVED\\SECONDARY\\REFORMATTED",
                                       description="COR MPR"),
        "dose_screen": write_dicom_series(root / "s1" / "dose", hu[:, :, :1],
                                          study_uid=study1, series_number=998,
                                          sop_class="1.2.840.10008.5.1.4.1.1.7",
                                          image_type="DERIVED\\SECONDARY\\OTHER",
                                          description="Dose Report"),
        "dose_sr": _write_dose_sr(root / "s1" / "rdsr", study1),
        "short": write_dicom_series(root / "s2" / "ct", hu[:, :, :5], study_uid=study2,
                                    series_number=3, description="short"),
        "mr": write_dicom_series(root / "s2" / "mr", np.concatenate([hu, hu], axis=2),
                                 study_uid=study2, series_number=4, modality="MR",
                                 description="T1"),
    }
    return root, uids, hu


def test_archive_chooses_the_axial_ct_and_says_why_each_other_was_skipped(archive):
    root, uids, hu = archive
    before = sha256(root)
    ct = read_ct(root)
    assert sha256(root) == before
    assert ct.metadata.series_instance_uid == uids["axial"]
    np.testing.assert_array_equal(ct.hu, hu)
    note = next(n for n in ct.metadata.notes if "chosen by rule" in n)
    assert "6 image series and 1 non-image series" in note
    reasons = {
        "localizer": "localizer",
        "reformat": "derived/secondary image",
        "dose_screen": "dose screen",
        "dose_sr": "radiation dose structured report",
        "short": "fewer slices",
        "mr": "not CT (modality MR)",
    }
    for name, reason in reasons.items():
        after = note.split(uids[name], 1)[1].split(";")[0] if name != "reformat" else \
            note.split(uids[name], 1)[1]
        assert reason in after, (name, after)
    assert "not axial (coronal slices)" in note


def test_list_dicom_series_orders_candidates_first(archive):
    root, uids, _ = archive
    series = list_dicom_series(root)
    order = [s.series_uid for s in series]
    assert order[:3] == [uids["axial"], uids["short"], uids["reformat"]]
    assert set(order[3:]) == {uids["localizer"], uids["dose_screen"], uids["mr"]}
    assert uids["dose_sr"] not in order  # not an image
    by_uid = {s.series_uid: s for s in series}
    assert by_uid[uids["reformat"]].fallback_reason.startswith("derived")
    assert by_uid[uids["mr"]].skip_reason == "not CT (modality MR)"


def test_user_choice_reads_a_fallback_series_but_refuses_mr_and_dose_sr(archive):
    root, uids, hu = archive
    ct = read_ct(root, series_uid=uids["reformat"])
    assert ct.hu.shape == (24, 20, 16)  # coronal slices: 16 along the slice normal (-y)
    assert ct.geometry.axis_for("superior")[0] == 1
    assert any("derived/secondary image" in n for n in ct.metadata.notes)
    with pytest.raises(InputError, match="not CT \\(modality MR\\)"):
        read_ct(root, series_uid=uids["mr"])
    with pytest.raises(InputError, match="dose structured report"):
        read_ct(root, series_uid=uids["dose_sr"])


def test_only_derived_series_is_read_with_a_note(tmp_path):
    hu = body_phantom()
    write_dicom_series(tmp_path / "d", hu, image_type="DERIVED\\SECONDARY\\AXIAL")
    ct = read_ct(tmp_path / "d")
    np.testing.assert_array_equal(ct.hu, hu)
    assert any("No original axial CT series" in n for n in ct.metadata.notes)


def test_folder_without_ct_is_refused_naming_what_it_holds(tmp_path):
    hu = body_phantom()
    write_dicom_series(tmp_path / "mr", hu, modality="MR")
    write_dicom_series(tmp_path / "pt", hu[:, :, :4], modality="PT")
    write_dicom_series(tmp_path / "scout", hu[:, :, :1],
                       image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    with pytest.raises(InputError) as err:
        read_ct(tmp_path)
    msg = str(err.value)
    assert "No CT image series" in msg and "modality MR" in msg and "modality PT" in msg
    assert "localizer" in msg and "CT only" in msg


# ------------------------------------------------------------------------------------
# compressed transfer syntaxes
# ------------------------------------------------------------------------------------
def _jpeg_lossless_sv1(plane: np.ndarray) -> bytes:
    """Encode a uint16 image as lossless JPEG, process 14, selection value 1.

    ITU-T T.81 annex H: prediction from the left neighbour (first column: from above;
    first sample: 2^15), differences modulo 2^16 coded by category (SSSS) with one
    Huffman table in which every category 0..16 has a 5-bit code, then SSSS extra bits.
    """
    x = plane.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff).ravel()
    bits: list[str] = []
    for d in diff.tolist():
        ssss = 16 if d == -32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else d - 1 + (1 << ssss), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i:i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)
    rows, cols = plane.shape
    sof = bytes([0xFF, 0xC3, 0, 11, 16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") \
        + bytes([1, 1, 0x11, 0])
    counts = [0, 0, 0, 0, 17] + [0] * 11
    dht = bytes([0xFF, 0xC4, 0, 2 + 1 + 16 + 17, 0x00]) + bytes(counts) + bytes(range(17))
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def _to_jpeg_lossless(folder: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        frame = _jpeg_lossless_sv1(ds.pixel_array)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(p, enforce_file_format=True)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless",
                                    "JPEGLosslessSV1"])
def test_compressed_series_read_back_to_the_same_hu_and_geometry(tmp_path, syntax):
    import pydicom
    import pydicom.uid

    uid = getattr(pydicom.uid, syntax)
    hu = body_phantom((40, 36, 8))  # JPEG 2000: >= 32 pixels per side for its 6 levels
    hu[5, 6, 3] = -1024  # the smallest stored value (0)
    hu[7, 8, 4] = 3000
    plain = write_dicom_series(tmp_path / "plain", hu, series_uid="1.2.3.4.5.1")
    if syntax == "JPEGLosslessSV1":
        write_dicom_series(tmp_path / "packed", hu, series_uid="1.2.3.4.5.2")
        _to_jpeg_lossless(tmp_path / "packed")
    else:
        write_dicom_series(tmp_path / "packed", hu, series_uid="1.2.3.4.5.2",
                           transfer_syntax=uid)
    one = pydicom.dcmread(next((tmp_path / "packed").glob("*.dcm")), stop_before_pixels=True)
    assert one.file_meta.TransferSyntaxUID == uid
    ref = read_ct(tmp_path / "plain")  # SimpleITK (GDCM), uncompressed
    ct = read_ct(tmp_path / "packed")  # pydicom with the decoders of the dicom extra
    assert ref.metadata.series_instance_uid == plain
    np.testing.assert_array_equal(ct.hu, hu)
    assert ct.geometry.same_grid(ref.geometry, tol_mm=1e-5)
    assert any(uid.name in n for n in ct.metadata.notes)
    assert ct.metadata.sop_instance_uids is not None and len(ct.metadata.sop_instance_uids) == 8


def test_oblique_compressed_series_has_the_geometry_simpleitk_gives(tmp_path):
    from pydicom.uid import RLELossless

    hu = body_phantom()
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    oblique = (c, s, 0.0, 0.0, 0.0, -1.0)  # row tilted 20 deg in x-y, column along -z
    write_dicom_series(tmp_path / "plain", hu, orientation=oblique)
    write_dicom_series(tmp_path / "rle", hu, orientation=oblique, transfer_syntax=RLELossless)
    ref, ct = read_ct(tmp_path / "plain"), read_ct(tmp_path / "rle")
    assert ct.geometry.same_grid(ref.geometry, tol_mm=1e-5)
    np.testing.assert_array_equal(ct.hu, ref.hu)


def test_missing_decoder_names_the_dicom_extra(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    write_dicom_series(tmp_path / "jls", body_phantom(), transfer_syntax=JPEGLSLossless)
    decoder = get_decoder(JPEGLSLossless)
    # the state pydicom reports when pyjpegls and pylibjpeg are not installed
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setitem(decoder._unavailable, "pyjpegls", ("pyjpegls",))
    with pytest.raises(InputError) as err:
        read_ct(tmp_path / "jls")
    msg = str(err.value)
    assert DICOM_EXTRA_HINT in msg and "JPEG-LS Lossless" in msg and "pyjpegls" in msg


def test_unsupported_compression_is_refused_with_what_to_do(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML

    write_dicom_series(tmp_path / "x", body_phantom())
    for p in (tmp_path / "x").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = MPEG2MPML  # a video syntax: no pixel decoder
        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
        ds.save_as(p)
    with pytest.raises(InputError, match="cannot decode.*Export the series uncompressed"):
        read_ct(tmp_path / "x")


# ------------------------------------------------------------------------------------
# missing slices, gantry tilt
# ------------------------------------------------------------------------------------
def test_missing_slice_message_names_the_positions_and_what_to_do(tmp_path):
    zs = [100.0, 102.5, 105.0, 107.5, 112.5, 115.0, 117.5, 120.0]  # 110.0 missing
    write_dicom_series(tmp_path / "gap", body_phantom(), positions_mm=zs)
    with pytest.raises(InputError) as err:
        read_ct(tmp_path / "gap")
    msg = str(err.value)
    assert "usual gap is 2.5 mm" in msg and "5 mm between 107.5 and 112.5" in msg
    assert "about 1 slice(s) missing" in msg and "Re-export the complete series" in msg


def test_uneven_spacing_lists_each_irregular_gap(tmp_path):
    zs = [0.0, 2.5, 5.0, 7.0, 9.5, 12.0, 15.0, 17.5]
    write_dicom_series(tmp_path / "uneven", body_phantom(), positions_mm=zs)
    with pytest.raises(InputError) as err:
        read_ct(tmp_path / "uneven")
    msg = str(err.value)
    assert "2 mm between 5 and 7" in msg and "3 mm between 12 and 15" in msg


def test_gantry_tilt_message_names_the_angle_positions_and_what_to_do(tmp_path):
    import pydicom

    hu = body_phantom()
    folder = tmp_path / "tilt"
    write_dicom_series(folder, hu)
    tilt_deg = 15.0
    for p in folder.glob("*.dcm"):  # shift each slice in y by z * tan(tilt)
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (z - 100.0) * np.tan(np.radians(tilt_deg)), z]
        ds.GantryDetectorTilt = tilt_deg
        ds.save_as(p)
    with pytest.raises(InputError) as err:
        read_ct(folder)
    msg = str(err.value)
    assert "gantry tilt of about 15.0 deg" in msg and "GantryDetectorTilt says 15 deg" in msg
    assert "first slice is at (-10, 20, 100)" in msg and "3D Slicer" in msg


def test_small_position_rounding_is_not_a_tilt_or_gap(tmp_path):
    zs = [100.0, 102.51, 104.99, 107.5, 110.02, 112.5, 114.98, 117.5]
    write_dicom_series(tmp_path / "ok", body_phantom(), positions_mm=zs)
    ct = read_ct(tmp_path / "ok")
    assert ct.geometry.shape == (24, 20, 8)
