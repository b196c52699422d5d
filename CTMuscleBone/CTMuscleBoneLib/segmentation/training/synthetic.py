"""Varied synthetic phantoms for training and testing the demo model.

:func:`varied_spec` draws a :class:`~CTMuscleBoneLib.phantoms.PhantomSpec` from a seed,
using every variation the phantom offers: noise seed and level, voxel spacing
(anisotropic), storage orientation (LPS, RAS, permuted, oblique), tissue HU, muscle fat
fraction, femoral neck-shaft angle, anteversion and size, vertebral, hip and sacral
bone density and a vertebral fracture. Training and held-out phantoms use disjoint seed
ranges (:data:`TRAIN_SEEDS`, :data:`HELD_OUT_SEEDS`), so test phantoms differ from the
training ones. All ranges are synthetic design choices, not population statistics.

:func:`patient_like_spec` adds what makes a CT look more like a patient's: body habitus
(subcutaneous fat 5-60 mm on the trunk, 4-40 mm on the thighs, lean outline scale),
muscle atrophy and fat infiltration, noise 5-40 HU, scanner blur FWHM 0-2 mm, metal
implants with streaks (~20 %), contrast-like vessels (~30 %), arms at the sides
(~50 %), truncated fields of view (~20 %), 4 or 6 lumbar vertebrae (~10 % each), any
storage orientation and 1-3.5 mm voxels. Its seed ranges are
:data:`PATIENT_LIKE_TRAIN_SEEDS` and :data:`PATIENT_LIKE_HELD_OUT_SEEDS`.
:func:`mixed_spec` interleaves the two (one varied phantom in three), so a model also
sees the standard body of the demo phantom. :func:`perturbed_spec` gives held-out
phantoms with one strong perturbation each (:data:`PERTURBATION_KINDS`, seeds
:data:`PERTURBED_SEEDS`) for the evaluation of the model's uncertainty: some structures
are meant to fail there. All these seed ranges are disjoint from each other and from
:data:`TRAIN_SEEDS` / :data:`HELD_OUT_SEEDS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from ...phantoms import PhantomSpec

#: Seed ranges of the demo's training / validation and held-out test phantoms.
TRAIN_SEEDS = range(1000, 2000)
HELD_OUT_SEEDS = range(9000, 10000)
ORIENTATIONS = ("LPS", "RAS", "permuted", "oblique")
#: Seed ranges of :func:`patient_like_spec` training and held-out phantoms and of the
#: :func:`perturbed_spec` evaluation set (disjoint from the ranges above).
PATIENT_LIKE_TRAIN_SEEDS = range(20000, 30000)
PATIENT_LIKE_HELD_OUT_SEEDS = range(30000, 31000)
PERTURBED_SEEDS = range(40000, 41000)
#: One phantom in this many of :func:`mixed_spec` is a :func:`varied_spec` one.
MIXED_VARIED_EVERY = 3
#: Kinds of :func:`perturbed_spec`.
PERTURBATION_KINDS = ("clean", "noise", "blur", "metal", "atrophy", "obese", "truncation",
                      "small", "large")
#: Largest thigh skin semi-axis (lean 64 mm x body_scale + fat) the generators draw, mm:
#: keeps the two thighs apart (> 1 mm) for every femur geometry they draw (the medial
#: thigh centre is >= 112 mm from the midline for neck-shaft angles <= 138 deg,
#: anteversion <= 22 deg and a neck of >= 55 mm).
THIGH_SKIN_MAX_MM = 104.0


def varied_spec(seed: int, region: str | tuple[float, float] = "full",
                spacing_range_mm: tuple[float, float] = (2.6, 3.4),
                orientations: tuple[str, ...] = ORIENTATIONS) -> PhantomSpec:
    """A phantom specification drawn from ``seed`` (see module docstring)."""
    rng = np.random.default_rng(seed)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    spacing = tuple(round(u(*spacing_range_mm), 2) for _ in range(3))
    femur: dict[str, Any] = {
        "neck_shaft_angle_deg": u(122.0, 138.0),
        "anteversion_deg": u(4.0, 22.0),
        "head_radius_mm": u(20.0, 25.0),
        "trabecular_bmd_mg_cm3": u(100.0, 260.0),
        "cortical_thickness_mm": u(2.5, 4.0),
    }
    fractured = str(rng.choice(["L1", "L2", "L3", "L4", "L5"])) if rng.random() < 0.25 \
        else None
    return PhantomSpec(
        region=region,
        spacing_mm=spacing,  # type: ignore[arg-type]
        orientation=str(rng.choice(list(orientations))),
        noise_sd_hu=u(5.0, 25.0),
        seed=int(seed),
        hu_fat=u(-120.0, -80.0),
        hu_muscle=u(35.0, 65.0),
        hu_soft_tissue=u(15.0, 40.0),
        muscle_fat_fraction=u(0.0, 0.25),
        femur=femur,
        vertebra_bmd_mg_cm3=u(50.0, 220.0),
        fractured_level=fractured,
        fracture_ratio=u(0.6, 0.85),
        hip_bmd_mg_cm3=u(140.0, 300.0),
        sacrum_bmd_mg_cm3=u(110.0, 250.0),
    )


def _spacing(rng: np.random.Generator, spacing_range_mm: tuple[float, float],
             orientation: str) -> tuple[float, float, float]:
    """In-plane and slice spacing drawn separately (as CT series are), ordered along
    the array axes of the storage orientation ('permuted' stores z first)."""
    s_xy = round(float(rng.uniform(*spacing_range_mm)), 2)
    s_z = round(float(rng.uniform(*spacing_range_mm)), 2)
    return (s_z, s_xy, s_xy) if orientation == "permuted" else (s_xy, s_xy, s_z)


def _femur(rng: np.random.Generator) -> dict[str, Any]:
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return {
        "neck_shaft_angle_deg": u(122.0, 138.0),
        "anteversion_deg": u(4.0, 22.0),
        "head_radius_mm": u(20.0, 25.0),
        "trabecular_bmd_mg_cm3": u(100.0, 260.0),
        "cortical_thickness_mm": u(2.5, 4.0),
    }


def _levels(lumbar_count: int) -> list[str]:
    """Levels L1..L5 that a phantom with ``lumbar_count`` vertebrae has."""
    return ["L2", "L3", "L4", "L5"] if lumbar_count == 4 else ["L1", "L2", "L3", "L4", "L5"]


def _base_kwargs(rng: np.random.Generator, seed: int, region: str | tuple[float, float],
                 spacing_range_mm: tuple[float, float], orientations: tuple[str, ...]
                 ) -> dict[str, Any]:
    """The anatomy and tissue draws every patient-like spec shares."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    orientation = str(rng.choice(list(orientations)))
    return {
        "region": region, "seed": int(seed), "orientation": orientation,
        "spacing_mm": _spacing(rng, spacing_range_mm, orientation),
        "hu_fat": u(-120.0, -80.0), "hu_muscle": u(35.0, 65.0),
        "hu_soft_tissue": u(15.0, 40.0), "hu_blood": u(30.0, 50.0),
        "femur": _femur(rng), "vertebra_bmd_mg_cm3": u(50.0, 220.0),
        "hip_bmd_mg_cm3": u(140.0, 300.0), "sacrum_bmd_mg_cm3": u(110.0, 250.0),
    }


