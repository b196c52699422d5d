"""L3 skeletal muscle index: muscle area and attenuation on the L3 mid-level slice.

The single-slice measure abdominal-CT users expect (Mourtzakis et al., Appl Physiol
Nutr Metab 33:997-1006, 2008; Prado 2008; Martin 2013; Derstine 2018):

* **Slice**: the axial plane (perpendicular to the patient's superior axis) through the
  centroid of vertebra L3. When one array axis is within 0.5 degrees of the superior
  axis (any permutation or flip of the storage order), the CT's own slice nearest that
  plane is used; otherwise (gantry tilt, oblique storage) the CT is resampled on that
  plane with nearest-neighbour interpolation at the finest voxel spacing.
* **Skeletal muscle area** (SMA, cm2): pixels of the skeletal-muscle mask on the slice
  whose HU lies in the lean-muscle window -29..+150 HU (Mitsiopoulos 1998), x pixel
  area. The mask is, in order of preference: a skeletal-muscle tissue mask (e.g.
  TotalSegmentator ``tissue_types`` ``skeletal_muscle``), a label named
  ``skeletal_muscle``, or the union of labelled L3-level muscles when every group of
  :data:`L3_MUSCLE_GROUPS` is labelled (psoas, erector spinae, quadratus lumborum, the
  rectus abdominis and the side of the abdominal wall). A label map with only some of
  them (TotalSegmentator ``total`` has psoas and erector spinae) gives no SMA: the area
  would be far too low for the published cut-offs.
* **SMI_L3** = SMA / height^2 (cm2/m2). **Muscle attenuation** = mean HU of the SMA
  pixels. **Psoas area** and **psoas muscle index** (cm2/m2) from the psoas labels
  (``psoas_major``, else ``iliopsoas``: at L3 the iliacus has not begun), same window.
* Cut-offs: ``data/l3_cutoffs.json`` (Prado 2008, Martin 2013, Derstine 2018, each with
  its source and whether it was verified). A category is given only with sex known (and
  BMI for Martin 2013, and for Prado 2008, whose cut-offs were made for obese patients:
  a BMI below 30 kg/m2 gives ``indeterminate``); a slice whose muscle touches the
  field-of-view edge gives values flagged ``partial`` and categories ``indeterminate``,
  as does a mask with no muscle more than :data:`ABDOMINAL_WALL_MIN_REACH_MM` in front
  of the vertebral body (the abdominal wall missing from it: e.g. a psoas and erector
  spinae mask).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError
from .fov import PADDING_HU, outside_fov
from .fov import border_faces as touched_faces
from .image import CTImage, Geometry, LabelMap
from .muscle_coverage import vertebra_absence_reason
from .results import INDETERMINATE, ResultRow
from .tissue import LEAN_HU_RANGE
from .user_files import parse_json, read_text_file

L3_KEY = "vertebrae_L3"
CUTOFFS_SCHEMA = "ctmusclebone-l3-cutoffs/1"
#: Largest angle between an array axis and the superior axis for which the CT's own
#: slices are used (otherwise the plane is resampled).
NATIVE_SLICE_MAX_ANGLE_DEG = 0.5
#: Row structure of the L3 rows.
L3_STRUCTURE = "L3_level"
#: Names of a label covering the whole abdominal wall (it satisfies both wall groups).
ABDOMINAL_WALL_WHOLE = ("abdominal_wall", "abdominal_muscles")
#: L3-level muscle groups and the label names (normalised, side suffix removed) that
#: cover each; the label-map route needs every group. The muscles are those of the L3
#: skeletal muscle area (Mourtzakis et al. 2008: psoas, erector spinae, quadratus
#: lumborum, transversus abdominis, external and internal obliques, rectus abdominis).
#: The wall is two groups, its front (rectus abdominis) and its side (obliques,
#: transversus abdominis), since a map with only one of them (e.g. rectus abdominis
#: alone) would give an area far below the cut-offs' while its anterior reach looked
#: complete. Any one of the lateral muscles counts for the side: TotalSegmentator's
#: ``abdominal_muscles`` task labels the obliques but no transversus abdominis.
L3_MUSCLE_GROUPS: dict[str, tuple[str, ...]] = {
    "psoas": ("psoas_major", "iliopsoas", "psoas"),
    "erector spinae": ("autochthon", "erector_spinae"),
    "quadratus lumborum": ("quadratus_lumborum",),
    "rectus abdominis (front of the abdominal wall)": (
        "rectus_abdominis",) + ABDOMINAL_WALL_WHOLE,
    "obliques or transversus abdominis (side of the abdominal wall)": (
        "external_oblique", "internal_oblique", "obliques", "transversus_abdominis",
        ) + ABDOMINAL_WALL_WHOLE,
}
#: Other skeletal muscles that lie on the L3 slice and join the union when labelled
#: (not required): the deep back muscles beside the erector spinae (TotalSegmentator
#: ``abdominal_muscles`` labels them ``transversospinalis``; its ``total`` task's
#: ``autochthon`` already includes them) and the latissimus dorsi, which a whole
#: skeletal-muscle mask includes too.
L3_OPTIONAL_MUSCLES: tuple[str, ...] = ("transversospinalis", "multifidus",
                                        "latissimus_dorsi")
#: Label names that are themselves a whole skeletal-muscle mask.
WHOLE_MUSCLE_NAMES = ("skeletal_muscle",)
PSOAS_KEYS: tuple[tuple[str, str], ...] = (("psoas_major_left", "psoas_major_right"),
                                          ("iliopsoas_left", "iliopsoas_right"))
#: Least distance (mm) that the muscle on the slice must reach in front of the vertebral
#: body. The rectus abdominis lies at the front of the abdominal cavity, several
#: centimetres in front of the lumbar vertebral bodies; psoas and erector spinae do not
#: reach this far (psoas lies beside the body, its front near the body's). A mask that
#: stops short has lost the abdominal wall, and its area is far below the published
#: cut-offs. Project default, unvalidated: a plausibility bound, not an anatomical
#: constant (on the L1 slice of a real lumbar CT, TotalSegmentator's whole
#: skeletal-muscle mask reaches 126 mm in front of the body, the union of its psoas and
#: erector spinae labels -30 mm: they stay behind the body's front).
ABDOMINAL_WALL_MIN_REACH_MM = 40.0
MASS_FLAG_EDGE = ("partial: the muscle on the L3 slice touches the edge of the field of "
                  "view; the area reads low")


# ---------------------------------------------------------------------------------------
# slice sampling


@dataclass
class AxialSlice:
    """Volumes sampled on one axial plane (perpendicular to the superior axis).

    Attributes
    ----------
    images : dict of str to np.ndarray, (m0, m1) each
        The sampled volumes, by the names given.
    inside : np.ndarray of bool, (m0, m1)
        Pixels inside the CT's field of view.
    pixel_area_mm2 : float
    z_mm : float
        Superior (LPS z) coordinate of the plane, mm.
    description : str
        Which slice: the CT's own (index, distance to the requested plane) or resampled.
    posterior_mm : np.ndarray, (m0, m1)
        Posterior (LPS y) coordinate of each pixel centre, mm: smaller is more anterior.
    """

    images: dict[str, np.ndarray]
    inside: np.ndarray
    pixel_area_mm2: float
    z_mm: float
    description: str
    posterior_mm: np.ndarray


def axial_slice(geometry: Geometry, point_mm: np.ndarray,
                volumes: dict[str, np.ndarray]) -> AxialSlice:
    """Sample volumes on the axial plane through ``point_mm`` (LPS, mm).

    Parameters
    ----------
    geometry : Geometry
        Grid of the volumes.
    point_mm : np.ndarray, (3,)
        A point of the plane (the L3 centroid).
    volumes : dict of str to np.ndarray, (n0, n1, n2) each
        Volumes to sample (HU, masks); masks come back as the same dtype.

    Raises
    ------
    InputError
        The plane lies outside the image.
    """
    point = np.asarray(point_mm, dtype=float)
    axis, _ = geometry.axis_for("superior")
    cos_max = math.cos(math.radians(NATIVE_SLICE_MAX_ANGLE_DEG))
    if abs(geometry.direction[2, axis]) >= cos_max:
        k_float = float(geometry.physical_to_index(point)[axis])
        k = int(round(k_float))
        if not 0 <= k < geometry.shape[axis]:
            raise InputError("The L3 mid-level plane lies outside the CT.")
        idx = np.zeros(3)
        idx[axis] = k
        z = float(geometry.index_to_physical(idx)[2])
        others = [a for a in range(3) if a != axis]
        area = float(geometry.spacing_mm[others[0]] * geometry.spacing_mm[others[1]])
        images = {n: np.take(v, k, axis=axis) for n, v in volumes.items()}
        inside = np.ones(next(iter(images.values())).shape, dtype=bool)
        gap = abs(k_float - k) * geometry.spacing_mm[axis]
        ij = np.stack(np.meshgrid(*[np.arange(geometry.shape[a], dtype=float)
                                    for a in others], indexing="ij"), axis=-1)
        sl_idx = np.empty(ij.shape[:2] + (3,))
        sl_idx[..., others[0]], sl_idx[..., others[1]] = ij[..., 0], ij[..., 1]
        sl_idx[..., axis] = k
        return AxialSlice(images, inside, area, z,
                          f"CT slice {k} along array axis {axis}, {gap:.1f} mm from the "
                          "plane through the vertebra's centroid",
                          geometry.index_to_physical(sl_idx)[..., 1])
    pixel = float(min(geometry.spacing_mm))
    corners = np.array([[i, j, k] for i in (-0.5, geometry.shape[0] - 0.5)
                        for j in (-0.5, geometry.shape[1] - 0.5)
                        for k in (-0.5, geometry.shape[2] - 0.5)])
    xy = geometry.index_to_physical(corners)[:, :2]
    xs = np.arange(xy[:, 0].min() + pixel / 2, xy[:, 0].max(), pixel)
    ys = np.arange(xy[:, 1].min() + pixel / 2, xy[:, 1].max(), pixel)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([gx, gy, np.full_like(gx, point[2])], axis=-1)
    idx = geometry.physical_to_index(pts)  # (mx, my, 3)
    shape = np.asarray(geometry.shape, dtype=float)
    inside = np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=-1)
    if not inside.any():
        raise InputError("The L3 mid-level plane lies outside the CT.")
    coords = np.moveaxis(idx, -1, 0)
    images = {}
    for n, v in volumes.items():
        cval = float(v.min()) if v.dtype != bool else 0.0
        src = v.astype(np.uint8) if v.dtype == bool else v
        s = ndimage.map_coordinates(src, coords, order=0, mode="constant", cval=cval)
        images[n] = s.astype(bool) if v.dtype == bool else s
    return AxialSlice(images, inside, pixel * pixel, float(point[2]),
                      f"CT resampled on the axial plane through the vertebra's centroid "
                      f"({pixel:g} mm pixels, nearest neighbour)", gy)


def _touches_edge(mask2d: np.ndarray, inside: np.ndarray) -> bool:
    """True when a mask pixel is next to (4-neighbour) a pixel outside the image."""
    outside = np.pad(~inside, 1, constant_values=True)
    near = ndimage.binary_dilation(outside)[1:-1, 1:-1]
    return bool(np.any(mask2d & near))


# ---------------------------------------------------------------------------------------
# muscle mask


def _base_name(name: str) -> str:
    n = "_".join(name.strip().lower().replace("-", " ").split())
    for suffix in ("_left", "_right"):
        n = n.removesuffix(suffix)
    return n


def _label_masks(labels: LabelMap, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Name -> full mask of the present labels whose base name is in ``wanted``.

    Only the wanted labels get a mask (a map can hold 100+ labels)."""
    present = set(np.unique(labels.array).tolist())
    out = {k: labels.mask(k) for v, k in labels.structures.items()
           if (v in present or k in labels.overlays) and _base_name(k) in wanted}
    for v, n in labels.unknown.items():
        if v in present and _base_name(n) in wanted:
            # two values may carry one name: the mask is their union
            out[n] = (labels.array == v) | out[n] if n in out else labels.array == v
    return out


