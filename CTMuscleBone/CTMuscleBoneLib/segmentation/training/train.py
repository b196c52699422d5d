"""Train a Bayesian U-Net and write a model folder (card + safetensors) the registry installs.

Recipe (MONAI; every default is this project's choice, **not validated** for accuracy):

* cases resampled onto the model grid of the card's ``input`` (:mod:`.prepare`);
* patches of ``patch_size`` model-grid voxels sampled with
  :class:`monai.transforms.RandCropByLabelClassesd` (equal ratio of every class by default:
  small structures are seen as often as large ones);
* augmentation: random rotation (+-``rotate_deg``) and scaling (+-``scale``) with
  :class:`~monai.transforms.RandAffined`, random intensity scale and shift, Gaussian
  noise. **No flips**: a left-right flip would turn ``femur_left`` into a right femur
  without swapping labels;
* loss :class:`monai.losses.DiceCELoss` (softmax) against one-hot targets
  (``target='nearest'``) or against each voxel's partial volumes
  (``target='partial_volume'``, soft targets: :mod:`.prepare`), optimiser AdamW,
  cosine learning-rate decay over the run, mixed precision (float16 autocast with a
  gradient scaler) on CUDA;
* every ``val_every`` epochs: per-structure Dice of the deterministic prediction
  (dropout off) on the validation cases, on the model grid, by sliding-window inference;
* checkpoints in ``out/checkpoint/``: ``weights.safetensors``, ``optimizer.pt`` (our own
  file, read back with ``torch.load(weights_only=True)``), ``state.json`` (epoch, history,
  config); ``resume=True`` continues from them;
* several GPUs: run under ``torchrun --nproc_per_node=N``; when ``WORLD_SIZE > 1`` the
  network is wrapped in ``DistributedDataParallel`` and cases split by rank (each rank
  draws its own patches); rank 0 validates and writes;
* deterministic seeds (``monai.utils.set_determinism``); on CPU a rerun with the same
  seed gives the same weights.

Output: ``out/model/card.json`` + ``out/model/model.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import anatomy
from ...atomic import atomic_write_text
from ...errors import InputError, ModelError
from ..config import InferenceConfig, InputConfig, NetworkConfig
from ..inference import resolve_device
from ..model_card import BACKGROUND, SYNTHETIC_WARNING, ModelCard, TrainingInfo, WeightsInfo
from ..network import build_network
from ..weights import read_weights, save_weights
from .datasets import TrainingCase
from .prepare import SOFT_SCALE, TARGETS, PreparedCase, prepare_case

Log = Callable[[str], None]

REAL_WARNING = (
    "Research use only: not a medical device. Check every segmentation before using "
    "its measurements."
)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data (a JSON file for the CLI).

    Attributes
    ----------
    structures : list of str
        Anatomy keys, in output-channel order (channel 0 is background).
    network, input, inference : dict
        :class:`NetworkConfig` (``out_channels`` is set from ``structures``),
        :class:`InputConfig`, :class:`InferenceConfig` fields.
    patch_size : list of int
        Training patch in model-grid voxels (3 values; for a 2-D network the third is
        ignored and 2-D axial patches are drawn).
    batch_size, samples_per_case : int
        Patches per optimiser step; patches drawn from a case each time it is loaded.
    epochs : int
        One epoch = every training case visited once.
    lr, weight_decay : float
        AdamW settings; the learning rate decays by a cosine to 1 % over the run.
    val_every : int
        Validate every this many epochs (and after the last).
    val_fraction : float
        Share of the cases held out for validation when no separate set is given.
    rotate_deg, scale : float
        Augmentation ranges (random rotation about each axis, isotropic scale).
    intensity_scale, intensity_shift, noise_std : float
        Intensity augmentation on the normalised input.
    aug_prob : float
        Probability of each augmentation.
    amp : bool
        Mixed precision on CUDA.
    batch_dice : bool
        Dice term over the whole batch (as nnU-Net) rather than per patch: a class
        absent from one patch then does not dominate the loss.
    target : {'nearest', 'partial_volume'}
        What the loss compares the softmax with (:mod:`.prepare`): the label map
        resampled by nearest neighbour (one-hot), or the fraction of each model voxel
        each structure fills (soft; patches then carry C target channels, resampled
        linearly by the augmentation, and the crop samples classes by the largest
        fraction).
    cache : {'memory', 'disk', 'none'}
        ``memory``: every case prepared once and kept in memory (small data sets);
        ``disk``: prepared when first visited and kept as ``.npy`` in ``out/cache``
        (large data sets, e.g. TotalSegmentator); ``none``: prepared at every visit.
    workers : int
        Processes that prepare the cases (build a synthetic phantom or read the files,
        resample to the model grid) in parallel with ``cache='memory'``; 0 or 1 = in
        this process. The result does not depend on it.
    loader_workers : int
        DataLoader worker processes for patch sampling and augmentation (MONAI seeds
        each worker); 0 = in this process. Augmented patches depend on it.
    max_minutes : float or None
        Wall-time budget: after :data:`FIT_AFTER_EPOCHS` epochs the run is shortened to
        the epochs that fit in 90 % of it at the pace of the epochs after the first
        (:func:`fitted_epochs`; the cosine learning-rate schedule is fitted to them, so
        it still ends low), and it stops after the first epoch that ends past the budget
        anyway (the card records the epochs done); None = run every epoch (exactly
        reproducible).
    seed : int
    phantoms : dict
        Only for ``--layout synthetic``: ``n_train``, ``n_val``, ``seed``, ``region``
        (see :mod:`.synthetic`).
    model : dict
        Card fields: name, version, description, intended_use, license, synthetic,
        clinical_use_warning (default by ``synthetic``), training_data (text).
    """

    structures: list[str]
    network: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    batch_size: int = 2
    samples_per_case: int = 2
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_every: int = 10
    val_fraction: float = 0.2
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_std: float = 0.02
    aug_prob: float = 0.5
    amp: bool = True
    batch_dice: bool = True
    target: str = "nearest"
    cache: str = "memory"
    workers: int = 0
    loader_workers: int = 0
    max_minutes: float | None = None
    seed: int = 0
    phantoms: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise InputError("Training config must be a JSON object.")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"Training config: unknown field(s) {unknown}; allowed: "
                             f"{sorted(known)}.")
        if "structures" not in d:
            raise InputError("Training config needs 'structures' (anatomy keys to segment).")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise InputError(f"Training config {path} is not valid JSON: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        bad = [k for k in self.structures if k not in anatomy.BY_KEY]
        if bad or not self.structures:
            raise InputError(f"Training config: structures {bad or '[]'} are not anatomy keys "
                             "(see CTMuscleBoneLib.anatomy).")
        if len(set(self.structures)) != len(self.structures):
            raise InputError("Training config: a structure is listed twice.")
        for name in ("batch_size", "samples_per_case", "epochs", "val_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"Training config: {name} must be >= 1.")
        if self.target not in TARGETS:
            raise InputError(f"Training config: target must be one of {', '.join(TARGETS)}, "
                             f"got {self.target!r}.")
        if self.cache not in ("memory", "disk", "none"):
            raise InputError(f"Training config: cache must be memory, disk or none, got "
                             f"{self.cache!r}.")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise InputError("Training config: patch_size needs 3 positive integers.")
        net = self.network_config()
        if net.spatial_dims == 3:
            bad_ps = [p for p in self.patch_size if p % net.total_stride]
        else:
            bad_ps = [p for p in self.patch_size[:2] if p % net.total_stride]
        if bad_ps:
            raise InputError(f"Training config: patch_size {self.patch_size} must be "
                             f"multiples of the network's total stride {net.total_stride}.")
        self.inference_config().check_against(net)
        self.input_config()

    def channel_keys(self) -> dict[int, str]:
        return {0: BACKGROUND, **{i + 1: k for i, k in enumerate(self.structures)}}

    def network_config(self) -> NetworkConfig:
        d = dict(self.network)
        d["out_channels"] = len(self.structures) + 1
        return NetworkConfig.from_dict(d)

    def input_config(self) -> InputConfig:
        return InputConfig.from_dict(dict(self.input))

    def inference_config(self) -> InferenceConfig:
        return InferenceConfig.from_dict(dict(self.inference))


# -- distributed -----------------------------------------------------------------------
@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return _Dist(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


# -- transforms ------------------------------------------------------------------------
#: Voxel positions kept per class for patch sampling (a uniform subsample; MONAI's
#: ``max_samples_per_class``): computing them once per case instead of at every visit
#: makes class-balanced sampling cheap on large volumes. Project choice.
INDICES_PER_CLASS = 20000
INDICES_KEY = "label_cls_indices"


def class_indices(target: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
    """Flat voxel indices per class of a (1, n0, n1, n2) target, at most
    :data:`INDICES_PER_CLASS` each (uniform subsample, seeded)."""
    flat = np.asarray(target).ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n_classes + 1))
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_classes):
        idx = order[bounds[c]:bounds[c + 1]]
        if idx.size > INDICES_PER_CLASS:
            idx = np.sort(rng.choice(idx, INDICES_PER_CLASS, replace=False))
        out.append(idx)
    return out


def soft_to_float(soft: Any) -> Any:
    """Stored fractions (uint8, :data:`.prepare.SOFT_SCALE` steps) of a cropped and
    augmented patch, shape (C, ...), as float32 probabilities: padding (0 in every
    channel) becomes background, and every voxel sums to 1."""
    t = torch.as_tensor(soft).float() / SOFT_SCALE
    t[0] += (1.0 - t.sum(0)).clamp(min=0.0)
    return t / t.sum(0, keepdim=True)


def _train_transforms(cfg: TrainConfig, n_classes: int, spatial_dims: int,
                      pad_value: float = 0.0, indices_key: str | None = None) -> Any:
    from monai.transforms import (
        Compose,
        Lambdad,
        RandAffined,
        RandCropByLabelClassesd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    ps = list(cfg.patch_size)
    if spatial_dims == 2:
        ps = [ps[0], ps[1], 1]
    p = cfg.aug_prob
    rot = math.radians(cfg.rotate_deg)
    # rotations act in 3-D for 3-D patches, in-plane for 2-D patches
    rotate_range = (rot, rot, rot) if spatial_dims == 3 else (0.0, 0.0, rot)
    soft = cfg.target == "partial_volume"
    keys = ("image", "label", "soft") if soft else ("image", "label")
    modes = ("bilinear", "nearest", "bilinear") if soft else ("bilinear", "nearest")
    steps = [
        SpatialPadd(keys="image", spatial_size=ps, mode="constant", constant_values=pad_value),
        SpatialPadd(keys=keys[1:], spatial_size=ps, mode="constant", constant_values=0),
        RandCropByLabelClassesd(keys=keys, label_key="label", spatial_size=ps,
                                num_classes=n_classes, num_samples=cfg.samples_per_case,
                                indices_key=indices_key, allow_smaller=True, warn=False),
    ]
    if soft:  # fractions as float before the affine resamples them linearly
        steps.append(Lambdad(keys="soft", func=_as_float32))
    steps += [
        RandAffined(keys=keys, prob=p, rotate_range=rotate_range,
                    scale_range=(cfg.scale,) * 3, mode=modes, padding_mode="border"),
        RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=p),
        RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=p),
        RandGaussianNoised(keys="image", std=cfg.noise_std, prob=p),
    ]
    if soft:
        steps.append(Lambdad(keys="soft", func=soft_to_float))
    return Compose(steps)


