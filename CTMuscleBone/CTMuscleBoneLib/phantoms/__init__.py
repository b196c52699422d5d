"""Synthetic CT phantoms with analytic ground truth (bones, muscles, fat, rods, metal).

Entry point: :func:`make_phantom` with a :class:`PhantomSpec`; the layout is
documented in :mod:`.builder` and :mod:`.layout`. Components (femur, vertebra,
calibration rods, pelvis, muscles, body) follow the :class:`.base.Component`
protocol and are painted by :func:`.rasterize.rasterize` onto any voxel grid.
"""

from .base import Component, PaintBuffer, ScannerModel
from .builder import Phantom, PhantomSpec, PhantomTruth, StructureTruth, make_phantom
from .rasterize import REORIENT_EXAMPLES, geometry_for, rasterize

__all__ = [
    "Component", "PaintBuffer", "ScannerModel", "Phantom", "PhantomSpec", "PhantomTruth",
    "StructureTruth", "make_phantom", "REORIENT_EXAMPLES", "geometry_for", "rasterize",
]
