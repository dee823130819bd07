"""Report figures as PNG bytes: AHA bull's-eye, strain/volume curves, Bland-Altman agreement.

Every figure is a ``matplotlib.figure.Figure`` bound to its own ``FigureCanvasAgg``: no pyplot, no global
backend switch, no shared state, so figures can be drawn from several threads and importing this module
does not import matplotlib (it is imported inside the functions). Output is deterministic: fixed size and
dpi, and ``savefig(metadata={"Software": None})`` drops the only varying PNG chunk, so equal inputs give
byte-identical PNGs.

``draw_*`` functions draw onto a caller's ``Axes`` (for multi-panel figures, e.g. a validation study);
``*_png`` functions build a complete figure and return its PNG bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from deepstrain_jax.cardiac.polar_map import bullseye
from deepstrain_jax.metrics.agreement import Z_95, BlandAltman, bland_altman

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

NAN_COLOUR = "#bfbfbf"  # segments without a value
DPI = 100


def new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- bull's-eye


def _colour_limits(values: np.ndarray, vmin, vmax) -> tuple[float, float]:
    if vmin is None and vmax is None:
        finite = values[np.isfinite(values)]
        m = float(np.max(np.abs(finite))) if finite.size else 0.0
        lo, hi = (-m, m) if m > 0 else (-1.0, 1.0)
    elif vmin is None:
        lo, hi = -float(vmax), float(vmax)
    elif vmax is None:
        lo, hi = float(vmin), -float(vmin)
    else:
        lo, hi = float(vmin), float(vmax)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"colour limits must be finite with vmin < vmax, got vmin={lo}, vmax={hi}")
    return lo, hi


def draw_bullseye(ax: Axes, segment_values, *, vmin=None, vmax=None, cmap="RdBu_r",
                  decimals: int = 1, numbers: bool = False) -> ScalarMappable:
    """Draw an AHA 16/17-segment bull's-eye on ``ax``, each wedge coloured by and labelled with its value.

    Geometry and orientation from :func:`deepstrain_jax.cardiac.polar_map.bullseye` (seen from the apex:
    anterior up, septal left, inferior down, lateral right; base outermost). Colour limits default to
    ``(-m, m)``, ``m = max |value|`` over finite values (``(-1, 1)`` if there are none or all are 0); if only
    one of ``vmin``/``vmax`` is given the other mirrors it about 0. NaN segments are grey and read "n/a".

    Args:
      ax: matplotlib ``Axes``; its aspect is set equal and its frame turned off.
      segment_values: ``(16,)`` or ``(17,)`` values of segments 1..n; ``None`` entries count as NaN.
      vmin, vmax: colour limits, in the values' unit.
      cmap: colormap name or ``Colormap``.
      decimals: digits after the decimal point in the wedge labels.
      numbers: also print each segment's number (small, above its value).
    Returns:
      the ``ScalarMappable`` (norm and colormap) for a colorbar.
    Raises:
      ValueError: not 16 or 17 values, or bad colour limits.
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.patches import Wedge

    values = np.asarray(segment_values, dtype=np.float64)
    geometry = bullseye(values)  # raises ValueError unless (16,) or (17,)
    lo, hi = _colour_limits(values, vmin, vmax)
    mappable = ScalarMappable(norm=Normalize(lo, hi), cmap=matplotlib.colormaps.get_cmap(cmap))
    for seg, value, r_in, r_out, t0, t1, (x, y) in zip(*geometry):
        finite = bool(np.isfinite(value))
        face = mappable.to_rgba(value) if finite else to_rgba(NAN_COLOUR)
        ax.add_patch(Wedge((0.0, 0.0), r_out, t0, t1, width=None if r_in == 0 else r_out - r_in,
                           facecolor=face, edgecolor="white", linewidth=1.2))
        luminance = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]
        ink = "white" if luminance < 0.45 else "black"
        ax.text(x, y - (0.13 if numbers else 0.0), f"{value:.{decimals}f}" if finite else "n/a", ha="center",
                va="center", fontsize=8, color=ink)
        if numbers:
            ax.text(x, y + 0.25, str(int(seg)), ha="center", va="center", fontsize=5.5, color=ink, alpha=0.8)
    lim = 4.9
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_axis_off()
    small = {"fontsize": 7, "color": "0.3"}
    ax.text(0.0, 4.15, "Anterior", ha="center", va="bottom", **small)
    ax.text(0.0, -4.15, "Inferior", ha="center", va="top", **small)
    ax.text(-4.15, 0.0, "Septal", ha="right", va="center", rotation=90, **small)
    ax.text(4.15, 0.0, "Lateral", ha="left", va="center", rotation=-90, **small)
    return mappable


