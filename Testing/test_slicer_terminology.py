"""The Slicer terminology file generated from the anatomy table (real Slicer classes)."""

from __future__ import annotations

import json

import pytest
import slicer
from CTMuscleBoneLib import anatomy
from CTMuscleBoneSlicer import terminology


def test_committed_file_is_current():
    """The shipped .term.json equals a fresh generation (regenerate with
    ``python -m CTMuscleBoneSlicer.terminology`` from the CTMuscleBone folder)."""
    assert terminology.TERMINOLOGY_FILE.read_text(encoding="utf-8") == \
        terminology.terminology_text()


def test_write_terminology_file(tmp_path):
    path = terminology.write_terminology_file(tmp_path / "sub" / "t.term.json")
    assert json.loads(path.read_text(encoding="utf-8")) == terminology.terminology_dict()


def test_every_structure_has_its_codes_and_colour():
    d = terminology.terminology_dict()
    assert d["SegmentationCategoryTypeContextName"] == terminology.CONTEXT_NAME
    found = {}
    for cat in d["SegmentationCodes"]["Category"]:
        codes = [(t["CodingSchemeDesignator"], t["CodeValue"]) for t in cat["Type"]]
        assert len(codes) == len(set(codes)), "Slicer identifies a type by its code"
        for t in cat["Type"]:
            for mod in t.get("Modifier", [{}]):
                colour = mod.get("recommendedDisplayRGBValue", t.get("recommendedDisplayRGBValue"))
                found[(cat["CodeValue"], t["CodeValue"], mod.get("CodeValue"))] = colour
    for st in anatomy.ANATOMY:
        lat = st.snomed_laterality[0] if st.snomed_laterality else None
        key = (st.snomed_category[0], st.snomed_type[0], lat)
        assert key in found, st.key
        assert all(0 <= c <= 255 for c in found[key])


def test_entry_string_equals_slicer_serializer():
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for st in anatomy.ANATOMY:
        lat = st.snomed_laterality or ("", "", "")
        expected = logic.SerializeTerminologyEntry(
            terminology.CONTEXT_NAME,
            st.snomed_category[0], st.snomed_category[1], st.snomed_category[2],
            st.snomed_type[0], st.snomed_type[1], st.snomed_type[2],
            lat[0], lat[1], lat[2],
            terminology.REGION_CONTEXT_NAME, "", "", "", "", "", "")
        assert terminology.terminology_entry_for(st.key) == expected


def test_entry_round_trips_to_key_where_codes_are_unique():
    shared = {st.key for st in anatomy.ANATOMY
              if sum(o.snomed_type == st.snomed_type and o.side == st.side
                     for o in anatomy.ANATOMY) > 1}
    assert "femur_left" not in shared and "iliacus_left" in shared
    for st in anatomy.ANATOMY:
        got = terminology.key_for_terminology_entry(terminology.terminology_entry_for(st.key))
        assert got == (None if st.key in shared else st.key), st.key
    # a TotalSegmentator / DICOM master list tag of another context, same codes
    ts = ("Segmentation category and type - Total Segmentator~SCT^123037004^Anatomical "
          "Structure~SCT^181674001^Gluteus maximus muscle~SCT^24028007^Right~Anatomic codes "
          "- DICOM master list~^^~^^")
    assert terminology.key_for_terminology_entry(ts) == "gluteus_maximus_right"
    assert terminology.key_for_terminology_entry("") is None
    assert terminology.key_for_terminology_entry("garbage") is None
    # SlicerTotalSegmentator tags psoas major with SCT 64038003 ("Intercostal lymph node"
    # in SNOMED CT): read as psoas major, never written by us
    legacy = ("Segmentation category and type - Total Segmentator~SCT^123037004^Anatomical "
              "Structure~SCT^64038003^Psoas major muscle~SCT^7771000^Left~Anatomic codes "
              "- DICOM master list~^^~^^")
    assert terminology.key_for_terminology_entry(legacy) == "psoas_major_left"
    assert "64038003" not in terminology.TERMINOLOGY_FILE.read_text(encoding="utf-8")
    assert "64038003" not in terminology.terminology_entry_for("psoas_major_left")


def test_slicer_loads_the_file_and_finds_colours():
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert terminology.load_terminology(logic=logic) == terminology.CONTEXT_NAME
    assert logic.GetNumberOfCategoriesInTerminology(terminology.CONTEXT_NAME) == 3
    for key in ("femur_left", "vertebrae_L3", "gluteus_medius_right", "subcutaneous_fat"):
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(terminology.terminology_entry_for(key), entry)
        assert logic.UpdateEntryFromLoadedTerminologies(entry, [terminology.CONTEXT_NAME], [])
        st = anatomy.structure(key)
        coded = entry.GetTypeModifierObject() if st.side != "none" else entry.GetTypeObject()
        assert tuple(coded.GetRecommendedDisplayRGBValue()) == st.color_rgb
        assert coded.GetSlicerLabel() == key


def test_load_terminology_outside_slicer_returns_none(monkeypatch):
    monkeypatch.delattr(slicer, "modules", raising=False)
    assert terminology.load_terminology() is None


@pytest.mark.parametrize("key", ["not_a_key"])
def test_unknown_key_raises(key):
    with pytest.raises(KeyError):
        terminology.terminology_entry_for(key)
