"""What `deepstrain analyze` accepts, read and checked: one subject of any layout, or an in-memory array.

Which layout a path is (a 4D NIfTI, an ACDC patient folder, UK Biobank, M&Ms / M&Ms-2, a DICOM series folder,
or a cohort of those) is decided by :mod:`deepstrain_jax.analysis.discovery`; :func:`read_subject` reads what it
found (NIfTI through :mod:`deepstrain_jax.data.nifti`, DICOM through :mod:`deepstrain_jax.data.dicom`). ED
defaults to frame 0 unless the layout gives it (ACDC ``Info.cfg``, 1-based there; the M&Ms CSV, 0-based). A
written phantom's truth sidecar, when present, tells the stored slice order. :func:`cine_from_array` makes the
same :class:`CineInput` from an array.

Every check a cine must pass before any output is written lives here (:func:`check_cine`): at least two
frames, finite voxels (the NIfTI reader refuses NaN/Inf), no constant frame (an empty or missing frame), time
and slice axes not swapped, a plausible voxel size for cardiac cine MRI, and an in-plane field of view no
smaller than the network crop. Each failure raises :class:`~deepstrain_jax.errors.InputError` naming the file.

The slice axis is the one whose voxel size differs from the other two (:func:`find_slice_axis`); the cine is
transposed so that it is axis 2 (:func:`to_slice_last`), and every voxel output is transposed back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from deepstrain_jax.analysis import discovery
from deepstrain_jax.data import acdc, dicom, nifti
from deepstrain_jax.data.nifti import PIXDIM_TOLERANCE
from deepstrain_jax.errors import InputError

NIFTI_SUFFIXES = discovery.NIFTI_SUFFIXES
# Plausible voxel sizes of a cardiac cine, mm. Outside these a header is wrong (metres for mm, a missing
# slice spacing) and the physical strain would be meaningless.
INPLANE_MM_RANGE = (0.3, 5.0)
SLICE_MM_RANGE = (0.5, 30.0)
# Below this in-plane field of view no whole heart fits; between it and the network crop (160 mm for the shipped
# models) the crop is padded and analyze() warns (cropped ACDC cines are about 150 mm wide).
MIN_FOV_MM = 100.0


@dataclasses.dataclass(frozen=True)
class CineInput:
    """One subject's cine as read from disk, before any processing.

    Attributes:
      name: subject name (file name without suffix, or the patient folder name).
      path: what the user gave: the NIfTI file or the patient folder.
      kind: ``"nifti"`` or ``"acdc"``.
      cine_path: the 4D NIfTI file itself.
      image: ``(X, Y, Z, T)`` voxel values as stored (array order of the file).
      affine: ``(4, 4)`` voxel-to-world matrix, mm.
      spacing_mm: ``(3,)`` voxel size per array axis, mm.
      frame_interval_s: from the header (``pixdim[4]`` with a time unit), or ``None``.
      ed, es: 0-based frames from ``Info.cfg``, or ``None``.
      group: ``Info.cfg`` group, or ``None``.
      slice_order: the stored slice order when a phantom sidecar records it, else ``None`` (unknown).
      warnings: what the reader noticed in the header and how it resolved it.
    """

    name: str
    path: str
    kind: str
    cine_path: str
    image: np.ndarray
    affine: np.ndarray
    spacing_mm: np.ndarray
    frame_interval_s: float | None
    ed: int | None = None
    es: int | None = None
    group: str | None = None
    slice_order: str | None = None
    warnings: tuple[str, ...] = ()


def is_nifti_name(path: str | os.PathLike) -> bool:
    return discovery.is_nifti_name(path)


def subject_name(path: str | os.PathLike) -> str:
    """The name :func:`deepstrain_jax.analysis.discovery.discover` gives the subject at ``path``."""
    return discovery.discover(path).subjects[0].name


def is_patient_folder(path: str | os.PathLike) -> bool:
    return discovery.is_acdc_folder(Path(path))


def list_subjects(folder: str | os.PathLike) -> list[discovery.Subject]:
    """The subjects of a cohort folder (:func:`deepstrain_jax.analysis.discovery.discover`); raises InputError
    saying what the folder holds when it has none."""
    return list(discovery.discover(folder).subjects)


def read_input(path: str | os.PathLike) -> CineInput:
    """Read one subject given by its path (:func:`deepstrain_jax.analysis.discovery.discover` decides the
    layout); see the module docstring. No checks beyond the reader's (use :func:`check_cine`)."""
    found = discovery.discover(path)
    if found.kind != "subject":
        raise InputError(f"is a cohort folder of {len(found.subjects)} subjects, not one subject: analyse it with "
                         "`deepstrain analyze FOLDER --out OUT` or deepstrain_jax.analysis.cohort.run_cohort", path)
    return read_subject(found.subjects[0])


