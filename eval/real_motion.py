"""Motion on real cines, where no true motion is known: label propagation, cycle closure and folding (issue 12).

``python -m eval.real_motion --out=docs/validation_real_motion.md`` (defaults: the shipped models against the
previous CarMEN in ``--previous_carmen``; the held-out cines of ``../shared/data/acdc/cine``).

For every held-out real cine with manual ED and ES labels (ACDC patients 006, 007, 008) and every method:

* **ES -> ED propagation**: the motion ED -> ES, ``u_f`` on the ED grid (``warp(V_ES, u_f) ~ V_ED``), carries
  the manual ES labels onto the ED grid, ``L_ES(X + u_f(X))``
  (:func:`deepstrain_jax.metrics.propagate_labels`); Dice and HD95 per class against the manual ED labels.
* **ED -> ES propagation**: the motion ES -> ED, ``u_b`` (the pair given the other way round), carries the
  manual ED labels onto the ES grid, ``L_ED(Y + u_b(Y))``; against the manual ES labels.
* **Cycle closure** ``|u_f(X) + u_b(X + u_f(X))|`` (mm) over the manual ED myocardium
  (:func:`deepstrain_jax.analysis.qc.cycle_closure_mm`), on the native grid.

Methods: ``none`` (no motion: the labels as they are), the classical baselines of :mod:`eval.baselines`
(``demons``, ``optical_flow``), CarMEN of the previous shipped model and CarMEN of the current one (both through
:func:`deepstrain_jax.analysis.pipeline.motion_between`: the analysis' pre-processing, VCN centring, and back to the native
grid). For every held-out cine (also 087, which has no manual labels) each CarMEN is run through
:func:`deepstrain_jax.analysis.pipeline.analyze` as a user would, and its results' folded fraction (det F <= 0 over the ED
myocardium, every frame), cycle closure and global ES strains are reported.

The held-out patients are never trained on; their cines are read in place from ``../shared/data/acdc``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.pipeline import motion_between
from deepstrain_jax.analysis.qc import cycle_closure_mm
from deepstrain_jax.data import acdc_real
from deepstrain_jax.metrics import propagate_labels
from eval.real_data import analyze_case, class_scores

BASELINES = ("demons", "optical_flow")
REPO = Path(__file__).resolve().parents[1]


def _estimator(method: str, networks: Networks | None):
    if method == "none":
        return lambda a, b, s: np.zeros((*a.shape, 3), np.float32)
    if method in BASELINES:
        from eval.baselines import METHODS

        return METHODS[method]
    return lambda a, b, s: motion_between(a, b, s, networks=networks)


def propagation_case(case, method: str, networks: Networks | None = None) -> dict:
    """ES -> ED and ED -> ES label propagation and cycle closure of one labelled real cine (module docstring)."""
    ed, es = case.image[..., case.ed], case.image[..., case.es]
    lab_ed, lab_es = case.labels[case.ed], case.labels[case.es]
    estimate = _estimator(method, networks)
    t0 = time.perf_counter()
    u_f = np.asarray(estimate(ed, es, case.spacing_mm), np.float32)
    u_b = np.asarray(estimate(es, ed, case.spacing_mm), np.float32)
    seconds = time.perf_counter() - t0
    row = {"patient": case.name, "group": case.group, "method": method, "seconds": seconds / 2}
    row.update({f"es2ed_{k}": v for k, v in class_scores(propagate_labels(lab_es, u_f), lab_ed, case.spacing_mm).items()})
    row.update({f"ed2es_{k}": v for k, v in class_scores(propagate_labels(lab_ed, u_b), lab_es, case.spacing_mm).items()})
    closure = cycle_closure_mm(u_f, u_b, case.spacing_mm, lab_ed == 2)
    row["closure_mean_mm"], row["closure_p95_mm"] = closure["mean"], closure["p95"]
    row["closure_in_plane_mm"], row["closure_through_plane_mm"] = closure["in_plane_mean"], closure["through_plane_mean"]
    return row


def analysis_case(case, networks: Networks, label: str) -> dict:
    """QC and global ES strain of ``deepstrain analyze`` on one real cine with one set of networks."""
    r = analyze_case(case, networks)
    g = r["strain"]["indices"]
    row = {"patient": case.name, "group": case.group, "model": label,
           "folded_fraction": r["qc"]["folded_fraction"],
           "closure_mean_mm": r["qc"]["cycle_closure_mm"]["mean"],
           "closure_in_plane_mm": r["qc"]["cycle_closure_mm"]["in_plane_mean"],
           "closure_through_plane_mm": r["qc"]["cycle_closure_mm"]["through_plane_mean"]}
    for d in ("radial", "circumferential", "longitudinal"):
        row[f"{d}_ess_pct"] = g[d]["ess_pct"]
    return row


def _mean(rows, key) -> float:
    v = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(v)) if v else float("nan")


def markdown(prop_rows: list, ana_rows: list, models: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in prop_rows))
    lines = ["Label propagation on the held-out real cines with manual ED and ES labels (mean over patients "
             f"{', '.join(sorted({r['patient'] for r in prop_rows}))}; Dice; HD95 in mm).", "",
             "| method | ES->ED myo | ES->ED LV | ES->ED RV | ED->ES myo | ED->ES LV | ED->ES RV | HD95 myo ED->ES "
             "| cycle closure (mm) | s / pair |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        rows = [r for r in prop_rows if r["method"] == m]
        lines.append(f"| {m} | " + " | ".join(f"{_mean(rows, k):.3f}" for k in (
            "es2ed_dice_myo", "es2ed_dice_lv", "es2ed_dice_rv", "ed2es_dice_myo", "ed2es_dice_lv", "ed2es_dice_rv"))
            + f" | {_mean(rows, 'ed2es_hd95_myo_mm'):.1f} | {_mean(rows, 'closure_mean_mm'):.2f} "
            f"| {_mean(rows, 'seconds'):.1f} |")
    lines += ["", "Per patient (ED -> ES Dice myocardium / LV cavity):", "",
              "| patient | group | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for p in sorted({r["patient"] for r in prop_rows}):
        cells = []
        for m in methods:
            r = next(r for r in prop_rows if r["patient"] == p and r["method"] == m)
            cells.append(f"{r['ed2es_dice_myo']:.3f} / {r['ed2es_dice_lv']:.3f}")
        group = next(r["group"] for r in prop_rows if r["patient"] == p)
        lines.append(f"| {p} | {group} | " + " | ".join(cells) + " |")
    if ana_rows:
        lines += ["", "`deepstrain analyze` on every held-out cine (folded fraction of the ED myocardium over all "
                  "frames; cycle closure on the network grid, whole and in-plane / through-plane; global end-systolic "
                  "strain, %):", "",
                  "| patient | group | model | folded fraction | closure (mm) | in-plane / through-plane (mm) "
                  "| radial ESS | circ. ESS | long. ESS |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in ana_rows:
            cells = [f"{r[k]:.1f}" if r[k] is not None else "–" for k in
                     ("radial_ess_pct", "circumferential_ess_pct", "longitudinal_ess_pct")]
            lines.append(f"| {r['patient']} | {r['group']} | {r['model']} | {r['folded_fraction']:.4f} | "
                         f"{r['closure_mean_mm']:.2f} | {r['closure_in_plane_mm']:.2f} / "
                         f"{r['closure_through_plane_mm']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Models: " + "; ".join(f"{k}: `{v}`" for k, v in models.items()) + "."]
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("root", str(REPO.parent / "shared" / "data" / "acdc"), "ACDC data folder (holds cine/).")
    flags.DEFINE_string("carmen", None, "CarMEN to evaluate (default: the shipped model).")
    flags.DEFINE_string("previous_carmen", None, "The previous CarMEN, for the side-by-side rows (optional).")
    flags.DEFINE_list("baselines", list(BASELINES), "Classical baselines to include.")
    flags.DEFINE_string("out", None, "Markdown file to write (and a .json beside it).")


def report(nets: dict, root, baselines=BASELINES, progress=None) -> tuple[str, dict]:
    """Every held-out cine of ``root``/cine with every method (module docstring).

    Args:
      nets: ``{"current": Networks, "previous": Networks (optional)}``.
      root: the ACDC data folder; baselines: names in :data:`eval.baselines.METHODS`.
      progress: called with a line per finished (patient, method), or None.
    Returns:
      ``(markdown, {"propagation": rows, "analysis": rows, "models": {...}})``.
    """
    refs = acdc_real.find_cases(root, "cine", include=acdc_real.HELD_OUT)
    if not refs:
        raise FileNotFoundError(f"no held-out cines under {root}/cine")
    models = {k: f"{n.carmen.describe()['name'] or n.carmen.source} (sha256 {n.carmen.describe()['sha256'][:12]})"
              for k, n in nets.items()}
    methods = ["none", *baselines, *(f"carmen {k}" for k in reversed(list(nets)))]
    prop_rows, ana_rows = [], []
    for ref in refs:
        case = acdc_real.read_case(ref)
        if case.ed in case.labels and case.es in case.labels:
            for m in methods:
                net = nets[m.split()[1]] if m.startswith("carmen") else None
                prop_rows.append(propagation_case(case, m, net))
                if progress:
                    progress(f"{case.name} {m}: ED->ES myo {prop_rows[-1]['ed2es_dice_myo']:.3f}")
        for k in reversed(list(nets)):
            ana_rows.append(analysis_case(case, nets[k], k))
    return markdown(prop_rows, ana_rows, models), {"propagation": prop_rows, "analysis": ana_rows, "models": models}


def main(argv):
    del argv
    from deepstrain_jax import console

    console.set_verbosity(console.DEFAULT)  # Orbax's INFO lines stay out of the console
    nets = {"current": Networks.load(carmen=FLAGS.carmen)}
    if FLAGS.previous_carmen:
        nets["previous"] = Networks.load(carmen=FLAGS.previous_carmen)
    text, data = report(nets, FLAGS.root, tuple(FLAGS.baselines), progress=lambda m: print(m, file=sys.stderr))
    print(text)
    if FLAGS.out:
        Path(FLAGS.out).write_text(text)
        Path(FLAGS.out).with_suffix(".json").write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
