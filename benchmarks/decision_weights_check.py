"""Would per-structure decision weights lift the thin muscles? A cross-validated check.

Run on demand; not a test. The label is the argmax of the mean softmax. A Bayes
decision with structure-dependent costs labels a voxel ``argmax_c w_c p_c`` instead, and
weights fitted for Dice can lift a structure the plain argmax under-segments. This
script measures whether that would help a model, without letting it choose its weights
on the phantoms it is scored on:

1. it segments calibration phantoms (:func:`.synthetic.mixed_spec`, seeds ``50000..``:
   none of the demo model's training (20000..), held-out (30000..) or uncertainty-study
   (40000..) seeds) with the model's card and ``return_probabilities`` (the mixture the
   label is the argmax of, on the CT grid);
2. per phantom it keeps, at every voxel whose top probability is below 0.9, the four
   largest probabilities (a weight ratio below 9 cannot move any other voxel: the range
   searched is 0.5-3, ratio 6); the truth is merged into the model's groups (lumbar
   levels into the one lumbar class, as the network sees them);
3. it fits one weight per structure (background fixed at 1) by coordinate ascent over
   15 log-spaced values in 0.5-3 (2 sweeps), maximising the mean Dice over structures
   and phantoms, on one half of the phantoms, and scores the other half with and
   without the weights (2 folds, every phantom scored once).

The labels compared are the plain and the weighted argmax, both before the largest-
component clean-up::

    python benchmarks/decision_weights_check.py --phantoms 6 --out weights.json

About 5 minutes per phantom on one CPU thread with the bundled model (1-3.5 mm
phantoms); up to 5 GB of memory for a 1 mm phantom's probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

#: First calibration seed (none of the demo model's training, held-out or study seeds).
FIRST_SEED = 50000
#: Voxels whose top probability reaches this cannot change label under the weights tried.
CONFIDENT = 0.9
#: Weights tried per structure (the ratio of the extremes, 6, stays below 1 / 0.1 - 1).
WEIGHTS = np.exp(np.linspace(np.log(0.5), np.log(3.0), 15)).astype(np.float32)
TOP_K = 4


@dataclass
class Case:
    """One phantom, reduced to what the weights can change.

    ``top_channels`` / ``top_probabilities`` (n, K): the K most probable channels of the
    n unconfident voxels; ``truth`` (n,): their true channel; ``fixed_pred`` /
    ``fixed_hit`` / ``truth_count`` (C,): voxel counts over the confident voxels (the
    plain argmax, the argmax where it is right) and over all voxels (the truth).
    """

    name: str
    top_channels: np.ndarray
    top_probabilities: np.ndarray
    truth: np.ndarray
    fixed_pred: np.ndarray
    fixed_hit: np.ndarray
    truth_count: np.ndarray


def reduce_case(name: str, probabilities: np.ndarray, truth: np.ndarray) -> Case:
    """``probabilities`` float32 (C, n0, n1, n2); ``truth`` int channel per voxel."""
    n_ch = probabilities.shape[0]
    tops_c, tops_p, truths = [], [], []
    fixed_pred = np.zeros(n_ch, np.int64)
    fixed_hit = np.zeros(n_ch, np.int64)
    for i in range(probabilities.shape[1]):  # slab by slab: bounded temporaries
        p = probabilities[:, i].reshape(n_ch, -1)
        t = truth[i].ravel()
        top = p.max(axis=0)
        sure = top >= CONFIDENT
        a = np.argmax(p[:, sure], axis=0)
        fixed_pred += np.bincount(a, minlength=n_ch)
        fixed_hit += np.bincount(a[a == t[sure]], minlength=n_ch)
        q = p[:, ~sure].T
        order = np.argsort(-q, axis=1)[:, :TOP_K]
        tops_c.append(order.astype(np.int16))
        tops_p.append(np.take_along_axis(q, order, axis=1))
        truths.append(t[~sure])
    return Case(name, np.concatenate(tops_c), np.concatenate(tops_p),
                np.concatenate(truths), fixed_pred, fixed_hit,
                np.bincount(truth.ravel(), minlength=n_ch))


def dice_per_channel(case: Case, weights: np.ndarray) -> np.ndarray:
    """Dice per channel (C,) of the weighted argmax; NaN where the truth lacks it."""
    n_ch = len(weights)
    pick = np.argmax(case.top_probabilities * weights[case.top_channels], axis=1)
    lab = np.take_along_axis(case.top_channels, pick[:, None], axis=1)[:, 0]
    pred = case.fixed_pred + np.bincount(lab, minlength=n_ch)
    hit = case.fixed_hit + np.bincount(lab[lab == case.truth], minlength=n_ch)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * hit / (pred + case.truth_count)
    d[case.truth_count == 0] = np.nan
    d[0] = np.nan  # background is not scored
    return d


def objective(cases: list[Case], weights: np.ndarray) -> float:
    return float(np.mean([np.nanmean(dice_per_channel(c, weights)) for c in cases]))


def fit_weights(cases: list[Case], n_channels: int, sweeps: int = 2) -> np.ndarray:
    """Coordinate ascent of one weight per channel (background stays 1)."""
    w = np.ones(n_channels, np.float32)
    for _ in range(sweeps):
        for c in range(1, n_channels):
            best, best_w = -1.0, w[c]
            for g in WEIGHTS:
                trial = w.copy()
                trial[c] = g
                o = objective(cases, trial)
                if o > best + 1e-6:
                    best, best_w = o, g
            w[c] = best_w
    return w


def segment_case(seed: int, card, network, threads: int) -> Case:
    """Segment one calibration phantom; reduce it to a :class:`Case`."""
    from dataclasses import replace

    import torch
    from CTMuscleBoneLib.anatomy import BY_LABEL_VALUE
    from CTMuscleBoneLib.phantoms import make_phantom
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.training.datasets import reference_for
    from CTMuscleBoneLib.segmentation.training.make_demo_model import phantom_spec
    from CTMuscleBoneLib.segmentation.vertebra_levels import LUMBAR_KEY

    if threads:
        torch.set_num_threads(threads)
    phantom = make_phantom(phantom_spec(seed, "mixed", "full", (1.0, 3.5)))
    cfg = replace(card.inference, return_probabilities=True)
    res = predict(phantom.ct, network, card.input, cfg, card.labels, device="cpu")
    ref, _ = reference_for(phantom.labels, card.structure_keys)
    channel_of = {key: int(ch) for ch, key in card.labels.items()}
    lut = np.zeros(max(BY_LABEL_VALUE) + 1, np.int16)
    for value, key in ref.structures.items():
        if key.startswith("vertebrae_L") and LUMBAR_KEY in channel_of:
            key = LUMBAR_KEY  # the levels are numbered after the argmax
        lut[value] = channel_of.get(key, 0)
    assert res.probabilities is not None
    return reduce_case(f"seed{seed}", res.probabilities, lut[ref.array])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ctmusclebone-demo-synthetic")
    ap.add_argument("--phantoms", type=int, default=6, help="calibration phantoms (>= 2)")
    ap.add_argument("--first-seed", type=int, default=FIRST_SEED)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)
    from CTMuscleBoneLib.errors import CTMuscleBoneError
    from CTMuscleBoneLib.segmentation.registry import load_model

    if args.phantoms < 2:
        print("decision_weights_check: error: --phantoms must be >= 2 (two folds).",
              file=sys.stderr)
        return 2
    try:
        card, network = load_model(args.model)
    except CTMuscleBoneError as e:
        print(f"decision_weights_check: error: {e}", file=sys.stderr)
        return 2
    cases = []
    for i in range(args.phantoms):
        t = time.perf_counter()
        cases.append(segment_case(args.first_seed + i, card, network, args.threads))
        print(f"{cases[-1].name}: {len(cases[-1].truth)} unconfident voxels, "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    n_ch = card.architecture.out_channels
    folds = [(cases[0::2], cases[1::2]), (cases[1::2], cases[0::2])]
    plain = np.ones(n_ch, np.float32)
    rows: dict[str, dict[str, float | list[float]]] = {}
    before, after, fitted = [], [], []
    for train, test in folds:
        w = fit_weights(train, n_ch)
        fitted.append(w)
        before += [dice_per_channel(c, plain) for c in test]
        after += [dice_per_channel(c, w) for c in test]
    with warnings.catch_warnings():  # a channel no phantom has (the iliacus) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        b, a = np.nanmean(before, axis=0), np.nanmean(after, axis=0)
    print(f"\nmodel {card.name} {card.version} (synthetic demo model), "
          f"{args.phantoms} calibration phantoms, seeds {args.first_seed}.., 2 folds")
    print(f"{'structure':36}{'weights':>12}{'plain':>8}{'weighted':>10}{'change':>9}")
    for ch in range(1, n_ch):
        key = card.labels.get(ch)
        if key is None or np.isnan(b[ch]):
            continue
        ws = [float(w[ch]) for w in fitted]
        rows[key] = {"weights": ws, "dice_plain": float(b[ch]), "dice_weighted": float(a[ch])}
        print(f"{key:36}{ws[0]:6.2f}{ws[1]:6.2f}{b[ch]:8.4f}{a[ch]:10.4f}{a[ch] - b[ch]:+9.4f}")
    mb, ma = float(np.nanmean(b)), float(np.nanmean(a))
    print(f"{'mean over structures':36}{'':12}{mb:8.4f}{ma:10.4f}{ma - mb:+9.4f}")
    if args.out:
        from CTMuscleBoneLib.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps({
            "model": card.name, "version": card.version, "phantoms": args.phantoms,
            "first_seed": args.first_seed, "structures": rows,
            "mean_plain": mb, "mean_weighted": ma}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
