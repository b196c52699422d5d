"""Wheel-install smoke test: a non-editable install finds its data and the demo model.

The wheel is built from a copy of the repository (so that the build leaves no
``build/`` or ``*.egg-info`` behind in the working tree), installed into a fresh
virtual environment created without pip, and exercised in a subprocess whose
``sys.path`` does not hold the source tree. The fresh environment borrows this
interpreter's third-party packages (numpy, scipy, SimpleITK, ...) through a ``.pth``
path line that comes *after* its own site-packages; ``.pth`` files of the borrowed
folder (among them the editable install's path hook) are not processed, so
``CTMuscleBoneLib`` can only come from the wheel.

Offline and about 10 s: ``pip wheel --no-build-isolation`` uses the setuptools already
installed; ``pip --python <venv python> install --no-deps`` installs the wheel with the
right script shebang.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "ctmusclebone-demo-synthetic"
MODEL_DATA = f"share/ctmusclebone/models/{MODEL}"
#: Paths not needed to build the wheel (and heavy or machine-specific).
_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".ruff_cache", "out", "demo_out", "Testing",
                                 "benchmarks")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _clean_env(tmp: Path) -> dict[str, str]:
    """Environment without PYTHONPATH / model overrides; an empty user models folder."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "CTMUSCLEBONE_BUNDLED_MODELS",
                        "VIRTUAL_ENV")}
    env["CTMUSCLEBONE_MODELS"] = str(tmp / "no_user_models")
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    try:
        setuptools_major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        setuptools_major = 0
    assert setuptools_major >= 77, (
        "building the wheel offline (--no-build-isolation) needs setuptools >= 77 in this "
        "environment (the dev extra)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    wheels = list((tmp / "dist").glob("ctmusclebone-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_package_data_and_demo_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    lib = REPO / "CTMuscleBone" / "CTMuscleBoneLib"
    expected = [f"CTMuscleBoneLib/{p.relative_to(lib).as_posix()}"
                for pattern in ("data/*.json", "calibration/phantoms/*.json", "calibration/*.json")
                for p in lib.glob(pattern)]
    assert "CTMuscleBoneLib/data/alm_default.json" in expected  # the glob found the sources
    assert any("calibration/phantoms/" in e for e in expected)
    if (lib / "data" / "totalseg_v1_names.json").is_file():
        assert "CTMuscleBoneLib/data/totalseg_v1_names.json" in expected
    missing = sorted(set(expected) - names)
    assert not missing, f"package data missing from the wheel: {missing}"
    cards = [n for n in names if n.endswith(f".data/data/{MODEL_DATA}/card.json")]
    assert len(cards) == 1, "the demo model card is not in the wheel's .data/data/ folder"
    data_dir = cards[0].split("/")[0]
    for f in ("card.json", "model.safetensors"):
        assert f"{data_dir}/data/{MODEL_DATA}/{f}" in names
    assert not any(n.startswith(("Testing/", "CTMuscleBoneSlicer/")) for n in names)


def test_installed_wheel_finds_demo_model_and_runs_cli(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    vpy = venv / "bin" / "python"
    env = _clean_env(tmp_path)
    site = Path(_run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     env=env).stdout.strip())
    # Third-party dependencies borrowed from this interpreter, after the venv's own packages.
    borrowed = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (site / "zz_borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], env=env)

    code = (
        "import json, sys, CTMuscleBoneLib\n"
        "from CTMuscleBoneLib.segmentation import registry\n"
        "from CTMuscleBoneLib.alm import load_alm_model\n"
        "load_alm_model(None)\n"
        f"print(json.dumps({{'lib': CTMuscleBoneLib.__file__, 'prefix': sys.prefix,"
        f" 'model': str(registry.find_model({MODEL!r}))}}))\n"
    )
    got = json.loads(_run([str(vpy), "-c", code], env=env, cwd=tmp_path).stdout)
    lib, model = Path(got["lib"]).resolve(), Path(got["model"]).resolve()
    assert lib.is_relative_to(site.resolve()), f"imported from {lib}, not the installed wheel"
    assert model == (Path(got["prefix"]) / MODEL_DATA).resolve(), model
    assert not model.is_relative_to(REPO)
    assert (model / "card.json").is_file() and (model / "model.safetensors").is_file()

    script = venv / "bin" / "ctmusclebone"
    assert script.is_file()
    assert script.read_text().splitlines()[0].startswith("#!" + str(venv))
    out = _run([str(script), "--version"], env=env, cwd=tmp_path)
    import CTMuscleBoneLib

    assert CTMuscleBoneLib.__version__ in out.stdout + out.stderr
