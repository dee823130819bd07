"""ops/strain_rate.py: strain rate of sampled analytic curves and indices of hand-built curves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepstrain_jax.ops.strain_rate import strain_indices, strain_rate


def test_strain_rate_of_a_sampled_sine():
    # E(t) = A sin(w t + p). Central difference inside: A w cos(w t + p) sin(w dt) / (w dt), within
    # A w (w dt)^2 / 6 of the derivative; one-sided at the two ends: within A w^2 dt / 2.
    with jax.enable_x64(True):
        amp, w, p, dt = -0.18, 2 * np.pi / 0.9, 0.4, 0.03
        t = np.arange(30) * dt
        curves = np.stack([amp * np.sin(w * t + p), 2 * amp * np.sin(w * t + p)])  # a leading axis
        sr = np.asarray(strain_rate(curves, dt))
        exact = amp * w * np.cos(w * t + p)
        np.testing.assert_allclose(sr[0, 1:-1], exact[1:-1] * np.sin(w * dt) / (w * dt), atol=1e-12)
        assert np.all(np.abs(sr[0, 1:-1] - exact[1:-1]) <= abs(amp) * w * (w * dt) ** 2 / 6)
        assert np.all(np.abs(sr[0, [0, -1]] - exact[[0, -1]]) <= abs(amp) * w**2 * dt / 2)
        np.testing.assert_allclose(sr, np.gradient(curves, dt, axis=-1), atol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.jit(strain_rate)(curves, dt)), sr, atol=1e-12)


def test_strain_rate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 frames"):
        strain_rate(jnp.zeros((3, 1)), 0.03)
    with pytest.raises(ValueError, match="dt_s"):
        strain_rate(jnp.zeros(5), 0.0)


# Hand-built circumferential-like curve, dt = 0.05 s. Its np.gradient strain rate, by hand (1/s):
#   frame:  0     1     2     3     4     5    6    7    8     9    10    11
#   SR:   -0.8  -1.0  -1.1  -0.8  -0.2   0.6  0.8  0.4  0.15  0.1  0.75  1.4
CURVE = [0.0, -0.04, -0.10, -0.15, -0.18, -0.17, -0.12, -0.09, -0.08, -0.075, -0.07, 0.0]
DT = 0.05


def test_strain_indices_of_a_hand_built_curve():
    ix = strain_indices(CURVE, DT)
    # ES = frame of peak |E| = 4; SRs = most negative SR in frames 0..4; the early-diastolic window is the first
    # ceil(0.5 * 7) = 4 frames after ES (5..8), so the atrial-kick rate 1.4 at frame 11 is left out.
    assert ix.es_frame == 4
    assert ix.ess == pytest.approx(-0.18) and ix.peak == pytest.approx(-0.18)
    assert ix.time_to_peak_s == pytest.approx(0.2)
    assert ix.srs == pytest.approx(-1.1) and ix.time_srs_s == pytest.approx(0.1)
    assert ix.sre == pytest.approx(0.8) and ix.time_sre_s == pytest.approx(0.3)

    whole = strain_indices(CURVE, DT, early_diastole_fraction=1.0)
    assert whole.sre == pytest.approx(1.4) and whole.time_sre_s == pytest.approx(0.55)

    given = strain_indices(CURVE, DT, es_frame=5)
    assert given.es_frame == 5 and given.ess == pytest.approx(-0.17) and given.peak == pytest.approx(-0.18)
    assert given.srs == pytest.approx(-1.1) and given.sre == pytest.approx(0.8)  # window 6..8

    radial = strain_indices([-c for c in CURVE], DT)  # signs follow the strain
    assert radial.ess == pytest.approx(0.18) and radial.srs == pytest.approx(1.1) and radial.sre == pytest.approx(-0.8)


def test_strain_indices_undefined_values_are_nan():
    plateau = strain_indices([0.0, -0.1, -0.2, -0.2, -0.2], 0.1)  # no relaxation after ES
    assert plateau.es_frame == 2 and plateau.srs == pytest.approx(-1.0)
    assert math.isnan(plateau.sre) and math.isnan(plateau.time_sre_s)
    zero = strain_indices(np.zeros(6), 0.1)
    assert math.isnan(zero.peak) and math.isnan(zero.srs) and math.isnan(zero.sre) and zero.ess == 0.0
    with pytest.raises(ValueError, match="es_frame"):
        strain_indices(CURVE, DT, es_frame=12)
    with pytest.raises(ValueError, match="NaN"):
        strain_indices([0.0, np.nan, 0.1], DT)
