"""Benchmark of segmentation node -> LabelMap (run on demand; not a test).

``CTMuscleBoneSlicer.nodes.label_map_from_segmentation_node`` once exported every segment
on its own (one ``ExportSegmentsToLabelmapNode`` call and one full-size bool mask per
segment); it now exports all segments in one call (and each binary-labelmap layer once
when there are several). This script times both side by side on the headless MRML
classes of ``slicer-core``, on a synthetic label map: ``--segments`` structures filling
an elliptic body (nearest of random seeds, on a coarse grid), imported as one shared
layer, plus ``--overlap-layers`` overlapping segments each on its own layer. The former
algorithm is the reference copy kept in ``Testing/test_slicer_export.py``; both results
are checked to be equal. Peak memory is the largest resident-set growth over the run,
sampled every 5 ms with psutil (VTK allocations are invisible to tracemalloc).

    python benchmarks/bench_slicer_export.py --shape 256 256 200 --segments 40 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))
sys.path.insert(0, str(ROOT / "Testing"))

import slicer_fixtures  # noqa: E402
from CTMuscleBoneLib import anatomy  # noqa: E402
from CTMuscleBoneLib.image import Geometry, LabelMap  # noqa: E402
from CTMuscleBoneSlicer import nodes  # noqa: E402
from test_slicer_export import _assert_same, _reference_label_map  # noqa: E402


def synthetic_labels(shape: tuple[int, int, int], n_segments: int, seed: int = 0) -> LabelMap:
    """``n_segments`` anatomy structures tiling an elliptic body, (n0, n1, n2), 1 mm."""
    rng = np.random.default_rng(seed)
    keys = [s.key for s in anatomy.ANATOMY][:n_segments]
    coarse = tuple(max(2, n // 8) for n in shape)
    seeds = rng.uniform(0, 1, (len(keys), 3)) * np.array(coarse)
    grid = np.stack(np.meshgrid(*[np.arange(n) + 0.5 for n in coarse], indexing="ij"), -1)
    nearest = np.argmin(((grid[..., None, :] - seeds) ** 2).sum(-1), axis=-1)
    values = np.array([anatomy.structure(k).label_value for k in keys], dtype=np.uint16)
    arr = values[nearest]
    arr = np.repeat(np.repeat(np.repeat(arr, 8, 0), 8, 1), 8, 2)
    arr = np.pad(arr, [(0, max(0, n - a)) for n, a in zip(shape, arr.shape, strict=True)],
                 mode="edge")[: shape[0], : shape[1], : shape[2]]
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]),
                       indexing="ij")
    arr[(i**2 / 0.9**2 + j**2 / 0.7**2) > 1] = 0
    structures = {int(v): k for v, k in zip(values, keys, strict=True)}
    return LabelMap(arr, Geometry(shape, (1.0, 1.0, 1.0)), structures)


class PeakRSS:
    """Largest resident-set growth (bytes) while in the ``with`` block (psutil sampling)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        try:
            import psutil
        except ImportError:
            self._proc = None
            return self
        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss - self._base)
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss - self._base)


def build(env, labels: LabelMap, overlap_layers: int):
    scene = env.scene
    ct = nodes.volume_node_from_array(scene, np.zeros(labels.geometry.shape, np.int16),
                                      labels.geometry, "ct")
    seg = nodes.segmentation_node_from_label_map(scene, labels, ct, "labels")
    import slicer

    free = [s.key for s in anatomy.ANATOMY if s.key not in labels.structures.values()]
    shape = labels.geometry.shape
    for n, key in enumerate(free[:overlap_layers]):
        mask = np.zeros(shape[::-1], np.uint8)  # KJI
        lo = [int(d * (0.2 + 0.1 * n)) for d in shape[::-1]]
        mask[lo[0]: lo[0] + shape[2] // 4, lo[1]: lo[1] + shape[1] // 4,
             lo[2]: lo[2] + shape[0] // 4] = 1
        seg.GetSegmentation().AddEmptySegment(key, key)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, key, ct)
    return ct, seg


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 200))
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--overlap-layers", type=int, default=0,
                        help="extra overlapping segments, each on its own layer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args(argv)

    labels = synthetic_labels(tuple(args.shape), args.segments)
    env = slicer_fixtures.make_env()
    try:
        ct, seg = build(env, labels, args.overlap_layers)
        segmentation = seg.GetSegmentation()
        times: dict[str, list[float]] = {"per_segment": [], "one_export": []}
        peaks: dict[str, list[int]] = {"per_segment": [], "one_export": []}
        functions = {"per_segment": _reference_label_map,
                     "one_export": nodes.label_map_from_segmentation_node}
        results = {}
        for r in range(args.repeats):
            for name in (("per_segment", "one_export") if r % 2 == 0
                         else ("one_export", "per_segment")):
                with PeakRSS() as peak:
                    t0 = time.perf_counter()
                    out = functions[name](seg, ct)
                    times[name].append(time.perf_counter() - t0)
                peaks[name].append(peak.peak)
                if r == 0:
                    results[name] = out
                del out
            if r == 0:  # the same LabelMap from both
                _assert_same(results["one_export"], results["per_segment"])
                results.clear()
        report = {
            "shape": list(args.shape), "segments": segmentation.GetNumberOfSegments(),
            "layers": segmentation.GetNumberOfLayers("Binary labelmap"),
            "repeats": args.repeats,
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "peak_rss_growth_mb": {k: max(v) / 2**20 for k, v in peaks.items()},
        }
        report["speed_ratio"] = report["median_s"]["per_segment"] / report["median_s"][
            "one_export"]
    finally:
        slicer_fixtures.close_env(env)
    print(f"grid {args.shape}, {report['segments']} segments on {report['layers']} layers, "
          f"median of {args.repeats}:")
    for k in times:
        print(f"  {k:12s} {report['median_s'][k]:8.2f} s   peak RSS growth "
              f"{report['peak_rss_growth_mb'][k]:8.0f} MB")
    print(f"  per-segment / one export: {report['speed_ratio']:.1f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
