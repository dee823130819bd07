"""Networks: architecture facts from the original (parameter counts, topology), shapes, BatchNorm, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from deepstrain_jax.models import architecture, build, count_variables, make_module
from deepstrain_jax.models.conv import conv_same
from deepstrain_jax.models.layers import ConvUnit, DecoderBlock, EncoderBlock, keras_creation_order

KEY = jax.random.key(0)


def randomized(variables, seed=0):
    """Every variable random (BN statistics and PReLU alphas too), so that no term can hide."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name.endswith(("['var']", "['scale']")):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif name.endswith("['alpha']"):
            value = rng.uniform(0.0, 0.3, leaf.shape)
        elif name.endswith("['kernel']"):
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        else:
            value = rng.normal(0.0, 0.1, leaf.shape)
        out.append(jnp.asarray(value, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


def shapes_of(cfg):
    init, apply = build(cfg)
    return jax.eval_shape(init, KEY), apply


# ----------------------------------------------------------------------------------------------------------
# Parameter counts (reference/original_deepstrain.md §2-4 and Appendix A, counted analytically there).

@pytest.mark.parametrize("cfg,total,trainable", [
    ({"name": "carson", "family": "legacy"}, 57_263_812, 57_241_924),
    ({"name": "carmen", "family": "legacy"}, 111_868_611, 111_846_723),
    ({"name": "vcn", "family": "legacy"}, 57_262_081, None),
    ({"name": "vcn", "family": "legacy", "input_shape": (256, 256, 1)}, 68_183_041, None),
])
def test_legacy_parameter_counts(cfg, total, trainable):
    variables, _ = shapes_of(cfg)
    assert count_variables(variables) == total
    if trainable is not None:
        assert count_variables(variables["params"]) == trainable


def test_v2_prelu_is_one_alpha_per_channel():
    # CarSON's table: convolutions 53,579,716, BatchNorm 43,776 of which 21,888 trainable (gamma, beta), so the
    # 32 units hold 10,944 channels; one alpha per channel gives 53,579,716 + 43,776 + 10,944.
    variables, _ = shapes_of({"name": "carson", "family": "v2", "gf": 64, "depth": 7})
    assert count_variables(variables) == 53_579_716 + 43_776 + 10_944
    assert variables["params"]["enc1"]["a"]["prelu"]["alpha"].shape == (64,)


def test_keras_creation_order_covers_every_variable_once():
    depth = 3
    variables, _ = shapes_of({"name": "carson", "family": "legacy", "gf": 2, "depth": depth,
                              "input_shape": (8, 8, 1)})
    order = keras_creation_order(depth)
    assert [len(order[k]) for k in ("conv", "bn", "prelu")] == [6 * depth - 2, 5 * depth - 3, 5 * depth - 3]
    leaves = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)}
    names = {"conv": [("params", "kernel"), ("params", "bias")],
             "bn": [("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")],
             "prelu": [("params", "alpha")]}
    covered = [jax.tree_util.keystr((jax.tree_util.DictKey(c), *map(jax.tree_util.DictKey, path),
                                     jax.tree_util.DictKey(v)))
               for kind, paths in order.items() for path in paths for c, v in names[kind]]
    assert len(covered) == len(set(covered)) and set(covered) == leaves
    # Keras builds unit a, unit b, then conv c in each encoder block; the head last.
    assert order["conv"][:3] == [("enc1", "a", "conv"), ("enc1", "b", "conv"), ("enc1", "c")]
    assert order["conv"][-1] == ("head",)


# ----------------------------------------------------------------------------------------------------------
# Shapes for every family (traced only).

