"""Femoral BMD: automatic landmarks, DXA-equivalent CT-aBMD, vBMD, T-scores, checks.

Entry point: :func:`CTMuscleBoneLib.femur.measure.measure_femurs`. One job per module:
:mod:`.landmarks`, :mod:`.dxa_projection`, :mod:`.rois`, :mod:`.vbmd`, :mod:`.tscore`,
:mod:`.checks`, :mod:`.measure`. Method and sources: docs/femur_bmd.md.
"""

from .measure import FemurOutput, FemurProjection, measure_femurs

__all__ = ["FemurOutput", "FemurProjection", "measure_femurs"]
