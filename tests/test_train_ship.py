"""train.ship: a run warm-started from a shipped model ships with that model's whole training history."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from deepstrain_jax.io.checkpoints import save_variables

REPO = Path(__file__).resolve().parents[1]


def _variables():
    return {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {}}


def test_shipping_keeps_the_earlier_stages_of_a_shipped_warm_start(tmp_path):
    # The shipped model being replaced was itself trained in three stages: stage1_*, stage2_* and its final
    # files. The new run, warm-started from it, ships with stage1_*, stage2_*, stage3_* (the old final) and its own.
    shipped = tmp_path / "models" / "carson"
    save_variables(shipped, _variables(), {"name": "carson"})
    for k in (1, 2):
        (shipped / f"stage{k}_config.json").write_text(json.dumps({"stage": k}))
        (shipped / f"stage{k}_train.log").write_text(f"log of stage {k}\n")
    (shipped / "config.json").write_text(json.dumps({"stage": 3}))
    (shipped / "metrics.jsonl").write_text('{"split": "train", "step": 900}\n')
    (shipped / "train.log").write_text("log of stage 3\n")
    (shipped / "provenance.json").write_text(json.dumps(
        {"name": "carson-old", "steps": 900, "batch_size": 16, "trained_on": "earlier data", "sha256": "x"}))

    work = tmp_path / "runs" / "carson_new"
    save_variables(work / "model", _variables(), {"name": "carson"})
    config = {"task": "carson", "data": {"source": "phantom", "pool_size": 8, "phantom_model": "A"},
              "train": {"batch_size": 16, "init_from": str(shipped)}, "stage": 4}
    (work / "config.json").write_text(json.dumps(config))
    (work / "metrics.jsonl").write_text('{"split": "train", "step": 50}\n')
    (tmp_path / "runs" / "carson_new.log").write_text("log of stage 4\n")

    subprocess.run([sys.executable, "-m", "train.ship", f"--workdir={work}", "--name=carson-new",
                    f"--dest={tmp_path / 'models'}"], cwd=REPO, check=True, capture_output=True)

    stage = {k: json.loads((shipped / f"stage{k}_config.json").read_text())["stage"] for k in (1, 2, 3)}
    assert stage == {1: 1, 2: 2, 3: 3}
    assert (shipped / "stage3_train.log").read_text() == "log of stage 3\n"
    assert (shipped / "stage1_train.log").read_text() == "log of stage 1\n"
    assert json.loads((shipped / "config.json").read_text())["stage"] == 4
    assert (shipped / "train.log").read_text() == "log of stage 4\n"
    prov = json.loads((shipped / "provenance.json").read_text())
    assert prov["name"] == "carson-new" and prov["steps"] == 50
    assert prov["init_from"]["name"] == "carson-old" and "fine-tuned from carson-old" in prov["trained_on"]
    assert not list(shipped.glob("stage4_*"))
