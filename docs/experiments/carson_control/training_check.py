"""Mean Dice of CarSON candidates on the 25 real ACDC training patients (manual ED and ES labels).

    PYTHONPATH=. python docs/experiments/carson_control/training_check.py ACDC_ROOT NAME=MODEL [NAME=MODEL ...]

The patients CarSON trains on (forms ``labelled`` then ``h5``, the held-out patients of
:data:`deepstrain_jax.data.acdc_real.HELD_OUT` excluded and checked absent), segmented and scored as
``eval.real_data`` scores the held-out ones (:func:`eval.real_data.run`). A guard against a candidate that breaks
what it was trained on, not a measure of generalisation. MODEL: ``shipped`` or a CarSON model folder / workdir.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.data import acdc_real
from eval.real_data import CLASSES, run

KEYS = [f"dice_{c}_{p}" for p in ("ed", "es") for c, _ in CLASSES]


def training_refs(root) -> list:
    refs, seen = [], set()
    for form in ("labelled", "h5"):
        for ref in acdc_real.find_cases(root, form, exclude=acdc_real.HELD_OUT):
            if ref.number not in seen:
                refs.append(ref)
                seen.add(ref.number)
    acdc_real.check_split(refs, acdc_real.HELD_OUT)
    return sorted(refs, key=lambda r: r.number)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("models", nargs="+", help="NAME=MODEL")
    args = parser.parse_args(argv)
    refs = training_refs(args.root)
    for item in args.models:
        name, spec = item.split("=", 1)
        rows, _ = run(Networks.load(carson=None if spec == "shipped" else spec), refs)
        ef = [r["auto_lv_ef"] - r["manual_lv_ef"] for r in rows]
        print(name, " ".join(f"{k} {np.mean([r[k] for r in rows]):.4f}" for k in KEYS),
              f"LV EF error {np.mean(ef):+.2f} +- {np.std(ef, ddof=1):.2f}", flush=True)
    print("n", len(refs), "patients:", " ".join(r.number for r in refs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
