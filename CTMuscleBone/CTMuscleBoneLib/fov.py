"""The field of view: which image faces a structure touches (one rule for every module).

A structure that touches a face of the voxel grid is cut by the field of view: its
volume, mass and density are those of the visible part only. Faces are named in
patient terms (superior, inferior, left, right, anterior, posterior) from the image
direction, so any storage order, sign or obliquity gives the same names.
"""

from __future__ import annotations

import numpy as np

from .image import Geometry

#: Patient direction of each LPS axis sign (+x left, +y posterior, +z superior).
_LPS_NAMES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))
#: Order in which face names are reported.
FACE_ORDER = ("superior", "inferior", "left", "right", "anterior", "posterior")


def border_faces(mask: np.ndarray, geometry: Geometry,
                 box: tuple[slice, ...] | None = None) -> tuple[str, ...]:
    """Patient directions of the image faces a mask touches, e.g. ``('inferior',)``.

    Parameters
    ----------
    mask : np.ndarray of bool
        The structure on the whole grid (``geometry.shape``) or cropped to ``box``.
    geometry : Geometry
        Direction of each array axis and the full grid shape.
    box : tuple of slice, optional
        Where a cropped ``mask`` lies in the full grid.

    Returns
    -------
    tuple of str
        Each touched face named by the LPS direction closest to its outward normal
        (array axis ``a``: ``-direction[:, a]`` at index 0, ``+direction[:, a]`` at the
        last index), in :data:`FACE_ORDER`.
    """
    if box is None:
        box = tuple(slice(0, n) for n in mask.shape)
    d = np.asarray(geometry.direction, dtype=float)
    names: list[str] = []
    for a in range(3):
        start = box[a].start or 0
        stop = box[a].stop if box[a].stop is not None else geometry.shape[a]
        for at_face, end, sign in ((start == 0, 0, -1.0),
                                   (stop == geometry.shape[a], mask.shape[a] - 1, 1.0)):
            if not at_face or not np.take(mask, end, axis=a).any():
                continue
            normal = sign * d[:, a]
            k = int(np.argmax(np.abs(normal)))
            name = _LPS_NAMES[k][int(normal[k] > 0)]
            if name not in names:
                names.append(name)
    return tuple(sorted(names, key=FACE_ORDER.index))


def touches_border(mask: np.ndarray) -> bool:
    """True when any voxel of ``mask`` (on the whole grid) lies on a face of the grid."""
    return any(np.take(mask, end, axis=a).any()
               for a in range(mask.ndim) for end in (0, mask.shape[a] - 1))


def border_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean array: the voxels of ``mask`` that lie on a face of the grid."""
    border = np.zeros(mask.shape, dtype=bool)
    for a in range(mask.ndim):
        idx: list[slice | int] = [slice(None)] * mask.ndim
        for end in (0, -1):
            idx[a] = end
            border[tuple(idx)] = True
    return np.asarray(mask, dtype=bool) & border


def border_voxel_indices(mask: np.ndarray) -> np.ndarray:
    """Indices (n, 3), C order, of the voxels of ``mask`` on a face of the grid.

    The rows of ``np.argwhere(border_voxels(mask))``, read from the six faces only.
    """
    rows = []
    for a in range(mask.ndim):
        for end in (0, mask.shape[a] - 1):
            face = np.argwhere(np.take(mask, end, axis=a))
            rows.append(np.insert(face, a, end, axis=1))
    found = np.concatenate(rows) if rows else np.zeros((0, mask.ndim), int)
    return np.unique(found, axis=0) if len(found) else found.reshape(0, mask.ndim)


def border_label_values(array: np.ndarray) -> set[int]:
    """Label values present on any face of a label array (one pass over the faces)."""
    faces = [np.take(array, end, axis=a) for a in range(array.ndim) for end in (0, -1)]
    return {int(v) for f in faces for v in np.unique(f)}


def indices_touch_border(index: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True when any voxel index (rows of an ``(n, 3)`` array) lies on a face of a grid
    of ``shape``; False for no voxels."""
    index = np.asarray(index)
    if index.size == 0:
        return False
    return bool((index.min(axis=0) == 0).any()
                or (index.max(axis=0) == np.asarray(shape) - 1).any())
