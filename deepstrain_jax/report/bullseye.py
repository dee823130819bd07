"""AHA bull's-eyes: one subject's segment values, a subject's strain panels with fixed colour limits, and cohort
mean and SD per group (PNG, and 300 dpi PNG / SVG / PDF for publication), all deterministic.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from deepstrain_jax.cardiac.polar_map import bullseye
from deepstrain_jax.report.figure import NAN_COLOUR, PNG_COMPRESS_LEVEL, new_figure, png_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable


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
PUBLICATION_FORMATS = ("png", "svg", "pdf")
REPORT_DPI = 150  # the per-subject polar map when publication figures are not asked for (PNG only)


def strain_polar_maps(panels: dict, *, title: str, limits: dict | None = None, decimals: int = 1,
                      experimental=(), formats=PUBLICATION_FORMATS, dpi: int = PUBLICATION_DPI) -> dict:
    """The strain bull's-eyes of one subject (or a group mean) with fixed, documented colour limits.

    One panel per direction (``{direction: (16,) or (17,) values in %}``), each with its segment numbers, its
    colorbar labelled with the direction and unit, and the limits of :data:`STRAIN_LIMITS_PCT` (updated by
    ``limits``: ``{direction: (lo, hi)}``). Segment 17 is coloured when it has a value. Panels named in
    ``experimental`` are titled "<direction> (experimental)".

    ``formats`` (a subset of :data:`PUBLICATION_FORMATS`) and ``dpi`` (of the PNG) choose what is rendered: each
    format costs a full draw of the figure (about 0.3 s each on a laptop core at 300 dpi).

    Returns:
      ``{"png": PNG bytes at ``dpi``, "svg": SVG bytes (text kept as text), "pdf": PDF bytes}`` (the formats
      asked for), each deterministic.
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
        return _publication_formats(fig, formats, dpi)


_NO_DATES = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def _publication_formats(fig, formats=PUBLICATION_FORMATS, dpi: int = PUBLICATION_DPI) -> dict:
    """PNG (at ``dpi``), SVG and PDF bytes of ``fig`` (those in ``formats``), without dates or versions
    (deterministic)."""
    unknown = set(formats) - set(PUBLICATION_FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {PUBLICATION_FORMATS}, got {tuple(formats)}")
    out = {}
    for fmt in PUBLICATION_FORMATS:
        if fmt in formats:
            buf = io.BytesIO()
            extra = {"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}} if fmt == "png" else {}
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=_NO_DATES[fmt], **extra)
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


