"""The three networks of the analysis, loaded once and compiled once for fixed batch shapes.

A model is named by a *spec*:

* ``None`` or ``"shipped"``: the default model inside the package (:mod:`deepstrain_jax.models.pretrained`);
* a model folder (``model.json`` + ``variables/``, as :func:`deepstrain_jax.io.checkpoints.save_variables`
  and ``deepstrain convert-weights`` write it), or a training work directory (the ``model/`` that
  ``train.main`` exports when it finishes);
* a Keras HDF5 file (``carson_Jan2021.h5``, ``carmen_Jan2021.h5``): the original weights, mapped onto the
  ``legacy`` architecture.

:class:`Networks` runs them with shapes that do not change from one frame or subject to the next (CarSON on
one frame's slices, CarMEN on ``pair_batch`` pairs, padded), so each network compiles once per process, and
the CLI's persistent compilation cache (:func:`enable_compilation_cache`) carries that across processes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from deepstrain_jax import models
from deepstrain_jax.analysis import startup_cache
from deepstrain_jax.data.preprocessing import zscore
from deepstrain_jax.errors import InputError, check_type
from deepstrain_jax.io.checkpoints import tree_sha256
from deepstrain_jax.models import NAMES, count_variables, keras_weights, pretrained


@dataclasses.dataclass
class Network:
    """One loaded network: ``apply(x) -> y`` (jitted, inference mode) and where it came from."""

    name: str
    arch: dict
    variables: dict
    source: str
    apply: Callable
    provenance: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> dict:
        """Where the network came from and what it is: ``source``, architecture, ``parameters``, ``sha256`` (of
        the variables, :func:`variables_sha256`) and, from a model folder's ``provenance.json``, ``name`` and
        ``trained_on`` (null when the folder has none, e.g. a Keras file)."""
        return {"source": self.source, "name": self.provenance.get("name"), "family": self.arch["family"],
                "precision": self.arch["dtype"], "gf": self.arch["gf"], "depth": self.arch["depth"],
                "input_shape": list(self.arch["input_shape"]),
                "parameters": count_variables(self.variables), "sha256": variables_sha256(self.variables),
                "trained_on": self.provenance.get("trained_on")}


def variables_sha256(variables) -> str:
    """SHA-256 of a variable tree: every leaf's path, dtype, shape and bytes in path order (the model's identity:
    equal hashes, equal outputs). Same as :func:`deepstrain_jax.io.checkpoints.tree_sha256`."""
    return tree_sha256(variables)


def read_provenance(folder) -> dict:
    """A model folder's ``provenance.json`` (``{"name", "trained_on", ...}``), or ``{}`` when it has none."""
    path = Path(folder) / "provenance.json"
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable provenance file: {e}", path) from None
    if not isinstance(d, dict):
        raise InputError("provenance.json must hold a JSON object", path)
    return d


def _from_workdir(workdir: Path) -> Path | None:
    """The model folder of a training work directory: ``model/`` if exported."""
    if (workdir / "model" / "model.json").is_file():
        return workdir / "model"
    return None


PRECISIONS = ("float32", "bfloat16")


