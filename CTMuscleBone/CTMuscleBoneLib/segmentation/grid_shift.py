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
- :func:`combine_on_grid`: the two halves' statistics on the unshifted grid, for the
  review scores and the uncertainty maps: the mean softmax, the class-averaged variance
  by the law of total variance, the predictive entropy of the combined mean and the
  mutual information from the halves' expected entropies. The shifted half is first
  interpolated (linearly) onto the unshifted grid.

Every array is in ITK index order; probabilities are float32 (C, n0, n1, n2).
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING

import numpy as np

from ..image import Geometry
from .preprocess import resample
from .uncertainty import entropy

if TYPE_CHECKING:
    from .inference import ModelGridOutput

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
    for prob, grid, _ in parts:
        ch = np.argmax(prob, axis=0).astype(np.int16)
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


def to_grid(values: np.ndarray, source: Geometry, target: Geometry,
            default_values: np.ndarray | float = 0.0) -> np.ndarray:
    """Channel volumes (C, ...) or one volume (...) resampled linearly onto ``target``.

    ``default_values``: per channel (C,) or one value, for target voxels outside
    ``source``.
    """
    if values.ndim == 3:
        return resample(np.ascontiguousarray(values, np.float32), source, target, "linear",
                        float(np.asarray(default_values).ravel()[0]))
    d = np.broadcast_to(np.asarray(default_values, dtype=float), (values.shape[0],))
    out = np.empty((values.shape[0], *target.shape), np.float32)
    for c in range(values.shape[0]):
        out[c] = resample(np.ascontiguousarray(values[c], np.float32), source, target,
                          "linear", float(d[c]))
    return out


def combine_on_grid(outputs: list[ModelGridOutput], grids: list[Geometry],
                    weights: list[float], background_channel: int = 0) -> ModelGridOutput:
    """Monte-Carlo statistics of several grids' sample groups, on the first grid.

    Each group k (``n_k`` samples, weight ``w_k = n_k / T``) brings its mean softmax
    ``p_k``, class-averaged variance ``V_k``, predictive entropy ``H_k`` and mutual
    information ``I_k``; groups on other grids are first interpolated (linearly) onto
    ``grids[0]``. Then, exactly as if the T samples were one group (population
    statistics, divisor T):

    - mean softmax ``p = sum_k w_k p_k``;
    - variance ``V = sum_k w_k V_k + (1/C) sum_c sum_k w_k (p_kc - p_c)^2`` (law of total
      variance, averaged over the C classes as :mod:`.uncertainty` does);
    - predictive entropy ``H = H(p)``;
    - mutual information ``I = H - sum_k w_k (H_k - I_k)`` (``H_k - I_k`` is the group's
      mean per-sample entropy), clipped at 0.

    Parameters
    ----------
    outputs : list of ModelGridOutput
        Numpy arrays (mean softmax (C, ...) and the three maps), one per grid.
    grids : list of Geometry
        The grid of each output; the result is on ``grids[0]``.
    weights : list of float
        Sample counts (or fractions) of the groups; normalised here.
    background_channel : int
        Channel whose probability is 1 outside a grid (air).

    Returns
    -------
    ModelGridOutput
        On ``grids[0]``; ``n_windows`` summed, ``accumulator_bytes`` the largest, timings
        summed per key.
    """
    from .inference import ModelGridOutput

    if not (len(outputs) == len(grids) == len(weights)) or not outputs:
        raise ValueError("outputs, grids and weights need the same non-zero length.")
    w = np.asarray(weights, dtype=np.float64)
    w /= w.sum()
    base = grids[0]
    n_classes = outputs[0].mean_probability.shape[0]
    default_p = np.zeros(n_classes)
    default_p[background_channel] = 1.0
    var = np.zeros(base.shape, np.float32)
    expected_h = np.zeros(base.shape, np.float32)
    for out, grid, wk in zip(outputs, grids, w, strict=True):
        same = grid is base
        maps = [out.predictive_variance, out.predictive_entropy, out.mutual_information]
        v, h, i = (m if same else to_grid(m, grid, base) for m in maps)
        var += np.float32(wk) * v
        expected_h += np.float32(wk) * (h - i)
    # channel by channel (no resampled copy of a whole (C, ...) softmax is held):
    # sum_k w_k (p_kc - p_c)^2 = sum_k w_k p_kc^2 - p_c^2
    mean = np.zeros((n_classes, *base.shape), np.float32)
    between = np.zeros(base.shape, np.float32)
    for c in range(n_classes):
        square = np.zeros(base.shape, np.float32)
        for out, grid, wk in zip(outputs, grids, w, strict=True):
            q = (out.mean_probability[c] if grid is base
                 else to_grid(out.mean_probability[c], grid, base, default_p[c]))
            mean[c] += np.float32(wk) * q
            square += np.float32(wk) * q * q
        between += np.maximum(square - mean[c] * mean[c], 0.0)
    var += between / np.float32(n_classes)
    del between
    h_mean = entropy(mean, axis=0).astype(np.float32)
    mi = np.maximum(h_mean - expected_h, 0.0).astype(np.float32)
    timings: dict[str, float] = {}
    for out in outputs:
        for k, v in out.timings_s.items():
            timings[k] = timings.get(k, 0.0) + v
    return ModelGridOutput(
        mean_probability=mean,
        predictive_variance=var,
        predictive_entropy=h_mean,
        mutual_information=mi,
        n_windows=sum(o.n_windows for o in outputs),
        accumulator_bytes=max(o.accumulator_bytes for o in outputs),
        timings_s=timings,
    )
