"""CTMuscleBone core: bone mineral density and muscle mass from routine CT.

The package is Slicer-free and imports neither torch, Qt nor slicer at import time.
Segmentation (torch + MONAI) lives in :mod:`CTMuscleBoneLib.segmentation` and is
imported only when used.
"""

__version__ = "0.1.0"
