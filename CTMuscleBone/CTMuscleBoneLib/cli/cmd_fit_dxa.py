"""``ctmusclebone fit-dxa``: fit the CT-aBMD -> DXA-aBMD conversion on paired data."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..atomic import atomic_write_text, check_output_file
from ..dxa.conversion import MIN_PAIRS, fit_dxa_model, model_from_fit
from ..validate_bmd import SITES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-dxa",
        help="fit the CT-aBMD -> DXA-equivalent aBMD model from paired CT and DXA",
        description="Fit DXA aBMD = a + b x CT-aBMD per site on paired cases, report "
        "cross-validated Pearson r, SEE and Bland-Altman limits, and write a model file for "
        "`measure --dxa-model`. PAIRS.csv is the validate-bmd format: case_id, "
        "ct_abmd_g_cm2 (the HA-equivalent abmd_<site> rows of `measure`; or --ct-column), "
        "dxa_abmd_g_cm2, site (total_hip, femoral_neck, lumbar; or --site). "
        f"At least {MIN_PAIRS} complete pairs per site. See docs/validation.md.",
    )
    p.add_argument("pairs", metavar="PAIRS.csv", help="paired CT / DXA values, one row per case "
                   "and site")
    p.add_argument("--site", choices=SITES, default=None,
                   help="fit only this site (needed when the CSV has no 'site' column)")
    p.add_argument("--ct-column", default="ct_abmd_g_cm2",
                   help="CSV column of the CT-aBMD, g/cm2 (default ct_abmd_g_cm2)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default 0)")
    p.add_argument("--name", default="site-dxa-model", help="model name (default site-dxa-model)")
    p.add_argument("--out", required=True, metavar="model.json",
                   help="model JSON to write (must end in .json and not be an input; "
                   "model.report.json is written beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, [args.pairs], suffix=".json",
                            also_suffixes=[".report.json"])
    report = fit_dxa_model(args.pairs, site=args.site, ct_column=args.ct_column,
                           folds=args.folds, seed=args.seed)
    model = model_from_fit(report, args.name)
    model.write(out)
    atomic_write_text(out.with_suffix(".report.json"),
                      json.dumps(asdict(report), indent=2, allow_nan=False) + "\n")
    print(f"CT-to-DXA model fitted on {report.source} (column {report.ct_column}):")
    for f in report.fits:
        print(f"  {f.site}: DXA = {f.intercept_g_cm2:.4f} + {f.slope:.4f} x CT-aBMD "
              f"(n {f.n}, {f.folds}-fold cross-validation)")
        print(f"    cross-validated Pearson r  {f.cv_pearson_r:.3f}")
        print(f"    cross-validated SEE        {f.cv_see_g_cm2:.4f} g/cm2 "
              f"(in-sample SEE {f.see_g_cm2:.4f})")
        print(f"    Bland-Altman (converted - DXA)  bias {f.cv_bias_g_cm2:+.4f} g/cm2, "
              f"95% limits {f.cv_loa_lower_g_cm2:+.4f} to {f.cv_loa_upper_g_cm2:+.4f}")
        print(f"    before conversion: r {f.raw_pearson_r:.3f}, mean CT - DXA "
              f"{f.raw_bias_g_cm2:+.4f} g/cm2")
    for w in report.warnings:
        print(f"warning: {w}")
    print(f"Wrote {out} and {out.with_suffix('.report.json')} "
          f"(use with `ctmusclebone measure --dxa-model {out}`)")
    return 0
