"""M&Ms (2020) evaluator, reader and writer: labels 1 LV, 2 MYO, 3 RV remapped to ACDC on load.

Layout::

    <root>/<metadata>.csv                 columns (first unnamed index column ignored): External code,
                                          VendorName, Vendor, Centre, ED, ES, Age, Pathology, Sex, Height, Weight
    <root>/Training/Labeled/<CODE>/<CODE>_sa.nii.gz       cine (X, Y, Z, T)
    <root>/Training/Labeled/<CODE>/<CODE>_sa_gt.nii.gz    labels (X, Y, Z, T), set at the ED and ES frames only
    <root>/Validation/<CODE>/..., <root>/Testing/<CODE>/...   (same files)

ED and ES in the CSV are **0-based** frame indices. Every ``<CODE>_sa_gt.nii.gz`` under ``root`` is a subject,
except under a ``Unlabeled`` folder (vendor C training data: no usable labels). The metadata CSV is ``csv_path``
or, if not given, the one ``*.csv`` in ``root``.

Labels: M&Ms {1 LV cavity, 2 myocardium, 3 RV cavity} become ACDC {3, 2, 1} (``MNMS_TO_ACDC``); this module is
the only place that knows the M&Ms values.

Predictions, in ``<pred>`` or ``<pred>/<CODE>/``: ``<CODE>_sa_ED.nii.gz`` and ``<CODE>_sa_ES.nii.gz`` (3D), or one
4D ``<CODE>_sa_gt.nii.gz`` (the ground truth's name) from which the ED and ES frames are taken; labels in the
M&Ms convention unless ``pred_labels="acdc"``. The group of a subject in the summaries is its ``Pathology``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepstrain_jax.analysis.discovery import read_mnms_metadata
from deepstrain_jax.data.nifti import save_nifti
from deepstrain_jax.errors import InputError
from eval.datasets.label_files import as_labels, check_folder, first_existing, load_labels
from eval.datasets.scoring import score_subject

MNMS_TO_ACDC = (0, 3, 2, 1)  # index: M&Ms label, value: ACDC label (the map is its own inverse)
ACDC_TO_MNMS = (0, 3, 2, 1)
COLUMNS = ("External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Age", "Pathology", "Sex", "Height",
           "Weight")
METADATA_NAME = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


def remap_mnms_labels(labels) -> np.ndarray:
    """M&Ms labels (1 LV, 2 MYO, 3 RV) -> ACDC labels (3 LV, 2 MYO, 1 RV), uint8."""
    return as_labels(labels, None, MNMS_TO_ACDC)


def read_metadata(path) -> dict[str, dict]:
    """Parse the M&Ms metadata CSV: ``{code: {"ed": int, "es": int, "pathology": str, "vendor": str, ...}}``
    (the analysis' own reader, :func:`deepstrain_jax.analysis.discovery.read_mnms_metadata`)."""
    return read_mnms_metadata(path)


def find_metadata(root) -> Path:
    """The single ``*.csv`` in ``root``."""
    found = sorted(Path(root).glob("*.csv"))
    if len(found) != 1:
        raise InputError(f"expected one metadata *.csv in the M&Ms root, found {len(found)} (pass it explicitly)",
                         root)
    return found[0]


def find_subjects(root) -> list[Path]:
    """Every ``<CODE>_sa_gt.nii.gz`` under ``root``, outside ``Unlabeled`` folders, sorted by code."""
    root = check_folder(root, "M&Ms root")
    found = [p for p in root.rglob("*_sa_gt.nii.gz") if "Unlabeled" not in p.relative_to(root).parts]
    if not found:
        raise InputError("no <CODE>/<CODE>_sa_gt.nii.gz files under this folder", root)
    return sorted(found, key=lambda p: (p.name, str(p)))


def _prediction(pred_dir: Path, code: str, ed: int, es: int, shape, gt_path, pred_labels: str):
    lookup = MNMS_TO_ACDC if pred_labels == "mnms" else (0, 1, 2, 3)
    folders = (pred_dir, pred_dir / code)
    ed_path = first_existing([d / f"{code}_sa_ED.nii.gz" for d in folders])
    es_path = first_existing([d / f"{code}_sa_ES.nii.gz" for d in folders])
    if ed_path and es_path:
        return (load_labels(ed_path, 3, shape, lookup, like=gt_path)[0],
                load_labels(es_path, 3, shape, lookup, like=gt_path)[0])
    cine_path = first_existing([d / f"{code}_sa_gt.nii.gz" for d in folders])
    if cine_path is None:
        raise InputError(f"missing prediction for {code} (expected {code}_sa_ED.nii.gz and {code}_sa_ES.nii.gz, or "
                         f"a 4D {code}_sa_gt.nii.gz, here or in {code}/)", pred_dir / f"{code}_sa_ED.nii.gz")
    labels, _ = load_labels(cine_path, 4, shape, lookup, like=gt_path)
    if max(ed, es) >= labels.shape[3]:
        raise InputError(f"has {labels.shape[3]} frames; ED/ES are {ed}/{es}", cine_path)
    return labels[..., ed], labels[..., es]


def evaluate_mnms(root, pred_dir, csv_path=None, pred_labels: str = "mnms",
                  progress_fn=None) -> tuple[list[dict], list[dict]]:
    """Score every labelled M&Ms subject under ``root``: ``(phase_rows, clinical_rows)``, groups = Pathology."""
    if pred_labels not in ("mnms", "acdc"):
        raise ValueError(f"pred_labels must be 'mnms' or 'acdc', got {pred_labels!r}")
    subjects = find_subjects(root)
    meta = read_metadata(csv_path if csv_path is not None else find_metadata(root))
    pred_dir = check_folder(pred_dir, "predictions")
    phase_rows, clinical_rows = [], []
    for i, gt_path in enumerate(subjects):
        code = gt_path.name[: -len("_sa_gt.nii.gz")]
        if progress_fn is not None:
            progress_fn(i, len(subjects), code)
        if code not in meta:
            raise InputError(f"subject {code} is not in the metadata CSV", gt_path)
        m = meta[code]
        gt, spacing = load_labels(gt_path, 4, lookup=MNMS_TO_ACDC)
        if not (0 <= m["ed"] < gt.shape[3] and 0 <= m["es"] < gt.shape[3]):
            raise InputError(f"ED/ES {m['ed']}/{m['es']} (0-based) outside the {gt.shape[3]} frames", gt_path)
        pred_ed, pred_es = _prediction(pred_dir, code, m["ed"], m["es"], gt.shape[:3], gt_path, pred_labels)
        rows, clinical = score_subject(code, m["pathology"], gt[..., m["ed"]], gt[..., m["es"]], pred_ed, pred_es,
                                       spacing, ed=m["ed"], es=m["es"])
        phase_rows += rows
        clinical_rows.append(clinical)
    return phase_rows, clinical_rows


def write_mnms_subject(root, code: str, cine, labels_acdc: dict, affine, split: str = "Training/Labeled") -> Path:
    """Write one subject in the M&Ms layout (for round-trip tests and converted data).

    Args:
      root: dataset root. code: subject code (file-name safe).
      cine: ``(X, Y, Z, T)`` image.
      labels_acdc: 0-based frame -> ``(X, Y, Z)`` ACDC labels (usually ED and ES); written in M&Ms values into
        a 4D ``_sa_gt`` that is 0 at the other frames.
      affine: ``(4, 4)`` voxel-to-world matrix.
      split: sub-folder of ``root``.
    Returns:
      the subject folder.
    """
    cine = np.asarray(cine)
    folder = Path(root) / split / code
    folder.mkdir(parents=True, exist_ok=True)
    gt = np.zeros(cine.shape, dtype=np.uint8)
    for frame, lab in labels_acdc.items():
        gt[..., int(frame)] = np.asarray(ACDC_TO_MNMS, dtype=np.uint8)[np.asarray(lab, dtype=np.int64)]
    save_nifti(folder / f"{code}_sa.nii.gz", cine, affine)
    save_nifti(folder / f"{code}_sa_gt.nii.gz", gt, affine)
    return folder


def write_metadata(root, rows: list[dict], name: str = METADATA_NAME) -> Path:
    """Write the metadata CSV (``COLUMNS`` after an unnamed index column); ``rows`` map column names to values."""
    from deepstrain_jax.io.atomic import write_text

    lines = ["," + ",".join(COLUMNS)]
    for i, row in enumerate(rows):
        lines.append(",".join([str(i)] + [str(row.get(c, "")) for c in COLUMNS]))
    path = Path(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    return path
