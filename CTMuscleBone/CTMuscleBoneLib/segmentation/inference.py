"""Monte-Carlo dropout inference of the Bayesian U-Net on a CT, with uncertainty maps.

Steps of :func:`predict`:

1. Preprocess (:mod:`.preprocess`): with ``crop_to_body`` (default) keep only the CT's
   bounding box of voxels denser than air (:func:`.preprocess.body_box`); resample it
   (linear) onto the model grid
   (model spacing, model orientation by nearest-axis permutation / flip of the CT's own
   axes), clip HU to the window and normalise to ``normalized_range`` ((0, 1) default).
2. Sliding window over the model grid (:func:`mc_sliding_window`): windows of
   ``patch_size`` with ``overlap``; per window the deterministic part of the network
   runs once (:meth:`BayesianUNet.forward_features`) and the stochastic remainder T
   times (:meth:`BayesianUNet.forward_stochastic`), with dropout masks seeded from
   ``(seed, window index)``. With the ``head`` placement the stochastic part (dropout,
   then the 1x1 output convolution) is linear up to the softmax, so the windows' input
   features of that part are blended instead (Gaussian importance weights, sigma =
   0.125 x patch, MONAI's default; this blends the logits of each sample, as nnU-Net
   blends logits), and the T samples are drawn once per voxel of the model grid, chunk
   by chunk (:func:`pointwise_mc_volume`: one matrix product and one ``exp`` per class
   and voxel, running sums), not once per window that covers it (with overlap 0.5 a
   voxel lies in up to 8 windows). Other placements: Welford running statistics over
   the T softmax samples of each window (:class:`.uncertainty.MCAccumulator`), blended
   into volume accumulators with the same weights. Both give the mean softmax, the
   class-averaged variance and the mean per-sample entropy; predictive entropy and
   mutual information come from the mean softmax and mean entropy at the end. With
   ``shifted_samples`` the T samples are split between the model grid and its
   half-voxel shift (:mod:`.grid_shift`): each half runs this step on its own grid; the
   label is the argmax of their weighted mean softmax on the CT grid, the maps and the
   review scores are their weighted means.
3. Labels = argmax of the mean softmax on the model grid, mapped to canonical anatomy
   label values, resampled to the **original CT grid** by nearest neighbour;
   uncertainty maps (and optional probabilities) resampled to the CT grid linearly.
   A model that labels every lumbar vertebra with one class (``vertebrae_lumbar``) has
   it split into vertebrae and numbered from the sacrum (:mod:`.vertebra_levels`).
4. Review list: structure-wise uncertainty on the model grid (physical band widths).

Memory (float32, model grid of N voxels, C classes): volume accumulators (C + 3) x 4 N
bytes (``head`` placement: one buffer of max(C, C_f) x 4 N holds the blended features
of the C_f channels, then the mean softmax in place, + 3 x 4 N), the input 4 N, and per
window the activations of one pass (``head``: plus C x ``CHUNK_VOXELS`` floats; other
placements: O(mc_batch_size x activations)); none of them grows with T. Outputs on the
CT grid (M voxels): labels M bytes (uint8), 3 x 4 M bytes for the uncertainty maps,
+ C x 4 M with ``return_probabilities``. Peak
RSS is therefore about 4 N (C + 5) + 13 M bytes + the network's window activations +
the caller's CT; with ``crop_to_body`` N covers the body box only. ``shifted_samples``
holds the second half's statistics on its grid too: (C + 3) x 4 N bytes more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import product
from operator import attrgetter

import numpy as np
import torch

from ..anatomy import BY_KEY, contralateral, is_one_piece
from ..errors import CancelledError, InputError, ModelError
from ..image import CTImage, Geometry, LabelMap
from ..progress import ProgressCallback
from .backends import feature_runner
from .config import InferenceConfig, InputConfig
from .grid_shift import (
    argmax_on_grids,
    combine_score_variants,
    interpolate_at,
    shift_vector,
    shifted_seed,
    split_samples,
)
from .grid_torch import argmax_to_grid, map_to_grid
from .network import BayesianUNet, Features
from .preprocess import body_box, crop_geometry, prepare_input, resample
from .uncertainty import (
    MCAccumulator,
    StructureScoreVariants,
    StructureUncertainty,
    entropy,
    rank,
    review_from_variants,
    structure_score_variants,
)
from .vertebra_levels import LUMBAR_KEY, VertebraLevels, number_label_map

#: Key of the background channel in a model's labels.
BACKGROUND = "background"
#: Names of the uncertainty maps, in the order they are computed.
UNCERTAINTY_NAMES: tuple[str, ...] = (
    "predictive_variance", "predictive_entropy", "mutual_information",
)


@dataclass
class ModelGridOutput:
    """Result of :func:`mc_sliding_window` on the model grid.

    Attributes
    ----------
    mean_probability : np.ndarray or torch.Tensor of float32, (C, n0, n1, n2)
        Mean softmax over the T samples (Gaussian-blended over windows); sums to 1. A
        tensor on the GPU when the network ran on one (:func:`predict` then takes the
        argmax and resamples it there, :mod:`.grid_torch`), else a numpy array.
    predictive_variance, predictive_entropy, mutual_information : np.ndarray of float32
        Shape (n0, n1, n2); see :mod:`.uncertainty` for definitions (entropies in nats).
    n_windows : int
    accumulator_bytes : int
        Bytes of the volume accumulators (independent of T).
    timings_s : dict[str, float]
        Wall time, seconds: ``deterministic`` (the network up to the first dropout
        layer), ``stochastic`` (the rest, T times, with the statistics: per window, or
        per model-grid voxel for the ``head`` placement), ``blend`` (Gaussian-weighted
        accumulation) and ``finalize``.
    """

    mean_probability: np.ndarray
    predictive_variance: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    n_windows: int
    accumulator_bytes: int
    timings_s: dict[str, float] = field(default_factory=dict)

    def uncertainty(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in UNCERTAINTY_NAMES}


@dataclass
class SegmentationResult:
    """Output of :func:`predict`, on the original CT grid.

    Attributes
    ----------
    label_map : LabelMap
        Canonical anatomy label values (:data:`CTMuscleBoneLib.anatomy.BY_KEY`), on the
        CT geometry; ``source`` names the model.
    uncertainty : dict[str, np.ndarray of float32, (n0, n1, n2)]
        ``predictive_variance``, ``predictive_entropy`` (nats), ``mutual_information``
        (nats) on the CT grid (linear interpolation from the model grid).
    review : list of StructureUncertainty
        Structures ranked for review, most uncertain (or absent) first, by the variant
        ``InferenceConfig.review_map`` + ``review_region``.
    score_variants : list of StructureScoreVariants
        Every structure score variant (3 maps x inside / boundary band, computed on the
        model grid; :func:`.uncertainty.structure_score_variants`), in label order.
    confidence : np.ndarray of float32, (n0, n1, n2) or None
        Maximum over classes of the mean softmax on the CT grid (linear interpolation;
        1 outside the body box), only when :func:`predict` was asked for it.
    vertebra_levels : VertebraLevels or None
        When the model labels ``vertebrae_lumbar`` (one class for every lumbar
        vertebra): how :func:`.vertebra_levels.number_label_map` split and numbered it
        (``label_map`` holds the numbered levels; its notes, the report's warnings).
    probabilities : np.ndarray of float32, (C, n0, n1, n2) or None
        Mean softmax per output channel on the CT grid (only with
        ``InferenceConfig.return_probabilities``).
    channel_keys : dict[int, str]
        Output channel -> anatomy key (``background`` for channel 0).
    model_grid : Geometry
        The grid the network ran on.
    mc_samples : int
    seed : int
    device : str
    dropout_placement : str
    timings_s : dict[str, float]
        Wall time of each step, seconds.
    accumulator_bytes : int
        Bytes of the model-grid accumulators (independent of T).
    """

    label_map: LabelMap
    uncertainty: dict[str, np.ndarray]
    review: list[StructureUncertainty]
    probabilities: np.ndarray | None = None
    channel_keys: dict[int, str] = field(default_factory=dict)
    model_grid: Geometry | None = None
    mc_samples: int = 1
    seed: int = 0
    device: str = "cpu"
    dropout_placement: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    accumulator_bytes: int = 0
    score_variants: list[StructureScoreVariants] = field(default_factory=list)
    confidence: np.ndarray | None = None
    vertebra_levels: VertebraLevels | None = None


# -- helpers -----------------------------------------------------------------------------
def argmax_on_grid(
    mean_probability: np.ndarray,
    source: Geometry,
    target: Geometry,
    lut: np.ndarray,
    labels: np.ndarray,
    channel_labels: np.ndarray | None = None,
    max_points: int = 1 << 17,
) -> None:
    """Label = argmax of the linearly interpolated mean probability, on the target grid.

    Exact shortcut: trilinear interpolation is a convex combination of the 8 corners of
    the model-grid cell around a point, so where all 8 corners share one argmax channel
    the interpolated argmax is that channel, which is the nearest-neighbour first guess
    already in ``labels``. Only target voxels whose nearest model voxel has another
    channel in its 3 x 3 x 3 neighbourhood (the boundary shell) are interpolated: the 8
    corners gathered with numpy, in batches of ``max_points`` voxels (memory bounded),
    and of those only the points whose own 8 corners disagree.

    Parameters
    ----------
    mean_probability : np.ndarray of float32, (C, m0, m1, m2)
        Mean softmax on the model grid ``source``.
    source, target : Geometry
    lut : np.ndarray of int, (C,)
        Output channel -> label value.
    labels : np.ndarray, target.shape
        Nearest-neighbour labels on the target grid; updated in place.
    channel_labels : np.ndarray of int, (m0, m1, m2), optional
        Argmax channel on the model grid (computed when not given).
    """
    from scipy import ndimage

    if channel_labels is None:
        channel_labels = np.argmax(mean_probability, axis=0)
    ch = channel_labels.astype(np.int16, copy=False)
    shell = ndimage.maximum_filter(ch, size=3) != ndimage.minimum_filter(ch, size=3)
    if not shell.any():
        return
    todo = resample(shell.view(np.uint8), source, target, "nearest", 0, np.uint8)
    idx = np.argwhere(todo)
    del todo
    m = np.asarray(mean_probability.shape[1:])
    corners = [np.asarray(c) for c in product((0, 1), repeat=3)]
    for b0 in range(0, len(idx), max_points):
        ii = idx[b0:b0 + max_points]
        cont = source.physical_to_index(target.index_to_physical(ii))
        lo = np.clip(np.floor(cont).astype(np.int64), 0, np.maximum(m - 2, 0))
        cs = [np.minimum(lo + c, m - 1) for c in corners]
        # points whose 8 corners share one channel keep the nearest-neighbour label
        first = ch[cs[0][:, 0], cs[0][:, 1], cs[0][:, 2]]
        mixed = np.zeros(len(ii), bool)
        for c in cs[1:]:
            mixed |= ch[c[:, 0], c[:, 1], c[:, 2]] != first
        if not mixed.any():
            continue
        ii, cont = ii[mixed], cont[mixed]
        acc = interpolate_at(mean_probability, source, cont)
        labels[ii[:, 0], ii[:, 1], ii[:, 2]] = lut[np.argmax(acc, axis=1)]


def _paste(array: np.ndarray, box: tuple[slice, ...] | None, shape: tuple[int, ...]
           ) -> np.ndarray:
    """``array`` (the body box) placed in a zero volume of ``shape``; itself without box."""
    if box is None:
        return array
    out = np.zeros(shape, dtype=array.dtype)
    out[box] = array
    return out


def keep_largest_components(labels: np.ndarray, values: list[int],
                            min_fraction: float = 1.0) -> None:
    """Remove the small 26-connected pieces of each label value (-> 0, in place).

    Parameters
    ----------
    labels : np.ndarray of int, (n0, n1, n2)
    values : label values to clean (0 is never touched).
    min_fraction : float in (0, 1]
        A piece is kept when it has at least this fraction of the voxels of the value's
        largest piece. 1.0 keeps only the largest (ties: the first in scan order); 0.1
        keeps every piece of 10 % of the largest or more (see
        ``InferenceConfig.component_min_fraction``).
    """
    from scipy import ndimage

    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False))
    structure = np.ones((3, 3, 3), dtype=bool)
    for v in values:
        if v <= 0 or v > len(boxes) or boxes[v - 1] is None:
            continue
        box = boxes[v - 1]
        sub = labels[box]
        comp, n = ndimage.label(sub == v, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        if min_fraction >= 1.0:
            sub[(comp != 0) & (comp != int(np.argmax(sizes)))] = 0
            continue
        drop = sizes < min_fraction * sizes.max()
        drop[0] = False
        if drop.any():
            sub[drop[comp]] = 0


def _review_volumes_on_ct_grid(review: list[StructureUncertainty], lab: np.ndarray,
                               voxel_cm3: float) -> list[StructureUncertainty]:
    """The review list with each volume and presence taken from the final label map,
    ranked again.

    The scores are computed on the model grid; the volumes a reader compares with the
    results table must be those of the label map that is measured (on the CT grid). A
    structure present on the model grid can be empty there (a sliver that the
    resampling, the clean-up or the other half of shifted samples removed): it is then
    absent, and goes to the top of the list with the other absent structures
    (:func:`.uncertainty.rank`), keeping its model-grid scores.
    """
    counts = np.bincount(lab.ravel().astype(np.int64, copy=False))
    out = []
    for r in review:
        n = int(counts[r.label_value]) if 0 <= r.label_value < counts.size else 0
        out.append(replace(r, volume_cm3=n * voxel_cm3, present=r.present and n > 0))
    return rank(out)


def _with_vertebra_levels(variants: list[StructureScoreVariants], levels: VertebraLevels,
                          lab_model: np.ndarray, maps: dict[str, np.ndarray], grid: Geometry,
                          numbered: np.ndarray, target: Geometry,
                          ) -> list[StructureScoreVariants]:
    """The score variants with one entry per numbered lumbar vertebra.

    The model labels every lumbar vertebra with one class; the levels are assigned later,
    on the CT grid (:func:`.vertebra_levels.number_label_map`). A reviewer needs to know
    which vertebra to check, and each vertebra's vBMD is reported on its own, so each
    numbered vertebra is scored on its own: the numbered labels are brought back to the
    model grid (nearest neighbour) and intersected with the model's lumbar class, and
    the uncertainty maps are averaged there (same regions and band as every structure).
    The one-class entry stays only while some of its voxels are left without a level.

    Parameters
    ----------
    variants : list of StructureScoreVariants
        Of the model's classes, on the model grid.
    levels : VertebraLevels
    lab_model : np.ndarray of int, model grid (n0, n1, n2)
        The model's labels (before numbering).
    maps : dict of str -> np.ndarray of float, model grid
        The voxel uncertainty maps.
    grid, target : Geometry
        The model grid and the CT grid (or its body box) of ``numbered``.
    numbered : np.ndarray of int, target shape
        The label array after numbering.
    """
    level_keys = {v.label_value: v.key for v in levels.vertebrae if v.level is not None}
    lumbar = next((v for v in variants if v.key == LUMBAR_KEY), None)
    if not level_keys or lumbar is None:
        return variants
    on_model = resample(numbered, target, grid, "nearest", 0, numbered.dtype)
    lab = np.where((lab_model == lumbar.label_value) & np.isin(on_model, list(level_keys)),
                   on_model, 0)
    per_level = structure_score_variants(lab, maps, grid.spacing_mm, level_keys,
                                         lumbar.band_mm)
    keep_lumbar = bool(np.any(numbered == lumbar.label_value))  # pieces left unnumbered
    out = []
    for v in variants:
        if v.key == LUMBAR_KEY:
            if keep_lumbar:
                out.append(v)
            out.extend(per_level)
        else:
            out.append(v)
    return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The one device rule: 'auto' -> CUDA when available, else CPU.

    Raises InputError for 'cuda' without a CUDA GPU and for an unknown device name.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("The device cuda was asked for but no CUDA GPU is available; "
                         "use cpu or auto.")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"Unknown device '{device}': use auto, cpu or cuda.")
    return torch.device(device)


def window_starts(n: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of size ``patch`` covering ``n`` voxels.

    Step ``round(patch * (1 - overlap))`` (>= 1); the last window ends at ``n``.
    """
    if n <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, n - patch + 1, step))
    if starts[-1] != n - patch:
        starts.append(n - patch)
    return starts


