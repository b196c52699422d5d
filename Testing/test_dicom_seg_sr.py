"""DICOM SEG and SR outputs (CTMuscleBoneLib.dicom_out) read back with pydicom/highdicom.

Truth: the label map and the Results rows the files were written from. The SEG's
pixels must give back the label map (after the frame <-> array mapping), its segments
the anatomy table's codes; the SR's numbers must equal the rows, in UCUM units, and
refer to the SEG's segments.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.atomic import OUTPUT_MANIFEST
from CTMuscleBoneLib.dicom_out import SEG_NAME, SR_NAME, write_dicom
from CTMuscleBoneLib.dicom_out.codes import (
    DERIVATIONS,
    LOCAL_SCHEME,
    STANDARD_QUANTITIES,
    UCUM_UNITS,
)
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.io_ct import read_ct
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from test_io_ct import body_phantom, write_dicom_series

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def hip_case():
    """A coarse hip phantom with calibration rods, measured once (numbers, categories,
    T-scores and not-measurable rows)."""
    ph = make_phantom(PhantomSpec(region="hip", spacing_mm=4.0, seed=3, calibration=True,
                                  calibration_definition="B-MAS200"))
    options = pipeline.MeasureOptions(sex="F", height_m=1.60, age_years=70,
                                      phantom="B-MAS200")
    return ph.ct, ph.labels, pipeline.measure(ph.ct, ph.labels, options)


@pytest.fixture(scope="module")
def hip_written(hip_case, tmp_path_factory):
    ct, labels, results = hip_case
    out = tmp_path_factory.mktemp("dicom")
    return out, write_dicom(results, ct, labels, out)


def _labels_from_seg(seg, source_uids: list[str], shape: tuple[int, int, int]) -> np.ndarray:
    """Label values (ITK order) from a SEG: segment number -> anatomy label value."""
    numbers = list(seg.segment_numbers)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids, segment_numbers=numbers,
        combine_segments=True, skip_overlap_checks=True)
    to_value = np.zeros(max(numbers) + 1, dtype=np.int32)
    for n in numbers:
        to_value[n] = BY_KEY[seg.get_segment_description(n).tracking_id].label_value
    arr = to_value[frames].transpose(2, 1, 0)
    assert arr.shape == shape
    return arr


def _quantity_of(measurement) -> str:
    """The CTMuscleBone quantity of an SR measurement, from its concept name code."""
    name = measurement.name
    if name.scheme_designator == LOCAL_SCHEME:
        return name.value
    matches = [q for q, c in STANDARD_QUANTITIES.items() if c[0] == name.value]
    if len(matches) > 1:
        derivation = measurement.derivation
        matches = [q for q in matches if DERIVATIONS[q][0] == derivation.value]
    assert len(matches) == 1, name
    return matches[0]


def test_seg_segments_codes_and_pixels_roundtrip(hip_case, hip_written):
    ct, labels, _ = hip_case
    out, paths = hip_written
    assert paths["seg"] == out / SEG_NAME and paths["sr"] == out / SR_NAME
    ds = pydicom.dcmread(paths["seg"])
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    seg = hd.seg.segread(paths["seg"])
    present = labels.present_keys()
    assert seg.number_of_segments == len(present)
    for n in seg.segment_numbers:
        d = seg.get_segment_description(n)
        st = BY_KEY[d.tracking_id]
        assert d.segment_label == st.display_name
        assert (d.segmented_property_type.value,
                d.segmented_property_type.scheme_designator) == st.snomed_type[:2]
        assert d.segmented_property_category.value == st.snomed_category[0]
        modifier = ds.SegmentSequence[n - 1].SegmentedPropertyTypeCodeSequence[0].get(
            "SegmentedPropertyTypeModifierCodeSequence")
        if st.snomed_laterality is None:
            assert modifier is None
        else:
            assert modifier[0].CodeValue == st.snomed_laterality[0]
    # the input was not DICOM: the CT was written as a DICOM series and is the source
    ct_files = sorted((out / "ct").glob("*.dcm"))
    assert len(ct_files) == ct.geometry.shape[2]
    ct_back = read_ct(out / "ct")
    assert ct_back.geometry.same_grid(ct.geometry)
    np.testing.assert_array_equal(ct_back.hu, np.rint(ct.hu))
    assert seg.FrameOfReferenceUID == ct_back.metadata.frame_of_reference_uid
    assert (seg.ReferencedSeriesSequence[0].SeriesInstanceUID
            == ct_back.metadata.series_instance_uid)
    back = _labels_from_seg(seg, list(ct_back.metadata.sop_instance_uids), ct.geometry.shape)
    known = np.isin(labels.array, [BY_KEY[k].label_value for k in present])
    np.testing.assert_array_equal(back, np.where(known, labels.array, 0))


def test_sr_numbers_units_and_segment_references(hip_case, hip_written):
    _, labels, results = hip_case
    _, paths = hip_written
    seg = hd.seg.segread(paths["seg"])
    ds = pydicom.dcmread(paths["sr"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    assert ds.PatientID == seg.PatientID and ds.StudyInstanceUID == seg.StudyInstanceUID
    report = hd.sr.srread(paths["sr"]).content
    found: dict[tuple[str, str], tuple[float, str]] = {}
    segment_refs: dict[str, int] = {}
    texts: dict[str, list[str]] = {}
    categories: dict[tuple[str, str], str] = {}
    name_to_key = {}
    for r in results.rows:
        name_to_key[r.display_name] = r.structure
    volumetric = report.get_volumetric_roi_measurement_groups()
    groups = volumetric + report.get_image_measurement_groups()
    for i, g in enumerate(groups):
        key = name_to_key[g.tracking_identifier]
        if i < len(volumetric):
            # the IMAGE item "Referenced Segment" (DCM 121191) of the TID 1411 group
            ref = next(item.ReferencedSOPSequence[0] for item in g[0].ContentSequence
                       if item.ValueType == "IMAGE" and item.name.value == "121191")
            assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
            assert ref.ReferencedSegmentNumber not in segment_refs.values()
            segment_refs[key] = ref.ReferencedSegmentNumber
        for m in g.get_measurements():
            q = _quantity_of(m)
            assert (key, q) not in found
            found[(key, q)] = (m.value, m.unit.value)
        for e in g.get_qualitative_evaluations():
            categories[(key, e.name.value)] = e.value.meaning
        for item in g[0].ContentSequence:
            if item.ValueType == "TEXT" and item.name.value == "not_measurable":
                texts.setdefault(key, []).append(item.value)
    numeric = [r for r in results.rows if isinstance(r.value, (int, float))
               and not isinstance(r.value, bool) and math.isfinite(r.value)]
    assert len(numeric) > 100
    for r in numeric:
        value, unit = found.pop((r.structure, r.quantity))
        assert value == r.value, (r.structure, r.quantity)
        assert unit == UCUM_UNITS[r.unit][0]
    assert found == {}  # nothing in the SR that is not a row
    assert UCUM_UNITS["SD"][0] == "1" and UCUM_UNITS["HU"][0] == "[hnsf'U]"
    text_rows = [r for r in results.rows if isinstance(r.value, str)]
    assert text_rows
    for r in text_rows:
        assert categories[(r.structure, r.quantity)] == r.value
    missing = [r for r in results.rows if r.value is None]
    assert missing
    for r in missing:
        reason = next(f for f in r.flags if f.startswith("not_measurable")).split(":", 1)[1]
        assert any(t.startswith(r.quantity + ":") and reason.strip() in t
                   for t in texts[r.structure])
    # every segment's group refers to its own segment number
    for key, number in segment_refs.items():
        assert seg.get_segment_description(number).tracking_id == key
    assert set(segment_refs) == {k for k in labels.present_keys()
                                 if any(r.structure == k for r in results.rows)}


def _threshold_labels(ct: CTImage) -> LabelMap:
    arr = np.zeros(ct.hu.shape, dtype=np.uint8)
    arr[(ct.hu >= 30) & (ct.hu < 200)] = BY_KEY["gluteus_maximus_left"].label_value
    arr[ct.hu >= 600] = BY_KEY["femur_left"].label_value
    structures = {BY_KEY[k].label_value: k for k in ("gluteus_maximus_left", "femur_left")}
    return LabelMap(arr, ct.geometry, structures, source="threshold test labels")


def test_seg_of_dicom_input_references_the_source_series(tmp_path):
    folder = tmp_path / "src"
    series_uid = write_dicom_series(folder, body_phantom())
    ct = read_ct(folder)
    labels = _threshold_labels(ct)
    results = pipeline.measure(ct, labels, pipeline.MeasureOptions(bones=False))
    paths = write_dicom(results, ct, labels, tmp_path / "out")
    assert "ct_series" not in paths and not (tmp_path / "out" / "ct").exists()
    by_uid = {}
    for p in folder.glob("*.dcm"):
        src = pydicom.dcmread(p)
        by_uid[src.SOPInstanceUID] = src
    some = next(iter(by_uid.values()))
    seg = pydicom.dcmread(paths["seg"])
    assert seg.StudyInstanceUID == some.StudyInstanceUID
    assert seg.FrameOfReferenceUID == some.FrameOfReferenceUID
    assert seg.PatientName == some.PatientName and seg.PatientID == some.PatientID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    referenced = {i.ReferencedSOPInstanceUID
                  for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(by_uid)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        src_uid = frame.DerivationImageSequence[0].SourceImageSequence[0] \
            .ReferencedSOPInstanceUID
        src = by_uid[src_uid]
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in src.ImagePositionPatient], atol=1e-4)
    hseg = hd.seg.segread(paths["seg"])
    back = _labels_from_seg(hseg, list(ct.metadata.sop_instance_uids), ct.geometry.shape)
    np.testing.assert_array_equal(back, labels.array)
    sr = pydicom.dcmread(paths["sr"])
    assert sr.StudyInstanceUID == some.StudyInstanceUID
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID


def _all_values(ds) -> list[str]:
    out = []
    for elem in ds.iterall():
        if elem.VR in ("UI", "PN", "LO", "SH", "DA", "ST", "UT", "LT") and elem.value:
            out.append(str(elem.value))
    return out


def test_deidentified_outputs_carry_no_source_identifiers(tmp_path):
    folder = tmp_path / "src"
    series_uid = write_dicom_series(folder, body_phantom())
    ct = read_ct(folder)
    labels = _threshold_labels(ct)
    results = pipeline.measure(ct, labels, pipeline.MeasureOptions(bones=False))
    paths = write_dicom(results, ct, labels, tmp_path / "out", deidentify=True)
    secrets = {"Test^Phantom", "CTMB-TEST", "20240131", series_uid,
               ct.metadata.study_instance_uid, ct.metadata.frame_of_reference_uid,
               *ct.metadata.sop_instance_uids}
    files = [paths["seg"], paths["sr"], *sorted(paths["ct_series"].glob("*.dcm"))]
    for f in files:
        ds = pydicom.dcmread(f)
        leaked = secrets & set(_all_values(ds))
        assert not leaked, (f.name, leaked)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientSex == "F"  # patient characteristics kept (PS3.15 option)
    seg = hd.seg.segread(paths["seg"])
    copy = read_ct(paths["ct_series"])
    np.testing.assert_array_equal(copy.hu, ct.hu)
    back = _labels_from_seg(seg, list(copy.metadata.sop_instance_uids), ct.geometry.shape)
    np.testing.assert_array_equal(back, labels.array)


def test_flipped_permuted_grid_maps_frames_to_the_same_voxels(tmp_path):
    """A RAS-like, axis-permuted grid: the written CT series and SEG keep the geometry."""
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 1500, size=(12, 10, 6)).astype(np.int16)
    direction = np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # axis 1 along -z
    g = Geometry(hu.shape, (1.5, 2.0, 3.0), (40.0, -7.0, 12.0), direction)
    ct = CTImage(hu, g)
    arr = np.zeros(hu.shape, dtype=np.uint8)
    arr[2:7, 3:9, 1:5] = BY_KEY["vertebrae_L3"].label_value
    arr[8:11, 0:4, 0:2] = BY_KEY["psoas_major_right"].label_value
    labels = LabelMap(arr, g, {BY_KEY["vertebrae_L3"].label_value: "vertebrae_L3",
                               BY_KEY["psoas_major_right"].label_value: "psoas_major_right"})
    assert np.linalg.det(direction) < 0  # left-handed: DICOM readers reverse the slices
    paths = write_dicom(None, ct, labels, tmp_path / "out")
    assert "sr" not in paths
    copy = read_ct(paths["ct_series"])
    seg = hd.seg.segread(paths["seg"])
    back = _labels_from_seg(seg, list(copy.metadata.sop_instance_uids), g.shape)
    # every voxel centre of the read-back grid is a voxel centre of the original grid
    idx = np.indices(copy.geometry.shape).reshape(3, -1).T
    orig = g.physical_to_index(copy.geometry.index_to_physical(idx))
    np.testing.assert_allclose(orig, np.rint(orig), atol=1e-4)
    i, j, k = np.rint(orig).astype(int).T
    assert copy.geometry.voxel_volume_mm3 == pytest.approx(g.voxel_volume_mm3)
    np.testing.assert_array_equal(copy.hu.reshape(-1), hu[i, j, k])
    np.testing.assert_array_equal(back.reshape(-1), arr[i, j, k])


def test_overlapping_structures_keep_their_full_masks(tmp_path):
    g = Geometry((8, 8, 4), (2.0, 2.0, 2.0))
    arr = np.zeros(g.shape, dtype=np.uint8)
    a, b = BY_KEY["iliacus_left"].label_value, BY_KEY["psoas_major_left"].label_value
    arr[1:5, 1:5, :] = a
    arr[4:7, 4:7, :] = b  # overwrote one voxel column of a
    overlay = np.zeros(g.shape, dtype=bool)
    overlay[1:5, 1:5, :] = True
    labels = LabelMap(arr, g, {a: "iliacus_left", b: "psoas_major_left"},
                      overlays={"iliacus_left": overlay})
    ct = CTImage(np.full(g.shape, 40, dtype=np.int16), g)
    paths = write_dicom(None, ct, labels, tmp_path / "o")
    seg = hd.seg.segread(paths["seg"])
    copy = read_ct(paths["ct_series"])
    uids = list(copy.metadata.sop_instance_uids)
    for n in seg.segment_numbers:
        key = seg.get_segment_description(n).tracking_id
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[n])[..., 0]
        np.testing.assert_array_equal(mask.transpose(2, 1, 0).astype(bool), labels.mask(key))


def test_labels_off_the_ct_grid_or_without_structures_are_refused(tmp_path):
    g = Geometry((6, 6, 3), (1.0, 1.0, 1.0))
    ct = CTImage(np.zeros(g.shape, dtype=np.int16), g)
    other = LabelMap(np.ones((6, 6, 4), dtype=np.uint8), Geometry((6, 6, 4), (1, 1, 1)),
                     {1: "femur_left"})
    with pytest.raises(InputError, match="CT grid"):
        write_dicom(None, ct, other, tmp_path / "a")
    empty = LabelMap(np.zeros(g.shape, dtype=np.uint8), g, {1: "femur_left"})
    with pytest.raises(InputError, match="no structure"):
        write_dicom(None, ct, empty, tmp_path / "b")
    assert not (tmp_path / "b" / SEG_NAME).exists()


def test_dicom_out_is_not_imported_with_the_package():
    import subprocess
    import sys

    code = ("import sys, CTMuscleBoneLib.pipeline, CTMuscleBoneLib.dicom_out; "
            "print('highdicom' in sys.modules, 'pydicom' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.split() == ["False", "False"]


# --- command line ------------------------------------------------------------------------
def test_cli_measure_dicom_from_a_dicom_folder(tmp_path):
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.io_ct import write_label_map
    from CTMuscleBoneLib.results import Results

    folder = tmp_path / "src"
    series_uid = write_dicom_series(folder, body_phantom())
    labels = _threshold_labels(read_ct(folder))
    write_label_map(labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(folder), "--labels", str(tmp_path / "labels.nii.gz"),
               "--label-format", "json", "--names", str(tmp_path / "labels.labels.json"),
               "--no-bones", "--dicom", "--out", str(out), "--quiet"])
    assert rc == 0
    seg = pydicom.dcmread(out / SEG_NAME)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert not (out / "ct").exists()
    results = Results.read_json(out / "results.json")
    report = hd.sr.srread(out / SR_NAME).content
    volume = {}
    for g in report.get_volumetric_roi_measurement_groups():
        for m in g.get_measurements():
            if m.name.value == STANDARD_QUANTITIES["volume"][0]:
                volume[g.tracking_identifier] = m.value
    assert results.get("femur_left", "volume") is None  # --no-bones; still a SEG segment
    assert hd.seg.segread(out / SEG_NAME).number_of_segments == 2
    for key in ("gluteus_maximus_left",):
        row = results.get(key, "volume")
        assert volume[row.display_name] == pytest.approx(row.value, rel=1e-12)
        truth_cm3 = np.count_nonzero(labels.mask(key)) * labels.geometry.voxel_volume_cm3
        assert row.value == pytest.approx(truth_cm3, rel=1e-9)


def test_cli_measure_dicom_deidentified_from_nifti(tmp_path):
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.io_ct import write_image, write_label_map

    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=11))
    write_image(ph.ct.hu, ph.ct.geometry, tmp_path / "ct.nii.gz")
    write_label_map(ph.labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(tmp_path / "ct.nii.gz"), "--labels",
               str(tmp_path / "labels.nii.gz"), "--dicom", "--deidentify", "--out", str(out),
               "--quiet"])
    assert rc == 0
    assert (out / SEG_NAME).is_file() and (out / SR_NAME).is_file()
    assert len(list((out / "ct").glob("*.dcm"))) == ph.ct.geometry.shape[2]
    assert pydicom.dcmread(out / SR_NAME).PatientIdentityRemoved == "YES"
    # nothing half-written (the record of the folders written, ct/, is meant to be there)
    assert not any(p.name.startswith(".") and p.name != OUTPUT_MANIFEST for p in out.iterdir())


def test_dicom_source_without_frame_of_reference_is_copied_not_referenced(tmp_path):
    from CTMuscleBoneLib.dicom_out.source import source_images

    folder = tmp_path / "src"
    write_dicom_series(folder, body_phantom())
    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        del ds.FrameOfReferenceUID
        ds.save_as(p)
    ct = read_ct(folder)
    assert ct.metadata.frame_of_reference_uid is None
    sources = source_images(ct)
    assert sources.derived and "no frame of reference" in sources.reason
    assert sources.datasets[0].StudyInstanceUID != ct.metadata.study_instance_uid
    referable = source_images(
        CTImage(ct.hu, ct.geometry, replace(ct.metadata, frame_of_reference_uid="1.2.3.4")))
    assert not referable.derived
    assert [d.SOPInstanceUID for d in referable.datasets] == list(ct.metadata.sop_instance_uids)
