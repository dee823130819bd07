"""The paper's clinical figure on real data: global strain and strain-rate curves of the ACDC cines by group.

``python -m eval.real_cines_figure --out=docs/validation_figures/real_cines`` analyses every full-cycle cine of
``../shared/data/acdc/cine`` (40 patients, 8 per group) with ``deepstrain analyze``'s pipeline and draws, per
direction, the group mean and SD of the global Green-Lagrange strain and of its rate against time as a fraction of
the cycle (ACDC stores no frame interval: each cine is taken as one cycle, frame ``k`` at ``k / T``, so rates are
per cycle, 1/cycle; with a 60 bpm heart rate that is 1/s). It writes ``<out>.png``, ``<out>.md`` (a table of
ESS, peak systolic and early-diastolic strain rate per group) and ``<out>.json``.

This is a description of the cohort, not a validation: 36 of the 40 cines were in CarMEN's training set (as
unlabelled pairs) and there is no truth to compare with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.data import acdc_real
from eval.real_data import analyze_case

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
DIRECTIONS = ("circumferential", "radial", "longitudinal")
COLOURS = {"NOR": "#1b9e77", "DCM": "#d95f02", "HCM": "#7570b3", "MINF": "#e7298a", "RV": "#66a61e"}
GRID = np.linspace(0.0, 1.0, 51)
REPO = Path(__file__).resolve().parents[1]


def cine_curves(case, networks: Networks) -> dict:
    """Global strain (%) and rate (1/cycle) on :data:`GRID` (cycle fraction from ED) and the indices."""
    t = case.image.shape[3]
    r = analyze_case(case, networks, frame_interval_s=1.0 / t)
    frac = np.arange(t + 1) / t  # the cycle closes: ED again at 1
    out = {"patient": case.name, "group": case.group, "n_frames": t, "spacing_known": bool(case.spacing_known),
           "lv_ef_pct": r["volumes"]["lv_ef_pct"], "warnings": r["qc"]["warnings"]}
    for d in DIRECTIONS:
        e = np.roll(np.asarray(r["strain"]["global_pct"][d], float), -case.ed)
        sr = np.roll(np.asarray(r["strain"]["strain_rate_per_s"][d], float), -case.ed)
        out[f"{d}_strain_pct"] = np.interp(GRID, frac, np.append(e, e[0])).tolist()
        out[f"{d}_rate_per_cycle"] = np.interp(GRID, frac, np.append(sr, sr[0])).tolist()
        ind = r["strain"]["indices"][d]
        out[f"{d}_ess_pct"], out[f"{d}_srs"], out[f"{d}_sre"] = ind["ess_pct"], ind["srs_per_s"], ind["sre_per_s"]
    return out


def figure_png(rows: list) -> bytes:
    from deepstrain_jax.report.plots import new_figure, png_bytes

    fig = new_figure(13.0, 7.0)
    for j, d in enumerate(DIRECTIONS):
        for i, (key, unit) in enumerate(((f"{d}_strain_pct", "strain (%)"), (f"{d}_rate_per_cycle", "rate (1/cycle)"))):
            ax = fig.add_subplot(2, 3, 1 + j + 3 * i)
            for g in GROUPS:
                y = np.array([r[key] for r in rows if r["group"] == g])
                if not len(y):
                    continue
                m, s = y.mean(0), y.std(0)
                ax.plot(GRID, m, color=COLOURS[g], lw=1.8, label=f"{g} (n={len(y)})")
                ax.fill_between(GRID, m - s, m + s, color=COLOURS[g], alpha=0.12, lw=0)
            ax.axhline(0, color="0.6", lw=0.6)
            title = d + (" (experimental)" if d != "circumferential" else "")
            ax.set_title(f"{title}: {unit}", fontsize=10)
            ax.set_xlabel("time (fraction of the cycle from ED)", fontsize=8)
            ax.tick_params(labelsize=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, frameon=False)
    fig.suptitle("ACDC cines (40 patients, 8 per group): global strain and strain rate, group mean ± SD",
                 fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.08, hspace=0.45, wspace=0.25)
    return png_bytes(fig)


def table(rows: list) -> str:
    lines = ["| group | n | LV EF (%) | circ. ESS (%) | radial ESS (%) | long. ESS (%) | circ. SRe (1/cycle) "
             "| radial SRe (1/cycle) | radial SRs (1/cycle) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in GROUPS:
        rs = [r for r in rows if r["group"] == g]
        if not rs:
            continue

        def ms(key, rs=rs):
            v = np.array([r[key] for r in rs if r[key] is not None], float)
            return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else "–"

        lines.append(f"| {g} | {len(rs)} | {ms('lv_ef_pct')} | {ms('circumferential_ess_pct')} | "
                     f"{ms('radial_ess_pct')} | {ms('longitudinal_ess_pct')} | {ms('circumferential_sre')} | "
                     f"{ms('radial_sre')} | {ms('radial_srs')} |")
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS


# Normal values of CMR feature tracking (pooled means of a meta-analysis: Vo, Marwick, Negishi, JACC Cardiovasc
# Imaging 2018;11:196-205), Lagrangian engineering strain e in %, and as Green-Lagrange E = e + e^2 / 2 (this
# package's strain) for comparison.
NORMS_ENGINEERING_PCT = {"circumferential": -23.0, "radial": 34.1, "longitudinal": -20.1}


def green_lagrange_pct(engineering_pct: float) -> float:
    e = engineering_pct / 100.0
    return 100.0 * (e + 0.5 * e * e)


def interpretation(rows: list) -> str:
    """The two questions of the paper's clinical figure, answered from ``rows`` (markdown paragraphs; every
    statement follows from the numbers)."""
    def mean(key, sel):
        v = [r[key] for r in rows if sel(r) and r[key] is not None]
        return (float(np.mean(v)), len(v)) if v else (float("nan"), 0)

    nor = mean("radial_sre", lambda r: r["group"] == "NOR")
    lines, slower = [f"NOR {nor[0]:.2f} (n = {nor[1]})"], []
    for g in ("HCM", "RV"):
        a = mean("radial_sre", lambda r, g=g: r["group"] == g)
        b = mean("radial_sre", lambda r, g=g: r["group"] == g and (r["lv_ef_pct"] or 0) >= 50)
        lines.append(f"{g} {a[0]:.2f} ({100 * a[0] / nor[0]:.0f} % of NOR; n = {a[1]}), with LV EF >= 50 % "
                     f"{b[0]:.2f} ({100 * b[0] / nor[0]:.0f} %; n = {b[1]})")
        slower.append(g if b[1] and abs(b[0]) < abs(nor[0]) else None)
    seen = [g for g in slower if g]
    verdict = ("lower in magnitude than NOR's in " + " and ".join(seen) + " patients with normal EF, the "
               "paper's direction" if seen else "not lower than NOR's in HCM or RV patients with normal EF")
    text = ("Radial early-diastolic strain rate (SRe, 1/cycle; negative: the wall thins in early diastole): "
            + "; ".join(lines) + f". The paper found radial SRe reduced in HCM and abnormal-RV patients with normal "
            f"EF; here it is {verdict}, with 8 patients per group and spreads as large as the differences "
            "(table).\n\n")
    parts = []
    for d in ("circumferential", "radial", "longitudinal"):
        m, _ = mean(f"{d}_ess_pct", lambda r: r["group"] == "NOR")
        norm = green_lagrange_pct(NORMS_ENGINEERING_PCT[d])
        parts.append(f"{d} {m:.1f} % against {norm:.0f} % ({100 * m / norm:.0f} % of it)")
    text += ("Global ESS of the NOR group against published normal values of CMR feature tracking (pooled means, "
             "Vo et al., JACC Cardiovasc Imaging 2018, converted from engineering to Green-Lagrange strain): "
             + "; ".join(parts) + ". These cines are crops of 7 mid-ventricular slices without base and apex, and "
             "radial and longitudinal strain are experimental; where a ratio is well below 100 % the models "
             "underestimate the deformation of real hearts, and absolute values should not be compared with "
             "published ranges.\n")
    return text


def report(networks: Networks, root, progress=None) -> tuple[str, bytes, list]:
    """Every cine of ``root``/cine analysed: ``(markdown table, figure PNG, rows)``."""
    refs = acdc_real.find_cases(root, "cine")
    rows = []
    for k, ref in enumerate(refs):
        rows.append(cine_curves(acdc_real.read_case(ref), networks))
        if progress:
            progress(f"[{k + 1}/{len(refs)}] {ref.name}")
    return table(rows) + "\n" + interpretation(rows), figure_png(rows), rows


def main(argv):
    del argv
    from deepstrain_jax import console

    console.set_verbosity(console.DEFAULT)  # Orbax's INFO lines stay out of the console
    text, png, rows = report(Networks.load(carmen=FLAGS.carmen), FLAGS.root,
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".png").write_bytes(png)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows))
    print(text)
    return 0


if __name__ == "__main__":
    flags.DEFINE_string("root", str(REPO.parent / "shared" / "data" / "acdc"), "ACDC data folder (holds cine/).")
    flags.DEFINE_string("carmen", None, "CarMEN (default: the shipped model).")
    flags.DEFINE_string("out", "docs/validation_figures/real_cines", "Output path without suffix.")
    app.run(main)
