"""Readable outputs: one flag per condition, info vs warnings, rounding, display names,
summary sections and the overview figure (legends, labels, radiological orientation,
reasons in absent panels)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.image import LabelMap
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import (
    CSV_COLUMNS,
    DISPLAY_DECIMALS,
    Provenance,
    ResultRow,
    Results,
    display_name,
    format_value,
    is_info,
)
from CTMuscleBoneLib.summary import format_summary

GEOMETRY_QUANTITIES = ("volume_total_proximal", "neck_shaft_angle", "head_radius",
                       "mean_hu_total_proximal", "mean_hu_neck", "mean_hu_trochanter")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSpec(region="hip", spacing_mm=3.0))


@pytest.fixture(scope="module")
def measured(phantom):
    """Results of the hip phantom without and with a calibration."""
    out = {}
    for cal in ("none", "internal"):
        opts = pipeline.MeasureOptions(sex="F", height_m=1.62, calibration=cal)
        out[cal] = pipeline.measure(phantom.ct, phantom.labels, opts)
    return out


# -- flags -----------------------------------------------------------------------------
def test_uncalibrated_femur_row_carries_one_flag(measured) -> None:
    res = measured["none"]
    for side in ("left", "right"):
        row = res.get(f"femur_{side}", "abmd_total_hip")
        assert row.value is None
        assert row.flags == ["not_measurable: no HU-to-BMD calibration (HU values only)"]
        assert "uncalibrated" not in row.method
        for q in GEOMETRY_QUANTITIES:  # no calibration text where none applies
            r = res.get(f"femur_{side}", q)
            assert r.value is not None
            assert "calibrat" not in r.method and not any("calibrat" in f for f in r.flags)
    spine = res.get("lumbar_L1_L2", "trabecular_vbmd")
    assert [f for f in spine.flags if "calibration" in f] == [
        "not_measurable: no HU-to-BMD calibration (HU values only)"]


def test_calibration_text_only_on_values_that_depend_on_it(measured) -> None:
    res = measured["internal"]
    abmd = res.get("femur_left", "abmd_total_hip")
    assert abmd.value is not None and abmd.method.startswith("internal calibration")
    assert any(f.startswith("calibration:") for f in abmd.flags)
    for q in GEOMETRY_QUANTITIES:
        r = res.get("femur_left", q)
        assert "calibration" not in r.method, q
        assert not any(f.startswith("calibration:") for f in r.flags), q
    t = res.get("femur_left", "t_score_total_hip")
    assert t.unit == "SD"


def test_every_row_has_each_flag_once(measured) -> None:
    for res in measured.values():
        for r in res.rows:
            assert len(r.flags) == len(set(r.flags)), r
            tags = [f.split(":", 1)[0] for f in r.flags]
            assert not ("not_measurable" in tags and "uncalibrated" in tags), r


def test_flags_are_deduplicated_and_split_into_warnings_and_info() -> None:
    row = ResultRow("gluteus_medius_left", "volume", 1.0, "cm3", "",
                    ["partial: cut", "info: ROI relaxed", "partial: cut", ""])
    assert row.flags == ["partial: cut", "info: ROI relaxed"]
    assert row.warnings == ["partial: cut"] and row.info == ["info: ROI relaxed"]
    assert is_info("info: x") and not is_info("unvalidated: x")
    row.flags.append("partial: cut")  # appended later: the writers still show it once
    res = Results(rows=[row])
    assert res.to_dict()["rows"][0]["flags"] == ["partial: cut", "info: ROI relaxed"]
    line = list(csv.reader(io.StringIO(res.to_csv_text())))[1]
    assert line[-1] == "partial: cut; info: ROI relaxed"


# -- numbers and names -----------------------------------------------------------------
@pytest.mark.parametrize(("value", "unit", "quantity", "text"), [
    (123.456, "cm3", "volume", "123.5"),
    (45.33333, "HU", "mean_hu", "45.3"),
    (1.093974, "g/cm2", "abmd_total_hip", "1.094"),
    (459.027, "mg/cm3", "vbmd_neck", "459.0"),
    (1.24567, "SD", "t_score_total_hip", "1.2"),
    (1.09683, "kg", "alm", "1.10"),
    (0.417934, "kg/m2", "smi", "0.42"),
    (116.133, "%", "percent_yam_total_hip", "116.1"),
    (0.0289855, "1", "fat_fraction", "0.029"),
    (-0.00001, "HU", "mean_hu", "0.0"),
    (3, "1", "fracture_grade", "3"),
    ("normal", "", "who_category_total_hip", "normal"),
    (None, "HU", "mean_hu", ""),
    (float("nan"), "HU", "mean_hu", ""),
    (1234.5678, "unknown unit", "q", "1235"),
])
def test_values_rounded_per_quantity(value, unit, quantity, text) -> None:
    assert format_value(value, unit, quantity) == text


def test_display_decimals_table_covers_every_unit_produced(measured) -> None:
    units = {r.unit for res in measured.values() for r in res.rows if isinstance(r.value, float)}
    assert units <= set(DISPLAY_DECIMALS), units - set(DISPLAY_DECIMALS)


def test_display_names() -> None:
    assert display_name("gluteus_medius_left") == BY_KEY["gluteus_medius_left"].display_name
    assert display_name("lower_limb_left") == "Lower limb muscles (left)"
    assert display_name("gluteal_total") == "Gluteal muscles (both sides)"
    assert display_name("lumbar_L1_L4") == "Lumbar spine L1-L4"
    assert display_name("patient") == "Patient"


def test_csv_rounded_with_display_names_json_full_precision(measured, tmp_path: Path) -> None:
    res = measured["internal"]
    paths = pipeline.write_outputs(res, tmp_path)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    by = {(r["structure"], r["quantity"]): r for r in rows}
    abmd = by[("femur_left", "abmd_total_hip")]
    assert abmd["display_name"] == "Femur (left)"
    assert len(abmd["value"].split(".")[1]) == 3
    assert by[("lower_limb_left", "volume")]["display_name"] == "Lower limb muscles (left)"
    vol = by[("gluteus_maximus_left", "volume")]["value"]
    assert len(vol.split(".")[1]) == 1
    full = json.loads(paths["json"].read_text())
    jrow = next(r for r in full["rows"]
                if (r["structure"], r["quantity"]) == ("femur_left", "abmd_total_hip"))
    assert jrow["value"] == res.value("femur_left", "abmd_total_hip")  # not rounded
    assert f"{jrow['value']:.3f}" == abmd["value"]


# -- summary ---------------------------------------------------------------------------
BANNER = "Demo model trained on synthetic phantoms - not for clinical images."


def test_summary_banner_first_once_then_patient_and_calibration(measured) -> None:
    res = measured["internal"]
    res = Results(rows=res.rows, provenance=res.provenance, warnings=[BANNER, *res.warnings],
                  unknown_labels=res.unknown_labels)
    res.provenance.models = [{"kind": "segmentation model", "synthetic": True,
                              "warning": BANNER}]
    text = format_summary(res)
    assert text.startswith(f"*** {BANNER} ***")
    assert text.count(BANNER) == 1
    head = text.split("\nMuscles\n")[0]
    assert "sex: F (from option)" in head
    assert "height: 1.62 m (from option)" in head
    assert "Calibration" in head and "internal calibration" in head and "K2HPO4" in head
    # display names in every table, machine keys only where they are data
    assert "Lower limb muscles (left)" in text and "Gluteus maximus (left)" in text
    assert "lower_limb_left" not in text and "gluteus_maximus_left" not in text
    assert "T-score total hip" in text


def test_summary_separates_information_from_warnings(measured) -> None:
    text = format_summary(measured["none"])
    warnings = text.split("\nWarnings\n")[1].split("\nInformation\n")[0]
    info = text.split("\nInformation\n")[1]
    assert "partial: cut by the field of view" in warnings
    assert "ROI relaxed" not in warnings and "ROI relaxed" in info
    assert "info:" not in text
    # not-measurable values: one line per structure and reason, not rows of n/a
    assert ("Femur (left): not measurable (no HU-to-BMD calibration (HU values only)): "
            "aBMD total hip") in text
    assert "n/a" not in text.split("Femoral bone density")[1].split("\n\n")[0]


def test_summary_without_patient_facts_says_what_is_missing() -> None:
    res = Results(rows=[ResultRow("patient", "smi", None, "kg/m2", "ALM / height^2",
                                  ["not_measurable: no height"])],
                  provenance=Provenance(patient={"sex": None, "sex_source": None,
                                                 "height_m": None, "height_source": None,
                                                 "age_years": 70.0,
                                                 "age_source": "DICOM header"}))
    text = format_summary(res)
    assert "sex: not known" in text and "height: not known" in text
    assert "age: 70 years (from DICOM header)" in text


def test_summary_says_what_an_unknown_age_decides() -> None:
    """Age decides whether T-scores or Z-scores apply (ISCD, dxa/scores.py): the summary
    used to say it was 'not used by the measurements'."""
    res = Results(rows=[ResultRow("patient", "smi", None, "kg/m2", "ALM / height^2",
                                  ["not_measurable: no height"])],
                  provenance=Provenance(patient={"sex": "F", "sex_source": "option",
                                                 "height_m": 1.6, "height_source": "option",
                                                 "age_years": None, "age_source": None}))
    text = format_summary(res)
    (line,) = [x for x in text.splitlines() if x.strip().startswith("age:")]
    assert "not used" not in line
    assert "give --age" in line and "T-scores" in line and "Z-scores" in line


# -- figure ----------------------------------------------------------------------------
def _legend_texts(fig) -> set[str]:
    from matplotlib.legend import Legend

    return {t.get_text() for leg in fig.findobj(Legend) for t in leg.get_texts()}


def _panel(fig, title_start: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title_start))


def test_overview_figure_legends_labels_and_orientation(phantom, measured, tmp_path) -> None:
    from CTMuscleBoneLib.figures import overview_figure

    res = measured["internal"]
    unc = (phantom.labels.array > 0).astype(np.float32) * 0.5
    path, fig = overview_figure(phantom.ct.hu, phantom.labels, tmp_path / "overview.png",
                                uncertainty=unc, femur_projections=res.artifacts["femur"]
                                .projections, results=res, return_figure=True)
    try:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        texts = _legend_texts(fig)
        assert {"Femur", "total hip ROI", "femoral neck ROI"} <= texts
        labels = {ax.get_ylabel() for ax in fig.axes} | {ax.get_xlabel() for ax in fig.axes}
        assert "patient right <-> left (mm)" in labels
        assert {"CT (HU, window)", "areal BMD (g/cm2)"} <= labels  # colour bars
        assert any(lab.startswith("predictive variance") for lab in labels)
        # radiological order: the right femur's panel before the left one
        titles = [ax.get_title() for ax in fig.axes if "femur, DXA view" in ax.get_title()]
        assert [t.split()[0] for t in titles] == ["right", "left"]
        # the value itself depends on the calibration (physics-based internal here)
        assert re.search(r"total hip \d\.\d{3} g/cm2", titles[0]), titles[0]
        # the patient's right on the image left: right femur voxels left of the left's
        seg = _panel(fig, "segmentation")
        rgba = np.asarray(seg.images[1].get_array())
        cols = {}
        for side in ("left", "right"):
            c = np.asarray(BY_KEY[f"femur_{side}"].color_rgb) / 255.0
            hit = np.all(np.isclose(rgba[..., :3], c), axis=-1) & (rgba[..., 3] > 0)
            cols[side] = np.nonzero(hit)[1].mean()
        assert cols["right"] < cols["left"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_heatmap_colours_mean_the_same_on_every_case(phantom) -> None:
    """With the model's full scale (a two-structure tie) a voxel's colour depends on its
    value only: the same value is drawn alike on a confident and an uncertain case, and a
    case with only small values stays dark (its own maximum used to be drawn in full
    colour, and its upper half always shown)."""
    from CTMuscleBoneLib.figures import build_overview
    from CTMuscleBoneLib.segmentation import uncertainty as U

    full = U.two_class_tie_value("predictive_variance", 31)
    body = phantom.labels.array > 0
    ramp = phantom.labels.array / phantom.labels.array.max()  # 0 outside, up to 1
    confident = np.where(body, 0.05 * full * ramp, 0.0).astype(np.float32)
    uncertain = confident.copy()
    uncertain[phantom.labels.array == phantom.labels.array.max()] = full

    def drawn(unc, scale):
        fig = build_overview(phantom.ct.hu, phantom.labels, uncertainty=unc,
                             uncertainty_full_scale=scale)
        try:
            im = _panel(fig, "uncertainty").images[-1]
            return im.norm.vmin, im.norm.vmax, np.ma.getmaskarray(im.get_array())
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)

    for unc in (confident, uncertain):
        vmin, vmax, masked = drawn(unc, full)
        assert (vmin, vmax) == (0.0, pytest.approx(full))  # the same scale on both
        assert not masked.all()  # up to 5 % of the scale is drawn (above 1/256 of it)
    # without the class count: each case on its own maximum (the earlier behaviour)
    assert drawn(confident, None)[1] == pytest.approx(0.05 * full)
    # the full scale a report reads from a Results provenance
    assert U.variance_full_scale([{"kind": "segmentation model", "n_classes": 31}]) == full
    assert U.variance_full_scale([{"kind": "alm model"}, {"kind": "segmentation model"}]
                                 ) is None


def test_overview_absent_panels_say_why(phantom, measured, tmp_path) -> None:
    import matplotlib.pyplot as plt
    from CTMuscleBoneLib.figures import build_overview

    fig = build_overview(phantom.ct.hu, phantom.labels, results=measured["none"])
    try:
        texts = [t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts]
        assert any(t.startswith("no DXA view: no HU-to-BMD calibration") for t in texts)
        assert any(t.startswith("no uncertainty map") for t in texts)
    finally:
        plt.close(fig)
    lab = phantom.labels
    keep = {v: k for v, k in lab.structures.items() if not k.startswith("femur")}
    arr = np.where(np.isin(lab.array, list(keep)), lab.array, 0)
    no_femur = LabelMap(arr, lab.geometry, keep)
    fig = build_overview(phantom.ct.hu, no_femur)
    try:
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert "no femur segmented" in texts
        assert "total hip ROI" not in _legend_texts(fig)
    finally:
        plt.close(fig)


def test_segment_legend_groups_many_structures() -> None:
    from CTMuscleBoneLib.figures import MAX_LEGEND_ENTRIES, legend_entries

    few = [BY_KEY["femur_left"], BY_KEY["femur_right"], BY_KEY["gluteus_medius_left"]]
    assert [name for name, _ in legend_entries(few)] == ["Femur", "Gluteus medius"]
    assert len(legend_entries(few)[0][1]) == 2  # both sides' colours in one entry
    many = [st for st in BY_KEY.values() if st.group == "muscle"]
    names = [name for name, _ in legend_entries(many)]
    assert len(names) <= MAX_LEGEND_ENTRIES
    assert {"Gluteal muscles", "Hip flexors", "Thigh muscles"} <= set(names)
