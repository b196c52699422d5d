"""Child process of the Slicer module: segment a CT with uncertainty and write the results.

Usage (started by :class:`process.ProcessRunner` with PythonSlicer, or by hand)::

    python worker.py --ct CT.nrrd --out DIR [--model NAME] [--samples N] [--seed S]
                     [--device auto|cpu|cuda]

It prints ``CTMB-PROGRESS <fraction> <message>`` lines while it works and, on bad input
or an unusable model, one ``CTMB-ERROR <message>`` line and exits with code 2. Its
outputs are those of :func:`CTMuscleBoneLib.pipeline.write_segmentation` plus
``outputs.json`` (file names, model card facts) written last, so its presence means
success. SIGTERM ends it at once (default action: no partial outputs are left, every
output is written atomically by the core). SIGINT cancels cleanly (exit code 3).

Only the core library API is used (never ``CTMuscleBoneLib.cli``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from pathlib import Path

#: Exit codes: 0 ok, 2 input or model error, 3 cancelled, 1 anything else.
EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 3
OUTPUTS_FILE = "outputs.json"


def _ensure_core_importable() -> None:
    """Make ``CTMuscleBoneLib`` importable when run as a file from the module folder.

    In an installed extension the module folder (holding ``CTMuscleBoneLib/``) is the
    parent of this file's folder; PythonSlicer does not put it on ``sys.path``.
    """
    module_dir = str(Path(__file__).resolve().parent.parent)
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)


def _emit(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CTMuscleBone segmentation worker (3D Slicer module)")
    p.add_argument("--ct", required=True, help="CT image file (NRRD, NIfTI...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None, help="model name or folder (default: bundled demo)")
    p.add_argument("--samples", type=int, default=None, help="Monte-Carlo samples")
    p.add_argument("--seed", type=int, default=None, help="random seed of the MC sampling")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p.parse_args(argv)


def run(args: argparse.Namespace, cancel: threading.Event | None = None) -> int:
    """Segment ``args.ct`` into ``args.out``; returns the exit code."""
    _ensure_core_importable()
    from CTMuscleBoneSlicer.process import format_error, format_progress

    try:
        from CTMuscleBoneLib import atomic, pipeline
        from CTMuscleBoneLib.errors import CancelledError, InputError, ModelError
        from CTMuscleBoneLib.io_ct import read_ct
    except ImportError as e:
        _emit(format_error(f"A Python package CTMuscleBone needs is missing ({e}). Open the "
                           "CTMuscleBone module and press Analyze to install it, then retry."))
        return EXIT_INPUT_ERROR

    def progress(fraction: float, message: str) -> None:
        _emit(format_progress(fraction, message))

    try:
        progress(0.0, "reading the CT")
        ct = pipeline.check_ct(read_ct(args.ct))
        options = pipeline.SegmentOptions(model=args.model, samples=args.samples,
                                          seed=args.seed, device=args.device)
        seg = pipeline.segment(ct, options, progress=_scaled(progress, 0.02, 0.9),
                               cancel=cancel)
        progress(0.9, "writing the segmentation and uncertainty maps")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        paths = pipeline.write_segmentation(seg, ct, out)
        card = getattr(seg, "card", None)
        summary = {
            "files": {name: str(Path(p).resolve()) for name, p in paths.items()},
            "synthetic": bool(getattr(card, "synthetic", False)),
            "clinical_use_warning": str(getattr(card, "clinical_use_warning", "") or ""),
            "model": str(getattr(card, "name", args.model or "")),
            # output channels, background included: the heatmap's fixed full scale
            "n_classes": int(getattr(card, "n_channels", 0) or 0),
            # what the results' provenance records about this run (the report and the
            # summary name the model from it, and warn when it is synthetic)
            "model_provenance": seg.provenance_entry(),
        }
        atomic.atomic_write_text(out / OUTPUTS_FILE, json.dumps(summary, indent=1) + "\n")
        progress(1.0, "segmentation done")
        return 0
    except (InputError, ModelError) as e:  # the message says what to do
        _emit(format_error(str(e)))
        return EXIT_INPUT_ERROR
    except CancelledError:
        _emit(format_error("Cancelled."))
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001  (reported to the panel, with the traceback on stderr)
        traceback.print_exc()
        _emit(format_error(f"Unexpected error in the segmentation worker: "
                           f"{type(e).__name__}: {e}"))
        return 1


def _scaled(progress, start: float, end: float):
    def inner(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)
    return inner


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cancel = threading.Event()
    # SIGTERM keeps its default action (end now, even inside a long native call such as a
    # convolution, where a Python handler would wait); ProcessRunner.cancel() escalates to
    # SIGKILL after 1 s anyway. SIGINT (Ctrl-C by hand) cancels between steps.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    return run(args, cancel)


if __name__ == "__main__":
    sys.exit(main())
