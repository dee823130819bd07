"""The original DeepStrain networks built in ``tf-keras``: the reference for parity tests and benchmarks.

Needs the optional ``keras`` extra (``pip install deepstrain-jax[keras]``: ``tensorflow-cpu``, ``tf-keras``);
nothing else in the package imports TensorFlow. The graph follows the original DeepStrain code, github.com/moralesq/DeepStrain:
per conv unit Conv (``'same'``) -> BatchNormalization(momentum 0.5) -> PReLU (per element); encoder block
``a``, strided ``b`` (its pre-BN output kept), plain conv ``c``, ``Add``; decoder block 1x1 unit,
UpSampling + unit, ``Concatenate([upsampled, skip])``, unit; head UpSampling + conv (softmax for CarSON). Layers
are created in that order, which fixes the numeric suffixes of their names in a saved HDF5 file.
"""

from __future__ import annotations

import numpy as np


def build_keras_model(name: str, gf: int = 64, depth: int = 7, input_shape=None, out_channels: int | None = None):
    """A ``tf_keras.Model`` of the original CarSON, CarMEN or VCN.

    Args:
      name: ``"carson"``, ``"carmen"`` or ``"vcn"``.
      gf, depth: width of the first block and number of encoder blocks (published: 64 and 7).
      input_shape: one sample without batch; defaults ``(128, 128, 1)``, CarMEN ``(128, 128, 16, 1)`` per frame.
      out_channels: CarSON labels (4) or VCN maps (1); CarMEN always 3.
    Returns:
      CarSON / VCN: a model ``(B, X, Y, 1) -> (B, X, Y, out)``; CarMEN: a model with inputs ``[V_0, V_t]``,
      each ``(B, X, Y, Z, 1)``, and output ``(B, X, Y, Z, 3)``.
    """
    import tf_keras as keras

    layers = keras.layers
    three_d = name == "carmen"
    conv_cls = layers.Conv3D if three_d else layers.Conv2D
    up_cls = layers.UpSampling3D if three_d else layers.UpSampling2D
    kernel = (3, 3, 1) if three_d else (3, 3)
    strides = (2, 2, 1) if three_d else (2, 2)
    one = (1,) * len(kernel)
    if out_channels is None:
        out_channels = {"carson": 4, "carmen": 3, "vcn": 1}[name]
    if input_shape is None:
        input_shape = (128, 128, 16, 1) if three_d else (128, 128, 1)

    def unit(x, features, size, stride=one):
        r = conv_cls(features, size, strides=stride, padding="same")(x)
        y = layers.BatchNormalization(momentum=0.5, epsilon=1e-3)(r)
        return r, layers.PReLU()(y)

    def encoder(x, features):
        _, a = unit(x, features, kernel)
        r, b = unit(a, features, kernel, strides)
        c = conv_cls(features, kernel, padding="same")(b)
        return layers.Add()([r, c])

    def decoder(x, skip, features):
        _, h = unit(x, features, one)
        h = up_cls(size=strides)(h)
        _, h = unit(h, features, kernel)
        h = layers.Concatenate()([h, skip])
        _, h = unit(h, features, kernel)
        return h

    if three_d:
        inputs = [keras.Input(shape=tuple(input_shape)), keras.Input(shape=tuple(input_shape))]
        h = layers.Concatenate(axis=-1)(inputs)
    else:
        inputs = keras.Input(shape=tuple(input_shape))
        h = inputs
    skips = []
    for i in range(depth):
        h = encoder(h, gf * min(2 ** i, 8))
        skips.append(h)
    for skip in reversed(skips[:-1]):
        h = decoder(h, skip, skip.shape[-1])
    h = up_cls(size=strides)(h)
    out = conv_cls(out_channels, kernel, padding="same",
                   activation="softmax" if name == "carson" else None)(h)
    return keras.Model(inputs=inputs, outputs=out)


def randomize_keras_weights(model, seed: int = 0) -> None:
    """Give every weight of a tf-keras model a random value, so that a parity test exercises all of them.

    Kernels keep their glorot-uniform draw; biases, BatchNorm shifts and moving means ~ N(0, 0.1^2); BatchNorm
    scales and moving variances ~ U(0.5, 1.5); PReLU alphas ~ U(0, 0.3) (Keras initialises them to 0, which
    would hide a misplaced alpha).
    """
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        name = w.name
        if "moving_variance" in name or "gamma" in name:
            values.append(rng.uniform(0.5, 1.5, w.shape))
        elif "alpha" in name:
            values.append(rng.uniform(0.0, 0.3, w.shape))
        elif "kernel" in name:
            values.append(w.numpy())
        else:
            values.append(rng.normal(0.0, 0.1, w.shape))
    model.set_weights([np.asarray(v, np.float32) for v in values])
