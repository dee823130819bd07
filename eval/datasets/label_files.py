"""Reading label maps for the evaluators: integer checks, label remapping and shape checks, as InputErrors.

Every problem with a file raises :class:`deepstrain_jax.errors.InputError` naming that file, so the command
line prints one line and exits with status 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepstrain_jax.data.nifti import load_nifti
from deepstrain_jax.errors import InputError

ACDC_IDENTITY = (0, 1, 2, 3)


def as_labels(array, path, lookup=ACDC_IDENTITY) -> np.ndarray:
    """Integer labels of ``array`` mapped through ``lookup`` (``out = lookup[in]``), checked to lie in 0..3.

    Args:
      array: label values (integers, or floats holding integers).
      path: the file they came from (named in errors).
      lookup: new label for each stored label 0..3; the identity by default. M&Ms -> ACDC is ``(0, 3, 2, 1)``.
    Returns:
      uint8 ACDC labels.
    """
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)) or a.dtype == bool:
        raise InputError(f"labels must be integers, got dtype {a.dtype}", path)
    if np.issubdtype(a.dtype, np.floating) and not np.all(a == np.round(a)):
        raise InputError("labels must be integers, found non-integer values", path)
    a = a.astype(np.int64)
    bad = np.setdiff1d(np.unique(a), np.arange(len(lookup)))
    if bad.size:
        raise InputError(f"label values {bad.tolist()} outside {{0, 1, 2, 3}}", path)
    return np.asarray(lookup, dtype=np.uint8)[a]


def load_labels(path, ndim: int, shape=None, lookup=ACDC_IDENTITY, like=None) -> tuple[np.ndarray, np.ndarray]:
    """Load a label NIfTI (``ndim`` 3 or 4), remap it with ``lookup`` and check its spatial shape.

    Args:
      path: the file.
      ndim: 3 for ``(X, Y, Z)``, 4 for ``(X, Y, Z, T)``.
      shape: required ``(X, Y, Z)``, or ``None``.
      like: the ground-truth file ``shape`` came from, named in the mismatch message.
    Returns:
      ``(labels, spacing_mm)``: uint8 ACDC labels and the file's ``(3,)`` voxel size in mm.
    Raises:
      InputError: unreadable file, wrong rank, non-integer or out-of-range labels, shape mismatch.
    """
    data = load_nifti(path, ndim=ndim)
    if shape is not None and tuple(data.array.shape[:3]) != tuple(shape):
        against = f" of {os.fspath(like)}" if like is not None else ""
        raise InputError(f"shape {tuple(data.array.shape[:3])} differs from the ground truth{against} "
                         f"{tuple(shape)}", path)
    return as_labels(data.array, path, lookup), data.spacing_mm


def first_existing(candidates) -> Path | None:
    """The first path of ``candidates`` that is a file, or ``None``."""
    for p in candidates:
        if Path(p).is_file():
            return Path(p)
    return None


def check_folder(path, what: str) -> Path:
    """``Path(path)`` if it is a folder, else InputError ``"<what> folder not found"``."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{what} folder not found", p)
    return p
