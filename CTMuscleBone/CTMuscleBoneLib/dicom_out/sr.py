"""DICOM SR measurement report (TID 1500, Comprehensive 3D SR) of a Results, with highdicom.

Layout (one Measurement Group per result structure, in the order of the rows):

* a structure that is a segment of the SEG: TID 1411 Volumetric ROI group referring to
  the segment (ReferencedSegment: SEG SOP instance, segment number, source series),
  with the structure's SNOMED CT code (and laterality) as finding site;
* any other structure (group totals such as ``lower_limb_total``, ``patient``,
  ``lumbar_L1_L4``, a structure without voxels): TID 1501 group, tracking identifier
  = the readable name;
* numeric rows (value not None) whose unit has a UCUM code (:data:`codes.UCUM_UNITS`)
  are TID 300 Measurements (NUM) with that unit; the value is stored in full
  precision (FloatingPointValue) besides the 16-character decimal string;
* text rows (categories: ``osteopenia``, ``yes``) are qualitative evaluations (CODE)
  whose value is a local ``99CTMB`` code with the text as meaning;
* rows that could not be measured are TEXT items (concept ``99CTMB``
  ``not_measurable``) whose text is ``<quantity>: <reason>``; a numeric row whose unit
  has no UCUM code is a TEXT item ``<quantity>: <value> <unit>``;
* warning flags of a row (``partial: ...``, ``unvalidated: ...``) are TEXT items
  (``99CTMB`` ``warning``) ``<quantity>: <flags>``.
* the case's warnings (``Results.warnings``; a synthetic model's clinical-use warning
  first) are TEXT items (``99CTMB`` ``warning``) of the report's TID 1500 Qualitative
  Evaluations container (UMLS C0034375).

Concept names: :func:`codes.quantity_concept` (DCM / SNOMED CT where PS3.16 has one,
else ``99CTMB``); the SR's CodingSchemeIdentificationSequence names ``99CTMB``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..anatomy import BY_KEY
from ..results import ResultRow, Results, display_name
from . import codes
from .seg import SYNTHETIC_TAG, SegmentInfo
from .source import UTF8_CHARACTER_SET, needs_utf8

#: Series number of the SR (a CTMuscleBone choice).
SR_SERIES_NUMBER = 9003
#: Local concepts of the TEXT items.
WARNING_CONCEPT = codes.local_code("warning", "Warning")
UNMAPPED_CONCEPT = codes.local_code("value_without_ucum_unit", "Value without UCUM unit")
#: TID 1500 row "Qualitative Evaluations" (UMLS C0034375): the case-level warnings
#: (a synthetic segmentation model first) as TEXT items of :data:`WARNING_CONCEPT`.
QUALITATIVE_EVALUATIONS: codes.Code = ("C0034375", "UMLS", "Qualitative Evaluations")


def _case_evaluations(warnings: list[str]) -> Any:
    """The report-level Qualitative Evaluations container holding ``warnings``."""
    import highdicom as hd
    from highdicom.sr import RelationshipTypeValues as Rel

    container = hd.sr.ContainerContentItem(
        name=_coded(QUALITATIVE_EVALUATIONS), relationship_type=Rel.CONTAINS)
    container.ContentSequence = [
        hd.sr.TextContentItem(name=_coded(WARNING_CONCEPT), value=w,
                              relationship_type=Rel.CONTAINS) for w in warnings]
    return container


def _character_set(seg: Any, results: Results, extra: list[str]) -> dict[str, Any]:
    """``specific_character_set`` for the SR: UTF-8 when the SEG (patient, study) or
    any text of the report has non-ASCII characters; else none (ASCII, the default)."""
    if seg.get("SpecificCharacterSet"):
        return {"specific_character_set": seg.SpecificCharacterSet}
    texts = [*extra, *(t for r in results.rows
                       for t in (r.structure, r.quantity, str(r.value), r.unit, *r.flags))]
    return {"specific_character_set": UTF8_CHARACTER_SET} if needs_utf8(texts) else {}


def _coded(code: tuple[str, str, str]) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def _numeric(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _numeric(value.item())
    return None


def _group_rows(results: Results) -> dict[str, list[ResultRow]]:
    groups: dict[str, list[ResultRow]] = {}
    for r in results.rows:
        groups.setdefault(r.structure, []).append(r)
    return groups


def build_sr(results: Results, seg: Any, segments: list[SegmentInfo], source_series_uid: str,
             series_uid: str, sop_uid: str, deidentify: bool = False,
             model_warning: str | None = None, source_images: Sequence[Any] = ()) -> Any:
    """Build the SR dataset.

    Parameters
    ----------
    results : Results
        The rows to report (already de-identified when ``deidentify``).
    seg : highdicom.seg.Segmentation
        The SEG the volumetric groups refer to (also the SR's evidence: the patient and
        study modules are copied from it).
    segments : list of SegmentInfo
    source_series_uid : str
        SeriesInstanceUID of the SEG's source CT series.
    series_uid, sop_uid : str
        UIDs of the SR.
    model_warning : str, optional
        The clinical-use warning of a synthetic (demo) segmentation model: it opens the
        report's case warnings and the series description says so.
    source_images : sequence of pydicom.Dataset
        The CT slice headers the SEG was made on: listed in the SR's evidence beside the
        SEG, so that a reader that loads an SR's sources (dcmqi, QuantitativeReporting)
        finds the CT, not only the SEG.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
    """
    import highdicom as hd
    from highdicom.sr import RelationshipTypeValues as Rel

    by_key = {s.key: s for s in segments}
    observer = hd.sr.ObserverContext(
        observer_type=_coded(("121007", "DCM", "Device")),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="CTMuscleBone", manufacturer_name="CTMuscleBone",
            model_name=f"CTMuscleBone {__version__}"),
    )
    context = hd.sr.ObservationContext(observer_device_context=observer)
    algorithm = hd.sr.AlgorithmIdentification(name="CTMuscleBone", version=__version__)
    groups = []
    for structure, rows in _group_rows(results).items():
        measurements, evaluations, texts = [], [], []
        for r in rows:
            concept = _coded(codes.quantity_concept(r.quantity))
            value = _numeric(r.value)
            if r.value is None or (value is None and isinstance(r.value, float)):
                reason = "; ".join(f.partition(":")[2].strip() for f in r.flags
                                   if f.startswith("not_measurable")) or "not measured"
                texts.append((codes.NOT_MEASURABLE_REASON, f"{r.quantity}: {reason}"))
                other = [w for w in r.warnings if not w.startswith("not_measurable")]
                if other:
                    texts.append((WARNING_CONCEPT, f"{r.quantity}: {'; '.join(other)}"))
                continue
            if value is not None:
                unit = codes.ucum_unit(r.unit)
                if unit is None:
                    texts.append((UNMAPPED_CONCEPT, f"{r.quantity}: {value} {r.unit}"))
                    continue
                derivation = codes.DERIVATIONS.get(r.quantity)
                measurements.append(hd.sr.Measurement(
                    name=concept, value=value, unit=_coded(unit),
                    derivation=_coded(derivation) if derivation else None,
                    algorithm_id=algorithm))
            else:
                evaluations.append(hd.sr.QualitativeEvaluation(
                    name=concept, value=_coded(codes.category_code(r.quantity, str(r.value)))))
            if r.warnings:
                texts.append((WARNING_CONCEPT, f"{r.quantity}: {'; '.join(r.warnings)}"))
        st = BY_KEY.get(structure)
        sites = ([hd.sr.FindingSite(
            anatomic_location=_coded(st.snomed_type),
            laterality=_coded(st.snomed_laterality) if st.snomed_laterality else None)]
            if st is not None else None)
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=display_name(structure))
        common = dict(tracking_identifier=tracking, finding_sites=sites,
                      measurements=measurements or None,
                      qualitative_evaluations=evaluations or None)
        if structure in by_key:
            group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=by_key[structure].number,
                    source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid)),
                **common)
        else:
            group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
        for name, text in texts:
            group[0].ContentSequence.append(hd.sr.TextContentItem(
                name=_coded(name), value=text, relationship_type=Rel.CONTAINS))
        groups.append(group)
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_coded(codes.PROCEDURE_CT),
        imaging_measurements=groups,
        title=_coded(codes.REPORT_TITLE),
    )
    case_warnings = list(dict.fromkeys(
        ([model_warning] if model_warning else []) + [w for w in results.warnings if w]))
    if case_warnings:
        report[0].ContentSequence.append(_case_evaluations(case_warnings))
    scheme = hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=codes.LOCAL_SCHEME, name=codes.LOCAL_SCHEME_NAME,
        responsible_organization=codes.LOCAL_SCHEME_ORGANIZATION)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *source_images],
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="CTMuscleBone",
        is_complete=True,
        series_description="CTMuscleBone measurements" + (
            f" ({SYNTHETIC_TAG})" if model_warning else ""),
        coding_schemes=[scheme],
        **_character_set(seg, results, case_warnings),
    )
    if deidentify:
        from .source import mark_deidentified

        mark_deidentified(sr)
    return sr
