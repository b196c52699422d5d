"""HU -> bone mineral density calibration (phantom-based, internal, none).

Front function: :func:`calibrate`. Phantom definitions are data
(``calibration/phantoms/*.json``, :func:`load_phantom_definition`).
"""

from .api import calibrate
from .definitions import PhantomDefinition, Rod, available_phantoms, load_phantom_definition
from .internal import internal_calibration, load_internal_references
from .model import Calibration, CalibrationRefused
from .phantom_fit import find_rods, measure_labelled_rods, phantom_calibration

__all__ = [
    "Calibration",
    "CalibrationRefused",
    "PhantomDefinition",
    "Rod",
    "available_phantoms",
    "calibrate",
    "find_rods",
    "internal_calibration",
    "load_internal_references",
    "load_phantom_definition",
    "measure_labelled_rods",
    "phantom_calibration",
]