def read_subject(subject: discovery.Subject) -> CineInput:
    """Read a subject found by :func:`deepstrain_jax.analysis.discovery.discover`."""
    path = Path(subject.path)
    if subject.kind == "acdc":
        name = path.resolve().name
        info = acdc.read_info_cfg(acdc.info_cfg_path(path))
        cine_path = path / f"{name}_4d.nii.gz"
        if not cine_path.is_file():
            raise InputError(f"missing cine {cine_path.name}", path)
        data = nifti.load_cine(cine_path, geometry="checked")
        if data.array.shape[3] != info.nb_frame:
            raise InputError(f"NbFrame = {info.nb_frame} in Info.cfg but the cine has {data.array.shape[3]} "
                             "frames", cine_path)
        order = None
        if (path / f"{name}_truth.json").is_file():
            try:
                order = json.loads((path / f"{name}_truth.json").read_text()).get("slice_order")
            except (OSError, ValueError) as e:
                raise InputError(f"unreadable truth sidecar ({e})", path / f"{name}_truth.json") from None
        return CineInput(name=name, path=os.fspath(path), kind="acdc", cine_path=os.fspath(cine_path),
                         image=data.array, affine=data.affine, spacing_mm=data.spacing_mm,
                         frame_interval_s=data.frame_interval_s, ed=info.ed, es=info.es, group=info.group,
                         slice_order=order, warnings=data.warnings)
    if subject.kind == "dicom":
        data = dicom.read_dicom_cine(path)
    else:
        data = nifti.load_cine(path, geometry="checked")
    return CineInput(name=subject.name, path=os.fspath(path), kind=subject.kind, cine_path=os.fspath(path),
                     image=data.array, affine=data.affine, spacing_mm=data.spacing_mm,
                     frame_interval_s=data.frame_interval_s, ed=subject.ed, es=subject.es, group=subject.group,
                     warnings=data.warnings)


