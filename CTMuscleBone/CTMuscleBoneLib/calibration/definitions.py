"""Calibration phantom definitions: rods and their densities, kept as data.

The bundled definitions live in ``calibration/phantoms/*.json`` (B-MAS200, Mindways
Model 3, QRM-BDC). Rod densities are phantom- and lot-specific: a user copies a file,
enters the values of their phantom's certificate and passes the path to
:func:`load_phantom_definition`.

File format (JSON object)::

    {
      "name": "B-MAS200", "manufacturer": "...", "material": "HA" | "K2HPO4",
      "model": "linear" | "two_component_water_k2hpo4",      (optional, default linear)
      "rods": [{"name": "A", "density_mg_cm3": 0.0,
                "water_density_mg_cm3": 1012.25}, ...],     (water only for two_component)
      "two_component": {"water_displacement_per_mg_k2hpo4": 0.2174,
                        "water_reference_mg_cm3": 999.6},   (two_component only)
      "layout": {"rod_diameter_mm": 10.0 | null, "rod_pitch_mm": 25.0 | null},
      "source": "...", "verified": false
    }

Rods are listed in their physical order (label ``calibration_rod_k`` is rod k, k = 1..6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..user_files import read_json_file
from .model import MATERIALS

#: At most six rods: the anatomy table has calibration_rod_1..6.
MAX_RODS = 6
MODELS = ("linear", "two_component_water_k2hpo4")

#: Bundled definition files, by lower-case name and aliases.
_BUNDLED = {
    "b-mas200": "B-MAS200.json",
    "bmas200": "B-MAS200.json",
    "b-mas 200": "B-MAS200.json",
    "mindways model 3": "Mindways-Model-3.json",
    "mindways-model-3": "Mindways-Model-3.json",
    "mindways": "Mindways-Model-3.json",
    "qrm-bdc": "QRM-BDC.json",
    "qrm-bdc/6": "QRM-BDC.json",
    "qrm": "QRM-BDC.json",
}


@dataclass(frozen=True)
class Rod:
    """One calibration rod: its name, mineral density and (two-component) water density."""

    name: str
    density_mg_cm3: float
    water_density_mg_cm3: float | None = None


@dataclass(frozen=True)
class PhantomDefinition:
    """A calibration phantom: material, rods in physical order, optional layout.

    Attributes
    ----------
    rod_diameter_mm, rod_pitch_mm : float or None
        Nominal rod diameter and centre-to-centre spacing, when known (used by the
        synthetic phantom and as a hint by automatic rod detection).
    water_displacement, water_reference_mg_cm3 : float
        Constants of the two-component water/K2HPO4 model (Mindways QCT PRO User Guide).
    """

    name: str
    material: str
    rods: tuple[Rod, ...]
    model: str = "linear"
    manufacturer: str = ""
    rod_diameter_mm: float | None = None
    rod_pitch_mm: float | None = None
    water_displacement: float = 0.2174
    water_reference_mg_cm3: float = 999.6
    source: str = ""
    verified: bool = False
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def densities_mg_cm3(self) -> np.ndarray:
        """Rod mineral densities, shape (n_rods,), mg/cm3 of :attr:`material`."""
        return np.array([r.density_mg_cm3 for r in self.rods], dtype=float)

    @property
    def two_component(self) -> bool:
        return self.model == "two_component_water_k2hpo4"

    def expected_hu(self, slope_mg_cm3_per_hu: float, intercept_mg_cm3: float) -> np.ndarray:
        """CT numbers of the rods on a scanner with the given calibration line.

        Linear model: ``hu = (density - intercept) / slope``. Two-component model
        (QCT PRO User Guide): ``hu = sigma_ct * K + beta_ct + (water - 999.6)
        + 0.2174 * K`` with ``sigma_ct = 1 / slope`` and ``beta_ct = -intercept / slope``.

        Returns
        -------
        np.ndarray, (n_rods,)
        """
        rho = self.densities_mg_cm3
        hu = (rho - intercept_mg_cm3) / slope_mg_cm3_per_hu
        if self.two_component:
            water = np.array([r.water_density_mg_cm3 for r in self.rods], dtype=float)
            hu = hu + (water - self.water_reference_mg_cm3) + self.water_displacement * rho
        return hu

    def hu_order(self) -> np.ndarray:
        """Rod indices sorted by increasing expected CT number (for matching by order).

        Uses a nominal 0.8 mg/cm3/HU line (unvalidated default, the order of clinical
        K2HPO4 calibrations at 120 kVp); for one-component rods the order is the order of
        the densities whatever the (positive) slope.
        """
        return np.argsort(self.expected_hu(0.8, 0.0), kind="stable")

    def describe(self) -> str:
        return f"{self.name} ({len(self.rods)} rods, {self.material})"


def available_phantoms() -> list[str]:
    """Names of the bundled phantom definitions."""
    return sorted({_read_bundled(f)["name"] for f in set(_BUNDLED.values())})


def _read_bundled(filename: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("phantoms", filename).read_text("utf-8")
    return json.loads(text)


def load_phantom_definition(
    spec: str | Path | dict[str, Any] | PhantomDefinition,
) -> PhantomDefinition:
    """Load a phantom definition by bundled name, JSON file path or dict.

    Parameters
    ----------
    spec : str, Path, dict or PhantomDefinition
        A bundled name (``'B-MAS200'``, ``'Mindways Model 3'``, ``'QRM-BDC'``; case
        does not matter), the path of a JSON definition file, or its parsed content.

    Raises
    ------
    InputError
        Unknown name, unreadable file, or a definition that is not valid (the message
        names the field and what to do).
    """
    if isinstance(spec, PhantomDefinition):
        return spec
    if isinstance(spec, dict):
        return _validate(spec, where="phantom definition")
    key = str(spec).strip().lower()
    if key in _BUNDLED:
        return _validate(_read_bundled(_BUNDLED[key]), where=f"bundled phantom '{spec}'")
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"Unknown calibration phantom '{spec}': not a bundled definition "
            f"({', '.join(available_phantoms())}) and no such file. Pass one of these "
            "names or the path of a JSON definition file (see docs/calibration.md)."
        )
    data = read_json_file(path, "phantom definition",
                          hint="It must be a JSON file (see docs/calibration.md for the "
                               "format).")
    defn = _validate(data, where=f"phantom definition {path}")
    return PhantomDefinition(**{**defn.__dict__, "path": str(path)})


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{where}: {what} must be a finite number, got {value!r}.")
    return float(value)


def _validate(d: Any, where: str) -> PhantomDefinition:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a JSON object with 'name', 'material', 'rods'.")
    verified = d.get("verified", False)
    if not isinstance(verified, bool):  # bool("false") would be True
        raise InputError(f"{where}: 'verified' must be true or false without quotes, got "
                         f"{verified!r}.")
    for k in ("name", "material", "rods"):
        if k not in d:
            raise InputError(f"{where}: the field '{k}' is missing; add it (see "
                             "docs/calibration.md for the format).")
    name = d["name"]
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: 'name' must be a non-empty text.")
    material = d["material"]
    if material not in MATERIALS:
        raise InputError(
            f"{where}: 'material' is {material!r}; it must be one of {MATERIALS} "
            "(K2HPO4 and hydroxyapatite densities are not interchangeable)."
        )
    model = d.get("model", "linear")
    if model not in MODELS:
        raise InputError(f"{where}: 'model' is {model!r}; use one of {MODELS}.")
    if model == "two_component_water_k2hpo4" and material != "K2HPO4":
        raise InputError(f"{where}: the two-component water/K2HPO4 model needs material "
                         "'K2HPO4'.")
    rods_in = d["rods"]
    if not isinstance(rods_in, list) or not 2 <= len(rods_in) <= MAX_RODS:
        raise InputError(
            f"{where}: 'rods' must be a list of 2 to {MAX_RODS} rods, got "
            f"{len(rods_in) if isinstance(rods_in, list) else type(rods_in).__name__}."
        )
    rods = []
    for i, r in enumerate(rods_in, start=1):
        if not isinstance(r, dict) or "density_mg_cm3" not in r:
            raise InputError(f"{where}: rod {i} needs a 'density_mg_cm3' value.")
        rho = _number(r["density_mg_cm3"], f"rod {i} 'density_mg_cm3'", where)
        water = None
        if model == "two_component_water_k2hpo4":
            if "water_density_mg_cm3" not in r:
                raise InputError(f"{where}: rod {i} needs 'water_density_mg_cm3' (from the "
                                 "phantom certificate) for the two-component model.")
            water = _number(r["water_density_mg_cm3"], f"rod {i} 'water_density_mg_cm3'", where)
        rods.append(Rod(str(r.get("name", i)), rho, water))
    dens = np.array([r.density_mg_cm3 for r in rods])
    if model == "linear" and np.unique(dens).size != dens.size:
        raise InputError(f"{where}: two rods have the same density; a linear calibration "
                         "needs distinct rod densities.")
    layout = d.get("layout") or {}
    if not isinstance(layout, dict):
        raise InputError(f"{where}: 'layout' must be a JSON object.")
    diam = layout.get("rod_diameter_mm")
    pitch = layout.get("rod_pitch_mm")
    diam = None if diam is None else _number(diam, "layout 'rod_diameter_mm'", where)
    pitch = None if pitch is None else _number(pitch, "layout 'rod_pitch_mm'", where)
    if (diam is not None and diam <= 0) or (pitch is not None and pitch <= 0):
        raise InputError(f"{where}: rod diameter and pitch must be positive.")
    tc = d.get("two_component") or {}
    return PhantomDefinition(
        name=name.strip(),
        material=material,
        rods=tuple(rods),
        model=model,
        manufacturer=str(d.get("manufacturer", "")),
        rod_diameter_mm=diam,
        rod_pitch_mm=pitch,
        water_displacement=float(tc.get("water_displacement_per_mg_k2hpo4", 0.2174)),
        water_reference_mg_cm3=float(tc.get("water_reference_mg_cm3", 999.6)),
        source=str(d.get("source", "")),
        verified=verified,
        raw=dict(d),
    )
