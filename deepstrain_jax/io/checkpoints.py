"""Model folders: the variables of a network (an Orbax checkpoint of ``{"params", "batch_stats"}``), its
architecture (``model.json``) and their SHA-256 (``variables.sha256``), written all-or-nothing beside the other
atomic writers (:mod:`deepstrain_jax.io.atomic`).

Used by inference (shipped models, converted Keras weights: :mod:`deepstrain_jax.analysis.networks`,
:mod:`deepstrain_jax.models.pretrained`) and by the trainer, which exports its final model here; training
checkpoints are :mod:`deepstrain_jax.training.checkpointing`. Every read is verified against the recorded hash;
a damaged folder raises :class:`~deepstrain_jax.errors.InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from deepstrain_jax.errors import InputError
from deepstrain_jax.io.atomic import atomic_directory


def tree_sha256(tree: Any) -> str:
    """SHA-256 of a pytree of arrays: every leaf's path, dtype, shape and bytes in path order (equal hashes,
    equal trees; typed PRNG keys hashed through their key data)."""
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def error_reason(e: BaseException) -> str:
    """``"ExceptionType: message"`` on one line, at most 300 characters of message (for error texts)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:300]}"


_VARIABLES = "variables"
_MODEL_JSON = "model.json"
_CHECKSUM = "variables.sha256"


def save_variables(directory: str | os.PathLike, variables: dict, model_config: dict) -> Path:
    """Write ``{"params", "batch_stats"}`` as an Orbax checkpoint plus ``model.json`` (the architecture) and
    ``variables.sha256`` (:func:`tree_sha256` of the variables, checked by :func:`load_variables`).

    The folder appears complete or not at all: it is written under a temporary name and renamed.
    """
    directory = Path(directory).absolute()
    variables = jax.tree_util.tree_map(np.asarray, variables)
    import orbax.checkpoint as ocp

    with atomic_directory(directory) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / _VARIABLES, variables)
        checkpointer.wait_until_finished()
        (tmp / _MODEL_JSON).write_text(json.dumps(model_config, indent=2, sort_keys=True))
        (tmp / _CHECKSUM).write_text(tree_sha256(variables) + "\n")
    return directory


def expected_sha256(directory: Path) -> tuple[str | None, Path | None]:
    """The variables' recorded hash: ``variables.sha256``, else ``provenance.json``'s ``sha256``, else none."""
    if (directory / _CHECKSUM).is_file():
        return (directory / _CHECKSUM).read_text().strip(), directory / _CHECKSUM
    prov = directory / "provenance.json"
    if prov.is_file():
        try:
            digest = json.loads(prov.read_text(encoding="utf-8")).get("sha256")
        except (ValueError, AttributeError):
            raise InputError("damaged model folder: provenance.json is not a JSON object", prov) from None
        if digest:
            return str(digest), prov
    return None, None


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Read a folder written by :func:`save_variables`: ``(variables, model_config)`` as numpy arrays.

    Verified: ``model.json`` must parse, the variables must read back whole and match the recorded SHA-256
    (``variables.sha256``, or a shipped model's ``provenance.json``). Raises InputError naming the file.
    """
    directory = Path(directory).absolute()
    if not (directory / _MODEL_JSON).is_file() or not (directory / _VARIABLES).is_dir():
        raise InputError(f"not a deepstrain-jax model folder (expected {_MODEL_JSON} and {_VARIABLES}/)",
                         directory)
    try:
        model_config = json.loads((directory / _MODEL_JSON).read_text())
        if not isinstance(model_config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"damaged model folder: {_MODEL_JSON} does not parse ({error_reason(e)})",
                         directory / _MODEL_JSON) from None
    import orbax.checkpoint as ocp

    try:
        variables = ocp.StandardCheckpointer().restore(directory / _VARIABLES)
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types for a damaged checkpoint
        raise InputError(f"damaged model folder: the variables cannot be read ({error_reason(e)})",
                         directory / _VARIABLES) from None
    if not isinstance(variables, dict) or "params" not in variables:
        raise InputError("damaged model folder: the variables hold no 'params'", directory / _VARIABLES)
    expected, source = expected_sha256(directory)
    if expected is not None and tree_sha256(variables) != expected:
        raise InputError(f"damaged model folder: the variables do not match the SHA-256 in {source.name}",
                         directory / _VARIABLES)
    return variables, model_config
