"""Model B: Arts/Waks kinematic model of a truncated prolate spheroid with an apex.

Written from the chain of maps described in the reference (after Arts et al. 1992 and Waks et al. 1996). In
the centre frame p = X - (0, 0, c_i) (the spheroid centre; heart-frame origin at the endocardial apex), with
aspect a = c_i / a_i and every amplitude scaled by the activation s:

    1. p0 = F0 p,  F0 = diag(a^(1/3), a^(1/3), a^(-2/3))     the endocardium becomes the sphere |p0| = R0 = a^(1/3) a_i
    2. p1 = p0 (1 + K / |p0|^3)^(1/3),  K = s K_ES (1 - sev g)  radial: every sphere gains volume 4 pi K / 3
    3. p2 = R_z(a k2 s cos psi) p1,  cos psi = p0_z / |p0|       torsion
    4. p3 = diag(a^(-1/3) e^(k4 - k3/2), a^(-1/3) e^(-k4 - k3/2), a^(2/3) e^(k3)) p2,  k3 = s k3_ES
    5. p4 = F6(k7) F5(k6) F4(k5) p3                          shears, F4 = [[1, k5, 0], [k5, 1 + k5^2, 0], [0, 0, 1]]
    6. y = p4(X) - p4(apex)                                  the endocardial apex stays at the heart-frame origin
    7. x = R_z(k10) R_y(k9) R_x(k8) y + (k11, k12, k13)      rigid nuisance motion (about the origin)

Calibration (this project's choices): K = 3 k1 V_w / (4 pi) in the reference's notation, with
K_ES = R0^3 (rho_es_frac^2 lambda_ES - 1), so the closed endocardial spheroid reaches the ES volume ratio
rho_es_frac^2 lambda_ES of Model A's slab. Step 2 shrinks spheres isotropically, so it shortens the wall
along the axis as well; k3_ES = ln(lambda_ES) - ln(m) / 3, m = 1 + K_ES / q_mid^3 (q_mid = sphere-space radius
of the equatorial midwall), makes lambda_ES the long-axis stretch of the equatorial midwall, as it is
everywhere in Model A. (The reference's k3 = ln(lambda_ES) shortens the wall twice: with the §2.1 healthy
parameters the equatorial midwall gets E_ll = -0.233 and E_cc = -0.067, against -0.137 and -0.129 here.)
The endocardial apex-to-base distance then shortens by more than lambda_ES (the meridional stretch decreases
from endo- to epicardium), and in the apical third the fixed axis l_hat = -z crosses the oblique wall, so
E_ll there picks up wall thickening: Model B's global E_ll is much smaller in magnitude than Model A's. k2 = twist / (a (1 - cos(base_angle))),
so the endocardial apex-to-base-ring rotation difference is ``twist_deg`` (apex -2/3, base ring +1/3 of it
for a 120 deg base angle). k4..k13 = ``params.nuisance`` (zero for a canonical phantom).

Regional disease: the radial volume change is scaled by (1 - sev g) with g the territory mask evaluated at
the endocardial point on the same sphere-space ray (angle Theta, level zeta = c_i (1 + cos psi) / L). Because
K is then constant along rays, step 2 keeps det F = 1 and its closed-form inverse (|p0|^3 = |p1|^3 - K, same
direction). Every step has det 1, so det F = 1 for all parameters. The map is defined where
|p0|^3 + K > 0: a ball in the cavity centre collapses at ES (the cavity is identified through the inverse,
which is defined everywhere when K <= 0).
"""

from __future__ import annotations

import jax.numpy as jnp

from deepstrain_jax.phantom.geometry import polar_angle, prolate_axes, safe_sqrt, territory_mask


def constants(params):
    """(a_i, c_i, aspect a, R0, K_ES, k2, k3_ES) of Model B (mm, mm, -, mm, mm^3, rad, -)."""
    a_i, c_i, _, _ = prolate_axes(params)
    asp = c_i / a_i
    r0 = asp ** (1.0 / 3.0) * a_i
    k_es = r0 ** 3 * (params.rho_es_frac ** 2 * params.lambda_es - 1.0)
    k2 = jnp.deg2rad(params.twist_deg) / (asp * (1.0 - jnp.cos(jnp.deg2rad(params.base_angle_deg))))
    q_mid = asp ** (1.0 / 3.0) * (a_i + 0.5 * params.wall_mm)   # equatorial midwall, sphere space
    k3_es = jnp.log(params.lambda_es) - jnp.log1p(k_es / q_mid ** 3) / 3.0
    return a_i, c_i, asp, r0, k_es, k2, k3_es


def _rot(u, v, a):
    c, s = jnp.cos(a), jnp.sin(a)
    return c * u - s * v, s * u + c * v


def _radial_k(theta, cospsi, s, params):
    _, c_i, _, _, k_es, _, _ = constants(params)
    g = territory_mask(theta, c_i * (1.0 + cospsi) / params.length_mm, params)
    return s * k_es * (1.0 - params.severity * g)


def _nuis(params, i, s):
    return s * params.nuisance[i]


