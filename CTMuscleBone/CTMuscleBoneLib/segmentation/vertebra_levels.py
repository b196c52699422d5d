"""Number the lumbar vertebrae of a segmentation from the sacrum upward (L5, L4, ...).

A 2-D axial model cannot tell L2 from L3: it labels every lumbar vertebra with one
class, ``vertebrae_lumbar`` (label 11). :func:`number_lumbar_vertebrae` splits that
class into vertebrae and gives each its level (canonical labels 6..10 for L1..L5). Pure
numpy / scipy on label arrays; works in any storage orientation (LPS, RAS, permuted,
oblique): every distance is measured in millimetres along the patient's superior axis
(LPS +z), found from the grid's direction matrix.

Steps
-----
1. **Components.** 26-connected components of the lumbar class.
2. **Specks.** A component under ``min_volume_cm3`` that does not touch the edge of the
   field of view is a speck: its voxels go to the nearest vertebra when one is within
   ``join_distance_mm``, else to background. A component touching the edge is a vertebra
   cut by the field of view and is kept down to a tenth of that volume.
3. **Off the column.** A piece whose centre lies more than ``max_off_axis_mm`` from the
   column's axis (the median axial centre of the pieces at least half as large as the
   largest) is not a
   lumbar vertebra: it goes to background, with a warning.
4. **Side by side pieces** whose superior-inferior ranges overlap by more than half the
   smaller one's height are one vertebra (e.g. a detached transverse process).
5. **Merged vertebrae.** Adjacent vertebrae may touch through segmentation errors or
   the facet joints. A piece taller than ``split_ratio`` x the reference height (the
   25th percentile of the heights of the pieces not cut by the field of view, or
   :data:`TYPICAL_VERTEBRA_HEIGHT_MM` when fewer than two) is cut at the minimum of its
   axial cross-section area along the superior axis (the disc), by a plane
   perpendicular to that axis, at least half a reference height from either end;
   repeated until no piece is too tall.
6. **Numbering from the sacrum**, inferior to superior (rules below).

Numbering rules (each warning names the problem and what the reviewer should do):

* **5 vertebrae above a sacrum:** L5, L4, L3, L2, L1.
* **Fewer than 5, the top one touching the superior edge of the field of view:** L5
  upward; the missing levels are outside the field of view (a note, no warning).
* **Fewer than 5, not truncated** (4 lumbar vertebrae, e.g. sacralisation of L5): L5
  upward, with a warning that numbering from the sacrum assumes 5 lumbar vertebrae
  (transitional anatomy): verify the levels.
* **More than 5** (6 lumbar-type vertebrae, e.g. lumbarisation of S1): the lowest five
  are L5..L1; the others stay ``vertebrae_lumbar`` (not measured), with the warning
  "six lumbar-type vertebrae".
* **No sacrum**, or a sacrum that does not reach up to the lowest vertebra (more than
  ``max_sacrum_gap_mm`` of empty space, e.g. the sacrum cut off by the field of view):
  the levels cannot be numbered; every vertebra stays ``vertebrae_lumbar``, with a
  warning saying so and that the levels can be labelled by hand.
* **A gap in the column** (a level missing inside the field of view): two neighbours
  separated by more empty space than the median vertebra height (a disc is much
  thinner than a vertebra), i.e. a centre distance of about twice the usual one. The
  numbering skips ``round(distance / pitch) - 1`` levels (at least one), ``pitch``
  being the median centre distance of the neighbours without a gap, and warns.
* A piece whose centre lies at or below the top of the sacrum is not numbered (warning).

The thresholds are this project's unvalidated defaults, chosen from typical adult
lumbar dimensions (vertebral body height about 25-30 mm, discs about 10 mm: orders of
magnitude, not values from a cited population study) and checked only on the synthetic
phantoms (``Testing/test_vertebra_levels.py``).

Limitation: when the column is cut by the field of view the number of lumbar vertebrae
is unknown, so transitional anatomy (4 or 6) then shifts the levels without a warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..anatomy import BY_KEY
from ..errors import InputError
from ..fov import border_faces
from ..image import Geometry, LabelMap, mask_bounding_box

LUMBAR_KEY = "vertebrae_lumbar"
SACRUM_KEY = "sacrum"
#: Level names from superior to inferior; canonical label values 6..10 (anatomy table).
LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")

#: Smallest lumbar component kept as a vertebra (cm3) when it does not touch the edge of
#: the field of view. Unvalidated default: a tenth of a small adult lumbar vertebra
#: (body alone about 20-40 cm3); anything smaller is a segmentation speck.
MIN_VOLUME_CM3 = 2.0
#: A speck within this distance (mm) of a vertebra joins it, else it becomes background.
#: Unvalidated default (about two voxels of a clinical CT).
JOIN_DISTANCE_MM = 5.0
#: Superior-inferior extent (mm) of one lumbar vertebra used as the reference height when
#: fewer than two whole vertebrae are in the image. Unvalidated default: body about
#: 25-30 mm plus the articular processes.
TYPICAL_VERTEBRA_HEIGHT_MM = 35.0
#: A piece taller than this many reference heights holds merged vertebrae and is split.
#: Unvalidated default: two vertebrae and a disc are > 2 heights, one vertebra is 1.
SPLIT_RATIO = 1.5
#: Largest empty space (mm) between the top of the sacrum and the lowest vertebra for
#: that vertebra to be L5. Unvalidated default: the L5/S1 disc is about 10-15 mm; a
#: missing L5 would leave a vertebra and two discs (> 45 mm).
MAX_SACRUM_GAP_MM = 20.0
#: Largest axial distance (mm) of a vertebra's centre from the column's axis (the median
#: centre of the pieces). Unvalidated default, wide enough for scoliosis and lordosis.
MAX_OFF_AXIS_MM = 60.0

_SUPERIOR = np.array([0.0, 0.0, 1.0])  # LPS +z


@dataclass(frozen=True)
class Vertebra:
    """One vertebra found in the lumbar class.

    Attributes
    ----------
    key : str
        ``vertebrae_L1`` .. ``vertebrae_L5``, or ``vertebrae_lumbar`` when not numbered.
    level : str or None
        ``'L1'`` .. ``'L5'``; None when not numbered.
    label_value : int
        Its label value in the output array.
    centre_mm : tuple of float, (3,)
        Centroid, LPS millimetres.
    height_mm : float
        Extent along the patient's superior axis, mm (voxel edges included).
    volume_cm3 : float
    faces : tuple of str
        Faces of the field of view it touches (``('superior',)`` when cut at the top).
    split : bool
        It came from splitting merged vertebrae.
    """

    key: str
    level: str | None
    label_value: int
    centre_mm: tuple[float, float, float]
    height_mm: float
    volume_cm3: float
    faces: tuple[str, ...] = ()
    split: bool = False


@dataclass
class VertebraLevels:
    """What :func:`number_lumbar_vertebrae` found and did.

    Attributes
    ----------
    numbered : bool
        Levels were assigned (False: no vertebra, or no usable sacrum).
    method : str
        One sentence: how the levels were assigned, or why not.
    levels : tuple of str
        Levels assigned, inferior to superior (``('L5', 'L4', ...)``).
    vertebrae : list of Vertebra
        Inferior to superior.
    warnings : list of str
        For the reviewer: each names the problem and what to do.
    notes : list of str
        Information (truncation by the field of view, splits, specks removed).
    """

    numbered: bool
    method: str
    levels: tuple[str, ...] = ()
    vertebrae: list[Vertebra] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (floats rounded to 0.1 mm / 0.01 cm3)."""
        d = asdict(self)
        for v in d["vertebrae"]:
            v["centre_mm"] = [round(float(c), 1) for c in v["centre_mm"]]
            v["height_mm"] = round(float(v["height_mm"]), 1)
            v["volume_cm3"] = round(float(v["volume_cm3"]), 2)
            v["faces"] = list(v["faces"])
        d["levels"] = list(d["levels"])
        return d


