"""Segmentation accuracy against reference labels, and how well uncertainty flags failures.

Per structure: Dice coefficient and average symmetric surface distance (ASSD, mm, in
physical spacing). Over cases: agreement of the structure volumes with the reference,
Pearson r and Bland-Altman bias and 95 % limits of agreement (cm3; Bland & Altman,
Lancet 1986), the statistic the originating project reported against its references
(r > 0.9, :data:`TARGET_VOLUME_R`). Over many structures and cases: the area under
the ROC curve of the structure-wise uncertainty score for detecting failed
segmentations (Dice below a threshold, 0.8 by default), as in Soufi et al., Sci Rep
15:125 (2025), who reported AUROC >= 0.95 for the Bayesian U-Net's predictive uncertainty,
and the Spearman rank correlation of the score with 1 - Dice, for every structure score
variant (:func:`variant_statistics`). Over voxels: a reliability diagram of the
confidence (maximum mean softmax probability) against accuracy and the expected
calibration error (:func:`reliability_diagram`).

Definitions
-----------
* Dice = 2 |P & R| / (|P| + |R|). Undefined (``None``) when both masks are empty.
  A structure in the reference and absent from the prediction (**missed**) scores
  Dice 0, as does one in the prediction and absent from the reference (**false
  positive**); both count as failures, and the score's ``note`` says which (their
  surface distance is undefined). :func:`evaluate_label_maps` scores every structure
  either map names, so neither is left out.
* Surface voxels: voxels of a mask with at least one of their 6 face neighbours outside
  the mask (the image border counts as outside).
* Volume (cm3) = voxel count x voxel volume of the grid. Volume agreement of a
  structure uses the cases where it is present in the prediction or the reference
  (a case where it is in neither is left out; a miss counts with predicted volume 0,
  a false positive with reference volume 0); r and the
  limits of agreement need at least 3 such cases, and r a non-constant column.
* ASSD = (sum over P-surface voxels of the distance to the nearest R-surface voxel
  + the same from R to P) / (number of P- and R-surface voxels); distances between
  voxel centres in mm (Euclidean distance transform with ``sampling = spacing_mm``).
  Undefined (``None``) when either mask is empty.
* Failure-detection AUROC: the probability that a failed structure (Dice <
  ``failure_dice``) scores higher than a successful one, ties counting one half
  (Mann-Whitney U / (n_fail n_ok); :func:`CTMuscleBoneLib.stats.roc_auc`). A structure
  in the reference but absent from the prediction (Dice 0) has no score: it counts as
  scored above every present one, as the review list puts absent structures first.
  A false positive is present in the prediction, so it has its own score and counts as
  a failure with it. Undefined when the set has no failure or no success.
* Spearman rho: the Pearson correlation of the average ranks (ties share the mean of
  their ranks) of the score and of 1 - Dice; undefined for fewer than 3 pairs or a
  constant column. Reported pooled over all (case, structure) pairs and as the mean of
  the per-case values (cases where it is defined).
* Reliability: voxels binned by confidence c into ``n_bins`` equal bins ((m-1)/M, m/M]
  (c = 0 in the first); per bin the mean confidence and the accuracy (fraction whose
  predicted structure equals the reference one); expected calibration error ECE =
  sum_m (n_m / N) |acc_m - conf_m| (Naeini et al., AAAI 2015; Guo et al., ICML 2017).
  The voxels counted are those predicted or labelled as a structure, grown by
  ``margin_voxels`` (2) voxels: the easy background far from any structure would
  otherwise dominate.

This module imports no torch: it works on label arrays of any origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..image import LabelMap
from ..stats import bland_altman, pearson_r, roc_auc

#: Dice below which a structure counts as a failed segmentation (Soufi et al. 2025 used
#: a Dice threshold to define failures; 0.8 is this project's unvalidated default).
FAILURE_DICE: float = 0.8
#: Volume correlation the originating project reported (r > 0.9 against its references;
#: project seed document, see docs/domain notes): a structure below it is listed.
TARGET_VOLUME_R: float = 0.9

_FACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)


def dice(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Dice coefficient of two boolean masks of equal shape; None when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise InputError(f"Dice: mask shapes differ ({pred.shape} vs {ref.shape}).")
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return None
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the surface voxels of ``mask`` (face connectivity), same shape."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    eroded = ndimage.binary_erosion(mask, structure=_FACE_STRUCTURE, border_value=0)
    return mask & ~eroded


def _surface_distances(a_surface: np.ndarray, b_surface: np.ndarray,
                       spacing_mm: Sequence[float]) -> np.ndarray:
    """Distances (mm) from each surface voxel of A to the nearest surface voxel of B."""
    dist_to_b = ndimage.distance_transform_edt(~b_surface, sampling=tuple(spacing_mm))
    return dist_to_b[a_surface]


def average_symmetric_surface_distance(pred: np.ndarray, ref: np.ndarray,
                                       spacing_mm: Sequence[float]) -> float | None:
    """Average symmetric surface distance in mm; None when either mask is empty.

    Parameters
    ----------
    pred, ref : np.ndarray of bool, (n0, n1, n2)
        Masks on the same grid.
    spacing_mm : sequence of 3 float
        Voxel size along the array axes, mm.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise InputError(f"ASSD: mask shapes differ ({pred.shape} vs {ref.shape}).")
    if not pred.any() or not ref.any():
        return None
    # both surfaces lie in the union's bounding box: distances computed in that box
    # (plus one voxel, so the box edge is outside both masks unless the image edge is)
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n))
                for b, n in zip(box, pred.shape, strict=True))
    pred, ref = pred[box], ref[box]
    sp, sr = surface_voxels(pred), surface_voxels(ref)
    d_pr = _surface_distances(sp, sr, spacing_mm)
    d_rp = _surface_distances(sr, sp, spacing_mm)
    return float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))


