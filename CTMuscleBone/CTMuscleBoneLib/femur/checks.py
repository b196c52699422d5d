"""Validity checks of a femur before its BMD is measured.

* **metal** (prosthesis, screws, nails): voxels above :data:`METAL_HU` inside the
  femur label or within :data:`METAL_MARGIN_MM` of it make every BMD value of that
  femur not measurable (metal and its streaks corrupt the HU);
* **too few voxels**: a femur label below :data:`MIN_VOLUME_CM3` is not a proximal
  femur;
* **head cut by the field of view**: femur voxels on the image border within the head
  (checked once the head is found, in :mod:`.measure`);
* **slice thickness** above :data:`MAX_SLICE_MM` gives a warning (coarse BMD);
* **cut by the field of view**: :func:`cut_edges` names the image edges (as patient
  directions) the femur touches; :mod:`.measure` flags every row of such a femur
  ``partial: cut by the field of view (...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..fov import border_faces
from ..image import CTImage, Geometry, mask_bounding_box
from ..tissue import METAL_HU
from ..validation import effective_slice_thickness_mm

#: Margin around the femur searched for metal, mm (CTMuscleBone default).
METAL_MARGIN_MM = 5.0
#: Minimum number of metal voxels to act on (isolated noise spikes are ignored).
METAL_MIN_VOXELS = 3
#: Smallest femur label volume accepted, cm3 (a femoral head alone is ~40 cm3).
MIN_VOLUME_CM3 = 20.0
#: Slice thickness above which BMD is flagged as coarse, mm (project domain notes:
#: 5 mm slices make volumes and BMD coarse).
MAX_SLICE_MM = 3.0


@dataclass
class FemurChecks:
    """Result of the checks: ``blocking`` reasons make every value not measurable."""

    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metal_voxels: int = 0


def cut_edges(mask: np.ndarray, geometry: Geometry,
              outside: np.ndarray | None = None) -> list[str]:
    """Patient directions of the image edges the mask touches (:func:`fov.border_faces`;
    with ``outside``, the padding outside the reconstructed field of view too)."""
    return list(border_faces(mask, geometry, outside=outside))


def check_femur(ct: CTImage, mask: np.ndarray, side: str) -> FemurChecks:
    """Run the checks on one femur mask (bool, ITK order, on the CT grid)."""
    out = FemurChecks()
    g: Geometry = ct.geometry
    vol = float(mask.sum()) * g.voxel_volume_cm3
    if vol == 0:
        out.blocking.append(f"femur_{side} not in the label map (no voxels)")
        return out
    if vol < MIN_VOLUME_CM3:
        out.blocking.append(
            f"femur_{side} label too small ({vol:.1f} cm3 < {MIN_VOLUME_CM3:.0f} cm3): "
            "the proximal femur is not in the image or not segmented")
        return out
    box = mask_bounding_box(mask)  # not None: the volume check above found voxels
    pad = np.ceil(METAL_MARGIN_MM / np.asarray(g.spacing_mm)).astype(int) + 1
    lo = np.maximum(np.array([b.start for b in box]) - pad, 0)
    hi = np.minimum(np.array([b.stop for b in box]) + pad, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    m = mask[sl]
    dist = ndimage.distance_transform_edt(~m, sampling=g.spacing_mm)
    metal = (np.asarray(ct.hu[sl]) > METAL_HU) & (dist <= METAL_MARGIN_MM)
    out.metal_voxels = int(metal.sum())
    if out.metal_voxels >= METAL_MIN_VOXELS:
        out.blocking.append(
            f"metal in or near the {side} femur ({out.metal_voxels} voxels > "
            f"{METAL_HU:.0f} HU within {METAL_MARGIN_MM:.0f} mm): implant or foreign body "
            "corrupts the BMD")
    st = effective_slice_thickness_mm(ct)
    if st > MAX_SLICE_MM:
        out.warnings.append(
            f"coarse: slice thickness {st:.1f} mm > {MAX_SLICE_MM:.0f} mm; BMD and landmarks "
            "are less accurate")
    return out
