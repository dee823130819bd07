"""ops/strain.py, ops/cardiac_basis.py, ops/strain_legacy.py against analytic deformations.

Expected values come from closed forms: homogeneous deformations (exact for finite differences everywhere), fields
quadratic in X (exact for central differences inside), plane waves (closed-form finite-difference and interpolant
derivatives), and u_r = beta r^2 / torsion (analytic strain, finite-difference truncation bounds stated per test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

from deepstrain_jax.ops import strain as S


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _rotation(axis, angle):
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _grid_mm(shape, spacing):
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    return idx * np.asarray(spacing, dtype=np.float64)


# ---------------------------------------------------------------- Cartesian known answers


def test_zero_displacement_gives_zero_strain():
    for shape, spacing in [((5, 4, 3, 3), (1.25, 1.25, 8.0)), ((2, 5, 4, 2), (0.7, 1.1))]:
        E = S.green_lagrange(np.zeros(shape, np.float32), spacing)
        d = shape[-1]
        assert E.shape == shape[:-1] + (d, d)
        np.testing.assert_array_equal(np.asarray(E), 0.0)


@pytest.mark.parametrize("degrees", [5.0, 30.0])
def test_rigid_rotation_gives_zero_green_lagrange_strain(x64, degrees):
    theta = np.deg2rad(degrees)
    spacing = (1.25, 0.8, 4.0)
    X = _grid_mm((7, 6, 5), spacing)
    centre = np.array([3.3, 2.1, 7.7])  # off-grid
    R = _rotation([1.0, 2.0, 2.0], theta)
    u = (X - centre) @ (R - np.eye(3)).T
    G = np.asarray(S.displacement_gradient(u, spacing))
    E = np.asarray(S.green_lagrange(u, spacing))
    np.testing.assert_allclose(G, np.broadcast_to(R - np.eye(3), G.shape), atol=1e-12)
    np.testing.assert_allclose(E, 0.0, atol=1e-12)
    # The small-strain tensor sym(R) - I has eigenvalues (0, cos - 1, cos - 1): it would not vanish.
    small = 0.5 * (G + np.swapaxes(G, -1, -2))
    np.testing.assert_allclose(np.linalg.eigvalsh(small[3, 3, 2]), [np.cos(theta) - 1] * 2 + [0.0], atol=1e-12)


@pytest.mark.parametrize("lam", [1.2, 0.85])
def test_uniform_stretch_along_x(x64, lam):
    spacing = (0.9, 1.3, 6.0)
    X = _grid_mm((6, 5, 4), spacing)
    u = np.zeros_like(X)
    u[..., 0] = (lam - 1.0) * (X[..., 0] - 1.7)
    E = np.asarray(S.green_lagrange(u, spacing))
    expected = np.zeros((3, 3))
    expected[0, 0] = 0.5 * (lam**2 - 1.0)
    np.testing.assert_allclose(E, np.broadcast_to(expected, E.shape), atol=1e-13)


def test_simple_shear_3d_2d_and_batch_axes(x64):
    gamma = 0.3
    spacing3, spacing2 = (1.1, 0.6, 5.0), (1.1, 0.6)
    X3 = _grid_mm((5, 6, 3), spacing3)
    u3 = np.zeros_like(X3)
    u3[..., 0] = gamma * X3[..., 1]
    expected3 = np.zeros((3, 3))
    expected3[0, 1] = expected3[1, 0] = gamma / 2
    expected3[1, 1] = gamma**2 / 2
    E3 = np.asarray(S.green_lagrange(u3, spacing3))
    np.testing.assert_allclose(E3, np.broadcast_to(expected3, E3.shape), atol=1e-13)

    X2 = _grid_mm((5, 6), spacing2)
    shear = np.stack([gamma * X2[..., 1], np.zeros_like(X2[..., 0])], axis=-1)
    stretch = np.stack([0.1 * X2[..., 0], np.zeros_like(X2[..., 0])], axis=-1)
    E2 = np.asarray(S.green_lagrange(np.stack([shear, stretch]), spacing2))  # leading batch axis
    assert E2.shape == (2, 5, 6, 2, 2)
    np.testing.assert_allclose(E2[0], np.broadcast_to(expected3[:2, :2], (5, 6, 2, 2)), atol=1e-13)
    np.testing.assert_allclose(E2[1, ..., 0, 0], 0.5 * (1.1**2 - 1), atol=1e-13)
    np.testing.assert_allclose(E2[1, ..., 1, 1], 0.0, atol=1e-13)


def test_size_one_axis_has_zero_derivative(x64):
    u = np.random.default_rng(0).normal(size=(4, 3, 1, 3))
    G = np.asarray(S.displacement_gradient(u, (1.0, 2.0, 3.0)))
    np.testing.assert_array_equal(G[..., 2], 0.0)
    np.testing.assert_allclose(G[..., 0], np.gradient(u, 1.0, axis=0), atol=1e-15)


def test_quadratic_field_at_two_spacings_gives_identical_strain(x64):
    # u_i = B_ij X_j + C_ijk X_j X_k: central differences are exact on quadratics, so interior strain is the same
    # on both grids (and equals the analytic strain) at the shared physical points.
    rng = np.random.default_rng(1)
    B = 0.05 * rng.normal(size=(3, 3))
    C = 0.004 * rng.normal(size=(3, 3, 3))

    def field(X):
        return X @ B.T + np.einsum("ijk,...j,...k->...i", C, X, X)

    coarse_spacing = np.array([1.0, 1.5, 4.0])
    Xc, Xf = _grid_mm((7, 6, 5), coarse_spacing), _grid_mm((13, 11, 9), coarse_spacing / 2)
    Ec = np.asarray(S.green_lagrange(field(Xc), coarse_spacing))[1:-1, 1:-1, 1:-1]
    Ef = np.asarray(S.green_lagrange(field(Xf), coarse_spacing / 2))[2:-2:2, 2:-2:2, 2:-2:2]
    np.testing.assert_allclose(Ec, Ef, atol=1e-12)
    G = B + np.einsum("ijk,...k->...ij", C + np.swapaxes(C, 1, 2), Xc[1:-1, 1:-1, 1:-1])
    np.testing.assert_allclose(Ec, 0.5 * (G + np.swapaxes(G, -1, -2) + np.swapaxes(G, -1, -2) @ G), atol=1e-12)


# ---------------------------------------------------------------- autodiff of the interpolant


def _plane_wave(shape, spacing):
    amp = np.array([0.4, -0.3, 0.25])
    k = np.array([0.15, -0.1, 0.08])
    phase = np.array([0.3, 1.1, -0.7])
    X = _grid_mm(shape, spacing)
    return amp, k, phase, amp * np.sin((X @ k)[..., None] + phase)


def test_fd_and_autodiff_gradients_of_a_plane_wave(x64):
    # u_i = A_i sin(k.X + p_i). Closed forms, per entry (i, j), with theta = k.X + p_i:
    #   central difference at a node:           A_i k_j cos(theta) sin(k_j h_j) / (k_j h_j)
    #   interpolant derivative at a cell centre: A_i k_j cos(theta) sinc(k_j h_j / 2) prod_{m != j} cos(k_m h_m / 2)
    # and the gap between the autodiff value and the mean of the 8 surrounding central differences is
    #   A_i k_j cos(theta) prod_{m != j} cos(k_m h_m / 2) * 2 sin^3(k_j h_j / 2) / (k_j h_j) ~ A_i k_j (k_j h_j)^2 / 4:
    # both are second-order approximations of the gradient at the cell centre, so they agree to that bound.
    spacing = np.array([1.0, 1.25, 2.0])
    shape = (10, 9, 6)
    amp, k, phase, u = _plane_wave(shape, spacing)
    kh = k * spacing
    X = _grid_mm(shape, spacing)
    G_fd = np.asarray(S.displacement_gradient(u, spacing))
    theta = (X @ k)[..., None] + phase
    expected_fd = (amp * np.cos(theta))[..., None] * (k * np.sin(kh) / kh)
    np.testing.assert_allclose(G_fd[1:-1, 1:-1, 1:-1], expected_fd[1:-1, 1:-1, 1:-1], atol=1e-13)

    centres = np.stack(np.meshgrid(*[np.arange(n - 1) + 0.5 for n in shape], indexing="ij"), axis=-1)
    G_ad = np.asarray(S.displacement_gradient_autodiff(u, spacing, centres))
    theta_c = (centres * spacing) @ k
    half = np.cos(kh / 2)
    factor = np.array([np.sinc(kh[j] / 2 / np.pi) * np.prod(np.delete(half, j)) for j in range(3)])
    expected_ad = (amp * np.cos(theta_c[..., None] + phase))[..., None] * (k * factor)
    np.testing.assert_allclose(G_ad, expected_ad, atol=1e-13)

    corners = [G_fd[a:a + 7, b:b + 6, c:c + 3] for a in (1, 2) for b in (1, 2) for c in (1, 2)]
    mean_fd = np.mean(corners, axis=0)  # cells whose 8 corners are all interior nodes
    tol = np.abs(amp)[:, None] * np.abs(k) * 2 * np.abs(np.sin(kh / 2) ** 3 / kh)
    assert np.all(np.abs(G_ad[1:-1, 1:-1, 1:-1] - mean_fd) <= tol + 1e-13)
    assert np.abs(G_ad[1:-1, 1:-1, 1:-1] - mean_fd).max() > 1e-6  # the bound is not vacuous


def test_autodiff_gradient_is_one_sided_at_voxel_centres_and_a_cell_difference_elsewhere(x64):
    rng = np.random.default_rng(2)
    spacing = np.array([1.25, 0.9, 3.0])
    u = rng.normal(size=(5, 4, 3, 3))
    G = np.asarray(S.displacement_gradient_autodiff(u, spacing))
    fwd = np.diff(u, axis=1) / spacing[1]  # forward difference along axis 1, backward at the last voxel
    np.testing.assert_allclose(G[:, :-1, :, :, 1], fwd, atol=1e-12)
    np.testing.assert_allclose(G[:, -1, :, :, 1], fwd[:, -1], atol=1e-12)

    # Off the grid: column j is the difference of the multilinear interpolant (scipy, order 1) across the cell.
    q = rng.uniform([0, 0, 0], [4, 3, 2], size=(20, 3))
    q[:5, 0] = np.array([0.0, 1.0, 2.0, 3.0, 4.0])  # some integer coordinates on axis 0
    G = np.asarray(S.displacement_gradient_autodiff(u, spacing, q))
    for j, n in enumerate(u.shape[:3]):
        f = np.clip(np.floor(q[:, j]), 0, n - 2)
        lo, hi = q.copy(), q.copy()
        lo[:, j], hi[:, j] = f, f + 1
        for i in range(3):
            diff = (ndimage.map_coordinates(u[..., i], hi.T, order=1) -
                    ndimage.map_coordinates(u[..., i], lo.T, order=1)) / spacing[j]
            np.testing.assert_allclose(G[:, i, j], diff, atol=1e-12)
    # Outside the grid the clamped interpolant is flat.
    out = np.asarray(S.displacement_gradient_autodiff(u, spacing, np.array([[-0.5, 1.5, 1.0], [2.0, 3.5, 1.0]])))
    np.testing.assert_array_equal(out[0, :, 0], 0.0)
    np.testing.assert_array_equal(out[1, :, 1], 0.0)


def test_autodiff_is_exact_on_a_linear_field_everywhere(x64):
    A = np.array([[0.1, -0.2, 0.05], [0.3, 0.0, -0.1], [0.02, 0.04, -0.15]])
    spacing = (0.8, 1.2, 5.0)
    u = _grid_mm((4, 5, 3), spacing) @ A.T
    G = np.asarray(S.displacement_gradient_autodiff(u, spacing))
    np.testing.assert_allclose(G, np.broadcast_to(A, G.shape), atol=1e-12)


def test_check_grads_of_green_lagrange_and_autodiff_strain(x64):
    rng = np.random.default_rng(3)
    u = jnp.asarray(rng.normal(size=(4, 3, 3, 3)) * 0.3)
    spacing = (1.25, 0.9, 4.0)
    check_grads(jax.jit(lambda v: S.green_lagrange(v, spacing)), (u,), order=2, modes=("fwd", "rev"))
    q = jnp.asarray(rng.uniform(0.1, 1.9, size=(6, 3)))  # off integer voxel positions
    check_grads(jax.jit(lambda v: S.green_lagrange_from_gradient(S.displacement_gradient_autodiff(v, spacing, q))),
                (u,), order=1, modes=("fwd", "rev"))  # linear in u before the quadratic checked above


def test_jit_matches_no_jit(x64):
    rng = np.random.default_rng(4)
    u = jnp.asarray(rng.normal(size=(2, 5, 4, 3, 3)))
    spacing = jnp.asarray([1.25, 1.25, 8.0])
    np.testing.assert_array_equal(np.asarray(jax.jit(S.green_lagrange)(u, spacing)),
                                  np.asarray(S.green_lagrange(u, spacing)))
    q = jnp.asarray(rng.uniform(0, 3, size=(7, 3)))
    ad = jax.jit(S.displacement_gradient_autodiff)(u[0], spacing, q)
    np.testing.assert_allclose(np.asarray(ad), np.asarray(S.displacement_gradient_autodiff(u[0], spacing, q)),
                               atol=1e-12)
    basis_fn = jax.jit(S.cardiac_basis, static_argnums=0, static_argnames="dtype")
    args = ((5, 4, 3), spacing, jnp.array([2.0, 2.5, 1.0]), jnp.array([0.1, 0.2, 1.0]))
    b_jit, b = basis_fn(*args, dtype=jnp.float64), S.cardiac_basis(*args, dtype=jnp.float64)
    for a, c in zip(b_jit, b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-12)
    E = S.green_lagrange(u, spacing)
    comps, comps_jit = S.project_strain(E, b), jax.jit(S.project_strain)(E, b)
    for a, c in zip(comps_jit, comps):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-12)
    mask = jnp.zeros((5, 4, 3), bool).at[1:3, 1:3, :].set(True)
    np.testing.assert_allclose(np.asarray(jax.jit(S.global_strain)(comps.rr, mask)),
                               np.asarray(S.global_strain(comps.rr, mask)), atol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="spacing_mm"):
        S.green_lagrange(np.zeros((3, 3, 3, 3)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        S.green_lagrange(np.zeros((3, 3, 3, 3)), (1.0, 1.0))
    with pytest.raises(ValueError, match="u_mm"):
        S.green_lagrange(np.zeros((3, 3, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        S.global_strain(np.ones((2, 3, 3, 3)), np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError, match="mask shape"):
        S.global_strain(np.ones((2, 3, 3, 3)), np.ones((4, 4), bool))


def test_global_strain_is_the_mask_mean_over_a_time_axis():
    rng = np.random.default_rng(5)
    e = rng.normal(size=(4, 3, 4, 2))
    mask = np.zeros((3, 4, 2), bool)
    mask[0, 1, 0] = mask[2, 3, 1] = mask[1, 1, 1] = True
    g = np.asarray(S.global_strain(e, mask))
    expected = (e[:, 0, 1, 0] + e[:, 2, 3, 1] + e[:, 1, 1, 1]) / 3
    np.testing.assert_allclose(g, expected, rtol=1e-6)


# ---------------------------------------------------------------- cardiac basis and centre line


def test_cardiac_basis_is_orthonormal_right_handed_and_counter_clockwise_from_the_apex(x64):
    spacing = np.array([1.25, 1.0, 4.0])
    shape = (6, 7, 4)
    origin = np.array([2.5, 3.0, 4.0])  # (2, 3, 1) in voxels: a voxel centre on the axis
    direction = np.array([0.0, 0.0, 2.0])
    r, c, l = (np.asarray(v) for v in S.cardiac_basis(shape, spacing, origin, direction, dtype=jnp.float64))
    for v in (r, c, l):
        np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(r * c, -1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(r * l, -1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.cross(r, c), l, atol=1e-12)  # right-handed
    # l = +z (base -> apex). Viewed from the apex (+z towards the viewer, x right, y up): a point on +x has r = +x,
    # and c = +y, i.e. counter-clockwise.
    np.testing.assert_allclose(r[4, 3, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c[4, 3, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(c[2, 5, 0], [-1, 0, 0], atol=1e-12)
    # On-axis voxels get the documented fallback (the array axis least aligned with l: x).
    np.testing.assert_allclose(r[2, 3, :], np.tile([1.0, 0, 0], (4, 1)), atol=1e-12)

    tilted = np.array([0.3, -0.5, 1.0])
    r, c, l = (np.asarray(v) for v in S.cardiac_basis(shape, spacing, origin + 0.3, tilted, dtype=jnp.float64))
    np.testing.assert_allclose(np.linalg.det(np.stack([r, c, l], axis=-1)), 1.0, atol=1e-12)
    d = _grid_mm(shape, spacing) - (origin + 0.3)
    assert np.all(np.sum(d * r, -1) > 0)  # r points away from the axis
    np.testing.assert_allclose(np.sum(d * c, -1), 0.0, atol=1e-12)


def _lv_stack(shape, spacing, point, direction, r_cav, r_epi, tiny_apex=True):
    """Discs (cavity 3, myocardium 2) centred on a line; last slices: a tiny cavity, then no LV; an RV blob."""
    X = _grid_mm(shape, spacing)
    labels = np.zeros(shape, np.int32)
    for k in range(shape[2]):
        centre = point + (k * spacing[2] - point[2]) / direction[2] * direction
        rad = np.linalg.norm(X[:, :, k, :2] - centre[:2], axis=-1)
        cav = r_cav if not (tiny_apex and k == shape[2] - 2) else 1.5
        if tiny_apex and k == shape[2] - 1:
            continue
        labels[:, :, k][rad < r_epi] = 2
        labels[:, :, k][rad < cav] = 3
        labels[:3, :3, k] = 1
    return labels


def test_lv_centre_line_recovers_a_tilted_axis():
    spacing = np.array([1.25, 1.25, 5.0])
    direction = np.array([0.25, -0.15, 1.0]) / np.linalg.norm([0.25, -0.15, 1.0])
    point = np.array([18.2, 27.3, 0.0])
    labels = _lv_stack((40, 40, 10), spacing, point, direction, 6.0, 10.0)
    line = S.lv_centre_line(labels, spacing)
    np.testing.assert_array_equal(line.used_slices, np.arange(9))
    angle = np.degrees(np.arccos(np.clip(line.direction @ direction, -1, 1)))
    assert angle < 0.5, angle
    off = line.origin_mm - point
    assert np.linalg.norm(off - (off @ direction) * direction) < 0.2  # the origin lies on the true axis
    # The tiny-cavity slice used the filled epicardium: its centroid is still on the line.
    c8 = line.slice_centroids_mm[8]
    expected8 = point + (8 * spacing[2]) / direction[2] * direction
    assert np.linalg.norm(c8 - expected8) < 0.2

    flipped = S.lv_centre_line(labels, spacing, base_first=False)
    np.testing.assert_allclose(flipped.direction, -line.direction, atol=1e-12)


def test_lv_centre_line_fallbacks():
    spacing = (1.0, 1.0, 8.0)
    labels = np.zeros((12, 12, 5), np.int32)
    labels[3:8, 4:9, 2] = 3
    line = S.lv_centre_line(labels, spacing)
    np.testing.assert_allclose(line.origin_mm, [5.0, 6.0, 16.0])
    np.testing.assert_allclose(line.direction, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(S.lv_centre_line(labels, spacing, base_first=False).direction, [0.0, 0.0, -1.0])
    # A myocardial ring with an unlabelled centre: the filled epicardium gives the ring's centre.
    ring = np.zeros((12, 12, 5), np.int32)
    ring[2:9, 3:10, 1] = 2
    ring[4:7, 5:8, 1] = 0
    np.testing.assert_allclose(S.lv_centre_line(ring, spacing).origin_mm, [5.0, 6.0, 8.0])
    with pytest.raises(ValueError, match="no slice"):
        S.lv_centre_line(np.ones((4, 4, 3), np.int32), spacing)


# ---------------------------------------------------------------- cardiac known answers through the basis


def test_radial_field_in_an_annulus(x64):
    # u_r = beta r^2 around an off-grid axis along z. Analytic: Err = 2 beta r + 2 beta^2 r^2,
    # Ecc = beta r + beta^2 r^2 / 2, all other components 0. In Cartesian components u_x = beta x r is NOT a
    # polynomial (r = sqrt(x^2 + y^2)), so central differences are not exact: |d^3 u / dx_j^3| <= 3 beta / r gives a
    # truncation error <= beta h_j^2 / (2 r) per gradient entry, hence the tolerance 1.25 beta h^2 / r on E.
    beta = 0.01
    spacing = np.array([0.5, 0.45, 3.0])
    shape = (41, 45, 3)
    axis_point = np.array([10.13, 10.27, 0.0])
    X = _grid_mm(shape, spacing)
    d = X - axis_point
    d[..., 2] = 0.0
    r = np.linalg.norm(d, axis=-1)
    u = beta * r[..., None] * d
    comps = S.project_strain(S.green_lagrange(u, spacing),
                             S.cardiac_basis(shape, spacing, axis_point, [0, 0, 1], dtype=jnp.float64))
    ring = (r > 5.0) & (r < 9.0)
    ring[[0, -1]] = ring[:, [0, -1]] = False
    tol = 1.25 * beta * spacing[:2].max() ** 2 / r[ring]
    rr, cc = np.asarray(comps.rr)[ring], np.asarray(comps.cc)[ring]
    assert np.all(np.abs(rr - (2 * beta * r[ring] + 2 * beta**2 * r[ring] ** 2)) <= tol)
    assert np.all(np.abs(cc - (beta * r[ring] + 0.5 * beta**2 * r[ring] ** 2)) <= tol)
    assert np.all(np.abs(np.asarray(comps.rc)[ring]) <= tol)
    for name in ("ll", "rl", "cl"):
        np.testing.assert_allclose(np.asarray(getattr(comps, name))[ring], 0.0, atol=1e-14)


@pytest.mark.parametrize("direction", [(0.0, 0.0, 1.0), (0.2, -0.15, 1.0)])
def test_torsion_of_a_cylinder(x64, direction):
    # Rotation by phi = tau * s about the axis, s = (X - c0).l the position along l (base -> apex). With the
    # documented handedness (c = l x r), a positive tau (counter-clockwise seen from the apex, growing towards it)
    # gives E_cl = +r tau / 2, E_ll = r^2 tau^2 / 2, E_rr = E_cc = E_rc = E_rl = 0.
    # Tolerance: u = R(tau s) d - d with s, d linear in X, so along array axis j
    #   |d^3 u / dX_j^3| <= tau^3 |l_j|^3 r + 3 tau^2 l_j^2 sqrt(1 - l_j^2),
    # column j of G is off by at most b_j = h_j^2 / 6 times that (r taken at the stencil's far end), and
    # |a.dE.b| <= |dG|_F (1 + |G|) <= 1.25 sqrt(sum_j b_j^2).
    tau = 0.03
    spacing = np.array([0.5, 0.5, 1.0])
    shape = (25, 25, 13)
    l = np.asarray(direction) / np.linalg.norm(direction)
    c0 = np.array([6.1, 5.9, 6.2])
    X = _grid_mm(shape, spacing)
    d = X - c0
    s = d @ l
    phi = tau * s[..., None]  # Rodrigues: R d = d cos(phi) + (l x d) sin(phi) + l (l.d)(1 - cos(phi))
    u = d * np.cos(phi) + np.cross(l, d) * np.sin(phi) + l * s[..., None] * (1 - np.cos(phi)) - d
    comps = S.project_strain(S.green_lagrange(u, spacing), S.cardiac_basis(shape, spacing, c0, l, dtype=jnp.float64))
    r = np.linalg.norm(d - s[..., None] * l, axis=-1)
    keep = (r > 1.5) & (r < 5.5)
    keep[[0, -1]] = keep[:, [0, -1]] = keep[:, :, [0, -1]] = False
    r_far = r[keep][:, None] + spacing.max()
    b = spacing**2 / 6 * (tau**3 * np.abs(l) ** 3 * r_far + 3 * tau**2 * l**2 * np.sqrt(1 - l**2))
    tol = 1.25 * np.linalg.norm(b, axis=-1) + 1e-13
    expected = {"ll": r[keep] ** 2 * tau**2 / 2, "cl": r[keep] * tau / 2}
    for name in ("rr", "cc", "ll", "rc", "rl", "cl"):
        got = np.asarray(getattr(comps, name))[keep]
        assert np.all(np.abs(got - expected.get(name, 0.0)) <= tol), (name, np.abs(got - expected.get(name, 0.0)).max())
    assert np.all(np.asarray(comps.cl)[keep] > 0)


def _annulus_labels(shape, spacing, centre_mm, r_cav, r_epi):
    X = _grid_mm(shape, spacing)
    r = np.linalg.norm(X[..., :2] - centre_mm[:2], axis=-1)
    labels = np.zeros(shape, np.int32)
    labels[r < r_epi] = 2
    labels[r < r_cav] = 3
    return labels, r


def test_cardiac_strain_composition(x64):
    spacing = np.array([0.5, 0.5, 3.0])
    shape = (40, 40, 4)
    centre = np.array([9.75, 9.75, 0.0])  # the centre of the in-plane grid: the labels are symmetric around it
    labels, r = _annulus_labels(shape, spacing, centre, 4.0, 8.0)
    X = _grid_mm(shape, spacing)
    d = X - centre
    d[..., 2] = 0
    beta, lam = 0.005, 0.9
    u = np.zeros((3,) + shape + (3,))
    u[1] = beta * r[..., None] * d
    u[2, ..., 2] = (lam - 1) * X[..., 2]
    out = S.cardiac_strain(u, labels, spacing)
    np.testing.assert_allclose(out.centre_line.direction, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(out.centre_line.origin_mm[:2], centre[:2], atol=1e-9)
    assert out.components.rr.shape == (3,) + shape and out.global_mean.rr.shape == (3,)
    myo = labels == 2
    g = {k: np.asarray(v) for k, v in out.global_mean._asdict().items()}
    np.testing.assert_allclose([g[k][0] for k in g], 0.0, atol=1e-15)
    rm = r[myo]
    tol = np.mean(1.25 * beta * spacing[0] ** 2 / rm)  # mean of the per-voxel bound of test_radial_field_in_an_annulus
    assert abs(g["rr"][1] - np.mean(2 * beta * rm + 2 * beta**2 * rm**2)) <= tol
    assert abs(g["cc"][1] - np.mean(beta * rm + 0.5 * beta**2 * rm**2)) <= tol
    np.testing.assert_allclose(g["ll"][2], 0.5 * (lam**2 - 1), atol=1e-13)
    np.testing.assert_allclose([g["rr"][2], g["cc"][2]], 0.0, atol=1e-13)
    auto = S.cardiac_strain(u, labels, spacing, method="autodiff")  # forward differences: exact on linear fields
    np.testing.assert_allclose(np.asarray(auto.global_mean.ll)[2], 0.5 * (lam**2 - 1), atol=1e-13)
    with pytest.raises(ValueError, match="NaN"):
        S.cardiac_strain(np.where(np.arange(3)[:, None, None, None, None] == 1, np.nan, u), labels, spacing)
    with pytest.raises(ValueError, match="method"):
        S.cardiac_strain(u, labels, spacing, method="spline")


def test_cardiac_strain_on_the_lv_box_equals_the_whole_grid_on_the_myocardium():
    """An off-centre, tilted LV with an RV beside it and a random smooth displacement: on the LV box the strain of
    every myocardial voxel, the global means and the long axis are those of the whole grid; 0 outside the box."""
    rng = np.random.default_rng(0)
    spacing = np.array([1.25, 1.25, 8.0])
    shape = (64, 60, 6)
    X = _grid_mm(shape, spacing)
    centre = np.array([30.0, 45.0]) + np.array([0.8, -0.5])[None, :] * np.arange(6)[:, None]   # tilted axis
    r = np.linalg.norm(X[..., :2] - centre[None, None, :, :], axis=-1)
    labels = np.zeros(shape, np.int32)
    labels[r < 16] = 2
    labels[r < 9] = 3
    labels[(np.abs(X[..., 0] - 58) < 6) & (np.abs(X[..., 1] - 30) < 10)] = 1   # an RV patch outside the box
    u = (ndimage.gaussian_filter(rng.normal(size=(3,) + shape + (3,)), (0, 3, 3, 1, 0)) * 20).astype(np.float32)
    whole = S.cardiac_strain(u, labels, spacing)
    box = S.cardiac_strain_lv_box(u, labels, spacing, margin=1)
    myo = labels == 2
    for name in ("rr", "cc", "ll", "rc", "rl", "cl"):
        a, b = np.asarray(getattr(whole.components, name)), np.asarray(getattr(box.components, name))
        assert b.shape == a.shape
        np.testing.assert_allclose(b[:, myo], a[:, myo], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(getattr(box.global_mean, name)),
                                   np.asarray(getattr(whole.global_mean, name)), rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(whole.components.rr)[:, myo]).max() > 1e-3          # a field with strain in it
    # Zero outside the box: the LV's in-plane extent plus the margin, sides rounded up to BOX_STEP voxels.
    lv = np.isin(labels, (2, 3)).any(axis=2)
    i, j = np.nonzero(lv)
    computed = np.any([np.abs(np.asarray(c)).max(axis=(0, 3)) > 0 for c in box.components], axis=0)
    ci, cj = np.nonzero(computed)
    assert ci.min() <= i.min() - 1 and cj.min() <= j.min() - 1 and ci.max() >= i.max() + 1 and cj.max() >= j.max() + 1
    for extent, lv_extent, n in ((ci.max() - ci.min() + 1, i.max() - i.min() + 3, shape[0]),
                                 (cj.max() - cj.min() + 1, j.max() - j.min() + 3, shape[1])):
        assert extent <= min(-(-lv_extent // S.BOX_STEP) * S.BOX_STEP, n)
    assert computed.sum() < computed.size
    np.testing.assert_allclose(box.centre_line.origin_mm, whole.centre_line.origin_mm, atol=1e-9)
    np.testing.assert_allclose(box.centre_line.direction, whole.centre_line.direction, atol=1e-9)
    np.testing.assert_allclose(box.centre_line.slice_centroids_mm, whole.centre_line.slice_centroids_mm, atol=1e-9)
    with pytest.raises(ValueError, match="margin"):
        S.cardiac_strain_lv_box(u, labels, spacing, margin=0)


def test_lv_boxes_of_similar_hearts_share_one_compiled_strain_program():
    # Two LVs a few voxels apart in size and place: one box size, so the second subject compiles nothing new.
    spacing = np.array([1.25, 1.25, 8.0])
    shape = (96, 96, 5)
    X = _grid_mm(shape, spacing)
    u = np.zeros((2,) + shape + (3,), np.float32)
    u[1, ..., 0] = 0.01 * X[..., 0]
    sizes = []
    for centre, radius in (((50.0, 55.0), 20.0), ((58.0, 49.0), 22.0)):
        r = np.linalg.norm(X[..., :2] - np.array(centre), axis=-1)
        labels = np.where(r < radius, 2, 0)
        labels[r < radius - 7] = 3
        S.cardiac_strain_lv_box(u, labels, spacing)
        sizes.append(S._frame_components._cache_size())
    assert sizes[1] == sizes[0]


# ---------------------------------------------------------------- legacy parity path


def _ring_labels(n, centre_vox, r_cav, r_epi, nz=3):
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(i - centre_vox[0], j - centre_vox[1])
    labels = np.zeros((n, n, nz), np.int32)
    labels[r < r_epi] = 2
    labels[r < r_cav] = 3
    return labels, np.repeat(r[:, :, None], nz, axis=2)


def test_legacy_radial_field_roll_and_shift():
    # Ring centred at (12.5, 14.5): centre of mass -> shift (int(3.5), int(1.5)) = (3, 1), which lands the centre
    # on the legacy polar origin (15.5, 15.5) of a 32 x 32 grid, so the projection is exactly radial.
    beta = 0.002
    labels, r = _ring_labels(32, (12.5, 14.5), 5.0, 10.0)
    i, j = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    d = np.stack([i - 12.5, j - 14.5, np.zeros_like(i)], axis=-1)[:, :, None, :] * np.ones((1, 1, 3, 1))
    u = np.stack([np.zeros_like(d), beta * r[..., None] * d])  # two frames: zero, then u_r = beta r^2 (voxels)
    out = S.legacy_strain(u, labels)
    assert out.shift_vox == (3, 1)
    myo = labels == 2
    rm = r[myo]
    err, ecc = out.unrolled.err[1][myo], out.unrolled.ecc[1][myo]
    tol = 1.25 * beta / rm  # truncation bound of central differences on u_x = beta x r (h = 1 voxel)
    assert np.all(np.abs(err - (2 * beta * rm + 2 * beta**2 * rm**2)) <= tol)
    assert np.all(np.abs(ecc - (beta * rm + 0.5 * beta**2 * rm**2)) <= tol)
    np.testing.assert_allclose(out.global_radial, [0.0, np.mean(err)], atol=1e-15)
    np.testing.assert_allclose(out.global_circumferential, [0.0, np.mean(ecc)], atol=1e-15)
    assert abs(out.global_radial[1] - np.mean(2 * beta * rm + 2 * beta**2 * rm**2)) <= np.mean(tol)
    # Rolled and un-rolled maps are the same maps; the rolled labels are the rolled input labels.
    for rolled, unrolled in zip(out.rolled, out.unrolled):
        np.testing.assert_array_equal(unrolled, np.roll(rolled, (-3, -1), axis=(1, 2)))
    np.testing.assert_array_equal(out.labels_rolled, np.roll(labels, (3, 1), axis=(0, 1)))
    # int() truncates towards zero: centre of mass 18.5 -> int(16 - 18.5) = -2 (floor would give -3).
    labels2, _ = _ring_labels(32, (18.5, 10.5), 3.0, 6.0)
    assert S.legacy_strain(np.zeros((32, 32, 3, 3)), labels2).shift_vox == (-2, 5)


def test_legacy_polar_grid_on_an_odd_grid_and_shear_signs():
    # Uniform stretch: E_xx = e, others 0, so Err = cos^2(phi) e, Ecc = sin^2 e, Erc = Ecr = -cos sin e. The polar
    # grid is linspace(-n // 2, n // 2, n): for n = 5 that is [-3, -1.75, -0.5, 0.75, 2] (not symmetric), for
    # n = 4 [-2, -2/3, 2/3, 2]; the +180 degrees flips (cos, sin) and cancels in all four products.
    labels = np.zeros((5, 4, 2), np.int32)
    labels[2, 2, :] = 2  # centre of mass (2, 2): shift (int(0), int(0)) = no roll
    lam = 1.1
    u = np.zeros((5, 4, 2, 3))
    u[..., 0] = (lam - 1) * np.arange(5.0)[:, None, None]
    out = S.legacy_strain(u, labels)
    assert out.shift_vox == (0, 0)
    e = 0.5 * (lam**2 - 1)
    x = np.array([-3, -1.75, -0.5, 0.75, 2])[:, None]
    y = np.array([-2, -2 / 3, 2 / 3, 2])[None, :]
    rho2 = x**2 + y**2
    for k in range(2):
        np.testing.assert_allclose(out.rolled.err[:, :, k], e * x**2 / rho2, atol=1e-14)
        np.testing.assert_allclose(out.rolled.ecc[:, :, k], e * y**2 / rho2, atol=1e-14)
        np.testing.assert_allclose(out.rolled.erc[:, :, k], -e * x * y / rho2, atol=1e-14)
        np.testing.assert_allclose(out.rolled.ecr[:, :, k], -e * x * y / rho2, atol=1e-14)


def test_legacy_matches_physical_path_in_plane_and_shows_the_through_plane_mis_scaling(x64):
    # (a) Isotropic 1 mm voxels, shear u_x = gamma y: the legacy maps equal the physical (r, c) components with
    #     l = +z, including the sign of Erc, away from the wrap-around seams of the roll.
    gamma = 0.2
    labels, _ = _ring_labels(32, (12.5, 14.5), 4.0, 8.0)
    i, j = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    u = np.zeros((32, 32, 3, 3))
    u[..., 0] = gamma * j[:, :, None]
    legacy = S.legacy_strain(u, labels)
    phys = S.project_strain(S.green_lagrange(u, (1.0, 1.0, 1.0)),
                            S.cardiac_basis((32, 32, 3), (1.0, 1.0, 1.0), (12.5, 14.5, 0.0), (0, 0, 1),
                                            dtype=jnp.float64))
    myo = labels == 2
    for name_l, name_p in [("err", "rr"), ("ecc", "cc"), ("erc", "rc"), ("ecr", "rc")]:
        np.testing.assert_allclose(getattr(legacy.unrolled, name_l)[myo], np.asarray(getattr(phys, name_p))[myo],
                                   atol=1e-12)
    assert np.abs(legacy.unrolled.erc[myo]).max() > 0.05

    # (b) 1.25 x 1.25 x 8 mm voxels, u_z = a x (mm): physically E_xx = a^2 / 2; the legacy path in voxels sees
    #     du_z/dx = a * 1.25 / 8, i.e. the in-plane trace Err + Ecc is too small by (dx / dz)^2.
    spacing = np.array([1.25, 1.25, 8.0])
    a = 0.4
    u_mm = np.zeros((32, 32, 3, 3))
    u_mm[..., 2] = a * (i * spacing[0])[:, :, None]
    legacy = S.legacy_strain(u_mm / spacing, labels)
    E = np.asarray(S.green_lagrange(u_mm, spacing))
    np.testing.assert_allclose(E[..., 0, 0], a**2 / 2, atol=1e-13)
    np.testing.assert_allclose((legacy.unrolled.err + legacy.unrolled.ecc)[myo],
                               (a * spacing[0] / spacing[2]) ** 2 / 2, atol=1e-13)


def test_legacy_smoothing_is_an_in_plane_gaussian_per_component():
    rng = np.random.default_rng(6)
    labels, _ = _ring_labels(16, (7.5, 7.5), 2.0, 5.0, nz=4)
    u = rng.normal(size=(16, 16, 4, 3)) * 0.1
    smoothed = np.stack([ndimage.gaussian_filter(u[..., c], sigma=(2, 2, 0)) for c in range(3)], axis=-1)
    a = S.legacy_strain(u, labels, smooth_sigma=2.0)
    b = S.legacy_strain(smoothed, labels)
    for x, y in zip(a.rolled, b.rolled):
        np.testing.assert_allclose(x, y, atol=1e-14)
    with pytest.raises(ValueError, match="lv_label"):
        S.legacy_strain(u, np.zeros((16, 16, 4), np.int32))


def test_legacy_strain_globals_only_are_the_full_maps_globals_bit_for_bit():
    """maps=False (the pipeline's legacy mode) works on the myocardium's box: the same global values as the full
    computation, exactly, also for a myocardium at the array border whose roll wraps around, and with smoothing."""
    rng = np.random.default_rng(7)
    u = rng.normal(size=(3, 40, 36, 4, 3)).astype(np.float32)
    centre = np.zeros((40, 36, 4), np.int32)
    centre[12:28, 10:26] = 2
    centre[16:24, 14:22] = 3
    border = np.zeros((40, 36, 4), np.int32)
    border[0:12, 26:36] = 2
    border[2:8, 29:34] = 3
    for labels in (centre, border):
        for sigma in (None, 2.0):
            full = S.legacy_strain(u, labels, smooth_sigma=sigma)
            fast = S.legacy_strain(u, labels, smooth_sigma=sigma, maps=False)
            assert fast.rolled is None and fast.shift_vox == full.shift_vox
            np.testing.assert_array_equal(fast.global_radial, full.global_radial)
            np.testing.assert_array_equal(fast.global_circumferential, full.global_circumferential)
