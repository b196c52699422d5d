"""DXA scale: reference material, CT-to-DXA conversion model, references and scores.

Analytic checks: the K2HPO4 -> HA ratio (Goodsitt 1992 points, linear in kVp between
them), the fit of a line on synthetic pairs with known slope and intercept, criteria at
their thresholds, the ISCD T-/Z-score selection, and with an unvalidated model (the
identity default) no T-/Z-score or %YAM and the 'indeterminate' category.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.analysis import MeasureOptions
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.cli.main import build_parser, main
from CTMuscleBoneLib.dxa import (
    DXAConversionModel,
    ScoreContext,
    SiteLine,
    conversion_for,
    load_dxa_model,
    load_reference,
    score_rows,
    to_hydroxyapatite,
)
from CTMuscleBoneLib.dxa.conversion import fit_site
from CTMuscleBoneLib.errors import InputError

VALIDATED = DXAConversionModel("test-validated", {"total_hip": SiteLine(1.0, 0.0),
                                                  "femoral_neck": SiteLine(1.0, 0.0)},
                               validated=True)


# -- material -----------------------------------------------------------------------------
@pytest.mark.parametrize(("kvp", "ratio"), [
    (80.0, 0.86), (140.0, 0.81), (110.0, 0.835), (120.0, 0.86 - 0.05 * 40 / 60),
    (70.0, 0.86), (150.0, 0.81),  # the end values outside the published points
])
def test_k2hpo4_to_ha_ratio_by_kvp(kvp, ratio):
    conv = conversion_for("K2HPO4", kvp)
    assert conv.ratio == pytest.approx(ratio)
    assert conv.kvp_known and conv.converted
    assert conv.flags() and conv.flags()[0].startswith("info:")


def test_unknown_kvp_assumes_120_and_warns():
    conv = conversion_for("K2HPO4", None)
    assert conv.kvp == 120.0 and not conv.kvp_known
    assert conv.ratio == pytest.approx(0.8266667, abs=1e-6)
    (flag,) = conv.flags()
    assert flag.startswith("warning: kVp unknown") and "120" in flag


def test_ha_calibration_is_not_converted_and_unknown_material_refused():
    conv = conversion_for("HA", 140.0)
    assert not conv.converted and conv.ratio == 1.0 and conv.flags() == []
    with pytest.raises(InputError, match="material"):
        conversion_for("CaCO3", 120.0)


def test_calibration_put_on_the_ha_scale():
    k2 = Calibration("phantom", "K2HPO4", 0.8, -5.0, 0.999, 5, "test")
    ha, conv = to_hydroxyapatite(k2, 80.0)
    assert ha.material == "HA" and conv.ratio == pytest.approx(0.86)
    hu = np.array([-50.0, 0.0, 250.0, 1200.0])
    np.testing.assert_allclose(ha.bmd_mg_cm3(hu), k2.bmd_mg_cm3(hu) / 0.86)
    same, c2 = to_hydroxyapatite(Calibration("phantom", "HA", 0.8, -5.0), None)
    assert same.slope_mg_cm3_per_hu == 0.8 and not c2.converted
    none, c3 = to_hydroxyapatite(Calibration.none(), 120.0)
    assert not none.calibrated and c3 is None


# -- conversion model ---------------------------------------------------------------------
def test_fit_recovers_a_known_line():
    rng = np.random.default_rng(4)
    ct = rng.uniform(0.5, 1.1, 80)
    dxa = 0.05 + 1.10 * ct + rng.normal(0.0, 0.02, ct.size)
    f = fit_site(ct, dxa, "total_hip", folds=5, seed=1)
    assert f.slope == pytest.approx(1.10, abs=0.04)
    assert f.intercept_g_cm2 == pytest.approx(0.05, abs=0.03)
    assert f.n == 80 and f.folds == 5
    assert f.cv_pearson_r > 0.95
    assert 0.015 < f.see_g_cm2 < 0.025 and 0.015 < f.cv_see_g_cm2 < 0.026
    assert abs(f.cv_bias_g_cm2) < 0.01
    assert f.cv_loa_upper_g_cm2 - f.cv_loa_lower_g_cm2 == pytest.approx(4 * 1.96 * 0.02 / 2,
                                                                        rel=0.25)
    assert f.raw_bias_g_cm2 == pytest.approx(float(np.mean(ct - dxa)))


def test_fit_refuses_too_few_or_constant_pairs():
    with pytest.raises(InputError, match="at least"):
        fit_site(np.array([0.6, 0.7, 0.8, np.nan]), np.array([0.6, 0.7, 0.8, 0.9]), "lumbar")
    with pytest.raises(InputError, match="constant"):
        fit_site(np.full(8, 0.7), np.linspace(0.5, 0.9, 8), "lumbar")


@pytest.mark.parametrize("mistake", ["ct_in_mg", "typo", "unrelated"])
def test_fit_dxa_refuses_a_line_no_model_could_use(tmp_path, capsys, mistake):
    """A unit mistake, one mistyped value or unrelated columns: fit-dxa refuses (an aBMD
    outside the plausible g/cm2 range when read; otherwise at fit time: the loader's rule,
    and cross-validated r >= 0.5) and writes nothing."""
    rng = np.random.default_rng(11)
    ct = rng.uniform(0.5, 1.0, 30)
    dxa = 0.02 + 1.0 * ct + rng.normal(0, 0.02, ct.size)
    if mistake == "ct_in_mg":
        ct = ct * 1000.0  # mg/cm2: slope 0.001
    elif mistake == "typo":
        ct[3] = -5.0  # one mistyped value
    else:
        dxa = rng.uniform(0.5, 1.0, ct.size)  # no relation to the CT
    _write_pairs(tmp_path / "pairs.csv", [(f"c{i}", "total_hip", f"{x:.5f}", f"{y:.5f}")
                                          for i, (x, y) in enumerate(zip(ct, dxa,
                                                                         strict=True))])
    out = tmp_path / "model.json"
    assert main(["fit-dxa", str(tmp_path / "pairs.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    if mistake == "unrelated":
        assert "not usable" in err and "no model was written" in err
    else:  # refused when read, as validate-bmd refuses the same file
        assert "not a plausible aBMD in g/cm2" in err and "Check the units" in err
    assert not out.exists() and not out.with_suffix(".report.json").exists()


def _write_pairs(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "site", "ct_abmd_g_cm2", "dxa_abmd_g_cm2"])
        w.writerows(rows)


def test_fit_dxa_command_writes_a_validated_model(tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = []
    for site, (a, b) in {"total_hip": (0.10, 0.95), "femoral_neck": (-0.02, 1.05)}.items():
        ct = rng.uniform(0.45, 1.0, 40)
        dxa = a + b * ct + rng.normal(0, 0.015, ct.size)
        rows += [(f"c{i}", site, f"{x:.5f}", f"{y:.5f}")
                 for i, (x, y) in enumerate(zip(ct, dxa, strict=True))]
    pairs = tmp_path / "pairs.csv"
    _write_pairs(pairs, rows)
    out = tmp_path / "model.json"
    assert main(["fit-dxa", str(pairs), "--out", str(out), "--name", "site-x"]) == 0
    printed = capsys.readouterr().out
    assert "cross-validated Pearson r" in printed and "Bland-Altman" in printed
    model = load_dxa_model(out)
    assert model.validated and model.name == "site-x"
    assert set(model.sites) == {"total_hip", "femoral_neck"}
    assert model.sites["total_hip"].slope == pytest.approx(0.95, abs=0.05)
    assert model.sites["femoral_neck"].intercept_g_cm2 == pytest.approx(-0.02, abs=0.04)
    assert model.predict("total_hip", 0.8) == pytest.approx(0.10 + 0.95 * 0.8, abs=0.02)
    assert model.provenance["data_sha256"]
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert {f["site"] for f in report["fits"]} == {"total_hip", "femoral_neck"}
    # the model feeds measure: MeasureOptions reads and checks it
    assert MeasureOptions(dxa_model=out).dxa_model.validated


def test_shipped_default_is_identity_and_unvalidated():
    m = load_dxa_model(None)
    assert not m.validated
    for site in ("total_hip", "femoral_neck", "lumbar"):
        assert m.predict(site, 0.734) == 0.734
    assert "fit-dxa" in m.unvalidated_reason()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d.update(schema="x"), "schema"),
    (lambda d: d["sites"].update(wrist={"slope": 1, "intercept_g_cm2": 0}), "unknown site"),
    (lambda d: d.update(validated="yes"), "validated"),
    (lambda d: d["sites"]["total_hip"].update(slope=50.0), "implausible"),
    (lambda d: d["sites"]["total_hip"].pop("slope"), "slope"),
])
def test_bad_model_files_are_refused(tmp_path, edit, match):
    d = load_dxa_model(None).to_dict()
    edit(d)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=match):
        load_dxa_model(p)
    with pytest.raises(InputError, match="not found"):
        MeasureOptions(dxa_model=tmp_path / "missing.json")


# -- references and criteria ----------------------------------------------------------------
def test_bundled_references_carry_sources():
    nh, js = load_reference("nhanes3"), load_reference("jsbmr2012")
    assert (nh.sites["femoral_neck"].mean_g_cm2, nh.sites["femoral_neck"].sd_g_cm2) == (
        0.858, 0.120)
    assert (nh.sites["total_hip"].mean_g_cm2, nh.sites["total_hip"].sd_g_cm2) == (0.942, 0.122)
    assert (js.sites["total_hip"].mean_g_cm2, js.sites["total_hip"].sd_g_cm2) == (0.886, 0.107)
    assert "Looker" in nh.source and "Soen" in js.source
    assert not nh.verified and not js.verified  # flagged: not checked against the primary
    assert nh.criteria.quantity == "who_category" and js.criteria.quantity == "jsbmr_category"


@pytest.mark.parametrize(("t", "expected"), [
    (0.0, "normal"), (-1.0, "normal"), (-1.0001, "low bone mass (osteopenia)"),
    (-2.4999, "low bone mass (osteopenia)"), (-2.5, "osteoporosis"), (-3.0, "osteoporosis"),
])
def test_who_categories_at_the_thresholds(t, expected):
    assert load_reference("nhanes3").criteria.category(t) == expected


@pytest.mark.parametrize(("yam", "expected"), [
    (95.0, "normal"), (80.0, "normal"), (79.99, "low bone mass"), (70.01, "low bone mass"),
    (70.0, "osteoporosis"), (60.0, "osteoporosis"),
])
def test_jsbmr_percent_yam_categories_at_70_and_80(yam, expected):
    assert load_reference("jsbmr2012").criteria.category(yam) == expected


def _table(tmp_path, edit):
    d = json.loads(_bundled_text("nhanes3"))
    edit(d)
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(d))
    return p


def _bundled_text(name):
    from importlib import resources

    return resources.files("CTMuscleBoneLib").joinpath(f"data/references/{name}.json"
                                                       ).read_text()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d.pop("criteria"), "criteria"),
    (lambda d: d["criteria"].update(on="z_score"), "criteria.on"),
    (lambda d: d["sites"].update(radius={"mean_g_cm2": 0.6, "sd_g_cm2": 0.05}), "unknown site"),
    (lambda d: d["sites"]["total_hip"].update(sd_g_cm2=0), "positive"),
    (lambda d: d.update(schema="other"), "schema"),
])
def test_bad_reference_files_are_refused(tmp_path, edit, match):
    with pytest.raises(InputError, match=match):
        load_reference(_table(tmp_path, edit))
    with pytest.raises(InputError, match="Unknown BMD reference"):
        MeasureOptions(bmd_reference="who")


# -- scores --------------------------------------------------------------------------------
def _rows(abmd, ctx, site="total_hip"):
    return {r.quantity.rsplit("_" + site, 1)[0]: r for r in score_rows("femur_left", site,
                                                                        abmd, ctx)}


OFF_SCALE = "the aBMD is not on the DXA scale: no validated CT-to-DXA model was given"


def _off_scale(row):
    """The row is not measurable because its aBMD is not on the DXA scale (with the fix)."""
    reason = [f for f in row.flags if f.startswith("not_measurable:")]
    return (row.value is None and len(reason) == 1 and OFF_SCALE in reason[0]
            and "ctmusclebone fit-dxa" in reason[0] and "--dxa-model" in reason[0])


@pytest.mark.parametrize(("reference", "age"), [("nhanes3", 70.0), ("jsbmr2012", 70.0),
                                                ("nhanes3", None)])
def test_identity_default_gives_no_score_and_indeterminate_category(reference, age):
    """Project rule: no T-score, Z-score or %YAM from a number not known to be on the DXA
    scale (the shipped identity model is not validated); the category is indeterminate
    with the reason; the DXA-equivalent aBMD (a number, not a score) stays, flagged."""
    ref = load_reference(reference)
    ctx = ScoreContext(load_dxa_model(None), ref, "F", age)
    rows = _rows(0.600, ctx)
    assert rows["abmd_dxa"].value == 0.600
    assert any(f.startswith("unvalidated: CT-aBMD not converted to the DXA scale")
               for f in rows["abmd_dxa"].flags)
    for q in ("t_score", "z_score", "percent_yam"):
        assert _off_scale(rows[q]), rows[q].flags
    cat = rows[ref.criteria.quantity]
    assert cat.value == "indeterminate"
    assert any("fit-dxa" in f and f.startswith("unvalidated:") for f in cat.flags)


def test_any_model_file_not_validated_gives_no_score(tmp_path):
    """Not only the identity: a fitted-looking line whose file says validated false."""
    d = load_dxa_model(None).to_dict()
    d.update(name="site-draft", validated=False)
    d["sites"]["total_hip"] = {"slope": 1.2, "intercept_g_cm2": -0.1}
    p = tmp_path / "draft.json"
    p.write_text(json.dumps(d))
    ctx = ScoreContext(load_dxa_model(p), load_reference("nhanes3"), "F", 70.0)
    rows = _rows(0.600, ctx)
    assert rows["abmd_dxa"].value == pytest.approx(0.62)
    assert all(_off_scale(rows[q]) for q in ("t_score", "z_score", "percent_yam"))
    assert "'site-draft' is not validated" in rows["t_score"].flags[0]
    assert rows["who_category"].value == "indeterminate"
    # under 50 the category does not apply at all (ISCD), whatever the model
    young = _rows(0.600, ScoreContext(load_dxa_model(p), load_reference("nhanes3"), "F", 40.0))
    assert young["who_category"].value is None
    assert "do not apply under 50" in young["who_category"].flags[0]
    assert _off_scale(young["z_score"]) and _off_scale(young["t_score"])


def test_validated_model_gives_the_category_on_the_dxa_value():
    model = DXAConversionModel("v", {"total_hip": SiteLine(1.2, -0.1)}, validated=True)
    ctx = ScoreContext(model, load_reference("nhanes3"), "F", 70.0)
    rows = _rows(0.600, ctx)  # DXA-equivalent 0.62: T = -2.64
    assert rows["abmd_dxa"].value == pytest.approx(0.62)
    assert rows["t_score"].value == pytest.approx((0.62 - 0.942) / 0.122)
    assert rows["who_category"].value == "osteoporosis"
    assert rows["percent_yam"].value == pytest.approx(100 * 0.62 / 0.942)
    assert not any("CT-aBMD not converted" in f for f in rows["who_category"].flags)
    # a site the model lacks: every row says so
    neck = _rows(0.6, ctx, "femoral_neck")
    assert all(r.value is None and "no femoral_neck line" in r.flags[0] for r in neck.values())


def test_jsbmr_reference_uses_percent_yam():
    ctx = ScoreContext(VALIDATED, load_reference("jsbmr2012"), "F", 72.0)
    rows = _rows(0.886 * 0.75, ctx)
    assert rows["percent_yam"].value == pytest.approx(75.0)
    assert rows["jsbmr_category"].value == "low bone mass"
    assert "JSBMR 2012" in rows["jsbmr_category"].method
    neck = _rows(0.6, ctx, "femoral_neck")  # no Japanese neck YAM could be sourced
    assert neck["percent_yam"].value is None
    assert "no femoral neck young-adult mean" in neck["percent_yam"].flags[0]
    men = _rows(0.7, ScoreContext(VALIDATED, load_reference("jsbmr2012"), "M", 72.0))
    assert men["jsbmr_category"].value is None and "women only" in men[
        "jsbmr_category"].flags[0]


def _with_age_bands(tmp_path):
    def edit(d):
        d["age_matched"] = {"F": {"total_hip": [
            {"age_min": 20, "age_max": 50, "mean_g_cm2": 0.95, "sd_g_cm2": 0.12}]},
            "M": {"total_hip": [{"age_min": 20, "age_max": 50, "mean_g_cm2": 1.05,
                                 "sd_g_cm2": 0.14}]}}
    return load_reference(_table(tmp_path, edit))


@pytest.mark.parametrize(("sex", "age", "mean", "sd"), [("F", 40.0, 0.95, 0.12),
                                                        ("M", 45.0, 1.05, 0.14)])
def test_z_score_under_50_and_no_category(tmp_path, sex, age, mean, sd):
    ctx = ScoreContext(VALIDATED, _with_age_bands(tmp_path), sex, age)
    rows = _rows(0.80, ctx)
    assert rows["z_score"].value == pytest.approx((0.80 - mean) / sd)
    assert rows["who_category"].value is None
    assert "do not apply under 50" in rows["who_category"].flags[0]
    assert "premenopausal" in rows["who_category"].flags[0]
    assert any("see the Z-score" in f for f in rows["t_score"].flags)


def test_over_50_t_score_category_and_z_score_when_banded(tmp_path):
    ctx = ScoreContext(VALIDATED, _with_age_bands(tmp_path), "F", 65.0)
    rows = _rows(0.80, ctx)
    assert rows["who_category"].value == "low bone mass (osteopenia)"
    assert rows["z_score"].value is None  # no band for 65 in this table
    assert "age- and sex-matched" in rows["z_score"].flags[0]
    assert not any(f.startswith("warning") for f in rows["t_score"].flags)


@pytest.mark.parametrize(("sex", "age"), [(None, 70.0), ("F", None), (None, None)])
def test_age_or_sex_unknown_says_which_applies_is_unknown(tmp_path, sex, age):
    ctx = ScoreContext(VALIDATED, _with_age_bands(tmp_path), sex, age)
    rows = _rows(0.80, ctx)
    assert rows["z_score"].value is None and "age or sex unknown" in rows["z_score"].flags[0]
    # the T-score is a number on its scale; the WHO category is withheld, since its
    # thresholds are for women and men aged 50 or more (ISCD), not known to hold here
    assert rows["t_score"].value == pytest.approx(-1.3, abs=0.3)
    assert any(f.startswith("warning: age or sex unknown") for f in rows["t_score"].flags)
    assert rows["who_category"].value == "indeterminate"
    assert any(f.startswith("warning: category withheld: age or sex unknown")
               and "--age and --sex" in f for f in rows["who_category"].flags)


@pytest.mark.parametrize("age", [72.0, None])
def test_women_only_reference_with_sex_unknown_gives_no_scores(age):
    rows = _rows(0.7, ScoreContext(VALIDATED, load_reference("jsbmr2012"), None, age))
    for q in ("t_score", "percent_yam", "z_score"):
        assert rows[q].value is None
        assert any("sex unknown" in f and "women only" in f for f in rows[q].flags), q
    assert rows["jsbmr_category"].value == "indeterminate"
    assert any("category withheld: sex unknown" in f and "give --sex" in f
               for f in rows["jsbmr_category"].flags)


def test_measure_options_and_cli_arguments():
    opts = MeasureOptions(bmd_reference="jsbmr2012")
    assert opts.bmd_reference.name == "jsbmr2012" and not opts.dxa_model.validated
    args = build_parser().parse_args(
        ["measure", "--ct", "ct.nii.gz", "--labels", "l.nii.gz", "--out", "o",
         "--reference", "jsbmr2012", "--references", "tissues.json", "--dxa-model", "m.json"])
    assert args.bmd_reference == "jsbmr2012" and args.references == "tissues.json"
    assert args.dxa_model == "m.json"
    args = build_parser().parse_args(["measure", "--ct", "c", "--labels", "l", "--out", "o"])
    assert args.bmd_reference == "nhanes3" and args.dxa_model is None


@pytest.mark.parametrize(("field", "value"), [("verified", "false"), ("applies_to_men", "no"),
                                              ("site_verified", "false"), ("verified", 1)])
def test_reference_booleans_must_be_json_booleans(tmp_path, field, value):
    """A quoted "false" reads as true through bool(): the loader refuses it."""
    import CTMuscleBoneLib

    bundled = Path(CTMuscleBoneLib.__file__).parent / "data" / "references" / "nhanes3.json"
    d = json.loads(bundled.read_text(encoding="utf-8"))
    if field == "site_verified":
        d["sites"]["total_hip"]["verified"] = value
    else:
        d[field] = value
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(InputError, match="must be true or false without quotes"):
        load_reference(str(p))
