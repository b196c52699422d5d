"""Physics-based phantomless calibration, phantom detection and the 'auto' resolution.

Truth: synthetic phantoms whose every CT number comes from one polychromatic physics
(:mod:`CTMuscleBoneLib.phantoms.polychromatic`): the scanner's mineral-in-water line is
known exactly, so the internal and phantom calibrations are checked against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.calibration import (
    Calibration,
    CalibrationRefused,
    detect_phantom,
    physics_calibration,
    sample_reference_tissues,
)
from CTMuscleBoneLib.calibration.physics import (
    fit_effective_energy,
    hu_to_mineral_line,
    load_tables,
    mineral_coefficient_cm2_g,
    tissue_hu_at,
)
from CTMuscleBoneLib.dxa.material import load_material_table, to_hydroxyapatite
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.phantoms.polychromatic import (
    XraySpectrum,
    make_polychromatic_phantom,
    polychromatic_overrides,
)

#: Agreement required by the issue: internal vs truth and vs phantom within 3 %.
TOL_PERCENT = 3.0


def _err_percent(cal: Calibration, scanner, bmd_mg_cm3: float) -> float:
    return float((cal.bmd_mg_cm3(scanner.hu_for_bmd(bmd_mg_cm3)) / bmd_mg_cm3 - 1.0) * 100.0)


# -- tables and the effective-energy fit ---------------------------------------------------
def test_tables_match_nist_and_state_their_source():
    t = load_tables()
    # NIST (Hubbell & Seltzer) water 0.2059 and cortical bone 0.3148 cm2/g at 60 keV
    assert float(t.mass_attenuation("water", 60.0)) == pytest.approx(0.2059, rel=2e-3)
    assert float(t.mass_attenuation("cortical_bone", 60.0)) == pytest.approx(0.3148, rel=2e-3)
    assert "Elam" in t.source and "NIST" in t.source
    for m in ("air", "adipose", "skeletal_muscle", "blood", "cortical_bone", "K2HPO4", "HA",
              "triglyceride", "water"):
        assert t.mass_cm2_g[m].shape == t.energies_kev.shape


@pytest.mark.parametrize("energy_kev", [50.0, 65.0, 80.0])
def test_monoenergetic_tissues_give_back_their_energy_and_line(energy_kev):
    t = load_tables()
    tissues = ("air", "adipose", "skeletal_muscle", "blood", "cortical_bone")
    hu = {k: tissue_hu_at(energy_kev, k, t) for k in tissues}
    fit = fit_effective_energy(hu, t)
    assert fit.energy_kev == pytest.approx(energy_kev, abs=0.3)
    assert fit.r2 > 0.999999 and abs(fit.water_hu_implied) < 0.5
    slope, intercept = hu_to_mineral_line(fit, "K2HPO4", t)
    # 150 mg/cm3 K2HPO4 in water at that energy reads k/mu_w HU per mg/cm3
    k = float(mineral_coefficient_cm2_g("K2HPO4", energy_kev, t))
    hu150 = 150.0 * k / float(t.linear_attenuation("water", energy_kev))
    assert slope * hu150 + intercept == pytest.approx(150.0, rel=0.01)
    # a wrong tissue (fat read as muscle) breaks the fit: r2 drops
    bad = dict(hu, adipose=hu["skeletal_muscle"])
    assert fit_effective_energy(bad, t).r2 < fit.r2


# -- reference material: K2HPO4 from physics, HA only through the documented conversion ------
@pytest.mark.parametrize("kvp", [80.0, 100.0, 120.0, 140.0])
def test_first_principles_ha_k2hpo4_ratio_is_goodsitts_dual_energy_one(kvp):
    """Per mg/cm3 in water the two minerals add nearly the same HU (0.96-1.00 here), as
    Goodsitt's dual-energy ratio BMD_K2HPO4/BMD_HA 0.96-1.02 says; his single-energy
    0.86 (80 kVp) / 0.81 (140 kVp) is not reproduced (it belongs to the commercial
    standards), which is why the internal method reports K2HPO4 only."""
    s = XraySpectrum(kvp)
    ratio = s.hu_per_mg_cm3("HA") / s.hu_per_mg_cm3("K2HPO4")  # = BMD_K2HPO4 / BMD_HA
    # Goodsitt's dual-energy range, widened by 0.01 for the simplified spectrum model
    assert 0.95 < ratio < 1.03
    assert ratio - load_material_table().ratio_at(kvp) > 0.08


def test_internal_reports_k2hpo4_and_ha_follows_goodsitt_across_kvp(hip):
    spectrum, ph = hip
    with pytest.raises(InputError, match="K2HPO4-equivalent density only"):
        physics_calibration(ph.ct, ph.labels, material="HA")
    cal = physics_calibration(ph.ct, ph.labels)
    assert cal.material == "K2HPO4" and "Goodsitt" in cal.details["material_note"]
    ha, conversion = to_hydroxyapatite(cal, ph.ct.metadata.kvp)
    assert ha.material == "HA" and conversion.kvp_known
    hu = ph.truth.scanner.hu_for_bmd(150.0)
    # the published ratios have two decimals: +-0.005
    published = {80.0: 0.86, 140.0: 0.81}[spectrum.kvp]
    assert float(cal.bmd_mg_cm3(hu) / ha.bmd_mg_cm3(hu)) == pytest.approx(published, abs=0.005)


# -- synthetic polychromatic phantoms --------------------------------------------------------
@pytest.fixture(scope="module", params=[80.0, 140.0], ids=["80kVp", "140kVp"])
def hip(request):
    s = XraySpectrum(request.param)
    return s, make_polychromatic_phantom(s, region="hip", spacing_mm=2.0, calibration=True,
                                         seed=3)


def test_internal_agrees_with_truth_and_phantom_across_kvp(hip):
    spectrum, ph = hip
    scanner = ph.truth.scanner
    cal = physics_calibration(ph.ct, ph.labels)
    assert cal.method == "internal" and cal.material == "K2HPO4"
    assert set(p[0] for p in cal.points) >= {"air", "adipose", "skeletal_muscle",
                                             "cortical_bone"}
    d = cal.details
    assert 40.0 < d["effective_energy_kev"] < spectrum.kvp * 0.75 and d["r2"] > 0.9999
    for s in d["samples"]:
        assert s["n_voxels"] >= 20 and s["volume_cm3"] > 0 and s["sd_hu"] >= 0
    phantom = detect_phantom(ph.ct, None)
    assert "Mindways Model 3" in phantom.description and phantom.material == "K2HPO4"
    assert phantom.r > 0.999
    for bmd in (100.0, 200.0, 1000.0):
        assert abs(_err_percent(cal, scanner, bmd)) < TOL_PERCENT, bmd
        assert abs(_err_percent(phantom, scanner, bmd)) < 1.0, bmd
    # every calibrated value carries the expected error as an 'unvalidated:' flag
    assert any(f.startswith("unvalidated:") and "expected error" in f for f in cal.flags())


def test_femoral_cortex_sampled_and_blood_needs_a_label(hip):
    spectrum, ph = hip
    samples, refused = sample_reference_tissues(ph.ct, ph.labels)
    cortex = samples["cortical_bone"]
    assert cortex.mean_hu == pytest.approx(spectrum.hu("cortical_bone"), rel=0.02)
    assert "femoral shaft" in cortex.location
    assert samples["adipose"].mean_hu == pytest.approx(spectrum.hu("adipose"), abs=3.0)
    assert "blood" in refused and "aorta" in refused["blood"]  # hip FOV: no aorta


def test_cortex_too_thin_for_the_voxels_is_refused_and_the_rest_goes_on():
    s = XraySpectrum(120.0)
    # a 1.5 mm cortex blurred by a 2.5 mm PSF never reaches its full CT number
    ph = make_polychromatic_phantom(s, region="hip", spacing_mm=2.0, seed=1, psf_fwhm_mm=2.5,
                                    femur={"cortical_thickness_mm": 1.5})
    cal = physics_calibration(ph.ct, ph.labels)
    assert "cortical_bone" in cal.details["refused"]
    assert "partial volume" in cal.details["refused"]["cortical_bone"]
    assert any("no cortical bone sample" in w for w in cal.warnings)
    assert cal.details["expected_error_percent"] > 3.0


def test_contrast_blood_refused_and_metal_near_the_femur_refused():
    s = XraySpectrum(120.0)
    over = polychromatic_overrides(s)
    ph = make_polychromatic_phantom(s, region=(60.0, 200.0), spacing_mm=3.0, seed=2,
                                    hu_blood=250.0, bones=("vertebrae",))
    samples, refused = sample_reference_tissues(ph.ct, ph.labels)
    assert "blood" not in samples and "contrast" in refused["blood"]
    assert over["hu_blood"] < 110.0  # unenhanced blood stays a reference
    ph = make_polychromatic_phantom(s, region="hip", spacing_mm=3.0, seed=2,
                                    metal=("femoral_stem_left",), sides=("left",))
    samples, refused = sample_reference_tissues(ph.ct, ph.labels)
    assert "cortical_bone" not in samples and "metal" in refused["cortical_bone"]


def _crop(ph, lo, hi):
    """The phantom's CT and labels cut to the index box [lo, hi) (a tightly cropped CT)."""
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    g = ph.ct.geometry
    g2 = dataclasses.replace(g, shape=tuple(b - a for a, b in zip(lo, hi, strict=True)),
                             origin_mm=tuple(float(v) for v in
                                             g.index_to_physical(np.array(lo, float))))
    ct = dataclasses.replace(ph.ct, hu=np.ascontiguousarray(ph.ct.hu[box]), geometry=g2)
    labels = dataclasses.replace(ph.labels, array=np.ascontiguousarray(ph.labels.array[box]),
                                 geometry=g2, overlays={})
    return ct, labels