@pytest.mark.parametrize("cfg,x_shape,y_shape", [
    ({"name": "carson", "family": "legacy"}, (2, 128, 128, 1), (2, 128, 128, 4)),
    ({"name": "carmen", "family": "legacy"}, (1, 128, 128, 16, 2), (1, 128, 128, 16, 3)),
    ({"name": "vcn", "family": "legacy"}, (3, 128, 128, 1), (3, 128, 128, 1)),
    ({"name": "carson", "family": "v2", "depth": 4}, (2, 48, 80, 1), (2, 48, 80, 4)),
    ({"name": "carson", "family": "v2", "depth": 4, "out_channels": 2}, (1, 32, 16, 1), (1, 32, 16, 2)),
    ({"name": "carmen", "family": "v2", "depth": 3}, (1, 24, 16, 5, 2), (1, 24, 16, 5, 3)),
    ({"name": "carmen", "family": "v2", "depth": 3, "kernel_3d": True}, (1, 16, 24, 5, 2), (1, 16, 24, 5, 3)),
    ({"name": "carmen", "family": "v2", "depth": 3, "kernel_3d": True, "z_stride": 2},
     (2, 16, 16, 8, 2), (2, 16, 16, 8, 3)),
    ({"name": "vcn", "family": "v2", "dtype": "bfloat16"}, (2, 64, 64, 1), (2, 64, 64, 1)),
])
def test_output_shapes(cfg, x_shape, y_shape):
    variables, apply = shapes_of(cfg)
    y = jax.eval_shape(apply, variables, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert y.shape == y_shape and y.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))


def test_v2_3d_kernels_are_3x3x3_and_legacy_3x3x1():
    v2, _ = shapes_of({"name": "carmen", "family": "v2", "depth": 2, "kernel_3d": True, "gf": 4})
    legacy, _ = shapes_of({"name": "carmen", "family": "legacy", "gf": 4, "depth": 2, "input_shape": (8, 8, 2, 2)})
    assert v2["params"]["enc1"]["a"]["conv"]["kernel"].shape == (3, 3, 3, 2, 4)
    assert legacy["params"]["enc1"]["a"]["conv"]["kernel"].shape == (3, 3, 1, 2, 4)
    assert legacy["params"]["enc1"]["a"]["prelu"]["alpha"].shape == (8, 8, 2, 4)  # Keras layout (X, Y, Z, C)


def test_config_dict_and_plain_dict_agree():
    cfg = ml_collections.ConfigDict({"name": "carmen", "family": "v2", "gf": 8, "depth": 3})
    assert architecture(cfg) == architecture(cfg.to_dict())
    assert architecture(cfg)["widths"] == [8, 16, 32]


@pytest.mark.parametrize("cfg,match", [
    ({"name": "unet"}, "name"),
    ({"name": "carson", "family": "v3"}, "family"),
    ({"name": "carson", "gff": 3}, "unknown"),
    ({"name": "carson", "family": "legacy", "kernel_3d": True}, "kernel_3d"),
    ({"name": "carmen", "family": "v2", "z_stride": 2}, "z_stride"),
    ({"name": "carmen", "input_shape": (128, 128, 16, 1)}, "2 channels"),
    ({"name": "carmen", "out_channels": 2}, "3 displacement"),
    ({"name": "carson", "family": "v2", "depth": 5, "input_shape": (48, 48, 1)}, "divisible"),
    ({"name": "carson", "dtype": "float64"}, "dtype"),
])
def test_bad_configs_raise(cfg, match):
    with pytest.raises(ValueError, match=match):
        architecture(cfg)


def test_input_not_divisible_raises():
    variables, apply = shapes_of({"name": "carson", "family": "v2", "depth": 3, "gf": 2})
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(apply, variables, jax.ShapeDtypeStruct((1, 12, 16, 1), jnp.float32))


def test_legacy_variables_fix_the_input_size():
    variables, apply = shapes_of({"name": "carson", "family": "legacy", "gf": 2, "depth": 2,
                                  "input_shape": (8, 8, 1)})
    with pytest.raises(Exception, match="alpha"):
        jax.eval_shape(apply, variables, jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32))


# ----------------------------------------------------------------------------------------------------------
# Blocks against hand-written references.