def _as_float32(x: Any) -> Any:
    """uint8 fractions as float32 (same scale), so that interpolation keeps fractions."""
    return torch.as_tensor(x).float()


def _set_seed(transform: Any, seed: int) -> None:
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)


# -- validation ------------------------------------------------------------------------
#: Axial slices of a 2-D model validated in one batch (memory: slices x classes x plane).
VAL_SLICES = 32


def validation_dice(network: torch.nn.Module, cases: Sequence[PreparedCase],
                    inference: InferenceConfig, n_classes: int, device: torch.device,
                    ) -> dict[int, list[float]]:
    """Dice per output channel (1..C-1) per case of the deterministic prediction.

    Sliding-window inference on the model grid, dropout off. A channel absent from both
    prediction and reference of a case is skipped for that case.
    """
    from monai.inferers import sliding_window_inference

    net = getattr(network, "module", network)
    was_training = net.training
    mc = bool(getattr(net, "mc_dropout", False))
    net.eval()
    if hasattr(net, "set_mc_dropout"):
        net.set_mc_dropout(False)
    out: dict[int, list[float]] = {c: [] for c in range(1, n_classes)}
    spatial_dims = net.config.spatial_dims if hasattr(net, "config") else 3
    try:
        with torch.no_grad():
            for case in cases:
                x = torch.from_numpy(case.image)[None].to(device)
                if spatial_dims == 3:
                    logits = sliding_window_inference(
                        x, tuple(inference.patch_size), inference.sw_batch_size, net,
                        overlap=inference.overlap, mode=inference.blend_mode)
                    pred = logits.argmax(1)[0].cpu().numpy()
                else:  # axial slices as a batch, VAL_SLICES at a time
                    planes = x[0].permute(3, 0, 1, 2)  # (n2, 1, n0, n1)
                    slices = []
                    for k in range(0, planes.shape[0], VAL_SLICES):
                        lg = sliding_window_inference(
                            planes[k:k + VAL_SLICES], tuple(inference.patch_size),
                            max(inference.sw_batch_size, VAL_SLICES), net,
                            overlap=inference.overlap, mode=inference.blend_mode)
                        slices.append(lg.argmax(1).cpu().numpy())
                    pred = np.concatenate(slices, axis=0).transpose(1, 2, 0)
                ref = case.target[0]
                for c in range(1, n_classes):
                    p, r = pred == c, ref == c
                    tot = int(p.sum()) + int(r.sum())
                    if tot:
                        out[c].append(2.0 * int((p & r).sum()) / tot)
    finally:
        net.train(was_training)
        if hasattr(net, "set_mc_dropout"):
            net.set_mc_dropout(mc)
    return out


