"""Install the Python packages the module needs, on first use, after confirmation.

Never at import. torch comes through the PyTorch extension (``PyTorchUtils``, declared in
the extension's ``EXTENSION_DEPENDS``), the rest (``Resources/requirements.txt``: monai
and safetensors for the segmentation, matplotlib and reportlab for the report, highdicom
for the DICOM SEG + SR export) with ``slicer.packaging.pip_ensure`` (Slicer 5.12+, asks
for confirmation itself) or, in older Slicer, ``slicer.util.pip_install`` after
``slicer.util.confirmOkCancelDisplay``. Each use installs only its own group
(:data:`SEGMENTATION_PACKAGES`, :data:`REPORT_PACKAGES`, :data:`DICOM_PACKAGES`).

Call pattern sources: SlicerMONAIAuto3DSeg ``MONAIAuto3DSegLib/dependency_handler.py``
(``PyTorchUtilsLogic().torchInstalled()`` / ``installTorch(askConfirmation=True,
torchVersionRequirement=...)``, which returns None when the user declines), SlicerPyTorch
``PyTorchUtils.py`` (the signature), Slicer ``Base/Python/slicer/packaging.py``
(``load_requirements``, ``pip_ensure(requirements, constraints=..., requester=...)``,
which raises ``RuntimeError("User declined package installation")`` on a decline) and the scripted
module template's ``onApplyButton``.

:func:`missing_packages` is pure Python and tested without Slicer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MINIMUM_TORCH = ">=2.1"
REQUESTER = "CTMuscleBone"
#: Distribution names of each group of ``Resources/requirements.txt``.
SEGMENTATION_PACKAGES = ("monai", "safetensors")
REPORT_PACKAGES = ("matplotlib", "reportlab")
DICOM_PACKAGES = ("highdicom",)
#: Installed packages pip must not change while installing ours: torch belongs to the
#: PyTorch extension (PyTorchUtils picks the build for the GPU and CUDA), and e.g. monai
#: 1.6 requires torch>=2.8, so an unconstrained ``pip install monai`` would upgrade it.
PINNED_PACKAGES = ("torch",)


class DependencyError(RuntimeError):
    """A package could not be installed or the user declined; the message says what to do."""


def requirements_file() -> Path:
    """``Resources/requirements.txt`` of the module (every group above; not torch)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"


def read_requirements(path: str | Path | None = None) -> list[str]:
    """Requirement strings of a requirements file (comments, blanks and options skipped,
    as ``slicer.packaging.load_requirements`` does)."""
    lines = Path(path or requirements_file()).read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith("#") and not text.startswith("-"):
            out.append(text)
    return out


def requirement_name(text: str) -> str:
    """The distribution name of a requirement string (``"monai>=1.3"`` -> ``"monai"``)."""
    return re.split(r"[\s\[<>=!~;]", text.strip(), maxsplit=1)[0].lower()


def requirements_for(names: Iterable[str], path: str | Path | None = None) -> list[str]:
    """The lines of the requirements file for the distributions ``names``.

    Raises
    ------
    ValueError
        A name the file does not list (the file and the groups above disagree).
    """
    reqs = {requirement_name(r): r for r in read_requirements(path)}
    wanted = [n.lower() for n in names]
    absent = [n for n in wanted if n not in reqs]
    if absent:
        raise ValueError(f"{', '.join(absent)} not listed in {path or requirements_file()}")
    return [reqs[n] for n in wanted]


