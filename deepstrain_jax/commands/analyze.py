"""Analyse cine MRI: segmentation, motion, strain, strain rate, AHA polar maps, volumes, QC and a report.

INPUT is one subject: a 4D NIfTI cine (.nii / .nii.gz), an ACDC patient folder (Info.cfg gives ED, ES and the
group), a UK Biobank folder (<eid>/sa.nii.gz), an M&Ms folder (<id>/<id>_sa.nii.gz or <id>_SA_CINE.nii.gz; ED/ES
from the M&Ms CSV when found), or a DICOM series folder; or a cohort folder holding those (down to three levels).
One subject is written to OUT itself; a cohort to OUT/<subject>/ plus OUT/cohort.csv, skipping subjects already
finished (re-run the same command to resume) and recording a failing subject's error while the others go on.
Each subject folder appears complete or not at all.

Outputs per subject: segmentation.nii.gz, displacement.nii.gz (world mm; on the network grid unless
--displacement native), strain_{radial,circumferential,longitudinal}.nii.gz, results.json, curves.csv,
aha_segments.csv, polar_map.png, curves.png, report.html. Memory grows with the image size, not with frames x
size: the native-grid maps are written one frame at a time.

Models: the small ones shipped inside the package by default; --vcn/--carson/--carmen take a model folder
(deepstrain convert-weights, train.main's workdir/model), a training workdir, or the original Keras weights
(carson_Jan2021.h5, carmen_Jan2021.h5; then consider --legacy).

Exit status: 0 when every subject was analysed, 2 on bad input (one subject) or when any cohort subject failed.

Examples:
  deepstrain analyze patient001/ --out results/patient001
  deepstrain analyze cine_4d.nii.gz --out results/cine --heart-rate 62
  deepstrain analyze ACDC/training --out results/acdc
  deepstrain analyze ukbb/1000123 --out results/1000123
  deepstrain analyze dicom/study01 --out results/study01
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="4D NIfTI file, ACDC patient folder, or cohort folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--ed", type=int, metavar="K", help="ED frame, 0-based (default: Info.cfg, else 0)")
    parser.add_argument("--es", type=int, metavar="K",
                        help="ES frame, 0-based (default: Info.cfg, else the smallest LV volume)")
    parser.add_argument("--frame-interval-ms", type=float, metavar="MS",
                        help="time between frames (default: the NIfTI header's, else from --heart-rate)")
    parser.add_argument("--heart-rate", type=float, metavar="BPM",
                        help="heart rate (dt = 60 / (HR x frames)); wins over the header's frame interval, with a "
                             "note in results.json")
    parser.add_argument("--slice-order", choices=("auto", "base-to-apex", "apex-to-base"), default="auto",
                        help="stored slice order (default: detected from the segmentation)")
    parser.add_argument("--centre", choices=("auto", "vcn", "fov"), default="auto",
                        help="crop centre: VCN on ED, or the field-of-view centre (default: VCN; FOV in legacy)")
    parser.add_argument("--vcn", metavar="MODEL", help="VCN model (default: shipped)")
    parser.add_argument("--carson", metavar="MODEL", help="CarSON model or carson_Jan2021.h5 (default: shipped)")
    parser.add_argument("--carmen", metavar="MODEL", help="CarMEN model or carmen_Jan2021.h5 (default: shipped)")
    parser.add_argument("--legacy", action="store_true",
                        help="the original's choices: dipy-style resampling, FOV centring, its strain added")
    parser.add_argument("--displacement", choices=("network", "native", "none"), default="network",
                        help="grid of displacement.nii.gz: the 1.25 mm network grid it was estimated on (default, "
                             "about 80 MB for 30 frames), the input's grid (native: large), or none")
    parser.add_argument("--itk-displacement", action="store_true",
                        help="also write displacement_itk/frame_TTT.nii.gz: per frame a displacement field in the "
                             "ITK/LPS convention that ITK, ANTs and Slicer load as a transform")
    parser.add_argument("--bullseye-limits", action="append", default=[], metavar="DIRECTION=LO,HI",
                        help="colour limits (%%) of a strain bull's-eye, e.g. radial=-50,50 (repeatable; defaults: "
                             "circumferential and longitudinal -30,30, radial -60,60)")
    parser.add_argument("--publication-figures", action="store_true",
                        help="also write the strain bull's-eyes for print: polar_map.png at 300 dpi, polar_map.svg "
                             "and polar_map.pdf (about 1 s a subject; default: a 150 dpi polar_map.png only)")
    parser.add_argument("--pair-batch", type=int, default=2, metavar="B", help="CarMEN pairs per call (default 2)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="network compute precision: bfloat16 runs the convolutions on bfloat16 with float32 "
                             "accumulation (faster on GPUs and CPUs with bfloat16 units; docs/validation.md "
                             "gives the change in Dice and strain); default float32")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    dask = parser.add_argument_group("cohorts on Dask (pip install -e .[dask]; SLURM: .[slurm])")
    dask.add_argument("--workers", type=int, metavar="N",
                      help="analyse a cohort's subjects on a local Dask cluster of N single-threaded worker processes "
                           "(one per GPU when GPUs are present)")
    dask.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask scheduler (tcp://host:8786)")
    dask.add_argument("--slurm", metavar="CONFIG.yaml",
                      help="start workers through SLURM: a YAML of dask_jobqueue.SLURMCluster arguments plus 'jobs'")
    dask.add_argument("--retries", type=int, default=2, metavar="K",
                      help="worker deaths a subject may cause before it is recorded as failed (default 2)")
    parser.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")


def _limits(items: list[str]) -> tuple:
    out = []
    for item in items:
        try:
            direction, values = item.split("=")
            lo, hi = (float(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--bullseye-limits takes DIRECTION=LO,HI, got {item!r}") from None
        out.append((direction.strip(), lo, hi))
    return tuple(out)


def options_from_args(args: argparse.Namespace):
    from deepstrain_jax.analysis.pipeline import AnalysisOptions

    try:
        return AnalysisOptions(
            ed=args.ed, es=args.es,
            frame_interval_s=None if args.frame_interval_ms is None else args.frame_interval_ms / 1000.0,
            heart_rate_bpm=args.heart_rate, slice_order=args.slice_order.replace("-", "_"), centre=args.centre,
            legacy=args.legacy, displacement=args.displacement, itk_displacement=args.itk_displacement,
            bullseye_limits_pct=_limits(args.bullseye_limits), publication_figures=args.publication_figures)
    except ValueError as e:
        from deepstrain_jax.errors import InputError

        raise InputError(f"bad option: {e}") from None


def load_networks(args: argparse.Namespace, options):
    from deepstrain_jax.analysis.networks import Networks

    return Networks.load(vcn=args.vcn, carson=args.carson, carmen=args.carmen, use_vcn=options.use_vcn,
                         pair_batch=args.pair_batch, precision=args.precision)


def _run_on_dask(args, options, source, progress):
    from deepstrain_jax.analysis import distributed as dist

    specs = dist.ModelSpecs(vcn=args.vcn, carson=args.carson, carmen=args.carmen, use_vcn=options.use_vcn,
                            pair_batch=args.pair_batch, precision=args.precision)
    client = dist.make_client(workers=args.workers, scheduler=args.scheduler, slurm=args.slurm,
                              allowed_failures=args.retries)
    try:
        return dist.analyze_cohort(source, args.out, client=client, specs=specs, options=options,
                                   overwrite=args.overwrite, progress=progress)
    finally:
        cluster = client.cluster if args.workers or args.slurm else None
        client.close()
        if cluster is not None:
            cluster.close()


def run(args: argparse.Namespace) -> int:
    from deepstrain_jax import console
    from deepstrain_jax.analysis import cohort, discovery, inputs
    from deepstrain_jax.analysis.networks import enable_compilation_cache
    from deepstrain_jax.analysis.outputs import check_output_folder
    from deepstrain_jax.analysis.pipeline import analyze, read_checked
    from deepstrain_jax.errors import InputError

    options = options_from_args(args)
    if args.pair_batch < 1:
        raise InputError(f"--pair-batch must be >= 1, got {args.pair_batch}")
    if not args.no_cache:
        enable_compilation_cache()
    source = Path(args.input)
    found = discovery.discover(source)  # what the path is; a path that is nothing fails before the models load
    for path, why in found.skipped:
        console.warning("skipped %s: %s", path, why)
    if found.kind == "cohort":
        progress = cohort.Progress(len(found.subjects))
        if args.workers or args.scheduler or args.slurm:
            rows = _run_on_dask(args, options, source, progress)
        else:
            rows = cohort.run_cohort(source, args.out, networks=load_networks(args, options), options=options,
                                     overwrite=args.overwrite, progress=progress)
        failed = [r for r in rows if r.status == "failed"]
        print(f"{progress.summary()}; table in {Path(args.out) / 'cohort.csv'}")
        if not args.quiet and any(r.results is not None for r in rows):
            print(cohort.summary_table(rows))
        if failed:
            print(f"deepstrain analyze: {len(failed)} subject(s) failed: "
                  f"{', '.join(r.subject for r in failed)} (errors in cohort.csv)", file=sys.stderr)
            return 2
        return 0
    check_output_folder(args.out, overwrite=args.overwrite)
    cine, _, _ = read_checked(inputs.read_subject(found.subjects[0]))  # bad input fails before the models load
    result = analyze(cine, args.out, networks=load_networks(args, options), options=options,
                     overwrite=args.overwrite)
    r = result.results
    ind, vol = r["strain"]["indices"], r["volumes"]

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    print(f"{r['subject']}: ED {r['frames']['ed']}, ES {r['frames']['es']}; LV EF {fmt(vol['lv_ef_pct'], '.1f')}%"
          f", EDV {fmt(vol['lv_edv_ml'], '.1f')} mL; ESS circumferential "
          f"{fmt(ind['circumferential']['ess_pct'], '.1f')}%, radial {fmt(ind['radial']['ess_pct'], '.1f')}%, "
          f"longitudinal {fmt(ind['longitudinal']['ess_pct'], '.1f')}% -> {args.out}")
    for w in r["qc"]["warnings"]:
        console.warning("warning: %s", w)
    return 0
