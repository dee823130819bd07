"""Read a short-axis cine from a folder of classic single-frame DICOM files into a 4D NIfTI-style cine.

The result is a :class:`deepstrain_jax.data.nifti.NiftiData` laid out exactly as ``dcm2niix`` writes the same
series (same array order, same flips, same affine up to the precision of the DICOM position fields), so that a
cine read here and one converted by ``dcm2niix`` are interchangeable:

* ``array[i, j, k, t]`` is the pixel in DICOM column ``i`` and row ``Rows - 1 - j`` of the image at slice ``k``,
  phase ``t``: the in-plane axes are (column, row) with the row axis reversed (``dcm2niix`` flips it so that the
  image is not upside down in viewers that ignore the affine).
* Slices are sorted by the projection of ImagePositionPatient on the slice normal ``n = r x c`` (``r``, ``c`` the
  row and column direction cosines of ImageOrientationPatient), ascending: slice ``k + 1`` lies ``+dz`` along
  ``n`` from slice ``k``. File names, InstanceNumber and SliceLocation never decide the order.
* Phases are sorted by TriggerTime at each slice (phase ``t`` is the ``t``-th trigger time of every slice; the
  values may differ slightly between slices, acquired in different heartbeats). Only when some image of the
  series has no TriggerTime are the phases sorted by InstanceNumber instead.
* ``affine`` maps voxel indices to NIfTI world millimetres (RAS+). DICOM patient coordinates are LPS, so the x
  and y rows of the DICOM geometry are negated. With ``P0`` the ImagePositionPatient of slice 0, PixelSpacing
  ``(row spacing, column spacing)`` and ``dz`` the mean distance between neighbouring slice positions along
  ``n``::

      affine[:3, 0] = RAS(r) * column spacing        # i: along a row, one column to the next
      affine[:3, 1] = -RAS(c) * row spacing          # j: up the rows (reversed row axis)
      affine[:3, 2] = RAS(n) * dz                    # k: along the slice normal
      affine[:3, 3] = RAS(P0 + (Rows - 1) * row spacing * c)

  Slice 0 sits exactly on its ImagePositionPatient; every other slice is on the straight stack along the normal
  (positions that stray from it by more than 5% of a pixel are refused: a sheared stack has no NIfTI affine).
  ``dcm2niix`` anchors its stack on the first slice in its own (InstanceNumber) order instead, spaced by the
  distance between its first two slices: the two affines differ by the rounding of the position fields (0.002
  mm for a 10-slice stack whose positions are written with 3 decimals).
* ``spacing_mm`` is ``(column spacing, row spacing, dz)``: the slice spacing comes from the positions, never
  from SliceThickness or SpacingBetweenSlices.
* ``frame_interval_s``: the mean step between consecutive trigger times of each slice (``(last - first) /
  (T - 1)``), median over the slices, in seconds. The mean step is used rather than the median of single
  differences because scanners round trigger times to whole milliseconds (steps of 31 and 32 ms for a true
  31.6 ms); the median over slices keeps one odd slice from pulling the value. Without trigger times:
  NominalInterval / CardiacNumberOfImages, then 60 / HeartRate / T; ``None`` when none of these is known.
* Values: RescaleSlope / RescaleIntercept are applied when present and not (1, 0), giving float32; otherwise the
  stored integer type is kept (int16 or uint16 for MR).

Which files are read: every file up to three folders below the given one (hidden entries skipped) that carries
the ``DICM`` magic at byte 128 (files without the DICOM preamble, ACR-NEMA style, are skipped as non-DICOM).
DICOM files without an image (no Rows/Columns: DICOMDIR, structured reports, presentation states) are skipped.
Images are grouped by SeriesInstanceUID; a series qualifies as a cine when it has at least two slice positions
and at least two images at one position. Exactly one qualifying series is read: with none, or with several
(unless ``series_uid`` picks one), :class:`deepstrain_jax.errors.InputError` lists the series found. Other
problems of the chosen series are refused as well, in one line naming the folder or the file: mixed matrix
sizes, orientations or pixel spacings; a slice with fewer or more phases than the others; two images at the
same position and trigger time; non-uniform slice spacing (more than 1% from the mean: a gap left by a missing
slice is refused, not filled); multi-frame (enhanced) DICOM files; pixel data that cannot be decoded.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.multival import MultiValue

from deepstrain_jax.data.dicom_files import MAX_DEPTH, is_dicom_file, is_dicom_folder, walk_files  # noqa: F401
from deepstrain_jax.data.nifti import NiftiData, save_nifti
from deepstrain_jax.errors import InputError

_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_POSITION_TOL_MM = 0.01  # images closer than this along the normal are at the same slice position
_ORIENTATION_TOL = 1e-4  # direction cosines equal within this (dcm2niix's tolerance)
_SHEAR_TOL_PIXELS = 0.05  # in-plane offset of a slice from the straight stack, in pixels
_SPACING_TOL = 0.01  # relative deviation of a slice gap from the mean gap
_TIME_TOL_MS = 1e-3  # trigger times equal within this are the same phase
_HEADER_TAGS = ["SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "Rows", "Columns", "NumberOfFrames",
                "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "TriggerTime",
                "InstanceNumber", "RescaleSlope", "RescaleIntercept", "NominalInterval", "CardiacNumberOfImages",
                "HeartRate", "SamplesPerPixel"]


@dataclasses.dataclass
class _Header:
    """The fields of one DICOM image that the reader uses (``None`` when absent or unparsable)."""

    path: str
    series_uid: str
    description: str
    rows: int
    columns: int
    n_frames: int
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    trigger_ms: float | None
    instance: int | None
    slope: float | None
    intercept: float | None
    nominal_interval_ms: float | None
    cardiac_images: int | None
    heart_rate: float | None
    samples_per_pixel: int


def _number(ds, keyword: str, count: int = 1):
    """``ds.keyword`` as float (``count`` 1) or a float array of ``count`` values; ``None`` if absent or bad."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        values = [float(v) for v in value] if isinstance(value, (list, tuple, MultiValue)) \
            else [float(value)]
    except (TypeError, ValueError):
        return None
    if len(values) != count or not np.all(np.isfinite(values)):
        return None
    return values[0] if count == 1 else np.asarray(values, dtype=np.float64)


