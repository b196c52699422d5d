"""Find a calibration phantom in a scan without being told which: :func:`detect_phantom`.

Every candidate definition (the bundled B-MAS200, Mindways Model 3 and QRM-BDC, plus any
user definitions given) is tried with :func:`~.phantom_fit.phantom_calibration`; the
rod count must match (automatic rod detection) and the fit must pass its checks. Among
the candidates that pass, the best fit wins: the highest Pearson r, then the most rods.
The result's description names the phantom found and its fit; ``details['candidates']``
records every candidate and why it was not used.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..image import CTImage, LabelMap
from .definitions import PhantomDefinition, available_phantoms, load_phantom_definition
from .model import Calibration, CalibrationRefused
from .phantom_fit import MIN_R, phantom_calibration


def detect_phantom(
    ct: CTImage,
    labels: LabelMap | None = None,
    extra: list[str | Path | dict | PhantomDefinition] | tuple = (),
    min_r: float = MIN_R,
) -> Calibration:
    """Try every known phantom and return the best-fitting calibration.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
        Rod labels, when the rods are labelled.
    extra : sequence of definitions
        User definitions (file paths, dicts or PhantomDefinition) tried besides the
        bundled ones.
    min_r : float
        Minimum Pearson r of an accepted fit.

    Raises
    ------
    CalibrationRefused
        No candidate phantom fits (the message lists each candidate's reason).
    InputError
        An invalid user definition.
    """
    candidates: list[PhantomDefinition] = [load_phantom_definition(x) for x in extra]
    names = {d.name.lower() for d in candidates}
    candidates += [load_phantom_definition(n) for n in available_phantoms()
                   if n.lower() not in names]
    found: list[Calibration] = []
    tried: list[dict] = []
    for d in candidates:
        try:
            cal = phantom_calibration(ct, labels, d, min_r=min_r)
        except CalibrationRefused as exc:
            tried.append({"phantom": d.name, "accepted": False, "reason": str(exc)})
            continue
        except InputError as exc:  # pragma: no cover - definitions validated on load
            tried.append({"phantom": d.name, "accepted": False, "reason": str(exc)})
            continue
        tried.append({"phantom": d.name, "accepted": True, "r": cal.r, "n_rods": cal.n_points})
        found.append(cal)
    if not found:
        reasons = "; ".join(f"{t['phantom']}: {t['reason']}" for t in tried)
        raise CalibrationRefused(f"no known calibration phantom found in the scan ({reasons})")
    best = max(found, key=lambda c: (round(c.r or 0.0, 6), c.n_points))
    others = [f"{t['phantom']} r={t['r']:.4f}" for t in tried
              if t["accepted"] and t["phantom"] not in best.description]
    desc = f"found without being named: {best.description}"
    if others:
        desc += f"; other fits: {', '.join(others)}"
    return Calibration(
        method="phantom", material=best.material,
        slope_mg_cm3_per_hu=best.slope_mg_cm3_per_hu, intercept_mg_cm3=best.intercept_mg_cm3,
        r=best.r, n_points=best.n_points, description=desc, warnings=best.warnings,
        points=best.points, details={"candidates": tried},
    )
