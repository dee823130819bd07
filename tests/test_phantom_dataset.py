"""Phantom cohorts in the ACDC layout: writer/reader round trips, the truth sidecar, scan-rescan, the API and CLI."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.cli import main
from deepstrain_jax.data import acdc
from deepstrain_jax.errors import InputError
from deepstrain_jax.ops.strain import cardiac_strain
from deepstrain_jax.ops.warp import interpolate, warp
from deepstrain_jax.phantom import dataset, render
from deepstrain_jax.phantom import kinematics as kin

# 40 x 40 pixels of 2.5 mm, 10 slices 10 mm apart, 10 frames; one sub-sample per voxel keeps the tests fast.
SMALL = dict(matrix=(40, 40), pixel_mm=2.5, n_slices=10, slice_thickness_mm=8.0, slice_spacing_mm=10.0,
             supersample_inplane=1, supersample_slice=1, slice_shift_mm=0.0, snr_myo=20.0)
N_FRAMES = 10
CLI_SMALL = ["--frames", "10", "--pixel-mm", "2.5", "--matrix", "40", "--slices", "10", "--supersample", "1", "1"]


@pytest.fixture(scope="module")
def case():
    return dataset.make_case(2, "NOR", "A", n_frames=N_FRAMES, **SMALL)


@pytest.fixture(scope="module")
def written(case, tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return {order: dataset.save_case(root / order / "patient001", case, order) for order in dataset.SLICE_ORDERS}


def test_write_then_read_returns_identical_arrays_and_affines(case, written):
    cine = case.cine
    nz = cine.geometry.shape[2]
    loaded = {order: acdc.load_patient(folder) for order, folder in written.items()}
    for order, p in loaded.items():
        image = cine.image if order == "base_to_apex" else cine.image[:, :, ::-1]
        labels = cine.labels if order == "base_to_apex" else cine.labels[:, :, ::-1]
        assert p.name == "patient001"
        assert p.info == acdc.AcdcInfo(ed=0, es=kin.es_frame(case.params), group="NOR",
                                       height_cm=case.info.height_cm, nb_frame=N_FRAMES, weight_kg=case.info.weight_kg)
        assert p.cine.array.dtype == np.int16
        np.testing.assert_array_equal(p.cine.array, image)
        assert p.cine.frame_interval_s == pytest.approx(cine.frame_interval_s, rel=1e-6)
        assert sorted(p.frames) == sorted(p.labels) == sorted({cine.ed, cine.es})
        for f in (cine.ed, cine.es):
            np.testing.assert_array_equal(p.frames[f].array, image[..., f])
            assert p.labels[f].array.dtype == np.uint8
            np.testing.assert_array_equal(p.labels[f].array, labels[..., f])
            np.testing.assert_array_equal(p.labels[f].affine, p.cine.affine)
        hdr = nib.load(written[order] / "patient001_4d.nii.gz").header
        assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
    a_base, a_apex = loaded["base_to_apex"].cine.affine, loaded["apex_to_base"].cine.affine
    np.testing.assert_array_equal(a_base, cine.geometry.affine)
    assert np.sign(np.linalg.det(a_base)) == -np.sign(np.linalg.det(a_apex))
    # Reversing the slices keeps every voxel at its world position.
    ijk = np.array([[3, 7, 0, 1], [20, 11, 4, 1], [39, 0, 9, 1]], float)
    flipped = ijk.copy()
    flipped[:, 2] = nz - 1 - ijk[:, 2]
    np.testing.assert_allclose(flipped @ a_apex.T, ijk @ a_base.T, atol=1e-9)
    assert (written["base_to_apex"] / "Info.cfg").read_text().startswith("ED: 1\nES: ")


def test_truth_sidecar_round_trip_and_slice_order(case, written):
    base, meta = dataset.load_truth(written["base_to_apex"])
    apex, meta_apex = dataset.load_truth(written["apex_to_base"])
    for key, value in case.arrays.items():
        np.testing.assert_array_equal(base[key], value, err_msg=key)
    np.testing.assert_array_equal(base["affine"], case.cine.geometry.affine)
    nz = case.cine.geometry.shape[2]
    np.testing.assert_array_equal(apex["u_mm"][..., :2], base["u_mm"][:, :, :, ::-1, :2])
    np.testing.assert_array_equal(apex["u_mm"][..., 2], -base["u_mm"][:, :, :, ::-1, 2])
    np.testing.assert_array_equal(apex["strain_cc"], base["strain_cc"][:, :, :, ::-1])
    np.testing.assert_array_equal(apex["aha"], base["aha"][:, :, ::-1])
    np.testing.assert_array_equal(apex["labels"], base["labels"][:, :, ::-1])
    np.testing.assert_allclose(apex["landmarks_vox"][:, 2], nz - 1 - base["landmarks_vox"][:, 2])
    np.testing.assert_array_equal(apex["landmarks_world_mm"], base["landmarks_world_mm"])
    assert meta["format"] == dataset.FORMAT and meta["slice_order"] == "base_to_apex"
    assert meta_apex["slice_order"] == "apex_to_base"
    assert (meta["ed"], meta["es"], meta["seed"], meta["phenotype"], meta["model"]) == (
        0, case.cine.es, 2, "NOR", "A")
    assert meta["params"]["r_endo_mm"] == pytest.approx(float(case.params.r_endo_mm))
    assert meta["curves"]["global_strain"]["cc"] == pytest.approx(case.curves["global_strain"]["cc"])
    np.testing.assert_array_equal(meta_apex["affine"], apex["affine"])
    json.dumps(meta)  # plain JSON all the way down
    # Every parameter is stored: rendering again from the JSON reproduces the stored cine bit for bit.
    params, acquisition, geometry = dataset.render_inputs(meta_apex)
    assert params == case.params and acquisition == case.cine.acquisition
    again = render.render_cine(params, geometry, acquisition, meta_apex["noise_seed"])
    np.testing.assert_array_equal(again.image[:, :, ::-1], acdc.load_patient(written["apex_to_base"]).cine.array)


def test_truth_displacement_carries_the_ed_myocardium_onto_the_es_labels(written):
    # Read back in the flipped order: this also checks the sign flip of the slice component.
    for order in dataset.SLICE_ORDERS:
        arrays, meta = dataset.load_truth(written[order])
        es, spacing = meta["es"], np.asarray(meta["spacing_mm"])
        labels = arrays["labels"]
        myo = arrays["myo_mask"]
        u_vox = arrays["u_mm"][es] / spacing
        warped = np.asarray(warp(labels[None, ..., es, None], u_vox[None], mode="nearest"))[0, ..., 0]
        still = labels[..., es]
        # ES labels pulled back to ED by the true motion cover the ED myocardium; without motion they do not.
        assert (warped[myo] == 2).mean() > 0.85
        assert (warped[myo] == 2).mean() > (still[myo] == 2).mean() + 0.15


def test_landmarks_follow_the_truth_displacement(case):
    a, geom = case.arrays, case.cine.geometry
    lm_vox = a["landmarks_vox"]
    # The landmarks are midwall points: the ED labels there are myocardium.
    idx = np.rint(lm_vox).astype(int)
    assert (case.cine.labels[idx[:, 0], idx[:, 1], idx[:, 2], 0] == 2).sum() >= 10
    for t in range(N_FRAMES):
        u_arr = np.asarray(interpolate(a["u_mm"][t], lm_vox, mode="linear"))
        u_world = u_arr @ geom.direction.T
        moved = a["landmark_trajectories_world_mm"][t] - a["landmarks_world_mm"]
        np.testing.assert_allclose(u_world, moved, atol=0.05)


def test_aha_segments_and_masks(case):
    a = case.arrays
    aha, myo = a["aha"], a["myo_mask"]
    assert np.all(aha[~myo] == 0)
    assert set(np.unique(aha[myo])) - {0} == set(range(1, 17))  # Model A: no apical cap
    assert (aha[myo] > 0).mean() > 0.85
    assert np.all(a["u_mask"][myo]) and not np.any(a["u_mm"][:, ~a["u_mask"]])
    np.testing.assert_allclose(a["u_mm"][0], 0.0, atol=1e-5)  # ED: float32 round-off of phi(X, 0) - X
    # Septal segments (2, 3, 8, 9) face the RV; lateral ones (5, 6, 11, 12) do not.
    labels = case.cine.labels[..., 0]
    rv = np.argwhere(labels == 1).mean(0)
    septal = np.argwhere(np.isin(aha, [2, 3, 8, 9])).mean(0)
    lateral = np.argwhere(np.isin(aha, [5, 6, 11, 12])).mean(0)
    assert np.linalg.norm((septal - rv)[:2]) < np.linalg.norm((lateral - rv)[:2])


def test_volume_and_strain_curves(case):
    c = case.curves
    lv_exact = np.asarray(c["volumes_ml"]["lv_cavity_ml"])
    lv_labels = np.asarray(c["label_volumes_ml"]["lv_cavity"])
    np.testing.assert_allclose(lv_labels, lv_exact, rtol=0.12)
    assert np.argmin(lv_exact) == case.cine.es
    for k in ("rr", "cc", "ll"):
        assert abs(c["global_strain"][k][0]) < 1e-6
    assert c["global_strain"]["rr"][case.cine.es] > 0.2 and c["global_strain"]["cc"][case.cine.es] < -0.1
    assert c["strain_rate_per_s"]["cc"][2] < 0 < c["strain_rate_per_s"]["cc"][5]


def test_strain_module_on_the_truth_displacement_reproduces_the_exact_global_strain(case):
    """Level 1 of the phantoms_and_metrics.md 7.2 decomposition: ``cardiac_strain`` (central differences, centre
    line from the ED labels, mean over the ED myocardium voxels) on the sampled truth ``u_mm`` against the exact
    volume mean ``global_strain_truth``, every frame.

    Measured bounds (max over frames of |module - exact|):
    * this grid (2.5 mm in-plane, 10 mm slices, Model A NOR, seeds 0-3): rr 0.018, cc 0.0027, ll 0.0001;
    * default protocols (1.375-1.94 mm, 8.5-11 mm slices, 25 frames, Model A, NOR/DCM/HCM/MINF/ARV, with or
      without breath-hold shifts): rr 0.023, cc 0.0043, ll 0.0023 -- mostly the voxel discretisation of the
      myocardium (the mean of the exact maps over the ED mask is already off by up to 0.018 in rr);
    * Model B (default protocol, NOR/DCM): rr 0.011, cc 0.0021, ll up to 0.08: the apical cap lies in the last
      slice, where the through-plane derivative is one-sided and E_ll changes fastest.
    """
    cs = cardiac_strain(case.arrays["u_mm"], case.cine.labels[..., 0], case.cine.geometry.spacing_mm,
                        base_first=True)
    for key, bound in (("rr", 0.03), ("cc", 0.006), ("ll", 0.003)):
        got = np.asarray(getattr(cs.global_mean, key))
        exact = np.asarray(case.curves["global_strain"][key])
        assert np.abs(got - exact).max() < bound, key
        # The module is closer to the voxel mean of the exact maps (its own discretised target).
        voxel_mean = np.asarray(case.curves["global_strain_voxel_mean"][key])
        assert np.abs(got - voxel_mean).max() < bound


def test_scan_rescan_differ_only_by_noise_shifts_and_pose():
    scan, rescan = dataset.scan_rescan_pair(4, phenotype="DCM", n_frames=N_FRAMES,
                                            **dict(SMALL, slice_shift_mm=2.0))
    assert rescan.params == scan.params and rescan.cine.acquisition == scan.cine.acquisition
    assert rescan.info == scan.info and rescan.rescan_of == scan.seed and rescan.noise_seed != scan.noise_seed
    g0, g1 = scan.cine.geometry, rescan.cine.geometry
    np.testing.assert_array_equal(g0.affine, g1.affine)
    np.testing.assert_array_equal(g0.coil_positions_mm, g1.coil_positions_mm)
    assert not np.allclose(g0.slice_shift_mm, g1.slice_shift_mm)
    assert np.linalg.norm(g1.slice_shift_mm, axis=1).max() <= 2.0 + 1e-9
    angle = math.degrees(math.acos(np.clip((np.trace(g1.rotation @ g0.rotation.T) - 1) / 2, -1, 1)))
    assert 0 < angle <= math.hypot(3.0, 2.0) + 1e-6
    centre = g0.affine[:3, :3] @ ((np.array(g0.shape) - 1) / 2) + g0.affine[:3, 3]
    mid = np.array([0.0, 0.0, 40.0])
    moved = g1.rotation @ mid + g1.translation_mm - (g0.rotation @ mid + g0.translation_mm)
    assert np.linalg.norm(moved) <= 2.0 + np.linalg.norm(g0.rotation @ mid + g0.translation_mm - centre) * 0.1
    for k in ("global_strain", "strain_rate_per_s", "volumes_ml"):
        assert rescan.curves[k] == scan.curves[k]
    assert np.mean(scan.cine.image != rescan.cine.image) > 0.5
    v0 = np.asarray(scan.curves["label_volumes_ml"]["lv_cavity"])
    v1 = np.asarray(rescan.curves["label_volumes_ml"]["lv_cavity"])
    # Same heart: the label volumes agree to within what a 2 mm / 3 degree repositioning does to the basal slice.
    np.testing.assert_allclose(v1, v0, rtol=0.2)

    # With no shifts and no pose change, a rescan differs from the scan by noise alone.
    still = dataset.make_case(4, "DCM", n_frames=N_FRAMES, **SMALL)
    again = dataset.make_rescan(still, rotation_deg=0.0, shift_mm=0.0, tilt_deg=0.0)
    np.testing.assert_array_equal(again.cine.clean, still.cine.clean)
    np.testing.assert_array_equal(again.cine.labels, still.cine.labels)
    bright = still.cine.clean > 10 * still.cine.sigma
    diff = again.cine.image[bright].astype(float) - still.cine.image[bright]
    assert diff.std() == pytest.approx(math.sqrt(2) * still.cine.sigma, rel=0.05)


def test_cases_are_reproducible_by_seed(case):
    again = dataset.make_case(2, "NOR", "A", n_frames=N_FRAMES, **SMALL)
    np.testing.assert_array_equal(again.cine.image, case.cine.image)
    np.testing.assert_array_equal(again.arrays["u_mm"], case.arrays["u_mm"])
    assert again.params == case.params
    other = dataset.make_case(3, "NOR", "A", n_frames=N_FRAMES, **SMALL)
    assert other.params != case.params and np.any(other.cine.image != case.cine.image)


def test_generate_dataset_writes_resumes_and_refuses_other_settings(tmp_path):
    calls = []
    kwargs = dict(phenotypes=["NOR", "hcm"], snr=20.0, n_frames=N_FRAMES,
                  progress=lambda *a: calls.append(a), **SMALL)
    folders = dataset.generate_dataset(tmp_path, 2, seed=7, **kwargs)
    assert [f.name for f in folders] == ["patient001", "patient002"]
    assert [acdc.load_patient(f).info.group for f in folders] == ["NOR", "HCM"]
    assert [c[:4] for c in calls] == [(1, 2, "patient001", False), (2, 2, "patient002", False)]
    arrays, meta = dataset.load_truth(folders[1])
    assert meta["seed"] == dataset.patient_seed(7, 1) and meta["snr_myo"] == 20.0
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    assert manifest["n"] == 2 and manifest["seed"] == 7 and manifest["phenotypes"] == ["NOR", "HCM"]
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind
    assert oct(folders[0].stat().st_mode & 0o777) != oct(0o700)

    stamp = [(f / f"{f.name}_4d.nii.gz").stat().st_mtime_ns for f in folders]
    calls.clear()
    dataset.generate_dataset(tmp_path, 2, seed=7, **kwargs)
    assert [c[3] for c in calls] == [True, True]
    assert [(f / f"{f.name}_4d.nii.gz").stat().st_mtime_ns for f in folders] == stamp

    with pytest.raises(InputError, match="other settings.*seed"):
        dataset.generate_dataset(tmp_path, 2, seed=8, **kwargs)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        dataset.generate_dataset(tmp_path / "x", 0, seed=7)
    with pytest.raises(ValueError, match="unknown phenotype"):
        dataset.generate_dataset(tmp_path / "x", 1, phenotypes=["LVNC"])
    with pytest.raises(ValueError, match="unknown acquisition field"):
        dataset.generate_dataset(tmp_path / "x", 1, pixel=2.0)
    with pytest.raises(ValueError, match="seed"):
        dataset.generate_dataset(tmp_path / "x", 1, seed=-1)
    with pytest.raises(ValueError, match="supersample_inplane"):
        dataset.generate_dataset(tmp_path / "x", 1, supersample_inplane=0)
    assert not (tmp_path / "x").exists()


def test_generate_dataset_with_rescans(tmp_path):
    folders = dataset.generate_dataset(tmp_path, 1, seed=1, rescan=True, n_frames=N_FRAMES, **SMALL)
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == ["scan/patient001", "rescan/patient001"]
    (_, scan_meta), (_, rescan_meta) = dataset.load_truth(folders[0]), dataset.load_truth(folders[1])
    assert rescan_meta["rescan_of"] == scan_meta["seed"] and rescan_meta["params"] == scan_meta["params"]


def test_load_truth_errors(tmp_path, written):
    with pytest.raises(InputError, match="missing phantom truth file"):
        dataset.load_truth(tmp_path)
    folder = tmp_path / "patient009"
    folder.mkdir()
    (folder / "patient009_truth.npz").write_bytes(b"")
    (folder / "patient009_truth.json").write_text('{"format": "other/9"}')
    with pytest.raises(InputError, match="unknown truth format"):
        dataset.load_truth(folder)


def test_cli_generates_a_cohort_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["phantom", "--out", str(out), "--n", "1", "--seed", "3", "--snr", "15", "25",
                 "--slice-order", "apex-to-base", "--phenotypes", "NOR,DCM", *CLI_SMALL]) == 0
    err = capsys.readouterr().err
    assert "phantom 1/1 patient001" in err
    patient, arrays, meta = dataset.load_case(out / "patient001")
    assert meta["slice_order"] == "apex_to_base" and 15.0 <= meta["snr_myo"] <= 25.0
    assert np.linalg.det(patient.cine.affine) < 0 and patient.cine.array.shape == (40, 40, 10, N_FRAMES)

    for argv, message in ((["--n", "0"], "n must be a positive integer"),
                          (["--n", "1", "--phenotypes", "XYZ"], "unknown phenotype"),
                          (["--n", "1", "--snr", "1", "2", "3"], "--snr takes one value or LOW HIGH"),
                          (["--n", "1", "--snr", "-5"], "snr must be a positive number"),
                          (["--n", "1", "--snr", "30", "10"], "snr range"),
                          (["--n", "1", "--supersample", "0", "3"], "--supersample"),
                          (["--n", "1", "--seed", "-2"], "seed must be a non-negative integer")):
        assert main(["phantom", "--out", str(tmp_path / "bad"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["phantom", "--out", str(out), "--n", "1", "--seed", "4", "--quiet", *CLI_SMALL]) == 2
    assert "other settings" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["phantom", "--out", str(tmp_path / "file"), "--n", "1"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["phantom", "--out", str(out), "--n", "1", "--model", "C"])
    assert e.value.code == 2
    assert not (tmp_path / "bad").exists()


def test_family_c_design_is_fixed_outside_the_training_ranges_and_its_truth_holds():
    from eval.phantom_study import family_c_population, make_population

    design = family_c_population()
    assert design == family_c_population()                 # drawn from the seeds: the same on every machine
    assert len({d["name"] for d in design}) == len(design) == 20
    for d in design:
        angle = d["params_update"]["base_angle_deg"]
        assert not 115.0 <= angle <= 125.0 and d["model"] == "B" and d["oblique"]
        assert all(v != 0 for v in d["params_update"]["nuisance"])
    d = {**design[0], "acquisition": {"slice_thickness_mm": 5.0, "slice_spacing_mm": 9.0}}
    small = {k: v for k, v in SMALL.items() if k not in ("slice_thickness_mm", "slice_spacing_mm")}
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        folder, = make_population(tmp, [d], n_frames=N_FRAMES, **small)
        arrays, meta = dataset.load_truth(folder)
        assert meta["params"]["base_angle_deg"] == pytest.approx(d["params_update"]["base_angle_deg"])
        assert meta["params"]["nuisance"] == pytest.approx(d["params_update"]["nuisance"])
        affine = np.asarray(meta["affine"])
        assert abs(affine[2, 0]) > 0.1                     # an oblique stack
        es, spacing = meta["es"], np.asarray(meta["spacing_mm"])
        assert spacing[2] == pytest.approx(9.0)
        labels, myo = arrays["labels"], arrays["myo_mask"]
        warped = np.asarray(warp(labels[None, ..., es, None], (arrays["u_mm"][es] / spacing)[None],
                                 mode="nearest"))[0, ..., 0]
        # The exact motion, nuisance and tilt included, carries the ES labels back onto the ED myocardium.
        assert (warped[myo] == 2).mean() > 0.8
        assert (warped[myo] == 2).mean() > (labels[..., es][myo] == 2).mean() + 0.15
