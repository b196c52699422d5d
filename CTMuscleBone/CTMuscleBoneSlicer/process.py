"""Run the segmentation worker in a child process: progress lines, cancel, errors.

No Qt here: the Slicer widget drives :meth:`ProcessRunner.poll` from a ``qt.QTimer``
(the pattern of SlicerMONAIAuto3DSeg ``MONAIAuto3DSegLib/process.py`` and of Slicer's own
``slicer.util._startAsyncProcessHandling``: a reader thread fills a queue, the GUI thread
drains it on a timer), so the runner is tested without Slicer.

Protocol (one line each on the child's stdout)::

    CTMB-PROGRESS <fraction in [0, 1]> <message>
    CTMB-ERROR <one-line message>

Every other stdout or stderr line is passed on as a :class:`Log` event.

The child is started in its own session (POSIX) or process group (Windows) so that
:meth:`ProcessRunner.cancel` ends it together with any process it started.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROGRESS_PREFIX = "CTMB-PROGRESS"
ERROR_PREFIX = "CTMB-ERROR"

#: Number of stderr lines kept to explain a failure without a CTMB-ERROR line.
STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class Progress:
    """Progress reported by the child: ``fraction`` in [0, 1] and what it is doing."""

    fraction: float
    message: str


@dataclass(frozen=True)
class Log:
    """A line of the child's output that is not a protocol line (``stream``: stdout|stderr)."""

    text: str
    stream: str = "stdout"


@dataclass(frozen=True)
class Finished:
    """The child ended with return code 0 (``returncode`` is kept for logging)."""

    returncode: int


@dataclass(frozen=True)
class Failed:
    """The child failed, could not start, or was cancelled; ``message`` says why."""

    message: str
    returncode: int | None = None
    cancelled: bool = False


Event = Progress | Log | Finished | Failed


def format_progress(fraction: float, message: str) -> str:
    """The protocol line for a progress report (newlines in ``message`` are flattened)."""
    return f"{PROGRESS_PREFIX} {min(max(float(fraction), 0.0), 1.0):.4f} {_one_line(message)}"


def format_error(message: str) -> str:
    """The protocol line for an error message (flattened to one line)."""
    return f"{ERROR_PREFIX} {_one_line(message)}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse_line(line: str) -> Progress | Log | str:
    """Parse one stdout line of the child.

    Returns
    -------
    Progress, Log or str
        A :class:`Progress` for a valid progress line, the error message (``str``) for a
        ``CTMB-ERROR`` line, else a :class:`Log` with the line as it is. A malformed
        progress line is logged, never raised.
    """
    text = line.rstrip("\r\n")
    if text.startswith(PROGRESS_PREFIX + " "):
        parts = text[len(PROGRESS_PREFIX) + 1:].split(" ", 1)
        try:
            fraction = float(parts[0])
        except ValueError:
            return Log(text)
        if fraction != fraction:  # NaN
            return Log(text)
        return Progress(min(max(fraction, 0.0), 1.0), parts[1] if len(parts) > 1 else "")
    if text.startswith(ERROR_PREFIX + " ") or text == ERROR_PREFIX:
        return text[len(ERROR_PREFIX):].strip()
    return Log(text)


def python_executable() -> str:
    """The Python to start the worker with.

    Inside the Slicer application this is ``PythonSlicer`` found on ``PATH`` (Slicer adds
    it there; see ``slicer.util.executePythonModule`` and SlicerMONAIAuto3DSeg
    ``MONAIAuto3DSeg.py``: ``shutil.which("PythonSlicer")``). Elsewhere (tests, a plain
    Python with slicer-core) it is ``sys.executable``.
    """
    try:
        from slicer import app  # noqa: F401  (present only in the Slicer application)
    except ImportError:
        return sys.executable
    found = shutil.which("PythonSlicer")
    if not found:
        raise RuntimeError("PythonSlicer was not found on PATH; cannot start the worker.")
    return found


def worker_script() -> Path:
    """Path of :mod:`worker` (the child script), next to this file."""
    return Path(__file__).resolve().with_name("worker.py")


