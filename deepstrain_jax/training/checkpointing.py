"""Every Orbax call of the project lives here, so an Orbax API change touches one file.

Two uses:

* **Training checkpoints** (:class:`Checkpointer`): ``workdir/checkpoints`` keeps the latest ``keep``
  checkpoints, saved every ``every`` steps; ``workdir/best`` keeps the one with the best validation metric.
  Each checkpoint holds the array-only train state (step, params, batch_stats, optimiser state, PRNG key: the
  data position is the step, because batches are a pure function of (seed, step)), the config as JSON and a
  small JSON of extra metadata. Restoring gives back the identical state, so a resumed run replays exactly.
* **Model variables** (:func:`save_variables`, :func:`load_variables`): ``{"params", "batch_stats"}`` plus a
  JSON description of the architecture, for converted Keras weights and the shipped default models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from deepstrain_jax.errors import InputError


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
        self._latest = ocp.CheckpointManager(
            self.workdir / "checkpoints", options=_options(max_to_keep=keep, save_interval_steps=1))
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
        return ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config or {}),
                                  meta=ocp.args.JsonSave(meta or {}))

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
        """Restore ``(state, config, meta)`` at ``step`` (default: the latest) shaped like ``like_state``."""
        manager = self._best if best else self._latest
        if manager is None:
            raise ValueError("no best-checkpoint manager configured")
        step = manager.best_step() if best else (manager.latest_step() if step is None else step)
        if step is None:
            raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
        out = manager.restore(step, args=self._args(like_state, None, None, restore=True))
        return out["state"], out["config"], out["meta"]

    def close(self) -> None:
        self._latest.wait_until_finished()
        self._latest.close()
        if self._best is not None:
            self._best.wait_until_finished()
            self._best.close()


_VARIABLES = "variables"
_MODEL_JSON = "model.json"


def save_variables(directory: str | os.PathLike, variables: dict, model_config: dict) -> Path:
    """Write ``{"params", "batch_stats"}`` as an Orbax checkpoint plus ``model.json`` (the architecture).

    The folder appears complete or not at all: it is written under a temporary name and renamed.
    """
    from deepstrain_jax.io.atomic import atomic_directory

    directory = Path(directory).absolute()
    with atomic_directory(directory) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / _VARIABLES, jax.tree_util.tree_map(np.asarray, variables))
        checkpointer.wait_until_finished()
        (tmp / _MODEL_JSON).write_text(json.dumps(model_config, indent=2, sort_keys=True))
    return directory


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Read a folder written by :func:`save_variables`: ``(variables, model_config)`` as numpy arrays."""
    directory = Path(directory).absolute()
    if not (directory / _MODEL_JSON).is_file() or not (directory / _VARIABLES).is_dir():
        raise InputError(f"not a deepstrain-jax model folder (expected {_MODEL_JSON} and {_VARIABLES}/)",
                         directory)
    model_config = json.loads((directory / _MODEL_JSON).read_text())
    variables = ocp.StandardCheckpointer().restore(directory / _VARIABLES)
    return variables, model_config
