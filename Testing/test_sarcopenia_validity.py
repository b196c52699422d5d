"""Sarcopenia only when valid: no yes/no from an unvalidated model or partial muscles,
a lean (fat-excluded) predictor, and reasons that say what is missing and where."""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib import alm
from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap
from CTMuscleBoneLib.muscle_coverage import region_absence_reasons


def totals(mass_g: float, lean_g: float, partial: bool = False) -> dict:
    entry = {"volume_cm3": mass_g / 1.06, "mass_g": mass_g, "lean_mass_g": lean_g,
             "partial": partial, "members": ["x"]}
    return {"lower_limb_total": entry, "gluteal_total": dict(entry), "thigh_total": dict(entry)}


def by_q(rows):
    return {r.quantity: r for r in rows}


def test_unvalidated_default_gives_values_but_no_yes_no() -> None:
    q = by_q(alm.alm_rows(totals(3000.0, 2400.0), alm.load_alm_model(), 1.6, "F",
                          alm.CRITERIA["awgs2019"]))
    assert q["alm"].value is not None and q["smi"].value is not None
    row = q["sarcopenia_low_muscle_mass"]
    assert row.value == alm.INDETERMINATE
    assert len([f for f in row.flags if f.startswith("unvalidated")]) == 1  # one per condition
    assert any("no yes/no" in f for f in row.flags)


def test_partial_predictor_gives_indeterminate_with_a_validated_model() -> None:
    model = alm.ALMModel("site", "lower_limb_total/lean_mass", 0.0, 1.0, validated=True)
    q = by_q(alm.alm_rows(totals(15000.0, 12800.0, partial=True), model, 1.6, "F",
                          alm.CRITERIA["awgs2019"]))
    assert q["smi"].value == pytest.approx(5.0)
    assert any(f.startswith("partial") for f in q["smi"].flags)
    row = q["sarcopenia_low_muscle_mass"]
    assert row.value == alm.INDETERMINATE
    assert [f for f in row.flags if f.startswith("partial")]
    # the same numbers, complete: a real yes/no (5.0 < 5.4)
    q = by_q(alm.alm_rows(totals(15000.0, 12800.0), model, 1.6, "F",
                          alm.CRITERIA["awgs2019"]))
    assert q["sarcopenia_low_muscle_mass"].value == "yes"


@pytest.mark.parametrize("lean_g", [2150.0, 60000.0])
def test_alm_outside_the_adult_range_gets_no_yes_no(lean_g: float) -> None:
    """A validated model predicting 2.2 kg (the demo's partial thighs through the
    default) or 60 kg of ALM: off the scale of the cut-offs, flagged, no yes/no; the
    same model at an adult value gives one."""
    model = alm.ALMModel("site", "lower_limb_total/lean_mass", 0.0, 1.0, validated=True)
    q = by_q(alm.alm_rows(totals(lean_g * 1.2, lean_g), model, 1.6, "F",
                          alm.CRITERIA["awgs2019"]))
    for k in ("alm", "smi"):
        assert q[k].value is not None
        assert any("outside the adult range" in f for f in q[k].flags), q[k].flags
    row = q["sarcopenia_low_muscle_mass"]
    assert row.value == alm.INDETERMINATE
    assert any("outside the adult range" in f and "no yes/no" in f for f in row.flags)
    q = by_q(alm.alm_rows(totals(18000.0, 15000.0), model, 1.6, "F",
                          alm.CRITERIA["awgs2019"]))
    assert q["sarcopenia_low_muscle_mass"].value == "no"
    assert not any("outside the adult range" in f for f in q["alm"].flags)


def test_default_predictor_is_lean_mass() -> None:
    model = alm.load_alm_model()
    assert model.predictor == "lower_limb_total/lean_mass"
    assert not model.validated
    q = by_q(alm.alm_rows(totals(3000.0, 2400.0), model, 1.6, "F", alm.CRITERIA["awgs2019"]))
    assert q["alm"].value == pytest.approx(model.slope * 2.4)  # the lean 2.4 kg, not 3.0


def _grid(shape=(40, 40, 120), spacing=(4.0, 4.0, 4.0), flip_z=False) -> Geometry:
    d = np.diag([1.0, 1.0, -1.0 if flip_z else 1.0])
    return Geometry(shape, spacing, (0.0, 0.0, 0.0), d)


def _labels(g: Geometry, boxes: dict[str, tuple[slice, slice, slice]]) -> LabelMap:
    arr = np.zeros(g.shape, dtype=np.int16)
    structures = {}
    for key, box in boxes.items():
        v = BY_KEY[key].label_value
        arr[box] = v
        structures[v] = key
    return LabelMap(arr, g, structures)


