"""Reference (ED) geometry of the phantom LV in the heart frame, both models.

Heart frame (mm): x = septal (LV axis towards the septal midline / RV), y = anterior, z = x cross y = apex ->
base. Cylindrical coordinates (R, Theta, Z): R distance from the long axis, Theta = atan2(y, x) from the
septal midline, positive towards anterior, Z along the axis. The level of a point is zeta = Z / L.

* Model A (thick-walled cylinder): origin on the axis at the apical end of the modelled segment;
  myocardium R_i <= R <= R_o(Theta, Z), 0 <= Z <= L; cavity R < R_i, 0 <= Z <= L.
* Model B (truncated prolate spheroid): origin on the axis at the endocardial apex; the endocardium is the
  spheroid with semi-axes (a_i, a_i, c_i) centred at Z = c_i, c_i = L / (1 - cos(base_angle)); the nominal
  epicardium is confocal with equatorial semi-axis a_o = R_i + wall, c_o = sqrt(a_o^2 + c_i^2 - a_i^2);
  both are cut by the base plane Z = L. Myocardium R_endo(Z) <= R <= R_epi(Theta, Z), c_i - c_o <= Z <= L
  (R_endo = 0 below the endocardial apex: the apical cap); cavity R < R_endo(Z), 0 <= Z <= L.

Regional wall-thickness change: R_o = R_i + wall + wall_delta g(Theta, zeta)
(Model A); Model B scales its nominal epicardial radius by (1 + wall_delta g / a_o), which is the same change
at the equator and vanishes towards the epicardial apex. g is the smooth territory mask
``territory_mask``. Angles are radians inside this module unless a name ends in ``_deg``.
"""

from __future__ import annotations

import jax.numpy as jnp


def polar_angle(x, y):
    """atan2(y, x) with a finite gradient on the axis (x = y = 0 maps to angle 0)."""
    on_axis = (x == 0) & (y == 0)
    return jnp.arctan2(y, jnp.where(on_axis, jnp.ones_like(x), x))


def safe_sqrt(v, tiny=1e-30):
    """sqrt(max(v, tiny)): finite value and gradient at and below zero (gradient 0 there)."""
    return jnp.sqrt(jnp.maximum(v, tiny))


def cylindrical(X):
    """(R, Theta, Z) of heart-frame points X (..., 3); Theta in (-pi, pi]."""
    X = jnp.asarray(X)
    return jnp.hypot(X[..., 0], X[..., 1]), polar_angle(X[..., 0], X[..., 1]), X[..., 2]


def wrap_angle(a):
    """Wrap radians to [-pi, pi)."""
    return jnp.mod(a + jnp.pi, 2.0 * jnp.pi) - jnp.pi


def territory_mask(theta, level, params):
    """Smooth territory mask g(Theta, zeta) in [0, 1].

        g = 1/2 [tanh((d + h) / w) - tanh((d - h) / w)] * 1/2 [tanh(L (zeta - lo) / w_z) - tanh(L (zeta - hi) / w_z)]

    with d = Theta - Theta_c wrapped to [-pi, pi), h the half-width, w and w_z the edge widths (rad, mm).

    Args:
      theta: angle from the septal midline (rad), any shape.
      level: zeta = Z / L, broadcastable with theta.
      params: PhantomParams (territory_* fields).
    Returns:
      g, broadcast shape.
    """
    d = wrap_angle(theta - jnp.deg2rad(params.territory_center_deg))
    h = jnp.deg2rad(params.territory_halfwidth_deg)
    w = jnp.deg2rad(params.territory_edge_deg)
    ang = 0.5 * (jnp.tanh((d + h) / w) - jnp.tanh((d - h) / w))
    zl = params.length_mm * level
    wz = params.territory_edge_mm
    lev = 0.5 * (jnp.tanh((zl - params.length_mm * params.territory_level_lo) / wz)
                 - jnp.tanh((zl - params.length_mm * params.territory_level_hi) / wz))
    return ang * lev


def prolate_axes(params):
    """Model B spheroid semi-axes (a_i, c_i, a_o, c_o) in mm (see module docstring)."""
    a_i = params.r_endo_mm
    c_i = params.length_mm / (1.0 - jnp.cos(jnp.deg2rad(params.base_angle_deg)))
    a_o = params.r_endo_mm + params.wall_mm
    c_o = jnp.sqrt(a_o ** 2 + c_i ** 2 - a_i ** 2)
    return a_i, c_i, a_o, c_o


def myocardium_z_range(params):
    """(Z_lo, Z_hi) of the reference myocardium: (0, L) for Model A, (c_i - c_o, L) for Model B."""
    if params.model == "A":
        return 0.0, params.length_mm
    _, c_i, _, c_o = prolate_axes(params)
    return c_i - c_o, params.length_mm


def endo_radius(Z, params):
    """Reference endocardial radius at height Z (mm).

    Model A: R_i. Model B: the closed endocardial spheroid, a_i sqrt(1 - (Z - c_i)^2 / c_i^2), 0 outside
    [0, 2 c_i] (the base cut at Z = L is applied by the callers).
    """
    return jnp.sqrt(endo_radius_sq(Z, params))


def endo_radius_sq(Z, params):
    """Square of :func:`endo_radius` (smooth in Z for Model B: a polynomial on [0, 2 c_i])."""
    Z = jnp.asarray(Z)
    if params.model == "A":
        return jnp.broadcast_to(jnp.asarray(params.r_endo_mm ** 2, dtype=jnp.result_type(Z, float)), Z.shape)
    a_i, c_i, _, _ = prolate_axes(params)
    return a_i ** 2 * jnp.maximum(1.0 - (Z - c_i) ** 2 / c_i ** 2, 0.0)


def epi_radius(theta, Z, params):
    """Reference epicardial radius R_o(Theta, Z) (mm), including the territory wall change.

    Model A: R_i + wall + wall_delta g. Model B: a_o sqrt(1 - (Z - c_i)^2 / c_o^2) (1 + wall_delta g / a_o),
    0 below the epicardial apex.
    """
    g = territory_mask(theta, jnp.asarray(Z) / params.length_mm, params)
    if params.model == "A":
        return params.r_endo_mm + params.wall_mm + params.wall_delta_mm * g
    _, c_i, a_o, c_o = prolate_axes(params)
    nominal = a_o * jnp.sqrt(jnp.maximum(1.0 - (Z - c_i) ** 2 / c_o ** 2, 0.0))
    return nominal * (1.0 + params.wall_delta_mm * g / a_o)


def in_myocardium_polar(R2, theta, Z, params):
    """Reference myocardium membership from (R^2, Theta, Z): R_endo^2 <= R^2 <= R_epi^2 within the Z range."""
    z_lo, z_hi = myocardium_z_range(params)
    inside = (R2 >= endo_radius_sq(Z, params)) & (R2 <= epi_radius(theta, Z, params) ** 2)
    return inside & (Z >= z_lo) & (Z <= z_hi)


def in_myocardium(X, params):
    """Boolean (...,): heart-frame reference points X (..., 3) inside the ED myocardium."""
    X = jnp.asarray(X)
    R2 = X[..., 0] ** 2 + X[..., 1] ** 2
    return in_myocardium_polar(R2, polar_angle(X[..., 0], X[..., 1]), X[..., 2], params)