def bullseye_png(segment_values, *, title: str, unit: str = "%", vmin=None, vmax=None, cmap="RdBu_r",
                 decimals: int = 1) -> bytes:
    """AHA bull's-eye with a colorbar labelled ``unit``, as PNG bytes (520 x 460 px).

    See :func:`draw_bullseye` for the layout, colour limits and NaN handling.

    Args:
      segment_values: ``(16,)`` or ``(17,)`` values of segments 1..n (NaN/None: no value).
      title: figure title.
      unit: colorbar label, e.g. ``"%"``.
      vmin, vmax, cmap, decimals: as in :func:`draw_bullseye`.
    Returns:
      PNG bytes.
    """
    fig = new_figure(5.2, 4.6)
    ax = fig.add_axes((0.01, 0.01, 0.8, 0.9))
    mappable = draw_bullseye(ax, segment_values, vmin=vmin, vmax=vmax, cmap=cmap, decimals=decimals)
    cax = fig.add_axes((0.84, 0.15, 0.035, 0.62))
    fig.colorbar(mappable, cax=cax).set_label(unit)
    fig.suptitle(title, fontsize=11, y=0.975)
    return png_bytes(fig)


def polar_maps_png(panels: dict, *, title: str, unit: str = "%", cmap="RdBu_r", decimals: int = 1) -> bytes:
    """Several bull's-eyes side by side (e.g. circumferential, radial, longitudinal ESS), as PNG bytes.

    Each panel has its own symmetric colour limits (:func:`draw_bullseye`) and colorbar, titled by its key.

    Args:
      panels: ``{name: (16,) or (17,) values}``, drawn left to right in dict order (at least one).
      title: figure title; unit: colorbar label.
    Returns:
      PNG bytes (``4.4 k`` x 4.6 inches at 100 dpi for ``k`` panels).
    """
    if not panels:
        raise ValueError("panels must hold at least one bull's-eye")
    k = len(panels)
    fig = new_figure(4.4 * k, 4.6)
    for i, (name, values) in enumerate(panels.items()):
        ax = fig.add_axes((i / k + 0.005, 0.02, 0.8 / k, 0.84))
        mappable = draw_bullseye(ax, values, cmap=cmap, decimals=decimals)
        ax.set_title(str(name), fontsize=10)
        cax = fig.add_axes((i / k + 0.83 / k, 0.17, 0.03 / k, 0.55))
        fig.colorbar(mappable, cax=cax).set_label(unit)
    fig.suptitle(title, fontsize=11, y=0.985)
    return png_bytes(fig)


# Fixed colour limits of the strain bull's-eyes, percent, symmetric about 0 (RdBu_r: shortening blue, lengthening
# and thickening red). They span normal and diseased hearts alike, so colours compare across subjects and cohorts:
# a normal GCS of -14 to -18 % and a DCM's -7 to -9 % are visibly different blues. Radial ESS is larger (normal
# 30-50 %), hence its wider range. Overridden per direction by ``limits`` (CLI ``--bullseye-limits``).
STRAIN_LIMITS_PCT = {"circumferential": (-30.0, 30.0), "longitudinal": (-30.0, 30.0), "radial": (-60.0, 60.0)}
PUBLICATION_DPI = 300


