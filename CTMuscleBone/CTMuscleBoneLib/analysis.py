"""The measurement pipeline: CT + label map -> :class:`~CTMuscleBoneLib.results.Results`.

This is the step that runs again after a clinician edits the segmentation: it takes a
CT and a label map on the CT grid and computes every measurement the label map allows
(muscles, lean mass and SMI; bone density when bones are labelled), each as result
rows with units, methods and flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from . import alm as alm_mod
from .anatomy import structure
from .calibration.definitions import PhantomDefinition
from .calibration.model import Calibration
from .density_models import DENSITY_MODELS
from .dxa.conversion import DXAConversionModel, load_dxa_model
from .dxa.references import ReferenceTable, load_reference
from .dxa.scores import ScoreContext
from .errors import InputError, NotMeasurableError
from .image import CTImage, LabelMap
from .muscle import group_names, group_totals, measure_muscles, muscle_rows
from .muscle_coverage import region_absence_reasons
from .muscle_l3 import l3_case_rows
from .progress import ProgressCallback, no_progress
from .results import Provenance, ResultRow, Results

Sex = Literal["M", "F"]
CalibrationMethod = Literal["auto", "phantom", "internal", "fixed", "none"]
DensityModelName = Literal["constant", "hu_linear"]
CriteriaName = Literal["awgs2019", "ewgsop2"]

#: Plausible ranges of the patient facts (outside: the value is a typo or a unit error).
AGE_RANGE_YEARS = (0.0, 130.0)
HEIGHT_RANGE_M = alm_mod.HEIGHT_RANGE_M
WEIGHT_RANGE_KG = (1.0, 500.0)
#: Plausible CT tube voltages, kVp (clinical scanners offer 70-150 kVp; outside: a typo).
KVP_RANGE = (60.0, 150.0)


@dataclass
class MeasureOptions:
    """What to measure and with which models.

    Attributes
    ----------
    sex : {'M', 'F'} or None
        Patient sex (overrides the DICOM header).
    height_m : float or None
        Patient height in metres (overrides DICOM PatientSize); 0.5-2.6 m.
    age_years : float or None
        Patient age in years (overrides the DICOM header); 0-130.
    density_model : {'constant', 'hu_linear'}
        Muscle density model: 'constant' (1.06 g/cm3) or 'hu_linear'.
    alm_model : path, ALMModel or None
        ALM model (a JSON file from ``fit-alm`` or a loaded :class:`~CTMuscleBoneLib.alm.ALMModel`);
        None = the shipped unvalidated default.
    criteria : {'awgs2019', 'ewgsop2'}
        Sarcopenia criteria.
    calibration : {'auto', 'phantom', 'internal', 'fixed', 'none'} or Calibration
        HU -> BMD calibration: 'auto' (a phantom found in the scan, the named one or any
        known one; else the physics-based phantomless calibration; else none: HU only),
        'phantom', 'internal' (physics-based, or the site table ``references``), 'fixed'
        (asynchronous: a
        line from ``calibration_file`` or the ``fixed_*`` coefficients), 'none', or a ready
        :class:`~CTMuscleBoneLib.calibration.model.Calibration` (e.g. the one of an
        earlier run, reused after an edit).
    phantom : str, path, PhantomDefinition or None
        Calibration phantom definition: bundled name ('B-MAS200', 'Mindways Model 3',
        'QRM-BDC'), a JSON file or a loaded definition.
    references : path or None
        A site's reference-tissue table for internal calibration (None: physics-based).
    calibration_file : path or None
        For 'fixed': a calibration saved from a phantom scan of the same scanner and
        protocol (``ctmusclebone calibrate``).
    fixed_slope_mg_cm3_per_hu, fixed_intercept_mg_cm3, fixed_material : float, float, str
        For 'fixed' without a file: the line BMD = slope x HU + intercept and its
        reference material ('K2HPO4' or 'HA').
    bones : bool
        Measure bone density when femurs or vertebrae are labelled.
    notes : list of str
        Notes on how options were read (e.g. a height given in cm), copied into the
        results' warnings.
    weight_kg : float or None
        Patient weight in kg (overrides DICOM PatientWeight); 1-500 kg. With the
        height it gives the BMI that the Martin 2013 L3 cut-offs depend on.
    muscle_mask : path, np.ndarray of bool (n0, n1, n2) or None
        Skeletal-muscle mask for the L3 muscle index (e.g. TotalSegmentator
        ``tissue_types`` skeletal_muscle; any grid of the CT's physical space).
    dxa_model : path, DXAConversionModel or None
        CT-aBMD -> DXA-equivalent aBMD model (a JSON file from ``fit-dxa`` or a loaded
        :class:`~CTMuscleBoneLib.dxa.conversion.DXAConversionModel`); None = the shipped
        identity default, unvalidated (no T-score, Z-score or %YAM: the aBMD is not on
        the DXA scale; categories 'indeterminate'). Read and checked on construction.
    kvp : float or None
        Tube voltage of the scan in kVp, for files whose header does not say it (NIfTI,
        NRRD); overrides the DICOM header (with a warning when they differ); 60-150.
        It decides the K2HPO4-to-hydroxyapatite ratio and whether the Pickhardt L1
        thresholds (made at 120 kVp) apply.
    bmd_reference : {'nhanes3', 'jsbmr2012'}, path or ReferenceTable
        Young-adult reference table and its criteria for T-scores, %YAM and the bone
        density category: 'nhanes3' (WHO 1994 on the T-score), 'jsbmr2012' (Japanese
        YAM, JSBMR 2012 on %YAM) or a site's reference JSON. Read and checked on
        construction.

    Raises
    ------
    InputError
        On construction, for a choice outside its Literal or an implausible age or height.
    """

    sex: Sex | None = None
    height_m: float | None = None
    age_years: float | None = None
    density_model: DensityModelName = "constant"
    alm_model: str | os.PathLike[str] | alm_mod.ALMModel | None = None
    criteria: CriteriaName = "awgs2019"
    calibration: CalibrationMethod | Calibration = "auto"
    phantom: str | os.PathLike[str] | PhantomDefinition | None = None
    references: str | os.PathLike[str] | None = None
    calibration_file: str | os.PathLike[str] | None = None
    fixed_slope_mg_cm3_per_hu: float | None = None
    fixed_intercept_mg_cm3: float | None = None
    fixed_material: str | None = None
    bones: bool = True
    notes: list[str] = field(default_factory=list)
    weight_kg: float | None = None
    muscle_mask: str | os.PathLike[str] | np.ndarray | None = None
    dxa_model: str | os.PathLike[str] | DXAConversionModel | None = None
    bmd_reference: str | os.PathLike[str] | ReferenceTable = "nhanes3"
    kvp: float | None = None

    def _check_fixed(self) -> None:
        """'fixed' needs a calibration file or all three coefficients (checked now)."""
        from .calibration.stored import fixed_calibration

        coefficients = (self.fixed_slope_mg_cm3_per_hu, self.fixed_intercept_mg_cm3,
                        self.fixed_material)
        if self.calibration_file is not None:
            if any(c is not None for c in coefficients):
                raise InputError("Give either a calibration file or fixed coefficients, "
                                 "not both.")
            if not Path(self.calibration_file).is_file():
                raise InputError(f"Calibration file not found: {self.calibration_file}")
            return
        if any(c is None for c in coefficients):
            raise InputError(
                "Calibration 'fixed' needs a calibration file (--calibration-file, made by "
                "`ctmusclebone calibrate` from a phantom scan of the same scanner and "
                "protocol) or slope, intercept and material (--slope, --intercept, "
                "--material).")
        fixed_calibration(*coefficients)  # raises on implausible values

    def __post_init__(self) -> None:
        if self.sex is not None:
            sex = alm_mod.normalise_sex(self.sex)
            if sex is None:
                raise InputError(f"Sex '{self.sex}' is not understood: give M or F.")
            self.sex = sex  # type: ignore[assignment]
        _check_range("age", self.age_years, AGE_RANGE_YEARS, "years")
        _check_range("height", self.height_m, HEIGHT_RANGE_M, "m")
        _check_range("weight", self.weight_kg, WEIGHT_RANGE_KG, "kg")
        _check_range("tube voltage", self.kvp, KVP_RANGE, "kVp")
        if isinstance(self.muscle_mask, (str, os.PathLike)) and not os.path.isfile(
                self.muscle_mask):
            raise InputError(f"Muscle mask file not found: {self.muscle_mask}")
        _check_choice("density model", self.density_model, tuple(DENSITY_MODELS))
        _check_choice("sarcopenia criteria", self.criteria, tuple(alm_mod.CRITERIA))
        if not isinstance(self.calibration, Calibration):
            _check_choice("calibration", self.calibration, get_args(CalibrationMethod))
        if self.calibration == "fixed":
            self._check_fixed()
        if not isinstance(self.alm_model, alm_mod.ALMModel):
            # read (and check) the file, or the shipped default, now, before any work
            self.alm_model = alm_mod.load_alm_model(self.alm_model)
        # bone scales: read (and check) the CT-to-DXA model and the reference table now
        self.dxa_model = load_dxa_model(self.dxa_model)
        self.bmd_reference = load_reference(self.bmd_reference)


def checked_ct(ct: CTImage) -> CTImage:
    """``ct`` after the CT input check: refused (InputError) or with its warnings in notes.

    The check (:func:`CTMuscleBoneLib.validation.check_ct`: modality, HU scale, spacing,
    non-finite voxels, thick slices, contrast, kVp, metal) runs once per image: the
    returned image is marked ``metadata.checked``; an image already marked is returned
    as it is. The voxels are not copied.
    """
    from dataclasses import replace

    from .validation import check_ct

    if ct.metadata.checked:
        return ct
    warnings = check_ct(ct)
    meta = replace(ct.metadata, notes=ct.metadata.notes + tuple(warnings), checked=True)
    return CTImage(ct.hu, ct.geometry, meta)


def _check_range(what: str, value: float | None, bounds: tuple[float, float], unit: str) -> None:
    if value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} '{value}' is not a number.") from None
    if not math.isfinite(v) or not bounds[0] < v <= bounds[1]:
        raise InputError(
            f"The {what} {value:g} {unit} is not plausible (expected {bounds[0]:g}-"
            f"{bounds[1]:g} {unit}); check the value and its unit."
        )


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"Unknown {what} '{value}'; choose one of {', '.join(choices)}.")


def misspelt_muscle_warnings(labels: LabelMap) -> dict[str, list[str]]:
    """Group totals that may lack a muscle because its label name looks misspelt.

    An unknown label name close to a muscle key (:func:`.io_labels.likely_misspelt`,
    e.g. 'rectus_femoris_lft') is not measured; every total that muscle would count in
    (:func:`.muscle.group_names`) is then low without it.

    Returns
    -------
    dict
        Group total name (``thigh_left``, ``lower_limb_total``, ...) -> warning texts.
    """
    from .io_labels import likely_misspelt

    out: dict[str, list[str]] = {}
    for value, guesses in likely_misspelt(labels.unknown).items():
        muscles = [g for g in guesses if structure(g).group == "muscle"]
        if not muscles:
            continue
        text = (f"label {value} '{labels.unknown[value]}' is not a known name (did you mean "
                f"{' or '.join(muscles)}?): if it is that muscle, it is left out and this "
                "total is low; correct the names table")
        for name in group_names(muscles[0]):
            out.setdefault(name, []).append(text)
    return out


def measure_case(
    ct: CTImage,
    labels: LabelMap,
    options: MeasureOptions | None = None,
    progress: ProgressCallback = no_progress,
    provenance: Provenance | None = None,
    *,
    reuse: Results | None = None,
    reuse_structures: frozenset[str] = frozenset(),
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
    reuse, reuse_structures : Results, set of str
        After an edit: femurs named in ``reuse_structures`` are not measured again;
        their rows (and projections) are copied from ``reuse``. Used by
        :func:`CTMuscleBoneLib.pipeline.remeasure`.

    Returns
    -------
    Results
        Rows, warnings and provenance; ``artifacts['calibration']`` holds the
        calibration used and ``artifacts['options']`` the options.

    Raises
    ------
    InputError
        The CT is not a usable CT in HU (see :func:`CTMuscleBoneLib.validation.check_ct`),
        the label map is not on its grid or holds nothing CTMuscleBone measures, the
        labelled structures show a wrong spacing, HU scale or label scheme
        (:func:`CTMuscleBoneLib.plausibility.apply_plausibility`), or no result row
        could be measured (a map read with the wrong label format, usually).
    """
    options = options or MeasureOptions()
    ct = with_stated_kvp(checked_ct(ct), options.kvp)
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(
            "The label map is not on the CT's voxel grid; read it with read_labels(), "
            "which resamples it when both share physical space."
        )
    from .label_layout import apply_layout
    from .plausibility import apply_plausibility

    # a structure whose HU or volume is anatomically impossible is left out (flagged);
    # a map wrong as a whole (another label scheme) is refused
    labels, _ = apply_plausibility(ct, labels)
    # a side or a level where its name does not put it is left out (flagged); a map whose
    # left and right are mirrored is refused
    labels, _ = apply_layout(labels)
    results = Results(provenance=provenance or Provenance())
    # (the same sentences are in labels.notes, added to the warnings below)
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
    results.provenance.patient = patient_provenance(ct, options)
    results.artifacts["options"] = options

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
        model = options.alm_model  # loaded by MeasureOptions
        assert isinstance(model, alm_mod.ALMModel)
        results.provenance.coefficients.append(model.provenance_entry())
        results.provenance.coefficients.append(
            {"kind": "muscle density", "name": density.name, "description": density.description}
        )
        totals = group_totals(measures)
        left_out = misspelt_muscle_warnings(labels)  # group name -> warnings
        for r in rows:
            if r.structure in left_out and r.quantity in ("volume", "mass", "lean_mass"):
                r.flags += [f"warning: {w}" for w in left_out[r.structure]]
        missing = [r for r in model.required_regions if f"{r}_total" not in totals]
        results.extend(alm_mod.alm_rows(
            totals, model, height_m, sex, alm_mod.CRITERIA[options.criteria],
            region_absence_reasons(labels, missing),
            incomplete=left_out.get(model.predictor.split("/", 1)[0], [])))
    else:
        results.warnings.append("no muscle labelled: muscle mass and SMI not measured")
    weight_kg = (options.weight_kg if options.weight_kg is not None
                 else ct.metadata.patient_weight_kg)
    l3_rows, l3_prov = l3_case_rows(ct, labels, options.muscle_mask, height_m, sex, weight_kg)
    results.extend(l3_rows)
    if l3_prov is not None:
        results.provenance.coefficients.append(l3_prov)

    # --- bones ----------------------------------------------------------------------
    femurs = [k for k in present if k.startswith("femur_")]
    vertebrae = [k for k in present if k.startswith("vertebrae_L")]
    if options.bones and (femurs or vertebrae):
        if not isinstance(options.calibration, Calibration):
            progress(0.4, f"calibrating HU to BMD ({options.calibration})")
        calibration = choose_calibration(ct, labels, options, results)
        results.artifacts["calibration"] = calibration
        entry = calibration_provenance(calibration)
        if calibration.method == "fixed" and options.calibration_file is not None:
            from .results import sha256_of_path

            entry["file"] = str(options.calibration_file)
            entry["file_sha256"] = sha256_of_path(options.calibration_file)
        results.provenance.coefficients.append(entry)
        scores = bone_score_context(ct, options)
        if femurs:
            progress(0.5, f"femoral BMD ({', '.join(femurs)})")
            _measure_femurs(ct, labels, calibration, results, reuse,
                            reuse_structures & set(femurs), scores)
        if vertebrae:
            from .spine.measure import analyse_spine, spine_rows

            progress(0.8, f"lumbar BMD ({', '.join(vertebrae)})")
            spine = analyse_spine(ct, labels, calibration)
            results.extend(spine_rows(spine, calibration, ct))
            results.artifacts["spine"] = spine  # ROIs and heights, for reports and Slicer
            _measure_lumbar_abmd(ct, labels, calibration, spine, results, scores)
    if not results.rows:  # a header-only results file is a silently empty result
        raise InputError(_nothing_measured_message(labels, present, options))
    _flag_contrast(ct, labels, results)
    progress(1.0, "measurements done")
    return results


def _nothing_measured_message(labels: LabelMap, present: list[str],
                              options: MeasureOptions) -> str:
    """Why a label map gave no result row, and what to do (for :func:`measure_case`).

    Muscles, femurs and lumbar vertebrae give rows; hip bones, the sacrum, fat,
    vessels and calibration rods only help (calibration, contrast, layout). A map
    whose known structures are all helpers, usually with many labels outside the
    anatomy table, was most often read with the wrong label format (a CTMuscleBone map
    read as TotalSegmentator, where its muscles become organs and a thigh muscle
    "aorta"), so the run is refused rather than written as an empty table.
    """
    from .plausibility import sidecar_conflict_note

    bones = [k for k in present if k.startswith(("femur_", "vertebrae_L"))]
    unknown = sorted(set(labels.unknown.values()))
    shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                      else "")
    what = (f"Nothing was measured: the label map ({labels.source}) holds "
            f"{', '.join(present)}, none of which gives a measurement here (muscles, "
            "femurs and lumbar vertebrae are measured; hip bones, sacrum, fat, vessels and "
            "calibration rods only help)")
    if unknown:
        what += f", and {len(unknown)} label(s) outside the anatomy table ({shown})"
    if bones and not options.bones:
        return (f"{what}. Bone measurement is switched off; switch it on to measure "
                f"{', '.join(bones)}.")
    conflict = sidecar_conflict_note(labels)
    if conflict is not None:
        return (f"{what}. The label map was probably read with the wrong label format: "
                f"{conflict}")
    return (f"{what}. Check the label format (a CTMuscleBone map is 'canonical' or has a "
            "names file; a TotalSegmentator map 'totalseg') and the names file.")