def patient_like_spec(seed: int, region: str | tuple[float, float] = "full",
                      spacing_range_mm: tuple[float, float] = (1.0, 3.5),
                      orientations: tuple[str, ...] = ORIENTATIONS,
                      p_metal: float = 0.2, p_contrast: float = 0.3, p_arms: float = 0.5,
                      p_truncation: float = 0.2, p_lumbar_4: float = 0.1,
                      p_lumbar_6: float = 0.1, p_calibration: float = 0.3) -> PhantomSpec:
    """A patient-like phantom specification drawn from ``seed`` (module docstring).

    Parameters
    ----------
    seed : int
        Seeds the draws and the phantom's noise (use :data:`PATIENT_LIKE_TRAIN_SEEDS` /
        :data:`PATIENT_LIKE_HELD_OUT_SEEDS`).
    region, spacing_range_mm, orientations
        Field of view, range of in-plane and slice spacing (mm, drawn separately) and
        storage orientations to draw from.
    p_metal, p_contrast, p_arms, p_truncation, p_lumbar_4, p_lumbar_6 : float
        Probabilities of metal implants, contrast-like vessels, arms at the sides, a
        truncated field of view (half lateral, half in z) and 4 / 6 lumbar vertebrae.
    p_calibration : float
        Probability of a calibration phantom under the body (one of the three built-in
        definitions), as in a QCT scan and in ``ctmusclebone demo``. Drawn from its own
        random stream, so the other draws of a seed do not depend on it.

    Returns
    -------
    PhantomSpec
        Every range is a synthetic design choice, not population statistics.
    """
    rng = np.random.default_rng([int(seed), 1])
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    kw = _base_kwargs(rng, seed, region, spacing_range_mm, orientations)
    # habitus: one latent "adiposity" t in [0, 1] drives trunk and thigh fat
    t = u(0.0, 1.0)
    scale = u(1.0, 1.12)
    kw.update(
        trunk_fat_mm=5.0 + 55.0 * t,
        thigh_fat_mm=min(4.0 + 36.0 * float(np.clip(t + rng.normal(0.0, 0.1), 0.0, 1.0)),
                         THIGH_SKIN_MAX_MM - 64.0 * scale),
        body_scale=scale,
        muscle_atrophy=u(0.6, 1.0),
        muscle_fat_fraction=u(0.0, 0.3),
        noise_sd_hu=u(5.0, 40.0),
        psf_fwhm_mm=u(0.0, 2.0),
    )
    # heterogeneous infiltration: the paraspinal muscles often carry more fat
    kw["muscle_fat_fractions"] = {"autochthon": min(0.6, kw["muscle_fat_fraction"]
                                                    + u(0.0, 0.3))}
    r = rng.random(8)
    count = 4 if r[0] < p_lumbar_4 else (6 if r[0] < p_lumbar_4 + p_lumbar_6 else 5)
    kw["lumbar_count"] = count
    levels = _levels(count)
    if r[1] < 0.2:
        kw.update(fractured_level=str(rng.choice(levels)), fracture_ratio=u(0.6, 0.85),
                  fracture_type=str(rng.choice(["wedge", "biconcave", "crush"])))
    if r[2] < p_metal:
        which = int(rng.integers(4))
        if which == 3:
            i = int(rng.integers(len(levels) - 1))
            metal = tuple(f"pedicle_screw_{lv}" for lv in levels[i:i + 2])
        else:
            metal = (("femoral_stem_left",), ("femoral_stem_right",),
                     ("femoral_stem_left", "femoral_stem_right"))[which]
        kw.update(metal=metal, metal_streak_hu=u(100.0, 400.0))
    if r[3] < p_contrast:
        if rng.random() < 0.5:  # arterial-like phase: aorta bright, IVC barely enhanced
            kw.update(hu_blood=u(250.0, 350.0), hu_ivc=u(60.0, 120.0))
        else:  # venous-like phase
            kw.update(hu_blood=u(130.0, 200.0), hu_ivc=u(120.0, 200.0))
    kw["arms"] = bool(r[4] < p_arms)
    if r[5] < p_truncation:
        if rng.random() < 0.5:
            kw["lateral_limit_mm"] = u(150.0, 240.0)
        elif rng.random() < 0.5:
            kw["truncation"] = ("inferior", u(-250.0, -120.0))
        else:
            kw["truncation"] = ("superior", u(150.0, 240.0))
    cal = np.random.default_rng([int(seed), 3])
    if cal.random() < p_calibration:
        kw.update(calibration=True, calibration_definition=str(cal.choice(
            ["B-MAS200", "Mindways Model 3", "QRM-BDC"])))
    return PhantomSpec(**kw)


