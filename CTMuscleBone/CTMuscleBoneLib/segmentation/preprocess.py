"""CT -> network input: the model grid, resampling and HU windowing (no torch).

The same functions serve inference and training, so that a model sees the same input
in both.

Model grid (see :class:`~CTMuscleBoneLib.segmentation.config.InputConfig`): spacing
``spacing_mm``; axes in the model's ``orientation`` (LPS letters). With
``reorient='nearest_axis'`` its direction is the CT's own direction matrix with columns
permuted and flipped to the nearest match of the orientation (oblique scans keep their
acquisition plane; for non-oblique scans the grid is exactly axis-aligned); with
``axis_aligned`` it is exactly the patient axes. The grid covers every CT voxel centre
plus one voxel margin, so resampling back loses nothing. Physical positions (LPS mm)
are preserved throughout.

Intensities: HU clipped to ``hu_window`` then mapped linearly to ``normalized_range``
((0, 1) by default). Outside the CT the value is that of the window's low end (air).
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np

from ..image import CTImage, Geometry, LabelMap, sitk_from_array
from .config import InputConfig

_LETTER_VECTORS = {
    "L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0),
}


def orientation_matrix(code: str) -> np.ndarray:
    """Direction matrix (columns = LPS unit vectors of array axes) of a code like 'RAS'."""
    m = np.zeros((3, 3))
    for a, letter in enumerate(code.upper()):
        axis, sign = _LETTER_VECTORS[letter]
        m[axis, a] = sign
    return m


def model_direction(direction: np.ndarray, cfg: InputConfig) -> np.ndarray:
    """Direction matrix of the model grid for a CT direction matrix (3, 3)."""
    target = orientation_matrix(cfg.orientation)
    if cfg.reorient == "axis_aligned":
        return target
    dots = target.T @ np.asarray(direction, dtype=float)  # [target axis, CT axis]
    best = max(permutations(range(3)), key=lambda p: sum(abs(dots[a, p[a]]) for a in range(3)))
    out = np.empty((3, 3))
    for a in range(3):
        b = best[a]
        out[:, a] = direction[:, b] * (1.0 if dots[a, b] >= 0 else -1.0)
    return out


def model_grid(geometry: Geometry, cfg: InputConfig, margin_voxels: int = 1,
               shift_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Geometry:
    """The model-resolution grid covering a CT grid.

    Parameters
    ----------
    geometry : Geometry
        The CT grid.
    cfg : InputConfig
    margin_voxels : int
        Extra model voxels on each side.
    shift_voxels : tuple of 3 float
        The grid moved along its own axes by these fractions of a model voxel (same
        shape). A shift in [0, 1) per axis keeps every CT voxel centre covered with
        ``margin_voxels >= 1``.
    """
    d_new = model_direction(geometry.direction, cfg)
    spacing = np.asarray(cfg.spacing_mm, dtype=float)
    n = np.asarray(geometry.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])],
                       dtype=float)
    pts = geometry.index_to_physical(corners)
    coords = pts @ d_new  # coordinate along each model axis, mm
    lo = coords.min(axis=0)
    hi = coords.max(axis=0)
    size = np.ceil((hi - lo) / spacing - 1e-6).astype(int) + 1 + 2 * margin_voxels
    origin_coords = lo - margin_voxels * spacing + np.asarray(shift_voxels, float) * spacing
    origin = d_new @ origin_coords
    return Geometry(tuple(int(s) for s in size), tuple(spacing), tuple(origin), d_new)


def resample(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    interpolator: str = "linear",
    default_value: float = 0.0,
    output_dtype: Any = np.float32,
) -> np.ndarray:
    """Resample an array from one grid onto another (physical space preserved).

    Parameters
    ----------
    array : np.ndarray, (n0, n1, n2)
        Values on ``source`` (ITK index order).
    source, target : Geometry
    interpolator : {'linear', 'nearest'}
    default_value : float
        Value for target voxels outside the source grid.
    output_dtype : numpy dtype
        float32 (linear) or an integer type (nearest).

    Returns
    -------
    np.ndarray, target.shape
        ITK index order (a Fortran-ordered view of SimpleITK's buffer; no extra copy).
    """
    import SimpleITK as sitk

    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolator]
    out_type = {
        np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.uint8): sitk.sitkUInt8,
        np.dtype(np.int16): sitk.sitkInt16, np.dtype(np.uint16): sitk.sitkUInt16,
        np.dtype(np.int32): sitk.sitkInt32,
    }[np.dtype(output_dtype)]
    src = sitk_from_array(array, source)
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in target.shape])
    f.SetOutputSpacing(target.spacing_mm)
    f.SetOutputOrigin(target.origin_mm)
    f.SetOutputDirection(tuple(np.asarray(target.direction).ravel()))
    f.SetInterpolator(interp)
    f.SetDefaultPixelValue(float(default_value))
    f.SetOutputPixelType(out_type)
    out = f.Execute(src)
    del src
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def normalize_hu(hu: np.ndarray, cfg: InputConfig) -> np.ndarray:
    """Clip HU to ``cfg.hu_window`` and map linearly to ``cfg.normalized_range`` (float32)."""
    lo, hi = cfg.hu_window
    a, b = cfg.normalized_range
    out = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    out -= np.float32(lo)
    out *= np.float32((b - a) / (hi - lo))
    out += np.float32(a)
    return out


def prepare_input(ct: CTImage, cfg: InputConfig,
                  shift_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0)
                  ) -> tuple[np.ndarray, Geometry]:
    """Network input on the model grid (moved by ``shift_voxels``, see
    :func:`model_grid`).

    Returns
    -------
    x : np.ndarray of float32, grid.shape
        Windowed, normalised CT on the model grid (ITK index order).
    grid : Geometry
        The model grid (:func:`model_grid`).
    """
    grid = model_grid(ct.geometry, cfg, shift_voxels=shift_voxels)
    hu = resample(ct.hu, ct.geometry, grid, "linear", default_value=cfg.hu_window[0])
    return normalize_hu(hu, cfg), grid


#: Margin around the body's bounding box when the model grid is cropped to it, mm:
#: a few model voxels of air around the skin, as the network sees at the body's edge.
#: This project's choice, not validated.
BODY_BOX_MARGIN_MM = 10.0


def body_box(ct: CTImage, margin_mm: float = BODY_BOX_MARGIN_MM
             ) -> tuple[slice, slice, slice] | None:
    """Index box of every CT voxel above :data:`CTMuscleBoneLib.body.BODY_HU`, widened.

    The box holds the body and whatever else is denser than air (table, phantom): only
    air is left out, where the model predicts background. One comparison over the
    volume and three projections; no morphology.

    Parameters
    ----------
    ct : CTImage
    margin_mm : float
        Widening on each side (clipped to the volume).

    Returns
    -------
    tuple of 3 slices, or None
        None when no voxel is above the threshold or the box is the whole volume.
    """
    from ..body import BODY_HU

    fg = np.asarray(ct.hu) > BODY_HU
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(fg.any(axis=other))
        if idx.size == 0:
            return None
        pad = int(np.ceil(margin_mm / ct.geometry.spacing_mm[axis]))
        box.append(slice(max(int(idx[0]) - pad, 0),
                         min(int(idx[-1]) + pad + 1, ct.geometry.shape[axis])))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, ct.geometry.shape, strict=True)):
        return None
    return tuple(box)


def crop_geometry(geometry: Geometry, box: tuple[slice, slice, slice]) -> Geometry:
    """The sub-grid of ``geometry`` covering the index box ``box`` (same physical space)."""
    lo = np.array([b.start for b in box], dtype=float)
    return Geometry(tuple(b.stop - b.start for b in box), geometry.spacing_mm,
                    tuple(geometry.index_to_physical(lo)), geometry.direction)


def labels_to_grid(labels: LabelMap, grid: Geometry) -> np.ndarray:
    """A label map resampled (nearest neighbour) onto a grid, e.g. the model grid (int16)."""
    arr = np.asarray(labels.array)
    dtype = np.uint8 if arr.min() >= 0 and arr.max() <= 255 else np.int16
    return resample(arr.astype(dtype, copy=False), labels.geometry, grid, "nearest", 0, dtype)
