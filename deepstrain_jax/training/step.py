"""Pure train and eval step factories.

A factory closes over the model's ``apply_fn``, the optimiser and a loss function and returns a pure
``step(state, batch)``; the caller compiles it (``jax.jit`` over a data mesh, or ``jax.pmap``, see
``training.parallel``), so tests can run it plainly and ``jax.disable_jit()`` works.

Contracts:

* ``apply_fn(variables, inputs, train: bool, mutable) -> (outputs, new_state)`` when ``mutable`` is a list
  (Flax Linen semantics; ``new_state["batch_stats"]`` is the updated running statistics).
* ``loss_fn(outputs, batch, rng) -> (per_example_loss [B], aux: dict[str, [B]])``. The step minimises the
  batch mean; ``aux`` values are logged as batch means.
* ``metric_fn(outputs, batch) -> dict[str, (sum, count)]``: evaluation metrics as sums and counts, combined
  on the host across batches and devices (scenic style) so a ragged last batch is weighted correctly.

With ``axis_name`` set (pmap), gradients, losses and metrics are averaged/summed across that axis; the model's
BatchNorm must be built with the same ``axis_name`` so its statistics are global too.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from deepstrain_jax.training.state import TrainState


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformation, loss_fn: Callable,
                    *, axis_name: str | None = None) -> Callable:
    """Return ``train_step(state, batch) -> (new_state, metrics)``; ``batch["inputs"]`` feeds the model."""

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)

        def objective(params):
            outputs, new_model_state = apply_fn({"params": params, "batch_stats": state.batch_stats},
                                                batch["inputs"], train=True, mutable=["batch_stats"])
            per_example, aux = loss_fn(outputs, batch, rng)
            return jnp.mean(per_example), (new_model_state.get("batch_stats", {}), aux)

        (loss, (batch_stats, aux)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        metrics = {"loss": loss, **{k: jnp.mean(v) for k, v in aux.items()}}
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            batch_stats = jax.lax.pmean(batch_stats, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                               opt_state=opt_state, rng=state.rng)
        return new_state, metrics

    return train_step


def make_eval_step(apply_fn: Callable, metric_fn: Callable, *, axis_name: str | None = None) -> Callable:
    """Return ``eval_step(state, batch) -> dict[str, (sum, count)]`` in inference mode."""

    def eval_step(state: TrainState, batch: dict):
        outputs = apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"],
                           train=False)
        sums = metric_fn(outputs, batch)
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return eval_step


def combine_metric_sums(sums_list) -> dict[str, float]:
    """Host-side: add ``(sum, count)`` pairs over batches and return ``sum / count`` per metric."""
    total: dict[str, list[float]] = {}
    for sums in sums_list:
        for k, (s, c) in sums.items():
            acc = total.setdefault(k, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    return {k: (s / c if c else float("nan")) for k, (s, c) in total.items()}
