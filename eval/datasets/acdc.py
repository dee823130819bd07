"""ACDC evaluator: predicted ED/ES label maps against the ground truth of ACDC patient folders.

Ground truth: ``root`` holds ``patientNNN/`` folders, directly or one level
down (``root/training/patientNNN``, ``root/testing/patientNNN``), each with ``Info.cfg`` (``ED``, ``ES`` 1-based,
``Group``) and ``patientNNN_frameXX_gt.nii.gz`` at ED and ES (0 bg, 1 RV, 2 MYO, 3 LV).

Predictions (the ACDC challenge's "identically named files" convention): one 3D label map per patient and
phase, ACDC labels, the ground truth's grid, named like the ED/ES **image** file::

    <pred>/patientNNN_frameXX.nii.gz            (or <pred>/patientNNN/patientNNN_frameXX.nii.gz)

The challenge's submission names ``patientNNN_ED.nii.gz`` / ``patientNNN_ES.nii.gz`` are accepted as well.
Distances and volumes use the ground truth's voxel size. Scores: :mod:`eval.datasets.scoring`.
"""

from __future__ import annotations

import re
from pathlib import Path

from deepstrain_jax.data import acdc
from deepstrain_jax.errors import InputError
from eval.datasets.label_files import check_folder, first_existing, load_labels
from eval.datasets.scoring import score_subject

_PATIENT = re.compile(r"^patient\d+$")


def find_patients(root) -> list[Path]:
    """``patientNNN`` folders in ``root`` or its sub-folders (one level), sorted by name then path."""
    root = check_folder(root, "ACDC root")
    found = [p for p in root.iterdir() if p.is_dir() and _PATIENT.match(p.name)]
    if not found:
        found = [p for sub in root.iterdir() if sub.is_dir() for p in sub.iterdir()
                 if p.is_dir() and _PATIENT.match(p.name)]
    if not found:
        raise InputError("no patientNNN folders here or one level down", root)
    return sorted(found, key=lambda p: (p.name, str(p)))


def prediction_path(pred_dir, name: str, frame: int, phase: str) -> Path:
    """The prediction file of patient ``name`` at 0-based ``frame`` (phase ``"ED"``/``"ES"``); InputError if none."""
    pred_dir = Path(pred_dir)
    image_name = acdc.frame_filename(name, frame)
    stems = [image_name, image_name[:-3], f"{name}_{phase}.nii.gz", f"{name}_{phase}.nii"]
    found = first_existing([pred_dir / s for s in stems] + [pred_dir / name / s for s in stems])
    if found is None:
        raise InputError(f"missing prediction for {name} {phase} (expected {image_name} or {name}_{phase}.nii.gz "
                         f"here or in {name}/)", pred_dir / image_name)
    return found


def evaluate_patient(folder, pred_dir) -> tuple[list[dict], dict]:
    """Score one ACDC patient folder against its predictions; see :func:`eval.datasets.scoring.score_subject`."""
    folder = Path(folder)
    name = folder.name
    info = acdc.read_info_cfg(acdc.info_cfg_path(folder))
    gt, pred, spacing = {}, {}, None
    for phase, frame in (("ED", info.ed), ("ES", info.es)):
        gt_path = folder / acdc.frame_filename(name, frame, gt=True)
        if not gt_path.is_file():
            raise InputError(f"missing ground truth for {phase}", gt_path)
        gt[phase], gt_spacing = load_labels(gt_path, 3)
        spacing = gt_spacing if spacing is None else spacing
        pred_path = prediction_path(pred_dir, name, frame, phase)
        pred[phase], _ = load_labels(pred_path, 3, shape=gt[phase].shape, like=gt_path)
    return score_subject(name, info.group, gt["ED"], gt["ES"], pred["ED"], pred["ES"], spacing,
                         ed=info.ed, es=info.es)


def evaluate_acdc(root, pred_dir, progress_fn=None) -> tuple[list[dict], list[dict]]:
    """Score every patient under ``root``: ``(phase_rows, clinical_rows)`` (two phase rows per patient).

    ``progress_fn(i, n, name)``, if given, is called before each patient.
    """
    patients = find_patients(root)
    pred_dir = check_folder(pred_dir, "predictions")
    phase_rows, clinical_rows = [], []
    for i, folder in enumerate(patients):
        if progress_fn is not None:
            progress_fn(i, len(patients), folder.name)
        rows, clinical = evaluate_patient(folder, pred_dir)
        phase_rows += rows
        clinical_rows.append(clinical)
    return phase_rows, clinical_rows
