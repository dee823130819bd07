"""Load and save NIfTI volumes and 4D cines with their geometry.

Conventions:

* ``array``: the voxel values in the file's array order, ``(X, Y, Z)`` for a volume and ``(X, Y, Z, T)`` for a
  cine; axes 0 and 1 in-plane, axis 2 the slice axis, axis 3 time. The on-disk dtype is kept when the header
  carries no intensity scaling (``scl_slope`` 0/NaN or 1 with ``scl_inter`` 0); with scaling the values are
  returned as float64 ``slope * stored + inter`` (nibabel's rule).
* ``affine``: the 4x4 voxel-to-world matrix nibabel selects (sform if its code is > 0, else qform, else a
  diagonal from the zooms), in mm: ``x_world = affine[:3, :3] @ index + affine[:3, 3]``.
* ``spacing_mm``: the header zooms of the three spatial axes, in mm (``xyzt_units`` metre and micron are
  converted; unknown spatial units are taken as mm, the NIfTI default in practice). A header whose zooms
  disagree with the affine's column norms by more than 1 % is never trusted silently: ``warnings`` says so, and
  with ``geometry="checked"`` (what `deepstrain analyze` reads with) an affine with unit columns (no voxel
  scaling, as the sform of the original ACDC files) is rescaled to pixdim, while any other affine wins over
  pixdim (it is what places the voxels in the scanner for every viewer and tool).
* ``frame_interval_s``: ``pixdim[4]`` converted to seconds with the time unit of ``xyzt_units`` (``sec``,
  ``msec``, ``usec``); ``None`` when the file has no time axis, ``pixdim[4]`` is not a positive finite number,
  or the time unit is unknown or not a time (an unknown unit is ambiguous between ms and s, and ACDC-style
  files store values that should not be trusted: callers then fall back on their own frame interval).

Every problem with a file (missing, not NIfTI, truncated, wrong number of dimensions, NaN or Inf voxels,
non-positive zooms) raises :class:`deepstrain_jax.errors.InputError` naming the file. Writes are atomic
(:mod:`deepstrain_jax.io.atomic`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from deepstrain_jax.errors import InputError
from deepstrain_jax.io.atomic import atomic_path

PIXDIM_TOLERANCE = 0.01  # relative disagreement between pixdim[1:4] and the affine's column norms
_TIME_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_SPACE_TO_MM = {"meter": 1e3, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


@dataclasses.dataclass(frozen=True)
class NiftiData:
    """A loaded NIfTI file.

    Attributes:
      array: ``(X, Y, Z)`` or ``(X, Y, Z, T)`` voxel values (see the module docstring for the dtype rule).
      affine: ``(4, 4)`` float64 voxel-to-world matrix in mm.
      spacing_mm: ``(3,)`` float64 spatial voxel size in mm per array axis.
      frame_interval_s: time between frames in seconds, or ``None`` when unknown.
      path: the file it came from.
      warnings: what the reader noticed and how it resolved it (e.g. pixdim against the affine).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing_mm: np.ndarray
    frame_interval_s: float | None
    path: str
    warnings: tuple[str, ...] = ()


def _one_line(e: Exception) -> str:
    # The CLI prints InputError as one line; some nibabel messages span several.
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def _frame_interval_s(header, ndim: int) -> float | None:
    if ndim < 4:
        return None
    dt = float(header["pixdim"][4])
    _, time_unit = header.get_xyzt_units()
    if not np.isfinite(dt) or dt <= 0 or time_unit not in _TIME_TO_S:
        return None
    return dt * _TIME_TO_S[time_unit]


