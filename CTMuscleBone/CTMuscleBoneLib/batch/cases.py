"""Find the cases of a cohort: a folder of CT files or DICOM studies, or a CSV list.

Naming rule of a folder (:func:`discover_cases`):

* every image file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) is
  one CT, case id = its name without the image ending (``case01.nii.gz`` -> ``case01``);
* every sub-folder is one DICOM study, case id = the folder name (its series are read
  with :func:`CTMuscleBoneLib.io_ct.read_ct`: one CT series per study);
* an image named ``<case id>_labels.<image ending>`` (``_labels`` in any case:
  ``_Labels``, ``_LABELS``) beside them is the label map of that case (its sidecar
  ``<case id>_labels.labels.json`` is read when present); a case with a label map is
  measured, a case without one is segmented first;
* hidden entries (``.name``), other files, the output folder and any other batch's
  output folder (:func:`is_batch_output`) are ignored.

A CSV list has a header row with ``case_id`` and ``ct`` and optional ``labels``,
``sex``, ``age`` (years), ``height`` (m or cm), ``weight`` (kg); relative paths are
relative to the CSV's folder; an empty cell means "not given" (the batch option or the
DICOM header is used). A value that cannot be read (``sex=X``) fails that case only.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io_ct import image_stem
from ..user_files import read_text_file

#: Name ending that marks a label map beside its CT (``case01_labels.nii.gz``).
LABELS_SUFFIX = "_labels"
#: Columns a cohort CSV may have; ``case_id`` and ``ct`` are required.
CSV_COLUMNS = ("case_id", "ct", "labels", "sex", "age", "height", "weight")
#: A case id becomes a folder name: letters, digits, ``.``, ``_``, ``-`` only.
_CASE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CaseSpec:
    """One case of a cohort: where its inputs are and its own patient facts.

    Attributes
    ----------
    case_id : str
        Unique in the cohort; the name of the case's output folder.
    ct : str
        CT file or DICOM folder (absolute path).
    labels : str or None
        Label map (absolute path); None = segment the CT with the chosen model.
    sex, age, height, weight : str or None
        Per-case patient facts as written in the CSV (sex M/F, age in years, height in
        m or cm, weight in kg); None = not given. Parsed by the case runner, so that a
        bad value fails that case only.
    """

    case_id: str
    ct: str
    labels: str | None = None
    sex: str | None = None
    age: str | None = None
    height: str | None = None
    weight: str | None = None


def _check_case_id(case_id: str, where: str) -> str:
    if not _CASE_ID.match(case_id):
        raise InputError(
            f"Case id '{case_id}' ({where}) cannot name an output folder: use letters, "
            "digits, '.', '_' and '-' only, not starting with '.' or '-'.")
    return case_id


def _check_unique(cases: list[CaseSpec], where: str) -> list[CaseSpec]:
    seen: set[str] = set()
    for c in cases:
        key = c.case_id.lower()  # case-insensitive file systems
        if key in seen:
            raise InputError(f"Case id '{c.case_id}' appears twice in {where}: give each "
                             "case a unique id.")
        seen.add(key)
    if not cases:
        raise InputError(f"No case found in {where}: expected CT files (NIfTI, NRRD, "
                         "MetaImage), DICOM study sub-folders or a CSV list of cases.")
    return cases


def _inside(path: Path, other: Path | None) -> bool:
    if other is None:
        return False
    p, o = path.resolve(), other.resolve()
    return p == o or o in p.parents or p in o.parents


def is_batch_output(folder: Path) -> bool:
    """True when ``folder`` is the output folder of a batch (it holds ``cases.json``,
    ``cohort.csv`` or a ``cases/`` folder of case folders with a ``done.json`` or
    ``error.json``): an earlier run's ``--out`` inside the input folder, not a study."""
    if (folder / "cases.json").is_file() or (folder / "cohort.csv").is_file():
        return True
    cases = folder / "cases"
    try:
        return cases.is_dir() and any((c / m).is_file() for c in cases.iterdir()
                                      for m in ("done.json", "error.json"))
    except OSError:
        return False


def discover_folder(folder: Path, exclude: Path | None = None) -> list[CaseSpec]:
    """Cases of a folder, sorted by case id (the naming rule in the module docstring).

    ``exclude``: a folder to skip (the batch's output folder when it lies inside).
    """
    if exclude is not None and folder.resolve() == exclude.resolve():
        raise InputError(f"The output folder {exclude} is the input folder: give another "
                         "output folder (it may lie inside the input folder).")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    studies: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or _inside(entry, exclude):
            continue
        if entry.is_dir():
            if not is_batch_output(entry):
                studies[entry.name] = entry
            continue
        stem = image_stem(entry.name)
        if stem is None:
            continue
        if stem.lower().endswith(LABELS_SUFFIX) and len(stem) > len(LABELS_SUFFIX):
            target = labels
            stem = stem[: -len(LABELS_SUFFIX)]
        else:
            target = images
        if stem in target:
            raise InputError(f"Two files in {folder} give case '{stem}' ({target[stem].name} "
                             f"and {entry.name}): keep one image format per case.")
        target[stem] = entry
    both = sorted(set(images) & set(studies))
    if both:
        raise InputError(f"Case '{both[0]}' is both a file and a DICOM folder in {folder}: "
                         "rename one of them.")
    cts = {**images, **studies}
    orphans = sorted(set(labels) - set(cts))
    if orphans:
        raise InputError(f"Label map {labels[orphans[0]].name} in {folder} has no CT named "
                         f"'{orphans[0]}' (expected {orphans[0]}.nii.gz or a folder "
                         f"{orphans[0]}/): rename it or remove it.")
    cases = [CaseSpec(_check_case_id(cid, str(path)), str(path.resolve()),
                      str(labels[cid].resolve()) if cid in labels else None)
             for cid, path in sorted(cts.items())]
    return _check_unique(cases, str(folder))


