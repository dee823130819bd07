"""The inputs researchers have: UK Biobank and M&Ms layouts, arrays from Python, and headers that are checked
rather than trusted (pixdim against the affine, an implausible frame interval, a heart rate given explicitly,
a stack too short for the LV, ES = ED, time and slice axes swapped).

Discovery tests are fast (no networks). The end-to-end ones analyse one small phantom in several guises and
compare against the same phantom analysed from its ACDC folder: the independent expectation is "the layout or
the header's form must not change the numbers" (or must change exactly what the check says).
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from test_analyze import SMALL

from deepstrain_jax.analysis import discovery, inputs
from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.cli import main
from deepstrain_jax.errors import InputError
from deepstrain_jax.phantom import dataset
from deepstrain_jax.pipeline import analyze


def _nifti(path, array, affine, dt=0.05, pixdim=None):
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    if pixdim is not None:
        img.header["pixdim"][1:4] = pixdim
    img.header["pixdim"][4] = dt
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _tiny(path):
    return _nifti(path, np.random.default_rng(0).uniform(0, 9, (8, 8, 3, 4)).astype(np.float32),
                  np.diag([1.5, 1.5, 8.0, 1.0]))


# --- Discovery (no networks) ---

def test_uk_biobank_layout(tmp_path):
    subject = tmp_path / "ukbb" / "1000123"
    _tiny(subject / "sa.nii.gz")
    _tiny(subject / "la_4ch.nii.gz")
    _tiny(subject / "seg_sa.nii.gz")  # ukbb_cardiac's own output: a segmentation
    found = discovery.discover(tmp_path / "ukbb")
    assert found.kind == "cohort"
    assert [(s.name, s.kind, s.path.name) for s in found.subjects] == [("1000123", "ukbb", "sa.nii.gz")]
    assert any("long-axis" in why for _, why in found.skipped)
    # The subject folder, and its sa.nii.gz, are one subject named by the eid (not "sa").
    for path in (subject, subject / "sa.nii.gz"):
        d = discovery.discover(path)
        assert d.kind == "subject" and d.subjects[0].name == "1000123"
    with pytest.raises(InputError, match="long-axis"):
        discovery.discover(subject / "la_4ch.nii.gz")


def test_mnms_layouts_never_take_label_files_and_read_ed_es_from_the_csv(tmp_path):
    root = tmp_path / "mnms"
    for code in ("A0S9V9", "B1D7X3"):
        _tiny(root / "Training" / "Labeled" / code / f"{code}_sa.nii.gz")
        _tiny(root / "Training" / "Labeled" / code / f"{code}_sa_gt.nii.gz")
    (root / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").write_text(
        ",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight\n"
        "0,A0S9V9,Siemens,A,1,0,9,67,HCM,M,,\n1,B1D7X3,Philips,B,2,29,11,48,NOR,F,,\n")
    found = discovery.discover(root)
    got = {(s.name, s.kind, s.path.name, s.ed, s.es, s.group) for s in found.subjects}
    assert got == {("A0S9V9", "mnms", "A0S9V9_sa.nii.gz", 0, 9, "HCM"),
                   ("B1D7X3", "mnms", "B1D7X3_sa.nii.gz", 29, 11, "NOR")}
    gt = root / "Training" / "Labeled" / "A0S9V9" / "A0S9V9_sa_gt.nii.gz"
    with pytest.raises(InputError, match="is a label map"):
        discovery.discover(gt)
    cine = inputs.read_input(root / "Training" / "Labeled" / "B1D7X3")
    assert (cine.name, cine.ed, cine.es, cine.group) == ("B1D7X3", 29, 11, "NOR")
    # M&Ms-2 names.
    _tiny(tmp_path / "mnms2" / "001" / "001_SA_CINE.nii.gz")
    _tiny(tmp_path / "mnms2" / "001" / "001_SA_ED_gt.nii.gz")
    d = discovery.discover(tmp_path / "mnms2" / "001")
    assert d.kind == "subject" and (d.subjects[0].name, d.subjects[0].path.name) == ("001", "001_SA_CINE.nii.gz")


def test_a_path_that_is_nothing_says_what_it_holds(tmp_path):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / "empty").mkdir()
    with pytest.raises(InputError, match=r"no subject found: expected an ACDC patient folder .* this folder holds "
                                         r"1 folder\(s\) \(empty\) and 1 file\(s\) \(notes.txt\)"):
        discovery.discover(folder)


def test_our_own_outputs_are_not_inputs(tmp_path):
    _tiny(tmp_path / "cohort" / "a.nii.gz")
    _tiny(tmp_path / "cohort" / "results" / "a" / "segmentation.nii.gz")
    (tmp_path / "cohort" / "results" / "cohort.csv").write_text("subject\n")
    found = discovery.discover(tmp_path / "cohort")
    assert [s.name for s in found.subjects] == ["a"]


def test_arrays_need_a_voxel_size_that_agrees_with_the_affine():
    image = np.random.default_rng(0).uniform(0, 9, (8, 8, 3, 4)).astype(np.float32)
    cine = inputs.cine_from_array(image, spacing_mm=(1.5, 1.5, 8.0), name="x")
    np.testing.assert_array_equal(cine.affine, np.diag([1.5, 1.5, 8.0, 1.0]))
    with pytest.raises(InputError, match="needs its voxel size"):
        inputs.cine_from_array(image)
    with pytest.raises(InputError, match="disagrees with the affine"):
        inputs.cine_from_array(image, spacing_mm=(2.0, 1.5, 8.0), affine=np.diag([1.44, 1.5, 8.0, 1.0]))
    with pytest.raises(InputError, match=r"expected a 4D \(X, Y, Z, T\) array"):
        inputs.cine_from_array(image[..., 0], spacing_mm=(1.5, 1.5, 8.0))


def test_pixdim_that_disagrees_with_the_affine_is_not_trusted(tmp_path):
    from deepstrain_jax.data.nifti import load_cine

    image = np.random.default_rng(0).uniform(0, 9, (8, 8, 3, 4)).astype(np.float32)
    path = _nifti(tmp_path / "c.nii.gz", image, np.diag([1.44, 1.44, 8.0, 1.0]), pixdim=(2.0, 2.0, 8.0))
    assert nib.load(path).header.get_zooms()[:3] == (2.0, 2.0, 8.0)  # the file really disagrees with itself
    data = load_cine(path, geometry="checked")  # what analyze reads with
    np.testing.assert_allclose(data.spacing_mm, [1.44, 1.44, 8.0], rtol=1e-6)
    assert len(data.warnings) == 1 and "pixdim voxel size 2 x 2 x 8 mm disagrees with the affine" in data.warnings[0]
    assert "the affine's is used" in data.warnings[0]
    # The training readers keep pixdim (and say so).
    legacy = load_cine(path)
    np.testing.assert_allclose(legacy.spacing_mm, [2.0, 2.0, 8.0]) and "pixdim's is used" in legacy.warnings[0]
    # An affine with no voxel scaling (unit columns, as the sform of the original ACDC files) only orients: pixdim
    # gives the size and the affine is rescaled to it.
    acdc_like = _nifti(tmp_path / "a.nii.gz", image, np.diag([-1.0, -1.0, 1.0, 1.0]), pixdim=(1.5625, 1.5625, 10.0))
    data = load_cine(acdc_like, geometry="checked")
    np.testing.assert_allclose(data.spacing_mm, [1.5625, 1.5625, 10.0], rtol=1e-6)
    np.testing.assert_allclose(data.affine[:3, :3], np.diag([-1.5625, -1.5625, 10.0]), rtol=1e-6)
    assert "no voxel scaling" in data.warnings[0]


def test_swapped_time_and_slice_axes_are_refused(tmp_path, capsys):
    case = dataset.make_case(5, "NOR", **{**SMALL, "n_frames": 14})
    image = np.asarray(case.cine.image, np.float32)
    path = _nifti(tmp_path / "swapped.nii.gz", np.swapaxes(image, 2, 3), np.diag([1.6, 1.6, 10.0, 1.0]))
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "axes look swapped" in err[0] and str(path) in err[0]
    assert not (tmp_path / "out").exists()
    # The same cine the right way round passes the check (it is an analysable phantom).
    cine = inputs.cine_from_array(image, spacing_mm=(1.6, 1.6, 10.0))
    inputs.check_cine(cine, crop_mm=160.0)


# --- End to end (one phantom in several guises) ---

@pytest.fixture(scope="module")
def networks():
    return Networks.load()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    case = dataset.make_case(11, "NOR", **SMALL)
    folder = dataset.save_case(tmp_path_factory.mktemp("layouts") / "patient001", case)
    return folder, case


@pytest.fixture(scope="module")
def reference(phantom, networks):
    folder, case = phantom
    return analyze(folder, networks=networks, es=case.cine.es).results


def _cine_file(phantom):
    folder, _ = phantom
    return folder / "patient001_4d.nii.gz"


def test_layouts_and_arrays_give_the_acdc_folder_numbers(phantom, networks, reference, tmp_path, capsys):
    folder, case = phantom
    img = nib.load(_cine_file(phantom))
    es = case.cine.es
    # A cohort with a UK Biobank subject and an M&Ms subject whose CSV gives ED and ES.
    root = tmp_path / "cohort"
    (root / "1000123").mkdir(parents=True)
    shutil.copy(_cine_file(phantom), root / "1000123" / "sa.nii.gz")
    (root / "A0S9V9").mkdir()
    shutil.copy(_cine_file(phantom), root / "A0S9V9" / "A0S9V9_sa.nii.gz")
    (root / "meta.csv").write_text(f"External code,ED,ES,Pathology\nA0S9V9,0,{es},NOR\n")
    assert main(["analyze", str(root), "--out", str(tmp_path / "out"), "--no-cache", "--es", str(es)]) == 0
    for name, kind in (("1000123", "ukbb"), ("A0S9V9", "mnms")):
        d = json.loads((tmp_path / "out" / name / "results.json").read_text())
        assert d["subject"] == name and d["input"]["kind"] == kind
        assert d["volumes"]["lv_edv_ml"] == reference["volumes"]["lv_edv_ml"]
        assert d["strain"]["global_pct"] == reference["strain"]["global_pct"]
    mnms = analyze(root / "A0S9V9", networks=networks).results
    assert (mnms["frames"]["es"], mnms["frames"]["es_source"], mnms["input"]["group"]) == (es, "metadata", "NOR")
    # An array from Python with the file's affine and frame interval.
    arr = analyze(np.asarray(img.dataobj), networks=networks, affine=img.affine, name="mine", es=es,
                  frame_interval_s=float(img.header.get_zooms()[3])).results
    assert arr["subject"] == "mine" and arr["input"]["kind"] == "array"
    assert arr["volumes"]["lv_edv_ml"] == reference["volumes"]["lv_edv_ml"]
    assert arr["strain"]["indices"] == reference["strain"]["indices"]


def test_a_self_contradicting_header_is_analysed_with_the_affine_and_says_so(phantom, networks, reference,
                                                                            tmp_path):
    _, case = phantom
    img = nib.load(_cine_file(phantom))
    zooms = np.asarray(img.header.get_zooms()[:3])
    bad = _nifti(tmp_path / "bad.nii.gz", np.asarray(img.dataobj), img.affine, dt=float(img.header.get_zooms()[3]),
                 pixdim=(zooms[0] * 1.39, zooms[1] * 1.39, zooms[2]))
    d = analyze(bad, networks=networks, es=case.cine.es).results
    assert d["volumes"]["lv_edv_ml"] == reference["volumes"]["lv_edv_ml"]  # not 1.39^2 x too large
    assert any("disagrees with the affine" in w for w in d["qc"]["warnings"])


def test_frame_interval_plausibility_and_an_explicit_heart_rate(phantom, networks, tmp_path):
    _, case = phantom
    img = nib.load(_cine_file(phantom))
    t = img.shape[3]
    fast = _nifti(tmp_path / "fast.nii.gz", np.asarray(img.dataobj), img.affine, dt=60.0 / 828.0 / t)
    d = analyze(fast, networks=networks, es=case.cine.es).results
    assert d["strain"]["strain_rate_per_s"] is None and d["input"]["frame_interval_s"] is None
    assert any("implies 828 bpm" in w and "strain rates are not computed" in w for w in d["qc"]["warnings"])
    # --heart-rate wins over the header, with a note.
    d = analyze(fast, networks=networks, es=case.cine.es, heart_rate_bpm=60.0).results
    assert d["input"]["frame_interval_s"] == pytest.approx(1.0 / t)
    assert d["input"]["frame_interval_source"] == "heart_rate"
    assert "overridden by the given heart rate (60 bpm)" in d["input"]["frame_interval_note"]
    assert d["strain"]["strain_rate_per_s"] is not None


def test_short_stacks_are_partial_and_es_equal_to_ed_is_refused(phantom, networks, tmp_path, capsys):
    # A model-B phantom (an ellipsoid LV with an apex) covered base to apex by its 8 slices, then cut to 2.
    case = dataset.make_case(11, "NOR", model="B", **SMALL)
    folder = dataset.save_case(tmp_path / "patient002", case)
    full = analyze(folder, networks=networks).results
    assert full["volumes"]["partial"] is False and full["qc"]["coverage"] == {"n_slices": 8, "lv_slices": 8,
                                                                              "apex_covered": True}
    img = nib.load(folder / "patient002_4d.nii.gz")
    two = _nifti(tmp_path / "two.nii.gz", np.ascontiguousarray(np.asarray(img.dataobj)[:, :, 2:4]), img.affine,
                 dt=float(img.header.get_zooms()[3]))
    out = tmp_path / "two_out"
    assert main(["analyze", str(two), "--out", str(out), "--no-cache", "--es", str(case.cine.es)]) == 0
    d = json.loads((out / "results.json").read_text())
    assert d["volumes"]["partial"] is True and d["qc"]["coverage"]["n_slices"] == 2
    assert any("only 2 slice(s)" in w and "partial" in w for w in d["qc"]["warnings"])
    assert d["volumes"]["lv_edv_ml"] < 0.5 * full["volumes"]["lv_edv_ml"]  # what the two slices hold, flagged
    # Model A is a cylinder without an apex: its stack "stops before the apex", and says so.
    _, case_a = phantom
    a = analyze(_cine_file(phantom), networks=networks, es=case_a.cine.es).results
    assert a["qc"]["coverage"]["apex_covered"] is False and a["volumes"]["partial"] is True
    capsys.readouterr()

    code = main(["analyze", str(_cine_file(phantom)), "--out", str(tmp_path / "eq"), "--no-cache", "--ed", "2",
                 "--es", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ES frame (2) equals the ED frame" in err[0]
    assert not (tmp_path / "eq").exists()
