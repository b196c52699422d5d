"""Lumbar spine BMD: synthetic vertebrae of known density in many grids, and real CT.

The phantoms are rasterised here (voxel centres -> PaintBuffer -> paint; soft tissue
40 HU background; seeded Gaussian noise) on grids of several spacings and four
orientations (LPS, RAS, permuted axes with anisotropic spacing, oblique).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.calibration.model import Calibration
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap
from CTMuscleBoneLib.phantoms.base import PaintBuffer, ScannerModel
from CTMuscleBoneLib.phantoms.vertebra import VertebraPhantom, VertebraSpec, lumbar_spine
from CTMuscleBoneLib.results import CATEGORY_WITHHELD, INDETERMINATE, ResultRow
from CTMuscleBoneLib.spine.fracture import genant_grade
from CTMuscleBoneLib.spine.measure import (
    acr_category,
    analyse_spine,
    measure_spine,
    pickhardt_category,
    pickhardt_kvp_reason,
    spine_rows,
)
from scipy import ndimage

SCANNER = ScannerModel()
CAL = Calibration("phantom", "K2HPO4", SCANNER.slope_mg_cm3_per_hu, SCANNER.intercept_mg_cm3,
                  1.0, 5, "synthetic truth")
VERTEBRA_LABELS = {BY_KEY[f"vertebrae_L{n}"].label_value: f"vertebrae_L{n}" for n in range(1, 6)}


def _rotation(axis: list[float], deg: float) -> np.ndarray:
    k = np.asarray(axis, dtype=float)
    k /= np.linalg.norm(k)
    t = np.deg2rad(deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * (kx @ kx)


#: direction matrices (columns = LPS unit vector of each array axis)
ORIENTATIONS: dict[str, np.ndarray] = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "oblique": _rotation([1.0, 2.0, 3.0], 25.0) @ np.diag([-1.0, 1.0, 1.0]),
}


def _grid(lo, hi, spacing, direction, margin_mm: float = 6.0) -> Geometry:
    """A grid of the given orientation covering the box [lo, hi] plus a margin."""
    lo, hi = np.asarray(lo) - margin_mm, np.asarray(hi) + margin_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    d = np.asarray(direction, dtype=float)
    c = corners @ d
    sp = np.asarray(spacing, dtype=float)
    mn, mx = c.min(axis=0), c.max(axis=0)
    shape = tuple(int(np.ceil((mx[a] - mn[a]) / sp[a])) + 1 for a in range(3))
    return Geometry(shape, tuple(sp), tuple(d @ mn), d)


def _rasterise(components, geometry: Geometry, noise_sd: float = 10.0, seed: int = 0,
               background_hu: float = 40.0, metadata: CTMetadata | None = None):
    idx = np.indices(geometry.shape).reshape(3, -1).T
    buf = PaintBuffer(geometry.index_to_physical(idx), np.zeros(idx.shape[0], np.int16),
                      np.full(idx.shape[0], background_hu, np.float32))
    for c in components:
        c.paint(buf)
    hu = buf.hu.reshape(geometry.shape)
    if noise_sd:
        hu = hu + np.random.default_rng(seed).normal(0.0, noise_sd, hu.shape).astype(np.float32)
    ct = CTImage(hu, geometry, metadata or CTMetadata())
    labels = LabelMap(buf.labels.reshape(geometry.shape), geometry, dict(VERTEBRA_LABELS),
                      source="phantom ground truth")
    return ct, labels


def _bounds(components):
    lo = np.min([c.bounds_mm()[0] for c in components], axis=0)
    hi = np.max([c.bounds_mm()[1] for c in components], axis=0)
    return lo, hi


def _row(rows: list[ResultRow], structure: str, quantity: str) -> ResultRow:
    found = [r for r in rows if r.structure == structure and r.quantity == quantity]
    assert len(found) == 1, f"{structure}/{quantity}: {len(found)} rows"
    return found[0]


# -- phantom ---------------------------------------------------------------------------
def test_phantom_hu_matches_density_and_bounds_contain_it():
    ph = VertebraPhantom(VertebraSpec("L3", (5.0, -3.0, 12.0), trabecular_bmd_mg_cm3=95.0),
                         SCANNER)
    geom = _grid(*ph.bounds_mm(), (1.5, 1.5, 1.5), np.eye(3), margin_mm=8.0)
    ct, labels = _rasterise([ph], geom, noise_sd=0.0)
    lab = labels.array == BY_KEY["vertebrae_L3"].label_value
    pts = geom.index_to_physical(np.argwhere(lab))
    lo, hi = ph.bounds_mm()
    assert ((pts >= lo) & (pts <= hi)).all()
    trab = ph.trabecular_mask(geom.index_to_physical(np.argwhere(np.ones(geom.shape, bool))))
    trab = trab.reshape(geom.shape)
    assert np.allclose(SCANNER.bmd_for_hu(ct.hu[trab]), 95.0, atol=1e-3)
    assert (labels.array[trab] == BY_KEY["vertebrae_L3"].label_value).all()
    truth = ph.truth()
    assert truth.genant_grade == 0 and truth.roi_mean_hu == pytest.approx(truth.trabecular_hu)
    # posterior elements exist behind the body (+y = posterior)
    assert pts[:, 1].max() > truth.body_centre_mm[1] + truth.body_depth_mm


def test_lumbar_spine_stack_has_discs_between_bodies():
    spine = lumbar_spine(scanner=SCANNER)
    assert [p.spec.level for p in spine] == ["L5", "L4", "L3", "L2", "L1"]
    assert spine[0].spec.disc_below_height_mm == 0.0
    l4 = spine[1].spec
    assert l4.disc_below_height_mm == pytest.approx(35.0 - 27.0 / 2 - 26.0 / 2)


# -- accuracy across grids --------------------------------------------------------------
GRID_CASES = [(o, s) for s in (1.0, 2.0) for o in ORIENTATIONS] + [("RAS", 0.6)]


@pytest.mark.parametrize("orientation,spacing", GRID_CASES)
def test_vbmd_accuracy_any_grid(orientation, spacing):
    bmd = {0.6: 60.0, 1.0: 150.0, 2.0: 100.0}[spacing]
    spec = VertebraSpec("L2", (12.0, 25.0, -40.0), trabecular_bmd_mg_cm3=bmd)
    ph = VertebraPhantom(spec, SCANNER)
    sp = (spacing, spacing * 1.2, spacing * 1.5) if orientation == "permuted" else (spacing,) * 3
    geom = _grid(*ph.bounds_mm(), sp, ORIENTATIONS[orientation])
    ct, labels = _rasterise([ph], geom, seed=int(spacing * 10))
    res = analyse_spine(ct, labels, CAL)["vertebrae_L2"]
    truth = ph.truth()
    assert res.not_measurable is None
    assert abs(res.vbmd_mg_cm3 - bmd) / bmd < 0.02
    assert abs(res.mean_hu - truth.trabecular_hu) < 1.5
    assert ph.trabecular_mask(geom.index_to_physical(res.roi.index)).all()
    assert res.roi.volume_cm3 >= 0.5
    assert np.linalg.norm(res.body.centre_mm - truth.body_centre_mm) < 1.5 * max(sp)
    rows = spine_rows({"vertebrae_L2": res}, CAL, ct)
    assert _row(rows, "vertebrae_L2", "trabecular_vbmd").value == pytest.approx(res.vbmd_mg_cm3)
    assert _row(rows, "vertebrae_L2", "fracture_grade").value == 0


def test_vbmd_with_scanner_blur():
    """A 2 mm FWHM blur must not let the cortex leak into the ROI mean."""
    ph = VertebraPhantom(VertebraSpec("L3", trabecular_bmd_mg_cm3=80.0), SCANNER)
    geom = _grid(*ph.bounds_mm(), (1.0, 1.0, 1.0), np.eye(3))
    ct, labels = _rasterise([ph], geom, noise_sd=0.0)
    sigma_vox = 2.0 / 2.355 / 1.0
    hu = ndimage.gaussian_filter(ct.hu.astype(np.float64), sigma_vox)
    hu += np.random.default_rng(3).normal(0.0, 10.0, hu.shape)
    res = analyse_spine(CTImage(hu, geom), labels, CAL)["vertebrae_L3"]
    assert abs(res.vbmd_mg_cm3 - 80.0) / 80.0 < 0.02


# -- fractures ---------------------------------------------------------------------------
@pytest.mark.parametrize("orientation,spacing", [("LPS", 1.0), ("oblique", 1.25)])
@pytest.mark.parametrize("fracture,ratio", [("none", 1.0), ("wedge", 0.62),
                                            ("biconcave", 0.65), ("wedge", 0.45)])
def test_fracture_grade(fracture, ratio, orientation, spacing):
    ph = VertebraPhantom(VertebraSpec("L1", fracture=fracture, fracture_ratio=ratio), SCANNER)
    geom = _grid(*ph.bounds_mm(), (spacing,) * 3, ORIENTATIONS[orientation])
    ct, labels = _rasterise([ph], geom)
    res = analyse_spine(ct, labels, CAL)["vertebrae_L1"]
    truth = ph.truth()
    assert res.fracture.grade == truth.genant_grade
    assert res.fracture.kind == ("none" if fracture == "none" else fracture)
    # heights are resolved to about one voxel
    assert abs(res.fracture.reduction - truth.height_reduction) < 0.03 + spacing / ph.h_mm
    # the ROI stays in trabecular bone and the density is right despite the deformity
    assert ph.trabecular_mask(geom.index_to_physical(res.roi.index)).all()
    assert abs(res.vbmd_mg_cm3 - 120.0) / 120.0 < 0.02


def test_fractured_vertebra_excluded_from_summary_and_categories():
    specs = [
        # 55 % loss: confidently grade 3 at 1.5 mm (a 45 % wedge's interval, 39-52 %,
        # spans grades 2-3 at this resolution and would be 'uncertain', kept)
        VertebraSpec("L1", (0, 0, 0), trabecular_bmd_mg_cm3=60.0, fracture="wedge",
                     fracture_ratio=0.45),
        VertebraSpec("L2", (0, 0, -35), trabecular_bmd_mg_cm3=100.0),
        VertebraSpec("L3", (0, 0, -70), trabecular_bmd_mg_cm3=130.0),
        VertebraSpec("L4", (0, 0, -105), trabecular_bmd_mg_cm3=140.0),
    ]
    spine = lumbar_spine(specs, SCANNER)
    geom = _grid(*_bounds(spine), (1.5, 1.5, 1.5), np.eye(3))
    ct, labels = _rasterise(spine, geom)
    rows = measure_spine(ct, labels, CAL)
    assert _row(rows, "vertebrae_L1", "fracture_grade").value == 3
    for n, bmd in ((1, 60.0), (2, 100.0), (3, 130.0), (4, 140.0)):
        v = _row(rows, f"vertebrae_L{n}", "trabecular_vbmd").value
        assert abs(v - bmd) / bmd < 0.02
    for n in (2, 3, 4):
        assert _row(rows, f"vertebrae_L{n}", "fracture_grade").value == 0
    l12 = _row(rows, "lumbar_L1_L2", "trabecular_vbmd")
    assert l12.value == pytest.approx(_row(rows, "vertebrae_L2", "trabecular_vbmd").value)
    assert any("L1 excluded: fractured" in f for f in l12.flags)
    # L2 alone: the ACR criteria need the mean of two vertebrae
    acr12 = _row(rows, "lumbar_L1_L2", "acr_category")
    assert acr12.value == "indeterminate"
    assert any(f.startswith("warning: category withheld") and "mean of 2 vertebrae" in f
               for f in acr12.flags)
    l14 = _row(rows, "lumbar_L1_L4", "trabecular_vbmd").value
    assert abs(l14 - (100.0 + 130.0 + 140.0) / 3) < 2.0
    # 123 mg/cm3 K2HPO4 = 149 mg/cm3 HA (120 kVp assumed)
    assert _row(rows, "lumbar_L1_L4", "acr_category").value == "normal"


# -- validity ----------------------------------------------------------------------------
class _Screw:
    """Test-only metal: a pedicle screw (cylinder of 3000 HU) along +y into the body."""

    def __init__(self, centre, radius_mm=3.0, length_mm=45.0):
        self.c, self.r, self.len = np.asarray(centre, float), radius_mm, length_mm

    def paint(self, buf: PaintBuffer) -> None:
        d = buf.points_mm - self.c
        inside = (d[:, 0] ** 2 + d[:, 2] ** 2 <= self.r**2) & (d[:, 1] >= 0) & (
            d[:, 1] <= self.len)
        buf.hu[inside] = 3000.0


@pytest.mark.parametrize("kind", ["cement", "screw"])
def test_metal_or_cement_not_measurable(kind):
    spec = VertebraSpec("L2", cement_radius_mm=6.0 if kind == "cement" else 0.0)
    ph = VertebraPhantom(spec, SCANNER)
    parts: list = [ph]
    if kind == "screw":  # enters through the right pedicle and ends in the body
        parts.append(_Screw((-ph.pedicle_u, -10.0, 0.2 * ph.h_mm)))
    geom = _grid(*ph.bounds_mm(), (1.5, 1.5, 1.5), ORIENTATIONS["RAS"])
    ct, labels = _rasterise(parts, geom)
    rows = measure_spine(ct, labels, CAL)
    for q in ("trabecular_mean_hu", "trabecular_vbmd"):
        r = _row(rows, "vertebrae_L2", q)
        assert r.value is None
        assert any(f.startswith("not_measurable: metal or cement") for f in r.flags)
    assert _row(rows, "lumbar_L1_L2", "trabecular_vbmd").value is None


def test_partial_vertebra_flagged_and_measured_only_if_roi_fits():
    ph = VertebraPhantom(VertebraSpec("L1", trabecular_bmd_mg_cm3=90.0), SCANNER)
    lo, hi = ph.bounds_mm()
    # cut 6 mm off the bottom of the body: still room for the ROI
    geom = _grid(np.r_[lo[:2], -ph.h_mm / 2 + 6.0 + 6.0], hi, (1.0, 1.0, 1.0), np.eye(3))
    ct, labels = _rasterise([ph], geom)
    rows = measure_spine(ct, labels, CAL)
    v = _row(rows, "vertebrae_L1", "trabecular_vbmd")
    assert any(f.startswith("partial: cut by the field of view") for f in v.flags)
    assert abs(v.value - 90.0) / 90.0 < 0.02
    assert _row(rows, "vertebrae_L1", "fracture_grade").value is None
    # keep only the top 3 mm of the body: the ROI does not fit
    geom = _grid(np.r_[lo[:2], ph.h_mm / 2 - 3.0 + 6.0], hi, (1.0, 1.0, 1.0), np.eye(3))
    ct, labels = _rasterise([ph], geom)
    r = _row(measure_spine(ct, labels, CAL), "vertebrae_L1", "trabecular_mean_hu")
    assert r.value is None
    assert any(f.startswith("not_measurable: too few trabecular ROI voxels") for f in r.flags)


def test_thick_slices_warn():
    ph = VertebraPhantom(VertebraSpec("L3"), SCANNER)
    geom = _grid(*ph.bounds_mm(), (1.0, 1.0, 5.0), np.eye(3))
    ct, labels = _rasterise([ph], geom)
    r = _row(measure_spine(ct, labels, CAL), "vertebrae_L3", "trabecular_mean_hu")
    assert any(f.startswith("warning: slice thickness 5 mm") for f in r.flags)
    assert r.value is not None


def test_labels_on_other_grid_rejected():
    ph = VertebraPhantom(VertebraSpec("L3"), SCANNER)
    geom = _grid(*ph.bounds_mm(), (2.0, 2.0, 2.0), np.eye(3))
    ct, labels = _rasterise([ph], geom)
    other = Geometry(geom.shape, (2.0, 2.0, 2.1), geom.origin_mm, geom.direction)
    with pytest.raises(InputError, match="grid"):
        measure_spine(ct, LabelMap(labels.array, other, labels.structures), CAL)


# -- uncalibrated / categories ------------------------------------------------------------
@pytest.mark.parametrize("l1_hu,expected", [(90.0, "osteoporosis likely"),
                                            (135.0, "low bone density possible"),
                                            (200.0, "osteoporosis unlikely")])
def test_uncalibrated_reports_hu_and_pickhardt_category(l1_hu, expected):
    ph = VertebraPhantom(
        VertebraSpec("L1", trabecular_bmd_mg_cm3=float(SCANNER.bmd_for_hu(l1_hu))), SCANNER)
    geom = _grid(*ph.bounds_mm(), (2.0, 2.0, 2.0), ORIENTATIONS["oblique"])
    # the thresholds' voltage: the category needs the kVp known to be 120
    ct, labels = _rasterise([ph], geom, metadata=CTMetadata(kvp=120.0))
    rows = measure_spine(ct, labels, Calibration.none())
    assert abs(_row(rows, "vertebrae_L1", "trabecular_mean_hu").value - l1_hu) < 1.5
    for s in ("vertebrae_L1", "lumbar_L1_L2"):
        r = _row(rows, s, "trabecular_vbmd")
        assert r.value is None
        assert any(f.startswith("not_measurable: no HU-to-BMD calibration") for f in r.flags)
    assert _row(rows, "lumbar_L1_L2", "acr_category").value is None
    cat = _row(rows, "vertebrae_L1", "opportunistic_category")
    assert cat.value.startswith(expected)
    assert not any(f.startswith(CATEGORY_WITHHELD) for f in cat.flags)


@pytest.mark.parametrize("kvp, category", [
    (120.0, True), (120.4, True), (119.0, True),  # 120 kVp (header rounding)
    (80.0, False), (100.0, False), (140.0, False), (118.0, False),
    (None, False),  # unknown (NIfTI): no category either
])
def test_pickhardt_category_only_at_120_kvp(kvp, category):
    """Pickhardt's L1 thresholds were derived at 120 kVp: at another or an unknown kVp
    the category is 'indeterminate' with a flag saying why and what to do (the old code
    printed it, with a warning at other voltages and nothing when unknown)."""
    ph = VertebraPhantom(
        VertebraSpec("L1", trabecular_bmd_mg_cm3=float(SCANNER.bmd_for_hu(135.0))), SCANNER)
    geom = _grid(*ph.bounds_mm(), (2.0, 2.0, 2.0), np.eye(3))
    ct, labels = _rasterise([ph], geom, metadata=CTMetadata(kvp=kvp))
    rows = measure_spine(ct, labels, Calibration.none())
    cat = _row(rows, "vertebrae_L1", "opportunistic_category")
    hu = _row(rows, "vertebrae_L1", "trabecular_mean_hu")
    assert hu.value == pytest.approx(135.0, abs=1.5)  # the number is kept either way
    kvp_flags = [f for f in cat.flags if f.startswith(CATEGORY_WITHHELD)]
    if category:
        assert cat.value.startswith("low bone density possible") and kvp_flags == []
        return
    assert cat.value == INDETERMINATE
    assert len(kvp_flags) == 1 and "derived at 120 kVp" in kvp_flags[0]
    assert "calibrate HU to BMD" in kvp_flags[0]
    if kvp is None:
        assert "tube voltage unknown" in kvp_flags[0]
        assert "--kvp" in kvp_flags[0] and "measure the DICOM series" in kvp_flags[0]
    else:
        assert f"scan at {kvp:g} kVp" in kvp_flags[0]
        assert "use a 120 kVp scan" in kvp_flags[0]


def test_pickhardt_kvp_reason():
    assert pickhardt_kvp_reason(120.0) is None
    assert pickhardt_kvp_reason(100.0).startswith(
        "warning: category withheld: scan at 100 kVp")
    assert pickhardt_kvp_reason(None).startswith(
        "warning: category withheld: tube voltage unknown")


def test_category_boundaries():
    # ACR 2018: > 120 normal; 80-120 low bone mass; < 80 osteoporosis
    assert acr_category(120.01) == "normal"
    assert acr_category(120.0) == "low bone mass (osteopenia)"
    assert acr_category(80.0) == "low bone mass (osteopenia)"
    assert acr_category(79.99) == "osteoporosis"
    # Pickhardt 2013: <= 110 HU specific, <= 160 HU sensitive
    assert pickhardt_category(110.0).startswith("osteoporosis likely")
    assert pickhardt_category(110.1).startswith("low bone density possible")
    assert pickhardt_category(160.0).startswith("low bone density possible")
    assert pickhardt_category(160.1).startswith("osteoporosis unlikely")
    # Genant: 20 / 25 / 40 %
    assert [genant_grade(x) for x in (0.19, 0.2, 0.249, 0.25, 0.399, 0.4)] == [0, 1, 1, 2, 2, 3]


def test_no_lumbar_labels_gives_not_measurable_rows():
    geom = Geometry((10, 10, 10), (2.0, 2.0, 2.0))
    ct = CTImage(np.zeros(geom.shape, np.float32), geom)
    rows = measure_spine(ct, LabelMap(np.zeros(geom.shape, np.int16), geom, {}), CAL)
    assert rows and all(r.value is None for r in rows)


# -- real data ---------------------------------------------------------------------------
def _read_real(real_data_dir):
    """The real CT and its TotalSegmentator labels (io_labels when present)."""
    import SimpleITK as sitk
    from CTMuscleBoneLib.image import array_from_sitk

    img = sitk.ReadImage(str(real_data_dir / "lumbar_ct.nii.gz"))
    geom = Geometry.from_sitk(img)
    ct = CTImage(array_from_sitk(img), geom)
    seg_path = real_data_dir / "lumbar_seg_totalseg.nii.gz"
    try:
        from CTMuscleBoneLib.io_labels import read_labels
    except ImportError:  # the io module is optional for this test
        names = json.loads((real_data_dir / "lumbar_seg_totalseg.labels.json").read_text())
        assert names["31"] == "vertebrae_L1" and names["30"] == "vertebrae_L2"
        seg = sitk.ReadImage(str(seg_path))
        labels = LabelMap(array_from_sitk(seg).astype(np.int16), Geometry.from_sitk(seg),
                          {31: "vertebrae_L1", 30: "vertebrae_L2"}, source="TotalSegmentator")
    else:
        labels = read_labels(seg_path, geom)
    assert labels.value_of("vertebrae_L1") == 31 and labels.value_of("vertebrae_L2") == 30
    return ct, labels


def test_real_ct_l1_l2_trabecular_hu(real_data_dir):
    ct, labels = _read_real(real_data_dir)
    rows = measure_spine(ct, labels, Calibration.none())
    for key in ("vertebrae_L1", "vertebrae_L2"):
        hu = _row(rows, key, "trabecular_mean_hu").value
        assert hu is not None and 50.0 < hu < 300.0, (key, hu)
        assert _row(rows, key, "roi_volume").value >= 0.5
    # L2 is cut by the field of view in this crop
    assert any(f.startswith("partial") for f in _row(rows, "vertebrae_L2",
                                                     "trabecular_mean_hu").flags)
    assert _row(rows, "vertebrae_L1", "opportunistic_category").value is not None
    # the ROI stays off cortex and endplates: every ROI voxel and its 18 face and edge
    # neighbours lie inside the label (this L1 holds a dense focus of 400-770 HU, so its
    # SD is high and is not a test of the ROI)
    analysis = analyse_spine(ct, labels, Calibration.none())
    for key in ("vertebrae_L1", "vertebrae_L2"):
        res = analysis[key]
        inner = ndimage.binary_erosion(labels.mask(key),
                                       structure=ndimage.generate_binary_structure(3, 2))
        assert inner[tuple(res.roi.index.T)].all()


def test_summaries_use_complete_vertebrae_only():
    """A vertebra whose body is cut by the field of view never enters L1-L2 or L1-L4; a
    summary that would need it is not measurable, and says why."""
    specs = [VertebraSpec(f"L{n}", (0, 0, -35.0 * (n - 1)), trabecular_bmd_mg_cm3=b)
             for n, b in ((1, 70.0), (2, 100.0), (3, 130.0), (4, 140.0))]
    spine = lumbar_spine(specs, SCANNER)
    lo, hi = _bounds(spine)
    l1 = VertebraPhantom(specs[0], SCANNER)
    # the field of view ends 6 mm below L1's upper endplate: L1's body is cut
    top = l1.h_mm / 2 - 6.0
    geom = _grid(lo, np.r_[hi[:2], top], (1.5, 1.5, 1.5), np.eye(3))
    ct, labels = _rasterise(spine, geom)
    rows = measure_spine(ct, labels, CAL)
    v1 = _row(rows, "vertebrae_L1", "trabecular_vbmd")
    assert any(f.startswith("partial: cut by the field of view (the vertebral body)")
               for f in v1.flags)
    # L1-L2: L2 alone (L1 left out, with the reason)
    l12 = _row(rows, "lumbar_L1_L2", "trabecular_vbmd")
    assert l12.value == pytest.approx(_row(rows, "vertebrae_L2", "trabecular_vbmd").value)
    assert any("L1 left out: vertebral body cut by the field of view" in f for f in l12.flags)
    # L1-L4: the three complete ones
    l14 = _row(rows, "lumbar_L1_L4", "trabecular_vbmd").value
    assert abs(l14 - (100.0 + 130.0 + 140.0) / 3) < 2.0
    # uncalibrated: the opportunistic L1 category is not given from a cut L1
    hu_rows = measure_spine(ct, labels, Calibration.none())
    cat = _row(hu_rows, "vertebrae_L1", "opportunistic_category")
    assert cat.value is None
    assert any("L1 vertebral body cut by the field of view" in f for f in cat.flags)


def test_summary_not_measurable_when_only_cut_vertebrae():
    specs = [VertebraSpec("L1", (0, 0, 0), trabecular_bmd_mg_cm3=90.0),
             VertebraSpec("L2", (0, 0, -35.0), trabecular_bmd_mg_cm3=90.0)]
    spine = lumbar_spine(specs, SCANNER)
    lo, hi = _bounds(spine)
    # the field of view spans from 5 mm below L2's centre to 5 mm above L1's: both
    # bodies are cut
    geom = _grid(np.r_[lo[:2], -35.0 - 5.0], np.r_[hi[:2], 5.0], (1.5, 1.5, 1.5), np.eye(3))
    ct, labels = _rasterise(spine, geom)
    rows = measure_spine(ct, labels, CAL)
    for name in ("lumbar_L1_L2", "lumbar_L1_L4"):
        for q in ("trabecular_vbmd", "acr_category"):
            r = _row(rows, name, q)
            assert r.value is None
            assert any("body cut by the field of view" in f for f in r.flags), r.flags


def test_stated_kvp_gives_the_pickhardt_category_of_a_ct_without_one():
    """A NIfTI CT has no kVp: ``--kvp`` (MeasureOptions.kvp) states it, overrides a
    header's with a warning, and is checked for plausibility."""
    from CTMuscleBoneLib.cli.cmd_measure import options_from_args
    from CTMuscleBoneLib.cli.main import build_parser
    from CTMuscleBoneLib.pipeline import MeasureOptions, measure

    ph = VertebraPhantom(
        VertebraSpec("L1", trabecular_bmd_mg_cm3=float(SCANNER.bmd_for_hu(135.0))), SCANNER)
    geom = _grid(*ph.bounds_mm(), (2.0, 2.0, 2.0), np.eye(3))

    def category(header_kvp, stated_kvp):
        ct, labels = _rasterise([ph], geom, metadata=CTMetadata(kvp=header_kvp))
        hu = np.array(ct.hu, copy=True)
        hu[0] = -1000.0  # air on one face, as any CT has (the HU check wants it)
        ct = CTImage(hu, ct.geometry, ct.metadata)
        res = measure(ct, labels, MeasureOptions(calibration="none", kvp=stated_kvp))
        return res.get("vertebrae_L1", "opportunistic_category"), res.warnings

    cat, _ = category(None, None)
    assert cat.value == INDETERMINATE and any("--kvp" in f for f in cat.flags)
    cat, warnings = category(None, 120.0)
    assert cat.value.startswith("low bone density possible")
    assert any("Tube voltage 120 kVp as stated (option); the image header does not say"
               in w for w in warnings)
    cat, _ = category(None, 100.0)
    assert cat.value == INDETERMINATE
    assert any("scan at 100 kVp" in f for f in cat.flags)
    cat, warnings = category(100.0, 120.0)
    assert cat.value.startswith("low bone density possible")
    assert any("not the header's 100 kVp; check which is right" in w for w in warnings)
    cat, warnings = category(120.0, 120.0)  # agreeing: no note
    assert not any("Tube voltage" in w for w in warnings)
    with pytest.raises(InputError, match="tube voltage 12 kVp is not plausible"):
        MeasureOptions(kvp=12.0)
    args = build_parser().parse_args(["measure", "--ct", "c.nii.gz", "--labels", "l.nii.gz",
                                      "--out", "o", "--kvp", "120"])
    assert options_from_args(args).kvp == 120.0