def cine_from_array(array, *, spacing_mm=None, affine=None, name: str = "array") -> CineInput:
    """A :class:`CineInput` from an in-memory ``(X, Y, Z, T)`` array, with the same checks as a file.

    Give ``spacing_mm`` (mm per axis; the affine is then ``diag(spacing)``), or ``affine`` (its column norms are
    the spacing), or both (they must agree within 1 %). The frame interval is an analysis option
    (``frame_interval_s=`` or ``heart_rate_bpm=``).
    """
    where = f"<array {name}>"
    a = np.asarray(array)
    if a.ndim != 4:
        raise InputError(f"expected a 4D (X, Y, Z, T) array, got shape {a.shape}", where)
    if spacing_mm is None and affine is None:
        raise InputError("an array needs its voxel size: pass spacing_mm=(sx, sy, sz) or affine=", where)
    if affine is not None:
        affine = np.asarray(affine, np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or np.linalg.det(affine[:3, :3]) == 0:
            raise InputError(f"affine must be a finite invertible 4x4 matrix, got shape {affine.shape}", where)
    if spacing_mm is not None:
        spacing = np.asarray(spacing_mm, np.float64).reshape(-1)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(f"spacing_mm must be 3 positive numbers, got {np.asarray(spacing_mm).tolist()}", where)
        if affine is None:
            affine = np.diag(list(spacing) + [1.0])
        else:
            norms = np.linalg.norm(affine[:3, :3], axis=0)
            if np.any(np.abs(spacing - norms) > PIXDIM_TOLERANCE * norms):
                raise InputError(f"spacing_mm {spacing.tolist()} disagrees with the affine's voxel size "
                                 f"{np.round(norms, 4).tolist()} (more than 1 %)", where)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("the array has NaN or Inf voxels", where)
    return CineInput(name=name, path=where, kind="array", cine_path=where, image=a, affine=affine,
                     spacing_mm=spacing, frame_interval_s=None)


def find_slice_axis(spacing_mm) -> int:
    """The axis whose voxel size differs from the other two (relative difference > 1 %); axis 2 otherwise.

    A short-axis stack has square in-plane pixels and a larger slice spacing, so the odd one out is the slice
    axis; for (near-)isotropic or three-different spacings the NIfTI convention (axis 2) is kept.
    """
    s = np.asarray(spacing_mm, dtype=np.float64)

    def same(a, b):
        return abs(s[a] - s[b]) <= 0.01 * max(s[a], s[b])

    for axis, (a, b) in ((2, (0, 1)), (0, (1, 2)), (1, (0, 2))):
        if same(a, b) and not same(axis, a):
            return axis
    return 2


def slice_last_order(slice_axis: int) -> tuple[int, int, int]:
    """Axis permutation that moves ``slice_axis`` to position 2 keeping the other two in order."""
    return tuple(a for a in range(3) if a != slice_axis) + (slice_axis,)


def to_slice_last(cine: CineInput, slice_axis: int) -> CineInput:
    """Transpose the cine so the slice axis is axis 2; the affine's columns and the spacing follow."""
    if slice_axis == 2:
        return cine
    perm = slice_last_order(slice_axis)
    affine = cine.affine.copy()
    affine[:3, :3] = cine.affine[:3, list(perm)]
    return dataclasses.replace(cine, image=np.transpose(cine.image, perm + (3,)), affine=affine,
                               spacing_mm=cine.spacing_mm[list(perm)])


def check_cine(cine: CineInput, *, crop_mm: float) -> None:
    """Refuse a cine the pipeline cannot analyse (module docstring); ``cine`` has its slices on axis 2.

    Args:
      crop_mm: in-plane size of the network crop, mm (128 x 1.25 mm for the shipped models); a field of view
        below ``min(MIN_FOV_MM, crop_mm)`` is refused.
    Raises:
      InputError naming ``cine.cine_path``.
    """
    path, image = cine.cine_path, cine.image
    t = image.shape[3]
    if t < 2:
        raise InputError(f"a single frame (shape {image.shape}): motion and strain need a cine of at least "
                         "2 frames", path)
    if min(image.shape[:3]) < 1:
        raise InputError(f"empty image (shape {image.shape})", path)
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"voxel type {image.dtype} is not a real number", path)
    if not np.all(np.isfinite(image)):  # the reader refuses these already; kept for arrays built in memory
        raise InputError("the image has NaN or Inf voxels", path)
    flat = image.reshape(-1, t)
    constant = np.flatnonzero(flat.min(axis=0) == flat.max(axis=0))
    if constant.size == t:
        raise InputError(f"the image is constant (every voxel = {flat.flat[0]}): nothing to analyse", path)
    if constant.size:
        raise InputError(f"frame(s) {', '.join(str(int(k)) for k in constant[:10])} (0-based) are constant: "
                         "empty or missing frames", path)
    _check_axes_not_swapped(cine)
    s = cine.spacing_mm
    lo, hi = INPLANE_MM_RANGE
    if not (lo <= s[0] <= hi and lo <= s[1] <= hi):
        raise InputError(f"in-plane voxel size {s[0]:g} x {s[1]:g} mm is outside the plausible range "
                         f"[{lo:g}, {hi:g}] mm for cine MRI (check the header's pixdim and units)", path)
    lo, hi = SLICE_MM_RANGE
    if not lo <= s[2] <= hi:
        raise InputError(f"slice spacing {s[2]:g} mm is outside the plausible range [{lo:g}, {hi:g}] mm "
                         "(check the header's pixdim and units)", path)
    fov = np.asarray(image.shape[:2]) * s[:2]
    if np.any(fov < min(MIN_FOV_MM, crop_mm)):
        raise InputError(f"in-plane field of view {fov[0]:.0f} x {fov[1]:.0f} mm is smaller than {MIN_FOV_MM:g} mm: "
                         "too small to hold a whole heart", path)
    if cine.ed is not None and not 0 <= cine.ed < t:
        raise InputError(f"ED frame {cine.ed} outside [0, {t})", path)
    if cine.es is not None and not 0 <= cine.es < t:
        raise InputError(f"ES frame {cine.es} outside [0, {t})", path)


def _check_axes_not_swapped(cine: CineInput) -> None:
    """Refuse a cine whose 3rd and 4th axes look like time and slices instead of slices and time.

    Neighbouring frames of a cine are alike (the heart moves a few mm between them), neighbouring slices differ
    more (they are 5-10 mm apart through the heart). Both conditions must hold to refuse: fewer entries on the
    4th axis than on the 3rd, and neighbours along the 4th axis more than 1.5x as different as along the 3rd.
    """
    image = cine.image
    z, t = image.shape[2], image.shape[3]
    if t >= z or z < 3:
        return
    step = max(1, image.shape[0] // 64)  # a subsample is enough to compare the two
    sub = np.asarray(image[::step, ::step], np.float32)
    along_t = float(np.mean(np.abs(np.diff(sub, axis=3))))
    along_z = float(np.mean(np.abs(np.diff(sub, axis=2))))
    if along_t > 1.5 * along_z:
        raise InputError(f"the 3rd and 4th axes look swapped (shape {image.shape}: {z} 'slices' that change like "
                         f"frames, {t} 'frames' that change like slices); store the cine as (X, Y, slices, "
                         "time)", cine.cine_path)