def labelled_l3_muscle(labels: LabelMap) -> tuple[np.ndarray | None, str, list[str]]:
    """The skeletal-muscle mask a label map gives at L3.

    Returns
    -------
    mask : np.ndarray of bool (n0, n1, n2), or None when nothing relevant is labelled
    source : str
        What the mask is made of.
    missing : list of str
        L3 muscle groups with no label (empty when the mask is complete).
    """
    masks = _label_masks(labels, WHOLE_MUSCLE_NAMES + L3_OPTIONAL_MUSCLES + tuple(
        n for names in L3_MUSCLE_GROUPS.values() for n in names))
    for name, m in masks.items():
        if _base_name(name) in WHOLE_MUSCLE_NAMES:
            return m, f"label '{name}'", []
    found = [g for g, names in L3_MUSCLE_GROUPS.items()
             if any(_base_name(n) in names for n in masks)]
    missing = [g for g in L3_MUSCLE_GROUPS if g not in found]
    optional = sorted({_base_name(n) for n in masks
                       if _base_name(n) in L3_OPTIONAL_MUSCLES})
    union: np.ndarray | None = None
    for m in masks.values():
        union = m.copy() if union is None else union | m
    source = "labels: " + (", ".join(found) or "none")
    if optional:
        source += " (with " + ", ".join(n.replace("_", " ") for n in optional) + ")"
    return union, source, missing


