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

Score variants (:func:`structure_score_variants`): for each map M in
:data:`UNCERTAINTY_MAPS` and each region R of a predicted structure S, the mean of M
over R, named ``"<map>:<region>"`` (6 variants, :data:`SCORE_VARIANTS`):

* ``inside``: the voxels labelled S;
* ``band``: voxels within ``band_mm`` of the surface of S, both sides (voxels of S within
  ``band_mm`` of a non-S voxel, and non-S voxels within ``band_mm`` of S; Euclidean
  distance between voxel centres in mm), and always the voxels of S with a face
  neighbour outside S and the voxels outside S with a face neighbour in S (so a grid
  coarser than ``band_mm`` still has a one-voxel band on each side).

The review list ranks by one variant: ``InferenceConfig.review_map`` and
``review_region`` (:func:`review_from_variants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..anatomy import BY_KEY
from ..errors import InputError
from .config import REVIEW_REGIONS, UNCERTAINTY_MAPS

#: Names of the structure score variants, ``"<map>:<region>"``, maps outer.
SCORE_VARIANTS: tuple[str, ...] = tuple(
    f"{m}:{r}" for m in UNCERTAINTY_MAPS for r in REVIEW_REGIONS)

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


def two_class_tie_value(map_name: str, n_classes: int) -> float:
    """A map's value where the samples split evenly between two classes: the full scale of
    a heatmap that means the same on every case.

    With half of the T samples one-hot on one class and half on another (a coin flip
    between two structures), the mean softmax is (1/2, 1/2) on those two classes, so the
    predictive entropy is ln 2 nats, the expected entropy 0 and the mutual information
    ln 2; each of the two classes has a variance of 1/4 across the samples and the others
    0, so the class-averaged predictive variance is 1 / (2 C). Voxels more uncertain
    than that (ties among three or more classes) saturate the scale.

    Parameters
    ----------
    map_name : {'predictive_variance', 'predictive_entropy', 'mutual_information'}
    n_classes : int
        Output channels of the model, background included (C >= 2).

    Returns
    -------
    float
        In the map's units (variance: probability squared; entropy and mutual
        information: nats).
    """
    if map_name not in UNCERTAINTY_MAPS:
        raise InputError(f"Unknown uncertainty map '{map_name}'; expected one of "
                         f"{', '.join(UNCERTAINTY_MAPS)}.")
    if int(n_classes) < 2:
        raise InputError(f"A segmentation model has at least 2 classes, not {n_classes}.")
    if map_name == "predictive_variance":
        return 0.5 / int(n_classes)
    return float(np.log(2.0))


def variance_full_scale(models: Iterable[Mapping[str, Any]]) -> float | None:
    """The predictive variance's :func:`two_class_tie_value` for the segmentation model
    of a Results provenance (``provenance.models``), or None when none records its
    class count (``n_classes``)."""
    for m in models:
        n = m.get("n_classes") if m.get("kind") == "segmentation model" else None
        if isinstance(n, int) and not isinstance(n, bool) and n >= 2:
            return two_class_tie_value("predictive_variance", n)
    return None


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
        Ranking score: ``mean_inside`` (the structure-wise uncertainty of Hiasa et al.
        2020 / Soufi et al. 2025; the default) or ``mean_boundary`` (review region
        ``band``, see :func:`review_from_variants`); higher = review first.
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


def _structure_regions(
    labels: np.ndarray, spacing_mm: Sequence[float], keys: Iterable[str] | dict[int, str],
    band_mm: float,
) -> Iterator[tuple[int, str, tuple[slice, ...] | None, np.ndarray | None,
                    np.ndarray | None]]:
    """Per structure: (label value, key, box, inside mask, band mask) within its box.

    Absent structures give ``(value, key, None, None, None)``. The box is the
    structure's bounding box grown by ``band_mm`` + 1 voxel (clipped to the array).
    """
    if band_mm < 0:
        raise InputError(f"band_mm must be >= 0, got {band_mm}.")
    spacing = tuple(float(s) for s in spacing_mm)
    values = _label_values(keys)
    max_value = int(max(values)) if values else 0
    objects = ndimage.find_objects(np.where(labels > max_value, 0, labels).astype(np.int64),
                                   max_label=max_value) if max_value > 0 else []
    margin = [int(np.ceil(band_mm / s)) + 1 for s in spacing]
    for value, key in values.items():
        sl = objects[value - 1] if 0 < value <= len(objects) else None
        if sl is None:
            yield value, key, None, None, None
            continue
        box = tuple(
            slice(max(s.start - m, 0), min(s.stop + m, n))
            for s, m, n in zip(sl, margin, labels.shape, strict=True)
        )
        mask = labels[box] == value
        yield value, key, box, mask, boundary_band(mask, spacing, band_mm)


def _band_element(spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Structuring element of :func:`boundary_band`: the voxel offsets o with
    ``|o * spacing| <= radius_mm``, and the six face neighbours.

    Returns
    -------
    np.ndarray of bool, (2 r0 + 1, 2 r1 + 1, 2 r2 + 1), r_i = max(1, floor(radius /
    spacing_i))
    """
    r = [max(1, int(np.floor(radius_mm / float(s) + 1e-9))) for s in spacing_mm]
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    d2 = sum((g * float(s)) ** 2 for g, s in zip(grids, spacing_mm, strict=True))
    face = sum(np.abs(g) for g in grids) == 1
    return (d2 <= radius_mm ** 2 + 1e-9) | face


def boundary_band(mask: np.ndarray, spacing_mm: Sequence[float], band_mm: float
                  ) -> np.ndarray:
    """Voxels within ``band_mm`` of a mask's surface, on both sides.

    Inside voxels with a voxel outside the mask within ``band_mm`` (Euclidean, between
    voxel centres, in mm) and outside voxels with a mask voxel within ``band_mm``; at
    least the voxels on either side of the surface (face neighbours), so that a grid
    coarser than ``band_mm`` still has a band. The same set as thresholding the two
    Euclidean distance transforms (tested), by one erosion and one dilation with the
    ball of offsets within ``band_mm`` plus the face neighbours (voxels beyond the array
    count as neither inside nor outside, as in the distance transform).

    Parameters
    ----------
    mask : np.ndarray of bool, (n0, n1, n2)
    spacing_mm : 3 floats, mm
    band_mm : float, >= 0

    Returns
    -------
    np.ndarray of bool, mask.shape
    """
    se = _band_element(spacing_mm, band_mm)
    near_outside = ~ndimage.binary_erosion(mask, se, border_value=1)
    near_inside = ndimage.binary_dilation(mask, se)
    return (mask & near_outside) | (~mask & near_inside)


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
        structure (Euclidean distance between voxel centres), at least the one-voxel
        shells on both sides of the surface.

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
    voxel_cm3 = float(np.prod([float(s) for s in spacing_mm])) / 1000.0
    out: list[StructureUncertainty] = []
    for value, key, box, mask, band in _structure_regions(labels, spacing_mm, keys, band_mm):
        if box is None:
            out.append(StructureUncertainty(key, value, False, 0.0, None, None, None,
                                            map_name, band_mm))
            continue
        u = umap[box]
        mean_in = float(u[mask].mean())
        mean_band = float(u[band].mean()) if band.any() else None
        out.append(StructureUncertainty(key, value, True, int(mask.sum()) * voxel_cm3,
                                        mean_in, mean_band, mean_in, map_name, band_mm))
    return out


@dataclass(frozen=True)
class StructureScoreVariants:
    """All score variants of one predicted structure (see the module docstring).

    Attributes
    ----------
    key : str
    label_value : int
    present : bool
        False when no voxel carries the label (every score is then None).
    volume_cm3 : float
        Predicted volume on the grid the scores were computed on, cm^3.
    scores : dict[str, float or None]
        Variant name ``"<map>:<region>"`` -> mean of the map over the region (the map's
        unit: probability^2 for the variance, nats for the entropies).
    band_mm : float
    """

    key: str
    label_value: int
    present: bool
    volume_cm3: float
    scores: dict[str, float | None] = field(default_factory=dict)
    band_mm: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def structure_score_variants(
    label_array: np.ndarray,
    maps: Mapping[str, np.ndarray],
    spacing_mm: Sequence[float],
    keys: Iterable[str] | dict[int, str],
    band_mm: float = 2.0,
) -> list[StructureScoreVariants]:
    """Mean of every uncertainty map inside each structure and in its boundary band.

    The regions are computed once per structure and shared by the maps.

    Parameters
    ----------
    label_array : np.ndarray of int, (n0, n1, n2)
        Predicted labels.
    maps : mapping of map name -> np.ndarray of float, (n0, n1, n2)
        Voxel uncertainty maps on the same grid (usually the three of
        :data:`UNCERTAINTY_MAPS`).
    spacing_mm, keys, band_mm
        As :func:`structure_uncertainty`.

    Returns
    -------
    list of StructureScoreVariants
        In the order of ``keys``; ``scores`` has ``"<map>:inside"`` and ``"<map>:band"``
        for every map given (``band`` None when the band is empty).
    """
    labels = np.asarray(label_array)
    arrays = {name: np.asarray(m) for name, m in maps.items()}
    for name, m in arrays.items():
        if m.shape != labels.shape:
            raise InputError(f"Label array {labels.shape} and uncertainty map '{name}' "
                             f"{m.shape} differ in shape.")
    voxel_cm3 = float(np.prod([float(s) for s in spacing_mm])) / 1000.0
    out: list[StructureScoreVariants] = []
    for value, key, box, mask, band in _structure_regions(labels, spacing_mm, keys, band_mm):
        scores: dict[str, float | None] = {}
        for name, m in arrays.items():
            if box is None:
                scores[f"{name}:inside"] = scores[f"{name}:band"] = None
                continue
            u = m[box]
            scores[f"{name}:inside"] = float(u[mask].mean())
            scores[f"{name}:band"] = float(u[band].mean()) if band.any() else None
        out.append(StructureScoreVariants(
            key, value, box is not None,
            0.0 if mask is None else int(mask.sum()) * voxel_cm3, scores, band_mm))
    return out


def review_from_variants(variants: Iterable[StructureScoreVariants], map_name: str,
                         region: str = "inside") -> list[StructureUncertainty]:
    """The ranked review list whose ``score`` is the variant ``map_name:region``.

    ``mean_inside`` and ``mean_boundary`` are those of ``map_name``; raises InputError
    when the variants lack that map.
    """
    if region not in REVIEW_REGIONS:
        raise InputError(f"Review region '{region}' is not one of {REVIEW_REGIONS}.")
    items = []
    for v in variants:
        if v.present and f"{map_name}:inside" not in v.scores:
            raise InputError(f"The structure scores hold no map '{map_name}'; "
                             f"they have {sorted(v.scores)}.")
        mean_in = v.scores.get(f"{map_name}:inside")
        mean_band = v.scores.get(f"{map_name}:band")
        score = mean_in if region == "inside" else mean_band
        items.append(StructureUncertainty(v.key, v.label_value, v.present, v.volume_cm3,
                                          mean_in, mean_band, score, map_name, v.band_mm))
    return rank(items)


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
