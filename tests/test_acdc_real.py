"""Real ACDC readers (the three forms of ../shared/data/acdc), the held-out split, and training on real slices.

Read in place from ``../shared/data/acdc`` (CI has it); a few patients only. Expectations are independent of the
readers: nibabel on the original files, the README's facts (shapes, ED/ES, the transposition between forms), and
the manifest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.data import acdc_real as ar
from deepstrain_jax.errors import InputError
from deepstrain_jax.training_data import batches, pools
from deepstrain_jax.training_data import subjects as sj

ROOT = ar.default_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="../shared/data/acdc is not beside the repository")


def test_held_out_list_is_the_issues_and_the_configs():
    from configs import carson, common, vcn

    assert ar.HELD_OUT == ("006", "007", "008", "033", "039", "059", "078", "080", "087", "093")
    assert common.HELD_OUT == ar.HELD_OUT
    for module in (carson, vcn):
        assert tuple(module.get_config("real").data.real.held_out) == ar.HELD_OUT


def test_labelled_reader_matches_nibabel():
    (ref,) = ar.find_cases(ROOT, "labelled", include=["001"])
    case = ar.read_case(ref)
    folder = ROOT / "labelled" / "patient001"
    info = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines() if ": " in line)
    ed, es = int(info["ED"]), int(info["ES"])
    img_ed = nib.load(folder / f"patient001_frame{ed:02d}.nii.gz")
    gt_es = nib.load(folder / f"patient001_frame{es:02d}_gt.nii.gz").get_fdata()
    np.testing.assert_array_equal(case.image[..., 0], img_ed.get_fdata().astype(np.float32))
    np.testing.assert_array_equal(case.labels[1], gt_es.astype(np.uint8))
    np.testing.assert_allclose(case.spacing_mm, img_ed.header.get_zooms()[:3])
    assert (case.ed, case.es, case.group, case.spacing_known) == (0, 1, info["Group"], True)


def test_h5_reader_is_the_nifti_transposed_and_nominal_spacing():
    # patient007 is in both forms: the h5 labels are the NIfTI labels transposed (2, 1, 0).
    (h5_ref,) = ar.find_cases(ROOT, "h5", include=["007"])
    h5_case = ar.read_case(h5_ref)
    gt = nib.load(ROOT / "labelled" / "patient007" / "patient007_frame01_gt.nii.gz").get_fdata()
    np.testing.assert_array_equal(h5_case.labels[0], gt.astype(np.uint8))
    assert h5_case.image.shape == gt.shape + (2,)
    assert not h5_case.spacing_known
    np.testing.assert_array_equal(h5_case.spacing_mm, ar.NOMINAL_SPACING_MM)
    assert h5_case.group == "DCM" and ar.group_of("093") == "RV" and ar.group_of("059") == "MINF"


def test_cine_reader_uses_the_manifest_and_refuses_a_disagreeing_header(tmp_path):
    rows = {r["patient"]: r for r in csv.DictReader(open(ROOT / "cine" / "manifest.csv"))}
    (known,) = ar.find_cases(ROOT, "cine", include=["001"])
    case = ar.read_case(known)
    assert case.image.shape[:3] == tuple(int(v) for v in rows["patient001"]["shape"].split("x"))
    assert case.image.shape[3] == int(rows["patient001"]["frames"])
    np.testing.assert_allclose(case.spacing_mm, [float(v) for v in rows["patient001"]["spacing_mm"].split()], atol=1e-3)
    assert (case.ed, case.es) == (int(rows["patient001"]["ed"]) - 1, int(rows["patient001"]["es"]) - 1)
    assert set(case.labels) == {case.ed, case.es} and case.labels[case.es].max() == 3
    (lost,) = ar.find_cases(ROOT, "cine", include=["041"])
    case = ar.read_case(lost)
    assert rows["patient041"]["spacing_known"] == "0" and not case.spacing_known and case.labels == {}
    np.testing.assert_array_equal(case.spacing_mm, ar.NOMINAL_SPACING_MM)

    # A copy whose manifest says another voxel size than the header: one clear error naming the file.
    copy = tmp_path / "cine" / "patient001"
    copy.mkdir(parents=True)
    for f in (ROOT / "cine" / "patient001").iterdir():
        (copy / f.name).symlink_to(f)
    with open(tmp_path / "cine" / "manifest.csv", "w") as f:
        f.write("patient,group,ed,es,frames,shape,spacing_known,spacing_mm\n"
                "patient001,DCM,1,12,30,100x95x7,1,2.0 2.0 10\n")
    with pytest.raises(InputError, match="disagrees with the manifest"):
        ar.read_case(ar.find_cases(tmp_path, "cine")[0])


def test_bad_h5_is_one_clear_error(tmp_path):
    (tmp_path / "h5").mkdir()
    (tmp_path / "h5" / "patient050_frame01.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="patient050 lacks patient050_frame02.h5"):
        ar.find_cases(tmp_path, "h5")
    (tmp_path / "h5" / "patient050_frame02.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="patient050_frame01.h5.*not a readable h5"):
        ar.read_case(ar.find_cases(tmp_path, "h5")[0])


def test_split_excludes_the_held_out_patients_in_every_form():
    for form in ar.FORMS:
        train = ar.find_cases(ROOT, form, exclude=ar.HELD_OUT)
        test = ar.find_cases(ROOT, form, include=ar.HELD_OUT)
        assert train and not {r.number for r in train} & set(ar.HELD_OUT)
        assert {r.number for r in test} <= set(ar.HELD_OUT)
    with pytest.raises(ValueError, match="held-out patients in a training pool: patient007"):
        pools.RealAcdcPool(ar.find_cases(ROOT, "h5", include=["007", "022"]), held_out=ar.HELD_OUT)


def test_training_configs_never_reach_a_held_out_patient(tmp_path):
    """Every subject a :real training run can draw, and its validation pool, is outside the held-out list."""
    from configs import carson, vcn
    from train import trainer

    for module, variant in ((carson, "real"), (carson, "real_v2"), (carson, "real_v3"), (carson, "real_v4"),
                           (vcn, "real")):  # v2 ships; v3, v4: candidates
        c = module.get_config(variant)
        c.data.phantom_models = ()        # rendering phantoms is not what this test is about
        refs = trainer.real_training_refs(c)
        names = {r.number for r in refs}
        assert len(refs) == len(names) == 25 and not names & set(ar.HELD_OUT)
        train, val = trainer.make_pools(c, tmp_path)
        real = [p for p in train.pools if isinstance(p, pools.RealAcdcPool)]
        assert real and all(not set(p.patients()) & set(ar.HELD_OUT) for p in real)
        if isinstance(val, pools.RealAcdcPool):
            assert not set(val.patients()) & set(ar.HELD_OUT)
        # The batches themselves: every subject index of many steps maps to a training patient.
        for step in range(0, 200, 7):
            idx = batches.subject_indices(len(train), c.seed, step, c.train.batch_size)
            for i in idx:
                k, j = train.locate(int(i))
                assert train.pools[k].refs[j].number not in ar.HELD_OUT


def test_mixture_pool_weights_and_locates():
    a = [object() for _ in range(3)]
    b = [object() for _ in range(2)]
    m = pools.MixturePool([a, b], repeats=[2, 1])
    assert len(m) == 8
    assert [m.locate(i) for i in range(8)] == [(0, 0), (0, 1), (0, 2), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert m[7] is b[1] and m[-1] is b[1]
    with pytest.raises(IndexError):
        m[8]
    with pytest.raises(ValueError):
        pools.MixturePool([a], repeats=[0])


def test_real_subject_on_the_network_grid():
    (ref,) = ar.find_cases(ROOT, "h5", include=["022"])
    s = sj.subject_from_real_case(ar.read_case(ref), sj.SubjectConfig())
    assert s.image.shape == (2, 128, 128, 16) and s.labelled.all()
    # Centred on the ED myocardium: its centre of mass is at the crop centre (the crop starts on a whole voxel).
    c = sj.myocardium_centroid(s.labels[0])
    np.testing.assert_allclose(c, [63.5, 63.5], atol=1.0)
    b = batches.carson_batch([s], 0, 0, 4, heart_only=True, crop=96)
    assert b["inputs"].shape == (4, 96, 96, 1) and b["labels"].shape == (4, 96, 96)
    np.testing.assert_allclose(b["inputs"].mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(b["inputs"].std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_tiny_training_on_real_slices_lowers_the_loss(tmp_path):
    from configs import carson
    from train import trainer

    c = carson.get_config("real_smoke")
    c.data.real.forms = ("h5",)
    c.data.cache_dir = str(tmp_path / "cache")
    c.augment.enabled = False
    c.train.steps, c.train.lr = 30, 3e-3
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 5, 30, 30
    c.model.input_shape = (64, 64, 1)
    c.data.crop, c.data.inplane_mm = 64, 2.5
    trainer.train_and_evaluate(c, tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")
              if '"split": "train"' in line]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < losses[0] - 0.05, losses


def test_real_data_evaluation_of_one_held_out_patient():
    """eval.real_data on one held-out patient: the row's Dice and volumes agree with a direct computation on the
    arrays it returns; importing it defines no absl flags (eval.main imports it beside flags of the same names)."""
    from absl import flags

    from deepstrain_jax.analysis.networks import Networks
    from eval import real_data

    assert not {"previous", "previous_note", "carson", "vcn"} & set(flags.FLAGS)

    refs = real_data.held_out_refs(ROOT, ar.HELD_OUT)
    assert [r.number for r in refs] == list(ar.HELD_OUT)
    assert [r.form for r in refs[:3]] == ["labelled"] * 3 and all(r.form == "h5" for r in refs[3:])
    rows, arrays = real_data.run(Networks.load(), [refs[1]])       # patient007, full view, scan voxel size
    row, arr = rows[0], arrays["patient007"]
    for k, phase in enumerate(("ed", "es")):
        a, m = arr["auto"][..., k] == 2, arr["manual"][..., k] == 2
        assert row[f"dice_myo_{phase}"] == pytest.approx(2 * (a & m).sum() / (a.sum() + m.sum()))
    voxel_ml = np.prod(ar.read_case(refs[1]).spacing_mm) / 1000.0
    assert row["manual_ed"]["lv"] == pytest.approx((arr["manual"][..., 0] == 3).sum() * voxel_ml)
    assert row["manual_lv_ef"] == pytest.approx(
        100 * (1 - (arr["manual"][..., 1] == 3).sum() / (arr["manual"][..., 0] == 3).sum()))
    assert 0 <= row["centre_error_mm"] < 20 and row["spacing_known"]
    text = real_data.markdown({"current": {"rows": rows, "summary": real_data.summary(rows)}}, {"current": "x"})
    assert "patient007" in text and "must reach" in text


def test_resolve_root_takes_the_given_folder_else_the_default():
    assert ar.resolve_root("") == ar.default_root() and ar.resolve_root(None) == ar.default_root()
    assert ar.resolve_root("/data/acdc") == Path("/data/acdc")
