"""The shipped default models: present in the package, loadable, and the right networks."""

import jax
import numpy as np
import pytest

from deepstrain_jax import models
from deepstrain_jax.models import pretrained

SHAPES = {"vcn": (2, 128, 128, 1), "carson": (2, 128, 128, 1), "carmen": (1, 128, 128, 16, 2)}
OUT = {"vcn": 1, "carson": 4, "carmen": 3}


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_model_loads_and_runs(name):
    variables, arch = pretrained.load_default(name)
    assert arch["name"] == name and arch["family"] == "v2"
    _, apply = models.build(arch)
    x = np.random.default_rng(0).standard_normal(SHAPES[name]).astype(np.float32)
    y = np.asarray(jax.jit(apply)(variables, x))
    assert y.shape == (*SHAPES[name][:-1], OUT[name]) and np.all(np.isfinite(y))
    if name == "carson":
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    folder = pretrained.default_model_dir(name)
    assert (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file()


def test_unknown_model_name():
    with pytest.raises(ValueError, match="no shipped model"):
        pretrained.default_model_dir("unet")
