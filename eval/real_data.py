"""Real-data validation on the held-out ACDC patients: ``python -m eval.real_data --out docs/validation_real.md``.

For each held-out patient (``deepstrain_jax.data.acdc_real.HELD_OUT``) with manual labels -- the ``labelled``
form where the patient has it (real voxel size), else the ``h5`` form (nominal voxel size) -- the ED and ES frames
are segmented exactly as ``deepstrain analyze`` segments a cine (:func:`deepstrain_jax.analysis.pipeline.segment_stack`:
network grid, VCN centre on ED, CarSON, back to the native grid) and compared with the manual labels:

* Dice per class (RV, myocardium, LV cavity) at ED and ES, and HD95 in mm (``h5`` cases: in nominal mm);
* LV EDV, ESV, EF, LV mass and RV EDV, EF against the manual labels' values. Volumes are compared in **percent**
  (``100 (auto - manual) / manual``), which does not depend on the voxel size, so the ``h5`` cases count too;
  EF in points;
* the VCN centring error: in-plane distance from the VCN crop centre to the manual ED myocardium's centre of
  mass, mm;
* whether AHA segments can be placed from the automatic ED segmentation (as ``analyze`` places them).

Rows per patient, a mean row, rows per ACDC group, and the models side by side (the current ones and, with
``--previous``, another set such as the models shipped before). Contour overlays of the best, median and worst
patient (by mean Dice) are written as PNGs.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from deepstrain_jax.labels import HEART, SHORT_NAMES

CLASSES = tuple((SHORT_NAMES[c], c) for c in HEART)
# The original DeepStrain's CarSON on the ACDC test set (paper, Table I / the CarSON versions table): ED / ES.
PAPER = {"lv": (0.967, 0.929), "myo": (0.898, 0.913)}
# Issue 11's "must reach" (mean over the held-out patients).
TARGETS = {"lv": (0.92, 0.87), "myo": (0.83, 0.85), "rv": (0.85, 0.75)}


def held_out_refs(root, held_out) -> list:
    """One :class:`~deepstrain_jax.data.acdc_real.CaseRef` per held-out patient with manual labels: the
    ``labelled`` form first (real voxel size), else ``h5``."""
    from deepstrain_jax.data import acdc_real

    refs, seen = [], set()
    for form in ("labelled", "h5"):
        for ref in acdc_real.find_cases(root, form, include=tuple(held_out)):
            if ref.number not in seen:
                refs.append(ref)
                seen.add(ref.number)
    return sorted(refs, key=lambda r: r.number)


def _volumes(labels, spacing) -> dict:
    from deepstrain_jax.cardiac import volumetrics

    v = volumetrics.label_volumes_ml(labels[None], spacing)
    return {"lv": float(v.lv_ml[0]), "rv": float(v.rv_ml[0]), "myo": float(v.myo_ml[0])}


def class_scores(pred, manual, spacing_mm, suffix: str = "") -> dict:
    """Dice and HD95 (mm) of ``pred`` against ``manual`` per class of :data:`CLASSES`, as
    ``{"dice_<class><suffix>", "hd95_<class><suffix>_mm"}`` (HD95 NaN where a map lacks the class)."""
    from deepstrain_jax.metrics import dice, surface_metrics

    values = [c for _, c in CLASSES]
    d = dice(pred, manual, labels=values)
    sm = surface_metrics(pred, manual, spacing_mm, labels=values, on_empty="nan")
    out = {}
    for i, (name, _) in enumerate(CLASSES):
        out[f"dice_{name}{suffix}"] = float(d[i])
        out[f"hd95_{name}{suffix}_mm"] = float(sm.hd95_mm[i])
    return out


def analyze_case(case, networks, **options) -> dict:
    """``results.json`` of :func:`deepstrain_jax.analysis.pipeline.analyze` on a real ACDC case, with its ED and
    ES and ACDC's base -> apex slice order (``options``: more :class:`AnalysisOptions` fields)."""
    from deepstrain_jax.analysis.pipeline import analyze

    return analyze(case.image, networks=networks, spacing_mm=case.spacing_mm, affine=case.affine, name=case.name,
                   ed=int(case.ed), es=int(case.es), slice_order="base_to_apex", **options).results


