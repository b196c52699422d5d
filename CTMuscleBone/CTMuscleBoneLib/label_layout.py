"""Anatomical layout of a label map: are its structures where their names put them?

A label map read with the wrong table (a TotalSegmentator v1 map read with v2 ids), or
whose header mirrors the patient's left and right, names real structures wrongly while
every voxel keeps a plausible CT number: a thoracic vertebra read as ``vertebrae_L1``
is still bone. Two relations that hold in every patient catch such maps from the
positions of the labels alone:

left and right
    A structure named ``*_left`` lies towards the patient's left of its ``*_right``
    partner: its centroid's LPS x (+x towards the patient's left) exceeds the
    partner's by at least :data:`MIN_LEFT_RIGHT_SEPARATION_MM`.
vertebral order
    Vertebrae named by level (``vertebrae_C1`` .. ``vertebrae_L6``, ``sacrum`` /
    ``vertebrae_S1`` last) are ordered from head to feet: each centroid lies superior
    (LPS +z) to the centroid of the next lower level present.

The relations use centroids in patient coordinates, so they hold in any storage
orientation, spacing and patient position (supine, prone, feet first) that the image
header describes correctly. :func:`check_layout` counts the relations that could be
checked and lists those that fail; :mod:`CTMuscleBoneLib.io_labels` turns that into a
note, a refusal or (for an unversioned TotalSegmentator map) the other id table.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .anatomy import contralateral
from .errors import InputError
from .image import Geometry, LabelMap

#: Smallest left-right distance (mm, LPS x) between the centroids of a ``*_left`` and
#: ``*_right`` pair for the pair to count as laid out anatomically. Project default
#: (unvalidated): the closest pairs TotalSegmentator labels (autochthonous back
#: muscles, common iliac vessels) have centroids several centimetres apart in adults,
#: while two structures of one side read as a pair (v1 ``rib_right_6`` / ``rib_right_7``
#: read as v2 ``femur_left`` / ``femur_right``) lie within a few millimetres.
MIN_LEFT_RIGHT_SEPARATION_MM = 10.0

_REGIONS = {"C": 0, "T": 100, "L": 200, "S": 300}
_VERTEBRA = re.compile(r"^vertebrae?_([ctls])(\d{1,2})$")


def vertebra_rank(name: str) -> int | None:
    """Position of a vertebra name from head to feet, or None for other names.

    ``vertebrae_C1`` < ... < ``vertebrae_T12`` < ``vertebrae_L1`` < ... <
    ``vertebrae_S1`` = ``sacrum``. Case-insensitive; TotalSegmentator and CTMuscleBone
    names.
    """
    n = name.strip().lower()
    if n == "sacrum":
        return _REGIONS["S"] + 1
    m = _VERTEBRA.match(n)
    if m is None:
        return None
    return _REGIONS[m.group(1).upper()] + int(m.group(2))


#: Voxel pitch (mm) the centroids are sampled at by default: every voxel on grids of 1 mm
#: and coarser along an axis, every 2nd on 0.5-1 mm, ... A centroid then differs from the
#: full-grid one by well under the pitch, far below the 10 mm left-right margin, and the
#: pass over a 512 x 375 x 580 grid at 0.8 x 0.8 x 1 mm costs an eighth
#: (``benchmarks/bench_label_layout.py``). Project choice.
CENTROID_PITCH_MM = 2.0


def label_centroids_mm(array: np.ndarray, geometry: Geometry,
                       pitch_mm: float | None = CENTROID_PITCH_MM) -> dict[int, np.ndarray]:
    """Centroid of every nonzero label value in patient coordinates.

    Parameters
    ----------
    array : np.ndarray of int, (n0, n1, n2)
        Label map (0 = background), ITK index order.
    geometry : Geometry
        Its grid.
    pitch_mm : float or None
        Sample every ``max(1, floor(pitch_mm / spacing))``-th voxel along each axis (see
        :data:`CENTROID_PITCH_MM`); None: every voxel (exact centroids). A label with no
        voxel on the sampled grid (a speck thinner than the pitch) has no centroid.

    Returns
    -------
    dict[int, np.ndarray of float, (3,)]
        Label value -> centroid, LPS mm.

    Notes
    -----
    One pass over the (sampled) volume, slab by slab along axis 0 (three
    ``np.bincount`` per slab), so no coordinate array of the volume's size is made.
    """
    a = np.asarray(array)
    if a.ndim != 3 or a.size == 0:
        raise ValueError(f"expected a non-empty 3-D label array, got shape {a.shape}")
    step = np.ones(3, dtype=np.int64)
    if pitch_mm is not None:
        step = np.maximum(1, np.floor(pitch_mm / np.asarray(geometry.spacing_mm)
                                      + 1e-9)).astype(np.int64)
        a = a[::step[0], ::step[1], ::step[2]]
    hi = int(a.max())
    if hi <= 0:
        return {}
    n0, n1, n2 = a.shape
    i1, i2 = np.meshgrid(np.arange(n1, dtype=np.float64), np.arange(n2, dtype=np.float64),
                         indexing="ij")
    i1, i2 = i1.ravel(), i2.ravel()
    count = np.zeros(hi + 1, dtype=np.float64)
    s0 = np.zeros(hi + 1, dtype=np.float64)
    s1 = np.zeros(hi + 1, dtype=np.float64)
    s2 = np.zeros(hi + 1, dtype=np.float64)
    for k in range(n0):
        slab = a[k].ravel()
        if not slab.any():
            continue
        c = np.bincount(slab, minlength=hi + 1)
        count += c
        s0 += k * c
        s1 += np.bincount(slab, weights=i1, minlength=hi + 1)
        s2 += np.bincount(slab, weights=i2, minlength=hi + 1)
    values = np.flatnonzero(count[1:]) + 1
    if values.size == 0:
        return {}
    index = (np.stack([s0[values], s1[values], s2[values]], axis=1) / count[values, None]
             * step[None, :])
    points = geometry.index_to_physical(index)
    return {int(v): points[i] for i, v in enumerate(values)}


@dataclass(frozen=True)
class LayoutViolation:
    """One relation a label map breaks.

    Attributes
    ----------
    kind : {'left-right', 'vertebral order'}
    first, second : str
        The names: the ``*_left`` and ``*_right`` structure, or the upper and the lower
        vertebra level.
    offset_mm : float
        Left-right: how far ``first`` lies towards the patient's left of ``second``
        (LPS x difference; negative = to the right). Vertebral order: how far the upper
        level lies superior to the lower one (LPS z difference; negative = below it).
    """

    kind: str
    first: str
    second: str
    offset_mm: float

    @property
    def mirrored(self) -> bool:
        """A left-right pair with the left structure clearly on the patient's right."""
        return self.kind == "left-right" and self.offset_mm <= -MIN_LEFT_RIGHT_SEPARATION_MM

    def describe(self) -> str:
        if self.kind == "left-right":
            side = "left" if self.offset_mm >= 0 else "right"
            only = "only " if self.offset_mm >= 0 else ""
            return (f"'{self.first}' lies {only}{abs(self.offset_mm):.0f} mm to the "
                    f"patient's {side} of '{self.second}'")
        where = "above" if self.offset_mm >= 0 else "below"
        return (f"'{self.first}' lies {abs(self.offset_mm):.0f} mm {where} "
                f"'{self.second}'")


