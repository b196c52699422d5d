"""3D Slicer terminology (SNOMED CT codes) of the CTMuscleBone anatomy table.

Slicer names and colours segments through *terminologies*: JSON files listing
categories, types and type modifiers (laterality) by their DICOM/SNOMED CT codes. Only
some of our structures are in Slicer's DICOM master list, so the extension ships its
own file, generated from :mod:`CTMuscleBoneLib.anatomy` by :func:`terminology_dict`
(schema: dcmqi's ``segment-context-schema.json``, the format SlicerTotalSegmentator's
``SegmentationCategoryTypeModifier-TotalSegmentator.term.json`` uses).

The committed file ``CTMuscleBone/Resources/Terminology/CTMuscleBone.term.json`` is
rebuilt with::

    python -m CTMuscleBoneSlicer.terminology   # from the CTMuscleBone folder

and a test checks that it equals the freshly generated text.

Slicer identifies a type by (coding scheme, code value). A few structures share a
code (muscles whose own SNOMED CT code is not verified use "Muscle of lower limb"; the
calibration rods use "Phantom"): the file lists such a code once (named by the code
meaning, coloured like the first structure), and a segment tagged with it is
identified by its segment id or name, not by the tag (:func:`key_for_terminology_entry`
returns None for it).

A segment's tag is the serialized entry of Slicer's
``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``::

    context~SCT^category code^meaning~SCT^type code^meaning~SCT^modifier code^meaning~
    region context~^^~^^

This module imports nothing of Slicer except in :func:`load_terminology`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.atomic import atomic_write_text

#: Terminology context name (``SegmentationCategoryTypeContextName``) of our file.
CONTEXT_NAME = "CTMuscleBone"
#: Region context named in segment tags (as SlicerTotalSegmentator does); our segments
#: give no region, the structure itself is the type.
REGION_CONTEXT_NAME = "Anatomic codes - DICOM master list"
#: JSON schema the file follows (as in Slicer's and SlicerTotalSegmentator's files).
SCHEMA_URL = (
    "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"
)
#: The terminology file shipped with the extension.
TERMINOLOGY_FILE = (
    Path(__file__).resolve().parents[1] / "Resources" / "Terminology" / "CTMuscleBone.term.json"
)

_SIDE_ORDER = ("right", "left")  # the order Slicer's files list laterality modifiers in


def _code_fields(code: anatomy.Code) -> dict[str, Any]:
    value, scheme, meaning = code
    out: dict[str, Any] = {
        "CodeMeaning": meaning,
        "CodingSchemeDesignator": scheme,
        "CodeValue": value,
    }
    if scheme == "SCT":
        out["SNOMEDCTConceptID"] = value
    return out


def _types_by_code() -> dict[tuple[str, str], dict[tuple[str, str], list[anatomy.Structure]]]:
    """Category code -> type code -> structures using it, in anatomy-table order."""
    out: dict[tuple[str, str], dict[tuple[str, str], list[anatomy.Structure]]] = {}
    for st in anatomy.ANATOMY:
        cat = (st.snomed_category[1], st.snomed_category[0])
        typ = (st.snomed_type[1], st.snomed_type[0])
        out.setdefault(cat, {}).setdefault(typ, []).append(st)
    return out


def terminology_dict() -> dict[str, Any]:
    """The Slicer terminology (category / type / laterality) of the anatomy table.

    Returns
    -------
    dict
        JSON-ready terminology: ``SegmentationCategoryTypeContextName`` is
        :data:`CONTEXT_NAME`; one category per SNOMED category of the table, one type
        per distinct SNOMED type code in it, with Right/Left modifiers for paired
        structures and ``recommendedDisplayRGBValue`` (0..255) from the anatomy colours.
        ``3dSlicerLabel`` holds the anatomy key where a code names one structure.
    """
    categories: list[dict[str, Any]] = []
    by_category = _types_by_code()
    category_codes = {(st.snomed_category[1], st.snomed_category[0]): st.snomed_category
                      for st in anatomy.ANATOMY}
    for cat_id, types in by_category.items():
        cat = _code_fields(category_codes[cat_id])
        cat.pop("SNOMEDCTConceptID", None)  # not given for categories in Slicer's files
        cat.update({"cid": "7150", "contextGroupName": "SegmentationPropertyCategories",
                    "showAnatomy": False})
        type_list = []
        for structures in types.values():
            first = structures[0]
            entry = _code_fields(first.snomed_type)
            sides = {st.side for st in structures}
            paired = sides <= {"left", "right"}
            if paired:
                entry["paired"] = "Y"
                modifiers = []
                for side in _SIDE_ORDER:
                    of_side = [st for st in structures if st.side == side]
                    if not of_side:
                        continue
                    mod = _code_fields(anatomy.LATERALITY[side])
                    mod.update({"cid": "244", "contextGroupName": "Laterality",
                                "recommendedDisplayRGBValue": list(of_side[0].color_rgb)})
                    if len(of_side) == 1:
                        mod["3dSlicerLabel"] = of_side[0].key
                    modifiers.append(mod)
                entry["Modifier"] = modifiers
            else:
                entry["paired"] = "U"
                entry["recommendedDisplayRGBValue"] = list(first.color_rgb)
                if len(structures) == 1:
                    entry["3dSlicerLabel"] = first.key
            type_list.append(entry)
        cat["Type"] = type_list
        categories.append(cat)
    return {
        "SegmentationCategoryTypeContextName": CONTEXT_NAME,
        "@schema": SCHEMA_URL,
        "SegmentationCodes": {"Category": categories},
    }


def terminology_text() -> str:
    """The terminology file's text (JSON, 2-space indent, trailing newline)."""
    return json.dumps(terminology_dict(), indent=2) + "\n"


