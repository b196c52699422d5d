"""The options shared by every case of a batch, and their fingerprint for resuming.

Besides the measurement options, a batch decides the per-case outputs beyond
``results.*`` (the report, the DICOM SEG and SR) and whether they are de-identified:
these are part of the fingerprint too, so a rerun that asks for other outputs
recomputes the cases.

The measurement options are kept as :class:`~CTMuscleBoneLib.pipeline.MeasureOptions`
keyword arguments (text, numbers, paths), not as a built ``MeasureOptions``: they can be
written into each case's completion marker, compared on a rerun and sent to other
processes or machines as they are; each case builds its own ``MeasureOptions`` from
them plus its own patient facts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline import MeasureOptions, SegmentOptions

#: MeasureOptions fields a batch may set for all cases (the per-case facts sex,
#: height_m, age_years, weight_kg included: a case's own values override them).
MEASURE_FIELDS = (
    "sex", "height_m", "age_years", "weight_kg", "density_model", "alm_model", "criteria",
    "calibration", "phantom", "references", "calibration_file",
    "fixed_slope_mg_cm3_per_hu", "fixed_intercept_mg_cm3", "fixed_material", "bones",
    "notes", "dxa_model", "bmd_reference", "kvp",
)
#: Fields that may name a file: the file's checksum is part of the fingerprint, so a
#: changed model or calibration file recomputes the cases.
FILE_FIELDS = ("alm_model", "phantom", "references", "calibration_file", "dxa_model",
               "bmd_reference")


@dataclass(frozen=True)
class BatchOptions:
    """What to do with every case.

    Attributes
    ----------
    measure : dict
        :class:`~CTMuscleBoneLib.pipeline.MeasureOptions` keyword arguments (keys of
        :data:`MEASURE_FIELDS`; values text, numbers, booleans, lists of text or None).
    segment : SegmentOptions
        Model for the cases without a label map.
    label_format : str
        How label values map to structures (``io_labels.LABEL_FORMATS``; default auto).
    names : str or None
        JSON or CSV of label value -> structure name for every labelled case (as
        ``measure --names``); None = the label maps' own sidecars / the label format.
    report : bool
        Also write each case's ``report.html`` and ``report.pdf``
        (:func:`CTMuscleBoneLib.pipeline.write_report`).
    dicom : bool
        Also write each case's ``segmentation.dcm`` and ``measurements_sr.dcm``
        (:func:`CTMuscleBoneLib.pipeline.write_dicom`; ``ct/`` when the CT was not a
        DICOM series or with ``deidentify``).
    deidentify : bool
        No patient identifiers in any output of a case (:mod:`CTMuscleBoneLib.deidentify`)
        nor in the cohort tables (input paths left out); the case ids are kept as given.

    Raises
    ------
    InputError
        On construction: an unknown field, a value that is not plain data, or options
        ``MeasureOptions`` refuses (checked once here, before any case runs).
    """

    measure: dict[str, Any] = field(default_factory=dict)
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    label_format: str = "auto"
    names: str | None = None
    report: bool = False
    dicom: bool = False
    deidentify: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.measure) - set(MEASURE_FIELDS))
        if unknown:
            raise InputError(f"Unknown batch measure option(s) {', '.join(unknown)}; use "
                             f"{', '.join(MEASURE_FIELDS)}.")
        try:
            json.dumps(self.measure, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError("Batch measure options must be text, numbers, booleans or "
                             f"None (paths as text): {exc}.") from exc
        from ..io_labels import LABEL_FORMATS

        if self.label_format not in LABEL_FORMATS:
            raise InputError(f"Unknown label format '{self.label_format}'; use one of "
                             f"{', '.join(LABEL_FORMATS)}.")
        if self.names is not None and not isinstance(self.names, str):
            raise InputError("The batch's label names file must be given as a path (text).")
        MeasureOptions(**self.measure)  # refuse bad options before any case runs

    def outputs(self) -> dict[str, bool]:
        """The per-case output choices (part of the fingerprint)."""
        return {"report": bool(self.report), "dicom": bool(self.dicom),
                "deidentify": bool(self.deidentify)}

    def require_output_packages(self) -> None:
        """Raise :class:`~CTMuscleBoneLib.errors.MissingDependencyError` (naming the pip
        extra) when the report or DICOM packages are missing here, before any case runs."""
        if self.report:
            from ..report.write import require_package  # the report's own check and message

            require_package("matplotlib", "report's images")
            require_package("reportlab", "PDF report")
        if self.dicom:
            from ..dicom_out import require_dicom

            require_dicom()

    def measure_options(self, overrides: dict[str, Any] | None = None) -> MeasureOptions:
        """The ``MeasureOptions`` of one case: the batch's, overridden by ``overrides``
        (its own facts); notes of both are kept."""
        kwargs = dict(self.measure)
        for key, value in (overrides or {}).items():
            if key == "notes":
                kwargs["notes"] = list(kwargs.get("notes") or []) + list(value)
            elif value is not None:
                kwargs[key] = value
        return MeasureOptions(**kwargs)

    def describe(self) -> dict[str, Any]:
        """Plain-data description (written into markers and cases.json)."""
        return {"measure": dict(sorted(self.measure.items())),
                "segment": asdict(self.segment), "label_format": self.label_format,
                "names": self.names, "outputs": self.outputs()}


def _file_checksum(value: Any) -> str | None:
    from ..results import sha256_of_path

    if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
        return sha256_of_path(value)
    return None


def fingerprint(options: BatchOptions, overrides: dict[str, Any],
                segmented: bool) -> tuple[str, dict[str, Any]]:
    """SHA-256 of everything that decides a case's numbers, besides its input files.

    Parameters
    ----------
    options : BatchOptions
    overrides : dict
        The case's own facts (as given, before parsing).
    segmented : bool
        True when the case is segmented (its segmentation options count), False when
        it has a label map (the label format and names file count).

    Returns
    -------
    (str, dict)
        Hex digest and the plain-data description it was computed from.
    """
    described = {
        "measure": dict(sorted(options.measure.items())),
        "case": dict(sorted(overrides.items())),
        "outputs": options.outputs(),
    }
    sums = {k: _file_checksum(options.measure.get(k)) for k in FILE_FIELDS}
    if segmented:
        described["segment"] = asdict(options.segment)
    else:
        described["label_format"] = options.label_format
        if options.names is not None:
            described["names"] = options.names
            sums["names"] = _file_checksum(options.names)
    described["files"] = {k: v for k, v in sums.items() if v}
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), described
