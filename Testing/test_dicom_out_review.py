"""DICOM SEG / SR outputs: defects found in a review against the standard and consumers.

* non-ASCII patient names and text keep their characters (SpecificCharacterSet);
* the SEG's algorithm name never holds the label file's path or a Slicer node name;
* results from a synthetic (demo) segmentation model say so in the SEG and SR, and the
  SR carries the case-level warnings;
* a not-measurable row keeps its other warnings in the SR;
* the DICOM copy of the CT has the type 2 attributes of the CT Image IOD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.dicom_out import write_dicom
from CTMuscleBoneLib.dicom_out.seg import LABEL_FILE_ALGORITHM, SYNTHETIC_TAG, algorithm_name
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap
from CTMuscleBoneLib.results import ResultRow, Results

hd = pytest.importorskip("highdicom")

NAME = "Müller^Jürgen=山田^太郎"


def _case(source: str = "ctmb-demo 0.3",
          meta: CTMetadata | None = None) -> tuple[CTImage, LabelMap, Results]:
    g = Geometry((8, 8, 4), (2.0, 2.0, 2.0))
    arr = np.zeros(g.shape, dtype=np.uint8)
    key = "gluteus_maximus_left"
    arr[2:6, 2:6, 1:3] = BY_KEY[key].label_value
    labels = LabelMap(arr, g, {BY_KEY[key].label_value: key}, source=source)
    ct = CTImage(np.full(g.shape, 40, dtype=np.int16), g, meta or CTMetadata())
    results = Results(rows=[
        ResultRow(key, "volume", 0.256, "cm3", "voxel count"),
        ResultRow("patient", "smi", None, "cm2/m2", "SMI",
                  ["not_measurable: no height", "unvalidated: default ALM coefficients"]),
    ])
    return ct, labels, results


def _items(ds) -> list:
    """Every content item of an SR, depth first."""
    out = []
    for item in ds.get("ContentSequence", []):
        out += [item, *_items(item)]
    return out


def _texts(ds) -> list[str]:
    return [str(e.value) for e in ds.iterall()
            if e.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") and e.value]


def test_non_ascii_patient_name_is_kept_in_ct_copy_seg_and_sr(tmp_path: Path) -> None:
    meta = CTMetadata(patient_name=NAME, patient_id="PID-ÄÖ", study_description="Becken Süd")
    ct, labels, results = _case(meta=meta)
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    files = [paths["seg"], paths["sr"], sorted(paths["ct_series"].glob("*.dcm"))[0]]
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SpecificCharacterSet == "ISO_IR 192", f.name
        assert str(ds.PatientName) == NAME, f.name
        assert ds.PatientID == "PID-ÄÖ", f.name


def test_ascii_only_headers_declare_no_character_set(tmp_path: Path) -> None:
    ct, labels, results = _case(meta=CTMetadata(patient_name="Doe^Jane"))
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    for f in (paths["seg"], paths["sr"]):
        assert "SpecificCharacterSet" not in pydicom.dcmread(f)


@pytest.mark.parametrize("source, expected", [
    ("/data/Müller_Jürgen_PID123/labels.nii.gz (names: labels.labels.json)",
     LABEL_FILE_ALGORITHM),
    ("TotalSegmentator v2 (total) /data/Smith_John/seg.nii.gz", "TotalSegmentator v2 (total)"),
    ("TotalSegmentator folder C:\\cases\\Smith", "TotalSegmentator folder"),
    ("3D Slicer segmentation 'Smith John segmentation'", "3D Slicer segmentation"),
    ("CTMuscleBone label map cases/123456/labels.nrrd", "CTMuscleBone label map"),
    ("Smith_John.nii.gz", LABEL_FILE_ALGORITHM),
    ("ctmb-demo 0.3", "ctmb-demo 0.3"),
    ("", "unspecified"),
])
def test_algorithm_name_names_the_reader_not_the_path(source: str, expected: str) -> None:
    assert algorithm_name(source) == expected


def test_deidentified_seg_holds_no_label_path(tmp_path: Path) -> None:
    source = "/data/Müller_Jürgen_PID123/labels.nii.gz (names: labels.labels.json)"
    ct, labels, results = _case(source=source, meta=CTMetadata(patient_name=NAME))
    paths = write_dicom(results, ct, labels, tmp_path / "o", deidentify=True)
    for f in (paths["seg"], paths["sr"]):
        text = " ".join(_texts(pydicom.dcmread(f)))
        for secret in ("Müller", "Jürgen", "PID123", "/data", "labels.nii.gz"):
            assert secret not in text, (f.name, secret)
    seg = pydicom.dcmread(paths["seg"])
    assert seg.SegmentSequence[0].SegmentAlgorithmName == LABEL_FILE_ALGORITHM


def test_synthetic_model_results_say_so_in_seg_and_sr(tmp_path: Path) -> None:
    ct, labels, results = _case()
    warning = "Demo model trained on synthetic phantoms - not for clinical images."
    results.provenance.models.append({"kind": "segmentation model", "name": "ctmb-demo",
                                      "synthetic": True, "warning": warning})
    results.warnings.extend([warning, "Slices are 5 mm thick"])
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    seg, sr = pydicom.dcmread(paths["seg"]), pydicom.dcmread(paths["sr"])
    assert SYNTHETIC_TAG in seg.SeriesDescription and SYNTHETIC_TAG in sr.SeriesDescription
    assert SYNTHETIC_TAG in seg.ContentDescription
    evaluations = [i for i in sr.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert len(evaluations) == 1
    texts = [i.TextValue for i in evaluations[0].ContentSequence]
    assert texts == [warning, "Slices are 5 mm thick"]  # the model warning once, first
    report = hd.sr.srread(paths["sr"]).content  # still read by highdicom
    assert len(report.get_volumetric_roi_measurement_groups()) == 1


def test_real_model_results_carry_no_synthetic_tag(tmp_path: Path) -> None:
    ct, labels, results = _case()
    results.provenance.models.append({"name": "site-model", "synthetic": False})
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    for f in (paths["seg"], paths["sr"]):
        assert SYNTHETIC_TAG not in pydicom.dcmread(f).SeriesDescription


def test_not_measurable_row_keeps_its_other_warnings(tmp_path: Path) -> None:
    ct, labels, results = _case()
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    texts = [(i.ConceptNameCodeSequence[0].CodeValue, i.TextValue)
             for i in _items(pydicom.dcmread(paths["sr"])) if i.ValueType == "TEXT"]
    assert ("not_measurable", "smi: no height") in texts
    assert ("warning", "smi: unvalidated: default ALM coefficients") in texts


def test_ct_copy_has_the_type2_attributes_of_the_ct_image_iod(tmp_path: Path) -> None:
    ct, labels, _ = _case()
    paths = write_dicom(None, ct, labels, tmp_path / "o")
    ds = pydicom.dcmread(sorted(paths["ct_series"].glob("*.dcm"))[0])
    for keyword in ("KVP", "AcquisitionNumber", "PatientPosition"):
        assert keyword in ds, keyword


def test_segment_dicom_of_the_demo_model_says_synthetic(tmp_path: Path) -> None:
    """`ctmusclebone segment --dicom` writes the SEG without results: the model's warning
    is passed on, so the SEG still says SYNTHETIC DEMO MODEL (it said nothing)."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.io_ct import write_image
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(region=(0.0, 12.0), spacing_mm=6.0, seed=4))
    write_image(ph.ct.hu, ph.ct.geometry, tmp_path / "ct.nii.gz")
    out = tmp_path / "seg"
    assert main(["segment", "--ct", str(tmp_path / "ct.nii.gz"), "--samples", "1",
                 "--device", "cpu", "--dicom", "--out", str(out), "--quiet"]) == 0
    seg = pydicom.dcmread(out / "segmentation.dcm")
    assert SYNTHETIC_TAG in seg.SeriesDescription


