"""Read and write patient folders in the ACDC layout (Bernard et al., IEEE TMI 2018).

Layout of one patient folder ``patientNNN/``::

    Info.cfg                        "Key: value" lines: ED, ES (1-based), Group, Height (cm), NbFrame, Weight (kg)
    patientNNN_4d.nii.gz            cine (X, Y, Z, T)
    patientNNN_frameXX.nii.gz       3D image of frame XX (1-based, two digits or more), usually ED and ES
    patientNNN_frameXX_gt.nii.gz    3D labels of frame XX: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity

In the library every frame index is **0-based**: ``AcdcInfo.ed = ED - 1`` and file ``frameXX`` holds frame
``XX - 1`` (``frame01`` is ``4d[..., 0]``). The conversion happens here and nowhere else.

``Info.cfg`` is looked up as written by ACDC (capital I), then as ``info.cfg``. Problems with the files (a
missing key, an unparsable or out-of-range value, a missing cine, label values outside {0, 1, 2, 3}, frames whose
shape disagrees with the cine, ``NbFrame`` different from the cine's T) raise
:class:`deepstrain_jax.errors.InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import numpy as np

from deepstrain_jax.data.nifti import NiftiData, load_cine, load_volume, save_nifti
from deepstrain_jax.errors import InputError
from deepstrain_jax.io.atomic import write_text
from deepstrain_jax.labels import NAMES

INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")
LABELS = NAMES


@dataclasses.dataclass(frozen=True)
class AcdcInfo:
    """The contents of ``Info.cfg`` with 0-based frame indices.

    Attributes:
      ed: end-diastolic frame, 0-based (``Info.cfg`` ``ED`` - 1).
      es: end-systolic frame, 0-based (``Info.cfg`` ``ES`` - 1).
      group: diagnostic group (ACDC: NOR, MINF, DCM, HCM, RV).
      height_cm: body height in cm.
      nb_frame: number of frames T of the cine.
      weight_kg: body weight in kg.
    """

    ed: int
    es: int
    group: str
    height_cm: float
    nb_frame: int
    weight_kg: float

    def __post_init__(self):
        if self.nb_frame < 1:
            raise ValueError(f"nb_frame must be >= 1, got {self.nb_frame}")
        for name in ("ed", "es"):
            v = getattr(self, name)
            if not 0 <= v < self.nb_frame:
                raise ValueError(f"{name} = {v} (0-based) is outside [0, {self.nb_frame})")
        for name in ("height_cm", "weight_kg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive, got {v}")
        if not self.group or any(c.isspace() for c in self.group):
            raise ValueError(f"group must be a non-empty word, got {self.group!r}")


def _parse_int(key: str, value: str, path) -> int:
    try:
        f = float(value)
    except ValueError:
        raise InputError(f"{key}: expected an integer, got {value!r}", path) from None
    if not math.isfinite(f) or f != int(f):
        raise InputError(f"{key}: expected an integer, got {value!r}", path)
    return int(f)


def _parse_float(key: str, value: str, path) -> float:
    try:
        f = float(value)
    except ValueError:
        raise InputError(f"{key}: expected a number, got {value!r}", path) from None
    if not math.isfinite(f):
        raise InputError(f"{key}: expected a finite number, got {value!r}", path)
    return f


def parse_info_cfg(text: str, path: str | os.PathLike | None = None) -> AcdcInfo:
    """Parse the text of an ``Info.cfg``: one ``Key: value`` per line; 1-based ED/ES become 0-based.

    Unknown keys and blank lines are ignored. Raises :class:`InputError` (naming ``path``) for a missing key,
    a value that does not parse, ED or ES outside ``[1, NbFrame]``, or non-positive Height/Weight/NbFrame.
    """
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError(f"line {n}: expected 'Key: value', got {line.strip()!r}", path)
        values[key.strip()] = value.strip()
    missing = [k for k in INFO_KEYS if k not in values]
    if missing:
        raise InputError(f"missing key(s) {', '.join(missing)} (required: {', '.join(INFO_KEYS)})", path)
    nb_frame = _parse_int("NbFrame", values["NbFrame"], path)
    ed = _parse_int("ED", values["ED"], path)
    es = _parse_int("ES", values["ES"], path)
    height = _parse_float("Height", values["Height"], path)
    weight = _parse_float("Weight", values["Weight"], path)
    if nb_frame < 1:
        raise InputError(f"NbFrame must be >= 1, got {nb_frame}", path)
    for key, v in (("ED", ed), ("ES", es)):
        if not 1 <= v <= nb_frame:
            raise InputError(f"{key} = {v} is outside [1, NbFrame = {nb_frame}] (ACDC frames are 1-based)", path)
    for key, v in (("Height", height), ("Weight", weight)):
        if v <= 0:
            raise InputError(f"{key} must be positive, got {v}", path)
    group = values["Group"]
    if not group or any(c.isspace() for c in group):
        raise InputError(f"Group must be one word, got {group!r}", path)
    return AcdcInfo(ed=ed - 1, es=es - 1, group=group, height_cm=height, nb_frame=nb_frame, weight_kg=weight)


def format_info_cfg(info: AcdcInfo) -> str:
    """The text of an ``Info.cfg`` for ``info`` (1-based ED/ES, keys in ACDC's order)."""
    return (f"ED: {info.ed + 1}\nES: {info.es + 1}\nGroup: {info.group}\nHeight: {float(info.height_cm)!r}\n"
            f"NbFrame: {info.nb_frame}\nWeight: {float(info.weight_kg)!r}\n")


def info_cfg_path(folder: str | os.PathLike) -> Path:
    """``folder/Info.cfg``, or ``folder/info.cfg`` when only that exists (case-sensitive file systems)."""
    folder = Path(folder)
    for name in ("Info.cfg", "info.cfg"):
        if (folder / name).is_file():
            return folder / name
    raise InputError("no Info.cfg in the patient folder", folder)


def read_info_cfg(path: str | os.PathLike) -> AcdcInfo:
    """Read an ``Info.cfg`` file; see :func:`parse_info_cfg`."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read ({type(e).__name__}: {e})", path) from None
    return parse_info_cfg(text, path)


def frame_filename(name: str, frame: int, gt: bool = False) -> str:
    """``{name}_frameXX[_gt].nii.gz`` for the 0-based ``frame`` (``XX = frame + 1``, at least two digits)."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0 (0-based), got {frame}")
    return f"{name}_frame{frame + 1:02d}{'_gt' if gt else ''}.nii.gz"


