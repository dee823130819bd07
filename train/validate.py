"""Validation report of trained VCN / CarSON / CarMEN models on held-out phantoms of every phenotype.

    python -m train.validate --models=deepstrain_jax/assets/models --out=deepstrain_jax/assets/models/validation.md

For ``--n_per_phenotype`` phantoms of each phenotype (seeds from ``--seed``, never used in training, whose
pools use seeds 0 and 10000), myocardial SNR drawn in ``--snr``, each brought onto the network grid centred on
its ED myocardium (:func:`deepstrain_jax.training_data.subjects.subject_from_phantom`):

* VCN: centring error, mm, between the heat-map peak and the ED myocardium centre of mass (in-plane);
* CarSON: 3D Dice of LV cavity (3), myocardium (2) and RV (1) at ED and at ES, on the network grid;
* CarMEN on the (ED, ES) pair: dense end-point error (mm) over the ED myocardium where the truth is known,
  and the global circumferential / radial strain at ES from :func:`deepstrain_jax.ops.strain.cardiac_strain`
  on the predicted displacement and the true ED labels, against the exact phantom value (percentage points);
  the same strain module on the true displacement gives the discretisation part of that error.

Writes a markdown report (per phenotype and overall) and prints it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

from deepstrain_jax.phantom.params import PHENOTYPES

FLAGS = flags.FLAGS
flags.DEFINE_string("models", "deepstrain_jax/assets/models", "Folder with vcn/, carson/, carmen/ model folders.")
flags.DEFINE_string("out", None, "Markdown file to write (default: print only).")
flags.DEFINE_integer("n_per_phenotype", 2, "Held-out phantoms per phenotype.")
flags.DEFINE_integer("seed", 900_000, "First held-out seed.")
flags.DEFINE_list("snr", ["10", "40"], "Myocardial SNR range (low,high).")



def _dice(a, b, label):
    a, b = a == label, b == label
    denom = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / denom if denom else float("nan")


def _zscore(x, axes):
    return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-8)


def evaluate_case(case, nets) -> dict:
    from deepstrain_jax.models import vcn as vcn_lib
    from deepstrain_jax.ops import strain
    from deepstrain_jax.training_data import subjects as sj

    cfg = sj.SubjectConfig()
    s = sj.subject_from_phantom(case, cfg)
    ed, es = s.ed, s.es
    out = {}
    if "vcn" in nets:
        variables, apply = nets["vcn"]
        stack = np.moveaxis(s.vcn_image[0], -1, 0)[..., None]           # (Z, M, M, 1), ED
        peak = np.asarray(vcn_lib.heatmap_peak(apply(variables, stack)))
        pixel_mm = cfg.inplane_mm * cfg.vcn_factor
        out["vcn_error_mm"] = float(np.linalg.norm(peak - s.vcn_centre[0])) * pixel_mm
    if "carson" in nets:
        variables, apply = nets["carson"]
        for name, t in (("ed", ed), ("es", es)):
            slices = _zscore(np.moveaxis(s.image[t], -1, 0)[..., None], (1, 2, 3))
            pred = np.moveaxis(np.asarray(apply(variables, slices)).argmax(-1), 0, -1)
            for label, key in ((3, "lv"), (2, "myo"), (1, "rv")):
                out[f"dice_{key}_{name}"] = _dice(pred, s.labels[t], label)
    if "carmen" in nets:
        variables, apply = nets["carmen"]
        pair = _zscore(np.stack([s.image[ed], s.image[es]], axis=-1)[None], (1, 2, 3))
        u_pred = np.asarray(apply(variables, pair))[0]
        spacing = np.asarray(s.spacing_mm, np.float64)
        myo = (s.labels[ed] == 2) & s.u_mask
        err = np.linalg.norm((u_pred - s.u_vox[es]) * spacing, axis=-1)
        out["epe_es_mm"] = float(err[myo].mean())
        labels_ed = s.labels[ed]
        pred_strain = strain.cardiac_strain((u_pred * spacing)[None], labels_ed, spacing)
        true_strain = strain.cardiac_strain((s.u_vox[es] * spacing)[None], labels_ed, spacing)
        exact = case.curves["global_strain"]
        for comp in ("cc", "rr"):
            truth = 100.0 * exact[comp][case.cine.es]
            out[f"ess_{comp}_true"] = truth
            out[f"ess_{comp}_error_pp"] = 100.0 * float(np.asarray(getattr(pred_strain.global_mean, comp))[0]) - truth
            out[f"ess_{comp}_discretisation_pp"] = (
                100.0 * float(np.asarray(getattr(true_strain.global_mean, comp))[0]) - truth)
    return out


def load_nets(models_dir: Path) -> dict:
    from deepstrain_jax import models
    from deepstrain_jax.io.checkpoints import load_variables

    nets = {}
    for name in models.NAMES:
        if (models_dir / name / "model.json").is_file():
            variables, arch = load_variables(models_dir / name)
            _, apply = models.build(arch)
            nets[name] = (variables, jax.jit(apply))
    return nets


def report(rows: list[dict], phenotypes, header: str) -> str:
    keys = [k for k in rows[0] if k not in ("phenotype", "seed") and not k.endswith("_true")]
    lines = [header, "", "| phenotype | n | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for p in list(phenotypes) + ["all"]:
        sel = [r for r in rows if p == "all" or r["phenotype"] == p]
        if not sel:
            continue
        cells = []
        for k in keys:
            v = np.array([r[k] for r in sel], float)
            # Errors are summarised as mean absolute value (and signed mean) for strain, mean otherwise.
            cells.append(f"{np.nanmean(np.abs(v)):.2f} ({np.nanmean(v):+.2f})" if k.endswith("_pp")
                         else f"{np.nanmean(v):.3f}")
        lines.append(f"| {p} | {len(sel)} | " + " | ".join(cells) + " |")
    lines += ["", "Strain errors (`*_pp`, percentage points): mean |error| (signed mean). `*_discretisation_pp`: "
              "the strain module on the true displacement against the exact value."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from deepstrain_jax.io import atomic
    from deepstrain_jax.phantom import dataset

    nets = load_nets(Path(FLAGS.models))
    if not nets:
        raise app.UsageError(f"no model folders under {FLAGS.models}")
    snr = tuple(float(v) for v in FLAGS.snr)
    rows = []
    t0 = time.time()
    for i in range(FLAGS.n_per_phenotype):
        for j, p in enumerate(PHENOTYPES):
            seed = FLAGS.seed + i * len(PHENOTYPES) + j
            case = dataset.make_case(seed, p, snr=snr)
            rows.append({"phenotype": p, "seed": seed, **evaluate_case(case, nets)})
            print(f"\r{len(rows)}/{FLAGS.n_per_phenotype * len(PHENOTYPES)} phantoms "
                  f"({time.time() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    header = (f"# Shipped models on held-out phantoms\n\n{len(rows)} phantoms (seeds {FLAGS.seed}+, SNR "
              f"{snr[0]:g}-{snr[1]:g}, Model A), network grid 1.25 mm x 16 slices, crop centred on the ED "
              f"myocardium. Command: `python -m train.validate --models={FLAGS.models}`.")
    text = report(rows, PHENOTYPES, header)
    print(text)
    if FLAGS.out:
        atomic.write_text(FLAGS.out, text)


if __name__ == "__main__":
    app.run(main)
