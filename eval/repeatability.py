"""Scan-rescan repeatability of the analysis (the paper's Table III and Fig. 4) on phantom pairs.

A *pair* is the same phantom heart acquired twice (:func:`deepstrain_jax.phantom.dataset.make_rescan`: same
heart and protocol, independent noise and breath-hold slice shifts, a small pose change of the stack), stored
as ``root/scan/patientNNN`` and ``root/rescan/patientNNN``. Both are analysed with the same networks and the
measures below are compared, scan (``a``) against rescan (``b``), over the ``n`` pairs where both are finite:

* global (units): LV EDV, ESV (mL), EF (%), mass (g); RV EDV, ESV (mL), EF (%); global radial,
  circumferential and longitudinal end-systolic strain ESS (%, Green-Lagrange), peak systolic and early
  diastolic strain rate SRs, SRe (1/s);
* per AHA segment 1-16: circumferential and radial ESS (%).

Statistics per measure (``d_i = a_i - b_i``; :mod:`deepstrain_jax.metrics`):

* ``icc``: ICC(A,1), two-way, absolute agreement, single measure, on the ``(n, 2)`` table ``[a, b]``::

      ICC(A,1) = (MSR - MSE) / (MSR + MSE + 2 (MSC - MSE) / n)

  with its approximate 95% CI (McGraw & Wong 1996). A systematic scan-rescan offset lowers it. The CI is NaN
  when the residual mean square is 0 (e.g. identical or constantly offset values).
* ``rc``: repeatability coefficient ``1.96 SD(d)`` (sample SD, bias removed); ``rc_sigma_w``:
  ``1.96 sqrt(2) sigma_w``, ``sigma_w = sqrt(sum d_i^2 / 2n)`` (includes the bias); ``bias``: ``mean(d)``.
* ``arc_pct``: absolute relative change, mean over pairs of ``100 |a_i - b_i| / |b_i|`` (DeepStrain's form,
  the rescan as reference; ``arc_reference="mean"`` divides by ``|(a_i + b_i) / 2|`` instead); pairs with a
  zero reference are left out of it.

Statistics needing more pairs than there are (ICC and RC need 2) are NaN. The computation
(:func:`subject_values`, :func:`summarise_repeatability`, :func:`repeatability_png`) is pure; only
:func:`make_pairs`, :func:`run_repeatability` and :func:`write_repeatability` touch disk.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from deepstrain_jax.errors import InputError
from deepstrain_jax.metrics import absolute_relative_change, icc, repeatability_coefficient

DIRECTIONS = ("radial", "circumferential", "longitudinal")
SEGMENT_DIRECTIONS = ("circumferential", "radial")
N_SEGMENTS = 16
ARC_REFERENCES = ("second", "mean")


class Measure(NamedTuple):
    key: str
    label: str
    unit: str
    path: tuple  # keys into results.json


def _global_measures() -> tuple[Measure, ...]:
    vol = [("lv_edv_ml", "LV EDV", "mL"), ("lv_esv_ml", "LV ESV", "mL"), ("lv_ef_pct", "LV EF", "%"),
           ("lv_mass_g", "LV mass", "g"), ("rv_edv_ml", "RV EDV", "mL"), ("rv_esv_ml", "RV ESV", "mL"),
           ("rv_ef_pct", "RV EF", "%")]
    out = [Measure(k, label, unit, ("volumes", k)) for k, label, unit in vol]
    for index, name, unit in (("ess_pct", "ESS", "%"), ("srs_per_s", "SRs", "1/s"), ("sre_per_s", "SRe", "1/s")):
        out += [Measure(f"{d}_{index}", f"Global {d} {name}", unit, ("strain", "indices", d, index))
                for d in DIRECTIONS]
    return tuple(out)


GLOBAL_MEASURES = _global_measures()


def segment_key(direction: str, segment: int) -> str:
    """Measure key of the ESS of AHA ``segment`` (1-based) in ``direction``, e.g. ``circumferential_ess_pct_seg01``."""
    return f"{direction}_ess_pct_seg{segment:02d}"


def _number(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def subject_values(results: dict) -> dict[str, float]:
    """The repeatability measures of one analysed subject (a ``results.json`` dict), NaN where unknown.

    Returns:
      ``{key: value}`` for every key of :data:`GLOBAL_MEASURES` and every :func:`segment_key` of
      :data:`SEGMENT_DIRECTIONS` x segments 1-16; units as in the module docstring.
    """
    out = {}
    for m in GLOBAL_MEASURES:
        node = results
        for k in m.path:
            node = node.get(k) if isinstance(node, dict) else None
        out[m.key] = _number(node)
    aha = results.get("aha") or {}
    for d in SEGMENT_DIRECTIONS:
        seg = (aha.get("ess_pct") or {}).get(d) or []
        for s in range(1, N_SEGMENTS + 1):
            out[segment_key(d, s)] = _number(seg[s - 1]) if len(seg) >= s else math.nan
    return out


# ------------------------------------------------------------------------------------------- statistics


def _icc_a1(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """ICC(A,1) and its 95% CI; the point estimate alone (CI NaN) when the residual mean square is 0."""
    x = np.stack([a, b], axis=1)
    try:
        r = icc(x, kind="A,1")
        return r.value, r.ci_low, r.ci_high
    except ZeroDivisionError:
        # metrics.icc divides Python floats, so MSE = 0 (perfect or constantly offset agreement) raises
        # instead of giving its documented NaN bounds; the estimate itself is still defined.
        n = x.shape[0]
        g, r_mean, c_mean = x.mean(), x.mean(axis=1), x.mean(axis=0)
        msr = 2.0 * np.sum((r_mean - g) ** 2) / (n - 1)
        msc = n * np.sum((c_mean - g) ** 2)
        mse = np.sum((x - r_mean[:, None] - c_mean[None, :] + g) ** 2) / (n - 1)
        denom = msr + mse + 2.0 * (msc - mse) / n
        value = float((msr - mse) / denom) if denom > 0 else math.nan
        return value, math.nan, math.nan


def pair_statistics(a, b, *, arc_reference: str = "second") -> dict[str, float]:
    """Agreement of paired scan ``a`` and rescan ``b`` values (module docstring for the definitions).

    Args:
      a, b: ``(n,)`` values of one measure; pairs with a NaN in either are dropped.
      arc_reference: ``"second"`` (``|b|``, DeepStrain's) or ``"mean"`` (``|(a + b) / 2|``).
    Returns:
      dict with ``n``, ``mean_scan``, ``mean_rescan``, ``bias``, ``sd_diff``, ``rc``, ``rc_sigma_w``, ``icc``,
      ``icc_ci_low``, ``icc_ci_high``, ``arc_pct`` (floats in the measure's unit, ICC unitless, aRC in %;
      NaN where undefined).
    """
    if arc_reference not in ARC_REFERENCES:
        raise ValueError(f"arc_reference must be one of {ARC_REFERENCES}, got {arc_reference!r}")
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"scan and rescan must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    nan = math.nan
    out = dict(n=int(a.size), mean_scan=nan, mean_rescan=nan, bias=nan, sd_diff=nan, rc=nan, rc_sigma_w=nan,
               icc=nan, icc_ci_low=nan, icc_ci_high=nan, arc_pct=nan)
    if a.size >= 1:
        out.update(mean_scan=float(a.mean()), mean_rescan=float(b.mean()), bias=float(np.mean(a - b)))
        ref = b if arc_reference == "second" else 0.5 * (a + b)
        nz = ref != 0
        if nz.any():
            out["arc_pct"] = float(np.mean(absolute_relative_change(a[nz], b[nz], reference=arc_reference)))
    if a.size >= 2:
        rep = repeatability_coefficient(a, b)
        out.update(sd_diff=rep.sd_diff, rc=rep.rc, rc_sigma_w=float(rep.rc_sigma_w))
        out["icc"], out["icc_ci_low"], out["icc_ci_high"] = _icc_a1(a, b)
    return out


def _measure_list():
    """(key, label, unit, group, direction, segment) of every measure, in table order."""
    rows = [(m.key, m.label, m.unit, "global", "", 0) for m in GLOBAL_MEASURES]
    rows += [(segment_key(d, s), f"{d.capitalize()} ESS segment {s}", "%", "segment", d, s)
             for d in SEGMENT_DIRECTIONS for s in range(1, N_SEGMENTS + 1)]
    return rows


CSV_FIELDS = ("measure", "label", "unit", "group", "direction", "segment", "n", "mean_scan", "mean_rescan", "bias",
              "sd_diff", "rc", "rc_sigma_w", "icc", "icc_ci_low", "icc_ci_high", "arc_pct")


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _icc_text(r: dict) -> str:
    if not math.isfinite(r["icc"]):
        return "n/a"
    ci = f" [{_fmt(r['icc_ci_low'], 3)}, {_fmt(r['icc_ci_high'], 3)}]" if math.isfinite(r["icc_ci_low"]) else ""
    return f"{r['icc']:.3f}{ci}"


def summarise_repeatability(values: dict, *, arc_reference: str = "second") -> tuple[str, list[dict], bytes]:
    """Repeatability tables and figure from scan and rescan values (pure: values in, tables out).

    Args:
      values: ``{"subjects": [names], "scan": [per-subject dict], "rescan": [per-subject dict]}``, the dicts
        keyed as :func:`subject_values` (missing keys count as NaN); extra keys (e.g. ``"failed"``) ignored.
      arc_reference: see :func:`pair_statistics`.
    Returns:
      ``(markdown, rows, png)``: markdown with the global table (Table III) and the per-segment table (no
      top-level heading, so it embeds in a report section); one row per measure (global first, then
      circumferential and radial segments 1-16) with the :data:`CSV_FIELDS` keys; the per-segment bull's-eyes
      of :func:`repeatability_png` (Fig. 4) as PNG bytes.
    Raises:
      ValueError: scan and rescan lists of different lengths, or a bad ``arc_reference``.
    """
    scan, rescan = list(values.get("scan", [])), list(values.get("rescan", []))
    if len(scan) != len(rescan):
        raise ValueError(f"values hold {len(scan)} scans but {len(rescan)} rescans")
    rows = []
    for key, label, unit, group, direction, segment in _measure_list():
        a = [_number(s.get(key)) for s in scan]
        b = [_number(s.get(key)) for s in rescan]
        rows.append(dict(measure=key, label=label, unit=unit, group=group, direction=direction, segment=segment,
                         **pair_statistics(a, b, arc_reference=arc_reference)))
    return _markdown(rows, len(scan), arc_reference), rows, repeatability_png(rows)


def _markdown(rows: list[dict], n_pairs: int, arc_reference: str) -> str:
    ref = "|rescan|" if arc_reference == "second" else "|(scan + rescan) / 2|"
    lines = [f"Scan-rescan repeatability over {n_pairs} pair(s): scan vs rescan of the same heart.", "",
             "### Global measures", "",
             "| Measure | Unit | n | Scan mean | Rescan mean | Bias | ICC(A,1) [95% CI] | RC | aRC (%) |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        if r["group"] == "global":
            p = 3 if r["unit"] == "1/s" else 2  # strain rates are O(1) 1/s
            lines.append(f"| {r['label']} | {r['unit']} | {r['n']} | {_fmt(r['mean_scan'], p)} | "
                         f"{_fmt(r['mean_rescan'], p)} | {_fmt(r['bias'], p)} | {_icc_text(r)} | "
                         f"{_fmt(r['rc'], p)} | {_fmt(r['arc_pct'], 1)} |")
    by = {(r["direction"], r["segment"]): r for r in rows if r["group"] == "segment"}
    short = {"circumferential": "Circ.", "radial": "Rad."}
    head = " | ".join(f"{short[d]} {s}" for d in SEGMENT_DIRECTIONS for s in ("ICC(A,1)", "RC (%)", "aRC (%)"))
    lines += ["", "### AHA segments: end-systolic strain", "", f"| Segment | n | {head} |",
              "|---:|---:|" + "---|---:|---:|" * len(SEGMENT_DIRECTIONS)]
    for s in range(1, N_SEGMENTS + 1):
        cells = []
        for d in SEGMENT_DIRECTIONS:
            r = by[(d, s)]
            cells += [_icc_text(r), _fmt(r["rc"]), _fmt(r["arc_pct"], 1)]
        ns = sorted({by[(d, s)]["n"] for d in SEGMENT_DIRECTIONS}, reverse=True)  # differ when one is missing
        lines.append(f"| {s} | {'/'.join(map(str, ns))} | " + " | ".join(cells) + " |")
    lines += ["", f"d = scan - rescan over pairs where both are finite. ICC(A,1): two-way, absolute agreement, "
                  f"single measure (McGraw & Wong 1996), 95% CI (n/a when the residuals vanish). RC = 1.96 SD(d) "
                  f"(bias removed; the CSV also has 1.96 sqrt(2) sigma_w). aRC = mean 100 |scan - rescan| / {ref}. "
                  "Strain in % (Green-Lagrange), strain rate in 1/s."]
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: list[dict]) -> str:
    """The summary rows as CSV text (:data:`CSV_FIELDS`; NaN written as ``nan``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def repeatability_png(rows: list[dict], *, title: str = "Scan-rescan repeatability of end-systolic strain") -> bytes:
    """Per-segment aRC (top, %, 0 to the largest value) and ICC(A,1) (bottom, 0-1) as AHA bull's-eyes (PNG).

    One column per direction in :data:`SEGMENT_DIRECTIONS`; segments without a value are grey.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deepstrain_jax.report.plots import draw_bullseye

    by = {(r["direction"], r["segment"]): r for r in rows if r.get("group") == "segment"}

    def panel(d, key):
        return np.array([_number(by.get((d, s), {}).get(key)) for s in range(1, N_SEGMENTS + 1)])

    arc = {d: panel(d, "arc_pct") for d in SEGMENT_DIRECTIONS}
    finite = np.concatenate([v[np.isfinite(v)] for v in arc.values()])
    arc_max = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    k = len(SEGMENT_DIRECTIONS)
    fig = Figure(figsize=(4.4 * k, 8.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, d in enumerate(SEGMENT_DIRECTIONS):
        for j, (key, unit, lo, hi, cmap) in enumerate((("arc_pct", "aRC (%)", 0.0, arc_max, "magma_r"),
                                                       ("icc", "ICC(A,1)", 0.0, 1.0, "viridis"))):
            bottom = 0.5 * (1 - j)
            ax = fig.add_axes((i / k + 0.005, bottom + 0.01, 0.8 / k, 0.42))
            values = panel(d, key)
            mappable = draw_bullseye(ax, values, vmin=lo, vmax=hi, cmap=cmap, decimals=1 if j == 0 else 2)
            ax.set_title(f"{d} ESS: {unit}", fontsize=10)
            cax = fig.add_axes((i / k + 0.83 / k, bottom + 0.09, 0.03 / k, 0.28))
            fig.colorbar(mappable, cax=cax).set_label(unit)
    fig.suptitle(title, fontsize=11, y=0.995)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no varying chunk: deterministic
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------- I/O


def make_pairs(root, n: int, seed: int = 0, **kwargs) -> list[tuple[Path, Path]]:
    """Generate (or finish) ``n`` scan-rescan phantom pairs under ``root`` (``scan/`` and ``rescan/``).

    A thin wrapper over :func:`deepstrain_jax.phantom.dataset.generate_dataset` with ``rescan=True``: resumable
    (finished patients are skipped), refuses a folder generated with other settings.

    Args:
      root: destination folder; n: number of pairs; seed: master seed.
      **kwargs: ``generate_dataset`` options and fixed acquisition fields (``n_frames``, ``snr``,
        ``phenotypes``, ``matrix``, ``pixel_mm``, ...).
    Returns:
      ``[(scan_folder, rescan_folder), ...]`` in patient order.
    """
    from deepstrain_jax.phantom import dataset

    folders = dataset.generate_dataset(root, n, seed, rescan=True, **kwargs)
    return list(zip(folders[:n], folders[n:]))


def find_pairs(pairs_root) -> list[str]:
    """Names of the patients present in both ``pairs_root/scan`` and ``pairs_root/rescan``, sorted.

    Raises:
      InputError: no ``scan``/``rescan`` folders, or no patient in both.
    """
    root = Path(pairs_root)
    dirs = {}
    for side in ("scan", "rescan"):
        if not (root / side).is_dir():
            raise InputError(f"no {side}/ folder: expected a scan-rescan cohort (generate_dataset(rescan=True))",
                             root)
        dirs[side] = {p.name for p in (root / side).iterdir() if p.is_dir() and not p.name.startswith(".")}
    names = sorted(dirs["scan"] & dirs["rescan"])
    if not names:
        raise InputError("no patient has both a scan and a rescan folder", root)
    return names


def run_repeatability(pairs_root, networks, *, progress: Callable | None = None, cache_dir=None) -> dict:
    """Analyse every scan-rescan pair under ``pairs_root`` and collect the repeatability measures.

    Args:
      pairs_root: folder with ``scan/<name>`` and ``rescan/<name>`` ACDC patient folders, or the
        ``[(scan_folder, rescan_folder), ...]`` list of :func:`make_pairs` (named by the scan folder).
      networks: :class:`deepstrain_jax.analysis.networks.Networks` (loaded once, reused for every subject).
      progress: called after each pair as ``progress(done, total, name, seconds)``.
      cache_dir: optional folder keeping each subject's ``results.json`` dict as ``<side>/<name>.json``; a
        re-run reuses them (resume; keyed by side and name only, so use one cache folder per cohort).
    Returns:
      ``{"subjects": [names], "scan": [subject_values], "rescan": [subject_values], "failed": {"side/name":
      message}}``; a subject the analysis rejects (``InputError``) is recorded in ``failed`` and its values
      are NaN.
    """
    from deepstrain_jax.analysis.pipeline import analyze
    from deepstrain_jax.io.atomic import write_text

    if isinstance(pairs_root, (str, Path)):
        root = Path(pairs_root)
        pairs = [(root / "scan" / name, root / "rescan" / name) for name in find_pairs(root)]
    else:
        pairs = [(Path(a), Path(b)) for a, b in pairs_root]
    names = [a.name for a, _ in pairs]
    out = {"subjects": names, "scan": [], "rescan": [], "failed": {}}
    for i, (name, folders) in enumerate(zip(names, pairs)):
        start = time.perf_counter()
        for side, folder in zip(("scan", "rescan"), folders):
            cached = None if cache_dir is None else Path(cache_dir) / side / f"{name}.json"
            results = None
            if cached is not None and cached.is_file():
                results = json.loads(cached.read_text(encoding="utf-8"))
            else:
                try:
                    results = analyze(folder, networks=networks).results
                except InputError as e:
                    out["failed"][f"{side}/{name}"] = str(e)
                if results is not None and cached is not None:
                    write_text(cached, json.dumps(results) + "\n")
            out[side].append(subject_values(results or {}))
        if progress is not None:
            progress(i + 1, len(names), name, time.perf_counter() - start)
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None  # JSON has no NaN
    return x


def write_repeatability(out_dir, values: dict, *, arc_reference: str = "second") -> dict[str, Path]:
    """Write ``repeatability.md``, ``.csv``, ``.png`` and the raw ``repeatability_values.json`` atomically."""
    from deepstrain_jax.io.atomic import write_bytes, write_text

    out = Path(out_dir)
    markdown, rows, png = summarise_repeatability(values, arc_reference=arc_reference)
    paths = {k: out / f"repeatability{s}" for k, s in
             (("markdown", ".md"), ("csv", ".csv"), ("png", ".png"), ("values", "_values.json"))}
    write_text(paths["values"], json.dumps(_json_safe(values), indent=1, allow_nan=False) + "\n")
    write_text(paths["csv"], rows_to_csv(rows))
    write_bytes(paths["png"], png)
    write_text(paths["markdown"], markdown)
    return paths
