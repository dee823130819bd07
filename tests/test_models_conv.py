"""Convolution primitives of the networks against independent references (scipy, numpy, hand-computed values)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from deepstrain_jax.models.conv import conv_same, upsample_conv_same, upsample_nearest


def reference_conv_same(x, kernel, strides):
    """TensorFlow 'SAME' convolution from its definition: pad (total // 2 before, rest after), correlate, stride."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    pads = []
    for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = []
    for b in range(x.shape[0]):
        maps = []
        for f in range(kernel.shape[-1]):
            acc = sum(signal.correlate(xp[b, ..., c], kernel[..., c, f], mode="valid", method="direct")
                      for c in range(x.shape[-1]))
            maps.append(acc[tuple(slice(None, None, s) for s in strides)])
        out.append(np.stack(maps, -1))
    return np.stack(out)


@pytest.mark.parametrize("spatial,ksize,strides", [
    ((7, 6), (3, 3), (1, 1)),        # library path, odd and even sizes
    ((8, 6), (3, 3), (2, 2)),        # stride 2 on even sizes: pad 0 before, 1 after
    ((7, 5), (3, 3), (2, 2)),        # stride 2 on odd sizes: pad 1 and 1
    ((2, 2), (3, 3), (1, 1)),        # small maps: patch-matrix path
    ((4, 3), (3, 3), (2, 2)),
    ((1, 1), (3, 3), (1, 1)),
    ((6, 6), (1, 1), (1, 1)),        # 1x1 unit of the decoder
    ((6, 8, 3), (3, 3, 1), (2, 2, 1)),  # legacy CarMEN kernel and stride
    ((5, 6, 4), (3, 3, 3), (1, 1, 1)),  # v2 CarMEN 3D kernel
    ((2, 2, 2), (3, 3, 3), (2, 2, 2)),  # 3D small maps
])
def test_conv_same_matches_reference(spatial, ksize, strides):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *spatial, 3)).astype(np.float32)
    kernel = rng.standard_normal((*ksize, 3, 4)).astype(np.float32)
    y = conv_same(jnp.asarray(x), jnp.asarray(kernel), strides)
    np.testing.assert_allclose(np.asarray(y), reference_conv_same(x, kernel, strides), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [4, 8])  # 4: patch-matrix path, 8: library path
def test_same_padding_stride2_even_pads_zero_before_one_after(n):
    # Hand-computed: with kernel taps (1, 10, 100) output j reads x[2j], x[2j + 1], x[2j + 2] (x[n] = 0).
    x = np.arange(1, n + 1, dtype=np.float32)
    kernel = np.zeros((3, 1, 1, 1), np.float32)
    kernel[:, 0, 0, 0] = [1, 10, 100]
    y = conv_same(jnp.asarray(x)[None, :, None, None], jnp.asarray(kernel), (2, 1))[0, :, 0, 0]
    xp = np.append(x, 0.0)
    expected = [xp[2 * j] + 10 * xp[2 * j + 1] + 100 * xp[2 * j + 2] for j in range(n // 2)]
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)


def test_conv_same_jit_matches_no_jit():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32)
    f = lambda x, k: conv_same(x, k, (2, 2))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x, k)), np.asarray(f(x, k)), rtol=1e-6, atol=1e-6)


def test_upsample_nearest_repeats_each_element():
    x = np.arange(2 * 2 * 3 * 2 * 1, dtype=np.float32).reshape(2, 2, 3, 2, 1)
    y = upsample_nearest(jnp.asarray(x), (2, 2, 1))
    expected = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(np.asarray(y), expected)
    assert y[0, 3, 5, 1, 0] == x[0, 1, 2, 1, 0]


