"""Model A: incompressible (or volume-factor J) thick-walled cylinder.

Reference point (R, Theta, Z) in heart-frame cylindrical coordinates maps at activation s to (r, theta, z):

    (A1) r^2   = rho(Theta, Z, s)^2 + J(s) (R^2 - R_i^2) / lambda(s)
    (A2) theta = Theta + phi(Z, s)
    (A3) z     = lambda(s) Z                          (apical plane Z = 0 fixed)

    rho(Theta, Z, s) = R_i - (R_i - rho_ES(Theta, Z)) s,   rho_ES = R_i - (R_i - rho_h)(1 - a g(Theta, Z / L))
    lambda(s) = 1 - (1 - lambda_ES) s,   J(s) = 1 - (1 - J_ES) s
    phi(Z, s) = s twist (Z / L - (1 - f_base))         (apex -(1 - f_base) twist, base +f_base twist)

with rho_h = rho_es_frac R_i, g the territory mask and a the severity. Because rho depends on (Theta, Z)
only, lambda on nothing spatial and phi on Z only, the Jacobian in cylindrical coordinates is triangular and
det F = J exactly. The map is defined wherever r^2 >= 0 (it collapses the cavity core at ES; the cavity
itself is identified by r < rho, never through R).

Inverse (closed form): Z = z / lambda, Theta = theta - phi(Z), R^2 = R_i^2 + lambda (r^2 - rho(Theta, Z)^2) / J.
"""

from __future__ import annotations

import jax.numpy as jnp

from deepstrain_jax.phantom.geometry import polar_angle, safe_sqrt, territory_mask


def volume_factor(s, params):
    """J(s) = det F = 1 - (1 - J_ES) s."""
    return 1.0 - (1.0 - params.j_es) * s


def profiles(theta, Z, s, params):
    """(rho, lambda, J, phi) at reference angle Theta (rad), height Z (mm) and activation s."""
    r_i = params.r_endo_mm
    g = territory_mask(theta, Z / params.length_mm, params)
    rho_h = params.rho_es_frac * r_i
    rho_es = r_i - (r_i - rho_h) * (1.0 - params.severity * g)
    rho = r_i - (r_i - rho_es) * s
    lam = 1.0 - (1.0 - params.lambda_es) * s
    jac = volume_factor(s, params)
    phi = s * jnp.deg2rad(params.twist_deg) * (Z / params.length_mm - (1.0 - params.twist_base_frac))
    return rho, lam, jac, phi


def forward(X, s, params):
    """x = phi(X, s) for heart-frame points X (..., 3), s broadcastable to X.shape[:-1]."""
    x0, y0, Z = X[..., 0], X[..., 1], X[..., 2]
    R2 = x0 ** 2 + y0 ** 2
    R = safe_sqrt(R2)
    theta = polar_angle(x0, y0)
    rho, lam, jac, phi = profiles(theta, Z, s, params)
    r = safe_sqrt(rho ** 2 + jac * (R2 - params.r_endo_mm ** 2) / lam)
    # Rotate the unit radial vector by phi instead of going through theta + phi: exact and smooth.
    c, sn = x0 / R, y0 / R
    cp, sp = jnp.cos(phi), jnp.sin(phi)
    return jnp.stack([r * (c * cp - sn * sp), r * (sn * cp + c * sp), lam * Z], axis=-1)


def inverse_polar(x, s, params):
    """(R^2, Theta, Z) of the reference point of current points x (..., 3); R^2 < 0 off the map's image."""
    xc, yc, z = x[..., 0], x[..., 1], x[..., 2]
    lam = 1.0 - (1.0 - params.lambda_es) * s
    Z = z / lam
    _, _, _, phi = profiles(jnp.zeros_like(Z), Z, s, params)
    theta_ref = polar_angle(xc, yc) - phi
    rho, _, jac, _ = profiles(theta_ref, Z, s, params)
    R2 = params.r_endo_mm ** 2 + lam * (xc ** 2 + yc ** 2 - rho ** 2) / jac
    return R2, theta_ref, Z


def inverse(x, s, params):
    """X = phi^-1(x, s); R is clamped at 0 where R^2 < 0 (points inside the collapsed cavity core)."""
    R2, theta, Z = inverse_polar(x, s, params)
    R = jnp.sqrt(jnp.maximum(R2, 0.0))
    return jnp.stack([R * jnp.cos(theta), R * jnp.sin(theta), Z], axis=-1)
