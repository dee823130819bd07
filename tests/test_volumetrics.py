"""Volumes and clinical indices against analytic solids and hand-counted voxels.

Voxelisation bound: a voxel is labelled when its centre lies inside the solid. A voxel wholly inside or wholly
outside contributes its exact share; only voxels cut by the surface can err, each by at most its own volume.
Hence |V_voxelised - V_analytic| <= B = (N_touching - N_inside) * prod(spacing), with N_touching the voxels
whose box meets the solid and N_inside those whose box lies in it, computed exactly from each box's extreme
points (for these convex solids the box tests reduce to per-axis interval minima and maxima).

On 24 x 24 x 12 voxels B is loose (tens of per cent), so a second check averages the volumes measured on
K^3 copies of the grid shifted by (m + 1/2)/K - 1/2 voxels (m = 0..K-1 per axis): their union is the grid
refined K times, so the mean is bounded by that fine grid's B_K (about B/K), while every array passed to the
code stays small.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deepstrain_jax.cardiac import volumetrics as vm

SPACING = np.array([1.1, 1.3, 2.5])  # mm, anisotropic
SHAPE = (24, 24, 12)
K = 4
ELLIPSOID = dict(centre=(12.3, 15.1, 13.9), axes=(9.0, 11.0, 12.0))
CYLINDER = dict(centre_xy=(12.9, 14.6), radius=9.5, z_range=(5.9, 25.3))  # axis along Z


def _grids(shape, spacing, origin):
    return np.meshgrid(*[o + np.arange(n) * s for n, s, o in zip(shape, spacing, origin)], indexing="ij")


def _sq_range(g, s, c):
    """Min and max of (t - c)^2 over each voxel's interval t in [g - s/2, g + s/2]."""
    lo, hi = g - s / 2, g + s / 2
    dmin = np.where((lo <= c) & (c <= hi), 0.0, np.minimum((lo - c) ** 2, (hi - c) ** 2))
    return dmin, np.maximum((lo - c) ** 2, (hi - c) ** 2)


def _voxelise(kind, grids, spacing):
    """(centre-inside mask, voxel boxes touching the solid, voxel boxes inside it), analytic volume in mm^3."""
    if kind == "ellipsoid":
        c, a = ELLIPSOID["centre"], ELLIPSOID["axes"]
        f = sum((g - ci) ** 2 / ai**2 for g, ci, ai in zip(grids, c, a))
        lo_hi = [_sq_range(g, s, ci) for g, s, ci in zip(grids, spacing, c)]
        fmin = sum(r[0] / ai**2 for r, ai in zip(lo_hi, a))
        fmax = sum(r[1] / ai**2 for r, ai in zip(lo_hi, a))
        return f < 1.0, fmin < 1.0, fmax <= 1.0, 4.0 / 3.0 * np.pi * np.prod(a)
    (cx, cy), radius, (z0, z1) = CYLINDER["centre_xy"], CYLINDER["radius"], CYLINDER["z_range"]
    gx, gy, gz = grids
    lo_hi = [_sq_range(g, s, ci) for g, s, ci in zip((gx, gy), spacing[:2], (cx, cy))]
    dmin, dmax = lo_hi[0][0] + lo_hi[1][0], lo_hi[0][1] + lo_hi[1][1]
    inside = ((gx - cx) ** 2 + (gy - cy) ** 2 < radius**2) & (gz > z0) & (gz < z1)
    touching = (dmin < radius**2) & (gz - spacing[2] / 2 < z1) & (gz + spacing[2] / 2 > z0)
    contained = (dmax <= radius**2) & (gz - spacing[2] / 2 >= z0) & (gz + spacing[2] / 2 <= z1)
    return inside, touching, contained, np.pi * radius**2 * (z1 - z0)


@pytest.mark.parametrize("kind,label,field", [("ellipsoid", 3, "lv_ml"), ("cylinder", 1, "rv_ml"),
                                              ("ellipsoid", 2, "myo_ml")])
def test_voxelised_solids_match_analytic_volume(kind, label, field):
    mask, touching, contained, v_mm3 = _voxelise(kind, _grids(SHAPE, SPACING, (0.0, 0.0, 0.0)), SPACING)
    bound_mm3 = (touching.sum() - contained.sum()) * np.prod(SPACING)
    vols = vm.label_volumes_ml(np.where(mask, label, 0), SPACING)
    assert abs(getattr(vols, field) - v_mm3 / 1000.0) <= bound_mm3 / 1000.0
    assert all(getattr(vols, f) == 0.0 for f in {"lv_ml", "myo_ml", "rv_ml"} - {field})
    # K^3 shifted grids: the mean volume is bounded by the K-times finer grid's cut-voxel volume
    shifts = [(np.array(m) + 0.5) / K - 0.5 for m in itertools.product(range(K), repeat=3)]
    measured = [getattr(vm.label_volumes_ml(np.where(_voxelise(kind, _grids(SHAPE, SPACING, o * SPACING), SPACING)[0],
                                                     label, 0), SPACING), field) for o in shifts]
    fine_spacing = SPACING / K
    _, touching, contained, _ = _voxelise(kind, _grids(np.multiply(SHAPE, K), fine_spacing,
                                                       (0.5 / K - 0.5) * SPACING), fine_spacing)
    fine_bound_mm3 = (touching.sum() - contained.sum()) * np.prod(fine_spacing)
    assert fine_bound_mm3 < 0.25 * v_mm3  # informative
    assert abs(np.mean(measured) - v_mm3 / 1000.0) <= fine_bound_mm3 / 1000.0


