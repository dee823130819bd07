"""Write one analysed subject's folder, all or nothing.

Files (names in :data:`deepstrain_jax.analysis.results.OUTPUT_FILES`):

* ``segmentation.nii.gz``: ``(X, Y, Z, T)`` uint8 ACDC labels, the input's affine, shape and frame interval;
* ``displacement.nii.gz``: ``(X, Y, Z, T, 3)`` float32 displacement ED -> t in world mm (NIfTI intent
  ``NIFTI_INTENT_DISPVECT``, 1006; the 5th axis holds the x, y, z world components; ``descrip`` says
  ``components=world`` and ``grid=network`` or ``grid=native``). Its grid is the option
  ``AnalysisOptions.displacement``: by default the network grid the motion was estimated on (1.25 mm in-plane,
  the crop, base -> apex; its affine places it in the scanner frame, so tools that read the affine use it as
  it is), ``native`` for the input's grid, ``none`` for no file;
* ``strain_radial.nii.gz``, ``strain_circumferential.nii.gz``, ``strain_longitudinal.nii.gz``: ``(X, Y, Z, T)``
  float32 Green-Lagrange strain within the ED myocardium, NaN elsewhere (so that "outside" and "no strain" are
  not both 0); the unit is written in the header (``descrip`` "GL <direction> strain ED->t unit=mm/mm (not %),
  NaN off ED myo", intent ESTIMATE with the name ``GL_strain``);

The native-grid maps are computed and written one frame at a time
(:class:`deepstrain_jax.data.nifti.FrameWriter`), so memory grows with the image size, not with frames x size.
* ``segmentation_labels.txt``: the label names and colours for ITK-SNAP (Segmentation > Import Label
  Descriptions);
* ``displacement_itk/frame_TTT.nii.gz`` (``--itk-displacement``): one ITK/ANTs displacement field per frame;
* ``results.json`` (schema in :mod:`deepstrain_jax.analysis.results`), ``curves.csv`` (one row per frame: time,
  volumes, global strain and strain rate), ``aha_segments.csv`` (one row per segment: voxels, ESS, peak and
  time to peak), ``aha_curves.csv`` (segments x frames x directions, long format: strain and strain rate);
  every CSV starts with a subject column;
* ``qc_montage.png``: segmentation contours over the image at ED and ES on every slice of the network grid,
  and the AHA sectors on a mid slice (first in the report);
* ``polar_map.png`` (150 dpi; with ``publication_figures``: 300 dpi, and ``polar_map.svg`` and ``.pdf``):
  circumferential, radial and longitudinal ESS bull's-eyes side by side, with segment numbers and fixed colour limits
  (:data:`deepstrain_jax.report.plots.STRAIN_LIMITS_PCT`),
  ``curves.png``, ``report.html`` (self-contained).

The folder is built under a temporary name beside ``out_dir`` and renamed when complete
(:func:`deepstrain_jax.io.atomic.atomic_directory`): a failure leaves no partial folder, and an existing folder
is only replaced (``overwrite``) once the new one is complete. The writer holds an exclusive claim on
``out_dir`` (:func:`deepstrain_jax.io.atomic.claim`) from its check to the rename, so a second writer of the
same folder fails at once (:class:`~deepstrain_jax.errors.OutputBusyError`) instead of silently replacing
the first one's result; temporary folders of killed writers are removed on the next run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from deepstrain_jax.analysis.results import DIRECTIONS, EXPERIMENTAL, OUTPUT_FILES, check_results
from deepstrain_jax.cardiac import aha as aha_lib
from deepstrain_jax.data.nifti import FrameWriter, save_nifti
from deepstrain_jax.errors import InputError
from deepstrain_jax.io.atomic import atomic_directory, claim
from deepstrain_jax.report import AHA_SEGMENT_NAMES, plots, render_report

NIFTI_INTENT_DISPVECT = 1006


def check_output_folder(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an output folder that exists (without ``overwrite``) or cannot be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise InputError("output folder exists and is not empty (use --overwrite to replace it)", out)
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise InputError(f"cannot write the output folder here ({e.strerror or e})", out) from None


def _vector_writer(path: Path, shape, affine, frame_interval_s, grid: str):
    return FrameWriter(path, shape, np.float32, affine, frame_interval_s or None,
                       intent=(NIFTI_INTENT_DISPVECT, "displacement_mm"),
                       descrip=f"displacement ED->t mm components=world grid={grid}")  # read by eval.datasets.cmac


def _network_world_displacement(grid):
    """``(component, affine)``: ``component(t, c)`` is world component ``c`` (mm, float32, ``(N, N, Z)``) of the
    network-grid motion at frame ``t``, ``sum_j R[c, j] s_j u_vox[t, ..., j]`` (``R`` the grid's direction
    cosines, ``s`` its voxel size), made one frame and component at a time (no whole ``(T, N, N, Z, 3)`` copy)."""
    affine = np.asarray(grid.affine, np.float64)
    rotation = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    a = (rotation * np.asarray(grid.spacing_mm, np.float64)[None, :]).astype(np.float32)  # a[c, j] = R[c, j] s_j
    u = grid.u_vox

    def component(t: int, c: int) -> np.ndarray:
        return u[t, ..., 0] * a[c, 0] + u[t, ..., 1] * a[c, 1] + u[t, ..., 2] * a[c, 2]

    return component, affine


def _write_displacement(path: Path, result, grid: str) -> None:
    """``displacement.nii.gz`` on the network grid (from the network-grid motion) or the native grid (streamed
    component by component, frame by frame)."""
    dt = result.frame_interval_s
    if grid == "network":
        component, affine = _network_world_displacement(result.grid)
        shape = result.grid.u_vox.shape  # (T, N, N, Z, 3)
        with _vector_writer(path, shape[1:4] + shape[:1] + (3,), affine, dt, grid) as w:
            for c in range(3):
                for t in range(shape[0]):
                    w.write(component(t, c))
        return
    native = result.native
    with _vector_writer(path, native.shape + (native.n_frames, 3), result.affine, dt, grid) as w:
        for c in range(3):
            for t in range(native.n_frames):
                w.write(native.displacement_component(t, c))


NIFTI_INTENT_VECTOR = 1007
NIFTI_INTENT_ESTIMATE = 1001
ITK_FOLDER = "displacement_itk"
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0], np.float32)


def _write_itk_displacement(folder: Path, result, grid: str) -> None:
    """``displacement_itk/frame_TTT.nii.gz``: per frame an ``(X, Y, Z, 1, 3)`` float32 displacement field in the
    ITK convention (what ANTs writes): NIfTI intent VECTOR, the vector components in LPS millimetres (the x and
    y world components negated; the grid's own geometry stays in the NIfTI affine, which ITK converts to LPS on
    reading). Read by SimpleITK/ITK as a 3-component vector image, it is a ``DisplacementFieldTransform`` that
    maps a point of the ED frame to where it is at frame ``t``: resampling frame ``t`` through it gives the frame
    warped onto ED, as :func:`deepstrain_jax.ops.warp.warp` does."""
    folder.mkdir()
    if grid == "native":
        native = result.native
        frames, shape, affine = native.n_frames, native.shape, result.affine
        component = native.displacement_component
    else:
        component, affine = _network_world_displacement(result.grid)
        frames, shape = result.grid.u_vox.shape[0], result.grid.u_vox.shape[1:4]
    for t in range(frames):
        with FrameWriter(folder / f"frame_{t:03d}.nii.gz", shape + (1, 3), np.float32, affine, None,
                         intent=(NIFTI_INTENT_VECTOR, "displacement_lps"),
                         descrip=f"ITK displacement ED->frame {t} mm components=LPS grid={grid}") as w:
            for c in range(3):
                w.write(component(t, c) * _RAS_TO_LPS[c])


ITK_SNAP_LABELS = """################################################
# ITK-SnAP Label Description File (deepstrain-jax segmentation.nii.gz, ACDC labels)
# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL
################################################
    0     0    0    0        0  0  0    "Background"
    1    65  105  225        1  1  1    "RV cavity"
    2   220   20   60        1  1  1    "LV myocardium"
    3   255  215    0        1  1  1    "LV cavity"
