"""Cold start of `deepstrain analyze`: a new process on one 25-frame subject, with a warm compilation cache.

    python benchmarks/bench_startup.py                       # 128 x 128 phantom, 5 cold runs
    python benchmarks/bench_startup.py --runs 8 --reference /path/to/other/checkout/.venv/bin/deepstrain
    python benchmarks/bench_startup.py --runs 6 --reference CMD --reference-src /path/to/other/checkout

What is timed (a 128 x 128 x 25-frame phantom rendered first, written in the ACDC layout):

1. **Cold CLI run**: ``deepstrain analyze SUBJECT --out OUT -q`` in a new process, wall clock from the shell's
   view (interpreter start-up, imports, model loading, tracing or loading every compiled program, the analysis,
   every output file). The compilation cache (``$DEEPSTRAIN_JAX_CACHE``, a folder of this run) is filled by one
   unmeasured run first, as after a user's first subject. Median of ``--runs``; each run's count of programs
   compiled or fetched from the cache (``JAX_LOG_COMPILES``) is printed beside it.
2. **Start-up parts**, in one more new process: imports, model loading, the first analysis of the subject and a
   second one (warm, in the same process). The first minus the second is what the first subject still pays
   for tracing and program loading; imports and loading are paid once per process.
3. **Reference** (``--reference CMD``): another ``deepstrain`` executable (e.g. an older checkout's venv), run
   alternately with this one on the same subject with its own warm cache; the ratio of the medians is printed.
4. **To the first network output** (with ``--reference-src DIR``, the source folder of the reference): a new
   process importing the analysis, loading the models and running CarSON on one batch, from this tree and with
   ``DIR`` first on ``PYTHONPATH``, alternately, each with its warm cache (the part of a cold run that start-up
   changes touch, free of the analysis' own noise); medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PARTS = r"""
import json, shutil, sys, time
t0 = time.perf_counter()
from deepstrain_jax.xla_flags import use_fast_cpu_convolutions
use_fast_cpu_convolutions()
from deepstrain_jax.analysis import discovery, inputs
from deepstrain_jax.analysis.networks import Networks, enable_compilation_cache
from deepstrain_jax.analysis.pipeline import analyze, read_checked
t1 = time.perf_counter()
enable_compilation_cache()
nets = Networks.load()
t2 = time.perf_counter()
cine, _, _ = read_checked(inputs.read_subject(discovery.discover(sys.argv[1]).subjects[0]))
times = []
for k in range(2):
    shutil.rmtree(sys.argv[2], ignore_errors=True)
    s = time.perf_counter()
    analyze(cine, sys.argv[2], networks=nets)
    times.append(time.perf_counter() - s)
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "first": times[0], "second": times[1]}))
"""

_FIRST_OUTPUT = r"""
import time
t0 = time.perf_counter()
import numpy as np
from deepstrain_jax.xla_flags import use_fast_cpu_convolutions
use_fast_cpu_convolutions()
import deepstrain_jax.commands.analyze
from deepstrain_jax.analysis.networks import Networks, enable_compilation_cache
from deepstrain_jax.analysis.pipeline import analyze
enable_compilation_cache()
nets = Networks.load()
nets.carson.apply(nets.carson.variables, np.zeros((16, 128, 128, 1), np.float32)).block_until_ready()
print(time.perf_counter() - t0)
"""


def _first_output(env: dict) -> float:
    p = subprocess.run([sys.executable, "-c", _FIRST_OUTPUT], env=env, capture_output=True, text=True, check=True)
    return float(p.stdout.strip().splitlines()[-1])


def _cli_run(cmd: str, subject: Path, out: Path, env: dict) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    p = subprocess.run([cmd, "analyze", str(subject), "--out", str(out), "-q"], env=env, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} analyze failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return wall, len(re.findall(r"Finished XLA compilation", p.stderr))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold CLI runs (median)")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--reference", default=None, help="another deepstrain executable, timed alternately")
    parser.add_argument("--reference-src", default=None,
                        help="the reference's source folder: also time start-up to the first network output")
    args = parser.parse_args(argv)
    this = str(Path(sys.executable).with_name("deepstrain"))
    if not Path(this).is_file():
        raise SystemExit(f"{this}: no deepstrain executable beside this Python (pip install -e . first)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([this, "phantom", "--out", str(tmp / "subject"), "--n", "1", "--seed", str(args.seed),
                        "--frames", str(args.frames), "--matrix", "128", "-q"], check=True)
        subject = tmp / "subject" / "patient001"
        commands = {"this": this} | ({"reference": args.reference} if args.reference else {})
        envs = {}
        for name, cmd in commands.items():
            envs[name] = dict(os.environ, DEEPSTRAIN_JAX_CACHE=str(tmp / f"cache_{name}"), JAX_LOG_COMPILES="1")
            _cli_run(cmd, subject, tmp / "warmup", envs[name])  # fills the cache
        walls = {name: [] for name in commands}
        for k in range(args.runs):
            for name, cmd in commands.items():
                wall, programs = _cli_run(cmd, subject, tmp / f"out_{name}", envs[name])
                walls[name].append(wall)
                print(f"  cold CLI run {k + 1} ({name}): {wall:.1f} s, {programs} programs compiled or loaded",
                      flush=True)
        med = {name: statistics.median(w) for name, w in walls.items()}
        print(f"cold 25-frame CLI run, 128 x 128 phantom, warm cache: {med['this']:.1f} s "
              f"(median of {args.runs}; min {min(walls['this']):.1f}, max {max(walls['this']):.1f})")
        if args.reference:
            print(f"reference {args.reference}: {med['reference']:.1f} s; this / reference = "
                  f"{med['this'] / med['reference']:.2f}")
        if args.reference_src:
            pythonpath = os.pathsep.join(p for p in (args.reference_src, os.environ.get("PYTHONPATH")) if p)
            envs = {"this": dict(os.environ, DEEPSTRAIN_JAX_CACHE=str(tmp / "cache_this")),
                    "reference": dict(os.environ, DEEPSTRAIN_JAX_CACHE=str(tmp / "cache_ref_src"),
                                      PYTHONPATH=pythonpath)}
            first = {name: [] for name in envs}
            for k in range(args.runs + 1):  # the first pair fills the reference's cache: not counted
                for name, env in envs.items():
                    seconds = _first_output(env)
                    if k:
                        first[name].append(seconds)
            med = {name: statistics.median(v) for name, v in first.items()}
            print(f"start-up to the first CarSON output (new process, warm cache): {med['this']:.2f} s against "
                  f"{med['reference']:.2f} s for {args.reference_src}; this / reference = "
                  f"{med['this'] / med['reference']:.2f} (medians of {args.runs})")
        env = dict(os.environ, DEEPSTRAIN_JAX_CACHE=str(tmp / "cache_this"))
        p = subprocess.run([sys.executable, "-c", _PARTS, str(subject), str(tmp / "parts")], env=env,
                           capture_output=True, text=True, check=True)
        parts = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"start-up parts (one new process): imports {parts['imports']:.2f} s, model loading "
              f"{parts['load']:.2f} s, first analysis {parts['first']:.1f} s, second (warm) {parts['second']:.1f} s; "
              f"first - second = {parts['first'] - parts['second']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
