"""Vertebral body heights along the body's own axes and Genant-style fracture grading.

Everything is measured on the vertebral **body** cut from the whole-vertebra label by
:mod:`.body_separation`, in physical millimetres, so the voxel grid's orientation does
not matter.

Heights (:func:`body_heights`)
------------------------------
1. **Endplate surface points.** The body's voxels are grouped into the grid's own
   columns along the array axis closest to the superior axis. The top and bottom voxel
   of each column, moved half a grid step outwards, are points of the upper and lower
   endplate surfaces: the true surface lies within half a step of them
   (:data:`HALF_VOXEL` of the step's extent along the axis).
2. **The body's own axes** (:func:`own_axes`). A plane is fitted to each endplate over
   the central part of the body (normalised radius <= :data:`AXIS_FIT_RADIUS`, clear of
   the rims), robustly (one re-fit without the points further than 2.5 robust SD);
   the superior axis is the normal of the mean of the two planes: the endplate normal
   of a healthy body, the bisector of a wedge. The frame starts from the separation's
   axis (the spine axis through the neighbouring bodies, else patient superior) and is
   refined twice; a change above :data:`MAX_AXIS_CHANGE_DEG` is refused (the
   separation's axis is kept and the call made uncertain).
3. **Anterior and posterior walls** from the **mid-sagittal strip** of the body
   (``|u| <=`` :data:`STRIP_HALF_WIDTH` x half-width): the pedicles join the body
   laterally, so behind the body's posterior wall the strip holds only the spinal canal.
   A wall is where the strip's area profile along the posterior axis falls to half its
   median (seen from outside). Pedicle roots that the separation left on the body's
   posterolateral corners therefore cannot move the posterior wall.
4. **Heights in three bands** of the central :data:`CENTRAL_WIDTH` of the body's width:
   anterior and posterior :data:`WALL_BAND` of the depth inside each wall (at least one
   voxel from it: columns leaving the body through a wall give no endplate point
   there), middle: the centre (+-:data:`MIDDLE_BAND` of depth and width, at least half
   a voxel). In each band a plane is fitted to each endplate's points (robust re-fit
   as in 2); the height is the distance of the two planes at the band's centre. The
   fit averages the voxel staircase of a tilted endplate and ignores single deviant
   columns (Schmorl nodes, osteophytes, label noise). The anterior and posterior
   heights are extrapolated linearly from the band centres to the walls (exact for a
   wedge; no change when the two are equal).
5. **Uncertainty** of each band height: half a voxel along the axis per endplate
   (:data:`HALF_VOXEL`), and the spread of the endplate points about their planes
   (standard error with :data:`COLUMNS_PER_INDEPENDENT` neighbouring columns counted
   as one, because an irregular endplate is smooth over a few columns), in
   quadrature; propagated through the extrapolation and the ratios to first order.

Grading (:func:`assess_fracture`)
---------------------------------
Genant HK, Wu CY, van Kuijk C, Nevitt MC. Vertebral fracture assessment using a
semiquantitative technique. J Bone Miner Res 1993;8:1137-1148: grade 0 < 20 %,
grade 1 (mild) 20-25 %, grade 2 (moderate) 25-40 %, grade 3 (severe) >= 40 % reduction
of anterior, middle and/or posterior height (the primary paper could not be read
here; checked against its description in Wang YXJ, Quant Imaging Med Surg
2019;9:146-150). The reduction is the largest of

* wedge: ``1 - anterior / posterior``;
* biconcave: ``1 - middle / max(anterior, posterior)``;
* crush: ``1 - posterior / reference``, the reference being the mean posterior height
  of the measured neighbouring bodies (one level up and down), when there are any.

Genant's method is a visual, semi-quantitative reading; height ratios are its usual
morphometric approximation.

A grade is **confident** only when the whole height-loss interval (value +- its
propagated uncertainty) lies inside one Genant class; otherwise it is **uncertain**
and the range of grades is named. Impossible geometry - a height that is not finite
or not positive or taller than the body's tallest column, a ratio that differs from
the quotient of its heights, a height loss outside 0-100 % - gives an uncertain call
with the reason ``heights inconsistent`` and no number (:func:`check_invariants`).
Only a confident grade >= 2 takes a vertebra out of the lumbar summaries
(:func:`excludes_from_summaries`).

Every fraction and margin above is this project's default, checked on the synthetic
vertebrae (:mod:`..phantoms.vertebra`) and one real TotalSegmentator case
(docs/lumbar_bmd.md gives the measured errors); none is from a publication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .body_separation import BodySeparation, binned_counts, vertebra_axes

#: Half a voxel step (along the axis) per endplate: the label's boundary resolution.
HALF_VOXEL = 0.5
#: Normalised radius of the central part of the body used for the axis planes.
AXIS_FIT_RADIUS = 0.7
#: Largest change of the superior axis from the separation's axis, degrees (lumbar
#: endplates lie within about 15 degrees of the local spine axis; a 40 % wedge tilts the
#: bisector by about 10 degrees).
MAX_AXIS_CHANGE_DEG = 20.0
#: Half-width of the mid-sagittal strip that finds the walls, fraction of the half-width.
STRIP_HALF_WIDTH = 0.2
#: Central fraction of the body's width whose columns give the heights.
CENTRAL_WIDTH = 0.6
#: Anterior / posterior band, fractions of the depth inside each wall.
WALL_BAND = (0.05, 0.20)
#: Half-size of the middle region, fraction of the depth (along v) and width (along u).
MIDDLE_BAND = 0.05
#: Neighbouring columns counted as one independent endplate sample (project default).
COLUMNS_PER_INDEPENDENT = 4.0
#: A height may exceed the body's tallest column by this factor plus one voxel.
MAX_HEIGHT_FACTOR = 1.15
#: Smallest spread of the points (mm) along u or v for a plane to get a slope there.
MIN_SLOPE_SPAN_MM = 1.0
#: Residual cut of the robust plane re-fit, robust SDs.
ROBUST_CUT_SD = 2.5

KINDS = {
    "anterior/posterior": "wedge",
    "middle/max(anterior,posterior)": "biconcave",
    "posterior/neighbours": "crush",
}
HEIGHTS_INCONSISTENT = "heights inconsistent"


def genant_grade(height_reduction: float) -> int:
    """Genant grade of a fractional height reduction: 0 (< 20 %), 1 (20-25 %),
    2 (25-40 %), 3 (>= 40 %) (Genant et al., J Bone Miner Res 1993;8:1137-1148)."""
    if height_reduction < 0.20:
        return 0
    if height_reduction < 0.25:
        return 1
    if height_reduction < 0.40:
        return 2
    return 3


@dataclass(frozen=True)
class VertebralHeights:
    """Anterior, middle and posterior body heights along the body's own axis, mm.

    Attributes
    ----------
    anterior_mm, middle_mm, posterior_mm : float
        At the anterior wall, the centre and the posterior wall (NaN: not measurable).
    resolution_mm : float
        One voxel step along the body's superior axis, mm.
    anterior_band_mm, posterior_band_mm : float
        Heights at the anterior and posterior band centres (before extrapolation), mm.
    sd_mm : tuple of float, (3,)
        Uncertainty of the anterior band, middle and posterior band heights, mm.
    extrapolation : tuple of float, (2,)
        ``(k_a, k_p)``: anterior = band_a + k_a (band_a - band_p), posterior likewise.
    max_mm : float
        The body's tallest column (distance of the endplate points), mm.
    axis_ok : bool
        False when the body's own axis could not be found (see :func:`own_axes`).
    axis_change_deg : float
        Angle between the body's own axis and the separation's axis, degrees.
    depth_mm : float
        Distance of the anterior and posterior walls (mid-sagittal strip), mm.
    notes : tuple of str
        Why the heights are not measurable or less reliable, if so.
    """

    anterior_mm: float
    middle_mm: float
    posterior_mm: float
    resolution_mm: float
    anterior_band_mm: float = float("nan")
    posterior_band_mm: float = float("nan")
    sd_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extrapolation: tuple[float, float] = (0.0, 0.0)
    max_mm: float = float("inf")
    axis_ok: bool = True
    axis_change_deg: float = 0.0
    depth_mm: float = float("nan")
    notes: tuple[str, ...] = ()

    @property
    def measurable(self) -> bool:
        """All three heights finite."""
        return bool(np.all(np.isfinite([self.anterior_mm, self.middle_mm, self.posterior_mm])))

    def wall_sd_mm(self) -> tuple[float, float]:
        """Uncertainty (mm) of the extrapolated anterior and posterior heights."""
        (sa, _, sp), (ka, kp) = self.sd_mm, self.extrapolation
        return (float(np.hypot((1 + ka) * sa, ka * sp)), float(np.hypot((1 + kp) * sp, kp * sa)))


@dataclass(frozen=True)
class FractureAssessment:
    """Genant-style grade from body heights.

    Attributes
    ----------
    grade : int or None
        Most likely grade 0-3 (from ``reduction``); None when the heights are
        inconsistent. A call only when ``uncertain`` is False (see :attr:`confident_grade`).
    reduction : float or None
        Largest fractional height reduction, in [0, 1]; None when inconsistent.
    kind : str
        'none', 'wedge', 'biconcave' or 'crush' (the ratio that gave ``reduction``).
    ratios : dict[str, float]
        'anterior/posterior', 'middle/max(anterior,posterior)', 'posterior/neighbours'.
    uncertain : bool
        True when the geometry does not support one grade (see ``reasons``).
    interval : tuple of float or None
        ``(low, high)`` height reduction within the propagated uncertainty, in [0, 1].
    grade_range : tuple of int or None
        Genant grades of ``interval``'s ends.
    reasons : tuple of str
        Why the call is uncertain.
    """

    grade: int | None
    reduction: float | None
    kind: str
    ratios: dict[str, float]
    uncertain: bool
    interval: tuple[float, float] | None = None
    grade_range: tuple[int, int] | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def confident_grade(self) -> int | None:
        """The grade when the call is confident, else None."""
        return None if self.uncertain else self.grade

    @property
    def consistent(self) -> bool:
        """False when the heights were impossible (no number is given)."""
        return self.reduction is not None


def excludes_from_summaries(assessment: FractureAssessment | None) -> bool:
    """True only for a confident Genant grade >= 2 (moderate or severe fracture).

    An uncertain call, a grade 0-1 and a vertebra without an assessment stay in the
    lumbar summaries (project rule: a false exclusion removes a measured vertebra from
    the diagnosis, so only a deformity the geometry supports does).
    """
    return (assessment is not None and not assessment.uncertain
            and assessment.grade is not None and assessment.grade >= 2)


# -- geometry helpers ----------------------------------------------------------------
def _grid_steps(body: BodySeparation) -> np.ndarray:
    """LPS step vectors (3, 3) of the array axes (columns), from the body's voxels."""
    idx = body.body_index.astype(float)
    a = np.column_stack([idx, np.ones(len(idx))])
    coef = np.linalg.lstsq(a, body.body_points_mm, rcond=None)[0]  # (4, 3)
    return coef[:3].T


