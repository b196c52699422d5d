"""Core image types: voxel grid geometry, CT volume and label map.

Conventions (the same as ITK / SimpleITK, and so the same as DICOM):

* Arrays are indexed in **ITK index order** ``array[i, j, k]``: axis 0 is the ITK
  x index (fastest in the file), axis 2 the slice index. Note that
  ``SimpleITK.GetArrayFromImage`` returns the reverse order ``[k, j, i]``; use
  :meth:`Geometry.from_sitk` / :func:`array_from_sitk` which transpose for you.
* Physical coordinates are millimetres in the **LPS** patient frame
  (+x towards the patient's left, +y posterior, +z superior), as in DICOM and ITK.
  NIfTI files (RAS) are converted by SimpleITK on reading.
* ``direction[:, a]`` is the unit vector (in LPS) along array axis ``a``;
  ``spacing_mm[a]`` the voxel size along that axis. The physical position of the
  centre of voxel ``idx`` is ``origin_mm + direction @ (spacing_mm * idx)``.

Measurements use these physical facts only, so they do not depend on the order or
the sign of the array axes (RAS, LPS, permuted or oblique storage give the same
numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError

#: Unit vectors of the patient frame in LPS coordinates.
PATIENT_AXES_LPS: dict[str, np.ndarray] = {
    "left": np.array([1.0, 0.0, 0.0]),
    "posterior": np.array([0.0, 1.0, 0.0]),
    "superior": np.array([0.0, 0.0, 1.0]),
}


@dataclass(frozen=True)
class Geometry:
    """Geometry of a 3-D voxel grid.

    Attributes
    ----------
    shape : tuple of int, (3,)
        Number of voxels along array axes 0, 1, 2 (ITK index order).
    spacing_mm : tuple of float, (3,)
        Voxel size along each array axis, millimetres.
    origin_mm : tuple of float, (3,)
        LPS position of the centre of voxel (0, 0, 0), millimetres.
    direction : np.ndarray, (3, 3)
        Column ``a`` is the LPS unit vector of array axis ``a``.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3:
            raise InputError(
                f"Expected a 3-D image, got {len(shape)} dimension(s): CTMuscleBone needs a "
                "volume (a stack of slices), not a single slice or a time series."
            )
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(
                f"Voxel spacing {spacing} mm is not valid: every spacing must be a positive "
                "finite number. Check the file's header (pixel spacing, slice thickness)."
            )
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise InputError(
                "The image direction matrix is not orthonormal; the file's orientation "
                "header is corrupt. Re-export the image."
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", tuple(float(o) for o in self.origin_mm))
        object.__setattr__(self, "direction", direction)

    # -- basic facts -------------------------------------------------------------------
    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel, mm^3."""
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz

    @property
    def voxel_volume_cm3(self) -> float:
        """Volume of one voxel, cm^3."""
        return self.voxel_volume_mm3 / 1000.0

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel index (i, j, k, 1) to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_mm
        return a

    # -- coordinates -------------------------------------------------------------------
    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Map continuous voxel indices to LPS positions.

        Parameters
        ----------
        index : np.ndarray, (..., 3)
            Voxel indices in array axis order (may be fractional).

        Returns
        -------
        np.ndarray, (..., 3)
            LPS positions, mm.
        """
        index = np.asarray(index, dtype=float)
        m = self.direction * np.asarray(self.spacing_mm)[None, :]
        return index @ m.T + np.asarray(self.origin_mm)

    def physical_to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Map LPS positions (mm), shape (..., 3), to continuous voxel indices (..., 3)."""
        points_mm = np.asarray(points_mm, dtype=float)
        m = self.direction * np.asarray(self.spacing_mm)[None, :]
        return (points_mm - np.asarray(self.origin_mm)) @ np.linalg.inv(m).T

    def axis_for(self, patient_axis: str) -> tuple[int, int]:
        """Array axis closest to a patient axis, and its sign.

        Parameters
        ----------
        patient_axis : {'left', 'posterior', 'superior'}

        Returns
        -------
        axis : int
            Array axis whose direction is most nearly parallel to ``patient_axis``.
        sign : int
            +1 if increasing the index moves towards ``patient_axis``, else -1.
        """
        v = PATIENT_AXES_LPS[patient_axis]
        dots = self.direction.T @ v
        axis = int(np.argmax(np.abs(dots)))
        return axis, (1 if dots[axis] > 0 else -1)

    def same_grid(self, other: Geometry, tol_mm: float = 1e-3) -> bool:
        """True when both geometries describe the same voxel grid (within ``tol_mm``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol_mm)
            and np.allclose(self.origin_mm, other.origin_mm, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )

    def describe(self) -> str:
        """A one-line human description: size, spacing, dominant orientation code, and
        how far the axes lie from the patient axes when the grid is oblique."""
        code = "".join(_axis_letter(self.direction[:, a]) for a in range(3))
        sx, sy, sz = self.spacing_mm
        # largest angle between an array axis and its nearest patient axis
        cos = np.abs(np.asarray(self.direction, dtype=float)).max(axis=0)
        tilt_deg = float(np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))))
        oblique = f", oblique: up to {tilt_deg:.0f} deg off" if tilt_deg >= 0.5 else ""
        return (
            f"{self.shape[0]}x{self.shape[1]}x{self.shape[2]} voxels, "
            f"{sx:.3g}x{sy:.3g}x{sz:.3g} mm, orientation {code} (LPS letters{oblique})"
        )

    # -- SimpleITK ---------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: Any) -> Geometry:
        """Geometry of a 3-D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise InputError(
                f"Expected a 3-D image, got a {image.GetDimension()}-D one: CTMuscleBone "
                "needs a volume (a stack of slices)."
            )
        return cls(
            shape=tuple(image.GetSize()),
            spacing_mm=tuple(image.GetSpacing()),
            origin_mm=tuple(image.GetOrigin()),
            direction=np.array(image.GetDirection(), dtype=float).reshape(3, 3),
        )

    def apply_to_sitk(self, image: Any) -> Any:
        """Set this geometry on a ``SimpleITK.Image`` of matching size; returns it."""
        if tuple(image.GetSize()) != self.shape:
            raise ValueError(f"image size {image.GetSize()} != geometry shape {self.shape}")
        image.SetSpacing(self.spacing_mm)
        image.SetOrigin(self.origin_mm)
        image.SetDirection(tuple(self.direction.ravel()))
        return image


def _axis_letter(v: np.ndarray) -> str:
    a = int(np.argmax(np.abs(v)))
    return ("LR", "PA", "SI")[a][0 if v[a] > 0 else 1]


def array_from_sitk(image: Any) -> np.ndarray:
    """Voxel array of a SimpleITK image in ITK index order ``[i, j, k]``."""
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def sitk_from_array(array: np.ndarray, geometry: Geometry) -> Any:
    """SimpleITK image from an ITK-index-order array ``[i, j, k]`` and its geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    return geometry.apply_to_sitk(image)


