"""Inference speed of the legacy networks: JAX versus the original tf-keras graph, in one process.

Prints milliseconds per CarMEN frame pair (128 x 128 x 16 x 2) and per CarSON slice (128 x 128) for the JAX
legacy build and, where ``tf_keras`` is importable (``pip install -e .[keras]``), for the tf-keras build of the
same architecture, and the ratio JAX / tf-keras. Both run on the same random weights (the Keras model's,
saved to HDF5 and loaded through :mod:`deepstrain_jax.models.keras_weights`) and the same inputs; the
largest output difference is printed as a check. Runs alternate between the two frameworks so that a change
in machine load affects both; the ratio uses medians.

    python benchmarks/bench_networks.py                      # both networks, tf-keras if installed
    python benchmarks/bench_networks.py --network carmen --batch-carmen 4 --repeats 10
    python benchmarks/bench_networks.py --xla-default        # XLA's default CPU flags
    XLA_FLAGS=... python benchmarks/bench_networks.py        # your own XLA:CPU flags

Unless ``--xla-default`` is given or ``XLA_FLAGS`` already sets it, the JAX side runs with
``deepstrain_jax.models.conv.RECOMMENDED_CPU_XLA_FLAGS`` (convolutions through Eigen rather than YNNPACK).
Achieved GFLOP/s: the floating-point operations of one JAX call (XLA's cost analysis of the compiled program)
over its median time, against the matrix-multiply peak measured in the same run (numpy's float32 ``sgemm`` on
2048 x 2048 matrices, best of 5; with ``--dtype bfloat16`` also JAX's bfloat16 matrix product with float32
accumulation).

Timings exclude compilation (one warm-up call each) and the host-to-device copy of inputs, which are
created on the device beforehand; outputs are waited for (``block_until_ready`` / ``.numpy()``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The reference at its fastest: TensorFlow turns its oneDNN kernels on by default only on some CPUs. With
# TF 2.21 on a 2-core AMD EPYC they were off (tf-keras CarSON training 1.56 slices/s; on: 3.23).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from deepstrain_jax.models import build  # noqa: E402
from deepstrain_jax.models.keras_weights import load_keras_weights  # noqa: E402
from deepstrain_jax.xla_flags import RECOMMENDED_CPU_XLA_FLAGS  # noqa: E402


def _keras_model(name: str, seed: int):
    """The tf-keras model with random weights (BN statistics and PReLU alphas included), or None."""
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        return None
    from deepstrain_jax.models.keras_reference import build_keras_model, randomize_keras_weights

    model = build_keras_model(name)
    randomize_keras_weights(model, seed)
    return model


def _time(fn, repeats: int):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def matmul_peaks(dtype: str, n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of the best of ``repeats`` ``n x n`` matrix products: numpy float32 (``sgemm``) and, for
    ``dtype="bfloat16"``, JAX's bfloat16 product with float32 accumulation."""
    import jax.numpy as jnp

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    peaks = {"numpy sgemm": 2 * n ** 3 / min(_time(lambda: a @ a, repeats)) / 1e9}
    if dtype == "bfloat16":
        ab = jax.device_put(a.astype(jnp.bfloat16))
        mm = jax.jit(lambda u: jnp.dot(u, u, preferred_element_type=jnp.float32))
        mm(ab).block_until_ready()
        peaks["jax bf16 matmul"] = 2 * n ** 3 / min(_time(lambda: mm(ab).block_until_ready(), repeats)) / 1e9
    return peaks


