"""Lumbar ACR category on its own scale, and the flags of the lumbar rows (issue: ACR
from K2HPO4, from one vertebra, near a threshold; dense ROI voxels; fracture wording;
the report's ACR chart).

Truth is analytic: the synthetic vertebrae (phantoms/vertebra.py) are painted with a
known trabecular density on the scanner line of ``test_spine.SCANNER``; a calibration
with that line returns the density in whatever material the calibration names. The
HA-equivalent of a K2HPO4 density d at kVp V is d / r(V), r = 0.86 at 80 kVp and 0.81 at
140 kVp, linear between (Goodsitt 1992; data/material_k2hpo4_ha.json), 120 kVp assumed
when the header has none (r = 0.8267).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from CTMuscleBoneLib.image import CTMetadata
from CTMuscleBoneLib.phantoms.base import PaintBuffer
from CTMuscleBoneLib.phantoms.vertebra import VertebraPhantom, VertebraSpec, lumbar_spine
from CTMuscleBoneLib.results import INDETERMINATE, ResultRow, flag_tag
from CTMuscleBoneLib.spine import fracture as F
from CTMuscleBoneLib.spine import measure as M
from test_spine import CAL, ORIENTATIONS, SCANNER, _bounds, _grid, _rasterise, _row

CAL_HA = replace(CAL, material="HA")
#: Goodsitt 1992 ratio BMD_K2HPO4 / BMD_HA (analytic: linear between the two points).
RATIO = {80.0: 0.86, 140.0: 0.81, None: 0.86 + (0.81 - 0.86) * (120.0 - 80.0) / 60.0}


def _spine_case(bmd_l1: float, bmd_l2: float | None = None, kvp: float | None = None,
                spacing: float = 2.0, orientation: str = "LPS", extra=()):
    specs = [VertebraSpec("L1", (0, 0, 0), trabecular_bmd_mg_cm3=bmd_l1)]
    if bmd_l2 is not None:
        specs.append(VertebraSpec("L2", (0, 0, -35.0), trabecular_bmd_mg_cm3=bmd_l2))
    spine = lumbar_spine(specs, SCANNER)
    geom = _grid(*_bounds(spine), (spacing,) * 3, ORIENTATIONS[orientation])
    return _rasterise([*spine, *extra], geom, metadata=CTMetadata(kvp=kvp))


def _tags(row: ResultRow) -> list[str]:
    return [flag_tag(f) for f in row.flags]


# -- 1. the ACR category comes from the HA-equivalent mean ------------------------------
@pytest.mark.parametrize("kvp", [None, 80.0, 140.0])
def test_acr_category_from_ha_equivalent_of_k2hpo4(kvp):
    """75 mg/cm3 K2HPO4 is 87-93 mg/cm3 HA: low bone mass, not osteoporosis (the old code
    applied the HA thresholds to the K2HPO4 number)."""
    ct, labels = _spine_case(75.0, 75.0, kvp=kvp, orientation="oblique")
    rows = M.measure_spine(ct, labels, CAL)
    vbmd = _row(rows, "lumbar_L1_L2", "trabecular_vbmd")
    ha = _row(rows, "lumbar_L1_L2", "trabecular_vbmd_ha")
    assert abs(vbmd.value - 75.0) / 75.0 < 0.01
    assert ha.value == pytest.approx(vbmd.value / RATIO[kvp], rel=1e-9)
    assert abs(ha.value - 75.0 / RATIO[kvp]) / (75.0 / RATIO[kvp]) < 0.01
    assert "K2HPO4 density / " in ha.method and "Goodsitt" in ha.method
    acr = _row(rows, "lumbar_L1_L2", "acr_category")
    assert acr.value == "low bone mass (osteopenia)"
    assert f"HA-equivalent mean vBMD {ha.value:.1f} mg/cm3" in acr.method
    assert f"{vbmd.value:.1f} mg/cm3 K2HPO4" in acr.method
    assert any(f.startswith("warning: kVp unknown") for f in acr.flags) == (kvp is None)
    # per vertebra too (the report's chart draws these against the ACR bands)
    for lev in ("L1", "L2"):
        v = _row(rows, f"vertebrae_{lev}", "trabecular_vbmd").value
        assert _row(rows, f"vertebrae_{lev}", "trabecular_vbmd_ha").value == pytest.approx(
            v / RATIO[kvp], rel=1e-9)


def test_acr_category_depends_on_material_and_kvp():
    """Same HU: an HA calibration gives osteoporosis (75 HA); K2HPO4 68 gives 79.1 HA at
    80 kVp (osteoporosis) and 84.0 HA at 140 kVp (low bone mass)."""
    ct, labels = _spine_case(75.0, 75.0)
    k2 = _row(M.measure_spine(ct, labels, CAL), "lumbar_L1_L2", "acr_category")
    ha_rows = M.measure_spine(ct, labels, CAL_HA)
    ha = _row(ha_rows, "lumbar_L1_L2", "acr_category")
    assert k2.value == "low bone mass (osteopenia)" and ha.value == "osteoporosis"
    assert _row(ha_rows, "lumbar_L1_L2", "trabecular_vbmd_ha").value == pytest.approx(
        _row(ha_rows, "lumbar_L1_L2", "trabecular_vbmd").value, rel=1e-12)
    assert "hydroxyapatite calibration" in ha.method
    cats = {}
    for kvp in (80.0, 140.0):
        ct, labels = _spine_case(68.0, 68.0, kvp=kvp)
        cats[kvp] = _row(M.measure_spine(ct, labels, CAL), "lumbar_L1_L2",
                         "acr_category").value
    assert cats == {80.0: "osteoporosis", 140.0: "low bone mass (osteopenia)"}


# -- 2. one vertebra: indeterminate -------------------------------------------------------
def test_acr_indeterminate_from_one_vertebra():
    ct, labels = _spine_case(70.0)  # L1 only
    rows = M.measure_spine(ct, labels, CAL)
    acr = _row(rows, "lumbar_L1_L2", "acr_category")
    assert acr.value == "indeterminate"
    assert any(f.startswith("warning: category withheld: the ACR criteria are defined "
                            "on the mean of 2 vertebrae") for f in acr.flags), acr.flags
    assert not any(f.startswith("not_measurable") for f in acr.flags)
    for q in ("trabecular_vbmd", "trabecular_vbmd_ha"):  # the mean is still given, flagged
        r = _row(rows, "lumbar_L1_L2", q)
        assert r.value is not None
        assert any(f.startswith("warning: one vertebra only") for f in r.flags)


# -- 3. the calibration's stated error across a threshold: indeterminate ---------------
def _phantomless(err: float | None):
    """CAL as the phantomless calibration states it: +-err % and its unvalidated text."""
    if err is None:
        return CAL
    return replace(CAL, details={"expected_error_percent": err},
                   expected_error=f"phantomless internal calibration: expected error about "
                                  f"+-{err:g} % of BMD")


@pytest.mark.parametrize(("bmd", "err", "threshold", "category"), [
    (70.0, 10.0, 80.0, None),     # 84.7 HA +-10 %: 76.2-93.1, crosses 80
    (95.0, 10.0, 120.0, None),    # 114.9 HA: 103.4-126.4, crosses 120
    (70.0, 3.0, None, "low bone mass (osteopenia)"),  # 82.2-87.2: one class
    (130.0, 10.0, None, "normal"),       # 157.3 HA: 141.5-173.0
    (55.0, 10.0, None, "osteoporosis"),  # 66.5 HA: 59.9-73.2
    (70.0, None, None, "low bone mass (osteopenia)"),  # no stated error
])
def test_acr_indeterminate_when_the_stated_error_reaches_a_threshold(
        bmd, err, threshold, category):
    """The phantomless calibration's +-10 % interval across 80 or 120 mg/cm3: no ACR
    category (the old code printed one with a warning); the whole interval in one class:
    the category, with the calibration's unvalidated flag."""
    cal = _phantomless(err)
    ct, labels = _spine_case(bmd, bmd, kvp=120.0)  # kVp known: the stated error alone
    rows = M.measure_spine(ct, labels, cal)
    acr = _row(rows, "lumbar_L1_L2", "acr_category")
    ha = _row(rows, "lumbar_L1_L2", "trabecular_vbmd_ha").value
    near = [f for f in acr.flags if "reaches across" in f]
    if err is not None:
        assert f"unvalidated: phantomless internal calibration: expected error about +-{err:g}" \
            in " ".join(acr.flags)
    if threshold is None:
        assert near == [] and acr.value == category
    else:
        assert acr.value == INDETERMINATE
        assert len(near) == 1 and f"the {threshold:g} mg/cm3 ACR threshold" in near[0]
        assert near[0].startswith("warning: category withheld: HA-equivalent ")
        lo, hi = ha * (1 - err / 100), ha * (1 + err / 100)
        assert f"interval {lo:.1f}-{hi:.1f} mg/cm3" in near[0]
        assert f"stated error (+-{err:g} %)" in near[0] and "kVp" not in near[0]
        assert "calibrate with a phantom scanned with the patient" in near[0]


