"""Headless 3D Slicer set-up for tests (the ``slicer-core`` package, no application).

:func:`slicer_env` builds what Slicer's application does at start-up: a scene, the
application logic, and the colour, volumes, segmentations and terminologies logics
bound to them, with ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` set for
the ``slicer.util`` helpers that use them; three slice views (Red, Yellow, Green) with
their composite nodes. Teardown clears the scene, removes the attributes and collects
garbage (without it the interpreter crashed at exit in some runs).

Use in a test module (the fixture is registered under the name ``slicer_env``)::

    import slicer_fixtures

    _slicer_env = pytest.fixture(slicer_fixtures.slicer_environment, name="slicer_env")
"""

from __future__ import annotations

import gc
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SLICE_VIEWS = ("Red", "Yellow", "Green")


@dataclass
class SlicerEnv:
    """The headless Slicer objects of one test."""

    scene: Any
    app_logic: Any
    logics: dict[str, Any]
    slice_logics: list[Any] = field(default_factory=list)
    saved: dict[str, Any] = field(default_factory=dict)  # slicer attributes replaced

    def slice_nodes(self) -> list[Any]:
        nodes = self.scene.GetNodesByClass("vtkMRMLSliceNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]

    def composite_nodes(self) -> list[Any]:
        nodes = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def make_env() -> SlicerEnv:
    """Build the scene and logics (see module docstring); undo with :func:`close_env`."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logics: dict[str, Any] = {}
    for name, cls in (("colors", slicer.vtkSlicerColorLogic),
                      ("volumes", slicer.vtkSlicerVolumesLogic),
                      ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        logics[name] = logic
    app.SetModuleLogic("Colors", logics["colors"])
    # The terminologies logic loads Slicer's default files when it gets a scene; they
    # are not in slicer-core, so it gets none (its loading functions need no scene).
    logics["terminologies"] = slicer.vtkSlicerTerminologiesModuleLogic()
    env = SlicerEnv(scene=scene, app_logic=app, logics=logics)
    for view in SLICE_VIEWS:
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app)
        slice_logic.SetMRMLScene(scene)
        slice_logic.AddSliceNode(view)
        env.slice_logics.append(slice_logic)
    env.saved = {a: getattr(slicer, a) for a in ("mrmlScene", "modules") if hasattr(slicer, a)}
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(**{
        name: types.SimpleNamespace(logic=(lambda lg=logic: lg)) for name, logic in logics.items()
    })
    return env


def close_env(env: SlicerEnv) -> None:
    """Clear the scene, drop the logics, restore the ``slicer`` attributes, collect garbage."""
    import slicer

    env.scene.Clear(True)
    for attr in ("mrmlScene", "modules"):
        if attr in env.saved:
            setattr(slicer, attr, env.saved[attr])
        elif hasattr(slicer, attr):
            delattr(slicer, attr)
    env.slice_logics.clear()
    env.logics.clear()
    env.app_logic = None
    env.scene = None
    gc.collect()


def slicer_environment() -> Iterator[SlicerEnv]:
    """Fixture body: a fresh headless Slicer scene with its logics (see module docstring)."""
    env = make_env()
    try:
        yield env
    finally:
        close_env(env)
