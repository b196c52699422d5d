"""Varied synthetic phantoms for training and testing the demo model.

:func:`varied_spec` draws a :class:`~CTMuscleBoneLib.phantoms.PhantomSpec` from a seed,
using every variation the phantom offers: noise seed and level, voxel spacing
(anisotropic), storage orientation (LPS, RAS, permuted, oblique), tissue HU, muscle fat
fraction, femoral neck-shaft angle, anteversion and size, vertebral, hip and sacral
bone density and a vertebral fracture. Training and held-out phantoms use disjoint seed
ranges (:data:`TRAIN_SEEDS`, :data:`HELD_OUT_SEEDS`), so test phantoms differ from the
training ones. All ranges are synthetic design choices, not population statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...phantoms import PhantomSpec

#: Seed ranges of the demo's training / validation and held-out test phantoms.
TRAIN_SEEDS = range(1000, 2000)
HELD_OUT_SEEDS = range(9000, 10000)
ORIENTATIONS = ("LPS", "RAS", "permuted", "oblique")


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