@pytest.fixture(scope="module")
def hip120():
    s = XraySpectrum(120.0)
    return s, make_polychromatic_phantom(s, region="hip", spacing_mm=3.0, seed=1)


def test_without_tissue_labels_the_hu_windows_are_used(hip120):
    _, ph = hip120
    scanner = ph.truth.scanner
    femurs = {v: k for v, k in ph.labels.structures.items() if k.startswith("femur")}
    bones_only = dataclasses.replace(
        ph.labels, structures=femurs, overlays={},
        array=np.where(np.isin(ph.labels.array, list(femurs)), ph.labels.array, 0
                       ).astype(ph.labels.array.dtype))
    cal = physics_calibration(ph.ct, bones_only)
    where = {s["tissue"]: s["location"] for s in cal.details["samples"]}
    assert "HU window" in where["adipose"] and "HU window" in where["skeletal_muscle"]
    assert "cortical_bone" in where  # the femur label still gives the cortex
    assert abs(_err_percent(cal, scanner, 150.0)) < TOL_PERCENT
    # no labels at all: no cortex, so the wider allowance is stated and holds
    cal = physics_calibration(ph.ct, None)
    assert "cortical_bone" in cal.details["refused"]
    err = cal.details["expected_error_percent"]
    assert err > TOL_PERCENT and abs(_err_percent(cal, scanner, 150.0)) < err


