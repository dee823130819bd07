"""training/tasks.py: the per-network losses and metrics on hand-made batches."""

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.training import tasks


def _carmen_batch(rng, exact_voxels=True):
    b, n, z = 2, 8, 4
    u_true = rng.normal(size=(b, n, n, z, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=(b, n, n, z)).astype(np.int32)
    return {"inputs": rng.normal(size=(b, n, n, z, 2)).astype(np.float32), "labels_ed": labels,
            "labels_t": labels, "labelled": np.array([True, False]), "u_vox": u_true,
            "u_mask": np.ones((b, n, n, z), bool), "spacing_mm": np.tile([1.25, 1.25, 8.0], (b, 1)).astype(np.float32)}


def test_carmen_epe_term_by_hand_and_finite_gradient_at_zero_error():
    rng = np.random.default_rng(0)
    batch = _carmen_batch(rng)
    loss_fn, metric_fn = tasks.make_carmen_fns(lambda_i=0.0, lambda_a=0.0, lambda_s=0.0, lambda_epe=1.0)
    u = batch["u_vox"].copy()
    u[..., 0] += 2.0  # 2 voxels along axis 0 = 2.5 mm everywhere
    total, terms = loss_fn(jnp.asarray(u), batch, None)
    np.testing.assert_allclose(np.asarray(terms["epe_mm"]), 2.5, rtol=1e-5)
    # Where prediction and truth coincide the norm has no gradient; the loss must stay finite there.
    grad = jax.grad(lambda v: jnp.sum(loss_fn(v, batch, None)[0]))(jnp.asarray(batch["u_vox"]))
    assert np.all(np.isfinite(np.asarray(grad)))
    sums = metric_fn(jnp.asarray(u), batch)
    myo = np.sum(batch["labels_ed"] == 2)
    np.testing.assert_allclose(float(sums["epe_myo_mm"][0]), 2.5 * myo, rtol=1e-5)


def test_carmen_anatomical_term_counts_only_labelled_examples():
    rng = np.random.default_rng(1)
    batch = _carmen_batch(rng)
    loss_fn, _ = tasks.make_carmen_fns(lambda_i=0.0, lambda_a=1.0, lambda_s=0.0)
    total, terms = loss_fn(jnp.zeros_like(jnp.asarray(batch["u_vox"])), batch, None)
    # Identical ED and t labels with u = 0: Dice 1 for the labelled example, nothing for the other.
    np.testing.assert_allclose(np.asarray(terms["anatomical"]), [-1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(total), [-1.0, 0.0], atol=1e-6)


def test_carson_loss_and_dice_sums():
    labels = np.array([[[0, 1], [2, 3]]], np.int32)
    probs = jax.nn.one_hot(labels, 4)
    loss_fn, metric_fn = tasks.make_carson_fns(ce_weight=0.5)
    total, aux = loss_fn(probs, {"labels": labels}, None)
    np.testing.assert_allclose(np.asarray(aux["dice_loss"]), [-1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["cross_entropy"]), [0.0], atol=1e-5)
    wrong = jax.nn.one_hot(np.array([[[0, 3], [2, 1]]]), 4)  # RV and LV swapped
    sums = metric_fn(wrong, {"labels": labels})
    assert [float(v) for v in sums["dice_myo"]] == [2.0, 2.0]
    assert [float(v) for v in sums["dice_rv"]] == [0.0, 2.0]
