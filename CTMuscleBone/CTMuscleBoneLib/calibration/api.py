"""One front function for every calibration method."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..image import CTImage, LabelMap
from .definitions import PhantomDefinition
from .internal import internal_calibration
from .model import Calibration
from .phantom_fit import MIN_R, phantom_calibration


def calibrate(
    ct: CTImage,
    labels: LabelMap | None = None,
    method: Literal["phantom", "internal", "none"] = "none",
    phantom: str | Path | dict | PhantomDefinition | None = None,
    references: str | Path | dict | None = None,
    min_r: float | None = None,
) -> Calibration:
    """Calibrate a CT's HU to mineral density.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
        Rod labels (phantom), tissue labels (internal).
    method : {'phantom', 'internal', 'none'}
    phantom : str, path, dict or PhantomDefinition
        Phantom definition for method 'phantom' (required there).
    references : path or dict
        Reference-tissue table for method 'internal' (bundled unvalidated default if None).
    min_r : float
        Minimum Pearson r of the fit (default 0.99).

    Returns
    -------
    Calibration

    Raises
    ------
    InputError
        Unknown method, missing phantom definition.
    CalibrationRefused
        The calibration data cannot be trusted (message says why).
    """
    if method == "none":
        return Calibration.none("no calibration requested: HU values only")
    if method == "phantom":
        if phantom is None:
            raise InputError("Phantom calibration needs the phantom definition: a bundled name "
                             "(B-MAS200, Mindways Model 3, QRM-BDC) or a JSON file path.")
        return phantom_calibration(ct, labels, phantom, min_r=MIN_R if min_r is None else min_r)
    if method == "internal":
        kw = {} if min_r is None else {"min_r": min_r}
        return internal_calibration(ct, labels, references, **kw)
    raise InputError(f"Unknown calibration method '{method}': use phantom, internal or none.")
