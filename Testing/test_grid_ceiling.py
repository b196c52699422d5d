"""The Dice ceiling of a model grid (:mod:`CTMuscleBoneLib.segmentation.grid_ceiling`).

Truth: two cylinders along the body axis, radius 6 mm (a gracilis-sized muscle) and
20 mm, on a 1 mm CT stored in two orientations, and on a 1.94 mm CT (a model voxel of
3 mm is 1.55 CT voxels: no whole-voxel box fits it). On a model grid equal to the CT grid the
ceiling is exactly 1; on a 3 mm grid the thin cylinder's ceiling falls, less with the
probability resampling ``predict`` uses than with nearest-neighbour labels, and less for
the thick cylinder (its boundary is a smaller fraction of its volume).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.anatomy import BY_KEY  # noqa: E402
from CTMuscleBoneLib.image import Geometry, LabelMap  # noqa: E402
from CTMuscleBoneLib.segmentation.config import InputConfig  # noqa: E402
from CTMuscleBoneLib.segmentation.grid_ceiling import grid_ceiling  # noqa: E402
from CTMuscleBoneLib.segmentation.partial_volume import partial_volume_sigma  # noqa: E402

THIN, THICK = "gracilis_left", "femur_left"
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])


def _cylinders(direction: np.ndarray, spacing_mm: float = 1.0) -> LabelMap:
    """Cylinders along z (LPS): radius 6 mm at x = -30, 20 mm at x = 25 (mm)."""
    shape_lps = tuple(int(round(e / spacing_mm)) for e in (120.0, 70.0, 40.0))
    # storage axes: the LPS axes permuted / flipped by ``direction``; the grid covers
    # x -60..60, y -35..35, z 0..40 mm
    inv = np.linalg.inv(direction)
    lo = np.array([-60.0, -35.0, 0.0])
    hi = lo + (np.array(shape_lps) - 1) * spacing_mm
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])
    idx = corners @ inv.T / spacing_mm  # index coordinates up to a shift
    origin_idx = idx.min(axis=0)
    shape = tuple(int(round(s)) + 1 for s in idx.max(axis=0) - origin_idx)
    origin = direction @ origin_idx * spacing_mm
    g = Geometry(shape, (spacing_mm,) * 3, tuple(origin), direction)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = g.index_to_physical(ijk.reshape(-1, 3)).reshape(*shape, 3)
    arr = np.zeros(shape, np.uint8)
    thin, thick = BY_KEY[THIN].label_value, BY_KEY[THICK].label_value
    arr[np.hypot(xyz[..., 0] + 30.0, xyz[..., 1] - 2.3) <= 6.0] = thin
    arr[np.hypot(xyz[..., 0] - 25.0, xyz[..., 1] + 1.7) <= 20.0] = thick
    return LabelMap(arr, g, {thin: THIN, thick: THICK}, source="test cylinders")


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["LPS", "permuted"])
def test_ceiling_is_one_on_the_ct_grid_and_falls_with_a_coarser_grid(direction):
    ref = _cylinders(direction)
    same = grid_ceiling(ref, InputConfig(spacing_mm=(1.0, 1.0, 1.0)))
    assert same == {THIN: 1.0, THICK: 1.0}
    coarse = InputConfig(spacing_mm=(3.0, 3.0, 3.0))
    prob = grid_ceiling(ref, coarse)
    near = grid_ceiling(ref, coarse, label_resampling="nearest")
    # measured 0.96-0.98 (thin) and >= 0.99 (thick); stated tolerance: a 3 mm grid
    # costs the 6 mm cylinder 1-6 % and the 20 mm one under 2 %
    assert 0.94 <= prob[THIN] < 0.995
    assert 0.98 <= prob[THICK] < 1.0
    assert prob[THICK] > prob[THIN]
    assert near[THIN] < prob[THIN]  # the probability resampling recovers sub-voxel edges
    assert near[THIN] < 0.95


def test_ceiling_on_a_ct_grid_that_no_whole_voxel_box_fits():
    """1.94 mm CT, 3 mm model grid: the ceiling stays high (measured 0.98 and 1.0; a box
    of 2 CT voxels would shift the partial volumes by half a CT voxel)."""
    ref = _cylinders(np.eye(3), spacing_mm=1.94)
    prob = grid_ceiling(ref, InputConfig(spacing_mm=(3.0, 3.0, 3.0)))
    assert prob[THIN] >= 0.95
    assert prob[THICK] >= 0.98


def test_partial_volume_sigma_follows_the_model_axes_through_a_permutation():
    sigma = partial_volume_sigma(np.array([0.8, 0.8, 2.0]), PERMUTED,
                                 np.array([3.0, 1.5, 6.0]), np.eye(3))
    # the direction's columns: CT axis 0 runs along -z (6 mm / 0.8 mm), axis 1 along x
    # (3 mm / 0.8 mm), axis 2 along -y (1.5 mm / 2.0 mm); a box's sigma is width / sqrt(12)
    np.testing.assert_allclose(sigma, np.array([7.5, 3.75, 0.75]) / np.sqrt(12.0))
    with pytest.raises(ValueError, match="label_resampling"):
        grid_ceiling(_cylinders(np.eye(3)), InputConfig(), label_resampling="cubic")


def test_ceiling_command_names_a_bad_model_or_spacing_without_a_traceback(capsys):
    from CTMuscleBoneLib.segmentation.grid_ceiling import main

    assert main(["--model", "no-such-model", "--phantoms", "0"]) == 2
    assert "No model named 'no-such-model'" in capsys.readouterr().err
    assert main(["--spacing", "0", "--phantoms", "0"]) == 2
    assert "spacing_mm must be 3 positive numbers" in capsys.readouterr().err


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["LPS", "permuted"])
def test_nearest_training_targets_have_a_lower_ceiling_than_partial_volumes(direction):
    """A model that reproduced nearest-neighbour targets exactly would score what those
    targets score when brought back: below the partial volumes' ceiling for the thin
    cylinder (measured 0.897 against 0.963 on a 3 mm grid; 0.974 against 0.992 for the
    thick one), equal to 1 on the CT's own grid."""
    ref = _cylinders(direction)
    same = grid_ceiling(ref, InputConfig(spacing_mm=(1.0, 1.0, 1.0)), source="nearest_labels")
    assert same == {THIN: 1.0, THICK: 1.0}
    coarse = InputConfig(spacing_mm=(3.0, 3.0, 3.0))
    hard = grid_ceiling(ref, coarse, source="nearest_labels")
    soft = grid_ceiling(ref, coarse)
    assert hard[THIN] < soft[THIN] - 0.02
    assert hard[THICK] <= soft[THICK]
    assert hard[THIN] > 0.8
    with pytest.raises(ValueError, match="source"):
        grid_ceiling(ref, coarse, source="labels")
