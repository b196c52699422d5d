"""The synthetic femur: shape, painting and analytic truth checked independently."""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.phantoms.base import PaintBuffer, ScannerModel
from CTMuscleBoneLib.phantoms.femur import (
    Capsule,
    Ellipsoid,
    FemurPhantom,
    FemurSpec,
    Sphere,
    union_length,
)

SCANNER = ScannerModel()


def test_union_length_of_intervals():
    lo = np.array([[0.0, 1.0, 5.0], [3.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    hi = np.array([[2.0, 3.0, 6.0], [3.0, 3.0, 1.0], [4.0, 1.0, 2.0]])
    assert union_length(lo, hi) == pytest.approx([4.0, 1.0, 4.0])


@pytest.mark.parametrize("solid", [
    Sphere(np.array([1.0, 2.0, 3.0]), 5.0),
    Capsule(np.array([0.0, 0.0, 0.0]), np.array([10.0, 4.0, -3.0]), 3.0),
    Ellipsoid(np.array([0.0, 1.0, 0.0]), np.array([6.0, 3.0, 2.0]),
              np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]),
])
def test_chords_agree_with_inclusion(solid):
    """Chord length of each line equals the sampled length of points inside."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    o = rng.uniform(-8, 8, size=(40, 3)) - 30 * v
    lo, hi = solid.chord(o, v)
    t = np.linspace(0, 60, 24001)
    for n in range(len(o)):
        inside = solid.contains(o[n] + t[:, None] * v[None, :])
        assert (hi[n] - lo[n]) == pytest.approx(inside.sum() * (t[1] - t[0]), abs=0.01)


@pytest.mark.parametrize("side", ["left", "right"])
def test_landmark_geometry_matches_the_spec(side):
    spec = FemurSpec(side=side, neck_shaft_angle_deg=125.0, anteversion_deg=20.0)
    t = FemurPhantom(spec, SCANNER).truth()
    assert t.head_centre_mm[0] == (90.0 if side == "left" else -90.0)
    # neck-shaft angle: between the neck towards the head and the shaft distally
    ang = np.degrees(np.arccos((-t.neck_axis) @ (-t.shaft_axis)))
    assert ang == pytest.approx(125.0)
    # anteversion: the head lies anterior (-y) of the neck's horizontal direction
    h = -t.neck_axis - ((-t.neck_axis) @ t.shaft_axis) * t.shaft_axis
    assert np.degrees(np.arctan2(-h[1], abs(h[0]))) == pytest.approx(20.0)
    medial = -np.sign(t.head_centre_mm[0])  # the shaft is lateral of the head
    lt = t.lesser_trochanter_mm - t.neck_shaft_point_mm
    assert lt[2] < 0 and lt[1] > 0 and lt[0] * medial > 0  # inferior, posterior, medial
    jr = np.linalg.norm(t.head_neck_junction_mm - t.head_centre_mm)
    assert jr == pytest.approx(np.sqrt(22.0 ** 2 - 15.0 ** 2))


def test_paint_gives_the_set_density_through_the_scanner():
    ph = FemurPhantom(FemurSpec(side="right"), SCANNER)
    lo, hi = ph.bounds_mm()
    p = np.random.default_rng(1).uniform(lo, hi, size=(20000, 3))
    buf = PaintBuffer(p, np.zeros(len(p), np.int16), np.full(len(p), 40.0, np.float32))
    ph.paint(buf)
    dens = ph.density_at(p)
    inside = dens > 0
    assert inside.any() and (~inside).any()
    assert (buf.labels[inside] == BY_KEY["femur_right"].label_value).all()
    assert (buf.labels[~inside] == 0).all() and (buf.hu[~inside] == 40.0).all()
    np.testing.assert_allclose(SCANNER.bmd_for_hu(buf.hu[inside]), dens[inside], rtol=1e-5)
    assert set(np.unique(dens[inside])) == {200.0, 900.0}


def test_bounds_contain_the_femur():
    ph = FemurPhantom(FemurSpec(neck_shaft_angle_deg=140.0, anteversion_deg=30.0), SCANNER)
    lo, hi = ph.bounds_mm()
    p = np.random.default_rng(2).uniform(lo - 10, hi + 10, size=(100000, 3))
    outside = np.any((p < lo) | (p > hi), axis=1)
    assert not ph.contains(p[outside]).any()


def test_region_truth_against_monte_carlo():
    """Ray-integrated region vBMD and volume agree with random sampling."""
    ph = FemurPhantom(FemurSpec(side="left", anteversion_deg=25.0), SCANNER)
    t = ph.truth()
    lo, hi = ph.bounds_mm()
    p = np.random.default_rng(4).uniform(lo, hi, size=(1_000_000, 3))
    d = ph.density_at(p)
    box_cm3 = float(np.prod(hi - lo)) / 1000.0
    level = t.lesser_trochanter_mm[2] - 20.0
    inside = (d > 0) & (p[:, 2] >= level)
    assert inside.mean() * box_cm3 == pytest.approx(t.volume_cm3["total_proximal"], rel=0.01)
    assert d[inside].mean() == pytest.approx(t.vbmd_mg_cm3["total_proximal"], rel=0.01)
    # the neck band of a circular neck: exact cortical / trabecular area fractions
    s = ph.spec
    f_t = ((s.neck_radius_mm - s.cortical_thickness_mm) / s.neck_radius_mm) ** 2
    neck = f_t * s.trabecular_bmd_mg_cm3 + (1 - f_t) * s.cortical_bmd_mg_cm3
    assert t.vbmd_mg_cm3["neck"] == pytest.approx(neck, rel=1e-3)
    assert t.volume_cm3["neck"] == pytest.approx(np.pi * 15.0 ** 2 * 10.0 / 1000, rel=1e-3)


def test_analytic_projection_conserves_mass():
    """Sum of the projection x pixel area equals the femur's mass (vertical beam)."""
    ph = FemurPhantom(FemurSpec(), SCANNER)
    lo, hi = ph.bounds_mm()
    px = 0.5
    shape = (int((hi[0] - lo[0]) / px) + 2, int((hi[2] - lo[2]) / px) + 2)
    img = ph.projection(np.array([lo[0], lo[1] - 5, lo[2]]), np.array([1.0, 0, 0]),
                        np.array([0, 1.0, 0]), np.array([0, 0, 1.0]), shape, px)
    mass_g = img.sum() * (px / 10) ** 2
    p = np.random.default_rng(5).uniform(lo, hi, size=(1_000_000, 3))
    mc_g = ph.density_at(p).mean() * float(np.prod(hi - lo)) * 1e-6
    assert mass_g == pytest.approx(mc_g, rel=0.01)


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        FemurSpec(side="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FemurSpec(neck_radius_mm=23.0)
    with pytest.raises(ValueError):
        FemurSpec(cortical_thickness_mm=20.0)
