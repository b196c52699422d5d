"""Coded concepts of the DICOM outputs: units (UCUM), quantities (DCM, SNOMED CT) and
the local coding scheme ``99CTMB``.

Every code here was checked against DICOM PS3.16 as shipped in pydicom 3.0.2
(``pydicom.sr._concepts_dict``): the DCM and SCT codes and the UCUM units listed there.
UCUM units that PS3.16 does not list by name (``kg``, ``g``, ``g/cm2``, ``kg/m2``,
``cm2/m2``) are valid UCUM expressions (The Unified Code for Units of Measure,
ucum.org, version 2.1: ``g`` gram, prefix ``k``, ``/`` division, ``2`` exponent).

Quantities without a standard code get a local code of the coding scheme
:data:`LOCAL_SCHEME` (``99CTMB``; designators starting with ``99`` are private, DICOM
PS3.3 section 8.2): its code value is the CTMuscleBone quantity name (``abmd_total_hip``)
and its meaning the readable name (``aBMD total hip``). The SR names the scheme in its
CodingSchemeIdentificationSequence.

Nothing here imports highdicom: the tables are plain tuples ``(value, scheme, meaning)``.
"""

from __future__ import annotations

from ..results import quantity_label

#: (code value, coding scheme designator, code meaning)
Code = tuple[str, str, str]

#: The local coding scheme of CTMuscleBone quantities and categories.
LOCAL_SCHEME = "99CTMB"
LOCAL_SCHEME_NAME = "CTMuscleBone local codes"
LOCAL_SCHEME_ORGANIZATION = "CTMuscleBone project"

#: Result-row unit -> UCUM unit. T-scores and Z-scores (``SD``) are scores without unit
#: (UCUM ``1``); HU is UCUM ``[hnsf'U]``; years is UCUM ``a``.
UCUM_UNITS: dict[str, Code] = {
    "cm3": ("cm3", "UCUM", "cubic centimeter"),
    "mm3": ("mm3", "UCUM", "cubic millimeter"),
    "cm2": ("cm2", "UCUM", "square centimeter"),
    "cm2/m2": ("cm2/m2", "UCUM", "square centimeter per square meter"),
    "HU": ("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "mg/cm3": ("mg/cm3", "UCUM", "milligram per cubic centimeter"),
    "g/cm2": ("g/cm2", "UCUM", "gram per square centimeter"),
    "SD": ("1", "UCUM", "no units"),
    "1": ("1", "UCUM", "no units"),
    "%": ("%", "UCUM", "Percent"),
    "kg": ("kg", "UCUM", "kilogram"),
    "g": ("g", "UCUM", "gram"),
    "kg/m2": ("kg/m2", "UCUM", "kilogram per square meter"),
    "mm": ("mm", "UCUM", "millimeter"),
    "m": ("m", "UCUM", "meter"),
    "deg": ("deg", "UCUM", "degree"),
    "years": ("a", "UCUM", "year"),
}

#: Standard concept names of quantities (PS3.16: SCT 118565006 Volume [CID 7469];
#: DCM 112031 Attenuation Coefficient [CID 7469] with a derivation; SCT 118538004 Mass;
#: SCT 131190003 Radius [CID 7470]). Every other quantity gets a local code.
STANDARD_QUANTITIES: dict[str, Code] = {
    "volume": ("118565006", "SCT", "Volume"),
    "mean_hu": ("112031", "DCM", "Attenuation Coefficient"),
    "sd_hu": ("112031", "DCM", "Attenuation Coefficient"),
    "mass": ("118538004", "SCT", "Mass"),
    "head_radius": ("131190003", "SCT", "Radius"),
}
#: Derivation (DCM 121401, CID 7464) of quantities that share a concept name:
#: SCT 373098007 Mean, SCT 386136009 Standard Deviation.
DERIVATIONS: dict[str, Code] = {
    "mean_hu": ("373098007", "SCT", "Mean"),
    "sd_hu": ("386136009", "SCT", "Standard Deviation"),
}

#: TID 1500 fixed concepts (PS3.16): report title, procedure, algorithm family,
#: the concept of a qualitative evaluation whose value is not measurable.
REPORT_TITLE: Code = ("126000", "DCM", "Imaging Measurement Report")
PROCEDURE_CT: Code = ("77477000", "SCT", "Computed tomography")
ALGORITHM_FAMILY_AI: Code = ("123110", "DCM", "Artificial Intelligence")
#: Local concept of the TEXT item that gives the reason a quantity was not measured.
NOT_MEASURABLE_REASON: Code = ("not_measurable", LOCAL_SCHEME, "Reason not measurable")
#: DICOM PS3.15 E.1 de-identification method codes (CID 7050): Basic Application
#: Confidentiality Profile, Retain Patient Characteristics Option.
DEIDENTIFICATION_CODES: tuple[Code, ...] = (
    ("113100", "DCM", "Basic Application Confidentiality Profile"),
    ("113108", "DCM", "Retain Patient Characteristics Option"),
)


def ucum_unit(unit: str) -> Code | None:
    """UCUM code of a result-row unit, or None when it has none (the row then stays out
    of the numeric part of the SR)."""
    return UCUM_UNITS.get(unit)


def quantity_concept(quantity: str) -> Code:
    """Concept name of a quantity: standard where listed, else a local ``99CTMB`` code."""
    if quantity in STANDARD_QUANTITIES:
        return STANDARD_QUANTITIES[quantity]
    return local_code(quantity, quantity_label(quantity))


def local_code(value: str, meaning: str) -> Code:
    """A ``99CTMB`` code; the meaning is cut to the 64 characters DICOM allows (LO)."""
    return (value, LOCAL_SCHEME, meaning[:64])


def category_code(quantity: str, text: str) -> Code:
    """Local code of a category value (``osteopenia``): value ``<text as identifier>``."""
    ident = "_".join(str(text).strip().lower().replace("-", " ").split()) or "empty"
    return local_code(ident, str(text))
