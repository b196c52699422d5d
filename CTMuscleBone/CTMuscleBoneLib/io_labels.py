"""Reading label maps from other tools onto the CT grid.

:func:`read_labels` returns a :class:`~CTMuscleBoneLib.image.LabelMap` on the CT's
voxel grid whose label values are mapped to anatomy keys
(:func:`CTMuscleBoneLib.anatomy.key_for_name`); labels the anatomy table does not know
go to ``LabelMap.unknown`` (listed, never measured).

Formats (``label_format``):

``totalseg-v2`` (also ``totalseg``)
    TotalSegmentator v2 multilabel NIfTI, task ``total`` (ids 1-117, table below).
    The v1 and v2 ids overlap (1-104) but mean different structures (v1 88 is
    ``femur_left``, v2 88 ``iliopsoas_left``; v1 T4-T10 are v2 L1-L5 and sacrum), so a
    map read with the other version's table gives wrong structures. Two checks catch
    it: the layout (:mod:`CTMuscleBoneLib.label_layout`: left-right pairs, vertebral
    order) when the chosen table breaks it and the other keeps it (``totalseg``, which
    assumes v2, then reads v1 ids with a note; an explicit version is refused, naming
    the other), and :mod:`CTMuscleBoneLib.plausibility` (CT numbers and volumes) for a
    map that keeps its layout under both tables.
``totalseg-v1``
    TotalSegmentator v1 (<= 1.5.x) multilabel NIfTI, task ``total`` (ids 1-104,
    ``data/totalseg_v1_names.json``); structures are matched by name.
``totalseg-folder``
    A TotalSegmentator output folder of per-structure masks ``<name>.nii.gz``.
``json`` / ``csv``
    Any integer label map plus a value -> name table: JSON ``{"1": "spleen", ...}``
    (or ``{"spleen": 1}``, or a list of ``{"value": 1, "name": "spleen"}``), or CSV
    rows ``value,name`` (a header row is allowed). Found automatically beside the file
    as ``<stem>.labels.json``, ``<stem>.json`` or ``<stem>.csv``, or given as ``names``.
``seg.nrrd``
    A 3D Slicer segmentation (``Segment{N}_Name/_LabelValue/_Layer/_ID`` header
    fields). Several layers (4-D) are merged when their segments do not overlap.
``canonical``
    CTMuscleBone's own label values (:func:`anatomy.canonical_label_names`).
``auto``
    Folder -> ``totalseg-folder``; ``*.seg.nrrd`` or a NRRD with ``Segment0_*`` fields
    -> ``seg.nrrd``; ``names`` given or a sidecar found -> ``json``/``csv``; a file name
    containing ``totalseg`` -> ``totalseg``; otherwise an :class:`InputError` asks for
    the format (TotalSegmentator and CTMuscleBone values cannot be told apart safely).

Grid policy: a label map on the CT grid is used as is. A label map on another grid in
the same physical space (its labelled voxels lie, at least partly, inside the CT's
physical extent) is resampled onto the CT grid with nearest-neighbour interpolation
(SimpleITK) and a note says so (and how much of the labelled volume fell outside the
CT). A label map whose labelled voxels lie wholly outside the CT, or of whose labelled
volume more than :data:`MAX_LABELLED_FRACTION_OUTSIDE` (50 %) falls outside it, is
refused: such a map belongs to another image (or the CT is a small part of the labelled
series), and the structures it cuts would be measured as fragments.

Label values are stored numbers: a NIfTI label map whose header scales its values
(``scl_slope`` other than 0 or 1, or a non-zero ``scl_inter``) is refused, since the
scaled values would name other structures.

Names tables: a value given twice with different names (CSV rows, repeated JSON keys,
two names for one value) is refused. A name the anatomy table does not know is listed
(not measured) with the closest known names, so that a misspelling is seen.

Sidecar versus format: when a names file sits beside the label map (see ``json``) and
``label_format`` names a fixed table (``totalseg*``, ``canonical``), the explicit
format wins, and a note names the label values on which the sidecar disagrees (and
the table the sidecar matches, when it matches another one).

Several label values mapping to one anatomy key (e.g. TotalSegmentator ``sacrum`` and
``vertebrae_S1``, both the sacrum here) are merged into the smallest value, with a note.

Tissue masks: :func:`add_tissue_masks` adds TotalSegmentator ``tissue_types`` masks
(:data:`TISSUE_MASK_NAMES`) to a label map read from another file (the reference
tissues of the phantomless calibration).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import anatomy
from .errors import InputError
from .image import Geometry, LabelMap, array_from_sitk
from .io_ct import image_stem
from .label_layout import check_named_layout, label_centroids_mm
from .user_files import parse_json, read_text_file

#: TotalSegmentator v2 task "total": label id -> structure name. Copied from
#: wasserth/TotalSegmentator totalsegmentator/map_to_binary.py, class_map["total"]
#: (checked against commit 0e65a448d557382b1e925276212b3bec7f5aff83, 2026-08-13).
TOTALSEG_V2_TOTAL: dict[int, str] = {
    1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver",
    6: "stomach", 7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left",
    10: "lung_upper_lobe_left", 11: "lung_lower_lobe_left", 12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right", 14: "lung_lower_lobe_right", 15: "esophagus",
    16: "trachea", 17: "thyroid_gland", 18: "small_bowel", 19: "duodenum", 20: "colon",
    21: "urinary_bladder", 22: "prostate", 23: "kidney_cyst_left", 24: "kidney_cyst_right",
    25: "sacrum", 26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4",
    29: "vertebrae_L3", 30: "vertebrae_L2", 31: "vertebrae_L1", 32: "vertebrae_T12",
    33: "vertebrae_T11", 34: "vertebrae_T10", 35: "vertebrae_T9", 36: "vertebrae_T8",
    37: "vertebrae_T7", 38: "vertebrae_T6", 39: "vertebrae_T5", 40: "vertebrae_T4",
    41: "vertebrae_T3", 42: "vertebrae_T2", 43: "vertebrae_T1", 44: "vertebrae_C7",
    45: "vertebrae_C6", 46: "vertebrae_C5", 47: "vertebrae_C4", 48: "vertebrae_C3",
    49: "vertebrae_C2", 50: "vertebrae_C1", 51: "heart", 52: "aorta", 53: "pulmonary_vein",
    54: "brachiocephalic_trunk", 55: "subclavian_artery_right",
    56: "subclavian_artery_left", 57: "common_carotid_artery_right",
    58: "common_carotid_artery_left", 59: "brachiocephalic_vein_left",
    60: "brachiocephalic_vein_right", 61: "atrial_appendage_left",
    62: "superior_vena_cava", 63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein",
    65: "iliac_artery_left", 66: "iliac_artery_right", 67: "iliac_vena_left",
    68: "iliac_vena_right", 69: "humerus_left", 70: "humerus_right", 71: "scapula_left",
    72: "scapula_right", 73: "clavicula_left", 74: "clavicula_right", 75: "femur_left",
    76: "femur_right", 77: "hip_left", 78: "hip_right", 79: "spinal_cord",
    80: "gluteus_maximus_left", 81: "gluteus_maximus_right", 82: "gluteus_medius_left",
    83: "gluteus_medius_right", 84: "gluteus_minimus_left", 85: "gluteus_minimus_right",
    86: "autochthon_left", 87: "autochthon_right", 88: "iliopsoas_left",
    89: "iliopsoas_right", 90: "brain", 91: "skull",
    **{92 + i: f"rib_left_{i + 1}" for i in range(12)},
    **{104 + i: f"rib_right_{i + 1}" for i in range(12)},
    116: "sternum", 117: "costal_cartilages",
}



def _load_v1_table() -> dict[int, str]:
    from importlib import resources

    text = resources.files("CTMuscleBoneLib").joinpath(
        "data/totalseg_v1_names.json").read_text(encoding="utf-8")
    return {int(k): str(v) for k, v in json.loads(text)["labels"].items()}


#: TotalSegmentator v1 task "total" (104 classes): label id -> structure name, from
#: ``data/totalseg_v1_names.json`` (source: wasserth/TotalSegmentator
#: totalsegmentator/map_to_binary.py class_map["total"], tag v1.5.7, commit
#: 951f07b9721404f5a4306236358d1d7cab1e3610).
TOTALSEG_V1_TOTAL: dict[int, str] = _load_v1_table()

LABEL_FORMATS = ("auto", "totalseg", "totalseg-v1", "totalseg-v2", "totalseg-folder",
                 "json", "csv", "seg.nrrd", "canonical")


def _sitk() -> Any:
    import SimpleITK as sitk

    return sitk


# ------------------------------------------------------------------------------------
# names tables
# ------------------------------------------------------------------------------------
def _int_key(value: Any, where: str) -> int:
    try:
        f = float(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: label value '{value}' is not a number.") from None
    if not f.is_integer() or f < 0:
        raise InputError(f"{where}: label value '{value}' is not a non-negative integer.")
    return int(f)


def read_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label value -> name from a JSON or CSV names file (formats: module docstring)."""
    path = Path(path)
    text = read_text_file(path, "label names file")
    where = f"Label names file '{path.name}'"
    table: _NamesTable = _NamesTable(where)
    if path.suffix.lower() == ".json":
        data = parse_json(text, "label names file", str(path),
                          object_pairs_hook=lambda pairs: _unique_keys(pairs, where))
        if isinstance(data, dict) and isinstance(data.get("labels"), list | dict):
            data = data["labels"]
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(v, int | float) and not re.fullmatch(r"\s*\d+\s*", str(k)):
                    table[_int_key(v, where)] = str(k)  # {"spleen": 1}
                elif isinstance(v, str):
                    table[_int_key(k, where)] = v
                elif isinstance(v, dict) and "name" in v:
                    table[_int_key(k, where)] = str(v["name"])
                else:
                    raise InputError(f"{where}: entry {k!r}: {v!r} is not value -> name.")
        elif isinstance(data, list):
            for item in data:
                if not isinstance(item, dict):
                    raise InputError(f"{where}: list entries must be objects.")
                value = item.get("value", item.get("label", item.get("labelValue")))
                name = item.get("name", item.get("key"))
                if value is None or name is None:
                    raise InputError(f"{where}: entry {item!r} lacks 'value' or 'name'.")
                table[_int_key(value, where)] = str(name)
        else:
            raise InputError(f"{where}: expected an object or a list.")
    else:
        rows = list(csv.reader(line for line in text.splitlines()
                               if line.strip() and not line.lstrip().startswith("#")))
        for n, row in enumerate(rows):
            if len(row) < 2:
                raise InputError(f"{where}: row {n + 1} needs 'value,name'.")
            if n == 0 and not re.fullmatch(r"\s*\d+(\.0*)?\s*", row[0]):
                continue  # header row
            table[_int_key(row[0], where)] = row[1].strip()
    if not table:
        raise InputError(f"{where} holds no label names.")
    return dict(table)


