"""Validate CT bone density against DXA on paired cases (``ctmusclebone validate-bmd``).

Input: a CSV with one row per case (header required; extra columns ignored):

=================  ========  =============================================================
column             required  meaning
=================  ========  =============================================================
case_id            yes       case identifier (text, unique)
ct_abmd_g_cm2      yes*      CT value (CT-aBMD, g/cm2); another column via ``ct_column``
dxa_abmd_g_cm2     yes       DXA areal BMD, g/cm2
dxa_t_score        no        DXA T-score; needed for the osteoporosis ROC AUC
site               no        total_hip / femoral_neck / lumbar; rows of other sites are
                             skipped when ``site`` is given
=================  ========  =============================================================

Empty cells mark a missing value (the case is left out of the statistics that need it);
any other non-numeric value is an error naming the row and column, and so is an aBMD in
g/cm2 (the DXA column; the CT column when its name ends in ``_g_cm2``) outside
:data:`ABMD_PLAUSIBLE_G_CM2` (mg/cm2 entered for g/cm2, a T-score in the wrong column).

Output: Pearson r (CT vs DXA), Bland-Altman bias and 95 % limits of agreement (CT minus
DXA; only when both are in the same unit, i.e. the CT column ends in ``_g_cm2``), ROC AUC
of the CT value for osteoporosis (DXA T-score <= -2.5, WHO), lower CT value = more likely
positive, with percentile bootstrap 95 % CIs of r and AUC; n of each.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import atomic_write_text
from .errors import InputError
from .stats import bland_altman, bootstrap_ci, pearson_r, roc_auc
from .tables import read_csv_table

SITES = ("total_hip", "femoral_neck", "lumbar")
#: WHO osteoporosis threshold on the DXA T-score (T <= -2.5).
OSTEOPOROSIS_T = -2.5
REQUIRED = ("case_id", "dxa_abmd_g_cm2")
#: Plausible areal BMD in g/cm2 (project choice, not validated): DXA and HA-equivalent
#: CT-aBMD of adults are about 0.3-1.5 g/cm2 at the hip and spine; these bounds leave
#: room for extreme cases and refuse a unit mistake (mg/cm2: hundreds), a T-score or a
#: mistyped value. Checked in the DXA column and in a CT column named ``*_g_cm2``, by
#: :func:`read_pairs`, the reader of both ``validate-bmd`` and ``fit-dxa``.
ABMD_PLAUSIBLE_G_CM2: tuple[float, float] = (0.05, 3.0)


@dataclass
class Metric:
    """One validation statistic with its CI (NaN when not computed) and n."""

    name: str
    value: float | None
    unit: str
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""


@dataclass
class BmdValidation:
    """Result of a CT-vs-DXA validation."""

    site: str | None
    ct_column: str
    n_cases: int
    metrics: list[Metric] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    def get(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["software"] = f"CTMuscleBone {__version__}"
        d["metrics"] = [{k: _clean(v) for k, v in asdict(m).items()} for m in self.metrics]
        return d

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["metric", "value", "unit", "n", "ci95_low", "ci95_high", "note"])
        for m in self.metrics:
            w.writerow([m.name, _fmt(m.value), m.unit, m.n, _fmt(m.ci_low), _fmt(m.ci_high),
                        m.note])
        return buf.getvalue()

    def table(self) -> str:
        """A readable fixed-width table."""
        title = f"CT vs DXA validation ({self.site or 'all sites'}; CT column {self.ct_column})"
        lines = [title, "-" * len(title),
                 f"{'metric':<24}{'value':>10}  {'95% CI':<20}{'n':>5}  unit"]
        for m in self.metrics:
            ci = (f"[{_fmt(m.ci_low, 3)}, {_fmt(m.ci_high, 3)}]"
                  if m.ci_low is not None and _finite(m.ci_low) else "")
            val = _fmt(m.value, 4) if m.value is not None else "n/a"
            lines.append(f"{m.name:<24}{val:>10}  {ci:<20}{m.n:>5}  {m.unit}"
                         + (f"  ({m.note})" if m.note else ""))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike[str], stem: str = "validate_bmd") -> list[Path]:
        """Write ``<stem>.json`` and ``<stem>.csv`` into ``out_dir`` atomically."""
        out = Path(out_dir)
        j, c = out / f"{stem}.json", out / f"{stem}.csv"
        atomic_write_text(j, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        atomic_write_text(c, self.to_csv_text())
        return [j, c]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: Any, digits: int = 6) -> str:
    if v is None or not _finite(v):
        return ""
    return f"{v:.{digits}g}"


def read_pairs(path: str | os.PathLike[str], ct_column: str = "ct_abmd_g_cm2",
               site: str | None = None) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """Read the paired CSV.

    Returns
    -------
    case_ids : list of str
    columns : dict of str -> np.ndarray, (n,)
        ``ct``, ``dxa``, and ``t_score`` (all NaN when the column is absent).
    warnings : list of str

    Raises
    ------
    InputError
        Missing file columns, duplicate case ids, non-numeric values, an aBMD in g/cm2
        outside :data:`ABMD_PLAUSIBLE_G_CM2` (a unit mistake), no rows.
    """
    table = read_csv_table(
        path, (*REQUIRED, ct_column), what="Paired CSV",
        hint=f"Required: case_id, {ct_column}, dxa_abmd_g_cm2; optional: dxa_t_score, site.")
    p, header = table.path, table.header
    if site is not None and site not in SITES:
        raise InputError(f"Unknown site '{site}': use one of {', '.join(SITES)}.")
    ids: list[str] = []
    ct, dxa, t = [], [], []
    warnings: list[str] = []
    skipped = 0
    for line, row in table.rows:
        if site is not None and "site" in header:
            if (row.get("site") or "").strip() != site:
                skipped += 1
                continue
        cid = (row.get("case_id") or "").strip()
        if not cid:
            raise InputError(f"{p} line {line}: case_id is empty; every row needs an id.")
        if cid in ids:
            raise InputError(f"{p} line {line}: case_id '{cid}' appears twice.")
        ids.append(cid)
        ct.append(_num(row.get(ct_column), p, line, ct_column,
                       abmd=ct_column.endswith("_g_cm2")))
        dxa.append(_num(row.get("dxa_abmd_g_cm2"), p, line, "dxa_abmd_g_cm2", abmd=True))
        t.append(_num(row.get("dxa_t_score"), p, line, "dxa_t_score")
                 if "dxa_t_score" in header else math.nan)
    if not ids:
        raise InputError(f"{p}: no data rows" + (f" for site '{site}'" if site else "") + ".")
    if skipped:
        warnings.append(f"{skipped} row(s) of other sites skipped")
    if site is not None and "site" not in header:
        warnings.append(f"no 'site' column: all rows taken as {site}")
    return ids, {"ct": np.array(ct), "dxa": np.array(dxa), "t_score": np.array(t)}, warnings


def _num(raw: str | None, p: Path, line: int, col: str, abmd: bool = False) -> float:
    """The number in a cell (NaN when empty); ``abmd``: an aBMD in g/cm2, refused outside
    :data:`ABMD_PLAUSIBLE_G_CM2`."""
    s = (raw or "").strip()
    if s == "" or s.upper() in ("NA", "NAN"):
        return math.nan
    try:
        v = float(s)
    except ValueError:
        raise InputError(f"{p} line {line}: column {col} has '{s}', which is not a number "
                         "(leave the cell empty for a missing value).") from None
    if not math.isfinite(v):
        raise InputError(f"{p} line {line}: column {col} has a non-finite value '{s}'.")
    lo, hi = ABMD_PLAUSIBLE_G_CM2
    if abmd and not lo <= v <= hi:
        hint = (" (mg/cm2? divide by 1000)" if 100 <= v <= 3000 else "")
        raise InputError(
            f"{p} line {line}: column {col} has {s}, not a plausible aBMD in g/cm2 "
            f"({lo:g}-{hi:g}){hint}. Check the units (both columns in g/cm2, CT-aBMD "
            "HA-equivalent) and look for a mistyped value or a T-score in the wrong column.")
    return v


def validate_bmd(
    path: str | os.PathLike[str],
    site: str | None = None,
    ct_column: str = "ct_abmd_g_cm2",
    n_boot: int = 2000,
    seed: int = 0,
) -> BmdValidation:
    """Agreement and diagnostic performance of CT BMD against DXA (see module docstring)."""
    ids, cols, warnings = read_pairs(path, ct_column, site)
    ct, dxa, t = cols["ct"], cols["dxa"], cols["t_score"]
    res = BmdValidation(site=site, ct_column=ct_column, n_cases=len(ids), warnings=warnings,
                        source=str(path))
    pair = np.isfinite(ct) & np.isfinite(dxa)
    n_pair = int(pair.sum())
    constant = n_pair >= 3 and (np.ptp(ct[pair]) == 0 or np.ptp(dxa[pair]) == 0)
    if constant:
        res.metrics.append(Metric("pearson_r", None, "1", n_pair,
                                  note="a column is constant: correlation undefined"))
    elif n_pair >= 3:
        r = pearson_r(ct[pair], dxa[pair])
        lo, hi = bootstrap_ci(pearson_r, ct[pair], dxa[pair], n_boot=n_boot, seed=seed)
        res.metrics.append(Metric("pearson_r", r, "1", n_pair, lo, hi))
    else:
        res.metrics.append(Metric("pearson_r", None, "1", n_pair,
                                  note="needs >= 3 cases with CT and DXA"))
    if ct_column.endswith("_g_cm2") and n_pair >= 3:
        ba = bland_altman(ct[pair], dxa[pair])
        res.metrics += [
            Metric("bland_altman_bias", ba.bias, "g/cm2", ba.n, note="mean of CT - DXA"),
            Metric("bland_altman_sd", ba.sd, "g/cm2", ba.n),
            Metric("loa_lower", ba.lower_loa, "g/cm2", ba.n, note="bias - 1.96 SD"),
            Metric("loa_upper", ba.upper_loa, "g/cm2", ba.n, note="bias + 1.96 SD"),
        ]
    elif not ct_column.endswith("_g_cm2"):
        res.warnings.append(f"Bland-Altman not computed: {ct_column} is not in g/cm2 like DXA")
    labelled = np.isfinite(ct) & np.isfinite(t)
    pos = t[labelled] <= OSTEOPOROSIS_T
    n_lab = int(labelled.sum())
    n_pos = int(pos.sum())
    if n_lab and 0 < n_pos < n_lab:
        auc = roc_auc(-ct[labelled], pos)
        lo, hi = bootstrap_ci(lambda s, y: roc_auc(s, y.astype(bool)), -ct[labelled], pos,
                              n_boot=n_boot, seed=seed)
        res.metrics.append(Metric("auc_osteoporosis", auc, "1", n_lab, lo, hi,
                                  note=f"DXA T <= {OSTEOPOROSIS_T}: {n_pos} positive"))
    else:
        why = ("no dxa_t_score values" if n_lab == 0
               else f"{n_pos} of {n_lab} cases osteoporotic: AUC needs both classes")
        res.metrics.append(Metric("auc_osteoporosis", None, "1", n_lab, note=why))
    res.metrics.append(Metric("n_cases", float(len(ids)), "1", len(ids)))
    return res
