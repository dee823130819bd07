"""Evaluate predictions on ACDC, M&Ms or CMAC-style landmarks.

    python -m eval.datasets acdc --root ACDC/database/training --pred preds/ --out results/acdc
    python -m eval.datasets mnms --root OpenDataset --pred preds/ --out results/mnms [--csv meta.csv]
    python -m eval.datasets cmac --root cmac_landmarks --pred analyze_out/ --out results/cmac

Writes ``segmentation.csv`` (one row per subject and phase), ``clinical.csv`` (one row per subject) and
``summary.md`` (ACDC, M&Ms), or ``landmarks.csv`` and ``summary.md`` (CMAC), and prints the summary. Bad input
(a missing folder or prediction, a shape mismatch, an unreadable file) prints one line naming the file and
exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    for name, root_help, pred_help in (
            ("acdc", "folder of patientNNN/ folders (or its parent)", "predicted labels patientNNN_frameXX.nii.gz"),
            ("mnms", "M&Ms root (metadata CSV and <CODE>/<CODE>_sa_gt.nii.gz below)",
             "predicted labels <CODE>_sa_ED/_ES.nii.gz or 4D <CODE>_sa_gt.nii.gz"),
            ("cmac", "landmark root (metadata.csv, <subject>/landmarks_obs{1,2}.csv)",
             "<subject>/displacement.nii.gz folders")):
        p = sub.add_parser(name, help=f"evaluate on {name.upper()}")
        p.add_argument("--root", required=True, help=root_help)
        p.add_argument("--pred", required=True, help=pred_help)
        p.add_argument("--out", required=True, help="output folder")
        if name == "mnms":
            p.add_argument("--csv", default=None, help="metadata CSV (default: the one *.csv in --root)")
            p.add_argument("--pred_labels", choices=("mnms", "acdc"), default="mnms",
                           help="label convention of the predictions (default: M&Ms, like the ground truth)")
        if name == "cmac":
            p.add_argument("--components", choices=("auto", "array", "world"), default="auto",
                           help="displacement components: along array axes or world axes (auto: from header)")
    return parser


def _progress(i: int, n: int, name: str) -> None:
    print(f"[{i + 1}/{n}] {name}", file=sys.stderr, flush=True)


def run(args) -> str:
    """Run one evaluation and write its files; returns the markdown summary."""
    from deepstrain_jax.io.atomic import write_text
    from eval.datasets import acdc, cmac, mnms, scoring

    if args.dataset == "cmac":
        rows = cmac.evaluate_cmac(args.root, args.pred, components=args.components, progress_fn=_progress)
        os.makedirs(args.out, exist_ok=True)
        text = cmac.markdown_summary(rows)
        write_text(os.path.join(args.out, "landmarks.csv"), scoring.csv_text(rows))
        write_text(os.path.join(args.out, "summary.md"), text)
        return text
    if args.dataset == "acdc":
        phase_rows, clinical_rows = acdc.evaluate_acdc(args.root, args.pred, progress_fn=_progress)
        title = "ACDC evaluation"
    else:
        phase_rows, clinical_rows = mnms.evaluate_mnms(args.root, args.pred, csv_path=args.csv,
                                                       pred_labels=args.pred_labels, progress_fn=_progress)
        title = "M&Ms evaluation"
    summary = scoring.write_report(args.out, title, phase_rows, clinical_rows)
    return scoring.markdown_summary(summary, title)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from deepstrain_jax.errors import InputError

    try:
        text = run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