def test_tightly_cropped_ct(hip120):
    _, ph = hip120
    scanner = ph.truth.scanner
    shape = np.array(ph.ct.hu.shape)
    # cut to the body's bounding box: only the corners hold air, enough to sample
    ct, labels = _crop(ph, (3, 3, 0), tuple(shape - (3, 3, 0)))
    cal = physics_calibration(ct, labels)
    assert "air" in [p[0] for p in cal.points]
    assert abs(_err_percent(cal, scanner, 150.0)) < TOL_PERCENT
    # cut inside the body (no air, no subcutaneous fat): refused, naming both
    ct, labels = _crop(ph, (40, 30, 35), (100, 75, int(shape[2])))
    with pytest.raises(CalibrationRefused, match="at least 3 reference tissues") as e:
        physics_calibration(ct, labels)
    assert "air: 0 voxels" in str(e.value) and "adipose: 0 voxels" in str(e.value)


def test_too_few_tissues_refused():
    s = XraySpectrum(120.0)
    ph = make_polychromatic_phantom(s, region="hip", spacing_mm=4.0, seed=1)
    with pytest.raises(CalibrationRefused, match="at least 3 reference tissues"):
        physics_calibration(ph.ct, ph.labels, tissues=("air", "adipose"))


# -- phantom detection and 'auto' ------------------------------------------------------------
def test_detect_finds_the_phantom_without_its_name():
    s = XraySpectrum(120.0)
    ph = make_polychromatic_phantom(s, "HA", region="hip", spacing_mm=3.0, calibration=True,
                                    calibration_definition="QRM-BDC", seed=4)
    cal = detect_phantom(ph.ct, None)
    assert "QRM-BDC" in cal.description.split(";")[0]
    assert cal.slope_mg_cm3_per_hu == pytest.approx(ph.truth.scanner.slope_mg_cm3_per_hu,
                                                    rel=0.01)
    tried = {c["phantom"]: c for c in cal.details["candidates"]}
    assert set(tried) == {"B-MAS200", "Mindways Model 3", "QRM-BDC"}
    assert not tried["B-MAS200"]["accepted"]  # 5 rods expected, 6 in the scan


