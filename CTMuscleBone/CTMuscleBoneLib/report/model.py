"""The report's content, independent of its rendering (HTML or PDF).

A :class:`Report` is a title, banners, a case header, :class:`Section` objects made of
:class:`Block` objects (figures beside value tables), quality items and provenance.
Every value cell of a :class:`Table` names the Results row it shows
(``structure``, ``quantity``), so renderers and tests can tie each number shown to the
results model.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Figure:
    """An image of the report: PNG bytes, or the reason it is absent.

    Attributes
    ----------
    key : str
        Stable identifier ('femur_right', 'spine', 'muscles', 'plot_t_score', ...).
    title : str
    png : bytes or None
        The PNG; None when the content is absent (``absent`` says why).
    caption : str
        What the image shows, its colours and marks.
    absent : str or None
    width_px, height_px : int
        Pixel size of the PNG (0 when absent).
    """

    key: str
    title: str
    png: bytes | None = None
    caption: str = ""
    absent: str | None = None
    width_px: int = 0
    height_px: int = 0


@dataclass
class Cell:
    """One table cell; ``structure``/``quantity`` name the Results row of a value cell."""

    text: str
    structure: str | None = None
    quantity: str | None = None
    #: Full flag texts of the row (shown on hover in HTML; the short tags in ``text``).
    detail: str = ""


@dataclass
class Table:
    """A value table: header, rows of cells, notes under it (e.g. not measurable)."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Block:
    """Figures with the tables of their values; ``side_by_side``: figures left, tables
    right (narrow tables), else figures above the tables."""

    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    side_by_side: bool = True


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


@dataclass
class QualityItem:
    """One line of the quality section; ``level`` 'ok', 'info' or 'warning'."""

    topic: str
    level: str
    text: str


@dataclass
class Report:
    title: str
    banners: list[str] = field(default_factory=list)
    header: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    quality: list[QualityItem] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    deidentified: bool = False

    def figures(self) -> list[Figure]:
        """Every figure of every section, in order."""
        return [f for s in self.sections for b in s.blocks for f in b.figures]

    def tables(self) -> list[Table]:
        """Every table of every section, in order."""
        return [t for s in self.sections for b in s.blocks for t in b.tables]
