"""Tests of CT input checks (refusals and warnings)."""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage, CTMetadata, Geometry
from CTMuscleBoneLib.validation import check_ct


def body_ct(shape=(30, 30, 12), spacing=(1.0, 1.0, 1.0), dtype=np.int16, **meta) -> CTImage:
    """Air, fat rim, muscle and a small bone: a plausible CT in HU."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = ((i - shape[0] / 2) ** 2 + (j - shape[1] / 2) ** 2) / (0.4 * shape[0]) ** 2
    sl = np.full(shape[:2], -1000.0)
    sl[r < 1] = -100
    sl[r < 0.6] = 45
    sl[r < 0.08] = 800
    hu = np.repeat(sl[:, :, None], shape[2], axis=2).astype(dtype)
    meta.setdefault("modality", "CT")
    meta.setdefault("kvp", 120.0)
    return CTImage(hu, Geometry(shape, spacing), CTMetadata(**meta))


def test_plausible_ct_passes_without_warnings():
    assert check_ct(body_ct()) == []
    assert check_ct(body_ct(modality=None, kvp=None)) == []


def test_other_modality_is_refused():
    with pytest.raises(InputError, match="'MR', not CT"):
        check_ct(body_ct(modality="MR"))


def test_mr_like_intensities_are_refused():
    rng = np.random.default_rng(1)
    ct = body_ct(modality=None)
    mr = np.clip(ct.hu.astype(float) + 1000, 0, None) * 1.7 + rng.normal(0, 5, ct.hu.shape)
    mr = np.abs(mr).astype(np.int16)  # 0 .. ~3000, no negative value
    with pytest.raises(InputError, match="not Hounsfield"):
        check_ct(CTImage(mr, ct.geometry, CTMetadata()))
    # An MR normalised to zero mean: negatives, but no air and no fat-like tail.
    z = (mr - mr.mean()) / mr.std()
    with pytest.raises(InputError, match="no air"):
        check_ct(CTImage(z.astype(np.float32), ct.geometry, CTMetadata()))


def test_tight_crop_with_fat_but_no_air_passes():
    ct = body_ct()
    crop = ct.hu[7:23, 7:23, :].copy()  # fat rim corners, no air
    assert crop.min() > -500 and np.mean(crop == -100) > 0.02
    assert check_ct(CTImage(crop, Geometry(crop.shape, (1.0, 1.0, 1.0)), ct.metadata)) == []
    # a crop with neither air nor fat cannot be told from a shifted MR: refused, with advice
    inner = ct.hu[10:20, 10:20, :].copy()
    inner[0, :3, :] = -30  # some fluid-like voxels, no fat
    with pytest.raises(InputError, match="crop less"):
        check_ct(CTImage(inner, Geometry(inner.shape, (1.0, 1.0, 1.0)), ct.metadata))


def test_single_slice_and_few_slices():
    ct = body_ct(shape=(30, 30, 1))
    with pytest.raises(InputError, match="single slice"):
        check_ct(ct)
    warnings = check_ct(body_ct(shape=(30, 30, 4)))
    assert len(warnings) == 1 and "Only 4 slices" in warnings[0]


@pytest.mark.parametrize("spacing", [(0.01, 1.0, 1.0), (1.0, 1.0, 25.0)])
def test_absurd_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="plausible range"):
        check_ct(body_ct(spacing=spacing))


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, -1.0, 1.0), (1.0, np.nan, 1.0)])
def test_zero_negative_nan_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        Geometry((4, 4, 4), spacing)


def test_non_finite_values_are_refused():
    ct = body_ct(dtype=np.float32)
    ct.hu[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        check_ct(ct)


def test_warnings_thick_slices_contrast_kvp_metal():
    ct = body_ct(spacing=(0.8, 0.8, 5.0), contrast_agent="Iomeprol", kvp=100.0)
    ct.hu[14:17, 14:17, 2:10] = 3500
    warnings = check_ct(ct)
    text = " | ".join(warnings)
    assert len(warnings) == 4
    assert "5 mm thick" in text and "Iomeprol" in text and "100 kVp" in text
    assert "probable metal" in text


def test_stated_no_contrast_and_thin_slices_do_not_warn():
    assert check_ct(body_ct(contrast_agent="NONE", slice_thickness_mm=1.0)) == []
    # header slice thickness larger than spacing (overlapping reconstruction) counts
    warnings = check_ct(body_ct(slice_thickness_mm=4.0))
    assert any("4 mm thick" in w for w in warnings)


@pytest.mark.parametrize("modality", [None, "", "UNKNOWN", "OT", "OTHER", "MET_MOD_UNKNOWN"])
def test_undecided_modality_is_judged_by_hu(modality):
    assert check_ct(body_ct(modality=modality)) == []
    mr = body_ct(modality=modality)
    mr.hu[...] = np.abs(mr.hu) + 10  # no negative values: not HU
    with pytest.raises(InputError, match="not Hounsfield"):
        check_ct(mr)


def test_slice_thickness_rule_one_place():
    from CTMuscleBoneLib.validation import (
        effective_slice_thickness_mm,
        slice_spacing_mm,
        slice_thickness_note,
    )

    thick = body_ct(spacing=(0.8, 0.8, 2.0), slice_thickness_mm=5.0)  # overlapping
    assert slice_spacing_mm(thick.geometry) == 2.0
    assert effective_slice_thickness_mm(thick) == 5.0
    assert "overlapping" in slice_thickness_note(thick)
    assert any("differs from slice spacing 2 mm" in w for w in check_ct(thick))
    gapped = body_ct(spacing=(0.8, 0.8, 5.0), slice_thickness_mm=1.0)
    assert effective_slice_thickness_mm(gapped) == 5.0
    assert "gapped" in slice_thickness_note(gapped)
    same = body_ct(spacing=(0.8, 0.8, 2.5), slice_thickness_mm=2.6)  # within 10 %
    assert slice_thickness_note(same) is None
    assert effective_slice_thickness_mm(same) == 2.6
    assert slice_thickness_note(body_ct()) is None  # no header value (NIfTI)
    assert effective_slice_thickness_mm(body_ct(spacing=(1.0, 1.0, 3.5))) == 3.5


def test_real_ct_passes(real_data_dir):
    from CTMuscleBoneLib.io_ct import read_ct

    assert check_ct(read_ct(real_data_dir / "lumbar_ct.nii.gz")) == []
