"""Tests of the synthetic phantoms against their analytic truth.

Small fields of view and coarse spacing keep the file fast; 1 mm only where the 1 %
volume tolerance needs it.
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import structure
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.phantoms import (
    REORIENT_EXAMPLES,
    PaintBuffer,
    PhantomSpec,
    geometry_for,
    make_phantom,
)
from CTMuscleBoneLib.phantoms import shapes as S
from CTMuscleBoneLib.phantoms.body import BodyComponent
from CTMuscleBoneLib.phantoms.builder import (
    femur_components,
    muscle_components,
    shaft_lines,
    vertebra_components,
    vessel_components,
)
from CTMuscleBoneLib.phantoms.muscles import MUSCLE_BASES
from CTMuscleBoneLib.phantoms.pelvis import pelvis_components
from CTMuscleBoneLib.phantoms.rasterize import voxel_centres_mm

#: A field of view around the left hip (LPS mm), used by several tests.
LEFT_HIP_FOV = ((30.0, -100.0, -60.0), (200.0, 130.0, 120.0))


def physical_z(geometry) -> np.ndarray:  # noqa: ANN001
    """LPS z (mm) of every voxel centre, array of geometry.shape."""
    pts = voxel_centres_mm(geometry, (0, 0, 0), geometry.shape)
    return pts[:, 2].reshape(geometry.shape)


@pytest.fixture(scope="module")
def hip2() -> object:
    """Left hip at 2 mm with 15 % fat in the gluteus maximus, none in the medius."""
    return make_phantom(region="hip", fov_mm=LEFT_HIP_FOV, spacing_mm=2.0, seed=3,
                        muscle_fat_fraction=0.0,
                        muscle_fat_fractions={"gluteus_maximus": 0.15, "iliopsoas": 0.3})


# -- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [
    S.Ellipsoid((1.0, 2.0, 3.0), (10.0, 6.0, 4.0), S.rotation_about("y", 30.0)),
    S.EllipticCylinder((0.0, 0.0, 0.0), (8.0, 5.0), 12.0, S.rotation_about("x", 40.0)),
    S.Box((0.0, 5.0, 0.0), (6.0, 4.0, 9.0), S.rotation_about([1.0, 1.0, 0.0], 25.0)),
    S.Capsule((0.0, 0.0, 0.0), (10.0, 15.0, -5.0), 4.0),
    S.SweptEllipse((3.0, -2.0), (9.0, 5.0), -10.0, 20.0, slope_xy=(0.3, -0.2), angle_deg=30.0),
    S.SphericalShellCap((0.0, 0.0, 0.0), 8.0, 12.0, (1.0, -0.5, 1.0)),
])
def test_shape_volume_and_bounds_match_monte_carlo(shape) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    lo, hi = shape.bounds_mm()
    pts = rng.uniform(lo - 2, hi + 2, size=(400_000, 3))
    inside = shape.contains(pts)
    box = np.prod(hi - lo + 4)
    assert inside.mean() * box == pytest.approx(shape.volume_mm3, rel=0.02)
    p_in = pts[inside]
    assert np.all(p_in >= lo - 1e-9) and np.all(p_in <= hi + 1e-9)


# -- geometry ---------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", REORIENT_EXAMPLES)
def test_geometry_for_covers_box(orientation: str) -> None:
    lo, hi = np.array([-20.0, -10.0, 5.0]), np.array([30.0, 25.0, 40.0])
    g = geometry_for(lo, hi, (1.5, 2.0, 2.5), orientation)
    idx = g.physical_to_index(np.array([[x, y, z] for x in (lo[0], hi[0])
                                        for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]))
    assert np.all(idx >= -0.5 - 1e-9) and np.all(idx <= np.array(g.shape) - 0.5 + 1e-9)
    assert g.spacing_mm == (1.5, 2.0, 2.5)


def test_bad_spec_raises_input_error() -> None:
    with pytest.raises(InputError):
        make_phantom(region="knee")
    with pytest.raises(InputError):
        make_phantom(orientation="XYZ")
    with pytest.raises(InputError):
        make_phantom(region="hip", metal=("femoral_stem_middle",))


# -- volumes -----------------------------------------------------------------------------
@pytest.mark.parametrize(("fov", "n_muscles"), [
    (((40.0, -90.0, -210.0), (215.0, 85.0, -175.0)), 12),  # left thigh slab
    (((40.0, -80.0, -40.0), (168.0, 115.0, 112.0)), 4),  # left hip: glutei, iliopsoas
    (((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)), 2),  # left lumbar: psoas, erector spinae
], ids=["thigh", "hip", "lumbar"])
def test_muscle_voxel_volume_within_1_percent_at_1mm(fov, n_muscles: int) -> None:  # noqa: ANN001
    p = make_phantom(fov_mm=fov, spacing_mm=1.0, sides=("left",), noise_sd_hu=0.0)
    checked = 0
    for key, t in p.truth.structures.items():
        if t.group != "muscle" or not t.volume_in_fov_cm3:
            continue
        assert t.voxel_volume_cm3 == pytest.approx(t.volume_in_fov_cm3, rel=0.01), key
        assert p.labels.mask(key).sum() == t.voxel_count
        checked += 1
    assert checked == n_muscles
    assert p.truth.overwrites == {}


def test_every_muscle_checked_somewhere() -> None:
    # the three 1 mm fields of view above hold (at least part of) every left muscle
    spec = PhantomSpec(sides=("left",))
    fovs = [np.array(f) for f in (((40.0, -90.0, -210.0), (215.0, 85.0, -175.0)),
                                  ((40.0, -80.0, -40.0), (168.0, 115.0, 112.0)),
                                  ((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)))]
    for m in muscle_components(spec, shaft_lines(femur_components(spec))):
        lo, hi = m.bounds_mm()
        assert any(np.all(lo[:2] >= f[0][:2]) and np.all(hi[:2] <= f[1][:2])
                   and lo[2] < f[1][2] and hi[2] > f[0][2] for f in fovs), m.key


# -- disjointness -----------------------------------------------------------------------
def _components(spec: PhantomSpec) -> list:
    femurs = femur_components(spec)
    shafts = shaft_lines(femurs)
    return [BodyComponent(spec.hu_fat, spec.hu_soft_tissue, shafts), *vessel_components(spec),
            *muscle_components(spec, shafts),
            *pelvis_components(spec.scanner, 220.0, 180.0), *vertebra_components(spec),
            *femurs]


@pytest.mark.parametrize("femur", [{}, {"neck_shaft_angle_deg": 120.0, "anteversion_deg": 30.0},
                                   {"neck_shaft_angle_deg": 140.0, "anteversion_deg": 0.0}])
def test_analytic_structures_are_disjoint(femur: dict) -> None:
    """No point lies in two labelled structures (random points in every pair's box)."""
    comps = _components(PhantomSpec(femur=femur))
    rng = np.random.default_rng(1)
    for i, a in enumerate(comps):
        for b in comps[i + 1:]:
            lo = np.maximum(a.bounds_mm()[0], b.bounds_mm()[0])
            hi = np.minimum(a.bounds_mm()[1], b.bounds_mm()[1])
            if np.any(hi <= lo):
                continue
            pts = rng.uniform(lo, hi, size=(10_000, 3))
            la, lb = [], []
            for comp, out in ((a, la), (b, lb)):
                buf = PaintBuffer(pts, np.zeros(len(pts), np.int16), np.zeros(len(pts), np.float32))
                comp.paint(buf)
                out.append(buf.labels != 0)
            both = la[0] & lb[0]
            assert not both.any(), (getattr(a, "key", type(a).__name__),
                                    getattr(b, "key", type(b).__name__), pts[both][:3])


def test_full_phantom_has_no_overwrites_and_all_labels() -> None:
    p = make_phantom(region="full", spacing_mm=4.0, calibration=True)
    assert p.truth.overwrites == {}
    present = set(p.labels.present_keys())
    for base in MUSCLE_BASES:
        assert {f"{base}_left", f"{base}_right"} <= present
    for key in ("hip_left", "hip_right", "sacrum", "subcutaneous_fat", "aorta",
                "vertebrae_L1", "vertebrae_L5", "femur_left", "femur_right",
                "calibration_rod_1"):
        assert key in present, key
    assert p.truth.notes == []


# -- HU, fat, noise ---------------------------------------------------------------------
def test_mean_hu_matches_set_value_with_noise(hip2) -> None:  # noqa: ANN001
    hu = hip2.ct.hu.astype(float)
    for key in ("gluteus_medius_left", "gluteus_maximus_left", "iliopsoas_left", "hip_left"):
        t = hip2.truth.structures[key]
        m = hip2.labels.mask(key)
        assert abs(hu[m].mean() - t.hu_set_mean) < 1.0, key
    lean = hu[hip2.labels.mask("gluteus_medius_left")]
    assert abs(lean.mean() - 50.0) < 1.0
    assert lean.std() == pytest.approx(10.0, rel=0.1)  # the noise
    assert hip2.truth.structures["gluteus_medius_left"].fat_fraction_realised == 0.0


def test_fat_fraction_realised_near_designed(hip2) -> None:  # noqa: ANN001
    hu = hip2.ct.hu.astype(float)
    for key, f in (("gluteus_maximus_left", 0.15), ("iliopsoas_left", 0.3)):
        t = hip2.truth.structures[key]
        assert t.fat_fraction_designed == f
        assert abs(t.fat_fraction_realised - f) < 0.03, key
        # what a measurement sees: voxels below -30 HU (IMAT threshold) in the muscle
        assert np.mean(hu[hip2.labels.mask(key)] < -30) == pytest.approx(
            t.fat_fraction_realised, abs=0.005)
        assert t.hu_set_mean == pytest.approx(
            (1 - t.fat_fraction_realised) * 50 - 100 * t.fat_fraction_realised, abs=0.01)


def test_same_phantom_in_four_orientations() -> None:
    results = {o: make_phantom(fov_mm=LEFT_HIP_FOV, spacing_mm=2.0, orientation=o,
                               sides=("left",), muscle_fat_fraction=0.1, seed=5)
               for o in REORIENT_EXAMPLES}
    ref = results["LPS"]
    # structures of > 40 cm3; the hip bone is left out: its 10 mm ilium plate at 2 mm
    # gains or loses a whole voxel layer (+-20 %) with the grid's position
    keys = [k for k, t in ref.truth.structures.items()
            if t.voxel_count * 8e-3 > 40.0 and k not in ("subcutaneous_fat", "hip_left")]
    assert "gluteus_maximus_left" in keys and "femur_left" in keys
    for o, p in results.items():
        assert p.truth.overwrites == {}
        assert p.ct.geometry.direction.tolist() != ref.ct.geometry.direction.tolist() or o == "LPS"
        hu = p.ct.hu.astype(float)
        for k in keys:
            t, t0 = p.truth.structures[k], ref.truth.structures[k]
            assert t.voxel_volume_cm3 == pytest.approx(t0.voxel_volume_cm3, rel=0.03), (o, k)
            if t0.volume_cm3 is not None and t0.volume_in_fov_cm3 is not None:
                assert t.voxel_volume_cm3 == pytest.approx(t0.volume_in_fov_cm3, rel=0.03)
            assert abs(hu[p.labels.mask(k)].mean() - t.hu_set_mean) < 1.5, (o, k)
            # muscles: fat voxels differ by sampling; femur: cortex partial sampling
            assert abs(t.hu_set_mean - t0.hu_set_mean) < max(3.0, 0.015 * t0.hu_set_mean), (o, k)


def test_anisotropic_spacing() -> None:
    p = make_phantom(fov_mm=((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)),
                     spacing_mm=(0.8, 1.2, 2.5), sides=("left",))
    t = p.truth.structures["autochthon_left"]
    assert p.ct.geometry.spacing_mm == (0.8, 1.2, 2.5)
    assert t.voxel_volume_cm3 == pytest.approx(t.volume_in_fov_cm3, rel=0.02)


# -- truncation, metal, determinism, metadata -------------------------------------------
@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_truncation_removes_cut_part(orientation: str) -> None:
    cut = -45.0  # above the lesser trochanter
    full = make_phantom(fov_mm=LEFT_HIP_FOV, spacing_mm=3.0, sides=("left",),
                        orientation=orientation)
    p = make_phantom(fov_mm=LEFT_HIP_FOV, spacing_mm=3.0, sides=("left",),
                     orientation=orientation, truncation=("inferior", cut))
    z = physical_z(p.ct.geometry)
    assert z[p.labels.array > 0].min() >= cut
    assert np.all(p.ct.hu[z < cut] < -900)  # air (plus noise) below the cut
    fem, fem0 = p.truth.structures["femur_left"], full.truth.structures["femur_left"]
    assert fem.truncated and 0 < fem.voxel_count < fem0.voxel_count
    assert not p.truth.structures["gluteus_medius_left"].truncated
    assert p.truth.fov_min_mm[2] == cut
    lt = np.asarray(p.truth.components["femur_left"]["lesser_trochanter_mm"])
    assert lt[2] < cut  # the lesser trochanter is cut away


def test_metal_implants() -> None:
    p = make_phantom(region="hip", fov_mm=LEFT_HIP_FOV, spacing_mm=2.0, sides=("left",),
                     metal=("femoral_stem_left",))
    metal = p.ct.hu > 2000
    assert metal.sum() > 50
    assert p.truth.metal["femoral_stem_left"]["voxels"] == metal.sum()
    assert set(np.unique(p.labels.array[metal])) == {structure("femur_left").label_value}
    clean = make_phantom(region="hip", fov_mm=LEFT_HIP_FOV, spacing_mm=2.0, sides=("left",))
    assert (clean.ct.hu > 2000).sum() == 0
    spine = make_phantom(fov_mm=((-60.0, 0.0, 130.0), (60.0, 100.0, 170.0)), spacing_mm=1.5,
                         metal=("pedicle_screw_L3",))
    assert spine.truth.metal["pedicle_screw_L3"]["labels"].get("vertebrae_L3", 0) > 0
    assert (spine.ct.hu > 2000).sum() > 0


def test_determinism_by_seed() -> None:
    kw = dict(fov_mm=((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)), spacing_mm=2.0,
              muscle_fat_fraction=0.2)
    a, b, c = make_phantom(seed=7, **kw), make_phantom(seed=7, **kw), make_phantom(seed=8, **kw)
    assert np.array_equal(a.ct.hu, b.ct.hu) and np.array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.ct.hu, c.ct.hu)
    assert np.array_equal(a.labels.array, c.labels.array)  # same anatomy, other noise / fat


def test_metadata_and_types() -> None:
    p = make_phantom(fov_mm=((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)), spacing_mm=3.0,
                     sex="M", height_m=1.72, age_years=64, dtype="float32", noise_sd_hu=0.0)
    md = p.ct.metadata
    assert (md.modality, md.kvp, md.patient_sex, md.patient_height_m, md.patient_age_years,
            md.source) == ("CT", 120.0, "M", 1.72, 64, "synthetic phantom")
    assert p.ct.hu.dtype == np.float32 and p.labels.source == "phantom ground truth"
    assert p.labels.structures[structure("autochthon_left").label_value] == "autochthon_left"
    assert set(np.unique(p.ct.hu[p.labels.mask("autochthon_left")])) <= {50.0, -100.0}
    assert make_phantom(fov_mm=((0.0, 0.0, 110.0), (60.0, 125.0, 150.0)),
                        spacing_mm=3.0).ct.hu.dtype == np.int16
