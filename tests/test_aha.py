"""AHA segmentation on analytic ring phantoms whose sectors are known in closed form.

The phantom: an LV ring (cavity r < 5 mm, myocardium 5-10 mm) about an off-grid centre, an RV crescent outside
the epicardium spanning +-60 deg about the septal direction (so the true insertions are the 1|2 and 3|4
boundaries and both sector layouts agree), an LVOT slice with the ring opened on the free wall, six full-ring
slices and a solid apical cap. Rotations are applied analytically (regenerating the masks), not by resampling.
Expected sectors come from the AHA definition written independently below; voxels within MARGIN_DEG of a
true boundary are not compared, because detected insertions are off by a few degrees on a 1 mm grid.
"""

from __future__ import annotations

import numpy as np
import pytest

from deepstrain_jax.cardiac import aha

SPACING = (1.25, 1.0, 6.0)
SHAPE = (36, 36, 8)
CENTRE = (17.3, 17.6)  # voxels, off-grid so no voxel sits exactly on a sector boundary
R_ENDO, R_EPI = 5.0, 10.0
MARGIN_DEG = 10.0
# slice 0 LVOT (open ring), 1-6 full rings (n = 6 -> 2 basal, 2 mid, 2 apical), 7 apical cap
LEVELS_BASE_FIRST = [1, 1, 1, 2, 2, 3, 3, 4]


def _polar_mm(shape, spacing, centre):
    x = (np.arange(shape[0]) - centre[0]) * spacing[0]
    y = (np.arange(shape[1]) - centre[1]) * spacing[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return np.hypot(xx, yy), np.rad2deg(np.arctan2(yy, xx))


def _angdiff(a, b):
    return (np.asarray(a) - b + 180.0) % 360.0 - 180.0


def make_lv(septal_deg=7.0, *, shape=SHAPE, spacing=SPACING, centre=CENTRE, ring=range(1, 7), lvot=(0,),
            cap=(7,), rv_slices=range(0, 5)):
    r, th = _polar_mm(shape, spacing, centre)
    lab = np.zeros(shape, np.int64)
    for z in range(shape[2]):
        sl = lab[:, :, z]
        if z in ring or z in lvot:
            sl[r < R_ENDO] = 3
            sl[(r >= R_ENDO) & (r < R_EPI)] = 2
        if z in lvot:  # open the ring on the free wall: cavity meets background
            sl[(sl == 2) & (np.abs(_angdiff(th, septal_deg + 180.0)) < 40.0)] = 0
        if z in cap:
            sl[r < 0.6 * R_EPI] = 2
        if z in rv_slices:
            sl[(r >= R_EPI) & (r < R_EPI + 6.0) & (np.abs(_angdiff(th, septal_deg)) < 60.0)] = 1
    return lab


def expected_segments(shape, septal_deg, sigma, levels, *, spacing=SPACING, centre=CENTRE):
    """AHA sector of every voxel from its true angle, and its angular distance to the nearest boundary.

    Basal/mid: anterior insertion at septal - sigma 60; psi = sigma (theta - anterior) in [0, 360) gives
    [0, 60) 2, [60, 120) 3, [120, 180) 4, [180, 240) 5, [240, 300) 6, [300, 360) 1. Apical: 90 deg sectors
    centred on septal (14), septal + sigma 90 (15, inferior), opposite (16), septal - sigma 90 (13, anterior).
    """
    _, th = _polar_mm(shape, spacing, centre)
    psi = np.mod(sigma * (th - (septal_deg - sigma * 60.0)), 360.0)
    ring_id = (np.floor(psi / 60.0).astype(int) + 1) % 6 + 1
    ring_dist = np.minimum(np.mod(psi, 60.0), 60.0 - np.mod(psi, 60.0))
    phi = np.mod(sigma * (th - septal_deg) + 45.0, 360.0)
    apical_id = np.array([14, 15, 16, 13])[np.floor(phi / 90.0).astype(int)]
    apical_dist = np.minimum(np.mod(phi, 90.0), 90.0 - np.mod(phi, 90.0))
    exp = np.zeros(shape, int)
    dist = np.full(shape, np.inf)
    for z, lev in enumerate(levels):
        if lev in (1, 2):
            exp[:, :, z], dist[:, :, z] = ring_id + 6 * (lev - 1), ring_dist
        elif lev == 3:
            exp[:, :, z], dist[:, :, z] = apical_id, apical_dist
        elif lev == 4:
            exp[:, :, z] = 17
    return exp, dist


def assert_segments_match(seg, lab, septal_deg, sigma, levels):
    myo = lab == 2
    np.testing.assert_array_equal(seg > 0, myo)  # every myocardium voxel labelled, nothing else
    exp, dist = expected_segments(lab.shape, septal_deg, sigma, levels)
    check = myo & (dist > MARGIN_DEG)
    assert check.sum() > 0.6 * myo.sum()
    bad = check & (seg != exp)
    assert not bad.any(), f"{bad.sum()} voxels off: got {seg[bad][:8]}, expected {exp[bad][:8]}"


def _probe(lab, z, angle_deg, r_mm=7.5):
    """The myocardium voxel of slice z nearest the mid-wall point at angle_deg."""
    p = np.array(CENTRE) * SPACING[:2] + r_mm * np.array([np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))])
    ij = np.argwhere(lab[:, :, z] == 2)
    k = np.argmin(np.sum((ij * SPACING[:2] - p) ** 2, axis=1))
    return int(ij[k, 0]), int(ij[k, 1]), z