# -- the run ---------------------------------------------------------------------------
def _lazy_dataset(data: list[dict[str, Any]], transform: Any, prepared: _Prepared) -> Any:
    """A MONAI Dataset whose item ``{'index': i}`` is prepared case ``i`` + ``transform``.

    ``transform`` stays the dataset's own ``transform`` attribute, so MONAI's DataLoader
    reseeds it exactly as it reseeds the transforms of an in-memory dataset (same patches
    with every ``cache`` setting).
    """
    from monai.data import Dataset
    from monai.transforms import apply_transform

    class _LazyDataset(Dataset):
        def _transform(self, index: int) -> Any:
            return apply_transform(self.transform, prepared.as_dict(self.data[index]["index"]))

    return _LazyDataset(data=data, transform=transform)


class _Prepared(Sequence[PreparedCase]):
    """Cases on the model grid, prepared when first asked for; with ``cache_dir`` the
    arrays are kept as ``.npy`` files there (read back with ``allow_pickle=False``)."""

    def __init__(self, cases: Sequence[TrainingCase], in_cfg: InputConfig,
                 channel_keys: dict[int, str], cache_dir: Path | None,
                 target: str = "nearest") -> None:
        self.cases, self.in_cfg, self.keys, self.cache_dir = cases, in_cfg, channel_keys, \
            cache_dir
        self.target = target

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> PreparedCase:  # type: ignore[override]
        if self.cache_dir is not None:
            name = getattr(self.cases, "names", None)
            stem = f"{i:05d}_{name[i] if name else 'case'}"
            soft = self.target == "partial_volume"
            img_p = self.cache_dir / f"{stem}.image.npy"
            # the hard target differs by target (argmax of the fractions with soft ones)
            lab_p = self.cache_dir / f"{stem}.{'label_pv' if soft else 'label'}.npy"
            soft_p = self.cache_dir / f"{stem}.soft.npy"
            if img_p.is_file() and lab_p.is_file() and (not soft or soft_p.is_file()):
                return PreparedCase(stem, np.load(img_p, allow_pickle=False),
                                    np.load(lab_p, allow_pickle=False), None,  # type: ignore
                                    np.load(soft_p, allow_pickle=False) if soft else None)
        c = self.cases[i]
        pc = prepare_case(c.name, c.ct, c.labels, self.in_cfg, self.keys, self.target)
        if self.cache_dir is not None:
            from ...atomic import atomic_path

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            files = [(pc.image, img_p), (pc.target, lab_p)]
            if pc.soft is not None:
                files.append((pc.soft, soft_p))
            for arr, p in files:
                with atomic_path(p) as tmp, open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
        return pc

    def as_dict(self, i: int) -> dict[str, np.ndarray]:
        pc = self[i]
        d = {"image": pc.image, "label": pc.target}
        if pc.soft is not None:
            d["soft"] = pc.soft
        return d


