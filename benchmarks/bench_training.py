"""Training throughput of the legacy networks: JAX versus the original tf-keras graph, in one process.

Prints training samples per second (CarMEN frame pairs, CarSON slices) for one Adam step on a fixed random
batch -- forward, backward with BatchNorm in training mode, update -- for the JAX legacy build (the project's
own ``make_train_step``, jitted) and, where ``tf_keras`` is importable (``pip install -e .[keras]``), for the
tf-keras build of the same architecture and batch (``train_on_batch`` after ``compile``), and the ratio of
the medians. Both minimise the same loss, the mean squared output, so the comparison is the network, not a
loss. Runs alternate between the two frameworks so that changes in machine load hit both. Compilation and the
first steps are excluded (warm-up).

    python benchmarks/bench_training.py                          # CarMEN batch 2, CarSON batch 16
    python benchmarks/bench_training.py --network carson --batch-carson 80 --repeats 5
    python benchmarks/bench_training.py --gf 16                  # a narrower build of the same topology
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from deepstrain_jax.models import build  # noqa: E402
from deepstrain_jax.training import state as state_lib  # noqa: E402
from deepstrain_jax.training import step as step_lib
from deepstrain_jax.xla_flags import use_fast_cpu_convolutions  # noqa: E402


def _inputs(name: str, batch: int, rng):
    if name == "carmen":
        return rng.standard_normal((batch, 128, 128, 16, 2), np.float32)
    return rng.standard_normal((batch, 128, 128, 1), np.float32)


def bench(name: str, batch: int, repeats: int, gf: int, use_keras: bool) -> dict:
    rng = np.random.default_rng(0)
    x = _inputs(name, batch, rng)
    cfg = {"name": name, "family": "legacy", "gf": gf}
    init, apply = build(cfg)
    tx = optax.adam(1e-4)
    state = jax.jit(lambda r: state_lib.create_train_state(init, tx, r))(jax.random.PRNGKey(0))
    loss_fn = lambda out, b, r: (jnp.mean(out.reshape(out.shape[0], -1) ** 2, axis=1), {})  # noqa: E731
    step = jax.jit(step_lib.make_train_step(apply, tx, loss_fn), donate_argnums=0)
    batch_dev = {"inputs": jax.device_put(x)}
    for _ in range(2):
        state, m = step(state, batch_dev)
    jax.block_until_ready(m)

    def run_jax():
        nonlocal state
        state, metrics = step(state, batch_dev)
        jax.block_until_ready(metrics)

    run_tf = None
    if use_keras:
        try:
            import tf_keras  # noqa: F401
        except ImportError:
            use_keras = False
    if use_keras:
        import tensorflow as tf
        import tf_keras as keras

        from deepstrain_jax.models.keras_reference import build_keras_model

        model = build_keras_model(name, gf=gf)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
        keras_x = [tf.constant(x[..., :1]), tf.constant(x[..., 1:])] if name == "carmen" else tf.constant(x)
        out_shape = (batch, 128, 128, 16, 3) if name == "carmen" else (batch, 128, 128, 4)
        target = tf.zeros(out_shape)
        for _ in range(2):
            model.train_on_batch(keras_x, target)
        run_tf = lambda: model.train_on_batch(keras_x, target)  # noqa: E731

    t_jax, t_tf = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_jax()
        t_jax.append(time.perf_counter() - t0)
        if run_tf is not None:
            t0 = time.perf_counter()
            run_tf()
            t_tf.append(time.perf_counter() - t0)
    result = {"jax": batch / statistics.median(t_jax)}
    if t_tf:
        result["tf"] = batch / statistics.median(t_tf)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", nargs="+", choices=["carmen", "carson"], default=["carmen", "carson"])
    parser.add_argument("--batch-carmen", type=int, default=2)
    parser.add_argument("--batch-carson", type=int, default=16)
    parser.add_argument("--gf", type=int, default=64, help="width of the first block (published: 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-keras", action="store_true")
    args = parser.parse_args(argv)
    use_fast_cpu_convolutions()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, legacy gf={args.gf}")
    for name in args.network:
        batch = args.batch_carmen if name == "carmen" else args.batch_carson
        unit = "pairs" if name == "carmen" else "slices"
        r = bench(name, batch, args.repeats, args.gf, not args.no_keras)
        line = f"{name:6s} batch {batch:3d}: JAX {r['jax']:7.2f} {unit}/s"
        if "tf" in r:
            line += f" | tf-keras {r['tf']:7.2f} {unit}/s | JAX/tf-keras throughput {r['jax'] / r['tf']:.2f}"
        else:
            line += " | tf-keras not installed"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
