"""What a path given to `deepstrain analyze` is: one subject (and of which layout) or a cohort of them.

One subject is:

* **a 4D NIfTI file** (``.nii`` / ``.nii.gz``), named after the file. A UK Biobank ``<eid>/sa.nii.gz`` is named
  ``<eid>``; an M&Ms ``<id>_sa.nii.gz`` or M&Ms-2 ``<id>_SA_CINE.nii.gz`` is named ``<id>``. Label files
  (``*_gt.nii.gz``, ``seg_*``, ``label*``) are refused as cines: they are segmentations.
* **an ACDC patient folder** (``Info.cfg`` + ``<name>_4d.nii.gz``; ED, ES and the group from ``Info.cfg``).
* **a UK Biobank subject folder** (``sa.nii.gz``; the long-axis ``la_*.nii.gz`` files are recognised and skipped
  for now), named after the folder (the eid).
* **an M&Ms / M&Ms-2 subject folder** ``<id>/`` with ``<id>_sa.nii.gz`` or ``<id>_SA_CINE.nii.gz``; never its
  ``_gt`` files. ED and ES come from the M&Ms metadata CSV (columns ``External code``, ``ED``, ``ES``,
  0-based) when it is found in the subject folder or up to three folders above it.
* **a DICOM folder**: a folder of DICOM files, or of sub-folders of DICOM files that all belong to one study
  (one StudyInstanceUID: a study exported series by series); :mod:`deepstrain_jax.data.dicom` picks the
  short-axis cine. Named after the folder. Sub-folders of different studies make a cohort of DICOM studies.

Anything else that is a folder is a **cohort**: its subjects are the NIfTI cines directly inside it and the
subject folders inside it, looked for down to three folder levels (M&Ms keeps subjects under
``Training/Labeled/``); hidden entries and our own output folders (with ``results.json`` or ``cohort.csv``) are
skipped. Files in a cohort that are not subjects (label maps, CSVs, long-axis cines) are listed in
:attr:`Discovery.skipped` with the reason. When a path is neither, the error says what it holds and what was
looked for.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from pathlib import Path

import pydicom

from deepstrain_jax.data import dicom
from deepstrain_jax.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
KINDS = ("nifti", "acdc", "ukbb", "mnms", "dicom")
_LABEL_FILE = re.compile(r"(_gt|_seg|_label|_labels)$|^(seg|label|labels)(_|$)", re.IGNORECASE)
_UKBB_CINE = "sa.nii.gz"
_UKBB_LONG_AXIS = re.compile(r"^la_\w+\.nii(\.gz)?$", re.IGNORECASE)
_MNMS_CINE = re.compile(r"^(?P<id>.+?)_(sa|SA_CINE)\.nii(\.gz)?$")
MAX_DEPTH = 3
LOOKED_FOR = ("an ACDC patient folder (Info.cfg), a UK Biobank folder (sa.nii.gz), an M&Ms folder "
              "(<id>/<id>_sa.nii.gz or <id>_SA_CINE.nii.gz), a DICOM series folder, a 4D NIfTI file "
              "(.nii, .nii.gz), or a cohort folder holding those")


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject found by :func:`discover`.

    Attributes:
      name: output folder name (the file stem, the folder name, the eid or the M&Ms code).
      path: what the user's path resolved to: the NIfTI cine, the ACDC patient folder or the DICOM folder.
      kind: ``"nifti"``, ``"acdc"``, ``"ukbb"``, ``"mnms"`` or ``"dicom"``.
      ed, es: 0-based frames from a layout's metadata (M&Ms CSV), else ``None``.
      group: the pathology group from a layout's metadata, else ``None``.
    """

    name: str
    path: Path
    kind: str
    ed: int | None = None
    es: int | None = None
    group: str | None = None


@dataclasses.dataclass(frozen=True)
class Discovery:
    """``kind`` ``"subject"`` (``subjects`` holds one) or ``"cohort"``; ``skipped``: ``(path, reason)`` pairs."""

    kind: str
    subjects: tuple[Subject, ...]
    skipped: tuple[tuple[Path, str], ...] = ()