def test_full_ring_definition_and_levels():
    lab = make_lv()
    np.testing.assert_array_equal(aha.full_ring_slices(lab), [False] + [True] * 6 + [False])
    np.testing.assert_array_equal(aha.slice_levels(lab), LEVELS_BASE_FIRST)
    np.testing.assert_array_equal(aha.slice_levels(make_lv(cap=())), LEVELS_BASE_FIRST[:7] + [0])
    # seven ring slices: ceil(7/3) = 3 basal, up to ceil(14/3) = 5 -> 2 mid, 2 apical
    np.testing.assert_array_equal(aha.slice_levels(make_lv(ring=range(0, 7), lvot=(), cap=())),
                                  [1, 1, 1, 2, 2, 3, 3, 0])
    # a one-voxel myocardial loop connected only diagonally still closes the ring
    sl = np.zeros((7, 7), int)
    sl[3, 3] = 3
    for i, j in [(1, 3), (2, 2), (2, 4), (3, 1), (3, 5), (4, 2), (4, 4), (5, 3)]:
        sl[i, j] = 2
    assert aha.full_ring_slices(sl[:, :, None])[0]
    sl[3, 5] = 0  # open it
    assert not aha.full_ring_slices(sl[:, :, None])[0]
    with pytest.raises(ValueError, match="full myocardial ring"):
        aha.slice_levels(make_lv(ring=(), cap=()))


@pytest.mark.parametrize("septal_deg", [7.0, 180.0, -100.0])
def test_insertion_points_near_truth(septal_deg):
    ins = aha.rv_insertion_points(make_lv(septal_deg), SPACING)
    pitch = np.rad2deg(max(SPACING[:2]) / R_EPI)  # angular size of one voxel at the epicardium, 7.2 deg
    assert abs(_angdiff(ins.pooled_anterior_deg, septal_deg - 60.0)) < pitch
    assert abs(_angdiff(ins.pooled_inferior_deg, septal_deg + 60.0)) < pitch
    assert abs(_angdiff(ins.pooled_septal_deg, septal_deg)) < pitch / 2
    np.testing.assert_array_equal(ins.pooled_slices, [3, 4])  # mid level slices with RV contact
    assert np.all(np.isnan(ins.anterior_deg[5:])) and not np.any(np.isnan(ins.anterior_deg[:5]))
    assert np.all((ins.anterior_deg[:5] >= -180) & (ins.anterior_deg[:5] < 180))
    np.testing.assert_allclose(ins.centre_vox[1], CENTRE, atol=0.1)


@pytest.mark.parametrize("septal_deg,layout", [(7.0, "insertions"), (7.0, "fixed"), (180.0, "insertions"),
                                               (-100.0, "fixed")])
def test_segments_match_analytic_sectors(septal_deg, layout):
    lab = make_lv(septal_deg)
    seg = aha.aha_segments(lab, SPACING, sector_layout=layout)
    assert_segments_match(seg, lab, septal_deg, +1, LEVELS_BASE_FIRST)


