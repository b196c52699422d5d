"""Find the cases of a cohort: a folder of CT files or DICOM studies, or a CSV list.

Naming rule of a folder (:func:`discover_cases`):

* every image file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) is
  one CT, case id = its name without the image ending (``case01.nii.gz`` -> ``case01``);
* every sub-folder is one DICOM study, case id = the folder name (its series are read
  with :func:`CTMuscleBoneLib.io_ct.read_ct`: one CT series per study);
* an image named ``<case id>_labels.<image ending>`` beside them is the label map of
  that case (its sidecar ``<case id>_labels.labels.json`` is read when present);
  a case with a label map is measured, a case without one is segmented first;
* hidden entries (``.name``), other files and the output folder are ignored.

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
            studies[entry.name] = entry
            continue
        stem = image_stem(entry.name)
        if stem is None:
            continue
        if stem.endswith(LABELS_SUFFIX) and len(stem) > len(LABELS_SUFFIX):
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


def read_case_list(path: Path) -> list[CaseSpec]:
    """Cases of a CSV list (columns :data:`CSV_COLUMNS`), in the file's order."""
    text = read_text_file(path, "case list",
                          hint=f"Give a UTF-8 CSV with columns {', '.join(CSV_COLUMNS)}.")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"Cannot read the case list {path}: {exc}. Give a UTF-8 CSV "
                         f"with columns {', '.join(CSV_COLUMNS)}.") from exc
    missing = [c for c in ("case_id", "ct") if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        what = (f"lacks column(s) {', '.join(missing)}" if missing
                else f"has unknown column(s) {', '.join(unknown)}")
        raise InputError(f"The case list {path} {what}: its header must use "
                         f"{', '.join(CSV_COLUMNS)} (case_id and ct required).")
    base = path.resolve().parent
    cases = []
    for n, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in raw.items()}
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