def mixed_spec(seed: int, region: str | tuple[float, float] = "full",
               spacing_range_mm: tuple[float, float] = (1.0, 3.5),
               orientations: tuple[str, ...] = ORIENTATIONS,
               varied_every: int = MIXED_VARIED_EVERY) -> PhantomSpec:
    """Patient-like phantoms with every ``varied_every``-th seed a :func:`varied_spec`.

    The patient-like generator always draws a habitus (fat layers 5-60 mm, lean scale
    >= 1) and atrophied muscles (factor 0.6-1.0); it never draws the standard body of
    :class:`~CTMuscleBoneLib.phantoms.PhantomSpec` (its default fat layers, muscles at
    full size), which is the body of ``ctmusclebone demo``. A model trained on
    patient-like phantoms alone under-segments those muscles (measured: the demo
    phantom's muscles at Dice 0.26-0.83 while its bones reach 0.90-0.98), so a training
    set should hold both kinds.

    Parameters
    ----------
    seed : int
        Use :data:`PATIENT_LIKE_TRAIN_SEEDS` (the seeds where ``seed % varied_every ==
        varied_every - 1`` give varied phantoms).
    region, spacing_range_mm, orientations : as :func:`patient_like_spec`.
    varied_every : int
        One phantom in this many is a varied one.
    """
    if varied_every < 1:
        raise InputError(f"varied_every must be >= 1, got {varied_every}.")
    if seed % varied_every == varied_every - 1:
        return varied_spec(seed, region=region, spacing_range_mm=spacing_range_mm,
                           orientations=orientations)
    return patient_like_spec(seed, region=region, spacing_range_mm=spacing_range_mm,
                             orientations=orientations)


