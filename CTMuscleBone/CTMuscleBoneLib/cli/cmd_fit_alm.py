"""``ctmusclebone fit-alm``: fit the CT-muscle -> DXA-ALM model on paired data."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..alm import CRITERIA, fit_alm_model, model_from_fit, read_pairs_csv
from ..atomic import atomic_write_text, check_output_file
from ..density_models import DEFAULT_DENSITY_MODEL, DENSITY_MODELS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-alm",
        help="fit the ALM model from paired CT muscle mass and DXA ALM",
        description="Fit ALM = a + b x CT muscle mass (+ c x male) on paired data, report "
        "cross-validated Pearson r, RMSE and the ROC AUC for the sarcopenia cut-off, and "
        "write a model file for `measure --alm-model`. CSV columns: sex (M/F), height_m "
        "(or height_cm), dxa_alm_kg, and the predictor column (default "
        "ct_lower_limb_lean_mass_kg: the lower_limb_total lean_mass row of `measure` "
        "(fat voxels excluded), in kg).",
    )
    p.add_argument("pairs", help="CSV of paired cases")
    p.add_argument("--predictor-column", default="ct_lower_limb_lean_mass_kg",
                   help="column of the CT predictor (kg) in PAIRS.csv")
    p.add_argument("--predictor", default="lower_limb_total/lean_mass",
                   help="results row the predictor column holds, as structure/quantity "
                   "(default lower_limb_total/lean_mass: muscle mass without its fat "
                   "voxels, as DXA lean mass)")
    p.add_argument("--require-regions", default="gluteal,thigh",
                   help="muscle regions a CT must show for the model to apply "
                   "(comma-separated; default gluteal,thigh; '' for none)")
    p.add_argument("--density-model", default=DEFAULT_DENSITY_MODEL,
                   choices=sorted(DENSITY_MODELS),
                   help="the `measure --density-model` the predictor masses were measured "
                   f"with (default {DEFAULT_DENSITY_MODEL}); recorded in the model, and "
                   "cases measured with another one get no sarcopenia yes/no")
    p.add_argument("--criteria", default="awgs2019", choices=sorted(CRITERIA),
                   help="sarcopenia cut-offs for the SMI AUC")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--no-sex-term", action="store_true", help="fit without a sex term")
    p.add_argument("--name", default="site-alm-model", help="name stored in the model file")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the cross-validation folds and bootstrap")
    p.add_argument("--out", required=True, metavar="model.json",
                   help="model JSON to write (must end in .json and not be an input; "
                   "model.report.json is written beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, [args.pairs], suffix=".json",
                            also_suffixes=[".report.json"])
    data = read_pairs_csv(args.pairs, args.predictor_column)
    criteria = CRITERIA[args.criteria]
    report = fit_alm_model(data, criteria, folds=args.folds,
                           use_sex=False if args.no_sex_term else None, seed=args.seed)
    regions = tuple(r.strip() for r in args.require_regions.split(",") if r.strip())
    model = model_from_fit(report, args.name, args.predictor, args.pairs, regions,
                           args.density_model)
    model.write(out)
    auc = "n/a (no sarcopenic or no non-sarcopenic case)" if report.cv_smi_auc is None \
        else f"{report.cv_smi_auc:.3f}"
    print(f"ALM model fitted on {report.n} cases ({report.n_sarcopenic} sarcopenic by "
          f"{report.criteria}), {report.folds}-fold cross-validation:")
    print(f"  ALM = {report.intercept_kg:.3f} + {report.slope:.4f} x {args.predictor} [kg]"
          + (f" + {report.male_offset_kg:.3f} x male" if report.male_offset_kg else ""))
    print(f"  cross-validated Pearson r  {report.cv_pearson_r:.3f}")
    print(f"  cross-validated RMSE       {report.cv_rmse_kg:.3f} kg")
    print(f"  ROC AUC, low SMI           {auc}")
    print(f"  in-sample Pearson r        {report.in_sample_r:.3f}")
    atomic_write_text(out.with_suffix(".report.json"), json.dumps(asdict(report), indent=2) + "\n")
    print(f"Wrote {out} (use with `ctmusclebone measure --alm-model {out}`)")
    return 0
