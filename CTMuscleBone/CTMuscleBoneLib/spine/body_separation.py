"""Separate the vertebral body from the posterior elements of a whole-vertebra label.

Segmentations (TotalSegmentator, the CTMuscleBone model, the phantoms) label each
vertebra as one structure: body plus pedicles, lamina and processes. The QCT ROI
belongs in the body only, so the body is cut off at the narrowest part behind it,
the pedicles.

Method (all in physical LPS millimetres, so independent of the voxel grid):

1. A vertebra frame: the superior axis ``s`` (given, e.g. from the neighbouring
   vertebrae, else the patient superior axis), the posterior axis ``p`` (patient
   posterior made orthogonal to ``s``) and the left axis ``l = p x s``.
2. The cross-sectional area profile ``A(t)`` of the label along ``p``: voxels binned
   by their position ``t`` along ``p`` (bin = the voxel's extent along ``p``),
   ``A = count x voxel volume / bin width`` (mm^2).
3. The body is the anterior block: the peak area is searched in the anterior 45 % of
   the label's antero-posterior length (the body is about 30-35 mm of a 70-90 mm
   vertebra); the body ends where ``A`` first falls below half that peak (the posterior
   wall; the pedicles carry only about a fifth of the body's section). A label
   without posterior elements keeps nearly all of it.
4. Body centre and half-sizes from its walls along each frame axis, a wall being where
   the body's area profile along that axis reaches a quarter of its peak (robust to
   stray voxels and osteophytes; for a box-like solid this is the true wall).

The split threshold (50 % of the peak area) and the 45 % search window are this
project's defaults, checked on the synthetic vertebrae and on one real
TotalSegmentator case; they are not from a publication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..image import Geometry

#: Fraction of the peak body area below which the body is considered ended (project
#: default, see module docstring).
SPLIT_AREA_FRACTION = 0.5
#: Anterior fraction of the label's AP length searched for the body's peak area.
BODY_SEARCH_FRACTION = 0.45
#: Largest bin of the area profiles, mm: each voxel is spread over k^3 points so that
#: the profile is that of the voxels' volume, and its bins are at most this wide along
#: any frame axis (binning voxel centres in bins of a voxel's extent made the walls and
#: the split plane depend on the grid's orientation: an oblique voxel's extent along an
#: axis is up to sqrt(3) x its size).
PROFILE_BIN_MM = 1.0
#: Fraction of the peak area at which a body wall is placed (project default, see
#: :func:`robust_walls`).
WALL_AREA_FRACTION = 0.25


def voxel_extent_mm(geometry: Geometry, axes: np.ndarray) -> np.ndarray:
    """Extent (mm) of one voxel projected on each column of ``axes`` (3, 3) -> (3,)."""
    scaled = geometry.direction * np.asarray(geometry.spacing_mm)[None, :]  # (3, 3)
    return np.abs(axes.T @ scaled).sum(axis=1)


def subvoxel_factor(geometry: Geometry, axes: np.ndarray) -> int:
    """Sub-voxel points per voxel edge for the area profiles along ``axes`` (3, 3):
    enough that their spacing along each axis is at most :data:`PROFILE_BIN_MM`."""
    return max(1, int(np.ceil(float(voxel_extent_mm(geometry, axes).max()) / PROFILE_BIN_MM)))


def _subvoxel_points(index: np.ndarray, geometry: Geometry, centroid: np.ndarray,
                     axes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame coordinates (N k^3, 3) of k^3 points evenly filling each voxel, relative to
    ``centroid``, and the row of ``index`` each belongs to (N k^3,)."""
    f = (np.arange(k) + 0.5) / k - 0.5
    offs = np.stack(np.meshgrid(f, f, f, indexing="ij"), axis=-1).reshape(-1, 3)
    scaled = geometry.direction * np.asarray(geometry.spacing_mm)[None, :]
    centres = (geometry.index_to_physical(index) - centroid) @ axes  # (N, 3)
    offs_local = (offs @ scaled.T) @ axes  # (k^3, 3)
    pts = (centres[:, None, :] + offs_local[None, :, :]).reshape(-1, 3)
    return pts, np.repeat(np.arange(index.shape[0]), offs.shape[0])