def _flag_contrast(ct: CTImage, labels: LabelMap, results: Results) -> None:
    """The contrast rule on a contrast-enhanced scan (no correction is applied).

    Every HU- and BMD-based value keeps its number with a ``contrast:`` flag; every
    category computed from such a value (ACR, WHO/JSBMR, Pickhardt, L3 muscle
    attenuation) is ``"indeterminate"``, its flag naming the evidence and asking for a
    non-contrast scan (:func:`CTMuscleBoneLib.contrast.make_categories_indeterminate`).
    """
    from .contrast import detect_contrast, make_categories_indeterminate

    finding = detect_contrast(ct, labels)
    results.artifacts["contrast"] = finding
    results.provenance.notes.append(
        "contrast: " + {True: "enhanced", False: "not enhanced", None: "unknown"}[
            finding.enhanced] + (f" ({'; '.join(finding.evidence)})" if finding.evidence
                                 else " (no header tag, no labelled aorta or IVC)"))
    if not finding.enhanced:
        return
    if not any("Contrast agent stated" in w for w in results.warnings):
        results.warnings.append(
            f"Contrast-enhanced scan ({'; '.join(finding.evidence)}): HU- and BMD-based "
            "values read high and no correction is applied (docs/calibration.md).")
    changed = make_categories_indeterminate(results.rows, finding)
    if changed:
        results.warnings.append(
            "Contrast-enhanced scan: no category from HU or BMD ("
            + ", ".join(sorted({r.quantity for r in changed})) + " indeterminate); their "
            "thresholds were made on unenhanced CT. Measure a non-contrast scan (or the "
            "unenhanced phase) for the categories.")


