"""Femoral BMD review: inputs met on real CTs that gave silently wrong values.

* The edge-mineral band outside the projected outline (``rois.roi_value``) reached
  ``spill_px`` pixels beyond the ROI's cut lines and counted the edge mineral of bone
  outside the ROI: femoral neck +3.8 % at 0.7 x 0.7 x 5 mm voxels (spill 22 px), +1.7 %
  at 3 mm. It is now limited to the ROI's cut region.
* A femur label with holes (unlabelled voxels enclosed by the label: marrow left out,
  segmentation noise) made the femur not measurable ("no femoral head found") with 1 %
  of its interior missing, and a 12 mm unlabelled core in the head moved the head onto
  the trochanter (neck-shaft angle 53 deg, values reported). Enclosed cavities are now
  filled (``measure.fill_cavities``) and noted.

Truth: the phantom's analytic projection and exact region integrals
(``femur_raster.analytic_abmd``, ``FemurPhantom.truth``), as in Testing/test_femur.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from CTMuscleBoneLib.calibration import Calibration
from CTMuscleBoneLib.femur import measure_femurs
from CTMuscleBoneLib.femur.measure import fill_cavities
from CTMuscleBoneLib.femur.rois import roi_value
from CTMuscleBoneLib.phantoms.base import ScannerModel
from CTMuscleBoneLib.phantoms.femur import FemurPhantom, FemurSpec
from femur_raster import analytic_abmd, grid_around, rasterize
from scipy import ndimage

SCANNER = ScannerModel()
CAL = Calibration("phantom", "HA", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")


def _rows(ct, labels):  # noqa: ANN001, ANN202
    out = measure_femurs(ct, labels, CAL)
    return out, {r.quantity: r for r in out.rows if r.structure == "femur_left"}


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def test_edge_band_counts_only_beside_the_roi():
    """A bar of areal density 1 with 0.5 in the two pixels either side (its edge
    mineral); the ROI is 20 columns of it. BMC = 20 x 20 x 1 + 2 x 2 x 20 x 0.5 = 440
    pixel units, aBMD 1.1 exactly; the band must not reach beyond the ROI's columns
    (it did: 1.14)."""
    img = np.zeros((40, 100))
    foot = np.zeros_like(img, dtype=bool)
    foot[10:30] = True
    img[10:30] = 1.0
    img[8:10] = img[30:32] = 0.5
    roi = foot.copy()
    roi[:, :40] = roi[:, 60:] = False
    region = np.zeros_like(foot)
    region[:, 40:60] = True
    px = 1.0  # mm: 0.01 cm2 per pixel
    rv = roi_value(img, roi, px, foot, spill_px=4, region=region)
    assert rv.abmd_g_cm2 == pytest.approx(1.1, abs=1e-12)
    assert rv.area_cm2 == pytest.approx(4.0, abs=1e-12)


def test_thick_slices_neck_abmd_within_1_5_percent():
    """0.7 x 0.7 x 5 mm voxels (a common hip protocol): the femoral neck aBMD within
    1.5 % of the analytic projection (was +3.8 %), total hip within 1.5 % (the 'coarse'
    warning stays)."""
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (0.7, 0.7, 5.0), np.eye(3)))
    _, rows = _rows(ct, labels)
    truth = analytic_abmd(ph)
    for site in ("total_hip", "femoral_neck"):
        row = rows[f"abmd_{site}"]
        assert row.value is not None, row.flags
        assert _rel(row.value, truth[site]) < 0.015, (site, row.value, truth[site])
        assert any(f.startswith("coarse:") for f in row.flags)


@pytest.fixture(scope="module")
def femur_2mm():
    ph = FemurPhantom(FemurSpec(side="left"), SCANNER)
    lo, hi = ph.bounds_mm()
    ct, labels = rasterize([ph], grid_around(lo, hi, (2.0, 2.0, 2.0), np.eye(3)))
    _, rows = _rows(ct, labels)
    return ph, ct, labels, rows


def _with_holes(labels, remove: np.ndarray):  # noqa: ANN001, ANN202
    arr = np.array(labels.array, copy=True)
    arr[remove] = 0
    return dataclasses.replace(labels, array=arr)


@pytest.mark.parametrize("kind", ["random_1pct", "head_core_12mm"])
def test_label_holes_are_filled(femur_2mm, kind):
    """Holes enclosed by the femur label: the values equal those of the whole label
    (the filled mask is the original one), within 3 % of the analytic truth, with an
    info flag; before the fix: not measurable (random holes) or the head found on the
    trochanter (neck-shaft angle 53 deg instead of 130)."""
    ph, ct, labels, ref = femur_2mm
    femur = labels.mask("femur_left")
    if kind == "random_1pct":
        inner = ndimage.binary_erosion(femur, iterations=3)
        remove = inner & (np.random.default_rng(1).random(femur.shape) < 0.01)
    else:
        idx = np.indices(femur.shape).reshape(3, -1).T
        p = ct.geometry.index_to_physical(idx).reshape(*femur.shape, 3)
        remove = femur & (np.linalg.norm(p - ph.truth().head_centre_mm, axis=-1) < 12.0)
    assert remove.sum() > 20
    holed = _with_holes(labels, remove)
    filled, n = fill_cavities(holed.mask("femur_left"), holed)
    assert n == int(remove.sum()) and np.array_equal(filled, femur)
    out, rows = _rows(ct, holed)
    truth = analytic_abmd(ph)
    assert np.linalg.norm(out.landmarks["left"].head_centre_mm
                          - ph.truth().head_centre_mm) < 1.0
    assert rows["neck_shaft_angle"].value == pytest.approx(130.0, abs=2.0)
    for site in ("total_hip", "femoral_neck"):
        v = rows[f"abmd_{site}"].value
        assert v == pytest.approx(ref[f"abmd_{site}"].value, rel=1e-9)
        assert _rel(v, truth[site]) < 0.03
    for region in ("total_proximal", "neck", "trochanter"):
        v = rows[f"vbmd_{region}"].value
        assert _rel(v, ph.truth().vbmd_mg_cm3[region]) < 0.02
    assert any(f.startswith("info:") and "holes in the label" in f
               for f in rows["abmd_total_hip"].flags)
    # a whole label has nothing to fill and no such flag
    assert not any("holes in the label" in f for f in ref["abmd_total_hip"].flags)


def test_cavity_holding_another_structure_is_not_filled(femur_2mm):
    """Voxels of another labelled structure inside the femur label stay that structure."""
    ph, ct, labels, _ = femur_2mm
    femur = labels.mask("femur_left")
    idx = np.indices(femur.shape).reshape(3, -1).T
    p = ct.geometry.index_to_physical(idx).reshape(*femur.shape, 3)
    core = femur & (np.linalg.norm(p - ph.truth().head_centre_mm, axis=-1) < 8.0)
    arr = np.array(labels.array, copy=True)
    other = next(v for v, k in labels.structures.items() if k == "hip_left") if any(
        k == "hip_left" for k in labels.structures.values()) else 3
    arr[core] = other
    lm = dataclasses.replace(labels, array=arr)
    filled, n = fill_cavities(lm.mask("femur_left"), lm)
    assert n == 0 and not (filled & core).any()
