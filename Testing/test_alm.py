"""ALM estimation, SMI arithmetic, sarcopenia cut-offs and `fit-alm`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import alm
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError


def totals(mass_g: float, partial: bool = False, regions=("gluteal", "thigh")) -> dict:
    entry = {"volume_cm3": mass_g / 1.06, "mass_g": mass_g, "lean_mass_g": mass_g * 0.9,
             "partial": partial, "members": ["x"]}
    return {"lower_limb_total": entry, **{f"{r}_total": dict(entry) for r in regions}}


def rows_by_quantity(rows):
    return {r.quantity: r for r in rows}


def test_default_model_is_flagged_unvalidated_everywhere() -> None:
    model = alm.load_alm_model()
    assert not model.validated
    rows = alm.alm_rows(totals(6000.0), model, 1.60, "F", alm.CRITERIA["awgs2019"])
    assert rows
    for r in rows:
        assert any(f.startswith("unvalidated") for f in r.flags), r


def test_default_model_refuses_a_ct_without_gluteal_and_thigh_muscles() -> None:
    model = alm.load_alm_model()
    q = rows_by_quantity(alm.alm_rows(totals(20.0, regions=("hip_flexor",)), model, 1.7, "M",
                                      alm.CRITERIA["awgs2019"]))
    assert q["alm"].value is None and q["smi"].value is None
    assert any("gluteal, thigh muscles" in f for f in q["alm"].flags)


def test_smi_arithmetic_and_awgs_flag() -> None:
    model = alm.ALMModel("t", "lower_limb_total/mass", intercept_kg=1.0, slope=2.0,
                         validated=True)
    q = rows_by_quantity(alm.alm_rows(totals(5000.0), model, 1.60, "F",
                                      alm.CRITERIA["awgs2019"]))
    assert q["alm"].value == pytest.approx(11.0)
    assert q["smi"].value == pytest.approx(11.0 / 1.6**2)
    # 11 / 1.6^2 = 4.297 kg/m2 < 5.4 (AWGS 2019, women): low muscle mass
    assert q["sarcopenia_low_muscle_mass"].value == "yes"


def test_sarcopenia_flag_values_and_criteria_differ_at_the_margin() -> None:
    model = alm.ALMModel("t", "lower_limb_total/mass", 0.0, 1.0, validated=True)
    h = 1.6  # adult ALM values (13.95 and 17.66 kg), inside the plausible range
    # SMI 5.45 kg/m2 woman: not low by AWGS (< 5.4), low by EWGSOP2 (< 5.5)
    mass = 5450.0 * h * h
    awgs = rows_by_quantity(alm.alm_rows(totals(mass), model, h, "F", alm.CRITERIA["awgs2019"]))
    ew = rows_by_quantity(alm.alm_rows(totals(mass), model, h, "F", alm.CRITERIA["ewgsop2"]))
    assert awgs["smi"].value == pytest.approx(5.45)
    assert awgs["sarcopenia_low_muscle_mass"].value == "no"
    assert ew["sarcopenia_low_muscle_mass"].value == "yes"
    men = rows_by_quantity(alm.alm_rows(totals(6900.0 * h * h), model, h, "M",
                                        alm.CRITERIA["awgs2019"]))
    assert men["sarcopenia_low_muscle_mass"].value == "yes"


def test_no_height_omits_smi_with_reason_and_keeps_alm() -> None:
    model = alm.ALMModel("t", "lower_limb_total/mass", 0.0, 1.0, validated=True)
    q = rows_by_quantity(alm.alm_rows(totals(5000.0), model, None, "F", alm.CRITERIA["awgs2019"]))
    assert q["alm"].value == pytest.approx(5.0)
    assert q["smi"].value is None
    assert any("no height" in f for f in q["smi"].flags)


def test_unknown_sex_gives_smi_but_no_flag() -> None:
    model = alm.ALMModel("t", "lower_limb_total/mass", 0.0, 1.0, validated=True)
    q = rows_by_quantity(alm.alm_rows(totals(5000.0), model, 1.5, None, alm.CRITERIA["awgs2019"]))
    assert q["smi"].value == pytest.approx(5.0 / 2.25)
    assert q["sarcopenia_low_muscle_mass"].value is None
    assert any("sex unknown" in f for f in q["sarcopenia_low_muscle_mass"].flags)


def test_partial_predictor_is_flagged() -> None:
    model = alm.ALMModel("t", "lower_limb_total/mass", 0.0, 1.0, validated=True)
    q = rows_by_quantity(alm.alm_rows(totals(5000.0, partial=True), model, 1.5, "M",
                                      alm.CRITERIA["awgs2019"]))
    assert any(f.startswith("partial") for f in q["alm"].flags)


def test_missing_predictor_group_is_not_measurable() -> None:
    model = alm.ALMModel("t", "trunk_total/mass", 0.0, 1.0, validated=True)
    q = rows_by_quantity(alm.alm_rows(totals(5000.0), model, 1.5, "M", alm.CRITERIA["awgs2019"]))
    assert q["alm"].value is None and q["smi"].value is None


@pytest.mark.parametrize("value,expected", [(1.62, 1.62), (162, 1.62), (175.5, 1.755)])
def test_height_units(value, expected) -> None:
    assert alm.parse_height_m(value)[0] == pytest.approx(expected)


@pytest.mark.parametrize("value", [0.2, 5.0, 400.0])
def test_absurd_height_refused(value) -> None:
    with pytest.raises(InputError, match="implausible"):
        alm.parse_height_m(value)


def synthetic_pairs(path: Path, n: int = 60, seed: int = 1) -> None:
    """Pairs with ALM = 2.0 + 1.8 x CT mass + 2.5 x male + noise (SD 0.6 kg)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "sex", "height_cm", "ct_lower_limb_lean_mass_kg", "dxa_alm_kg"])
        for i in range(n):
            male = i % 2 == 0
            h = rng.normal(172 if male else 158, 6)
            x = rng.normal(7.0 if male else 5.0, 1.0)
            y = 2.0 + 1.8 * x + (2.5 if male else 0.0) + rng.normal(0, 0.6)
            w.writerow([f"c{i}", "M" if male else "F", f"{h:.1f}", f"{x:.3f}", f"{y:.3f}"])


