"""Put a training case onto the model grid the model card's ``input`` describes.

The CT goes through :func:`CTMuscleBoneLib.segmentation.preprocess.prepare_input` (the
function inference uses, so the network sees the same input in training and use); the
label map is resampled onto the same grid by nearest neighbour and its label values
turned into output channel indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ... import anatomy
from ...image import CTImage, Geometry, LabelMap
from ..config import InputConfig
from ..preprocess import labels_to_grid, prepare_input


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
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    geometry: Geometry


def prepare_case(name: str, ct: CTImage, labels: LabelMap, input_cfg: InputConfig,
                 channel_keys: Mapping[int, str]) -> PreparedCase:
    """Resample, normalise and encode one case for training (see module docstring)."""
    x, grid = prepare_input(ct, input_cfg)
    lab = labels_to_grid(labels, grid)
    canon = np.zeros(lab.shape, dtype=np.int16)
    for value, key in labels.structures.items():
        canon[lab == value] = anatomy.structure(key).label_value
    target = channel_lookup(channel_keys)[np.clip(canon, 0, 255)]
    return PreparedCase(name, np.ascontiguousarray(x, dtype=np.float32)[None],
                        np.ascontiguousarray(target)[None], grid)
