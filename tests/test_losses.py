"""Tests of `deepstrain_jax.losses` against hand-computed values and analytic fields."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from deepstrain_jax import losses
from deepstrain_jax.ops.warp import warp


def _onehot(labels, n_classes):
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels)]


def _grid(spatial):
    return np.stack(np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij"), axis=-1).astype(np.float64)


# A 2x2 image, two classes. Truth [[0, 1], [1, 1]]; predicted P(class 1) = [[0.2, 0.6], [0.9, 0.5]].
_Y_TRUE = _onehot([[0, 1], [1, 1]], 2)[None]
_P1 = np.array([[0.2, 0.6], [0.9, 0.5]], np.float32)
_Y_PRED = np.stack([1 - _P1, _P1], axis=-1)[None]
# Channel 0: 2 * 0.8 / (1 + 1.8) = 4/7.  Channel 1: 2 * (0.6 + 0.9 + 0.5) / (3 + 2.2) = 10/13.
# With eps = 1: (1.6 + 1) / (2.8 + 1) = 13/19 and (4 + 1) / (5.2 + 1) = 25/31.
_DICE0, _DICE1 = 4 / 7, 10 / 13
_DICE0_EPS1, _DICE1_EPS1 = 13 / 19, 25 / 31


def _all_classes_labels(rng, batch, spatial):
    """Random ACDC labels 0..3 with every class present in every example (first four voxels 0, 1, 2, 3)."""
    labels = rng.integers(0, 4, size=(batch, int(np.prod(spatial))))
    labels[:, :4] = np.arange(4)
    return labels.reshape(batch, *spatial)


def test_dice_hand_values():
    np.testing.assert_allclose(losses.dice_loss(_Y_TRUE, _Y_PRED), [-(_DICE0 + _DICE1) / 2], rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(_Y_TRUE, _Y_PRED, include_background=False), [-_DICE1],
                               rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(_Y_TRUE, _Y_PRED, epsilon=1.0),
                               [-(_DICE0_EPS1 + _DICE1_EPS1) / 2], rtol=1e-6)


def test_dice_empty_channel_zero_over_zero():
    # A third class absent from both maps: 0/0 -> 0 in the original form, eps/eps = 1 in the smoothed one.
    y_true = np.concatenate([_Y_TRUE, np.zeros_like(_Y_TRUE[..., :1])], axis=-1)
    y_pred = np.concatenate([_Y_PRED, np.zeros_like(_Y_PRED[..., :1])], axis=-1)
    loss = losses.dice_loss(y_true, y_pred)
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, [-(_DICE0 + _DICE1 + 0.0) / 3], rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(y_true, y_pred, epsilon=1.0),
                               [-(_DICE0_EPS1 + _DICE1_EPS1 + 1.0) / 3], rtol=1e-6)
    # The gradient through the 0/0 branch is finite, not NaN.
    g = jax.grad(lambda p: losses.dice_loss(y_true, p).sum())(jnp.asarray(y_pred))
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("spatial", [(5, 4), (4, 3, 3)])
def test_dice_perfect_disjoint_and_background(spatial):
    labels = _all_classes_labels(np.random.default_rng(0), 2, spatial)
    y = _onehot(labels, 4)
    np.testing.assert_allclose(losses.dice_loss(y, y), [-1.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(y, y, include_background=False), [-1.0, -1.0], rtol=1e-6)
    disjoint = _onehot((labels + 1) % 4, 4)
    np.testing.assert_array_equal(losses.dice_loss(y, disjoint), [0.0, 0.0])
    # Background right, foreground classes 1->2->3->1 all wrong: only channel 0 scores, weighted 1/4.
    fg_wrong = _onehot(np.where(labels > 0, labels % 3 + 1, 0), 4)
    np.testing.assert_allclose(losses.dice_loss(y, fg_wrong), [-0.25, -0.25], rtol=1e-6)
    np.testing.assert_array_equal(losses.dice_loss(y, fg_wrong, include_background=False), [0.0, 0.0])


def test_mse_mae_hand_values():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = np.array([[0.0, 2.0], [5.0, 1.0]], np.float32)
    np.testing.assert_allclose(losses.mse_loss(a, b), [(1 + 0) / 2, (4 + 9) / 2])
    np.testing.assert_allclose(losses.mae_loss(a, b), [(1 + 0) / 2, (2 + 3) / 2])
    # Mean over every non-batch axis of an image batch.
    a4 = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
    np.testing.assert_allclose(losses.mse_loss(a4, a4 + 2.0), [4.0, 4.0])
    np.testing.assert_allclose(losses.mae_loss(a4, a4 - 0.5), [0.5, 0.5])




@pytest.mark.parametrize("spatial", [(5, 4), (4, 3, 3)])
def test_anatomical_zero_displacement_identical_labels(spatial):
    labels = _onehot(_all_classes_labels(np.random.default_rng(1), 2, spatial), 4)
    u = np.zeros((2, *spatial, len(spatial)), np.float32)
    np.testing.assert_allclose(losses.anatomical_loss(labels, labels, u), [-1.0, -1.0], rtol=1e-6)


def test_anatomical_follows_backward_warp_direction():
    # Material moves +1 voxel along axis 0 from ED to t: M_t[x] = M_ED[x - 1]; the last two ED rows are equal
    # so the clamped edge is also exact. Then warp(M_t, u = +1) = M_ED and the loss is -1; u = 0 is worse.
    rng = np.random.default_rng(2)
    ed = _all_classes_labels(rng, 1, (6, 5))
    ed[:, 0, :] = ed[:, 1, :]
    ed[:, -1, :] = ed[:, -2, :]
    ed[:, 2, :4] = np.arange(4)
    t = np.concatenate([ed[:, :1], ed[:, :-1]], axis=1)
    u = np.zeros((1, 6, 5, 2), np.float32)
    u[..., 0] = 1.0
    m_ed, m_t = _onehot(ed, 4), _onehot(t, 4)
    np.testing.assert_allclose(losses.anatomical_loss(m_ed, m_t, u), [-1.0], rtol=1e-6)
    assert losses.anatomical_loss(m_ed, m_t, np.zeros_like(u))[0] > -0.99
    assert losses.anatomical_loss(m_ed, m_t, -u)[0] > -0.99


def test_anatomical_legacy_softmax_pinned():
    # softmax([1, 0, 0, 0]) = [e, 1, 1, 1] / (e + 3) = [0.475, 0.175, 0.175, 0.175] (original quirk).
    p, q = math.e / (math.e + 3), 1 / (math.e + 3)
    assert round(p, 3) == 0.475 and round(q, 3) == 0.175
    u = np.zeros((1, 4, 3, 2), np.float32)
    # Four classes, three voxels each, identical maps: channel c has inter 3p, sum(y) 3, sum(yhat) 3p + 9q = 3,
    # so every dice_c = 2 * 3p / 6 = p and the loss is -p.
    labels = _onehot(np.arange(12).reshape(1, 4, 3) // 3, 4)
    np.testing.assert_allclose(losses.anatomical_loss(labels, labels, u, legacy_softmax=True), [-p], rtol=1e-6)
    # ED all class 1, frame t all class 0: only channel 1 scores, 2 * 12q / (12 + 12q), weighted 1/4.
    ed = _onehot(np.ones((1, 4, 3), int), 4)
    t = _onehot(np.zeros((1, 4, 3), int), 4)
    np.testing.assert_allclose(losses.anatomical_loss(ed, t, u, legacy_softmax=True), [-(2 * q / (1 + q)) / 4],
                               rtol=1e-6)
    np.testing.assert_allclose(losses.anatomical_loss(labels, labels, u), [-1.0], rtol=1e-6)


def _linear_field(spatial, spacing, G):
    """u_vox for u_mm = G X_mm, X_mm = index * spacing (component i along axis i)."""
    x_mm = _grid(spatial) * spacing
    return (x_mm @ np.asarray(G).T) / spacing


_G3 = np.array([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1], [0.02, 0.0, 0.15]])
_S3 = np.array([1.25, 1.5, 8.0])


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_smoothness_linear_field_hand_value(penalty):
    u = _linear_field((5, 4, 3), _S3, _G3)[None]
    rho = np.square if penalty == "l2" else np.abs
    # Every forward difference of component i along axis j is G_ij * s_j mm (per voxel step), or G_ij mm/mm
    # when divided by s_j; the loss is the mean over axes j of the mean over components i.
    expected_raw = np.mean([np.mean([rho(_G3[i, j] * _S3[j]) for i in range(3)]) for j in range(3)])
    expected_norm = np.mean([np.mean([rho(_G3[i, j]) for i in range(3)]) for j in range(3)])
    with jax.enable_x64(True):
        got_raw = np.asarray(losses.smoothness_loss(u, _S3, penalty=penalty))
        got_norm = np.asarray(losses.smoothness_loss(u, _S3, penalty=penalty, normalize_by_spacing=True))
    np.testing.assert_allclose(got_raw, [expected_raw], rtol=1e-10)
    np.testing.assert_allclose(got_norm, [expected_norm], rtol=1e-10)


def test_smoothness_2d_constant_field_and_grid_independence():
    spacing = np.array([1.25, 2.0])
    const = np.broadcast_to(np.array([0.7, -1.3], np.float32), (2, 5, 4, 2))
    np.testing.assert_array_equal(losses.smoothness_loss(const, spacing), [0.0, 0.0])
    np.testing.assert_array_equal(losses.smoothness_loss(const, spacing, penalty="l1"), [0.0, 0.0])
    # The same physical linear field on two grids: the normalised loss agrees, the original's does not.
    G = np.array([[0.2, -0.1], [0.05, 0.3]])
    with jax.enable_x64(True):
        fine = _linear_field((6, 5), spacing, G)[None]
        coarse = _linear_field((6, 5), 2 * spacing, G)[None]
        pairs = ((fine, spacing), (coarse, 2 * spacing))
        norm = [np.asarray(losses.smoothness_loss(f, s, normalize_by_spacing=True)) for f, s in pairs]
        raw = [np.asarray(losses.smoothness_loss(f, s)) for f, s in pairs]
    np.testing.assert_allclose(norm[0], norm[1], rtol=1e-10)
    np.testing.assert_allclose(raw[1], 4 * raw[0], rtol=1e-10)


def test_smoothness_per_example_spacing():
    spacing = np.array([[1.0, 1.0, 1.0], [1.25, 1.5, 8.0]])
    u = np.stack([_linear_field((4, 4, 3), s, _G3) for s in spacing])
    with jax.enable_x64(True):
        got = np.asarray(losses.smoothness_loss(u, spacing))
        each = [np.asarray(losses.smoothness_loss(u[b:b + 1], spacing[b])) for b in range(2)]
    np.testing.assert_allclose(got, np.concatenate(each), rtol=1e-12)
    expected = [np.mean([np.mean([np.square(_G3[i, j] * s[j]) for i in range(3)]) for j in range(3)])
                for s in spacing]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def _carmen_inputs(rng, spatial=(5, 4, 3), batch=2, dtype=np.float32):
    d = len(spatial)
    v_ed = rng.normal(size=(batch, *spatial, 1)).astype(dtype)
    v_t = rng.normal(size=(batch, *spatial, 1)).astype(dtype)
    grid = _grid(spatial)
    base = np.stack([rng.integers(0, n - 1, size=(batch, *spatial)) for n in spatial], axis=-1)
    u = (base + rng.uniform(0.2, 0.8, size=(batch, *spatial, d)) - grid[None]).astype(dtype)
    m_ed = _onehot(_all_classes_labels(rng, batch, spatial), 4).astype(dtype)
    m_t = _onehot(_all_classes_labels(rng, batch, spatial), 4).astype(dtype)
    return v_ed, v_t, u, np.array([1.25, 1.5, 8.0][:d]), m_ed, m_t


@pytest.mark.parametrize("intensity, penalty, legacy", [("mse", "l2", False), ("mae", "l1", True)])
def test_carmen_is_weighted_sum_of_parts(intensity, penalty, legacy):
    v_ed, v_t, u, s, m_ed, m_t = _carmen_inputs(np.random.default_rng(3))
    lam = dict(lambda_i=0.3, lambda_a=0.5, lambda_s=0.2)
    total, terms = losses.carmen_loss(v_ed, v_t, u, s, m_ed, m_t, intensity=intensity, penalty=penalty,
                                      legacy_softmax=legacy, **lam)
    l_i = (losses.mse_loss if intensity == "mse" else losses.mae_loss)(v_ed, warp(v_t, u))
    l_a = losses.anatomical_loss(m_ed, m_t, u, legacy_softmax=legacy)
    l_s = losses.smoothness_loss(u, s, penalty=penalty)
    assert total.shape == (2,) and all(t.shape == (2,) for t in terms.values())
    np.testing.assert_allclose(terms["intensity"], l_i, rtol=1e-6)
    np.testing.assert_allclose(terms["anatomical"], l_a, rtol=1e-6)
    np.testing.assert_allclose(terms["smoothness"], l_s, rtol=1e-6)
    np.testing.assert_allclose(total, 0.3 * l_i + 0.5 * l_a + 0.2 * l_s, rtol=1e-6)
    # Without labels (or with lambda_a = 0) the anatomical term is 0 and left out of the total.
    for total0, terms0 in (losses.carmen_loss(v_ed, v_t, u, s, intensity=intensity, penalty=penalty, **lam),
                           losses.carmen_loss(v_ed, v_t, u, s, m_ed, None, intensity=intensity, penalty=penalty,
                                              **{**lam, "lambda_a": 0.0})):
        np.testing.assert_array_equal(terms0["anatomical"], [0.0, 0.0])
        np.testing.assert_allclose(total0, 0.3 * l_i + 0.2 * l_s, rtol=1e-6)


def test_losses_are_per_example_and_independent_across_batch():
    rng = np.random.default_rng(4)
    v_ed, v_t, u, s, m_ed, m_t = _carmen_inputs(rng, batch=3)
    calls = [
        lambda sl: losses.dice_loss(m_ed[sl], m_t[sl]),
        lambda sl: losses.mse_loss(v_ed[sl], v_t[sl]),
        lambda sl: losses.mae_loss(v_ed[sl], v_t[sl]),
        lambda sl: losses.anatomical_loss(m_ed[sl], m_t[sl], u[sl]),
        lambda sl: losses.smoothness_loss(u[sl], s),
        lambda sl: losses.carmen_loss(v_ed[sl], v_t[sl], u[sl], s, m_ed[sl], m_t[sl])[0],
    ]
    for call in calls:
        full = np.asarray(call(slice(None)))
        assert full.shape == (3,)
        singles = np.concatenate([np.asarray(call(slice(b, b + 1))) for b in range(3)])
        np.testing.assert_allclose(full, singles, rtol=1e-6)
        assert len(np.unique(full)) == 3  # the examples differ, so a batch-mean bug would show


def test_check_grads_float64():
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        v_ed, v_t, u, s, m_ed, m_t = [jnp.asarray(x) for x in _carmen_inputs(rng, (4, 3, 3), 2, np.float64)]
        assert u.dtype == jnp.float64
        probs = jax.nn.softmax(jnp.asarray(rng.normal(size=m_ed.shape)), axis=-1)
        grads = lambda f, *args: check_grads(f, args, order=1, modes=("fwd", "rev"))  # noqa: E731
        for eps in (0.0, 0.5):
            grads(lambda p, y: losses.dice_loss(y, p, epsilon=eps), probs, m_ed)
        grads(losses.mse_loss, v_ed, v_t)
        grads(losses.mae_loss, v_ed, v_t)
        for legacy in (False, True):
            grads(lambda w: losses.anatomical_loss(m_ed, m_t, w, legacy_softmax=legacy), u)
        for penalty, norm in (("l2", False), ("l1", True)):
            grads(lambda w, sp: losses.smoothness_loss(w, sp, penalty=penalty, normalize_by_spacing=norm), u, s)
        grads(lambda a, b, w: losses.carmen_loss(a, b, w, s, m_ed, m_t, intensity="mae", penalty="l1")[0],
              v_ed, v_t, u)
        grads(lambda a, b, w: losses.carmen_loss(a, b, w, s, m_ed, m_t, legacy_softmax=True)[0], v_ed, v_t, u)


def test_jit_matches_no_jit():
    v_ed, v_t, u, s, m_ed, m_t = _carmen_inputs(np.random.default_rng(6))
    pairs = [
        (losses.dice_loss, (m_ed, m_t), dict(epsilon=0.1, include_background=False), ("include_background",)),
        (losses.mse_loss, (v_ed, v_t), {}, ()),
        (losses.mae_loss, (v_ed, v_t), {}, ()),
        (losses.anatomical_loss, (m_ed, m_t, u), dict(legacy_softmax=True), ("legacy_softmax",)),
        (losses.smoothness_loss, (u, s), dict(penalty="l1", normalize_by_spacing=True),
         ("penalty", "normalize_by_spacing")),
    ]
    for fn, args, kwargs, static in pairs:
        np.testing.assert_allclose(jax.jit(fn, static_argnames=static)(*args, **kwargs), fn(*args, **kwargs),
                                   rtol=1e-5, atol=1e-6)
    static = ("intensity", "legacy_softmax", "penalty")
    got = jax.jit(losses.carmen_loss, static_argnames=static)(v_ed, v_t, u, s, m_ed, m_t, intensity="mae")
    want = losses.carmen_loss(v_ed, v_t, u, s, m_ed, m_t, intensity="mae")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for key in want[1]:
        np.testing.assert_allclose(got[1][key], want[1][key], rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_value_error():
    y = np.zeros((2, 4, 3, 2), np.float32)
    u2 = np.zeros((2, 4, 3, 2), np.float32)
    bad = [
        (losses.dice_loss, (y, y[..., :1]), {}, "same shape"),
        (losses.dice_loss, (y[0], y[0]), {}, r"\(B, X, Y, C\)"),
        (losses.dice_loss, (y[..., :1], y[..., :1]), dict(include_background=False), "2 channels"),
        (losses.dice_loss, (y, y), dict(epsilon=-1.0), "epsilon"),
        (losses.mse_loss, (y, y[:1]), {}, "same shape"),
        (losses.mae_loss, (np.zeros(3), np.zeros(3)), {}, "non-batch"),
        (losses.anatomical_loss, (y, y[:, :3], u2), {}, "same shape"),
        (losses.anatomical_loss, (y, y, u2[..., :1]), {}, "u_vox"),
        (losses.smoothness_loss, (u2, [1.0, 1.0]), dict(penalty="l3"), "penalty"),
        (losses.smoothness_loss, (u2, [1.0, 1.0, 1.0]), {}, "spacing_mm"),
        (losses.smoothness_loss, (u2, [[1.0, 1.0]] * 3), {}, "spacing_mm"),
        (losses.smoothness_loss, (u2, [1.0, 0.0]), {}, "positive"),
        (losses.smoothness_loss, (u2[..., :1], [1.0, 1.0]), {}, "u_vox"),
        (losses.smoothness_loss, (u2[:, :1], [1.0, 1.0]), {}, ">= 2"),
        (losses.carmen_loss, (y[..., :1], y[..., :1], u2, [1.0, 1.0]), dict(intensity="l2"), "intensity"),
        (losses.carmen_loss, (y[..., :1], y[..., :1], u2, [1.0, 1.0], y), {}, "both"),
        (losses.carmen_loss, (y[..., :1], y[:, :3, :, :1], u2, [1.0, 1.0]), {}, "same shape"),
        (losses.carmen_loss, (y[..., :1], y[..., :1], u2, [1.0, 1.0], y[:, :3], y[:, :3]), {}, "grid"),
    ]
    for fn, args, kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            fn(*args, **kwargs)
