"""Figures showing the images each value came from (matplotlib, Agg backend).

* :func:`build_overview`: a matplotlib Figure with a coronal CT slice, the same slice
  with the label map, the voxel uncertainty heatmap, and each femur's DXA-view
  projection with its ROIs; a legend of the segment colours present (grouped by
  region when many) and of the ROI marks. A panel whose content is absent says why
  ("no femur segmented", "no uncertainty map: ...").
* :func:`overview_figure`: writes that figure as PNG.
* :func:`draw_femur_projection`: one femur's projection with total hip and femoral
  neck ROIs and landmarks, on a matplotlib axes.
* Building blocks shared with the report (:mod:`CTMuscleBoneLib.report`):
  :func:`to_lps_view`, :func:`slice_of_view` and :func:`draw_slice` (coronal, axial or
  sagittal slices with the label overlay or the uncertainty heatmap),
  :func:`segment_legend`, :func:`roi_legend`, :func:`colorbar`, :func:`side_marks`,
  :func:`absent_panel`.

Every panel follows the radiological convention: the patient's right is on the image
left (the slice's first axis runs towards the patient's left), superior is up, and the
right femur's panel comes before the left one. Slices are taken on the voxel grid after
permuting and flipping axes to the nearest LPS order (no resampling); for an oblique
scan the slice is the one nearest to coronal, and the title says so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .anatomy import BY_KEY, BY_LABEL_VALUE, MUSCLE_REGIONS, Structure
from .atomic import atomic_path
from .image import Geometry, LabelMap

#: CT display window, HU.
CT_WINDOW_HU = (-250.0, 450.0)
#: Largest number of structure entries in the segment legend; above it the legend
#: groups structures by muscle region / bone / other.
MAX_LEGEND_ENTRIES = 14
#: Colours of the femur ROI outlines, and the landmark markers.
ROI_COLOURS = {"total_hip": "tab:orange", "femoral_neck": "tab:cyan"}
LANDMARK_MARKERS = {"head_centre": ("+", "femoral head centre"),
                    "head_neck_junction": ("x", "head-neck junction"),
                    "lesser_trochanter": ("o", "lesser trochanter")}
LANDMARK_COLOUR = "yellow"
_SIDES_RADIOLOGICAL = ("right", "left")  # image left to image right


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    return _mpl()


def to_lps_view(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, ...]]:
    """Permute and flip axes so that axis 0 runs to the left, 1 posterior, 2 superior.

    Shown with axis 0 horizontal (increasing to the right) this puts the patient's
    right on the image left (radiological convention).

    Returns the view (no copy) and the spacing of its axes, mm.
    """
    order, flips = [], []
    for patient_axis in ("left", "posterior", "superior"):
        axis, sign = geometry.axis_for(patient_axis)
        order.append(axis)
        flips.append(sign < 0)
    if sorted(order) != [0, 1, 2]:  # strongly oblique: keep storage order
        return array, geometry.spacing_mm
    view = np.transpose(array, order)
    for a, f in enumerate(flips):
        if f:
            view = np.flip(view, axis=a)
    return view, tuple(geometry.spacing_mm[o] for o in order)


def _is_oblique(geometry: Geometry) -> bool:
    return not np.allclose(np.abs(geometry.direction), np.round(np.abs(geometry.direction)),
                           atol=1e-3)


def _structure(value: int, key: str) -> Structure | None:
    return BY_KEY.get(key) or BY_LABEL_VALUE.get(value)


def label_rgba(labels: np.ndarray, structures: dict[int, str], alpha: float = 0.55) -> np.ndarray:
    """RGBA image (…, 4) of a label slice with anatomy-table colours."""
    out = np.zeros(labels.shape + (4,), dtype=float)
    for value, key in structures.items():
        st = _structure(value, key)
        if st is None:
            continue
        m = labels == value
        if m.any():
            out[m, :3] = np.asarray(st.color_rgb) / 255.0
            out[m, 3] = alpha
    return out


def _group_name(st: Structure) -> str:
    if st.group == "muscle" and st.region in MUSCLE_REGIONS:
        return MUSCLE_REGIONS[st.region].split(" (", 1)[0]
    return {"bone": "Bones", "muscle": "Muscles"}.get(st.group, "Other structures")


def legend_entries(structures: list[Structure]) -> list[tuple[str, list[tuple[float, ...]]]]:
    """(label, colours) of the segment legend, in anatomy-table order.

    One entry per structure name (left and right sides share it, with both colours)
    when there are at most :data:`MAX_LEGEND_ENTRIES`; otherwise one per muscle
    region, bones and other structures, with up to six member colours each.
    """
    by_name: dict[str, list[tuple[float, ...]]] = {}
    for st in structures:
        by_name.setdefault(st.name, []).append(tuple(np.asarray(st.color_rgb) / 255.0))
    if len(by_name) <= MAX_LEGEND_ENTRIES:
        return list(by_name.items())
    by_group: dict[str, list[tuple[float, ...]]] = {}
    for st in structures:
        colours = by_group.setdefault(_group_name(st), [])
        c = tuple(np.asarray(st.color_rgb) / 255.0)
        if c not in colours and len(colours) < 6:
            colours.append(c)
    return list(by_group.items())


def _segment_handles(entries: list[tuple[str, list[tuple[float, ...]]]]) -> tuple[list, list]:
    from matplotlib.patches import Patch

    handles = [tuple(Patch(facecolor=c, edgecolor="none") for c in colours)
               for _, colours in entries]
    return handles, [label for label, _ in entries]


def _roi_handles() -> tuple[list, list]:
    from matplotlib.lines import Line2D

    handles: list[Any] = [Line2D([], [], color=c, lw=1.5) for c in ROI_COLOURS.values()]
    labels = [f"{site.replace('_', ' ')} ROI" for site in ROI_COLOURS]
    for marker, text in LANDMARK_MARKERS.values():
        handles.append(Line2D([], [], ls="none", marker=marker, color=LANDMARK_COLOUR,
                              mfc="none", mec="black" if marker == "o" else LANDMARK_COLOUR,
                              ms=7))
        labels.append(text)
    handles.append(Line2D([], [], color=LANDMARK_COLOUR, lw=0.8, ls="--"))
    labels.append("femoral head sphere fit")
    return handles, labels


def absent_panel(ax: Any, title: str, reason: str) -> None:
    """A panel that says why its content is absent."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    ax.text(0.5, 0.5, textwrap.fill(reason, 30), ha="center", va="center", fontsize=8,
            color="dimgray", transform=ax.transAxes,
            bbox={"boxstyle": "round", "fc": "whitesmoke", "ec": "lightgray"})


