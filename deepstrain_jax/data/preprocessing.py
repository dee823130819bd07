"""Pre-processing between a native cine stack and the networks' grid, and back.

The networks work on a fixed grid: 1.25 mm in-plane, 16 slices spanning the acquired stack, a 128 x 128
crop around the LV. Every step here has an exact inverse (or a documented one), so voxel outputs can be put
back on the native grid and affine.

Resampling follows the original DeepStrain (``dipy.align.reslice``) by default: output voxel ``i`` samples input
coordinate ``i * new_zoom / old_zoom`` (voxel centres 0 aligned, no half-voxel shift), output size
``round(n * old_zoom / new_zoom)`` with the 0.5 tie-break of subtracting 1e-3 from the new zoom, linear
interpolation for images and nearest for labels, clamp-to-edge outside (``mode="nearest"``). For 16 slices
the new slice spacing is ``old_dz * nz / 16``. ``align="centre"`` instead aligns the first and last voxel
edges (``x_in = (i + 1/2) * ratio - 1/2``), which keeps the stack centred; the affine is updated to match.

Shapes: volumes ``(X, Y, Z)`` or cines ``(X, Y, Z, T)``; axes 0, 1 in-plane, 2 the slice axis.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from deepstrain_jax.labels import LV_MYOCARDIUM


class Resampling(NamedTuple):
    """A resampling of the three spatial axes: ``x_in = offset + ratio * i_out`` per axis (voxel units)."""

    in_shape: tuple
    out_shape: tuple
    in_spacing_mm: np.ndarray
    out_spacing_mm: np.ndarray
    ratio: np.ndarray
    offset: np.ndarray

    def out_affine(self, in_affine) -> np.ndarray:
        """The affine of the output grid: ``A_out = A_in @ [[diag(ratio), offset], [0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = np.diag(self.ratio)
        m[:3, 3] = self.offset
        return np.asarray(in_affine, dtype=np.float64) @ m


def plan_resampling(shape: Sequence[int], spacing_mm: Sequence[float], *, inplane_mm: float | None = 1.25,
                    n_slices: int | None = 16, align: str = "corner") -> Resampling:
    """Plan the resampling of a ``(X, Y, Z)`` grid to ``inplane_mm`` in-plane and ``n_slices`` slices.

    ``None`` keeps that axis as it is. ``align="corner"`` reproduces dipy/DeepStrain, ``"centre"`` keeps the
    field of view centred (see the module docstring).
    """
    shape = tuple(int(n) for n in shape[:3])
    old = np.asarray(spacing_mm, dtype=np.float64)[:3]
    if old.shape != (3,) or not np.all(np.isfinite(old)) or np.any(old <= 0):
        raise ValueError(f"spacing_mm must be 3 positive finite numbers, got {spacing_mm}")
    new = old.copy()
    if inplane_mm is not None:
        new[:2] = inplane_mm
    if n_slices is not None:
        new[2] = old[2] * shape[2] / n_slices
    exact = np.asarray(shape) * old / new
    # dipy's tie-break: a size ending in exactly .5 would round to even; shrinking the zoom rounds it up.
    tie = np.isclose(exact - np.floor(exact), 0.5)
    new = np.where(tie, new - 0.001, new)
    out_shape = tuple(int(v) for v in np.round(np.asarray(shape) * old / new))
    if n_slices is not None:
        out_shape = out_shape[:2] + (int(n_slices),)
    ratio = new / old
    if align == "corner":
        offset = np.zeros(3)
    elif align == "centre":
        offset = 0.5 * ratio - 0.5
    else:
        raise ValueError(f"align must be 'corner' or 'centre', got {align!r}")
    return Resampling(shape, out_shape, old, new, ratio, offset)


def _map(volume: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=order, mode="nearest", prefilter=False)


def apply_resampling(volume, plan: Resampling, *, order: int = 1) -> np.ndarray:
    """Resample ``(X, Y, Z)`` or ``(X, Y, Z, T)`` per ``plan`` (order 1 for images, 0 for labels)."""
    volume = np.asarray(volume)
    if volume.shape[:3] != plan.in_shape:
        raise ValueError(f"volume of shape {volume.shape} does not match the planned input {plan.in_shape}")
    axes = [plan.offset[d] + plan.ratio[d] * np.arange(plan.out_shape[d]) for d in range(3)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    if volume.ndim == 3:
        return _map(volume, coords, order)
    return np.stack([_map(volume[..., t], coords, order) for t in range(volume.shape[3])], axis=-1)


def invert_resampling(volume, plan: Resampling, *, order: int = 0) -> np.ndarray:
    """Map a volume on the planned output grid back to the input grid: ``i_out = (x_in - offset) / ratio``."""
    volume = np.asarray(volume)
    if volume.shape[:3] != plan.out_shape:
        raise ValueError(f"volume of shape {volume.shape} does not match the planned output {plan.out_shape}")
    axes = [(np.arange(plan.in_shape[d]) - plan.offset[d]) / plan.ratio[d] for d in range(3)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    rest = volume.shape[3:]
    flat = volume.reshape(volume.shape[:3] + (-1,))
    out = np.stack([_map(flat[..., k], coords, order) for k in range(flat.shape[-1])], axis=-1)
    return out.reshape(plan.in_shape + rest)


class Crop(NamedTuple):
    """An in-plane window ``[start, start + size)`` on axes 0 and 1 of a grid of ``full_shape`` (may overhang)."""

    start: tuple
    size: int
    full_shape: tuple


def plan_crop(full_shape: Sequence[int], centre_vox: Sequence[float], size: int = 128) -> Crop:
    """A ``size x size`` window centred on ``centre_vox`` (axes 0, 1); it may extend past the field of view."""
    start = tuple(int(np.floor(c + 0.5)) - size // 2 for c in centre_vox[:2])
    return Crop(start, int(size), tuple(int(n) for n in full_shape[:2]))


def _overlap(crop: Crop) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The in-plane slices where the window and the grid overlap: ``(on the full grid, in the window)``."""
    full, window = [], []
    for d in range(2):
        lo, hi = max(crop.start[d], 0), min(crop.start[d] + crop.size, crop.full_shape[d])
        hi = max(hi, lo)
        full.append(slice(lo, hi))
        window.append(slice(lo - crop.start[d], hi - crop.start[d]))
    return tuple(full), tuple(window)


def apply_crop(volume, crop: Crop, *, fill: float = 0.0) -> np.ndarray:
    """Cut the window out of ``volume`` (in-plane axes first), padding with ``fill`` where it overhangs."""
    volume = np.asarray(volume)
    if tuple(volume.shape[:2]) != crop.full_shape:
        raise ValueError(f"volume of shape {volume.shape} does not match the crop's grid {crop.full_shape}")
    out = np.full((crop.size, crop.size) + volume.shape[2:], fill, dtype=volume.dtype)
    full, window = _overlap(crop)
    out[window] = volume[full]
    return out


def invert_crop(cropped, crop: Crop, *, fill: float = 0.0) -> np.ndarray:
    """Paste a cropped array back into a ``fill``-valued array on the full grid (the overhang is dropped)."""
    cropped = np.asarray(cropped)
    out = np.full(crop.full_shape + cropped.shape[2:], fill, dtype=cropped.dtype)
    full, window = _overlap(crop)
    out[full] = cropped[window]
    return out


def zscore(x, axes=None, eps: float = 1e-8) -> np.ndarray:
    """``(x - mean) / (std + eps)`` over ``axes`` (all by default), the original's normalisation."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    return (x - mean) / (std + eps)


# ---- The network window of a stack: what the analysis and the training subjects both cut out. ----


def myocardium_centroid(labels) -> np.ndarray | None:
    """In-plane centre of mass ``c_d = mean_{v: L(v) = 2} v_d`` (d = 0, 1) of a ``(X, Y[, Z])`` label map.

    The numpy twin of :func:`deepstrain_jax.models.vcn.myocardium_center_vox` (float64); ``None`` when no voxel
    is labelled myocardium.
    """
    idx = np.nonzero(np.asarray(labels) == LV_MYOCARDIUM)
    if idx[0].size == 0:
        return None
    return np.array([idx[0].mean(), idx[1].mean()], dtype=np.float64)


def block_mean_zscore(canvas, factor: int = 2) -> np.ndarray:
    """``y[i, j, z] = mean_{p, q < f} x[f i + p, f j + q, z]``, then each slice z-scored over its pixels.

    The block mean is :func:`deepstrain_jax.models.vcn.downsample_mean` (numpy, slices on the last axis).

    Args:
      canvas: ``(H, W, Z)`` with ``H`` and ``W`` divisible by ``factor``.
    Returns:
      ``(H / f, W / f, Z)`` float32.
    """
    x = np.asarray(canvas, np.float32)
    h, w = x.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"in-plane shape {(h, w)} must be divisible by the factor {factor}")
    y = x.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))
    return zscore(y, axes=(0, 1))


def make_vcn_input(volume, canvas: int = 256, factor: int = 2) -> tuple[np.ndarray, Crop]:
    """The VCN's view of a resampled stack: canvas at the FOV centre, block mean, per-slice z-score.

    ``x_c = crop(volume, canvas, centre = ((X - 1) / 2, (Y - 1) / 2))`` (zero padding), then
    :func:`block_mean_zscore`. Heat-map pixel ``i`` covers canvas voxels ``f i ... f i + f - 1``, i.e. the
    resampled-grid voxel ``crop.start + f i + (f - 1) / 2`` at its centre
    (:func:`deepstrain_jax.models.vcn.from_heatmap_coords`).
    :func:`deepstrain_jax.training_data.subjects.make_subject` builds the same view.

    Args:
      volume: ``(X, Y, Z)`` raw intensities on the network grid (``inplane_mm``), uncropped.
      canvas: canvas size on the network grid; factor: block size ``f``.
    Returns:
      ``((M, M, Z) float32, crop)`` with ``M = canvas / f``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z), got shape {volume.shape}")
    if canvas % factor:
        raise ValueError(f"canvas {canvas} must be divisible by factor {factor}")
    crop = plan_crop(volume.shape, ((volume.shape[0] - 1) / 2, (volume.shape[1] - 1) / 2), canvas)
    return block_mean_zscore(apply_crop(volume, crop), factor), crop


def _axis_sampler(q: np.ndarray, n: int, order: int):
    """Indices and weights of 1D clamp-to-edge sampling at ``q`` on ``n`` samples (``map_coordinates`` rules)."""
    if order == 0:
        return np.clip(np.floor(q + 0.5), 0, n - 1).astype(np.intp), None
    f = np.clip(np.floor(q), 0, max(n - 2, 0))
    a = np.clip(q - f, 0.0, 1.0) if n > 1 else np.zeros_like(q)
    return f.astype(np.intp), a.astype(np.float32)


def resample_window(volume, plan: Resampling, crop: Crop | None, order: int) -> np.ndarray:
    """``apply_crop(apply_resampling(volume, plan, order), crop)`` computed on the window only, axis by axis.

    Order-1 (and order-0) resampling with clamp-to-edge is a tensor product of 1D interpolations, so the
    three axes are resampled one after the other, and only the output rows the crop keeps are computed (rows
    of the window outside the resampled grid are 0). ``crop=None`` keeps the whole resampled grid.

    Args:
      volume: ``(X, Y, Z, ...)`` on ``plan.in_shape``; trailing axes are carried along.
      plan, crop: :func:`plan_resampling`, :func:`plan_crop`.
      order: 1 (linear, float32 out) or 0 (nearest, dtype kept).
    Returns:
      ``(N, N, Z_out, ...)`` (or ``plan.out_shape + ...`` without a crop).
    """
    x = np.asarray(volume)
    if x.shape[:3] != plan.in_shape:
        raise ValueError(f"volume of shape {x.shape} does not match the planned input {plan.in_shape}")
    if order == 1 and not (np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize <= 2):
        x = x.astype(np.float32, copy=False)
    # Integers of <= 16 bits are exact in float32 and promote to it at the first interpolation: no full-size
    # float copy of a large cine (the same numbers as converting first).
    valid = []
    for d in range(3):
        if d < 2 and crop is not None:
            r = crop.start[d] + np.arange(crop.size)
        else:
            r = np.arange(plan.out_shape[d])
        ok = (r >= 0) & (r < plan.out_shape[d])
        idx, a = _axis_sampler(plan.offset[d] + plan.ratio[d] * np.clip(r, 0, plan.out_shape[d] - 1),
                               plan.in_shape[d], order)
        if a is None:
            x = np.take(x, idx, axis=d)
        else:
            shape = [1] * x.ndim
            shape[d] = -1
            a = a.reshape(shape)
            x = np.take(x, idx, axis=d) * (1 - a) + np.take(x, np.minimum(idx + 1, plan.in_shape[d] - 1), axis=d) * a
        valid.append(ok)
    if not (valid[0].all() and valid[1].all()):
        x = np.where((valid[0][:, None] & valid[1][None, :]).reshape(x.shape[:2] + (1,) * (x.ndim - 2)), x,
                     np.zeros((), x.dtype))
    return x


def resample_displacement(u_mm, u_mask, plan: Resampling, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
    """Normalised linear resampling of a displacement ``u_mm (T, X, Y, Z, 3)`` known on ``u_mask`` onto the
    network window: ``u = L[m u] / L[m]`` (``L`` the order-1 :func:`resample_window`, ``m`` the mask), in voxels of
    the output grid; returns ``(u_vox (T, N, N, Z, 3), mask)`` with the mask where every neighbour is known."""
    m = np.asarray(u_mask, dtype=np.float32)
    mu = np.moveaxis(u_mm.astype(np.float32) * m[None, ..., None], 0, 3)  # (X, Y, Z, T, 3)
    num = resample_window(mu, plan, crop, 1)
    den = resample_window(m, plan, crop, 1)
    known = den > 0
    u = np.where(known[..., None, None], num / np.where(known, den, 1.0)[..., None, None], 0.0)
    u = u / plan.out_spacing_mm.astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(u, 3, 0), dtype=np.float32), den >= 1.0 - 1e-6
