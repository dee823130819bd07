"""VCN, the ventricular centring network, and the logic from its heat-map to a crop centre.

The original VCN was never released (the original DeepStrain code, github.com/moralesq/DeepStrain). This one uses the same
encoder-decoder template, predicting a Gaussian heat-map centred on the in-plane centre of mass of the LV
myocardium (label 2), trained with MSE against :func:`heatmap_target`.

**Choice: 2D, per slice, on a 2x downsampled grid.** The crop that follows is one in-plane window shared by
every slice of a stack, so only an in-plane centre is needed; a 2D network does not care how many slices a
stack has or how thick they are (6 to 20 slices of 5 to 10 mm in practice) and gets one training sample per
slice; and finding the LV needs the whole field of view (up to 320 mm), while CarSON's 128-pixel crop at
1.25 mm covers only 160 mm. The VCN therefore sees the 1.25 mm slice padded or cropped to a 256 x 256 canvas
and block-averaged by 2 (:func:`downsample_mean`): 128 x 128 at 2.5 mm, CarSON's input size. Slices vote by
averaging their heat-maps (:func:`heatmap_peak`), which gives one stack-level centre and lets slices without
myocardium (above the base, below the apex) still contribute: they are trained on the same stack-level target.

Coordinates: voxel centres at integers. Block averaging by ``f`` maps grid voxels ``f i ... f i + f - 1`` to
heat-map pixel ``i``, so ``c_grid = f c_hm + (f - 1) / 2``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from deepstrain_jax.labels import LV_MYOCARDIUM

if TYPE_CHECKING:
    from deepstrain_jax.models.layers import EncoderDecoder

LEGACY_INPUT_SHAPE = (128, 128, 1)
DOWNSAMPLE = 2  # 1.25 mm network grid -> 2.5 mm VCN grid
SIGMA_VOX = 4.0  # heat-map standard deviation in VCN pixels (10 mm at 2.5 mm)
MYOCARDIUM = LV_MYOCARDIUM


def make_vcn(arch: dict) -> EncoderDecoder:
    """The VCN module for a complete architecture dict (see :func:`deepstrain_jax.models.architecture`)."""
    from deepstrain_jax.models.layers import EncoderDecoder  # Flax: only building the network needs it

    return EncoderDecoder(
        widths=arch["widths"], out_channels=arch["out_channels"], kernel_size=(3, 3), strides=(2, 2),
        per_element_prelu=arch["family"] == "legacy", head_activation=None,
        bn_axis_name=arch["bn_axis_name"], dtype=jnp.dtype(arch["dtype"]))


def downsample_mean(images, factor: int = DOWNSAMPLE):
    """Block-average the in-plane axes: ``y[b, i, j, c] = mean_{p, q < f} x[b, f i + p, f j + q, c]``.

    Args:
      images: ``(B, X, Y, C)`` with ``X`` and ``Y`` divisible by ``factor``.
      factor: integer block size ``f``.
    Returns:
      ``(B, X / f, Y / f, C)``.
    """
    images = jnp.asarray(images)
    b, x, y, c = images.shape
    if factor < 1 or x % factor or y % factor:
        raise ValueError(f"in-plane shape {(x, y)} must be divisible by the factor {factor}")
    return images.reshape(b, x // factor, factor, y // factor, factor, c).mean(axis=(2, 4))


def to_heatmap_coords(center_vox, factor: int = DOWNSAMPLE):
    """Grid voxel coordinates to heat-map pixel coordinates: ``c_hm = (c_grid - (f - 1) / 2) / f``."""
    return (jnp.asarray(center_vox, jnp.float32) - (factor - 1) / 2) / factor


def from_heatmap_coords(center_hm, factor: int = DOWNSAMPLE):
    """Heat-map pixel coordinates to grid voxel coordinates: ``c_grid = f c_hm + (f - 1) / 2``."""
    return jnp.asarray(center_hm, jnp.float32) * factor + (factor - 1) / 2


def myocardium_center_vox(labels, label: int = MYOCARDIUM):
    """In-plane centre of mass of one label over a whole stack.

    ``c_d = sum_{v: L(v) = label} v_d / |{v: L(v) = label}|`` for the two in-plane axes ``d``.

    Args:
      labels: ``(X, Y)`` or ``(X, Y, Z)`` integer label map.
      label: the label to locate (default 2, LV myocardium).
    Returns:
      ``(2,)`` float32 voxel coordinates along axes 0 and 1. Raises ``ValueError`` if the label is absent
      (NaN under ``jit``).
    """
    labels = jnp.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (X, Y) or (X, Y, Z), got shape {labels.shape}")
    mask = (labels == label).astype(jnp.float32)
    if labels.ndim == 3:
        mask = mask.sum(axis=2)
    count = mask.sum()
    try:
        empty = not bool(count > 0)
    except jax.errors.TracerBoolConversionError:
        empty = False
    if empty:
        raise ValueError(f"label {label} is absent from the label map of shape {labels.shape}")
    i = jnp.arange(mask.shape[0], dtype=jnp.float32)
    j = jnp.arange(mask.shape[1], dtype=jnp.float32)
    return jnp.stack([(mask.sum(axis=1) * i).sum(), (mask.sum(axis=0) * j).sum()]) / count


def gaussian_heatmap(center, shape: tuple[int, int], sigma_vox: float = SIGMA_VOX):
    """Gaussian heat-map ``h(i, j) = exp(-((i - c_0)^2 + (j - c_1)^2) / (2 sigma^2))``, peak 1.

    Args:
      center: ``(..., 2)`` centres in pixels of the map.
      shape: ``(X, Y)`` of the map.
      sigma_vox: standard deviation in pixels.
    Returns:
      ``(..., X, Y)`` float32.
    """
    if sigma_vox <= 0:
        raise ValueError(f"sigma_vox must be positive, got {sigma_vox}")
    center = jnp.asarray(center, jnp.float32)
    i = jnp.arange(shape[0], dtype=jnp.float32)[:, None]
    j = jnp.arange(shape[1], dtype=jnp.float32)[None, :]
    d2 = (i - center[..., 0, None, None]) ** 2 + (j - center[..., 1, None, None]) ** 2
    return jnp.exp(-d2 / (2.0 * sigma_vox ** 2))


def heatmap_target(labels, factor: int = DOWNSAMPLE, sigma_vox: float = SIGMA_VOX):
    """VCN training target for one stack: a Gaussian on the myocardium's centre of mass.

    Args:
      labels: ``(X, Y, Z)`` ACDC labels on the canvas the VCN input is downsampled from (1.25 mm).
      factor: the downsampling of :func:`downsample_mean`.
      sigma_vox: standard deviation in heat-map pixels.
    Returns:
      ``(X / f, Y / f, 1)`` float32 target, the same for every slice of the stack.
    """
    labels = jnp.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] % factor or labels.shape[1] % factor:
        raise ValueError(f"labels must be (X, Y, Z) with X, Y divisible by {factor}, got {labels.shape}")
    center = to_heatmap_coords(myocardium_center_vox(labels), factor)
    shape = (labels.shape[0] // factor, labels.shape[1] // factor)
    return gaussian_heatmap(center, shape, sigma_vox)[..., None]


def heatmap_peak(heatmaps, window_vox: float = 2 * SIGMA_VOX, iterations: int = 4):
    """Sub-pixel peak of the mean heat-map of one stack, by Gaussian mean shift from the arg-max.

    With ``h`` the mean over slices, start at ``p_0 = argmax h`` and iterate

        p_{k+1} = sum_v w_k(v) v / sum_v w_k(v),   w_k(v) = max(h(v), 0) exp(-|v - p_k|^2 / (2 s^2)),

    ``s = window_vox`` (mean shift, Comaniciu & Meer 2002). For a Gaussian peak of standard deviation
    ``sigma`` the error shrinks by ``sigma^2 / (sigma^2 + s^2)`` per step (0.2 with the defaults), and blobs
    farther than ~3 ``s`` from the arg-max have no influence. Where all weights vanish, ``p_k`` is kept.

    Args:
      heatmaps: ``(S, X, Y)`` or ``(S, X, Y, 1)`` VCN outputs for the ``S`` slices of a stack.
      window_vox: standard deviation of the Gaussian window, heat-map pixels.
      iterations: mean-shift steps.
    Returns:
      ``(2,)`` float32 peak in heat-map pixel coordinates.
    """
    heatmaps = jnp.asarray(heatmaps, jnp.float32)
    if heatmaps.ndim == 4 and heatmaps.shape[-1] == 1:
        heatmaps = heatmaps[..., 0]
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be (S, X, Y) or (S, X, Y, 1), got {heatmaps.shape}")
    if window_vox <= 0:
        raise ValueError(f"window_vox must be positive, got {window_vox}")
    return _mean_shift_peak(heatmaps.mean(axis=0), float(window_vox), int(iterations))


@partial(jax.jit, static_argnums=(1, 2))
def _mean_shift_peak(mean_heatmap, window_vox: float, iterations: int):
    # One compiled program per heat-map size (the slice count is averaged out first), not one per operation.
    h = jnp.maximum(mean_heatmap, 0.0)
    nx, ny = h.shape
    flat = jnp.argmax(mean_heatmap)
    p = jnp.stack([flat // ny, flat % ny]).astype(jnp.float32)
    i = jnp.arange(nx, dtype=jnp.float32)[:, None]
    j = jnp.arange(ny, dtype=jnp.float32)[None, :]
    for _ in range(iterations):
        w = h * jnp.exp(-((i - p[0]) ** 2 + (j - p[1]) ** 2) / (2.0 * window_vox ** 2))
        total = w.sum()
        centroid = jnp.stack([(w * i).sum(), (w * j).sum()]) / jnp.where(total > 0, total, 1.0)
        p = jnp.where(total > 0, centroid, p)
    return p


def crop_center_vox(heatmaps, factor: int = DOWNSAMPLE, window_vox: float = 2 * SIGMA_VOX):
    """Crop centre on the grid the VCN input was downsampled from: ``f * heatmap_peak + (f - 1) / 2``.

    Args:
      heatmaps: ``(S, X, Y[, 1])`` VCN outputs of one stack.
      factor: the downsampling of :func:`downsample_mean`.
      window_vox: see :func:`heatmap_peak`.
    Returns:
      ``(2,)`` float32 voxel coordinates (axes 0, 1) of the LV centre on the full-resolution grid.
    """
    return from_heatmap_coords(heatmap_peak(heatmaps, window_vox), factor)
