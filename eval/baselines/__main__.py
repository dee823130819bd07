"""Classical motion baselines on held-out phantoms: ``python -m eval.baselines --n 2 --methods demons,optical_flow``.

Phantom ``i`` has seed ``--seed + i`` (held out: >= 900000) and phenotype ``--phenotypes[i % len]``. Prints a
markdown table (mean ± SD over phantoms; see :func:`eval.baselines.run.markdown_table`) on stdout and progress
on stderr; ``--json`` also writes every per-frame result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

HELD_OUT_SEED = 900000
COARSE = {"matrix": (40, 40), "pixel_mm": 5.0, "n_slices": 6, "slice_thickness_mm": 10.0, "slice_spacing_mm": 12.0,
          "supersample_inplane": 1, "supersample_slice": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.baselines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2, help="number of phantoms (default 2)")
    parser.add_argument("--methods", default="demons,optical_flow,simpleitk_bspline",
                        help="comma-separated methods from eval.baselines.METHODS")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the first phantom (>= 900000)")
    parser.add_argument("--phenotypes", default="NOR,DCM,HCM,MINF,ARV", help="phenotypes, cycled")
    parser.add_argument("--n_frames", type=int, default=20, help="frames per cycle of each phantom")
    parser.add_argument("--frames", choices=("all", "es"), default="all",
                        help="estimate every ED -> t pair, or ED -> ES only")
    parser.add_argument("--snr", type=float, default=None, help="myocardial SNR (default: drawn per phantom)")
    parser.add_argument("--coarse", action="store_true", help="tiny 40x40x6 acquisition (smoke runs)")
    parser.add_argument("--json", default=None, help="write all per-case results to this JSON file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from eval.baselines import METHODS, import_simpleitk

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    phenotypes = [p.strip() for p in args.phenotypes.split(",") if p.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or args.n < 1 or not phenotypes:
        print(f"error: unknown method(s) {unknown}; choose from {', '.join(METHODS)}" if unknown else
              "error: need --n >= 1, at least one method and one phenotype", file=sys.stderr)
        return 2
    if any(m.startswith("simpleitk") for m in methods):
        try:
            import_simpleitk()
        except ImportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.seed < HELD_OUT_SEED:
        print(f"warning: seed {args.seed} < {HELD_OUT_SEED} is not in the held-out range", file=sys.stderr)

    from deepstrain_jax.phantom import dataset
    from eval.baselines.run import markdown_table, run_baseline_on_case

    results = []
    for i in range(args.n):
        seed, phenotype = args.seed + i, phenotypes[i % len(phenotypes)]
        start = time.perf_counter()
        print(f"[{i + 1}/{args.n}] rendering phantom seed {seed} ({phenotype})...", file=sys.stderr, flush=True)
        case = dataset.make_case(seed, phenotype, n_frames=args.n_frames, snr=args.snr,
                                 **(COARSE if args.coarse else {}))
        frames = [case.cine.es] if args.frames == "es" else None
        print(f"  rendered {case.cine.image.shape} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        for method in methods:
            r = run_baseline_on_case(case, method, frames=frames)
            results.append(r)
            print(f"  {method}: EPE at ES {r['epe_es_mm']:.2f} mm, GCS error {r['gcs_error_es_pp']:+.1f} pp, "
                  f"GRS error {r['grs_error_es_pp']:+.1f} pp, {r['seconds_per_pair']:.2f} s per pair "
                  f"({r['n_pairs']} pairs)", file=sys.stderr, flush=True)
    print(markdown_table(results))
    print(f"\n{args.n} phantom(s), seeds {args.seed}-{args.seed + args.n - 1}, {args.n_frames} frames, "
          f"{'ED -> ES only' if args.frames == 'es' else 'all ED -> t pairs'}; mean ± SD over phantoms.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
