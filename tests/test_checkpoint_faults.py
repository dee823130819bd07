"""Damaged checkpoints and model folders: every part corrupted in turn is named and never silently used.

Independent expectation: the state saved at each step is kept in memory; a restore after damaging the latest
checkpoint must give back the previous step's state bit for bit, and report the damaged step.
"""

import json
import os
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from test_training_plumbing import _setup, loss_fn

from deepstrain_jax.errors import InputError
from deepstrain_jax.training import checkpointing
from deepstrain_jax.training import state as state_lib
from deepstrain_jax.training import step as step_lib


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 2, len(data)):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _array_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")


# What a crash, a full disk or a bad copy does to one checkpoint: each part damaged in turn.
CORRUPTIONS = {
    "checkpoint metadata truncated": lambda d: _truncate(d / "_CHECKPOINT_METADATA"),
    "state metadata missing": lambda d: os.remove(d / "state" / "_METADATA"),
    "state metadata truncated": lambda d: _truncate(d / "state" / "_METADATA"),
    "array data truncated": lambda d: [_truncate(p) for p in _array_files(d)],
    "array data changed": lambda d: [_flip(p) for p in _array_files(d)],
    "array manifest missing": lambda d: [os.remove(p) for p in (d / "state").rglob("manifest.ocdbt")],
    "state item missing": lambda d: __import__("shutil").rmtree(d / "state"),
    "meta item truncated": lambda d: _truncate(d / "meta" / "metadata"),
    "config item missing": lambda d: __import__("shutil").rmtree(d / "config"),
}


def _saved_states(workdir, steps=3):
    _, apply, tx, batch, state = _setup()
    step = jax.jit(step_lib.make_train_step(apply, tx, loss_fn))
    ckpt = checkpointing.Checkpointer(workdir, every=1, keep=steps)
    states = {}
    for i in range(1, steps + 1):
        state, _ = step(state, batch)
        states[i] = jax.device_get(state)
        ckpt.maybe_save(i, state, {"name": "fake"}, {"data_position": i})
    ckpt.close()
    return state, states


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path, damage, caplog):
    like, states = _saved_states(tmp_path)
    CORRUPTIONS[damage](tmp_path / "checkpoints" / "3")
    ckpt = checkpointing.Checkpointer(tmp_path, every=1, keep=3)
    restored, config, meta = ckpt.restore(like)
    chex.assert_trees_all_equal(jax.device_get(restored), states[2])
    assert meta == {"data_position": 2} and config == {"name": "fake"}
    assert [k for k, _, _ in ckpt.damaged] == [3]
    assert "checkpoint step 3" in caplog.text and "damaged" in caplog.text
    # Set aside for inspection, out of the way of the next save.
    assert (tmp_path / "damaged" / "checkpoints_3").is_dir() and ckpt.latest_step() == 2
    ckpt.close()


def test_every_checkpoint_damaged_is_one_clear_error(tmp_path):
    like, _ = _saved_states(tmp_path, steps=2)
    for k in (1, 2):
        CORRUPTIONS["array data changed"](tmp_path / "checkpoints" / str(k))
    ckpt = checkpointing.Checkpointer(tmp_path, every=1, keep=3)
    with pytest.raises(InputError, match=r"no intact checkpoint to resume from: steps \[2, 1\] are all damaged"):
        ckpt.restore(like)
    ckpt.close()


def test_an_explicit_damaged_step_is_named(tmp_path):
    like, states = _saved_states(tmp_path, steps=2)
    CORRUPTIONS["array data changed"](tmp_path / "checkpoints" / "1")
    ckpt = checkpointing.Checkpointer(tmp_path, every=1, keep=3)
    with pytest.raises(InputError, match=r"checkpoints/1: checkpoint step 1 is damaged"):
        ckpt.restore(like, step=1)
    chex.assert_trees_all_equal(jax.device_get(ckpt.restore(like)[0]), states[2])
    ckpt.close()


def test_tree_sha256_sees_any_change():
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": {"c": np.int32(4)}}
    h = checkpointing.tree_sha256(tree)
    assert h == checkpointing.tree_sha256({"b": {"c": np.int32(4)}, "a": tree["a"].copy()})
    assert h != checkpointing.tree_sha256({**tree, "a": tree["a"].reshape(3, 2)})
    assert h != checkpointing.tree_sha256({**tree, "a": tree["a"].astype(np.float64)})
    changed = tree["a"].copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(9))
    assert h != checkpointing.tree_sha256({**tree, "a": changed})


# --- Model folders (shipped, converted, exported by the trainer). ---

def _model_folder(tmp_path):
    _, _, _, _, state = _setup()
    folder = checkpointing.save_variables(tmp_path / "model", state_lib.variables(state), {"name": "fake"})
    return folder, jax.device_get(state_lib.variables(state))


MODEL_CORRUPTIONS = {
    "model.json": (lambda d: _truncate(d / "model.json"), "model.json: damaged model folder: model.json does not"),
    "variables data": (lambda d: [_flip(p) for p in (d / "variables").rglob("*") if p.parent.name == "d"],
                       "variables: damaged model folder"),
    "variables metadata": (lambda d: os.remove(d / "variables" / "_METADATA"), "variables: damaged model folder"),
    "checksum": (lambda d: (d / "variables.sha256").write_text("0" * 64), "do not match the SHA-256 in "
                 "variables.sha256"),
}


@pytest.mark.parametrize("damage", sorted(MODEL_CORRUPTIONS))
def test_a_damaged_model_folder_is_an_input_error_naming_the_file(tmp_path, damage):
    folder, variables = _model_folder(tmp_path)
    loaded, _ = checkpointing.load_variables(folder)
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, loaded),
                                jax.tree_util.tree_map(np.asarray, variables))
    corrupt, message = MODEL_CORRUPTIONS[damage]
    corrupt(folder)
    with pytest.raises(InputError, match=message) as err:
        checkpointing.load_variables(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_shipped_models_are_verified_against_their_provenance(tmp_path):
    import shutil

    from deepstrain_jax.models import pretrained

    folder = tmp_path / "vcn"
    shutil.copytree(pretrained.default_model_dir("vcn"), folder)
    checkpointing.load_variables(folder)  # intact: matches provenance.json's sha256
    prov = json.loads((folder / "provenance.json").read_text())
    prov["sha256"] = "f" * 64
    (folder / "provenance.json").write_text(json.dumps(prov))
    with pytest.raises(InputError, match="do not match the SHA-256 in provenance.json"):
        checkpointing.load_variables(folder)


def test_cli_names_a_damaged_model_folder_and_exits_2(tmp_path):
    import subprocess
    import sys

    folder, _ = _model_folder(tmp_path)
    _truncate(folder / "model.json")
    r = subprocess.run([sys.executable, "-m", "deepstrain_jax", "analyze", str(tmp_path / "none.nii.gz"),
                        "--out", str(tmp_path / "out"), "--carson", str(folder)], capture_output=True, text=True)
    assert r.returncode == 2