def _chain(X, s, params):
    """Steps 1-5 for heart-frame X; returns p4 in the centre frame as three components."""
    _, c_i, asp, _, _, k2, k3_es = constants(params)
    f_xy, f_z = asp ** (1.0 / 3.0), asp ** (-2.0 / 3.0)
    px, py, pz = X[..., 0] * f_xy, X[..., 1] * f_xy, (X[..., 2] - c_i) * f_z
    q0 = safe_sqrt(px ** 2 + py ** 2 + pz ** 2)
    cospsi = pz / q0
    k = _radial_k(polar_angle(px, py), cospsi, s, params)
    gain = jnp.cbrt(jnp.maximum(q0 ** 3 + k, 1e-30)) / q0
    px, py, pz = px * gain, py * gain, pz * gain
    px, py = _rot(px, py, asp * k2 * s * cospsi)
    k3, k4 = s * k3_es, _nuis(params, 0, s)
    px = px * f_xy ** -1 * jnp.exp(k4 - 0.5 * k3)
    py = py * f_xy ** -1 * jnp.exp(-k4 - 0.5 * k3)
    pz = pz * f_z ** -1 * jnp.exp(k3)
    k5, k6, k7 = _nuis(params, 1, s), _nuis(params, 2, s), _nuis(params, 3, s)
    px, py = px + k5 * py, k5 * px + (1.0 + k5 ** 2) * py
    px, pz = px + k6 * pz, k6 * px + (1.0 + k6 ** 2) * pz
    py, pz = py + k7 * pz, k7 * py + (1.0 + k7 ** 2) * pz
    return px, py, pz


def _apex_offset(s, params, dtype):
    apex = jnp.zeros(jnp.shape(s) + (3,), dtype=dtype)
    return _chain(apex, s, params)


def forward_pre_rigid(X, s, params):
    """Steps 1-6: heart-frame positions before the rigid nuisance motion, (..., 3)."""
    px, py, pz = _chain(X, s, params)
    ax, ay, az = _apex_offset(s, params, jnp.result_type(X, float))
    return jnp.stack([px - ax, py - ay, pz - az], axis=-1)


def _rigid_parts(s, params):
    return ([_nuis(params, i, s) for i in (4, 5, 6)], [_nuis(params, i, s) for i in (7, 8, 9)])


def forward(X, s, params):
    """x = phi(X, s) for heart-frame points X (..., 3), s broadcastable to X.shape[:-1]."""
    y = forward_pre_rigid(X, s, params)
    (k8, k9, k10), t = _rigid_parts(s, params)
    x, yy, z = y[..., 0], y[..., 1], y[..., 2]
    yy, z = _rot(yy, z, k8)
    z, x = _rot(z, x, k9)
    x, yy = _rot(x, yy, k10)
    return jnp.stack([x + t[0], yy + t[1], z + t[2]], axis=-1)


def undo_rigid(x, s, params):
    """Heart-frame pre-rigid positions y of current points x: the inverse of step 7."""
    (k8, k9, k10), t = _rigid_parts(s, params)
    xx, yy, z = x[..., 0] - t[0], x[..., 1] - t[1], x[..., 2] - t[2]
    xx, yy = _rot(xx, yy, -k10)
    z, xx = _rot(z, xx, -k9)
    yy, z = _rot(yy, z, -k8)
    return jnp.stack([xx, yy, z], axis=-1)


def inverse_pre_rigid(y, s, params):
    """Inverse of steps 1-6, closed form: heart-frame reference points X of pre-rigid positions y."""
    _, c_i, asp, _, _, k2, k3_es = constants(params)
    f_xy, f_z = asp ** (1.0 / 3.0), asp ** (-2.0 / 3.0)
    ax, ay, az = _apex_offset(s, params, jnp.result_type(y, float))
    px, py, pz = y[..., 0] + ax, y[..., 1] + ay, y[..., 2] + az
    k5, k6, k7 = _nuis(params, 1, s), _nuis(params, 2, s), _nuis(params, 3, s)
    py, pz = (1.0 + k7 ** 2) * py - k7 * pz, -k7 * py + pz
    px, pz = (1.0 + k6 ** 2) * px - k6 * pz, -k6 * px + pz
    px, py = (1.0 + k5 ** 2) * px - k5 * py, -k5 * px + py
    k3, k4 = s * k3_es, _nuis(params, 0, s)
    px = px * f_xy * jnp.exp(-k4 + 0.5 * k3)
    py = py * f_xy * jnp.exp(k4 + 0.5 * k3)
    pz = pz * f_z * jnp.exp(-k3)
    q1 = safe_sqrt(px ** 2 + py ** 2 + pz ** 2)
    cospsi = pz / q1
    # The rotation preserves z and |p|, so its angle is known from the rotated point.
    px, py = _rot(px, py, -asp * k2 * s * cospsi)
    k = _radial_k(polar_angle(px, py), cospsi, s, params)
    gain = jnp.cbrt(jnp.maximum(q1 ** 3 - k, 1e-30)) / q1
    return jnp.stack([px * gain / f_xy, py * gain / f_xy, pz * gain / f_z + c_i], axis=-1)


def inverse(x, s, params):
    """X = phi^-1(x, s), closed form (see module docstring)."""
    return inverse_pre_rigid(undo_rigid(x, s, params), s, params)
