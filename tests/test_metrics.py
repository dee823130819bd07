"""metrics: Dice, surface distances, EPE, agreement and ICC against hand-computed and brute-force values."""

import jax
import numpy as np
import pytest
from scipy import stats

from deepstrain_jax import metrics

SPACING = (2.5, 1.25, 0.8)  # anisotropic on purpose: every axis has its own scale


# ---------------------------------------------------------------------------------------------- Dice

def test_dice_by_hand():
    a = np.array([[1, 1, 2, 0],
                  [3, 3, 0, 2]])
    b = np.array([[1, 0, 2, 2],
                  [3, 0, 0, 2]])
    # label 1: |A|=2, |B|=1, |A∩B|=1 -> 2/3; label 2: 2, 3, 2 -> 4/5; label 3: 2, 1, 1 -> 2/3
    np.testing.assert_allclose(metrics.dice(a, b), [2 / 3, 4 / 5, 2 / 3], rtol=1e-15)
    np.testing.assert_allclose(metrics.dice(a, b, labels=(3, 1, 2)), [2 / 3, 2 / 3, 4 / 5], rtol=1e-15)
    # Disjoint structures score 0; identical maps score 1.
    assert metrics.dice([1, 0], [0, 1], labels=(1,))[0] == 0.0
    np.testing.assert_array_equal(metrics.dice(a, a), [1.0, 1.0, 1.0])


def test_dice_both_empty_convention():
    a = np.zeros((3, 3), dtype=int)
    a[0, 0] = 1
    out = metrics.dice(a, a, labels=(1, 4))
    assert out[0] == 1.0 and out[1] == 1.0  # default: both empty -> 1 (current medpy dc)
    assert metrics.dice(a, a, labels=(4,), both_empty=0.0)[0] == 0.0  # medpy <= 0.4 / ACDC-era script
    assert np.isnan(metrics.dice(a, a, labels=(4,), both_empty=np.nan)[0])
    # One empty, one not: 0 regardless of both_empty.
    assert metrics.dice(a, np.zeros_like(a), labels=(1,), both_empty=np.nan)[0] == 0.0


def test_dice_jnp_matches_numpy_and_jit():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(8, 8, 4)).astype(np.int32)
    b = np.where(rng.random(a.shape) < 0.3, rng.integers(0, 4, size=a.shape), a).astype(np.int32)
    labels = (1, 2, 3, 5)  # 5 is absent from both
    expected = metrics.dice(a, b, labels=labels)
    eager = np.asarray(metrics.dice_jnp(a, b, labels=labels))
    jitted = np.asarray(jax.jit(metrics.dice_jnp, static_argnames=("labels", "both_empty"))(a, b, labels=labels))
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_allclose(eager, expected, rtol=1e-6)
    assert eager[3] == 1.0


def test_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        metrics.dice(np.zeros((2, 3)), np.zeros((3, 2)))


# ------------------------------------------------------------------------------- surface distances

@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hausdorff_of_shifted_box_is_shift_times_spacing(axis):
    # Every surface voxel of the box has its translate on the other surface (distance k s), and the face
    # leading the shift is at exactly k s from the nearest voxel of the shifted box: HD = k s.
    k = 2
    a = np.zeros((16, 14, 12), dtype=bool)
    a[3:9, 3:8, 2:7] = True
    b = np.roll(a, k, axis=axis)
    expected = k * SPACING[axis]
    assert metrics.hausdorff_distance(a, b, SPACING) == pytest.approx(expected, rel=1e-12)
    assert metrics.hausdorff_distance(b, a, SPACING) == pytest.approx(expected, rel=1e-12)
    d_ab, d_ba = metrics.surface_distances(a, b, SPACING)
    assert d_ab.max() == pytest.approx(expected) and d_ba.max() == pytest.approx(expected)


def _slab_and_patch():
    # A: a one-voxel-thick slab x = 1 (36 voxels, all surface). B: the same slab plus a 2x2 patch at x = 4.
    # d(A -> B) = 36 zeros; d(B -> A) = 36 zeros and 4 values of 3 * 2.5 mm = 7.5 mm.
    a = np.zeros((8, 6, 6), dtype=bool)
    a[1] = True
    b = a.copy()
    b[4, :2, :2] = True
    return a, b