def _read_header(path: str) -> _Header | None:
    """The header of one DICOM file, or ``None`` if it holds no image. Raises InputError if unreadable."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, ValueError, struct.error...
        raise InputError(f"unreadable DICOM header ({type(e).__name__}: {' '.join(str(e).split())})", path) \
            from None
    rows, columns = _number(ds, "Rows"), _number(ds, "Columns")
    if not rows or not columns:
        return None
    spacing = _number(ds, "PixelSpacing", 2)
    n_frames = _number(ds, "NumberOfFrames")
    instance = _number(ds, "InstanceNumber")
    cardiac = _number(ds, "CardiacNumberOfImages")
    return _Header(
        path=path, series_uid=str(ds.get("SeriesInstanceUID", "")), description=str(ds.get("SeriesDescription", "")),
        rows=int(rows), columns=int(columns), n_frames=int(n_frames) if n_frames else 1,
        ipp=_number(ds, "ImagePositionPatient", 3), iop=_number(ds, "ImageOrientationPatient", 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        trigger_ms=_number(ds, "TriggerTime"), instance=None if instance is None else int(instance),
        slope=_number(ds, "RescaleSlope"), intercept=_number(ds, "RescaleIntercept"),
        nominal_interval_ms=_number(ds, "NominalInterval"), cardiac_images=int(cardiac) if cardiac else None,
        heart_rate=_number(ds, "HeartRate"), samples_per_pixel=int(_number(ds, "SamplesPerPixel") or 1))


def _series_shape(headers: list[_Header]) -> tuple[int, int]:
    """(number of distinct positions, most images at one position) of a series, for choosing the cine."""
    positions = collections.Counter(
        None if h.ipp is None else tuple(np.round(h.ipp / _POSITION_TOL_MM).astype(np.int64)) for h in headers)
    return len(positions), max(positions.values())


def _series_label(uid: str, headers: list[_Header]) -> str:
    n_pos, n_phase = _series_shape(headers)
    return (f"'{headers[0].description}' (SeriesInstanceUID {uid or '?'}, {len(headers)} images, "
            f"{n_pos} slice position(s) x at most {n_phase} image(s) each)")


def _choose_series(folder: str, headers: list[_Header], series_uid: str | None) -> list[_Header]:
    series: dict[str, list[_Header]] = {}
    for h in headers:
        series.setdefault(h.series_uid, []).append(h)
    if series_uid is not None:
        if series_uid not in series:
            found = "; ".join(_series_label(uid, hs) for uid, hs in series.items())
            raise InputError(f"no series with SeriesInstanceUID {series_uid} (found: {found})", folder)
        chosen = series[series_uid]
        n_pos, n_phase = _series_shape(chosen)
        if n_pos < 2 or n_phase < 2:
            raise InputError(f"series {_series_label(series_uid, chosen)} is not a cine: it needs several slice "
                             f"positions x several phases", folder)
        return chosen
    cines = {uid: hs for uid, hs in series.items() if min(_series_shape(hs)) >= 2}
    if not cines:
        found = "; ".join(_series_label(uid, hs) for uid, hs in series.items())
        multi = sum(h.n_frames > 1 for h in headers)
        hint = f"; {multi} multi-frame (enhanced) DICOM files, which are not supported" if multi else ""
        raise InputError(f"no cine series (several slice positions x several phases; one position or one phase "
                         f"only is not a short-axis cine) among: {found}{hint}", folder)
    if len(cines) > 1:
        found = "; ".join(_series_label(uid, hs) for uid, hs in cines.items())
        raise InputError(f"{len(cines)} cine series, expected one: {found}; choose one by its SeriesInstanceUID "
                         f"or give each series its own folder", folder)
    return next(iter(cines.values()))


def _check_uniform(headers: list[_Header]) -> None:
    """Refuse a series whose images disagree on matrix size, orientation or pixel spacing (the file named is one
    that differs from the most common value), or that holds multi-frame, colour or geometry-less images."""
    for h in headers:
        if h.n_frames > 1:
            raise InputError(f"multi-frame (enhanced) DICOM with {h.n_frames} frames is not supported", h.path)
        if h.samples_per_pixel != 1:
            raise InputError(f"{h.samples_per_pixel} samples per pixel (colour image): expected grey levels", h.path)
        if h.ipp is None or h.iop is None:
            raise InputError("no valid ImagePositionPatient / ImageOrientationPatient: the slice geometry is "
                             "unknown", h.path)
        if h.pixel_spacing is None or min(h.pixel_spacing) <= 0:
            raise InputError("no valid PixelSpacing", h.path)

    def usual(key):
        counts = collections.Counter(key(h) for h in headers)
        value = counts.most_common(1)[0][0]
        return value, next(h for h in headers if key(h) == value)

    size, ref = usual(lambda h: (h.rows, h.columns))
    for h in headers:
        if (h.rows, h.columns) != size:
            raise InputError(f"mixed matrix sizes in the series: {h.rows}x{h.columns} (Rows x Columns) here, "
                             f"{size[0]}x{size[1]} in {os.path.basename(ref.path)} and most others", h.path)
    _, ref = usual(lambda h: tuple(np.round(h.iop / _ORIENTATION_TOL).astype(np.int64)))
    for h in headers:
        if np.max(np.abs(h.iop - ref.iop)) > _ORIENTATION_TOL:
            raise InputError(f"mixed orientations in the series: ImageOrientationPatient {h.iop.tolist()} here, "
                             f"{ref.iop.tolist()} in {os.path.basename(ref.path)} and most others", h.path)
    _, ref = usual(lambda h: h.pixel_spacing)
    for h in headers:
        if not np.allclose(h.pixel_spacing, ref.pixel_spacing, rtol=1e-4, atol=0):
            raise InputError(f"mixed pixel spacings in the series: {list(h.pixel_spacing)} mm here, "
                             f"{list(ref.pixel_spacing)} mm in {os.path.basename(ref.path)} and most others", h.path)


def _directions(header: _Header) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = header.iop[:3], header.iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise InputError(f"ImageOrientationPatient {header.iop.tolist()} is not two orthogonal unit vectors",
                         header.path)
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    n = np.cross(r, c)
    return r, c, n / np.linalg.norm(n)


def _group_slices(folder: str, headers: list[_Header], normal: np.ndarray) -> list[list[_Header]]:
    """Group the images by slice position along ``normal`` (ascending) and sort each slice's phases."""
    by_position = sorted(headers, key=lambda h: float(h.ipp @ normal))
    slices: list[list[_Header]] = []
    for h in by_position:
        if slices and float(h.ipp @ normal) - float(slices[-1][0].ipp @ normal) <= _POSITION_TOL_MM:
            slices[-1].append(h)
        else:
            slices.append([h])
    use_trigger = all(h.trigger_ms is not None for h in headers)
    if not use_trigger and any(h.instance is None for h in headers):
        missing = next(h for h in headers if h.trigger_ms is None and h.instance is None)
        raise InputError("neither TriggerTime nor InstanceNumber: the cardiac phase order is unknown", missing.path)
    key_name = "TriggerTime" if use_trigger else "InstanceNumber"
    for k, images in enumerate(slices):
        images.sort(key=lambda h: h.trigger_ms if use_trigger else h.instance)
        for a, b in zip(images, images[1:]):
            same = (abs(a.trigger_ms - b.trigger_ms) <= _TIME_TOL_MS) if use_trigger else a.instance == b.instance
            if same:
                value = a.trigger_ms if use_trigger else a.instance
                raise InputError(f"duplicate image: same slice position and {key_name} {value:g} as "
                                 f"{os.path.basename(a.path)} (slice {k + 1} of {len(slices)})", b.path)
    counts = collections.Counter(len(s) for s in slices)
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        odd = [k for k, s in enumerate(slices) if len(s) != usual]
        k = odd[0]
        where = f"{float(slices[k][0].ipp @ normal):.3f} mm along the slice normal"
        more = f" (and {len(odd) - 1} other slices)" if len(odd) > 1 else ""
        raise InputError(f"slice {k + 1} of {len(slices)} (at {where}) has {len(slices[k])} phases, the other "
                         f"slices {usual}{more}: a missing or extra image", folder)
    return slices


