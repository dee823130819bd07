"""M&Ms evaluator (eval.datasets.mnms): label remap, layout round trip, metadata CSV, scores."""

import numpy as np
import pytest

from deepstrain_jax.data.nifti import load_nifti, save_nifti
from deepstrain_jax.errors import InputError
from eval.datasets import __main__ as cli
from eval.datasets import mnms
from eval.datasets.label_files import load_labels

AFFINE = np.diag([1.25, 1.25, 10.0, 1.0])
SHAPE = (12, 12, 4)
N_FRAMES = 5


def heart(size: int) -> np.ndarray:
    """ACDC labels: LV cavity square of side ``size``, myocardium ring of 2, RV block beside it."""
    lab = np.zeros(SHAPE, np.uint8)
    lo, hi = 5 - size // 2, 5 - size // 2 + size
    lab[lo - 2:hi + 2, lo - 2:hi + 2, 1:3] = 2
    lab[lo:hi, lo:hi, 1:3] = 3
    lab[lo - 2:hi + 2, hi + 2:hi + 4, 1:3] = 1
    return lab


# code: (pathology, ED, ES, LV cavity size at ED)
SUBJECTS = {"A1B2C3": ("NOR", 1, 3, 4), "D4E5F6": ("HCM", 0, 2, 3), "G7H8I9": ("DCM", 2, 4, 5)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("mnms")
    root = base / "OpenDataset"
    rows = []
    for code, (pathology, ed, es, size) in SUBJECTS.items():
        cine = np.zeros((*SHAPE, N_FRAMES), np.int16)
        mnms.write_mnms_subject(root, code, cine, {ed: heart(size), es: heart(size - 1)}, AFFINE)
        rows.append({"External code": code, "VendorName": "Siemens", "Vendor": "A", "Centre": 1, "ED": ed, "ES": es,
                     "Pathology": pathology})
    # An unlabeled subject (vendor C) and its metadata row must be ignored.
    mnms.write_mnms_subject(root, "ZZZZZZ", np.zeros((*SHAPE, N_FRAMES), np.int16), {}, AFFINE,
                            split="Training/Unlabeled")
    mnms.write_metadata(root, rows)
    return root


def test_remap_mnms_to_acdc():
    np.testing.assert_array_equal(mnms.remap_mnms_labels(np.array([0, 1, 2, 3])), [0, 3, 2, 1])
    with pytest.raises(InputError, match=r"outside \{0, 1, 2, 3\}"):
        mnms.remap_mnms_labels(np.array([0, 4]))


def test_layout_round_trip(dataset):
    code = "A1B2C3"
    gt_path = dataset / "Training" / "Labeled" / code / f"{code}_sa_gt.nii.gz"
    stored = load_nifti(gt_path).array
    assert stored.shape == (*SHAPE, N_FRAMES)
    lab = heart(4)  # A1B2C3: ED frame 1, size 4
    assert set(np.unique(stored[..., 1][lab == 3])) == {1} and set(np.unique(stored[..., 1][lab == 1])) == {3}
    np.testing.assert_array_equal(load_labels(gt_path, 4, lookup=mnms.MNMS_TO_ACDC)[0][..., 1], lab)
    meta = mnms.read_metadata(mnms.find_metadata(dataset))
    assert meta["D4E5F6"] == {"ed": 0, "es": 2, "pathology": "HCM", "vendor": "A", "centre": "1"}
    assert [p.name for p in mnms.find_subjects(dataset)] == [f"{c}_sa_gt.nii.gz" for c in sorted(SUBJECTS)]


def test_perfect_prediction_in_either_file_form(dataset, tmp_path):
    pred = tmp_path / "pred"
    for code, (_, ed, es, size) in SUBJECTS.items():
        if code == "A1B2C3":  # the 4D ground-truth file itself, M&Ms labels
            src = dataset / "Training" / "Labeled" / code / f"{code}_sa_gt.nii.gz"
            (pred / code).mkdir(parents=True)
            (pred / code / src.name).write_bytes(src.read_bytes())
        else:  # 3D ED/ES maps in M&Ms labels
            pred.mkdir(exist_ok=True)
            save_nifti(pred / f"{code}_sa_ED.nii.gz", np.asarray(mnms.ACDC_TO_MNMS, np.uint8)[heart(size)], AFFINE)
            save_nifti(pred / f"{code}_sa_ES.nii.gz", np.asarray(mnms.ACDC_TO_MNMS, np.uint8)[heart(size - 1)],
                       AFFINE)
    phase_rows, clinical_rows = mnms.evaluate_mnms(dataset, pred)
    assert [r["subject"] for r in clinical_rows] == sorted(SUBJECTS)
    assert [r["group"] for r in clinical_rows] == ["NOR", "HCM", "DCM"]
    assert [r["frame"] for r in phase_rows[:2]] == [1, 3]
    for r in phase_rows:
        assert r["dice_lv"] == r["dice_rv"] == r["dice_myo"] == 1.0 and r["hd_lv_mm"] == 0.0
    c = clinical_rows[0]
    assert c["lv_edv_ml_gt"] == pytest.approx(16 * 2 * 1.25 * 1.25 * 10.0 / 1000)  # 4x4 cavity on 2 slices


def test_prediction_in_acdc_labels(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for code, (_, _, _, size) in SUBJECTS.items():
        save_nifti(pred / f"{code}_sa_ED.nii.gz", heart(size), AFFINE)
        save_nifti(pred / f"{code}_sa_ES.nii.gz", heart(size - 1), AFFINE)
    phase_rows, _ = mnms.evaluate_mnms(dataset, pred, pred_labels="acdc")
    assert all(r["dice_lv"] == 1.0 and r["dice_rv"] == 1.0 for r in phase_rows)
    # Read with the wrong convention, LV and RV swap: their Dice collapses, the myocardium is unaffected.
    wrong, _ = mnms.evaluate_mnms(dataset, pred, pred_labels="mnms")
    assert all(r["dice_lv"] == 0.0 and r["dice_rv"] == 0.0 and r["dice_myo"] == 1.0 for r in wrong)


def test_cli_missing_prediction(dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    assert cli.main(["mnms", "--root", str(dataset), "--pred", str(pred), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "A1B2C3_sa_ED.nii.gz: missing prediction for A1B2C3" in err[0]