def read_muscle_mask(path: str | os.PathLike[str], ct_geometry: Geometry) -> np.ndarray:
    """A binary skeletal-muscle mask file (nonzero = muscle) on the CT grid.

    The file must hold two values: 0 and one positive whole number v (1, or 255 as
    many tools write it; v alone is accepted too). Negative, fractional (a probability
    map) or several positive values (a label map) are refused by
    :func:`check_binary_mask_values`, naming what was found.

    TotalSegmentator ``tissue_types`` writes ``skeletal_muscle.nii.gz``. A mask on
    another grid of the same physical space is resampled (nearest neighbour) by
    :func:`CTMuscleBoneLib.io_labels.to_ct_grid`; one elsewhere is refused.

    Returns
    -------
    np.ndarray of bool, ``ct_geometry.shape``
    """
    from .io_ct import read_image
    from .io_labels import to_ct_grid

    p = Path(path)
    if not p.is_file():
        raise InputError(f"Muscle mask file not found: {p}")
    arr, geom = read_image(p)
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"Muscle mask {p.name} holds {arr.dtype} values, not a binary mask; "
                         "pass the skeletal-muscle mask (0 = background, 1 = muscle).")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"Muscle mask {p.name} holds non-finite values.")
    binary = arr != 0
    if not binary.any():
        raise InputError(f"Muscle mask {p.name} is empty (no nonzero voxel).")
    check_binary_mask_values(arr[binary], p.name)
    on_ct, _ = to_ct_grid(binary.astype(np.uint8), geom, ct_geometry,
                          f"The muscle mask {p.name}")
    return on_ct != 0