def _stack_spacing(folder: str, slices: list[list[_Header]], normal: np.ndarray, pixel_mm: float) -> float:
    """Mean slice spacing along the normal; refuses non-uniform spacing and sheared stacks."""
    positions = np.array([float(s[0].ipp @ normal) for s in slices])
    gaps = np.diff(positions)
    dz = float((positions[-1] - positions[0]) / (len(positions) - 1))
    worst = int(np.argmax(np.abs(gaps - dz)))
    if abs(gaps[worst] - dz) > _SPACING_TOL * dz:
        raise InputError(f"non-uniform slice spacing: {gaps[worst]:.3f} mm between slices {worst + 1} and "
                         f"{worst + 2} of {len(slices)} (at {positions[worst]:.3f} and {positions[worst + 1]:.3f} mm "
                         f"along the slice normal), mean {dz:.3f} mm (a missing slice? gaps are not filled)", folder)
    origin = slices[0][0].ipp
    for s in slices:
        for h in s:
            offset = h.ipp - origin
            in_plane = float(np.linalg.norm(offset - (offset @ normal) * normal))
            if in_plane > _SHEAR_TOL_PIXELS * pixel_mm:
                raise InputError(f"ImagePositionPatient is {in_plane:.3f} mm off the slice normal through "
                                 f"{os.path.basename(slices[0][0].path)}: a sheared or shifted stack is not "
                                 f"supported", h.path)
    return dz


