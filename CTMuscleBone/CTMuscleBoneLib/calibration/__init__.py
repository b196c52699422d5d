"""HU -> bone mineral density calibration (phantom-based, internal, none).

Internal (phantomless): physics-based after Michalski et al. 2020
(:func:`physics_calibration`), or a site's own reference-tissue table.

Front function: :func:`calibrate`. Phantom definitions are data
(``calibration/phantoms/*.json``, :func:`load_phantom_definition`).
"""

from .api import calibrate
from .definitions import PhantomDefinition, Rod, available_phantoms, load_phantom_definition
from .detect import detect_phantom
from .internal import internal_calibration, load_internal_references
from .model import Calibration, CalibrationRefused
from .phantom_fit import find_rods, measure_labelled_rods, phantom_calibration
from .phantomless import physics_calibration
from .reference_tissues import TissueSample, sample_reference_tissues

__all__ = [
    "Calibration",
    "CalibrationRefused",
    "PhantomDefinition",
    "Rod",
    "TissueSample",
    "available_phantoms",
    "calibrate",
    "detect_phantom",
    "find_rods",
    "internal_calibration",
    "load_internal_references",
    "load_phantom_definition",
    "measure_labelled_rods",
    "phantom_calibration",
    "physics_calibration",
    "sample_reference_tissues",
]
