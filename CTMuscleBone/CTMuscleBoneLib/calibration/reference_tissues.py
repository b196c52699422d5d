"""Sample the reference tissues of a phantomless calibration in the scan itself.

Each tissue is found from the label map when it is labelled (TotalSegmentator or
CTMuscleBone keys), else from a HU window inside the body, and eroded away from its
boundary (partial volume with the neighbours):

=============== =========================================== ================================
tissue          labels used (first found)                   fallback
=============== =========================================== ================================
air             (none: outside the body)                    -1100..-900 HU, >= 10 mm from skin
adipose         subcutaneous_fat                            -190..-30 HU inside the body
skeletal_muscle gluteus maximus/medius, iliopsoas, psoas,   -29..150 HU inside the body
                else any other muscle label and
                TotalSegmentator's skeletal_muscle mask
blood           aorta, inferior_vena_cava                   (not sampled unlabelled)
cortical_bone   femur_left / femur_right, shaft part        (not sampled unlabelled)
=============== =========================================== ================================

A tissue is **refused** (with the reason) when it has too few voxels, when metal lies
within :data:`METAL_MARGIN_MM`, when blood is contrast-enhanced, or when the cortical
sample cannot be full-density cortex (partial volume at the voxel size); the calibration
then goes on with the remaining tissues and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..anatomy import keys_in
from ..body import body_mask
from ..contrast import CONTRAST_BLOOD_HU, agent_from_header
from ..image import CTImage, LabelMap
from ..tissue import FAT_HU_RANGE, LEAN_HU_RANGE, METAL_HU
from .phantom_fit import robust_mean_sd
from .physics import load_tables, tissue_hu_at

#: Fallback HU windows (docs/domain.md, Muscle: adipose -190..-30 HU, lean muscle
#: -29..150 HU); air -1100..-900 HU (air is -1000 HU by definition).
AIR_WINDOW_HU = (-1100.0, -900.0)
#: Distance kept from the body surface when sampling air, mm (skin-edge blur).
AIR_MARGIN_MM = 10.0
#: Minimum voxels of a usable sample (unvalidated default; Bonelab/Ogo asks for an area
#: of at least 10 mm2 per sample, far fewer voxels: our samples are volumes).
MIN_VOXELS = 50
#: Minimum voxels of the cortical-bone sample (unvalidated default).
MIN_BONE_VOXELS = 20
#: Metal within this distance of a sample refuses it, mm (streaks; unvalidated default).
METAL_MARGIN_MM = 20.0
#: Name of TotalSegmentator's ``tissue_types`` skeletal-muscle mask (all skeletal muscle;
#: kept as a named label outside the anatomy table, see
#: :func:`CTMuscleBoneLib.io_labels.add_tissue_masks`): used with the muscle labels.
TISSUE_MUSCLE = "skeletal_muscle"
#: Muscles preferred as the muscle sample (large, usually lean): gluteal and psoas.
PREFERRED_MUSCLES = ("gluteus_maximus", "gluteus_medius", "iliopsoas", "psoas_major")
#: Fraction of the femur label's superior-inferior extent, from its lower end, taken as
#: the shaft (the lesser trochanter lies about a third of the way down a proximal femur).
SHAFT_FRACTION = 0.4
#: The cortical plateau: voxels of the shaft at or above this fraction of its 98th HU
#: percentile (unvalidated default).
PLATEAU_FRACTION = 0.9
#: Highest effective energy considered plausible for the bone-floor check, keV: ICRU
#: cortical bone reads above ``tissue_hu_at(BONE_FLOOR_ENERGY_KEV, 'cortical_bone')``
#: (about 1080 HU) at every lower energy, so a lower mean is partial volume.
BONE_FLOOR_ENERGY_KEV = 100.0

TISSUES = ("air", "adipose", "skeletal_muscle", "blood", "cortical_bone")


@dataclass(frozen=True)
class TissueSample:
    """One reference-tissue sample.

    Attributes
    ----------
    tissue : str
        One of :data:`TISSUES`.
    location : str
        Where it was taken (label or HU window, erosion).
    n_voxels : int
        Voxels kept after the robust (3 MAD) clipping.
    volume_cm3 : float
    mean_hu, sd_hu : float
        Robust mean and SD of the CT numbers.
    centre_mm : (3,) float
        LPS centroid of the sampled voxels, mm.
    """

    tissue: str
    location: str
    n_voxels: int
    volume_cm3: float
    mean_hu: float
    sd_hu: float
    centre_mm: tuple[float, float, float]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["centre_mm"] = [round(c, 1) for c in self.centre_mm]
        return d


def _labelled(labels: LabelMap | None, keys: list[str] | tuple[str, ...]) -> np.ndarray | None:
    """Union of the structures ``keys`` (anatomy keys, or names of labels outside the
    anatomy table such as TotalSegmentator's ``skeletal_muscle``); None when none has a
    voxel."""
    if labels is None:
        return None
    present = set(labels.present_keys())
    use = [k for k in keys if k in present]
    named = [v for v, n in labels.unknown.items() if n in keys]
    if named:
        extra = np.isin(labels.array, named)
        named = named if extra.any() else []
    if not use and not named:
        return None
    mask = np.zeros(labels.array.shape, dtype=bool)
    for k in use:
        mask |= labels.mask(k)
    if named:
        mask |= extra
    return mask


def _erode(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, str]:
    eroded = ndimage.binary_erosion(mask)
    if eroded.sum() >= min_voxels:
        return eroded, "eroded 1 voxel"
    return mask, "not eroded (too thin)"


def _metal_near(ct: CTImage, mask: np.ndarray) -> float:
    """Highest HU within :data:`METAL_MARGIN_MM` of the mask's bounding box."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    pad = [int(np.ceil(METAL_MARGIN_MM / s)) for s in ct.spacing_mm]
    box = tuple(slice(max(0, a - p), min(n, b + p))
                for a, b, p, n in zip(lo, hi, pad, mask.shape, strict=True))
    return float(ct.hu[box].max())


def _sample(ct: CTImage, tissue: str, mask: np.ndarray, location: str, min_voxels: int,
            window: tuple[float, float] | None = None) -> TissueSample | str:
    values = ct.hu[mask].astype(float)
    if window is not None:
        keep = (values >= window[0]) & (values <= window[1])
        values = values[keep]
        sel = np.zeros_like(mask)
        sel[mask] = keep
        mask = sel
    if values.size < min_voxels:
        return f"{values.size} voxels ({location}) < {min_voxels}: too few to sample"
    if tissue != "air":
        hi = _metal_near(ct, mask)
        if hi > METAL_HU:
            return (f"metal ({hi:.0f} HU > {METAL_HU:g}) within {METAL_MARGIN_MM:g} mm of the "
                    f"{location} sample: streaks corrupt its CT numbers")
    mean, sd, n = robust_mean_sd(values)
    centre = ct.geometry.index_to_physical(np.argwhere(mask).mean(axis=0))
    return TissueSample(tissue, location, n, n * ct.geometry.voxel_volume_cm3, mean, sd,
                        tuple(float(c) for c in centre))


def _cortical_bone(ct: CTImage, labels: LabelMap | None) -> TissueSample | str:
    femur = _labelled(labels, ("femur_left", "femur_right"))
    if femur is None or not femur.any():
        return ("no femur label: cortical bone is sampled in the femoral shaft only (the "
                "vertebral and rib cortex is thinner than a CT voxel)")
    si = ct.geometry.axis_for("superior")[0]
    # the lower SHAFT_FRACTION of the femur label along the superior-inferior axis
    z = np.argwhere(femur)[:, si]
    sign = ct.geometry.axis_for("superior")[1]
    zmin, zmax = int(z.min()), int(z.max())
    extent = zmax - zmin + 1
    cut = int(np.floor(SHAFT_FRACTION * extent))
    keep = np.zeros(femur.shape[si], dtype=bool)
    if sign > 0:  # index increases superiorly: the shaft has the low indices
        keep[zmin:zmin + max(cut, 1)] = True
    else:
        keep[zmax - max(cut, 1) + 1:zmax + 1] = True
    shape = [1, 1, 1]
    shape[si] = -1
    shaft = femur & keep.reshape(shape)
    if shaft.sum() < MIN_BONE_VOXELS:
        return f"femoral shaft label has {int(shaft.sum())} voxels < {MIN_BONE_VOXELS}"
    values = ct.hu[shaft].astype(float)
    p98 = float(np.percentile(values, 98))
    plateau = shaft & (ct.hu >= PLATEAU_FRACTION * p98)
    sample = _sample(ct, "cortical_bone", plateau,
                     f"femoral shaft cortex (lower {SHAFT_FRACTION:.0%} of the femur label, "
                     f">= {PLATEAU_FRACTION:.0%} of its 98th HU percentile)", MIN_BONE_VOXELS)
    if isinstance(sample, str):
        return sample
    floor = tissue_hu_at(BONE_FLOOR_ENERGY_KEV, "cortical_bone", load_tables())
    if sample.mean_hu < floor:
        return (f"femoral shaft cortex reads {sample.mean_hu:.0f} HU, below the "
                f"{floor:.0f} HU that cortical bone has at any effective energy up to "
                f"{BONE_FLOOR_ENERGY_KEV:g} keV: partial volume (cortex thin for the "
                f"{max(ct.spacing_mm):g} mm voxels) or not cortical bone")
    return sample


def sample_reference_tissues(
    ct: CTImage, labels: LabelMap | None = None,
    tissues: tuple[str, ...] = TISSUES,
) -> tuple[dict[str, TissueSample], dict[str, str]]:
    """Sample the reference tissues of a phantomless calibration.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
    tissues : tuple of str
        Which of :data:`TISSUES` to sample.

    Returns
    -------
    samples : dict of tissue -> TissueSample
    refused : dict of tissue -> reason
    """
    hu = ct.hu
    body = body_mask(hu)
    inner = ndimage.binary_erosion(body, iterations=2)
    samples: dict[str, TissueSample] = {}
    refused: dict[str, str] = {}

    def put(name: str, res: TissueSample | str) -> None:
        if isinstance(res, str):
            refused[name] = res
        else:
            samples[name] = res

    if "air" in tissues:
        it = max(1, int(round(AIR_MARGIN_MM / float(min(ct.spacing_mm)))))
        near_body = ndimage.binary_dilation(body, iterations=it)
        air = ~near_body & (hu >= AIR_WINDOW_HU[0]) & (hu <= AIR_WINDOW_HU[1])
        # padding outside the reconstruction circle is a constant, not air: drop the
        # most frequent value when it holds most of the candidate voxels
        if air.sum():
            vals, counts = np.unique(hu[air], return_counts=True)
            if counts.max() > 0.5 * air.sum() and np.issubdtype(hu.dtype, np.integer):
                air &= hu != vals[np.argmax(counts)]
        put("air", _sample(ct, "air", air, f"outside the body, >= {AIR_MARGIN_MM:g} mm from "
                           "the skin", MIN_VOXELS, AIR_WINDOW_HU))
    if "adipose" in tissues:
        fat = _labelled(labels, ("subcutaneous_fat",))
        if fat is not None and fat.sum() >= MIN_VOXELS:
            m, how = _erode(fat, MIN_VOXELS)
            put("adipose", _sample(ct, "adipose", m, f"subcutaneous_fat label, {how}",
                                   MIN_VOXELS, FAT_HU_RANGE))
        else:
            m = inner & (hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1])
            m = ndimage.binary_erosion(m)
            put("adipose", _sample(ct, "adipose", m, f"HU window {FAT_HU_RANGE[0]:g}.."
                                   f"{FAT_HU_RANGE[1]:g} inside the body, eroded 1 voxel "
                                   "(no subcutaneous_fat label)", MIN_VOXELS))
    if "skeletal_muscle" in tissues:
        preferred = [k for k in keys_in("muscle") if any(k.startswith(p)
                                                          for p in PREFERRED_MUSCLES)]
        m = _labelled(labels, preferred)
        what = "gluteal / psoas muscle labels"
        if m is None or m.sum() < MIN_VOXELS:
            m = _labelled(labels, [*keys_in("muscle"), TISSUE_MUSCLE])
            what = "muscle labels (and any skeletal_muscle tissue mask)"
        if m is not None and m.sum() >= MIN_VOXELS:
            m, how = _erode(m, MIN_VOXELS)
            put("skeletal_muscle", _sample(ct, "skeletal_muscle", m,
                                           f"{what}, {how}, lean window "
                                           f"{LEAN_HU_RANGE[0]:g}..{LEAN_HU_RANGE[1]:g} HU",
                                           MIN_VOXELS, LEAN_HU_RANGE))
        else:
            m = inner & (hu >= LEAN_HU_RANGE[0]) & (hu <= LEAN_HU_RANGE[1])
            m = ndimage.binary_erosion(m)
            put("skeletal_muscle", _sample(
                ct, "skeletal_muscle", m, f"HU window {LEAN_HU_RANGE[0]:g}..{LEAN_HU_RANGE[1]:g}"
                " inside the body, eroded 1 voxel (no muscle labels; includes other soft "
                "tissue)", MIN_VOXELS))
    if "blood" in tissues:
        m = _labelled(labels, ("aorta", "inferior_vena_cava"))
        agent = agent_from_header(ct.metadata)
        if m is None or m.sum() < MIN_VOXELS:
            refused["blood"] = "no aorta or inferior_vena_cava label (blood is sampled " \
                               "only where labelled)"
        else:
            m, how = _erode(m, MIN_VOXELS)
            res = _sample(ct, "blood", m, f"aorta / inferior vena cava labels, {how}",
                          MIN_VOXELS)
            if agent:
                refused["blood"] = (f"contrast-enhanced scan (agent '{agent}' in the header): "
                                    "blood is not a reference")
            elif isinstance(res, TissueSample) and res.mean_hu > CONTRAST_BLOOD_HU:
                refused["blood"] = (f"blood pool at {res.mean_hu:.0f} HU (> "
                                    f"{CONTRAST_BLOOD_HU:g} HU): contrast-enhanced, not a "
                                    "reference")
            else:
                put("blood", res)
    if "cortical_bone" in tissues:
        put("cortical_bone", _cortical_bone(ct, labels))
    return samples, refused
