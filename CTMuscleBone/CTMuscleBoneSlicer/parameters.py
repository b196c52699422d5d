"""The panel's settings as a dataclass, stored in a ``vtkMRMLScriptedModuleNode``.

Every setting is kept as a string parameter (``SetParameter``/``GetParameter``) and the
input volume as a node reference, so the settings are saved and restored with the scene
(the storage the template's ``parameterNodeWrapper`` also uses; written out by hand here
so it is testable with the ``slicer-core`` package, which lacks the wrapper).

:data:`PARAMETER_WIDGETS` names the .ui widget that edits each setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Node reference role of the input CT volume in the parameter node.
INPUT_VOLUME_ROLE = "InputVolume"

SEXES = ("", "M", "F")  # "" = unknown / from the DICOM header
DEVICES = ("auto", "cpu", "cuda")
#: Calibration choices of the core (``MeasureOptions.calibration``); 'fixed' is a line
#: typed in (slope, intercept, material), e.g. from an asynchronous phantom scan.
CALIBRATION_METHODS = ("auto", "phantom", "internal", "fixed", "none")
PHANTOMS = ("", "B-MAS200", "Mindways Model 3", "QRM-BDC")  # bundled definitions
MATERIALS = ("K2HPO4", "HA")
BMD_REFERENCES = ("nhanes3", "jsbmr2012")  # data/references/*.json of the core
DENSITY_MODELS = ("constant", "hu_linear")
CRITERIA = ("awgs2019", "ewgsop2")


@dataclass
class CTMuscleBoneParameters:
    """Everything the panel lets the user choose.

    Attributes
    ----------
    input_volume_id : str
        MRML node id of the input CT volume ("" = none).
    sex : {'', 'M', 'F'}
        Patient sex; '' = unknown.
    age_years, height_m : float
        Patient age (years) and height (m); 0 = unknown.
    model : str
        Segmentation model name or folder; '' = the bundled demo model (synthetic).
    mc_samples : int
        Monte-Carlo dropout samples; 0 = the model card's default.
    device : {'auto', 'cpu', 'cuda'}
    calibration : {'auto', 'phantom', 'internal', 'fixed', 'none'}
    phantom : str
        Calibration phantom definition (bundled name or JSON path); '' = none.
    fixed_slope_mg_cm3_per_hu, fixed_intercept_mg_cm3 : float
        The line used when ``calibration == 'fixed'``: BMD = slope * HU + intercept.
    fixed_material : {'K2HPO4', 'HA'}
        Reference material of the fixed line.
    density_model : {'constant', 'hu_linear'}
        Muscle density model.
    criteria : {'awgs2019', 'ewgsop2'}
        Sarcopenia criteria.
    heatmap_opacity : float
        Foreground opacity of the uncertainty heatmap, 0..1.
    heatmap_threshold : float
        Uncertainty below this fraction of the heatmap's full scale (a tie between two
        structures, the same for every case) is not shown, 0..1.
    heatmap_visible : bool
    output_folder : str
        Export folder.
    deidentify : bool
        Export without patient identifiers (results, report, DICOM).
    export_dicom : bool
        Export the DICOM SEG and SR too.
    weight_kg : float
        Patient weight, kg (0 = unknown / from the DICOM header); BMI-dependent L3 cut-offs.
    kvp : float
        Tube voltage of the scan, kV (0 = from the DICOM header / unknown, as for a volume
        loaded from NIfTI): the K2HPO4-to-HA ratio and whether the Pickhardt L1
        thresholds (120 kVp) apply (``MeasureOptions.kvp``).
    bmd_reference : {'nhanes3', 'jsbmr2012'}
        Reference table of T-scores / %YAM and their categories.
    dxa_model : str
        CT-aBMD -> DXA conversion model file from ``ctmusclebone fit-dxa`` ('' = the
        shipped identity, unvalidated: categories then indeterminate).
    """

    input_volume_id: str = ""
    sex: str = ""
    age_years: float = 0.0
    height_m: float = 0.0
    weight_kg: float = 0.0
    kvp: float = 0.0
    model: str = ""
    mc_samples: int = 0
    device: str = "auto"
    calibration: str = "auto"
    phantom: str = ""
    fixed_slope_mg_cm3_per_hu: float = 1.0
    fixed_intercept_mg_cm3: float = 0.0
    fixed_material: str = "K2HPO4"
    density_model: str = "constant"
    criteria: str = "awgs2019"
    bmd_reference: str = "nhanes3"
    dxa_model: str = ""
    heatmap_opacity: float = 0.5
    heatmap_threshold: float = 0.0
    heatmap_visible: bool = True
    output_folder: str = ""
    deidentify: bool = False
    export_dicom: bool = False

    # -- parameter node ---------------------------------------------------------------
    def to_parameter_node(self, node: Any) -> None:
        """Write every setting into ``node`` (a ``vtkMRMLScriptedModuleNode``).

        Modified events are batched (``StartModify``/``EndModify``) so observers update once.
        """
        was_modifying = node.StartModify()
        try:
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if f.name == "input_volume_id":
                    node.SetNodeReferenceID(INPUT_VOLUME_ROLE, value or None)
                    continue
                node.SetParameter(f.name, _to_text(value))
        finally:
            node.EndModify(was_modifying)

    @classmethod
    def from_parameter_node(cls, node: Any) -> CTMuscleBoneParameters:
        """Read the settings from ``node``; missing or unreadable values keep their default."""
        defaults = cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            if f.name == "input_volume_id":
                values[f.name] = node.GetNodeReferenceID(INPUT_VOLUME_ROLE) or ""
                continue
            text = node.GetParameter(f.name) if node.HasParameter(f.name) else ""
            values[f.name] = _from_text(text, default)
        return cls(**values).validated()

    def validated(self) -> CTMuscleBoneParameters:
        """A copy whose choice fields hold allowed values (an unknown value -> default)."""
        defaults = CTMuscleBoneParameters()
        out = dataclasses.replace(self)
        for name, allowed in (("sex", SEXES), ("device", DEVICES),
                              ("calibration", CALIBRATION_METHODS),
                              ("fixed_material", MATERIALS), ("density_model", DENSITY_MODELS),
                              ("criteria", CRITERIA), ("bmd_reference", BMD_REFERENCES)):
            if getattr(out, name) not in allowed:
                setattr(out, name, getattr(defaults, name))
        out.heatmap_opacity = min(max(out.heatmap_opacity, 0.0), 1.0)
        out.heatmap_threshold = min(max(out.heatmap_threshold, 0.0), 1.0)
        out.mc_samples = max(out.mc_samples, 0)
        return out

    # -- core options -----------------------------------------------------------------
    def to_segment_options(self, seed: int | None = None):
        """:class:`CTMuscleBoneLib.pipeline.SegmentOptions` for these settings."""
        from CTMuscleBoneLib import pipeline

        return pipeline.SegmentOptions(model=self.model or None,
                                       samples=self.mc_samples or None, seed=seed,
                                       device=self.device)

    def to_measure_options(self):
        """:class:`CTMuscleBoneLib.pipeline.MeasureOptions` for these settings."""
        from CTMuscleBoneLib import pipeline

        use_phantom = self.calibration in ("auto", "phantom") and bool(self.phantom)
        fixed = self.calibration == "fixed"
        return pipeline.MeasureOptions(
            sex=self.sex or None, height_m=self.height_m or None,
            age_years=self.age_years or None, density_model=self.density_model,
            criteria=self.criteria, calibration=self.calibration,
            weight_kg=self.weight_kg or None, kvp=self.kvp or None,
            bmd_reference=self.bmd_reference,
            dxa_model=self.dxa_model or None,
            phantom=self.phantom if use_phantom else None,
            # 'fixed': an asynchronous line typed in by the user (the core checks it)
            fixed_slope_mg_cm3_per_hu=float(self.fixed_slope_mg_cm3_per_hu) if fixed else None,
            fixed_intercept_mg_cm3=float(self.fixed_intercept_mg_cm3) if fixed else None,
            fixed_material=self.fixed_material if fixed else None)


#: Widget (object name in Resources/UI/CTMuscleBone.ui) editing each parameter.
PARAMETER_WIDGETS: dict[str, str] = {
    "input_volume_id": "inputVolumeSelector",
    "sex": "sexComboBox",
    "age_years": "ageSpinBox",
    "height_m": "heightSpinBox",
    "weight_kg": "weightSpinBox",
    "kvp": "kvpSpinBox",
    "bmd_reference": "bmdReferenceComboBox",
    "dxa_model": "dxaModelPathLineEdit",
    "model": "modelComboBox",
    "mc_samples": "mcSamplesSpinBox",
    "device": "deviceComboBox",
    "calibration": "calibrationMethodComboBox",
    "phantom": "phantomComboBox",
    "fixed_slope_mg_cm3_per_hu": "fixedSlopeSpinBox",
    "fixed_intercept_mg_cm3": "fixedInterceptSpinBox",
    "fixed_material": "fixedMaterialComboBox",
    "density_model": "densityModelComboBox",
    "criteria": "criteriaComboBox",
    "heatmap_opacity": "heatmapOpacitySlider",
    "heatmap_threshold": "heatmapThresholdSlider",
    "heatmap_visible": "heatmapVisibleCheckBox",
    "output_folder": "outputFolderPathLineEdit",
    "deidentify": "deidentifyCheckBox",
    "export_dicom": "dicomExportCheckBox",
}


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _from_text(text: str, default: Any) -> Any:
    if text == "":
        return default if not isinstance(default, str) else ""
    try:
        if isinstance(default, bool):
            return text.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(float(text))
        if isinstance(default, float):
            return float(text)
    except ValueError:
        return default
    return text