def load_nifti(path: str | os.PathLike, ndim: int | None = None, allow_nonfinite: bool = False,
               geometry: str = "pixdim") -> NiftiData:
    """Load a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) into memory with its geometry.

    Args:
      path: the file.
      ndim: required number of array dimensions (3 or 4), or ``None`` for either. Trailing axes of size 1
        beyond ``ndim`` are dropped (a 3D volume is often stored as ``(X, Y, Z, 1)``).
      allow_nonfinite: accept NaN/Inf voxels (floating-point files only); by default they raise.
      geometry: when pixdim and the affine disagree by more than 1 %: ``"pixdim"`` keeps pixdim (the training
        readers' convention) and ``"checked"`` resolves it as the analysis does (module docstring); either way
        ``warnings`` says so.
    Returns:
      :class:`NiftiData`.
    Raises:
      InputError: missing file, not a NIfTI image, truncated or unreadable data, wrong number of dimensions,
        non-positive or non-finite spatial zooms, NaN/Inf voxels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError("file not found", path)
    try:
        img = nib.load(path, mmap=False)
    except Exception as e:  # nibabel raises ImageFileError, gzip/zlib errors, OSError, ValueError...
        raise InputError(f"not a readable NIfTI image ({_one_line(e)})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as e:  # a truncated .nii.gz fails here, not at nib.load
        raise InputError(f"truncated or corrupt image data ({_one_line(e)})", path) from None
    array = np.asarray(array)
    while ndim is not None and array.ndim > ndim and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or (ndim is not None and array.ndim != ndim):
        want = f"{ndim}D" if ndim is not None else "3D or 4D"
        raise InputError(f"expected a {want} image, got shape {array.shape}", path)
    if np.issubdtype(array.dtype, np.floating) and not allow_nonfinite and not np.all(np.isfinite(array)):
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{n_bad} voxels are NaN or Inf", path)
    header = img.header
    space_unit, _ = header.get_xyzt_units()
    to_mm = _SPACE_TO_MM.get(space_unit, 1.0)
    spacing = np.asarray(header.get_zooms()[:3], dtype=np.float64) * to_mm
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spatial voxel sizes (pixdim[1:4]) must be positive, got {spacing.tolist()}", path)
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, :] *= to_mm
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) == 0:
        raise InputError("the voxel-to-world affine is singular or not finite", path)
    spacing, affine, warnings = _resolve_geometry(spacing, affine, geometry)
    return NiftiData(array=array, affine=affine, spacing_mm=spacing,
                     frame_interval_s=_frame_interval_s(header, array.ndim), path=path, warnings=tuple(warnings))


def _resolve_geometry(spacing, affine, geometry: str):
    """``(spacing, affine, warnings)`` when pixdim and the affine's column norms disagree (module docstring)."""
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.any(np.abs(spacing - norms) > PIXDIM_TOLERANCE * norms):
        return spacing, affine, []
    what = f"pixdim voxel size {_mm(spacing)} mm disagrees with the affine's {_mm(norms)} mm (more than " \
           f"{100 * PIXDIM_TOLERANCE:g}%)"
    if geometry == "pixdim":
        return spacing, affine, [f"{what}: pixdim's is used"]
    if np.allclose(norms, 1.0, atol=1e-3):
        # An affine without voxel scaling (unit columns: e.g. the sform of the original ACDC files) only orients
        # the grid; pixdim carries the voxel size. The affine is rescaled to it.
        fixed = affine.copy()
        fixed[:3, :3] = affine[:3, :3] / norms * spacing
        return spacing, fixed, [f"{what}: the affine has no voxel scaling (unit columns), so pixdim's is used and "
                                "the affine rescaled"]
    # Otherwise the affine places the voxels in the scanner for every viewer and tool; pixdim is a copy that
    # tools rewrite. Trust the affine, and say so.
    return norms, affine, [f"{what}: the affine's is used"]


def _mm(v) -> str:
    return " x ".join(f"{x:.4g}" for x in v)


def load_cine(path: str | os.PathLike, geometry: str = "pixdim") -> NiftiData:
    """Load a 4D cine ``(X, Y, Z, T)``: :func:`load_nifti` with ``ndim=4``."""
    return load_nifti(path, ndim=4, geometry=geometry)


def load_volume(path: str | os.PathLike) -> NiftiData:
    """Load a 3D volume ``(X, Y, Z)`` (image or label map): :func:`load_nifti` with ``ndim=3``."""
    return load_nifti(path, ndim=3)


def _check_geometry(affine, frame_interval_s) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or np.linalg.det(affine[:3, :3]) == 0:
        raise ValueError(f"affine must be a finite invertible 4x4 matrix, got {affine!r}")
    if frame_interval_s is not None and not (np.isfinite(frame_interval_s) and frame_interval_s > 0):
        raise ValueError(f"frame_interval_s must be positive, got {frame_interval_s}")
    return affine


