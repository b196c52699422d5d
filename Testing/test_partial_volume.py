"""Partial volume: scanner blur (PSF) in the phantoms, and femoral / lumbar BMD on
blurred phantoms against the analytic (unblurred) truth.

The femur tests measure through ``femur_pv.femur_values``, which calls
``femur.measure.measure_femur`` (the production path) with or without the edge-mineral
restoration of ``femur.partial_volume``. Crops around the left femur at 1 mm voxels keep
the file fast.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.femur.partial_volume import restore_edge_mineral
from CTMuscleBoneLib.image import CTImage, Geometry
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.phantoms.builder import femur_components
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec
from CTMuscleBoneLib.phantoms.psf import FWHM_PER_SIGMA, blur_hu, sigma_voxels
from CTMuscleBoneLib.phantoms.rasterize import ORIENTATIONS as BUILDER_ORIENTATIONS
from CTMuscleBoneLib.phantoms.shapes import Ellipsoid
from CTMuscleBoneLib.phantoms.solid import SolidComponent
from CTMuscleBoneLib.spine.measure import analyse_spine
from femur_pv import femur_values
from femur_raster import ORIENTATIONS, analytic_abmd, grid_around, rasterize

SCANNER = PhantomSpec().scanner
CAL = Calibration("phantom", "K2HPO4", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")
#: LPS box around the left femur (head to 65 mm below the lesser trochanter) and the
#: acetabulum; head radius 28 mm leaves a 2 mm joint space to the acetabulum (r 30 mm).
FEMUR_BOX = ((55.0, -45.0, -130.0), (160.0, 45.0, 45.0))
FEMUR = {"head_radius_mm": 28.0}
SPACING = {"LPS": 1.0, "RAS": 1.0, "permuted": (1.0, 0.9, 1.1), "oblique": 1.0}
QUANTITIES = ("abmd_total_hip", "abmd_femoral_neck", "vbmd_total_proximal", "vbmd_neck",
              "vbmd_trochanter")


@functools.cache
def _femur_phantom(fwhm: float, orientation: str = "LPS", bones=("femur", "hip"),
                   seed: int = 0):  # noqa: ANN202
    """The left-femur crop (cached: several tests share a phantom)."""
    return make_phantom(fov_mm=FEMUR_BOX, spacing_mm=SPACING[orientation],
                        orientation=orientation, psf_fwhm_mm=fwhm, sides=("left",),
                        bones=bones, femur=FEMUR, vessels=False, seed=seed)


@functools.cache
def _values(fwhm: float, orientation: str, bones=("femur", "hip")) -> dict[str, float]:
    ph = _femur_phantom(fwhm, orientation, bones)
    return femur_values(ph.ct, ph.labels, "left", SCANNER.bmd_for_hu)


@pytest.fixture(scope="module")
def femur_truth() -> dict[str, float]:
    """Analytic aBMD (exact projection) and vBMD of the builder's left femur."""
    spec = PhantomSpec(sides=("left",), femur=FEMUR)
    fem = femur_components(spec)[0]
    t = fem.truth()
    return {**{f"abmd_{k}": v for k, v in analytic_abmd(fem).items()},
            **{f"vbmd_{k}": v for k, v in t.vbmd_mg_cm3.items()}}


