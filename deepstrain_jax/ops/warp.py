"""Differentiable resampling of images by dense displacement fields.

Conventions (see README, "Conventions"):

* ``image``: ``(B, *S, C)`` channels last, ``S`` the 2 or 3 spatial sizes; ``u_vox``: ``(B, *S, D)`` with
  ``D = len(S)``, component ``d`` the displacement along array axis ``d`` in voxels of this grid.
* Backward warp (the original DeepStrain's semantics): ``warp(V_t, u)(X) = V_t(X + u(X))`` resamples frame t
  onto the reference (ED) grid, so ``u(X, t) = x(X, t) - X`` is the Lagrangian displacement of the material
  point at ED position ``X``.
* Linear interpolation is clamp-to-edge, reproducing ``tfa``/DeepStrain's ``dense_image_warp3d``: per axis,
  ``f = clip(floor(q), 0, n - 2)`` and ``a = clip(q - f, 0, 1)``. This equals
  ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` and gives a zero gradient with respect to ``q``
  for queries outside ``[0, n - 1]``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from deepstrain_jax.ops.grid import index_grid


def interpolate(volume, coords_vox, mode: str = "linear"):
    """Sample a channels-last volume at continuous voxel coordinates, clamp-to-edge.

    For ``mode="linear"`` and ``D`` spatial axes, with per-axis base index ``f_d`` and weight ``a_d`` as in
    the module docstring,

        V(q) = sum_{b in {0,1}^D} prod_d (a_d if b_d else 1 - a_d) * V[f + b].

    This is the continuous (piecewise multilinear) interpolant of the voxel values; it is differentiable in
    ``volume`` everywhere and in ``coords_vox`` away from integer coordinates. ``mode="nearest"`` picks the
    voxel ``clip(floor(q + 1/2), 0, n - 1)`` (ties round up) and carries no gradient to the coordinates; use
    it for label maps (any dtype).

    Args:
      volume: ``(*S, C)`` array, ``len(S) = D``.
      coords_vox: ``(..., D)`` continuous voxel indices (voxel centres at integers).
      mode: ``"linear"`` or ``"nearest"``.
    Returns:
      ``(..., C)`` samples, dtype of ``volume`` (linear mode promotes integers to float32).
    """
    volume = jnp.asarray(volume)
    coords_vox = jnp.asarray(coords_vox)
    spatial = volume.shape[:-1]
    ndim = len(spatial)
    if coords_vox.shape[-1] != ndim:
        raise ValueError(f"coords_vox has {coords_vox.shape[-1]} components for a {ndim}-D volume "
                         f"of shape {volume.shape} (expected (*spatial, C))")
    if mode == "nearest":
        idx = [jnp.clip(jnp.floor(jax.lax.stop_gradient(coords_vox[..., d]) + 0.5), 0, n - 1).astype(jnp.int32)
               for d, n in enumerate(spatial)]
        return volume[tuple(idx)]
    if mode != "linear":
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    if not jnp.issubdtype(volume.dtype, jnp.floating):
        volume = volume.astype(jnp.float32)
    coords_vox = coords_vox.astype(volume.dtype)
    base, alpha = [], []
    for d, n in enumerate(spatial):
        q = coords_vox[..., d]
        f = jnp.clip(jnp.floor(jax.lax.stop_gradient(q)), 0, max(n - 2, 0))
        if n > 1:
            a = q - f
            # Clamp outside [0, 1] with no gradient there; inside, including the end points, the gradient
            # is 1. (jnp.clip would halve it at the end points, i.e. at every integer coordinate; TF's
            # clip_by_value, used by the original, passes it whole.)
            a = jnp.where((a >= 0.0) & (a <= 1.0), a, jax.lax.stop_gradient(jnp.clip(a, 0.0, 1.0)))
        else:
            # A size-1 axis has nothing to interpolate between: weight 0 on the (clamped) second corner.
            a = jnp.zeros_like(q)
        base.append(f.astype(jnp.int32))
        alpha.append(a[..., None])
    out = 0.0
    for corner in itertools.product((0, 1), repeat=ndim):
        idx = tuple(jnp.minimum(base[d] + corner[d], spatial[d] - 1) for d in range(ndim))
        w = 1.0
        for d in range(ndim):
            w = w * (alpha[d] if corner[d] else 1.0 - alpha[d])
        out = out + w * volume[idx]
    return out


def warp(image, u_vox, mode: str = "linear"):
    """Backward-warp a batch of images: ``out[b](X) = image[b](X + u_vox[b](X))``.

    Args:
      image: ``(B, *S, C)``, 2 or 3 spatial axes, any channel count.
      u_vox: ``(B, *S, D)`` displacement in voxels, ``D = len(S)``; component ``d`` along array axis ``d``.
      mode: ``"linear"`` (bi/trilinear, clamp-to-edge, differentiable in ``image`` and ``u_vox``) or
        ``"nearest"`` (for labels; no gradient to ``u_vox``).
    Returns:
      ``(B, *S, C)`` warped images.
    """
    image = jnp.asarray(image)
    u_vox = jnp.asarray(u_vox)
    spatial = image.shape[1:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(f"image must be (B, X, Y, C) or (B, X, Y, Z, C), got shape {image.shape}")
    if u_vox.shape != (image.shape[0], *spatial, len(spatial)):
        raise ValueError(f"u_vox must have shape {(image.shape[0], *spatial, len(spatial))} for an image of "
                         f"shape {image.shape}, got {u_vox.shape}")
    grid = index_grid(spatial, dtype=u_vox.dtype if jnp.issubdtype(u_vox.dtype, jnp.floating) else jnp.float32)
    return jax.vmap(lambda v, u: interpolate(v, grid + u, mode))(image, u_vox)
