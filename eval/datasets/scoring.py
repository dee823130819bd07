"""Segmentation and volumetric scores of predicted label maps against ground truth, and cohort summaries.

Pure functions on arrays (ACDC labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity); the dataset
readers in this package turn files into these arrays. Definitions (Bernard et al., IEEE TMI 2018):

* Per phase (ED, ES) and structure (LV cavity 3, RV cavity 1, myocardium 2): Dice on the whole 3D volume
  (:func:`deepstrain_jax.metrics.dice`; 1 when the structure is absent from both) and the symmetric 3D
  Hausdorff distance in mm (:func:`deepstrain_jax.metrics.surface_metrics`, medpy ``hd`` with connectivity 1;
  NaN when the structure is absent from either map).
* Volumes ``V = N_voxels * prod(spacing_mm) / 1000`` mL; ``EF = 100 (EDV - ESV) / EDV`` % (NaN when EDV = 0);
  LV mass = 1.05 g/mL x ED myocardial volume (:mod:`deepstrain_jax.cardiac.volumetrics`).
* Agreement of a clinical index across subjects, prediction ``a`` vs ground truth ``b``: ``d_i = a_i - b_i``,
  bias = mean(d), SD(d) with ``ddof=1``, limits of agreement ``bias -+ 1.96 SD``
  (:func:`deepstrain_jax.metrics.bland_altman`, at least 3 subjects) and Pearson's r (at least 3 subjects,
  neither constant); otherwise NaN. Subjects with a NaN index (EF of an empty cavity) are left out of it.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from deepstrain_jax.cardiac.volumetrics import MYOCARDIAL_DENSITY_G_PER_ML, label_volumes_ml
from deepstrain_jax.labels import check_labels
from deepstrain_jax.metrics import bland_altman, dice, pearson_r, surface_metrics

STRUCTURES = (("lv", 3), ("rv", 1), ("myo", 2))  # the official ACDC order: LV, RV, MYO
CLINICAL = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "lv_mass_g")
PHASES = ("ED", "ES")


def score_phase(gt, pred, spacing_mm) -> dict:
    """Dice, Hausdorff (mm) and volumes (mL) per structure of one 3D phase.

    Args:
      gt, pred: ``(X, Y, Z)`` ACDC label maps of one shape.
      spacing_mm: ``(3,)`` voxel size (of the ground truth).
    Returns:
      ``{"dice_lv", "dice_rv", "dice_myo", "hd_lv_mm", "hd_rv_mm", "hd_myo_mm", "lv_ml_gt", "lv_ml_pred",
      "rv_ml_gt", "rv_ml_pred", "myo_ml_gt", "myo_ml_pred"}`` as floats.
    """
    gt = check_labels(gt, (3,), "gt")
    pred = check_labels(pred, (3,), "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    labels = tuple(v for _, v in STRUCTURES)
    d = dice(gt, pred, labels=labels)
    hd = surface_metrics(gt, pred, spacing_mm, labels=labels, on_empty="nan").hd_mm
    vol = {"gt": label_volumes_ml(gt, spacing_mm), "pred": label_volumes_ml(pred, spacing_mm)}
    row = {}
    for i, (name, _) in enumerate(STRUCTURES):
        row[f"dice_{name}"] = float(d[i])
        row[f"hd_{name}_mm"] = float(hd[i])
    for name, field in (("lv", "lv_ml"), ("rv", "rv_ml"), ("myo", "myo_ml")):
        for who in ("gt", "pred"):
            row[f"{name}_ml_{who}"] = float(getattr(vol[who], field))
    return row


def _ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv if edv > 0 else math.nan


def clinical_from_phases(ed_row: dict, es_row: dict, who: str) -> dict:
    """LV/RV EDV, ESV (mL), EF (%) and LV mass (g) from two :func:`score_phase` rows (``who``: gt or pred)."""
    lv_edv, lv_esv = ed_row[f"lv_ml_{who}"], es_row[f"lv_ml_{who}"]
    rv_edv, rv_esv = ed_row[f"rv_ml_{who}"], es_row[f"rv_ml_{who}"]
    return {"lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_ef_pct": _ef(lv_edv, lv_esv),
            "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_ef_pct": _ef(rv_edv, rv_esv),
            "lv_mass_g": MYOCARDIAL_DENSITY_G_PER_ML * ed_row[f"myo_ml_{who}"]}


def score_subject(subject: str, group: str, gt_ed, gt_es, pred_ed, pred_es, spacing_mm,
                  ed: int | None = None, es: int | None = None) -> tuple[list[dict], dict]:
    """Per-phase rows and the clinical-index row of one subject.

    Returns:
      ``(phase_rows, clinical_row)``: two dicts ``{"subject", "group", "phase", "frame", **score_phase}`` (ED,
      ES) and ``{"subject", "group", "<index>_gt", "<index>_pred" for each index in CLINICAL}``.
    """
    rows = []
    for phase, frame, gt, pred in (("ED", ed, gt_ed, pred_ed), ("ES", es, gt_es, pred_es)):
        rows.append({"subject": subject, "group": group, "phase": phase, "frame": frame,
                     **score_phase(gt, pred, spacing_mm)})
    clinical = {"subject": subject, "group": group}
    truth, predicted = (clinical_from_phases(rows[0], rows[1], who) for who in ("gt", "pred"))
    for key in CLINICAL:
        clinical[f"{key}_gt"] = truth[key]
        clinical[f"{key}_pred"] = predicted[key]
    return rows, clinical


def _stat(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def agreement(pred, gt) -> dict:
    """Agreement of paired values, NaN pairs dropped (module docstring).

    Returns:
      ``{"n", "mean_gt", "mean_pred", "r", "bias", "sd", "loa_low", "loa_high"}``.
    """
    a = np.asarray(pred, dtype=np.float64)
    b = np.asarray(gt, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": int(a.size), "mean_gt": math.nan, "mean_pred": math.nan, "r": math.nan, "bias": math.nan,
           "sd": math.nan, "loa_low": math.nan, "loa_high": math.nan}
    if a.size == 0:
        return out
    out.update(mean_gt=float(b.mean()), mean_pred=float(a.mean()), bias=float(np.mean(a - b)))
    if a.size >= 3:
        ba = bland_altman(a, b)
        out.update(sd=ba.sd, loa_low=ba.lower_loa, loa_high=ba.upper_loa)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out["r"] = pearson_r(a, b)
    return out


def summarize(phase_rows: list[dict], clinical_rows: list[dict]) -> dict:
    """Cohort summaries per group (sorted) and ``"all"``.

    Returns:
      ``{group: {"n": subjects, "segmentation": {phase: {metric: (mean, sd, n)}},
      "clinical": {index: agreement dict}}}`` with metrics ``dice_*`` and ``hd_*_mm``.
    """
    groups = sorted({r["group"] for r in clinical_rows}) + ["all"]
    metrics = [f"dice_{s}" for s, _ in STRUCTURES] + [f"hd_{s}_mm" for s, _ in STRUCTURES]
    out = {}
    for group in groups:
        clin = [r for r in clinical_rows if group == "all" or r["group"] == group]
        seg = {}
        for phase in PHASES:
            rows = [r for r in phase_rows if r["phase"] == phase and (group == "all" or r["group"] == group)]
            seg[phase] = {m: _stat([r[m] for r in rows]) for m in metrics}
        out[group] = {"n": len(clin), "segmentation": seg,
                      "clinical": {k: agreement([r[f"{k}_pred"] for r in clin], [r[f"{k}_gt"] for r in clin])
                                   for k in CLINICAL}}
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def markdown_summary(summary: dict, title: str) -> str:
    """The summary of :func:`summarize` as markdown: segmentation (mean ± SD) and clinical agreement tables."""
    lines = [f"# {title}", "", "## Segmentation (mean ± SD over subjects; HD in mm)", "",
             "| group | n | phase | Dice LV | Dice RV | Dice MYO | HD LV | HD RV | HD MYO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, s in summary.items():
        for phase in PHASES:
            cells = []
            for m in ("dice_lv", "dice_rv", "dice_myo", "hd_lv_mm", "hd_rv_mm", "hd_myo_mm"):
                mean, sd, _ = s["segmentation"][phase][m]
                digits = 3 if m.startswith("dice") else 2
                cells.append(_fmt(mean, digits) + ("" if math.isnan(sd) else f" ± {_fmt(sd, digits)}"))
            lines.append(f"| {group} | {s['n']} | {phase} | " + " | ".join(cells) + " |")
    lines += ["", "## Clinical indices: prediction - ground truth (Bland-Altman; mL, %, g)", "",
              "| group | index | n | mean GT | mean pred | r | bias | LoA |", "|---|---|---|---|---|---|---|---|"]
    for group, s in summary.items():
        for key, a in s["clinical"].items():
            loa = "n/a" if math.isnan(a["loa_low"]) else f"[{a['loa_low']:.2f}, {a['loa_high']:.2f}]"
            lines.append(f"| {group} | {key} | {a['n']} | {_fmt(a['mean_gt'], 2)} | {_fmt(a['mean_pred'], 2)} "
                         f"| {_fmt(a['r'])} | {_fmt(a['bias'], 2)} | {loa} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    """Rows (dicts with the same keys) as CSV text, columns in the first row's order; floats with repr."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_report(out_dir, title: str, phase_rows: list[dict], clinical_rows: list[dict]) -> dict:
    """Write ``segmentation.csv``, ``clinical.csv`` and ``summary.md`` into ``out_dir``; return the summary."""
    from deepstrain_jax.io.atomic import write_text

    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(phase_rows, clinical_rows)
    write_text(os.path.join(out_dir, "segmentation.csv"), csv_text(phase_rows))
    write_text(os.path.join(out_dir, "clinical.csv"), csv_text(clinical_rows))
    write_text(os.path.join(out_dir, "summary.md"), markdown_summary(summary, title))
    return summary
