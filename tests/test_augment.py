"""In-plane augmentation: sampling against scipy, the forward map of positions, the vector rule for
displacements (commutation with the backward warp), labels and intensities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepstrain_jax.ops.warp import warp
from deepstrain_jax.training_data import augment as aug

H, W, Z = 24, 24, 4


def _smooth_image(seed=0):
    # A smooth random image: sums of a few Gaussian blobs, so interpolation errors are small.
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(np.arange(H), np.arange(W), np.arange(Z), indexing="ij")
    v = np.zeros((H, W, Z), np.float64)
    for _ in range(6):
        c = rng.uniform([5, 5, 0], [H - 5, W - 5, Z - 1])
        s = rng.uniform(2.5, 4.0)
        v += rng.uniform(0.5, 2.0) * np.exp(-((i - c[0]) ** 2 + (j - c[1]) ** 2 + 0.3 * (k - c[2]) ** 2) / (2 * s * s))
    return v.astype(np.float32)


def _smooth_u(seed=1, amp=1.2):
    i, j, k = np.meshgrid(np.arange(H), np.arange(W), np.arange(Z), indexing="ij")
    u = np.stack([amp * np.sin(2 * np.pi * j / W + 0.3) * np.cos(0.5 * k),
                  -0.8 * amp * np.cos(2 * np.pi * i / H + 0.7),
                  0.4 * np.sin(2 * np.pi * (i + j) / H)], axis=-1)
    return u.astype(np.float32)


def test_resample_inplane_matches_scipy_grid_constant():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 7, 3)).astype(np.float32)
    coords = rng.uniform(-2.0, 10.0, size=(11, 13, 2))
    out1 = aug.resample_inplane(a, coords, 1, fill=-3.0)
    out0 = aug.resample_inplane(a, coords, 0, fill=-3.0)
    for c in range(3):
        ref1 = ndimage.map_coordinates(a[..., c], np.moveaxis(coords, -1, 0), order=1, mode="grid-constant",
                                       cval=-3.0)
        ref0 = ndimage.map_coordinates(a[..., c], np.moveaxis(coords, -1, 0), order=0, mode="grid-constant",
                                       cval=-3.0)
        np.testing.assert_allclose(out1[..., c], ref1, atol=1e-5)
        np.testing.assert_array_equal(out0[..., c], ref0)


def test_rotation_direction_and_forward_map_by_hand():
    t = aug.make_transform(90.0)
    c = np.array([(H - 1) / 2, (W - 1) / 2])
    # R(90) takes the axis-0 unit vector to the axis-1 unit vector.
    np.testing.assert_allclose(aug.transform_points(c + [1.0, 0.0], t, (H, W)), c + [0.0, 1.0], atol=1e-12)
    m = aug.make_transform(0.0, shift_vox=(2.0, -3.0), mirror=True)
    np.testing.assert_allclose(aug.transform_points([4.0, 5.0], m, (H, W)), [2 * c[0] - 4 + 2, 5 - 3], atol=1e-12)
    # A single bright voxel moves to the forward-mapped position, exactly for grid-aligned transforms.
    for t in (aug.make_transform(90.0, (1.0, 2.0)), aug.make_transform(-90.0, (0.0, -3.0), mirror=True),
              aug.make_transform(180.0), aug.make_transform(0.0, (3.0, 0.0), mirror=True)):
        img = np.zeros((H, W, 1), np.float32)
        img[5, 8] = 1.0
        out = aug.resample_inplane(img, aug.source_coords(t, img.shape), 1)
        expect = np.round(aug.transform_points([5.0, 8.0], t, (H, W))).astype(int)
        assert out[tuple(expect)][0] == pytest.approx(1.0)
        assert out.sum() == pytest.approx(1.0)


def test_blob_centre_follows_forward_map_for_any_angle():
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    p = np.array([9.3, 13.6])
    img = np.exp(-((i - p[0]) ** 2 + (j - p[1]) ** 2) / (2 * 2.0 ** 2))[..., None].astype(np.float32)
    t = aug.make_transform(37.0, (1.3, -0.6), mirror=True)
    out = aug.resample_inplane(img, aug.source_coords(t, img.shape), 1)[..., 0]
    centroid = np.array([(out * i).sum(), (out * j).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, aug.transform_points(p, t, (H, W)), atol=0.05)


@pytest.mark.parametrize("t, exact", [
    (aug.make_transform(90.0, (2.0, -1.0), mirror=True), True),
    (aug.make_transform(180.0, (0.0, 3.0)), True),
    (aug.make_transform(27.0, (0.7, -1.4), mirror=True), False),
])
def test_displacement_transform_commutes_with_warp(t, exact):
    """warp(T V_t, T u) == T warp(V_t, u): the vector rule u'(Y) = M u(T^-1 Y) is the right one."""
    v_t = _smooth_image()
    u = _smooth_u()
    warped = np.asarray(warp(v_t[None, ..., None], u[None]))[0]
    lhs = np.asarray(warp(aug.resample_inplane(v_t, aug.source_coords(t, v_t.shape), 1)[None, ..., None],
                          aug.transform_displacement(u, t)[None]))[0]
    rhs = aug.resample_inplane(warped, aug.source_coords(t, warped.shape), 1)
    wrong = np.asarray(warp(aug.resample_inplane(v_t, aug.source_coords(t, v_t.shape), 1)[None, ..., None],
                            aug.resample_inplane(u, aug.source_coords(t, u.shape), 1)[None]))[0]
    # Compare where neither side met the fill or the warp's clamped border.
    src = aug.source_coords(t, (H, W))
    inner = np.all((src > 4) & (src < np.array([H, W]) - 5), axis=-1)[..., None, None] & np.ones((1, 1, Z, 1), bool)
    err = np.abs(lhs - rhs)[inner]
    err_wrong = np.abs(wrong - rhs)[inner]
    if exact:
        assert err.max() < 1e-5
    else:
        assert err.max() < 0.03 * np.abs(rhs).max()
    assert err_wrong.max() > 10 * err.max() + 1e-3


