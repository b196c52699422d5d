"""The per-case runner: one case spec + the batch options -> one case record.

:func:`run_case` is the one function both executors (local process pool, Dask) run. It
never raises for a problem of the case: an :class:`~CTMuscleBoneLib.errors.InputError`
(an MR image, a corrupt file, a label map of another image ...) or any other exception
becomes a record with ``status='failed'`` and the error's message, so one broken case
never stops the others. It calls the public library API only
(:mod:`CTMuscleBoneLib.pipeline`, ``io_ct.read_ct``, ``io_labels.read_labels``).

Outputs of a case, in ``<out>/cases/<case_id>/``: ``results.csv``, ``results.json``,
``summary.txt`` (and ``segmentation/`` for a segmented case; ``report.html``,
``report.pdf`` with the report option; ``segmentation.dcm``, ``measurements_sr.dcm``
and perhaps ``ct/`` with the DICOM option), staged and moved into place together
(:func:`~CTMuscleBoneLib.atomic.staged_output_dir`): a case whose report or DICOM
fails leaves no folder and is a failed case. Then ``done.json`` (:mod:`.marker`),
last. A failed case gets ``error.json`` instead.

With ``BatchOptions.deidentify`` the results are de-identified
(:func:`CTMuscleBoneLib.deidentify.deidentify`) before anything is written, and the
record, marker and error file carry no input path (:data:`~CTMuscleBoneLib.deidentify.REMOVED`
instead; the checksums stay), its error text none of the input paths or DICOM UIDs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_write_text
from ..errors import CTMuscleBoneError, InputError
from .cases import CaseSpec
from .marker import is_complete, write_marker
from .options import BatchOptions, fingerprint

#: Sub-folder of the batch output holding one folder per case.
CASES_DIR = "cases"
MODE_MEASURE = "measure"
MODE_ANALYZE = "segment+measure"


@dataclass
class CaseRecord:
    """What happened to one case (one row of ``cases.csv``).

    Attributes
    ----------
    case_id : str
    status : {'ok', 'failed'}
    mode : {'measure', 'segment+measure'}
        Measured from its label map, or segmented with the batch's model first.
    resumed : bool
        True when the case was complete from an earlier run and was not recomputed.
    error_type, error : str
        Exception class and message of a failed case ('' when ok).
    time_s : float
        Wall time of the case, s (of the earlier run when resumed).
    cpu_s : float
        CPU time of the worker process during the case, s (0 when resumed); below
        ``time_s`` when the case waited for disk or for a busy CPU.
    peak_rss_mb : float or None
        Peak resident memory of the worker process so far, MiB (None where the
        platform does not report it).
    """

    case_id: str
    status: str = "failed"
    mode: str = MODE_MEASURE
    resumed: bool = False
    error_type: str = ""
    error: str = ""
    time_s: float = 0.0
    cpu_s: float = 0.0
    ct: str = ""
    ct_sha256: str = ""
    labels: str = ""
    labels_sha256: str = ""
    options_sha256: str = ""
    n_rows: int = 0
    n_warnings: int = 0
    peak_rss_mb: float | None = None
    worker: str = ""
    finished_utc: str = ""
    warnings: list[str] = field(default_factory=list)
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process, MiB; None where unknown.

    Linux: ``VmHWM`` of ``/proc/self/status`` (the peak of this program's memory; the
    ``getrusage`` maximum would include the parent's peak from before the worker was
    started). Elsewhere ``getrusage`` (macOS reports bytes); None on Windows.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


def case_facts(spec: CaseSpec) -> dict[str, Any]:
    """MeasureOptions overrides from a case's own facts (None where not given).

    Raises InputError for a value that cannot be read (the case fails, not the batch).
    """
    from ..alm import normalise_sex, parse_height_m

    def number(name: str, text: str | None) -> float | None:
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            raise InputError(f"Case {spec.case_id}: {name} '{text}' is not a number; "
                             "correct it in the case list.") from None

    facts: dict[str, Any] = {"sex": normalise_sex(spec.sex) if spec.sex else None,
                             "age_years": number("age", spec.age),
                             "weight_kg": number("weight", spec.weight), "notes": []}
    height = number("height", spec.height)
    if height is not None:
        facts["height_m"], note = parse_height_m(height)
        if note:
            facts["notes"] = [note]
    return facts


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _checksum(path: str, what: str) -> str:
    from ..results import sha256_of_path

    if not Path(path).exists():
        raise InputError(f"The {what} '{path}' does not exist. Check the path (in the case "
                         "list, relative paths are relative to the list's folder).")
    return sha256_of_path(path)


#: Header formats whose voxels may lie in other files: the header's key naming them.
_DETACHED_KEYS = {".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$", re.I),
                  ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.*?)\s*$", re.I)}


def detached_data_files(path: str) -> list[Path]:
    """The data files a ``.mhd`` or ``.nhdr`` header names (``LOCAL``: none; ``LIST``:
    the lines after it; ``name%03d.raw 1 40 1``: the numbered files); [] for any other
    image or folder."""
    p = Path(path)
    key = _DETACHED_KEYS.get(p.suffix.lower())
    if key is None or not p.is_file():
        return []
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines):
        m = key.match(line)
        if m is None:
            continue
        value = m.group(1)
        if value.upper() == "LOCAL":
            return []
        if value.split()[:1] == ["LIST"]:
            names = [x.strip() for x in lines[n + 1:] if x.strip()]
        else:
            parts = value.split()
            if "%" in parts[0] and len(parts) >= 4:
                try:
                    first, last, step = (int(x) for x in parts[1:4])
                    names = [parts[0] % i for i in range(first, last + 1, step or 1)]
                except (TypeError, ValueError):
                    names = [value]
            else:
                names = [value]
        return [q if q.is_absolute() else p.parent / q for q in map(Path, names)]
    return []


def _data_files_checksum(*paths: str | None) -> str | None:
    """One SHA-256 over the detached data files of the given headers
    (:func:`detached_data_files`; a missing one counts by its name), None when there is
    none: the header's own checksum does not change when only its voxels do."""
    import hashlib

    from ..results import sha256_of_path

    files = [f for p in paths if p for f in detached_data_files(p)]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f).encode())
        h.update(sha256_of_path(f).encode() if f.is_file() else b"missing")
    return h.hexdigest()