def _frame_interval_s(slices: list[list[_Header]]) -> float | None:
    n_phases = len(slices[0])
    if all(h.trigger_ms is not None for s in slices for h in s):
        steps = [(s[-1].trigger_ms - s[0].trigger_ms) / (n_phases - 1) for s in slices]
        step = float(np.median(steps))
        if step > 0:
            return step * 1e-3
    first = slices[0][0]
    if first.nominal_interval_ms and first.cardiac_images and first.nominal_interval_ms > 0 \
            and first.cardiac_images > 0:
        return first.nominal_interval_ms / first.cardiac_images * 1e-3
    if first.heart_rate and first.heart_rate > 0:
        return 60.0 / first.heart_rate / n_phases
    return None


def _pixels(header: _Header) -> np.ndarray:
    try:
        ds = pydicom.dcmread(header.path)
        pixels = ds.pixel_array
    except Exception as e:  # missing decoder plug-in, truncated pixel data...
        raise InputError(f"cannot decode the pixel data ({type(e).__name__}: {' '.join(str(e).split())})",
                         header.path) from None
    if pixels.shape != (header.rows, header.columns):
        raise InputError(f"pixel data of shape {pixels.shape}, expected Rows x Columns = "
                         f"{header.rows}x{header.columns}", header.path)
    return pixels


