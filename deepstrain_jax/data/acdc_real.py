"""Real ACDC in the three forms of ``shared/data/acdc`` as training and validation sources.

The data is read in place (licence: ACDC terms; never copied into the repository). Three forms:

* ``labelled``: ``labelled/patientNNN/`` -- the original ACDC files of one patient: ``Info.cfg`` and the 3D
  ``patientNNN_frameXX.nii.gz`` / ``_gt.nii.gz`` of ED and ES, with real voxel sizes and the full field of view.
* ``h5``: ``h5/patientNNN_frame01.h5`` (ED) and ``_frame02.h5`` (ES): ``image`` and ``label`` as ``(Z, H, W)``,
  i.e. the NIfTI array ``(X, Y, Z)`` transposed ``(2, 1, 0)`` (checked against the ``labelled`` files of the
  patients in both forms), min-max scaled, **no voxel size**.
* ``cine``: ``cine/patientNNN/patientNNN_4d.nii.gz`` -- a cropped full-cycle cine with ``Info.cfg``; the voxel
  size is in ``cine/manifest.csv`` (``spacing_known = 0``: lost, the header says 1 mm isotropic);
  ``patientNNN_4d_edes_gt.nii.gz`` (DCM 001-008) holds the manual ED/ES labels on the crop.

Every case becomes a :class:`RealCase`: a cine ``(X, Y, Z, T)`` with its labelled frames, so the network-grid
machinery of :mod:`deepstrain_jax.training_data.subjects` applies unchanged. The ``labelled`` and ``h5`` forms give a
two-frame "cine" ``[ED, ES]`` (``ed = 0``, ``es = 1``).

**Unknown voxel size** (``h5``; ``cine`` with ``spacing_known = 0``): the case gets the nominal voxel size
:data:`NOMINAL_SPACING_MM` (the middle of ACDC's in-plane range 1.34-1.88 mm) and ``spacing_known = False``;
training covers the error with in-plane scale augmentation (``configs``: ``augment.scale`` spans +-25 %, wider
than the -11 % .. +25 % the nominal size can be off by). Validation reports such cases' volumes in percent of
the manual volumes (a ratio that does not depend on the voxel size) and never in mL.

**The split**: :data:`HELD_OUT` patients are never trained on and never used to pick a checkpoint, in any form.
:func:`find_cases` takes ``exclude`` (the training side) or ``include`` (the held-out side); the configs write
the list out (``data.real.held_out``), and :func:`check_split` refuses a training pool that holds one of them.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import h5py
import numpy as np

from deepstrain_jax.data import acdc, nifti
from deepstrain_jax.errors import InputError

HELD_OUT = ("006", "007", "008", "033", "039", "059", "078", "080", "087", "093")
FORMS = ("labelled", "h5", "cine")
NOMINAL_SPACING_MM = (1.5, 1.5, 10.0)
# ACDC's training set is numbered by group: 001-020 DCM, 021-040 HCM, 041-060 MINF, 061-080 NOR, 081-100 RV.
_GROUPS = ((20, "DCM"), (40, "HCM"), (60, "MINF"), (80, "NOR"), (100, "RV"))
_PATIENT = re.compile(r"patient(\d{3})")


def default_root() -> Path:
    """``../shared/data/acdc`` relative to the repository (the configs' default ``data.real.root``)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "acdc"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` as a path when given (non-empty), else :func:`default_root` (the eval flags' and configs' "")."""
    return Path(root) if root else default_root()


def group_of(number: str) -> str:
    """The ACDC group of training-set patient ``number`` (``"001"`` .. ``"100"``) from its numbering."""
    n = int(number)
    for last, group in _GROUPS:
        if 1 <= n <= last:
            return group
    raise ValueError(f"patient number {number!r} is outside ACDC's training set 001-100")


class CaseRef(NamedTuple):
    """Where one case lives: ``form``, the patient ``number`` (``"001"``), and its ``paths``."""

    form: str
    number: str
    paths: tuple

    @property
    def name(self) -> str:
        return f"patient{self.number}"


class RealCase(NamedTuple):
    """One real case as a cine (module docstring).

    Attributes:
      name: ``"patientNNN"``; form: ``"labelled"``, ``"h5"`` or ``"cine"``; group: ACDC group.
      image: ``(X, Y, Z, T)`` float32.
      labels: ``{frame: (X, Y, Z) uint8}`` manual labels (ED and ES; empty for unlabelled cines).
      spacing_mm: ``(3,)`` float64 (the nominal size when ``spacing_known`` is False).
      spacing_known: whether the voxel size is the scan's.
      ed, es: 0-based frames.
      affine: ``(4, 4)`` voxel-to-world (``diag(spacing, 1)`` where the header has none).
    """

    name: str
    form: str
    group: str
    image: np.ndarray
    labels: dict
    spacing_mm: np.ndarray
    spacing_known: bool
    ed: int
    es: int
    affine: np.ndarray


def _number(path: Path) -> str | None:
    m = _PATIENT.search(path.name)
    return m.group(1) if m else None


def _check_numbers(numbers: Sequence[str] | None, what: str) -> set | None:
    if numbers is None:
        return None
    out = set()
    for n in numbers:
        s = str(n)
        if not re.fullmatch(r"\d{3}", s):
            raise ValueError(f"{what}: patient numbers are three digits such as '006', got {n!r}")
        out.add(s)
    return out


def find_cases(root, form: str, *, include: Sequence[str] | None = None,
               exclude: Sequence[str] | None = None) -> list[CaseRef]:
    """The cases of one ``form`` under ``root`` (``shared/data/acdc``), sorted by patient number.

    Args:
      root: the ACDC data folder holding ``labelled/``, ``h5/``, ``cine/``.
      form: one of :data:`FORMS`.
      include: keep only these patient numbers (``None``: all).
      exclude: drop these patient numbers (e.g. :data:`HELD_OUT` for training).
    Raises:
      InputError: a missing folder, or an ``h5`` patient without both frames.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    inc, exc = _check_numbers(include, "include"), _check_numbers(exclude, "exclude") or set()
    folder = Path(root) / form
    if not folder.is_dir():
        raise InputError(f"no '{form}' folder in the ACDC data root", folder)
    refs = []
    if form == "h5":
        numbers = sorted({n for p in folder.glob("patient*_frame*.h5") if (n := _number(p))})
        for n in numbers:
            paths = tuple(folder / f"patient{n}_frame{k:02d}.h5" for k in (1, 2))
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise InputError(f"patient{n} lacks {', '.join(missing)} (ED is frame01, ES frame02)", folder)
            refs.append(CaseRef(form, n, paths))
    else:
        for p in sorted(folder.iterdir()):
            n = _number(p)
            if p.is_dir() and n is not None and p.name == f"patient{n}":
                refs.append(CaseRef(form, n, (p,)))
    return [r for r in refs if (inc is None or r.number in inc) and r.number not in exc]


def check_split(refs: Sequence[CaseRef], held_out: Sequence[str]) -> None:
    """Raise ValueError if any of ``refs`` is a held-out patient (the training side of the split)."""
    bad = sorted({r.name for r in refs if r.number in set(held_out)})
    if bad:
        raise ValueError(f"held-out patients in a training pool: {', '.join(bad)}")


def read_manifest(path) -> dict:
    """``cine/manifest.csv`` as ``{"patientNNN": {"spacing_known": bool, "spacing_mm": (3,) or None, ...}}``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"cannot read the manifest: {e.strerror or e}", path) from None
    out = {}
    for k, row in enumerate(rows, start=2):
        try:
            known = row["spacing_known"].strip() == "1"
            spacing = np.array([float(v) for v in row["spacing_mm"].split()], np.float64) if known else None
            if known and (spacing.shape != (3,) or not np.all(spacing > 0)):
                raise ValueError(f"spacing_mm {row['spacing_mm']!r}")
            out[row["patient"].strip()] = {"group": row["group"].strip(), "spacing_known": known,
                                           "spacing_mm": spacing}
        except (KeyError, ValueError, AttributeError) as e:
            raise InputError(f"line {k}: unreadable row ({e})", path) from None
    return out