def _sidecar_checksum(labels: str, names: str | None) -> str | None:
    """SHA-256 of the names sidecar read beside a label map (``<stem>.labels.json``,
    ``.json`` or ``.csv``; :func:`~CTMuscleBoneLib.io_labels.label_input_files`), None
    when there is none. A ``names`` file given for the batch is in the options'
    fingerprint instead."""
    from ..io_labels import label_input_files
    from ..results import sha256_of_path

    given = {Path(labels).resolve()} | ({Path(names).resolve()} if names else set())
    extra = [p for p in label_input_files(labels, names) if p.resolve() not in given]
    if not extra:
        return None
    return sha256_of_path(extra[0])


def _remove_stale_stages(case_dir: Path) -> None:
    """Remove staging folders of this case left by a run that was killed (a crash or
    SIGKILL skips the clean-up of :func:`~CTMuscleBoneLib.atomic.staged_output_dir`)."""
    pattern = re.compile(rf"^\.{re.escape(case_dir.name)}\.partial-[^.]+$")
    if case_dir.parent.is_dir():
        for entry in case_dir.parent.iterdir():
            if pattern.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _path_scrubber(spec: CaseSpec, deidentify: bool):
    """A text filter removing the case's input paths (and their folders) and DICOM UIDs
    (identity when not de-identifying)."""
    if not deidentify:
        return lambda text: text
    from ..deidentify import scrubber  # the one rule for identifiers in free text

    paths = [p for p in (spec.ct, spec.labels) if p]
    return scrubber(paths + [str(Path(p).parent) for p in paths])


def run_case(spec: CaseSpec, options: BatchOptions, out_dir: str) -> CaseRecord:
    """Run one case: skip it when complete, else read, check, measure (or segment and
    measure) and write it.

    Parameters
    ----------
    spec : CaseSpec
    options : BatchOptions
    out_dir : str
        The batch output folder; the case writes only ``out_dir/cases/<case_id>/``.

    Returns
    -------
    CaseRecord
        Never raises for a problem of the case (KeyboardInterrupt and SystemExit pass).
    """
    start = time.perf_counter()
    cpu_start = time.process_time()
    case_dir = Path(out_dir) / CASES_DIR / spec.case_id
    record = CaseRecord(spec.case_id, mode=MODE_MEASURE if spec.labels else MODE_ANALYZE,
                        worker=f"{platform.node()}:{os.getpid()}",
                        **input_paths(spec, options.deidentify))
    try:
        _run(spec, options, case_dir, record, start)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the case's record
        scrub = _path_scrubber(spec, options.deidentify)
        record.status = "failed"
        record.error_type = type(exc).__name__
        record.error = scrub(str(exc) or type(exc).__name__)
        if not isinstance(exc, (CTMuscleBoneError, OSError)):  # a bug: keep the trace
            record.traceback = scrub(traceback.format_exc(limit=20))
        record.time_s = round(time.perf_counter() - start, 3)
        record.finished_utc = _now()
        record.peak_rss_mb = peak_rss_mb()
        try:
            atomic_write_text(case_dir / "error.json",
                              json.dumps(record.to_dict(), indent=1) + "\n")
        except OSError:
            pass  # the record still carries the error
        return record
    if not record.resumed:
        record.cpu_s = round(time.process_time() - cpu_start, 3)
    record.peak_rss_mb = peak_rss_mb()
    return record


def _fill_from_marker(record: CaseRecord, done: dict[str, Any]) -> None:
    """Set an ok record's outcome fields from a case's completion marker."""
    record.status = "ok"
    record.time_s = float(done.get("time_s", 0.0))
    record.n_rows = int(done.get("n_rows", 0))
    record.warnings = list(done.get("warnings", []))
    record.n_warnings = len(record.warnings)
    record.finished_utc = str(done.get("finished_utc", ""))


