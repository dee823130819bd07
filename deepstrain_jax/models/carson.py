"""CarSON, the cardiac segmentation network: 2D, one short-axis slice at a time.

Input ``(B, X, Y, 1)``: z-scored slices on the 1.25 mm network grid (the original: 128 x 128 crops around the
LV). Output ``(B, X, Y, n_labels)``: softmax probabilities over the ACDC labels 0 background, 1 RV cavity,
2 LV myocardium, 3 LV cavity (the original DeepStrain code, github.com/moralesq/DeepStrain).

* ``legacy``: the published ``carson_Jan2021.h5`` architecture: gf 64, seven 2x downsamplings, 3x3 kernels,
  per-element PReLU, hence exactly 128 x 128 inputs; 57,263,812 variables.
* ``v2``: the same blocks with one PReLU alpha per channel, so any ``X, Y`` divisible by ``2 ** depth``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp

if TYPE_CHECKING:
    from deepstrain_jax.models.layers import EncoderDecoder

LEGACY_INPUT_SHAPE = (128, 128, 1)


def make_carson(arch: dict) -> EncoderDecoder:
    """The CarSON module for a complete architecture dict (see :func:`deepstrain_jax.models.architecture`)."""
    from deepstrain_jax.models.layers import EncoderDecoder  # Flax: only building the network needs it

    return EncoderDecoder(
        widths=arch["widths"], out_channels=arch["out_channels"], kernel_size=(3, 3), strides=(2, 2),
        per_element_prelu=arch["family"] == "legacy", head_activation="softmax",
        bn_axis_name=arch["bn_axis_name"], dtype=jnp.dtype(arch["dtype"]))
