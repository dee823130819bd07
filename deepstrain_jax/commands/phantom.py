"""Generate synthetic cine-MRI phantoms with exact motion and strain, in the ACDC layout.

Writes OUT/patient001 ... OUT/patientNNN (or OUT/scan/... and OUT/rescan/... with --rescan), each an ACDC
patient folder (Info.cfg, _4d.nii.gz, _frameXX[_gt].nii.gz at ED and ES) plus patientNNN_truth.npz and
patientNNN_truth.json holding the exact displacement (mm, on the ED grid), strain maps, AHA segments, global
strain and strain-rate curves, landmarks, volumes and every parameter. Patients are written atomically and a
re-run skips the finished ones. Same as deepstrain_jax.phantom.dataset.generate_dataset(OUT, N, SEED, ...).

Example:
  deepstrain phantom --out phantoms --n 10 --seed 0 --phenotypes NOR DCM --snr 20
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumable)")
    parser.add_argument("--n", required=True, type=int, metavar="N", help="number of patients")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="master seed, >= 0 (default 0)")
    parser.add_argument("--phenotypes", nargs="+", metavar="P",
                        help="phenotypes assigned in turn: NOR DCM HCM MINF ARV (RV = ARV; default all five); "
                             "commas also separate")
    parser.add_argument("--snr", nargs="+", type=float, metavar="SNR",
                        help="myocardial SNR: one value, or LOW HIGH for a uniform draw per patient "
                             "(default 10 40)")
    parser.add_argument("--model", choices=("A", "B"), default="A",
                        help="A: thick-walled cylinder (regional disease); B: ellipsoid with apex (default A)")
    parser.add_argument("--frames", type=int, metavar="T", help="frames per cycle (default 25-30 per patient)")
    parser.add_argument("--slice-order", choices=("base-to-apex", "apex-to-base"), default="base-to-apex",
                        help="slice 0 basal (default) or apical; the affine follows")
    parser.add_argument("--rescan", action="store_true", help="also render a rescan of every patient")
    parser.add_argument("--oblique", action="store_true", help="oblique stack orientation in scanner coordinates")
    parser.add_argument("--banding", action="store_true", help="add bSSFP off-resonance banding")
    parser.add_argument("--pixel-mm", type=float, metavar="MM", help="in-plane voxel size (default 1.25-2.0)")
    parser.add_argument("--matrix", type=int, metavar="N", help="in-plane matrix N x N (default: FOV 170-210 mm)")
    parser.add_argument("--slices", type=int, metavar="N", help="number of slices (default 8-10)")
    parser.add_argument("--supersample", nargs=2, type=int, metavar=("INPLANE", "SLICE"),
                        help="partial-volume sub-samples per pixel side and per slice (default 3 5)")


class _Progress:
    """A progress bar on a terminal (:func:`deepstrain_jax.console.progress`) and one line per patient."""

    def __init__(self):
        from deepstrain_jax import console

        self.console, self.bar, self.start = console, None, time.perf_counter()

    def __call__(self, done: int, total: int, name: str, skipped: bool, seconds: float) -> None:
        if self.bar is None:
            self.bar = self.console.progress(total=total, desc="phantoms", unit="patient")
        self.bar.update(1)
        elapsed = time.perf_counter() - self.start
        what = "exists, skipped" if skipped else f"{seconds:.1f} s"
        self.console.info("phantom %d/%d %s (%s) elapsed %.0f s, eta %.0f s", done, total, name, what, elapsed,
                          elapsed / done * (total - done))
        if done == total:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from deepstrain_jax.errors import InputError
    from deepstrain_jax.phantom import dataset

    phenotypes = None
    if args.phenotypes:
        phenotypes = [p for item in args.phenotypes for p in item.split(",") if p]
    snr = None
    if args.snr is not None:
        if len(args.snr) > 2:
            raise InputError(f"--snr takes one value or LOW HIGH, got {len(args.snr)} values")
        snr = args.snr[0] if len(args.snr) == 1 else tuple(args.snr)
    slice_order = args.slice_order.replace("-", "_")
    try:
        dataset.check_options(args.n, args.seed, phenotypes, snr, args.model, args.frames, slice_order)
    except ValueError as e:
        raise InputError(str(e)) from None
    fields = {}
    if args.supersample is not None:
        if min(args.supersample) < 1:
            raise InputError(f"--supersample values must be >= 1, got {args.supersample}")
        fields.update(supersample_inplane=args.supersample[0], supersample_slice=args.supersample[1])
    if args.pixel_mm is not None:
        if not 0.1 <= args.pixel_mm <= 10.0:
            raise InputError(f"--pixel-mm must be in [0.1, 10] mm, got {args.pixel_mm}")
        fields["pixel_mm"] = args.pixel_mm
    if args.matrix is not None:
        if not 8 <= args.matrix <= 1024:
            raise InputError(f"--matrix must be in [8, 1024], got {args.matrix}")
        fields["matrix"] = (args.matrix, args.matrix)
    if args.slices is not None:
        if not 1 <= args.slices <= 64:
            raise InputError(f"--slices must be in [1, 64], got {args.slices}")
        fields["n_slices"] = args.slices
    if args.banding:
        fields["banding"] = True
    folders = dataset.generate_dataset(args.out, args.n, args.seed, phenotypes=phenotypes, snr=snr,
                                       model=args.model, n_frames=args.frames, slice_order=slice_order,
                                       rescan=args.rescan, oblique=args.oblique,
                                       progress=_Progress(), **fields)
    print(f"{len(folders)} patient folder(s) in {args.out}")
    return 0