#: A mask value closer than this to an integer counts as that integer (float storage and
#: NIfTI scaling round 1 to 1.0000001); a CTMuscleBone choice.
_MASK_INTEGER_TOL = 1e-4


#: What a muscle mask should be (for the messages of :func:`check_binary_mask_values`).
MUSCLE_MASK_EXPECTED = ("the skeletal-muscle mask (0 = background, 1 = muscle, e.g. "
                        "TotalSegmentator tissue_types skeletal_muscle.nii.gz)")


def check_binary_mask_values(nonzero: np.ndarray, name: str, what: str = "Muscle mask",
                             expected: str = MUSCLE_MASK_EXPECTED) -> None:
    """Refuse a mask whose nonzero voxels are not all one positive whole number.

    A binary mask holds two values, 0 and one value v > 0 (1 as TotalSegmentator writes
    it, 255 as many image tools do). A probability map (values between 0 and 1), a CT
    (negative or fractional values) or a multi-label map (several positive values)
    passed as the mask would be read as tissue wherever it is nonzero: refused, naming
    what was found.

    Parameters
    ----------
    nonzero : np.ndarray, (n,)
        The mask's nonzero voxel values.
    name : str
        File name for the message.
    what : str
        What the file is, for the message ('Muscle mask', 'Tissue mask').
    expected : str
        What to pass instead, for the message.
    """
    lo, hi = float(nonzero.min()), float(nonzero.max())
    whole = bool(np.all(np.abs(nonzero - np.round(nonzero)) <= _MASK_INTEGER_TOL)) \
        if nonzero.dtype.kind == "f" else True
    if lo < 0:
        raise InputError(
            f"{what} {name} holds negative values (down to {lo:g}): it looks like a CT "
            f"image, not a binary mask; pass {expected}.")
    if not whole:
        if hi <= 1.0:
            raise InputError(
                f"{what} {name} holds values between 0 and 1 ({lo:g} to {hi:g}): it "
                "looks like a probability map, not a binary mask; threshold it first (e.g. "
                "probability >= 0.5 -> 1, else 0) and pass the 0/1 mask.")
        raise InputError(
            f"{what} {name} holds fractional values ({lo:g} to {hi:g}): it is not a "
            f"binary mask; pass {expected}.")
    if round(lo) != round(hi):
        values = np.unique(np.round(nonzero))
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if values.size > 8 else "")
        raise InputError(
            f"{what} {name} has {values.size + 1} distinct values (0, {shown}): it "
            f"looks like a label map, not a binary mask (0 and one value); pass "
            f"{expected}, or give the label map with --labels.")


# ---------------------------------------------------------------------------------------
# measurement


@dataclass
class L3Measure:
    """Muscle on the mid-level slice of one vertebra (L3 by default).

    Areas in cm2, attenuation in HU. A value is None when not measurable; ``reason`` /
    ``psoas_reason`` then say why (text without a tag).
    """

    level: str
    area_cm2: float | None = None
    attenuation_hu: float | None = None
    psoas_area_cm2: float | None = None
    muscle_source: str = ""
    slice_text: str = ""
    z_mm: float | None = None
    reason: str | None = None
    psoas_reason: str | None = None
    flags: list[str] = field(default_factory=list)
    psoas_flags: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return any(f.startswith("partial") for f in self.flags)


def anterior_reach_mm(sl: AxialSlice, muscle: np.ndarray) -> float | None:
    """How far the muscle reaches in front of the vertebral body on the slice, mm.

    Parameters
    ----------
    sl : AxialSlice
        With a ``"vertebra"`` image (the vertebra's mask on the slice).
    muscle : np.ndarray of bool, (m0, m1)
        Muscle pixels on the slice.

    Returns
    -------
    float or None
        The anterior border of the vertebral body (its most anterior pixel) minus the
        most anterior muscle pixel, along the patient's posterior axis (positive: the
        muscle reaches further forward); None when the slice shows no vertebra or no
        muscle.
    """
    vert = sl.images.get("vertebra")
    if vert is None or not vert.any() or not muscle.any():
        return None
    return float(sl.posterior_mm[vert].min() - sl.posterior_mm[muscle].min())


