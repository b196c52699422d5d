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
from .phantomless import physics_calibration


def calibrate(
    ct: CTImage,
    labels: LabelMap | None = None,
    method: Literal["phantom", "internal", "none"] = "none",
    phantom: str | Path | dict | PhantomDefinition | None = None,
    references: str | Path | dict | None = None,
    min_r: float | None = None,
    material: str = "K2HPO4",
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
        A site's reference-tissue table for method 'internal' (equivalent densities
        derived from its own phantom-calibrated scans); None: the physics-based
        phantomless calibration (:func:`.phantomless.physics_calibration`).
    min_r : float
        Minimum Pearson r of a phantom or table fit (default 0.99).
    material : {'K2HPO4'}
        Density scale of the physics-based internal calibration: K2HPO4 only (HA
        through :func:`CTMuscleBoneLib.dxa.material.to_hydroxyapatite`).

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
        if references is None:
            return physics_calibration(ct, labels, material=material)
        kw = {} if min_r is None else {"min_r": min_r}
        return internal_calibration(ct, labels, references, **kw)
    raise InputError(f"Unknown calibration method '{method}': use phantom, internal or none.")