@dataclass
class StructureScore:
    """Accuracy of one structure in one case.

    ``dice`` and ``assd_mm`` are None when undefined (see module docstring);
    ``uncertainty`` is the structure-wise uncertainty score, when one was given;
    ``note`` says why a structure is scored Dice 0 without a surface distance (missed,
    false positive) or has no Dice (absent from both), else is empty.
    """

    case: str
    structure: str
    dice: float | None
    assd_mm: float | None
    pred_voxels: int
    ref_voxels: int
    uncertainty: float | None = None
    pred_volume_cm3: float | None = None
    ref_volume_cm3: float | None = None
    variants: dict[str, float | None] = field(default_factory=dict)
    note: str = ""
    #: Whether the case came with structure-wise uncertainty (a review list or score
    #: variants): only then does a missed structure rank as the most uncertain.
    case_has_uncertainty: bool = True

    @property
    def missed(self) -> bool:
        """In the reference, absent from the prediction."""
        return self.pred_voxels == 0 and self.ref_voxels > 0

    @property
    def false_positive(self) -> bool:
        """In the prediction, absent from the reference."""
        return self.pred_voxels > 0 and self.ref_voxels == 0

    def to_dict(self) -> dict:
        return asdict(self)


#: ``StructureScore.note`` texts.
NOTE_MISSED = "missed: in the reference, absent from the prediction (Dice 0; no surface distance)"
NOTE_FALSE_POSITIVE = ("false positive: in the prediction, absent from the reference (Dice 0; "
                       "no surface distance)")
NOTE_ABSENT = "absent from both prediction and reference (Dice undefined)"


def _note(n_pred: int, n_ref: int) -> str:
    if n_pred == 0 and n_ref > 0:
        return NOTE_MISSED
    if n_pred > 0 and n_ref == 0:
        return NOTE_FALSE_POSITIVE
    return NOTE_ABSENT if n_pred == 0 and n_ref == 0 else ""