def choose_calibration(
    ct: CTImage, labels: LabelMap, options: MeasureOptions, results: Results
) -> Calibration:
    """The calibration ``options.calibration`` asks for; 'auto' falls back with a warning.

    'auto': (1) phantom calibration with the phantom found in the scan: the named one
    (``options.phantom``) or, when none is named, the best fit among every known
    definition (:func:`~CTMuscleBoneLib.calibration.detect.detect_phantom`); (2) else
    internal calibration: the site's table when ``options.references`` is given, else
    the physics-based phantomless calibration (flagged with its expected error); (3)
    else no calibration (HU only). Every step not taken is written to the warnings. An
    explicitly requested method that is refused raises its error.
    """
    from .calibration.api import calibrate
    from .calibration.detect import detect_phantom

    method = options.calibration
    if isinstance(method, Calibration):  # given (e.g. reused after an edit)
        results.warnings.append(f"calibration (given): {method.method_text()}")
        return method
    if method not in get_args(CalibrationMethod):
        raise InputError(
            f"Unknown calibration '{method}': use auto, phantom, internal, fixed or none."
        )
    if method == "fixed":
        from .calibration.stored import fixed_calibration, load_calibration

        if options.calibration_file is not None:
            return load_calibration(options.calibration_file, ct.metadata)
        return fixed_calibration(options.fixed_slope_mg_cm3_per_hu,  # type: ignore[arg-type]
                                 options.fixed_intercept_mg_cm3,  # type: ignore[arg-type]
                                 options.fixed_material)  # type: ignore[arg-type]
    if method != "auto":
        return calibrate(ct, labels, method, phantom=options.phantom,
                         references=options.references)
    try:
        if options.phantom:
            cal = calibrate(ct, labels, "phantom", phantom=options.phantom)
        else:
            cal = detect_phantom(ct, labels)
        results.warnings.append(f"calibration: {cal.method_text()}")
        return cal
    except NotMeasurableError as exc:
        results.warnings.append(f"phantom calibration not used: {exc}")
    try:
        cal = calibrate(ct, labels, "internal", references=options.references)
    except NotMeasurableError as exc:
        results.warnings.append(f"internal calibration refused: {exc}")
    else:
        results.warnings.append(f"calibration: {cal.method_text()}"
                                + (f"; {cal.expected_error}" if cal.expected_error else ""))
        return cal
    results.warnings.append(
        "no calibration: bone values are reported in HU only (no calibration phantom found "
        "and the phantomless calibration was refused; see the warnings above). For BMD give "
        "--phantom NAME or a phantom definition file, or --calibration fixed with a saved "
        "line of this scanner")
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
        "expected_error": cal.expected_error or None,
        "details": dict(cal.details),
    }


