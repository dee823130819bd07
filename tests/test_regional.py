"""Regional strain over the cycle (`cardiac.regional`) against hand-built segment curves with known peaks and
times to peak, and the written aha_curves.csv / aha_segments.csv against results.json."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrain_jax.cardiac import regional


def _synthetic(t=20, ed=3):
    """A 4 x 5 x 17 grid, one slice per segment: segment s shortens with a sine peaking at cycle frame 5 + s % 7."""
    segments = np.zeros((4, 5, 17), np.int32)
    for s in range(17):
        segments[1:3, 1:4, s] = s + 1
    k = np.arange(t)
    peak_frame = 5 + np.arange(17) % 7
    amplitude = 0.10 + 0.01 * np.arange(17)
    cycle = -amplitude[None, :] * np.exp(-0.5 * ((k[:, None] - peak_frame[None, :]) / 2.0) ** 2)  # (t, 17)
    cine = np.roll(cycle, ed, axis=0)  # frame ed of the cine is cycle frame 0
    cc = np.zeros((t, 4, 5, 17))
    for s in range(17):
        cc[:, 1:3, 1:4, s] = cine[:, s, None, None]
    return segments, cc, cine, peak_frame, amplitude


def test_segment_curves_peaks_times_and_dyssynchrony_by_hand():
    segments, cc, cine, peak_frame, amplitude = _synthetic()
    curves = regional.segment_curves({"circumferential": cc, "radial": -cc}, segments)
    np.testing.assert_allclose(curves["circumferential"], cine, atol=1e-12)
    ind = regional.regional_indices(curves, dt=0.04, ed=3)
    c = ind["circumferential"]
    np.testing.assert_allclose(c["peak"], -amplitude, atol=1e-12)
    np.testing.assert_allclose(c["time_to_peak_s"], 0.04 * peak_frame, atol=1e-12)
    assert c["dyssynchrony_ms"] == pytest.approx(1000 * np.std(0.04 * peak_frame[:16]))
    np.testing.assert_allclose(ind["radial"]["peak"], amplitude, atol=1e-12)  # radial peaks positive
    np.testing.assert_allclose(c["rate_per_s"], np.roll(np.gradient(np.roll(cine, -3, 0), axis=0) / 0.04, 3, 0))
    no_dt = regional.regional_indices(curves, dt=None, ed=3)["circumferential"]
    assert no_dt["time_to_peak_s"] is None and no_dt["dyssynchrony_ms"] is None and no_dt["rate_per_s"] is None


def test_absent_segments_are_nan_and_too_few_give_no_dyssynchrony():
    segments, cc, *_ = _synthetic()
    segments[segments > 6] = 0  # only segments 1-6 placed
    ind = regional.regional_indices(regional.segment_curves({"circumferential": cc}, segments), 0.04, 3)
    c = ind["circumferential"]
    assert np.isnan(c["peak"][6:]).all() and np.isfinite(c["peak"][:6]).all()
    assert c["dyssynchrony_ms"] is None  # 6 < 8 segments
