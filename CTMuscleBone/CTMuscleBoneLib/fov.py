"""The field of view: which image faces a structure touches (one rule for every module).

A structure that touches a face of the voxel grid is cut by the field of view: its
volume, mass and density are those of the visible part only. Faces are named in
patient terms (superior, inferior, left, right, anterior, posterior) from the image
direction, so any storage order, sign or obliquity gives the same names.

**Padding.** Scanners store the voxels outside the reconstructed region (the circular
reconstruction field of view of an axial CT, or the corners of an oblique reformat)
with a padding value far below air: typically -3024 HU, sometimes -2048 or -2000 HU.
Those voxels are outside the field of view as much as the voxels beyond the grid: a
structure with a voxel next to one (6-neighbourhood) is cut by the field of view
exactly as one on a face of the grid, and the face is named the same way (the
padding neighbour at index ``+1`` along array axis ``a`` is the face at the last
index of ``a``). :func:`outside_fov` finds the padding voxels (one pass over the CT,
kept for the array); every function below takes them as ``outside``. A labelled
voxel that is itself padding is not tissue: :func:`inside_fov` drops it before
volumes or HU statistics are taken.
"""

from __future__ import annotations

import weakref

import numpy as np
from scipy import ndimage

from .image import Geometry, mask_bounding_box

#: Voxels below this HU are padding outside the reconstructed field of view, not
#: tissue. Air is -1000 HU by definition and no tissue, gas or air in a calibrated CT
#: reads below about -1100 HU (noise and beam hardening included); padding values are
#: -3024 (most vendors), -2048 or -2000 HU. -1500 HU lies far from both. (A dark
#: metal streak below it would only add a ``partial`` flag: never a wrong number.)
PADDING_HU = -1500.0

#: Patient direction of each LPS axis sign (+x left, +y posterior, +z superior).
_LPS_NAMES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))
#: Order in which face names are reported.
FACE_ORDER = ("superior", "inferior", "left", "right", "anterior", "posterior")


_CACHE: dict[int, tuple[weakref.ref, np.ndarray | None]] = {}


def outside_fov(hu: np.ndarray) -> np.ndarray | None:
    """The padding voxels of a CT (HU < :data:`PADDING_HU`), bool on its grid, or None
    when there are none.

    One pass over ``hu``; the result is kept while ``hu`` lives (keyed by the array
    object, so every module measuring the same CT shares it; an array changed in place
    after the first call is not seen again).
    """
    key = id(hu)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is hu:
        return hit[1]
    arr = np.asarray(hu)
    out: np.ndarray | None = None
    if arr.size and float(arr.min()) < PADDING_HU:
        out = arr < PADDING_HU
    try:
        ref = weakref.ref(hu, lambda _r, k=key: _CACHE.pop(k, None))
    except TypeError:  # not weak-referenceable (e.g. a memmap subclass): no cache
        return out
    _CACHE[key] = (ref, out)
    return out


def inside_fov(mask: np.ndarray, outside: np.ndarray | None,
               box: tuple[slice, ...] | None = None) -> np.ndarray:
    """``mask`` without the padding voxels (``outside``, full grid; ``mask`` cropped to
    ``box`` when given); ``mask`` itself when nothing is dropped."""
    if outside is None:
        return mask
    pad = outside if box is None else outside[box]
    if not (mask & pad).any():
        return mask
    return mask & ~pad


def _grown_box(box: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max((b.start or 0) - 1, 0),
                       min((b.stop if b.stop is not None else n) + 1, n))
                 for b, n in zip(box, shape, strict=True))