def test_constant_displacement_rotates_and_mirrors_by_hand():
    u = np.broadcast_to(np.array([1.0, 0.0, 0.5], np.float32), (H, W, Z, 3))
    r = aug.transform_displacement(u, aug.make_transform(90.0))
    np.testing.assert_allclose(r[H // 2, W // 2, 0], [0.0, 1.0, 0.5], atol=1e-6)
    m = aug.transform_displacement(u, aug.make_transform(0.0, mirror=True))
    np.testing.assert_allclose(m[H // 2, W // 2, 0], [-1.0, 0.0, 0.5], atol=1e-6)
    # Outside the source grid the displacement is 0 (no motion is known there).
    s = aug.transform_displacement(u, aug.make_transform(0.0, (5.0, 0.0)))
    np.testing.assert_array_equal(s[:4], 0.0)


def test_labels_stay_in_their_set_and_exact_transforms_keep_counts():
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 4, (H, W, Z)).astype(np.uint8)
    for t in (aug.make_transform(33.0, (1.5, -2.2), mirror=True), aug.make_transform(90.0, mirror=True)):
        out = aug.transform_labels(lab, t)
        assert out.dtype == np.uint8 and out.shape == lab.shape
        assert set(np.unique(out)) <= {0, 1, 2, 3}
    out = aug.transform_labels(lab, aug.make_transform(90.0, mirror=True))
    np.testing.assert_array_equal(np.bincount(out.ravel(), minlength=4), np.bincount(lab.ravel(), minlength=4))
    # 90 degrees: out(y) = lab(T^-1 y) equals rot90 of the flipped array.
    np.testing.assert_array_equal(aug.transform_labels(lab, aug.make_transform(90.0)), np.rot90(lab, k=1, axes=(0, 1)))


def test_intensity_identity_gamma_and_zscore():
    x = _smooth_image()[..., None] * 100.0 + 20.0
    ident = aug.transform_image(x, aug.identity_transform())
    np.testing.assert_allclose(ident, (x - x.mean()) / x.std(), atol=1e-4)
    g = aug.transform_image(x, aug.make_transform(gamma=2.0))
    x01 = (x - x.min()) / (x.max() - x.min())
    ref = x01 ** 2
    np.testing.assert_allclose(g, (ref - ref.mean()) / ref.std(), atol=1e-4)
    two = np.concatenate([x, 3 * x + 7], axis=-1)
    out = aug.transform_image(two, aug.make_transform(41.0, (2.0, 1.0), gamma=0.8))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    # Both channels got the same transform: an affine change of intensities does not change the result.
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-4)


def test_transform_example_equals_the_separate_transforms():
    rng = np.random.default_rng(5)
    t = aug.sample_transform(rng)
    img = np.stack([_smooth_image(0), _smooth_image(1)], axis=-1)
    lab = rng.integers(0, 4, (H, W, Z, 2)).astype(np.uint8)
    u = _smooth_u()
    mask = rng.uniform(size=(H, W, Z)) > 0.5
    out = aug.transform_example(t, image=img, labels=lab, u_vox=u, mask=mask)
    np.testing.assert_allclose(out["image"], aug.transform_image(img, t), atol=1e-6)
    np.testing.assert_array_equal(out["labels"], aug.transform_labels(lab, t))
    np.testing.assert_allclose(out["u_vox"], aug.transform_displacement(u, t), atol=1e-6)
    np.testing.assert_array_equal(out["mask"], aug.transform_mask(mask, t))
    assert out["mask"].dtype == bool and out["labels"].dtype == np.uint8


def test_sample_transform_ranges_and_determinism():
    cfg = aug.AugmentConfig(rotation_deg=30.0, translation_vox=4.0, mirror_prob=0.5, gamma=(0.7, 1.5))
    ts = [aug.sample_transform(np.random.default_rng(k), cfg) for k in range(200)]
    for t in ts:
        np.testing.assert_allclose(t.matrix @ t.matrix.T, np.eye(2), atol=1e-12)
        assert np.all(np.abs(t.shift_vox) <= 4.0) and 0.7 <= t.gamma <= 1.5
        det = np.linalg.det(t.matrix)
        # proper rotation within +-30 deg, or the mirrored one
        cos = t.matrix[1, 1]
        assert cos >= np.cos(np.radians(30.0)) - 1e-12
        assert abs(abs(det) - 1) < 1e-12
    dets = np.array([np.linalg.det(t.matrix) for t in ts])
    assert 60 < np.sum(dets < 0) < 140
    a, b = aug.sample_transform(np.random.default_rng(7), cfg), aug.sample_transform(np.random.default_rng(7), cfg)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    off = aug.sample_transform(np.random.default_rng(7), aug.AugmentConfig(0.0, 0.0, 0.0, (1.0, 1.0)))
    np.testing.assert_array_equal(off.matrix, np.eye(2))
    assert off.gamma == 1.0 and np.all(off.shift_vox == 0)
    with pytest.raises(ValueError, match="gamma"):
        aug.make_transform(gamma=0.0)


def test_displacement_mask_keeps_only_fully_known_positions():
    mask = np.zeros((H, W, Z), bool)
    mask[6:15, 8:18] = True
    # Grid-aligned: the mask moves exactly.
    t = aug.make_transform(90.0, (1.0, -2.0))
    np.testing.assert_array_equal(aug.transform_mask(mask, t), aug.transform_labels(mask, t))
    # A half-voxel shift: a position is kept iff both of its neighbours along axis 0 are known.
    half = aug.transform_mask(mask, aug.make_transform(0.0, (0.5, 0.0)))
    expect = np.zeros_like(mask)
    expect[7:15, 8:18] = True  # y samples x = y - 0.5: neighbours y - 1 and y
    np.testing.assert_array_equal(half, expect)
    # Where the moved mask holds, a field known on the mask is interpolated from known values only.
    u = np.where(mask[..., None], _smooth_u(), 0.0).astype(np.float32)
    t = aug.make_transform(23.0, (0.4, 0.9), mirror=True)
    m2 = aug.transform_mask(mask, t)
    full = aug.transform_displacement(_smooth_u(), t)
    np.testing.assert_allclose(aug.transform_displacement(u, t)[m2], full[m2], atol=1e-6)
    assert m2.sum() > 0.6 * mask.sum()


def test_scale_moves_a_blob_to_the_forward_map():
    """With a zoom, the content at x lands at T(x) = c + s R (x - c) + t (images and labels alike)."""
    h = w = 64
    img = np.zeros((h, w, 1), np.float32)
    img[20:23, 40:43] = 1.0                         # a blob centred at (21, 41)
    t = aug.make_transform(30.0, (2.0, -3.0), False, 1.0, scale=1.3)
    moved = aug.resample_inplane(img, aug.source_coords(t, img.shape), 1)[..., 0]
    centre = np.array(ndimage.center_of_mass(moved))
    expect = aug.transform_points(np.array([21.0, 41.0]), t, (h, w))
    np.testing.assert_allclose(centre, expect, atol=0.3)
    lab = aug.transform_labels((img[..., 0] > 0).astype(np.uint8), t)
    # area scales with s^2 (9 pixels -> about 15)
    assert 11 <= lab.sum() <= 19


def test_scale_draw_only_when_enabled_keeps_old_streams():
    base = aug.AugmentConfig(rotation_deg=30.0, translation_vox=4.0)
    a = aug.sample_transform(np.random.default_rng(3), base)
    b = aug.sample_transform(np.random.default_rng(3), base._replace(scale=(0.8, 1.25)))
    np.testing.assert_array_equal(a.shift_vox, b.shift_vox)
    s = np.sqrt(abs(np.linalg.det(b.matrix)))
    assert 0.8 <= s <= 1.25 and s != 1.0
    np.testing.assert_allclose(b.matrix / s, a.matrix, atol=1e-12)


def test_elastic_warp_is_refused_for_displacements():
    t = aug.sample_transform(np.random.default_rng(0), aug.AugmentConfig(elastic_vox=2.0))
    assert t.warp is not None and t.warp.shape == (4, 4, 2)
    with pytest.raises(ValueError, match="elastic"):
        aug.transform_displacement(np.zeros((16, 16, 3), np.float32), t)
    # images and labels move smoothly: the identity plus a warp moves no pixel by more than its amplitude bound
    src = aug.source_coords(t._replace(matrix=np.eye(2), shift_vox=np.zeros(2)), (32, 32))
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="ij"), -1)
    d = np.abs(src - grid)
    assert d.max() <= 2.0 * 1.5 and d.max() > 0.1


