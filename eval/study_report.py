"""Tables, CSV and figures of the phantom study (rows from :func:`eval.phantom_study.evaluate_subject`).

Tables follow the paper's: I segmentation (Dice, HD per label and phase), II volumes and motion (agreement
of EDV/ESV/EF/mass: Pearson r, bias, 95% limits of agreement; end-point errors), III strain (global ESS, SRs,
SRe: bias, limits of agreement, r; the ESS error split into discretisation, motion and segmentation parts), and
a breakdown of the key numbers by phenotype, SNR, geometry and slice order. Summaries are mean +- SD over
subjects (sample SD); agreement uses :func:`deepstrain_jax.metrics.bland_altman` (measured - true).
"""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np

from eval.phantom_study import DIRECTIONS, LABELS

FACTORS = ("phenotype", "snr", "model", "slice_order")


def _values(rows, key) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], np.float64)


def _mean_sd(x) -> str:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return "n/a"
    return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}" if x.size > 1 else f"{x.mean():.2f}"


def agreement(true, pred) -> dict:
    """Pearson r, bias and 95% limits of agreement of ``pred - true`` (finite pairs only; NaN below 3)."""
    from deepstrain_jax.metrics import bland_altman, pearson_r

    t, p = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    if ok.sum() < 3:
        return {"n": int(ok.sum()), "r": np.nan, "bias": np.nan, "loa_low": np.nan, "loa_high": np.nan}
    ba = bland_altman(p[ok], t[ok])
    r = pearson_r(p[ok], t[ok]) if np.std(t[ok]) > 0 and np.std(p[ok]) > 0 else np.nan
    return {"n": int(ok.sum()), "r": float(r), "bias": ba.bias, "loa_low": ba.lower_loa, "loa_high": ba.upper_loa}


def _agreement_line(name, unit, a) -> str:
    return (f"| {name} | {unit} | {a['n']} | {a['r']:.3f} | {a['bias']:+.2f} | "
            f"[{a['loa_low']:+.2f}, {a['loa_high']:+.2f}] |")


def tables(rows: list[dict], factors=FACTORS, suffix: str = "") -> str:
    """The markdown tables (module docstring); ``suffix`` ends every heading, ``factors`` picks the breakdown."""
    out = [f"### Table I: segmentation (native grid, against the rendered labels){suffix}", "",
           "| label | Dice ED | Dice ES | HD ED (mm) | HD ES (mm) |", "|---|---:|---:|---:|---:|"]
    for _, name in LABELS:
        out.append(f"| {name} | {_mean_sd(_values(rows, f'dice_{name}_ed'))} | "
                   f"{_mean_sd(_values(rows, f'dice_{name}_es'))} | {_mean_sd(_values(rows, f'hd_{name}_ed_mm'))} | "
                   f"{_mean_sd(_values(rows, f'hd_{name}_es_mm'))} |")
    out += ["", f"### Table II: volumes (against the exact phantom volumes) and motion{suffix}", "",
            "| quantity | unit | n | r | bias | 95% limits |", "|---|---|---:|---:|---:|---|"]
    for key, name, unit in (("lv_edv_ml", "LV EDV", "mL"), ("lv_esv_ml", "LV ESV", "mL"),
                            ("lv_ef_pct", "LV EF", "%"), ("lv_mass_g", "LV mass", "g")):
        out.append(_agreement_line(name, unit, agreement(_values(rows, f"{key}_true"), _values(rows, f"{key}_pred"))))
    out += ["", "| motion error at ES (ED myocardium) | mm |", "|---|---:|"]
    for key, name in (("truth_motion_es_mm", "true displacement magnitude (for scale)"),
                      ("epe_es_mm", "dense end-point error"), ("epe_es_inplane_mm", "in-plane part"),
                      ("epe_es_throughplane_mm", "through-plane part"),
                      ("epe_es_segment_max_mm", "worst AHA segment (mean EPE)"),
                      ("landmark_epe_es_mm", "landmark end-point error (12 points)"),
                      ("qc_cycle_closure_mm", "cycle closure ED -> ES -> ED (QC, no truth needed)"),
                      ("qc_cycle_closure_in_plane_mm", "cycle closure, in-plane part"),
                      ("qc_cycle_closure_through_plane_mm", "cycle closure, through-plane part")):
        out.append(f"| {name} | {_mean_sd(_values(rows, key))} |")
    out += ["", f"### Table III: global strain and strain rate (against the exact curves){suffix}", "",
            "| quantity | unit | n | r | bias | 95% limits |", "|---|---|---:|---:|---:|---|"]
    for d, _ in DIRECTIONS:
        for idx, unit in (("ess", "%"), ("srs", "1/s"), ("sre", "1/s")):
            key = f"{d}_{idx}"
            out.append(_agreement_line(f"{d} {idx.upper()}", unit,
                                       agreement(_values(rows, f"{key}_true"), _values(rows, f"{key}_pred"))))
    out += ["", "ESS error split (percentage points, mean ± SD; the parts sum to the total):", "",
            "| direction | discretisation | motion | segmentation | per-segment mean abs error |",
            "|---|---:|---:|---:|---:|"]
    for d, _ in DIRECTIONS:
        out.append(f"| {d} | {_mean_sd(_values(rows, f'{d}_ess_error_discretisation_pp'))} | "
                   f"{_mean_sd(_values(rows, f'{d}_ess_error_motion_pp'))} | "
                   f"{_mean_sd(_values(rows, f'{d}_ess_error_segmentation_pp'))} | "
                   f"{_mean_sd(_values(rows, f'segment_{d}_mae_pp'))} |")
    out += ["", f"### By factor{suffix}", "",
            "| factor | level | n | Dice LV ES | Dice MYO ES | EPE ES (mm) | GCS ESS error (pp) | EF error (%) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for f in factors:
        for level in sorted({r[f] for r in rows}, key=str):
            sel = [r for r in rows if r[f] == level]
            gcs = _values(sel, "circumferential_ess_pred") - _values(sel, "circumferential_ess_true")
            ef = _values(sel, "lv_ef_pct_pred") - _values(sel, "lv_ef_pct_true")
            out.append(f"| {f} | {level} | {len(sel)} | {_mean_sd(_values(sel, 'dice_LV_es'))} | "
                       f"{_mean_sd(_values(sel, 'dice_MYO_es'))} | {_mean_sd(_values(sel, 'epe_es_mm'))} | "
                       f"{_mean_sd(gcs)} | {_mean_sd(ef)} |")
    return "\n".join(out) + "\n"


def rows_csv(rows: list[dict]) -> str:
    """One line per subject with every scalar of its row."""
    keys = [k for k, v in rows[0].items() if not isinstance(v, (dict, np.ndarray))]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        w.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in keys])
    return buf.getvalue()


