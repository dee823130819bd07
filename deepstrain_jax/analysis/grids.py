"""Pure steps of the analysis between the network grid and the native grid (numpy/scipy, no networks).

* :func:`detect_slice_order`: base -> apex or apex -> base from an ED label map.
* :func:`keep_heart_component`: labelled islands away from the heart removed.
* :func:`grid_affine`: the voxel-to-world matrix of the network grid (resampled, cropped, maybe z-flipped).
* :func:`to_native`, :func:`labels_to_native`, :func:`native_point_stencil`: network-grid arrays back on the
  native grid (linear interpolation; arg-max of interpolated class probabilities; the interpolation's corners
  and weights at chosen native voxels).
* :class:`NativeMaps`: the displacement and strain maps on the native grid one frame at a time, so that the
  writers never hold a whole ``(X, Y, Z, T, 3)`` array (memory grows with the image, not with frames x image).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def to_native(volume, plan: pp.Resampling, crop: pp.Crop, work_dtype=np.float64) -> np.ndarray:
    """Network-grid ``(N, N, Z, ...)`` -> native ``(X, Y, Z, ...)``: paste into the resampled grid, interpolate.

    Linear interpolation with clamp-to-edge (``map_coordinates(order=1, mode="nearest")``, as
    :func:`deepstrain_jax.data.preprocessing.invert_resampling`) at ``i_out = (i_in - offset) / ratio``. The map
    is separable, so it runs as three 1D interpolations in float64 (no coordinate grid of the native size,
    about 10x faster at large in-plane sizes) in ``work_dtype``; the result has the input's floating type
    (float32 otherwise).
    """
    volume = np.asarray(volume)
    out_dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.dtype(np.float32)
    x = pp.invert_crop(volume, crop).astype(work_dtype)
    for d in range(3):
        n = plan.out_shape[d]
        f, a = _native_axis_sampler(plan, d, np.arange(plan.in_shape[d], dtype=np.float64))
        a = a.astype(work_dtype)
        shape = [1] * x.ndim
        shape[d] = -1
        a = a.reshape(shape)
        x = np.take(x, f, axis=d) * (1.0 - a) + np.take(x, np.minimum(f + 1, n - 1), axis=d) * a
    return x.astype(out_dtype)


def _native_axis_sampler(plan: pp.Resampling, d: int, positions) -> tuple[np.ndarray, np.ndarray]:
    """Along axis ``d``: for native positions ``i``, the resampled-grid index ``f`` (intp) and weight ``a``
    (float64) with ``v(i) = (1 - a) v[f] + a v[min(f + 1, n - 1)]`` at ``q = (i - offset) / ratio``, clamped
    to the edge (weight 0 on the second corner of a size-1 axis)."""
    n = plan.out_shape[d]
    q = (np.asarray(positions, np.float64) - plan.offset[d]) / plan.ratio[d]
    f = np.clip(np.floor(q), 0, max(n - 2, 0))
    a = np.clip(q - f, 0.0, 1.0) if n > 1 else np.zeros_like(q)
    return f.astype(np.intp), a


def labels_to_native(probs, plan, crop) -> np.ndarray:
    """Arg-max of the class probabilities ``(N, N, Z, 4)`` interpolated to the native grid; background outside.

    Interpolated in float32 (probabilities in [0, 1]: the arg-max changes only where two classes are within
    about 1e-7 of each other)."""
    fg = to_native(np.asarray(probs[..., 1:], np.float32), plan, crop, np.float32)
    return np.concatenate([1.0 - fg.sum(-1, keepdims=True), fg], axis=-1).argmax(-1).astype(np.uint8)


def native_point_stencil(points, plan: pp.Resampling, crop: pp.Crop, n_slices: int, reverse: bool = False):
    """The linear stencil of :func:`to_native` at chosen native voxels: network-grid corners and weights.

    ``to_native(v)[p] = sum_k w[p, k] v[corner k of p]`` for a network-grid ``v (N, N, Z, ...)``, with corners
    outside the crop window weighing nothing (:func:`to_native` pastes the window into zeros). With
    ``reverse`` the network grid's z axis is flipped first (``v[:, :, ::-1]``), so the corners index the
    unflipped array.

    Args:
      points: ``(P, 3)`` integer voxels of the slice-last native grid (``plan.in_shape``).
      plan, crop: the network grid's map from that grid; n_slices: ``Z`` of the network grid.
    Returns:
      ``(flat (P, 8) int, w (P, 8) float64)``: C-order flat indices into ``(N, N, Z)`` and weights (0 for
      corners outside the window, whose index is then 0).
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    axes = []
    for d in range(3):
        n = plan.out_shape[d]
        f, a = _native_axis_sampler(plan, d, points[:, d])
        idx = np.stack([f, np.minimum(f + 1, n - 1)], axis=1)           # (P, 2) on the resampled grid
        wt = np.stack([1.0 - a, a], axis=1)
        if d < 2:
            idx = idx - crop.start[d]                                    # -> window coordinates
            ok = (idx >= 0) & (idx < crop.size)
        else:
            idx = (n_slices - 1 - idx) if reverse else idx
            ok = (idx >= 0) & (idx < n_slices)
        axes.append((np.where(ok, idx, 0), np.where(ok, wt, 0.0)))
    (i0, w0), (i1, w1), (i2, w2) = axes
    flat = (i0[:, :, None, None] * crop.size + i1[:, None, :, None]) * n_slices + i2[:, None, None, :]
    w = w0[:, :, None, None] * w1[:, None, :, None] * w2[:, None, None, :]
    return flat.reshape(-1, 8), w.reshape(-1, 8)


