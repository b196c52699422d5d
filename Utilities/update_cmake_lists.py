"""Rewrite the file lists of CTMuscleBone/CMakeLists.txt from the module folder.

Slicer's ``slicerMacroBuildScriptedModule`` installs only the scripts and resources it
is given, so every Python file of the module (the thin module file, CTMuscleBoneSlicer
and the core CTMuscleBoneLib) and every resource (Resources/** and the core's data
files) must be listed. Run this after adding or removing a file::

    python Utilities/update_cmake_lists.py

``Testing/test_slicer_contract.py`` fails when the lists are out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "CTMuscleBone"
NAME = "CTMuscleBone"
#: Resources listed first, in this order (the rest follow sorted).
FIRST = ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui")


def _files(pattern_dirs: list[str], suffixes: tuple[str, ...] | None) -> list[str]:
    out: list[str] = []
    for d in pattern_dirs:
        for p in sorted((MODULE / d).rglob("*")):
            if not p.is_file() or "__pycache__" in p.parts:
                continue
            if suffixes is not None and p.suffix not in suffixes:
                continue
            out.append(p.relative_to(MODULE).as_posix())
    return out


def scripts() -> list[str]:
    """Every .py file of the module, the module file first."""
    return ["${MODULE_NAME}.py", *_files(["CTMuscleBoneSlicer", "CTMuscleBoneLib"], (".py",))]


def resources() -> list[str]:
    """Resources/** and the core's data files (.json, .csv)."""
    files = _files(["Resources"], None) + _files(["CTMuscleBoneLib"], (".json", ".csv"))
    named = [f.replace(f"/{NAME}.", "/${MODULE_NAME}.") for f in files]
    first = [f for f in FIRST if f in named]
    return first + [f for f in named if f not in first]


def _replace(text: str, variable: str, items: list[str]) -> str:
    body = "".join(f"  {i}\n" for i in items)
    new, n = re.subn(rf"set\({variable}\s+.*?\)", f"set({variable}\n{body}  )", text,
                     count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"{variable} not found in CMakeLists.txt")
    return new


def main() -> int:
    path = MODULE / "CMakeLists.txt"
    text = path.read_text(encoding="utf-8")
    new = _replace(_replace(text, "MODULE_PYTHON_SCRIPTS", scripts()),
                   "MODULE_PYTHON_RESOURCES", resources())
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    else:
        print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
