"""The ``results.json`` of one analysed subject: its versioned schema, how it is built, and a checker.

Schema ``deepstrain-jax/results`` version 1 (every key is always present; unknown values are ``null``):

* ``schema``, ``schema_version``, ``subject``; ``software``: name, version (deepstrain-jax), jax_version,
  jaxlib_version, jax_backend (``cpu`` / ``gpu`` / ``tpu``: the backend the networks ran on), numpy_version. How
  this output folder was made (command line, start time, seconds taken) is in ``run.json`` beside it, the
  only file that differs between two runs of the same input and models.
* ``input``: path, kind (``nifti`` / ``acdc`` / ``ukbb`` / ``mnms`` / ``dicom`` / ``array``), cine file, shape
  ``[X, Y, Z, T]``, spacing_mm, affine (4x4),
  frame_interval_s and its source (``option`` / ``header`` / ``heart_rate`` / null) and a note when a given
  heart rate overrode the header's interval (else null), slice_axis (of the file),
  slice_order (stored order: ``base_to_apex`` / ``apex_to_base``), its source (``option`` / ``sidecar`` /
  ``detected`` / ``layout``: the detection was too uncertain and the layout's convention was used, ACDC's
  base -> apex) and the detection's relative heart-area slope, group (``Info.cfg``).
* ``models``: per network (vcn may be null) its source, family, width, depth, input shape, parameter count.
* ``options``: the :class:`~deepstrain_jax.analysis.pipeline.AnalysisOptions` used.
* ``frames``: n, ed, es (0-based, cine order), their sources, time_s (frame k at ``k dt``; null without dt).
* ``volumes``: LV/RV EDV, ESV, SV (mL), EF (%), LV mass (g, 1.05 g/mL), ``partial`` (true when the stack does
  not cover the LV from base to apex: fewer than 5 slices, or a large cavity on the apical end slice; then the
  volumes are of the covered part only), and ``curves_ml`` {lv, rv, myo} per frame, from the segmentation on
  the native grid.
* ``strain``: ``global_pct`` {radial, circumferential, longitudinal} per frame (Green-Lagrange, percent, mean
  over the ED myocardium); ``strain_rate_per_s`` (1/s of the fractional strain, null without dt); ``indices``
  per direction: ess_pct, peak_pct, time_to_peak_s, srs_per_s, time_srs_s, sre_per_s, time_sre_s (times from ED;
  rates and times null without dt); ``legacy`` (legacy mode: the original's global radial/circumferential
  strain per frame, percent) or null; ``twist`` (:mod:`deepstrain_jax.cardiac.twist`, positive counter-clockwise
  seen from the apex): basal_slice, apical_slice (network grid), basal_rotation_deg, apical_rotation_deg and
  twist_deg per frame, peak_twist_deg, torsion_deg_per_cm (nulls with fewer than 2 myocardial slices);
  ``experimental`` {directions, note}: the directions whose values are not validated (:data:`EXPERIMENTAL`).
* ``aha``: n_segments, voxels per segment, ``ess_pct`` per direction (17 values, null for an empty segment),
  and over the whole cycle (:mod:`deepstrain_jax.cardiac.regional`): ``curves_pct`` per direction (frames x 17,
  cine order), ``strain_rate_per_s`` (frames x 17, null without dt), ``peak_pct`` and ``time_to_peak_s`` (17
  each; times from ED, null without dt) and ``dyssynchrony_ms`` (SD of the time to peak over segments 1-16);
  or null when the segments could not be placed.
* ``qc``: folded_fraction (det F <= 0 over the ED myocardium, all frames), its worst frame, det_f percentiles,
  cycle_closure_mm {mean, p95, in_plane_mean, in_plane_p95, through_plane_mean, through_plane_p95}
  (:func:`deepstrain_jax.analysis.qc.cycle_closure_mm`), centre_source (``vcn`` / ``fov``), centre_vox, crop_overhang_fraction (of the
  crop outside the field of view), coverage {n_slices, lv_slices, apex_covered}, warnings (list of strings).
* ``outputs``: file names written next to it.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jaxlib
import numpy as np

from deepstrain_jax.cardiac import regional, twist
from deepstrain_jax.cardiac.polar_map import segment_means, segment_reduce
from deepstrain_jax.ops.strain_rate import strain_indices
from deepstrain_jax.version import __version__

SCHEMA = "deepstrain-jax/results"
SCHEMA_VERSION = 1
DIRECTIONS = ("radial", "circumferential", "longitudinal")
# Strain directions not validated against a known truth on real hearts or on unseen phantom shapes (issue 12):
# longitudinal strain from a short-axis stack rests on the through-plane motion between thick slices; radial
# strain across a wall of a few voxels misses its phantom target. Marked in results.json, the CSVs and the report.
EXPERIMENTAL = ("radial", "longitudinal")
EXPERIMENTAL_NOTE = ("experimental: radial and longitudinal strain are not validated (longitudinal strain from a "
                     "short-axis stack rests on through-plane motion between thick slices; see docs/validation.md)")
CLOSURE_WARNING_MM = 4.0  # the report's red threshold (deepstrain_jax.report.html.QC_THRESHOLDS)
TOP_KEYS = ("schema", "schema_version", "software", "subject", "input", "models", "options", "frames", "volumes",
            "strain", "aha", "qc", "outputs")
OUTPUT_FILES = {"segmentation": "segmentation.nii.gz", "displacement": "displacement.nii.gz",
                "strain_radial": "strain_radial.nii.gz", "strain_circumferential": "strain_circumferential.nii.gz",
                "strain_longitudinal": "strain_longitudinal.nii.gz", "results": "results.json",
                "curves": "curves.csv", "aha_segments": "aha_segments.csv", "polar_map": "polar_map.png",
                "polar_map_svg": "polar_map.svg", "polar_map_pdf": "polar_map.pdf",
                "curves_plot": "curves.png", "report": "report.html", "segmentation_labels": "segmentation_labels.txt",
                "aha_curves": "aha_curves.csv", "qc_montage": "qc_montage.png", "run": "run.json"}
PUBLICATION_ONLY = ("polar_map_svg", "polar_map_pdf")  # written with AnalysisOptions.publication_figures only


def _f(x) -> float | None:
    """A JSON number, or null for None/NaN/Inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a, scale: float = 1.0) -> list:
    return [_f(v * scale) for v in np.asarray(a, np.float64).ravel()]