#: Epochs timed before a ``max_minutes`` budget is turned into a number of epochs (the
#: first one is not used: it carries the start-up of the loader workers and the GPU).
FIT_AFTER_EPOCHS = 3
#: Share of the budget the fitted epochs may take (the rest: validations, saving).
FIT_BUDGET_SHARE = 0.9


def fitted_epochs(total: int, done: int, epoch_ends_s: Sequence[float],
                  budget_s: float) -> int:
    """Epochs of a run that fit in ``budget_s`` seconds, at most ``total``.

    Parameters
    ----------
    total : int
        Epochs of the recipe.
    done : int
        Epochs finished so far (>= 1).
    epoch_ends_s : sequence of float
        Seconds from the start of training at the end of each finished epoch.
    budget_s : float
        The whole time budget, seconds.

    Returns
    -------
    int
        ``done`` + the epochs that fit in :data:`FIT_BUDGET_SHARE` of the budget left, at
        the pace of the epochs after the first; never fewer than ``done``.
    """
    ends = list(epoch_ends_s)
    if len(ends) >= 2:
        per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1)
    else:
        per_epoch = ends[-1]
    left = FIT_BUDGET_SHARE * budget_s - ends[-1]
    more = int(left / per_epoch) if per_epoch > 0 and left > 0 else 0
    return max(done, min(total, done + more))


