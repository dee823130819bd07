"""Dense Horn-Schunck optical flow with warping, coarse to fine, slice by slice, in numpy/scipy.

Fixed image ``F`` = ED, moving ``M`` = frame t; the flow ``w`` (voxels, in-plane) makes ``M(X + w(X)) ≈ F(X)``.
At each level and warp, with ``u`` the current flow, ``W = M(X + u)``, ``I_t = W - F`` and the averaged
gradient ``g = (grad F + grad W) / 2``, the linearised Horn-Schunck energy of the total flow ``w = u + d``

    E(w) = sum_X (I_t + g . (w - u))^2 + alpha^2 sum_X (|grad w_0|^2 + |grad w_1|^2)

is minimised by the Jacobi iteration of its Euler-Lagrange equations (Horn & Schunck, Artif Intell 1981)

    w_bar = A * w,    w <- w_bar - g (I_t + g . (w_bar - u)) / (alpha^2 + |g|^2),

``A`` the 3x3 Horn-Schunck neighbour average (1/6 edge, 1/12 corner neighbours) within each slice. Warping
and the coarse-to-fine pyramid (Brox et al., ECCV 2004) handle displacements beyond a voxel; a median filter of
the flow after each warp removes outliers (Sun, Roth & Black, CVPR 2010). Sample points that leave the image
carry no data term (the clamped warp is flat there), and each warp's increment is capped. Intensities are
normalised by one common scale, so ``alpha`` is in normalised intensity per voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from eval.baselines import multiscale as ms

_HS_KERNEL = (np.array([[1.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 2.0, 1.0]]) / 12.0)[..., None]  # (3, 3, 1)


def _hs_level(fixed, moving, u, *, alpha, warps, iterations, median_size, max_step):
    grid = np.indices(fixed.shape, dtype=np.float64)
    grad_f = ms.gradient(fixed, ms.IN_PLANE)
    for _ in range(warps):
        warped = ms.warp(moving, u, grid)
        valid = ms.inside(u, grid)[..., None]
        g = np.where(valid, 0.5 * (grad_f + ms.gradient(warped, ms.IN_PLANE)), 0.0)[..., :2]
        it = np.where(valid[..., 0], warped - fixed, 0.0)
        w = u[..., :2].copy()
        denom = alpha * alpha + np.sum(g * g, axis=-1)
        for _ in range(iterations):
            w_bar = np.stack([ndimage.convolve(w[..., c], _HS_KERNEL, mode="nearest") for c in range(2)], -1)
            t = (it + np.sum(g * (w_bar - u[..., :2]), axis=-1)) / denom
            w = w_bar - g * t[..., None]
        if max_step > 0:  # the linearisation holds for small increments: cap each warp's |w - u|
            d = w - u[..., :2]
            norm = np.linalg.norm(d, axis=-1, keepdims=True)
            w = u[..., :2] + d * np.minimum(1.0, max_step / np.maximum(norm, 1e-12))
        if median_size > 1:
            w = np.stack([ndimage.median_filter(w[..., c], size=(median_size, median_size, 1), mode="nearest")
                          for c in range(2)], -1)
        u = np.concatenate([w, np.zeros_like(w[..., :1])], axis=-1)
    return u


def estimate_motion_optical_flow(image_ed, image_t, spacing_mm, *, levels: int = 3, alpha: float = 0.3,
                                 warps: int = 3, iterations: int = 60, median_size: int = 5,
                                 max_step: float = 0.5, presmooth: float = 1.0) -> np.ndarray:
    """Horn-Schunck optical flow of frame t onto ED, per slice: the in-plane Lagrangian displacement in voxels.

    Args:
      image_ed, image_t: ``(X, Y, Z)`` images on one grid.
      spacing_mm: ``(3,)`` voxel size in mm (checked; the flow is estimated in in-plane voxels).
      levels: pyramid levels (factor 2 in-plane per level).
      alpha: smoothness weight (normalised intensity per voxel).
      warps: re-linearisations per level; iterations: Jacobi iterations per warp.
      median_size: in-plane median filter of the flow after each warp (1 disables it).
      max_step: largest flow increment per warp, voxels of the level (0 disables the cap). The cap keeps the
        flow bounded where brightness constancy fails outright (a basal slice the myocardium has left at ES).
      presmooth: Gaussian sigma (voxels, in-plane) applied to both images first.
    Returns:
      ``(X, Y, Z, 3)`` float64 ``u_vox`` with ``u[..., 2] = 0`` and ``image_t(X + u(X)) ≈ image_ed(X)``.
      Deterministic.
    """
    fixed, moving, _ = ms.check_pair(image_ed, image_t, spacing_mm)
    if alpha <= 0 or warps < 1 or iterations < 1 or median_size < 1 or presmooth < 0 or max_step < 0:
        raise ValueError("alpha must be > 0, warps, iterations and median_size >= 1, presmooth and max_step >= 0")
    fixed, moving = ms.normalise(fixed, moving)
    fixed = ms.blur(fixed, presmooth, ms.IN_PLANE)
    moving = ms.blur(moving, presmooth, ms.IN_PLANE)

    def solve_level(level, f_l, m_l, u):
        del level
        return _hs_level(f_l, m_l, u, alpha=alpha, warps=warps, iterations=iterations, median_size=median_size,
                         max_step=max_step)

    return ms.coarse_to_fine(fixed, moving, levels, solve_level)
