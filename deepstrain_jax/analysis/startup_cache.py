"""A start-up cache beside JAX's persistent compilation cache: what every new process would otherwise redo.

JAX's persistent cache keeps compiled programs, but a new process still restores the models and traces the
Flax networks before it can look a program up. With the cache on (:func:`enable`, called by
:func:`deepstrain_jax.analysis.networks.enable_compilation_cache`, i.e. by the CLI, the demo and the Dask
workers), two more things are kept, under ``<compilation cache folder>/deepstrain/``:

* **variables** (:func:`load_variables`): a model folder's variables as one ``.npz``, keyed by the folder's
  path, its ``model.json`` and the SHA-256 recorded in it. Every read is checked against that recorded SHA-256:
  an entry that does not match (stale, damaged, hand-edited) is ignored, the folder is read with Orbax and the
  entry written again. A folder without a recorded hash is never cached.
* **exported networks** (:func:`exported_call`): a network's jitted ``apply`` traced once and kept as a
  serialized :mod:`jax.export` module (StableHLO), keyed by the architecture, the shapes and dtypes of the
  variables and the input, the backend and the JAX version. A new process deserialises it (milliseconds)
  instead of tracing Flax (about half a second per network); the outputs are bit-identical to the traced
  function's (tested).

Entries are written atomically (temporary file, then rename), so concurrent workers never see half an entry;
failing to read or write one only costs the time it would have saved. Without :func:`enable` nothing here
changes what the library does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jaxlib
import numpy as np

from deepstrain_jax import console
from deepstrain_jax.io import atomic
from deepstrain_jax.io.checkpoints import expected_sha256, tree_sha256
from deepstrain_jax.io.checkpoints import load_variables as read_model_folder

SUBFOLDER = "deepstrain"
_folder: Path | None = None


def enable(folder: str | os.PathLike | None) -> Path | None:
    """Use ``folder / "deepstrain"`` for this process (``None``: turn the cache off). Returns the folder used."""
    global _folder
    _folder = None if folder is None else Path(folder) / SUBFOLDER
    return _folder


def folder() -> Path | None:
    """The active cache folder, or ``None`` when the cache is off."""
    return _folder


def _key(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def _write(path: Path, data: bytes) -> None:
    try:
        atomic.write_bytes(path, data)
    except OSError:
        pass  # a read-only or full disk only costs the time the entry would have saved


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """``(variables, model_config)`` of a model folder, as
    :func:`deepstrain_jax.io.checkpoints.load_variables` returns them, through the cache when it is on (module
    docstring). Raises what that function raises for a damaged folder."""
    directory = Path(directory).absolute()
    expected, _ = expected_sha256(directory)
    if _folder is None or expected is None or not (directory / "model.json").is_file():
        return read_model_folder(directory)
    try:
        model_json = (directory / "model.json").read_text()
        model_config = json.loads(model_json)
    except (OSError, ValueError, UnicodeDecodeError):
        return read_model_folder(directory)  # it raises the folder's own error
    entry = _folder / "variables" / f"{_key([os.fspath(directory), model_json, expected])}.npz"
    variables = _read_npz(entry)
    if variables is not None and isinstance(model_config, dict) and tree_sha256(variables) == expected:
        return variables, model_config
    variables, model_config = read_model_folder(directory)
    flat = _flatten(variables)
    if flat is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        _write(entry, buffer.getvalue())
    return variables, model_config


def _flatten(tree, prefix: str = "") -> dict | None:
    """``{"a/b/c": array}`` of nested dicts of arrays (what Flax variables are), or ``None`` when the tree
    cannot come back from those names: a key that is not a string or holds ``/``, or an empty dict."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: np.asarray(tree)}
    if not tree:
        return None
    flat = {}
    for k, v in tree.items():
        if not isinstance(k, str) or "/" in k or not k:
            return None
        sub = _flatten(v, f"{prefix}{k}/")
        if sub is None:
            return None
        flat.update(sub)
    return flat


def _read_npz(path: Path) -> dict | None:
    """The nested dicts written by :func:`_flatten`, or ``None`` for a missing or unreadable entry."""
    try:
        with np.load(path, allow_pickle=False) as z:
            tree = {}
            for name in z.files:
                *parents, leaf = name.split("/")
                node = tree
                for k in parents:
                    node = node.setdefault(k, {})
                node[leaf] = z[name]
            return tree
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _spec(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def signature(variables, x) -> tuple:
    """What an exported module is specialised to: the variables' paths, shapes and dtypes, and the input's."""
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    return (tuple((jax.tree_util.keystr(p), tuple(np.shape(a)), str(a.dtype)) for p, a in leaves),
            tuple(np.shape(x)), str(x.dtype))


def exported_call(name: str, trace: Callable[[], Callable], variables, x) -> Callable | None:
    """A jitted callable equal to the function ``trace()`` returns, for arguments shaped like ``(variables, x)``,
    from the exported module in the cache (written there on a miss), or ``None`` when the cache is off or the
    module cannot be exported or serialized (the caller then runs that function itself).

    ``name``: what identifies the function apart from the shapes (the architecture's JSON); ``trace`` is called
    on a miss only, so a hit needs neither the function nor what building it imports."""
    if _folder is None:
        return None
    # Besides the shapes: what changes the traced program (backend, versions, the tracing-time precision flags).
    parts = [name, signature(variables, x), jax.default_backend(), jax.__version__, jaxlib.__version__,
             jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision]
    entry = _folder / "exported" / f"{_key(parts)}.jaxexport"
    try:
        exported = jax.export.deserialize(bytearray(entry.read_bytes()))
        if (exported.in_tree != jax.tree_util.tree_structure(((variables, x), {}))
                or [(tuple(a.shape), str(a.dtype)) for a in exported.in_avals]
                != [(tuple(np.shape(a)), str(a.dtype)) for a in jax.tree_util.tree_leaves((variables, x))]):
            exported = None
    except Exception:  # noqa: BLE001 - a missing, damaged or foreign entry is traced again, whatever it raises
        exported = None
    if exported is None:
        try:
            exported = jax.export.export(trace())(_spec(variables), _spec(x))
            _write(entry, bytes(exported.serialize()))
        except Exception as e:  # noqa: BLE001 - the cache must never stop an analysis: run the traced function
            console.debug("start-up cache: no exported module for %s (%s: %s)", name[:60], type(e).__name__, e)
            return None
    return jax.jit(exported.call)