def _measure_lumbar_abmd(ct: CTImage, labels: LabelMap, calibration: Calibration,
                         spine: dict, results: Results, scores: ScoreContext) -> None:
    """DXA-like AP-projection aBMD of L1-L4 (spine/abmd.py) into ``results``.

    Vertebrae with a confident fracture grade keep their own row but are left out of
    the combined L1-L4 value, as DXA reading rules exclude fractured levels.
    """
    from .spine.abmd import lumbar_abmd_rows
    from .spine.measure import excluded_as_fractured

    exclude = {k: f"fractured (Genant grade {a.fracture.grade})"
               for k, a in spine.items() if excluded_as_fractured(a)}
    rows, projections = lumbar_abmd_rows(ct, labels, calibration, scores, exclude=exclude)
    results.extend(rows)
    results.artifacts["lumbar_abmd"] = projections
    known = {(c.get("kind"), c.get("name")) for c in results.provenance.coefficients}
    for entry in (scores.model.provenance_entry(), scores.reference.provenance_entry()):
        if (entry.get("kind"), entry.get("name")) not in known:
            results.provenance.coefficients.append(entry)


def bone_score_context(ct: CTImage, options: MeasureOptions) -> ScoreContext:
    """CT-to-DXA model, reference table, sex and age (option, else DICOM header) for the
    DXA-scale rows of femur (and lumbar) aBMD."""
    from .dxa.scores import score_context

    return score_context(ct, options.dxa_model,  # type: ignore[arg-type]
                         options.bmd_reference, options.sex, options.age_years)


