"""``ctmusclebone demo``: synthetic phantom -> segment -> measure -> a results folder.

Everything in the demo is synthetic: the CT is a phantom made by CTMuscleBone and the
segmentation model is the bundled demo model trained on other synthetic phantoms. The
demo checks itself: it compares the model's segmentation with the phantom's ground
truth (Dice per structure, ``demo_check.csv``) and, when the model segments vertebrae,
the measured L1 vBMD with the phantom's set value.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from .. import pipeline
from ..atomic import atomic_write_text, check_output_dir, staged_output_dir
from ..phantoms.demo import DEMO_HEADLINE_ROWS, DEMO_PATIENT, DEMO_SEED, demo_spec
from ..pipeline import MeasureOptions, SegmentOptions
from ..progress import stderr_progress, sub_progress
from ..results import Provenance, Results, sha256_of_path
from ..segmentation.training.datasets import reference_for
from ..summary import not_measurable_reason
from .cmd_phantom import SYNTHETIC_BANNER, write_phantom
from .common import add_dicom_arguments, add_report_arguments

README = """CTMuscleBone demo results (SYNTHETIC: not a patient, demo model not for clinical use)

input/               the synthetic phantom CT (ct.nii.gz), ground-truth labels, truth.json
segmentation/        the demo model's label map, voxel uncertainty maps (predictive variance,
                     entropy, mutual information) and review.csv (structures ranked by uncertainty)
results.csv/.json    every measurement: structure, quantity, value, unit, method, flags
summary.txt          the readable table printed by the demo, with the review list
overview.png         coronal CT, segmentation, uncertainty heatmap, femur DXA-view projections
demo_check.csv       the model's segmentation against the ground truth (Dice per structure)
report.html/.pdf     the case report (with --report): images beside the values, plots, quality
segmentation.dcm     DICOM SEG and SR of the results (with --dicom), referring to the CT written
measurements_sr.dcm  as a DICOM series in ct/ (docs/dicom.md)

Open ct.nii.gz with segmentation/labels.nii.gz and segmentation/uncertainty_*.nii.gz in
3D Slicer to review, or measure a corrected label map with `ctmusclebone measure`.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a bundled synthetic phantom",
        description="Make a synthetic phantom CT (with a calibration phantom), segment it "
        "with the bundled demo model, measure muscles and bones, and write a results "
        "folder. " + SYNTHETIC_BANNER,
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--spacing", type=float, default=2.0, help="phantom voxel size, mm")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="phantom seed")
    p.add_argument("--samples", type=int, help="Monte-Carlo samples (default: the card's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when available, else CPU")
    add_report_arguments(p)
    add_dicom_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out)
    seg_options = SegmentOptions(samples=args.samples, device=args.device)
    pipeline.require_segmentation()
    progress = stderr_progress(args.quiet)
    print(f"*** {SYNTHETIC_BANNER} ***", file=sys.stderr)
    with staged_output_dir(out) as stage:
        text = _run_demo(args, seg_options, stage, out, progress)
    if not args.quiet:
        print(text)
    progress(1.0, "demo done")
    return 0


#: Results the demo compares between the model's segmentation and the phantom's
#: ground-truth labels (defined with the demo case, :mod:`..phantoms.demo`).
SELF_CHECK_ROWS = DEMO_HEADLINE_ROWS


def absent_structure_lines(absent_keys: list[str], truth_keys: set[str]) -> list[str]:
    """Explain the review list's ABSENT rows against the phantom's truth.

    Parameters
    ----------
    absent_keys : list of str
        Model structures with no voxel in the model's output (ABSENT in the review list).
    truth_keys : set of str
        Model structures with at least one voxel in the phantom's truth (merged into the
        model's classes).

    Returns
    -------
    list of str
        At most two lines: the structures absent from the phantom too (expected: there is
        nothing to find), and those the phantom has but the model missed.
    """
    from ..results import display_name

    lines = []
    expected = [k for k in absent_keys if k not in truth_keys]
    missed = [k for k in absent_keys if k in truth_keys]
    if expected:
        lines.append("ABSENT in the review list and absent from the phantom too (expected: "
                     "the synthetic phantoms contain no such structure, so the demo model "
                     "never learned it): " + ", ".join(display_name(k) for k in expected))
    if missed:
        lines.append("ABSENT in the review list but present in the phantom (a miss of the "
                     "model): " + ", ".join(display_name(k) for k in missed))
    return lines


