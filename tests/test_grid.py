"""ops/grid.py: voxel <-> mm conversions against hand-built affines."""

import numpy as np
import pytest

from deepstrain_jax.ops import grid


def _oblique_affine():
    # A proper rotation about a tilted axis, anisotropic spacing, and an offset: built by hand.
    angle = np.deg2rad(30.0)
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    spacing = np.array([1.25, 1.5, 8.0])
    a = np.eye(4)
    a[:3, :3] = rot * spacing[None, :]
    a[:3, 3] = [-100.0, 20.0, 35.5]
    return a, rot, spacing


def test_spacing_and_direction_from_affine():
    a, rot, spacing = _oblique_affine()
    np.testing.assert_allclose(grid.spacing_from_affine(a), spacing, rtol=1e-12)
    np.testing.assert_allclose(grid.direction_from_affine(a), rot, atol=1e-12)


def test_voxel_to_mm_matches_hand_computation_and_round_trips():
    a, rot, spacing = _oblique_affine()
    idx = np.array([[0.0, 0.0, 0.0], [3.0, 4.5, 2.0], [10.25, -1.0, 7.0]])
    expected = (rot @ (idx * spacing).T).T + a[:3, 3]
    np.testing.assert_allclose(np.asarray(grid.voxel_to_mm(idx, a)), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(grid.mm_to_voxel(expected, a)), idx, atol=1e-4)


def test_index_and_mm_grids():
    g = np.asarray(grid.index_grid((2, 3, 4)))
    assert g.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(g[1, 2, 3], [1, 2, 3])
    gm = np.asarray(grid.array_grid_mm((2, 3, 4), (1.25, 2.0, 8.0)))
    np.testing.assert_allclose(gm[1, 2, 3], [1.25, 4.0, 24.0])
    with pytest.raises(ValueError, match="spacing_mm"):
        grid.array_grid_mm((2, 3, 4), (1.0, 1.0))


def test_displacement_unit_conversion_and_world_rotation():
    a, rot, spacing = _oblique_affine()
    u_vox = np.array([[1.0, -2.0, 0.5]])
    u_mm = np.asarray(grid.vox_to_mm(u_vox, spacing))
    np.testing.assert_allclose(u_mm, [[1.25, -3.0, 4.0]])
    np.testing.assert_allclose(np.asarray(grid.mm_to_vox(u_mm, spacing)), u_vox)
    # A displacement along the array axes, moved to the world frame, equals the difference of the world
    # positions of the displaced and undisplaced voxel.
    x0 = np.array([2.0, 3.0, 1.0])
    moved = np.asarray(grid.voxel_to_mm(x0 + u_vox[0], a)) - np.asarray(grid.voxel_to_mm(x0, a))
    np.testing.assert_allclose(np.asarray(grid.array_to_world_vectors(u_mm, a))[0], moved, atol=1e-4)
    np.testing.assert_allclose(np.asarray(grid.world_to_array_vectors(moved[None], a)), u_mm, atol=1e-4)


def test_bad_affine_shape():
    with pytest.raises(ValueError, match="4x4"):
        grid.spacing_from_affine(np.eye(3))
