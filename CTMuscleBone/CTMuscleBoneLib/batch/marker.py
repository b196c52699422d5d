"""The completion marker of a case: ``done.json``, written last and atomically.

A case folder holds its results; ``done.json`` says they are complete and for which
inputs and options: the SHA-256 of the CT (file, or every file of a DICOM folder), of
the label map and of the names sidecar read beside it, and the fingerprint of the options
(:func:`CTMuscleBoneLib.batch.options.fingerprint`). A rerun skips a case only when its
marker exists and all of them match; anything else (no marker, a changed input, changed
options, an unreadable marker) recomputes the case.
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
MATCH_KEYS = ("ct_sha256", "labels_sha256", "label_names_sha256", "options_sha256")


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
    if not all((case_dir / name).is_file() for name in ("results.json", "results.csv")):
        return None
    return marker


def write_marker(case_dir: Path, marker: dict[str, Any]) -> Path:
    """Write ``done.json`` atomically (call it after every other output is in place)."""
    path = marker_path(case_dir)
    atomic_write_text(path, json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return path
