"""``ctmusclebone measure``: measure a CT with a label map."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from .. import pipeline
from ..alm import CRITERIA, parse_height_m
from ..atomic import check_output_dir
from ..density_models import DENSITY_MODELS
from ..io_labels import LABEL_FORMATS
from ..pipeline import MeasureOptions
from ..progress import stderr_progress, sub_progress
from .common import (
    OPTION_INPUT_FILES,
    add_calibration_arguments,
    add_dicom_arguments,
    add_patient_arguments,
    add_report_arguments,
    dicom_writer,
    load_inputs,
    option_files,
    write_results,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure muscles (and bones) of a CT from a label map",
        description="Measure a CT from a label map on the same physical space: per-muscle "
        "volume, HU, fat infiltration and mass, group totals, ALM and SMI; writes "
        "results.csv and results.json to --out.",
    )
    p.add_argument("--ct", required=True, help="CT: NIfTI, NRRD, MHA file or a DICOM folder")
    p.add_argument("--labels", required=True,
                   help="label map (NIfTI/NRRD/MHA, Slicer .seg.nrrd, TotalSegmentator output)")
    p.add_argument("--label-format", default="auto", choices=list(LABEL_FORMATS),
                   help="how label values map to structures: totalseg (= totalseg-v2) / "
                   "totalseg-v1 = TotalSegmentator 'total' ids of that version; "
                   "totalseg-folder, json, csv, seg.nrrd, canonical (default: auto, detect)")
    p.add_argument("--names", help="JSON or CSV of label value -> structure name")
    p.add_argument("--labels-extra", action="append", metavar="FILE",
                   help="a TotalSegmentator tissue_types mask (file name ending in "
                   "subcutaneous_fat or skeletal_muscle, e.g. subcutaneous_fat.nii.gz) added "
                   "to --labels where that has background: reference tissues of the "
                   "phantomless calibration; repeatable (default: none)")
    p.add_argument("--series", help="DICOM SeriesInstanceUID to use when the folder has several")
    add_patient_arguments(p)
    add_measure_model_arguments(p)
    add_calibration_arguments(p)
    p.add_argument("--muscle-mask", metavar="FILE",
                   help="skeletal-muscle mask for the L3 muscle index (e.g. TotalSegmentator "
                   "tissue_types skeletal_muscle.nii.gz)")
    p.add_argument("--weight", type=float, metavar="KG",
                   help="patient weight in kg (BMI for the Martin 2013 L3 cut-offs; "
                   "default: DICOM PatientWeight)")
    add_report_arguments(p)
    add_dicom_arguments(p)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    p.set_defaults(func=run)


def add_measure_model_arguments(p: argparse.ArgumentParser) -> None:
    """--density-model, --alm-model, --criteria; --dxa-model, --bmd-reference (--reference)."""
    g = p.add_argument_group("muscle mass and SMI")
    g.add_argument("--density-model", default="constant", choices=sorted(DENSITY_MODELS),
                   help="muscle density for mass (default: constant 1.06 g/cm3)")
    g.add_argument("--alm-model", help="ALM model JSON from `ctmusclebone fit-alm` "
                   "(default: shipped, UNVALIDATED coefficients)")
    g.add_argument("--criteria", default="awgs2019", choices=sorted(CRITERIA),
                   help="sarcopenia cut-offs (default: AWGS 2019)")
    b = p.add_argument_group("bone density scale and reference")
    b.add_argument("--dxa-model", metavar="FILE",
                   help="CT-aBMD -> DXA-equivalent aBMD model JSON from `ctmusclebone "
                   "fit-dxa` (default: identity, UNVALIDATED: no T-/Z-score or %%YAM, categories "
                   "'indeterminate')")
    b.add_argument("--bmd-reference", "--reference", dest="bmd_reference", default="nhanes3",
                   metavar="{nhanes3,jsbmr2012,FILE}",
                   help="young-adult reference and criteria for T-score, %%YAM and category: "
                   "nhanes3 (US, WHO 1994 T-score categories; default), jsbmr2012 (Japanese "
                   "YAM, JSBMR 2012 %%YAM categories) or a reference JSON file")


def measure_inputs(args: argparse.Namespace) -> list[str]:
    """Every input file or folder of a ``measure`` run: no output may replace or hold
    one (:func:`~CTMuscleBoneLib.atomic.refuse_input_overwrite`)."""
    from ..io_labels import label_input_files

    return [args.ct, *map(str, label_input_files(args.labels, args.names)),
            *option_files(args, *OPTION_INPUT_FILES)]


def run(args: argparse.Namespace) -> int:
    inputs = measure_inputs(args)
    out = check_output_dir(args.out, inputs)
    options = replace(options_from_args(args), muscle_mask=args.muscle_mask,
                      weight_kg=args.weight)
    progress = stderr_progress(args.quiet)
    ct, labels, prov = load_inputs(args.ct, args.labels, args.label_format, args.names,
                                   args.series, progress)
    if args.labels_extra:
        from ..io_labels import add_tissue_masks

        labels = add_tissue_masks(labels, args.labels_extra)
    results = pipeline.measure(ct, labels, options, sub_progress(progress, 0.3, 1.0), prov)
    if args.deidentify:
        from ..deidentify import deidentify

        results = deidentify(results, ct.metadata)
    writers = []
    if args.report:
        writers.append(lambda stage: pipeline.write_report(results, ct, labels, stage,
                                                           deidentify=args.deidentify))
    if args.dicom:
        writers.append(dicom_writer(results, ct, labels, args))
    write_results(results, out, quiet=args.quiet, extra_writers=writers, inputs=inputs)
    return 0


def options_from_args(args: argparse.Namespace) -> MeasureOptions:
    """MeasureOptions from parsed arguments (sex, height, age, models)."""
    return MeasureOptions(**measure_kwargs_from_args(args))


def measure_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """MeasureOptions keyword arguments from parsed arguments, as plain data (``batch``
    keeps them so: they go into each case's completion marker)."""
    height_m, note = (None, None)
    if args.height is not None:
        height_m, note = parse_height_m(args.height)
    return dict(
        sex=args.sex,
        height_m=height_m,
        age_years=args.age,
        density_model=args.density_model,
        alm_model=args.alm_model,
        criteria=args.criteria,
        calibration=args.calibration,
        phantom=args.phantom,
        references=args.references,
        calibration_file=args.calibration_file,
        fixed_slope_mg_cm3_per_hu=args.slope,
        fixed_intercept_mg_cm3=args.intercept,
        fixed_material=args.material,
        bones=not args.no_bones,
        notes=[note] if note else [],
        dxa_model=args.dxa_model,
        bmd_reference=args.bmd_reference,
        kvp=args.kvp,
    )
