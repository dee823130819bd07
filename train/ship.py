"""Copy a finished training run into the package as a shipped default model, with its provenance.

    python -m train.ship --workdir=runs/real/carson --name=carson-acdc-v1

Copies ``WORKDIR/model`` (variables + ``model.json``), ``config.json``, ``metrics.jsonl`` and, when present,
``WORKDIR/../<workdir name>.log`` (as ``train.log``) into ``deepstrain_jax/assets/models/<task>/`` -- and, for a
run warm-started from another run's ``model/``, the config, metrics and log of every earlier stage as
``stage{k}_*`` -- and writes
``provenance.json``: the model's ``name``, ``trained_on`` (one line: data, forms, patients, phantoms, steps), the
training patients and held-out patients by number, and the SHA-256 of its variables -- what ``results.json``
records under ``models`` for every analysed subject.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Finished training work directory (holds model/ and config.json).")
flags.DEFINE_string("name", None, "Model name recorded in provenance.json, e.g. carson-acdc-v1.")
flags.DEFINE_string("dest", "deepstrain_jax/assets/models", "Folder of the shipped models.")
flags.mark_flags_as_required(["workdir", "name"])


def provenance(workdir: Path, name: str) -> dict:
    """The ``provenance.json`` content of the model trained in ``workdir`` (from its config and metrics); a
    shipped model folder (which holds them beside the variables) works too."""
    from deepstrain_jax.analysis.networks import variables_sha256
    from deepstrain_jax.io.checkpoints import load_variables

    config = json.loads((workdir / "config.json").read_text())
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
             if '"split": "train"' in line]
    d = config["data"]
    record = {"name": name, "task": config["task"], "steps": max(steps) if steps else 0,
              "batch_size": config["train"]["batch_size"]}
    if d["source"] == "mixture":
        from types import SimpleNamespace

        from deepstrain_jax.data import acdc_real
        from train.trainer import real_training_refs

        ns = SimpleNamespace(data=SimpleNamespace(real=SimpleNamespace(**d["real"])))
        refs = real_training_refs(ns) if d["real"]["repeat"] > 0 else []
        groups = sorted({acdc_real.group_of(r.number) for r in refs})
        record["training_patients"] = [f"{r.name} ({r.form})" for r in refs]
        record["held_out_patients"] = list(d["real"]["held_out"])
        if config["task"] == "carmen":
            labels = ("manual ED/ES labels where they exist, CarSON's labels of every other frame"
                      if d["real"].get("pseudo_labels") else "manual ED/ES labels only")
            reverse = " and t -> ED" if d.get("reverse_prob") else ""
            record["trained_on"] = (
                f"real ACDC full-cycle cines, {len(refs)} patients ({', '.join(groups)}), unsupervised pairs ED -> t"
                f"{reverse} (intensity + anatomical + smoothness; {labels}) x {d['real']['repeat']} plus "
                f"{d['pool_size']} phantoms of each geometry model {', '.join(d['phantom_models'])} with exact "
                f"motion (end-point error); {record['steps']} steps of {record['batch_size']}; held out: patients "
                f"{', '.join(d['real']['held_out'])}")
        else:
            record["trained_on"] = (
                f"real ACDC cine-MRI, {len(refs)} patients ({', '.join(groups)}; forms "
                f"{', '.join(d['real']['forms'])}; ED and ES manual labels) x {d['real']['repeat']} plus "
                f"{d['pool_size']} phantoms of each geometry model {', '.join(d['phantom_models'])}; {record['steps']} "
                f"steps of {record['batch_size']}; held out: patients {', '.join(d['real']['held_out'])}")
    elif d["source"] == "phantom":
        record["trained_on"] = (f"{d['pool_size']} synthetic phantoms (geometry model {d['phantom_model']}), "
                                f"{record['steps']} steps of {record['batch_size']}; no real data")
    else:
        record["trained_on"] = f"ACDC-layout folder {d['root']}; {record['steps']} steps"
    stage1 = _stage1(config)
    shipped = _shipped_init(config)
    if stage1 is not None:
        first = provenance(stage1, name + "-stage1")
        record["init_from"] = {k: first[k] for k in ("name", "steps", "batch_size", "trained_on", "sha256")}
        record["trained_on"] += f"; fine-tuned from {first['name']} ({first['trained_on']})"
    elif shipped is not None:  # warm-started from a shipped model folder: its own provenance
        record["init_from"] = {k: shipped.get(k) for k in ("name", "steps", "batch_size", "trained_on", "sha256")}
        record["trained_on"] += f"; fine-tuned from {shipped['name']} ({shipped['trained_on']})"
    variables, _ = load_variables(workdir / "model" if (workdir / "model").is_dir() else workdir)
    record["sha256"] = variables_sha256(variables)
    return record


def _init_folder(config: dict) -> Path | None:
    """The model folder a run was warm-started from (``train.init_from``), or None."""
    init = config["train"].get("init_from", "")
    if not init:
        return None
    model = Path(init)
    if not model.is_absolute() and not model.exists():
        model = Path(__file__).resolve().parents[1] / model
    return model


def _shipped_init(config: dict) -> dict | None:
    """The ``provenance.json`` of the shipped model folder a run was warm-started from, or None."""
    model = _init_folder(config)
    prov = None if model is None else model / "provenance.json"
    return json.loads(prov.read_text()) if prov is not None and prov.is_file() else None


def _stage1(config: dict) -> Path | None:
    """The training work directory a run was warm-started from (``train.init_from`` naming ``WORKDIR/model``
    of a run with its ``config.json``), or None (no warm start, or from a shipped model)."""
    model = _init_folder(config)
    if model is None:
        return None
    if model.name == "model" and (model.parent / "config.json").is_file():
        return model.parent
    return None


def main(argv):
    del argv
    from deepstrain_jax.io import atomic

    workdir = Path(FLAGS.workdir)
    config = json.loads((workdir / "config.json").read_text())
    dest = Path(FLAGS.dest) / config["task"]
    record = provenance(workdir, FLAGS.name)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(workdir / "model", tmp)
    for f in ("config.json", "metrics.jsonl"):
        shutil.copy2(workdir / f, tmp / f)
    log = workdir.parent / f"{workdir.name}.log"
    if log.is_file():
        shutil.copy2(log, tmp / "train.log")
    # The whole history ships: each earlier stage's config, metrics and log as stage{k}_* (1 = the first run).
    chain, cfg = [], config
    while (earlier := _stage1(cfg)) is not None:
        chain.append(earlier)
        cfg = json.loads((earlier / "config.json").read_text())
    init = _init_folder(config)
    if not chain and init is not None and (init / "provenance.json").is_file():
        # Warm-started from a shipped model folder (replaced below): its history ships first (its own stage{k}_*
        # files, then its final config, metrics and log as the next stage).
        stage_of = {p: int(m.group(1)) for p in init.iterdir() if (m := re.match(r"stage(\d+)_", p.name))}
        for p in stage_of:
            shutil.copy2(p, tmp / p.name)
        last = max(stage_of.values(), default=0) + 1
        for f in ("config.json", "metrics.jsonl", "train.log"):
            if (init / f).is_file():
                shutil.copy2(init / f, tmp / f"stage{last}_{f}")
    for k, stage in enumerate(reversed(chain), start=1):
        for f in ("config.json", "metrics.jsonl"):
            shutil.copy2(stage / f, tmp / f"stage{k}_{f}")
        if (stage.parent / f"{stage.name}.log").is_file():
            shutil.copy2(stage.parent / f"{stage.name}.log", tmp / f"stage{k}_train.log")
    atomic.write_text(tmp / "provenance.json", json.dumps(record, indent=1) + "\n")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    print(json.dumps(record, indent=1), file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
