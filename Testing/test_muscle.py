"""Muscle measurements against analytic truth on small synthetic volumes.

These tests build their own minimal analytic shapes (a sphere and a box) so that the
muscle arithmetic is checked independently of the full phantom; the full phantom is
used in test_measure_phantom.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.density_models import constant_density, hu_linear_density
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.muscle import (
    FAT_HU_RANGE,
    LEAN_HU_RANGE,
    group_totals,
    measure_muscles,
    muscle_rows,
    touched_faces,
)

GMED_L = BY_KEY["gluteus_medius_left"].label_value
GMAX_R = BY_KEY["gluteus_maximus_right"].label_value
ILIO_L = BY_KEY["iliopsoas_left"].label_value


def rotation(axis: str, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    if axis == "x":
        return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


#: Direction matrices (columns = LPS direction of array axes) for the same physical object.
ORIENTATIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]]),  # axes = (P, S, L)
    "oblique": rotation("z", 17) @ rotation("x", 11),
}


def grid_covering(half_extent_mm: float, spacing_mm: tuple[float, float, float],
                  direction: np.ndarray) -> Geometry:
    """A grid whose voxels cover the cube [-h, h]^3 (LPS mm), in any direction."""
    spacing = np.asarray(spacing_mm)
    # oblique grids need a larger box to contain the cube
    reach = half_extent_mm * (math.sqrt(3) if not np.allclose(np.abs(direction), np.round(
        np.abs(direction))) else 1.0)
    shape = tuple(int(math.ceil(2 * reach / s)) + 1 for s in spacing)
    centre_index = (np.asarray(shape) - 1) / 2.0
    origin = -(direction * spacing[None, :]) @ centre_index
    return Geometry(shape, tuple(spacing), tuple(origin), direction)


def physical_points(g: Geometry) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), axis=-1)
    return g.index_to_physical(idx)


def sphere_case(direction: np.ndarray, spacing=(1.0, 1.0, 1.0), radius_mm=20.0, seed=0,
                muscle_hu=50.0, noise_sd=10.0):
    g = grid_covering(28.0, spacing, direction)
    pts = physical_points(g)
    inside = np.linalg.norm(pts - np.array([2.0, -3.0, 1.0]), axis=-1) <= radius_mm
    labels = np.zeros(g.shape, np.int16)
    labels[inside] = GMED_L
    rng = np.random.default_rng(seed)
    hu = np.where(inside, muscle_hu, -100.0) + rng.normal(0, noise_sd, g.shape)
    ct = CTImage(hu.astype(np.float32), g)
    lm = LabelMap(labels, g, {GMED_L: "gluteus_medius_left"}, source="test")
    return ct, lm


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_sphere_volume_and_hu_in_every_orientation(name: str) -> None:
    ct, lm = sphere_case(ORIENTATIONS[name])
    (m,) = measure_muscles(ct, lm)
    analytic_cm3 = 4.0 / 3.0 * math.pi * 20.0**3 / 1000.0
    assert m.volume_cm3 == pytest.approx(analytic_cm3, rel=0.01)
    assert abs(m.mean_hu - 50.0) < 1.0
    assert m.sd_hu == pytest.approx(10.0, rel=0.05)
    assert m.mass_g == pytest.approx(m.volume_cm3 * 1.06, rel=1e-12)
    assert not m.partial


def test_same_numbers_across_orientations() -> None:
    vols = [measure_muscles(*sphere_case(d))[0].volume_cm3 for d in ORIENTATIONS.values()]
    assert max(vols) / min(vols) - 1 < 0.01


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (1.5, 1.0, 0.7)])
def test_anisotropic_spacing(spacing) -> None:
    ct, lm = sphere_case(np.eye(3), spacing=spacing)
    (m,) = measure_muscles(ct, lm)
    assert m.volume_cm3 == pytest.approx(4.0 / 3.0 * math.pi * 8.0, rel=0.02)


def box_case(fat_voxels: int) -> tuple[CTImage, LabelMap, int]:
    g = Geometry((30, 30, 30), (1.0, 1.0, 2.0))
    labels = np.zeros(g.shape, np.int16)
    labels[5:25, 5:25, 5:15] = GMAX_R  # 20 x 20 x 10 voxels = 8 cm3
    hu = np.full(g.shape, -1000.0)
    hu[labels == GMAX_R] = 60.0
    idx = np.flatnonzero(labels.ravel() == GMAX_R)
    hu.ravel()[idx[:fat_voxels]] = -100.0
    ct = CTImage(hu, g)
    return ct, LabelMap(labels, g, {GMAX_R: "gluteus_maximus_right"}), idx.size


def test_fat_fraction_lean_volume_and_mass_exact() -> None:
    ct, lm, n = box_case(fat_voxels=1000)
    (m,) = measure_muscles(ct, lm)
    assert n == 4000
    assert m.volume_cm3 == pytest.approx(8.0)
    assert m.fat_fraction == pytest.approx(0.25)
    assert m.lean_fraction == pytest.approx(0.75)
    assert m.fat_volume_cm3 == pytest.approx(2.0)
    assert m.lean_volume_cm3 == pytest.approx(6.0)
    assert m.mean_hu == pytest.approx(0.75 * 60 - 0.25 * 100)
    assert m.mass_g == pytest.approx(8.0 * 1.06)
    assert m.lean_mass_g == pytest.approx(6.0 * 1.06)


def test_hu_linear_density_mass() -> None:
    ct, lm, _ = box_case(fat_voxels=1000)
    (m,) = measure_muscles(ct, lm, hu_linear_density)
    # 3000 voxels at 60 HU (1.06 g/cm3) + 1000 at -100 HU (0.90 g/cm3), 2 mm3 each
    assert m.mass_g == pytest.approx((3000 * 1.06 + 1000 * 0.90) * 0.002)


def test_windows_are_the_published_ones() -> None:
    assert FAT_HU_RANGE == (-190.0, -30.0)
    assert LEAN_HU_RANGE == (-29.0, 150.0)
    assert constant_density.constant_g_cm3 == 1.06


def test_boundary_hu_values_are_classified_inclusively() -> None:
    g = Geometry((4, 1, 1), (1.0, 1.0, 1.0))
    hu = np.array([-190.0, -30.0, -29.0, 150.0]).reshape(4, 1, 1)
    labels = np.full((4, 1, 1), GMED_L, np.int16)
    padded_g = Geometry((6, 3, 3), (1.0, 1.0, 1.0))
    hu_p = np.full((6, 3, 3), -1000.0)
    hu_p[1:5, 1:2, 1:2] = hu
    lab_p = np.zeros((6, 3, 3), np.int16)
    lab_p[1:5, 1:2, 1:2] = labels
    (m,) = measure_muscles(CTImage(hu_p, padded_g),
                           LabelMap(lab_p, padded_g, {GMED_L: "gluteus_medius_left"}))
    assert m.fat_fraction == pytest.approx(0.5)
    assert m.lean_fraction == pytest.approx(0.5)
    assert m.other_fraction == pytest.approx(0.0)
    del g


@pytest.mark.parametrize("name", list(ORIENTATIONS)[:3])
def test_partial_flag_names_the_cut_face(name: str) -> None:
    direction = ORIENTATIONS[name]
    g = Geometry((20, 20, 20), (2.0, 2.0, 2.0), (0, 0, 0), direction)
    labels = np.zeros(g.shape, np.int16)
    # find the array axis and end that point superior in this orientation
    axis, sign = g.axis_for("superior")
    sl = [slice(5, 15)] * 3
    sl[axis] = slice(10, 20) if sign > 0 else slice(0, 10)
    labels[tuple(sl)] = ILIO_L
    ct = CTImage(np.zeros(g.shape), g)
    (m,) = measure_muscles(ct, LabelMap(labels, g, {ILIO_L: "iliopsoas_left"}))
    assert m.partial
    assert m.cut_faces == ("superior",)
    assert any("partial" in f and "superior" in f for f in m.flags)
    assert touched_faces(labels == ILIO_L, g) == ("superior",)


def test_group_totals_and_partial_propagation() -> None:
    g = Geometry((40, 20, 20), (1.0, 1.0, 1.0))
    labels = np.zeros(g.shape, np.int16)
    labels[2:10, 2:10, 2:10] = GMED_L  # 512 voxels, inside
    labels[20:30, 2:10, 2:10] = GMAX_R  # 640 voxels, inside
    labels[32:40, 2:10, 2:10] = ILIO_L  # touches the last x slice: partial
    hu = np.where(labels > 0, 50.0, -1000.0)
    lm = LabelMap(labels, g, {GMED_L: "gluteus_medius_left", GMAX_R: "gluteus_maximus_right",
                              ILIO_L: "iliopsoas_left"})
    measures = measure_muscles(CTImage(hu, g), lm)
    totals = group_totals(measures)
    assert totals["gluteal_total"]["volume_cm3"] == pytest.approx(1.152)
    assert totals["gluteal_left"]["volume_cm3"] == pytest.approx(0.512)
    assert not totals["gluteal_total"]["partial"]
    assert totals["hip_flexor_left"]["partial"]
    assert totals["lower_limb_total"]["volume_cm3"] == pytest.approx(1.664)
    assert totals["lower_limb_total"]["mass_g"] == pytest.approx(1.664 * 1.06)
    assert totals["lower_limb_total"]["partial"]
    rows = muscle_rows(measures, constant_density)
    ll = [r for r in rows if r.structure == "lower_limb_total" and r.quantity == "mass"][0]
    assert any("partial" in f for f in ll.flags)


def test_non_muscle_structures_are_not_measured_as_muscle() -> None:
    g = Geometry((10, 10, 10), (1.0, 1.0, 1.0))
    labels = np.zeros(g.shape, np.int16)
    labels[2:5, 2:5, 2:5] = 1  # femur_left
    lm = LabelMap(labels, g, {1: "femur_left"})
    assert measure_muscles(CTImage(np.zeros(g.shape), g), lm) == []