def perturbed_spec(seed: int, kind: str, region: str | tuple[float, float] = "full",
                   spacing_range_mm: tuple[float, float] = (1.0, 3.5),
                   orientations: tuple[str, ...] = ORIENTATIONS) -> PhantomSpec:
    """A held-out phantom with one strong perturbation, for uncertainty evaluation.

    Parameters
    ----------
    seed : int
        Use :data:`PERTURBED_SEEDS`.
    kind : str
        One of :data:`PERTURBATION_KINDS`: 'clean' (moderate everything), 'noise'
        (SD 60-90 HU), 'blur' (FWHM 3-4 mm), 'metal' (both femoral stems and pedicle
        screws at L3-L4, streaks 600-1000 HU), 'atrophy' (factor 0.45-0.55, fat
        fraction 0.35-0.5), 'obese' (trunk fat 65-80 mm, lean scale 1.15-1.25), 'truncation'
        (lateral cut at x = +-(110-140) mm and a superior cut at z 170-210 mm), 'small'
        (small femurs, thin fat, atrophic muscles) or 'large' (large femurs, large lean
        body).
    region, spacing_range_mm, orientations : as :func:`patient_like_spec`.

    Returns
    -------
    PhantomSpec
        The strengths are synthetic design choices meant to make a model trained on
        :func:`patient_like_spec` phantoms fail on some structures.
    """
    if kind not in PERTURBATION_KINDS:
        raise InputError(f"Unknown perturbation '{kind}': use one of {PERTURBATION_KINDS}.")
    rng = np.random.default_rng([int(seed), 2, PERTURBATION_KINDS.index(kind)])
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    kw = _base_kwargs(rng, seed, region, spacing_range_mm, orientations)
    kw.update(trunk_fat_mm=u(12.0, 30.0), thigh_fat_mm=u(8.0, 20.0), body_scale=1.0,
              muscle_atrophy=u(0.85, 1.0), muscle_fat_fraction=u(0.0, 0.15),
              noise_sd_hu=u(8.0, 15.0), psf_fwhm_mm=u(0.5, 1.0))
    femur = kw["femur"]
    if kind == "noise":
        kw["noise_sd_hu"] = u(60.0, 90.0)
    elif kind == "blur":
        kw["psf_fwhm_mm"] = u(3.0, 4.0)
    elif kind == "metal":
        kw.update(metal=("femoral_stem_left", "femoral_stem_right", "pedicle_screw_L3",
                         "pedicle_screw_L4"), metal_streak_hu=u(600.0, 1000.0))
    elif kind == "atrophy":
        kw.update(muscle_atrophy=u(0.45, 0.55), muscle_fat_fraction=u(0.35, 0.5))
    elif kind == "obese":
        scale = u(1.15, 1.25)
        kw.update(trunk_fat_mm=u(65.0, 80.0), body_scale=scale,
                  thigh_fat_mm=THIGH_SKIN_MAX_MM - 64.0 * scale)
    elif kind == "truncation":
        kw.update(lateral_limit_mm=u(110.0, 140.0), truncation=("superior", u(170.0, 210.0)))
    elif kind == "small":
        femur.update(head_radius_mm=u(17.0, 18.5), neck_radius_mm=u(11.0, 12.0),
                     shaft_radius_mm=u(10.0, 11.0), neck_length_mm=u(55.0, 58.0),
                     cortical_thickness_mm=u(2.0, 2.5))
        kw.update(trunk_fat_mm=u(3.0, 5.0), thigh_fat_mm=u(2.0, 4.0),
                  muscle_atrophy=u(0.6, 0.7))
    elif kind == "large":
        femur.update(head_radius_mm=u(26.0, 27.0), neck_radius_mm=u(17.0, 18.0),
                     shaft_radius_mm=u(15.5, 16.0), neck_length_mm=u(60.0, 65.0))
        scale = u(1.2, 1.3)
        kw.update(body_scale=scale, trunk_fat_mm=u(30.0, 45.0),
                  thigh_fat_mm=min(u(10.0, 20.0), THIGH_SKIN_MAX_MM - 64.0 * scale))
    return PhantomSpec(**kw)


