"""Femur cut by the field of view, and femoral BMD on one material and the DXA scale.

Phantoms from :func:`CTMuscleBoneLib.phantoms.make_phantom` with a field of view that
cuts the left femur above the lesser trochanter: every row of that femur is flagged
``partial``, and the total-hip rows name the field-of-view reason with and without a
calibration.
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.dxa import (
    DXAConversionModel,
    ScoreContext,
    SiteLine,
    load_dxa_model,
    load_reference,
)
from CTMuscleBoneLib.femur import measure_femurs
from CTMuscleBoneLib.femur.checks import cut_edges
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.phantoms.base import ScannerModel
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec
from femur_raster import grid_around, rasterize

SCANNER = ScannerModel()
HA = Calibration("phantom", "HA", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                 1.0, 5, "synthetic truth")
#: Where the builder's left femur's neck and shaft axes meet (default femur).
MEETING_Z = float(FemurPhantom(FemurSpec(side="left"), SCANNER).meeting_point[2])
TOTAL_HIP = ("abmd_total_hip", "abmd_dxa_total_hip", "t_score_total_hip",
             "who_category_total_hip", "percent_yam_total_hip", "vbmd_total_proximal",
             "vbmd_trochanter")


@pytest.fixture(scope="module")
def cut_phantom():
    """Left hip, field of view ending 10 mm below the neck-shaft meeting point."""
    return make_phantom(PhantomSpec(
        region="hip", fov_mm=((30.0, -60.0, MEETING_Z - 10.0), (175.0, 60.0, 40.0)),
        spacing_mm=2.0, sides=("left",), muscles=(), vessels=False, bones=("femur", "hip"),
        noise_sd_hu=0.0))


def _rows(out, side="left"):
    return {r.quantity: r for r in out.rows if r.structure == f"femur_{side}"}


@pytest.mark.parametrize("calibration", [HA, Calibration.none()], ids=["HA", "uncalibrated"])
def test_femur_cut_by_the_fov_is_partial_and_names_the_fov(cut_phantom, calibration):
    rows = _rows(measure_femurs(cut_phantom.ct, cut_phantom.labels, calibration))
    assert rows
    for q, r in rows.items():
        partial = [f for f in r.flags if f.startswith("partial:")]
        assert partial == ["partial: cut by the field of view (inferior image edge; at or "
                           "above the lesser trochanter)"], q
    for q in TOTAL_HIP:
        reason = [f for f in rows[q].flags if f.startswith("not_measurable:")]
        assert rows[q].value is None and len(reason) == 1, q
        assert "field of view ends above the lesser trochanter" in reason[0], q
        assert ("no HU-to-BMD calibration" in reason[0]) == (not calibration.calibrated), q
    neck = rows["abmd_femoral_neck"]
    assert (neck.value is not None) == calibration.calibrated


def test_shaft_cut_below_the_measured_regions_is_an_info_note():
    """The usual hip CT: the shaft is cut ~47 mm below the lesser trochanter."""
    p = make_phantom(PhantomSpec(region="hip", spacing_mm=3.0, sides=("left",), muscles=(),
                                 vessels=False, bones=("femur",), noise_sd_hu=0.0))
    rows = _rows(measure_femurs(p.ct, p.labels, HA))
    assert rows["abmd_total_hip"].value is not None
    assert not any(f.startswith("partial") for r in rows.values() for f in r.flags)
    (note,) = [f for f in rows["volume_total_proximal"].flags if "field of view" in f]
    assert note.startswith("info: femur cut by the field of view (inferior image edge; ")
    assert note.endswith("mm below the lesser trochanter); the measured regions are complete")


def test_lateral_cut_is_partial():
    lo_z = MEETING_Z - 120.0
    p = make_phantom(PhantomSpec(
        region="hip", fov_mm=((30.0, -60.0, lo_z), (140.0, 60.0, 40.0)), spacing_mm=2.0,
        sides=("left",), muscles=(), vessels=False, bones=("femur",), noise_sd_hu=0.0))
    rows = _rows(measure_femurs(p.ct, p.labels, HA))
    for q, r in rows.items():
        assert any(f.startswith("partial: cut by the field of view (inferior, left image edge")
                   for f in r.flags), q


def test_cut_femur_gets_no_category_whole_femur_does():
    """A lateral cut changes the aBMD (its value and T-score stay, flagged partial), so
    the WHO category is withheld; the same femur whole gets one."""
    ctx = ScoreContext(VALIDATED_IDENTITY, load_reference("nhanes3"), "F", 70.0)
    lo_z = MEETING_Z - 120.0
    cut = make_phantom(PhantomSpec(
        region="hip", fov_mm=((30.0, -60.0, lo_z), (140.0, 60.0, 40.0)), spacing_mm=2.0,
        sides=("left",), muscles=(), vessels=False, bones=("femur",), noise_sd_hu=0.0))
    whole = make_phantom(PhantomSpec(
        region="hip", fov_mm=((30.0, -60.0, lo_z), (175.0, 60.0, 40.0)), spacing_mm=2.0,
        sides=("left",), muscles=(), vessels=False, bones=("femur",), noise_sd_hu=0.0))
    rc = _rows(measure_femurs(cut.ct, cut.labels, HA, ctx))
    rw = _rows(measure_femurs(whole.ct, whole.labels, HA, ctx))
    assert not any(f.startswith("partial") for r in rw.values() for f in r.flags)
    for site in ("total_hip", "femoral_neck"):
        assert rc[f"abmd_{site}"].value is not None and rc[f"t_score_{site}"].value is not None
        assert abs(rc[f"abmd_{site}"].value - rw[f"abmd_{site}"].value) > 0.005, site
        assert rw[f"who_category_{site}"].value in ("normal", "low bone mass (osteopenia)",
                                                    "osteoporosis"), site
        cat = rc[f"who_category_{site}"]
        assert cat.value == "indeterminate", site
        (why,) = [f for f in cat.flags if f.startswith("warning: category withheld")]
        assert "femur cut by the field of view (inferior, left image edge" in why
        assert "measure a scan that shows the whole proximal femur" in why


def test_whole_femur_is_not_partial():
    ph = FemurPhantom(FemurSpec(side="right"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    rows = _rows(measure_femurs(ct, labels, HA), "right")
    assert rows["abmd_total_hip"].value is not None
    assert not any(f.startswith("partial") for r in rows.values() for f in r.flags)


def test_cut_edges_are_patient_directions_in_any_storage():
    m = np.zeros((5, 6, 7), bool)
    m[2, 3, 0] = True  # index 0 of axis 2
    lps = Geometry(m.shape, (1.0, 1.0, 1.0))
    assert cut_edges(m, lps) == ["inferior"]
    ras = Geometry(m.shape, (1.0, 1.0, 1.0), direction=np.diag([-1.0, -1.0, 1.0]))
    m2 = np.zeros_like(m)
    m2[0, 3, 3] = True  # index 0 of axis 0: +x (left) in RAS storage
    assert cut_edges(m2, ras) == ["left"]
    flipped = Geometry(m.shape, (1.0, 1.0, 1.0), direction=np.diag([1.0, 1.0, -1.0]))
    assert cut_edges(m, flipped) == ["superior"]


#: The identity line, declared validated (as a site's fitted model would be).
VALIDATED_IDENTITY = DXAConversionModel(
    "validated-identity", {"total_hip": SiteLine(1.0, 0.0), "femoral_neck": SiteLine(1.0, 0.0)},
    validated=True)


def _hip_ct(kvp):
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    return CTImage(ct.hu, ct.geometry, CTMetadata(kvp=kvp, patient_sex="F",
                                                  patient_age_years=70.0)), labels


@pytest.mark.parametrize(("kvp", "ratio"), [(80.0, 0.86), (140.0, 0.81), (None, 0.8266667)])
def test_k2hpo4_calibration_reported_on_the_ha_scale(kvp, ratio):
    """Same line read as K2HPO4: every density is the HA value x ratio (K2HPO4 = ratio x
    HA), so the HA-equivalent K2HPO4 result is the HA result / ratio."""
    ct, labels = _hip_ct(kvp)
    ha = _rows(measure_femurs(ct, labels, HA))
    k2 = _rows(measure_femurs(ct, labels, Calibration(
        "phantom", "K2HPO4", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3, 1.0, 5,
        "synthetic truth"), ScoreContext(VALIDATED_IDENTITY, load_reference("nhanes3"), "F",
                                         70.0)))
    for q in ("abmd_total_hip", "abmd_femoral_neck", "vbmd_neck", "vbmd_total_proximal"):
        assert k2[q].value == pytest.approx(ha[q].value / ratio, rel=1e-5), q
        assert "HA-equivalent: K2HPO4 density /" in k2[q].method
        assert "HA-equivalent (hydroxyapatite calibration)" in ha[q].method
        tag = "warning: kVp unknown" if kvp is None else "info: converted from K2HPO4"
        assert any(f.startswith(tag) for f in k2[q].flags), q
    # through a validated model the T-score follows the HA-equivalent (and
    # DXA-equivalent) value; through the shipped identity model there is none
    t = k2["t_score_total_hip"].value
    assert t == pytest.approx((k2["abmd_total_hip"].value - 0.942) / 0.122)
    assert k2["who_category_total_hip"].value != "indeterminate"
    assert ha["t_score_total_hip"].value is None
    assert ha["who_category_total_hip"].value == "indeterminate"


@pytest.mark.parametrize("validated", [False, True])
def test_reference_choice_names_the_category_row(validated):
    ct, labels = _hip_ct(120.0)
    model = VALIDATED_IDENTITY if validated else load_dxa_model(None)
    ctx = ScoreContext(model, load_reference("jsbmr2012"), "F", 70.0)
    out = measure_femurs(ct, labels, HA, ctx)
    rows = _rows(out)
    assert "jsbmr_category_total_hip" in rows and "who_category_total_hip" not in rows
    yam = rows["percent_yam_total_hip"]
    if validated:
        assert yam.value == pytest.approx(100 * rows["abmd_total_hip"].value / 0.886)
        assert rows["jsbmr_category_total_hip"].value in ("normal", "low bone mass",
                                                          "osteoporosis")
    else:  # %YAM is made for DXA aBMD: none through an unvalidated model
        assert yam.value is None and "not on the DXA scale" in yam.flags[0]
        assert rows["jsbmr_category_total_hip"].value == "indeterminate"
    assert rows["percent_yam_femoral_neck"].value is None
    assert "no femoral neck young-adult mean" in rows["percent_yam_femoral_neck"].flags[0]
    kinds = [p["kind"] for p in out.provenance]
    assert kinds == ["reference material conversion", "CT-to-DXA aBMD model", "BMD reference"]