# -- the PSF itself ------------------------------------------------------------------------
def test_sigma_voxels_per_axis():
    s = sigma_voxels(2.0, (0.5, 1.0, 2.0))
    assert s == pytest.approx(np.array([4.0, 2.0, 1.0]) / FWHM_PER_SIGMA)
    assert FWHM_PER_SIGMA == pytest.approx(2.3548, abs=1e-4)
    with pytest.raises(InputError):
        sigma_voxels(-1.0, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("orientation", ["LPS", "permuted", "oblique"])
def test_blur_is_isotropic_in_physical_space(orientation):
    """A point source blurred on an anisotropic, oblique grid has the PSF's variance
    along any physical direction and keeps its sum."""
    d = BUILDER_ORIENTATIONS[orientation]
    g = Geometry((41, 37, 33), (0.6, 0.8, 1.0), (0.0, 0.0, 0.0), d)
    hu = np.zeros(g.shape, np.float32)
    hu[20, 18, 16] = 1000.0
    out = blur_hu(hu, g, 2.0)
    assert out.sum() == pytest.approx(1000.0, rel=1e-4)
    p = g.index_to_physical(np.argwhere(np.ones(g.shape, bool))) - g.index_to_physical(
        np.array([20, 18, 16]))
    w = out.ravel() / out.sum()
    sigma2 = (2.0 / FWHM_PER_SIGMA) ** 2
    for v in (np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([1.0, 2.0, -1.0])):
        v = v / np.linalg.norm(v)
        assert float(w @ (p @ v) ** 2) == pytest.approx(sigma2, rel=0.06)


def test_builder_blurs_hu_not_labels_and_adds_noise_after():
    sharp, blurred = (make_phantom(fov_mm=FEMUR_BOX, spacing_mm=2.0, psf_fwhm_mm=f,
                                   sides=("left",), femur=FEMUR, vessels=False)
                      for f in (0.0, 2.0))
    assert np.array_equal(sharp.labels.array, blurred.labels.array)
    assert not np.array_equal(sharp.ct.hu, blurred.ct.hu)
    assert blurred.truth.spec.psf_fwhm_mm == 2.0
    assert any("PSF" in n for n in blurred.truth.notes)
    # white noise of the set SD, added after the blur (blurred noise would be ~3x lower
    # and correlated between neighbours)
    quiet = make_phantom(fov_mm=FEMUR_BOX, spacing_mm=2.0, psf_fwhm_mm=2.0, sides=("left",),
                         femur=FEMUR, vessels=False, noise_sd_hu=0.0, dtype="float32")
    noisy = make_phantom(fov_mm=FEMUR_BOX, spacing_mm=2.0, psf_fwhm_mm=2.0, sides=("left",),
                         femur=FEMUR, vessels=False, noise_sd_hu=10.0, dtype="float32")
    noise = noisy.ct.hu.astype(float) - quiet.ct.hu
    assert noise.std() == pytest.approx(10.0, rel=0.02)
    assert abs(np.corrcoef(noise[1:].ravel(), noise[:-1].ravel())[0, 1]) < 0.02
    with pytest.raises(InputError):
        make_phantom(PhantomSpec(psf_fwhm_mm=-1.0))


# -- femur: aBMD and vBMD within 2 % of the analytic truth ------------------------------------
ALL = ("LPS", "RAS", "permuted", "oblique")


@pytest.mark.parametrize("fwhm,orientation", [
    *((1.2, o) for o in ALL), *((2.0, o) for o in ALL), (0.7, "LPS"), (0.7, "oblique")])
def test_femur_bmd_within_2_percent_when_blurred(fwhm, orientation, femur_truth):
    """FWHM 1.2 and 2 mm in every storage; 0.7 mm (about 0.3 voxel, a small blur on the
    1 mm grid) in two."""
    v = _values(fwhm, orientation)
    for q in QUANTITIES:
        assert v[q] == pytest.approx(femur_truth[q], rel=0.02), q


def test_label_only_reads_low_when_blurred(femur_truth):
    """Without the restoration the blurred femur reads several % low (the test bites)."""
    ph = _femur_phantom(2.0, "LPS")
    v = femur_values(ph.ct, ph.labels, "left", SCANNER.bmd_for_hu, restore=False)
    for q in QUANTITIES:
        assert v[q] < 0.95 * femur_truth[q], q


def test_restoration_is_neutral_on_a_sharp_image():
    ph = _femur_phantom(0.0, "oblique")
    mask = ph.labels.mask("femur_left")
    pv = restore_edge_mineral(ph.ct.hu, mask, ph.geometry, SCANNER.bmd_for_hu,
                              labels=ph.labels, femur_key="femur_left")
    assert abs(pv.restored_fraction) < 0.002
    assert pv.background_mg_cm3 == pytest.approx(SCANNER.bmd_for_hu(30.0), abs=3.0)
    plain = restore_edge_mineral(ph.ct.hu, mask, ph.geometry, SCANNER.bmd_for_hu, margin_mm=0)
    np.testing.assert_allclose(plain.density_mg_cm3,
                               SCANNER.bmd_for_hu(ph.ct.hu[mask].astype(np.float64)), rtol=1e-5)


# -- other bones are not picked up -----------------------------------------------------------
def test_acetabulum_not_picked_up():
    """2 mm joint space, FWHM 2 mm: the same values with and without the hip bone."""
    with_hip = _values(2.0, "LPS")
    without = _values(2.0, "LPS", ("femur",))
    for q in QUANTITIES:
        assert with_hip[q] == pytest.approx(without[q], rel=0.005), q


def test_bone_in_front_of_the_neck_not_picked_up():
    """A dense bone 2.5 mm anterior of the femoral neck (over the neck ROI in the DXA
    view), FWHM 2 mm, RAS grid: aBMD and vBMD unchanged within 0.5 %; counting it
    (no other-structure exclusion) would not be."""
    fem = FemurPhantom(FemurSpec(side="left", anteversion_deg=15.0), SCANNER)
    t = fem.truth()
    sj = float(np.sqrt(t.head_radius_mm ** 2 - t.neck_radius_mm ** 2))
    anterior = np.cross(t.neck_axis, t.shaft_axis)
    anterior = -anterior if anterior[1] > 0 else anterior
    anterior /= np.linalg.norm(anterior)
    r = 6.0
    centre = (t.head_centre_mm + (sj + 5.0) * t.neck_axis
              + (t.neck_radius_mm + 2.5 + r) * anterior)
    blob = SolidComponent("hip_left", Ellipsoid(tuple(centre), (r, r, r)),
                          float(SCANNER.hu_for_bmd(600.0)))
    lo, hi = fem.bounds_mm()
    lo, hi = np.minimum(lo, centre - r), np.maximum(hi, centre + r)
    geom = grid_around(lo, hi, (1.0, 1.0, 1.0), ORIENTATIONS["RAS"])
    vals = {}
    for name, comps in (("femur", [fem]), ("femur+bone", [blob, fem])):
        ct, labels = rasterize(comps, geom)
        hu = blur_hu(ct.hu, geom, 2.0) + np.random.default_rng(1).normal(0, 10, geom.shape)
        ct = CTImage(hu.astype(np.float32), geom)
        vals[name] = femur_values(ct, labels, "left", SCANNER.bmd_for_hu)
        if name == "femur+bone":
            vals["unprotected"] = femur_values(ct, labels, "left", SCANNER.bmd_for_hu,
                                               use_labels=False)
    for q in ("abmd_femoral_neck", "vbmd_neck", "abmd_total_hip"):
        assert vals["femur+bone"][q] == pytest.approx(vals["femur"][q], rel=0.005), q
    assert abs(vals["unprotected"]["abmd_femoral_neck"] / vals["femur"]["abmd_femoral_neck"]
               - 1) > 0.01


# -- lumbar trabecular vBMD ------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
@pytest.mark.parametrize("fwhm", [0.7, 2.0])
def test_lumbar_trabecular_vbmd_when_blurred(fwhm, orientation):
    ph = make_phantom(fov_mm=((-45.0, -10.0, 110.0), (45.0, 115.0, 195.0)),
                      spacing_mm=(0.9, 0.9, 1.2), orientation=orientation, psf_fwhm_mm=fwhm,
                      bones=("vertebrae",), vertebra_bmd_mg_cm3=100.0, vessels=False,
                      muscles=())
    res = analyse_spine(ph.ct, ph.labels, CAL)["vertebrae_L3"]
    assert res.vbmd_mg_cm3 == pytest.approx(100.0, rel=0.02)


# -- the real measurement path --------------------------------------------------------------
@pytest.mark.parametrize("fwhm, orientation", [(2.0, "LPS"), (1.2, "oblique")])
def test_measure_femurs_restores_blurred_mineral(femur_truth, fwhm, orientation):
    """measure_femurs (the path measure/analyze take) applies the correction: a blurred
    femur reads within 2 % of the analytic truth. The calibration line is the phantom's
    own, declared on the hydroxyapatite scale so that no material conversion applies."""
    from CTMuscleBoneLib.femur import measure_femurs

    ph = _femur_phantom(fwhm, orientation)
    cal_ha = Calibration("phantom", "HA", SCANNER.slope_mg_cm3_per_hu,
                         SCANNER.intercept_mg_cm3, 1.0, 5, "synthetic truth")
    out = measure_femurs(ph.ct, ph.labels, cal_ha, keys=("femur_left",))
    rows = {r.quantity: r.value for r in out.rows if r.structure == "femur_left"}
    for q in ("abmd_total_hip", "abmd_femoral_neck", "vbmd_neck"):
        assert rows[q] is not None, q
        assert abs(rows[q] - femur_truth[q]) / femur_truth[q] < 0.02, (q, rows[q])