def _indices(curve, dt, ed: int, es: int) -> tuple[dict, list | None]:
    """Strain indices of one global curve (fraction, cine order) on the cycle started at ED, plus its rate."""
    c = np.roll(np.asarray(curve, np.float64), -ed)
    t = c.shape[0]
    k_es = (es - ed) % t
    out = {"ess_pct": _f(100 * c[k_es]), "peak_pct": None, "time_to_peak_s": None, "srs_per_s": None,
           "time_srs_s": None, "sre_per_s": None, "time_sre_s": None}
    if dt is None or t < 3:
        k = int(np.argmax(np.abs(c)))
        out["peak_pct"] = _f(100 * c[k]) if c[k] != 0 else None
        return out, None
    ind = strain_indices(c, dt, es_frame=k_es)
    out.update(peak_pct=_f(100 * ind.peak), time_to_peak_s=_f(ind.time_to_peak_s), srs_per_s=_f(ind.srs),
               time_srs_s=_f(ind.time_srs_s), sre_per_s=_f(ind.sre), time_sre_s=_f(ind.time_sre_s))
    rate = np.roll(np.gradient(c) / dt, ed)  # strain_rate's formula, back in cine order
    return out, _list(rate)


def _twist(grid, ed: int) -> dict:
    """LV rotation, twist and torsion (:mod:`deepstrain_jax.cardiac.twist`) on the network grid (slices base ->
    apex), JSON-ready."""
    affine = np.asarray(grid.affine, np.float64)
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    myo = np.asarray(grid.segmentation)[ed] == 2
    # The myocardial voxels' displacement, scaled to mm as it is read (float32, as the whole field was before).
    rotation = twist.slice_rotation_deg(np.asarray(grid.u_vox), myo, grid.spacing_mm, direction, base_first=True,
                                        u_scale=np.asarray(grid.spacing_mm, np.float32))
    tt = twist.twist_torsion(rotation, grid.spacing_mm, base_first=True)
    return {k: (_list(v) if isinstance(v, np.ndarray) else (_f(v) if isinstance(v, float) else v))
            for k, v in tt.items()}


