"""Keras HDF5 import on files written here with h5py in Keras-2's layout; ``deepstrain convert-weights``."""

from __future__ import annotations

import h5py
import jax
import numpy as np
import pytest

from deepstrain_jax import cli
from deepstrain_jax.errors import InputError
from deepstrain_jax.io.checkpoints import load_variables
from deepstrain_jax.models import build, keras_weights
from deepstrain_jax.models.layers import keras_creation_order

# depth 3: 16 convolutions, 12 BatchNorm and 12 PReLU layers, so suffixes reach _10 and above, where
# lexicographic order (_10 before _2) and numeric order differ.
CFG = {"name": "carson", "family": "legacy", "gf": 2, "depth": 3, "input_shape": (8, 8, 1)}
_KERAS = {"conv": ("conv2d", {"kernel": ("params", "kernel"), "bias": ("params", "bias")}),
          "bn": ("batch_normalization", {"gamma": ("params", "scale"), "beta": ("params", "bias"),
                                         "moving_mean": ("batch_stats", "mean"),
                                         "moving_variance": ("batch_stats", "var")}),
          "prelu": ("p_re_lu", {"alpha": ("params", "alpha")})}


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.fixture(scope="module")
def reference():
    """Random variables of the tiny legacy CarSON and the Keras layers holding them, in creation order."""
    shapes = jax.eval_shape(build(CFG)[0], jax.random.key(0))
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(lambda s: rng.uniform(0.1, 1.0, s.shape).astype(np.float32), shapes)
    layers = []
    for kind, paths in keras_creation_order(CFG["depth"]).items():
        prefix, names = _KERAS[kind]
        for k, path in enumerate(paths):
            name = prefix if k == 0 else f"{prefix}_{k}"  # Keras: first instance unsuffixed
            layers.append((kind, name, {short: _get(variables[c], path)[v] for short, (c, v) in names.items()}))
    return variables, layers


