"""The results model: CSV/JSON round trip, provenance, atomic writes, statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import stats
from CTMuscleBoneLib.atomic import atomic_write_text
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.results import CSV_COLUMNS, Provenance, ResultRow, Results, sha256_of_path


def sample() -> Results:
    r = Results(provenance=Provenance(input_ct="ct.nii.gz", input_ct_sha256="ab" * 32))
    r.add(ResultRow("gluteus_medius_left", "volume", 123.456, "cm3", "voxel count", []))
    r.add(ResultRow("femur_left", "abmd_total_hip", None, "g/cm2", "projection",
                    ["not_measurable: metal in the femur"]))
    r.add(ResultRow("patient", "smi", float("nan"), "kg/m2", "ALM / height^2", ["x", "y"]))
    r.unknown_labels = {98: "rib_left_7"}
    return r


def test_csv_columns_and_values(tmp_path: Path) -> None:
    path = sample().write_csv(tmp_path / "r.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    # volumes rounded to 0.1 cm3 for reading; the display name follows the machine key
    assert rows[1][:5] == ["gluteus_medius_left", "Gluteus medius (left)", "volume", "123.5",
                           "cm3"]
    assert rows[2][3] == "" and "metal" in rows[2][6]
    assert rows[3][3] == "" and rows[3][6] == "x; y"  # NaN written as empty, never "nan"


def test_json_round_trip(tmp_path: Path) -> None:
    path = sample().write_json(tmp_path / "r.json")
    d = json.loads(path.read_text())
    assert d["rows"][2]["value"] is None
    assert d["unknown_labels"] == {"98": "rib_left_7"}
    back = Results.read_json(path)
    assert back.value("gluteus_medius_left", "volume") == pytest.approx(123.456)
    assert back.provenance.input_ct_sha256 == "ab" * 32
    assert back.provenance.software.startswith("CTMuscleBone")


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from CTMuscleBoneLib.atomic import atomic_open

    with pytest.raises(Boom), atomic_open(target) as f:
        f.write("new but incomplete")
        raise Boom
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_sha256_of_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    assert sha256_of_path(tmp_path / "a") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    h1 = sha256_of_path(d)
    (d / "x").write_bytes(b"2")
    assert sha256_of_path(d) != h1


def test_stats_against_numpy_and_definitions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + rng.normal(size=50)
    assert stats.pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert stats.rmse(x, x + 1.0) == pytest.approx(1.0)
    ba = stats.bland_altman(x + 0.5, x)
    assert ba.bias == pytest.approx(0.5) and ba.sd == pytest.approx(0.0, abs=1e-12)
    assert stats.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert stats.roc_auc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    with pytest.raises(InputError):
        stats.roc_auc([1, 2], [1, 1])
    folds = stats.kfold_indices(10, 3)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(10))
