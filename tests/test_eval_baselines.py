"""Classical motion baselines (eval.baselines): known smooth motions are recovered in CarMEN's convention."""

import sys

import numpy as np
import pytest

from deepstrain_jax.ops.warp import warp
from eval import baselines
from eval.baselines import multiscale as ms
from eval.baselines import sitk_registration

SHAPE = (40, 40, 2)
SPACING = (1.5, 1.5, 8.0)
CENTRE = np.array([19.5, 19.5])
HAS_SITK = True
try:
    import SimpleITK as sitk
except ImportError:  # the test extra installs it; keep the numpy baselines testable without it
    HAS_SITK = False
needs_sitk = pytest.mark.skipif(not HAS_SITK, reason="SimpleITK not installed")
METHODS = ["demons", "optical_flow",
           pytest.param("simpleitk_bspline", marks=needs_sitk), pytest.param("simpleitk_demons", marks=needs_sitk)]


def blob(p):
    """A smooth textured object: Gaussian spots inside a ring, slightly different per slice."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rng = np.random.default_rng(0)
    out = np.zeros(x.shape)
    for _ in range(12):
        cx, cy = CENTRE + rng.uniform(-9, 9, 2)
        s, a = rng.uniform(2.5, 4.0), rng.uniform(0.5, 1.0)
        out += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    r = np.hypot(x - CENTRE[0], y - CENTRE[1])
    return (out + 0.8 * np.exp(-((r - 12) ** 2) / 8.0)) * (1 + 0.1 * z)


def field(p):
    """Smooth in-plane motion in voxels: translation + shear + a sine, up to ~2.3 voxels."""
    x, y = p[..., 0], p[..., 1]
    u0 = 1.5 + 0.04 * (y - CENTRE[1]) + 0.5 * np.sin(2 * np.pi * x / SHAPE[0])
    u1 = -1.0 + 0.03 * (x - CENTRE[0])
    return np.stack([u0, u1, np.zeros_like(u0)], -1)


def make_pair(u_fn=field):
    """``(image_ed, image_t, u_true)`` with ``image_t(X + u(X)) = image_ed(X)`` exactly (analytic images).

    ``image_t(x) = blob(X)`` where ``x = X + u(X)``; ``X`` is found by the fixed point ``X <- x - u(X)``
    (a contraction: ``|grad u| < 1``).
    """
    x = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1)
    p = x.copy()
    for _ in range(60):
        p = x - u_fn(p)
    return blob(x), blob(p), u_fn(x)


def inside_object():
    x = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1)
    return np.hypot(x[..., 0] - CENTRE[0], x[..., 1] - CENTRE[1]) < 13


@pytest.fixture(scope="module")
def pair():
    return make_pair()


def mean_error(u, u_true):
    return float(np.linalg.norm(u - u_true, axis=-1)[inside_object()].mean())


@pytest.mark.parametrize("method", METHODS)
def test_recovers_smooth_motion(pair, method):
    image_ed, image_t, u_true = pair
    u = baselines.METHODS[method](image_ed, image_t, SPACING)
    assert u.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(u[..., 2], 0.0)  # in-plane by default
    zero_error = mean_error(np.zeros_like(u_true), u_true)
    assert zero_error > 1.5
    # Stated tolerance: mean end-point error inside the object below 0.2 voxel (< 1/8 of the zero field's).
    assert mean_error(u, u_true) < 0.2, (method, mean_error(u, u_true))


@pytest.mark.parametrize("method", ["demons", pytest.param("simpleitk_bspline", marks=needs_sitk)])
def test_3d_mode_recovers_in_plane_motion(pair, method):
    """On a stack whose slices are alike, 3D mode finds the in-plane motion and no through-plane motion."""
    image_ed, image_t, u_true = (np.repeat(a[:, :, :1], 4, axis=2) for a in pair)
    u = baselines.METHODS[method](image_ed, image_t, SPACING, mode="3d")
    mask = np.repeat(inside_object()[:, :, :1], 4, axis=2)
    assert np.linalg.norm(u - u_true, axis=-1)[mask].mean() < 0.2
    assert np.abs(u[..., 2])[mask].max() < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_package_warp_of_frame_t_by_the_estimate_matches_ed(pair, method):
    """The estimate is in CarMEN's convention: ops.warp.warp(image_t, u_vox) ≈ image_ed."""
    image_ed, image_t, _ = pair
    u = baselines.METHODS[method](image_ed, image_t, SPACING)
    warped = np.asarray(warp(image_t[None, ..., None].astype(np.float32), u[None].astype(np.float32)))[0, ..., 0]
    mask = inside_object()
    before = np.abs(image_t - image_ed)[mask].mean()
    assert np.abs(warped - image_ed)[mask].mean() < 0.2 * before


