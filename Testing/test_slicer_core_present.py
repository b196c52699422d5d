"""The Slicer adapter tests need the PyPI package slicer-core: they must run, not vanish.

On the platforms slicer-core ships wheels for (x86_64, CPython 3.10-3.13) a missing
package is a failure with the command that installs it, never a silent skip.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

import pytest

SUPPORTED = platform.machine() in ("x86_64", "AMD64") and (3, 10) <= sys.version_info[:2] < (3, 14)


@pytest.mark.skipif(not SUPPORTED, reason="slicer-core has no wheel for this platform")
def test_slicer_core_is_installed():
    assert importlib.util.find_spec("slicer") is not None, (
        "slicer-core is not installed, so the Slicer adapter tests cannot run: "
        "pip install \"slicer-core==5.12.4.0\" (or pip install -e \".[dev]\")")
    import slicer

    assert hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkMRMLSegmentationNode")
