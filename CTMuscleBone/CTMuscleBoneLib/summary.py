"""A readable plain-text summary of :class:`~CTMuscleBoneLib.results.Results`."""

from __future__ import annotations

from .anatomy import BY_KEY
from .results import ResultRow, Results


def _name(key: str) -> str:
    st = BY_KEY.get(key)
    return st.display_name if st else key.replace("_", " ")


def _fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _short_flags(rows: list[ResultRow]) -> str:
    flags: list[str] = []
    for r in rows:
        for f in r.flags:
            tag = f.split(":", 1)[0]
            if tag not in flags:
                flags.append(tag)
    return ", ".join(flags)


def format_table(header: list[str], body: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, with a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        return "  ".join([r[0].ljust(widths[0]), *rest]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_summary(results: Results) -> str:
    """Muscle table, group totals, ALM/SMI, bone rows, then warnings and unknown labels."""
    by_structure: dict[str, dict[str, ResultRow]] = {}
    order: list[str] = []
    for r in results.rows:
        if r.structure not in by_structure:
            by_structure[r.structure] = {}
            order.append(r.structure)
        by_structure[r.structure][r.quantity] = r
    parts: list[str] = []

    muscles = [k for k in order if k in BY_KEY and BY_KEY[k].group == "muscle"]
    if muscles:
        body = []
        for k in muscles:
            q = by_structure[k]
            body.append([
                _name(k), _fmt(q["volume"].value), _fmt(q["mean_hu"].value),
                _fmt(100 * q["fat_fraction"].value), _fmt(q["mass"].value),
                _short_flags(list(q.values())),
            ])
        parts.append("Muscles\n" + format_table(
            ["structure", "volume cm3", "mean HU", "IMAT %", "mass g", "flags"], body))
    totals = [k for k in order if k not in BY_KEY and "volume" in by_structure[k]
              and "mass" in by_structure[k]]
    if totals:
        body = [[k, _fmt(by_structure[k]["volume"].value), _fmt(by_structure[k]["mass"].value),
                 _short_flags(list(by_structure[k].values()))] for k in totals]
        parts.append("Muscle group totals\n" + format_table(
            ["group", "volume cm3", "mass g", "flags"], body))
    other = [r for r in results.rows
             if not (r.structure in muscles or r.structure in totals)]
    sections = (
        ("Lean mass and SMI", lambda r: r.structure == "patient"),
        ("Femoral bone density", lambda r: r.structure.startswith("femur_")),
        ("Lumbar spine bone density", lambda r: r.structure.startswith(("vertebrae_", "lumbar_"))),
        ("Other results", lambda r: True),
    )
    for title, belongs in sections:
        rows = [r for r in other if belongs(r)]
        other = [r for r in other if not belongs(r)]
        if rows:
            body = [[f"{_name(r.structure)}: {r.quantity}", _fmt(r.value, 3), r.unit,
                     _short_flags([r])] for r in rows]
            parts.append(title + "\n" + format_table(["quantity", "value", "unit", "flags"],
                                                      body))
    notes: list[str] = []
    for r in results.rows:
        for f in r.flags:
            if f not in notes:
                notes.append(f)
    if notes:
        parts.append("Flags\n" + "\n".join(f"- {f}" for f in notes))
    if results.warnings:
        parts.append("Warnings\n" + "\n".join(f"- {w}" for w in results.warnings))
    if results.unknown_labels:
        names = ", ".join(f"{v} ({k})" for k, v in sorted(results.unknown_labels.items()))
        parts.append(f"Labels not in the anatomy table (not measured): {names}")
    return "\n\n".join(parts)
