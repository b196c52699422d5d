"""The public library API (CTMuscleBoneLib.pipeline): one call per step.

Checked against analytic truth where there is one (volumes of edited masks), and
against a fresh full measurement where the claim is "the same numbers as measuring
again" (re-measure after an edit).
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.alm import load_alm_model
from CTMuscleBoneLib.anatomy import BY_KEY
from CTMuscleBoneLib.calibration.model import Calibration
from CTMuscleBoneLib.errors import CancelledError, InputError
from CTMuscleBoneLib.image import CTImage, Geometry, LabelMap
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from scipy import ndimage


@pytest.fixture(scope="module")
def hip_case():
    """A hip phantom with a calibration phantom, measured once."""
    ph = make_phantom(PhantomSpec(region="hip", spacing_mm=2.0, seed=3, calibration=True,
                                  calibration_definition="B-MAS200"))
    options = pipeline.MeasureOptions(sex="F", height_m=1.60, age_years=70,
                                      phantom="B-MAS200")
    results = pipeline.measure(ph.ct, ph.labels, options)
    return ph, options, results


def _edited(labels: LabelMap, key: str, iterations: int = 1) -> tuple[LabelMap, int]:
    """The label map with structure ``key`` eroded; returns the removed voxel count."""
    arr = labels.array.copy()
    m = arr == labels.value_of(key)
    eroded = ndimage.binary_erosion(m, iterations=iterations)
    arr[m & ~eroded] = 0
    return replace(labels, array=arr), int(np.count_nonzero(m & ~eroded))


# --- options ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, word", [
    ({"age_years": -3}, "age"),
    ({"age_years": 250}, "age"),
    ({"height_m": 162.0}, "height"),
    ({"height_m": 0.0}, "height"),
    ({"sex": "X"}, "Sex"),
    ({"density_model": "heavy"}, "density model"),
    ({"criteria": "who"}, "criteria"),
    ({"calibration": "magic"}, "calibration"),
])
def test_measure_options_refuse_bad_values(kwargs, word):
    with pytest.raises(InputError, match=word):
        pipeline.MeasureOptions(**kwargs)


def test_measure_options_accept_objects():
    model = load_alm_model(None)
    cal = Calibration.none("test")
    opts = pipeline.MeasureOptions(sex="f", alm_model=model, calibration=cal)
    assert opts.sex == "F" and opts.alm_model is model and opts.calibration is cal


def test_segment_options_refuse_bad_values():
    with pytest.raises(InputError):
        pipeline.SegmentOptions(samples=0)
    with pytest.raises(InputError):
        pipeline.SegmentOptions(seed=-1)
    with pytest.raises(InputError):
        pipeline.SegmentOptions(device="tpu")  # type: ignore[arg-type]


# --- the CT check lives in the library ---------------------------------------------------
def _mr_like() -> CTImage:
    rng = np.random.default_rng(0)
    hu = rng.uniform(0, 800, size=(30, 30, 20)).astype(np.float32)  # no negative values
    return CTImage(hu, Geometry(hu.shape, (1.0, 1.0, 2.0)))


def test_measure_refuses_an_mr_image():
    mr = _mr_like()
    labels = LabelMap(np.ones(mr.hu.shape, dtype=np.uint8), mr.geometry,
                      {1: "gluteus_maximus_left"})
    with pytest.raises(InputError, match="not Hounsfield"):
        pipeline.measure(mr, labels)


def test_segment_refuses_an_mr_image():
    with pytest.raises(InputError, match="not Hounsfield"):
        pipeline.segment(_mr_like(), pipeline.SegmentOptions(samples=1))


def test_check_ct_runs_once_and_keeps_voxels(hip_case):
    ph, _, _ = hip_case
    checked = pipeline.check_ct(ph.ct)
    assert checked.metadata.checked and checked.hu is ph.ct.hu
    assert pipeline.check_ct(checked) is checked


# --- measure: provenance of patient facts -----------------------------------------------
def test_patient_facts_and_sources_in_provenance(hip_case):
    ph, _, results = hip_case
    p = results.provenance.patient
    assert p["sex"] == "F" and p["sex_source"] == "option"
    assert p["height_m"] == pytest.approx(1.60) and p["height_source"] == "option"
    assert p["age_years"] == 70 and p["age_source"] == "option"
    d = results.to_dict()
    assert d["provenance"]["patient"]["height_source"] == "option"
    assert isinstance(results.artifacts["calibration"], Calibration)
    assert results.artifacts["calibration"].calibrated


def test_patient_facts_from_header():
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=3.0, seed=5, sex="M",
                                  height_m=1.75, age_years=55.0))
    res = pipeline.measure(ph.ct, ph.labels, pipeline.MeasureOptions(bones=False))
    p = res.provenance.patient
    if ph.ct.metadata.patient_sex is None:  # NIfTI-like phantom without header facts
        assert p["sex"] is None and p["sex_source"] is None
    else:
        assert p["sex"] == "M" and p["sex_source"] == "DICOM header"


# --- remeasure after an edit ---------------------------------------------------------------
def test_remeasure_changes_exactly_the_edited_structure(hip_case):
    ph, options, before = hip_case
    key = "gluteus_medius_left"
    labels, removed = _edited(ph.labels, key)
    assert removed > 100
    upd = pipeline.remeasure(ph.ct, labels, before, [key])
    after = upd.results
    vol_before = before.value(key, "volume")
    vol_after = after.value(key, "volume")
    # analytic: the volume drops by exactly the removed voxels
    assert vol_before - vol_after == pytest.approx(removed * ph.ct.geometry.voxel_volume_cm3,
                                                   rel=1e-9)
    changed_structures = {s for s, _ in upd.changed_rows}
    assert key in changed_structures
    # every changed row is the edited muscle or a group/patient total that depends on it
    anatomy_changed = {s for s in changed_structures if s in BY_KEY}
    assert anatomy_changed == {key}, sorted(changed_structures)
    assert {"gluteal_left", "lower_limb_left"} <= changed_structures
    before_rows = {(r.structure, r.quantity): r for r in before.rows}
    for r in after.rows:
        k = (r.structure, r.quantity)
        if k in upd.changed_rows or r.structure == key:
            assert pipeline.EDITED_FLAG in r.flags
        else:
            assert r.value == before_rows[k].value and r.flags == before_rows[k].flags
    # the same numbers as a fresh measurement with the same calibration
    fresh = pipeline.measure(ph.ct, labels,
                             replace(options, calibration=before.artifacts["calibration"]))
    fresh_rows = {(r.structure, r.quantity): r.value for r in fresh.rows}
    assert {(r.structure, r.quantity): r.value for r in after.rows} == fresh_rows


def test_remeasure_reuses_calibration_and_unedited_femur(hip_case):
    ph, _, before = hip_case
    labels, _ = _edited(ph.labels, "femur_left")
    upd = pipeline.remeasure(ph.ct, labels, before, ["femur_left"])
    assert upd.results.artifacts["calibration"] is before.artifacts["calibration"]
    right_before = [r for r in before.rows if r.structure == "femur_right"]
    right_after = [r for r in upd.results.rows if r.structure == "femur_right"]
    assert [(r.quantity, r.value) for r in right_after] == \
        [(r.quantity, r.value) for r in right_before]
    assert upd.results.artifacts["femur"].projections["right"] is \
        before.artifacts["femur"].projections["right"]
    assert any(s == "femur_left" for s, _ in upd.changed_rows)
    assert not any(s == "femur_right" for s, _ in upd.changed_rows)


def test_remeasure_refuses_new_settings_and_names_them(hip_case):
    """Re-measuring keeps the unedited femurs' rows (their T-scores and categories were
    computed for the earlier age) and marks changed rows as hand edits: new settings are
    refused, naming the fields, so that no stale row is kept and no setting's effect is
    called an edit. The same settings, the calibration as fitted, pass."""
    ph, options, before = hip_case
    with pytest.raises(InputError) as exc:
        pipeline.remeasure(ph.ct, ph.labels, before, [], replace(options, age_years=40.0,
                                                                  height_m=1.8))
    msg = str(exc.value)
    assert "(height_m, age_years)" in msg and "measure()" in msg and "\n" not in msg
    assert pipeline.changed_settings(before, options) == []
    again = pipeline.remeasure(ph.ct, ph.labels, before, [], options)
    assert not again.changed_rows
    # after a re-measurement the settings still compare by method name, not the fit
    assert pipeline.changed_settings(again.results, options) == []
    assert pipeline.changed_settings(again.results,
                                     replace(options, calibration="none")) == ["calibration"]


def test_remeasure_refuses_unknown_keys(hip_case):
    ph, _, before = hip_case
    with pytest.raises(KeyError):
        pipeline.remeasure(ph.ct, ph.labels, before, ["not_a_structure"])


# --- overlapping segments ----------------------------------------------------------------
def test_overlapping_structures_are_measured_on_their_own_masks(hip_case):
    ph, _, _ = hip_case
    a, b = "gluteus_maximus_left", "gluteus_medius_left"
    ma, mb = ph.labels.mask(a), ph.labels.mask(b)
    # a hand edit extends a over half of b: those voxels belong to both segments
    idx = np.argwhere(mb)
    half = idx[idx[:, 0] <= np.median(idx[:, 0])]
    shared = np.zeros_like(mb)
    shared[tuple(half.T)] = True
    a_full = ma | shared
    assert shared.sum() > 50
    # the single array keeps b on the shared voxels (b painted last): a lost them there
    labels = replace(ph.labels, overlays={a: a_full})
    assert np.count_nonzero(labels.array == labels.value_of(a)) == ma.sum()
    res = pipeline.measure(ph.ct, labels, pipeline.MeasureOptions(bones=False))
    v = ph.ct.geometry.voxel_volume_cm3
    assert res.value(a, "volume") == pytest.approx(a_full.sum() * v, rel=1e-9)
    assert res.value(b, "volume") == pytest.approx(mb.sum() * v, rel=1e-9)
    assert a_full.sum() > ma.sum()


# --- analyze: cancellation ----------------------------------------------------------------
def test_analyze_cancelled_before_start(hip_case):
    pytest.importorskip("torch")
    ph, options, _ = hip_case
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        pipeline.analyze(ph.ct, pipeline.SegmentOptions(samples=1), options, cancel=cancel)


def test_model_is_cached():
    pytest.importorskip("torch")
    from CTMuscleBoneLib.segmentation import registry

    registry.clear_model_cache()
    card1, net1 = registry.load_model()
    card2, net2 = registry.load_model()
    assert net1 is net2 and card1 is card2
    _, net3 = registry.load_model(cache=False)
    assert net3 is not net1


# --- outputs ------------------------------------------------------------------------------
def test_write_outputs(tmp_path, hip_case):
    _, _, results = hip_case
    paths = pipeline.write_outputs(results, tmp_path / "out", summary_extra="EXTRA")
    assert {p.name for p in paths.values()} == {"results.csv", "results.json", "summary.txt"}
    assert paths["summary"].read_text().rstrip().endswith("EXTRA")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        pipeline.write_outputs(results, tmp_path / "file")


# --- progress on the command line --------------------------------------------------------
def test_progress_in_a_log_is_sparse():
    import io

    from CTMuscleBoneLib.progress import stderr_progress

    buf = io.StringIO()
    report = stderr_progress(stream=buf)
    for i in range(400):
        report(i / 400, f"window {i}")
    report(1.0, "done")
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 12
    assert lines[-1].startswith("[100%] done")


def test_progress_on_a_terminal_is_one_line():
    import io

    from CTMuscleBoneLib.progress import stderr_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    report = stderr_progress(stream=buf)
    for i in range(50):
        report(i / 50, "x" * (50 - i))
    report(1.0, "done")
    text = buf.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 51


# --- compact uncertainty maps ------------------------------------------------------------
def test_compact_uncertainty_error_bound_and_region():
    from CTMuscleBoneLib.segmentation.pipeline import compact_uncertainty

    rng = np.random.default_rng(4)
    a = (rng.uniform(0.0, 1.0, size=(20, 20, 20)) ** 4 * 2.0 + 1e-7).astype(np.float32)
    keep = np.zeros(a.shape, dtype=bool)
    keep[5:15, 5:15, 5:15] = True
    c = compact_uncertainty(a, keep, mantissa_bits=5, floor_fraction=0.0)
    assert c.dtype == np.float32
    assert np.all(c[~keep] == 0)
    rel = np.abs(c[keep] - a[keep]) / a[keep]
    assert rel.max() <= 2.0 ** -6 + 1e-7
    assert rel.max() > 2.0 ** -8  # the rounding did happen
    # rounded values carry at most 5 mantissa bits
    assert np.all((c[keep].view(np.uint32) & np.uint32((1 << 18) - 1)) == 0)
    assert np.array_equal(compact_uncertainty(a, keep, mantissa_bits=23,
                                              floor_fraction=0.0)[keep], a[keep])
    # the floor: values below 0.1 % of the maximum become 0, the others are kept
    top = a[keep].max()
    f = compact_uncertainty(a, keep, mantissa_bits=23, floor_fraction=2.0 ** -10)
    small = keep & (a < top * 2.0 ** -10)
    assert small.any() and np.all(f[small] == 0)
    assert np.array_equal(f[keep & ~small], a[keep & ~small])
