"""Numerical parity with the original Keras graph, built in tf-keras (optional ``keras`` extra; skipped without it).

Each test builds the published architecture in tf-keras, gives every weight a random value (BN statistics and
PReLU alphas included), saves it with ``save_weights("....h5")``, loads that file here through
:mod:`deepstrain_jax.models.keras_weights` and compares outputs on random inputs: within 1e-4 of the output
scale (``max |y_keras|``) in inference. Run in an environment with ``pip install -e .[keras]``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tf_keras")

import jax  # noqa: E402

from deepstrain_jax.models import build  # noqa: E402
from deepstrain_jax.models.keras_reference import build_keras_model, randomize_keras_weights  # noqa: E402
from deepstrain_jax.models.keras_weights import load_keras_weights  # noqa: E402

pytestmark = pytest.mark.keras


def make_pair(name, gf, tmp_path, seed=0):
    model = build_keras_model(name, gf=gf)
    randomize_keras_weights(model, seed)
    path = tmp_path / f"{name}_gf{gf}.h5"
    model.save_weights(str(path))
    cfg = {"name": name, "family": "legacy", "gf": gf}
    return model, cfg, load_keras_weights(path, cfg)


def make_inputs(name, batch, seed=1):
    """Keras inputs and the same data as the JAX network's input."""
    rng = np.random.default_rng(seed)
    if name == "carmen":
        frames = [rng.standard_normal((batch, 128, 128, 16, 1)).astype(np.float32) for _ in range(2)]
        return frames, np.concatenate(frames, axis=-1)  # channel 0 = V_0, as Concatenate([V_0, V_t])
    x = rng.standard_normal((batch, 128, 128, 1)).astype(np.float32)
    return x, x


def assert_close_to_scale(y, y_ref, rel):
    scale = float(np.abs(y_ref).max())
    err = float(np.abs(np.asarray(y) - y_ref).max())
    assert err <= rel * scale, f"max |difference| {err:.3g} > {rel:g} x output scale {scale:.3g}"


@pytest.mark.parametrize("name", ["carson", "carmen"])
def test_small_network_inference_matches_keras(name, tmp_path):
    model, cfg, variables = make_pair(name, 4, tmp_path)
    keras_in, x = make_inputs(name, 2)
    y_keras = model(keras_in, training=False).numpy()
    y = jax.jit(build(cfg)[1])(variables, x)
    assert y.shape == y_keras.shape
    assert_close_to_scale(y, y_keras, 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["carson", "carmen"])
def test_small_network_training_mode_matches_keras(name, tmp_path):
    model, cfg, variables = make_pair(name, 4, tmp_path)
    keras_in, x = make_inputs(name, 2)
    _, apply = build(cfg)
    y, updates = jax.jit(lambda v, x: apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    y_keras = model(keras_in, training=True).numpy()  # eager: also updates Keras's moving statistics
    # Keras's float32 training-mode BatchNorm is the less accurate of the two: against this network in
    # float64 its error is ~100x that of the JAX float32 result (checked below), hence 1e-3 here.
    assert_close_to_scale(y, y_keras, 1e-3)
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables)
        y64, _ = jax.jit(lambda v, x: apply(v, x, train=True, mutable=["batch_stats"]))(v64, x.astype(np.float64))
        assert_close_to_scale(y, np.asarray(y64), 1e-4)
    model.save_weights(str(tmp_path / "after.h5"))
    moved = load_keras_weights(tmp_path / "after.h5", cfg)["batch_stats"]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(updates["batch_stats"]),
                            jax.tree_util.tree_leaves(moved)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-3, atol=1e-4, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
@pytest.mark.parametrize("name,batch", [("carson", 2), ("carmen", 1)])
def test_published_size_inference_matches_keras(name, batch, tmp_path):
    model, cfg, variables = make_pair(name, 64, tmp_path)
    keras_in, x = make_inputs(name, batch)
    y_keras = model(keras_in, training=False).numpy()
    y = jax.jit(build(cfg)[1])(variables, x)
    assert_close_to_scale(y, y_keras, 1e-4)
