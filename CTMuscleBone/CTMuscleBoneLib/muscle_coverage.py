"""Why something is missing: the CT does not reach it, or the segmentation lacks it.

A muscle region (or vertebra) absent from the label map has two very different causes,
and the user's remedy differs: the field of view ends above it (a new scan or none),
or the CT shows it but the segmentation has no label for it (run another model, label
it by hand). The two are told apart from the CT geometry and the labelled structures
along the patient's superior axis (LPS z, whatever the storage orientation):

* **thigh** (mid-thigh): the femur is the landmark. A femur that ends inside the image,
  or runs at least :data:`MID_THIGH_FEMUR_LENGTH_MM` down from its top, means the CT
  reaches mid-thigh, so missing thigh muscles are the segmentation's; a femur cut at the
  inferior edge before that means the CT does not reach. Without a femur: a structure cut
  at the inferior edge means the field of view ends there.
* **gluteal**: the pelvis (hip bones, sacrum or femur) is the landmark.
* **vertebrae**: the labelled neighbours, and whether the lowest one is cut.

All lengths are in mm along the superior axis, measured between voxel centres.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from .anatomy import BY_KEY
from .fov import border_faces
from .image import Geometry, LabelMap

#: Femur length (mm from its top) taken to mean the CT reaches mid-thigh: about half an
#: adult femur (femur length roughly 400-500 mm in adults; approximate anatomical value,
#: not from a validated source).
MID_THIGH_FEMUR_LENGTH_MM = 200.0
#: Distance (mm) the CT must extend below the vertebra above a missing one for that
#: vertebra's mid-level to be in the image: an intervertebral disc (~10 mm) plus half a
#: lumbar body height (~15 mm); approximate anatomical value.
NEXT_VERTEBRA_MID_MM = 25.0
#: Bones that show the CT covers the pelvis.
PELVIS_KEYS = ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right")

_VERTEBRA = re.compile(r"^vertebrae?_([CTLS])(\d+)$", re.IGNORECASE)
_RANK_BASE = {"C": 0, "T": 7, "L": 19, "S": 24}


#: A structure's voxels: (mask cropped to its bounding box, the box in the full grid).
Cropped = tuple[np.ndarray, tuple[slice, ...]]


def superior_z_mm(mask: np.ndarray, geometry: Geometry,
                  box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Superior (LPS z) coordinate in mm of every voxel of ``mask``, shape (n_voxels,).

    ``mask`` is on the whole grid, or cropped to ``box`` (where it lies in the grid).
    """
    idx = np.argwhere(mask).astype(float)
    if box is not None:
        idx += [s.start or 0 for s in box]
    row = geometry.direction[2, :] * np.asarray(geometry.spacing_mm)
    return idx @ row + float(geometry.origin_mm[2])


def image_z_range_mm(geometry: Geometry) -> tuple[float, float]:
    """Lowest and highest superior coordinate (mm) of the image's voxel centres."""
    corners = np.array([[i, j, k] for i in (0, geometry.shape[0] - 1)
                        for j in (0, geometry.shape[1] - 1)
                        for k in (0, geometry.shape[2] - 1)], dtype=float)
    z = geometry.index_to_physical(corners)[:, 2]
    return float(z.min()), float(z.max())


def cut_inferior(mask: np.ndarray, geometry: Geometry,
                 box: tuple[slice, ...] | None = None) -> bool:
    """True when ``mask`` (whole grid, or cropped to ``box``) reaches the image face
    nearest the feet."""
    return "inferior" in border_faces(mask, geometry, box)


def _named_masks(labels: LabelMap) -> dict[str, Cropped]:
    """Name -> cropped mask of every non-empty label (anatomy keys and unknown names).

    One pass (``ndimage.find_objects``) finds every label's bounding box; only the boxes
    are compared, never a full-volume mask per label.
    """
    boxes = ndimage.find_objects(labels.array)

    def cropped(value: int) -> Cropped | None:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        return None if box is None else (labels.array[box] == value, box)

    out: dict[str, Cropped] = {}
    for value, key in labels.structures.items():
        if key in labels.overlays:
            full = np.asarray(labels.overlays[key], dtype=bool)
            found = ndimage.find_objects(full.astype(np.uint8))
            item = (full[found[0]], found[0]) if found else None
        else:
            item = cropped(value)
        if item is not None:
            out[key] = item
    for value, name in labels.unknown.items():
        item = cropped(value)
        if item is not None:
            out[name] = item
    return out


def _display(name: str) -> str:
    st = BY_KEY.get(name)
    return st.display_name if st is not None else name.replace("_", " ")


def _lowest_cut(masks: dict[str, Cropped], geometry: Geometry) -> str | None:
    """A structure cut at the inferior edge (a bone preferred), or None."""
    cut = [n for n, (m, box) in masks.items() if cut_inferior(m, geometry, box)]
    bones = [n for n in cut if (BY_KEY[n].group == "bone" if n in BY_KEY
                                else _VERTEBRA.match(n) is not None)]
    return (bones or cut or [None])[0]


def _fov_or_gap_reason(labels: LabelMap, level: str, landmark: str, what: str) -> str:
    """No ``landmark`` labelled: the CT does not reach ``level`` (a structure is cut at
    the inferior edge), or the segmentation lacks ``what`` (:func:`_gap_reason`)."""
    masks = _named_masks(labels)
    cut = _lowest_cut(masks, labels.geometry)
    if cut is not None:
        return (f"the CT does not reach {level} (no {landmark} labelled; the field of view "
                f"ends within {_display(cut)})")
    return _gap_reason(masks, labels.geometry, what)