def test_points_at_known_angles():
    s = 7.0
    lab = make_lv(s)
    seg = aha.aha_segments(lab, SPACING)
    # base_first, no affine: anterior = septal - 90 deg, inferior = septal + 90 deg
    ring = {1: s - 90, 2: s - 30, 3: s + 30, 4: s + 90, 5: s + 150, 6: s - 150}
    for z, offset in [(0, 0), (1, 0), (2, 0), (3, 6), (4, 6)]:
        for sid, ang in ring.items():
            assert seg[_probe(lab, z, ang)] == sid + offset, (z, sid)
    for z in (5, 6):
        for sid, ang in {13: s - 90, 14: s, 15: s + 90, 16: s + 180}.items():
            assert seg[_probe(lab, z, ang)] == sid, (z, sid)
    assert np.all(seg[:, :, 7][lab[:, :, 7] == 2] == 17)


def test_segment_counts_per_level_cap_and_16_segments():
    lab = make_lv()
    seg = aha.aha_segments(lab, SPACING)
    per_level = {lev: set(np.unique(seg[:, :, np.array(LEVELS_BASE_FIRST) == lev])) - {0} for lev in (1, 2, 3, 4)}
    assert per_level == {1: set(range(1, 7)), 2: set(range(7, 13)), 3: set(range(13, 17)), 4: {17}}
    seg16 = aha.aha_segments(lab, SPACING, n_segments=16)
    np.testing.assert_array_equal(seg16[:, :, :7], seg[:, :, :7])
    cap = seg16[:, :, 7][lab[:, :, 7] == 2]
    assert set(np.unique(cap)) == {13, 14, 15, 16}  # cap merged into the apical ring by angle
    exp, dist = expected_segments(SHAPE, 7.0, +1, [3] * 8)
    ok = (lab[:, :, 7] == 2) & (dist[:, :, 7] > MARGIN_DEG)
    np.testing.assert_array_equal(seg16[:, :, 7][ok], exp[:, :, 7][ok])
    no_cap = make_lv(cap=())
    seg_nc = aha.aha_segments(no_cap, SPACING)
    assert 17 not in seg_nc
    assert_segments_match(seg_nc, no_cap, 7.0, +1, LEVELS_BASE_FIRST[:7] + [0])


def test_rotation_by_multiples_of_60_rotates_labels():
    s0 = 7.0
    ref = aha.aha_segments(make_lv(s0), SPACING)
    lab0 = make_lv(s0)
    for k in range(1, 6):
        s = s0 + 60.0 * k
        lab = make_lv(s)
        seg = aha.aha_segments(lab, SPACING)
        assert_segments_match(seg, lab, s, +1, LEVELS_BASE_FIRST)
        # at fixed sector-centre probes, the label found is the one 60k degrees back before rotation
        for z in (1, 3):
            probes = [_probe(lab0, z, s0 + 30 + 60 * m) for m in range(6)]
            for m in range(6):
                assert seg[probes[m]] == ref[probes[(m - k) % 6]], (k, z, m)


@pytest.mark.parametrize("offset_vox", [(15, 0), (10, 10), (-15, 0), (0, -15), (-10, 10)])
def test_rv_on_either_side_never_swaps_septum_and_lateral(offset_vox):
    # RV: a disc of radius 11 mm centred offset_vox from the LV, outside the epicardium (the original's
    # unsigned LV->RV angle put the septum on the lateral side for (+15, 0) and (+10, +10))
    shape, spacing, centre, r_rv = (48, 48, 4), (1.25, 1.0, 8.0), (23.6, 23.3), 11.0
    r, th = _polar_mm(shape, spacing, centre)
    r_to_rv, _ = _polar_mm(shape, spacing, np.add(centre, offset_vox))
    sl = np.where(r < R_ENDO, 3, np.where(r < R_EPI, 2, np.where(r_to_rv < r_rv, 1, 0)))
    lab = np.repeat(sl[:, :, None], shape[2], axis=2)
    rv_mm = np.array(offset_vox) * spacing[:2]
    rv_deg, d = np.rad2deg(np.arctan2(rv_mm[1], rv_mm[0])), np.hypot(*rv_mm)
    # insertions where the RV circle crosses the epicardium, at rv_deg -+ alpha
    alpha = np.rad2deg(np.arccos((d**2 + R_EPI**2 - r_rv**2) / (2 * d * R_EPI)))

    def direction(seg, ids):
        sel = np.isin(seg[:, :, 1], ids)
        return np.rad2deg(np.angle(np.exp(1j * np.deg2rad(th[sel])).mean()))

    for layout, anterior_centre in [("insertions", rv_deg - 45.0 - 0.75 * alpha), ("fixed", rv_deg - 90.0)]:
        seg = aha.aha_segments(lab, spacing, sector_layout=layout)
        assert abs(_angdiff(direction(seg, [2, 3]), rv_deg)) < 10.0  # septum faces the RV
        assert abs(_angdiff(direction(seg, [5, 6]), rv_deg + 180.0)) < 10.0  # lateral wall faces away
        # segment 1 spans the last quarter of the free wall before the anterior insertion (sigma = +1)
        assert abs(_angdiff(direction(seg, [1]), anterior_centre)) < 10.0


