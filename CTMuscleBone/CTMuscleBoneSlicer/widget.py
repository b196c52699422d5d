"""The panel: .ui widgets <-> parameters, Analyze/Cancel with a polled worker, review list.

Runs only inside the Slicer application (Qt, ctk, the Segment Editor). Call patterns:
the scripted module template (``Utilities/Templates/Modules/Scripted/TemplateKey.py``:
loadUI, childWidgetVariables, setMRMLScene, scene close observers), Slicer
``Modules/Scripted/SegmentEditor/SegmentEditor.py`` and the script repository
(``slicer.modules.segmenteditor.widgetRepresentation().self().editor``; the editor's
``setSegmentationNode``/``setSourceVolumeNode``/``setCurrentSegmentID`` are slots of
``qMRMLSegmentEditorWidget.h``) and SlicerMONAIAuto3DSeg (worker polled on a QTimer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import qt
import slicer
from CTMuscleBoneLib.results import display_name

from .install import DependencyError, ensure_export_dependencies, ensure_segmentation_dependencies
from .logic import AnalysisLogic, remeasure_status
from .parameters import (
    BMD_REFERENCES,
    CALIBRATION_METHODS,
    CRITERIA,
    DENSITY_MODELS,
    DEVICES,
    MATERIALS,
    PHANTOMS,
    SEXES,
    CTMuscleBoneParameters,
)
from .process import Failed, Finished, Log, Progress

POLL_INTERVAL_MS = 100
#: Choice parameters edited with a QComboBox whose item i is choices[i].
COMBO_CHOICES = {"sex": ("sexComboBox", SEXES), "device": ("deviceComboBox", DEVICES),
                 "calibration": ("calibrationMethodComboBox", CALIBRATION_METHODS),
                 "phantom": ("phantomComboBox", PHANTOMS),
                 "fixed_material": ("fixedMaterialComboBox", MATERIALS),
                 "density_model": ("densityModelComboBox", DENSITY_MODELS),
                 "criteria": ("criteriaComboBox", CRITERIA),
                 "bmd_reference": ("bmdReferenceComboBox", BMD_REFERENCES)}
#: Numeric parameters edited with a spin box or ctkSliderWidget (``value`` property).
VALUE_WIDGETS = {"age_years": "ageSpinBox", "height_m": "heightSpinBox",
                 "weight_kg": "weightSpinBox", "kvp": "kvpSpinBox",
                 "mc_samples": "mcSamplesSpinBox", "fixed_slope_mg_cm3_per_hu": "fixedSlopeSpinBox",
                 "fixed_intercept_mg_cm3": "fixedInterceptSpinBox",
                 "heatmap_opacity": "heatmapOpacitySlider",
                 "heatmap_threshold": "heatmapThresholdSlider"}
#: The value-changed signal of each widget of VALUE_WIDGETS, per its class in the .ui:
#: QSpinBox has only ``valueChanged(int)``; QDoubleSpinBox and ctkSliderWidget
#: ``valueChanged(double)`` (Testing/test_slicer_contract.py checks them against the .ui).
VALUE_WIDGET_SIGNALS = {"ageSpinBox": "valueChanged(double)",
                        "heightSpinBox": "valueChanged(double)",
                        "weightSpinBox": "valueChanged(double)",
                        "kvpSpinBox": "valueChanged(double)",
                        "mcSamplesSpinBox": "valueChanged(int)",
                        "fixedSlopeSpinBox": "valueChanged(double)",
                        "fixedInterceptSpinBox": "valueChanged(double)",
                        "heatmapOpacitySlider": "valueChanged(double)",
                        "heatmapThresholdSlider": "valueChanged(double)"}


class PanelController:
    """Connects the loaded .ui (``ui``: childWidgetVariables) to the logic and parameter node."""

    def __init__(self, ui: Any, parameter_node_getter) -> None:
        self.ui = ui
        self.logic = AnalysisLogic()
        self._get_parameter_node = parameter_node_getter
        self._updating = False
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.on_poll)
        self._fill_models()
        self._connect()

    # -- parameters <-> GUI -----------------------------------------------------------
    def _connect(self) -> None:
        ui = self.ui
        ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.on_input_changed)
        for widget_name, _choices in COMBO_CHOICES.values():
            getattr(ui, widget_name).connect("currentIndexChanged(int)", self.save_parameters)
        for widget_name in VALUE_WIDGETS.values():
            getattr(ui, widget_name).connect(VALUE_WIDGET_SIGNALS[widget_name],
                                             self.save_parameters)
        ui.modelComboBox.connect("currentIndexChanged(int)", self.save_parameters)
        for name in ("heatmapVisibleCheckBox", "deidentifyCheckBox", "dicomExportCheckBox"):
            getattr(ui, name).connect("toggled(bool)", self.save_parameters)
        ui.outputFolderPathLineEdit.connect("currentPathChanged(QString)", self.save_parameters)
        ui.dxaModelPathLineEdit.connect("currentPathChanged(QString)", self.save_parameters)
        for name in ("heatmapOpacitySlider", "heatmapThresholdSlider"):
            getattr(ui, name).connect("valueChanged(double)", self.on_heatmap_changed)
        ui.heatmapVisibleCheckBox.connect("toggled(bool)", self.on_heatmap_changed)
        ui.heatmapMapComboBox.connect("currentIndexChanged(int)", self.on_heatmap_changed)
        ui.analyzeButton.connect("clicked(bool)", self.on_analyze)
        ui.cancelButton.connect("clicked(bool)", self.on_cancel)
        ui.reviewTableWidget.connect("itemSelectionChanged()", self.on_review_selected)
        ui.openInSegmentEditorButton.connect("clicked(bool)", self.on_open_segment_editor)
        ui.updateMeasurementsButton.connect("clicked(bool)", self.on_update_measurements)
        ui.measureSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                               self.update_buttons)
        ui.measureSegmentationButton.connect("clicked(bool)", self.on_measure_segmentation)
        ui.exportButton.connect("clicked(bool)", self.on_export)
        ui.installModelButton.connect("clicked(bool)", self.on_install_model)

    def parameters(self) -> CTMuscleBoneParameters:
        """The settings as the GUI shows them."""
        ui = self.ui
        values: dict[str, Any] = {}
        node = ui.inputVolumeSelector.currentNode()
        values["input_volume_id"] = node.GetID() if node else ""
        for name, (widget_name, choices) in COMBO_CHOICES.items():
            index = getattr(ui, widget_name).currentIndex
            values[name] = choices[index] if 0 <= index < len(choices) else choices[0]
        for name, widget_name in VALUE_WIDGETS.items():
            values[name] = float(getattr(ui, widget_name).value)
        values["mc_samples"] = int(values["mc_samples"])
        values["model"] = ui.modelComboBox.currentData or ""
        values["heatmap_visible"] = bool(ui.heatmapVisibleCheckBox.checked)
        values["deidentify"] = bool(ui.deidentifyCheckBox.checked)
        values["export_dicom"] = bool(ui.dicomExportCheckBox.checked)
        values["output_folder"] = ui.outputFolderPathLineEdit.currentPath
        values["dxa_model"] = ui.dxaModelPathLineEdit.currentPath
        return CTMuscleBoneParameters(**values).validated()

    def save_parameters(self, *_args) -> None:
        if self._updating:
            return
        node = self._get_parameter_node()
        if node is not None:
            self.parameters().to_parameter_node(node)
        self.update_buttons()

    def load_parameters(self, node: Any) -> None:
        """Show the settings stored in the parameter node."""
        p = CTMuscleBoneParameters.from_parameter_node(node)
        ui = self.ui
        self._updating = True
        try:
            ui.inputVolumeSelector.setCurrentNodeID(p.input_volume_id)
            for name, (widget_name, choices) in COMBO_CHOICES.items():
                value = getattr(p, name)
                index = choices.index(value) if value in choices else 0
                getattr(ui, widget_name).currentIndex = index
            for name, widget_name in VALUE_WIDGETS.items():
                getattr(ui, widget_name).value = getattr(p, name)
            index = ui.modelComboBox.findData(p.model)
            ui.modelComboBox.currentIndex = max(index, 0)
            ui.heatmapVisibleCheckBox.checked = p.heatmap_visible
            ui.deidentifyCheckBox.checked = p.deidentify
            ui.dicomExportCheckBox.checked = p.export_dicom
            ui.outputFolderPathLineEdit.currentPath = p.output_folder
            ui.dxaModelPathLineEdit.currentPath = p.dxa_model
        finally:
            self._updating = False
        self.update_buttons()

    def _fill_models(self) -> None:
        """Installed models; '' (the bundled demo) first, marked synthetic."""
        combo = self.ui.modelComboBox
        combo.clear()
        combo.addItem("ctmusclebone-demo-synthetic (SYNTHETIC demo, not for clinical use)", "")
        try:
            from CTMuscleBoneLib.segmentation.registry import list_models

            for entry in list_models():
                name = str(getattr(entry, "name", entry))
                if name != "ctmusclebone-demo-synthetic":
                    combo.addItem(name, name)
        except Exception as e:  # noqa: BLE001  (a broken user folder must not break the panel)
            logging.warning(f"CTMuscleBone: could not list models: {e}")

    def on_input_changed(self, node: Any) -> None:
        """Fill sex/age/height/weight and the tube voltage from the DICOM header (or the
        demo's attributes); show the results of this CT only (those of another CT stay
        in the scene but leave the panel, so nothing of a previous case is read as this
        one's)."""
        self._show_case_of_input()
        if node is not None and not self._updating:
            info = self._patient_info(node)
            self._updating = True
            try:
                if info.get("sex") in SEXES:
                    self.ui.sexComboBox.currentIndex = SEXES.index(info["sex"])
                if info.get("age_years"):
                    self.ui.ageSpinBox.value = float(info["age_years"])
                if info.get("height_m"):
                    self.ui.heightSpinBox.value = float(info["height_m"])
                if info.get("weight_kg"):
                    self.ui.weightSpinBox.value = float(info["weight_kg"])
                if info.get("kvp"):
                    self.ui.kvpSpinBox.value = float(info["kvp"])
                if info.get("phantom") in PHANTOMS:
                    self.ui.phantomComboBox.currentIndex = PHANTOMS.index(info["phantom"])
            finally:
                self._updating = False
        self.save_parameters()

    @staticmethod
    def _patient_info(node: Any) -> dict[str, Any]:
        from . import nodes
        from .sample_data import ATTRIBUTE_PREFIX

        info: dict[str, Any] = {}
        try:
            info.update(nodes.patient_info_from_volume_node(node) or {})
        except Exception as e:  # noqa: BLE001  (no DICOM database, unreadable header)
            logging.debug(f"CTMuscleBone: no DICOM patient info: {e}")
        for key in ("sex", "age_years", "height_m", "phantom"):
            value = node.GetAttribute(ATTRIBUTE_PREFIX + key)
            if value:
                info[key] = value
        return {k: v for k, v in info.items() if v not in (None, "")}

    def update_buttons(self, *_args) -> None:
        ui = self.ui
        running = self.logic.runner is not None and self.logic.runner.running
        has_case = self._case_of_input() is not None and self.logic.case.results is not None
        ui.analyzeButton.enabled = ui.inputVolumeSelector.currentNode() is not None and not running
        ui.inputVolumeSelector.enabled = not running  # the results go to the volume segmented
        ui.cancelButton.enabled = running
        ui.updateMeasurementsButton.enabled = has_case and not running
        ui.exportButton.enabled = has_case
        ui.measureSegmentationButton.enabled = (
            ui.measureSegmentationSelector.currentNode() is not None
            and ui.inputVolumeSelector.currentNode() is not None and not running)

    # -- analyze / cancel -----------------------------------------------------------
    def on_analyze(self) -> None:
        params = self.parameters()
        volume = self.ui.inputVolumeSelector.currentNode()
        try:
            ensure_segmentation_dependencies()
        except DependencyError as e:
            slicer.util.errorDisplay(str(e))
            return
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            self.logic.start_segmentation(volume, params)
            self.ui.progressBar.value = 0
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = "Segmenting (separate process)..."
            self.timer.start()
        self.update_buttons()

    def on_cancel(self) -> None:
        self.timer.stop()
        self.logic.cancel()
        self.ui.progressBar.visible = False
        self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
        self.update_buttons()

    def on_poll(self) -> None:
        runner = self.logic.runner
        if runner is None:
            self.timer.stop()
            return
        try:
            self._handle_events(runner.poll())
        finally:  # also when the import raised: unlock the input, Analyze again
            self.update_buttons()

    def _handle_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, Progress):
                self.ui.progressBar.value = int(round(100 * event.fraction))
                self.ui.statusLabel.text = event.message
            elif isinstance(event, Log):
                logging.info(f"CTMuscleBone worker: {event.text}")
            elif isinstance(event, Finished):
                self.timer.stop()
                self._on_segmentation_done()
            elif isinstance(event, Failed):
                self.timer.stop()
                self.ui.progressBar.visible = False
                self.ui.statusLabel.text = event.message
                if not event.cancelled:
                    slicer.util.errorDisplay(event.message, windowTitle="CTMuscleBone")
                self.logic.cleanup_work_dir()

    def _on_segmentation_done(self) -> None:
        # the volume and settings recorded when Analyze was pressed (logic.job), not what
        # the panel shows now
        try:
            # tryWithErrorDisplay shows the message, then raises again (Slicer util.py)
            with slicer.util.tryWithErrorDisplay(
                    "Could not import or measure the segmentation.", waitCursor=True):
                try:
                    case = self.logic.import_segmentation()
                    self.ui.statusLabel.text = "Measuring..."
                    slicer.app.processEvents()
                    self.logic.measure(case.params)
                finally:
                    self.logic.cleanup_work_dir()
                    self.ui.progressBar.visible = False
        except Exception as e:  # noqa: BLE001  (shown above; the panel must stay usable)
            logging.error(f"CTMuscleBone: import or measurement failed: {e}")
            self.logic.job = None
            self._show_case_of_input()  # an earlier case of this CT, or nothing
            self.ui.statusLabel.text = "Import or measurement failed (see the message)."
            return
        self._show_case_of_input()
        text = "Done."
        if case.synthetic_model:
            text += " " + case.clinical_use_warning
        self.ui.statusLabel.text = text

    def _case_of_input(self) -> Any:
        """The logic's case when it belongs to the CT the input selector shows, else None."""
        case = self.logic.case
        node = self.ui.inputVolumeSelector.currentNode()
        if case is None or node is None or case.volume_node is None:
            return None
        return case if case.volume_node.GetID() == node.GetID() else None

    def _show_case_of_input(self) -> None:
        """Show the case of the selected CT (measured), or clear the case views."""
        case = self._case_of_input()
        if case is not None and case.results is not None:
            self._show_case(case)
        else:
            self._clear_case_views()

    def _clear_case_views(self) -> None:
        """Empty the results table view, the review list and the heatmap map list (the
        nodes stay in the scene)."""
        ui = self.ui
        ui.resultsTableView.setMRMLTableNode(None)
        ui.reviewTableWidget.clearContents()
        ui.reviewTableWidget.setRowCount(0)
        ui.openInSegmentEditorButton.enabled = False
        ui.heatmapMapComboBox.blockSignals(True)
        ui.heatmapMapComboBox.clear()
        ui.heatmapMapComboBox.blockSignals(False)

    def _show_case(self, case: Any) -> None:
        ui = self.ui
        table_node = case.table_node
        if table_node is not None and slicer.mrmlScene.GetNodeByID(table_node.GetID()) is None:
            table_node = None
        ui.resultsTableView.setMRMLTableNode(table_node)
        ui.openInSegmentEditorButton.enabled = False
        ui.heatmapMapComboBox.blockSignals(True)
        ui.heatmapMapComboBox.clear()
        for name in case.heatmap_arrays:
            ui.heatmapMapComboBox.addItem(name)
        ui.heatmapMapComboBox.blockSignals(False)
        table = ui.reviewTableWidget
        table.clear()
        table.setHorizontalHeaderLabels(["structure", "uncertainty", "volume (cm3)"])
        table.setRowCount(len(case.review))
        for i, row in enumerate(case.review):
            key = str(row.get("key", ""))
            item = qt.QTableWidgetItem(display_name(key))
            item.setData(qt.Qt.UserRole, key)  # the anatomy key, for selection
            table.setItem(i, 0, item)
            score = row.get("score")
            table.setItem(i, 1, qt.QTableWidgetItem("" if score is None else f"{score:.4g}"))
            volume = row.get("volume_cm3")
            table.setItem(i, 2, qt.QTableWidgetItem("" if volume is None else f"{volume:.1f}"))

    # -- review -----------------------------------------------------------------------
    def _selected_key(self) -> str | None:
        rows = self.ui.reviewTableWidget.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.ui.reviewTableWidget.item(rows[0].row(), 0)
        return item.data(qt.Qt.UserRole) if item else None

    def on_review_selected(self) -> None:
        key = self._selected_key()
        self.ui.openInSegmentEditorButton.enabled = key is not None
        if key is not None and self.logic.case is not None:
            self.logic.center_on(key)

    def on_open_segment_editor(self) -> None:
        key = self._selected_key()
        case = self.logic.case
        if key is None or case is None:
            return
        segment_id = self.logic.segment_id_for(key)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(case.segmentation_node)
        editor.setSourceVolumeNode(case.volume_node)
        if segment_id is not None:
            editor.setCurrentSegmentID(segment_id)

    def on_heatmap_changed(self, *_args) -> None:
        case = self.logic.case
        name = self.ui.heatmapMapComboBox.currentText
        if case is not None and name in case.heatmap_arrays:
            self.logic.show_heatmap(name, self.parameters())

    # -- measure / update / export -------------------------------------------------------
    def on_update_measurements(self) -> None:
        with slicer.util.tryWithErrorDisplay("Re-measurement failed.", waitCursor=True):
            re = self.logic.remeasure(self.parameters())
            self.ui.statusLabel.text = remeasure_status(re)
            self.ui.resultsTableView.setMRMLTableNode(self.logic.case.table_node)

    def on_measure_segmentation(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay("Measurement failed.", waitCursor=True):
                self.logic.measure_user_segmentation(
                    self.ui.inputVolumeSelector.currentNode(),
                    self.ui.measureSegmentationSelector.currentNode(), self.parameters())
                self.ui.statusLabel.text = "Measured the selected segmentation."
        except Exception as e:  # noqa: BLE001  (shown above)
            logging.error(f"CTMuscleBone: measurement failed: {e}")
            self.ui.statusLabel.text = "Measurement failed (see the message)."
        finally:
            # the review list and uncertainty maps of an earlier analysis do not describe
            # this segmentation: the new case has none, so they leave the panel
            self._show_case_of_input()
            self.update_buttons()

    def on_export(self) -> None:
        folder = self.ui.outputFolderPathLineEdit.currentPath
        if not folder:
            slicer.util.errorDisplay("Choose an export folder first.")
            return
        params = self.parameters()
        try:  # matplotlib, reportlab (and highdicom): asks before installing
            ensure_export_dependencies(dicom=params.export_dicom)
        except DependencyError as e:  # the report is optional; a DICOM export then fails
            logging.warning(f"CTMuscleBone: {e}")
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            paths = self.logic.export(folder, deidentify=params.deidentify,
                                      dicom=params.export_dicom)
            self.ui.statusLabel.text = (f"Exported {len(paths)} files to {folder}. "
                                        + self.logic.export_note).strip()

    def on_install_model(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Model folder (card.json + weights)")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Could not install the model.", waitCursor=True):
            from CTMuscleBoneLib.segmentation.registry import install_model

            install_model(Path(folder))
            self._fill_models()

    def reset(self) -> None:
        """The scene is closing: stop the worker, forget the case, clear the views."""
        self.timer.stop()
        self.logic.reset()
        ui = self.ui
        ui.progressBar.visible = False
        ui.statusLabel.text = ""
        self._clear_case_views()
        self.update_buttons()

    def cleanup(self) -> None:
        self.timer.stop()
        self.logic.reset()