class NativeMaps:
    """Displacement and strain of the network grid, mapped to the native grid frame by frame on demand.

    Frames come out in the input file's axis order (``inverse`` undoes the slice-last transposition).

    Args:
      u_mm: ``(T, N, N, Z, 3)`` displacement ED -> t, network-grid axes, mm (slices base -> apex).
      components: ``(T, N, N, Z, 3)`` radial, circumferential, longitudinal strain (mm/mm).
      myo: ``(N, N, Z)`` bool ED myocardium (network grid); myo_native: ``(X, Y, Z)`` bool, slice-last native grid.
      plan, crop, reverse: the network grid's map from the slice-last native grid (``reverse``: z flipped).
      direction: ``(3, 3)`` direction cosines of the slice-last native affine (columns: axes in world).
      inverse: the axis permutation from slice-last to the file's order.
    """

    def __init__(self, u_mm, components, myo, myo_native, plan: pp.Resampling, crop: pp.Crop, reverse: bool,
                 direction, inverse: tuple[int, int, int]):
        self.u_mm, self.components, self.myo, self.myo_native = u_mm, components, myo, myo_native
        self.plan, self.crop, self.reverse = plan, crop, bool(reverse)
        self.direction = np.asarray(direction, np.float32)
        self.inverse = tuple(int(k) for k in inverse)
        self.n_frames = int(u_mm.shape[0])
        self.shape = tuple(int(plan.in_shape[k]) for k in self.inverse)  # native (X, Y, Z) in file order
        self._stencil = None  # _myo_stencil(), made on first use

    def _zflip(self):
        return slice(None, None, -1) if self.reverse else slice(None)

    def displacement_component(self, t: int, c: int) -> np.ndarray:
        """``(X, Y, Z)`` float32 world component ``c`` (mm) of the displacement ED -> frame ``t``."""
        sign = np.array([1.0, 1.0, -1.0 if self.reverse else 1.0], np.float32)
        u = self.u_mm[t][:, :, self._zflip()] * sign          # slice-last native axes, network grid
        world_c = u @ self.direction[c]                        # linear: rotate, then interpolate one field
        return np.transpose(to_native(world_c, self.plan, self.crop), self.inverse).astype(np.float32)

    def displacement_frame(self, t: int) -> np.ndarray:
        """``(X, Y, Z, 3)`` float32 world displacement ED -> frame ``t`` (mm)."""
        return np.stack([self.displacement_component(t, c) for c in range(3)], axis=-1)

    def _myo_stencil(self):
        """``(points, flat, wm, den)``: the native ED-myocardium voxels, their :func:`native_point_stencil`, the
        weights times the network-grid ED myocardium, and their sums (made once, used by every frame)."""
        if self._stencil is None:
            points = np.argwhere(self.myo_native)
            flat, w = native_point_stencil(points, self.plan, self.crop, self.myo.shape[2], self.reverse)
            wm = w * np.asarray(self.myo, np.float64).ravel()[flat]
            self._stencil = (points, flat, wm, wm.sum(axis=1))
        return self._stencil

    def strain_frame(self, t: int) -> np.ndarray:
        """``(X, Y, Z, 3)`` float32 radial, circumferential, longitudinal strain at frame ``t``, within the ED
        myocardium; NaN elsewhere (so that "outside" and "no strain" are not both 0).

        The value at a native ED-myocardium voxel is ``L[m v] / L[m]``, ``L`` the linear interpolation of
        :func:`to_native` and ``m`` the network-grid ED myocardium (the strain interpolated over the myocardium
        only; 0 where ``L[m] = 0``), computed at those voxels alone (:func:`native_point_stencil`)."""
        points, flat, wm, den = self._myo_stencil()
        values = np.asarray(self.components[t], np.float64).reshape(-1, 3)[flat]      # (P, 8, 3)
        num = np.einsum("pk,pkc->pc", wm, values)
        inside = den > 1e-6
        point_values = np.where(inside[:, None], num / np.where(inside, den, 1.0)[:, None], 0.0)
        maps = np.full(self.myo_native.shape + (3,), np.nan, np.float32)
        maps[tuple(points.T)] = point_values
        return np.transpose(maps, self.inverse + (3,))

    def displacement(self) -> np.ndarray:
        """The whole ``(X, Y, Z, T, 3)`` displacement (T frames of :meth:`displacement_frame`; memory heavy)."""
        out = np.empty(self.shape + (self.n_frames, 3), np.float32)
        for t in range(self.n_frames):
            out[..., t, :] = self.displacement_frame(t)
        return out

    def strain(self) -> dict[str, np.ndarray]:
        """``{"radial", "circumferential", "longitudinal"}`` -> the whole ``(X, Y, Z, T)`` strain map."""
        out = np.empty(self.shape + (self.n_frames, 3), np.float32)
        for t in range(self.n_frames):
            out[..., t, :] = self.strain_frame(t)
        return {name: np.ascontiguousarray(out[..., k]) for k, name in
                enumerate(("radial", "circumferential", "longitudinal"))}
