"""Training checkpoints: every Orbax call of the trainer lives here (model folders: :mod:`deepstrain_jax.io.checkpoints`).

* **Training checkpoints** (:class:`Checkpointer`): ``workdir/checkpoints`` keeps the latest ``keep``
  checkpoints, saved every ``every`` steps; ``workdir/best`` keeps the one with the best validation metric.
  Each checkpoint holds the array-only train state (step, params, batch_stats, optimiser state, PRNG key: the
  data position is the step, because batches are a pure function of (seed, step)), the config as JSON and a
  small JSON of extra metadata. Restoring gives back the identical state, so a resumed run replays exactly.
* **Model variables** (:func:`save_variables`, :func:`load_variables`, re-exported from
  :mod:`deepstrain_jax.io.checkpoints`, where inference reads them without importing the trainer).

Every restore is verified: a checkpoint records the SHA-256 of its state (:func:`tree_sha256`) in its metadata
and a model folder in ``variables.sha256``, and what is read back must match. A damaged latest training
checkpoint (a file truncated or missing, metadata that does not parse, an item gone, bytes changed) is reported
with its step and path, moved to ``workdir/damaged/`` (kept for inspection, out of Orbax's way) and the newest
intact one is restored instead; when none is intact the error says so. A damaged model folder raises
:class:`~deepstrain_jax.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from deepstrain_jax.errors import InputError
from deepstrain_jax.io.checkpoints import error_reason, load_variables, save_variables, tree_sha256  # noqa: F401

_log = logging.getLogger(__name__)
_HASH_KEY = "_state_sha256"  # kept in a checkpoint's meta item; removed from the meta handed back


def _abstract(tree: Any) -> Any:
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _options(**kw) -> ocp.CheckpointManagerOptions:
    # Synchronous saves: a checkpoint reported as written is on disk (the trainer is single-threaded and
    # the CPU machines gain little from overlap).
    return ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True, **kw)


class Checkpointer:
    """Latest-K and best-by-metric checkpoints of a train state under ``workdir``."""

    def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int = 3,
                 best_metric: str | None = None, best_mode: str = "min"):
        self.workdir = Path(workdir).absolute()
        self.every = int(every)
        self.best_metric = best_metric
        self.damaged: list[tuple[int, str, str]] = []  # (step, path, reason) set aside by restore()
        self._latest_options = _options(max_to_keep=keep, save_interval_steps=1)
        self._latest = ocp.CheckpointManager(self.workdir / "checkpoints", options=self._latest_options)
        self._best = None
        if best_metric is not None:
            self._best = ocp.CheckpointManager(
                self.workdir / "best",
                options=_options(max_to_keep=1, best_fn=lambda m: float(m[best_metric]), best_mode=best_mode,
                                 keep_checkpoints_without_metrics=False))

    @staticmethod
    def _args(state, config: dict | None, meta: dict | None, restore: bool = False):
        if restore:
            return ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state)),
                                      config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
        meta = {**(meta or {}), _HASH_KEY: tree_sha256(jax.device_get(state))}
        return ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config or {}),
                                  meta=ocp.args.JsonSave(meta))

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def maybe_save(self, step: int, state, config: dict, meta: dict | None = None, *, force: bool = False) -> bool:
        """Save when ``step`` is a multiple of ``every`` (or ``force``); returns whether it saved."""
        if not force and (self.every <= 0 or step % self.every):
            return False
        if step in self._latest.all_steps():
            return False
        return bool(self._latest.save(step, args=self._args(state, config, meta), force=True))

    def save_best(self, step: int, state, metrics: dict, config: dict, meta: dict | None = None) -> None:
        """Offer a state with its validation ``metrics``; it is kept if it beats the stored best."""
        if self._best is None:
            return
        if step in self._best.all_steps():
            return
        self._best.save(step, args=self._args(state, config, meta),
                        metrics={k: float(v) for k, v in metrics.items()}, force=True)

    def restore(self, like_state, step: int | None = None, *, best: bool = False):
        """Restore ``(state, config, meta)`` shaped like ``like_state``, verified against the saved hash.

        ``step=None``: the newest intact latest-K checkpoint; damaged ones on the way are logged, moved to
        ``workdir/damaged/`` and skipped (:attr:`damaged` lists them). An explicit ``step`` or ``best=True``
        restores that one or raises. Raises FileNotFoundError when there is no checkpoint and InputError when
        the requested one, or every one, is damaged.
        """
        manager = self._best if best else self._latest
        if manager is None:
            raise ValueError("no best-checkpoint manager configured")
        if best or step is not None:
            step = manager.best_step() if best else step
            if step is None or step not in manager.all_steps():
                raise FileNotFoundError(f"{manager.directory}: no checkpoint {'' if step is None else step} "
                                        "to restore".replace("  ", " "))
            try:
                return self._restore_verified(manager, step, like_state)
            except Exception as e:  # noqa: BLE001 - any failure to read it back means it is damaged
                raise InputError(f"checkpoint step {step} is damaged ({error_reason(e)})",
                                 Path(manager.directory) / str(step)) from None
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
        for k in steps:
            try:
                return self._restore_verified(manager, k, like_state)
            except Exception as e:  # noqa: BLE001 - see above
                where = Path(manager.directory) / str(k)
                _log.warning("checkpoint step %d at %s is damaged (%s); %s", k, where, error_reason(e),
                             "trying the previous one" if k != steps[-1] else "no older checkpoint")
                self.damaged.append((k, str(where), error_reason(e)))
                self._set_aside(where)
        raise InputError(f"no intact checkpoint to resume from: steps {steps} are all damaged (moved to "
                         f"{self.workdir / 'damaged'}); remove them to start afresh", self.workdir)

    def _restore_verified(self, manager, step: int, like_state):
        # Orbax only logs a checkpoint metadata file that does not parse; here it makes the checkpoint damaged.
        info = Path(manager.directory) / str(step) / "_CHECKPOINT_METADATA"
        if info.is_file():
            json.loads(info.read_text(encoding="utf-8"))
        out = manager.restore(step, args=self._args(like_state, None, None, restore=True))
        state, config, meta = out["state"], out["config"], dict(out["meta"])
        expected = meta.pop(_HASH_KEY, None)
        if expected is not None and tree_sha256(jax.device_get(state)) != expected:
            raise ValueError("the restored state does not match the SHA-256 recorded when it was saved")
        if int(np.asarray(jax.device_get(state.step) if hasattr(state, "step") else step)) != step:
            raise ValueError(f"the restored state holds step {int(state.step)}")
        return state, config, meta

    def _set_aside(self, where: Path) -> None:
        """Move a damaged checkpoint folder to ``workdir/damaged/`` and make the manager forget it."""
        target = self.workdir / "damaged" / f"{where.parent.name}_{where.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(where, target)
        self._latest.close()
        self._latest = ocp.CheckpointManager(self.workdir / "checkpoints", options=self._latest_options)

    def close(self) -> None:
        self._latest.wait_until_finished()
        self._latest.close()
        if self._best is not None:
            self._best.wait_until_finished()
            self._best.close()
