"""Label maps that would give silently wrong numbers are refused or named (io_labels.py):
a map mostly outside the CT, a names table giving one value twice, misspelt names, a
NIfTI header that rescales the label values."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry
from CTMuscleBoneLib.io_ct import write_image
from CTMuscleBoneLib.io_labels import (
    MAX_LABELLED_FRACTION_OUTSIDE,
    nifti_scaling,
    read_labels,
    read_names,
)

CT_GEOM = Geometry((20, 20, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def _block_map(shape=(20, 20, 10)) -> np.ndarray:
    """Two femurs (canonical-free TotalSegmentator v2 ids 75/76) filling most of the map."""
    a = np.zeros(shape, dtype=np.uint8)
    a[1:9, 1:19, :] = 75
    a[11:19, 1:19, :] = 76
    return a


# --- fraction outside the CT ----------------------------------------------------------------
def test_map_mostly_outside_the_ct_is_refused(tmp_path):
    # shifted 15 of 20 voxels along x: ~75 % of the labelled volume outside the CT
    shifted = Geometry(CT_GEOM.shape, CT_GEOM.spacing_mm, (15.0, 0.0, 0.0))
    path = tmp_path / "other_totalseg.nii.gz"
    write_image(_block_map(), shifted, path)
    with pytest.raises(InputError, match=r"lies mostly outside the CT: about \d+ %.*another"):
        read_labels(path, CT_GEOM)


def test_map_slightly_larger_than_the_ct_passes_with_a_note(tmp_path):
    # drawn on a larger series: two more slices above and below, labelled throughout
    larger = Geometry((20, 20, 14), CT_GEOM.spacing_mm, (0.0, 0.0, -2.0))
    path = tmp_path / "larger_totalseg.nii.gz"
    write_image(_block_map((20, 20, 14)), larger, path)
    lm = read_labels(path, CT_GEOM)
    note = next(n for n in lm.notes if "outside the CT" in n)
    assert "28.6 %" in note  # 4 of 14 slices
    assert lm.mask("femur_left").sum() == 8 * 18 * 10
    assert MAX_LABELLED_FRACTION_OUTSIDE == 0.5


# --- names tables ---------------------------------------------------------------------------
def test_csv_giving_a_value_twice_is_refused(tmp_path):
    names = tmp_path / "n.csv"
    names.write_text("value,name\n40,rectus_femoris_left\n40,vastus_lateralis_right\n")
    with pytest.raises(InputError, match="40 twice.*rectus_femoris_left.*vastus_lateralis_r"):
        read_names(names)


def test_json_giving_a_key_twice_is_refused(tmp_path):
    names = tmp_path / "n.json"
    names.write_text('{"40": "rectus_femoris_left", "40": "vastus_lateralis_right"}')
    with pytest.raises(InputError, match="'40' twice.*rectus_femoris_left.*vastus_lateral"):
        read_names(names)
    names.write_text('{"rectus_femoris_left": 40, "vastus_lateralis_right": 40}')
    with pytest.raises(InputError, match="40 twice"):
        read_names(names)


def test_repeated_identical_rows_are_accepted(tmp_path):
    names = tmp_path / "n.csv"
    names.write_text("40,rectus_femoris_left\n40,rectus_femoris_left\n")
    assert read_names(names) == {40: "rectus_femoris_left"}


def test_misspelt_name_is_named_with_the_closest_known_name(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 40
    a[10:14, 2:6, 1:4] = 41
    path = tmp_path / "m.nii.gz"
    write_image(a, CT_GEOM, path)
    names = tmp_path / "m.labels.json"
    names.write_text(json.dumps({"40": "rectus_femoris_lft", "41": "vastus_lateralis_left"}))
    lm = read_labels(path, CT_GEOM)
    assert lm.unknown == {40: "rectus_femoris_lft"}
    note = next(n for n in lm.notes if "misspelt" in n)
    assert "40: 'rectus_femoris_lft' (did you mean rectus_femoris_left" in note
    assert "every total that would include them" in note


def test_other_tools_structure_names_are_not_taken_for_misspellings(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 32  # TotalSegmentator vertebrae_T12: not in the anatomy table
    a[10:14, 2:6, 1:4] = 75
    path = tmp_path / "t_totalseg.nii.gz"
    write_image(a, CT_GEOM, path)
    lm = read_labels(path, CT_GEOM, label_format="totalseg-v2")
    assert 32 in lm.unknown
    assert not any("misspelt" in n for n in lm.notes)


# --- NIfTI scaling --------------------------------------------------------------------------
def _set_nifti_scaling(path: Path, slope: float, inter: float) -> None:
    """Set scl_slope/scl_inter (NIfTI-1 header bytes 112-119) of a .nii.gz file."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    assert struct.unpack("<i", raw[:4])[0] == 348
    raw[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(gzip.compress(bytes(raw)))


def test_scaled_label_map_is_refused(tmp_path):
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 75  # femur_left; x2 would read as 150
    a[10:14, 2:6, 1:4] = 38  # x2 = 76: femur_right
    path = tmp_path / "s_totalseg.nii.gz"
    write_image(a, CT_GEOM, path)
    assert read_labels(path, CT_GEOM).mask("femur_left").sum() == 48
    _set_nifti_scaling(path, 2.0, 0.0)
    assert nifti_scaling(path) == (2.0, 0.0)
    with pytest.raises(InputError, match="scl_slope 2.*other structures"):
        read_labels(path, CT_GEOM)
    _set_nifti_scaling(path, 1.0, 5.0)
    with pytest.raises(InputError, match="scl_inter 5"):
        read_labels(path, CT_GEOM)
    _set_nifti_scaling(path, 0.0, 0.0)  # 0: no scaling (NIfTI standard)
    assert read_labels(path, CT_GEOM).mask("femur_left").sum() == 48


def test_scaled_label_map_written_by_nibabel_is_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 38
    img = nib.Nifti1Image(a, np.eye(4))
    img.header.set_slope_inter(2.0, 0.0)
    path = tmp_path / "nib_totalseg.nii.gz"
    nib.save(img, path)
    assert nifti_scaling(path) == (2.0, 0.0)
    with pytest.raises(InputError, match="scl_slope 2"):
        read_labels(path, CT_GEOM)


def test_evaluate_refuses_a_scaled_label_map(tmp_path, capsys):
    """evaluate reads label maps as measure does: a rescaled NIfTI is refused."""
    from CTMuscleBoneLib.cli.main import main

    a = np.zeros(CT_GEOM.shape, dtype=np.uint8)
    a[2:6, 2:6, 1:4] = 1
    ref = tmp_path / "ref.nii.gz"
    write_image(a, CT_GEOM, ref)
    pred = tmp_path / "pred.nii.gz"
    write_image(a, CT_GEOM, pred)
    _set_nifti_scaling(pred, 2.0, 0.0)
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--no-surface"]) == 2
    err = capsys.readouterr().err
    assert "scl_slope 2" in err and "Traceback" not in err


def test_a_misspelt_muscle_flags_its_totals_and_withholds_the_sarcopenia_call(tmp_path):
    """A label named 'rectus_femoris_lft' is not measured: the totals it would count in
    (thigh left/total, lower limb left/total) and ALM/SMI say so, and a validated ALM
    model gives no sarcopenia yes/no from the low total; other totals are unflagged."""
    from CTMuscleBoneLib.alm import ALMModel
    from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
    from CTMuscleBoneLib.anatomy import structure
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, seed=3))
    ct_path = write_image(ph.ct.hu, ph.ct.geometry, tmp_path / "ct.nii.gz")
    lab_path = write_image(ph.labels.array, ph.ct.geometry, tmp_path / "labels.nii.gz")
    names = {str(v): k for v, k in ph.labels.structures.items()}
    rf = str(structure("rectus_femoris_left").label_value)
    assert names[rf] == "rectus_femoris_left"
    # (intercept 10 kg: the small phantom's thigh muscles then give an adult ALM)
    model = ALMModel("site", "lower_limb_total/mass", intercept_kg=10.0, slope=1.0,
                     validated=True)
    options = MeasureOptions(height_m=1.6, sex="F", alm_model=model, calibration="none")
    from CTMuscleBoneLib.io_ct import read_ct

    ct = read_ct(ct_path)
    results = {}
    for label, name in (("right", "rectus_femoris_left"), ("typo", "rectus_femoris_lft")):
        (tmp_path / "labels.labels.json").write_text(json.dumps({**names, rf: name}))
        results[label] = measure_case(ct, read_labels(lab_path, ct.geometry), options)
    typo, right = results["typo"], results["right"]
    for group in ("thigh_left", "thigh_total", "lower_limb_left", "lower_limb_total"):
        row = typo.get(group, "mass")
        assert row.value < right.value(group, "mass")
        assert any("rectus_femoris_lft" in f and f.startswith("warning:") for f in row.flags)
    for group in ("thigh_right", "lower_limb_right"):
        assert not any("rectus_femoris_lft" in f for f in typo.get(group, "mass").flags)
    assert any("rectus_femoris_lft" in f for f in typo.get("patient", "alm").flags)
    assert right.get("patient", "sarcopenia_low_muscle_mass").value in ("yes", "no")
    assert typo.get("patient", "sarcopenia_low_muscle_mass").value == "indeterminate"
