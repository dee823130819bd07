"""Demonstration: make a synthetic phantom subject, analyse it with the shipped models, compare with its truth.

Writes OUT/phantom/<name>/ (an ACDC patient folder with its exact truth) and OUT/analysis/ (the outputs of
`deepstrain analyze`, report.html included), then prints measured against true LV ejection fraction, global
end-systolic strain (ESS), peak systolic and early-diastolic strain rates (SRs, SRe), and the mean per-segment
ESS error. Re-running reuses the phantom and replaces the analysis. Nothing is downloaded.

Example:
  deepstrain demo --out deepstrain-demo --phenotype DCM --seed 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="deepstrain-demo", metavar="DIR", help="output folder (default %(default)s)")
    parser.add_argument("--seed", type=int, default=2026, metavar="S", help="phantom seed (default %(default)s)")
    parser.add_argument("--phenotype", default="NOR", metavar="P", help="NOR, DCM, HCM, MINF or ARV (default NOR)")
    parser.add_argument("--frames", type=int, default=20, metavar="T", help="frames per cycle (default 20)")
    parser.add_argument("--snr", type=float, default=20.0, metavar="SNR", help="myocardial SNR (default 20)")
    parser.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")


def run(args: argparse.Namespace) -> int:
    from deepstrain_jax.analysis import phantom_check
    from deepstrain_jax.analysis.networks import enable_compilation_cache
    from deepstrain_jax.analysis.outputs import check_output_folder
    from deepstrain_jax.analysis.pipeline import analyze
    from deepstrain_jax.errors import InputError
    from deepstrain_jax.phantom import dataset

    if args.frames < 3:
        raise InputError(f"--frames must be >= 3, got {args.frames}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out)
    analysis = out / "analysis"
    check_output_folder(analysis, overwrite=True)
    if not args.no_cache:
        enable_compilation_cache()
    folder = out / "phantom" / f"demo_{args.phenotype.lower()}_{args.seed}_{args.frames}f"
    t0 = time.perf_counter()
    if not (folder / f"{folder.name}_truth.json").is_file():
        try:
            case = dataset.make_case(args.seed, args.phenotype, n_frames=args.frames, snr=args.snr)
        except ValueError as e:
            raise InputError(str(e)) from None
        dataset.save_case(folder, case)
        print(f"phantom {args.phenotype} (seed {args.seed}, {args.frames} frames, SNR {args.snr:g}) written to "
              f"{folder} in {time.perf_counter() - t0:.1f} s")
    t1 = time.perf_counter()
    result = analyze(folder, analysis, overwrite=True)
    print(f"analysed with the shipped models in {time.perf_counter() - t1:.1f} s -> {analysis}/report.html\n")
    rows, segments = phantom_check.compare(result.results, folder)
    print(phantom_check.format_table(rows, segments))
    for w in result.results["qc"]["warnings"]:
        print(f"warning: {w}")
    return 0
