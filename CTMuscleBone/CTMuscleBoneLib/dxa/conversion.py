"""CT-aBMD -> DXA-equivalent aBMD: the conversion model, its file and its fit.

CT-aBMD (the DXA-view projection of calibrated CT, hydroxyapatite-equivalent g/cm2) is
not DXA aBMD: projection geometry, ROI boxes, calibration material and partial volume
differ (CTXA Hip vs DXA: r 0.95-0.97 at neck and total hip, SEE 0.044 g/cm2, Cann et
al., PLoS One 2014; Khoo et al. 2009: CT-aBMD slightly lower than DXA). The honest route
is a line fitted on a site's own paired CT and DXA::

    dxa_equivalent_g_cm2 = intercept_g_cm2 + slope * ct_abmd_ha_g_cm2     (per site)

:class:`DXAConversionModel` holds one line per site ('total_hip', 'femoral_neck',
'lumbar'), a ``validated`` flag and provenance; it is read from and written to JSON
(schema :data:`SCHEMA`). The shipped default (``data/dxa_conversion_default.json``) is
the identity for every site and **not validated**: the DXA-equivalent aBMD through it
is shown flagged ``unvalidated``, and no T-score, Z-score, %YAM or category is computed
from it (:func:`CTMuscleBoneLib.dxa.scores.score_rows`).

:func:`fit_dxa_model` fits the lines by least squares on paired data (the CSV of
``ctmusclebone validate-bmd``) with K-fold cross-validation: out-of-fold Pearson r,
SEE (RMSE of out-of-fold predictions), Bland-Altman of the converted values against
DXA; the in-sample SEE uses n - 2 degrees of freedom.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats
from ..atomic import atomic_write_text
from ..errors import InputError
from ..results import sha256_of_path
from ..tables import read_csv_table
from ..validate_bmd import SITES, read_pairs
from .data_file import read_json

SCHEMA = "ctmusclebone-dxa-model/1"
#: What the model's input is (every CT-aBMD is put on this scale before the model).
INPUT_SCALE = "CT-aBMD, hydroxyapatite-equivalent, g/cm2"
_DEFAULT = "data/dxa_conversion_default.json"
#: Fewest paired cases per site for a fit.
MIN_PAIRS = 5


@dataclass(frozen=True)
class SiteLine:
    """``dxa = intercept_g_cm2 + slope * ct`` for one site."""

    slope: float
    intercept_g_cm2: float

    def apply(self, ct_abmd_g_cm2: float) -> float:
        return self.intercept_g_cm2 + self.slope * ct_abmd_g_cm2


@dataclass(frozen=True)
class DXAConversionModel:
    """A per-site linear CT-aBMD -> DXA-aBMD model with provenance.

    Attributes
    ----------
    name : str
    sites : dict of str -> SiteLine
        Lines of the sites it covers ('total_hip', 'femoral_neck', 'lumbar').
    validated : bool
        True only for a model fitted on paired CT and DXA data (``fit-dxa``).
    input_scale : str
        :data:`INPUT_SCALE`.
    provenance : dict
        Source, data checksum, date, fit figures per site.
    path : str or None
        Where the model was read from.
    """

    name: str
    sites: dict[str, SiteLine]
    validated: bool = False
    input_scale: str = INPUT_SCALE
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def predict(self, site: str, ct_abmd_g_cm2: float) -> float:
        """DXA-equivalent aBMD (g/cm2) of a HA-equivalent CT-aBMD at ``site``.

        Raises
        ------
        KeyError
            When the model has no line for ``site``.
        """
        return self.sites[site].apply(float(ct_abmd_g_cm2))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "name": self.name, "validated": self.validated,
                "input_scale": self.input_scale,
                "sites": {s: asdict(line) for s, line in self.sites.items()},
                "provenance": self.provenance}

    def write(self, path: str | os.PathLike[str]) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)

    def method_text(self, site: str) -> str:
        line = self.sites[site]
        return (f"DXA-equivalent = {line.intercept_g_cm2:.4g} + {line.slope:.4g} x CT-aBMD "
                f"(model {self.name})")

    def unvalidated_reason(self) -> str | None:
        """Why values through this model are not known to be on the DXA scale, or None."""
        if self.validated:
            return None
        return (f"CT-aBMD not converted to the DXA scale by a validated model (model "
                f"'{self.name}' is not validated); fit one with `ctmusclebone fit-dxa` and "
                f"pass it with `--dxa-model`")

    def provenance_entry(self) -> dict[str, Any]:
        return {"kind": "CT-to-DXA aBMD model", "name": self.name, "path": self.path,
                "validated": self.validated,
                "sites": {s: asdict(line) for s, line in self.sites.items()},
                "source": self.provenance.get("source")}


#: Bounds of a plausible CT-to-DXA line (project defaults, not validated): DXA and
#: HA-equivalent CT-aBMD are both g/cm2 of about 0.3-1.5, and published CT-vs-DXA lines
#: have slopes near 1 (Cann et al. 2014; Khoo et al. 2009), so a slope outside 0.1-10 or
#: an intercept beyond +-2 g/cm2 means a unit mistake, a typo or unrelated columns.
SLOPE_RANGE: tuple[float, float] = (0.1, 10.0)
MAX_ABS_INTERCEPT_G_CM2 = 2.0


def implausible_line(line: SiteLine) -> str | None:
    """Why ``line`` cannot be a CT-to-DXA line (:data:`SLOPE_RANGE`,
    :data:`MAX_ABS_INTERCEPT_G_CM2`), or None when it can. The same rule applies when a
    model is fitted (:func:`model_from_fit`) and when one is loaded."""
    if not (math.isfinite(line.slope) and math.isfinite(line.intercept_g_cm2)):
        return "non-finite coefficients"
    if not (SLOPE_RANGE[0] <= line.slope <= SLOPE_RANGE[1]
            and abs(line.intercept_g_cm2) <= MAX_ABS_INTERCEPT_G_CM2):
        return (f"implausible line (slope {line.slope:g}, intercept "
                f"{line.intercept_g_cm2:g} g/cm2; a plausible line has a slope in "
                f"{SLOPE_RANGE[0]:g}-{SLOPE_RANGE[1]:g} and an intercept within "
                f"+-{MAX_ABS_INTERCEPT_G_CM2:g} g/cm2)")
    return None


def _parse(d: Any, where: str) -> DXAConversionModel:
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(f"{where} is not a CTMuscleBone CT-to-DXA model (expected "
                         f"\"schema\": \"{SCHEMA}\"); create one with `ctmusclebone fit-dxa`.")
    try:
        raw_sites = d["sites"]
        if not isinstance(raw_sites, dict) or not raw_sites:
            raise ValueError("'sites' must be a non-empty object")
        sites = {}
        for s, line in raw_sites.items():
            if s not in SITES:
                raise ValueError(f"unknown site '{s}' (use {', '.join(SITES)})")
            sl = SiteLine(float(line["slope"]), float(line["intercept_g_cm2"]))
            problem = implausible_line(sl)
            if problem:
                raise ValueError(f"site {s}: {problem}")
            sites[s] = sl
        validated = d.get("validated")
        if not isinstance(validated, bool):
            raise ValueError("'validated' must be true or false")
        model = DXAConversionModel(
            name=str(d["name"]), sites=sites, validated=validated,
            input_scale=str(d.get("input_scale", INPUT_SCALE)),
            provenance=dict(d.get("provenance", {})), path=where)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"CT-to-DXA model {where} lacks or has a bad field: {exc}") from None
    if model.input_scale != INPUT_SCALE:
        raise InputError(f"CT-to-DXA model {where}: input scale '{model.input_scale}' is not "
                         f"'{INPUT_SCALE}'.")
    return model


def load_dxa_model(model: str | os.PathLike[str] | DXAConversionModel | None = None
                   ) -> DXAConversionModel:
    """A model from a JSON file, a loaded model as it is, or ``None``: the shipped default
    (identity, unvalidated)."""
    if isinstance(model, DXAConversionModel):
        return model
    d, where = read_json("CT-to-DXA model", model, _DEFAULT,
                         "built-in default (dxa_conversion_default.json)")
    return _parse(d, where)


# ---------------------------------------------------------------------------------------
# Fitting from paired data


@dataclass
class SiteFit:
    """Fit and cross-validated agreement of one site's line.

    Attributes
    ----------
    site : str
    n : int
        Paired cases used.
    folds : int
    slope, intercept_g_cm2 : float
        Least squares on all cases (DXA on CT).
    see_g_cm2 : float
        In-sample standard error of the estimate, sqrt(sum residual^2 / (n - 2)).
    cv_pearson_r : float
        Out-of-fold predicted vs DXA.
    cv_see_g_cm2 : float
        RMSE of the out-of-fold predictions (cross-validated SEE).
    cv_bias_g_cm2, cv_loa_lower_g_cm2, cv_loa_upper_g_cm2 : float
        Bland-Altman of the out-of-fold predictions minus DXA (bias -+ 1.96 SD).
    raw_pearson_r : float
        CT-aBMD vs DXA before conversion.
    raw_bias_g_cm2 : float
        Mean CT-aBMD - DXA before conversion.
    """

    site: str
    n: int
    folds: int
    slope: float
    intercept_g_cm2: float
    see_g_cm2: float
    cv_pearson_r: float
    cv_see_g_cm2: float
    cv_bias_g_cm2: float
    cv_loa_lower_g_cm2: float
    cv_loa_upper_g_cm2: float
    raw_pearson_r: float
    raw_bias_g_cm2: float


def fit_site(ct_g_cm2: np.ndarray, dxa_g_cm2: np.ndarray, site: str, folds: int = 5,
             seed: int = 0) -> SiteFit:
    """Fit ``dxa = a + b ct`` on paired values (n,) with K-fold cross-validation.

    Cases with a missing value in either column are left out.

    Raises
    ------
    InputError
        Fewer than :data:`MIN_PAIRS` complete pairs, or a constant column.
    """
    x = np.asarray(ct_g_cm2, dtype=float)
    y = np.asarray(dxa_g_cm2, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < MIN_PAIRS:
        raise InputError(f"site {site}: at least {MIN_PAIRS} complete CT/DXA pairs are "
                         f"needed, got {n}.")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise InputError(f"site {site}: a column is constant; no line can be fitted.")
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    see = float(np.sqrt(np.sum((design @ coef - y) ** 2) / (n - 2)))
    k = min(folds, n)
    predicted = np.empty_like(y)
    for train, test in stats.kfold_indices(n, k, seed):
        if np.ptp(x[train]) == 0:
            raise InputError(f"site {site}: a training fold has constant CT values; use "
                             "fewer folds or more cases.")
        c, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
        predicted[test] = design[test] @ c
    ba = stats.bland_altman(predicted, y)
    return SiteFit(site=site, n=n, folds=k, slope=float(coef[1]),
                   intercept_g_cm2=float(coef[0]), see_g_cm2=see,
                   cv_pearson_r=stats.pearson_r(predicted, y),
                   cv_see_g_cm2=stats.rmse(predicted, y), cv_bias_g_cm2=ba.bias,
                   cv_loa_lower_g_cm2=ba.lower_loa, cv_loa_upper_g_cm2=ba.upper_loa,
                   raw_pearson_r=stats.pearson_r(x, y), raw_bias_g_cm2=float(np.mean(x - y)))


def sites_in_csv(path: str | os.PathLike[str]) -> list[str]:
    """Sites named in the CSV's ``site`` column (in :data:`SITES` order); [] without one.

    Raises
    ------
    InputError
        A site outside :data:`SITES`.
    """
    table = read_csv_table(path, what="Paired CSV")
    p = table.path
    if not table.has("site"):
        return []
    found = {row.get("site", "") for _, row in table.rows}
    bad = sorted(s for s in found if s not in SITES)
    if bad:
        raise InputError(f"{p}: unknown site(s) {', '.join(repr(b) for b in bad)}; use "
                         f"{', '.join(SITES)}.")
    return [s for s in SITES if s in found]


@dataclass
class DXAFitReport:
    """Per-site fits of one ``fit-dxa`` run."""

    source: str
    ct_column: str
    fits: list[SiteFit]
    warnings: list[str] = field(default_factory=list)


def fit_dxa_model(path: str | os.PathLike[str], site: str | None = None,
                  ct_column: str = "ct_abmd_g_cm2", folds: int = 5, seed: int = 0
                  ) -> DXAFitReport:
    """Fit one line per site from a paired CSV (the ``validate-bmd`` format).

    Parameters
    ----------
    path : path
        CSV with ``case_id``, the CT column (HA-equivalent CT-aBMD, g/cm2: the
        ``abmd_<site>`` rows of ``ctmusclebone measure``), ``dxa_abmd_g_cm2`` and
        ``site`` (or give ``site`` for a CSV of one site).
    site : str, optional
        Fit only this site.
    """
    sites = [site] if site is not None else sites_in_csv(path)
    if not sites:
        raise InputError(f"{path}: no 'site' column; give the site (--site) of all rows.")
    fits, warnings = [], []
    for s in sites:
        _, cols, w = read_pairs(path, ct_column, s)
        warnings += [f"{s}: {x}" for x in w if "other sites skipped" not in x]
        fits.append(fit_site(cols["ct"], cols["dxa"], s, folds, seed))
    return DXAFitReport(str(path), ct_column, fits, warnings)


#: Smallest cross-validated Pearson r of a fit that is written as a validated model
#: (project default, not validated: published CT-vs-DXA agreement is r 0.9 or more,
#: Cann et al. 2014; a line that predicts DXA this poorly is no conversion).
MIN_CV_PEARSON_R = 0.5


def model_from_fit(report: DXAFitReport, name: str) -> DXAConversionModel:
    """A validated :class:`DXAConversionModel` with provenance from a fit report.

    Raises
    ------
    InputError
        A site's line is implausible (:func:`implausible_line`: the rule a loaded model
        must pass too) or predicts DXA poorly (cross-validated r below
        :data:`MIN_CV_PEARSON_R`): most often a unit mistake (mg/cm2 for g/cm2), a typo
        in a value or a wrong column.
    """
    for f in report.fits:
        problem = implausible_line(SiteLine(f.slope, f.intercept_g_cm2))
        r = f.cv_pearson_r
        if problem is None and not (r is not None and math.isfinite(r)
                                    and r >= MIN_CV_PEARSON_R):
            problem = (f"cross-validated Pearson r {r:.2f} is below {MIN_CV_PEARSON_R:g}"
                       if r is not None and math.isfinite(r)
                       else "cross-validated Pearson r is undefined")
        if problem:
            raise InputError(
                f"site {f.site}: the fitted CT-to-DXA line is not usable: {problem} "
                f"({f.n} pairs from {Path(report.source).name}, column {report.ct_column}). "
                "Check the units (both columns in g/cm2, CT-aBMD HA-equivalent), look for "
                "a mistyped value and check that each row pairs one case's CT and DXA; no "
                "model was written.")
    return DXAConversionModel(
        name=name,
        sites={f.site: SiteLine(f.slope, f.intercept_g_cm2) for f in report.fits},
        validated=True,
        provenance={
            "source": f"fitted by ctmusclebone fit-dxa on {Path(report.source).name} "
                      f"(column {report.ct_column})",
            "data_sha256": sha256_of_path(report.source),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "fits": {f.site: asdict(f) for f in report.fits},
        })
