"""VCN heat-map targets and crop centres; CarMEN input pairing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepstrain_jax.models import carmen, vcn


def test_myocardium_center_is_the_centre_of_mass_of_label_2():
    labels = np.zeros((10, 12, 3), np.int32)
    labels[2:5, 3:8, 0] = 2   # rows 2..4 (mean 3), columns 3..7 (mean 5), 15 voxels
    labels[4:7, 3:8, 1] = 2   # rows 4..6 (mean 5), columns 3..7 (mean 5), 15 voxels
    labels[0:2, 0:2, 2] = 3   # LV cavity: ignored
    labels[8:10, 10:12, 2] = 1  # RV: ignored
    np.testing.assert_allclose(np.asarray(vcn.myocardium_center_vox(labels)), [4.0, 5.0], rtol=1e-6)


def test_myocardium_center_of_empty_mask_raises():
    with pytest.raises(ValueError, match="absent"):
        vcn.myocardium_center_vox(np.zeros((4, 4, 2), np.int32))


def test_block_mean_downsampling_maps_centres_by_the_stated_rule():
    # For an image made of whole f x f blocks (each block's mass centred in the block), the centroid of its
    # block average sits at (c - (f - 1) / 2) / f, c the original's centroid.
    rng = np.random.default_rng(0)
    for f in (2, 3):
        blocks = (rng.random((12 // f, 18 // f)) > 0.5) * rng.random((12 // f, 18 // f))
        image = np.kron(blocks, np.ones((f, f))).astype(np.float32)
        small = np.asarray(vcn.downsample_mean(image[None, :, :, None], f))[0, :, :, 0]
        assert small.shape == (12 // f, 18 // f)
        np.testing.assert_allclose(small[1, 2], image[f:2 * f, 2 * f:3 * f].mean(), rtol=1e-6)

        def centroid(a):
            i, j = np.indices(a.shape)
            return np.array([(a * i).sum(), (a * j).sum()]) / a.sum()

        np.testing.assert_allclose(centroid(small), np.asarray(vcn.to_heatmap_coords(centroid(image), f)),
                                   atol=1e-5)
        np.testing.assert_allclose(np.asarray(vcn.from_heatmap_coords(vcn.to_heatmap_coords([3.3, 7.1], f), f)),
                                   [3.3, 7.1], atol=1e-5)


def test_gaussian_heatmap_values():
    h = np.asarray(vcn.gaussian_heatmap([5.0, 7.0], (11, 13), sigma_vox=2.0))
    assert h.shape == (11, 13) and h[5, 7] == pytest.approx(1.0)
    assert h[6, 7] == pytest.approx(np.exp(-1 / 8)) and h[4, 5] == pytest.approx(np.exp(-5 / 8))


def test_heatmap_peak_recovers_sub_pixel_centre_despite_a_second_blob_and_noise():
    center = np.array([17.3, 40.6])
    maps = np.stack([a * np.asarray(vcn.gaussian_heatmap(center, (64, 64), 4.0)) for a in (0.6, 1.0, 0.8)])
    np.testing.assert_allclose(np.asarray(vcn.heatmap_peak(maps)), center, atol=0.01)
    distractor = 0.5 * np.asarray(vcn.gaussian_heatmap([50.0, 10.0], (64, 64), 3.0))
    noise = 0.02 * np.random.default_rng(1).standard_normal(maps.shape)
    noisy = maps + distractor + noise
    np.testing.assert_allclose(np.asarray(vcn.heatmap_peak(noisy[..., None])), center, atol=0.15)


def test_heatmap_peak_of_non_positive_map_is_its_argmax():
    h = -np.ones((1, 8, 9), np.float32)
    h[0, 2, 7] = -0.5
    np.testing.assert_array_equal(np.asarray(vcn.heatmap_peak(h)), [2.0, 7.0])


def test_target_to_crop_centre_round_trip():
    labels = np.zeros((64, 64, 4), np.int32)
    labels[20:31, 33:47, 1:3] = 2
    labels[22:29, 35:45, 1:3] = 3  # cavity inside: the myocardium is a ring
    target = vcn.heatmap_target(labels)
    assert target.shape == (32, 32, 1) and float(target.max()) <= 1.0
    stack = jnp.broadcast_to(target, (4, 32, 32, 1))  # a perfect VCN: the same target on every slice
    expected = np.asarray(vcn.myocardium_center_vox(labels))
    np.testing.assert_allclose(np.asarray(vcn.crop_center_vox(stack)), expected, atol=0.02)
    np.testing.assert_allclose(np.asarray(jax.jit(vcn.crop_center_vox)(stack)), expected, atol=0.02)


def test_pair_input_puts_the_reference_frame_first():
    v0 = np.zeros((1, 4, 4, 2), np.float32)
    vt = np.ones((1, 4, 4, 2, 1), np.float32)
    x = carmen.pair_input(v0[..., None], vt)
    assert x.shape == (1, 4, 4, 2, 2)
    assert float(x[..., 0].max()) == 0.0 and float(x[..., 1].min()) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        carmen.pair_input(v0, vt)
