"""A readable plain-text summary of :class:`~CTMuscleBoneLib.results.Results`.

Order: the demo/synthetic-model banner (once), the patient facts used with their
source, the calibration used, the tables (muscles, muscle group totals, lean mass and
SMI, femoral and lumbar bone density), then the warnings (case-level and per row, each
once with the structures it concerns) and the information notes. Structures are shown
by their display names, values rounded per :data:`~CTMuscleBoneLib.results.DISPLAY_DECIMALS`.
Values that cannot be measured are listed per structure and reason below their table
rather than as rows of "n/a".
"""

from __future__ import annotations

from collections.abc import Callable

from .anatomy import BY_KEY
from .results import (
    NOT_MEASURABLE,
    ResultRow,
    Results,
    display_name,
    display_unit,
    flag_tag,
    format_value,
    info_flags,
    quantity_label,
    unique_flags,
    warning_flags,
)

#: Flag tags that a table's flags column shows (the full text is in the Warnings list).
_SHOWN_IN_SECTIONS = ("calibration",)
#: Case-level warnings shown in the Calibration section instead of the Warnings list.
_CALIBRATION_INFO = ("calibration: ", "calibration (given): ")
#: Section order for rows that are neither muscles nor muscle group totals.
_SECTIONS: tuple[tuple[str, Callable[[ResultRow], bool]], ...] = (
    ("Lean mass and SMI", lambda r: r.structure == "patient"),
    ("Femoral bone density", lambda r: r.structure.startswith("femur_")),
    ("Lumbar spine bone density", lambda r: r.structure.startswith(("vertebrae_", "lumbar_"))),
    ("Other results", lambda r: True),
)


def _fmt(row: ResultRow | None, scale: float = 1.0, unit: str | None = None) -> str:
    if row is None or row.value is None:
        return "n/a"
    v = row.value
    if scale != 1.0 and isinstance(v, float):
        v = v * scale
    return format_value(v, row.unit if unit is None else unit, row.quantity if unit is None
                        else "") or "n/a"


def warning_tags(rows: list[ResultRow], not_measurable_first: bool = False) -> str:
    """Short warning tags of rows ('partial, unvalidated'); information is left out.

    ``not_measurable_first``: start with 'not measurable' when a row has no value (the
    report's tables, where the reason is given below the table).
    """
    tags: list[str] = (["not measurable"] if not_measurable_first
                       and any(r.value is None for r in rows) else [])
    for r in rows:
        for f in warning_flags(r.flags):
            tag = flag_tag(f) or f
            if tag != NOT_MEASURABLE and tag not in tags:
                tags.append(tag)
    return ", ".join(tags)


