"""The anatomy table: the one canonical list of structures CTMuscleBone knows.

Each :class:`Structure` has a stable key (``femur_left``), a canonical label value used
in every label map CTMuscleBone writes (phantoms, the segmentation model, exports),
its side, group (bone / muscle / other), region (for muscle group totals), display
colour and the SNOMED CT codes DICOM SEG needs.

Names from other tools are mapped onto keys by :func:`key_for_name` (TotalSegmentator
v2 names are the keys themselves where the structure exists there; aliases cover other
spellings). Label maps from outside are translated by
:mod:`CTMuscleBoneLib.io_labels`.

SNOMED CT codes: see ``SNOMED_SOURCE`` below; category codes follow DICOM CID 7150
(Segmentation Property Categories) and laterality DICOM CID 244.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Side = Literal["left", "right", "none"]
Group = Literal["bone", "muscle", "other"]

#: Muscle regions used for group totals. "lower_limb" totals are the sum of the
#: gluteal, hip-flexor and thigh regions (everything of the lower limb a pelvic or
#: hip CT covers); trunk muscles (erector spinae) are reported but not in it.
MUSCLE_REGIONS: dict[str, str] = {
    "gluteal": "Gluteal muscles (gluteus maximus, medius, minimus, tensor fasciae latae, "
    "piriformis, obturator internus)",
    "hip_flexor": "Hip flexors (iliacus, psoas major, iliopsoas)",
    "thigh": "Thigh muscles (quadriceps, sartorius, adductors, pectineus, gracilis, "
    "hamstrings, obturator externus)",
    "trunk": "Trunk muscles (erector spinae / autochthon)",
}
LOWER_LIMB_REGIONS: tuple[str, ...] = ("gluteal", "hip_flexor", "thigh")

#: SNOMED CT coded concept: (code value, coding scheme designator, code meaning).
Code = tuple[str, str, str]

CATEGORY_ANATOMICAL_STRUCTURE: Code = ("123037004", "SCT", "Anatomical Structure")
CATEGORY_TISSUE: Code = ("85756007", "SCT", "Tissue")
CATEGORY_PHYSICAL_OBJECT: Code = ("260787004", "SCT", "Physical object")
LATERALITY: dict[str, Code] = {
    "left": ("7771000", "SCT", "Left"),
    "right": ("24028007", "SCT", "Right"),
}
#: Generic type for lower-limb muscles whose own SNOMED CT code could not be verified
#: (DICOM CID 7151 "Muscle of lower limb"); the segment label still names the muscle.
MUSCLE_OF_LOWER_LIMB: Code = ("102292000", "SCT", "Muscle of lower limb")

SNOMED_SOURCE = """Where the SNOMED CT codes in this table were checked (2026):

Verified against
  [TS] wasserth/TotalSegmentator totalsegmentator/resources/totalsegmentator_snomed_mapping.csv
       (commit 0e65a448d557382b1e925276212b3bec7f5aff83);
  [SL] lassoan/SlicerTotalSegmentator
       TotalSegmentator/Resources/SegmentationCategoryTypeModifier-TotalSegmentator.term.json
       (commit 6a82370b44a864bc855fcde7abf683c5191df011) and Slicer/Slicer
       Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-DICOM-Master.json
       (commit 583e9b37d50ead7daf7b783dce465ccaecec8809);
  [DICOM] DICOM PS3.16 context groups as shipped in pydicom 3.0.2 (pydicom.sr._concepts_dict,
       _cid_dict): CID 7150, 7151, 244, 4031.

Verified codes: femur 71341001 [TS, SL, DICOM]; hip 29836001 "Hip" [TS, DICOM; the hip
region, the code TotalSegmentator uses for the hip bone]; sacrum 54735007 [TS, SL, DICOM];
L1-L5 66794005, 14293000, 36470004, 11994002, 49668003 [TS, SL, DICOM]; lumbar spine
122496007 [DICOM CID 7151; used for a lumbar vertebra of unassigned level]; iliopsoas
68455001 [TS, SL]; gluteus maximus 181674001, medius 78333006, minimus 75297007 [TS, SL];
erector spinae 44947003 [SL, DICOM CID 7151]; aorta 15825003,
inferior vena cava 64131007 [TS, SL, DICOM]; subcutaneous fatty tissue 67769002 [TS];
phantom 706342009 [DICOM CID 7151]; muscle of lower limb 102292000 [DICOM]; categories
Anatomical Structure 123037004 [TS, SL; current DICOM CID 7150 lists 91723000 for
"Anatomical Structure" and SNOMED names 123037004 "Body structure"; 123037004 is kept for
compatibility with 3D Slicer, dcmqi and TotalSegmentator], Tissue 85756007 and Physical
object 260787004 [SL, DICOM CID 7150]; laterality Left 7771000, Right 24028007 [TS, DICOM
CID 244].

