"""Shared pytest fixtures.

``real_data_dir`` points at ../shared/data/real (a real lumbar CT crop with
TotalSegmentator labels, kept outside the repository); tests using it skip when it is
absent, as on a user's machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Make the core importable without installation (it is also pip-installable).
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

REAL_DATA_DIR = Path(os.environ.get("CTMB_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA_DIR / "lumbar_ct.nii.gz").is_file():
        pytest.skip(f"real CT data not available at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: the test machine's cores are shared (avoids
    oversubscription). Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