class _NamesTable(dict):
    """value -> name that refuses a value given twice with different names."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def __setitem__(self, value: int, name: str) -> None:
        old = self.get(value)
        if old is not None and old.strip() != str(name).strip():
            raise InputError(
                f"{self.where} gives label value {value} twice, as '{old}' and as '{name}': "
                "one value names one structure. Correct the table (keep the right name) "
                "and run again.")
        super().__setitem__(value, name)


def _unique_keys(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a key given twice in one JSON object."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out and out[k] != v:
            raise InputError(
                f"{where} gives the key '{k}' twice, as {out[k]!r} and as {v!r} (JSON keeps "
                "only the last silently): one value names one structure. Correct the table "
                "and run again.")
        out[k] = v
    return out


def _find_sidecar(path: Path) -> Path | None:
    stem = image_stem(path.name) or path.stem
    for name in (f"{stem}.labels.json", f"{stem}.json", f"{stem}.csv"):
        cand = path.with_name(name)
        if cand.is_file():
            return cand
    return None


def label_input_files(path: str | os.PathLike[str],
                      names: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every file :func:`read_labels` may read for ``path``: the label map (file or
    folder), the ``names`` file when given, and the names sidecar beside the map when
    present (read for the format, or checked against a fixed table). Batch resume keys
    and the command line's input protection use this list."""
    p = Path(path)
    files = [p]
    if names is not None and str(names) != "":
        files.append(Path(names))
    if not p.is_dir():
        sidecar = _find_sidecar(p)
        if sidecar is not None and sidecar not in files:
            files.append(sidecar)
    return files


