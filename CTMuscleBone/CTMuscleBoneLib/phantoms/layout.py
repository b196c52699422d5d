"""Where the synthetic phantom's parts are: the fixed layout in the LPS patient frame.

All coordinates are LPS millimetres (+x patient LEFT, +y POSTERIOR, +z SUPERIOR). The
numbers are synthetic design choices of adult-like size (not measurements of a
population); they are fixed so that tests, demo and documentation agree.

Left/right structures are mirror images through the plane x = 0; ``side_sign`` is +1
for the left (x > 0) and -1 for the right.

========================  =====================================================
Part                      Layout (left side; right = x mirrored)
========================  =====================================================
femoral head centre       (+90, 0, 0)
femoral shaft axis        that of the femur built (default: vertical through
                          (+131.2, +8.8, -35.4), the femur module's neck-shaft point)
lumbar vertebrae          L5..L1 body centres at x = 0, y = +40, z = 78 + 37 n
                          (n = 0 for L5 ... 4 for L1); L5 bottom about z = +63;
                          ``lumbar_count`` 4: L5..L2 only; 6: one more lumbar-type
                          vertebra (L1's shape) at n = 5, labelled
                          ``vertebrae_lumbar`` (the anatomy has no L6)
sacrum                    below L5, centre (0, +55, +25)
hip bone                  acetabulum around the head, ilium wing above it at
                          x ~ +100, pubic and ischial rami below
trunk outline             elliptic cylinder centre (0, +20), semi-axes 190 x 140,
                          z from -40 to +280; subcutaneous fat 18 mm
thigh outlines            ellipses 76 x 88 (fat 12 mm) that follow the femoral
                          shaft, z from -300 to -40
calibration phantom       under the body (posterior, y > +160), placed by its module
========================  =====================================================
"""

from __future__ import annotations

import numpy as np

#: Femoral head centres (LPS mm). Synthetic layout.
HEAD_CENTER_LEFT_MM = np.array([90.0, 0.0, 0.0])
HEAD_CENTER_RIGHT_MM = np.array([-90.0, 0.0, 0.0])

#: Default left femoral shaft axis: through the point where the neck axis meets the
#: shaft (head centre + 55 mm neck at a 130 deg neck-shaft angle and 12 deg
#: anteversion: the femur module's synthetic defaults) and vertical. The builder
#: replaces it by the axis of the femur actually built (``FemurPhantom.meeting_point``
#: and ``.shaft_axis``), so muscles and thigh outlines follow any femur parameters.
SHAFT_POINT_LEFT_MM = np.array([
    90.0 + 55.0 * np.sin(np.deg2rad(130.0)) * np.cos(np.deg2rad(12.0)),
    55.0 * np.sin(np.deg2rad(130.0)) * np.sin(np.deg2rad(12.0)),
    55.0 * np.cos(np.deg2rad(130.0)),
])
SHAFT_TILT_DEG = 0.0

#: z range (mm) of the trunk and thigh outlines (synthetic).
TRUNK_Z_MM = (-40.0, 280.0)
THIGH_Z_MM = (-300.0, -40.0)
#: Trunk outline: centre (x, y), semi-axes (x, y), subcutaneous fat thickness, mm.
TRUNK_CENTER_XY_MM = (0.0, 20.0)
TRUNK_SEMI_MM = (190.0, 140.0)
TRUNK_FAT_MM = 18.0
#: Thigh outline relative to the shaft axis (dx lateral-positive, dy) and size, mm.
THIGH_OFFSET_MM = (-12.0, -12.0)
THIGH_SEMI_MM = (76.0, 88.0)
THIGH_FAT_MM = 12.0

#: Lumbar vertebral body centres (x, y, z) mm, L5 first; 37 mm pitch (synthetic:
#: ~28 mm body + ~9 mm disc).
LUMBAR_LEVELS = ("L5", "L4", "L3", "L2", "L1")
LUMBAR_Y_MM = 40.0
LUMBAR_Z0_MM = 78.0
LUMBAR_PITCH_MM = 37.0

