"""Per-network loss and metric functions for the generic step factories of :mod:`.step`.

Each ``make_*`` takes the ``loss`` sub-config (keyword arguments, closed over, never traced) and returns

* ``loss_fn(outputs, batch, rng) -> (per_example [B], aux: dict[str, [B]])`` and
* ``metric_fn(outputs, batch) -> dict[str, (sum, count)]``,

with the batch layouts of :mod:`deepstrain_jax.training_data.batches`:

* VCN: ``inputs (B, H, W, 1)``, ``targets (B, H, W, 1)`` heat-maps; loss = MSE.
* CarSON: ``inputs (B, H, W, 1)``, ``labels (B, H, W)`` int; loss = multi-class soft Dice (the original's
  form, optionally epsilon-smoothed) + ``ce_weight`` x cross-entropy.
* CarMEN: ``inputs (B, X, Y, Z, 2)`` = [ED, t], ``labels_ed``/``labels_t`` ``(B, X, Y, Z)`` int with
  ``labelled (B,)``, ``spacing_mm (B, 3)``, and where the truth is known (phantoms) ``u_vox (B, X, Y, Z, 3)``
  and ``u_mask (B, X, Y, Z)``; loss = lambda_i intensity + lambda_a anatomical (labelled examples only) +
  lambda_s smoothness + lambda_epe x supervised end-point error (mm, inside ``u_mask``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from deepstrain_jax import losses
from deepstrain_jax.labels import N_LABELS


def _masked_mean_per_example(values, mask):
    axes = tuple(range(1, values.ndim))
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask, axis=axes) / jnp.maximum(jnp.sum(mask, axis=axes), 1.0)


def make_vcn_fns() -> tuple[Callable, Callable]:
    def loss_fn(outputs, batch, rng):
        return losses.mse_loss(outputs, batch["targets"]), {}

    def metric_fn(outputs, batch):
        per = losses.mse_loss(outputs, batch["targets"])
        return {"mse": (jnp.sum(per), jnp.asarray(per.shape[0], jnp.float32))}

    return loss_fn, metric_fn


def make_carson_fns(*, dice_epsilon: float = 0.0, ce_weight: float = 0.0) -> tuple[Callable, Callable]:
    def loss_fn(probs, batch, rng):
        onehot = jax.nn.one_hot(batch["labels"], N_LABELS, dtype=probs.dtype)
        dice = losses.dice_loss(onehot, probs, epsilon=dice_epsilon)
        aux = {"dice_loss": dice}
        total = dice
        if ce_weight:
            ce = -jnp.mean(jnp.sum(onehot * jnp.log(jnp.clip(probs, 1e-7, 1.0)), axis=-1), axis=(1, 2))
            aux["cross_entropy"] = ce
            total = total + ce_weight * ce
        return total, aux

    def metric_fn(probs, batch):
        # Hard Dice per label, pooled over the batch: sum of 2|A n B| and of |A| + |B|, so that ratios of
        # the accumulated sums give the Dice of everything evaluated (empty slices do not count as 0 or 1).
        pred = jnp.argmax(probs, axis=-1)
        out = {}
        for label, name in ((1, "rv"), (2, "myo"), (3, "lv")):
            a, b = pred == label, batch["labels"] == label
            out[f"dice_{name}"] = (2.0 * jnp.sum(a & b).astype(jnp.float32),
                                   (jnp.sum(a) + jnp.sum(b)).astype(jnp.float32))
        return out

    return loss_fn, metric_fn


def make_carmen_fns(*, lambda_i: float = 0.01, lambda_a: float = 0.5, lambda_s: float = 0.1,
                    lambda_epe: float = 0.0, intensity: str = "mse", penalty: str = "l2",
                    legacy_softmax: bool = False) -> tuple[Callable, Callable]:
    def epe_mm(u_vox, batch):
        spacing = batch["spacing_mm"][:, None, None, None, :]
        sq = jnp.sum(((u_vox - batch["u_vox"]) * spacing) ** 2, axis=-1)
        # The norm's gradient is 0/0 where the error vanishes (identity pairs, exact predictions): take the
        # square root where it is positive only, so one such voxel cannot turn every gradient into NaN.
        positive = sq > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)

    def loss_fn(u_vox, batch, rng):
        v = batch["inputs"]
        v_ed, v_t = v[..., :1], v[..., 1:]
        onehot_ed = jax.nn.one_hot(batch["labels_ed"], N_LABELS, dtype=u_vox.dtype)
        onehot_t = jax.nn.one_hot(batch["labels_t"], N_LABELS, dtype=u_vox.dtype)
        total, terms = losses.carmen_loss(v_ed, v_t, u_vox, batch["spacing_mm"], onehot_ed, onehot_t,
                                          lambda_i=lambda_i, lambda_a=lambda_a,
                                          lambda_s=lambda_s, intensity=intensity, penalty=penalty,
                                          legacy_softmax=legacy_softmax)
        if lambda_a:
            # Frames without labels (ACDC between ED and ES) contribute no anatomical term.
            labelled = batch["labelled"].astype(u_vox.dtype)
            total = total - lambda_a * terms["anatomical"] * (1.0 - labelled)
            terms = {**terms, "anatomical": terms["anatomical"] * labelled}
        if lambda_epe:
            epe = _masked_mean_per_example(epe_mm(u_vox, batch), batch["u_mask"])
            total = total + lambda_epe * epe
            terms = {**terms, "epe_mm": epe}
        return total, terms

    def metric_fn(u_vox, batch):
        out = {}
        if "u_vox" in batch:
            err = epe_mm(u_vox, batch)
            myo = (batch["labels_ed"] == 2) & batch["u_mask"]
            out["epe_myo_mm"] = (jnp.sum(jnp.where(myo, err, 0.0)), jnp.sum(myo).astype(jnp.float32))
        total, _ = loss_fn(u_vox, batch, None)
        out["loss"] = (jnp.sum(total), jnp.asarray(total.shape[0], jnp.float32))
        return out

    return loss_fn, metric_fn


def make_task_fns(task: str, loss_cfg) -> tuple[Callable, Callable]:
    """``(loss_fn, metric_fn)`` for ``task`` in {"vcn", "carson", "carmen"} from a ``loss`` sub-config."""
    kwargs = dict(loss_cfg) if loss_cfg is not None else {}
    if task == "vcn":
        return make_vcn_fns(**kwargs)
    if task == "carson":
        return make_carson_fns(**kwargs)
    if task == "carmen":
        return make_carmen_fns(**kwargs)
    raise ValueError(f"task must be 'vcn', 'carson' or 'carmen', got {task!r}")
