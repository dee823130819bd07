"""Phantom rendering: bSSFP signal, noise, partial volume, coil shading, banding, geometry and placement."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from deepstrain_jax.phantom import kinematics as kin
from deepstrain_jax.phantom import render, scanner

# A tiny protocol: 32 x 32 pixels of 5 mm (FOV 160 mm), 10 slices 10 mm apart, 10 frames, no breath-hold shifts.
TINY = dict(matrix=(32, 32), pixel_mm=5.0, n_slices=10, slice_thickness_mm=8.0, slice_spacing_mm=10.0,
            supersample_inplane=2, supersample_slice=3, slice_shift_mm=0.0, coil_shading=0.2, snr_myo=20.0)
N_FRAMES = 10
MYO, BLOOD, FAT = (88.0, 1000.0, 43.0), (79.0, 1387.0, 280.0), (60.0, 250.0, 70.0)


@pytest.fixture(scope="module")
def tiny():
    params = kin.sample_params(1, "NOR", "A", n_frames=N_FRAMES)
    acq = scanner.sample_acquisition(1, params, **TINY)
    geom = scanner.sample_geometry(1, params, acq)
    cine = render.render_cine(params, geom, acq, noise_seed=5)
    return params, acq, geom, cine


# --- signal model -------------------------------------------------------------------------------------------

def _bloch_alternating(pd, t1, t2, flip_deg, tr, df):
    """Steady state of the Bloch equations for +a/-a alternating pulses, by solving the 2-TR fixed point."""
    def rx(a):
        c, s = math.cos(a), math.sin(a)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    b = 2 * math.pi * df * tr * 1e-3
    free = np.diag([math.exp(-tr / t2)] * 2 + [math.exp(-tr / t1)]) @ np.array(
        [[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    rec = np.array([0.0, 0.0, pd * (1 - math.exp(-tr / t1))])
    a = math.radians(flip_deg)
    # M+ (right after a +a pulse) = Rx(a) [F (Rx(-a) [F M+ + rec]) + rec]
    A = rx(a) @ free @ rx(-a) @ free
    c = rx(a) @ (free @ (rx(-a) @ rec) + rec)
    m = np.linalg.solve(np.eye(3) - A, c)
    return math.hypot(m[0], m[1]) * math.exp(-0.5 * tr / t2)


def test_bssfp_signal_matches_a_bloch_simulation():
    with jax.enable_x64(True):
        for props in (MYO, BLOOD, FAT):
            for df in (0.0, 35.0, -80.0, 120.0, 166.0, 240.0):
                got = abs(complex(render.bssfp_signal(*props, 60.0, 3.0, df)))
                assert got == pytest.approx(_bloch_alternating(*props, 60.0, 3.0, df), rel=1e-9)


def test_bssfp_contrast_bands_and_jit():
    myo0, blood0 = render.bssfp_signal(*MYO, 60.0, 3.0), render.bssfp_signal(*BLOOD, 60.0, 3.0)
    assert abs(float(jnp.imag(myo0))) < 1e-6 * float(jnp.real(myo0)) and float(jnp.real(myo0)) > 0
    # Section 6.2: the realistic 1.5 T set gives blood/myocardium ~ 3 at 60 degrees.
    assert 2.7 < float(jnp.abs(blood0) / jnp.abs(myo0)) < 3.3
    band = abs(complex(render.bssfp_signal(*MYO, 60.0, 3.0, 1000.0 / 6.0)))
    assert band < 0.05 * float(jnp.abs(myo0))
    df = jnp.linspace(-300.0, 300.0, 41)
    np.testing.assert_allclose(jnp.abs(render.bssfp_signal(*MYO, 60.0, 3.0, df)),
                               jnp.abs(render.bssfp_signal(*MYO, 60.0, 3.0, df + 1000.0 / 3.0)), rtol=2e-4)
    np.testing.assert_allclose(jnp.abs(render.bssfp_signal(*MYO, 60.0, 3.0, df)),
                               jnp.abs(render.bssfp_signal(*MYO, 60.0, 3.0, -df)), rtol=1e-5)
    f = lambda d: render.bssfp_signal(*MYO, 60.0, 3.0, d)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(df), f(df), rtol=1e-6, atol=1e-6 * float(jnp.abs(myo0)))


def test_rician_noise_statistics():
    rng = np.random.default_rng(0)
    sigma = 3.0
    bg = render.add_rician_noise(np.zeros(400_000), sigma, rng)
    assert bg.dtype == np.float32
    # Rayleigh: mean sigma sqrt(pi/2) = 1.2533 sigma, SD sqrt(2 - pi/2) sigma = 0.6551 sigma.
    assert bg.mean() / sigma == pytest.approx(1.2533, abs=0.006)
    assert bg.std() / sigma == pytest.approx(0.6551, abs=0.006)
    a = 10 * sigma
    hi = render.add_rician_noise(np.full(400_000, a), sigma, rng)
    # High-SNR Rician: mean ~ sqrt(A^2 + sigma^2), SD ~ sigma.
    assert hi.mean() == pytest.approx(math.sqrt(a**2 + sigma**2), rel=2e-3)
    assert hi.std() == pytest.approx(sigma, rel=0.01)
    np.testing.assert_array_equal(render.add_rician_noise(np.array([3.0, -4.0]), 0.0, rng), [3.0, 4.0])
    with pytest.raises(ValueError, match="sigma"):
        render.add_rician_noise(np.zeros(3), -1.0, rng)


def test_subsample_offsets_and_slice_profiles():
    acq = scanner.Acquisition(supersample_inplane=3, supersample_slice=5, slice_thickness_mm=8.0)
    ip, sl, w = render.subsample_offsets(acq)
    assert ip.shape == (9, 2) and np.all(np.abs(ip) < 0.5) and np.allclose(ip.mean(0), 0)
    np.testing.assert_allclose(sl, [-3.2, -1.6, 0.0, 1.6, 3.2])
    np.testing.assert_allclose(w, 0.2)
    acq = dataclasses.replace(acq, slice_profile="gauss", supersample_slice=7)
    _, sl, w = render.subsample_offsets(acq)
    assert w.sum() == pytest.approx(1.0) and np.all(np.abs(sl) < 8.0)
    # Gaussian of FWHM = thickness: relative weight exp(-4 ln 2 (o / FWHM)^2), 1/2 at o = FWHM / 2.
    np.testing.assert_allclose(w / w.max(), np.exp(-4 * math.log(2) * (sl / 8.0) ** 2), rtol=1e-12)


def test_acquisition_rejects_bad_values():
    for bad in (dict(pixel_mm=-1.0), dict(slice_spacing_mm=5.0, slice_thickness_mm=8.0), dict(slice_profile="sinc"),
                dict(snr_myo=0.0), dict(supersample_inplane=0), dict(matrix=(1, 64)), dict(coil_shading=-0.1)):
        with pytest.raises(ValueError):
            scanner.Acquisition(**bad)
    scanner.Acquisition(snr_myo=math.inf)
    with pytest.raises(ValueError, match="unknown acquisition field"):
        scanner.sample_acquisition(0, kin.sample_params(0), pixel=1.0)


def test_coil_shading_and_b0_map(tiny):
    _, _, geom, _ = tiny
    s = render.coil_shading(geom, 0.25)
    assert s.shape == geom.shape
    assert s.min() >= 1 / 1.25 - 1e-12 and s.max() <= 1.25 + 1e-12
    assert np.abs(np.log(s)).max() == pytest.approx(math.log(1.25))
    # Smooth: neighbouring 5 mm pixels differ by a few percent at most.
    assert np.abs(np.diff(np.log(s), axis=0)).max() < 0.05
    np.testing.assert_array_equal(render.coil_shading(geom, 0.0), 1.0)

    h0 = jnp.array([10.0, -20.0, 30.0])
    g = jnp.array([0.1, 0.2, -0.3])
    assert float(render.b0_map_hz(h0, g, h0, 20.0, 150.0)) == pytest.approx(150.0)
    far = h0 + jnp.array([500.0, 0.0, 0.0])
    assert float(render.b0_map_hz(far, g, h0, 20.0, 150.0)) == pytest.approx(50.0, abs=1e-3)
    pts = jax.random.normal(jax.random.PRNGKey(0), (7, 3)) * 30.0
    np.testing.assert_allclose(jax.jit(render.b0_map_hz)(pts, g, h0, 20.0, 150.0),
                               render.b0_map_hz(pts, g, h0, 20.0, 150.0), rtol=1e-6)


# --- protocol and placement ---------------------------------------------------------------------------------

def test_default_protocol_and_placement_are_realistic():
    params = kin.sample_params(3, "NOR", "A")
    ext = scanner.heart_extent(params)
    for seed in range(6):
        acq = scanner.sample_acquisition(seed, params)
        assert 1.25 <= acq.pixel_mm <= 2.0 and acq.matrix[0] * acq.pixel_mm > 160.0
        assert 8 <= acq.n_slices <= 10 and 6.0 <= acq.slice_thickness_mm <= 10.0
        assert acq.slice_thickness_mm <= acq.slice_spacing_mm <= acq.slice_thickness_mm + 4.0
        assert acq.n_slices * acq.slice_spacing_mm >= ext["z_base"] - ext["z_apex"]
        for oblique in (False, True):
            g = scanner.sample_geometry(seed, params, acq, oblique=oblique)
            r = g.rotation
            np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
            assert np.linalg.det(r) == pytest.approx(1.0)
            np.testing.assert_array_equal(g.affine, g.affine.astype(np.float32))
            assert np.linalg.det(g.affine[:3, :3]) > 0
            assert oblique == (np.abs(g.affine[:3, :3] - np.diag(np.diag(g.affine[:3, :3]))).max() > 1e-3)
            # Long axis along the slice normal, apex -> base towards decreasing k (slice 0 basal).
            np.testing.assert_allclose(r[:, 2], -g.direction[:, 2], atol=1e-6)
            # The LV mid-point projects inside the FOV, away from the edges.
            mid = r @ np.array([0.0, 0.0, 0.5 * (ext["z_apex"] + ext["z_base"])]) + g.translation_mm
            q = np.linalg.solve(g.affine[:3, :3], mid - g.affine[:3, 3])
            assert np.all(q[:2] > 0.25 * np.array(acq.matrix)) and np.all(q[:2] < 0.75 * np.array(acq.matrix))


# --- the rendered cine --------------------------------------------------------------------------------------

def test_rendered_cine_types_ranges_and_frames(tiny):
    params, acq, geom, cine = tiny
    assert cine.image.dtype == np.int16 and cine.image.shape == (32, 32, 10, N_FRAMES)
    assert cine.image.min() >= 0 and cine.image.max() <= np.iinfo(np.int16).max
    assert cine.labels.dtype == np.uint8 and set(np.unique(cine.labels)) <= {0, 1, 2, 3}
    assert cine.ed == 0 and cine.es == kin.es_frame(params)
    assert cine.frame_interval_s == pytest.approx(60.0 / float(params.heart_rate_bpm) / N_FRAMES, rel=1e-6)
    np.testing.assert_allclose(cine.t_frac, np.arange(N_FRAMES) / N_FRAMES)
    # Every label is present at ED and the cavity shrinks at ES.
    assert all((cine.labels[..., 0] == lab).sum() > 20 for lab in (1, 2, 3))
    assert (cine.labels[..., cine.es] == 3).sum() < 0.7 * (cine.labels[..., 0] == 3).sum()


def test_noise_has_the_requested_myocardial_snr_and_rayleigh_background(tiny):
    _, acq, _, cine = tiny
    assert cine.sigma == pytest.approx(acq.myo_level / acq.snr_myo)
    bg = cine.image[cine.clean == 0].astype(np.float64)
    assert bg.size > 10_000
    sigma_bg = bg.mean() / math.sqrt(math.pi / 2)  # the background (NEMA) estimate of sigma
    assert sigma_bg == pytest.approx(cine.sigma, rel=0.02)
    assert bg.std() == pytest.approx(0.6551 * cine.sigma, rel=0.03)
    myo = cine.labels[..., 0] == 2
    measured_snr = cine.image[..., 0][myo].mean() / sigma_bg
    assert measured_snr == pytest.approx(acq.snr_myo, rel=0.05)
    assert cine.clean[..., 0][myo].mean() == pytest.approx(acq.myo_level, rel=1e-5)


def test_render_is_reproducible_by_seed(tiny):
    params, acq, geom, cine = tiny
    again = render.render_cine(params, geom, acq, noise_seed=5)
    np.testing.assert_array_equal(again.image, cine.image)
    other = render.render_cine(params, geom, acq, noise_seed=6)
    np.testing.assert_array_equal(other.clean, cine.clean)
    np.testing.assert_array_equal(other.labels, cine.labels)
    bright = cine.clean > 10 * cine.sigma
    diff = other.image[bright].astype(np.float64) - cine.image[bright]
    assert diff.std() == pytest.approx(math.sqrt(2) * cine.sigma, rel=0.05)


def _centre_positions(geom, shape):
    # Independent of the renderer: voxel centre -> world by the affine -> heart frame by the pose.
    q = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    w = q @ geom.affine[:3, :3].T + geom.affine[:3, 3]
    return (w - geom.translation_mm) @ geom.rotation


def _check_labels_against_scene(params, geom, frames, labels):
    h = jnp.asarray(_centre_positions(geom, geom.shape), jnp.float32)
    for n, frame in enumerate(frames):
        centre = np.asarray(kin.TISSUE_TO_LABEL)[np.asarray(kin.scene(h, frame / N_FRAMES, params))]
        rendered = labels[..., n]
        heart = (centre > 0) | (rendered > 0)
        agree = (centre == rendered)[heart].mean()
        assert agree > 0.85, agree
        # Disagreements are partial-volume voxels: a different label lies within one voxel in-plane or
        # one slice away.
        fp = np.ones((3, 3, 3), bool)
        boundary = ndimage.maximum_filter(centre, footprint=fp) != ndimage.minimum_filter(centre, footprint=fp)
        assert np.all(boundary[centre != rendered])


def test_labels_agree_with_the_scene_at_voxel_centres(tiny):
    params, _, geom, cine = tiny
    _check_labels_against_scene(params, geom, (cine.ed, cine.es), cine.labels[..., [cine.ed, cine.es]])


def test_model_b_renders_labels_that_agree_with_its_scene():
    params = kin.sample_params(2, "HCM", "B", n_frames=N_FRAMES)
    acq = scanner.sample_acquisition(2, params, **TINY)
    geom = scanner.sample_geometry(2, params, acq)
    es = kin.es_frame(params)
    _, frac = render.render_noise_free(params, geom, acq, frames=[0, es])
    labels = render.labels_from_fractions(frac)
    assert all((labels[..., 0] == lab).sum() > 10 for lab in (1, 2, 3))
    _check_labels_against_scene(params, geom, (0, es), labels)


def test_rendered_heart_is_where_the_affine_says(tiny):
    params, _, geom, cine = tiny
    lab = cine.labels[..., 0]
    axis_point, axis_dir = geom.translation_mm, geom.rotation[:, 2]
    n_checked = 0
    for k in range(geom.shape[2]):
        cav = np.argwhere(lab[:, :, k] == 3)
        if len(cav) < 12:
            continue
        q = np.array([*cav.mean(0), k])
        w = geom.affine[:3, :3] @ q + geom.affine[:3, 3]
        d = w - axis_point
        off_axis = np.linalg.norm(d - (d @ axis_dir) * axis_dir)
        assert off_axis < 0.25 * geom.spacing_mm[0], (k, off_axis)
        n_checked += 1
    assert n_checked >= 4
    # The RV lies on the septal side (heart x_hat) and the stack runs base -> apex.
    q = np.argwhere(lab == 1).mean(0)
    rv = geom.rotation.T @ (geom.affine[:3, :3] @ q + geom.affine[:3, 3] - axis_point)
    assert math.degrees(math.atan2(rv[1], rv[0])) == pytest.approx(0.0, abs=20.0)
    z_of_slice = [(geom.rotation.T @ (geom.affine[:3, :3] @ [0, 0, k] + geom.affine[:3, 3] - axis_point))[2]
                  for k in range(geom.shape[2])]
    assert np.all(np.diff(z_of_slice) < 0)
    myo_slices = np.flatnonzero((lab == 2).any(axis=(0, 1)))
    assert z_of_slice[myo_slices[0]] > z_of_slice[myo_slices[-1]]


def test_breath_hold_shift_moves_the_slice_content(tiny):
    params, acq, geom, _ = tiny
    # One pixel (5 mm) along array axis 0 on the odd slices: voxel i then images what voxel i + 1 showed.
    shifts = np.zeros((geom.shape[2], 2))
    shifts[1::2, 0] = geom.spacing_mm[0]
    moved = dataclasses.replace(geom, slice_shift_mm=shifts)
    _, base = render.render_noise_free(params, geom, acq, frames=[0])
    _, frac = render.render_noise_free(params, moved, acq, frames=[0])
    np.testing.assert_allclose(frac[:, :, 0::2], base[:, :, 0::2], atol=1e-6)
    close = np.isclose(frac[:-1, :, 1::2], base[1:, :, 1::2], atol=1e-6).all(axis=-1)
    assert close.mean() > 0.999
    np.testing.assert_allclose(scanner.voxel_heart_positions(moved, np.array([3.0, 4.0, 1.0])),
                               scanner.voxel_heart_positions(geom, np.array([4.0, 4.0, 1.0])), atol=1e-9)


def test_adaptive_supersampling_matches_full_supersampling(tiny):
    params, acq, geom, cine = tiny
    sig_a, frac_a = render.render_noise_free(params, geom, acq, frames=[cine.es])
    sig_f, frac_f = render.render_noise_free(params, geom, dataclasses.replace(acq, adaptive=False), frames=[cine.es])
    assert (render.labels_from_fractions(frac_a) == render.labels_from_fractions(frac_f)).mean() > 0.999
    assert np.abs(frac_a - frac_f).max() < 1e-5
    np.testing.assert_allclose(np.abs(sig_a), np.abs(sig_f), atol=1e-4 * np.abs(sig_f).max())


def test_banding_darkens_myocardium_where_off_resonance_nears_half_tr(tiny):
    params, acq, geom, _ = tiny
    mid = 0.5 * (float(params.r_endo_mm) * 2 + float(params.wall_mm))
    hot = np.array([-mid, 0.0, 0.5 * float(params.length_mm)])  # lateral midwall, mid level
    peak = 1000.0 / (2 * acq.tr_ms)
    banded_geom = dataclasses.replace(geom, b0_gradient_hz_per_mm=np.zeros(3), b0_hotspot_mm=hot, b0_peak_hz=peak)
    banded = dataclasses.replace(acq, banding=True)
    sig_b, frac = render.render_noise_free(params, banded_geom, banded, frames=[0])
    sig_0, _ = render.render_noise_free(params, banded_geom, acq, frames=[0])
    pure = frac[..., 0, 2] == 1.0  # every sub-sample is LV myocardium
    ratio = np.abs(sig_b[..., 0])[pure] / np.abs(sig_0[..., 0])[pure]
    df = np.asarray(render.b0_map_hz(jnp.asarray(scanner.voxel_heart_positions(banded_geom)[pure]),
                                     jnp.zeros(3), jnp.asarray(hot), 20.0, peak))
    expected = np.abs(render.bssfp_signal(*MYO, acq.flip_deg, acq.tr_ms, df)) / np.abs(
        render.bssfp_signal(*MYO, acq.flip_deg, acq.tr_ms))
    assert pure.sum() > 20
    np.testing.assert_allclose(ratio, expected, atol=0.1)
    assert ratio.min() < 0.35 and ratio.max() > 0.9
