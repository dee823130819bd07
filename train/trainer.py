"""The training loop, top to bottom: set-up, then one flat loop with "is it time to log / evaluate / save".

``train_and_evaluate(config, workdir)`` trains the network named by ``config.task`` ("vcn", "carson" or
"carmen") on phantoms generated on the fly or on an ACDC-layout folder, and writes to ``workdir``:

* ``checkpoints/`` (latest ``train.keep``) and ``best/`` (best validation ``train.best_metric``): Orbax
  checkpoints with the config; re-running resumes from the latest one exactly (the batch of step k is a
  function of (seed, k), the PRNG key is in the state);
* ``metrics.jsonl``: one JSON object per logged train step and per evaluation;
* ``config.json``: the config of the run;
* ``model/``: the exported variables and architecture of the best (or final) state, loadable with
  ``deepstrain_jax.training.checkpointing.load_variables`` -- what ships inside the package.

It stops with an error on a non-finite loss. Progress (step, loss, steps/s, ETA) goes to stderr.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import traverse_util

from deepstrain_jax import console, models
from deepstrain_jax.io import atomic
from deepstrain_jax.models.layers import SLICE_MIX_PREFIX
from deepstrain_jax.training import checkpointing, parallel, tasks
from deepstrain_jax.training import state as state_lib
from deepstrain_jax.training import step as step_lib
from deepstrain_jax.training_data import augment as aug
from deepstrain_jax.training_data import batches, pools
from deepstrain_jax.training_data import subjects as sj

_SAMPLERS = {"vcn": batches.vcn_batch, "carson": batches.carson_batch, "carmen": batches.carmen_batch}


def make_pools(config, workdir: Path):
    """Training and validation pools for ``config.data`` (validation: other seeds, no augmentation)."""
    d = config.data
    cfg = sj.SubjectConfig(inplane_mm=d.inplane_mm, n_slices=d.n_slices, crop=d.crop,
                           centre_jitter_mm=d.centre_jitter_mm)
    val_cfg = cfg._replace(centre_jitter_mm=0.0)
    cache = Path(d.cache_dir) if d.cache_dir else workdir / "data_cache"
    if d.source == "phantom":
        kwargs = _phantom_kwargs(config, d.phantom_model)
        train = pools.PhantomPool(config.seed, d.pool_size, cfg=cfg, phenotypes=tuple(d.phenotypes),
                                  cache_dir=cache, cache_mb=d.cache_mb, **kwargs)
        val = pools.PhantomPool(d.val_seed, d.val_size, cfg=val_cfg, phenotypes=tuple(d.phenotypes),
                                cache_dir=cache, cache_mb=d.cache_mb, **kwargs)
        return train, val
    if d.source == "acdc":
        if not d.root:
            raise ValueError("config.data.root must name an ACDC-layout folder when data.source == 'acdc'")
        train = pools.AcdcPool(d.root, cfg=cfg, cache_dir=cache, jitter_seed=config.seed, cache_mb=d.cache_mb)
        val = pools.AcdcPool(d.val_root or d.root, cfg=val_cfg, cache_dir=cache, cache_mb=d.cache_mb)
        return train, val
    if d.source == "mixture":
        return make_mixture_pools(config, cfg, val_cfg, cache)
    raise ValueError(f"config.data.source must be 'phantom', 'acdc' or 'mixture', got {d.source!r}")


def _phantom_kwargs(config, model: str) -> dict:
    """``dataset.make_case`` settings of a phantom pool of geometry ``model`` from ``config.data``."""
    d = config.data
    kwargs = {"model": model, "snr": tuple(d.snr)}
    if d.n_frames:
        kwargs["n_frames"] = d.n_frames
    kwargs.update(dict(d.get("acquisition", {})))
    return kwargs


def real_root(config) -> Path:
    """``config.data.real.root``, relative paths taken from the repository root (default ``../shared/data/acdc``)."""
    root = Path(config.data.real.root)
    return root if root.is_absolute() else Path(__file__).resolve().parents[1] / root


def real_training_refs(config) -> list:
    """The real cases a mixture trains on: every form in ``data.real.forms`` minus ``data.real.held_out``; a
    patient in several forms is kept once, in the first form listed (``labelled`` before ``h5``: it has the
    real voxel size)."""
    from deepstrain_jax.data import acdc_real

    r = config.data.real
    refs, seen = [], set()
    for form in r.forms:
        for ref in acdc_real.find_cases(real_root(config), form, exclude=tuple(r.held_out)):
            if ref.number not in seen:
                refs.append(ref)
                seen.add(ref.number)
    acdc_real.check_split(refs, tuple(r.held_out))
    if getattr(r, "limit", 0):
        refs = refs[:int(r.limit)]
    return refs


def make_mixture_pools(config, cfg, val_cfg, cache):
    """Real ACDC (``data.real``) plus phantoms of each model in ``data.phantom_models``; validation on phantoms
    of their own seed only (the held-out patients are never used to pick a checkpoint)."""
    d = config.data
    members, repeats, val_members = [], [], []
    refs = real_training_refs(config)
    labeller = None
    if d.real.get("pseudo_labels", ""):
        # Frames without manual labels get CarSON's (train/pseudo_labels.py); "shipped": the shipped models.
        from train.pseudo_labels import CarsonLabeller

        spec = d.real.pseudo_labels
        labeller = CarsonLabeller(carson=None if spec == "shipped" else spec)
    if d.real.repeat > 0:
        members.append(pools.RealAcdcPool(refs, held_out=tuple(d.real.held_out), cfg=cfg, jitter_seed=config.seed,
                                          cache_dir=cache, cache_mb=d.cache_mb, labeller=labeller))
        repeats.append(int(d.real.repeat))
    for model in d.phantom_models:
        kwargs = _phantom_kwargs(config, model)
        members.append(pools.PhantomPool(config.seed, d.pool_size, cfg=cfg, phenotypes=tuple(d.phenotypes),
                                         cache_dir=cache, cache_mb=d.cache_mb, **kwargs))
        repeats.append(1)
        val_members.append(pools.PhantomPool(d.val_seed, d.val_size, cfg=val_cfg, phenotypes=tuple(d.phenotypes),
                                             cache_dir=cache, cache_mb=d.cache_mb, **kwargs))
    val = pools.MixturePool(val_members) if val_members else pools.RealAcdcPool(
        refs[:1], held_out=tuple(d.real.held_out), cfg=val_cfg, cache_dir=cache, cache_mb=d.cache_mb,
        labeller=labeller)
    return pools.MixturePool(members, repeats), val


def make_samplers(config):
    """``(sample_train(pool, step), sample_val(pool, i))``: the seeded batch samplers of ``config`` (augmentation
    for training only)."""
    a = config.augment
    extra = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(a).items()
             if k in aug.AugmentConfig._fields and k not in ("rotation_deg", "translation_vox", "mirror_prob", "gamma")}
    augment = (aug.AugmentConfig(rotation_deg=a.rotation_deg, translation_vox=a.translation_vox,
                                 mirror_prob=a.mirror_prob, gamma=tuple(a.gamma), **extra) if a.enabled else None)
    fn = _SAMPLERS[config.task]
    kwargs = {"augment": augment}
    if config.task == "carmen":
        kwargs["identity_prob"] = config.data.identity_prob
        if config.data.get("reverse_prob", 0.0):
            kwargs["reverse_prob"] = float(config.data.reverse_prob)
            if config.data.get("reverse_truth", False):
                kwargs["reverse_truth"] = True
    if config.task == "carson":
        kwargs["heart_only"] = config.data.heart_only
        if config.data.get("train_crop", 0):
            kwargs["crop"] = int(config.data.train_crop)
    train = lambda pool, step: fn(pool, config.seed, step, config.train.batch_size, **kwargs)
    val_kwargs = {**kwargs, "augment": None}
    val = lambda pool, i: fn(pool, config.data.val_seed, i, config.train.batch_size, **val_kwargs)
    return train, val


def _device_batch(batch: dict) -> dict:
    # Bookkeeping fields (subject, frame, slice, centre) stay on the host.
    return {k: v for k, v in batch.items() if k not in ("subject", "frame", "slice", "centre", "reversed")}


def num_steps(config, train_pool) -> int:
    t = config.train
    if t.epochs:
        per_subject = {"vcn": config.data.n_slices, "carson": config.data.n_slices, "carmen": 1}[config.task]
        return int(t.epochs * math.ceil(len(train_pool) * per_subject / t.batch_size))
    return int(t.steps)


def truncate_log(path: Path, step: int) -> int:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (the restored checkpoint), in place and atomically.

    A run killed after its last checkpoint logged steps that the resumed run logs again; a kill mid-write can
    leave a broken last line. Both go. Returns the number of lines removed.
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic.write_text(path, "".join(k + "\n" for k in kept))
    return len(lines) - len(kept)


class _Log:
    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _derived(metrics: dict) -> dict:
    if all(k in metrics for k in ("dice_rv", "dice_myo", "dice_lv")):
        metrics["dice_mean"] = float(np.mean([metrics["dice_rv"], metrics["dice_myo"], metrics["dice_lv"]]))
    return metrics


def make_optimizer(cfg) -> optax.GradientTransformation:
    """Adam with learning rate ``cfg.lr``, multiplied by ``factor`` from each ``(step, factor)`` of
    ``cfg.lr_decay`` on (a piecewise-constant schedule; none by default)."""
    decay = tuple(cfg.get("lr_decay", ()) or ())
    lr = cfg.lr
    if decay:
        lr = optax.piecewise_constant_schedule(cfg.lr, {int(step): float(f) for step, f in decay})
    return optax.adam(lr, b1=cfg.b1, b2=cfg.b2)


def warm_start(state, model_dir):
    """``state`` with the params and batch statistics of the exported model in ``model_dir`` (the optimiser starts
    afresh).

    The architectures must match, except that the configured model may add slice-mixing layers (``mix_*``,
    :class:`deepstrain_jax.models.layers.SliceMix`) that the exported one lacks: they keep their zero
    initialisation, so the warm-started network computes exactly what the exported one did. Raises ValueError
    when the trees differ otherwise.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_absolute() and not model_dir.exists():
        model_dir = Path(__file__).resolve().parents[1] / model_dir  # relative to the repository
    variables, _ = checkpointing.load_variables(model_dir)
    new = traverse_util.flatten_dict({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    old = traverse_util.flatten_dict({"params": state.params, "batch_stats": state.batch_stats})
    added = set(old) - set(new)
    if (set(new) - set(old) or any(not k[1].startswith(SLICE_MIX_PREFIX) for k in added)
            or any(np.shape(new[k]) != np.shape(old[k]) for k in new)):
        raise ValueError(f"{model_dir}: its variables do not match the configured model")
    if added:
        console.info("warm start: %d slice-mixing variable(s) start at zero", len(added))
    merged = {k: np.asarray(new[k], np.asarray(old[k]).dtype) if k in new else old[k] for k in old}
    merged = traverse_util.unflatten_dict(merged)
    return state._replace(params=merged["params"], batch_stats=merged.get("batch_stats", {}))


def train_and_evaluate(config, workdir) -> dict:
    """Train per ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last evaluation."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_dict = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)
    atomic.write_text(workdir / "config.json", json.dumps(config_dict, indent=2, sort_keys=True))

    # --- Set-up: devices, model, optimiser, state, data, steps. ---
    plan = parallel.make_plan(config.train.parallel)
    parallel.check_batch_size(config.train.batch_size, plan)
    model_cfg = {**dict(config.model), "bn_axis_name": plan.axis_name}
    init_fn, apply_fn = models.build(model_cfg)
    tx = make_optimizer(config.train)
    state = jax.jit(lambda rng: state_lib.create_train_state(init_fn, tx, rng))(jax.random.PRNGKey(config.seed))
    loss_fn, metric_fn = tasks.make_task_fns(config.task, config.loss)
    train_step = parallel.compile_step(
        step_lib.make_train_step(apply_fn, tx, loss_fn, axis_name=plan.axis_name), plan)
    eval_step = parallel.compile_step(step_lib.make_eval_step(apply_fn, metric_fn, axis_name=plan.axis_name),
                                      plan, donate_state=False)

    train_pool, val_pool = make_pools(config, workdir)
    sample_train, sample_val = make_samplers(config)
    total = num_steps(config, train_pool)

    ckpt = checkpointing.Checkpointer(workdir, every=config.train.ckpt_every, keep=config.train.keep,
                                      best_metric=config.train.best_metric or None, best_mode=config.train.best_mode)
    # Released on every exit, a failure included: the checkpoint managers (Orbax threads, open files), the log
    # and the loader threads.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(ckpt.close)
        start = 0
        if ckpt.latest_step() is not None:
            # The newest intact checkpoint; damaged ones are logged and moved to workdir/damaged/.
            state, _, _ = ckpt.restore(state)
            start = int(state.step)
            console.info("resumed from step %d in %s", start, workdir)
        elif config.train.get("init_from", ""):
            state = warm_start(state, config.train.init_from)
            console.info("initialised from %s", config.train.init_from)
        # Steps logged after the restored checkpoint by the run that was killed are replayed: drop them.
        truncate_log(workdir / "metrics.jsonl", start)
        state = parallel.replicate(state, plan)
        log = _Log(workdir / "metrics.jsonl")
        cleanup.callback(log.close)

        def evaluate(state, step: int) -> dict:
            batches_ = (parallel.shard_batch(_device_batch(sample_val(val_pool, i)), plan)
                        for i in range(config.train.eval_batches))
            sums = [parallel.unreplicate(eval_step(state, b), plan) for b in batches_]
            result = _derived(step_lib.combine_metric_sums(jax.device_get(sums)))
            log.write({"step": step, "split": "val", **result})
            console.info("step %d: val %s", step, ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.items())))
            return result

        if config.data.prefetch_subjects and hasattr(train_pool, "prefetch"):
            train_pool.prefetch(workers=config.data.prefetch_workers)
            val_pool.prefetch(workers=config.data.prefetch_workers)

        # --- The loop. Host batches are prepared ``data.loader_threads`` steps ahead in threads (numpy and
        # scipy release the GIL); each is a pure function of (seed, step), so the order of completion is moot. ---
        last_eval: dict = {}
        t0, t_last, s_last = time.time(), time.time(), start
        budget_s = 60.0 * config.train.max_minutes if config.train.max_minutes else math.inf
        ahead = max(1, int(config.data.loader_threads))
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=ahead)
        # On failure, queued batches are cancelled rather than computed for nothing.
        cleanup.callback(executor.shutdown, wait=True, cancel_futures=True)
        upcoming = collections.deque(executor.submit(sample_train, train_pool, k)
                                     for k in range(start, min(start + ahead, total)))
        bar = cleanup.enter_context(console.progress(total=total, initial=start, desc="train", unit="step"))
        for step in range(start, total):
            host_batch = upcoming.popleft().result()
            if step + ahead < total:
                upcoming.append(executor.submit(sample_train, train_pool, step + ahead))
            batch = parallel.shard_batch(_device_batch(host_batch), plan)
            state, metrics = train_step(state, batch)
            done = step + 1
            bar.update(1)
            out_of_time = time.time() - t0 > budget_s
            if out_of_time:
                total = done  # stop here: log, evaluate, save and export as at the planned end

            if done % config.train.log_every == 0 or done == total:
                metrics = jax.device_get(parallel.unreplicate(metrics, plan))
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    log.write({"step": done, "split": "train", "error": "non-finite loss"})
                    raise FloatingPointError(f"non-finite loss {loss} at step {done}; stopping (last good checkpoint: "
                                             f"{ckpt.latest_step()})")
                now = time.time()
                rate = (done - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, done
                log.write({"step": done, "split": "train", "steps_per_s": rate,
                           **{k: float(v) for k, v in metrics.items()}})
                eta = (total - done) / max(rate, 1e-9)
                bar.set_postfix_str(f"loss={loss:.4f}", refresh=False)
                console.info("step %d/%d loss=%.4f %.2f steps/s ETA %.1f min", done, total, loss, rate, eta / 60)

            if done % config.train.eval_every == 0 or done == total:
                last_eval = evaluate(state, done)
                ckpt.save_best(done, parallel.unreplicate(state, plan), last_eval, config_dict)
            ckpt.maybe_save(done, parallel.unreplicate(state, plan), config_dict, {"data_position": done},
                            force=done == total)
            if out_of_time:
                console.info("time budget of %s min reached at step %d", config.train.max_minutes, done)
                break

        # --- Export the best state (or the final one) as the model to ship. ---
        final = parallel.unreplicate(state, plan)
        best = final
        if config.train.best_metric:
            try:
                best, _, _ = ckpt.restore(final, best=True)
            except (FileNotFoundError, ValueError):
                best = final
        arch = models.architecture({**dict(config.model), "bn_axis_name": None})
        checkpointing.save_variables(workdir / "model", jax.device_get(state_lib.variables(best)), arch)
    console.info("done: %d steps in %.1f min; model in %s", total, (time.time() - t0) / 60, workdir / "model")
    return last_eval