def test_hd95_and_assd_conventions_by_hand():
    a, b = _slab_and_patch()
    assert metrics.hausdorff_distance(a, b, SPACING) == pytest.approx(7.5)
    # Pooled: 76 values (72 zeros, 4 x 7.5); P95 rank 0.95 * 75 = 71.25 -> 0.25 * 7.5.
    assert metrics.hausdorff_distance_95(a, b, SPACING) == pytest.approx(0.25 * 7.5)
    # Max of directed: P95 of (36 zeros, 4 x 7.5) at rank 0.95 * 39 = 37.05 -> 7.5; the other way 0.
    assert metrics.hausdorff_distance_95(a, b, SPACING, convention="max_directed") == pytest.approx(7.5)
    # ASSD pooled: 4 * 7.5 / 76; mean of directed means: (0 + 4 * 7.5 / 40) / 2.
    assert metrics.assd(a, b, SPACING) == pytest.approx(30 / 76)
    assert metrics.assd(a, b, SPACING, convention="mean_directed") == pytest.approx(0.375)
    with pytest.raises(ValueError, match="convention"):
        metrics.assd(a, b, SPACING, convention="max_directed")


def _brute_force_surface_distances(a, b, spacing):
    def surface_points(m):
        padded = np.pad(m, 1, constant_values=False)
        inner = tuple(slice(1, -1) for _ in range(m.ndim))
        exposed = np.zeros_like(m)
        for ax in range(m.ndim):
            for step in (-1, 1):
                exposed |= ~np.roll(padded, step, axis=ax)[inner]
        return np.argwhere(m & exposed) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return dist.min(axis=1), dist.min(axis=0)


@pytest.mark.parametrize("shape,spacing", [((9, 8, 6), SPACING), ((11, 7), (0.7, 1.9))])
def test_surface_metrics_match_brute_force_all_pairs(shape, spacing):
    rng = np.random.default_rng(len(shape))
    a = rng.random(shape) < 0.45
    b = rng.random(shape) < 0.35
    ref_ab, ref_ba = _brute_force_surface_distances(a, b, spacing)
    d_ab, d_ba = metrics.surface_distances(a, b, spacing)
    np.testing.assert_allclose(d_ab, ref_ab, rtol=1e-12)
    np.testing.assert_allclose(d_ba, ref_ba, rtol=1e-12)
    pooled = np.concatenate([ref_ab, ref_ba])
    assert metrics.hausdorff_distance(a, b, spacing) == pytest.approx(pooled.max())
    assert metrics.hausdorff_distance_95(a, b, spacing) == pytest.approx(np.percentile(pooled, 95))
    assert metrics.hausdorff_distance_95(a, b, spacing, convention="max_directed") == pytest.approx(
        max(np.percentile(ref_ab, 95), np.percentile(ref_ba, 95)))
    assert metrics.assd(a, b, spacing) == pytest.approx(pooled.mean())
    assert metrics.assd(a, b, spacing, convention="mean_directed") == pytest.approx(
        0.5 * (ref_ab.mean() + ref_ba.mean()))


def test_surface_metrics_per_label():
    a, b = _slab_and_patch()
    la = np.where(a, 2, 0)
    lb = np.where(b, 2, 0)
    la[6, 3:5, 3:5] = 3
    lb[6, 3:5, 3:5] = 3
    res = metrics.surface_metrics(la, lb, SPACING, labels=(2, 3))
    assert res.labels == (2, 3)
    np.testing.assert_allclose(res.hd_mm, [7.5, 0.0])
    np.testing.assert_allclose(res.hd95_mm, [0.25 * 7.5, 0.0])
    np.testing.assert_allclose(res.assd_mm, [30 / 76, 0.0])
    with pytest.raises(ValueError, match="label 1 is absent from labels_a and labels_b"):
        metrics.surface_metrics(la, lb, SPACING)
    lb[6] = 0
    with pytest.raises(ValueError, match="label 3 is absent from labels_b"):
        metrics.surface_metrics(la, lb, SPACING, labels=(2, 3))
    res = metrics.surface_metrics(la, lb, SPACING, labels=(2, 3), on_empty="nan")
    assert res.hd_mm[0] == pytest.approx(7.5) and np.isnan(res.hd_mm[1]) and np.isnan(res.assd_mm[1])


