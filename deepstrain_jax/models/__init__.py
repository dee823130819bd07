"""Networks: VCN, CarSON and CarMEN as pure functions ``(init, apply)`` over ``{"params", "batch_stats"}``.

``build(cfg)`` takes a model sub-config (an ``ml_collections.ConfigDict`` or a plain dict) with the fields

* ``name``: ``"carson"``, ``"carmen"`` or ``"vcn"`` (required);
* ``family``: ``"legacy"`` (the published networks, per-element PReLU) or ``"v2"`` (default; one PReLU alpha
  per channel);
* ``gf``: width of the first block, then x2, x4, x8, x8, ... (legacy 64, v2 32);
* ``depth``: number of encoder blocks, i.e. 2x in-plane downsamplings (legacy 7, v2 5);
* ``input_shape``: one sample without batch, ``(X, Y, C)`` or CarMEN ``(X, Y, Z, 2)`` (default the published
  ``(128, 128, 1)`` / ``(128, 128, 16, 2)``); it fixes the input size of ``legacy`` networks only;
* ``out_channels``: CarSON labels (4) or VCN maps (1); CarMEN always 3;
* ``kernel_3d`` (v2 CarMEN): (3, 3, 3) kernels instead of (3, 3, 1); ``z_stride`` (with ``kernel_3d``): 2 also
  halves Z at every block; ``slice_mix`` (v2 CarMEN): a residual mixing of neighbouring slices after every
  block, zero at initialisation (:class:`deepstrain_jax.models.layers.SliceMix`);
* ``dtype``: computation dtype, ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``; variables, BatchNorm
  statistics and outputs stay float32;
* ``bn_axis_name``: mapped axis over which BatchNorm averages batch statistics under ``pmap``;
* ``fold_slices`` (default True): run CarMEN's (3, 3, 1) kernels as 2D convolutions over slices (exact, faster).

``v2`` accepts any input size divisible by ``2 ** depth`` in-plane (and by ``z_stride ** depth`` along Z).

Usage::

    init, apply = build({"name": "carmen", "family": "legacy"})
    variables = init(jax.random.key(0))                       # {"params", "batch_stats"}
    u_vox = apply(variables, x)                                # inference, running statistics
    u_vox, updates = apply(variables, x, train=True, mutable=["batch_stats"])

The published Keras weights load with :func:`deepstrain_jax.models.keras_weights.load_keras_weights`. On CPU,
:data:`deepstrain_jax.xla_flags.RECOMMENDED_CPU_XLA_FLAGS` in ``XLA_FLAGS`` (:func:`deepstrain_jax.xla_flags.use_fast_cpu_convolutions`) makes these networks ~10% faster.
Flax is used only inside this package; everything else sees pytrees of arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import jax.numpy as jnp

from deepstrain_jax.labels import N_LABELS
from deepstrain_jax.models import carmen, carson, vcn  # Flax-free until a network is built (start-up time)

if TYPE_CHECKING:
    from deepstrain_jax.models.layers import EncoderDecoder

NAMES = ("vcn", "carson", "carmen")  # the networks, in the order the analysis uses them (the one list)
FAMILIES = ("legacy", "v2")
DTYPES = ("float32", "bfloat16", "float16")
_FIELDS = ("name", "family", "gf", "depth", "input_shape", "out_channels", "kernel_3d", "z_stride", "dtype",
           "bn_axis_name", "fold_slices", "slice_mix")
_LEGACY_INPUT = {"carson": carson.LEGACY_INPUT_SHAPE, "carmen": carmen.LEGACY_INPUT_SHAPE,
                 "vcn": vcn.LEGACY_INPUT_SHAPE}
_OUT_CHANNELS = {"carson": N_LABELS, "carmen": 3, "vcn": 1}
_MAKERS = {"carson": carson.make_carson, "carmen": carmen.make_carmen, "vcn": vcn.make_vcn}


def encoder_widths(gf: int, depth: int) -> tuple[int, ...]:
    """Encoder widths ``gf * min(2 ** i, 8)``, ``i = 0 ... depth - 1`` (the original: 64 ... 512)."""
    return tuple(gf * min(2 ** i, 8) for i in range(depth))


def _get(cfg: dict, key: str, default):
    value = cfg.get(key)
    return default if value is None else value


def architecture(cfg: Mapping[str, Any]) -> dict:
    """Complete and validate a model sub-config; the result is JSON-serialisable and accepted by :func:`build`.

    Adds the derived ``widths`` (encoder widths, informative; checked if given). Raises ``ValueError`` naming
    the field for an unknown field or an invalid value.
    """
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    unknown = sorted(set(cfg) - set(_FIELDS) - {"widths"})
    if unknown:
        raise ValueError(f"unknown model config fields {unknown}; known: {list(_FIELDS)}")
    name = cfg.get("name")
    if name not in NAMES:
        raise ValueError(f"model name must be one of {NAMES}, got {name!r}")
    family = _get(cfg, "family", "v2")
    if family not in FAMILIES:
        raise ValueError(f"model family must be one of {FAMILIES}, got {family!r}")
    legacy = family == "legacy"
    gf = int(_get(cfg, "gf", 64 if legacy else 32))
    depth = int(_get(cfg, "depth", 7 if legacy else 5))
    if gf < 1 or depth < 1:
        raise ValueError(f"gf and depth must be positive, got gf={gf}, depth={depth}")
    default_input = _LEGACY_INPUT[name]
    input_shape = tuple(int(n) for n in _get(cfg, "input_shape", default_input))
    if len(input_shape) != len(default_input):
        raise ValueError(f"{name} input_shape must have {len(default_input)} entries "
                         f"{'(X, Y, Z, C)' if name == 'carmen' else '(X, Y, C)'}, got {input_shape}")
    if name == "carmen" and input_shape[-1] != 2:
        raise ValueError(f"carmen input_shape must end with 2 channels (V_0, V_t), got {input_shape}")
    out_channels = int(_get(cfg, "out_channels", _OUT_CHANNELS[name]))
    if name == "carmen" and out_channels != 3:
        raise ValueError(f"carmen predicts 3 displacement components, got out_channels={out_channels}")
    kernel_3d = bool(_get(cfg, "kernel_3d", False))
    z_stride = int(_get(cfg, "z_stride", 1))
    if kernel_3d and (legacy or name != "carmen"):
        raise ValueError("kernel_3d applies to v2 carmen only (legacy kernels are (3, 3, 1))")
    if z_stride not in (1, 2) or (z_stride == 2 and not kernel_3d):
        raise ValueError(f"z_stride must be 1, or 2 with kernel_3d; got z_stride={z_stride}, "
                         f"kernel_3d={kernel_3d}")
    slice_mix = bool(_get(cfg, "slice_mix", False))
    if slice_mix and (legacy or name != "carmen"):
        raise ValueError("slice_mix applies to v2 carmen only")
    dtype = str(_get(cfg, "dtype", "float32"))
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    strides = (2, 2, z_stride) if name == "carmen" else (2, 2)
    for n, s in zip(input_shape[:-1], strides):
        if n % (s ** depth):
            raise ValueError(f"{name} input_shape {input_shape} must be divisible by "
                             f"{tuple(s ** depth for s in strides)} for depth {depth}")
    widths = list(encoder_widths(gf, depth))
    if cfg.get("widths") is not None and list(cfg["widths"]) != widths:
        raise ValueError(f"widths {list(cfg['widths'])} disagree with gf={gf}, depth={depth} ({widths})")
    return {"name": name, "family": family, "gf": gf, "depth": depth, "input_shape": list(input_shape),
            "out_channels": out_channels, "kernel_3d": kernel_3d, "z_stride": z_stride, "dtype": dtype,
            "bn_axis_name": cfg.get("bn_axis_name"), "fold_slices": bool(_get(cfg, "fold_slices", True)),
            "slice_mix": slice_mix, "widths": widths}


def make_module(cfg: Mapping[str, Any]) -> EncoderDecoder:
    """The Flax module of a model sub-config (for code inside :mod:`deepstrain_jax.models`)."""
    arch = architecture(cfg)
    return _MAKERS[arch["name"]]({**arch, "widths": tuple(arch["widths"])})


def build(cfg: Mapping[str, Any]) -> tuple[Callable, Callable]:
    """Pure ``(init, apply)`` functions for a model sub-config.

    * ``init(rng, batch_size=1) -> {"params", "batch_stats"}``: Keras-style initialisation (glorot-uniform
      kernels, zero biases, BatchNorm scale 1, shift 0, running mean 0, variance 1, PReLU alpha 0). It runs the
      network once on zeros; ``jax.jit(init)`` lets XLA drop that forward pass, and ``jax.eval_shape(init, rng)``
      gives the variable shapes without allocating them.
    * ``apply(variables, x, train=False, mutable=False)``: Flax ``Module.apply``. Inference returns the output;
      ``train=True, mutable=["batch_stats"]`` normalises with batch statistics and returns
      ``(output, {"batch_stats": updated})``.

    Input and output shapes are in each network's module (:mod:`.carson`, :mod:`.carmen`, :mod:`.vcn`).
    """
    arch = architecture(cfg)
    module = make_module(arch)
    if arch["family"] == "legacy":
        init_shape = tuple(arch["input_shape"])
    else:
        # v2 variables do not depend on the spatial size: initialise on the smallest valid input.
        strides = (2, 2, arch["z_stride"]) if arch["name"] == "carmen" else (2, 2)
        init_shape = (*(s ** arch["depth"] for s in strides), arch["input_shape"][-1])

    def init(rng, batch_size: int = 1):
        x = jnp.zeros((batch_size, *init_shape), jnp.float32)
        return dict(module.init(rng, x, train=False))

    def apply(variables, x, train: bool = False, mutable=False):
        return module.apply(variables, x, train=train, mutable=mutable)

    return init, apply


def count_variables(variables) -> int:
    """Total number of scalars in a pytree of arrays or ``jax.ShapeDtypeStruct``."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(variables))


__all__ = ["NAMES", "FAMILIES", "architecture", "build", "count_variables", "encoder_widths", "make_module"]
