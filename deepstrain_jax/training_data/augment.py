"""In-plane data augmentation: rotation, translation, mirroring and gamma, applied alike to images, labels and
displacement fields (numpy, host side).

A transform acts on the two in-plane array axes (0 and 1) of an ``(H, W, ...)`` array and leaves every trailing
axis (slices, frames, channels) alone. With ``c = ((H - 1) / 2, (W - 1) / 2)`` the grid centre, ``M`` a 2x2
matrix (rotation by ``theta`` after an optional flip of axis 0) and ``s`` a shift in voxels, the forward map of
positions is

    T(x) = c + M (x - c) + s,

and an array ``A`` becomes ``A'(y) = A(T^-1(y))``: the content at ``x`` moves to ``T(x)``.

**Displacement fields.** A backward warp ``V_ED(X) = V_t(X + u(X))`` stays true after the same transform of both
frames when

    u'(Y) = M u(T^-1(Y)),

because ``T^-1(Y + u') = T^-1(Y) + M^-1 u'``. So the in-plane components of ``u`` (components 0 and 1, voxels)
are rotated, and mirrored (the flipped component changes sign), and the through-plane component is kept. This
assumes square in-plane voxels (true on the network grid), where a rotation in voxels is a rotation in mm.

**Sampling.** Images and displacements: bilinear; labels: nearest (``floor(q + 1/2)``, the rule of
:func:`deepstrain_jax.ops.warp.interpolate`). Outside the array the value is a fill (0 for labels and
displacements; the minimum for images), and bilinear weights ramp to it over the last half voxel, i.e.
``scipy.ndimage.map_coordinates(order=1, mode="grid-constant")``. The mask of a displacement field (where it is
known) moves with the rule of :mod:`deepstrain_jax.training_data.subjects`: ``m' = L[m] >= 1 - 1e-6`` with ``L`` the
bilinear resampling, i.e. the positions whose every bilinear neighbour is known, where ``u'`` is the exact
interpolant of known values (a multiple of 90 degrees with an integer shift keeps the mask as it is).

**Intensities.** Per channel (the last axis of an image): rescale to ``[0, 1]`` by its minimum and maximum,
raise to the power ``gamma``, resample (fill 0, the background), then z-score over the channel. With
``gamma = 1`` and the identity transform the output is the z-scored input.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage


class AugmentConfig(NamedTuple):
    """Ranges of the random in-plane transform (:func:`sample_transform`).

    Attributes:
      rotation_deg: the angle is uniform in ``[-rotation_deg, rotation_deg]`` degrees (180: any angle).
      translation_vox: each in-plane shift component is uniform in ``[-translation_vox, translation_vox]`` voxels.
      mirror_prob: probability of flipping axis 0 (with the free rotation this covers flips of either axis).
      gamma: ``(low, high)``: gamma is log-uniform in this range (``(1, 1)`` disables).
      scale: ``(low, high)``: an in-plane zoom factor, log-uniform (``(1, 1)`` disables; > 1 enlarges the
        content). It covers unknown or varying voxel sizes.
      elastic_vox: peak amplitude (voxels) of a smooth random deformation (a 4 x 4 grid of random vectors,
        upsampled with cubic splines) added to the sampling positions; images and labels only (0 disables).

    Appearance (:func:`sample_appearance`, applied by :func:`transform_image` on intensities scaled to [0, 1]
    after the geometric move, before the z-score; every one off by default):

      contrast: ``(low, high)``: ``x -> m + c (x - m)`` about the mean ``m``, ``c`` log-uniform.
      bias_field: peak of a smooth multiplicative field ``exp(b(x))``, ``b`` a random quadratic in the in-plane
        position, ``|b| <= bias_field``.
      blur_sigma_vox: ``(low, high)``: Gaussian blur of that in-plane standard deviation (voxels), uniform.
      lowres_prob, lowres_factor: with that probability, block-average by a factor uniform in ``lowres_factor``
        (coarser acquisition) and interpolate back linearly.
      noise_std: ``(low, high)``: Rician noise of that standard deviation (fraction of the [0, 1] range).
      slice_mix_prob: CarSON only: with that probability the slice is blended with a neighbour slice of the
        stack, weight uniform in [0, 0.5] (partial volume of thicker slices); labels of the slice kept.
      blood_pool_prob, blood_pool_factor: CarSON only: with that probability the blood pool of the slice is
        dimmed (:func:`dim_blood_pool`, slow flow in bright-blood SSFP: the blood of a dilated, poorly
        contracting ventricle can be nearly as dark as myocardium), down to a factor uniform in
        ``blood_pool_factor``; labels kept. ``blood_pool_rv_prob``: the share of those slices whose RV cavity
        is dimmed too.
    """

    rotation_deg: float = 180.0
    translation_vox: float = 10.0
    mirror_prob: float = 0.5
    gamma: tuple = (0.7, 1.5)
    scale: tuple = (1.0, 1.0)
    elastic_vox: float = 0.0
    contrast: tuple = (1.0, 1.0)
    bias_field: float = 0.0
    blur_sigma_vox: tuple = (0.0, 0.0)
    lowres_prob: float = 0.0
    lowres_factor: tuple = (1.0, 2.0)
    noise_std: tuple = (0.0, 0.0)
    slice_mix_prob: float = 0.0
    blood_pool_prob: float = 0.0
    blood_pool_factor: tuple = (0.3, 0.8)
    blood_pool_rv_prob: float = 0.5

    @property
    def has_appearance(self) -> bool:
        return (tuple(self.contrast) != (1.0, 1.0) or self.bias_field > 0 or max(self.blur_sigma_vox) > 0
                or self.lowres_prob > 0 or max(self.noise_std) > 0)


class Appearance(NamedTuple):
    """Sampled appearance changes (:class:`AugmentConfig`); :func:`apply_appearance` applies them."""

    contrast: float = 1.0
    bias: tuple = (0.0,) * 6        # coefficients of 1, y0, y1, y0^2, y0 y1, y1^2 (y in [-1, 1])
    blur_sigma_vox: float = 0.0
    lowres_factor: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0


class InPlaneTransform(NamedTuple):
    """``T(x) = c + M (x - c) + s`` on the in-plane axes, plus an intensity ``gamma`` (module docstring).

    Attributes:
      matrix: ``(2, 2)`` float64 ``M`` (a rotation, or a rotation times a flip, times a zoom ``s``).
      shift_vox: ``(2,)`` float64 ``s`` in voxels.
      gamma: intensity exponent (> 0).
      warp: ``(4, 4, 2)`` control vectors (voxels) of a smooth deformation added to the sampling positions, or
        ``None``.
      appearance: :class:`Appearance` changes of the intensities, or ``None``.
    """

    matrix: np.ndarray
    shift_vox: np.ndarray
    gamma: float
    warp: np.ndarray | None = None
    appearance: Appearance | None = None


def make_transform(angle_deg: float = 0.0, shift_vox=(0.0, 0.0), mirror: bool = False,
                   gamma: float = 1.0, scale: float = 1.0) -> InPlaneTransform:
    """``M = R(theta) F`` with ``F = diag(-1, 1)`` when ``mirror`` (flip axis 0) and
    ``R(theta) = [[cos, -sin], [sin, cos]]`` (from axis 0 towards axis 1).

    Entries within 1e-12 of an integer are snapped to it, so multiples of 90 degrees map the grid onto itself
    exactly.
    """
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be positive, got {gamma}")
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    m = r @ np.diag([-1.0 if mirror else 1.0, 1.0])
    m = np.where(np.abs(m - np.round(m)) < 1e-12, np.round(m), m) * float(scale)
    shift = np.asarray(shift_vox, np.float64)
    if shift.shape != (2,) or not np.all(np.isfinite(shift)):
        raise ValueError(f"shift_vox must be 2 finite numbers, got {shift_vox}")
    return InPlaneTransform(m, shift, float(gamma))


def identity_transform() -> InPlaneTransform:
    return make_transform()


def sample_transform(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> InPlaneTransform:
    """Draw a transform from ``cfg`` with ``rng``: always five uniforms (angle, two shifts, mirror, gamma), so the
    stream advances alike whatever the settings."""
    lo, hi = (float(g) for g in cfg.gamma)
    if not (0 < lo <= hi):
        raise ValueError(f"gamma range must be 0 < low <= high, got {cfg.gamma}")
    u = rng.uniform(size=5)
    angle = (2 * u[0] - 1) * cfg.rotation_deg
    shift = (2 * u[1:3] - 1) * cfg.translation_vox
    mirror = bool(u[3] < cfg.mirror_prob)
    gamma = math.exp(math.log(lo) + u[4] * (math.log(hi) - math.log(lo)))
    # The draws below happen only when their augmentation is on, so older settings keep their streams.
    scale = _log_uniform(rng, cfg.scale, "scale") if tuple(cfg.scale) != (1.0, 1.0) else 1.0
    t = make_transform(angle, shift, mirror, gamma, scale)
    if cfg.elastic_vox > 0:
        t = t._replace(warp=rng.uniform(-cfg.elastic_vox, cfg.elastic_vox, size=(4, 4, 2)))
    if cfg.has_appearance:
        t = t._replace(appearance=sample_appearance(rng, cfg))
    return t


def _log_uniform(rng, bounds, name: str) -> float:
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo <= hi):
        raise ValueError(f"{name} range must be 0 < low <= high, got {bounds}")
    return math.exp(math.log(lo) + rng.uniform() * (math.log(hi) - math.log(lo)))


def sample_appearance(rng: np.random.Generator, cfg: AugmentConfig) -> Appearance:
    """Draw :class:`Appearance` changes from the ranges of ``cfg``."""
    contrast = _log_uniform(rng, cfg.contrast, "contrast")
    bias = tuple(rng.uniform(-1, 1, size=6) * cfg.bias_field / 3.0)  # |b| <= sum |coef| <= 2 bias_field
    blur = float(rng.uniform(*cfg.blur_sigma_vox))
    low = float(rng.uniform(*cfg.lowres_factor)) if rng.uniform() < cfg.lowres_prob else 1.0
    noise = float(rng.uniform(*cfg.noise_std))
    return Appearance(contrast, bias, blur, low, noise, int(rng.integers(2 ** 31)))


def apply_appearance(x01, app: Appearance) -> np.ndarray:
    """Apply :class:`Appearance` changes to an ``(H, W, ...)`` image scaled to [0, 1] (in-plane axes 0, 1)."""
    x = np.asarray(x01, np.float32)
    h, w = x.shape[:2]
    extra = (1,) * (x.ndim - 2)
    if app.contrast != 1.0:
        m = x.mean()
        x = m + np.float32(app.contrast) * (x - m)
    if any(app.bias):
        y0 = np.linspace(-1, 1, h)[:, None]
        y1 = np.linspace(-1, 1, w)[None, :]
        c = app.bias
        b = c[0] + c[1] * y0 + c[2] * y1 + c[3] * y0 ** 2 + c[4] * y0 * y1 + c[5] * y1 ** 2
        x = x * np.exp(b).astype(np.float32).reshape((h, w) + extra)
    if app.lowres_factor > 1.0:
        zoom = [1.0 / app.lowres_factor] * 2 + [1.0] * (x.ndim - 2)
        small = ndimage.zoom(ndimage.uniform_filter(x, [app.lowres_factor] * 2 + [1] * (x.ndim - 2)), zoom,
                             order=1, grid_mode=True, mode="nearest")
        x = ndimage.zoom(small, [h / small.shape[0], w / small.shape[1]] + [1.0] * (x.ndim - 2), order=1,
                         grid_mode=True, mode="nearest")
    if app.blur_sigma_vox > 0:
        x = ndimage.gaussian_filter(x, [app.blur_sigma_vox] * 2 + [0.0] * (x.ndim - 2))
    if app.noise_std > 0:
        rng = np.random.default_rng(app.noise_seed)
        n1 = rng.normal(0.0, app.noise_std, x.shape).astype(np.float32)
        n2 = rng.normal(0.0, app.noise_std, x.shape).astype(np.float32)
        x = np.sqrt((x + n1) ** 2 + n2 ** 2)  # Rician: the magnitude of complex Gaussian noise
    return np.asarray(x, np.float32)


def dim_blood_pool(image, labels, rng: np.random.Generator, factor_range=(0.3, 0.8),
                   rv_prob: float = 0.5, edge_sigma_vox: float = 1.0) -> np.ndarray:
    """Slow-flow look: intensities of the LV cavity (label 3; the RV cavity, label 1, too with probability
    ``rv_prob``) of one slice scaled by ``1 - (1 - f) w(x)``, the rest of the image unchanged.

    ``f`` is uniform in ``factor_range`` (the deepest dimming). ``w = p * r`` inside the pool, 0 outside: ``p``
    the pool mask blurred by ``edge_sigma_vox`` (no hard step at the wall), ``r = 1 - s (1 + d) / 2`` a linear
    ramp across the pool (``d`` in [-1, 1] the position along a random direction, ``s`` uniform in [0, 1]):
    stagnant blood is darkest on one side (apex, free wall), ``s = 0`` dims the pool evenly.

    Args:
      image: ``(H, W)`` or ``(H, W, C)`` magnitudes (not yet normalised); labels: ``(H, W)``.
    Returns:
      the dimmed image, float32, the shape of ``image`` (a copy; a slice without blood pool comes back as is).
    """
    x = np.array(image, np.float32, copy=True)
    labels = np.asarray(labels)
    if labels.shape != x.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {x.shape} differ in-plane")
    lo, hi = (float(v) for v in factor_range)
    if not (0 <= lo <= hi <= 1):
        raise ValueError(f"blood_pool_factor must be 0 <= low <= high <= 1, got {factor_range}")
    classes = [3, 1] if rng.uniform() < rv_prob else [3]
    f = rng.uniform(lo, hi)
    a = rng.uniform(0.0, 2 * math.pi)
    s = rng.uniform()
    pool = np.isin(labels, classes)
    if not pool.any():
        return x
    ii, jj = np.nonzero(pool)
    proj = math.cos(a) * ii + math.sin(a) * jj
    span = max(float(proj.max() - proj.min()), 1e-6)
    d = 2 * (proj - proj.min()) / span - 1
    w = np.zeros(labels.shape, np.float32)
    p = ndimage.gaussian_filter(pool.astype(np.float32), edge_sigma_vox) if edge_sigma_vox > 0 else pool
    w[ii, jj] = p[ii, jj] * (1 - s * (1 + d) / 2)
    scale = 1 - np.float32(1 - f) * w
    return x * (scale if x.ndim == 2 else scale.reshape(scale.shape + (1,) * (x.ndim - 2)))


def _centre(shape) -> np.ndarray:
    return (np.asarray(shape[:2], np.float64) - 1.0) / 2.0


def transform_points(points, t: InPlaneTransform, shape) -> np.ndarray:
    """Forward map ``T(x) = c + M (x - c) + s`` of ``(..., 2)`` in-plane voxel positions on a grid of ``shape``."""
    c = _centre(shape)
    return c + (np.asarray(points, np.float64) - c) @ t.matrix.T + t.shift_vox


def source_coords(t: InPlaneTransform, shape) -> np.ndarray:
    """``(H, W, 2)`` positions ``T^-1(y) = c + M^T (y - c - s)`` sampled for each output pixel ``y``."""
    c = _centre(shape)
    grid = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), axis=-1)
    # M = s Q with Q orthogonal, so M^-1 = M^T / s^2 (s^2 = |det M|, exactly 1 without zoom); row vectors.
    s2 = abs(float(np.linalg.det(t.matrix)))
    src = c + (grid - c - t.shift_vox) @ (t.matrix if s2 == 1.0 else t.matrix / s2)
    if t.warp is not None:
        w = np.asarray(t.warp, np.float64)
        src = src + _dense_warp(w.tobytes(), w.shape, (int(shape[0]), int(shape[1])))
    return src


@functools.lru_cache(maxsize=16)
def _dense_warp(warp_bytes: bytes, warp_shape: tuple, shape: tuple) -> np.ndarray:
    """The elastic warp's control vectors ``(g, g, 2)`` zoomed (cubic spline, grid mode) to ``(H, W, 2)``.

    Each component is zoomed as a 2D map (a 3D zoom with factor 1 on the component axis gives the same values
    with 4x the taps), and the result is cached: an example's image and labels use the same transform, so the
    second call is free (together ~8x fewer spline evaluations; they were ~85 % of a CarSON batch)."""
    w = np.frombuffer(warp_bytes, np.float64).reshape(warp_shape)
    zoom = (shape[0] / w.shape[0], shape[1] / w.shape[1])
    dense = np.stack([ndimage.zoom(w[..., k], zoom, order=3, grid_mode=True, mode="grid-constant")
                      [:shape[0], :shape[1]] for k in range(w.shape[-1])], axis=-1)
    dense.setflags(write=False)
    return dense


def resample_inplane(array, coords, order: int, fill=0.0) -> np.ndarray:
    """Sample ``array (H, W, ...)`` at in-plane positions ``coords (H', W', 2)``; trailing axes carried along.

    ``order=1``: bilinear with the value ``fill`` outside (``map_coordinates(order=1, mode="grid-constant",
    cval=fill)`` per trailing index); ``order=0``: nearest voxel ``floor(q + 1/2)``, ``fill`` outside.

    Returns:
      ``(H', W', ...)``, the dtype of ``array`` for ``order=0``, float32 for ``order=1``.
    """
    a = np.asarray(array)
    h, w = a.shape[:2]
    rest = a.shape[2:]
    flat = a.reshape(h, w, -1)
    dtype = flat.dtype if order == 0 else np.float32
    padded = np.empty((h + 2, w + 2, flat.shape[2]), dtype)
    padded[...] = np.asarray(fill, dtype)
    padded[1:-1, 1:-1] = flat
    q0, q1 = coords[..., 0], coords[..., 1]
    if order == 0:
        i = np.clip(np.floor(q0 + 0.5), -1, h).astype(np.intp) + 1
        j = np.clip(np.floor(q1 + 0.5), -1, w).astype(np.intp) + 1
        out = padded[i, j]
    elif order == 1:
        q0, q1 = np.clip(q0, -1.0, h), np.clip(q1, -1.0, w)
        f0, f1 = np.clip(np.floor(q0), -1, h - 1), np.clip(np.floor(q1), -1, w - 1)
        a0 = (q0 - f0).astype(np.float32)[..., None]
        a1 = (q1 - f1).astype(np.float32)[..., None]
        i, j = f0.astype(np.intp) + 1, f1.astype(np.intp) + 1
        out = ((1 - a0) * ((1 - a1) * padded[i, j] + a1 * padded[i, j + 1])
               + a0 * ((1 - a1) * padded[i + 1, j] + a1 * padded[i + 1, j + 1]))
    else:
        raise ValueError(f"order must be 0 or 1, got {order}")
    return out.reshape(coords.shape[:2] + rest)


def _per_channel(x: np.ndarray, fn) -> np.ndarray:
    # A full reduction of each strided channel view is far faster in numpy than a reduction over the leading
    # axes of a channels-last array (about 50x for (128, 128, 16, 2)).
    return np.array([fn(x[..., c]) for c in range(x.shape[-1])], np.float32)


def normalise_intensity(image, gamma: float = 1.0, eps: float = 1e-8) -> np.ndarray:
    """Per channel (last axis): ``x01 = (x - min) / (max - min)``, then ``x01 ** gamma`` (in ``[0, 1]``)."""
    x = np.asarray(image, np.float32)
    lo, hi = _per_channel(x, np.min), _per_channel(x, np.max)
    x01 = (x - lo) / np.maximum(hi - lo, eps)
    return x01 if gamma == 1.0 else x01 ** np.float32(gamma)


def zscore_channels(image, eps: float = 1e-8) -> np.ndarray:
    """``(x - mean) / (std + eps)`` per channel (last axis), over every other axis."""
    x = np.asarray(image, np.float32)
    return (x - _per_channel(x, np.mean)) / (_per_channel(x, np.std) + np.float32(eps))


def transform_image(image, t: InPlaneTransform) -> np.ndarray:
    """Gamma, move (appearance changes, if any) and re-z-score an ``(H, W, ..., C)`` image (module docstring,
    "Intensities")."""
    x = normalise_intensity(image, t.gamma)
    x = resample_inplane(x, source_coords(t, x.shape), 1, 0.0)
    if t.appearance is not None:
        x = apply_appearance(x, t.appearance)
    return zscore_channels(x)


def transform_labels(labels, t: InPlaneTransform) -> np.ndarray:
    """Move an ``(H, W, ...)`` label map or mask (nearest, fill 0 / False); values stay in the input's set."""
    labels = np.asarray(labels)
    return resample_inplane(labels, source_coords(t, labels.shape), 0, 0)