def evaluate_label_maps(pred: LabelMap, ref: LabelMap, structures: Iterable[str] | None = None,
                        case: str = "case",
                        uncertainty: Mapping[str, float] | None = None,
                        with_surface: bool = True,
                        variants: Mapping[str, Mapping[str, float | None]] | None = None,
                        ) -> list[StructureScore]:
    """Dice and ASSD of each structure of a predicted label map against a reference.

    Parameters
    ----------
    pred, ref : LabelMap
        On the same voxel grid; structures are matched by anatomy key, so the label
        values may differ between the two maps.
    structures : iterable of str, optional
        Anatomy keys to score; default: every key either map names (so a structure
        missed by the prediction, or only in the prediction, is scored Dice 0).
    case : str
        Case name written into the scores.
    uncertainty : mapping of str to float, optional
        Structure-wise uncertainty scores (anatomy key -> score) to attach.
    with_surface : bool
        False skips the ASSD (faster).
    variants : mapping of str to (mapping of str to float), optional
        Anatomy key -> {score variant name -> score} (see
        :func:`.uncertainty.structure_score_variants`) to attach.
    """
    if not pred.geometry.same_grid(ref.geometry, tol_mm=1e-2):
        raise InputError(
            f"Case {case}: the predicted and reference label maps are on different voxel "
            f"grids ({pred.geometry.describe()} vs {ref.geometry.describe()}); resample the "
            "prediction onto the reference CT first."
        )
    keys = list(structures) if structures is not None else sorted(
        set(pred.structures.values()) | set(ref.structures.values()))
    spacing = pred.geometry.spacing_mm
    voxel_cm3 = ref.geometry.voxel_volume_cm3
    out = []
    for key in keys:
        p, r = pred.mask(key), ref.mask(key)
        n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        out.append(StructureScore(
            case=case,
            structure=key,
            dice=dice(p, r),
            assd_mm=average_symmetric_surface_distance(p, r, spacing) if with_surface else None,
            pred_voxels=n_p,
            ref_voxels=n_r,
            uncertainty=None if uncertainty is None else _opt_float(uncertainty.get(key)),
            pred_volume_cm3=n_p * voxel_cm3,
            ref_volume_cm3=n_r * voxel_cm3,
            variants={} if variants is None else {
                k: _opt_float(v) for k, v in (variants.get(key) or {}).items()},
            note=_note(n_p, n_r),
            case_has_uncertainty=uncertainty is not None or variants is not None,
        ))
    return out


def _opt_float(v: object) -> float | None:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    return f if np.isfinite(f) else None


def failure_detection_auroc(scores: Sequence[StructureScore],
                            failure_dice: float = FAILURE_DICE) -> float | None:
    """AUROC of the structure-wise uncertainty for detecting Dice < ``failure_dice``.

    Uses the scores that have both a Dice and an uncertainty; a missed structure (no
    score) counts as scored above every other, as in :func:`variant_statistics` (this
    is its ``review`` AUROC). Returns None when the set has no failures or no
    successes (the AUROC is then undefined).
    """
    rows = [(s.dice, _variant_score(s, None)) for s in scores if s.dice is not None]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return None
    failed = np.array([d for d, _ in rows], dtype=float) < failure_dice
    auroc, _ = failure_auroc([u for _, u in rows], failed)
    return auroc


@dataclass
class StructureSummary:
    """Mean, SD and minimum of Dice and ASSD of one structure over cases.

    Missed and false-positive cases count in the Dice figures with Dice 0 (their number
    is ``n_missed`` / ``n_false_positive``); the ASSD figures use the cases where it is
    defined.
    """

    structure: str
    n_cases: int
    dice_mean: float | None
    dice_sd: float | None
    dice_min: float | None
    assd_mean_mm: float | None
    assd_sd_mm: float | None
    n_missed: int = 0
    n_false_positive: int = 0


def summarise(scores: Sequence[StructureScore]) -> list[StructureSummary]:
    """Per-structure summary over cases, in the order structures first appear."""
    order: list[str] = []
    for s in scores:
        if s.structure not in order:
            order.append(s.structure)
    out = []
    for key in order:
        d = np.array([s.dice for s in scores if s.structure == key and s.dice is not None])
        a = np.array([s.assd_mm for s in scores if s.structure == key and s.assd_mm is not None])
        out.append(StructureSummary(
            structure=key,
            n_cases=sum(1 for s in scores if s.structure == key),
            dice_mean=float(d.mean()) if d.size else None,
            dice_sd=float(d.std(ddof=1)) if d.size > 1 else None,
            dice_min=float(d.min()) if d.size else None,
            assd_mean_mm=float(a.mean()) if a.size else None,
            assd_sd_mm=float(a.std(ddof=1)) if a.size > 1 else None,
            n_missed=sum(1 for s in scores if s.structure == key and s.missed),
            n_false_positive=sum(1 for s in scores if s.structure == key and s.false_positive),
        ))
    return out


