"""Full-cycle wall time of `deepstrain analyze` on a 25-frame subject: shipped models and the legacy networks.

    python benchmarks/bench_analyze.py                 # 25 frames, tf-keras reference if installed
    python benchmarks/bench_analyze.py --frames 30 --repeats 3 --no-keras

What is timed (one process, one phantom subject rendered first and written in the ACDC layout):

1. **Shipped path**: :func:`deepstrain_jax.analysis.pipeline.analyze` with the shipped v2 models, end to end (reading the
   NIfTI, resampling, VCN, CarSON on every slice of every frame, CarMEN on every (ED, t) pair plus the (ES, ED)
   closure pair, strain, AHA, volumes, QC, native-grid outputs, writing every output file). The first run
   includes compilation (cold: ``jax_compilation_cache_dir`` is not set here); the median of the next
   ``--repeats`` runs is the warm time.
2. **Legacy path**: the same pipeline in legacy mode (dipy-style resampling, field-of-view centring, the
   original's strain added) with the full-size legacy CarSON (57.3 M parameters) and CarMEN (111.9 M). The
   published weights are not available here, and random weights find no heart, so each network call runs the
   legacy network *and* the shipped one on the same input, and the pipeline continues with the shipped output.
   Every call is timed separately, so ``legacy path = wall - shipped network time - tf-keras time`` is the
   pipeline with the legacy networks in place of the shipped ones (network time is independent of weights).
3. **tf-keras reference** (``pip install -e .[keras]``): the original tf-keras graphs of the same two legacy
   networks, called on the same inputs in the same run; their summed time is the networks-alone cost of the
   original implementation on this machine (the issue's anchor: about 0.94 s per CarMEN pair and 64 ms per
   CarSON slice, about 50 s for a 25-frame cycle, on this machine class).

Printed: each path's wall time, its network share, the per-stage breakdown of the last warm shipped run (from its
``run.json``: reading, frames, segmentation, volumes, motion, strain, results, writing (figures and tables while
a worker thread writes the NIfTI maps);
the networks' own seconds; outside / inside the networks), and the ratio legacy path / tf-keras networks alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The reference at its fastest: TensorFlow turns its oneDNN kernels on by default only on some CPUs. With
# TF 2.21 on a 2-core AMD EPYC they were off (tf-keras CarSON training 1.56 slices/s; on: 3.23).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from deepstrain_jax.xla_flags import use_fast_cpu_convolutions  # noqa: E402

use_fast_cpu_convolutions()

import jax  # noqa: E402
import numpy as np  # noqa: E402


def _keras_call(name: str, seed: int):
    """``fn(x) -> None`` running the tf-keras legacy graph on a channels-last batch, or None without tf-keras."""
    from bench_networks import _keras_model  # the same random-weight Keras build as the network benchmark

    model = _keras_model(name, seed)
    if model is None:
        return None
    import tensorflow as tf

    call = tf.function(lambda inp: model(inp, training=False))

    def run(x):
        x = np.asarray(x)
        inp = [tf.constant(x[..., :1]), tf.constant(x[..., 1:])] if name == "carmen" else tf.constant(x)
        call(inp).numpy()

    return run


def _legacy_call(name: str, seed: int):
    from deepstrain_jax import models

    init, apply = models.build({"name": name, "family": "legacy"})
    variables = jax.jit(init)(jax.random.key(seed))
    fn = jax.jit(lambda v, x: apply(v, x))
    return lambda x: fn(variables, x).block_until_ready()


def _shadowed(network, shadows: dict, clock: dict):
    """A copy of ``network`` whose apply also runs each shadow on the same input; every call is timed."""
    import dataclasses

    inner = network.apply

    def apply(variables, x):
        t0 = time.perf_counter()
        y = inner(variables, x)
        y.block_until_ready()
        clock[f"shipped {network.name}"] += time.perf_counter() - t0
        for label, fn in shadows.items():
            t0 = time.perf_counter()
            fn(x)
            clock[f"{label} {network.name}"] += time.perf_counter() - t0
        return y

    return dataclasses.replace(network, apply=apply)


def _print_stages(run_json: Path) -> None:
    """The per-stage breakdown of one warm run (``run.json``): each stage, the networks, and the rest."""
    run, total, net = _seconds(run_json)
    stages, nets = run["stages_s"], run["networks_s"]
    print(f"  stages of the last warm run ({total:.2f} s in all; networks inside segmentation and motion):")
    for name, sec in stages.items():
        inside = {"segmentation": nets.get("vcn", 0.0) + nets.get("carson", 0.0), "motion": nets.get("carmen", 0.0)}
        extra = f" (networks {inside[name]:.2f} s)" if name in inside else ""
        print(f"    {name:<14} {sec:6.2f} s{extra}")
    print(f"    (write = {', '.join(f'{k} {v:.2f} s' for k, v in run['write_parts_s'].items())}, overlapping: "
          "the NIfTI maps in a worker thread)")
    print(f"  networks {net:.2f} s ({', '.join(f'{k} {v:.2f} s' for k, v in nets.items())}); outside the networks "
          f"{total - net:.2f} s; outside / inside = {(total - net) / net:.2f}", flush=True)


def _seconds(run_json: Path) -> tuple[dict, float, float]:
    """``(run, total, networks)``: one run's ``run.json`` and its seconds in all and in the networks."""
    import json

    run = json.loads(run_json.read_text())
    return run, sum(run["stages_s"].values()), sum(run["networks_s"].values())


