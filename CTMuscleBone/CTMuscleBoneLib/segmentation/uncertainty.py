"""Monte-Carlo uncertainty: running statistics over samples, structure-wise review.

Pure array code (numpy; :class:`MCAccumulator` also accepts
torch tensors, as it uses only arithmetic, ``mean`` and ``sum``). No torch import.

Definitions (per voxel, over T Monte-Carlo samples of the softmax ``p_t``, C classes;
logarithms are natural, entropies in nats):

* predictive variance = (1 / C) sum_c Var_t[p_tc] (population variance, divisor T):
  the class-averaged variance used by the reference group (Hiasa et al. 2020);
* predictive entropy = H[mean_t p_t], H[p] = -sum_c p_c ln p_c (total uncertainty);
* mutual information = H[mean_t p_t] - mean_t H[p_t] (the epistemic part; >= 0).

Structure-wise uncertainty: the mean voxel uncertainty over a structure predicts
segmentation failure (Hiasa et al. 2020; Soufi et al., Sci Rep 15:125, 2025, AUROC >=
0.95). :func:`structure_uncertainty` reports it as ``score`` (the mean inside the
predicted structure) with, for the reviewer, the mean in a band around its boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..anatomy import BY_KEY
from ..errors import InputError

#: Probability floor inside logarithms (numerical guard only).
_EPS = 1e-12


def _is_torch(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "dim")


def entropy(p: Any, axis: int = 0) -> Any:
    """Entropy (nats) of distributions along ``axis``; numpy array or torch tensor."""
    if _is_torch(p):
        import torch

        return torch.special.entr(p).sum(dim=axis)
    p = np.asarray(p)
    return -(p * np.log(np.clip(p, _EPS, None))).sum(axis=axis)


class MCAccumulator:
    """Running statistics of Monte-Carlo softmax samples for one window or volume.

    ``update(probs)`` with ``probs`` of shape (k, C, ...) (k samples of C-class softmax).
    State (bounded whatever T): the running mean softmax (C, ...), the class-summed sum
    of squared deviations M2 (...) and the running sum of per-sample entropies (...).
    Batches are merged with Chan et al.'s parallel form of Welford's update:
    ``M2 = M2_a + M2_b + sum_c delta_c^2 n_a n_b / n``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: Any = None
        self.m2: Any = None
        self._entropy_sum: Any = None

    def update(self, probs: Any) -> None:
        k = int(probs.shape[0])
        if k == 0:
            return
        b_mean = probs.mean(0)
        b_m2 = (probs * probs).sum(0).sum(0) - k * (b_mean * b_mean).sum(0)
        h = entropy(probs, axis=1).sum(0)
        if self.count == 0:
            self.mean, self.m2, self._entropy_sum, self.count = b_mean, b_m2, h, k
            return
        n = self.count + k
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2 = self.m2 + b_m2 + (delta * delta).sum(0) * (self.count * k / n)
        self._entropy_sum = self._entropy_sum + h
        self.count = n

    @property
    def mean_probability(self) -> Any:
        """Mean softmax, shape (C, ...)."""
        return self.mean

    @property
    def predictive_variance(self) -> Any:
        """Class-averaged population variance across samples, shape (...), >= 0."""
        v = self.m2 / (self.count * self.mean.shape[0])
        return v.clamp(min=0) if _is_torch(v) else np.maximum(v, 0)

    @property
    def expected_entropy(self) -> Any:
        """mean_t H[p_t], shape (...)."""
        return self._entropy_sum / self.count

    @property
    def predictive_entropy(self) -> Any:
        """H[mean_t p_t], shape (...)."""
        return entropy(self.mean, axis=0)

    @property
    def mutual_information(self) -> Any:
        """H[mean p] - mean H[p_t], clipped at 0 against rounding, shape (...)."""
        mi = self.predictive_entropy - self.expected_entropy
        return mi.clamp(min=0) if _is_torch(mi) else np.maximum(mi, 0)

    @property
    def nbytes(self) -> int:
        total = 0
        for a in (self.mean, self.m2, self._entropy_sum):
            if a is not None:
                total += int(a.nelement() * a.element_size()) if _is_torch(a) else int(a.nbytes)
        return total