def read_dicom_cine(folder: str | os.PathLike, series_uid: str | None = None) -> NiftiData:
    """Read the short-axis cine of a DICOM folder into the ``dcm2niix`` layout (see the module docstring).

    Args:
      folder: folder of DICOM files (searched up to :data:`MAX_DEPTH` folders below; other files are skipped).
      series_uid: SeriesInstanceUID of the series to read; by default the folder must hold exactly one cine.
    Returns:
      :class:`NiftiData` with ``array`` ``(X, Y, Z, T)`` = (columns, rows reversed, slices, phases), the RAS
      ``affine`` in mm, ``spacing_mm`` (column spacing, row spacing, slice spacing), ``frame_interval_s`` and
      ``path`` = ``folder``.
    Raises:
      InputError: no folder, no DICOM image, no cine series or several, an unreadable file, mixed matrix sizes /
        orientations / pixel spacings, a slice with a different number of phases, duplicate (position, trigger
        time) images, non-uniform slice spacing, a sheared stack, multi-frame files, undecodable pixel data.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError("folder not found" if not os.path.exists(folder) else "not a folder", folder)
    n_files = 0
    dicom_files = []
    for f in walk_files(folder):
        n_files += 1
        if is_dicom_file(f):
            dicom_files.append(f)
    if not dicom_files:
        raise InputError(f"no DICOM file (none of {n_files} files, searched {MAX_DEPTH} folders deep, has the "
                         f"DICM magic)", folder)
    headers = [h for h in (_read_header(f) for f in dicom_files) if h is not None]
    if not headers:
        raise InputError(f"no DICOM image ({len(dicom_files)} DICOM files, none with Rows/Columns)", folder)
    headers = _choose_series(folder, headers, series_uid)
    _check_uniform(headers)
    first = headers[0]
    r, c, n = _directions(first)
    row_mm, col_mm = first.pixel_spacing  # DICOM order: spacing between rows, then between columns
    slices = _group_slices(folder, headers, n)
    dz = _stack_spacing(folder, slices, n, min(row_mm, col_mm))

    n_z, n_t = len(slices), len(slices[0])
    rescale = [(h.slope if h.slope is not None else 1.0, h.intercept if h.intercept is not None else 0.0)
               for s in slices for h in s]
    scaled = any(sl != 1.0 or ic != 0.0 for sl, ic in rescale)
    array = None
    for k, s in enumerate(slices):
        for t, h in enumerate(s):
            pixels = _pixels(h)
            if scaled:
                slope, inter = rescale[k * n_t + t]
                pixels = pixels.astype(np.float32) * np.float32(slope) + np.float32(inter)
            if array is None:
                array = np.empty((first.columns, first.rows, n_z, n_t), dtype=pixels.dtype)
            elif pixels.dtype != array.dtype:
                array = array.astype(np.result_type(array.dtype, pixels.dtype))
            array[:, :, k, t] = pixels.T[:, ::-1]

    affine = np.eye(4)
    affine[:3, 0] = _LPS_TO_RAS * r * col_mm
    affine[:3, 1] = -_LPS_TO_RAS * c * row_mm
    affine[:3, 2] = _LPS_TO_RAS * n * dz
    affine[:3, 3] = _LPS_TO_RAS * (slices[0][0].ipp + (first.rows - 1) * row_mm * c)
    return NiftiData(array=array, affine=affine, spacing_mm=np.array([col_mm, row_mm, dz], dtype=np.float64),
                     frame_interval_s=_frame_interval_s(slices), path=folder)


def write_nifti(data: NiftiData, path: str | os.PathLike) -> None:
    """Write a cine (e.g. from :func:`read_dicom_cine`) as a 4D NIfTI file (``.nii`` or ``.nii.gz``) with its
    affine (qform = sform) and ``pixdim[4]`` = the frame interval in seconds (0 when unknown), atomically.

    Raises:
      ValueError: a bad affine or frame interval (see :func:`deepstrain_jax.data.nifti.to_nifti_image`).
    """
    save_nifti(Path(path), data.array, data.affine, data.frame_interval_s)
