"""Put a training case onto the model grid the model card's ``input`` describes.

The CT goes through :func:`CTMuscleBoneLib.segmentation.preprocess.prepare_input` (the
function inference uses, so the network sees the same input in training and use). The
target is, by ``target``:

* ``'nearest'``: the label map resampled onto the same grid by nearest neighbour, its
  label values turned into output channel indices;
* ``'partial_volume'``: besides that hard target, the fraction of every model voxel each
  output channel fills (:func:`..partial_volume.partial_volumes`), kept as uint8
  (1/255 steps) to hold many cases in memory; the hard target is then the channel with
  the largest fraction, so that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ... import anatomy
from ...image import CTImage, Geometry, LabelMap
from ..config import InputConfig
from ..partial_volume import partial_volumes
from ..preprocess import labels_to_grid, prepare_input

#: Training targets :func:`prepare_case` can build.
TARGETS = ("nearest", "partial_volume")
#: Steps of the stored fractions (uint8).
SOFT_SCALE = 255.0


def channel_lookup(channel_keys: Mapping[int, str]) -> np.ndarray:
    """Lookup table (256,) canonical label value -> output channel (0 elsewhere)."""
    lut = np.zeros(256, dtype=np.uint8)
    for ch, key in channel_keys.items():
        if ch == 0:
            continue
        lut[anatomy.structure(key).label_value] = ch
    return lut


@dataclass
class PreparedCase:
    """A case on the model grid.

    Attributes
    ----------
    image : np.ndarray float32, (1, n0, n1, n2)
        Normalised CT.
    target : np.ndarray uint8, (1, n0, n1, n2)
        Output channel index per voxel.
    geometry : Geometry
        The model grid.
    soft : np.ndarray uint8, (C, n0, n1, n2) or None
        With ``target='partial_volume'``: the fraction of each voxel that each of the C
        output channels fills, times :data:`SOFT_SCALE` (channels sum to 255 up to
        rounding); None for nearest-neighbour targets.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    geometry: Geometry
    soft: np.ndarray | None = None


def _channel_of_values(labels: LabelMap, channel_keys: Mapping[int, str]) -> dict[int, int]:
    """Label value of ``labels`` -> output channel (0 for structures the model lacks)."""
    lut = channel_lookup(channel_keys)
    return {int(v): int(lut[anatomy.structure(k).label_value]) for v, k in
            labels.structures.items()}


def soft_target(labels: LabelMap, grid: Geometry, channel_keys: Mapping[int, str]
                ) -> np.ndarray:
    """Partial volume of every output channel on ``grid``.

    Parameters
    ----------
    labels : LabelMap
        Label map on the CT grid, shape (n0, n1, n2).
    grid : Geometry
        Model grid, shape (m0, m1, m2).
    channel_keys : mapping
        Output channel -> anatomy key (channel 0 background).

    Returns
    -------
    np.ndarray uint8, (C, m0, m1, m2)
        Fractions times :data:`SOFT_SCALE`, C = max channel + 1. Structures of ``labels``
        that no channel holds count as background.
    """
    n_channels = max(channel_keys) + 1
    to_channel = _channel_of_values(labels, channel_keys)
    values = [0, *sorted(v for v, c in to_channel.items() if c > 0)]
    fractions = partial_volumes(labels, grid, values)
    out = np.zeros((n_channels, *grid.shape), np.float32)
    for i, v in enumerate(values):
        out[0 if v == 0 else to_channel[v]] += fractions[i]
    return np.rint(np.clip(out, 0.0, 1.0) * SOFT_SCALE).astype(np.uint8)


def prepare_case(name: str, ct: CTImage, labels: LabelMap, input_cfg: InputConfig,
                 channel_keys: Mapping[int, str], target: str = "nearest") -> PreparedCase:
    """Resample, normalise and encode one case for training (see module docstring)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    x, grid = prepare_input(ct, input_cfg)
    image = np.ascontiguousarray(x, dtype=np.float32)[None]
    if target == "partial_volume":
        soft = soft_target(labels, grid, channel_keys)
        hard = np.argmax(soft, axis=0).astype(np.uint8)
        return PreparedCase(name, image, np.ascontiguousarray(hard)[None], grid, soft)
    lab = labels_to_grid(labels, grid)
    to_channel = _channel_of_values(labels, channel_keys)
    lut = np.zeros(max([int(lab.max()), *to_channel]) + 1, dtype=np.uint8)
    for value, ch in to_channel.items():
        lut[value] = ch
    hard = lut[np.clip(lab, 0, None)]
    return PreparedCase(name, image, np.ascontiguousarray(hard)[None], grid)