Corrected (the old code meant something else): iliacus 22356005 is "Ilium" [DICOM CID
4031] -> 102292000; vastus medialis 22823000 is "Sternocleidomastoid muscle" [DICOM] ->
102292000; sartorius 71616004 is "Muscle" [DICOM] -> 102292000; psoas major 71915001
(not found in any source) -> 64038003 (the code [SL] gives psoas major) -> 102292000, since
64038003 is "Intercostal lymph node" [DICOM concepts in pydicom 3.0.2; SNOMED CT as mapped
by HL7 mCODE's TG-263 concept map] (no psoas major code was found in a source; segments
coded 64038003 by SlicerTotalSegmentator are still read as psoas major, never written:
CTMuscleBoneSlicer.terminology); erector spinae 22921004 (not found) -> 44947003;
calibration rods 102418009 (not found) -> 706342009 "Phantom".

Unverified (kept; no source at hand listed them): tensor fasciae latae 63141008,
piriformis 46813001, obturator internus 5375003, obturator externus 20094009, rectus
femoris 55427005, vastus lateralis 51405008, vastus intermedius 24300007, quadriceps
femoris 43867007, adductor longus 50421002, adductor brevis 37776009, adductor magnus
57933004, pectineus 10303001, gracilis 31813006, biceps femoris 54094001, semitendinosus
71295009, semimembranosus 48979004, adductor muscle group 75708003, hamstring muscle group
61167004. Check them in a SNOMED CT browser before relying on them in DICOM SEG exports.
"""


@dataclass(frozen=True)
class Structure:
    """One entry of the anatomy table.

    Attributes
    ----------
    key : str
        Stable identifier, lower case, side as suffix (``gluteus_medius_left``).
    name : str
        Display name (``Gluteus medius``); the side is added by :attr:`display_name`.
    label_value : int
        Canonical label value in CTMuscleBone label maps (1..255).
    side : {'left', 'right', 'none'}
    group : {'bone', 'muscle', 'other'}
    region : str or None
        Muscle region (a key of :data:`MUSCLE_REGIONS`), or None.
    color_rgb : tuple of int
        Display colour, 0..255 each.
    snomed_category, snomed_type : Code
        DICOM SEG SegmentedPropertyCategory and SegmentedPropertyType.
    aliases : tuple of str
        Other names that mean this structure (lower case, compared after
        normalising spaces and dashes to underscores).
    """

    key: str
    name: str
    label_value: int
    side: Side
    group: Group
    snomed_type: Code
    color_rgb: tuple[int, int, int]
    region: str | None = None
    snomed_category: Code = CATEGORY_ANATOMICAL_STRUCTURE
    aliases: tuple[str, ...] = field(default=())

    @property
    def display_name(self) -> str:
        """Name with side, e.g. ``Gluteus medius (left)``."""
        return self.name if self.side == "none" else f"{self.name} ({self.side})"

    @property
    def snomed_laterality(self) -> Code | None:
        """SNOMED CT laterality modifier, or None for midline structures."""
        return LATERALITY.get(self.side)


def _paired(
    base: str,
    name: str,
    values: tuple[int, int],
    group: Group,
    snomed: Code,
    color: tuple[int, int, int],
    region: str | None = None,
    aliases: tuple[str, ...] = (),
) -> list[Structure]:
    out = []
    for side, value, shade in (("left", values[0], 0), ("right", values[1], 25)):
        rgb = tuple(max(0, min(255, c - shade)) for c in color)
        out.append(
            Structure(
                key=f"{base}_{side}",
                name=name,
                label_value=value,
                side=side,  # type: ignore[arg-type]
                group=group,
                snomed_type=snomed,
                color_rgb=rgb,  # type: ignore[arg-type]
                region=region,
                aliases=tuple(f"{a}_{side}" for a in aliases)
                + tuple(f"{side}_{a}" for a in (base, *aliases)),
            )
        )
    return out


def _build_table() -> tuple[Structure, ...]:
    s: list[Structure] = []
    bone_color = (241, 214, 145)
    # --- bones ---------------------------------------------------------------------
    s += _paired("femur", "Femur", (1, 2), "bone", ("71341001", "SCT", "Femur"), bone_color,
                 aliases=("femur_bone", "thigh_bone"))
    s += _paired("hip", "Hip bone", (3, 4), "bone", ("29836001", "SCT", "Hip"),
                 (230, 190, 130), aliases=("hip_bone", "os_coxae", "pelvis", "innominate"))
    s.append(Structure("sacrum", "Sacrum", 5, "none", "bone",
                       ("54735007", "SCT", "Sacrum"), (220, 180, 120),
                       aliases=("os_sacrum", "vertebrae_s1")))
    lumbar_codes = {
        "L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
    }
    for n, level in enumerate(("L1", "L2", "L3", "L4", "L5")):
        s.append(Structure(
            f"vertebrae_{level}", f"{level} vertebra", 6 + n, "none", "bone",
            (lumbar_codes[level], "SCT", f"{level} vertebra"),
            (255, 230 - 15 * n, 170 - 10 * n),
            aliases=(f"vertebra_{level.lower()}", f"{level.lower()}", f"lumbar_vertebra_{n + 1}"),
        ))
    # A lumbar vertebra whose level is not (yet) known: what a segmentation model that
    # cannot tell the levels apart outputs before numbering (segmentation.vertebra_levels),
    # and a lumbar-type vertebra left unnumbered (e.g. a sixth one). Coded as SNOMED CT
    # 122496007 "Lumbar spine" (DICOM CID 7151 has no code for "a lumbar vertebra").
    s.append(Structure("vertebrae_lumbar", "Lumbar vertebra (level not assigned)", 11,
                       "none", "bone", ("122496007", "SCT", "Lumbar spine"),
                       (255, 240, 190), aliases=("lumbar_vertebra", "vertebrae_lumbar_unnumbered")))
    # --- muscles: (base, name, snomed, region, colour, aliases) ----------------------
    muscles: list[tuple[str, str, Code, str, tuple[int, int, int], tuple[str, ...]]] = [
        ("iliacus", "Iliacus", MUSCLE_OF_LOWER_LIMB, "hip_flexor",
         (200, 90, 90), ()),
        ("psoas_major", "Psoas major", MUSCLE_OF_LOWER_LIMB,
         "hip_flexor", (210, 100, 110), ("psoas",)),
        ("iliopsoas", "Iliopsoas", ("68455001", "SCT", "Iliopsoas muscle"), "hip_flexor",
         (220, 110, 100), ("iliopsoas_muscle",)),
        ("gluteus_maximus", "Gluteus maximus", ("181674001", "SCT", "Gluteus maximus muscle"),
         "gluteal", (188, 65, 28), ()),
        ("gluteus_medius", "Gluteus medius", ("78333006", "SCT", "Gluteus medius muscle"),
         "gluteal", (225, 130, 60), ()),
        ("gluteus_minimus", "Gluteus minimus", ("75297007", "SCT", "Gluteus minimus muscle"),
         "gluteal", (245, 170, 90), ()),
        ("tensor_fasciae_latae", "Tensor fasciae latae",
         ("63141008", "SCT", "Tensor fasciae latae muscle"), "gluteal", (160, 80, 160),
         ("tfl", "tensor_fascia_latae")),
        ("piriformis", "Piriformis", ("46813001", "SCT", "Piriformis muscle"), "gluteal",
         (140, 100, 200), ()),
        ("obturator_internus", "Obturator internus",
         ("5375003", "SCT", "Obturator internus muscle"), "gluteal", (120, 120, 210), ()),
        ("obturator_externus", "Obturator externus",
         ("20094009", "SCT", "Obturator externus muscle"), "thigh", (100, 140, 220), ()),
        ("rectus_femoris", "Rectus femoris", ("55427005", "SCT", "Rectus femoris muscle"),
         "thigh", (90, 170, 90), ()),
        ("vastus_lateralis", "Vastus lateralis",
         ("51405008", "SCT", "Vastus lateralis muscle"), "thigh", (70, 150, 70), ()),
        ("vastus_intermedius", "Vastus intermedius",
         ("24300007", "SCT", "Vastus intermedius muscle"), "thigh", (60, 130, 90), ()),
        ("vastus_medialis", "Vastus medialis", MUSCLE_OF_LOWER_LIMB,
         "thigh", (80, 190, 110), ()),
        ("quadriceps_femoris", "Quadriceps femoris",
         ("43867007", "SCT", "Quadriceps femoris muscle"), "thigh", (100, 200, 100),
         ("quadriceps",)),
        ("sartorius", "Sartorius", MUSCLE_OF_LOWER_LIMB, "thigh",
         (200, 200, 80), ()),
        ("adductor_longus", "Adductor longus", ("50421002", "SCT", "Adductor longus muscle"),
         "thigh", (80, 180, 200), ()),
        ("adductor_brevis", "Adductor brevis", ("37776009", "SCT", "Adductor brevis muscle"),
         "thigh", (70, 160, 190), ()),
        ("adductor_magnus", "Adductor magnus", ("57933004", "SCT", "Adductor magnus muscle"),
         "thigh", (60, 140, 180), ()),
        ("pectineus", "Pectineus", ("10303001", "SCT", "Pectineus muscle"), "thigh",
         (110, 200, 210), ()),
        ("gracilis", "Gracilis", ("31813006", "SCT", "Gracilis muscle"), "thigh",
         (150, 210, 230), ()),
        ("biceps_femoris", "Biceps femoris", ("54094001", "SCT", "Biceps femoris muscle"),
         "thigh", (230, 120, 170), ()),
        ("semitendinosus", "Semitendinosus", ("71295009", "SCT", "Semitendinosus muscle"),
         "thigh", (210, 100, 150), ()),
        ("semimembranosus", "Semimembranosus",
         ("48979004", "SCT", "Semimembranosus muscle"), "thigh", (190, 80, 130), ()),
        ("thigh_medial_compartment", "Thigh medial compartment (adductors)",
         ("75708003", "SCT", "Adductor muscle group"), "thigh", (90, 170, 210),
         ("adductors", "adductor_group")),
        ("thigh_posterior_compartment", "Thigh posterior compartment (hamstrings)",
         ("61167004", "SCT", "Hamstring muscle group"), "thigh", (220, 110, 160),
         ("hamstrings", "hamstring_group")),
        ("autochthon", "Erector spinae (autochthonous back muscles)",
         ("44947003", "SCT", "Erector spinae muscle"), "trunk", (180, 140, 90),
         ("erector_spinae",)),
    ]
    for n, (base, name, code, region, color, aliases) in enumerate(muscles):
        s += _paired(base, name, (20 + 2 * n, 21 + 2 * n), "muscle", code, color,
                     region=region, aliases=aliases)
    # --- other structures used as references --------------------------------------
    s.append(Structure("aorta", "Aorta", 100, "none", "other",
                       ("15825003", "SCT", "Aorta"), (224, 97, 76)))
    s.append(Structure("inferior_vena_cava", "Inferior vena cava", 101, "none", "other",
                       ("64131007", "SCT", "Inferior vena cava"), (0, 151, 206)))
    s.append(Structure("subcutaneous_fat", "Subcutaneous fat", 102, "none", "other",
                       ("67769002", "SCT", "Subcutaneous fatty tissue"), (250, 250, 210),
                       snomed_category=CATEGORY_TISSUE,
                       aliases=("subcutaneous_adipose_tissue",)))
    for n in range(6):
        s.append(Structure(
            f"calibration_rod_{n + 1}", f"Calibration phantom rod {n + 1}", 110 + n, "none",
            "other", ("706342009", "SCT", "Phantom"),
            (120 + 20 * n, 120 + 20 * n, 255), snomed_category=CATEGORY_PHYSICAL_OBJECT,
        ))
    return tuple(s)


#: The anatomy table, ordered by canonical label value within groups.
ANATOMY: tuple[Structure, ...] = _build_table()
BY_KEY: dict[str, Structure] = {st.key: st for st in ANATOMY}
BY_LABEL_VALUE: dict[int, Structure] = {st.label_value: st for st in ANATOMY}


#: Structures that are unions of finer ones in this table: group key (side-less base)
#: -> member bases. Used to train and score models that output the group (the thigh
#: compartments of TotalSegmentator v2, a lumbar vertebra of unknown level) from label
#: maps that hold the members. Thigh groups as in Gray's Anatomy (42nd ed.): quadriceps
#: = rectus femoris + the three vasti; medial compartment = the three adductors (gracilis
#: and pectineus kept apart, as TotalSegmentator keeps gracilis); posterior compartment
#: = biceps femoris, semitendinosus, semimembranosus.
GROUP_MEMBERS: dict[str, tuple[str, ...]] = {
    "quadriceps_femoris": ("rectus_femoris", "vastus_lateralis", "vastus_intermedius",
                           "vastus_medialis"),
    "thigh_medial_compartment": ("adductor_longus", "adductor_brevis", "adductor_magnus"),
    "thigh_posterior_compartment": ("biceps_femoris", "semitendinosus", "semimembranosus"),
    "vertebrae_lumbar": ("vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
                         "vertebrae_L5"),
}


def _split_side(key: str) -> tuple[str, str]:
    """``('quadriceps_femoris', '_left')`` of ``quadriceps_femoris_left``; ``(key, '')``
    for a key without a side suffix."""
    for side in ("_left", "_right"):
        if key.endswith(side):
            return key[: -len(side)], side
    return key, ""


def contralateral(key: str) -> str:
    """The same structure on the other side (``femur_left`` -> ``femur_right``); a key
    without a side suffix is its own."""
    base, side = _split_side(key)
    return {"_left": f"{base}_right", "_right": f"{base}_left"}.get(side, key)


def group_members(key: str) -> tuple[str, ...]:
    """Anatomy keys a group key is the union of (``()`` for a key that is no group).

    ``group_members('quadriceps_femoris_left')`` gives the four left quadriceps heads.
    """
    base, side = _split_side(key)
    return tuple(f"{m}{side}" for m in GROUP_MEMBERS.get(base, ()))


#: Structures that are one anatomical body but may be labelled in several pieces: the
#: hip bone's thin pubic and ischial rami can separate from the ilium in a field of view
#: that cuts them and at a coarse model grid (and the synthetic phantom builds the hip
#: bone from four disjoint parts, :mod:`CTMuscleBoneLib.phantoms.pelvis`).
SEVERAL_PIECES: frozenset[str] = frozenset({"hip"})


def is_one_piece(key: str) -> bool:
    """Whether a structure's label is expected to be one connected piece.

    False for a group (:data:`GROUP_MEMBERS`: separate muscles, vertebrae) and for
    :data:`SEVERAL_PIECES`; a segmentation's clean-up keeps only the largest connected
    component of one-piece structures (an island of such a structure is an error).
    """
    return not group_members(key) and _split_side(key)[0] not in SEVERAL_PIECES


def _normalise(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").replace("/", " ").split())


_ALIASES: dict[str, str] = {}
for _st in ANATOMY:
    _ALIASES[_normalise(_st.key)] = _st.key
    _ALIASES[_normalise(_st.display_name)] = _st.key
    for _a in _st.aliases:
        _ALIASES.setdefault(_normalise(_a), _st.key)


def structure(key: str) -> Structure:
    """The :class:`Structure` of an anatomy key; raises KeyError naming the key."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"'{key}' is not in the CTMuscleBone anatomy table") from None


def key_for_name(name: str) -> str | None:
    """Anatomy key for a structure name from another tool, or None when unknown.

    Accepts keys, display names ("Gluteus medius (left)"), TotalSegmentator v2 names
    and the aliases in the table; case, spaces and dashes do not matter.
    """
    n = _normalise(name)
    if n in _ALIASES:
        return _ALIASES[n]
    # "Gluteus medius (left)" / "gluteus medius left" style
    n2 = n.replace("(", "").replace(")", "")
    return _ALIASES.get(n2)


def canonical_label_names() -> dict[int, str]:
    """Canonical label value -> anatomy key, for CTMuscleBone label maps."""
    return {st.label_value: st.key for st in ANATOMY}


def keys_in(group: Group | None = None, region: str | None = None) -> list[str]:
    """Anatomy keys of a group and/or muscle region, in table order."""
    return [
        st.key
        for st in ANATOMY
        if (group is None or st.group == group) and (region is None or st.region == region)
    ]
