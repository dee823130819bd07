"""`deepstrain analyze` on bad input: one error line naming the file and the problem, exit 2, no output folder.

These fail before any network is loaded, so they are fast."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.analysis import inputs
from deepstrain_jax.analysis.grids import detect_slice_order
from deepstrain_jax.cli import main
from deepstrain_jax.data import acdc


def _cine(shape=(128, 128, 6, 5), spacing=(1.5, 1.5, 10.0), seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 100, shape).astype(dtype), np.diag(list(spacing) + [1.0])


def _write(path, array, affine, dt=0.04):
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    if array.ndim >= 4:
        img.header["pixdim"][4] = dt
    nib.save(img, str(path))
    return path


def _run(capsys, target, out):
    code = main(["analyze", str(target), "--out", str(out), "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _assert_refused(capsys, target, out, *needles):
    code, err = _run(capsys, target, out)
    assert code == 2
    assert len(err) == 1, err
    assert str(target) in err[0] or str(out) in err[0], err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("case, needles", [
    ("3d", ("expected a 4D image",)),
    ("5d", ("expected a 4D image",)),
    ("single_frame", ("single frame",)),
    ("nan", ("NaN or Inf",)),
    ("inf", ("NaN or Inf",)),
    ("constant", ("constant",)),
    ("empty_frame", ("frame(s) 2", "constant")),
    ("spacing", ("in-plane voxel size", "plausible")),
    ("slice_spacing", ("slice spacing",)),
    ("small_fov", ("field of view", "too small to hold a whole heart")),
])
def test_bad_cines_are_refused(case, needles, tmp_path, capsys):
    image, affine = _cine()
    if case == "3d":
        image = image[..., 0]
    elif case == "5d":
        image = np.stack([image, image], axis=-1)
    elif case == "single_frame":
        image = image[..., :1]
    elif case == "nan":
        image[3, 4, 2, 1] = np.nan
    elif case == "inf":
        image[3, 4, 2, 1] = np.inf
    elif case == "constant":
        image[:] = 7.0
    elif case == "empty_frame":
        image[..., 2] = 0.0
    elif case == "spacing":
        affine = np.diag([40.0, 40.0, 10.0, 1.0])
    elif case == "slice_spacing":
        affine = np.diag([1.5, 1.5, 80.0, 1.0])
    elif case == "small_fov":
        image, affine = _cine(shape=(40, 40, 6, 5), spacing=(2.0, 2.0, 10.0))  # 80 mm
    path = _write(tmp_path / "cine.nii.gz", image, affine)
    _assert_refused(capsys, path, tmp_path / "out", *needles)


def test_files_that_are_not_nifti(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _assert_refused(capsys, text, tmp_path / "out", "not a NIfTI file")
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"this is not gzip")
    _assert_refused(capsys, fake, tmp_path / "out", "NIfTI")
    image, affine = _cine()
    good = _write(tmp_path / "good.nii.gz", image, affine)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_refused(capsys, truncated, tmp_path / "out", "truncated or corrupt")
    missing = tmp_path / "missing.nii.gz"
    _assert_refused(capsys, missing, tmp_path / "out", "no such file")


def test_acdc_folder_with_missing_info_keys_or_frames(tmp_path, capsys):
    image, affine = _cine()
    folder = tmp_path / "patient001"
    info = acdc.AcdcInfo(ed=0, es=2, group="NOR", height_cm=170.0, nb_frame=5, weight_kg=70.0)
    acdc.write_patient(folder, "patient001", image, affine, info)
    (folder / "Info.cfg").write_text("ED: 1\nES: 3\nGroup: NOR\n")
    _assert_refused(capsys, folder, tmp_path / "out", "Info.cfg", "missing key")
    (folder / "Info.cfg").write_text(acdc.format_info_cfg(
        acdc.AcdcInfo(ed=0, es=2, group="NOR", height_cm=170.0, nb_frame=7, weight_kg=70.0)))
    _assert_refused(capsys, folder, tmp_path / "out", "NbFrame = 7")


def test_unwritable_or_existing_output_folder(tmp_path, capsys):
    image, affine = _cine()
    path = _write(tmp_path / "cine.nii.gz", image, affine)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run(capsys, path, blocker / "out")
    assert code == 2 and len(err) == 1 and "cannot write" in err[0] and str(blocker / "out") in err[0]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, err = _run(capsys, path, existing)
    assert code == 2 and "not empty" in err[0] and "--overwrite" in err[0]
    assert (existing / "keep.txt").read_text() == "mine"


def test_empty_cohort_folder(tmp_path, capsys):
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "readme.txt").write_text("no subjects here")
    code, err = _run(capsys, tmp_path / "cohort", tmp_path / "out")
    assert code == 2 and "no subject found" in err[0]


@pytest.mark.parametrize("spacing, axis", [((1.5, 1.5, 8.0), 2), ((8.0, 1.4, 1.4), 0), ((1.2, 9.0, 1.2), 1),
                                           ((1.0, 1.0, 1.0), 2), ((1.0, 2.0, 3.0), 2)])
def test_slice_axis_is_the_odd_spacing(spacing, axis):
    assert inputs.find_slice_axis(spacing) == axis


def test_to_slice_last_keeps_world_positions():
    image = np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2)
    affine = np.array([[0.0, 1.4, 0.0, 3.0], [8.0, 0.0, 0.0, -2.0], [0.0, 0.0, 1.4, 5.0], [0, 0, 0, 1]])
    cine = inputs.CineInput("x", "x", "nifti", "x", image, affine, np.array([8.0, 1.4, 1.4]), None)
    moved = inputs.to_slice_last(cine, 0)
    assert moved.image.shape == (5, 6, 4, 2)
    np.testing.assert_array_equal(moved.spacing_mm, [1.4, 1.4, 8.0])
    i, j, k = 3, 4, 2  # voxel (i, j, k) of the file is (j, k, i) after the move, at the same world point
    assert moved.image[j, k, i, 1] == image[i, j, k, 1]
    np.testing.assert_allclose(moved.affine @ [j, k, i, 1], affine @ [i, j, k, 1])


def test_slice_order_detection_from_the_lv_area():
    labels = np.zeros((20, 20, 6), np.uint8)
    for z, r in enumerate([8, 7, 6, 5, 3, 1]):  # base (big ring) first, apex last
        yy, xx = np.mgrid[:20, :20]
        d = np.hypot(xx - 10, yy - 10)
        labels[..., z][d < r] = 2
        labels[..., z][d < r / 2] = 3
    assert detect_slice_order(labels)[0] == "base_to_apex"
    assert detect_slice_order(labels[..., ::-1])[0] == "apex_to_base"
    assert detect_slice_order(np.zeros((4, 4, 3)))[1] == 0.0


def test_plain_nii_with_a_millisecond_time_unit(tmp_path):
    """A plain .nii with a time unit in ms is read; its frame interval is converted to seconds."""
    image, affine = _cine()
    img = nib.Nifti1Image(image, affine)
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 40.0
    nib.save(img, str(tmp_path / "cine.nii"))
    cine = inputs.read_input(tmp_path / "cine.nii")
    assert cine.frame_interval_s == pytest.approx(0.04)


def test_islands_away_from_the_heart_are_removed():
    from deepstrain_jax.analysis.grids import keep_heart_component

    labels = np.zeros((12, 12, 4), np.uint8)
    labels[2:6, 2:6, 1:3] = 3
    labels[1:7, 1:7, 1:3][labels[1:7, 1:7, 1:3] == 0] = 2
    labels[6:8, 3:5, 1] = 1  # RV touching the myocardium: kept
    labels[10:12, 10:12, 3] = 2  # an island: removed
    kept = keep_heart_component(labels)
    expect = labels.copy()
    expect[10:12, 10:12, 3] = 0
    np.testing.assert_array_equal(kept, expect)
    np.testing.assert_array_equal(keep_heart_component(np.zeros((3, 3, 3), np.uint8)), 0)
