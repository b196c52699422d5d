"""Agreement and diagnostic statistics for validation against DXA.

Pure NumPy implementations (no scikit-learn dependency) of Pearson r, RMSE,
Bland-Altman bias and 95 % limits of agreement (Bland & Altman, Lancet 1986),
ROC AUC by the Mann-Whitney U statistic (ties counted one half; Hanley & McNeil,
Radiology 1982) and K-fold splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


def _pair(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise InputError(f"{what}: the two columns have different lengths ({x.size}, {y.size}).")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        raise InputError(f"{what}: at least 3 complete pairs are needed, got {int(ok.sum())}.")
    return x[ok], y[ok]


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation coefficient of paired values, shape (n,) each."""
    x, y = _pair(x, y, "Pearson r")
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        raise InputError("Pearson r: one column is constant; correlation is undefined.")
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def rmse(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Root-mean-square error, in the unit of the inputs."""
    p, r = _pair(predicted, reference, "RMSE")
    return float(np.sqrt(np.mean((p - r) ** 2)))


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of a method against a reference (same unit as inputs)."""

    bias: float  # mean of (method - reference)
    sd: float  # SD of the differences (ddof=1)
    lower_loa: float  # bias - 1.96 SD
    upper_loa: float  # bias + 1.96 SD
    n: int


def bland_altman(method: np.ndarray, reference: np.ndarray) -> BlandAltman:
    """Bias and 95 % limits of agreement (bias +- 1.96 SD of the differences)."""
    m, r = _pair(method, reference, "Bland-Altman")
    d = m - r
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return BlandAltman(bias, sd, bias - 1.96 * sd, bias + 1.96 * sd, int(d.size))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve.

    Parameters
    ----------
    scores : np.ndarray, (n,)
        Higher score = more likely positive. (Pass ``-bmd`` when low BMD is positive.)
    positive : np.ndarray of bool, (n,)
        True for cases with the condition.

    Returns
    -------
    float
        AUC in [0, 1]; ties count one half (Mann-Whitney U / (n_pos * n_neg)).
    """
    s = np.asarray(scores, dtype=float).ravel()
    p = np.asarray(positive, dtype=bool).ravel()
    if s.shape != p.shape:
        raise InputError("ROC AUC: scores and labels have different lengths.")
    ok = np.isfinite(s)
    s, p = s[ok], p[ok]
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(
            f"ROC AUC needs cases with and without the condition; got {n_pos} positive "
            f"and {n_neg} negative."
        )
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=float)
    sorted_s = s[order]
    # average ranks for ties
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[p].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train, test) index pairs covering ``range(n)``; k <= n."""
    if k < 2 or k > n:
        raise InputError(f"Cross-validation needs 2 <= folds <= cases; got {k} folds, {n} cases.")
    idx = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(idx, k)
    return [(np.concatenate(folds[:i] + folds[i + 1 :]), folds[i]) for i in range(k)]


def bootstrap_ci(
    statistic,
    *arrays: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic of paired cases.

    Parameters
    ----------
    statistic : callable
        ``statistic(*resampled_arrays) -> float``.
    *arrays : np.ndarray, (n,) each
        Paired per-case values, resampled together (cases with replacement).
    n_boot : int
        Bootstrap resamples; those where the statistic is undefined (e.g. a resample
        with no positive case for an AUC) are skipped.
    level : float
        Confidence level (0.95: 2.5th and 97.5th percentiles; Efron & Tibshirani 1993).

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN when fewer than 100 resamples gave a value.
    """
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            v = float(statistic(*(a[idx] for a in arrs)))
        except InputError:
            continue
        if np.isfinite(v):
            values.append(v)
    if len(values) < 100:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
