"""Data-parallel compilation of one pure step: ``jax.jit`` over a one-axis ``data`` mesh, or ``jax.pmap``.

* ``mode="jit"`` (default): the state is replicated and the batch split along its leading axis over a 1-D
  mesh named ``data``; XLA inserts the collectives, and BatchNorm sees the global batch. The step is built
  with ``axis_name=None``.
* ``mode="pmap"``: the state is replicated per device and the batch reshaped to ``(n_devices, B / n, ...)``;
  the step must be built with ``axis_name=PMAP_AXIS`` (gradients, metrics and batch statistics are averaged
  across devices) and the model's BatchNorm with the same axis name.

Both give the result of the 1-device step on the full batch (up to float reassociation); the tests check it.
Multi-host: call ``jax.distributed.initialize()`` before anything else touches JAX; ``jax.devices()`` then
spans every host and each host feeds its own slice of the global batch (see README, "Training").
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PMAP_AXIS = "batch"
MESH_AXIS = "data"


class Plan(NamedTuple):
    mode: str  # "jit" or "pmap"
    devices: tuple
    mesh: Mesh | None

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def axis_name(self) -> str | None:
        """The axis name the step (and the model's BatchNorm) must be built with."""
        return PMAP_AXIS if self.mode == "pmap" else None


def make_plan(mode: str = "jit", devices: Sequence | None = None) -> Plan:
    devices = tuple(jax.devices() if devices is None else devices)
    if mode == "jit":
        return Plan(mode, devices, Mesh(np.asarray(devices), (MESH_AXIS,)))
    if mode == "pmap":
        return Plan(mode, devices, None)
    raise ValueError(f"parallel mode must be 'jit' or 'pmap', got {mode!r}")


def check_batch_size(global_batch: int, plan: Plan) -> int:
    """The per-device batch; a clear error when the global batch does not divide by the device count."""
    if global_batch % plan.n_devices:
        raise ValueError(f"global batch size {global_batch} does not divide by the {plan.n_devices} devices "
                         f"({plan.mode}); choose a multiple of {plan.n_devices}")
    return global_batch // plan.n_devices


def _stacked_sharding(plan: Plan) -> NamedSharding:
    # pmap's per-device leading axis, expressed as a sharding (jax.device_put_sharded/_replicated are gone).
    return NamedSharding(Mesh(np.asarray(plan.devices), (PMAP_AXIS,)), PartitionSpec(PMAP_AXIS))


def shard_batch(batch: Any, plan: Plan) -> Any:
    """Place a host batch (leading axis = global batch) on the devices of ``plan``."""
    leaves = jax.tree_util.tree_leaves(batch)
    check_batch_size(leaves[0].shape[0], plan)
    if plan.mode == "jit":
        sharding = NamedSharding(plan.mesh, PartitionSpec(MESH_AXIS))
        return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), batch)
    n = plan.n_devices
    sharding = _stacked_sharding(plan)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.reshape(np.asarray(x), (n, -1, *x.shape[1:])), sharding), batch)


def replicate(tree: Any, plan: Plan) -> Any:
    """Put a state on every device of ``plan`` (replicated)."""
    if plan.mode == "jit":
        return jax.device_put(tree, NamedSharding(plan.mesh, PartitionSpec()))
    n, sharding = plan.n_devices, _stacked_sharding(plan)
    return jax.tree_util.tree_map(lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))),
                                                           sharding), tree)


def unreplicate(tree: Any, plan: Plan) -> Any:
    """The single copy of a replicated state (host-independent view)."""
    if plan.mode == "jit":
        return tree
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def compile_step(step_fn: Callable, plan: Plan, *, donate_state: bool = True) -> Callable:
    """Compile ``step_fn(state, batch) -> (state, metrics)`` (or an eval step) for ``plan``.

    Outputs other than the state come back replicated: under pmap the caller reads element 0
    (``unreplicate``); under jit they are ordinary global arrays.
    """
    donate = (0,) if donate_state else ()
    if plan.mode == "pmap":
        return jax.pmap(step_fn, axis_name=PMAP_AXIS, donate_argnums=donate, devices=list(plan.devices))
    replicated = NamedSharding(plan.mesh, PartitionSpec())
    batch_sharding = NamedSharding(plan.mesh, PartitionSpec(MESH_AXIS))
    return jax.jit(step_fn, in_shardings=(replicated, batch_sharding), out_shardings=replicated,
                   donate_argnums=donate)
