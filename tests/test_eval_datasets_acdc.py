"""ACDC evaluator and scoring (eval.datasets): known answers on tiny label maps written in the ACDC layout."""

import math

import numpy as np
import pytest

from deepstrain_jax.data.acdc import AcdcInfo, write_patient
from deepstrain_jax.data.nifti import save_nifti
from eval.datasets import __main__ as cli
from eval.datasets import acdc as acdc_eval
from eval.datasets import scoring

SPACING = (1.5, 1.5, 8.0)
AFFINE = np.diag([*SPACING, 1.0])
SHAPE = (16, 16, 6)
VOXEL_ML = 1.5 * 1.5 * 8.0 / 1000.0


def heart(n_slices: int, shrink: int = 0) -> np.ndarray:
    """Boxes on slices 1..n_slices: LV cavity 6x6 (minus ``shrink`` per side), myocardium ring to 10x10, RV 10x2."""
    lab = np.zeros(SHAPE, np.uint8)
    z = slice(1, 1 + n_slices)
    lab[3:13, 3:13, z] = 2
    lab[5 + shrink:11 - shrink, 5 + shrink:11 - shrink, z] = 3
    lab[3:13, 13:15, z] = 1
    return lab


def erode_lv(lab: np.ndarray) -> np.ndarray:
    """The LV cavity eroded by one voxel in-plane; the removed ring becomes myocardium."""
    out = lab.copy()
    ring = (lab == 3) & ~np.pad((lab == 3)[1:-1, 1:-1] & (lab == 3)[:-2, 1:-1] & (lab == 3)[2:, 1:-1]
                                & (lab == 3)[1:-1, :-2] & (lab == 3)[1:-1, 2:], ((1, 1), (1, 1), (0, 0)))
    out[ring] = 2
    return out