def bench(name: str, batch: int, repeats: int, use_keras: bool, dtype: str, seed: int = 0) -> dict:
    cfg = {"name": name, "family": "legacy", "dtype": dtype}
    init, apply = build(cfg)
    model = _keras_model(name, seed) if use_keras else None
    if model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.h5")
            model.save_weights(path)
            variables = jax.device_put(load_keras_weights(path, cfg))
    else:
        variables = jax.jit(init)(jax.random.key(seed))

    rng = np.random.default_rng(seed + 1)
    if name == "carmen":
        frames = [rng.standard_normal((batch, 128, 128, 16, 1), np.float32) for _ in range(2)]
        x_np = np.concatenate(frames, axis=-1)
        keras_in = frames
    else:
        x_np = rng.standard_normal((batch, 128, 128, 1), np.float32)
        keras_in = x_np
    x = jax.device_put(x_np)
    forward = jax.jit(lambda v, x: apply(v, x))
    cost = forward.lower(variables, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    y_jax = np.asarray(forward(variables, x))
    run_jax = lambda: forward(variables, x).block_until_ready()  # noqa: E731

    result = {"name": name, "batch": batch, "gflop_per_call": float(cost.get("flops", float("nan"))) / 1e9}
    if model is not None:
        import tensorflow as tf

        keras_in = [tf.constant(a) for a in keras_in] if isinstance(keras_in, list) else tf.constant(keras_in)
        call = tf.function(lambda inp: model(inp, training=False))
        y_tf = call(keras_in).numpy()
        result["max_abs_diff"] = float(np.abs(y_tf - y_jax).max())
        result["output_scale"] = float(np.abs(y_tf).max())
        run_tf = lambda: call(keras_in).numpy()  # noqa: E731
        t_jax, t_tf = [], []
        for _ in range(repeats):  # alternate, so that load changes hit both
            t_jax += _time(run_jax, 1)
            t_tf += _time(run_tf, 1)
        result["tf_ms"] = [1e3 * t / batch for t in t_tf]
    else:
        t_jax = _time(run_jax, repeats)
    result["jax_ms"] = [1e3 * t / batch for t in t_jax]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", nargs="+", choices=["carmen", "carson"], default=["carmen", "carson"])
    parser.add_argument("--batch-carmen", type=int, default=1, help="frame pairs per call (default 1)")
    parser.add_argument("--batch-carson", type=int, default=16, help="slices per call (default 16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-keras", action="store_true", help="time the JAX build only")
    parser.add_argument("--xla-default", action="store_true",
                        help="keep XLA's default CPU flags instead of the recommended ones")
    args = parser.parse_args(argv)

    flags = os.environ.get("XLA_FLAGS", "")
    if not args.xla_default and "ynn_fusion_type" not in flags:
        # Before JAX's first computation, so the backend reads it.
        os.environ["XLA_FLAGS"] = f"{flags} {RECOMMENDED_CPU_XLA_FLAGS}".strip()
    load0 = os.getloadavg()[0]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load average {load0:.2f}")
    peaks = matmul_peaks(args.dtype)
    print("matrix-multiply peak (same run): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()),
          flush=True)
    for name in args.network:
        batch = args.batch_carmen if name == "carmen" else args.batch_carson
        unit = "pair" if name == "carmen" else "slice"
        r = bench(name, batch, args.repeats, not args.no_keras, args.dtype)
        med_jax = statistics.median(r["jax_ms"])
        line = (f"{name:6s} batch {batch:3d}: JAX {med_jax:8.1f} ms/{unit} (median; min {min(r['jax_ms']):.1f})")
        if "tf_ms" in r:
            med_tf = statistics.median(r["tf_ms"])
            line += (f" | tf-keras {med_tf:8.1f} ms/{unit} (min {min(r['tf_ms']):.1f})"
                     f" | JAX/tf-keras {med_jax / med_tf:.2f}"
                     f" | max |diff| {r['max_abs_diff']:.1e} (output scale {r['output_scale']:.2f})")
        else:
            line += " | tf-keras not installed"
        print(line, flush=True)
        rate = r["gflop_per_call"] / (med_jax * batch / 1e3)
        print(f"       {r['gflop_per_call'] / batch:.1f} GFLOP/{unit} (XLA cost analysis): {rate:.0f} GFLOP/s, "
              + ", ".join(f"{100 * rate / v:.0f} % of {k}" for k, v in peaks.items()), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (2 cores: above ~2 the numbers are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
