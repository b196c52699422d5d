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
'full' -300..280; x and y cover the body (and the calibration phantom) + 10 mm.

Tissue HU defaults (fat -100, muscle 50, blood 40, soft tissue 30, air -1000) are
synthetic round numbers of the usual order at 120 kVp, not measurements; the bone
densities are synthetic too. The femur, vertebrae and calibration rods come from
their own modules (:mod:`.femur`, :mod:`.vertebra`, :mod:`.calibration_rods`).

Painting order: body (fat, soft tissue), aorta / IVC, muscles, hip bones and sacrum,
vertebrae, femurs, calibration phantom; then streaks and metal (HU only); then every
voxel whose centre lies outside the field-of-view box (after truncation) is set to
air and label 0 (this matters for oblique grids, which cover the rotated box, and for
truncation), so every orientation holds the same physical content; then, when
``psf_fwhm_mm`` > 0, the scanner's blur (an isotropic Gaussian point-spread function of
that FWHM applied in physical space, :mod:`.psf`; labels stay the sharp analytic
ones); then Gaussian noise (seeded). ``truth.overwrites`` lists labelled
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
from .base import ScannerModel
from .body import BodyComponent
from .calibration_rods import CalibrationRodsPhantom
from .femur import FemurPhantom, FemurSpec
from .metal import MetalComponent, StreakComponent, implant_shape
from .muscles import MUSCLE_BASES, MuscleComponent, muscle_shape
from .pelvis import pelvis_components
from .psf import blur_hu
from .rasterize import (
    RasterResult,
    direction_for,
    geometry_for,
    index_box,
    rasterize,
    voxel_centres_mm,
)
from .shapes import SweptEllipse
from .solid import SolidComponent
from .vertebra import VertebraSpec, lumbar_spine

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


def muscle_components(spec: PhantomSpec, shafts: dict[str, layout.ShaftLine] | None = None
                      ) -> list[MuscleComponent]:
    """The muscles of the spec (both sides), with seeded fat fields; thigh muscles
    follow ``shafts`` (femoral shaft line per side, default the layout's)."""
    bases = MUSCLE_BASES if spec.muscles is None else tuple(spec.muscles)
    out = []
    for base in bases:
        if base not in MUSCLE_BASES:
            raise InputError(f"Unknown phantom muscle '{base}'; choose from {MUSCLE_BASES}.")
        for side in spec.sides:
            key = f"{base}_{side}"
            out.append(MuscleComponent(
                key, muscle_shape(base, side, (shafts or {}).get(side)), spec.hu_muscle,
                spec.hu_fat,
                _fat_fraction(spec, key, base),
                seed=int(spec.seed) * 1000 + structure(key).label_value,
            ))
    return out


