"""HU -> bone mineral density calibration (phantom-based, internal, none)."""

from .model import Calibration

__all__ = ["Calibration"]