def transform_mask(mask, t: InPlaneTransform) -> np.ndarray:
    """Move the ``(H, W, ...)`` bool mask of a displacement field: ``L[m] >= 1 - 1e-6`` (module docstring)."""
    mask = np.asarray(mask)
    return resample_inplane(mask.astype(np.float32), source_coords(t, mask.shape), 1, 0.0) >= 1.0 - 1e-6


def _no_warp(t: InPlaneTransform) -> None:
    if t.warp is not None:
        raise ValueError("an elastic warp (elastic_vox > 0) does not carry displacement fields; turn it off for "
                         "motion training")


def rotate_vectors(u, t: InPlaneTransform) -> np.ndarray:
    """``M`` applied to the in-plane components (0, 1) of the vectors ``u (..., D)``, ``D`` 2 or 3; the rest kept."""
    u = np.array(u, np.float32, copy=True)
    (m00, m01), (m10, m11) = np.asarray(t.matrix, np.float32)
    u0, u1 = u[..., 0].copy(), u[..., 1]
    u[..., 0] = m00 * u0 + m01 * u1
    u[..., 1] = m10 * u0 + m11 * u1
    return u


def transform_displacement(u_vox, t: InPlaneTransform) -> np.ndarray:
    """``u'(Y) = M u(T^-1(Y))`` for ``u_vox (H, W, ..., D)`` in voxels (module docstring); 0 outside."""
    u_vox = np.asarray(u_vox)
    if u_vox.shape[-1] not in (2, 3):
        raise ValueError(f"u_vox must end in 2 or 3 components, got shape {u_vox.shape}")
    _no_warp(t)
    return rotate_vectors(resample_inplane(u_vox, source_coords(t, u_vox.shape), 1, 0.0), t)


