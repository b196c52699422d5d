"""Static checks of the Slicer module: .ui, widget names, CMake lists, class names, layering.

Nothing here imports CTMuscleBone.py or Qt: the module file is parsed with ``ast``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from CTMuscleBoneSlicer.parameters import PARAMETER_WIDGETS, CTMuscleBoneParameters

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CTMuscleBone"
UI_FILE = MODULE / "Resources" / "UI" / "CTMuscleBone.ui"
SLICER_SIDE = [MODULE / "CTMuscleBone.py", *sorted((MODULE / "CTMuscleBoneSlicer").glob("*.py"))]


def _ui_widgets() -> dict[str, str]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _cmake_list(path: Path, variable: str) -> list[str]:
    text = path.read_text()
    m = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert m, f"{variable} not set in {path}"
    name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text).group(1)
    return [x.replace("${MODULE_NAME}", name) for x in m.group(1).split()]


def test_ui_parses_and_is_a_qmrmlwidget_named_like_the_module():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "CTMuscleBone")
    customs = {c.findtext("class") for c in root.iter("customwidget")}
    used = set(_ui_widgets().values())
    slicer_classes = {c for c in used if c.startswith(("qMRML", "ctk"))}
    assert slicer_classes <= customs, slicer_classes - customs


def test_mrml_widgets_get_the_scene():
    """Every qMRML widget receives setMRMLScene from the top widget (template pattern)."""
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {n for n, c in _ui_widgets().items() if c.startswith("qMRML") and n != "CTMuscleBone"}
    assert mrml <= receivers, mrml - receivers


def _ui_attribute_names(path: Path) -> set[str]:
    """Names used as ``<x>.ui.<name>`` or ``ui.<name>`` in a Python file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Attribute) and base.attr == "ui") or (
                    isinstance(base, ast.Name) and base.id == "ui"):
                names.add(node.attr)
    return names