def vessel_components(spec: PhantomSpec) -> list[SolidComponent]:
    """Aorta and inferior vena cava (blood HU), anterior of the lumbar spine."""
    if not spec.vessels:
        return []
    return [
        SolidComponent("aorta", SweptEllipse((15.0, 0.0), (11.0, 11.0), 100.0, 280.0),
                       spec.hu_blood),
        SolidComponent("inferior_vena_cava",
                       SweptEllipse((-20.0, 0.0), (12.0, 9.0), 100.0, 280.0), spec.hu_blood),
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
    """VertebraPhantom components L5..L1 (with discs) at the layout positions."""
    if "vertebrae" not in spec.bones:
        return []
    specs = []
    for level in layout.LUMBAR_LEVELS:
        bmd = spec.vertebra_bmd_mg_cm3
        bmd = bmd.get(level, 120.0) if isinstance(bmd, dict) else bmd
        kw: dict[str, Any] = {"level": level,
                              "body_centre_mm": tuple(layout.lumbar_center_mm(level)),
                              "trabecular_bmd_mg_cm3": float(bmd), **spec.vertebra}
        if spec.fractured_level == level:
            kw.update(fracture=spec.fracture_type, fracture_ratio=spec.fracture_ratio)
        specs.append(VertebraSpec(**kw))
    return list(lumbar_spine(specs, spec.scanner))


def calibration_components(spec: PhantomSpec, z_range: tuple[float, float]
                           ) -> list[CalibrationRodsPhantom]:
    """The calibration phantom under the body, spanning the FOV's z range."""
    if not spec.calibration:
        return []
    zc = (z_range[0] + z_range[1]) / 2.0
    return [CalibrationRodsPhantom(
        spec.calibration_definition, spec.scanner,
        centre_mm=(*CALIBRATION_CENTER_XY_MM, zc),
        rod_length_mm=min(200.0, z_range[1] - z_range[0]),
    )]


# -- FOV -------------------------------------------------------------------------------
def _z_range(spec: PhantomSpec) -> tuple[float, float]:
    if isinstance(spec.region, str):
        if spec.region not in layout.REGIONS_Z_MM:
            raise InputError(f"Unknown phantom region '{spec.region}'; use one of "
                             f"{sorted(layout.REGIONS_Z_MM)} or a (z_min, z_max) pair in mm.")
        return layout.REGIONS_Z_MM[spec.region]
    z0, z1 = (float(v) for v in spec.region)
    if z1 <= z0:
        raise InputError(f"Phantom region z range {spec.region} is empty.")
    return z0, z1


def _fov(spec: PhantomSpec, body_bounds: tuple[np.ndarray, np.ndarray]
         ) -> tuple[np.ndarray, np.ndarray]:
    if spec.fov_mm is not None:
        lo, hi = (np.asarray(v, dtype=float) for v in spec.fov_mm)
    else:
        z0, z1 = _z_range(spec)
        lo = np.array([*(body_bounds[0][:2] - FOV_MARGIN_MM), z0])
        hi = np.array([*(body_bounds[1][:2] + FOV_MARGIN_MM), z1])
        if spec.calibration:
            hi[1] = max(hi[1], CALIBRATION_CENTER_XY_MM[1] + 40.0)
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
    body = BodyComponent(spec.hu_fat, spec.hu_soft_tissue, shafts)
    lo, hi = _fov(spec, body.bounds_mm())
    geometry = geometry_for(lo, hi, spec.spacing_mm, spec.orientation)

    muscles = muscle_components(spec, shafts)
    bones: list[Any] = pelvis_components(
        spec.scanner, spec.hip_bmd_mg_cm3, spec.sacrum_bmd_mg_cm3, spec.sides,
        hip="hip" in spec.bones, sacrum="sacrum" in spec.bones)
    vertebrae = vertebra_components(spec)
    calib = calibration_components(spec, (float(lo[2]), float(hi[2])))
    vessels = vessel_components(spec)
    anatomy = [body, *vessels, *muscles, *bones, *vertebrae, *femurs, *calib]

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
            before = res.hu.copy()
            rasterize([m], geometry, result=res)
            hit = (res.hu == m.hu) & (before != m.hu)
            labels_hit, counts = np.unique(res.labels[hit], return_counts=True)
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
        hu = blur_hu(hu, geometry, spec.psf_fwhm_mm, outside=cut)
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
    if spec.fractured_level is not None and spec.fractured_level not in layout.LUMBAR_LEVELS:
        raise InputError(f"Fractured level '{spec.fractured_level}' must be one of L1..L5.")
    if spec.noise_sd_hu < 0:
        raise InputError("noise_sd_hu must be >= 0.")
    if not np.isfinite(spec.psf_fwhm_mm) or spec.psf_fwhm_mm < 0:
        raise InputError("psf_fwhm_mm (scanner blur FWHM, mm) must be a finite number >= 0.")


def _outside_fov_mask(geometry: Geometry, lo: np.ndarray, hi: np.ndarray
                      ) -> np.ndarray | None:
    """Voxels whose centres lie outside the LPS box ``[lo, hi]`` (bool, geometry.shape),
    or None when there are none (always for axis-aligned grids from :func:`geometry_for`;
    an oblique grid covers the rotated box and so has corners outside it)."""
    out = np.zeros(geometry.shape, dtype=bool)
    step = max(1, (1 << 21) // max(1, geometry.shape[0] * geometry.shape[1]))
    for k0 in range(0, geometry.shape[2], step):
        k1 = min(k0 + step, geometry.shape[2])
        p = voxel_centres_mm(geometry, (0, 0, k0), (*geometry.shape[:2], k1))
        m = np.any((p < lo - 1e-6) | (p > hi + 1e-6), axis=1)
        out[:, :, k0:k1] = m.reshape(geometry.shape[0], geometry.shape[1], k1 - k0)
    return out if out.any() else None


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