def test_conv_unit_batchnorm_training_and_inference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 6, 2)).astype(np.float32)
    unit = ConvUnit(3, (1, 1), (1, 1), per_element_prelu=True)
    variables = randomized(jax.eval_shape(lambda: unit.init(KEY, jnp.asarray(x), train=False)), seed=3)
    p, s = variables["params"], variables["batch_stats"]
    w, b = np.asarray(p["conv"]["kernel"])[0, 0], np.asarray(p["conv"]["bias"])
    gamma, beta = np.asarray(p["bn"]["scale"]), np.asarray(p["bn"]["bias"])
    alpha = np.asarray(p["prelu"]["alpha"])
    mean0, var0 = np.asarray(s["bn"]["mean"]), np.asarray(s["bn"]["var"])
    assert alpha.shape == (5, 6, 3)
    r = x.astype(np.float64) @ w + b

    def prelu(z):
        return np.where(z >= 0, z, alpha * z)

    (r_t, y_t), updates = jax.jit(lambda v, x: unit.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.asarray(x))
    mu, var = r.mean(axis=(0, 1, 2)), r.var(axis=(0, 1, 2))  # biased batch variance
    np.testing.assert_allclose(np.asarray(r_t), r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y_t), prelu(gamma * (r - mu) / np.sqrt(var + 1e-3) + beta),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["bn"]["mean"]), 0.5 * mean0 + 0.5 * mu,
                               rtol=1e-5, atol=1e-6)
    n = 4 * 5 * 6  # running variance moves towards the unbiased batch variance, as in Keras
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["bn"]["var"]),
                               0.5 * var0 + 0.5 * var * n / (n - 1), rtol=1e-5, atol=1e-6)

    _, y_i = jax.jit(lambda v, x: unit.apply(v, x, train=False))(variables, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y_i), prelu(gamma * (r - mean0) / np.sqrt(var0 + 1e-3) + beta),
                               rtol=1e-4, atol=1e-5)


def test_encoder_block_is_linear_with_pre_bn_residual():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
    block = EncoderBlock(3, (3, 3), (2, 2), per_element_prelu=False)
    v = randomized(jax.eval_shape(lambda: block.init(KEY, x, train=False)), seed=4)
    p, s = v["params"], v["batch_stats"]

    @jax.jit
    def reference(p, s, x):
        unit = ConvUnit(3, (3, 3), (1, 1), per_element_prelu=False)
        _, a = unit.apply({"params": p["a"], "batch_stats": s["a"]}, x, train=False)
        strided = ConvUnit(3, (3, 3), (2, 2), per_element_prelu=False)
        r, b = strided.apply({"params": p["b"], "batch_stats": s["b"]}, a, train=False)
        return r + conv_same(b, p["c"]["kernel"], (1, 1)) + p["c"]["bias"]

    expected = reference(p, s, x)
    y = jax.jit(lambda v, x: block.apply(v, x, train=False))(v, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert float(jnp.min(y)) < 0  # no activation after the add


@pytest.mark.parametrize("zeroed,varied", [("skip", "skip"), ("upsampled", "x")])
def test_decoder_concatenates_upsampled_first_then_skip(zeroed, varied):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 5)), jnp.float32)
    skip = jnp.asarray(rng.standard_normal((1, 8, 8, 3)), jnp.float32)
    block = DecoderBlock(3, (3, 3), (2, 2), per_element_prelu=False)
    v = randomized(jax.eval_shape(lambda: block.init(KEY, x, skip, train=False)), seed=5)
    kernel = v["params"]["merge"]["conv"]["kernel"]  # (3, 3, 3 upsampled + 3 skip, 3)
    half = slice(3, 6) if zeroed == "skip" else slice(0, 3)
    v["params"]["merge"]["conv"]["kernel"] = kernel.at[:, :, half].set(0.0)
    f = jax.jit(lambda v, x, skip: block.apply(v, x, skip, train=False))
    y1 = f(v, x, skip)
    y2 = f(v, x, skip + 1.0) if varied == "skip" else f(v, x + 1.0, skip)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert y1.shape == (1, 8, 8, 3)


def test_folded_slices_equal_3d_convolutions():
    cfg = {"name": "carmen", "family": "legacy", "gf": 2, "depth": 2, "input_shape": (8, 8, 3, 2)}
    init, apply_folded = build(cfg)
    _, apply_3d = build({**cfg, "fold_slices": False})
    variables = randomized(jax.eval_shape(init, KEY), seed=6)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3, 2))

    @jax.jit
    def both(variables, x):
        return [(f(variables, x), f(variables, x, train=True, mutable=["batch_stats"]))
                for f in (apply_folded, apply_3d)]

    (y_f_inf, (y_f, s_f)), (y_3_inf, (y_3, s_3)) = both(variables, x)
    np.testing.assert_allclose(np.asarray(y_f_inf), np.asarray(y_3_inf), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y_f), np.asarray(y_3), rtol=1e-4, atol=1e-4)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), s_f, s_3)


