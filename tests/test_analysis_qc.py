"""Motion QC against analytic fields, the results schema checker, and the phantom comparison's arithmetic."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from deepstrain_jax.analysis import qc
from deepstrain_jax.analysis.results import check_results
from deepstrain_jax.ops.warp import interpolate


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)


def test_jacobian_determinant_of_a_homogeneous_deformation():
    # u = (A - I) X in mm with spacing s: F = A everywhere, det F = det A.
    spacing = np.array([1.25, 1.25, 8.0])
    a = np.array([[1.1, 0.05, 0.0], [0.0, 0.9, 0.02], [0.01, 0.0, 0.95]], np.float32)
    x_mm = _grid((6, 7, 5)) * spacing.astype(np.float32)
    u = x_mm @ (a - np.eye(3, dtype=np.float32)).T
    det = qc.jacobian_determinant(np.stack([np.zeros_like(u), u]), spacing)
    np.testing.assert_allclose(det[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(det[1], np.linalg.det(a), rtol=1e-5)


def test_folding_statistics_count_non_positive_determinants():
    det = np.ones((2, 4, 4, 2), np.float32)
    det[1, 0, 0, 0] = -0.5  # inside the mask
    det[1, 3, 3, 1] = 0.0   # inside the mask: det F = 0 counts as folded
    det[0, 1, 1, 1] = -2.0  # outside the mask: ignored
    mask = np.zeros((4, 4, 2), bool)
    mask[:2] = True
    mask[3, 3, 1] = True
    mask[1, 1, 1] = False
    stats = qc.folding_statistics(det, mask)
    m = mask.sum()
    assert stats["folded_fraction"] == pytest.approx(2 / (2 * m))
    assert stats["worst_frame"] == 1 and stats["folded_fraction_worst_frame"] == pytest.approx(2 / m)
    assert stats["det_f"]["min"] == -0.5 and stats["det_f"]["max"] == 1.0 and stats["det_f"]["median"] == 1.0
    assert np.isnan(qc.folding_statistics(det, np.zeros((4, 4, 2), bool))["folded_fraction"])


def test_cycle_closure_is_zero_for_an_exact_inverse_and_measures_the_residual():
    shape = (10, 10, 4)
    spacing = np.array([1.0, 2.0, 5.0])
    u_f = np.zeros(shape + (3,), np.float32)
    u_f[..., 0] = 1.5  # translation by 1.5 voxels along x
    mask = np.zeros(shape, bool)
    mask[2:6, 2:6, 1:3] = True
    exact = qc.cycle_closure_mm(u_f, -u_f, spacing, mask)
    assert exact["mean"] == pytest.approx(0.0, abs=1e-6) and exact["p95"] == pytest.approx(0.0, abs=1e-6)
    wrong = np.zeros_like(u_f)
    wrong[..., 1] = -0.5  # returns along the wrong axis: residual (1.5, -0.5, 0) voxels
    r = qc.cycle_closure_mm(u_f, wrong, spacing, mask)
    assert r["mean"] == pytest.approx(np.hypot(1.5 * 1.0, 0.5 * 2.0), rel=1e-5)
    assert r["in_plane_mean"] == pytest.approx(r["mean"], rel=1e-5) and r["through_plane_mean"] == 0.0
    # Returning 0.2 voxels short through-plane (1 mm at 5 mm slices) adds a through-plane part only.
    wrong[..., 2] = 0.2
    r = qc.cycle_closure_mm(u_f, wrong, spacing, mask)
    assert r["through_plane_mean"] == pytest.approx(1.0, rel=1e-5)
    assert r["through_plane_p95"] == pytest.approx(1.0, rel=1e-5)
    assert r["in_plane_mean"] == pytest.approx(np.hypot(1.5, 1.0), rel=1e-5)
    assert r["mean"] == pytest.approx(np.sqrt(1.5 ** 2 + 1.0 + 1.0), rel=1e-5)
    assert set(r) == set(qc.CLOSURE_KEYS)
    assert all(np.isnan(v) for v in qc.cycle_closure_mm(u_f, wrong, spacing, np.zeros(shape, bool)).values())


def test_cycle_closure_samples_the_backward_field_as_the_warp_does():
    # A non-uniform backward field sampled between voxels and beyond the grid's edge (clamped): the residual
    # equals |u_f + warp's trilinear sample of u_b| computed with the JAX warp's own interpolation.
    rng = np.random.default_rng(3)
    shape = (9, 8, 3)
    spacing = np.array([1.25, 1.25, 8.0])
    u_f = rng.uniform(-2.5, 2.5, shape + (3,)).astype(np.float32)
    u_b = rng.uniform(-3.0, 3.0, shape + (3,)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[0:3, 5:8, :] = True  # some points land outside the grid
    mask[4, 4, 1] = True
    back = np.asarray(interpolate(u_b, np.argwhere(mask).astype(np.float32) + u_f[mask]))
    r = np.linalg.norm((u_f[mask] + back) * spacing, axis=-1)
    got = qc.cycle_closure_mm(u_f, u_b, spacing, mask)
    assert got["mean"] == pytest.approx(r.mean(), rel=1e-5)
    assert got["p95"] == pytest.approx(np.percentile(r, 95), rel=1e-5)


def _minimal_results(t=4):
    curve = [0.0] * t
    idx = {k: None for k in ("ess_pct", "peak_pct", "time_to_peak_s", "srs_per_s", "time_srs_s", "sre_per_s",
                             "time_sre_s")}
    return {"schema": "deepstrain-jax/results", "schema_version": 1, "software": {}, "subject": "s",
            "input": {}, "models": {}, "options": {}, "frames": {"n": t, "ed": 0, "es": 2},
            "volumes": {"curves_ml": {"lv": curve, "rv": curve, "myo": curve}},
            "strain": {"global_pct": {"radial": curve, "circumferential": curve, "longitudinal": curve},
                       "indices": {"radial": idx, "circumferential": idx, "longitudinal": idx}},
            "aha": None, "qc": {"warnings": []}, "outputs": {}}


def test_results_checker_accepts_a_valid_document_and_names_what_is_wrong():
    check_results(_minimal_results())
    bad = copy.deepcopy(_minimal_results())
    bad["schema_version"] = 2
    with pytest.raises(ValueError, match="version 1"):
        check_results(bad)
    bad = copy.deepcopy(_minimal_results())
    del bad["qc"]
    with pytest.raises(ValueError, match="missing keys"):
        check_results(bad)
    bad = copy.deepcopy(_minimal_results())
    bad["strain"]["global_pct"]["radial"] = [0.0] * 3
    with pytest.raises(ValueError, match="radial has 3 values for 4 frames"):
        check_results(bad)
    bad = copy.deepcopy(_minimal_results())
    bad["frames"]["es"] = 9
    with pytest.raises(ValueError, match="frames"):
        check_results(bad)
