"""DICOM outputs: a Segmentation (SEG) of the label map and a measurement report (SR).

:func:`write_dicom` writes, into one folder:

* ``segmentation.dcm``: DICOM SEG (:mod:`.seg`), one segment per labelled anatomy
  structure with its SNOMED CT codes, on the source CT's frames;
* ``measurements_sr.dcm``: Comprehensive 3D SR, TID 1500 Measurement Report
  (:mod:`.sr`), every result row with UCUM units, referring to the SEG's segments;
* ``ct/``: the CT as a DICOM series, only when the SEG cannot refer to the original
  DICOM series (input not DICOM, multi-frame source, or de-identified output; see
  :mod:`.source`).

highdicom and pydicom (the ``dicom`` extra) are imported when called, never at import.
The rule of which codes are used is in :mod:`.codes`; docs/dicom.md describes it all.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_path, check_output_dir
from ..errors import InputError, MissingDependencyError
from ..image import CTImage, LabelMap
from ..results import Results

#: File names written by :func:`write_dicom`.
SEG_NAME = "segmentation.dcm"
SR_NAME = "measurements_sr.dcm"
SOURCE_FOLDER = "ct"

__all__ = ["SEG_NAME", "SOURCE_FOLDER", "SR_NAME", "require_dicom",
           "synthetic_model_warning", "write_dicom"]


def require_dicom() -> None:
    """Raise :class:`MissingDependencyError` naming the extra unless highdicom and
    pydicom are importable."""
    import importlib.util

    missing = [m for m in ("pydicom", "highdicom") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"DICOM SEG/SR output needs {', '.join(missing)}, which is not installed: "
            'pip install "ctmusclebone[dicom]".'
        )


def synthetic_model_warning(results: Results | None) -> str | None:
    """The clinical-use warning of a synthetic (demo) segmentation model the results
    came from (``provenance.models``), else None."""
    if results is None:
        return None
    for entry in results.provenance.models:
        if isinstance(entry, dict) and entry.get("synthetic"):
            return str(entry.get("warning") or results.artifacts.get("model_warning")
                       or f"Segmentation by the synthetic demo model {entry.get('name', '')}"
                       " - not for clinical use.")
    return None


def write_dicom(results: Results | None, ct: CTImage, labels: LabelMap,
                out_dir: str | os.PathLike[str], deidentify: bool = False,
                seg_only: bool = False, model_warning: str | None = None) -> dict[str, Path]:
    """Write the DICOM SEG (and SR) of a case into ``out_dir``, each file atomically.

    Parameters
    ----------
    results : Results or None
        The measurements for the SR; None (or ``seg_only``) writes the SEG only.
    ct : CTImage
        The CT the labels are on; its metadata says whether the SEG can refer to the
        original DICOM series (:mod:`.source`).
    labels : LabelMap
        ``array`` (n0, n1, n2) on the CT grid.
    out_dir : path-like
        Created when absent.
    deidentify : bool
        Leave out patient name, IDs, birth date, dates, accession, institution and
        every source UID (new UIDs; the CT is written as ``ct/``); the SR's text is
        de-identified with :func:`CTMuscleBoneLib.deidentify.deidentify`. Sex, age,
        size and weight are kept (PS3.15 Retain Patient Characteristics Option).
    seg_only : bool
        Write the SEG (and ``ct/`` when needed) only.
    model_warning : str, optional
        Clinical-use warning of a synthetic segmentation model (default: taken from
        ``results.provenance.models``): the SEG's and SR's series descriptions say
        SYNTHETIC DEMO MODEL and the SR carries the warning.

    Returns
    -------
    dict
        ``{"seg": path, "sr": path, "ct_series": folder}`` for what was written.

    Raises
    ------
    InputError
        Labels not on the CT grid, or no labelled anatomy structure.
    MissingDependencyError
        highdicom / pydicom not installed.
    """
    require_dicom()
    from pydicom.uid import generate_uid

    from .seg import build_seg, edited_keys, segments_of
    from .source import source_images, write_source_series
    from .sr import build_sr

    if not labels.geometry.same_grid(ct.geometry):
        raise InputError("The label map is not on the CT grid; read it with read_labels "
                         "(which resamples it onto the CT) before writing DICOM.")
    segments = segments_of(labels)
    if not segments:
        raise InputError("The label map holds no structure of the anatomy table, so there "
                         "is no segment to write as DICOM SEG.")
    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = source_images(ct, deidentify=deidentify)
    paths: dict[str, Path] = {}
    if sources.derived:
        write_source_series(ct, sources, out / SOURCE_FOLDER)
        paths["ct_series"] = out / SOURCE_FOLDER
    model_warning = model_warning or synthetic_model_warning(results)
    seg = build_seg(labels, sources, segments, series_uid=generate_uid(),
                    sop_uid=generate_uid(), deidentify=deidentify,
                    model_warning=model_warning, edited=edited_keys(results))
    paths["seg"] = out / SEG_NAME
    with atomic_path(paths["seg"]) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    if results is not None and not seg_only:
        if deidentify:
            from ..deidentify import deidentify as deidentify_results

            results = deidentify_results(results, ct.metadata)
        sr = build_sr(results, seg, segments,
                      source_series_uid=sources.datasets[0].SeriesInstanceUID,
                      series_uid=generate_uid(), sop_uid=generate_uid(),
                      deidentify=deidentify, model_warning=model_warning,
                      source_images=sources.datasets)
        paths["sr"] = out / SR_NAME
        with atomic_path(paths["sr"]) as tmp:
            sr.save_as(tmp, enforce_file_format=True)
    return paths
