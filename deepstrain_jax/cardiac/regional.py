"""Regional (AHA segment) strain over the whole cycle: curves, strain rate, peaks, times to peak, dyssynchrony.

For each direction the segment curve is the mean of the voxel strain over the segment's ED myocardium, frame by
frame (:func:`deepstrain_jax.cardiac.polar_map.segment_means`). Indices are taken on the cycle started at ED
(frame ``(ed + k) % T`` is the ``k``-th of the cycle):

* **peak**: the systolic extreme in the direction's sign, the most negative value for circumferential and
  longitudinal strain (shortening), the most positive for radial (thickening);
* **time to peak**: ``k_peak * dt`` seconds after ED (``None`` without a frame interval);
* **strain rate**: ``np.gradient`` of the cycle curve over ``dt`` (the global curves' rule), in cine order;
* **mechanical dyssynchrony index**: the standard deviation (population, ddof 0) of the time to peak over the
  16 segments 1-16 that have a value (the apical cap, 17, is left out as in the literature), in milliseconds;
  ``None`` with fewer than 8 such segments or without a frame interval.
"""

from __future__ import annotations

import numpy as np

from deepstrain_jax.cardiac.polar_map import segment_means

DIRECTIONS = ("radial", "circumferential", "longitudinal")
PEAK_SIGN = {"radial": 1.0, "circumferential": -1.0, "longitudinal": -1.0}
MIN_SEGMENTS_FOR_DYSSYNCHRONY = 8


def segment_curves(components: dict, segments) -> dict[str, np.ndarray]:
    """``{direction: (T, 17)}`` mean strain (fraction) per segment and frame; NaN for an absent segment.

    Args:
      components: ``{direction: (T, X, Y, Z)}`` voxel strain maps on the grid of ``segments``.
      segments: ``(X, Y, Z)`` AHA map (1..17, 0 outside), :func:`deepstrain_jax.cardiac.aha.aha_segments`.
    """
    return {d: segment_means(np.asarray(v), segments, 17) for d, v in components.items()}


def regional_indices(curves: dict, dt: float | None, ed: int) -> dict:
    """Per direction: ``peak`` (17,) fraction, ``time_to_peak_s`` (17,) or None, ``rate_per_s`` (T, 17) or None
    (cine order), and ``dyssynchrony_ms`` (module docstring)."""
    out = {}
    for d, c in curves.items():
        c = np.asarray(c, np.float64)
        cycle = np.roll(c, -ed, axis=0)
        valid = np.all(np.isfinite(cycle), axis=0)
        k = np.argmax(PEAK_SIGN[d] * np.where(np.isfinite(cycle), cycle, -np.inf), axis=0)
        peak = np.where(valid, cycle[k, np.arange(cycle.shape[1])], np.nan)
        ttp = None if dt is None else np.where(valid, k * float(dt), np.nan)
        rate = None
        if dt is not None and cycle.shape[0] >= 2:
            rate = np.roll(np.gradient(cycle, axis=0) / float(dt), ed, axis=0)
        dys = None
        if ttp is not None:
            t16 = ttp[:16][np.isfinite(ttp[:16])]
            if t16.size >= MIN_SEGMENTS_FOR_DYSSYNCHRONY:
                dys = float(1000.0 * np.std(t16))
        out[d] = {"peak": peak, "time_to_peak_s": ttp, "rate_per_s": rate, "dyssynchrony_ms": dys}
    return out
