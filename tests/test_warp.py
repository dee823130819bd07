"""Tests of `deepstrain_jax.ops.warp`: backward warp with clamp-to-edge multilinear / nearest sampling.

Expectations are independent of the code under test: exact identities (zero field, integer shifts vs
``np.roll``), ``scipy.ndimage.map_coordinates`` as the reference interpolator, finite differences
(``check_grads``) and an analytic image with a proven interpolation error bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

from deepstrain_jax.ops.warp import interpolate, warp


def _grid(spatial):
    return np.stack(np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij"), axis=-1).astype(np.float64)


def _scipy_warp(image, u_vox, order):
    """Reference backward warp: per example and channel, map_coordinates at X + u(X), edge replicated."""
    image = np.asarray(image)
    spatial = image.shape[1:-1]
    coords = _grid(spatial)[None] + np.asarray(u_vox, dtype=np.float64)
    out = np.empty(image.shape, dtype=np.float64)
    for b in range(image.shape[0]):
        pts = np.moveaxis(coords[b], -1, 0)
        for c in range(image.shape[-1]):
            out[b, ..., c] = ndimage.map_coordinates(image[b, ..., c].astype(np.float64), pts, order=order,
                                                     mode="nearest")
    return out


@pytest.mark.parametrize("shape", [(2, 7, 6, 1), (3, 5, 4, 4), (2, 5, 4, 3, 2), (3, 4, 3, 5, 3)])
def test_zero_field_is_identity(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    u = np.zeros(shape[:-1] + (len(shape) - 2,), np.float32)
    np.testing.assert_array_equal(np.asarray(warp(image, u)), image)
    labels = rng.integers(0, 4, size=shape).astype(np.int32)
    out = warp(labels, u, mode="nearest")
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), labels)


@pytest.mark.parametrize("shift", [(2, -1), (-3, 0), (1, -2, 1), (0, 2, -1)])
def test_integer_shift_equals_roll_in_interior(shift):
    spatial = (8, 7) if len(shift) == 2 else (6, 5, 4)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, *spatial, 3)).astype(np.float32)
    u = np.broadcast_to(np.asarray(shift, np.float32), (2, *spatial, len(shift)))
    # warp(V)(X) = V(X + s) and np.roll(V, -s)[X] = V[X + s]; the two agree wherever X + s is on the grid.
    expected = np.roll(image, [-s for s in shift], axis=tuple(range(1, len(shift) + 1)))
    interior = (slice(None),) + tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, spatial))
    np.testing.assert_array_equal(np.asarray(warp(image, u))[interior], expected[interior])


@pytest.mark.parametrize("spatial", [(7, 6), (6, 5, 4)])
def test_linear_matches_scipy_map_coordinates(spatial):
    rng = np.random.default_rng(2)
    d = len(spatial)
    image = rng.normal(size=(2, *spatial, 2)).astype(np.float32)
    u = (2.5 * rng.normal(size=(2, *spatial, d))).astype(np.float32)
    # Far out-of-range queries on both sides, on every axis, at a random third of the voxels.
    far = rng.random(size=(2, *spatial)) < 0.33
    u[far] = rng.choice([-40.0, -7.3, 9.6, 55.0], size=(far.sum(), d))
    out = np.asarray(warp(image, u))
    np.testing.assert_allclose(out, _scipy_warp(image, u, order=1), rtol=0, atol=2e-5)


def test_out_of_range_queries_have_zero_gradient_in_u():
    rng = np.random.default_rng(3)
    spatial = (6, 5, 4)
    image = jnp.asarray(rng.normal(size=(1, *spatial, 2)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(1, *spatial, 2)).astype(np.float32))
    grid = _grid(spatial)
    q = grid + rng.uniform(0.2, 0.8, size=grid.shape)  # in range and off the integers...
    q = np.minimum(q, np.asarray(spatial) - 1.2)  # ...including at the top edge
    out_all = np.zeros(spatial, bool)
    out_all[:3] = True  # queries out of range on every axis
    q[out_all] = np.array([-2.3, 7.7, -0.6])
    out_x = np.zeros(spatial, bool)
    out_x[3:5, :2] = True  # out of range along axis 0 only
    q[out_x, 0] = 6.4
    u = jnp.asarray((q - grid)[None].astype(np.float32))
    g = np.asarray(jax.grad(lambda u: jnp.sum(warp(image, u) * weights))(u))[0]
    np.testing.assert_array_equal(g[out_all], 0.0)
    np.testing.assert_array_equal(g[out_x][:, 0], 0.0)
    # Sanity: the clamped rows still vary along the in-range axes, and in-range voxels carry gradient.
    assert np.all(np.abs(g[out_x][:, 1:]).max(axis=-1) > 0)
    inside = ~(out_all | out_x)
    assert np.all(np.abs(g[inside]).max(axis=-1) > 0)


@pytest.mark.parametrize("spatial", [(7, 6), (6, 5, 4)])
def test_nearest_on_label_map_matches_scipy_order0(spatial):
    rng = np.random.default_rng(4)
    d = len(spatial)
    labels = rng.integers(0, 4, size=(2, *spatial, 1)).astype(np.int32)
    u = rng.uniform(-2.5, 2.5, size=(2, *spatial, d)).astype(np.float32)
    u[:, 0] = rng.uniform(-20, 20, size=u[:, 0].shape)  # some far out of range
    out = warp(labels, u, mode="nearest")
    assert out.dtype == jnp.int32
    out = np.asarray(out)
    assert set(np.unique(out)) <= {0, 1, 2, 3}
    ref = _scipy_warp(labels, u, order=0)
    coords = _grid(spatial)[None] + u.astype(np.float64)
    near_tie = np.any(np.abs(coords - np.floor(coords) - 0.5) < 1e-3, axis=-1)
    assert near_tie.mean() < 0.05
    np.testing.assert_array_equal(out[~near_tie], ref[~near_tie])


def _off_integer_field(rng, batch, spatial):
    """u such that every query X + u lies in [0, n - 1] at a fractional offset in [0.2, 0.8]."""
    grid = _grid(spatial)
    base = np.stack([rng.integers(0, n - 1, size=(batch, *spatial)) for n in spatial], axis=-1)
    return base + rng.uniform(0.2, 0.8, size=(batch, *spatial, len(spatial))) - grid[None]


@pytest.mark.parametrize("spatial", [(5, 4), (4, 5, 3)])
def test_check_grads_image_and_u(spatial):
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        image = jnp.asarray(rng.normal(size=(2, *spatial, 2)))
        u = jnp.asarray(_off_integer_field(rng, 2, spatial))
        assert image.dtype == jnp.float64 and u.dtype == jnp.float64
        check_grads(lambda v: warp(v, u), (image,), order=1, modes=("fwd", "rev"))
        check_grads(lambda w: warp(image, w), (u,), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("spatial, c", [((16, 14), (0.37, -0.61)), ((12, 10, 8), (0.3, -0.45, 0.72))])
def test_backward_warp_of_analytic_image(spatial, c):
    """warp(f on the grid, constant c)(X) = f(X + c) up to the multilinear interpolation error.

    f(X) = prod_d cos(k_d X_d + p_d), so |d^2 f / dX_d^2| <= k_d^2. Multilinear interpolation is the composition
    of 1-D linear interpolations along each axis; each is a convex combination (does not increase the sup
    norm), so the error telescopes to at most sum_d a_d (1 - a_d) / 2 * max|d^2 f / dX_d^2|, with
    a_d = c_d - floor(c_d) the fractional offset (1-D Lagrange remainder, voxel step 1), for queries inside
    the grid.
    """
    k = np.array([0.4, 0.35, 0.25][: len(spatial)])
    p = np.array([0.3, -0.2, 0.1][: len(spatial)])
    c = np.asarray(c)

    def f(x):
        return np.prod(np.cos(k * x + p), axis=-1)

    grid = _grid(spatial)
    image = f(grid)[None, ..., None].astype(np.float32)
    u = np.broadcast_to(c.astype(np.float32), (1, *spatial, len(spatial)))
    out = np.asarray(warp(image, u))[0, ..., 0]
    a = c - np.floor(c)
    bound = np.sum(a * (1 - a) / 2 * k ** 2)
    q = grid + c
    inside = np.all((q >= 0) & (q <= np.asarray(spatial) - 1), axis=-1)
    err = np.abs(out - f(q))[inside]
    assert err.max() <= bound + 1e-5
    # The bound is tight enough to tell the direction: the forward-warp reading f(X - c) violates it.
    assert np.abs(out - f(grid - c))[inside].max() > 3 * bound


def test_jit_matches_no_jit():
    rng = np.random.default_rng(6)
    spatial = (6, 5, 4)
    image = rng.normal(size=(2, *spatial, 2)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, *spatial, 1)).astype(np.int32)
    u = (1.5 * rng.normal(size=(2, *spatial, 3))).astype(np.float32)
    jitted = jax.jit(warp, static_argnames="mode")
    np.testing.assert_allclose(np.asarray(jitted(image, u)), np.asarray(warp(image, u)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(jitted(labels, u, mode="nearest")),
                                  np.asarray(warp(labels, u, mode="nearest")))


@pytest.mark.parametrize("image_shape, u_shape, mode", [
    ((2, 5, 1), (2, 5, 1), "linear"),  # one spatial axis
    ((1, 3, 3, 3, 3, 1), (1, 3, 3, 3, 3, 4), "linear"),  # four spatial axes
    ((2, 5, 4, 1), (2, 5, 4, 3), "linear"),  # 3 components on a 2-D grid
    ((2, 5, 4, 3, 1), (2, 5, 4, 3, 2), "linear"),  # 2 components on a 3-D grid
    ((2, 5, 4, 1), (1, 5, 4, 2), "linear"),  # batch mismatch
    ((2, 5, 4, 1), (2, 5, 3, 2), "nearest"),  # grid mismatch
    ((2, 5, 4, 1), (2, 5, 4, 2), "cubic"),  # unknown mode
])
def test_bad_arguments_raise_value_error(image_shape, u_shape, mode):
    with pytest.raises(ValueError):
        warp(np.zeros(image_shape, np.float32), np.zeros(u_shape, np.float32), mode=mode)


def test_interpolate_rejects_wrong_coordinate_count():
    with pytest.raises(ValueError, match="components"):
        interpolate(np.zeros((4, 4, 1), np.float32), np.zeros((3, 3), np.float32))


def test_coordinate_gradient_at_integer_positions_is_the_whole_one_sided_difference():
    # At a voxel centre the interpolant has a kink; like the original (TF clip_by_value passes the gradient
    # at its bounds), the derivative is the forward difference, and the backward one at the last voxel --
    # not half of it, which is what differentiating jnp.clip would give.
    from deepstrain_jax.ops.warp import interpolate

    v = (jnp.arange(5.0) ** 2)[:, None]  # values 0, 1, 4, 9, 16
    d = jax.grad(lambda q: interpolate(v, q[None, None])[0, 0])
    assert float(d(jnp.array(2.0))) == 5.0   # 9 - 4
    assert float(d(jnp.array(0.0))) == 1.0   # 1 - 0
    assert float(d(jnp.array(4.0))) == 7.0   # 16 - 9, backward at the last voxel
    assert float(d(jnp.array(-0.5))) == 0.0  # clamped outside
    assert float(d(jnp.array(4.5))) == 0.0
    # Zero displacement: the warp's gradient w.r.t. u is the forward difference of the image.
    img = (jnp.arange(6.0) ** 2)[None, :, None, None] * jnp.ones((1, 6, 3, 1))
    g = jax.grad(lambda u: jnp.sum(warp(img, u)))(jnp.zeros((1, 6, 3, 2)))
    np.testing.assert_allclose(np.asarray(g[0, :5, 1, 0]), np.diff(np.arange(6.0) ** 2))
