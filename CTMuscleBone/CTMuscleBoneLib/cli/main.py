"""Entry point of the ``ctmusclebone`` command.

Each sub-command lives in its own module ``cmd_<name>.py`` exposing
``register(subparsers) -> None``, which adds an ``argparse`` sub-parser whose
``func`` default is called with the parsed arguments and returns the exit code.

Errors the user can act on (:class:`~CTMuscleBoneLib.errors.CTMuscleBoneError`,
unreadable files) are printed as one line ``ctmusclebone: error: ...`` with exit
code 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CTMuscleBoneError

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "cmd_measure",
    "cmd_fit_alm",
    "cmd_fit_dxa",
    "cmd_calibrate",
    "cmd_phantom",
    "cmd_analyze",
    "cmd_demo",
    "cmd_segment",
    "cmd_models",
    "cmd_train",
    "cmd_evaluate",
    "cmd_validate_bmd",
    "cmd_batch",
)


#: Optional packages -> the pip extra that installs them.
OPTIONAL_MODULES = {"torch": "segmentation", "monai": "segmentation",
                    "safetensors": "segmentation", "matplotlib": "reports"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctmusclebone",
        description="Bone mineral density and muscle mass from routine CT "
        "(CTMuscleBone core, Slicer-free).",
    )
    parser.add_argument("--version", action="version", version=f"ctmusclebone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        module.register(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
    return parser


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it says its default already
    or has none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or "default" in text.lower() or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..atomic import clear_noted_inputs

    clear_noted_inputs()  # each command protects its own inputs, not an earlier run's
    try:
        return int(args.func(args) or 0)
    except CTMuscleBoneError as exc:
        print(f"ctmusclebone: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_MODULES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"ctmusclebone: error: the optional package '{exc.name}' is not installed; "
              f"install the extra: pip install \"ctmusclebone[{extra}]\""
              + (" (install torch first: pip install torch)" if extra == "segmentation"
                 else ""), file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"ctmusclebone: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, ...: nothing partial is left
        where = f": {exc.filename}" if exc.filename else ""
        print(f"ctmusclebone: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctmusclebone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
