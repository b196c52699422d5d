"""L3 muscle index: area, attenuation and psoas on the L3 mid-level slice, cut-offs.

Analytic truth: an elliptical cylinder of muscle (50 HU) along the patient's superior
axis, with a disc of intramuscular fat (-80 HU, outside the lean window) inside it, so
the skeletal muscle area on any axial slice is pi*a*b - pi*r^2; stored with several
spacings and orientations (axial, flipped, permuted, oblique -> resampled plane).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib import muscle_l3
from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry, LabelMap

A_MM, B_MM = 80.0, 50.0  # muscle ellipse semi-axes (x, y)
FAT_R_MM = 10.0  # IMAT disc inside the muscle
PSOAS_R_MM = 15.0  # psoas disc (labelled), inside the muscle, away from the fat
MUSCLE_HU, FAT_HU, BG_HU = 50.0, -80.0, -100.0
TRUE_AREA_CM2 = (math.pi * A_MM * B_MM - math.pi * FAT_R_MM**2) / 100.0
TRUE_PSOAS_CM2 = math.pi * PSOAS_R_MM**2 / 100.0


def _rot_x(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])


def make_case(spacing, direction, half_mm=(110.0, 90.0, 50.0)):
    """CT + labels + muscle mask of the analytic cylinder, centred on LPS (0, 0, 0)."""
    direction = np.asarray(direction, dtype=float)
    dominant = [int(np.argmax(np.abs(direction[:, a]))) for a in range(3)]
    shape = tuple(2 * int(half_mm[dominant[a]] / spacing[a]) + 1 for a in range(3))
    centre_index = (np.asarray(shape) - 1) / 2.0
    origin = -(direction * np.asarray(spacing)[None, :]) @ centre_index
    g = Geometry(shape, tuple(float(s) for s in spacing), tuple(origin), direction)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    p = g.index_to_physical(idx.reshape(-1, 3)).reshape(*shape, 3)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    muscle = (x / A_MM) ** 2 + (y / B_MM) ** 2 <= 1.0
    fat = (x + 40.0) ** 2 + y**2 <= FAT_R_MM**2
    psoas = (x - 35.0) ** 2 + (y - 10.0) ** 2 <= PSOAS_R_MM**2
    hu = np.full(shape, BG_HU, dtype=np.float32)
    hu[muscle] = MUSCLE_HU
    hu[fat] = FAT_HU
    vert = x**2 + (y - 70.0) ** 2 + z**2 <= 16.0**2  # 17 cm3: passes the plausibility check
    hu[vert] = 300.0
    arr = np.zeros(shape, dtype=np.int16)
    arr[psoas] = BY_KEY["psoas_major_left"].label_value
    arr[vert] = BY_KEY["vertebrae_L3"].label_value
    labels = LabelMap(arr, g, {BY_KEY["psoas_major_left"].label_value: "psoas_major_left",
                               BY_KEY["vertebrae_L3"].label_value: "vertebrae_L3"})
    ct = CTImage(hu, g, CTMetadata(modality="CT"))
    return ct, labels, muscle


AXIAL = np.eye(3)
FLIPPED = np.diag([-1.0, -1.0, 1.0])  # RAS storage
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # axis 0 = superior


@pytest.mark.parametrize("spacing, direction, resampled", [
    ((1.0, 1.0, 2.5), AXIAL, False),
    ((0.8, 0.8, 5.0), FLIPPED, False),
    ((3.0, 1.0, 1.25), PERMUTED, False),
    ((1.0, 1.0, 1.0), _rot_x(15.0), True),
    ((1.2, 0.9, 2.0), _rot_x(-25.0) @ PERMUTED, True),
])
def test_area_attenuation_and_psoas_are_analytic(spacing, direction, resampled) -> None:
    ct, labels, muscle = make_case(spacing, direction)
    m = muscle_l3.measure_l3(ct, labels, muscle)
    assert m.reason is None and m.psoas_reason is None
    assert ("resampled" in m.slice_text) == resampled
    assert m.area_cm2 == pytest.approx(TRUE_AREA_CM2, rel=0.02)
    assert m.attenuation_hu == pytest.approx(MUSCLE_HU)  # the IMAT disc is left out
    assert m.psoas_area_cm2 == pytest.approx(TRUE_PSOAS_CM2, rel=0.06)
    assert not m.partial
    assert abs(m.z_mm) <= max(spacing) / 2 + 1e-6


def test_rows_smi_and_psoas_index() -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    m = muscle_l3.measure_l3(ct, labels, muscle)
    rows = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.6, "M", 60.0)}
    assert rows["smi"].value == pytest.approx(m.area_cm2 / 1.6**2)
    assert rows["smi"].unit == "cm2/m2"
    assert rows["psoas_muscle_index"].value == pytest.approx(m.psoas_area_cm2 / 1.6**2)
    # no height: areas stay, indices not measurable with the reason
    rows = {r.quantity: r for r in muscle_l3.l3_rows(m, None, "M", 60.0)}
    assert rows["skeletal_muscle_area"].value == pytest.approx(m.area_cm2)
    assert rows["smi"].value is None and "no height" in rows["smi"].flags[0]


def test_muscle_cut_by_the_field_of_view_is_partial_and_indeterminate() -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL, half_mm=(70.0, 90.0, 50.0))
    m = muscle_l3.measure_l3(ct, labels, muscle)
    assert m.partial and m.area_cm2 < TRUE_AREA_CM2
    rows = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.6, "F", 60.0)}
    assert any(f.startswith("partial") for f in rows["smi"].flags)
    for q in ("low_smi_prado2008", "low_smi_derstine2018", "low_smi_martin2013"):
        assert rows[q].value == "indeterminate"


def _physical_mm(ct: CTImage) -> np.ndarray:
    """LPS coordinates of every voxel centre, mm, (n0, n1, n2, 3)."""
    g = ct.geometry
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), axis=-1)
    return g.index_to_physical(idx.reshape(-1, 3)).reshape(*g.shape, 3)


def _posterior_mm(ct: CTImage) -> np.ndarray:
    """LPS y (posterior) of every voxel centre, mm, (n0, n1, n2)."""
    return _physical_mm(ct)[..., 1]


@pytest.mark.parametrize("spacing, direction", [
    ((1.0, 1.0, 2.5), AXIAL), ((0.8, 0.8, 5.0), FLIPPED), ((3.0, 1.0, 1.25), PERMUTED),
    ((1.0, 1.0, 1.0), _rot_x(15.0)), ((1.2, 0.9, 2.0), _rot_x(-25.0) @ PERMUTED),
])
def test_mask_without_the_abdominal_wall_is_partial_and_indeterminate(spacing, direction
                                                                     ) -> None:
    """The vertebral body's front is at y = 54 mm (LPS). The whole ellipse reaches y = -50
    (104 mm in front); a mask cut at y > 9 mm reaches 45 mm (kept), one cut at y > 19 mm
    35 mm and one of the back only (y > 40 mm) 14 mm: both flagged partial (the abdominal
    wall missing), so no category is given; the area itself is still reported."""
    ct, labels, muscle = make_case(spacing, direction)
    y = _posterior_mm(ct)
    step = max(spacing)  # the most anterior pixel lies within a pixel of the cut
    full = muscle_l3.measure_l3(ct, labels, muscle)
    assert not full.partial and full.flags == []
    for cut_mm, reach_mm, flagged in ((9.0, 45.0, False), (19.0, 35.0, True),
                                      (40.0, 14.0, True)):
        m = muscle_l3.measure_l3(ct, labels, muscle & (y > cut_mm))
        assert m.partial == flagged, cut_mm
        assert m.area_cm2 is not None and m.area_cm2 < full.area_cm2
        if flagged:
            (flag,) = m.flags
            assert "abdominal wall seems missing" in flag
            got = float(flag.split("the most anterior: ")[1].split(" mm")[0])
            assert reach_mm - step - 1 <= got <= reach_mm + 1
            rows = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.6, "F", 60.0)}
            for q in ("low_smi_prado2008", "low_smi_derstine2018", "low_smi_martin2013"):
                assert rows[q].value == "indeterminate"
            assert rows["skeletal_muscle_area"].value == pytest.approx(m.area_cm2)


def _measure(area: float, attenuation: float) -> muscle_l3.L3Measure:
    return muscle_l3.L3Measure("vertebrae_L3", area_cm2=area, attenuation_hu=attenuation,
                               psoas_area_cm2=10.0, muscle_source="test", slice_text="test")


@pytest.mark.parametrize("sex, smi, weight, expected", [
    # Prado 2008: men < 52.4, women < 38.5 cm2/m2 (strictly below), obese only (BMI >= 30)
    ("M", 52.4, 30, {"prado2008": "no", "derstine2018": "no", "martin2013": "yes"}),
    ("M", 52.3, 30, {"prado2008": "yes", "derstine2018": "no", "martin2013": "yes"}),
    # Martin 2013 men: 43 below BMI 25, 53 from BMI 25 (height 1 m: BMI = weight)
    ("M", 44.0, 24.9, {"prado2008": "indeterminate", "derstine2018": "yes",
                       "martin2013": "no"}),
    ("M", 44.0, 25.0, {"prado2008": "indeterminate", "derstine2018": "yes",
                       "martin2013": "yes"}),
    ("F", 38.5, 30, {"prado2008": "no", "derstine2018": "no", "martin2013": "yes"}),
    ("F", 34.3, 30, {"prado2008": "yes", "derstine2018": "yes", "martin2013": "yes"}),
])
def test_smi_cutoffs(sex, smi, weight, expected) -> None:
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(smi, 45.0), 1.0, sex, weight)}
    for cid, value in expected.items():
        assert rows[f"low_smi_{cid}"].value == value, cid


@pytest.mark.parametrize("sex, hu, weight, martin, derstine", [
    ("M", 40.9, 20, "yes", "no"),   # Martin 41 HU (BMI < 25); Derstine men 38.5 HU
    ("M", 38.4, 30, "no", "yes"),   # Martin 33 HU (BMI >= 25)
    ("F", 34.2, 30, "no", "yes"),   # Derstine women 34.3 HU
])
def test_attenuation_cutoffs(sex, hu, weight, martin, derstine) -> None:
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(150.0, hu), 1.0, sex, weight)}
    assert rows["low_attenuation_martin2013"].value == martin
    assert rows["low_attenuation_derstine2018"].value == derstine


def test_categories_need_sex_and_bmi() -> None:
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(150.0, 40.0), 1.7, None, 70)}
    for q in ("low_smi_prado2008", "low_smi_derstine2018", "low_attenuation_derstine2018"):
        assert rows[q].value is None
        assert "sex unknown" in rows[q].flags[0]
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(150.0, 40.0), 1.7, "M", None)}
    assert rows["low_smi_derstine2018"].value in ("yes", "no")
    for q in ("low_smi_martin2013", "low_attenuation_martin2013", "low_smi_prado2008"):
        assert rows[q].value is None and "weight" in rows[q].flags[0]


@pytest.mark.parametrize("sex, smi", [("M", 40.0), ("F", 30.0), ("M", 60.0)])
def test_prado_cutoffs_only_in_their_obese_population(sex, smi) -> None:
    """Prado 2008 was derived in obese patients (BMI >= 30): below it the row is
    'indeterminate' with the reason (the SMI itself is still given); without a BMI it is
    empty with the reason, as Martin 2013 without a BMI."""
    m = _measure(smi, 45.0)
    rows = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.0, sex, 29.9)}  # BMI 29.9
    prado = rows["low_smi_prado2008"]
    assert prado.value == "indeterminate"
    (why,) = [f for f in prado.flags if "outside the population" in f]
    assert "BMI 29.9" in why and "BMI >= 30" in why and "no yes/no" in why
    assert any(f.startswith("unvalidated") for f in prado.flags)  # still unverified
    assert rows["smi"].value == pytest.approx(smi)
    assert rows["low_smi_derstine2018"].value in ("yes", "no")
    obese = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.0, sex, 30.0)}["low_smi_prado2008"]
    assert obese.value == ("yes" if smi < (52.4 if sex == "M" else 38.5) else "no")
    assert not any("outside the population" in f for f in obese.flags)
    unknown = {r.quantity: r for r in muscle_l3.l3_rows(m, 1.0, sex, None)}["low_smi_prado2008"]
    assert unknown.value is None
    assert unknown.flags[0].startswith("not_measurable: no weight for the BMI")


def test_prado_population_range_is_read_from_the_table(tmp_path: Path) -> None:
    src = Path(muscle_l3.__file__).with_name("data") / "l3_cutoffs.json"
    d = json.loads(src.read_text(encoding="utf-8"))
    (prado,) = [c for c in d["cutoffs"] if c["id"] == "prado2008"]
    assert prado["population_bmi"]["at_least"] == 30.0 and prado["population_bmi"]["source"]
    prado["population_bmi"]["at_least"] = 20.0  # the range comes from the file
    p = tmp_path / "cut.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    cutoffs = muscle_l3.load_l3_cutoffs(p)
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(40.0, 45.0), 1.0, "M", 25.0,
                                                     cutoffs)}
    assert rows["low_smi_prado2008"].value == "yes"


@pytest.mark.parametrize("value", ["false", "true", 0, None])
def test_cutoff_table_refuses_a_verified_that_is_not_a_boolean(tmp_path: Path, value) -> None:
    """"verified": "false" used to read as True (bool of a non-empty string)."""
    src = Path(muscle_l3.__file__).with_name("data") / "l3_cutoffs.json"
    d = json.loads(src.read_text(encoding="utf-8"))
    d["cutoffs"][0]["verified"] = value
    p = tmp_path / "cut.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(InputError, match=r'cut\.json.*"verified" is .*not a JSON boolean.*'
                                         "true or false without quotes"):
        muscle_l3.load_l3_cutoffs(p)


def test_cutoff_table_has_sources_and_verification() -> None:
    cutoffs = muscle_l3.load_l3_cutoffs()
    assert {c.id for c in cutoffs} == {"prado2008", "martin2013", "derstine2018"}
    for c in cutoffs:
        assert c.source and c.verification
    assert all(c.verified for c in cutoffs if c.id == "derstine2018")
    rows = {r.quantity: r for r in muscle_l3.l3_rows(_measure(150.0, 40.0), 1.7, "M", 70)}
    assert any(f.startswith("unvalidated") for f in rows["low_smi_prado2008"].flags)
    assert not any(f.startswith("unvalidated") for f in rows["low_smi_derstine2018"].flags)


def test_partial_label_map_gives_no_area() -> None:
    """Psoas and erector spinae only (TotalSegmentator 'total'): no SMA, psoas kept."""
    ct, labels, _ = make_case((1.0, 1.0, 2.5), AXIAL)
    m = muscle_l3.measure_l3(ct, labels, None)
    assert m.area_cm2 is None
    assert "quadratus lumborum" in m.reason and "abdominal wall" in m.reason
    assert m.psoas_area_cm2 == pytest.approx(TRUE_PSOAS_CM2, rel=0.06)


def _sector_labels(ct: CTImage, labels: LabelMap, muscle: np.ndarray,
                   regions: dict[str, str]) -> LabelMap:
    """The analytic muscle split into labelled regions (names as other tools write them).

    ``regions`` maps a region of the ellipse to a label name (or "" for unlabelled):
    front (y < -30 mm: rectus abdominis), side (|x| > 55 mm: obliques), back
    (y > 25 mm: erector spinae), deep (y > 25 mm, |x| < 15 mm: multifidus), rest
    (quadratus lumborum). The psoas disc keeps its label."""
    p = _physical_mm(ct)
    x, y = p[..., 0], p[..., 1]
    parts = {"front": y < -30.0, "side": np.abs(x) > 55.0, "back": y > 25.0,
             "deep": (y > 25.0) & (np.abs(x) < 15.0)}
    arr = labels.array.copy()
    free = muscle & (arr == 0)
    arr[free] = 205  # rest
    unknown = {205: regions.get("rest", "quadratus_lumborum_left")}
    for value, part in enumerate(("front", "side", "back", "deep"), start=201):
        arr[free & parts[part]] = value if regions.get(part) else 0
        if regions.get(part):
            unknown[value] = regions[part]
    return LabelMap(arr, labels.geometry, labels.structures, unknown)


FULL_WALL = {"front": "rectus_abdominis_left", "side": "external_oblique_right",
             "back": "erector_spinae_left", "deep": "transversospinalis_right"}


def test_label_map_with_every_l3_group_gives_the_whole_area() -> None:
    """TotalSegmentator 'abdominal_muscles' names: the union is the whole muscle."""
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    m = muscle_l3.measure_l3(ct, _sector_labels(ct, labels, muscle, FULL_WALL), None)
    assert m.reason is None and not m.flags
    assert m.area_cm2 == pytest.approx(TRUE_AREA_CM2, rel=0.02)
    assert "transversospinalis" in m.muscle_source
    # one label for the whole wall stands for both of its groups
    whole = dict(FULL_WALL, front="abdominal_wall", side="abdominal_wall")
    m = muscle_l3.measure_l3(ct, _sector_labels(ct, labels, muscle, whole), None)
    assert m.area_cm2 == pytest.approx(TRUE_AREA_CM2, rel=0.02)


@pytest.mark.parametrize("drop, named", [
    ("side", "side of the abdominal wall"),   # rectus abdominis alone: reach looks fine
    ("front", "front of the abdominal wall"),
    ("back", "erector spinae"),
])
def test_label_map_lacking_part_of_the_wall_gives_no_area(drop: str, named: str) -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    regions = {k: v for k, v in FULL_WALL.items() if k != drop}
    m = muscle_l3.measure_l3(ct, _sector_labels(ct, labels, muscle, regions), None)
    assert m.area_cm2 is None and named in m.reason
    assert "--muscle-mask" in m.reason
    assert m.psoas_area_cm2 == pytest.approx(TRUE_PSOAS_CM2, rel=0.06)


def test_optional_deep_back_muscles_join_the_union_when_labelled() -> None:
    """Without the multifidus label the area is the muscle minus that region."""
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    regions = {k: v for k, v in FULL_WALL.items() if k != "deep"}
    with_deep = muscle_l3.measure_l3(ct, _sector_labels(ct, labels, muscle, FULL_WALL))
    without = muscle_l3.measure_l3(ct, _sector_labels(ct, labels, muscle, regions))
    assert without.reason is None
    assert without.area_cm2 < with_deep.area_cm2 - 1.0


def test_skeletal_muscle_label_is_used_as_the_mask() -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    arr = labels.array.copy()
    arr[muscle & (arr == 0)] = 200
    lm = LabelMap(arr, labels.geometry, labels.structures, {200: "skeletal_muscle"})
    m = muscle_l3.measure_l3(ct, lm, None)
    # the psoas voxels carry the psoas label, so they are outside the 'skeletal_muscle'
    # label: the area is the muscle minus the psoas disc
    assert m.area_cm2 == pytest.approx(TRUE_AREA_CM2 - TRUE_PSOAS_CM2, rel=0.02)


def test_l3_absent_or_cut_says_why() -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL, half_mm=(110.0, 90.0, 12.0))
    m = muscle_l3.measure_l3(ct, labels, muscle)
    assert m.area_cm2 is None and "cut by the field of view" in m.reason
    no_l3 = LabelMap(np.zeros_like(labels.array), labels.geometry, {})
    m = muscle_l3.measure_l3(ct, no_l3, muscle)
    assert "no vertebrae are labelled" in m.reason


def test_measure_case_wires_the_mask(tmp_path: Path) -> None:
    ct, labels, muscle = make_case((1.0, 1.0, 2.5), AXIAL)
    res = measure_case(ct, labels, MeasureOptions(height_m=1.6, sex="F", muscle_mask=muscle,
                                                  weight_kg=55.0))
    assert res.value("L3_level", "skeletal_muscle_area") == pytest.approx(TRUE_AREA_CM2,
                                                                          rel=0.02)
    assert res.get("L3_level", "low_smi_martin2013").value in ("yes", "no")
    with pytest.raises(InputError):
        MeasureOptions(weight_kg=0.0)
    with pytest.raises(InputError):
        MeasureOptions(muscle_mask=tmp_path / "missing.nii.gz")


# --- real data -------------------------------------------------------------------------

def _real(real_data_dir: Path):
    from CTMuscleBoneLib.io_ct import read_ct
    from CTMuscleBoneLib.io_labels import read_labels

    ct = read_ct(real_data_dir / "lumbar_ct.nii.gz")
    labels = read_labels(real_data_dir / "lumbar_seg_totalseg.nii.gz", ct.geometry)
    mask = muscle_l3.read_muscle_mask(real_data_dir / "lumbar_tissue_skeletal_muscle.nii.gz",
                                      ct.geometry)
    return ct, labels, mask


def test_real_tissue_mask_gives_a_plausible_adult_area(real_data_dir: Path) -> None:
    """The real crop ends within L2 (no L3): L3 is refused with that reason; the L1
    mid-level slice (the nearest complete level) gives an adult-sized area."""
    ct, labels, mask = _real(real_data_dir)
    m = muscle_l3.measure_l3(ct, labels, mask)
    assert m.area_cm2 is None and "the CT does not reach L3" in m.reason
    m1 = muscle_l3.measure_l3(ct, labels, mask, level="vertebrae_L1")
    assert 80.0 <= m1.area_cm2 <= 250.0
    assert -10.0 <= m1.attenuation_hu <= 60.0
    assert not m1.partial


def test_real_psoas_and_erector_mask_is_flagged_as_missing_the_abdominal_wall(
        real_data_dir: Path) -> None:
    """The union of the real map's psoas and erector spinae labels, given as a muscle
    mask, stops behind the front of L1's body: flagged partial (the whole-muscle mask of
    the same CT is not, above), its area 41 % of the whole mask's (44.5 against 109.2 cm2)."""
    ct, labels, mask = _real(real_data_dir)
    union = np.zeros(ct.hu.shape, dtype=bool)
    for key in ("psoas_major_left", "psoas_major_right", "autochthon_left",
                "autochthon_right"):
        union |= labels.mask(key)
    whole = muscle_l3.measure_l3(ct, labels, mask, level="vertebrae_L1")
    part = muscle_l3.measure_l3(ct, labels, union, level="vertebrae_L1")
    assert part.partial and "abdominal wall seems missing" in part.flags[0]
    assert part.area_cm2 < 0.5 * whole.area_cm2


def test_real_cli_with_muscle_mask(real_data_dir: Path, tmp_path: Path) -> None:
    from CTMuscleBoneLib.cli.main import main

    out = tmp_path / "out"
    assert main(["measure", "--ct", str(real_data_dir / "lumbar_ct.nii.gz"),
                 "--labels", str(real_data_dir / "lumbar_seg_totalseg.nii.gz"),
                 "--muscle-mask", str(real_data_dir / "lumbar_tissue_skeletal_muscle.nii.gz"),
                 "--height", "1.7", "--sex", "M", "--weight", "70",
                 "--out", str(out), "--quiet"]) == 0
    text = (out / "results.csv").read_text(encoding="utf-8")
    assert "L3_level" in text and "the CT does not reach L3" in text