def test_surface_distance_argument_errors():
    a = np.zeros((4, 4, 4), dtype=bool)
    a[1:3, 1:3, 1:3] = True
    empty = np.zeros_like(a)
    with pytest.raises(ValueError, match="mask b is empty"):
        metrics.hausdorff_distance(a, empty, SPACING)
    with pytest.raises(ValueError, match="mask a is empty"):
        metrics.assd(empty, a, SPACING)
    with pytest.raises(ValueError, match="positive"):
        metrics.hausdorff_distance(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="one entry per array axis"):
        metrics.hausdorff_distance(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="same shape"):
        metrics.hausdorff_distance(a, a[:3], SPACING)


# ------------------------------------------------------------------------------------------- EPE

def _two_frame_fields():
    # Frame 0: error (3, 4, 0) mm everywhere -> 5 mm. Frame 1: error (x index, 0, 0) mm -> values 0..3,
    # each on 6 voxels of the (4, 3, 2) grid.
    shape = (4, 3, 2)
    u_true = np.zeros((2, *shape, 3))
    u_pred = np.zeros_like(u_true)
    u_pred[0] = (3.0, 4.0, 0.0)
    u_pred[1, ..., 0] = np.arange(4)[:, None, None]
    return u_pred, u_true


def test_dense_epe_known_fields():
    u_pred, u_true = _two_frame_fields()
    res = metrics.dense_epe(u_pred, u_true)
    assert res.error_mm.shape == (2, 4, 3, 2)
    np.testing.assert_allclose(res.error_mm[0], 5.0)
    np.testing.assert_allclose(res.mean_mm, [5.0, 1.5])
    # Frame 1: sum of squared deviations 6 * (2.25 + 0.25 + 0.25 + 2.25) = 30 over 23 dof.
    np.testing.assert_allclose(res.sd_mm, [0.0, np.sqrt(30 / 23)])
    np.testing.assert_allclose(res.median_mm, [5.0, 1.5])
    # 24 sorted values: P25 at rank 5.75 (between 0 and 1), P75 at rank 17.25 (between 2 and 3).
    np.testing.assert_allclose(res.q25_mm, [5.0, 0.75])
    np.testing.assert_allclose(res.q75_mm, [5.0, 2.25])
    np.testing.assert_allclose(res.iqr_mm, [0.0, 1.5])
    np.testing.assert_array_equal(res.n, [24, 24])


def test_dense_epe_masks():
    u_pred, u_true = _two_frame_fields()
    mask = np.zeros((4, 3, 2), dtype=bool)
    mask[3] = True  # shared by both frames
    res = metrics.dense_epe(u_pred, u_true, mask)
    np.testing.assert_allclose(res.mean_mm, [5.0, 3.0])
    np.testing.assert_array_equal(res.n, [6, 6])
    per_frame = np.zeros((2, 4, 3, 2), dtype=bool)
    per_frame[0, 0, 0, 0] = True
    per_frame[1, 1:3] = True
    res = metrics.dense_epe(u_pred, u_true, per_frame)
    np.testing.assert_allclose(res.mean_mm, [5.0, 1.5])
    assert np.isnan(res.sd_mm[0])  # a single voxel has no sample SD
    np.testing.assert_allclose(res.sd_mm[1], np.sqrt(6 * 0.25 * 2 / 11))
    # A single frame without a time axis gives scalar summaries.
    single = metrics.dense_epe(u_pred[1], u_true[1], mask)
    assert np.shape(single.mean_mm) == () and float(single.mean_mm) == 3.0
    empty_first = per_frame.copy()
    empty_first[0] = False
    with pytest.raises(ValueError, match=r"selects no voxels in frame \(0,\)"):
        metrics.dense_epe(u_pred, u_true, empty_first)
    with pytest.raises(ValueError, match="mask must have shape"):
        metrics.dense_epe(u_pred, u_true, mask[:2])
    with pytest.raises(ValueError, match="same shape"):
        metrics.dense_epe(u_pred, u_true[0])


def test_epe_components():
    u_true = np.zeros((3, 2, 2, 3))
    u_pred = np.broadcast_to(np.array([3.0, 4.0, 12.0]), u_true.shape)
    comp = metrics.epe_components(u_pred, u_true)
    np.testing.assert_allclose(comp.in_plane.error_mm, 5.0)
    np.testing.assert_allclose(comp.through_plane.error_mm, 12.0)
    assert float(comp.in_plane.mean_mm) == pytest.approx(5.0)
    assert float(metrics.dense_epe(u_pred, u_true).mean_mm) == pytest.approx(13.0)
    with pytest.raises(ValueError, match="3D"):
        metrics.epe_components(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)))


