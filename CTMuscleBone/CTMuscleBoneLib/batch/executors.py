"""Where the cases run: a process pool on this machine, or a Dask cluster.

Both executors run the same function on each case and yield ``(item, result, error)``
as cases finish (in completion order): ``error`` is an exception only when the
executor itself lost the case (a worker process killed, e.g. for lack of memory); a
problem of the case is in its result (see :func:`.runner.run_case`).

* :class:`LocalExecutor`: ``workers`` = 1 runs the cases one after another in this
  process; more uses a :class:`concurrent.futures.ProcessPoolExecutor` (started with
  'spawn', the one start method of every platform) with at most ``workers`` cases in
  flight, so a dead worker loses only the cases it was running; the pool is started
  again for the rest.
* :class:`DaskExecutor`: a ``distributed.Client`` connected to a running scheduler
  (``tcp://host:8786``); the workers must have ctmusclebone installed (same version)
  and see the input and output paths (shared file system).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import InputError, MissingDependencyError

Outcome = tuple[Any, Any, BaseException | None]


class LocalExecutor:
    """Cases on this machine: in this process (1 worker) or a process pool.

    Parameters
    ----------
    workers : int
        Cases run at the same time, >= 1.
    """

    def __init__(self, workers: int = 1) -> None:
        if int(workers) < 1:
            raise InputError(f"The number of workers must be >= 1, got {workers}.")
        self.workers = int(workers)
        self.description = (f"local, {self.workers} worker process"
                            + ("es" if self.workers > 1 else " (this process)"))

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any],
                      *args: Any) -> Iterator[Outcome]:
        """Run ``fn(item, *args)`` for each item; yield (item, result, error) as each ends."""
        if self.workers == 1:
            for item in items:
                yield item, fn(item, *args), None
            return
        yield from self._pool(fn, list(items), args)

    def _pool(self, fn: Callable[..., Any], items: list[Any],
              args: tuple[Any, ...]) -> Iterator[Outcome]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")
        pending = list(reversed(items))
        pool = ProcessPoolExecutor(self.workers, mp_context=context)
        running: dict[Any, Any] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    item = pending.pop()
                    running[pool.submit(fn, item, *args)] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    item = running.pop(future)
                    try:
                        yield item, future.result(), None
                    except BrokenProcessPool as exc:
                        broken = True
                        yield item, None, exc
                    except Exception as exc:  # noqa: BLE001 - reported for this case only
                        yield item, None, exc
                if broken:  # the other cases in flight died with it
                    for item in list(running.values()):
                        yield item, None, RuntimeError("worker process ended abruptly "
                                                       "(killed, e.g. for lack of memory)")
                    running.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = ProcessPoolExecutor(self.workers, mp_context=context)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing to release (the pool lives only while cases run)."""


class DaskExecutor:
    """Cases on a Dask distributed cluster.

    Parameters
    ----------
    scheduler : str
        Address of a running scheduler (``tcp://10.0.0.5:8786``), or a
        ``distributed.Client`` / ``LocalCluster`` object.
    timeout_s : float
        How long to wait for the scheduler, s.

    Raises
    ------
    MissingDependencyError
        ``distributed`` is not installed (extra ``cohort``).
    InputError
        The scheduler cannot be reached.
    """

    def __init__(self, scheduler: Any, timeout_s: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise MissingDependencyError(
                "Running a batch on Dask needs the package 'distributed', which is not "
                "installed: pip install \"ctmusclebone[cohort]\".") from exc
        self._own = not isinstance(scheduler, Client)
        if isinstance(scheduler, Client):
            self.client = scheduler
        else:
            try:
                self.client = Client(scheduler, timeout=timeout_s)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"Cannot connect to the Dask scheduler {scheduler}: {exc}. "
                                 "Start it (dask scheduler; dask worker ADDRESS on each "
                                 "machine) and give its address, e.g. "
                                 "tcp://host:8786.") from exc
        n_workers = len(self.client.scheduler_info().get("workers", {}))
        self.description = f"Dask scheduler {self.client.scheduler.address}, " \
                           f"{n_workers} worker(s)"

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any],
                      *args: Any) -> Iterator[Outcome]:
        """Submit every item; yield (item, result, error) as each finishes."""
        from distributed import as_completed

        futures = {self.client.submit(fn, item, *args, pure=False): item for item in items}
        try:
            for future in as_completed(futures):
                item = futures[future]
                try:
                    yield item, future.result(), None
                except Exception as exc:  # noqa: BLE001 - a lost worker: this case only
                    yield item, None, exc
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        """Disconnect (a client this executor made; the cluster keeps running)."""
        if self._own:
            self.client.close()