def _measure_femurs(ct: CTImage, labels: LabelMap, calibration: Calibration, results: Results,
                    reuse: Results | None, reuse_keys: set[str],
                    scores: ScoreContext | None = None) -> None:
    """Femoral BMD rows into ``results``; sides in ``reuse_keys`` are copied from ``reuse``.

    ``scores``: CT-to-DXA model, reference table, sex and age (default: shipped identity
    model, NHANES III, header sex and age); their provenance goes to ``results``.
    """
    from .femur import FemurOutput, measure_femurs

    out = FemurOutput()
    old = reuse.artifacts.get("femur") if reuse is not None else None
    keep = set(reuse_keys) if reuse is not None else set()
    if keep:
        for r in reuse.rows:  # type: ignore[union-attr]
            if r.structure in keep:
                out.rows.append(ResultRow(r.structure, r.quantity, r.value, r.unit, r.method,
                                          list(r.flags)))
        for side in ("left", "right"):
            if f"femur_{side}" in keep and old is not None:
                if side in old.projections:
                    out.projections[side] = old.projections[side]
                if side in old.landmarks:
                    out.landmarks[side] = old.landmarks[side]
    todo = [k for k in ("femur_left", "femur_right")
            if labels.value_of(k) is not None and k not in keep]
    if todo:
        fresh = measure_femurs(ct, labels, calibration, scores, keys=tuple(todo))
        out.provenance = fresh.provenance
        results.provenance.coefficients.extend(fresh.provenance)
        out.rows.extend(fresh.rows)
        out.projections.update(fresh.projections)
        out.landmarks.update(fresh.landmarks)
    elif old is not None:  # every femur reused: so are its provenance entries
        out.provenance = list(old.provenance)
        results.provenance.coefficients.extend(old.provenance)
    order = {"femur_left": 0, "femur_right": 1}
    out.rows.sort(key=lambda r: order.get(r.structure, 2))  # stable: keeps quantity order
    results.extend(out.rows)
    results.artifacts["femur"] = out