def test_box_on_voxel_faces_is_exact():
    lab = np.zeros(SHAPE, np.int64)
    lab[3:13, 5:20, 2:9] = 3  # 10 x 15 x 7 voxels
    expected_ml = (10 * 1.1) * (15 * 1.3) * (7 * 2.5) / 1000.0
    assert vm.label_volumes_ml(lab, SPACING).lv_ml == pytest.approx(expected_ml, rel=1e-12)


def _frame(n_lv, n_myo, n_rv, shape=(4, 3, 2)):
    flat = np.zeros(int(np.prod(shape)), np.int64)
    flat[:n_lv], flat[n_lv:n_lv + n_myo], flat[n_lv + n_myo:n_lv + n_myo + n_rv] = 3, 2, 1
    return np.random.default_rng(n_lv).permutation(flat).reshape(shape)


def test_clinical_indices_by_hand():
    # voxel = 1.5 x 2 x 4 mm = 12 mm^3 = 0.012 mL; frames (LV, myo, RV) voxels: (7,5,5), (10,5,4), (4,6,2).
    # RV indices are read at the LV's ED/ES frames, not at the RV's own extremes (frame 0 has the most RV).
    labels = np.stack([_frame(7, 5, 5), _frame(10, 5, 4), _frame(4, 6, 2)])
    ci = vm.clinical_indices(labels, (1.5, 2.0, 4.0))
    assert (ci.ed, ci.es) == (1, 2)
    assert ci.lv_edv_ml == pytest.approx(0.120) and ci.lv_esv_ml == pytest.approx(0.048)
    assert ci.lv_sv_ml == pytest.approx(0.072) and ci.lv_ef_pct == pytest.approx(60.0)
    assert ci.lv_mass_g == pytest.approx(5 * 0.012 * 1.05)  # ED myocardium, not the ES one (6 voxels)
    assert ci.rv_edv_ml == pytest.approx(0.048) and ci.rv_esv_ml == pytest.approx(0.024)
    assert ci.rv_sv_ml == pytest.approx(0.024) and ci.rv_ef_pct == pytest.approx(50.0)
    np.testing.assert_allclose(ci.lv_volume_ml, [0.084, 0.120, 0.048])
    np.testing.assert_allclose(ci.myo_volume_ml, [0.060, 0.060, 0.072])
    np.testing.assert_allclose(ci.rv_volume_ml, [0.060, 0.048, 0.024])
    given = vm.clinical_indices(labels, (1.5, 2.0, 4.0), ed=0, es=2)  # frames given (e.g. from Info.cfg - 1)
    assert (given.ed, given.es) == (0, 2) and given.lv_ef_pct == pytest.approx(100 * (7 - 4) / 7)
    assert given.lv_mass_g == pytest.approx(5 * 0.012 * 1.05)
    lv_only = vm.clinical_indices(np.where(labels == 1, 0, labels), (1.5, 2.0, 4.0), include_rv=False)
    assert lv_only.lv_ef_pct == pytest.approx(60.0) and np.isnan(lv_only.rv_ef_pct)


def test_zero_edv_raises():
    labels = np.stack([_frame(0, 5, 3), _frame(0, 4, 2)])
    with pytest.raises(ValueError, match="LV EDV is zero"):
        vm.clinical_indices(labels, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="RV EDV is zero"):
        vm.clinical_indices(np.stack([_frame(5, 5, 0), _frame(3, 5, 0)]), (1.0, 1.0, 1.0))


def test_select_ed_es():
    assert vm.select_ed_es([5.0, 9.0, 9.0, 3.0, 3.0, 7.0]) == (1, 3)  # ties: earliest frame
    assert vm.select_ed_es([2.0, 8.0, 5.0]) == (1, 0)  # ES searched over all frames, also before ED
    assert vm.select_ed_es([2.0, 8.0, 5.0], ed=2) == (2, 0)
    assert vm.select_ed_es([2.0, 8.0, 5.0], es=np.int64(2)) == (1, 2)
    assert vm.select_ed_es([4.0, 4.0]) == (0, 0)
    for kwargs in ({"ed": 3}, {"es": -1}, {"ed": 1.0}, {"es": True}):
        with pytest.raises(ValueError, match="frame"):
            vm.select_ed_es([2.0, 8.0, 5.0], **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        vm.select_ed_es([2.0, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        vm.select_ed_es(np.ones((2, 3)))


def test_time_axis_and_single_frame():
    labels = np.stack([_frame(7, 5, 3), _frame(10, 5, 4), _frame(4, 6, 2)])
    series = vm.label_volumes_ml(labels, (1.5, 2.0, 4.0))
    assert series.lv_ml.shape == (3,)
    for t in range(3):
        one = vm.label_volumes_ml(labels[t].astype(np.float32), (1.5, 2.0, 4.0))
        assert np.shape(one.lv_ml) == ()
        assert (one.lv_ml, one.myo_ml, one.rv_ml) == (series.lv_ml[t], series.myo_ml[t], series.rv_ml[t])


def test_bad_inputs():
    lab = _frame(7, 5, 3)
    with pytest.raises(ValueError, match="outside the ACDC labels"):
        vm.label_volumes_ml(np.where(lab == 1, 4, lab), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="non-integer"):
        vm.label_volumes_ml(lab + 0.5, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="3 entries"):
        vm.label_volumes_ml(lab, (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        vm.label_volumes_ml(lab, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="4-D"):
        vm.clinical_indices(lab, (1.0, 1.0, 1.0))
