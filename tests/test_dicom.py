"""DICOM short-axis cine reader (:mod:`deepstrain_jax.data.dicom`) and ``deepstrain convert-dicom``, on a real
scanner export (``shared/data/dicom/ep_pig_sax``: GE SSFP cine, 10 oblique slices x 20 phases) checked against
the ``dcm2niix`` binary and against the automatic LV contours that come with the data."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deepstrain_jax import cli
from deepstrain_jax.data.dicom import is_dicom_file, is_dicom_folder, read_dicom_cine, write_nifti
from deepstrain_jax.data.nifti import load_nifti
from deepstrain_jax.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "ep_pig_sax"
SERIES = DATA / "series"
CONTOURS = DATA / "lv_contours"
# The position fields of this export are written with 6 significant digits (e.g. -123.151): 0.001 mm
# resolution. Any straight stack through the 10 positions misses some of them by up to ~0.002 mm, and dcm2niix
# anchors its stack on another slice than the reader does (see the module docstring), so the two affines can
# only agree to a few times the resolution of the data.
AFFINE_TOL_MM = 5e-3

pytestmark = pytest.mark.skipif(not SERIES.is_dir(), reason=f"test data not found: {SERIES}")


def _dcm2niix() -> str | None:
    found = shutil.which("dcm2niix")
    if found:
        return found
    candidate = Path(sys.executable).parent / "dcm2niix"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _link_series(dest: Path, keep=lambda path: True, rename=None) -> list[Path]:
    """Symlink the files of SERIES (those ``keep`` accepts) into ``dest``, under ``rename(path)`` if given."""
    dest.mkdir(parents=True, exist_ok=True)
    links = []
    for path in sorted(SERIES.glob("*.dcm")):
        if keep(path):
            link = dest / (rename(path) if rename else path.name)
            assert link.resolve().is_relative_to(dest.resolve())
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, link)
            links.append(link)
    return links


@pytest.fixture(scope="module")
def headers() -> dict[str, pydicom.Dataset]:
    return {p.name: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(SERIES.glob("*.dcm"))}


@pytest.fixture(scope="module")
def cine():
    return read_dicom_cine(SERIES)


def _geometry(ds):
    """Independent DICOM geometry: position, row and column direction cosines, normal, (row, column) spacing."""
    iop = np.array(ds.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    return (np.array(ds.ImagePositionPatient, dtype=np.float64), row_dir, col_dir, np.cross(row_dir, col_dir),
            [float(v) for v in ds.PixelSpacing])


def _slice_phase_index(headers) -> dict[str, tuple[int, int]]:
    """(slice, phase) of every file: rank of its position along the normal, rank of its trigger time there."""
    normal = _geometry(next(iter(headers.values())))[3]
    proj = {name: round(float(_geometry(ds)[0] @ normal), 2) for name, ds in headers.items()}
    levels = sorted(set(proj.values()))
    index = {}
    for name, ds in headers.items():
        times = sorted(float(o.TriggerTime) for n, o in headers.items() if proj[n] == proj[name])
        index[name] = (levels.index(proj[name]), times.index(float(ds.TriggerTime)))
    return index


def test_is_dicom_file_and_folder(tmp_path):
    assert is_dicom_file(SERIES / "I0021.dcm")
    (tmp_path / "notes.txt").write_text("x" * 300)
    assert not is_dicom_file(tmp_path / "notes.txt")
    assert not is_dicom_file(tmp_path / "missing.dcm")
    assert not is_dicom_file(tmp_path)
    assert is_dicom_folder(SERIES) and is_dicom_folder(DATA)  # DATA: one folder down
    assert not is_dicom_folder(tmp_path)
    assert not is_dicom_folder(SERIES / "I0021.dcm")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    os.symlink(SERIES / "I0021.dcm", deep / "x")
    assert is_dicom_folder(tmp_path)  # three folders below
    hidden = tmp_path / "h"
    (hidden / ".cache").mkdir(parents=True)
    os.symlink(SERIES / "I0021.dcm", hidden / ".cache" / "x")
    assert not is_dicom_folder(hidden)


def test_matches_dcm2niix(tmp_path, cine, headers):
    exe = _dcm2niix()
    if exe is None:
        pytest.skip("dcm2niix not installed")
    import nibabel as nib

    src = tmp_path / "src"
    _link_series(src)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([exe, "-z", "y", "-b", "n", "-f", "out", "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=120)
    ref = nib.load(out / "out.nii.gz")
    ref_array = np.asanyarray(ref.dataobj)

    assert cine.array.shape == ref_array.shape == (256, 256, 10, 20)
    assert cine.array.dtype == ref_array.dtype == np.int16
    np.testing.assert_array_equal(cine.array, ref_array)  # same voxels, same axis order, same flips
    np.testing.assert_allclose(cine.affine, ref.affine, rtol=0, atol=AFFINE_TOL_MM)
    np.testing.assert_allclose(cine.spacing_mm, ref.header.get_zooms()[:3], rtol=0, atol=AFFINE_TOL_MM)
    assert np.sign(np.linalg.det(cine.affine)) == np.sign(np.linalg.det(ref.affine))

    # Both affines put every slice where its ImagePositionPatient says: the first stored pixel of DICOM image
    # row 0 is voxel (0, Rows - 1, k) after the row flip.
    index = _slice_phase_index(headers)
    for name, ds in headers.items():
        ipp = _geometry(ds)[0] * [-1, -1, 1]
        k = index[name][0]
        for affine in (cine.affine, ref.affine):
            np.testing.assert_allclose(affine @ [0, 255, k, 1], [*ipp, 1], rtol=0, atol=AFFINE_TOL_MM)

    # dcm2niix's pixdim[4] for this 2D cine is the RepetitionTime, not the time between cardiac phases, and it
    # writes no trigger-time list: the frame interval is checked against the trigger times read here.
    first = next(iter(headers.values()))
    assert ref.header.get_zooms()[3] == pytest.approx(float(first.RepetitionTime) / 1000, rel=1e-5)
    by_slice: dict[int, list[float]] = {}
    for name, ds in headers.items():
        by_slice.setdefault(index[name][0], []).append(float(ds.TriggerTime))
    steps = [(max(t) - min(t)) / (len(t) - 1) for t in by_slice.values()]
    assert cine.frame_interval_s == pytest.approx(np.median(steps) / 1000, rel=1e-9)
    nominal = float(first.NominalInterval) / int(first.CardiacNumberOfImages) / 1000  # 631 ms / 20
    assert cine.frame_interval_s == pytest.approx(nominal, rel=5e-3)


def test_file_names_and_order_do_not_matter(tmp_path, cine):
    rng = random.Random(0)
    names = {p.name: str(Path(sub) / uuid.UUID(int=rng.getrandbits(128)).hex)
             for p, sub in zip(sorted(SERIES.glob("*.dcm")), rng.choices([".", "x", "y/z"], k=200))}
    _link_series(tmp_path / "shuffled", rename=lambda p: names[p.name])
    (tmp_path / "shuffled" / "README.txt").write_text("not DICOM")
    (tmp_path / "shuffled" / ".hidden.dcm").write_bytes(b"\0" * 10)
    other = read_dicom_cine(tmp_path / "shuffled")
    np.testing.assert_array_equal(other.array, cine.array)
    np.testing.assert_array_equal(other.affine, cine.affine)
    np.testing.assert_array_equal(other.spacing_mm, cine.spacing_mm)
    assert other.frame_interval_s == cine.frame_interval_s
    assert other.path == str(tmp_path / "shuffled")


def test_lv_contours_land_on_the_lv(cine, headers):
    """The automatic LV contours, mapped through the DICOM geometry into the reader's voxel grid, lie on the
    reader's slice and enclose the bright blood pool: a wrong flip, transposition or slice order fails."""
    from matplotlib.path import Path as Polygon

    index = _slice_phase_index(headers)
    inverse = np.linalg.inv(cine.affine)
    nx, ny = cine.array.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), -1).reshape(-1, 2)
    masks = {}
    for name, ds in headers.items():
        ipp, row_dir, col_dir, _, (row_mm, col_mm) = _geometry(ds)
        k, t = index[name]
        number = name[1:5]
        voxels = {}
        for kind in ("i", "o"):
            xy = np.loadtxt(CONTOURS / f"IM-0001-{number}-{kind}contour-auto.txt", ndmin=2)
            # x = column, y = row of the DICOM image
            lps = ipp + xy[:, :1] * col_mm * row_dir + xy[:, 1:2] * row_mm * col_dir
            ras = lps * [-1, -1, 1]
            voxels[kind] = (inverse @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]
            np.testing.assert_allclose(voxels[kind][:, 2], k, rtol=0, atol=0.01)
        inside = Polygon(voxels["i"][:, :2]).contains_points(grid).reshape(nx, ny)
        ring = Polygon(voxels["o"][:, :2]).contains_points(grid).reshape(nx, ny) & ~inside
        assert inside.sum() > 50 and ring.sum() > 10, name
        masks[(k, t)] = (inside, ring)

    def contrast(array):
        pool = np.array([array[:, :, k, t][m[0]].mean() for (k, t), m in masks.items()])
        wall = np.array([array[:, :, k, t][m[1]].mean() for (k, t), m in masks.items()])
        return float(np.mean(pool > wall)), float(pool.mean() / wall.mean())

    brighter, ratio = contrast(cine.array)
    assert brighter >= 0.95 and ratio >= 2.2, (brighter, ratio)  # measured: 0.985, 2.6
    # The same check rejects a wrong geometry (array and affine no longer agreeing): measured <= 0.88, <= 1.71.
    for wrong in (cine.array.transpose(1, 0, 2, 3), cine.array[:, ::-1], cine.array[::-1], cine.array[:, :, ::-1]):
        brighter, ratio = contrast(wrong)
        assert brighter < 0.95 and ratio < 2.2, (brighter, ratio)


