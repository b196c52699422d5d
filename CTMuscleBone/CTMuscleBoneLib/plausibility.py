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

Structures with fewer than :data:`MIN_VOXELS_TO_JUDGE` voxels are not judged.

Decision: a map is refused as a whole (wrong label scheme) when
:data:`MAP_MIN_IMPLAUSIBLE` or more structures are implausible, or when at least two
are and they are at least :data:`MAP_IMPLAUSIBLE_FRACTION` of the structures judged;
otherwise each implausible structure is left out (moved to ``LabelMap.unknown``)
with a warning giving the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import anatomy
from .errors import InputError
from .fov import border_label_values, touches_border
from .image import CTImage, LabelMap
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
    """

    min_mean_hu: float
    max_mean_hu: float
    min_volume_cm3: float = 0.0


#: Per-class bounds; justification in the module docstring.
RANGES: dict[str, PlausibleRange] = {
    "muscle": PlausibleRange(-100.0, LEAN_HU_RANGE[1]),  # top of the lean window
    "femur": PlausibleRange(100.0, 1800.0, 40.0),
    "hip": PlausibleRange(100.0, 1800.0, 40.0),
    "sacrum": PlausibleRange(100.0, 1800.0, 20.0),
    "vertebra": PlausibleRange(100.0, 1800.0, 10.0),
    "fat": PlausibleRange(-250.0, -20.0),
    "calibration_rod": PlausibleRange(-200.0, 1600.0),
    "vessel": PlausibleRange(-50.0, 700.0),
}
#: Volume minimums of single large muscles, cm3 (module docstring), by key prefix.
MUSCLE_MIN_VOLUME_CM3: dict[str, float] = {
    "gluteus_maximus": 50.0, "iliopsoas": 30.0, "autochthon": 30.0,
}
#: Fewer voxels than this: the mean is not judged (noise and partial volume dominate).
MIN_VOXELS_TO_JUDGE = 20
#: Map-level decision (module docstring).
MAP_MIN_IMPLAUSIBLE = 3
MAP_IMPLAUSIBLE_FRACTION = 0.5


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
    """

    checks: list[StructureCheck] = field(default_factory=list)
    map_implausible: bool = False
    likely_cause: str = ""

    @property
    def implausible(self) -> list[StructureCheck]:
        return [c for c in self.checks if not c.plausible]

    def describe(self) -> str:
        """One line listing the implausible structures and why."""
        return "; ".join(f"{c.key}: {', '.join(c.reasons)}" for c in self.implausible)


def _scheme_cause(labels: LabelMap) -> str:
    source = labels.source or ""
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

    def count_and_sum(value: int) -> tuple[int, float]:
        box = boxes.get(value)
        if box is None:
            return 0, 0.0
        values = hu[box][array[box] == value]
        return int(values.size), float(values.sum(dtype=sum_dtype))

    border = border_label_values(array)
    overlays = getattr(labels, "overlays", None) or {}
    voxel_cm3 = ct.geometry.voxel_volume_cm3
    report = PlausibilityReport()
    for value, key in sorted(labels.structures.items()):
        cls = structure_class(key)
        if cls is None:
            continue
        if key in overlays:
            mask = np.asarray(overlays[key], dtype=bool)
            n = int(np.count_nonzero(mask))
            total = float(hu[mask].sum(dtype=np.float64)) if n else 0.0
            touches = touches_border(mask)
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
        report.checks.append(StructureCheck(key, int(value), cls, mean, volume, touches,
                                            tuple(reasons)))
    bad = len(report.implausible)
    judged = len(report.checks)
    report.map_implausible = bad >= MAP_MIN_IMPLAUSIBLE or (
        bad >= 2 and bad >= MAP_IMPLAUSIBLE_FRACTION * judged)
    if report.map_implausible:
        report.likely_cause = _scheme_cause(labels)
    elif bad:
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
        raise InputError(
            f"{len(bad)} of {len(report.checks)} labelled structures do not look like what "
            f"their labels claim ({shown}{more}): {report.likely_cause}."
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
