"""Render a :class:`~.model.Report` as PDF with reportlab (platypus): the same sections,
tables and images as the HTML page, on A4 pages. No browser is needed (3D Slicer users
have none).

Text is set in DejaVu Sans (shipped with matplotlib) so that any character of the
results prints; tables repeat their header on each page they span.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .model import Block, Figure, Report, Table

#: Page margins, mm.
MARGIN_MM = 14.0
#: Width of the figure column of a side-by-side block, as a fraction of the text width.
FIGURE_COLUMN = 0.44
#: Tallest image on a page, as a fraction of the frame height.
MAX_IMAGE_HEIGHT = 0.68
_LEVEL_COLOURS = {"warning": "#990000", "ok": "#227755", "info": "#444444"}


def _fonts() -> tuple[str, str]:
    """Register DejaVu Sans (regular, bold) from matplotlib's data; fall back to Helvetica."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    try:
        import matplotlib

        base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(base / "DejaVuSans.ttf")))
            pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(base / "DejaVuSans-Bold.ttf")))
        return "DejaVuSans", "DejaVuSans-Bold"
    except Exception:  # noqa: BLE001 - font files missing: the standard font still works
        return "Helvetica", "Helvetica-Bold"


class _Styles:
    def __init__(self) -> None:
        from reportlab.lib.styles import ParagraphStyle

        font, bold = _fonts()
        self.font, self.bold = font, bold
        self.title = ParagraphStyle("t", fontName=bold, fontSize=15, leading=19, spaceAfter=6)
        self.h2 = ParagraphStyle("h2", fontName=bold, fontSize=12, leading=15, spaceBefore=10,
                                 spaceAfter=4, textColor="#334466", keepWithNext=1)
        self.h3 = ParagraphStyle("h3", fontName=bold, fontSize=9, leading=11, spaceBefore=4,
                                 spaceAfter=2, keepWithNext=1)
        self.body = ParagraphStyle("b", fontName=font, fontSize=8, leading=10)
        self.small = ParagraphStyle("s", fontName=font, fontSize=6.5, leading=8)
        self.cell_r = ParagraphStyle("r", parent=self.small, alignment=2)
        self.caption = ParagraphStyle("c", fontName=font, fontSize=6.5, leading=8,
                                      textColor="#555555", spaceAfter=4)
        self.banner = ParagraphStyle("w", fontName=bold, fontSize=8.5, leading=11,
                                     textColor="#990000", borderColor="#cc3333",
                                     borderWidth=0.8, borderPadding=4, backColor="#fde2e2",
                                     spaceBefore=4, spaceAfter=6)
        self.absent = ParagraphStyle("a", fontName=font, fontSize=8, leading=10,
                                     textColor="#555555", borderColor="#999999",
                                     borderWidth=0.5, borderPadding=6, backColor="#f4f4f4",
                                     spaceBefore=9, spaceAfter=10)


def _p(text: str, style: Any) -> Any:
    from reportlab.platypus import Paragraph

    return Paragraph(escape(text), style)


def _image(f: Figure, width: float, max_height: float, st: _Styles, keep: bool = True
           ) -> list[Any]:
    """Title, image (or the reason it is absent) and caption; ``keep``: kept on one page
    with the heading before them (reportlab merges a chain of ``keepWithNext``)."""
    from reportlab.platypus import Image

    out: list[Any] = [_p(f.title, st.h3)]
    if f.png is None:
        out.append(_p(f.absent or "not available", st.absent))
        return out
    w, h = float(f.width_px), float(f.height_px)
    scale = min(width / w, max_height / h)
    img = Image(io.BytesIO(f.png), width=w * scale, height=h * scale)
    out.append(img)
    if f.caption:
        img.keepWithNext = keep
        out.append(_p(f.caption, st.caption))
    return out


#: Shares of the text width of the columns of a row table (:func:`.build.row_table`).
_ROW_TABLE_SHARES = {"structure": 0.22, "quantity": 0.3, "value": 0.17, "unit": 0.1,
                     "flags": 0.26}


