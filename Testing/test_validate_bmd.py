"""validate-bmd: statistics against straightforward reference computations, CLI behaviour."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from CTMuscleBoneLib.cli.main import main
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.stats import bootstrap_ci, pearson_r
from CTMuscleBoneLib.validate_bmd import validate_bmd


def _write(path, rows, header=("case_id", "ct_abmd_g_cm2", "dxa_abmd_g_cm2", "dxa_t_score")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _synthetic(n=60, seed=3, noise=0.03):
    rng = np.random.default_rng(seed)
    dxa = rng.uniform(0.55, 1.10, n)
    ct = 0.95 * dxa + 0.02 + rng.normal(0, noise, n)
    t = (dxa - 0.942) / 0.122  # NHANES III total hip young-adult mean/SD (domain.md)
    return ct, dxa, t


def _reference_auc(score_low_positive, positive):
    """Pairwise count: P(CT of a positive < CT of a negative), ties 1/2."""
    pos, neg = score_low_positive[positive], score_low_positive[~positive]
    wins = sum((p < q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_statistics_match_reference(tmp_path):
    ct, dxa, t = _synthetic()
    rows = [(f"c{i}", f"{a:.6f}", f"{b:.6f}", f"{c:.4f}")
            for i, (a, b, c) in enumerate(zip(ct, dxa, t, strict=True))]
    res = validate_bmd(_write(tmp_path / "p.csv", rows), site="total_hip", n_boot=300)
    ct = np.array([float(r[1]) for r in rows])
    dxa = np.array([float(r[2]) for r in rows])
    t = np.array([float(r[3]) for r in rows])
    assert res.get("pearson_r").value == pytest.approx(np.corrcoef(ct, dxa)[0, 1], rel=1e-12)
    d = ct - dxa
    assert res.get("bland_altman_bias").value == pytest.approx(d.mean(), rel=1e-12)
    assert res.get("loa_upper").value == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert res.get("loa_lower").value == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    pos = t <= -2.5
    assert 0 < pos.sum() < len(t)
    auc = res.get("auc_osteoporosis")
    assert auc.value == pytest.approx(_reference_auc(ct, pos), rel=1e-12)
    assert auc.ci_low <= auc.value <= auc.ci_high
    r = res.get("pearson_r")
    assert r.ci_low < r.value < r.ci_high and r.n == 60


def test_perfect_separation_gives_auc_one_and_ties_half(tmp_path):
    rows = [(f"a{i}", 0.6 + 0.01 * i, 0.6 + 0.01 * i, -3.0) for i in range(5)]
    rows += [(f"b{i}", 0.9 + 0.01 * i, 0.9 + 0.01 * i, 0.0) for i in range(5)]
    res = validate_bmd(_write(tmp_path / "p.csv", rows), n_boot=200)
    assert res.get("auc_osteoporosis").value == 1.0
    assert res.get("pearson_r").value == pytest.approx(1.0)
    assert res.get("bland_altman_bias").value == pytest.approx(0.0, abs=1e-12)
    tied = [(f"t{i}", 0.8, 0.7 + 0.01 * i, -3.0 if i % 2 else 0.0) for i in range(6)]
    res = validate_bmd(_write(tmp_path / "t.csv", tied), n_boot=0)
    assert res.get("auc_osteoporosis").value == 0.5
    assert res.get("pearson_r").value is None and "constant" in res.get("pearson_r").note


def test_missing_values_site_filter_and_no_t_scores(tmp_path):
    rows = [("a", 0.7, 0.72, "", "total_hip"), ("b", "", 0.80, "", "total_hip"),
            ("c", 0.9, 0.93, "", "total_hip"), ("d", 1.0, 1.01, "", "total_hip"),
            ("e", 0.5, 0.55, "", "femoral_neck")]
    p = _write(tmp_path / "p.csv", rows, header=("case_id", "ct_abmd_g_cm2", "dxa_abmd_g_cm2",
                                                 "dxa_t_score", "site"))
    res = validate_bmd(p, site="total_hip", n_boot=0)
    assert res.n_cases == 4 and res.get("pearson_r").n == 3
    assert res.get("auc_osteoporosis").value is None
    assert any("other sites" in w for w in res.warnings)


def test_bootstrap_ci_is_deterministic_and_brackets():
    ct, dxa, _ = _synthetic(n=80)
    a = bootstrap_ci(pearson_r, ct, dxa, n_boot=400, seed=5)
    b = bootstrap_ci(pearson_r, ct, dxa, n_boot=400, seed=5)
    assert a == b and a[0] < pearson_r(ct, dxa) < a[1]


@pytest.mark.parametrize("content,needle", [
    ("case_id,dxa_abmd_g_cm2\nx,0.8\n", "ct_abmd_g_cm2"),
    ("case_id,ct_abmd_g_cm2,dxa_abmd_g_cm2\nx,high,0.8\n", "line 2: column ct_abmd_g_cm2"),
    ("case_id,ct_abmd_g_cm2,dxa_abmd_g_cm2\nx,0.7,0.8\nx,0.9,0.8\n", "appears twice"),
    ("case_id,ct_abmd_g_cm2,dxa_abmd_g_cm2\n", "no data rows"),
])
def test_bad_csv_errors(tmp_path, content, needle, capsys):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=needle):
        validate_bmd(p)
    assert main(["validate-bmd", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctmusclebone: error:") and needle in err[0]


def test_cli_writes_outputs(tmp_path, capsys):
    ct, dxa, t = _synthetic(n=30)
    p = _write(tmp_path / "p.csv", [(f"c{i}", a, b, c) for i, (a, b, c)
                                    in enumerate(zip(ct, dxa, t, strict=True))])
    out = tmp_path / "out"
    assert main(["validate-bmd", str(p), "--out", str(out), "--bootstrap", "200"]) == 0
    text = capsys.readouterr().out
    assert "pearson_r" in text and "auc_osteoporosis" in text
    data = json.loads((out / "validate_bmd.json").read_text())
    names = [m["name"] for m in data["metrics"]]
    assert {"pearson_r", "bland_altman_bias", "loa_lower", "loa_upper",
            "auc_osteoporosis", "n_cases"} <= set(names)
    csv_rows = list(csv.DictReader((out / "validate_bmd.csv").open()))
    assert float(csv_rows[0]["value"]) == pytest.approx(np.corrcoef(ct, dxa)[0, 1], rel=1e-5)
    assert main(["validate-bmd", str(tmp_path / "none.csv")]) == 2


@pytest.mark.parametrize("column, value, needle", [
    ("ct_abmd_g_cm2", "812.0", r"mg/cm2\? divide by 1000"),  # CT aBMD typed in mg/cm2
    ("dxa_abmd_g_cm2", "950", r"mg/cm2\? divide by 1000"),
    ("dxa_abmd_g_cm2", "-2.6", "not a plausible aBMD"),  # a T-score in the aBMD column
    ("ct_abmd_g_cm2", "0.0009", "not a plausible aBMD"),
])
def test_implausible_abmd_is_refused_with_a_units_hint(tmp_path, capsys, column, value, needle):
    from CTMuscleBoneLib.validate_bmd import ABMD_PLAUSIBLE_G_CM2

    ct, dxa, t = _synthetic(n=20)
    rows = [[f"c{i}", f"{a:.4f}", f"{b:.4f}", f"{c:.3f}"]
            for i, (a, b, c) in enumerate(zip(ct, dxa, t, strict=True))]
    rows[4][1 if column == "ct_abmd_g_cm2" else 2] = value
    p = _write(tmp_path / "p.csv", rows)
    with pytest.raises(InputError, match=needle):
        validate_bmd(p)
    assert main(["validate-bmd", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"line 6: column {column} has {value}" in err[0]
    assert f"({ABMD_PLAUSIBLE_G_CM2[0]:g}-{ABMD_PLAUSIBLE_G_CM2[1]:g})" in err[0]
    assert "Check the units" in err[0] and not (tmp_path / "out").exists()
    # fit-dxa reads the same file with the same reader and refuses it the same way
    assert main(["fit-dxa", str(p), "--site", "total_hip",
                 "--out", str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err.strip() == err[0]


def test_ct_column_in_other_units_is_not_range_checked(tmp_path):
    ct, dxa, t = _synthetic(n=20)
    rows = [(f"c{i}", f"{150 * a:.2f}", f"{b:.4f}", f"{c:.3f}")
            for i, (a, b, c) in enumerate(zip(ct, dxa, t, strict=True))]
    p = _write(tmp_path / "p.csv", rows,
               header=("case_id", "ct_vbmd_mg_cm3", "dxa_abmd_g_cm2", "dxa_t_score"))
    res = validate_bmd(p, ct_column="ct_vbmd_mg_cm3", n_boot=0)
    assert res.get("pearson_r").value > 0.9
