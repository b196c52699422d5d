"""Benchmark of cohort batch runs (run on demand; not a test).

Builds a cohort of synthetic phantoms with their true label maps (default 8 'full'
phantoms, z -300..280 mm, at 3 mm voxels, seeds 0..7) and measures, each ``--repeats``
times on a fresh output folder:

* the whole batch with 1 worker (in this process) and with 2 worker processes: wall time,
  wall and CPU time per case (medians of the cases' ``time_s`` and ``cpu_s``: a case
  whose wall time exceeds its CPU time waited for a core), and the speed-up 1 -> 2
  workers; the machine's load average is recorded (other work takes cores away);
* a rerun on a finished output folder (every case resumed: the cost of the checksums);
* peak memory per worker: one 'full' phantom per voxel size in ``--memory-spacings``,
  each measured by :func:`CTMuscleBoneLib.batch.run_case` in a fresh Python process
  after a small warm-up case (so every import is done): the peak RSS, the RSS after the
  warm-up, and their difference per million voxels, extrapolated with a straight line to
  a clinical CT of 512 x 512 x 500 voxels (an estimate, not a measurement).

Prints a table and writes JSON (``--out``); every figure reported is a median.

    python benchmarks/bench_batch.py --out bench_batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMuscleBone"))

from CTMuscleBoneLib.batch import BatchOptions, run_batch  # noqa: E402
from CTMuscleBoneLib.io_ct import write_image, write_label_map  # noqa: E402
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom  # noqa: E402

OPTIONS = BatchOptions(measure={"calibration": "none"})
REGION = "full"
#: Voxels of the clinical CT the memory is extrapolated to (512 x 512 x 500).
CLINICAL_VOXELS = 512 * 512 * 500


def build_cohort(folder: Path, n_cases: int, spacing_mm: float,
                 region: str = REGION) -> int:
    """Write ``n_cases`` phantom CTs with their label maps; return the voxels per case
    (of the last case)."""
    folder.mkdir(parents=True, exist_ok=True)
    voxels = 0
    for i in range(n_cases):
        ph = make_phantom(PhantomSpec(region=region, spacing_mm=spacing_mm, seed=i))
        write_image(ph.ct.hu, ph.ct.geometry, folder / f"case{i:03d}.nii.gz")
        write_label_map(ph.labels, folder / f"case{i:03d}_labels.nii.gz")
        voxels = int(ph.ct.hu.size)
    return voxels


def timed_batch(src: Path, out: Path, workers: int) -> tuple[float, list]:
    start = time.perf_counter()
    result = run_batch(src, out, OPTIONS, workers=workers)
    wall = time.perf_counter() - start
    bad = result.failed
    if bad:
        raise RuntimeError(f"{bad[0].case_id}: {bad[0].error}")
    return wall, result.records


def one_case_memory(folder: Path, out: Path) -> dict:
    """Peak RSS of one case in a fresh process (``--one-case``): warm-up, then the case."""
    import subprocess

    build_cohort(out / "warmup", 1, 6.0, region="hip")  # built here: the child only measures
    cmd = [sys.executable, __file__, "--one-case", str(folder), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _one_case(folder: Path, out: Path) -> int:
    """Child of :func:`one_case_memory`: prints {baseline, peak, time} as JSON."""
    from CTMuscleBoneLib.batch import discover_cases, run_case
    from CTMuscleBoneLib.batch.runner import peak_rss_mb

    run_case(discover_cases(out / "warmup")[0], OPTIONS, str(out / "warmup_out"))
    baseline = peak_rss_mb()
    record = run_case(discover_cases(folder)[0], OPTIONS, str(out / "case"))
    if record.status != "ok":
        raise RuntimeError(record.error)
    print(json.dumps({"baseline_rss_mb": baseline, "peak_rss_mb": record.peak_rss_mb,
                      "case_time_s": record.time_s}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=8, help="cases in the cohort")
    ap.add_argument("--spacing", type=float, default=3.0, help="voxel size of the cohort, mm")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    ap.add_argument("--memory-spacings", default="3,2,1.5",
                    help="voxel sizes (mm) of the memory runs, comma-separated")
    ap.add_argument("--out", type=Path, help="JSON output file")
    ap.add_argument("--one-case", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_case:
        return _one_case(args.one_case, args.out)

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
                    "cases": args.cases, "spacing_mm": args.spacing,
                    "repeats": args.repeats}
    try:
        src = work / "cohort"
        report["voxels_per_case"] = build_cohort(src, args.cases, args.spacing)
        rows = []
        walls: dict[int, list[float]] = {}
        for workers in (1, 2):
            walls[workers], per_case, cpu = [], [], []
            for k in range(args.repeats):
                out = work / f"out_w{workers}_{k}"
                wall, records = timed_batch(src, out, workers)
                walls[workers].append(wall)
                per_case += [r.time_s for r in records]
                cpu += [r.cpu_s for r in records]
            rows.append({"workers": workers, "batch_wall_s": statistics.median(walls[workers]),
                         "case_time_s": statistics.median(per_case),
                         "case_cpu_s": statistics.median(cpu)})
        resume = [timed_batch(src, work / "out_w1_0", 1)[0] for _ in range(args.repeats)]
        report["runs"] = rows
        report["speedup_2_vs_1"] = (statistics.median(walls[1])
                                    / statistics.median(walls[2]))
        report["resume_wall_s"] = statistics.median(resume)

        memory = []
        for spacing in [float(s) for s in args.memory_spacings.split(",") if s.strip()]:
            one = work / f"mem_{spacing:g}"
            voxels = build_cohort(one, 1, spacing, region="full")
            memory.append({"spacing_mm": spacing, "voxels": voxels,
                           **one_case_memory(one, work / f"mem_out_{spacing:g}")})
        if len(memory) >= 2:
            x = np.array([m["voxels"] for m in memory], float) / 1e6
            y = np.array([m["peak_rss_mb"] - m["baseline_rss_mb"] for m in memory], float)
            slope, intercept = np.polyfit(x, y, 1)
            baseline = statistics.median(m["baseline_rss_mb"] for m in memory)
            report["memory_mb_per_million_voxels"] = float(slope)
            report["clinical_ct_estimate_gb"] = float(
                (baseline + intercept + slope * CLINICAL_VOXELS / 1e6) / 1024)
        report["memory"] = memory
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if hasattr(os, "getloadavg"):  # other work on the machine takes cores from the workers
        report["load_average_1min_at_end"] = os.getloadavg()[0]

    print(f"{report['machine']}; {args.cases} cases of {report['voxels_per_case']} voxels "
          f"({args.spacing:g} mm); medians of {args.repeats} runs; load average at the "
          f"end {report.get('load_average_1min_at_end', float('nan')):.1f}")
    print(f"{'workers':>8} {'batch wall s':>13} {'s per case':>11} {'CPU s per case':>15}")
    for r in report["runs"]:
        print(f"{r['workers']:>8} {r['batch_wall_s']:>13.2f} {r['case_time_s']:>11.3f} "
              f"{r['case_cpu_s']:>15.3f}")
    print(f"speed-up 2 vs 1 worker: {report['speedup_2_vs_1']:.2f}x; rerun with every case "
          f"resumed: {report['resume_wall_s']:.2f} s")
    print(f"{'spacing mm':>10} {'Mvoxels':>8} {'peak RSS MB':>12} {'after imports MB':>17} "
          f"{'case s':>7}")
    for m in report["memory"]:
        print(f"{m['spacing_mm']:>10g} {m['voxels'] / 1e6:>8.2f} {m['peak_rss_mb']:>12.0f} "
              f"{m['baseline_rss_mb']:>17.0f} {m['case_time_s']:>7.2f}")
    if "memory_mb_per_million_voxels" in report:
        print(f"memory: {report['memory_mb_per_million_voxels']:.0f} MB per million voxels; "
              f"a 512 x 512 x 500 CT: ~{report['clinical_ct_estimate_gb']:.1f} GB per worker "
              "(extrapolated)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
