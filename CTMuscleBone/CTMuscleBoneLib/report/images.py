"""The source images of the report, as :class:`~.model.Figure` (PNG made by matplotlib).

* :func:`femur_figure`: one femur's DXA-view projection with the total hip and femoral
  neck ROIs and landmarks (:func:`CTMuscleBoneLib.figures.draw_femur_projection`);
* :func:`spine_figure`: a sagittal CT slice through the lumbar spine with each level's
  trabecular ROI outlined (its footprint across the slices) and, when measured, the
  AP projection of L1-L4 with each vertebra's outline;
* :func:`muscle_figure`: axial and coronal CT slices with the segmentation overlay and
  the uncertainty heatmap.

Orientation as in :mod:`CTMuscleBoneLib.figures` (radiological convention). Each image
carries the legend of its colours. When content is absent the panel, or the figure,
says why.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from .. import figures as F
from ..image import CTImage, LabelMap
from .model import Figure

#: Resolution of the report's images, dots per inch (about 800 px for a 7.5 in figure).
DPI = 110
#: Colour of each lumbar level's trabecular ROI and AP outline (matplotlib tab10).
LEVEL_COLOURS = {"L1": "tab:red", "L2": "tab:orange", "L3": "tab:green", "L4": "tab:blue",
                 "L5": "tab:purple"}
#: Margin around the lumbar vertebrae in the spine's sagittal panel, mm.
SPINE_MARGIN_MM = 30.0


def png_figure(fig: Any, key: str, title: str, caption: str) -> Figure:
    """Render a matplotlib figure to a :class:`Figure` (PNG) and close it."""
    plt = F.pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    png = buf.getvalue()
    w, h = struct.unpack(">II", png[16:24])  # IHDR: width, height
    return Figure(key, title, png, caption, None, int(w), int(h))


def femur_figure(fp: Any, side: str) -> Figure:
    """The DXA-view projection of the ``side`` femur with its ROIs, landmarks and legend.

    ``fp``: :class:`~CTMuscleBoneLib.femur.measure.FemurProjection`.
    """
    plt = F.pyplot()
    fig = plt.figure(figsize=(3.6, 4.6))
    grid = fig.add_gridspec(2, 1, height_ratios=[4.0, 1.0])
    ax = fig.add_subplot(grid[0])
    F.draw_femur_projection(ax, fp, f"{side} femur, DXA view (areal density)")
    leg = fig.add_subplot(grid[1])
    leg.set_axis_off()
    F.roi_legend(leg, loc="center", ncol=2)
    fig.tight_layout()
    return png_figure(fig, f"femur_{side}", f"Femur ({side}), DXA-view projection",
                      "Areal bone density of the proximal femur projected as in a DXA scan "
                      "(patient's right on the image left). Orange: total hip ROI; cyan: "
                      "femoral neck ROI; yellow marks: landmarks and the femoral head "
                      "sphere fit.")


def _level(key: str) -> str:
    return key.removeprefix("vertebrae_")


def spine_figure(ct: CTImage, labels: LabelMap, spine: dict[str, Any] | None,
                 lumbar_abmd: dict[str, Any] | None) -> Figure:
    """Sagittal CT slice of the lumbar spine with the trabecular ROI of each level, and the
    AP projection of the vertebrae when measured.

    ``spine``: {key: VertebraAnalysis} (``Results.artifacts['spine']``);
    ``lumbar_abmd``: {key: VertebraProjection} (``Results.artifacts['lumbar_abmd']``).
    """
    plt = F.pyplot()
    from matplotlib.lines import Line2D

    g = ct.geometry
    ct_v, sp = F.to_lps_view(ct.hu, g)
    lab_v, _ = F.to_lps_view(labels.array, g)
    keys = [k for k in (spine or {}) if k.startswith("vertebrae_L")]
    values = [labels.value_of(k) for k in keys]
    vert = np.isin(lab_v, [v for v in values if v is not None])
    has_ap = bool(lumbar_abmd)
    fig = plt.figure(figsize=(7.2 if has_ap else 4.2, 5.4))
    grid = fig.add_gridspec(2, 2 if has_ap else 1, height_ratios=[4.3, 0.9])
    ax = fig.add_subplot(grid[0, 0])
    where = np.argwhere(vert)
    x = int(np.median(where[:, 0])) if where.size else ct_v.shape[0] // 2
    F.draw_slice(ax, ct_v, sp, "sagittal", x, title="lumbar spine, sagittal slice\n"
                 "(trabecular ROIs outlined across the slices)")
    handles: list[Any] = []
    for key in keys:
        res = spine[key]  # type: ignore[index]
        roi = getattr(res, "roi", None)
        lev = _level(key)
        colour = LEVEL_COLOURS.get(lev, "white")
        if roi is None or roi.n_voxels == 0:
            continue
        m = np.zeros(ct.hu.shape, dtype=bool)
        m[tuple(np.asarray(roi.index).T)] = True
        mv, _ = F.to_lps_view(m, g)
        foot = mv.any(axis=0).T.astype(float)  # (z, y): sagittal footprint
        ext = (0.0, mv.shape[1] * sp[1], 0.0, mv.shape[2] * sp[2])
        ax.contour(foot, levels=[0.5], colors=[colour], extent=ext, origin="lower",
                   linewidths=1.2)
        zc = (np.nonzero(foot.any(axis=1))[0].mean() + 0.5) * sp[2]
        y0 = (np.nonzero(foot.any(axis=0))[0].min()) * sp[1]
        ax.text(y0 - 10.0, zc, lev, color=colour, fontsize=7, ha="right", va="center",
                fontweight="bold")
        handles.append(Line2D([], [], color=colour, lw=1.5))
    if where.size:
        lo = where.min(axis=0) * np.asarray(sp) - SPINE_MARGIN_MM
        hi = (where.max(axis=0) + 1) * np.asarray(sp) + SPINE_MARGIN_MM
        ax.set_xlim(max(lo[1], 0.0), min(hi[1], ct_v.shape[1] * sp[1]))
        ax.set_ylim(max(lo[2], 0.0), min(hi[2], ct_v.shape[2] * sp[2]))
    names = [f"trabecular ROI {_level(k)}" for k in keys
             if getattr(spine[k], "roi", None) is not None]  # type: ignore[index]
    if has_ap:
        from ..spine.abmd import compose

        axp = fig.add_subplot(grid[0, 1])
        composed = compose(lumbar_abmd)  # type: ignore[arg-type]
        assert composed is not None
        image, feet, pgrid = composed
        px = pgrid.pixel_mm
        ext = (0.0, image.shape[1] * px, image.shape[0] * px, 0.0)
        im = axp.imshow(image, origin="upper", cmap="gray", extent=ext)
        for key, foot in feet.items():
            colour = LEVEL_COLOURS.get(_level(key), "white")
            axp.contour(foot.astype(float), levels=[0.5], colors=[colour], extent=ext,
                        origin="upper", linewidths=1.0, linestyles="--")
            rows = np.nonzero(foot.any(axis=1))[0]
            cols = np.nonzero(foot.any(axis=0))[0]
            axp.text(cols.min() * px - 3.0, (rows.mean() + 0.5) * px, _level(key), color=colour,
                     fontsize=7, ha="right", va="center", fontweight="bold")
        axp.set_title("L1-L4, AP projection (DXA-like)", fontsize=8)
        axp.set_xlabel("patient right <-> left (mm)", fontsize=7)
        axp.set_ylabel("superior <-> inferior (mm)", fontsize=7)
        axp.tick_params(labelsize=6)
        F.side_marks(axp)
        F.colorbar(plt, im, axp, "areal BMD (g/cm2)")
        handles.append(Line2D([], [], color="gray", lw=1.0, ls="--"))
        names.append("vertebra outline (AP projection)")
    leg = fig.add_subplot(grid[1, :])
    leg.set_axis_off()
    if handles:
        leg.legend(handles, names, loc="center", ncol=3, fontsize=7, frameon=False,
                   title="colours", title_fontsize=7)
    fig.tight_layout()
    return png_figure(fig, "spine", "Lumbar spine, trabecular ROIs",
                      "Sagittal CT slice through the lumbar vertebrae (anterior on the left); "
                      "each level's trabecular ROI is outlined in its colour"
                      + ("; right: the AP projection used for the DXA-like aBMD, each "
                         "vertebra's outline dashed in its colour." if has_ap else "."))


def _muscle_slices(lab_v: np.ndarray, muscle_values: list[int]) -> tuple[int, int]:
    """Axial index with the most muscle voxels, coronal index at their median."""
    m = np.isin(lab_v, muscle_values) if muscle_values else lab_v > 0
    if not m.any():
        m = lab_v > 0
    if not m.any():
        return lab_v.shape[2] // 2, lab_v.shape[1] // 2
    z = int(np.argmax(m.sum(axis=(0, 1))))
    y = int(np.median(np.nonzero(m.any(axis=(0, 2)))[0]))
    return z, y


def muscle_figure(ct: CTImage, labels: LabelMap, uncertainty: np.ndarray | None,
                  uncertainty_reason: str, uncertainty_full_scale: float | None = None
                  ) -> Figure:
    """Axial and coronal CT slices with the segmentation overlay (left) and the
    uncertainty heatmap (right), and the segment legend.

    ``uncertainty``: voxel map (n0, n1, n2) on the CT grid, 0 outside the body, or None
    (the panels then say ``uncertainty_reason``).
    """
    from ..anatomy import BY_KEY

    plt = F.pyplot()
    g = ct.geometry
    ct_v, sp = F.to_lps_view(ct.hu, g)
    lab_v, _ = F.to_lps_view(labels.array, g)
    unc_v = F.to_lps_view(uncertainty, g)[0] if uncertainty is not None else None
    muscle_values = [v for v, k in labels.structures.items()
                     if k in BY_KEY and BY_KEY[k].group == "muscle"]
    z, y = _muscle_slices(lab_v, muscle_values)
    fig = plt.figure(figsize=(7.4, 8.4))
    grid = fig.add_gridspec(3, 2, height_ratios=[3.2, 3.8, 0.9])
    shown: list[np.ndarray] = []
    for row, (plane, index) in enumerate((("axial", z), ("coronal", y))):
        ax = fig.add_subplot(grid[row, 0])
        F.draw_slice(ax, ct_v, sp, plane, index, labels_view=lab_v,
                     structures=labels.structures, title=f"segmentation, {plane} slice")
        shown.append(F.slice_of_view(lab_v, sp, plane, index)[0])
        axu = fig.add_subplot(grid[row, 1])
        if unc_v is None:
            F.absent_panel(axu, f"uncertainty, {plane} slice", uncertainty_reason)
        else:
            F.draw_slice(axu, ct_v, sp, plane, index, uncertainty_view=unc_v,
                         title=f"uncertainty (predictive variance), {plane} slice",
                         uncertainty_full_scale=uncertainty_full_scale)
    leg = fig.add_subplot(grid[2, :])
    leg.set_axis_off()
    present = F.structures_in(np.concatenate([s.ravel() for s in shown]), labels.structures)
    if present:
        F.segment_legend(leg, present, title="segments in these slices", loc="upper center")
    fig.tight_layout()
    return png_figure(fig, "muscles", "Muscles: segmentation and uncertainty",
                      "Axial slice with the most muscle and coronal slice through the "
                      "muscles (patient's right on the image left; axial seen from the feet). "
                      "Left: the segmentation (colours in the legend); right: the model's "
                      "voxel uncertainty (predictive variance, colour bar; the upper half of "
                      "the values inside the body is shown).")


def absent_figure(key: str, title: str, reason: str) -> Figure:
    """A figure that is not there, with the reason the report shows in its place."""
    return Figure(key, title, None, "", reason)