def load_network(name: str, spec: str | os.PathLike | None = None, *, precision: str = "float32") -> Network:
    """Load network ``name`` ("vcn", "carson" or "carmen") from ``spec`` (module docstring).

    ``precision``: ``"float32"`` (default) or ``"bfloat16"``: convolutions on bfloat16 activations and weights
    with float32 accumulation, BatchNorm in float32, outputs float32; the variables stay float32
    (``docs/validation.md`` reports what it changes in Dice and strain).

    Raises InputError naming the file when the spec cannot be read or holds another network.
    """
    if name not in NAMES:
        raise ValueError(f"network must be one of {NAMES}, got {name!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    provenance = {}
    if spec is None or os.fspath(spec) == "shipped":
        variables, arch = pretrained.load_default(name, loader=startup_cache.load_variables)
        source = "shipped"
        provenance = read_provenance(pretrained.default_model_dir(name))
    else:
        path = Path(spec)
        source = os.fspath(path)
        if path.is_file() and path.suffix.lower() in (".h5", ".hdf5"):
            layers = keras_weights.read_keras_h5(path)
            try:
                arch = models.architecture(keras_weights.infer_architecture(layers))
                template = jax.eval_shape(models.build(arch)[0], jax.random.key(0))
                variables = keras_weights.keras_to_variables(layers, template)
            except ValueError as e:
                raise InputError(str(e), path) from None
        elif (path / "model.json").is_file():
            variables, arch = startup_cache.load_variables(path)
            provenance = read_provenance(path)
        elif path.is_dir() and _from_workdir(path) is not None:
            variables, arch = startup_cache.load_variables(_from_workdir(path))
            provenance = read_provenance(_from_workdir(path))
        else:
            raise InputError(f"not a {name} model: expected a model folder (model.json), a training work "
                             "directory with an exported model/, or a Keras .h5 weight file", path)
    arch = models.architecture(dict(arch, dtype=precision))
    if arch["name"] != name:
        raise InputError(f"holds a {arch['name']} network, not {name}", source)
    variables = jax.device_put(variables)  # one transfer for the whole tree (per-leaf jnp.asarray: ~1 ms each)
    return Network(name=name, arch=arch, variables=variables, source=source,
                   apply=_compiled_apply(json.dumps(arch, sort_keys=True)), provenance=provenance)


class NetworkApply:
    """A network's jitted ``apply(variables, x)`` (inference mode).

    With the start-up cache on (:func:`enable_compilation_cache`), each input signature runs the network's
    exported module from :mod:`deepstrain_jax.analysis.startup_cache` (bit-identical outputs, no Flax tracing
    in a new process); otherwise the traced function itself (``.jitted``).
    """

    def __init__(self, arch_json: str):
        self.arch_json = arch_json
        self._exported: dict = {}

    @functools.cached_property
    def jitted(self) -> Callable:
        """The traced network, built on first use: a process whose every input signature is in the start-up
        cache never builds the Flax module (nor imports Flax)."""
        _, apply = models.build(json.loads(self.arch_json))
        return jax.jit(lambda variables, x: apply(variables, x))

    def __call__(self, variables, x):
        if startup_cache.folder() is None:
            return self.jitted(variables, x)
        key = (startup_cache.folder(), startup_cache.signature(variables, x))
        fn = self._exported.get(key)
        if fn is None:
            fn = startup_cache.exported_call(self.arch_json, lambda: self.jitted, variables, x) or self.jitted
            self._exported[key] = fn
        return fn(variables, x)


@functools.lru_cache(maxsize=None)
def _compiled_apply(arch_json: str) -> NetworkApply:
    """One :class:`NetworkApply` per architecture: reloading a model (or another model of the same
    architecture) reuses the compiled code."""
    return NetworkApply(arch_json)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache (``$DEEPSTRAIN_JAX_CACHE`` or ``~/.cache/deepstrain-jax``).

    Compiled networks are then reused by later processes: the second ``deepstrain analyze`` skips compiling.
    Every program is kept, however fast it compiled (a threshold of 0.5 s, used before, left ~170 small
    programs of one analysis to be compiled again by every process: a 25-frame CLI run on a 128 x 128 phantom
    with a warm cache took 18.3 s with it and 14.6 s without, same machine); about 1 MB per input size.
    Also turns on the start-up cache in ``<folder>/deepstrain`` (:mod:`deepstrain_jax.analysis.startup_cache`:
    model variables and exported networks). Returns the folder used. Failing to create it only disables the
    cache.
    """
    folder = Path(path or os.environ.get("DEEPSTRAIN_JAX_CACHE") or Path.home() / ".cache" / "deepstrain-jax" / "xla")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""
    jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    startup_cache.enable(folder)
    return os.fspath(folder)


@contextlib.contextmanager
def timed(seconds: collections.Counter, name: str):
    """Add the wall seconds of the ``with`` block to ``seconds[name]`` (the networks' and the pipeline stages'
    clocks in ``run.json``)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] += time.perf_counter() - t0


_NETWORKS_API = ("segment_frame", "motion", "vcn_heatmaps", "grid", "describe")


def check_networks(function: str, networks, *, optional: bool = True) -> None:
    """TypeError unless ``networks`` is a :class:`Networks` (or an object with its methods, e.g. a wrapper)
    or, when ``optional``, ``None``."""
    if networks is None and optional:
        return
    if all(hasattr(networks, m) for m in _NETWORKS_API):
        return
    check_type(function, "networks", networks, (Networks,) + ((type(None),) if optional else ()),
               "a Networks object" + (" or None (the shipped models)" if optional else ""),
               "load models with Networks.load(carson=..., ...)")


