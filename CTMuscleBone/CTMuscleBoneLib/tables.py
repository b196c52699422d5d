"""Reading CSV tables of paired data: one reader for every command that takes one.

``fit-alm``, ``fit-dxa`` and ``validate-bmd`` read CSV files of paired CT and DXA
values. They share this reader, so every one of them accepts the same files
(UTF-8 with or without a byte-order mark, spaces around names and values) and refuses
the same problems with the same messages (missing file, missing columns, no rows).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .user_files import read_text_file


@dataclass
class CsvTable:
    """A CSV file read as text.

    Attributes
    ----------
    path : Path
    header : list of str
        Column names, stripped.
    rows : list of (int, dict of str -> str)
        (line number in the file, {column: stripped value}) for every data row; a
        missing value is ''.
    """

    path: Path
    header: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def has(self, column: str) -> bool:
        return column in self.header


def read_csv_table(path: str | os.PathLike[str], required: Sequence[str] = (),
                   what: str = "CSV file", hint: str = "") -> CsvTable:
    """Read a CSV file whose first line names the columns.

    Parameters
    ----------
    path : path-like
    required : sequence of str
        Columns that must be present; an entry ``"a|b"`` is satisfied by either name.
    what : str
        What the file is, for messages ("Paired-data file").
    hint : str
        Appended to the missing-column message (e.g. the full list of columns).

    Raises
    ------
    InputError
        File missing or not UTF-8 text, required columns missing (the message names
        them and the columns found), no data rows.
    """
    p = Path(path)
    text = read_text_file(p, what)
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [r.replace("|", " (or ") + (")" if "|" in r else "") for r in required
               if not any(alt in header for alt in r.split("|"))]
    if missing:
        raise InputError(f"{p.name}: missing column(s) {', '.join(missing)}; found "
                         f"{', '.join(h for h in header if h) or 'none'}."
                         + (f" {hint}" if hint else ""))
    rows = [(line, {k: (v or "").strip() for k, v in row.items() if k})
            for line, row in enumerate(reader, start=2)]
    if not rows:
        raise InputError(f"{p.name}: no data rows.")
    return CsvTable(p, header, rows)