def test_appearance_noise_bias_and_lowres_statistics():
    rng = np.random.default_rng(0)
    x = np.full((64, 64, 1), 0.5, np.float32)
    noisy = aug.apply_appearance(x, aug.Appearance(noise_std=0.05, noise_seed=1))
    # Rician noise on a bright constant: the spread is about the Gaussian sigma
    assert 0.04 < noisy.std() < 0.06
    biased = aug.apply_appearance(x, aug.Appearance(bias=(0.0, 0.3, 0.0, 0.0, 0.0, 0.0)))
    # b = 0.3 y0 with y0 from -1 to 1: x exp(b) ranges over 0.5 exp(-0.3) .. 0.5 exp(0.3) along axis 0
    np.testing.assert_allclose(biased[[0, -1], 0, 0], [0.5 * np.exp(-0.3), 0.5 * np.exp(0.3)], rtol=1e-5)
    stripes = (np.arange(64)[:, None, None] % 2).astype(np.float32) * np.ones((1, 64, 1), np.float32)
    low = aug.apply_appearance(stripes, aug.Appearance(lowres_factor=2.0))
    assert low.shape == stripes.shape and low[8:-8].std() < 0.05    # the 1-pixel stripes are averaged out
    sampled = aug.sample_appearance(rng, aug.AugmentConfig(noise_std=(0.0, 0.1), contrast=(0.5, 2.0)))
    assert 0 <= sampled.noise_std <= 0.1 and 0.5 <= sampled.contrast <= 2.0


