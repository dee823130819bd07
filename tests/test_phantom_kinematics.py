"""Phantom kinematics: exact motion, inverse maps, strain and strain rate against independent expectations.

Expected values come from the closed forms of phantoms_and_metrics.md §2 (re-derived here in NumPy), its
worked numbers (§2.1, §3, §5) and the §7.6 test matrix; nothing is copied from the code's own output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import deepstrain_jax.phantom as P
from deepstrain_jax.phantom import kinematics
from deepstrain_jax.phantom.geometry import epi_radius

HEALTHY = P.PhantomParams()  # §2.1: R_i 25, wall 9, L 80, rho_ES 17, lambda 0.85, twist 12 deg, J 1
REGIONAL = dataclasses.replace(HEALTHY, severity=1.0, territory_center_deg=50.0, territory_halfwidth_deg=55.0,
                               territory_level_lo=0.2, territory_level_hi=0.8, territory_edge_deg=12.0,
                               territory_edge_mm=5.0, wall_delta_mm=-3.0, j_es=0.93, twist_deg=14.0)
MODEL_B = dataclasses.replace(HEALTHY, model="B", severity=0.8, territory_center_deg=-60.0,
                              territory_halfwidth_deg=50.0, territory_level_lo=0.1, territory_level_hi=0.7,
                              nuisance=(0.05, 0.08, -0.04, 0.06, 0.1, -0.05, 0.2, 1.0, 2.0, -1.5))
N = 256


def _shell_points(rng, params, r_lo, r_hi, n=N, z=(0.05, 0.95)):
    """Random heart-frame points with R in [r_lo, r_hi], any angle, Z in the given level range."""
    R = rng.uniform(r_lo, r_hi, n)
    th = rng.uniform(-np.pi, np.pi, n)
    Z = rng.uniform(z[0], z[1], n) * params.length_mm
    return np.stack([R * np.cos(th), R * np.sin(th), Z], axis=-1)


def _myocardium_points(rng, params, n=N):
    """Random points inside the Model A ED wall, including the territory edges."""
    th = rng.uniform(-np.pi, np.pi, n)
    Z = rng.uniform(0.02, 0.98, n) * params.length_mm
    g = np.asarray(epi_radius(th, Z, params)) - params.r_endo_mm
    R = params.r_endo_mm + rng.uniform(0.0, 1.0, n) * g
    return np.stack([R * np.cos(th), R * np.sin(th), Z], axis=-1)


def _mask_and_partials(theta, Z, p):
    """Territory mask g(Theta, Z) of §3 and its partial derivatives, written out independently."""
    w, wz, L = np.deg2rad(p.territory_edge_deg), p.territory_edge_mm, p.length_mm
    d = np.mod(theta - np.deg2rad(p.territory_center_deg) + np.pi, 2 * np.pi) - np.pi
    h = np.deg2rad(p.territory_halfwidth_deg)
    sech2 = lambda v: 1.0 / np.cosh(v) ** 2  # noqa: E731
    a = 0.5 * (np.tanh((d + h) / w) - np.tanh((d - h) / w))
    a_t = 0.5 * (sech2((d + h) / w) - sech2((d - h) / w)) / w
    z1, z2 = L * p.territory_level_lo, L * p.territory_level_hi
    b = 0.5 * (np.tanh((Z - z1) / wz) - np.tanh((Z - z2) / wz))
    b_z = 0.5 * (sech2((Z - z1) / wz) - sech2((Z - z2) / wz)) / wz
    return a * b, a_t * b, a * b_z


def _closed_form_rcl(X, s, p):
    """§2 deformation-gradient table -> E in the reference cylindrical basis -> (r, c, l) components."""
    R, th, Z = np.hypot(X[:, 0], X[:, 1]), np.arctan2(X[:, 1], X[:, 0]), X[:, 2]
    ri, rho_h = p.r_endo_mm, p.rho_es_frac * p.r_endo_mm
    g, g_t, g_z = _mask_and_partials(th, Z, p)
    rho = ri - (ri - rho_h) * (1 - p.severity * g) * s
    rho_t = (ri - rho_h) * p.severity * s * g_t
    rho_z = (ri - rho_h) * p.severity * s * g_z
    lam, jac = 1 - (1 - p.lambda_es) * s, 1 - (1 - p.j_es) * s
    phi_z = s * np.deg2rad(p.twist_deg) / p.length_mm
    r = np.sqrt(rho ** 2 + jac * (R ** 2 - ri ** 2) / lam)
    f_rR, f_rT, f_rZ = jac * R / (lam * r), rho * rho_t / (R * r), rho * rho_z / r
    e = np.zeros((len(R), 3, 3))
    e_RR = 0.5 * (f_rR ** 2 - 1)
    e_TT = 0.5 * (f_rT ** 2 + (r / R) ** 2 - 1)
    e_ZZ = 0.5 * (f_rZ ** 2 + r ** 2 * phi_z ** 2 + lam ** 2 - 1)
    e_RT, e_RZ = 0.5 * f_rR * f_rT, 0.5 * f_rR * f_rZ
    e_TZ = 0.5 * (f_rT * f_rZ + r ** 2 * phi_z / R)
    # c_hat = -e_Theta, l_hat = -e_Z (kinematics docstring).
    e[:, 0, 0], e[:, 1, 1], e[:, 2, 2] = e_RR, e_TT, e_ZZ
    e[:, 0, 1] = e[:, 1, 0] = -e_RT
    e[:, 0, 2] = e[:, 2, 0] = -e_RZ
    e[:, 1, 2] = e[:, 2, 1] = e_TZ
    return e


strain_jit = jax.jit(P.strain_rcl)
rate_jit = jax.jit(P.strain_rate_rcl)


def _jacobians(X, s, params):
    return jax.jit(jax.vmap(jax.jacfwd(lambda p: P.motion(p, s, params))))(X)


def test_contract_names_import_from_kinematics():
    for name in ("PhantomParams", "sample_params", "activation", "es_frame", "frame_times_s", "motion",
                 "inverse_motion", "displacement", "strain_rcl", "global_strain_truth", "strain_rate_truth",
                 "tissue_reference", "TISSUE_TO_LABEL", "scene", "aha_truth", "landmarks",
                 "landmark_trajectories", "volumes_truth"):
        assert hasattr(kinematics, name), name


@pytest.mark.parametrize("t_frac", [0.2, 0.35])
def test_model_a_autodiff_strain_matches_closed_form(t_frac):
    with jax.enable_x64(True):
        X = _myocardium_points(np.random.default_rng(0), REGIONAL)
        got = np.asarray(strain_jit(X, t_frac, REGIONAL))
        s = float(P.activation(t_frac, REGIONAL))
        want = _closed_form_rcl(X, s, REGIONAL)
        assert np.max(np.abs(got - want)) <= 1e-6
        assert np.max(np.abs(want[:, 1, 1])) > 0.1  # the comparison is not vacuous


def test_model_a_det_f_equals_volume_factor():
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(1), REGIONAL, 26.0, 70.0)
        for s in (0.4, 1.0):
            F = _jacobians(X, s, REGIONAL)
            np.testing.assert_allclose(np.linalg.det(np.asarray(F)), 1 - (1 - REGIONAL.j_es) * s, atol=1e-12)


def test_model_b_det_f_is_one_and_identity_at_k_zero():
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(2), MODEL_B, 20.0, 60.0, z=(-0.05, 1.0))
        F = _jacobians(X, 0.8, MODEL_B)
        np.testing.assert_allclose(np.linalg.det(np.asarray(F)), 1.0, atol=1e-12)
        # s = 0 sets every k to zero: the chain is the identity.
        np.testing.assert_allclose(np.asarray(P.motion(X, 0.0, MODEL_B)), X, atol=1e-12)


def test_model_b_long_axis_stretch_at_equatorial_midwall():
    """Model B calibration (model_b docstring): lambda_ES is the long-axis stretch of the equatorial midwall,
    so E_ll there is (lambda^2 - 1) / 2 up to the small torsional shear term."""
    b = dataclasses.replace(HEALTHY, model="B")
    with jax.enable_x64(True):
        th = np.random.default_rng(12).uniform(-np.pi, np.pi, N)
        X = np.stack([29.5 * np.cos(th), 29.5 * np.sin(th), np.full(N, 80.0 / 1.5)], axis=-1)  # Z = c_i
        E = np.asarray(strain_jit(X, 0.35, b))
        np.testing.assert_allclose(E[:, 2, 2], 0.5 * (0.85 ** 2 - 1), atol=3e-3)


@pytest.mark.parametrize("params", [REGIONAL, MODEL_B], ids=["A", "B"])
def test_inverse_of_forward_is_identity(params):
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(3), params, params.r_endo_mm, 70.0, z=(0.0, 1.0))
        for s in (0.3, 1.0):
            x = P.motion(X, s, params)
            np.testing.assert_allclose(np.asarray(P.inverse_motion(x, s, params)), X, atol=1e-9)
            assert np.max(np.abs(np.asarray(x) - X)) > 1.0
    # float32 runs and stays within a micrometre-scale error.
    X32 = X.astype(np.float32)
    x32 = P.motion(X32, 1.0, params)
    assert x32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(P.inverse_motion(x32, 1.0, params)), X32, atol=2e-3)


@pytest.mark.parametrize("params", [REGIONAL, MODEL_B], ids=["A", "B"])
def test_zero_displacement_and_strain_at_ed(params):
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(4), params, 20.0, 60.0)
        for t in (0.0, 0.97, 1.0):  # 0.95..1 is at rest, and t is periodic
            np.testing.assert_allclose(np.asarray(P.displacement(X, t, params)), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(strain_jit(X, 0.0, params)), 0.0, atol=1e-12)


@pytest.mark.parametrize("kw, want", [
    ({}, (0.572, -0.170, -0.137)),
    ({"j_es": 0.93}, (0.457, -0.182, -0.137)),
    ({"rho_es_frac": 18.5 / 25, "lambda_es": 0.87}, (0.437, -0.143, -0.119)),
    ({"r_endo_mm": 33.0, "wall_mm": 7.0, "twist_deg": 4.0, "rho_es_frac": 29 / 33, "lambda_es": 0.94},
     (0.187, -0.088, -0.058)),
    # The table does not state the HCM twist; its E_ll of -0.092 needs 14 deg (the middle of the §3 HCM range
    # 12-16 deg); 12 deg would give -0.0929. E_rr and E_cc do not depend on the twist.
    ({"r_endo_mm": 20.0, "wall_mm": 16.0, "rho_es_frac": 11 / 20, "lambda_es": 0.90, "twist_deg": 14.0},
     (0.457, -0.157, -0.092)),
], ids=["healthy", "J0.93", "milder", "DCM", "HCM"])
def test_worked_end_systolic_wall_means(kw, want):
    """phantoms_and_metrics.md §2.1 table (values given to 3 decimals)."""
    with jax.enable_x64(True):
        g = P.global_strain_truth(dataclasses.replace(HEALTHY, **kw), 0.35)
        got = (float(g["rr"]), float(g["cc"]), float(g["ll"]))
        np.testing.assert_allclose(got, want, atol=5e-4)


def test_worked_transmural_values_healthy():
    """§2.1 healthy row: E_cc endo -0.269 / epi -0.105, E_rr endo 0.997."""
    with jax.enable_x64(True):
        X = np.array([[25.0, 0.0, 40.0], [0.0, 34.0, 40.0]])
        E = np.asarray(strain_jit(X, 0.35, HEALTHY))
        np.testing.assert_allclose([E[0, 1, 1], E[1, 1, 1], E[0, 0, 0]], [-0.269, -0.105, 0.997], atol=5e-4)


def test_pure_twist():
    """§7.6 #2: rho = R_i, lambda = 1, phi = tau Z -> E_rr = E_cc = 0, E_ll = r^2 tau^2 / 2, E_cl = r tau / 2."""
    p = dataclasses.replace(HEALTHY, rho_es_frac=1.0, lambda_es=1.0, j_es=1.0, twist_deg=12.0)
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(5), p, 25.0, 34.0)
        E = np.asarray(strain_jit(X, 0.35, p))
        R, tau = np.hypot(X[:, 0], X[:, 1]), np.deg2rad(12.0) / 80.0
        np.testing.assert_allclose(E[:, 0, 0], 0.0, atol=1e-12)
        np.testing.assert_allclose(E[:, 1, 1], 0.0, atol=1e-12)
        np.testing.assert_allclose(E[:, 2, 2], 0.5 * R ** 2 * tau ** 2, atol=1e-12)
        np.testing.assert_allclose(E[:, 1, 2], 0.5 * R * tau, atol=1e-12)
        np.testing.assert_allclose(E[:, 0, 1], 0.0, atol=1e-12)
        np.testing.assert_allclose(E[:, 0, 2], 0.0, atol=1e-12)


