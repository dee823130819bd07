"""Shared numpy pieces of the classical baselines: argument checks, intensity scaling, backward warp, pyramid.

Conventions (those of :mod:`deepstrain_jax.ops.warp`, in numpy/scipy):

* An image is ``(X, Y, Z)`` float64; axes 0, 1 in-plane, axis 2 the slice axis.
* ``axes`` are the array axes the motion is estimated along: ``(0, 1)`` for in-plane motion slice by slice
  (every operator here acts only along ``axes``, so slices are independent) or ``(0, 1, 2)`` for 3D.
* A displacement ``u`` is ``(X, Y, Z, 3)`` in voxels of its grid, component ``c`` along array axis ``c`` (zero
  along axes not in ``axes``), Lagrangian ED -> t: ``warp(m, u)(X) = m(X + u(X))`` with linear interpolation
  clamped to the edge (``scipy.ndimage.map_coordinates(order=1, mode="nearest")``, equal to the package warp).
* Pyramid level ``l`` of ``L`` (0 = coarsest) keeps every ``f``-th voxel along the in-plane axes,
  ``f = 2 ** (L - 1 - l)``, after a Gaussian anti-alias blur of ``sigma = f / 2`` voxels. Coarse index ``i``
  sits at fine index ``i * f``. Slices are never subsampled (they are already thick).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

IN_PLANE = (0, 1)
VOLUME = (0, 1, 2)


def check_pair(image_ed, image_t, spacing_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fixed, moving, spacing)`` as float64 after checking shapes ``(X, Y, Z)`` and finiteness."""
    f = np.asarray(image_ed, dtype=np.float64)
    m = np.asarray(image_t, dtype=np.float64)
    if f.ndim != 3 or f.shape != m.shape:
        raise ValueError(f"image_ed and image_t must be (X, Y, Z) arrays of one shape, got {f.shape} and {m.shape}")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(m))):
        raise ValueError("image_ed or image_t contains NaN or inf")
    s = np.asarray(spacing_mm, dtype=np.float64)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing_mm must be 3 positive values (mm per array axis), got {spacing_mm!r}")
    return f, m, s


def check_mode(mode: str) -> tuple[int, ...]:
    """``"2d"`` (in-plane, slice by slice) -> ``(0, 1)``; ``"3d"`` -> ``(0, 1, 2)``."""
    if mode == "2d":
        return IN_PLANE
    if mode == "3d":
        return VOLUME
    raise ValueError(f"mode must be '2d' (in-plane, per slice) or '3d', got {mode!r}")


def normalise(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide both images by one scale, the 99th percentile of ``|fixed|`` (1 if that is 0).

    One common scale keeps the intensity relation between the frames and makes regularisation weights unitless.
    """
    scale = float(np.percentile(np.abs(fixed), 99))
    scale = scale if scale > 0 else 1.0
    return fixed / scale, moving / scale


def blur(image: np.ndarray, sigma_vox, axes) -> np.ndarray:
    """Gaussian blur along ``axes`` only (``sigma_vox`` a number or one value per array axis)."""
    sigma = np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (image.ndim,)).copy()
    sigma[[a for a in range(image.ndim) if a not in axes]] = 0.0
    if not np.any(sigma > 0):
        return image
    return ndimage.gaussian_filter(image, sigma, mode="nearest")


def warp(image: np.ndarray, u_vox: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Backward warp ``out(X) = image(X + u(X))``, linear, clamp-to-edge; ``grid`` = ``np.indices`` (reusable)."""
    if grid is None:
        grid = np.indices(image.shape, dtype=np.float64)
    return ndimage.map_coordinates(image, grid + np.moveaxis(u_vox, -1, 0), order=1, mode="nearest")


def inside(u_vox: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` mask of voxels whose sample point ``X + u(X)`` lies inside the image.

    Outside, the clamped warp is flat: its data term carries no information (and, with the fixed-image gradient
    in symmetric forces, would push the sample point further out), so the solvers zero it there.
    """
    upper = np.asarray(grid.shape[1:], dtype=np.float64)[:, None, None, None] - 1
    q = grid + np.moveaxis(u_vox, -1, 0)
    return np.all((q >= 0) & (q <= upper), axis=0)


def gradient(image: np.ndarray, axes) -> np.ndarray:
    """``(X, Y, Z, 3)`` central-difference gradient in intensity per voxel along ``axes`` (0 elsewhere)."""
    g = np.zeros((*image.shape, 3))
    for a in axes:
        if image.shape[a] > 1:
            g[..., a] = np.gradient(image, axis=a)
    return g


def smooth_field(u: np.ndarray, sigma_vox, axes) -> np.ndarray:
    """Gaussian-smooth each component of ``u`` along ``axes``; components outside ``axes`` stay 0."""
    out = np.zeros_like(u)
    for c in axes:
        out[..., c] = blur(u[..., c], sigma_vox, axes)
    return out


def level_factors(shape, n_levels: int, min_size: int = 8) -> list[tuple[int, int, int]]:
    """Per-axis subsampling factors, coarsest first, ending at ``(1, 1, 1)``.

    Levels whose in-plane size would fall below ``min_size`` voxels are dropped.
    """
    if n_levels < 1:
        raise ValueError(f"levels must be >= 1, got {n_levels}")
    out = []
    for level in range(n_levels - 1, -1, -1):
        f = 2 ** level
        if f == 1 or min(shape[0], shape[1]) // f >= min_size:
            out.append((f, f, 1))
    return out


def downsample(image: np.ndarray, factors) -> np.ndarray:
    """Blur with ``sigma = f / 2`` and keep every ``f``-th voxel per axis (identity for factors of 1)."""
    sigma = [0.5 * f if f > 1 else 0.0 for f in factors]
    if any(s > 0 for s in sigma):
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    return image[::factors[0], ::factors[1], ::factors[2]]


def upsample_field(u: np.ndarray, ratio, shape) -> np.ndarray:
    """Carry a displacement to a finer grid: ``u_fine[..., c](x) = ratio[c] * u[..., c](x / ratio)``.

    Args:
      u: ``(x, y, z, 3)`` displacement in coarse voxels.
      ratio: per-axis coarse/fine voxel-size ratio (integers >= 1).
      shape: the fine ``(X, Y, Z)``.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    coords = np.indices(shape, dtype=np.float64) / ratio[:, None, None, None]
    out = np.empty((*shape, 3))
    for c in range(3):
        if np.any(u[..., c]):
            out[..., c] = ratio[c] * ndimage.map_coordinates(u[..., c], coords, order=1, mode="nearest")
        else:
            out[..., c] = 0.0
    return out


def coarse_to_fine(fixed: np.ndarray, moving: np.ndarray, n_levels: int, solve_level_fn) -> np.ndarray:
    """Run a per-level solver coarse -> fine and return the finest displacement ``(X, Y, Z, 3)`` in voxels.

    ``u = solve_level_fn(level, fixed_l, moving_l, u)`` at each level (``level`` 0 = coarsest, images from
    :func:`downsample`); ``u`` starts at 0 on the coarsest grid and is carried to the next one by
    :func:`upsample_field`.
    """
    u = None
    previous = None
    for level, factors in enumerate(level_factors(fixed.shape, n_levels)):
        f_l, m_l = downsample(fixed, factors), downsample(moving, factors)
        if u is None:
            u = np.zeros((*f_l.shape, 3))
        else:
            u = upsample_field(u, np.asarray(previous) // np.asarray(factors), f_l.shape)
        u = solve_level_fn(level, f_l, m_l, u)
        previous = factors
    return u
