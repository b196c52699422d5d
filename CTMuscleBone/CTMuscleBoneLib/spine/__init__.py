"""Lumbar spine: vertebral body separation, trabecular ROI, fracture grading, vBMD.

Entry point: :func:`CTMuscleBoneLib.spine.measure.measure_spine`. Every step works on
voxel centres in physical (LPS mm) coordinates, so the results do not depend on how
the image is stored (RAS, LPS, permuted or oblique axes, any spacing).
"""