def _lean_area(sl: AxialSlice, name: str, level: str
               ) -> tuple[np.ndarray, float | None, str | None]:
    """Lean pixels of mask ``name`` on the slice, their area (cm2) or None, and why not."""
    hu = sl.images["hu"]
    lean = sl.images[name] & (hu >= LEAN_HU_RANGE[0]) & (hu <= LEAN_HU_RANGE[1])
    if not lean.any():
        return lean, None, (f"no {name} pixel ({LEAN_HU_RANGE[0]:g}..{LEAN_HU_RANGE[1]:g} "
                            f"HU) on the {level} slice")
    return lean, float(lean.sum() * sl.pixel_area_mm2 / 100.0), None


def measure_l3(ct: CTImage, labels: LabelMap, muscle_mask: np.ndarray | None = None, *,
               mask_source: str = "skeletal-muscle mask",
               level: str = L3_KEY) -> L3Measure:
    """Skeletal muscle and psoas area and attenuation on the mid-level slice of ``level``.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap
        On the CT grid; must label ``level`` (vertebra) to find the slice.
    muscle_mask : np.ndarray of bool, (n0, n1, n2), optional
        Skeletal-muscle mask on the CT grid (see :func:`read_muscle_mask`); without it
        the label map's muscles are used (see :func:`labelled_l3_muscle`).
    mask_source : str
        How the mask is described in the rows.
    level : str
        Vertebra key; other levels than L3 are for research (no cut-offs apply).
    """
    g = ct.geometry
    out = L3Measure(level=level)
    short = level.split("_", 1)[-1]
    vert = labels.mask(level)
    if not vert.any():
        out.reason = out.psoas_reason = vertebra_absence_reason(labels, level)
        return out
    ends = [f for f in touched_faces(vert, g, outside=outside_fov(ct.hu))
            if f in ("superior", "inferior")]
    if ends:
        out.reason = out.psoas_reason = (
            f"vertebra {short} is cut by the field of view ({', '.join(ends)}), so its "
            "mid-level is unknown")
        return out
    centroid = g.index_to_physical(np.argwhere(vert).mean(axis=0))
    volumes: dict[str, np.ndarray] = {"hu": ct.hu, "vertebra": vert}
    if muscle_mask is not None:
        if tuple(muscle_mask.shape) != g.shape:
            raise InputError("The skeletal-muscle mask is not on the CT grid.")
        volumes["muscle"] = np.asarray(muscle_mask, dtype=bool)
        out.muscle_source = mask_source
    else:
        union, source, missing = labelled_l3_muscle(labels)
        out.muscle_source = source
        if missing:
            out.reason = (
                f"the label map has no label of these muscles: {'; '.join(missing)}; the "
                f"{short} skeletal muscle area needs every muscle on the slice: give a "
                "skeletal-muscle mask "
                "(--muscle-mask, e.g. TotalSegmentator tissue_types skeletal_muscle)")
        elif union is not None:
            volumes["muscle"] = union
    psoas_keys = next((pair for pair in PSOAS_KEYS
                       if any(labels.mask(k).any() for k in pair)), None)
    if psoas_keys is not None:
        volumes["psoas"] = labels.mask(psoas_keys[0]) | labels.mask(psoas_keys[1])
    else:
        out.psoas_reason = "no psoas (or iliopsoas) label"
    sl = axial_slice(g, centroid, volumes)
    out.slice_text, out.z_mm = sl.description, sl.z_mm
    hu = sl.images["hu"]
    if "muscle" in sl.images:
        lean, area, why = _lean_area(sl, "muscle", short)
        if area is None:
            out.reason = why
        else:
            out.area_cm2 = area
            out.attenuation_hu = float(hu[lean].mean())
            # padding (outside the reconstructed field of view) is outside the image too
            if _touches_edge(sl.images["muscle"], sl.inside & (hu >= PADDING_HU)):
                out.flags.append(MASS_FLAG_EDGE)
            reach = anterior_reach_mm(sl, lean)
            if reach is not None and reach < ABDOMINAL_WALL_MIN_REACH_MM:
                out.flags.append(
                    f"partial: no muscle on the {short} slice lies more than "
                    f"{ABDOMINAL_WALL_MIN_REACH_MM:g} mm in front of the vertebral body "
                    f"(the most anterior: {reach:.0f} mm): the abdominal wall seems "
                    "missing from the muscle mask, so the area reads low; give a mask of "
                    "every skeletal muscle on the slice (e.g. TotalSegmentator "
                    "tissue_types skeletal_muscle)")
    if "psoas" in sl.images:
        _, area, why = _lean_area(sl, "psoas", short)
        if area is None:
            out.psoas_reason = why
        else:
            out.psoas_area_cm2 = area
            if psoas_keys is not None and psoas_keys[0].startswith("iliopsoas"):
                out.psoas_flags.append("info: iliopsoas label taken as psoas (no iliacus "
                                       "at L3)")
            if _touches_edge(sl.images["psoas"], sl.inside):
                out.psoas_flags.append(MASS_FLAG_EDGE.replace("muscle", "psoas"))
    return out


