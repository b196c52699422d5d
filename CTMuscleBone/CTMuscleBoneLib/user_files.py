"""Reading the user's text files (JSON and CSV): one reader for every option that takes one.

Every JSON or CSV file a user names (``--names`` and the names file beside a label map,
``--alm-model``, ``--dxa-model``, ``--bmd-reference``, ``--calibration-file``,
``--references``, ``--phantom``, the paired-data CSV of ``fit-alm``, ``fit-dxa`` and
``validate-bmd``, the case list of ``batch``, an L3 cut-off table) is read here, so each
one accepts the same files and refuses the same problems with the same one-line
:class:`~CTMuscleBoneLib.errors.InputError`, naming the file:

* a missing file or a folder given for a file;
* a file that cannot be opened (permissions);
* text that is not UTF-8 (a UTF-8 byte-order mark is accepted and dropped; UTF-16,
  e.g. a file saved as "Unicode" by Notepad or Excel, is named as such);
* for JSON, invalid JSON, with the line and column.

Each caller then checks its own schema.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError

_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _cap(what: str) -> str:
    return what[:1].upper() + what[1:]


def read_text_file(path: str | os.PathLike[str], what: str, hint: str = "") -> str:
    """The text of the user's file ``path``, decoded as UTF-8 (with or without a BOM).

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for messages, e.g. 'ALM model file' or 'label names file'.
    hint : str
        Appended to the messages about the file's content (e.g. where its format is
        described).

    Raises
    ------
    InputError
        The file is missing, a folder, unreadable, or not UTF-8 text.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{_cap(what)} {p} is a folder: give the path of the file itself.")
    if not p.is_file():
        raise InputError(f"{_cap(what)} not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read {what} {p}: {exc.strerror or exc}.") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
        why = (f"it is {encoding} text (it starts with a {encoding} byte-order mark)"
               if encoding else f"it is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                f"offset {exc.start})")
        raise InputError(f"Cannot read {what} {p}: {why}. Save it as UTF-8 and try "
                         f"again.{' ' + hint if hint else ''}") from None


def parse_json(text: str, what: str, where: str, hint: str = "",
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
               ) -> Any:
    """``json.loads(text)``; invalid JSON is an InputError naming ``what`` ``where``,
    the line and the column."""
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise InputError(f"Cannot read {what} {where}: not valid JSON ({exc.msg} at line "
                         f"{exc.lineno}, column {exc.colno}). "
                         f"{hint or 'Fix the file and try again.'}") from None


def read_json_file(path: str | os.PathLike[str], what: str, hint: str = "",
                   object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
                   ) -> Any:
    """The parsed JSON of the user's file ``path`` (see :func:`read_text_file`).

    Raises
    ------
    InputError
        Missing, a folder, unreadable, not UTF-8, or not valid JSON.
    """
    text = read_text_file(path, what, hint)
    return parse_json(text, what, str(path), hint, object_pairs_hook)
