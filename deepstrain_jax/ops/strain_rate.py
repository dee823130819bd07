"""Strain rate and the strain indices reported per subject (ESS, peak strain, SRs, SRe).

Conventions: a strain curve has frames on its last axis, frame 0 = ED (the reference of the Lagrangian strain),
frames equally spaced by ``dt_s`` seconds (the cine frame interval), covering one cardiac cycle (the frame after the
last is the next ED). Strain is dimensionless, strain rate in 1/s. Signs are kept everywhere: circumferential and
longitudinal strain are negative in systole, radial strain positive, and so are their systolic strain rates; the
early-diastolic strain rate has the opposite sign.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def strain_rate(strain_curve, dt_s):
    """Strain rate: the time derivative of strain curves by finite differences, in 1/s.

        SR[k] = (E[k+1] - E[k-1]) / (2 dt_s)   for 0 < k < T-1,
        SR[0] = (E[1] - E[0]) / dt_s,   SR[T-1] = (E[T-1] - E[T-2]) / dt_s,

    i.e. ``numpy.gradient(strain_curve, dt_s, axis=-1)`` (second-order inside, first-order at the ends; the ends are
    not wrapped around the cycle). Jittable; differentiable.

    Args:
      strain_curve: ``(..., T)`` strain over ``T >= 2`` frames (last axis).
      dt_s: frame interval in seconds (> 0).
    Returns:
      ``(..., T)`` strain rate in 1/s.
    """
    curve = jnp.asarray(strain_curve)
    if curve.ndim == 0 or curve.shape[-1] < 2:
        raise ValueError(f"strain_curve needs at least 2 frames on its last axis, got shape {curve.shape}")
    if not jnp.issubdtype(curve.dtype, jnp.floating):
        curve = curve.astype(jnp.float32)
    try:
        _checked_dt(dt_s)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        pass  # traced under jit: cannot check the value
    return jnp.gradient(curve, axis=-1) / dt_s


def _checked_dt(dt_s) -> float:
    dt = float(dt_s)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt_s must be a finite positive frame interval in seconds, got {dt_s}")
    return dt


class StrainIndices(NamedTuple):
    """Indices of one global strain curve; times in s from frame 0 (ED). NaN where undefined (see strain_indices)."""

    es_frame: int  # end-systolic frame used
    ess: float  # end-systolic strain E[es_frame]
    peak: float  # signed strain of largest magnitude
    time_to_peak_s: float
    srs: float  # peak systolic strain rate, 1/s, same sign as the strain
    time_srs_s: float
    sre: float  # peak early-diastolic strain rate, 1/s, opposite sign
    time_sre_s: float


def strain_indices(curve, dt_s, es_frame: int | None = None, *, early_diastole_fraction: float = 0.5
                   ) -> StrainIndices:
    """End-systolic strain, peak strain and peak systolic / early-diastolic strain rates of one global curve.

    With ``SR = strain_rate(curve, dt_s)`` and ``T`` frames (frame 0 = ED):

    * ES frame ``k_es``: ``es_frame`` if given (e.g. from the volume curve: the frame of smallest LV volume),
      otherwise the frame of peak ``|E|`` (first one on ties). ``ESS = E[k_es]``.
    * Peak strain: ``E[k_p]``, ``k_p = argmax_k |E[k]|`` (sign kept); ``time_to_peak_s = k_p * dt_s``.
    * Strain sign ``s = sign(ESS)`` (``sign(peak)`` when ``ESS == 0``): negative for circumferential and
      longitudinal strain, positive for radial.
    * SRs, peak systolic strain rate: ``SR[k]`` at ``k = argmax s * SR[k]`` over frames ``0 <= k <= k_es`` (the
      extremum with the sign of the strain, sign kept), NaN if no such frame has ``s * SR > 0``.
    * SRe, peak early-diastolic strain rate: ``SR[k]`` at ``k = argmax -s * SR[k]`` over the early-diastolic window
      ``k_es < k <= k_es + ceil(early_diastole_fraction * (T - 1 - k_es))`` (by default the first half of the frames
      after ES: rapid filling, leaving out diastasis and the atrial kick), NaN if the window is empty or no frame
      in it has ``-s * SR > 0``.
    * Times: frame index times ``dt_s``. For an all-zero curve, peak, SRs, SRe and their times are NaN.

    Numpy (host) function on one curve.

    Args:
      curve: ``(T,)`` global strain per frame, ``T >= 3``.
      dt_s: frame interval in seconds.
      es_frame: end-systolic frame index, or None for the frame of peak ``|E|``.
      early_diastole_fraction: fraction of the post-ES frames searched for SRe, in ``(0, 1]``.
    Returns:
      :class:`StrainIndices` of Python scalars.
    """
    e = np.asarray(curve, dtype=np.float64)
    if e.ndim != 1 or e.shape[0] < 3:
        raise ValueError(f"curve must be (T,) with T >= 3 frames, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("curve contains NaN or infinite values")
    if not 0.0 < early_diastole_fraction <= 1.0:
        raise ValueError(f"early_diastole_fraction must be in (0, 1], got {early_diastole_fraction}")
    n = e.shape[0]
    dt = _checked_dt(dt_s)
    sr = np.gradient(e) / dt  # strain_rate's formula, kept in float64 on the host
    k_peak = int(np.argmax(np.abs(e)))
    if es_frame is None:
        k_es = k_peak
    else:
        k_es = int(es_frame)
        if not 0 <= k_es < n:
            raise ValueError(f"es_frame must be in [0, {n - 1}], got {es_frame}")
    sign = np.sign(e[k_es]) if e[k_es] != 0 else np.sign(e[k_peak])

    def extremum(frames, direction):
        if sign == 0 or len(frames) == 0:
            return math.nan, math.nan
        values = direction * sr[frames]
        best = int(np.argmax(values))
        if values[best] <= 0:
            return math.nan, math.nan
        return float(sr[frames[best]]), frames[best] * dt

    srs, t_srs = extremum(np.arange(0, k_es + 1), sign)
    window = math.ceil(early_diastole_fraction * (n - 1 - k_es))
    sre, t_sre = extremum(np.arange(k_es + 1, k_es + 1 + window), -sign)
    peak_valid = e[k_peak] != 0
    return StrainIndices(
        es_frame=k_es, ess=float(e[k_es]), peak=float(e[k_peak]) if peak_valid else math.nan,
        time_to_peak_s=k_peak * dt if peak_valid else math.nan,
        srs=srs, time_srs_s=t_srs, sre=sre, time_sre_s=t_sre)
