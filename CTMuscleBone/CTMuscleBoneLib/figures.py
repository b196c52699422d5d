"""Figures showing the images each value came from (matplotlib, Agg backend).

* :func:`overview_figure`: a coronal CT slice, the same slice with the label map and,
  when given, with the voxel uncertainty heatmap; plus each femur's DXA-view
  projection with its ROIs. Written as PNG.
* :func:`draw_femur_projection`: one femur's projection with total hip and femoral
  neck ROIs and landmarks, on a matplotlib axes.

Slices are taken on the voxel grid after permuting and flipping axes to the nearest
LPS order (no resampling); for an oblique scan the slice is the one nearest to coronal,
and the title says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .anatomy import BY_KEY, BY_LABEL_VALUE
from .atomic import atomic_path
from .image import Geometry, LabelMap


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_lps_view(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, ...]]:
    """Permute and flip axes so that axis 0 runs to the left, 1 posterior, 2 superior.

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


def label_rgba(labels: np.ndarray, structures: dict[int, str], alpha: float = 0.55) -> np.ndarray:
    """RGBA image (…, 4) of a label slice with anatomy-table colours."""
    out = np.zeros(labels.shape + (4,), dtype=float)
    for value, key in structures.items():
        st = BY_KEY.get(key) or BY_LABEL_VALUE.get(value)
        if st is None:
            continue
        m = labels == value
        if m.any():
            out[m, :3] = np.asarray(st.color_rgb) / 255.0
            out[m, 3] = alpha
    return out


def draw_femur_projection(ax: Any, fp: Any, title: str = "") -> None:
    """Draw a :class:`~CTMuscleBoneLib.femur.FemurProjection` with its ROIs on ``ax``."""
    plt = _mpl()
    img = fp.projection.areal_density_g_cm2
    px = fp.pixel_mm
    ext = (0, img.shape[0] * px, 0, img.shape[1] * px)
    im = ax.imshow(img.T, origin="lower", cmap="gray", extent=ext)
    for site, colour in (("total_hip", "tab:orange"), ("femoral_neck", "tab:cyan")):
        if site in fp.roi_masks and fp.roi_masks[site].any():
            ax.contour(fp.roi_masks[site].T.astype(float), levels=[0.5], colors=[colour],
                       extent=ext, linewidths=1.2)
    for name, marker in (("head_centre", "+"), ("head_neck_junction", "x"),
                         ("lesser_trochanter", "o")):
        if name in fp.landmarks_px:
            i, k = np.asarray(fp.landmarks_px[name]) * px
            ax.plot(i, k, marker, color="yellow", ms=7, mfc="none")
    if "head_centre" in fp.landmarks_px:
        c = np.asarray(fp.landmarks_px["head_centre"]) * px
        ax.add_patch(plt.Circle(c, fp.head_radius_px * px, fill=False, color="yellow",
                                lw=0.7, ls="--"))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("mm (to patient's left)", fontsize=7)
    ax.set_ylabel("mm (superior)", fontsize=7)
    ax.tick_params(labelsize=6)
    plt.colorbar(im, ax=ax, shrink=0.7).set_label("g/cm2", fontsize=7)


def overview_figure(
    hu: np.ndarray,
    labels: LabelMap,
    path: str | Path,
    uncertainty: np.ndarray | None = None,
    femur_projections: dict[str, Any] | None = None,
    femur_values: dict[str, dict[str, Any]] | None = None,
    title: str = "",
) -> Path:
    """Write a PNG overview of a case.

    Parameters
    ----------
    hu : np.ndarray, (n0, n1, n2)
        CT in HU on ``labels.geometry``.
    labels : LabelMap
    path : output PNG (written atomically)
    uncertainty : np.ndarray, (n0, n1, n2), optional
        Voxel uncertainty map on the same grid (e.g. predictive variance).
    femur_projections : dict side -> FemurProjection, optional
    femur_values : dict side -> {'abmd_total_hip': g/cm2, 'abmd_femoral_neck': ...}
    title : str
        Figure title (e.g. the synthetic-model warning).
    """
    plt = _mpl()
    g = labels.geometry
    ct_v, sp = to_lps_view(hu, g)
    lab_v, _ = to_lps_view(labels.array, g)
    unc_v = to_lps_view(uncertainty, g)[0] if uncertainty is not None else None
    # coronal slice through the femoral heads when labelled, else through the labels
    fem = np.isin(lab_v, [v for v, k in labels.structures.items() if k.startswith("femur")])
    where = np.argwhere(fem if fem.any() else lab_v > 0)
    y = int(np.median(where[:, 1])) if where.size else lab_v.shape[1] // 2
    ext = (0, ct_v.shape[0] * sp[0], 0, ct_v.shape[2] * sp[2])
    panels = [("CT (coronal)", None), ("segmentation", "labels")]
    if unc_v is not None:
        panels.append(("uncertainty (predictive variance)", "unc"))
    fps = femur_projections or {}
    n = len(panels) + len(fps)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.6), dpi=110)
    axes = np.atleast_1d(axes)
    ct_slice = np.clip(ct_v[:, y, :].T, -250, 450)
    for ax, (name, kind) in zip(axes, panels, strict=False):
        ax.imshow(ct_slice, origin="lower", cmap="gray", extent=ext)
        if kind == "labels":
            ax.imshow(np.transpose(label_rgba(lab_v[:, y, :], labels.structures), (1, 0, 2)),
                      origin="lower", extent=ext)
        elif kind == "unc" and unc_v is not None:
            u = unc_v[:, y, :].T
            im = ax.imshow(np.ma.masked_less_equal(u, np.percentile(u, 50) if u.any() else 0),
                           origin="lower", cmap="inferno", extent=ext, alpha=0.75)
            plt.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        ax.set_title(name + (" (nearest-to-coronal slice)" if _is_oblique(g) else ""),
                     fontsize=8)
        ax.set_xlabel("patient right  <->  left (mm)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax, (side, fp) in zip(axes[len(panels):], sorted(fps.items()), strict=False):
        vals = (femur_values or {}).get(side, {})
        parts = [f"{q.replace('abmd_', '')} {vals[q]:.3f} g/cm2"
                 for q in ("abmd_total_hip", "abmd_femoral_neck")
                 if isinstance(vals.get(q), float)]
        draw_femur_projection(ax, fp, f"{side} femur, DXA view\n" + ", ".join(parts))
    if title:
        fig.suptitle(title, fontsize=9, color="darkred")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
