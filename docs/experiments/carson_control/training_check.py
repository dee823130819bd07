"""Mean Dice of CarSON candidates on the 25 real ACDC training patients (manual ED and ES labels).

    PYTHONPATH=. python docs/experiments/carson_control/training_check.py ACDC_ROOT NAME=MODEL [NAME=MODEL ...]

The patients CarSON trains on, as the trainer picks them (:func:`train.trainer.real_training_refs` with
``configs/carson.py:real``: forms ``labelled`` then ``h5``, the held-out patients excluded and checked absent),
segmented and scored as ``eval.real_data`` scores the held-out ones (:func:`eval.real_data.run`). A guard
against a candidate that breaks what it was trained on, not a measure of generalisation. MODEL: ``shipped`` or a CarSON model folder / workdir.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from configs import carson
from deepstrain_jax.analysis.networks import Networks
from eval.real_data import CLASSES, run
from train.trainer import real_training_refs

KEYS = [f"dice_{c}_{p}" for p in ("ed", "es") for c, _ in CLASSES]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("models", nargs="+", help="NAME=MODEL")
    args = parser.parse_args(argv)
    config = carson.get_config("real")
    config.data.real.root = args.root
    refs = real_training_refs(config)
    for item in args.models:
        name, spec = item.split("=", 1)
        rows, _ = run(Networks.load(carson=None if spec == "shipped" else spec), refs)
        ef = [r["auto_lv_ef"] - r["manual_lv_ef"] for r in rows]
        print(name, " ".join(f"{k} {np.mean([r[k] for r in rows]):.4f}" for k in KEYS),
              f"LV EF error {np.mean(ef):+.2f} +- {np.std(ef, ddof=1):.2f}", flush=True)
    print("n", len(refs), "patients:", " ".join(sorted(r.number for r in refs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