@dataclass
class LayoutCheck:
    """Result of :func:`check_layout`.

    Attributes
    ----------
    n_relations : int
        Relations that could be checked (left-right pairs present, adjacent vertebra
        levels present).
    n_left_right : int
        Of these, left-right pairs.
    violations : list of LayoutViolation
    """

    n_relations: int = 0
    n_left_right: int = 0
    violations: list[LayoutViolation] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.violations

    @property
    def mirrored(self) -> bool:
        """Every left-right pair (at least two) has its left structure on the right."""
        lr = [v for v in self.violations if v.kind == "left-right"]
        return self.n_left_right >= 2 and len(lr) == self.n_left_right and all(
            v.mirrored for v in lr)

    def describe(self, limit: int = 3) -> str:
        shown = "; ".join(v.describe() for v in self.violations[:limit])
        more = (f"; and {len(self.violations) - limit} more"
                if len(self.violations) > limit else "")
        return f"{shown}{more}"


def check_layout(centroids_by_name: Mapping[str, np.ndarray]) -> LayoutCheck:
    """Check the left-right and head-to-feet relations of named centroids.

    Parameters
    ----------
    centroids_by_name : mapping str -> np.ndarray of float, (3,)
        Structure name (TotalSegmentator, CTMuscleBone or any ``*_left`` / ``*_right``
        / ``vertebrae_<level>`` name) -> centroid, LPS mm.

    Returns
    -------
    LayoutCheck
    """
    cents = {k.strip().lower(): np.asarray(v, dtype=float) for k, v in
             centroids_by_name.items()}
    shown = {k.strip().lower(): k.strip() for k in centroids_by_name}  # names as given
    out = LayoutCheck()
    for name in sorted(cents):
        partner = contralateral(name)
        if not name.endswith("_left") or partner not in cents:
            continue
        out.n_relations += 1
        out.n_left_right += 1
        dx = float(cents[name][0] - cents[partner][0])
        if dx < MIN_LEFT_RIGHT_SEPARATION_MM:
            out.violations.append(LayoutViolation("left-right", shown[name], shown[partner],
                                                  dx))
    # one centroid per level (sacrum and vertebrae_S1 share one: their mean)
    levels: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, c in cents.items():
        r = vertebra_rank(name)
        if r is not None:
            levels.setdefault(r, []).append((name, c))
    ranks = sorted(levels)
    for upper, lower in zip(ranks, ranks[1:], strict=False):
        zu = float(np.mean([c[2] for _, c in levels[upper]]))
        zl = float(np.mean([c[2] for _, c in levels[lower]]))
        out.n_relations += 1
        if zu <= zl:
            out.violations.append(LayoutViolation(
                "vertebral order", shown[levels[upper][0][0]], shown[levels[lower][0][0]],
                zu - zl))
    return out


