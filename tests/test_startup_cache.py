"""The start-up cache: cached variables and exported networks give exactly what the uncached path gives, a
damaged entry is never trusted, and a new process's network needs no Flax tracing."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from deepstrain_jax.analysis import networks as networks_lib
from deepstrain_jax.analysis import startup_cache
from deepstrain_jax.io.checkpoints import load_variables, save_variables, tree_sha256
from deepstrain_jax.models import pretrained


@pytest.fixture
def cache(tmp_path):
    folder = startup_cache.enable(tmp_path / "xla")
    yield folder
    startup_cache.enable(None)


def _equal_trees(a, b) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) and np.asarray(x).dtype == np.asarray(y).dtype
                            for x, y in zip(la, lb))


def test_cached_variables_equal_the_orbax_read_and_a_bad_entry_is_not_trusted(cache):
    folder = pretrained.default_model_dir("vcn")
    reference, arch = load_variables(folder)
    first, arch1 = startup_cache.load_variables(folder)  # miss: read with Orbax, entry written
    entries = list((cache / "variables").glob("*.npz"))
    assert len(entries) == 1 and _equal_trees(first, reference) and arch1 == arch
    second, _ = startup_cache.load_variables(folder)     # hit
    assert _equal_trees(second, reference)
    # An entry whose arrays differ from the recorded SHA-256 (here: one weight changed) is ignored and rewritten.
    with np.load(entries[0]) as z:
        arrays = {k: z[k].copy() for k in z.files}
    name = sorted(arrays)[0]
    arrays[name] = arrays[name] + 1.0
    np.savez(entries[0], **arrays)
    assert tree_sha256(startup_cache._read_npz(entries[0])) != tree_sha256(reference)
    third, _ = startup_cache.load_variables(folder)
    assert _equal_trees(third, reference)
    entries[0].write_bytes(b"not an npz")
    assert _equal_trees(startup_cache.load_variables(folder)[0], reference)
    assert _equal_trees(startup_cache._read_npz(entries[0]), reference)  # rewritten whole


def test_without_the_cache_the_traced_function_runs(monkeypatch):
    startup_cache.enable(None)

    def no_export(*args, **kwargs):
        raise AssertionError("exported although the cache is off")

    monkeypatch.setattr(jax.export, "export", no_export)
    net = networks_lib.load_network("vcn")
    x = np.random.default_rng(0).normal(size=(3, 128, 128, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(net.apply(net.variables, x)),
                                  np.asarray(net.apply.jitted(net.variables, x)))
    assert startup_cache.folder() is None


def test_exported_network_is_bit_identical_and_a_new_process_does_not_trace(cache, monkeypatch):
    net = networks_lib.load_network("vcn")
    x = np.random.default_rng(1).normal(size=(4, 128, 128, 1)).astype(np.float32)
    expected = np.asarray(net.apply.jitted(net.variables, x))
    fresh = networks_lib.NetworkApply(net.apply.arch_json)  # as a new process: nothing in memory
    np.testing.assert_array_equal(np.asarray(fresh(net.variables, x)), expected)
    assert len(list((cache / "exported").glob("*.jaxexport"))) == 1

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced again although the exported module is in the cache")

    monkeypatch.setattr(jax.export, "export", no_tracing)
    again = networks_lib.NetworkApply(net.apply.arch_json)
    np.testing.assert_array_equal(np.asarray(again(net.variables, x)), expected)
    # Another input shape is another entry, exported on first use.
    monkeypatch.undo()
    y = x[:2]
    np.testing.assert_array_equal(np.asarray(again(net.variables, y)), np.asarray(net.apply.jitted(net.variables, y)))
    assert len(list((cache / "exported").glob("*.jaxexport"))) == 2


def test_a_damaged_exported_entry_is_traced_again(cache):
    net = networks_lib.load_network("vcn")
    x = np.random.default_rng(2).normal(size=(2, 128, 128, 1)).astype(np.float32)
    expected = np.asarray(net.apply.jitted(net.variables, x))
    networks_lib.NetworkApply(net.apply.arch_json)(net.variables, x)
    (entry,) = (cache / "exported").glob("*.jaxexport")
    entry.write_bytes(entry.read_bytes()[: len(entry.read_bytes()) // 2])
    np.testing.assert_array_equal(np.asarray(networks_lib.NetworkApply(net.apply.arch_json)(net.variables, x)),
                                  expected)
    assert jax.export.deserialize(bytearray(entry.read_bytes())) is not None  # rewritten whole


def test_a_network_that_cannot_be_exported_runs_traced(cache, monkeypatch):
    # E.g. jax.export's serialization without its flatbuffers dependency: the analysis goes on, uncached.
    def unavailable(*args, **kwargs):
        raise ImportError("Please install 'flatbuffers' in order to use Exported serialization")

    monkeypatch.setattr(jax.export, "export", unavailable)
    net = networks_lib.load_network("vcn")
    x = np.random.default_rng(3).normal(size=(2, 128, 128, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(networks_lib.NetworkApply(net.apply.arch_json)(net.variables, x)),
                                  np.asarray(net.apply.jitted(net.variables, x)))
    assert not list((cache / "exported").glob("*.jaxexport"))


def test_variables_with_an_empty_collection_keep_their_structure(cache, tmp_path):
    # An .npz holds arrays only: a tree with an empty dict (no batch statistics) is read with Orbax every time.
    variables = {"params": {"dense": {"kernel": np.arange(4, dtype=np.float32).reshape(2, 2)}}, "batch_stats": {}}
    folder = save_variables(tmp_path / "model", variables, {"name": "test"})
    for _ in range(2):
        loaded, _ = startup_cache.load_variables(folder)
        assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
        assert _equal_trees(loaded, variables)
    assert not list((cache / "variables").glob("*.npz"))


def test_names_the_npz_cannot_bring_back_are_not_cached(cache, tmp_path):
    # "/" separates the levels of the cached array names: a variable named with one is read with Orbax each time.
    variables = {"params": {"a/b": np.ones(3, np.float32), "c": np.zeros(2, np.float32)}}
    folder = save_variables(tmp_path / "model", variables, {"name": "test"})
    for _ in range(2):
        assert _equal_trees(startup_cache.load_variables(folder)[0], variables)
    assert not list((cache / "variables").glob("*.npz"))


_NEW_PROCESS = """
import sys
import numpy as np
from deepstrain_jax.analysis import networks
networks.enable_compilation_cache(sys.argv[1])
net = networks.load_network("vcn")
x = np.random.default_rng(5).normal(size=(2, 128, 128, 1)).astype(np.float32)
np.save(sys.argv[2], np.asarray(net.apply(net.variables, x)))
print(" ".join(m for m in ("flax", "orbax", "tensorstore") if m in sys.modules))
"""


def test_a_new_process_with_a_warm_cache_imports_neither_flax_nor_orbax(tmp_path):
    # Start-up time: a process whose models and networks are in the start-up cache never builds a Flax module
    # nor reads an Orbax checkpoint, so it does not import them.
    import subprocess
    import sys

    run = [sys.executable, "-c", _NEW_PROCESS, str(tmp_path / "xla")]
    first = subprocess.run(run + [str(tmp_path / "first.npy")], capture_output=True, text=True, check=True)
    assert "flax" in first.stdout and "orbax" in first.stdout  # cold: the entries are made with both
    second = subprocess.run(run + [str(tmp_path / "second.npy")], capture_output=True, text=True, check=True)
    assert second.stdout.split() == []
    np.testing.assert_array_equal(np.load(tmp_path / "second.npy"), np.load(tmp_path / "first.npy"))
