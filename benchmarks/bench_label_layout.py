"""What the label-layout check (left-right pairs, vertebral order) costs on a clinical grid.

Run on demand; never timed in tests:

    python benchmarks/bench_label_layout.py --out bench_layout.json
    python benchmarks/bench_label_layout.py --quick      # 2 mm grid, for development

Builds the phantom's hip-to-lumbar region (``region='full'``) at 0.8 x 0.8 x 1.0 mm
(``--quick``: 2 mm), writes its truth as a TotalSegmentator v2 multi-label NIfTI, then
times in one run, alternating, ``--repeats`` times each:

* ``label_centroids_mm`` alone (the one pass over the volume the check adds);
* ``read_labels(..., 'totalseg')`` (reading, with the version decided by the layout);
* ``measure_case`` with the layout check and with it replaced by a no-op (muscles and
  bones, ``calibration='none'``): the ratio is what the check adds to a measurement.

Prints medians and ratios and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 mm grid")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)

    from CTMuscleBoneLib import anatomy, label_layout
    from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
    from CTMuscleBoneLib.io_ct import write_image
    from CTMuscleBoneLib.io_labels import TOTALSEG_V2_TOTAL, read_labels
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    spacing = (2.0, 2.0, 2.0) if args.quick else (0.8, 0.8, 1.0)
    ph = make_phantom(PhantomSpec(spacing_mm=spacing, region="full"))
    ct, truth = ph.ct, ph.labels
    inv = {anatomy.key_for_name(n): v for v, n in TOTALSEG_V2_TOTAL.items()}
    ts = np.zeros(truth.array.shape, dtype=np.uint8)
    for value, key in truth.structures.items():
        if key in inv:
            ts[truth.array == value] = inv[key]
    row: dict[str, object] = {"grid": "x".join(map(str, ct.geometry.shape)),
                              "voxels": int(np.prod(ct.geometry.shape)),
                              "spacing_mm": list(spacing), "repeats": args.repeats}
    print(f"# {row['grid']} voxels at {spacing} mm, {args.repeats} repeats", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_image(ts, ct.geometry, Path(tmp) / "seg_totalseg.nii.gz")
        row["centroids_s"] = _median_s(
            lambda: label_layout.label_centroids_mm(ts, ct.geometry), args.repeats)
        row["read_labels_s"] = _median_s(
            lambda: read_labels(path, ct.geometry, "totalseg"), args.repeats)
        labels = read_labels(path, ct.geometry, "totalseg")
    opts = MeasureOptions(calibration="none")
    real_apply = label_layout.apply_layout
    with_check, without = [], []
    try:
        for _ in range(args.repeats):  # alternating, so drift hits both alike
            label_layout.apply_layout = real_apply
            t0 = time.perf_counter()
            measure_case(ct, labels, opts)
            with_check.append(time.perf_counter() - t0)
            label_layout.apply_layout = lambda lm: (lm, [])
            t0 = time.perf_counter()
            measure_case(ct, labels, opts)
            without.append(time.perf_counter() - t0)
    finally:
        label_layout.apply_layout = real_apply
    row["measure_with_check_s"] = statistics.median(with_check)
    row["measure_without_check_s"] = statistics.median(without)
    row["ratio_with_over_without"] = row["measure_with_check_s"] / row["measure_without_check_s"]
    for k, v in row.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.out is not None:
        args.out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