def test_pure_longitudinal():
    """§7.6 #3: rho^2 = R_i^2 / lambda -> E_ll = (lambda^2 - 1) / 2, E_rr = E_cc = (1 / lambda - 1) / 2."""
    lam = 0.85
    p = dataclasses.replace(HEALTHY, rho_es_frac=1.0 / np.sqrt(lam), lambda_es=lam, twist_deg=0.0)
    with jax.enable_x64(True):
        X = _shell_points(np.random.default_rng(6), p, 25.0, 34.0)
        E = np.asarray(strain_jit(X, 0.35, p))
        want = np.diag([0.5 * (1 / lam - 1), 0.5 * (1 / lam - 1), 0.5 * (lam ** 2 - 1)])
        np.testing.assert_allclose(E, np.broadcast_to(want, E.shape), atol=1e-12)


def test_activation_values_and_phases():
    p = dataclasses.replace(HEALTHY, early_filling_frac=0.7, diastasis_frac=0.05)
    t = np.array([0.0, 0.02, 0.04, 0.195, 0.35, 0.40, 0.43, 0.515, 0.60, 0.71, 0.82, 0.885, 0.95, 0.97, 1.0, 1.35])
    want = [0, 0, 0, 0.5, 1, 1, 1, 1 - 0.35, 0.3, 0.3 - 0.025, 0.25, 0.125, 0, 0, 0, 1]
    np.testing.assert_allclose(np.asarray(P.activation(t, p)), want, atol=1e-6)
    tt = np.linspace(0, 1, 1001, endpoint=False)
    s = np.asarray(P.activation(tt, p))
    systole, relax = (tt >= 0.04) & (tt <= 0.35), tt >= 0.35
    assert np.all(np.diff(s[systole]) > 0) and np.all(np.diff(s[relax]) <= 1e-7)
    assert s.min() >= 0 and s.max() <= 1
    assert P.es_frame(dataclasses.replace(p, n_frames=30)) == 11  # ACDC-style ES 12 (1-based) of 30
    assert P.es_frame(dataclasses.replace(p, n_frames=25)) == 9
    assert P.es_frame(dataclasses.replace(p, n_frames=20)) == 7
    ft = np.asarray(P.frame_times_s(dataclasses.replace(p, heart_rate_bpm=75.0, n_frames=25)))
    np.testing.assert_allclose(ft, np.arange(25) * 0.8 / 25, rtol=1e-6)