def _name(folder: Path) -> str:
    """A folder's name as the user wrote it (``.`` and ``..`` made absolute; symbolic links not followed)."""
    return Path(os.path.abspath(folder)).name


def is_nifti_name(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """``patient001_4d`` for ``.../patient001_4d.nii.gz`` (the suffix dropped)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_label_file(path: str | os.PathLike) -> bool:
    """A segmentation by its name: ``*_gt``, ``*_seg``, ``seg_*``, ``label*`` (ACDC, M&Ms, UK Biobank)."""
    return bool(_LABEL_FILE.search(nifti_stem(path)))


def is_acdc_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "Info.cfg").is_file() or (path / "info.cfg").is_file())


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot list the folder ({e.strerror or e})", folder) from None


def _mnms_cine(folder: Path) -> Path | None:
    for p in _visible(folder):
        m = _MNMS_CINE.match(p.name)
        if m and p.is_file() and m["id"] == folder.name:
            return p
    return None


def _nifti_subject(path: Path, metadata: dict) -> Subject:
    """A NIfTI file given as a subject (or found in a cohort); label files are refused."""
    if is_label_file(path):
        raise InputError("is a label map (segmentation / ground truth), not a cine", path)
    if path.name.lower() == _UKBB_CINE:
        return Subject(_name(path.parent), path, "ukbb")
    if _UKBB_LONG_AXIS.match(path.name):
        raise InputError("is a long-axis cine (UK Biobank la_*): only short-axis stacks are analysed for now", path)
    m = _MNMS_CINE.match(path.name)
    if m:
        meta = metadata.get(m["id"], {})
        return Subject(m["id"], path, "mnms", meta.get("ed"), meta.get("es"), meta.get("pathology"))
    return Subject(nifti_stem(path), path, "nifti")


def _folder_subject(folder: Path, metadata: dict) -> Subject | None:
    """The subject a folder is by itself, or ``None`` (then it may be a cohort)."""
    if is_acdc_folder(folder):
        return Subject(_name(folder), folder, "acdc")
    if (folder / _UKBB_CINE).is_file():
        return Subject(_name(folder), folder / _UKBB_CINE, "ukbb")
    cine = _mnms_cine(folder)
    if cine is not None:
        meta = metadata.get(folder.name, {})
        return Subject(folder.name, cine, "mnms", meta.get("ed"), meta.get("es"), meta.get("pathology"))
    entries = _visible(folder)
    files = [p for p in entries if p.is_file()]
    if any(is_nifti_name(p) for p in files):
        return None
    if _has_dicom(files):
        return Subject(_name(folder), folder, "dicom")
    # One study exported as a folder per series (the reader picks the cine among them): two or more sub-folders
    # of DICOM files, all of one StudyInstanceUID. Sub-folders of different studies (or a single one) are a
    # cohort.
    uids = [u for u in (_study_uid(p) for p in entries if p.is_dir()) if u is not None]
    if len(uids) >= 2 and len(set(uids)) == 1 and uids[0]:
        return Subject(_name(folder), folder, "dicom")
    return None


def _has_dicom(files: list[Path]) -> bool:
    return any(dicom.is_dicom_file(p) for p in files[:50])


def _study_uid(folder: Path) -> str | None:
    """The StudyInstanceUID of the first DICOM file directly in ``folder`` ("" when it has none), else None."""
    for p in _visible(folder)[:50]:
        if p.is_file() and dicom.is_dicom_file(p):
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            except Exception:  # noqa: BLE001 - an unreadable file decides nothing here; the reader reports it
                return ""
            return str(getattr(ds, "StudyInstanceUID", ""))
    return None


def read_mnms_metadata(path: str | os.PathLike) -> dict[str, dict]:
    """Parse the M&Ms metadata CSV: ``{code: {"ed": int, "es": int, "pathology": str, "vendor": str,
    "centre": str}}`` (ED/ES 0-based). Header and values are stripped; ``External code``, ``ED`` and ``ES`` are
    required. Raises InputError naming the file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InputError("metadata CSV not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"unreadable metadata CSV ({e})", path) from None
    if not rows:
        raise InputError("empty metadata CSV", path)
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("External code", "ED", "ES") if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", path)
    col = {name: header.index(name) for name in header if name}
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        value = {name: (row[i].strip() if i < len(row) else "") for name, i in col.items()}
        try:
            ed, es = int(float(value["ED"])), int(float(value["ES"]))
        except ValueError:
            raise InputError(f"line {n}: ED/ES must be integers, got {value['ED']!r}, {value['ES']!r}", path) from None
        out[value["External code"]] = {"ed": ed, "es": es, "pathology": value.get("Pathology", "") or "unknown",
                                       "vendor": value.get("Vendor", ""), "centre": value.get("Centre", "")}
    return out


def _find_metadata(folder: Path, levels: int = 3) -> dict:
    """M&Ms metadata from a CSV with ``External code``, ``ED``, ``ES`` columns in ``folder`` or its parents."""
    here = folder.resolve()
    for candidate in [here] + list(here.parents)[:levels]:
        for csv_path in sorted(candidate.glob("*.csv")):
            try:
                with csv_path.open(newline="", encoding="utf-8-sig") as f:
                    header = [h.strip() for h in next(csv.reader(f), [])]
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
            if {"External code", "ED", "ES"} <= set(header):
                return read_mnms_metadata(csv_path)
    return {}


def _describe(folder: Path) -> str:
    entries = _visible(folder)
    folders = [p.name for p in entries if p.is_dir()]
    files = [p.name for p in entries if not p.is_dir()]

    def some(names):
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    parts = []
    if folders:
        parts.append(f"{len(folders)} folder(s) ({some(folders)})")
    if files:
        parts.append(f"{len(files)} file(s) ({some(files)})")
    return " and ".join(parts) if parts else "nothing"


def discover(path: str | os.PathLike) -> Discovery:
    """Decide what ``path`` is (module docstring). Raises InputError saying why when it is neither a subject
    nor a cohort with at least one subject."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_file():
        if not is_nifti_name(path):
            if dicom.is_dicom_file(path):
                raise InputError("is a single DICOM file: give the folder of the cine series", path)
            raise InputError(f"not a NIfTI file (.nii, .nii.gz) nor a folder; expected {LOOKED_FOR}", path)
        return Discovery("subject", (_nifti_subject(path, _find_metadata(path.parent)),))
    metadata = _find_metadata(path)
    own = _folder_subject(path, metadata)
    if own is not None:
        return Discovery("subject", (own,))
    subjects, skipped = [], []
    _collect(path, metadata, subjects, skipped, depth=1)
    if not subjects:
        raise InputError(f"no subject found: expected {LOOKED_FOR}; this folder holds {_describe(path)}", path)
    return Discovery("cohort", tuple(subjects), tuple(skipped))


def _is_output_folder(folder: Path) -> bool:
    """Our own outputs (a subject's results.json, a cohort's cohort.csv) are never inputs."""
    return (folder / "results.json").is_file() or (folder / "cohort.csv").is_file()


def _collect(folder: Path, metadata: dict, subjects: list, skipped: list, depth: int) -> None:
    for entry in _visible(folder):
        if entry.is_file():
            if not is_nifti_name(entry) or depth > 1:  # loose cines count directly in the cohort folder only
                continue
            try:
                subjects.append(_nifti_subject(entry, metadata))
            except InputError as e:
                skipped.append((entry, e.problem))
        elif entry.is_dir() and not _is_output_folder(entry):
            found = _folder_subject(entry, metadata)
            if found is not None:
                subjects.append(found)
                if found.kind == "ukbb":
                    skipped.extend((p, "long-axis cine (UK Biobank la_*): skipped for now")
                                   for p in _visible(entry) if _UKBB_LONG_AXIS.match(p.name))
            elif depth < MAX_DEPTH:
                _collect(entry, metadata, subjects, skipped, depth + 1)
