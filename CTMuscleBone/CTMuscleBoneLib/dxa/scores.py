"""DXA-equivalent aBMD, T-score, Z-score, %YAM and the diagnostic category of one site.

The one place where CT-aBMD meets clinical thresholds (femur and lumbar spine alike):

1. the CT-aBMD must already be hydroxyapatite-equivalent (:mod:`.material`);
2. it is put on the DXA scale by the conversion model (:mod:`.conversion`);
3. T-score, %YAM and the category are computed on that DXA-equivalent value only,
   against the chosen reference table (:mod:`.references`);
4. a T-score, Z-score, %YAM or category is given only from a number known to be on
   the DXA scale (a validated model; project rule: a clinical category is printed only
   from a number on the scale its thresholds were made for). With the shipped identity
   default, or any model whose file says ``"validated": false``, the DXA-equivalent
   aBMD is shown flagged ``unvalidated``, the T-score, Z-score and %YAM are not
   measurable (:func:`not_on_dxa_scale_reason`) and the category is
   ``"indeterminate"`` with the reason;
5. ISCD (official positions 2013/2019): T-scores and the WHO categories are for
   postmenopausal women and men aged 50 or more; for men under 50 and premenopausal
   women Z-scores (age- and sex-matched) are used. Menopausal status is not known to
   CTMuscleBone: women under 50 are taken as premenopausal (a proxy). With age or sex
   unknown the T-score is given with a warning that whether it applies is unknown, and
   the category is ``"indeterminate"`` (the thresholds' population is not known to
   include the patient); with a women-only reference (JSBMR) and sex unknown the
   T-score and %YAM are not measurable either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..alm import normalise_sex
from ..image import CTImage
from ..results import INDETERMINATE, ResultRow, withheld_flag
from .conversion import DXAConversionModel, load_dxa_model
from .references import ReferenceTable, load_reference

#: ISCD age limit (years) for T-scores (women taken as postmenopausal from this age).
ISCD_T_SCORE_AGE_YEARS = 50.0
ISCD_TEXT = ("ISCD: men under 50 and premenopausal women; women under 50 taken as "
             "premenopausal")
#: Reason of a category withheld because age or sex is unknown (project rule: a
#: category only where its thresholds apply; ISCD restricts them to women and men >= 50).
UNKNOWN_AGE_SEX_CATEGORY = withheld_flag(
    "age or sex unknown, so whether these thresholds apply (women and men aged 50 or "
    "more, ISCD) is unknown; give --age and --sex")


@dataclass(frozen=True)
class ScoreContext:
    """Everything the scores of a site need besides the aBMD.

    Attributes
    ----------
    model : DXAConversionModel
    reference : ReferenceTable
    sex : {'M', 'F'} or None
    age_years : float or None
    """

    model: DXAConversionModel
    reference: ReferenceTable
    sex: str | None = None
    age_years: float | None = None

    @property
    def t_score_applies(self) -> bool | None:
        """True for women and men >= 50, False under 50, None when age or sex is unknown."""
        if self.sex not in ("M", "F") or self.age_years is None:
            return None
        return self.age_years >= ISCD_T_SCORE_AGE_YEARS


def score_context(ct: CTImage, model: str | os.PathLike[str] | DXAConversionModel | None = None,
                  reference: str | os.PathLike[str] | ReferenceTable = "nhanes3",
                  sex: str | None = None, age_years: float | None = None) -> ScoreContext:
    """The :class:`ScoreContext` of a CT: the model (default the shipped identity,
    unvalidated), the reference table (default NHANES III), and sex and age as given,
    else from the CT header."""
    return ScoreContext(load_dxa_model(model), load_reference(reference),
                        normalise_sex(sex or ct.metadata.patient_sex),
                        age_years if age_years is not None else ct.metadata.patient_age_years)


def not_on_dxa_scale_reason(model: DXAConversionModel) -> str | None:
    """Why no T-score, Z-score or %YAM is given through ``model``, or None when it is
    validated.

    These scores are made for DXA aBMD (their young-adult means and SDs were measured by
    DXA); a CT-aBMD put through a model that was not fitted and validated on paired CT
    and DXA is not known to be on that scale.
    """
    if model.validated:
        return None
    return (f"the aBMD is not on the DXA scale: no validated CT-to-DXA model was given "
            f"(model '{model.name}' is not validated); fit one from paired CT/DXA with "
            "`ctmusclebone fit-dxa` and pass it with `--dxa-model` (Slicer: 'CT-to-DXA "
            "model')")


def score_quantities(site: str, reference: ReferenceTable) -> list[tuple[str, str]]:
    """(quantity, unit) of the rows :func:`score_rows` gives for ``site``, in order."""
    return [(f"abmd_dxa_{site}", "g/cm2"), (f"t_score_{site}", "SD"),
            (f"z_score_{site}", "SD"), (f"percent_yam_{site}", "%"),
            (f"{reference.criteria.quantity}_{site}", "")]


def score_methods(site: str, ctx: ScoreContext) -> dict[str, str]:
    """Method text of each score quantity of ``site``."""
    ref, crit = ctx.reference, ctx.reference.criteria
    sref = ref.site(site)
    yam = f" ({sref.mean_g_cm2:g} +- {sref.sd_g_cm2:g} g/cm2)" if sref else ""
    dxa = (ctx.model.method_text(site) if site in ctx.model.sites
           else f"CT-to-DXA model {ctx.model.name}")
    return {
        f"abmd_dxa_{site}": dxa,
        f"t_score_{site}": f"(DXA-equivalent aBMD - young-adult mean) / SD; {ref.title}{yam}",
        f"z_score_{site}": f"(DXA-equivalent aBMD - age- and sex-matched mean) / SD; {ref.title}",
        f"percent_yam_{site}": f"DXA-equivalent aBMD / young-adult mean x 100; {ref.title}{yam}",
        f"{crit.quantity}_{site}": (f"{crit.name} on the {crit.on.replace('_', ' ')} of the "
                                    f"DXA-equivalent aBMD: {crit.text} ({crit.source})"),
    }


def applic_flags(applies: bool | None) -> list[str]:
    """ISCD applicability warnings of the T-score, %YAM and category rows
    (``applies``: :attr:`ScoreContext.t_score_applies`)."""
    if applies is False:
        return [f"warning: T-scores and %YAM are not used for diagnosis under 50 "
                f"({ISCD_TEXT}); see the Z-score"]
    if applies is None:
        return ["warning: age or sex unknown: whether the T-score (women and men aged 50 "
                "or more) or the Z-score (younger adults) applies is unknown (ISCD)"]
    return []


def score_rows(structure: str, site: str, abmd_ha_g_cm2: float, ctx: ScoreContext,
               flags: list[str] | None = None, withhold_category: str | None = None
               ) -> list[ResultRow]:
    """The DXA-scale rows of one site.

    Parameters
    ----------
    structure : str
        Row structure, e.g. 'femur_left'.
    site : str
        'total_hip', 'femoral_neck' or 'lumbar'.
    abmd_ha_g_cm2 : float
        CT-aBMD, hydroxyapatite-equivalent, g/cm2.
    ctx : ScoreContext
    flags : list of str, optional
        Flags every row carries (calibration, checks).
    withhold_category : str, optional
        Why the aBMD may not be what the thresholds were made for although it is on the
        DXA scale (e.g. a femur cut by the field of view): the category
        is then ``"indeterminate"`` with this reason; the T-score and the other numbers
        are given with the caller's flags.

    Returns
    -------
    list of ResultRow
        In :func:`score_quantities` order; a value that cannot be given is None with a
        ``not_measurable`` reason.
    """
    base = list(flags or [])
    units = dict(score_quantities(site, ctx.reference))
    methods = score_methods(site, ctx)
    ref, crit = ctx.reference, ctx.reference.criteria
    q_dxa, q_t, q_z, q_yam = (f"abmd_dxa_{site}", f"t_score_{site}", f"z_score_{site}",
                              f"percent_yam_{site}")
    q_cat = f"{crit.quantity}_{site}"
    out: dict[str, ResultRow] = {}

    def put(q: str, value: float | str | None, extra: list[str]) -> None:
        out[q] = ResultRow(structure, q, value, units[q], methods[q], extra + base)

    def missing(qs: list[str], reason: str, extra: list[str] | None = None) -> None:
        for q in qs:
            if q not in out:
                put(q, None, [f"not_measurable: {reason}"] + list(extra or []))

    def result() -> list[ResultRow]:
        return [out[q] for q, _ in score_quantities(site, ref)]

    if site not in ctx.model.sites:
        missing(list(units), f"the CT-to-DXA model '{ctx.model.name}' has no {site} line")
        return result()
    reason = ctx.model.unvalidated_reason()
    model_flags = [f"unvalidated: {reason}"] if reason else []
    dxa = ctx.model.predict(site, abmd_ha_g_cm2)
    put(q_dxa, dxa, model_flags)
    sref = ref.site(site)
    if sref is None:
        missing([q_t, q_z, q_yam, q_cat],
                f"the {ref.name} reference has no {site.replace('_', ' ')} young-adult mean")
        return result()
    if ctx.sex == "M" and not ref.applies_to_men:
        missing([q_t, q_z, q_yam, q_cat],
                f"the {ref.name} reference is for women only ({ref.title})")
        return result()
    if ctx.sex not in ("M", "F") and not ref.applies_to_men:
        reason = (f"sex unknown: the {ref.name} reference is for women only "
                  f"({ref.title}); give --sex")
        missing([q_t, q_z, q_yam], reason)
        put(q_cat, INDETERMINATE, model_flags + [withheld_flag(reason)])
        return result()
    ref_flag = ref.unverified_flag(site)
    value_flags = model_flags + ([ref_flag] if ref_flag else [])
    applies = ctx.t_score_applies
    off_scale = not_on_dxa_scale_reason(ctx.model)
    if off_scale is not None:
        # the scores are made for DXA aBMD: none from a number not known to be on it
        missing([q_t, q_z, q_yam], off_scale)
        if applies is False:
            missing([q_cat], f"{crit.name} categories do not apply under 50 ({ISCD_TEXT}); "
                             "see the Z-score")
        else:
            put(q_cat, INDETERMINATE, value_flags + applic_flags(applies))
        return result()
    applic = applic_flags(applies)
    t = ref.t_score(dxa, site)
    yam = ref.percent_yam(dxa, site)
    put(q_t, t, value_flags + applic)
    put(q_yam, yam, value_flags + applic)
    # the category: only from a number on the scale its thresholds were made for
    if applies is False:
        missing([q_cat], f"{crit.name} categories do not apply under 50 ({ISCD_TEXT}); see "
                         "the Z-score")
    elif applies is None:
        put(q_cat, INDETERMINATE, value_flags + applic + [UNKNOWN_AGE_SEX_CATEGORY])
    elif withhold_category:
        put(q_cat, INDETERMINATE, value_flags + applic + [withheld_flag(withhold_category)])
    else:
        put(q_cat, crit.category(t if crit.on == "t_score" else yam), value_flags + applic)
    # the Z-score: needs age, sex and age-matched means
    if applies is None:
        missing([q_z], "age or sex unknown: a Z-score needs both (give --age and --sex), "
                       "and whether T- or Z-scores apply is unknown")
    else:
        assert ctx.sex is not None and ctx.age_years is not None
        z = ref.z_score(dxa, site, ctx.sex, ctx.age_years)
        if z is None:
            missing([q_z], f"the {ref.name} reference has no age- and sex-matched "
                           f"{site.replace('_', ' ')} means for this age and sex (Z-scores "
                           "need them; a site reference file can add 'age_matched')")
        else:
            put(q_z, z, value_flags)
    return result()
