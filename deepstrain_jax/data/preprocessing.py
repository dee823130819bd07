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
