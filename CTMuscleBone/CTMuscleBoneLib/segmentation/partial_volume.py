"""Partial volumes of a label map on a coarser grid: the fraction of each model voxel
that each structure fills.

A model that runs on a coarser grid than the CT can at best know these fractions. They
serve twice: as the perfect model of :mod:`.grid_ceiling`, and as soft training targets
(:mod:`.training.prepare`, ``target='partial_volume'``), which teach a network the
sub-voxel boundaries that the probability resampling of :func:`.inference.argmax_on_grid`
can bring back to the CT grid, where nearest-neighbour targets teach it a staircase.

A model voxel averages a box of its own size; the box is replaced by the centred
Gaussian of the same variance (sigma = model spacing / sqrt(12) along each CT axis,
:func:`partial_volume_sigma`) on the CT grid, sampled at the model voxel centres by
linear interpolation. Both steps are linear, so the fractions of all label values
(background included) sum to 1 at every model voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..image import Geometry, LabelMap
from .preprocess import crop_geometry, resample


def partial_volume_sigma(ct_spacing_mm: np.ndarray, ct_direction: np.ndarray,
                         model_spacing_mm: np.ndarray, model_direction: np.ndarray
                         ) -> tuple[float, ...]:
    """Gaussian sigma (CT voxels per CT axis) of a model voxel's partial-volume window.

    A model voxel averages a box of its own size; the box is replaced by the centred
    Gaussian of the same variance (sigma = width / sqrt(12)), which, unlike a box of a
    whole number of CT voxels, has no half-voxel shift when the ratio of the spacings
    rounds to an even number, and follows non-integer ratios.

    Parameters
    ----------
    ct_spacing_mm, model_spacing_mm : (3,) mm
    ct_direction, model_direction : (3, 3)
        Direction cosines as columns (the :class:`~CTMuscleBoneLib.image.Geometry`
        convention).

    Returns
    -------
    tuple of 3 float
        Model spacing along each CT axis (projected: exact for the axis-aligned and
        permuted grids of ``reorient='nearest_axis'``) / sqrt(12), in CT voxels.
    """
    along = np.abs(np.asarray(ct_direction).T @ np.asarray(model_direction)) @ np.asarray(
        model_spacing_mm, float)
    return tuple(float(a / s / np.sqrt(12.0)) for a, s in zip(along, ct_spacing_mm,
                                                               strict=True))


def partial_volumes(labels: LabelMap, grid: Geometry, values: Sequence[int]) -> np.ndarray:
    """Fraction of each model voxel filled by each label value.

    Parameters
    ----------
    labels : LabelMap
        Label map on the CT grid, shape (n0, n1, n2).
    grid : Geometry
        The model grid (shape (m0, m1, m2)), e.g. :func:`.preprocess.model_grid`.
    values : sequence of int
        Label values, one output channel each; 0 (background) takes the rest: every
        voxel that no other listed value holds, and the space outside the CT. A value
        absent from the map gets fractions 0.

    Returns
    -------
    np.ndarray float32, (len(values), m0, m1, m2)
        Fractions in [0, 1]; over all values they sum to 1 at every voxel when
        ``values`` holds 0 and every value of the map (within float rounding).
    """
    from scipy import ndimage

    geo = labels.geometry
    arr = np.asarray(labels.array)
    sigma = partial_volume_sigma(np.asarray(geo.spacing_mm), np.asarray(geo.direction),
                                 np.asarray(grid.spacing_mm), np.asarray(grid.direction))
    # each structure is smoothed inside its bounding box grown by the kernel's reach
    # (scipy truncates at 3 sigma) and a margin: outside it the smoothed mask is 0, so
    # the result equals smoothing the whole CT grid, at a fraction of the cost
    reach = [int(3.0 * s + 0.5) + 2 for s in sigma]
    boxes = ndimage.find_objects(arr) if arr.size and arr.max() > 0 else []
    out = np.zeros((len(values), *grid.shape), np.float32)
    for i, v in enumerate(values):
        if v == 0 or v > len(boxes) or boxes[v - 1] is None:
            continue
        box = tuple(slice(max(0, b.start - r), min(n, b.stop + r))
                    for b, r, n in zip(boxes[v - 1], reach, arr.shape, strict=True))
        m = ndimage.gaussian_filter((arr[box] == v).astype(np.float32), sigma,
                                    mode="nearest", truncate=3.0)
        out[i] = resample(m, crop_geometry(geo, box), grid, "linear", 0.0)
    np.clip(out, 0.0, 1.0, out=out)
    if 0 in values:  # the rest: background, unlisted structures, outside the CT
        k = list(values).index(0)
        out[k] = np.clip(1.0 - out.sum(axis=0), 0.0, 1.0)
    return out
