"""Sub-voxel shifted grids: Monte-Carlo samples split between two interleaved model grids.

``InferenceConfig.shifted_samples``: :func:`.inference.predict` runs the first
``ceil(T / 2)`` samples on the model grid and the other ``T // 2`` on the same grid moved
by half a model voxel along each in-plane axis (:func:`shift_vector`). Why: a model
trained against nearest-neighbour labels on a 3 mm grid learns one grid's aliased
labels; brought back to a finer CT grid they cannot be better than those targets (the
gracilis of the held-out phantoms: Dice 0.888 at best). The mean of two interleaved
grids' one-hot labels, interpolated onto the CT grid, approaches the structures' partial
volumes (0.965 for the same gracilis; docs/segmentation.md, "Sub-voxel shifted
samples"). This module holds the pieces:

- :func:`argmax_on_grids`: the label on the CT grid = argmax of the weighted mean of the
  grids' mean softmaxes, each interpolated linearly there (exact; only voxels near a
  boundary of some grid, or where the grids' nearest labels differ, are interpolated);
- :func:`combine_score_variants`: each half scores every structure on its own grid
  (its labels, its maps) and the review scores are the halves' weighted means.

The uncertainty maps on the CT grid are the halves' maps, each resampled from its own
grid, averaged with the same weights (:func:`.inference.predict`). The spread between
the two halves is not added to them: it measures where the grid falls, not what the
model does not know. (Combining the halves on one model grid instead, with the
shifted half interpolated onto it and the law of total variance, blurred every
boundary: on the perturbed phantoms the voxel calibration error rose 3-4 x and the
review scores ranked failures worse.)

Every array is in ITK index order; probabilities are float32 (C, n0, n1, n2).
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ..image import Geometry
from .preprocess import resample
from .uncertainty import StructureScoreVariants

#: Fraction of a model voxel the second grid is moved by along each shifted axis: half a
#: voxel puts its voxel centres midway between the first grid's.
SHIFT_FRACTION = 0.5


def shift_vector(spatial_dims: int) -> tuple[float, float, float]:
    """Shift of the second grid in model voxels along the model grid's axes (0, 1, 2).

    A 2-D model runs on the (axis 0, axis 1) planes, so only those move (moving the
    slices would give the network other slices, not the same anatomy at another
    sub-voxel position); a 3-D model moves along all three axes.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return (SHIFT_FRACTION, SHIFT_FRACTION, SHIFT_FRACTION if spatial_dims == 3 else 0.0)


def split_samples(mc_samples: int) -> tuple[int, int]:
    """Samples on the unshifted and on the shifted grid: (ceil(T / 2), T // 2)."""
    if mc_samples < 2:
        raise ValueError(f"shifted samples need T >= 2, got {mc_samples}.")
    return (mc_samples + 1) // 2, mc_samples // 2


def shifted_seed(seed: int) -> int:
    """Seed of the shifted grid's dropout masks (other masks than the unshifted half's:
    window seeds derive from ``(seed, window)`` with window indices < 2**31)."""
    ss = np.random.SeedSequence([int(seed), 1 << 31])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


_CORNERS = [np.asarray(c) for c in product((0, 1), repeat=3)]


def interpolate_at(values: np.ndarray, source: Geometry, continuous_index: np.ndarray
                   ) -> np.ndarray:
    """Trilinear interpolation of per-channel volumes at continuous source indices.

    Parameters
    ----------
    values : np.ndarray of float32, (C, m0, m1, m2)
        Volumes on the grid ``source``.
    source : Geometry
    continuous_index : np.ndarray of float, (n, 3)
        Points as continuous indices of ``source``; points beyond the grid take the
        nearest edge value (clamped).

    Returns
    -------
    np.ndarray of float32, (n, C)
    """
    m = np.asarray(values.shape[1:])
    lo = np.clip(np.floor(continuous_index).astype(np.int64), 0, np.maximum(m - 2, 0))
    f = np.clip(continuous_index - lo, 0.0, 1.0).astype(np.float32)
    acc = np.zeros((len(continuous_index), values.shape[0]), np.float32)
    for corner in _CORNERS:
        c = np.minimum(lo + corner, m - 1)
        w = np.prod(np.where(corner.astype(bool), f, 1.0 - f), axis=1)
        acc += w[:, None] * values[:, c[:, 0], c[:, 1], c[:, 2]].T
    return acc