def strain_polar_maps(panels: dict, *, title: str, limits: dict | None = None, decimals: int = 1,
                      experimental=()) -> dict:
    """The strain bull's-eyes of one subject (or a group mean) with fixed, documented colour limits.

    One panel per direction (``{direction: (16,) or (17,) values in %}``), each with its segment numbers, its
    colorbar labelled with the direction and unit, and the limits of :data:`STRAIN_LIMITS_PCT` (updated by
    ``limits``: ``{direction: (lo, hi)}``). Segment 17 is coloured when it has a value. Panels named in
    ``experimental`` are titled "<direction> (experimental)".

    Returns:
      ``{"png": 300 dpi PNG bytes, "svg": SVG bytes (text kept as text), "pdf": PDF bytes}``, each deterministic.
    """
    import matplotlib

    if not panels:
        raise ValueError("panels must hold at least one bull's-eye")
    lim = {**STRAIN_LIMITS_PCT, **{k: tuple(v) for k, v in (limits or {}).items()}}
    k = len(panels)
    with matplotlib.rc_context({"svg.hashsalt": "deepstrain-jax", "svg.fonttype": "none"}):
        fig = new_figure(4.4 * k, 4.6)
        for i, (name, values) in enumerate(panels.items()):
            lo, hi = lim.get(name, (None, None))
            ax = fig.add_axes((i / k + 0.005, 0.02, 0.8 / k, 0.84))
            mappable = draw_bullseye(ax, values, vmin=lo, vmax=hi, decimals=decimals, numbers=True)
            ax.set_title(f"{name} (experimental)" if name in experimental else str(name), fontsize=10)
            cax = fig.add_axes((i / k + 0.83 / k, 0.17, 0.03 / k, 0.55))
            fig.colorbar(mappable, cax=cax).set_label(f"{name} strain (%)")
        fig.suptitle(title, fontsize=11, y=0.985)
        return _publication_formats(fig)


