"""``ctmusclebone analyze``: segment a CT with the Bayesian U-Net, then measure it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..analysis import MeasureOptions
from ..atomic import atomic_write_text
from ..image import CTImage
from ..progress import ProgressCallback, stderr_progress, sub_progress
from ..results import Provenance, Results
from .cmd_measure import add_measure_model_arguments, options_from_args
from .common import add_calibration_arguments, add_patient_arguments, load_ct, write_results


def add_segmentation_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --samples, --seed, --device."""
    g = p.add_argument_group("segmentation")
    g.add_argument("--model", help="installed model name or model folder (default: the "
                   "bundled demo model, trained on synthetic phantoms only)")
    g.add_argument("--samples", type=int, help="Monte-Carlo dropout samples T (default: card)")
    g.add_argument("--seed", type=int, help="seed of the dropout masks (default: card)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="segment a CT (Bayesian U-Net) and measure it in one go",
        description="Segment a CT with the Bayesian U-Net (MC dropout), write the label "
        "map, uncertainty maps and review list to OUT/segmentation, then measure muscles "
        "and bones and write OUT/results.csv, results.json, summary.txt and overview.png.",
    )
    p.add_argument("--ct", required=True, help="CT: NIfTI, NRRD, MHA file or a DICOM folder")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when the folder has several")
    add_segmentation_arguments(p)
    add_patient_arguments(p)
    add_measure_model_arguments(p)
    add_calibration_arguments(p)
    p.add_argument("--no-figure", action="store_true", help="do not write overview.png")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    p.set_defaults(func=run)


@dataclass
class AnalysisOutput:
    """What :func:`analyze_ct` produced."""

    results: Results
    segmentation: object  # segmentation.pipeline.Segmentation
    out_dir: Path


def analyze_ct(
    ct: CTImage,
    prov: Provenance,
    options: MeasureOptions,
    out: Path,
    *,
    model: str | None = None,
    samples: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    figure: bool = True,
    quiet: bool = False,
    progress: ProgressCallback | None = None,
) -> AnalysisOutput:
    """Segment, write the segmentation, measure, write results, summary and figure."""
    from ..analysis import measure_case
    from ..segmentation.pipeline import format_review, segment_ct, write_segmentation
    from ..summary import format_summary

    progress = progress or stderr_progress(quiet)
    seg = segment_ct(ct, model=model, samples=samples, seed=seed, device=device,
                     progress=sub_progress(progress, 0.05, 0.75))
    if seg.card.synthetic:
        print(f"*** {seg.card.clinical_use_warning} ***", file=sys.stderr)
    write_segmentation(seg, ct, out / "segmentation", prov.input_ct, prov.input_ct_sha256)
    prov.label_source = seg.result.label_map.source
    prov.models.append(seg.provenance_entry())
    results = measure_case(ct, seg.result.label_map, options,
                           progress=sub_progress(progress, 0.75, 0.95), provenance=prov)
    if seg.card.synthetic:
        results.warnings.insert(0, seg.card.clinical_use_warning)
    results.artifacts["segmentation"] = seg
    write_results(results, out, quiet=True)
    review = format_review(seg)
    summary = format_summary(results)
    atomic_write_text(out / "summary.txt", summary + "\n\n" + review + "\n")
    if figure:
        try:
            from ..figures import overview_figure
        except ImportError:  # matplotlib is optional (extra "reports")
            results.warnings.append("matplotlib not installed: overview.png not written")
        else:
            femur = results.artifacts.get("femur")
            values = {side: {q: results.value(f"femur_{side}", q)
                             for q in ("abmd_total_hip", "abmd_femoral_neck")
                             if results.get(f"femur_{side}", q)}
                      for side in (femur.projections if femur else {})}
            overview_figure(ct.hu, seg.result.label_map, out / "overview.png",
                            uncertainty=seg.result.uncertainty.get("predictive_variance"),
                            femur_projections=femur.projections if femur else None,
                            femur_values=values,
                            title=seg.card.clinical_use_warning if seg.card.synthetic else "")
    progress(1.0, f"results in {out}")
    if not quiet:
        print(summary)
        print()
        print(review)
        if seg.card.synthetic:
            print(f"\n*** {seg.card.clinical_use_warning} ***")
    return AnalysisOutput(results, seg, out)


def run(args: argparse.Namespace) -> int:
    progress = stderr_progress(args.quiet)
    ct, prov = load_ct(args.ct, args.series, progress)
    analyze_ct(ct, prov, options_from_args(args), Path(args.out), model=args.model,
               samples=args.samples, seed=args.seed, device=args.device,
               figure=not args.no_figure, quiet=args.quiet, progress=progress)
    return 0
