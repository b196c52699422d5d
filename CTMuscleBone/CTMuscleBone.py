"""CTMuscleBone: bone density and muscle mass from CT, in 3D Slicer.

Thin module file in the shape of Slicer's scripted module template
(Utilities/Templates/Modules/Scripted/TemplateKey.py): the panel lives in
CTMuscleBoneSlicer/widget.py, the logic in CTMuscleBoneSlicer/logic.py and every
measurement in the Slicer-free core CTMuscleBoneLib.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# CTMuscleBone
#


class CTMuscleBone(ScriptedLoadableModule):
    """Module metadata; registers the sample data and terminology at start-up."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CTMuscleBone"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTMuscleBone developers"]
        self.parent.helpText = """
Bone mineral density (femoral CT-aBMD, vBMD, lumbar trabecular vBMD) and muscle mass
(per-muscle volume, density, fat infiltration, ALM, SMI) from a CT. A Bayesian U-Net
segments the CT with voxel uncertainty maps; review the most uncertain structures, correct
them in the Segment Editor and press Update measurements.
<b>The bundled demo model is trained on synthetic phantoms only: it is not for clinical
use, and its labels on a patient CT are meaningless.</b>
See <a href="https://github.com/ctmusclebone/CTMuscleBone">the documentation</a>.
"""
        self.parent.acknowledgementText = """
Built on the 3D Slicer scripted module template and following the design of
SlicerMONAIAuto3DSeg, SlicerTotalSegmentator and SlicerNNUnet (background process,
dependency installation, terminology).
"""
        slicer.app.connect("startupCompleted()", self.onStartupCompleted)

    def onStartupCompleted(self):
        from CTMuscleBoneSlicer.sample_data import register_sample_data
        from CTMuscleBoneSlicer.terminology import load_terminology

        register_sample_data(os.path.join(os.path.dirname(self.parent.path), "Resources", "Icons"))
        load_terminology()


#
# CTMuscleBoneWidget
#


class CTMuscleBoneWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads the .ui and hands it to CTMuscleBoneSlicer.widget.PanelController."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.controller = None
        self._parameterNode = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from CTMuscleBoneSlicer.widget import PanelController

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTMuscleBone.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTMuscleBoneLogic()
        self.controller = PanelController(self.ui, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.controller is not None:
            self.controller.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event):
        self._parameterNode = None
        if self.controller is not None:  # cancel a running worker, forget the case
            self.controller.reset()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self._parameterNode = self.logic.getParameterNode()
        self.controller.load_parameters(self._parameterNode)
        if self.ui.inputVolumeSelector.currentNode() is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self.ui.inputVolumeSelector.setCurrentNode(first)

    def onReload(self):
        """Reload the CTMuscleBoneSlicer sub-modules too (Developer mode)."""
        import importlib
        import sys

        for name in sorted(n for n in sys.modules if n.startswith("CTMuscleBoneSlicer")):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)


#
# CTMuscleBoneLogic
#


