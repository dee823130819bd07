"""CarMEN, the cardiac motion estimation network: a frame pair in, a displacement field out.

Input ``(B, X, Y, Z, 2)``: channel 0 the reference frame ``V_0`` (ED), channel 1 the moving frame ``V_t``, each
z-scored on the network grid (the original: 128 x 128 x 16, 1.25 mm in-plane, 16 slices). Output
``u_vox`` ``(B, X, Y, Z, 3)``, float32: linear, unbounded displacement in voxels of that grid, component ``c``
along array axis ``c``; the Lagrangian displacement of the ED point ``X``, so that
``warp(V_t, u_vox)(X) = V_t(X + u_vox(X)) ~ V_0(X)`` (the original DeepStrain code, github.com/moralesq/DeepStrain).

* ``legacy``: the published ``carmen_Jan2021.h5`` architecture: gf 64, kernels (3, 3, 1), strides and
  upsampling (2, 2, 1), per-element PReLU, hence exactly 128 x 128 x 16 inputs; 111,868,611 variables. No
  information crosses slices except BatchNorm statistics, so it runs as a 2D network over the ``B * Z``
  slices (:mod:`deepstrain_jax.models.layers`, "folded slices").
* ``v2``: one PReLU alpha per channel (any ``X, Y`` divisible by ``2 ** depth``, any ``Z``). With
  ``kernel_3d`` the kernels are (3, 3, 3), so slices inform each other, and ``z_stride`` 2 also halves ``Z``
  at every block (then ``Z`` must be divisible by ``2 ** depth``). With ``slice_mix`` the (3, 3, 1) network gets a
  residual 3-slice mixing layer after every block (:class:`deepstrain_jax.models.layers.SliceMix`): slices inform
  each other (through-plane motion needs it) and the 2D fast path stays (a training step of the shipped size: +21 %
  on the 2-core CPU machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp

if TYPE_CHECKING:
    from deepstrain_jax.models.layers import EncoderDecoder

LEGACY_INPUT_SHAPE = (128, 128, 16, 2)


def make_carmen(arch: dict) -> EncoderDecoder:
    """The CarMEN module for a complete architecture dict (see :func:`deepstrain_jax.models.architecture`)."""
    from deepstrain_jax.models.layers import EncoderDecoder  # Flax: only building the network needs it

    kz = 3 if arch["kernel_3d"] else 1
    return EncoderDecoder(
        widths=arch["widths"], out_channels=3, kernel_size=(3, 3, kz), strides=(2, 2, arch["z_stride"]),
        per_element_prelu=arch["family"] == "legacy", head_activation=None, fold_slices=arch["fold_slices"],
        bn_axis_name=arch["bn_axis_name"], slice_mix=arch["slice_mix"], dtype=jnp.dtype(arch["dtype"]))


def pair_input(v0, vt):
    """Stack a reference frame and a moving frame into CarMEN's input.

    Args:
      v0: ``(B, X, Y, Z)`` or ``(B, X, Y, Z, 1)``, the reference (ED) frames.
      vt: same shape, the moving frames ``t``.
    Returns:
      ``(B, X, Y, Z, 2)``, channel 0 = ``v0``, channel 1 = ``vt``.
    """
    v0, vt = jnp.asarray(v0), jnp.asarray(vt)
    if v0.shape != vt.shape:
        raise ValueError(f"v0 {v0.shape} and vt {vt.shape} must have the same shape")
    if v0.ndim == 5 and v0.shape[-1] == 1:
        v0, vt = v0[..., 0], vt[..., 0]
    if v0.ndim != 4:
        raise ValueError(f"frames must be (B, X, Y, Z) or (B, X, Y, Z, 1), got {v0.shape}")
    return jnp.stack([v0, vt], axis=-1)
