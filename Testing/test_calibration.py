"""HU -> BMD calibration: phantom definitions, rod fit, automatic rods, internal, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY, canonical_label_names
from CTMuscleBoneLib.calibration import (
    Calibration,
    CalibrationRefused,
    available_phantoms,
    calibrate,
    internal_calibration,
    load_internal_references,
    load_phantom_definition,
)
from CTMuscleBoneLib.calibration.fit import fit_hu_to_density, fit_two_component
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap
from CTMuscleBoneLib.phantoms.base import PaintBuffer, ScannerModel
from CTMuscleBoneLib.phantoms.calibration_rods import CalibrationRodsPhantom

PHANTOMS = ("B-MAS200", "Mindways Model 3", "QRM-BDC")
SCANNER = ScannerModel(slope_mg_cm3_per_hu=0.83, intercept_mg_cm3=-6.0)

# Two storage orders of the same physical space: axial LPS and a permuted, flipped grid
# (array axis 0 = superior, axis 1 = right (-x), axis 2 = posterior).
PERMUTED = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def _grid(kind: str, spacing: tuple[float, float, float]) -> Geometry:
    """A grid covering x -180..180, y -110..180, z -45..45 mm in one of two orders."""
    sx, sy, sz = spacing
    nx, ny, nz = int(360 / sx) + 1, int(290 / sy) + 1, int(90 / sz) + 1
    if kind == "axial":
        return Geometry((nx, ny, nz), (sx, sy, sz), (-180.0, -110.0, -45.0))
    # axis0 = +z, axis1 = -x, axis2 = +y
    return Geometry((nz, nx, ny), (sz, sx, sy), (180.0, -110.0, -45.0), PERMUTED)


def rasterise(components, geometry: Geometry, noise_hu: float = 15.0, seed: int = 0,
              extra=None) -> tuple[CTImage, LabelMap]:
    """Air, a 40 HU body ellipse (150 x 100 mm semi-axes), then the components."""
    idx = np.indices(geometry.shape).reshape(3, -1).T
    pts = geometry.index_to_physical(idx)
    buf = PaintBuffer(pts, np.zeros(len(pts), np.int16), np.full(len(pts), -1000.0, np.float32))
    buf.hu[(pts[:, 0] / 150.0) ** 2 + (pts[:, 1] / 100.0) ** 2 <= 1.0] = 40.0
    for c in components:
        c.paint(buf)
    if extra is not None:
        extra(buf)
    rng = np.random.default_rng(seed)
    hu = buf.hu.reshape(geometry.shape) + rng.normal(0.0, noise_hu, geometry.shape)
    labels = LabelMap(buf.labels.reshape(geometry.shape).astype(np.int16), geometry,
                      canonical_label_names(), source="phantom ground truth")
    return CTImage(hu.astype(np.float32), geometry), labels


def _no_labels(geometry: Geometry) -> LabelMap:
    return LabelMap(np.zeros(geometry.shape, np.int16), geometry, canonical_label_names())


# -- definitions --------------------------------------------------------------------------
def test_bundled_definitions_load_and_are_marked_unverified():
    names = available_phantoms()
    for name in PHANTOMS:
        assert name in names
        d = load_phantom_definition(name)
        assert d.material in ("HA", "K2HPO4")
        assert not d.verified and "certificate" in d.raw["certificate_note"]
        assert d.source
    assert load_phantom_definition("b-mas200").densities_mg_cm3.tolist() == [0, 50, 100, 150,
                                                                             200]
    assert load_phantom_definition("Mindways Model 3").two_component


def test_user_definition_file_and_clear_errors(tmp_path):
    good = {"name": "My phantom", "material": "HA",
            "rods": [{"density_mg_cm3": 0}, {"density_mg_cm3": 120}, {"density_mg_cm3": 240}]}
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(good))
    d = load_phantom_definition(str(p))
    assert d.name == "My phantom" and len(d.rods) == 3 and d.path == str(p)
    bad_cases = [
        ({**good, "material": "calcium"}, "material"),
        ({k: v for k, v in good.items() if k != "rods"}, "rods"),
        ({**good, "rods": [{"density_mg_cm3": "high"}, {"density_mg_cm3": 1}]}, "finite number"),
        ({**good, "rods": [{"density_mg_cm3": 1}]}, "2 to 6"),
        ({**good, "rods": [{"density_mg_cm3": 1}, {"density_mg_cm3": 1}]}, "same density"),
        ({**good, "material": "K2HPO4", "model": "two_component_water_k2hpo4"}, "water"),
        ({**good, "verified": "false"}, "'verified' must be true or false without quotes"),
    ]
    for data, needle in bad_cases:
        p.write_text(json.dumps(data))
        with pytest.raises(InputError, match=needle):
            load_phantom_definition(str(p))
    p.write_text("{not json")
    with pytest.raises(InputError, match="Cannot read"):
        load_phantom_definition(str(p))
    with pytest.raises(InputError, match="Unknown calibration phantom"):
        load_phantom_definition("no-such-phantom")


def test_line_fits_exact():
    rho = np.array([0.0, 50, 100, 150, 200])
    hu = (rho + 6.0) / 0.83
    f = fit_hu_to_density(hu, rho)
    assert f.slope_mg_cm3_per_hu == pytest.approx(0.83, rel=1e-12)
    assert f.intercept_mg_cm3 == pytest.approx(-6.0, abs=1e-9)
    assert f.r == pytest.approx(1.0)
    d = load_phantom_definition("Mindways Model 3")
    water = np.array([r.water_density_mg_cm3 for r in d.rods])
    f2 = fit_two_component(d.expected_hu(0.83, -6.0), d.densities_mg_cm3, water)
    assert f2.slope_mg_cm3_per_hu == pytest.approx(0.83, rel=1e-12)
    assert f2.intercept_mg_cm3 == pytest.approx(-6.0, abs=1e-9)


# -- phantom calibration ------------------------------------------------------------------
@pytest.mark.parametrize("name", PHANTOMS)
@pytest.mark.parametrize("kind,spacing", [("axial", (2.0, 2.0, 3.0)),
                                          ("permuted", (1.5, 2.5, 4.0))])
def test_phantom_fit_recovers_scanner_line(name, kind, spacing):
    ph = CalibrationRodsPhantom(name, SCANNER, rod_length_mm=100.0)
    geom = _grid(kind, spacing)
    ct, labels = rasterise([ph], geom, noise_hu=12.0, seed=PHANTOMS.index(name) + 10 * len(kind))
    span = float(np.ptp(ph.definition.densities_mg_cm3))
    for lab in (labels, None):  # labelled rods, then automatic detection
        cal = calibrate(ct, lab, method="phantom", phantom=name)
        assert cal.method == "phantom" and cal.material == ph.definition.material
        assert cal.slope_mg_cm3_per_hu == pytest.approx(SCANNER.slope_mg_cm3_per_hu, rel=0.01)
        # the intercept is near 0: 1 % of the rods' density span
        assert abs(cal.intercept_mg_cm3 - SCANNER.intercept_mg_cm3) < 0.01 * span
        assert cal.r > 0.999 and cal.n_points == len(ph.definition.rods)
        assert [p[2] for p in cal.points] == ph.definition.densities_mg_cm3.tolist()
        assert any("certificate" in w for w in cal.warnings)


def test_automatic_rods_positions_match_truth():
    ph = CalibrationRodsPhantom("QRM-BDC", SCANNER, rod_length_mm=100.0)
    geom = _grid("axial", (2.0, 2.0, 3.0))
    ct, _ = rasterise([ph], geom)
    from CTMuscleBoneLib.calibration import find_rods

    rods = find_rods(ct, ph.definition)
    truth = np.array([r["centre_mm"][:2] for r in ph.truth()["rods"]])
    found = np.array(sorted(r.centre_mm[:2] for r in rods))
    assert np.abs(found - truth[np.argsort(truth[:, 0])]).max() < 2.0


def test_refuses_poor_fit_missing_rod_and_metal():
    geom = _grid("axial", (2.0, 2.0, 3.0))
    # a wrong rod: rod 3 shows the CT number of a much denser insert
    ph = CalibrationRodsPhantom("B-MAS200", SCANNER, rod_length_mm=100.0,
                                rod_hu_override={3: 400.0})
    ct, labels = rasterise([ph], geom)
    with pytest.raises(CalibrationRefused, match="fit is poor"):
        calibrate(ct, labels, method="phantom", phantom="B-MAS200")
    # a missing rod: labels and automatic detection both refuse
    ph = CalibrationRodsPhantom("B-MAS200", SCANNER, rod_length_mm=100.0, omit_rods=(5,))
    ct, labels = rasterise([ph], geom)
    with pytest.raises(CalibrationRefused, match="calibration_rod_5"):
        calibrate(ct, labels, method="phantom", phantom="B-MAS200")
    with pytest.raises(CalibrationRefused, match="found 4"):
        calibrate(ct, None, method="phantom", phantom="B-MAS200")
    # metal beside rod 2 (a 3000 HU screw), and streaks across rod 4
    ph = CalibrationRodsPhantom("B-MAS200", SCANNER, rod_length_mm=100.0)
    c2, c4 = ph.rod_centres_mm()[1], ph.rod_centres_mm()[3]

    def screw(buf):
        p = buf.points_mm
        buf.hu[(p[:, 0] - c2[0]) ** 2 + (p[:, 1] - c2[1] - 9.0) ** 2 <= 4.0] = 3000.0

    ct, labels = rasterise([ph], geom, extra=screw)
    for lab in (labels, None):
        with pytest.raises(CalibrationRefused, match="metal"):
            calibrate(ct, lab, method="phantom", phantom="B-MAS200")

    def streaks(buf):
        p = buf.points_mm
        near = (p[:, 0] - c4[0]) ** 2 + (p[:, 1] - c4[1]) ** 2 <= 49.0
        buf.hu[near] += 250.0 * np.sign(np.sin(p[near, 0] * 1.3 + p[near, 1] * 0.9))

    ct, labels = rasterise([ph], geom, extra=streaks)
    with pytest.raises(CalibrationRefused, match="streak"):
        calibrate(ct, labels, method="phantom", phantom="B-MAS200")


def test_phantom_component_protocol():
    ph = CalibrationRodsPhantom("B-MAS200", SCANNER)
    lo, hi = ph.bounds_mm()
    assert np.all(lo < hi) and lo[1] > 100.0  # under (posterior to) a 100 mm body
    t = ph.truth()
    assert [r["key"] for r in t["rods"]] == [f"calibration_rod_{k}" for k in range(1, 6)]
    assert t["rods"][2]["hu"] == pytest.approx(SCANNER.hu_for_bmd(100.0))
    assert t["rods"][0]["label_value"] == BY_KEY["calibration_rod_1"].label_value


def test_method_none_and_errors():
    geom = _grid("axial", (4.0, 4.0, 6.0))
    ct = CTImage(np.zeros(geom.shape, np.float32), geom)
    cal = calibrate(ct, None, method="none")
    assert isinstance(cal, Calibration) and not cal.calibrated
    assert cal.flags() == ["uncalibrated: HU only"]
    with pytest.raises(InputError, match="phantom definition"):
        calibrate(ct, None, method="phantom")
    with pytest.raises(InputError, match="Unknown calibration method"):
        calibrate(ct, None, method="magic")  # type: ignore[arg-type]


# -- internal calibration -----------------------------------------------------------------
TISSUE_HU = {"air": -1000.0, "subcutaneous_fat": -100.0, "skeletal_muscle": 50.0,
             "blood": 40.0}
#: A site table of equivalent densities (0.80 mg/cm3 per HU x nominal HU: test values).
SITE_TABLE = {"material": "K2HPO4", "kvp": 120, "references": {
    k: {"equivalent_density_mg_cm3": 0.8 * v} for k, v in TISSUE_HU.items()}}


def _tissue_body(hu_fat=-100.0, hu_muscle=50.0, hu_blood=40.0, hu_air=-1000.0, noise=0.0,
                 contrast_agent=None):
    """Body: fat ring (10 mm) around muscle; an aorta; air outside (4 mm voxels)."""
    geom = Geometry((90, 70, 8), (4.0, 4.0, 5.0), (-178.0, -138.0, -17.5))
    idx = np.indices(geom.shape).reshape(3, -1).T
    p = geom.index_to_physical(idx)
    hu = np.full(len(p), hu_air)
    lab = np.zeros(len(p), np.int16)
    e_out = (p[:, 0] / 150.0) ** 2 + (p[:, 1] / 100.0) ** 2 <= 1.0
    e_in = (p[:, 0] / 130.0) ** 2 + (p[:, 1] / 80.0) ** 2 <= 1.0
    hu[e_out] = hu_fat
    lab[e_out & ~e_in] = BY_KEY["subcutaneous_fat"].label_value
    hu[e_in] = hu_muscle
    lab[e_in] = BY_KEY["gluteus_maximus_left"].label_value
    aorta = (p[:, 0] - 20.0) ** 2 + (p[:, 1] + 20.0) ** 2 <= 15.0**2
    hu[aorta] = hu_blood
    lab[aorta] = BY_KEY["aorta"].label_value
    hu = hu.reshape(geom.shape) + np.random.default_rng(1).normal(0, noise, geom.shape)
    ct = CTImage(hu.astype(np.float32), geom, CTMetadata(kvp=120, contrast_agent=contrast_agent))
    return ct, LabelMap(lab.reshape(geom.shape), geom, canonical_label_names())


def test_internal_calibration_arithmetic_exact():
    ct, labels = _tissue_body()
    cal = internal_calibration(ct, labels, SITE_TABLE)
    table = load_internal_references(SITE_TABLE)["references"]
    names = [p[0] for p in cal.points]
    assert names == ["air", "subcutaneous_fat", "skeletal_muscle", "blood"]
    for name, hu, rho in cal.points:
        assert hu == pytest.approx(TISSUE_HU[name])
        assert rho == table[name]["equivalent_density_mg_cm3"]
    # reference: least squares of HU on density, inverted
    rho = np.array([p[2] for p in cal.points])
    hu = np.array([p[1] for p in cal.points])
    a, b = np.polyfit(rho, hu, 1)
    assert cal.slope_mg_cm3_per_hu == pytest.approx(1 / a, rel=1e-12)
    assert cal.intercept_mg_cm3 == pytest.approx(-b / a, abs=1e-9)
    # the test table lies on 0.80 mg/cm3 per HU through 0
    assert cal.slope_mg_cm3_per_hu == pytest.approx(0.80, rel=1e-9)
    assert cal.intercept_mg_cm3 == pytest.approx(0.0, abs=1e-6)
    assert cal.method == "internal" and cal.material == "K2HPO4" and cal.n_points == 4
    assert any("not marked verified" in w for w in cal.warnings)
    assert not any("contrast" in w for w in cal.warnings)


def test_internal_calibration_follows_scanner_shift_with_noise():
    # a scanner reading every tissue 1.1x further from water: the line must follow
    ct, labels = _tissue_body(hu_fat=-110.0, hu_muscle=55.0, hu_blood=44.0, hu_air=-1000.0,
                              noise=12.0)
    cal = internal_calibration(ct, labels, SITE_TABLE)
    rho = np.array([p[2] for p in cal.points])
    hu = np.array([p[1] for p in cal.points])
    a, b = np.polyfit(rho, hu, 1)
    assert cal.slope_mg_cm3_per_hu == pytest.approx(1 / a, rel=1e-12)
    assert np.abs(hu - np.array([-1000.0, -110.0, 55.0, 44.0])).max() < 1.5


def test_internal_calibration_contrast_excludes_blood():
    ct, labels = _tissue_body(hu_blood=300.0)
    cal = internal_calibration(ct, labels, SITE_TABLE)
    assert "blood" not in [p[0] for p in cal.points]
    assert any("contrast-enhanced" in w for w in cal.warnings)
    ct, labels = _tissue_body(contrast_agent="Iohexol")
    cal = internal_calibration(ct, labels, SITE_TABLE)
    assert "blood" not in [p[0] for p in cal.points]
    assert any("Iohexol" in w for w in cal.warnings)


def test_internal_calibration_refuses_without_tissues_and_bad_table(tmp_path):
    geom = Geometry((10, 10, 4), (4.0, 4.0, 5.0))
    ct = CTImage(np.full(geom.shape, 40.0, np.float32), geom)  # all soft tissue: no air
    with pytest.raises(CalibrationRefused, match="at least 2"):
        internal_calibration(ct, None, SITE_TABLE)
    with pytest.raises(InputError, match="reference-tissue table is needed"):
        load_internal_references(None)  # type: ignore[arg-type]
    p = tmp_path / "refs.json"
    p.write_text(json.dumps({"material": "K2HPO4", "references": {"bone": {}}}))
    with pytest.raises(InputError, match="unknown tissue"):
        load_internal_references(p)


def test_rods_shorter_than_the_scan_are_found_in_the_full_phantom():
    """A 200 mm phantom in a 310 mm scan: air slices must not hide or dilute the rods."""
    from CTMuscleBoneLib.calibration import calibrate
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    p = make_phantom(PhantomSpec(region=(-110.0, 200.0), spacing_mm=2.0, orientation="RAS",
                                 seed=7, calibration=True))
    cal = calibrate(p.ct, None, "phantom", phantom="B-MAS200")
    assert cal.slope_mg_cm3_per_hu == pytest.approx(0.80, rel=0.01)
    assert abs(cal.intercept_mg_cm3 - (-2.0)) < 2.0
