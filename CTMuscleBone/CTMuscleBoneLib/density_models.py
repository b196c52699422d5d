"""Tissue density models for converting muscle volume to mass.

* :data:`constant_density`: 1.06 g/cm3 for skeletal muscle (Mendez & Keys,
  Metabolism 9:184-188, 1960), the default.
* :data:`hu_linear_density`: per-voxel density 1.0 + HU / 1000 g/cm3, the
  soft-tissue approximation that CT attenuation scales with electron (and so mass)
  density relative to water (Aubrey et al., Acta Physiol 210:489-497, 2014, discuss
  muscle attenuation as a density surrogate). It is an approximation, not a validated
  body-composition model: it gives 1.05 g/cm3 at 50 HU and 0.90 g/cm3 at -100 HU
  (adipose tissue is about 0.90-0.92 g/cm3). Marked as unvalidated in outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DensityModel:
    """HU -> tissue density (g/cm3).

    Attributes
    ----------
    name : str
        'constant' or 'hu_linear'.
    description : str
        Text for result rows (includes the source).
    constant_g_cm3 : float or None
        Density for the constant model.
    validated : bool
        False when the model is an approximation without validation against a
        reference (flagged in outputs).
    """

    name: str
    description: str
    constant_g_cm3: float | None = None
    validated: bool = True

    def density_g_cm3(self, hu: np.ndarray) -> np.ndarray:
        """Density per voxel, g/cm3, same shape as ``hu``."""
        hu = np.asarray(hu, dtype=np.float64)
        if self.constant_g_cm3 is not None:
            return np.full(hu.shape, self.constant_g_cm3)
        return 1.0 + hu / 1000.0


constant_density = DensityModel(
    name="constant",
    description="constant 1.06 g/cm3 (Mendez & Keys 1960)",
    constant_g_cm3=1.06,
)

hu_linear_density = DensityModel(
    name="hu_linear",
    description="HU-dependent 1.0 + HU/1000 g/cm3 (soft-tissue approximation; unvalidated)",
    validated=False,
)

DENSITY_MODELS: dict[str, DensityModel] = {
    constant_density.name: constant_density,
    hu_linear_density.name: hu_linear_density,
}
#: The project's default density model (``measure --density-model``,
#: ``MeasureOptions.density_model``); also what an ALM model file without a
#: ``density_model`` field is taken to have been fitted with
#: (:class:`~CTMuscleBoneLib.alm.ALMModel`).
DEFAULT_DENSITY_MODEL = constant_density.name