# ---------------------------------------------------------------------------------------
# cut-offs


@dataclass(frozen=True)
class L3Cutoff:
    """One published cut-off set (one quantity: 'smi' or 'attenuation').

    Attributes
    ----------
    population_bmi_at_least, population_bmi_below : float or None
        The BMI range (kg/m2) of the population the cut-offs were made for, when the
        source restricts it (Prado 2008: obese, BMI >= 30): outside it, or with the BMI
        unknown, no yes/no is given. None: no bound.
    population_bmi_source : str
        Where that range comes from.
    """

    id: str
    name: str
    quantity: str
    unit: str
    thresholds: tuple[dict[str, Any], ...]
    source: str
    verified: bool
    verification: str
    population_bmi_at_least: float | None = None
    population_bmi_below: float | None = None
    population_bmi_source: str = ""

    @property
    def needs_bmi(self) -> bool:
        return any("bmi_below" in t or "bmi_at_least" in t for t in self.thresholds)

    @property
    def has_population_bmi(self) -> bool:
        return self.population_bmi_at_least is not None or self.population_bmi_below is not None

    def population_bmi_text(self) -> str:
        """'BMI >= 30 kg/m2' (the population range, for messages)."""
        parts = []
        if self.population_bmi_at_least is not None:
            parts.append(f">= {self.population_bmi_at_least:g}")
        if self.population_bmi_below is not None:
            parts.append(f"< {self.population_bmi_below:g}")
        return "BMI " + " and ".join(parts) + " kg/m2"

    def in_population(self, bmi: float) -> bool:
        """Whether a BMI (kg/m2) lies in the population range (True when there is none)."""
        lo, hi = self.population_bmi_at_least, self.population_bmi_below
        return (lo is None or bmi >= lo) and (hi is None or bmi < hi)

    def threshold(self, sex: str, bmi: float | None) -> float | None:
        """The threshold for a sex ('M'/'F') and BMI (kg/m2); None when none applies."""
        for t in self.thresholds:
            if t["sex"] not in (sex, "any"):
                continue
            if "bmi_below" in t and (bmi is None or not bmi < t["bmi_below"]):
                continue
            if "bmi_at_least" in t and (bmi is None or not bmi >= t["bmi_at_least"]):
                continue
            return float(t["value"])
        return None


def _parse_cutoff(c: Any, where: str) -> L3Cutoff:
    """One entry of the cut-off table; ValueError/KeyError/TypeError name the problem."""
    verified = c["verified"]
    if not isinstance(verified, bool):
        raise ValueError(f"cut-off {c.get('id')!r}: \"verified\" is {json.dumps(verified)}, "
                         "not a JSON boolean; write true or false without quotes")
    lo = hi = None
    src = ""
    pop = c.get("population_bmi")
    if pop is not None:
        if not isinstance(pop, dict) or not pop.get("source"):
            raise ValueError(f"cut-off {c.get('id')!r}: \"population_bmi\" must be an object "
                             "with \"at_least\" and/or \"below\" (kg/m2) and a \"source\"")
        lo, hi = pop.get("at_least"), pop.get("below")
        for name, v in (("at_least", lo), ("below", hi)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or not 0 < v < 100):
                raise ValueError(f"cut-off {c.get('id')!r}: population_bmi.{name} must be a "
                                 "BMI in kg/m2 (a number between 0 and 100)")
        if lo is None and hi is None:
            raise ValueError(f"cut-off {c.get('id')!r}: population_bmi needs \"at_least\" "
                             "or \"below\"")
        src = str(pop["source"])
    return L3Cutoff(c["id"], c["name"], c["quantity"], c["unit"], tuple(c["thresholds"]),
                    c["source"], verified, c.get("verification", ""),
                    None if lo is None else float(lo), None if hi is None else float(hi), src)


