"""The public library API: one call per step of the workflow.

The command line (``cli/``) and the 3D Slicer module both call these functions and
nothing below them, so a clinician in Slicer and a researcher on a cohort get the
same checks, the same numbers and the same warnings::

    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.io_ct import read_ct

    ct = pipeline.check_ct(read_ct("ct.nii.gz"))            # refuses what is not a CT in HU
    seg = pipeline.segment(ct, pipeline.SegmentOptions(samples=10))
    results = pipeline.measure(ct, seg.result.label_map,
                               pipeline.MeasureOptions(sex="F", height_m=1.62))
    # ... the clinician corrects gluteus_medius_left in the Segment Editor ...
    update = pipeline.remeasure(ct, edited_labels, results, changed=["gluteus_medius_left"])
    pipeline.write_outputs(update.results, "out/")

``analyze`` is segment + measure in one call. Every function takes an optional
``progress(fraction, message)`` callback; ``segment`` and ``analyze`` take a
``threading.Event`` that cancels them (:class:`~CTMuscleBoneLib.errors.CancelledError`).
Nothing here prints. This module imports neither torch nor Qt nor Slicer at import
time: segmentation modules are imported when :func:`segment` is first called.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from .analysis import (
    CalibrationMethod,
    CriteriaName,
    DensityModelName,
    MeasureOptions,
    Sex,
    checked_ct,
    measure_case,
)
from .atomic import atomic_write_text, check_output_dir
from .calibration.definitions import PhantomDefinition
from .calibration.model import Calibration
from .errors import CancelledError, InputError, MissingDependencyError
from .image import CTImage, LabelMap
from .progress import ProgressCallback, no_progress, sub_progress
from .results import EDITED, Provenance, ResultRow, Results

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .segmentation.pipeline import Segmentation

Device = Literal["auto", "cpu", "cuda"]

#: Flag carried by rows recomputed after a hand edit of the segmentation.
EDITED_FLAG = f"{EDITED}: segmentation corrected by hand"

__all__ = [
    "Analysis",
    "CalibrationMethod",
    "CriteriaName",
    "DensityModelName",
    "Device",
    "EDITED_FLAG",
    "MeasureOptions",
    "Remeasurement",
    "SegmentOptions",
    "Sex",
    "analyze",
    "calibrate_phantom_scan",
    "changed_rows_between",
    "changed_settings",
    "check_ct",
    "measure",
    "remeasure",
    "segment",
    "write_dicom",
    "write_outputs",
    "write_report",
    "write_segmentation",
]


def check_ct(ct: CTImage) -> CTImage:
    """Refuse what is not a usable CT in HU; return the CT with its warnings in its notes.

    Parameters
    ----------
    ct : CTImage

    Returns
    -------
    CTImage
        The same voxels, ``metadata.checked`` set and warnings (thick slices, contrast,
        kVp, metal, ...) appended to ``metadata.notes``.

    Raises
    ------
    InputError
        Not a CT in HU (MR, wrongly scaled), single slice, non-finite voxels, broken
        spacing. :func:`measure`, :func:`segment` and :func:`analyze` call it too.
    """
    return checked_ct(ct)


@dataclass(frozen=True)
class SegmentOptions:
    """How to run the Bayesian U-Net.

    Attributes
    ----------
    model : str or None
        Installed model name or model folder; None = the bundled demo model (trained
        on synthetic phantoms only: not for clinical images).
    samples : int or None
        Monte-Carlo dropout samples T (None: the model card's, usually 10).
    seed : int or None
        Seed of the dropout masks (None: the card's), for reproducible uncertainty.
    device : {'auto', 'cpu', 'cuda'}
    confidence : bool
        Also keep the voxel confidence (maximum mean softmax probability) on the CT grid
        (``confidence.nii.gz`` in the segmentation folder): what ``ctmusclebone
        evaluate`` needs for its reliability diagram on a site's own labelled CTs.
        Costs 4 bytes per CT voxel. Default off.
    backend : {'torch', 'openvino'}
        What runs the network's deterministic part (:mod:`.segmentation.backends`):
        'openvino' on the CPU for models with head-only dropout (needs the openvino
        package). Default 'torch'.
    """

    model: str | None = None
    samples: int | None = None
    seed: int | None = None
    device: Device = "auto"
    confidence: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.samples is not None and int(self.samples) < 1:
            raise InputError(f"The number of Monte-Carlo samples must be >= 1, got "
                             f"{self.samples}.")
        if self.seed is not None and int(self.seed) < 0:
            raise InputError(f"The seed must be >= 0, got {self.seed}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"Unknown device '{self.device}'; choose auto, cpu or cuda.")
        from .segmentation.config import BACKENDS  # no torch import

        if self.backend not in BACKENDS:
            raise InputError(f"Unknown back end '{self.backend}'; choose one of "
                             f"{', '.join(BACKENDS)}.")


def require_segmentation() -> None:
    """Raise :class:`MissingDependencyError` (naming the extra) unless torch, MONAI and
    safetensors are importable."""
    import importlib.util

    missing = [m for m in ("torch", "monai", "safetensors")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"Segmentation needs {', '.join(missing)}, which is not installed: install "
            "torch first (pip install torch), then pip install \"ctmusclebone[segmentation]\" "
            "(in 3D Slicer the module offers to install them)."
        )


def segment(
    ct: CTImage,
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Segmentation:
    """Segment a CT with the Bayesian U-Net: labels, uncertainty maps and review list.

    Parameters
    ----------
    ct : CTImage
        Any orientation and spacing; checked with :func:`check_ct` first.
    options : SegmentOptions
    progress : callable (fraction, message), optional
    cancel : threading.Event, optional
        Set it (from another thread) to stop the run with CancelledError.

    Returns
    -------
    Segmentation
        ``result.label_map`` (LabelMap on the CT grid), ``result.uncertainty``
        ({map name: float32 array (n0, n1, n2)}), ``result.review`` (structures, most
        uncertain first, volumes measured on the CT grid), ``card`` (the model card:
        ``card.synthetic`` is True for the demo model).

    Raises
    ------
    InputError, ModelError, CancelledError, MissingDependencyError
    """
    ct = checked_ct(ct)
    require_segmentation()
    from .segmentation.pipeline import segment_ct

    return segment_ct(ct, options or SegmentOptions(), progress=progress, cancel=cancel)


def write_segmentation(seg: Segmentation, ct: CTImage, out_dir: str | os.PathLike[str],
                       provenance: Provenance | None = None,
                       region: np.ndarray | None = None) -> dict[str, Path]:
    """Write a segmentation's files into ``out_dir`` (atomically, file by file).

    Files: ``labels.nii.gz`` and its sidecar ``labels.labels.json`` (label value ->
    anatomy key), ``uncertainty_<map>.nii.gz`` (zero outside the body, mantissa rounded,
    compressed), ``review.json``, ``review.csv``. ``region``: the body-and-labels mask
    of :func:`CTMuscleBoneLib.segmentation.pipeline.uncertainty_region`, when the caller
    has computed it already. Returns {role: path}.
    """
    from .segmentation.pipeline import write_segmentation as _write

    prov = provenance or Provenance()
    return _write(seg, ct, Path(out_dir), prov.input_ct, prov.input_ct_sha256, region=region)


def measure(
    ct: CTImage,
    labels: LabelMap,
    options: MeasureOptions | None = None,
    progress: ProgressCallback | None = None,
    provenance: Provenance | None = None,
) -> Results:
    """Measure everything a labelled CT allows (muscles, ALM/SMI, femoral and lumbar BMD).

    Parameters
    ----------
    ct : CTImage
        Checked with :func:`check_ct` (refused when not a CT in HU).
    labels : LabelMap
        On the CT's grid (:func:`CTMuscleBoneLib.io_labels.read_labels` resamples).
    options : MeasureOptions
    progress : callable, optional
    provenance : Provenance, optional

    Returns
    -------
    Results
        ``artifacts['calibration']`` holds the calibration used (reused by
        :func:`remeasure`), ``artifacts['femur']`` the DXA-view projections.
    """
    return measure_case(ct, labels, options, progress=progress or no_progress,
                        provenance=provenance)


@dataclass
class Analysis:
    """What :func:`analyze` produced: the results and the segmentation they came from."""

    results: Results
    segmentation: Segmentation


def analyze(
    ct: CTImage,
    segment_options: SegmentOptions | None = None,
    measure_options: MeasureOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    provenance: Provenance | None = None,
) -> Analysis:
    """Segment a CT, then measure it: :func:`segment` followed by :func:`measure`.

    The model's provenance (name, version, weights SHA-256, T, seed, device) is added
    to the results; a synthetic (demo) model puts its warning first in the results'
    warnings. Writes nothing: see :func:`write_outputs` and :func:`write_segmentation`.
    """
    progress = progress or no_progress
    ct = checked_ct(ct)
    seg = segment(ct, segment_options, sub_progress(progress, 0.0, 0.8), cancel)
    if cancel is not None and cancel.is_set():
        raise CancelledError("Analysis cancelled.")
    prov = provenance or Provenance()
    prov.label_source = seg.result.label_map.source
    prov.models.append(seg.provenance_entry())
    if seg.result.vertebra_levels is not None:  # (its warnings are in the label map's notes)
        prov.notes.extend(seg.result.vertebra_levels.notes)
    results = measure_case(ct, seg.result.label_map, measure_options,
                           progress=sub_progress(progress, 0.8, 1.0), provenance=prov)
    if seg.card.synthetic:
        results.warnings.insert(0, seg.card.clinical_use_warning)
        results.artifacts["model_warning"] = seg.card.clinical_use_warning
    results.artifacts["segmentation"] = seg
    return Analysis(results, seg)


@dataclass
class Remeasurement:
    """The outcome of :func:`remeasure`.

    Attributes
    ----------
    results : Results
        The whole updated table (same row order as a fresh :func:`measure`).
    changed_rows : set of (structure, quantity)
        Rows whose value or flags differ from the previous results, plus rows that
        appeared or disappeared.
    edited_structures : set of str
        The anatomy keys named as edited (those present in the label map or the
        previous results).
    settings_changed : list of str
        Settings (:class:`MeasureOptions` fields) a caller changed by measuring the
        unedited labels with them before re-measuring the edits (the Slicer panel does;
        :func:`remeasure` itself refuses new settings); empty otherwise.
    """

    results: Results
    changed_rows: set[tuple[str, str]] = field(default_factory=set)
    edited_structures: set[str] = field(default_factory=set)
    settings_changed: list[str] = field(default_factory=list)


def remeasure(
    ct: CTImage,
    labels: LabelMap,
    previous: Results,
    changed: Iterable[str],
    options: MeasureOptions | None = None,
    progress: ProgressCallback | None = None,
) -> Remeasurement:
    """Measure again after the segmentation was edited, without running the network.

    The calibration of ``previous`` (``previous.artifacts['calibration']``) is reused,
    so the edit of a muscle does not move a BMD value through a new calibration fit;
    femurs that were not edited keep their rows and projections (the femur projection
    is the slowest measurement); muscles, totals, ALM/SMI and the lumbar spine are
    computed again from the edited label map. Every row of an edited structure, and
    every row whose value changed because of the edit (group totals, ALM, SMI, lumbar
    summaries), carries :data:`EDITED_FLAG`.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap
        The edited label map on the CT grid (overlapping segments in ``overlays``).
    previous : Results
        The results before the edit (from :func:`measure`, :func:`analyze` or an
        earlier :func:`remeasure`).
    changed : iterable of str
        Anatomy keys of the structures that were edited (added or removed included).
    options : MeasureOptions, optional
        Default: the options of ``previous``. Given, they must be the settings
        ``previous`` was measured with (its calibration, fitted once, is reused whatever
        the options' calibration method): re-measuring keeps the unedited femurs' rows
        and marks every changed row as edited, so new settings would leave stale rows
        and mark settings' effects as hand edits. To change settings, :func:`measure`
        the unedited labels with them first, then re-measure the edits.
    progress : callable, optional

    Returns
    -------
    Remeasurement

    Raises
    ------
    InputError
        ``options`` differ from the settings of ``previous`` (names the fields).
    """
    from .anatomy import structure

    changed_keys = set(changed)
    for key in changed_keys:
        structure(key)  # KeyError -> not an anatomy key
    settings = changed_settings(previous, options) if options is not None else []
    if settings:
        raise InputError(
            f"The settings differ from those the results were measured with "
            f"({', '.join(settings)}); re-measuring edits keeps the earlier settings' rows. "
            "Measure the unedited labels with the new settings first (measure()), then "
            "re-measure the edits.")
    settings_given = options or previous.artifacts.get("options") or MeasureOptions()
    opts = settings_given
    calibration = previous.artifacts.get("calibration")
    if calibration is not None:
        opts = replace(opts, calibration=calibration, notes=[])
    femur_keys = {"femur_left", "femur_right"}
    reusable = (femur_keys - changed_keys) if "femur" in previous.artifacts else set()
    prov = replace(previous.provenance, models=list(previous.provenance.models),
                   coefficients=[], notes=list(previous.provenance.notes))
    results = measure_case(ct, labels, opts, progress=progress or no_progress,
                           provenance=prov, reuse=previous,
                           reuse_structures=frozenset(reusable))
    # the settings as given (the calibration method's name, not the reused fit), so
    # that the next changed_settings() still sees a change of method
    results.artifacts["options"] = settings_given
    banner = previous.artifacts.get("model_warning")
    if banner:  # the demo-model warning of analyze() stays first
        results.warnings.insert(0, banner)
        results.artifacts["model_warning"] = banner
    if "segmentation" in previous.artifacts:
        results.artifacts["segmentation"] = previous.artifacts["segmentation"]

    before = {(r.structure, r.quantity): r for r in previous.rows}
    changed_rows = changed_rows_between(previous, results)
    for r in results.rows:
        if r.structure in changed_keys or (r.structure, r.quantity) in changed_rows:
            r.flags = [f for f in r.flags if f != EDITED_FLAG] + [EDITED_FLAG]
    # rows marked edited in an earlier round stay marked
    for r in results.rows:
        old = before.get((r.structure, r.quantity))
        if old is not None and EDITED_FLAG in old.flags and EDITED_FLAG not in r.flags:
            r.flags.append(EDITED_FLAG)
    results.provenance.notes.append(
        "re-measured after hand edits of: " + (", ".join(sorted(changed_keys)) or "nothing"))
    return Remeasurement(results, changed_rows, changed_keys)


def changed_settings(previous: Results, options: MeasureOptions) -> list[str]:
    """Names of the :class:`MeasureOptions` fields in which ``options`` differ from the
    settings ``previous`` was measured with (``previous.artifacts['options']``).

    The calibration method is compared only when ``previous`` kept a method name (after
    :func:`remeasure` it holds the fitted calibration itself); ``notes`` are not settings.
    An empty list when ``previous`` records no options.
    """
    from dataclasses import fields

    before = previous.artifacts.get("options")
    if before is None:
        return []
    out = []
    for f in fields(MeasureOptions):
        if f.name == "notes":
            continue
        old, new = getattr(before, f.name), getattr(options, f.name)
        if f.name == "calibration" and not isinstance(old, str):
            continue
        same = (np.array_equal(old, new) if isinstance(old, np.ndarray)
                or isinstance(new, np.ndarray) else old == new)
        if not same:
            out.append(f.name)
    return out


def changed_rows_between(before: Results, after: Results) -> set[tuple[str, str]]:
    """(structure, quantity) of the rows whose value, unit or flags (the
    :data:`EDITED_FLAG` aside) differ between two results, and of rows only one has."""
    a = {(r.structure, r.quantity): r for r in before.rows}
    b = {(r.structure, r.quantity): r for r in after.rows}
    return {k for k in a.keys() | b.keys()
            if k not in a or k not in b or not _same_row(a[k], b[k])}


def _same_row(a: ResultRow, b: ResultRow) -> bool:
    flags_a = [f for f in a.flags if f != EDITED_FLAG]
    flags_b = [f for f in b.flags if f != EDITED_FLAG]
    return (a.unit == b.unit and flags_a == flags_b
            and (a.value == b.value or (a.value != a.value and b.value != b.value)))


def calibrate_phantom_scan(ct: CTImage, phantom: str | os.PathLike[str] | PhantomDefinition,
                           labels: LabelMap | None = None) -> Calibration:
    """Fit a calibration phantom scanned on its own (asynchronous calibration).

    Parameters
    ----------
    ct : CTImage
        The phantom scan (HU). Not checked as a patient CT: a phantom alone has no body.
    phantom : str, path or PhantomDefinition
        Bundled name ('B-MAS200', 'Mindways Model 3', 'QRM-BDC') or a definition.
    labels : LabelMap, optional
        Rod labels; None = rods found automatically.

    Returns
    -------
    Calibration
        Method 'phantom'; save it with
        :func:`CTMuscleBoneLib.calibration.stored.save_calibration` and use it with
        ``MeasureOptions(calibration='fixed', calibration_file=...)``.

    Raises
    ------
    CalibrationRefused
        The rods cannot be found or the fit cannot be trusted (the message says why).
    """
    from .calibration.api import calibrate

    return calibrate(ct, labels, "phantom", phantom=phantom)


def write_outputs(
    results: Results,
    out_dir: str | os.PathLike[str],
    summary_extra: str = "",
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.json`` and ``summary.txt`` into ``out_dir``.

    Each file is written atomically (a reader never sees half a file). The summary
    starts with every warning that concerns the whole case (the demo-model banner
    among them). Returns {role: path}.
    """
    from .summary import format_summary

    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": results.write_csv(out / "results.csv"),
             "json": results.write_json(out / "results.json")}
    text = format_summary(results)
    if summary_extra:
        text += "\n\n" + summary_extra
    paths["summary"] = out / "summary.txt"
    atomic_write_text(paths["summary"], text.rstrip("\n") + "\n")
    return paths


def deidentify_results(results: Results, ct: CTImage | None = None) -> Results:
    """A copy of ``results`` without patient identifiers, for :func:`write_outputs`.

    Removes the input paths, DICOM UIDs and the identifying header values of ``ct``
    (name, IDs, birth date, accession, institution, dates) wherever they appear; keeps
    sex, age, height, weight and the checksums
    (:func:`CTMuscleBoneLib.deidentify.deidentify`). :func:`write_report` and
    :func:`write_dicom` do the same with ``deidentify=True``.
    """
    from .deidentify import deidentify

    return deidentify(results, ct.metadata if ct is not None else None)


def write_report(
    results: Results,
    ct: CTImage,
    labels: LabelMap,
    out_dir: str | os.PathLike[str],
    uncertainty: np.ndarray | None = None,
    formats: tuple[str, ...] = ("html", "pdf"),
    deidentify: bool = False,
) -> dict[str, Path]:
    """Write the case report, ``report.html`` and ``report.pdf`` (same content), into
    ``out_dir``.

    The report shows each femur's DXA-view projection with its ROIs, the lumbar spine
    with its trabecular ROIs, muscle slices with the segmentation and the uncertainty
    heatmap, the value tables (from the results' rows and formatting), T-score, SMI and
    vertebral vBMD plots, a quality section and the provenance (docs/report.md). The
    HTML is self-contained (inline CSS, images as data URIs); the PDF is made with
    reportlab (no browser needed). Each file is written atomically.

    Parameters
    ----------
    results : Results
        From :func:`measure`, :func:`analyze` or :func:`remeasure` (its artifacts hold
        the projections, ROIs, calibration and segmentation).
    ct : CTImage
    labels : LabelMap
        The label map that was measured, on the CT grid.
    out_dir : path
        Created when absent.
    uncertainty : np.ndarray, (n0, n1, n2), optional
        Voxel uncertainty map on the CT grid; default: the predictive variance of the
        segmentation in ``results.artifacts`` (after :func:`analyze`), else none (the
        report says so).
    formats : tuple of {'html', 'pdf'}
    deidentify : bool
        Leave out patient identifiers (:func:`CTMuscleBoneLib.deidentify.deidentify`):
        name, IDs, birth date, accession, institution, dates, UIDs and input paths;
        sex, age, height and weight are kept (the scores need them).

    Returns
    -------
    dict
        {'html': path, 'pdf': path} for the formats written.

    Raises
    ------
    InputError
        Unknown format.
    MissingDependencyError
        matplotlib or reportlab missing (``pip install "ctmusclebone[reports]"``).
    """
    from .report import write_report as _write

    return _write(results, ct, labels, out_dir, uncertainty=uncertainty, formats=formats,
                  deidentify=deidentify)


def write_dicom(results: Results | None, ct: CTImage, labels: LabelMap,
                out_dir: str | os.PathLike[str], deidentify: bool = False,
                model_warning: str | None = None) -> dict[str, Path]:
    """Write the DICOM SEG of the labels and the DICOM SR of the results into ``out_dir``.

    ``segmentation.dcm``: DICOM Segmentation, one segment per labelled anatomy structure
    (SNOMED CT codes of :mod:`CTMuscleBoneLib.anatomy`). ``measurements_sr.dcm``:
    Comprehensive 3D SR, TID 1500 measurement report of every row (UCUM units), its
    groups referring to the SEG's segments. When the CT came from a DICOM series the SEG
    refers to it (same study, frame of reference and slice instances); otherwise, or
    with ``deidentify``, the CT is written as a DICOM series in ``ct/`` (new UIDs) and
    referred to. See docs/dicom.md.

    Parameters
    ----------
    results : Results or None
        None writes the SEG only (e.g. after :func:`segment`).
    ct : CTImage
    labels : LabelMap
        On the CT grid.
    out_dir : path
        Created when absent; each file is written atomically.
    deidentify : bool
        Leave out patient name, IDs, birth date, dates, accession, institution and the
        source UIDs; sex, age, size and weight are kept.
    model_warning : str, optional
        The clinical-use warning of a synthetic segmentation model (default: read from
        ``results.provenance.models``; give it for a SEG without results, e.g.
        ``segment(...).card.clinical_use_warning``): the series descriptions say
        SYNTHETIC DEMO MODEL and the SR carries the warning.

    Returns
    -------
    dict
        {'seg': path, 'sr': path, 'ct_series': folder} for what was written.

    Raises
    ------
    InputError
        Labels not on the CT grid or without any anatomy structure.
    MissingDependencyError
        highdicom / pydicom missing (``pip install "ctmusclebone[dicom]"``).
    """
    from .dicom_out import write_dicom as _write

    return _write(results, ct, labels, out_dir, deidentify=deidentify,
                  model_warning=model_warning)