def argmax_on_grids(
    parts: list[tuple[np.ndarray, Geometry, float]],
    target: Geometry,
    lut: np.ndarray,
    label_dtype: type = np.uint8,
    max_points: int = 1 << 17,
    channel_labels: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Label = argmax of the weighted mean of several grids' interpolated mean softmax.

    For one grid this is :func:`.inference.argmax_on_grid`. Exact shortcut: where the 8
    corners of the cell around a target voxel share one argmax channel on every grid,
    each grid's interpolated argmax is that channel, and so is the argmax of their
    weighted mean (a channel that leads in each summand leads in the sum). Only target
    voxels in some grid's boundary shell (its nearest model voxel has another channel in
    its 3 x 3 x 3 neighbourhood), or whose nearest-neighbour labels differ between the
    grids, are interpolated, in batches of ``max_points``.

    Parameters
    ----------
    parts : list of (mean_probability, grid, weight)
        ``mean_probability`` float32 (C, m0, m1, m2) on ``grid``; ``weight`` > 0 (e.g.
        the grid's number of samples; normalised here). Every part has the same C.
    target : Geometry
        The output grid (the CT grid or its body box).
    lut : np.ndarray of int, (C,)
        Output channel -> label value.
    label_dtype : numpy integer type
    channel_labels : list of np.ndarray of int, optional
        Each part's argmax channel on its grid, (m0, m1, m2) (computed when not given).

    Returns
    -------
    np.ndarray of label_dtype, target.shape
    """
    from scipy import ndimage

    if not parts:
        raise ValueError("argmax_on_grids needs at least one grid.")
    n_ch = {p.shape[0] for p, _, _ in parts}
    if len(n_ch) != 1:
        raise ValueError(f"every grid needs the same channels, got {sorted(n_ch)}.")
    weights = np.asarray([w for _, _, w in parts], dtype=np.float64)
    if np.any(weights <= 0):
        raise ValueError("weights must be > 0.")
    weights /= weights.sum()
    lut_d = np.asarray(lut).astype(label_dtype)
    first: np.ndarray | None = None
    todo = np.zeros(target.shape, bool)
    if channel_labels is None:
        channel_labels = [np.argmax(prob, axis=0) for prob, _, _ in parts]
    for (_, grid, _), channels in zip(parts, channel_labels, strict=True):
        ch = channels.astype(np.int16, copy=False)
        near = resample(lut_d[ch], grid, target, "nearest", 0, label_dtype)
        shell = ndimage.maximum_filter(ch, size=3) != ndimage.minimum_filter(ch, size=3)
        todo |= resample(shell.view(np.uint8), grid, target, "nearest", 0, np.uint8) > 0
        if first is None:
            first = near
        else:
            todo |= near != first
    assert first is not None
    labels = first
    idx = np.argwhere(todo)
    del todo
    for b0 in range(0, len(idx), max_points):
        ii = idx[b0:b0 + max_points]
        phys = target.index_to_physical(ii)
        acc = np.zeros((len(ii), next(iter(n_ch))), np.float32)
        for (prob, grid, _), w in zip(parts, weights, strict=True):
            acc += np.float32(w) * interpolate_at(prob, grid, grid.physical_to_index(phys))
        labels[ii[:, 0], ii[:, 1], ii[:, 2]] = lut_d[np.argmax(acc, axis=1)]
    return labels


def combine_score_variants(per_grid: list[list[StructureScoreVariants]],
                           weights: list[float]) -> list[StructureScoreVariants]:
    """One structure's score variants from several grids: their weighted means.

    Each grid's half of the samples scores every structure on its own grid, with its
    own labels and maps (:func:`.uncertainty.structure_score_variants`); the combined
    score of a variant is the weighted mean over the grids that scored it (weights
    renormalised over those), None when none did. A structure is present when any grid
    has it; its volume is the weighted mean (0 where absent). Structures keep the order
    of the first grid's list, then any only the others have.

    Parameters
    ----------
    per_grid : list of lists of StructureScoreVariants
    weights : list of float
        Samples (or fractions) per grid; > 0.
    """
    if len(per_grid) != len(weights) or not per_grid:
        raise ValueError("per_grid and weights need the same non-zero length.")
    w = np.asarray(weights, dtype=float)
    if np.any(w <= 0):
        raise ValueError("weights must be > 0.")
    w = w / w.sum()
    by_key: list[dict[str, StructureScoreVariants]] = [{v.key: v for v in g}
                                                       for g in per_grid]
    keys = list(dict.fromkeys(v.key for g in per_grid for v in g))
    out = []
    for key in keys:
        entries = [(d[key], wk) for d, wk in zip(by_key, w, strict=True) if key in d]
        first = entries[0][0]
        names = list(dict.fromkeys(n for e, _ in entries for n in e.scores))
        scores: dict[str, float | None] = {}
        for n in names:
            got = [(e.scores[n], wk) for e, wk in entries if e.scores.get(n) is not None]
            total = sum(wk for _, wk in got)
            scores[n] = (float(sum(v * wk for v, wk in got) / total) if got else None)
        out.append(StructureScoreVariants(
            key=key, label_value=first.label_value,
            present=any(e.present for e, _ in entries),
            volume_cm3=float(sum(e.volume_cm3 * wk for e, wk in entries)),
            scores=scores, band_mm=first.band_mm))
    return out
