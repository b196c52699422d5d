"""``ctmusclebone analyze``: segment a CT with the Bayesian U-Net, then measure it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import pipeline
from ..atomic import check_output_dir, staged_output_dir
from ..image import CTImage
from ..pipeline import Analysis, SegmentOptions
from ..progress import stderr_progress, sub_progress
from ..results import Provenance, Results
from ..segmentation.config import BACKENDS
from .cmd_measure import add_measure_model_arguments, options_from_args
from .common import (
    OPTION_INPUT_FILES,
    add_calibration_arguments,
    add_dicom_arguments,
    add_patient_arguments,
    add_report_arguments,
    load_ct,
    option_files,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np


def add_segmentation_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --samples, --seed, --device, --backend."""
    g = p.add_argument_group("segmentation")
    g.add_argument("--model", help="installed model name or model folder (default: the "
                   "bundled demo model, trained on synthetic phantoms only)")
    g.add_argument("--samples", type=int, help="Monte-Carlo dropout samples T (default: card)")
    g.add_argument("--seed", type=int, help="seed of the dropout masks (default: card)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when available, else CPU")
    g.add_argument("--backend", default="torch", choices=list(BACKENDS),
                   help="what runs the network's deterministic part: openvino on the CPU "
                   "for models with head-only dropout (needs the openvino package); default torch")


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
    add_report_arguments(p)
    add_dicom_arguments(p)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    p.set_defaults(func=run)


def segment_options_from_args(args: argparse.Namespace) -> SegmentOptions:
    """SegmentOptions from --model, --samples, --seed, --device, --backend."""
    return SegmentOptions(model=args.model, samples=args.samples, seed=args.seed,
                          device=args.device, backend=getattr(args, "backend", "torch"))


def write_analysis(analysis: Analysis, ct: CTImage, prov: Provenance, out: Path,
                   figure: bool = True, report: bool = False, deidentify: bool = False,
                   dicom: bool = False) -> str:
    """Write segmentation, results, summary and figure of an analysis into ``out``;
    ``report``: report.html and report.pdf too; ``deidentify``: no patient identifiers
    in any of them (:mod:`CTMuscleBoneLib.deidentify`); ``dicom``: segmentation.dcm and
    measurements_sr.dcm (:func:`CTMuscleBoneLib.pipeline.write_dicom`).

    Returns the summary text (results table and review list).
    """
    from ..segmentation.pipeline import compact_uncertainty, format_review, uncertainty_region

    seg = analysis.segmentation
    results = analysis.results
    if deidentify:
        from ..deidentify import deidentify as _deidentify

        results = _deidentify(results, ct.metadata)
        prov = results.provenance
    region = uncertainty_region(ct, seg.result.label_map)  # a full-volume labelling: once
    pipeline.write_segmentation(seg, ct, out / "segmentation", prov, region=region)
    review = format_review(seg)
    if figure:
        write_overview_figure(results, ct, seg, out / "overview.png", region=region)
    if report:
        unc = seg.result.uncertainty.get("predictive_variance")
        pipeline.write_report(results, ct, seg.result.label_map, out,
                              uncertainty=None if unc is None else compact_uncertainty(unc,
                                                                                       region),
                              deidentify=deidentify)
    if dicom:
        pipeline.write_dicom(results, ct, seg.result.label_map, out, deidentify=deidentify)
    pipeline.write_outputs(results, out, summary_extra=review)
    return (out / "summary.txt").read_text(encoding="utf-8")


def write_overview_figure(results: Results, ct: CTImage, seg, path: Path,
                          region: np.ndarray | None = None) -> None:
    """overview.png: CT, segmentation, uncertainty heatmap, femur projections.

    ``region``: the :func:`uncertainty_region` of ``seg`` when the caller has it.
    """
    try:
        from ..figures import overview_figure
    except ImportError:  # matplotlib is optional (extra "reports")
        results.warnings.append("matplotlib not installed (extra 'reports'): overview.png "
                                "not written")
        return
    femur = results.artifacts.get("femur")
    values = {side: {q: results.value(f"femur_{side}", q)
                     for q in ("abmd_total_hip", "abmd_femoral_neck")
                     if results.get(f"femur_{side}", q)}
              for side in (femur.projections if femur else {})}
    from ..segmentation.pipeline import compact_uncertainty, uncertainty_region
    from ..segmentation.uncertainty import two_class_tie_value

    unc = seg.result.uncertainty.get("predictive_variance")
    if unc is not None:  # the heatmap inside the body only: no background speckle
        if region is None:
            region = uncertainty_region(ct, seg.result.label_map)
        unc = compact_uncertainty(unc, region)
    overview_figure(ct.hu, seg.result.label_map, path,
                    uncertainty=unc,
                    femur_projections=femur.projections if femur else None,
                    femur_values=values, results=results,
                    title=seg.card.clinical_use_warning if seg.card.synthetic else "",
                    uncertainty_full_scale=two_class_tie_value("predictive_variance",
                                                               seg.card.n_channels))


def run(args: argparse.Namespace) -> int:
    # before any work: never an output folder holding, or inside, an input
    out = check_output_dir(args.out, [args.ct,
                                      *option_files(args, "model", *OPTION_INPUT_FILES)],
                           folders=("segmentation",))
    progress = stderr_progress(args.quiet)
    options = options_from_args(args)
    seg_options = segment_options_from_args(args)
    ct, prov = load_ct(args.ct, args.series, progress)
    analysis = pipeline.analyze(ct, seg_options, options, progress=sub_progress(progress, 0.05,
                                                                               0.95),
                                provenance=prov)
    seg = analysis.segmentation
    with staged_output_dir(out) as stage:
        summary = write_analysis(analysis, ct, prov, stage, figure=not args.no_figure,
                                 report=args.report, deidentify=args.deidentify,
                                 dicom=args.dicom)
    progress(1.0, f"results in {out}")
    if not args.quiet:
        print(summary)
    if seg.card.synthetic:
        print(f"*** {seg.card.clinical_use_warning} ***", file=sys.stderr)
    return 0
