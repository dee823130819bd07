"""`deepstrain analyze` on a real ACDC cine (read in place from ../shared/data/acdc; a few frames of one training
patient): the ACDC slice-order convention where the images cannot tell, and a report whose QC is honest."""

from __future__ import annotations

import json
import re
from html import escape

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.analysis import grids
from deepstrain_jax.data import acdc_real as ar
from deepstrain_jax.pipeline import analyze
from deepstrain_jax.report.html import qc_checks

ROOT = ar.default_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="../shared/data/acdc is not beside the repository")


@pytest.fixture(scope="module")
def short_cine(tmp_path_factory):
    """patient001's cropped cine cut to 6 frames (ED = 1 and ES = 4 in the new numbering), as an ACDC folder."""
    src = ROOT / "cine" / "patient001"
    img = nib.load(src / "patient001_4d.nii.gz")
    keep = [0, 3, 6, 11, 18, 25]  # ED (frame 1 of Info.cfg) ... ES (frame 12) ... diastole
    data = np.asarray(img.dataobj)[..., keep]
    folder = tmp_path_factory.mktemp("acdc") / "patient001"
    folder.mkdir()
    header = img.header.copy()
    nib.save(nib.Nifti1Image(data, img.affine, header), folder / "patient001_4d.nii.gz")
    info = (src / "Info.cfg").read_text()
    info = re.sub(r"ED: *\d+", "ED: 1", re.sub(r"ES: *\d+", "ES: 4", re.sub(r"NbFrame: *\d+", "NbFrame: 6", info)))
    (folder / "Info.cfg").write_text(info)
    return folder


def test_flat_stack_takes_the_acdc_order_and_the_report_is_honest(short_cine, tmp_path, monkeypatch):
    # The detector, made to find no slope and to guess the wrong way, is overruled by ACDC's convention.
    monkeypatch.setattr(grids, "detect_slice_order", lambda labels: ("apex_to_base", 0.001))
    out = tmp_path / "patient001"
    r = analyze(short_cine, out).results
    assert r["input"]["kind"] == "acdc"
    assert (r["input"]["slice_order"], r["input"]["slice_order_source"]) == ("base_to_apex", "layout")
    assert not [w for w in r["qc"]["warnings"] if "slice order" in w]
    # The report opens with the segmentation montage, and its QC colours follow the checks' thresholds.
    html = (out / "report.html").read_text()
    assert html.index("qc_montage") < html.index("polar_map")
    statuses = {c[0]: c[3] for c in qc_checks(r)}
    for check, status in statuses.items():
        pattern = re.escape(escape(check)) + r"</td>[^\n]*?class=\"qc-" + (status if status != "n/a" else "amber")
        assert re.search(pattern, html), check  # within the check's own table row
    # A 7-slice crop of the mid-ventricle does not reach the apex: the coverage check cannot be green.
    assert statuses["stack covers the LV base to apex"] == "amber" and r["volumes"]["partial"]
    assert json.loads((out / "results.json").read_text())["input"]["slice_order_source"] == "layout"
