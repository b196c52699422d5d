"""Training datasets: (CT, label map) pairs mapped onto the anatomy table.

Three sources, each a sequence of :class:`TrainingCase` read lazily:

* :class:`TotalSegmentatorDataset`: the public TotalSegmentator dataset layout
  (Wasserthal et al., Radiol Artif Intell 2023; CC BY 4.0), one folder per subject::

      root/s0001/ct.nii.gz
      root/s0001/segmentations/femur_left.nii.gz   (binary mask, one file per structure)
      ...

  Each mask file name is mapped to an anatomy key by :func:`anatomy.key_for_name`;
  masks of structures the model does not ask for (``structures``) are ignored. The
  masks are read by :func:`CTMuscleBoneLib.io_labels.read_mask_folder` (the reader
  ``ctmusclebone measure`` uses; a voxel in two masks keeps the alphabetically first).
* :class:`ImagesLabelsDataset`: a plain layout a hospital can export::

      root/images/<case>.nii.gz
      root/labels/<case>.nii.gz          (integer label map on the image's grid)
      root/labels.json                   ({"1": "femur_left", "2": "Gluteus medius (left)", ...})
      root/labels/<case>.labels.json     (optional, overrides labels.json for that case)

  Names are mapped by :func:`anatomy.key_for_name`; unknown names are ignored.
* :class:`SyntheticPhantomDataset`: synthetic phantoms built in memory from
  :class:`~CTMuscleBoneLib.phantoms.PhantomSpec` objects.

Every case's label map uses the canonical label values of the anatomy table and holds
only the requested structures; everything else is background. A mask file that is
missing for a requested structure is recorded in :attr:`TrainingCase.missing`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import anatomy
from ...errors import InputError
from ...image import CTImage, LabelMap
from ...io_ct import IMAGE_SUFFIXES, image_stem, read_ct, read_image
from ...io_labels import read_mask_folder, read_names

#: Image file endings of dataset files (the package's single list, io_ct.IMAGE_SUFFIXES).
NIFTI_SUFFIXES = IMAGE_SUFFIXES


@dataclass
class TrainingCase:
    """One training or validation case.

    Attributes
    ----------
    name : str
    ct : CTImage
    labels : LabelMap
        Canonical label values, on the CT's grid; only the requested structures.
    missing : list of str
        Requested anatomy keys the source had no annotation file for.
    """

    name: str
    ct: CTImage
    labels: LabelMap
    missing: list[str] = field(default_factory=list)


def _requested(structures: Sequence[str] | None) -> list[str]:
    if structures is None:
        return [st.key for st in anatomy.ANATOMY]
    bad = [k for k in structures if k not in anatomy.BY_KEY]
    if bad:
        raise InputError(f"Unknown anatomy key(s) {bad}: use keys of CTMuscleBoneLib.anatomy.")
    return list(structures)


def _ct(path: Path) -> CTImage:
    ct = read_ct(path)
    return CTImage(ct.hu.astype(np.float32, copy=False), ct.geometry, ct.metadata)


class _LazyCases(Sequence[TrainingCase]):
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> TrainingCase:  # type: ignore[override]
        return self.load(self.names[i])

    def __iter__(self) -> Iterator[TrainingCase]:
        for n in self.names:
            yield self.load(n)

    def load(self, name: str) -> TrainingCase:
        raise KeyError(name)


class TotalSegmentatorDataset(_LazyCases):
    """Subjects of a TotalSegmentator-layout folder (see module docstring).

    Parameters
    ----------
    root : path
    structures : sequence of str, optional
        Anatomy keys to keep (a model card's structures); default every key.
    subjects : sequence of str, optional
        Subject folder names to use (e.g. a split); default every folder with a CT.
    """

    def __init__(self, root: str | os.PathLike[str], structures: Sequence[str] | None = None,
                 subjects: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"TotalSegmentator dataset folder {root} does not exist.")
        self.structures = _requested(structures)
        found = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and (p / "ct.nii.gz").is_file())
        if subjects is not None:
            absent = sorted(set(subjects) - set(found))
            if absent:
                raise InputError(f"Subjects {absent[:5]} have no ct.nii.gz under {root}.")
            found = [s for s in found if s in set(subjects)]
        if not found:
            raise InputError(
                f"No subjects under {root}: the TotalSegmentator layout is one folder per "
                "subject holding ct.nii.gz and segmentations/<structure>.nii.gz."
            )
        self.names = found

    def load(self, name: str) -> TrainingCase:
        folder = self.root / name
        ct = _ct(folder / "ct.nii.gz")
        arr = np.zeros(ct.geometry.shape, dtype=np.int16)
        present: list[str] = []
        seg_dir = folder / "segmentations"

        def keep(stem: str) -> bool:
            return anatomy.key_for_name(stem) in self.structures

        # no requested mask in the folder: every structure is missing (not an error)
        if seg_dir.is_dir() and any(keep(stem) for p in seg_dir.iterdir()
                                    if (stem := image_stem(p.name))):
            masks = read_mask_folder(seg_dir, keep=keep)
            if not masks.geometry.same_grid(ct.geometry, tol_mm=1e-2):
                raise InputError(f"The masks in {seg_dir} are not on the grid of "
                                 f"{folder / 'ct.nii.gz'}.")
            if masks.names:  # mask value -> model label value, one pass over the volume
                lut = np.zeros(max(masks.names) + 1, dtype=arr.dtype)
                for value, mask_name in masks.names.items():
                    lut[value] = anatomy.structure(anatomy.key_for_name(mask_name)).label_value
                arr = lut[masks.array]
            found = list(masks.names.values()) + masks.empty
            keys = {anatomy.key_for_name(n) for n in found}
            present = [k for k in self.structures if k in keys]
        labels = LabelMap(arr, ct.geometry,
                          {anatomy.structure(k).label_value: k for k in present},
                          source=f"TotalSegmentator dataset {name}")
        return TrainingCase(name, ct, labels, [k for k in self.structures if k not in present])


class ImagesLabelsDataset(_LazyCases):
    """Cases of an ``images/`` + ``labels/`` folder with a names JSON (module docstring).

    Parameters
    ----------
    root : path
    structures : sequence of str, optional
        Anatomy keys to keep; default every key.
    names_file : path, optional
        Label value -> name JSON; default ``root/labels.json``.
    """

    def __init__(self, root: str | os.PathLike[str], structures: Sequence[str] | None = None,
                 names_file: str | os.PathLike[str] | None = None,
                 cases: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.images, self.labels_dir = self.root / "images", self.root / "labels"
        if not self.images.is_dir() or not self.labels_dir.is_dir():
            raise InputError(f"{root} must hold the folders images/ and labels/ "
                             "(images/<case>.nii.gz + labels/<case>.nii.gz).")
        self.structures = _requested(structures)
        nf = Path(names_file) if names_file else self.root / "labels.json"
        self.names_default = read_names(nf) if nf.is_file() else None
        self._files: dict[str, tuple[Path, Path]] = {}
        for p in sorted(self.images.iterdir()):
            stem = image_stem(p.name)
            if stem is None:
                continue
            lab = next((self.labels_dir / f"{stem}{s}" for s in NIFTI_SUFFIXES
                        if (self.labels_dir / f"{stem}{s}").is_file()), None)
            if lab is None:
                raise InputError(f"Image {p.name} has no label map in {self.labels_dir}.")
            self._files[stem] = (p, lab)
        names = sorted(self._files) if cases is None else list(cases)
        if not names:
            raise InputError(f"No images under {self.images}.")
        absent = [n for n in names if n not in self._files]
        if absent:
            raise InputError(f"Cases {absent[:5]} are not in {self.images}.")
        self.names = names

    def load(self, name: str) -> TrainingCase:
        img_path, lab_path = self._files[name]
        per_case = self.labels_dir / f"{name}.labels.json"
        names = read_names(per_case) if per_case.is_file() else self.names_default
        if names is None:
            raise InputError(
                f"No label names for case {name}: write {self.root / 'labels.json'} "
                '({"1": "femur_left", ...}) or labels/<case>.labels.json.'
            )
        ct = _ct(img_path)
        raw, geom = read_image(lab_path)
        if not geom.same_grid(ct.geometry, tol_mm=1e-2):
            raise InputError(f"Label map {lab_path} is not on the grid of image {img_path}.")
        if not np.issubdtype(raw.dtype, np.integer):
            if not np.allclose(raw, np.round(raw)):
                raise InputError(f"Label map {lab_path} holds non-integer values.")
            raw = np.round(raw).astype(np.int32)
        arr = np.zeros(ct.geometry.shape, dtype=np.int16)
        present: dict[int, str] = {}
        for value, label_name in sorted(names.items()):
            key = anatomy.key_for_name(label_name)
            if value == 0 or key not in self.structures:
                continue
            m = raw == value
            lv = anatomy.structure(key).label_value
            arr[m] = lv
            present[lv] = key
        labels = LabelMap(arr, ct.geometry, present, source=str(lab_path))
        missing = [k for k in self.structures if k not in present.values()]
        return TrainingCase(name, ct, labels, missing)


class SyntheticPhantomDataset(_LazyCases):
    """Synthetic phantoms built in memory (cached) from phantom specifications.

    Parameters
    ----------
    specs : sequence of PhantomSpec
    structures : sequence of str, optional
        Anatomy keys to keep; the others become background.
    cache : bool
        Keep built phantoms in memory (they are rebuilt otherwise).
    """

    def __init__(self, specs: Sequence[Any], structures: Sequence[str] | None = None,
                 cache: bool = True) -> None:
        self.specs = list(specs)
        self.structures = _requested(structures)
        self.names = [f"phantom{i:03d}" for i in range(len(self.specs))]
        self._cache: dict[str, TrainingCase] = {}
        self.cache = cache

    def load(self, name: str) -> TrainingCase:
        if name in self._cache:
            return self._cache[name]
        from ...phantoms import make_phantom

        spec = self.specs[self.names.index(name)]
        ph = make_phantom(spec)
        case = TrainingCase(name, ph.ct, keep_structures(ph.labels, self.structures),
                            source_missing(ph.labels, self.structures))
        if self.cache:
            self._cache[name] = case
        return case


def keep_structures(labels: LabelMap, structures: Sequence[str]) -> LabelMap:
    """A label map with canonical values holding only ``structures`` (others -> 0).

    A requested group key (:data:`anatomy.GROUP_MEMBERS`: ``quadriceps_femoris_left``,
    ``vertebrae_lumbar`` ...) also takes the voxels of its members, so a model can be
    trained on groups from label maps that hold the individual structures (a member
    requested itself keeps its own label).
    """
    wanted = set(structures)
    target_of: dict[str, str] = {}
    for key in structures:
        for member in anatomy.group_members(key):
            if member not in wanted:
                target_of.setdefault(member, key)
        target_of[key] = key
    arr = np.zeros(labels.array.shape, dtype=np.int16)
    present: dict[int, str] = {}
    for value, key in labels.structures.items():
        target = target_of.get(key)
        if target is None:
            continue
        lv = anatomy.structure(target).label_value
        arr[labels.array == value] = lv
        present[lv] = target
    return LabelMap(arr, labels.geometry, present, source=labels.source)


def scored_keys(structures: Sequence[str]) -> list[str]:
    """Keys a model's prediction is scored on: its structures, with the lumbar-vertebra
    class (``vertebrae_lumbar``) preceded by the numbered levels that inference makes
    of it (the class itself stays: an unnumbered extra vertebra keeps it)."""
    out: list[str] = []
    for k in structures:
        if k == "vertebrae_lumbar":
            out += list(anatomy.group_members(k))
        out.append(k)
    return out


def reference_for(labels: LabelMap, structures: Sequence[str]) -> tuple[LabelMap, list[str]]:
    """A reference label map to score a model of ``structures`` against, and the keys to
    score: finer reference structures merged into the model's groups
    (:func:`keep_structures` over :func:`scored_keys`); keys the reference lacks are left
    out of the list."""
    keys = scored_keys(structures)
    ref = keep_structures(labels, keys)
    have = set(ref.structures.values())
    return ref, [k for k in keys if k in have]


def source_missing(labels: LabelMap, structures: Sequence[str]) -> list[str]:
    """Requested keys the label map names neither itself nor through group members."""
    have = set(labels.structures.values())
    return [k for k in structures
            if k not in have and not have.intersection(anatomy.group_members(k))]


def open_dataset(root: str | os.PathLike[str] | None, layout: str,
                 structures: Sequence[str] | None = None, **kwargs: Any) -> Sequence[TrainingCase]:
    """A dataset by layout name: ``totalseg``, ``images-labels`` (synthetic: see train)."""
    if layout == "totalseg":
        return TotalSegmentatorDataset(root, structures, **kwargs)  # type: ignore[arg-type]
    if layout == "images-labels":
        return ImagesLabelsDataset(root, structures, **kwargs)  # type: ignore[arg-type]
    raise InputError(f"Unknown dataset layout '{layout}': use totalseg, images-labels or "
                     "synthetic.")
