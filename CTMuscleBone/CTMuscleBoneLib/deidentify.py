"""Remove patient identifiers from results before they leave the site.

:func:`deidentify` returns a copy of a :class:`~CTMuscleBoneLib.results.Results`
without patient identifiers; the report (``write_report(..., deidentify=True)``, CLI
``--deidentify``) and the DICOM writers use it.

What is removed
---------------
* The identifying header fields of the CT (:data:`IDENTIFIER_FIELDS`: patient name,
  patient ID, other IDs, birth date, accession number, institution name and address,
  physicians and operators, station name, study ID, study / series / acquisition dates
  and times, series description, study / series / frame-of-reference / SOP instance
  UIDs, the source path), wherever their values appear in the results' text
  (warnings, notes, flags, methods, provenance): :func:`identifiers` lists them.
* The paths of the input CT and label files (a folder or file name often carries the
  patient's name or ID): replaced by :data:`REMOVED`. Their SHA-256 checksums are
  kept: a one-way checksum does not reveal the patient but lets whoever holds the
  original files check which input a report came from.
* Anything shaped like a DICOM UID (``1.2.840....``; four or more dot-separated
  numbers) in the results' text.

What is kept
------------
Sex, age, height and weight (``Provenance.patient``): the T-scores, Z-scores, SMI and
sarcopenia cut-offs need them, and on their own they do not identify a patient (the
DICOM basic confidentiality profile, PS3.15 Annex E, has options to retain patient
characteristics). The analysis time (``created_utc``: when CTMuscleBone ran, not when
the patient was scanned), the scanner geometry, models and coefficient files are kept.
``Results.artifacts`` (images, projections, models in memory) hold no header fields and
are shared with the copy, not copied.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from .image import CTMetadata
from .results import Provenance, ResultRow, Results

#: What replaces a removed identifier.
REMOVED = "[removed]"
#: The note a de-identified Results carries in its provenance.
DEIDENTIFIED_NOTE = ("de-identified: patient name, IDs, birth date, accession, institution, "
                     "dates, UIDs and input paths removed; sex, age, height and weight kept")
#: CTMetadata fields that identify a patient, a study or a site (those that exist on the
#: CTMetadata of this version are used; the names follow the DICOM attributes of the
#: PS3.15 Annex E basic profile). Sex, age, height and weight are not among them.
IDENTIFIER_FIELDS: tuple[str, ...] = (
    "patient_name", "patient_id", "other_patient_ids", "patient_birth_date",
    "patient_address", "accession_number", "institution_name", "institution_address",
    "referring_physician_name", "performing_physician_name", "operators_name",
    "station_name", "study_id", "study_date", "study_time", "series_date", "series_time",
    "acquisition_date", "acquisition_time", "content_date", "study_description",
    "series_description", "study_instance_uid", "series_instance_uid",
    "frame_of_reference_uid", "sop_instance_uids", "source",
)
#: Readable names of the identifying fields shown in a report header.
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("patient_name", "Patient name"), ("patient_id", "Patient ID"),
    ("patient_birth_date", "Birth date"), ("accession_number", "Accession number"),
    ("institution_name", "Institution"), ("study_date", "Study date"),
    ("study_description", "Study"), ("series_description", "Series"),
)
#: A DICOM UID: digits in four or more dot-separated groups (PS3.5 section 9).
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")
#: Identifier values shorter than this are not searched for in free text (one or two
#: characters would remove unrelated text).
_MIN_SCRUB_CHARS = 3


def identifiers(metadata: CTMetadata | None) -> dict[str, str]:
    """The identifying header values of a CT, {field: text}, for the fields that exist
    on ``metadata`` and are set (sequences joined with ', ')."""
    if metadata is None:
        return {}
    out: dict[str, str] = {}
    for name in IDENTIFIER_FIELDS:
        v = getattr(metadata, name, None)
        if v is None or v == "" or v == ():
            continue
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        out[name] = str(v)
    return out


def deidentify_metadata(metadata: CTMetadata) -> CTMetadata:
    """A copy of ``metadata`` with every identifying field (:data:`IDENTIFIER_FIELDS`)
    set to None; sex, age, height, weight and acquisition facts kept."""
    names = {f.name for f in fields(metadata)} & set(IDENTIFIER_FIELDS)
    scrub = scrubber(list(identifiers(metadata).values()))
    return replace(metadata, notes=tuple(scrub(n) for n in metadata.notes),
                   **{n: None for n in names})


def deidentify(results: Results, metadata: CTMetadata | None = None) -> Results:
    """A copy of ``results`` without patient identifiers (see the module docstring).

    Parameters
    ----------
    results : Results
        Not modified.
    metadata : CTMetadata, optional
        The CT's header facts: their identifying values (:func:`identifiers`) are
        removed wherever they appear in the results' text.

    Returns
    -------
    Results
        Rows, warnings, unknown labels and provenance copied with identifiers replaced
        by :data:`REMOVED`; the provenance notes end with :data:`DEIDENTIFIED_NOTE`.
    """
    prov = results.provenance
    secrets = list(identifiers(metadata).values())
    secrets += [p for p in (prov.input_ct, prov.input_labels) if p]
    scrub = scrubber(secrets)
    new_prov = Provenance(**{f.name: _scrub_any(copy.deepcopy(getattr(prov, f.name)), scrub)
                             for f in fields(Provenance)})
    new_prov.patient = dict(prov.patient)  # sex, age, height, weight: kept as they are
    for name in ("input_ct", "input_labels"):
        if getattr(prov, name):
            setattr(new_prov, name, REMOVED)
    if DEIDENTIFIED_NOTE not in new_prov.notes:
        new_prov.notes.append(DEIDENTIFIED_NOTE)
    rows = [ResultRow(r.structure, r.quantity, _scrub_any(r.value, scrub), r.unit,
                      scrub(r.method), [scrub(f) for f in r.flags]) for r in results.rows]
    return Results(rows=rows, provenance=new_prov,
                   unknown_labels={k: scrub(v) for k, v in results.unknown_labels.items()},
                   warnings=[scrub(w) for w in results.warnings],
                   artifacts=dict(results.artifacts))


def scrubber(secrets: list[str]) -> Callable[[str], str]:
    """A function replacing the secrets (longest first) and DICOM UIDs in a text."""
    words = sorted({s.strip() for s in secrets if len(s.strip()) >= _MIN_SCRUB_CHARS},
                   key=len, reverse=True)
    pattern = (re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)",
                          re.IGNORECASE) if words else None)

    def scrub(text: str) -> str:
        if not isinstance(text, str):
            return text
        if pattern is not None:
            text = pattern.sub(REMOVED, text)
        return _UID.sub(REMOVED, text)

    return scrub


def _scrub_any(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` with every string in it (nested lists and dicts too) scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_any(v, scrub) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_any(v, scrub) for v in value)
    if isinstance(value, dict):
        return {k: _scrub_any(v, scrub) for k, v in value.items()}
    return value
