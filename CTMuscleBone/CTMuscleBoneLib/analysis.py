"""The measurement pipeline: CT + label map -> :class:`~CTMuscleBoneLib.results.Results`.

This is the step that runs again after a clinician edits the segmentation: it takes a
CT and a label map on the CT grid and computes every measurement the label map allows
(muscles, lean mass and SMI; bone density when bones are labelled), each as result
rows with units, methods and flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import alm as alm_mod
from .anatomy import structure
from .calibration.model import Calibration
from .density_models import DENSITY_MODELS
from .errors import InputError, NotMeasurableError
from .image import CTImage, LabelMap
from .muscle import group_totals, measure_muscles, muscle_rows
from .progress import ProgressCallback, no_progress
from .results import Provenance, Results


@dataclass
class MeasureOptions:
    """What to measure and with which models.

    Attributes
    ----------
    sex : {'M', 'F'} or None
        Patient sex (overrides the DICOM header).
    height_m : float or None
        Patient height in metres (overrides DICOM PatientSize).
    age_years : float or None
    density_model : str
        Muscle density model: 'constant' (1.06 g/cm3) or 'hu_linear'.
    alm_model : str or None
        Path of an ALM model JSON; None = shipped unvalidated default.
    criteria : str
        Sarcopenia criteria: 'awgs2019' or 'ewgsop2'.
    calibration : str
        HU -> BMD calibration: 'auto' (phantom when ``phantom`` is given, internal when
        ``references`` is given, else none: HU only), 'phantom', 'internal' (bundled
        unvalidated reference values unless ``references``) or 'none'.
    phantom : str or None
        Calibration phantom definition: bundled name ('B-MAS200', 'Mindways Model 3',
        'QRM-BDC') or a JSON file.
    references : str or None
        Reference-tissue table for internal calibration (None: bundled default).
    bones : bool
        Measure bone density when femurs or vertebrae are labelled.
    notes : list of str
        Notes on how options were read (e.g. a height given in cm), copied into the
        results' warnings.
    """

    sex: str | None = None
    height_m: float | None = None
    age_years: float | None = None
    density_model: str = "constant"
    alm_model: str | None = None
    criteria: str = "awgs2019"
    calibration: str = "auto"
    phantom: str | None = None
    references: str | None = None
    bones: bool = True
    notes: list[str] = field(default_factory=list)


def measure_case(
    ct: CTImage,
    labels: LabelMap,
    options: MeasureOptions | None = None,
    progress: ProgressCallback = no_progress,
    provenance: Provenance | None = None,
) -> Results:
    """Measure everything a labelled CT allows.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap
        On the CT grid (use :func:`CTMuscleBoneLib.io_labels.read_labels`, which
        resamples or refuses).
    options : MeasureOptions
    progress : callable
        ``progress(fraction, message)``.
    provenance : Provenance, optional
        Filled in further (models, coefficients) and attached to the results.

    Returns
    -------
    Results
    """
    options = options or MeasureOptions()
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(
            "The label map is not on the CT's voxel grid; read it with read_labels(), "
            "which resamples it when both share physical space."
        )
    if options.density_model not in DENSITY_MODELS:
        raise InputError(
            f"Unknown density model '{options.density_model}'; choose one of "
            f"{', '.join(DENSITY_MODELS)}."
        )
    if options.criteria not in alm_mod.CRITERIA:
        raise InputError(
            f"Unknown sarcopenia criteria '{options.criteria}'; choose one of "
            f"{', '.join(alm_mod.CRITERIA)}."
        )
    results = Results(provenance=provenance or Provenance())
    results.unknown_labels = dict(labels.unknown)
    results.provenance.label_source = results.provenance.label_source or labels.source
    results.provenance.ct_geometry = ct.geometry.describe()
    results.warnings.extend(getattr(labels, "notes", ()))
    results.warnings.extend(ct.metadata.notes)
    results.warnings.extend(options.notes)

    present = labels.present_keys()
    if not present:
        raise InputError(
            "The label map contains no structure CTMuscleBone measures "
            f"(unknown labels: {', '.join(labels.unknown.values()) or 'none'})."
        )
    sex = alm_mod.normalise_sex(options.sex or ct.metadata.patient_sex)
    height_m = options.height_m if options.height_m is not None else ct.metadata.patient_height_m

    # --- muscles, lean mass, SMI -----------------------------------------------------
    density = DENSITY_MODELS[options.density_model]
    muscle_keys = [k for k in present if structure(k).group == "muscle"]
    if muscle_keys:
        progress(0.1, f"measuring {len(muscle_keys)} muscle structure(s)")
        measures = measure_muscles(ct, labels, density)
        rows = muscle_rows(measures, density)
        if not density.validated:
            for r in rows:
                if r.quantity in ("mass", "lean_mass"):
                    r.flags.append(f"unvalidated: density model {density.name}")
        results.extend(rows)
        model = alm_mod.load_alm_model(options.alm_model)
        results.provenance.coefficients.append(model.provenance_entry())
        results.provenance.coefficients.append(
            {"kind": "muscle density", "name": density.name, "description": density.description}
        )
        results.extend(alm_mod.alm_rows(group_totals(measures), model, height_m, sex,
                                        alm_mod.CRITERIA[options.criteria]))
    else:
        results.warnings.append("no muscle labelled: muscle mass and SMI not measured")

    # --- bones ----------------------------------------------------------------------
    femurs = [k for k in present if k.startswith("femur_")]
    vertebrae = [k for k in present if k.startswith("vertebrae_L")]
    if options.bones and (femurs or vertebrae):
        progress(0.4, f"calibrating HU to BMD ({options.calibration})")
        calibration = choose_calibration(ct, labels, options, results)
        results.provenance.coefficients.append(calibration_provenance(calibration))
        if femurs:
            from .femur import measure_femurs

            progress(0.5, f"femoral BMD ({', '.join(femurs)})")
            femur_out = measure_femurs(ct, labels, calibration)
            results.extend(femur_out.rows)
            results.artifacts["femur"] = femur_out
        if vertebrae:
            from .spine.measure import measure_spine

            progress(0.8, f"lumbar BMD ({', '.join(vertebrae)})")
            results.extend(measure_spine(ct, labels, calibration))
    progress(1.0, "measurements done")
    return results


def choose_calibration(
    ct: CTImage, labels: LabelMap, options: MeasureOptions, results: Results
) -> Calibration:
    """The calibration ``options.calibration`` asks for; 'auto' falls back with a warning.

    'auto': phantom calibration when a phantom definition is given; internal calibration
    when a site's reference-tissue table is given; otherwise, and when those are
    refused, no calibration (HU only). The bundled internal reference values are an
    unvalidated default, so 'auto' never uses them: ask for ``internal`` explicitly.
    Every fallback is written to the warnings. An explicitly requested method that is
    refused raises its error.
    """
    from .calibration.api import calibrate

    method = options.calibration
    if method not in ("auto", "phantom", "internal", "none"):
        raise InputError(
            f"Unknown calibration '{method}': use auto, phantom, internal or none."
        )
    if method != "auto":
        return calibrate(ct, labels, method, phantom=options.phantom,
                         references=options.references)
    rods_labelled = any(k.startswith("calibration_rod_") for k in labels.present_keys())
    attempts: list[str] = []
    if options.phantom:
        attempts.append("phantom")
    elif rods_labelled:
        results.warnings.append(
            "calibration rods are labelled but no phantom definition was given (--phantom); "
            "phantom calibration skipped"
        )
    if options.references:
        attempts.append("internal")
    for m in attempts:
        try:
            cal = calibrate(ct, labels, m, phantom=options.phantom,
                            references=options.references)
        except NotMeasurableError as exc:
            results.warnings.append(f"{m} calibration refused: {exc}")
            continue
        results.warnings.append(f"calibration: {cal.method_text()}")
        return cal
    results.warnings.append(
        "no calibration: bone values are reported in HU only. For BMD give --phantom NAME "
        "(a calibration phantom in the scan), --references FILE (your site's reference-tissue "
        "table), or --calibration internal (bundled, UNVALIDATED reference values)"
    )
    return Calibration.none("no calibration available: HU values only")


def calibration_provenance(cal: Calibration) -> dict[str, object]:
    """What the provenance records about a calibration."""
    return {
        "kind": "HU-to-BMD calibration",
        "method": cal.method,
        "material": cal.material,
        "slope_mg_cm3_per_hu": cal.slope_mg_cm3_per_hu,
        "intercept_mg_cm3": cal.intercept_mg_cm3,
        "r": cal.r,
        "n_points": cal.n_points,
        "description": cal.description,
        "points": [list(p) for p in cal.points],
        "warnings": list(cal.warnings),
    }