# ----------------------------------------------------------------------------------------------------------
# Behaviour of whole networks on tiny inputs.

@pytest.fixture(scope="module")
def small_carson():
    init, apply = build({"name": "carson", "family": "v2", "gf": 4, "depth": 3})
    return randomized(jax.eval_shape(init, KEY), seed=7), apply


def test_carson_outputs_probabilities(small_carson):
    variables, apply = small_carson
    p = jax.jit(apply)(variables, jax.random.normal(jax.random.key(2), (2, 16, 24, 1)))
    assert p.shape == (2, 16, 24, 4)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, atol=1e-5)
    assert float(p.min()) >= 0.0


def test_same_variables_and_input_give_identical_output(small_carson):
    """Two separately built and compiled networks, fed copies of the same variables and input, agree bit for bit
    (no hidden state or randomness at inference), and the output does depend on the input."""
    variables, apply = small_carson
    _, apply2 = build({"name": "carson", "family": "v2", "gf": 4, "depth": 3})
    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 16, 16, 1)))
    a = np.asarray(jax.jit(apply)(variables, x))
    b = np.asarray(jax.jit(apply2)(jax.tree_util.tree_map(np.array, variables), x.copy()))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(jax.jit(apply)(variables, x[::-1].copy())))


def test_jit_matches_no_jit():
    init, apply = build({"name": "carmen", "family": "v2", "gf": 2, "depth": 1, "kernel_3d": True})
    variables = randomized(jax.eval_shape(init, KEY), seed=8)
    x = jax.random.normal(jax.random.key(4), (1, 4, 4, 3, 2))
    y_jit = jax.jit(apply)(variables, x)
    with jax.disable_jit():
        y_eager = apply(variables, x)
    np.testing.assert_allclose(np.asarray(y_jit), np.asarray(y_eager), rtol=1e-5, atol=1e-5)


def test_training_mode_uses_batch_statistics_and_updates_them(small_carson):
    variables, apply = small_carson
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(5), (4, 8, 8, 1))
    y_train, updates = jax.jit(lambda v, x: apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    y_infer = jax.jit(apply)(variables, x)
    assert not np.allclose(np.asarray(y_train), np.asarray(y_infer), atol=1e-3)
    new, old = updates["batch_stats"]["enc1"]["a"]["bn"], variables["batch_stats"]["enc1"]["a"]["bn"]
    assert not np.allclose(np.asarray(new["mean"]), np.asarray(old["mean"]))
    with pytest.raises(Exception, match="batch_stats"):
        jax.eval_shape(lambda v, x: apply(v, x, train=True), variables, x)  # needs mutable=["batch_stats"]


def test_make_module_is_the_module_build_applies():
    module = make_module({"name": "vcn", "family": "v2", "gf": 2, "depth": 2})
    assert module.out_channels == 1 and module.head_activation is None and not module.per_element_prelu


def test_batchnorm_training_gradients_match_the_textbook_formula():
    """BatchNorm's channel sums are matrix-vector products with custom gradients (models.channels): its output
    and its gradients with respect to input, scale and bias in training mode against autodiff of the textbook
    formula written with jnp.mean."""
    from deepstrain_jax.models.layers import BN_EPSILON, BatchNorm

    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3, 6, 5, 4)) * 2.0 + 1.0, jnp.float32)
    g = jnp.asarray(rng.standard_normal((3, 6, 5, 4)), jnp.float32)
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x, True)
    params = {"scale": jnp.asarray([0.5, 1.0, 2.0, -1.0]), "bias": jnp.asarray([0.0, 1.0, -1.0, 0.5])}

    def ours(x, p):
        y, _ = bn.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, True, mutable=["batch_stats"])
        return jnp.sum(y * g)

    def textbook(x, p):
        mean = x.mean((0, 1, 2))
        var = jnp.square(x - mean).mean((0, 1, 2))
        return jnp.sum(((x - mean) / jnp.sqrt(var + BN_EPSILON) * p["scale"] + p["bias"]) * g)

    np.testing.assert_allclose(float(jax.jit(ours)(x, params)), float(textbook(x, params)), rtol=1e-5)
    got = jax.jit(jax.grad(ours, (0, 1)))(x, params)
    want = jax.grad(textbook, (0, 1))(x, params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# slice_mix: residual mixing of neighbouring slices in a (3, 3, 1) CarMEN.

def test_slice_mix_layer_against_numpy():
    from deepstrain_jax.models.layers import SliceMix
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2, 4, 5, 6, 3)).astype(np.float32)          # (B, X, Y, Z, C)
    w = rng.normal(size=(3, 3, 3)).astype(np.float32)
    out = SliceMix().apply({"params": {"kernel": w}}, h)
    padded = np.pad(h, ((0, 0), (0, 0), (0, 0), (1, 1), (0, 0)))
    expected = h.copy()
    for z in range(6):
        for k in range(3):
            expected[:, :, :, z] += padded[:, :, :, z + k] @ w[k]   # slice z + k - 1 through W_k
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # Folded layout (B * Z, X, Y, C), slice index fastest: the same numbers.
    folded = np.moveaxis(h, 3, 1).reshape(12, 4, 5, 3)
    out_f = SliceMix(folded_slices=6).apply({"params": {"kernel": w}}, folded)
    np.testing.assert_allclose(np.moveaxis(np.asarray(out_f).reshape(2, 6, 4, 5, 3), 1, 3), expected,
                               rtol=1e-5, atol=1e-5)