PATIENTS = {"patient001": ("DCM", 2), "patient002": ("NOR", 3), "patient003": ("NOR", 4)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three patients (ED frame 1, ES frame 3 of 3) under root/training, with perfect predictions in pred/."""
    base = tmp_path_factory.mktemp("acdc")
    root, pred = base / "root", base / "pred"
    pred.mkdir()
    for name, (group, n) in PATIENTS.items():
        ed, es = heart(n), heart(n, shrink=1)
        cine = np.random.default_rng(0).integers(0, 100, (*SHAPE, 3)).astype(np.int16)
        info = AcdcInfo(ed=0, es=2, group=group, height_cm=170.0, nb_frame=3, weight_kg=70.0)
        write_patient(root / "training" / name, name, cine, AFFINE, info, labels={0: ed, 2: es})
        save_nifti(pred / f"{name}_frame01.nii.gz", ed, AFFINE)
        save_nifti(pred / f"{name}_frame03.nii.gz", es, AFFINE)
    return root, pred


def test_perfect_prediction(dataset):
    phase_rows, clinical_rows = acdc_eval.evaluate_acdc(*dataset)
    assert [(r["subject"], r["phase"], r["frame"]) for r in phase_rows][:2] == [("patient001", "ED", 0),
                                                                               ("patient001", "ES", 2)]
    for r in phase_rows:
        assert r["dice_lv"] == r["dice_rv"] == r["dice_myo"] == 1.0
        assert r["hd_lv_mm"] == r["hd_rv_mm"] == r["hd_myo_mm"] == 0.0
    summary = scoring.summarize(phase_rows, clinical_rows)
    assert list(summary) == ["DCM", "NOR", "all"] and summary["all"]["n"] == 3
    for key, a in summary["all"]["clinical"].items():
        assert a["bias"] == 0.0 and a["sd"] == 0.0 and a["loa_low"] == a["loa_high"] == 0.0, key
        varies = np.ptp([c[f"{key}_gt"] for c in clinical_rows]) > 0
        assert a["r"] == pytest.approx(1.0) if varies else math.isnan(a["r"]), key  # EFs here are constant
    # Official definitions: volumes from voxel counts, EF from them, mass 1.05 g/mL at ED.
    c = clinical_rows[0]
    assert c["lv_edv_ml_gt"] == pytest.approx(36 * 2 * VOXEL_ML)
    assert c["lv_esv_ml_gt"] == pytest.approx(16 * 2 * VOXEL_ML)
    assert c["lv_ef_pct_gt"] == pytest.approx(100 * (36 - 16) / 36)
    assert c["lv_mass_g_gt"] == pytest.approx(1.05 * 64 * 2 * VOXEL_ML)
    assert c["rv_edv_ml_gt"] == pytest.approx(20 * 2 * VOXEL_ML)
    assert math.isnan(summary["DCM"]["clinical"]["lv_edv_ml"]["loa_low"])  # one subject: no limits of agreement


def test_one_voxel_erosion_of_the_lv_cavity():
    gt = heart(3)
    row = scoring.score_phase(gt, erode_lv(gt), SPACING)
    # LV: 6x6 -> 4x4 per slice, 3 slices; MYO gains the 20-voxel ring.
    assert row["dice_lv"] == pytest.approx(2 * 16 / (36 + 16))
    assert row["dice_myo"] == pytest.approx(2 * 64 / (64 + 84))
    assert row["dice_rv"] == 1.0
    assert row["hd_lv_mm"] == pytest.approx(1.5 * math.sqrt(2))  # corner to corner, in-plane diagonal
    assert row["lv_ml_gt"] - row["lv_ml_pred"] == pytest.approx(20 * 3 * VOXEL_ML)


def test_erosion_gives_the_volume_bias(dataset, tmp_path):
    root, _ = dataset
    pred = tmp_path / "pred"
    pred.mkdir()
    for name, (_, n) in PATIENTS.items():
        save_nifti(pred / name / f"{name}_frame01.nii.gz" if name == "patient002" else
                   pred / f"{name}_ED.nii.gz", erode_lv(heart(n)), AFFINE)  # both accepted layouts
        save_nifti(pred / f"{name}_frame03.nii.gz", heart(n, shrink=1), AFFINE)
    _, clinical_rows = acdc_eval.evaluate_acdc(root, pred)
    a = scoring.summarize([], clinical_rows)["all"]["clinical"]
    ns = [n for _, n in PATIENTS.values()]
    assert a["lv_edv_ml"]["bias"] == pytest.approx(-20 * np.mean(ns) * VOXEL_ML)
    assert a["lv_mass_g"]["bias"] == pytest.approx(1.05 * 20 * np.mean(ns) * VOXEL_ML)
    assert a["lv_esv_ml"]["bias"] == 0.0 and a["rv_edv_ml"]["bias"] == 0.0


def test_cli_writes_csv_and_summary(dataset, tmp_path, capsys):
    root, pred = dataset
    out = tmp_path / "out"
    assert cli.main(["acdc", "--root", str(root), "--pred", str(pred), "--out", str(out)]) == 0
    seg = (out / "segmentation.csv").read_text().splitlines()
    assert seg[0].startswith("subject,group,phase,frame,dice_lv,")
    assert len(seg) == 1 + 2 * len(PATIENTS)
    assert (out / "clinical.csv").read_text().count("\n") == 1 + len(PATIENTS)
    summary = (out / "summary.md").read_text()
    assert "| all | 3 | ED | 1.000 ± 0.000 |" in summary and "| all | lv_ef_pct | 3 |" in summary
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["missing_root", "missing_prediction", "shape_mismatch"])
def test_cli_bad_input_is_one_line_naming_the_file(dataset, tmp_path, capsys, problem):
    root, pred = dataset
    if problem == "missing_root":
        root, expected = tmp_path / "nowhere", "nowhere: ACDC root folder not found"
    else:
        pred = tmp_path / "pred"
        pred.mkdir()
        for name, (_, n) in PATIENTS.items():
            save_nifti(pred / f"{name}_frame01.nii.gz", heart(n), AFFINE)
            if name != "patient001":
                save_nifti(pred / f"{name}_frame03.nii.gz", heart(n, shrink=1), AFFINE)
        if problem == "missing_prediction":
            expected = "patient001_frame03.nii.gz: missing prediction for patient001 ES"
        else:
            save_nifti(pred / "patient001_frame03.nii.gz", np.zeros((16, 16, 5), np.uint8), AFFINE)
            expected = "patient001_frame03.nii.gz: shape (16, 16, 5) differs from the ground truth"
    assert cli.main(["acdc", "--root", str(root), "--pred", str(pred), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[")]  # minus progress
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
