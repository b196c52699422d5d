"""Appendicular lean mass (ALM), skeletal muscle index (SMI) and sarcopenia flags.

CT covers only part of the limbs, so DXA ALM is *estimated* from CT muscle mass by a
linear model fitted on paired data::

    ALM_kg = intercept_kg + slope * predictor_kg + male_offset_kg * (sex == 'M')

where the predictor is a CT muscle total (default: lower-limb *lean* muscle mass, both
sides, i.e. the mass of the voxels in the lean window -29..+150 HU, intramuscular fat
excluded; see :func:`CTMuscleBoneLib.muscle.group_totals`). The model lives in a JSON
file with its provenance (:class:`ALMModel`). The shipped default is **not validated**: every
output that uses it says so, and no sarcopenia yes/no is given from it (the row is
"indeterminate"; nor from muscles cut by the field of view, nor from muscle masses
measured with another density model than the ALM model records). ``ctmusclebone fit-alm``
fits a validated model from a hospital's own paired CT/DXA data (:func:`fit_alm_model`).

SMI = ALM / height^2 (kg/m2). Sarcopenia (low muscle mass) cut-offs:

* AWGS 2019 (Chen et al., J Am Med Dir Assoc 21:300-307, 2020): DXA ALM/height^2
  < 7.0 kg/m2 in men, < 5.4 kg/m2 in women.
* EWGSOP2 (Cruz-Jentoft et al., Age Ageing 48:16-31, 2019): ALM/height^2
  < 7.0 kg/m2 in men, < 5.5 kg/m2 in women.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .anatomy import MUSCLE_REGIONS
from .atomic import atomic_write_text
from .density_models import DEFAULT_DENSITY_MODEL, DENSITY_MODELS
from .errors import InputError
from .results import INDETERMINATE, ResultRow, sha256_of_path
from .tables import read_csv_table
from .user_files import parse_json, read_text_file

SCHEMA = "ctmusclebone-alm-model/1"

# ---------------------------------------------------------------------------------------
# Plausibility bounds (project defaults, unvalidated; generous on purpose: they catch a
# wrong unit, never an unusual patient).
#
#: CT muscle-mass predictor per case, kg (``fit-alm`` refuses values outside). Adult
#: whole-body skeletal muscle averages about 21 kg (women) and 33 kg (men), a little
#: over half of it in the lower body (Janssen et al., J Appl Physiol 89:81-88, 2000;
#: quoted from memory, unverified), so lower-limb muscle is about 7-25 kg; a CT that
#: shows only the pelvis and part of the thigh holds less.
#: 0.5 kg is below any adult's gluteal and thigh muscle; 50 kg is more than the whole-body
#: muscle of nearly any adult, while the same masses in grams (hundreds to tens of
#: thousands) lie far above it.
PREDICTOR_KG_RANGE: tuple[float, float] = (0.5, 50.0)
#: DXA appendicular lean mass per case, kg. Adults lie at about 10-35 kg (an SMI of
#: 4-12 kg/m2 at 1.4-2.0 m); 2 kg and 60 kg are beyond any adult, and the same masses
#: in grams are far above 60.
DXA_ALM_KG_RANGE: tuple[float, float] = (2.0, 60.0)
#: ALM a model predicts for an adult, kg: outside it (adults about 10-35 kg, above) the
#: prediction is off the scale the model and the cut-offs were made for (e.g. the
#: shipped default on a CT showing only part of the legs, or a model fitted on another
#: field of view): ALM and SMI are flagged and no sarcopenia yes/no is given. Narrower
#: than DXA_ALM_KG_RANGE (a wrong unit) and wider than the adult range (an unusual
#: patient keeps the yes/no).
PLAUSIBLE_ALM_KG_RANGE: tuple[float, float] = (8.0, 50.0)
#: Slope of an ALM model, kg ALM per kg CT muscle. ALM includes the arms and the whole
#: legs, the CT only part of the legs: slopes near 1-3 are expected (the shipped default
#: is 1.333); 0.1-20 leaves room for a CT showing only part of the thigh. A predictor in
#: grams gives a slope near 0.002 and is refused.
MODEL_SLOPE_RANGE: tuple[float, float] = (0.1, 20.0)
#: Intercept of an ALM model, kg: beyond +-30 kg the line predicts impossible ALM for
#: ordinary predictors.
MODEL_INTERCEPT_KG_RANGE: tuple[float, float] = (-30.0, 30.0)
#: Male offset of an ALM model, kg (men carry a few kg more ALM at equal CT muscle).
MODEL_MALE_OFFSET_KG_RANGE: tuple[float, float] = (-15.0, 15.0)
#: The results-row quantities a predictor may name (:func:`alm_rows` reads them in g).
PREDICTOR_QUANTITIES = ("mass", "lean_mass")


@dataclass(frozen=True)
class SarcopeniaCriteria:
    """Low-muscle-mass cut-offs on SMI, kg/m2, by sex."""

    name: str
    men_kg_m2: float
    women_kg_m2: float
    source: str

    def cutoff(self, sex: str) -> float:
        return self.men_kg_m2 if sex == "M" else self.women_kg_m2


CRITERIA: dict[str, SarcopeniaCriteria] = {
    "awgs2019": SarcopeniaCriteria(
        "AWGS 2019", 7.0, 5.4, "Chen et al., J Am Med Dir Assoc 21:300-307, 2020"
    ),
    "ewgsop2": SarcopeniaCriteria(
        "EWGSOP2", 7.0, 5.5, "Cruz-Jentoft et al., Age Ageing 48:16-31, 2019"
    ),
}


@dataclass(frozen=True)
class ALMModel:
    """A linear CT-muscle -> DXA-ALM model with provenance.

    Attributes
    ----------
    name : str
    predictor : str
        Results row ``<structure>/<quantity>`` used as predictor, e.g.
        ``lower_limb_total/lean_mass`` (converted g -> kg).
    intercept_kg, slope, male_offset_kg : float
        Coefficients (slope is kg ALM per kg CT muscle).
    validated : bool
        True only for models fitted on paired CT and DXA data with cross-validation.
        In the JSON file: the booleans ``true`` or ``false`` only (a string such as
        ``"false"`` is refused); absent means false.
    required_regions : tuple of str
        Muscle regions (keys of :data:`CTMuscleBoneLib.anatomy.MUSCLE_REGIONS`) the CT
        must show for the model to apply; a case without them gets no ALM (a lumbar
        crop with only the top of the psoas is no lower limb).
    density_model : str
        The muscle density model (:data:`CTMuscleBoneLib.density_models.DENSITY_MODELS`,
        ``measure --density-model``) of the predictor masses the model was fitted on.
        Optional in the JSON file; absent means the project default
        (:data:`~CTMuscleBoneLib.density_models.DEFAULT_DENSITY_MODEL`, ``constant``).
        A case measured with another density model gets no sarcopenia yes/no.
    provenance : dict
        Source, data checksum, date, n, validation figures.
    path : str or None
        File the model was read from.
    """

    name: str
    predictor: str
    intercept_kg: float
    slope: float
    male_offset_kg: float = 0.0
    validated: bool = False
    required_regions: tuple[str, ...] = ()
    density_model: str = DEFAULT_DENSITY_MODEL
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def predict_alm_kg(self, predictor_kg: float, sex: str | None) -> float:
        """ALM estimate (kg) for a predictor value (kg); sex 'M', 'F' or None.

        A model with a sex term and unknown sex raises InputError.
        """
        if self.male_offset_kg != 0.0 and sex not in ("M", "F"):
            raise InputError(
                f"The ALM model '{self.name}' has a sex term; give the patient's sex "
                "(--sex M or F)."
            )
        male = 1.0 if sex == "M" else 0.0
        return self.intercept_kg + self.slope * predictor_kg + self.male_offset_kg * male

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return {"schema": SCHEMA, **d}

    def write(self, path: str | os.PathLike[str]) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    def provenance_entry(self) -> dict[str, Any]:
        """What a Results provenance records about this model."""
        return {
            "kind": "ALM model",
            "name": self.name,
            "path": self.path,
            "validated": self.validated,
            "predictor": self.predictor,
            "density_model": self.density_model,
            "coefficients": {
                "intercept_kg": self.intercept_kg,
                "slope": self.slope,
                "male_offset_kg": self.male_offset_kg,
            },
            "source": self.provenance.get("source"),
        }


def check_model_plausible(model: ALMModel, where: str) -> None:
    """Refuse an ALM model whose predictor, regions or coefficients cannot be right.

    Applied when a model is loaded (``measure --alm-model``, :func:`load_alm_model`) and
    when ``fit-alm`` makes one (:func:`model_from_fit`), with the same bounds:
    :data:`MODEL_SLOPE_RANGE`, :data:`MODEL_INTERCEPT_KG_RANGE`,
    :data:`MODEL_MALE_OFFSET_KG_RANGE` (project defaults; see their comments).

    Raises
    ------
    InputError
        Unknown required region, a predictor not ``structure/mass`` or
        ``structure/lean_mass``, an unknown density model, non-finite or implausible
        coefficients.
    """
    unknown = [r for r in model.required_regions if r not in MUSCLE_REGIONS]
    if unknown:
        raise InputError(f"ALM model {where}: unknown required region(s) {', '.join(unknown)}; "
                         f"known: {', '.join(MUSCLE_REGIONS)}.")
    if model.density_model not in DENSITY_MODELS:
        raise InputError(
            f"ALM model {where}: \"density_model\" is {model.density_model!r}; use one of "
            f"{', '.join(DENSITY_MODELS)} (the `measure --density-model` the predictor was "
            "measured with), or leave the field out for the default "
            f"{DEFAULT_DENSITY_MODEL!r}.")
    structure, _, quantity = model.predictor.partition("/")
    if not structure or quantity not in PREDICTOR_QUANTITIES:
        raise InputError(
            f"ALM model {where}: predictor '{model.predictor}' must be 'structure/quantity' "
            f"with quantity {' or '.join(PREDICTOR_QUANTITIES)} (e.g. "
            "lower_limb_total/lean_mass).")
    coefs = (("slope", model.slope, MODEL_SLOPE_RANGE, ""),
             ("intercept", model.intercept_kg, MODEL_INTERCEPT_KG_RANGE, " kg"),
             ("male offset", model.male_offset_kg, MODEL_MALE_OFFSET_KG_RANGE, " kg"))
    if not all(math.isfinite(v) for _, v, _, _ in coefs):
        raise InputError(f"ALM model {where} has non-finite coefficients.")
    for name, value, (lo, hi), unit in coefs:
        if not lo <= value <= hi:
            hint = (" A slope this small means the predictor was in grams: give the CT muscle "
                    "mass in kg (g / 1000) and fit again." if name == "slope" and value < lo
                    else " Check that both mass columns were in kg and fit again with "
                    "`ctmusclebone fit-alm`.")
            raise InputError(
                f"ALM model {where}: the {name} {value:.4g}{unit} is outside the plausible "
                f"range {lo:g} to {hi:g}{unit} (project default bounds; see "
                f"docs/muscle.md).{hint}")


def _json_bool(d: Mapping[str, Any], key: str, default: bool) -> bool:
    """A JSON boolean field of an ALM model file (``default`` when absent).

    Raises ValueError (worded for :func:`load_alm_model`, which names the file) for a
    string such as ``"false"``, a number or null: ``bool("false")`` would be True.
    """
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(
            f"the field \"{key}\" is {json.dumps(value)}, not a JSON boolean; write "
            f"\"{key}\": true or \"{key}\": false without quotes around the value, or "
            "refit the model with `ctmusclebone fit-alm`")
    return value


def load_alm_model(path: str | os.PathLike[str] | None = None) -> ALMModel:
    """Read an ALM model JSON; ``None`` gives the shipped (unvalidated) default.

    Raises
    ------
    InputError
        A missing file, invalid JSON, another schema, a missing or mistyped field
        (``validated`` must be a JSON boolean), an unknown ``density_model`` or an
        implausible model (:func:`check_model_plausible`).
    """
    if path is None:
        ref = resources.files("CTMuscleBoneLib").joinpath("data/alm_default.json")
        text, where = ref.read_text(encoding="utf-8"), "built-in default (alm_default.json)"
    else:
        text, where = read_text_file(path, "ALM model file"), str(path)
    d = parse_json(text, "ALM model file", where)
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(
            f"{where} is not a CTMuscleBone ALM model (expected \"schema\": \"{SCHEMA}\"); "
            "create one with `ctmusclebone fit-alm`."
        )
    try:
        model = ALMModel(
            name=str(d["name"]),
            predictor=str(d["predictor"]),
            intercept_kg=float(d["intercept_kg"]),
            slope=float(d["slope"]),
            male_offset_kg=float(d.get("male_offset_kg", 0.0)),
            validated=_json_bool(d, "validated", False),
            required_regions=tuple(str(r) for r in d.get("required_regions", ())),
            density_model=str(d.get("density_model", DEFAULT_DENSITY_MODEL)),
            provenance=dict(d.get("provenance", {})),
            path=where,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"ALM model {where} lacks or has a bad field: {exc}") from None
    check_model_plausible(model, where)
    return model


def smi_kg_m2(alm_kg: float, height_m: float) -> float:
    """Skeletal muscle index: ALM (kg) / height (m) squared."""
    if not (0.5 <= height_m <= 2.6):
        raise InputError(f"Height {height_m} m is implausible; give the height in metres.")
    return alm_kg / height_m**2


#: Plausible patient heights, m (lo excluded, hi included; outside: a typo or a unit
#: error). The one range of every height check (``MeasureOptions``, the CLI).
HEIGHT_RANGE_M = (0.5, 2.6)


def parse_height_m(value: float) -> tuple[float, str | None]:
    """Height in metres from a number given in metres or centimetres.

    Returns the height in m and a note when the unit was inferred as cm; the same range
    as :data:`HEIGHT_RANGE_M` in either unit.
    """
    v = float(value)
    lo, hi = HEIGHT_RANGE_M
    if lo < v <= hi:
        return v, None
    if 100 * lo < v <= 100 * hi:
        return v / 100.0, f"height {v:g} read as centimetres ({v / 100:g} m)"
    raise InputError(
        f"Height {value} is implausible: give it in metres (e.g. 1.62) or centimetres (162)."
    )


def normalise_sex(value: str | None) -> str | None:
    """'M', 'F' or None from common spellings; other values raise InputError."""
    if value is None:
        return None
    v = str(value).strip().upper()
    if v in ("", "O", "U", "UNKNOWN"):
        return None
    if v in ("M", "MALE", "MAN"):
        return "M"
    if v in ("F", "FEMALE", "W", "WOMAN"):
        return "F"
    raise InputError(f"Sex '{value}' not understood: use M or F.")




def alm_rows(
    totals: dict[str, dict[str, Any]],
    model: ALMModel,
    height_m: float | None,
    sex: str | None,
    criteria: SarcopeniaCriteria,
    missing_reasons: Mapping[str, str] | None = None,
    incomplete: Sequence[str] = (),
) -> list[ResultRow]:
    """ALM, SMI and sarcopenia rows for one patient.

    Parameters
    ----------
    totals : dict
        Muscle group totals from :func:`CTMuscleBoneLib.muscle.group_totals`. The
        predictor total's ``density_model`` names the density model of its masses; a
        total without that key is taken as measured with the project default
        (:data:`~CTMuscleBoneLib.density_models.DEFAULT_DENSITY_MODEL`).
    model : ALMModel
    height_m : float or None
        Patient height; without it SMI and the flag are reported as not measurable.
    sex : {'M', 'F'} or None
    criteria : SarcopeniaCriteria
    missing_reasons : mapping of str to str, optional
        Why a required region is missing (region -> text, e.g. from
        :func:`CTMuscleBoneLib.muscle_coverage.region_absence_reasons`: "the CT does not
        reach mid-thigh (...)" or "the segmentation lacks thigh muscles (...)").
    incomplete : sequence of str
        Why the predictor's total may lack muscles the labels hold (e.g. a label whose
        name looks like a misspelt muscle): each becomes a ``warning:`` flag of every row,
        and the sarcopenia row gets no yes/no, as with a partial predictor.

    Returns
    -------
    list of ResultRow
        Always the three rows ``alm``, ``smi`` and ``sarcopenia_low_muscle_mass``
        (structure ``patient``), none dropped.

    Notes
    -----
    The sarcopenia row says "yes"/"no" only from a validated model, a predictor with
    no muscle cut by the field of view, and a predictor measured with the density model
    the ALM model was fitted with (:attr:`ALMModel.density_model`); otherwise its value
    is ``"indeterminate"`` and its flags say why, while ALM and SMI keep their (flagged)
    values. When there is no number to judge (a required region missing, no height,
    unknown sex, or a model with a sex term and unknown sex) the three rows that cannot
    be computed are kept with value None and a ``not_measurable`` reason.
    """
    structure_name, quantity = model.predictor.split("/", 1)
    unvalidated = (
        f"unvalidated: default ALM coefficients ({model.name}); fit your own with "
        "`ctmusclebone fit-alm`"
    )
    base_flags = [] if model.validated else [unvalidated]
    method = (
        f"ALM = {model.intercept_kg:.4g} + {model.slope:.4g} x {model.predictor} [kg]"
        + (f" + {model.male_offset_kg:.4g} x male" if model.male_offset_kg else "")
        + f" (model {model.name})"
    )
    smi_method = "ALM / height^2"

    def not_measurable(reason: str, flags: list[str], alm_row: ResultRow | None = None
                       ) -> list[ResultRow]:
        # every row that cannot be computed is kept, empty, with the reason
        none = [f"not_measurable: {reason}", *flags]
        return [alm_row or ResultRow("patient", "alm", None, "kg", method, none),
                ResultRow("patient", "smi", None, "kg/m2", smi_method, none),
                ResultRow("patient", "sarcopenia_low_muscle_mass", None, "", criteria.name,
                          none)]

    total = totals.get(structure_name)
    unit_key = {"mass": "mass_g", "lean_mass": "lean_mass_g"}.get(quantity)
    missing = [r for r in model.required_regions if f"{r}_total" not in totals]
    if total is None or unit_key is None or missing:
        reasons = missing_reasons or {}
        if missing:
            why = "; ".join(reasons.get(r, f"no {r.replace('_', ' ')} muscles in the labels")
                            for r in missing)
            reason = (f"the ALM model {model.name} needs {', '.join(missing)} muscles: {why}")
        else:
            reason = (f"the ALM model {model.name} needs {model.predictor}, and no muscle "
                      "of that group is labelled")
        return not_measurable(reason, base_flags)
    flags = list(base_flags) + [f"warning: {w}" for w in incomplete]
    partial = bool(total["partial"])
    if partial:
        flags.append("partial: the predictor includes muscles cut by the field of view")
    used_density = str(total.get("density_model", DEFAULT_DENSITY_MODEL))
    density_mismatch = (
        f"the predictor was measured with the density model '{used_density}', the ALM "
        f"model {model.name} was fitted on masses from '{model.density_model}'; measure "
        f"with --density-model {model.density_model} (or fit a model on '{used_density}' "
        "masses)" if used_density != model.density_model else None)
    if density_mismatch:
        flags.append(f"warning: {density_mismatch}")
    try:
        alm = model.predict_alm_kg(total[unit_key] / 1000.0, sex)
    except InputError as exc:
        return not_measurable(str(exc), flags)
    lo, hi = PLAUSIBLE_ALM_KG_RANGE
    off_scale = None
    if not lo <= alm <= hi:
        off_scale = (f"ALM {alm:.1f} kg is outside the adult range ({lo:g}-{hi:g} kg; "
                     "adults about 10-35 kg): the CT probably does not show the muscles the "
                     f"model {model.name} assumes (e.g. only part of the thighs), or the "
                     "model does not fit this field of view")
        flags.append(f"warning: {off_scale}")
    rows = [ResultRow("patient", "alm", alm, "kg", method, list(flags))]
    if height_m is None:
        return not_measurable("no height (give --height or a DICOM PatientSize)", flags,
                              rows[0])
    smi = smi_kg_m2(alm, height_m)
    rows.append(ResultRow("patient", "smi", smi, "kg/m2", f"ALM / height^2 (height {height_m:g} m)",
                          list(flags)))
    if sex is None:
        rows.append(ResultRow(
            "patient", "sarcopenia_low_muscle_mass", None, "", criteria.name,
            ["not_measurable: sex unknown (cut-offs differ by sex; give --sex)", *flags],
        ))
        return rows
    cut = criteria.cutoff(sex)
    method = (f"{criteria.name}: SMI < {cut:g} kg/m2 ({'men' if sex == 'M' else 'women'}); "
              f"{criteria.source}")
    if (model.validated and not partial and not incomplete and not density_mismatch
            and not off_scale):
        rows.append(ResultRow("patient", "sarcopenia_low_muscle_mass",
                              "yes" if smi < cut else "no", "", method, list(flags)))
        return rows
    # the number exists but is not on the scale the cut-off was made for: no yes/no
    why = []
    if not model.validated:
        why.append(f"unvalidated: no yes/no from the unvalidated ALM model {model.name} "
                   "(SMI shown for information); fit a model with `ctmusclebone fit-alm`")
    if partial:
        why.append("partial: the predictor includes muscles cut by the field of view, so "
                   "SMI reads low; no yes/no")
    why += [f"warning: {w}; no yes/no" for w in incomplete]
    if density_mismatch:
        why.append(f"warning: {density_mismatch}; no yes/no")
    if off_scale:
        why.append(f"warning: {off_scale}; no yes/no")
    rows.append(ResultRow("patient", "sarcopenia_low_muscle_mass", INDETERMINATE, "", method,
                          why))
    return rows


# ---------------------------------------------------------------------------------------
# Fitting from paired data


@dataclass
class PairedData:
    """Paired CT and DXA values, one entry per patient.

    ``lines`` (optional) are the CSV line numbers of the entries, for messages.
    """

    case_ids: list[str]
    predictor_kg: np.ndarray  # (n,)
    dxa_alm_kg: np.ndarray  # (n,)
    height_m: np.ndarray  # (n,)
    sex: list[str]  # 'M' / 'F'
    lines: list[int] | None = None


def read_pairs_csv(path: str | os.PathLike[str], predictor_column: str) -> PairedData:
    """Read a paired-data CSV for :func:`fit_alm_model`.

    Required columns: ``sex`` (M/F), ``height_m`` (or ``height_cm``), ``dxa_alm_kg``
    and the predictor column (CT muscle mass in kg, e.g. ``ct_lower_limb_lean_mass_kg``).
    Optional: ``case_id`` (unique). Rows with an empty or non-numeric required value are
    refused with their line number; the values are then checked by
    :func:`check_pairs` (non-finite, implausible units, duplicate ids, constant columns).
    """
    table = read_csv_table(path, ("sex", "dxa_alm_kg", predictor_column, "height_m|height_cm"),
                           what="Paired-data file")
    p = table.path
    height_col = "height_m" if table.has("height_m") else "height_cm"
    ids, x, y, h, s, lines = [], [], [], [], [], []
    for line, row in table.rows:
        for col in (predictor_column, "dxa_alm_kg", height_col):
            if not row.get(col):
                raise InputError(f"{p.name} line {line}: {col} is empty; every row needs "
                                 f"{predictor_column}, dxa_alm_kg and {height_col} (remove "
                                 "cases without paired values).")
        try:
            xv = float(row[predictor_column])
            yv = float(row["dxa_alm_kg"])
            hv = float(row[height_col])
        except ValueError:
            raise InputError(
                f"{p.name} line {line}: {predictor_column}, dxa_alm_kg and {height_col} "
                "must be numbers."
            ) from None
        hv = hv / 100.0 if height_col == "height_cm" else hv
        sx = normalise_sex(row["sex"])
        if sx is None:
            raise InputError(f"{p.name} line {line}: sex must be M or F.")
        ids.append(row.get("case_id") or str(line - 1))
        x.append(xv)
        y.append(yv)
        h.append(hv)
        s.append(sx)
        lines.append(line)
    data = PairedData(ids, np.array(x, dtype=float), np.array(y, dtype=float),
                      np.array(h, dtype=float), s, lines)
    check_pairs(data, p.name, predictor_column,
                "height_cm" if height_col == "height_cm" else "height_m")
    if len(x) < 5:
        raise InputError(f"{p.name}: at least 5 paired cases are needed, got {len(x)}.")
    return data


def _where_rows(data: PairedData, idx: np.ndarray | list[int], values: np.ndarray | None = None,
                limit: int = 5) -> str:
    """'line 3 (case a1) = nan, line 7 (case a5) = inf' for messages (first ``limit``)."""
    parts = []
    for i in list(idx)[:limit]:
        where = f"line {data.lines[i]} (case {data.case_ids[i]})" if data.lines \
            else f"case {data.case_ids[i]}"
        parts.append(where + (f" = {values[i]:g}" if values is not None else ""))
    more = len(idx) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def check_pairs(data: PairedData, source: str = "paired data",
                predictor_column: str = "predictor", height_column: str = "height_m") -> None:
    """Refuse paired data that cannot give a valid ALM model.

    Checks, in order: duplicate case ids; non-finite values (NaN, inf); heights outside
    0.5-2.6 m; predictor values outside :data:`PREDICTOR_KG_RANGE` and DXA ALM outside
    :data:`DXA_ALM_KG_RANGE` (a column in grams is named as such); a constant predictor
    or DXA column (no line can be fitted). Every message names the rows concerned.

    Raises
    ------
    InputError
    """
    n = len(data.case_ids)
    cols = ((predictor_column, data.predictor_kg), ("dxa_alm_kg", data.dxa_alm_kg),
            (height_column, data.height_m))
    if any(np.asarray(c).shape != (n,) for _, c in cols) or len(data.sex) != n:
        raise InputError(f"{source}: the paired columns differ in length.")
    seen: dict[str, int] = {}
    for i, cid in enumerate(data.case_ids):
        if cid in seen:
            at = (f"lines {data.lines[seen[cid]]} and {data.lines[i]}" if data.lines
                  else f"entries {seen[cid] + 1} and {i + 1}")
            raise InputError(f"{source}: case_id '{cid}' appears twice ({at}); each case must "
                             "appear once: remove the duplicate row.")
        seen[cid] = i
    for name, col in cols:
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise InputError(
                f"{source}: {name} is not a finite number in {bad.size} row(s): "
                f"{_where_rows(data, bad, col)}. Give a number in every row, or remove cases "
                "without paired values.")
    bad = np.flatnonzero((data.height_m < 0.5) | (data.height_m > 2.6))
    if bad.size:
        raise InputError(f"{source}: implausible height (outside 0.5-2.6 m) in "
                         f"{_where_rows(data, bad, data.height_m)}; give heights in m "
                         "(height_m) or cm (height_cm).")
    for name, col, (lo, hi), what in (
            (predictor_column, data.predictor_kg, PREDICTOR_KG_RANGE, "CT muscle mass"),
            ("dxa_alm_kg", data.dxa_alm_kg, DXA_ALM_KG_RANGE, "DXA appendicular lean mass")):
        bad = np.flatnonzero((col < lo) | (col > hi))
        if not bad.size:
            continue
        grams = bool(np.all((col / 1000.0 >= lo) & (col / 1000.0 <= hi)))
        hint = (f" The values look like grams: divide {name} by 1000 (kg)." if grams
                else f" Give {name} in kg.")
        raise InputError(
            f"{source}: {name} ({what}, kg) is outside the plausible range {lo:g}-{hi:g} kg "
            f"per adult case in {bad.size} of {n} row(s): {_where_rows(data, bad, col)}."
            + hint)
    for name, col in cols[:2]:
        if n >= 2 and np.ptp(col) == 0:
            raise InputError(
                f"{source}: {name} is the same ({col[0]:g}) in every row; a constant column "
                "fits no line. Check that the column holds each case's own value.")


def _design(x: np.ndarray, male: np.ndarray, use_sex: bool) -> np.ndarray:
    cols = [np.ones_like(x), x] + ([male] if use_sex else [])
    return np.stack(cols, axis=1)


@dataclass
class FitReport:
    """Coefficients and cross-validated performance of a fitted ALM model."""

    intercept_kg: float
    slope: float
    male_offset_kg: float
    n: int
    folds: int
    cv_pearson_r: float
    cv_rmse_kg: float
    cv_smi_auc: float | None
    in_sample_r: float
    criteria: str
    n_sarcopenic: int


def fit_alm_model(
    data: PairedData,
    criteria: SarcopeniaCriteria,
    folds: int = 5,
    use_sex: bool | None = None,
    seed: int = 0,
) -> FitReport:
    """Least-squares fit of ALM on the CT predictor (+ sex), with K-fold validation.

    Cross-validated figures use out-of-fold predictions: Pearson r and RMSE of
    predicted vs DXA ALM, and ROC AUC of predicted SMI (lower = more likely) for the
    sarcopenia cut-off applied to DXA SMI. ``use_sex`` defaults to True when both
    sexes occur.
    """
    check_pairs(data)
    male = np.array([1.0 if s == "M" else 0.0 for s in data.sex])
    if use_sex is None:
        use_sex = 0 < male.sum() < male.size
    folds = min(folds, data.predictor_kg.size)
    design = _design(data.predictor_kg, male, use_sex)
    coef, *_ = np.linalg.lstsq(design, data.dxa_alm_kg, rcond=None)
    predicted = np.empty_like(data.dxa_alm_kg)
    for train, test in stats.kfold_indices(data.predictor_kg.size, folds, seed):
        if np.ptp(data.predictor_kg[train]) == 0:
            raise InputError("A cross-validation training fold has a constant predictor; "
                             "use fewer folds (--folds) or more cases.")
        c, *_ = np.linalg.lstsq(design[train], data.dxa_alm_kg[train], rcond=None)
        predicted[test] = design[test] @ c
    dxa_smi = data.dxa_alm_kg / data.height_m**2
    pred_smi = predicted / data.height_m**2
    cutoffs = np.array([criteria.cutoff(s) for s in data.sex])
    positive = dxa_smi < cutoffs
    auc = None
    if 0 < positive.sum() < positive.size:
        auc = stats.roc_auc(-pred_smi, positive)
    return FitReport(
        intercept_kg=float(coef[0]),
        slope=float(coef[1]),
        male_offset_kg=float(coef[2]) if use_sex else 0.0,
        n=int(data.predictor_kg.size),
        folds=folds,
        cv_pearson_r=stats.pearson_r(predicted, data.dxa_alm_kg),
        cv_rmse_kg=stats.rmse(predicted, data.dxa_alm_kg),
        cv_smi_auc=auc,
        in_sample_r=stats.pearson_r(design @ coef, data.dxa_alm_kg),
        criteria=criteria.name,
        n_sarcopenic=int(positive.sum()),
    )


def model_from_fit(
    report: FitReport,
    name: str,
    predictor: str,
    source_csv: str | os.PathLike[str],
    required_regions: tuple[str, ...] = (),
    density_model: str = DEFAULT_DENSITY_MODEL,
) -> ALMModel:
    """An :class:`ALMModel` (validated, with provenance) from a fit report.

    ``density_model`` is the ``measure --density-model`` the predictor masses of the
    paired data were measured with (default: the project default, ``constant``); it is
    recorded in the model, and cases measured with another one get no sarcopenia yes/no.

    The model must pass :func:`check_model_plausible`, the check ``measure --alm-model``
    applies when loading it: a fit that could not be used is refused here, before any
    file is written.
    """
    model = ALMModel(
        name=name,
        predictor=predictor,
        intercept_kg=report.intercept_kg,
        slope=report.slope,
        male_offset_kg=report.male_offset_kg,
        validated=True,
        required_regions=required_regions,
        density_model=density_model,
        provenance={
            "source": f"fitted by ctmusclebone fit-alm on {Path(source_csv).name}",
            "data_sha256": sha256_of_path(source_csv),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "fit": asdict(report),
        },
    )
    check_model_plausible(model, f"fitted on {Path(source_csv).name}")
    return model
