"""The case report: one content model, rendered to self-contained HTML and to PDF.

* :mod:`.model`: the content (sections, figures as PNG bytes, value tables whose cells
  name the Results row they show, quality items, provenance);
* :mod:`.build`: that content from a :class:`~CTMuscleBoneLib.results.Results`, the CT,
  the label map and the uncertainty map;
* :mod:`.images`: the source images (femur DXA views, lumbar spine with its trabecular
  ROIs, muscle slices with the segmentation and the uncertainty heatmap);
* :mod:`.plots`: values against their scales (T-score on the WHO scale, SMI against its
  cut-offs, vertebral vBMD against the ACR bands);
* :mod:`.html` and :mod:`.pdf`: the two renderers (HTML with inline CSS and images as
  data URIs; PDF with reportlab, no browser needed);
* :mod:`.write`: :func:`write_report`, called by
  :func:`CTMuscleBoneLib.pipeline.write_report`.

matplotlib and reportlab (the ``reports`` extra) are imported when a report is made.
"""

from __future__ import annotations

from .write import REPORT_FORMATS, write_report

__all__ = ["REPORT_FORMATS", "write_report"]