@pytest.mark.parametrize(("bmd", "kvp", "near"), [
    (67.5, None, True),    # 81.7 HA at the assumed 120 kVp; 78.5-83.3 over 80-140 kVp
    (67.5, 120.0, False),  # the same value with the kVp known: one band
    (75.0, None, False),   # 90.7 HA; 87.2-92.6: one band
])
def test_unknown_kvp_widens_the_interval_of_a_k2hpo4_value(bmd, kvp, near):
    """With the kVp unknown the K2HPO4-to-HA ratio may be anything from 0.81 to 0.86
    (Goodsitt 1992), not only the assumed 0.827: a value that close to a threshold has no
    category, although no calibration error is stated."""
    ct, labels = _spine_case(bmd, bmd, kvp=kvp)
    acr = _row(M.measure_spine(ct, labels, CAL), "lumbar_L1_L2", "acr_category")
    flags = [f for f in acr.flags if "reaches across" in f]
    assert bool(flags) == near
    assert (acr.value == INDETERMINATE) == near
    if near:
        assert "unknown kVp" in flags[0] and "the 80 mg/cm3 ACR threshold" in flags[0]
        assert flags[0].startswith("warning: category withheld: ")
        assert "'osteoporosis' to 'low bone mass (osteopenia)'" in flags[0]
        assert "state the kVp (--kvp), measure the DICOM series (its header gives" in flags[0]
    else:
        assert acr.value in ("osteoporosis", "low bone mass (osteopenia)")


