"""Checks that a volume is a usable CT before anything is measured on it.

:func:`check_ct` raises :class:`~CTMuscleBoneLib.errors.InputError` for input that
would give wrong numbers and returns warnings for input that gives less reliable ones.

Refusal rules (CTMuscleBone choices, documented here and in the user guide):

* **Modality**: a header Modality other than ``CT`` (MR, PT, US, ...). A modality that
  says nothing (absent, ``UNKNOWN``, ``OTHER``, DICOM ``OT``: MetaImage files written by
  SimpleITK carry ``MET_MOD_UNKNOWN``) is not refused: the HU rules below decide.
* **Not Hounsfield units** (MR, or CT without rescale): a body CT in HU always
  contains air (about -1000 HU, outside the body, in the lungs or bowel) or at least
  fat (about -100 HU). The volume is refused when

  - no voxel is below 0 (HU images always have negative values; MR magnitudes and
    raw CT detector values do not), or
  - no voxel is below -500 HU **and** the 1st percentile is above -50 HU: no air and
    less than 1 % of voxels as low as fat (-150 to -50 HU), e.g. an MR image shifted
    or normalised below zero, or a wrongly scaled CT. The fat margin is deliberately
    wide (not -200 HU) so that a tight crop inside the body (no air, some fat) passes.

  Percentiles are taken on every ``stride``-th voxel (at most ~2 million voxels), which
  changes the 1st percentile by far less than the 300 HU margin of the rule.
* **Shape**: fewer than 2 voxels along an axis (a single slice; a 2-D image cannot
  even be loaded as a :class:`~CTMuscleBoneLib.image.CTImage`).
* **Spacing**: any voxel size below 0.05 mm or above 20 mm (no clinical CT has these;
  they mean a broken header, e.g. spacing in metres or cm).
* **Non-finite values**: NaN or infinity in the voxels.

Slice thickness rule (one rule, used by every module through the functions below):

* geometry and volumes use the **slice spacing** (the distance between slice centres,
  ``geometry.spacing_mm``; :func:`slice_spacing_mm`);
* partial-volume ("thick slice") warnings use the **effective thickness**: the larger
  of the header SliceThickness and the coarsest voxel spacing
  (:func:`effective_slice_thickness_mm`); a reconstruction with thick overlapping
  slices blurs like its thickness, one with gaps cannot resolve detail finer than its
  spacing, and the coarsest axis is used whatever the storage order of the axes;
* a header thickness differing from the spacing by more than
  :data:`THICKNESS_SPACING_TOLERANCE` is reported (:func:`slice_thickness_note`).

The header thickness is compared with the spacing along array axis 2, the stacking
axis of a DICOM series (the only source of a header thickness).

Warnings: slices thicker than 3 mm (volumes and BMD coarse); contrast agent stated
(vertebral HU +10-20 HU, blood-based calibration biased; domain.md, Kaesmacher 2017);
tube voltage other than 120 kVp (bone HU depend on kVp; HU thresholds and HU-based
references assume 120 kVp); possible metal (> 3000 HU); few slices (< 10).
"""

from __future__ import annotations

import numpy as np

from .contrast import agent_from_header
from .errors import InputError
from .image import CTImage, Geometry
from .io_common import UNDECIDED_MODALITIES
from .tissue import METAL_HU

#: Smallest and largest plausible voxel size, mm (CTMuscleBone choice: the finest
#: clinical/micro-CT reconstructions are ~0.1 mm, the thickest CT slices 10 mm).
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
#: Slice thickness above which a warning is given, mm (domain.md: 5 mm slices make
#: volumes and BMD coarse; 3 mm is the usual upper limit for quantitative CT work).
THICK_SLICE_MM = 3.0
#: Tube voltage the HU-based methods assume, kVp (domain.md: "kVp other than 120
#: changes bone HU").
REFERENCE_KVP = 120.0
#: How many voxels above :data:`CTMuscleBoneLib.tissue.METAL_HU` trigger the metal
#: warning (CTMuscleBone choice: more than isolated noise spikes).
METAL_MIN_VOXELS = 50
#: MR / non-HU rule thresholds (see module docstring; CTMuscleBone choice).
AIR_HU = -500.0
P1_MAX_HU = -50.0
#: Fewer slices than this along any axis gives a warning.
FEW_SLICES = 10
#: Largest number of voxels used for percentiles.
MAX_SAMPLE_VOXELS = 2_000_000

#: Relative difference between header SliceThickness and slice spacing above which the
#: mismatch is reported (CTMuscleBone choice: 10 % tolerates rounded header values).
THICKNESS_SPACING_TOLERANCE = 0.10
#: Array axis along which DICOM slices are stacked.
SLICE_AXIS = 2