# ------------------------------------------------------------------------------------
# grid policy
# ------------------------------------------------------------------------------------
#: Largest label value read (project choice): label arrays are held as at most 32-bit
#: signed integers, so a value above it (from an int64/uint32 map) would wrap around and
#: silently become another label or background; such a map is refused.
MAX_LABEL_VALUE = int(np.iinfo(np.int32).max)


def _as_label_array(array: np.ndarray, where: str, notes: list[str]) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(np.equal(np.mod(array, 1), 0)):
            raise InputError(
                f"{where} holds non-integer values; a label map holds whole numbers "
                "(one per structure). Did you pass a CT or a probability map? Save the "
                "segmentation as an integer label map."
            )
        notes.append(f"{where} stores labels as floating point; read as integers.")
    elif array.dtype.kind not in "iu":
        raise InputError(f"{where} holds {array.dtype} values, not integer labels.")
    if array.size and float(array.min()) < 0:
        raise InputError(f"{where} holds negative values; label values are >= 0.")
    hi = int(array.max()) if array.size else 0
    if hi > MAX_LABEL_VALUE:
        raise InputError(
            f"{where} holds label value {hi}, above the largest supported label value "
            f"{MAX_LABEL_VALUE} (2**31 - 1); renumber the segments with values from 1 to "
            f"{MAX_LABEL_VALUE} (and their names file) and try again.")
    dtype = np.uint8 if hi <= 255 else (np.uint16 if hi <= 65535 else np.int32)
    return array.astype(dtype, copy=False)


