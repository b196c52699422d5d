"""``ctmusclebone calibrate``: fit a separate phantom scan and save the line.

Asynchronous calibration: scan the calibration phantom on the same scanner and protocol
as the patients, fit it once, and measure patients with ``--calibration fixed
--calibration-file FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a phantom scan and save the HU -> BMD line for later scans",
        description="Fit the rods of a calibration phantom in a CT (scanned without the "
        "patient, on the same scanner and protocol) and save the line with the scan's kVp "
        "and scanner to a JSON file, for `measure --calibration fixed --calibration-file`.",
    )
    p.add_argument("--ct", required=True, help="the phantom scan: NIfTI, NRRD, MHA or DICOM "
                   "folder")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when the folder has several")
    p.add_argument("--phantom", required=True, help="phantom definition: B-MAS200, "
                   "'Mindways Model 3', QRM-BDC or a definition JSON")
    p.add_argument("--labels", help="rod label map (default: rods found automatically)")
    p.add_argument("--label-format", default="auto", help="format of --labels (default: auto)")
    p.add_argument("--out", required=True, help="calibration JSON file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import pipeline
    from ..atomic import check_output_file
    from ..calibration.stored import save_calibration
    from ..errors import InputError
    from ..io_ct import read_ct
    from ..io_labels import read_labels
    from ..results import sha256_of_path

    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the calibration file to write "
                         "(e.g. calibration.json).")
    # never an input (a phantom definition, the CT, the labels), a .json name
    out = check_output_file(args.out, [args.ct, args.labels, args.phantom], suffix=".json")
    ct = read_ct(args.ct, series_uid=args.series)  # a phantom alone may not pass the CT
    labels = (read_labels(args.labels, ct.geometry, label_format=args.label_format)
              if args.labels else None)
    cal = pipeline.calibrate_phantom_scan(ct, args.phantom, labels)
    save_calibration(cal, out, ct.metadata, sha256_of_path(args.ct))
    print(f"{cal.method_text()}: BMD = {cal.slope_mg_cm3_per_hu:.4f} x HU + "
          f"{cal.intercept_mg_cm3:.2f} mg/cm3 ({cal.material})")
    for w in cal.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"Wrote {out}", file=sys.stderr)
    return 0