def write_terminology_file(path: str | os.PathLike[str] = TERMINOLOGY_FILE) -> Path:
    """Write :func:`terminology_text` to ``path`` atomically; returns the path."""
    atomic_write_text(path, terminology_text())
    return Path(path)


def _code_str(code: anatomy.Code | None) -> str:
    if code is None:
        return "^^"
    value, scheme, meaning = code
    return f"{scheme}^{value}^{meaning}"


def terminology_entry_for(key: str) -> str:
    """Serialized Slicer terminology entry of an anatomy key (a segment's tag).

    The same string as ``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``
    gives for context :data:`CONTEXT_NAME`, the structure's category, type and
    laterality, and region context :data:`REGION_CONTEXT_NAME` without a region.

    Raises
    ------
    KeyError
        When ``key`` is not in the anatomy table.
    """
    st = anatomy.structure(key)
    return "~".join((
        CONTEXT_NAME,
        _code_str(st.snomed_category),
        _code_str(st.snomed_type),
        _code_str(st.snomed_laterality),
        REGION_CONTEXT_NAME,
        "^^",
        "^^",
    ))


def _parse_code(part: str) -> tuple[str, str]:
    """(scheme, value) of a ``scheme^value^meaning`` entry part ('' when absent)."""
    fields = part.split("^")
    scheme = fields[0].strip() if fields else ""
    value = fields[1].strip() if len(fields) > 1 else ""
    return scheme, value


#: Type codes other tools use for a structure with another meaning in SNOMED CT: read as
#: that structure, never written. SlicerTotalSegmentator codes psoas major as SCT
#: 64038003, which is "Intercostal lymph node" (CTMuscleBoneLib.anatomy.SNOMED_SOURCE).
LEGACY_TYPE_CODES: dict[tuple[str, str], str] = {("SCT", "64038003"): "psoas_major"}


def key_for_terminology_entry(entry: str | None) -> str | None:
    """Anatomy key whose category, type and laterality codes match a serialized entry.

    Works for entries of any context (ours, Slicer's DICOM master list,
    TotalSegmentator's): only codes are compared, not names or context.

    Returns
    -------
    str or None
        The key, or None when the entry is empty or malformed, or its codes match no
        structure or several (codes shared by several structures, see module docstring).
    """
    if not entry:
        return None
    parts = entry.split("~")
    if len(parts) < 3:
        return None
    cat = _parse_code(parts[1])
    typ = _parse_code(parts[2])
    mod = _parse_code(parts[3]) if len(parts) > 3 else ("", "")
    if not typ[1]:
        return None
    side = "none"
    for s, code in anatomy.LATERALITY.items():
        if mod == (code[1], code[0]):
            side = s
    legacy = LEGACY_TYPE_CODES.get(typ)
    if legacy is not None:
        key = legacy if side == "none" else f"{legacy}_{side}"
        return key if key in anatomy.BY_KEY else None
    hits = [
        st.key for st in anatomy.ANATOMY
        if (st.snomed_type[1], st.snomed_type[0]) == typ and st.side == side
        and (not cat[1] or (st.snomed_category[1], st.snomed_category[0]) == cat)
    ]
    return hits[0] if len(hits) == 1 else None


def load_terminology(path: str | os.PathLike[str] = TERMINOLOGY_FILE,
                     logic: Any = None) -> str | None:
    """Load the terminology file into Slicer's Terminologies module.

    Parameters
    ----------
    path : path
        Terminology file (default: the one shipped with the extension).
    logic : vtkSlicerTerminologiesModuleLogic, optional
        Default: ``slicer.modules.terminologies.logic()`` when available.

    Returns
    -------
    str or None
        The loaded context name (:data:`CONTEXT_NAME`), or None when no Terminologies
        logic is available (outside Slicer) or loading failed.
    """
    if logic is None:
        try:
            import slicer

            logic = slicer.modules.terminologies.logic()
        except (ImportError, AttributeError):
            return None
    name = logic.LoadTerminologyFromFile(str(path))
    return name or None


if __name__ == "__main__":  # pragma: no cover - regenerates the shipped file
    print(write_terminology_file())
