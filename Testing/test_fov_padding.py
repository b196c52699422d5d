"""Padding outside the reconstructed field of view (e.g. -3024 HU outside the scanner's
circle, or the corners of an oblique grid) cuts a structure as the grid's edge does.

Synthetic arrays and phantoms (:func:`CTMuscleBoneLib.phantoms.make_phantom`).
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib.fov import (
    PADDING_HU,
    border_faces,
    border_label_values,
    border_voxel_indices,
    indices_touch_border,
    outside_fov,
    touches_border,
)
from CTMuscleBoneLib.image import CTImage, Geometry
from CTMuscleBoneLib.muscle import group_totals, measure_muscles
from CTMuscleBoneLib.phantoms import make_phantom
from CTMuscleBoneLib.phantoms.builder import PADDING_VALUE_HU

LPS = Geometry(shape=(20, 20, 20), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0.0, 0.0, 0.0),
               direction=np.eye(3))


def test_padding_threshold_separates_air_from_padding_values() -> None:
    hu = np.full((4, 4, 4), -1000, dtype=np.int16)
    hu[0, 0, 0] = -1100  # air with noise: not padding
    assert outside_fov(hu) is None
    for value in (-3024, -2048, -2000):
        hu = np.full((4, 4, 4), 40, dtype=np.int16)
        hu[0] = value
        out = outside_fov(hu)
        assert out is not None and out[0].all() and not out[1:].any()
    assert -1100 > PADDING_HU > -2000


def test_padding_contact_is_named_like_the_grid_face() -> None:
    mask = np.zeros(LPS.shape, bool)
    mask[5:10, 5:10, 5:10] = True
    outside = np.zeros(LPS.shape, bool)
    assert border_faces(mask, LPS, outside=outside) == ()
    outside[:, :, 10:] = True  # padding next to the cube at +axis 2 (+z: superior)
    on_grid = np.zeros(LPS.shape, bool)
    on_grid[5:10, 5:10, 15:20] = True  # the same cube on the grid's +z face
    assert border_faces(mask, LPS, outside=outside) == border_faces(on_grid, LPS)
    assert border_faces(mask, LPS, outside=outside) == ("superior",)
    box = (slice(5, 10),) * 3
    assert border_faces(mask[box], LPS, box, outside) == ("superior",)
    assert border_faces(mask, LPS) == ()  # without the padding: not cut
    assert touches_border(mask, outside) and not touches_border(mask)
    labels = mask.astype(np.uint8) * 7
    assert 7 in border_label_values(labels, outside) and 7 not in border_label_values(labels)
    idx = np.argwhere(mask)
    assert indices_touch_border(idx, LPS.shape, outside)
    assert not indices_touch_border(idx, LPS.shape)
    assert len(border_voxel_indices(mask, outside)) == 25  # the cube's z = 9 face
    assert len(border_voxel_indices(mask)) == 0


def _circle_thigh() -> tuple[CTImage, object, object]:
    """The thigh phantom with everything beyond a 110 mm circle padded (-3024 HU) and its
    labels cleared there (a clinical reconstruction circle cutting the left vastus
    lateralis)."""
    ph = make_phantom(region="thigh", spacing_mm=4.0, sides=("left",), noise_sd_hu=0.0)
    g = ph.ct.geometry
    idx = np.indices(g.shape).reshape(3, -1).T
    xyz = g.index_to_physical(idx).reshape(*g.shape, 3)
    centre = np.array([120.0, 0.0])  # patient left of the midline, 11 mm medial of the shaft
    r = np.hypot(xyz[..., 0] - centre[0], xyz[..., 1] - centre[1])
    return ph, r > 45.0, g


def test_circular_fov_cut_muscle_is_partial_and_totals_flagged() -> None:
    ph, pad, _ = _circle_thigh()
    hu = np.array(ph.ct.hu, copy=True)
    hu[pad] = -3024
    lab = np.array(ph.labels.array, copy=True)
    lab[pad] = 0
    ct = CTImage(hu=hu, geometry=ph.ct.geometry, metadata=ph.ct.metadata)
    labels = type(ph.labels)(array=lab, geometry=ph.labels.geometry,
                             structures=ph.labels.structures, source="test")
    ms = {m.key: m for m in measure_muscles(ct, labels)}
    truth = ph.truth.structures["vastus_lateralis_left"].voxel_volume_cm3
    vl = ms["vastus_lateralis_left"]
    assert vl.volume_cm3 < 0.9 * truth  # the circle cuts it
    assert vl.partial and vl.flags and vl.flags[0].startswith("partial: cut by the field")
    totals = group_totals(list(ms.values()))
    assert any(t["partial"] for t in totals.values())
    for m in ms.values():  # every muscle that lost voxels to the circle is flagged
        if m.volume_cm3 < 0.99 * ph.truth.structures[m.key].voxel_volume_cm3:
            assert m.partial, m.key


def test_labelled_padding_does_not_corrupt_hu_statistics() -> None:
    ph, pad, _ = _circle_thigh()
    hu = np.array(ph.ct.hu, copy=True)
    hu[pad] = -3024  # labels kept there: a label map that covers the padding
    ct = CTImage(hu=hu, geometry=ph.ct.geometry, metadata=ph.ct.metadata)
    ms = {m.key: m for m in measure_muscles(ct, ph.labels)}
    vl = ms["vastus_lateralis_left"]
    assert vl.partial
    assert 20.0 < vl.mean_hu < 80.0  # the muscle's HU, not pulled toward -3024
    assert vl.mass_g > 0


@pytest.fixture(scope="module")
def hip_pair():
    kw = dict(region="hip", spacing_mm=3.0, noise_sd_hu=0.0)
    return make_phantom(orientation="LPS", **kw), make_phantom(orientation="oblique", **kw)


def test_oblique_phantom_pads_outside_its_field_of_view(hip_pair) -> None:
    _, obl = hip_pair
    hu = np.asarray(obl.ct.hu)
    pad = hu == PADDING_VALUE_HU
    assert pad.any() and not np.asarray(obl.labels.array)[pad].any()
    assert (hu[~pad] > PADDING_HU).all()  # nothing else reads as padding


def test_oblique_phantom_cuts_and_volumes_match_lps(hip_pair) -> None:
    lps, obl = hip_pair
    a = {m.key: m for m in measure_muscles(lps.ct, lps.labels)}
    b = {m.key: m for m in measure_muscles(obl.ct, obl.labels)}
    assert a.keys() == b.keys()
    assert {k for k, m in a.items() if m.partial} == {k for k, m in b.items() if m.partial}
    assert b["autochthon_left"].cut_faces == a["autochthon_left"].cut_faces == ("superior",)
    for k, m in a.items():
        if not m.partial:
            assert b[k].volume_cm3 == pytest.approx(m.volume_cm3, rel=0.03), k


def test_oblique_phantom_passes_the_plausibility_check(hip_pair) -> None:
    from CTMuscleBoneLib.plausibility import check_label_plausibility

    _, obl = hip_pair
    report = check_label_plausibility(obl.ct, obl.labels)
    assert not report.implausible, report.describe()
