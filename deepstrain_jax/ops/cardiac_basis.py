"""The local radial / circumferential / longitudinal (r, c, l) basis of the left ventricle.

Conventions (see ``ops/grid.py``): positions are in the **array frame** in mm, ``X = index * spacing_mm``, origin at
the centre of voxel 0; axis 2 is the slice axis of a short-axis stack. The basis is built at the **reference (ED)
positions** of the voxel centres, so it is fixed for all frames of a Lagrangian displacement ``u(X, t)``.

* ``l_hat``: unit direction of the LV centre line, pointing from **base to apex**.
* ``r_hat``: unit vector from the centre line to the point, perpendicular to ``l_hat`` (outward).
* ``c_hat = l_hat x r_hat``: so ``(r_hat, c_hat, l_hat)`` is a right-handed orthonormal frame. Viewed from the apex
  (looking along ``-l_hat``, towards the base) ``c_hat`` turns **counter-clockwise**; a rotation by a positive angle
  about ``l_hat`` (right-hand rule) moves material along ``+c_hat``. With this choice the physiological apical
  rotation (counter-clockwise viewed from the apex) is positive and a left-ventricular twist that grows towards the
  apex gives a positive circumferential-longitudinal shear ``E_cl``.

Strain components are tensor components, ``E_ab = a_hat^T E b_hat`` (the shears are not engineering shears, which
are twice as large).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from deepstrain_jax.ops.grid import array_grid_mm


class LVCentreLine(NamedTuple):
    """A fitted LV long axis ``c(s) = origin_mm + s * direction`` in array-frame mm."""

    origin_mm: np.ndarray  # (3,) area-weighted mean of the slice centroids (a point on the line)
    direction: np.ndarray  # (3,) unit vector l_hat, base -> apex
    slice_centroids_mm: np.ndarray  # (K, 3) centroid of each used slice
    used_slices: np.ndarray  # (K,) int, the slice indices (axis 2) that contributed


class CardiacBasis(NamedTuple):
    """Unit vectors of the local cardiac frame at every voxel centre, each ``(*shape, 3)`` (array-frame mm)."""

    r_hat: jnp.ndarray
    c_hat: jnp.ndarray
    l_hat: jnp.ndarray


class StrainComponents(NamedTuple):
    """Components of a strain tensor in the (r, c, l) basis; ``rc = r_hat^T E c_hat`` etc. (tensor shears)."""

    rr: jnp.ndarray
    cc: jnp.ndarray
    ll: jnp.ndarray
    rc: jnp.ndarray
    rl: jnp.ndarray
    cl: jnp.ndarray


def _checked_spacing(spacing_mm) -> np.ndarray:
    s = np.asarray(spacing_mm, dtype=np.float64)
    if s.shape != (3,):
        raise ValueError(f"spacing_mm must have 3 entries, got shape {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"spacing_mm must be finite and positive, got {s.tolist()}")
    return s


def lv_centre_line(labels_ed, spacing_mm, *, base_first: bool = True, cavity_label: int = 3, myo_label: int = 2,
                   min_cavity_area_mm2: float = 20.0) -> LVCentreLine:
    """Fit the LV long axis to the per-slice LV centroids of an ED label map.

    For every slice ``k`` (array axis 2) the in-plane centroid ``c_k`` (mm, at ``z = k * spacing_mm[2]``) is the
    centroid of the LV cavity (``cavity_label``) if its area is at least ``min_cavity_area_mm2``; otherwise (apex,
    base, or a missing cavity) it is the centroid of the filled epicardium: cavity and myocardium (``myo_label``) with
    holes filled in-plane. Slices with neither label are skipped. With the area ``w_k`` (mm^2) of the region used,

        c_0 = sum_k w_k c_k / sum_k w_k,    M = sum_k w_k (c_k - c_0)(c_k - c_0)^T,

    and ``l_hat`` is the eigenvector of ``M`` with the largest eigenvalue (area-weighted PCA), signed to point from
    base to apex: towards increasing slice index when ``base_first`` (slice 0 is the base), towards decreasing slice
    index otherwise. With one usable slice the line passes through its centroid along the slice normal.

    Uses numpy (the number of usable slices is data-dependent); not jittable.

    Args:
      labels_ed: ``(X, Y, Z)`` integer label map at ED (ACDC labels).
      spacing_mm: ``(3,)`` voxel size in mm.
      base_first: whether slice 0 is the base.
      cavity_label: label of the LV blood pool.
      myo_label: label of the LV myocardium.
      min_cavity_area_mm2: smallest cavity area trusted for a centroid.
    Returns:
      :class:`LVCentreLine` (float64 numpy arrays).
    Raises:
      ValueError: wrong shapes, bad spacing, no slice containing the LV, or a fitted axis lying in the slice plane
        (its base-to-apex sign is then undefined).
    """
    labels = np.asarray(labels_ed)
    if labels.ndim != 3:
        raise ValueError(f"labels_ed must be (X, Y, Z), got shape {labels.shape}")
    spacing = _checked_spacing(spacing_mm)
    pixel_area_mm2 = spacing[0] * spacing[1]
    centroids, weights, used = [], [], []
    for k in range(labels.shape[2]):
        cavity = labels[:, :, k] == cavity_label
        region = cavity
        if cavity.sum() * pixel_area_mm2 < min_cavity_area_mm2:
            region = ndimage.binary_fill_holes(cavity | (labels[:, :, k] == myo_label))
        n = int(region.sum())
        if n == 0:
            continue
        ij = np.argwhere(region).mean(axis=0)
        centroids.append([ij[0] * spacing[0], ij[1] * spacing[1], k * spacing[2]])
        weights.append(n * pixel_area_mm2)
        used.append(k)
    if not used:
        raise ValueError(f"labels_ed has no slice containing the LV (labels {cavity_label} or {myo_label})")
    centroids = np.asarray(centroids, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    sign = 1.0 if base_first else -1.0
    if len(used) == 1:
        return LVCentreLine(centroids[0].copy(), np.array([0.0, 0.0, sign]), centroids, np.asarray(used))
    origin = weights @ centroids / weights.sum()
    d = centroids - origin
    moment = (weights[:, None] * d).T @ d
    direction = np.linalg.eigh(moment)[1][:, -1]
    if abs(direction[2]) < 1e-9:
        raise ValueError("the fitted LV axis lies in the slice plane; cannot tell base from apex "
                         "(check the segmentation)")
    direction = direction * sign * np.sign(direction[2])
    return LVCentreLine(origin, direction / np.linalg.norm(direction), centroids, np.asarray(used))


def cardiac_basis(shape: Sequence[int], spacing_mm, origin_mm, direction, dtype=jnp.float32) -> CardiacBasis:
    """Local (r, c, l) unit vectors at every voxel centre, from a long axis through ``origin_mm`` along ``direction``.

    At the reference position ``X`` (mm) of each voxel centre, with ``l = direction / |direction|`` and
    ``c0 = origin_mm``:

        p = c0 + ((X - c0) . l) l                 (foot of X on the axis)
        r_hat = (X - p) / |X - p|                 (component of X - c0 orthogonal to l, normalised)
        c_hat = l x r_hat,    l_hat = l.

    ``(r_hat, c_hat, l_hat)`` is right-handed and orthonormal; with ``l`` pointing base -> apex, ``c_hat`` turns
    counter-clockwise viewed from the apex (module docstring). Points on the axis (``|X - p| < 1e-4 * min(spacing)``
    mm) have no radial direction; they get the fixed ``r_hat`` = the array axis least aligned with ``l``, made
    orthogonal to ``l`` and normalised, so the frame stays orthonormal there.

    Jittable with ``shape`` static; ``spacing_mm``, ``origin_mm`` and ``direction`` may be traced.

    Args:
      shape: ``(X, Y, Z)`` grid size.
      spacing_mm: ``(3,)`` voxel size in mm.
      origin_mm: ``(3,)`` a point on the axis, array-frame mm (e.g. :func:`lv_centre_line`'s ``origin_mm``).
      direction: ``(3,)`` axis direction, base -> apex (normalised here).
      dtype: floating dtype of the result.
    Returns:
      :class:`CardiacBasis` of three ``(X, Y, Z, 3)`` arrays.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (X, Y, Z), got {tuple(shape)}")
    spacing = jnp.asarray(spacing_mm, dtype=dtype)
    c0 = jnp.asarray(origin_mm, dtype=dtype)
    l_vec = jnp.asarray(direction, dtype=dtype)
    if spacing.shape != (3,) or c0.shape != (3,) or l_vec.shape != (3,):
        raise ValueError(f"spacing_mm, origin_mm and direction must each have 3 entries, got shapes "
                         f"{spacing.shape}, {c0.shape}, {l_vec.shape}")
    l_hat = l_vec / jnp.linalg.norm(l_vec)
    d = array_grid_mm(shape, spacing, dtype) - c0
    d_perp = d - jnp.sum(d * l_hat, axis=-1, keepdims=True) * l_hat
    dist = jnp.linalg.norm(d_perp, axis=-1, keepdims=True)
    on_axis = dist < 1e-4 * jnp.min(spacing)
    fallback = jnp.eye(3, dtype=dtype)[jnp.argmin(jnp.abs(l_hat))]
    fallback = fallback - jnp.dot(fallback, l_hat) * l_hat
    fallback = fallback / jnp.linalg.norm(fallback)
    r_hat = jnp.where(on_axis, fallback, d_perp / jnp.where(on_axis, 1.0, dist))
    c_hat = jnp.cross(jnp.broadcast_to(l_hat, r_hat.shape), r_hat)
    return CardiacBasis(r_hat, c_hat, jnp.broadcast_to(l_hat, r_hat.shape))


def project_strain(E, basis: CardiacBasis) -> StrainComponents:
    """Components of a strain tensor field in the local cardiac basis.

        E_ab = a_hat^T E b_hat,   (a, b) in {(r,r), (c,c), (l,l), (r,c), (r,l), (c,l)}.

    ``E`` is symmetric (Green-Lagrange), so ``E_cr = E_rc`` etc. The shears are tensor components (half the
    engineering shear angle for small strain); the signs of ``rc`` and ``cl`` follow the handedness in the module
    docstring, ``rr``, ``cc``, ``ll`` do not depend on it.

    Args:
      E: ``(..., X, Y, Z, 3, 3)`` strain tensors at the reference positions (leading axes, e.g. time, broadcast).
      basis: :class:`CardiacBasis` with ``(X, Y, Z, 3)`` arrays.
    Returns:
      :class:`StrainComponents`, each ``(..., X, Y, Z)``.
    """
    E = jnp.asarray(E)
    r_hat, c_hat, l_hat = (jnp.asarray(v) for v in basis)
    if E.shape[-2:] != (3, 3) or E.shape[-5:-2] != r_hat.shape[:-1]:
        raise ValueError(f"E must be (..., X, Y, Z, 3, 3) on the basis grid {r_hat.shape[:-1]}, got {E.shape}")

    def component(a, b):
        return jnp.sum(a[..., :, None] * E * b[..., None, :], axis=(-2, -1))

    return StrainComponents(rr=component(r_hat, r_hat), cc=component(c_hat, c_hat), ll=component(l_hat, l_hat),
                            rc=component(r_hat, c_hat), rl=component(r_hat, l_hat), cl=component(c_hat, l_hat))
