"""Per-subject report: figures as deterministic PNG bytes and a self-contained HTML page.

:mod:`.plots` draws the AHA bull's-eye, the global strain / strain-rate / volume curves and Bland-Altman
agreement plots with matplotlib (imported lazily, Agg canvas per figure, no pyplot); :mod:`.html` renders a
subject's ``results.json`` with embedded PNGs into one HTML file. This is the only package that uses
matplotlib; importing it does not import matplotlib.
"""

from __future__ import annotations

from deepstrain_jax.report.html import AHA_SEGMENT_NAMES, render_report
from deepstrain_jax.report.plots import (
    bland_altman_png,
    bullseye_png,
    curves_png,
    draw_bland_altman,
    draw_bullseye,
    polar_maps_png,
)

__all__ = [
    "AHA_SEGMENT_NAMES",
    "bland_altman_png",
    "bullseye_png",
    "curves_png",
    "draw_bland_altman",
    "draw_bullseye",
    "polar_maps_png",
    "render_report",
]
