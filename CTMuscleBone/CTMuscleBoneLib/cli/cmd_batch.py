"""``ctmusclebone batch``: measure (or segment and measure) every case of a cohort.

Calls :func:`CTMuscleBoneLib.batch.run_batch`; see docs/batch.md. Exit code 0 when
every case is ok, 1 when some failed (their errors are in cases.csv and on stderr),
2 when the batch could not start (bad input folder, options or scheduler).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..io_labels import LABEL_FORMATS
from .cmd_analyze import add_segmentation_arguments, segment_options_from_args
from .cmd_measure import add_measure_model_arguments, measure_kwargs_from_args
from .common import (
    add_calibration_arguments,
    add_dicom_arguments,
    add_patient_arguments,
    add_report_arguments,
)

#: Printed in --help: why one worker by default (measured, docs/batch.md).
WORKERS_HELP = (
    "cases run at the same time on this machine (default: 1, one after another in this "
    "process; N > 1: N worker processes). Memory limits it, not CPUs: measuring a case "
    "takes about 0.16 GB + 18 MB per million voxels, ~2.5 GB for a 512 x 512 x 500 CT "
    "(more to segment), per worker; see docs/batch.md")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="measure a cohort: a folder of cases or a CSV list, resumable, in parallel",
        description="Run every case of INPUT (a folder of CT files / DICOM study "
        "sub-folders with optional <case>_labels label maps, or a CSV with columns "
        "case_id, ct, labels, sex, age, height, weight): cases with a label map are "
        "measured, the others segmented first. Each case is isolated (a failure is "
        "recorded, the others go on) and written to OUT/cases/<case_id>/; a rerun skips "
        "the cases already done with the same inputs and options. Writes OUT/cohort.csv "
        "(one row per case and quantity), OUT/cases.csv and OUT/cases.json.",
    )
    p.add_argument("input", metavar="INPUT",
                   help="folder of cases or CSV case list (see docs/batch.md)")
    p.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    p.add_argument("--workers", type=int, default=1, help=WORKERS_HELP)
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the cases on a Dask distributed cluster: its scheduler address, "
                   "e.g. tcp://host:8786 (extra 'cohort'; default: this machine)")
    p.add_argument("--label-format", default="auto", choices=list(LABEL_FORMATS),
                   help="how label values map to structures, for every case (default: auto, "
                   "detect)")
    p.add_argument("--names", help="JSON or CSV of label value -> structure name, for every "
                   "case with a label map (default: none; each label map's sidecar or "
                   "--label-format)")
    add_segmentation_arguments(p)
    add_patient_arguments(p)
    p.add_argument("--weight", type=float, metavar="KG",
                   help="patient weight in kg for every case (the CSV's weight column "
                   "overrides it; default: DICOM PatientWeight)")
    add_measure_model_arguments(p)
    add_calibration_arguments(p)
    add_report_arguments(p, where="each case's folder")
    add_dicom_arguments(p, where="each case's folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def _path_or_name(value: Any) -> Any:
    """An existing file as an absolute path (workers may run elsewhere), else as given."""
    if isinstance(value, str) and os.path.isfile(value):
        return os.path.abspath(value)
    return value


def batch_measure_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The batch's MeasureOptions keyword arguments (plain data): those of ``measure``,
    the weight, and option files as absolute paths."""
    from ..batch.options import FILE_FIELDS

    kwargs = {**measure_kwargs_from_args(args), "weight_kg": args.weight}
    return {k: _path_or_name(v) if k in FILE_FIELDS else v for k, v in kwargs.items()}


def run(args: argparse.Namespace) -> int:
    from ..batch import BatchOptions, BatchProgress, run_batch
    from ..batch.runner import MODE_ANALYZE

    options = BatchOptions(measure=batch_measure_kwargs(args),
                           segment=segment_options_from_args(args),
                           label_format=args.label_format,
                           names=_path_or_name(args.names), report=args.report,
                           dicom=args.dicom, deidentify=args.deidentify)
    result = run_batch(args.input, args.out, options, workers=args.workers,
                       scheduler=args.scheduler, monitor=BatchProgress(quiet=args.quiet))
    failed = result.failed
    if not args.quiet:
        n = len(result.records)
        resumed = sum(r.resumed for r in result.records)
        print(f"{n} case(s): {n - len(failed)} ok ({resumed} from an earlier run), "
              f"{len(failed)} failed", file=sys.stderr)
        for r in failed:
            print(f"  {r.case_id}: {r.error}", file=sys.stderr)
        segmented = [r.case_id for r in result.records if r.mode == MODE_ANALYZE]
        if segmented:
            listed = ", ".join(segmented[:10]) + (" ..." if len(segmented) > 10 else "")
            print(f"{len(segmented)} of {n} case(s) had no label map and were segmented by "
                  f"the model (column 'mode' of cohort.csv and cases.csv): {listed}",
                  file=sys.stderr)
        out = Path(args.out)
        print(f"Wrote {out / 'cohort.csv'}, {out / 'cases.csv'} and {out / 'cases.json'}",
              file=sys.stderr)
    return 1 if failed else 0
