"""``ctmusclebone train``: train a Bayesian U-Net and write an installable model folder."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a segmentation model (Bayesian U-Net) on labelled CTs",
        description="Train a Bayesian U-Net with MONAI and write OUT/model (card.json + "
        "model.safetensors, installable with `ctmusclebone models install`), checkpoints "
        "in OUT/checkpoint and the history in OUT/train_log.jsonl. Several GPUs: "
        "`torchrun --nproc_per_node=N -m CTMuscleBoneLib.cli.main train ...`.",
    )
    p.add_argument("--data", help="dataset folder (not needed for --layout synthetic)")
    p.add_argument("--layout", required=True, choices=["totalseg", "images-labels", "synthetic"],
                   help="totalseg: <subject>/ct.nii.gz + segmentations/<name>.nii.gz; "
                   "images-labels: images/<case>.nii.gz + labels/<case>.nii.gz + labels.json; "
                   "synthetic: phantoms built in memory (config field 'phantoms')")
    p.add_argument("--val-data", help="separate validation folder of the same layout "
                   "(default: hold out the config's val_fraction of --data)")
    p.add_argument("--config", required=True, help="training config JSON (see "
                   "docs/segmentation.md; the demo recipe is an example)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--init-from", metavar="MODEL",
                   help="fine-tune: start from this model folder's weights (same architecture "
                   "and labels as the config) instead of a random initialisation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..segmentation.training.datasets import open_dataset
    from ..segmentation.training.train import TrainConfig, train

    cfg = TrainConfig.load(args.config)
    val = None
    if args.layout == "synthetic":
        from ..segmentation.training.synthetic import synthetic_datasets

        data, val = synthetic_datasets(cfg)
        described = "synthetic phantoms (CTMuscleBoneLib.phantoms), " \
                    f"{len(data)} training + {len(val)} validation"
    else:
        if not args.data:
            raise InputError(f"--data is required for --layout {args.layout}.")
        data = open_dataset(args.data, args.layout, cfg.structures)
        if args.val_data:
            val = open_dataset(args.val_data, args.layout, cfg.structures)
        described = f"{args.layout} dataset {Path(args.data).name} ({len(data)} cases)"
    command = "ctmusclebone " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and "train" in sys.argv else ""
    result = train(cfg, data, args.out, val_cases=val, resume=args.resume, device=args.device,
                   training_data=described, command=command, init_from=args.init_from,
                   log=lambda s: print(s, file=sys.stderr, flush=True))
    if result.card is not None:
        print(f"model folder: {result.model_dir} ({result.card.summary()})")
        print(f"install with: ctmusclebone models install {result.model_dir}")
    return 0
