"""``analyze()``: a cine in, segmentations, motion, strain, volumes, QC and a report out.

The data flow: read and check the cine (:mod:`deepstrain_jax.analysis.inputs`) -> put the slice axis
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

import collections
import contextlib
import dataclasses
import datetime
import functools
import os
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np

from deepstrain_jax.analysis import grids, stages
from deepstrain_jax.analysis import inputs as inp
from deepstrain_jax.analysis import results as res
from deepstrain_jax.analysis.networks import Networks, check_networks, timed
from deepstrain_jax.analysis.options import CENTRES, DEFAULT_CROP, DISPLACEMENT_GRIDS, SLICE_ORDERS, AnalysisOptions
from deepstrain_jax.analysis.outputs import check_output_folder, write_subject
from deepstrain_jax.analysis.segmentation import StackSegmentation, motion_between, segment_stack
from deepstrain_jax.analysis.stages import IMPLAUSIBLE_HR_BPM
from deepstrain_jax.data import preprocessing as pp
from deepstrain_jax.errors import check_type
from deepstrain_jax.io.atomic import claim
from deepstrain_jax.labels import LV_MYOCARDIUM

__all__ = ["AnalysisOptions", "AnalysisResult", "CENTRES", "DEFAULT_CROP", "DISPLACEMENT_GRIDS", "IMPLAUSIBLE_HR_BPM",
           "NetworkGrid", "SLICE_ORDERS", "StackSegmentation", "analyze", "motion_between", "read_checked",
           "segment_stack"]


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
        ``seconds`` (reading to results, before writing), ``stages_s`` (wall seconds per stage, in order; the
        writing of the output folder adds ``write``, and ``write_parts_s`` its overlapping parts ``figures``,
        ``tables`` and ``nifti``, the last in a worker thread) and ``networks_s`` (wall seconds in each
        network); written as ``run.json`` beside ``results.json``.

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
        return write_subject(self, out_dir, overwrite=overwrite)


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
    """:func:`analyze` after its argument checks, with the claim on ``out`` held: the stages of
    :mod:`deepstrain_jax.analysis.stages` in order, then the native-grid maps and ``results.json``.

    ``run.json`` records the wall seconds of each stage (``stages_s``; the writing of the folder's files adds
    ``write``) and of each network (``networks_s``, counted by :attr:`Networks.seconds`)."""
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    clock = collections.Counter()  # wall seconds per stage
    if out is not None:
        check_output_folder(out, overwrite=overwrite)
    checked_crop = networks.grid[0] if networks is not None else DEFAULT_CROP
    with timed(clock, "read"):
        cine0, cine, slice_axis = read_checked(source, crop_mm=checked_crop * options.inplane_mm)
    if networks is None:  # loaded after the input passed its checks: bad input fails fast
        with timed(clock, "load_networks"):
            networks = Networks.load(use_vcn=options.use_vcn)
    if networks.grid[0] != checked_crop:  # the field-of-view check depends on the crop
        inp.check_cine(cine, crop_mm=networks.grid[0] * options.inplane_mm)
    net_before = dict(getattr(networks, "seconds", {}))

    with timed(clock, "frames"):
        frames = stages.frames_stage(cine0, cine, slice_axis, options)
    with timed(clock, "segmentation"):
        seg = stages.segmentation_stage(frames, networks, options)
    with timed(clock, "volumes"):
        vols = stages.volumes_stage(frames, seg, options)
    with timed(clock, "motion"):
        motion = stages.motion_stage(frames, seg, vols, networks)
    with timed(clock, "strain"):
        strain = stages.strain_stage(frames, seg, motion, options)
        jax.block_until_ready(strain.strain)  # JAX runs it asynchronously: its time belongs to this stage

    with timed(clock, "results"):
        # Voxel outputs back on the native grid, in the input file's axis order: the segmentation now, the
        # displacement and strain maps frame by frame when they are read or written (NativeMaps).
        ed, stack = frames.ed, seg.stack
        inverse = tuple(int(np.argsort(inp.slice_last_order(slice_axis))[k]) for k in range(3))
        c = strain.strain.components
        comps = np.stack([np.asarray(c.rr), np.asarray(c.cc), np.asarray(c.ll)], axis=-1)  # (T, N, N, Z, 3)
        native = grids.NativeMaps(motion.u_mm, comps, motion.myo, stack.native[..., ed] == LV_MYOCARDIUM,
                                  stack.resampling, stack.crop, seg.reverse,
                                  cine.affine[:3, :3] / cine.spacing_mm[None, :], inverse)
        grid = NetworkGrid(image=seg.raw, segmentation=seg.labels, u_vox=motion.u_vox, spacing_mm=motion.spacing,
                           affine=strain.affine, strain=strain.strain, aha=strain.segments, det_f=motion.det_f,
                           resampling=stack.resampling, crop=stack.crop, slices_reversed=seg.reverse)
        warnings = [*frames.warnings, *seg.warnings, *vols.warnings, *strain.warnings]
        results = res.build_results(
            cine=cine0, networks=networks, options=options, grid=grid, volumes=vols.indices, ed=ed, es=vols.es,
            ed_source=frames.ed_source, es_source=vols.es_source, dt=frames.dt, dt_source=frames.dt_source,
            slice_axis=slice_axis, slice_order=seg.order, slice_order_source=seg.order_source,
            slice_order_slope=seg.slope, centre=stack.centre_vox, centre_source=stack.centre_source,
            folding=motion.folding, closure=motion.closure, legacy=strain.legacy, warnings=warnings,
            frame_interval_note=frames.dt_note, coverage=vols.coverage)
    net_seconds = {k: round(v - net_before.get(k, 0.0), 3) for k, v in getattr(networks, "seconds", {}).items()}
    run = {"command": shlex.join(sys.argv), "started_utc": started.isoformat(timespec="seconds"),
           "seconds": round(time.perf_counter() - t0, 3), "stages_s": {k: round(v, 3) for k, v in clock.items()},
           "networks_s": net_seconds}
    result = AnalysisResult(name=cine0.name, results=results, affine=cine0.affine, frame_interval_s=frames.dt,
                            segmentation=np.transpose(stack.native, inverse + (3,)), native=native, grid=grid,
                            run=run)
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result
