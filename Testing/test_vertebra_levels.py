"""Lumbar vertebra numbering from the sacrum (segmentation.vertebra_levels).

Label maps of the lumbar phantom (vertebrae and sacrum only, no noise) with L1..L5
merged into the one class ``vertebrae_lumbar``, in four storage orientations at 2-3 mm;
4 and 6 vertebrae come from the phantom's ``lumbar_count``; the other cases (a missing
level, a truncated top, merged vertebrae, no sacrum) are made by editing the truth array
(in physical space, so they hold in every orientation). Tolerance: Dice of each numbered
level against the phantom truth > 0.99 (the only differences allowed are the bridge
voxels added between two vertebrae).
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY, group_members
from CTMuscleBoneLib.image import Geometry, LabelMap
from CTMuscleBoneLib.phantoms import make_phantom
from CTMuscleBoneLib.segmentation.vertebra_levels import (
    number_label_map,
    number_lumbar_vertebrae,
)

LUMBAR = BY_KEY["vertebrae_lumbar"].label_value
SACRUM = BY_KEY["sacrum"].label_value
LEVEL_VALUE = {f"L{n}": BY_KEY[f"vertebrae_L{n}"].label_value for n in range(1, 6)}
#: Storage orientation -> voxel size (mm). The phantom's field of view reaches 50 mm
#: above L1's top (z 45..290 mm) so a sixth vertebra fits without truncation.
CASES = {"LPS": 2.0, "RAS": 3.0, "permuted": 3.0, "oblique": 2.5}
REGION_Z_MM = (45.0, 290.0)
#: Centre distance of neighbouring phantom vertebrae (phantoms/builder.py layout), mm.
PITCH_MM = 37.0


@cache
def _build(orientation: str, lumbar_count: int = 5) -> tuple[np.ndarray, Geometry]:
    """Truth labels and grid of the lumbar phantom (vertebrae and sacrum only)."""
    ph = make_phantom(region=REGION_Z_MM, spacing_mm=CASES[orientation],
                      orientation=orientation, bones=("vertebrae", "sacrum"), muscles=(),
                      vessels=False, noise_sd_hu=0.0, lumbar_count=lumbar_count)
    return ph.labels.array, ph.labels.geometry


@pytest.fixture(params=list(CASES))
def orientation(request) -> str:
    return request.param


@pytest.fixture
def phantom(orientation) -> tuple[np.ndarray, Geometry]:
    return _build(orientation)


def _merged(truth: np.ndarray) -> np.ndarray:
    """The truth with L1..L5 as the one lumbar class (what a 2-D model outputs)."""
    arr = truth.copy()
    for key in group_members("vertebrae_lumbar"):
        arr[truth == BY_KEY[key].label_value] = LUMBAR
    return arr


def _positions(geometry: Geometry) -> np.ndarray:
    """LPS position (mm) of every voxel centre, shape (*geometry.shape, 3), float32."""
    idx = np.indices(geometry.shape, dtype=np.float32)
    return geometry.index_to_physical(np.moveaxis(idx, 0, -1)).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _assert_levels(out: np.ndarray, truth: np.ndarray, levels: dict[str, str]) -> None:
    """Each output level (key) matches the truth level (value) with Dice > 0.99."""
    for got, want in levels.items():
        d = _dice(out == LEVEL_VALUE[got], truth == LEVEL_VALUE[want])
        assert d > 0.99, f"{got} vs true {want}: Dice {d:.4f}"


def test_five_levels_recovered_in_every_orientation(phantom):
    truth, geom = phantom
    arr = _merged(truth)
    before = arr.copy()
    out, rep = number_lumbar_vertebrae(arr, geom)
    np.testing.assert_array_equal(arr, before)  # input not modified
    assert rep.numbered and rep.levels == ("L5", "L4", "L3", "L2", "L1")
    assert rep.warnings == [] and rep.notes == []
    _assert_levels(out, truth, {f"L{n}": f"L{n}" for n in range(1, 6)})
    assert not (out == LUMBAR).any()
    np.testing.assert_array_equal(out[truth == SACRUM], SACRUM)  # other labels kept
    for v in rep.vertebrae:  # centres on the phantom layout: (0, 40, 78 + 37 n) mm
        n = 5 - int(v.level[1])
        assert abs(v.centre_mm[2] - (78.0 + PITCH_MM * n)) < 3.0
        assert 24.0 < v.height_mm < 34.0


def test_four_vertebrae_not_truncated_warns_transitional(orientation):
    truth, geom = _build(orientation, lumbar_count=4)  # L5..L2, column ends in the FOV
    out, rep = number_lumbar_vertebrae(_merged(truth), geom)
    assert rep.levels == ("L5", "L4", "L3", "L2")
    _assert_levels(out, truth, {f"L{n}": f"L{n}" for n in range(2, 6)})
    assert len(rep.warnings) == 1
    assert "assumes 5 lumbar vertebrae" in rep.warnings[0]
    assert "Verify the levels" in rep.warnings[0]


def test_six_vertebrae_top_one_unnumbered(orientation):
    truth, geom = _build(orientation, lumbar_count=6)  # a sixth one (label 11) above L1
    assert (truth == LUMBAR).any()
    out, rep = number_lumbar_vertebrae(_merged(truth), geom)
    assert rep.levels == ("L5", "L4", "L3", "L2", "L1")
    _assert_levels(out, truth, {f"L{n}": f"L{n}" for n in range(1, 6)})
    assert _dice(out == LUMBAR, truth == LUMBAR) > 0.99  # the extra one stays unnumbered
    assert [v.level for v in rep.vertebrae] == ["L5", "L4", "L3", "L2", "L1", None]
    assert len(rep.warnings) == 1 and "Six lumbar-type vertebrae" in rep.warnings[0]


@pytest.mark.parametrize("cut_level", ["L1", "L2"])
def test_top_level_truncated_by_the_field_of_view(phantom, cut_level):
    truth, geom = phantom
    # crop the grid along the array axis nearest the superior one, through the middle
    # of ``cut_level``: it touches the superior face of the new field of view
    axis, sign = geom.axis_for("superior")
    centre = np.argwhere(truth == LEVEL_VALUE[cut_level]).mean(axis=0)
    k = int(round(centre[axis]))
    box = [slice(0, n) for n in geom.shape]
    box[axis] = slice(0, k) if sign > 0 else slice(k, geom.shape[axis])
    lo = np.array([b.start for b in box], float)
    sub = Geometry(tuple(b.stop - b.start for b in box), geom.spacing_mm,
                   tuple(geom.index_to_physical(lo)), geom.direction)
    t = truth[tuple(box)]
    out, rep = number_lumbar_vertebrae(_merged(t), sub)
    n_top = int(cut_level[1])
    want = tuple(f"L{n}" for n in range(5, n_top - 1, -1))
    assert rep.levels == want
    _assert_levels(out, t, {lv: lv for lv in want})
    assert "superior" in rep.vertebrae[-1].faces
    assert rep.warnings == []  # missing levels outside the field of view: a note only
    if cut_level == "L2":
        assert len(rep.notes) == 1 and "L1 not in the image" in rep.notes[0]
    else:
        assert rep.notes == []


def test_missing_level_inside_the_field_of_view(phantom):
    truth, geom = phantom
    arr = _merged(truth)
    arr[truth == LEVEL_VALUE["L3"]] = 0
    out, rep = number_lumbar_vertebrae(arr, geom)
    assert rep.levels == ("L5", "L4", "L2", "L1")
    _assert_levels(out, truth, {"L5": "L5", "L4": "L4", "L2": "L2", "L1": "L1"})
    assert not (out == LEVEL_VALUE["L3"]).any()
    assert len(rep.warnings) == 1
    assert "Gap in the lumbar column above L4" in rep.warnings[0]
    assert "1 level(s) missing" in rep.warnings[0]


def test_two_vertebrae_merged_by_a_bridge_are_split(phantom):
    truth, geom = phantom
    arr = _merged(truth)
    pos = _positions(geom)
    # a rod of radius 3 mm along the body axis (x 0, y 40 mm) through the L4/L3 disc
    z4 = pos[truth == LEVEL_VALUE["L4"]][:, 2].max()
    z3 = pos[truth == LEVEL_VALUE["L3"]][:, 2].min()
    rod = ((pos[..., 0] ** 2 + (pos[..., 1] - 40.0) ** 2 <= 9.0)
           & (pos[..., 2] > z4 - 5) & (pos[..., 2] < z3 + 5) & (arr == 0))
    assert rod.any()
    arr[rod] = LUMBAR
    out, rep = number_lumbar_vertebrae(arr, geom)
    assert rep.levels == ("L5", "L4", "L3", "L2", "L1")
    _assert_levels(out, truth, {f"L{n}": f"L{n}" for n in range(1, 6)})
    assert [v.split for v in rep.vertebrae] == [False, True, True, False, False]
    assert any("split" in n for n in rep.notes) and rep.warnings == []


def test_no_sacrum_or_sacrum_far_below_leaves_levels_unassigned(phantom):
    truth, geom = phantom
    arr = _merged(truth)
    arr[truth == SACRUM] = 0
    out, rep = number_lumbar_vertebrae(arr, geom)
    assert not rep.numbered and rep.levels == ()
    np.testing.assert_array_equal(out == LUMBAR, arr == LUMBAR)
    assert len(rep.vertebrae) == 5 and all(v.level is None for v in rep.vertebrae)
    assert len(rep.warnings) == 1
    assert "no sacrum" in rep.warnings[0] and "by hand" in rep.warnings[0]
    # sacrum present but L5 missing: it does not reach up to the lowest vertebra
    arr = _merged(truth)
    arr[truth == LEVEL_VALUE["L5"]] = 0
    out, rep = number_lumbar_vertebrae(arr, geom)
    assert not rep.numbered and not np.isin(out, list(LEVEL_VALUE.values())).any()
    assert "does not reach up to the lowest lumbar vertebra" in rep.warnings[0]


def test_specks_join_the_nearest_vertebra_or_background():
    ph = make_phantom(region="lumbar", spacing_mm=2.0, bones=("vertebrae", "sacrum"),
                      muscles=(), vessels=False, noise_sd_hu=0.0)
    truth, geom = ph.labels.array, ph.labels.geometry
    arr = _merged(truth)
    l3 = np.argwhere(truth == LEVEL_VALUE["L3"])
    # a voxel two voxels (4 mm) beyond L3's left-most voxel: joins L3
    edge = l3[np.argmax(l3[:, 0])]
    near = (edge[0] + 2, edge[1], edge[2])
    assert arr[near] == 0
    arr[near] = LUMBAR
    # a 2 x 2 x 2 voxel speck (0.06 cm3) 30 mm beside it: background
    far = tuple(slice(int(c) + 15, int(c) + 17) for c in edge[:1]) + tuple(
        slice(int(c), int(c) + 2) for c in edge[1:])
    arr[far] = LUMBAR
    # an 8 cm3 blob about 110 mm lateral of the column: not a vertebra (warning)
    blob = (slice(int(edge[0]) + 40, int(edge[0]) + 50),) + tuple(
        slice(int(c) - 5, int(c) + 5) for c in edge[1:])
    assert (truth[blob] != LEVEL_VALUE["L3"]).all()
    arr[blob] = LUMBAR
    out, rep = number_lumbar_vertebrae(arr, geom)
    assert rep.levels == ("L5", "L4", "L3", "L2", "L1")
    assert out[near] == LEVEL_VALUE["L3"]
    assert (out[far] == 0).all() and (out[blob] == 0).all()
    assert any("speck" in n for n in rep.notes)
    assert len(rep.warnings) == 1 and "from the spinal column" in rep.warnings[0]


def test_number_label_map_adds_levels_and_warnings_to_the_notes():
    ph = make_phantom(region="lumbar", spacing_mm=3.0, bones=("vertebrae", "sacrum"),
                      muscles=(), vessels=False, noise_sd_hu=0.0)
    truth = ph.labels.array
    arr = _merged(truth)
    arr[truth == LEVEL_VALUE["L1"]] = 0
    labels = LabelMap(arr, ph.labels.geometry, {LUMBAR: "vertebrae_lumbar", SACRUM: "sacrum"},
                      source="a model", notes=("read from file",))
    new, rep = number_label_map(labels)
    assert labels.array is arr and (arr != truth).any()  # input untouched
    assert new.notes == ("read from file", *rep.warnings) and len(rep.warnings) == 1
    assert set(new.present_keys()) == {"sacrum", "vertebrae_L2", "vertebrae_L3",
                                       "vertebrae_L4", "vertebrae_L5"}
    d = rep.to_dict()
    assert d["levels"] == ["L5", "L4", "L3", "L2"] and len(d["vertebrae"]) == 4
    # a map without the lumbar class is returned as it is
    plain = ph.labels
    same, rep2 = number_label_map(plain)
    assert same is plain and not rep2.numbered


def test_predict_splits_and_numbers_a_lumbar_class_on_the_ct_grid():
    """segmentation.inference.predict: the lumbar class is numbered, not cut to one piece.

    A tiny untrained network whose lumbar channel wins on 5 % of the voxels (its bias
    shifted), so the class has many pieces: predict's output must equal the numbering
    of the same network's raw labels (same channel under another key, no
    largest-component cleaning), and the report's warnings must be the map's notes.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from CTMuscleBoneLib.segmentation.config import InferenceConfig, InputConfig, NetworkConfig
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.network import build_network

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ct = make_phantom(region="lumbar", spacing_mm=6.0, bones=("vertebrae", "sacrum"),
                          muscles=(), vessels=False).ct
        inp = InputConfig(spacing_mm=(6.0, 6.0, 6.0))
        torch.manual_seed(2)
        net = build_network(NetworkConfig(out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                                          dropout_p=0.0))
        other = {0: "background", 1: "femur_left"}
        probe = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=1,
                                                      return_probabilities=True), other,
                        device="cpu")
        p = probe.probabilities
        with torch.no_grad():
            net.head.conv.bias[1] -= float(np.percentile(np.log(p[1] + 1e-12)
                                                         - np.log(p[0] + 1e-12), 95))
        raw = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=1,
                                                    largest_component=False), other,
                      device="cpu")
        res = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=1),
                      {0: "background", 1: "vertebrae_lumbar"}, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert raw.vertebra_levels is None
    arr = raw.label_map.array
    want, rep = number_lumbar_vertebrae(np.where(arr == 1, LUMBAR, arr).astype(arr.dtype),
                                        ct.geometry)
    assert len(rep.vertebrae) > 1  # several pieces: largest-component cleaning would differ
    np.testing.assert_array_equal(res.label_map.array, want)
    assert res.vertebra_levels.to_dict() == rep.to_dict()
    assert res.label_map.notes == tuple(rep.warnings) and rep.warnings  # (no sacrum)