def with_stated_kvp(ct: CTImage, kvp: float | None) -> CTImage:
    """The CT with the tube voltage the user stated (``MeasureOptions.kvp``).

    The voxels are shared, not copied; the header's kVp, when it differs, is replaced
    and a note in the metadata says so.

    Parameters
    ----------
    ct : CTImage
    kvp : float or None
        kVp; None leaves the CT as it is.
    """
    if kvp is None:
        return ct
    meta = ct.metadata
    kvp = float(kvp)
    if meta.kvp is not None and abs(meta.kvp - kvp) < 0.5:
        return ct
    note = (f"Tube voltage {kvp:g} kVp as stated (option), not the header's {meta.kvp:g} "
            "kVp; check which is right." if meta.kvp is not None else
            f"Tube voltage {kvp:g} kVp as stated (option); the image header does not say.")
    return dataclasses.replace(ct, metadata=dataclasses.replace(meta, kvp=kvp).with_notes(
        note))


def patient_provenance(ct: CTImage, options: MeasureOptions) -> dict[str, object]:
    """Sex, height, age and weight used, each with its source ('option', 'DICOM header'
    or None)."""
    meta = ct.metadata

    def pick(opt: object, header: object) -> tuple[object, str | None]:
        if opt is not None:
            return opt, "option"
        if header is not None:
            return header, "DICOM header"
        return None, None

    sex, sex_src = pick(options.sex, alm_mod.normalise_sex(meta.patient_sex))
    height, height_src = pick(options.height_m, meta.patient_height_m)
    age, age_src = pick(options.age_years, meta.patient_age_years)
    weight, weight_src = pick(options.weight_kg, meta.patient_weight_kg)
    return {"sex": sex, "sex_source": sex_src, "height_m": height, "height_source": height_src,
            "age_years": age, "age_source": age_src, "weight_kg": weight,
            "weight_source": weight_src}
