"""Seeded batch samplers for CarSON, VCN and CarMEN: the batch of step ``k`` is a function of ``(seed, k)`` only.

Each sampler takes a pool (:mod:`deepstrain_jax.training_data.pools`: ``len(pool)``, ``pool[i] -> Subject``), a seed, the
step and the batch size, and returns a dict of numpy host arrays of fixed shapes and dtypes. Nothing depends on
earlier calls, so a run resumed at step ``k`` replays exactly the batches of an uninterrupted run (bit for bit, as
long as the pool gives the same subjects).

Randomness: example ``b`` of step ``k`` draws from ``SeedSequence([sampler, seed, k]).spawn(B)[b]`` (a
different ``sampler`` constant per sampler, so the three samplers are not correlated). Subjects are drawn
without replacement within an epoch: global example ``n = k B + b`` takes subject ``P_e[n mod S]`` of the
permutation ``P_e`` of epoch ``e = n // S`` (``S`` subjects, ``P_e`` seeded by ``(seed, e)``); pools with more
than ``2**22`` subjects draw with replacement instead (a permutation of that many would cost more than it gives).

Shapes (``N`` the crop, ``Z`` the slices, ``M`` the VCN size, see :class:`deepstrain_jax.training_data.subjects.Subject`):

* :func:`carson_batch`: ``inputs (B, N, N, 1)`` float32 (each image z-scored), ``labels (B, N, N)`` int32.
* :func:`vcn_batch`: ``inputs (B, M, M, 1)`` float32 (z-scored), ``targets (B, M, M, 1)`` float32 Gaussian
  heat-maps (:func:`deepstrain_jax.models.vcn.gaussian_heatmap`), ``centre (B, 2)`` their centres in pixels.
* :func:`carmen_batch`: ``inputs (B, N, N, Z, 2)`` ``[ED, t]`` on channels, each channel z-scored,
  ``labels_ed``/``labels_t (B, N, N, Z)`` int32, ``labelled (B,)`` bool (both label maps known), ``u_vox
  (B, N, N, Z, 3)`` float32 and ``u_mask (B, N, N, Z)`` bool when the pool has motion truth, ``spacing_mm
  (B, 3)`` float32.

Every sampler also returns ``subject (B,)`` and ``frame (B,)`` int32 (CarSON and VCN also ``slice``) for
bookkeeping. Augmentation (:mod:`deepstrain_jax.training_data.augment`) is one in-plane transform per example, shared by
every channel, frame and field of the example; ``augment=None`` turns it off (the intensities are still
z-scored as the networks expect).
"""

from __future__ import annotations

import functools

import numpy as np

from deepstrain_jax.models import vcn
from deepstrain_jax.training_data import augment as aug
from deepstrain_jax.training_data import subjects

_SAMPLER = {"carson": 1, "vcn": 2, "carmen": 3}
_MAX_PERMUTED = 2 ** 22
VCN_AUGMENT = aug.AugmentConfig(translation_vox=16.0)  # 40 mm at 2.5 mm: the LV is anywhere in the FOV


