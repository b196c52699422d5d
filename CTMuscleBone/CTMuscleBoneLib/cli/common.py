"""Pieces shared by the sub-commands: argument groups, input loading, result writing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..image import CTImage, LabelMap
from ..progress import ProgressCallback
from ..results import Provenance, Results, sha256_of_path


def add_patient_arguments(p: argparse.ArgumentParser) -> None:
    """--sex, --height, --age (override the DICOM header)."""
    g = p.add_argument_group("patient (overrides the DICOM header)")
    g.add_argument("--sex", help="M or F (needed for sarcopenia cut-offs)")
    g.add_argument("--height", type=float,
                   help="height in metres (1.62) or centimetres (162); needed for SMI")
    g.add_argument("--age", type=float, help="age in years")


def add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """--calibration, --phantom, --references, --calibration-file, --slope, --intercept,
    --material, --no-bones."""
    g = p.add_argument_group("bone density calibration")
    g.add_argument("--calibration", default="auto",
                   choices=["auto", "phantom", "internal", "fixed", "none"],
                   help="HU -> BMD (default: auto = phantom when --phantom is given, internal "
                   "when --references is given, else HU only); phantom; internal (bundled "
                   "UNVALIDATED reference values unless --references); fixed (asynchronous: "
                   "--calibration-file, or --slope/--intercept/--material); none")
    g.add_argument("--phantom", help="calibration phantom in the scan: B-MAS200, "
                   "'Mindways Model 3', QRM-BDC or a definition JSON (default: none)")
    g.add_argument("--references", help="reference-tissue table JSON for internal "
                   "calibration (default: the bundled, unvalidated table)")
    g.add_argument("--calibration-file", help="for --calibration fixed: a calibration saved "
                   "by `ctmusclebone calibrate` from a phantom scan of the same scanner and "
                   "protocol")
    g.add_argument("--slope", type=float, help="for --calibration fixed: mg/cm3 per HU")
    g.add_argument("--intercept", type=float, help="for --calibration fixed: mg/cm3")
    g.add_argument("--material", choices=["K2HPO4", "HA"],
                   help="for --calibration fixed: reference material of the line")
    g.add_argument("--no-bones", action="store_true", help="measure muscles only "
                   "(default: bones too when labelled)")


def load_ct(
    ct_path: str, series: str | None, progress: ProgressCallback
) -> tuple[CTImage, Provenance]:
    """Read and check a CT; provenance with its checksum. Warnings go to the CT notes."""
    from ..io_ct import read_ct
    from ..pipeline import check_ct

    progress(0.0, f"reading CT {ct_path}")
    ct = check_ct(read_ct(ct_path, series_uid=series))
    prov = Provenance(input_ct=str(ct_path), input_ct_sha256=sha256_of_path(ct_path))
    return ct, prov


def load_inputs(
    ct_path: str,
    labels_path: str,
    label_format: str,
    names: str | None,
    series: str | None,
    progress: ProgressCallback,
) -> tuple[CTImage, LabelMap, Provenance]:
    """Read the CT and a label map onto its grid, with provenance."""
    from ..io_labels import read_labels

    ct, prov = load_ct(ct_path, series, progress)
    progress(0.2, f"reading labels {labels_path}")
    labels = read_labels(labels_path, ct.geometry, label_format=label_format, names=names)
    prov.input_labels = str(labels_path)
    prov.input_labels_sha256 = sha256_of_path(labels_path)
    prov.label_source = labels.source
    return ct, labels, prov


def write_results(results: Results, out_dir: Path, quiet: bool = False) -> dict[str, Path]:
    """Write results.csv, results.json and summary.txt into ``out_dir`` (staged: all or
    nothing); print the summary table."""
    from ..atomic import staged_output_dir
    from ..pipeline import write_outputs

    with staged_output_dir(out_dir) as stage:
        staged = write_outputs(results, stage)
    paths = {role: out_dir / p.name for role, p in staged.items()}
    if not quiet:
        print(paths["summary"].read_text(encoding="utf-8"), end="")
        print(f"\nWrote {paths['csv']}, {paths['json']} and {paths['summary']}",
              file=sys.stderr)
    return paths
