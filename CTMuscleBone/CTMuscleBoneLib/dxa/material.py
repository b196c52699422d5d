"""One reference material for every BMD: K2HPO4-referenced densities -> hydroxyapatite.

A phantom or internal calibration gives mineral density in the material of its
standards: dipotassium phosphate solution (K2HPO4) or hydroxyapatite (HA). The two are
not interchangeable: the same bone reads lower on the K2HPO4 scale. Goodsitt (Bone Miner
1992;19:145-158) measured the ratio BMD_K2HPO4 / BMD_HA = 0.86 at 80 kVp and 0.81 at
140 kVp (single energy, all body sizes, intercepts about 0). The ratio is data
(``data/material_k2hpo4_ha.json``, with its source and what was verified);
CTMuscleBone interpolates linearly in kVp between the two published points (its own
assumption), uses the end value outside them, and assumes 120 kVp when the kVp is
unknown (then the row says so).

:func:`to_hydroxyapatite` turns a :class:`~CTMuscleBoneLib.calibration.model.Calibration`
into the equivalent HA calibration (slope and intercept divided by the ratio), so every
density derived from it (vBMD, CT-aBMD) is HA-equivalent before any threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from ..calibration.model import Calibration
from ..errors import InputError
from .data_file import read_json

SCHEMA = "ctmusclebone-material-conversion/1"
#: The one material every CTMuscleBone BMD is reported in.
TARGET_MATERIAL = "HA"
_DATA = "data/material_k2hpo4_ha.json"


@dataclass(frozen=True)
class MaterialTable:
    """The K2HPO4 -> HA ratio by kVp, read from the data file.

    Attributes
    ----------
    kvp : np.ndarray, (n,)
        Tube voltages of the published points, ascending.
    ratio : np.ndarray, (n,)
        BMD_K2HPO4 / BMD_HA at those voltages (dimensionless).
    default_kvp : float
        kVp assumed when the scan's kVp is unknown.
    source, verified : str
    """

    kvp: np.ndarray
    ratio: np.ndarray
    default_kvp: float
    source: str
    verified: str

    def ratio_at(self, kvp: float) -> float:
        """The ratio at ``kvp``: linear between published points, end values outside."""
        return float(np.interp(float(kvp), self.kvp, self.ratio))


@dataclass(frozen=True)
class MaterialConversion:
    """How a calibration was put on the HA scale.

    Attributes
    ----------
    from_material : str
        'K2HPO4' or 'HA' (HA: nothing to convert, ``ratio`` 1).
    ratio : float
        BMD_from / BMD_HA used; HA density = density / ratio.
    kvp : float or None
        kVp the ratio was chosen for (None when nothing was converted).
    kvp_known : bool
        False when the scan's kVp was unknown and the default was assumed.
    """

    from_material: str
    ratio: float = 1.0
    kvp: float | None = None
    kvp_known: bool = True

    @property
    def converted(self) -> bool:
        return self.from_material != TARGET_MATERIAL

    def method_text(self) -> str:
        """Text appended to a row's method, e.g. 'HA-equivalent (K2HPO4 / 0.827 ...)'."""
        if not self.converted:
            return "HA-equivalent (hydroxyapatite calibration)"
        return (f"HA-equivalent: {self.from_material} density / {self.ratio:.3f} "
                f"({self.kvp:g} kVp; Goodsitt, Bone Miner 1992)")

    def flags(self) -> list[str]:
        """One flag for a conversion whose kVp had to be assumed; info otherwise."""
        if not self.converted:
            return []
        if not self.kvp_known:
            return [f"warning: kVp unknown: the K2HPO4-to-HA ratio for {self.kvp:g} kVp "
                    f"({self.ratio:.3f}) was assumed (0.86 at 80 kVp to 0.81 at 140 kVp); "
                    "state the kVp with --kvp"]
        return [f"info: converted from K2HPO4 to hydroxyapatite (ratio {self.ratio:.3f} at "
                f"{self.kvp:g} kVp)"]

    def provenance_entry(self) -> dict[str, Any]:
        table = load_material_table()
        return {"kind": "reference material conversion", "from": self.from_material,
                "to": TARGET_MATERIAL, "ratio": self.ratio, "kvp": self.kvp,
                "kvp_known": self.kvp_known, "source": table.source if self.converted else None}


@lru_cache(maxsize=1)
def load_material_table() -> MaterialTable:
    """Read and check the bundled K2HPO4 -> HA table (once per process: it is package
    data; its arrays are read-only)."""
    d, _ = read_json("K2HPO4 -> HA table", None, _DATA, _DATA)
    if d.get("schema") != SCHEMA or d.get("from_material") != "K2HPO4" \
            or d.get("to_material") != TARGET_MATERIAL:
        raise InputError(f"{_DATA} is not a K2HPO4 -> HA conversion table ({SCHEMA}).")
    pts = sorted((float(p["kvp"]), float(p["ratio"])) for p in d["points"])
    if not pts or not all(40.0 <= k <= 160.0 and 0.5 < r < 1.5 for k, r in pts):
        raise InputError(f"{_DATA}: implausible kVp or ratio.")
    kvp, ratio = np.array([k for k, _ in pts]), np.array([r for _, r in pts])
    kvp.setflags(write=False)
    ratio.setflags(write=False)
    return MaterialTable(kvp, ratio, float(d["default_kvp"]), str(d["source"]),
                         str(d["verified"]))


def conversion_for(material: str | None, kvp: float | None) -> MaterialConversion:
    """The conversion of densities in ``material`` at ``kvp`` to the HA scale.

    Raises
    ------
    InputError
        For a material other than 'K2HPO4' or 'HA'.
    """
    if material == TARGET_MATERIAL:
        return MaterialConversion(TARGET_MATERIAL)
    if material != "K2HPO4":
        raise InputError(f"Unknown calibration material '{material}': K2HPO4 or HA.")
    table = load_material_table()
    known = kvp is not None and np.isfinite(kvp) and kvp > 0
    used = float(kvp) if known else table.default_kvp  # type: ignore[arg-type]
    return MaterialConversion("K2HPO4", table.ratio_at(used), used, bool(known))


def to_hydroxyapatite(calibration: Calibration, kvp: float | None
                      ) -> tuple[Calibration, MaterialConversion | None]:
    """The calibration on the HA scale, and how it was converted.

    Parameters
    ----------
    calibration : Calibration
        Any; an uncalibrated one is returned as it is (conversion None).
    kvp : float or None
        Tube voltage of the scan (``ct.metadata.kvp``).

    Returns
    -------
    (Calibration, MaterialConversion or None)
        A calibration with ``material='HA'`` whose line gives HA-equivalent mg/cm3
        (slope and intercept divided by the ratio). Method texts should still name the
        original calibration (its ``method_text()``) and the conversion
        (:meth:`MaterialConversion.method_text`).
    """
    if not calibration.calibrated:
        return calibration, None
    conv = conversion_for(calibration.material, kvp)
    if not conv.converted:
        return calibration, conv
    assert calibration.slope_mg_cm3_per_hu is not None
    assert calibration.intercept_mg_cm3 is not None
    ha = replace(calibration, material=TARGET_MATERIAL,
                 slope_mg_cm3_per_hu=calibration.slope_mg_cm3_per_hu / conv.ratio,
                 intercept_mg_cm3=calibration.intercept_mg_cm3 / conv.ratio)
    return ha, conv
