"""Classical motion-estimation baselines for CarMEN, with one signature::

    estimate_motion(image_ed, image_t, spacing_mm, **options) -> u_vox

``image_*`` are ``(X, Y, Z)`` float arrays on one grid (ED = fixed, frame t = moving) and ``u_vox`` is the
Lagrangian displacement ED -> t, ``(X, Y, Z, 3)`` in voxels of that grid, component ``c`` along array axis ``c``,
in CarMEN's convention: ``warp(image_t, u_vox)(X) = image_t(X + u_vox(X)) ≈ image_ed(X)``
(:func:`deepstrain_jax.ops.warp.warp`). ``u_mm = u_vox * spacing_mm``.

Methods (``METHODS``):

* ``demons``: Thirion's demons with symmetric forces and fluid + diffusion Gaussian regularisation,
  multi-resolution, in-plane per slice by default (:mod:`.demons`, numpy/scipy).
* ``optical_flow``: Horn-Schunck with warping, coarse to fine, per slice (:mod:`.optical_flow`, numpy/scipy).
* ``simpleitk_bspline``: SimpleITK B-spline FFD registration; ``simpleitk_demons``: ITK's fast symmetric
  forces demons filter (:mod:`.sitk_registration`; needs ``pip install -e ".[baselines]"``).
* ``zero``: ``u = 0`` (the no-motion floor every method must beat).

Known limit of the per-slice (``"2d"``) methods: they estimate in-plane motion only, and where the myocardium
leaves a thick basal slice by ES (long-axis shortening) that slice's images no longer match; the through-plane
part of the end-point error is reported apart for this reason.

:func:`eval.baselines.run.run_baseline_on_case` scores a method on a phantom against its exact truth;
``python -m eval.baselines`` prints a table on held-out phantoms.
"""

from __future__ import annotations

import numpy as np

from eval.baselines.demons import estimate_motion_demons
from eval.baselines.multiscale import check_pair
from eval.baselines.optical_flow import estimate_motion_optical_flow
from eval.baselines.sitk_registration import (
    estimate_motion_simpleitk_bspline,
    estimate_motion_simpleitk_demons,
    import_simpleitk,
)


def estimate_motion_zero(image_ed, image_t, spacing_mm) -> np.ndarray:
    """The zero field ``(X, Y, Z, 3)``: the error of assuming no motion."""
    fixed, _, _ = check_pair(image_ed, image_t, spacing_mm)
    return np.zeros((*fixed.shape, 3))


METHODS = {
    "demons": estimate_motion_demons,
    "optical_flow": estimate_motion_optical_flow,
    "simpleitk_bspline": estimate_motion_simpleitk_bspline,
    "simpleitk_demons": estimate_motion_simpleitk_demons,
    "zero": estimate_motion_zero,
}

from eval.baselines.run import markdown_table, run_baseline_on_case  # noqa: E402 (run.py reads METHODS)

__all__ = ["METHODS", "estimate_motion_demons", "estimate_motion_optical_flow", "estimate_motion_simpleitk_bspline",
           "estimate_motion_simpleitk_demons", "estimate_motion_zero", "import_simpleitk", "markdown_table",
           "run_baseline_on_case"]