"""


def _write_strain(folder: Path, result, names: dict) -> None:
    """The three strain NIfTIs, written side by side one frame at a time."""
    native = result.native
    shape = native.shape + (native.n_frames,)
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(FrameWriter(
            folder / names[f"strain_{d}"], shape, np.float32, result.affine, result.frame_interval_s or None,
            intent=(NIFTI_INTENT_ESTIMATE, "GL_strain"), allow_nan=True,
            descrip=f"GL {d} strain ED->t unit=mm/mm (not %), NaN off ED myo"))
            for d in ("radial", "circumferential", "longitudinal")]
        for t in range(native.n_frames):
            frame = native.strain_frame(t)
            for k, w in enumerate(writers):
                w.write(frame[..., k])


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def column(direction: str, what: str) -> str:
    """A CSV column name, ``{direction}_{what}``, with ``_experimental`` appended for the directions of
    :data:`deepstrain_jax.analysis.results.EXPERIMENTAL` (not validated: a reader cannot miss it)."""
    return f"{direction}_{what}" + ("_experimental" if direction in EXPERIMENTAL else "")


def curves_csv(results: dict) -> str:
    """``curves.csv``: subject, frame, time_s, LV/RV/myocardium volume (mL), global strain (%) and strain rate
    (1/s), basal and apical rotation and twist (degrees); the subject column lets cohort tables be concatenated
    as they are."""
    t = results["frames"]["n"]
    time = results["frames"]["time_s"] or [None] * t
    vol = results["volumes"]["curves_ml"]
    strain = results["strain"]["global_pct"]
    rate = results["strain"]["strain_rate_per_s"] or {d: [None] * t for d in DIRECTIONS}
    tw = results["strain"].get("twist") or {}
    twist = {key: tw.get(key) or [None] * t for key in ("basal_rotation_deg", "apical_rotation_deg", "twist_deg")}
    header = (["subject", "frame", "time_s", "lv_volume_ml", "rv_volume_ml", "myo_volume_ml"]
              + [column(d, "strain_pct") for d in DIRECTIONS] + [column(d, "strain_rate_per_s") for d in DIRECTIONS]
              + list(twist))
    rows = [[results["subject"], k, time[k], vol["lv"][k], vol["rv"][k], vol["myo"][k]]
            + [strain[d][k] for d in DIRECTIONS] + [rate[d][k] for d in DIRECTIONS]
            + [twist[key][k] for key in twist] for k in range(t)]
    return csv_text(header, rows)


def aha_csv(results: dict) -> str:
    """``aha_segments.csv``: subject, segment, name, voxels, then per direction the ESS (%), the peak (%) and the
    time to peak (s from ED) of the segment's curve (the dyssynchrony index is in results.json)."""
    header = (["subject", "segment", "name", "voxels"] + [column(d, "ess_pct") for d in DIRECTIONS]
              + [column(d, "peak_pct") for d in DIRECTIONS] + [column(d, "time_to_peak_s") for d in DIRECTIONS])
    aha = results["aha"]

    def value(key, d, s):
        if aha is None or aha.get(key) is None or aha[key].get(d) is None:
            return None
        return aha[key][d][s]

    rows = [[results["subject"], s + 1, AHA_SEGMENT_NAMES[s], None if aha is None else aha["voxels"][s]]
            + [value("ess_pct", d, s) for d in DIRECTIONS] + [value("peak_pct", d, s) for d in DIRECTIONS]
            + [value("time_to_peak_s", d, s) for d in DIRECTIONS] for s in range(17)]
    return csv_text(header, rows)


