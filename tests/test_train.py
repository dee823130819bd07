"""The trainer end to end on tiny phantoms (`:smoke` configs), exact resume, and every config building."""

import importlib
import json

import chex
import jax
import numpy as np
import optax
import pytest

from deepstrain_jax import models
from deepstrain_jax.training import checkpointing, tasks
from deepstrain_jax.training import state as state_lib
from deepstrain_jax.training import step as step_lib
from train import trainer

CONFIGS = ("vcn", "carson", "carmen")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", ["smoke", "cpu", "paper", "real", "real_v2", "real_v3"])
def test_every_config_loads_and_builds(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    assert config.task == name
    init, _ = models.build(dict(config.model))
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    n_params = sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert n_params > 0
    tasks.make_task_fns(config.task, config.loss)
    assert config.train.batch_size % 1 == 0 and config.train.lr > 0


def test_carmen_ablation_config_builds_at_a_quarter_of_the_voxels():
    config = importlib.import_module("configs.carmen").get_config("ablation")
    cpu = importlib.import_module("configs.carmen").get_config("cpu")
    assert config.variant == "ablation" and tuple(config.model.input_shape) == (64, 64, 16, 2)
    assert config.data.crop * config.data.inplane_mm == cpu.data.crop * cpu.data.inplane_mm  # same 160 mm view
    init, _ = models.build(dict(config.model))
    assert jax.eval_shape(init, jax.random.PRNGKey(0))["params"]


def test_bad_config_values_are_clear_errors():
    with pytest.raises(ValueError, match="config argument must be one of .*'smoke', 'cpu', 'paper'"):
        importlib.import_module("configs.carmen").get_config("huge")
    with pytest.raises(ValueError, match="task must be"):
        tasks.make_task_fns("unet", {})


def _smoke(name, cache, steps):
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    config.data.cache_dir = str(cache)
    config.train.steps = steps
    return config


def _latest_state(workdir, config):
    init, _ = models.build(dict(config.model))
    tx = optax.adam(config.train.lr)
    like = state_lib.create_train_state(init, tx, jax.random.PRNGKey(0))
    ckpt = checkpointing.Checkpointer(workdir, every=1)
    state, saved_config, meta = ckpt.restore(like)
    ckpt.close()
    return state, saved_config, meta


def test_carmen_smoke_trains_and_resumes_to_the_identical_state(tmp_path):
    cache = tmp_path / "cache"
    full = _smoke("carmen", cache, 4)
    trainer.train_and_evaluate(full, tmp_path / "full")

    half = _smoke("carmen", cache, 2)
    trainer.train_and_evaluate(half, tmp_path / "resumed")
    trainer.train_and_evaluate(_smoke("carmen", cache, 4), tmp_path / "resumed")  # picks up at step 2

    a, cfg_a, meta_a = _latest_state(tmp_path / "full", full)
    b, _, meta_b = _latest_state(tmp_path / "resumed", full)
    assert int(a.step) == int(b.step) == 4 and meta_a == meta_b == {"data_position": 4}
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    assert cfg_a["task"] == "carmen"

    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4] and all(np.isfinite(r["epe_myo_mm"]) for r in val)
    variables, arch = checkpointing.load_variables(tmp_path / "full" / "model")
    assert arch["name"] == "carmen" and "params" in variables


@pytest.mark.parametrize("name", ["vcn", "carson"])
def test_vcn_and_carson_smoke_train(tmp_path, name):
    result = trainer.train_and_evaluate(_smoke(name, tmp_path / "cache", 2), tmp_path / name)
    key = "mse" if name == "vcn" else "dice_mean"
    assert np.isfinite(result[key])
    assert (tmp_path / name / "model" / "model.json").is_file()


def test_a_carmen_step_on_a_phantom_pair_lowers_its_loss(tmp_path):
    config = _smoke("carmen", tmp_path / "cache", 1)
    train_pool, _ = trainer.make_pools(config, tmp_path)
    sample, _ = trainer.make_samplers(config)
    batch = jax.device_put(trainer._device_batch(sample(train_pool, 0)))
    init, apply = models.build(dict(config.model))
    tx = optax.adam(1e-3)
    state = state_lib.create_train_state(init, tx, jax.random.PRNGKey(0))
    loss_fn, _ = tasks.make_task_fns("carmen", config.loss)
    step = jax.jit(chex.assert_max_traces(step_lib.make_train_step(apply, tx, loss_fn), n=1))
    losses = []
    for _ in range(8):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0], losses


def test_motion_errors_by_hand():
    from train.ablation import motion_errors

    spacing = np.array([[1.0, 2.0, 4.0]])
    true = np.zeros((1, 2, 1, 1, 3))
    pred = np.zeros((1, 2, 1, 1, 3))
    true[0, 0, 0, 0] = [2.0, 0.0, 0.0]   # 2 mm along axis 0
    pred[0, 0, 0, 0] = [0.0, 1.0, 0.0]   # 2 mm along axis 1: 90 degrees off, same magnitude
    true[0, 1, 0, 0] = [0.0, 0.0, 0.1]   # 0.4 mm: too small for an angle
    pred[0, 1, 0, 0] = [0.0, 0.0, 0.2]   # 0.8 mm
    mask = np.ones((1, 2, 1, 1), bool)
    out = motion_errors(pred, true, spacing, mask)
    np.testing.assert_allclose(out["epe_mm"], (np.sqrt(8.0) + 0.4, 2))
    np.testing.assert_allclose(out["angle_deg"], (90.0, 1))
    np.testing.assert_allclose(out["magnitude_mm"], (0.0 + 0.4, 2))