def figures(rows: list[dict]) -> dict[str, bytes]:
    """``{"phantom_bland_altman.png", "phantom_segment_error.png", "phantom_epe_segments.png",
    "phantom_epe_cycle.png"}``."""
    from deepstrain_jax.report import plots

    images = {}
    panels = [("lv_ef_pct", "LV EF", "%"), ("circumferential_ess", "GCS ESS", "%"), ("radial_ess", "GRS ESS", "%"),
              ("longitudinal_ess", "GLS ESS", "%")]
    fig = plots.new_figure(4.0 * len(panels), 3.6)
    for i, (key, name, unit) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        t, p = _values(rows, f"{key}_true"), _values(rows, f"{key}_pred")
        ok = np.isfinite(t) & np.isfinite(p)
        if ok.sum() >= 3:
            plots.draw_bland_altman(ax, t[ok], p[ok], unit=unit)
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    images["phantom_bland_altman.png"] = plots.png_bytes(fig)
    mean_err = {}
    for d, _ in DIRECTIONS:
        stack = np.stack([r["segment_error_pp"][d] for r in rows])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a segment no subject has: NaN, drawn as n/a
            m = np.nanmean(stack, axis=0)
        mean_err[d] = [float(v) if np.isfinite(v) else None for v in m]
    images["phantom_segment_error.png"] = plots.polar_maps_png(
        mean_err, title="mean ESS error per AHA segment (measured - true, percentage points)", unit="pp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        seg_epe = np.nanmean(np.stack([r["epe_es_segment_mm"] for r in rows]), axis=0)
    images["phantom_epe_segments.png"] = plots.bullseye_png(
        [float(v) if np.isfinite(v) else None for v in seg_epe], title="mean end-point error at ES per AHA segment",
        unit="mm", vmin=0.0, vmax=float(np.nanmax(seg_epe)) if np.isfinite(seg_epe).any() else 1.0, cmap="viridis")
    fig = plots.new_figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for r in rows:
        e = np.asarray(r["epe_per_frame_mm"])
        ax.plot(np.linspace(0, 1, e.size), e, color="0.6", lw=0.8)
    ax.set_xlabel("fraction of the cycle (from ED)")
    ax.set_ylabel("dense EPE, ED myocardium (mm)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    images["phantom_epe_cycle.png"] = plots.png_bytes(fig)
    return images