def truth_measurement_check(model: Results, truth: Results) -> list[str]:
    """One line per headline measurement: on the model's labels and on the truth's.

    Both come from the same measurement code on the same CT, so the difference is what
    the segmentation changes. A row not measurable on either side says so.
    """
    lines = ["Measurements on the model's segmentation vs on the phantom's ground-truth "
             "labels (same code, same CT):"]
    absent: list[str] = []
    for structure, quantity in SELF_CHECK_ROWS:
        a, b = model.get(structure, quantity), truth.get(structure, quantity)
        name = f"  {structure} {quantity}"
        if a is None and b is None:  # the truth is scored on the model's structures only
            absent.append(f"{structure} {quantity}")
            continue
        va = a.value if a is not None and isinstance(a.value, int | float) else None
        vb = b.value if b is not None and isinstance(b.value, int | float) else None
        if va is None and vb is None:
            row = a if a is not None else b
            lines.append(f"{name}: not measurable on either ({not_measurable_reason(row)})")
            continue
        if va is None or vb is None:
            side = "model" if va is None else "truth labels"
            row = a if va is None else b
            why = not_measurable_reason(row) if row is not None else "no row"
            lines.append(f"{name}: model {'-' if va is None else f'{va:.3f}'}, truth labels "
                         f"{'-' if vb is None else f'{vb:.3f}'} (not measurable on the "
                         f"{side}: {why})")
            continue
        unit = (a.unit if a is not None else "") or ""
        rel = f" ({100.0 * (va - vb) / vb:+.1f} %)" if vb else ""
        lines.append(f"{name}: model {va:.3f} {unit}, truth labels {vb:.3f} {unit}{rel}")
    if absent:
        lines.append("  not measured (the model does not segment their structures): "
                     + ", ".join(absent))
    return lines


def _run_demo(args: argparse.Namespace, seg_options: SegmentOptions, stage: Path, out: Path,
              progress) -> str:
    """Build the phantom, analyze it and write every demo file into ``stage``."""
    from ..phantoms import make_phantom
    from ..segmentation.evaluate import evaluate_label_maps
    from .cmd_analyze import write_analysis

    progress(0.0, "building the synthetic phantom (full region, calibration phantom, RAS)")
    spec = demo_spec(args.spacing, args.seed)
    phantom = make_phantom(spec)
    paths = write_phantom(phantom, stage / "input")
    prov = Provenance(input_ct=str(out / "input" / paths["ct"].name),
                      input_ct_sha256=sha256_of_path(paths["ct"]), notes=[SYNTHETIC_BANNER])
    options = MeasureOptions(sex=DEMO_PATIENT["sex"], height_m=DEMO_PATIENT["height_m"],
                             age_years=DEMO_PATIENT["age_years"],
                             phantom=DEMO_PATIENT["phantom"])
    analysis = pipeline.analyze(phantom.ct, seg_options, options,
                                progress=sub_progress(progress, 0.1, 0.9), provenance=prov)
    seg_labels = analysis.segmentation.result.label_map
    model_keys = [k for k in analysis.segmentation.card.labels.values() if k != "background"]
    # the truth merged into the model's classes (thigh groups; numbered lumbar levels)
    truth_labels, scored = reference_for(phantom.labels, model_keys)
    scores = evaluate_label_maps(seg_labels, truth_labels, scored, case="demo",
                                 with_surface=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["structure", "dice", "model_voxels", "truth_voxels"])
    for s in scores:
        w.writerow([s.structure, "" if s.dice is None else f"{s.dice:.4f}", s.pred_voxels,
                    s.ref_voxels])
    atomic_write_text(stage / "demo_check.csv", buf.getvalue())
    atomic_write_text(stage / "README.txt", README)

    res = analysis.results
    check = []
    valid = [s for s in scores if s.dice is not None]
    if valid:
        worst = min(valid, key=lambda s: s.dice)
        mean = sum(s.dice for s in valid) / len(valid)
        check.append(f"Segmentation vs ground truth: mean Dice {mean:.3f} over {len(valid)} "
                     f"structures, lowest {worst.structure} {worst.dice:.3f} (demo_check.csv)")
    check += absent_structure_lines(
        [r.key for r in analysis.segmentation.result.review if not r.present],
        {s.structure for s in scores if s.ref_voxels})
    l1 = res.get("vertebrae_L1", "trabecular_vbmd")
    if l1 is not None and l1.value is not None:
        check.append(f"L1 trabecular vBMD {l1.value:.1f} mg/cm3 measured; the phantom was "
                     f"built with {spec.vertebra_bmd_mg_cm3:.1f} mg/cm3")
    progress(0.92, "measuring the ground-truth labels for the self-check")
    truth_res = pipeline.measure_case(phantom.ct, truth_labels, options)
    check += truth_measurement_check(res, truth_res)
    progress(0.95, "writing results")
    summary = write_analysis(analysis, phantom.ct, prov, stage, report=args.report,
                             deidentify=args.deidentify, dicom=args.dicom)
    # the summary starts with the synthetic banners itself (once each)
    text = "\n".join([summary.rstrip("\n"), "",
                      "Demo self-check (synthetic phantom truth):", *check,
                      f"\nResults folder: {out} (see README.txt there)"])
    atomic_write_text(stage / "summary.txt", text + "\n")
    return text
