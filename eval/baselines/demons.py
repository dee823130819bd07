"""Thirion's demons with fluid and diffusion Gaussian regularisation, multi-resolution, in numpy/scipy.

Fixed image ``F`` = ED, moving image ``M`` = frame t; the result ``u`` (voxels) makes ``M(X + u(X)) ≈ F(X)``.
Each iteration (Thirion, Med Image Anal 1998; "fast" symmetric forces after Vercauteren et al., NeuroImage
2009, without the diffeomorphic exponential):

    W = M(X + u),   d = W - F,   g = (grad F + grad W) / 2   (symmetric forces; or grad F alone)
    du = - d g / (|g|^2 + d^2)           (0 where the denominator vanishes; |du| <= 1/2 voxel)
    du <- G_fluid * du,   clipped to |du| <= max_step
    u  <- G_diffusion * (u + du)

in voxel units of the current level (intensities normalised by one common scale, so ``d`` and ``g`` are
unitless and the normaliser ``K = 1`` of ITK's demons in voxel units applies). ``G_s`` is a Gaussian of
``sigma`` voxels in-plane; in 3D mode its through-plane sigma is the same length in mm at the finest level
(``sigma * spacing_xy / spacing_z`` slices).
"""

from __future__ import annotations

import numpy as np

from eval.baselines import multiscale as ms


def _demons_level(fixed, moving, u, *, axes, iterations, sigma_fluid, sigma_diffusion, max_step, forces):
    grid = np.indices(fixed.shape, dtype=np.float64)
    grad_f = ms.gradient(fixed, axes)
    for _ in range(iterations):
        warped = ms.warp(moving, u, grid)
        valid = ms.inside(u, grid)
        diff = np.where(valid, warped - fixed, 0.0)
        g = 0.5 * (grad_f + ms.gradient(warped, axes)) if forces == "symmetric" else grad_f
        denom = np.sum(g * g, axis=-1) + diff * diff
        scale = np.divide(-diff, denom, out=np.zeros_like(diff), where=denom > 1e-12)
        du = ms.smooth_field(scale[..., None] * g, sigma_fluid, axes)
        norm = np.linalg.norm(du, axis=-1, keepdims=True)
        du *= np.minimum(1.0, max_step / np.maximum(norm, 1e-12))
        u = ms.smooth_field(u + du, sigma_diffusion, axes)
    return u


def estimate_motion_demons(image_ed, image_t, spacing_mm, *, mode: str = "2d", levels: int = 3,
                           iterations: int = 50, sigma_fluid: float = 1.0, sigma_diffusion: float = 1.5,
                           max_step: float = 1.0, forces: str = "symmetric", presmooth: float = 0.5) -> np.ndarray:
    """Demons registration of frame t onto ED: the Lagrangian displacement ED -> t in voxels.

    Args:
      image_ed, image_t: ``(X, Y, Z)`` images on one grid (fixed and moving).
      spacing_mm: ``(3,)`` voxel size in mm (sets the through-plane smoothing in 3D mode).
      mode: ``"2d"`` (default): in-plane motion slice by slice, ``u[..., 2] = 0`` (slices are thick);
        ``"3d"``: full 3D forces and smoothing.
      levels: pyramid levels (factor 2 in-plane per level).
      iterations: demons iterations per level.
      sigma_fluid, sigma_diffusion: Gaussian sigmas in in-plane voxels of each level for the update (fluid)
        and the accumulated field (diffusion).
      max_step: largest update per iteration, voxels.
      forces: ``"symmetric"`` (mean of the fixed and warped-moving gradients) or ``"fixed"`` (Thirion's).
      presmooth: Gaussian sigma (voxels, in-plane) applied to both images first, against noise.
    Returns:
      ``(X, Y, Z, 3)`` float64 ``u_vox`` with ``image_t(X + u(X)) ≈ image_ed(X)``. Deterministic.
    """
    fixed, moving, spacing = ms.check_pair(image_ed, image_t, spacing_mm)
    axes = ms.check_mode(mode)
    if forces not in ("symmetric", "fixed"):
        raise ValueError(f"forces must be 'symmetric' or 'fixed', got {forces!r}")
    if iterations < 0 or max_step <= 0 or sigma_fluid < 0 or sigma_diffusion < 0 or presmooth < 0:
        raise ValueError("iterations, sigmas and presmooth must be >= 0 and max_step > 0")
    fixed, moving = ms.normalise(fixed, moving)
    fixed = ms.blur(fixed, presmooth, ms.IN_PLANE)
    moving = ms.blur(moving, presmooth, ms.IN_PLANE)
    # Through-plane sigma: the same length in mm as in-plane at full resolution (used in 3D mode only).
    through = spacing[0] / spacing[2]
    fluid = (sigma_fluid, sigma_fluid, sigma_fluid * through)
    diffusion = (sigma_diffusion, sigma_diffusion, sigma_diffusion * through)

    def solve_level(level, f_l, m_l, u):
        del level
        return _demons_level(f_l, m_l, u, axes=axes, iterations=iterations, sigma_fluid=fluid,
                             sigma_diffusion=diffusion, max_step=max_step, forces=forces)

    return ms.coarse_to_fine(fixed, moving, levels, solve_level)