def test_detect_refuses_without_a_phantom():
    ph = make_polychromatic_phantom(XraySpectrum(120.0), region="hip", spacing_mm=4.0)
    with pytest.raises(CalibrationRefused, match="no known calibration phantom"):
        detect_phantom(ph.ct, None)


def test_auto_picks_phantom_then_internal_then_none():
    from CTMuscleBoneLib.analysis import MeasureOptions, choose_calibration
    from CTMuscleBoneLib.results import Results

    s = XraySpectrum(120.0)
    with_rods = make_polychromatic_phantom(s, region="hip", spacing_mm=3.0, calibration=True)
    res = Results()
    cal = choose_calibration(with_rods.ct, with_rods.labels, MeasureOptions(), res)
    assert cal.method == "phantom" and "found without being named" in cal.description
    plain = make_polychromatic_phantom(s, region="hip", spacing_mm=3.0)
    res = Results()
    cal = choose_calibration(plain.ct, plain.labels, MeasureOptions(), res)
    assert cal.method == "internal" and cal.expected_error
    assert any("phantom calibration not used" in w for w in res.warnings)
    # nothing to sample (a uniform block): HU only
    blank = dataclasses.replace(plain.ct, hu=np.full(plain.ct.hu.shape, 40, np.int16))
    res = Results()
    cal = choose_calibration(blank, plain.labels, MeasureOptions(), res)
    assert not cal.calibrated and any("internal calibration refused" in w
                                      for w in res.warnings)