def vertebra_axes(superior: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal frame (3, 3), columns (left, posterior, superior) in LPS.

    Parameters
    ----------
    superior : np.ndarray, (3,), optional
        Superior axis of the vertebra (normalised here); default patient superior.
    """
    s = np.array([0.0, 0.0, 1.0]) if superior is None else np.asarray(superior, dtype=float)
    s = s / np.linalg.norm(s)
    p = np.array([0.0, 1.0, 0.0]) - s[1] * s
    if np.linalg.norm(p) < 0.3:
        raise InputError("The vertebra's superior axis points antero-posteriorly; the spine "
                         "axis estimate is implausible. Check the vertebra labels.")
    p = p / np.linalg.norm(p)
    return np.column_stack([np.cross(p, s), p, s])


@dataclass
class BodySeparation:
    """A vertebral body cut from its vertebra label.

    Attributes
    ----------
    axes : np.ndarray, (3, 3)
        Columns: left, posterior, superior unit vectors (LPS) of the vertebra frame.
    centre_mm : np.ndarray, (3,)
        LPS centre of the body (mid-range along each frame axis), mm.
    body_index : np.ndarray of int, (M, 3)
        Voxel indices of the body.
    body_local_mm : np.ndarray, (M, 3)
        Body voxel centres in the frame, relative to ``centre_mm`` (u left, v posterior,
        w superior), mm.
    half_width_mm, half_depth_mm, half_height_mm : float
        Half-sizes of the body along left, posterior and superior axes, mm.
    voxel_extent_mm : np.ndarray, (3,)
        One voxel's extent along the three frame axes, mm.
    n_label_voxels, n_posterior_voxels : int
        Voxels in the whole label and in the part cut off as posterior elements.
    profile_t_mm, profile_area_mm2 : np.ndarray, (K,)
        The AP area profile (bin centres relative to the label centroid, areas).
    grid_direction : np.ndarray, (3, 3)
        The voxel grid's direction matrix (columns: LPS unit vectors of array axes).
    """

    axes: np.ndarray
    centre_mm: np.ndarray
    body_index: np.ndarray
    body_local_mm: np.ndarray
    half_width_mm: float
    half_depth_mm: float
    half_height_mm: float
    voxel_extent_mm: np.ndarray
    n_label_voxels: int
    n_posterior_voxels: int
    profile_t_mm: np.ndarray
    profile_area_mm2: np.ndarray
    grid_direction: np.ndarray

    @property
    def body_points_mm(self) -> np.ndarray:
        """LPS positions (M, 3) of the body voxel centres, mm."""
        return self.centre_mm + self.body_local_mm @ self.axes.T


def area_profile(
    t_mm: np.ndarray, bin_mm: float, voxel_volume_mm3: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-sectional area along one axis.

    Parameters
    ----------
    t_mm : np.ndarray, (N,)
        Positions of the voxel centres along the axis, mm.
    bin_mm : float
        Bin width, mm (normally the voxel's extent along the axis).
    voxel_volume_mm3 : float

    Returns
    -------
    edges : np.ndarray, (K + 1,)
    centres : np.ndarray, (K,)
    area_mm2 : np.ndarray, (K,)
    """
    edges, counts = binned_counts(t_mm, bin_mm)
    return edges, 0.5 * (edges[:-1] + edges[1:]), counts * voxel_volume_mm3 / bin_mm


def binned_counts(t_mm: np.ndarray, bin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges (K + 1,) and voxel counts (K,) along one axis, bins of ``bin_mm`` from
    half a bin below the lowest position (the binning of :func:`area_profile`)."""
    lo = float(t_mm.min()) - bin_mm / 2.0
    n = max(1, int(np.ceil((float(t_mm.max()) + bin_mm / 2.0 - lo) / bin_mm)))
    edges = lo + bin_mm * np.arange(n + 1)
    counts = np.bincount(np.clip(((t_mm - lo) / bin_mm).astype(int), 0, n - 1), minlength=n)
    return edges, counts


def robust_walls(x_mm: np.ndarray, bin_mm: float, voxel_volume_mm3: float) -> tuple[float, float]:
    """Positions (mm) of the two walls of a solid along one axis.

    A wall is where the cross-sectional area profile (see :func:`area_profile`) first
    reaches :data:`WALL_AREA_FRACTION` of its peak, seen from outside, interpolated
    linearly inside the bin; a few stray voxels (label noise, osteophytes) beyond the
    wall therefore do not move it.

    Parameters
    ----------
    x_mm : np.ndarray, (N,)
        Positions of the voxel centres along the axis, mm.
    bin_mm, voxel_volume_mm3 : float

    Returns
    -------
    (lower, upper) : tuple of float
    """
    edges, _, area = area_profile(x_mm, bin_mm, voxel_volume_mm3)
    level = WALL_AREA_FRACTION * float(area.max())
    above = np.nonzero(area >= level)[0]
    i, j = int(above[0]), int(above[-1])
    # the bin that first reaches the level contributes the fraction of it above the level
    f_lo = 1.0 - min(1.0, level / area[i]) if i > 0 else 1.0
    f_hi = 1.0 - min(1.0, level / area[j]) if j < area.size - 1 else 1.0
    lower = float(edges[i + 1] - f_lo * bin_mm) if i > 0 else float(edges[0])
    upper = float(edges[j] + f_hi * bin_mm) if j < area.size - 1 else float(edges[-1])
    return lower, upper


def separate_body(
    mask: np.ndarray, geometry: Geometry, superior_axis: np.ndarray | None = None
) -> BodySeparation:
    """Cut the vertebral body from a whole-vertebra mask (see module docstring).

    Parameters
    ----------
    mask : np.ndarray of bool, (n0, n1, n2)
        The vertebra label on the grid of ``geometry``.
    geometry : Geometry
    superior_axis : np.ndarray, (3,), optional
        LPS superior axis of this vertebra; default patient superior.

    Returns
    -------
    BodySeparation

    Raises
    ------
    InputError
        When the mask is empty.
    """
    index = np.argwhere(mask)
    if index.shape[0] == 0:
        raise InputError("The vertebra label is empty; nothing to measure.")
    axes = vertebra_axes(superior_axis)
    ext = voxel_extent_mm(geometry, axes)
    points = geometry.index_to_physical(index)
    centroid = points.mean(axis=0)
    local = (points - centroid) @ axes  # (N, 3): u, v, w
    t = local[:, 1]
    # profiles of the voxels' volume (sub-voxel points), not of their centres only
    k = subvoxel_factor(geometry, axes)
    sub_local, sub_of = _subvoxel_points(index, geometry, centroid, axes, k)
    sub_bins = ext / k
    sub_volume = geometry.voxel_volume_mm3 / k**3
    edges, centres, area = area_profile(sub_local[:, 1], float(sub_bins[1]), sub_volume)

    length = float(edges[-1] - edges[0])
    window = centres <= edges[0] + max(BODY_SEARCH_FRACTION * length, 2.0 * ext[1])
    i_peak = int(np.argmax(np.where(window, area, -1.0)))
    peak = float(area[i_peak])
    below = np.nonzero(area[i_peak:] < SPLIT_AREA_FRACTION * peak)[0]
    t_split = float(edges[i_peak + below[0]]) if below.size else float(edges[-1])

    in_body = t < t_split
    body_local = local[in_body]
    sub_body = sub_local[in_body[sub_of]]
    lo, hi = np.empty(3), np.empty(3)
    for ax in range(3):
        lo[ax], hi[ax] = robust_walls(sub_body[:, ax], float(sub_bins[ax]), sub_volume)
    hi[1] = min(hi[1], t_split)  # posterior wall at the split plane at most
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    return BodySeparation(
        axes=axes,
        centre_mm=centroid + axes @ mid,
        body_index=index[in_body],
        body_local_mm=body_local - mid,
        half_width_mm=float(half[0]),
        half_depth_mm=float(half[1]),
        half_height_mm=float(half[2]),
        voxel_extent_mm=ext,
        n_label_voxels=int(index.shape[0]),
        n_posterior_voxels=int((~in_body).sum()),
        profile_t_mm=centres,
        profile_area_mm2=area,
        grid_direction=geometry.direction,
    )
