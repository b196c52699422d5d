"""Does each labelled structure look like what its label claims?

A label map read with the wrong table (a TotalSegmentator v1 map read as v2, a wrong
names sidecar) gives confident, wrong numbers: a femur measured as "iliopsoas" at
845 HU. :func:`check_label_plausibility` compares, per structure class, the mean HU
and the volume of each labelled structure with what the anatomy allows;
:func:`apply_plausibility` leaves out the few implausible structures (with a flag) or
refuses the whole map when many are implausible (wrong label scheme).

Bounds (all generous on purpose: real cases, including fatty atrophic muscle and
osteoporotic bone, must pass; a structure of another tissue class must not):

* **Muscle**: mean in -100..150 HU. Lean muscle voxels are -29..150 HU and IMAT
  voxels -190..-30 HU (Mitsiopoulos et al., J Appl Physiol 1998; Goodpaster et al.,
  J Appl Physiol 2000; Aubrey et al., Acta Physiol 2014; the windows of
  :mod:`CTMuscleBoneLib.muscle`). Healthy muscle averages 40-60 HU, fatty atrophic
  muscle 0-20 HU, severe fatty degeneration of paraspinal muscle can average below
  0 HU; a mean below -100 HU is mostly fat, a mean above 150 HU (the top of the lean
  window) is bone or contrast, not muscle.
* **Bone** (femur, hip bone, sacrum, vertebra): mean 100..1800 HU. A whole-bone label
  holds cortex (about 1000-2000 HU) and trabecular bone (about 100-300 HU in adults,
  down to ~50 HU in osteoporosis) and marrow; whole-bone means lie around 200-600 HU
  and an osteoporotic bone still well above 100 HU, while soft tissue mislabelled as
  bone averages 0-80 HU. Above 1800 HU is metal, not bone.
* **Fat** (subcutaneous fat): mean -250..-20 HU (adipose tissue -190..-30 HU;
  partial volume with skin and air widens the range).
* **Calibration rods**: mean -200..1600 HU (water to the densest K2HPO4/HA inserts).
* **Vessels** (aorta, inferior vena cava): mean -50..700 HU (blood 30-60 HU without
  contrast, up to ~500 HU in arterial phase).
* **Volume minimums**, applied only when the structure does not touch the image
  border (a structure cut by the field of view may be small): femur 40 cm3 (a
  proximal femur to the lesser trochanter is ~80-120 cm3, a whole adult femur
  400-600 cm3), hip bone 40 cm3 (~150-300 cm3), sacrum 20 cm3 (~60-100 cm3),
  lumbar vertebra 10 cm3 (~40-80 cm3 with its posterior elements), gluteus maximus
  50 cm3 (~300-900 cm3), iliopsoas and autochthon 30 cm3 (~150-400 cm3). These are
  CTMuscleBone choices set at about a third or less of small adult values.
* **Volume maximums**, applied whether or not the structure touches the border (a cut
  structure is only smaller): femur 2000 cm3, hip bone 1000 cm3, sacrum 400 cm3, one
  lumbar vertebra 300 cm3 (not the level-less ``vertebrae_lumbar``, which may hold
  all five), gluteus maximus 3000 cm3, iliopsoas 2000 cm3, autochthon 4000 cm3 (it may
  run the whole spine). CTMuscleBone choices set at about three times large adult
  values; they catch a voxel spacing too large by a wrong unit, which the CT check's
  20 mm limit lets through for fine reconstructions (0.7 mm stored as 7 mm).

Whole-image causes (project defaults, unvalidated). When structures are implausible,
two patterns are told apart from a wrong label scheme before the map is refused, since
they have a different fix:

* **Voxel spacing** (e.g. mm stored as cm): every volume is off by the same factor,
  the cube of the spacing factor, while the HU are right. Each structure with volume
  bounds that does not touch the border gives log(volume / centre of its range), the
  centre being the geometric mean of its minimum and maximum. The spacing is blamed
  when at least :data:`COMMON_MIN_STRUCTURES` such structures exist, their median
  ratio is off by :data:`VOLUME_FACTOR_MIN` or more (more than the spread of normal
  anatomy around the centres, less than the 8x of a spacing off by 2 on every axis),
  at least :data:`COMMON_MIN_FRACTION` of them, of at least :data:`COMMON_MIN_KINDS`
  classes, are plausible once divided by that median factor (one common factor), and
  at least that fraction of the implausible structures fail on volume.
* **HU scale** (e.g. the rescale intercept applied twice: air at -2048): every mean
  is shifted by the same offset, while volumes are right. Each muscle, fat and bone
  structure gives its mean minus the typical mean of its class
  (:data:`TYPICAL_MEAN_HU`); the HU scale is blamed when at least
  :data:`COMMON_MIN_STRUCTURES` structures give an offset, their median offset is
  :data:`HU_OFFSET_MIN` or more (more than the width of the muscle window, less than
  a third of the 1000-1024 HU of intercept errors), at least
  :data:`COMMON_MIN_FRACTION` of them, of at least :data:`COMMON_MIN_KINDS` tissues
  (muscle, fat, bone), lie within their class's spread (:data:`MEAN_HU_SPREAD`) of
  that median (one common offset), and at least that fraction of the implausible
  structures fail on HU. An offset within
  :data:`INTERCEPT_TOLERANCE_HU` of -1024 is named "rescale intercept applied twice",
  one near +1024 "rescale intercept not applied". (A CT without any value below 0, or
  without air or fat, is already refused by :func:`CTMuscleBoneLib.validation.check_ct`;
  an offset keeps air below -500 HU and passes it.)

* **Vertebra cross-section** (a short crop whose structures all touch its ends, so no
  volume is judged): the widest vertebra label not cut at a side, front or back face
  must span :data:`VERTEBRA_MIN_INPLANE_MM` across; narrower, while the whole CT spans
  less than :data:`VERTEBRA_RULE_MAX_CT_MM`, the spacing is blamed. This is checked
  whether or not any structure is implausible.

A mislabelled map scatters: its structures are too small and too large, too dense and
too light, by different amounts, or only one class or tissue is off (another tissue
under its names), so neither pattern holds and the label-scheme message stays.

Structures with fewer than :data:`MIN_VOXELS_TO_JUDGE` voxels are not judged.

Decision: a map is refused as a whole when a whole-image cause is found (above; every
value of the case would be wrong), or (wrong label scheme) when
:data:`MAP_MIN_IMPLAUSIBLE` or more structures are implausible, or when at least two
are and they are at least :data:`MAP_IMPLAUSIBLE_FRACTION` of the structures judged;
otherwise each implausible structure is left out (moved to ``LabelMap.unknown``)
with a warning giving the reason. When the names file beside the map disagrees with
the label format given (a note of :func:`CTMuscleBoneLib.io_labels.read_labels`), the
wrong-scheme message quotes that note.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import anatomy
from .errors import InputError
from .fov import border_faces, border_label_values, outside_fov, touches_border
from .image import CTImage, Geometry, LabelMap
from .tissue import LEAN_HU_RANGE


@dataclass(frozen=True)
class PlausibleRange:
    """What a structure class may look like on CT.

    Attributes
    ----------
    min_mean_hu, max_mean_hu : float
        Bounds of the mean HU over the structure's voxels.
    min_volume_cm3 : float
        Smallest volume when the structure does not touch the image border, cm3.
    max_volume_cm3 : float
        Largest volume, cm3 (infinite: not judged).
    """

    min_mean_hu: float
    max_mean_hu: float
    min_volume_cm3: float = 0.0
    max_volume_cm3: float = math.inf


#: Per-class bounds; justification in the module docstring.
RANGES: dict[str, PlausibleRange] = {
    "muscle": PlausibleRange(-100.0, LEAN_HU_RANGE[1]),  # top of the lean window
    "femur": PlausibleRange(100.0, 1800.0, 40.0, 2000.0),
    "hip": PlausibleRange(100.0, 1800.0, 40.0, 1000.0),
    "sacrum": PlausibleRange(100.0, 1800.0, 20.0, 400.0),
    "vertebra": PlausibleRange(100.0, 1800.0, 10.0, 300.0),
    "fat": PlausibleRange(-250.0, -20.0),
    "calibration_rod": PlausibleRange(-200.0, 1600.0),
    "vessel": PlausibleRange(-50.0, 700.0),
}
#: Volume minimums of single large muscles, cm3 (module docstring), by key prefix.
MUSCLE_MIN_VOLUME_CM3: dict[str, float] = {
    "gluteus_maximus": 50.0, "iliopsoas": 30.0, "autochthon": 30.0,
}
#: Volume maximums of single large muscles, cm3 (module docstring), by key prefix.
MUSCLE_MAX_VOLUME_CM3: dict[str, float] = {
    "gluteus_maximus": 3000.0, "iliopsoas": 2000.0, "autochthon": 4000.0,
}
#: Keys of a class with volume bounds that hold several structures: no maximum.
NO_MAX_VOLUME_KEYS = frozenset({"vertebrae_lumbar"})
#: Fewer voxels than this: the mean is not judged (noise and partial volume dominate).
MIN_VOXELS_TO_JUDGE = 20
#: Map-level decision (module docstring).
MAP_MIN_IMPLAUSIBLE = 3
MAP_IMPLAUSIBLE_FRACTION = 0.5

# Whole-image causes (module docstring; project defaults, unvalidated).
#: Fewest structures that must show a common volume factor or HU offset.
COMMON_MIN_STRUCTURES = 3
#: Share of the structures that must agree with the common factor / offset, and share
#: of the implausible structures that must fail on volume / HU.
COMMON_MIN_FRACTION = 0.75
#: Fewest kinds the agreeing structures must span: structure classes for volumes
#: (e.g. hip bone and vertebra), tissues for HU (:data:`TISSUE_OF_CLASS`). A wrong
#: label scheme can put one other tissue under every name of one class (thigh muscles
#: read as sacrum and vertebrae: all "bone" means ~360 HU low, alike), a wrong spacing
#: or HU scale shifts every class and tissue alike.
COMMON_MIN_KINDS = 2
#: Tissue of each class judged for the HU offset.
TISSUE_OF_CLASS: dict[str, str] = {
    "muscle": "muscle", "fat": "fat", "femur": "bone", "hip": "bone", "sacrum": "bone",
    "vertebra": "bone",
}
#: Smallest common volume factor (either way) blamed on the voxel spacing.
VOLUME_FACTOR_MIN = 5.0
#: Smallest common HU offset (either sign) blamed on the HU scale, HU.
HU_OFFSET_MIN = 300.0
#: Typical whole-structure mean HU of each class used for the offset: healthy muscle
#: 40-60 HU, adipose tissue about -100 HU, whole-bone means 200-600 HU (module
#: docstring). Vessels (contrast) and calibration rods (insert density) have no single
#: typical mean and are not used.
TYPICAL_MEAN_HU: dict[str, float] = {
    "muscle": 40.0, "fat": -100.0, "femur": 400.0, "hip": 400.0, "sacrum": 400.0,
    "vertebra": 400.0,
}
#: How far a structure's mean may lie from the typical mean of its class plus the
#: common offset and still agree with it, HU: fatty or very lean muscle (-60..+100
#: around 40), fat with partial volume, osteoporotic to dense bone (100..700).
MEAN_HU_SPREAD: dict[str, float] = {
    "muscle": 100.0, "fat": 80.0, "femur": 300.0, "hip": 300.0, "sacrum": 300.0,
    "vertebra": 300.0,
}
#: The usual rescale intercept (DICOM RescaleIntercept -1024; some scanners -1000) and
#: how close a common offset must be to it to be named after it, HU.
RESCALE_INTERCEPT_HU = 1024.0
INTERCEPT_TOLERANCE_HU = 150.0
#: A linear spacing factor in this range is named "mm stored as cm" (10x, with the
#: spread of anatomy around the range centres).
CM_FACTOR_RANGE = (5.0, 20.0)
#: Largest volume factor that the message also offers as one axis alone (a single
#: axis off by more than 100x is not a unit slip).
ONE_AXIS_FACTOR_MAX = 100.0
#: Least in-plane extent (mm, the larger of left-right and front-back) that the widest
#: vertebra label must reach when some vertebra is not cut at a side, front or back
#: face. An adult lumbar vertebra spans about 40-50 mm across its body and 70-100 mm
#: with its processes (left-right and front-back; e.g. Zhou et al., Eur Spine J 9:242,
#: 2000); even a slice through a spinous or transverse process alone spans about
#: 20-30 mm one way. With the spacing in cm (10x too small) the widest vertebra spans
#: 10 mm or less. Project default, unvalidated. Unlike the volume checks it judges
#: vertebrae cut at the superior or inferior face too (a cross-section is whole there),
#: so it catches a short crop whose structures all touch its ends.
VERTEBRA_MIN_INPLANE_MM = 15.0
#: The vertebra cross-section rule applies only when the CT itself spans less than this
#: across (mm, the larger of its left-right and front-back extents): a spacing 10x too
#: small makes a 300-500 mm field of view 30-50 mm, while a stray fragment labelled as a
#: vertebra on a CT of normal size (a segmentation error) must not refuse the case.
#: Project default, unvalidated (an uncut vertebra of 70-100 mm fits in it).
VERTEBRA_RULE_MAX_CT_MM = 120.0


def structure_class(key: str) -> str | None:
    """Class of an anatomy key for :data:`RANGES`, or None when it is not judged."""
    if key.startswith("femur_"):
        return "femur"
    if key.startswith("hip_"):
        return "hip"
    if key == "sacrum":
        return "sacrum"
    if key.startswith("vertebrae_"):
        return "vertebra"
    if key == "subcutaneous_fat":
        return "fat"
    if key.startswith("calibration_rod"):
        return "calibration_rod"
    if key in ("aorta", "inferior_vena_cava"):
        return "vessel"
    if key in anatomy.BY_KEY and anatomy.structure(key).group == "muscle":
        return "muscle"
    return None


def _min_volume_cm3(key: str, cls: str) -> float:
    if cls == "muscle":
        return next((v for p, v in MUSCLE_MIN_VOLUME_CM3.items() if key.startswith(p)), 0.0)
    return RANGES[cls].min_volume_cm3


def _max_volume_cm3(key: str, cls: str) -> float:
    if key in NO_MAX_VOLUME_KEYS:
        return math.inf
    if cls == "muscle":
        return next((v for p, v in MUSCLE_MAX_VOLUME_CM3.items() if key.startswith(p)),
                    math.inf)
    return RANGES[cls].max_volume_cm3


@dataclass(frozen=True)
class StructureCheck:
    """The plausibility facts of one labelled structure.

    Attributes
    ----------
    key : str
    value : int
        Label value.
    structure_class : str
    mean_hu : float
    volume_cm3 : float
    touches_border : bool
        Some voxel lies on the image border (the structure may be cut).
    reasons : tuple of str
        Why it is implausible; empty when plausible.
    """

    key: str
    value: int
    structure_class: str
    mean_hu: float
    volume_cm3: float
    touches_border: bool
    reasons: tuple[str, ...] = ()

    @property
    def plausible(self) -> bool:
        return not self.reasons


@dataclass
class PlausibilityReport:
    """Result of :func:`check_label_plausibility`.

    Attributes
    ----------
    checks : list of StructureCheck
        Every judged structure.
    map_implausible : bool
        Too many implausible structures: the map as a whole is probably read with the
        wrong label scheme.
    likely_cause : str
        The likely cause, for messages ("" when everything is plausible).
    cause : str
        ``""`` (all plausible), ``"segment"`` (a few mislabelled or failed segments),
        ``"scheme"`` (wrong label scheme), ``"spacing"`` and/or ``"hu_scale"`` (a
        whole-image cause, joined by ``+``).
    """

    checks: list[StructureCheck] = field(default_factory=list)
    map_implausible: bool = False
    likely_cause: str = ""
    cause: str = ""

    @property
    def implausible(self) -> list[StructureCheck]:
        return [c for c in self.checks if not c.plausible]

    def describe(self) -> str:
        """One line listing the implausible structures and why."""
        return "; ".join(f"{c.key}: {', '.join(c.reasons)}" for c in self.implausible)


#: Words of the note :func:`CTMuscleBoneLib.io_labels.read_labels` adds when the names
#: file beside the map disagrees with the label format given.
SIDECAR_CONFLICT_WORDS = "beside the map disagrees with the chosen label format"


def sidecar_conflict_note(labels: LabelMap) -> str | None:
    """The reader's note that the names file beside the map disagrees with the format
    (without its "the format given was used", which does not fit a refusal)."""
    note = next((n for n in labels.notes if SIDECAR_CONFLICT_WORDS in n), None)
    return None if note is None else note.replace("; the format given was used.", ".")


def _scheme_cause(labels: LabelMap) -> str:
    source = labels.source or ""
    conflict = sidecar_conflict_note(labels)
    if conflict is not None:
        return ("the label map was probably read with the wrong label scheme: "
                + conflict.rstrip("."))
    if "TotalSegmentator v2" in source:
        hint = ("it looks like a TotalSegmentator v1 map read as v2: use label format "
                "'totalseg-v1'")
    elif "TotalSegmentator v1" in source:
        hint = ("it looks like a TotalSegmentator v2 map read as v1: use label format "
                "'totalseg-v2'")
    elif "model" in source.lower():
        return ("the segmentation model failed on this image (it may not suit this scan); "
                "check the segmentation or use another model")
    else:
        hint = ("e.g. a TotalSegmentator v1 map read as v2 (label format 'totalseg-v1'), "
                "or a names sidecar that belongs to another map")
    return f"the label map was probably read with the wrong label scheme ({hint})"


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def _volume_bounds(c: StructureCheck) -> tuple[float, float]:
    return _min_volume_cm3(c.key, c.structure_class), _max_volume_cm3(c.key, c.structure_class)


def _spacing_cause(checks: list[StructureCheck], ct: CTImage) -> str | None:
    """A common volume factor (wrong voxel spacing), or None (rules: module docstring)."""
    judged = []
    for c in checks:
        lo, hi = _volume_bounds(c)
        if c.touches_border or lo <= 0 or not math.isfinite(hi) or c.volume_cm3 <= 0:
            continue
        judged.append((c, lo, hi, math.log10(c.volume_cm3 / math.sqrt(lo * hi))))
    if len(judged) < COMMON_MIN_STRUCTURES:
        return None
    m = _median([r for *_, r in judged])
    if abs(m) < math.log10(VOLUME_FACTOR_MIN):
        return None
    factor = 10.0 ** m
    agreeing = [c for c, lo, hi, _ in judged if lo <= c.volume_cm3 / factor <= hi]
    agree = len(agreeing)
    if (agree < COMMON_MIN_FRACTION * len(judged)
            or len({c.structure_class for c in agreeing}) < COMMON_MIN_KINDS):
        return None
    bad = [c for c in checks if not c.plausible]
    on_volume = sum(1 for c in bad if any(r.startswith("volume") for r in c.reasons))
    if on_volume < COMMON_MIN_FRACTION * len(bad):
        return None
    spacing = " x ".join(f"{s:g}" for s in ct.geometry.spacing_mm)
    small = factor < 1
    v = 1 / factor if small else factor
    linear = v ** (1 / 3)
    way = "small" if small else "large"
    if CM_FACTOR_RANGE[0] <= linear <= CM_FACTOR_RANGE[1]:
        hint = " Spacing in mm stored as cm?" if small else " Spacing in a wrong unit?"
    elif CM_FACTOR_RANGE[0] <= v <= CM_FACTOR_RANGE[1]:
        hint = (" One axis (e.g. the slice spacing) stored in cm?" if small
                else " One axis (e.g. the slice spacing) in a wrong unit?")
    else:
        hint = ""
    one_axis = f", or {v:.0f}x on one axis" if v <= ONE_AXIS_FACTOR_MAX else ""
    return (f"the labels look right but the CT's voxel spacing looks wrong: the volumes of "
            f"{agree} of {len(judged)} structures with volume bounds are about {v:.0f}x too "
            f"{way} (median), so the spacing ({spacing} mm) looks about {linear:.1f}x too "
            f"{way} on every axis{one_axis}.{hint} Fix the voxel spacing in the CT's header "
            "(and in the label map's, if it has the same error) and save the images again; "
            "every volume and mass uses it")


def _hu_scale_cause(checks: list[StructureCheck]) -> str | None:
    """A common HU offset (wrong rescale), or None (rules: module docstring)."""
    judged = [(c, c.mean_hu - TYPICAL_MEAN_HU[c.structure_class]) for c in checks
              if c.structure_class in TYPICAL_MEAN_HU]
    if len(judged) < COMMON_MIN_STRUCTURES:
        return None
    m = _median([d for _, d in judged])
    if abs(m) < HU_OFFSET_MIN:
        return None
    agreeing = [c for c, d in judged if abs(d - m) <= MEAN_HU_SPREAD[c.structure_class]]
    agree = len(agreeing)
    if (agree < COMMON_MIN_FRACTION * len(judged)
            or len({TISSUE_OF_CLASS[c.structure_class] for c in agreeing}) < COMMON_MIN_KINDS):
        return None
    bad = [c for c in checks if not c.plausible]
    on_hu = sum(1 for c in bad if any(r.startswith("mean") for r in c.reasons))
    if on_hu < COMMON_MIN_FRACTION * len(bad):
        return None
    if abs(m + RESCALE_INTERCEPT_HU) <= INTERCEPT_TOLERANCE_HU:
        hint = " Rescale intercept applied twice (air at about -2000 instead of -1000 HU)?"
    elif abs(m - RESCALE_INTERCEPT_HU) <= INTERCEPT_TOLERANCE_HU:
        hint = " Rescale intercept not applied (stored values: air near 0 HU)?"
    else:
        hint = " A wrong rescale intercept?"
    return (f"the labels look right but the CT's HU scale looks wrong: the mean HU of "
            f"{agree} of {len(judged)} structures is shifted by about {m:+.0f} HU from "
            f"their tissue's typical value.{hint} Re-export the CT in Hounsfield "
            "units with the rescale applied once (HU = stored value x RescaleSlope + "
            "RescaleIntercept: air about -1000 HU, muscle about 40 HU)")


def vertebra_inplane_extent_mm(labels: LabelMap, value: int, box: tuple[slice, ...],
                               outside: np.ndarray | None = None) -> float | None:
    """In-plane extent of one vertebra label: the larger of its left-right and
    front-back extents, mm, or None when it is cut at a side, front or back face.

    Parameters
    ----------
    labels : LabelMap
        Array (n0, n1, n2) and geometry.
    value : int
        The vertebra's label value.
    box : tuple of slice
        Its bounding box.
    outside : np.ndarray of bool, (n0, n1, n2), optional
        Padding outside the reconstructed field of view (:func:`.fov.outside_fov`).

    Returns
    -------
    float or None
        Extent of the voxel centres along the patient's x (left-right) or y
        (front-back) axis plus one voxel's extent along it, whichever is larger.
    """
    g = labels.geometry
    mask = np.asarray(labels.array)[box] == value
    if outside is not None:
        mask &= ~outside[box]
    if not mask.any():
        return None
    faces = border_faces(mask, g, box, outside)
    if any(f in ("left", "right", "anterior", "posterior") for f in faces):
        return None
    idx = np.argwhere(mask) + np.array([b.start or 0 for b in box])
    xy = g.index_to_physical(idx)[:, :2]
    d = np.abs(np.asarray(g.direction, dtype=float)[:2, :]) @ np.asarray(g.spacing_mm)
    return float(max(np.ptp(xy[:, 0]) + d[0], np.ptp(xy[:, 1]) + d[1]))


def ct_inplane_extent_mm(geometry: Geometry) -> tuple[float, float]:
    """Left-right and front-back extent of the CT grid, mm (voxel edges included)."""
    n = np.asarray(geometry.shape, dtype=float)
    corners = np.array([[i, j, k] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5)
                        for k in (-0.5, n[2] - 0.5)])
    xy = geometry.index_to_physical(corners)[:, :2]
    return float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))


def _vertebra_extent_cause(checks: list[StructureCheck], labels: LabelMap,
                           boxes: dict[int, tuple[slice, ...]],
                           outside: np.ndarray | None, ct: CTImage) -> str | None:
    """A voxel spacing too small, read from the vertebrae's cross-sections, or None.

    ``checks``: the judged structures (:data:`MIN_VOXELS_TO_JUDGE` voxels or more). The
    CT's own extent is tested first: on a CT of normal size no vertebra is looked at."""
    ct_mm = ct_inplane_extent_mm(ct.geometry)
    if max(ct_mm) >= VERTEBRA_RULE_MAX_CT_MM:
        return None
    widths = []
    for c in checks:
        box = boxes.get(c.value)
        if c.structure_class != "vertebra" or box is None:
            continue
        w = vertebra_inplane_extent_mm(labels, c.value, box, outside)
        if w is not None:
            widths.append((w, c.key))
    if not widths:
        return None
    widest, key = max(widths)
    if widest >= VERTEBRA_MIN_INPLANE_MM:
        return None
    spacing = " x ".join(f"{s:g}" for s in ct.geometry.spacing_mm)
    return (f"the CT's voxel spacing looks wrong: the widest vertebra label ({key}) spans "
            f"only {widest:.1f} mm across (left-right or front-back; an adult lumbar "
            f"vertebra spans 40-100 mm) and the whole CT {ct_mm[0]:.0f} x {ct_mm[1]:.0f} "
            f"mm, so the spacing ({spacing} mm) looks about "
            f"{70.0 / widest:.0f}x too small. Spacing in mm stored as cm? Fix the voxel "
            "spacing in the CT's header (and in the label map's, if it has the same "
            "error) and save the images again; every volume and mass uses it")