def test_phantomless_calibration_near_a_threshold_gives_no_acr_category():
    """The physics-based phantomless calibration of the lumbar
    phantom gives about 112 mg/cm3 HA, +-10 % = 101-123, across 120: no category."""
    from CTMuscleBoneLib import pipeline
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(region="lumbar", spacing_mm=3.0, seed=2, noise_sd_hu=5.0))
    res = pipeline.measure(ph.ct, ph.labels, pipeline.MeasureOptions(calibration="auto"))
    assert res.artifacts["calibration"].details.get("expected_error_percent")
    for name in ("lumbar_L1_L2", "lumbar_L1_L4"):
        ha = res.value(name, "trabecular_vbmd_ha")
        acr = res.get(name, "acr_category")
        if 0.9 * ha <= 120.0 <= 1.1 * ha or 0.9 * ha <= 80.0 <= 1.1 * ha:
            assert acr.value == INDETERMINATE, (name, ha, acr.value)
            assert any(f.startswith("warning: category withheld: HA-equivalent")
                       for f in acr.flags)
        else:  # the phantom's design moved: the whole interval is in one class
            assert acr.value != INDETERMINATE


# -- 4. dense voxels in the ROI -----------------------------------------------------------
class _Island:
    """Test-only bone island: a sphere of ``hu`` HU inside a vertebral body."""

    def __init__(self, centre, radius_mm, hu=600.0):
        self.c, self.r, self.hu = np.asarray(centre, float), radius_mm, hu

    def bounds_mm(self):
        return self.c - self.r, self.c + self.r

    def inside(self, points_mm):
        return np.sum((np.asarray(points_mm) - self.c) ** 2, axis=1) <= self.r**2

    def paint(self, buf: PaintBuffer) -> None:
        buf.hu[self.inside(buf.points_mm)] = self.hu


@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_dense_roi_voxels_flagged_mean_unchanged(orientation):
    island = _Island((4.0, -2.0, 3.0), 6.0)
    ct, labels = _spine_case(100.0, 100.0, spacing=1.5, orientation=orientation,
                             extra=[island])
    res = M.analyse_spine(ct, labels, CAL)
    l1 = res["vertebrae_L1"]
    pts = ct.geometry.index_to_physical(l1.roi.index)
    truth = island.inside(pts).mean()  # analytic: ROI voxel centres inside the sphere
    assert 0.03 < truth < 0.2
    assert l1.dense_fraction == pytest.approx(truth, abs=0.5 / l1.roi.n_voxels)
    values = ct.hu[tuple(l1.roi.index.T)]
    assert l1.mean_hu == pytest.approx(float(np.mean(values)))  # the mean keeps them
    rows = M.spine_rows(res, CAL, ct)
    for q in ("trabecular_mean_hu", "trabecular_sd_hu", "trabecular_vbmd",
              "trabecular_vbmd_ha"):
        f = [x for x in _row(rows, "vertebrae_L1", q).flags
             if x.startswith("heterogeneous ROI:")]
        assert len(f) == 1 and f"{100 * truth:.1f} %" in f[0] and "bone island" in f[0]
    for q in ("fracture_grade", "height_reduction"):
        assert "heterogeneous ROI" not in _tags(_row(rows, "vertebrae_L1", q))
    assert res["vertebrae_L2"].dense_fraction == 0.0
    assert "heterogeneous ROI" not in _tags(_row(rows, "vertebrae_L2", "trabecular_mean_hu"))
    assert "heterogeneous ROI" in _tags(_row(rows, "lumbar_L1_L2", "trabecular_vbmd"))


