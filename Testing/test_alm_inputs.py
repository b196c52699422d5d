"""``fit-alm`` input sanity and the ALM-model plausibility check shared by ``fit-alm`` and
``measure --alm-model``: non-finite values, masses in grams, constant columns and
duplicate case ids are refused with one line naming the rows; a model with implausible
coefficients is refused when fitted and when loaded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import alm
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError

COLS = ["case_id", "sex", "height_m", "dxa_alm_kg", "ct_lower_limb_lean_mass_kg"]


def _rows(n: int = 20, seed: int = 3) -> list[list[str]]:
    """ALM = 1.5 + 1.9 x CT lean mass + 0.5 x male + noise, in kg (plausible adults)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        male = i % 2 == 0
        x = rng.normal(8.5 if male else 6.5, 1.0)
        y = 1.5 + 1.9 * x + (0.5 if male else 0.0) + rng.normal(0, 0.5)
        rows.append([f"a{i}", "M" if male else "F", f"{rng.normal(1.65, 0.07):.3f}",
                     f"{y:.3f}", f"{x:.3f}"])
    return rows


def _write(tmp_path: Path, rows: list[list[str]], name: str = "pairs.csv") -> Path:
    p = tmp_path / name
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLS)
        w.writerows(rows)
    return p


def _fit_cli(tmp_path: Path, pairs: Path, capsys) -> tuple[int, str]:
    out = tmp_path / "model.json"
    rc = main(["fit-alm", str(pairs), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    if rc != 0:
        assert not out.exists()  # nothing written for refused input
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    return rc, err


def test_good_pairs_fit_and_pass_the_load_check(tmp_path: Path, capsys) -> None:
    rc, _ = _fit_cli(tmp_path, _write(tmp_path, _rows()), capsys)
    assert rc == 0
    model = alm.load_alm_model(tmp_path / "model.json")
    assert model.slope == pytest.approx(1.9, abs=0.4)


@pytest.mark.parametrize("col, value", [
    ("ct_lower_limb_lean_mass_kg", "nan"), ("ct_lower_limb_lean_mass_kg", "inf"),
    ("dxa_alm_kg", "NaN"), ("height_m", "-inf")])
def test_non_finite_values_are_refused_naming_the_row(tmp_path: Path, capsys, col,
                                                     value) -> None:
    rows = _rows()
    rows[1][COLS.index(col)] = value  # file line 3, case a1
    rc, err = _fit_cli(tmp_path, _write(tmp_path, rows), capsys)
    assert rc == 2
    assert f"{col} is not a finite number" in err and "line 3 (case a1)" in err


def test_predictor_in_grams_is_refused_as_grams(tmp_path: Path, capsys) -> None:
    rows = _rows()
    for r in rows:
        r[4] = f"{float(r[4]) * 1000:.0f}"
    rc, err = _fit_cli(tmp_path, _write(tmp_path, rows), capsys)
    assert rc == 2
    assert "outside the plausible range" in err and "look like grams" in err


def test_dxa_alm_in_grams_is_refused(tmp_path: Path, capsys) -> None:
    rows = _rows()
    for r in rows:
        r[3] = f"{float(r[3]) * 1000:.0f}"
    rc, err = _fit_cli(tmp_path, _write(tmp_path, rows), capsys)
    assert rc == 2 and "dxa_alm_kg" in err and "look like grams" in err


@pytest.mark.parametrize("col", ["ct_lower_limb_lean_mass_kg", "dxa_alm_kg"])
def test_constant_column_is_refused(tmp_path: Path, capsys, col) -> None:
    rows = _rows()
    for r in rows:
        r[COLS.index(col)] = "8.0" if col != "dxa_alm_kg" else "16.0"
    rc, err = _fit_cli(tmp_path, _write(tmp_path, rows), capsys)
    assert rc == 2 and f"{col} is the same" in err


def test_duplicate_case_id_is_refused(tmp_path: Path, capsys) -> None:
    rows = _rows()
    rows[4][0] = "a0"
    rc, err = _fit_cli(tmp_path, _write(tmp_path, rows), capsys)
    assert rc == 2 and "case_id 'a0' appears twice (lines 2 and 6)" in err


def test_fit_api_checks_paired_data_built_in_code() -> None:
    rows = _rows()
    data = alm.PairedData([r[0] for r in rows], np.array([float(r[4]) for r in rows]),
                          np.array([float(r[3]) for r in rows]),
                          np.array([float(r[2]) for r in rows]), [r[1] for r in rows])
    data.dxa_alm_kg[2] = np.nan
    with pytest.raises(InputError, match="dxa_alm_kg is not a finite number.*case a2"):
        alm.fit_alm_model(data, alm.CRITERIA["awgs2019"])


def _model_file(tmp_path: Path, **coef) -> Path:
    d = json.loads(json.dumps(alm.load_alm_model().to_dict()))
    d.update(coef)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    return p


@pytest.mark.parametrize("coef, match", [
    ({"slope": 0.0019}, "slope 0.0019 is outside.*grams"),
    ({"slope": -1.0}, "slope -1 is outside"),
    ({"intercept_kg": 45.0}, "intercept 45 kg is outside"),
    ({"male_offset_kg": -40.0}, "male offset -40 kg is outside"),
    ({"predictor": "lower_limb_total/volume"}, "quantity mass or lean_mass"),
])
def test_loading_refuses_an_implausible_model(tmp_path: Path, coef, match) -> None:
    with pytest.raises(InputError, match=match):
        alm.load_alm_model(_model_file(tmp_path, **coef))


def test_measure_refuses_a_grams_model_with_one_line(tmp_path: Path, capsys) -> None:
    """The tester's case: a model fitted on grams was accepted by measure --alm-model."""
    from CTMuscleBoneLib.analysis import MeasureOptions

    p = _model_file(tmp_path, slope=0.0019, intercept_kg=0.9)
    with pytest.raises(InputError, match="slope"):
        MeasureOptions(alm_model=p)


def test_fit_time_check_is_the_load_check(tmp_path: Path) -> None:
    rep = alm.FitReport(intercept_kg=0.5, slope=0.0019, male_offset_kg=0.0, n=20, folds=5,
                        cv_pearson_r=0.9, cv_rmse_kg=1.0, cv_smi_auc=None, in_sample_r=0.9,
                        criteria="AWGS 2019", n_sarcopenic=0)
    src = _write(tmp_path, _rows())
    with pytest.raises(InputError, match="slope 0.0019 is outside"):
        alm.model_from_fit(rep, "m", "lower_limb_total/lean_mass", src, ("gluteal",))
    good = alm.model_from_fit(alm.FitReport(**{**rep.__dict__, "slope": 1.9}), "m",
                              "lower_limb_total/lean_mass", src, ("gluteal",))
    alm.check_model_plausible(good, "x")  # what load applies
    with pytest.raises(InputError, match="unknown required region"):
        alm.model_from_fit(alm.FitReport(**{**rep.__dict__, "slope": 1.9}), "m",
                           "lower_limb_total/lean_mass", src, ("thight",))


# -- "validated" must be a JSON boolean ------------------------------------------------
@pytest.mark.parametrize("value", ["false", "true", "no", 0, 1, None])
def test_validated_must_be_a_json_boolean(tmp_path: Path, value) -> None:
    """"validated": "false" used to load as validated (bool of a non-empty string), and
    sarcopenia yes/no was printed from the unvalidated default."""
    p = _model_file(tmp_path, validated=value)
    with pytest.raises(InputError) as exc:
        alm.load_alm_model(p)
    msg = str(exc.value)
    assert str(p) in msg and '"validated"' in msg and "not a JSON boolean" in msg
    assert "without quotes" in msg  # the fix


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("absent", False)])
def test_validated_json_booleans_load(tmp_path: Path, value, expected) -> None:
    p = _model_file(tmp_path, validated=value)
    if value == "absent":
        d = json.loads(p.read_text())
        del d["validated"]
        p.write_text(json.dumps(d))
    assert alm.load_alm_model(p).validated is expected