def test_hand_corrected_segments_are_semiautomatic(tmp_path: Path) -> None:
    """A structure re-measured after a hand edit (rows flagged edited:) is SEMIAUTOMATIC
    in the SEG, the others stay AUTOMATIC (every segment was called AUTOMATIC)."""
    from CTMuscleBoneLib.pipeline import EDITED_FLAG

    ct, labels, results = _case()
    key = "gluteus_maximus_left"
    other = "gluteus_medius_left"
    arr = labels.array.copy()
    arr[2:6, 2:6, 3] = BY_KEY[other].label_value
    labels = LabelMap(arr, labels.geometry, {**labels.structures,
                                             BY_KEY[other].label_value: other},
                      source=labels.source)
    paths = write_dicom(results, ct, labels, tmp_path / "auto")
    types = {s.TrackingID: s.SegmentAlgorithmType
             for s in pydicom.dcmread(paths["seg"]).SegmentSequence}
    assert types == {key: "AUTOMATIC", other: "AUTOMATIC"}
    results.rows[0].flags.append(EDITED_FLAG)
    paths = write_dicom(results, ct, labels, tmp_path / "edited")
    types = {s.TrackingID: s.SegmentAlgorithmType
             for s in pydicom.dcmread(paths["seg"]).SegmentSequence}
    assert types == {key: "SEMIAUTOMATIC", other: "AUTOMATIC"}


def test_sr_evidence_lists_the_ct_images_beside_the_seg(tmp_path: Path) -> None:
    """Readers that load an SR's sources from its evidence (dcmqi, QuantitativeReporting)
    find the CT slices, not only the SEG (the evidence named the SEG alone)."""
    ct, labels, results = _case()
    paths = write_dicom(results, ct, labels, tmp_path / "o")
    sr = pydicom.dcmread(paths["sr"])
    seg = pydicom.dcmread(paths["seg"])
    slices = {pydicom.dcmread(p).SOPInstanceUID for p in paths["ct_series"].glob("*.dcm")}
    listed = {i.ReferencedSOPInstanceUID
              for study in sr.CurrentRequestedProcedureEvidenceSequence
              for series in study.ReferencedSeriesSequence
              for i in series.ReferencedSOPSequence}
    assert listed == slices | {seg.SOPInstanceUID}
    assert hd.sr.srread(paths["sr"]).content is not None  # still read by highdicom
