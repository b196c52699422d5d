"""Run a cohort: :func:`run_batch` (find the cases, run each, write the cohort tables)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..atomic import check_output_dir, refuse_input_overwrite
from ..deidentify import REMOVED
from ..errors import InputError
from .cases import CaseSpec, discover_cases
from .cohort import TABLE_NAMES, write_cases, write_cohort_csv
from .executors import DaskExecutor, LocalExecutor
from .options import BatchOptions
from .runner import CASES_DIR, CaseRecord, input_paths, record_written_since, run_case


class BatchMonitor(Protocol):
    """Receives the progress of a batch (:class:`.progress.BatchProgress` prints it)."""

    def begin(self, total: int, description: str) -> None: ...

    def update(self, record: CaseRecord) -> None: ...


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    records : list of CaseRecord
        One per case, in the batch's case order.
    paths : dict
        ``cohort_csv``, ``cases_csv``, ``cases_json``.
    """

    records: list[CaseRecord]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseRecord]:
        return [r for r in self.records if r.status != "ok"]


def _lost(item: CaseSpec, exc: BaseException, deidentify: bool) -> CaseRecord:
    """The record of a case the executor lost (its worker died)."""
    return CaseRecord(item.case_id, status="failed", **input_paths(item, deidentify),
                      error_type=type(exc).__name__,
                      error=f"the case's worker was lost: "
                            f"{str(exc).rstrip('.') or type(exc).__name__}. "
                            "Run the batch again to retry it (fewer workers if memory ran "
                            "out).",
                      finished_utc=datetime.now(UTC).isoformat(timespec="seconds"))


def refuse_inputs_in_outputs(source: str | os.PathLike[str], cases: list[CaseSpec],
                             out: Path, options: BatchOptions) -> None:
    """Raise InputError when an output of the batch (its tables, the case folders under
    ``cases/``) is, holds or lies inside an input: the case list, a case's CT, label
    map or names sidecar, the names file or an option file."""
    from ..io_labels import label_input_files
    from .options import FILE_FIELDS

    inputs: list[str | os.PathLike[str] | None] = []
    if Path(source).is_file():
        inputs.append(source)
    for case in cases:
        inputs.append(case.ct)
        if case.labels:
            inputs += label_input_files(case.labels, options.names)
    inputs += [options.names, *(options.measure.get(k) for k in FILE_FIELDS)]
    existing = [p for p in inputs if isinstance(p, str | os.PathLike) and str(p)
                and Path(p).exists()]
    refuse_input_overwrite([out / name for name in TABLE_NAMES] + [out / CASES_DIR],
                           existing)


def run_batch(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
              options: BatchOptions | None = None, workers: int = 1,
              scheduler: Any = None, monitor: BatchMonitor | None = None) -> BatchResult:
    """Measure (or segment and measure) every case of a cohort; resumable.

    Parameters
    ----------
    source : path-like
        A folder of cases or a CSV case list (:mod:`.cases`).
    out_dir : path-like
        Output folder: ``cases/<case_id>/`` per case, ``cohort.csv``, ``cases.csv``,
        ``cases.json``. Cases already complete there for the same inputs and options
        are not recomputed (:mod:`.marker`).
    options : BatchOptions, optional
        Options of every case (a case's own sex, age, height, weight override them),
        the per-case outputs (report, DICOM) and de-identification: then the cohort
        tables name no input path (``cases.json``'s ``input`` neither).
    workers : int
        Cases at the same time on this machine (1: one after another in this process).
    scheduler : str or distributed.Client, optional
        A Dask scheduler address (``tcp://host:8786``) or client: the cases run on
        that cluster instead (``workers`` must then be 1).
    monitor : BatchMonitor, optional
        Progress receiver (e.g. :class:`.progress.BatchProgress`).

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError
        Before any case runs: no cases, bad case list, bad options, an unusable output
        folder, an unreachable scheduler. A problem of one case is in its record.
    MissingDependencyError
        Before any case runs: the report or DICOM option without its packages here.
    KeyboardInterrupt
        After writing the tables of the cases finished so far.
    """
    out = check_output_dir(out_dir)
    options = options or BatchOptions()
    cases = discover_cases(source, exclude=out)
    refuse_inputs_in_outputs(source, cases, out, options)
    options.require_output_packages()
    if scheduler is not None and int(workers) != 1:
        raise InputError("--workers applies to runs on this machine; with a Dask scheduler "
                         "the cluster's workers run the cases: leave workers at 1.")
    executor = DaskExecutor(scheduler) if scheduler is not None else LocalExecutor(workers)
    out.mkdir(parents=True, exist_ok=True)
    if monitor is not None:
        monitor.begin(len(cases), executor.description)
    finished: dict[str, CaseRecord] = {}
    header = {"software": f"CTMuscleBone {__version__}",
              "input": REMOVED if options.deidentify else str(source),
              "executor": executor.description, "options": options.describe(),
              "started_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    complete = False
    started_s = time.time() - 1.0  # file times may be stored to the second
    try:
        for item, record, error in executor.map_unordered(run_case, cases, options,
                                                          str(out)):
            record = record if error is None else _lost(item, error, options.deidentify)
            finished[item.case_id] = record
            if monitor is not None:
                monitor.update(record)
        complete = True
    finally:
        executor.close()
        if not complete:  # a case may have finished after its last reply was received
            for item in cases:
                if item.case_id not in finished:
                    late = record_written_since(item, options, str(out), started_s)
                    if late is not None:
                        finished[item.case_id] = late
        records = [finished[c.case_id] for c in cases if c.case_id in finished]
        header["complete"] = complete
        paths = {"cohort_csv": write_cohort_csv(out, records)}
        paths["cases_csv"], paths["cases_json"] = write_cases(out, records, header)
    return BatchResult(records, paths)
