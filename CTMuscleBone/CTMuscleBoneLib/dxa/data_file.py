"""Reading the JSON data files of :mod:`CTMuscleBoneLib.dxa`: bundled or a user's file.

One place for what the CT-to-DXA model, the reference tables and the material table
share: the bundled file is read once per process; a user's file must exist; invalid
JSON is an :class:`~CTMuscleBoneLib.errors.InputError` naming the file and line. Each
caller checks its own schema.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from typing import Any

from ..user_files import parse_json, read_text_file


@cache
def _bundled_text(relative: str) -> str:
    return resources.files("CTMuscleBoneLib").joinpath(relative).read_text(encoding="utf-8")


def read_json(what: str, path: str | os.PathLike[str] | None, bundled: str,
              bundled_where: str) -> tuple[Any, str]:
    """The parsed JSON of ``path``, or of the bundled file ``bundled`` when ``path`` is None.

    Parameters
    ----------
    what : str
        Name of the file's kind in messages, e.g. 'CT-to-DXA model'.
    path : path or None
    bundled : str
        Path of the bundled file under the package, e.g. 'data/references/nhanes3.json'.
    bundled_where : str
        How messages and provenance name the bundled file.

    Returns
    -------
    (object, str)
        The JSON value and where it was read from (``bundled_where`` or the path).

    Raises
    ------
    InputError
        A missing file or invalid JSON.
    """
    if path is None:
        text, where = _bundled_text(bundled), bundled_where
    else:
        text, where = read_text_file(path, f"{what} file"), str(path)
    return parse_json(text, f"{what} file", where), where