def window_seed(seed: int, window_index: int) -> int:
    """Seed of the dropout masks of one window, from the run seed and the window index."""
    ss = np.random.SeedSequence([int(seed), int(window_index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class MirrorPlan:
    """How a window is mirrored left-right and its output brought back.

    Attributes
    ----------
    axis : int
        Model-grid array axis (0, 1 or 2) that points left or right.
    channels : np.ndarray of int, (C,)
        Output channel -> its mirror partner (``femur_left`` <-> ``femur_right``; a
        structure without a side, and the background, map to themselves). An
        involution: ``channels[channels] == arange(C)``.
    """

    axis: int
    channels: np.ndarray


def mirror_plan(orientation: str, labels: dict[int, str], n_classes: int,
                spatial_dims: int) -> MirrorPlan:
    """The :class:`MirrorPlan` of a model (its input orientation and channel labels).

    Raises
    ------
    ModelError
        When a sided channel has no partner among the labels, or the left-right axis is
        the slice axis of a 2-D model (its windows have no width to mirror).
    """
    axis = next(i for i, ch in enumerate(orientation.upper()) if ch in "LR")
    if spatial_dims == 2 and axis == 2:
        raise ModelError("mirror_samples: the model's left-right axis is its slice axis "
                         f"(orientation {orientation}); turn mirror_samples off.")
    by_key = {str(k): int(c) for c, k in labels.items()}
    channels = np.arange(n_classes)
    for key, ch in by_key.items():
        partner = contralateral(key)
        if partner not in by_key:
            raise ModelError(f"mirror_samples: channel {ch} is '{key}' but no channel is "
                             f"'{partner}'; turn mirror_samples off.")
        channels[ch] = by_key[partner]
    return MirrorPlan(axis, channels)


def importance_map(patch3: tuple[int, int, int], spatial_dims: int, mode: str) -> torch.Tensor:
    """Blending weights of one window, shape ``patch3`` (float32, > 0)."""
    from monai.data.utils import compute_importance_map

    spatial = patch3 if spatial_dims == 3 else patch3[:2]
    if mode == "gaussian":
        w = compute_importance_map(spatial, mode="gaussian", sigma_scale=0.125)
    else:
        w = torch.ones(spatial)
    w = w.float()
    return w if spatial_dims == 3 else w.unsqueeze(-1)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("Segmentation cancelled by the user; nothing was written.")


#: Voxels per chunk of the pointwise Monte-Carlo head (``head`` placement): with 65
#: classes a chunk's temporaries are 65 x 32768 x 4 B = 8.5 MB: large enough to amortise
#: the per-call overhead, small enough to bound memory. This project's choice
#: (benchmarks/bench_clinical.py).
CHUNK_VOXELS = 1 << 15
#: The same on a GPU: a quarter of a 128^3 window. The GPU profile of
#: benchmarks/bench_clinical.py (H200, 1.5 mm, T = 10) showed the CPU chunk size making
#: 11 520 small kernel sequences per volume (3.5 s of the 4.5 s network time); this
#: makes 16 times fewer. Temporaries per chunk: 65 classes x 2^19 x 4 B = 136 MB a
#: tensor, about 1 GB in all: fits GPUs of 8 GB. Project choice, not yet re-timed.
CHUNK_VOXELS_GPU = 1 << 19


def softmax_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax and its entropy (nats) along axis 0, with one ``exp`` per element.

    ``H = log s + m - sum_c p_c z_c`` with ``m = max_c z_c``, ``s = sum_c exp(z_c - m)``:
    the same value as ``-sum_c p_c ln p_c`` without a logarithm per element.

    Parameters
    ----------
    logits : torch.Tensor, (C, n)

    Returns
    -------
    p : torch.Tensor, (C, n)
    h : torch.Tensor, (n,)
    """
    m = logits.amax(0, keepdim=True)
    e = torch.exp(logits - m)
    s = e.sum(0, keepdim=True)
    p = e.div_(s)
    h = (s.log_() + m).squeeze(0) - (p * logits).sum(0)
    return p, h.clamp_(min=0)


def pointwise_mc_statistics(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dropout_p: float,
    n_samples: int,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Monte-Carlo statistics of ``softmax(W (m_t * x) / (1 - p) + b)`` for n voxels.

    The stochastic part of the ``head`` placement (dropout, then the 1x1 output
    convolution) for one chunk of voxels: per sample t a Bernoulli keep-mask ``m_t``
    (keep probability ``1 - dropout_p``, as :class:`torch.nn.Dropout`) on the features,
    one matrix product, softmax and entropy; running sums of p, sum_c p^2 and H.
    Cheap masks: random bytes from numpy's PCG64, a feature kept when its uniform
    ``uint8`` is below ``256 (1 - p)`` where that is an integer (p = 0.5, 0.25, ...:
    exact), else when its ``uint16`` is below ``round(65536 (1 - p))`` (exact to
    1 / 65536).

    Parameters
    ----------
    features : torch.Tensor of float32, (C_f, n)
        Input of the dropout layer for n voxels.
    weight, bias : torch.Tensor, (C, C_f) and (C,)
        The output convolution.
    dropout_p : float
    n_samples : int
        T; 1 = one deterministic pass (no dropout).
    rng : numpy.random.Generator, optional
        Source of the masks (default: a fresh unseeded generator).

    Returns
    -------
    mean_p : torch.Tensor, (C, n)
        Mean softmax over the T samples.
    variance : torch.Tensor, (n,) or None
        Class-averaged population variance over the samples (None for T = 1).
    expected_entropy : torch.Tensor, (n,)
        Mean over samples of the per-sample entropy (nats).
    """
    def logits(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.addmm(bias[:, None], w, x) if bias is not None else torch.matmul(w, x)

    if n_samples == 1:
        p, h = softmax_entropy(logits(features, weight))
        return p, None, h
    rng = rng if rng is not None else np.random.default_rng()
    keep = 1.0 - float(dropout_p)
    levels = 256 if float(256 * keep).is_integer() else 65536
    bit_type = np.uint8 if levels == 256 else np.uint16
    threshold = min(round(levels * keep), levels - 1)
    w = weight * (1.0 / keep)
    dev = features.device
    sum_p = torch.zeros((weight.shape[0], features.shape[1]), dtype=torch.float32, device=dev)
    sum_p2 = torch.zeros(features.shape[1], dtype=torch.float32, device=dev)
    sum_h = torch.zeros(features.shape[1], dtype=torch.float32, device=dev)
    n_mask = features.numel()
    gen = None
    if dev.type != "cpu":  # masks drawn where the features are (seeded from ``rng``)
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(rng.integers(1 << 62)))
    for _ in range(n_samples):
        if keep < 1.0 and gen is not None:
            mask = torch.rand(features.shape, generator=gen, device=dev) < keep
        elif keep < 1.0:
            bits = np.frombuffer(rng.bytes(np.dtype(bit_type).itemsize * n_mask),
                                 dtype=bit_type).reshape(features.shape)
            mask = torch.from_numpy(bits < threshold)
        else:
            mask = True
        p, h = softmax_entropy(logits(features * mask, w))
        sum_p += p
        sum_p2 += (p * p).sum(0)
        sum_h += h
    mean_p = sum_p.div_(n_samples)
    # M2 / (T C) with M2 = sum_t sum_c p^2 - T sum_c mean^2 (as MCAccumulator)
    var = (sum_p2 - n_samples * (mean_p * mean_p).sum(0)).div_(n_samples * mean_p.shape[0])
    return mean_p, var.clamp_(min=0), sum_h.div_(n_samples)


def pointwise_mc_volume(
    buffer: torch.Tensor,
    n_features: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dropout_p: float,
    n_samples: int,
    seed: int,
    chunk_voxels: int = CHUNK_VOXELS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pointwise_mc_statistics` over a whole volume, in place, chunk by chunk.

    The mean softmax overwrites the features in the same buffer, so a volume never holds
    both (at 1.5 mm: 32 features and 65 classes over 9.6 million voxels, 1.2 GB saved):
    each chunk's features are copied out before its mean softmax is written, and a
    chunk's values sit at that chunk's voxel offsets in every channel plane, so no other
    chunk's features are touched.

    Parameters
    ----------
    buffer : torch.Tensor of float32, (max(C, C_f), n0, n1, n2), contiguous
        On entry ``buffer[:n_features]`` holds the input of the dropout layer at every
        voxel (the windows' features, blended); on return ``buffer[:C]`` holds the mean
        softmax over the T samples (C = ``weight.shape[0]``) and the rest is undefined.
    n_features : int
        C_f, the features per voxel (``weight.shape[1]``).
    weight, bias, dropout_p, n_samples
        As :func:`pointwise_mc_statistics`.
    seed : int
        Seed of the PCG64 generator the masks are drawn from, chunk after chunk (so each
        voxel gets its own masks, reproducibly).
    chunk_voxels : int
        Voxels per chunk (bounds the temporaries: C x chunk_voxels floats each).

    Returns
    -------
    variance : torch.Tensor, (n0, n1, n2)
        Zero for ``n_samples`` = 1.
    expected_entropy : torch.Tensor, (n0, n1, n2)
    """
    n_classes = int(weight.shape[0])
    if buffer.shape[0] < max(n_classes, n_features) or not buffer.is_contiguous():
        raise ValueError(f"The buffer must be contiguous with >= {max(n_classes, n_features)} "
                         f"channels, got {tuple(buffer.shape)}.")
    rng = np.random.default_rng(seed)
    shape = buffer.shape[1:]
    flat = buffer.view(buffer.shape[0], -1)
    n = flat.shape[1]
    var = torch.zeros(n, dtype=torch.float32, device=buffer.device)
    ent = torch.empty(n, dtype=torch.float32, device=buffer.device)
    for i0 in range(0, n, chunk_voxels):
        i1 = min(i0 + chunk_voxels, n)
        x = flat[:n_features, i0:i1].clone()
        p, v, h = pointwise_mc_statistics(x, weight, bias, dropout_p, n_samples, rng)
        flat[:n_classes, i0:i1] = p
        ent[i0:i1] = h
        if v is not None:
            var[i0:i1] = v
    return var.reshape(shape), ent.reshape(shape)


# -- core: sliding window with MC samples ------------------------------------------------
def mc_sliding_window(
    volume: np.ndarray,
    model: BayesianUNet,
    cfg: InferenceConfig,
    *,
    device: str | torch.device = "auto",
    pad_value: float = 0.0,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    progress_range: tuple[float, float] = (0.0, 1.0),
    backend: str = "torch",
    mirror: MirrorPlan | None = None,
) -> ModelGridOutput:
    """Monte-Carlo sliding-window inference on a normalised volume (model grid).

    Per window the deterministic part of the network runs once. With the ``head``
    placement (:attr:`BayesianUNet.pointwise_tail`) its output features are blended
    into one volume (Gaussian weights), and the T samples of the stochastic part
    (dropout + 1x1 convolution) are then drawn once per voxel, chunk by chunk of
    ``CHUNK_VOXELS`` voxels (:func:`pointwise_mc_volume`), with masks seeded from
    ``(seed, 0)``: no (T, C, patch) tensor is ever held, ``mc_batch_size`` plays no part,
    and overlapping windows add no Monte-Carlo work. Other placements run
    :meth:`BayesianUNet.forward_stochastic` per window in batches of ``mc_batch_size``
    samples and blend the statistics.

    Parameters
    ----------
    volume : np.ndarray of float32, (n0, n1, n2)
        Network input (already resampled and normalised), ITK index order in the model's
        orientation. 2-D models run on the (n0, n1) planes.
    model : BayesianUNet
    cfg : InferenceConfig
        ``mc_samples = 1`` runs one deterministic pass (dropout off).
    device : 'auto', 'cpu', 'cuda', ...
    pad_value : float
        Input value used where a window reaches beyond a small volume (air).
    progress, cancel
        Progress callback ``(fraction, message)``; a ``threading.Event`` that, when set,
        stops the run with :class:`~CTMuscleBoneLib.errors.CancelledError` at the next
        window.
    backend : {'torch', 'openvino'}
        What runs the deterministic part (:mod:`.backends`; 'openvino': CPU and the
        ``head`` placement only).
    mirror : MirrorPlan, optional
        Test-time mirroring (``InferenceConfig.mirror_samples``): the last ``T // 2``
        samples of each window run on the window flipped along ``mirror.axis``; their
        softmax is flipped back and its channels permuted by ``mirror.channels``. Not
        for the ``head`` placement (ModelError).
    """
    net_cfg = model.config
    cfg.check_against(net_cfg)
    dims = net_cfg.spatial_dims
    patch3 = tuple(cfg.patch_size) if dims == 3 else (*cfg.patch_size, 1)
    n_classes = net_cfg.out_channels
    T = cfg.mc_samples
    dev = resolve_device(device)
    was_training = model.training
    was_mc = model.mc_dropout
    model.to(dev)
    model.eval()
    model.set_mc_dropout(T > 1)
    pointwise = model.pointwise_tail
    if mirror is not None and pointwise:
        raise ModelError("mirror_samples needs dropout inside the network (placement "
                         "'decoder' or 'all'); this model's dropout is at the head only, "
                         "where the samples are drawn once per voxel of blended features. "
                         "Turn mirror_samples off.")
    n_mirrored = T // 2 if mirror is not None else 0
    head_w, head_b = model.head_weights()
    run_features = feature_runner(model, backend, dev)
    compile_before = float(getattr(run_features, "compile_seconds", 0.0))

    vol = np.asarray(volume, dtype=np.float32)
    shape = vol.shape
    padded = tuple(max(n, p) for n, p in zip(shape, patch3, strict=True))
    if padded != shape:
        vol = np.pad(vol, [(0, P - n) for n, P in zip(shape, padded, strict=True)],
                     constant_values=pad_value)
    vol_t = torch.from_numpy(np.ascontiguousarray(vol))
    windows = list(product(*(window_starts(n, p, cfg.overlap)
                             for n, p in zip(padded, patch3, strict=True))))
    wmap = importance_map(patch3, dims, cfg.blend_mode)

    # accumulators where the network runs on a GPU (no per-window copies to the host)
    acc_dev = dev if dev.type == "cuda" else torch.device("cpu")
    wmap = wmap.to(acc_dev)
    # the accumulators cover the volume only: a window reaching into the padding of a
    # volume smaller than the patch adds just its part inside the volume (``inside``)
    acc_w = torch.zeros(shape, dtype=torch.float32, device=acc_dev)
    if pointwise:  # the head's input features, blended; then the mean softmax in place
        n_feat = int(head_w.shape[1])
        n_buf = max(n_feat, n_classes)
        acc_f = torch.zeros((n_buf, *shape), dtype=torch.float32, device=acc_dev)
        acc_bytes = 4 * int(np.prod(shape)) * (n_buf + 3)  # + weights, variance, entropy
    else:
        acc_p = torch.zeros((n_classes, *shape), dtype=torch.float32, device=acc_dev)
        acc_var = torch.zeros(shape, dtype=torch.float32, device=acc_dev)
        acc_ent = torch.zeros(shape, dtype=torch.float32, device=acc_dev)
        acc_bytes = 4 * int(np.prod(shape)) * (n_classes + 3)
    amp = _autocast_dtype(cfg.precision, dev)
    timings = {"deterministic": 0.0, "stochastic": 0.0, "blend": 0.0}

    def deterministic_part(x: torch.Tensor) -> Features:
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            feats = run_features(x.to(dev))
        return feats if amp is None else Features(feats.x.float(), feats.skips, feats.step)

    if n_mirrored:  # (B or k, C, *spatial): flip the first spatial axis that is left-right
        flip_dim = 2 + mirror.axis
        partner = torch.as_tensor(mirror.channels, device=dev)

    def inside(sl: tuple[slice, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """A window's slices clipped to the volume, and the same part of the window."""
        dst = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(sl, shape, strict=True))
        return dst, tuple(slice(0, d.stop - d.start) for d in dst)

    def blend(sl: tuple[slice, ...], w: torch.Tensor, mean_p: torch.Tensor,
              ent: torch.Tensor, var: torch.Tensor | None) -> None:
        t = time.perf_counter()
        dst, src = inside(sl)
        w = w[src]
        acc_p[(slice(None), *dst)].addcmul_(mean_p[(slice(None), *src)].to(acc_dev), w)
        acc_ent[dst].addcmul_(ent[src].to(acc_dev), w)
        if var is not None:
            acc_var[dst].addcmul_(var[src].to(acc_dev), w)
        acc_w[dst] += w
        timings["blend"] += time.perf_counter() - t

    f0, f1 = progress_range
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.inference_mode():
            for b0 in range(0, len(windows), cfg.sw_batch_size):
                _check_cancel(cancel)
                batch = windows[b0:b0 + cfg.sw_batch_size]
                slices = [tuple(slice(s, s + p) for s, p in zip(st, patch3, strict=True))
                          for st in batch]
                x = torch.stack([vol_t[sl] for sl in slices])[:, None]
                if dims == 2:
                    x = x[..., 0]
                t = time.perf_counter()
                feats = deterministic_part(x)
                # the mirrored windows' deterministic part
                feats_m = deterministic_part(torch.flip(x, (flip_dim,))) if n_mirrored else None
                timings["deterministic"] += time.perf_counter() - t
                for bi, sl in enumerate(slices):
                    if pointwise:
                        t = time.perf_counter()
                        fx = feats.x[bi] if dims == 3 else feats.x[bi].unsqueeze(-1)
                        dst, src = inside(sl)
                        acc_f[(slice(0, n_feat), *dst)].addcmul_(
                            fx[(slice(None), *src)].float().to(acc_dev), wmap[src])
                        acc_w[dst] += wmap[src]
                        timings["blend"] += time.perf_counter() - t
                        continue
                    t = time.perf_counter()
                    f = feats.select(slice(bi, bi + 1))
                    acc = MCAccumulator()
                    with torch.random.fork_rng(devices=fork_devices):
                        torch.manual_seed(window_seed(cfg.seed, b0 + bi))
                        done = 0
                        while done < T:  # the first T - n_mirrored samples unmirrored
                            mirrored = done >= T - n_mirrored
                            k = min(cfg.mc_batch_size,
                                    (T if mirrored else T - n_mirrored) - done)
                            src = feats_m.select(slice(bi, bi + 1)) if mirrored else f
                            with torch.autocast(dev.type, dtype=amp or torch.float32,
                                                enabled=amp is not None):
                                logits = model.forward_stochastic(src, k)[:, 0]
                            p = torch.softmax(logits.float(), dim=1)  # (k, C, *spatial)
                            if mirrored:
                                p = torch.flip(p, (flip_dim,))[:, partner]
                            acc.update(p)
                            done += k
                    mean_p = acc.mean_probability
                    ent = acc.expected_entropy
                    var = acc.predictive_variance if T > 1 else None
                    if dims == 2:
                        mean_p, ent = mean_p.unsqueeze(-1), ent.unsqueeze(-1)
                        var = var.unsqueeze(-1) if var is not None else None
                    timings["stochastic"] += time.perf_counter() - t
                    blend(sl, wmap, mean_p, ent, var)
                del feats, feats_m
                if progress is not None:
                    done_w = min(b0 + cfg.sw_batch_size, len(windows))
                    progress(f0 + (f1 - f0) * done_w / len(windows),
                             f"window {done_w}/{len(windows)} ({T} MC sample(s) each)")
    finally:
        model.set_mc_dropout(was_mc)
        model.train(was_training)

    if pointwise:  # the T samples, once per voxel of the blended features
        t = time.perf_counter()
        acc_f[:n_feat] /= acc_w  # (every voxel is covered by some window)
        _check_cancel(cancel)
        with torch.inference_mode():
            acc_var, acc_ent = pointwise_mc_volume(
                acc_f, n_feat, head_w.to(acc_dev),
                None if head_b is None else head_b.to(acc_dev), net_cfg.dropout_p, T,
                window_seed(cfg.seed, 0),
                CHUNK_VOXELS if acc_dev.type == "cpu" else CHUNK_VOXELS_GPU)
        timings["stochastic"] += time.perf_counter() - t
    t = time.perf_counter()
    if pointwise:
        mean_p = acc_f[:n_classes]
        if n_buf > n_classes:  # a compact copy: the view would keep every feature
            mean_p = mean_p.clone()  # channel alive as long as the caller holds it
            del acc_f
    else:
        mean_p = acc_p
        mean_p /= acc_w
        acc_var /= acc_w
        acc_ent /= acc_w
    h = _entropy_by_slab(mean_p)
    mi = (h - acc_ent).clamp_(min=0)
    timings["finalize"] = time.perf_counter() - t
    if backend != "torch":  # conversion and compilation in this call, inside "deterministic"
        timings["backend_compile"] = (float(getattr(run_features, "compile_seconds", 0.0))
                                      - compile_before)
    return ModelGridOutput(
        # on a GPU the mean softmax stays there (predict resamples it there)
        mean_probability=mean_p if acc_dev.type == "cuda" else mean_p.numpy(),
        predictive_variance=acc_var.cpu().numpy(),
        predictive_entropy=h.cpu().numpy(),
        mutual_information=mi.cpu().numpy(),
        n_windows=len(windows),
        accumulator_bytes=acc_bytes,
        timings_s=timings,
    )


def _entropy_by_slab(p: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Entropy (nats) over axis 0 of ``p`` (C, n0, n1, n2), slab by slab along n0.

    The same values as :func:`.uncertainty.entropy` without its (C, n0, n1, n2)
    temporary (2.5 GB for 65 classes at 1.5 mm): the temporaries hold at most
    ``max_elements`` floats.
    """
    h = torch.empty(p.shape[1:], dtype=p.dtype, device=p.device)
    step = max(1, max_elements // max(1, int(np.prod(p.shape)) // max(1, p.shape[1])))
    for i in range(0, p.shape[1], step):
        h[i:i + step] = entropy(p[:, i:i + step], axis=0)
    return h


def _to_target(volume: np.ndarray | torch.Tensor, grid: Geometry, target: Geometry,
               default_value: float) -> np.ndarray:
    """One model-grid map on the target grid (linear): on the GPU where it is held there
    (:func:`.grid_torch.map_to_grid`), else with SimpleITK."""
    if isinstance(volume, torch.Tensor):
        return map_to_grid(volume, grid, target, default_value)
    return resample(volume, grid, target, "linear", default_value)


def _halves_to_target(
    halves: list[tuple[ModelGridOutput, Geometry, float]],
    pick: Callable[[ModelGridOutput], np.ndarray | torch.Tensor],
    target: Geometry, default_value: float,
) -> np.ndarray:
    """A model-grid volume on the target grid (linear, :func:`_to_target`).

    ``halves``: ``[(output, grid, weight)]``, one entry, or with ``shifted_samples`` the
    two halves; their volumes (``pick(output)``) are each resampled from their own grid
    and averaged with the weights.
    """
    (first, grid, w0), *rest = halves
    m = _to_target(pick(first), grid, target, default_value)
    if rest:
        m *= np.float32(w0)
    for o, g, w in rest:
        m += np.float32(w) * _to_target(pick(o), g, target, default_value)
    return m


def _max_channel(p: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The largest channel value per voxel of a (C, ...) softmax (numpy or torch)."""
    return p.amax(0) if isinstance(p, torch.Tensor) else p.max(axis=0)


def _autocast_dtype(precision: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``InferenceConfig.precision`` (None: float32 throughout)."""
    if precision == "float32":
        return None
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def _shifted_mc(
    x: np.ndarray, grid: Geometry, ct_in: CTImage, model: BayesianUNet,
    input_cfg: InputConfig, inference_cfg: InferenceConfig,
    dev: torch.device, backend: str, report: ProgressCallback, cancel: threading.Event | None,
) -> list[tuple[ModelGridOutput, Geometry, float]]:
    """``shifted_samples``: the T samples split between ``grid`` and its half-voxel shift.

    Returns each half's statistics on its own grid (numpy arrays) with its grid and its
    weight (samples / T): ``[(output, grid, w0), (output, shifted grid, w1)]``.
    """
    n0, n1 = split_samples(inference_cfg.mc_samples)
    xs, shifted_grid = prepare_input(ct_in, input_cfg, shift_vector(model.config.spatial_dims))
    runs = [(x, grid, n0, inference_cfg.seed, (0.05, 0.45)),
            (np.ascontiguousarray(xs), shifted_grid, n1, shifted_seed(inference_cfg.seed),
             (0.45, 0.85))]
    del xs
    halves: list[tuple[ModelGridOutput, Geometry, float]] = []
    for volume, g, n, seed, span in runs:
        cfg = replace(inference_cfg, mc_samples=n, seed=seed, shifted_samples=False,
                      mc_batch_size=min(inference_cfg.mc_batch_size, n))
        o = mc_sliding_window(volume, model, cfg, device=dev, backend=backend,
                              pad_value=input_cfg.normalized_range[0], progress=report,
                              cancel=cancel, progress_range=span)
        if isinstance(o.mean_probability, torch.Tensor):
            o.mean_probability = o.mean_probability.float().cpu().numpy()
        halves.append((o, g, n / inference_cfg.mc_samples))
    return halves


# -- full pipeline -----------------------------------------------------------------------
def _channel_values(labels: dict[int, str], n_classes: int) -> tuple[np.ndarray, dict[int, str]]:
    """Lookup table output channel -> label value, and label value -> anatomy key."""
    lut = np.zeros(n_classes, dtype=np.int32)
    structures: dict[int, str] = {}
    for ch, key in labels.items():
        ch = int(ch)
        if not 0 <= ch < n_classes:
            raise ModelError(f"Label channel {ch} is outside the network's {n_classes} "
                             "output channels.")
        if key == BACKGROUND:
            continue
        if key not in BY_KEY:
            raise ModelError(f"Channel {ch} is '{key}', which is not in the anatomy table.")
        value = BY_KEY[key].label_value
        lut[ch] = value
        structures[value] = key
    return lut, structures


def predict(
    ct: CTImage,
    model: BayesianUNet,
    input_cfg: InputConfig,
    inference_cfg: InferenceConfig,
    labels: dict[int, str],
    *,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    source: str | None = None,
    return_confidence: bool = False,
    backend: str = "torch",
) -> SegmentationResult:
    """Segment a CT with Monte-Carlo dropout; labels and uncertainty on the CT grid.

    Parameters
    ----------
    ct : CTImage
        Any orientation (LPS, RAS, permuted, oblique) and spacing.
    model : BayesianUNet
        Trained network (its mode is restored afterwards; it is moved to ``device``).
    input_cfg, inference_cfg : InputConfig, InferenceConfig
        From the model card.
    labels : dict[int, str]
        Output channel -> anatomy key; channel 0 is ``background``.
    device : 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', ...
    progress : callable (fraction, message), optional
    cancel : threading.Event, optional
        When set, the run stops with :class:`~CTMuscleBoneLib.errors.CancelledError`.
    source : str, optional
        Name of the model for ``LabelMap.source``.
    return_confidence : bool
        Also return the voxel confidence (max mean softmax) on the CT grid, for
        reliability diagrams (4 bytes per CT voxel more).
    backend : {'torch', 'openvino'}
        What runs the network's deterministic part (:mod:`.backends`): 'openvino' only on
        the CPU for ``head``-placement models; same labels as 'torch' (tested).

    Returns
    -------
    SegmentationResult
    """
    if not isinstance(model, BayesianUNet):
        raise ModelError("predict() needs a BayesianUNet (see segmentation.network).")
    if ct.hu.size == 0:
        raise InputError("The CT volume is empty.")
    n_classes = model.config.out_channels
    lut, structures = _channel_values(labels, n_classes)
    inference_cfg.check_against(model.config)
    dev = resolve_device(device)
    timings: dict[str, float] = {}

    def report(f: float, msg: str) -> None:
        if progress is not None:
            progress(float(min(max(f, 0.0), 1.0)), msg)

    t0 = time.perf_counter()
    report(0.0, "resampling the CT to the model grid")
    _check_cancel(cancel)
    box = body_box(ct) if inference_cfg.crop_to_body else None
    # target: the CT grid, or its body box (outputs are pasted into the full grid)
    target = crop_geometry(ct.geometry, box) if box is not None else ct.geometry
    ct_in = CTImage(ct.hu[box] if box is not None else ct.hu, target, ct.metadata)
    x, grid = prepare_input(ct_in, input_cfg)
    x = np.ascontiguousarray(x)
    timings["preprocess"] = time.perf_counter() - t0
    _check_cancel(cancel)

    t1 = time.perf_counter()
    mirror = (mirror_plan(input_cfg.orientation, labels, n_classes,
                          model.config.spatial_dims)
              if inference_cfg.mirror_samples else None)
    # shifted_samples: the second half of the samples, on the shifted grid (the first
    # half is `out`, on `grid`); w0 is the first half's weight
    second: tuple[ModelGridOutput, Geometry, float] | None = None
    w0 = 1.0
    if inference_cfg.shifted_samples and inference_cfg.mc_samples >= 2:
        (out, _, w0), second = _shifted_mc(x, grid, ct_in, model, input_cfg, inference_cfg,
                                           dev, backend, report, cancel)
    else:
        out = mc_sliding_window(x, model, inference_cfg, device=dev, backend=backend,
                                mirror=mirror,
                                pad_value=input_cfg.normalized_range[0], progress=report,
                                cancel=cancel, progress_range=(0.05, 0.85))
    del x
    timings["network"] = time.perf_counter() - t1
    timings.update({f"network_{k}": v for k, v in out.timings_s.items()})
    if second is not None:
        for k, v in second[0].timings_s.items():
            timings[f"network_{k}"] += v

    t2 = time.perf_counter()
    _check_cancel(cancel)
    report(0.86, "labels and uncertainty back to the CT grid")
    label_dtype = np.uint8 if lut.max() <= 255 else np.int16
    # on a GPU the mean softmax stayed there: argmax and resampling run there too
    on_device = isinstance(out.mean_probability, torch.Tensor)
    if on_device:
        lut_t = torch.as_tensor(lut.astype(np.int64), device=out.mean_probability.device)
        lab_model = lut_t[out.mean_probability.argmax(0)].cpu().numpy().astype(label_dtype)
        channels = None
    else:
        channels = np.argmax(out.mean_probability, axis=0)
        lab_model = lut.astype(label_dtype)[channels]
    variants = structure_score_variants(lab_model, out.uncertainty(), grid.spacing_mm,
                                        structures)
    if second is not None:
        channels2 = np.argmax(second[0].mean_probability, axis=0)
        lab_model2 = lut.astype(label_dtype)[channels2]
        variants2 = structure_score_variants(lab_model2, second[0].uncertainty(),
                                             second[1].spacing_mm, structures)
    timings["review"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    if second is not None and inference_cfg.label_resampling == "probability":
        _check_cancel(cancel)
        lab = argmax_on_grids([(out.mean_probability, grid, w0),
                               (second[0].mean_probability, second[1], second[2])],
                              target, lut, label_dtype, channel_labels=[channels, channels2])
        del channels2
    elif on_device and inference_cfg.label_resampling == "probability":
        lab = argmax_to_grid(out.mean_probability, grid, target, lut, label_dtype)
    else:
        lab = resample(lab_model, grid, target, "nearest", 0, label_dtype)
        if inference_cfg.label_resampling == "probability":
            _check_cancel(cancel)
            argmax_on_grid(out.mean_probability, grid, target, lut, lab, channels)
    del channels
    if inference_cfg.largest_component:  # groups and the hip bone may be several pieces
        keep_largest_components(lab, [v for v, k in structures.items()
                                      if is_one_piece(k)],
                                inference_cfg.component_min_fraction)
    label_map = LabelMap(_paste(lab, box, ct.geometry.shape), ct.geometry, dict(structures),
                         source=source or "CTMuscleBone Bayesian U-Net")
    del lab
    levels = None
    if LUMBAR_KEY in structures.values():  # split and number the lumbar vertebrae
        label_map, levels = number_label_map(label_map)
    final = label_map.array[box] if box is not None else label_map.array  # (a view)
    if levels is not None:
        t4 = time.perf_counter()
        variants = _with_vertebra_levels(variants, levels, lab_model, out.uncertainty(), grid,
                                         final, target)
        if second is not None:
            variants2 = _with_vertebra_levels(variants2, levels, lab_model2,
                                              second[0].uncertainty(), second[1], final, target)
        timings["review"] += time.perf_counter() - t4
    if second is not None:
        variants = combine_score_variants([variants, variants2], [w0, second[2]])
        del lab_model2, variants2
    del lab_model
    review = review_from_variants(variants, inference_cfg.review_map,
                                  inference_cfg.review_region)
    review = _review_volumes_on_ct_grid(review, final, ct.geometry.voxel_volume_cm3)
    # with shifted samples every map below is the halves' weighted mean, each half
    # resampled from its own grid (the probabilities: the mixture the label is the
    # argmax of)
    halves = [(out, grid, w0)] + ([second] if second is not None else [])
    unc: dict[str, np.ndarray] = {}
    for i, name in enumerate(UNCERTAINTY_NAMES):
        _check_cancel(cancel)
        unc[name] = _paste(_halves_to_target(halves, attrgetter(name), target, 0.0), box,
                           ct.geometry.shape)
        for o, _, _ in halves:
            setattr(o, name, None)
        report(0.88 + 0.03 * i, f"{name} on the CT grid")
    confidence = None
    if return_confidence:
        confidence = _halves_to_target(halves, lambda o: _max_channel(o.mean_probability),
                                       target, 1.0)
        if box is not None:  # outside the body box: background, confidence 1
            full = np.ones(ct.geometry.shape, dtype=np.float32)
            full[box] = confidence
            confidence = full
    probs = None
    if inference_cfg.return_probabilities:
        probs = np.zeros((n_classes, *ct.geometry.shape), dtype=np.float32)
        if box is not None:
            probs[0] = 1.0  # outside the body box: background
        for c in range(n_classes):
            _check_cancel(cancel)
            probs[(c, *box) if box is not None else c] = _halves_to_target(
                halves, lambda o, c=c: o.mean_probability[c], target, 0.0)
    timings["to_ct_grid"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    report(1.0, "segmentation done")
    return SegmentationResult(
        label_map=label_map,
        uncertainty=unc,
        review=review,
        probabilities=probs,
        channel_keys={int(k): v for k, v in labels.items()},
        model_grid=grid,
        mc_samples=inference_cfg.mc_samples,
        seed=inference_cfg.seed,
        device=str(dev),
        dropout_placement=model.config.dropout_placement,
        timings_s=timings,
        accumulator_bytes=out.accumulator_bytes,
        score_variants=variants,
        confidence=confidence,
        vertebra_levels=levels,
    )