@dataclass
class VolumeAgreement:
    """Agreement of one structure's predicted volumes with the reference over cases.

    Volumes in cm3. ``pearson_r`` and the Bland-Altman figures (bias = mean of
    predicted - reference, SD of the differences with ddof 1, limits bias +- 1.96 SD)
    are None when undefined; ``note`` then says why.
    """

    structure: str
    n_cases: int
    mean_pred_cm3: float | None
    mean_ref_cm3: float | None
    pearson_r: float | None
    bias_cm3: float | None
    sd_diff_cm3: float | None
    lower_loa_cm3: float | None
    upper_loa_cm3: float | None
    meets_target_r: bool | None
    note: str = ""


def volume_agreement(scores: Sequence[StructureScore],
                     target_r: float = TARGET_VOLUME_R) -> list[VolumeAgreement]:
    """Per-structure volume correlation and Bland-Altman agreement over cases.

    Uses :func:`CTMuscleBoneLib.stats.pearson_r` and
    :func:`CTMuscleBoneLib.stats.bland_altman`; see the module docstring for which
    cases count.
    """
    order: list[str] = []
    for s in scores:
        if s.structure not in order:
            order.append(s.structure)
    out = []
    for key in order:
        pairs = [(s.pred_volume_cm3, s.ref_volume_cm3) for s in scores
                 if s.structure == key and s.pred_volume_cm3 is not None
                 and s.ref_volume_cm3 is not None
                 and (s.pred_volume_cm3 > 0 or s.ref_volume_cm3 > 0)]
        p = np.array([a for a, _ in pairs], dtype=float)
        r = np.array([b for _, b in pairs], dtype=float)
        n = len(pairs)
        va = VolumeAgreement(key, n, float(p.mean()) if n else None,
                             float(r.mean()) if n else None, None, None, None, None, None,
                             None)
        if n < 3:
            va.note = f"needs at least 3 cases with the structure, got {n}"
        else:
            ba = bland_altman(p, r)
            va.bias_cm3, va.sd_diff_cm3 = ba.bias, ba.sd
            va.lower_loa_cm3, va.upper_loa_cm3 = ba.lower_loa, ba.upper_loa
            if p.std() == 0 or r.std() == 0:
                va.note = "r undefined: the volumes of one side are all equal"
            else:
                va.pearson_r = pearson_r(p, r)
                va.meets_target_r = va.pearson_r > target_r
        out.append(va)
    return out


