"""``analyze()``: a cine in, segmentations, motion, strain, volumes, QC and a report out.

The data flow (DESIGN.md): read and check the cine (:mod:`deepstrain_jax.analysis.inputs`) -> put the slice axis
last -> resample to the network grid (1.25 mm in-plane, 16 slices spanning the stack,
:mod:`deepstrain_jax.data.preprocessing`) -> centre with VCN on the ED frame and crop 128 x 128 (padding where the
window overhangs the field of view) -> CarSON on every slice of every frame (labelled islands away from the heart
removed) -> slice order base -> apex (given, recorded by a phantom sidecar, or detected from the segmentation:
the heart's cross-section shrinks towards the apex) -> CarMEN on (ED, t) pairs for every frame and on (ES, ED)
for the cycle-closure check -> Green-Lagrange strain in mm/mm on the ED grid, radial / circumferential /
longitudinal about the fitted LV centre line, global curves, strain rate, ESS / SRs / SRe, AHA segments
(:mod:`deepstrain_jax.ops.strain`, :mod:`deepstrain_jax.cardiac`) -> volumes
over the cycle from the segmentation on the native grid -> voxel outputs back on the native grid and affine.

Native-grid outputs: the segmentation is the arg-max of the CarSON class probabilities interpolated (linear)
back to the native grid; the displacement is interpolated linearly and given in **world (scanner) mm**, the
frame of the NIfTI affine (``u_world = R u_axes`` with ``R`` the affine's direction cosines), which is what ITK,
ANTs and viewers expect of a displacement field; strain maps are interpolated within the ED myocardium only
(normalised interpolation, so the values at its edge are not pulled towards the zeros outside).

Frames keep the cine's order in every output; strain indices are computed on the cycle started at ED (times
are from ED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from deepstrain_jax.analysis import grids
from deepstrain_jax.analysis import inputs as inp
from deepstrain_jax.analysis import qc
from deepstrain_jax.analysis.networks import Networks, check_networks
from deepstrain_jax.data import preprocessing as pp
from deepstrain_jax.data.subjects import make_vcn_input, resample_window
from deepstrain_jax.errors import InputError, check_type

SLICE_ORDERS = ("auto", "base_to_apex", "apex_to_base")
DISPLACEMENT_GRIDS = ("network", "native", "none")
CENTRES = ("auto", "vcn", "fov")
DEFAULT_CROP = 128  # in-plane size of the network crop of the shipped and the original networks


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """How :func:`analyze` reads and processes a cine.

    Attributes:
      ed: ED frame, 0-based (default: ``Info.cfg``, else frame 0).
      es: ES frame, 0-based (default: ``Info.cfg`` for an ACDC folder, else the frame of smallest LV volume).
      frame_interval_s: seconds between frames (default: the NIfTI header's, else from ``heart_rate_bpm``).
      heart_rate_bpm: beats per minute, when the header has no frame interval: ``dt = 60 / (HR T)`` (the cine
        covers one cycle).
      slice_order: ``"auto"`` (a phantom sidecar's record, else detected), ``"base_to_apex"`` or ``"apex_to_base"``.
      centre: ``"vcn"`` (the centring network on ED), ``"fov"`` (the field-of-view centre, as the original's
        ``test.py``) or ``"auto"`` (VCN, or the field of view in legacy mode).
      legacy: the original's choices where they differ: dipy-style corner-aligned resampling, field-of-view
        centring, and the original's strain numbers added to the results (``legacy_strain``).
      inplane_mm: in-plane voxel size of the network grid.
      displacement: the grid of ``displacement.nii.gz``: ``"network"`` (default: the 1.25 mm network grid the
        motion was estimated on, with its own affine; 80 MB for 30 frames), ``"native"`` (the input's grid:
        large, 0.45 GB for a 512 x 512 x 20 x 30 cine) or ``"none"`` (not written).
      itk_displacement: also write ``displacement_itk/frame_TTT.nii.gz``, one 3D displacement field per frame in
        the ITK convention (LPS components) that ITK, ANTs and Slicer load as a transform, on the grid of
        ``displacement`` (the network grid when that is ``"none"``).
      bullseye_limits_pct: ``((direction, lo, hi), ...)`` colour limits (%) of the strain bull's-eyes, replacing
        those of :data:`deepstrain_jax.report.plots.STRAIN_LIMITS_PCT` for the directions given.
    """

    ed: int | None = None
    es: int | None = None
    frame_interval_s: float | None = None
    heart_rate_bpm: float | None = None
    slice_order: str = "auto"
    centre: str = "auto"
    legacy: bool = False
    inplane_mm: float = 1.25
    displacement: str = "network"
    itk_displacement: bool = False
    bullseye_limits_pct: tuple = ()

    def __post_init__(self):
        for name in ("ed", "es"):
            check_type("AnalysisOptions", name, getattr(self, name), (int, np.integer, type(None)),
                       "a 0-based frame index (int) or None")
        for name in ("frame_interval_s", "heart_rate_bpm"):
            check_type("AnalysisOptions", name, getattr(self, name), (int, float, np.number, type(None)),
                       "a positive number or None")
        check_type("AnalysisOptions", "inplane_mm", self.inplane_mm, (int, float, np.number), "a positive number")
        check_type("AnalysisOptions", "legacy", self.legacy, (bool, np.bool_), "True or False")
        check_type("AnalysisOptions", "itk_displacement", self.itk_displacement, (bool, np.bool_), "True or False")
        for name, allowed in (("slice_order", SLICE_ORDERS), ("centre", CENTRES),
                              ("displacement", DISPLACEMENT_GRIDS)):
            check_type("AnalysisOptions", name, getattr(self, name), (str,), f"one of {allowed}")
        if self.slice_order not in SLICE_ORDERS:
            raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {self.slice_order!r}")
        if self.centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES}, got {self.centre!r}")
        for item in self.bullseye_limits_pct:
            if (not isinstance(item, (tuple, list)) or len(item) != 3
                    or item[0] not in ("radial", "circumferential", "longitudinal")
                    or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in item[1:]) or item[1] >= item[2]):
                raise ValueError(f"bullseye_limits_pct entries must be (direction, lo, hi) with lo < hi, got {item!r}")
        if self.displacement not in DISPLACEMENT_GRIDS:
            raise ValueError(f"displacement must be one of {DISPLACEMENT_GRIDS}, got {self.displacement!r}")
        for name in ("frame_interval_s", "heart_rate_bpm", "inplane_mm"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        for name in ("ed", "es"):
            v = getattr(self, name)
            if v is not None and int(v) < 0:
                raise ValueError(f"{name} must be a 0-based frame index >= 0, got {v}")

    @property
    def use_vcn(self) -> bool:
        return self.centre == "vcn" or (self.centre == "auto" and not self.legacy)


@dataclasses.dataclass
class NetworkGrid:
    """What the networks saw and produced, on the network grid (base -> apex, frames in cine order).

    Attributes:
      image: ``(T, N, N, Z)`` float32 resampled, cropped intensities (before z-scoring).
      segmentation: ``(T, N, N, Z)`` uint8 CarSON labels.
      u_vox: ``(T, N, N, Z, 3)`` float32 CarMEN displacement ED -> t, network voxels (``u[ed] = 0``).
      spacing_mm: ``(3,)`` voxel size; affine: ``(4, 4)`` voxel-to-world of this grid.
      strain: :class:`deepstrain_jax.ops.strain.CardiacStrain` (per-voxel components and global curves).
      aha: ``(N, N, Z)`` int32 AHA segments of the ED myocardium, or ``None`` when they could not be placed.
      det_f: ``(T, N, N, Z)`` float32 Jacobian determinant of the motion.
      resampling, crop: the maps from the (slice-last) native grid; slices_reversed: whether z was flipped.
    """

    image: np.ndarray
    segmentation: np.ndarray
    u_vox: np.ndarray
    spacing_mm: np.ndarray
    affine: np.ndarray
    strain: object
    aha: np.ndarray | None
    det_f: np.ndarray
    resampling: pp.Resampling
    crop: pp.Crop
    slices_reversed: bool


@dataclasses.dataclass
class AnalysisResult:
    """Everything :func:`analyze` computed for one subject.

    Attributes:
      name: subject name.
      results: the ``results.json`` content (see :mod:`deepstrain_jax.analysis.results`).
      affine: ``(4, 4)`` affine of the input cine; frame_interval_s: seconds or ``None``.
      segmentation: ``(X, Y, Z, T)`` uint8 labels on the input grid (the input file's axis order).
      native: :class:`deepstrain_jax.analysis.grids.NativeMaps`, the displacement and strain on the input grid
        frame by frame (``native.displacement_frame(t)``, ``native.strain_frame(t)``): what the writers use, so
        memory does not grow with frames x image size.
      grid: :class:`NetworkGrid`.
      run: how this result was made: ``command`` (the process's command line), ``started_utc`` (ISO 8601),
        ``seconds`` (reading to results, before writing); written as ``run.json`` beside ``results.json``.

    ``displacement_mm`` and ``strain`` (below) build the whole arrays on first use.
    """

    name: str
    results: dict
    affine: np.ndarray
    frame_interval_s: float | None
    segmentation: np.ndarray
    native: grids.NativeMaps
    grid: NetworkGrid
    run: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def displacement_mm(self) -> np.ndarray:
        """``(X, Y, Z, T, 3)`` float32 displacement ED -> t in world mm on the input grid (built on first use)."""
        return self.native.displacement()

    @functools.cached_property
    def strain(self) -> dict:
        """``{"radial", "circumferential", "longitudinal"}`` -> ``(X, Y, Z, T)`` float32 Green-Lagrange strain
        (mm/mm) on the input grid, within the ED myocardium (NaN elsewhere); built on first use."""
        return self.native.strain()

    def write(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the subject's output folder (all or nothing); see :mod:`deepstrain_jax.analysis.outputs`."""
        from deepstrain_jax.analysis.outputs import write_subject

        return write_subject(self, out_dir, overwrite=overwrite)


IMPLAUSIBLE_HR_BPM = (30.0, 200.0)  # heart rates outside this range mean the header's frame interval is wrong


def _frame_interval(options: AnalysisOptions, cine: inp.CineInput, t: int) -> tuple[float | None, str | None,
                                                                                     str | None, list[str]]:
    """``(dt, source, note, warnings)``: the option, else the given heart rate (it wins over the header), else
    the header's interval when the heart rate it implies for one cycle of ``t`` frames is plausible."""
    header = cine.frame_interval_s
    implied = None if header is None else 60.0 / (header * t)
    if options.frame_interval_s is not None:
        return float(options.frame_interval_s), "option", None, []
    if options.heart_rate_bpm is not None:
        note = None
        if header is not None:
            note = (f"the header's frame interval ({1000 * header:.1f} ms, {implied:.0f} bpm) was overridden by the "
                    f"given heart rate ({options.heart_rate_bpm:g} bpm)")
        return 60.0 / float(options.heart_rate_bpm) / t, "heart_rate", note, []
    if header is None:
        return None, None, None, ["frame interval unknown (no time unit in the header): strain rates are not "
                                  "computed; pass --frame-interval-ms or --heart-rate"]
    lo, hi = IMPLAUSIBLE_HR_BPM
    if not lo <= implied <= hi:
        return None, None, None, [f"the header's frame interval ({1000 * header:.1f} ms) implies {implied:.0f} bpm "
                                  f"for {t} frames covering one cycle, outside {lo:.0f}-{hi:.0f} bpm: strain rates "
                                  "are not computed; pass --frame-interval-ms or --heart-rate"]
    return float(header), "header", None, []


def _centre(ed_volume, plan: pp.Resampling, networks: Networks, use_vcn: bool) -> tuple[np.ndarray, str]:
    """Crop centre on the resampled grid: the VCN's LV centre on the ED frame, or the field-of-view centre."""
    if not use_vcn:
        return (np.asarray(plan.out_shape[:2], np.float64) - 1.0) / 2.0, "fov"
    from deepstrain_jax.models import vcn as vcn_lib

    volume = resample_window(ed_volume, plan, None, 1)
    view, vcn_crop = make_vcn_input(volume)
    peak = np.asarray(vcn_lib.crop_center_vox(networks.vcn_heatmaps(view)), np.float64)
    return peak + np.asarray(vcn_crop.start, np.float64), "vcn"


def _network_window(image, spacing_mm, ed: int, networks: Networks, *, inplane_mm: float, align: str,
                    use_vcn: bool):
    """Plan the network grid of a ``(X, Y, Z, T)`` stack, centre the crop on frame ``ed`` and cut it out.

    Returns ``(plan, crop, centre, centre_source, window)`` with ``window`` ``(N, N, Z, T)`` float32.
    """
    n_crop, n_slices = networks.grid
    plan = pp.plan_resampling(image.shape[:3], spacing_mm, inplane_mm=inplane_mm, n_slices=n_slices, align=align)
    centre, centre_source = _centre(image[..., ed], plan, networks, use_vcn)
    crop = pp.plan_crop(plan.out_shape, centre, n_crop)
    return plan, crop, centre, centre_source, resample_window(image, plan, crop, 1)


@dataclasses.dataclass
class StackSegmentation:
    """:func:`segment_stack`'s result.

    Attributes:
      native: ``(X, Y, Z, T)`` uint8 labels on the input grid (slices on axis 2, as given).
      network: ``(T, N, N, Z)`` uint8 labels on the network grid (the slice order as given).
      probs: ``(T, N, N, Z, 4)`` float32 CarSON class probabilities on the network grid.
      window: ``(N, N, Z, T)`` float32 resampled, cropped intensities (before z-scoring).
      resampling, crop: the maps from the input grid; centre_vox: ``(2,)`` crop centre on the resampled grid;
      centre_source: ``"vcn"`` or ``"fov"``.
    """

    native: np.ndarray
    network: np.ndarray
    probs: np.ndarray
    window: np.ndarray
    resampling: pp.Resampling
    crop: pp.Crop
    centre_vox: np.ndarray
    centre_source: str


def segment_stack(image, spacing_mm, *, networks: Networks, ed: int = 0, inplane_mm: float = 1.25,
                  centre: str = "vcn", align: str = "centre", native_slices: bool = False) -> StackSegmentation:
    """CarSON on every frame of a ``(X, Y, Z, T)`` stack, exactly as :func:`analyze` segments a cine.

    Network grid, VCN centre on frame ``ed`` (or the field-of-view centre with ``centre="fov"``), crop, CarSON
    slice by slice, labelled islands away from the heart removed, and the class probabilities interpolated back
    to the input grid (arg-max there). Slices are on axis 2 in any order; nothing is reordered.

    ``native_slices``: the input-grid labels come from CarSON run on the acquired slices themselves (resampled
    in-plane only, same crop) instead of the through-plane interpolation of the network grid's probabilities;
    ``network`` and ``probs`` stay on the network grid. Off by default: on 8 real ACDC training patients with the
    shipped CarSON the interpolated probabilities gave the same or slightly higher Dice (mean over RV, myocardium,
    LV at ED and ES 0.893 against 0.888).

    Args:
      image: ``(X, Y, Z, T)`` (a single frame: ``T = 1``); spacing_mm: ``(3,)`` mm.
      networks: loaded :class:`~deepstrain_jax.analysis.networks.Networks`.
    Returns:
      :class:`StackSegmentation`.
    """
    check_networks("segment_stack", networks, optional=False)
    image = np.asarray(image)
    spacing_mm = np.asarray(spacing_mm, np.float64)
    if image.ndim != 4:
        raise ValueError(f"image must be (X, Y, Z, T), got shape {image.shape}")
    if centre not in ("vcn", "fov"):
        raise ValueError(f"centre must be 'vcn' or 'fov', got {centre!r}")
    plan, crop, centre_vox, centre_source, window = _network_window(
        image, spacing_mm, ed, networks, inplane_mm=inplane_mm, align=align,
        use_vcn=centre == "vcn" and networks.vcn is not None)
    raw = np.ascontiguousarray(np.moveaxis(window, 3, 0))
    probs = np.stack([networks.segment_frame(raw[t]) for t in range(raw.shape[0])])
    seg_net = np.stack([grids.keep_heart_component(p.argmax(-1).astype(np.uint8)) for p in probs])
    if native_slices and align == "centre":
        # In-plane only: the slice axis is kept (ratio 1, offset 0), the crop is the same in-plane window.
        plan2 = pp.plan_resampling(image.shape[:3], spacing_mm, inplane_mm=inplane_mm, n_slices=None, align=align)
        window2 = np.moveaxis(resample_window(image, plan2, crop, 1), 3, 0)
        native = np.stack([grids.keep_heart_component(grids.labels_to_native(networks.segment_frame(w), plan2, crop))
                           for w in window2], axis=-1)
    else:
        native = np.stack([grids.keep_heart_component(grids.labels_to_native(p, plan, crop)) for p in probs],
                          axis=-1)
    return StackSegmentation(native=native, network=seg_net, probs=probs.astype(np.float32), window=window,
                             resampling=plan, crop=crop, centre_vox=np.asarray(centre_vox, np.float64),
                             centre_source=centre_source)


def read_checked(source, *, crop_mm: float = DEFAULT_CROP * 1.25) -> tuple[inp.CineInput, inp.CineInput, int]:
    """Read (unless given a :class:`~deepstrain_jax.analysis.inputs.CineInput`) and check a subject.

    Returns ``(as read, with its slice axis last, the file's slice axis)``; raises InputError for bad input.
    """
    cine0 = source if isinstance(source, inp.CineInput) else inp.read_input(source)
    slice_axis = inp.find_slice_axis(cine0.spacing_mm)
    cine = inp.to_slice_last(cine0, slice_axis)
    inp.check_cine(cine, crop_mm=crop_mm)
    return cine0, cine, slice_axis


def analyze(source, out: str | os.PathLike | None = None, *, networks: Networks | None = None,
            options: AnalysisOptions | None = None, overwrite: bool = False, spacing_mm=None, affine=None,
            name: str | None = None, **option_kwargs) -> AnalysisResult:
    """Analyse one cine: the data flow of the module docstring.

    Args:
      source: the path of one subject in any layout :mod:`deepstrain_jax.analysis.discovery` knows (a 4D NIfTI,
        an ACDC / UK Biobank / M&Ms patient folder, a DICOM series folder), a
        :class:`deepstrain_jax.analysis.inputs.CineInput`, or a ``(X, Y, Z, T)`` numpy array with ``spacing_mm``
        and/or ``affine`` (and optionally ``name``); the array passes the same checks as a file, and its frame
        interval is the option ``frame_interval_s`` (or ``heart_rate_bpm``).
      out: optional output folder for this subject (written all-or-nothing, see
        :mod:`deepstrain_jax.analysis.outputs`); its parent must be writable. This process is its only writer
        from start to end (:func:`deepstrain_jax.io.atomic.claim`).
      networks: :class:`deepstrain_jax.analysis.networks.Networks` (default: the shipped models; pass one
        object to reuse compiled networks across subjects).
      options: :class:`AnalysisOptions`, or its fields as keyword arguments (not both).
      overwrite: replace an existing ``out`` folder.
    Returns:
      :class:`AnalysisResult`.
    Raises:
      TypeError: an argument of the wrong type (the message names it and what it accepts).
      InputError: any problem with the input (module :mod:`deepstrain_jax.analysis.inputs`), a cine in which
        no LV is found, or an output folder that exists (without ``overwrite``), cannot be written or is being
        written by another process (:class:`~deepstrain_jax.errors.OutputBusyError`).
    """
    from deepstrain_jax.io.atomic import claim

    check_type("analyze", "source", source, (str, os.PathLike, inp.CineInput, np.ndarray),
               "a path (str or os.PathLike) to one subject, a CineInput, or a (X, Y, Z, T) numpy array")
    if isinstance(source, np.ndarray):
        check_type("analyze", "name", name, (str, type(None)), "a subject name (str) or None")
        source = inp.cine_from_array(source, spacing_mm=spacing_mm, affine=affine, name=name or "array")
    elif spacing_mm is not None or affine is not None or name is not None:
        raise TypeError("analyze(): spacing_mm, affine and name go with an array source only (a file's header "
                        "gives them)")
    check_type("analyze", "out", out, (str, os.PathLike, type(None)), "an output folder path or None")
    check_networks("analyze", networks)
    check_type("analyze", "options", options, (AnalysisOptions, type(None)),
               "an AnalysisOptions or None", "or pass its fields as keyword arguments, e.g. analyze(path, es=10)")
    check_type("analyze", "overwrite", overwrite, (bool, np.bool_), "True or False")
    if options is not None and option_kwargs:
        raise TypeError(f"analyze(): pass options=AnalysisOptions(...) or its fields as keyword arguments, not both "
                        f"(got options and {sorted(option_kwargs)})")
    options = options or AnalysisOptions(**option_kwargs)
    with claim(out) if out is not None else contextlib.nullcontext():
        return _analyze(source, out, networks, options, overwrite)


def _analyze(source, out, networks: Networks | None, options: AnalysisOptions, overwrite: bool) -> AnalysisResult:
    """:func:`analyze` after its argument checks, with the claim on ``out`` held."""
    from deepstrain_jax.analysis import results as res

    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()

    if out is not None:
        from deepstrain_jax.analysis.outputs import check_output_folder

        check_output_folder(out, overwrite=overwrite)
    checked_crop = networks.grid[0] if networks is not None else DEFAULT_CROP
    cine0, cine, slice_axis = read_checked(source, crop_mm=checked_crop * options.inplane_mm)
    if networks is None:  # loaded after the input passed its checks: bad input fails fast
        networks = Networks.load(use_vcn=options.use_vcn)
    use_vcn = options.use_vcn and networks.vcn is not None
    if networks.grid[0] != checked_crop:  # the field-of-view check depends on the crop
        inp.check_cine(cine, crop_mm=networks.grid[0] * options.inplane_mm)
    path, t_count = cine.cine_path, cine.image.shape[3]
    ed = options.ed if options.ed is not None else cine.ed
    given_by = "info_cfg" if cine.kind == "acdc" else "metadata"
    ed_source = "option" if options.ed is not None else (given_by if cine.ed is not None else "first_frame")
    ed = 0 if ed is None else int(ed)
    es_given = options.es if options.es is not None else cine.es
    for key, v in (("ED", ed), ("ES", es_given)):
        if v is not None and not 0 <= v < t_count:
            raise InputError(f"{key} frame {v} (0-based) is outside the cine's {t_count} frames", path)
    dt, dt_source, dt_note, warnings = _frame_interval(options, cine, t_count)
    warnings = list(cine.warnings) + warnings
    if es_given is not None and es_given == ed:
        raise InputError(f"the ES frame ({es_given}) equals the ED frame: strain at ES would be zero by definition; "
                         "check --ed/--es or the layout's ED/ES", path)

    # Network grid, centring, segmentation.
    fov = np.asarray(cine.image.shape[:2]) * np.asarray(cine.spacing_mm[:2])
    crop_mm = networks.grid[0] * options.inplane_mm
    if np.any(fov < crop_mm):
        warnings.append(f"in-plane field of view {fov[0]:.0f} x {fov[1]:.0f} mm is smaller than the network crop "
                        f"of {crop_mm:.0f} mm: padded; check that the whole heart is in view")
    seg = segment_stack(cine.image, cine.spacing_mm, networks=networks, ed=ed, inplane_mm=options.inplane_mm,
                        centre="vcn" if use_vcn else "fov", align="corner" if options.legacy else "centre")
    plan, crop, centre, centre_source = seg.resampling, seg.crop, seg.centre_vox, seg.centre_source
    raw = np.ascontiguousarray(np.moveaxis(seg.window, 3, 0))  # (T, N, N, Z)
    seg_net = seg.network

    if options.slice_order != "auto":
        order, order_source, slope = options.slice_order, "option", None
    elif cine.slice_order in ("base_to_apex", "apex_to_base"):
        order, order_source, slope = cine.slice_order, "sidecar", None
    else:
        order, slope = grids.detect_slice_order(seg_net[ed])
        order_source = "detected"
        if abs(slope) < 0.02 and cine.kind == "acdc":
            # Too flat to tell (e.g. a few mid-ventricular slices): ACDC stores its stacks base -> apex.
            order, order_source = "base_to_apex", "layout"
        elif abs(slope) < 0.02:
            warnings.append(f"slice order uncertain (heart area slope {slope:+.3f} per slice); assumed {order}; "
                            "pass --slice-order to set it")
    reverse = order == "apex_to_base"
    if reverse:
        raw, seg_net = raw[..., ::-1], seg_net[..., ::-1]

    # Volumes on the native grid.
    seg_native = seg.native
    from deepstrain_jax.cardiac import volumetrics

    if not (seg_native[..., ed] == 3).any():
        raise InputError(f"no LV cavity found by the segmentation in the ED frame {ed}; is the heart in the field "
                         "of view?", path)
    has_rv = bool((seg_native[..., ed] == 1).any())
    if not has_rv:
        warnings.append("no RV found by the segmentation in the ED frame: RV volumes and EF are null, AHA segments "
                        "need the RV insertion points")
    try:
        vols = volumetrics.clinical_indices(np.moveaxis(seg_native, 3, 0), cine.spacing_mm, ed=ed, es=es_given,
                                            include_rv=has_rv)
    except ValueError as e:
        raise InputError(f"LV volumes could not be measured from the segmentation ({e}); is the heart in the field "
                         "of view?", path) from None
    es = vols.es
    es_source = "option" if options.es is not None else (given_by if cine.es is not None else "min_lv_volume")
    if es == ed:
        raise InputError(f"the LV volume is smallest at the ED frame ({ed}): no systole found in this cine (is the "
                         "4th axis time, and ED right?); pass --es", path)
    coverage = qc.slice_coverage(seg_native[..., ed], base_first=not reverse)
    warnings.extend(coverage.pop("warnings"))

    # Motion: (ED, t) for every other frame; (ES, ED) for the cycle closure.
    spacing = np.asarray(plan.out_spacing_mm, np.float64)
    u_vox = np.zeros(raw.shape + (3,), np.float32)
    others = [t for t in range(t_count) if t != ed]
    u_vox[others] = networks.motion(raw[ed], raw[others])
    labels_ed = np.ascontiguousarray(seg_net[ed])
    myo = labels_ed == 2
    if not myo.any() or not (labels_ed == 3).any():
        raise InputError(f"the segmentation found no LV myocardium or cavity in the ED frame {ed}; is the heart "
                         "in the field of view?", path)
    u_mm = u_vox * spacing.astype(np.float32)

    from deepstrain_jax.cardiac import aha as aha_lib
    from deepstrain_jax.ops import strain as strain_lib

    try:
        strain = strain_lib.cardiac_strain(u_mm, labels_ed, spacing, base_first=True)
    except ValueError as e:
        raise InputError(f"strain could not be computed from the ED segmentation: {e}", path) from None
    affine_net = grids.grid_affine(cine.affine, plan, crop, reverse)
    try:
        segments = aha_lib.aha_segments(labels_ed, spacing, base_first=True, affine=affine_net)
    except ValueError as e:
        segments = None
        warnings.append(f"AHA segments not placed: {e}")
    det_f = qc.jacobian_determinant(u_mm, spacing)
    folding = qc.folding_statistics(det_f, myo)
    if es != ed:
        u_back = networks.motion(raw[es], raw[ed][None])[0]
        closure = qc.cycle_closure_mm(u_vox[es], u_back, spacing, myo)
    else:
        closure = {"mean": 0.0, "p95": 0.0}
    legacy = None
    if options.legacy:
        from deepstrain_jax.ops.strain_legacy import legacy_strain

        ls = legacy_strain(u_vox, labels_ed)
        legacy = {"global_radial": np.asarray(ls.global_radial), "global_circumferential":
                  np.asarray(ls.global_circumferential)}

    # Voxel outputs back on the native grid, in the input file's axis order: the segmentation now, the
    # displacement and strain maps frame by frame when they are read or written (NativeMaps).
    inverse = tuple(int(np.argsort(inp.slice_last_order(slice_axis))[k]) for k in range(3))
    seg_out = np.transpose(seg_native, inverse + (3,))
    comps = np.stack([np.asarray(strain.components.rr), np.asarray(strain.components.cc),
                      np.asarray(strain.components.ll)], axis=-1)                     # (T, N, N, Z, 3)
    native = grids.NativeMaps(u_mm, comps, myo, seg_native[..., ed] == 2, plan, crop, reverse,
                              cine.affine[:3, :3] / cine.spacing_mm[None, :], inverse)
    grid = NetworkGrid(image=raw, segmentation=seg_net, u_vox=u_vox, spacing_mm=spacing, affine=affine_net,
                       strain=strain, aha=segments, det_f=det_f, resampling=plan, crop=crop,
                       slices_reversed=reverse)
    results = res.build_results(
        cine=cine0, networks=networks, options=options, grid=grid, volumes=vols, ed=ed, es=es,
        ed_source=ed_source, es_source=es_source, dt=dt, dt_source=dt_source, slice_axis=slice_axis,
        slice_order=order, slice_order_source=order_source, slice_order_slope=slope, centre=centre,
        centre_source=centre_source, folding=folding, closure=closure, legacy=legacy, warnings=warnings,
        frame_interval_note=dt_note, coverage=coverage)
    result = AnalysisResult(name=cine0.name, results=results, affine=cine0.affine, frame_interval_s=dt,
                            segmentation=seg_out, native=native, grid=grid,
                            run={"command": shlex.join(sys.argv), "started_utc": started.isoformat(timespec="seconds"),
                                 "seconds": round(time.perf_counter() - t0, 3)})
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result


def motion_between(image_ed, image_t, spacing_mm, *, networks: Networks, inplane_mm: float = 1.25,
                   centre: str = "vcn") -> np.ndarray:
    """CarMEN's motion from ``image_ed`` to ``image_t`` on their own (native) grid, as a registration function.

    The two frames go through the analysis' pre-processing (network grid, VCN centre on ``image_ed`` or the
    field-of-view centre, crop), CarMEN, and back to the native grid by linear interpolation. Slices must be
    stored base -> apex on axis 2 (the networks' order). Same convention as the classical baselines of
    ``eval.baselines``: ``warp(image_t, u_vox) ~ image_ed``.

    Args:
      image_ed, image_t: ``(X, Y, Z)`` frames of one cine.
      spacing_mm: ``(3,)`` voxel size, mm.
      networks: loaded :class:`~deepstrain_jax.analysis.networks.Networks`.
      centre: ``"vcn"`` or ``"fov"``.
    Returns:
      ``(X, Y, Z, 3)`` float32 displacement in native voxels.
    """
    check_networks("motion_between", networks, optional=False)
    pair = np.stack([np.asarray(image_ed), np.asarray(image_t)], axis=-1)
    spacing = np.asarray(spacing_mm, np.float64)
    plan, crop, _, _, raw = _network_window(pair, spacing, 0, networks, inplane_mm=inplane_mm, align="centre",
                                            use_vcn=centre == "vcn" and networks.vcn is not None)
    u_vox = networks.motion(raw[..., 0], raw[None, ..., 1])[0]
    u_mm = u_vox * np.asarray(plan.out_spacing_mm, np.float32)
    return (grids.to_native(u_mm, plan, crop) / spacing.astype(np.float32)).astype(np.float32)
