"""CMAC-style landmark evaluation (eval.datasets.cmac) on an oblique grid with an exactly interpolable field."""

import numpy as np
import pytest

from deepstrain_jax.errors import InputError
from deepstrain_jax.ops.grid import direction_from_affine, voxel_to_mm
from eval.datasets import __main__ as cli
from eval.datasets import cmac

SHAPE = (14, 12, 5)
N_FRAMES, ED, ES = 4, 0, 2
SPACING = np.array([1.5, 2.0, 8.0])


def oblique_affine():
    a, b = np.deg2rad(30.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(SPACING)
    affine[:3, 3] = (-20.0, 35.0, 12.5)
    return affine


AFFINE = oblique_affine()
M = np.array([[0.05, -0.02, 0.01], [0.03, -0.04, 0.0], [0.0, 0.01, -0.06]])
B = np.array([1.5, -2.0, 3.0])


def true_field():
    """``(T, X, Y, Z, 3)`` mm along array axes: linear in the array-frame position at ES (exact for trilinear)."""
    x_mm = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1) * SPACING
    u = np.zeros((N_FRAMES, *SHAPE, 3))
    u[ES] = x_mm @ M.T + B
    u[1] = 0.5 * u[ES]
    return u


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Two subjects; obs2 agrees with obs1 at ED and is 0.5 mm off along world x at ES."""
    base = tmp_path_factory.mktemp("cmac")
    root, pred = base / "landmarks", base / "pred"
    rng = np.random.default_rng(1)
    direction = direction_from_affine(AFFINE)
    for subject in ("v1", "v2"):
        vox = rng.uniform([1, 1, 0.5], np.array(SHAPE) - 2, size=(6, 3))
        ed_world = np.asarray(voxel_to_mm(vox, AFFINE))
        u_es = vox * SPACING @ M.T + B
        track = np.repeat(ed_world[None], N_FRAMES, axis=0)
        track[ES] = ed_world + u_es @ direction.T
        track2 = track.copy()
        track2[ES, :, 0] += 0.5
        cmac.write_cmac_subject(root, subject, {"obs1": track, "obs2": track2})
        cmac.save_displacement(pred / subject / "displacement.nii.gz", true_field(), AFFINE)
    cmac.write_cmac_metadata(root, {"v1": (ED, ES), "v2": (ED, ES)})
    return root, pred


def test_true_field_gives_zero_error(layout):
    rows = cmac.evaluate_cmac(*layout)
    assert len(rows) == 2 * 2 * 6
    obs1 = np.array([r["error_mm"] for r in rows if r["observer"] == "obs1"])
    np.testing.assert_allclose(obs1, 0.0, atol=1e-4)  # float32 storage
    assert all(r["interobserver_mm"] == pytest.approx(0.5) for r in rows)
    # obs2's ES points are the truth moved by 0.5 mm: its error is that offset.
    np.testing.assert_allclose([r["error_mm"] for r in rows if r["observer"] == "obs2"], 0.5, atol=1e-4)


def test_zero_field_gives_the_landmark_motion(layout, tmp_path):
    root, _ = layout
    for subject in ("v1", "v2"):
        cmac.save_displacement(tmp_path / subject / "displacement.nii.gz", np.zeros((N_FRAMES, *SHAPE, 3)), AFFINE)
    rows = cmac.evaluate_cmac(root, tmp_path)
    for r in rows:
        assert r["error_mm"] == pytest.approx(r["motion_mm"], abs=1e-9) and r["motion_mm"] > 1.0
    track = cmac.read_landmarks(root / "v1" / "landmarks_obs1.csv")
    assert rows[0]["motion_mm"] == pytest.approx(np.linalg.norm(track[ES][0] - track[ED][0]))


@pytest.mark.parametrize("via", ["header", "argument"])
def test_world_components(layout, tmp_path, via):
    root, _ = layout
    u_world = true_field() @ direction_from_affine(AFFINE).T
    for subject in ("v1", "v2"):
        cmac.save_displacement(tmp_path / subject / "displacement.nii.gz", u_world, AFFINE,
                               components="world" if via == "header" else "array")
    rows = cmac.evaluate_cmac(root, tmp_path, components="auto" if via == "header" else "world")
    np.testing.assert_allclose([r["error_mm"] for r in rows if r["observer"] == "obs1"], 0.0, atol=1e-4)
    # Read as array-axis components, the same file is wrong by the rotation.
    if via == "argument":
        wrong = cmac.evaluate_cmac(root, tmp_path, components="array")
        assert max(r["error_mm"] for r in wrong) > 0.5


def test_displacement_round_trip(tmp_path):
    u = true_field()
    cmac.save_displacement(tmp_path / "d.nii.gz", u, AFFINE)
    loaded, affine = cmac.load_displacement(tmp_path / "d.nii.gz")
    np.testing.assert_allclose(loaded, u, atol=1e-5)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)


def test_cli_and_bad_input(layout, tmp_path, capsys):
    root, pred = layout
    out = tmp_path / "out"
    assert cli.main(["cmac", "--root", str(root), "--pred", str(pred), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "| all | obs1 | 12 | 0.00 ± 0.00 |" in summary
    assert (out / "landmarks.csv").read_text().startswith("subject,observer,landmark,error_mm,")
    capsys.readouterr()
    assert cli.main(["cmac", "--root", str(root), "--pred", str(tmp_path / "empty_pred_missing"),
                     "--out", str(out)]) == 2
    assert "predictions folder not found" in capsys.readouterr().err
    (tmp_path / "p2" / "v1").mkdir(parents=True)
    with pytest.raises(InputError, match="displacement.nii.gz: file not found"):
        cmac.evaluate_cmac(root, tmp_path / "p2")