def evaluate_case(case, networks) -> tuple[dict, dict]:
    """Segment a :class:`~deepstrain_jax.data.acdc_real.RealCase`'s ED and ES and score it (module docstring).

    Returns ``(row, arrays)``: the JSON-able row and, for figures, the image, manual and automatic labels.
    """
    from deepstrain_jax.analysis import grids
    from deepstrain_jax.analysis.pipeline import segment_stack
    from deepstrain_jax.cardiac import aha as aha_lib
    from deepstrain_jax.data.preprocessing import myocardium_centroid, resample_window

    frames = (case.ed, case.es)
    image = case.image[..., list(frames)]
    seg = segment_stack(image, case.spacing_mm, networks=networks, ed=0)
    row = {"patient": case.name, "form": case.form, "group": case.group, "spacing_known": case.spacing_known,
           "centre_source": seg.centre_source}
    for k, phase in enumerate(("ed", "es")):
        manual, auto = case.labels[frames[k]], seg.native[..., k]
        row.update(class_scores(auto, manual, case.spacing_mm, suffix=f"_{phase}"))
        row[f"manual_{phase}"] = _volumes(manual, case.spacing_mm)
        row[f"auto_{phase}"] = _volumes(auto, case.spacing_mm)
    for who in ("manual", "auto"):
        ed, es = row[f"{who}_ed"], row[f"{who}_es"]
        row[f"{who}_lv_ef"] = 100.0 * (ed["lv"] - es["lv"]) / ed["lv"] if ed["lv"] > 0 else float("nan")
        row[f"{who}_rv_ef"] = 100.0 * (ed["rv"] - es["rv"]) / ed["rv"] if ed["rv"] > 0 else float("nan")
    # VCN centring error: the crop centre against the manual ED myocardium's centre of mass (resampled grid).
    c = myocardium_centroid(resample_window(case.labels[case.ed], seg.resampling, None, 0))
    step = float(seg.resampling.out_spacing_mm[0])
    row["centre_error_mm"] = float(np.linalg.norm(seg.centre_vox - c) * step) if c is not None else float("nan")
    # AHA segments from the automatic ED segmentation on the network grid (ACDC is stored base -> apex).
    labels_ed = np.ascontiguousarray(seg.network[0])
    affine_net = grids.grid_affine(case.affine, seg.resampling, seg.crop, False)
    try:
        segments = aha_lib.aha_segments(labels_ed, seg.resampling.out_spacing_mm, base_first=True, affine=affine_net)
        row["aha_segments"] = int(len(np.unique(segments[segments > 0])))
    except ValueError as e:
        row["aha_segments"] = 0
        row["aha_error"] = str(e)
    return row, {"image": image, "manual": np.stack([case.labels[f] for f in frames], -1), "auto": seg.native}


