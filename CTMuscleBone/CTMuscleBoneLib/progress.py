"""Progress reporting for long steps, on stderr, with no dependency.

Core functions accept an optional ``progress`` callback ``(fraction: float, message: str)``
with fraction in [0, 1]; the command line passes :func:`stderr_progress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressCallback = Callable[[float, str], None]


def stderr_progress(quiet: bool = False) -> ProgressCallback:
    """A progress callback printing ``[ 42%] message (3.1 s)`` lines to stderr."""
    start = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        if quiet:
            return
        elapsed = time.perf_counter() - start
        print(f"[{100 * fraction:3.0f}%] {message} ({elapsed:.1f} s)", file=sys.stderr,
              flush=True)

    return report


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that does nothing."""


def sub_progress(progress: ProgressCallback, start: float, end: float) -> ProgressCallback:
    """A callback mapping a step's own 0..1 onto ``start..end`` of ``progress``."""

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
