"""``--muscle-mask`` contents: a binary mask (0 and one positive value) is read; a
probability map, a CT or a multi-label map passed as the mask is refused with a message
naming what was found. Files are written with SimpleITK, as other tools write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from CTMuscleBoneLib import muscle_l3
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import Geometry

SHAPE = (12, 10, 8)  # ITK index order (i, j, k)
GEOM = Geometry(SHAPE, (1.5, 1.5, 3.0))


def _block() -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[3:9, 2:8, 2:6] = True
    return m


def _write(tmp_path: Path, arr: np.ndarray, name: str = "mask.nii.gz") -> Path:
    """Write ``arr`` (ITK index order) with SimpleITK, on GEOM (axial, LPS)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing(GEOM.spacing_mm)
    img.SetOrigin(GEOM.origin_mm)
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("value, dtype", [(1, np.uint8), (255, np.uint8), (1.0, np.float32),
                                          (7, np.int16)])
def test_binary_masks_are_read(tmp_path: Path, value, dtype) -> None:
    block = _block()
    arr = np.where(block, value, 0).astype(dtype)
    mask = muscle_l3.read_muscle_mask(_write(tmp_path, arr), GEOM)
    assert mask.dtype == bool and np.array_equal(mask, block)


def test_probability_map_below_one_half_is_refused(tmp_path: Path) -> None:
    arr = np.full(SHAPE, 0.4, dtype=np.float32)  # the tester's map: 0.4 everywhere
    with pytest.raises(InputError, match="probability map.*threshold it first"):
        muscle_l3.read_muscle_mask(_write(tmp_path, arr), GEOM)
    soft = np.where(_block(), 0.9, 0.0).astype(np.float32)
    soft[0, 0, 0] = 0.2
    with pytest.raises(InputError, match="between 0 and 1"):
        muscle_l3.read_muscle_mask(_write(tmp_path, soft, "soft.nii.gz"), GEOM)


def test_label_map_as_mask_is_refused_with_its_value_count(tmp_path: Path) -> None:
    arr = np.zeros(SHAPE, dtype=np.uint8)
    for v in range(1, 58):  # 57 labels, as a multi-structure segmentation
        arr.reshape(-1)[v * 10:v * 10 + 10] = v
    with pytest.raises(InputError, match="58 distinct values.*label map, not a binary mask"):
        muscle_l3.read_muscle_mask(_write(tmp_path, arr), GEOM)


def test_ct_as_mask_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1500, SHAPE).astype(np.int16)
    with pytest.raises(InputError, match="negative values.*CT image"):
        muscle_l3.read_muscle_mask(_write(tmp_path, ct), GEOM)
    fractional = np.where(_block(), 2.5, 0.0).astype(np.float32)
    with pytest.raises(InputError, match="fractional values"):
        muscle_l3.read_muscle_mask(_write(tmp_path, fractional, "f.nii.gz"), GEOM)


def test_measure_cli_refuses_a_probability_mask_with_one_line(tmp_path: Path, capsys) -> None:
    from CTMuscleBoneLib.anatomy import BY_KEY
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.image import LabelMap
    from CTMuscleBoneLib.io_ct import write_image, write_label_map

    ct = np.full(SHAPE, -1000, dtype=np.int16)  # air around a body of fat and muscle
    ct[1:11, 1:9, :] = -100
    ct[_block()] = 40
    ct_path = tmp_path / "ct.nii.gz"
    write_image(ct, GEOM, ct_path)
    value = BY_KEY["sartorius_left"].label_value
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[_block()] = value
    write_label_map(LabelMap(labels, GEOM, {value: "sartorius_left"}),
                    tmp_path / "labels.nii.gz")
    prob = _write(tmp_path, np.full(SHAPE, 0.4, dtype=np.float32), "prob.nii.gz")
    rc = main(["measure", "--ct", str(ct_path), "--labels", str(tmp_path / "labels.nii.gz"),
               "--muscle-mask", str(prob), "--calibration", "none", "--quiet",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "probability map" in err[0]


def test_tissue_masks_of_labels_extra_are_checked_the_same_way(tmp_path: Path) -> None:
    """``--labels-extra`` masks (subcutaneous fat for the phantomless calibration): a
    probability map read as a mask would make every nonzero voxel, air included, fat."""
    from CTMuscleBoneLib.image import LabelMap
    from CTMuscleBoneLib.io_labels import add_tissue_masks

    labels = LabelMap(np.zeros(SHAPE, np.int16), GEOM, {})
    prob = np.where(_block(), 0.9, 0.05).astype(np.float32)
    path = _write(tmp_path, prob, "subcutaneous_fat.nii.gz")
    with pytest.raises(InputError, match="Tissue mask subcutaneous_fat.nii.gz holds values "
                                         "between 0 and 1.*probability map"):
        add_tissue_masks(labels, [path])
    multi = _block().astype(np.int16) * 3
    multi[3, 2, 2] = 5
    path = _write(tmp_path, multi, "subcutaneous_fat.nii.gz")
    with pytest.raises(InputError, match="3 distinct values.*label map, not a binary mask"):
        add_tissue_masks(labels, [path])
    path = _write(tmp_path, _block().astype(np.uint8), "subcutaneous_fat.nii.gz")
    out = add_tissue_masks(labels, [path])
    assert int(np.count_nonzero(out.array)) == int(_block().sum())
