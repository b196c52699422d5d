"""The completion marker of a case: ``done.json``, written last and atomically.

A case folder holds its results; ``done.json`` says they are complete and for which
inputs, options and software: the SHA-256 of the CT (file, or every file of a DICOM
folder), of the label map, of the names sidecar read beside it and of the data files of
a ``.mhd``/``.nhdr`` header, the fingerprint of the options
(:func:`CTMuscleBoneLib.batch.options.fingerprint`) and the software version; and it
holds the SHA-256 of the case's ``results.csv`` as written. A rerun skips a case only
when its marker exists, all of them match and ``results.csv`` is unchanged; anything
else (no marker, a changed input, changed options, another version, an edited or
missing ``results.csv``, an unreadable marker) recomputes the case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

MARKER_NAME = "done.json"
#: Keys that must match for a case to be skipped. ``label_names_sha256``: the names
#: sidecar read beside the label map (``<case>_labels.labels.json``; None when there is
#: none): swapping two names there changes the numbers as much as changing the map.
#: ``software``: "CTMuscleBone <version>", so that a cohort never mixes versions.
#: ``data_files_sha256``: the data files of ``.mhd``/``.nhdr`` headers (None for other
#: formats), whose checksum is not the header's.
MATCH_KEYS = ("ct_sha256", "labels_sha256", "label_names_sha256", "options_sha256",
              "data_files_sha256", "software")
#: The marker's checksum of the case's ``results.csv`` (the file ``cohort.csv`` is
#: made from): an edited, re-saved or truncated file recomputes the case.
RESULTS_KEY = "results_csv_sha256"
RESULTS_CSV = "results.csv"


def results_checksum(case_dir: Path) -> str | None:
    """SHA-256 of a case folder's ``results.csv``; None when it cannot be read."""
    from ..results import sha256_of_path

    try:
        return sha256_of_path(case_dir / RESULTS_CSV)
    except OSError:
        return None


def marker_path(case_dir: Path) -> Path:
    return case_dir / MARKER_NAME


def read_marker(case_dir: Path) -> dict[str, Any] | None:
    """The marker of a case folder, or None when absent or unreadable."""
    try:
        data = json.loads(marker_path(case_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(case_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The marker when the case is complete for ``expected`` (the MATCH_KEYS values),
    else None."""
    marker = read_marker(case_dir)
    if marker is None or marker.get("status") != "ok":
        return None
    if any(marker.get(k) != expected.get(k) for k in MATCH_KEYS):
        return None
    if not all((case_dir / name).is_file() for name in ("results.json", RESULTS_CSV)):
        return None
    if marker.get(RESULTS_KEY) != results_checksum(case_dir):
        return None
    return marker


def write_marker(case_dir: Path, marker: dict[str, Any]) -> Path:
    """Write ``done.json`` atomically (call it after every other output is in place),
    with the checksum of the case's ``results.csv`` added (:data:`RESULTS_KEY`)."""
    path = marker_path(case_dir)
    marker = {**marker, RESULTS_KEY: results_checksum(case_dir)}
    atomic_write_text(path, json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return path
