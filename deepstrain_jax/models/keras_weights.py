"""Load Keras-2 HDF5 weight files (the published ``carson_Jan2021.h5``, ``carmen_Jan2021.h5``) into the legacy networks.

File layout (Keras 2 ``save_weights("....h5")``; ``model.save("....h5")`` nests the same under ``model_weights``):
the root attribute ``layer_names`` lists one group per layer, weightless layers (Input, UpSampling, Add,
Concatenate) included; each group's attribute ``weight_names`` lists datasets such as ``conv2d_12/kernel:0``,
``batch_normalization_7/moving_mean:0`` or ``p_re_lu_5/alpha:0``, stored under those paths in the group.
Attributes longer than HDF5's 64 kB limit are split by Keras into ``layer_names0``, ``layer_names1``, ...

Mapping (the original DeepStrain code, github.com/moralesq/DeepStrain): layers are classed by their weights (conv: ``kernel``,
``bias``; BatchNorm: ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``; PReLU: ``alpha``), each class
is sorted by the numeric suffix of the layer name (numerically: ``_10`` after ``_9``; no suffix counts as 0),
and the ``k``-th layer of a class goes to the ``k``-th module of that class in Keras creation order
(:func:`deepstrain_jax.models.layers.keras_creation_order`). Every shape is checked; any mismatch, missing
or extra weight raises with the layer name, the variable path and both shapes. HDF5 is read with ``h5py``;
TensorFlow is not needed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from deepstrain_jax.errors import InputError
from deepstrain_jax.models import architecture, build

# Keras weight name -> (collection, Flax variable name), per layer class.
_WEIGHTS = {
    "conv": {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": {"gamma": ("params", "scale"), "beta": ("params", "bias"),
           "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var")},
    "prelu": {"alpha": ("params", "alpha")},
}
_CLASS_NAMES = {"conv": "convolution", "bn": "BatchNormalization", "prelu": "PReLU"}


@dataclasses.dataclass(frozen=True)
class KerasLayer:
    """One layer group of a Keras HDF5 file: its name and its weights by short name (``"kernel"``, ...)."""

    name: str
    weights: Mapping[str, np.ndarray]

    @property
    def kind(self) -> str | None:
        """``"conv"``, ``"bn"``, ``"prelu"``, or ``None`` for a weightless layer."""
        keys = set(self.weights)
        if not keys:
            return None
        for kind, names in _WEIGHTS.items():
            if keys <= set(names) and ("kernel" in keys or kind != "conv"):
                return kind
        raise ValueError(f"Keras layer {self.name!r} has weights {sorted(keys)}, which match no layer of "
                         f"DeepStrain's networks (conv, BatchNormalization, PReLU)")

    @property
    def suffix(self) -> int:
        """Numeric suffix of the layer name (``conv2d_12`` -> 12; ``conv2d`` -> 0)."""
        m = re.search(r"_(\d+)$", self.name)
        return int(m.group(1)) if m else 0


def _str_attr(obj, name: str) -> list[str]:
    if name in obj.attrs:
        values = list(obj.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:  # Keras splits attributes over 64 kB
            values += list(obj.attrs[f"{name}{i}"])
            i += 1
        if not i:
            raise KeyError(name)
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_h5(path: str | os.PathLike) -> list[KerasLayer]:
    """Read every layer's weights from a Keras-2 HDF5 file, in the file's ``layer_names`` order.

    Raises :class:`InputError` if the file cannot be read or is not in that layout.
    """
    try:
        import h5py

        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"cannot read as HDF5 ({e})", path) from None
    with f:
        root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
        try:
            names = _str_attr(root, "layer_names")
        except KeyError:
            raise InputError("not a Keras HDF5 weight file: no 'layer_names' attribute", path) from None
        layers = []
        for name in names:
            if name not in root:
                raise InputError(f"layer {name!r} is listed in 'layer_names' but has no group", path)
            group = root[name]
            try:
                weight_names = _str_attr(group, "weight_names")
            except KeyError:
                weight_names = []
            weights = {}
            for wname in weight_names:
                short = wname.split("/")[-1].split(":")[0]
                if short in weights:
                    raise InputError(f"layer {name!r} has two weights named {short!r}", path)
                if wname not in group:
                    raise InputError(f"layer {name!r}: weight {wname!r} is listed but not stored", path)
                weights[short] = np.asarray(group[wname])
            layers.append(KerasLayer(name, weights))
    return layers


def _depth(template) -> int:
    return sum(1 for k in template["params"] if re.fullmatch(r"enc\d+", k))


def keras_to_variables(layers: list[KerasLayer], template) -> dict:
    """Map Keras layers onto the variables of a legacy network.

    Args:
      layers: from :func:`read_keras_h5`.
      template: the network's variables or their shapes (``jax.eval_shape(init, rng)``):
        ``{"params", "batch_stats"}``.
    Returns:
      ``{"params", "batch_stats"}`` of numpy arrays with the template's shapes and dtypes.
    Raises:
      ValueError: on a count, name or shape mismatch, naming the Keras layer and the variable.
    """
    from deepstrain_jax.models.layers import keras_creation_order  # Flax: only converting weights needs it

    order = keras_creation_order(_depth(template))
    by_kind: dict[str, list[KerasLayer]] = {k: [] for k in order}
    for layer in layers:
        if layer.kind is not None:
            by_kind[layer.kind].append(layer)
    for kind, paths in order.items():
        if len(by_kind[kind]) != len(paths):
            raise ValueError(f"the file has {len(by_kind[kind])} {_CLASS_NAMES[kind]} layers; the architecture "
                             f"needs {len(paths)} (depth {_depth(template)})")

    out = jax.tree_util.tree_map(lambda _: None, template)
    for kind, paths in order.items():
        ranked = sorted(by_kind[kind], key=lambda l: (l.suffix, l.name))
        for layer, path in zip(ranked, paths):
            for short, (collection, var) in _WEIGHTS[kind].items():
                if short not in layer.weights:
                    raise ValueError(f"Keras layer {layer.name!r} lacks its {short!r} weight")
                node_t, node_o = template[collection], out[collection]
                for key in path:
                    node_t, node_o = node_t[key], node_o[key]
                expected = node_t[var]
                value = layer.weights[short]
                if tuple(value.shape) != tuple(expected.shape):
                    raise ValueError(f"Keras layer {layer.name!r} weight {short!r} has shape {tuple(value.shape)}; "
                                     f"{collection}/{'/'.join(path)}/{var} expects {tuple(expected.shape)}")
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"Keras layer {layer.name!r} weight {short!r} holds non-finite values")
                node_o[var] = np.asarray(value, dtype=expected.dtype)
    missing = [jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_leaves_with_path(
        out, is_leaf=lambda v: v is None) if v is None]
    if missing:
        raise ValueError(f"no Keras weights for {missing}")
    return out


def load_keras_weights(path: str | os.PathLike, cfg: Mapping[str, Any]) -> dict:
    """Read a Keras HDF5 file and map it onto the legacy network described by ``cfg``.

    Args:
      path: Keras-2 HDF5 weight file.
      cfg: model sub-config (see :func:`deepstrain_jax.models.build`), e.g. ``{"name": "carmen",
        "family": "legacy"}``.
    Returns:
      ``{"params", "batch_stats"}`` of numpy float32 arrays, ready for ``apply``.
    Raises:
      InputError: the file is unreadable, not in Keras layout, or does not fit the architecture.
    """
    arch = architecture(cfg)
    if arch["family"] != "legacy":
        raise ValueError(f"Keras weights load into the legacy family, got family {arch['family']!r}")
    init, _ = build(arch)
    template = jax.eval_shape(init, jax.random.key(0))
    layers = read_keras_h5(path)
    try:
        return keras_to_variables(layers, template)
    except ValueError as e:
        raise InputError(f"{e} ({arch['name']}, gf {arch['gf']}, input {tuple(arch['input_shape'])})",
                         path) from None


def infer_architecture(layers: list[KerasLayer]) -> dict:
    """Guess the legacy architecture of a Keras file from its weights (for ``deepstrain convert-weights``).

    Rules: 5-D conv kernels -> CarMEN, else CarSON (4 output channels or more) or VCN (fewer);
    ``gf`` = output channels of the first convolution; ``depth = (n_conv + 2) / 6``; input size = the
    first PReLU alpha's spatial shape, input channels = the first kernel's input channels. The result still
    goes through the full shape check of :func:`keras_to_variables`.

    Returns:
      a model sub-config dict (``name``, ``family``, ``gf``, ``depth``, ``input_shape``, ``out_channels``).
    """
    convs = sorted((l for l in layers if l.kind == "conv"), key=lambda l: (l.suffix, l.name))
    prelus = sorted((l for l in layers if l.kind == "prelu"), key=lambda l: (l.suffix, l.name))
    if not convs or not prelus:
        raise ValueError("the file holds no convolution or no PReLU layers")
    first, last = convs[0].weights["kernel"], convs[-1].weights["kernel"]
    if (len(convs) + 2) % 6:
        raise ValueError(f"{len(convs)} convolution layers do not form a DeepStrain encoder-decoder "
                         f"(6 depth - 2 of them)")
    depth = (len(convs) + 2) // 6
    out_channels = int(last.shape[-1])
    if first.ndim == 5:
        name = "carmen"
    elif first.ndim == 4:
        name = "carson" if out_channels >= 4 else "vcn"
    else:
        raise ValueError(f"first convolution kernel has shape {first.shape}; expected 4-D or 5-D")
    alpha = prelus[0].weights["alpha"]
    input_shape = [*map(int, alpha.shape[:-1]), int(first.shape[-2])]
    return {"name": name, "family": "legacy", "gf": int(first.shape[-1]), "depth": depth,
            "input_shape": input_shape, "out_channels": out_channels}