def transform_example(t: InPlaneTransform, image=None, labels=None, u_vox=None, mask=None) -> dict:
    """One transform applied to the fields of one example, sharing the sampling positions.

    Equal to :func:`transform_image`, :func:`transform_labels`, :func:`transform_displacement` and
    :func:`transform_mask` on ``image``, ``labels``, ``u_vox`` and ``mask``, but the bilinear fields (image,
    displacement, mask) are resampled in one gather.

    Args:
      t: the transform; image ``(H, W, ..., C)``; labels ``(H, W, ...)`` integers; u_vox ``(H, W, ..., D)``;
        mask ``(H, W, ...)`` bool. Any may be ``None``; all share ``(H, W)``.
    Returns:
      a dict with the transformed fields that were given.
    """
    fields = {"image": image, "labels": labels, "u_vox": u_vox, "mask": mask}
    given = {k: np.asarray(v) for k, v in fields.items() if v is not None}
    if not given:
        return {}
    shape = next(iter(given.values())).shape[:2]
    if any(v.shape[:2] != shape for v in given.values()):
        raise ValueError(f"fields differ in in-plane shape: { {k: v.shape for k, v in given.items()} }")
    if "u_vox" in given and given["u_vox"].shape[-1] not in (2, 3):
        raise ValueError(f"u_vox must end in 2 or 3 components, got shape {given['u_vox'].shape}")
    if "u_vox" in given:
        _no_warp(t)
    coords = source_coords(t, shape)
    out = {}
    if "labels" in given:
        out["labels"] = resample_inplane(given["labels"], coords, 0, 0)
    linear = {"image": lambda v: normalise_intensity(v, t.gamma), "u_vox": lambda v: v,
              "mask": lambda v: v.astype(np.float32)}
    group = [(k, prep(given[k])) for k, prep in linear.items() if k in given]
    if group:
        flat = [v.reshape(shape + (-1,)) for _, v in group]
        moved = resample_inplane(np.concatenate(flat, axis=-1) if len(flat) > 1 else flat[0], coords, 1, 0.0)
        start = 0
        for (k, v), f in zip(group, flat):
            out[k] = moved[..., start:start + f.shape[-1]].reshape(v.shape)
            start += f.shape[-1]
    if "image" in out:
        if t.appearance is not None:
            out["image"] = apply_appearance(out["image"], t.appearance)
        out["image"] = zscore_channels(out["image"])
    if "u_vox" in out:
        out["u_vox"] = rotate_vectors(out["u_vox"], t)
    if "mask" in out:
        out["mask"] = out["mask"] >= 1.0 - 1e-6
    return out