def _cell(row: dict[str, str | None], key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _header_problem(header: list[str], raw: list[str]) -> str | None:
    """What is wrong with a case list's header (None when usable)."""
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in raw[0]:
                return (f"separates its columns with {name}, not commas (save it as "
                        "comma-separated CSV)")
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        return f"has column(s) {', '.join(twice)} twice (keep one of each)"
    missing = [c for c in ("case_id", "ct") if c not in header]
    if missing:
        return f"lacks column(s) {', '.join(missing)}"
    unknown = [c for c in header if c and c not in CSV_COLUMNS]
    if unknown:
        return f"has unknown column(s) {', '.join(unknown)}"
    return None


def read_case_list(path: Path) -> list[CaseSpec]:
    """Cases of a CSV list (columns :data:`CSV_COLUMNS`), in the file's order.

    Column names are read without regard to case and surrounding spaces (columns
    without a name and without values are ignored); rows with every cell empty (blank
    lines, or the ``,,,`` rows a spreadsheet leaves) are skipped. A header with a column
    twice, a list separated by semicolons or tabs and a row with more cells than the
    header are refused (a value would be dropped silently). Line numbers in messages
    are the file's.
    """
    text = read_text_file(path, "case list",
                          hint=f"Give a UTF-8 CSV with columns {', '.join(CSV_COLUMNS)}.")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        raw = next(reader, [])
        header = [h.strip().lower() for h in raw]
        problem = _header_problem(header, raw)
        if problem is not None:
            raise InputError(f"The case list {path} {problem}: its header must use "
                             f"{', '.join(CSV_COLUMNS)} (case_id and ct required).")
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as exc:
        raise InputError(f"Cannot read the case list {path}: {exc}. Give a UTF-8 CSV "
                         f"with columns {', '.join(CSV_COLUMNS)}.") from exc
    base = path.resolve().parent
    cases = []
    for n, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            raise InputError(f"Line {n} of {path} has {len(cells)} cells but the header "
                             f"{len(header)}: quote values holding a comma, or add the "
                             "column to the header.")
        if any(c.strip() for h, c in zip(header, cells, strict=False) if not h):
            raise InputError(f"Line {n} of {path} has a value in a column without a name: "
                             "name the column in the header or empty it.")
        row: dict[str, str | None] = dict(zip(header, cells, strict=False))
        case_id, ct = _cell(row, "case_id"), _cell(row, "ct")
        if case_id is None or ct is None:
            raise InputError(f"Line {n} of {path} has no case_id or no ct: every case "
                             "needs both.")
        labels = _cell(row, "labels")
        cases.append(CaseSpec(
            _check_case_id(case_id, f"line {n} of {path.name}"),
            str(base / os.path.expanduser(ct)),
            str(base / os.path.expanduser(labels)) if labels else None,
            _cell(row, "sex"), _cell(row, "age"), _cell(row, "height"), _cell(row, "weight")))
    return _check_unique(cases, str(path))


def discover_cases(source: str | os.PathLike[str],
                   exclude: str | os.PathLike[str] | None = None) -> list[CaseSpec]:
    """The cases of a cohort.

    Parameters
    ----------
    source : path-like
        A folder (CT files, ``<id>_labels`` label maps, DICOM study sub-folders) or a
        ``.csv`` case list (see the module docstring).
    exclude : path-like, optional
        A folder not to take as a case (the output folder).

    Returns
    -------
    list of CaseSpec
        Folder: sorted by case id; CSV: in the file's order.

    Raises
    ------
    InputError
        Missing source, no case, a duplicated or unusable case id, a label map without
        its CT, a CSV without the required columns.
    """
    p = Path(source)
    if not p.exists():
        raise InputError(f"'{p}' does not exist: give a folder of cases or a CSV list.")
    if p.is_dir():
        return discover_folder(p, Path(exclude) if exclude is not None else None)
    if p.suffix.lower() == ".csv":
        return read_case_list(p)
    raise InputError(f"'{p.name}' is neither a folder nor a .csv case list: give a folder "
                     "of CT files / DICOM studies or a CSV with columns "
                     f"{', '.join(CSV_COLUMNS)}.")
