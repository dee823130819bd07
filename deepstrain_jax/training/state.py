"""The train state: arrays only (no functions, no config), so it can be jitted, sharded and checkpointed."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """``step`` (int32 scalar), model ``params`` and ``batch_stats``, optimiser state and the base PRNG key.

    Per-step randomness is ``jax.random.fold_in(rng, step)``, so resuming from a checkpoint replays exactly.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(init_fn: Callable, tx: optax.GradientTransformation, rng: jax.Array,
                       *init_args) -> TrainState:
    """Initialise variables with ``init_fn(rng, *init_args) -> {"params", "batch_stats"?}`` and the optimiser.

    The caller may wrap this in ``jax.jit`` (with ``out_shardings``) so the state is created where it lives.
    """
    init_rng, state_rng = jax.random.split(rng)
    variables = init_fn(init_rng, *init_args)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params), rng=state_rng)


def variables(state: TrainState) -> dict:
    """The model variables of a state, as ``apply`` takes them."""
    return {"params": state.params, "batch_stats": state.batch_stats}
