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
    python benchmarks/bench_training.py --shipped                # + the shipped v2 sizes, against plain ops

``--shipped`` adds the v2 architectures of the shipped models (``model.json``) at their training batches
(CarSON 16 slices of 96 x 96, the training crop; CarMEN 4 pairs), which have no tf-keras counterpart: their
reference in the same run is the same network with the plain operations this project replaced for training
speed (``jnp.sum`` / ``jnp.broadcast_to`` for the channel sums of BatchNorm and the biases instead of
:mod:`deepstrain_jax.models.channels`, and autodiff of the head's partial-map upsampling convolution instead of
its custom gradient); the legacy rows print that reference too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The reference at its fastest: TensorFlow turns its oneDNN kernels on by default only on some CPUs. With
# TF 2.21 on a 2-core AMD EPYC they were off (tf-keras CarSON training 1.56 slices/s; on: 3.23).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from deepstrain_jax.models import build  # noqa: E402
from deepstrain_jax.training import state as state_lib  # noqa: E402
from deepstrain_jax.training import step as step_lib
from deepstrain_jax.xla_flags import use_fast_cpu_convolutions  # noqa: E402


def _inputs(name: str, batch: int, rng, shape=None):
    if shape is not None:
        return rng.standard_normal((batch, *shape), np.float32)
    if name == "carmen":
        return rng.standard_normal((batch, 128, 128, 16, 2), np.float32)
    return rng.standard_normal((batch, 128, 128, 1), np.float32)


@contextlib.contextmanager
def _plain_ops():
    """The network code as it was before its training-speed changes: plain channel sums and broadcasts, and
    autodiff through the head's partial-map form (traced inside this context)."""
    from deepstrain_jax.models import conv, layers

    saved = layers.channel_sum, layers.broadcast_channels, conv._few_features_upsample_conv
    layers.channel_sum = lambda x: jnp.sum(x.astype(jnp.float32), axis=tuple(range(x.ndim - 1)))
    layers.broadcast_channels = jnp.broadcast_to
    conv._few_features_upsample_conv = conv._few_features_forward
    try:
        yield
    finally:
        layers.channel_sum, layers.broadcast_channels, conv._few_features_upsample_conv = saved


def _jax_step(cfg: dict, x):
    """A jitted, warmed-up Adam step of the network ``cfg`` on the batch ``x``: ``run() -> None``."""
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

    return run_jax


def bench(name: str, batch: int, repeats: int, gf: int, use_keras: bool, cfg: dict | None = None) -> dict:
    """Samples per second of this project's step (``jax``), of the same network with the plain operations
    (``plain``) and, for a legacy network where tf-keras is importable, of the tf-keras graph (``tf``)."""
    rng = np.random.default_rng(0)
    cfg = cfg or {"name": name, "family": "legacy", "gf": gf}
    x = _inputs(name, batch, rng, tuple(cfg.get("input_shape", ())) or None)
    run_jax = _jax_step(cfg, x)
    with _plain_ops():
        run_plain = _jax_step(cfg, x)

    run_tf = None
    use_keras = use_keras and cfg.get("family") == "legacy"
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

    runs = {"jax": run_jax, "plain": run_plain, **({"tf": run_tf} if run_tf is not None else {})}
    times = {k: [] for k in runs}
    for _ in range(repeats):  # alternating, so that changes in machine load hit every variant
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", nargs="+", choices=["carmen", "carson"], default=["carmen", "carson"])
    parser.add_argument("--batch-carmen", type=int, default=2)
    parser.add_argument("--batch-carson", type=int, default=16)
    parser.add_argument("--gf", type=int, default=64, help="width of the first block (published: 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--shipped", action="store_true", help="also the shipped v2 sizes at their training batch")
    args = parser.parse_args(argv)
    use_fast_cpu_convolutions()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, legacy gf={args.gf}")
    cases = [(name, args.batch_carmen if name == "carmen" else args.batch_carson, None, f"legacy gf {args.gf}")
             for name in args.network]
    if args.shipped:
        from deepstrain_jax.models import pretrained

        for name in args.network:
            arch = json.loads((pretrained.default_model_dir(name) / "model.json").read_text())
            if name == "carson":
                arch["input_shape"] = [96, 96, 1]  # the training crop (configs/carson.py:real)
            cases.append((name, 4 if name == "carmen" else 16, arch, f"shipped v2 gf {arch['gf']}"))
    for name, batch, cfg, label in cases:
        unit = "pairs" if name == "carmen" else "slices"
        r = bench(name, batch, args.repeats, args.gf, not args.no_keras, cfg)
        line = (f"{name:6s} {label:18s} batch {batch:3d}: JAX {r['jax']:7.2f} {unit}/s | plain ops "
                f"{r['plain']:7.2f} (JAX/plain {r['jax'] / r['plain']:.2f})")
        if "tf" in r:
            line += f" | tf-keras {r['tf']:7.2f} {unit}/s | JAX/tf-keras throughput {r['jax'] / r['tf']:.2f}"
        elif cfg is None:
            line += " | tf-keras not installed"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
