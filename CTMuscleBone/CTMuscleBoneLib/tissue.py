"""CT-number windows of tissues and foreign material: one constant per physical rule.

Every module that classifies voxels by HU imports from here (muscle fat infiltration,
internal calibration fallbacks, metal checks of the CT, femur, spine and calibration
phantom), so the rules cannot drift apart.
"""

from __future__ import annotations

#: Intermuscular / intramuscular adipose tissue window, HU (inclusive): Mitsiopoulos
#: et al., J Appl Physiol 1998; Aubrey et al., Acta Physiol 2014.
FAT_HU_RANGE: tuple[float, float] = (-190.0, -30.0)
#: Lean skeletal muscle window, HU (inclusive): same sources.
LEAN_HU_RANGE: tuple[float, float] = (-29.0, 150.0)

#: Metal (implants, screws, nails): above dense cortical bone, which stays below about
#: 2000 HU at 120 kVp and reads somewhat higher at 80-100 kVp; metal is > 2000-3000 HU
#: with streaks (project domain notes). Unvalidated CTMuscleBone default.
METAL_HU = 2500.0
#: Metal or bone cement in a vertebra (vertebroplasty / kyphoplasty cement is
#: radio-opaque, PMMA with barium or zirconia, and often reads below metal): the spine
#: check uses this lower threshold together with a minimum cluster volume, inside or
#: within a few mm of the vertebra. Unvalidated CTMuscleBone default.
METAL_OR_CEMENT_HU = 2000.0
