"""Young-adult reference tables and diagnostic criteria, read from data files.

Bundled tables (``data/references/<name>.json``, each with its source and whether its
values were verified against the primary table):

* ``nhanes3``: NHANES III non-Hispanic white women aged 20-29 (Looker et al.,
  Osteoporos Int 1998), the ISCD reference for femoral T-scores of women and men, with
  the WHO 1994 categories on the T-score;
* ``jsbmr2012``: Japanese young adult mean (women) with the JSBMR 2012 criteria on
  the percentage of the young adult mean (%YAM <= 70 osteoporosis, 70-80 low bone mass;
  Soen et al., J Bone Miner Metab 2013).

A site may pass its own table (a JSON file of the same schema, :data:`SCHEMA`), e.g.
with device-specific YAM values or age- and sex-matched means for Z-scores
(``age_matched``: ``{"F": {"total_hip": [{"age_min": 20, "age_max": 30,
"mean_g_cm2": ..., "sd_g_cm2": ...}, ...]}}``, ages in years, ``age_min <= age <
age_max``). Loading checks the schema and names the bad field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..validate_bmd import SITES  # the sites a table may hold (one list)
from .data_file import read_json

SCHEMA = "ctmusclebone-bmd-reference/1"
#: Names of the bundled tables (``--reference``).
BUNDLED = ("nhanes3", "jsbmr2012")
#: Values the criteria may be applied to, and the category row each gives.
CRITERIA_ON = ("t_score", "percent_yam")
CATEGORY_QUANTITY = {"who1994": "who_category", "jsbmr2012": "jsbmr_category"}


@dataclass(frozen=True)
class SiteReference:
    """Young-adult mean and SD of one site, g/cm2."""

    mean_g_cm2: float
    sd_g_cm2: float
    verified: bool = False


@dataclass(frozen=True)
class AgeBand:
    """Age- and sex-matched mean and SD (g/cm2) for ``age_min <= age < age_max``."""

    age_min: float
    age_max: float
    mean_g_cm2: float
    sd_g_cm2: float


@dataclass(frozen=True)
class Criteria:
    """Three-class diagnostic criteria on a T-score or a %YAM.

    ``value <= osteoporosis_at_or_below`` -> osteoporosis; ``value <
    low_bone_mass_below`` -> low bone mass; otherwise normal.
    """

    id: str
    name: str
    on: str
    osteoporosis_at_or_below: float
    low_bone_mass_below: float
    labels: dict[str, str]
    text: str
    source: str

    @property
    def quantity(self) -> str:
        """Prefix of the category row ('who_category' or 'jsbmr_category')."""
        return CATEGORY_QUANTITY[self.id]

    def category(self, value: float) -> str:
        if value <= self.osteoporosis_at_or_below:
            return self.labels["osteoporosis"]
        if value < self.low_bone_mass_below:
            return self.labels["low"]
        return self.labels["normal"]


@dataclass(frozen=True)
class ReferenceTable:
    """A young-adult reference with its criteria; see the module docstring."""

    name: str
    title: str
    source: str
    verified: bool
    verification_note: str
    reference_sex: str
    applies_to_men: bool
    criteria: Criteria
    sites: dict[str, SiteReference]
    age_matched: dict[str, dict[str, tuple[AgeBand, ...]]] = field(default_factory=dict)
    path: str | None = None

    def site(self, site: str) -> SiteReference | None:
        return self.sites.get(site)

    def t_score(self, abmd_g_cm2: float, site: str) -> float:
        """(aBMD - young-adult mean) / young-adult SD."""
        ref = self.sites[site]
        return (abmd_g_cm2 - ref.mean_g_cm2) / ref.sd_g_cm2

    def percent_yam(self, abmd_g_cm2: float, site: str) -> float:
        """aBMD as a percentage of the young-adult mean."""
        return 100.0 * abmd_g_cm2 / self.sites[site].mean_g_cm2

    def age_band(self, site: str, sex: str, age_years: float) -> AgeBand | None:
        """The age- and sex-matched band holding ``age_years``, or None."""
        for band in self.age_matched.get(sex, {}).get(site, ()):
            if band.age_min <= age_years < band.age_max:
                return band
        return None

    def z_score(self, abmd_g_cm2: float, site: str, sex: str, age_years: float
                ) -> float | None:
        """(aBMD - age/sex-matched mean) / SD, or None without a matching band."""
        band = self.age_band(site, sex, age_years)
        if band is None:
            return None
        return (abmd_g_cm2 - band.mean_g_cm2) / band.sd_g_cm2

    def unverified_flag(self, site: str) -> str | None:
        """The flag of values from this table when they were not verified, or None."""
        ref = self.sites.get(site)
        if self.verified and (ref is None or ref.verified):
            return None
        return (f"unvalidated: {self.name} reference values not verified against the "
                "primary table")

    def provenance_entry(self) -> dict[str, Any]:
        return {"kind": "BMD reference", "name": self.name, "path": self.path,
                "title": self.title, "source": self.source, "verified": self.verified,
                "criteria": self.criteria.name, "criteria_source": self.criteria.source}


def _boolean(v: object, field: str) -> bool:
    """A JSON true/false (a string such as "false" would read as true through bool())."""
    if not isinstance(v, bool):
        raise ValueError(f"'{field}' must be true or false without quotes, got {v!r}")
    return v


def _finite(v: Any, what: str, positive: bool = False) -> float:
    x = float(v)
    if not math.isfinite(x) or (positive and x <= 0):
        raise ValueError(f"{what} must be a finite{' positive' if positive else ''} number")
    return x


def _parse(d: Any, where: str) -> ReferenceTable:
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(f"{where} is not a CTMuscleBone BMD reference table (expected "
                         f"\"schema\": \"{SCHEMA}\").")
    try:
        c = d["criteria"]
        if c["id"] not in CATEGORY_QUANTITY:
            raise ValueError(f"criteria.id must be one of {', '.join(CATEGORY_QUANTITY)}")
        if c["on"] not in CRITERIA_ON:
            raise ValueError(f"criteria.on must be one of {', '.join(CRITERIA_ON)}")
        labels = {k: str(c["labels"][k]) for k in ("normal", "low", "osteoporosis")}
        crit = Criteria(str(c["id"]), str(c["name"]), str(c["on"]),
                        _finite(c["osteoporosis_at_or_below"], "criteria.osteoporosis_at_or_below"),
                        _finite(c["low_bone_mass_below"], "criteria.low_bone_mass_below"),
                        labels, str(c.get("text", "")), str(c["source"]))
        if not crit.osteoporosis_at_or_below < crit.low_bone_mass_below:
            raise ValueError("criteria: osteoporosis_at_or_below must be below "
                             "low_bone_mass_below")
        sites = {}
        for s, v in d["sites"].items():
            if s not in SITES:
                raise ValueError(f"unknown site '{s}' (use {', '.join(SITES)})")
            sites[s] = SiteReference(_finite(v["mean_g_cm2"], f"{s}.mean_g_cm2", True),
                                     _finite(v["sd_g_cm2"], f"{s}.sd_g_cm2", True),
                                     _boolean(v.get("verified", False), f"{s}.verified"))
        if not sites:
            raise ValueError("'sites' is empty")
        ages: dict[str, dict[str, tuple[AgeBand, ...]]] = {}
        for sex, per_site in (d.get("age_matched") or {}).items():
            if sex not in ("F", "M"):
                raise ValueError(f"age_matched: sex '{sex}' is not F or M")
            ages[sex] = {}
            for s, bands in per_site.items():
                if s not in SITES:
                    raise ValueError(f"age_matched.{sex}: unknown site '{s}'")
                parsed = tuple(AgeBand(_finite(b["age_min"], "age_min"),
                                       _finite(b["age_max"], "age_max"),
                                       _finite(b["mean_g_cm2"], "mean_g_cm2", True),
                                       _finite(b["sd_g_cm2"], "sd_g_cm2", True))
                               for b in bands)
                if any(b.age_min >= b.age_max for b in parsed):
                    raise ValueError(f"age_matched.{sex}.{s}: age_min must be below age_max")
                ages[sex][s] = parsed
        sex = str(d["reference_sex"])
        if sex not in ("F", "M"):
            raise ValueError("reference_sex must be F or M")
        verified = _boolean(d["verified"], "verified")
        return ReferenceTable(
            name=str(d["name"]), title=str(d["title"]), source=str(d["source"]),
            verified=verified, verification_note=str(d.get("verification_note", "")),
            reference_sex=sex,
            applies_to_men=_boolean(d["applies_to_men"], "applies_to_men"), criteria=crit,
            sites=sites, age_matched=ages, path=where)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"BMD reference table {where}: {what}.") from None


def load_reference(reference: str | os.PathLike[str] | ReferenceTable = "nhanes3"
                   ) -> ReferenceTable:
    """A reference table: bundled name (:data:`BUNDLED`), JSON file path or a loaded table.

    Raises
    ------
    InputError
        Unknown name, missing file, invalid JSON or schema.
    """
    if isinstance(reference, ReferenceTable):
        return reference
    name = str(reference)
    if name not in BUNDLED and not (Path(name).suffix.lower() == ".json"
                                    and Path(name).is_file()):
        raise InputError(f"Unknown BMD reference '{name}': use {' or '.join(BUNDLED)}, or "
                         "the path of a reference JSON file.")
    d, where = read_json("BMD reference", None if name in BUNDLED else name,
                         f"data/references/{name}.json", f"bundled {name}")
    return _parse(d, where)