def test_landmark_epe_with_linear_field():
    # u(X, t) = M_t X_mm + c_t is affine, so trilinear interpolation at off-grid landmarks is exact; the true
    # positions are the exact ones plus offsets of known length (0, 5 and 3 mm; 13, 0 and 3 mm).
    spacing = np.array([1.25, 1.5, 8.0])
    shape = (6, 5, 4)
    grid_mm = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) * spacing
    m = np.array([[[0.05, -0.02, 0.01], [0.03, 0.04, 0.0], [0.0, 0.01, -0.03]],
                  [[-0.1, 0.02, 0.0], [0.01, 0.08, 0.02], [0.02, 0.0, 0.05]]])
    c = np.array([[0.5, -1.0, 0.25], [1.5, 0.2, -0.7]])
    u = np.einsum("tij,xyzj->txyzi", m, grid_mm) + c[:, None, None, None, :]
    pts_vox = np.array([[1.3, 2.7, 0.4], [4.9, 0.2, 2.5], [2.5, 3.5, 1.75]])
    exact = pts_vox * spacing + np.einsum("tij,lj->tli", m, pts_vox * spacing) + c[:, None, :]
    offsets = np.array([[[0, 0, 0], [3, 4, 0], [1, 2, 2]],
                        [[5, 0, 12], [0, 0, 0], [2, -1, 2]]], dtype=float)
    res = metrics.landmark_epe(u, pts_vox, exact + offsets, spacing)
    np.testing.assert_allclose(res.error_mm, [[0, 5, 3], [13, 0, 3]], atol=1e-9)
    np.testing.assert_allclose(res.mean_mm, [8 / 3, 16 / 3], atol=1e-9)
    np.testing.assert_allclose(res.median_mm, [3, 3], atol=1e-9)
    # Single frame, no time axis.
    one = metrics.landmark_epe(u[1], pts_vox, exact[1] + offsets[1], spacing)
    np.testing.assert_allclose(one.error_mm, [13, 0, 3], atol=1e-9)
    with pytest.raises(ValueError, match="outside the grid"):
        metrics.landmark_epe(u, pts_vox + [0, 0, 2.0], exact, spacing)
    with pytest.raises(ValueError, match="landmarks_t_mm must have shape"):
        metrics.landmark_epe(u, pts_vox, exact[0], spacing)


# ------------------------------------------------------------------------------ agreement / repeatability

A_HAND = np.array([10.0, 12.0, 14.0, 16.0])
B_HAND = np.array([9.0, 12.0, 12.0, 17.0])  # d = [1, 0, 2, -1], means = [9.5, 12, 13, 16.5]


def test_bland_altman_by_hand():
    ba = metrics.bland_altman(A_HAND, B_HAND)
    sd = np.sqrt(5 / 3)  # deviations from the bias 0.5: [0.5, -0.5, 1.5, -1.5]
    assert ba.bias == pytest.approx(0.5)
    assert ba.sd == pytest.approx(sd)
    assert ba.lower_loa == pytest.approx(0.5 - 1.96 * sd)
    assert ba.upper_loa == pytest.approx(0.5 + 1.96 * sd)
    # Regression of d on the means: Sxy = -6.5, Sxx = 25.25 around the mean 12.75.
    assert ba.slope == pytest.approx(-26 / 101)
    assert ba.intercept == pytest.approx(0.5 + 26 / 101 * 12.75)
    np.testing.assert_allclose(ba.differences, [1, 0, 2, -1])
    np.testing.assert_allclose(ba.means, [9.5, 12, 13, 16.5])
    assert ba.n == 4


