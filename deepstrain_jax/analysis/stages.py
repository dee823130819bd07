"""The stages of :func:`deepstrain_jax.analysis.pipeline.analyze`, each a function returning a small frozen record.

``frames`` (what the cine is: ED, ES given, frame interval) -> ``segmentation`` (network window, CarSON, slice
order) -> ``volumes`` (native grid, ES) -> ``motion`` (CarMEN ED -> t, folding, cycle closure) -> ``strain``
(Green-Lagrange strain, AHA segments) -> native-grid maps and ``results.json`` (in the pipeline). Each stage can
be called and tested alone; warnings are collected in stage order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deepstrain_jax.analysis import grids, qc
from deepstrain_jax.analysis import inputs as inp
from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.options import AnalysisOptions
from deepstrain_jax.analysis.segmentation import StackSegmentation, segment_stack
from deepstrain_jax.cardiac import aha as aha_lib
from deepstrain_jax.cardiac import volumetrics
from deepstrain_jax.errors import InputError
from deepstrain_jax.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY
from deepstrain_jax.ops import strain as strain_lib
from deepstrain_jax.ops.strain_legacy import legacy_strain

IMPLAUSIBLE_HR_BPM = (30.0, 200.0)  # heart rates outside this range mean the header's frame interval is wrong


def frame_interval(options: AnalysisOptions, cine: inp.CineInput, t: int) -> tuple[float | None, str | None,
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



@dataclasses.dataclass(frozen=True)
class Frames:
    """The cine and its timing: ``cine0`` as read, ``cine`` with its slice axis last (``slice_axis`` of the file);
    ED and its source, ES when given (``es_given``, else ``None``), who gave them (``given_by``), the frame
    interval ``dt`` (s or ``None``), its source and note, and the warnings so far."""

    cine0: inp.CineInput
    cine: inp.CineInput
    slice_axis: int
    ed: int
    ed_source: str
    es_given: int | None
    given_by: str
    dt: float | None
    dt_source: str | None
    dt_note: str | None
    warnings: tuple


def frames_stage(cine0: inp.CineInput, cine: inp.CineInput, slice_axis: int, options: AnalysisOptions) -> Frames:
    """ED and ES from the options or the layout, and the frame interval; refuses frames outside the cine and
    ES == ED."""
    path, t_count = cine.cine_path, cine.image.shape[3]
    ed = options.ed if options.ed is not None else cine.ed
    given_by = "info_cfg" if cine.kind == "acdc" else "metadata"
    ed_source = "option" if options.ed is not None else (given_by if cine.ed is not None else "first_frame")
    ed = 0 if ed is None else int(ed)
    es_given = options.es if options.es is not None else cine.es
    for key, v in (("ED", ed), ("ES", es_given)):
        if v is not None and not 0 <= v < t_count:
            raise InputError(f"{key} frame {v} (0-based) is outside the cine's {t_count} frames", path)
    dt, dt_source, dt_note, warnings = frame_interval(options, cine, t_count)
    if es_given is not None and es_given == ed:
        raise InputError(f"the ES frame ({es_given}) equals the ED frame: strain at ES would be zero by definition; "
                         "check --ed/--es or the layout's ED/ES", path)
    return Frames(cine0, cine, slice_axis, ed, ed_source, es_given, given_by, dt, dt_source, dt_note,
                  tuple(cine.warnings) + tuple(warnings))


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """CarSON on every frame: ``stack`` (:class:`~deepstrain_jax.analysis.segmentation.StackSegmentation`, the
    input's slice order), the network window ``raw`` ``(T, N, N, Z)`` and labels ``labels`` on the network grid,
    both base -> apex; the stored ``order``, its ``order_source`` and the detection's ``slope``; ``reverse``
    (whether z was flipped to make it base -> apex); this stage's warnings."""

    stack: StackSegmentation
    raw: np.ndarray
    labels: np.ndarray
    order: str
    order_source: str
    slope: float | None
    reverse: bool
    warnings: tuple


def segmentation_stage(frames: Frames, networks: Networks, options: AnalysisOptions) -> Segmentation:
    """Network grid, centring, CarSON, and the slice order (given, a sidecar's, detected, or ACDC's)."""
    cine, ed, warnings = frames.cine, frames.ed, []
    use_vcn = options.use_vcn and networks.vcn is not None
    fov = np.asarray(cine.image.shape[:2]) * np.asarray(cine.spacing_mm[:2])
    crop_mm = networks.grid[0] * options.inplane_mm
    if np.any(fov < crop_mm):
        warnings.append(f"in-plane field of view {fov[0]:.0f} x {fov[1]:.0f} mm is smaller than the network crop "
                        f"of {crop_mm:.0f} mm: padded; check that the whole heart is in view")
    seg = segment_stack(cine.image, cine.spacing_mm, networks=networks, ed=ed, inplane_mm=options.inplane_mm,
                        centre="vcn" if use_vcn else "fov", align="corner" if options.legacy else "centre")
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
    return Segmentation(seg, raw, seg_net, order, order_source, slope, reverse, tuple(warnings))


@dataclasses.dataclass(frozen=True)
class Volumes:
    """LV/RV volumes over the cycle from the native-grid segmentation (``indices``:
    :func:`deepstrain_jax.cardiac.volumetrics.clinical_indices`), the ES frame and its source, the slice
    coverage (:func:`deepstrain_jax.analysis.qc.slice_coverage`, without its warnings) and this stage's
    warnings."""

    indices: object
    es: int
    es_source: str
    coverage: dict
    warnings: tuple


def volumes_stage(frames: Frames, seg: Segmentation, options: AnalysisOptions) -> Volumes:
    """Volumes on the native grid; ES given, or the frame of smallest LV volume. An LV without an RV gives LV
    values (RV null, a warning); no LV cavity at ED, or no systole, is an InputError."""
    cine, ed, path, warnings = frames.cine, frames.ed, frames.cine.cine_path, []
    seg_native = seg.stack.native
    if not (seg_native[..., ed] == LV_CAVITY).any():
        raise InputError(f"no LV cavity found by the segmentation in the ED frame {ed}; is the heart in the field "
                         "of view?", path)
    has_rv = bool((seg_native[..., ed] == RV_CAVITY).any())
    if not has_rv:
        warnings.append("no RV found by the segmentation in the ED frame: RV volumes and EF are null, AHA segments "
                        "need the RV insertion points")
    try:
        vols = volumetrics.clinical_indices(np.moveaxis(seg_native, 3, 0), cine.spacing_mm, ed=ed,
                                            es=frames.es_given, include_rv=has_rv)
    except ValueError as e:
        raise InputError(f"LV volumes could not be measured from the segmentation ({e}); is the heart in the field "
                         "of view?", path) from None
    es = vols.es
    es_source = "option" if options.es is not None else (frames.given_by if cine.es is not None else
                                                         "min_lv_volume")
    if es == ed:
        raise InputError(f"the LV volume is smallest at the ED frame ({ed}): no systole found in this cine (is the "
                         "4th axis time, and ED right?); pass --es", path)
    coverage = qc.slice_coverage(seg_native[..., ed], base_first=not seg.reverse)
    warnings.extend(coverage.pop("warnings"))
    return Volumes(vols, es, es_source, coverage, tuple(warnings))


@dataclasses.dataclass(frozen=True)
class Motion:
    """CarMEN ED -> t on the network grid: ``u_vox`` ``(T, N, N, Z, 3)`` (``u[ed] = 0``) and ``u_mm``, the grid's
    ``spacing`` (mm), the ED labels and myocardium mask, ``det_f`` ``(T, N, N, Z)``, the folding statistics and
    the ED -> ES -> ED cycle closure (mm)."""

    u_vox: np.ndarray
    u_mm: np.ndarray
    spacing: np.ndarray
    labels_ed: np.ndarray
    myo: np.ndarray
    det_f: np.ndarray
    folding: dict
    closure: dict


def motion_stage(frames: Frames, seg: Segmentation, vols: Volumes, networks: Networks) -> Motion:
    """(ED, t) for every other frame; (ES, ED) for the cycle closure; folding over the ED myocardium."""
    ed, es, raw = frames.ed, vols.es, seg.raw
    spacing = np.asarray(seg.stack.resampling.out_spacing_mm, np.float64)
    u_vox = np.empty(raw.shape + (3,), np.float32)
    u_vox[ed] = 0.0
    others = [t for t in range(raw.shape[0]) if t != ed]
    networks.motion(raw[ed], raw[others], out=u_vox, out_index=others)
    labels_ed = np.ascontiguousarray(seg.labels[ed])
    myo = labels_ed == LV_MYOCARDIUM
    if not myo.any() or not (labels_ed == LV_CAVITY).any():
        raise InputError(f"the segmentation found no LV myocardium or cavity in the ED frame {ed}; is the heart "
                         "in the field of view?", frames.cine.cine_path)
    u_mm = u_vox * spacing.astype(np.float32)
    det_f = qc.jacobian_determinant(u_mm, spacing)
    folding = qc.folding_statistics(det_f, myo)
    if es != ed:
        u_back = networks.motion(raw[es], raw[ed][None])[0]
        closure = qc.cycle_closure_mm(u_vox[es], u_back, spacing, myo)
    else:
        closure = dict.fromkeys(qc.CLOSURE_KEYS, 0.0)
    return Motion(u_vox, u_mm, spacing, labels_ed, myo, det_f, folding, closure)


@dataclasses.dataclass(frozen=True)
class Strain:
    """Green-Lagrange strain of the motion (``strain``: :class:`deepstrain_jax.ops.strain.CardiacStrain`), the
    AHA segments of the ED myocardium (``None`` when they could not be placed), the network grid's affine, the
    original's numbers in legacy mode (else ``None``) and this stage's warnings."""

    strain: object
    segments: np.ndarray | None
    affine: np.ndarray
    legacy: dict | None
    warnings: tuple


def strain_stage(frames: Frames, seg: Segmentation, motion: Motion, options: AnalysisOptions) -> Strain:
    """Strain about the fitted LV centre line, AHA segments from the RV insertion points, legacy numbers."""
    warnings = []
    try:
        # On the LV's bounding box: the same strain where it is used (the ED myocardium), 0 elsewhere.
        strain = strain_lib.cardiac_strain_lv_box(motion.u_mm, motion.labels_ed, motion.spacing, base_first=True)
    except ValueError as e:
        raise InputError(f"strain could not be computed from the ED segmentation: {e}", frames.cine.cine_path) \
            from None
    affine = grids.grid_affine(frames.cine.affine, seg.stack.resampling, seg.stack.crop, seg.reverse)
    try:
        segments = aha_lib.aha_segments(motion.labels_ed, motion.spacing, base_first=True, affine=affine)
    except ValueError as e:
        segments = None
        warnings.append(f"AHA segments not placed: {e}")
    legacy = None
    if options.legacy:
        ls = legacy_strain(motion.u_vox, motion.labels_ed, maps=False)  # the globals only
        legacy = {"global_radial": np.asarray(ls.global_radial), "global_circumferential":
                  np.asarray(ls.global_circumferential)}
    return Strain(strain, segments, affine, legacy, tuple(warnings))
