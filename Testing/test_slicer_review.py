"""Review findings of the Slicer layer, each with the test that failed before its fix.

Runs on the real MRML classes of slicer-core (headless); the panel tests drive
``CTMuscleBoneSlicer.widget.PanelController`` with a stand-in for PythonQt's ``qt``
module and for the .ui widgets (attributes and ``connect`` only).
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicer_fixtures
from CTMuscleBoneSlicer import nodes
from CTMuscleBoneSlicer.logic import AnalysisLogic
from CTMuscleBoneSlicer.parameters import CTMuscleBoneParameters

_slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")

KEY = "rectus_femoris_left"


@pytest.fixture(scope="module")
def phantom():
    from CTMuscleBoneLib.phantoms.builder import PhantomSpec, make_phantom

    return make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, bones=(), vessels=False,
                                    muscles=("rectus_femoris", "sartorius")))


def _measured_case(scene, phantom):
    volume = nodes.volume_node_from_array(scene, phantom.ct.hu, phantom.geometry, "CT")
    seg = nodes.segmentation_node_from_label_map(scene, phantom.labels, volume, "labels")
    params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), calibration="none")
    logic = AnalysisLogic()
    logic.measure_user_segmentation(volume, seg, params)
    return logic, volume, seg, params


def _value(results, key, quantity="volume"):
    row = results.get(key, quantity)
    return None if row is None else row.value


# ------------------------------------------------------------------------------------
# 1. re-measure: what changed is what the masks say, not what events said
# ------------------------------------------------------------------------------------
def test_recolouring_a_segment_is_not_an_edit(slicer_env, phantom):
    logic, _, seg, params = _measured_case(slicer_env.scene, phantom)
    try:
        seg.GetSegmentation().GetSegment(KEY).SetColor(0.1, 0.9, 0.1)  # SegmentModified
        re = logic.remeasure(params)
        assert re.edited_structures == set()
        assert not any(r.structure == KEY and any("edited" in f for f in r.flags)
                       for r in re.results.rows)
    finally:
        logic.reset()


def test_undo_in_the_segment_editor_restores_the_values_and_flags_only_that_segment(
        slicer_env, phantom):
    # the Segment Editor's undo is vtkSegmentationHistory.RestorePreviousState: it copies
    # every segment back, with a SegmentModified event for each of them
    logic, volume, seg, params = _measured_case(slicer_env.scene, phantom)
    history = slicer.vtkSegmentationHistory()
    try:
        original = _value(logic.case.results, KEY)
        history.SetSegmentation(seg.GetSegmentation())
        history.SaveState()
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, KEY, volume)
        eroded = mask.copy()
        eroded[: int(np.flatnonzero(mask.any(axis=(1, 2))).mean())] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(eroded, seg, KEY, volume)
        assert logic.remeasure(params).edited_structures == {KEY}
        assert _value(logic.case.results, KEY) < original
        assert history.RestorePreviousState()
        re = logic.remeasure(params)
        assert re.edited_structures == {KEY}
        assert _value(re.results, KEY) == pytest.approx(original)
    finally:
        history.RemoveAllStates()
        logic.reset()


def test_an_edit_no_event_names_is_still_remeasured(slicer_env, phantom):
    # a script (or an effect that blocks events) changes the shared labelmap directly
    logic, _, seg, params = _measured_case(slicer_env.scene, phantom)
    try:
        before = _value(logic.case.results, KEY)
        segmentation = seg.GetSegmentation()
        arr = slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, KEY)
        value = segmentation.GetSegment(KEY).GetLabelValue()
        k = np.flatnonzero((arr == value).any(axis=(1, 2)))[0]
        arr[k][arr[k] == value] = 0  # one slice of the segment erased, no event
        re = logic.remeasure(params)
        assert KEY in re.edited_structures
        assert _value(re.results, KEY) < before
    finally:
        logic.reset()


def test_changed_mask_keys_ignores_a_neighbour_of_an_overlapping_structure():
    from CTMuscleBoneLib.anatomy import structure
    from CTMuscleBoneLib.image import Geometry, LabelMap

    g = Geometry((6, 6, 6), (1.0, 1.0, 1.0))
    a, b = "sartorius_left", "rectus_femoris_left"
    va, vb = structure(a).label_value, structure(b).label_value
    full_a = np.zeros(g.shape, bool)
    full_a[1:4] = True
    arr = np.zeros(g.shape, np.uint16)
    arr[full_a] = va
    arr[3:5] = vb  # b painted over a's last slab
    before = LabelMap(arr, g, {va: a, vb: b}, overlays={a: full_a})
    arr2 = arr.copy()
    arr2[2] = vb  # b grows further into a: a's full mask is unchanged
    after = LabelMap(arr2, g, {va: a, vb: b}, overlays={a: full_a})
    assert nodes.changed_mask_keys(before, after) == {b}
    assert nodes.changed_mask_keys(before, before) == set()


# ------------------------------------------------------------------------------------
# 2. the heatmap does not darken the CT where the model is certain
# ------------------------------------------------------------------------------------
def test_zero_uncertainty_is_transparent_in_the_heatmap(slicer_env):
    from CTMuscleBoneLib.image import Geometry

    scene = slicer_env.scene
    g = Geometry((5, 4, 3), (1.0, 1.0, 1.0))
    ct = nodes.volume_node_from_array(scene, np.zeros(g.shape, np.int16), g, "ct")
    unc = nodes.volume_node_from_array(scene, np.linspace(0, 0.3, 60, dtype=np.float32)
                                       .reshape(g.shape), g, "uncertainty")
    color = nodes.show_uncertainty_heatmap(scene, unc, ct, opacity=0.5)  # threshold 0: none
    rgba = [0.0] * 4
    assert color.GetColor(0, rgba) and rgba[3] == 0.0  # zero: the CT shows through
    assert color.GetColor(1, rgba) and rgba[3] == 1.0
    assert color.GetColor(255, rgba) and rgba[3] == 1.0
    # the display pipeline takes the table's alpha: a zero voxel is fully transparent
    display = unc.GetDisplayNode()
    display.SetInputImageDataConnection(unc.GetImageDataConnection())
    display.UpdateImageDataPipeline()
    out = display.GetOutputImageDataConnection().GetProducer()
    out.Update()
    from vtk.util.numpy_support import vtk_to_numpy

    alpha = vtk_to_numpy(out.GetOutputDataObject(0).GetPointData().GetScalars())[:, 3]
    assert alpha[0] == 0 and alpha[-1] == 255


# ------------------------------------------------------------------------------------
# 3. the panel (widget.PanelController) with stand-ins for qt and the .ui widgets
# ------------------------------------------------------------------------------------
class _Fake:
    """A .ui widget stand-in: properties are attributes; any other method is recorded."""

    def __init__(self, **props) -> None:
        self.__dict__.update(props)
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            self.calls.append((name, args))

        return method

    def last(self, name):
        return [a for n, a in self.calls if n == name][-1]


class _Selector(_Fake):
    def __init__(self, scene) -> None:
        super().__init__(enabled=True)
        self.scene, self.node = scene, None

    def currentNode(self):  # noqa: N802  (Qt name)
        return self.node

    def setCurrentNodeID(self, node_id):  # noqa: N802
        self.node = self.scene.GetNodeByID(node_id) if node_id else None


class _Combo(_Fake):
    def __init__(self) -> None:
        super().__init__(currentIndex=0, currentData="", currentText="", items=[])

    def clear(self):
        self.items = []

    def addItem(self, text, data=None):  # noqa: N802
        self.items.append(text)

    def findData(self, data):  # noqa: N802
        return 0


def _fake_qt():
    import types

    class QTimer(_Fake):
        def isActive(self):  # noqa: N802
            return False

    class QTableWidgetItem(_Fake):
        def __init__(self, text="") -> None:
            super().__init__(text=text)

    return types.SimpleNamespace(QTimer=QTimer, QTableWidgetItem=QTableWidgetItem,
                                 Qt=types.SimpleNamespace(UserRole=32), QFileDialog=_Fake())


@pytest.fixture()
def panel(slicer_env, monkeypatch):
    import contextlib
    import importlib
    import sys
    import types

    monkeypatch.setitem(sys.modules, "qt", _fake_qt())
    sys.modules.pop("CTMuscleBoneSlicer.widget", None)
    widget = importlib.import_module("CTMuscleBoneSlicer.widget")
    COMBO_CHOICES, VALUE_WIDGETS = widget.COMBO_CHOICES, widget.VALUE_WIDGETS  # noqa: N806
    shown: list[str] = []

    @contextlib.contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):  # noqa: N803
        try:  # Slicer's: shows the message, then raises again
            yield
        except Exception as e:
            shown.append(f"{message}\n\n{e}")
            raise

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: shown.append(text),
                        raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None),
                        raising=False)
    ui = types.SimpleNamespace()
    for widget_name, _choices in COMBO_CHOICES.values():
        setattr(ui, widget_name, _Combo())
    for name, widget_name in VALUE_WIDGETS.items():
        setattr(ui, widget_name, _Fake(value=getattr(CTMuscleBoneParameters(), name)))
    ui.calibrationMethodComboBox.currentIndex = 4  # 'none'
    ui.inputVolumeSelector = _Selector(slicer_env.scene)
    ui.measureSegmentationSelector = _Selector(slicer_env.scene)
    ui.modelComboBox = _Combo()
    ui.heatmapMapComboBox = _Combo()
    for name in ("heatmapVisibleCheckBox", "deidentifyCheckBox", "dicomExportCheckBox"):
        setattr(ui, name, _Fake(checked=False))
    for name in ("outputFolderPathLineEdit", "dxaModelPathLineEdit"):
        setattr(ui, name, _Fake(currentPath=""))
    for name in ("analyzeButton", "cancelButton", "updateMeasurementsButton", "exportButton",
                 "measureSegmentationButton", "openInSegmentEditorButton", "installModelButton",
                 "progressBar", "statusLabel", "resultsTableView", "reviewTableWidget"):
        setattr(ui, name, _Fake(enabled=True, visible=True, text="", value=0))
    controller = widget.PanelController(ui, lambda: None)
    controller.shown = shown
    yield controller
    controller.cleanup()
    sys.modules.pop("CTMuscleBoneSlicer.widget", None)  # bound to the stand-in qt


def _two_cases(scene, phantom, panel):
    """CT A analyzed (fake worker outputs: review list, one uncertainty map), CT B loaded."""
    import test_slicer_logic as tl

    ui = panel.ui
    volume_a = nodes.volume_node_from_array(scene, phantom.ct.hu, phantom.geometry, "A")
    ui.inputVolumeSelector.node = volume_a
    params = panel.parameters()
    panel.logic.prepare_job(volume_a, params, work_dir=None)
    tl._fake_outputs(panel.logic.work_dir / "out", phantom)
    panel._on_segmentation_done()
    volume_b = nodes.volume_node_from_array(scene, phantom.ct.hu, phantom.geometry, "B")
    return volume_a, volume_b


def test_panel_does_not_show_another_cts_results(slicer_env, phantom, panel):
    ui = panel.ui
    volume_a, volume_b = _two_cases(slicer_env.scene, phantom, panel)
    case_a = panel.logic.case
    assert ui.resultsTableView.last("setMRMLTableNode") == (case_a.table_node,)
    assert ui.reviewTableWidget.last("setRowCount") == (1,)
    assert ui.heatmapMapComboBox.items == ["predictive_variance"]
    ui.inputVolumeSelector.node = volume_b  # the clinician loads and selects the next CT
    panel.on_input_changed(volume_b)
    assert ui.resultsTableView.last("setMRMLTableNode") == (None,)
    assert ui.reviewTableWidget.last("setRowCount") == (0,)
    assert ui.heatmapMapComboBox.items == []
    assert not ui.exportButton.enabled and not ui.updateMeasurementsButton.enabled
    ui.inputVolumeSelector.node = volume_a  # back to A: its case is shown again
    panel.on_input_changed(volume_a)
    assert ui.resultsTableView.last("setMRMLTableNode") == (case_a.table_node,)
    assert ui.exportButton.enabled and ui.updateMeasurementsButton.enabled


def test_measured_segmentation_replaces_the_review_list_of_the_analysis(slicer_env, phantom,
                                                                        panel):
    ui = panel.ui
    volume_a, _ = _two_cases(slicer_env.scene, phantom, panel)
    seg = nodes.segmentation_node_from_label_map(slicer_env.scene, phantom.labels, volume_a,
                                                 "user segmentation")
    ui.measureSegmentationSelector.node = seg
    panel.on_measure_segmentation()
    assert panel.logic.case.segmentation_node is seg
    assert ui.resultsTableView.last("setMRMLTableNode") == (panel.logic.case.table_node,)
    assert ui.reviewTableWidget.last("setRowCount") == (0,)  # the model's list is gone
    assert ui.heatmapMapComboBox.items == []


def test_failed_import_leaves_the_panel_usable(slicer_env, phantom, panel):
    from CTMuscleBoneSlicer.process import Finished

    class EndedRunner:  # a worker that ended with code 0 but wrote no outputs.json
        running = False

        def poll(self):
            return [Finished(0)]

    ui = panel.ui
    volume = nodes.volume_node_from_array(slicer_env.scene, phantom.ct.hu, phantom.geometry,
                                          "CT")
    ui.inputVolumeSelector.node = volume
    panel.logic.prepare_job(volume, panel.parameters())
    panel.logic.runner = EndedRunner()
    ui.analyzeButton.enabled = ui.inputVolumeSelector.enabled = False  # as while running
    ui.cancelButton.enabled = True
    panel.on_poll()  # the import raises: the message is shown, the panel unlocked
    assert panel.shown and "Could not import" in panel.shown[0]
    assert ui.analyzeButton.enabled and ui.inputVolumeSelector.enabled
    assert not ui.cancelButton.enabled
    assert "failed" in ui.statusLabel.text
    assert panel.logic.work_dir is None  # the worker's folder is removed


# ------------------------------------------------------------------------------------
# changed settings on *Update measurements*: measured again, not called hand edits
# ------------------------------------------------------------------------------------
def test_update_with_changed_settings_measures_again_and_marks_only_edits(slicer_env,
                                                                         phantom):
    """The panel's settings changed (density model) and one muscle edited: every value is
    measured with the new settings (as a fresh measurement would give), only the edited
    muscle's rows (and the totals it enters) are marked edited, and the status says
    both. Before, pipeline.remeasure kept the earlier settings' femur rows and marked
    every settings-driven change as a hand edit; the status said nothing changed."""
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneSlicer.logic import remeasure_status

    logic, volume, seg, params = _measured_case(slicer_env.scene, phantom)
    try:
        other = "sartorius_left"
        mass_before = _value(logic.case.results, other, "mass")
        params.density_model = "hu_linear"
        re = logic.remeasure(params)  # settings only
        assert re.settings_changed == ["density_model"] and not re.edited_structures
        assert _value(re.results, other, "mass") != pytest.approx(mass_before)
        assert not any(pipeline.EDITED_FLAG in r.flags for r in re.results.rows)
        assert remeasure_status(re).startswith(
            "Measured again with the changed settings (density_model)")
        fresh = pipeline.measure(logic.case.ct, logic.case.labels,
                                 params.to_measure_options())
        assert {(r.structure, r.quantity): r.value for r in re.results.rows} == \
            {(r.structure, r.quantity): r.value for r in fresh.rows}
        # an edit and a setting at once: only the edit's rows are marked
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, KEY, volume)
        eroded = mask.copy()
        eroded[: int(np.flatnonzero(mask.any(axis=(1, 2))).mean())] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(eroded, seg, KEY, volume)
        params.density_model = "constant"
        re = logic.remeasure(params)
        assert re.settings_changed == ["density_model"] and re.edited_structures == {KEY}
        marked = {r.structure for r in re.results.rows if pipeline.EDITED_FLAG in r.flags}
        assert KEY in marked and other not in marked
        assert _value(re.results, other, "mass") == pytest.approx(mass_before)
        assert "re-measured the edited structures: " + KEY in remeasure_status(re)
        # settings changed again, no new edit: the hand-corrected muscle stays marked
        params.density_model = "hu_linear"
        re = logic.remeasure(params)
        assert not re.edited_structures
        assert all(pipeline.EDITED_FLAG in r.flags for r in re.results.rows
                   if r.structure == KEY)
        assert not any(pipeline.EDITED_FLAG in r.flags for r in re.results.rows
                       if r.structure == other)
        # nothing edited, nothing changed
        re = logic.remeasure(params)
        assert remeasure_status(re) == ("No edited structure and no changed setting: "
                                        "nothing to update.")
    finally:
        logic.reset()
