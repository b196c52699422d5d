"""Accuracy and run time of femoral BMD on synthetic femurs (not a test: prints a table).

Run: ``python benchmarks/femur_accuracy.py [--fwhm-only]``. Truth: the phantom's exact
line integrals (vBMD of the 3-D regions; CT-aBMD on the analytic DXA-view projection).

Part 1: 16 sharp (unblurred) femurs through ``measure_femurs``. Part 2: errors against
the scanner blur (PSF FWHM 0, 0.7, 1.2, 2 mm; LPS / RAS / permuted / oblique storage; a
crop of the phantom builder around the left femur with the acetabulum 2 mm from the
head, 1 mm voxels, noise SD 10 HU), measured inside the label only and with the
edge-mineral restoration of ``femur.partial_volume``.
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
from CTMuscleBoneLib.phantoms.builder import PhantomSpec, femur_components, make_phantom  # noqa: E402,E501
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec  # noqa: E402
from femur_pv import femur_values  # noqa: E402
from femur_raster import ORIENTATIONS, analytic_abmd, grid_around, rasterize  # noqa: E402

SCANNER = ScannerModel()
#: The phantom's own HU-to-density line, named hydroxyapatite: measure_femurs converts a
#: K2HPO4 calibration to HA (x 1/0.827 at 120 kVp), which the phantom's truth is not.
CAL = Calibration("phantom", "HA", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")
SIZES = {
    "small": dict(head_radius_mm=20.0, neck_radius_mm=13.0, shaft_radius_mm=12.5,
                  neck_length_mm=50.0, greater_trochanter_semi_axes_mm=(12.0, 13.0, 18.0)),
    "default": {},
    "large": dict(head_radius_mm=25.0, neck_radius_mm=17.0, shaft_radius_mm=15.5,
                  neck_length_mm=60.0, cortical_thickness_mm=3.5),
}


def sharp_femurs() -> None:
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


#: Part 2: crop around the left femur (head to 65 mm below the lesser trochanter) with
#: the acetabulum; head radius 28 mm leaves a 2 mm joint space.
PV_BOX = ((55.0, -45.0, -130.0), (160.0, 45.0, 45.0))
PV_FEMUR = {"head_radius_mm": 28.0}
PV_SPACING = {"LPS": 1.0, "RAS": 1.0, "permuted": (1.0, 0.9, 1.1), "oblique": 1.0}
PV_QUANTITIES = ("abmd_total_hip", "abmd_femoral_neck", "vbmd_total_proximal", "vbmd_neck",
                 "vbmd_trochanter")


def blurred_femurs(fwhms: tuple[float, ...] = (0.0, 0.7, 1.2, 2.0)) -> None:
    fem = femur_components(PhantomSpec(sides=("left",), femur=PV_FEMUR))[0]
    truth = {**{f"abmd_{k}": v for k, v in analytic_abmd(fem).items()},
             **{f"vbmd_{k}": v for k, v in fem.truth().vbmd_mg_cm3.items()}}
    print("\nerror % vs analytic truth; label only -> with edge-mineral restoration")
    print("| FWHM mm | storage | " + " | ".join(q.replace("_", " ") for q in PV_QUANTITIES)
          + " | s (restored) |")
    print("|" + " --- |" * (len(PV_QUANTITIES) + 3))
    worst = {False: 0.0, True: 0.0}
    for fwhm in fwhms:
        for ori in PV_SPACING:
            ph = make_phantom(fov_mm=PV_BOX, spacing_mm=PV_SPACING[ori], orientation=ori,
                              psf_fwhm_mm=fwhm, sides=("left",), bones=("femur", "hip"),
                              femur=PV_FEMUR, vessels=False)
            err = {}
            for restore in (False, True):
                t0 = time.perf_counter()
                v = femur_values(ph.ct, ph.labels, "left", SCANNER.bmd_for_hu, restore=restore)
                dt = time.perf_counter() - t0
                err[restore] = [100 * (v[q] / truth[q] - 1) for q in PV_QUANTITIES]
                worst[restore] = max(worst[restore], *map(abs, err[restore]))
            cells = [f"{a:+.1f} -> {b:+.2f}" for a, b in zip(err[False], err[True], strict=True)]
            print(f"| {fwhm:.1f} | {ori} | " + " | ".join(cells) + f" | {dt:.1f} |")
    print(f"max |error|: label only {worst[False]:.2f} %, restored {worst[True]:.2f} %")


def main() -> None:
    if "--fwhm-only" not in sys.argv:
        sharp_femurs()
    blurred_femurs()


if __name__ == "__main__":
    main()
