"""Report of the CarMEN lambda ablation (``train/ablation.py``): a table sorted by EPE and the error-plane figure.

    python -m eval.ablation_report --csv runs/ablation/ablation.csv --out DIR

reads ``ablation.csv`` (columns ``lambda_a, lambda_s, epe_mm, angle_deg, magnitude_mm``, one row per cell of
the (lambda_a, lambda_s) grid) and writes ``DIR/ablation.md`` and ``DIR/ablation.png`` atomically.

Per cell, on the held-out validation phantoms inside the ED myocardium (definitions of ``train/ablation.py``):

* ``epe_mm``: mean end-point error ``|u_pred - u_true|``, mm;
* ``angle_deg``: mean angle between ``u_pred`` and ``u_true`` where ``|u_true| >= 0.5`` mm (direction
  error), degrees;
* ``magnitude_mm``: mean ``| |u_pred| - |u_true| |`` (magnitude error), mm.

lambda_a weighs the anatomical (segmentation-overlap) loss and lambda_s the smoothness loss of CarMEN. The
paper's choice is ``(lambda_a, lambda_s) = (0.5, 0.1)``; the *best* cell has the smallest finite EPE. Missing
values (empty or ``nan``) are kept as NaN and sorted last; cells absent from the full grid (the product of the
lambda values seen) are listed. The figure plots direction error against magnitude error, one point per cell
labelled ``(lambda_a, lambda_s)``, marker shape and colour by lambda_s, as the paper's ablation figure.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from deepstrain_jax.errors import InputError

PAPER_CHOICE = (0.5, 0.1)  # (lambda_a, lambda_s) of Morales et al. 2021
LAMBDAS = ("lambda_a", "lambda_s")
METRICS = ("epe_mm", "angle_deg", "magnitude_mm")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MISSING = ("", "nan", "none", "null", "na", "n/a")


def _float(text, what: str, path) -> float:
    t = (text or "").strip()
    if t.lower() in MISSING:
        return math.nan
    try:
        return float(t)
    except ValueError:
        raise InputError(f"{what}: {t!r} is not a number", path) from None


def read_ablation(csv_path) -> list[dict]:
    """Read ``ablation.csv`` into ``[{lambda_a, lambda_s, epe_mm, angle_deg, magnitude_mm}]`` (floats).

    Metric cells that are empty or ``nan`` become NaN; extra columns are ignored.

    Raises:
      InputError: a missing or unreadable file, no header or no rows, a missing column, a lambda that is not a
        finite number, a metric that is not a number, or a cell given twice.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError("ablation CSV not found (train/ablation.py writes workdir/ablation.csv)", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable ablation CSV ({type(e).__name__}: {e})", path) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in LAMBDAS + METRICS if c not in header]
    if missing:
        raise InputError(f"not an ablation table: missing column(s) {', '.join(missing)} "
                         f"(expected {', '.join(LAMBDAS + METRICS)})", path)
    rows, seen = [], set()
    for i, raw in enumerate(reader, start=2):  # line numbers, header = line 1
        raw = {(k or "").strip(): v for k, v in raw.items()}
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue  # blank line
        row = {c: _float(raw.get(c), f"line {i}, {c}", path) for c in LAMBDAS + METRICS}
        if not all(math.isfinite(row[c]) for c in LAMBDAS):
            raise InputError(f"line {i}: lambda_a and lambda_s must be finite numbers", path)
        cell = (row["lambda_a"], row["lambda_s"])
        if cell in seen:
            raise InputError(f"line {i}: cell lambda_a={cell[0]:g}, lambda_s={cell[1]:g} appears twice", path)
        seen.add(cell)
        rows.append(row)
    if not rows:
        raise InputError("the ablation table has no rows", path)
    return rows


def _epe_key(row: dict):
    epe = row["epe_mm"]
    return (not math.isfinite(epe), epe if math.isfinite(epe) else 0.0, row["lambda_a"], row["lambda_s"])


def sort_by_epe(rows: list[dict]) -> list[dict]:
    """Rows by increasing EPE; NaN EPE last; ties by (lambda_a, lambda_s)."""
    return sorted(rows, key=_epe_key)


def best_cell(rows: list[dict]) -> tuple[float, float] | None:
    """``(lambda_a, lambda_s)`` of the smallest finite EPE, or ``None`` when no EPE is finite."""
    ranked = [r for r in sort_by_epe(rows) if math.isfinite(r["epe_mm"])]
    return (ranked[0]["lambda_a"], ranked[0]["lambda_s"]) if ranked else None


def missing_cells(rows: list[dict]) -> list[tuple[float, float]]:
    """Cells of the full grid (every lambda_a seen x every lambda_s seen) absent from ``rows``, sorted."""
    have = {(r["lambda_a"], r["lambda_s"]) for r in rows}
    las = sorted({r["lambda_a"] for r in rows})
    lss = sorted({r["lambda_s"] for r in rows})
    return [(a, s) for a in las for s in lss if (a, s) not in have]


def _is(cell, la: float, ls: float) -> bool:
    return cell is not None and math.isclose(cell[0], la) and math.isclose(cell[1], ls)


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def ablation_markdown(rows: list[dict]) -> str:
    """The ablation table sorted by EPE, the best and the paper's cells marked, plus notes (pure; no top-level
    heading, so it embeds in a report section)."""
    best = best_cell(rows)
    lines = ["CarMEN regulariser ablation: one cell per (lambda_a, lambda_s), sorted by EPE.", "",
             "| Rank | lambda_a | lambda_s | EPE (mm) | Direction error (deg) | Magnitude error (mm) | Note |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    paper_found = False
    for rank, r in enumerate(sort_by_epe(rows), 1):
        la, ls = r["lambda_a"], r["lambda_s"]
        marks = []
        if _is(best, la, ls):
            marks.append("**best**")
        if _is(PAPER_CHOICE, la, ls):
            marks.append("paper")
            paper_found = True
        rank_text = str(rank) if math.isfinite(r["epe_mm"]) else "-"
        lines.append(f"| {rank_text} | {la:g} | {ls:g} | {_fmt(r['epe_mm'], 3)} | {_fmt(r['angle_deg'], 2)} | "
                     f"{_fmt(r['magnitude_mm'], 3)} | {', '.join(marks)} |")
    notes = [f"{len(rows)} cell(s). EPE: mean |u_pred - u_true| (mm); direction error: mean angle between "
                 "u_pred and u_true where |u_true| >= 0.5 mm (deg); magnitude error: mean ||u_pred| - |u_true|| "
                 "(mm); validation phantoms, ED myocardium. best = smallest EPE; paper = the paper's choice "
                 f"(lambda_a {PAPER_CHOICE[0]:g}, lambda_s {PAPER_CHOICE[1]:g})."]
    if best is None:
        notes.append("No cell has a finite EPE.")
    if not paper_found:
        notes.append(f"The paper's choice (lambda_a {PAPER_CHOICE[0]:g}, lambda_s {PAPER_CHOICE[1]:g}) is not in "
                     "this grid.")
    gaps = missing_cells(rows)
    if gaps:
        notes.append("Cells missing from the grid: " + ", ".join(f"({a:g}, {s:g})" for a, s in gaps) + ".")
    nan_cells = [r for r in rows if not all(math.isfinite(r[m]) for m in METRICS)]
    if nan_cells:
        notes.append("Cells with missing values: " + ", ".join(f"({r['lambda_a']:g}, {r['lambda_s']:g})"
                                                             for r in nan_cells) + ".")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def ablation_png(rows: list[dict], *, title: str = "CarMEN lambda ablation") -> bytes:
    """Direction error (deg) against magnitude error (mm), one labelled point per cell, as PNG bytes.

    Marker shape and colour by lambda_s (legend); each point labelled ``(lambda_a, lambda_s)``; the best cell
    circled in black, the paper's choice marked by a red ring. Cells with a NaN coordinate are not drawn
    (counted in a footnote). Deterministic: equal rows give byte-identical PNGs.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.11, 0.12, 0.62, 0.8))
    colours = matplotlib.colormaps.get_cmap("tab10")
    best = best_cell(rows)
    drawn = [r for r in rows if math.isfinite(r["angle_deg"]) and math.isfinite(r["magnitude_mm"])]
    for i, ls in enumerate(sorted({r["lambda_s"] for r in rows})):
        group = sorted((r for r in drawn if r["lambda_s"] == ls), key=lambda r: r["lambda_a"])
        ax.scatter([r["magnitude_mm"] for r in group], [r["angle_deg"] for r in group], s=55,
                   marker=MARKERS[i % len(MARKERS)], color=colours(i % 10), edgecolor="black", linewidth=0.5,
                   label=rf"$\lambda_s$ = {ls:g}", zorder=3)
    for r in drawn:
        x, y, la, ls = r["magnitude_mm"], r["angle_deg"], r["lambda_a"], r["lambda_s"]
        ax.annotate(f"({la:g}, {ls:g})", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color="0.2")
        if _is(best, la, ls):
            ax.scatter([x], [y], s=260, facecolor="none", edgecolor="black", linewidth=1.4, zorder=4,
                       label="best EPE")
        if _is(PAPER_CHOICE, la, ls):
            ax.scatter([x], [y], s=160, facecolor="none", edgecolor="red", linewidth=1.4, zorder=4,
                       label="paper's choice")
    if not drawn:
        ax.text(0.5, 0.5, "no cell with both errors", ha="center", va="center", transform=ax.transAxes)
    ax.margins(0.12)  # room for the point labels
    ax.set_xlabel("magnitude error (mm)")
    ax.set_ylabel("direction error (deg)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=11)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  title=r"points: ($\lambda_a$, $\lambda_s$)", title_fontsize=8)
    skipped = len(rows) - len(drawn)
    if skipped:
        fig.text(0.11, 0.015, f"{skipped} cell(s) with missing errors not drawn", fontsize=8, color="0.3")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no varying chunk: deterministic
    return buf.getvalue()


def ablation_report(csv_path) -> tuple[str, bytes]:
    """``(markdown, png_bytes)`` of the ablation table at ``csv_path`` (see :func:`read_ablation` for errors)."""
    rows = read_ablation(csv_path)
    return ablation_markdown(rows), ablation_png(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.ablation_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="ablation.csv written by train/ablation.py")
    parser.add_argument("--out", required=True, help="folder for ablation.md and ablation.png")
    args = parser.parse_args(argv)
    from deepstrain_jax.io.atomic import write_bytes, write_text

    try:
        markdown, png = ablation_report(args.csv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_bytes(out / "ablation.png", png)
    write_text(out / "ablation.md", markdown)
    print(markdown, end="")
    print(f"wrote {out / 'ablation.md'} and {out / 'ablation.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