def _sample(hu: np.ndarray) -> np.ndarray:
    flat = hu.reshape(-1)
    stride = max(1, flat.size // MAX_SAMPLE_VOXELS)
    return flat[::stride]


def slice_spacing_mm(geometry: Geometry) -> float:
    """Distance between slice centres, mm: the value for geometry and volumes."""
    return float(geometry.spacing_mm[SLICE_AXIS])


def effective_slice_thickness_mm(ct: CTImage) -> float:
    """Thickness that governs partial volume, mm: max(header thickness, coarsest spacing).

    Use it for "thick slice" warnings only; volumes use the spacing (geometry).
    """
    spacing = float(max(ct.geometry.spacing_mm))
    header = ct.metadata.slice_thickness_mm
    return max(spacing, float(header)) if header and header > 0 else spacing


def slice_thickness_note(ct: CTImage) -> str | None:
    """A warning when the header SliceThickness differs from the slice spacing, else None."""
    header = ct.metadata.slice_thickness_mm
    if not header or header <= 0:
        return None
    spacing = slice_spacing_mm(ct.geometry)
    if abs(header - spacing) <= THICKNESS_SPACING_TOLERANCE * spacing:
        return None
    kind = ("overlapping reconstruction" if header > spacing
            else "gapped reconstruction (tissue between slices is not imaged)")
    return (f"Slice thickness {header:g} mm differs from slice spacing {spacing:.3g} mm: "
            f"{kind}. Volumes use the spacing; thick-slice warnings use "
            f"{max(header, spacing):.3g} mm.")


def check_ct(ct: CTImage) -> list[str]:
    """Refuse unusable CT input; return warnings for usable but imperfect input.

    Parameters
    ----------
    ct : CTImage
        Volume in HU with geometry and metadata.

    Returns
    -------
    list of str
        Warnings, each a sentence naming the issue and its effect.

    Raises
    ------
    InputError
        See the module docstring for the rules.
    """
    warnings: list[str] = []
    meta = ct.metadata
    hu = np.asarray(ct.hu)

    modality = (meta.modality or "").strip().upper()
    if modality.removeprefix("MET_MOD_") in UNDECIDED_MODALITIES:  # says nothing: HU decide
        modality = ""
    if modality and modality != "CT":
        raise InputError(
            f"The image is modality '{modality}', not CT. CTMuscleBone measures Hounsfield "
            "units and works on CT only; choose the CT series."
        )

    shape = ct.geometry.shape
    if min(shape) < 2:
        raise InputError(
            f"The image is a single slice ({shape[0]}x{shape[1]}x{shape[2]} voxels); "
            "CTMuscleBone needs a volume (a stack of slices). Load the whole series."
        )
    if min(shape) < FEW_SLICES:
        warnings.append(
            f"Only {min(shape)} slices along one axis: structures are probably cut off "
            "and volumes incomplete."
        )

    spacing = np.asarray(ct.geometry.spacing_mm, dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"Voxel spacing {tuple(spacing)} mm is not valid.")
    if spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise InputError(
            f"Voxel spacing {tuple(round(float(s), 4) for s in spacing)} mm is outside the "
            f"plausible range {MIN_SPACING_MM}-{MAX_SPACING_MM} mm: the header is broken "
            "(e.g. spacing in cm or m). Fix the spacing and save the image again."
        )

    if hu.dtype.kind == "f" and not np.all(np.isfinite(hu)):
        n_bad = int(np.count_nonzero(~np.isfinite(hu)))
        raise InputError(
            f"The image holds {n_bad} non-finite voxel value(s) (NaN or infinity). "
            "Re-export it; CT values must be finite HU."
        )
    if hu.dtype.kind not in "fiub":
        raise InputError(f"The image holds {hu.dtype} values; a CT holds numbers (HU).")

    lo = float(hu.min())
    hi = float(hu.max())
    if lo >= 0:
        raise InputError(
            f"No voxel is below 0 (values {lo:g} to {hi:g}): these are not Hounsfield "
            "units (air is -1000 HU, fat about -100 HU). The image is probably MR, or a CT "
            "exported without RescaleSlope/RescaleIntercept. Use the CT in HU."
        )
    sample = _sample(hu)
    p1 = float(np.percentile(sample, 1))
    if lo > AIR_HU and p1 > P1_MAX_HU:
        raise InputError(
            f"The image has no air (lowest value {lo:g}) and almost no fat (1st percentile "
            f"{p1:.0f}); a CT in HU shows air below {AIR_HU:g} HU or fat near -100 HU. "
            "The image is probably not a CT in HU (MR, or wrongly scaled). If it is a "
            "tightly cropped CT, crop less so that surrounding fat or air is included."
        )

    note = slice_thickness_note(ct)
    if note is not None:
        warnings.append(note)
    thickness = effective_slice_thickness_mm(ct)
    if thickness > THICK_SLICE_MM:
        warnings.append(
            f"Slices are {thickness:g} mm thick (> {THICK_SLICE_MM:g} mm): volumes and BMD "
            "are coarse and partial-volume effects larger; prefer a thin-slice "
            "reconstruction."
        )
    agent = agent_from_header(meta)
    if agent:
        warnings.append(
            f"Contrast agent stated ('{agent}'): enhancement raises vertebral and blood "
            "HU (by 10-20 HU in bone) and biases blood-based phantomless calibration; "
            "treat BMD as approximate."
        )
    if meta.kvp is not None and abs(meta.kvp - REFERENCE_KVP) > 0.5:
        warnings.append(
            f"Tube voltage {meta.kvp:g} kVp (not {REFERENCE_KVP:g}): bone HU depend on "
            "kVp, so HU thresholds validated at 120 kVp do not apply directly; use "
            "phantom calibration from the same scan."
        )
    n_metal = int(np.count_nonzero(hu > METAL_HU))
    if n_metal >= METAL_MIN_VOXELS:
        warnings.append(
            f"{n_metal} voxels above {METAL_HU:g} HU: probable metal (implant, screws, "
            "cement). BMD on the affected side or level is invalid."
        )
    return warnings