def check_named_layout(centroids: Mapping[int, np.ndarray],
                       names: Mapping[int, str]) -> LayoutCheck:
    """:func:`check_layout` of label values named by a table.

    Values the table does not name are skipped; two values with one name (a table that
    repeats a name) share the centroid of the first.
    """
    by_name: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for v, c in sorted(centroids.items()):
        n = names.get(v)
        if n and n.strip().lower() not in seen:
            seen.add(n.strip().lower())
            by_name[n.strip()] = c
    return check_layout(by_name)


def apply_layout(labels: LabelMap) -> tuple[LabelMap, list[str]]:
    """Leave out structures that are not where their names put them; refuse a mirror.

    Parameters
    ----------
    labels : LabelMap
        Structures named by anatomy keys (``femur_left``, ``vertebrae_L1``, ...).

    Returns
    -------
    labels : LabelMap
        Without the structures of every broken relation (both of a left-right pair,
        both levels of a vertebral-order pair): their values move to ``unknown``
        (named "<key> (left out: <reason>)") and are not measured, since a side or a
        level named wrongly would put a correct number under the wrong name. The input
        is returned unchanged when the layout is anatomical.
    warnings : list of str
        One per broken relation (also added to ``labels.notes``).

    Raises
    ------
    InputError
        When every left-right pair (at least two) is mirrored: the label map's (or the
        CT's) header swaps the patient's left and right, or the names do.
    """
    centroids = label_centroids_mm(labels.array, labels.geometry)
    check = check_named_layout(centroids, labels.structures)
    if check.consistent:
        return labels, []
    if check.mirrored:
        raise InputError(
            f"Left and right are mirrored in the label map ({check.describe()}): every "
            "structure named left lies on the patient's right. The label map's or the CT's "
            "header swaps left and right (check the orientation, e.g. a NIfTI written with "
            "a wrong qform/sform), or the left/right names are swapped. Fix the header or "
            "the names and run again; a side-specific value would otherwise be reported "
            "for the other side.")
    by_key = {k: v for v, k in labels.structures.items()}
    structures = dict(labels.structures)
    unknown = dict(labels.unknown)
    warnings: list[str] = []
    for viol in check.violations:
        rule = ("a left structure lies at least "
                f"{MIN_LEFT_RIGHT_SEPARATION_MM:g} mm to the patient's left of its right "
                "partner" if viol.kind == "left-right" else
                "vertebrae are ordered from head to feet")
        for key in (viol.first, viol.second):
            v = by_key.get(key)
            if v is not None and v in structures:
                structures.pop(v)
                unknown[v] = f"{key} (left out: {viol.kind} layout broken)"
        warnings.append(
            f"{viol.first} and {viol.second} left out of the measurements: "
            f"{viol.describe()}, but {rule}. The segment names (or one segment) are "
            "probably wrong: check these segments and their names.")
    changes: dict[str, object] = {"structures": structures, "unknown": unknown,
                                  "notes": tuple(labels.notes) + tuple(warnings)}
    if labels.overlays:
        changes["overlays"] = {k: m for k, m in labels.overlays.items()
                               if k in structures.values()}
    return dataclasses.replace(labels, **changes), warnings