def load_l3_cutoffs(path: str | os.PathLike[str] | None = None) -> list[L3Cutoff]:
    """Read the cut-off table (``None``: the bundled ``data/l3_cutoffs.json``).

    Each entry: ``id``, ``name``, ``quantity`` ('smi' or 'attenuation'), ``unit``,
    ``thresholds``, ``source``, ``verified`` (a JSON boolean), optional ``verification``
    and optional ``population_bmi`` (``{"at_least": 30.0, "source": ...}``: the BMI range
    of the population the cut-offs were made for; see :class:`L3Cutoff`).

    Raises
    ------
    InputError
        Invalid JSON, another schema, a missing or mistyped field (naming the file and
        the field).
    """
    if path is None:
        text = resources.files("CTMuscleBoneLib").joinpath("data/l3_cutoffs.json").read_text(
            encoding="utf-8")
        where = "l3_cutoffs.json"
    else:
        text, where = read_text_file(path, "L3 cut-off table"), str(path)
    d = parse_json(text, "L3 cut-off table", where)
    if not isinstance(d, dict) or d.get("schema") != CUTOFFS_SCHEMA:
        raise InputError(f"{where} is not an L3 cut-off table (schema {CUTOFFS_SCHEMA}).")
    out = []
    for c in d.get("cutoffs", ()):
        try:
            if c["quantity"] not in ("smi", "attenuation"):
                raise ValueError(f"unknown quantity {c['quantity']!r} (use smi or attenuation)")
            out.append(_parse_cutoff(c, where))
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"L3 cut-off table {where}: {what}; fix the file.") from None
    return out


def bmi_kg_m2(weight_kg: float | None, height_m: float | None) -> float | None:
    """Body-mass index, or None when weight or height is unknown."""
    if weight_kg is None or height_m is None:
        return None
    return weight_kg / height_m**2


def l3_rows(m: L3Measure, height_m: float | None, sex: str | None,
            weight_kg: float | None = None,
            cutoffs: list[L3Cutoff] | None = None) -> list[ResultRow]:
    """Result rows of an :class:`L3Measure`, with the cut-off categories.

    Rows (structure ``L3_level``): ``skeletal_muscle_area`` (cm2), ``muscle_attenuation``
    (HU), ``smi`` (cm2/m2), ``psoas_area`` (cm2), ``psoas_muscle_index`` (cm2/m2) and per
    cut-off ``low_smi_<id>`` / ``low_attenuation_<id>``: "yes", "no", "indeterminate"
    (values flagged partial, or a BMI outside the population a cut-off was made for:
    Prado 2008, BMI >= 30) or None (not measurable: no sex, height, or BMI where a
    cut-off depends on it or on its population range).
    """
    cutoffs = load_l3_cutoffs() if cutoffs is None else cutoffs
    short = m.level.split("_", 1)[-1]
    where = f"on the {short} mid-level slice ({m.slice_text or 'not found'})"
    lean = f"{LEAN_HU_RANGE[0]:g}..{LEAN_HU_RANGE[1]:g} HU"
    src = f"; muscle from {m.muscle_source}" if m.muscle_source else ""
    no_h = "not_measurable: no height (give --height or a DICOM PatientSize)"

    def row(q: str, v: float | None, unit: str, method: str, reason: str | None,
            flags: list[str]) -> ResultRow:
        if v is None:
            return ResultRow(L3_STRUCTURE, q, None, unit, method,
                             [f"not_measurable: {reason}", *flags])
        return ResultRow(L3_STRUCTURE, q, v, unit, method, list(flags))

    rows = [
        row("skeletal_muscle_area", m.area_cm2, "cm2",
            f"muscle pixels in {lean} x pixel area {where}{src}", m.reason, m.flags),
        row("muscle_attenuation", m.attenuation_hu, "HU",
            f"mean HU of the muscle pixels in {lean} {where}{src}", m.reason, m.flags),
    ]
    def index_row(q: str, area: float | None, reason: str | None, flags: list[str],
                  method: str) -> ResultRow:
        if area is not None and height_m is None:
            return ResultRow(L3_STRUCTURE, q, None, "cm2/m2", method, [no_h, *flags])
        value = None if area is None else area / height_m**2  # type: ignore[operator]
        return row(q, value, "cm2/m2", method, reason, flags)

    smi_row = index_row("smi", m.area_cm2, m.reason, m.flags,
                        f"{short} skeletal muscle area / height^2")
    rows.append(smi_row)
    rows.append(row("psoas_area", m.psoas_area_cm2, "cm2",
                    f"psoas pixels in {lean} x pixel area {where}", m.psoas_reason,
                    m.psoas_flags))
    rows.append(index_row("psoas_muscle_index", m.psoas_area_cm2, m.psoas_reason,
                          m.psoas_flags, f"{short} psoas area / height^2"))
    smi = smi_row.value
    if m.level != L3_KEY:
        return rows
    bmi = bmi_kg_m2(weight_kg, height_m)
    for c in cutoffs:
        value = smi if c.quantity == "smi" else m.attenuation_hu
        rows.append(_category_row(c, value, sex, bmi, m, height_m))
    return rows