def thigh_absence_reason(labels: LabelMap) -> str:
    """Why no thigh muscle is labelled: the CT does not reach mid-thigh, or the
    segmentation lacks them (see the module docstring)."""
    g = labels.geometry
    femurs = [(k, labels.mask(k)) for k in ("femur_left", "femur_right")]
    femurs = [(k, m) for k, m in femurs if m.any()]
    if femurs:
        best = None
        for key, m in femurs:
            z = superior_z_mm(m, g)
            length = float(z.max() - z.min())
            cut = cut_inferior(m, g)
            if not cut or length >= MID_THIGH_FEMUR_LENGTH_MM:
                return (f"the segmentation lacks thigh muscles (the CT reaches mid-thigh: "
                        f"{_display(key)} runs {length:.0f} mm down from its top"
                        + ("" if cut else " and ends inside the field of view") + ")")
            best = best if best is not None and best[1] >= length else (key, length)
        assert best is not None
        return (f"the CT does not reach mid-thigh (the field of view ends "
                f"{best[1]:.0f} mm below the top of the femur, which is cut at the "
                "inferior edge)")
    return _fov_or_gap_reason(labels, "mid-thigh", "femur", "thigh muscles and femurs")


def gluteal_absence_reason(labels: LabelMap) -> str:
    """Why no gluteal muscle is labelled: the CT does not reach the pelvis, or the
    segmentation lacks them."""
    shown = [k for k in PELVIS_KEYS if labels.mask(k).any()]
    if shown:
        return (f"the segmentation lacks gluteal muscles (the CT shows the pelvis: "
                f"{', '.join(_display(k) for k in shown)} labelled)")
    return _fov_or_gap_reason(labels, "the pelvis", "hip bone",
                              "gluteal muscles and hip bones")


def _gap_reason(masks: dict[str, Cropped], g: Geometry, what: str) -> str:
    """Nothing cut at the bottom: say how far the CT extends below the lowest label."""
    if not masks:
        return f"the segmentation lacks {what}"
    bottoms = {n: float(superior_z_mm(m, g, box).min()) for n, (m, box) in masks.items()}
    lowest = min(bottoms, key=bottoms.get)  # type: ignore[arg-type]
    gap = bottoms[lowest] - image_z_range_mm(g)[0]
    return (f"the segmentation lacks {what} (nothing is labelled in the lowest {gap:.0f} mm "
            f"of the CT, below {_display(lowest)}; no femur labelled to show whether it "
            "reaches mid-thigh)")


def region_absence_reasons(labels: LabelMap, regions: Iterable[str]) -> dict[str, str]:
    """Reason per missing muscle region (keys of ``MUSCLE_REGIONS``)."""
    out: dict[str, str] = {}
    for r in regions:
        if r == "thigh":
            out[r] = thigh_absence_reason(labels)
        elif r == "gluteal":
            out[r] = gluteal_absence_reason(labels)
        else:
            out[r] = f"the segmentation lacks {r.replace('_', ' ')} muscles"
    return out


def vertebra_rank(name: str) -> int | None:
    """Craniocaudal rank of a vertebra name (C1 = 0 ... L5 = 23, S1/sacrum = 24)."""
    if name == "sacrum":
        return 24
    m = _VERTEBRA.match(name)
    return _RANK_BASE[m.group(1).upper()] + int(m.group(2)) - 1 if m else None


def vertebra_absence_reason(labels: LabelMap, key: str) -> str:
    """Why vertebra ``key`` (e.g. ``vertebrae_L3``) is not labelled."""
    target = vertebra_rank(key)
    level = key.split("_", 1)[-1]
    masks = {n: m for n, m in _named_masks(labels).items() if vertebra_rank(n) is not None}
    if target is None or not masks:
        return (f"no vertebrae are labelled, so the {level} level cannot be found (label the "
                "vertebrae, e.g. TotalSegmentator 'total')")
    ranks = {n: vertebra_rank(n) for n in masks}
    above = [n for n in masks if ranks[n] < target]  # type: ignore[operator]
    below = [n for n in masks if ranks[n] > target]  # type: ignore[operator]
    g = labels.geometry
    if above:
        nearest = max(above, key=lambda n: ranks[n])  # type: ignore[arg-type, return-value]
        name = _display(nearest)
        m, box = masks[nearest]
        if cut_inferior(m, g, box):
            return f"the CT does not reach {level} (the field of view ends within {name})"
        gap = float(superior_z_mm(m, g, box).min()) - image_z_range_mm(g)[0]
        if gap < NEXT_VERTEBRA_MID_MM and not below:
            return (f"the CT does not reach the {level} mid-level (it ends {gap:.0f} mm below "
                    f"{name})")
        return f"the segmentation lacks vertebra {level} ({name} is labelled above it)"
    nearest = min(below, key=lambda n: ranks[n])  # type: ignore[arg-type, return-value]
    name = _display(nearest)
    m, box = masks[nearest]
    if "superior" in border_faces(m, g, box):
        return f"the CT does not reach {level} (the field of view starts within {name})"
    return f"the segmentation lacks vertebra {level} ({name} is labelled below it)"
