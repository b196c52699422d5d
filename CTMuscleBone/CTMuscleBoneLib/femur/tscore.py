"""T-score, WHO category and percent of the young-adult mean against NHANES III.

Kept for callers of the single-reference API (no pipeline module uses it): thin
delegations to the bundled ``nhanes3`` table of :mod:`CTMuscleBoneLib.dxa.references`
(NHANES III non-Hispanic white women aged 20-29, Looker et al., Osteoporos Int 1998;
8(5):468-489, doi 10.1007/s001980050093; femoral neck 0.858 +- 0.120, total hip
0.942 +- 0.122 g/cm2, *unverified against the primary table*). WHO categories (WHO
Technical Report Series 843, 1994): T >= -1 normal; -2.5 < T < -1 low bone mass
(osteopenia); T <= -2.5 osteoporosis.

These functions do no scale conversion: femoral BMD rows are computed by
:func:`CTMuscleBoneLib.dxa.scores.score_rows` on the DXA-equivalent aBMD only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dxa.references import load_reference


@dataclass(frozen=True)
class Reference:
    """Young-adult reference of one site: mean and SD, g/cm2, with its source."""

    mean_g_cm2: float
    sd_g_cm2: float
    source: str


_NHANES3 = load_reference("nhanes3")
REFERENCE_SOURCE = ("NHANES III white women 20-29 (Looker et al., Osteoporos Int 1998); "
                    "unverified against the primary table")
REFERENCES: dict[str, Reference] = {
    site: Reference(ref.mean_g_cm2, ref.sd_g_cm2, REFERENCE_SOURCE)
    for site, ref in _NHANES3.sites.items()
}


def t_score(abmd_g_cm2: float, site: str) -> float:
    """(aBMD - young-adult mean) / young-adult SD for ``site`` ('femoral_neck', 'total_hip')."""
    return _NHANES3.t_score(abmd_g_cm2, site)


def percent_young_adult_mean(abmd_g_cm2: float, site: str) -> float:
    """aBMD as a percentage of the young-adult mean of the same reference."""
    return _NHANES3.percent_yam(abmd_g_cm2, site)


def who_category(t: float) -> str:
    """WHO category of a T-score: 'normal', 'low bone mass (osteopenia)' or 'osteoporosis'."""
    return _NHANES3.criteria.category(t)
