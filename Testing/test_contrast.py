"""Contrast enhancement: detected from the header and the labelled blood pool; every HU-
and BMD-based value is flagged, every category from one is 'indeterminate' (its
thresholds were made on unenhanced CT), and nothing is corrected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.contrast import (
    CONTRAST_BLOOD_HU,
    CONTRAST_FLAG,
    ContrastFinding,
    agent_from_header,
    contrast_category_flag,
    depends_on_hu,
    detect_contrast,
    make_categories_indeterminate,
)
from CTMuscleBoneLib.image import CTImage, CTMetadata
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import CATEGORY_WITHHELD, INDETERMINATE, ResultRow, is_category


def _lumbar(hu_blood: float):
    return make_phantom(PhantomSpec(region="lumbar", spacing_mm=3.0, seed=2, noise_sd_hu=5.0,
                                    hu_blood=hu_blood))


@pytest.mark.parametrize("agent, expected", [
    ("Omnipaque 350", "Omnipaque 350"), ("NONE", None), ("", None), (None, None),
    ("no contrast", None), ("Native", None),
])
def test_header_agent(agent, expected):
    assert agent_from_header(CTMetadata(contrast_agent=agent)) == expected


@pytest.mark.parametrize("hu_blood, enhanced", [(40.0, False), (220.0, True)])
def test_blood_pool_decides(hu_blood, enhanced):
    ph = _lumbar(hu_blood)
    finding = detect_contrast(ph.ct, ph.labels)
    assert finding.enhanced is enhanced
    assert finding.blood_hu["aorta"] == pytest.approx(hu_blood, abs=15.0)
    assert (finding.blood_hu["aorta"] > CONTRAST_BLOOD_HU) is enhanced


def test_nothing_tells_gives_unknown():
    ph = _lumbar(40.0)
    assert detect_contrast(ph.ct, None).enhanced is None


def _fixed_ha() -> pipeline.MeasureOptions:
    return pipeline.MeasureOptions(calibration="fixed", fixed_slope_mg_cm3_per_hu=0.8,
                                   fixed_intercept_mg_cm3=0.0, fixed_material="HA")


def test_enhanced_scan_flags_every_hu_and_bmd_value_and_corrects_nothing():
    """Numbers keep their values with CONTRAST_FLAG; categories are handled below.

    Changed with the contrast rule for categories: before it, category rows kept their
    category and carried CONTRAST_FLAG too; now they carry the category flag instead."""
    plain, enhanced = _lumbar(40.0), _lumbar(220.0)
    a = pipeline.measure(plain.ct, plain.labels, _fixed_ha())
    b = pipeline.measure(enhanced.ct, enhanced.labels, _fixed_ha())
    assert not any(CONTRAST_FLAG in r.flags for r in a.rows)
    flagged = [r for r in b.rows if CONTRAST_FLAG in r.flags]
    assert flagged and all(depends_on_hu(r.unit, r.quantity) for r in flagged)
    for r in b.rows:
        if depends_on_hu(r.unit, r.quantity) and not is_category(r.quantity):
            assert CONTRAST_FLAG in r.flags, (r.structure, r.quantity)
        else:
            assert CONTRAST_FLAG not in r.flags, (r.structure, r.quantity)
    # no correction: the bone values of the two scans are the same (bone is not enhanced
    # in the phantom; only the blood differs)
    for q in ("trabecular_vbmd", "trabecular_mean_hu"):
        assert b.value("vertebrae_L2", q) == pytest.approx(a.value("vertebrae_L2", q),
                                                          rel=0.01)
    assert b.value("lumbar_L1_L2", "trabecular_vbmd_ha") == pytest.approx(
        a.value("lumbar_L1_L2", "trabecular_vbmd_ha"), rel=0.01)
    assert any("Contrast-enhanced" in w for w in b.warnings)
    assert any(n.startswith("contrast: enhanced") for n in b.provenance.notes)


def test_enhanced_scan_gives_no_hu_based_category():
    """ACR (and every other HU/BMD category) is 'indeterminate' on an enhanced scan, with
    the evidence and what to do; the unenhanced scan keeps its category (the old code
    printed 'normal' on both, only flagged)."""
    plain, enhanced = _lumbar(40.0), _lumbar(220.0)
    a = pipeline.measure(plain.ct, plain.labels, _fixed_ha())
    b = pipeline.measure(enhanced.ct, enhanced.labels, _fixed_ha())
    flag = contrast_category_flag(b.artifacts["contrast"])
    assert flag.startswith(CATEGORY_WITHHELD + ": contrast-enhanced scan (aorta at 2")
    assert "measure a non-contrast scan" in flag
    for name in ("lumbar_L1_L2", "lumbar_L1_L4"):
        assert a.get(name, "acr_category").value == "normal"
        acr = b.get(name, "acr_category")
        assert acr.value == INDETERMINATE and flag in acr.flags, acr.flags
    cats = [r for r in b.rows if is_category(r.quantity) and depends_on_hu(r.unit, r.quantity)]
    assert cats
    for r in cats:
        assert r.value in (None, INDETERMINATE), (r.structure, r.quantity, r.value)
        assert flag in r.flags, (r.structure, r.quantity)
        assert CONTRAST_FLAG not in r.flags
    assert any("no category from HU or BMD" in w and "acr_category" in w
               for w in b.warnings)
    assert not any("no category from HU or BMD" in w for w in a.warnings)


def test_enhanced_scan_gives_no_pickhardt_category():
    """Uncalibrated at 120 kVp: Pickhardt's category unenhanced, 'indeterminate' enhanced."""
    plain, enhanced = _lumbar(40.0), _lumbar(220.0)
    opts = pipeline.MeasureOptions(calibration="none")
    a = pipeline.measure(plain.ct, plain.labels, opts)
    b = pipeline.measure(enhanced.ct, enhanced.labels, opts)
    assert a.get("vertebrae_L1", "opportunistic_category").value not in (None, INDETERMINATE)
    r = b.get("vertebrae_L1", "opportunistic_category")
    assert r.value == INDETERMINATE
    assert any(f.startswith("warning: category withheld: contrast-enhanced scan (aorta")
               for f in r.flags), r.flags
    assert b.get("vertebrae_L1", "trabecular_mean_hu").value == pytest.approx(
        a.get("vertebrae_L1", "trabecular_mean_hu").value, rel=0.01)