def _two_muscles_in_fat():
    """A gluteus maximus and a vastus lateralis of 64 cm3 (plausible sizes) at 40 HU in
    fat (-100 HU), 4 mm voxels: (geometry, boxes, labels, hu)."""
    g = _grid((30, 30, 40), (4.0, 4.0, 4.0))
    boxes = {"gluteus_maximus_left": (slice(2, 12), slice(2, 12), slice(20, 30)),
             "vastus_lateralis_left": (slice(15, 25), slice(2, 12), slice(5, 15))}
    lab = _labels(g, boxes)
    hu = np.full(g.shape, -100.0, dtype=np.float32)
    for box in boxes.values():
        hu[box] = 40.0
    return g, boxes, lab, hu


def test_fat_voxels_do_not_count_in_the_default_predictor() -> None:
    """End to end: half of each muscle is fat (-100 HU); ALM follows the lean half."""
    g, boxes, lab, hu = _two_muscles_in_fat()
    for box in boxes.values():
        sub = hu[box]
        sub[: sub.shape[0] // 2] = -100.0  # IMAT: outside the lean window
    ct = CTImage(hu, g, CTMetadata(modality="CT"))
    res = measure_case(ct, lab, MeasureOptions(height_m=1.6, sex="F", bones=False))
    lean_g = res.value("lower_limb_total", "lean_mass")
    mass_g = res.value("lower_limb_total", "mass")
    assert lean_g == pytest.approx(mass_g / 2)
    assert res.value("patient", "alm") == pytest.approx(1.333 * lean_g / 1000.0)
    assert res.get("patient", "sarcopenia_low_muscle_mass").value == alm.INDETERMINATE


@pytest.mark.parametrize("flip_z", [False, True])
def test_femur_reaching_mid_thigh_blames_the_segmentation(flip_z) -> None:
    g = _grid(flip_z=flip_z)
    # femur: 300 mm long (75 slices of 4 mm), ends inside the image
    z = slice(20, 95) if not flip_z else slice(25, 100)
    lab = _labels(g, {"femur_left": (slice(5, 10), slice(5, 10), z),
                      "gluteus_maximus_left": (slice(12, 20), slice(5, 15), slice(90, 110))})
    reason = region_absence_reasons(lab, ["thigh"])["thigh"]
    assert reason.startswith("the segmentation lacks thigh muscles")


@pytest.mark.parametrize("flip_z", [False, True])
def test_femur_cut_above_mid_thigh_blames_the_field_of_view(flip_z) -> None:
    g = _grid(flip_z=flip_z)
    # 100 mm of femur, cut at the inferior face (index 0, or the last index when flipped)
    z = slice(0, 25) if not flip_z else slice(95, 120)
    lab = _labels(g, {"femur_left": (slice(5, 10), slice(5, 10), z)})
    reason = region_absence_reasons(lab, ["thigh"])["thigh"]
    assert reason.startswith("the CT does not reach mid-thigh")
    assert "femur" in reason


def test_lumbar_crop_does_not_reach_pelvis_or_thigh() -> None:
    g = _grid()
    lab = _labels(g, {"vertebrae_L2": (slice(15, 25), slice(15, 25), slice(0, 8)),
                      "vertebrae_L1": (slice(15, 25), slice(15, 25), slice(10, 18)),
                      "iliopsoas_left": (slice(5, 12), slice(15, 25), slice(0, 20))})
    reasons = region_absence_reasons(lab, ["gluteal", "thigh"])
    assert reasons["gluteal"].startswith("the CT does not reach the pelvis")
    assert "L2 vertebra" in reasons["gluteal"]
    assert reasons["thigh"].startswith("the CT does not reach mid-thigh")


def test_pelvis_shown_but_no_gluteal_labels_blames_the_segmentation() -> None:
    g = _grid()
    lab = _labels(g, {"hip_left": (slice(5, 15), slice(5, 15), slice(40, 60)),
                      "iliacus_left": (slice(16, 20), slice(5, 15), slice(45, 60))})
    assert region_absence_reasons(lab, ["gluteal"])["gluteal"].startswith(
        "the segmentation lacks gluteal muscles")


def test_reasons_reach_the_alm_rows() -> None:
    g = _grid()
    lab = _labels(g, {"femur_left": (slice(5, 10), slice(5, 10), slice(0, 25)),
                      "gluteus_maximus_left": (slice(12, 20), slice(5, 15), slice(20, 40))})
    hu = np.where(lab.array > 0, 40.0, -100.0).astype(np.float32)
    hu[lab.array == BY_KEY["femur_left"].label_value] = 700.0
    res = measure_case(CTImage(hu, g, CTMetadata(modality="CT")), lab,
                       MeasureOptions(height_m=1.6, sex="F", bones=False))
    flags = res.get("patient", "alm").flags
    assert any(f.startswith("not_measurable") and "the CT does not reach mid-thigh" in f
               for f in flags)
    assert not any("which this CT does not show" in f for f in flags)


# -- no row dropped --------------------------------------------------------------------
SARC = "sarcopenia_low_muscle_mass"


def test_missing_required_region_keeps_every_row() -> None:
    """A validated model whose required thigh region is missing: ALM, SMI and the
    sarcopenia row are all written, empty, with the reason (the sarcopenia row used to be
    dropped)."""
    model = alm.ALMModel("site", "lower_limb_total/lean_mass", 2.0, 2.2, validated=True,
                         required_regions=("gluteal", "thigh"))
    t = totals(6000.0, 5000.0)
    del t["thigh_total"]
    q = by_q(alm.alm_rows(t, model, 1.6, "F", alm.CRITERIA["awgs2019"],
                          {"thigh": "the CT does not reach mid-thigh (...)"}))
    assert set(q) == {"alm", "smi", SARC}
    for row in q.values():
        assert row.value is None
        assert row.flags[0].startswith("not_measurable: the ALM model site needs thigh "
                                       "muscles: the CT does not reach mid-thigh")
    assert q[SARC].method == alm.CRITERIA["awgs2019"].name


def test_unlabelled_predictor_group_keeps_every_row() -> None:
    model = alm.ALMModel("site", "thigh_total/lean_mass", 2.0, 2.2, validated=True)
    q = by_q(alm.alm_rows({"gluteal_total": totals(6000.0, 5000.0)["gluteal_total"]}, model,
                          1.6, "F", alm.CRITERIA["awgs2019"]))
    assert set(q) == {"alm", "smi", SARC}
    assert q[SARC].value is None and "no muscle of that group" in q[SARC].flags[0]


def test_sex_term_with_unknown_sex_keeps_every_row() -> None:
    """A model with a sex term cannot give ALM without the sex; SMI and the sarcopenia
    row used to be dropped."""
    model = alm.ALMModel("site-sex", "lower_limb_total/lean_mass", 2.0, 2.2, 3.0,
                         validated=True)
    q = by_q(alm.alm_rows(totals(6000.0, 5000.0), model, 1.6, None, alm.CRITERIA["awgs2019"]))
    assert set(q) == {"alm", "smi", SARC}
    for row in q.values():
        assert row.value is None
        assert row.flags[0].startswith("not_measurable: The ALM model 'site-sex' has a sex "
                                       "term; give the patient's sex")


# -- density model of the predictor ----------------------------------------------------
def test_predictor_from_another_density_model_gives_indeterminate() -> None:
    """A validated model fitted on 'constant' masses and a case measured with
    --density-model hu_linear: ALM and SMI flagged, no yes/no."""
    model = alm.ALMModel("site", "lower_limb_total/lean_mass", 0.0, 1.0, validated=True)
    assert model.density_model == "constant"  # the documented default
    t = totals(15000.0, 12800.0)
    t["lower_limb_total"]["density_model"] = "hu_linear"
    q = by_q(alm.alm_rows(t, model, 1.6, "F", alm.CRITERIA["awgs2019"]))
    assert q["smi"].value == pytest.approx(5.0)
    assert any("density model 'hu_linear'" in f for f in q["smi"].flags)
    row = q[SARC]
    assert row.value == alm.INDETERMINATE
    (why,) = [f for f in row.flags if "density model" in f]
    assert "--density-model constant" in why and "no yes/no" in why
    # a model fitted on hu_linear masses matches the case: a real yes/no (5.0 < 5.4)
    fitted_hu = alm.ALMModel("site", "lower_limb_total/lean_mass", 0.0, 1.0, validated=True,
                             density_model="hu_linear")
    q = by_q(alm.alm_rows(t, fitted_hu, 1.6, "F", alm.CRITERIA["awgs2019"]))
    assert q[SARC].value == "yes"
    assert not any("density model" in f for r in q.values() for f in r.flags)


@pytest.mark.parametrize("density, expected", [("constant", "yes"),
                                               ("hu_linear", alm.INDETERMINATE)])
def test_measure_case_checks_the_density_model_of_the_alm_model(density, expected) -> None:
    """End to end: `--density-model hu_linear` with a validated ALM model fitted on the
    default (constant) masses gives no yes/no."""
    g, _, lab, hu = _two_muscles_in_fat()
    ct = CTImage(hu, g, CTMetadata(modality="CT"))
    # (intercept 10 kg: the two small phantom muscles then give an adult ALM, 10-11 kg)
    model = alm.ALMModel("site", "lower_limb_total/lean_mass", 10.0, 2.0, validated=True,
                         required_regions=("gluteal", "thigh"))
    res = measure_case(ct, lab, MeasureOptions(height_m=1.6, sex="F", bones=False,
                                               density_model=density, alm_model=model))
    assert res.get("patient", SARC).value == expected