def _nonzero_extent_mm(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """LPS corners (8, 3) of the bounding box of the nonzero voxels (voxel edges)."""
    idx = np.argwhere(array != 0)
    lo = idx.min(axis=0) - 0.5
    hi = idx.max(axis=0) + 0.5
    corners = np.array([[(lo, hi)[b >> a & 1][a] for a in range(3)] for b in range(8)],
                       dtype=float)
    return geometry.index_to_physical(corners)


#: Largest fraction of a label map's labelled volume that may fall outside the CT when
#: it is resampled onto the CT grid; more is refused. A PROJECT DEFAULT, not a published
#: threshold: a map drawn on a slightly larger series (a few slices more) loses a small
#: fraction and passes with a note, while a map of another image that merely touches the
#: CT (the tester's thigh map on a hip CT lost 91 %) would have its structures measured
#: as fragments with plausible-looking numbers. Half is the point past which the map
#: mostly describes something the CT does not show.
MAX_LABELLED_FRACTION_OUTSIDE = 0.5


def to_ct_grid(array: np.ndarray, geometry: Geometry, ct_geometry: Geometry,
               what: str = "The label map") -> tuple[np.ndarray, list[str]]:
    """Put an integer label array onto the CT grid (the grid policy in the docstring).

    Parameters
    ----------
    array : np.ndarray of int, (m0, m1, m2)
        Labels in ITK index order on ``geometry``; must contain a nonzero voxel.
    geometry, ct_geometry : Geometry
        Grid of ``array``; the CT grid.

    Returns
    -------
    array : np.ndarray of int, ct_geometry.shape
    notes : list of str
    """
    if geometry.same_grid(ct_geometry):
        return array, []
    # Where are the labelled voxels, in CT index space?
    corners_idx = ct_geometry.physical_to_index(_nonzero_extent_mm(array, geometry))
    lo = corners_idx.min(axis=0)
    hi = corners_idx.max(axis=0)
    ct_hi = np.asarray(ct_geometry.shape, dtype=float) - 0.5
    if np.any(hi < -0.5) or np.any(lo > ct_hi):
        raise InputError(
            f"{what} does not overlap the CT in physical space (its labelled region "
            f"lies outside the CT's field of view). It belongs to another image or its "
            f"position header is wrong. CT: {ct_geometry.describe()}; labels: "
            f"{geometry.describe()}."
        )
    from .segmentation.preprocess import resample

    out = np.ascontiguousarray(resample(array, geometry, ct_geometry, "nearest", 0,
                                        output_dtype=array.dtype))
    notes = [
        f"{what} was on a different voxel grid ({geometry.describe()}) from the CT "
        f"({ct_geometry.describe()}); it was resampled onto the CT grid with "
        "nearest-neighbour interpolation."
    ]
    if np.any(lo < -0.5 - 1e-6) or np.any(hi > ct_hi + 1e-6):
        before = float(np.count_nonzero(array)) * geometry.voxel_volume_mm3
        after = float(np.count_nonzero(out)) * ct_geometry.voxel_volume_mm3
        lost = max(0.0, 1.0 - after / before) if before > 0 else 0.0
        if lost > MAX_LABELLED_FRACTION_OUTSIDE:
            raise InputError(
                f"{what} lies mostly outside the CT: about {100 * lost:.0f} % of its "
                f"labelled volume falls outside the CT's field of view (more than "
                f"{100 * MAX_LABELLED_FRACTION_OUTSIDE:.0f} % is refused), so it most "
                f"likely belongs to another image. CT: {ct_geometry.describe()}; labels: "
                f"{geometry.describe()}. Give the label map of this CT; if it is this CT's "
                "map drawn on a larger series, crop it to the CT's extent first.")
        notes.append(
            f"Part of the labelled region lies outside the CT field of view; about "
            f"{100 * lost:.1f} % of the labelled volume was dropped."
        )
    return out, notes


# ------------------------------------------------------------------------------------
# building the LabelMap
# ------------------------------------------------------------------------------------
def _build_label_map(array: np.ndarray, names: dict[int, str], ct_geometry: Geometry,
                     geometry: Geometry, source: str, notes: list[str],
                     what: str, hint: str = "") -> LabelMap:
    if not np.any(array):
        raise InputError(
            f"{what} is empty (no nonzero voxel): there is nothing to measure. Check "
            "that the segmentation ran and that the right file was given."
        )
    array, grid_notes = to_ct_grid(array, geometry, ct_geometry, what)
    notes = notes + grid_notes
    present = [int(v) for v in np.unique(array) if v != 0]
    if not present:
        raise InputError(f"{what} has no labelled voxel inside the CT field of view.")
    structures: dict[int, str] = {}
    unknown: dict[int, str] = {}
    by_key: dict[str, list[int]] = {}
    for v in present:
        name = names.get(v)
        key = anatomy.key_for_name(name) if name else None
        if key is None:
            unknown[v] = name if name else f"unnamed label {v}"
        else:
            by_key.setdefault(key, []).append(v)
    merged_array = array
    for key, values in by_key.items():
        keep = min(values)
        structures[keep] = key
        if len(values) > 1:
            if merged_array is array:
                merged_array = array.copy()
            merged_array[np.isin(merged_array, values)] = keep
            notes.append(
                f"Labels {', '.join(f'{v} ({names[v]})' for v in values)} all mean "
                f"'{key}' and were merged into label {keep}."
            )
    if not structures:
        listed = ", ".join(f"{v}: {n}" for v, n in sorted(unknown.items())[:30])
        more = "" if len(unknown) <= 30 else f" and {len(unknown) - 30} more"
        raise InputError(
            f"None of the labels in {what.lower() if what.startswith('The') else what} is "
            f"a structure CTMuscleBone knows ({listed}{more}). Check the label format "
            f"(label_format) or the names table.{hint}"
        )
    if unknown:
        shown = ", ".join(sorted(set(unknown.values()))[:20])
        notes.append(f"{len(unknown)} label(s) not in the anatomy table are listed but not "
                     f"measured: {shown}{' ...' if len(unknown) > 20 else ''}.")
        close = _close_names(unknown)
        if close:
            notes.append(
                f"Possibly misspelt label name(s): {close}. If so, these structures are not "
                "measured and every total that would include them (e.g. thigh, lower limb) "
                "is low: correct the names table.")
    return LabelMap(array=merged_array, geometry=ct_geometry, structures=structures,
                    unknown=unknown, source=source, notes=tuple(notes))


def likely_misspelt(unknown: Mapping[int, str]) -> dict[int, list[str]]:
    """Unknown label names close to a known anatomy key: value -> the closest keys
    (difflib ratio >= 0.8, at most two, best first). Names of other tools' structures
    (TotalSegmentator 'vertebrae_T12') and unnamed labels are not typos."""
    import difflib

    known = [st.key for st in anatomy.ANATOMY]
    other_tools = {anatomy._normalise(n) for n in
                   (*TOTALSEG_V2_TOTAL.values(), *TOTALSEG_V1_TOTAL.values())}
    found: dict[int, list[str]] = {}
    for v, name in sorted(unknown.items()):
        if name.startswith("unnamed label") or anatomy._normalise(name) in other_tools:
            continue
        guess = difflib.get_close_matches(anatomy._normalise(name), known, n=2, cutoff=0.8)
        if guess:
            found[v] = guess
    return found


def _close_names(unknown: dict[int, str]) -> str:
    """'value: name (did you mean a, b?)' for unknown names close to a known one
    (:func:`likely_misspelt`); '' when none is close."""
    return "; ".join(f"{v}: '{unknown[v]}' (did you mean {' or '.join(guess)}?)"
                     for v, guess in likely_misspelt(unknown).items())


def nifti_scaling(path: str | os.PathLike[str]) -> tuple[float, float] | None:
    """(scl_slope, scl_inter) of a NIfTI-1/2 file's header (.nii, .nii.gz), read from
    the raw header (SimpleITK applies them silently); None for other files or an
    unreadable header."""
    import gzip
    import struct

    p = Path(path)
    name = p.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        with (gzip.open(p, "rb") if name.endswith(".gz") else open(p, "rb")) as f:
            head = f.read(540)
    except (OSError, EOFError):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:
            return struct.unpack(f"{order}ff", head[112:120])  # NIfTI-1
        if len(head) >= 540 and struct.unpack(f"{order}i", head[:4])[0] == 540:
            return struct.unpack(f"{order}dd", head[176:192])  # NIfTI-2
    return None


def _refuse_scaled_labels(path: Path) -> None:
    """A label map's values are names: refuse a NIfTI header that rescales them."""
    scaling = nifti_scaling(path)
    if scaling is None:
        return
    slope, inter = (float(x) for x in scaling)
    slope_ok = not np.isfinite(slope) or slope in (0.0, 1.0)  # 0/NaN: no scaling
    inter_ok = not np.isfinite(inter) or inter == 0.0 or not np.isfinite(slope) or slope == 0
    if not (slope_ok and inter_ok):
        raise InputError(
            f"The label map '{path.name}' has a NIfTI intensity scaling in its header "
            f"(scl_slope {slope:g}, scl_inter {inter:g}): its stored label values would be "
            "changed into other values and so other structures. Save the label map without "
            "scaling (scl_slope 1 or 0, scl_inter 0) and run again.")


def _read_label_image(path: Path) -> tuple[Any, dict[str, str]]:
    from .io_ct import _read_image_file, _squeeze_to_3d

    _refuse_scaled_labels(path)
    image, header = _read_image_file(path)
    if image.GetDimension() == 4:
        image = _squeeze_to_3d(image)
    return image, header


def _scalar_array(image: Any, where: str, notes: list[str]) -> tuple[np.ndarray, Geometry]:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{where} has several values per voxel; expected a label map.")
    geometry = Geometry.from_sitk(image)
    return _as_label_array(array_from_sitk(image), where, notes), geometry


def _read_simple(path: Path, names: dict[int, str], ct_geometry: Geometry, source: str,
                 extra_notes: list[str] | None = None, table_name: str | None = None,
                 sidecar: Path | None = None, unversioned: bool = False) -> LabelMap:
    """Read a label image whose values ``names`` names.

    ``table_name`` (e.g. "TotalSegmentator v2") is given for fixed tables; then a
    ``sidecar`` that disagrees with ``names`` on the values present is reported. For a
    TotalSegmentator table the anatomical layout decides between v1 and v2
    (:func:`_version_from_layout`; ``unversioned``: format 'totalseg', v2 assumed).
    """
    notes = list(extra_notes or [])
    what = f"The label map '{path.name}'"
    image, _ = _read_label_image(path)
    array, geometry = _scalar_array(image, what, notes)
    del image
    totalseg = names is TOTALSEG_V2_TOTAL or names is TOTALSEG_V1_TOTAL
    # label values present: one np.unique for the sidecar check and the version hint
    present = ([int(v) for v in np.unique(array) if v != 0]
               if totalseg or sidecar is not None else [])
    if table_name is not None and sidecar is not None:
        note = _sidecar_disagreement(sidecar, names, present, table_name)
        if note is not None:
            notes.append(note)
    hint = ""
    if totalseg:
        other, other_name = ((TOTALSEG_V1_TOTAL, "totalseg-v1") if names is TOTALSEG_V2_TOTAL
                             else (TOTALSEG_V2_TOTAL, "totalseg-v2"))
        layout_note, switch = _version_from_layout(array, geometry, names, other, other_name,
                                                   what, unversioned)
        if layout_note is not None:  # replaces the plain "read as v2" note
            notes = [n for n in notes if not n.startswith("Label format 'totalseg' read as")]
            notes.append(layout_note)
        if switch:
            names, other = other, names
            other_name = "totalseg-v2" if other_name == "totalseg-v1" else "totalseg-v1"
            source = source.replace("TotalSegmentator v2", "TotalSegmentator v1")
        hint = (f" If it is a TotalSegmentator map of the other version, use label_format "
                f"'{other_name}'.") if (layout_note is None and _n_known(present, other)
                                        > _n_known(present, names)) else ""
    return _build_label_map(array, names, ct_geometry, geometry, source, notes, what, hint)


def _version_from_layout(array: np.ndarray, geometry: Geometry, names: dict[int, str],
                         other: dict[int, str], other_name: str, what: str,
                         unversioned: bool) -> tuple[str | None, bool]:
    """Which TotalSegmentator id table puts the structures where their names say.

    When the chosen table breaks left-right or vertebral-order relations
    (:mod:`CTMuscleBoneLib.label_layout`) and the other table breaks none of at least
    two, the map is of the other version: for ``totalseg`` (unversioned) that is
    returned as ``(note, True)`` (read with the other table); for an explicit version an
    :class:`InputError` says so. For ``totalseg`` whose assumed table keeps the layout
    while the other breaks it: ``(note confirming the assumed table, False)``.
    Otherwise ``(None, False)``.
    """
    centroids = label_centroids_mm(array, geometry)
    chosen = check_named_layout(centroids, names)
    alternative = check_named_layout(centroids, other)
    version = "v1" if other_name == "totalseg-v1" else "v2"
    this = "v2" if version == "v1" else "v1"
    if chosen.consistent:
        if unversioned and chosen.n_relations >= 2 and not alternative.consistent:
            return (f"Label format 'totalseg' read as TotalSegmentator {this} ids: with "
                    f"them all {chosen.n_relations} left-right and vertebral-order "
                    f"relations hold, while with {version} ids "
                    f"{alternative.describe(limit=1)}."), False
        return None, False
    if not alternative.consistent or alternative.n_relations < 2:
        return None, False
    why = (f"with TotalSegmentator {this} ids {chosen.describe()}, while with {version} ids "
           f"all {alternative.n_relations} left-right and vertebral-order relations hold")
    if unversioned:
        return (f"Label format 'totalseg' read as TotalSegmentator {version} ids: {why}. "
                f"Give label_format '{other_name}' to make this explicit."), True
    raise InputError(
        f"{what} does not fit the TotalSegmentator {this} table given as its label format: "
        f"{why}. It looks like a TotalSegmentator {version} map: use label_format "
        f"'{other_name}'.")


def _n_known(present: list[int], names: dict[int, str]) -> int:
    """How many of the label values ``present`` the table maps to an anatomy key."""
    return sum(1 for v in present if names.get(v) and anatomy.key_for_name(names[v]) is not None)


def _same_structure(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.strip().lower() == b.strip().lower():
        return True
    ka, kb = anatomy.key_for_name(a), anatomy.key_for_name(b)
    return ka is not None and ka == kb


def _sidecar_disagreement(sidecar: Path, names: dict[int, str], present: list[int],
                          table_name: str) -> str | None:
    """A note when the names file beside the map disagrees with the chosen table."""
    try:
        side = read_names(sidecar)
    except InputError as exc:
        return f"The names file '{sidecar.name}' beside the map was ignored ({exc})."
    differ = [v for v in present if v in side and not _same_structure(side[v], names.get(v))]
    if not differ:
        return None
    shown = "; ".join(f"{v}: '{side[v]}' vs '{names.get(v, 'unnamed')}'" for v in differ[:5])
    more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
    tables = {"TotalSegmentator v1": TOTALSEG_V1_TOTAL, "TotalSegmentator v2":
              TOTALSEG_V2_TOTAL, "CTMuscleBone canonical": anatomy.canonical_label_names()}
    matches = [n for n, t in tables.items() if n != table_name
               and all(_same_structure(side[v], t.get(v)) for v in present if v in side)]
    match = f" The names file matches the {matches[0]} table." if matches else ""
    return (f"The names file '{sidecar.name}' beside the map disagrees with the chosen "
            f"label format ({table_name}) on {len(differ)} label value(s) ({shown}{more}); "
            f"the format given was used.{match} If the names file is right, use label_format "
            "'json' (or omit the format).")


@dataclass
class MaskFolder:
    """Per-structure binary masks of one folder combined into one label array.

    Attributes
    ----------
    array : np.ndarray of uint16, (n0, n1, n2)
        Label values; 0 background.
    names : dict[int, str]
        Label value -> mask name (file name without its image ending). TotalSegmentator
        v2 names keep their v2 id; other names get ids above 117.
    geometry : Geometry
        The common grid of the masks.
    empty : list of str
        Masks present as files but without a voxel (annotated, structure absent).
    notes : list of str
    """

    array: np.ndarray
    names: dict[int, str]
    geometry: Geometry
    empty: list[str]
    notes: list[str]


def read_mask_folder(folder: str | os.PathLike[str],
                     keep: Callable[[str], bool] | None = None) -> MaskFolder:
    """Read a folder of binary masks ``<name>.nii.gz`` (TotalSegmentator output).

    The single reader of mask folders (``read_labels`` with ``totalseg-folder`` and
    the training datasets). Overlap rule: a voxel in two masks keeps the mask whose
    name comes first alphabetically; a note counts such voxels.

    Parameters
    ----------
    folder : path-like
    keep : callable, optional
        ``keep(name)`` is False for masks to skip (not read).

    Raises
    ------
    InputError
        No mask files, masks on different grids, unreadable masks.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and image_stem(p.name))
    if keep is not None:
        files = [p for p in files if keep(image_stem(p.name) or "")]
    if not files:
        raise InputError(
            f"'{folder}' holds no mask files; expected a TotalSegmentator output folder "
            "(one <structure>.nii.gz per structure)."
        )
    name_to_id = {n: i for i, n in TOTALSEG_V2_TOTAL.items()}
    next_free = max(TOTALSEG_V2_TOTAL) + 1
    names: dict[int, str] = {}
    notes: list[str] = []
    empty: list[str] = []
    array: np.ndarray | None = None
    geometry: Geometry | None = None
    overlap = 0
    for p in files:
        name = image_stem(p.name) or p.name
        image, _ = _read_label_image(p)
        mask_arr, g = _scalar_array(image, f"Mask '{p.name}'", notes)
        del image
        if geometry is None:
            geometry = g
            array = np.zeros(g.shape, dtype=np.uint16)
        elif not g.same_grid(geometry):
            raise InputError(
                f"Mask '{p.name}' is on a different grid from the other masks in "
                f"'{folder}'; a TotalSegmentator folder has one grid for all masks."
            )
        mask = mask_arr != 0
        if not mask.any():
            empty.append(name)
            continue
        value = name_to_id.get(name)
        if value is None:
            value = next_free
            next_free += 1
        names[value] = name
        assert array is not None
        clash = mask & (array != 0)
        overlap += int(np.count_nonzero(clash))
        array[mask & ~clash] = value
    if overlap:
        notes.append(f"{overlap} voxels belonged to two masks; each kept its first mask "
                     "(alphabetical order).")
    assert array is not None and geometry is not None
    return MaskFolder(array, names, geometry, empty, notes)


def _read_totalseg_folder(folder: Path, ct_geometry: Geometry) -> LabelMap:
    masks = read_mask_folder(folder)
    if not masks.names:
        raise InputError(f"All masks in '{folder}' are empty: nothing to measure.")
    return _build_label_map(masks.array, masks.names, ct_geometry, masks.geometry,
                            f"TotalSegmentator folder {folder}", masks.notes,
                            f"The TotalSegmentator folder '{folder.name}'")


# -- Slicer .seg.nrrd -----------------------------------------------------------------
def _segment_fields(header: dict[str, str]) -> dict[int, dict[str, str]]:
    segs: dict[int, dict[str, str]] = {}
    for k, v in header.items():
        m = re.fullmatch(r"Segment(\d+)_(\w+)", k)
        if m:
            segs.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return dict(sorted(segs.items()))


def _key_from_terminology(term: str | None) -> str | None:
    """Anatomy key from a Slicer terminology string when its codes match one entry."""
    if not term:
        return None
    parts = term.split("~")
    codes = [p.split("^") for p in parts]
    type_code = codes[2][1] if len(codes) > 2 and len(codes[2]) > 1 else None
    modifier = codes[3][1] if len(codes) > 3 and len(codes[3]) > 1 else None
    if not type_code:
        return None
    side = {c[0]: s for s, c in anatomy.LATERALITY.items()}.get(modifier or "", "none")
    hits = [st.key for st in anatomy.ANATOMY
            if st.snomed_type[0] == type_code and st.side == side]
    return hits[0] if len(hits) == 1 else None


def _read_seg_nrrd(path: Path, ct_geometry: Geometry) -> LabelMap:
    where = f"The Slicer segmentation '{path.name}'"
    image, header = _read_label_image(path)
    segs = _segment_fields(header)
    if not segs:
        raise InputError(f"{where} has no Segment0_* header fields; it is not a Slicer "
                         ".seg.nrrd. Give the label format explicitly.")
    notes: list[str] = []
    geometry = Geometry.from_sitk(image)
    n_layers = image.GetNumberOfComponentsPerPixel()
    if n_layers == 1:
        layers = [_as_label_array(array_from_sitk(image), where, notes)]
    else:
        sitk = _sitk()
        layers = [
            _as_label_array(array_from_sitk(sitk.VectorIndexSelectionCast(image, c)),
                            where, notes)
            for c in range(n_layers)
        ]
    del image
    # Old Slicer files (no LabelValue/Layer): one binary layer per segment.
    legacy = all("LabelValue" not in f for f in segs.values())
    out = np.zeros(geometry.shape, dtype=np.uint16)
    names: dict[int, str] = {}
    used_values: set[int] = set()
    plan = []
    for n, (idx, f) in enumerate(segs.items()):
        layer = int(f.get("Layer", n if legacy and n_layers == len(segs) else 0))
        value = int(f.get("LabelValue", 1))
        if layer >= len(layers):
            raise InputError(f"{where}: segment {idx} refers to layer {layer}, but the file "
                             f"has {len(layers)} layer(s).")
        plan.append((idx, f, layer, value))
    all_unique = len({v for *_, v in plan}) == len(plan)
    for n, (idx, f, layer, value) in enumerate(plan):
        out_value = value if all_unique and value > 0 else n + 1
        while out_value in used_values:
            out_value += 1
        used_values.add(out_value)
        mask = layers[layer] == value
        if not mask.any():
            continue
        clash = mask & (out != 0)
        if clash.any():
            raise InputError(
                f"{where}: segment '{f.get('Name', idx)}' overlaps another segment in "
                f"{int(np.count_nonzero(clash))} voxels (segments on separate layers). "
                "CTMuscleBone needs non-overlapping segments: remove the overlap in "
                "Segment Editor (masking: 'Overwrite other segments') and save again."
            )
        out[mask] = out_value
        name = f.get("Name") or f.get("ID") or f"Segment_{idx}"
        if anatomy.key_for_name(name) is None:
            key = _key_from_terminology(f.get("Terminology"))
            if key is not None:
                notes.append(f"Segment '{name}' identified as '{key}' by its terminology "
                             "codes.")
                name = key
        names[out_value] = name
    if len(layers) > 1:
        notes.append(f"{where} had {len(layers)} layers; merged (segments do not overlap).")
    return _build_label_map(out, names, ct_geometry, geometry,
                            f"3D Slicer segmentation {path}", notes, where)


# ------------------------------------------------------------------------------------
# public entry point
# ------------------------------------------------------------------------------------
def _detect_format(path: Path, names: Path | None) -> str:
    if path.is_dir():
        return "totalseg-folder"
    lower = path.name.lower()
    if lower.endswith(".seg.nrrd"):
        return "seg.nrrd"
    if names is not None:
        return "csv" if names.suffix.lower() == ".csv" else "json"
    sidecar = _find_sidecar(path)
    if sidecar is not None:
        return "csv" if sidecar.suffix.lower() == ".csv" else "json"
    if lower.endswith((".nrrd", ".nhdr")):
        _, header = _read_label_image(path)
        if _segment_fields(header):
            return "seg.nrrd"
    if "totalseg" in lower:
        return "totalseg"
    raise InputError(
        f"Cannot tell which label table '{path.name}' uses: no names file was found "
        f"beside it ({image_stem(path.name) or path.stem}.labels.json/.json/.csv). Give "
        "the label format ('totalseg-v2' or 'totalseg-v1' for TotalSegmentator 'total', "
        "'canonical' for CTMuscleBone label values) or a names file (value -> name)."
    )


def read_labels(path: str | os.PathLike[str], ct_geometry: Geometry,
                label_format: str = "auto",
                names: str | os.PathLike[str] | None = None) -> LabelMap:
    """Read a label map and put it on the CT grid with anatomy keys.

    Parameters
    ----------
    path : path-like
        Label-map file or TotalSegmentator output folder.
    ct_geometry : Geometry
        Grid of the CT the labels belong to; the result is on this grid.
    label_format : str
        One of :data:`LABEL_FORMATS` (see the module docstring).
    names : path-like, optional
        JSON/CSV value -> name table (overrides a sidecar found beside the file).

    Returns
    -------
    LabelMap
        ``array`` (n0, n1, n2) on ``ct_geometry``; ``structures`` for labels the anatomy
        table knows, ``unknown`` for the rest (only labels present in the array);
        ``notes`` say what was done (resampling, merges, unknown labels).

    Raises
    ------
    InputError
        Unreadable file, unknown format, non-integer or negative labels, an empty map,
        no known structure, labels outside the CT, overlapping Slicer segments.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"Label map '{p}' does not exist. Check the path.")
    fmt = label_format.strip().lower().replace("_", "-")
    if fmt == "seg-nrrd":
        fmt = "seg.nrrd"
    if fmt not in LABEL_FORMATS:
        raise InputError(f"Unknown label format '{label_format}'; use one of "
                         f"{', '.join(LABEL_FORMATS)}.")
    names_path = Path(names) if names is not None else None
    if fmt == "auto":
        fmt = _detect_format(p, names_path)
    if fmt == "totalseg-folder":
        if not p.is_dir():
            raise InputError(f"'{p}' is not a folder; 'totalseg-folder' expects "
                             "TotalSegmentator's folder of per-structure masks.")
        return _read_totalseg_folder(p, ct_geometry)
    if p.is_dir():
        raise InputError(f"'{p}' is a folder; give a label-map file, or label_format "
                         "'totalseg-folder' for a TotalSegmentator output folder.")
    if fmt == "seg.nrrd":
        return _read_seg_nrrd(p, ct_geometry)
    if fmt in ("totalseg", "totalseg-v1", "totalseg-v2"):
        v1 = fmt == "totalseg-v1"
        table, table_name = ((TOTALSEG_V1_TOTAL, "TotalSegmentator v1") if v1
                             else (TOTALSEG_V2_TOTAL, "TotalSegmentator v2"))
        notes = []
        if fmt == "totalseg":
            notes.append("Label format 'totalseg' read as TotalSegmentator v2 ids; for a "
                         "TotalSegmentator v1 (<= 1.5) map use 'totalseg-v1'.")
        return _read_simple(p, table, ct_geometry, f"{table_name} (total) {p}", notes,
                            table_name=table_name, sidecar=names_path or _find_sidecar(p),
                            unversioned=fmt == "totalseg")
    if fmt == "canonical":
        return _read_simple(p, anatomy.canonical_label_names(), ct_geometry,
                            f"CTMuscleBone label map {p}", table_name="CTMuscleBone canonical",
                            sidecar=names_path or _find_sidecar(p))
    # json / csv
    if names_path is None:
        names_path = _find_sidecar(p)
        if names_path is None:
            raise InputError(
                f"No names file for '{p.name}': expected "
                f"{image_stem(p.name) or p.stem}.labels.json, .json or .csv beside it, or "
                "pass names=."
            )
    table = read_names(names_path)
    return _read_simple(p, table, ct_geometry, f"{p} (names: {names_path.name})",
                        [f"Label names read from '{names_path.name}'."])


# ------------------------------------------------------------------------------------
# tissue masks added to a label map
# ------------------------------------------------------------------------------------
#: TotalSegmentator ``tissue_types`` mask names that :func:`add_tissue_masks` accepts:
#: the reference tissues of the phantomless calibration (subcutaneous adipose tissue,
#: skeletal muscle). ``subcutaneous_fat`` is an anatomy key; ``skeletal_muscle`` (all
#: skeletal muscle, no single structure) is kept as a named label outside the anatomy
#: table, which only the calibration's tissue sampler reads.
TISSUE_MASK_NAMES = ("subcutaneous_fat", "skeletal_muscle")


def tissue_mask_name(path: str | os.PathLike[str]) -> str:
    """The tissue a mask file holds, from its name ending (``*subcutaneous_fat.nii.gz``).

    Raises
    ------
    InputError
        The name ends in none of :data:`TISSUE_MASK_NAMES`.
    """
    stem = (image_stem(Path(path).name) or "").lower()
    for name in TISSUE_MASK_NAMES:
        if stem == name or stem.endswith(("_" + name, "-" + name)):
            return name
    raise InputError(
        f"'{Path(path).name}' is not a tissue mask this option takes: its file name must end "
        f"in {' or '.join(n + '.nii.gz' for n in TISSUE_MASK_NAMES)} (TotalSegmentator "
        "tissue_types names). Rename the file, or merge other structures into the main "
        "label map.")


def add_tissue_masks(labels: LabelMap, paths: list[str | os.PathLike[str]]) -> LabelMap:
    """The label map with TotalSegmentator tissue masks added where it has background.

    Parameters
    ----------
    labels : LabelMap
        On the CT grid (not modified).
    paths : list of path-like
        Binary mask files (nonzero = tissue), named by :func:`tissue_mask_name`; a mask
        on another grid of the same physical space is resampled (:func:`to_ct_grid`).

    Returns
    -------
    LabelMap
        A copy whose array gains one label per tissue on voxels that were background
        (the main label map wins where both label a voxel); a note per mask says how
        many voxels were added and how many kept their label.

    Raises
    ------
    InputError
        Missing, empty or non-binary-image file, a name not in
        :data:`TISSUE_MASK_NAMES`, the same tissue twice, a mask outside the CT.
    """
    from dataclasses import replace

    from .io_ct import read_image

    array = labels.array
    structures = dict(labels.structures)
    unknown = dict(labels.unknown)
    notes = list(labels.notes)
    seen: set[str] = set()
    for path in paths:
        p = Path(path)
        name = tissue_mask_name(p)
        if name in seen:
            raise InputError(f"Two tissue masks for '{name}' ({p.name}); give one per tissue.")
        seen.add(name)
        if not p.is_file():
            raise InputError(f"Tissue mask file not found: {p}")
        raw, geom = read_image(p)
        raw = np.asarray(raw)
        if not np.all(np.isfinite(raw)):
            raise InputError(f"Tissue mask {p.name} holds non-finite values.")
        binary = (raw != 0).astype(np.uint8)
        if not binary.any():
            raise InputError(f"Tissue mask {p.name} is empty (no nonzero voxel).")
        # a probability map or a label map read as a mask would make every nonzero
        # voxel (air included) this tissue
        from .muscle_l3 import check_binary_mask_values

        check_binary_mask_values(raw[binary != 0], p.name, "Tissue mask",
                                 f"the TotalSegmentator tissue_types mask {p.name} "
                                 "(0 = background, 1 = tissue)")
        on_ct, grid_notes = to_ct_grid(binary, geom, labels.geometry, f"The tissue mask {p.name}")
        mask = on_ct != 0
        value = labels.value_of(name) if name in anatomy.BY_KEY else next(
            (v for v, n in unknown.items() if n == name), None)
        if value is None:
            used = set(structures) | set(unknown) | {int(v) for v in np.unique(array)}
            value = max(used | {0}) + 1
        if array is labels.array:
            array = labels.array.copy()
        if value > MAX_LABEL_VALUE:
            raise InputError(f"No free label value for the tissue mask {p.name}: the label "
                             f"map already uses {MAX_LABEL_VALUE}, the largest supported.")
        if value > np.iinfo(array.dtype).max:
            array = array.astype(np.int32)
        free = mask & (array == 0)
        array[free] = value
        if name in anatomy.BY_KEY:
            structures[value] = name
        else:
            unknown[value] = name
        notes += grid_notes
        notes.append(f"Tissue mask {p.name} added as '{name}' (label {value}): "
                     f"{int(free.sum())} voxels; {int((mask & ~free).sum())} voxels already "
                     "labelled kept their label.")
    return replace(labels, array=array, structures=structures, unknown=unknown,
                   notes=tuple(notes))
