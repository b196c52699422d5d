"""Test / benchmark helper: femoral aBMD and vBMD with or without the partial-volume
correction, measured by ``femur.measure.measure_femur`` itself (its ``margin_mm``
switches the edge-mineral restoration off; without ``labels`` no other structure is
kept out of the edge shell).
"""

from __future__ import annotations

import numpy as np
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.femur.measure import measure_femur
from CTMuscleBoneLib.femur.partial_volume import EDGE_MARGIN_MM
from CTMuscleBoneLib.image import CTImage, LabelMap


def _ha_line(to_density) -> Calibration:  # noqa: ANN001
    """A hydroxyapatite calibration of a linear HU -> mg/cm3 function (HA: the values
    stay on the function's own scale, no K2HPO4 -> HA conversion)."""
    b = float(np.asarray(to_density(0.0)))
    a = (float(np.asarray(to_density(1000.0))) - b) / 1000.0
    return Calibration("phantom", "HA", a, b, 1.0, 2, "femur_pv: linear density function")


def femur_values(ct: CTImage, labels: LabelMap, side: str, to_density,  # noqa: ANN001
                 restore: bool = True, use_labels: bool = True) -> dict[str, float]:
    """{'abmd_total_hip', 'abmd_femoral_neck' (g/cm2), 'vbmd_<region>' (mg/cm3)} of one
    femur; ``to_density`` is a linear HU -> mg/cm3 function."""
    rows, _, _ = measure_femur(ct, labels.mask(f"femur_{side}"), side, _ha_line(to_density),
                               labels=labels if use_labels else None,
                               margin_mm=EDGE_MARGIN_MM if restore else 0.0)
    out = {}
    for r in rows:
        if r.quantity in ("abmd_total_hip", "abmd_femoral_neck") or r.quantity.startswith(
                "vbmd_"):
            assert r.value is not None, f"{r.quantity}: {r.flags}"
            out[r.quantity] = float(r.value)
    return out
