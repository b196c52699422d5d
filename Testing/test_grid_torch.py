"""Model-grid volumes onto the CT grid with torch (the GPU path), against SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CTMuscleBoneLib.image import Geometry  # noqa: E402
from CTMuscleBoneLib.segmentation.grid_torch import (  # noqa: E402
    argmax_to_grid,
    index_affine,
    map_to_grid,
)
from CTMuscleBoneLib.segmentation.preprocess import resample  # noqa: E402


def _rotation(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.eye(3)[[1, 2, 0]],
    "oblique": _rotation(10.0, -7.0, 20.0),
}
SOURCE = Geometry((20, 24, 18), (2.0, 2.5, 3.0), (-20.0, -30.0, -25.0), np.eye(3))


def _target(direction: np.ndarray) -> Geometry:
    """A finer grid centred on the source's centre, overhanging it (outside voxels)."""
    shape, spacing = (50, 40, 45), (0.9, 1.1, 1.3)
    centre = SOURCE.index_to_physical((np.array(SOURCE.shape) - 1) / 2.0)
    half = direction @ (np.array(spacing) * (np.array(shape) - 1) / 2.0)
    return Geometry(shape, spacing, tuple(np.asarray(centre) - half), direction)


def test_index_affine_maps_voxel_centres_through_physical_space():
    tgt = _target(DIRECTIONS["oblique"])
    a, b = index_affine(SOURCE, tgt)
    i_t = np.array([3.0, 7.0, 11.0])
    phys = tgt.index_to_physical(i_t)
    i_s = a @ i_t + b
    np.testing.assert_allclose(SOURCE.index_to_physical(i_s), phys, atol=1e-9)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_map_and_argmax_equal_simpleitk_in_every_orientation(name):
    rng = np.random.default_rng(0)
    tgt = _target(DIRECTIONS[name])
    m = rng.random(SOURCE.shape).astype(np.float32)
    ref = resample(m, SOURCE, tgt, "linear", 0.0)
    got = map_to_grid(torch.from_numpy(m), SOURCE, tgt)
    assert 0.0 < (ref == 0).mean() < 0.6  # the target overhangs the source
    np.testing.assert_allclose(got, ref, atol=1e-5)

    p = rng.random((5, *SOURCE.shape)).astype(np.float32)
    lut = np.array([0, 3, 5, 7, 9])
    prob = np.stack([resample(p[c], SOURCE, tgt, "linear", 0.0) for c in range(5)])
    expected = lut[prob.argmax(0)].astype(np.uint8)
    expected[(prob == 0).all(0)] = 0
    labels = argmax_to_grid(torch.from_numpy(p), SOURCE, tgt, lut)
    assert labels.dtype == np.uint8 and labels.shape == tgt.shape
    assert (labels == expected).mean() > 0.9999


def test_small_slabs_give_the_same_result(monkeypatch):
    from CTMuscleBoneLib.segmentation import grid_torch

    rng = np.random.default_rng(1)
    tgt = _target(DIRECTIONS["RAS"])
    p = torch.from_numpy(rng.random((4, *SOURCE.shape)).astype(np.float32))
    lut = np.array([0, 1, 2, 3])
    whole = argmax_to_grid(p, SOURCE, tgt, lut)
    monkeypatch.setattr(grid_torch, "SLAB_ELEMENTS", 4 * 40 * 45 * 3)  # 3 slices a slab
    np.testing.assert_array_equal(argmax_to_grid(p, SOURCE, tgt, lut), whole)
