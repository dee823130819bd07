"""Peak resident memory, wall time and output size of `deepstrain analyze` on large cines.

    python benchmarks/bench_memory.py                          # 256^2 and 512^2 x 20 slices x 30 frames
    python benchmarks/bench_memory.py --sizes 512 --modes network native
    python benchmarks/bench_memory.py --baseline-src /tmp/old  # the same runs with another checkout, side by side

Each size is a phantom rendered once with ``deepstrain phantom`` (``--matrix N``, a 307 mm field of view, 20
slices, 30 frames) and cached under ``--work``. Every analysis runs in its own process (``python -m
deepstrain_jax analyze``); its peak resident set size comes from ``os.wait4`` (the kernel's ``ru_maxrss`` of that
child), its wall time from the clock, and its output size from the files written. ``--modes`` picks the
``--displacement`` settings to run (default: the default, ``network``). With ``--baseline-src DIR`` each run is
repeated with ``PYTHONPATH=DIR`` (e.g. ``git worktree add /tmp/old <commit>``) and the ratios are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOV_MM = 307.2


def render(work: Path, size: int, slices: int, frames: int) -> Path:
    folder = work / f"phantom_{size}x{size}x{slices}x{frames}"
    subject = folder / "patient001"
    if not (subject / "patient001_4d.nii.gz").is_file():
        print(f"rendering a {size}^2 x {slices} x {frames} phantom (once) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "deepstrain_jax", "phantom", "--out", str(folder), "--n", "1",
                        "--matrix", str(size), "--pixel-mm", f"{FOV_MM / size:.4f}", "--slices", str(slices),
                        "--frames", str(frames), "--supersample", "1", "1", "--snr", "20", "--quiet"], check=True)
    return subject


def run(subject: Path, out: Path, mode: str, src: Path | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "deepstrain_jax", "analyze", str(subject), "--out", str(out)]
    if mode != "network" and src is None:
        cmd += ["--displacement", mode]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=src or REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"analysis failed:\n{err}")
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    return {"wall_s": wall, "peak_gb": usage.ru_maxrss / 2**20, "out_mb": sum(files.values()) / 2**20,
            "disp_mb": files.get("displacement.nii.gz", 0) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--modes", nargs="+", default=["network"], choices=["network", "native", "none"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/deepstrain_bench_memory"))
    ap.add_argument("--baseline-src", type=Path, help="another checkout to run side by side (its defaults)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{'cine':>18} {'run':>22} {'wall s':>8} {'peak RSS GB':>12} {'outputs MB':>11} {'displ. MB':>10}")
    for size in args.sizes:
        subject = render(args.work, size, args.slices, args.frames)
        label = f"{size}x{size}x{args.slices}x{args.frames}"
        rows = []
        if args.baseline_src is not None:
            rows.append((f"baseline ({args.baseline_src.name})", run(subject, args.work / "out_base", "native",
                                                                     args.baseline_src)))
        for mode in args.modes:
            rows.append((f"this, --displacement {mode}", run(subject, args.work / f"out_{mode}", mode, None)))
        for name, r in rows:
            print(f"{label:>18} {name:>22} {r['wall_s']:8.1f} {r['peak_gb']:12.2f} {r['out_mb']:11.1f} "
                  f"{r['disp_mb']:10.1f}", flush=True)
        if args.baseline_src is not None:
            base = rows[0][1]
            for name, r in rows[1:]:
                print(f"{label:>18} {name:>22}   ratio to baseline: peak RSS {r['peak_gb'] / base['peak_gb']:.2f}x, "
                      f"wall {r['wall_s'] / base['wall_s']:.2f}x, outputs {r['out_mb'] / base['out_mb']:.3f}x")


if __name__ == "__main__":
    main()