def missing_packages(requirements: Iterable[str]) -> list[str]:
    """The requirements not satisfied by the installed distributions.

    Parameters
    ----------
    requirements : iterable of str
        PEP 508 strings such as ``"monai>=1.3"``; environment markers are honoured.

    Returns
    -------
    list of str
        The requirement strings, in input order, whose distribution is absent or whose
        installed version is outside the specifier.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging ships with pip and with Slicer; fall back to names only
        Requirement = None  # type: ignore[assignment]  # noqa: N806
    missing = []
    for text in requirements:
        if Requirement is None:
            name = requirement_name(text)
            try:
                importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(text)
            continue
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def ensure_torch() -> None:
    """Make torch importable through the PyTorch extension (asks the user first)."""
    if not missing_packages([f"torch{MINIMUM_TORCH}"]):
        return
    try:
        import PyTorchUtils
    except ModuleNotFoundError as e:
        raise DependencyError(
            "CTMuscleBone needs the PyTorch extension (it installs torch). Install 'PyTorch' "
            "from the Extensions Manager, restart Slicer and try again.") from e
    logic = PyTorchUtils.PyTorchUtilsLogic()
    torch = logic.installTorch(askConfirmation=True, torchVersionRequirement=MINIMUM_TORCH)
    if torch is None:
        raise DependencyError(
            "torch was not installed (cancelled or failed). Use the PyTorch Utils module to "
            f"install torch {MINIMUM_TORCH}, then press Analyze again.")


def installed_pins(names: Iterable[str] = PINNED_PACKAGES) -> list[str]:
    """``name==version`` of the installed distributions among ``names`` (absent ones are
    left out), e.g. ``["torch==2.5.1+cu121"]``."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def write_constraints(pins: list[str]) -> Path | None:
    """A temporary pip constraints file holding ``pins`` (None when there are none); the
    caller deletes it."""
    if not pins:
        return None
    fd, name = tempfile.mkstemp(prefix="CTMuscleBone-constraints-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(pins) + "\n")
    return Path(name)


def _declined(error: BaseException) -> bool:
    """True for ``slicer.packaging.pip_ensure``'s "User declined package installation"."""
    return isinstance(error, RuntimeError) and "declined" in str(error).lower()


def ensure_packages(requirements: list[str] | None = None, purpose: str = "the segmentation",
                    packaging: Any = None) -> None:
    """Install the ``requirements`` (default: every line of the requirements file) that
    are missing (asks the user first); ``purpose`` is named in the messages.

    pip gets a constraints file pinning the installed :data:`PINNED_PACKAGES` (torch), so
    installing monai cannot replace the torch the PyTorch extension installed.
    ``packaging``: the ``slicer.packaging`` module (default; Slicer 5.12+, tests inject
    a stand-in); without ``pip_ensure`` the user is asked here and
    ``slicer.util.pip_install`` installs.

    Raises
    ------
    DependencyError
        The user declined ("cancelled"), pip failed, or a package is still missing.
    """
    reqs = read_requirements() if requirements is None else list(requirements)
    missing = missing_packages(reqs)
    if not missing:
        return
    if packaging is None:
        try:
            import slicer.packaging as packaging  # Slicer 5.12+
        except ImportError:
            packaging = None
    cancelled = DependencyError("Installation of " + ", ".join(missing)
                                + f" cancelled; {purpose} cannot run without them. Press the "
                                "button again to be asked again.")
    constraints = write_constraints(installed_pins())
    try:
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            # pip_ensure shows its own confirmation and raises RuntimeError if declined.
            packaging.pip_ensure(missing, constraints=None if constraints is None
                                 else str(constraints), requester=REQUESTER)
        else:
            import slicer

            text = ("CTMuscleBone needs these Python packages, which will be downloaded and "
                    "installed now (a few minutes):\n\n" + "\n".join(missing))
            if not slicer.util.confirmOkCancelDisplay(text, "CTMuscleBone"):
                raise cancelled
            # a list is passed to pip as its arguments (slicer.util.pip_install)
            slicer.util.pip_install(missing + (["-c", str(constraints)] if constraints else []))
    except DependencyError:
        raise
    except Exception as e:  # noqa: BLE001  (pip errors come in many types)
        if _declined(e):
            raise cancelled from e
        logging.exception("CTMuscleBone: package installation failed")
        raise DependencyError(
            f"Installing {', '.join(missing)} failed: {e}\nCheck the network connection and "
            "the Python console log, or install them from the Python console with "
            f"slicer.util.pip_install({missing!r}), then restart Slicer.") from e
    finally:
        if constraints is not None:
            constraints.unlink(missing_ok=True)
    still = missing_packages(missing)
    if still:
        raise DependencyError("These packages are still missing after installation: "
                              + ", ".join(still) + ". Restart Slicer and try again.")


def ensure_segmentation_dependencies() -> None:
    """torch, then monai and safetensors; raises :class:`DependencyError` with advice."""
    ensure_torch()
    ensure_packages(requirements_for(SEGMENTATION_PACKAGES))


def ensure_export_dependencies(dicom: bool = False) -> None:
    """matplotlib and reportlab (the report), and highdicom with ``dicom`` (the DICOM SEG
    + SR); raises :class:`DependencyError` with advice."""
    names = REPORT_PACKAGES + (DICOM_PACKAGES if dicom else ())
    ensure_packages(requirements_for(names), purpose="the export")
