"""Femoral BMD on synthetic femurs of known geometry and density.

Truth comes from :mod:`CTMuscleBoneLib.phantoms.femur`: exact line integrals through
the implicit solids (vBMD of the 3-D regions; the analytic DXA-view projection for
CT-aBMD, computed in the frame of the analytic landmarks, independently of voxels).
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.dxa import DXAConversionModel, ScoreContext, SiteLine, load_reference
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.femur import measure_femurs, tscore
from CTMuscleBoneLib.femur.landmarks import find_landmarks
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.phantoms.base import ScannerModel
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec
from femur_raster import ORIENTATIONS, analytic_abmd, grid_around, rasterize

SCANNER = ScannerModel()
CAL = Calibration("phantom", "HA", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")

SMALL = dict(head_radius_mm=20.0, neck_radius_mm=13.0, shaft_radius_mm=12.5,
             neck_length_mm=50.0, greater_trochanter_semi_axes_mm=(12.0, 13.0, 18.0))
LARGE = dict(head_radius_mm=25.0, neck_radius_mm=17.0, shaft_radius_mm=15.5,
             neck_length_mm=60.0, cortical_thickness_mm=3.5)

#: (id, side, neck-shaft angle, anteversion, spacing mm, orientation, size overrides)
CASES = [
    ("left-130-12-1.5-LPS", "left", 130.0, 12.0, (1.5, 1.5, 1.5), "LPS", {}),
    ("right-120-30-2.0-RAS", "right", 120.0, 30.0, (2.0, 2.0, 2.0), "RAS", {}),
    ("left-140-0-1.5-oblique-large", "left", 140.0, 0.0, (1.5, 1.5, 1.5), "oblique", LARGE),
    ("right-125-20-1.2-permuted-small", "right", 125.0, 20.0, (1.2, 1.2, 1.2), "permuted",
     SMALL),
    ("left-135-25-aniso-RAS", "left", 135.0, 25.0, (0.9, 0.9, 2.0), "RAS", {}),
]


def _run(side, nsa, av, spacing, orientation, overrides):  # noqa: ANN001, ANN202
    ph = FemurPhantom(FemurSpec(side=side, neck_shaft_angle_deg=nsa, anteversion_deg=av,
                                **overrides), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, spacing, ORIENTATIONS[orientation]))
    out = measure_femurs(ct, labels, CAL)
    rows = {(r.structure, r.quantity): r for r in out.rows}
    return ph, out, rows


@pytest.fixture(scope="module")
def results():
    return {c[0]: _run(*c[1:]) for c in CASES}


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_head_centre_within_1mm(results, case):
    ph, out, _ = results[case]
    side = ph.spec.side
    lm = out.landmarks[side]
    assert np.linalg.norm(lm.head_centre_mm - ph.truth().head_centre_mm) < 1.0
    assert abs(lm.head_radius_mm - ph.spec.head_radius_mm) < 1.0
    assert abs(lm.neck_shaft_angle_deg - ph.spec.neck_shaft_angle_deg) < 2.0
    assert lm.lesser_trochanter_mm is not None
    assert np.linalg.norm(lm.lesser_trochanter_mm - ph.truth().lesser_trochanter_mm) < 5.0


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_vbmd_within_2_percent(results, case):
    ph, _, rows = results[case]
    s = f"femur_{ph.spec.side}"
    truth = ph.truth().vbmd_mg_cm3
    for region in ("total_proximal", "neck", "trochanter"):
        row = rows[(s, f"vbmd_{region}")]
        assert row.value is not None, row.flags
        assert _rel(row.value, truth[region]) < 0.02, (region, row.value, truth[region])
        assert row.unit == "mg/cm3"
        assert row.method.startswith(CAL.method_text())


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_ct_abmd_within_3_percent_of_analytic_projection(results, case):
    ph, out, rows = results[case]
    s = f"femur_{ph.spec.side}"
    truth = analytic_abmd(ph)
    for site in ("total_hip", "femoral_neck"):
        row = rows[(s, f"abmd_{site}")]
        assert row.value is not None, row.flags
        assert row.unit == "g/cm2"
        assert _rel(row.value, truth[site]) < 0.03, (site, row.value, truth[site])
        # the shipped CT-to-DXA model is not validated: no T-score (project rule)
        t = rows[(s, f"t_score_{site}")]
        assert t.value is None and "not on the DXA scale" in t.flags[0]
    proj = out.projections[ph.spec.side]
    assert proj.pixel_mm == 0.25
    assert set(proj.roi_masks) == {"total_hip", "femoral_neck"}
    # the neck ROI lies inside the total hip ROI, the head centre outside both
    assert not (proj.roi_masks["femoral_neck"] & ~proj.roi_masks["total_hip"]).any()
    i, k = np.round(proj.landmarks_px["head_centre"]).astype(int)
    assert not proj.roi_masks["total_hip"][i, k]


@pytest.mark.parametrize("validated", [False, True])
def test_t_score_only_through_a_validated_model(validated):
    """Identity line, validated or not: with a validated model T-score, %YAM and WHO
    category follow from the measured aBMD (analytic to 1e-9); without, they are not
    measurable / indeterminate with the reason, while the aBMD rows are the same."""
    model = DXAConversionModel("identity", {s: SiteLine(1.0, 0.0) for s in
                                            ("total_hip", "femoral_neck")},
                               validated=validated)
    nh = load_reference("nhanes3")
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    out = measure_femurs(ct, labels, CAL, ScoreContext(model, nh, "F", 70.0))
    rows = {r.quantity: r for r in out.rows if r.structure == "femur_left"}
    truth = analytic_abmd(ph)
    for site in ("total_hip", "femoral_neck"):
        abmd = rows[f"abmd_{site}"].value
        assert _rel(abmd, truth[site]) < 0.03
        assert rows[f"abmd_dxa_{site}"].value == abmd
        t, yam = rows[f"t_score_{site}"], rows[f"percent_yam_{site}"]
        cat = rows[f"who_category_{site}"]
        ref = nh.sites[site]
        if validated:
            expected = (abmd - ref.mean_g_cm2) / ref.sd_g_cm2
            assert t.value == pytest.approx(expected, abs=1e-9)
            assert yam.value == pytest.approx(100.0 * abmd / ref.mean_g_cm2, abs=1e-9)
            assert cat.value == nh.criteria.category(expected)
            assert not any(f.startswith("unvalidated: CT-aBMD") for f in t.flags)
        else:
            for row in (t, yam, rows[f"z_score_{site}"]):
                assert row.value is None
                (why,) = [f for f in row.flags if f.startswith("not_measurable:")]
                assert "not on the DXA scale" in why and "fit-dxa" in why
                assert "--dxa-model" in why
            assert cat.value == "indeterminate"


def test_sides_are_both_measured_in_one_image():
    left = FemurPhantom(FemurSpec(side="left"), SCANNER)
    right = FemurPhantom(FemurSpec(side="right", anteversion_deg=20.0), SCANNER)
    lo = np.minimum(left.bounds_mm()[0], right.bounds_mm()[0])
    hi = np.maximum(left.bounds_mm()[1], right.bounds_mm()[1])
    # two femurs 180 mm apart: coarse grid keeps this fast
    ct, labels = rasterize([left, right], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    out = measure_femurs(ct, labels, CAL)
    assert set(out.projections) == {"left", "right"}
    for ph in (left, right):
        v = out.landmarks[ph.spec.side].head_centre_mm
        assert np.linalg.norm(v - ph.truth().head_centre_mm) < 1.0


def test_fine_spacing_crop_of_head_and_neck():
    """0.6 mm on a small crop (head and neck only): head centre, neck vBMD and aBMD."""
    ph = FemurPhantom(FemurSpec(side="right", neck_shaft_angle_deg=128.0,
                                anteversion_deg=15.0), SCANNER)
    t = ph.truth()
    c = t.head_centre_mm
    # right femur: lateral is -x; keep the head, the neck and its base (~1.1 M voxels)
    lo = c - np.array([40.0, 25.0, 42.0])
    hi = c + np.array([24.0, 25.0, 24.0])
    g = grid_around(lo, hi, (0.6, 0.6, 0.6), ORIENTATIONS["LPS"], margin_mm=0.0)
    ct, labels = rasterize([ph], g)
    lm = find_landmarks(labels.mask("femur_right"), g)
    assert np.linalg.norm(lm.head_centre_mm - c) < 0.5
    out = measure_femurs(ct, labels, CAL)
    rows = {r.quantity: r for r in out.rows if r.structure == "femur_right"}
    assert _rel(rows["vbmd_neck"].value, t.vbmd_mg_cm3["neck"]) < 0.02
    # cut above the lesser trochanter: total hip never a number, neck still measured
    assert rows["abmd_total_hip"].value is None
    assert rows["abmd_femoral_neck"].value is not None


def test_femur_cut_above_lesser_trochanter_has_no_total_hip():
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    lo = lo.copy()
    lo[2] = ph.meeting_point[2] - 10.0  # the lesser trochanter starts ~16 mm lower
    lo[:2] -= 5.0
    ct, labels = rasterize([ph], grid_around(lo, hi + 5.0, (1.5, 1.5, 1.5), np.eye(3),
                                             margin_mm=0.0))
    out = measure_femurs(ct, labels, CAL)
    rows = {r.quantity: r for r in out.rows if r.structure == "femur_left"}
    for q in ("abmd_total_hip", "t_score_total_hip", "who_category_total_hip",
              "vbmd_total_proximal", "vbmd_trochanter"):
        assert rows[q].value is None
        reason = [f for f in rows[q].flags if f.startswith("not_measurable:")]
        assert reason and "lesser trochanter" in reason[0]
    assert rows["abmd_femoral_neck"].value is not None
    assert rows["vbmd_neck"].value == pytest.approx(ph.truth().vbmd_mg_cm3["neck"], rel=0.02)
    assert np.linalg.norm(out.landmarks["left"].head_centre_mm - ph.truth().head_centre_mm) < 1


def test_femur_cut_just_below_lesser_trochanter_has_no_total_hip():
    ph = FemurPhantom(FemurSpec(side="right"), SCANNER)
    lo, hi = ph.bounds_mm()
    lo = lo.copy()
    lo[2] = ph.lesser_trochanter_point[2] - 12.0  # < 20 mm below it
    lo[:2] -= 5.0
    ct, labels = rasterize([ph], grid_around(lo, hi + 5.0, (2.0, 2.0, 2.0), np.eye(3),
                                             margin_mm=0.0))
    rows = {r.quantity: r for r in measure_femurs(ct, labels, CAL).rows
            if r.structure == "femur_right"}
    row = rows["abmd_total_hip"]
    assert row.value is None
    assert any("lesser trochanter" in f for f in row.flags if f.startswith("not_measurable"))
    assert rows["abmd_femoral_neck"].value is not None


def test_metal_makes_the_femur_not_measurable():
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    g = grid_around(lo, hi, (2.0, 2.0, 2.0), ORIENTATIONS["RAS"])
    ct, labels = rasterize([ph], g)
    # a screw along the neck axis: 4000 HU within 2.5 mm of the axis
    idx = np.indices(g.shape).reshape(3, -1).T
    p = g.index_to_physical(idx)
    t = ph.truth()
    rel = p - t.head_centre_mm
    s = rel @ t.neck_axis
    d = np.linalg.norm(rel - s[:, None] * t.neck_axis, axis=1)
    screw = ((d < 2.5) & (s > -10) & (s < 45)).reshape(g.shape)
    hu = ct.hu.copy()
    hu[screw] = 4000.0
    out = measure_femurs(CTImage(hu, g), labels, CAL)
    rows = [r for r in out.rows if r.structure == "femur_left"]
    assert rows and all(r.value is None for r in rows)
    assert all(any(f.startswith("not_measurable: metal") for f in r.flags) for r in rows)
    # the other femur is absent: its rows say so, they are not silently dropped
    right = [r for r in out.rows if r.structure == "femur_right"]
    assert right and all(r.value is None for r in right)


def test_uncalibrated_reports_hu_only():
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    out = measure_femurs(ct, labels, Calibration.none())
    rows = {r.quantity: r for r in out.rows if r.structure == "femur_left"}
    for q in ("abmd_total_hip", "abmd_femoral_neck", "t_score_total_hip",
              "vbmd_neck", "who_category_femoral_neck"):
        assert rows[q].value is None
        # one flag for the one condition (no "uncalibrated" flag repeating it)
        assert rows[q].flags == ["not_measurable: no HU-to-BMD calibration (HU values only)"]
    # neck: mean HU of a cylinder with a 3 mm cortex, exact fractions 0.36 / 0.64
    sp = ph.spec
    hu_c, hu_t = SCANNER.hu_for_bmd(sp.cortical_bmd_mg_cm3), SCANNER.hu_for_bmd(
        sp.trabecular_bmd_mg_cm3)
    f_t = ((sp.neck_radius_mm - sp.cortical_thickness_mm) / sp.neck_radius_mm) ** 2
    expected = f_t * hu_t + (1 - f_t) * hu_c
    assert rows["mean_hu_neck"].value == pytest.approx(expected, rel=0.03)
    # HU and geometry rows do not depend on a calibration: no calibration text or flag
    assert not any("calibrat" in f for f in rows["mean_hu_neck"].flags)
    assert "calibrat" not in rows["mean_hu_neck"].method
    assert out.projections == {}


def test_label_map_on_another_grid_is_an_input_error():
    g = Geometry((10, 10, 10), (1.0, 1.0, 1.0))
    g2 = Geometry((10, 10, 10), (2.0, 1.0, 1.0))
    ct = CTImage(np.zeros(g.shape, np.int16), g)
    lm = LabelMap(np.zeros(g.shape, np.int16), g2, {1: "femur_left"})
    with pytest.raises(InputError, match="grid"):
        measure_femurs(ct, lm, CAL)


def test_t_score_arithmetic_and_who_categories():
    ref = tscore.REFERENCES["femoral_neck"]
    assert (ref.mean_g_cm2, ref.sd_g_cm2) == (0.858, 0.120)
    assert tscore.REFERENCES["total_hip"].mean_g_cm2 == 0.942
    assert tscore.REFERENCES["total_hip"].sd_g_cm2 == 0.122
    assert tscore.t_score(0.858, "femoral_neck") == pytest.approx(0.0)
    assert tscore.t_score(0.538, "femoral_neck") == pytest.approx(-2.6666667)
    assert tscore.t_score(0.942 - 0.122, "total_hip") == pytest.approx(-1.0)
    assert tscore.percent_young_adult_mean(0.6006, "femoral_neck") == pytest.approx(70.0)
    assert tscore.who_category(-1.0) == "normal"
    assert tscore.who_category(-1.01) == "low bone mass (osteopenia)"
    assert tscore.who_category(-2.49) == "low bone mass (osteopenia)"
    assert tscore.who_category(-2.5) == "osteoporosis"
    assert tscore.who_category(0.5) == "normal"
