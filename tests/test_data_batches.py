"""Batch samplers on synthetic subjects with known motion: shapes and dtypes, determinism and exact resume,
epoch coverage, identity pairs, labelled flags, augmented displacements that still warp t onto ED, and VCN
targets that follow the image."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrain_jax.training_data import augment as aug
from deepstrain_jax.training_data import batches as bt
from deepstrain_jax.training_data import subjects as sj

NATIVE = (16, 16, 4)
SP = np.array([2.5, 2.5, 8.0])
CFG = sj.SubjectConfig(inplane_mm=2.5, n_slices=4, crop=16, vcn_canvas=32, vcn_factor=2)
N, Z, M = 16, 4, 16


class ListPool(list):
    """The pool protocol (len, getitem) over prepared subjects."""

    has_motion_truth = True


def _moving_subject(centre, shifts_mm, known=None, with_u=True, blob_only=False):
    """A heart translating by ``shifts_mm[t]`` (in-plane, mm): V_t(X) = f(X - d_t), so u_mm(X, t) = d_t."""
    x = np.stack(np.meshgrid(*[np.arange(n) for n in NATIVE], indexing="ij"), axis=-1) * SP
    c = np.asarray(centre) * SP[:2]
    images, labels = [], []
    for d in shifts_mm:
        rel = x[..., :2] - c - np.asarray(d)[:2]
        r = np.hypot(rel[..., 0], rel[..., 1])
        if blob_only:
            img = 100.0 * np.exp(-r ** 2 / (2 * 6.0 ** 2))
        else:
            img = 100.0 * np.exp(-(r - 6.0) ** 2 / (2 * 2.5 ** 2)) + 40.0 * np.exp(-r ** 2 / (2 * 3.0 ** 2)) + 5.0
        lab = np.where(r < 4.0, 3, np.where(r < 8.5, 2, 0))
        lab[(rel[..., 0] < -9.0) & (r < 15.0) & (lab == 0)] = 1
        images.append(img)
        labels.append(lab.astype(np.uint8))
    image, lab = np.stack(images, -1), np.stack(labels, -1)
    t = image.shape[-1]
    known = range(t) if known is None else known
    u_mm = np.broadcast_to(np.asarray(shifts_mm, np.float64)[:, None, None, None, :], (t, *NATIVE, 3))
    return sj.make_subject(image, SP, labels={k: lab[..., k] for k in known}, u_mm=u_mm if with_u else None,
                           ed=0, es=2, frame_interval_s=0.04, cfg=CFG)


@pytest.fixture(scope="module")
def pool():
    shifts = [[(0, 0, 0), (2.0, -3.5, 0), (3.5, -2.5, 0), (4.0, 1.0, 0)],
              [(0, 0, 0), (-2.0, 3.0, 0), (-3.0, 2.5, 0), (-4.0, 0.5, 0)],
              [(0, 0, 0), (3.5, 2.0, 0), (2.5, 3.0, 0), (-0.5, 4.0, 0)]]
    centres = [(7.2, 8.1), (8.4, 7.3), (7.8, 7.9)]
    return ListPool(_moving_subject(c, s) for c, s in zip(centres, shifts))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_shapes_and_dtypes(pool):
    c = bt.carson_batch(pool, 0, 0, 5)
    assert c["inputs"].shape == (5, N, N, 1) and c["inputs"].dtype == np.float32
    assert c["labels"].shape == (5, N, N) and c["labels"].dtype == np.int32
    v = bt.vcn_batch(pool, 0, 0, 5)
    assert v["inputs"].shape == (5, M, M, 1) and v["targets"].shape == (5, M, M, 1)
    assert v["inputs"].dtype == v["targets"].dtype == np.float32 and v["centre"].shape == (5, 2)
    m = bt.carmen_batch(pool, 0, 0, 5)
    assert m["inputs"].shape == (5, N, N, Z, 2) and m["inputs"].dtype == np.float32
    for k in ("labels_ed", "labels_t"):
        assert m[k].shape == (5, N, N, Z) and m[k].dtype == np.int32
    assert m["u_vox"].shape == (5, N, N, Z, 3) and m["u_vox"].dtype == np.float32
    assert m["u_mask"].shape == (5, N, N, Z) and m["u_mask"].dtype == bool
    assert m["labelled"].shape == (5,) and m["labelled"].dtype == bool
    np.testing.assert_allclose(m["spacing_mm"], np.tile([2.5, 2.5, 8.0], (5, 1)))
    for b in (c, m):
        assert set(np.unique(b["labels"] if "labels" in b else b["labels_t"])) <= {0, 1, 2, 3}


@pytest.mark.parametrize("sampler", [bt.carson_batch, bt.vcn_batch, bt.carmen_batch])
def test_batches_depend_on_seed_and_step_only(pool, sampler):
    first = [sampler(pool, 3, k, 4) for k in range(4)]
    # Replay in another order, as a resumed run would: identical batches.
    for k in (2, 0, 3, 1):
        assert _equal(sampler(pool, 3, k, 4), first[k])
    assert not np.array_equal(first[0]["inputs"], first[1]["inputs"])
    assert not np.array_equal(sampler(pool, 4, 0, 4)["inputs"], first[0]["inputs"])


def test_subject_indices_cover_each_epoch():
    idx = np.concatenate([bt.subject_indices(5, 1, k, 2) for k in range(5)])  # 10 examples = 2 epochs of 5
    assert sorted(idx[:5]) == list(range(5)) and sorted(idx[5:]) == list(range(5))
    assert not np.array_equal(idx[:5], idx[5:]) or not np.array_equal(idx[:5], np.arange(5))
    np.testing.assert_array_equal(bt.subject_indices(7, 2, 3, 4), bt.subject_indices(7, 2, 3, 4))
    big = bt.subject_indices(10 ** 9, 0, 5, 8)
    assert big.shape == (8,) and big.min() >= 0 and big.max() < 10 ** 9
    with pytest.raises(ValueError, match="step"):
        bt.carson_batch([object()], 0, -1, 2)


def test_carmen_identity_pairs(pool):
    b = bt.carmen_batch(pool, 0, 0, 6, identity_prob=1.0)
    np.testing.assert_array_equal(b["frame"], 0)
    np.testing.assert_array_equal(b["u_vox"], 0.0)
    np.testing.assert_array_equal(b["inputs"][..., 0], b["inputs"][..., 1])
    np.testing.assert_array_equal(b["labels_ed"], b["labels_t"])
    assert bt.carmen_batch(pool, 0, 0, 6, identity_prob=0.0)["frame"].min() > 0
    frames = np.concatenate([bt.carmen_batch(pool, 0, k, 6, identity_prob=0.3)["frame"] for k in range(10)])
    assert 5 < np.sum(frames == 0) < 35  # about 0.3 * 60 = 18


def test_augmented_carmen_u_vox_still_warps_t_onto_ed(pool):
    """Each example's u_vox (rotated, mirrored, shifted with its images) aligns frame t with ED."""
    from deepstrain_jax.ops.warp import warp

    b = bt.carmen_batch(pool, 5, 0, 6, identity_prob=0.0, augment=aug.AugmentConfig(translation_vox=2.0))
    moved = np.asarray(warp(b["inputs"][..., 1:], b["u_vox"]))[..., 0]
    ed = b["inputs"][..., 0]
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    inner = ((i > 2) & (i < N - 3) & (j > 2) & (j < N - 3))[..., None] & b["u_mask"]
    for e in range(6):
        m = inner[e] & (b["labels_ed"][e] > 0)
        assert m.sum() > 20
        before = np.mean((b["inputs"][e, ..., 1] - ed[e])[m] ** 2)
        after = np.mean((moved[e] - ed[e])[m] ** 2)
        assert after < 0.3 * before, (e, before, after)
    # The in-plane displacement is the rotated/mirrored shift: its length is the shift's length in voxels.
    lengths = np.linalg.norm(b["u_vox"][..., :2][b["u_mask"] & inner], axis=-1)
    expect = {np.hypot(*np.asarray(d[:2]) / 2.5) for d in [(2.0, -3.5), (3.5, -2.5), (4.0, 1.0), (-2.0, 3.0),
                                                          (-3.0, 2.5), (-4.0, 0.5), (3.5, 2.0), (2.5, 3.0),
                                                          (-0.5, 4.0)]}
    assert all(min(abs(x - e) for e in expect) < 1e-4 for x in np.unique(np.round(lengths, 5)))


