"""`deepstrain analyze` on a DICOM folder against the field's converter: the same series converted by dcm2niix
and analysed as NIfTI gives the same results.json values; DICOM studies and cohorts are told apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_dicom import SERIES, _dcm2niix

from deepstrain_jax.analysis import discovery
from deepstrain_jax.cli import main

pytestmark = pytest.mark.skipif(not SERIES.is_dir(), reason=f"test data not found: {SERIES}")


def _numbers(d, prefix=""):
    """Every number of a results.json, by its path (inputs, models and file names left out)."""
    if isinstance(d, dict):
        for k, v in d.items():
            if prefix or k not in ("input", "subject", "models", "outputs", "software"):
                yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _numbers(v, f"{prefix}[{i}]")
    else:
        yield prefix, d


def test_dicom_and_its_dcm2niix_nifti_give_the_same_results(tmp_path, capsys):
    exe = _dcm2niix()
    if exe is None:
        pytest.skip("dcm2niix not installed (pip install -e .[test])")
    subprocess.run([exe, "-z", "y", "-b", "n", "-f", "pig", "-o", str(tmp_path), str(SERIES)], check=True,
                   capture_output=True)
    nifti = tmp_path / "pig.nii.gz"
    # dcm2niix stores the RepetitionTime (4.7 ms) as pixdim[4], not the time between phases: read as a cine of one
    # cycle that is 641 bpm, which analyze() refuses to use for strain rates (tested on a phantom in
    # test_input_layouts); the DICOM path takes the trigger times.
    from deepstrain_jax.analysis import inputs
    from deepstrain_jax.pipeline import IMPLAUSIBLE_HR_BPM

    n_cine, d_cine = inputs.read_input(nifti), inputs.read_input(SERIES)
    assert 60.0 / (n_cine.frame_interval_s * 20) > IMPLAUSIBLE_HR_BPM[1]
    assert d_cine.kind == "dicom" and d_cine.frame_interval_s == pytest.approx(0.03158, abs=1e-4)
    np.testing.assert_array_equal(n_cine.image, d_cine.image)

    # With the heart rate given (the header's HeartRate, 95 bpm) both paths are one analysis: every value agrees
    # to float tolerance (the affines differ by the 0.002 mm rounding of the DICOM position fields).
    for source, out in ((nifti, tmp_path / "n95"), (SERIES, tmp_path / "d95")):
        assert main(["analyze", str(source), "--out", str(out), "--no-cache", "--heart-rate", "95"]) == 0
    capsys.readouterr()
    a = dict(_numbers(json.loads((tmp_path / "n95" / "results.json").read_text())))
    b = dict(_numbers(json.loads((tmp_path / "d95" / "results.json").read_text())))
    assert a.keys() == b.keys()
    checked = 0
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float):
            assert abs(x - y) <= 1e-3 * max(abs(x), abs(y)) + 1e-3, (key, x, y)
            checked += 1
        else:
            assert x == y, (key, x, y)
    assert checked > 200
    assert a[".volumes.lv_edv_ml"] > 20  # a real LV was found on this pig heart


def _fake_dicom(path: Path, study: str, series: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_study_folders_and_cohorts_of_studies(tmp_path):
    one, other = generate_uid(), generate_uid()
    # One study exported series by series: one subject, named after the study folder.
    for series in ("cine", "localiser"):
        _fake_dicom(tmp_path / "study" / series / "IM0001.dcm", one, generate_uid())
    found = discovery.discover(tmp_path / "study")
    assert found.kind == "subject" and (found.subjects[0].name, found.subjects[0].kind) == ("study", "dicom")
    # Two studies side by side: a cohort of two.
    _fake_dicom(tmp_path / "cohort" / "a" / "IM1.dcm", one, generate_uid())
    _fake_dicom(tmp_path / "cohort" / "b" / "IM1.dcm", other, generate_uid())
    found = discovery.discover(tmp_path / "cohort")
    assert found.kind == "cohort" and [(s.name, s.kind) for s in found.subjects] == [("a", "dicom"), ("b", "dicom")]
    with pytest.raises(Exception, match="single DICOM file"):
        discovery.discover(tmp_path / "cohort" / "a" / "IM1.dcm")
