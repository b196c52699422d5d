"""Trabecular ROI volume on oblique grids (CTMuscleBoneLib.spine.trabecular_roi,
spine.body_separation).

Reference: the same phantom vertebrae (L2, L3, whole in the field of view ``FOV``)
stored at 0.5 mm LPS, where the ROI is 8.24 cm3 (L2) and 9.47 cm3 (L3)
(``analyse_spine``; at 0.5 mm the voxel size barely matters).

Before the fix the body's walls were found on area profiles binned at one voxel's extent
along each frame axis (up to sqrt(3) voxels on an oblique grid: the half-width and
half-depth, hence the ROI's elliptic cylinder, came out 1-2 mm short), and the surface
distance was ``d - s/2`` to the nearest outside voxel centre (up to half a voxel short
on an oblique grid). The 3 mm oblique ROI was 6.43 / 6.88 cm3 (-22 / -27 %) against
9.23 / 10.85 cm3 on LPS; at 2 mm 6.68 / 7.31 cm3 (-19 / -23 %).
"""

from __future__ import annotations

import pytest
from CTMuscleBoneLib.calibration.model import Calibration
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.spine.measure import analyse_spine

FOV = ((-47.3, 14.1, 121.7), (47.9, 108.6, 219.2))
REFERENCE_CM3 = {"vertebrae_L2": 8.24, "vertebrae_L3": 9.47}
CAL = Calibration(method="fixed", material="K2HPO4", slope_mg_cm3_per_hu=0.8,
                  intercept_mg_cm3=-2.0, description="phantom scanner line")


def _roi_volumes(orientation: str, spacing: float) -> dict[str, float]:
    p = make_phantom(PhantomSpec(region="lumbar", spacing_mm=spacing,
                                 orientation=orientation, fov_mm=FOV, noise_sd_hu=0.0))
    res = analyse_spine(p.ct, p.labels, CAL)
    return {k: res[k].roi.volume_cm3 for k in REFERENCE_CM3}


# oblique: within 6 % at 3 mm, 12 % at 2 mm of the 0.5 mm reference (after the fix
# +1 / -1 % and -6 / -10 %); LPS at 3 mm keeps whole 3 mm layers (+19 / +14 %)
@pytest.mark.parametrize(("orientation", "spacing", "tol_pct"), [
    ("oblique", 3.0, 6.0), ("oblique", 2.0, 12.0), ("LPS", 3.0, 20.0)])
def test_trabecular_roi_volume_against_fine_reference(orientation, spacing, tol_pct):
    got = _roi_volumes(orientation, spacing)
    for key, ref in REFERENCE_CM3.items():
        assert got[key] == pytest.approx(ref, rel=tol_pct / 100), (key, got[key], ref)


def test_trabecular_roi_volume_oblique_vs_lps_at_3mm():
    """Same vertebrae, same spacing: storage orientation moves the ROI by < 20 %
    (the rest is the 3 mm layering of the axis-aligned grid); it was 30-37 %."""
    lps, obl = _roi_volumes("LPS", 3.0), _roi_volumes("oblique", 3.0)
    for key in REFERENCE_CM3:
        assert obl[key] == pytest.approx(lps[key], rel=0.20), (key, obl[key], lps[key])
