"""The default models that ship inside the package: small ``v2`` VCN, CarSON and CarMEN trained on phantoms.

They live in ``deepstrain_jax/assets/models/<name>/`` as written by
:func:`deepstrain_jax.io.checkpoints.save_variables` (an Orbax checkpoint of ``{"params",
"batch_stats"}`` plus ``model.json``), next to ``config.json`` (the training config), ``metrics.jsonl`` (its
log) and, for the set, ``assets/models/validation.md`` (how well they do on held-out phantoms). Nothing is
downloaded: a missing model is a packaging error.
"""

from __future__ import annotations

from pathlib import Path

from deepstrain_jax.io.checkpoints import load_variables
from deepstrain_jax.models import NAMES

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"


def default_model_dir(name: str) -> Path:
    """Folder of the shipped model ``name`` ("vcn", "carson" or "carmen")."""
    if name not in NAMES:
        raise ValueError(f"no shipped model named {name!r}; shipped: {NAMES}")
    return ASSETS / name


def load_default(name: str, loader=load_variables) -> tuple[dict, dict]:
    """``(variables, architecture)`` of the shipped model ``name``; build it with ``models.build(architecture)``.

    ``loader``: reads the model folder (default :func:`deepstrain_jax.io.checkpoints.load_variables`)."""
    folder = default_model_dir(name)
    if not (folder / "model.json").is_file():
        raise FileNotFoundError(f"{folder}: the shipped {name} model is missing from this installation "
                                "(reinstall the package; models are never downloaded)")
    return loader(folder)
