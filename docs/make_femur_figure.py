"""Make docs/figures/femur_projection.png: a phantom femur's DXA-view projection with ROIs.

Run: ``python docs/make_femur_figure.py`` (needs matplotlib; uses the Agg backend).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))
sys.path.insert(0, str(ROOT / "Testing"))

from CTMuscleBoneLib.calibration import Calibration  # noqa: E402
from CTMuscleBoneLib.femur import measure_femurs  # noqa: E402
from CTMuscleBoneLib.phantoms.base import ScannerModel  # noqa: E402
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec  # noqa: E402
from femur_raster import ORIENTATIONS, grid_around, rasterize  # noqa: E402


def main(out: Path = ROOT / "docs" / "figures" / "femur_projection.png") -> Path:
    scanner = ScannerModel()
    cal = Calibration("phantom", "K2HPO4", scanner.slope_mg_cm3_per_hu,
                      scanner.intercept_mg_cm3, 1.0, 5, "synthetic truth")
    ph = FemurPhantom(FemurSpec(side="left", neck_shaft_angle_deg=128.0,
                                anteversion_deg=15.0), scanner)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (1.0, 1.0, 1.0), ORIENTATIONS["RAS"]))
    res = measure_femurs(ct, labels, cal)
    fp = res.projections["left"]
    rows = {r.quantity: r.value for r in res.rows if r.structure == "femur_left"}
    img = fp.projection.areal_density_g_cm2
    px = fp.pixel_mm
    ext = (0, img.shape[0] * px, 0, img.shape[1] * px)
    fig, ax = plt.subplots(figsize=(5.5, 6.5), dpi=120)
    # axis 0 of the image runs towards the patient's left (ex), axis 1 superiorly (ez)
    ax.imshow(img.T, origin="lower", cmap="gray", extent=ext)
    for site, colour in (("total_hip", "tab:orange"), ("femoral_neck", "tab:cyan")):
        m = fp.roi_masks[site].T.astype(float)
        ax.contour(m, levels=[0.5], colors=[colour], extent=ext, linewidths=1.5)
    for name, marker in (("head_centre", "+"), ("head_neck_junction", "x"),
                         ("lesser_trochanter", "o")):
        i, k = fp.landmarks_px[name] * px
        ax.plot(i, k, marker, color="yellow", ms=8, mfc="none")
    c = fp.landmarks_px["head_centre"] * px
    ax.add_patch(plt.Circle(c, fp.head_radius_px * px, fill=False, color="yellow", lw=0.8,
                            ls="--"))
    ax.set_xlabel("mm (towards the patient's left)")
    ax.set_ylabel("mm (superior)")
    ax.set_title(f"Phantom left femur, DXA view ({px} mm pixels)\n"
                 f"total hip {rows['abmd_total_hip']:.3f} g/cm2 (orange), "
                 f"neck {rows['abmd_femoral_neck']:.3f} g/cm2 (cyan)", fontsize=9)
    fig.colorbar(ax.images[0], ax=ax, label="areal density (g/cm2)", shrink=0.8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