#: Lumbar counts a phantom can have (4: transitional anatomy without L1; 6: one extra
#: lumbar-type vertebra above L1). 5 is the default layout.
LUMBAR_COUNTS = (4, 5, 6)
#: Anatomy key of the extra (sixth) lumbar vertebra: the anatomy has no L6, so it is
#: labelled "lumbar vertebra, level not assigned" and the truth says where it is.
EXTRA_LUMBAR_KEY = "vertebrae_lumbar"


def lumbar_stack(count: int = 5) -> list[tuple[str, str, np.ndarray]]:
    """The lumbar vertebrae of a phantom with ``count`` (4, 5, 6) lumbar vertebrae.

    Returns
    -------
    list of (key, shape_level, centre)
        Caudal first: anatomy key (``vertebrae_L5`` ... or :data:`EXTRA_LUMBAR_KEY`),
        the level whose default shape it takes ('L5'..'L1') and the body centre (3,)
        LPS mm. 4: L5..L2; 5: L5..L1; 6: L5..L1 plus a vertebra of L1's shape one
        pitch (37 mm) above L1.
    """
    if count not in LUMBAR_COUNTS:
        raise ValueError(f"lumbar count must be one of {LUMBAR_COUNTS}")
    out = [(f"vertebrae_{lv}", lv, lumbar_center_mm(lv)) for lv in LUMBAR_LEVELS[:count]]
    if count == 6:
        c = lumbar_center_mm("L1") + [0.0, 0.0, LUMBAR_PITCH_MM]
        out.append((EXTRA_LUMBAR_KEY, "L1", c))
    return out


def cranial_extension_mm(count: int = 5) -> float:
    """How far (mm) trunk outline, vessels, psoas, autochthon and the 'lumbar' / 'full'
    regions reach further up for ``count`` lumbar vertebrae: one pitch for 6, else 0."""
    return LUMBAR_PITCH_MM if count == 6 else 0.0


#: Named z ranges (mm) of the regions a spec can ask for.
REGIONS_Z_MM: dict[str, tuple[float, float]] = {
    "hip": (-110.0, 70.0),
    "lumbar": (45.0, 260.0),
    "thigh": (-300.0, -90.0),
    "full": (-300.0, 280.0),
}


def side_sign(side: str) -> float:
    """+1 for 'left' (LPS +x), -1 for 'right'."""
    return 1.0 if side == "left" else -1.0


def mirror(point_mm, side: str) -> np.ndarray:  # noqa: ANN001 - array-like
    """A left-side layout point, mirrored through x = 0 for the right side."""
    p = np.array(point_mm, dtype=float)
    p[0] *= side_sign(side)
    return p


def head_center_mm(side: str) -> np.ndarray:
    """Femoral head centre (3,) LPS mm."""
    return HEAD_CENTER_LEFT_MM.copy() if side == "left" else HEAD_CENTER_RIGHT_MM.copy()


ShaftLine = tuple[np.ndarray, np.ndarray]


def shaft_line(side: str) -> ShaftLine:
    """Default femoral shaft axis as (point (3,), slope (2,)): x, y at height z are
    ``point[:2] + slope * (z - point[2])``."""
    p = mirror(SHAFT_POINT_LEFT_MM, side)
    slope = np.array([side_sign(side) * np.tan(np.deg2rad(SHAFT_TILT_DEG)), 0.0])
    return p, slope


def lumbar_center_mm(level: str) -> np.ndarray:
    """Body centre (3,) LPS mm of a lumbar level 'L1'..'L5'."""
    n = LUMBAR_LEVELS.index(level)
    return np.array([0.0, LUMBAR_Y_MM, LUMBAR_Z0_MM + LUMBAR_PITCH_MM * n])


def shaft_line_from_axis(point_mm: np.ndarray, axis: np.ndarray) -> ShaftLine:
    """Shaft line (point, slope) from a point on the axis and its direction (3,)."""
    a = np.asarray(axis, dtype=float)
    if abs(a[2]) < 0.5:
        raise ValueError("the femoral shaft axis must be closer to vertical than 60 deg")
    return np.asarray(point_mm, dtype=float).copy(), a[:2] / a[2]
