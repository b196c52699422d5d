"""The 3D Slicer side of CTMuscleBone: nodes, panel parameters, worker process, install.

Nothing here measures anything: every computation is a call into the Slicer-free core
package :mod:`CTMuscleBoneLib` (its public API is :mod:`CTMuscleBoneLib.pipeline`).
"""