def test_labelled_flags_frames_and_subjects_without_truth():
    acdc_like = _moving_subject((7.5, 7.5), [(0, 0, 0), (1, 0, 0), (2, 0, 0), (1, 0, 0)], known=(0, 2),
                                with_u=False)
    pool = ListPool([acdc_like])
    b = bt.carmen_batch(pool, 0, 0, 8, identity_prob=0.0, frames="labelled", augment=None)
    np.testing.assert_array_equal(b["frame"], 2)
    assert b["labelled"].all()
    np.testing.assert_array_equal(b["u_vox"], 0.0)  # the pool claims motion truth; this subject has none
    assert not b["u_mask"].any()
    b = bt.carmen_batch(pool, 0, 0, 8, identity_prob=0.0, augment=None)
    np.testing.assert_array_equal(b["labelled"], b["frame"] == 2)
    np.testing.assert_array_equal(b["labels_t"][b["frame"] != 2], 0)
    pool.has_motion_truth = False
    assert "u_vox" not in bt.carmen_batch(pool, 0, 0, 2)
    c = bt.carson_batch(pool, 0, 0, 8)
    assert set(c["frame"].tolist()) <= {0, 2}


def test_carson_slices_without_augmentation_and_heart_only(pool):
    b = bt.carson_batch(pool, 1, 0, 6, augment=None, heart_only=True)
    for e in range(6):
        s = pool[b["subject"][e]]
        t, z = b["frame"][e], b["slice"][e]
        np.testing.assert_array_equal(b["labels"][e], s.labels[t, :, :, z])
        x = s.image[t, :, :, z]
        np.testing.assert_allclose(b["inputs"][e, ..., 0], (x - x.mean()) / x.std(), atol=1e-4)
        assert b["labels"][e].any()
    a = bt.carson_batch(pool, 1, 0, 6)
    np.testing.assert_allclose(a["inputs"].mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(a["inputs"].std(axis=(1, 2, 3)), 1.0, atol=1e-3)


def test_vcn_targets_follow_the_augmented_image():
    from deepstrain_jax.models import vcn

    blob = ListPool([_moving_subject(c, [(0, 0, 0), (0.5, 0.5, 0), (1.0, 1.0, 0)], blob_only=True)
                     for c in [(7.2, 8.1), (6.4, 9.3)]])
    plain = bt.vcn_batch(blob, 0, 0, 4, augment=None)
    for e in range(4):
        f = [blob[plain["subject"][e]].ed, blob[plain["subject"][e]].es].index(plain["frame"][e])
        np.testing.assert_allclose(plain["centre"][e], blob[plain["subject"][e]].vcn_centre[f], atol=1e-6)
    b = bt.vcn_batch(blob, 0, 0, 8, augment=aug.AugmentConfig(translation_vox=3.0))
    i, j = np.meshgrid(np.arange(M), np.arange(M), indexing="ij")
    for e in range(8):
        w = b["inputs"][e, ..., 0] - b["inputs"][e, ..., 0].min()
        centroid = np.array([(w * i).sum(), (w * j).sum()]) / w.sum()
        np.testing.assert_allclose(centroid, b["centre"][e], atol=0.6)
        peak = np.unravel_index(np.argmax(b["targets"][e, ..., 0]), (M, M))
        assert np.all(np.abs(np.asarray(peak) - b["centre"][e]) <= 0.5 + 1e-6)
    np.testing.assert_allclose(b["targets"][..., 0], np.asarray(vcn.gaussian_heatmap(b["centre"], (M, M))),
                               atol=1e-6)


def test_blood_pool_dimming_changes_only_inputs_and_is_off_by_default(pool):
    base = aug.AugmentConfig()
    plain = bt.carson_batch(pool, 2, 0, 6, augment=base, heart_only=True)
    # Off (the default): no extra draw, the stream and every field as before.
    assert _equal(plain, bt.carson_batch(pool, 2, 0, 6, augment=base._replace(blood_pool_prob=0.0), heart_only=True))
    dim = bt.carson_batch(pool, 2, 0, 6, augment=base._replace(blood_pool_prob=1.0, blood_pool_factor=(0.3, 0.3)),
                          heart_only=True)
    for k in ("labels", "subject", "frame", "slice"):
        np.testing.assert_array_equal(dim[k], plain[k])
    assert not np.allclose(dim["inputs"], plain["inputs"])
    # Without augmentation otherwise: the LV cavity is darker relative to the myocardium than in the raw slice.
    none = aug.AugmentConfig(rotation_deg=0.0, translation_vox=0.0, mirror_prob=0.0, gamma=(1.0, 1.0))
    raw = bt.carson_batch(pool, 2, 0, 6, augment=none, heart_only=True)
    dimmed = bt.carson_batch(pool, 2, 0, 6, augment=none._replace(blood_pool_prob=1.0, blood_pool_factor=(0.3, 0.3)),
                             heart_only=True)
    for e in range(6):
        lab = raw["labels"][e]
        if (lab == 3).any() and (lab == 2).any():
            gap = lambda x: x[lab == 3].mean() - x[lab == 2].mean()  # noqa: E731
            assert gap(dimmed["inputs"][e, ..., 0]) < gap(raw["inputs"][e, ..., 0])
