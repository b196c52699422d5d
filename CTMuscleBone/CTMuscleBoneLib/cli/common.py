"""Pieces shared by the sub-commands: argument groups, input loading, result writing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
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
                   help="HU -> BMD (default: auto = a calibration phantom found in the scan "
                   "(--phantom, else the best fit of every known phantom), else the "
                   "physics-based phantomless calibration (flagged with its expected error), "
                   "else HU only); phantom; internal (physics-based, or your --references "
                   "table); fixed (asynchronous: --calibration-file, or "
                   "--slope/--intercept/--material); none")
    g.add_argument("--phantom", help="calibration phantom in the scan: B-MAS200, "
                   "'Mindways Model 3', QRM-BDC or a definition JSON (default: none = auto "
                   "looks for every known phantom)")
    g.add_argument("--references", help="your site's reference-tissue table JSON for "
                   "internal calibration (default: none = physics-based phantomless "
                   "calibration)")
    g.add_argument("--calibration-file", help="for --calibration fixed: a calibration saved "
                   "by `ctmusclebone calibrate` from a phantom scan of the same scanner and "
                   "protocol")
    g.add_argument("--slope", type=float, help="for --calibration fixed: mg/cm3 per HU")
    g.add_argument("--intercept", type=float, help="for --calibration fixed: mg/cm3")
    g.add_argument("--material", choices=["K2HPO4", "HA"],
                   help="for --calibration fixed: reference material of the line")
    g.add_argument("--no-bones", action="store_true", help="measure muscles only "
                   "(default: bones too when labelled)")
    g.add_argument("--kvp", type=float, help="tube voltage of the scan in kVp, for files "
                   "whose header lacks it (NIfTI): decides the K2HPO4-to-HA ratio and whether "
                   "the Pickhardt L1 thresholds (120 kVp) apply (default: the DICOM header; "
                   "none for NIfTI)")


def load_ct(
    ct_path: str, series: str | None, progress: ProgressCallback
) -> tuple[CTImage, Provenance]:
    """Read and check a CT; provenance with its checksum. Warnings go to the CT notes."""
    from ..atomic import note_inputs
    from ..io_ct import read_ct
    from ..pipeline import check_ct

    note_inputs(ct_path)  # no output of this run may replace it
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
    from ..atomic import note_inputs
    from ..io_labels import label_input_files, read_labels

    note_inputs(*label_input_files(labels_path, names))
    ct, prov = load_ct(ct_path, series, progress)
    progress(0.2, f"reading labels {labels_path}")
    labels = read_labels(labels_path, ct.geometry, label_format=label_format, names=names)
    prov.input_labels = str(labels_path)
    prov.input_labels_sha256 = sha256_of_path(labels_path)
    prov.label_source = labels.source
    return ct, labels, prov


def add_report_arguments(p: argparse.ArgumentParser, where: str = "the output folder") -> None:
    """--report, --deidentify; ``where``: the folder named in the help."""
    g = p.add_argument_group("report")
    g.add_argument("--report", action="store_true",
                   help="also write report.html and report.pdf (images beside the values, "
                   f"plots, quality, provenance; docs/report.md) into {where} "
                   "(default: off)")
    g.add_argument("--deidentify", action="store_true",
                   help="leave patient identifiers (name, IDs, birth date, accession, "
                   "institution, dates, UIDs, input paths) out of every output; sex, age, "
                   "height and weight are kept (default: off)")


def write_results(results: Results, out_dir: Path, quiet: bool = False,
                  extra_writers: list[Callable[[Path], dict[str, Path]]] | None = None,
                  inputs: Sequence[str | Path | None] = ()) -> dict[str, Path]:
    """Write results.csv, results.json and summary.txt into ``out_dir`` (staged: all or
    nothing); print the summary table. ``extra_writers``: functions writing more files
    into the staging folder (e.g. the report), returning {role: path}. ``inputs``: the
    run's input files and folders, which no output may replace
    (:func:`~CTMuscleBoneLib.atomic.staged_output_dir`)."""
    from ..atomic import staged_output_dir
    from ..pipeline import write_outputs

    with staged_output_dir(out_dir, inputs) as stage:
        staged = write_outputs(results, stage)
        for writer in extra_writers or ():
            staged.update(writer(stage))
    paths = {role: out_dir / p.name for role, p in staged.items()}
    if not quiet:
        print(paths["summary"].read_text(encoding="utf-8"), end="")
        print(f"\nWrote {paths['csv']}, {paths['json']} and {paths['summary']}",
              file=sys.stderr)
    return paths


def option_files(args: argparse.Namespace, *names: str) -> list[str]:
    """The values of the options ``names`` of ``args`` that name existing files or
    folders (e.g. --alm-model, --phantom given as a definition JSON): inputs too."""
    found: list[str] = []
    for name in names:
        value = getattr(args, name, None)
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str) and v and Path(v).exists():
                found.append(v)
    return found


#: Options of measure/analyze/batch whose value may be an input file.
OPTION_INPUT_FILES = ("alm_model", "dxa_model", "bmd_reference", "calibration_file",
                      "references", "phantom", "muscle_mask", "labels_extra", "names")


def add_dicom_arguments(p: argparse.ArgumentParser, seg_only: bool = False,
                        where: str = "the output folder") -> None:
    """--dicom: DICOM SEG (and SR) into ``where`` (:mod:`CTMuscleBoneLib.dicom_out`)."""
    what = ("segmentation.dcm (DICOM SEG of the label map)" if seg_only else
            "segmentation.dcm (DICOM SEG of the label map) and measurements_sr.dcm (DICOM SR "
            "TID 1500 measurement report)")
    p.add_argument("--dicom", action="store_true",
                   help=f"also write {what} into {where}; when the CT was not a DICOM "
                   "series (or with "
                   "--deidentify) the CT is written as a DICOM series in ct/ for the SEG to "
                   "refer to; docs/dicom.md (default: off)")


def dicom_writer(results: Results | None, ct: CTImage, labels: LabelMap,
                 args: argparse.Namespace) -> Callable[[Path], dict[str, Path]]:
    """A writer (for ``extra_writers`` / a staging folder) of the --dicom outputs."""
    from ..pipeline import write_dicom

    deidentify = bool(getattr(args, "deidentify", False))
    return lambda stage: write_dicom(results, ct, labels, stage, deidentify=deidentify)