def _prepare_one(prep: _Prepared, i: int) -> PreparedCase:
    return prep[i]


def prepare_all(prep: _Prepared, workers: int = 0) -> list[PreparedCase]:
    """Every case of ``prep`` on the model grid, in order; ``workers`` > 1 processes
    prepare them in parallel (each gets a pickled copy of the case source)."""
    n = len(prep)
    if workers <= 1 or n <= 1:
        return [prep[i] for i in range(n)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # 'spawn' (not fork): torch and BLAS threads in the parent do not survive a fork
    with ProcessPoolExecutor(max_workers=min(workers, n),
                             mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_prepare_one, [prep] * n, range(n)))


@dataclass
class TrainResult:
    model_dir: Path
    card: ModelCard
    history: list[dict[str, Any]]
    seconds: float


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    idx = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(max(n_val, 1 if n > 1 and val_fraction > 0 else 0), n - 1)
    return sorted(idx[n_val:]), sorted(idx[:n_val])


def train(cfg: TrainConfig, train_cases: Sequence[TrainingCase], out_dir: str | os.PathLike[str],
          val_cases: Sequence[TrainingCase] | None = None, resume: bool = False,
          device: str = "auto", log: Log | None = None, training_data: str | None = None,
          command: str = "", validation_extra: dict[str, Any] | None = None,
          init_from: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train a network by the recipe of the module docstring and write the model folder.

    Parameters
    ----------
    cfg : TrainConfig
    train_cases : sequence of TrainingCase
        Training data (when ``val_cases`` is None, ``cfg.val_fraction`` of it is held out).
    out_dir : path
        ``out_dir/model`` receives the model folder, ``out_dir/checkpoint`` checkpoints,
        ``out_dir/train_log.jsonl`` the history.
    resume : bool
        Continue from ``out_dir/checkpoint``: same config, except that ``epochs``,
        ``max_minutes`` and ``val_every`` may change (a larger ``epochs`` extends the
        run; the cosine schedule is then taken over the new length).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}
    log : callable, optional
        Receives progress lines (default: print).
    training_data, command : str
        Recorded on the card (what the data was; the command that reproduces it).
    init_from : path, optional
        A model folder whose weights start the training (fine-tuning) instead of a random
        initialisation. Its architecture and labels must equal the recipe's; its weights
        are checked against its card's SHA-256 and read from safetensors only. Its name,
        checksum and training record go on the new card (``training.recipe.initialised_from``)
        so that the chain of runs stays reproducible.
    """
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    log = log or (lambda s: print(s, flush=True))
    dev = resolve_device(device)
    dist = _init_distributed(dev)
    if dist.world_size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    out = Path(out_dir)
    ckpt_dir = out / "checkpoint"
    net_cfg, in_cfg, inf_cfg = cfg.network_config(), cfg.input_config(), cfg.inference_config()
    n_classes = net_cfg.out_channels
    channel_keys = cfg.channel_keys()

    set_determinism(seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    if not train_cases:
        raise InputError("No training cases.")
    cases = list(range(len(train_cases)))
    if val_cases is None:
        tr_idx, va_idx = _split(len(cases), cfg.val_fraction, cfg.seed)
        val_src: list[TrainingCase] = [train_cases[i] for i in va_idx]
        tr_src: list[TrainingCase] = [train_cases[i] for i in tr_idx]
    else:
        tr_src, val_src = list(train_cases), list(val_cases)
    if dist.world_size > 1 and len(tr_src) < dist.world_size:
        raise InputError(f"{len(tr_src)} training cases for {dist.world_size} processes: "
                         "each process needs at least one.")

    # pad with the input value of air (what inference pads with)
    transform = _train_transforms(cfg, n_classes, net_cfg.spatial_dims,
                                  pad_value=in_cfg.normalized_range[0],
                                  indices_key=INDICES_KEY if cfg.cache == "memory" else None)
    _set_seed(transform, cfg.seed + 1000 * dist.rank)
    t_prep = time.perf_counter()
    cache_dir = out / "cache" if cfg.cache == "disk" else None
    train_prep = _Prepared(tr_src, in_cfg, channel_keys, cache_dir, cfg.target)
    val_prep = _Prepared(val_src, in_cfg, channel_keys, cache_dir, cfg.target) if dist.main \
        else _Prepared([], in_cfg, channel_keys, None)
    if cfg.cache == "memory":
        prepared = prepare_all(train_prep, cfg.workers)
        val_prepared: Sequence[PreparedCase] = prepare_all(val_prep, cfg.workers)
        log(f"prepared {len(prepared)} training and {len(val_prepared)} validation cases on "
            f"the model grid ({time.perf_counter() - t_prep:.1f} s)")
        for pc in prepared:
            if not pc.target.any():
                log(f"warning: case {pc.name} holds none of the requested structures")
        data: list[dict[str, Any]] = [
            {"image": pc.image, "label": pc.target,
             INDICES_KEY: class_indices(pc.target, n_classes, cfg.seed + i)}
            | ({"soft": pc.soft} if pc.soft is not None else {})
            for i, pc in enumerate(prepared)]
        ds = Dataset(data=data, transform=transform)
    else:  # prepared when visited (and kept on disk with cache='disk')
        val_prepared = val_prep
        data = [{"index": i} for i in range(len(train_prep))]
        ds = _lazy_dataset(data, transform, train_prep)
    gen = torch.Generator().manual_seed(cfg.seed + dist.rank)
    sampler = None
    if dist.world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=dist.world_size, rank=dist.rank,
                                     shuffle=True, seed=cfg.seed)
    loader = DataLoader(ds, batch_size=max(1, cfg.batch_size // cfg.samples_per_case),
                        shuffle=sampler is None, sampler=sampler,
                        num_workers=max(0, int(cfg.loader_workers)),
                        persistent_workers=int(cfg.loader_workers) > 0,
                        generator=gen if sampler is None else None)

    network = build_network(net_cfg)
    init_record = _initialise_from(init_from, network, cfg) if init_from else None
    if init_record:
        log(f"initialised from model '{init_record['name']}' ({init_record['sha256'][:12]})")
    network = network.to(dev)
    # 3-D convolutions on CPU are several times faster in channels-last layout
    # (oneDNN); measured here, backward 3.5 s -> 0.25 s for an 8-channel 64^3 batch.
    mem_format = torch.channels_last_3d if (dev.type == "cpu" and net_cfg.spatial_dims == 3) \
        else torch.contiguous_format
    network = network.to(memory_format=mem_format)
    model: torch.nn.Module = network
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            network, device_ids=[dev.index] if dev.type == "cuda" else None)
    soft_target = cfg.target == "partial_volume"
    # soft targets: C probability channels (CrossEntropyLoss takes class probabilities)
    loss_fn = DiceCELoss(to_onehot_y=not soft_target, softmax=True, batch=cfg.batch_dice)
    opt = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(loader)
    # the cosine runs over ``plan['epochs']``: cfg.epochs, or fewer when max_minutes is set
    # and the first epoch shows they would not fit (the schedule then still completes)
    plan = {"epochs": cfg.epochs}

    def lr_factor(step: int) -> float:
        total = max(steps_per_epoch * plan["epochs"], 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, history = 0, []
    if resume:
        start_epoch, history = _load_checkpoint(ckpt_dir, cfg, network, opt, sched, scaler)
        log(f"resumed from {ckpt_dir} at epoch {start_epoch}")

    t0 = time.perf_counter()
    epoch = start_epoch
    epoch_ends: list[float] = []  # seconds since t0 at the end of each epoch of this run
    while epoch < plan["epochs"]:
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        losses = []
        for batch in loader:
            x = batch["image"].to(dev)
            y = batch["soft" if soft_target else "label"].to(dev)
            if net_cfg.spatial_dims == 2:
                x, y = x[..., 0], y[..., 0]
            else:
                x = x.contiguous(memory_format=mem_format)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                 "lr": float(sched.get_last_lr()[0]),
                                 "seconds": round(time.perf_counter() - t0, 1)}
        out_of_time = cfg.max_minutes is not None and \
            time.perf_counter() - t0 > 60.0 * cfg.max_minutes
        epoch_ends.append(time.perf_counter() - t0)
        if cfg.max_minutes is not None and epoch == start_epoch + FIT_AFTER_EPOCHS - 1 \
                and not resume:
            fit = fitted_epochs(cfg.epochs, epoch + 1, epoch_ends, 60.0 * cfg.max_minutes)
            if fit < cfg.epochs:
                plan["epochs"] = fit
                log(f"max_minutes {cfg.max_minutes}: {plan['epochs']} of {cfg.epochs} epochs "
                    "fit; the learning-rate schedule is fitted to them")
        last = epoch + 1 == plan["epochs"] or out_of_time
        if dist.main and val_prepared and ((epoch + 1) % cfg.val_every == 0 or last):
            vd = validation_dice(network, val_prepared, inf_cfg, n_classes, dev)
            entry["val_dice"] = {channel_keys[c]: (float(np.mean(v)) if v else None)
                                 for c, v in vd.items()}
            means = [v for v in entry["val_dice"].values() if v is not None]
            entry["val_dice_mean"] = float(np.mean(means)) if means else None
        history.append(entry)
        if dist.main:
            msg = f"epoch {epoch + 1}/{plan['epochs']} loss {entry['loss']:.4f} " \
                  f"({entry['seconds']:.0f} s)"
            if "val_dice" in entry:
                worst = min((v, k) for k, v in entry["val_dice"].items() if v is not None) \
                    if entry["val_dice_mean"] is not None else (float("nan"), "-")
                msg += f" val Dice mean {entry['val_dice_mean']:.3f} " \
                       f"(lowest {worst[1]} {worst[0]:.3f})"
            log(msg)
            _append_log(out / "train_log.jsonl", entry)
            _save_checkpoint(ckpt_dir, cfg, network, opt, sched, scaler, epoch + 1, history)
        if out_of_time:
            log(f"stopping after epoch {epoch + 1}: max_minutes {cfg.max_minutes} reached")
            break
        epoch += 1
    seconds = time.perf_counter() - t0
    card = None
    if dist.main:
        card = write_model_folder(
            out / "model", cfg, network, history, training_data=training_data, command=command,
            train_names=[c.name for c in tr_src], val_names=[c.name for c in val_src],
            seconds=seconds, validation_extra=validation_extra, init_record=init_record,
            device=f"{dev.type} x {dist.world_size}" if dist.world_size > 1 else dev.type)
        log(f"wrote model folder {out / 'model'}")
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return TrainResult(out / "model", card, history, seconds)  # type: ignore[arg-type]


def write_model_folder(folder: str | os.PathLike[str], cfg: TrainConfig,
                       network: torch.nn.Module, history: list[dict[str, Any]],
                       training_data: str | None = None, command: str = "",
                       train_names: Sequence[str] = (), val_names: Sequence[str] = (),
                       seconds: float | None = None,
                       validation_extra: dict[str, Any] | None = None,
                       device: str | None = None,
                       init_record: dict[str, Any] | None = None) -> ModelCard:
    """Write ``model.safetensors`` and ``card.json`` into ``folder``; return the card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = dict(cfg.model)
    synthetic = bool(m.get("synthetic", False))
    sha = save_weights(network, folder / "model.safetensors",
                       metadata={"name": str(m.get("name", "ctmusclebone-model"))})
    last_val = next((h for h in reversed(history) if "val_dice" in h), None)
    validation: dict[str, Any] = {
        "during_training": {
            "data": f"{len(val_names)} held-out case(s) on the model grid, deterministic pass",
            "cases": list(val_names),
            "structures": ({k: {"dice_mean": v} for k, v in last_val["val_dice"].items()}
                           if last_val else {}),
        },
    }
    if validation_extra:
        validation.update(validation_extra)
    recipe = {k: v for k, v in cfg.to_dict().items()
              if k not in ("structures", "network", "input", "inference", "model")
              and (k != "phantoms" or v)}
    recipe["training_cases"] = len(train_names)
    recipe["epochs_completed"] = len(history)
    if seconds is not None:
        recipe["training_seconds"] = round(seconds, 1)
        recipe["device"] = device or "unspecified"
    if init_record:
        recipe["initialised_from"] = init_record
    card_dict = {
        "schema": "ctmusclebone-model-card/1",
        "name": m.get("name", "ctmusclebone-model"),
        "version": m.get("version", "0.1.0"),
        "description": m.get("description",
                             "Bayesian U-Net (Monte-Carlo dropout) trained with "
                             "`ctmusclebone train`."),
        "intended_use": m.get("intended_use",
                              "Research segmentation of bones and muscles on CT for "
                              "CTMuscleBone measurements."),
        "synthetic": synthetic,
        "clinical_use_warning": m.get("clinical_use_warning",
                                      SYNTHETIC_WARNING if synthetic else REAL_WARNING),
        "labels": {str(c): k for c, k in cfg.channel_keys().items()},
        "input": cfg.input_config().to_dict(),
        "architecture": cfg.network_config().to_dict(),
        "inference": cfg.inference_config().to_dict(),
        "training": TrainingInfo(
            data=training_data or m.get("training_data", "unspecified"), recipe=recipe,
            seed=cfg.seed, command=command).to_dict(),
        "validation": validation,
        "license": m.get("license", "unspecified"),
        "weights": WeightsInfo("model.safetensors", sha).to_dict(),
    }
    card = ModelCard.from_dict(card_dict, folder=folder.resolve())
    card.save(folder / "card.json")
    return card


