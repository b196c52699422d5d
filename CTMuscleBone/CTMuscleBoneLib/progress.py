"""Progress reporting for long steps, on stderr, with no dependency.

Core functions accept an optional ``progress`` callback ``(fraction: float, message: str)``
with fraction in [0, 1]; the command line passes :func:`stderr_progress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[float, str], None]


def stderr_progress(quiet: bool = False, stream: TextIO | None = None) -> ProgressCallback:
    """A progress callback for the command line, on stderr.

    On a terminal: one line ``[ 42%] message (3.1 s)`` updated in place. In a log file
    (not a terminal): a line only when the progress passes the next tenth, or at the
    end, so a long run writes about a dozen lines, not hundreds.
    """
    out = stream if stream is not None else sys.stderr
    start = time.perf_counter()
    state = {"decile": -1, "width": 0}
    tty = bool(getattr(out, "isatty", lambda: False)())

    def report(fraction: float, message: str) -> None:
        if quiet:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = time.perf_counter() - start
        text = f"[{100 * fraction:3.0f}%] {message} ({elapsed:.1f} s)"
        if tty:
            pad = max(0, state["width"] - len(text))
            end = "\n" if fraction >= 1.0 else ""
            out.write("\r" + text + " " * pad + end)
            state["width"] = 0 if end else len(text)
            out.flush()
            return
        decile = int(fraction * 10)
        if decile > state["decile"] or fraction >= 1.0:
            state["decile"] = decile
            print(text, file=out, flush=True)

    return report


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that does nothing."""


def sub_progress(progress: ProgressCallback, start: float, end: float) -> ProgressCallback:
    """A callback mapping a step's own 0..1 onto ``start..end`` of ``progress``."""

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