def format_table(header: list[str], body: list[list[str]], align: str = "") -> str:
    """A text table with a rule under the header.

    ``align`` has one letter per column, 'l' or 'r'; by default the first column is
    left-aligned and the others right-aligned.
    """
    n = len(header)
    align = align or "l" + "r" * (n - 1)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(n)]

    def line(r: list[str]) -> str:
        cells = [c.ljust(w) if a == "l" else c.rjust(w)
                 for c, w, a in zip(r, widths, align, strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


# -- header sections -------------------------------------------------------------------
def banners(results: Results) -> list[str]:
    """What the summary shows first, once: the warning of each synthetic (demo) model
    used (also ``Results.warnings[0]`` after ``pipeline.analyze``) and provenance notes
    that start with "SYNTHETIC" (a synthetic phantom as input)."""
    out = [m["warning"] for m in results.provenance.models
           if m.get("synthetic") and m.get("warning")]
    extra = results.artifacts.get("model_warning")
    if extra:
        out.append(str(extra))
    out += [n for n in results.provenance.notes if n.startswith("SYNTHETIC")]
    return unique_flags(out)


def format_patient(results: Results) -> str:
    """'Patient' section: sex, height and age used, each with its source."""
    p = results.provenance.patient
    if not p:
        return ""

    def fact(label: str, key: str, unit: str, hint: str) -> str:
        v = p.get(key)
        if v is None:
            return f"{label}: not known ({hint})"
        if isinstance(v, float):
            v = format_value(v, unit)
        src = p.get(f"{key.split('_')[0]}_source")
        return f"{label}: {v}{' ' + unit if unit else ''}" + (f" (from {src})" if src else "")

    lines = [fact("sex", "sex", "", "give --sex; sex-specific cut-offs not applied"),
             fact("height", "height_m", "m", "give --height; SMI not computed"),
             fact("age", "age_years", "years",
                  "give --age; it decides whether T-scores and bone categories (50 or "
                  "over) or Z-scores (under 50) apply (ISCD): no Z-score without it")]
    return "Patient (facts used)\n" + "\n".join(f"  {x}" for x in lines)


def _calibration_entry(results: Results) -> dict | None:
    for c in results.provenance.coefficients:
        if c.get("kind") == "HU-to-BMD calibration":
            return c
    return None


def format_calibration(results: Results) -> str:
    """'Calibration' section: the HU-to-BMD calibration used for the bone values."""
    c = _calibration_entry(results)
    if c is None:
        return ""
    if c.get("method") in (None, "none") or c.get("slope_mg_cm3_per_hu") is None:
        why = c.get("description") or "no calibration"
        lines = [f"none: bone values in HU only ({why})"]
    else:
        r = c.get("r")
        quality = f", r = {r:.4f}" if isinstance(r, float) else ""
        icpt = float(c.get("intercept_mg_cm3") or 0.0)
        sign = "-" if icpt <= -0.05 else "+"
        lines = [f"{c['method']} calibration: {c.get('description', '')}",
                 f"BMD [mg/cm3 {c.get('material')}] = {c['slope_mg_cm3_per_hu']:.4f} x HU "
                 f"{sign} {abs(icpt):.1f} ({c.get('n_points', 0)} points{quality})"]
        if c.get("expected_error"):  # a method not validated on this scanner (phantomless)
            lines.append(f"unvalidated: {c['expected_error']}")
    lines += [f"warning: {w}" for w in c.get("warnings", [])]
    return "Calibration (HU to bone mineral density)\n" + "\n".join(f"  {x}" for x in lines)


# -- tables ----------------------------------------------------------------------------
def not_measurable_reason(row: ResultRow) -> str:
    """The reason of a row's first ``not_measurable:`` flag ('no value' when none)."""
    why = [f.split(":", 1)[1].strip() for f in row.flags if flag_tag(f) == NOT_MEASURABLE]
    return why[0] if why else "no value"


def not_measurable_lines(rows: list[ResultRow]) -> list[str]:
    """'Femur (left): not measurable (reason): aBMD total hip, ...', one per reason."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.value is None:
            groups.setdefault((display_name(r.structure), not_measurable_reason(r)),
                              []).append(quantity_label(r.quantity))
    return [f"{name}: not measurable ({why}): {', '.join(qs)}"
            for (name, why), qs in groups.items()]


def _value_table(title: str, rows: list[ResultRow]) -> str:
    measured = [r for r in rows if r.value is not None]
    parts = [title]
    if measured:
        body = [[display_name(r.structure), quantity_label(r.quantity), r.display_value(),
                 display_unit(r.unit), warning_tags([r])] for r in measured]
        parts.append(format_table(["structure", "quantity", "value", "unit", "flags"], body,
                                  "llrll"))
    parts += ["  " + line for line in not_measurable_lines(rows)]
    return "\n".join(parts)


def _muscle_table(keys: list[str], q: dict[str, dict[str, ResultRow]]) -> str:
    body = []
    for k in keys:
        rows = q[k]
        body.append([
            display_name(k), _fmt(rows.get("volume")), _fmt(rows.get("mean_hu")),
            _fmt(rows.get("fat_fraction"), 100.0, "%"), _fmt(rows.get("mass")),
            warning_tags(list(rows.values())),
        ])
    return "Muscles\n" + format_table(
        ["structure", "volume cm3", "mean HU", "IMAT %", "mass g", "flags"], body, "lrrrrl")


def _totals_table(keys: list[str], q: dict[str, dict[str, ResultRow]]) -> str:
    body = [[display_name(k), _fmt(q[k].get("volume")), _fmt(q[k].get("mass")),
             _fmt(q[k].get("lean_mass")), warning_tags(list(q[k].values()))] for k in keys]
    return "Muscle group totals\n" + format_table(
        ["group", "volume cm3", "mass g", "lean mass g", "flags"], body, "lrrrl")


# -- notes -----------------------------------------------------------------------------
def _concerns(rows: list[ResultRow]) -> str:
    names = unique_flags(display_name(r.structure) for r in rows)
    if len(names) > 4:
        return f"{', '.join(names[:3])} and {len(names) - 3} more"
    return ", ".join(names)


def _flag_lines(results: Results, pick: Callable[[list[str]], list[str]],
                skip_tags: tuple[str, ...] = ()) -> list[str]:
    where: dict[str, list[ResultRow]] = {}
    for r in results.rows:
        for f in pick(r.flags):
            if flag_tag(f) in skip_tags:
                continue
            where.setdefault(f, []).append(r)
    return [f"- {f.removeprefix('info: ')} [{_concerns(rows)}]" for f, rows in where.items()]


def format_summary(results: Results) -> str:
    """The summary text (see the module docstring)."""
    by_structure: dict[str, dict[str, ResultRow]] = {}
    for r in results.rows:
        by_structure.setdefault(r.structure, {}).setdefault(r.quantity, r)
    order = list(by_structure)
    parts: list[str] = []

    shown_banners = banners(results)
    parts += [f"*** {b} ***" for b in shown_banners]
    parts += [s for s in (format_patient(results), format_calibration(results)) if s]

    muscles = [k for k in order if k in BY_KEY and BY_KEY[k].group == "muscle"]
    if muscles:
        parts.append(_muscle_table(muscles, by_structure))
    totals = [k for k in order if k not in BY_KEY and "volume" in by_structure[k]
              and "mass" in by_structure[k]]
    if totals:
        parts.append(_totals_table(totals, by_structure))
    other = [r for r in results.rows if r.structure not in muscles and r.structure not in totals]
    for title, belongs in _SECTIONS:
        rows = [r for r in other if belongs(r)]
        other = [r for r in other if not belongs(r)]
        if rows:
            parts.append(_value_table(title, rows))

    has_cal = _calibration_entry(results) is not None
    case_warnings = [w for w in unique_flags(results.warnings) if w not in shown_banners
                     and not (has_cal and w.startswith(_CALIBRATION_INFO))]
    row_warnings = _flag_lines(results, warning_flags,
                               (NOT_MEASURABLE, *(_SHOWN_IN_SECTIONS if has_cal else ())))
    if case_warnings or row_warnings:
        parts.append("Warnings\n" + "\n".join([*(f"- {w}" for w in case_warnings),
                                               *row_warnings]))
    info = _flag_lines(results, info_flags) + [f"- {n}" for n in results.provenance.notes
                                               if n not in shown_banners]
    if info:
        parts.append("Information\n" + "\n".join(info))
    if results.unknown_labels:
        names = ", ".join(f"{v} ({k})" for k, v in sorted(results.unknown_labels.items()))
        parts.append(f"Labels not in the anatomy table (not measured): {names}")
    return "\n\n".join(parts)
