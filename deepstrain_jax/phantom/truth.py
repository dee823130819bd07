"""Ground truth of a rendered phantom, sampled on its ED image grid (the sidecar's content).

Every map is sampled at the heart-frame point each ED voxel images
(:func:`deepstrain_jax.phantom.scanner.voxel_heart_positions`, breath-hold shifts included), so the truth
matches the image voxel for voxel. Arrays use the render's base -> apex slice order; the dataset writer
reorders them with the images.

* ``u_mm`` ``(T, X, Y, Z, 3)`` float32: Lagrangian displacement ``u = phi(X, t) - X`` of the LV kinematic map
  (``kinematics.displacement``), in mm, **component c along array axis c** of the ED image (``D^-1 R u_heart``),
  so ``u_vox = u_mm / spacing_mm`` feeds :func:`deepstrain_jax.ops.warp.warp` (batch axis = frames) and
  ``green_lagrange(u_mm[t], spacing_mm)`` directly. Given on ``u_mask`` (the ED myocardium dilated twice with a
  3x3x3 cube, where the map is finite at every frame); 0 elsewhere.
* ``strain_rr``, ``strain_cc``, ``strain_ll`` ``(T, X, Y, Z)`` float32: exact Green-Lagrange strain
  ``kinematics.strain_rcl`` at the voxel centres of ``myo_mask`` (ED voxels labelled 2); 0 elsewhere.
* ``myo_mask`` ``(X, Y, Z)`` bool; ``aha`` ``(X, Y, Z)`` uint8: ``kinematics.aha_truth`` at the voxel centres of
  ``myo_mask`` (0 elsewhere, or where the centre lies outside the reference myocardium).
* ``labels`` ``(X, Y, Z, T)`` uint8: the rendered labels of every frame.
* landmarks: ``landmarks_world_mm`` ``(12, 3)``, ``landmark_trajectories_world_mm`` ``(T, 12, 3)`` (world mm,
  exact), and the same as continuous image indices ``landmarks_vox``, ``landmark_trajectories_vox`` (world ->
  index with the shift of the slice each point lies in). Order: walls septal, anterior, lateral, inferior x
  levels basal, mid, apical, as ``kinematics.landmarks``.
* curves (JSON): exact global strain and strain rate (``global_strain_truth``, ``strain_rate_truth``), the mean
  of the sampled strain maps over ``myo_mask`` (the discretised target a voxel method can reach), exact
  volumes (``volumes_truth``) and label-count volumes of the rendered labels (mL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from deepstrain_jax.phantom import kinematics as kin
from deepstrain_jax.phantom import render, scanner
from deepstrain_jax.phantom.render import RenderedCine

_MIN_POINTS = 4096  # point lists are padded to a power of two >= this: few shapes, few compilations
_T_CHUNK = 8  # frames per call (the last chunk is padded): one shape for any frame count


def _pad(points: np.ndarray) -> tuple[np.ndarray, int]:
    n = points.shape[0]
    m = max(_MIN_POINTS, 1 << max(n - 1, 0).bit_length())
    out = np.zeros((m, 3), np.float32)
    out[:n] = points
    # Pad with a copy of a real point: the maps may be undefined (NaN) at the origin.
    if n:
        out[n:] = points[0]
    return out, n


def _by_frame_chunks(fn, points, t_frac, params, axis: int) -> np.ndarray:
    n_t = len(t_frac)
    padded = np.concatenate([t_frac, np.full(-n_t % _T_CHUNK, t_frac[-1])]).astype(np.float32)
    out = [np.asarray(fn(points, jnp.asarray(padded[i:i + _T_CHUNK]), params))
           for i in range(0, len(padded), _T_CHUNK)]
    return np.take(np.concatenate(out, axis=axis), np.arange(n_t), axis=axis)


@jax.jit
def _displacements(h, t_frac, params):
    return jax.vmap(lambda t: kin.displacement(h, t, params))(t_frac)


@jax.jit
def _strains(h, t_frac, params):
    e = jax.vmap(lambda t: kin.strain_rcl(h, t, params))(t_frac)
    return jnp.stack([e[..., 0, 0], e[..., 1, 1], e[..., 2, 2]], axis=0)


_aha = jax.jit(kin.aha_truth)


def _curve(d) -> dict:
    return {k: np.asarray(v, np.float64).tolist() for k, v in d.items()}


def compute_truth(params, cine: RenderedCine) -> tuple[dict, dict]:
    """Sample the exact motion, strain, segments and landmarks of ``params`` on the ED grid of ``cine``.

    Args:
      params: ``kinematics.PhantomParams`` that ``cine`` was rendered from.
      cine: :class:`deepstrain_jax.phantom.render.RenderedCine`.
    Returns:
      ``(arrays, curves)``: numpy arrays for the ``.npz`` sidecar and JSON-ready curves (module docstring).
    """
    geometry = cine.geometry
    core = render.compile_params(params)
    shape = tuple(geometry.shape)
    n_t = cine.labels.shape[3]
    t_frac = np.asarray(cine.t_frac, np.float64)
    h_all = scanner.voxel_heart_positions(geometry)
    myo = cine.labels[..., cine.ed] == 2
    support = ndimage.binary_dilation(myo, structure=np.ones((3, 3, 3), bool), iterations=2)

    pts, n = _pad(h_all[support])
    u_h = _by_frame_chunks(_displacements, pts, t_frac, core, axis=0)[:, :n]
    u_arr = scanner.heart_to_array_vectors(geometry, u_h.astype(np.float64))
    finite = np.all(np.isfinite(u_arr), axis=(0, 2))
    u_mask = np.zeros(shape, bool)
    u_mask[support] = finite
    u_mm = np.zeros((n_t, *shape, 3), np.float32)
    u_mm[:, support] = np.where(finite[None, :, None], u_arr, 0.0).astype(np.float32)

    pts, n = _pad(h_all[myo])
    e = _by_frame_chunks(_strains, pts, t_frac, core, axis=1)[:, :, :n]
    strain = {}
    for c, name in enumerate(("rr", "cc", "ll")):
        m = np.zeros((n_t, *shape), np.float32)
        m[:, myo] = np.nan_to_num(e[c], nan=0.0)
        strain[name] = m
    aha = np.zeros(shape, np.uint8)
    aha[myo] = np.asarray(_aha(pts, core))[:n].astype(np.uint8)

    lm_h = np.asarray(kin.landmarks(params), np.float64)
    traj_h = np.asarray(kin.landmark_trajectories(params), np.float64)
    to_world = lambda h: h @ geometry.rotation.T + geometry.translation_mm  # noqa: E731
    lm_w, traj_w = to_world(lm_h), to_world(traj_h)

    voxel_ml = float(np.prod(geometry.spacing_mm)) / 1000.0
    arrays = {
        "u_mm": u_mm, "u_mask": u_mask, "myo_mask": myo, "aha": aha, "labels": cine.labels,
        "strain_rr": strain["rr"], "strain_cc": strain["cc"], "strain_ll": strain["ll"],
        "landmarks_world_mm": lm_w, "landmark_trajectories_world_mm": traj_w,
        "landmarks_vox": scanner.world_to_image_index(geometry, lm_w),
        "landmark_trajectories_vox": scanner.world_to_image_index(geometry, traj_w),
    }
    t_padded = np.concatenate([t_frac, np.full(-n_t % _T_CHUNK, t_frac[-1])])
    global_exact = _curve({k: np.asarray(v)[:n_t] for k, v in kin.global_strain_truth(core, t_padded).items()})
    rate_exact = _curve({k: np.asarray(v)[:n_t] for k, v in kin.strain_rate_truth(core, t_padded).items()})
    n_myo = max(int(myo.sum()), 1)
    curves = {
        "global_strain": global_exact,
        "strain_rate_per_s": rate_exact,
        "global_strain_voxel_mean": {k: (strain[k].reshape(n_t, -1).sum(1) / n_myo).tolist() for k in strain},
        "volumes_ml": _curve(kin.volumes_truth(params)),
        "label_volumes_ml": {name: (np.sum(cine.labels == lab, axis=(0, 1, 2)) * voxel_ml).tolist()
                             for lab, name in ((1, "rv_cavity"), (2, "lv_myocardium"), (3, "lv_cavity"))},
    }
    return arrays, curves
