"""The pipeline keeps going where the heart is only partly found or the field of view is small (issue 11):
an LV without an RV gives LV outputs with RV values null and a warning; a cine narrower than the 160 mm network
crop is padded and analysed, with a warning, instead of refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.results import check_results
from deepstrain_jax.phantom import dataset
from deepstrain_jax.pipeline import analyze

# 88 x 1.6 mm = 141 mm in-plane: smaller than the 128 x 1.25 = 160 mm network crop.
NARROW = dict(n_frames=6, snr=30.0, matrix=(88, 88), pixel_mm=1.6, n_slices=8, slice_thickness_mm=8.0,
              slice_spacing_mm=10.0, supersample_inplane=2, supersample_slice=3)


@pytest.fixture(scope="module")
def networks():
    return Networks.load()


@pytest.fixture(scope="module")
def narrow_case():
    return dataset.make_case(12, "NOR", **NARROW)


@pytest.fixture(scope="module")
def narrow(narrow_case, tmp_path_factory):
    return dataset.save_case(tmp_path_factory.mktemp("narrow") / "patient001", narrow_case)


def test_small_field_of_view_is_padded_and_analysed(narrow, narrow_case, networks, tmp_path):
    result = analyze(narrow, tmp_path / "out", networks=networks)
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    check_results(d)
    assert any("field of view 141 x 141 mm is smaller than the network crop" in w for w in d["qc"]["warnings"])
    assert result.segmentation.shape == narrow_case.cine.image.shape
    # The heart is in view: the LV is found and its volume is near the one of the true labels.
    from deepstrain_jax.cardiac import volumetrics

    cine = narrow_case.cine
    true = volumetrics.label_volumes_ml(np.moveaxis(cine.labels, 3, 0), cine.geometry.spacing_mm)
    assert d["volumes"]["lv_edv_ml"] == pytest.approx(float(true.lv_ml[cine.ed]), rel=0.2)


class _NoRV:
    """CarSON with the RV class removed from its probabilities (what a scan with the RV out of view gives)."""

    def __init__(self, networks):
        self._n = networks

    def __getattr__(self, name):
        return getattr(self._n, name)

    def segment_frame(self, volume):
        p = np.array(self._n.segment_frame(volume))
        p[..., 0] += p[..., 1]
        p[..., 1] = 0.0
        return p


def test_lv_without_rv_gives_lv_outputs_and_null_rv(narrow, networks, tmp_path):
    result = analyze(narrow, tmp_path / "out", networks=_NoRV(networks))
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    check_results(d)
    v = d["volumes"]
    assert v["lv_edv_ml"] > 20 and v["lv_ef_pct"] is not None
    assert v["rv_edv_ml"] is None and v["rv_esv_ml"] is None and v["rv_ef_pct"] is None
    assert any("no RV found" in w for w in d["qc"]["warnings"])
    assert not (result.segmentation == 1).any()
    # strain is still measured on the LV
    assert d["strain"]["global_pct"]["circumferential"] is not None


def test_results_record_model_identity(narrow, networks, tmp_path):
    import hashlib

    from deepstrain_jax.io.checkpoints import load_variables
    from deepstrain_jax.models import pretrained

    d = analyze(narrow, networks=networks).results
    for name in ("vcn", "carson", "carmen"):
        folder = pretrained.default_model_dir(name)
        prov = json.loads((folder / "provenance.json").read_text())
        m = d["models"][name]
        assert m["name"] == prov["name"] and m["trained_on"] == prov["trained_on"] and m["trained_on"]
        # The hash is of the variables as stored (an independent walk over the saved arrays).
        variables, _ = load_variables(folder)
        h = hashlib.sha256()
        flat = {}

        def walk(prefix, tree):
            for k in tree:
                if isinstance(tree[k], dict):
                    walk(prefix + f"['{k}']", tree[k])
                else:
                    flat[prefix + f"['{k}']"] = np.ascontiguousarray(np.asarray(tree[k]))

        walk("", variables)
        for key in sorted(flat):
            a = flat[key]
            h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        assert m["sha256"] == h.hexdigest() == prov["sha256"]
