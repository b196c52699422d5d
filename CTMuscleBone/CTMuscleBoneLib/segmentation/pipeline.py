"""Segment a CT with an installed model and write the outputs: the one place that does it.

Used by ``ctmusclebone segment``, ``analyze`` and ``demo`` and by the Slicer module's
logic, so every caller gets the same checks, outputs and synthetic-model warnings.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_text
from ..image import CTImage, LabelMap
from ..progress import ProgressCallback
from .inference import SegmentationResult, predict, resolve_device
from .model_card import ModelCard
from .registry import DEFAULT_MODEL, load_model

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..pipeline import SegmentOptions

REVIEW_COLUMNS = ("rank", "key", "label_value", "present", "volume_cm3", "mean_inside",
                  "mean_boundary", "score", "map_name")


@dataclass
class Segmentation:
    """A segmentation and the model card that made it."""

    card: ModelCard
    result: SegmentationResult

    def provenance_entry(self) -> dict[str, Any]:
        """What a Results provenance records about the model run."""
        return {
            "kind": "segmentation model",
            "name": self.card.name,
            "version": self.card.version,
            "synthetic": self.card.synthetic,
            "weights_sha256": self.card.weights.sha256,
            "mc_samples": self.result.mc_samples,
            "seed": self.result.seed,
            "device": self.result.device,
            "dropout_placement": self.result.dropout_placement,
            # output channels, background included: the heatmaps' full scale
            # (uncertainty.two_class_tie_value)
            "n_classes": self.card.n_channels,
            "warning": self.card.clinical_use_warning if self.card.synthetic else None,
            # how the one lumbar class was split and numbered (segmentation.vertebra_levels)
            "vertebra_levels": (self.result.vertebra_levels.to_dict()
                                if self.result.vertebra_levels is not None else None),
        }


def segment_ct(
    ct: CTImage,
    options: SegmentOptions,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Segmentation:
    """Segment ``ct`` with an installed model (default: the bundled demo model).

    Parameters
    ----------
    ct : CTImage
    options : SegmentOptions
        Model (None: the bundled demo model), Monte-Carlo samples T and seed (None: the
        card's), device; validated when the options are made.
    progress, cancel
        Progress callback and cancellation event, passed to inference.
    """
    samples, seed = options.samples, options.seed
    device = resolve_device(options.device)  # refused before the model is read
    card, network = load_model(options.model or DEFAULT_MODEL)
    inf = card.inference
    changes: dict[str, Any] = {}
    if samples is not None:
        changes["mc_samples"] = samples
        changes["mc_batch_size"] = min(inf.mc_batch_size, samples)
    if seed is not None:
        changes["seed"] = seed
    inf = replace(inf, **changes) if changes else inf
    result = predict(ct, network, card.input, inf, card.labels, device=device,
                     progress=progress, cancel=cancel, source=f"{card.name} {card.version}",
                     return_confidence=options.confidence, backend=options.backend)
    return Segmentation(card, result)


def write_segmentation(seg: Segmentation, ct: CTImage, out: Path,
                       input_ct: str | None = None,
                       input_sha256: str | None = None,
                       region: np.ndarray | None = None) -> dict[str, Path]:
    """Write labels, uncertainty maps and the review list into ``out`` (atomically).

    Files: ``labels.nii.gz`` + ``labels.labels.json``, ``uncertainty_<map>.nii.gz``
    (inside the body and near labels only, mantissa rounded: see
    :func:`compact_uncertainty`), ``review.json``, ``review.csv``, and
    ``confidence.nii.gz`` (max mean softmax) when the result carries it. ``review.json``
    also holds ``score_variants`` (every structure score variant, the input of
    ``ctmusclebone evaluate``'s variant table). ``region``: the
    :func:`uncertainty_region` of ``seg`` when the caller has it already.
    """
    from ..io_ct import write_image, write_label_map

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["labels"], paths["names"] = write_label_map(seg.result.label_map, out / "labels.nii.gz")
    keep = uncertainty_region(ct, seg.result.label_map) if region is None else region
    for name, arr in seg.result.uncertainty.items():
        paths[f"uncertainty_{name}"] = write_image(compact_uncertainty(arr, keep), ct.geometry,
                                                   out / f"uncertainty_{name}.nii.gz")
    if seg.result.confidence is not None:
        paths["confidence"] = write_image(compact_uncertainty(seg.result.confidence, keep),
                                          ct.geometry, out / "confidence.nii.gz")
    rows = [r.to_dict() for r in seg.result.review]
    doc = {
        "model": seg.provenance_entry(),
        "input_ct": input_ct,
        "input_ct_sha256": input_sha256,
        "mc_samples": seg.result.mc_samples,
        "seed": seg.result.seed,
        "device": seg.result.device,
        "review_map": seg.card.inference.review_map,
        "review_region": seg.card.inference.review_region,
        "structures": rows,
        "score_variants": {
            "predictive_variance": "mean over classes of the per-class variance",
            "structures": {v.key: v.scores for v in seg.result.score_variants},
        },
    }
    paths["review_json"] = out / "review.json"
    atomic_write_text(paths["review_json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REVIEW_COLUMNS)
    for i, r in enumerate(rows, 1):
        w.writerow([i] + ["" if r.get(c) is None else r.get(c) for c in REVIEW_COLUMNS[1:]])
    paths["review_csv"] = out / "review.csv"
    atomic_write_text(paths["review_csv"], buf.getvalue())
    return paths


def uncertainty_region(ct: CTImage, labels: LabelMap, margin_voxels: int = 2) -> np.ndarray:
    """Where uncertainty is worth storing and showing: the body and every labelled voxel.

    Returns a bool array (n0, n1, n2): :func:`CTMuscleBoneLib.body.body_mask` united with
    the labelled voxels (a calibration phantom outside the body included), dilated by
    ``margin_voxels``. Outside it the network's uncertainty is background speckle.
    """
    from scipy import ndimage

    from ..body import body_mask

    keep = body_mask(ct.hu) | (np.asarray(labels.array) > 0)
    return ndimage.binary_dilation(keep, iterations=margin_voxels) if margin_voxels else keep


#: Mantissa bits kept in stored uncertainty maps: relative rounding error <= 2**-6 (1.6 %).
STORED_MANTISSA_BITS = 5
#: Values below this fraction of a map's maximum are stored as 0 (0.1 %: below a
#: heatmap's colour step of 1/256 of its range).
STORED_FLOOR_FRACTION = 2.0 ** -10


def compact_uncertainty(arr: np.ndarray, keep: np.ndarray,
                        mantissa_bits: int = STORED_MANTISSA_BITS,
                        floor_fraction: float = STORED_FLOOR_FRACTION) -> np.ndarray:
    """An uncertainty map for storage: 0 outside ``keep`` and below a floor, mantissa rounded.

    * outside ``keep`` (the body and the labels): 0;
    * below ``floor_fraction`` x the map's maximum inside ``keep``: 0 (an absolute error
      of at most 0.1 % of the range with the default, finer than a heatmap's colour
      step);
    * elsewhere, float32 values rounded to ``mantissa_bits`` bits of mantissa (round
      half up on the bit pattern): a relative error of at most
      ``2 ** -(mantissa_bits + 1)``, 1.6 % with the default.

    Structure scores and the review list are computed before, on the full-precision
    maps. The file stays float32 so every reader opens it; the zeros and the short
    mantissa make the gzip stream several times smaller (the demo's three maps: 24 MB
    with the mantissa rounding alone, about 9 MB with the floor).

    Parameters
    ----------
    arr : np.ndarray of float, (n0, n1, n2)
    keep : np.ndarray of bool, (n0, n1, n2)
    mantissa_bits : int, 1-23
    floor_fraction : float, >= 0

    Returns
    -------
    np.ndarray of float32, (n0, n1, n2)
    """
    if not 1 <= mantissa_bits <= 23:
        raise ValueError("mantissa_bits must be 1-23")
    if floor_fraction < 0:
        raise ValueError("floor_fraction must be >= 0")
    out = np.where(keep, np.asarray(arr, dtype=np.float32), np.float32(0.0))
    out = np.ascontiguousarray(out)
    finite = np.isfinite(out)
    if floor_fraction > 0 and finite.any():
        top = float(np.abs(out[finite]).max())
        out[finite & (np.abs(out) < floor_fraction * top)] = 0.0
    drop = 23 - mantissa_bits
    if drop:
        bits = out.view(np.uint32)
        half = np.uint32(1 << (drop - 1))
        mask = np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
        bits[finite] = (bits[finite] + half) & mask
    return out


def format_review(seg: Segmentation, top: int | None = None) -> str:
    """The review list as text, most uncertain first (display names, volumes in cm3)."""
    from ..results import display_name

    r0 = seg.result
    rows = r0.review[:top] if top else r0.review
    width = max([32, *(len(display_name(r.key)) for r in rows)])  # long names stay aligned
    lines = [f"Review list ({seg.card.inference.review_map}, T = {r0.mc_samples}, "
             f"seed {r0.seed}); check the first structures first:",
             f"{'rank':>4s}  {'structure':{width}s} {'volume cm3':>10s} {'uncertainty':>12s}"]
    for i, r in enumerate(rows, 1):
        unc = "ABSENT" if not r.present else f"{r.score:.4g}"
        lines.append(f"{i:4d}  {display_name(r.key):{width}s} {r.volume_cm3:10.1f} {unc:>12s}")
    lv = r0.vertebra_levels
    if lv is not None:  # the one lumbar class, split and numbered
        lines.append(f"Lumbar vertebra levels: {', '.join(lv.levels) or 'none'} ({lv.method})")
        lines += [f"  note: {n}" for n in lv.notes] + [f"  WARNING: {w}" for w in lv.warnings]
    return "\n".join(lines)
