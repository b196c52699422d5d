"""The cohort tables of a batch: ``cohort.csv`` (every quantity of every case, long
format), ``cases.csv`` and ``cases.json`` (one entry per case: status, error, time,
input checksums).

``cohort.csv`` has the columns of a case's ``results.csv``
(:data:`CTMuscleBoneLib.results.CSV_COLUMNS`) after the columns ``case_id`` and ``mode``
(``measure``: from the case's label map; ``segment+measure``: segmented by the batch's
model first, so that a cohort mixing the two methods shows it on every row), one row
per case and quantity, cases in the batch's order and rows in each case's order. It is
made from each finished case's ``results.csv`` (values rounded as there; each case's
``results.json`` keeps full precision), so cases resumed from an earlier run and cases
computed now give the same lines. Failed cases have no rows there; ``cases.csv`` gives
their error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..results import CSV_COLUMNS
from .runner import CASES_DIR, CaseRecord

COHORT_COLUMNS = ("case_id", "mode", *CSV_COLUMNS)
#: The tables a batch writes at the top of its output folder (never an input).
TABLE_NAMES = ("cohort.csv", "cases.csv", "cases.json")

#: Columns of cases.csv (cases.json also has each case's warnings and, for an
#: unexpected error, its traceback).
CASES_COLUMNS = ("case_id", "status", "mode", "resumed", "error_type", "error", "time_s",
                 "cpu_s", "peak_rss_mb", "n_rows", "n_warnings", "ct", "ct_sha256", "labels",
                 "labels_sha256", "options_sha256", "worker", "finished_utc")


def case_rows(out_dir: Path, case_id: str) -> list[list[str]]:
    """The rows of a finished case's ``results.csv``, each prefixed with its case id
    (:func:`write_cohort_csv` adds the mode after it).

    Raises
    ------
    ValueError
        The file cannot be read as UTF-8 CSV or lacks the columns of ``results.csv``.
    OSError
        The file cannot be opened (removed after the case finished).
    """
    path = out_dir / CASES_DIR / case_id / "results.csv"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) != CSV_COLUMNS:
                raise ValueError(f"{path} does not have the columns "
                                 f"{', '.join(CSV_COLUMNS)}")
            return [[case_id, *row] for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be read as CSV: {exc}") from exc


def _fail_unreadable(record: CaseRecord, exc: Exception) -> None:
    """Turn an ok record whose ``results.csv`` cannot be read into a failed one."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    record.status = "failed"
    record.error_type = type(exc).__name__
    record.error = (f"its results.csv was changed or removed after the case finished "
                    f"({why.rstrip('.')}): run the batch again to recompute the case.")


def write_cohort_csv(out_dir: Path, records: Sequence[CaseRecord]) -> Path:
    """``cohort.csv`` from the finished cases' results (atomically).

    A finished case whose ``results.csv`` cannot be read (edited, re-saved or removed
    since it was written) gets no rows; its record becomes a failed one saying so (the
    next run recomputes it: :mod:`.marker` checks the file's checksum).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COHORT_COLUMNS)
    for r in records:
        if r.status == "ok":
            try:
                rows = case_rows(out_dir, r.case_id)
            except (OSError, ValueError) as exc:
                _fail_unreadable(r, exc)
                continue
            w.writerows([row[0], r.mode, *row[1:]] for row in rows)
    path = out_dir / "cohort.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def write_cases(out_dir: Path, records: Sequence[CaseRecord],
                header: dict[str, Any]) -> tuple[Path, Path]:
    """``cases.csv`` (columns :data:`CASES_COLUMNS`) and ``cases.json`` (``header`` plus
    a summary and every record), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CASES_COLUMNS)
    for r in records:
        d = r.to_dict()
        w.writerow(["" if d[c] is None else str(d[c]).lower() if isinstance(d[c], bool)
                    else d[c] for c in CASES_COLUMNS])
    csv_path = out_dir / "cases.csv"
    atomic_write_text(csv_path, buf.getvalue())
    summary = {"n_cases": len(records),
               "n_ok": sum(r.status == "ok" for r in records),
               "n_failed": sum(r.status != "ok" for r in records),
               "n_resumed": sum(r.resumed for r in records)}
    doc = {**header, "summary": summary, "cases": [r.to_dict() for r in records]}
    json_path = out_dir / "cases.json"
    atomic_write_text(json_path, json.dumps(doc, indent=1) + "\n")
    return csv_path, json_path
