"""The original DeepStrain strain computation, reproduced for parity studies (numpy/scipy, host only).

What the original does (``utils/myocardial_strain.py``: ``MyocardialStrain.calculate_strain`` and
``convert_to_polar``; the original DeepStrain code, github.com/moralesq/DeepStrain), and what :func:`legacy_strain` reproduces:

1. One 3D centre of mass ``(cx, cy, cz)`` of ``labels == lv_label`` (2 = myocardium in the ACDC/CMAC notebooks,
   3 = blood pool in ``test.py``); the displacement and the labels are ``np.roll``-ed (wrap-around) by
   ``int(nx // 2 - cx)`` along axis 0 and ``int(ny // 2 - cy)`` along axis 1 (``int`` truncates towards zero).
2. ``np.gradient`` of each displacement component along the three axes with **unit spacing**, displacement in
   **voxels**: ``F = I + du_vox/dX_vox``, ``E = (F^T F - I) / 2``. The in-plane block is right for isotropic in-plane
   voxels, but every term with a through-plane derivative or component is mis-scaled by the voxel aspect ratio (e.g.
   the ``(du_z/dx)^2 / 2`` term of ``E_xx`` is weighted by ``(dx/dz)^2``): a known defect kept for parity.
3. Only the in-plane 2x2 block of ``E`` is projected, on a polar grid with one origin for all slices: per axis
   ``numpy.linspace(-n // 2, n // 2, n)`` (Python's ``-n // 2`` is ``floor(-n / 2)``; for even ``n`` the origin is at
   index ``(n - 1) / 2``, half a voxel from the rolled centroid at ``n // 2``), and at voxel ``(i, j)``
   ``phi = degrees(atan2(y_j, x_i)) + 180``. With ``c = cos phi``, ``s = sin phi``, ``r = (c, s)``, ``q = (-s, c)``:
   ``Err = r^T E r``, ``Ecc = q^T E q``, ``Erc = r^T E q``, ``Ecr = q^T E r``. The ``+180`` flips both ``r`` and ``q``
   (``r`` points inwards), which leaves all four unchanged; ``q = e_z x r``, so for a base-first stack ``Erc``
   matches ``E_rc`` of :func:`deepstrain_jax.ops.cardiac_basis.project_strain` with ``l_hat = +z``.
4. Global radial / circumferential strain: the mean of ``Err`` / ``Ecc`` over ``rolled labels == 2`` (the ED
   myocardium), all slices, no weighting.

The original returns the maps in the rolled frame and writes them with the un-rolled affine (quirk 7 of
the original DeepStrain code, github.com/moralesq/DeepStrain); here both the rolled maps and the maps rolled back to the input frame are returned.
The optional smoothing is the notebooks' ``gaussian_filter(u, sigma=(0, 2, 2, 0, 0))``: a Gaussian with ``sigma``
voxels along axes 0 and 1, none through-plane, per component and frame, scipy's default ``mode="reflect"``
(``truncate=4``), applied to the input before the roll.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage


class LegacyStrainMaps(NamedTuple):
    """In-plane polar strain maps of the original, each ``(..., X, Y, Z)``."""

    err: np.ndarray
    ecc: np.ndarray
    erc: np.ndarray
    ecr: np.ndarray


class LegacyStrain(NamedTuple):
    """Result of :func:`legacy_strain`."""

    rolled: LegacyStrainMaps | None  # the original's output, in the rolled (LV-centred) frame (None: maps=False)
    unrolled: LegacyStrainMaps | None  # the same maps rolled back onto the input grid (None: maps=False)
    labels_rolled: np.ndarray  # (X, Y, Z) ED labels in the rolled frame
    shift_vox: tuple  # (sx, sy): the np.roll shifts applied along axes 0 and 1
    global_radial: np.ndarray  # (...) mean err over labels_rolled == myo_label
    global_circumferential: np.ndarray  # (...) mean ecc over labels_rolled == myo_label


def _legacy_polar_angle(nx: int, ny: int) -> np.ndarray:
    """``phi`` in degrees at every in-plane voxel, ``(nx, ny)``, exactly as the original's ``polar_grid``."""
    x = np.linspace(-nx // 2, nx // 2, nx)
    y = np.linspace(-ny // 2, ny // 2, ny)
    return np.rad2deg(np.arctan2(y[None, :], x[:, None])) + 180


def legacy_strain(u_vox, labels_ed, *, lv_label: int = 2, smooth_sigma: float | None = None,
                  myo_label: int = 2, maps: bool = True) -> LegacyStrain:
    """The original DeepStrain's radial / circumferential strain (parity path; see the module docstring).

        F = I + grad_vox(roll(u_vox)),   E = (F^T F - I) / 2,
        Err = r^T E_2 r,  Ecc = q^T E_2 q,  Erc = r^T E_2 q,  Ecr = q^T E_2 r,

    with ``E_2`` the in-plane 2x2 block, ``r = (cos phi, sin phi)``, ``q = (-sin phi, cos phi)`` on the original's
    polar grid. Voxel units throughout: physically wrong through-plane terms on anisotropic grids (use
    :func:`deepstrain_jax.ops.strain.cardiac_strain` for physical strain).

    Args:
      u_vox: ``(..., X, Y, Z, 3)`` displacement in voxels on the ED grid (leading axes, e.g. frames, allowed);
        every spatial axis needs at least 2 voxels (``np.gradient``).
      labels_ed: ``(X, Y, Z)`` ED label map.
      lv_label: label whose centre of mass is rolled to ``(nx // 2, ny // 2)`` (2 in the paper's notebooks).
      smooth_sigma: in-plane Gaussian sigma in voxels applied to ``u_vox`` first (2 in the notebooks), or None.
      myo_label: label averaged for the global values (the original hard-codes 2).
      maps: ``False`` computes the global values only (``rolled`` and ``unrolled`` are ``None``), on the
        myocardium's bounding box plus one voxel, where every finite difference the myocardium needs lies:
        the same numbers, bit for bit, in a fraction of the time (what the pipeline's legacy mode uses).
    Returns:
      :class:`LegacyStrain` (float64).
    """
    u = np.asarray(u_vox)  # float64 below (only the region used, with maps=False)
    labels = np.asarray(labels_ed)
    if labels.ndim != 3 or u.ndim < 4 or u.shape[-4:] != (*labels.shape, 3):
        raise ValueError(f"u_vox must be (..., X, Y, Z, 3) on the grid of labels_ed {labels.shape}, got {u.shape}")
    if min(labels.shape) < 2:
        raise ValueError(f"every spatial axis needs at least 2 voxels for np.gradient, got {labels.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("u_vox contains NaN or infinite values")
    if not np.any(labels == lv_label):
        raise ValueError(f"labels_ed has no voxel with lv_label {lv_label}")
    myocardium = labels == myo_label
    if not np.any(myocardium):
        raise ValueError(f"labels_ed has no voxel with myo_label {myo_label}")
    lead = u.ndim - 4
    if smooth_sigma is not None:
        if not smooth_sigma > 0:
            raise ValueError(f"smooth_sigma must be positive or None, got {smooth_sigma}")
        u = ndimage.gaussian_filter(u.astype(np.float64), sigma=(0,) * lead + (smooth_sigma, smooth_sigma, 0, 0))

    nx, ny, _ = labels.shape
    cx, cy, _ = ndimage.center_of_mass(labels == lv_label)
    shift = (int(nx // 2 - cx), int(ny // 2 - cy))
    labels_rolled = np.roll(labels, shift, axis=(0, 1))
    in_myo = labels_rolled == myo_label
    phi = np.deg2rad(_legacy_polar_angle(nx, ny))[:, :, None]
    if maps:
        region = (slice(None), slice(None))
        u_region = np.roll(u.astype(np.float64, copy=False), shift, axis=(lead, lead + 1))
    else:
        # The rolled frame's myocardium box, one voxel wider (np.gradient's central differences), cut straight
        # from the unrolled field with wrapped indices.
        rows, cols = np.flatnonzero(in_myo.any(axis=(1, 2))), np.flatnonzero(in_myo.any(axis=(0, 2)))
        lo = [max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)]
        hi = [min(int(rows[-1]) + 2, nx), min(int(cols[-1]) + 2, ny)]
        region = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        u_region = np.take(u, (np.arange(lo[0], hi[0]) - shift[0]) % nx, axis=lead)
        u_region = np.take(u_region, (np.arange(lo[1], hi[1]) - shift[1]) % ny, axis=lead + 1).astype(np.float64)
    err, ecc, erc, ecr = _polar_maps(u_region, phi[region], lead, need_shear=maps)
    in_region = in_myo[region]
    glob_r, glob_c = err[..., in_region].mean(axis=-1), ecc[..., in_region].mean(axis=-1)
    if not maps:
        return LegacyStrain(rolled=None, unrolled=None, labels_rolled=labels_rolled, shift_vox=shift,
                            global_radial=glob_r, global_circumferential=glob_c)
    rolled = LegacyStrainMaps(err, ecc, erc, ecr)
    back = (-shift[0], -shift[1])
    unrolled = LegacyStrainMaps(*(np.roll(m, back, axis=(lead, lead + 1)) for m in rolled))
    return LegacyStrain(rolled=rolled, unrolled=unrolled, labels_rolled=labels_rolled, shift_vox=shift,
                        global_radial=glob_r, global_circumferential=glob_c)


def _polar_maps(u_rolled, phi, lead: int, need_shear: bool = True):
    """``(err, ecc, erc, ecr)`` of the rolled displacement (``erc``, ``ecr`` None unless ``need_shear``)."""
    spatial_axes = (lead, lead + 1, lead + 2)
    # Only the in-plane block of E = (F^T F - I) / 2 is projected, and it needs only the columns x and y of F:
    # E_ab = (sum_k F_ka F_kb - delta_ab) / 2 for a, b in {x, y}, k over the three components (the original
    # forms all of F and E; same values, without the through-plane derivatives and the 3 x 3 products).
    fx, fy = [], []  # F[k, 0] and F[k, 1] for k = 0, 1, 2
    for k in range(3):
        dx, dy = np.gradient(u_rolled[..., k], axis=spatial_axes[:2])
        fx.append(dx + (1.0 if k == 0 else 0.0))
        fy.append(dy + (1.0 if k == 1 else 0.0))
    exx = 0.5 * (fx[0] * fx[0] + fx[1] * fx[1] + fx[2] * fx[2] - 1.0)
    eyy = 0.5 * (fy[0] * fy[0] + fy[1] * fy[1] + fy[2] * fy[2] - 1.0)
    exy = eyx = 0.5 * (fx[0] * fy[0] + fx[1] * fy[1] + fx[2] * fy[2])
    c, s = np.cos(phi), np.sin(phi)
    err = c * (c * exx + s * exy) + s * (c * eyx + s * eyy)
    ecc = -s * (-s * exx + c * exy) + c * (-s * eyx + c * eyy)
    if not need_shear:
        return err, ecc, None, None
    erc = c * (-s * exx + c * exy) + s * (-s * eyx + c * eyy)
    ecr = -s * (c * exx + s * exy) + c * (c * eyx + s * eyy)
    return err, ecc, erc, ecr