def test_dense_elastic_warp_is_the_spline_zoom_of_its_control_vectors_and_is_reused():
    """The dense warp field (each component zoomed in 2D, cached) against scipy's zoom of the whole
    (g, g, 2) control grid with factor 1 on the component axis (the definition); the image and the labels of
    one example share one computation."""
    from deepstrain_jax.training_data.augment import _dense_warp

    w = np.random.default_rng(11).uniform(-3.0, 3.0, size=(4, 4, 2))
    want = ndimage.zoom(w, (40 / 4, 36 / 4, 1), order=3, grid_mode=True, mode="grid-constant")[:40, :36]
    _dense_warp.cache_clear()
    got = _dense_warp(w.tobytes(), w.shape, (40, 36))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert _dense_warp(w.tobytes(), w.shape, (40, 36)) is got and not got.flags.writeable
    assert _dense_warp.cache_info().hits == 1


def _disc_slice(n=32):
    # A bright LV cavity (label 3, radius 6) in a myocardial ring (label 2), an RV patch (label 1), background 10.
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(i - 16, j - 16)
    lab = np.where(r < 6, 3, np.where(r < 9, 2, 0)).astype(np.uint8)
    lab[2:8, 4:28] = 1
    img = np.where(lab == 3, 300.0, np.where(lab == 2, 100.0, np.where(lab == 1, 280.0, 10.0))).astype(np.float32)
    return img, lab


