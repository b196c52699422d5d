"""A component made of one analytic shape with one label and one HU value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy import structure
from .base import PaintBuffer


@dataclass
class SolidComponent:
    """Paints ``shape`` with the canonical label of ``key`` and a constant HU.

    Parameters
    ----------
    key : str
        Anatomy key (label value from :mod:`CTMuscleBoneLib.anatomy`).
    shape : a shape of :mod:`.shapes`
    hu : float
        Noiseless HU inside the shape.
    """

    key: str
    shape: object
    hu: float

    @property
    def label_value(self) -> int:
        return structure(self.key).label_value

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.shape.bounds_mm()

    def paint(self, buf: PaintBuffer) -> None:
        inside = self.shape.contains(buf.points_mm)
        buf.labels[inside] = self.label_value
        buf.hu[inside] = self.hu

    def truth(self) -> dict:
        return {"key": self.key, "label_value": self.label_value,
                "volume_cm3": self.shape.volume_mm3 / 1000.0, "hu": float(self.hu),
                "shape": type(self.shape).__name__}