def test_l3_muscle_attenuation_cutoffs_are_contrast_dependent():
    """The L3 attenuation cut-offs (Martin 2013, Derstine 2018) were made on unenhanced
    CT: on an enhanced scan 'indeterminate' with the contrast flag; the attenuation keeps
    its value with CONTRAST_FLAG; the SMI cut-offs (areas) keep yes/no."""
    from test_muscle_l3 import AXIAL, make_case

    assert depends_on_hu("", "low_attenuation_derstine2018")
    assert depends_on_hu("", "low_attenuation_martin2013")
    assert not depends_on_hu("", "low_smi_prado2008")
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    enhanced = CTImage(ct.hu, ct.geometry, replace(ct.metadata, contrast_agent="Omnipaque 350"))
    opts = pipeline.MeasureOptions(height_m=1.6, sex="F", weight_kg=55.0, muscle_mask=muscle)
    a = pipeline.measure(ct, labels, opts)
    b = pipeline.measure(enhanced, labels, opts)
    att = [r.quantity for r in a.rows if r.quantity.startswith("low_attenuation_")]
    assert {"low_attenuation_martin2013", "low_attenuation_derstine2018"} <= set(att)
    for q in att:
        assert a.get("L3_level", q).value in ("yes", "no")
        r = b.get("L3_level", q)
        assert r.value == INDETERMINATE, (q, r.value)
        assert any(f.startswith("warning: category withheld: contrast-enhanced scan (header "
                                "names a contrast agent ('Omnipaque 350')")
                   for f in r.flags), r.flags
    ma = b.get("L3_level", "muscle_attenuation")
    assert ma.value == pytest.approx(a.get("L3_level", "muscle_attenuation").value)
    assert CONTRAST_FLAG in ma.flags
    for r in b.rows:
        if r.quantity.startswith("low_smi_"):
            assert r.value == a.get("L3_level", r.quantity).value
            assert not any("contrast" in f for f in r.flags)


@pytest.mark.parametrize("quantity, category", [
    ("acr_category", True), ("opportunistic_category", True),
    ("who_category_neck", True), ("jsbmr_category_total_hip", True),
    ("who_category_lumbar", True), ("low_smi_prado2008", True),
    ("low_attenuation_martin2013", True), ("sarcopenia_low_muscle_mass", True),
    ("trabecular_vbmd", False), ("t_score_neck", False), ("fracture_grade", False),
    ("muscle_attenuation", False), ("smi", False), ("abmd_total_hip", False),
])
def test_category_predicate(quantity, category):
    assert is_category(quantity) is category


def test_unenhanced_or_unknown_leaves_categories_alone():
    row = ResultRow("lumbar_L1_L2", "acr_category", "normal", "")
    for enhanced in (False, None):
        assert make_categories_indeterminate([row], ContrastFinding(enhanced=enhanced)) == []
        assert row.value == "normal" and row.flags == []


def test_header_alone_flags_rows():
    ph = _lumbar(40.0)
    meta = replace(ph.ct.metadata, contrast_agent="Iopamidol")
    ct = CTImage(ph.ct.hu, ph.ct.geometry, meta)
    labels = replace(ph.labels, structures={v: k for v, k in ph.labels.structures.items()
                                            if k not in ("aorta", "inferior_vena_cava")})
    res = pipeline.measure(ct, labels, pipeline.MeasureOptions(calibration="none"))
    assert any(CONTRAST_FLAG in r.flags for r in res.rows)
    assert sum("ontrast agent" in w for w in res.warnings) == 1  # said once
