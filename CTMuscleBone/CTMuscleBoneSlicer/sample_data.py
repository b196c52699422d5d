"""The synthetic demo phantom as a Sample Data entry (built locally on first use).

The phantom is the one ``ctmusclebone demo`` measures (the same
:func:`CTMuscleBoneLib.phantoms.demo.demo_spec`: full region, B-MAS200 calibration phantom
in the field of view, seed 7, F, 1.55 m, 72 years, L-spine 95 mg/cm3, an older patient's
body). There is nothing
to download, so it is registered with a ``customDownloader`` (SampleData.py
``registerCustomSampleDataSource(..., customDownloader=...)``: the Sample Data button
calls it with the source) that builds the CT into Slicer's cache folder and loads it; a
``file://`` URI with a checksum would claim a reproducibility across numpy/SimpleITK
versions that is not guaranteed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from CTMuscleBoneLib.phantoms.demo import DEMO_BODY, DEMO_PATIENT, DEMO_SEED

CATEGORY = "CTMuscleBone"
SAMPLE_NAME = "CTMuscleBoneDemoPhantom"
NODE_NAME = "CTMuscleBoneDemoPhantom"
FILE_NAME = "CTMuscleBoneDemoPhantom.nrrd"
# DEMO_SEED: the demo's phantom seed (not among the demo model's training seeds);
# DEMO_PATIENT: patient facts the phantom was built with (the panel fills them in when it
# loads); DEMO_BODY: its habitus (CTMuscleBoneLib.phantoms.demo).
__all__ = ["DEMO_BODY", "DEMO_PATIENT", "DEMO_SEED", "demo_phantom", "demo_spec",
           "write_demo_ct"]
#: Node attribute prefix carrying :data:`DEMO_PATIENT` on the loaded volume.
ATTRIBUTE_PREFIX = "CTMuscleBone."


def demo_spec(spacing_mm: float = 2.0):
    """The :class:`PhantomSpec` of the demo (as in ``ctmusclebone demo``)."""
    from CTMuscleBoneLib.phantoms.demo import demo_spec as core_demo_spec

    return core_demo_spec(spacing_mm)


@functools.lru_cache(maxsize=2)
def demo_phantom(spacing_mm: float = 2.0):
    """The demo :class:`~CTMuscleBoneLib.phantoms.Phantom` (CT, labels, truth); ~4 s."""
    from CTMuscleBoneLib.phantoms import make_phantom

    return make_phantom(demo_spec(spacing_mm))


def write_demo_ct(folder: str | Path, spacing_mm: float = 2.0) -> Path:
    """Write the demo CT as NRRD into ``folder`` (reused when already there) and return it.

    A ``.json`` stamp beside it records the core version and spacing; a stale file is
    rebuilt.
    """
    import CTMuscleBoneLib
    from CTMuscleBoneLib.io_ct import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    stamp_path = folder / (FILE_NAME + ".json")
    stamp = {"ctmusclebone": CTMuscleBoneLib.__version__, "spacing_mm": spacing_mm,
             "seed": DEMO_SEED, "body": DEMO_BODY,
             "note": "SYNTHETIC PHANTOM made by CTMuscleBone; not a patient"}
    if path.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
                return path
        except ValueError:
            pass
    phantom = demo_phantom(spacing_mm)
    write_image(phantom.ct.hu, phantom.ct.geometry, path)
    stamp_path.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return path


# -- Slicer ---------------------------------------------------------------------------
def register_sample_data(icons_dir: str | Path) -> None:
    """Register the demo phantom in the Sample Data module (call on startupCompleted)."""
    import SampleData

    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # newer Slicer only
        logic.registerCustomSampleDataCategory(CATEGORY, title="CTMuscleBone (synthetic)")
    thumbnail = Path(icons_dir) / "CTMuscleBoneDemoPhantom.png"
    logic.registerCustomSampleDataSource(
        category=CATEGORY, sampleName=SAMPLE_NAME,
        thumbnailFileName=str(thumbnail) if thumbnail.is_file() else None,
        uris=None, fileNames=FILE_NAME, nodeNames=NODE_NAME,
        customDownloader=load_demo_volume)


def cache_folder() -> Path:
    """``<Slicer cache>/CTMuscleBone`` (where Sample Data keeps its downloads)."""
    import slicer

    return Path(slicer.app.cachePath) / "CTMuscleBone"


def load_demo_volume(source: Any = None):
    """Build (first time) and load the demo phantom; returns the volume node.

    ``source`` is the SampleDataSource when called by the Sample Data button (unused).
    """
    import slicer

    with slicer.util.tryWithErrorDisplay("Could not build the CTMuscleBone demo phantom.",
                                         waitCursor=True):
        path = write_demo_ct(cache_folder())
        node = slicer.util.loadVolume(str(path), properties={"name": NODE_NAME})
        for key, value in DEMO_PATIENT.items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
        node.SetAttribute(ATTRIBUTE_PREFIX + "synthetic", "true")
        return node
