"""``ctmusclebone models list | install PATH | verify NAME``: the segmentation model registry."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list, install and verify segmentation models",
        description="Segmentation models are folders holding card.json and "
        "model.safetensors. They are looked up in the user folder ($CTMUSCLEBONE_MODELS, "
        "default ~/.ctmusclebone/models) and then in the bundled folders "
        "($CTMUSCLEBONE_BUNDLED_MODELS, CTMuscleBone/Resources/Models).",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION",
                            help="list, install or verify")
    pl = msub.add_parser("list", help="list installed and bundled models")
    pl.set_defaults(func=run_list)
    pi = msub.add_parser("install", help="validate a model folder and copy it into the "
                         "user models folder")
    pi.add_argument("path", help="model folder (card.json + weights) or its card.json")
    pi.add_argument("--force", action="store_true", help="replace an installed model of the "
                    "same name")
    pi.add_argument("--dest", help="models folder to install into (default: the user folder)")
    pi.set_defaults(func=run_install)
    pv = msub.add_parser("verify", help="check a model's card, checksum and tensor shapes")
    pv.add_argument("name", help="installed model name or a model folder")
    pv.set_defaults(func=run_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    from ..segmentation.registry import list_models, search_dirs

    entries = list_models()
    if not entries:
        dirs = ", ".join(str(d) for d, _ in search_dirs()) or "none exist"
        print(f"No models found (searched: {dirs}).")
        return 0
    print(f"{'name':34s} {'version':9s} {'source':8s} {'kind':9s} structures  folder")
    for e in entries:
        if e.card is None:
            print(f"{e.name:34s} {'?':9s} {e.source:8s} {'INVALID':9s} {'-':11s} {e.folder}")
            print(f"    problem: {e.problem}")
            continue
        kind = "synthetic" if e.card.synthetic else "trained"
        note = "  (shadowed by an earlier folder)" if e.shadowed else ""
        print(f"{e.name:34s} {e.card.version:9s} {e.source:8s} {kind:9s} "
              f"{len(e.card.structure_keys):<11d} {e.folder}{note}")
    return 0


def run_install(args: argparse.Namespace) -> int:
    from ..segmentation.registry import install_model

    card = install_model(args.path, models_dir=args.dest, overwrite=args.force)
    print(f"installed {card.summary()} at {card.folder}")
    if card.synthetic:
        print(f"WARNING: {card.clinical_use_warning}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..segmentation.registry import verify_model

    card = verify_model(args.name)
    print(f"OK {card.summary()}: card valid, SHA-256 {card.weights.sha256[:16]}... matches, "
          f"tensors fit the architecture ({card.folder})")
    if card.synthetic:
        print(f"WARNING: {card.clinical_use_warning}")
    return 0
