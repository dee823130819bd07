"""Convolution and nearest upsampling with Keras semantics, arranged to run fast on XLA:CPU.

Conventions: channels last, ``x`` of shape ``(B, *S, C_in)``, kernels in Keras/Flax layout
``(*K, C_in, C_out)``; convolutions are cross-correlations with TensorFlow's ``'SAME'`` padding.

Each function computes exactly the sum of products of its definition; only the order of the floating-point
additions (and, in :func:`upsample_conv_same`, the grouping of kernel taps that read the same input value)
differs from a direct evaluation, so results agree with it to float32 round-off. Why the detours:

* feature maps of 4 x 4 or less: XLA:CPU runs such convolutions through a generic loop ~100x slower than its
  convolution library; a patch matrix times the kernel matrix is fast;
* upsampling followed by a 3 x 3 convolution (the decoder's ``up`` units and the head): the four output
  parities each see a 2 x 2 neighbourhood of the low-resolution input, so the convolution runs on the input
  before upsampling with 2 x 2 kernels: 16 instead of 36 multiply-adds per input pixel and channel pair, and
  the upsampled tensor is never formed (Shi et al. 2016, "sub-pixel convolution", read backwards).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# XLA:CPU flags under which these networks run fastest on CPU: deepstrain_jax.xla_flags (JAX-free, for the CLI).
from deepstrain_jax.xla_flags import RECOMMENDED_CPU_XLA_FLAGS  # noqa: E402,F401

_SMALL_SPATIAL = 4
_SMALL_FEATURES = 8
_LAYOUT = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NHWDC", "HWDIO", "NHWDC")}

# Nearest 2x upsampling then a size-3 kernel, per axis: output 2i + a reads input i + a + u - 1, u in {0, 1},
# with the weight sum_t _PARITY[a, u, t] w[t].
_PARITY = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)

_LOW_PRECISION = frozenset({jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)})


def _accumulator(dtype):
    """``preferred_element_type`` of the products and sums: float32 for bfloat16 / float16 operands (low-precision
    compute, float32 accumulation; the result is rounded back to the operands' dtype once), else ``None``."""
    return jnp.float32 if jnp.dtype(dtype) in _LOW_PRECISION else None


def _offsets(sizes: Sequence[int]):
    return np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


def conv_same(x, kernel, strides: Sequence[int]):
    """Convolution with TensorFlow/Keras ``'SAME'`` padding (cross-correlation, no bias).

    ``y[b, o, f] = sum_{k, c} xp[b, s o + k, c] kernel[k, c, f]`` with ``o`` the output position and ``k`` the
    kernel offset (multi-indices over the spatial axes), ``s`` the strides and ``xp`` the input zero-padded by
    ``(lo, hi)`` per axis, ``lo + hi = max((ceil(n / s) - 1) s + k - n, 0)``, ``lo = floor((lo + hi) / 2)``:
    for a size-3 kernel with stride 2 on an even axis, 0 before and 1 after.

    Args:
      x: ``(B, *S, C_in)``, 1 to 3 spatial axes.
      kernel: ``(*K, C_in, C_out)``, ``len(K) == len(S)``.
      strides: one integer per spatial axis.
    Returns:
      ``(B, *ceil(S / strides), C_out)``.
    """
    ksize, spatial, strides = kernel.shape[:-2], x.shape[1:-1], tuple(strides)
    if len(ksize) != len(spatial) or len(strides) != len(spatial):
        raise ValueError(f"kernel {kernel.shape} and strides {strides} do not fit an input of shape {x.shape}")
    pads = lax.padtype_to_pads(spatial, ksize, strides, "SAME")
    acc = _accumulator(x.dtype)
    if max(spatial) > _SMALL_SPATIAL:
        return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_LAYOUT[len(spatial)],
                                        preferred_element_type=acc).astype(x.dtype)
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out = [-(-n // s) for n, s in zip(spatial, strides)]
    patches = [xp[(slice(None), *(slice(k, k + s * (o - 1) + 1, s) for k, s, o in zip(offset, strides, out)))]
               for offset in _offsets(ksize)]
    cols = jnp.concatenate(patches, axis=-1)  # (B, *out, prod(K) C_in): offsets outer, channels inner
    return jnp.einsum("...i,io->...o", cols, kernel.reshape(-1, kernel.shape[-1]),
                      preferred_element_type=acc).astype(x.dtype)


def upsample_nearest(x, factors: Sequence[int]):
    """Nearest-neighbour upsampling of the spatial axes (Keras ``UpSampling2D/3D``).

    ``y[b, i_0, i_1, ..., c] = x[b, floor(i_0 / f_0), floor(i_1 / f_1), ..., c]``.

    Args:
      x: ``(B, *S, C)``.
      factors: one integer factor per spatial axis.
    Returns:
      ``(B, *(S * factors), C)``.
    """
    if len(factors) != x.ndim - 2:
        raise ValueError(f"{len(factors)} upsampling factors for an input of shape {x.shape} "
                         f"with {x.ndim - 2} spatial axes")
    for axis, f in enumerate(factors, start=1):
        if f > 1:
            x = jnp.repeat(x, f, axis=axis)
    return x


def upsample_conv_same(x, kernel, factors: Sequence[int]):
    """``conv_same(upsample_nearest(x, factors), kernel, strides=1)`` without forming the upsampled input.

    For 2D inputs, factors (2, 2) and a 3 x 3 kernel, output pixel ``(2i + a, 2j + b)`` is
    ``sum_{u, v in {0, 1}} x0[i + a + u, j + b + v] . W_ab[u, v]`` with ``x0`` the input zero-padded by one,
    ``W_ab[u, v] = sum_{p, q} P[a, u, p] P[b, v, q] w[p, q]`` and ``P[0] = [[1, 0, 0], [0, 1, 1]]``,
    ``P[1] = [[1, 1, 0], [0, 0, 1]]`` (which kernel rows fall on the same input row). Other cases upsample
    first.

    Args:
      x: ``(B, *S, C_in)``.
      kernel: ``(*K, C_in, C_out)``.
      factors: upsampling factor per spatial axis.
    Returns:
      ``(B, *(S * factors), C_out)``.
    """
    if (tuple(factors) != (2, 2) or kernel.shape[:2] != (3, 3) or x.ndim != 4
            or min(x.shape[1:3]) <= _SMALL_SPATIAL):
        return conv_same(upsample_nearest(x, factors), kernel, (1,) * len(factors))
    b, s0, s1, _ = x.shape
    f = kernel.shape[-1]
    if f <= _SMALL_FEATURES:
        return _few_features_upsample_conv(x, kernel)
    acc = _accumulator(x.dtype)
    # w_eff[a, b, u, v] = W_ab[u, v]: (2, 2, 2, 2, C_in, C_out); tap sums in float32, then the compute dtype
    w_eff = _effective_kernel(kernel)
    xp = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    y = jnp.stack([jnp.stack([
        lax.conv_general_dilated(xp[:, a:a + s0 + 1, c:c + s1 + 1], w_eff[a, c], (1, 1), "VALID",
                                 dimension_numbers=_LAYOUT[2], preferred_element_type=acc)
        for c in (0, 1)], axis=3) for a in (0, 1)], axis=2)
    return y.reshape(b, 2 * s0, 2 * s1, f).astype(x.dtype)  # (B, S0, 2, S1, 2, F) -> interleaved rows and columns


def _effective_kernel(kernel):
    """The 2 x 2 kernels of the four output parities, ``(2, 2, 2, 2, C_in, C_out)`` (:func:`upsample_conv_same`),
    summed in float32 at least and returned in the kernel's dtype."""
    parity = jnp.asarray(_PARITY, jnp.promote_types(kernel.dtype, jnp.float32))
    return jnp.einsum("aup,bvq,pqcf->abuvcf", parity, parity, kernel.astype(parity.dtype)).astype(kernel.dtype)


def _few_features_forward(x, kernel):
    """:func:`upsample_conv_same` for few output channels (the head): one matrix product to all 16 (parity,
    tap) partial maps, then sums of shifted slices. Its gradient is :func:`_few_features_bwd`'s."""
    b, s0, s1, _ = x.shape
    f = kernel.shape[-1]
    w_eff = _effective_kernel(kernel)
    partial = jnp.einsum("nxyc,abuvcf->nxyabuvf", x, w_eff, preferred_element_type=_accumulator(x.dtype))
    partial = jnp.pad(partial, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * 5)
    y = jnp.stack([jnp.stack([
        sum(partial[:, a + u:a + u + s0, c + v:c + v + s1, a, c, u, v] for u in (0, 1) for v in (0, 1))
        for c in (0, 1)], axis=3) for a in (0, 1)], axis=2)
    return y.reshape(b, 2 * s0, 2 * s1, f).astype(x.dtype)


def _upsample_then_conv(x, kernel):
    return conv_same(upsample_nearest(x, (2, 2)), kernel, (1, 1))


@jax.custom_vjp
def _few_features_upsample_conv(x, kernel):
    return _few_features_forward(x, kernel)


def _few_features_fwd(x, kernel):
    return _few_features_forward(x, kernel), (x, kernel)


def _few_features_bwd(res, g):
    # The same bilinear map; the transpose of its direct form (upsample, convolve) runs ~5x faster on XLA:CPU
    # than that of the partial-map form (which pads and sums 16 shifted copies of the gradient): 93 ms against
    # 528 ms for the legacy CarSON head at batch 16 (2-core AMD EPYC, jax 0.10.2).
    x, kernel = res
    (gx,) = jax.linear_transpose(lambda a: _upsample_then_conv(a, kernel), x)(g)
    (gk,) = jax.linear_transpose(lambda w: _upsample_then_conv(x, w), kernel)(g)
    return gx, gk


_few_features_upsample_conv.defvjp(_few_features_fwd, _few_features_bwd)
