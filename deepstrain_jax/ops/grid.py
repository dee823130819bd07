"""Voxel <-> millimetre coordinates.

Two frames are used throughout the package:

* the **array frame**: axes follow the array axes, origin at the centre of voxel 0, coordinates in mm are
  ``X_mm = index * spacing_mm``. Displacements ``u_mm`` and ``u_vox`` live in this frame (component ``c`` is
  along array axis ``c``), so ``u_mm = u_vox * spacing_mm``. Strain is computed here.
* the **world frame** (scanner RAS+, as in NIfTI): ``x_world = A[:3, :3] @ index + A[:3, 3]`` with the 4x4
  ``affine`` A. Its columns are ``spacing_mm[c] * direction[:, c]``.

A displacement along the array axes is turned into a world-frame vector by the direction cosines
``D = A[:3, :3] / spacing_mm``: ``u_world = D @ u_mm``.

Shapes: points and vectors have the coordinate as the last axis, ``(..., ndim)``.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def spacing_from_affine(affine) -> np.ndarray:
    """Voxel size in mm per array axis: the Euclidean norms of the affine's first three columns.

    Args:
      affine: (4, 4) voxel-to-world matrix.
    Returns:
      (3,) spacing in mm.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {a.shape}")
    return np.linalg.norm(a[:3, :3], axis=0)


def direction_from_affine(affine) -> np.ndarray:
    """Direction cosines ``D`` (3, 3): column ``c`` is the world-frame unit vector of array axis ``c``."""
    a = np.asarray(affine, dtype=np.float64)
    return a[:3, :3] / spacing_from_affine(a)[None, :]


def voxel_to_mm(index, affine):
    """World coordinates (mm) of voxel indices: ``x = A[:3, :3] @ index + A[:3, 3]``.

    Args:
      index: (..., 3) continuous voxel indices (voxel centres at integers).
      affine: (4, 4) voxel-to-world matrix.
    Returns:
      (..., 3) world coordinates in mm.
    """
    a = jnp.asarray(affine)
    index = jnp.asarray(index)
    return index @ a[:3, :3].T + a[:3, 3]


def mm_to_voxel(x_mm, affine):
    """Continuous voxel indices of world points: ``index = A[:3, :3]^-1 (x - A[:3, 3])``.

    Args:
      x_mm: (..., 3) world coordinates in mm.
      affine: (4, 4) voxel-to-world matrix (must be invertible).
    Returns:
      (..., 3) continuous voxel indices.
    """
    a = jnp.asarray(affine)
    x_mm = jnp.asarray(x_mm)
    inv = jnp.linalg.inv(a[:3, :3])
    return (x_mm - a[:3, 3]) @ inv.T


def index_grid(shape: Sequence[int], dtype=jnp.float32):
    """Voxel indices of every voxel: ``(*shape, len(shape))`` with ``grid[i, j, k] = (i, j, k)``."""
    axes = [jnp.arange(n, dtype=dtype) for n in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def array_grid_mm(shape: Sequence[int], spacing_mm: Sequence[float], dtype=jnp.float32):
    """Array-frame coordinates in mm of every voxel centre: ``(*shape, ndim)``, ``X = index * spacing``."""
    spacing = jnp.asarray(spacing_mm, dtype=dtype)
    if spacing.shape != (len(shape),):
        raise ValueError(f"spacing_mm must have {len(shape)} entries, got {tuple(spacing.shape)}")
    return index_grid(shape, dtype) * spacing


def vox_to_mm(u_vox, spacing_mm):
    """Displacement in voxels -> mm, per array axis: ``u_mm[..., c] = u_vox[..., c] * spacing_mm[c]``."""
    u_vox = jnp.asarray(u_vox)
    spacing = jnp.asarray(spacing_mm, dtype=u_vox.dtype)
    if spacing.shape != (u_vox.shape[-1],):
        raise ValueError(f"spacing_mm must have {u_vox.shape[-1]} entries, got {tuple(spacing.shape)}")
    return u_vox * spacing


def mm_to_vox(u_mm, spacing_mm):
    """Displacement in mm -> voxels, per array axis: ``u_vox[..., c] = u_mm[..., c] / spacing_mm[c]``."""
    u_mm = jnp.asarray(u_mm)
    spacing = jnp.asarray(spacing_mm, dtype=u_mm.dtype)
    if spacing.shape != (u_mm.shape[-1],):
        raise ValueError(f"spacing_mm must have {u_mm.shape[-1]} entries, got {tuple(spacing.shape)}")
    return u_mm / spacing


def array_to_world_vectors(v_mm, affine):
    """Rotate array-frame vectors (mm along array axes) into the world frame: ``D @ v``."""
    d = jnp.asarray(direction_from_affine(affine), dtype=jnp.asarray(v_mm).dtype)
    return jnp.asarray(v_mm) @ d.T


def world_to_array_vectors(v_world, affine):
    """Inverse of :func:`array_to_world_vectors`: ``D^-1 @ v`` (``D`` need not be orthogonal)."""
    d = jnp.asarray(direction_from_affine(affine), dtype=jnp.asarray(v_world).dtype)
    return jnp.asarray(v_world) @ jnp.linalg.inv(d).T