@dataclasses.dataclass(frozen=True)
class AcdcPatient:
    """One ACDC patient folder, loaded.

    Attributes:
      name: the patient name (folder name, e.g. ``patient001``).
      folder: the folder path.
      info: :class:`AcdcInfo` (0-based ED/ES).
      cine: the 4D cine ``(X, Y, Z, T)`` with its affine, spacing and frame interval.
      frames: 0-based frame index -> 3D image from ``_frameXX.nii.gz`` (the frames present on disk).
      labels: 0-based frame index -> 3D uint8-valued labels from ``_frameXX_gt.nii.gz`` (may be empty).
    """

    name: str
    folder: str
    info: AcdcInfo
    cine: NiftiData
    frames: dict
    labels: dict

    @property
    def ed_labels(self) -> np.ndarray | None:
        """ED label map ``(X, Y, Z)`` or ``None`` when its ``_gt`` file is absent."""
        v = self.labels.get(self.info.ed)
        return None if v is None else v.array

    @property
    def es_labels(self) -> np.ndarray | None:
        """ES label map ``(X, Y, Z)`` or ``None`` when its ``_gt`` file is absent."""
        v = self.labels.get(self.info.es)
        return None if v is None else v.array


def load_patient(folder: str | os.PathLike) -> AcdcPatient:
    """Load an ACDC patient folder: ``Info.cfg``, the 4D cine and every ``_frameXX(_gt)`` file present.

    Args:
      folder: ``.../patientNNN``; the patient name is the folder name.
    Returns:
      :class:`AcdcPatient` with 0-based frame indices.
    Raises:
      InputError: missing folder, ``Info.cfg`` or cine; bad ``Info.cfg``; ``NbFrame`` != cine T; a frame file
        whose shape is not the cine's ``(X, Y, Z)`` or whose index is beyond ``NbFrame``; labels that are not
        integers in {0, 1, 2, 3}.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("patient folder not found", folder)
    name = folder.resolve().name
    info = read_info_cfg(info_cfg_path(folder))
    cine_path = folder / f"{name}_4d.nii.gz"
    if not cine_path.is_file():
        raise InputError(f"missing cine {cine_path.name}", folder)
    cine = load_cine(cine_path)
    if cine.array.shape[3] != info.nb_frame:
        raise InputError(f"NbFrame = {info.nb_frame} in Info.cfg but the cine has {cine.array.shape[3]} frames",
                         cine_path)
    pattern = re.compile(rf"^{re.escape(name)}_frame(\d+)(_gt)?\.nii(\.gz)?$")
    frames, labels = {}, {}
    for path in sorted(folder.iterdir()):
        m = pattern.match(path.name)
        if not m:
            continue
        frame = int(m.group(1)) - 1
        if not 0 <= frame < info.nb_frame:
            raise InputError(f"frame number {frame + 1} is outside [1, NbFrame = {info.nb_frame}]", path)
        vol = load_volume(path)
        if vol.array.shape != cine.array.shape[:3]:
            raise InputError(f"shape {vol.array.shape} differs from the cine's {cine.array.shape[:3]}", path)
        if m.group(2):
            a = vol.array
            if not np.issubdtype(a.dtype, np.integer):
                if not np.all(a == np.round(a)):
                    raise InputError("labels must be integers", path)
            bad = np.setdiff1d(np.unique(a), list(LABELS))
            if bad.size:
                raise InputError(f"label values {bad.tolist()} outside {{0, 1, 2, 3}}", path)
            labels[frame] = vol
        else:
            frames[frame] = vol
    return AcdcPatient(name=name, folder=os.fspath(folder), info=info, cine=cine, frames=frames, labels=labels)


def write_patient(folder: str | os.PathLike, name: str, cine, affine, info: AcdcInfo, labels=None,
                  frame_interval_s: float | None = None) -> None:
    """Write one patient in the ACDC layout into ``folder`` (created if needed).

    Writes ``Info.cfg``, ``{name}_4d.nii.gz`` (the cine with its dtype), and for every frame in
    ``{info.ed, info.es} | set(labels)`` the image ``{name}_frameXX.nii.gz`` (= ``cine[..., frame]``); for
    every frame in ``labels`` the uint8 label map ``{name}_frameXX_gt.nii.gz``. All files share ``affine``;
    the cine carries ``pixdim[4] = frame_interval_s``. Each file is written atomically; for an all-or-nothing
    folder, write into :func:`deepstrain_jax.io.atomic.atomic_directory` (``name`` is passed separately
    because that temporary folder has another name).

    Args:
      folder: destination folder.
      name: patient name used in the file names, e.g. ``patient001``.
      cine: ``(X, Y, Z, T)`` array, ``T = info.nb_frame``.
      affine: ``(4, 4)`` voxel-to-world matrix in mm (float32-representable for an exact round trip).
      info: :class:`AcdcInfo` (0-based ED/ES).
      labels: optional mapping 0-based frame -> ``(X, Y, Z)`` labels in {0, 1, 2, 3}.
      frame_interval_s: frame interval in seconds, or ``None``.
    """
    cine = np.asarray(cine)
    labels = {} if labels is None else {int(k): np.asarray(v) for k, v in labels.items()}
    if cine.ndim != 4:
        raise ValueError(f"cine must be (X, Y, Z, T), got shape {cine.shape}")
    if cine.shape[3] != info.nb_frame:
        raise ValueError(f"cine has {cine.shape[3]} frames but info.nb_frame = {info.nb_frame}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"name must be a plain file-name stem, got {name!r}")
    for frame, lab in labels.items():
        if not 0 <= frame < info.nb_frame:
            raise ValueError(f"label frame {frame} outside [0, {info.nb_frame})")
        if lab.shape != cine.shape[:3]:
            raise ValueError(f"labels of frame {frame} have shape {lab.shape}, expected {cine.shape[:3]}")
        if np.setdiff1d(np.unique(lab), list(LABELS)).size:
            raise ValueError(f"labels of frame {frame} have values outside {{0, 1, 2, 3}}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    write_text(folder / "Info.cfg", format_info_cfg(info))
    save_nifti(folder / f"{name}_4d.nii.gz", cine, affine, frame_interval_s)
    for frame in sorted({info.ed, info.es} | set(labels)):
        save_nifti(folder / frame_filename(name, frame), cine[..., frame], affine)
    for frame, lab in sorted(labels.items()):
        save_nifti(folder / frame_filename(name, frame, gt=True), lab.astype(np.uint8), affine)


def find_patient_folders(root) -> list[Path]:
    """Patient folders under ``root`` (``root`` itself if it is one): folders holding ``Info.cfg``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("folder not found", root)
    found = {p.parent for name in ("Info.cfg", "info.cfg") for p in root.rglob(name)
             if not any(part.startswith(".") for part in p.relative_to(root).parts)}
    if not found:
        raise InputError("no patient folders (folders with an Info.cfg) found", root)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
