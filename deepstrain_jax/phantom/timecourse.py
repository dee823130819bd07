"""Activation time course s(t) of the phantom cardiac cycle.

One activation ``s in [0, 1]`` drives every motion amplitude: ``s = 0`` at end-diastole (ED, the R-wave
trigger, frame 0) and ``s = 1`` at end-systole (ES, 35% of the RR interval). Time enters as ``t_frac``, the
fraction of the RR interval (periodic: it is taken modulo 1); seconds are ``t_s = t_frac * RR``,
``RR = 60 / heart_rate_bpm``. Frames sample the cycle at ``t_frac = k / n_frames``, k = 0..n_frames-1
(retrospective gating). The phase fractions are fixed and independent of heart rate.

With S(u) = (1 - cos(pi u)) / 2 (C1: zero slope at both ends, so s(t) and every strain derived from it are
continuously differentiable in t):

    tau in [0, 0.04)     s = 0                                        isovolumic contraction
    tau in [0.04, 0.35]  s = S((tau - 0.04) / 0.31)                   ejection
    tau in (0.35, 0.43]  s = 1                                        isovolumic relaxation
    tau in (0.43, 0.60]  s = 1 - f_E S((tau - 0.43) / 0.17)           rapid filling
    tau in (0.60, 0.82]  s = 1 - f_E - f_D S((tau - 0.60) / 0.22)     diastasis
    tau in (0.82, 0.95]  s = (1 - f_E - f_D)(1 - S((tau - 0.82) / 0.13))   atrial kick
    tau in (0.95, 1)     s = 0
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

ES_FRAC = 0.35

# (name, start, end) as fractions of RR.
PHASES = (
    ("isovolumic_contraction", 0.00, 0.04),
    ("ejection", 0.04, 0.35),
    ("isovolumic_relaxation", 0.35, 0.43),
    ("rapid_filling", 0.43, 0.60),
    ("diastasis", 0.60, 0.82),
    ("atrial_kick", 0.82, 0.95),
    ("late_diastole", 0.95, 1.00),
)


def _smooth_step(u):
    u = jnp.clip(u, 0.0, 1.0)
    return 0.5 * (1.0 - jnp.cos(jnp.pi * u))


def activation(t_frac, params):
    """Activation s(t) in [0, 1]: 0 at ED, 1 at ES (table in the module docstring).

    Args:
      t_frac: time as a fraction of the RR interval, any shape (taken modulo 1).
      params: PhantomParams (uses early_filling_frac f_E and diastasis_frac f_D).
    Returns:
      s, same shape as ``t_frac``, floating dtype. Differentiable in ``t_frac`` (C1).
    """
    t = jnp.asarray(t_frac)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    tau = jnp.mod(t, 1.0)
    fe, fd = params.early_filling_frac, params.diastasis_frac
    eject = _smooth_step((tau - 0.04) / 0.31)
    fill = 1.0 - fe * _smooth_step((tau - 0.43) / 0.17)
    dias = 1.0 - fe - fd * _smooth_step((tau - 0.60) / 0.22)
    atrial = (1.0 - fe - fd) * (1.0 - _smooth_step((tau - 0.82) / 0.13))
    s = jnp.where(tau <= 0.35, eject,
                  jnp.where(tau <= 0.43, jnp.ones_like(tau),
                            jnp.where(tau <= 0.60, fill,
                                      jnp.where(tau <= 0.82, dias,
                                                jnp.where(tau <= 0.95, atrial, jnp.zeros_like(tau))))))
    return s.astype(tau.dtype)


def rr_interval_s(params):
    """RR interval in seconds: 60 / heart_rate_bpm."""
    return 60.0 / params.heart_rate_bpm


def frame_times_s(params):
    """Acquisition times of the frames in seconds: ``t_k = k RR / n_frames``, shape (n_frames,)."""
    k = jnp.arange(params.n_frames, dtype=jnp.result_type(float))
    return k * rr_interval_s(params) / params.n_frames


def frame_fracs(params):
    """Frame times as fractions of RR: ``k / n_frames``, shape (n_frames,)."""
    return jnp.arange(params.n_frames, dtype=jnp.result_type(float)) / params.n_frames


def es_frame(params) -> int:
    """0-based ES frame: the first frame of maximal activation (minimal LV volume).

    For n_frames >= 13 this is ``ceil(0.35 n_frames)`` (e.g. 9 of 25, 11 of 30 = ACDC-style ES 12, 1-based).
    Not jittable (returns a Python int).
    """
    n = params.n_frames
    k = math.ceil(ES_FRAC * n - 1e-9)
    if k / n <= 0.43:  # a frame on the plateau s = 1 (0.35 <= tau <= 0.43): the first one
        return k
    s = np.asarray(activation(frame_fracs(params), params))
    return int(np.argmax(s))