def varied_specs(n: int, first_seed: int, **kwargs: Any) -> list[PhantomSpec]:
    """``n`` specifications from consecutive seeds starting at ``first_seed``."""
    return [varied_spec(first_seed + i, **kwargs) for i in range(n)]


def synthetic_datasets(cfg: Any) -> tuple[Any, Any]:
    """Training and validation phantom datasets from a TrainConfig's ``phantoms`` field.

    Fields (defaults): ``n_train`` (8), ``n_val`` (2), ``seed`` (first training seed,
    1000), ``region`` ('full'), ``spacing_range_mm`` ([2.6, 3.4]).
    """
    from .datasets import SyntheticPhantomDataset

    p = dict(cfg.phantoms or {})
    n_train, n_val = int(p.get("n_train", 8)), int(p.get("n_val", 2))
    first = int(p.get("seed", TRAIN_SEEDS.start))
    kw: dict[str, Any] = {"region": p.get("region", "full")}
    if isinstance(kw["region"], list):
        kw["region"] = tuple(kw["region"])
    if "spacing_range_mm" in p:
        kw["spacing_range_mm"] = tuple(p["spacing_range_mm"])
    specs = varied_specs(n_train + n_val, first, **kw)
    train = SyntheticPhantomDataset(specs[:n_train], cfg.structures)
    val = SyntheticPhantomDataset(specs[n_train:], cfg.structures)
    val.names = [f"phantom-val{i:03d}" for i in range(n_val)]
    return train, val
