"""One results model for every measurement: rows plus provenance.

A :class:`Results` holds :class:`ResultRow` objects, each one quantity of one
structure: ``(structure, quantity, value, unit, method, flags)``. A value that cannot
be measured is kept as a row whose ``value`` is None and whose ``flags`` give the
reason (``not_measurable: metal in the femoral neck``), never silently dropped.
:class:`Provenance` records the software version, the input's checksum, where the
labels came from, the patient facts used and every model and coefficient file used.

Flags
-----
Every flag is ``"<tag>: <text>"``; the tag (the text before the first colon) says
what kind of condition it is, and each condition appears once per row (duplicates are
dropped when a row is made and when it is written).

* **Information** (``info: ...``) qualifies how a value was obtained without lowering
  its trust: ``info: ROI relaxed to 2 mm margin``, ``info: vertebrae_L1 not in the
  labels``.
* **Warnings** are every other tag. The ones the readers of the table (summary, Slicer
  table, tests) rely on:

  ``not_measurable``  the value is None; the text is the reason.
  ``partial``         the structure is cut by the field of view (its value is too low).
  ``unvalidated``     a default model, coefficient or threshold not validated here.
  ``uncalibrated``    the value depends on a calibration that is absent.
  ``calibration``     a warning of the HU-to-BMD calibration used.
  ``edited``          ``edited: segmentation corrected by hand`` (see ``pipeline``).
  ``contrast``        the scan is contrast-enhanced (``contrast.CONTRAST_FLAG``).
  ``uncertain``, ``coarse``, ``warning``, ``fracture``, ``shaft axis``: other caveats.

:func:`is_info`, :func:`flag_tag`, :func:`warning_flags`, :func:`info_flags` and
:func:`unique_flags` apply the convention.

Categories
----------
A **category** row holds a clinical class, not a number: its unit is ``''`` and its
value a string (``'normal'``, ``'yes'``), :data:`INDETERMINATE` when a number exists
but is not on the scale the category's thresholds were made for, or None when not
measurable. An indeterminate category's reason, and what to do, is a flag starting
with :data:`CATEGORY_WITHHELD` (``warning: category withheld: contrast-enhanced scan
...``), which the report reads back. :func:`is_category` recognises category rows by
quantity name.

Number formats
--------------
``results.csv`` and ``summary.txt`` show each value rounded to the digits that are
meaningful for its quantity (:data:`DISPLAY_DECIMALS`, via :func:`format_value`):
0.1 cm3, 0.1 HU, 0.001 g/cm2, 0.1 mg/cm3, 0.1 SD (T-scores), 0.01 kg, 0.01 kg/m2,
0.1 %. ``results.json`` is the machine format and keeps full precision.

Writers: :meth:`Results.write_csv` (columns :data:`CSV_COLUMNS`; ``structure`` is the
machine key, ``display_name`` the readable name), :meth:`Results.write_json` (both
atomic).
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
from .anatomy import BY_KEY, MUSCLE_REGIONS
from .atomic import atomic_write_text

CSV_COLUMNS = ("structure", "display_name", "quantity", "value", "unit", "method", "flags")

# -- flags -----------------------------------------------------------------------------
#: Tag of a flag that is information, not a warning.
INFO = "info"
NOT_MEASURABLE = "not_measurable"
#: Tag of the flag of rows recomputed after a hand edit (``pipeline.EDITED_FLAG``).
EDITED = "edited"
#: The reason of every value that needs a HU-to-BMD calibration when there is none
#: (femur and spine alike; the summary says which calibration was missing and why).
NO_CALIBRATION_REASON = "no HU-to-BMD calibration (HU values only)"
#: Value of a category row whose number exists but is not on the scale the category's
#: thresholds were made for (contrast, a calibration error interval across a threshold,
#: a tube voltage other than the thresholds'); the flags give the reason.
INDETERMINATE = "indeterminate"
#: Start of the flag that says why a category is :data:`INDETERMINATE` and what to do.
CATEGORY_WITHHELD = "warning: category withheld"


def withheld_flag(reason: str) -> str:
    """The flag of an indeterminate category: ``warning: category withheld: <reason>``."""
    return f"{CATEGORY_WITHHELD}: {reason}"


def is_category(quantity: str) -> bool:
    """True for the quantity of a category row (a clinical class, not a number).

    The category rows and their names:

    * ``<criteria>_category``: lumbar ``acr_category`` (ACR QCT), L1
      ``opportunistic_category`` (Pickhardt 2013);
    * ``<criteria>_category_<site>``: ``who_category_<site>``, ``jsbmr_category_<site>``
      (:mod:`CTMuscleBoneLib.dxa.scores`);
    * ``low_<quantity>_<cut-off id>``: L3 ``low_smi_<id>`` and ``low_attenuation_<id>``
      (:mod:`CTMuscleBoneLib.muscle_l3`);
    * ``sarcopenia_low_muscle_mass`` (:mod:`CTMuscleBoneLib.alm`).

    ``fracture_grade`` is a number (Genant grade 0-3), not a category row.
    """
    q = quantity.lower()
    return ("_category" in q or q.startswith("low_")
            or q == "sarcopenia_low_muscle_mass")


def flag_tag(flag: str) -> str:
    """The tag of a flag (text before the first colon), or '' when it has none."""
    head, sep, _ = flag.partition(":")
    return head.strip() if sep else ""


def is_info(flag: str) -> bool:
    """True for an information flag (``info: ...``), False for a warning."""
    return flag_tag(flag) == INFO


def unique_flags(flags: Iterable[str]) -> list[str]:
    """Flags in their first order, each once (empty strings dropped)."""
    out: list[str] = []
    for f in flags:
        f = f.strip()
        if f and f not in out:
            out.append(f)
    return out


def warning_flags(flags: Iterable[str]) -> list[str]:
    """The warnings among ``flags`` (all but ``info:``), each once."""
    return [f for f in unique_flags(flags) if not is_info(f)]


def info_flags(flags: Iterable[str]) -> list[str]:
    """The information flags among ``flags``, each once."""
    return [f for f in unique_flags(flags) if is_info(f)]


# -- display ---------------------------------------------------------------------------
#: Decimals shown in results.csv and summary.txt. Looked up by quantity name first,
#: then by unit; a unit not listed gets 4 significant digits. results.json keeps full
#: precision.
DISPLAY_DECIMALS: dict[str, int] = {
    # quantities whose unit alone does not say it
    "fracture_grade": 0,
    "fat_fraction": 3,
    "lean_fraction": 3,
    # units
    "cm3": 1,
    "cm2": 1,
    "cm2/m2": 1,
    "HU": 1,
    "g/cm2": 3,
    "mg/cm3": 1,
    "SD": 1,
    "kg": 2,
    "kg/m2": 2,
    "%": 1,
    "g": 1,
    "mm": 1,
    "deg": 1,
    "m": 2,
    "years": 0,
    "1": 3,
}
#: Significant digits of a value whose quantity and unit are not in DISPLAY_DECIMALS.
DEFAULT_SIGNIFICANT_DIGITS = 4

_REGION_NAMES = {r: text.split(" (", 1)[0] for r, text in MUSCLE_REGIONS.items()}
_REGION_NAMES["lower_limb"] = "Lower limb muscles"
_SIDE_NAMES = {"left": "left", "right": "right", "total": "both sides"}
_SPECIAL_NAMES = {"patient": "Patient"}
#: Words of quantity names written otherwise in tables (``abmd`` -> ``aBMD``).
_QUANTITY_WORDS = {
    "abmd": "aBMD", "vbmd": "vBMD", "hu": "HU", "sd": "SD", "who": "WHO", "alm": "ALM",
    "smi": "SMI", "acr": "ACR", "yam": "young-adult mean", "imat": "IMAT",
    "jsbmr": "JSBMR", "l3": "L3", "ap": "(AP projection)", "bmc": "BMC",
}
_QUANTITY_NAMES = {
    "t_score": "T-score", "percent_yam": "% young-adult mean", "neck_shaft_angle":
    "neck-shaft angle", "sarcopenia_low_muscle_mass": "low muscle mass (sarcopenia)",
    "opportunistic_category": "opportunistic category (L1 HU)",
    "abmd_dxa": "DXA-equivalent aBMD", "z_score": "Z-score",
    "who_category": "WHO category", "jsbmr_category": "JSBMR category",
    "psoas_muscle_index": "psoas muscle index", "skeletal_muscle_area":
    "skeletal muscle area", "muscle_attenuation": "muscle attenuation",
    "trabecular_vbmd_ha": "trabecular vBMD (HA-equivalent)",
}


def display_name(structure: str) -> str:
    """Readable name of a row's structure.

    Anatomy keys give their display name (``Gluteus medius (left)``), muscle group
    totals a region and side (``lower_limb_left`` -> ``Lower limb muscles (left)``),
    lumbar summaries their levels (``lumbar_L1_L4`` -> ``Lumbar spine L1-L4``).
    """
    st = BY_KEY.get(structure)
    if st is not None:
        return st.display_name
    if structure in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[structure]
    region, _, side = structure.rpartition("_")
    if region in _REGION_NAMES and side in _SIDE_NAMES:
        return f"{_REGION_NAMES[region]} ({_SIDE_NAMES[side]})"
    if structure.startswith("lumbar_"):
        return "Lumbar spine " + structure.removeprefix("lumbar_").replace("_", "-")
    return structure.replace("_", " ")


def quantity_label(quantity: str) -> str:
    """Readable name of a quantity (``abmd_total_hip`` -> ``aBMD total hip``)."""
    for key, name in _QUANTITY_NAMES.items():
        if quantity == key or quantity.startswith(key + "_"):
            rest = quantity[len(key):].lstrip("_")
            return f"{name} {quantity_label(rest)}".strip() if rest else name
    return " ".join(_QUANTITY_WORDS.get(w, w) for w in quantity.split("_"))


def display_unit(unit: str) -> str:
    """Unit as shown in tables: the dimensionless '1' is shown empty."""
    return "" if unit == "1" else unit


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalar
        return _clean(v.item())
    return v


def display_decimals(quantity: str, unit: str) -> int | None:
    """Decimals for a quantity/unit from :data:`DISPLAY_DECIMALS`, or None (not listed)."""
    if quantity in DISPLAY_DECIMALS:
        return DISPLAY_DECIMALS[quantity]
    return DISPLAY_DECIMALS.get(unit)


def format_value(value: Any, unit: str = "", quantity: str = "") -> str:
    """A value as written to results.csv and summary.txt; '' when None or not finite.

    Floats are rounded per :data:`DISPLAY_DECIMALS`; integers, booleans and text are
    written as they are.
    """
    v = _clean(value)
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    d = display_decimals(quantity, unit)
    if d is None:
        mag = math.floor(math.log10(abs(v))) if v else 0
        d = max(0, DEFAULT_SIGNIFICANT_DIGITS - 1 - mag)
    text = f"{v:.{d}f}"
    if text.lstrip("-").strip("0.") == "":  # no "-0.0"
        text = text.lstrip("-")
    return text


# -- model -----------------------------------------------------------------------------
@dataclass
class ResultRow:
    """One measured quantity.

    Attributes
    ----------
    structure : str
        Anatomy key (``gluteus_medius_left``), a group name (``lower_limb_total``) or
        ``patient`` for whole-patient quantities (SMI). :func:`display_name` gives the
        readable name.
    quantity : str
        Quantity name, unit-free (``volume``, ``mean_hu``, ``abmd``).
    value : float, int, str or None
        The value; None when not measurable (the reason is in ``flags``).
    unit : str
        Unit in text form (``cm3``, ``HU``, ``g/cm2``, ``mg/cm3``, ``SD``, ``kg/m2``,
        ``1``).
    method : str
        How the value was obtained, short (``voxel count x voxel volume``); the
        calibration appears only in values that depend on it.
    flags : list of str
        Warnings and information, ``tag: text`` (see the module docstring), each once:
        ``partial: cut by the field of view``, ``unvalidated: default ALM
        coefficients``, ``not_measurable: ...``, ``info: ...``.
    """

    structure: str
    quantity: str
    value: float | int | str | None
    unit: str
    method: str = ""
    flags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flags = unique_flags(self.flags)

    @property
    def measurable(self) -> bool:
        return self.value is not None

    @property
    def display_name(self) -> str:
        """Readable name of the structure (:func:`display_name`)."""
        return display_name(self.structure)

    @property
    def warnings(self) -> list[str]:
        """The row's warning flags (all but ``info:``), each once."""
        return warning_flags(self.flags)

    @property
    def info(self) -> list[str]:
        """The row's information flags, each once."""
        return info_flags(self.flags)

    def display_value(self) -> str:
        """The value rounded for display (:func:`format_value`); '' when None."""
        return format_value(self.value, self.unit, self.quantity)


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
        """Everything, values at full precision (the machine format)."""
        return {
            "provenance": asdict(self.provenance),
            "warnings": list(self.warnings),
            "unknown_labels": {str(k): v for k, v in sorted(self.unknown_labels.items())},
            "rows": [_row_dict(r) for r in self.rows],
        }

    def to_csv_text(self) -> str:
        """CSV text (columns :data:`CSV_COLUMNS`): values rounded for reading, warnings
        before information in ``flags``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in self.rows:
            w.writerow([r.structure, r.display_name, r.quantity, r.display_value(), r.unit,
                        r.method, "; ".join(r.warnings + r.info)])
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows as CSV (columns :data:`CSV_COLUMNS`), atomically."""
        atomic_write_text(path, self.to_csv_text())
        return Path(path)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write rows, provenance, warnings and unknown labels as JSON, atomically
        (values at full precision)."""
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


def _row_dict(r: ResultRow) -> dict[str, Any]:
    d = asdict(r)
    d["value"] = _clean(r.value)
    d["flags"] = unique_flags(r.flags)
    return d


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
