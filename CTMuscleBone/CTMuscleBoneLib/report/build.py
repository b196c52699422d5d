"""The report's content (:class:`~.model.Report`) from the results of one case.

Every number shown comes from a :class:`~CTMuscleBoneLib.results.ResultRow`, formatted
by :mod:`CTMuscleBoneLib.results` (:meth:`ResultRow.display_value`,
:func:`~CTMuscleBoneLib.results.quantity_label`, :func:`~CTMuscleBoneLib.results.display_unit`),
and every row of the results appears in exactly one table. Sections: proximal femur,
lumbar spine, muscles, lean mass and SMI, other results; then quality and provenance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..anatomy import BY_KEY
from ..image import CTImage, LabelMap
from ..results import (
    CATEGORY_WITHHELD,
    INDETERMINATE,
    NOT_MEASURABLE,
    ResultRow,
    Results,
    display_name,
    display_unit,
    flag_tag,
    format_value,
    quantity_label,
    unique_flags,
)
from ..summary import not_measurable_lines, not_measurable_reason, warning_tags
from . import images, plots
from .model import Block, Cell, Figure, QualityItem, Report, Section, Table

TITLE = "CTMuscleBone report: bone density and muscle from CT"
#: Structures of the review list shown as "high uncertainty" besides every absent one:
#: the first ones of the model's own ranking (project choice, not validated: no
#: threshold on the structure-wise uncertainty has been validated for this model).
REVIEW_TOP = 5
#: Reason shown when no uncertainty map is given.
NO_UNCERTAINTY = "no uncertainty map: the labels were not made by the segmentation model"
_SIDES = ("right", "left")  # radiological order: the patient's right first


# -- tables ----------------------------------------------------------------------------
def _tags(rows: list[ResultRow]) -> str:
    return warning_tags(rows, not_measurable_first=True)


def _value_cell(row: ResultRow | None) -> Cell:
    if row is None:
        return Cell("")
    return Cell(row.display_value() or "n/a", row.structure, row.quantity,
                "; ".join(row.warnings + row.info))


def row_table(key: str, title: str, rows: list[ResultRow], with_structure: bool = False
              ) -> Table:
    """One line per row: [structure,] quantity, value, unit, flags."""
    columns = (["structure"] if with_structure else []) + ["quantity", "value", "unit", "flags"]
    body = []
    for r in rows:
        head = [Cell(display_name(r.structure))] if with_structure else []
        body.append(head + [Cell(quantity_label(r.quantity)), _value_cell(r),
                            Cell(display_unit(r.unit)), Cell(_tags([r]))])
    return Table(key, title, columns, body, not_measurable_lines(rows))


def pivot_table(key: str, title: str, structures: list[str],
                rows_by: dict[str, dict[str, ResultRow]], first_column: str = "structure"
                ) -> Table:
    """One line per structure, one column per quantity (in order of appearance)."""
    quantities: dict[str, str] = {}
    for s in structures:
        for q, r in rows_by[s].items():
            quantities.setdefault(q, r.unit)
    columns = [first_column] + [
        f"{quantity_label(q)}" + (f" ({display_unit(u)})" if display_unit(u) else "")
        for q, u in quantities.items()] + ["flags"]
    body = [[Cell(display_name(s))] + [_value_cell(rows_by[s].get(q)) for q in quantities]
            + [Cell(_tags(list(rows_by[s].values())))] for s in structures]
    rows = [r for s in structures for r in rows_by[s].values()]
    return Table(key, title, columns, body, not_measurable_lines(rows))


# -- sections --------------------------------------------------------------------------
def _criteria(results: Results) -> Any:
    """The criteria of the reference table used for the T-scores/%YAM, or None."""
    opts = results.artifacts.get("options")
    ref = getattr(opts, "bmd_reference", None)
    if ref is not None and hasattr(ref, "criteria"):
        return ref.criteria
    from ..dxa.references import load_reference

    for c in results.provenance.coefficients:
        if c.get("kind") == "BMD reference":
            for name in (c.get("path"), c.get("name")):
                try:
                    return load_reference(name).criteria if name else None
                except Exception:  # noqa: BLE001 - a moved file: no plot, said below
                    continue
    return None


def _category_withheld(row: ResultRow | None, what: str) -> str | None:
    """Why ``row`` (a category row) gives no class, or None when it gives one.

    The figures draw a category's bands or cut-offs only where the table gives that
    category (project rule: a category only from a number on the scale its thresholds
    were made for); otherwise they draw the value alone, with this reason.
    """
    if row is None:
        return f"no {what} row"
    if row.value is None:
        return f"{what} not measurable: {not_measurable_reason(row)}"
    if row.value != INDETERMINATE:
        return None
    for tag in (CATEGORY_WITHHELD, "unvalidated", "uncalibrated", "kvp",
                "warning"):
        for f in row.flags:
            if f.startswith(tag):
                return f"{what} indeterminate: {f.split(':', 1)[1].strip()}"
    return f"{what} indeterminate (see the table)"


def _score_block(results: Results, structures: list[str]) -> Block:
    criteria = _criteria(results)
    if criteria is None:
        return Block([images.absent_figure("plot_score", "T-scores",
                                           "no reference table recorded: no score plot")], [])
    prefix = criteria.on + "_"
    points = [(f"{display_name(r.structure)} {quantity_label(r.quantity[len(prefix):])}", r)
              for r in results.rows
              if r.structure in structures and r.quantity.startswith(prefix)
              and isinstance(r.value, (int, float))]
    if not points:
        # no number is drawn: each site's reason instead (e.g. the aBMD is not on the DXA
        # scale the scores were made for: no validated CT-to-DXA model)
        label = quantity_label(criteria.on)
        reasons: dict[str, list[str]] = {}
        for r in results.rows:
            if r.structure in structures and r.quantity.startswith(prefix):
                names = reasons.setdefault(not_measurable_reason(r), [])
                if display_name(r.structure) not in names:
                    names.append(display_name(r.structure))
        why = ("; ".join(f"{', '.join(n)}: {w}" for w, n in reasons.items())
               or "no bone site measured")
        return Block([images.absent_figure("plot_score", f"{label}s",
                                           f"{label} not measurable (no plot): {why}")],
                     [], side_by_side=False)
    # the criteria's bands only where every drawn value has its category
    cats = {(r.structure, r.quantity): r for r in results.rows}
    reasons = []
    for label, r in points:
        cat = cats.get((r.structure, f"{criteria.quantity}_{r.quantity[len(prefix):]}"))
        why = _category_withheld(cat, f"{criteria.name} category")
        if why is not None and f"{label}: {why}" not in reasons:
            reasons.append(f"{label}: {why}")
    return Block([plots.score_plot(points, criteria, "; ".join(reasons) or None)], [],
                 side_by_side=False)


def _femur_section(results: Results, labels: LabelMap, by: dict[str, dict[str, ResultRow]],
                   score_block: Block | None) -> Section:
    sec = Section("femur", "Proximal femur")
    femur = results.artifacts.get("femur")
    projections = getattr(femur, "projections", {}) or {}
    present = set(labels.present_keys())
    for side in _SIDES:
        key = f"femur_{side}"
        if key not in by and key not in present:
            continue
        rows = list(by.get(key, {}).values())
        if side in projections:
            fig = images.femur_figure(projections[side], side)
        else:
            why = next((not_measurable_reason(r) for r in rows if r.value is None),
                       "femur not measured")
            fig = images.absent_figure(key, f"Femur ({side}), DXA-view projection",
                                       f"no DXA view: {why}")
        sec.blocks.append(Block([fig], [row_table(key, display_name(key), rows)]))
    if not sec.blocks:
        sec.blocks.append(Block([images.absent_figure(
            "femur", "Femur, DXA-view projection",
            "no femur in the labels (not segmented or outside the field of view): no "
            "femoral values")], []))
    if score_block is not None:
        sec.blocks.append(score_block)
    return sec


def _spine_section(results: Results, ct: CTImage, labels: LabelMap,
                   by: dict[str, dict[str, ResultRow]], score_block: Block | None) -> Section:
    sec = Section("spine", "Lumbar spine")
    verts = [k for k in by if k.startswith("vertebrae_")]
    lumbar = [k for k in by if k.startswith("lumbar_")]
    spine = results.artifacts.get("spine")
    if not verts:
        sec.blocks.append(Block([images.absent_figure(
            "spine", "Lumbar spine, trabecular ROIs",
            "no lumbar vertebra in the labels (not segmented or outside the field of view): "
            "no spine values")], []))
    else:
        fig = (images.spine_figure(ct, labels, spine, results.artifacts.get("lumbar_abmd"))
               if spine else images.absent_figure("spine", "Lumbar spine, trabecular ROIs",
                                                  "the spine analysis is not available"))
        sec.blocks.append(Block([fig], [pivot_table("vertebrae", "Per level", verts, by,
                                                    "level")], side_by_side=False))
        from ..spine.measure import summary_exclusion

        # the ACR bands are hydroxyapatite: bars are the HA-equivalent vBMD
        vbmd = [(k, by[k]["trabecular_vbmd_ha"]) for k in verts
                if isinstance(by[k].get("trabecular_vbmd_ha",
                                        ResultRow("", "", None, "")).value, (int, float))]
        calibrated = bool(vbmd)
        levels = vbmd or [(k, by[k]["trabecular_mean_hu"]) for k in verts
                          if isinstance(by[k].get("trabecular_mean_hu",
                                                  ResultRow("", "", None, "")).value,
                                        (int, float))]
        # only vertebrae the summaries could use are drawn against the bands
        left_out = [(k, why) for k, r in levels if (why := summary_exclusion(r.flags))]
        levels = [(k, r) for k, r in levels if not summary_exclusion(r.flags)]
        summary = [r for k in lumbar for r in by[k].values()]
        mean = by.get("lumbar_L1_L2", {}).get("trabecular_vbmd_ha" if calibrated
                                              else "trabecular_mean_hu")
        acr = by.get("lumbar_L1_L2", {}).get("acr_category")
        if calibrated and (acr is None or acr.value in (None, INDETERMINATE)):
            mean = None  # no line against the bands without an ACR category
        # bands only where the table gives their category (ACR: the L1-L2 summary;
        # Pickhardt: L1, drawn behind L1 only)
        withheld = (_category_withheld(acr, "ACR category") if calibrated else
                    _category_withheld(by.get("vertebrae_L1", {}).get(
                        "opportunistic_category"), "Pickhardt L1 category"))
        plot = (plots.vertebra_plot(levels, mean, calibrated, left_out, withheld) if levels
                else images.absent_figure(
                    "plot_vertebrae", "Vertebral trabecular values",
                    "no vertebra the lumbar summaries could use"
                    + "".join(f"; {k.removeprefix('vertebrae_')}: {why}"
                              for k, why in left_out)))
        tables = [row_table("lumbar", "Lumbar summaries", summary, with_structure=True)
                  ] if summary else []
        sec.blocks.append(Block([plot], tables, side_by_side=False))
    if score_block is not None:
        sec.blocks.append(score_block)
    return sec


def _uncertainty_map(results: Results, ct: CTImage) -> np.ndarray | None:
    """The model's predictive variance inside the body, when the results hold the
    segmentation (``pipeline.analyze``)."""
    seg = results.artifacts.get("segmentation")
    if seg is None:
        return None
    unc = seg.result.uncertainty.get("predictive_variance")
    if unc is None:
        return None
    from ..segmentation.pipeline import compact_uncertainty, uncertainty_region

    return compact_uncertainty(unc, uncertainty_region(ct, seg.result.label_map))


def _muscle_section(results: Results, ct: CTImage, labels: LabelMap,
                    by: dict[str, dict[str, ResultRow]],
                    uncertainty: np.ndarray | None, reason: str) -> Section:
    sec = Section("muscles", "Muscles")
    muscles = [k for k in by if k in BY_KEY and BY_KEY[k].group == "muscle"]
    totals = [k for k in by if k not in BY_KEY and "volume" in by[k] and "mass" in by[k]]
    from ..segmentation.uncertainty import variance_full_scale

    fig = images.muscle_figure(ct, labels, uncertainty, reason,
                               variance_full_scale(results.provenance.models))
    tables = []
    if muscles:
        tables.append(pivot_table("muscles", "Muscles", muscles, by))
    else:
        sec.text.append("No muscle in the labels: muscle values not measured.")
    if totals:
        tables.append(pivot_table("muscle_totals", "Muscle group totals", totals, by, "group"))
    sec.blocks.append(Block([fig], tables, side_by_side=False))
    return sec


def _smi_section(results: Results, by: dict[str, dict[str, ResultRow]]) -> Section | None:
    from ..alm import CRITERIA

    patient = list(by.get("patient", {}).values())
    l3 = [r for k in by if k.startswith("L3") for r in by[k].values()]
    if not patient and not l3:
        return None
    sec = Section("smi", "Lean mass and SMI")
    smi = by.get("patient", {}).get("smi")
    opts = results.artifacts.get("options")
    criteria = CRITERIA.get(getattr(opts, "criteria", "awgs2019"), CRITERIA["awgs2019"])
    if smi is not None and isinstance(smi.value, (int, float)):
        withheld = _category_withheld(by.get("patient", {}).get("sarcopenia_low_muscle_mass"),
                                      "low-muscle-mass flag")
        fig = plots.smi_plot(smi, criteria, results.provenance.patient.get("sex"), withheld)
    else:
        why = not_measurable_reason(smi) if smi is not None else "no SMI row"
        fig = images.absent_figure("plot_smi", "SMI", f"no SMI: {why}")
    sec.blocks.append(Block([fig], [row_table("patient", "Lean mass and SMI", patient)]
                            if patient else [], side_by_side=False))
    if l3:
        sec.blocks.append(Block([], [row_table("l3", "L3 slice", l3, with_structure=True)],
                                side_by_side=False))
    return sec


# -- quality and provenance -----------------------------------------------------------
def _rows_with(results: Results, pick: Callable[[str], bool]) -> dict[str, list[str]]:
    """{flag: display names of the rows carrying it} for the flags ``pick`` accepts."""
    out: dict[str, list[str]] = {}
    for r in results.rows:
        for f in r.flags:
            if pick(f):
                names = out.setdefault(f, [])
                if display_name(r.structure) not in names:
                    names.append(display_name(r.structure))
    return out


def _concerns(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else (
        f"{', '.join(names[:3])} and {len(names) - 3} more")


def quality_items(results: Results, banners: list[str], uncertainty_given: bool = False
                  ) -> list[QualityItem]:
    """The quality section: demo-model and synthetic-data warnings, calibration method
    and fit, metal, field-of-view cuts, contrast, structures with high segmentation
    uncertainty, unvalidated models and coefficients, other warnings."""
    from ..summary import format_calibration

    items = [QualityItem("demo model / synthetic data", "warning", b) for b in banners]
    cal = format_calibration(results)
    if cal:
        lines = [x.strip() for x in cal.splitlines()[1:]]
        # a calibration with a stated expected error (phantomless: not validated on this
        # scanner) is information, not "ok"; its unvalidated line is a warning
        level = ("warning" if lines and lines[0].startswith("none")
                 else "info" if any(x.startswith("unvalidated") for x in lines) else "ok")
        items += [QualityItem("calibration", "warning"
                              if x.startswith(("warning", "unvalidated")) else level, x)
                  for x in lines]
    else:
        items.append(QualityItem("calibration", "info", "no bone measured: no calibration"))
    metal = [w for w in results.warnings if "metal" in w.lower()]
    metal += [f"{f} [{_concerns(n)}]" for f, n in
              _rows_with(results, lambda f: "metal" in f.lower()).items()]
    items += ([QualityItem("metal", "warning", m) for m in unique_flags(metal)]
              or [QualityItem("metal", "ok", "no metal or bone cement reported")])
    partial = _rows_with(results, lambda f: flag_tag(f) == "partial")
    items += ([QualityItem("field of view", "warning", f"{f} [{_concerns(n)}]")
               for f, n in partial.items()]
              or [QualityItem("field of view", "ok", "no measured structure cut by the field "
                              "of view")])
    finding = results.artifacts.get("contrast")
    if finding is not None:
        state = {True: ("warning", "enhanced"), False: ("ok", "not enhanced"),
                 None: ("info", "unknown")}[finding.enhanced]
        items.append(QualityItem("contrast", state[0], f"{state[1]}: " + (
            "; ".join(finding.evidence) or "no header tag, no labelled aorta or IVC")))
    else:
        items += [QualityItem("contrast", "info", n) for n in results.provenance.notes
                  if n.startswith("contrast:")]
    items += _uncertainty_items(results, uncertainty_given)
    unval = _rows_with(results, lambda f: flag_tag(f) == "unvalidated")
    items += [QualityItem("unvalidated model", "warning", f"{f} [{_concerns(n)}]")
              for f, n in unval.items()]
    for m in results.provenance.models:
        if m.get("synthetic"):
            items.append(QualityItem("unvalidated model", "warning",
                                     f"segmentation model {m.get('name')} is synthetic (demo)"))
    shown = {i.text for i in items}
    skip = ("calibration: ", "calibration (given): ")
    others = [w for w in unique_flags(results.warnings)
              if w not in banners and w not in shown and not w.startswith(skip)
              and "metal" not in w.lower()]
    items += [QualityItem("warning", "warning", w) for w in others]
    done = {"partial", "unvalidated", NOT_MEASURABLE, "calibration"}
    rest = _rows_with(results, lambda f: flag_tag(f) not in done and flag_tag(f) != "info"
                      and "metal" not in f.lower())
    items += [QualityItem("values", "warning", f"{f} [{_concerns(n)}]") for f, n in rest.items()]
    return items


def _uncertainty_items(results: Results, uncertainty_given: bool) -> list[QualityItem]:
    seg = results.artifacts.get("segmentation")
    if seg is None:
        return [QualityItem("segmentation uncertainty", "info",
                            "uncertainty map shown; no structure review list with these "
                            "results" if uncertainty_given else
                            "labels not made by the segmentation model: no uncertainty")]
    review = list(seg.result.review)
    absent = [r for r in review if not r.present]
    present = [r for r in review if r.present and r.score is not None]
    items = [QualityItem("segmentation uncertainty", "warning",
                         f"{display_name(r.key)}: expected but not segmented (absent)")
             for r in absent]
    if present:
        median = float(np.median([r.score for r in present]))
        for r in present[:REVIEW_TOP]:
            rel = f", {r.score / median:.1f} x the case median" if median > 0 else ""
            items.append(QualityItem(
                "segmentation uncertainty", "info",
                f"{display_name(r.key)}: mean {r.map_name.replace('_', ' ')} "
                f"{r.score:.3g}{rel} (review first)"))
    return items


def provenance_items(results: Results) -> list[tuple[str, str]]:
    p = results.provenance
    out = [("software", p.software), ("created (UTC)", p.created_utc), ("platform", p.platform)]
    if p.input_ct:
        out.append(("input CT", p.input_ct))
    if p.input_ct_sha256:
        out.append(("input CT SHA-256", p.input_ct_sha256))
    if p.input_labels:
        out.append(("input labels", p.input_labels))
    if p.input_labels_sha256:
        out.append(("input labels SHA-256", p.input_labels_sha256))
    if p.label_source:
        out.append(("label source", p.label_source))
    if p.ct_geometry:
        out.append(("CT grid", p.ct_geometry))
    for m in p.models:
        bits = [f"{m.get('name')} {m.get('version') or ''}".strip()]
        bits += [f"{k} {m[k]}" for k in ("mc_samples", "seed", "device") if m.get(k) is not None]
        if m.get("weights_sha256"):
            bits.append(f"weights SHA-256 {m['weights_sha256']}")
        out.append((str(m.get("kind", "model")), ", ".join(bits)))
    for c in p.coefficients:
        bits = [str(c.get("name") or c.get("method") or "")]
        for k in ("path", "file"):
            if c.get(k):
                bits.append(str(c[k]))
        if c.get("file_sha256"):
            bits.append(f"SHA-256 {c['file_sha256']}")
        for k in ("validated", "verified"):
            if k in c:
                bits.append(f"{k}: {'yes' if c[k] else 'no'}")
        for k in ("description", "source"):
            if c.get(k):
                bits.append(str(c[k]))
        out.append((str(c.get("kind", "coefficients")), ", ".join(b for b in bits if b)))
    out += [("note", n) for n in p.notes]
    return out


def header_items(results: Results, ct: CTImage, deidentified: bool) -> list[tuple[str, str]]:
    """Case header: identifiers (unless de-identified), patient facts used, scanner."""
    from ..deidentify import HEADER_FIELDS

    out: list[tuple[str, str]] = []
    meta = ct.metadata
    if deidentified:
        out.append(("patient identifiers", "removed (de-identified report)"))
    else:
        for name, label in HEADER_FIELDS:
            v = getattr(meta, name, None)
            if v:
                v = str(v)
                if "date" in name and len(v) == 8 and v.isdigit():
                    v = f"{v[:4]}-{v[4:6]}-{v[6:]}"
                out.append((label, v))
    p = results.provenance.patient
    for key, label, unit in (("sex", "sex", ""), ("age_years", "age", "years"),
                             ("height_m", "height", "m"), ("weight_kg", "weight", "kg")):
        v = p.get(key)
        src = p.get(f"{key.split('_')[0]}_source")
        text = "not known" if v is None else (
            f"{format_value(v, unit) if isinstance(v, float) else v}{' ' + unit if unit else ''}"
            + (f" (from {src})" if src else ""))
        out.append((label, text))
    scanner = " ".join(x for x in (meta.manufacturer, meta.manufacturer_model) if x)
    if scanner:
        out.append(("scanner", scanner))
    if meta.kvp:
        out.append(("tube voltage", f"{meta.kvp:g} kVp"))
    if results.provenance.label_source:
        out.append(("labels", results.provenance.label_source))
    out.append(("analysed (UTC)", results.provenance.created_utc))
    return out


# -- the report -------------------------------------------------------------------------
def build_report(results: Results, ct: CTImage, labels: LabelMap,
                 uncertainty: np.ndarray | None = None, *, deidentified: bool = False,
                 uncertainty_reason: str = NO_UNCERTAINTY) -> Report:
    """The report of one case.

    Parameters
    ----------
    results : Results
        From :func:`~CTMuscleBoneLib.pipeline.measure`, ``analyze`` or ``remeasure``;
        its artifacts give the femur projections, spine ROIs, calibration, contrast and
        (after ``analyze``) the segmentation with its uncertainty and review list.
    ct : CTImage
    labels : LabelMap
        On the CT grid (the map that was measured).
    uncertainty : np.ndarray, (n0, n1, n2), optional
        Voxel uncertainty on the CT grid; default: the predictive variance of the
        segmentation in ``results.artifacts`` (inside the body), else none.
    deidentified : bool
        Show no patient identifiers; ``results`` is de-identified first
        (:func:`CTMuscleBoneLib.deidentify.deidentify`).
    uncertainty_reason : str
        Shown in place of the heatmap when there is no uncertainty map.
    """
    from ..summary import banners as summary_banners

    if deidentified:
        from ..deidentify import DEIDENTIFIED_NOTE, deidentify

        if DEIDENTIFIED_NOTE not in results.provenance.notes:
            results = deidentify(results, ct.metadata)
    if uncertainty is None:
        uncertainty = _uncertainty_map(results, ct)
    by: dict[str, dict[str, ResultRow]] = {}
    for r in results.rows:
        by.setdefault(r.structure, {}).setdefault(r.quantity, r)
    banners = summary_banners(results)
    report = Report(TITLE, banners, header_items(results, ct, deidentified),
                    deidentified=deidentified)
    femurs = [k for k in by if k.startswith("femur_")]
    spine_keys = [k for k in by if k.startswith(("vertebrae_", "lumbar_"))]
    score = _score_block(results, femurs + spine_keys) if femurs or spine_keys else None
    report.sections.append(_femur_section(results, labels, by, score if femurs else None))
    report.sections.append(_spine_section(results, ct, labels, by,
                                          score if not femurs else None))
    report.sections.append(_muscle_section(results, ct, labels, by, uncertainty,
                                           uncertainty_reason))
    smi = _smi_section(results, by)
    if smi is not None:
        report.sections.append(smi)
    shown = {(c.structure, c.quantity) for t in report.tables() for row in t.rows for c in row
             if c.structure is not None}
    rest = [r for r in results.rows if (r.structure, r.quantity) not in shown]
    if rest:
        report.sections.append(Section("other", "Other results", [Block(
            [], [row_table("other", "Other results", rest, with_structure=True)],
            side_by_side=False)]))
    report.quality = quality_items(results, banners, uncertainty is not None)
    report.provenance = provenance_items(results)
    return report


__all__ = ["Figure", "build_report", "pivot_table", "row_table"]