def test_fit_recovers_coefficients_and_reports_cv(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    synthetic_pairs(pairs)
    data = alm.read_pairs_csv(pairs, "ct_lower_limb_lean_mass_kg")
    rep = alm.fit_alm_model(data, alm.CRITERIA["awgs2019"], folds=5)
    assert rep.slope == pytest.approx(1.8, abs=0.2)
    assert rep.male_offset_kg == pytest.approx(2.5, abs=0.5)
    assert rep.cv_pearson_r > 0.9
    assert rep.cv_rmse_kg < 1.0
    # reference computation of the in-sample r
    male = np.array([s == "M" for s in data.sex], float)
    design = np.stack([np.ones_like(male), data.predictor_kg, male], 1)
    coef = np.linalg.lstsq(design, data.dxa_alm_kg, rcond=None)[0]
    assert rep.in_sample_r == pytest.approx(np.corrcoef(design @ coef, data.dxa_alm_kg)[0, 1])


def test_fit_alm_cli_writes_a_model_that_measure_accepts(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "pairs.csv"
    synthetic_pairs(pairs)
    before = pairs.read_bytes()
    out = tmp_path / "model.json"
    assert main(["fit-alm", str(pairs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cross-validated Pearson r" in text and "ROC AUC" in text
    model = alm.load_alm_model(out)
    assert model.validated
    assert model.provenance["data_sha256"]
    assert json.loads(out.read_text())["schema"] == alm.SCHEMA
    assert pairs.read_bytes() == before


def test_fit_alm_cli_bad_csv_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sex,height_m\nM,1.7\n")
    assert main(["fit-alm", str(bad), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing column" in err[0]
    assert not (tmp_path / "m.json").exists()


def test_bad_model_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{"schema": "something-else"}')
    with pytest.raises(InputError, match="not a CTMuscleBone ALM model"):
        alm.load_alm_model(p)
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        alm.load_alm_model(p)
