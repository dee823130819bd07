"""Evaluators for real datasets: ACDC and M&Ms segmentation/volumetrics, CMAC-style landmark motion error.

* :mod:`.scoring`: pure scores (Dice, Hausdorff in mm, volumes, EF, LV mass; cohort summaries with bias, limits
  of agreement and correlation) and the CSV/markdown writers.
* :mod:`.acdc`: ACDC patient folders and predictions named like the ED/ES image files.
* :mod:`.mnms`: the M&Ms layout, label remap to ACDC, writers for round-trip tests.
* :mod:`.cmac`: landmark tracks of two observers against a predicted 5D displacement NIfTI.

Command line: ``python -m eval.datasets {acdc,mnms,cmac} --root ... --pred ... --out ...``.
"""

from eval.datasets.acdc import evaluate_acdc
from eval.datasets.cmac import evaluate_cmac, load_displacement, save_displacement
from eval.datasets.mnms import evaluate_mnms, remap_mnms_labels
from eval.datasets.scoring import score_phase, score_subject, summarize, write_report

__all__ = ["evaluate_acdc", "evaluate_cmac", "evaluate_mnms", "load_displacement", "remap_mnms_labels",
           "save_displacement", "score_phase", "score_subject", "summarize", "write_report"]