def _outside_inside(run_json: Path) -> float:
    """Seconds outside the networks over seconds inside them, for one run (its ``run.json``)."""
    _, total, net = _seconds(run_json)
    return (total - net) / net


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2, help="warm runs of the shipped path (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-keras", action="store_true", help="skip the tf-keras reference")
    parser.add_argument("--no-legacy", action="store_true", help="skip the legacy path")
    args = parser.parse_args(argv)

    from deepstrain_jax.analysis.networks import Networks
    from deepstrain_jax.analysis.pipeline import AnalysisOptions, analyze
    from deepstrain_jax.phantom import dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        case = dataset.make_case(args.seed, "NOR", n_frames=args.frames, snr=20.0)
        folder = dataset.save_case(tmp / "patient001", case)
        x, y, z, t = case.cine.image.shape
        print(f"subject: {x} x {y} x {z} voxels x {t} frames (rendered in {time.perf_counter() - t0:.1f} s); "
              f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs", flush=True)

        nets = Networks.load()
        runs = []
        for k in range(1 + args.repeats):
            t0 = time.perf_counter()
            analyze(folder, tmp / f"out{k}", networks=nets)
            runs.append(time.perf_counter() - t0)
            print(f"  shipped path run {k + 1}: {runs[-1]:.1f} s{' (includes compilation)' if k == 0 else ''}",
                  flush=True)
        warm = statistics.median(runs[1:]) if args.repeats else runs[0]
        _print_stages(tmp / f"out{len(runs) - 1}" / "run.json")
        ratios = [_outside_inside(tmp / f"out{k}" / "run.json") for k in range(1, len(runs))] or \
            [_outside_inside(tmp / "out0" / "run.json")]
        print(f"  outside / inside the networks, each warm run: {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}", flush=True)
        clock = defaultdict(float)
        timed = Networks(carson=_shadowed(nets.carson, {}, clock), carmen=_shadowed(nets.carmen, {}, clock),
                         vcn=_shadowed(nets.vcn, {}, clock), pair_batch=nets.pair_batch)
        t0 = time.perf_counter()
        analyze(folder, tmp / "timed", networks=timed)
        wall = time.perf_counter() - t0
        net = sum(clock.values())
        print(f"shipped v2 models: {warm:.1f} s per {t}-frame subject warm (median of {args.repeats}), "
              f"{runs[0]:.1f} s cold; networks {net:.1f} s of {wall:.1f} s "
              f"({', '.join(f'{k} {v:.1f} s' for k, v in sorted(clock.items()))})")

        if args.no_legacy:
            return 0
        shadows = {"carson": {"legacy": _legacy_call("carson", 0)}, "carmen": {"legacy": _legacy_call("carmen", 1)}}
        if not args.no_keras:
            for name in ("carson", "carmen"):
                fn = _keras_call(name, 2)
                if fn is not None:
                    shadows[name]["tf-keras"] = fn
        legacy_nets = Networks(carson=_shadowed(nets.carson, shadows["carson"], defaultdict(float)),
                               carmen=_shadowed(nets.carmen, shadows["carmen"], defaultdict(float)),
                               vcn=None, pair_batch=1)
        # Warm-up (compiles the legacy networks and traces the tf-keras graphs), then the timed run.
        analyze(folder, tmp / "legacy_warm", networks=legacy_nets, options=AnalysisOptions(legacy=True))
        clock = defaultdict(float)
        legacy_nets = Networks(carson=_shadowed(nets.carson, shadows["carson"], clock),
                               carmen=_shadowed(nets.carmen, shadows["carmen"], clock), vcn=None, pair_batch=1)
        t0 = time.perf_counter()
        analyze(folder, tmp / "legacy", networks=legacy_nets, options=AnalysisOptions(legacy=True))
        wall = time.perf_counter() - t0
        shipped = sum(v for k, v in clock.items() if k.startswith("shipped"))
        keras = sum(v for k, v in clock.items() if k.startswith("tf-keras"))
        legacy_net = sum(v for k, v in clock.items() if k.startswith("legacy"))
        legacy_path = wall - shipped - keras
        print(f"legacy networks (JAX, pair batch 1): pipeline {legacy_path:.1f} s per {t}-frame subject, of which "
              f"networks {legacy_net:.1f} s (CarSON {clock['legacy carson']:.1f} s for {t * 16} slices, CarMEN "
              f"{clock['legacy carmen']:.1f} s for {t} pairs)")
        if keras:
            print(f"tf-keras legacy networks alone, same calls: {keras:.1f} s (CarSON {clock['tf-keras carson']:.1f} s"
                  f", CarMEN {clock['tf-keras carmen']:.1f} s)")
            print(f"ratio: JAX legacy pipeline (everything) / tf-keras networks alone = {legacy_path / keras:.2f}")
        else:
            print("tf-keras not installed: no reference in this run (pip install -e .[keras])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
