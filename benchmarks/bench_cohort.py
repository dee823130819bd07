"""Subjects per minute of a cohort run: the one-process runner, and a local Dask cluster of 1 and 2 workers.

    python benchmarks/bench_cohort.py                      # 8 phantoms (112^2 x 8 slices x 25 frames)
    python benchmarks/bench_cohort.py --subjects 16 --workers 1 2 4

The phantoms are rendered once into ``--work`` (``deepstrain phantom``). Each run analyses the whole cohort from
scratch into a new folder, in a fresh process (``python -m deepstrain_jax analyze COHORT --out OUT [--workers
N]``), with JAX's persistent compilation cache off, so every run pays its own start-up and compilation as a
user's first run would. Printed per run: wall time, subjects per minute, the ratio to the one-process runner,
and the peak resident memory of the main process and of each worker process (``ru_maxrss``, read in the
workers through ``client.run`` by a small hook this script installs with ``--report-worker-memory``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_HOOK = r"""
import json, os, resource, sys
import deepstrain_jax.analysis.distributed as dist
_orig = dist.analyze_cohort
def analyze_cohort(*args, client, **kwargs):
    rows = _orig(*args, client=client, **kwargs)
    peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print("WORKER_PEAK_GB " + json.dumps(sorted(peaks.values())), file=sys.stderr, flush=True)
    return rows
dist.analyze_cohort = analyze_cohort
from deepstrain_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def render(work: Path, n: int) -> Path:
    folder = work / f"cohort_{n}"
    if not (folder / f"patient{n:03d}").is_dir():
        subprocess.run([sys.executable, "-m", "deepstrain_jax", "phantom", "--out", str(folder), "--n", str(n),
                        "--matrix", "112", "--pixel-mm", "1.6", "--slices", "8", "--frames", "25", "--quiet"],
                       check=True, cwd=REPO)
    return folder


def run(cohort: Path, out: Path, workers: int | None) -> dict:
    cmd = [sys.executable, "-c", _HOOK, "analyze", str(cohort), "--out", str(out), "--no-cache"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed:\n{err[-3000:]}")
    workers_gb = next((json.loads(line.split(" ", 1)[1]) for line in err.splitlines()
                       if line.startswith("WORKER_PEAK_GB ")), [])
    return {"wall_s": wall, "main_gb": usage.ru_maxrss / 2**20, "workers_gb": workers_gb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", type=Path, default=Path("/tmp/deepstrain_bench_cohort"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cohort = render(args.work, args.subjects)
    print(f"{os.cpu_count()} CPU cores; cohort of {args.subjects} phantoms (112 x 112 x 8 x 25); compilation "
          "cache off")
    print(f"{'run':>22} {'wall s':>8} {'subjects/min':>13} {'vs 1 process':>13} {'main GB':>8}  worker peak GB")
    base = None
    for workers in [None] + list(args.workers):
        out = args.work / f"out_{workers or 'serial'}_{time.time_ns()}"
        r = run(cohort, out, workers)
        rate = 60.0 * args.subjects / r["wall_s"]
        base = base or rate
        name = "one process" if workers is None else f"Dask, {workers} worker(s)"
        print(f"{name:>22} {r['wall_s']:8.1f} {rate:13.2f} {rate / base:12.2f}x {r['main_gb']:8.2f}  "
              f"{', '.join(f'{g:.2f}' for g in r['workers_gb']) or '-'}", flush=True)


if __name__ == "__main__":
    main()
