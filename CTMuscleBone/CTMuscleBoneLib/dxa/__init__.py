"""Putting CT bone density on the scale of the clinical thresholds.

* :mod:`.material`: every calibrated density converted to one reference material
  (hydroxyapatite) with a sourced K2HPO4 -> HA ratio;
* :mod:`.conversion`: CT-aBMD -> DXA-equivalent aBMD model (fit with
  ``ctmusclebone fit-dxa``; the shipped identity default is unvalidated);
* :mod:`.references`: young-adult reference tables and criteria as data files
  (NHANES III / WHO, Japanese YAM / JSBMR 2012);
* :mod:`.scores`: DXA-equivalent aBMD, T-, Z-score, %YAM and category rows of a site.

Method, sources and limits: docs/femur_bmd.md.
"""

from .conversion import DXAConversionModel, SiteLine, fit_dxa_model, load_dxa_model
from .material import MaterialConversion, conversion_for, to_hydroxyapatite
from .references import ReferenceTable, load_reference
from .scores import ScoreContext, score_context, score_quantities, score_rows

__all__ = ["DXAConversionModel", "MaterialConversion", "ReferenceTable", "ScoreContext",
           "SiteLine", "conversion_for", "fit_dxa_model", "load_dxa_model", "load_reference",
           "score_context", "score_quantities", "score_rows", "to_hydroxyapatite"]
