"""Which dropout placement and structure score rank segmentation errors best.

For each model folder (e.g. one recipe trained with dropout at ``head``, ``decoder`` and
``all``) and each phantom of an evaluation set (held-out seeds, with perturbations:
noise, blur, metal streaks, atrophy, truncation, unusual sizes), :func:`run_study`
segments the phantom with T Monte-Carlo samples, scores every structure against the
phantom's truth (Dice) and computes, per model and per score variant
(:data:`.uncertainty.SCORE_VARIANTS`), the failure-detection AUROC (failure = Dice <
0.8) and the Spearman rho of the score with 1 - Dice (:mod:`.evaluate` gives the
definitions), and the voxel reliability diagram with its expected calibration error.

Outputs (:func:`write_outputs`): ``uncertainty_variants.csv`` (rows model x variant;
columns AUROC, Spearman pooled and per-case mean, failures, mean Dice),
``uncertainty_variants.json`` (the same plus per-structure scores and the reliability
diagrams), ``reliability.png`` and ``score_vs_error.png`` (matplotlib, the ``reports``
extra). ``ctmusclebone evaluate`` writes the same files for one model or for
segmentations of a site's own labelled CTs.

Run::

    python -m CTMuscleBoneLib.segmentation.uncertainty_study \\
        --models runs/head runs/decoder runs/all --phantoms 18 --out study/

A study split into runs (``--first-seed S --phantoms 1 --kinds K`` per process: the
same phantom as the S - 40000'th of one run) is combined with ``--merge RUN ...``.

The reference for the targets: Soufi et al., Sci Rep 15:125 (2025), AUROC >= 0.95 for
structure-wise uncertainty on real CTs; this project's targets (issue tracker) are
AUROC >= 0.9 and Spearman >= 0.6 for the default variant, unvalidated on real CTs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open, atomic_write_text
from ..errors import CTMuscleBoneError, InputError
from .evaluate import (
    FAILURE_DICE,
    RELIABILITY_BINS,
    ReliabilityCounts,
    ReliabilityDiagram,
    StructureScore,
    VariantStatistics,
    add_reliability,
    evaluate_label_maps,
    reliability_diagram,
    variant_names,
    variant_statistics,
)
from .uncertainty import SCORE_VARIANTS

#: Perturbation kinds of the evaluation set, cycled over the phantoms in this order.
PERTURBATION_KINDS: tuple[str, ...] = (
    "clean", "noise", "blur", "metal", "atrophy", "obese", "truncation", "small", "large",
)
#: First seed of the evaluation phantoms: the perturbed held-out range
#: (:data:`.training.synthetic.PERTURBED_SEEDS`), never trained on.
EVAL_FIRST_SEED = 40000
#: Default region and voxel-size range of the evaluation phantoms (this project's
#: choice: the whole hip-to-lumbar range at clinical-to-coarse spacing).
EVAL_REGION = "full"
EVAL_SPACING_RANGE_MM = (1.5, 3.5)


# -- the evaluation set ----------------------------------------------------------------
def _fallback_perturbed_spec(seed: int, kind: str, region: str | tuple[float, float],
                             spacing_range_mm: tuple[float, float],
                             orientations: tuple[str, ...]) -> Any:
    """A perturbed spec from PhantomSpec fields (used without ``perturbed_spec``).

    Amplitudes are synthetic design choices meant to make a model fail on some
    structures, not population statistics. ``obese`` has no PhantomSpec field here and
    falls back to a fattier body (fat HU lower, more intramuscular fat).
    """
    from ..phantoms.layout import REGIONS_Z_MM
    from .training.synthetic import varied_spec

    spec = varied_spec(seed, region=region, spacing_range_mm=spacing_range_mm,
                       orientations=orientations)
    z0, z1 = REGIONS_Z_MM[region] if isinstance(region, str) else region
    changes: dict[str, Any] = {
        "clean": {},
        "noise": {"noise_sd_hu": 60.0},
        "blur": {"psf_fwhm_mm": 5.0},
        "metal": {"metal": ("femoral_stem_left",), "metal_streak_hu": 500.0},
        "atrophy": {"muscle_fat_fraction": 0.55},
        "obese": {"hu_fat": -120.0, "muscle_fat_fraction": 0.3},
        "truncation": {"truncation": ("inferior", z0 + 0.35 * (z1 - z0))},
        "small": {"femur": {**spec.femur, "head_radius_mm": 17.0}},
        "large": {"femur": {**spec.femur, "head_radius_mm": 28.0}},
    }[kind]
    return replace(spec, **changes)


def evaluation_specs(n: int, first_seed: int = EVAL_FIRST_SEED,
                     kinds: Sequence[str] = PERTURBATION_KINDS,
                     region: str | tuple[float, float] = EVAL_REGION,
                     spacing_range_mm: tuple[float, float] = EVAL_SPACING_RANGE_MM,
                     orientations: Sequence[str] = ("LPS", "RAS", "permuted", "oblique"),
                     ) -> list[tuple[str, str, Any]]:
    """``n`` held-out phantom specs, perturbation kinds cycled.

    Uses :func:`.training.synthetic.perturbed_spec` (seed, kind, region, voxel-size
    range, storage orientations) when it exists, else
    :func:`_fallback_perturbed_spec` (PhantomSpec fields only).

    Returns
    -------
    list of (case name, kind, PhantomSpec)
    """
    from .training import synthetic

    if n < 1:
        raise InputError(f"The evaluation set needs at least 1 phantom, got {n}.")
    unknown = [k for k in kinds if k not in PERTURBATION_KINDS]
    if unknown or not kinds:
        raise InputError(f"Unknown perturbation kind(s) {unknown}; use {PERTURBATION_KINDS}.")
    perturbed = getattr(synthetic, "perturbed_spec", None)
    out = []
    for i in range(n):
        seed, kind = first_seed + i, kinds[i % len(kinds)]
        spec = (perturbed(seed, kind, region=region, spacing_range_mm=spacing_range_mm,
                          orientations=tuple(orientations))
                if perturbed is not None
                else _fallback_perturbed_spec(seed, kind, region, spacing_range_mm,
                                              tuple(orientations)))
        out.append((f"phantom-{seed}-{kind}", kind, spec))
    return out


# -- running models --------------------------------------------------------------------
@dataclass
class ModelEvaluation:
    """One model's scores over an evaluation set.

    Attributes
    ----------
    name : str
        Model label (card name, or the folder name when names repeat).
    placement : str
        Dropout placement of the network.
    mc_samples : int
    review_variant : str
        The variant its review list uses (``review_map:review_region``).
    scores : list of StructureScore
        One per (case, structure), with every score variant attached.
    reliability : ReliabilityCounts or None
    """

    name: str
    placement: str
    mc_samples: int
    review_variant: str
    scores: list[StructureScore] = field(default_factory=list)
    reliability: ReliabilityCounts | None = None

    def statistics(self, failure_dice: float = FAILURE_DICE) -> list[VariantStatistics]:
        """One row per score variant (:func:`variant_table`)."""
        return variant_table(self.scores, failure_dice)


def variant_table(scores: Sequence[StructureScore],
                  failure_dice: float = FAILURE_DICE) -> list[VariantStatistics]:
    """:func:`.evaluate.variant_statistics` of every variant the scores carry.

    Variants in :data:`SCORE_VARIANTS` order first, then any others; when no score
    carries variants, one row ``review`` from each score's ``uncertainty``.
    """
    names = variant_names(scores)
    ordered = [v for v in SCORE_VARIANTS if v in names] + [
        v for v in names if v not in SCORE_VARIANTS]
    if not ordered:
        return [variant_statistics(scores, None, failure_dice)]
    return [variant_statistics(scores, v, failure_dice) for v in ordered]


def run_study(model_dirs: Sequence[str | Path], specs: Sequence[tuple[str, str, Any]],
              mc_samples: int | None = None, device: str = "auto",
              n_bins: int = RELIABILITY_BINS, with_surface: bool = False,
              progress: Any = None) -> list[ModelEvaluation]:
    """Segment every phantom with every model; scores, variants and reliability.

    Parameters
    ----------
    model_dirs : sequence of model folders or installed model names
    specs : sequence of (case name, kind, PhantomSpec)
        From :func:`evaluation_specs`. Each phantom is built once and run through
        every model.
    mc_samples : int, optional
        Monte-Carlo samples T (default: each card's).
    device : 'auto' (CUDA when available), 'cpu', 'cuda'
    n_bins : int
        Bins of the reliability diagram.
    with_surface : bool
        Also compute the ASSD (slower).
    progress : callable(str), optional
        Called with one line per (phantom, model).

    Returns
    -------
    list of ModelEvaluation, in the order of ``model_dirs``.
    """
    from ..phantoms import make_phantom
    from .inference import predict, resolve_device
    from .registry import load_model
    from .training.datasets import reference_for

    if not model_dirs:
        raise InputError("The study needs at least one model folder.")
    if mc_samples is not None and mc_samples < 1:
        raise InputError(f"--samples must be >= 1, got {mc_samples}.")
    dev = resolve_device(device)
    loaded = [load_model(str(d)) for d in model_dirs]
    names = [card.name for card, _ in loaded]
    if len(set(names)) < len(names):
        names = [f"{card.name} ({Path(str(d)).name})"
                 for (card, _), d in zip(loaded, model_dirs, strict=True)]
    evals = []
    for (card, _), name in zip(loaded, names, strict=True):
        inf = card.inference
        t = mc_samples or inf.mc_samples
        evals.append(ModelEvaluation(
            name, card.architecture.dropout_placement, t,
            f"{inf.review_map}:{inf.review_region}",
            reliability=ReliabilityCounts.empty(n_bins)))
    for case, kind, spec in specs:
        phantom = make_phantom(spec)
        for (card, network), ev in zip(loaded, evals, strict=True):
            inf = card.inference
            if mc_samples is not None:
                inf = replace(inf, mc_samples=mc_samples,
                              mc_batch_size=min(inf.mc_batch_size, mc_samples))
            res = predict(phantom.ct, network, card.input, inf, card.labels, device=dev,
                          source=card.name, return_confidence=True)
            variants = {v.key: v.scores for v in res.score_variants}
            review = {r.key: r.score for r in res.review if r.score is not None}
            # the truth merged into the model's groups (thigh compartments, one lumbar
            # class numbered by inference)
            reference, keys = reference_for(phantom.labels, card.structure_keys)
            ev.scores += evaluate_label_maps(
                res.label_map, reference, keys, case=case,
                uncertainty=review, with_surface=with_surface, variants=variants)
            assert ev.reliability is not None
            add_reliability(ev.reliability, res.confidence, res.label_map, reference)
            if progress is not None:
                d = [s.dice for s in ev.scores if s.case == case and s.dice is not None]
                progress(f"{case} ({kind}) {ev.name}: mean Dice "
                         f"{np.mean(d) if d else float('nan'):.3f}")
    return evals


# -- combining runs --------------------------------------------------------------------
def load_evaluations(paths: Sequence[str | Path]) -> tuple[list[ModelEvaluation],
                                                           list[dict[str, Any]]]:
    """Model evaluations read back from study outputs and merged.

    A study can be split (one phantom per process or machine) and combined: the scores
    of the same model (name and placement) are concatenated, its reliability counts
    summed (recovered from each diagram's counts, mean confidence and accuracy).

    Parameters
    ----------
    paths : sequence of ``uncertainty_variants.json`` files or folders holding one

    Returns
    -------
    (list of ModelEvaluation, list of phantom entries)
        Models in the order first seen; the runs' ``phantoms`` lists concatenated.

    Raises
    ------
    InputError
        A missing or unreadable file, a model with different Monte-Carlo samples or
        review variant in two runs, or a case scored twice for the same model.
    """
    merged: dict[tuple[str, str], ModelEvaluation] = {}
    phantoms: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            path = path / "uncertainty_variants.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            models = doc["models"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"Cannot read the study output {path}: {e}. Give the "
                             "uncertainty_variants.json of a study run or its folder.") from e
        phantoms += list(doc.get("phantoms", []))
        for m in models:
            try:
                key = (str(m["name"]), str(m["placement"]))
                config = (int(m["mc_samples"]), str(m["review_variant"]))
                scores = [StructureScore(**d) for d in m.get("scores", [])]
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(f"The study output {path} holds a model entry this "
                                 f"version cannot read ({type(e).__name__}: {e}); rerun "
                                 "that part of the study.") from e
            ev = merged.get(key)
            if ev is None:
                ev = merged[key] = ModelEvaluation(key[0], key[1], *config)
            elif (ev.mc_samples, ev.review_variant) != config:
                raise InputError(f"Model {key[0]} ({key[1]}) was run with different "
                                 f"Monte-Carlo samples or review variant in {path}: merge "
                                 "runs of the same configuration only.")
            seen = {s.case for s in ev.scores}
            twice = sorted({s.case for s in scores} & seen)
            if twice:
                raise InputError(f"Case(s) {twice} of model {key[0]} appear in more than "
                                 f"one run ({path}): each case must be scored once.")
            ev.scores += scores
            diagram = m.get("reliability")
            if diagram:
                counts = _counts_from_diagram(diagram)
                if ev.reliability is None:
                    ev.reliability = counts
                elif ev.reliability.n_bins != counts.n_bins:
                    raise InputError(f"Reliability bins differ for model {key[0]} in {path}.")
                else:
                    ev.reliability.count += counts.count
                    ev.reliability.sum_confidence += counts.sum_confidence
                    ev.reliability.sum_correct += counts.sum_correct
    if not merged:
        raise InputError("No model evaluations in the given study outputs.")
    return list(merged.values()), phantoms


def _counts_from_diagram(d: dict[str, Any]) -> ReliabilityCounts:
    count = np.asarray(d["count"], dtype=np.int64)
    conf = np.asarray([0.0 if v is None else v for v in d["mean_confidence"]])
    acc = np.asarray([0.0 if v is None else v for v in d["accuracy"]])
    return ReliabilityCounts(count, conf * count, acc * count)


# -- outputs ---------------------------------------------------------------------------
TABLE_COLUMNS = ("model", "placement", "variant", "auroc", "auroc_note", "spearman_pooled",
                 "spearman_case_mean", "n_cases_spearman", "n_pairs", "n_failures",
                 "mean_dice", "ece")


def table_rows(evals: Sequence[ModelEvaluation], failure_dice: float
                ) -> list[dict[str, Any]]:
    rows = []
    for ev in evals:
        ece = (reliability_diagram(ev.reliability).ece
               if ev.reliability is not None else None)
        for st in ev.statistics(failure_dice):
            rows.append({"model": ev.name, "placement": ev.placement, **st.to_dict(),
                         "ece": ece, "review_default": st.variant == ev.review_variant})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The variant table as aligned text (one line per model x variant)."""
    def f(v: Any, nd: int = 3) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    lines = [f"{'model':24s} {'placement':18s} {'variant':31s} {'AUROC':>6s} "
             f"{'rho':>6s} {'rho/case':>8s} {'fail':>5s} {'pairs':>5s} {'Dice':>6s}"]
    for r in rows:
        mark = " *" if r.get("review_default") else ""
        lines.append(
            f"{r['model'][:24]:24s} {r['placement']:18s} {r['variant'] + mark:31s} "
            f"{f(r['auroc']):>6s} {f(r['spearman_pooled']):>6s} "
            f"{f(r['spearman_case_mean']):>8s} {r['n_failures']:5d} {r['n_pairs']:5d} "
            f"{f(r['mean_dice']):>6s}")
    if any(r["auroc"] is None for r in rows):
        notes = sorted({r["auroc_note"] for r in rows if r["auroc"] is None})
        lines.append("AUROC " + "; ".join(notes))
    lines.append("* = the variant the model's review list uses")
    return "\n".join(lines)


def write_outputs(out: str | Path, evals: Sequence[ModelEvaluation],
                  failure_dice: float = FAILURE_DICE, plots: bool = True,
                  extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the variant table (CSV + JSON) and, with ``plots``, the two PNG figures.

    Files in ``out``: ``uncertainty_variants.csv``, ``uncertainty_variants.json``,
    ``reliability.png`` (when any model has reliability counts) and
    ``score_vs_error.png`` (each model's review variant against 1 - Dice).
    """
    out = Path(out)
    rows = table_rows(evals, failure_dice)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in TABLE_COLUMNS])
    paths = {"csv": out / "uncertainty_variants.csv", "json": out / "uncertainty_variants.json"}
    atomic_write_text(paths["csv"], buf.getvalue())
    doc = {
        "failure_dice": failure_dice,
        "reference": "Soufi et al., Sci Rep 15:125 (2025): AUROC >= 0.95 on real CTs",
        "predictive_variance": "mean over classes of the per-class variance over samples",
        "regions": {"inside": "voxels of the predicted structure",
                    "band": "voxels within band_mm (2 mm) of its surface, both sides"},
        **(extra or {}),
        "table": rows,
        "models": [{
            "name": ev.name, "placement": ev.placement, "mc_samples": ev.mc_samples,
            "review_variant": ev.review_variant,
            "reliability": (reliability_diagram(ev.reliability).to_dict()
                            if ev.reliability is not None else None),
            "scores": [s.to_dict() for s in ev.scores],
        } for ev in evals],
    }
    atomic_write_text(paths["json"], json.dumps(_finite(doc), indent=2) + "\n")
    if plots:
        diagrams = {ev.name: reliability_diagram(ev.reliability) for ev in evals
                    if ev.reliability is not None and ev.reliability.count.sum() > 0}
        if diagrams:
            paths["reliability"] = plot_reliability(diagrams, out / "reliability.png")
        paths["scatter"] = plot_score_vs_error(
            {ev.name: (ev.scores, ev.review_variant) for ev in evals},
            out / "score_vs_error.png", failure_dice)
    return paths


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats (an absent structure's inf) become None."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# -- figures ---------------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("The plots need matplotlib: pip install 'ctmusclebone[reports]'."
                         ) from None
    from ..figures import pyplot

    return pyplot()


def _save(fig: Any, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    return path


def plot_reliability(diagrams: dict[str, ReliabilityDiagram], path: str | Path) -> Path:
    """Reliability diagram (accuracy vs mean confidence per bin) of each model, as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    try:
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
        for name, d in diagrams.items():
            pts = [(c, a) for c, a in zip(d.mean_confidence, d.accuracy, strict=True)
                   if c is not None and a is not None]
            ece = "-" if d.ece is None else f"{d.ece:.3f}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{name} (ECE {ece}, {d.n_voxels} voxels)")
        ax.set_xlabel("confidence (max mean softmax probability)")
        ax.set_ylabel("accuracy (voxel label = reference)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title("Reliability diagram (voxels near structures)")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_score_vs_error(series: dict[str, tuple[Sequence[StructureScore], str]],
                        path: str | Path, failure_dice: float = FAILURE_DICE) -> Path:
    """Scatter of the structure score against 1 - Dice, one panel per model, as PNG.

    ``series``: model name -> (scores, variant name; ``review`` or a missing variant
    uses each score's ``uncertainty``). Missed structures (no score) are not drawn.
    """
    plt = _pyplot()
    n = max(len(series), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.0), squeeze=False)
    try:
        for ax, (name, (scores, variant)) in zip(axes[0], series.items(), strict=False):
            pts = []
            for s in scores:
                v = s.variants.get(variant, s.uncertainty if not s.variants else None)
                if s.dice is not None and v is not None:
                    pts.append((v, 1.0 - s.dice))
            fail = [p for p in pts if p[1] > 1.0 - failure_dice]
            ok = [p for p in pts if p[1] <= 1.0 - failure_dice]
            ax.scatter([p[0] for p in ok], [p[1] for p in ok], s=10, label="Dice >= "
                       f"{failure_dice:g}")
            ax.scatter([p[0] for p in fail], [p[1] for p in fail], s=14, color="tab:red",
                       label=f"failure (Dice < {failure_dice:g})")
            ax.axhline(1.0 - failure_dice, color="0.6", lw=0.8, ls="--")
            ax.set_xlabel(f"score: {variant}")
            ax.set_ylabel("1 - Dice")
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


# -- command line ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m CTMuscleBoneLib.segmentation.uncertainty_study",
        description="Compare dropout placements and structure score variants: segment "
        "held-out perturbed phantoms with each model and report failure-detection AUROC "
        "and Spearman rho per variant.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", nargs="+", help="model folders or installed model names")
    src.add_argument("--merge", nargs="+", metavar="RUN",
                     help="combine earlier runs (their output folders or "
                     "uncertainty_variants.json; e.g. one phantom per process) instead of "
                     "segmenting")
    p.add_argument("--phantoms", type=int, default=18, help="number of evaluation phantoms")
    p.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED,
                   help="seed of the first phantom (held-out range)")
    p.add_argument("--kinds", nargs="+", default=list(PERTURBATION_KINDS),
                   help="perturbation kinds, cycled over the phantoms")
    p.add_argument("--region", default=EVAL_REGION,
                   help="phantom region (hip, lumbar, thigh, full)")
    p.add_argument("--spacing-mm", type=float, nargs=2, default=list(EVAL_SPACING_RANGE_MM),
                   metavar=("MIN", "MAX"), help="range of phantom voxel sizes, mm")
    p.add_argument("--orientations", nargs="+", default=["LPS", "RAS", "permuted", "oblique"],
                   help="storage orientations drawn for the phantoms")
    p.add_argument("--samples", type=int, help="Monte-Carlo samples T (default: the card's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--failure-dice", type=float, default=FAILURE_DICE,
                   help="Dice below which a structure counts as failed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.merge:
            evals, phantoms = load_evaluations(args.merge)
        else:
            specs = evaluation_specs(args.phantoms, args.first_seed, args.kinds, args.region,
                                     tuple(args.spacing_mm), args.orientations)
            evals = run_study(args.models, specs, args.samples, args.device,
                              progress=lambda m: print(m, file=sys.stderr))
            phantoms = [{"case": c, "kind": k} for c, k, _ in specs]
        rows = table_rows(evals, args.failure_dice)
        print(format_table(rows))
        paths = write_outputs(args.out, evals, args.failure_dice, plots=not args.no_plots,
                              extra={"phantoms": phantoms})
    except CTMuscleBoneError as e:
        print(f"uncertainty_study: error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
