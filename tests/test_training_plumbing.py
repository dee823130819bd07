"""training/{state,step,parallel,checkpointing}.py with a fake pure-JAX model (no Flax needed).

The fake model has a BatchNorm-like running mean, so the multi-device tests check that batch statistics, not
only gradients, match the 1-device step on the full batch.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepstrain_jax.training import checkpointing, parallel
from deepstrain_jax.training import state as state_lib
from deepstrain_jax.training import step as step_lib


def make_fake_model(axis_name=None):
    def init(rng, x):
        k1, _ = jax.random.split(rng)
        return {"params": {"w": jax.random.normal(k1, (x.shape[-1], 2)) * 0.5, "b": jnp.zeros(2)},
                "batch_stats": {"mean": jnp.zeros(x.shape[-1])}}

    def apply(variables, x, train=False, mutable=False):
        stats = variables["batch_stats"]
        if train:
            mean = jnp.mean(x, axis=0)
            if axis_name is not None:
                mean = jax.lax.pmean(mean, axis_name)
            new_mean = 0.5 * stats["mean"] + 0.5 * mean  # momentum 0.5, as the original's BatchNorm
        else:
            mean = new_mean = stats["mean"]
        y = jnp.tanh((x - mean) @ variables["params"]["w"] + variables["params"]["b"])
        if mutable:
            return y, {"batch_stats": {"mean": new_mean}}
        return y

    return init, apply


def loss_fn(outputs, batch, rng):
    per_example = jnp.mean((outputs - batch["targets"]) ** 2, axis=-1)
    return per_example, {"mae": jnp.mean(jnp.abs(outputs - batch["targets"]), axis=-1)}


def metric_fn(outputs, batch):
    err = jnp.mean((outputs - batch["targets"]) ** 2, axis=-1)
    return {"mse": (jnp.sum(err), jnp.asarray(err.shape[0], jnp.float32))}


def _setup(axis_name=None):
    init, apply = make_fake_model(axis_name)
    tx = optax.adam(1e-2)
    rng = np.random.default_rng(0)
    batch = {"inputs": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
             "targets": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
    state = state_lib.create_train_state(init, tx, jax.random.PRNGKey(0), batch["inputs"])
    return init, apply, tx, batch, state


def _run_single(n_steps=3):
    _, apply, tx, batch, state = _setup()
    step = jax.jit(step_lib.make_train_step(apply, tx, loss_fn))
    for _ in range(n_steps):
        state, metrics = step(state, batch)
    return state, metrics


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_data_parallel_step_equals_single_device(mode):
    assert jax.device_count() == 4, "tests/conftest.py forces 4 CPU devices"
    ref_state, ref_metrics = _run_single()
    plan = parallel.make_plan(mode)
    _, apply, tx, batch, state = _setup(axis_name=plan.axis_name)
    step = parallel.compile_step(step_lib.make_train_step(apply, tx, loss_fn, axis_name=plan.axis_name), plan)
    state = parallel.replicate(state, plan)
    for _ in range(3):
        state, metrics = step(state, parallel.shard_batch(batch, plan))
        jax.block_until_ready(state)  # CPU collectives can stall with many queued steps
    state, metrics = parallel.unreplicate((state, metrics), plan)
    chex.assert_trees_all_close(jax.device_get(state), jax.device_get(ref_state), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.device_get(metrics), jax.device_get(ref_metrics), rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_eval_step_sums_over_devices(mode):
    _, apply, _, batch, state = _setup()
    plan = parallel.make_plan(mode)
    ev = parallel.compile_step(step_lib.make_eval_step(apply, metric_fn, axis_name=plan.axis_name), plan,
                               donate_state=False)
    sums = parallel.unreplicate(ev(parallel.replicate(state, plan), parallel.shard_batch(batch, plan)), plan)
    out = apply(state_lib.variables(state), batch["inputs"])
    expected = float(jnp.mean((out - batch["targets"]) ** 2))
    assert float(sums["mse"][1]) == 8.0
    np.testing.assert_allclose(step_lib.combine_metric_sums([sums])["mse"], expected, rtol=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    plan = parallel.make_plan("jit")
    with pytest.raises(ValueError, match="does not divide by the 4 devices"):
        parallel.shard_batch({"inputs": np.zeros((6, 3))}, plan)
    with pytest.raises(ValueError, match="'jit' or 'pmap'"):
        parallel.make_plan("threads")


def test_no_recompilation_across_steps():
    _, apply, tx, batch, state = _setup()
    raw = step_lib.make_train_step(apply, tx, loss_fn)
    step = jax.jit(chex.assert_max_traces(raw, n=1))
    for _ in range(4):
        state, _ = step(state, batch)
    assert int(state.step) == 4


def test_step_lowers_the_loss_and_uses_per_step_rng():
    _, apply, tx, batch, state = _setup()
    seen = []

    def noisy_loss(outputs, b, rng):
        seen.append(rng)
        return loss_fn(outputs, b, rng)

    step = step_lib.make_train_step(apply, tx, noisy_loss)
    first = None
    for _ in range(20):
        state, metrics = step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < first
    np.testing.assert_array_equal(seen[1], jax.random.fold_in(state.rng, 1))


def test_checkpointer_exact_resume_keep_and_best(tmp_path):
    _, apply, tx, batch, state = _setup()
    step = jax.jit(step_lib.make_train_step(apply, tx, loss_fn))
    ckpt = checkpointing.Checkpointer(tmp_path, every=2, keep=2, best_metric="val_loss", best_mode="min")
    config = {"lr": 0.01, "name": "fake"}
    states = {}
    for i in range(1, 7):
        state, _ = step(state, batch)
        states[i] = state
        ckpt.maybe_save(i, state, config, {"data_position": i})
        ckpt.save_best(i, state, {"val_loss": abs(i - 3.0)}, config)
    assert ckpt.latest_step() == 6
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [4, 6]
    restored, cfg, meta = ckpt.restore(state)
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(states[6]))
    assert cfg == config and meta == {"data_position": 6}
    best, _, _ = ckpt.restore(state, best=True)
    chex.assert_trees_all_equal(jax.device_get(best), jax.device_get(states[3]))
    # Resuming from step 4 and stepping twice gives the state saved at 6, bit for bit.
    resumed, _, _ = ckpt.restore(state, step=4)
    for _ in range(2):
        resumed, _ = step(resumed, batch)
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(states[6]))
    ckpt.close()


def test_save_and_load_variables(tmp_path):
    _, _, _, _, state = _setup()
    variables = state_lib.variables(state)
    checkpointing.save_variables(tmp_path / "model", variables, {"name": "fake", "gf": 4})
    loaded, model_config = checkpointing.load_variables(tmp_path / "model")
    assert model_config == {"name": "fake", "gf": 4}
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, loaded),
                                jax.tree_util.tree_map(np.asarray, variables))
    with pytest.raises(Exception, match="not a deepstrain-jax model folder"):
        checkpointing.load_variables(tmp_path)