def colorbar(plt: Any, mappable: Any, ax: Any, label: str) -> Any:
    """A labelled colour bar beside ``ax``."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.05)
    cb = plt.colorbar(mappable, cax=cax)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return cb


def side_marks(ax: Any, marks: tuple[str, str] = ("R", "L")) -> None:
    """Orientation letters at the left and right image edges (default 'R' and 'L':
    the patient's right on the image left)."""
    for x, text in zip((0.02, 0.98), marks, strict=True):
        ax.text(x, 0.97, text, transform=ax.transAxes, ha="center", va="top", fontsize=9,
                color="white", fontweight="bold")


#: Slice planes of :func:`slice_of_view`: (axes shown as columns, rows), the row axis'
#: origin for ``imshow``, axis labels and the orientation letters at the image edges.
PLANES: dict[str, dict[str, Any]] = {
    "coronal": {"cols": 0, "rows": 2, "origin": "lower", "marks": ("R", "L"),
                "xlabel": "patient right <-> left (mm)",
                "ylabel": "inferior <-> superior (mm)"},
    "axial": {"cols": 0, "rows": 1, "origin": "upper", "marks": ("R", "L"),
              "xlabel": "patient right <-> left (mm)",
              "ylabel": "anterior <-> posterior (mm)"},
    "sagittal": {"cols": 1, "rows": 2, "origin": "lower", "marks": ("A", "P"),
                 "xlabel": "anterior <-> posterior (mm)",
                 "ylabel": "inferior <-> superior (mm)"},
}
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_of_view(view: np.ndarray, spacing_mm: tuple[float, ...], plane: str, index: int
                  ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One slice of an LPS view (:func:`to_lps_view`) ready for ``imshow``.

    Parameters
    ----------
    view : np.ndarray, (nx, ny, nz) or (nx, ny, nz, c)
        Axis 0 towards the patient's left, 1 posterior, 2 superior.
    spacing_mm : tuple of float, (3,)
    plane : {'coronal', 'axial', 'sagittal'}
    index : int
        Slice index along the plane's normal axis.

    Returns
    -------
    image : np.ndarray, (rows, cols[, c])
        Shown with ``origin=PLANES[plane]['origin']``: coronal and axial in the
        radiological convention (patient's right on the image left; axial seen from
        the feet, anterior up), sagittal seen from the patient's left (anterior on the
        image left), superior up.
    extent : (left, right, bottom, top), mm
    """
    p = PLANES[plane]
    sl = np.take(view, int(index), axis=_PLANE_AXIS[plane])  # remaining axes keep order
    img = np.swapaxes(sl, 0, 1)  # (cols axis, rows axis) -> (rows, cols)
    w = view.shape[p["cols"]] * spacing_mm[p["cols"]]
    h = view.shape[p["rows"]] * spacing_mm[p["rows"]]
    extent = (0.0, w, 0.0, h) if p["origin"] == "lower" else (0.0, w, h, 0.0)
    return img, extent


def draw_slice(ax: Any, ct_view: np.ndarray, spacing_mm: tuple[float, ...], plane: str,
               index: int, labels_view: np.ndarray | None = None,
               structures: dict[int, str] | None = None,
               uncertainty_view: np.ndarray | None = None, title: str = "",
               ct_colorbar: bool = False,
               uncertainty_full_scale: float | None = None) -> None:
    """Draw a CT slice of an LPS view, optionally with the label overlay or the
    uncertainty heatmap (with a colour bar), axis labels and orientation letters.

    ``ct_view``, ``labels_view``, ``uncertainty_view``: (nx, ny, nz) LPS views on one
    grid; ``structures``: label value -> anatomy key (colours of the anatomy table).
    ``uncertainty_full_scale``: the predictive variance drawn in full colour, the same on
    every case (:func:`CTMuscleBoneLib.segmentation.uncertainty.two_class_tie_value`);
    values below 1/256 of it are transparent. None (the model's class count unknown):
    the upper half of the slice's positive values, scaled to their own maximum.
    """
    plt = _mpl()
    p = PLANES[plane]
    lo, hi = CT_WINDOW_HU
    img, ext = slice_of_view(ct_view, spacing_mm, plane, index)
    im = ax.imshow(np.clip(img, lo, hi), origin=p["origin"], cmap="gray", extent=ext,
                   vmin=lo, vmax=hi)
    if ct_colorbar:
        colorbar(plt, im, ax, "CT (HU, window)")
    if labels_view is not None:
        lab, _ = slice_of_view(labels_view, spacing_mm, plane, index)
        ax.imshow(label_rgba(lab, structures or {}), origin=p["origin"], extent=ext)
    if uncertainty_view is not None:
        u, _ = slice_of_view(uncertainty_view, spacing_mm, plane, index)
        u = np.asarray(u, dtype=float)
        if uncertainty_full_scale is not None and uncertainty_full_scale > 0:
            full = float(uncertainty_full_scale)
            shown = np.ma.masked_where(~np.isfinite(u) | (u < full / 256.0), u)
            hm = ax.imshow(shown, origin=p["origin"], cmap="inferno", extent=ext,
                           alpha=0.8, vmin=0.0, vmax=full)
            colorbar(plt, hm, ax, "predictive variance\n(top: a tie of two structures)")
        else:
            pos = u[np.isfinite(u) & (u > 0)]
            cut = float(np.percentile(pos, 50)) if pos.size else 0.0
            shown = np.ma.masked_where(~np.isfinite(u) | (u <= cut), u)
            hm = ax.imshow(shown, origin=p["origin"], cmap="inferno", extent=ext, alpha=0.8)
            colorbar(plt, hm, ax, "predictive variance\n(upper half inside the body shown)")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(p["xlabel"], fontsize=7)
    ax.set_ylabel(p["ylabel"], fontsize=7)
    ax.tick_params(labelsize=6)
    side_marks(ax, p["marks"])


def segment_legend(ax: Any, structures: list[Structure], title: str = "segments in this slice",
                   loc: str = "upper left", ncol: int = 4) -> Any:
    """Add the segment colour legend (:func:`legend_entries`) to ``ax``; returns it."""
    from matplotlib.legend_handler import HandlerTuple

    handles, names = _segment_handles(legend_entries(structures))
    leg = ax.legend(handles, names, loc=loc, ncol=max(1, min(ncol, len(names))), fontsize=7,
                    title=title, title_fontsize=7,
                    handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, frameon=False)
    ax.add_artist(leg)
    return leg


def roi_legend(ax: Any, loc: str = "upper right", ncol: int = 2) -> Any:
    """Add the legend of the femur ROI outlines and landmark marks to ``ax``."""
    handles, names = _roi_handles()
    leg = ax.legend(handles, names, loc=loc, ncol=ncol, fontsize=7, title="DXA-view marks",
                    title_fontsize=7, frameon=False)
    ax.add_artist(leg)
    return leg


def structures_in(labels: np.ndarray, structures: dict[int, str]) -> list[Structure]:
    """Anatomy-table structures whose label value occurs in ``labels`` (any shape),
    in label-value order."""
    values = set(np.unique(labels).tolist())
    found = [st for v, k in sorted(structures.items())
             if v in values and (st := _structure(v, k)) is not None]
    return sorted(found, key=lambda st: st.label_value)


def draw_femur_projection(ax: Any, fp: Any, title: str = "") -> None:
    """Draw a :class:`~CTMuscleBoneLib.femur.FemurProjection` with its ROIs on ``ax``.

    Axis 0 of the projection runs towards the patient's left and is drawn left to
    right, so the patient's right is on the image left, as in the CT panels.
    """
    plt = _mpl()
    img = fp.projection.areal_density_g_cm2
    px = fp.pixel_mm
    ext = (0, img.shape[0] * px, 0, img.shape[1] * px)
    im = ax.imshow(img.T, origin="lower", cmap="gray", extent=ext)
    for site, colour in ROI_COLOURS.items():
        if site in fp.roi_masks and fp.roi_masks[site].any():
            ax.contour(fp.roi_masks[site].T.astype(float), levels=[0.5], colors=[colour],
                       extent=ext, linewidths=1.2)
    for name, (marker, _) in LANDMARK_MARKERS.items():
        if name in fp.landmarks_px:
            i, k = np.asarray(fp.landmarks_px[name]) * px
            ax.plot(i, k, marker, color=LANDMARK_COLOUR, ms=7, mfc="none")
    if "head_centre" in fp.landmarks_px:
        c = np.asarray(fp.landmarks_px["head_centre"]) * px
        ax.add_patch(plt.Circle(c, fp.head_radius_px * px, fill=False, color=LANDMARK_COLOUR,
                                lw=0.7, ls="--"))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("patient right <-> left (mm)", fontsize=7)
    ax.set_ylabel("inferior <-> superior (mm)", fontsize=7)
    ax.tick_params(labelsize=6)
    side_marks(ax)
    colorbar(plt, im, ax, "areal BMD (g/cm2)")


def _femur_text(results: Any, side: str) -> tuple[dict[str, float], str | None]:
    """aBMD values and the reason a femur has no DXA view, from a Results."""
    values: dict[str, float] = {}
    reason = None
    for q in ("abmd_total_hip", "abmd_femoral_neck"):
        row = results.get(f"femur_{side}", q) if results is not None else None
        if row is None:
            continue
        if isinstance(row.value, float):
            values[q] = row.value
        elif reason is None:
            why = [f.split(":", 1)[1].strip() for f in row.flags
                   if f.startswith("not_measurable:")]
            reason = why[0] if why else None
    return values, reason


def build_overview(
    hu: np.ndarray,
    labels: LabelMap,
    uncertainty: np.ndarray | None = None,
    femur_projections: dict[str, Any] | None = None,
    femur_values: dict[str, dict[str, Any]] | None = None,
    title: str = "",
    results: Any = None,
    uncertainty_reason: str = "no uncertainty map: the labels were not made by the "
                              "segmentation model",
    uncertainty_full_scale: float | None = None,
) -> Any:
    """The overview figure of a case (a matplotlib Figure; close it when done).

    Parameters
    ----------
    hu : np.ndarray, (n0, n1, n2)
        CT in HU on ``labels.geometry``.
    labels : LabelMap
    uncertainty : np.ndarray, (n0, n1, n2), optional
        Voxel uncertainty map on the same grid (e.g. predictive variance), 0 outside
        the body.
    femur_projections : dict side -> FemurProjection, optional
    femur_values : dict side -> {'abmd_total_hip': g/cm2, 'abmd_femoral_neck': ...}
        Values written in the femur panels' titles (default: taken from ``results``).
    title : str
        Figure title (e.g. the synthetic-model warning).
    results : Results, optional
        Gives the aBMD values and, for a femur without a DXA view, the reason.
    uncertainty_reason : str
        Written in the uncertainty panel when ``uncertainty`` is None.
    uncertainty_full_scale : float, optional
        The heatmap's full colour (see :func:`draw_slice`).
    """
    plt = _mpl()
    g = labels.geometry
    ct_v, sp = to_lps_view(hu, g)
    lab_v, _ = to_lps_view(labels.array, g)
    unc_v = to_lps_view(uncertainty, g)[0] if uncertainty is not None else None
    femur_values_in = {v for v, k in labels.structures.items() if k.startswith("femur")}
    # coronal slice through the femoral heads when labelled, else through the labels
    fem = np.isin(lab_v, list(femur_values_in))
    where = np.argwhere(fem if fem.any() else lab_v > 0)
    y = int(np.median(where[:, 1])) if where.size else lab_v.shape[1] // 2
    fps = femur_projections or {}
    sides = [s for s in _SIDES_RADIOLOGICAL if f"femur_{s}" in labels.structures.values()]
    femur_panels: list[str | None] = list(sides) or [None]

    n = 3 + len(femur_panels)
    fig = plt.figure(figsize=(3.5 * n, 5.8), dpi=110)
    grid = fig.add_gridspec(2, n, height_ratios=[4.6, 1.2])
    axes = [fig.add_subplot(grid[0, i]) for i in range(n)]
    leg_ax = fig.add_subplot(grid[1, :])
    leg_ax.set_axis_off()
    oblique = " (nearest-to-coronal slice)" if _is_oblique(g) else ""

    panels = (("CT (coronal)", None, None, True), ("segmentation", lab_v, None, False),
              ("uncertainty (predictive variance)", None, unc_v, False))
    for ax, (name, lab, unc, bar) in zip(axes[:3], panels, strict=True):
        if name.startswith("uncertainty") and unc_v is None:
            absent_panel(ax, "uncertainty", uncertainty_reason)
            continue
        draw_slice(ax, ct_v, sp, "coronal", y, labels_view=lab, structures=labels.structures,
                   uncertainty_view=unc, title=name + oblique, ct_colorbar=bar,
                   uncertainty_full_scale=uncertainty_full_scale)

    for ax, side in zip(axes[3:], femur_panels, strict=True):
        if side is None:
            absent_panel(ax, "femur, DXA view", "no femur segmented")
            continue
        vals, reason = _femur_text(results, side)
        vals = {**vals, **(femur_values or {}).get(side, {})}
        if side not in fps:
            absent_panel(ax, f"{side} femur, DXA view",
                         "no DXA view: " + (reason or "femur not measured"))
            continue
        text = ", ".join(f"{q.replace('abmd_', '').replace('_', ' ')} {vals[q]:.3f} g/cm2"
                         for q in ("abmd_total_hip", "abmd_femoral_neck")
                         if isinstance(vals.get(q), float))
        draw_femur_projection(ax, fps[side], f"{side} femur, DXA view\n" + text)

    present = structures_in(lab_v[:, y, :], labels.structures)
    if present:
        segment_legend(leg_ax, present)
    if fps:
        roi_legend(leg_ax)
    if title:
        fig.suptitle(title, fontsize=9, color="darkred")
    fig.tight_layout()
    return fig


def overview_figure(
    hu: np.ndarray,
    labels: LabelMap,
    path: str | Path,
    uncertainty: np.ndarray | None = None,
    femur_projections: dict[str, Any] | None = None,
    femur_values: dict[str, dict[str, Any]] | None = None,
    title: str = "",
    results: Any = None,
    return_figure: bool = False,
    **kwargs: Any,
) -> Any:
    """Write the PNG overview of a case (see :func:`build_overview`), atomically.

    Returns the path, or ``(path, figure)`` when ``return_figure`` (the caller then
    closes the figure).
    """
    plt = _mpl()
    fig = build_overview(hu, labels, uncertainty, femur_projections, femur_values, title,
                         results, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    if return_figure:
        return path, fig
    plt.close(fig)
    return path