def write_keras_h5(path, layers, *, order=None, chunked=False, nested=False, extra_layers=("input_1", "add")):
    """A Keras-2 ``save_weights`` file: ``layer_names``; per layer ``weight_names`` and datasets."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if nested else f
        entries = [(name, weights) for _, name, weights in layers] + [(n, {}) for n in extra_layers]
        if order is not None:
            entries = [entries[i] for i in order]
        names = [name.encode() for name, _ in entries]
        if chunked:
            half = len(names) // 2
            root.attrs["layer_names0"], root.attrs["layer_names1"] = names[:half], names[half:]
        else:
            root.attrs["layer_names"] = names
        root.attrs["backend"] = b"tensorflow"
        for name, weights in entries:
            group = root.create_group(name)
            weight_names = [f"{name}/{short}:0" for short in weights]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for wname, value in zip(weight_names, weights.values()):
                group.create_dataset(wname, data=value)


@pytest.mark.parametrize("layout", ["plain", "shuffled", "chunked-nested"])
def test_weights_load_onto_the_variables_they_came_from(tmp_path, reference, layout):
    variables, layers = reference
    order = np.random.default_rng(1).permutation(len(layers) + 2) if layout != "plain" else None
    path = tmp_path / "w.h5"
    write_keras_h5(path, layers, order=order, chunked=layout == "chunked-nested", nested=layout == "chunked-nested")
    loaded = keras_weights.load_keras_weights(path, CFG)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_layers_are_matched_by_numeric_suffix_not_by_name_order(reference):
    _, layers = reference
    read = [keras_weights.KerasLayer(name, weights) for _, name, weights in layers]
    convs = sorted((l for l in read if l.kind == "conv"), key=lambda l: l.suffix)
    assert [l.name for l in convs[:3]] == ["conv2d", "conv2d_1", "conv2d_2"]
    assert convs[10].name == "conv2d_10" and sorted(l.name for l in convs)[2] == "conv2d_10"


def test_suffixes_need_not_start_at_zero(tmp_path, reference):
    # Keras counters are process-wide: a second model in the same session starts at e.g. conv2d_40.
    variables, layers = reference
    shifted = [(kind, f"{name.rsplit('_', 1)[0] if name[-1].isdigit() else name}_{40 + i}", w)
               for i, (kind, name, w) in enumerate(layers)]
    write_keras_h5(tmp_path / "w.h5", shifted)
    loaded = keras_weights.load_keras_weights(tmp_path / "w.h5", CFG)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_shape_mismatch_names_layer_variable_and_shapes(tmp_path, reference):
    _, layers = reference
    bad = [(k, n, dict(w)) for k, n, w in layers]
    kind, name, weights = next(e for e in bad if e[1] == "p_re_lu_3")
    weights["alpha"] = np.zeros((4, 4, 2), np.float32)
    write_keras_h5(tmp_path / "w.h5", bad)
    with pytest.raises(InputError) as info:
        keras_weights.load_keras_weights(tmp_path / "w.h5", CFG)
    message = str(info.value)
    assert "p_re_lu_3" in message and "(4, 4, 2)" in message and "prelu/alpha" in message
    assert str(tmp_path / "w.h5") in message


def test_missing_layer_is_reported_with_counts(tmp_path, reference):
    _, layers = reference
    write_keras_h5(tmp_path / "w.h5", [e for e in layers if e[1] != "conv2d_7"])
    with pytest.raises(InputError, match="15 convolution layers; the architecture needs 16"):
        keras_weights.load_keras_weights(tmp_path / "w.h5", CFG)


def test_wrong_architecture_is_rejected(tmp_path, reference):
    _, layers = reference
    write_keras_h5(tmp_path / "w.h5", layers)
    with pytest.raises(InputError, match="expects"):
        keras_weights.load_keras_weights(tmp_path / "w.h5", {**CFG, "gf": 4})


def test_non_keras_files_are_rejected(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(InputError, match="layer_names"):
        keras_weights.read_keras_h5(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="HDF5"):
        keras_weights.read_keras_h5(tmp_path / "text.h5")


def test_architecture_is_inferred_from_the_weights(tmp_path, reference):
    _, layers = reference
    write_keras_h5(tmp_path / "w.h5", layers)
    arch = keras_weights.infer_architecture(keras_weights.read_keras_h5(tmp_path / "w.h5"))
    assert arch == {"name": "carson", "family": "legacy", "gf": 2, "depth": 3, "input_shape": [8, 8, 1],
                    "out_channels": 4}


def test_convert_weights_command_writes_a_loadable_model(tmp_path, reference, capsys):
    variables, layers = reference
    write_keras_h5(tmp_path / "w.h5", layers)
    out = tmp_path / "model"
    assert cli.main(["convert-weights", str(tmp_path / "w.h5"), str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    loaded, arch = load_variables(out)
    jax.tree_util.tree_map(np.testing.assert_array_equal, dict(loaded), variables)
    assert build(arch) and arch["name"] == "carson" and arch["gf"] == 2 and arch["input_shape"] == [8, 8, 1]
    assert cli.main(["convert-weights", str(tmp_path / "w.h5"), str(out)]) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["convert-weights", str(tmp_path / "w.h5"), str(out), "--overwrite", "--name", "carmen"]) == 2
    assert "carmen" in capsys.readouterr().err  # 2D weights do not fit the 3D network
    assert cli.main(["convert-weights", str(tmp_path / "missing.h5"), str(tmp_path / "m2")]) == 2


def test_analysis_loads_keras_files_model_folders_and_workdirs(tmp_path, reference):
    from deepstrain_jax.analysis.networks import load_network
    from deepstrain_jax.errors import InputError
    from deepstrain_jax.io.checkpoints import save_variables

    variables, layers = reference
    write_keras_h5(tmp_path / "carson_Jan2021.h5", layers)
    net = load_network("carson", tmp_path / "carson_Jan2021.h5")
    assert net.arch["family"] == "legacy" and net.source.endswith("carson_Jan2021.h5")
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(net.variables), variables)
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(net.apply(net.variables, x)),
                               np.asarray(build(CFG)[1](variables, x)), rtol=1e-5, atol=1e-6)
    save_variables(tmp_path / "work" / "model", variables, net.arch)
    for spec in (tmp_path / "work" / "model", tmp_path / "work"):  # a model folder, a training workdir
        again = load_network("carson", spec)
        jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(again.variables), variables)
    with pytest.raises(InputError, match="holds a carson network, not carmen"):
        load_network("carmen", tmp_path / "carson_Jan2021.h5")
    with pytest.raises(InputError, match="not a vcn model"):
        load_network("vcn", tmp_path)
