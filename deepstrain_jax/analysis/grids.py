"""Pure steps of the analysis between the network grid and the native grid (numpy/scipy, no networks).

* :func:`detect_slice_order`: base -> apex or apex -> base from an ED label map.
* :func:`keep_heart_component`: labelled islands away from the heart removed.
* :func:`grid_affine`: the voxel-to-world matrix of the network grid (resampled, cropped, maybe z-flipped).
* :func:`to_native`, :func:`labels_to_native`, :func:`masked_to_native`: network-grid arrays back on the
  native grid (linear interpolation; arg-max of interpolated class probabilities; normalised interpolation
  inside a mask).
"""

from __future__ import annotations

import numpy as np

from deepstrain_jax.data import preprocessing as pp


def detect_slice_order(labels_ed) -> tuple[str, float]:
    """Base -> apex or apex -> base from an ED label map ``(X, Y, Z)`` (stored order).

    The heart's cross-section (RV and LV: labels 1, 2, 3) shrinks towards the apex, the RV's most of all (it
    ends above the LV apex): the least-squares slope of the labelled area against the slice index, over the
    slices that hold any, is negative for a base-first stack. Returns the order and the slope relative to the
    mean area per slice (its magnitude is the confidence; 0 with < 2 labelled slices).
    """
    area = np.isin(np.asarray(labels_ed), (1, 2, 3)).sum(axis=(0, 1)).astype(np.float64)
    z = np.flatnonzero(area)
    if z.size < 2:
        return "base_to_apex", 0.0
    slope = np.polyfit(z.astype(np.float64), area[z], 1)[0] / area[z].mean()
    return ("base_to_apex" if slope <= 0 else "apex_to_base"), float(slope)


def keep_heart_component(labels) -> np.ndarray:
    """Remove labelled islands away from the heart: keep the largest 26-connected component of ``labels > 0``.

    Args:
      labels: ``(X, Y, Z)`` ACDC label map.
    Returns:
      the labels with every voxel outside that component set to 0 (a copy).
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    components, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(components == int(np.argmax(sizes)), labels, 0).astype(labels.dtype)


def grid_affine(affine, plan: pp.Resampling, crop: pp.Crop, reverse: bool) -> np.ndarray:
    m = np.eye(4)
    m[:2, 3] = crop.start
    a = plan.out_affine(affine) @ m
    if reverse:
        flip = np.diag([1.0, 1.0, -1.0, 1.0])
        flip[2, 3] = plan.out_shape[2] - 1
        a = a @ flip
    return a


def to_native(volume, plan: pp.Resampling, crop: pp.Crop) -> np.ndarray:
    """Network-grid ``(N, N, Z, ...)`` -> native ``(X, Y, Z, ...)``: paste into the resampled grid, interpolate."""
    return pp.invert_resampling(pp.invert_crop(volume, crop), plan, order=1)


def labels_to_native(probs, plan, crop) -> np.ndarray:
    """Arg-max of the class probabilities ``(N, N, Z, 4)`` interpolated to the native grid; background outside."""
    fg = to_native(probs[..., 1:], plan, crop)
    return np.concatenate([1.0 - fg.sum(-1, keepdims=True), fg], axis=-1).argmax(-1).astype(np.uint8)


def masked_to_native(values, mask, plan, crop) -> np.ndarray:
    """``L[m v] / L[m]`` back on the native grid (``values (N, N, Z, K)``), 0 where ``L[m] = 0``."""
    m = mask.astype(np.float32)
    num = to_native(values * m[..., None], plan, crop)
    den = to_native(m, plan, crop)
    return np.where(den[..., None] > 1e-6, num / np.maximum(den, 1e-6)[..., None], 0.0).astype(np.float32)