def check_label_plausibility(ct: CTImage, labels: LabelMap) -> PlausibilityReport:
    """Judge mean HU and volume of every labelled structure (rules: module docstring).

    Parameters
    ----------
    ct : CTImage
        HU volume (n0, n1, n2).
    labels : LabelMap
        On the CT grid.

    Returns
    -------
    PlausibilityReport

    Raises
    ------
    InputError
        When the label map is not on the CT grid.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError("The label map is not on the CT's voxel grid; read it with "
                         "read_labels(), which resamples it, before checking it.")
    array = np.asarray(labels.array)
    hu = np.asarray(ct.hu)
    boxes = labels.boxes()  # each structure is counted on its bounding box only
    # integer HU: exact integer sums (the same values as float64 sums)
    sum_dtype = np.int64 if np.issubdtype(hu.dtype, np.integer) else np.float64

    # padding outside the reconstructed region (fov.PADDING_HU) is outside the field of
    # view: a structure next to it is cut, and its padding voxels are not tissue
    outside = outside_fov(hu)

    def count_and_sum(value: int) -> tuple[int, float]:
        box = boxes.get(value)
        if box is None:
            return 0, 0.0
        sel = array[box] == value
        if outside is not None:
            sel &= ~outside[box]
        values = hu[box][sel]
        return int(values.size), float(values.sum(dtype=sum_dtype))

    border = border_label_values(array, outside)
    overlays = getattr(labels, "overlays", None) or {}
    voxel_cm3 = ct.geometry.voxel_volume_cm3
    report = PlausibilityReport()
    for value, key in sorted(labels.structures.items()):
        cls = structure_class(key)
        if cls is None:
            continue
        if key in overlays:
            mask = np.asarray(overlays[key], dtype=bool)
            touches = touches_border(mask, outside)
            if outside is not None:
                mask = mask & ~outside
            n = int(np.count_nonzero(mask))
            total = float(hu[mask].sum(dtype=np.float64)) if n else 0.0
        else:
            n, total = count_and_sum(int(value))
            touches = value in border
        if n < MIN_VOXELS_TO_JUDGE:
            continue
        mean = total / n
        volume = n * voxel_cm3
        rng = RANGES[cls]
        reasons = []
        if not rng.min_mean_hu <= mean <= rng.max_mean_hu:
            reasons.append(f"mean {mean:.0f} HU outside {rng.min_mean_hu:g}..{rng.max_mean_hu:g}"
                           f" HU for {cls.replace('_', ' ')}")
        min_volume = _min_volume_cm3(key, cls)
        if not touches and volume < min_volume:
            reasons.append(f"volume {volume:.1f} cm3 < {min_volume:g} cm3 although not cut by "
                           "the field of view")
        max_volume = _max_volume_cm3(key, cls)
        if volume > max_volume:
            reasons.append(f"volume {volume:.0f} cm3 > {max_volume:g} cm3")
        report.checks.append(StructureCheck(key, int(value), cls, mean, volume, touches,
                                            tuple(reasons)))
    bad = len(report.implausible)
    judged = len(report.checks)
    whole = [] if not bad else [
        (kind, text) for kind, text in (("spacing", _spacing_cause(report.checks, ct)),
                                        ("hu_scale", _hu_scale_cause(report.checks)))
        if text is not None]
    if not any(kind == "spacing" for kind, _ in whole):
        extent = _vertebra_extent_cause(report.checks, labels, boxes, outside, ct)
        if extent is not None:
            whole.insert(0, ("spacing", extent))
    if not bad and not whole:
        return report
    if whole:  # every value of the case would be wrong: refused whatever the count
        report.map_implausible = True
        report.cause = "+".join(kind for kind, _ in whole)
        report.likely_cause = "; and ".join(text for _, text in whole)
        return report
    report.map_implausible = bad >= MAP_MIN_IMPLAUSIBLE or (
        bad >= 2 and bad >= MAP_IMPLAUSIBLE_FRACTION * judged)
    if report.map_implausible:
        report.cause = "scheme"
        report.likely_cause = _scheme_cause(labels)
    else:
        report.cause = "segment"
        report.likely_cause = ("a mislabelled or failed segment (wrong structure, or a "
                               "segmentation error)")
    return report


def apply_plausibility(ct: CTImage, labels: LabelMap) -> tuple[LabelMap, list[str]]:
    """Leave out implausible structures, or refuse a map that is implausible as a whole.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap
        On the CT grid.

    Returns
    -------
    labels : LabelMap
        ``labels`` without the implausible structures: their values move to
        ``unknown`` (named "<key> (left out: <reason>)") and are not measured; a note
        is added. The input is returned unchanged when everything is plausible.
    warnings : list of str
        One per structure left out.

    Raises
    ------
    InputError
        When the map as a whole is implausible (message names the likely cause).
    """
    report = check_label_plausibility(ct, labels)
    if report.map_implausible:
        bad = report.implausible
        shown = "; ".join(f"{c.key} ({', '.join(c.reasons)})" for c in bad[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        claim = ("are implausible" if report.cause not in ("scheme", "segment")
                 else "do not look like what their labels claim")
        if not bad:  # a whole-image cause read from plausible-looking structures
            cause = report.likely_cause
            raise InputError(f"{cause[0].upper()}{cause[1:]}.")
        raise InputError(
            f"{len(bad)} of {len(report.checks)} labelled structures {claim} "
            f"({shown}{more}): {report.likely_cause}."
        )
    if not report.implausible:
        return labels, []
    structures = dict(labels.structures)
    unknown = dict(labels.unknown)
    warnings = []
    for c in report.implausible:
        why = ", ".join(c.reasons)
        structures.pop(c.value, None)
        unknown[c.value] = f"{c.key} (left out: {why})"
        warnings.append(f"{c.key} left out of the measurements: {why}; probably "
                        f"{report.likely_cause}. Check this segment.")
    changes: dict[str, object] = {"structures": structures, "unknown": unknown,
                                  "notes": tuple(labels.notes) + tuple(warnings)}
    overlays = getattr(labels, "overlays", None)
    if overlays:
        left_out = {c.key for c in report.implausible}
        changes["overlays"] = {k: m for k, m in overlays.items() if k not in left_out}
    return dataclasses.replace(labels, **changes), warnings