def _refusal(folder: Path, *words: str, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_dicom_cine(folder, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_refuses_empty_and_non_dicom_folders(tmp_path):
    _refusal(tmp_path / "missing", "folder not found")
    (tmp_path / "empty").mkdir()
    _refusal(tmp_path / "empty", "no DICOM file")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(bytes(range(256)) * 2)
    (junk / "notes.txt").write_text("hello")
    message = _refusal(junk, "no DICOM file", "2 files")
    assert str(junk) in message
    nopix = tmp_path / "nopix"
    nopix.mkdir()
    ds = pydicom.dcmread(SERIES / "I0021.dcm")
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(ds, keyword)
    ds.save_as(nopix / "report.dcm")
    _refusal(nopix, "no DICOM image")


def test_refuses_one_phase(tmp_path, headers):
    _link_series(tmp_path, keep=lambda p: float(headers[p.name].TriggerTime) == 10.0)
    _refusal(tmp_path, "no cine series", "10 slice position(s) x at most 1 image(s) each", "SSFP-CINE SAx")


def test_refuses_one_position(tmp_path, headers):
    _link_series(tmp_path, keep=lambda p: float(headers[p.name].SliceLocation) == 42.91766739)
    _refusal(tmp_path, "no cine series", "1 slice position(s) x at most 20 image(s) each")


def test_refuses_a_missing_phase(tmp_path, headers):
    index = _slice_phase_index(headers)
    dropped = next(name for name, (k, t) in index.items() if (k, t) == (3, 7))
    _link_series(tmp_path, keep=lambda p: p.name != dropped)
    _refusal(tmp_path, "slice 4 of 10", "has 19 phases, the other slices 20", "missing")


def test_refuses_a_duplicate_image(tmp_path):
    _link_series(tmp_path)
    os.symlink(SERIES / "I0105.dcm", tmp_path / "copy_of_I0105.dcm")
    _refusal(tmp_path, "duplicate image", "TriggerTime")


def test_refuses_a_slice_gap(tmp_path, headers):
    index = _slice_phase_index(headers)
    _link_series(tmp_path, keep=lambda p: index[p.name][0] != 4)
    _refusal(tmp_path, "non-uniform slice spacing", "20.000 mm")


def test_refuses_mixed_matrix_sizes(tmp_path):
    _link_series(tmp_path)
    target = tmp_path / "I0150.dcm"
    ds = pydicom.dcmread(SERIES / "I0150.dcm")
    small = np.ascontiguousarray(ds.pixel_array[::2, ::2])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    target.unlink()
    ds.save_as(target)
    _refusal(tmp_path, "mixed matrix sizes", "128x128", "256x256")


def test_refuses_mixed_orientations(tmp_path):
    _link_series(tmp_path)
    target = tmp_path / "I0150.dcm"
    ds = pydicom.dcmread(SERIES / "I0150.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    target.unlink()
    ds.save_as(target)
    _refusal(tmp_path, "mixed orientations", "I0150.dcm")


def test_several_cine_series(tmp_path, cine, headers):
    _link_series(tmp_path)
    index = _slice_phase_index(headers)
    uid = pydicom.uid.generate_uid(entropy_srcs=["deepstrain test"])
    for name, (k, t) in index.items():
        if k < 2 and t < 2:  # a second, tiny cine: 2 slices x 2 phases
            ds = pydicom.dcmread(SERIES / name)
            ds.SeriesInstanceUID = uid
            ds.SeriesDescription = "other cine"
            ds.save_as(tmp_path / f"other_{name}")
    message = _refusal(tmp_path, "2 cine series", "SSFP-CINE SAx", "other cine", uid)
    chosen = read_dicom_cine(tmp_path, series_uid=str(headers["I0021.dcm"].SeriesInstanceUID))
    np.testing.assert_array_equal(chosen.array, cine.array)
    other = read_dicom_cine(tmp_path, series_uid=uid)
    assert other.array.shape == (256, 256, 2, 2)
    np.testing.assert_array_equal(other.array, cine.array[:, :, :2, :2])
    assert "\n" not in message
    _refusal(tmp_path, "no series with SeriesInstanceUID 1.2.3", series_uid="1.2.3")
    assert cli.main(["convert-dicom", str(tmp_path), str(tmp_path / "other.nii.gz"), "--series", uid]) == 0
    np.testing.assert_array_equal(load_nifti(tmp_path / "other.nii.gz").array, other.array)


def test_rescale_and_no_trigger_time(tmp_path, cine):
    """RescaleSlope/Intercept are applied (float32); without TriggerTime the phases follow InstanceNumber and
    the frame interval falls back on NominalInterval / CardiacNumberOfImages."""
    src = tmp_path / "src"
    _link_series(src)
    for path in sorted(src.iterdir()):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -5
        del ds.TriggerTime
        path.unlink()
        ds.save_as(path)
    scaled = read_dicom_cine(src)
    assert scaled.array.dtype == np.float32
    np.testing.assert_array_equal(scaled.array, cine.array.astype(np.float32) * 2 - 5)
    np.testing.assert_array_equal(scaled.affine, cine.affine)
    assert scaled.frame_interval_s == pytest.approx(0.631 / 20, rel=1e-12)


def test_write_nifti_round_trip(tmp_path, cine):
    write_nifti(cine, tmp_path / "cine.nii.gz")
    back = load_nifti(tmp_path / "cine.nii.gz", ndim=4)
    np.testing.assert_array_equal(back.array, cine.array)
    np.testing.assert_allclose(back.affine, cine.affine, rtol=0, atol=1e-4)  # stored as float32
    assert back.frame_interval_s == pytest.approx(cine.frame_interval_s, rel=1e-6)


def test_cli(tmp_path, cine, capsys):
    out = tmp_path / "cine.nii.gz"
    assert cli.main(["convert-dicom", str(SERIES), str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "256x256x10 x 20 frames" in line and "31.58 ms" in line, line
    written = load_nifti(out, ndim=4)
    np.testing.assert_array_equal(written.array, cine.array)
    np.testing.assert_allclose(written.affine, cine.affine, rtol=0, atol=1e-4)
    assert written.frame_interval_s == pytest.approx(cine.frame_interval_s, rel=1e-6)

    assert cli.main(["convert-dicom", str(SERIES), str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["convert-dicom", str(SERIES), str(out), "--overwrite"]) == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert cli.main(["convert-dicom", str(tmp_path / "empty"), str(tmp_path / "x.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepstrain convert-dicom: error:") and "no DICOM file" in err and "\n" not in err
    assert not (tmp_path / "x.nii.gz").exists()
    assert cli.main(["convert-dicom", str(SERIES), str(tmp_path / "x.png")]) == 2
