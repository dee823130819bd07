"""Validation metrics: segmentation overlap and surface distance, motion error, agreement, reliability.

Conventions shared by every function here :

* These run on the host with numpy/scipy (data-dependent shapes: masks, surfaces, cohorts); inputs may be
  numpy or JAX arrays and are converted with ``np.asarray``. Results are float64 numpy values.
  :func:`dice_jnp` is the one jit-compatible form.
* Label maps use the ACDC convention: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity. Per-label
  results come back as arrays aligned with the ``labels`` argument, default ``(1, 2, 3)``.
* Distances are in millimetres; ``spacing_mm`` has one positive entry per array axis. Displacements are
  Lagrangian on the ED grid, ``u_mm[..., c]`` along array axis ``c``; positions are in the array frame of
  :mod:`deepstrain_jax.ops.grid` (``X_mm = index * spacing_mm``).
* Standard deviations are sample SDs (``ddof=1``) throughout; percentiles use numpy's default linear
  interpolation (Hyndman & Fan type 7).
* Bad arguments (shape mismatch, empty mask, NaN, non-positive spacing) raise ``ValueError`` naming the
  problem.

Submodules: :mod:`.segmentation` (Dice, Hausdorff, HD95, ASSD), :mod:`.motion` (dense and landmark EPE),
:mod:`.agreement` (Bland-Altman, Pearson, Lin's CCC, repeatability coefficient, CoV, aRC),
:mod:`.reliability` (ICC after McGraw & Wong 1996).
"""

from __future__ import annotations

from deepstrain_jax.metrics.agreement import (
    BlandAltman,
    Repeatability,
    absolute_relative_change,
    bland_altman,
    coefficient_of_variation,
    lin_ccc,
    pearson_r,
    repeatability_coefficient,
)
from deepstrain_jax.metrics.motion import (
    EPEComponents,
    ErrorSummary,
    dense_epe,
    epe_components,
    landmark_epe,
    propagate_labels,
)
from deepstrain_jax.metrics.reliability import ICCResult, icc
from deepstrain_jax.metrics.segmentation import (
    SurfaceMetrics,
    assd,
    dice,
    dice_jnp,
    hausdorff_distance,
    hausdorff_distance_95,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "BlandAltman",
    "EPEComponents",
    "ErrorSummary",
    "ICCResult",
    "Repeatability",
    "SurfaceMetrics",
    "absolute_relative_change",
    "assd",
    "bland_altman",
    "coefficient_of_variation",
    "dense_epe",
    "dice",
    "dice_jnp",
    "epe_components",
    "hausdorff_distance",
    "hausdorff_distance_95",
    "icc",
    "landmark_epe",
    "lin_ccc",
    "pearson_r",
    "propagate_labels",
    "repeatability_coefficient",
    "surface_distances",
    "surface_metrics",
]
