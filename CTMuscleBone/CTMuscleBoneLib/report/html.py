"""Render a :class:`~.model.Report` as one self-contained HTML page.

Inline CSS, images as ``data:image/png;base64`` URIs, no script and no external
resource: the file opens anywhere, offline. Each figure is a ``<figure data-key=...>``;
each value cell a ``<td data-structure=... data-quantity=...>`` (the Results row it
shows; its flags in the ``title``), so the page can be checked against the results.
"""

from __future__ import annotations

import base64
from html import escape

from .model import Block, Cell, Figure, Report, Table

CSS = """
body{font-family:Helvetica,Arial,sans-serif;font-size:13px;color:#222;margin:24px;max-width:1200px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;border-bottom:2px solid #346;margin-top:28px}
h3{font-size:13px;margin:10px 0 4px}
.banner{background:#fde2e2;border:1px solid #c33;color:#900;padding:6px 10px;margin:6px 0;
font-weight:bold}
.header{border-collapse:collapse;margin:8px 0}.header td{padding:2px 12px 2px 0}
.header td:first-child{color:#555}
.block{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:10px 0}
.block>div:first-child{flex:0 0 auto}.block>div:last-child{flex:1 1 420px;min-width:0}
.block.stacked{display:block}
figure{margin:0 0 10px;display:table}figure img{max-width:100%;height:auto;border:1px solid #ccc}
figcaption{font-size:11px;color:#555;display:table-caption;caption-side:bottom}
.absent{border:1px dashed #999;background:#f6f6f6;color:#555;padding:18px;max-width:420px}
table.values{border-collapse:collapse;font-size:12px;margin:4px 0 8px}
table.values th{background:#e8edf3;text-align:left;padding:3px 6px;border:1px solid #ccd}
table.values td{padding:2px 6px;border:1px solid #dde}
table.values td.v{text-align:right;font-variant-numeric:tabular-nums}
.notes{font-size:11px;color:#555;margin:0 0 8px;padding-left:18px}
.q-warning{color:#900}.q-ok{color:#275}.q-info{color:#444}
.footer{margin-top:30px;font-size:11px;color:#777}
"""


def _figure(f: Figure) -> str:
    if f.png is None:
        return (f'<figure data-key="{escape(f.key)}" class="absent-figure"><h3>{escape(f.title)}'
                f'</h3><div class="absent">{escape(f.absent or "not available")}</div></figure>')
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure data-key="{escape(f.key)}"><h3>{escape(f.title)}</h3>'
            f'<img alt="{escape(f.title)}" width="{f.width_px}" height="{f.height_px}" '
            f'src="data:image/png;base64,{data}"><figcaption>{escape(f.caption)}</figcaption>'
            "</figure>")


def _cell(c: Cell) -> str:
    if c.structure is None:
        return f"<td>{escape(c.text)}</td>"
    title = f' title="{escape(c.detail)}"' if c.detail else ""
    return (f'<td class="v" data-structure="{escape(c.structure)}" '
            f'data-quantity="{escape(c.quantity or "")}"{title}>{escape(c.text)}</td>')


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t.rows)
    notes = ("<ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in t.notes)
             + "</ul>") if t.notes else ""
    return (f'<h3>{escape(t.title)}</h3><table class="values" data-key="{escape(t.key)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}")


def _block(b: Block) -> str:
    figs = "".join(_figure(f) for f in b.figures)
    tables = "".join(_table(t) for t in b.tables)
    cls = "block" if b.side_by_side else "block stacked"
    return f'<div class="{cls}"><div>{figs}</div><div>{tables}</div></div>'


def render_html(report: Report) -> str:
    """The whole page (UTF-8 text)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(report.title)}</h1>"]
    parts += [f'<div class="banner">{escape(b)}</div>' for b in report.banners]
    parts.append('<table class="header" data-key="header">' + "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in report.header)
        + "</table>")
    for s in report.sections:
        parts.append(f'<section data-key="{escape(s.key)}"><h2>{escape(s.title)}</h2>')
        parts += [f"<p>{escape(t)}</p>" for t in s.text]
        parts += [_block(b) for b in s.blocks]
        parts.append("</section>")
    parts.append('<section data-key="quality"><h2>Quality</h2><table class="values">'
                 "<thead><tr><th>topic</th><th>status</th><th>finding</th></tr></thead><tbody>")
    parts += [f'<tr class="q-{escape(q.level)}"><td>{escape(q.topic)}</td>'
              f"<td>{escape(q.level)}</td><td>{escape(q.text)}</td></tr>" for q in report.quality]
    parts.append("</tbody></table></section>")
    parts.append('<section data-key="provenance"><h2>Provenance</h2><table class="values">'
                 "<tbody>")
    parts += [f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in report.provenance]
    parts.append("</tbody></table></section>")
    parts.append('<p class="footer">Made by CTMuscleBone. Values are estimates from CT; read '
                 "them with the flags and the quality section."
                 + (" De-identified report." if report.deidentified else "") + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
