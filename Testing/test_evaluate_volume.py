"""`evaluate` volume agreement: Pearson r and Bland-Altman of structure volumes over cases,
on synthetic prediction/reference pairs whose volumes (and so r) are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.segmentation.evaluate import (
    TARGET_VOLUME_R,
    evaluate_label_maps,
    volume_agreement,
)

GEOM = Geometry((20, 20, 20), (2.0, 2.0, 2.0))  # 0.008 cm3 voxels
VOXEL_CM3 = 0.008


def label_map(counts: dict[str, int]) -> LabelMap:
    """A map where structure k holds its first ``counts[k]`` voxels (distinct blocks)."""
    arr = np.zeros(GEOM.shape, dtype=np.int16)
    flat = arr.reshape(-1)
    start = 0
    structures = {}
    for key, n in counts.items():
        v = BY_KEY[key].label_value
        flat[start:start + n] = v
        start += 2000
        if n:
            structures[v] = key
    return LabelMap(arr, GEOM, structures)


REF = [300, 500, 700, 900, 1100, 1300]
PRED_LINEAR = [int(1.1 * n) for n in REF]  # r = 1, bias = 10 % of the mean
PRED_NOISY = [360, 450, 760, 860, 1190, 1240]


def scores_for(pred_counts, ref_counts, key="femur_left"):
    scores = []
    for i, (p, r) in enumerate(zip(pred_counts, ref_counts, strict=True)):
        scores += evaluate_label_maps(label_map({key: p}), label_map({key: r}), [key],
                                      case=f"c{i}", with_surface=False)
    return scores


def test_volumes_are_recorded_in_cm3() -> None:
    s = scores_for([120], [100])[0]
    assert s.pred_volume_cm3 == pytest.approx(120 * VOXEL_CM3)
    assert s.ref_volume_cm3 == pytest.approx(100 * VOXEL_CM3)


def test_perfectly_proportional_volumes_have_r_one_and_known_bias() -> None:
    (a,) = volume_agreement(scores_for(PRED_LINEAR, REF))
    assert a.n_cases == len(REF)
    assert a.pearson_r == pytest.approx(1.0)
    diff = (np.array(PRED_LINEAR) - np.array(REF)) * VOXEL_CM3
    assert a.bias_cm3 == pytest.approx(diff.mean())
    assert a.meets_target_r is True


def test_noisy_volumes_match_numpy_r_and_limits_of_agreement() -> None:
    (a,) = volume_agreement(scores_for(PRED_NOISY, REF))
    p = np.array(PRED_NOISY) * VOXEL_CM3
    r = np.array(REF) * VOXEL_CM3
    assert a.pearson_r == pytest.approx(np.corrcoef(p, r)[0, 1])
    d = p - r
    assert a.bias_cm3 == pytest.approx(d.mean())
    assert a.sd_diff_cm3 == pytest.approx(d.std(ddof=1))
    assert a.lower_loa_cm3 == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    assert a.upper_loa_cm3 == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert a.meets_target_r == (a.pearson_r > TARGET_VOLUME_R)


def test_uncorrelated_volumes_fail_the_target() -> None:
    pred = [900, 300, 1100, 500, 700, 1300][::-1]
    (a,) = volume_agreement(scores_for(pred, REF))
    assert a.pearson_r < TARGET_VOLUME_R and a.meets_target_r is False


def test_cases_without_the_structure_are_left_out_and_misses_count() -> None:
    # case 3: absent in both -> left out; case 4: missed by the prediction -> volume 0
    pred = [300, 500, 700, 0, 0, 1300]
    ref = [300, 500, 700, 0, 1100, 1300]
    (a,) = volume_agreement(scores_for(pred, ref))
    assert a.n_cases == 5
    assert a.bias_cm3 == pytest.approx(-1100 * VOXEL_CM3 / 5)


def test_too_few_cases_give_no_r_with_a_note() -> None:
    (a,) = volume_agreement(scores_for([100, 200], [110, 190]))
    assert a.pearson_r is None and a.bias_cm3 is None
    assert "at least 3" in a.note


def test_cli_prints_and_writes_volume_agreement(tmp_path: Path, capsys) -> None:
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.io_ct import write_image

    for folder, counts in (("pred", PRED_NOISY), ("ref", REF)):
        (tmp_path / folder).mkdir()
        for i, n in enumerate(counts):
            lm = label_map({"femur_left": n})
            write_image(lm.array, GEOM, tmp_path / folder / f"case{i}.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--no-surface", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "volume agreement" in text and "volume r > 0.9" in text
    doc = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    (va,) = doc["volume_agreement"]
    p, r = np.array(PRED_NOISY) * VOXEL_CM3, np.array(REF) * VOXEL_CM3
    assert va["pearson_r"] == pytest.approx(np.corrcoef(p, r)[0, 1])
    assert (out / "volume_agreement.csv").read_text(encoding="utf-8").startswith("structure,")