def test_ablation_grid_writes_its_table(tmp_path):
    from train import ablation

    base = _smoke("carmen", tmp_path / "cache", 1)
    with base.unlocked():
        base.train.eval_every = 1
    rows = ablation.run(base, tmp_path / "abl", ["0", "0.5"], ["0.01"])
    assert [(r["lambda_a"], r["lambda_s"]) for r in rows] == [(0.0, 0.01), (0.5, 0.01)]
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| 0.5 | 0.01 |" in table and all(np.isfinite(r["epe_mm"]) for r in rows)
    # Re-running skips finished cells (no new training: the metrics log does not grow).
    log = (tmp_path / "abl" / "la0.5_ls0.01" / "metrics.jsonl").read_text()
    ablation.run(base, tmp_path / "abl", ["0.5"], ["0.01"])
    assert (tmp_path / "abl" / "la0.5_ls0.01" / "metrics.jsonl").read_text() == log


def test_learning_rate_decay_is_piecewise_constant():
    import ml_collections
    import optax

    from train.trainer import make_optimizer

    cfg = ml_collections.ConfigDict({"lr": 1e-3, "b1": 0.9, "b2": 0.999, "lr_decay": ((2, 0.3),)})
    tx = make_optimizer(cfg)
    params = {"w": np.zeros(())}
    state = tx.init(params)
    steps = []
    for _ in range(4):
        # Adam's first step from zero moments moves by lr * sign(g) (bias-corrected): the update is -lr.
        update, state = tx.update({"w": np.ones(())}, state, params)
        steps.append(float(update["w"]))
    np.testing.assert_allclose(steps[:2], [-1e-3, -1e-3], rtol=1e-4)
    np.testing.assert_allclose(steps[2:], [-3e-4, -3e-4], rtol=1e-4)
    plain = make_optimizer(ml_collections.ConfigDict({"lr": 1e-3, "b1": 0.9, "b2": 0.999}))
    assert isinstance(plain, optax.GradientTransformation)


def test_training_resumes_past_a_damaged_checkpoint_and_logs_each_step_once(tmp_path, capfd, caplog):
    from test_checkpoint_faults import CORRUPTIONS

    cache = tmp_path / "cache"

    def config(steps):
        c = _smoke("vcn", cache, steps)
        c.train.ckpt_every, c.train.keep = 1, 5
        return c

    trainer.train_and_evaluate(config(4), tmp_path / "full")
    trainer.train_and_evaluate(config(3), tmp_path / "hit")
    CORRUPTIONS["array data changed"](tmp_path / "hit" / "checkpoints" / "3")
    with open(tmp_path / "hit" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "split": "tra')  # a kill in mid-line
    trainer.train_and_evaluate(config(4), tmp_path / "hit")  # resumes at 2, not at the damaged 3
    assert "resumed from step 2" in capfd.readouterr().err
    assert "checkpoint step 3" in caplog.text and "is damaged" in caplog.text

    a, _, _ = _latest_state(tmp_path / "full", config(4))
    b, _, _ = _latest_state(tmp_path / "hit", config(4))
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    records = [json.loads(line) for line in (tmp_path / "hit" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4]


def test_truncate_log_keeps_records_up_to_the_restored_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": k, "split": "train"}) for k in (1, 2, 3, 4)] + ['{"step": 5, "spl']
    path.write_text("\n".join(lines))
    assert trainer.truncate_log(path, 2) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert trainer.truncate_log(tmp_path / "absent.jsonl", 2) == 0


def _small_state(model_cfg):
    init, _ = models.build(model_cfg)
    return state_lib.create_train_state(init, optax.adam(1e-3), jax.random.PRNGKey(0))


def test_warm_start_into_slice_mixing_keeps_the_function_and_refuses_other_changes(tmp_path):
    from deepstrain_jax.io.checkpoints import save_variables
    cfg = {"name": "carmen", "family": "v2", "gf": 2, "depth": 2, "input_shape": (8, 8, 4, 2)}
    _, apply_2d = models.build(cfg)
    trained = _small_state(cfg)
    trained = trained._replace(params=jax.tree.map(lambda a: a + 0.05, trained.params))  # not the init values
    save_variables(tmp_path / "m", {"params": trained.params, "batch_stats": trained.batch_stats}, cfg)
    mix_cfg = {**cfg, "slice_mix": True}
    _, apply_mix = models.build(mix_cfg)
    state = trainer.warm_start(_small_state(mix_cfg), tmp_path / "m")
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 8, 8, 4, 2))
    np.testing.assert_array_equal(
        np.asarray(apply_mix({"params": state.params, "batch_stats": state.batch_stats}, x)),
        np.asarray(apply_2d({"params": trained.params, "batch_stats": trained.batch_stats}, x)))
    with pytest.raises(ValueError, match="do not match"):
        trainer.warm_start(_small_state({**cfg, "gf": 3}), tmp_path / "m")
    with pytest.raises(ValueError, match="do not match"):   # dropping layers is not a warm start either
        save_variables(tmp_path / "mm", {"params": state.params, "batch_stats": state.batch_stats}, mix_cfg)
        trainer.warm_start(_small_state(cfg), tmp_path / "mm")
