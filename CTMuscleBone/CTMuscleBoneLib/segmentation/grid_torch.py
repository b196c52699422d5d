"""Model-grid volumes onto the CT grid with torch, on the device that holds them (GPU).

:func:`predict` keeps its Monte-Carlo accumulators on the network's device. On a GPU
the mean softmax (C classes x the model grid: gigabytes at 1.5 mm) would otherwise be
copied to the host and interpolated there, which costs more than the network itself.
Here the target (CT) grid is visited slab by slab along its first axis; for each slab
the continuous model-grid index of every voxel centre is computed from the two grids'
affine maps and the volume is sampled there trilinearly with
:func:`torch.nn.functional.grid_sample`; only the slab's result (labels, or one float
map) goes to the host.

Conventions (the same as :func:`.preprocess.resample` with SimpleITK): a grid maps an
index ``i`` (ITK order, array axes 0, 1, 2) to the physical point
``origin + direction @ (spacing * i)``; trilinear interpolation between voxel centres;
a target point farther than half a voxel outside the source grid gets the default value
(0: background for the mean softmax, whose argmax is then channel 0). Within that
half-voxel rim the nearest edge value is used (ITK's interpolator reads the edge voxel
there too). Results agree with the SimpleITK path to float32 rounding (tested on the
CPU, every orientation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..image import Geometry

#: Elements (points x channels) sampled at once: bounds the slab's memory
#: (4 bytes each: 1 GiB).
SLAB_ELEMENTS = 1 << 28


def index_affine(source: Geometry, target: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Affine map target index -> continuous source index: ``A @ i_target + b``.

    Returns
    -------
    A : np.ndarray, (3, 3)
    b : np.ndarray, (3,)
    """
    m_s = np.asarray(source.direction, float) @ np.diag(source.spacing_mm)
    m_t = np.asarray(target.direction, float) @ np.diag(target.spacing_mm)
    inv = np.linalg.inv(m_s)
    return inv @ m_t, inv @ (np.asarray(target.origin_mm, float)
                             - np.asarray(source.origin_mm, float))


def _slab_grid(a: np.ndarray, b: np.ndarray, i0: int, i1: int, shape_t: tuple[int, ...],
               shape_s: tuple[int, ...], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample grid (1, s, n1, n2, 3) of the target slab ``i0:i1`` and its outside mask."""
    at = torch.as_tensor(a, dtype=torch.float64, device=device)
    bt = torch.as_tensor(b, dtype=torch.float64, device=device)
    idx = [torch.arange(i0, i1, device=device, dtype=torch.float64),
           torch.arange(shape_t[1], device=device, dtype=torch.float64),
           torch.arange(shape_t[2], device=device, dtype=torch.float64)]
    g0, g1, g2 = torch.meshgrid(*idx, indexing="ij")
    pts = torch.stack((g0, g1, g2), dim=-1) @ at.T + bt  # (s, n1, n2, 3) source index
    n = torch.as_tensor(shape_s, dtype=torch.float64, device=device)
    outside = ((pts < -0.5) | (pts > n - 0.5)).any(-1)
    # align_corners=True: -1 and +1 are the centres of the first and last voxels
    norm = 2.0 * pts / torch.clamp(n - 1.0, min=1.0) - 1.0
    # grid_sample's last axis is (x, y, z) = (axis 2, axis 1, axis 0) of the volume
    grid = norm.flip(-1).to(torch.float32)[None]
    return grid, outside


def _slabs(target: Geometry, channels: int) -> Iterator[tuple[int, int]]:
    per_slice = int(target.shape[1]) * int(target.shape[2]) * max(1, channels)
    step = max(1, SLAB_ELEMENTS // per_slice)
    for i0 in range(0, int(target.shape[0]), step):
        yield i0, min(i0 + step, int(target.shape[0]))


def _sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear samples (C, s, n1, n2) of ``volume`` (C, n0, n1, n2) at ``grid``."""
    return F.grid_sample(volume[None], grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[0]


def argmax_to_grid(mean_probability: torch.Tensor, source: Geometry, target: Geometry,
                   lut: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Labels on ``target``: argmax of the trilinearly interpolated mean softmax.

    Parameters
    ----------
    mean_probability : torch.Tensor of float32, (C, n0, n1, n2)
        On ``source`` (any device).
    source, target : Geometry
    lut : np.ndarray of int, (C,)
        Output channel -> label value.
    dtype : numpy integer dtype of the result

    Returns
    -------
    np.ndarray, target.shape
        Label values; 0 outside the source grid.
    """
    dev = mean_probability.device
    a, b = index_affine(source, target)
    lut_t = torch.as_tensor(np.asarray(lut), device=dev)
    out = np.zeros(target.shape, dtype=dtype)
    vol = mean_probability.float()
    for i0, i1 in _slabs(target, vol.shape[0]):
        grid, outside = _slab_grid(a, b, i0, i1, target.shape, vol.shape[1:], dev)
        ch = _sample(vol, grid).argmax(0)
        lab = lut_t[ch]
        lab[outside] = 0
        out[i0:i1] = lab.cpu().numpy().astype(dtype, copy=False)
    return out


def map_to_grid(volume: torch.Tensor, source: Geometry, target: Geometry,
                default_value: float = 0.0) -> np.ndarray:
    """One float map (n0, n1, n2) on ``source`` resampled trilinearly onto ``target``.

    Returns
    -------
    np.ndarray of float32, target.shape
        ``default_value`` outside the source grid.
    """
    dev = volume.device
    a, b = index_affine(source, target)
    out = np.empty(target.shape, dtype=np.float32)
    vol = volume.float()[None]
    for i0, i1 in _slabs(target, 1):
        grid, outside = _slab_grid(a, b, i0, i1, target.shape, vol.shape[1:], dev)
        v = _sample(vol, grid)[0]
        v[outside] = default_value
        out[i0:i1] = v.cpu().numpy()
    return out
