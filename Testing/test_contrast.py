"""Contrast enhancement: detected from the header and the labelled blood pool; every HU-
and BMD-based row is flagged and nothing is corrected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.contrast import (
    CONTRAST_BLOOD_HU,
    CONTRAST_FLAG,
    agent_from_header,
    depends_on_hu,
    detect_contrast,
)
from CTMuscleBoneLib.image import CTImage, CTMetadata
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom


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


def test_enhanced_scan_flags_every_hu_and_bmd_row_and_corrects_nothing():
    plain, enhanced = _lumbar(40.0), _lumbar(220.0)
    opts = pipeline.MeasureOptions(calibration="fixed", fixed_slope_mg_cm3_per_hu=0.8,
                                   fixed_intercept_mg_cm3=0.0, fixed_material="HA")
    a = pipeline.measure(plain.ct, plain.labels, opts)
    b = pipeline.measure(enhanced.ct, enhanced.labels, opts)
    assert not any(CONTRAST_FLAG in r.flags for r in a.rows)
    flagged = [r for r in b.rows if CONTRAST_FLAG in r.flags]
    assert flagged and all(depends_on_hu(r.unit, r.quantity) for r in flagged)
    for r in b.rows:
        if depends_on_hu(r.unit, r.quantity):
            assert CONTRAST_FLAG in r.flags, (r.structure, r.quantity)
        else:
            assert CONTRAST_FLAG not in r.flags, (r.structure, r.quantity)
    categories = [r for r in b.rows if "category" in r.quantity]
    assert categories and all(CONTRAST_FLAG in r.flags for r in categories)
    # no correction: the bone values of the two scans are the same (bone is not enhanced
    # in the phantom; only the blood differs)
    assert b.value("vertebrae_L2", "trabecular_vbmd") == pytest.approx(
        a.value("vertebrae_L2", "trabecular_vbmd"), rel=0.01)
    assert any("Contrast-enhanced" in w for w in b.warnings)
    assert any(n.startswith("contrast: enhanced") for n in b.provenance.notes)


def test_header_alone_flags_rows():
    ph = _lumbar(40.0)
    meta = replace(ph.ct.metadata, contrast_agent="Iopamidol")
    ct = CTImage(ph.ct.hu, ph.ct.geometry, meta)
    labels = replace(ph.labels, structures={v: k for v, k in ph.labels.structures.items()
                                            if k not in ("aorta", "inferior_vena_cava")})
    res = pipeline.measure(ct, labels, pipeline.MeasureOptions(calibration="none"))
    assert any(CONTRAST_FLAG in r.flags for r in res.rows)
    assert sum("ontrast agent" in w for w in res.warnings) == 1  # said once
