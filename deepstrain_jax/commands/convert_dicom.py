"""Convert a folder of short-axis cine DICOM files into a 4D NIfTI cine (X, Y, Z, T), laid out as dcm2niix does.

Reads the one cine series of FOLDER (several slice positions x several cardiac phases; other series and
non-DICOM files are ignored; --series picks one when the folder holds several), sorts the slices along the
slice normal and the phases by trigger time, and writes OUT.nii.gz with the RAS affine and pixdim[4] = the
frame interval in seconds. See deepstrain_jax.data.dicom for the conventions and what is refused.

Example:
  deepstrain convert-dicom exam/series5 cine.nii.gz
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="folder of DICOM files (subfolders searched 3 deep)")
    parser.add_argument("out", metavar="OUT.nii.gz", help="4D NIfTI file to write (.nii or .nii.gz)")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID of the cine to read (default: the only "
                                                        "cine series of FOLDER)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from deepstrain_jax.data.dicom import read_dicom_cine, write_nifti
    from deepstrain_jax.errors import InputError

    if not (args.out.endswith(".nii") or args.out.endswith(".nii.gz")):
        raise InputError("the output must be a .nii or .nii.gz file", args.out)
    if os.path.exists(args.out) and not args.overwrite:
        raise InputError("already exists (use --overwrite to replace it)", args.out)
    cine = read_dicom_cine(args.folder, series_uid=args.series)
    write_nifti(cine, args.out)
    x, y, z, t = cine.array.shape
    dx, dy, dz = cine.spacing_mm
    interval = "unknown" if cine.frame_interval_s is None else f"{cine.frame_interval_s * 1e3:.2f} ms"
    print(f"{args.folder}: {x}x{y}x{z} x {t} frames ({cine.array.dtype}), voxel {dx:.4g} x {dy:.4g} x {dz:.4g} mm, "
          f"frame interval {interval} -> {args.out}")
    return 0