def _check(pool, seed, step, batch_size) -> None:
    for name, v, low in (("seed", seed, 0), ("step", step, 0), ("batch_size", batch_size, 1)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    if len(pool) < 1:
        raise ValueError("the pool is empty")


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([0, seed, epoch]).permutation(n)


def subject_indices(n_subjects: int, seed: int, step: int, batch_size: int) -> np.ndarray:
    """The ``(B,)`` subject indices of step ``step`` (module docstring: epochs of seeded permutations)."""
    n = step * batch_size + np.arange(batch_size)
    if n_subjects > _MAX_PERMUTED:
        return np.random.default_rng([0, seed, step, batch_size]).integers(n_subjects, size=batch_size)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(n // n_subjects):
        sel = n // n_subjects == e
        out[sel] = _permutation(n_subjects, seed, int(e))[n[sel] % n_subjects]
    return out


def example_rngs(sampler: str, seed: int, step: int, batch_size: int) -> list[np.random.Generator]:
    """One independent generator per example of step ``step``: ``SeedSequence([sampler, seed, step]).spawn(B)``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([_SAMPLER[sampler], seed, step])
            .spawn(batch_size)]


def _transform(rng, augment):
    return aug.sample_transform(rng, augment) if augment is not None else aug.identity_transform()


def carson_batch(pool, seed: int, step: int, batch_size: int, *, augment: aug.AugmentConfig | None =
                 aug.AugmentConfig(), heart_only: bool = False, crop: int | None = None) -> dict:
    """2D slices of labelled frames for CarSON.

    ``crop``: keep the central ``crop x crop`` of each (transformed) example -- a cheaper training view of the
    heart for the fully convolutional network (the translation augmentation moves the heart within it).

    Each example: a subject (epoch permutation), a labelled frame (uniform), a slice (uniform; with
    ``heart_only`` among the slices with any label > 0, when there are some), one in-plane transform, then the
    image is z-scored over its ``N x N`` pixels (the original's per-image normalisation).

    Returns:
      ``{"inputs": (B, N, N, 1) float32, "labels": (B, N, N) int32, "subject", "frame", "slice": (B,) int32}``.
    """
    _check(pool, seed, step, batch_size)
    idx = subject_indices(len(pool), seed, step, batch_size)
    rngs = example_rngs("carson", seed, step, batch_size)
    inputs, labels, frames, slices = [], [], [], []
    for i, rng in zip(idx, rngs):
        s = pool[int(i)]
        known = np.flatnonzero(s.labelled)
        if known.size == 0:
            raise ValueError(f"{s.name}: no labelled frame to train CarSON on")
        t = int(known[rng.integers(known.size)])
        candidates = np.arange(s.labels.shape[3])
        if heart_only:
            heart = np.flatnonzero(s.labels[t].any(axis=(0, 1)))
            candidates = heart if heart.size else candidates
        z = int(candidates[rng.integers(candidates.size)])
        tr = _transform(rng, augment)
        image = s.image[t, :, :, z, None]
        if augment is not None and augment.slice_mix_prob > 0 and rng.uniform() < augment.slice_mix_prob:
            # Partial volume of a thicker slice: blend with a neighbour (labels of slice z kept).
            zn = int(np.clip(z + (1 if rng.uniform() < 0.5 else -1), 0, s.image.shape[3] - 1))
            wn = np.float32(rng.uniform(0.0, 0.5))
            image = (1 - wn) * image + wn * s.image[t, :, :, zn, None]
        if augment is not None and augment.blood_pool_prob > 0 and rng.uniform() < augment.blood_pool_prob:
            image = aug.dim_blood_pool(image, s.labels[t, :, :, z], rng, augment.blood_pool_factor,
                                       rv_prob=augment.blood_pool_rv_prob)
        inputs.append(aug.transform_image(image, tr))
        labels.append(aug.transform_labels(s.labels[t, :, :, z], tr))
        frames.append(t)
        slices.append(z)
    inputs, labels = np.stack(inputs), np.stack(labels)
    if crop is not None and crop < inputs.shape[1]:
        a, b = (inputs.shape[1] - crop) // 2, (inputs.shape[2] - crop) // 2
        # z-scored again over the window, as at inference (each image z-scored over what the network sees)
        inputs = np.stack([aug.zscore_channels(x) for x in inputs[:, a:a + crop, b:b + crop]])
        labels = labels[:, a:a + crop, b:b + crop]
    return {"inputs": inputs.astype(np.float32), "labels": labels.astype(np.int32),
            "subject": idx.astype(np.int32), "frame": np.asarray(frames, np.int32),
            "slice": np.asarray(slices, np.int32)}


def vcn_batch(pool, seed: int, step: int, batch_size: int, *, augment: aug.AugmentConfig | None = VCN_AUGMENT,
              sigma_vox: float | None = None) -> dict:
    """2D slices of the full field of view on the VCN grid, with Gaussian heat-map targets.

    Each example: a subject, ED or ES (uniform among those with myocardium labels), any slice (slices without
    myocardium get the stack's target too, as :mod:`deepstrain_jax.models.vcn` trains them), one in-plane
    transform. The target is ``gaussian_heatmap(T(c), (M, M), sigma_vox)`` with ``c`` the stack's myocardium
    centre of mass in VCN pixels and ``T`` the example's transform, so it moves with the image.

    Args:
      sigma_vox: heat-map standard deviation in VCN pixels (default ``vcn.SIGMA_VOX``).
    Returns:
      ``{"inputs": (B, M, M, 1) float32, "targets": (B, M, M, 1) float32, "centre": (B, 2) float32,
      "subject", "frame", "slice": (B,) int32}``.
    """
    _check(pool, seed, step, batch_size)
    sigma_vox = vcn.SIGMA_VOX if sigma_vox is None else float(sigma_vox)
    idx = subject_indices(len(pool), seed, step, batch_size)
    rngs = example_rngs("vcn", seed, step, batch_size)
    inputs, centres, frames, slices = [], [], [], []
    for i, rng in zip(idx, rngs):
        s = pool[int(i)]
        known = np.flatnonzero(np.all(np.isfinite(s.vcn_centre), axis=1))
        if known.size == 0:
            raise ValueError(f"{s.name}: neither ED nor ES has myocardium labels for a VCN target")
        f = int(known[rng.integers(known.size)])
        z = int(rng.integers(s.vcn_image.shape[3]))
        tr = _transform(rng, augment)
        inputs.append(aug.transform_image(s.vcn_image[f, :, :, z, None], tr))
        centres.append(aug.transform_points(s.vcn_centre[f], tr, s.vcn_image.shape[1:3]))
        frames.append((s.ed, s.es)[f])
        slices.append(z)
    inputs = np.stack(inputs).astype(np.float32)
    centres = np.stack(centres).astype(np.float32)
    targets = np.asarray(vcn.gaussian_heatmap(centres, inputs.shape[1:3], sigma_vox), np.float32)[..., None]
    return {"inputs": inputs, "targets": targets, "centre": centres, "subject": idx.astype(np.int32),
            "frame": np.asarray(frames, np.int32), "slice": np.asarray(slices, np.int32)}


def carmen_batch(pool, seed: int, step: int, batch_size: int, *, augment: aug.AugmentConfig | None =
                 aug.AugmentConfig(), identity_prob: float = 0.1, frames: str = "all",
                 reverse_prob: float = 0.0, reverse_truth: bool = False) -> dict:
    """``[ED, t]`` pairs on the network grid for CarMEN, with labels and (phantoms) displacement truth.

    Each example: a subject; ``t = ED`` with probability ``identity_prob`` (the identity pair, ``u = 0``),
    otherwise ``t`` uniform over the other frames (``frames="all"``) or over the other labelled frames
    (``frames="labelled"``, falling back to all when there are none); one in-plane transform for both frames,
    both label maps, ``u_vox`` (vectors rotated, :func:`deepstrain_jax.training_data.augment.transform_displacement`) and
    ``u_mask`` (:func:`deepstrain_jax.training_data.augment.transform_mask`: where every bilinear neighbour is known);
    each image channel z-scored. For the identity pair ``u_vox`` is exactly 0.

    ``reverse_prob``: with this probability a non-identity pair is given the other way round, ``[t, ED]`` (the
    network learns the inverse motion t -> ED as well). Its truth is the inverse field on the frame-t grid: with
    ``reverse_truth`` it is computed from the subject's ``u_vox``
    (:func:`~deepstrain_jax.training_data.subjects.inverse_displacement`, masked where it is known), so phantoms
    supervise the inverse motion too, through-plane included; without it (the default, the batches of ``carmen-acdc-v2``'s training) a reversed pair's ``u_mask``
    is all False and it trains by the unsupervised terms only. The draw is made only when ``reverse_prob > 0``, so
    ``reverse_prob = 0`` gives the batches of before.

    Returns:
      ``{"inputs": (B, N, N, Z, 2) float32, "labels_ed", "labels_t": (B, N, N, Z) int32, "labelled": (B,) bool,
      "u_vox": (B, N, N, Z, 3) float32, "u_mask": (B, N, N, Z) bool (only when ``pool.has_motion_truth``; zeros
      and False for subjects without truth), "spacing_mm": (B, 3) float32, "subject", "frame": (B,) int32}``
      and ``"reversed": (B,) bool`` (bookkeeping: the pair is ``[t, ED]``).
    """
    _check(pool, seed, step, batch_size)
    if not 0.0 <= identity_prob <= 1.0:
        raise ValueError(f"identity_prob must be in [0, 1], got {identity_prob}")
    if frames not in ("all", "labelled"):
        raise ValueError(f"frames must be 'all' or 'labelled', got {frames!r}")
    if not 0.0 <= reverse_prob <= 1.0:
        raise ValueError(f"reverse_prob must be in [0, 1], got {reverse_prob}")
    with_u = bool(getattr(pool, "has_motion_truth", False))
    idx = subject_indices(len(pool), seed, step, batch_size)
    rngs = example_rngs("carmen", seed, step, batch_size)
    batch, frames_t, reversed_ = None, [], []
    for b, (i, rng) in enumerate(zip(idx, rngs)):
        s = pool[int(i)]
        ed = s.ed
        others = np.flatnonzero(np.arange(s.n_frames) != ed)
        if frames == "labelled" and np.any(s.labelled[others]):
            others = others[s.labelled[others]]
        identity = rng.uniform() < identity_prob or others.size == 0
        t = ed if identity else int(others[rng.integers(others.size)])
        reverse = reverse_prob > 0 and not identity and rng.uniform() < reverse_prob
        tr = _transform(rng, augment)
        first, second = (t, ed) if reverse else (ed, t)
        fields = {"image": np.stack([s.image[first], s.image[second]], axis=-1),
                  "labels": np.stack([s.labels[first], s.labels[second]], axis=-1)}
        if with_u and s.u_vox is not None and not reverse:
            fields["u_vox"] = np.zeros_like(s.u_vox[ed]) if t == ed else s.u_vox[t]
            fields["mask"] = s.u_mask
        elif with_u and s.u_vox is not None and reverse_truth:
            fields["u_vox"], fields["mask"] = subjects.inverse_displacement(s.u_vox[t], s.u_mask)
        moved = aug.transform_example(tr, **fields)
        if batch is None:  # shapes from the first example; later ones must match (np assignment checks)
            n = (batch_size,) + s.image.shape[1:]
            batch = {"inputs": np.empty(n + (2,), np.float32), "labels_ed": np.empty(n, np.int32),
                     "labels_t": np.empty(n, np.int32), "labelled": np.empty(batch_size, bool),
                     "spacing_mm": np.empty((batch_size, 3), np.float32)}
            if with_u:
                batch["u_vox"] = np.empty(n + (3,), np.float32)
                batch["u_mask"] = np.empty(n, bool)
        batch["inputs"][b] = moved["image"]
        batch["labels_ed"][b] = moved["labels"][..., 0]
        batch["labels_t"][b] = moved["labels"][..., 1]
        batch["labelled"][b] = bool(s.labelled[ed] and s.labelled[t])
        batch["spacing_mm"][b] = s.spacing_mm
        if with_u:
            batch["u_vox"][b] = moved.get("u_vox", 0.0)
            batch["u_mask"][b] = moved.get("mask", False)
        frames_t.append(t)
        reversed_.append(reverse)
    batch["subject"] = idx.astype(np.int32)
    batch["frame"] = np.asarray(frames_t, np.int32)
    batch["reversed"] = np.asarray(reversed_, bool)
    return batch