def test_dim_blood_pool_scales_only_the_pool_down_to_the_drawn_factor():
    img, lab = _disc_slice()
    for seed in range(20):
        out = aug.dim_blood_pool(img, lab, np.random.default_rng(seed), (0.4, 0.4), edge_sigma_vox=0.0)
        ratio = out / img
        pool = (lab == 3) | ((lab == 1) & (ratio[lab == 1] < 1).any())  # the RV when it was drawn
        np.testing.assert_array_equal(out[~np.isin(lab, (1, 3))], img[~np.isin(lab, (1, 3))])
        # The factor is reached on the darkest side of the ramp across the pool (w = 1 there) and never passed.
        assert ratio[pool].min() == pytest.approx(0.4, abs=1e-6)
        assert ratio[pool].max() <= 1.0 and ratio.min() >= 0.4 - 1e-6
    # Both branches of the RV draw occur over 20 seeds: the RV is either untouched or dimmed.
    rv_dimmed = [bool((aug.dim_blood_pool(img, lab, np.random.default_rng(s), (0.4, 0.4))[lab == 1] < 280).any())
                 for s in range(20)]
    assert any(rv_dimmed) and not all(rv_dimmed)
    for s in range(20):  # rv_prob 0: the LV cavity alone
        out = aug.dim_blood_pool(img, lab, np.random.default_rng(s), (0.4, 0.4), rv_prob=0.0)
        np.testing.assert_array_equal(out[lab == 1], img[lab == 1])
        assert (out[lab == 3] < img[lab == 3]).any()


def test_dim_blood_pool_identity_cases_and_channel_axis():
    img, lab = _disc_slice()
    np.testing.assert_array_equal(aug.dim_blood_pool(img, lab, np.random.default_rng(0), (1.0, 1.0)), img)
    no_pool = np.where(np.isin(lab, (1, 3)), 2, lab)
    np.testing.assert_array_equal(aug.dim_blood_pool(img, no_pool, np.random.default_rng(0)), img)
    flat = aug.dim_blood_pool(img, lab, np.random.default_rng(3))
    chan = aug.dim_blood_pool(img[..., None], lab, np.random.default_rng(3))
    np.testing.assert_array_equal(chan[..., 0], flat)
    with pytest.raises(ValueError, match="blood_pool_factor"):
        aug.dim_blood_pool(img, lab, np.random.default_rng(0), (0.8, 0.3))
    with pytest.raises(ValueError, match="differ in-plane"):
        aug.dim_blood_pool(img, lab[:-1], np.random.default_rng(0))
