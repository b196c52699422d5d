"""Build a synthetic CT phantom with ground truth: :func:`make_phantom`.

The phantom is one analytic object in the LPS patient frame (mm; +x patient LEFT,
+y POSTERIOR, +z SUPERIOR). Fixed layout (details in :mod:`.layout`,
:mod:`.muscles`, :mod:`.pelvis`):

* femoral head centres: left (+90, 0, 0), right (-90, 0, 0); the femurs come from
  :mod:`.femur` (neck-shaft angle, anteversion, sizes from ``spec.femur``), their
  shafts extended down to z = -295; thigh muscles and thigh outlines follow the shaft
  axis of the femur built (vertical through (+-131.2, 8.8, -35.4) for the femur
  defaults);
* lumbar vertebrae L5..L1: body centres (0, +40, 78 + 37 n), n = 0 (L5) .. 4 (L1);
* sacrum below L5 (centre (0, 55, 25)); hip bones: acetabulum around each femoral
  head, ilium wing at x ~ +-100, z 50..120, pubic and ischial rami;
* muscles (left side, right mirrored): gluteus maximus posterior of the hip (y ~ 92),
  gluteus medius / minimus lateral and superior of the hip, iliopsoas anterior
  (y ~ -62), psoas major beside the lumbar bodies, erector spinae (autochthon)
  posterior of the vertebrae (y ~ 105), thigh muscles (vasti, rectus femoris,
  sartorius, adductors, gracilis, hamstrings) around the femoral shaft, z -290..-95;
* aorta (x +15) and inferior vena cava (x -20) anterior of the spine, z 100..280;
* body outline: trunk z -40..280 (ellipse 190 x 140 mm, 18 mm subcutaneous fat),
  thighs z -300..-40 (76 x 88 mm ellipses following the shafts, 12 mm fat);
* calibration phantom (optional) under the body: rod row centred at (0, +182, zc).

Regions (z ranges, mm): 'hip' -110..70, 'lumbar' 45..260, 'thigh' -300..-90,
'full' -300..280 (lumbar and full 37 mm higher with six lumbar vertebrae); x and y
cover the body (with arms, when present, and the calibration phantom) + 10 mm, cut at
x = +-``lateral_limit_mm`` when given.

Patient-like options (each default leaves the layout above unchanged): ``lumbar_count``
4 / 6, body habitus (``trunk_fat_mm``, ``thigh_fat_mm``, ``body_scale``,
:class:`.body.Habitus`), muscle atrophy (``muscle_atrophy``: cross-sections shrunk in
place, the space left painted as unlabelled fat before the muscles), contrast-like
vessels (``hu_blood``, ``hu_ivc``), arms at the sides (``arms``, :mod:`.arms`,
unlabelled, painted right after the body) and lateral truncation.

Tissue HU defaults (fat -100, muscle 50, blood 40, soft tissue 30, air -1000) are
synthetic round numbers of the usual order at 120 kVp, not measurements; the bone
densities are synthetic too. The femur, vertebrae and calibration rods come from
their own modules (:mod:`.femur`, :mod:`.vertebra`, :mod:`.calibration_rods`).

Painting order: body (fat, soft tissue), aorta / IVC, muscles, hip bones and sacrum,
vertebrae, femurs, calibration phantom; then streaks and metal (HU only); then every
voxel whose centre lies outside the field-of-view box (after truncation) gets label 0
(this matters for oblique grids, which cover the rotated box, and for truncation), so
every orientation holds the same physical content; then, when ``psf_fwhm_mm`` > 0, the
scanner's blur (an isotropic Gaussian point-spread function of that FWHM applied in
physical space, :mod:`.psf`; labels stay the sharp analytic ones); then Gaussian noise
(seeded); last, the voxels outside the box take the scanner's padding value
(:data:`PADDING_VALUE_HU`, -3024 HU, exact, no noise), as a scanner stores the voxels
outside its reconstructed region: the measurement (:mod:`CTMuscleBoneLib.fov`) sees a
structure reaching them as cut by the field of view, exactly as one reaching the edge of
an LPS grid, whose faces are the box. ``truth.overwrites`` lists labelled
voxels that a later component took over: empty for the default layout (the tests
check it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..anatomy import BY_LABEL_VALUE, canonical_label_names, structure
from ..errors import InputError
from ..image import CTImage, CTMetadata, Geometry, LabelMap
from . import layout
from .arms import ArmComponent
from .base import ScannerModel
from .body import BodyComponent, Habitus
from .calibration_rods import CalibrationRodsPhantom
from .femur import FemurPhantom, FemurSpec
from .metal import MetalComponent, StreakComponent, implant_shape
from .muscles import (
    MUSCLE_BASES,
    IntermuscularFat,
    MuscleComponent,
    atrophied_shape,
    extended_shape,
    muscle_shape,
)
from .pelvis import pelvis_components
from .psf import blur_hu
from .rasterize import (
    RasterResult,
    direction_for,
    geometry_for,
    index_box,
    is_axis_aligned,
    rasterize,
    voxel_centres_mm,
)
from .shapes import SweptEllipse
from .solid import SolidComponent
from .vertebra import VertebraSpec, lumbar_spine

#: Allowed scale of the lean trunk / thigh outlines (synthetic: at 1.0 the gluteus
#: maximus and the hamstrings already reach 97 % of the lean outline's radius, so it
#: may grow but not shrink; above 1.3 the thighs of an obese phantom would overlap).
#: Thin habitus is thin fat.
BODY_SCALE_RANGE = (1.0, 1.3)
#: Value of the voxels outside the field-of-view box (the corners of an oblique grid),
#: HU: the padding most scanners write outside the reconstructed region (GE, Canon,
#: Philips: -3024; some Siemens series: -2048). Below
#: :data:`CTMuscleBoneLib.fov.PADDING_HU`, so the measurement sees it as outside the
#: field of view, as on a clinical CT.
PADDING_VALUE_HU = -3024.0
#: Margin (mm) added around the body in x and y.
FOV_MARGIN_MM = 10.0
#: Calibration phantom rod-row centre (x, y), mm: posterior of the trunk outline
#: (y <= 160) with room for the resin block.
CALIBRATION_CENTER_XY_MM = (0.0, 182.0)


@dataclass
class PhantomSpec:
    """What phantom to build. Every default is a synthetic choice.

    Attributes
    ----------
    region : 'hip' | 'lumbar' | 'thigh' | 'full' or (z_min, z_max) mm
        z range of the field of view (see module docstring).
    fov_mm : ((x0, y0, z0), (x1, y1, z1)) or None
        Explicit LPS box of the field of view; overrides ``region``.
    spacing_mm : float or (3,)
        Voxel size along array axes 0, 1, 2, mm (anisotropic allowed).
    orientation : 'LPS' | 'RAS' | 'permuted' | 'oblique' or (3, 3) direction matrix
        Storage orientation (see :data:`.rasterize.ORIENTATIONS`); the physical
        object is the same in all.
    noise_sd_hu : float
        SD of the added white Gaussian noise, HU (synthetic default 10).
    psf_fwhm_mm : float
        Scanner point-spread function: FWHM (mm) of an isotropic Gaussian blur applied
        in physical space to the noiseless HU before the noise (:mod:`.psf`); 0 = none
        (default). Clinical body kernels are about 0.7-2 mm. The labels and the truth
        stay the sharp analytic ones (the blur moves mineral, it does not change it).
    seed : int
        Seeds the noise and the intramuscular fat pattern.
    dtype : 'int16' | 'float32'
        Voxel type of the CT (int16 values are rounded and clipped to -1024..3071).
    hu_fat, hu_muscle, hu_blood, hu_soft_tissue, hu_air : float
        Tissue HU (synthetic defaults -100, 50, 40, 30, -1000).
    sex, height_m, age_years : patient metadata written to the CT.
    muscle_fat_fraction : float
        Designed intramuscular fat fraction of every muscle (0..0.9).
    muscle_fat_fractions : dict
        Per-muscle overrides, keyed by anatomy key (``gluteus_medius_left``) or by
        base name (``gluteus_medius``, both sides).
    muscles : tuple of str or None
        Muscle base names to include (None = all of :data:`.muscles.MUSCLE_BASES`).
    bones : tuple of str
        Bones to include: any of 'femur', 'vertebrae', 'hip', 'sacrum'.
    sides : tuple of str
        Sides of paired structures to include.
    vessels : bool
        Include aorta and inferior vena cava (blood HU).
    femur : dict
        Keyword arguments passed to ``FemurSpec`` for both femurs (e.g.
        ``neck_shaft_angle_deg``, ``anteversion_deg``, size); ``femur_left`` /
        ``femur_right`` override per side.
    vertebra_bmd_mg_cm3 : float or dict
        Trabecular density of every level, or per level ``{'L1': 90.0, ...}``
        (synthetic default 120 mg/cm3).
    vertebra : dict
        Further ``VertebraSpec`` keyword arguments for every level.
    fractured_level : str or None
        A level ('L1'..'L5') given a wedge fracture of ``fracture_ratio``.
    fracture_type, fracture_ratio : fracture of that level (Genant-style ratio).
    hip_bmd_mg_cm3, sacrum_bmd_mg_cm3 : densities of hip bones and sacrum
        (synthetic defaults 220 and 180 mg/cm3).
    calibration : bool
        Add a calibration phantom under the body.
    calibration_definition : str
        Its definition ('B-MAS200', 'Mindways Model 3', 'QRM-BDC' or a file path).
    metal : tuple of str
        Implants: 'femoral_stem_left', 'femoral_stem_right', 'pedicle_screw_L1'..'L5'.
    metal_streak_hu : float
        Streak artefact amplitude around each implant (0 = none), HU.
    truncation : ('inferior' | 'superior', z_mm) or None
        Cut the field of view: 'inferior' removes everything below z, 'superior'
        everything above z.
    scanner : ScannerModel
        HU <-> BMD relation of the synthetic scanner.
    lumbar_count : int
        Lumbar vertebrae: 5 (L5..L1, default), 4 (L5..L2: no L1) or 6 (L5..L1 and one
        more vertebra of L1's shape 37 mm above L1, labelled ``vertebrae_lumbar``;
        trunk, vessels, psoas, autochthon and the 'lumbar' / 'full' regions then reach
        37 mm higher). Sacrum and L5 stay where they are.
    trunk_fat_mm, thigh_fat_mm : float or None
        Subcutaneous fat thickness of trunk / thighs, mm (None = layout 18 / 12;
        allowed 2-80 / 2-60).
    body_scale : float
        Scale of the lean (fat-free) trunk and thigh outlines (1 = layout; allowed
        1.0-1.3: smaller would cut into the muscles).
    muscle_atrophy : float
        Factor (0.3..1) shrinking every muscle's axial cross-section about its own
        axis (volume x factor^2); the space left becomes unlabelled fat.
    muscle_atrophy_factors : dict
        Per-muscle overrides, keyed like ``muscle_fat_fractions``.
    hu_ivc : float or None
        HU of the inferior vena cava (None = ``hu_blood``): contrast phases enhance
        aorta and IVC differently.
    arms : bool
        Add two arms (unlabelled fat, muscle, humerus-like bone) lateral of the trunk,
        z 0 .. trunk top (:mod:`.arms`); the field of view widens to include them.
    lateral_limit_mm : float or None
        Lateral truncation: cut the field of view at x = +-limit (mm), besides any
        ``truncation`` in z.
    """

    region: str | tuple[float, float] = "hip"
    fov_mm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    spacing_mm: float | tuple[float, float, float] = 2.0
    orientation: str | np.ndarray = "LPS"
    noise_sd_hu: float = 10.0
    psf_fwhm_mm: float = 0.0
    seed: int = 0
    dtype: str = "int16"
    hu_fat: float = -100.0
    hu_muscle: float = 50.0
    hu_blood: float = 40.0
    hu_soft_tissue: float = 30.0
    hu_air: float = -1000.0
    sex: str = "F"
    height_m: float = 1.60
    age_years: float = 70.0
    muscle_fat_fraction: float = 0.05
    muscle_fat_fractions: dict[str, float] = field(default_factory=dict)
    muscles: tuple[str, ...] | None = None
    bones: tuple[str, ...] = ("femur", "vertebrae", "hip", "sacrum")
    sides: tuple[str, ...] = ("left", "right")
    vessels: bool = True
    femur: dict[str, Any] = field(default_factory=dict)
    femur_left: dict[str, Any] = field(default_factory=dict)
    femur_right: dict[str, Any] = field(default_factory=dict)
    vertebra_bmd_mg_cm3: float | dict[str, float] = 120.0
    vertebra: dict[str, Any] = field(default_factory=dict)
    fractured_level: str | None = None
    fracture_type: str = "wedge"
    fracture_ratio: float = 0.7
    hip_bmd_mg_cm3: float = 220.0
    sacrum_bmd_mg_cm3: float = 180.0
    calibration: bool = False
    calibration_definition: str = "B-MAS200"
    metal: tuple[str, ...] = ()
    metal_streak_hu: float = 150.0
    truncation: tuple[str, float] | None = None
    scanner: ScannerModel = field(default_factory=ScannerModel)
    lumbar_count: int = 5
    trunk_fat_mm: float | None = None
    thigh_fat_mm: float | None = None
    body_scale: float = 1.0
    muscle_atrophy: float = 1.0
    muscle_atrophy_factors: dict[str, float] = field(default_factory=dict)
    hu_ivc: float | None = None
    arms: bool = False
    lateral_limit_mm: float | None = None


@dataclass
class StructureTruth:
    """Ground truth of one labelled structure.

    Attributes
    ----------
    key, label_value : anatomy key and canonical label value.
    group : 'bone' | 'muscle' | 'other'
    volume_cm3 : float or None
        Analytic volume of the whole structure (None when its module gives none).
    volume_in_fov_cm3 : float or None
        Analytic volume inside the field of view (equals ``volume_cm3`` when not
        truncated; None when not computable analytically).
    voxel_count : int
        Voxels carrying the label.
    voxel_volume_cm3 : float
        ``voxel_count`` x voxel volume.
    hu_designed : float or None
        Analytic noiseless mean HU (muscles: (1 - f) muscle + f fat with the designed
        fraction f; solids: their HU).
    hu_set_mean : float
        Mean noiseless HU over the structure's voxels as painted (before metal and
        noise): what a measurement of the noisy image should find within noise.
    fat_fraction_designed, fat_fraction_realised : float or None
        Intramuscular fat (muscles only): designed, and the fraction of the
        structure's voxels painted with the fat HU.
    truncated : bool
        The structure extends beyond the field of view (cut by the FOV or truncation).
    """

    key: str
    label_value: int
    group: str
    volume_cm3: float | None
    volume_in_fov_cm3: float | None
    voxel_count: int
    voxel_volume_cm3: float
    hu_designed: float | None
    hu_set_mean: float | None
    fat_fraction_designed: float | None = None
    fat_fraction_realised: float | None = None
    truncated: bool = False


@dataclass
class PhantomTruth:
    """Everything known about a phantom by construction.

    Attributes
    ----------
    structures : dict[str, StructureTruth]
        Per anatomy key present in the phantom's design (also those cut away).
    components : dict[str, Any]
        Truth of the femur (``femur_left``...), vertebra (``vertebrae_L3``...),
        calibration (``calibration``), pelvis, body and metal components; a
        :class:`LazyTruths` (each entry is computed on first access).
    scanner : ScannerModel
    spec : PhantomSpec
    fov_min_mm, fov_max_mm : (3,) LPS box the phantom was built for (after truncation).
    overwrites : dict[(str, str), int]
        (old key, new key or 'none') -> voxels a later component took over.
    metal : dict[str, dict]
        Per implant: voxels with metal HU and the labels they lie in.
    tissue_hu : dict[str, float]
    notes : list of str
        Remarks made while building (e.g. adjusted parameters).
    """

    structures: dict[str, StructureTruth]
    components: dict[str, Any]
    scanner: ScannerModel
    spec: PhantomSpec
    fov_min_mm: np.ndarray
    fov_max_mm: np.ndarray
    overwrites: dict[tuple[str, str], int]
    metal: dict[str, dict]
    tissue_hu: dict[str, float]
    notes: list[str]


@dataclass
class Phantom:
    """A synthetic CT with its ground truth.

    Attributes
    ----------
    ct : CTImage
        HU volume (int16 or float32) with metadata (modality 'CT', 120 kVp).
    labels : LabelMap
        Ground-truth labels (canonical values), source 'phantom ground truth'.
    truth : PhantomTruth
    """

    ct: CTImage
    labels: LabelMap
    truth: PhantomTruth

    @property
    def geometry(self) -> Geometry:
        return self.ct.geometry


# -- components ------------------------------------------------------------------------
def _fat_fraction(spec: PhantomSpec, key: str, base: str) -> float:
    f = spec.muscle_fat_fractions.get(key, spec.muscle_fat_fractions.get(base,
                                                                         spec.muscle_fat_fraction))
    if not 0.0 <= f <= 0.9:
        raise InputError(f"Fat fraction {f} of {key} must lie between 0 and 0.9.")
    return float(f)


def _atrophy(spec: PhantomSpec, key: str, base: str) -> float:
    f = spec.muscle_atrophy_factors.get(key, spec.muscle_atrophy_factors.get(
        base, spec.muscle_atrophy))
    if not 0.3 <= f <= 1.0:
        raise InputError(f"Atrophy factor {f} of {key} must lie between 0.3 and 1 "
                         "(1 = no atrophy).")
    return float(f)


def muscle_components(spec: PhantomSpec, shafts: dict[str, layout.ShaftLine] | None = None
                      ) -> list[MuscleComponent]:
    """The muscles of the spec (both sides), with seeded fat fields; thigh muscles
    follow ``shafts`` (femoral shaft line per side, default the layout's). Atrophied
    muscles carry their shrunk shape (:func:`.muscles.atrophied_shape`)."""
    bases = MUSCLE_BASES if spec.muscles is None else tuple(spec.muscles)
    extra = layout.cranial_extension_mm(spec.lumbar_count)
    out = []
    for base in bases:
        if base not in MUSCLE_BASES:
            raise InputError(f"Unknown phantom muscle '{base}'; choose from {MUSCLE_BASES}.")
        for side in spec.sides:
            key = f"{base}_{side}"
            shape = extended_shape(muscle_shape(base, side, (shafts or {}).get(side)), base,
                                   extra)
            f = _atrophy(spec, key, base)
            out.append(MuscleComponent(
                key, atrophied_shape(shape, f), spec.hu_muscle,
                spec.hu_fat,
                _fat_fraction(spec, key, base),
                seed=int(spec.seed) * 1000 + structure(key).label_value,
                atrophy=f,
            ))
    return out


def intermuscular_fat_components(spec: PhantomSpec, muscles: list[MuscleComponent]
                                 ) -> list[IntermuscularFat]:
    """Unlabelled fat where atrophied muscles were (their unshrunk shapes), painted
    before the muscles."""
    out = []
    for m in muscles:
        if m.atrophy != 1.0:
            base = m.key.rsplit("_", 1)[0]
            shape = m.shape
            if isinstance(shape, SweptEllipse):
                a, b = shape.semi_axes_mm
                shape = dataclasses.replace(shape, semi_axes_mm=(a / m.atrophy, b / m.atrophy))
            else:
                side = m.key.rsplit("_", 1)[1]
                shape = muscle_shape(base, side)
            out.append(IntermuscularFat(shape, spec.hu_fat))
    return out


def arm_components(spec: PhantomSpec, habitus: Habitus) -> list[ArmComponent]:
    """Both arms (unlabelled) when ``spec.arms``."""
    if not spec.arms:
        return []
    return [ArmComponent(side, habitus, spec.hu_fat, spec.hu_muscle, spec.scanner)
            for side in ("left", "right")]


def habitus_of(spec: PhantomSpec) -> Habitus:
    """The body size of a spec (fat thicknesses, lean scale, trunk top)."""
    return Habitus(
        trunk_fat_mm=layout.TRUNK_FAT_MM if spec.trunk_fat_mm is None
        else float(spec.trunk_fat_mm),
        thigh_fat_mm=layout.THIGH_FAT_MM if spec.thigh_fat_mm is None
        else float(spec.thigh_fat_mm),
        lean_scale=float(spec.body_scale),
        trunk_z1_mm=layout.TRUNK_Z_MM[1] + layout.cranial_extension_mm(spec.lumbar_count),
    )


def vessel_components(spec: PhantomSpec) -> list[SolidComponent]:
    """Aorta and inferior vena cava (blood HU), anterior of the lumbar spine."""
    if not spec.vessels:
        return []
    z1 = 280.0 + layout.cranial_extension_mm(spec.lumbar_count)
    hu_ivc = spec.hu_blood if spec.hu_ivc is None else spec.hu_ivc
    return [
        SolidComponent("aorta", SweptEllipse((15.0, 0.0), (11.0, 11.0), 100.0, z1),
                       spec.hu_blood),
        SolidComponent("inferior_vena_cava",
                       SweptEllipse((-20.0, 0.0), (12.0, 9.0), 100.0, z1), hu_ivc),
    ]


def femur_components(spec: PhantomSpec) -> list[FemurPhantom]:
    """FemurPhantom components of both sides at the layout's head centres."""
    if "femur" not in spec.bones:
        return []
    out = []
    for side in spec.sides:
        params = {**spec.femur, **(spec.femur_left if side == "left" else spec.femur_right)}
        kwargs = {"side": side, "head_centre_mm": tuple(layout.head_center_mm(side)), **params}
        femur = FemurPhantom(FemurSpec(**kwargs), spec.scanner)
        if "shaft_length_mm" not in params:
            # extend the shaft to the bottom of the thigh outline (the femur module's
            # default is a proximal femur only)
            kwargs["shaft_length_mm"] = float(femur.meeting_point[2]) - (
                layout.THIGH_Z_MM[0] + 5.0)
            femur = FemurPhantom(FemurSpec(**kwargs), spec.scanner)
        out.append(femur)
    return out


def shaft_lines(femurs: list[FemurPhantom]) -> dict[str, layout.ShaftLine]:
    """Femoral shaft line (point, slope) per side from the femurs built; the layout's
    default for sides without a femur."""
    out = {side: layout.shaft_line(side) for side in ("left", "right")}
    for f in femurs:
        out[f.spec.side] = layout.shaft_line_from_axis(f.meeting_point, f.shaft_axis)
    return out


def vertebra_components(spec: PhantomSpec) -> list[Any]:
    """VertebraPhantom components (with discs) at the layout positions: L5..L1, or
    those of :func:`.layout.lumbar_stack` for ``spec.lumbar_count``. The density of the
    sixth vertebra is ``vertebra_bmd_mg_cm3['L6']`` (or ``['vertebrae_lumbar']``) when
    given per level."""
    if "vertebrae" not in spec.bones:
        return []
    specs = []
    for key, level, centre in layout.lumbar_stack(spec.lumbar_count):
        extra = key == layout.EXTRA_LUMBAR_KEY
        bmd = spec.vertebra_bmd_mg_cm3
        if isinstance(bmd, dict):
            bmd = bmd.get("L6", bmd.get(key, 120.0)) if extra else bmd.get(level, 120.0)
        kw: dict[str, Any] = {"level": level,
                              "body_centre_mm": tuple(centre),
                              "trabecular_bmd_mg_cm3": float(bmd), **spec.vertebra}
        if extra:
            kw["label_key"] = key
        elif spec.fractured_level == level:
            kw.update(fracture=spec.fracture_type, fracture_ratio=spec.fracture_ratio)
        specs.append(VertebraSpec(**kw))
    return list(lumbar_spine(specs, spec.scanner))


def lumbar_spine_truth(vertebrae: list[Any]) -> dict[str, Any]:
    """Summary of the lumbar column: count and, caudal first, each vertebra's anatomy
    key, label value, level counted from the sacrum ('L5' ... with 'L6' for a sixth),
    body centre (LPS mm) and nominal body height (mm)."""
    out = []
    for i, v in enumerate(vertebrae):
        out.append({
            "key": v.spec.key, "label_value": int(v.label_value),
            "level_from_sacrum": f"L{5 - i}" if i < 5 else "L6",
            "shape_level": v.spec.level,
            "body_centre_mm": tuple(float(c) for c in v.centre),
            "body_height_mm": float(v.spec.size_mm[2]),
        })
    return {"count": len(vertebrae), "vertebrae": out}


def calibration_centre_xy_mm(body_bounds: tuple[np.ndarray, np.ndarray] | None = None
                             ) -> tuple[float, float]:
    """Rod-row centre (x, y) mm: :data:`CALIBRATION_CENTER_XY_MM`, moved posterior when a
    larger body (``body_bounds``, LPS min / max corners) reaches within 22 mm of it."""
    y = CALIBRATION_CENTER_XY_MM[1]
    if body_bounds is not None:
        y = max(y, float(body_bounds[1][1]) + 22.0)
    return (CALIBRATION_CENTER_XY_MM[0], y)


def calibration_components(spec: PhantomSpec, z_range: tuple[float, float],
                           centre_xy_mm: tuple[float, float] = CALIBRATION_CENTER_XY_MM
                           ) -> list[CalibrationRodsPhantom]:
    """The calibration phantom under the body, spanning the FOV's z range."""
    if not spec.calibration:
        return []
    zc = (z_range[0] + z_range[1]) / 2.0
    return [CalibrationRodsPhantom(
        spec.calibration_definition, spec.scanner,
        centre_mm=(*centre_xy_mm, zc),
        rod_length_mm=min(200.0, z_range[1] - z_range[0]),
    )]


# -- FOV -------------------------------------------------------------------------------
def _z_range(spec: PhantomSpec) -> tuple[float, float]:
    if isinstance(spec.region, str):
        if spec.region not in layout.REGIONS_Z_MM:
            raise InputError(f"Unknown phantom region '{spec.region}'; use one of "
                             f"{sorted(layout.REGIONS_Z_MM)} or a (z_min, z_max) pair in mm.")
        z0, z1 = layout.REGIONS_Z_MM[spec.region]
        if spec.region in ("lumbar", "full"):
            z1 += layout.cranial_extension_mm(spec.lumbar_count)
        return z0, z1
    z0, z1 = (float(v) for v in spec.region)
    if z1 <= z0:
        raise InputError(f"Phantom region z range {spec.region} is empty.")
    return z0, z1


def _fov(spec: PhantomSpec, body_bounds: tuple[np.ndarray, np.ndarray],
         calibration_y_mm: float = CALIBRATION_CENTER_XY_MM[1]
         ) -> tuple[np.ndarray, np.ndarray]:
    if spec.fov_mm is not None:
        lo, hi = (np.asarray(v, dtype=float) for v in spec.fov_mm)
    else:
        z0, z1 = _z_range(spec)
        lo = np.array([*(body_bounds[0][:2] - FOV_MARGIN_MM), z0])
        hi = np.array([*(body_bounds[1][:2] + FOV_MARGIN_MM), z1])
        if spec.calibration:
            hi[1] = max(hi[1], calibration_y_mm + 40.0)
    if spec.lateral_limit_mm is not None:
        lim = float(spec.lateral_limit_mm)
        lo[0], hi[0] = max(lo[0], -lim), min(hi[0], lim)
    if spec.truncation is not None:
        where, z = spec.truncation
        if where == "inferior":
            lo[2] = max(lo[2], float(z))
        elif where == "superior":
            hi[2] = min(hi[2], float(z))
        else:
            raise InputError(f"Truncation '{where}' unknown: use 'inferior' or 'superior'.")
        if hi[2] <= lo[2]:
            raise InputError(f"Truncation at z = {z} mm leaves nothing of the field of view.")
    return lo, hi


def _volume_in_box(shape: Any, lo: np.ndarray, hi: np.ndarray) -> float | None:
    """Analytic volume (mm^3) of a shape inside an LPS box, where simple; else None."""
    slo, shi = shape.bounds_mm()
    if np.all(slo >= lo) and np.all(shi <= hi):
        return float(shape.volume_mm3)
    if np.any(shi < lo) or np.any(slo > hi):
        return 0.0
    if isinstance(shape, SweptEllipse):
        # only z clipping is exact (x / y clipping of an ellipse is not needed here)
        z0, z1 = max(shape.z0_mm, lo[2]), min(shape.z1_mm, hi[2])
        c0, c1 = shape.center_at(z0), shape.center_at(z1)
        a, b = shape.semi_axes_mm
        ext = max(a, b)
        if np.all(np.minimum(c0, c1) - ext >= lo[:2]) and np.all(np.maximum(c0, c1) + ext
                                                                 <= hi[:2]):
            return float(np.pi * a * b * max(0.0, z1 - z0))
    return None


def _truth_dict(obj: Any) -> Any:
    t = obj.truth()
    return dataclasses.asdict(t) if dataclasses.is_dataclass(t) else t


class LazyTruths(dict):
    """A dict whose values added with :meth:`add` are a component's truth (as a dict),
    computed on first access and kept (the femur's exact line integrals take ~1 s)."""

    def add(self, key: Any, component: Any) -> None:
        super().__setitem__(key, _Pending(component))

    def __getitem__(self, key: Any) -> Any:
        v = super().__getitem__(key)
        if isinstance(v, _Pending):
            v = _truth_dict(v.component)
            super().__setitem__(key, v)
        return v

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def values(self):  # noqa: ANN201
        return [self[k] for k in self]

    def items(self):  # noqa: ANN201
        return [(k, self[k]) for k in self]


@dataclass
class _Pending:
    component: Any


# -- the builder ---------------------------------------------------------------------------
def make_phantom(spec: PhantomSpec | None = None, **overrides: Any) -> Phantom:
    """Build the synthetic CT, its ground-truth labels and the analytic truth.

    Parameters
    ----------
    spec : PhantomSpec, optional
        What to build (default :class:`PhantomSpec`).
    **overrides
        Fields replacing those of ``spec`` (``make_phantom(region='thigh')``).

    Returns
    -------
    Phantom
        ``.ct`` (HU, shape = geometry.shape, ITK index order), ``.labels`` and
        ``.truth``.
    """
    spec = dataclasses.replace(spec or PhantomSpec(), **overrides)
    _validate(spec)
    notes: list[str] = []
    femurs = femur_components(spec)
    shafts = shaft_lines(femurs)
    habitus = habitus_of(spec)
    _check_thighs(habitus, shafts)
    body = BodyComponent(spec.hu_fat, spec.hu_soft_tissue, shafts, habitus)
    arms = arm_components(spec, habitus)
    body_bounds = body.bounds_mm()
    cal_xy = calibration_centre_xy_mm(body_bounds)
    if arms:
        b = [body_bounds, *(a.bounds_mm() for a in arms)]
        body_bounds = (np.min([x[0] for x in b], axis=0), np.max([x[1] for x in b], axis=0))
    lo, hi = _fov(spec, body_bounds, cal_xy[1])
    geometry = geometry_for(lo, hi, spec.spacing_mm, spec.orientation)

    muscles = muscle_components(spec, shafts)
    ghosts = intermuscular_fat_components(spec, muscles)
    bones: list[Any] = pelvis_components(
        spec.scanner, spec.hip_bmd_mg_cm3, spec.sacrum_bmd_mg_cm3, spec.sides,
        hip="hip" in spec.bones, sacrum="sacrum" in spec.bones)
    vertebrae = vertebra_components(spec)
    calib = calibration_components(spec, (float(lo[2]), float(hi[2])), cal_xy)
    vessels = vessel_components(spec)
    anatomy = [body, *arms, *vessels, *ghosts, *muscles, *bones, *vertebrae, *femurs, *calib]

    res = rasterize(anatomy, geometry, background_hu=spec.hu_air)
    cut = _outside_fov_mask(geometry, lo, hi)
    if cut is not None:
        res.labels[cut] = 0
        res.hu[cut] = spec.hu_air

    truths = LazyTruths()
    for c in [*vertebrae, *femurs, *calib]:
        truths.add(id(c), c)
    structures = _structure_truth(spec, geometry, res, body, muscles, [*vessels, *bones],
                                  vertebrae, femurs, calib, lo, hi, truths)

    metal_truth: dict[str, dict] = {}
    if spec.metal:
        streaks = [StreakComponent(m, spec.metal_streak_hu, shafts) for m in spec.metal
                   if spec.metal_streak_hu != 0]
        metals = [MetalComponent(m, shafts=shafts) for m in spec.metal]
        rasterize(streaks, geometry, result=res)
        for m in metals:
            box = index_box(geometry, *m.bounds_mm())
            if box is None:  # the implant misses the grid: nothing painted
                box = (np.zeros(3, dtype=int), np.zeros(3, dtype=int))
            s = tuple(slice(a, b) for a, b in zip(*box, strict=True))  # all it can paint
            before = res.hu[s].copy()
            rasterize([m], geometry, result=res)
            hit = (res.hu[s] == m.hu) & (before != m.hu)
            labels_hit, counts = np.unique(res.labels[s][hit], return_counts=True)
            metal_truth[m.name] = {
                "voxels": int(hit.sum()), "hu": m.hu,
                "labels": {(BY_LABEL_VALUE[int(v)].key if int(v) in BY_LABEL_VALUE
                            else "none"): int(c) for v, c in zip(labels_hit, counts, strict=True)},
            }
        if cut is not None:
            res.labels[cut] = 0
            res.hu[cut] = spec.hu_air

    hu = res.hu
    if spec.psf_fwhm_mm > 0:
        hu = blur_hu(hu, geometry, spec.psf_fwhm_mm, outside=cut, box_mm=(lo, hi))
        if cut is not None:
            hu[cut] = spec.hu_air
        notes.append(f"HU blurred by an isotropic Gaussian PSF of FWHM {spec.psf_fwhm_mm:g} mm "
                     "(labels and truth unblurred)")
    rng = np.random.default_rng(spec.seed)
    if spec.noise_sd_hu > 0:
        hu = hu + rng.normal(0.0, spec.noise_sd_hu, size=hu.shape).astype(np.float32)
    if spec.dtype == "int16":
        hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    elif spec.dtype == "float32":
        hu = hu.astype(np.float32)
    else:
        raise InputError(f"Phantom dtype '{spec.dtype}' unknown: use 'int16' or 'float32'.")
    if cut is not None:  # outside the reconstructed region: the scanner's padding, exact
        hu[cut] = PADDING_VALUE_HU

    metadata = CTMetadata(
        modality="CT", kvp=120.0, manufacturer="CTMuscleBone",
        manufacturer_model="synthetic phantom", patient_sex=spec.sex,
        patient_age_years=spec.age_years, patient_height_m=spec.height_m,
        slice_thickness_mm=float(geometry.spacing_mm[2]), source="synthetic phantom",
        series_description=f"CTMuscleBone phantom ({spec.region}, seed {spec.seed})",
    )
    ct = CTImage(hu=hu, geometry=geometry, metadata=metadata)
    names = canonical_label_names()
    labels = LabelMap(array=res.labels, geometry=geometry, structures=names,
                      source="phantom ground truth")

    components = LazyTruths()
    components["body"] = body.truth()
    for f in femurs:
        components.add(f"femur_{f.spec.side}", f)  # computed on first access (slow-ish)
    for v in vertebrae:
        components.add(v.spec.key, v)
    if vertebrae:
        components["lumbar_spine"] = lumbar_spine_truth(vertebrae)
    for a in arms:
        components[f"arm_{a.side}"] = a.truth()
    for c in calib:
        components.add("calibration", c)
    for b in [*vessels, *bones]:
        components[b.key] = b.truth()
    for m in spec.metal:
        components[f"metal_{m}"] = MetalComponent(m, shafts=shafts).truth()

    key_of = {v: k for v, k in names.items()}
    overwrites = {(key_of.get(a, str(a)), key_of.get(b, "none")): c
                  for (a, b), c in res.overwrites.items()}
    truth = PhantomTruth(
        structures=structures, components=components, scanner=spec.scanner, spec=spec,
        fov_min_mm=lo, fov_max_mm=hi, overwrites=overwrites, metal=metal_truth,
        tissue_hu={"fat": spec.hu_fat, "muscle": spec.hu_muscle, "blood": spec.hu_blood,
                   "soft_tissue": spec.hu_soft_tissue, "air": spec.hu_air},
        notes=notes,
    )
    return Phantom(ct=ct, labels=labels, truth=truth)


def _validate(spec: PhantomSpec) -> None:
    """Raise InputError on a spec that cannot be built, before any work is done."""
    _z_range(spec)
    direction_for(spec.orientation)
    for m in spec.metal:
        implant_shape(m)
    if spec.dtype not in ("int16", "float32"):
        raise InputError(f"Phantom dtype '{spec.dtype}' unknown: use 'int16' or 'float32'.")
    if spec.truncation is not None and spec.truncation[0] not in ("inferior", "superior"):
        raise InputError(f"Truncation '{spec.truncation[0]}' unknown: use 'inferior' or "
                         "'superior'.")
    bad = set(spec.sides) - {"left", "right"}
    if bad:
        raise InputError(f"Unknown side(s) {sorted(bad)}: use 'left' and/or 'right'.")
    bad = set(spec.bones) - {"femur", "vertebrae", "hip", "sacrum"}
    if bad:
        raise InputError(f"Unknown bone(s) {sorted(bad)}: use femur, vertebrae, hip, sacrum.")
    if spec.lumbar_count not in layout.LUMBAR_COUNTS:
        raise InputError(f"lumbar_count {spec.lumbar_count} unsupported: use 4, 5 or 6.")
    present = [lv for _, lv, _ in layout.lumbar_stack(spec.lumbar_count)][:5]
    if spec.fractured_level is not None and spec.fractured_level not in present:
        raise InputError(f"Fractured level '{spec.fractured_level}' must be one of the "
                         f"phantom's levels {sorted(present)}.")
    for m in spec.metal:
        if m.startswith("pedicle_screw_") and m.rsplit("_", 1)[1].upper() not in present:
            raise InputError(f"Implant '{m}': the phantom (lumbar_count "
                             f"{spec.lumbar_count}) has no such level.")
    _validate_habitus(spec)
    if spec.noise_sd_hu < 0:
        raise InputError("noise_sd_hu must be >= 0.")
    if not np.isfinite(spec.psf_fwhm_mm) or spec.psf_fwhm_mm < 0:
        raise InputError("psf_fwhm_mm (scanner blur FWHM, mm) must be a finite number >= 0.")


def _validate_habitus(spec: PhantomSpec) -> None:
    """Raise InputError on body-size, atrophy and lateral-limit values out of range."""
    def bad(name: str, v: float | None, lo: float, hi: float) -> None:
        if v is not None and not (np.isfinite(v) and lo <= v <= hi):
            raise InputError(f"{name} = {v} must lie between {lo:g} and {hi:g}.")
    # ranges: synthetic; the lean-scale floor keeps every muscle inside the lean outline
    bad("trunk_fat_mm", spec.trunk_fat_mm, 2.0, 80.0)
    bad("thigh_fat_mm", spec.thigh_fat_mm, 2.0, 60.0)
    bad("body_scale", spec.body_scale, BODY_SCALE_RANGE[0], BODY_SCALE_RANGE[1])
    bad("muscle_atrophy", spec.muscle_atrophy, 0.3, 1.0)
    if spec.lateral_limit_mm is not None and not (np.isfinite(spec.lateral_limit_mm)
                                                  and spec.lateral_limit_mm > 0):
        raise InputError("lateral_limit_mm (half-width of the field of view in x, mm) must "
                         "be a positive number.")


def _check_thighs(habitus: Habitus, shafts: dict[str, layout.ShaftLine]) -> None:
    """Raise InputError when the two thigh outlines (which follow the femoral shafts)
    would overlap: the body is a union of disjoint pieces."""
    a = habitus.thigh_semi_mm(False)[0]
    for z in layout.THIGH_Z_MM:  # x of the medial skin edge is linear in z
        for side in ("left", "right"):
            p, sl = shafts[side]
            cx = float(p[0] + layout.THIGH_OFFSET_MM[0] * layout.side_sign(side)
                       + sl[0] * (z - p[2]))
            if abs(cx) - a <= 1.0:
                raise InputError(
                    f"Thigh fat {habitus.thigh_fat_mm:g} mm with body_scale "
                    f"{habitus.lean_scale:g} makes the thighs overlap (this femur "
                    "geometry): reduce either.")


def _outside_fov_mask(geometry: Geometry, lo: np.ndarray, hi: np.ndarray
                      ) -> np.ndarray | None:
    """Voxels whose centres lie outside the LPS box ``[lo, hi]`` (bool, geometry.shape),
    or None when there are none (always for axis-aligned grids from :func:`geometry_for`;
    an oblique grid covers the rotated box and so has corners outside it)."""
    if is_axis_aligned(geometry) and _grid_inside_box(geometry, lo, hi):
        return None
    out = np.zeros(geometry.shape, dtype=bool)
    m = geometry.direction * np.asarray(geometry.spacing_mm)[None, :]
    o = np.asarray(geometry.origin_mm, dtype=float)
    a0, a1, a2 = (np.arange(n, dtype=float) for n in geometry.shape)
    step = max(1, (1 << 20) // max(1, geometry.shape[1] * geometry.shape[2]))
    for i0 in range(0, geometry.shape[0], step):  # slabs of ~1 M voxels
        b0 = a0[i0:i0 + step]
        blk = out[i0:i0 + step]
        for c in range(3):  # one LPS coordinate at a time, as voxel_centres_mm computes it
            p = (o[c] + b0[:, None, None] * m[c, 0] + a1[None, :, None] * m[c, 1]
                 + a2[None, None, :] * m[c, 2])
            blk |= (p < lo[c] - 1e-6) | (p > hi[c] + 1e-6)
    return out if out.any() else None


def _grid_inside_box(geometry: Geometry, lo: np.ndarray, hi: np.ndarray) -> bool:
    """True when every voxel centre of an axis-aligned grid lies in ``[lo, hi]`` (within
    1e-6 mm): checked on the two extreme centres along each axis."""
    n = np.asarray(geometry.shape)
    pts = np.concatenate([voxel_centres_mm(geometry, (0, 0, 0), (1, 1, 1)),
                          voxel_centres_mm(geometry, n - 1, n)])
    return bool(np.all((pts >= lo - 1e-6) & (pts <= hi + 1e-6)))


def _structure_truth(spec: PhantomSpec, geometry: Geometry, res: RasterResult,
                     body: BodyComponent, muscles: list[MuscleComponent],
                     solids: list[SolidComponent],
                     vertebrae: list[Any], femurs: list[Any], calib: list[Any],
                     lo: np.ndarray, hi: np.ndarray, truths: dict[int, Any]
                     ) -> dict[str, StructureTruth]:
    """Per-structure truth from the analytic design and the painted (noiseless) arrays."""
    vv = geometry.voxel_volume_cm3
    out: dict[str, StructureTruth] = {}

    def stats(label_value: int, comp: Any) -> tuple[int, float | None, np.ndarray | None]:
        box = index_box(geometry, *comp.bounds_mm())
        if box is None:
            return 0, None, None
        s = tuple(slice(a, b) for a, b in zip(*box, strict=True))
        m = res.labels[s] == label_value
        n = int(m.sum())
        vals = res.hu[s][m]
        return n, (float(vals.mean()) if n else None), vals

    def truncated(comp: Any) -> bool:
        blo, bhi = (np.asarray(b) for b in comp.bounds_mm())
        return bool(np.any(blo < lo - 1e-6) or np.any(bhi > hi + 1e-6))

    for m in muscles:
        n, mean, vals = stats(m.label_value, m)
        realised = float(np.mean(vals == np.float32(m.fat_hu))) if n else None
        vin = _volume_in_box(m.shape, lo, hi)
        out[m.key] = StructureTruth(
            m.key, m.label_value, "muscle", m.shape.volume_mm3 / 1000.0,
            None if vin is None else vin / 1000.0, n, n * vv, m.expected_hu(), mean,
            m.fat_fraction, realised, truncated(m))
    for c in solids:
        n, mean, _ = stats(c.label_value, c)
        vin = _volume_in_box(c.shape, lo, hi)
        out[c.key] = StructureTruth(
            c.key, c.label_value, structure(c.key).group, c.shape.volume_mm3 / 1000.0,
            None if vin is None else vin / 1000.0, n, n * vv, float(c.hu), mean,
            truncated=truncated(c))
    for comp in [*vertebrae, *femurs]:
        lv = getattr(comp, "label_value", None)
        if lv is None or int(lv) not in BY_LABEL_VALUE:
            continue
        key = BY_LABEL_VALUE[int(lv)].key
        n, mean, _ = stats(lv, comp)
        # whole-structure analytic volume only where the module gives a number
        vol = getattr(comp, "volume_cm3", None)
        vol = float(vol) if isinstance(vol, int | float) else None
        tr = truncated(comp)
        out[key] = StructureTruth(key, lv, "bone", vol, None if tr else vol, n, n * vv,
                                  None, mean, truncated=tr)
    for comp in calib:
        for rod in truths[id(comp)].get("rods", []):
            lv = int(rod["label_value"])
            n = int((res.labels == lv).sum())
            vals = res.hu[res.labels == lv]
            out[rod["key"]] = StructureTruth(
                rod["key"], lv, "other", None, None, n, n * vv, float(rod["hu"]),
                float(vals.mean()) if n else None, truncated=truncated(comp))
    fat_lv = body.label_value
    n = int((res.labels == fat_lv).sum())
    whole = body.truth()["volume_cm3"]
    tr = truncated(body)
    out["subcutaneous_fat"] = StructureTruth(
        "subcutaneous_fat", fat_lv, "other", whole, None if tr else whole, n, n * vv,
        spec.hu_fat, float(spec.hu_fat) if n else None, truncated=tr)
    return out
