"""Green-Lagrange strain from Lagrangian displacement fields, in physical units.

Conventions:

* ``u_mm``: ``(..., *S, D)`` displacement in mm on the reference (ED) grid, ``S`` the ``D = 2`` or ``3`` spatial sizes,
  component ``i`` along array axis ``i``; leading axes (batch, time) are allowed where stated. A material point at
  reference position ``X`` moves to ``x = X + u(X)``.
* ``spacing_mm``: ``(D,)`` voxel size per array axis. Positions are array-frame mm, ``X = index * spacing_mm``.
* Displacement gradient ``G[..., i, j] = du_i / dX_j`` in mm/mm, deformation gradient ``F = I + G``.
* Green-Lagrange strain ``E = (F^T F - I) / 2 = (G + G^T + G^T G) / 2`` (referential, dimensionless); not the
  small-strain ``(G + G^T) / 2`` and not the Eulerian Almansi strain.
* Strain is never computed from voxel displacements, except in the parity path :mod:`deepstrain_jax.ops.strain_legacy`.

This module is the front door for strain: it also re-exports the cardiac basis (:mod:`.cardiac_basis`), strain rate
and indices (:mod:`.strain_rate`) and the legacy path (:mod:`.strain_legacy`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.ops.cardiac_basis import (
    CardiacBasis,
    LVCentreLine,
    StrainComponents,
    cardiac_basis,
    lv_centre_line,
    project_strain,
)
from deepstrain_jax.ops.grid import index_grid
from deepstrain_jax.ops.strain_legacy import LegacyStrain, LegacyStrainMaps, legacy_strain
from deepstrain_jax.ops.strain_rate import StrainIndices, strain_indices, strain_rate
from deepstrain_jax.ops.warp import interpolate

__all__ = [
    "displacement_gradient", "displacement_gradient_autodiff", "green_lagrange", "green_lagrange_from_gradient",
    "global_strain", "cardiac_strain", "cardiac_strain_lv_box", "CardiacStrain",
    "lv_centre_line", "LVCentreLine", "cardiac_basis", "CardiacBasis", "project_strain", "StrainComponents",
    "strain_rate", "strain_indices", "StrainIndices", "legacy_strain", "LegacyStrain", "LegacyStrainMaps",
]


def _spacing_vector(spacing_mm, ndim: int, dtype):
    """``spacing_mm`` as a ``(ndim,)`` array; values are checked when concrete (they may be traced under jit)."""
    try:
        concrete = np.asarray(spacing_mm, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        concrete = None
    if concrete is not None and not np.all(np.isfinite(concrete) & (concrete > 0)):
        raise ValueError(f"spacing_mm must be finite and positive, got {concrete.tolist()}")
    spacing = jnp.asarray(spacing_mm, dtype=dtype)
    if spacing.shape != (ndim,):
        raise ValueError(f"spacing_mm must have {ndim} entries for a {ndim}-D displacement, got shape {spacing.shape}")
    return spacing


def _float_field(u_mm):
    u = jnp.asarray(u_mm)
    if not jnp.issubdtype(u.dtype, jnp.floating):
        u = u.astype(jnp.float32)
    ndim = u.shape[-1] if u.ndim else 0
    if ndim not in (2, 3) or u.ndim < ndim + 1:
        raise ValueError(f"u_mm must be (..., X, Y, 2) or (..., X, Y, Z, 3), got shape {u.shape}")
    return u, ndim


def displacement_gradient(u_mm, spacing_mm):
    """Displacement gradient by finite differences in physical units.

        G[..., i, j] = du_i / dX_j   (mm/mm),

    with ``numpy.gradient`` semantics along each spatial axis ``j`` with step ``h_j = spacing_mm[j]``: second-order
    central differences ``(u[k+1] - u[k-1]) / (2 h_j)`` inside, first-order one-sided ``(u[1] - u[0]) / h_j`` and
    ``(u[n-1] - u[n-2]) / h_j`` at the two edges. A spatial axis of size 1 carries no information along it: its
    derivative is 0 (numpy would raise). Exact for displacement fields linear in ``X`` (rigid motions, homogeneous
    deformations) everywhere, and for quadratic fields at interior voxels.

    Jittable; differentiable in ``u_mm``.

    Args:
      u_mm: ``(..., X, Y, Z, 3)`` or ``(..., X, Y, 2)`` displacement in mm; leading axes are batch axes.
      spacing_mm: ``(D,)`` voxel size in mm.
    Returns:
      ``(..., *S, D, D)`` gradient ``G`` (float dtype of ``u_mm``; integers become float32).
    """
    u, ndim = _float_field(u_mm)
    spacing = _spacing_vector(spacing_mm, ndim, u.dtype)
    lead = u.ndim - 1 - ndim
    columns = []
    for j in range(ndim):
        axis = lead + j
        if u.shape[axis] == 1:
            columns.append(jnp.zeros_like(u))
        else:
            columns.append(jnp.gradient(u, axis=axis) / spacing[j])
    return jnp.stack(columns, axis=-1)


def displacement_gradient_autodiff(u_mm, spacing_mm, points_vox=None):
    """Displacement gradient by forward-mode autodiff (``jax.jacfwd``) of the continuous multilinear interpolant.

    The interpolant is ``U(X) = interpolate(u_mm, X / spacing_mm)`` (:func:`deepstrain_jax.ops.warp.interpolate`,
    clamp-to-edge, linear), a function of the position ``X`` in mm, and ``G = dU/dX`` in mm/mm.

    What the derivative of a multilinear interpolant is, along axis ``j`` at continuous index ``q`` with cell index
    ``f = clip(floor(q_j), 0, n_j - 2)``:

    * ``U`` is linear in ``q_j`` inside a cell, so ``dU/dX_j = (u[.., f+1, ..] - u[.., f, ..]) / h_j`` interpolated
      multilinearly in the other coordinates, constant along ``j`` across the cell. Away from integer ``q_j`` this is
      the exact derivative: a difference across the cell, second-order accurate at the cell centre ``f + 1/2`` and
      first-order elsewhere.
    * At integer ``q_j`` (every voxel centre) ``U`` has a kink and no derivative. Here we return the right-sided
      derivative, i.e. the forward difference ``(u[k+1] - u[k]) / h_j`` (first-order, biased by half a voxel; it is
      not the central difference of :func:`displacement_gradient`), and at the last voxel ``n_j - 1`` the left-sided
      backward difference. Outside ``[0, n_j - 1]`` the clamped interpolant is constant: derivative 0.
    * Implementation note: since column ``j`` does not depend on ``q_j`` within a cell, it is evaluated at the
      cell centre ``f + 1/2`` along ``j`` (other coordinates unchanged), away from the kink, so the result does
      not depend on which one-sided derivative autodiff picks there.

    Jittable; differentiable in ``u_mm`` (linear in it).

    Args:
      u_mm: ``(X, Y, Z, 3)`` or ``(X, Y, 2)`` displacement in mm (no batch axes; use ``jax.vmap``).
      spacing_mm: ``(D,)`` voxel size in mm.
      points_vox: ``(..., D)`` continuous voxel indices at which to evaluate, or None for every voxel centre.
    Returns:
      ``(..., D, D)`` gradient at ``points_vox``, or ``(*S, D, D)`` at the voxel centres.
    """
    u, ndim = _float_field(u_mm)
    if u.ndim != ndim + 1:
        raise ValueError(f"u_mm must be a single field (X, Y[, Z], D) without batch axes, got shape {u.shape}")
    spacing = _spacing_vector(spacing_mm, ndim, u.dtype)
    if points_vox is None:
        q = index_grid(u.shape[:-1], dtype=u.dtype)
    else:
        q = jnp.asarray(points_vox, dtype=u.dtype)
        if q.ndim < 1 or q.shape[-1] != ndim:
            raise ValueError(f"points_vox must be (..., {ndim}), got shape {q.shape}")
    return _interpolant_gradient(u, spacing, q)


@jax.jit
def _interpolant_gradient(u, spacing, q):
    # Compiled as one unit: called eagerly, the per-axis jacfwd of the 2^D-corner interpolant is many small ops.
    columns = []
    for j, n in enumerate(u.shape[:-1]):
        cell_centre = jnp.clip(jnp.floor(q[..., j]), 0, max(n - 2, 0)) + 0.5
        x_mm = q.at[..., j].set(cell_centre) * spacing

        def along_j(t_mm, x_mm=x_mm, j=j):
            return interpolate(u, x_mm.at[..., j].add(t_mm) / spacing)

        column = jax.jacfwd(along_j)(jnp.zeros((), u.dtype))
        inside = (q[..., j] >= 0) & (q[..., j] <= n - 1)
        columns.append(jnp.where(inside[..., None], column, 0.0))
    return jnp.stack(columns, axis=-1)


def green_lagrange_from_gradient(G):
    """Green-Lagrange strain from a displacement gradient.

        E = (F^T F - I) / 2 = (G + G^T + G^T G) / 2,   F = I + G,   (G^T G)_ij = sum_k G_ki G_kj.

    Args:
      G: ``(..., D, D)`` displacement gradient ``du_i/dX_j`` in mm/mm.
    Returns:
      ``(..., D, D)`` symmetric strain tensor (dimensionless).
    """
    G = jnp.asarray(G)
    if G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"G must be (..., D, D), got shape {G.shape}")
    Gt = jnp.swapaxes(G, -1, -2)
    return 0.5 * (G + Gt + jnp.einsum("...ki,...kj->...ij", G, G))


def green_lagrange(u_mm, spacing_mm):
    """Green-Lagrange strain ``E = (G + G^T + G^T G) / 2`` of a displacement field, ``G`` by central differences.

    See :func:`displacement_gradient` (finite differences with the physical spacing) and
    :func:`green_lagrange_from_gradient`. Jittable; differentiable in ``u_mm``.

    Args:
      u_mm: ``(..., X, Y, Z, 3)`` or ``(..., X, Y, 2)`` displacement in mm on the reference grid.
      spacing_mm: ``(D,)`` voxel size in mm.
    Returns:
      ``(..., *S, D, D)`` strain tensors.
    """
    return green_lagrange_from_gradient(displacement_gradient(u_mm, spacing_mm))


def global_strain(E_component, mask):
    """Global strain: the mean of a strain component over the voxels of a reference-frame mask.

        global = sum_X mask(X) E(X) / sum_X mask(X).

    Leading axes of ``E_component`` (e.g. time) are kept: ``(T, X, Y, Z)`` with an ED mask ``(X, Y, Z)`` gives
    ``(T,)``. Jittable; under ``jit`` with a traced mask the empty-mask check cannot run and an empty mask gives NaN.

    Args:
      E_component: ``(..., *M)`` strain component maps.
      mask: ``M``-shaped array; nonzero entries are inside (e.g. ``labels_ed == 2``, the ED myocardium).
    Returns:
      ``(...)`` mean strain.
    Raises:
      ValueError: shape mismatch, or an empty (concrete) mask.
    """
    e = jnp.asarray(E_component)
    m = jnp.asarray(mask)
    if m.ndim == 0 or e.shape[e.ndim - m.ndim:] != m.shape:
        raise ValueError(f"mask shape {m.shape} must match the trailing axes of E_component {e.shape}")
    try:
        empty = not np.any(np.asarray(mask))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        empty = False
    if empty:
        raise ValueError("mask is empty: no voxel to average the strain over")
    w = (m != 0).astype(e.dtype if jnp.issubdtype(e.dtype, jnp.floating) else jnp.float32)
    axes = tuple(range(e.ndim - m.ndim, e.ndim))
    return jnp.sum(e * w, axis=axes) / jnp.sum(w)


class CardiacStrain(NamedTuple):
    """Result of :func:`cardiac_strain`."""

    components: StrainComponents  # each (T, X, Y, Z): E_rr, E_cc, E_ll, E_rc, E_rl, E_cl per voxel and frame
    global_mean: StrainComponents  # each (T,): mean over the ED myocardium
    centre_line: LVCentreLine  # the fitted long axis the basis was built on


@partial(jax.jit, static_argnames="method")
def _frame_components(u_mm, spacing_mm, origin_mm, direction, weights, method):
    """The basis, then per frame the projected components and their :func:`global_strain` over ``weights``
    (the ED myocardium), in one compiled program."""
    basis = cardiac_basis(u_mm.shape[1:4], spacing_mm, origin_mm, direction, dtype=u_mm.dtype)

    def one_frame(u):
        if method == "fd":
            E = green_lagrange(u, spacing_mm)
        else:
            E = green_lagrange_from_gradient(displacement_gradient_autodiff(u, spacing_mm))
        c = project_strain(E, basis)
        return c, StrainComponents(*(global_strain(x, weights) for x in c))

    # One frame at a time keeps only one (X, Y, Z, 3, 3) tensor field alive.
    return jax.lax.map(one_frame, u_mm)


def cardiac_strain(u_mm, labels_ed, spacing_mm, *, base_first: bool = True, method: str = "fd", myo_label: int = 2,
                   cavity_label: int = 3) -> CardiacStrain:
    """Radial, circumferential and longitudinal strain of a cine displacement sequence, per voxel and global.

    Composition: :func:`lv_centre_line` on the ED labels -> :func:`cardiac_basis` at the ED voxel centres ->
    per frame ``E`` (:func:`green_lagrange` for ``method="fd"``, or the autodiff gradient at the voxel centres for
    ``method="autodiff"``, which is a forward difference there, see :func:`displacement_gradient_autodiff`) ->
    :func:`project_strain` -> :func:`global_strain` over the ED myocardium ``labels_ed == myo_label``.

    Args:
      u_mm: ``(T, X, Y, Z, 3)`` Lagrangian displacement ED -> frame t in mm on the ED grid (frame 0 usually zero).
      labels_ed: ``(X, Y, Z)`` ED label map (ACDC labels).
      spacing_mm: ``(3,)`` voxel size in mm.
      base_first: whether slice 0 (axis 2) is the base; orients ``l_hat`` base -> apex.
      method: ``"fd"`` (central differences, default) or ``"autodiff"``.
      myo_label, cavity_label: LV myocardium and cavity labels.
    Returns:
      :class:`CardiacStrain`.
    Raises:
      ValueError: wrong shapes, non-finite displacement, bad spacing, no LV or no myocardium in ``labels_ed``.
    """
    if method not in ("fd", "autodiff"):
        raise ValueError(f"method must be 'fd' or 'autodiff', got {method!r}")
    u, _ = _float_field(u_mm)
    labels = np.asarray(labels_ed)
    if u.ndim != 5 or u.shape[-1] != 3 or u.shape[1:4] != labels.shape:
        raise ValueError(f"u_mm must be (T, X, Y, Z, 3) on the grid of labels_ed {labels.shape}, got {u.shape}")
    if not np.isfinite(np.asarray(u)).all():
        raise ValueError("u_mm contains NaN or infinite values")
    myocardium = labels == myo_label
    if not myocardium.any():
        raise ValueError(f"labels_ed has no myocardium voxel (label {myo_label})")
    spacing = _spacing_vector(spacing_mm, 3, u.dtype)
    line = lv_centre_line(labels, np.asarray(spacing_mm, dtype=np.float64), base_first=base_first,
                          cavity_label=cavity_label, myo_label=myo_label)
    components, global_mean = _frame_components(u, spacing, np.asarray(line.origin_mm, u.dtype),
                                                np.asarray(line.direction, u.dtype),
                                                myocardium.astype(u.dtype), method)
    return CardiacStrain(components, global_mean, line)


BOX_STEP = 16  # voxels: the LV box's in-plane sides are multiples of this (or the whole grid)


def cardiac_strain_lv_box(u_mm, labels_ed, spacing_mm, *, margin: int = 2, base_first: bool = True,
                          method: str = "fd", myo_label: int = 2, cavity_label: int = 3) -> CardiacStrain:
    """:func:`cardiac_strain` computed on the in-plane bounding box of the LV only (what the outputs use).

    The box holds every ED voxel labelled ``myo_label`` or ``cavity_label``, grown by ``margin`` voxels in-plane
    (clipped to the grid), its sides rounded up to a multiple of :data:`BOX_STEP` voxels (or the grid's side),
    and spans every slice. Central differences at a voxel only read its neighbours, so
    with ``margin >= 1`` every myocardial voxel gets the gradient it gets on the whole grid (a box side on the
    grid's edge is the grid's own edge), and the long axis, basis and global means are the same; the LV of a
    128 x 128 network grid is often a fifth of it, and the strain takes that share of the time.

    Returns:
      :class:`CardiacStrain` on the whole grid: components inside the box, **0 outside it** (no strain is
      computed there); ``centre_line`` in the whole grid's array-frame mm.
    Raises:
      ValueError: as :func:`cardiac_strain`, and for ``margin < 1``.
    """
    if int(margin) < 1:
        raise ValueError(f"margin must be >= 1 voxel (central differences read one neighbour), got {margin}")
    labels = np.asarray(labels_ed)
    u = np.asarray(u_mm)
    if labels.ndim != 3 or u.ndim != 5 or u.shape[1:4] != labels.shape:
        raise ValueError(f"u_mm must be (T, X, Y, Z, 3) on the grid of labels_ed {labels.shape}, got {u.shape}")
    lv = np.isin(labels, (myo_label, cavity_label)).any(axis=2)
    if not lv.any():
        raise ValueError(f"labels_ed has no myocardium voxel (label {myo_label})")
    box = []
    for axis in (0, 1):
        idx = np.flatnonzero(lv.any(axis=1 - axis))
        n = labels.shape[axis]
        start, stop = max(int(idx[0]) - int(margin), 0), min(int(idx[-1]) + 1 + int(margin), n)
        # The side rounded up to a multiple of BOX_STEP (within the grid): subjects share a few box sizes, so a
        # cohort compiles the strain program a few times instead of once per subject.
        size = min(-(-(stop - start) // BOX_STEP) * BOX_STEP, n)
        start = min(start, n - size)
        box.append(slice(start, start + size))
    inner = cardiac_strain(u[:, box[0], box[1]], labels[box[0], box[1]], spacing_mm, base_first=base_first,
                           method=method, myo_label=myo_label, cavity_label=cavity_label)

    def whole(c):
        c = np.asarray(c)
        out = np.zeros(c.shape[:1] + labels.shape, c.dtype)
        out[:, box[0], box[1]] = c
        return out

    shift = np.array([box[0].start, box[1].start, 0.0]) * np.asarray(spacing_mm, np.float64)
    line = inner.centre_line
    line = line._replace(origin_mm=np.asarray(line.origin_mm) + shift,
                         slice_centroids_mm=np.asarray(line.slice_centroids_mm) + shift)
    return CardiacStrain(StrainComponents(*(whole(c) for c in inner.components)), inner.global_mean, line)