def aha_curves_csv(results: dict) -> str:
    """``aha_curves.csv``, long format (one row per subject, segment, frame and direction): subject, segment,
    frame, time_s, direction, strain_pct, strain_rate_per_s, experimental (``true`` for the directions of
    :data:`deepstrain_jax.analysis.results.EXPERIMENTAL`). Header only when the segments were not placed."""
    header = ["subject", "segment", "frame", "time_s", "direction", "strain_pct", "strain_rate_per_s",
              "experimental"]
    aha = results["aha"]
    rows = []
    if aha is not None and "curves_pct" in aha:
        time = results["frames"]["time_s"] or [None] * results["frames"]["n"]
        for s in range(17):
            for k in range(results["frames"]["n"]):
                for d in DIRECTIONS:
                    rate = aha["strain_rate_per_s"][d]
                    rows.append([results["subject"], s + 1, k, time[k], d, aha["curves_pct"][d][k][s],
                                 None if rate is None else rate[k][s], "true" if d in EXPERIMENTAL else "false"])
    return csv_text(header, rows)


def figures(results: dict) -> dict[str, bytes]:
    """``{"polar_map.png", "curves.png"}`` for one subject's results, with ``polar_map.svg`` and ``polar_map.pdf``
    when the option ``publication_figures`` is set (no polar map when the AHA segments were not placed). The bull's-eyes use the fixed colour limits of
    :data:`deepstrain_jax.report.plots.STRAIN_LIMITS_PCT`, updated by the option ``bullseye_limits_pct``."""
    images = {}
    aha = results["aha"]
    experimental = tuple((results["strain"].get("experimental") or {}).get("directions") or ())
    if aha is not None:
        limits = {d: (lo, hi) for d, lo, hi in results["options"].get("bullseye_limits_pct") or ()}
        publication = bool(results["options"].get("publication_figures"))
        maps = plots.strain_polar_maps(
            {d: aha["ess_pct"][d] for d in ("circumferential", "radial", "longitudinal")}, limits=limits,
            title=f"{results['subject']}: end-systolic strain (%)", experimental=experimental,
            formats=plots.PUBLICATION_FORMATS if publication else ("png",),
            dpi=plots.PUBLICATION_DPI if publication else plots.REPORT_DPI)
        images.update({f"polar_map.{fmt}": data for fmt, data in maps.items()})
    vols = results["volumes"]["curves_ml"]

    def named(curves):
        return None if curves is None else {(f"{d} (experimental)" if d in experimental else d): c
                                            for d, c in curves.items()}

    images["curves.png"] = plots.curves_png(
        results["frames"]["time_s"], named(results["strain"]["global_pct"]),
        strain_rate_per_s=named(results["strain"]["strain_rate_per_s"]),
        volumes_ml={"LV": vols["lv"], "RV": vols["rv"]}, ed=results["frames"]["ed"], es=results["frames"]["es"],
        title=results["subject"])
    return images


