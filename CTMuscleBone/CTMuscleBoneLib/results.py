"""One results model for every measurement: rows plus provenance.

A :class:`Results` holds :class:`ResultRow` objects, each one quantity of one
structure: ``(structure, quantity, value, unit, method, flags)``. A value that cannot
be measured is kept as a row whose ``value`` is None and whose ``flags`` give the
reason (``not_measurable: metal in the femoral neck``), never silently dropped.
:class:`Provenance` records the software version, the input's checksum, where the
labels came from and every model and coefficient file used.

Writers: :meth:`Results.write_csv`, :meth:`Results.write_json` (both atomic).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_write_text

CSV_COLUMNS = ("structure", "quantity", "value", "unit", "method", "flags")


@dataclass
class ResultRow:
    """One measured quantity.

    Attributes
    ----------
    structure : str
        Anatomy key (``gluteus_medius_left``), a group name (``lower_limb_total``) or
        ``patient`` for whole-patient quantities (SMI).
    quantity : str
        Quantity name, unit-free (``volume``, ``mean_hu``, ``abmd``).
    value : float, int, str or None
        The value; None when not measurable (the reason is in ``flags``).
    unit : str
        Unit in text form (``cm3``, ``HU``, ``g/cm2``, ``mg/cm3``, ``kg/m2``, ``1``).
    method : str
        How the value was obtained, short (``voxel count x voxel volume``).
    flags : list of str
        Warnings and qualifiers: ``partial: cut by the field of view``,
        ``unvalidated: default ALM coefficients``, ``not_measurable: ...``.
    """

    structure: str
    quantity: str
    value: float | int | str | None
    unit: str
    method: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def measurable(self) -> bool:
        return self.value is not None


@dataclass
class Provenance:
    """Where every number came from."""

    software: str = f"CTMuscleBone {__version__}"
    created_utc: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    platform: str = field(default_factory=lambda: f"Python {platform.python_version()}")
    input_ct: str | None = None
    input_ct_sha256: str | None = None
    input_labels: str | None = None
    input_labels_sha256: str | None = None
    label_source: str | None = None
    ct_geometry: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    coefficients: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Sex, height (m) and age (years) used, each with its source ('option' or
    #: 'DICOM header'; None when not known).
    patient: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """All measurements of one case."""

    rows: list[ResultRow] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    unknown_labels: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: In-memory products for reports and display (e.g. femur projections); not
    #: serialised.
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False)

    def add(self, row: ResultRow) -> ResultRow:
        self.rows.append(row)
        return row

    def extend(self, rows: Iterable[ResultRow]) -> None:
        self.rows.extend(rows)

    def get(self, structure: str, quantity: str) -> ResultRow | None:
        """The first row of a structure and quantity, or None."""
        for r in self.rows:
            if r.structure == structure and r.quantity == quantity:
                return r
        return None

    def value(self, structure: str, quantity: str) -> Any:
        """Value of a row; KeyError when absent (None when not measurable)."""
        r = self.get(structure, quantity)
        if r is None:
            raise KeyError(f"no result for {structure} / {quantity}")
        return r.value

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "provenance": asdict(self.provenance),
            "warnings": list(self.warnings),
            "unknown_labels": {str(k): v for k, v in sorted(self.unknown_labels.items())},
            "rows": [_row_dict(r) for r in self.rows],
        }

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in self.rows:
            w.writerow([r.structure, r.quantity, _fmt_value(r.value), r.unit, r.method,
                        "; ".join(r.flags)])
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows as CSV (columns :data:`CSV_COLUMNS`), atomically."""
        atomic_write_text(path, self.to_csv_text())
        return Path(path)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write rows, provenance, warnings and unknown labels as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Results:
        return cls(
            rows=[ResultRow(**r) for r in d.get("rows", [])],
            provenance=Provenance(**d.get("provenance", {})),
            unknown_labels={int(k): v for k, v in d.get("unknown_labels", {}).items()},
            warnings=list(d.get("warnings", [])),
        )

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> Results:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalar
        return _clean(v.item())
    return v


def _row_dict(r: ResultRow) -> dict[str, Any]:
    d = asdict(r)
    d["value"] = _clean(r.value)
    return d


def _fmt_value(v: Any) -> str:
    v = _clean(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def sha256_of_path(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder's files (sorted by relative path), hex."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