def record_written_since(spec: CaseSpec, options: BatchOptions, out_dir: str,
                         since_s: float) -> CaseRecord | None:
    """The record of a case that a worker completed at or after ``since_s`` (epoch s)
    but whose record never reached the batch (an interruption between the worker's
    ``done.json`` and its reply), read from that marker; None for any other case.

    Reads only the case's marker, never its inputs (an unfinished case's CT may still
    be unreadable). A marker written during this run was written by this run's worker
    for this run's inputs and options, so its checksums are this run's.
    """
    from .marker import marker_path, read_marker

    case_dir = Path(out_dir) / CASES_DIR / spec.case_id
    try:
        written_s = marker_path(case_dir).stat().st_mtime
    except OSError:
        return None
    done = read_marker(case_dir)
    if (written_s < since_s or done is None or done.get("status") != "ok"
            or done.get("case_id") != spec.case_id):
        return None
    record = CaseRecord(spec.case_id, mode=str(done.get("mode", MODE_MEASURE)),
                        **input_paths(spec, options.deidentify))
    record.ct_sha256 = str(done.get("ct_sha256", ""))
    record.labels_sha256 = str(done.get("labels_sha256") or "")
    record.options_sha256 = str(done.get("options_sha256", ""))
    _fill_from_marker(record, done)
    return record


def input_paths(spec: CaseSpec, deidentify: bool) -> dict[str, str]:
    """``ct`` and ``labels`` of a case's record: the paths, or
    :data:`~CTMuscleBoneLib.deidentify.REMOVED` when de-identifying ('' = no labels)."""
    if not deidentify:
        return {"ct": spec.ct, "labels": spec.labels or ""}
    from ..deidentify import REMOVED

    return {"ct": REMOVED, "labels": REMOVED if spec.labels else ""}


def _run(spec: CaseSpec, options: BatchOptions, case_dir: Path, record: CaseRecord,
         start: float) -> None:
    from .. import pipeline
    from ..atomic import staged_output_dir
    from ..io_ct import read_ct
    from ..io_labels import read_labels
    from ..results import Provenance

    raw_facts = {k: v for k, v in (("sex", spec.sex), ("age", spec.age),
                                   ("height", spec.height), ("weight", spec.weight)) if v}
    record.ct_sha256 = _checksum(spec.ct, "CT")
    names_sha256 = None
    if spec.labels:
        record.labels_sha256 = _checksum(spec.labels, "label map")
        names_sha256 = _sidecar_checksum(spec.labels, options.names)
    record.options_sha256, described = fingerprint(options, raw_facts,
                                                   segmented=not spec.labels)
    expected = {"ct_sha256": record.ct_sha256, "labels_sha256": record.labels_sha256,
                "label_names_sha256": names_sha256, "options_sha256": record.options_sha256,
                "data_files_sha256": _data_files_checksum(spec.ct, spec.labels),
                "software": f"CTMuscleBone {__version__}"}
    done = is_complete(case_dir, expected)
    if done is not None:
        _fill_from_marker(record, done)
        record.resumed = True
        (case_dir / "error.json").unlink(missing_ok=True)  # of a run before the fix
        return
    if case_dir.exists():  # outputs of an earlier, different or unfinished run
        shutil.rmtree(case_dir)
    _remove_stale_stages(case_dir)
    measure_options = options.measure_options(case_facts(spec))
    ct = pipeline.check_ct(read_ct(spec.ct))
    prov = Provenance(input_ct=spec.ct, input_ct_sha256=record.ct_sha256)
    with staged_output_dir(case_dir) as stage:
        segmentation = None
        if spec.labels:
            labels = read_labels(spec.labels, ct.geometry, label_format=options.label_format,
                                 names=options.names)
            prov.input_labels, prov.input_labels_sha256 = spec.labels, record.labels_sha256
            prov.label_source = labels.source
            results = pipeline.measure(ct, labels, measure_options, provenance=prov)
        else:
            analysis = pipeline.analyze(ct, options.segment, measure_options, provenance=prov)
            results, segmentation = analysis.results, analysis.segmentation
            labels = segmentation.result.label_map
        if options.deidentify:
            from ..deidentify import deidentify

            results = deidentify(results, ct.metadata)
        if segmentation is not None:
            pipeline.write_segmentation(segmentation, ct, stage / "segmentation",
                                        results.provenance)
        if options.report:  # the segmentation's uncertainty map by default
            pipeline.write_report(results, ct, labels, stage, deidentify=options.deidentify)
        if options.dicom:
            pipeline.write_dicom(results, ct, labels, stage, deidentify=options.deidentify)
        pipeline.write_outputs(results, stage)
    record.status = "ok"
    record.n_rows = len(results.rows)
    record.warnings = list(results.warnings)
    record.n_warnings = len(record.warnings)
    record.time_s = round(time.perf_counter() - start, 3)
    record.finished_utc = _now()
    write_marker(case_dir, {**expected, "status": "ok", "case_id": spec.case_id,
                            "mode": record.mode, "ct": record.ct,
                            "labels": record.labels or None,
                            "options": described,
                            "time_s": record.time_s, "n_rows": record.n_rows,
                            "warnings": record.warnings, "finished_utc": record.finished_utc})