@pytest.mark.parametrize("noise_sd", [10.0, 40.0, 80.0])
def test_dense_check_ignores_noise(noise_sd):
    rng = np.random.default_rng(1)
    v = rng.normal(150.0, noise_sd, 5000)
    assert M.dense_voxel_check(v)[0] < 0.001
    v[:150] = 650.0  # 3 %
    frac, threshold, without = M.dense_voxel_check(v)
    assert frac == pytest.approx(0.03) and threshold < 650.0
    assert without == pytest.approx(float(np.mean(v[150:])))


# -- 5. fracture wording ------------------------------------------------------------------
def _with_fracture(assessment):
    ct, labels = _spine_case(100.0, 140.0, spacing=1.5)
    res = M.analyse_spine(ct, labels, CAL)
    res["vertebrae_L1"].fracture = assessment
    return M.spine_rows(res, CAL, ct)


def test_uncertain_fracture_reads_uncertain_never_plain_fracture():
    rows = _with_fracture(F.FractureAssessment(
        2, 0.27, "wedge", {"anterior/posterior": 0.73}, True, (0.11, 0.46), (0, 3),
        ("height loss 27 % (interval 11-46 %) spans Genant grades 0-3",)))
    l1 = [r for r in rows if r.structure == "vertebrae_L1"]
    for r in l1:
        assert "fracture" not in _tags(r), (r.quantity, r.flags)
    for q in ("trabecular_mean_hu", "trabecular_vbmd", "height_reduction"):
        assert "fracture uncertain" in _tags(_row(rows, "vertebrae_L1", q))
    assert _row(rows, "vertebrae_L1", "height_reduction").value == pytest.approx(27.0)
    assert _row(rows, "vertebrae_L1", "fracture_grade").value is None
    assert _row(rows, "lumbar_L1_L2", "acr_category").value is not None  # kept


def test_confident_fracture_keeps_plain_fracture_flag():
    rows = _with_fracture(F.FractureAssessment(
        1, 0.22, "wedge", {"anterior/posterior": 0.78}, False, (0.21, 0.24), (1, 1)))
    for q in ("trabecular_mean_hu", "fracture_grade", "height_reduction"):
        assert "fracture" in _tags(_row(rows, "vertebrae_L1", q))
    assert _row(rows, "vertebrae_L1", "fracture_grade").value == 1


# -- 6. the report's ACR chart ------------------------------------------------------------
def test_acr_chart_leaves_out_cut_vertebrae():
    """L1's body is cut by the field of view: the summaries do not use it, so the chart
    does not draw it against the bands, and says so."""
    from CTMuscleBoneLib.report import plots

    specs = [VertebraSpec("L1", (0, 0, 0), trabecular_bmd_mg_cm3=70.0),
             VertebraSpec("L2", (0, 0, -35.0), trabecular_bmd_mg_cm3=100.0),
             VertebraSpec("L3", (0, 0, -70.0), trabecular_bmd_mg_cm3=110.0)]
    spine = lumbar_spine(specs, SCANNER)
    lo, hi = _bounds(spine)
    # the grid (6 mm margin) ends 5 mm below L1's upper endplate
    top = VertebraPhantom(specs[0], SCANNER).h_mm / 2 - 11.0
    geom = _grid(lo, np.r_[hi[:2], top], (2.0, 2.0, 2.0), np.eye(3))
    ct, labels = _rasterise(spine, geom)
    rows = M.measure_spine(ct, labels, CAL)
    by: dict = {}
    for r in rows:
        by.setdefault(r.structure, {})[r.quantity] = r
    assert M.summary_exclusion(by["vertebrae_L1"]["trabecular_vbmd_ha"].flags) == \
        "vertebral body cut by the field of view"
    assert M.summary_exclusion(by["vertebrae_L2"]["trabecular_vbmd_ha"].flags) is None
    assert by["lumbar_L1_L2"]["acr_category"].value == "indeterminate"  # L2 alone
    from CTMuscleBoneLib.report.build import _spine_section
    from CTMuscleBoneLib.results import Results

    sec = _spine_section(Results(rows=rows), ct, labels, by, None)
    plot = next(f for b in sec.blocks for f in b.figures if f.key == "plot_vertebrae")
    assert plot.png is not None
    assert "Not plotted (not used by the lumbar summaries): L1 (vertebral body cut" \
        in plot.caption
    assert "hydroxyapatite" in plot.caption
    fig = plots.vertebra_plot([("vertebrae_L2", by["vertebrae_L2"]["trabecular_vbmd_ha"])],
                              None, True)
    assert "Not plotted" not in fig.caption
