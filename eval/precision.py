"""bfloat16 against float32 inference: ``python -m eval.precision --out docs/validation_precision.md``.

The same networks are loaded twice (:meth:`deepstrain_jax.analysis.networks.Networks.load` with
``precision="float32"`` and ``"bfloat16"``: convolutions on bfloat16 with float32 accumulation) and every
subject is analysed with both:

* phantoms of both geometries (:func:`eval.phantom_study.evaluate_subject`, seeds of the phantom study, never
  trained on): Dice per class at ED and ES against the exact labels, and the global end-systolic strain
  (radial, circumferential, longitudinal) of ``deepstrain analyze``;
* the held-out ACDC patients with manual labels (:func:`eval.real_data.evaluate_case`): Dice per class at ED
  and ES against the manual labels;
* the held-out ACDC full-cycle cines (:func:`eval.real_data.analyze_case`): global end-systolic strain.

Reported: the mean Dice of each set in both precisions and the change, the largest per-subject Dice change, and
the global strain change in points (issue 18's bounds: Dice within 1e-3, strain within 0.1 points), with the
seconds each precision spent in the networks.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from deepstrain_jax.analysis.networks import PRECISIONS

DIRECTIONS = ("radial", "circumferential", "longitudinal")
DICE_BOUND, STRAIN_BOUND_PTS = 1e-3, 0.1
FLAGS = flags.FLAGS


def _phantom_row(folder, networks) -> dict:
    from eval.phantom_study import evaluate_subject

    r = evaluate_subject(folder, networks)
    row = {k: v for k, v in r.items() if k.startswith("dice_")}
    for d in DIRECTIONS:
        row[f"{d}_ess_pct"] = float(r[f"{d}_ess_pred"])
    return row


def _real_row(ref, networks) -> dict:
    from deepstrain_jax.data import acdc_real
    from eval.real_data import evaluate_case

    row, _ = evaluate_case(acdc_real.read_case(ref), networks)
    return {k: v for k, v in row.items() if k.startswith("dice_")}


def _cine_row(ref, networks) -> dict:
    from deepstrain_jax.data import acdc_real
    from eval.real_data import analyze_case

    g = analyze_case(acdc_real.read_case(ref), networks)["strain"]["indices"]
    return {f"{d}_ess_pct": float(g[d]["ess_pct"]) for d in DIRECTIONS}


def compare(subjects: list, row_fn, nets: dict, progress=None) -> list[dict]:
    """``[{"subject", "float32": row, "bfloat16": row}]`` for each ``(name, item)`` of ``subjects``."""
    out = []
    for name, item in subjects:
        entry = {"subject": name}
        for p in PRECISIONS:
            entry[p] = row_fn(item, nets[p])
        out.append(entry)
        if progress:
            progress(f"{name}: " + ", ".join(f"{k} {entry['bfloat16'][k] - entry['float32'][k]:+.2e}"
                                             for k in entry["float32"] if not k.startswith("hd")))
    return out


def summarise(entries: list) -> dict:
    """Per quantity: mean in each precision, change of the mean, largest per-subject change (absolute)."""
    keys = [k for k in entries[0]["float32"] if np.isfinite(entries[0]["float32"][k])] if entries else []
    out = {}
    for k in keys:
        a = np.array([e["float32"][k] for e in entries], np.float64)
        b = np.array([e["bfloat16"][k] for e in entries], np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        out[k] = {"float32": float(a[ok].mean()), "bfloat16": float(b[ok].mean()),
                  "mean_change": float((b[ok] - a[ok]).mean()), "max_abs_change": float(np.abs(b[ok] - a[ok]).max()),
                  "n": int(ok.sum())}
    return out


def markdown(sections: dict, seconds: dict) -> str:
    lines = []
    for title, summary in sections.items():
        if not summary:
            continue
        n = next(iter(summary.values()))["n"]
        lines += [f"**{title}** (n = {n})", "",
                  "| quantity | float32 | bfloat16 | change of the mean | largest change, one subject | bound |",
                  "|---|---|---|---|---|---|"]
        for k, s in summary.items():
            dice = k.startswith("dice_")
            bound = DICE_BOUND if dice else STRAIN_BOUND_PTS
            fmt = "{:.4f}" if dice else "{:.2f}"
            within = "within" if abs(s["mean_change"]) <= bound else "**beyond**"
            lines.append(f"| {k} | {fmt.format(s['float32'])} | {fmt.format(s['bfloat16'])} | {s['mean_change']:+.1e} "
                         f"| {s['max_abs_change']:.1e} | {within} {bound:g} |")
        lines.append("")
    lines.append("Seconds in the networks (all subjects above, results on the host included): "
                 + ", ".join(f"{p} {seconds[p]:.1f} s" for p in PRECISIONS)
                 + f"; bfloat16 / float32 = {seconds['bfloat16'] / seconds['float32']:.2f}.")
    return "\n".join(lines) + "\n"


def run(n_phantoms: int, root, work: Path, progress=None) -> tuple[str, dict]:
    from deepstrain_jax.analysis.networks import Networks
    from deepstrain_jax.data import acdc_real
    from eval import phantom_study
    from eval.real_data import held_out_refs

    nets = {p: Networks.load(precision=p) for p in PRECISIONS}
    per_seed = 4  # geometry A and B x NOR and HCM
    design = phantom_study.population(n=-(-n_phantoms // per_seed), phenotypes=("NOR", "HCM"), snrs=(20.0,),
                                      slice_orders=("base_to_apex",))[:n_phantoms]
    folders = phantom_study.make_population(work, design)
    sections, results = {}, {}
    results["phantoms"] = compare([(d["name"], f) for d, f in zip(design, folders)], _phantom_row, nets, progress)
    refs = held_out_refs(root, acdc_real.HELD_OUT)
    results["real_labels"] = compare([(r.name, r) for r in refs], _real_row, nets, progress)
    cines = acdc_real.find_cases(root, "cine", include=acdc_real.HELD_OUT)
    results["real_cines"] = compare([(r.name, r) for r in cines], _cine_row, nets, progress)
    sections["Phantoms (geometry A and B, NOR and HCM, SNR 20; Dice against the exact labels, strain of "
             "`deepstrain analyze`)"] = summarise(results["phantoms"])
    sections["Held-out ACDC patients (Dice against the manual labels, ED and ES)"] = summarise(results["real_labels"])
    sections["Held-out ACDC cines (global end-systolic strain, %)"] = summarise(results["real_cines"])
    seconds = {p: float(sum(nets[p].seconds.values())) for p in PRECISIONS}
    results["network_seconds"] = seconds
    results["summary"] = dict(sections)
    return markdown(sections, seconds), results


def _define_flags() -> None:
    flags.DEFINE_string("root", "", "ACDC data folder (default ../shared/data/acdc from the repository).")
    flags.DEFINE_integer("phantoms", 4, "Number of phantoms (geometry A and B, NOR and HCM).")
    flags.DEFINE_string("work", "", "Folder for the phantoms (default: a temporary folder).")
    flags.DEFINE_string("out", "docs/validation_precision.md", "Markdown report (JSON beside it).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from deepstrain_jax.data import acdc_real
    from deepstrain_jax.io import atomic
    from deepstrain_jax.xla_flags import use_fast_cpu_convolutions

    use_fast_cpu_convolutions()
    root = acdc_real.resolve_root(FLAGS.root)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        text, results = run(FLAGS.phantoms, root, Path(FLAGS.work or tmp),
                            progress=lambda m: print(m, file=sys.stderr, flush=True))
    import jax

    header = ("# bfloat16 inference against float32\n\n"
              f"Regenerate: `python -m eval.precision --out {FLAGS.out}` (shipped models; jax {jax.__version__} on "
              f"{jax.devices()[0].platform}; {time.perf_counter() - t0:.0f} s). Each subject is analysed twice, "
              "with the networks computing in float32 and in bfloat16 (float32 accumulation; "
              "`deepstrain analyze --precision bfloat16`); changes are bfloat16 - float32.\n\n")
    atomic.write_text(Path(FLAGS.out), header + text)
    atomic.write_text(Path(FLAGS.out).with_suffix(".json"), json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(header + text)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