@pytest.mark.parametrize("spatial,features,factors", [
    ((8, 6), 12, (2, 2)),     # 2 x 2 parity kernels
    ((8, 8), 3, (2, 2)),      # few output channels (the head): matrix product then shifted sums
    ((2, 2), 5, (2, 2)),      # small maps: upsample first
    ((6, 4, 3), 4, (2, 2, 1)),  # 3D: upsample first
])
def test_upsample_conv_same_equals_upsample_then_conv(spatial, features, factors):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, *spatial, 5)).astype(np.float32)
    ksize = (3,) * len(spatial) if len(spatial) == 2 else (3, 3, 1)
    kernel = rng.standard_normal((*ksize, 5, features)).astype(np.float32)
    y = upsample_conv_same(jnp.asarray(x), jnp.asarray(kernel), factors)
    up = x
    for axis, f in enumerate(factors, start=1):
        up = np.repeat(up, f, axis=axis)
    np.testing.assert_allclose(np.asarray(y), reference_conv_same(up, kernel, (1,) * len(spatial)),
                               rtol=1e-5, atol=1e-5)


def test_conv_same_rejects_mismatched_kernel():
    with pytest.raises(ValueError, match="kernel"):
        conv_same(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 2, 1)), (1, 1))


@pytest.mark.parametrize("features", [3, 12])  # the head's custom gradient, and the parity-kernel path
def test_upsample_conv_same_gradients_match_a_direct_convolution(features):
    """The gradients with respect to input and kernel (the head's are a custom transpose) against autodiff of
    the direct form: nearest upsampling by numpy-style repeat, then XLA's own convolution."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 8, 6, 5)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 5, features)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 16, 12, features)), jnp.float32)

    def direct(x, kernel):
        up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return jax.lax.conv_general_dilated(up, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    want = jax.vjp(direct, x, kernel)[1](g)
    got = jax.jit(lambda x, k, g: jax.vjp(lambda a, b: upsample_conv_same(a, b, (2, 2)), x, k)[1](g))(x, kernel, g)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_channel_sums_and_broadcasts_and_their_gradients():
    """channel_sum against numpy's float64 sum; the gradients of both helpers against autodiff of the plain
    jnp.sum / jnp.broadcast_to they replace."""
    from deepstrain_jax.models.channels import broadcast_channels, channel_sum

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 7, 5, 4)), jnp.float32)
    v = jnp.asarray(rng.standard_normal(4), jnp.float32)
    np.testing.assert_allclose(np.asarray(channel_sum(x)), np.asarray(x, np.float64).sum((0, 1, 2)), rtol=1e-5,
                               atol=1e-5)

    def ours(x, v):
        return jnp.sum(jnp.tanh(broadcast_channels(v, x.shape) * x)) + jnp.sum(jnp.cos(channel_sum(x * x)))

    def plain(x, v):
        return jnp.sum(jnp.tanh(jnp.broadcast_to(v, x.shape) * x)) + jnp.sum(jnp.cos(jnp.sum(x * x, (0, 1, 2))))

    for a, b in zip(jax.jit(jax.grad(ours, (0, 1)))(x, v), jax.grad(plain, (0, 1))(x, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _bf16(a):
    return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32))


@pytest.mark.parametrize("path", ["library", "small maps", "upsample parity", "upsample few features"])
def test_bfloat16_convolutions_accumulate_in_float32(path):
    # bfloat16 operands, float32 sums, one rounding at the end: every output is within half a bfloat16 ulp
    # (2^-8 relative) of the exact sum of the bfloat16-rounded products, plus float32 round-off. Summing 1152
    # products in bfloat16 instead misses this by far.
    rng = np.random.default_rng(5)
    spatial, features = {"library": ((8, 8), 8), "small maps": ((2, 2), 8), "upsample parity": ((8, 6), 12),
                         "upsample few features": ((8, 8), 3)}[path]
    x = _bf16(rng.standard_normal((2, *spatial, 128)))
    # small integers: the upsampling paths' parity kernels (sums of up to four taps) stay exact in bfloat16
    kernel = rng.integers(-4, 5, (3, 3, 128, features)).astype(np.float32)
    if path.startswith("upsample"):
        y = upsample_conv_same(jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16), (2, 2))
        x = np.repeat(np.repeat(x, 2, 1), 2, 2)
    else:
        y = conv_same(jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16), (1, 1))
    assert y.dtype == jnp.bfloat16
    exact = reference_conv_same(x, kernel, (1, 1))
    scale = reference_conv_same(np.abs(x), np.abs(kernel), (1, 1))
    err = np.abs(np.asarray(y, np.float64) - exact)
    assert np.all(err <= 2.0 ** -8 * np.abs(exact) + 1e-5 * scale)
