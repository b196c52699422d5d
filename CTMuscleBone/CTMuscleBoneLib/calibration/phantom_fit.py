"""Phantom-based (synchronous) HU -> BMD calibration.

The rods of a calibration phantom scanned with the patient are either given as labels
(``calibration_rod_1`` .. ``calibration_rod_6`` in a :class:`~CTMuscleBoneLib.image.LabelMap`,
rod k being the k-th rod of the phantom definition) or found automatically:

1. the CT is averaged along the superior-inferior axis (rods are cylinders along it,
   so their cross-section is the same on every slice and the noise averages out);
2. the body is the largest connected region above -300 HU; the phantom lies outside
   it (usually under it, on the table side);
3. outside the body, rods are uniform discs surrounded by a uniform ring of resin with
   a different CT number (disc / ring filter, several radii from 12 to 3.5 mm unless
   the definition gives the rod diameter); non-maximum suppression keeps one centre
   per rod;
4. the number of rods found must equal the definition's; rods are matched to the
   definition by ordering (the CT number increases with mineral density).

Each rod's CT number is a sigma-clipped mean inside an eroded core over the slices the
rod occupies. The calibration is refused (:class:`CalibrationRefused`) when a rod is
missing, when metal (> 2000 HU) lies in or near a rod or a rod's SD is far above the
others' (streaks), or when the fit is poor (Pearson r < 0.99; Uemura et al., IJCARS
2021 report a median r of 0.9998 over 1040 automated phantom calibrations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..body import BODY_HU
from ..image import CTImage, LabelMap
from ..tissue import METAL_HU
from .definitions import PhantomDefinition, load_phantom_definition
from .fit import LineFit, fit_hu_to_density, fit_two_component
from .model import Calibration, CalibrationRefused

#: Minimum Pearson r of an accepted phantom fit. Unvalidated default: below the worst
#: accepted case (0.9863) but well below the median (0.9998) of Uemura et al. 2021.
MIN_R = 0.99
#: A rod whose HU SD exceeds this multiple of the median rod SD is taken as streaked
#: (unvalidated default).
STREAK_SD_FACTOR = 3.0
#: Detector radii tried when the definition gives no rod diameter (mm).
DEFAULT_RADII_MM = (12.0, 8.0, 5.3, 3.5)


@dataclass(frozen=True)
class RodMeasurement:
    """CT numbers of one rod.

    Attributes
    ----------
    index : int
        Rod number in the definition (0-based) once matched, else -1.
    mean_hu : float
        Sigma-clipped mean of the core voxels (robust to a few outliers).
    sd_hu : float
        Plain SD of the core voxels (streak check).
    n_voxels : int
        Core voxels measured.
    max_hu_near : float
        Highest CT number in and around the rod (metal check).
    centre_mm : tuple of float
        LPS position of the rod axis at the middle slice, mm.
    """

    index: int
    mean_hu: float
    sd_hu: float
    n_voxels: int
    max_hu_near: float
    centre_mm: tuple[float, float, float]


def robust_mean_sd(values: np.ndarray, clip: float = 3.0) -> tuple[float, float, int]:
    """Mean and SD after rejecting values beyond ``clip`` robust SDs of the median."""
    v = np.asarray(values, dtype=float).ravel()
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    if mad > 0:
        v = v[np.abs(v - med) <= clip * mad]
    return float(v.mean()), float(v.std(ddof=1) if v.size > 1 else 0.0), int(v.size)


def _si_axis(ct: CTImage) -> int:
    return ct.geometry.axis_for("superior")[0]


def _disk(spacing2: tuple[float, float], radius_mm: float) -> np.ndarray:
    """Boolean in-plane disc kernel for an anisotropic pixel grid."""
    h = [max(0, int(np.floor(radius_mm / s))) for s in spacing2]
    a, b = np.meshgrid(np.arange(-h[0], h[0] + 1) * spacing2[0],
                       np.arange(-h[1], h[1] + 1) * spacing2[1], indexing="ij")
    return a**2 + b**2 <= radius_mm**2


def _measure(ct: CTImage, mask: np.ndarray, near: np.ndarray, index: int) -> RodMeasurement:
    """Measure the rod core ``mask`` (3-D bool); ``near`` is the metal-check region."""
    axis = _si_axis(ct)
    hu = ct.hu
    # slices the rod occupies: per-slice median close to the rod's overall median
    moved = np.moveaxis(hu, axis, -1)
    mmask = np.moveaxis(mask, axis, -1)
    meds, slices = [], []
    for k in range(moved.shape[-1]):
        m = mmask[..., k]
        if m.any():
            meds.append(float(np.median(moved[..., k][m])))
            slices.append(k)
    meds_a = np.asarray(meds)
    solid = meds_a > BODY_HU  # slices beyond the phantom's ends hold air
    if not solid.any():
        raise CalibrationRefused("a calibration rod has no voxels left after erosion; the "
                                 "rod label is too small or empty.")
    centre = np.median(meds_a[solid])
    spread = 1.4826 * np.median(np.abs(meds_a - centre)) + 5.0
    keep = [s for s, md in zip(slices, meds_a, strict=True)
            if abs(md - centre) <= 5 * spread and md > BODY_HU]
    sel = np.zeros(moved.shape[-1], dtype=bool)
    sel[keep] = True
    core = mmask & sel
    values = moved[core]
    mean, _, n = robust_mean_sd(values)
    # the streak check needs the unclipped SD (clipping hides bimodal streak patterns)
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    idx = np.argwhere(np.moveaxis(core, -1, axis))
    centre_mm = tuple(float(c) for c in ct.geometry.index_to_physical(idx.mean(axis=0)))
    max_near = float(hu[near].max()) if near.any() else float(values.max())
    return RodMeasurement(index, mean, sd, n, max(max_near, float(values.max())), centre_mm)


def measure_labelled_rods(
    ct: CTImage, labels: LabelMap, n_rods: int, erode_mm: float = 1.5, near_mm: float = 10.0
) -> list[RodMeasurement]:
    """Measure rods given as labels ``calibration_rod_1..n_rods``.

    The core is the label eroded in-plane by ``erode_mm`` (partial-volume edge); the
    metal check looks ``near_mm`` around the label.

    Raises
    ------
    CalibrationRefused
        When a rod label is missing or empty.
    """
    axis = _si_axis(ct)
    sp = tuple(s for a, s in enumerate(ct.spacing_mm) if a != axis)
    st_e = np.expand_dims(_disk(sp, max(erode_mm, min(sp))), axis)  # >= 1 pixel
    st_n = np.expand_dims(_disk(sp, near_mm), axis)
    out = []
    missing = []
    for k in range(1, n_rods + 1):
        m = labels.mask(f"calibration_rod_{k}")
        if not m.any():
            missing.append(k)
            continue
        box = ndimage.find_objects(m.astype(np.int8))[0]
        pad = [int(np.ceil(near_mm / s)) + 1 if a != axis else 0
               for a, s in enumerate(ct.spacing_mm)]
        box = tuple(slice(max(0, b.start - p), min(n, b.stop + p))
                    for b, p, n in zip(box, pad, m.shape, strict=True))
        mb = m[box]
        core = ndimage.binary_erosion(mb, structure=st_e)
        if not core.any():
            core = mb
        near = ndimage.binary_dilation(mb, structure=st_n)
        sub = CTImage(ct.hu[box], _sub_geometry(ct, box), ct.metadata)
        out.append(_measure(sub, core, near, k - 1))
    if missing:
        raise CalibrationRefused(
            f"calibration rod label(s) {', '.join(f'calibration_rod_{k}' for k in missing)} "
            f"missing: the phantom definition has {n_rods} rods and every rod must be "
            "labelled (or leave all rod labels out to detect the rods automatically)."
        )
    return out


def _sub_geometry(ct: CTImage, box: tuple[slice, ...]):
    from ..image import Geometry

    g = ct.geometry
    start = np.array([b.start for b in box], dtype=float)
    return Geometry(
        shape=tuple(b.stop - b.start for b in box),
        spacing_mm=g.spacing_mm,
        origin_mm=tuple(g.index_to_physical(start)),
        direction=g.direction,
    )


def _box_mean(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    k = kernel.astype(float)
    return ndimage.correlate(img, k / k.sum(), mode="nearest")


def find_rods(
    ct: CTImage, definition: PhantomDefinition, radii_mm: tuple[float, ...] | None = None
) -> list[RodMeasurement]:
    """Find the phantom's rods outside the body and measure them (unmatched, index -1).

    Returns
    -------
    list of RodMeasurement
        One per rod found (the caller checks the count).

    Raises
    ------
    CalibrationRefused
        When the number of rods found differs from the definition's.
    """
    axis = _si_axis(ct)
    n_expected = len(definition.rods)
    sp = tuple(float(s) for a, s in enumerate(ct.spacing_mm) if a != axis)
    hu = ct.hu.astype(np.float32, copy=False)
    nz = hu.shape[axis]
    mean_img = hu.mean(axis=axis)
    # anything solid in at least 5 % of the slices: a phantom shorter than the scan
    # (or a long scan of the thighs and trunk) still shows up, where the slice mean
    # would be pulled below the threshold by the air around it
    fg = (hu > BODY_HU).mean(axis=axis) >= 0.05
    lab, n = ndimage.label(fg)
    if n == 0:
        raise CalibrationRefused("no body or phantom found (nothing above -300 HU).")
    sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
    # body: the largest region, and every region holding fat (subcutaneous fat of the
    # legs below the pelvis); phantom resin holds none
    moved0 = np.moveaxis(hu, axis, -1)
    fat2d = ((moved0 >= -190.0) & (moved0 <= -30.0)).sum(axis=-1)
    tissue2d = (moved0 > BODY_HU).sum(axis=-1)
    fat_frac = (ndimage.sum_labels(fat2d, lab, index=np.arange(1, n + 1))
                / np.maximum(ndimage.sum_labels(tissue2d, lab, index=np.arange(1, n + 1)), 1))
    body_ids = {int(np.argmax(sizes)) + 1} | {k + 1 for k in range(n) if fat_frac[k] > 0.05}
    body = ndimage.binary_fill_holes(np.isin(lab, sorted(body_ids)))
    body = ndimage.binary_dilation(body, structure=_disk(sp, 3.0))
    region = ndimage.binary_fill_holes(fg & ~body)
    if not region.any():
        raise CalibrationRefused(
            "no calibration phantom found outside the body (the phantom may touch the "
            "body or be outside the field of view): label the rods calibration_rod_1.."
            f"{n_expected} or choose another calibration method."
        )
    # the phantom may be shorter than the scan: average only the slices it fills
    moved = np.moveaxis(hu, axis, -1)
    filled = (moved[region] > BODY_HU).mean(axis=0) >= 0.9
    if filled.sum() >= 1 and not filled.all():
        moved = moved[..., filled]
        nz = int(filled.sum())
        mean_img = moved.mean(axis=-1)
        region &= mean_img > BODY_HU
    sd_img = moved.std(axis=-1) if nz > 1 else np.zeros_like(mean_img)
    noise_sd = float(np.median(sd_img[region])) if nz > 1 else 10.0
    noise_mean = noise_sd / np.sqrt(max(nz, 1))
    if radii_mm is None:
        radii_mm = ((definition.rod_diameter_mm / 2.0,) if definition.rod_diameter_mm
                    else DEFAULT_RADII_MM)
    found: list[tuple[float, int, int]] = []
    used_r = radii_mm[0]
    counts = []
    for r in radii_mm:
        found = _detect(mean_img, region, sp, r, noise_mean)
        used_r = r
        counts.append(len(found))
        if len(found) == n_expected:
            break
    if len(found) != n_expected:
        raise CalibrationRefused(
            f"found {max(counts)} calibration rod(s) but the {definition.name} definition "
            f"has {n_expected}: a rod is missing, out of the field of view or not "
            "distinguishable; check the phantom choice or label the rods."
        )
    out = []
    for _, i, j in found:
        a, b = np.meshgrid((np.arange(mean_img.shape[0]) - i) * sp[0],
                           (np.arange(mean_img.shape[1]) - j) * sp[1], indexing="ij")
        d2 = a**2 + b**2
        # rod radius from its area: pixels within 1.3 r closer to the rod's CT number
        # than to the surrounding ring's; the core keeps partial-volume pixels out
        rod_hu = float(np.median(mean_img[d2 <= (0.5 * used_r) ** 2]))
        ring = (d2 > (1.4 * used_r) ** 2) & (d2 <= (1.8 * used_r) ** 2)
        ring_hu = float(np.median(mean_img[ring]))
        close = (d2 <= (1.3 * used_r) ** 2) & (
            np.abs(mean_img - rod_hu) < np.abs(mean_img - ring_hu))
        radius = float(np.sqrt(close.sum() * sp[0] * sp[1] / np.pi))
        core_r = max(radius - 0.75 * max(sp), 0.5 * radius, 0.5 * used_r)
        disk = d2 <= core_r**2
        near = d2 <= (radius + 10.0) ** 2
        core3 = np.broadcast_to(np.expand_dims(disk, axis), hu.shape)
        near3 = np.broadcast_to(np.expand_dims(near, axis), hu.shape)
        out.append(_measure(ct, core3, near3, -1))
    return out


def _detect(mean_img: np.ndarray, region: np.ndarray, sp: tuple[float, float], r: float,
            noise_mean: float) -> list[tuple[float, int, int]]:
    """Disc/ring detector on the slice-averaged image; returns (score, i, j) per rod."""
    core_k = _disk(sp, 0.7 * r)
    outer = _disk(sp, 1.8 * r)
    inner = _disk(sp, 1.3 * r)
    pad = [(o - i) // 2 for o, i in zip(outer.shape, inner.shape, strict=True)]
    ring_k = outer.copy()
    ring_k[pad[0]:pad[0] + inner.shape[0], pad[1]:pad[1] + inner.shape[1]] &= ~inner
    if core_k.sum() < 3 or ring_k.sum() < 6:
        return []
    img = mean_img.astype(float)
    d_mean = _box_mean(img, core_k)
    d_sd = np.sqrt(np.maximum(_box_mean(img**2, core_k) - d_mean**2, 0))
    a_mean = _box_mean(img, ring_k)
    a_sd = np.sqrt(np.maximum(_box_mean(img**2, ring_k) - a_mean**2, 0))
    inside = _box_mean(region.astype(float), outer) > 0.999
    uniform_tol = 4.0 * noise_mean + 4.0
    contrast = np.abs(d_mean - a_mean)
    # contrast well above the noise of a core mean (its SD is noise_mean / sqrt(n))
    min_contrast = max(4.0, 6.0 * noise_mean / np.sqrt(core_k.sum()))
    ok = inside & (d_sd < uniform_tol) & (a_sd < uniform_tol) & (contrast > min_contrast)
    if not ok.any():
        return []
    score = contrast / (d_sd + a_sd + 1.0)
    cand = np.argwhere(ok)
    order = np.argsort(-score[ok], kind="stable")
    kept: list[tuple[float, int, int]] = []
    for c in cand[order]:
        p = np.array([c[0] * sp[0], c[1] * sp[1]])
        # one centre per rod: suppress weaker responses within 2.5 detector radii
        if all(np.hypot(*(p - np.array([k[1] * sp[0], k[2] * sp[1]]))) > 2.5 * r for k in kept):
            kept.append((float(score[c[0], c[1]]), int(c[0]), int(c[1])))
    return kept


def _check_rods(rods: list[RodMeasurement], definition: PhantomDefinition,
                metal_hu: float) -> None:
    bad = [r for r in rods if r.max_hu_near > metal_hu]
    if bad:
        raise CalibrationRefused(
            f"metal (> {metal_hu:.0f} HU, up to {max(r.max_hu_near for r in bad):.0f} HU) in "
            f"or near {len(bad)} calibration rod(s): their CT numbers are corrupted by "
            "streaks; phantom calibration refused (use internal calibration or none)."
        )
    sds = np.array([r.sd_hu for r in rods])
    ref = float(np.median(sds))
    streaked = [r for r in rods if r.sd_hu > STREAK_SD_FACTOR * max(ref, 5.0)]
    if streaked:
        raise CalibrationRefused(
            f"{len(streaked)} calibration rod(s) have a CT-number SD of "
            f"{max(r.sd_hu for r in streaked):.0f} HU, far above the other rods' "
            f"{ref:.0f} HU: streak artefacts (metal, beam hardening) corrupt the rods; "
            "phantom calibration refused."
        )


def phantom_calibration(
    ct: CTImage,
    labels: LabelMap | None = None,
    phantom: str | dict | PhantomDefinition = "B-MAS200",
    min_r: float = MIN_R,
    metal_hu: float = METAL_HU,
) -> Calibration:
    """Calibrate HU to mineral density with the rods of a phantom in the scan.

    Parameters
    ----------
    ct : CTImage
    labels : LabelMap or None
        When it contains any ``calibration_rod_k`` label, the rods are taken from the
        labels (all rods of the definition must be labelled); otherwise they are found
        automatically.
    phantom : str, dict or PhantomDefinition
        Bundled name, definition file path or definition.
    min_r : float
        Minimum Pearson r of the fit.
    metal_hu : float
        CT number taken as metal in or near a rod.

    Returns
    -------
    Calibration
        method 'phantom', the definition's material, the line, r and one point per rod.

    Raises
    ------
    CalibrationRefused
        Rods missing, metal or streaks, or r < ``min_r``.
    InputError
        Invalid phantom definition.
    """
    defn = load_phantom_definition(phantom)
    n = len(defn.rods)
    labelled = labels is not None and any(
        k.startswith("calibration_rod_") for k in labels.present_keys())
    warnings: list[str] = []
    if labelled:
        assert labels is not None
        rods = measure_labelled_rods(ct, labels, n)
        extra = [k for k in labels.present_keys() if k.startswith("calibration_rod_")
                 and int(k.rsplit("_", 1)[1]) > n]
        if extra:
            raise CalibrationRefused(
                f"the label map has rod labels {', '.join(extra)} but the {defn.name} "
                f"definition has only {n} rods: wrong phantom definition?"
            )
        how = "labelled rods"
    else:
        rods = find_rods(ct, defn)
        order_hu = np.argsort([r.mean_hu for r in rods], kind="stable")
        expected = defn.hu_order()
        matched = [None] * n
        for rank, i in enumerate(order_hu):
            k = int(expected[rank])
            r = rods[int(i)]
            matched[k] = RodMeasurement(k, r.mean_hu, r.sd_hu, r.n_voxels, r.max_hu_near,
                                        r.centre_mm)
        rods = matched  # type: ignore[assignment]
        how = "rods found automatically, matched by CT-number order"
    _check_rods(rods, defn, metal_hu)
    hu = np.array([r.mean_hu for r in rods])
    rho = defn.densities_mg_cm3
    fit: LineFit
    if defn.two_component:
        water = np.array([r.water_density_mg_cm3 for r in defn.rods], dtype=float)
        fit = fit_two_component(hu, rho, water, defn.water_displacement,
                                defn.water_reference_mg_cm3)
    else:
        fit = fit_hu_to_density(hu, rho)
    points = tuple((f"{defn.name} rod {defn.rods[r.index].name}", float(r.mean_hu),
                    float(defn.rods[r.index].density_mg_cm3)) for r in rods)
    if not np.isfinite(fit.slope_mg_cm3_per_hu) or fit.r < min_r:
        detail = ", ".join(f"{p[0].split()[-1]}: {p[1]:.1f} HU / {p[2]:g}" for p in points)
        raise CalibrationRefused(
            f"phantom calibration fit is poor (r = {fit.r:.4f} < {min_r}); rod CT numbers "
            f"({detail} mg/cm3) do not follow the {defn.name} densities: wrong phantom "
            "definition, a damaged or mislabelled rod, or artefacts."
        )
    if not defn.verified:
        warnings.append(f"{defn.name} rod densities are nominal values not checked against "
                        "this phantom's certificate (lot-specific)")
    return Calibration(
        method="phantom",
        material=defn.material,
        slope_mg_cm3_per_hu=fit.slope_mg_cm3_per_hu,
        intercept_mg_cm3=fit.intercept_mg_cm3,
        r=fit.r,
        n_points=n,
        description=f"{defn.describe()}, {how}",
        warnings=tuple(warnings),
        points=points,
    )
