"""The patient's body in a CT: one threshold and one mask used everywhere.

Used by phantomless calibration (reference tissues are sampled inside the body), by the
calibration-phantom search (the phantom lies outside it) and by the segmentation
outputs (uncertainty maps are stored and shown inside the body only).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Lowest HU of body tissue: between air (-1000) and fat (about -100); lung and bowel gas
#: inside the body are below it and are filled in as holes.
BODY_HU = -300.0


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The body: the largest connected region above :data:`BODY_HU`, holes filled.

    Parameters
    ----------
    hu : np.ndarray, (n0, n1, n2)
        CT values in HU.

    Returns
    -------
    np.ndarray of bool, (n0, n1, n2)
        False everywhere when no voxel is above the threshold. The table, the
        calibration phantom and other objects not connected to the body are outside.
    """
    fg = np.asarray(hu) > BODY_HU
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
    body = lab == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(body)