def _initialise_from(folder: str | os.PathLike[str], network: torch.nn.Module,
                     cfg: TrainConfig) -> dict[str, Any]:
    """Load a model folder's weights into ``network``; return what the card records.

    Raises InputError when the folder's architecture or labels differ from ``cfg``'s
    (fine-tuning only continues the same network on the same classes).
    """
    from ..registry import check_model_folder
    from ..weights import load_weights

    card = check_model_folder(folder)
    want_arch = cfg.network_config().to_dict()
    if card.architecture.to_dict() != want_arch:
        diff = sorted(k for k in want_arch
                      if card.architecture.to_dict().get(k) != want_arch[k])
        raise InputError(f"Cannot start from model '{card.name}': its architecture differs "
                         f"from the recipe's in {', '.join(diff)}. Use a model trained with "
                         "the same network settings, or train from scratch.")
    labels = {int(c): k for c, k in card.labels.items()}
    if labels != cfg.channel_keys():
        raise InputError(f"Cannot start from model '{card.name}': its labels differ from the "
                         "recipe's structures (names or order). Use a model with the same "
                         "classes, or train from scratch.")
    load_weights(network, card.weights_path, card.weights.sha256)
    return {"name": card.name, "version": card.version, "sha256": card.weights.sha256,
            "training": card.training.to_dict()}