# -- structure-wise review -------------------------------------------------------------
@dataclass(frozen=True)
class StructureUncertainty:
    """Uncertainty of one predicted structure.

    Attributes
    ----------
    key : str
        Anatomy key.
    label_value : int
        Its value in the label array.
    present : bool
        False when the structure was expected but no voxel carries its label (a
        failure: it is listed first).
    volume_cm3 : float
        Predicted volume, cm^3.
    mean_inside : float or None
        Mean uncertainty over the structure's voxels (None when absent).
    mean_boundary : float or None
        Mean uncertainty in the band within ``band_mm`` of its boundary, both sides
        (dilation minus erosion by ``band_mm``).
    score : float or None
        Ranking score = ``mean_inside`` (the structure-wise uncertainty of Hiasa et al.
        2020 / Soufi et al. 2025); higher = review first.
    map_name : str
        Which uncertainty map was used.
    band_mm : float
    """

    key: str
    label_value: int
    present: bool
    volume_cm3: float
    mean_inside: float | None
    mean_boundary: float | None
    score: float | None
    map_name: str = "predictive_variance"
    band_mm: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label_values(keys: Iterable[str] | dict[int, str]) -> dict[int, str]:
    if isinstance(keys, dict):
        return {int(v): k for v, k in keys.items()}
    out: dict[int, str] = {}
    for k in keys:
        if k not in BY_KEY:
            raise InputError(f"'{k}' is not an anatomy key; see CTMuscleBoneLib.anatomy.")
        out[BY_KEY[k].label_value] = k
    return out


def structure_uncertainty(
    label_array: np.ndarray,
    uncertainty_map: np.ndarray,
    spacing_mm: Sequence[float],
    keys: Iterable[str] | dict[int, str],
    band_mm: float = 2.0,
    map_name: str = "predictive_variance",
) -> list[StructureUncertainty]:
    """Per-structure uncertainty summary.

    Parameters
    ----------
    label_array : np.ndarray of int, (n0, n1, n2)
        Predicted labels.
    uncertainty_map : np.ndarray of float, (n0, n1, n2)
        Voxel uncertainty on the same grid.
    spacing_mm : sequence of 3 float
        Voxel size, mm (distances for the band are physical).
    keys : iterable of anatomy keys, or dict label value -> key
        Structures to report (keys use their canonical label values).
    band_mm : float
        Half-width of the boundary band, mm: voxels of the structure within ``band_mm``
        of a non-structure voxel, and non-structure voxels within ``band_mm`` of the
        structure (Euclidean distance between voxel centres).

    Returns
    -------
    list of StructureUncertainty
        In the order of ``keys``.
    """
    labels = np.asarray(label_array)
    umap = np.asarray(uncertainty_map)
    if labels.shape != umap.shape:
        raise InputError(
            f"Label array {labels.shape} and uncertainty map {umap.shape} differ in shape."
        )
    if band_mm < 0:
        raise InputError(f"band_mm must be >= 0, got {band_mm}.")
    spacing = tuple(float(s) for s in spacing_mm)
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    values = _label_values(keys)
    max_value = int(max(values)) if values else 0
    objects = ndimage.find_objects(np.where(labels > max_value, 0, labels).astype(np.int64),
                                   max_label=max_value) if max_value > 0 else []
    margin = [int(np.ceil(band_mm / s)) + 1 for s in spacing]
    out: list[StructureUncertainty] = []
    for value, key in values.items():
        sl = objects[value - 1] if 0 < value <= len(objects) else None
        if sl is None:
            out.append(StructureUncertainty(key, value, False, 0.0, None, None, None,
                                            map_name, band_mm))
            continue
        box = tuple(
            slice(max(s.start - m, 0), min(s.stop + m, n))
            for s, m, n in zip(sl, margin, labels.shape, strict=True)
        )
        mask = labels[box] == value
        u = umap[box]
        n_vox = int(mask.sum())
        d_in = ndimage.distance_transform_edt(mask, sampling=spacing)
        d_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
        band = (mask & (d_in <= band_mm)) | (~mask & (d_out <= band_mm))
        mean_in = float(u[mask].mean())
        mean_band = float(u[band].mean()) if band.any() else None
        out.append(StructureUncertainty(key, value, True, n_vox * voxel_cm3, mean_in,
                                        mean_band, mean_in, map_name, band_mm))
    return out


def review_list(
    label_array: np.ndarray,
    uncertainty_map: np.ndarray,
    spacing_mm: Sequence[float],
    keys: Iterable[str] | dict[int, str],
    band_mm: float = 2.0,
    map_name: str = "predictive_variance",
) -> list[StructureUncertainty]:
    """Structures in the order a reviewer should check them.

    Absent structures (expected but not predicted) first, then by ``score``, highest
    first. Same parameters as :func:`structure_uncertainty`.
    """
    items = structure_uncertainty(label_array, uncertainty_map, spacing_mm, keys,
                                  band_mm=band_mm, map_name=map_name)
    return rank(items)


def rank(items: Iterable[StructureUncertainty]) -> list[StructureUncertainty]:
    """Sort: absent structures first, then by score, highest first (stable)."""
    return sorted(items, key=lambda s: (s.present, -(s.score or 0.0)))