def _padding_contacts(mask: np.ndarray, outside: np.ndarray, box: tuple[slice, ...],
                      direction: np.ndarray | None = None,
                      spacing: tuple[float, ...] | None = None) -> list[tuple[int, float]]:
    """Where a voxel of ``mask`` (cropped to ``box``) has a padding 6-neighbour, as
    (array axis, sign) pairs naming the face like a grid face.

    Without ``direction``: the axes and signs of the padding neighbours themselves.
    With ``direction`` (and ``spacing``): each contact voxel's outward normal is the sum
    of the unit physical offsets to the padding voxels of its 26-neighbourhood (a
    staircase of an oblique cut then points along the cut's normal, not along a grid
    axis), reported as the (axis, sign) whose physical direction is closest to it. A
    padding voxel in ``mask`` is a contact too (the mask is cut, somewhere)."""
    big = _grown_box(box, outside.shape)
    pad = outside[big]
    off = [(b.start or 0) - g.start for b, g in zip(box, big, strict=True)]
    m = np.zeros(pad.shape, dtype=bool)
    m[tuple(slice(o, o + n) for o, n in zip(off, mask.shape, strict=True))] = mask
    in_pad = m & pad
    m &= ~pad
    if not m.any() or not pad.any():
        return [(0, -1.0)] if in_pad.any() else []
    near = m & ndimage.binary_dilation(pad)
    idx = np.argwhere(near)
    if len(idx) == 0:
        return [(0, -1.0)] if in_pad.any() else []
    if direction is None:
        found = set()
        for a in range(3):
            for step in (-1, 1):
                nb = idx.copy()
                nb[:, a] += step
                ok = (nb[:, a] >= 0) & (nb[:, a] < pad.shape[a])
                if pad[tuple(nb[ok].T)].any():
                    found.add((a, float(step)))
        return sorted(found)
    d = np.asarray(direction, dtype=float)
    sp = np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), dtype=float)
    normal = np.zeros((len(idx), 3))
    for o in np.ndindex(3, 3, 3):
        step = np.asarray(o) - 1
        if not step.any():
            continue
        nb = idx + step
        ok = np.all((nb >= 0) & (nb < np.asarray(pad.shape)), axis=1)
        hit = np.zeros(len(idx), dtype=bool)
        hit[ok] = pad[tuple(nb[ok].T)]
        v = d @ (step * sp)
        normal[hit] += v / np.linalg.norm(v)
    # the (axis, sign) whose physical direction is closest to each normal
    axes = np.concatenate([-d.T, d.T])  # rows: -d[:, 0], -d[:, 1], -d[:, 2], +d[:, 0], ...
    best = np.argmax(normal @ axes.T, axis=1)
    return sorted({(int(b % 3), 1.0 if b >= 3 else -1.0) for b in np.unique(best)})


def _face_name(direction: np.ndarray, a: int, sign: float) -> str:
    normal = sign * direction[:, a]
    k = int(np.argmax(np.abs(normal)))
    return _LPS_NAMES[k][int(normal[k] > 0)]


