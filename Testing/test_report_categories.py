"""The report's figures draw a category's bands or cut-offs only where the table gives
that category (project rule: a category only from a number on the scale its thresholds
were made for): a T-score of a woman under 50, an SMI from the unvalidated default ALM
model and a vertebra without its ACR category are drawn as values alone, and the caption
says why. Pickhardt's L1 thresholds are drawn behind L1 only.

Band and cut-off colours are looked for in the PNG's pixels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.alm import CRITERIA
from CTMuscleBoneLib.dxa import DXAConversionModel, SiteLine
from CTMuscleBoneLib.dxa.references import load_reference
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.report import build, plots
from CTMuscleBoneLib.results import ResultRow
from matplotlib import colors
from matplotlib import image as mpimg

VALIDATED_IDENTITY = DXAConversionModel(
    "validated-identity", {s: SiteLine(1.0, 0.0) for s in ("total_hip", "femoral_neck",
                                                          "lumbar")}, validated=True)


def _has_colour(png: bytes, colour: str, tol: float = 2.0 / 255) -> bool:
    """Whether any pixel of the PNG has ``colour`` (RGB, within ``tol``)."""
    rgb = mpimg.imread(io.BytesIO(png))[..., :3]
    want = np.array(colors.to_rgb(colour))
    return bool((np.abs(rgb - want) <= tol).all(axis=-1).any())


def _t_row(value: float, flags: list[str] | None = None) -> ResultRow:
    return ResultRow("femur_left", "t_score_total_hip", value, "SD", "", flags or [])


def test_score_plot_bands_only_without_a_withheld_category():
    crit = load_reference("nhanes3").criteria
    drawn = plots.score_plot([("Femur (left) total hip", _t_row(-2.0))], crit)
    bare = plots.score_plot([("Femur (left) total hip", _t_row(-2.0))], crit,
                            "Femur (left) total hip: WHO category not measurable: under 50")
    for c in plots.BAND_COLOURS:
        assert _has_colour(drawn.png, c) and not _has_colour(bare.png, c), c
    assert "band colours in the legend" in drawn.caption
    assert "bands are not drawn: Femur (left) total hip: WHO category not measurable" in \
        bare.caption


def test_smi_plot_cut_offs_only_when_the_flag_is_given():
    row = ResultRow("patient", "smi", 6.2, "kg/m2", "")
    crit = CRITERIA["awgs2019"]
    drawn = plots.smi_plot(row, crit, "F")
    bare = plots.smi_plot(row, crit, "F", "low-muscle-mass flag indeterminate: default "
                                          "ALM coefficients")
    assert _has_colour(drawn.png, "firebrick") and not _has_colour(bare.png, "firebrick")
    assert "cut-offs are not drawn: low-muscle-mass flag indeterminate" in bare.caption


def _levels(unit: str, quantity: str, values: dict[str, float]) -> list:
    return [(f"vertebrae_{k}", ResultRow(f"vertebrae_{k}", quantity, v, unit, ""))
            for k, v in values.items()]


def test_vertebra_plot_acr_bands_withheld_with_the_category():
    levels = _levels("mg/cm3", "trabecular_vbmd_ha", {"L1": 95.0, "L2": 110.0})
    drawn = plots.vertebra_plot(levels, None, True)
    bare = plots.vertebra_plot(levels, None, True, (), "ACR category indeterminate: x")
    for c in plots.BAND_COLOURS:
        assert _has_colour(drawn.png, c) and not _has_colour(bare.png, c), c
    assert "no ACR 2018 (mean of two vertebrae) bands: ACR category indeterminate" in \
        bare.caption


def test_pickhardt_bands_behind_l1_only():
    """Uncalibrated: the bands stand behind the L1 bar alone; without L1, none."""
    hu = {"L1": 150.0, "L2": 140.0, "L3": 130.0, "L4": 120.0}
    fig = plots.vertebra_plot(_levels("HU", "trabecular_mean_hu", hu), None, False)
    rgb = mpimg.imread(io.BytesIO(fig.png))[..., :3]
    want = np.array(colors.to_rgb(plots.BAND_COLOURS[2]))
    cols = np.nonzero((np.abs(rgb - want) <= 2.0 / 255).all(axis=-1).any(axis=0))[0]
    # two runs of columns: the band behind L1 (a quarter of the axes: 4 levels) and
    # the legend's patch, narrower, on the right
    runs = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    assert len(runs) == 2
    band, legend = (len(r) for r in runs)
    assert legend < band < 0.3 * fig.width_px
    no_l1 = plots.vertebra_plot(_levels("HU", "trabecular_mean_hu",
                                        {k: v for k, v in hu.items() if k != "L1"}),
                                None, False)
    for c in plots.BAND_COLOURS:
        assert not _has_colour(no_l1.png, c), c
    assert "for L1 only" in no_l1.caption


@pytest.fixture(scope="module")
def young_hip():
    """A woman of 40 through a validated CT-to-DXA model: T-scores, no WHO category."""
    ph = make_phantom(PhantomSpec(region="hip", spacing_mm=4.0, seed=3, calibration=True,
                                  calibration_definition="B-MAS200"))
    results = pipeline.measure(ph.ct, ph.labels, pipeline.MeasureOptions(
        sex="F", height_m=1.60, age_years=40, phantom="B-MAS200",
        dxa_model=VALIDATED_IDENTITY))
    return results


def test_score_block_of_a_woman_under_50_has_no_bands(young_hip):
    t = young_hip.get("femur_left", "t_score_total_hip")
    assert isinstance(t.value, float)
    assert young_hip.get("femur_left", "who_category_total_hip").value is None
    (fig,) = build._score_block(young_hip, ["femur_left", "femur_right"]).figures
    assert fig.png is not None
    for c in plots.BAND_COLOURS:
        assert not _has_colour(fig.png, c), c
    assert "WHO 1994 bands are not drawn" in fig.caption
    assert "categories do not apply under 50" in fig.caption


def test_category_withheld_reason_of_each_kind():
    assert build._category_withheld(None, "ACR category") == "no ACR category row"
    row = ResultRow("lumbar_L1_L2", "acr_category", "osteoporosis", "", "")
    assert build._category_withheld(row, "ACR category") is None
    ind = ResultRow("patient", "sarcopenia_low_muscle_mass", "indeterminate", "", "",
                    ["unvalidated: default ALM coefficients"])
    assert build._category_withheld(ind, "flag") == ("flag indeterminate: default ALM "
                                                     "coefficients")
    none = ResultRow("femur_left", "who_category_total_hip", None, "", "",
                     ["not_measurable: under 50"])
    assert build._category_withheld(none, "WHO") == "WHO not measurable: under 50"
