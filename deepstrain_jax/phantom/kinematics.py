"""Exact phantom kinematics: motion, Green-Lagrange strain, strain rate, landmarks and volumes.

This module is the phantom's public face: besides its own functions it re-exports the motion maps
(``deformation``), the time course (``timecourse``), the anatomy (``anatomy``) and the parameter sampler
(``phenotypes``), so every name of the phantom contract (see ``deepstrain_jax.phantom``) imports from here.

Strain. F = d phi / dX by ``jax.jacfwd`` of the forward map (mm/mm), E = (F^T F - I) / 2 (Lagrangian, ED
reference), projected on the local basis at the *reference* position X:

    r_hat = (X, Y, 0) / R            radial, outward from the long axis
    l_hat = (0, 0, -1)               longitudinal, base -> apex
    c_hat = l_hat x r_hat = (sin Theta, -cos Theta, 0)

so (r, c, l) is right-handed and c_hat turns anticlockwise when viewed from the apex (towards decreasing
Theta: septal -> inferior -> lateral -> anterior). E_rcl[i, j] = e_i^T E e_j with e = (r_hat, c_hat, l_hat);
E_cc, E_rr, E_ll do not depend on these signs, the shears do (E_rc = -E_RTheta, E_rl = -E_RZ,
E_cl = +E_ThetaZ in the cylindrical components of Model A). Strain rate is dE/dt in 1/s by
forward-mode autodiff in t (t_s = t_frac RR).

Global strain is the volume-weighted mean over the ED myocardium (the continuous limit of DeepStrain's mean
over ED-myocardium voxels), by Gauss-Legendre quadrature across the wall and along the axis and the periodic
trapezoid rule in angle.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.phantom import model_a, model_b
from deepstrain_jax.phantom.anatomy import (  # noqa: F401
    TISSUE_TO_LABEL,
    Tissue,
    aha_truth,
    heart_motion,
    rv_cavity_volume_ml,
    scene,
    tissue_reference,
)
from deepstrain_jax.phantom.deformation import check_points, displacement, inverse_motion, motion  # noqa: F401
from deepstrain_jax.phantom.geometry import endo_radius, epi_radius, myocardium_z_range, prolate_axes
from deepstrain_jax.phantom.params import (  # noqa: F401
    PhantomParams,
    params_from_dict,
    params_to_dict,
    validate_params,
    with_neutral_phenotype,
)
from deepstrain_jax.phantom.phenotypes import sample_params  # noqa: F401
from deepstrain_jax.phantom.timecourse import activation, es_frame, frame_fracs, frame_times_s, rr_interval_s  # noqa: F401

STRAIN_KEYS = ("rr", "cc", "ll")
LANDMARK_LEVELS = (("basal", 5.0 / 6.0), ("mid", 0.5), ("apical", 1.0 / 6.0))
LANDMARK_WALLS = (("septal", 0.0), ("anterior", 90.0), ("lateral", 180.0), ("inferior", -90.0))


def rcl_basis(X_mm):
    """Local basis at reference points: (..., 3, 3) with columns (r_hat, c_hat, l_hat) (module docstring)."""
    X = check_points(X_mm, "X_mm")
    R = jnp.maximum(jnp.hypot(X[..., 0], X[..., 1]), 1e-30)
    c, s = X[..., 0] / R, X[..., 1] / R
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    r_hat = jnp.stack([c, s, zero], axis=-1)
    c_hat = jnp.stack([s, -c, zero], axis=-1)
    l_hat = jnp.stack([zero, zero, -one], axis=-1)
    return jnp.stack([r_hat, c_hat, l_hat], axis=-1)


def _strain_rcl_flat(X, s, params):
    """E in the (r, c, l) basis for points X (N, 3) at activations s (N,) -> (N, 3, 3)."""
    F = jax.vmap(jax.jacfwd(lambda p, a: motion(p, a, params)))(X, s)
    E = 0.5 * (jnp.einsum("nki,nkj->nij", F, F) - jnp.eye(3, dtype=F.dtype))
    Q = rcl_basis(X)
    return jnp.einsum("nki,nkl,nlj->nij", Q, E, Q)


def _broadcast_points_times(X_mm, t_frac):
    X = check_points(X_mm, "X_mm")
    t = jnp.asarray(t_frac, dtype=X.dtype)
    shape = jnp.broadcast_shapes(X.shape[:-1], t.shape)
    return jnp.broadcast_to(X, shape + (3,)).reshape(-1, 3), jnp.broadcast_to(t, shape).reshape(-1), shape


def strain_rcl(X_mm, t_frac, params):
    """Exact Green-Lagrange strain in the reference (r, c, l) basis.

        F = d phi(X, s(t)) / dX (jax.jacfwd),  E = (F^T F - I) / 2,  E_rcl = Q^T E Q,  Q = [r_hat c_hat l_hat](X)

    Args:
      X_mm: (..., 3) reference heart-frame positions (off the long axis), mm.
      t_frac: time as a fraction of RR, broadcastable with X_mm.shape[:-1].
      params: PhantomParams.
    Returns:
      (..., 3, 3) dimensionless strain, indices in (r, c, l) order.
    """
    X, t, shape = _broadcast_points_times(X_mm, t_frac)
    return _strain_rcl_flat(X, activation(t, params), params).reshape(shape + (3, 3))


def strain_rate_rcl(X_mm, t_frac, params):
    """Exact strain rate dE_rcl/dt in 1/s: forward-mode derivative of :func:`strain_rcl` in t, divided by RR.

    Shapes as :func:`strain_rcl`.
    """
    X, t, shape = _broadcast_points_times(X_mm, t_frac)
    _, rate = jax.jvp(lambda tt: _strain_rcl_flat(X, activation(tt, params), params), (t,), (jnp.ones_like(t),))
    return (rate / rr_interval_s(params)).reshape(shape + (3, 3))


def _gauss01(n, dtype):
    x, w = np.polynomial.legendre.leggauss(n)
    return jnp.asarray(0.5 * (x + 1.0), dtype), jnp.asarray(0.5 * w, dtype)


def myocardium_quadrature(params, n_u: int = 6, n_theta: int = 96, n_z: int = 24, dtype=None):
    """Quadrature of the ED myocardium: points X (N, 3) in mm and weights w (N,) in mm^3, sum(w) = volume.

    Across the wall R = R_endo + u (R_epi - R_endo) with Gauss-Legendre in u; periodic trapezoid in Theta;
    Gauss-Legendre along Z (Model B: Z = L v^2 on the ring part and Z = Z_lo (1 - v^2) on the apical cap, which
    removes the square-root behaviour of the spheroid radii at the apices).
    """
    dtype = dtype or jnp.result_type(float)
    u, wu = _gauss01(n_u, dtype)
    th = jnp.arange(n_theta, dtype=dtype) * (2.0 * np.pi / n_theta)
    wth = 2.0 * np.pi / n_theta
    v, wv = _gauss01(n_z, dtype)
    L = params.length_mm

    def piece(Z, dZ, inner):
        Zg, thg = Z[None, :, None], th[None, None, :]
        r_in = inner(Z)[None, :, None]
        epi = epi_radius(thg, Zg, params)
        R = r_in + u[:, None, None] * (epi - r_in)
        w = wu[:, None, None] * wth * dZ[None, :, None] * (epi - r_in) * R
        X = jnp.stack(jnp.broadcast_arrays(R * jnp.cos(thg), R * jnp.sin(thg), Zg), axis=-1)
        return X.reshape(-1, 3), w.reshape(-1)

    if params.model == "A":
        return piece(v * L, wv * L, lambda Z: endo_radius(Z, params))
    Xr, wr = piece(L * v ** 2, wv * 2.0 * L * v, lambda Z: endo_radius(Z, params))
    z_lo, _ = myocardium_z_range(params)
    Xc, wc = piece(z_lo * (1.0 - v ** 2), wv * 2.0 * (-z_lo) * v, jnp.zeros_like)
    return jnp.concatenate([Xr, Xc]), jnp.concatenate([wr, wc])


def global_strain_truth(params, t_frac, n_u: int = 6, n_theta: int = 96, n_z: int = 24):
    """Global strain: volume-weighted mean of E_rr, E_cc, E_ll over the ED myocardium.

        E_g(t) = sum_q w_q E(X_q, t) / sum_q w_q   (``myocardium_quadrature``)

    Args:
      params: PhantomParams.
      t_frac: times as fractions of RR, any shape.
      n_u, n_theta, n_z: quadrature sizes (wall, angle, axis).
    Returns:
      dict with keys "rr", "cc", "ll", each of t_frac's shape (dimensionless). Jitted internally.
    """
    t = jnp.asarray(t_frac, dtype=jnp.result_type(float))
    return _global_strain_jit(with_neutral_phenotype(params), t, n_u, n_theta, n_z)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _global_strain_jit(params, t, n_u, n_theta, n_z):
    Xq, wq = myocardium_quadrature(params, n_u, n_theta, n_z, dtype=t.dtype)
    wq = wq / jnp.sum(wq)

    def mean_at(tt):
        s = jnp.full(wq.shape, activation(tt, params))
        E = _strain_rcl_flat(Xq, s, params)
        return jnp.stack([jnp.sum(wq * E[:, i, i]) for i in range(3)])

    out = jax.lax.map(mean_at, t.reshape(-1)).reshape(t.shape + (3,))
    return {k: out[..., i] for i, k in enumerate(STRAIN_KEYS)}


def strain_rate_truth(params, t_frac, n_u: int = 6, n_theta: int = 96, n_z: int = 24):
    """Global strain rate (1/s): d/dt of :func:`global_strain_truth` by forward-mode autodiff in t.

    Returns a dict with keys "rr", "cc", "ll", each of t_frac's shape.
    """
    t = jnp.asarray(t_frac, dtype=jnp.result_type(float))
    _, rate = jax.jvp(lambda tt: global_strain_truth(params, tt, n_u, n_theta, n_z), (t,), (jnp.ones_like(t),))
    rr = rr_interval_s(params)
    return {k: v / rr for k, v in rate.items()}


def landmarks(params):
    """Twelve midwall landmarks at ED, (12, 3) mm.

    Order: level-major, basal (zeta = 5/6), mid (1/2), apical (1/6); within a level septal (Theta = 0),
    anterior (90 deg), lateral (180 deg), inferior (-90 deg). Midwall radius (R_endo + R_epi) / 2 at that
    height (names in ``LANDMARK_LEVELS`` and ``LANDMARK_WALLS``). Jitted internally.
    """
    return _landmarks_jit(with_neutral_phenotype(params))


@jax.jit
def _landmarks_jit(params):
    lev = jnp.asarray([z for _, z in LANDMARK_LEVELS], dtype=jnp.result_type(float))
    ang = jnp.deg2rad(jnp.asarray([a for _, a in LANDMARK_WALLS], dtype=lev.dtype))
    Z = (lev * params.length_mm)[:, None] * jnp.ones_like(ang)[None, :]
    th = jnp.broadcast_to(ang[None, :], Z.shape)
    R = 0.5 * (endo_radius(Z, params) + epi_radius(th, Z, params))
    return jnp.stack([R * jnp.cos(th), R * jnp.sin(th), Z], axis=-1).reshape(12, 3)


def landmark_trajectories(params):
    """Landmark positions over the frames, (n_frames, 12, 3) mm; frame 0 equals :func:`landmarks`."""
    return _trajectories_jit(with_neutral_phenotype(params))


@jax.jit
def _trajectories_jit(params):
    s = activation(frame_fracs(params), params)
    return motion(_landmarks_jit(params)[None, :, :], s[:, None], params)


def _lv_cavity_ml_a(s, params, n_theta=256, n_z=32):
    dtype = jnp.result_type(s, float)
    z, wz = _gauss01(n_z, dtype)
    th = jnp.arange(n_theta, dtype=dtype) * (2.0 * np.pi / n_theta)
    rho, lam, _, _ = model_a.profiles(th[:, None], z[None, :] * params.length_mm, s, params)
    area_len = jnp.sum(0.5 * rho ** 2 * wz[None, :]) * (2.0 * np.pi / n_theta) * params.length_mm
    return lam * area_len / 1000.0


def _lv_cavity_ml_b(s, params, n_eta=48, n_theta=96):
    """Divergence theorem on the deformed endocardium closed by a cone from the deformed base ring to its
    centroid P (a flat lid when the ring is planar): V = 1/3 int (x - P) . (x_theta x x_eta) deta dtheta."""
    dtype = jnp.result_type(s, float)
    a_i, c_i, _, _ = prolate_axes(params)
    eta_b = jnp.arccos(1.0 - params.length_mm / c_i)
    v, wv = _gauss01(n_eta, dtype)
    eta = v * eta_b
    th = jnp.arange(n_theta, dtype=dtype) * (2.0 * np.pi / n_theta)

    def surface(e, t):
        X = jnp.stack([a_i * jnp.sin(e) * jnp.cos(t), a_i * jnp.sin(e) * jnp.sin(t), c_i * (1.0 - jnp.cos(e))], -1)
        return model_b.forward_pre_rigid(X, s, params)

    E, T = jnp.meshgrid(eta, th, indexing="ij")
    x, x_eta = jax.jvp(lambda e: surface(e, T), (E,), (jnp.ones_like(E),))
    _, x_th = jax.jvp(lambda t: surface(E, t), (T,), (jnp.ones_like(T),))
    P = jnp.mean(surface(jnp.full_like(th, eta_b), th), axis=0)
    integrand = jnp.sum((x - P) * jnp.cross(x_th, x_eta), axis=-1)
    w = (wv * eta_b)[:, None] * (2.0 * np.pi / n_theta)
    return jnp.sum(w * integrand) / 3.0 / 1000.0


def volumes_truth(params):
    """Exact volume curves over the frames, mL, each (n_frames,).

    Returns a dict:
      "lv_cavity_ml": LV cavity including the papillary muscles (ACDC label 3). Model A: lambda(s) int int
        rho^2 / 2 dTheta dZ. Model B: divergence theorem on the deformed endocardium below the base lid.
      "lv_myocardium_ml": J(s) V_myo(ED) (det F = J; Model B J = 1). LV mass = 1.05 g/mL x ED value.
      "rv_cavity_ml": ``anatomy.rv_cavity_volume_ml``.
    Jitted internally.
    """
    return _volumes_jit(with_neutral_phenotype(params))


@jax.jit
def _volumes_jit(params):
    s = activation(frame_fracs(params), params)
    v_myo_ed = jnp.sum(myocardium_quadrature(params, n_u=2, n_theta=256, n_z=32)[1]) / 1000.0
    if params.model == "A":
        lv = jax.vmap(lambda a: _lv_cavity_ml_a(a, params))(s)
        myo = v_myo_ed * model_a.volume_factor(s, params)
    else:
        lv = jax.vmap(lambda a: _lv_cavity_ml_b(a, params))(s)
        myo = v_myo_ed * jnp.ones_like(s)
    rv = jax.vmap(lambda a: rv_cavity_volume_ml(a, params))(s)
    return {"lv_cavity_ml": lv, "lv_myocardium_ml": myo, "rv_cavity_ml": rv}