@dataclass(frozen=True)
class CTMetadata:
    """Acquisition and patient facts read from the file header where present.

    Every field is ``None`` when the source does not say (e.g. NIfTI files).
    """

    modality: str | None = None
    kvp: float | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    patient_sex: str | None = None  # 'M', 'F' or None
    patient_age_years: float | None = None
    patient_height_m: float | None = None
    patient_weight_kg: float | None = None
    study_date: str | None = None  # YYYYMMDD as in DICOM
    contrast_agent: str | None = None  # DICOM ContrastBolusAgent; None = not stated
    slice_thickness_mm: float | None = None
    series_instance_uid: str | None = None
    series_description: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    source: str | None = None  # path or description of where the image came from
    notes: tuple[str, ...] = ()  # messages from reading (e.g. which series was chosen)
    #: True once :func:`CTMuscleBoneLib.pipeline.check_ct` accepted the image (its
    #: warnings are then in ``notes``), so the check runs once per image.
    checked: bool = False
    # -- DICOM source facts the DICOM SEG / SR outputs reference (dicom_out) -----------
    frame_of_reference_uid: str | None = None
    #: SOPClassUID of the source slices (CT Image Storage, Enhanced CT ...).
    sop_class_uid: str | None = None
    #: SOPInstanceUID of each slice in array order along axis 2 (k = 0, 1, ...); None
    #: when unknown (not DICOM, or a multi-frame file).
    sop_instance_uids: tuple[str, ...] | None = None
    series_number: int | None = None
    # -- patient / study modules (DICOM PS3.3 C.7.1.1, C.7.2.1), as in the header -----
    patient_name: str | None = None
    patient_birth_date: str | None = None  # YYYYMMDD
    patient_age: str | None = None  # DICOM AS string ('065Y')
    study_time: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    accession_number: str | None = None
    referring_physician_name: str | None = None

    def with_notes(self, *notes: str) -> CTMetadata:
        return replace(self, notes=self.notes + tuple(notes))