def _widget_names_in_strings(path: Path) -> set[str]:
    """Widget names given as strings (getattr(ui, name)) in the widget tables."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"[a-z][A-Za-z]*(ComboBox|SpinBox|Slider|CheckBox|Button|Selector|LineEdit|"
                r"TableWidget|TableView|ProgressBar|Label)", node.value):
            out.add(node.value)
    return out


@pytest.mark.parametrize("path", SLICER_SIDE, ids=lambda p: p.name)
def test_every_widget_the_code_uses_exists_in_the_ui(path):
    widgets = set(_ui_widgets())
    used = _ui_attribute_names(path) | _widget_names_in_strings(path)
    missing = used - widgets - {"setMRMLScene"}
    assert not missing, f"{path.name} uses widgets missing from the .ui: {sorted(missing)}"


def test_every_parameter_has_its_widget():
    widgets = _ui_widgets()
    fields = {f.name for f in dataclasses.fields(CTMuscleBoneParameters)}
    assert set(PARAMETER_WIDGETS) == fields
    for name, widget in PARAMETER_WIDGETS.items():
        assert widget in widgets, f"parameter {name}: widget {widget} not in the .ui"


def test_widget_controller_covers_every_parameter():
    """widget.py reads each parameter from the widget PARAMETER_WIDGETS names."""
    tree = ast.parse((MODULE / "CTMuscleBoneSlicer" / "widget.py").read_text())
    tables: dict[str, dict] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("COMBO_CHOICES", "VALUE_WIDGETS"):
            tables[node.targets[0].id] = node.value
    combos = {k.value: v.elts[0].value for k, v in zip(tables["COMBO_CHOICES"].keys,
                                                       tables["COMBO_CHOICES"].values, strict=True)}
    values = {k.value: v.value for k, v in zip(tables["VALUE_WIDGETS"].keys,
                                               tables["VALUE_WIDGETS"].values, strict=True)}
    handled = {**combos, **values, "input_volume_id": "inputVolumeSelector",
               "model": "modelComboBox", "heatmap_visible": "heatmapVisibleCheckBox",
               "output_folder": "outputFolderPathLineEdit",
               "dxa_model": "dxaModelPathLineEdit", "deidentify": "deidentifyCheckBox",
               "export_dicom": "dicomExportCheckBox"}
    assert handled == PARAMETER_WIDGETS


def test_cmake_lists_every_python_file_of_the_module():
    listed = set(_cmake_list(MODULE / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS"))
    present = {"CTMuscleBone.py"}
    for package in ("CTMuscleBoneSlicer", "CTMuscleBoneLib"):
        present |= {p.relative_to(MODULE).as_posix() for p in (MODULE / package).rglob("*.py")
                    if "__pycache__" not in p.parts}
    assert present - listed == set(), (f"not in CMakeLists.txt: {sorted(present - listed)}; "
                                       "run python Utilities/update_cmake_lists.py")
    assert listed - present == set(), f"listed but absent: {sorted(listed - present)}"


def test_cmake_lists_every_resource_and_they_exist():
    listed = set(_cmake_list(MODULE / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES"))
    for rel in listed:
        assert (MODULE / rel).is_file(), f"resource listed but absent: {rel}"
    resources = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*")
                 if p.is_file()}
    data = {p.relative_to(MODULE).as_posix() for p in (MODULE / "CTMuscleBoneLib").rglob("*")
            if p.is_file() and p.suffix in (".json", ".csv")}
    missing = (resources | data) - listed
    assert not missing, (f"resources not in CMakeLists.txt: {sorted(missing)}; "
                         "run python Utilities/update_cmake_lists.py")


def test_cmake_uses_the_macro_with_its_argument_names_and_the_self_test():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s+"
                     r"SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}\s+"
                     r"RESOURCES \$\{MODULE_PYTHON_RESOURCES\}",
                     text)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_icon_screenshot_and_dependencies():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert re.search(r"^add_subdirectory\(CTMuscleBone\)$", text, re.M)
    prefix = "https://raw.githubusercontent.com/ctmusclebone/CTMuscleBone/main/"
    icon = re.search(r'EXTENSION_ICONURL "([^"]+)"', text).group(1)
    shots = re.search(r'EXTENSION_SCREENSHOTURLS "([^"]*)"', text).group(1).split()
    assert shots
    for url in [icon, *shots]:
        assert url.startswith(prefix)
        assert (ROOT / url[len(prefix):]).is_file(), url


def test_icons_are_png_of_the_right_size():
    for path, size in ((MODULE / "Resources" / "Icons" / "CTMuscleBone.png", (128, 128)),
                       (ROOT / "Resources" / "CTMuscleBone.png", (128, 128))):
        head = path.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == size


def test_module_classes_follow_slicers_pattern():
    tree = ast.parse((MODULE / "CTMuscleBone.py").read_text())
    classes = {c.name: [b.id for b in c.bases if isinstance(b, ast.Name)]
               for c in tree.body if isinstance(c, ast.ClassDef)}
    assert classes["CTMuscleBone"] == ["ScriptedLoadableModule"]
    assert classes["CTMuscleBoneWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["CTMuscleBoneLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["CTMuscleBoneTest"] == ["ScriptedLoadableModuleTest"]
    text = (MODULE / "CTMuscleBone.py").read_text()
    assert 'categories = ["Quantification"]' in text
    assert "not for clinical" in text.lower()


def test_logic_knows_no_widget():
    for path in (MODULE / "CTMuscleBoneSlicer" / "logic.py",):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"qt", "ctk", "CTMuscleBoneSlicer.widget"}, imported
        assert "widget" not in {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "self.ui" not in path.read_text()


@pytest.mark.parametrize("path", SLICER_SIDE, ids=lambda p: p.name)
def test_slicer_side_never_imports_the_cli(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("CTMuscleBoneLib.cli"), path
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("CTMuscleBoneLib.cli") for a in node.names), path


def test_slicer_side_is_under_20_percent_of_the_python_code():
    def lines(paths):
        return sum(len(p.read_text().splitlines()) for p in paths)

    core = [p for p in (MODULE / "CTMuscleBoneLib").rglob("*.py") if "__pycache__" not in p.parts]
    slicer_side = lines(SLICER_SIDE)
    total = slicer_side + lines(core)
    assert slicer_side / total < 0.20, f"Slicer side {slicer_side} of {total} lines"


def test_worker_is_runnable_as_a_file_and_imports_only_the_core_api():
    text = (MODULE / "CTMuscleBoneSlicer" / "worker.py").read_text()
    assert 'if __name__ == "__main__":' in text
    assert "sys.path.insert(0, module_dir)" in text
    tree = ast.parse(text)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in modules if m and m.startswith("CTMuscleBoneLib")} <= {
        "CTMuscleBoneLib", "CTMuscleBoneLib.errors", "CTMuscleBoneLib.io_ct"}


#: The value-changed signals of the widget classes the panel edits numbers with (Qt 5/6
#: QSpinBox: valueChanged(int) only; QDoubleSpinBox, ctkSliderWidget, ctkDoubleSpinBox:
#: valueChanged(double)).
VALUE_SIGNALS_OF_CLASS = {"QSpinBox": {"valueChanged(int)"},
                          "QDoubleSpinBox": {"valueChanged(double)"},
                          "ctkDoubleSpinBox": {"valueChanged(double)"},
                          "ctkSliderWidget": {"valueChanged(double)"}}


def _value_widget_connections() -> dict[str, set[str]]:
    """Widget name -> the valueChanged signals widget.py connects on it (for-loops over
    VALUE_WIDGETS.values() or a tuple of names, and ``ui.<name>.connect(...)``)."""
    tree = ast.parse((MODULE / "CTMuscleBoneSlicer" / "widget.py").read_text())
    tables = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
              and n.targets[0].id in ("VALUE_WIDGETS", "VALUE_WIDGET_SIGNALS")}
    out: dict[str, set[str]] = {}

    def signal_for(arg: ast.expr, widget: str) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name) \
                and arg.value.id in tables:
            return tables[arg.value.id].get(widget)
        return "<unknown>"

    def connects(body: list[ast.stmt]):
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "connect" and node.args:
                yield node

    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            it = node.iter
            if isinstance(it, ast.Call) and ast.unparse(it) == "VALUE_WIDGETS.values()":
                names = list(tables["VALUE_WIDGETS"].values())
            elif isinstance(it, ast.Tuple):
                names = [e.value for e in it.elts if isinstance(e, ast.Constant)]
            else:
                continue
            for call in connects(node.body):
                for name in names:
                    sig = signal_for(call.args[0], name)
                    if sig and sig.startswith(("valueChanged", "<")):
                        out.setdefault(name, set()).add(sig)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "connect" and isinstance(node.func.value, ast.Attribute):
            name = node.func.value.attr
            sig = signal_for(node.args[0], name) if node.args else None
            if sig and sig.startswith("valueChanged"):
                out.setdefault(name, set()).add(sig)
    return out


def test_value_widgets_are_connected_with_the_signal_of_their_class():
    """A QSpinBox has no valueChanged(double): connecting it saves nothing (MC samples)."""
    classes = _ui_widgets()
    connected = _value_widget_connections()
    tree = ast.parse((MODULE / "CTMuscleBoneSlicer" / "widget.py").read_text())
    value_widgets = next(ast.literal_eval(n.value) for n in tree.body
                         if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                         and n.targets[0].id == "VALUE_WIDGETS")
    for widget in value_widgets.values():
        cls = classes[widget]
        assert cls in VALUE_SIGNALS_OF_CLASS, f"{widget}: add the signals of {cls}"
        assert connected.get(widget), f"{widget} is never connected"
        wrong = connected[widget] - VALUE_SIGNALS_OF_CLASS[cls]
        assert not wrong, f"{widget} ({cls}) connected with {sorted(wrong)}"


def test_self_test_skips_without_torch_and_monai():
    """The self-test needs the segmentation packages; without them it is skipped with the
    reason (unittest's skipTest in the test method; runTest returns after saying why)."""
    tree = ast.parse((MODULE / "CTMuscleBone.py").read_text())
    test_class = next(c for c in tree.body
                      if isinstance(c, ast.ClassDef) and c.name == "CTMuscleBoneTest")
    methods = {f.name: f for f in test_class.body if isinstance(f, ast.FunctionDef)}
    assert 'SELF_TEST_PACKAGES = ("torch", "monai")' in (MODULE / "CTMuscleBone.py").read_text()
    first = ast.unparse(methods["test_workflow"].body[0]) + ast.unparse(
        methods["test_workflow"].body[1])
    assert "missingSelfTestPackages()" in first and "self.skipTest(" in first
    run = ast.unparse(methods["runTest"])
    assert run.index("missingSelfTestPackages()") < run.index("self.test_workflow()")