# -- checkpoints -----------------------------------------------------------------------
def _append_log(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _save_checkpoint(folder: Path, cfg: TrainConfig, network: torch.nn.Module,
                     opt: torch.optim.Optimizer, sched: Any, scaler: Any, epoch: int,
                     history: list[dict[str, Any]]) -> None:
    from ...atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    sha = save_weights(network, folder / "weights.safetensors")
    with atomic_path(folder / "optimizer.pt") as tmp:
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict()}, tmp)
    state = {"epoch": epoch, "config": cfg.to_dict(), "weights_sha256": sha,
             "history": history, "torch_rng": torch.get_rng_state().tolist()}
    atomic_write_text(folder / "state.json", json.dumps(state) + "\n")


def _load_checkpoint(folder: Path, cfg: TrainConfig, network: torch.nn.Module,
                     opt: torch.optim.Optimizer, sched: Any, scaler: Any,
                     ) -> tuple[int, list[dict[str, Any]]]:
    from ..weights import check_state_dict

    state_path = folder / "state.json"
    if not state_path.is_file():
        raise InputError(f"Nothing to resume: {state_path} does not exist.")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    # a run may be extended (more epochs, another time limit); nothing else may change
    extendable = ("epochs", "max_minutes", "val_every")
    old = {k: v for k, v in (state.get("config") or {}).items() if k not in extendable}
    new = {k: v for k, v in cfg.to_dict().items() if k not in extendable}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise InputError(f"Cannot resume: the training config differs from the checkpoint's "
                         f"in {diff}; only epochs, max_minutes and val_every may change "
                         "(or start a new output folder).")
    tensors = read_weights(folder / "weights.safetensors", state["weights_sha256"])
    check_state_dict(network, tensors)
    network.load_state_dict(tensors)
    try:
        extra = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise ModelError(f"Checkpoint {folder / 'optimizer.pt'} cannot be read: {exc}") from None
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return int(state["epoch"]), list(state["history"])
