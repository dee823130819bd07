"""DeepStrain's encoder-decoder template as Flax Linen modules.

One template builds VCN, CarSON and CarMEN (Morales et al. 2021; the original DeepStrain code, github.com/moralesq/DeepStrain):

* **conv unit** ``C``: convolution (``'SAME'`` padding, bias) -> BatchNorm (momentum 0.5, epsilon 1e-3, Keras's
  running-variance update, :class:`BatchNorm`) -> PReLU. It also returns ``r``, the convolution output before
  BatchNorm.
* **encoder block** ``E``: ``a = C(x)``; ``(r, b) = C(a, stride s)``; ``c = conv(b)`` (no BN, no activation);
  output ``r + c``, linear.
* **decoder block** ``D`` (skip ``k``): ``C`` with a 1x1 kernel; nearest upsampling by ``s``; ``C``;
  concatenation ``[upsampled, skip]`` on channels (this order matters for Keras weights); ``C``.
* **head**: nearest upsampling by ``s``, convolution to the output channels, optional softmax. There is no skip at
  full resolution: the finest skip is the first encoder block's output at half resolution.

Conventions: images channels last, ``(B, X, Y, C)`` or ``(B, X, Y, Z, C)``. ``'SAME'`` padding is TensorFlow's:
a stride-2, size-3 convolution of an even axis pads 0 before and 1 after (:mod:`.conv`). Variables keep the
Keras shapes (kernels ``(k0, k1[, k2], C_in, C_out)``, per-element alphas ``(X, Y[, Z], C)``), so weights port
without transposition.

PReLU is ``y = x`` for ``x >= 0`` and ``y = alpha * x`` otherwise, with ``alpha`` either one value per element of
the feature map (``per_element``: the original, ``alpha.shape == x.shape[1:]``, which fixes the input size) or
one per channel (the ``v2`` family, any input size). Both start at ``alpha = 0`` (ReLU), as in Keras.

**Folded slices.** A 3D network whose kernels and strides are 1 along ``Z`` (legacy CarMEN: kernels (3,3,1),
strides (2,2,1)) never mixes slices except through BatchNorm statistics, which pool over all of B, X, Y, Z.
:class:`EncoderDecoder` then runs it as the same 2D network on ``(B * Z, X, Y, C)``: every convolution is a 2D
convolution over slices (XLA's fast path on CPU), BatchNorm reduces over the same set of elements, and
per-element PReLU keeps its Keras layout ``(X, Y, Z, C)``, broadcast against the activations viewed as
``(B, Z, X, Y, C)``. The result is the 3D network's, up to floating-point summation order.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from deepstrain_jax.models.channels import broadcast_channels, channel_sum
from deepstrain_jax.models.conv import conv_same, upsample_conv_same

BN_MOMENTUM = 0.5  # running = momentum * running + (1 - momentum) * batch, as Keras's BatchNormalization(0.5)
BN_EPSILON = 1e-3  # Keras default

# Keras Conv defaults: glorot-uniform kernel, zero bias.
_KERNEL_INIT = nn.initializers.glorot_uniform()


class Conv(nn.Module):
    """Keras ``Conv2D/3D(padding='same')``: :func:`conv_same` plus a bias; variables ``kernel``, ``bias``.

    Glorot-uniform kernel and zero bias, Keras's defaults. With ``upsample`` the input is first upsampled
    (nearest) by those factors, as Keras's ``UpSampling`` before the convolution (computed without forming
    the upsampled tensor, :func:`upsample_conv_same`). With ``folded`` the kernel keeps its 3D shape
    ``(k0, k1, 1, C_in, C_out)`` but is applied as a 2D kernel to slices folded into the batch axis.
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    upsample: tuple[int, ...] | None = None
    folded: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        ndim = len(self.kernel_size)
        strides = self.strides or (1,) * ndim
        upsample = self.upsample or (1,) * ndim
        kernel = self.param("kernel", _KERNEL_INIT, (*self.kernel_size, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        if self.folded:
            if self.kernel_size[-1] != 1 or strides[-1] != 1 or upsample[-1] != 1:
                raise ValueError("folded slices need kernel, stride and upsampling 1 along Z")
            kernel, strides, upsample = kernel[..., 0, :, :], strides[:-1], upsample[:-1]
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if any(f > 1 for f in upsample):
            if any(s > 1 for s in strides):
                raise ValueError("a convolution cannot both upsample and stride")
            y = upsample_conv_same(x, kernel, upsample)
        else:
            y = conv_same(x, kernel, strides)
        return y + broadcast_channels(bias.astype(self.dtype), y.shape)  # bias gradient: a channel_sum


class BatchNorm(nn.Module):
    """Keras ``BatchNormalization(momentum, epsilon)`` over every axis but the last (channels).

    Training: ``y = gamma (x - mu_B) / sqrt(var_B + eps) + beta`` with the batch mean ``mu_B`` and the
    biased batch variance ``var_B`` over ``n`` values per channel; the running statistics move by
    ``mean <- m mean + (1 - m) mu_B`` and ``var <- m var + (1 - m) var_B n / (n - 1)``. The unbiased variance
    in the update is what Keras's fused batch norm does (TensorFlow returns the Bessel-corrected variance and
    Keras keeps it), hence what the original networks were trained with; PyTorch does the same. Inference:
    the same affine map with the running statistics. Statistics are computed in float32.

    Attributes:
      momentum: ``m`` (the original: 0.5).
      epsilon: added to the variance (Keras default 1e-3).
      axis_name: mapped axis (``pmap``) over which batch statistics are averaged, or ``None``.
      dtype: output dtype.
      param_dtype: dtype of ``scale`` (gamma) and ``bias`` (beta).
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        xf = x.astype(jnp.float32)
        # Channel sums and broadcasts as matrix-vector products, also in the backward pass (.channels).
        shape = xf.shape
        if train:
            n = math.prod(x.shape[:-1])
            mean = channel_sum(xf) / n
            if self.axis_name is not None:
                mean = lax.pmean(mean, self.axis_name)
            var = channel_sum(jnp.square(xf - broadcast_channels(mean, shape))) / n
            if self.axis_name is not None:
                var = lax.pmean(var, self.axis_name)
                n = n * lax.psum(1, self.axis_name)
            if not self.is_initializing():
                m = self.momentum
                running_mean.value = m * running_mean.value + (1.0 - m) * mean
                running_var.value = m * running_var.value + (1.0 - m) * var * (n / jnp.maximum(n - 1, 1))
        else:
            mean, var = running_mean.value, running_var.value
        y = ((xf - broadcast_channels(mean, shape)) * broadcast_channels(lax.rsqrt(var + self.epsilon) * scale, shape)
             + broadcast_channels(bias, shape))
        return y.astype(self.dtype)


class PReLU(nn.Module):
    """Parametric ReLU, ``y = x if x >= 0 else alpha * x`` (He et al. 2015; Keras ``PReLU``).

    Attributes:
      per_element: ``True``: one ``alpha`` per element of the feature map, shape ``x.shape[1:]`` (Keras
        ``shared_axes=None``, the original DeepStrain); ``False``: one per channel, shape ``(C,)``.
      folded_slices: ``Z > 0`` when the batch axis of ``x`` holds ``B * Z`` slices of 3D volumes, slice index
        fastest (see the module docstring). Per-element ``alpha`` then has the 3D layout ``(X, Y, Z, C)``.
      param_dtype: dtype of ``alpha``.
    """

    per_element: bool = False
    folded_slices: int = 0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        if not self.per_element:
            alpha = self.param("alpha", nn.initializers.zeros, (channels,), self.param_dtype)
            return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)
        if not self.folded_slices:
            alpha = self.param("alpha", nn.initializers.zeros, x.shape[1:], self.param_dtype)
            return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)
        z = self.folded_slices
        alpha = self.param("alpha", nn.initializers.zeros, (*x.shape[1:-1], z, channels), self.param_dtype)
        alpha = jnp.moveaxis(alpha.astype(x.dtype), -2, 0)  # (Z, X, Y, C), matching x viewed as (B, Z, X, Y, C)
        xs = x.reshape(-1, z, *x.shape[1:])
        return jnp.where(xs >= 0, xs, alpha * xs).reshape(x.shape)


class ConvUnit(nn.Module):
    """Conv -> BatchNorm (:class:`BatchNorm`, momentum 0.5, epsilon 1e-3) -> PReLU; returns ``(r, y)``.

    ``r`` is the convolution output before BatchNorm (the encoder's residual).
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    per_element_prelu: bool
    folded_slices: int = 0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    upsample: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        r = Conv(self.features, self.kernel_size, self.strides, self.upsample, self.folded_slices > 0,
                 self.dtype, self.param_dtype, name="conv")(x)
        y = BatchNorm(axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(
            r, train)
        y = PReLU(self.per_element_prelu, self.folded_slices, self.param_dtype, name="prelu")(y)
        return r, y


SLICE_MIX_PREFIX = "mix_"  # the names of the SliceMix layers: mix_enc{i}, mix_dec{j} (train.trainer.warm_start)


class SliceMix(nn.Module):
    """Residual mixing across slices: ``h + sum_k h[z + k - 1] W_k`` (3 slices, zero padding), ``W`` zero at init.

    The ``slice_mix`` option of v2 CarMEN places one after every encoder and decoder block, so that a network
    of (3, 3, 1) kernels (slices otherwise independent) can see its neighbours' features: nine such layers give
    every voxel a reach of 9 slices. ``W`` starts at 0, so a network with them computes exactly what it computed
    without them, and a trained 2D-slice CarMEN can be warm-started into one. Variable: ``kernel (3, C, C)``.

    Attributes:
      folded_slices: ``Z > 0`` when the batch axis holds ``B * Z`` slices (slice index fastest); 0 for
        ``(B, X, Y, Z, C)`` input.
    """

    folded_slices: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        c = h.shape[-1]
        kernel = self.param("kernel", nn.initializers.zeros, (3, c, c), self.param_dtype).astype(self.dtype)
        h = h.astype(self.dtype)
        if self.folded_slices:
            v = h.reshape(-1, self.folded_slices, *h.shape[1:])       # (B, Z, X, Y, C)
        else:
            v = jnp.moveaxis(h, 3, 1)
        z = v.shape[1]
        padded = jnp.pad(v, ((0, 0), (1, 1)) + ((0, 0),) * (v.ndim - 2))
        out = v + sum(padded[:, k:k + z] @ kernel[k] for k in range(3))
        return out.reshape(h.shape) if self.folded_slices else jnp.moveaxis(out, 1, 3)


class EncoderBlock(nn.Module):
    """``E``: ``a = C(x)``; ``(r, b) = C(a, stride)``; output ``r + conv(b)``, no activation."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    per_element_prelu: bool
    folded_slices: int = 0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        ones = (1,) * len(self.kernel_size)
        unit = dict(per_element_prelu=self.per_element_prelu, folded_slices=self.folded_slices,
                    bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        _, a = ConvUnit(self.features, self.kernel_size, ones, name="a", **unit)(x, train)
        r, b = ConvUnit(self.features, self.kernel_size, self.strides, name="b", **unit)(a, train)
        c = Conv(self.features, self.kernel_size, ones, None, self.folded_slices > 0, self.dtype,
                 self.param_dtype, name="c")(b)
        return r + c


class DecoderBlock(nn.Module):
    """``D``: ``C_1x1(x)`` -> upsample -> ``C`` -> concat ``[., skip]`` -> ``C``."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    per_element_prelu: bool
    folded_slices: int = 0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, skip, train: bool):
        ones = (1,) * len(self.kernel_size)
        unit = dict(per_element_prelu=self.per_element_prelu, folded_slices=self.folded_slices,
                    bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        _, h = ConvUnit(self.features, ones, ones, name="reduce", **unit)(x, train)
        _, h = ConvUnit(self.features, self.kernel_size, ones, upsample=self.strides, name="up", **unit)(h, train)
        h = jnp.concatenate([h, skip.astype(h.dtype)], axis=-1)
        _, h = ConvUnit(self.features, self.kernel_size, ones, name="merge", **unit)(h, train)
        return h


class EncoderDecoder(nn.Module):
    """The DeepStrain template: ``len(widths)`` encoder blocks, ``len(widths) - 1`` decoder blocks, a head.

    Variables are named ``enc1 ... encN`` (each with units ``a``, ``b`` and plain conv ``c``),
    ``dec1 ... dec{N-1}`` (units ``reduce``, ``up``, ``merge``; ``dec j`` takes the skip from ``enc{N-j}``
    and has its width) and ``head``. Each unit holds ``conv`` (``kernel``, ``bias``), ``bn`` (params
    ``scale``, ``bias``; batch_stats ``mean``, ``var``) and ``prelu`` (``alpha``).

    Attributes:
      widths: encoder widths, e.g. ``gf * (1, 2, 4, 8, 8, 8, 8)``.
      out_channels: channels of the head.
      kernel_size: ``(3, 3)``, ``(3, 3, 1)`` or ``(3, 3, 3)``.
      strides: down- and upsampling factor per spatial axis, e.g. ``(2, 2)`` or ``(2, 2, 1)``.
      per_element_prelu: the original's PReLU (fixed input size) instead of one alpha per channel.
      head_activation: ``None`` (linear) or ``"softmax"`` (over channels).
      fold_slices: run a 3D network with kernel and stride 1 along ``Z`` as a 2D network over slices (exact;
        see the module docstring). ``False`` keeps 3D convolutions (for comparison).
      bn_axis_name: mapped axis over which BatchNorm averages batch statistics (``pmap``), or ``None``.
      slice_mix: a :class:`SliceMix` (``mix_enc{i}``, ``mix_dec{j}``) after every block of a 3D network.
      dtype: computation dtype; the head's output is returned in float32.
      param_dtype: dtype of the variables.

    Input ``(B, *S, C_in)`` with every ``S[d]`` divisible by ``strides[d] ** len(widths)``; output
    ``(B, *S, out_channels)`` float32.
    """

    widths: tuple[int, ...]
    out_channels: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    per_element_prelu: bool
    head_activation: str | None = None
    fold_slices: bool = True
    bn_axis_name: str | None = None
    slice_mix: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        ndim = len(self.kernel_size)
        if self.slice_mix and ndim != 3:
            raise ValueError("slice_mix needs a 3D network")
        if x.ndim != ndim + 2 or len(self.strides) != ndim:
            raise ValueError(f"input of shape {x.shape} for a network with {ndim}-D kernels "
                             f"{self.kernel_size} and strides {self.strides}: expected (B, *{ndim} spatial, C)")
        depth = len(self.widths)
        for n, s in zip(x.shape[1:-1], self.strides):
            if n % (s ** depth):
                raise ValueError(f"input spatial shape {x.shape[1:-1]} must be divisible by "
                                 f"{tuple(s ** depth for s in self.strides)} (strides {self.strides}, "
                                 f"depth {depth})")
        if self.head_activation not in (None, "softmax"):
            raise ValueError(f"head_activation must be None or 'softmax', got {self.head_activation!r}")

        folded = 0
        batch, spatial = x.shape[0], x.shape[1:-1]
        if self.fold_slices and ndim == 3 and self.kernel_size[2] == 1 and self.strides[2] == 1:
            folded = spatial[2]
            x = jnp.moveaxis(x, 3, 1).reshape(batch * folded, *spatial[:2], x.shape[-1])

        block = dict(kernel_size=self.kernel_size, strides=self.strides, per_element_prelu=self.per_element_prelu,
                     folded_slices=folded, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                     param_dtype=self.param_dtype)
        h = x.astype(self.dtype)
        skips = []
        mix = dict(folded_slices=folded, dtype=self.dtype, param_dtype=self.param_dtype)
        for i, width in enumerate(self.widths):
            h = EncoderBlock(width, name=f"enc{i + 1}", **block)(h, train)
            if self.slice_mix:
                h = SliceMix(name=f"{SLICE_MIX_PREFIX}enc{i + 1}", **mix)(h)
            skips.append(h)
        for j, skip in enumerate(reversed(skips[:-1])):
            h = DecoderBlock(skip.shape[-1], name=f"dec{j + 1}", **block)(h, skip, train)
            if self.slice_mix:
                h = SliceMix(name=f"{SLICE_MIX_PREFIX}dec{j + 1}", **mix)(h)
        y = Conv(self.out_channels, self.kernel_size, None, self.strides, folded > 0, self.dtype,
                 self.param_dtype, name="head")(h)
        y = y.astype(jnp.float32)
        if self.head_activation == "softmax":
            y = nn.softmax(y, axis=-1)

        if folded:
            y = jnp.moveaxis(y.reshape(batch, folded, *spatial[:2], y.shape[-1]), 1, 3)
        return y


def keras_creation_order(depth: int) -> dict[str, list[tuple[str, ...]]]:
    """Paths of the variables of an :class:`EncoderDecoder` of ``depth`` blocks, in Keras creation order.

    The original builds, per conv unit, Conv then BatchNormalization then PReLU; per encoder block units
    ``a``, ``b`` then the plain conv ``c``; per decoder block units ``reduce``, ``up``, ``merge``; the head
    last. Keras numbers layers of one type in that order, so the ``k``-th Keras layer of a type (by numeric
    name suffix) is the ``k``-th path of that type here.

    Returns:
      ``{"conv": [...], "bn": [...], "prelu": [...]}``; each path is a tuple of module names, e.g.
      ``("enc1", "a", "conv")`` or ``("head",)``. Lengths ``6 depth - 2``, ``5 depth - 3``, ``5 depth - 3``.
    """
    order: dict[str, list[tuple[str, ...]]] = {"conv": [], "bn": [], "prelu": []}

    def unit(*path):
        order["conv"].append((*path, "conv"))
        order["bn"].append((*path, "bn"))
        order["prelu"].append((*path, "prelu"))

    for i in range(1, depth + 1):
        unit(f"enc{i}", "a")
        unit(f"enc{i}", "b")
        order["conv"].append((f"enc{i}", "c"))
    for j in range(1, depth):
        for name in ("reduce", "up", "merge"):
            unit(f"dec{j}", name)
    order["conv"].append(("head",))
    return order