def _with_mix(base_variables, mix_shapes, seed):
    """The base network's variables plus mixing kernels (random when ``seed`` is given, else zero)."""
    rng = np.random.default_rng(seed if seed is not None else 0)
    params = dict(base_variables["params"])
    for name, leaf in mix_shapes["params"].items():
        if name.startswith("mix_"):
            k = leaf["kernel"].shape
            params[name] = {"kernel": jnp.asarray(rng.normal(0, 0.3, k) if seed is not None else np.zeros(k),
                                                  jnp.float32)}
    return {**base_variables, "params": params}


def test_slice_mix_starts_as_the_2d_network_and_then_mixes_slices():
    cfg = {"name": "carmen", "family": "v2", "gf": 2, "depth": 2, "input_shape": (8, 8, 6, 2)}
    init, apply_2d = build(cfg)
    init_mix, apply_mix = build({**cfg, "slice_mix": True})
    base = randomized(jax.eval_shape(init, KEY), seed=4)
    mix_shapes = jax.eval_shape(init_mix, KEY)
    assert sorted(k for k in mix_shapes["params"] if k.startswith("mix_")) == ["mix_dec1", "mix_enc1", "mix_enc2"]
    x = jax.random.normal(jax.random.key(2), (1, 8, 8, 6, 2))
    # Zero mixing kernels: exactly the 2D-slice network.
    np.testing.assert_array_equal(np.asarray(apply_mix(_with_mix(base, mix_shapes, None), x)),
                                  np.asarray(apply_2d(base, x)))
    # A change to slice 0 of the input: the 2D-slice network's other slices do not see it, the mixing one's do.
    x2 = x.at[:, :, :, 0].add(1.0)
    d_2d = np.abs(np.asarray(apply_2d(base, x2)) - np.asarray(apply_2d(base, x))).max(axis=(0, 1, 2, 4))
    mixed = _with_mix(base, mix_shapes, seed=5)
    d_mix = np.abs(np.asarray(apply_mix(mixed, x2)) - np.asarray(apply_mix(mixed, x))).max(axis=(0, 1, 2, 4))
    assert d_2d[0] > 0 and np.all(d_2d[1:] == 0)
    assert np.all(d_mix[1:3] > 1e-3)      # three mixing layers: slices 1 and 2 at least hear of slice 0
    # Folded (2D fast path) and unfolded 3D convolutions agree with mixing too.
    _, apply_mix_3d = build({**cfg, "slice_mix": True, "fold_slices": False})
    np.testing.assert_allclose(np.asarray(apply_mix(mixed, x)), np.asarray(apply_mix_3d(mixed, x)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", [{"name": "carson", "slice_mix": True},
                                 {"name": "carmen", "family": "legacy", "slice_mix": True}])
def test_slice_mix_is_v2_carmen_only(cfg):
    with pytest.raises(ValueError, match="slice_mix"):
        architecture(cfg)