# -- the density model an ALM model was fitted with ------------------------------------
def test_density_model_field_is_optional_checked_and_written(tmp_path: Path) -> None:
    assert alm.load_alm_model().density_model == "constant"
    p = _model_file(tmp_path)
    d = json.loads(p.read_text())
    d.pop("density_model", None)
    p.write_text(json.dumps(d))
    assert alm.load_alm_model(p).density_model == "constant"  # documented default
    assert alm.load_alm_model(_model_file(tmp_path, density_model="hu_linear")
                              ).density_model == "hu_linear"
    with pytest.raises(InputError, match='"density_model" is .hu_lin.; use one of '
                                         "constant, hu_linear"):
        alm.load_alm_model(_model_file(tmp_path, density_model="hu_lin"))


def test_fit_alm_records_the_density_model(tmp_path: Path, capsys) -> None:
    pairs = _write(tmp_path, _rows())
    out = tmp_path / "m.json"
    assert main(["fit-alm", str(pairs), "--out", str(out), "--density-model",
                 "hu_linear"]) == 0
    assert json.loads(out.read_text())["density_model"] == "hu_linear"
    assert alm.load_alm_model(out).density_model == "hu_linear"
    out2 = tmp_path / "m2.json"
    assert main(["fit-alm", str(pairs), "--out", str(out2)]) == 0
    assert alm.load_alm_model(out2).density_model == "constant"


@pytest.mark.parametrize("value", [0.5, 50.0, 2.61, 261.0, 0.0, -1.62])
def test_height_parsing_and_the_options_share_one_range(value):
    """The CLI's metres-or-centimetres reading and MeasureOptions refuse the same
    heights (0.5 m was accepted by one and refused by the other)."""
    from CTMuscleBoneLib.alm import parse_height_m
    from CTMuscleBoneLib.analysis import MeasureOptions

    with pytest.raises(InputError):
        parse_height_m(value)
    with pytest.raises(InputError):
        MeasureOptions(height_m=value)


def test_height_range_edges_in_metres_and_centimetres():
    from CTMuscleBoneLib.alm import parse_height_m

    assert parse_height_m(2.6) == (2.6, None)
    assert parse_height_m(260.0)[0] == pytest.approx(2.6)
    assert parse_height_m(50.5)[0] == pytest.approx(0.505)
