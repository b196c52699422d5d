"""Muscle measurements: volume, attenuation, fat infiltration and mass per structure.

Definitions (see docs/muscle.md for sources):

* volume_cm3 = number of labelled voxels x voxel volume.
* mean_hu, sd_hu over all labelled voxels (SD with ddof=1).
* Intramuscular adipose tissue (IMAT) voxels: -190 <= HU <= -30; lean muscle voxels:
  -29 <= HU <= +150 (the standard CT tissue windows, e.g. Mitsiopoulos et al.,
  J Appl Physiol 1998; Aubrey et al., Acta Physiol 2014). ``fat_fraction`` is the
  IMAT voxel fraction; voxels outside both windows are counted as ``other_fraction``.
* mass_g = volume x density (see :mod:`CTMuscleBoneLib.density_models`);
  lean_mass_g = lean volume x density of the lean voxels.
* A structure whose label touches a face of the image is **partial** (cut by the field
  of view): it is flagged, and group totals that include it are flagged too.

Group totals (per side and both sides) use the regions of
:data:`CTMuscleBoneLib.anatomy.MUSCLE_REGIONS`; ``lower_limb`` is gluteal + hip flexor
+ thigh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import LOWER_LIMB_REGIONS, MUSCLE_REGIONS, structure
from .density_models import DensityModel, constant_density
from .fov import border_faces as touched_faces
from .fov import inside_fov, outside_fov
from .image import CTImage, Geometry, LabelMap
from .results import ResultRow
from .tissue import FAT_HU_RANGE, LEAN_HU_RANGE

PARTIAL_FLAG = "partial: cut by the field of view"
#: Flag of a group total with at least one member cut by the field of view.
PARTIAL_TOTAL_FLAG = "partial: includes muscles cut by the field of view"
#: Flag of the SD of a one-voxel structure.
SD_NOT_MEASURABLE = "not_measurable: one voxel only (an SD needs two)"


@dataclass
class MuscleMeasure:
    """Measurements of one muscle structure.

    All volumes in cm3, HU in Hounsfield units, masses in g, fractions in [0, 1].
    """

    key: str
    n_voxels: int
    volume_cm3: float
    mean_hu: float
    sd_hu: float
    fat_fraction: float
    lean_fraction: float
    other_fraction: float
    fat_volume_cm3: float
    lean_volume_cm3: float
    mass_g: float
    lean_mass_g: float
    partial: bool
    cut_faces: tuple[str, ...] = ()
    flags: list[str] = field(default_factory=list)
    #: Name of the density model the masses were computed with.
    density_model: str = constant_density.name


def measure_muscle(
    hu: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    key: str,
    density: DensityModel = constant_density,
    box: tuple[slice, ...] | None = None,
    outside: np.ndarray | None = None,
) -> MuscleMeasure | None:
    """Measure one muscle.

    Parameters
    ----------
    hu : np.ndarray, (n0, n1, n2)
        CT in HU, ITK index order.
    mask : np.ndarray of bool, (n0, n1, n2)
        The muscle's voxels.
    geometry : Geometry
        Voxel grid (spacing in mm).
    key : str
        Anatomy key.
    density : DensityModel
        HU -> tissue density (g/cm3) model used for mass.
    box : tuple of slice, optional
        When ``hu`` and ``mask`` are crops of the full grid, where they lie in it
        (needed to tell whether the structure touches the image boundary).
    outside : np.ndarray of bool, optional
        Padding voxels outside the reconstructed field of view on the full grid
        (:func:`CTMuscleBoneLib.fov.outside_fov`): labelled ones are not measured, and a
        muscle next to them is cut by the field of view.

    Returns
    -------
    MuscleMeasure or None
        None when the mask is empty.
    """
    faces = touched_faces(mask, geometry, box, outside)
    mask = inside_fov(mask, outside, box)  # padding is not muscle
    n = int(np.count_nonzero(mask))
    if n == 0:
        return None
    voxel_cm3 = geometry.voxel_volume_cm3
    values = hu[mask].astype(np.float64)
    fat = (values >= FAT_HU_RANGE[0]) & (values <= FAT_HU_RANGE[1])
    lean = (values >= LEAN_HU_RANGE[0]) & (values <= LEAN_HU_RANGE[1])
    rho = density.density_g_cm3(values)
    flags = [f"{PARTIAL_FLAG} ({', '.join(faces)})"] if faces else []
    return MuscleMeasure(
        key=key,
        n_voxels=n,
        volume_cm3=n * voxel_cm3,
        mean_hu=float(values.mean()),
        sd_hu=float(values.std(ddof=1)) if n > 1 else float("nan"),
        fat_fraction=float(fat.mean()),
        lean_fraction=float(lean.mean()),
        other_fraction=float(1.0 - fat.mean() - lean.mean()),
        fat_volume_cm3=float(fat.sum() * voxel_cm3),
        lean_volume_cm3=float(lean.sum() * voxel_cm3),
        mass_g=float(np.sum(rho) * voxel_cm3),
        lean_mass_g=float(np.sum(rho[lean]) * voxel_cm3),
        partial=bool(faces),
        cut_faces=faces,
        flags=flags,
        density_model=density.name,
    )


def measure_muscles(
    ct: CTImage,
    labels: LabelMap,
    density: DensityModel = constant_density,
) -> list[MuscleMeasure]:
    """Measure every muscle structure of a label map (anatomy group 'muscle').

    Structures are visited in label-value order; each is measured on its bounding box
    only, so the cost is one pass over the label map plus the muscle voxels.
    """
    if not labels.geometry.same_grid(ct.geometry):
        raise ValueError("label map and CT must share a grid; resample the labels first")
    out: list[MuscleMeasure] = []
    outside = outside_fov(ct.hu)  # one pass, shared by every muscle
    boxes = labels.boxes()
    for value, key in sorted(labels.structures.items()):
        if structure(key).group != "muscle":
            continue
        if key in labels.overlays:  # overlapping structure: its own full mask
            full = labels.mask(key)
            found = ndimage.find_objects(full.astype(np.int8))
            box = found[0] if found else None
            mask_box = full[box] if box is not None else None
        else:
            box = boxes.get(value)
            mask_box = labels.array[box] == value if box is not None else None
        if box is None:
            continue
        m = measure_muscle(ct.hu[box], mask_box, ct.geometry, key, density, box, outside)
        if m is not None:
            out.append(m)
    return out


def muscle_rows(measures: list[MuscleMeasure], density: DensityModel) -> list[ResultRow]:
    """Result rows of per-muscle measures and of group totals.

    Rows per structure: volume (cm3), mean_hu, sd_hu (HU), fat_fraction,
    lean_fraction (1), fat_volume, lean_volume (cm3), mass, lean_mass (g).
    Totals: ``<region>_<side>`` and ``<region>_total`` for each region of
    :data:`MUSCLE_REGIONS` present and for ``lower_limb``: volume, mass, lean_mass.
    """
    rows: list[ResultRow] = []
    vox = "voxel count x voxel volume"
    fat_m = f"IMAT: fraction of voxels in {FAT_HU_RANGE[0]:g}..{FAT_HU_RANGE[1]:g} HU"
    lean_m = f"lean: fraction of voxels in {LEAN_HU_RANGE[0]:g}..{LEAN_HU_RANGE[1]:g} HU"
    dens = f"({density.description})"
    for m in measures:
        spec = [
            ("volume", m.volume_cm3, "cm3", vox),
            ("mean_hu", m.mean_hu, "HU", "mean over the structure"),
            ("sd_hu", m.sd_hu, "HU", "SD over the structure (ddof=1)"),
            ("fat_fraction", m.fat_fraction, "1", fat_m),
            ("lean_fraction", m.lean_fraction, "1", lean_m),
            ("fat_volume", m.fat_volume_cm3, "cm3", "IMAT voxels x voxel volume"),
            ("lean_volume", m.lean_volume_cm3, "cm3", "lean voxels x voxel volume"),
            ("mass", m.mass_g, "g", f"volume x density {dens}"),
            ("lean_mass", m.lean_mass_g, "g", f"lean volume x density {dens}"),
        ]
        for q, v, u, meth in spec:
            if q == "sd_hu" and not np.isfinite(v):  # one voxel: the row says why
                rows.append(ResultRow(m.key, q, None, u, meth,
                                      [SD_NOT_MEASURABLE, *m.flags]))
            else:
                rows.append(ResultRow(m.key, q, v, u, meth, list(m.flags)))
    rows += group_total_rows(measures, density)
    return rows


def group_names(key: str) -> list[str]:
    """The group totals (:func:`group_totals`) a muscle ``key`` counts in:
    ``<region>_<side>``, ``<region>_total`` and the same for ``lower_limb`` when its
    region is one of :data:`LOWER_LIMB_REGIONS`; [] for a structure of no region."""
    st = structure(key)
    regions = [st.region] if st.region else []
    if st.region in LOWER_LIMB_REGIONS:
        regions.append("lower_limb")
    return [name for region in regions for name in (f"{region}_{st.side}", f"{region}_total")
            if not (st.side == "none" and name.endswith("_none"))]


def group_totals(measures: list[MuscleMeasure]
                 ) -> dict[str, dict[str, float | bool | str | list[str]]]:
    """Sum volume, mass and lean mass per region and side.

    Returns
    -------
    dict
        ``name -> {'volume_cm3', 'mass_g', 'lean_mass_g', 'partial', 'members',
        'density_model'}`` for names ``<region>_left``, ``<region>_right``,
        ``<region>_total`` and the same for ``lower_limb``; only groups with at least
        one measured member appear. ``density_model`` is the name of the density model
        of the members' masses (names joined by '+' if they differ).
    """
    groups: dict[str, list[MuscleMeasure]] = {}
    for m in measures:
        for name in group_names(m.key):
            groups.setdefault(name, []).append(m)
    out: dict[str, dict[str, float | bool | str | list[str]]] = {}
    for name, members in groups.items():
        out[name] = {
            "volume_cm3": float(sum(m.volume_cm3 for m in members)),
            "mass_g": float(sum(m.mass_g for m in members)),
            "lean_mass_g": float(sum(m.lean_mass_g for m in members)),
            "partial": any(m.partial for m in members),
            "members": [m.key for m in members],
            "density_model": "+".join(sorted({m.density_model for m in members})),
        }
    return out


def group_total_rows(measures: list[MuscleMeasure], density: DensityModel) -> list[ResultRow]:
    """Rows of :func:`group_totals`; a total with a partial member is flagged partial."""
    rows: list[ResultRow] = []
    region_order = [*MUSCLE_REGIONS, "lower_limb"]
    totals = group_totals(measures)

    def sort_key(name: str) -> tuple[int, str]:
        region = name.rsplit("_", 1)[0]
        return (region_order.index(region) if region in region_order else 99, name)

    for name in sorted(totals, key=sort_key):
        t = totals[name]
        members = ", ".join(t["members"])  # type: ignore[arg-type]
        flags = [PARTIAL_TOTAL_FLAG] if t["partial"] else []
        method = f"sum over {members}"
        rows += [
            ResultRow(name, "volume", t["volume_cm3"], "cm3", method, list(flags)),
            ResultRow(name, "mass", t["mass_g"], "g", f"{method}; {density.description}",
                      list(flags)),
            ResultRow(name, "lean_mass", t["lean_mass_g"], "g",
                      f"{method}; {density.description}", list(flags)),
        ]
    return rows