def _regional(grid, dt, ed: int) -> dict:
    """The AHA segments over the whole cycle (:mod:`deepstrain_jax.cardiac.regional`), JSON-ready."""
    comps = {d: np.asarray(getattr(grid.strain.components, c)) for d, c in zip(DIRECTIONS, ("rr", "cc", "ll"))}
    curves = regional.segment_curves(comps, grid.aha)
    ind = regional.regional_indices(curves, dt, ed)
    return {"curves_pct": {d: [_list(row, 100.0) for row in c] for d, c in curves.items()},
            "strain_rate_per_s": {d: None if ind[d]["rate_per_s"] is None else [_list(row) for row in
                                                                                  ind[d]["rate_per_s"]]
                                  for d in DIRECTIONS},
            "peak_pct": {d: _list(ind[d]["peak"], 100.0) for d in DIRECTIONS},
            "time_to_peak_s": {d: None if ind[d]["time_to_peak_s"] is None else _list(ind[d]["time_to_peak_s"])
                               for d in DIRECTIONS},
            "dyssynchrony_ms": {d: _f(ind[d]["dyssynchrony_ms"]) for d in DIRECTIONS}}


def software() -> dict:
    """``results.json``'s ``software``: package, JAX and numpy versions and the backend the networks ran on."""
    return {"name": "deepstrain-jax", "version": __version__, "jax_version": jax.__version__,
            "jaxlib_version": jaxlib.__version__, "jax_backend": jax.default_backend(),
            "numpy_version": np.__version__}