@dataclass
class _Piece:
    """A candidate vertebra: indices into the voxel list of the lumbar class."""

    idx: np.ndarray
    faces: tuple[str, ...] = ()
    split: bool = False


def number_lumbar_vertebrae(
    label_array: np.ndarray,
    geometry: Geometry,
    *,
    lumbar_value: int = BY_KEY[LUMBAR_KEY].label_value,
    sacrum_value: int | None = BY_KEY[SACRUM_KEY].label_value,
    min_volume_cm3: float = MIN_VOLUME_CM3,
    join_distance_mm: float = JOIN_DISTANCE_MM,
    split_ratio: float = SPLIT_RATIO,
    max_sacrum_gap_mm: float = MAX_SACRUM_GAP_MM,
    max_off_axis_mm: float = MAX_OFF_AXIS_MM,
) -> tuple[np.ndarray, VertebraLevels]:
    """Split the lumbar class into vertebrae and number them from the sacrum upward.

    See the module docstring for the steps and the numbering rules.

    Parameters
    ----------
    label_array : np.ndarray of int, (n0, n1, n2)
        Label map in ITK index order with canonical anatomy values; not modified.
    geometry : Geometry
        Its voxel grid (any orientation); ``geometry.shape == label_array.shape``.
    lumbar_value : int
        Label value of the unnumbered lumbar class (default 11, ``vertebrae_lumbar``).
    sacrum_value : int or None
        Label value of the sacrum (default 5); None when the map has no sacrum class.
    min_volume_cm3, join_distance_mm, split_ratio, max_sacrum_gap_mm, max_off_axis_mm
        Thresholds (unvalidated defaults: see the module constants).

    Returns
    -------
    labels : np.ndarray, (n0, n1, n2)
        A new array (same dtype): lumbar voxels carry 6..10 (L1..L5) or stay
        ``lumbar_value`` (not numbered); specks are background or joined to a vertebra.
        Other labels are unchanged.
    report : VertebraLevels
    """
    arr = np.asarray(label_array)
    if tuple(arr.shape) != geometry.shape:
        raise InputError(f"The label array's shape {arr.shape} differs from its geometry's "
                         f"{geometry.shape}; pass the geometry of this label map.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError("Vertebra numbering needs an integer label map.")
    out = arr.copy()
    mask = arr == lumbar_value
    box = mask_bounding_box(mask)
    if box is None:
        return out, VertebraLevels(False, "no lumbar vertebra in the label map")
    from scipy import ndimage

    sub = mask[box]
    comp, n_comp = ndimage.label(sub, structure=np.ones((3, 3, 3), bool))
    local = np.nonzero(sub)
    starts = np.array([b.start for b in box])
    gidx = np.stack(local, axis=1) + starts  # (N, 3) global voxel indices
    pos = geometry.index_to_physical(gidx)  # (N, 3) LPS mm
    z = pos @ _SUPERIOR
    voxel_cm3 = geometry.voxel_volume_cm3
    # extent of one voxel along the superior axis (voxel edges, mm)
    z_extent = float(np.abs(geometry.direction.T @ _SUPERIOR) @ np.asarray(geometry.spacing_mm))
    sup_axis, _ = geometry.axis_for("superior")
    bin_mm = float(geometry.spacing_mm[sup_axis])
    cid = comp[local]
    order = np.argsort(cid, kind="stable")
    bounds = np.cumsum(np.bincount(cid, minlength=n_comp + 1))
    pieces = [_Piece(order[bounds[c - 1]:bounds[c]]) for c in range(1, n_comp + 1)]

    def faces_of(idx: np.ndarray) -> tuple[str, ...]:
        g = gidx[idx]
        lo, hi = g.min(axis=0), g.max(axis=0) + 1
        m = np.zeros(tuple(hi - lo), bool)
        m[tuple((g - lo).T)] = True
        return border_faces(m, geometry, tuple(slice(int(a), int(b))
                                               for a, b in zip(lo, hi, strict=True)))

    def height(idx: np.ndarray) -> float:
        return float(z[idx].max() - z[idx].min()) + z_extent

    notes: list[str] = []
    warnings: list[str] = []

    # -- 2. specks ---------------------------------------------------------------------
    kept: list[_Piece] = []
    specks: list[_Piece] = []
    for p in pieces:
        p.faces = faces_of(p.idx)
        vol = p.idx.size * voxel_cm3
        limit = min_volume_cm3 / 10.0 if p.faces else min_volume_cm3
        (kept if vol >= limit else specks).append(p)

    # -- 3. pieces off the column -----------------------------------------------------
    off: list[_Piece] = []
    merged = kept
    if len(merged) > 1:
        vols = np.array([p.idx.size for p in merged])
        big = [p for p, v in zip(merged, vols, strict=True) if v >= 0.5 * vols.max()]
        axis_xy = np.median([pos[p.idx].mean(axis=0)[:2] for p in big], axis=0)
        col = []
        for p in merged:
            d = float(np.linalg.norm(pos[p.idx].mean(axis=0)[:2] - axis_xy))
            (off if d > max_off_axis_mm else col).append(p)
        merged = col
    for p in off:
        c = pos[p.idx].mean(axis=0)
        warnings.append(
            f"A lumbar-vertebra segment of {p.idx.size * voxel_cm3:.1f} cm3 at LPS "
            f"({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f}) mm lies more than {max_off_axis_mm:.0f} mm "
            "from the spinal column and was removed from the labels: check the "
            "segmentation there.")

    # -- 4. side-by-side pieces are one vertebra --------------------------------------
    merged.sort(key=lambda p: -p.idx.size)
    pieces, merged = merged, []
    for p in pieces:
        zp0, zp1 = z[p.idx].min(), z[p.idx].max()
        for q in merged:
            zq0, zq1 = z[q.idx].min(), z[q.idx].max()
            overlap = min(zp1, zq1) - max(zp0, zq0) + z_extent
            if overlap > 0.5 * min(zp1 - zp0 + z_extent, zq1 - zq0 + z_extent):
                q.idx = np.concatenate([q.idx, p.idx])
                q.faces = tuple(sorted(set(q.faces) | set(p.faces)))
                break
        else:
            merged.append(p)

    # -- 5. split merged vertebrae ----------------------------------------------------
    whole = [height(p.idx) for p in merged if not p.faces]
    ref_h = (float(np.percentile(whole, 25)) if len(whole) >= 2
             else TYPICAL_VERTEBRA_HEIGHT_MM)
    todo, final = list(merged), []
    n_split = 0
    while todo:
        p = todo.pop()
        cut = _cut_height(z[p.idx], ref_h, bin_mm) if height(p.idx) > split_ratio * ref_h \
            else None
        if cut is None:
            final.append(p)
            continue
        n_split += 1
        low = z[p.idx] < cut
        for part in (p.idx[low], p.idx[~low]):
            todo.append(_Piece(part, faces_of(part), True))
    if n_split:
        notes.append(f"{n_split} place(s) where neighbouring lumbar vertebrae touched in the "
                     "segmentation were split at the narrowest cross-section (the disc).")

    # -- labels: vertebrae by their own index, specks joined or removed ---------------
    final.sort(key=lambda p: float(z[p.idx].mean()))
    owner = np.full(z.size, -1, dtype=np.int64)  # index into final, -1: none
    for i, p in enumerate(final):
        owner[p.idx] = i
    if specks:  # (pieces off the column keep owner -1: background)
        n_joined = _join_specks(owner, pos, np.concatenate([p.idx for p in specks]),
                                join_distance_mm)
        vol = sum(p.idx.size for p in specks) * voxel_cm3
        notes.append(f"{len(specks)} lumbar-vertebra speck(s) under {min_volume_cm3:g} cm3 "
                     f"({vol:.2f} cm3 in all): {n_joined} voxel(s) joined the nearest "
                     "vertebra, the rest set to background.")
    top_cut = bool(final) and ("superior" in final[-1].faces or any(
        "superior" in p.faces and float(z[p.idx].mean()) > float(z[final[-1].idx].mean())
        for p in specks))

    # -- 6. numbering -----------------------------------------------------------------
    levels_of = [None] * len(final)  # level number 1..5 or None
    method, numbered = _number(final, z, z_extent, arr, geometry, sacrum_value,
                               max_sacrum_gap_mm, top_cut, levels_of, warnings, notes,
                               height)

    vertebrae: list[Vertebra] = []
    values = np.full(len(final) + 1, lumbar_value, dtype=np.int64)
    values[-1] = 0  # owner -1: background
    for i, p in enumerate(final):
        lvl = levels_of[i]
        key = f"vertebrae_L{lvl}" if lvl is not None else LUMBAR_KEY
        values[i] = BY_KEY[key].label_value
        c = pos[owner == i].mean(axis=0)
        vertebrae.append(Vertebra(key, f"L{lvl}" if lvl is not None else None,
                                  int(values[i]), tuple(float(v) for v in c),
                                  height(np.flatnonzero(owner == i)),
                                  float((owner == i).sum() * voxel_cm3), p.faces, p.split))
    out[tuple(gidx.T)] = values[owner].astype(out.dtype)
    levels = tuple(v.level for v in vertebrae if v.level is not None)
    return out, VertebraLevels(numbered, method, levels, vertebrae, warnings, notes)


def number_label_map(labels: LabelMap, **kwargs) -> tuple[LabelMap, VertebraLevels]:
    """:func:`number_lumbar_vertebrae` on a :class:`LabelMap`.

    Returns a new label map (the input is not modified; returned as it is when it holds
    no lumbar-class voxel): the level keys present are added to ``structures`` and the
    report's warnings appended to ``notes`` (they reach the measurement's warnings);
    and the report.
    """
    from dataclasses import replace

    lumbar = labels.value_of(LUMBAR_KEY)
    if lumbar is None or lumbar not in labels.boxes():
        return labels, VertebraLevels(False, "no lumbar vertebra in the label map")
    sacrum = labels.value_of(SACRUM_KEY)
    array, report = number_lumbar_vertebrae(labels.array, labels.geometry, lumbar_value=lumbar,
                                            sacrum_value=sacrum, **kwargs)
    structures = dict(labels.structures)
    for v in report.vertebrae:
        structures[v.label_value] = v.key
    return replace(labels, array=array, structures=structures,
                   notes=tuple(labels.notes) + tuple(report.warnings)), report


def _cut_height(zs: np.ndarray, ref_h: float, bin_mm: float) -> float | None:
    """Superior coordinate (mm) of the narrowest axial cross-section of a piece.

    Searched at least ``ref_h / 2`` from either end; None when there is no room.
    """
    z0 = float(zs.min())
    edges = np.arange(z0 - bin_mm / 2, float(zs.max()) + bin_mm, bin_mm)
    counts, _ = np.histogram(zs, bins=edges)
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = (centres >= z0 + ref_h / 2) & (centres <= float(zs.max()) - ref_h / 2)
    if not ok.any():
        return None
    c = np.where(ok, counts, np.iinfo(np.int64).max)
    low = np.flatnonzero(c == c.min())
    # the middle of the narrowest run (a bridge spans several bins)
    return float(centres[low[len(low) // 2]])


def _join_specks(owner: np.ndarray, pos: np.ndarray, speck: np.ndarray,
                 join_distance_mm: float) -> int:
    """Give each speck voxel the vertebra of the nearest vertebra voxel within
    ``join_distance_mm`` (physical distance between voxel centres), in place.

    ``owner``: (N,) vertebra index of each lumbar voxel (-1: none); ``pos``: (N, 3) LPS
    mm; ``speck``: indices of the speck voxels. Returns how many voxels joined.
    """
    has = np.flatnonzero(owner >= 0)
    if speck.size == 0 or has.size == 0:
        return 0
    from scipy.spatial import cKDTree

    dist, near = cKDTree(pos[has]).query(pos[speck], distance_upper_bound=join_distance_mm)
    close = np.isfinite(dist)
    owner[speck[close]] = owner[has[near[close]]]
    return int(close.sum())


def _number(final: list[_Piece], z: np.ndarray, z_extent: float, arr: np.ndarray,
            geometry: Geometry, sacrum_value: int | None, max_sacrum_gap_mm: float,
            top_cut: bool, levels_of: list, warnings: list[str], notes: list[str],
            height) -> tuple[str, bool]:
    """Assign level numbers (1..5) to ``final`` (inferior to superior) into ``levels_of``."""
    if not final:
        return "no lumbar vertebra left after removing specks", False
    manual = ("They stay 'Lumbar vertebra (level not assigned)' and get no per-level "
              "results; label the levels by hand (vertebrae_L1 .. vertebrae_L5) if you know "
              "them, then measure again.")
    smask = (arr == sacrum_value) if sacrum_value is not None else None
    sbox = mask_bounding_box(smask) if smask is not None else None
    if sbox is None:
        warnings.append("The lumbar vertebrae were not numbered: the label map has no "
                        "sacrum, and the levels are counted from the sacrum. " + manual)
        return "not numbered: no sacrum", False
    sidx = np.argwhere(smask[sbox]) + np.array([b.start for b in sbox])
    sacrum_top = float((geometry.index_to_physical(sidx) @ _SUPERIOR).max()) + z_extent / 2
    centres = [float(z[p.idx].mean()) for p in final]
    first = next((i for i, c in enumerate(centres) if c > sacrum_top), None)
    below = first if first is not None else len(final)
    if below:
        warnings.append(f"{below} lumbar-vertebra segment(s) lie at or below the top of the "
                        "sacrum and were not numbered: check the segmentation of the "
                        "lumbosacral junction.")
    if first is None:
        warnings.append("The lumbar vertebrae were not numbered: none lies above the "
                        "sacrum. " + manual)
        return "not numbered: no vertebra above the sacrum", False
    bottom = float(z[final[first].idx].min()) - z_extent / 2
    gap = bottom - sacrum_top
    if gap > max_sacrum_gap_mm:
        warnings.append(
            f"The lumbar vertebrae were not numbered: the sacrum does not reach up to the "
            f"lowest lumbar vertebra ({gap:.0f} mm of empty space; the L5/S1 disc is about "
            "10-15 mm), so the sacrum is cut off or a level is missing and the levels cannot "
            "be counted from it. " + manual)
        return "not numbered: the sacrum does not reach the lowest lumbar vertebra", False

    col = list(range(first, len(final)))
    heights = [height(final[i].idx) for i in col if not final[i].faces] or \
        [height(final[i].idx) for i in col]
    med_h = float(np.median(heights))
    dist = [centres[b] - centres[a] for a, b in zip(col[:-1], col[1:], strict=True)]
    empty = [float(z[final[b].idx].min() - z[final[a].idx].max()) - z_extent
             for a, b in zip(col[:-1], col[1:], strict=True)]
    is_gap = [e > med_h for e in empty]
    normal = [d for d, g in zip(dist, is_gap, strict=True) if not g]
    pitch = float(np.median(normal)) if normal else None
    level = 5
    levels_of[col[0]] = 5
    for k, i in enumerate(col[1:]):
        skip = 0
        if is_gap[k]:
            skip = max(1, round(dist[k] / pitch) - 1) if pitch else 1
            below_name = f"L{level}" if level >= 1 else "the highest numbered level"
            warnings.append(
                f"Gap in the lumbar column above {below_name} ({dist[k]:.0f} mm between "
                f"vertebra centres, {empty[k]:.0f} mm empty): {skip} level(s) missing inside "
                "the field of view (not segmented). The numbering skips them; check the "
                "segmentation at that level and verify the levels.")
        level -= 1 + skip
        levels_of[i] = level if level >= 1 else None
    span = 5 - level + 1  # levels from L5 to the top vertebra, gaps included
    extra = sum(1 for i in col if levels_of[i] is None)
    if span > 5:
        words = {6: "Six", 7: "Seven", 8: "Eight"}
        n = words.get(span, str(span))
        warnings.append(
            f"{n} lumbar-type vertebrae above the sacrum: the lowest five were numbered "
            f"L5 .. L1 from the sacrum; the {extra} above stay 'Lumbar vertebra (level not "
            "assigned)' and are not measured. Transitional anatomy (a lumbarised S1 or a "
            "rib-less T12): verify the levels (count from the last rib-bearing vertebra) "
            "and relabel by hand if needed.")
    elif span < 5:
        if top_cut:
            missing = ", ".join(f"L{n}" for n in range(1, 6 - span))
            notes.append(f"The lumbar column continues beyond the superior edge of the field "
                         f"of view: {missing} not in the image.")
        else:
            warnings.append(
                f"Only {span} lumbar vertebrae above the sacrum and the column ends inside "
                "the field of view: numbering from the sacrum assumes 5 lumbar vertebrae, "
                "so with transitional anatomy (e.g. a sacralised L5) the levels are off. "
                "Verify the levels (count from the last rib-bearing vertebra) and relabel "
                "by hand if needed.")
    return "numbered from the sacrum upward (the lowest lumbar vertebra above it is L5)", True
