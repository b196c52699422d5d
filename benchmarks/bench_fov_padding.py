"""What recognising the padding outside the reconstructed field of view costs.

Run on demand; never timed in tests:

    python benchmarks/bench_fov_padding.py --out bench_padding.json
    python benchmarks/bench_fov_padding.py --quick      # 2 mm grid, for development

Builds the phantom's hip-to-lumbar region (``region='full'``) at 0.8 x 0.8 x 1.0 mm
(``--quick``: 2 mm) and a copy whose voxels outside the circle inscribed in each axial
slice hold -3024 HU, as a scanner writes outside its reconstruction circle (the labels
are the same; structures reaching past the circle are then cut). Times in one run,
alternating, ``--repeats`` times each:

* ``fov.outside_fov`` (the one pass that finds the padding; cached afterwards, so each
  repeat uses a fresh copy of the array);
* ``fov.border_label_values`` with and without the padding;
* ``measure_case`` (muscles and bones, ``calibration='none'``) on the CT without
  padding and on the padded CT. The two do not measure the same things (on the padded
  CT the structures reaching past the circle are cut: ``partial``, and a femur or
  vertebra cut there may not be measured at all), so their ratio is the cost of a padded
  CT as a whole, not of the padding check alone; the functions above are that.

Prints medians and ratios and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def circle_padded(hu: np.ndarray, value: float = -3024.0) -> np.ndarray:
    """``hu`` (n0, n1, n2; axial planes (n0, n1)) with the voxels outside the circle
    inscribed in each axial plane set to ``value``."""
    n0, n1 = hu.shape[:2]
    i, j = np.ogrid[:n0, :n1]
    r = 0.5 * min(n0, n1)
    outside = (i + 0.5 - n0 / 2) ** 2 + (j + 0.5 - n1 / 2) ** 2 > r * r
    out = np.array(hu, copy=True)
    out[outside, :] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 mm grid")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)

    from CTMuscleBoneLib import fov
    from CTMuscleBoneLib.analysis import MeasureOptions, measure_case
    from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom

    spacing = (2.0, 2.0, 2.0) if args.quick else (0.8, 0.8, 1.0)
    ph = make_phantom(PhantomSpec(spacing_mm=spacing, region="full"))
    ct, labels = ph.ct, ph.labels
    padded = dataclasses.replace(ct, hu=circle_padded(np.asarray(ct.hu)))
    n_pad = int(np.count_nonzero(np.asarray(padded.hu) < fov.PADDING_HU))
    row: dict[str, object] = {"grid": "x".join(map(str, ct.geometry.shape)),
                              "voxels": int(np.prod(ct.geometry.shape)),
                              "padding_voxels": n_pad, "spacing_mm": list(spacing),
                              "repeats": args.repeats}
    print(f"# {row['grid']} voxels at {spacing} mm, {n_pad} padding voxels, "
          f"{args.repeats} repeats", flush=True)
    arr = np.asarray(labels.array)
    t = {"outside_fov_s": [], "border_plain_s": [], "border_padding_s": [],
         "measure_plain_s": [], "measure_padded_s": []}
    opts = MeasureOptions(calibration="none")
    partial_rows = 0
    for _ in range(args.repeats):  # alternating, so drift hits both alike
        fresh = np.array(padded.hu, copy=True)  # a new array: no cached result
        t["outside_fov_s"].append(_timed(lambda f=fresh: fov.outside_fov(f)))
        outside = fov.outside_fov(fresh)
        t["border_plain_s"].append(_timed(lambda: fov.border_label_values(arr)))
        t["border_padding_s"].append(_timed(
            lambda o=outside: fov.border_label_values(arr, o)))
        t["measure_plain_s"].append(_timed(lambda: measure_case(ct, labels, opts)))
        res: dict[str, object] = {}
        t["measure_padded_s"].append(_timed(
            lambda r=res: r.setdefault("r", measure_case(padded, labels, opts))))
        partial_rows = sum(any(f.startswith("partial") for f in r.flags)
                           for r in res["r"].rows)  # type: ignore[attr-defined]
    for k, v in t.items():
        row[k] = statistics.median(v)
    row["measure_ratio"] = row["measure_padded_s"] / row["measure_plain_s"]
    row["partial_rows_padded"] = partial_rows
    for k, v in row.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.out is not None:
        args.out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
