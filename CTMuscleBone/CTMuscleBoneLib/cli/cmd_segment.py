"""``ctmusclebone segment``: Bayesian U-Net segmentation with Monte-Carlo dropout.

Writes into ``--out`` (each file atomically):

* ``labels.nii.gz`` + ``labels.labels.json``: label map on the CT grid, canonical
  anatomy label values, and the value -> anatomy key table;
* ``uncertainty_<map>.nii.gz``: predictive variance, predictive entropy and mutual
  information (float32, CT grid, stored compactly: see ``compact_uncertainty``);
* ``review.csv`` / ``review.json``: structures ranked for review (absent first, then by
  mean uncertainty inside the structure, highest first), with the model, samples, seed;
* ``segmentation.dcm`` (with ``--dicom``): the label map as DICOM SEG (docs/dicom.md);
* ``confidence.nii.gz`` (with ``--confidence``): the maximum mean softmax per voxel, for
  the reliability diagram of ``ctmusclebone evaluate``;
* prints the review list and, for a model trained on synthetic phantoms, a banner that
  it is not for clinical images.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .cmd_analyze import add_segmentation_arguments, segment_options_from_args
from .common import add_dicom_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment bones and muscles with the Bayesian U-Net (MC dropout)",
        description="Segment a CT with an installed model: label map, voxel-wise "
        "uncertainty maps and a structure review list ranked by uncertainty.",
    )
    p.add_argument("--ct", required=True, help="CT: NIfTI, NRRD, MHA file or a DICOM folder")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when the folder has several")
    add_segmentation_arguments(p)
    add_dicom_arguments(p, seg_only=True)
    p.add_argument("--confidence", action="store_true",
                   help="also write confidence.nii.gz (max mean softmax per voxel), for the "
                   "reliability diagram of `ctmusclebone evaluate` (default off)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import pipeline
    from ..atomic import check_output_dir, staged_output_dir
    from ..progress import stderr_progress
    from ..segmentation.pipeline import format_review
    from .common import load_ct, option_files

    # before any work: never an output folder holding, or inside, an input
    out = check_output_dir(args.out, [args.ct, *option_files(args, "model")])
    options = replace(segment_options_from_args(args), confidence=args.confidence)
    pipeline.require_segmentation()
    progress = stderr_progress(args.quiet)
    ct, prov = load_ct(args.ct, args.series, progress)  # refuses MR and other non-CT input
    seg = pipeline.segment(ct, options, progress=progress)
    with staged_output_dir(out) as stage:
        pipeline.write_segmentation(seg, ct, stage, prov)
        if args.dicom:  # the SEG only: segment measures nothing
            pipeline.write_dicom(None, ct, seg.result.label_map, stage,
                                 deidentify=bool(getattr(args, "deidentify", False)),
                                 model_warning=(seg.card.clinical_use_warning
                                                if seg.card.synthetic else None))
    print(format_review(seg))
    if seg.card.synthetic:  # once, on stderr: the review list on stdout stays clean
        print(f"*** {seg.card.clinical_use_warning} ***", file=sys.stderr)
    print(f"\nWrote {out / 'labels.nii.gz'}, uncertainty maps and review list to {out}",
          file=sys.stderr)
    return 0