def _column_widths(columns: list[str], width: float) -> list[float]:
    """Row tables: fixed shares; pivot tables: first column 22 %, flags 14 %, the
    value columns share the rest."""
    if set(columns) <= set(_ROW_TABLE_SHARES):
        shares = [_ROW_TABLE_SHARES[c] for c in columns]
        return [width * s / sum(shares) for s in shares]
    n = len(columns)
    first, flags = width * 0.22, width * 0.14
    return [first] + [(width - first - flags) / max(n - 2, 1)] * (n - 2) + [flags]


def _table(t: Table, width: float, st: _Styles) -> list[Any]:
    from reportlab.platypus import Table as RLTable
    from reportlab.platypus import TableStyle

    widths = _column_widths(t.columns, width)
    data = [[_p(c, st.small) for c in t.columns]]
    for row in t.rows:
        data.append([_p(c.text, st.cell_r if c.structure else st.small) for c in row])
    tbl = RLTable(data, colWidths=widths, repeatRows=1)
    tbl.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, "#bbbbcc"),
        ("BACKGROUND", (0, 0), (-1, 0), "#e8edf3"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
        ("LEFTPADDING", (0, 0), (-1, -1), 2), ("RIGHTPADDING", (0, 0), (-1, -1), 2),
    ]))
    out: list[Any] = [_p(t.title, st.h3), tbl]
    out += [_p(f"- {n}", st.caption) for n in t.notes]
    return out


def _block(b: Block, width: float, height: float, st: _Styles) -> list[Any]:
    from reportlab.platypus import Table as RLTable
    from reportlab.platypus import TableStyle

    if b.side_by_side and b.figures and b.tables:
        wf = width * FIGURE_COLUMN
        wt = width - wf - 6
        left = [x for f in b.figures for x in _image(f, wf - 4, height * 0.5, st, keep=False)]
        right = [x for t in b.tables for x in _table(t, wt, st)]
        outer = RLTable([[left, right]], colWidths=[wf, wt + 6])
        outer.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                   ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                   ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
        return [outer]
    out = [x for f in b.figures for x in _image(f, width, height * MAX_IMAGE_HEIGHT, st)]
    out += [x for t in b.tables for x in _table(t, width, st)]
    return out


def _pairs(rows: list[tuple[str, str]], width: float, st: _Styles) -> Any:
    from reportlab.platypus import Table as RLTable
    from reportlab.platypus import TableStyle

    tbl = RLTable([[_p(k, st.small), _p(v, st.small)] for k, v in rows],
                  colWidths=[width * 0.25, width * 0.75])
    tbl.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                             ("TOPPADDING", (0, 0), (-1, -1), 1),
                             ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                             ("LINEBELOW", (0, 0), (-1, -1), 0.25, "#dddddd")]))
    return tbl


def render_pdf(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write the report as PDF at ``path`` (the caller makes the write atomic)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    st = _Styles()
    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=MARGIN_MM * mm,
                            rightMargin=MARGIN_MM * mm, topMargin=MARGIN_MM * mm,
                            bottomMargin=(MARGIN_MM + 4) * mm, title=report.title,
                            author="CTMuscleBone")
    width, height = doc.width, doc.height
    story: list[Any] = [_p(report.title, st.title)]
    story += [_p(b, st.banner) for b in report.banners]
    story.append(_pairs(report.header, width, st))
    for s in report.sections:
        story.append(_p(s.title, st.h2))
        story += [_p(t, st.body) for t in s.text]
        for b in s.blocks:
            story += _block(b, width, height, st)
    story.append(_p("Quality", st.h2))
    for q in report.quality:
        style = ParagraphStyle("q", parent=st.small, textColor=_LEVEL_COLOURS.get(q.level))
        story.append(_p(f"{q.topic} [{q.level}]: {q.text}", style))
    story.append(_p("Provenance", st.h2))
    story.append(_pairs(report.provenance, width, st))
    footer = "CTMuscleBone report" + (" (de-identified)" if report.deidentified else "")

    def on_page(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(st.font, 7)
        canvas.setFillColor("#777777")
        canvas.drawString(MARGIN_MM * mm, 8 * mm, footer)
        canvas.drawRightString(A4[0] - MARGIN_MM * mm, 8 * mm, f"page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return Path(path)
