"""Parallel-beam line integrals of a voxel volume in an arbitrary orthonormal frame.

Shared by the femur's DXA-view projection (CT-aBMD,
:mod:`CTMuscleBoneLib.femur.dxa_projection`) and the antero-posterior areal density of a
whole vertebra (DXA-like aBMD, :mod:`.abmd`): the volume is interpolated trilinearly at
points along each ray (``step_mm`` apart) and summed x step, which conserves the
integral of the volume (sum of the projection x pixel area = sum of voxels x voxel
volume, up to the sampling error of the ray grid).

Pixel ``[i, k]`` of the image is the ray
``origin_mm + i * pixel_mm * e_row + k * pixel_mm * e_col + t * e_beam``,
``t`` from ``t_range_mm[0]`` to ``t_range_mm[1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..image import Geometry

#: Largest number of sample points interpolated at once (memory bound).
_CHUNK_POINTS = 2_000_000


@dataclass(frozen=True)
class ProjectionGrid:
    """Image plane and beam of a parallel projection (all LPS, mm).

    Attributes
    ----------
    origin_mm : np.ndarray, (3,)
        Position of pixel [0, 0] at beam coordinate t = 0.
    e_row, e_col, e_beam : np.ndarray, (3,)
        Orthonormal unit vectors: image rows (first index), columns, beam.
    pixel_mm : float
    shape : tuple of int
        (n_rows, n_cols).
    t_range_mm : tuple of float
        Extent of the rays along ``e_beam`` measured from ``origin_mm``.
    """

    origin_mm: np.ndarray
    e_row: np.ndarray
    e_col: np.ndarray
    e_beam: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]
    t_range_mm: tuple[float, float]

    def pixel_coordinates_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane coordinates (row, col), each (n_rows, n_cols), of pixel centres, mm."""
        i, k = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        return i * self.pixel_mm, k * self.pixel_mm


def crop_geometry(geometry: Geometry, lo: np.ndarray, hi: np.ndarray) -> Geometry:
    """Geometry of the sub-array ``[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]``."""
    origin = geometry.index_to_physical(np.asarray(lo, dtype=float)[None, :])[0]
    return Geometry(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)),
                    geometry.spacing_mm, tuple(float(v) for v in origin), geometry.direction)


def project(volume: np.ndarray, geometry: Geometry, grid: ProjectionGrid,
            step_mm: float | None = None, reduce: str = "sum") -> np.ndarray:
    """Line integral (or maximum) of ``volume`` along every ray of ``grid``.

    Parameters
    ----------
    volume : np.ndarray, (n0, n1, n2)
        Values on the grid of ``geometry`` (outside the array: 0).
    geometry : Geometry
    grid : ProjectionGrid
    step_mm : float, optional
        Sampling step along the beam; default half the smallest voxel spacing, at most
        0.5 mm.
    reduce : {'sum', 'max'}
        'sum': integral (value x mm); 'max': the largest interpolated value on the ray.

    Returns
    -------
    np.ndarray, (n_rows, n_cols)
    """
    return project_many([(volume, reduce)], geometry, grid, step_mm)[0]


def project_many(volumes: Sequence[tuple[np.ndarray, str]], geometry: Geometry,
                 grid: ProjectionGrid, step_mm: float | None = None) -> list[np.ndarray]:
    """:func:`project` of several ``(volume, reduce)`` pairs on one grid: the sample
    points of every ray are computed once for all of them."""
    spacing = np.asarray(geometry.spacing_mm, dtype=float)
    step = step_mm or min(0.5, float(spacing.min()) / 2.0)
    ts = np.arange(grid.t_range_mm[0], grid.t_range_mm[1] + step / 2.0, step)
    to_index = np.linalg.inv(geometry.direction * spacing[None, :])
    base = to_index @ (grid.origin_mm - np.asarray(geometry.origin_mm, dtype=float))
    a_r = to_index @ grid.e_row * grid.pixel_mm
    a_c = to_index @ grid.e_col * grid.pixel_mm
    a_t = to_index @ grid.e_beam
    nr, nc = grid.shape
    outs = [np.zeros((nr, nc)) for _ in volumes]
    vols = [np.asarray(v, dtype=np.float32) for v, _ in volumes]
    ii = np.arange(nr)
    cols_per_chunk = max(1, _CHUNK_POINTS // max(nr * ts.size, 1))
    for k0 in range(0, nc, cols_per_chunk):
        kk = np.arange(k0, min(nc, k0 + cols_per_chunk))
        c = (base[:, None, None, None] + a_r[:, None, None, None] * ii[None, :, None, None]
             + a_c[:, None, None, None] * kk[None, None, :, None]
             + a_t[:, None, None, None] * ts[None, None, None, :]).reshape(3, -1)
        for out, vol, (_, reduce) in zip(outs, vols, volumes, strict=True):
            vals = ndimage.map_coordinates(vol, c, order=1, mode="constant", cval=0.0,
                                           prefilter=False).reshape(nr, kk.size, ts.size)
            if reduce == "sum":
                out[:, kk] = vals.sum(axis=2) * step
            else:
                out[:, kk] = vals.max(axis=2)
    return outs