def test_bland_altman_proportional_bias_and_percent():
    b = np.array([50.0, 80.0, 120.0, 200.0, 260.0])
    a = 1.1 * b  # d = 0.1 b and m = 1.05 b, so d = (0.1 / 1.05) m exactly
    ba = metrics.bland_altman(a, b)
    assert ba.slope == pytest.approx(0.1 / 1.05)
    assert ba.intercept == pytest.approx(0.0, abs=1e-10)
    assert ba.slope_p < 1e-6
    pct = metrics.bland_altman(a, b, percent=True)
    assert pct.bias == pytest.approx(100 * 0.1 / 1.05)
    assert pct.sd == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="at least 3"):
        metrics.bland_altman([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.bland_altman([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])


def test_pearson_and_lin_ccc_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.pearson_r(a, 2 * a) == pytest.approx(1.0)
    # Lin: means 2.5 and 5, variances (1/n) 1.25 and 5, covariance 2.5 -> 5 / (1.25 + 5 + 6.25) = 0.4.
    assert metrics.lin_ccc(a, 2 * a) == pytest.approx(0.4)
    # A pure offset keeps r = 1 but costs concordance: 2.5 / (1.25 + 1.25 + 1) = 5/7.
    assert metrics.lin_ccc(a, a + 1) == pytest.approx(5 / 7)
    assert metrics.lin_ccc(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert metrics.pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y)[0], rel=1e-12)
    with pytest.raises(ValueError, match="constant"):
        metrics.pearson_r(a, np.ones(4))


def test_repeatability_by_hand():
    rep = metrics.repeatability_coefficient(A_HAND, B_HAND)
    assert rep.sd_diff == pytest.approx(np.sqrt(5 / 3))
    assert rep.rc == pytest.approx(1.96 * np.sqrt(5 / 3))
    assert rep.bias == pytest.approx(0.5)
    assert rep.sigma_w == pytest.approx(np.sqrt(6 / 8))  # sum d^2 = 6 over 2n = 8
    assert rep.rc_sigma_w == pytest.approx(1.96 * np.sqrt(2) * np.sqrt(6 / 8))
    assert rep.rc_sigma_w == pytest.approx(2.77 * rep.sigma_w, rel=1e-3)
    # Grand mean of all 8 measurements: 102 / 8 = 12.75.
    assert metrics.coefficient_of_variation(A_HAND, B_HAND) == pytest.approx(100 * np.sqrt(0.75) / 12.75)


def test_absolute_relative_change_by_hand():
    np.testing.assert_allclose(metrics.absolute_relative_change(A_HAND, B_HAND),
                               [100 / 9, 0, 200 / 12, 100 / 17])
    np.testing.assert_allclose(metrics.absolute_relative_change(A_HAND, B_HAND, reference="mean"),
                               [100 / 9.5, 0, 200 / 13, 100 / 16.5])
    # Negative strains: a magnitude relative to |reference|.
    np.testing.assert_allclose(metrics.absolute_relative_change([-18.0], [-20.0]), [10.0])
    assert metrics.absolute_relative_change(np.ones((2, 3)), 2 * np.ones((2, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="zero"):
        metrics.absolute_relative_change([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="reference must be"):
        metrics.absolute_relative_change([1.0], [1.0], reference="first")


# ------------------------------------------------------------------------------------------- ICC

SHROUT_FLEISS = np.array([[9, 2, 5, 8],
                          [6, 1, 3, 2],
                          [8, 4, 6, 8],
                          [7, 1, 2, 6],
                          [10, 5, 6, 9],
                          [6, 2, 4, 7]], dtype=float)


def test_icc_shrout_fleiss_published_values():
    # Shrout & Fleiss 1979, Tables 1-2: BMS 11.24, WMS 6.26, JMS 32.49, EMS 1.02;
    # ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71.
    res = {kind: metrics.icc(SHROUT_FLEISS, kind) for kind in ("1", "A,1", "C,1")}
    r = res["A,1"]
    assert (r.n, r.k) == (6, 4)
    np.testing.assert_allclose([r.msr, r.msw, r.msc, r.mse], [11.24, 6.26, 32.49, 1.02], atol=0.005)
    assert res["1"].value == pytest.approx(0.17, abs=0.005)
    assert res["A,1"].value == pytest.approx(0.29, abs=0.005)
    assert res["C,1"].value == pytest.approx(0.71, abs=0.005)
    for out in res.values():
        assert out.ci_low < out.value < out.ci_high


def test_icc_hand_computed_anova():
    x = np.array([[1.0, 2.0], [3.0, 5.0], [5.0, 5.0]])
    # Row means 1.5, 4, 5; column means 3, 4; grand 3.5. SSR = 13, SSC = 1.5, SSE = 1, SSW = 2.5.
    r = metrics.icc(x, "A,1")
    np.testing.assert_allclose([r.msr, r.msc, r.mse, r.msw], [6.5, 1.5, 0.5, 2.5 / 3], rtol=1e-12)
    assert r.value == pytest.approx(18 / 23)
    assert metrics.icc(x, "C,1").value == pytest.approx(6 / 7)
    assert metrics.icc(x, "1").value == pytest.approx(17 / 22)


@pytest.mark.parametrize("kind", ["1", "C,1"])
def test_icc_exact_intervals_invert_the_f_pivot(kind):
    # (1 - rho) / (1 + (k - 1) rho) * F0 ~ F(df1, df2): at the bounds the pivot sits at the 1 - alpha/2 and
    # alpha/2 quantiles.
    r = metrics.icc(SHROUT_FLEISS, kind, confidence=0.9)
    k = r.k
    pivot = lambda rho: r.f_stat * (1 - rho) / (1 + (k - 1) * rho)  # noqa: E731
    assert stats.f.cdf(pivot(r.ci_low), r.df1, r.df2) == pytest.approx(0.95)
    assert stats.f.cdf(pivot(r.ci_high), r.df1, r.df2) == pytest.approx(0.05)
    assert r.p_value == pytest.approx(stats.f.sf(r.f_stat, r.df1, r.df2))


def test_icc_a1_interval_matches_mcgraw_wong_formula():
    x = SHROUT_FLEISS
    n, k = x.shape
    msr, msc, mse = 11.241666666666669, 32.486111111111114, 1.0194444444444444  # hand ANOVA of the table
    p = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    a = k * p / (n * (1 - p))
    b = 1 + k * p * (n - 1) / (n * (1 - p))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    f_hi = stats.f.isf(0.025, n - 1, v)
    f_lo = stats.f.isf(0.025, v, n - 1)
    low = n * (msr - f_hi * mse) / (f_hi * (k * msc + (k * n - k - n) * mse) + n * msr)
    high = n * (f_lo * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_lo * msr)
    r = metrics.icc(x, "A,1")
    assert r.ci_df2 == pytest.approx(v)
    assert (r.ci_low, r.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_icc_interval_coverage_monte_carlo():
    # Two-way random model x_ij = r_i + c_j + e_ij: ICC(A,1) = sr^2 / (sr^2 + sc^2 + se^2) and
    # ICC(C,1) = ICC(1) (one-way data, c = 0) = sr^2 / (sr^2 + se^2). 95% intervals should cover ~95%.
    rng = np.random.default_rng(0)
    n, k, sims = 10, 3, 1000
    sr, sc, se = 1.0, 0.5, 0.7
    truth = {"A,1": sr**2 / (sr**2 + sc**2 + se**2), "C,1": sr**2 / (sr**2 + se**2),
             "1": sr**2 / (sr**2 + se**2)}
    for kind, rho in truth.items():
        hits = 0
        for _ in range(sims):
            col = rng.normal(0, sc, (1, k)) if kind != "1" else 0.0
            x = rng.normal(0, sr, (n, 1)) + col + rng.normal(0, se, (n, k))
            r = metrics.icc(x, kind)
            hits += r.ci_low <= rho <= r.ci_high
        assert 0.925 <= hits / sims <= 0.975, (kind, hits / sims)


def test_icc_argument_errors():
    x = SHROUT_FLEISS.copy()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        metrics.icc(x)
    with pytest.raises(ValueError, match="kind"):
        metrics.icc(SHROUT_FLEISS, kind="ICC2")
    with pytest.raises(ValueError, match="shape"):
        metrics.icc(np.ones((5, 1)))


def test_icc_of_perfect_agreement_is_one_with_nan_bounds():
    from deepstrain_jax.metrics import icc

    x = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    for kind in ("A,1", "C,1", "1"):
        r = icc(x, kind)
        assert r.value == 1.0 and np.isnan(r.ci_low) and np.isnan(r.ci_high)
    shifted = icc(np.array([[1.0, 2.0], [2.0, 3.0], [4.0, 5.0]]), "A,1")  # MSE = 0, MSC > 0
    # (MSR - 0) / (MSR + k MSC / n): MSR = 2 * var of row means = 2 * 7/3, MSC = 3 * 0.5, k = 2, n = 3.
    msr, msc = 2 * np.var([1.5, 2.5, 4.5], ddof=1), 3 * np.sum((np.array([7 / 3, 10 / 3]) - 17 / 6) ** 2)
    assert shifted.value == pytest.approx(msr / (msr + 2 * msc / 3))