def write_subject(result, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write :class:`deepstrain_jax.analysis.pipeline.AnalysisResult` ``result`` to ``out_dir`` (module docstring)."""
    with claim(out_dir):  # the only writer from the check to the rename (re-entrant inside analyze())
        return _write_subject_claimed(result, out_dir, overwrite, atomic_directory, render_report)


def _insertions(grid, ed: int):
    """The RV insertion points of the ED labels on the network grid (for the QC montage), or None."""
    if grid.aha is None:
        return None
    try:
        return aha_lib.rv_insertion_points(np.ascontiguousarray(grid.segmentation[ed]), grid.spacing_mm,
                                           base_first=True, affine=grid.affine)
    except ValueError:
        return None


def _write_niftis(tmp: Path, result, grid: str, itk: bool) -> float:
    """The voxel outputs (segmentation, displacement, ITK fields, strain maps) into ``tmp``; returns seconds."""
    t0 = time.perf_counter()
    dt = result.frame_interval_s
    save_nifti(tmp / OUTPUT_FILES["segmentation"], result.segmentation.astype(np.uint8), result.affine, dt)
    if grid != "none":
        _write_displacement(tmp / OUTPUT_FILES["displacement"], result, grid)
    if itk:
        _write_itk_displacement(tmp / ITK_FOLDER, result, "native" if grid == "native" else "network")
    _write_strain(tmp, result, OUTPUT_FILES)
    return round(time.perf_counter() - t0, 3)


def _write_subject_claimed(result, out_dir, overwrite, atomic_directory, render_report) -> Path:
    """The folder, built in a temporary directory: the NIfTI maps are written by a worker thread (numpy
    interpolation and ISA-L compression release the GIL) while this thread draws the figures (matplotlib
    holds it), so the two overlap on a multi-core machine."""
    check_output_folder(out_dir, overwrite=overwrite)
    results = dict(result.results)
    check_results(results)
    run = dict(getattr(result, "run", {}))
    t_write = time.perf_counter()
    grid = results["options"].get("displacement", "native")
    itk = bool(results["options"].get("itk_displacement"))
    with atomic_directory(out_dir, overwrite=True) as tmp, \
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="deepstrain-nifti") as pool:
        niftis = pool.submit(_write_niftis, tmp, result, grid, itk)
        t0 = time.perf_counter()
        images = {"qc_montage.png": plots.qc_montage_png(  # first in the report: is the segmentation right?
            result.grid.image, result.grid.segmentation, ed=results["frames"]["ed"], es=results["frames"]["es"],
            aha=result.grid.aha, insertions=_insertions(result.grid, results["frames"]["ed"]),
            title=f"{results['subject']}: segmentation at ED and ES (network grid, base -> apex)")}
        images.update(figures(results))
        parts = {"figures": round(time.perf_counter() - t0, 3)}
        # build_results lists the vector bull's-eyes only with publication_figures; a map not drawn (no AHA
        # segments) or a displacement not written is dropped here.
        dropped = {key for key in ("polar_map", "polar_map_svg", "polar_map_pdf") if OUTPUT_FILES[key] not in images}
        if grid == "none":
            dropped.add("displacement")
        results["outputs"] = {k: v for k, v in results["outputs"].items() if k not in dropped}
        if itk:
            results["outputs"]["displacement_itk"] = f"{ITK_FOLDER}/frame_TTT.nii.gz"
        t0 = time.perf_counter()
        (tmp / OUTPUT_FILES["segmentation_labels"]).write_text(ITK_SNAP_LABELS)
        (tmp / OUTPUT_FILES["results"]).write_text(json.dumps(results, indent=2) + "\n")
        (tmp / OUTPUT_FILES["curves"]).write_text(curves_csv(results))
        (tmp / OUTPUT_FILES["aha_segments"]).write_text(aha_csv(results))
        (tmp / OUTPUT_FILES["aha_curves"]).write_text(aha_curves_csv(results))
        for name, data in images.items():
            (tmp / name).write_bytes(data)
        (tmp / OUTPUT_FILES["report"]).write_text(
            render_report(results, {k: v for k, v in images.items() if k.endswith(".png")}))
        parts["tables"] = round(time.perf_counter() - t0, 3)
        parts["nifti"] = niftis.result()  # its error, if any, is raised here (and the folder discarded)
        if run:
            run["stages_s"] = {**run.get("stages_s", {}), "write": round(time.perf_counter() - t_write, 3)}
            run["write_parts_s"] = parts
        (tmp / OUTPUT_FILES["run"]).write_text(json.dumps(run, indent=2) + "\n")
    return Path(out_dir)