def _labels_u8(a, path) -> np.ndarray:
    a = np.asarray(a)
    r = np.rint(a)
    if a.size and (np.any(np.abs(a - r) > 1e-3) or r.min() < 0 or r.max() > 3):
        raise InputError("labels must be integers in {0, 1, 2, 3}", path)
    return r.astype(np.uint8)


def _read_labelled(ref: CaseRef) -> RealCase:
    folder = ref.paths[0]
    info = acdc.read_info_cfg(acdc.info_cfg_path(folder))
    vols, labs = [], {}
    for k, frame in enumerate((info.ed, info.es)):
        img = nifti.load_volume(folder / acdc.frame_filename(ref.name, frame))
        gt = nifti.load_volume(folder / acdc.frame_filename(ref.name, frame, gt=True))
        if gt.array.shape != img.array.shape or not np.allclose(gt.affine, img.affine, atol=1e-3):
            raise InputError(f"labels {gt.array.shape} do not match the image {img.array.shape} (shape or affine)",
                             gt.path)
        if vols and (img.array.shape != vols[0].array.shape or not np.allclose(img.affine, vols[0].affine,
                                                                                atol=1e-3)):
            raise InputError("the ES frame's grid differs from the ED frame's", img.path)
        vols.append(img)
        labs[k] = _labels_u8(gt.array, gt.path)
    image = np.stack([v.array.astype(np.float32) for v in vols], axis=-1)
    return RealCase(ref.name, ref.form, info.group, image, labs, np.asarray(vols[0].spacing_mm, np.float64), True,
                    0, 1, np.asarray(vols[0].affine, np.float64))


