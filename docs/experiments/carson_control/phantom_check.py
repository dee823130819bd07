"""Mean Dice of CarSON candidates on the 40 held-out phantoms of docs/validation.md (geometries A and B), at ED and ES.

    python docs/experiments/carson_control/phantom_check.py PHANTOMS_DIR NAME=MODEL [NAME=MODEL ...]

PHANTOMS_DIR: the ``phantoms/`` folder that ``python -m eval.main --config=configs/eval.py:full`` renders in its
workdir (subjects ``s000``-``s039``; the ten ``c*`` family-C subjects are left out, as in the earlier candidates'
checks). MODEL: ``shipped`` or a CarSON model folder / training workdir; the VCN is the shipped one for all.
The ED and ES frames are segmented as ``deepstrain analyze`` segments them
(:func:`deepstrain_jax.analysis.segmentation.segment_stack`, VCN centre on ED) and scored against the phantom's
exact labels with :func:`deepstrain_jax.metrics.dice`; ``shipped`` reproduces the ``dice_*`` columns of the
validation report's ``study.csv`` (checked by ``--study STUDY_CSV``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from deepstrain_jax.analysis import discovery, inputs
from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.pipeline import read_checked
from deepstrain_jax.analysis.segmentation import segment_stack
from deepstrain_jax.metrics import dice
from deepstrain_jax.phantom.dataset import load_truth

KEYS = [f"dice_{c}_{p}" for p in ("ed", "es") for c in ("RV", "MYO", "LV")]


def subject_dice(folder: Path, networks: Networks) -> dict:
    _, cine, axis = read_checked(inputs.read_subject(discovery.discover(folder).subjects[0]))
    if axis != 2:
        raise SystemExit(f"{folder}: slice axis {axis}, expected 2")
    arrays, meta = load_truth(folder)
    ed, es = int(meta["ed"]), int(meta["es"])
    seg = segment_stack(cine.image[..., [ed, es]], cine.spacing_mm, networks=networks, ed=0)
    row = {}
    for k, (phase, t) in enumerate((("ed", ed), ("es", es))):
        d = dice(seg.native[..., k], arrays["labels"][..., t], labels=[1, 2, 3])
        row.update({f"dice_{c}_{phase}": float(v) for c, v in zip(("RV", "MYO", "LV"), d)})
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phantoms", type=Path)
    parser.add_argument("models", nargs="+", help="NAME=MODEL")
    parser.add_argument("--study", type=Path, help="study.csv of the report: the shipped rows must match")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.phantoms.iterdir() if p.is_dir() and p.name.startswith("s"))
    if len(folders) != 40:
        raise SystemExit(f"expected 40 held-out phantoms s000-s039 in {args.phantoms}, found {len(folders)}")
    means = {}
    for item in args.models:
        name, spec = item.split("=", 1)
        nets = Networks.load(carson=None if spec == "shipped" else spec)
        rows = {f.name: subject_dice(f, nets) for f in folders}
        if args.study and spec == "shipped":
            with open(args.study, newline="") as f:
                study = {r["subject"]: r for r in csv.DictReader(f)}
            worst = max(abs(rows[s][k] - float(study[s][k])) for s in rows for k in KEYS)
            print(f"{name}: largest difference from {args.study.name}: {worst:.2e}")
        means[name] = {k: float(np.mean([r[k] for r in rows.values()])) for k in KEYS}
        print(name, " ".join(f"{k} {means[name][k]:.4f}" for k in KEYS), flush=True)
    print("n", len(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