@dataclasses.dataclass
class Networks:
    """VCN (optional), CarSON and CarMEN, with the fixed-shape batched calls of the pipeline.

    Attributes:
      vcn, carson, carmen: :class:`Network` (``vcn`` may be ``None``: centre on the field of view instead).
      pair_batch: CarMEN pairs per call (the last call is padded to this size).
      seconds: wall seconds spent in each network so far (``{"vcn", "carson", "carmen"}``, results on the host
        included), summed over this object's calls: the pipeline reports its share (``run.json``).
    """

    carson: Network
    carmen: Network
    vcn: Network | None = None
    pair_batch: int = 2
    seconds: collections.Counter = dataclasses.field(default_factory=collections.Counter, repr=False,
                                                     compare=False)

    @classmethod
    def load(cls, vcn=None, carson=None, carmen=None, *, use_vcn: bool = True, pair_batch: int = 2,
             precision: str = "float32") -> "Networks":
        """Load each network from its spec (``None``: the shipped model), computing in ``precision``
        (:func:`load_network`)."""
        for name, spec in (("vcn", vcn), ("carson", carson), ("carmen", carmen)):
            check_type("Networks.load", name, spec, (str, os.PathLike, type(None)),
                       "a model folder, training workdir or Keras .h5 path, or None (the shipped model)")
        check_type("Networks.load", "pair_batch", pair_batch, (int, np.integer), "an int >= 1")
        if pair_batch < 1:
            raise ValueError(f"pair_batch must be >= 1, got {pair_batch}")
        return cls(carson=load_network("carson", carson, precision=precision),
                   carmen=load_network("carmen", carmen, precision=precision),
                   vcn=load_network("vcn", vcn, precision=precision) if use_vcn else None, pair_batch=pair_batch)

    @property
    def grid(self) -> tuple[int, int]:
        """``(crop, n_slices)`` of the network grid, from CarMEN's input shape ``(N, N, Z, 2)``."""
        n, m, z, _ = self.carmen.arch["input_shape"]
        if n != m:
            raise ValueError(f"CarMEN input must be square in-plane, got {n} x {m}")
        return int(n), int(z)

    def describe(self) -> dict:
        return {k: (None if getattr(self, k) is None else getattr(self, k).describe()) for k in NAMES}

    def vcn_heatmaps(self, slices) -> np.ndarray:
        """VCN heat-maps ``(Z, M, M, 1)`` of one stack's VCN view ``(M, M, Z)`` (already z-scored per slice)."""
        x = np.moveaxis(np.asarray(slices, np.float32), -1, 0)[..., None]
        with timed(self.seconds, "vcn"):
            return np.asarray(self.vcn.apply(self.vcn.variables, x))

    def segment_frame(self, volume) -> np.ndarray:
        """CarSON class probabilities ``(N, N, Z, 4)`` of one frame ``(N, N, Z)``, each slice z-scored."""
        x = zscore(np.moveaxis(np.asarray(volume), -1, 0)[..., None], (1, 2, 3))
        with timed(self.seconds, "carson"):
            probs = np.asarray(self.carson.apply(self.carson.variables, x))
        return np.moveaxis(probs, 0, 2)

    def motion(self, fixed, moving_frames, *, out=None, out_index=None) -> np.ndarray:
        """CarMEN displacement ``(K, N, N, Z, 3)`` (network voxels) from ``fixed (N, N, Z)`` to each moving frame.

        Args:
          fixed: the reference volume (ED), ``(N, N, Z)``.
          moving_frames: ``(K, N, N, Z)``. Pairs ``[fixed, moving_k]`` are z-scored per channel and run
            ``pair_batch`` at a time.
          out, out_index: write pair ``k``'s field into ``out[out_index[k]]`` (default ``out[k]``) and return
            ``out``, instead of a new array (no second copy of a whole sequence of fields).
        """
        fixed = zscore(np.asarray(fixed), (0, 1, 2))
        moving = np.asarray(moving_frames)
        k = moving.shape[0]
        if out is None:
            out = np.empty((k, *fixed.shape, 3), np.float32)
        index = range(k) if out_index is None else [int(i) for i in out_index]
        if len(index) != k:
            raise ValueError(f"out_index has {len(index)} entries for {k} moving frames")
        b = self.pair_batch
        batch = np.empty((b, *fixed.shape, 2), np.float32)
        batch[..., 0] = fixed
        for start in range(0, k, b):
            n_real = min(start + b, k) - start
            for j in range(b):  # the last chunk is padded with its last pair: one batch shape, one compilation
                batch[j, ..., 1] = zscore(moving[start + min(j, n_real - 1)], (0, 1, 2))
            with timed(self.seconds, "carmen"):
                u = np.asarray(self.carmen.apply(self.carmen.variables, batch))
            for j in range(n_real):
                out[index[start + j]] = u[j]
        return out
