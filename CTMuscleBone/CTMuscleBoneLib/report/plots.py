"""Values drawn against their scales, as :class:`~.model.Figure` (matplotlib PNG).

The thresholds come from where the measurements take them (none is defined here):

* T-score or %YAM categories: the criteria of the reference table in use
  (:class:`CTMuscleBoneLib.dxa.references.Criteria`: WHO 1994 on the T-score for
  NHANES III, JSBMR 2012 on the %YAM);
* SMI cut-offs: :data:`CTMuscleBoneLib.alm.CRITERIA` (AWGS 2019, EWGSOP2);
* lumbar vBMD bands: ACR 2018 (:data:`CTMuscleBoneLib.spine.measure.ACR_NORMAL_ABOVE`,
  :data:`~CTMuscleBoneLib.spine.measure.ACR_OSTEOPOROSIS_BELOW`); without calibration,
  the L1 HU thresholds of Pickhardt et al. 2013 (``PICKHARDT_*`` there).

A point whose row carries a warning other than information is drawn hollow and the
legend says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..figures import pyplot
from ..results import ResultRow, display_name, format_value
from .images import LEVEL_COLOURS, png_figure
from .model import Figure

#: Band colours: osteoporosis / low / normal.
BAND_COLOURS = ("#f4b6b6", "#fbe3a6", "#cdeccd")


def _flagged(row: ResultRow) -> bool:
    return bool([f for f in row.warnings if not f.startswith("calibration:")])


def _point(ax: Any, x: float, y: float, flagged: bool, colour: str = "black") -> None:
    ax.plot([x], [y], "o", ms=7, mec=colour, mfc="white" if flagged else colour, mew=1.5,
            zorder=3)


def _marker_handles(any_flagged: bool) -> tuple[list[Any], list[str]]:
    """Legend handles of the value markers (filled; hollow when the row has a warning)."""
    from matplotlib.lines import Line2D

    h: list[Any] = [Line2D([], [], ls="none", marker="o", color="black", ms=6)]
    names = ["value"]
    if any_flagged:
        h.append(Line2D([], [], ls="none", marker="o", mec="black", mfc="white", ms=6))
        names.append("value with a warning\n(see the table)")
    return h, names


def _side_legend(ax: Any, handles: list[Any], names: list[str], title: str) -> None:
    """One legend right of the axes (the figure is saved with a tight bounding box)."""
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6,
              title=title, title_fontsize=6, frameon=False, borderaxespad=0.0)


def score_plot(points: list[tuple[str, ResultRow]], criteria: Any,
               withheld: str | None = None) -> Figure:
    """Each site's T-score (or %YAM, per the criteria) on the criteria's scale.

    Parameters
    ----------
    points : list of (label, ResultRow)
        Measurable rows on the criteria's scale (``criteria.on``: 't_score' or
        'percent_yam').
    criteria : Criteria
        The reference table's criteria (thresholds, labels, source).
    withheld : str, optional
        Why some site's category is not given (under 50, age or sex unknown, femur cut by
        the field of view, ...): the values are then drawn without the category bands,
        and the caption gives the reason.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    on_t = criteria.on == "t_score"
    lo_lim, hi_lim = (-5.0, 3.0) if on_t else (40.0, 140.0)
    vals = [float(r.value) for _, r in points]  # type: ignore[arg-type]
    lo_lim = min([lo_lim, *[v - 0.5 for v in vals]])
    hi_lim = max([hi_lim, *[v + 0.5 for v in vals]])
    fig, ax = plt.subplots(figsize=(6.0, 0.9 + 0.38 * len(points)))
    osteo, low = criteria.osteoporosis_at_or_below, criteria.low_bone_mass_below
    if withheld is None:
        ax.axvspan(lo_lim, osteo, color=BAND_COLOURS[0])
        ax.axvspan(osteo, low, color=BAND_COLOURS[1])
        ax.axvspan(low, hi_lim, color=BAND_COLOURS[2])
    unit = "SD" if on_t else "%"
    for i, (_, row) in enumerate(points):
        _point(ax, float(row.value), i, _flagged(row))  # type: ignore[arg-type]
        ax.text(float(row.value), i - 0.22, format_value(row.value, row.unit, row.quantity),
                ha="center", va="bottom", fontsize=6)
    ax.set_yticks(range(len(points)), [p[0] for p in points], fontsize=7)
    ax.set_ylim(-0.7, len(points) - 0.3)
    ax.invert_yaxis()
    ax.set_xlim(lo_lim, hi_lim)
    ax.set_xlabel(f"{'T-score' if on_t else '% young-adult mean'} ({unit})", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    bands: list[Any] = [Patch(color=c) for c in BAND_COLOURS]
    names = [f"{criteria.labels['osteoporosis']} (<= {osteo:g})",
             f"{criteria.labels['low']} ({osteo:g} to {low:g})",
             f"{criteria.labels['normal']} (>= {low:g})"]
    if withheld is not None:
        bands, names = [], []
    marks, mark_names = _marker_handles(any(_flagged(r) for _, r in points))
    _side_legend(ax, bands + marks, names + mark_names, criteria.name)
    fig.tight_layout()
    what = "T-scores" if on_t else "%YAM"
    if withheld is not None:
        return png_figure(fig, "plot_score", f"{what} (no {criteria.name} bands)",
                          f"Each site's value; the {criteria.name} bands are not drawn: "
                          f"{withheld}.")
    return png_figure(fig, "plot_score", f"{what} on the {criteria.name} scale",
                      f"Each site's value on the scale of {criteria.name} ({criteria.source}); "
                      "band colours in the legend.")


def smi_plot(row: ResultRow, criteria: Any, sex: str | None,
             withheld: str | None = None) -> Figure:
    """The SMI (kg/m2) against the low-muscle-mass cut-offs of ``criteria``
    (:class:`CTMuscleBoneLib.alm.SarcopeniaCriteria`) for men and women; the patient's
    sex (when known) in bold. ``withheld``: why the low-muscle-mass flag is not given
    (e.g. an unvalidated ALM model); the SMI is then drawn without cut-offs, and the
    caption gives the reason."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    v = float(row.value)  # type: ignore[arg-type]
    hi = max(10.0, v + 1.0)
    fig, ax = plt.subplots(figsize=(6.0, 1.6))
    handles: list[Any] = []
    names: list[str] = []
    cuts = (() if withheld is not None else
            (("M", criteria.men_kg_m2, "-"), ("F", criteria.women_kg_m2, "--")))
    for s, cut, style in cuts:
        bold = sex == s
        colour = "firebrick" if bold else "gray"
        ax.axvline(cut, color=colour, ls=style, lw=2.0 if bold else 1.0)
        handles.append(Line2D([], [], color=colour, ls=style, lw=2.0 if bold else 1.0))
        names.append(f"cut-off {'men' if s == 'M' else 'women'} < {cut:g} kg/m2"
                     + (" (this patient)" if bold else ""))
    if sex in ("M", "F") and withheld is None:
        ax.axvspan(0.0, criteria.cutoff(sex), color=BAND_COLOURS[0], alpha=0.6)
        handles.append(Patch(color=BAND_COLOURS[0]))
        names.append("low muscle mass")
    _point(ax, v, 0.0, _flagged(row))
    ax.text(v, 0.18, format_value(row.value, row.unit, row.quantity) + " kg/m2", ha="center",
            va="bottom", fontsize=6)
    ax.set_xlim(0.0, hi)
    ax.set_ylim(-0.5, 0.6)
    ax.set_yticks([0.0], ["SMI"], fontsize=7)
    ax.set_xlabel("SMI = ALM / height^2 (kg/m2)", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    marks, mark_names = _marker_handles(_flagged(row))
    _side_legend(ax, handles + marks, names + mark_names, criteria.name)
    fig.tight_layout()
    if withheld is not None:
        return png_figure(fig, "plot_smi", f"SMI (no {criteria.name} cut-offs)",
                          f"Skeletal muscle index; the {criteria.name} low-muscle-mass "
                          f"cut-offs are not drawn: {withheld}.")
    return png_figure(fig, "plot_smi", f"SMI against the {criteria.name} cut-offs",
                      f"Skeletal muscle index against the {criteria.name} low-muscle-mass "
                      f"cut-offs ({criteria.source}).")


def vertebra_plot(levels: list[tuple[str, ResultRow]], mean_row: ResultRow | None,
                  calibrated: bool, left_out: Sequence[tuple[str, str]] = (),
                  withheld: str | None = None) -> Figure:
    """Each vertebra's HA-equivalent trabecular vBMD (mg/cm3 hydroxyapatite, the scale of
    the thresholds) against the ACR 2018 bands, or, without a calibration, its trabecular
    HU against the Pickhardt 2013 L1 thresholds.

    ``levels``: (anatomy key, row) of the measurable per-level rows the lumbar summaries
    could use (``trabecular_vbmd_ha``, or ``trabecular_mean_hu`` uncalibrated);
    ``mean_row``: the summary row whose value the ACR category is given on
    (``lumbar_L1_L2``), drawn as a line (None: no line); ``left_out``: (anatomy key,
    reason) of measured levels not drawn (vertebral body cut by the field of view,
    fractured), named in the legend and caption; ``withheld``: why the category the
    bands stand for is not given (ACR: the L1-L2 summary's; Pickhardt: L1's), in which
    case the bars are drawn without bands and the caption gives the reason. Pickhardt's
    thresholds are for L1 only: their bands are drawn behind the L1 bar alone.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..spine.measure import (
        ACR_NORMAL_ABOVE,
        ACR_OSTEOPOROSIS_BELOW,
        ACR_REF,
        PICKHARDT_REF,
        PICKHARDT_SENSITIVE_HU,
        PICKHARDT_SPECIFIC_HU,
    )

    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    vals = [float(r.value) for _, r in levels]  # type: ignore[arg-type]
    if calibrated:
        low, high, unit = ACR_OSTEOPOROSIS_BELOW, ACR_NORMAL_ABOVE, "mg/cm3 HA"
        names = [f"osteoporosis (< {low:g})", f"low bone mass ({low:g} to {high:g})",
                 f"normal (> {high:g})"]
        title, source = "ACR 2018 (mean of two vertebrae)", ACR_REF
    else:
        low, high, unit = PICKHARDT_SPECIFIC_HU, PICKHARDT_SENSITIVE_HU, "HU"
        names = [f"osteoporosis likely (<= {low:g})", f"low density possible (<= {high:g})",
                 f"osteoporosis unlikely (> {high:g})"]
        title, source = "Pickhardt 2013 (L1 only)", PICKHARDT_REF
    top = max([high * 1.6, *[v * 1.15 for v in vals]])
    keys = [k for k, _ in levels]
    if not calibrated and "vertebrae_L1" not in keys and withheld is None:
        withheld = "L1 not drawn (the Pickhardt thresholds are for L1 only)"
    if withheld is None:
        # ACR bands span every level; Pickhardt's only L1 (axes-fraction x limits)
        i1 = keys.index("vertebrae_L1") if not calibrated else None
        n = max(len(levels), 1)
        x0, x1 = ((0.0, 1.0) if i1 is None else
                  ((i1 - 0.5 + 0.6) / (n + 0.2), (i1 + 0.5 + 0.6) / (n + 0.2)))
        ax.axhspan(0.0, low, x0, x1, color=BAND_COLOURS[0])
        ax.axhspan(low, high, x0, x1, color=BAND_COLOURS[1])
        ax.axhspan(high, top, x0, x1, color=BAND_COLOURS[2])
    for i, (key, row) in enumerate(levels):
        lev = key.removeprefix("vertebrae_")
        colour = LEVEL_COLOURS.get(lev, "black")
        ax.bar(i, float(row.value), width=0.55, color=colour, alpha=0.85,  # type: ignore[arg-type]
               hatch="//" if _flagged(row) else None, edgecolor="black", lw=0.6)
        ax.text(i, float(row.value), format_value(row.value, row.unit, row.quantity),  # type: ignore[arg-type]
                ha="center", va="bottom", fontsize=6)
    handles: list[Any] = [Patch(color=c) for c in BAND_COLOURS]
    if withheld is not None:
        handles, names = [], []
    if mean_row is not None and mean_row.value is not None:
        ax.axhline(float(mean_row.value), color="black", ls="--", lw=1.0)
        handles.append(Line2D([], [], color="black", ls="--", lw=1.0))
        names.append(f"{display_name(mean_row.structure)} mean "
                     f"{format_value(mean_row.value, mean_row.unit, mean_row.quantity)}")
    if any(_flagged(r) for _, r in levels):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//"))
        names.append("value with a warning (see the table)")
    not_used = "; ".join(f"{k.removeprefix('vertebrae_')} ({why})" for k, why in left_out)
    if not_used:
        handles.append(Patch(facecolor="none", edgecolor="none"))
        names.append(f"not plotted, not used: {not_used}")
    ax.set_xticks(range(len(levels)), [k.removeprefix("vertebrae_") for k, _ in levels],
                  fontsize=7)
    ax.set_ylim(0.0, top)
    ax.set_xlim(-0.6, max(len(levels), 1) - 0.4)
    ax.set_ylabel(f"trabecular {'vBMD' if calibrated else 'HU'} ({unit})", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    _side_legend(ax, handles, names, title)
    fig.tight_layout()
    what = "vBMD against the ACR bands" if calibrated else "HU against the Pickhardt thresholds"
    background = (f"background: {title} ({source})" if withheld is None else
                  f"no {title} bands: {withheld}")
    if withheld is not None:
        what = "vBMD" if calibrated else "HU"
    return png_figure(fig, "plot_vertebrae", f"Vertebral trabecular {what}",
                      f"Bars: each level's trabecular "
                      f"{'vBMD, hydroxyapatite-equivalent' if calibrated else 'HU'} "
                      f"(colour of its ROI); {background}."
                      + (f" Not plotted (not used by the lumbar summaries): {not_used}."
                         if not_used else ""))