# -- the real lumbar CT ----------------------------------------------------------------------
def test_real_lumbar_ct_internal_calibration(real_data_dir):
    from CTMuscleBoneLib.io_ct import read_ct
    from CTMuscleBoneLib.io_labels import add_tissue_masks, read_labels
    from CTMuscleBoneLib.spine.measure import analyse_spine

    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    main = read_labels(real_data_dir / "lumbar_seg_totalseg.nii.gz", ct.geometry)
    before = main.array.copy()
    labels = add_tissue_masks(main, [real_data_dir / "lumbar_tissue_subcutaneous_fat.nii.gz",
                                     real_data_dir / "lumbar_tissue_skeletal_muscle.nii.gz"])
    assert np.array_equal(main.array, before)  # the input map is not modified
    assert "skeletal_muscle" in labels.unknown.values()
    assert any("subcutaneous_fat" in n and "added" in n for n in labels.notes)
    # the main labels win where both label a voxel
    kept = before != 0
    assert np.array_equal(labels.array[kept], before[kept])
    cal = physics_calibration(ct, labels)
    names = [p[0] for p in cal.points]
    assert names == ["air", "adipose", "skeletal_muscle", "blood"]
    assert "subcutaneous_fat label" in cal.details["samples"][1]["location"]
    # without the tissue masks fat comes from a HU window
    plain = physics_calibration(ct, main)
    assert "HU window" in plain.details["samples"][1]["location"]
    # with no muscle label the skeletal_muscle tissue mask gives the muscle sample
    muscles = [v for v, k in labels.structures.items() if BY_KEY[k].group == "muscle"]
    no_muscle = dataclasses.replace(
        labels, array=np.where(np.isin(labels.array, muscles), 0, labels.array
                               ).astype(labels.array.dtype),
        structures={v: k for v, k in labels.structures.items() if v not in muscles})
    cal = physics_calibration(ct, no_muscle)
    muscle = next(s for s in cal.details["samples"] if s["tissue"] == "skeletal_muscle")
    assert "skeletal_muscle tissue mask" in muscle["location"]
    assert 0.0 < muscle["mean_hu"] < 70.0  # lean window; fat-infiltrated muscle reads low
    assert 50.0 < cal.details["effective_energy_kev"] < 80.0
    assert "cortical_bone" in cal.details["refused"]
    spine = analyse_spine(ct, labels, cal)
    l1 = spine["vertebrae_L1"].vbmd_mg_cm3
    assert l1 is not None and 50.0 < l1 < 250.0  # adult trabecular vBMD


def test_tissue_mask_names():
    from CTMuscleBoneLib.io_labels import tissue_mask_name

    assert tissue_mask_name("a/lumbar_tissue_subcutaneous_fat.nii.gz") == "subcutaneous_fat"
    assert tissue_mask_name("skeletal_muscle.nrrd") == "skeletal_muscle"
    with pytest.raises(InputError, match="subcutaneous_fat.nii.gz or skeletal_muscle"):
        tissue_mask_name("lumbar_tissue_torso_fat.nii.gz")


def test_measure_cli_labels_extra_on_the_real_crop(real_data_dir, tmp_path):
    import json

    from CTMuscleBoneLib.cli.main import main

    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(real_data_dir / "lumbar_ct.nii.gz"),
               "--labels", str(real_data_dir / "lumbar_seg_totalseg.nii.gz"),
               "--label-format", "totalseg",
               "--labels-extra", str(real_data_dir / "lumbar_tissue_subcutaneous_fat.nii.gz"),
               "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    text = json.dumps(doc)
    assert "subcutaneous_fat label" in text and "effective_energy_kev" in text


def test_phantom_command_kvp_gives_a_scan_internal_calibration_reads_right(tmp_path):
    """`ctmusclebone phantom --kvp`: physically consistent HU, so `measure` with the
    default `--calibration auto` (no phantom in the scan: internal) gets L1 vBMD within
    3 % of the design; without --kvp the truth says internal calibration does not apply."""
    import json

    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.results import Results

    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--region", "lumbar", "--spacing", "3",
                 "--kvp", "100", "--seed", "2"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert "100 kVp" in truth["note"]
    assert main(["measure", "--ct", str(out / "ct.nii.gz"), "--labels",
                 str(out / "labels.nii.gz"), "--out", str(tmp_path / "res"), "--quiet"]) == 0
    res = Results.read_json(tmp_path / "res" / "results.json")
    row = res.get("vertebrae_L1", "trabecular_vbmd")
    assert row is not None and row.value is not None
    assert "internal calibration" in row.method
    design = truth["spec"]["vertebra_bmd_mg_cm3"]
    assert abs(row.value / design - 1.0) < 0.03, (row.value, design)

    plain = tmp_path / "plain"
    assert main(["phantom", "--out", str(plain), "--region", "lumbar", "--spacing", "4"]) == 0
    assert "does not reproduce the truth" in json.loads((plain / "truth.json").read_text())["note"]