class ProcessRunner:
    """Start a child process and report what it prints as events.

    Parameters
    ----------
    args : sequence of str
        Command line, executable first.
    env : mapping, optional
        Environment of the child (default: this process's). ``PYTHONUNBUFFERED=1`` is
        added so progress lines arrive as they are printed.
    cwd : str or Path, optional
        Working directory of the child.

    Notes
    -----
    Call :meth:`start` once, then :meth:`poll` repeatedly (e.g. every 100 ms from a
    ``qt.QTimer``) until it returns a :class:`Finished` or :class:`Failed` event; that
    final event is returned exactly once.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.args = [str(a) for a in args]
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._last_error: str | None = None
        self._cancelled = False
        self._done = False
        self._exit_seen_s: float | None = None
        self.last_progress: Progress | None = None

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start the child and its reader threads; raises ``OSError`` if it cannot start."""
        if self.proc is not None:
            raise RuntimeError("ProcessRunner.start() may be called only once")
        kwargs: dict = {}
        if os.name == "nt":
            # CREATE_NO_WINDOW hides the console like slicer.util.launchConsoleProcess does.
            kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            kwargs["start_new_session"] = True  # own process group: cancel ends the whole tree
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env,
            cwd=None if self.cwd is None else str(self.cwd), **kwargs)
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            t = threading.Thread(target=self._read, args=(stream, name), daemon=True,
                                 name=f"CTMuscleBone-{name}-reader")
            t.start()
            self._threads.append(t)

    def _read(self, stream, name: str) -> None:
        """Reader thread: one event per line into the queue (errors remembered)."""
        try:
            for line in stream:
                if name == "stderr":
                    text = line.rstrip("\r\n")
                    self._stderr_tail.append(text)
                    self._queue.put(Log(text, "stderr"))
                    continue
                parsed = parse_line(line)
                if isinstance(parsed, str):
                    self._last_error = parsed
                    self._queue.put(Log(format_error(parsed)))
                else:
                    self._queue.put(parsed)
        except (OSError, ValueError):  # stream closed under us by cancel()
            pass

    @property
    def running(self) -> bool:
        """True while the child has not ended."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def finished(self) -> bool:
        """True once the final event has been returned by :meth:`poll`."""
        return self._done

    def poll(self) -> list[Event]:
        """Events since the last call; the last one is the final event once the child ended."""
        events: list[Event] = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for e in events:
            if isinstance(e, Progress):
                self.last_progress = e
        if self._done or self.proc is None:
            return events
        if self.proc.poll() is None:
            return events
        if self._exit_seen_s is None:
            self._exit_seen_s = time.monotonic()
        reading = any(t.is_alive() for t in self._threads)
        if reading and not self._cancelled and time.monotonic() - self._exit_seen_s < 2.0:
            # output still being read (a grandchild may hold the pipes: give up after 2 s)
            return events
        while True:  # lines queued between the first drain and the threads ending
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        events.append(self._final_event(self.proc.returncode))
        self._done = True
        return events

    def _final_event(self, returncode: int) -> Event:
        if self._cancelled:
            return Failed("Cancelled by the user.", returncode, cancelled=True)
        if returncode == 0:
            return Finished(0)
        return Failed(self.failure_message(returncode), returncode)

    def failure_message(self, returncode: int | None) -> str:
        """Why the child failed: its last CTMB-ERROR line, else the end of its stderr."""
        if self._last_error:
            return self._last_error
        tail = [line for line in self._stderr_tail if line.strip()]
        if tail:
            return (f"The segmentation process failed (exit code {returncode}):\n"
                    + "\n".join(tail[-8:]))
        if returncode is not None and returncode < 0:
            return f"The segmentation process was killed by signal {-returncode}."
        return f"The segmentation process failed with exit code {returncode} and no message."

    def cancel(self, timeout_s: float = 2.0) -> bool:
        """Stop the child and every process it started; returns within ``timeout_s``.

        The steps are :func:`cancel_steps`: on POSIX SIGTERM to the process group, up to
        half the time to end, then SIGKILL; on Windows the process tree is killed at
        once, and again if it survives. Returns True when the child is gone.
        """
        if self.proc is None or self.proc.poll() is not None:
            return True
        self._cancelled = True
        deadline = time.monotonic() + max(timeout_s, 0.1)
        first, then = cancel_steps(os.name)
        self._stop_group(kill_tree=first)
        try:
            self.proc.wait(timeout=max((deadline - time.monotonic()) / 2, 0.05))
        except subprocess.TimeoutExpired:
            self._stop_group(kill_tree=then)
            try:
                self.proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                return False
        if os.name != "nt":  # grandchildren that ignored SIGTERM (pgid outlives the child)
            self._stop_group(kill_tree=True)
        return True

    def _stop_group(self, kill_tree: bool) -> None:
        """Ask the child's group to end (``kill_tree`` False: SIGTERM; POSIX only) or kill
        it and every descendant (True: SIGKILL to the group, or the tree on Windows)."""
        assert self.proc is not None
        try:
            if os.name == "nt":
                if kill_tree:
                    _kill_tree_windows(self.proc.pid)
                else:
                    self.proc.terminate()
            else:  # pgid == pid: started with start_new_session
                os.killpg(self.proc.pid, signal.SIGKILL if kill_tree else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> list[Event]:
        """Poll until the final event (blocking; for tests and scripts). All events returned.

        Raises ``TimeoutError`` if the child runs longer than ``timeout_s``.
        """
        start = time.monotonic()
        events: list[Event] = []
        while not self._done:
            events += self.poll()
            if self._done:
                break
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise TimeoutError(f"the child process ran longer than {timeout_s} s")
            time.sleep(interval_s)
        return events


def cancel_steps(os_name: str) -> tuple[bool, bool]:
    """The ``kill_tree`` flag of the two steps of :meth:`ProcessRunner.cancel`.

    POSIX: ``(False, True)``, SIGTERM to the group, then SIGKILL. Windows (``"nt"``) has
    no SIGTERM/SIGKILL pair: ``Popen.terminate`` is TerminateProcess, as hard as a kill
    but for the child only, whose own children could then no longer be found; so both
    steps kill the whole tree, ``(True, True)``.
    """
    return (True, True) if os_name == "nt" else (False, True)


def _kill_tree_windows(pid: int) -> None:
    """Kill a process and its children on Windows (psutil, as SlicerMONAIAuto3DSeg does;
    without psutil ``taskkill /T /F``, which ends the tree too)."""
    try:
        import psutil
    except ImportError:
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True,
                       check=False)
        return
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for process in [*parent.children(recursive=True), parent]:
        try:
            process.kill()
        except psutil.NoSuchProcess:  # ended meanwhile
            pass