def to_nifti_image(array, affine, frame_interval_s: float | None = None):
    """Build a ``nibabel.Nifti1Image`` with qform = sform = ``affine`` (code 1, scanner) and units mm / s.

    The array is stored with its own dtype and no intensity scaling. ``pixdim[1:4]`` are the column norms of
    ``affine[:3, :3]``; for a 4D array ``pixdim[4] = frame_interval_s`` (seconds, ``xyzt_units`` = mm, sec).
    NIfTI stores the affine in float32: pass a float32-representable affine for a bit-exact round trip.

    Args:
      array: ``(X, Y, Z)`` or ``(X, Y, Z, T)`` numeric array.
      affine: ``(4, 4)`` voxel-to-world matrix in mm, invertible.
      frame_interval_s: positive frame interval for a 4D array (``None`` writes ``pixdim[4] = 0``).
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"array must be 3D or 4D, got shape {array.shape}")
    affine = _check_geometry(affine, frame_interval_s)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError("array contains NaN or Inf")
    img = nib.Nifti1Image(array, affine)
    _set_geometry(img, array.dtype, array.shape, affine, frame_interval_s)
    return img


def _set_geometry(img, dtype, shape, affine, frame_interval_s) -> None:
    """The header rules of :func:`to_nifti_image` (and :class:`FrameWriter`): stored ``dtype`` and ``shape``,
    qform = sform = ``affine`` (code 1), units mm / s, zooms from the affine's column norms, the frame interval
    as ``pixdim[4]`` (0 when unknown), 1 for any further axis, no intensity scaling."""
    header = img.header
    header.set_data_dtype(dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    header.set_data_shape(shape)
    header.set_xyzt_units("mm", "sec")
    zooms = list(np.linalg.norm(affine[:3, :3], axis=0))
    if len(shape) >= 4:
        zooms.append(float(frame_interval_s) if frame_interval_s is not None else 0.0)
    zooms += [1.0] * (len(shape) - 4)
    header.set_zooms(zooms)
    header["scl_slope"] = 1.0
    header["scl_inter"] = 0.0


GZIP_LEVEL = 1  # ISA-L's fastest full level: the ratio of zlib level 1 (nibabel's default) at ~20x its speed


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike):
    """A binary file object writing ``path``: gzip-compressed when it ends with ``.gz``, else plain.

    Compression is ISA-L's (:mod:`isal.igzip`, level :data:`GZIP_LEVEL`): standard gzip that every reader
    (nibabel, ITK, FSL, ``gunzip``) opens, written about 20x faster than with :mod:`zlib` at the same size on
    float maps. The gzip header holds no file name and no time stamp, so that the same voxels give the same bytes.
    """
    with open(path, "wb") as raw:
        if os.fspath(path).endswith(".gz"):
            with igzip.IGzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0) as f:
                yield f
        else:
            yield raw


def save_nifti(path: str | os.PathLike, array, affine, frame_interval_s: float | None = None) -> None:
    """Write ``array`` to ``path`` (``.nii`` or ``.nii.gz``, :func:`open_for_writing`) atomically; see
    :func:`to_nifti_image`."""
    img = to_nifti_image(array, affine, frame_interval_s)
    with atomic_path(path) as tmp, open_for_writing(tmp) as f:
        f.write(img.to_bytes())


class FrameWriter:
    """Write a NIfTI image one 3D block at a time, so that it never has to be whole in memory.

    NIfTI stores voxels in Fortran order, so the blocks of an ``(X, Y, Z, T)`` image are its frames in turn and
    those of an ``(X, Y, Z, T, C)`` image its frames of component 0, then of component 1, ... Give
    :meth:`write` exactly that many ``(X, Y, Z)`` blocks in that order. The file (``.nii`` or ``.nii.gz``,
    :func:`open_for_writing`'s compression, the same header as :func:`to_nifti_image`) is written to a temporary
    name and renamed into place on a clean exit with every block written; otherwise it is removed.

    Args:
      path: output file. shape: full image shape (4 or 5 axes). dtype: stored voxel type.
      affine, frame_interval_s: as :func:`to_nifti_image`.
      intent: ``(code, name)`` for the header's intent, or ``None``; descrip: the header's description (at most
        79 characters). allow_nan: accept NaN voxels (maps that are undefined outside a mask); Inf never.
    """

    def __init__(self, path, shape, dtype, affine, frame_interval_s: float | None = None, *,
                 intent: tuple[int, str] | None = None, descrip: str | None = None, allow_nan: bool = False):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (4, 5):
            raise ValueError(f"shape must have 4 or 5 axes, got {self.shape}")
        self.dtype = np.dtype(dtype)
        affine = _check_geometry(affine, frame_interval_s)
        img = nib.Nifti1Image(np.zeros((1,) * len(self.shape), self.dtype), affine)
        _set_geometry(img, self.dtype, self.shape, affine, frame_interval_s)
        header = img.header
        if intent is not None:
            header.set_intent(intent[0], name=intent[1])
        if descrip is not None:
            header["descrip"] = descrip.encode()
        self.header = header
        self.allow_nan = bool(allow_nan)
        self.n_blocks = int(np.prod(self.shape[3:]))
        self.written = 0

    def __enter__(self) -> "FrameWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._opened = open_for_writing(tmp)
        self._file = self._opened.__enter__()
        self.header.write_to(self._file)
        return self

    def write(self, block) -> None:
        """Append the next ``(X, Y, Z)`` block (cast to the stored type)."""
        block = np.asarray(block)
        if block.shape != self.shape[:3]:
            raise ValueError(f"{self.path.name}: block of shape {block.shape}, expected {self.shape[:3]}")
        if self.written >= self.n_blocks:
            raise ValueError(f"{self.path.name}: more than {self.n_blocks} blocks")
        bad = ~np.isfinite(block) & ~(np.isnan(block) & self.allow_nan) if np.issubdtype(block.dtype, np.floating) \
            else None
        if bad is not None and bad.any():
            raise ValueError(f"{self.path.name}: block {self.written} contains " + ("Inf" if self.allow_nan else
                                                                                     "NaN or Inf"))
        data = block.astype(self.dtype.newbyteorder(self.header.endianness), copy=False)
        self._file.write(data.tobytes(order="F"))
        self.written += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._opened.__exit__(None, None, None)
        if exc_type is None and self.written != self.n_blocks:
            err = ValueError(f"{self.path.name}: {self.written} of {self.n_blocks} blocks written")
            self._atomic.__exit__(ValueError, err, None)  # removes the temporary file
            raise err
        self._atomic.__exit__(exc_type, exc, tb)  # renames on success, removes on error
        return False