def test_mirrored_affine_swaps_anterior_and_inferior():
    lab = make_lv()
    seg = aha.aha_segments(lab, SPACING)
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # proper: det +1
    proper = np.eye(4)
    proper[:3, :3] = rotation * SPACING
    np.testing.assert_array_equal(aha.aha_segments(lab, SPACING, affine=proper), seg)
    mirrored = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    seg_m = aha.aha_segments(lab, SPACING, affine=mirrored)
    assert_segments_match(seg_m, lab, 7.0, -1, LEVELS_BASE_FIRST)
    swap = np.array([0, 4, 3, 2, 1, 6, 5, 10, 9, 8, 7, 12, 11, 15, 14, 13, 16, 17])
    _, dist = expected_segments(SHAPE, 7.0, +1, LEVELS_BASE_FIRST)
    far = (lab == 2) & (dist > MARGIN_DEG)
    np.testing.assert_array_equal(seg_m[far], swap[seg[far]])
    ins, ins_m = (aha.rv_insertion_points(lab, SPACING, affine=a) for a in (None, mirrored))
    assert ins_m.pooled_anterior_deg == pytest.approx(ins.pooled_inferior_deg, abs=1e-9)
    assert ins_m.pooled_septal_deg == pytest.approx(ins.pooled_septal_deg, abs=1e-9)


def test_slice_order_and_base_first():
    lab = make_lv()
    seg = aha.aha_segments(lab, SPACING)
    affine = np.diag([*SPACING, 1.0])
    # the same heart stored apex-first: the array is mirrored, and so is its affine (slice column negated)
    flipped_affine = affine.copy()
    flipped_affine[:3, 2] *= -1.0
    seg_rev = aha.aha_segments(lab[:, :, ::-1], SPACING, base_first=False, affine=flipped_affine)
    np.testing.assert_array_equal(seg_rev, seg[:, :, ::-1])
    # the same array declared apex-first: levels reverse (cap slice 7 becomes basal, LVOT slice 0 apical) and
    # the right-handed anatomy puts anterior where inferior was
    levels = aha.slice_levels(lab, base_first=False)
    np.testing.assert_array_equal(levels, [3, 3, 3, 2, 2, 1, 1, 1])
    seg_bf = aha.aha_segments(lab, SPACING, base_first=False)
    lab_nocap_view = lab.copy()
    lab_nocap_view[:, :, 7] = np.where(lab[:, :, 7] == 2, 0, lab[:, :, 7])  # solid disc: no sector to check
    assert_segments_match(seg_bf * (lab_nocap_view == 2), lab_nocap_view, 7.0, -1, levels)
    assert set(np.unique(seg_bf[:, :, 7])) - {0} <= set(range(1, 7))


