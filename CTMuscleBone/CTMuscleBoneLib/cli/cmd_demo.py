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

from ..analysis import MeasureOptions
from ..atomic import atomic_write_text
from ..progress import stderr_progress, sub_progress
from ..results import Provenance, sha256_of_path
from .cmd_phantom import SYNTHETIC_BANNER, write_phantom

#: The demo's phantom seed: not among the demo model's training or validation seeds
#: (1000-1011, see the model card).
DEMO_SEED = 7

README = """CTMuscleBone demo results (SYNTHETIC: not a patient, demo model not for clinical use)

input/               the synthetic phantom CT (ct.nii.gz), ground-truth labels, truth.json
segmentation/        the demo model's label map, voxel uncertainty maps (predictive variance,
                     entropy, mutual information) and review.csv (structures ranked by uncertainty)
results.csv/.json    every measurement: structure, quantity, value, unit, method, flags
summary.txt          the readable table printed by the demo, with the review list
overview.png         coronal CT, segmentation, uncertainty heatmap, femur DXA-view projections
demo_check.csv       the model's segmentation against the ground truth (Dice per structure)

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
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..phantoms import PhantomSpec, make_phantom
    from ..segmentation.evaluate import evaluate_label_maps
    from .cmd_analyze import analyze_ct

    out = Path(args.out)
    progress = stderr_progress(args.quiet)
    print(f"*** {SYNTHETIC_BANNER} ***", file=sys.stderr)
    progress(0.0, "building the synthetic phantom (full region, calibration phantom, RAS)")
    spec = PhantomSpec(region="full", spacing_mm=args.spacing, orientation="RAS",
                       seed=args.seed, calibration=True, calibration_definition="B-MAS200",
                       sex="F", height_m=1.55, age_years=72.0, vertebra_bmd_mg_cm3=95.0)
    phantom = make_phantom(spec)
    paths = write_phantom(phantom, out / "input")
    prov = Provenance(input_ct=str(paths["ct"]), input_ct_sha256=sha256_of_path(paths["ct"]),
                      notes=[SYNTHETIC_BANNER])
    options = MeasureOptions(sex="F", height_m=1.55, age_years=72.0, phantom="B-MAS200")
    analysis = analyze_ct(phantom.ct, prov, options, out, samples=args.samples,
                          device=args.device, quiet=True,
                          progress=sub_progress(progress, 0.1, 0.95))
    seg_labels = analysis.segmentation.result.label_map  # type: ignore[attr-defined]
    model_keys = [k for k in analysis.segmentation.card.labels.values()  # type: ignore[attr-defined]
                  if k != "background"]
    scores = evaluate_label_maps(seg_labels, phantom.labels, model_keys, case="demo",
                                 with_surface=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["structure", "dice", "model_voxels", "truth_voxels"])
    for s in scores:
        w.writerow([s.structure, "" if s.dice is None else f"{s.dice:.4f}", s.pred_voxels,
                    s.ref_voxels])
    atomic_write_text(out / "demo_check.csv", buf.getvalue())
    atomic_write_text(out / "README.txt", README)

    res = analysis.results
    lines = [f"*** {SYNTHETIC_BANNER} ***", ""]
    lines.append((out / "summary.txt").read_text())
    valid = [s for s in scores if s.dice is not None]
    if valid:
        worst = min(valid, key=lambda s: s.dice)
        mean = sum(s.dice for s in valid) / len(valid)
        lines.append(f"Segmentation vs ground truth: mean Dice {mean:.3f} over {len(valid)} "
                     f"structures, lowest {worst.structure} {worst.dice:.3f} (demo_check.csv)")
    l1 = res.get("vertebrae_L1", "trabecular_vbmd")
    if l1 is not None and l1.value is not None:
        lines.append(f"L1 trabecular vBMD {l1.value:.1f} mg/cm3 measured; the phantom was "
                     f"built with {spec.vertebra_bmd_mg_cm3:.1f} mg/cm3")
    lines.append(f"\nResults folder: {out} (see README.txt there)")
    text = "\n".join(lines)
    if not args.quiet:
        print(text)
    progress(1.0, "demo done")
    return 0