class CTMuscleBoneLogic(ScriptedLoadableModuleLogic):
    """Batch access without the panel (knows no widget): see CTMuscleBoneSlicer.logic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from CTMuscleBoneSlicer.logic import AnalysisLogic

        self.analysis = AnalysisLogic()

    def analyze(self, volumeNode, parameters, timeoutSeconds=1800):
        """Segment (worker process, blocking) and measure; returns the CaseState."""
        runner = self.analysis.start_segmentation(volumeNode, parameters)
        from CTMuscleBoneSlicer.process import Finished

        final = runner.wait(timeout_s=timeoutSeconds)[-1]
        if not isinstance(final, Finished):
            self.analysis.cleanup_work_dir()
            raise RuntimeError(final.message)
        try:
            case = self.analysis.import_segmentation(volumeNode, parameters)
            self.analysis.measure(parameters)
        finally:
            self.analysis.cleanup_work_dir()
        return case


#
# CTMuscleBoneTest
#


#: Packages the self-test's segmentation needs (installed on first use, never by a test).
SELF_TEST_PACKAGES = ("torch", "monai")


def missingSelfTestPackages():
    """The packages of SELF_TEST_PACKAGES that cannot be imported."""
    import importlib.util

    return [name for name in SELF_TEST_PACKAGES if importlib.util.find_spec(name) is None]


class CTMuscleBoneTest(ScriptedLoadableModuleTest):
    """Whole workflow on the synthetic demo phantom (runs inside Slicer only).

    Skipped, with the reason, when torch or monai is not installed (a fresh Slicer, the
    extension's CTest run): the module installs them only after asking the user.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        missing = missingSelfTestPackages()
        if missing:  # "Reload and Test" calls runTest outside a unittest runner
            self.delayDisplay(self._skipReason(missing))
            return
        self.setUp()
        self.test_workflow()

    @staticmethod
    def _skipReason(missing):
        return ("CTMuscleBone self-test skipped: " + ", ".join(missing) + " not installed "
                "(press Analyze in the module once to install them).")

    def test_workflow(self):
        missing = missingSelfTestPackages()
        if missing:
            self.skipTest(self._skipReason(missing))
        import tempfile

        import numpy as np
        from CTMuscleBoneSlicer import nodes
        from CTMuscleBoneSlicer.parameters import CTMuscleBoneParameters
        from CTMuscleBoneSlicer.sample_data import DEMO_PATIENT, demo_phantom, load_demo_volume

        self.delayDisplay("Building and loading the synthetic demo phantom")
        volume = load_demo_volume()
        self.assertIsNotNone(volume)
        params = CTMuscleBoneParameters(input_volume_id=volume.GetID(), sex=DEMO_PATIENT["sex"],
                                        age_years=DEMO_PATIENT["age_years"],
                                        height_m=DEMO_PATIENT["height_m"],
                                        phantom=DEMO_PATIENT["phantom"], mc_samples=2,
                                        device="cpu")
        logic = CTMuscleBoneLogic()

        self.delayDisplay("Analyze (worker process + measurement)")
        case = logic.analyze(volume, params)
        self.assertIsNotNone(case.segmentation_node)
        self.assertGreater(case.segmentation_node.GetSegmentation().GetNumberOfSegments(), 10)
        self.assertTrue(case.review)
        rows = nodes.table_node_rows(case.table_node)
        self.assertEqual(len(rows), len(case.results.rows))

        self.delayDisplay("Compare with the phantom's truth")
        truth = demo_phantom().truth.structures
        checked = 0
        for row in case.results.rows:
            t = truth.get(row.structure)
            if row.quantity == "volume" and t is not None and t.voxel_volume_cm3:
                self.assertAlmostEqual(row.value, t.voxel_volume_cm3,
                                       delta=0.25 * t.voxel_volume_cm3)
                checked += 1
        self.assertGreater(checked, 5)
        l1 = case.results.get("vertebrae_L1", "trabecular_vbmd")
        if l1 is not None and l1.value is not None:
            self.assertAlmostEqual(l1.value, 95.0, delta=25.0)

        self.delayDisplay("Edit a segment, update measurements")
        key = "psoas_major_left"
        segment_id = logic.analysis.segment_id_for(key)
        self.assertIsNotNone(segment_id)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentation_node, segment_id,
                                                          volume)
        eroded = mask.copy()
        eroded[: mask.shape[0] // 2] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(eroded, case.segmentation_node, segment_id,
                                                         volume)
        before = case.results.get(key, "volume").value
        re = logic.analysis.remeasure(params)
        self.assertIn(key, re.edited_structures)
        after = re.results.get(key, "volume").value
        self.assertLess(after, before)
        self.assertIn((key, "volume"), re.changed_rows)
        self.assertTrue(np.isfinite(after))

        self.delayDisplay("Export")
        folder = tempfile.mkdtemp(prefix="CTMuscleBoneTest-")
        paths = logic.analysis.export(folder)
        for name in ("segmentation",):
            self.assertTrue(os.path.isfile(paths[name]))
        self.assertTrue(os.path.isfile(os.path.join(folder, "results.csv")))
        self.delayDisplay("Test passed")
