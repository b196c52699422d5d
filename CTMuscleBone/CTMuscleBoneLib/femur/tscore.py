"""T-score, WHO category and percent of the young-adult mean for hip aBMD.

Reference: NHANES III non-Hispanic white women aged 20-29 (Looker et al., "Updated
data on proximal femur bone mineral levels of US adults", Osteoporos Int 1998;
8(5):468-489, doi 10.1007/s001980050093), the reference recommended for femoral
T-scores. Values used (g/cm2, mean +- SD):

* femoral neck 0.858 +- 0.120: the same values appear in an independent public
  implementation citing NHANES III (McCloskey & Kanis 2011); the primary table was not
  reachable from this project's sources, so the values are marked *unverified against
  the primary table*;
* total hip 0.942 +- 0.122: as given in the project's domain notes; not verified
  against the primary table either.

These are DXA (Hologic-scale) references. CT-aBMD is not DXA aBMD: a T-score from it is
an estimate until the site has validated CT-aBMD against its DXA.

WHO categories (WHO Technical Report Series 843, 1994): T >= -1 normal;
-2.5 < T < -1 low bone mass (osteopenia); T <= -2.5 osteoporosis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """Young-adult reference of one site: mean and SD, g/cm2, with its source."""

    mean_g_cm2: float
    sd_g_cm2: float
    source: str


REFERENCE_SOURCE = ("NHANES III white women 20-29 (Looker et al., Osteoporos Int 1998); "
                    "unverified against the primary table")
REFERENCES: dict[str, Reference] = {
    "femoral_neck": Reference(0.858, 0.120, REFERENCE_SOURCE),
    "total_hip": Reference(0.942, 0.122, REFERENCE_SOURCE),
}


def t_score(abmd_g_cm2: float, site: str) -> float:
    """(aBMD - young-adult mean) / young-adult SD for ``site`` ('femoral_neck', 'total_hip')."""
    ref = REFERENCES[site]
    return (abmd_g_cm2 - ref.mean_g_cm2) / ref.sd_g_cm2


def percent_young_adult_mean(abmd_g_cm2: float, site: str) -> float:
    """aBMD as a percentage of the young-adult mean of the same reference."""
    return 100.0 * abmd_g_cm2 / REFERENCES[site].mean_g_cm2


def who_category(t: float) -> str:
    """WHO category of a T-score: 'normal', 'low bone mass (osteopenia)' or 'osteoporosis'."""
    if t >= -1.0:
        return "normal"
    if t > -2.5:
        return "low bone mass (osteopenia)"
    return "osteoporosis"
