"""The demo case: the phantom ``ctmusclebone demo`` and the Slicer sample data build.

One specification for both (:func:`demo_spec`): the full region (lumbar spine to
mid-thigh) with a B-MAS200 calibration phantom under the body, stored in RAS, of a
synthetic 72-year-old woman of 1.55 m with a lumbar trabecular BMD of 95 mg/cm3 (in the
low-bone-mass band of the ACR categories).

Body (:data:`DEMO_BODY`): subcutaneous fat of 30 mm (trunk) and 18 mm (thighs), muscle
cross-sections at 80 % of the layout's (``muscle_atrophy`` 0.8: fat between the muscles,
as in an older patient's CT), 12 % fat infiltration (30 % in the erector spinae),
15 HU noise and a 1 mm scanner blur. Every value is this project's design choice for a
plausible older patient, not population statistics; all lie inside the ranges of the
patient-like training phantoms (:func:`CTMuscleBoneLib.segmentation.training.synthetic.
patient_like_spec`), while the seed is none of the demo model's training or held-out
seeds. (The layout's standard body, muscles at full size touching one another with no
fat plane between them, was segmented worse by the demo model's earlier versions;
``benchmarks/demo_body_check.py`` measures the demo phantom with either body:
docs/segmentation.md.)
"""

from __future__ import annotations

from typing import Any

from .builder import PhantomSpec

#: The demo's phantom seed: not among the demo model's training, validation or held-out
#: seeds (20000-20049, 30000-30007, 40000-40008; see the model card).
DEMO_SEED = 7
#: Patient facts the demo phantom is built with (and the demo measures with).
DEMO_PATIENT: dict[str, Any] = {"sex": "F", "height_m": 1.55, "age_years": 72.0,
                                "phantom": "B-MAS200"}
#: The demo body (module docstring): design choices, not population statistics.
DEMO_BODY: dict[str, Any] = {
    "trunk_fat_mm": 30.0, "thigh_fat_mm": 18.0, "muscle_atrophy": 0.8,
    "muscle_fat_fraction": 0.12, "muscle_fat_fractions": {"autochthon": 0.3},
    "noise_sd_hu": 15.0, "psf_fwhm_mm": 1.0,
}
#: The demo's lumbar trabecular BMD, mg/cm3 (L1-L5).
DEMO_VERTEBRA_BMD_MG_CM3 = 95.0
#: Results the demo's self-check compares between the model's segmentation and the
#: phantom's ground-truth labels (structure, quantity): the mission's headline values
#: (total-hip and neck aBMD, L1-L4 trabecular vBMD, ALM, SMI).
DEMO_HEADLINE_ROWS: tuple[tuple[str, str], ...] = (
    ("femur_left", "abmd_total_hip"), ("femur_right", "abmd_total_hip"),
    ("femur_left", "abmd_femoral_neck"), ("femur_right", "abmd_femoral_neck"),
    *((f"vertebrae_L{n}", "trabecular_vbmd") for n in range(1, 5)),
    ("patient", "alm"), ("patient", "smi"),
)


def demo_spec(spacing_mm: float = 2.0, seed: int = DEMO_SEED) -> PhantomSpec:
    """The :class:`PhantomSpec` of the demo case (module docstring).

    Parameters
    ----------
    spacing_mm : float
        Isotropic voxel size of the phantom CT, mm.
    seed : int
        Noise and shape seed.
    """
    body = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO_BODY.items()}
    return PhantomSpec(region="full", spacing_mm=spacing_mm, orientation="RAS", seed=seed,
                       calibration=True, calibration_definition=DEMO_PATIENT["phantom"],
                       sex=DEMO_PATIENT["sex"], height_m=DEMO_PATIENT["height_m"],
                       age_years=DEMO_PATIENT["age_years"],
                       vertebra_bmd_mg_cm3=DEMO_VERTEBRA_BMD_MG_CM3, **body)
