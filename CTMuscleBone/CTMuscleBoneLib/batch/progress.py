"""Batch progress on stderr: a bar, counts, elapsed time and an estimate of time left.

The estimate is the number of cases left divided by the rate of cases computed so far
in this run (cases resumed from an earlier run are not counted in the rate, they take
no time), so it already includes the parallelism of the executor. Shown after the
first computed case.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .runner import CaseRecord

BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """``mm:ss`` below an hour, else ``h:mm:ss``."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class BatchProgress:
    """A batch monitor: :meth:`begin` with the number of cases, then :meth:`update`
    with each finished case's record.

    On a terminal, one line updated in place; otherwise (a log file) one line per case.

    Parameters
    ----------
    quiet : bool
        Print nothing.
    stream : text stream, optional
        Default: ``sys.stderr``.
    """

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = 0
        self.quiet = quiet
        self.out = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.done = self.failed = self.resumed = 0
        self._width = 0

    def eta_s(self) -> float | None:
        """Estimated seconds left; None before the first computed case."""
        computed = self.done - self.resumed
        if computed <= 0:
            return None
        rate = computed / max(time.perf_counter() - self.start, 1e-9)
        return (self.total - self.done) / rate

    def line(self, last: str = "") -> str:
        filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        counts = ", ".join(f"{n} {what}" for n, what in ((self.failed, "failed"),
                                                         (self.resumed, "resumed")) if n)
        eta = self.eta_s()
        text = (f"[{bar}] {self.done}/{self.total} cases"
                + (f" ({counts})" if counts else "")
                + f", {format_duration(time.perf_counter() - self.start)} elapsed"
                + (f", ~{format_duration(eta)} left" if eta is not None and
                   self.done < self.total else ""))
        return text + (f"  {last}" if last else "")

    def update(self, record: CaseRecord) -> None:
        self.done += 1
        self.failed += record.status != "ok"
        self.resumed += record.resumed
        if self.quiet:
            return
        what = "resumed" if record.resumed else record.status
        if record.status != "ok":
            what += f": {record.error.splitlines()[0] if record.error else record.error_type}"
        text = self.line(f"{record.case_id} {what}")
        if self.tty:
            pad = max(0, self._width - len(text))
            end = "\n" if self.done >= self.total else ""
            self.out.write("\r" + text + " " * pad + end)
            self._width = 0 if end else len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def begin(self, total: int, description: str) -> None:
        """Start the clock for ``total`` cases; print what runs them."""
        self.total = total
        self.start = time.perf_counter()
        if not self.quiet:
            print(f"{total} case(s); {description}", file=self.out, flush=True)
