"""Quality control of a predicted motion: folding, volume change and cycle closure (pure numpy/JAX).

* **Folding**: the deformation ``x = X + u(X)`` is locally invertible where ``det F > 0``, ``F = I + du/dX``
  (mm/mm, :func:`deepstrain_jax.ops.strain.displacement_gradient`). The fraction of myocardial voxels with
  ``det F <= 0`` over all frames is the folded fraction; a physically plausible motion has none.
* **Volume change**: ``det F`` is the local volume ratio; myocardium is nearly incompressible, so its
  distribution (min, 1st percentile, median, 99th percentile, max) over the ED myocardium and all frames should
  sit near 1 (cine MRI and through-plane blurring allow some spread).
* **Cycle closure**: with ``u_f`` the motion ED -> ES (on the ED grid) and ``u_b`` the motion ES -> ED (on the
  ES grid), a consistent estimate returns every point home: ``r(X) = u_f(X) + u_b(X + u_f(X))`` should be 0.
  Reported as the mean and 95th percentile of ``|r|`` in mm over the ED myocardium, and of its in-plane and
  through-plane (slice-axis) parts. It measures the inverse consistency of the motion network as well as the
  motion: the ES -> ED pair is the cine given the other way round. The through-plane part belongs to the
  through-plane motion behind longitudinal strain (experimental): a large through-plane closure with a small
  in-plane one says the network's through-plane motion is not self-consistent, while its in-plane motion (behind
  circumferential and radial strain) is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from deepstrain_jax.ops.strain import displacement_gradient


def jacobian_determinant(u_mm, spacing_mm) -> np.ndarray:
    """``det(I + du/dX)`` of a displacement sequence.

    Args:
      u_mm: ``(T, X, Y, Z, 3)`` displacement in mm (component c along axis c).
      spacing_mm: ``(3,)`` voxel size, mm.
    Returns:
      ``(T, X, Y, Z)`` float32.
    """
    spacing = jnp.asarray(spacing_mm, jnp.float32)
    return np.stack([np.asarray(_det_f(jnp.asarray(u, jnp.float32), spacing)) for u in np.asarray(u_mm)])


@jax.jit
def _det_f(u, spacing):
    # Module level, so the compiled code is reused across frames and subjects (one trace per grid shape).
    return jnp.linalg.det(jnp.eye(3, dtype=jnp.float32) + displacement_gradient(u, spacing))


def folding_statistics(det_f, mask) -> dict:
    """Folded fraction and ``det F`` percentiles over ``mask`` (every frame). See the module docstring.

    Args:
      det_f: ``(T, X, Y, Z)`` Jacobian determinants.
      mask: ``(X, Y, Z)`` bool, the ED myocardium.
    Returns:
      ``{"folded_fraction", "folded_fraction_worst_frame", "worst_frame", "det_f": {min, p01, median, p99,
      max}}`` (floats; NaN when the mask is empty).
    """
    det_f = np.asarray(det_f)
    mask = np.asarray(mask, bool)
    if not mask.any():
        nan = float("nan")
        return {"folded_fraction": nan, "folded_fraction_worst_frame": nan, "worst_frame": None,
                "det_f": {k: nan for k in ("min", "p01", "median", "p99", "max")}}
    values = det_f[:, mask].astype(np.float64)  # (T, M): only the masked voxels converted
    per_frame = (values <= 0).mean(axis=1)
    worst = int(np.argmax(per_frame))
    q = np.percentile(values, [0, 1, 50, 99, 100])
    return {"folded_fraction": float((values <= 0).mean()),
            "folded_fraction_worst_frame": float(per_frame[worst]), "worst_frame": worst,
            "det_f": dict(zip(("min", "p01", "median", "p99", "max"), (float(v) for v in q)))}


def cycle_closure_mm(u_forward_vox, u_backward_vox, spacing_mm, mask) -> dict:
    """``|u_f(X) + u_b(X + u_f(X))|`` in mm over ``mask``: mean and 95th percentile (module docstring), of the
    whole residual and of its in-plane (axes 0, 1) and through-plane (axis 2, the slice axis) parts.

    Args:
      u_forward_vox: ``(X, Y, Z, 3)`` ED -> ES displacement on the ED grid, voxels.
      u_backward_vox: ``(X, Y, Z, 3)`` ES -> ED displacement on the ES grid, voxels.
      spacing_mm: ``(3,)`` voxel size, mm.
      mask: ``(X, Y, Z)`` bool, where to evaluate (the ED myocardium).
    Returns:
      ``{"mean", "p95", "in_plane_mean", "in_plane_p95", "through_plane_mean", "through_plane_p95"}`` floats
      (NaN for an empty mask).
    """
    u_f = np.asarray(u_forward_vox, np.float32)
    u_b = np.asarray(u_backward_vox, np.float32)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return {k: float("nan") for k in CLOSURE_KEYS}
    # u_b sampled at X + u_f(X) for the masked X only: warp's rule (trilinear, clamp to the edge), here by
    # scipy at those points (no compiled program per subject's point count).
    forward = u_f[mask]                                                   # (M, 3)
    points = (np.argwhere(mask).astype(np.float32) + forward).T           # (3, M)
    back = np.stack([ndimage.map_coordinates(u_b[..., c], points, order=1, mode="nearest", output=np.float32)
                     for c in range(3)], axis=-1)
    r_mm = (forward + back) * np.asarray(spacing_mm, np.float32)
    out = {}
    for name, r in (("", np.linalg.norm(r_mm, axis=-1)), ("in_plane_", np.linalg.norm(r_mm[:, :2], axis=-1)),
                    ("through_plane_", np.abs(r_mm[:, 2]))):
        out[f"{name}mean"], out[f"{name}p95"] = float(r.mean()), float(np.percentile(r, 95))
    return out


CLOSURE_KEYS = ("mean", "p95", "in_plane_mean", "in_plane_p95", "through_plane_mean", "through_plane_p95")


MIN_SLICES = 5                 # fewer short-axis slices cannot hold a whole LV
APEX_CAVITY_FRACTION = 0.5     # an apical end slice with this share of the largest cavity: the stack stops short


def slice_coverage(labels_ed, *, base_first: bool) -> dict:
    """Does the stack cover the LV from base to apex? From the ED labels ``(X, Y, Z)`` on the native grid.

    Partial when the stack has fewer than :data:`MIN_SLICES` slices, or when the LV cavity on the apical end
    slice is still at least :data:`APEX_CAVITY_FRACTION` of its largest cross-section (the stack stops before
    the apex). The basal end is not judged: the most basal slices hold the outflow tract in most stacks.

    Returns:
      ``{"n_slices", "lv_slices", "apex_covered", "partial", "warnings"}``.
    """
    labels = np.asarray(labels_ed)
    n = int(labels.shape[2])
    cavity = (labels == 3).sum(axis=(0, 1)).astype(np.float64)
    lv = np.flatnonzero(((labels == 2) | (labels == 3)).any(axis=(0, 1)))
    apical_end = cavity[-1] if base_first else cavity[0]
    apex_covered = bool(cavity.max() > 0 and apical_end < APEX_CAVITY_FRACTION * cavity.max())
    warnings = []
    if n < MIN_SLICES:
        warnings.append(f"only {n} slice(s): the stack cannot cover the LV from base to apex; volumes, EF and mass "
                        "are partial")
    if not apex_covered:
        warnings.append("the LV cavity is still large on the apical end slice: the stack stops before the apex; "
                        "volumes, EF and mass are partial")
    return {"n_slices": n, "lv_slices": int(lv.size), "apex_covered": apex_covered,
            "partial": bool(warnings), "warnings": warnings}