def test_numbered_levels_are_measured_and_the_warning_reaches_the_results():
    from CTMuscleBoneLib import pipeline

    ph = make_phantom(region="lumbar", spacing_mm=3.0, bones=("vertebrae", "sacrum"),
                      muscles=(), vessels=False)
    truth = ph.labels.array
    arr = _merged(truth)
    arr[truth == LEVEL_VALUE["L1"]] = 0  # four vertebrae: the transitional-anatomy warning
    labels = LabelMap(arr, ph.labels.geometry, {LUMBAR: "vertebrae_lumbar", SACRUM: "sacrum"})
    numbered, rep = number_label_map(labels)
    results = pipeline.measure(ph.ct, numbered)
    assert rep.warnings[0] in results.warnings
    for level in ("L2", "L3", "L4", "L5"):
        row = results.get(f"vertebrae_{level}", "trabecular_vbmd")
        assert row is not None and row.value is not None
    assert results.get("vertebrae_L1", "trabecular_vbmd") is None


def test_module_imports_no_torch():
    code = ("import sys; import CTMuscleBoneLib.segmentation.vertebra_levels; "
            "print('torch' in sys.modules, 'monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(Path(__file__).parents[1] / "CTMuscleBone"))
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_review_scores_each_numbered_vertebra_on_the_model_grid(orientation):
    """The review list gets one row per numbered vertebra, not one for the whole class.

    The model's lumbar class on a 4 mm model grid (the truth resampled there), an
    uncertainty map that is a different constant inside each true vertebra (L1 0.01 ...
    L5 0.05) and 1 elsewhere: each level's "inside" score must be its own constant
    exactly (its model-grid voxels are found through the numbering on the CT grid), and
    the one-class entry goes when every voxel got a level.
    """
    pytest.importorskip("torch")
    from CTMuscleBoneLib.image import CTImage
    from CTMuscleBoneLib.segmentation.config import InputConfig
    from CTMuscleBoneLib.segmentation.inference import _with_vertebra_levels
    from CTMuscleBoneLib.segmentation.preprocess import prepare_input, resample
    from CTMuscleBoneLib.segmentation.uncertainty import structure_score_variants

    truth, geometry = _build(orientation)
    _, grid = prepare_input(CTImage(np.zeros(geometry.shape, np.float32), geometry),
                            InputConfig(spacing_mm=(4.0, 4.0, 4.0)))
    truth_model = resample(truth, geometry, grid, "nearest", 0, truth.dtype)
    lab_model = _merged(truth_model)
    unc = np.ones(grid.shape, np.float32)
    for n in range(1, 6):
        unc[truth_model == LEVEL_VALUE[f"L{n}"]] = n / 100.0
    maps = {"predictive_variance": unc}
    keys = {LUMBAR: "vertebrae_lumbar", SACRUM: "sacrum"}
    variants = structure_score_variants(lab_model, maps, grid.spacing_mm, keys)
    numbered = number_label_map(LabelMap(_merged(truth), geometry, keys))
    out = _with_vertebra_levels(variants, numbered[1], lab_model, maps, grid,
                                numbered[0].array, geometry)
    got = {v.key: v.scores["predictive_variance:inside"] for v in out}
    want = {f"vertebrae_L{n}": n / 100.0 for n in range(1, 6)}
    assert set(got) == {"sacrum", *want}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key
    # the whole class' score mixed the five (and is gone from the list)
    lumbar_score = variants[0].scores["predictive_variance:inside"]
    assert 0.01 < lumbar_score < 0.05
    # a piece left without a level keeps the one-class entry beside the levels
    left = numbered[0].array.copy()
    left[left == LEVEL_VALUE["L1"]] = LUMBAR
    out2 = _with_vertebra_levels(variants, numbered[1], lab_model, maps, grid, left, geometry)
    assert "vertebrae_lumbar" in {v.key for v in out2}
