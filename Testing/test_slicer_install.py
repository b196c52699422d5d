"""Dependency installation without the GUI: what ``slicer.packaging.pip_ensure`` is given
(a stand-in records it), and what a decline or a failure tells the user."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from CTMuscleBoneSlicer import install
from CTMuscleBoneSlicer.install import DependencyError, ensure_packages

MISSING = ["ctmusclebone-no-such-package>=1.0"]  # never installed: always "missing"


class _Packaging:
    """Stands in for ``slicer.packaging``: records the call, reads the constraints file
    while it exists, then does what ``outcome`` says."""

    def __init__(self, outcome: BaseException | None = None) -> None:
        self.outcome = outcome
        self.calls: list[tuple[list[str], dict]] = []
        self.constraints_text: str | None = None

    def pip_ensure(self, requirements, constraints=None, skip_packages=None,
                   prompt_install=True, prompt_restart=True, requester=None,
                   skip_in_testing=True, show_progress=True):
        # the signature of Base/Python/slicer/packaging.py (Slicer 5.12)
        self.calls.append((list(requirements), {"constraints": constraints,
                                                "skip_packages": skip_packages,
                                                "requester": requester}))
        if constraints is not None:
            self.constraints_text = Path(constraints).read_text(encoding="utf-8")
        if self.outcome is not None:
            raise self.outcome


def test_pip_ensure_gets_a_constraints_file_pinning_the_installed_torch(monkeypatch):
    monkeypatch.setattr(install, "installed_pins", lambda: ["torch==2.5.1+cu121"])
    packaging = _Packaging()
    with pytest.raises(DependencyError, match="still missing"):  # the stand-in installs nothing
        ensure_packages(MISSING, packaging=packaging)
    (requirements, kwargs), = packaging.calls
    assert requirements == MISSING and kwargs["requester"] == "CTMuscleBone"
    assert kwargs["skip_packages"] is None
    assert packaging.constraints_text.split() == ["torch==2.5.1+cu121"]
    assert not Path(kwargs["constraints"]).exists()  # removed afterwards


def test_without_torch_installed_there_is_no_constraints_file(monkeypatch):
    monkeypatch.setattr(install, "installed_pins", lambda: [])
    packaging = _Packaging()
    with pytest.raises(DependencyError):
        ensure_packages(MISSING, packaging=packaging)
    assert packaging.calls[0][1]["constraints"] is None


def test_installed_pins_names_the_installed_version(monkeypatch):
    versions = {"torch": "2.8.0"}

    def version(name):
        if name not in versions:
            raise install.importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(install.importlib.metadata, "version", version)
    assert install.installed_pins() == ["torch==2.8.0"]
    assert install.installed_pins(("torch", "absent")) == ["torch==2.8.0"]
    versions.clear()
    assert install.installed_pins() == []


def test_a_declined_install_says_cancelled_not_network():
    packaging = _Packaging(RuntimeError("User declined package installation"))
    with pytest.raises(DependencyError) as info:
        ensure_packages(MISSING, purpose="the report", packaging=packaging)
    text = str(info.value)
    assert "cancelled" in text and "the report" in text
    assert "network" not in text.lower()


def test_a_failed_install_points_to_the_network_and_the_log():
    packaging = _Packaging(subprocess.CalledProcessError(1, ["pip", "install"]))
    with pytest.raises(DependencyError) as info:
        ensure_packages(MISSING, packaging=packaging)
    assert "failed" in str(info.value) and "network" in str(info.value)


def test_nothing_missing_asks_nothing():
    packaging = _Packaging(AssertionError("must not be called"))
    ensure_packages(["pytest"], packaging=packaging)
    assert packaging.calls == []