def build_results(*, cine, networks, options, grid, volumes, ed, es, ed_source, es_source, dt, dt_source,
                  slice_axis, slice_order, slice_order_source, slice_order_slope, centre, centre_source, folding,
                  closure, legacy, warnings, frame_interval_note=None, coverage=None) -> dict:
    """Assemble the schema-1 dictionary (module docstring) from the pipeline's pieces."""
    t = int(cine.image.shape[3])
    curves = {d: np.asarray(getattr(grid.strain.global_mean, c)) for d, c in zip(DIRECTIONS, ("rr", "cc", "ll"))}
    indices, rates = {}, {}
    for d, curve in curves.items():
        indices[d], rates[d] = _indices(curve, dt, ed, es)
    aha = None
    if grid.aha is not None:
        comps = {d: np.asarray(getattr(grid.strain.components, c))[es] for d, c in
                 zip(DIRECTIONS, ("rr", "cc", "ll"))}
        aha = {"n_segments": 17,
               "voxels": [int(v) for v in segment_reduce(grid.aha, grid.aha, 17, "count")],
               "ess_pct": {d: _list(segment_means(v, grid.aha, 17), 100.0) for d, v in comps.items()}}
        aha.update(_regional(grid, dt, ed))
    n = grid.crop.size
    inside = [max(0, min(grid.crop.start[k] + n, grid.resampling.out_shape[k]) - max(grid.crop.start[k], 0))
              for k in range(2)]
    overhang = 1.0 - inside[0] * inside[1] / float(n * n)
    if overhang > 0.25:
        warnings.append(f"{100 * overhang:.0f}% of the network crop lies outside the field of view")
    if closure.get("mean") is not None and closure["mean"] > CLOSURE_WARNING_MM:
        warnings.append(f"cycle closure ED -> ES -> ED is {closure['mean']:.1f} mm on average (in-plane "
                        f"{closure['in_plane_mean']:.1f} mm, through-plane {closure['through_plane_mean']:.1f} mm), "
                        f"above {CLOSURE_WARNING_MM:g} mm: the motion is not self-consistent; check the strain")
    if folding["folded_fraction"] is not None and folding["folded_fraction"] > 0.01:
        warnings.append(f"{100 * folding['folded_fraction']:.1f}% of myocardial voxels fold (det F <= 0)")
    if not 10.0 <= volumes.lv_ef_pct <= 85.0:
        warnings.append(f"LV ejection fraction {volumes.lv_ef_pct:.0f}% is outside 10-85%: check ED/ES and the "
                        "segmentation")
    v = volumes
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "software": software(),
        "subject": cine.name,
        "input": {"path": str(cine.path), "kind": cine.kind, "cine": str(cine.cine_path),
                  "shape": [int(s) for s in cine.image.shape], "spacing_mm": _list(cine.spacing_mm),
                  "affine": [_list(row) for row in cine.affine], "frame_interval_s": _f(dt),
                  "frame_interval_source": dt_source, "frame_interval_note": frame_interval_note,
                  "slice_axis": int(slice_axis), "slice_order": slice_order,
                  "slice_order_source": slice_order_source, "slice_order_slope": _f(slice_order_slope),
                  "group": cine.group},
        "models": networks.describe(),
        "options": dataclasses.asdict(options),
        "frames": {"n": t, "ed": int(ed), "es": int(es), "ed_source": ed_source, "es_source": es_source,
                   "time_s": None if dt is None else _list(np.arange(t) * dt)},
        "volumes": {"lv_edv_ml": _f(v.lv_edv_ml), "lv_esv_ml": _f(v.lv_esv_ml), "lv_sv_ml": _f(v.lv_sv_ml),
                    "lv_ef_pct": _f(v.lv_ef_pct), "lv_mass_g": _f(v.lv_mass_g), "rv_edv_ml": _f(v.rv_edv_ml),
                    "rv_esv_ml": _f(v.rv_esv_ml), "rv_sv_ml": _f(v.rv_sv_ml), "rv_ef_pct": _f(v.rv_ef_pct),
                    "partial": bool(coverage["partial"]) if coverage else False,
                    "curves_ml": {"lv": _list(v.lv_volume_ml), "rv": _list(v.rv_volume_ml),
                                  "myo": _list(v.myo_volume_ml)}},
        "strain": {"global_pct": {d: _list(c, 100.0) for d, c in curves.items()},
                   "strain_rate_per_s": None if dt is None or t < 3 else rates,
                   "indices": indices,
                   "legacy": None if legacy is None else {k: _list(a, 100.0) for k, a in legacy.items()},
                   "twist": _twist(grid, ed),
                   "experimental": {"directions": list(EXPERIMENTAL), "note": EXPERIMENTAL_NOTE}},
        "aha": aha,
        "qc": {"folded_fraction": _f(folding["folded_fraction"]),
               "folded_fraction_worst_frame": _f(folding["folded_fraction_worst_frame"]),
               "worst_frame": folding["worst_frame"], "det_f": {k: _f(x) for k, x in folding["det_f"].items()},
               "cycle_closure_mm": {k: _f(x) for k, x in closure.items()}, "centre_source": centre_source,
               "centre_vox": _list(centre), "crop_overhang_fraction": _f(overhang),
               "coverage": None if coverage is None else {k: coverage[k] for k in ("n_slices", "lv_slices",
                                                                                   "apex_covered")},
               "warnings": list(warnings)},
        "outputs": {k: v for k, v in OUTPUT_FILES.items()
                    if options.publication_figures or k not in PUBLICATION_ONLY},
    }


def check_results(d: dict) -> None:
    """Raise ValueError when ``d`` is not a schema-1 results dictionary (keys, types, lengths)."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA or d.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"not a {SCHEMA} version {SCHEMA_VERSION} document")
    missing = [k for k in TOP_KEYS if k not in d]
    if missing:
        raise ValueError(f"missing keys {missing}")
    t = d["frames"]["n"]
    if not (isinstance(t, int) and t >= 2 and 0 <= d["frames"]["ed"] < t and 0 <= d["frames"]["es"] < t):
        raise ValueError("frames: n, ed, es inconsistent")
    for name, curves in (("strain.global_pct", d["strain"]["global_pct"]), ("volumes.curves_ml",
                                                                              d["volumes"]["curves_ml"])):
        for k, c in curves.items():
            if len(c) != t:
                raise ValueError(f"{name}.{k} has {len(c)} values for {t} frames")
    if set(d["strain"]["indices"]) != set(DIRECTIONS):
        raise ValueError("strain.indices must cover radial, circumferential, longitudinal")
    if d["aha"] is not None and any(len(v) != 17 for v in d["aha"]["ess_pct"].values()):
        raise ValueError("aha.ess_pct must have 17 values per direction")
    if not isinstance(d["qc"]["warnings"], list):
        raise ValueError("qc.warnings must be a list")
