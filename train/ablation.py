"""Lambda-regulariser ablation of CarMEN on phantoms: one command, one budget per cell, one table.

    python -m train.ablation --config=configs/carmen.py:cpu --workdir=runs/ablation \
        --lambda_a=0,0.01,0.1,0.5,0.8 --lambda_s=0.001,0.01,0.1

Every (lambda_a, lambda_s) cell trains the config with those weights for the same number of steps (the
config's, or ``--steps``) in ``workdir/la<lambda_a>_ls<lambda_s>/`` -- re-running resumes unfinished cells
and skips finished ones -- and is then evaluated on the held-out validation phantoms (the config's ``val_seed``
and ``val_size``, no augmentation) inside the ED myocardium where the truth is known:

* ``epe_mm``: mean end-point error ``|u_pred - u_true|`` in mm;
* ``angle_deg``: mean angle between predicted and true displacement, over voxels with ``|u_true| >= 0.5`` mm
  (direction error, undefined for near-zero motion);
* ``magnitude_mm``: mean ``| |u_pred| - |u_true| |`` in mm (magnitude error).

By default the study is unsupervised (``lambda_epe = 0``, as in the paper's sweep); ``--supervised`` keeps the
config's ``lambda_epe``. Results: ``workdir/ablation.csv`` and ``workdir/ablation.md``.
"""

from __future__ import annotations

import copy
import csv
import io
import sys

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/carmen.py:cpu", "CarMEN training config.", lock_config=False)
flags.DEFINE_string("workdir", None, "Folder holding one sub-folder per cell and the result tables.")
flags.DEFINE_list("lambda_a", ["0", "0.01", "0.1", "0.5", "0.8"], "Anatomical-loss weights.")
flags.DEFINE_list("lambda_s", ["0.001", "0.01", "0.1"], "Smoothness-loss weights.")
flags.DEFINE_integer("steps", 0, "Training steps per cell (0: the config's train.steps).")
flags.DEFINE_bool("supervised", False, "Keep the config's lambda_epe (default: 0, unsupervised).")
flags.mark_flags_as_required(["workdir"])

MIN_MOTION_MM = 0.5


def motion_errors(u_pred_vox, u_true_vox, spacing_mm, mask, min_motion_mm: float = MIN_MOTION_MM):
    """Sums and counts of end-point, angular and magnitude errors inside ``mask`` (host, float64).

    Args:
      u_pred_vox, u_true_vox: ``(B, X, Y, Z, 3)`` displacements in voxels.
      spacing_mm: ``(B, 3)`` voxel sizes.
      mask: ``(B, X, Y, Z)`` bool, where the truth is known and the errors count.
    Returns:
      dict of ``(sum, count)`` for ``epe_mm``, ``angle_deg`` and ``magnitude_mm``.
    """
    s = np.asarray(spacing_mm, np.float64)[:, None, None, None, :]
    p = np.asarray(u_pred_vox, np.float64) * s
    t = np.asarray(u_true_vox, np.float64) * s
    m = np.asarray(mask, bool)
    norm_p, norm_t = np.linalg.norm(p, axis=-1), np.linalg.norm(t, axis=-1)
    epe = np.linalg.norm(p - t, axis=-1)
    moving = m & (norm_t >= min_motion_mm)
    cos = np.sum(p * t, axis=-1) / np.maximum(norm_p * norm_t, 1e-12)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return {"epe_mm": (epe[m].sum(), m.sum()), "angle_deg": (angle[moving].sum(), moving.sum()),
            "magnitude_mm": (np.abs(norm_p - norm_t)[m].sum(), m.sum())}


def evaluate_cell(config, workdir) -> dict[str, float]:
    """Errors of the exported model of one cell on the validation phantoms."""
    from deepstrain_jax import models
    from deepstrain_jax.training import checkpointing
    from train import trainer

    variables, arch = checkpointing.load_variables(workdir / "model")
    _, apply = models.build(arch)
    apply = jax.jit(apply)
    _, val_pool = trainer.make_pools(config, workdir)
    _, sample_val = trainer.make_samplers(config)
    totals: dict[str, list[float]] = {}
    for i in range(config.train.eval_batches):
        batch = sample_val(val_pool, i)
        u = np.asarray(apply(variables, batch["inputs"]))
        mask = batch["u_mask"] & (batch["labels_ed"] == 2)
        for k, (sm, n) in motion_errors(u, batch["u_vox"], batch["spacing_mm"], mask).items():
            acc = totals.setdefault(k, [0.0, 0.0])
            acc[0] += sm
            acc[1] += n
    return {k: (sm / n if n else float("nan")) for k, (sm, n) in totals.items()}


def cell_config(base, lambda_a: float, lambda_s: float, steps: int, supervised: bool):
    config = copy.deepcopy(base)
    with config.unlocked():
        config.loss.lambda_a = float(lambda_a)
        config.loss.lambda_s = float(lambda_s)
        if not supervised:
            config.loss.lambda_epe = 0.0
        if steps:
            config.train.steps, config.train.epochs = int(steps), 0
    return config


def run(base, workdir, lambda_as, lambda_ss, steps: int = 0, supervised: bool = False) -> list[dict]:
    from pathlib import Path

    from deepstrain_jax.io import atomic
    from train import trainer

    workdir = Path(workdir)
    rows = []
    cells = [(float(a), float(s)) for a in lambda_as for s in lambda_ss]
    for n, (la, ls) in enumerate(cells, 1):
        config = cell_config(base, la, ls, steps, supervised)
        with config.unlocked():
            # One subject cache for the whole grid (each cell's default would be its own folder).
            config.data.cache_dir = config.data.cache_dir or str(workdir / "data_cache")
        cell = workdir / f"la{la:g}_ls{ls:g}"
        print(f"[{n}/{len(cells)}] lambda_a={la:g} lambda_s={ls:g} -> {cell}", file=sys.stderr, flush=True)
        if not (cell / "model" / "model.json").is_file():
            trainer.train_and_evaluate(config, cell)
        rows.append({"lambda_a": la, "lambda_s": ls, **evaluate_cell(config, cell)})

    fields = ["lambda_a", "lambda_s", "epe_mm", "angle_deg", "magnitude_mm"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(workdir / "ablation.csv", buf.getvalue())
    lines = ["| lambda_a | lambda_s | EPE (mm) | direction error (deg) | magnitude error (mm) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['lambda_a']:g} | {r['lambda_s']:g} | {r['epe_mm']:.3f} | {r['angle_deg']:.2f} | "
              f"{r['magnitude_mm']:.3f} |" for r in rows]
    atomic.write_text(workdir / "ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if FLAGS.config.task != "carmen":
        raise app.UsageError("the ablation trains CarMEN: pass a configs/carmen.py config")
    run(FLAGS.config, FLAGS.workdir, FLAGS.lambda_a, FLAGS.lambda_s, FLAGS.steps, FLAGS.supervised)


if __name__ == "__main__":
    app.run(main)
