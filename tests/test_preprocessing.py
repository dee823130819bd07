"""data/preprocessing.py: resampling (dipy semantics and centred), crops with padding, inverses."""

import numpy as np
import pytest

from deepstrain_jax.data import preprocessing as pp


def test_plan_matches_dipy_rules():
    # 10 slices of 8 mm -> 16 slices of 5 mm; 1.5 mm in-plane -> 1.25 mm: round(100 * 1.5 / 1.25) = 120.
    plan = pp.plan_resampling((100, 90, 10), (1.5, 1.5, 8.0))
    assert plan.out_shape == (120, 108, 16)
    np.testing.assert_allclose(plan.out_spacing_mm, [1.25, 1.25, 5.0])
    np.testing.assert_allclose(plan.ratio, [1.25 / 1.5, 1.25 / 1.5, 0.625])
    # Tie-break: 5 * 1.25 / 2.5 = 2.5 exactly -> zoom shrunk by 1e-3 -> 3 voxels (round half up).
    assert pp.plan_resampling((5, 4, 3), (1.25, 1.25, 5.0), inplane_mm=2.5, n_slices=None).out_shape[0] == 3
    with pytest.raises(ValueError, match="spacing_mm"):
        pp.plan_resampling((4, 4, 4), (1.0, 0.0, 1.0))


def test_linear_field_is_resampled_exactly_with_the_affine():
    # A field linear in world coordinates is reproduced exactly by linear interpolation inside the grid,
    # and the output affine says where each output voxel is.
    shape, spacing = (12, 10, 6), (1.6, 1.6, 7.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-5.0, 3.0, 10.0]
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = g @ affine[:3, :3].T + affine[:3, 3]
    f = lambda w: 0.3 * w[..., 0] - 0.2 * w[..., 1] + 0.05 * w[..., 2]
    for align in ("corner", "centre"):
        plan = pp.plan_resampling(shape, spacing, n_slices=8, align=align)
        out = pp.apply_resampling(f(world), plan)
        a_out = plan.out_affine(affine)
        go = np.stack(np.meshgrid(*[np.arange(n) for n in plan.out_shape], indexing="ij"), -1)
        wo = go @ a_out[:3, :3].T + a_out[:3, 3]
        # Only output voxels that fall inside the input grid (clamping makes the rest constant).
        inside = np.all((go * plan.ratio + plan.offset <= np.asarray(shape) - 1) &
                        (go * plan.ratio + plan.offset >= 0), axis=-1)
        np.testing.assert_allclose(out[inside], f(wo)[inside], atol=1e-9)


def test_label_round_trip_through_resampling_is_exact_on_shared_voxels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(8, 8, 4))
    plan = pp.plan_resampling(labels.shape, (2.5, 2.5, 5.0), inplane_mm=1.25, n_slices=8)  # exact 2x upsampling
    up = pp.apply_resampling(labels, plan, order=0)
    assert up.shape == (16, 16, 8)
    back = pp.invert_resampling(up, plan, order=0)
    np.testing.assert_array_equal(back, labels)


def test_crop_pads_and_inverts():
    vol = np.arange(10 * 12 * 2).reshape(10, 12, 2).astype(float)
    crop = pp.plan_crop(vol.shape, centre_vox=(1.2, 10.0), size=8)
    assert crop.start == (-3, 6)
    out = pp.apply_crop(vol, crop)
    assert out.shape == (8, 8, 2)
    np.testing.assert_array_equal(out[:3], 0.0)        # overhang before axis-0 start is padded
    np.testing.assert_array_equal(out[:, 6:], 0.0)     # overhang past axis-1 end is padded
    np.testing.assert_array_equal(out[3:, :6], vol[0:5, 6:12])
    back = pp.invert_crop(out, crop)
    expected = np.zeros_like(vol)
    expected[0:5, 6:12] = vol[0:5, 6:12]
    np.testing.assert_array_equal(back, expected)


def test_zscore():
    x = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    z = pp.zscore(x, axes=1)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[0], (x[0] - 2.0) / np.std(x[0]), rtol=1e-6)


def test_separable_to_native_equals_map_coordinates():
    """grids.to_native (three 1D interpolations) against preprocessing.invert_resampling (scipy map_coordinates
    on the full coordinate grid), including a crop that overhangs the field of view and a reversed z axis."""
    from deepstrain_jax.analysis import grids

    rng = np.random.default_rng(3)
    for shape, spacing, align in (((97, 83, 9), (1.7, 1.7, 9.0), "centre"), ((40, 52, 6), (0.9, 0.9, 7.5), "corner")):
        plan = pp.plan_resampling(shape, spacing, inplane_mm=1.25, n_slices=16, align=align)
        crop = pp.plan_crop(plan.out_shape, (plan.out_shape[0] * 0.6, plan.out_shape[1] * 0.3), 96)
        vol = rng.normal(size=(96, 96, 16, 3)).astype(np.float32)
        ref = pp.invert_resampling(pp.invert_crop(vol, crop), plan, order=1)
        got = grids.to_native(vol, plan, crop)
        assert got.shape == ref.shape == shape + (3,) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-6)


def test_native_strain_frame_at_myocardium_points_equals_the_whole_grid_rule():
    """NativeMaps.strain_frame (the stencil at the native ED-myocardium voxels only) against the whole-grid rule
    ``L[m v] / L[m]``, L the linear map of to_native (here scipy map_coordinates), NaN elsewhere: a crop that
    overhangs the field of view, both z orders, a transposed file order."""
    from deepstrain_jax.analysis import grids

    rng = np.random.default_rng(5)
    for shape, spacing, align, reverse in (((97, 83, 9), (1.7, 1.7, 9.0), "centre", True),
                                           ((40, 52, 6), (0.9, 0.9, 7.5), "corner", False)):
        plan = pp.plan_resampling(shape, spacing, inplane_mm=1.25, n_slices=16, align=align)
        crop = pp.plan_crop(plan.out_shape, (plan.out_shape[0] * 0.6, plan.out_shape[1] * 0.3), 96)
        comps = rng.normal(size=(2, 96, 96, 16, 3)).astype(np.float32)
        myo = rng.uniform(size=(96, 96, 16)) < 0.4
        myo_native = rng.uniform(size=shape) < 0.3
        inverse = (1, 0, 2)
        maps = grids.NativeMaps(np.zeros((2, 96, 96, 16, 3), np.float32), comps, myo, myo_native, plan, crop,
                                reverse, np.eye(3), inverse)
        z = slice(None, None, -1) if reverse else slice(None)
        for t in range(2):
            m = myo[:, :, z].astype(np.float32)
            num = pp.invert_resampling(pp.invert_crop(comps[t][:, :, z] * m[..., None], crop), plan, order=1)
            den = pp.invert_resampling(pp.invert_crop(m, crop), plan, order=1)
            ref = np.where(den[..., None] > 1e-6, num / np.maximum(den, 1e-6)[..., None], 0.0)
            ref = np.transpose(np.where(myo_native[..., None], ref, np.nan), inverse + (3,))
            got = maps.strain_frame(t)
            assert got.shape == ref.shape and got.dtype == np.float32
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            np.testing.assert_allclose(got, ref, atol=1e-5, equal_nan=True)
            assert np.abs(np.nan_to_num(got)).max() > 0.5   # not all zero