@dataclass
class CTImage:
    """A CT volume in Hounsfield units.

    Attributes
    ----------
    hu : np.ndarray, (n0, n1, n2)
        Voxel values in HU, ITK index order (see module docstring). Integer or float.
    geometry : Geometry
        Voxel grid.
    metadata : CTMetadata
        Header facts.
    """

    hu: np.ndarray
    geometry: Geometry
    metadata: CTMetadata = field(default_factory=CTMetadata)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise InputError(
                f"Expected a 3-D CT volume, got an array with {self.hu.ndim} dimension(s)."
            )
        if tuple(self.hu.shape) != self.geometry.shape:
            raise ValueError(f"array shape {self.hu.shape} != geometry {self.geometry.shape}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.geometry.spacing_mm

    def to_sitk(self) -> Any:
        """This CT as a ``SimpleITK.Image`` (copies the voxels)."""
        return sitk_from_array(self.hu, self.geometry)


def mask_bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Smallest index box holding every True voxel of a 3-D mask; None when it is empty.

    Three projections, each over the part of the volume left by the previous one (much
    cheaper than ``np.argwhere`` on a large volume).
    """
    box: list[slice] = []
    sub = np.asarray(mask)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(sub.any(axis=other))
        if idx.size == 0:
            return None
        sl = slice(int(idx[0]), int(idx[-1]) + 1)
        box.append(sl)
        sub = sub[(slice(None),) * axis + (sl,)]
    return (box[0], box[1], box[2])


@dataclass
class LabelMap:
    """An integer label map on a voxel grid, with label values mapped to the anatomy table.

    Attributes
    ----------
    array : np.ndarray of int, (n0, n1, n2)
        Label value per voxel, ITK index order; 0 is background.
    geometry : Geometry
        Voxel grid (normally the CT's).
    structures : dict[int, str]
        Label value -> anatomy table key (see :mod:`CTMuscleBoneLib.anatomy`), for the
        labels the table knows. Only these are measured.
    unknown : dict[int, str]
        Label value -> the name the source gave, for labels the table does not know.
        They are left out of measurements and listed in the results.
    source : str
        Where the labels came from ("TotalSegmentator v2", "CTMuscleBone demo model",
        "phantom ground truth", a file path, ...).
    notes : tuple of str
        Messages from reading (e.g. "resampled onto the CT grid"), for the report.
    overlays : dict[str, np.ndarray of bool, (n0, n1, n2)]
        Full masks of structures whose voxels overlap another structure (e.g. two
        segments of a hand-edited Slicer segmentation that share voxels). The single
        ``array`` cannot hold a voxel twice; :meth:`mask` returns the overlay of such a
        structure, so every structure is measured on its own, complete mask.
    """

    array: np.ndarray
    geometry: Geometry
    structures: dict[int, str]
    unknown: dict[int, str] = field(default_factory=dict)
    source: str = "unspecified"
    notes: tuple[str, ...] = ()  # messages from reading (resampling, merged labels, ...)
    overlays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(f"array shape {self.array.shape} != geometry {self.geometry.shape}")
        if not np.issubdtype(self.array.dtype, np.integer):
            raise InputError(
                f"A label map must hold integer labels; this one holds {self.array.dtype} "
                "values. Save the segmentation as an integer label map."
            )
        for key, m in self.overlays.items():
            if tuple(np.shape(m)) != self.geometry.shape or np.asarray(m).dtype != bool:
                raise ValueError(f"overlay of {key} must be a bool array of shape "
                                 f"{self.geometry.shape}")
            if self.value_of(key) is None:
                raise ValueError(f"overlay of {key}: the structure has no label value")

    def value_of(self, key: str) -> int | None:
        """Label value of an anatomy key, or None when the map does not contain it."""
        for value, k in self.structures.items():
            if k == key:
                return value
        return None

    def mask(self, key: str) -> np.ndarray:
        """Boolean mask (n0, n1, n2) of one anatomy structure (all False when absent)."""
        if key in self.overlays:
            return np.asarray(self.overlays[key], dtype=bool)
        value = self.value_of(key)
        if value is None:
            return np.zeros(self.array.shape, dtype=bool)
        return self.array == value

    def boxes(self) -> dict[int, tuple[slice, slice, slice]]:
        """Index bounding box of each positive label value present in ``array``.

        One pass over the array (``scipy.ndimage.find_objects``), computed once and
        kept while ``array`` is the same object: the measure steps share it (a label
        map is not edited in place; edits build a new map).
        """
        cached = self.__dict__.get("_boxes")
        if cached is not None and cached[0] is self.array:
            return cached[1]
        from scipy import ndimage

        found = ndimage.find_objects(np.asarray(self.array))  # values <= 0: background
        boxes = {i + 1: b for i, b in enumerate(found) if b is not None}
        self.__dict__["_boxes"] = (self.array, boxes)
        return boxes

    def present_keys(self) -> list[str]:
        """Anatomy keys with at least one voxel (in the array or in their overlay)."""
        present = set(self.boxes())
        return [k for v, k in sorted(self.structures.items())
                if v in present or (k in self.overlays and bool(self.overlays[k].any()))]