def _read_h5(ref: CaseRef) -> RealCase:
    frames, labs = [], {}
    for k, path in enumerate(ref.paths):
        try:
            with h5py.File(path, "r") as f:
                image, label = np.asarray(f["image"], np.float32), np.asarray(f["label"])
        except (OSError, KeyError) as e:
            raise InputError(f"not a readable h5 case with 'image' and 'label' ({e})", path) from None
        if image.ndim != 3 or image.shape != label.shape:
            raise InputError(f"'image' {image.shape} and 'label' {label.shape} must be one (Z, H, W) shape", path)
        if not np.all(np.isfinite(image)):
            raise InputError("the image has NaN or Inf voxels", path)
        if frames and image.shape != frames[0].shape[::-1]:
            raise InputError(f"ES shape {image.shape} differs from ED {frames[0].shape[::-1]}", path)
        frames.append(np.transpose(image, (2, 1, 0)))
        labs[k] = _labels_u8(np.transpose(label, (2, 1, 0)), path)
    spacing = np.asarray(NOMINAL_SPACING_MM, np.float64)
    return RealCase(ref.name, ref.form, group_of(ref.number), np.stack(frames, axis=-1), labs, spacing, False,
                    0, 1, np.diag([*spacing, 1.0]))


def _read_cine(ref: CaseRef) -> RealCase:
    folder = ref.paths[0]
    info = acdc.read_info_cfg(acdc.info_cfg_path(folder))
    manifest_path = folder.parent / "manifest.csv"
    row = read_manifest(manifest_path).get(ref.name)
    if row is None:
        raise InputError(f"{ref.name} is not in the manifest", manifest_path)
    cine = nifti.load_cine(folder / f"{ref.name}_4d.nii.gz")
    if cine.array.shape[3] != info.nb_frame:
        raise InputError(f"NbFrame = {info.nb_frame} in Info.cfg but the cine has {cine.array.shape[3]} frames",
                         cine.path)
    header = np.asarray(cine.spacing_mm, np.float64)
    if row["spacing_known"]:
        if not np.allclose(header, row["spacing_mm"], rtol=1e-3, atol=1e-3):
            raise InputError(f"header voxel size {header.round(3).tolist()} mm disagrees with the manifest's "
                             f"{row['spacing_mm'].tolist()}", cine.path)
        spacing, affine = header, np.asarray(cine.affine, np.float64)
    else:
        spacing = np.asarray(NOMINAL_SPACING_MM, np.float64)
        affine = np.diag([*spacing, 1.0])
    labs = {}
    gt_path = folder / f"{ref.name}_4d_edes_gt.nii.gz"
    if gt_path.is_file():
        gt = nifti.load_cine(gt_path)
        if gt.array.shape != cine.array.shape:
            raise InputError(f"labels {gt.array.shape} do not match the cine {cine.array.shape}", gt.path)
        for frame in (info.ed, info.es):
            lab = _labels_u8(gt.array[..., frame], gt.path)
            if not lab.any():
                raise InputError(f"frame {frame + 1} (ED/ES in Info.cfg) has no labels", gt.path)
            labs[frame] = lab
    return RealCase(ref.name, ref.form, info.group, cine.array.astype(np.float32), labs, spacing,
                    bool(row["spacing_known"]), info.ed, info.es, affine)


def read_case(ref: CaseRef) -> RealCase:
    """Read one case (module docstring). Raises InputError naming the file for anything unreadable or
    inconsistent (labels outside {0..3}, shapes or grids that disagree, a header voxel size that disagrees with
    the manifest)."""
    return {"labelled": _read_labelled, "h5": _read_h5, "cine": _read_cine}[ref.form](ref)