def test_given_insertions_and_errors():
    s = 7.0
    no_rv = make_lv(s, rv_slices=())
    with pytest.raises(ValueError, match="RV"):
        aha.aha_segments(no_rv, SPACING)
    seg = aha.aha_segments(no_rv, SPACING, insertions_deg=(s - 60.0, s + 60.0))
    assert_segments_match(seg, no_rv, s, +1, LEVELS_BASE_FIRST)
    lab = make_lv(s)
    with pytest.raises(ValueError, match="outside the ACDC labels"):
        aha.aha_segments(np.where(lab == 1, 5, lab), SPACING)
    with pytest.raises(ValueError, match="positive"):
        aha.aha_segments(lab, (1.25, -1.0, 6.0))
    with pytest.raises(ValueError, match="n_segments"):
        aha.aha_segments(lab, SPACING, n_segments=18)
    with pytest.raises(ValueError, match="coincide"):
        aha.aha_segments(lab, SPACING, insertions_deg=(10.0, 10.0))


def test_segment_means_and_reductions_by_hand():
    seg = np.zeros((3, 2, 2), np.int32)
    seg[0, 0, 0] = seg[0, 1, 0] = 1
    seg[1, 0, 0] = seg[1, 1, 0] = seg[2, 0, 0] = 2
    seg[2, 1, 1] = 17
    v = np.zeros((3, 2, 2))
    v[0, 0, 0], v[0, 1, 0] = 1.0, 3.0  # segment 1: mean 2, std 1
    v[1, 0, 0], v[1, 1, 0], v[2, 0, 0] = 2.0, 4.0, 9.0  # segment 2: mean 5, median 4
    v[2, 1, 1] = -7.0
    v[0, 0, 1] = 100.0  # background: ignored
    m = aha.segment_means(v, seg)
    assert m.shape == (17,)
    assert (m[0], m[1], m[16]) == (2.0, 5.0, -7.0)
    assert np.all(np.isnan(m[2:16]))
    series = np.stack([v, 2.0 * v + 1.0])  # (T, X, Y, Z)
    mt = aha.segment_means(series, seg)
    assert mt.shape == (2, 17)
    np.testing.assert_array_equal(mt[1, [0, 1, 16]], [5.0, 11.0, -13.0])
    assert aha.segment_reduce(v, seg, reduce="std")[0] == 1.0
    assert aha.segment_reduce(v, seg, reduce="median")[1] == 4.0
    count = aha.segment_reduce(series, seg, reduce="count")
    np.testing.assert_array_equal(count[0, [0, 1, 16]], [2, 3, 1])
    assert count[0, 5] == 0
    with pytest.raises(ValueError, match="outside 0..16"):
        aha.segment_means(v, seg, n_segments=16)
    with pytest.raises(ValueError, match="shape"):
        aha.segment_means(v[:2], seg)


def test_bullseye_geometry():
    b = aha.bullseye(np.arange(17.0))
    centre_deg = lambda s: (b.theta_start_deg[s - 1] + b.theta_end_deg[s - 1]) / 2.0 % 360.0  # noqa: E731
    assert (b.theta_start_deg[0], b.theta_end_deg[0]) == (60.0, 120.0)  # anterior 1 centred at the top
    assert centre_deg(1) == 90.0 and centre_deg(4) == 270.0 and centre_deg(7) == 90.0
    assert b.theta_end_deg[1] == 180.0 == b.theta_start_deg[2]  # septal midline between 2 and 3, on the left
    x, y = b.label_xy.T
    assert x[1] < 0 < y[1] and x[2] < 0 and y[2] < 0  # 2 upper left, 3 lower left
    assert x[4] > 0 > y[4] and x[5] > 0 < y[5]  # 5 lower right, 6 upper right
    assert np.isclose(x[0], 0.0, atol=1e-12) and y[0] > 0
    assert centre_deg(13) == 90.0 and centre_deg(14) == 180.0 and centre_deg(15) == 270.0 and centre_deg(16) == 0.0
    np.testing.assert_array_equal(np.diff(b.theta_end_deg - b.theta_start_deg)[:5], 0)
    assert b.r_inner[0] == 3 and b.r_outer[0] == 4 and b.r_inner[6] == 2 and b.r_inner[12] == 1
    assert (b.r_inner[16], b.r_outer[16], b.theta_end_deg[16] - b.theta_start_deg[16]) == (0, 1, 360)
    np.testing.assert_array_equal(b.value, np.arange(17.0))
    b16 = aha.bullseye(np.ones(16))
    assert b16.segment.tolist() == list(range(1, 17)) and b16.r_inner.min() == 1
    with pytest.raises(ValueError, match="16 or 17"):
        aha.bullseye(np.ones(18))