def _category_row(c: L3Cutoff, value: float | None, sex: str | None, bmi: float | None,
                  m: L3Measure, height_m: float | None) -> ResultRow:
    q = f"low_{c.quantity}_{c.id}"
    label = "SMI" if c.quantity == "smi" else "muscle attenuation"
    flags = list(m.flags)
    method = f"{c.name}: {label} below the cut-off; {c.source}"

    def none(reason: str) -> ResultRow:
        return ResultRow(L3_STRUCTURE, q, None, "", method, [f"not_measurable: {reason}",
                                                             *flags])

    if value is None:
        if m.area_cm2 is None:
            return none(m.reason or f"no {label}")
        return none("no height (give --height or a DICOM PatientSize)")
    if sex not in ("M", "F"):
        return none("sex unknown (cut-offs differ by sex; give --sex)")
    if c.needs_bmi and bmi is None:
        what = "height" if height_m is None else "weight"
        return none(f"no {what} for the BMI these cut-offs depend on (give --weight / "
                    "--height or DICOM PatientWeight / PatientSize)")
    if c.has_population_bmi and bmi is None:
        what = "height" if height_m is None else "weight"
        return none(f"no {what} for the BMI that decides whether these cut-offs apply (made "
                    f"for {c.population_bmi_text()}; give --weight / --height or DICOM "
                    "PatientWeight / PatientSize)")
    cut = c.threshold(sex, bmi)
    if cut is None:
        return none(f"no {c.name} cut-off for this sex/BMI")
    if not c.verified:
        flags.append(f"unvalidated: {c.name} thresholds not verified against the primary "
                     "paper")
    who = "men" if sex == "M" else "women"
    uses_bmi = c.needs_bmi or c.has_population_bmi
    bmi_text = f", BMI {bmi:.1f}" if uses_bmi and bmi is not None else ""
    method = (f"{c.name}: {label} < {cut:g} {c.unit} ({who}{bmi_text}); {c.source}")
    outside = c.has_population_bmi and bmi is not None and not c.in_population(bmi)
    if outside:
        # the number exists but the cut-off was made for another population: no yes/no
        flags.append(f"warning: BMI {bmi:.1f} is outside the population the {c.name} "
                     f"cut-offs were made for ({c.population_bmi_text()}; "
                     f"{c.population_bmi_source}); no yes/no: use a cut-off made for this "
                     "BMI (e.g. the Martin 2013 or Derstine 2018 rows)")
    if m.partial or outside:
        return ResultRow(L3_STRUCTURE, q, INDETERMINATE, "", method, flags)
    return ResultRow(L3_STRUCTURE, q, "yes" if value < cut else "no", "", method, flags)


# ---------------------------------------------------------------------------------------
# pipeline entry


def l3_case_rows(ct: CTImage, labels: LabelMap,
                 muscle_mask: str | os.PathLike[str] | np.ndarray | None,
                 height_m: float | None, sex: str | None,
                 weight_kg: float | None) -> tuple[list[ResultRow], dict[str, Any] | None]:
    """The L3 rows of one case, for :func:`CTMuscleBoneLib.analysis.measure_case`.

    Parameters
    ----------
    muscle_mask : path, np.ndarray of bool (n0, n1, n2) on the CT grid, or None
        Skeletal-muscle mask (e.g. TotalSegmentator ``tissue_types`` skeletal_muscle).

    Returns
    -------
    rows : list of ResultRow
        Empty when there is neither a mask nor an L3 label (nothing to say at L3).
    provenance : dict or None
        What the provenance records (mask source, cut-off table).
    """
    if muscle_mask is None and not labels.mask(L3_KEY).any():
        return [], None
    mask: np.ndarray | None = None
    source = "skeletal-muscle mask"
    if isinstance(muscle_mask, np.ndarray):
        mask = np.asarray(muscle_mask) != 0
        if mask.shape != ct.geometry.shape:
            raise InputError(f"The skeletal-muscle mask has shape {mask.shape}; the CT has "
                             f"{ct.geometry.shape}.")
    elif muscle_mask is not None:
        mask = read_muscle_mask(muscle_mask, ct.geometry)
        source = f"skeletal-muscle mask {Path(muscle_mask).name}"
    m = measure_l3(ct, labels, mask, mask_source=source)
    rows = l3_rows(m, height_m, sex, weight_kg)
    prov = {"kind": "L3 muscle index", "muscle": m.muscle_source or None,
            "slice": m.slice_text or None,
            "cutoffs": [f"{c.name} ({c.quantity}; "
                        f"{'verified' if c.verified else 'not verified'})"
                        for c in load_l3_cutoffs()]}
    return rows, prov
