"""Per-segment reductions of voxel maps and the bull's-eye (polar map) layout of the AHA 17-segment model.

Segment maps come from :func:`deepstrain_jax.cardiac.aha.aha_segments` (1..17 on the ED myocardium, 0 elsewhere).
Display convention (:func:`bullseye`): the heart seen from the apex, anterior up, septum left, inferior down,
lateral right; apex at the centre, base outermost (see the orientation notes in :mod:`deepstrain_jax.cardiac.aha`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_REDUCERS = {"mean": np.mean, "std": np.std, "median": np.median, "min": np.min, "max": np.max,
             "count": lambda v, axis: np.full(v.shape[:-1], v.shape[-1], dtype=np.float64)}


def segment_reduce(value_map, segments, n_segments: int = 17, reduce: str = "mean") -> np.ndarray:
    """Per-segment reduction of a voxel map: ``out[..., s - 1] = reduce({v[..., x] : segments[x] = s})``.

    Args:
      value_map: ``(X, Y, Z)`` or ``(..., X, Y, Z)`` values (e.g. ``(T, X, Y, Z)`` strain over time).
      segments: ``(X, Y, Z)`` int map from :func:`aha_segments`; 0 (and nothing else) is ignored.
      n_segments: 16 or 17; the length of the last output axis.
      reduce: ``"mean"``, ``"std"`` (population, ddof 0), ``"median"``, ``"min"``, ``"max"`` or ``"count"``.
    Returns:
      ``(..., n_segments)`` float64; NaN for a segment without voxels (``"count"`` gives 0). NaN values inside a
      segment propagate.
    """
    if reduce not in _REDUCERS:
        raise ValueError(f"reduce must be one of {sorted(_REDUCERS)}, got {reduce!r}")
    if n_segments not in (16, 17):
        raise ValueError(f"n_segments must be 16 or 17, got {n_segments}")
    seg = np.asarray(segments)
    values = np.asarray(value_map)  # converted to float64 below, at the segment voxels only
    if seg.ndim != 3 or values.shape[values.ndim - 3:] != seg.shape:
        raise ValueError(f"value_map {values.shape} must end with the segments' shape (X, Y, Z) = {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segments must be an integer map, got dtype {seg.dtype}")
    if seg.min() < 0 or seg.max() > n_segments:
        raise ValueError(f"segments holds ids outside 0..{n_segments}: min {seg.min()}, max {seg.max()}")
    lead = values.shape[:values.ndim - 3]
    # Only the voxels of some segment (a few % of the grid) are gathered, once: the same values in the same
    # order as selecting from the whole map, so the same numbers.
    inside = np.flatnonzero(seg.reshape(-1))
    flat = values.reshape(*lead, -1)[..., inside].astype(np.float64)
    ids = seg.reshape(-1)[inside]
    out = np.full((*lead, n_segments), 0.0 if reduce == "count" else np.nan)
    for s in range(1, n_segments + 1):
        sel = ids == s
        if sel.any():
            out[..., s - 1] = _REDUCERS[reduce](flat[..., sel], axis=-1)
    return out


def segment_means(value_map, segments, n_segments: int = 17) -> np.ndarray:
    """Per-segment mean, ``(..., n_segments)``; NaN for an absent segment. See :func:`segment_reduce`."""
    return segment_reduce(value_map, segments, n_segments, "mean")


class Bullseye(NamedTuple):
    """Wedge geometry of a bull's-eye plot, one row per segment (see :func:`bullseye`)."""

    segment: np.ndarray
    value: np.ndarray
    r_inner: np.ndarray
    r_outer: np.ndarray
    theta_start_deg: np.ndarray
    theta_end_deg: np.ndarray
    label_xy: np.ndarray


def bullseye(segment_values) -> Bullseye:
    """Bull's-eye wedges for 16 or 17 segment values, in display coordinates.

    Display: angles counter-clockwise from the +x (right) axis as in ``matplotlib.patches.Wedge``; anterior up
    (90 deg), septum left (180), inferior down (270), lateral right (0). Rings: cap 17 ``r in [0, 1)``, apical
    ``[1, 2)``, mid ``[2, 3)``, basal ``[3, 4)`` (apex at the centre, base outermost; with 16 values the centre
    disc stays empty). Basal/mid segment ``m`` (1..6 / 7..12) spans ``[60 + 60 (m - 1), 120 + 60 (m - 1))``
    (segment 1 centred at the top, 2 and 3 either side of the septal midline at 180); apical 13..16 are
    centred at 90, 180, 270, 360. ``theta_start_deg`` is in [0, 360) and ``theta_end_deg = start + width``
    (may exceed 360). Display uses the nominal sector widths whatever layout assigned the voxels.

    Args:
      segment_values: ``(16,)`` or ``(17,)`` values of segments 1..n.
    Returns:
      :class:`Bullseye` of ``(n,)`` arrays and ``label_xy`` ``(n, 2)``, the wedge centre for text.
    """
    v = np.asarray(segment_values, dtype=np.float64)
    if v.shape not in ((16,), (17,)):
        raise ValueError(f"segment_values must have 16 or 17 entries, got shape {v.shape}")
    n = v.shape[0]
    seg = np.arange(1, n + 1)
    r_in = np.where(seg <= 6, 3.0, np.where(seg <= 12, 2.0, np.where(seg <= 16, 1.0, 0.0)))
    ring_pos = np.where(seg <= 12, (seg - 1) % 6, seg - 13)
    start = np.where(seg <= 12, 60.0 + 60.0 * ring_pos, 45.0 + 90.0 * ring_pos)
    width = np.where(seg <= 12, 60.0, 90.0)
    start = np.where(seg == 17, 0.0, np.mod(start, 360.0))
    width = np.where(seg == 17, 360.0, width)
    mid_r = np.where(seg == 17, 0.0, r_in + 0.5)
    mid_t = np.deg2rad(start + width / 2)
    xy = np.stack([mid_r * np.cos(mid_t), mid_r * np.sin(mid_t)], axis=-1)
    return Bullseye(segment=seg, value=v, r_inner=r_in, r_outer=r_in + 1.0, theta_start_deg=start,
                    theta_end_deg=start + width, label_xy=xy)