def test_strain_rate_autodiff_matches_finite_difference():
    with jax.enable_x64(True):
        p = dataclasses.replace(HEALTHY, heart_rate_bpm=72.0)
        t = np.array([0.15, 0.3, 0.5, 0.7, 0.88])
        quad = dict(n_u=3, n_theta=16, n_z=6)
        rate = P.strain_rate_truth(p, t, **quad)
        h = 1e-5
        up, dn = P.global_strain_truth(p, t + h, **quad), P.global_strain_truth(p, t - h, **quad)
        rr = 60.0 / 72.0
        for k in ("rr", "cc", "ll"):
            fd = (np.asarray(up[k]) - np.asarray(dn[k])) / (2 * h) / rr
            np.testing.assert_allclose(np.asarray(rate[k]), fd, rtol=1e-6, atol=1e-8)
        X = _myocardium_points(np.random.default_rng(7), REGIONAL, n=8)
        local = np.asarray(rate_jit(X, 0.25, REGIONAL))
        fd = np.asarray(strain_jit(X, 0.25 + h, REGIONAL)) - np.asarray(strain_jit(X, 0.25 - h, REGIONAL))
        np.testing.assert_allclose(local, fd / (2 * h) / (60.0 / REGIONAL.heart_rate_bpm), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bpm, want", [(60.0, (-0.88, 1.03)), (75.0, (-1.10, 1.28))])
def test_midwall_circumferential_strain_rate_peaks(bpm, want):
    """§5: healthy midwall E_cc rate, peak systolic and early diastolic (values to 2 decimals)."""
    with jax.enable_x64(True):
        p = dataclasses.replace(HEALTHY, heart_rate_bpm=bpm)
        t = np.linspace(0.12, 0.6, 481)[:, None]  # step 0.001 RR around both peaks
        sr = np.asarray(rate_jit(np.array([[29.5, 0.0, 40.0]]), t, p))[:, 0, 1, 1]
        np.testing.assert_allclose([sr.min(), sr.max()], want, atol=0.006)
        assert 0.04 < t[sr.argmin(), 0] < 0.35 < 0.43 < t[sr.argmax(), 0] < 0.60


def test_regional_akinesis_changes_strain_only_in_territory():
    base = dataclasses.replace(HEALTHY, territory_center_deg=60.0, territory_halfwidth_deg=60.0,
                               territory_level_lo=0.4, territory_level_hi=1.0, territory_edge_deg=10.0,
                               territory_edge_mm=3.0)
    sick = dataclasses.replace(base, severity=1.0)
    with jax.enable_x64(True):
        X = _myocardium_points(np.random.default_rng(8), base, n=2048)
        d = np.asarray(strain_jit(X, 0.35, sick)) - np.asarray(strain_jit(X, 0.35, base))
        seg = np.asarray(P.aha_truth(X, base))
        change = np.abs(d).max(axis=(1, 2))
        deg = np.rad2deg(np.arctan2(X[:, 1], X[:, 0]))
        core = (deg > 15.0) & (deg < 105.0) & (X[:, 2] > 0.4 * 80 + 9.0)  # 1.5 edge widths inside the box
        for k in (1, 2, 7, 8):
            inside = core & (seg == k)
            assert inside.sum() > 20 and np.mean(d[inside, 1, 1]) > 0.1, k  # E_cc: about -0.17 -> +0.02
        for k in (4, 5, 10, 11, 15):  # at least 60 deg (6 edge widths) away
            assert change[seg == k].max() < 1e-4, k
        low = X[:, 2] < 0.4 * 80 - 15.0  # 5 level-edge widths below the territory: only tanh tails remain
        assert change[low].max() < 1e-3
        # §3: an akinetic segment under global lambda = 0.85 still shows E_cc ~ +0.02, E_rr ~ +0.17.
        g = P.global_strain_truth(dataclasses.replace(HEALTHY, rho_es_frac=1.0), 0.35)
        assert abs(float(g["cc"]) - 0.02) < 0.006 and abs(float(g["rr"]) - 0.17) < 0.015


def test_jit_matches_no_jit():
    with jax.enable_x64(True):
        X = _myocardium_points(np.random.default_rng(9), REGIONAL, n=16)
        for fn, args in ((P.motion, (X, 0.6, REGIONAL)), (P.inverse_motion, (X, 0.6, MODEL_B)),
                         (P.strain_rcl, (X, 0.3, REGIONAL))):
            np.testing.assert_allclose(np.asarray(jax.jit(fn)(*args)), np.asarray(fn(*args)), rtol=1e-12,
                                       atol=1e-12)



def test_float32_strain_close_to_float64():
    X = _myocardium_points(np.random.default_rng(10), REGIONAL, n=N)
    e32 = strain_jit(X.astype(np.float32), 0.3, REGIONAL)
    assert e32.dtype == jnp.float32
    with jax.enable_x64(True):
        e64 = strain_jit(X, 0.3, REGIONAL)
    np.testing.assert_allclose(np.asarray(e32), np.asarray(e64), atol=2e-4)


@pytest.mark.parametrize("params", [REGIONAL, MODEL_B], ids=["A", "B"])
def test_motion_gradients(params):
    with jax.enable_x64(True):
        X = jnp.asarray(_shell_points(np.random.default_rng(11), params, 27.0, 33.0, n=4))
        check_grads(jax.jit(lambda p: P.motion(p, 0.7, params)), (X,), order=1, modes=("fwd", "rev"))
        check_grads(jax.jit(lambda s: P.motion(X, s, params)), (jnp.asarray(0.45),), order=1, modes=("fwd", "rev"))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        P.motion(np.zeros((4, 2)), 0.5, HEALTHY)
    with pytest.raises(ValueError, match="broadcast"):
        P.motion(np.zeros((4, 3)), np.zeros(3), HEALTHY)
    with pytest.raises(ValueError, match="model"):
        P.PhantomParams(model="C")
    with pytest.raises(ValueError, match="prolate"):
        P.validate_params(dataclasses.replace(HEALTHY, model="B", r_endo_mm=60.0))
