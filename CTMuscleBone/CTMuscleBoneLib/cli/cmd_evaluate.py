"""``ctmusclebone evaluate``: Dice, surface distance, volume agreement and uncertainty AUROC.

Inputs
------
``--pred`` and ``--ref`` are each a label-map file, or a folder. Folders are matched by
case name: ``<case>.nii.gz`` files, or ``<case>/`` sub-folders holding the output of
``ctmusclebone segment`` (``labels.nii.gz`` + ``review.json``), or the segment output
folder itself. Label values are mapped to anatomy keys by the sidecar
``<name>.labels.json`` (written by CTMuscleBone), else by ``--pred-names`` /
``--ref-names`` (JSON value -> name), else as CTMuscleBone canonical values.

Pairing: one file on each side is one case, whatever the names. Otherwise cases are
paired by name; a case name given twice on one side is refused, and a prediction
without a reference (or a reference without a prediction) is left out with a warning
that names it (standard error and ``unmatched`` in ``evaluation.json``): a site may
segment more cases than it has annotated. ``--pred`` and ``--ref`` take label maps:
an image with negative or non-integer values (a CT, a probability map) is refused.

Scored structures (or ``--structures``): every structure the reference or the
prediction holds that both label tables name (the sidecar or ``--*-names``; a map read
as canonical values names every structure). So a reference structure that the model's
table does not name (it does not segment it) is not scored, and the ones left out are
listed on standard error. A structure in the reference and absent from the prediction is
scored Dice 0 (*missed*), one only in the prediction Dice 0 (*false positive*); both
are failures, have no surface distance, and are counted in the summary (``missed``,
``FP``) and named in ``evaluation.csv`` (``note``). A missed structure has no
uncertainty score: it counts as the most uncertain in the AUROC (the review list puts
absent structures first); it counts in the volume agreement with predicted volume 0
(a false positive with reference volume 0).

When a prediction folder holds ``review.json`` (structure-wise uncertainty from
``ctmusclebone segment``), the AUROC of that uncertainty for detecting Dice < 0.8 is
reported too (Soufi et al., Sci Rep 2025); when it holds ``score_variants`` (segment
output of this version), every score variant (3 maps x inside / boundary band) gets its
AUROC and Spearman rho with 1 - Dice (``uncertainty_variants.csv`` / ``.json`` and
``score_vs_error.png``), and a ``confidence.nii.gz`` beside the labels adds the
reliability diagram (``reliability.png``) with the expected calibration error.

``--model DIR --phantoms N`` instead segments N perturbed held-out phantoms with that
model and scores them (:mod:`CTMuscleBoneLib.segmentation.uncertainty_study`): a site's
check of a model on phantoms; for its own data it uses ``--pred`` / ``--ref``.

Over cases, per structure: volume agreement with the reference, Pearson r and
Bland-Altman bias and 95 % limits of agreement (cm3), with the originating project's
target r > 0.9 (``volume_agreement.csv`` and ``evaluation.json``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import anatomy
from ..atomic import atomic_write_text
from ..errors import InputError
from ..image import LabelMap
from ..io_ct import image_stem
from ..io_labels import read_names
from ..user_files import read_json_file

SEGMENT_LABELS = "labels.nii.gz"
SEGMENT_REVIEW = "review.json"
SEGMENT_CONFIDENCE = "confidence.nii.gz"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predicted label maps against references (Dice, ASSD, volume r and "
        "Bland-Altman, uncertainty AUROC)",
        description="Per-structure Dice and average symmetric surface distance (mm) of "
        "predicted label maps against reference label maps; over cases, volume correlation "
        "(Pearson r) and Bland-Altman agreement per structure; and the AUROC of the "
        "structure-wise uncertainty for flagging failures (Dice < threshold).",
    )
    p.add_argument("--pred", nargs="+",
                   help="predicted label map file(s), a folder of <case>.nii.gz, or folder(s) "
                   "written by `ctmusclebone segment` (needed unless --model)")
    p.add_argument("--ref", nargs="+",
                   help="reference label map file(s) or a folder of <case>.nii.gz (needed "
                   "unless --model)")
    p.add_argument("--model", help="instead of --pred/--ref: a model folder or installed "
                   "model name to segment --phantoms held-out perturbed phantoms with")
    p.add_argument("--phantoms", type=int, default=9,
                   help="with --model: number of evaluation phantoms (default 9: one per "
                   "perturbation kind)")
    p.add_argument("--phantom-seed", type=int, default=40000,
                   help="with --model: seed of the first phantom (default 40000, the "
                   "perturbed held-out range)")
    p.add_argument("--phantom-region", default="full",
                   help="with --model: phantom region, hip, lumbar, thigh or full "
                   "(default full)")
    p.add_argument("--phantom-spacing", type=float, nargs=2, default=[1.5, 3.5],
                   metavar=("MIN", "MAX"),
                   help="with --model: range of phantom voxel sizes in mm (default 1.5 3.5)")
    p.add_argument("--samples", type=int,
                   help="with --model: Monte-Carlo samples T (default: the model card's)")
    p.add_argument("--device", default="auto",
                   help="with --model: auto, cpu or cuda (default auto: a GPU when present)")
    p.add_argument("--no-plots", action="store_true",
                   help="do not write reliability.png and score_vs_error.png")
    p.add_argument("--pred-names", help="JSON label value -> name for the predictions")
    p.add_argument("--ref-names", help="JSON label value -> name for the references")
    p.add_argument("--structures", nargs="+", help="anatomy keys to score (default: every "
                   "structure the reference or the prediction holds that both label tables "
                   "name; a missed structure or a false positive scores Dice 0)")
    p.add_argument("--failure-dice", type=float, default=0.8,
                   help="Dice below which a structure counts as failed (default 0.8)")
    p.add_argument("--no-surface", action="store_true", help="skip the surface distance")
    p.add_argument("--out", help="folder for evaluation.csv, evaluation.json, "
                   "uncertainty_variants.csv/.json, volume_agreement.csv and the plots "
                   "(default: print only)")
    p.set_defaults(func=run)


def _collect(items: list[str], option: str = "--pred") -> dict[str, tuple[Path, Path | None]]:
    """Case name -> (label file, review.json or None); a name given twice is refused."""
    out: dict[str, tuple[Path, Path | None]] = {}

    def put(name: str, entry: tuple[Path, Path | None]) -> None:
        if name in out and out[name][0].resolve() != entry[0].resolve():
            raise InputError(
                f"{option}: two label maps give the case name '{name}' ({out[name][0]} and "
                f"{entry[0]}); cases are paired by name, so each name must appear once. "
                "Rename one, or evaluate them separately.")
        out[name] = entry

    def add_segment_dir(d: Path, name: str) -> None:
        rev = d / SEGMENT_REVIEW
        put(name, (d / SEGMENT_LABELS, rev if rev.is_file() else None))

    for item in items:
        p = Path(item)
        if not p.exists():
            raise InputError(f"'{p}' does not exist.")
        if p.is_file():
            stem = image_stem(p.name)
            if stem is None:
                raise InputError(f"'{p.name}' is not a label-map file (.nii.gz, .nrrd, .mha).")
            name = p.parent.name if p.name == SEGMENT_LABELS else stem
            rev = p.parent / SEGMENT_REVIEW
            put(name, (p, rev if p.name == SEGMENT_LABELS and rev.is_file() else None))
        elif (p / SEGMENT_LABELS).is_file():
            add_segment_dir(p, p.name)
        else:
            found = False
            for q in sorted(p.iterdir()):
                if q.is_dir() and (q / SEGMENT_LABELS).is_file():
                    add_segment_dir(q, q.name)
                    found = True
                elif q.is_file() and image_stem(q.name) is not None:
                    put(image_stem(q.name), (q, None))  # type: ignore[arg-type]
                    found = True
            if not found:
                raise InputError(f"No label maps in folder {p}.")
    return out


def read_label_file(path: Path, names_file: str | None = None
                    ) -> tuple[LabelMap, frozenset[str] | None]:
    """A label-map file with values mapped to anatomy keys (see module docstring).

    Values must be whole numbers >= 0, as ``measure`` requires of its labels (the same
    check, :func:`CTMuscleBoneLib.io_labels._as_label_array`): a CT or a probability
    map is refused.

    Returns
    -------
    labels : LabelMap
    table_keys : frozenset of str or None
        The anatomy keys its label table names (the structures this map could hold,
        present or not: a model's sidecar lists every class it predicts); None when the
        values are read as CTMuscleBone canonical values (no table: any structure).
    """
    from ..io_ct import label_sidecar_path, read_image
    from ..io_labels import _as_label_array, _refuse_scaled_labels

    _refuse_scaled_labels(Path(path))  # a rescaled label map would name other structures
    arr, geom = read_image(path)
    try:
        arr = _as_label_array(np.asarray(arr), str(path), [])
    except InputError as exc:
        raise InputError(f"{exc} evaluate --pred and --ref take label maps (whole numbers "
                         ">= 0, one per structure), not CT images.") from None
    side = label_sidecar_path(path)
    table: frozenset[str] | None = None
    if names_file:
        names = read_names(Path(names_file))
    elif side.is_file():
        try:
            names = read_names(side)
        except InputError:
            if arr.any():
                raise
            names, side = {}, Path()  # an empty map's empty table: nothing to name
    elif not arr.any():  # an empty map without a table (nothing predicted) needs no names
        names = {}
    else:
        names = {v: st.key for v, st in anatomy.BY_LABEL_VALUE.items()}
    if names_file or (names and side.is_file()):
        table = frozenset(k for n in names.values() if (k := anatomy.key_for_name(n)))
    structures, unknown = {}, {}
    for v in np.unique(arr).tolist():
        if v == 0:
            continue
        key = anatomy.key_for_name(names[v]) if v in names else None
        if key is None:
            unknown[int(v)] = names.get(v, f"label {v}")
        else:
            structures[int(v)] = key
    return LabelMap(arr, geom, structures, unknown, source=str(path)), table


def _read_variants(path: Path | None) -> dict[str, dict[str, float | None]] | None:
    """``score_variants`` of a segment review.json (None when absent: older output)."""
    if path is None:
        return None
    raw = read_json_file(path, "segment review file")
    sv = raw.get("score_variants") if isinstance(raw, dict) else None
    if not isinstance(sv, dict) or not isinstance(sv.get("structures"), dict):
        return None
    return {str(k): dict(v) for k, v in sv["structures"].items() if isinstance(v, dict)}


def _read_review(path: Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    raw = read_json_file(path, "segment review file")
    items = raw.get("structures", raw.get("review", [])) if isinstance(raw, dict) else raw
    out: dict[str, float] = {}
    for it in items:
        key = it.get("key") or it.get("structure")
        score = it.get("score", it.get("mean_uncertainty"))
        if key is not None and score is not None:
            out[str(key)] = float(score)
    return out


def run(args: argparse.Namespace) -> int:
    from ..segmentation.evaluate import (
        TARGET_VOLUME_R,
        evaluate_label_maps,
        failure_detection_auroc,
        summarise,
        volume_agreement,
    )

    if args.model:
        if args.pred or args.ref:
            raise InputError("Give either --model (phantom evaluation) or --pred and --ref, "
                             "not both.")
        return _run_model_on_phantoms(args)
    if not args.pred or not args.ref:
        raise InputError("evaluate needs --pred and --ref (label maps), or --model DIR to "
                         "evaluate a model on phantoms.")
    from ..atomic import check_output_dir
    from ..segmentation.evaluate import ReliabilityCounts, add_reliability
    from ..segmentation.uncertainty_study import ModelEvaluation, format_table, write_outputs

    if args.out is not None:  # never a folder holding, or inside, an input
        check_output_dir(args.out, [*args.pred, *args.ref, args.pred_names, args.ref_names])
    preds, refs = _collect(args.pred, "--pred"), _collect(args.ref, "--ref")
    unmatched: dict[str, list[str]] = {"predictions": [], "references": []}
    if len(preds) == 1 and len(refs) == 1:
        pairs = [(next(iter(preds)), next(iter(preds.values())), next(iter(refs.values())))]
    else:
        common = sorted(set(preds) & set(refs))
        if not common:
            raise InputError("No case names in common between --pred and --ref "
                             f"(pred: {sorted(preds)[:5]}, ref: {sorted(refs)[:5]}); cases "
                             "are paired by file or folder name.")
        pairs = [(c, preds[c], refs[c]) for c in common]
        unmatched = {"predictions": sorted(set(preds) - set(refs)),
                     "references": sorted(set(refs) - set(preds))}
        for side, names in unmatched.items():
            if names:
                other = "reference" if side == "predictions" else "prediction"
                print(f"warning: {len(names)} {side[:-1]}(s) without a {other} of the same name, "
                      f"left out: {_names(names)}", file=sys.stderr)
    scores = []
    not_scored: dict[str, set[str]] = {"references": set(), "predictions": set()}
    reliability = ReliabilityCounts.empty()
    for case, (pfile, review), (rfile, _) in pairs:
        pred, pred_table = read_label_file(pfile, args.pred_names)
        ref, ref_table = read_label_file(rfile, args.ref_names)
        keys = args.structures or _default_keys(pred, pred_table, ref, ref_table,
                                                not_scored)
        scores += evaluate_label_maps(pred, ref, keys, case=case,
                                      uncertainty=_read_review(review),
                                      with_surface=not args.no_surface,
                                      variants=_read_variants(review))
        conf = pfile.parent / SEGMENT_CONFIDENCE
        if pfile.name == SEGMENT_LABELS and conf.is_file():
            from ..io_ct import read_image

            carr, cgeom = read_image(conf)
            if not cgeom.same_grid(pred.geometry, tol_mm=1e-2):
                raise InputError(f"{conf} is not on the grid of {pfile}.")
            add_reliability(reliability, carr, pred, ref)
    if not any(s.dice is not None for s in scores):
        raise InputError(
            "Nothing to score: no structure is labelled in the reference or the prediction "
            f"({len(pairs)} case(s)). Check that --ref holds the annotations and --pred the "
            "predictions (label maps with their label names: a .labels.json beside the file, "
            "or --pred-names / --ref-names).")
    for side, keys_left in not_scored.items():
        if keys_left:
            other = "prediction" if side == "references" else "reference"
            print(f"note: structures of the {side} that the {other}s' label table does not "
                  f"name, not scored (give --structures to score them): "
                  f"{_names(sorted(keys_left, key=_order))}", file=sys.stderr)
    summary = summarise(scores)
    auroc = failure_detection_auroc(scores, args.failure_dice)
    print(f"{'structure':32s} {'n':>3s} {'Dice':>7s} {'(SD)':>7s} {'min':>6s} {'ASSD mm':>8s} "
          f"{'missed':>6s} {'FP':>3s}")
    for s in summary:
        print(f"{s.structure:32s} {s.n_cases:3d} {_f(s.dice_mean, 4):>7s} "
              f"{_f(s.dice_sd, 4):>7s} {_f(s.dice_min, 3):>6s} {_f(s.assd_mean_mm, 3):>8s} "
              f"{s.n_missed:6d} {s.n_false_positive:3d}")
    n_missed = sum(s.missed for s in scores)
    n_fp = sum(s.false_positive for s in scores)
    if n_missed or n_fp:
        print(f"(missed = in the reference, absent from the prediction; FP = only in the "
              f"prediction: Dice 0, no surface distance; {n_missed} missed, {n_fp} FP)")
    agreement = volume_agreement(scores)
    print(f"\nvolume agreement over cases (target r > {TARGET_VOLUME_R:g}):")
    print(f"{'structure':32s} {'n':>3s} {'r':>6s} {'bias cm3':>9s} {'LoA cm3':>19s}")
    for a in agreement:
        loa = ("-" if a.lower_loa_cm3 is None
               else f"{a.lower_loa_cm3:.1f} to {a.upper_loa_cm3:.1f}")
        print(f"{a.structure:32s} {a.n_cases:3d} {_f(a.pearson_r, 3):>6s} "
              f"{_f(a.bias_cm3, 1):>9s} {loa:>19s}" + (f"  ({a.note})" if a.note else ""))
    scored = [a for a in agreement if a.pearson_r is not None]
    if scored:
        print(f"volume r > {TARGET_VOLUME_R:g}: {sum(bool(a.meets_target_r) for a in scored)} "
              f"of {len(scored)} structures")
    n_fail = sum(1 for s in scores if s.dice is not None and s.dice < args.failure_dice)
    print(f"failed structures (Dice < {args.failure_dice:g}): {n_fail} of "
          f"{sum(1 for s in scores if s.dice is not None)}"
          + (f" ({n_missed} missed, {n_fp} false positive)" if n_missed or n_fp else ""))
    if any(s.uncertainty is not None for s in scores):
        print("uncertainty AUROC for failures: " + (
            f"{auroc:.3f}" if auroc is not None else "undefined (needs failed and successful "
            "structures)"))
    has_unc = any(s.uncertainty is not None or s.variants for s in scores)
    ev = ModelEvaluation("prediction", "", 0, "review", scores,
                         reliability if reliability.count.sum() else None)
    if has_unc:
        from ..segmentation.uncertainty_study import table_rows

        print("\nuncertainty score variants (AUROC for Dice < "
              f"{args.failure_dice:g}; rho = Spearman with 1 - Dice):")
        print(format_table(table_rows([ev], args.failure_dice)))
    if ev.reliability is not None:
        from ..segmentation.evaluate import reliability_diagram

        d = reliability_diagram(ev.reliability)
        print(f"voxel calibration: ECE {d.ece:.4f} over {d.n_voxels} voxels near structures")
    if args.out:
        out = Path(args.out)
        if has_unc or ev.reliability is not None:
            for path in write_outputs(out, [ev], args.failure_dice,
                                      plots=not args.no_plots).values():
                print(f"wrote {path}")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = ["case", "structure", "dice", "assd_mm", "pred_voxels", "ref_voxels",
                "pred_volume_cm3", "ref_volume_cm3", "uncertainty", "note"]
        w.writerow(cols)
        for s in scores:
            d = s.to_dict()
            w.writerow(["" if d[c] is None else d[c] for c in cols])
        atomic_write_text(out / "evaluation.csv", buf.getvalue())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        va_cols = list(asdict(agreement[0])) if agreement else ["structure"]
        w.writerow(va_cols)
        for a in agreement:
            d = asdict(a)
            w.writerow(["" if d[c] is None else d[c] for c in va_cols])
        atomic_write_text(out / "volume_agreement.csv", buf.getvalue())
        doc = {"failure_dice": args.failure_dice, "uncertainty_auroc": auroc,
               "target_volume_r": TARGET_VOLUME_R,
               "n_failed": n_fail, "n_missed": n_missed, "n_false_positive": n_fp,
               "unmatched": unmatched,
               "summary": [s.__dict__ for s in summary],
               "volume_agreement": [asdict(a) for a in agreement],
               "scores": [s.to_dict() for s in scores]}
        atomic_write_text(out / "evaluation.json", json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out / 'evaluation.csv'}, {out / 'volume_agreement.csv'} and "
              f"{out / 'evaluation.json'}")
    return 0


def _run_model_on_phantoms(args: argparse.Namespace) -> int:
    """``evaluate --model``: segment perturbed held-out phantoms and score the variants."""
    from ..segmentation.uncertainty_study import (
        evaluation_specs,
        format_table,
        run_study,
        table_rows,
        write_outputs,
    )

    if args.phantoms < 1:
        raise InputError(f"--phantoms must be >= 1, got {args.phantoms}.")
    specs = evaluation_specs(args.phantoms, args.phantom_seed, region=args.phantom_region,
                             spacing_range_mm=tuple(args.phantom_spacing))
    evals = run_study([args.model], specs, args.samples, args.device,
                      with_surface=not args.no_surface,
                      progress=lambda m: print(m, file=sys.stderr))
    from ..segmentation.evaluate import summarise

    print(f"{'structure':32s} {'n':>3s} {'Dice':>7s} {'min':>6s}")
    for s in summarise(evals[0].scores):
        print(f"{s.structure:32s} {s.n_cases:3d} {_f(s.dice_mean, 4):>7s} "
              f"{_f(s.dice_min, 3):>6s}")
    print(format_table(table_rows(evals, args.failure_dice)))
    if args.out:
        paths = write_outputs(args.out, evals, args.failure_dice, plots=not args.no_plots,
                              extra={"phantoms": [{"case": c, "kind": k}
                                                  for c, k, _ in specs]})
        for path in paths.values():
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _order(key: str) -> int:
    st = anatomy.BY_KEY.get(key)
    return st.label_value if st else 10_000


def _default_keys(pred: LabelMap, pred_table: frozenset[str] | None, ref: LabelMap,
                  ref_table: frozenset[str] | None, not_scored: dict[str, set[str]]
                  ) -> list[str]:
    """Structures scored without ``--structures``: those either map holds that both label
    tables name (a map without a table names any structure). A reference structure the
    prediction's table does not name (a model that does not segment it) is not a miss;
    one the prediction's table names and its map lacks is. Those left out are added to
    ``not_scored`` (side -> keys)."""
    present_pred = set(pred.structures.values())
    present_ref = set(ref.structures.values())

    def named(keys: set[str], table: frozenset[str] | None) -> set[str]:
        return keys if table is None else keys & table

    keys = named(named(present_pred | present_ref, pred_table), ref_table)
    not_scored["references"] |= present_ref - named(present_ref, pred_table)
    not_scored["predictions"] |= present_pred - named(present_pred, ref_table)
    return sorted(keys, key=_order)


def _names(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                       if len(names) > limit else "")


def _f(v: float | None, nd: int) -> str:
    return "-" if v is None else f"{v:.{nd}f}"
