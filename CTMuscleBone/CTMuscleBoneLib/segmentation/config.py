"""Configuration of the Bayesian U-Net: network shape, input preprocessing, inference.

Three JSON-safe dataclasses, each with ``from_dict`` / ``to_dict`` and validation that
raises :class:`~CTMuscleBoneLib.errors.ModelError` naming the field and what is allowed.
They are stored in a model card (``architecture``, ``input``, ``inference``).

This module imports neither torch nor MONAI.

Sources of the defaults
-----------------------
* Architecture of the reference Bayesian U-Net (Hiasa et al., IEEE TMI 39(4):1030-1040,
  2020; code yuta-hi/bayesian_unet, MIT): 5 levels, 32 filters doubling to 512, each block
  2 x (3x3 conv, BatchNorm, ReLU), max-pool down, deconvolution up, dropout p = 0.5 after
  every encoder and decoder block (``dropout_placement='all'``).
* HU window (-150, 350): the reference's preprocessing (clip, then normalise).
* 10 Monte-Carlo samples: the group's deployed models (the reference example uses 50).
* ``dropout_placement='head'`` default, patch size, overlap 0.25, Gaussian blending with
  sigma = 0.125 x patch (MONAI's default), the 1.5 mm default spacing: this project's
  choices for CPU speed, **not validated** for accuracy or uncertainty quality.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ModelError

DROPOUT_PLACEMENTS: tuple[str, ...] = ("all", "decoder", "bottleneck_decoder", "head")
NORMS: tuple[str | None, ...] = ("batch", "instance", None)
ACTS: tuple[str, ...] = ("relu", "leakyrelu", "prelu")
REORIENT_MODES: tuple[str, ...] = ("nearest_axis", "axis_aligned")
BLEND_MODES: tuple[str, ...] = ("gaussian", "constant")
UNCERTAINTY_MAPS: tuple[str, ...] = (
    "predictive_variance", "predictive_entropy", "mutual_information",
)
#: Regions of a predicted structure a structure score averages over (see uncertainty.py).
REVIEW_REGIONS: tuple[str, ...] = ("inside", "band")
_ORIENT_LETTERS = ("LR", "PA", "SI")


def _from_dict(cls: Any, d: dict[str, Any], tuple_fields: tuple[str, ...]) -> Any:
    if not isinstance(d, dict):
        raise ModelError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ModelError(
            f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(known)}."
        )
    kwargs = dict(d)
    for name in tuple_fields:
        if name in kwargs and isinstance(kwargs[name], list):
            kwargs[name] = tuple(
                tuple(v) if isinstance(v, list) else v for v in kwargs[name]
            )
    return cls(**kwargs)


def _to_dict(obj: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        return v

    return {k: conv(v) for k, v in asdict(obj).items()}


def _int_tuple(name: str, value: Any, where: str, min_value: int = 1) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ModelError(f"{where}: '{name}' must be a list of integers, got {value!r}.") from None
    if any(float(a) != float(b) for a, b in zip(out, value, strict=True)):
        raise ModelError(f"{where}: '{name}' must hold integers, got {value!r}.")
    if any(v < min_value for v in out):
        raise ModelError(f"{where}: every value of '{name}' must be >= {min_value}, got {out}.")
    return out


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the Bayesian U-Net.

    Attributes
    ----------
    out_channels : int
        Number of output classes, background (channel 0) included.
    spatial_dims : {2, 3}
        2 = axial slices (as the group's deployed Keras models), 3 = volumes.
    in_channels : int
        Input channels (1: windowed CT).
    channels : tuple of int
        Feature channels per resolution level, finest first; the last is the bottleneck.
        Reference: (32, 64, 128, 256, 512).
    strides : tuple of int
        Down-sampling factor between consecutive levels (max-pool kernel and transposed
        convolution scale); ``len(channels) - 1`` values. Reference: 2 everywhere.
    num_res_units : int
        0 = plain blocks of 2 x (conv, norm, act) as in the reference; > 0 adds that many
        residual units per block (MONAI ``ResidualUnit``, 2 sub-units each).
    norm : {'batch', 'instance', None}
        Normalisation after each convolution. Reference: BatchNorm.
    dropout_p : float
        Dropout probability in [0, 1). Reference: 0.5.
    dropout_placement : {'all', 'decoder', 'bottleneck_decoder', 'head'}
        Where dropout layers sit: ``all`` after every encoder and decoder block (the
        reference), ``decoder`` after each decoder block, ``bottleneck_decoder`` after the
        bottleneck and each decoder block, ``head`` after the last decoder block only
        (before the 1x1 output convolution). Everything before the first dropout layer is
        deterministic and computed once per window in Monte-Carlo inference.
        Default ``head``: the only placement that meets the speed goal (T = 10 samples at
        <= 3 x the cost of one deterministic pass; see ``benchmarks/bench_segment.py``);
        this project's choice, not validated against ``all`` for uncertainty quality.
    act : {'relu', 'leakyrelu', 'prelu'}
        Activation. Reference: ReLU.
    """

    out_channels: int
    spatial_dims: int = 3
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 0
    norm: str | None = "batch"
    dropout_p: float = 0.5
    dropout_placement: str = "head"
    act: str = "relu"

    def __post_init__(self) -> None:
        w = "NetworkConfig"
        if self.spatial_dims not in (2, 3):
            raise ModelError(f"{w}: spatial_dims must be 2 or 3, got {self.spatial_dims!r}.")
        for name in ("in_channels", "out_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ModelError(f"{w}: {name} must be a positive integer, got {v!r}.")
        if self.out_channels < 2:
            raise ModelError(f"{w}: out_channels must be >= 2 (background + a structure).")
        channels = _int_tuple("channels", self.channels, w)
        strides = _int_tuple("strides", self.strides, w)
        if len(channels) < 2:
            raise ModelError(f"{w}: 'channels' needs at least 2 levels, got {channels}.")
        if len(strides) != len(channels) - 1:
            raise ModelError(
                f"{w}: 'strides' needs len(channels) - 1 = {len(channels) - 1} values "
                f"(one per down-sampling), got {strides}."
            )
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "strides", strides)
        if not isinstance(self.num_res_units, int) or self.num_res_units < 0:
            raise ModelError(f"{w}: num_res_units must be an integer >= 0.")
        norm = self.norm.lower() if isinstance(self.norm, str) else self.norm
        if norm == "none":
            norm = None
        if norm not in NORMS:
            raise ModelError(f"{w}: norm must be one of {NORMS}, got {self.norm!r}.")
        object.__setattr__(self, "norm", norm)
        if not isinstance(self.dropout_p, int | float) or not 0.0 <= self.dropout_p < 1.0:
            raise ModelError(f"{w}: dropout_p must be in [0, 1), got {self.dropout_p!r}.")
        object.__setattr__(self, "dropout_p", float(self.dropout_p))
        if self.dropout_placement not in DROPOUT_PLACEMENTS:
            raise ModelError(
                f"{w}: dropout_placement must be one of {DROPOUT_PLACEMENTS}, "
                f"got {self.dropout_placement!r}."
            )
        if not isinstance(self.act, str) or self.act.lower() not in ACTS:
            raise ModelError(f"{w}: act must be one of {ACTS}, got {self.act!r}.")
        object.__setattr__(self, "act", self.act.lower())

    @property
    def total_stride(self) -> int:
        """Product of the strides: patch sizes must be multiples of it."""
        out = 1
        for s in self.strides:
            out *= s
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        return _from_dict(cls, d, ("channels", "strides"))

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True)
class InputConfig:
    """How a CT is turned into network input.

    Attributes
    ----------
    spacing_mm : tuple of 3 float
        Voxel size of the model grid along its array axes (in ``orientation`` order), mm.
        The CT is resampled to it (linear interpolation). Default 1.5 mm isotropic: an
        unvalidated choice for CPU speed.
    hu_window : (lo, hi)
        HU are clipped to [lo, hi] then mapped linearly to ``normalized_range``.
        Reference: (-150, 350).
    normalized_range : (a, b)
        Network input range: lo HU -> a, hi HU -> b. Default (0, 1); (-1, 1) allowed.
    orientation : str
        Three LPS letters giving the patient direction each model-grid array axis points
        to (``LPS``: axis 0 towards the patient's left, 1 posterior, 2 superior; the
        letters of :meth:`CTMuscleBoneLib.image.Geometry.describe`). For 2-D models the
        slices are taken perpendicular to array axis 2.
    reorient : {'nearest_axis', 'axis_aligned'}
        ``nearest_axis`` (default): the model grid keeps the CT's own axes, permuted and
        flipped to the nearest match of ``orientation`` (no rotation of oblique scans:
        the acquisition plane is kept). ``axis_aligned``: the model grid lies exactly
        along the patient axes (oblique scans are rotated during resampling).
    """

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    hu_window: tuple[float, float] = (-150.0, 350.0)
    normalized_range: tuple[float, float] = (0.0, 1.0)
    orientation: str = "LPS"
    reorient: str = "nearest_axis"

    def __post_init__(self) -> None:
        w = "InputConfig"
        try:
            sp = tuple(float(s) for s in self.spacing_mm)
            win = tuple(float(v) for v in self.hu_window)
            rng = tuple(float(v) for v in self.normalized_range)
        except (TypeError, ValueError):
            raise ModelError(f"{w}: spacing_mm, hu_window and normalized_range must be "
                             "lists of numbers.") from None
        if len(sp) != 3 or min(sp) <= 0:
            raise ModelError(f"{w}: spacing_mm must be 3 positive numbers (mm), got {sp}.")
        if len(win) != 2 or not win[0] < win[1]:
            raise ModelError(f"{w}: hu_window must be (lo, hi) with lo < hi, got {win}.")
        if len(rng) != 2 or rng[0] == rng[1]:
            raise ModelError(f"{w}: normalized_range must be two different numbers, got {rng}.")
        object.__setattr__(self, "spacing_mm", sp)
        object.__setattr__(self, "hu_window", win)
        object.__setattr__(self, "normalized_range", rng)
        code = str(self.orientation).upper()
        ok = len(code) == 3 and all(
            sum(ch in pair for ch in code) == 1 for pair in _ORIENT_LETTERS
        )
        if not ok:
            raise ModelError(
                f"{w}: orientation must be 3 letters, one of L/R, one of P/A and one of S/I "
                f"(e.g. 'LPS', 'RAS'), got {self.orientation!r}."
            )
        object.__setattr__(self, "orientation", code)
        if self.reorient not in REORIENT_MODES:
            raise ModelError(f"{w}: reorient must be one of {REORIENT_MODES}, "
                             f"got {self.reorient!r}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputConfig:
        return _from_dict(cls, d, ("spacing_mm", "hu_window", "normalized_range"))

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


#: What may run the network's deterministic part (``predict(backend=...)``,
#: :mod:`.backends`).
BACKENDS: tuple[str, ...] = ("torch", "openvino")
#: Arithmetic the network may run in (InferenceConfig.precision).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class InferenceConfig:
    """Sliding-window Monte-Carlo inference settings.

    Attributes
    ----------
    patch_size : tuple of int
        Window size in model-grid voxels: 3 values for 3-D models, 2 (in-plane) for 2-D
        models. Each must be a multiple of the network's total stride.
    overlap : float
        Fraction of a window shared with its neighbour, in [0, 0.9]; 0.25-0.5 usual
        (0.25: MONAI's default).
    blend_mode : {'gaussian', 'constant'}
        Weights of overlapping windows: Gaussian importance map with sigma = 0.125 x
        patch (MONAI ``compute_importance_map`` default) or uniform.
    sw_batch_size : int
        Windows whose deterministic part runs in one batch.
    mc_samples : int
        Monte-Carlo dropout samples T per window (1 = one deterministic pass, no
        epistemic uncertainty). Default 10 as the group's deployed models.
    mc_batch_size : int
        Samples run through the stochastic part at once (bounds memory; <= mc_samples).
    seed : int
        Seed of the dropout masks; window ``w`` uses a seed derived from (seed, w), so the
        output does not depend on ``sw_batch_size`` or ``mc_batch_size``.
    return_probabilities : bool
        Also return the mean softmax per class on the CT grid (n_classes float32 volumes:
        memory-heavy; off by default).
    review_map : str
        Uncertainty map used for the structure review list (default
        ``predictive_variance``, the reference group's measure).
    review_region : {'inside', 'band'}
        Region of a structure the review score averages ``review_map`` over: its voxels
        (default, the structure-wise uncertainty of Hiasa et al. 2020) or the band of
        +-2 mm around its surface. See ``ctmusclebone evaluate`` and
        ``segmentation.uncertainty_study`` for measuring which variant ranks errors best.
    label_resampling : {'probability', 'nearest'}
        How the label map reaches the CT grid: 'probability' resamples the mean
        softmax linearly and takes the argmax on the CT grid (smooth boundaries when
        the CT is finer than the model grid; done in slabs, memory bounded); 'nearest'
        resamples the model-grid argmax by nearest neighbour (fastest).
    largest_component : bool
        Clean up the connected components (26-connectivity) of each structure that is
        one piece (a bone, a muscle: :func:`CTMuscleBoneLib.anatomy.is_one_piece`) on the
        CT grid: pieces smaller than ``component_min_fraction`` of the structure's
        largest piece become background. Group classes (the lumbar vertebrae, the thigh
        compartments) and the hip bone are left whole. Turn off for a model of scattered
        tissue.
    component_min_fraction : float in (0, 1]
        Size of the smallest piece kept, as a fraction of the largest piece of the same
        structure. Default 0.1 (an unvalidated choice): stray specks go, while a muscle
        that a 2-D model split by missing it in a few slices keeps both halves (measured
        on the demo phantom: keeping only the largest piece cut the sartorius and
        gluteus medius to Dice 0.59; docs/segmentation.md). 1.0 keeps only the largest.
    crop_to_body : bool
        Run the network (and resample to and from the model grid) only inside the
        bounding box of the voxels denser than air (``body.BODY_HU``) plus 10 mm; outside
        it labels are background and uncertainty maps 0. Default on (speed; the air
        outside the box is background for any CT model).
    precision : {'float32', 'bfloat16', 'float16'}
        Arithmetic of the network's convolutions (torch autocast); the Monte-Carlo
        statistics, blending and resampling stay float32. 'bfloat16' is for GPUs with
        native support (on a CPU without it, it is emulated and slow);
        benchmarks/bench_clinical.py compares its labels with float32 (Dice). Default
        float32.
    mirror_samples : bool
        Test-time mirroring inside the Monte-Carlo loop: the last ``T // 2`` of the T
        samples of every window run on the window mirrored left-right, and their
        softmax is mirrored back with each ``_left`` channel swapped with its ``_right``
        partner (nnU-Net mirrors at test time too, at the price of extra passes; here the
        samples are split, not doubled, so the cost is one more run of the network's
        deterministic part per window). A model whose errors lean to one side (one
        side's structure painted larger than the other's) is pulled to the symmetric
        mean, and the samples' spread then includes the mirror's disagreement. Needs
        dropout inside the network (placement ``decoder`` or ``all``; with ``head`` the
        samples are drawn from blended features) and a left-right axis in the 2-D
        model's slice plane. Default off.
    shifted_samples : bool
        Sub-voxel test-time shifting inside the Monte-Carlo loop: the first
        ``ceil(T / 2)`` samples run on the model grid, the other ``T // 2`` on the same
        grid moved by half a model voxel along each in-plane axis (each axis of a 3-D
        model), and the label on the CT grid is the argmax of the two mean softmaxes
        interpolated there and averaged with their sample counts as weights
        (:mod:`.grid_shift`). A model trained on nearest-neighbour targets can at best
        reproduce one grid's aliased labels; averaging two interleaved grids brings the
        label towards the partial volume (docs/segmentation.md: the targets' ceiling of
        the gracilis 0.888 -> 0.965 on the held-out phantoms). The uncertainty maps and
        the review scores are the two halves' weighted means, each half's computed on
        its own grid. The cost: the input is resampled twice, the windows'
        deterministic part runs on both grids, and the second half's statistics are
        held until the end. With T = 1 (one deterministic pass, e.g. ``--samples 1``)
        there is nothing to split and the one grid runs. Needs
        ``label_resampling='probability'``; not with ``mirror_samples``. Default off.
    """

    patch_size: tuple[int, ...] = (96, 96, 96)
    overlap: float = 0.25
    blend_mode: str = "gaussian"
    sw_batch_size: int = 1
    mc_samples: int = 10
    mc_batch_size: int = 5
    seed: int = 0
    return_probabilities: bool = False
    review_map: str = "predictive_variance"
    review_region: str = "inside"
    label_resampling: str = "probability"
    largest_component: bool = True
    component_min_fraction: float = 0.1
    crop_to_body: bool = True
    precision: str = "float32"
    mirror_samples: bool = False
    shifted_samples: bool = False

    def __post_init__(self) -> None:
        w = "InferenceConfig"
        if not isinstance(self.mirror_samples, bool):
            raise ModelError(f"{w}: mirror_samples must be true or false.")
        if not isinstance(self.shifted_samples, bool):
            raise ModelError(f"{w}: shifted_samples must be true or false.")
        if self.shifted_samples and self.mirror_samples:
            raise ModelError(f"{w}: shifted_samples and mirror_samples cannot both be on "
                             "(each splits the T samples in two); turn one off.")
        if self.precision not in PRECISIONS:
            raise ModelError(f"{w}: precision must be one of {PRECISIONS}, got "
                             f"{self.precision!r}.")
        if not isinstance(self.crop_to_body, bool):
            raise ModelError(f"{w}: crop_to_body must be true or false.")
        if self.label_resampling not in ("probability", "nearest"):
            raise ModelError(f"{w}: label_resampling must be 'probability' or 'nearest', "
                             f"got {self.label_resampling!r}.")
        if not isinstance(self.largest_component, bool):
            raise ModelError(f"{w}: largest_component must be true or false.")
        f = self.component_min_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < f <= 1.0:
            raise ModelError(f"{w}: component_min_fraction must be a number in (0, 1], "
                             f"got {f!r}.")
        object.__setattr__(self, "component_min_fraction", float(f))
        ps = _int_tuple("patch_size", self.patch_size, w)
        if len(ps) not in (2, 3):
            raise ModelError(f"{w}: patch_size needs 2 (2-D model) or 3 values, got {ps}.")
        object.__setattr__(self, "patch_size", ps)
        if not isinstance(self.overlap, int | float) or not 0.0 <= self.overlap <= 0.9:
            raise ModelError(f"{w}: overlap must be in [0, 0.9], got {self.overlap!r}.")
        object.__setattr__(self, "overlap", float(self.overlap))
        if self.blend_mode not in BLEND_MODES:
            raise ModelError(f"{w}: blend_mode must be one of {BLEND_MODES}, "
                             f"got {self.blend_mode!r}.")
        for name in ("sw_batch_size", "mc_samples", "mc_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ModelError(f"{w}: {name} must be a positive integer, got {v!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ModelError(f"{w}: seed must be an integer >= 0, got {self.seed!r}.")
        if self.shifted_samples and self.label_resampling != "probability":
            raise ModelError(f"{w}: shifted_samples combines the two grids' probabilities on "
                             "the CT grid and needs label_resampling 'probability', got "
                             f"{self.label_resampling!r}.")
        if self.review_map not in UNCERTAINTY_MAPS:
            raise ModelError(f"{w}: review_map must be one of {UNCERTAINTY_MAPS}, "
                             f"got {self.review_map!r}.")
        if self.review_region not in REVIEW_REGIONS:
            raise ModelError(f"{w}: review_region must be one of {REVIEW_REGIONS}, "
                             f"got {self.review_region!r}.")

    def check_against(self, net: NetworkConfig) -> None:
        """Raise ModelError when the patch does not suit the network."""
        if len(self.patch_size) != net.spatial_dims:
            raise ModelError(
                f"InferenceConfig: patch_size {self.patch_size} has {len(self.patch_size)} "
                f"values but the network is {net.spatial_dims}-D."
            )
        bad = [p for p in self.patch_size if p % net.total_stride]
        if bad:
            raise ModelError(
                f"InferenceConfig: patch_size {self.patch_size} must be multiples of the "
                f"network's total stride {net.total_stride}."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceConfig:
        return _from_dict(cls, d, ("patch_size",))

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)
