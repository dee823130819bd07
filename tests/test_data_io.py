"""NIfTI and ACDC readers/writers: round trips, header conventions and clear errors on bad files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.data import acdc, nifti
from deepstrain_jax.errors import InputError


def _affine(dz=-8.0):
    # float32-representable entries, negative slice step (det < 0) to exercise qfac = -1.
    a = np.diag([1.5, 1.25, dz, 1.0])
    a[:3, 3] = [-40.5, 12.25, 96.0]
    return a


def _cine(shape=(6, 5, 4, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.int16)


def test_nifti_round_trip_keeps_array_affine_spacing_and_frame_interval(tmp_path):
    cine = _cine()
    path = tmp_path / "c.nii.gz"
    nifti.save_nifti(path, cine, _affine(), frame_interval_s=0.03125)
    d = nifti.load_cine(path)
    assert d.array.dtype == np.int16
    np.testing.assert_array_equal(d.array, cine)
    np.testing.assert_array_equal(d.affine, _affine())
    np.testing.assert_array_equal(d.spacing_mm, [1.5, 1.25, 8.0])
    assert d.frame_interval_s == 0.03125
    hdr = nib.load(path).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units() == ("mm", "sec")
    # The saved qform (quaternion) reproduces the same affine, including the reflected slice axis.
    np.testing.assert_allclose(nib.load(path).get_qform(), _affine(), atol=1e-5)


def test_frame_interval_units(tmp_path):
    cine = _cine()
    img = nib.Nifti1Image(cine, _affine())
    img.header.set_zooms((1.5, 1.25, 8.0, 40.0))
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, tmp_path / "ms.nii.gz")
    assert nifti.load_cine(tmp_path / "ms.nii.gz").frame_interval_s == pytest.approx(0.040)
    img.header.set_xyzt_units("mm", "usec")
    img.header.set_zooms((1.5, 1.25, 8.0, 40000.0))
    nib.save(img, tmp_path / "us.nii.gz")
    assert nifti.load_cine(tmp_path / "us.nii.gz").frame_interval_s == pytest.approx(0.040)
    img.header.set_xyzt_units("mm", "unknown")
    nib.save(img, tmp_path / "unknown.nii.gz")
    assert nifti.load_cine(tmp_path / "unknown.nii.gz").frame_interval_s is None
    nifti.save_nifti(tmp_path / "v.nii.gz", cine[..., 0], _affine())
    assert nifti.load_volume(tmp_path / "v.nii.gz").frame_interval_s is None


def test_spatial_units_in_metres_are_converted_to_mm(tmp_path):
    a = np.diag([0.0015, 0.0015, 0.008, 1.0])
    img = nib.Nifti1Image(np.zeros((3, 3, 2), np.float32), a)
    img.header.set_xyzt_units("meter", "sec")
    nib.save(img, tmp_path / "m.nii")
    d = nifti.load_volume(tmp_path / "m.nii")
    np.testing.assert_allclose(d.spacing_mm, [1.5, 1.5, 8.0], rtol=1e-6)
    np.testing.assert_allclose(np.diag(d.affine)[:3], [1.5, 1.5, 8.0], rtol=1e-6)


def test_trailing_singleton_axis_is_dropped_for_volumes(tmp_path):
    vol = _cine((4, 4, 3, 1))
    nifti.save_nifti(tmp_path / "v.nii.gz", vol, _affine(), 0.5)
    d = nifti.load_volume(tmp_path / "v.nii.gz")
    assert d.array.shape == (4, 4, 3)


def test_loader_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        nifti.load_cine(tmp_path / "absent.nii.gz")

    text = tmp_path / "notes.nii.gz"
    text.write_text("this is not an image\n")
    with pytest.raises(InputError, match="notes.nii.gz: not a readable NIfTI"):
        nifti.load_cine(text)

    gz_garbage = tmp_path / "garbage.nii.gz"
    gz_garbage.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(InputError):
        nifti.load_cine(gz_garbage)

    mgh = tmp_path / "v.mgz"
    nib.save(nib.MGHImage(np.zeros((3, 3, 3), np.float32), np.eye(4)), mgh)
    with pytest.raises(InputError, match="not a NIfTI image"):
        nifti.load_volume(mgh)

    cine = _cine((16, 16, 8, 4))
    for suffix in (".nii.gz", ".nii"):
        full = tmp_path / f"full{suffix}"
        nifti.save_nifti(full, cine, _affine(), 0.03)
        data = full.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match=f"cut{suffix}: truncated or corrupt image data") as e:
            nifti.load_cine(cut)
        assert "\n" not in str(e.value)
        with pytest.raises(InputError):
            nifti.load_cine(cut)

    vol = tmp_path / "vol.nii.gz"
    nifti.save_nifti(vol, cine[..., 0], _affine())
    with pytest.raises(InputError, match="expected a 4D image"):
        nifti.load_cine(vol)
    with pytest.raises(InputError, match="expected a 3D image"):
        nifti.load_volume(tmp_path / "full.nii.gz")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.float32), np.eye(4)), flat)
    with pytest.raises(InputError, match="3D or 4D"):
        nifti.load_nifti(flat)

    for bad in (np.nan, np.inf):
        f = np.zeros((4, 4, 3, 2), np.float32)
        f[1, 2, 0, 1] = bad
        p = tmp_path / f"bad_{bad}.nii.gz"
        nib.save(nib.Nifti1Image(f, np.eye(4)), p)
        with pytest.raises(InputError, match="1 voxels are NaN or Inf"):
            nifti.load_cine(p)
        assert not np.isfinite(nifti.load_nifti(p, allow_nonfinite=True).array).all()


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="3D or 4D"):
        nifti.save_nifti(tmp_path / "x.nii.gz", np.zeros((3, 3)), np.eye(4))
    with pytest.raises(ValueError, match="affine"):
        nifti.save_nifti(tmp_path / "x.nii.gz", np.zeros((3, 3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="frame_interval_s"):
        nifti.save_nifti(tmp_path / "x.nii.gz", np.zeros((3, 3, 3, 2)), np.eye(4), frame_interval_s=-1.0)
    assert not list(tmp_path.iterdir())


# --- ACDC ---------------------------------------------------------------------------------------------------

PATIENT001_INFO = "ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n"


def test_info_cfg_is_parsed_with_0_based_frames():
    info = acdc.parse_info_cfg(PATIENT001_INFO)
    assert (info.ed, info.es, info.group, info.height_cm, info.nb_frame, info.weight_kg) == (
        0, 11, "DCM", 184.0, 30, 95.0)
    assert acdc.format_info_cfg(info) == PATIENT001_INFO
    # Extra keys, blank lines and spacing are tolerated; key order does not matter.
    text = "Group:NOR\n\nWeight :  70.5\nNbFrame: 25\nES: 9\nED: 25\nHeight: 171.2\nComment: x\n"
    info = acdc.parse_info_cfg(text)
    assert (info.ed, info.es, info.group, info.weight_kg, info.height_cm) == (24, 8, "NOR", 70.5, 171.2)


@pytest.mark.parametrize("text, match", [
    ("ES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", "missing key.*ED"),
    ("ED: 1\nES: 12\nGroup: DCM\nNbFrame: 30\n", "missing key.*Height, Weight"),
    ("ED: 0\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", "ED = 0 is outside"),
    ("ED: 1\nES: 31\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", "ES = 31 is outside"),
    ("ED: 1\nES: twelve\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", "ES: expected an integer"),
    ("ED: 1.5\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", "ED: expected an integer"),
    ("ED: 1\nES: 12\nGroup: DCM\nHeight: nan\nNbFrame: 30\nWeight: 95.0\n", "Height"),
    ("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: -2\n", "Weight must be positive"),
    ("ED 1\n", "expected 'Key: value'"),
])
def test_info_cfg_errors(text, match, tmp_path):
    p = tmp_path / "Info.cfg"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as e:
        acdc.read_info_cfg(p)
    assert str(p) in str(e.value)


def _write_patient(root, name="patient007", t=5, ed=0, es=2, dz=8.0):
    cine = _cine((8, 7, 4, t), seed=3)
    rng = np.random.default_rng(4)
    labels = {ed: rng.integers(0, 4, (8, 7, 4)), es: rng.integers(0, 4, (8, 7, 4))}
    info = acdc.AcdcInfo(ed=ed, es=es, group="NOR", height_cm=172.5, nb_frame=t, weight_kg=68.0)
    acdc.write_patient(root / name, name, cine, _affine(dz), info, labels, frame_interval_s=0.0390625)
    return cine, labels, info


def test_acdc_write_then_read_returns_identical_arrays_and_affines(tmp_path):
    cine, labels, info = _write_patient(tmp_path)
    folder = tmp_path / "patient007"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["Info.cfg", "patient007_4d.nii.gz", "patient007_frame01.nii.gz",
                     "patient007_frame01_gt.nii.gz", "patient007_frame03.nii.gz", "patient007_frame03_gt.nii.gz"]
    assert (folder / "Info.cfg").read_text().splitlines()[:2] == ["ED: 1", "ES: 3"]
    p = acdc.load_patient(folder)
    assert p.name == "patient007" and p.info == info
    np.testing.assert_array_equal(p.cine.array, cine)
    assert p.cine.array.dtype == np.int16
    np.testing.assert_array_equal(p.cine.affine, _affine(8.0))
    assert p.cine.frame_interval_s == 0.0390625
    assert sorted(p.frames) == [0, 2] and sorted(p.labels) == [0, 2]
    for f in (0, 2):
        np.testing.assert_array_equal(p.frames[f].array, cine[..., f])
        np.testing.assert_array_equal(p.frames[f].affine, p.cine.affine)
        assert p.labels[f].array.dtype == np.uint8
        np.testing.assert_array_equal(p.labels[f].array, labels[f])
    np.testing.assert_array_equal(p.ed_labels, labels[0])
    np.testing.assert_array_equal(p.es_labels, labels[2])


def test_acdc_reader_errors(tmp_path):
    with pytest.raises(InputError, match="patient folder not found"):
        acdc.load_patient(tmp_path / "nobody")
    _write_patient(tmp_path)
    folder = tmp_path / "patient007"

    # Lower-case info.cfg (as DeepStrain opens it) is accepted.
    (folder / "Info.cfg").rename(folder / "info.cfg")
    assert acdc.load_patient(folder).info.es == 2
    (folder / "info.cfg").unlink()
    with pytest.raises(InputError, match="no Info.cfg"):
        acdc.load_patient(folder)
    (folder / "Info.cfg").write_text("ED: 1\nES: 3\nGroup: NOR\nHeight: 170\nNbFrame: 6\nWeight: 60\n")
    with pytest.raises(InputError, match="NbFrame = 6 in Info.cfg but the cine has 5 frames"):
        acdc.load_patient(folder)
    (folder / "Info.cfg").write_text("ED: 1\nES: 3\nGroup: NOR\nHeight: 170\nNbFrame: 5\nWeight: 60\n")
    bad = np.full((8, 7, 4), 5, np.uint8)
    nifti.save_nifti(folder / "patient007_frame02_gt.nii.gz", bad, _affine(8.0))
    with pytest.raises(InputError, match=r"frame02_gt.nii.gz: label values \[5\]"):
        acdc.load_patient(folder)
    nifti.save_nifti(folder / "patient007_frame02_gt.nii.gz", np.zeros((8, 7, 3), np.uint8), _affine(8.0))
    with pytest.raises(InputError, match="differs from the cine"):
        acdc.load_patient(folder)
    (folder / "patient007_frame02_gt.nii.gz").unlink()
    (folder / "patient007_4d.nii.gz").unlink()
    with pytest.raises(InputError, match="missing cine"):
        acdc.load_patient(folder)


def test_acdc_writer_rejects_inconsistent_arguments(tmp_path):
    info = acdc.AcdcInfo(ed=0, es=1, group="NOR", height_cm=170.0, nb_frame=3, weight_kg=60.0)
    with pytest.raises(ValueError, match="frames"):
        acdc.write_patient(tmp_path / "p", "p", np.zeros((4, 4, 2, 2), np.int16), np.eye(4), info)
    with pytest.raises(ValueError, match="outside"):
        acdc.write_patient(tmp_path / "p", "p", np.zeros((4, 4, 2, 3), np.int16), np.eye(4), info,
                           {0: np.full((4, 4, 2), 4)})
    with pytest.raises(ValueError, match="es = 3"):
        acdc.AcdcInfo(ed=0, es=3, group="NOR", height_cm=170.0, nb_frame=3, weight_kg=60.0)


def test_frame_writer_writes_what_save_nifti_writes_and_nothing_when_incomplete(tmp_path):
    """The streaming writer and save_nifti against nibabel's own save of the whole array (decompressed with the
    standard library's gzip: nibabel's gzip header holds the file name and time), for a 4D map and a 5D
    displacement field, and its refusals. Our gzip files hold neither, so the same voxels give the same bytes."""
    import gzip

    from deepstrain_jax.analysis.outputs import NIFTI_INTENT_DISPVECT
    from deepstrain_jax.data.nifti import FrameWriter, save_nifti, to_nifti_image

    rng = np.random.default_rng(0)
    affine = np.diag([1.25, 1.25, 8.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    x = rng.normal(size=(7, 5, 4, 3)).astype(np.float32)
    save_nifti(tmp_path / "a.nii.gz", x, affine, 0.03)
    with FrameWriter(tmp_path / "b.nii.gz", x.shape, np.float32, affine, 0.03) as w:
        for t in range(3):
            w.write(x[..., t])
    nib.save(to_nifti_image(x, affine, 0.03), tmp_path / "nibabel.nii.gz")
    assert gzip.open(tmp_path / "a.nii.gz").read() == gzip.open(tmp_path / "nibabel.nii.gz").read()
    assert gzip.open(tmp_path / "b.nii.gz").read() == gzip.open(tmp_path / "nibabel.nii.gz").read()
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()  # no name, no time
    save_nifti(tmp_path / "plain.nii", x, affine, 0.03)
    assert (tmp_path / "plain.nii").read_bytes() == gzip.open(tmp_path / "nibabel.nii.gz").read()
    (tmp_path / "nibabel.nii.gz").unlink()
    (tmp_path / "plain.nii").unlink()

    u = rng.normal(size=(7, 5, 4, 3, 3)).astype(np.float32)
    img = nib.Nifti1Image(u, affine)
    with FrameWriter(tmp_path / "u.nii.gz", u.shape, np.float32, affine, 0.03,
                     intent=(NIFTI_INTENT_DISPVECT, "displacement_mm"), descrip="test") as w:
        for c in range(3):
            for t in range(3):
                w.write(u[..., t, c])
    back = nib.load(tmp_path / "u.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), u)
    np.testing.assert_allclose(back.affine, img.affine)
    assert back.header["intent_code"] == NIFTI_INTENT_DISPVECT and back.header.get_zooms()[3] == np.float32(0.03)

    with pytest.raises(ValueError, match="2 of 3 blocks written"):
        with FrameWriter(tmp_path / "short.nii.gz", x.shape, np.float32, affine) as w:
            w.write(x[..., 0])
            w.write(x[..., 1])
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        with FrameWriter(tmp_path / "nan.nii.gz", x.shape, np.float32, affine) as w:
            w.write(np.full(x.shape[:3], np.nan, np.float32))
    with pytest.raises(ValueError, match="contains Inf"):
        with FrameWriter(tmp_path / "inf.nii.gz", x.shape, np.float32, affine, allow_nan=True) as w:
            w.write(np.full(x.shape[:3], np.inf, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz", "u.nii.gz"]  # no leftovers