def _mean(rows, key) -> float:
    v = np.array([r[key] for r in rows], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _pct(auto, manual) -> float:
    return 100.0 * (auto - manual) / manual if manual > 0 else float("nan")


def agreement(rows) -> dict:
    """Bias, SD and limits of agreement: volumes and mass in percent of the manual value (not of the pair mean,
    as ``metrics.agreement.bland_altman(percent=True)``), EF in points."""
    out = {}
    quantities = {
        "LV EDV (%)": [_pct(r["auto_ed"]["lv"], r["manual_ed"]["lv"]) for r in rows],
        "LV ESV (%)": [_pct(r["auto_es"]["lv"], r["manual_es"]["lv"]) for r in rows],
        "LV mass (%)": [_pct(r["auto_ed"]["myo"], r["manual_ed"]["myo"]) for r in rows],
        "RV EDV (%)": [_pct(r["auto_ed"]["rv"], r["manual_ed"]["rv"]) for r in rows],
        "LV EF (points)": [r["auto_lv_ef"] - r["manual_lv_ef"] for r in rows],
        "RV EF (points)": [r["auto_rv_ef"] - r["manual_rv_ef"] for r in rows],
    }
    for name, d in quantities.items():
        d = np.array(d, np.float64)
        d = d[np.isfinite(d)]
        if d.size >= 2:
            sd = float(d.std(ddof=1))
            out[name] = {"bias": float(d.mean()), "sd": sd, "loa": (float(d.mean() - 1.96 * sd),
                                                                    float(d.mean() + 1.96 * sd)), "n": int(d.size)}
        else:
            out[name] = {"bias": float("nan"), "sd": float("nan"), "loa": (float("nan"),) * 2, "n": int(d.size)}
    return out


def summary(rows) -> dict:
    s = {k: _mean(rows, k) for k in rows[0] if k.startswith(("dice_", "hd95_")) or k == "centre_error_mm"}
    s["without_aha"] = [r["patient"] for r in rows if r["aha_segments"] == 0]
    s["agreement"] = agreement(rows)
    return s


def _f(v, fmt="{:.3f}") -> str:
    return "–" if v is None or not np.isfinite(v) else fmt.format(v)


def markdown(results: dict, models: dict) -> str:
    """The report section: per-model means side by side, targets and the paper, agreement, groups, patients."""
    names = list(results)
    lines = ["| Dice (mean over held-out) | " + " | ".join(names) + " | must reach | paper (Table I) |",
             "|---|" + "---|" * (len(names) + 2)]
    for cls, _ in CLASSES:
        for k, phase in enumerate(("ed", "es")):
            key = f"dice_{cls}_{phase}"
            paper = PAPER.get(cls, (None, None))[k]
            lines.append(f"| {cls.upper()} {phase.upper()} | "
                         + " | ".join(_f(results[n]["summary"][key]) for n in names)
                         + f" | ≥ {TARGETS[cls][k]:.2f} | {_f(paper) if paper else 'not reported'} |")
    for cls, _ in CLASSES:
        lines.append(f"| HD95 {cls.upper()} ED / ES (mm) | " + " | ".join(
            f"{_f(results[n]['summary'][f'hd95_{cls}_ed_mm'], '{:.1f}')} / "
            f"{_f(results[n]['summary'][f'hd95_{cls}_es_mm'], '{:.1f}')}" for n in names) + " | | |")
    lines.append("| VCN centring error (mm) | " + " | ".join(
        _f(results[n]["summary"]["centre_error_mm"], "{:.1f}") for n in names) + " | | |")
    lines.append("| patients without AHA segments | " + " | ".join(
        (", ".join(results[n]["summary"]["without_aha"]) or "none") for n in names) + " | none | |")
    out = ["\n".join(lines), "", "Agreement with the manual labels (automatic − manual; volumes in percent of the "
           "manual value, so the h5 cases with unknown voxel size count; EF in points): bias ± SD "
           "[limits of agreement].", "",
           "| quantity | " + " | ".join(names) + " | must reach |", "|---|" + "---|" * (len(names) + 1)]
    must = {"LV EDV (%)": "bias within ±10 %", "LV EF (points)": "bias within ±3, SD ≤ 6"}
    for q in results[names[0]]["summary"]["agreement"]:
        cells = []
        for n in names:
            a = results[n]["summary"]["agreement"][q]
            cells.append(f"{_f(a['bias'], '{:+.1f}')} ± {_f(a['sd'], '{:.1f}')} "
                         f"[{_f(a['loa'][0], '{:+.1f}')}, {_f(a['loa'][1], '{:+.1f}')}]")
        out.append(f"| {q} | " + " | ".join(cells) + f" | {must.get(q, '')} |")
    main = names[0]
    rows = results[main]["rows"]
    groups = sorted({r["group"] for r in rows})
    out += ["", f"Per group ({main}): mean Dice RV / myocardium / LV at ED and ES.", "",
            "| group | n | RV ED | RV ES | myo ED | myo ES | LV ED | LV ES |", "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        rg = [r for r in rows if r["group"] == g]
        out.append(f"| {g} | {len(rg)} | " + " | ".join(_f(_mean(rg, f"dice_{c}_{p}")) for c, _ in CLASSES
                                                        for p in ("ed", "es")) + " |")
    out += ["", f"Per patient ({main}):", "",
            "| patient | form | group | voxel size | Dice RV ED/ES | Dice myo ED/ES | Dice LV ED/ES | LV EF manual → "
            "auto | centring (mm) | AHA segments |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['patient']} | {r['form']} | {r['group']} | {'scan' if r['spacing_known'] else 'nominal'} | "
                   + " | ".join(f"{_f(r[f'dice_{c}_ed'], '{:.2f}')} / {_f(r[f'dice_{c}_es'], '{:.2f}')}"
                                for c, _ in CLASSES)
                   + f" | {_f(r['manual_lv_ef'], '{:.0f}')} → {_f(r['auto_lv_ef'], '{:.0f}')} | "
                   f"{_f(r['centre_error_mm'], '{:.1f}')} | {r['aha_segments']} |")
    out += ["", "Models: " + "; ".join(f"**{n}**: {m}" for n, m in models.items()) + "."]
    return "\n".join(out) + "\n"


def overlay_png(arrays: dict, title: str) -> bytes:
    """ED and ES at three slice levels (basal, mid, apical of the manual LV), manual contours solid, automatic
    dashed; RV blue, myocardium green, LV cavity red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, manual, auto = arrays["image"], arrays["manual"], arrays["auto"]
    lv_slices = np.flatnonzero((manual[..., 0] > 0).any(axis=(0, 1)))
    if lv_slices.size == 0:
        lv_slices = np.arange(image.shape[2])
    picks = [int(lv_slices[int(round(q * (lv_slices.size - 1)))]) for q in (0.15, 0.5, 0.85)]
    colours = {1: "tab:blue", 2: "tab:green", 3: "tab:red"}
    fig, axes = plt.subplots(2, 3, figsize=(9.5, 7.6))
    for k, phase in enumerate(("ED", "ES")):
        for j, z in enumerate(picks):
            ax = axes[k, j]
            img = image[:, :, z, k].T
            lo, hi = np.percentile(img, (1, 99.5))
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            for label, colour in colours.items():
                for lab, style in ((manual, "-"), (auto, "--")):
                    m = (lab[:, :, z, k] == label).T.astype(float)
                    if m.any():
                        ax.contour(m, levels=[0.5], colors=colour, linestyles=style, linewidths=1.0)
            # zoom on the heart
            heart = np.argwhere((manual[:, :, z, k] > 0) | (auto[:, :, z, k] > 0))
            if heart.size:
                (x0, y0), (x1, y1) = heart.min(0), heart.max(0)
                pad = 15
                ax.set_xlim(x0 - pad, x1 + pad)
                ax.set_ylim(y0 - pad, y1 + pad)
            ax.set_title(f"{phase}, slice {z}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{title}\nmanual solid, automatic dashed: RV blue, myocardium green, LV cavity red", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def run(networks, refs, progress=None) -> tuple[list, dict]:
    """Evaluate ``networks`` on ``refs``; returns ``(rows, {patient: arrays})``."""
    from deepstrain_jax.data import acdc_real

    rows, arrays = [], {}
    t0 = time.perf_counter()
    for i, ref in enumerate(refs):
        row, arr = evaluate_case(acdc_real.read_case(ref), networks)
        rows.append(row)
        arrays[row["patient"]] = arr
        if progress:
            progress(f"[real {i + 1}/{len(refs)}] {ref.name} ({ref.form}) mean Dice "
                     f"{np.mean([row[f'dice_{c}_{p}'] for c, _ in CLASSES for p in ('ed', 'es')]):.3f} "
                     f"({time.perf_counter() - t0:.0f} s)")
    return rows, arrays


def _json(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    return v


def report(model_sets: dict, root, held_out, fig_dir: Path, progress=None) -> tuple[str, dict]:
    """Evaluate each ``{name: Networks}`` on the held-out patients; write overlays of the first set into
    ``fig_dir``; return ``(markdown, results)``."""
    from deepstrain_jax.io import atomic

    refs = held_out_refs(root, held_out)
    if not refs:
        raise ValueError(f"no held-out patient with labels under {root}")
    results, described = {}, {}
    first_arrays = None
    for name, networks in model_sets.items():
        rows, arrays = run(networks, refs, progress)
        results[name] = {"rows": rows, "summary": summary(rows)}
        described[name] = ", ".join(f"{k} {v['source']}" + (f" ({v['name']})" if v.get("name") else "")
                                    for k, v in networks.describe().items() if v and k != "carmen")
        if first_arrays is None:
            first_arrays = arrays
    main = next(iter(results))
    rows = results[main]["rows"]
    order = sorted(rows, key=lambda r: np.mean([r[f"dice_{c}_{p}"] for c, _ in CLASSES for p in ("ed", "es")]))
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    figures = []
    for what, r in picks.items():
        fname = f"real_overlay_{what}.png"
        mean = np.mean([r[f"dice_{c}_{p}"] for c, _ in CLASSES for p in ("ed", "es")])
        atomic.write_bytes(fig_dir / fname, overlay_png(first_arrays[r["patient"]], f"{what}: {r['patient']} "
                                                        f"({r['group']}, {r['form']}), mean Dice {mean:.3f}"))
        figures.append(f"![{what}]({fig_dir.name}/{fname})")
    text = markdown(results, described)
    text += "\nContour overlays (" + main + "): best, median and worst held-out patient by mean Dice (images: " \
        "ACDC, O. Bernard et al., IEEE TMI 37(11):2514-2525, 2018, CC BY-NC-SA 4.0).\n\n" + \
        "\n\n".join(reversed(figures)) + "\n"
    return text, _json(results)


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Only when run as a script: eval.main imports this module and has flags of the same names.
    flags.DEFINE_string("root", "", "ACDC data folder (default ../shared/data/acdc from the repository).")
    flags.DEFINE_string("vcn", "", "VCN model (default: shipped).")
    flags.DEFINE_string("carson", "", "CarSON model (default: shipped).")
    flags.DEFINE_string("previous", "", "A folder with vcn/ and carson/ model folders to compare against.")
    flags.DEFINE_string("previous_note", "", "What the --previous models are (written into the report).")
    flags.DEFINE_string("out", "docs/validation_real.md", "Markdown report (figures beside it, JSON next to it).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from deepstrain_jax.analysis.networks import Networks
    from deepstrain_jax.data import acdc_real
    from deepstrain_jax.io import atomic
    from deepstrain_jax.xla_flags import use_fast_cpu_convolutions

    use_fast_cpu_convolutions()
    root = acdc_real.resolve_root(FLAGS.root)
    sets = {"current": Networks.load(vcn=FLAGS.vcn or None, carson=FLAGS.carson or None)}
    if FLAGS.previous:
        p = Path(FLAGS.previous)
        sets["previous"] = Networks.load(vcn=p / "vcn", carson=p / "carson")
    out = Path(FLAGS.out)
    fig_dir = out.parent / f"{out.stem}_figures"
    text, results = report(sets, root, acdc_real.HELD_OUT, fig_dir,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    header = ("# Validation on real cine-MRI: the held-out ACDC patients\n\n"
              f"Regenerate: `python -m eval.real_data --out {FLAGS.out}"
              + (f" --previous {FLAGS.previous}" if FLAGS.previous else "") + "`. Held-out patients (never trained "
              f"on, never used to pick a checkpoint): {', '.join(acdc_real.HELD_OUT)}; those with manual labels are "
              "scored, from the full-view `labelled` form where the patient has it (scan voxel size), else from the "
              "`h5` form (voxel size unknown: the nominal "
              f"{' x '.join(f'{v:g}' for v in acdc_real.NOMINAL_SPACING_MM)} mm; HD95 and centring errors of those "
              "are in nominal mm). ED and ES are segmented as `deepstrain analyze` does "
              "(`deepstrain_jax.analysis.pipeline.segment_stack`)."
              + (f" **previous**: {FLAGS.previous_note}." if FLAGS.previous_note else "") + "\n\n")
    atomic.write_text(out, header + text)
    atomic.write_text(out.with_suffix(".json"), json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(header + text)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
