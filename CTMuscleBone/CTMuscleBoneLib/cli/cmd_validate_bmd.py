"""``ctmusclebone validate-bmd PAIRS.csv``: CT BMD against DXA on paired cases."""

from __future__ import annotations

import argparse

from ..atomic import check_output_dir, refuse_input_overwrite
from ..validate_bmd import SITES, validate_bmd


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate-bmd",
        help="validate CT BMD against DXA (Pearson r, Bland-Altman, osteoporosis AUC)",
        description="Compare CT-derived BMD with DXA on paired cases. PAIRS.csv columns: "
        "case_id, ct_abmd_g_cm2 (or --ct-column), dxa_abmd_g_cm2, optional dxa_t_score "
        "(for the osteoporosis AUC, T <= -2.5) and site. See docs/validation.md.",
    )
    p.add_argument("pairs", metavar="PAIRS.csv", help="paired CT / DXA values, one row per case")
    p.add_argument("--site", choices=SITES, default=None,
                   help="use only rows of this site (when the CSV has a 'site' column)")
    p.add_argument("--ct-column", default="ct_abmd_g_cm2",
                   help="CSV column of the CT value (default ct_abmd_g_cm2)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write validate_bmd.json and validate_bmd.csv into DIR")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="bootstrap resamples for the 95%% CIs of r and AUC (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:  # before the bootstrap: an empty or unusable --out, an input
        out = check_output_dir(args.out, [args.pairs])
        refuse_input_overwrite([out / f"validate_bmd{ext}" for ext in (".json", ".csv")],
                               [args.pairs])
    res = validate_bmd(args.pairs, site=args.site, ct_column=args.ct_column,
                       n_boot=args.bootstrap, seed=args.seed)
    print(res.table())
    if args.out is not None:
        for path in res.write(out):
            print(f"wrote {path}")
    return 0