@pytest.mark.parametrize("method", METHODS)
def test_pure_translation_sign_and_axis(method):
    """Content moving by +d (image_t(x) = image_ed(x - d)) gives u = +d, along the right axes."""
    d = np.array([2.0, -1.0, 0.0])
    image_ed, image_t, _ = make_pair(lambda p: np.broadcast_to(d, p.shape))
    u = baselines.METHODS[method](image_ed, image_t, SPACING)
    np.testing.assert_allclose(u[inside_object()].mean(axis=0), d, atol=0.1)


@needs_sitk
def test_sitk_field_conversion_axes_and_units():
    """A physical translation on an anisotropic, non-square grid comes back per array axis in voxels."""
    spacing = (1.5, 2.0, 4.0)
    reference = sitk_registration.to_sitk(np.zeros((5, 7, 3)), spacing)
    assert reference.GetSize() == (5, 7, 3)  # ITK index (i, j, k) = our array index
    shift_mm = (3.0, -1.0, 2.0)  # fixed point p maps to moving point p + shift
    u = sitk_registration.transform_to_u_vox(sitk.TranslationTransform(3, shift_mm), reference)
    assert u.shape == (5, 7, 3, 3)
    np.testing.assert_allclose(u, np.broadcast_to(np.divide(shift_mm, spacing), u.shape), atol=1e-12)
    # A 2D field whose value varies along x only: the transposition must put it on array axis 0.
    image = sitk_registration.to_sitk(np.arange(6.0)[:, None] * np.ones((6, 4)), (1.0, 1.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).T[:, 0], np.arange(6.0))


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(pair, method):
    image_ed, image_t, _ = pair
    fn = baselines.METHODS[method]
    np.testing.assert_array_equal(fn(image_ed, image_t, SPACING), fn(image_ed, image_t, SPACING))


def test_missing_simpleitk_says_how_to_install(monkeypatch, pair):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # makes `import SimpleITK` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[baselines\]"'):
        baselines.estimate_motion_simpleitk_bspline(*pair[:2], SPACING)


def test_bad_arguments(pair):
    image_ed, image_t, _ = pair
    with pytest.raises(ValueError, match="one shape"):
        baselines.estimate_motion_demons(image_ed, image_t[:-1], SPACING)
    with pytest.raises(ValueError, match="mode"):
        baselines.estimate_motion_demons(image_ed, image_t, SPACING, mode="4d")
    with pytest.raises(ValueError, match="spacing_mm"):
        baselines.estimate_motion_optical_flow(image_ed, image_t, (1.0, 0.0, 1.0))


def test_multiscale_upsample_keeps_a_linear_field():
    """Carrying u = a X (coarse voxels) to the fine grid gives r a (X / r) = a X in fine voxels."""
    coarse = np.zeros((10, 10, 2, 3))
    coarse[..., 0] = 0.1 * np.indices((10, 10, 2))[1]
    fine = ms.upsample_field(coarse, (2, 2, 1), (19, 19, 2))
    np.testing.assert_allclose(fine[..., 0], 2 * 0.1 * np.indices((19, 19, 2))[1] / 2, atol=1e-12)
