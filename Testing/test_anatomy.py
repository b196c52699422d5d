"""Tests of the anatomy table: names, label values and SNOMED CT codes."""

from __future__ import annotations

import re

from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.io_labels import TOTALSEG_V2_TOTAL

#: Codes from TotalSegmentator's resources/totalsegmentator_snomed_mapping.csv
#: (wasserth/TotalSegmentator 0e65a448d557382b1e925276212b3bec7f5aff83), for the keys we share.
TOTALSEG_SNOMED = {
    "femur_left": "71341001", "hip_right": "29836001", "sacrum": "54735007",
    "vertebrae_L1": "66794005", "vertebrae_L2": "14293000", "vertebrae_L3": "36470004",
    "vertebrae_L4": "11994002", "vertebrae_L5": "49668003", "gluteus_maximus_left": "181674001",
    "gluteus_medius_right": "78333006", "gluteus_minimus_left": "75297007",
    "iliopsoas_right": "68455001", "aorta": "15825003", "inferior_vena_cava": "64131007",
    "subcutaneous_fat": "67769002",
}
#: Codes that mean something else in DICOM PS3.16 (Ilium, Sternocleidomastoid, Muscle).
WRONG_CODES = {"22356005", "22823000", "71616004", "64038003"}


def test_codes_match_totalsegmentator_mapping():
    for key, code in TOTALSEG_SNOMED.items():
        assert anatomy.structure(key).snomed_type[0] == code, key


def test_known_wrong_codes_are_gone():
    for st in anatomy.ANATOMY:
        assert st.snomed_type[0] not in WRONG_CODES, st.key
    assert anatomy.structure("autochthon_left").snomed_type[0] == "44947003"
    # 64038003 is "Intercostal lymph node" in DICOM's code tables, though
    # SlicerTotalSegmentator codes psoas major with it: the generic code is written
    assert anatomy.structure("psoas_major_right").snomed_type == anatomy.MUSCLE_OF_LOWER_LIMB


def test_codes_are_well_formed_and_documented():
    for st in anatomy.ANATOMY:
        for code in (st.snomed_type, st.snomed_category):
            assert code[1] == "SCT" and re.fullmatch(r"\d{6,18}", code[0]), st.key
            assert code[2].strip()
        # every code used is listed as verified or unverified in SNOMED_SOURCE
        assert st.snomed_type[0] in anatomy.SNOMED_SOURCE, st.key
    assert anatomy.LATERALITY == {"left": ("7771000", "SCT", "Left"),
                                  "right": ("24028007", "SCT", "Right")}
    assert "Unverified" in anatomy.SNOMED_SOURCE


def test_label_values_unique_and_in_range():
    values = [st.label_value for st in anatomy.ANATOMY]
    assert len(values) == len(set(values))
    assert all(1 <= v <= 255 for v in values)
    assert anatomy.canonical_label_names()[1] == "femur_left"


def test_totalsegmentator_names_map_to_keys():
    relevant = [25, 26, 27, 28, 29, 30, 31, 52, 63, *range(75, 79), *range(80, 90)]
    for tid in relevant:
        assert anatomy.key_for_name(TOTALSEG_V2_TOTAL[tid]) is not None, TOTALSEG_V2_TOTAL[tid]
    assert anatomy.key_for_name("vertebrae_S1") == "sacrum"
    for tid in (1, 5, 32, 79, 92, 117):  # organs, T12, ribs: not measured here
        assert anatomy.key_for_name(TOTALSEG_V2_TOTAL[tid]) is None


def test_aliases_and_display_names():
    assert anatomy.key_for_name("Gluteus medius (left)") == "gluteus_medius_left"
    assert anatomy.key_for_name("Left Femur") == "femur_left"
    assert anatomy.key_for_name("erector-spinae right") == "autochthon_right"
    assert anatomy.key_for_name("L3") == "vertebrae_L3"
    assert anatomy.key_for_name("no such thing") is None


def test_contralateral_swaps_the_side_of_every_sided_key():
    contralateral, by_key = anatomy.contralateral, anatomy.BY_KEY
    assert contralateral("femur_left") == "femur_right"
    assert contralateral("thigh_posterior_compartment_right") == "thigh_posterior_compartment_left"
    assert contralateral("sacrum") == "sacrum"
    for key, s in by_key.items():
        other = contralateral(key)
        assert contralateral(other) == key
        if s.side != "none":
            assert other in by_key and by_key[other].side != s.side
