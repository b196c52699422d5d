"""Write a case report (HTML and/or PDF) into a folder, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_path, atomic_write_text, check_output_dir
from ..errors import InputError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from ..image import CTImage, LabelMap
    from ..results import Results

#: Report formats and their file names.
REPORT_FORMATS = {"html": "report.html", "pdf": "report.pdf"}


def require_package(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"The {what} needs {module}, which is not installed: pip install "
            "\"ctmusclebone[reports]\".")


def write_report(results: Results, ct: CTImage, labels: LabelMap,
                 out_dir: str | os.PathLike[str], uncertainty: np.ndarray | None = None,
                 formats: tuple[str, ...] = ("html", "pdf"), deidentify: bool = False
                 ) -> dict[str, Path]:
    """Write ``report.html`` and/or ``report.pdf`` (same content) into ``out_dir``.

    See :func:`CTMuscleBoneLib.pipeline.write_report`. Returns {format: path}.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in REPORT_FORMATS]
    if unknown or not formats:
        raise InputError(f"Unknown report format(s) {', '.join(unknown) or '(none)'}: choose "
                         f"from {', '.join(REPORT_FORMATS)}.")
    require_package("matplotlib", "report's images")
    if "pdf" in formats:
        require_package("reportlab", "PDF report")
    from .build import build_report

    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(results, ct, labels, uncertainty, deidentified=deidentify)
    paths: dict[str, Path] = {}
    if "html" in formats:
        from .html import render_html

        paths["html"] = out / REPORT_FORMATS["html"]
        atomic_write_text(paths["html"], render_html(report))
    if "pdf" in formats:
        from .pdf import render_pdf

        paths["pdf"] = out / REPORT_FORMATS["pdf"]
        with atomic_path(paths["pdf"]) as tmp:
            render_pdf(report, tmp)
    return paths
