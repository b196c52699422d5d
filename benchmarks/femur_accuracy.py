"""Accuracy and run time of femoral BMD on synthetic femurs (not a test: prints a table).

Run: ``python benchmarks/femur_accuracy.py``. Truth: the phantom's exact line integrals
(vBMD of the 3-D regions; CT-aBMD on the analytic DXA-view projection).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))
sys.path.insert(0, str(ROOT / "Testing"))

from CTMuscleBoneLib.calibration import Calibration  # noqa: E402
from CTMuscleBoneLib.femur import measure_femurs  # noqa: E402
from CTMuscleBoneLib.phantoms.base import ScannerModel  # noqa: E402
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec  # noqa: E402
from femur_raster import ORIENTATIONS, analytic_abmd, grid_around, rasterize  # noqa: E402

SCANNER = ScannerModel()
CAL = Calibration("phantom", "K2HPO4", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")
SIZES = {
    "small": dict(head_radius_mm=20.0, neck_radius_mm=13.0, shaft_radius_mm=12.5,
                  neck_length_mm=50.0, greater_trochanter_semi_axes_mm=(12.0, 13.0, 18.0)),
    "default": {},
    "large": dict(head_radius_mm=25.0, neck_radius_mm=17.0, shaft_radius_mm=15.5,
                  neck_length_mm=60.0, cortical_thickness_mm=3.5),
}


def main() -> None:
    rng = np.random.default_rng(7)
    print("side size NSA AV spacing orient | head_err_mm | vBMD err % (total neck troch) | "
          "aBMD err % (TH FN) | s/femur")
    errs = {"head": [], "vbmd": [], "abmd": []}
    for n in range(16):
        side = ("left", "right")[n % 2]
        size = list(SIZES)[n % 3]
        nsa = float(rng.uniform(120, 140))
        av = float(rng.uniform(0, 30))
        sp = float((0.8, 1.0, 1.5, 2.0)[n % 4])
        ori = list(ORIENTATIONS)[(n // 2) % 4]
        ph = FemurPhantom(FemurSpec(side=side, neck_shaft_angle_deg=nsa, anteversion_deg=av,
                                    **SIZES[size]), SCANNER)
        lo, hi = ph.bounds_mm()
        ct, labels = rasterize([ph], grid_around(lo, hi, (sp, sp, sp), ORIENTATIONS[ori]))
        t0 = time.perf_counter()
        out = measure_femurs(ct, labels, CAL)
        dt = time.perf_counter() - t0
        rows = {r.quantity: r.value for r in out.rows if r.structure == f"femur_{side}"}
        tr = ph.truth()
        ab = analytic_abmd(ph)
        he = float(np.linalg.norm(out.landmarks[side].head_centre_mm - tr.head_centre_mm))
        ve = [100 * (rows[f"vbmd_{k}"] / tr.vbmd_mg_cm3[k] - 1)
              for k in ("total_proximal", "neck", "trochanter")]
        ae = [100 * (rows[f"abmd_{k}"] / ab[k] - 1) for k in ("total_hip", "femoral_neck")]
        errs["head"].append(he)
        errs["vbmd"] += ve
        errs["abmd"] += ae
        print(f"{side:5s} {size:7s} {nsa:5.1f} {av:4.1f} {sp:3.1f} {ori:8s} | {he:5.2f} | "
              + " ".join(f"{e:+5.2f}" for e in ve) + " | "
              + " ".join(f"{e:+5.2f}" for e in ae) + f" | {dt:4.1f}")
    print(f"max head-centre error {max(errs['head']):.2f} mm; max |vBMD error| "
          f"{max(map(abs, errs['vbmd'])):.2f} %; max |aBMD error| "
          f"{max(map(abs, errs['abmd'])):.2f} %; mean aBMD error "
          f"{np.mean(errs['abmd']):+.2f} %")


if __name__ == "__main__":
    main()