def _publication_formats(fig) -> dict:
    """300 dpi PNG, SVG and PDF bytes of ``fig``, without dates or versions (deterministic)."""
    out = {}
    for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None}),
                          ("pdf", {"CreationDate": None, "Creator": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=PUBLICATION_DPI, metadata=metadata)
        out[fmt] = buf.getvalue()
    return out


# Colour limits (%) of the between-subject SD panels of the cohort figure.
STRAIN_SD_LIMITS_PCT = {"circumferential": (0.0, 10.0), "longitudinal": (0.0, 10.0), "radial": (0.0, 25.0)}


def cohort_polar_maps(groups: dict, *, title: str, experimental=(), decimals: int = 1) -> dict:
    """Group mean and between-subject SD bull's-eyes of end-systolic strain, one row per group.

    Args:
      groups: ``{group: {direction: (n_subjects, 17) values in %}}`` (NaN or None where a subject's segment
        is empty; each segment's statistics use the subjects that have it). Directions in the order given.
      title: figure title; experimental: directions titled "(experimental)".
    Returns:
      ``{"png", "svg", "pdf"}`` bytes as :func:`strain_polar_maps`: means on the fixed limits of
      :data:`STRAIN_LIMITS_PCT`, SDs on :data:`STRAIN_SD_LIMITS_PCT` (sequential colours), with segment numbers.
    """
    import matplotlib

    if not groups:
        raise ValueError("groups must hold at least one group")
    directions = list(next(iter(groups.values())))
    n_rows, n_cols = len(groups), 2 * len(directions)
    with matplotlib.rc_context({"svg.hashsalt": "deepstrain-jax", "svg.fonttype": "none"}):
        fig = new_figure(3.3 * n_cols, 3.5 * n_rows + 0.6)
        top = 1.0 - 0.6 / (3.5 * n_rows + 0.6)
        h = top / n_rows
        for r, (group, by_direction) in enumerate(groups.items()):
            for j, d in enumerate(directions):
                v = np.array([[np.nan if x is None else x for x in row] for row in by_direction[d]], np.float64)
                if v.ndim != 2 or v.shape[1] not in (16, 17):
                    raise ValueError(f"groups[{group!r}][{d!r}] must be (n_subjects, 16 or 17), got {v.shape}")
                have = np.isfinite(v).sum(axis=0)
                with np.errstate(invalid="ignore"):
                    mean = np.where(have > 0, np.nansum(v, 0) / np.maximum(have, 1), np.nan)
                    sd = np.where(have > 1, np.sqrt(np.nansum((v - mean) ** 2, 0) / np.maximum(have - 1, 1)),
                                  np.nan)
                name = f"{d} (experimental)" if d in experimental else d
                for k, (what, values, lim, cmap) in enumerate((
                        ("mean", mean, STRAIN_LIMITS_PCT.get(d, (None, None)), "RdBu_r"),
                        ("SD", sd, STRAIN_SD_LIMITS_PCT.get(d, (0.0, None)), "viridis"))):
                    col = 2 * j + k
                    y0 = top - (r + 1) * h
                    ax = fig.add_axes((col / n_cols + 0.004, y0 + 0.02 * h, 0.78 / n_cols, 0.84 * h))
                    mappable = draw_bullseye(ax, values, vmin=lim[0], vmax=lim[1], cmap=cmap, decimals=decimals,
                                             numbers=True)
                    ax.set_title(f"{group} (n = {len(v)}): {name} {what}", fontsize=8)
                    cax = fig.add_axes((col / n_cols + 0.81 / n_cols, y0 + 0.2 * h, 0.025 / n_cols, 0.5 * h))
                    fig.colorbar(mappable, cax=cax).set_label(f"{what} (%)", fontsize=7)
                    cax.tick_params(labelsize=6)
        fig.suptitle(title, fontsize=11, y=1.0 - 0.15 / (3.5 * n_rows + 0.6))
        return _publication_formats(fig)


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
    fig.tight_layout()
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


def qc_montage_png(image, labels, *, ed: int, es: int, aha=None, title: str = "", columns: int = 4) -> bytes:
    """Segmentation contours over the image at ED and ES on every slice, plus the AHA sectors on a mid slice.

    What the networks saw and produced (the network grid, slices base -> apex), so a failed segmentation is
    visible at a glance: per slice an ED and an ES panel side by side, RV cavity blue, LV myocardium red, LV
    cavity yellow; a last panel shows the ED myocardium of the middle slice that holds AHA segments, coloured by
    segment with its number.

    Args:
      image: ``(T, N, N, Z)`` intensities; labels: ``(T, N, N, Z)`` ACDC labels; ed, es: frames.
      aha: ``(N, N, Z)`` AHA segment map (0 outside), or None; columns: slice pairs per row.
    Returns:
      PNG bytes (deterministic).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    z = image.shape[3]
    panels = z + (1 if aha is not None and np.any(aha) else 0)
    rows = int(np.ceil(panels / columns))
    fig = new_figure(columns * 3.2, rows * 1.75 + 0.4)
    for k in range(panels):
        r, c = divmod(k, columns)
        for j, t in enumerate((ed, es)):
            ax = fig.add_axes(((c * 2 + j) / (2 * columns) + 0.002, 1 - (r + 1) * (1.75 / (rows * 1.75 + 0.4)),
                               1 / (2 * columns) - 0.004, 1.6 / (rows * 1.75 + 0.4)))
            ax.set_axis_off()
            if k == z:  # the AHA panel
                if j == 1:
                    continue
                _draw_aha_panel(ax, image, labels, aha, ed)
                continue
            slice_img = image[t, :, :, k].T
            lo, hi = np.percentile(image[t], [1, 99.5])
            ax.imshow(slice_img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            for label, colour in LABEL_COLOURS.items():
                mask = (labels[t, :, :, k] == label).T
                if mask.any() and not mask.all():
                    ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=0.8)
            ax.text(2, image.shape[2] - 4, f"{'ED' if j == 0 else 'ES'} z{k}", color="white", fontsize=6, va="top")
    fig.suptitle(title or "segmentation QC (network grid, base -> apex)", fontsize=10, y=0.995)
    return png_bytes(fig)


def _draw_aha_panel(ax, image, labels, aha, ed: int) -> None:
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
    ax.text(2, image.shape[2] - 4, f"AHA ED z{k}", color="white", fontsize=6, va="top")