def border_faces(mask: np.ndarray, geometry: Geometry,
                 box: tuple[slice, ...] | None = None,
                 outside: np.ndarray | None = None) -> tuple[str, ...]:
    """Patient directions of the image faces a mask touches, e.g. ``('inferior',)``.

    Parameters
    ----------
    mask : np.ndarray of bool
        The structure on the whole grid (``geometry.shape``) or cropped to ``box``.
    geometry : Geometry
        Direction of each array axis and the full grid shape.
    box : tuple of slice, optional
        Where a cropped ``mask`` lies in the full grid.
    outside : np.ndarray of bool, optional
        Padding voxels on the full grid (:func:`outside_fov`): a voxel of ``mask`` next
        to one touches the field of view's edge in that direction.

    Returns
    -------
    tuple of str
        Each touched face named by the LPS direction closest to its outward normal
        (array axis ``a``: ``-direction[:, a]`` at index 0, ``+direction[:, a]`` at the
        last index; a padding neighbour at ``+1`` / ``-1`` along ``a`` likewise), in
        :data:`FACE_ORDER`.
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
            name = _face_name(d, a, sign)
            if name not in names:
                names.append(name)
    if outside is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape == tuple(geometry.shape):  # a whole-grid mask: look at its box only
            tight = mask_bounding_box(m)
            m, box = (m, box) if tight is None else (m[tight], tight)
        for a, sign in _padding_contacts(m, outside, box, d, geometry.spacing_mm):
            name = _face_name(d, a, sign)
            if name not in names:
                names.append(name)
    return tuple(sorted(names, key=FACE_ORDER.index))


def touches_border(mask: np.ndarray, outside: np.ndarray | None = None) -> bool:
    """True when any voxel of ``mask`` (on the whole grid) lies on a face of the grid
    or next to (or on) a padding voxel of ``outside`` (:func:`outside_fov`)."""
    if any(np.take(mask, end, axis=a).any()
           for a in range(mask.ndim) for end in (0, mask.shape[a] - 1)):
        return True
    if outside is None:
        return False
    box = mask_bounding_box(mask)
    if box is None:
        return False
    return bool(_padding_contacts(np.asarray(mask[box], dtype=bool), outside, box))


def padding_rim(outside: np.ndarray | None) -> np.ndarray | None:
    """The padding voxels and their 6-neighbours (one dilation of ``outside``, shared by
    every structure), or None when there is no padding."""
    if outside is None:
        return None
    rim = np.array(outside, dtype=bool, copy=True)
    for a in range(rim.ndim):  # six shifted ORs: the 6-neighbourhood dilation, cheaply
        lo = [slice(None)] * rim.ndim
        hi = [slice(None)] * rim.ndim
        lo[a], hi[a] = slice(0, -1), slice(1, None)
        rim[tuple(lo)] |= outside[tuple(hi)]
        rim[tuple(hi)] |= outside[tuple(lo)]
    return rim


def border_voxels(mask: np.ndarray, outside: np.ndarray | None = None) -> np.ndarray:
    """Boolean array: the voxels of ``mask`` that lie on a face of the grid (or, with
    ``outside``, on or next to a padding voxel)."""
    border = np.zeros(mask.shape, dtype=bool)
    for a in range(mask.ndim):
        idx: list[slice | int] = [slice(None)] * mask.ndim
        for end in (0, -1):
            idx[a] = end
            border[tuple(idx)] = True
    if outside is not None:
        border |= padding_rim(outside)
    return np.asarray(mask, dtype=bool) & border


def border_voxel_indices(mask: np.ndarray, outside: np.ndarray | None = None) -> np.ndarray:
    """Indices (n, 3), C order, of the voxels of ``mask`` on a face of the grid (or, with
    ``outside``, on or next to a padding voxel).

    The rows of ``np.argwhere(border_voxels(mask, outside))``; without padding they are
    read from the six faces only.
    """
    if outside is not None and outside.any():
        box = mask_bounding_box(mask)
        if box is None:
            return np.zeros((0, mask.ndim), int)
        big = _grown_box(box, mask.shape)
        m = np.asarray(mask[big], dtype=bool)
        near = m & ndimage.binary_dilation(outside[big])
        rows_pad = np.argwhere(near) + np.array([b.start for b in big])
        faces = border_voxel_indices(mask)
        found = np.concatenate([faces, rows_pad]) if len(rows_pad) else faces
        return np.unique(found, axis=0) if len(found) else found
    rows = []
    for a in range(mask.ndim):
        for end in (0, mask.shape[a] - 1):
            face = np.argwhere(np.take(mask, end, axis=a))
            rows.append(np.insert(face, a, end, axis=1))
    found = np.concatenate(rows) if rows else np.zeros((0, mask.ndim), int)
    return np.unique(found, axis=0) if len(found) else found.reshape(0, mask.ndim)


def border_label_values(array: np.ndarray, outside: np.ndarray | None = None) -> set[int]:
    """Label values present on any face of a label array (one pass over the faces) or,
    with ``outside`` (:func:`outside_fov`), on or next to a padding voxel (one dilation
    of the padding, shared by every label)."""
    faces = [np.take(array, end, axis=a) for a in range(array.ndim) for end in (0, -1)]
    values = {int(v) for f in faces for v in np.unique(f)}
    rim = padding_rim(outside)
    if rim is not None:
        arr = np.asarray(array)
        values |= {int(v) for v in np.unique(arr[rim & (arr != 0)])}
    return values


def indices_touch_border(index: np.ndarray, shape: tuple[int, ...],
                         outside: np.ndarray | None = None) -> bool:
    """True when any voxel index (rows of an ``(n, 3)`` array) lies on a face of a grid
    of ``shape`` or, with ``outside`` (:func:`outside_fov`), on or next to a padding
    voxel; False for no voxels."""
    index = np.asarray(index)
    if index.size == 0:
        return False
    if bool((index.min(axis=0) == 0).any()
            or (index.max(axis=0) == np.asarray(shape) - 1).any()):
        return True
    if outside is None:
        return False
    index = index.astype(np.intp, copy=False)
    if outside[tuple(index.T)].any():
        return True
    for a in range(index.shape[1]):  # no voxel is on a face: every neighbour is on the grid
        for step in (-1, 1):
            nb = index.copy()
            nb[:, a] += step
            if outside[tuple(nb.T)].any():
                return True
    return False
