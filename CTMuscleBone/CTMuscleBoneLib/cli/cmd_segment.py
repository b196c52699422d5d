"""``ctmusclebone segment``: Bayesian U-Net segmentation with Monte-Carlo dropout.

Writes into ``--out`` (each file atomically):

* ``labels.nii.gz`` + ``labels.labels.json``: label map on the CT grid, canonical
  anatomy label values, and the value -> anatomy key table;
* ``uncertainty_<map>.nii.gz``: predictive variance, predictive entropy and mutual
  information (float32, CT grid);
* ``review.csv`` / ``review.json``: structures ranked for review (absent first, then by
  mean uncertainty inside the structure, highest first), with the model, samples, seed;
* prints the review list and, for a model trained on synthetic phantoms, a banner that
  it is not for clinical images.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import InputError

BANNER = "demo model trained on synthetic phantoms — not for clinical images"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment bones and muscles with the Bayesian U-Net (MC dropout)",
        description="Segment a CT with an installed model: label map, voxel-wise "
        "uncertainty maps and a structure review list ranked by uncertainty.",
    )
    p.add_argument("--ct", required=True, help="CT: NIfTI, NRRD, MHA file or a DICOM folder")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when the folder has several")
    p.add_argument("--model", default=None,
                   help="installed model name or model folder (default: the bundled demo "
                   "model ctmusclebone-demo-synthetic)")
    p.add_argument("--samples", type=int, help="Monte-Carlo samples T (default: the card's)")
    p.add_argument("--seed", type=int, help="seed of the dropout masks (default: the card's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from ..io_ct import read_ct, write_image, write_label_map
    from ..progress import stderr_progress
    from ..results import sha256_of_path
    from ..segmentation.inference import predict
    from ..segmentation.registry import DEFAULT_MODEL, load_model

    progress = stderr_progress(args.quiet)
    if args.samples is not None and args.samples < 1:
        raise InputError(f"--samples must be >= 1, got {args.samples}.")
    if args.seed is not None and args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use "
                         "--device cpu or auto.")
    card, network = load_model(args.model or DEFAULT_MODEL)
    if card.synthetic:
        print(f"*** {BANNER} ***", file=sys.stderr)
    progress(0.0, f"model {card.summary()}")
    ct = read_ct(args.ct, series_uid=args.series)
    inf = card.inference
    changes = {}
    if args.samples is not None:
        changes["mc_samples"] = args.samples
        changes["mc_batch_size"] = min(inf.mc_batch_size, args.samples)
    if args.seed is not None:
        changes["seed"] = args.seed
    inf = replace(inf, **changes) if changes else inf
    result = predict(ct, network, card.input, inf, card.labels, device=args.device,
                     progress=progress, source=f"{card.name} {card.version}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_label_map(result.label_map, out / "labels.nii.gz")
    for name, arr in result.uncertainty.items():
        write_image(arr, ct.geometry, out / f"uncertainty_{name}.nii.gz")
    rows = [r.to_dict() for r in result.review]
    doc = {
        "model": {"name": card.name, "version": card.version, "synthetic": card.synthetic,
                  "weights_sha256": card.weights.sha256,
                  "clinical_use_warning": card.clinical_use_warning},
        "input_ct": str(args.ct),
        "input_ct_sha256": sha256_of_path(args.ct),
        "mc_samples": result.mc_samples,
        "seed": result.seed,
        "device": result.device,
        "review_map": inf.review_map,
        "structures": rows,
    }
    atomic_write_text(out / "review.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    buf = io.StringIO()
    cols = ["rank", "key", "label_value", "present", "volume_cm3", "mean_inside",
            "mean_boundary", "score", "map_name"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i, r in enumerate(rows, 1):
        w.writerow([i] + ["" if r.get(c) is None else r.get(c) for c in cols[1:]])
    atomic_write_text(out / "review.csv", buf.getvalue())

    print(f"Review list ({inf.review_map}, T = {result.mc_samples}, seed {result.seed}); "
          "check the first structures first:")
    print(f"{'rank':>4s}  {'structure':32s} {'volume cm3':>10s} {'uncertainty':>12s}")
    for i, r in enumerate(result.review, 1):
        unc = "ABSENT" if not r.present else f"{r.score:.4g}"
        print(f"{i:4d}  {r.key:32s} {r.volume_cm3:10.1f} {unc:>12s}")
    if card.synthetic:
        print(f"\n*** {BANNER} ***")
    print(f"\nWrote {out / 'labels.nii.gz'}, uncertainty maps and review list to {out}",
          file=sys.stderr)
    return 0