# -- score variants: failure detection and rank correlation ---------------------------
def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation with average ranks for ties; None when undefined.

    Parameters
    ----------
    x, y : sequences of float, (n,)
        Paired values (``inf`` allowed: it ranks above every finite value; NaN is not).

    Returns
    -------
    float or None
        Pearson r of the average ranks; None for n < 3 or when either column is
        constant.
    """
    from scipy.stats import rankdata

    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise InputError(f"Spearman: the two columns differ in shape ({xa.shape}, {ya.shape}).")
    if np.isnan(xa).any() or np.isnan(ya).any():
        raise InputError("Spearman: a value is NaN; leave undefined pairs out first.")
    if xa.size < 3:
        return None
    rx, ry = rankdata(xa, method="average"), rankdata(ya, method="average")
    if rx.std() == 0 or ry.std() == 0:
        return None
    return pearson_r(rx, ry)


def failure_auroc(score: Sequence[float], failed: Sequence[bool]) -> tuple[float | None, str]:
    """AUROC of ``score`` for ``failed`` (ties one half), with a note when undefined.

    Returns
    -------
    (auroc, note) : (float or None, str)
        ``note`` is empty when the AUROC is defined, else says why not (no failure, no
        success, or no pairs).
    """
    s = np.asarray(score, dtype=float)
    f = np.asarray(failed, dtype=bool)
    if s.size == 0:
        return None, "undefined: no scored structures"
    if not f.any():
        return None, "undefined: no failures in the set"
    if f.all():
        return None, "undefined: every structure failed"
    # +inf (an absent structure) ranks above every finite score; roc_auc drops
    # non-finite scores, so map inf to a value above the finite maximum.
    finite = s[np.isfinite(s)]
    top = (finite.max() + 1.0) if finite.size else 1.0
    return roc_auc(np.where(np.isposinf(s), top, s), f), ""


def _variant_score(s: StructureScore, variant: str | None) -> float | None:
    """The score of one variant (None: ``s.uncertainty``); +inf for a missed structure of
    a case that came with uncertainty (None for one of a case without: not ranked)."""
    if s.missed:
        return float("inf") if s.case_has_uncertainty else None
    v = s.uncertainty if variant is None else s.variants.get(variant)
    return v


@dataclass
class VariantStatistics:
    """How well one structure score variant ranks segmentation errors.

    Attributes
    ----------
    variant : str
        ``"<map>:<region>"`` (or ``review`` for the review list's own score).
    n_pairs : int
        (case, structure) pairs with a Dice and a score.
    n_cases : int
    n_failures : int
        Pairs with Dice < ``failure_dice``.
    mean_dice : float or None
    auroc : float or None
        Failure-detection AUROC; None when undefined (``auroc_note`` says why).
    auroc_note : str
    spearman_pooled : float or None
        Spearman rho of score vs 1 - Dice over all pairs.
    spearman_case_mean : float or None
        Mean of the per-case Spearman rho over the ``n_cases_spearman`` cases where it
        is defined.
    n_cases_spearman : int
    failure_dice : float
    """

    variant: str
    n_pairs: int
    n_cases: int
    n_failures: int
    mean_dice: float | None
    auroc: float | None
    auroc_note: str
    spearman_pooled: float | None
    spearman_case_mean: float | None
    n_cases_spearman: int
    failure_dice: float = FAILURE_DICE

    def to_dict(self) -> dict:
        return asdict(self)


def variant_names(scores: Sequence[StructureScore]) -> list[str]:
    """The score variant names present in ``scores``, in first-seen order."""
    out: list[str] = []
    for s in scores:
        for k in s.variants:
            if k not in out:
                out.append(k)
    return out


def variant_statistics(scores: Sequence[StructureScore], variant: str | None,
                       failure_dice: float = FAILURE_DICE) -> VariantStatistics:
    """AUROC and Spearman rho of one score variant over (case, structure) pairs.

    Parameters
    ----------
    scores : sequence of StructureScore
        From :func:`evaluate_label_maps` with ``variants`` (or ``uncertainty``).
    variant : str or None
        Variant name; None uses each score's ``uncertainty`` (the review score).
    failure_dice : float
        Dice below which a structure counts as failed.

    See the module docstring for the definitions.
    """
    rows = [(s.case, s.dice, _variant_score(s, variant)) for s in scores
            if s.dice is not None]
    rows = [r for r in rows if r[2] is not None]
    dice_arr = np.array([r[1] for r in rows], dtype=float)
    score_arr = np.array([r[2] for r in rows], dtype=float)
    auroc, note = failure_auroc(score_arr, dice_arr < failure_dice)
    pooled = spearman_rho(score_arr, 1.0 - dice_arr) if rows else None
    cases = list(dict.fromkeys(r[0] for r in rows))
    per_case = []
    for c in cases:
        idx = [i for i, r in enumerate(rows) if r[0] == c]
        rho = spearman_rho(score_arr[idx], 1.0 - dice_arr[idx])
        if rho is not None:
            per_case.append(rho)
    return VariantStatistics(
        variant=variant or "review", n_pairs=len(rows), n_cases=len(cases),
        n_failures=int((dice_arr < failure_dice).sum()),
        mean_dice=float(dice_arr.mean()) if rows else None,
        auroc=auroc, auroc_note=note, spearman_pooled=pooled,
        spearman_case_mean=float(np.mean(per_case)) if per_case else None,
        n_cases_spearman=len(per_case), failure_dice=failure_dice)


# -- voxel calibration -----------------------------------------------------------------
#: Confidence bins of the reliability diagram (10 equal bins: Guo et al., ICML 2017).
RELIABILITY_BINS = 10


@dataclass
class ReliabilityCounts:
    """Per-bin sums for a reliability diagram; add cases with :meth:`add`.

    Attributes
    ----------
    count : np.ndarray of int64, (n_bins,)
        Voxels per confidence bin.
    sum_confidence : np.ndarray of float64, (n_bins,)
    sum_correct : np.ndarray of float64, (n_bins,)
        Voxels whose predicted structure equals the reference.
    """

    count: np.ndarray
    sum_confidence: np.ndarray
    sum_correct: np.ndarray

    @classmethod
    def empty(cls, n_bins: int = RELIABILITY_BINS) -> ReliabilityCounts:
        if n_bins < 1:
            raise InputError(f"Reliability: n_bins must be >= 1, got {n_bins}.")
        return cls(np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins))

    @property
    def n_bins(self) -> int:
        return int(self.count.size)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add voxels: ``confidence`` in [0, 1] and ``correct`` (bool), same shape."""
        c = np.asarray(confidence, dtype=np.float64).ravel()
        ok = np.asarray(correct, dtype=bool).ravel()
        if c.shape != ok.shape:
            raise InputError(f"Reliability: confidence ({c.size}) and correctness "
                             f"({ok.size}) differ in size.")
        if c.size and (not np.isfinite(c).all() or c.min() < 0 or c.max() > 1 + 1e-6):
            raise InputError("Reliability: confidences must be finite and in [0, 1].")
        m = self.n_bins
        idx = np.clip(np.ceil(c * m).astype(np.int64) - 1, 0, m - 1)
        self.count += np.bincount(idx, minlength=m)
        self.sum_confidence += np.bincount(idx, weights=c, minlength=m)
        self.sum_correct += np.bincount(idx, weights=ok.astype(np.float64), minlength=m)


@dataclass
class ReliabilityDiagram:
    """Reliability diagram and expected calibration error (see the module docstring).

    Attributes
    ----------
    bin_edges : list of float, (n_bins + 1,)
    count : list of int, (n_bins,)
    mean_confidence, accuracy : list of float or None, (n_bins,)
        None for empty bins.
    ece : float or None
        Expected calibration error (fraction, 0-1); None without voxels.
    n_voxels : int
    """

    bin_edges: list[float]
    count: list[int]
    mean_confidence: list[float | None]
    accuracy: list[float | None]
    ece: float | None
    n_voxels: int

    def to_dict(self) -> dict:
        return asdict(self)


def reliability_diagram(counts: ReliabilityCounts) -> ReliabilityDiagram:
    """Per-bin mean confidence and accuracy, and the ECE, from accumulated counts."""
    n = counts.count.astype(float)
    total = int(counts.count.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = counts.sum_confidence / n
        acc = counts.sum_correct / n
    ece = None
    if total:
        filled = n > 0
        ece = float(np.sum(n[filled] / total * np.abs(acc[filled] - conf[filled])))
    return ReliabilityDiagram(
        bin_edges=[float(e) for e in np.linspace(0.0, 1.0, counts.n_bins + 1)],
        count=[int(v) for v in counts.count],
        mean_confidence=[float(v) if k else None for v, k in zip(conf, n, strict=True)],
        accuracy=[float(v) if k else None for v, k in zip(acc, n, strict=True)],
        ece=ece, n_voxels=total)


def _canonical_values(labels: LabelMap) -> np.ndarray:
    """Label array with each value mapped to its structure's canonical value (else -1)."""
    from ..anatomy import BY_KEY

    arr = np.asarray(labels.array)
    lut_max = int(arr.max()) if arr.size else 0
    lut = np.full(max(lut_max, 0) + 1, -1, dtype=np.int32)
    lut[0] = 0
    for v, key in labels.structures.items():
        if 0 < int(v) <= lut_max and key in BY_KEY:
            lut[int(v)] = BY_KEY[key].label_value
    if arr.size and int(arr.min()) < 0:
        raise InputError("A label map holds negative values; it is not a label map.")
    return lut[arr]


def add_reliability(counts: ReliabilityCounts, confidence: np.ndarray, pred: LabelMap,
                    ref: LabelMap, margin_voxels: int = 2) -> None:
    """Add one case's voxels to ``counts`` (voxels chosen as in the module docstring).

    Parameters
    ----------
    confidence : np.ndarray of float, (n0, n1, n2)
        Maximum mean softmax probability on the grid of ``pred`` and ``ref``.
    pred, ref : LabelMap
        Structures are compared by anatomy key (label values may differ).
    margin_voxels : int
        Growth of the structure region (face-connected dilations).
    """
    conf = np.asarray(confidence)
    if conf.shape != pred.array.shape or pred.array.shape != ref.array.shape:
        raise InputError(f"Reliability: confidence {conf.shape}, prediction "
                         f"{pred.array.shape} and reference {ref.array.shape} differ in shape.")
    p, r = _canonical_values(pred), _canonical_values(ref)
    region = (p != 0) | (r != 0)
    if margin_voxels > 0 and region.any():
        region = ndimage.binary_dilation(region, _FACE_STRUCTURE, iterations=margin_voxels)
    counts.add(np.clip(conf[region], 0.0, 1.0), p[region] == r[region])
