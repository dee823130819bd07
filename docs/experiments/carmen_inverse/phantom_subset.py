"""Diagnostic: 8 of the 40 held-out phantoms of ``docs/validation.md`` (eval.phantom_study's design; every
phenotype, both geometries, both slice orders), the shipped CarMEN against the candidate.

``PYTHONPATH=. python docs/experiments/carmen_inverse/phantom_subset.py CANDIDATE_MODEL``."""
import sys
from pathlib import Path

import numpy as np

from deepstrain_jax.analysis.networks import Networks
from eval import phantom_study as ps

design = ps.population(n=1)
pick = [design[i] for i in (0, 6, 12, 18, 24, 30, 36, 39)]
folders = ps.make_population(Path("/work/runs/diag/ph40/phantoms"), pick, n_frames=20)
nets = {"v2": Networks.load(), "cand": Networks.load(carmen=sys.argv[1])}
for k, n in nets.items():
    rows = [ps.evaluate_subject(f, n, d) for f, d in zip(folders, pick)]
    for d, r in zip(pick, rows):
        print(k, d["name"], f"epe {r['epe_es_mm']:.2f} in {r['epe_es_inplane_mm']:.2f} through {r['epe_es_throughplane_mm']:.2f}"
              f" gcs {r['circumferential_ess_pred']-r['circumferential_ess_true']:+.2f} gls {r['longitudinal_ess_pred']-r['longitudinal_ess_true']:+.2f}"
              f" closure {r['qc_cycle_closure_mm']:.2f}", flush=True)
    m = lambda key: np.mean([r[key] for r in rows])
    print(k, "MEAN epe", round(m("epe_es_mm"), 3), "in", round(m("epe_es_inplane_mm"), 3), "gcs bias",
          round(np.mean([r['circumferential_ess_pred']-r['circumferential_ess_true'] for r in rows]), 2),
          "gls bias", round(np.mean([r['longitudinal_ess_pred']-r['longitudinal_ess_true'] for r in rows]), 2),
          "closure", round(m("qc_cycle_closure_mm"), 2), flush=True)
