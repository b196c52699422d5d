"""Patient-like phantom options against their analytic truth.

Lumbar count (4 / 5 / 6 vertebrae), body habitus, muscle atrophy, contrast-like
vessels, arms at the sides and lateral truncation; plus the patient-like and perturbed
spec generators of the training code. Coarse spacings and small fields of view keep
the file fast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import structure
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.phantoms import PhantomSpec, layout, make_phantom
from CTMuscleBoneLib.phantoms.rasterize import voxel_centres_mm
from scipy import ndimage

LUMBAR_KEYS = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2",
               "vertebrae_L1"]


def _centres(geometry) -> np.ndarray:  # noqa: ANN001
    """LPS positions (X, Y, Z, 3) of every voxel centre."""
    return voxel_centres_mm(geometry, (0, 0, 0), geometry.shape).reshape(
        (*geometry.shape, 3))


# -- lumbar count ------------------------------------------------------------------------
@pytest.mark.parametrize("count", [4, 5, 6])
def test_lumbar_count_labels_and_separate_vertebrae(count: int) -> None:
    ph = make_phantom(region="lumbar", spacing_mm=3.0, lumbar_count=count,
                      muscles=("psoas_major", "autochthon"), noise_sd_hu=0.0)
    expected = LUMBAR_KEYS[:min(count, 5)] + (["vertebrae_lumbar"] if count == 6 else [])
    present = {k for k in [*LUMBAR_KEYS, "vertebrae_lumbar"]
               if (ph.labels.array == structure(k).label_value).any()}
    assert present == set(expected)
    assert structure("vertebrae_lumbar").label_value == 11
    spine = ph.truth.components["lumbar_spine"]
    assert spine["count"] == count
    assert [v["key"] for v in spine["vertebrae"]] == expected
    # L5 and the sacrum stay where they are
    assert spine["vertebrae"][0]["body_centre_mm"] == pytest.approx(
        tuple(layout.lumbar_center_mm("L5")))
    assert "sacrum" in ph.truth.structures
    zs = [v["body_centre_mm"][2] for v in spine["vertebrae"]]
    assert np.allclose(np.diff(zs), layout.LUMBAR_PITCH_MM)
    if count == 6:
        top = spine["vertebrae"][-1]
        assert top["level_from_sacrum"] == "L6" and top["shape_level"] == "L1"
        assert top["body_height_mm"] == pytest.approx(spine["vertebrae"][-2]["body_height_mm"])
        assert ph.truth.structures["vertebrae_lumbar"].voxel_count > 0
    # each vertebra is one 26-connected component, separate from its neighbours
    bone = np.zeros(ph.labels.array.shape, dtype=bool)
    for k in expected:
        m = ph.labels.array == structure(k).label_value
        _, n = ndimage.label(m, structure=np.ones((3, 3, 3)))
        assert n == 1, k
        bone |= m
    _, n_all = ndimage.label(bone, structure=np.ones((3, 3, 3)))
    assert n_all == count
    # a disc gap (no vertebra label) between consecutive bodies along the body axis
    pts = _centres(ph.geometry)
    axis = (np.abs(pts[..., 0]) < 2.0) & (np.abs(pts[..., 1] - layout.LUMBAR_Y_MM) < 2.0)
    for lower, upper in zip(spine["vertebrae"][:-1], spine["vertebrae"][1:], strict=True):
        z_mid = (lower["body_centre_mm"][2] + upper["body_centre_mm"][2]) / 2.0
        gap = axis & (np.abs(pts[..., 2] - z_mid) < 3.0)
        assert gap.any() and not bone[gap].any()
    # the field of view holds the whole column; muscles and vessels reach the top one
    top_z = spine["vertebrae"][-1]["body_centre_mm"][2]
    assert ph.truth.fov_max_mm[2] > top_z + 20.0
    assert not ph.truth.structures[expected[-1]].truncated
    for key in ("psoas_major_left", "autochthon_left", "aorta", "inferior_vena_cava"):
        z1 = ph.truth.structures[key].volume_cm3  # present and analytic
        assert z1 and ph.truth.structures[key].voxel_count > 0
        m = ph.labels.array == structure(key).label_value
        assert pts[..., 2][m].max() > top_z
    assert ph.truth.overwrites == {}


def test_lumbar_count_rejects_missing_levels() -> None:
    with pytest.raises(InputError):
        make_phantom(lumbar_count=4, fractured_level="L1")
    with pytest.raises(InputError):
        make_phantom(lumbar_count=4, metal=("pedicle_screw_L1",))
    with pytest.raises(InputError):
        make_phantom(lumbar_count=7)


def test_default_spec_fields_keep_layout() -> None:
    spec = PhantomSpec()
    assert (spec.lumbar_count, spec.body_scale, spec.muscle_atrophy, spec.arms) == (
        5, 1.0, 1.0, False)
    assert spec.trunk_fat_mm is None and spec.lateral_limit_mm is None


# -- body habitus ------------------------------------------------------------------------
def _run_mm(mask_line: np.ndarray, spacing_mm: float) -> float:
    """Length (mm) of the first run of True in a 1-D mask."""
    idx = np.flatnonzero(mask_line)
    first = idx[0]
    run = np.flatnonzero(np.diff(idx) != 1)
    last = idx[run[0]] if run.size else idx[-1]
    return (last - first + 1) * spacing_mm


@pytest.mark.parametrize(("trunk_fat", "thigh_fat"), [(5.0, 4.0), (60.0, 40.0)])
def test_subcutaneous_fat_thickness_measured_on_image(trunk_fat: float, thigh_fat: float
                                                      ) -> None:
    """Fat thickness along the x axis through the trunk / thigh centre equals the design
    within one voxel (1 mm in x); the fat volume matches its analytic value."""
    fat_lv = structure("subcutaneous_fat").label_value
    kw = {"spacing_mm": (1.0, 2.0, 4.0), "noise_sd_hu": 0.0, "trunk_fat_mm": trunk_fat,
          "thigh_fat_mm": thigh_fat, "muscles": (), "vessels": False}
    trunk = make_phantom(region=(150.0, 162.0), **kw)
    body = trunk.truth.components["body"]
    assert body["trunk_fat_mm"] == trunk_fat
    pts = _centres(trunk.geometry)
    k = trunk.geometry.shape[2] // 2
    j = int(np.argmin(np.abs(pts[0, :, k, 1] - layout.TRUNK_CENTER_XY_MM[1])))
    fat = trunk.labels.array[:, j, k] == fat_lv
    assert (trunk.ct.hu[:, j, k][fat] == np.int16(round(trunk.truth.tissue_hu["fat"]))).all()
    assert _run_mm(fat, 1.0) == pytest.approx(trunk_fat, abs=1.0)  # patient's right
    assert _run_mm(fat[::-1], 1.0) == pytest.approx(trunk_fat, abs=1.0)  # left
    a_skin = body["trunk_semi_mm"][0]
    assert a_skin == pytest.approx((layout.TRUNK_SEMI_MM[0] - layout.TRUNK_FAT_MM) + trunk_fat)
    thigh = make_phantom(region=(-200.0, -188.0), **kw)
    k = thigh.geometry.shape[2] // 2
    outline = thigh.labels.array[:, :, k] == fat_lv
    body_xy = outline | (thigh.ct.hu[:, :, k] > -500)
    xs = _centres(thigh.geometry)[:, 0, k, 0]
    left = body_xy & (xs[:, None] > 0)
    j = int(round(np.nonzero(left)[1].mean()))  # row through the left thigh's centre
    line = outline[:, j] & (xs > 0)
    assert _run_mm(line[::-1], 1.0) == pytest.approx(thigh_fat, abs=1.0)  # lateral side
    # voxel volume of the fat against the analytic volume (z-clipped trunk ring)
    st = trunk.truth.structures["subcutaneous_fat"]
    a, b = body["trunk_semi_mm"]
    ai, bi = a - trunk_fat, b - trunk_fat
    dz = trunk.truth.fov_max_mm[2] - trunk.truth.fov_min_mm[2]
    ring_cm3 = np.pi * (a * b - ai * bi) * dz / 1000.0
    n_slices = trunk.geometry.shape[2]
    assert st.voxel_volume_cm3 / (n_slices * 4.0) == pytest.approx(ring_cm3 / dz, rel=0.03)


def test_body_scale_and_habitus_limits() -> None:
    ph = make_phantom(region=(150.0, 160.0), spacing_mm=4.0, body_scale=1.2, noise_sd_hu=0.0)
    semi = ph.truth.components["body"]["trunk_semi_mm"]
    assert semi[0] == pytest.approx(172.0 * 1.2 + 18.0)
    assert ph.truth.overwrites == {}
    for bad in ({"body_scale": 0.9}, {"trunk_fat_mm": 200.0}, {"thigh_fat_mm": -1.0},
                {"thigh_fat_mm": 60.0, "body_scale": 1.3}, {"muscle_atrophy": 0.1},
                {"lateral_limit_mm": 0.0}):
        with pytest.raises(InputError):
            make_phantom(**bad)


# -- muscle atrophy ----------------------------------------------------------------------
def test_atrophy_shrinks_volume_by_factor_squared_and_leaves_fat() -> None:
    kw = {"region": "thigh", "spacing_mm": 2.0, "noise_sd_hu": 0.0, "sides": ("left",),
          "bones": ("femur",), "muscle_fat_fraction": 0.2}
    f = 0.7
    ref = make_phantom(**kw)
    atr = make_phantom(muscle_atrophy=f, muscle_atrophy_factors={"gracilis": 0.8}, **kw)
    assert atr.geometry.shape == ref.geometry.shape
    assert atr.geometry.origin_mm == ref.geometry.origin_mm
    thigh_keys = [k for k, t in ref.truth.structures.items()
                  if t.group == "muscle" and t.voxel_count and not t.truncated]
    assert len(thigh_keys) == 12
    n_ref = n_atr = 0
    pts = _centres(ref.geometry)
    for key in thigh_keys:
        fk = 0.8 if key.startswith("gracilis") else f
        a, r = atr.truth.structures[key], ref.truth.structures[key]
        assert a.volume_cm3 == pytest.approx(fk**2 * r.volume_cm3, rel=1e-12)  # analytic
        assert a.voxel_volume_cm3 == pytest.approx(a.volume_cm3, rel=0.05)
        assert a.fat_fraction_realised == pytest.approx(0.2, abs=0.05)
        m_a = atr.labels.array == a.label_value
        m_r = ref.labels.array == r.label_value
        assert not (m_a & ~m_r).any()  # shrunk in place: inside the original muscle
        # the muscle stays where it was: same in-plane centroid within 1 mm (its z
        # range is unchanged by construction)
        assert np.allclose(pts[m_a][:, :2].mean(axis=0), pts[m_r][:, :2].mean(axis=0),
                           atol=1.0)
        n_ref += int(m_r.sum())
        n_atr += int(m_a.sum())
        left = m_r & ~m_a  # what the muscle left is unlabelled fat
        assert (atr.labels.array[left] == 0).all()
        assert (atr.ct.hu[left] == np.int16(round(atr.truth.tissue_hu["fat"]))).all()
    assert n_atr / n_ref == pytest.approx(f**2, rel=0.03)
    assert atr.truth.overwrites == {}


# -- contrast-like vessels ---------------------------------------------------------------
def test_contrast_vessels_keep_labels() -> None:
    kw = {"region": (150.0, 200.0), "spacing_mm": 3.0, "noise_sd_hu": 0.0}
    plain = make_phantom(**kw)
    enh = make_phantom(hu_blood=350.0, hu_ivc=150.0, **kw)
    assert np.array_equal(plain.labels.array, enh.labels.array)
    assert enh.truth.structures["aorta"].hu_set_mean == pytest.approx(350.0)
    assert enh.truth.structures["inferior_vena_cava"].hu_set_mean == pytest.approx(150.0)
    aorta = enh.labels.array == structure("aorta").label_value
    assert (enh.ct.hu[aorta] == 350).all()
    assert plain.truth.structures["inferior_vena_cava"].hu_set_mean == pytest.approx(40.0)


# -- arms --------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_arms_are_unlabelled_and_widen_the_fov(orientation: str) -> None:
    kw = {"region": (100.0, 130.0), "spacing_mm": 3.0, "noise_sd_hu": 0.0,
          "orientation": orientation, "trunk_fat_mm": 30.0}
    plain = make_phantom(**kw)
    ph = make_phantom(arms=True, **kw)
    arm = ph.truth.components["arm_left"]
    cx, cy = arm["centre_xy_mm"]
    assert cx - arm["skin_semi_mm"][0] > ph.truth.components["body"]["trunk_semi_mm"][0]
    assert ph.truth.fov_max_mm[0] >= cx + arm["skin_semi_mm"][0] + 10.0 - 1e-9
    assert ph.truth.fov_min_mm[0] <= -(cx + arm["skin_semi_mm"][0] + 10.0) + 1e-9
    assert ph.truth.fov_max_mm[0] > plain.truth.fov_max_mm[0] + 50.0
    pts = _centres(ph.geometry)
    dx, dy = np.abs(pts[..., 0]) - cx, pts[..., 1] - cy
    a, b = arm["skin_semi_mm"]
    in_fov = np.all((pts >= ph.truth.fov_min_mm) & (pts <= ph.truth.fov_max_mm), axis=-1)
    in_arm = ((dx / a) ** 2 + (dy / b) ** 2 <= 1.0) & in_fov
    assert in_arm.sum() > 100
    assert (ph.labels.array[in_arm] == 0).all()  # outside every label
    hu = ph.ct.hu[in_arm]
    assert (hu == round(arm["cortical_hu"])).any() and (hu == round(arm["marrow_hu"])).any()
    assert (hu > -500).all()
    for key, t in plain.truth.structures.items():  # nothing labelled changes
        n = ph.truth.structures[key].voxel_count
        assert ph.truth.structures[key].volume_cm3 == t.volume_cm3
        if orientation == "LPS":  # same lattice phase in x here: identical voxels
            assert n == t.voxel_count, key
        elif t.voxel_count > 1000:  # oblique: the wider grid shifts the lattice
            assert n == pytest.approx(t.voxel_count, rel=0.05), key
    assert ph.truth.overwrites == {}


# -- lateral truncation ------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_lateral_truncation(orientation: str) -> None:
    kw = {"region": (45.0, 115.0), "spacing_mm": 3.0, "noise_sd_hu": 0.0,
          "orientation": orientation, "arms": True}
    full = make_phantom(**kw)
    cut = make_phantom(lateral_limit_mm=140.0, **kw)
    assert cut.truth.fov_min_mm[0] == -140.0 and cut.truth.fov_max_mm[0] == 140.0
    pts = _centres(cut.geometry)
    outside = np.abs(pts[..., 0]) > 140.0 + 1e-6
    assert not (cut.labels.array[outside]).any()
    assert (cut.ct.hu[outside] == -3024).all()  # the scanner padding (builder.PADDING_VALUE_HU)
    assert (np.abs(pts[..., 0][cut.ct.hu > -500]) <= 140.0 + 1e-6).all()
    gm = "gluteus_medius_left"  # x 127..163: cut
    assert cut.truth.structures[gm].truncated and not full.truth.structures[gm].truncated
    assert cut.truth.structures[gm].voxel_count < full.truth.structures[gm].voxel_count
    assert cut.truth.structures["subcutaneous_fat"].truncated
    assert cut.truth.structures["subcutaneous_fat"].volume_in_fov_cm3 is None
    l5 = "vertebrae_L5"  # the midline is untouched
    assert not cut.truth.structures[l5].truncated
    assert cut.truth.structures[l5].voxel_count == pytest.approx(
        full.truth.structures[l5].voxel_count, rel=0.03)


# -- everything at once: the truth stays right ------------------------------------------
def test_truth_holds_under_all_options() -> None:
    ph = make_phantom(region="hip", spacing_mm=2.0, seed=4, trunk_fat_mm=50.0,
                      thigh_fat_mm=30.0, body_scale=1.1, muscle_atrophy=0.75,
                      muscle_fat_fraction=0.2, hu_blood=300.0, arms=True, noise_sd_hu=0.0,
                      lateral_limit_mm=260.0)
    assert ph.truth.overwrites == {}
    for key, t in ph.truth.structures.items():
        if t.group == "muscle" and not t.truncated and t.voxel_count > 2000:
            # 6 %: the hip muscles are unsheared vertical cylinders, so one slice's
            # lattice error repeats in every slice (seen up to 4.5 % at 2 mm)
            assert t.voxel_volume_cm3 == pytest.approx(t.volume_cm3, rel=0.06), key
            assert t.fat_fraction_realised == pytest.approx(0.2, abs=0.04), key
            assert t.hu_set_mean == pytest.approx(t.hu_designed, abs=8.0), key
        m = ph.labels.array == t.label_value
        assert t.voxel_count == int(m.sum())
    # 260 mm clears the trunk (skin at 172 x 1.1 + 50 = 239 mm) but cuts the arms
    assert ph.truth.fov_max_mm[0] == 260.0
    arm = ph.truth.components["arm_left"]
    assert arm["centre_xy_mm"][0] - arm["skin_semi_mm"][0] < 260.0 < arm["centre_xy_mm"][0]


# -- spec generators -----------------------------------------------------------------------
def test_patient_like_spec_draws() -> None:
    from CTMuscleBoneLib.segmentation.training import synthetic as syn

    specs = [syn.patient_like_spec(s) for s in range(syn.PATIENT_LIKE_TRAIN_SEEDS.start,
                                                   syn.PATIENT_LIKE_TRAIN_SEEDS.start + 400)]
    assert syn.patient_like_spec(20001) == syn.patient_like_spec(20001)  # deterministic
    frac = lambda pred: np.mean([bool(pred(s)) for s in specs])  # noqa: E731
    assert 0.12 < frac(lambda s: s.metal) < 0.28
    assert 0.22 < frac(lambda s: s.hu_blood > 100) < 0.38
    assert 0.42 < frac(lambda s: s.arms) < 0.58
    assert 0.12 < frac(lambda s: s.lateral_limit_mm or s.truncation) < 0.28
    assert 0.05 < frac(lambda s: s.lumbar_count == 4) < 0.15
    assert 0.05 < frac(lambda s: s.lumbar_count == 6) < 0.15
    assert 0.22 < frac(lambda s: s.calibration) < 0.38
    assert {s.calibration_definition for s in specs if s.calibration} == {
        "B-MAS200", "Mindways Model 3", "QRM-BDC"}
    assert syn.patient_like_spec(20001, p_calibration=0.0) == replace(
        syn.patient_like_spec(20001, p_calibration=1.0), calibration=False,
        calibration_definition="B-MAS200")  # its own random stream
    assert {s.orientation for s in specs} == {"LPS", "RAS", "permuted", "oblique"}
    for s in specs:
        assert 5.0 <= s.trunk_fat_mm <= 60.0 and 2.0 <= s.thigh_fat_mm <= 40.0
        assert 64.0 * s.body_scale + s.thigh_fat_mm <= syn.THIGH_SKIN_MAX_MM + 1e-9
        assert 0.6 <= s.muscle_atrophy <= 1.0 and 5.0 <= s.noise_sd_hu <= 40.0
        assert 0.0 <= s.psf_fwhm_mm <= 2.0 and 1.0 <= min(s.spacing_mm) <= max(s.spacing_mm)
        assert max(s.spacing_mm) <= 3.5
        if s.lumbar_count == 4:
            assert s.fractured_level != "L1" and "pedicle_screw_L1" not in s.metal
    ranges = [syn.TRAIN_SEEDS, syn.HELD_OUT_SEEDS, syn.PATIENT_LIKE_TRAIN_SEEDS,
              syn.PATIENT_LIKE_HELD_OUT_SEEDS, syn.PERTURBED_SEEDS]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert not set(a) & set(b)


def test_patient_like_phantoms_build() -> None:
    from CTMuscleBoneLib.segmentation.training.synthetic import patient_like_spec

    seen = set()
    for seed in range(20000, 20400):
        s = patient_like_spec(seed)
        tag = (s.lumbar_count, bool(s.metal), s.arms, s.lateral_limit_mm is not None,
               s.calibration)
        if s.lumbar_count == 5 and tag in seen:
            continue
        seen.add(tag)
        if len(seen) > 6:
            break
        ph = make_phantom(s, spacing_mm=3.5, region="lumbar" if s.lumbar_count != 5
                          else "hip")
        assert ph.truth.overwrites == {}, seed
        assert ph.ct.hu.dtype == np.int16


@pytest.mark.parametrize("kind", ["clean", "noise", "blur", "metal", "atrophy", "obese",
                                  "truncation", "small", "large"])
def test_perturbed_spec_kinds(kind: str) -> None:
    from CTMuscleBoneLib.segmentation.training.synthetic import (
        PERTURBED_SEEDS,
        perturbed_spec,
    )

    s = perturbed_spec(PERTURBED_SEEDS.start, kind)
    assert s == perturbed_spec(PERTURBED_SEEDS.start, kind)
    strong = {
        "noise": s.noise_sd_hu >= 60.0, "blur": s.psf_fwhm_mm >= 3.0,
        "metal": len(s.metal) == 4 and s.metal_streak_hu >= 600.0,
        "atrophy": s.muscle_atrophy <= 0.55, "obese": s.trunk_fat_mm >= 65.0,
        "truncation": s.lateral_limit_mm is not None and s.truncation is not None,
        "small": s.femur["head_radius_mm"] <= 18.5, "large": s.femur["head_radius_mm"] >= 26.0,
        "clean": s.noise_sd_hu <= 15.0 and not s.metal,
    }
    assert strong[kind]
    ph = make_phantom(s, spacing_mm=4.0, region="hip")
    assert ph.truth.overwrites == {}
    with pytest.raises(InputError):
        perturbed_spec(PERTURBED_SEEDS.start, "unknown")


def test_phantom_command_writes_patient_like_variation(tmp_path):
    """`ctmusclebone phantom` passes the patient-like fields through to the builder."""
    import json

    from CTMuscleBoneLib.cli.main import main

    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--region", "lumbar", "--spacing", "5",
                 "--lumbar-count", "6", "--arms", "--trunk-fat-mm", "40",
                 "--muscle-atrophy", "0.8"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    spec = truth["spec"]
    assert spec["lumbar_count"] == 6 and spec["arms"] is True
    assert spec["trunk_fat_mm"] == 40.0 and spec["muscle_atrophy"] == 0.8
    assert truth["structures"]["vertebrae_lumbar"]["voxel_count"] > 0  # the sixth one


def test_mixed_spec_interleaves_the_standard_body() -> None:
    """One phantom in three is a varied one (standard body: no habitus fields, muscles
    at full size), the others are the patient-like phantoms of the same seed."""
    from CTMuscleBoneLib.segmentation.training import make_demo_model as mdm
    from CTMuscleBoneLib.segmentation.training import synthetic as syn

    seeds = range(20000, 20030)
    specs = [syn.mixed_spec(s) for s in seeds]
    varied = [s for s in specs if s.trunk_fat_mm is None]
    assert len(varied) == 10 and all(s.seed % 3 == 2 for s in varied)
    assert all(s.muscle_atrophy == 1.0 and s.body_scale == 1.0 for s in varied)
    for seed, spec in zip(seeds, specs, strict=True):
        if seed % 3 != 2:
            assert spec == syn.patient_like_spec(seed)
    assert mdm.phantom_spec(20000, "mixed", "full", (1.0, 3.5)) == syn.varied_spec(
        20000, region="full", spacing_range_mm=(1.0, 3.5))
    with pytest.raises(InputError, match="varied_every"):
        syn.mixed_spec(20000, varied_every=0)


def test_demo_body_lies_inside_the_patient_like_ranges():
    """The demo phantom's body (phantoms/demo.py) claims to lie inside the ranges of the
    patient-like training phantoms: each value against the generator's bounds, and the
    seed outside the training and held-out seeds."""
    from CTMuscleBoneLib.phantoms.demo import DEMO_BODY, DEMO_SEED, demo_spec
    from CTMuscleBoneLib.segmentation.training.synthetic import (
        PATIENT_LIKE_HELD_OUT_SEEDS,
        PATIENT_LIKE_TRAIN_SEEDS,
        patient_like_spec,
    )

    bounds = {"trunk_fat_mm": (5.0, 60.0), "thigh_fat_mm": (4.0, 40.0),
              "muscle_atrophy": (0.6, 1.0), "muscle_fat_fraction": (0.0, 0.3),
              "noise_sd_hu": (5.0, 40.0), "psf_fwhm_mm": (0.0, 2.0)}
    drawn = [patient_like_spec(s) for s in range(PATIENT_LIKE_TRAIN_SEEDS.start,
                                                  PATIENT_LIKE_TRAIN_SEEDS.start + 40)]
    for key, (lo, hi) in bounds.items():
        values = [getattr(s, key) for s in drawn]
        assert lo <= min(values) and max(values) <= hi, key  # the bounds are the generator's
        assert lo <= DEMO_BODY[key] <= hi, key
    assert DEMO_BODY["muscle_fat_fractions"]["autochthon"] <= 0.6
    assert DEMO_SEED not in PATIENT_LIKE_TRAIN_SEEDS and DEMO_SEED not in \
        PATIENT_LIKE_HELD_OUT_SEEDS
    spec = demo_spec(3.0)
    assert spec.muscle_atrophy == 0.8 and spec.calibration and spec.orientation == "RAS"
    assert spec.vertebra_bmd_mg_cm3 == 95.0
