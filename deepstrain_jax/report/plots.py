"""Report figures as PNG bytes: strain/volume curves, Bland-Altman agreement, the segmentation QC montage; the
bull's-eyes are in :mod:`.bullseye` (their names are also here).

Every figure is a ``matplotlib.figure.Figure`` bound to its own ``FigureCanvasAgg``: no pyplot, no global
backend switch, no shared state, so figures can be drawn from several threads and importing this module
does not import matplotlib (it is imported inside the functions). Output is deterministic: fixed size and
dpi, and ``savefig(metadata={"Software": None})`` drops the only varying PNG chunk, so equal inputs give
byte-identical PNGs.

``draw_*`` functions draw onto a caller's ``Axes`` (for multi-panel figures, e.g. a validation study);
``*_png`` functions build a complete figure and return its PNG bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deepstrain_jax.metrics.agreement import Z_95, BlandAltman, bland_altman

if TYPE_CHECKING:
    from matplotlib.axes import Axes

from deepstrain_jax.report.bullseye import (  # noqa: F401  (the bull's-eyes, also reachable here)
    PUBLICATION_DPI,
    PUBLICATION_FORMATS,
    REPORT_DPI,
    STRAIN_LIMITS_PCT,
    STRAIN_SD_LIMITS_PCT,
    bullseye_png,
    cohort_polar_maps,
    draw_bullseye,
    polar_maps_png,
    strain_polar_maps,
)
from deepstrain_jax.report.figure import DPI, NAN_COLOUR, new_figure, png_bytes  # noqa: F401

# ------------------------------------------------------------------------------------------------- curves


def _curve_panel(name: str, curves, n_frames: int) -> dict[str, np.ndarray]:
    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"{name} must be a non-empty dict of legend name -> (T,) array")
    out = {}
    for key, values in curves.items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n_frames,):
            raise ValueError(f"{name}[{key!r}] must have shape ({n_frames},) like the other curves, "
                             f"got {arr.shape}")
        out[str(key)] = arr
    return out


def curves_png(time_s, strain_pct: dict, *, strain_rate_per_s: dict | None = None,
               volumes_ml: dict | None = None, ed: int, es: int, title: str = "") -> bytes:
    """Global curves over the cardiac cycle as PNG bytes: strain, strain rate and volumes, one panel each.

    Panels, stacked with a shared time axis: strain (%) always; strain rate (1/s) if given; volume (mL) if
    given. Dashed vertical lines mark the ED and ES frames. Each dict key is a legend entry.

    Args:
      time_s: ``(T,)`` frame times in seconds, or ``None`` to plot against the frame index ("frame").
      strain_pct: ``{name: (T,)}`` global strain in percent, e.g. radial / circumferential / longitudinal.
      strain_rate_per_s: ``{name: (T,)}`` strain rate in 1/s, or ``None``.
      volumes_ml: ``{name: (T,)}`` volumes in mL (e.g. "LV", "RV"), or ``None``.
      ed, es: ED and ES frame indices in ``[0, T)``.
      title: figure title.
    Returns:
      PNG bytes (700 px wide, 240 px per panel plus a title band).
    Raises:
      ValueError: empty dicts, curves of different lengths, ``time_s`` of another length, or ED/ES out of
      range.
    """
    if not isinstance(strain_pct, dict) or not strain_pct:
        raise ValueError("strain_pct must be a non-empty dict of legend name -> (T,) array")
    n_frames = int(np.asarray(next(iter(strain_pct.values()))).reshape(-1).shape[0])
    panels = [("strain (%)", _curve_panel("strain_pct", strain_pct, n_frames))]
    if strain_rate_per_s is not None:
        panels.append(("strain rate (1/s)", _curve_panel("strain_rate_per_s", strain_rate_per_s, n_frames)))
    if volumes_ml is not None:
        panels.append(("volume (mL)", _curve_panel("volumes_ml", volumes_ml, n_frames)))
    if time_s is None:
        x, x_label = np.arange(n_frames, dtype=np.float64), "frame"
    else:
        x, x_label = np.asarray(time_s, dtype=np.float64), "time (s)"
        if x.shape != (n_frames,):
            raise ValueError(f"time_s must have shape ({n_frames},) like the curves, got {x.shape}")
    for name, frame in (("ed", ed), ("es", es)):
        if not (isinstance(frame, (int, np.integer)) and 0 <= frame < n_frames):
            raise ValueError(f"{name} must be a frame index in [0, {n_frames}), got {frame!r}")

    title_in = 0.45 if title else 0.1
    fig = new_figure(7.0, 2.4 * len(panels) + title_in)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (y_label, curves) in zip(axes, panels):
        for key, values in curves.items():
            ax.plot(x, values, linewidth=1.6, label=key)
        for frame, name in ((ed, "ED"), (es, "ES")):
            ax.axvline(x[frame], color="0.35", linestyle="--", linewidth=1.0)
            ax.text(x[frame], 1.0, f" {name}", transform=ax.get_xaxis_transform(), ha="left", va="top",
                    fontsize=8, color="0.25")
        ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8, frameon=False)
    axes[-1].set_xlabel(x_label)
    if title:
        fig.suptitle(title, fontsize=11)
    # Fixed margins (inches) instead of tight_layout, which draws the whole figure once more to measure it.
    height = 2.4 * len(panels) + title_in
    fig.subplots_adjust(left=0.75 / 7.0, right=1 - 0.15 / 7.0, bottom=0.5 / height, top=1 - (title_in + 0.03) / height,
                        hspace=0.1)
    return png_bytes(fig)


# ------------------------------------------------------------------------------------------- Bland-Altman


def draw_bland_altman(ax: Axes, reference, measured, *, unit: str, percent: bool = False,
                      decimals: int = 2) -> BlandAltman:
    """Draw a Bland-Altman plot on ``ax`` and return its statistics.

        d_i = measured_i - reference_i,   m_i = (measured_i + reference_i) / 2,
        bias = mean(d),   limits of agreement = bias -+ 1.96 SD(d)   (sample SD, ddof=1),

    from :func:`deepstrain_jax.metrics.agreement.bland_altman` (``percent=True``: ``d_i`` in percent of
    ``m_i``). Points are ``(m_i, d_i)``; the bias (solid) and both limits (dashed) are horizontal lines
    annotated at the right edge with ``"bias {bias:.{decimals}f} {unit}"``,
    ``"+1.96 SD {upper:.{decimals}f} {unit}"`` and ``"-1.96 SD {lower:.{decimals}f} {unit}"`` (unit ``%``
    when ``percent``).

    Args:
      ax: matplotlib ``Axes``.
      reference, measured: paired values, equal shapes, at least 3 finite pairs (drop incomplete pairs first).
      unit: unit of the values, e.g. ``"mL"``.
      percent: plot percent differences.
      decimals: digits after the decimal point in the annotations.
    Returns:
      :class:`deepstrain_jax.metrics.agreement.BlandAltman` of ``measured`` against ``reference``.
    Raises:
      ValueError: shape mismatch, fewer than 3 pairs, NaN or inf.
    """
    stats = bland_altman(measured, reference, percent=percent)
    d_unit = "%" if percent else unit
    ax.scatter(stats.means, stats.differences, s=18, color="tab:blue", alpha=0.8, linewidths=0)
    lines = ((stats.upper_loa, f"+{Z_95:.2f} SD", "--"), (stats.bias, "bias", "-"),
             (stats.lower_loa, f"-{Z_95:.2f} SD", "--"))
    for y, label, style in lines:
        ax.axhline(y, color="tab:red" if label == "bias" else "0.3", linestyle=style, linewidth=1.2)
        ax.text(0.99, y, f"{label} {y:.{decimals}f} {d_unit}", transform=ax.get_yaxis_transform(),
                ha="right", va="top" if y == stats.lower_loa else "bottom", fontsize=8)
    ax.axhline(0.0, color="0.75", linewidth=0.8, zorder=0)
    ax.margins(y=0.12)  # room for the annotations outside the limit lines
    ax.set_xlabel(f"mean of measured and reference ({unit})")
    ax.set_ylabel(f"measured - reference ({d_unit})")
    ax.grid(True, alpha=0.3)
    return stats


def bland_altman_png(reference, measured, *, title: str, unit: str, percent: bool = False,
                     decimals: int = 2) -> bytes:
    """Bland-Altman plot of ``measured`` against ``reference`` as PNG bytes (600 x 450 px).

    See :func:`draw_bland_altman` for the statistics, annotations and errors; the title gets ``n = {n}``.
    """
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    stats = draw_bland_altman(ax, reference, measured, unit=unit, percent=percent, decimals=decimals)
    ax.set_title(f"{title} (n = {stats.n})" if title else f"n = {stats.n}", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


# ----------------------------------------------------------------------------------------------- QC montage

LABEL_COLOURS = {1: "#4169e1", 2: "#dc143c", 3: "#ffd700"}  # RV cavity, LV myocardium, LV cavity (ITK-SNAP file)


def qc_montage_png(image, labels, *, ed: int, es: int, aha=None, insertions=None, title: str = "",
                   columns: int = 4) -> bytes:
    """Segmentation contours over the image at ED and ES on every slice, plus the AHA sectors on a mid slice.

    What the networks saw and produced (the network grid, slices base -> apex), so a failed segmentation is
    visible at a glance: per slice an ED and an ES panel side by side, RV cavity blue, LV myocardium red, LV
    cavity yellow; a last panel shows the ED myocardium of the middle slice that holds AHA segments, coloured by
    segment with its number, the sector lines in white and, given ``insertions``, the two RV insertion
    directions from the LV centre (anterior: triangle, inferior: square).

    Args:
      image: ``(T, N, N, Z)`` intensities; labels: ``(T, N, N, Z)`` ACDC labels; ed, es: frames.
      aha: ``(N, N, Z)`` AHA segment map (0 outside), or None; columns: slice pairs per row.
      insertions: :class:`deepstrain_jax.cardiac.aha.RVInsertions` of the ED labels on this grid, or None.
    Returns:
      PNG bytes (deterministic).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    _, n, m, z = image.shape
    panels = z + (1 if aha is not None and np.any(aha) else 0)
    rows = int(np.ceil(panels / columns))
    # The slice panels are tiles of one mosaic drawn in a single axes (one image, one contour call per label,
    # ~4x faster than an axes per panel): (ED, ES) pairs, `columns` pairs per row, `g` pixels apart, each tile
    # windowed by its frame's 1-99.5 percentiles; square pixels, the figure as wide as before.
    g = max(2, n // 40)
    shape = (rows * (m + g), 2 * columns * (n + g))  # (y, x), tile rows from the top
    width = columns * 3.2
    mosaic_in = shape[0] * width / shape[1]
    height = mosaic_in + 0.4  # the title
    fig = new_figure(width, height)
    gray = np.full(shape, np.nan)
    masks = {label: np.zeros(shape, np.float32) for label in LABEL_COLOURS}
    window = {t: np.percentile(image[t], [1, 99.5]) for t in (ed, es)}

    def origin(k, j):
        r, c = divmod(k, columns)
        return (rows - 1 - r) * (m + g), (2 * c + j) * (n + g)  # origin="lower": the first row on top

    texts = []
    for k in range(z):
        for j, t in enumerate((ed, es)):
            y0, x0 = origin(k, j)
            lo, hi = window[t]
            gray[y0:y0 + m, x0:x0 + n] = (image[t, :, :, k].T - lo) / max(hi - lo, 1e-12)
            for label in LABEL_COLOURS:
                masks[label][y0:y0 + m, x0:x0 + n] = (labels[t, :, :, k] == label).T
            texts.append((x0 + 2, y0 + m - 4, f"{'ED' if j == 0 else 'ES'} z{k}"))
    frac = mosaic_in / height
    ax = fig.add_axes((0.0, 0.0, 1.0, frac))
    ax.set_axis_off()
    ax.imshow(np.clip(gray, 0.0, 1.0), cmap=_gray_with_background(), vmin=0.0, vmax=1.0, origin="lower",
              interpolation="nearest", extent=(-0.5, shape[1] - 0.5, -0.5, shape[0] - 0.5), aspect="auto")
    for label, colour in LABEL_COLOURS.items():
        if masks[label].any():
            ax.contour(masks[label], levels=[0.5], colors=colour, linewidths=0.8)
    for x, y, text in texts:
        ax.text(x, y, text, color="white", fontsize=6, va="top")
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(-0.5, shape[0] - 0.5)
    if panels > z:  # the AHA panel in the next tile, its own axes
        y0, x0 = origin(z, 0)
        ax_aha = fig.add_axes((x0 / shape[1], y0 / shape[0] * frac, n / shape[1], m / shape[0] * frac))
        ax_aha.set_axis_off()
        _draw_aha_panel(ax_aha, image, labels, aha, ed, insertions)
    fig.suptitle(title or "segmentation QC (network grid, base -> apex)", fontsize=10, y=0.995)
    return png_bytes(fig)


def _gray_with_background():
    """Gray colour map whose NaN (the gaps between tiles) is white, like the figure."""
    import matplotlib

    return matplotlib.colormaps.get_cmap("gray").with_extremes(bad="white")


def _draw_aha_panel(ax, image, labels, aha, ed: int, insertions=None) -> None:
    import matplotlib

    placed = np.flatnonzero(np.asarray(aha).reshape(-1, aha.shape[2]).any(axis=0))
    k = int(placed[len(placed) // 2])
    lo, hi = np.percentile(image[ed], [1, 99.5])
    ax.imshow(image[ed, :, :, k].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    seg = np.asarray(aha[:, :, k]).T.astype(np.float64)
    cmap = matplotlib.colormaps.get_cmap("tab20")
    overlay = np.zeros(seg.shape + (4,))
    for s in np.unique(seg[seg > 0]).astype(int):
        overlay[seg == s] = (*cmap((s - 1) % 20)[:3], 0.75)
        yy, xx = np.nonzero(seg == s)
        ax.text(xx.mean(), yy.mean(), str(s), color="black", fontsize=6, ha="center", va="center")
    ax.imshow(overlay, origin="lower", interpolation="nearest")
    for s in np.unique(seg[seg > 0]).astype(int):  # sector lines: each segment's outline
        ax.contour((seg == s).astype(np.float32), levels=[0.5], colors="white", linewidths=0.4)
    if insertions is not None and np.all(np.isfinite(insertions.centre_vox[k])):
        cx, cy = insertions.centre_vox[k]
        reach = 0.5 * max(np.ptp(np.nonzero(seg)[1]), np.ptp(np.nonzero(seg)[0])) + 4.0  # past the epicardium
        for angle, marker in ((insertions.pooled_anterior_deg, "^"), (insertions.pooled_inferior_deg, "s")):
            a = np.deg2rad(angle)  # about the slice centre, array axis 0 -> x, axis 1 -> y (equal in-plane voxels)
            x, y = cx + reach * np.cos(a), cy + reach * np.sin(a)
            ax.plot([cx, x], [cy, y], color="white", linewidth=0.8, linestyle="--")
            ax.plot([x], [y], marker=marker, color="cyan", markersize=3.5)
    ax.text(2, image.shape[2] - 4, f"AHA ED z{k}", color="white", fontsize=6, va="top")