def _surface_points(
    index: np.ndarray, points: np.ndarray, steps: np.ndarray, superior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Upper and lower endplate points (K, 3) LPS and half a step along the axis (mm).

    Columns run along the array axis closest to ``superior``; their extreme voxels,
    moved half a step outwards, are the endplate points.
    """
    proj = steps.T @ superior
    g = int(np.argmax(np.abs(proj)))
    sign = 1.0 if proj[g] > 0 else -1.0
    step = sign * steps[:, g]
    other = np.delete(index, g, axis=1)
    _, inv = np.unique(other, axis=0, return_inverse=True)
    inv = inv.ravel()
    along = sign * index[:, g]
    order = np.lexsort((along, inv))
    s = inv[order]
    change = s[1:] != s[:-1]
    first = order[np.r_[True, change]]
    last = order[np.r_[change, True]]
    return (points[last] + 0.5 * step, points[first] - 0.5 * step,
            HALF_VOXEL * abs(float(step @ superior)))


def _robust_plane(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, min_tol: float, u0: float = 0.0,
    v0: float = 0.0,
) -> tuple[np.ndarray, float, int] | None:
    """Plane ``w = c0 + c1 (u - u0) + c2 (v - v0)`` with one robust re-fit.

    Returns (coefficients (3,), residual SD of the kept points (mm), kept count) or
    None with fewer than 3 points. A direction the points span by less than
    :data:`MIN_SLOPE_SPAN_MM` gets slope 0 (a near-degenerate fit would extrapolate).
    """
    if w.size < 3:
        return None
    du, dv = u - u0, v - v0
    cols = [np.ones_like(w)]
    use = [True, np.ptp(du) >= MIN_SLOPE_SPAN_MM, np.ptp(dv) >= MIN_SLOPE_SPAN_MM]
    if use[1]:
        cols.append(du)
    if use[2]:
        cols.append(dv)
    a = np.column_stack(cols)
    keep = np.ones(w.size, bool)
    for _ in range(2):
        c = np.linalg.lstsq(a[keep], w[keep], rcond=None)[0]
        res = w - a @ c
        mad = 1.4826 * float(np.median(np.abs(res[keep] - np.median(res[keep]))))
        new = np.abs(res) <= max(ROBUST_CUT_SD * mad, min_tol)
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    c = np.linalg.lstsq(a[keep], w[keep], rcond=None)[0]
    res = (w - a @ c)[keep]
    full = np.zeros(3)
    full[np.nonzero(use)[0]] = c
    return full, float(np.sqrt(np.mean(res**2))), int(keep.sum())


def _local(points: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return (points - centre) @ axes


def own_axes(body: BodySeparation, steps: np.ndarray | None = None
             ) -> tuple[np.ndarray, bool, float]:
    """The body's own frame (3, 3) (columns left, posterior, superior; LPS).

    Returns (axes, ok, change in degrees from the separation's axis); ``ok`` is False
    when the endplate planes could not be fitted or tilt the axis by more than
    :data:`MAX_AXIS_CHANGE_DEG` (the separation's frame is returned then). ``steps``:
    the grid's step vectors (:func:`_grid_steps`), when the caller has them.
    """
    steps = _grid_steps(body) if steps is None else steps
    points = body.body_points_mm
    axes = body.axes
    for _ in range(2):
        top, bot, half = _surface_points(body.body_index, points, steps, axes[:, 2])
        normals = []
        for pts in (top, bot):
            loc = _local(pts, body.centre_mm, axes)
            a, b = max(body.half_width_mm, 1e-6), max(body.half_depth_mm, 1e-6)
            sel = (loc[:, 0] / a) ** 2 + (loc[:, 1] / b) ** 2 <= AXIS_FIT_RADIUS**2
            fit = _robust_plane(loc[sel, 0], loc[sel, 1], loc[sel, 2], 2.0 * half)
            if fit is None or sel.sum() < 6:
                return body.axes, False, 0.0
            c = fit[0]
            n = np.array([-c[1], -c[2], 1.0])
            normals.append(n / np.linalg.norm(n))
        s_local = normals[0] + normals[1]
        axes = vertebra_axes(axes @ (s_local / np.linalg.norm(s_local)))
    change = float(np.degrees(np.arccos(np.clip(axes[:, 2] @ body.axes[:, 2], -1.0, 1.0))))
    if change > MAX_AXIS_CHANGE_DEG:
        return body.axes, False, change
    return axes, True, change


def _walls(v: np.ndarray, bin_mm: float) -> tuple[float, float] | None:
    """Anterior and posterior wall (mm) of the mid-sagittal strip.

    The strip's voxel count per bin of ``bin_mm`` along ``v``, ``c``, is compared with
    its typical value ``ref`` (median of the bins above half the largest). The body is
    the run of consecutive bins reaching a quarter of ``ref`` (fewer voxels are strays)
    that holds most voxels (a piece of lamina behind the canal is another run); its
    end bins are filled to ``c / ref`` of their width from the inside.
    """
    if v.size < 4:
        return None
    edges, counts = binned_counts(v, bin_mm)
    counts = counts.astype(float)
    ref = float(np.median(counts[counts >= 0.5 * counts.max()]))
    # the body is the run of consecutive bins above a quarter of ref holding the most
    # voxels: a piece of lamina left behind the spinal canal is a separate run
    runs, n_runs = ndimage.label(counts >= 0.25 * ref)
    best = 1 + int(np.argmax(ndimage.sum(counts, runs, np.arange(1, n_runs + 1))))
    above = np.nonzero(runs == best)[0]
    i, j = int(above[0]), int(above[-1])
    return (float(edges[i + 1] - min(1.0, counts[i] / ref) * bin_mm),
            float(edges[j] + min(1.0, counts[j] / ref) * bin_mm))


def _band_height(
    top: np.ndarray, bot: np.ndarray, u_lim: tuple[float, float],
    v_lim: tuple[float, float], half: float,
) -> tuple[float, float, float]:
    """Height (mm) at the band centre, its uncertainty (mm) and the centre's v (mm).

    ``top`` / ``bot``: endplate points (K, 3) in the body frame (u, v, w).
    """
    uc, vc = 0.5 * (u_lim[0] + u_lim[1]), 0.5 * (v_lim[0] + v_lim[1])
    out = []
    for pts in (top, bot):
        sel = ((pts[:, 0] >= u_lim[0]) & (pts[:, 0] <= u_lim[1])
               & (pts[:, 1] >= v_lim[0]) & (pts[:, 1] <= v_lim[1]))
        fit = _robust_plane(pts[sel, 0], pts[sel, 1], pts[sel, 2], 2.0 * half, uc, vc)
        if fit is None:
            return float("nan"), float("nan"), vc
        c, sd, n = fit
        out.append((c[0], sd / np.sqrt(max(1.0, n / COLUMNS_PER_INDEPENDENT))))
    (wt, st), (wb, sb) = out
    sd = float(np.sqrt(2.0 * half**2 + st**2 + sb**2))
    return float(wt - wb), sd, vc


def body_heights(body: BodySeparation) -> VertebralHeights:
    """Anterior, middle and posterior heights of a body (see module docstring)."""
    nan = float("nan")
    steps = _grid_steps(body)
    axes, axis_ok, change = own_axes(body, steps)
    points = body.body_points_mm
    top, bot, half = _surface_points(body.body_index, points, steps, axes[:, 2])
    res = half / HALF_VOXEL  # one voxel step along the axis, mm
    notes: list[str] = [] if axis_ok else [
        f"the body's own axis could not be found from its endplates (change {change:.0f} deg)"]
    loc_all = _local(points, body.centre_mm, axes)
    ext = np.abs(axes.T @ steps).sum(axis=1)  # one voxel's extent along u, v, w
    # width from the anterior half only: pedicle and process stubs left on the body by
    # the separation are posterior and would widen it (and the strip)
    ant = loc_all[loc_all[:, 1] <= np.median(loc_all[:, 1]), 0]
    u_lo, u_hi = (float(np.percentile(ant, q)) for q in (1, 99))
    u0, half_w = 0.5 * (u_lo + u_hi), 0.5 * (u_hi - u_lo)
    strip = np.abs(loc_all[:, 0] - u0) <= max(STRIP_HALF_WIDTH * half_w, 0.75 * ext[0])
    walls = _walls(loc_all[strip, 1], float(ext[1]))

    def empty(why: str) -> VertebralHeights:
        return VertebralHeights(nan, nan, nan, res, axis_ok=axis_ok, axis_change_deg=change,
                                notes=tuple(notes + [why]))

    if walls is None:
        return empty("no mid-sagittal strip")
    v_ant, v_post = walls
    d = v_post - v_ant
    if d < 4.0 * ext[1]:
        return empty("body too thin for heights")
    top_l = _local(top, body.centre_mm, axes)
    bot_l = _local(bot, body.centre_mm, axes)
    t_max = float(np.percentile(top_l[:, 2], 99) - np.percentile(bot_l[:, 2], 1))
    u_c = (u0 - CENTRAL_WIDTH * half_w, u0 + CENTRAL_WIDTH * half_w)
    inset = max(WALL_BAND[0] * d, float(ext[1]))
    width = max((WALL_BAND[1] - WALL_BAND[0]) * d, 1.5 * float(ext[1]))
    ha, sa, va = _band_height(top_l, bot_l, u_c, (v_ant + inset, v_ant + inset + width), half)
    hp, sp, vp = _band_height(top_l, bot_l, u_c, (v_post - inset - width, v_post - inset),
                              half)
    vm = 0.5 * (v_ant + v_post)
    mu = max(2.0 * MIDDLE_BAND * half_w, float(ext[0]))
    mv = max(MIDDLE_BAND * d, float(ext[1]))
    hm, sm, _ = _band_height(top_l, bot_l, (u0 - mu, u0 + mu), (vm - mv, vm + mv), half)
    if not np.all(np.isfinite([ha, hm, hp])) or vp - va <= 0:
        return empty("too few endplate points in a band")
    ka, kp = (va - v_ant) / (vp - va), (v_post - vp) / (vp - va)
    h_ant, h_post = ha + ka * (ha - hp), hp + kp * (hp - ha)
    return VertebralHeights(
        float(h_ant), float(hm), float(h_post), float(res), float(ha), float(hp),
        (sa, sm, sp), (float(ka), float(kp)), t_max, axis_ok, change, float(d), tuple(notes))


# -- grading -------------------------------------------------------------------------------
def check_invariants(heights: VertebralHeights, ratios: dict[str, float],
                     reduction: float, neighbour_ref_mm: float | None = None) -> list[str]:
    """Problems that make the numbers impossible (empty when consistent).

    Checked: heights finite, positive and not above the body's tallest column
    (x :data:`MAX_HEIGHT_FACTOR` + one voxel); each ratio equals the quotient of its
    heights; the reduction lies in [0, 1] and equals one minus the smallest ratio
    (or 0).
    """
    out: list[str] = []
    hs = {"anterior": heights.anterior_mm, "middle": heights.middle_mm,
          "posterior": heights.posterior_mm}
    for name, x in hs.items():
        if not np.isfinite(x) or x <= 0:
            out.append(f"{name} height not positive")
        elif x > MAX_HEIGHT_FACTOR * heights.max_mm + heights.resolution_mm:
            out.append(f"{name} height above the body's tallest column")
    if out:
        return out
    ha, hm, hp = hs["anterior"], hs["middle"], hs["posterior"]
    expect = {"anterior/posterior": ha / hp, "middle/max(anterior,posterior)": hm / max(ha, hp)}
    if neighbour_ref_mm is not None:
        expect["posterior/neighbours"] = hp / neighbour_ref_mm
    for name, r in ratios.items():
        if name not in expect or not np.isclose(r, expect[name], rtol=1e-9, atol=0.0):
            out.append(f"ratio {name} contradicts the heights")
    if not 0.0 <= reduction <= 1.0:
        out.append("height loss outside 0-100 %")
    elif not np.isclose(reduction, max([0.0] + [1.0 - r for r in ratios.values()])):
        out.append("height loss does not match its ratios")
    return out


def _inconsistent(problems: Sequence[str], notes: Sequence[str]) -> FractureAssessment:
    return FractureAssessment(None, None, "none", {}, True, None, None,
                              tuple([f"{HEIGHTS_INCONSISTENT}: {'; '.join(problems)}"]
                                    + list(notes)))


def assess_fracture(
    heights: VertebralHeights, neighbours: Sequence[VertebralHeights] = ()
) -> FractureAssessment:
    """Genant grade, height-loss interval and confidence (see module docstring).

    Parameters
    ----------
    heights : VertebralHeights
    neighbours : sequence of VertebralHeights
        Measured neighbouring bodies (one level up and down) for the crush ratio.
    """
    ha, hm, hp = heights.anterior_mm, heights.middle_mm, heights.posterior_mm
    if not heights.measurable:
        return _inconsistent(["heights not measurable"], heights.notes)
    sa_w, sp_w = heights.wall_sd_mm()
    sm = heights.sd_mm[1]
    nb = [n for n in neighbours if n.measurable and n.posterior_mm > 0]
    nb_ref = float(np.mean([n.posterior_mm for n in nb])) if nb else None
    ratios: dict[str, float] = {}
    sds: dict[str, float] = {}
    if ha > 0 and hp > 0 and hm > 0:
        # wedge: first-order propagation from the two band heights (extrapolation included)
        (ka, kp), (sa, _, sp) = heights.extrapolation, heights.sd_mm
        r = ha / hp
        d_ba = ((1 + ka) * hp + kp * ha) / hp**2
        d_bp = -(ka * hp + (1 + kp) * ha) / hp**2
        ratios["anterior/posterior"] = r
        sds["anterior/posterior"] = float(np.hypot(d_ba * sa, d_bp * sp))
        ref, s_ref = (ha, sa_w) if ha >= hp else (hp, sp_w)
        ratios["middle/max(anterior,posterior)"] = hm / ref
        sds["middle/max(anterior,posterior)"] = float(hm / ref * np.hypot(sm / hm, s_ref / ref))
        if nb_ref is not None:
            s_nb = float(np.sqrt(sum(n.wall_sd_mm()[1] ** 2 for n in nb))) / len(nb)
            ratios["posterior/neighbours"] = hp / nb_ref
            sds["posterior/neighbours"] = float(hp / nb_ref * np.hypot(sp_w / hp, s_nb / nb_ref))
    reduction, kind = 0.0, "none"
    for name, r in ratios.items():
        if 1.0 - r > reduction:
            reduction, kind = 1.0 - r, KINDS[name]
    problems = check_invariants(heights, ratios, reduction, nb_ref)
    if problems:
        return _inconsistent(problems, heights.notes)
    lo = max([0.0] + [1.0 - r - sds[n] for n, r in ratios.items()])
    hi = min(1.0, max([0.0] + [1.0 - r + sds[n] for n, r in ratios.items()]))
    lo = min(lo, reduction)
    grade = genant_grade(reduction)
    g_lo, g_hi = genant_grade(lo), genant_grade(hi)
    reasons = list(heights.notes)
    if not heights.axis_ok:
        g_lo, g_hi = min(g_lo, 0), max(g_hi, grade)
    if g_lo != g_hi:
        reasons.append(
            f"height loss {100 * reduction:.0f} % (interval {100 * lo:.0f}-{100 * hi:.0f} %, "
            f"heights resolved to {heights.resolution_mm:.2g} mm) spans Genant grades "
            f"{g_lo}-{g_hi}")
    return FractureAssessment(
        grade=grade, reduction=float(reduction), kind=kind if grade > 0 else "none",
        ratios=ratios, uncertain=bool(reasons), interval=(float(lo), float(hi)),
        grade_range=(g_lo, g_hi), reasons=tuple(reasons))
