"""Phantom study: the whole analysis (`deepstrain_jax.analysis.pipeline.analyze`) on held-out phantoms, against exact truth.

Population (:func:`make_population`): every phenotype x SNR x geometry (Model A cylinder, Model B ellipsoid)
x stored slice order, ``n`` each, seeds from 900 000 (never used in training), written in the ACDC layout with
their truth sidecars. Each subject is analysed from its folder exactly as a user would (slice order from the
sidecar, ED/ES from Info.cfg) and measured (:func:`evaluate_subject`) on:

* segmentation, native grid: Dice and Hausdorff distance (mm) of RV (1), myocardium (2), LV cavity (3) at ED
  and ES against the rendered labels;
* volumes: LV EDV, ESV, EF and mass (1.05 g/mL) from the segmentation against the exact phantom volumes;
* motion, native grid, ED myocardium: dense end-point error per frame, at ES, in-plane and through-plane
  (:func:`deepstrain_jax.metrics.epe_components`), per AHA segment (truth segments); landmark end-point error at
  ES (12 tracked material points, :func:`deepstrain_jax.metrics.landmark_epe`);
* strain: global ESS, SRs and SRe per direction against the exact curves (:mod:`deepstrain_jax.analysis.phantom_check`),
  per-segment ESS error, and the ESS error split on the network grid into
  ``discretisation = S(u_true, L_true) - exact``, ``motion = S(u_pred, L_true) - S(u_true, L_true)`` and
  ``segmentation = S(u_pred, L_pred) - S(u_pred, L_true)`` (``S`` the global strain of
  :func:`deepstrain_jax.ops.strain.cardiac_strain`; the three parts sum to the total error).

:func:`summarise` turns the rows into markdown tables shaped like the paper's Tables I-III, a CSV and figures
(Bland-Altman of EF and global ESS, mean per-segment ESS error bull's-eyes, EPE over the cycle).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Callable

import numpy as np

from deepstrain_jax.phantom.params import PHENOTYPES

LABELS = ((1, "RV"), (2, "MYO"), (3, "LV"))
DIRECTIONS = (("circumferential", "cc"), ("radial", "rr"), ("longitudinal", "ll"))
FIRST_SEED = 900_000


def population(*, n: int = 1, phenotypes=PHENOTYPES, snrs=(10.0, 30.0), models=("A", "B"),
               slice_orders=("base_to_apex", "apex_to_base")) -> list[dict]:
    """The study design: one dict (name, seed, phenotype, snr, model, slice_order) per subject."""
    cells = list(itertools.product(range(n), models, slice_orders, snrs, phenotypes))
    return [{"name": f"s{k:03d}_{p.lower()}_{m}_{'b2a' if o == 'base_to_apex' else 'a2b'}_snr{snr:g}",
             "seed": FIRST_SEED + k, "phenotype": p, "snr": float(snr), "model": m, "slice_order": o}
            for k, (_, m, o, snr, p) in enumerate(cells)]


FAMILY_C_FIRST_SEED = 960_000
FAMILY_C = ("C: geometry B's ellipsoid with a rounder or a more pointed apex (base angle 103-110 or 130-137 deg; "
            "training: 115-125), rigid, ellipticalising and shearing motion on top of the heart's own "
            "(Model B's k4-k13; training: none), the long axis tilted up to 20 deg from the slice normal (training: 0), "
            "an oblique stack in scanner coordinates, 5 mm slices with gaps (training: 6-10 mm)")


def family_c_population(*, n: int = 1, phenotypes=PHENOTYPES, snrs=(10.0, 30.0),
                        slice_orders=("base_to_apex", "apex_to_base")) -> list[dict]:
    """Phantoms of a family no shipped network was trained on (:data:`FAMILY_C`), one dict per subject.

    Each subject's shape and nuisance motion are drawn from its seed (``FAMILY_C_FIRST_SEED + k``), so the design
    is the same on every machine; the draws are stored in the dict (``params_update``, ``tilt_deg``,
    ``acquisition``) and reach :func:`make_population`.
    """
    out = []
    cells = list(itertools.product(range(n), slice_orders, snrs, phenotypes))
    for k, (_, o, snr, p) in enumerate(cells):
        seed = FAMILY_C_FIRST_SEED + k
        rng = np.random.default_rng([seed, 3])
        angle = float(rng.uniform(103.0, 110.0) if rng.uniform() < 0.5 else rng.uniform(130.0, 137.0))
        sign = rng.choice([-1.0, 1.0], size=10)
        size = np.array([0.04, 0.03, 0.03, 0.03, 0.05, 0.05, 0.05, 2.0, 2.0, 3.0])
        nuisance = [float(v) for v in sign * size * rng.uniform(0.5, 1.0, size=10)]
        out.append({"name": f"c{k:03d}_{p.lower()}_C_{'b2a' if o == 'base_to_apex' else 'a2b'}_snr{snr:g}",
                    "seed": seed, "phenotype": p, "snr": float(snr), "model": "B", "family": "C",
                    "slice_order": o, "params_update": {"base_angle_deg": round(angle, 2), "nuisance": nuisance},
                    "tilt_deg": 20.0, "oblique": True,
                    "acquisition": {"slice_thickness_mm": 5.0}})
    return out


def make_population(root, design: list[dict], *, n_frames: int | None = None, progress: Callable | None = None,
                    **acquisition) -> list[Path]:
    """Write the design's phantoms under ``root`` (resumable: finished folders are kept).

    A design dict may carry ``params_update``, ``tilt_deg``, ``oblique`` and ``acquisition`` (its own protocol
    fields, over ``acquisition``) for :func:`deepstrain_jax.phantom.dataset.make_case`.
    """
    from deepstrain_jax.phantom import dataset

    root = Path(root)
    folders = []
    for i, d in enumerate(design):
        folder = root / d["name"]
        if not (folder / f"{d['name']}_truth.json").is_file():
            extra = {"params_update": d.get("params_update"), "oblique": bool(d.get("oblique", False)),
                     "tilt_deg": float(d.get("tilt_deg", 0.0))}
            case = dataset.make_case(d["seed"], d["phenotype"], model=d["model"], n_frames=n_frames, snr=d["snr"],
                                     **extra, **{**acquisition, **d.get("acquisition", {})})
            dataset.save_case(folder, case, slice_order=d["slice_order"])
        folders.append(folder)
        if progress:
            progress(i + 1, len(design), d["name"])
    return folders


def _on_network_grid(result, arrays) -> tuple[np.ndarray, np.ndarray]:
    """The truth displacement (network voxels) and labels on the grid the networks saw."""
    from deepstrain_jax.data.preprocessing import resample_displacement, resample_window

    g = result.grid
    if result.results["input"]["slice_axis"] != 2:
        raise ValueError("phantoms are stored with the slice axis last")
    u_vox, _ = resample_displacement(arrays["u_mm"], arrays["u_mask"], g.resampling, g.crop)
    labels = np.moveaxis(resample_window(arrays["labels"], g.resampling, g.crop, 0), 3, 0)
    if g.slices_reversed:
        u_vox = u_vox[:, :, :, ::-1] * np.array([1.0, 1.0, -1.0], np.float32)
        labels = labels[..., ::-1]
    return u_vox, labels


def _global_strain(u_vox, labels_ed, spacing, frame) -> dict:
    from deepstrain_jax.ops.strain import cardiac_strain

    s = cardiac_strain((u_vox[frame] * spacing.astype(np.float32))[None], labels_ed, spacing)
    return {c: 100.0 * float(np.asarray(getattr(s.global_mean, c))[0]) for _, c in DIRECTIONS}


def evaluate_subject(folder, networks, design: dict | None = None) -> dict:
    """Analyse one phantom folder and measure it against its truth (module docstring). Returns a flat row
    (floats) plus ``epe_per_frame_mm`` (T,), ``epe_es_segment_mm`` (17,) and ``segment_error_pp``
    {direction: (17,)} arrays."""
    from deepstrain_jax import metrics
    from deepstrain_jax.analysis import phantom_check
    from deepstrain_jax.analysis.pipeline import analyze
    from deepstrain_jax.cardiac.polar_map import segment_means
    from deepstrain_jax.phantom.dataset import load_truth

    result = analyze(folder, networks=networks)
    r = result.results
    arrays, meta = load_truth(folder)
    ed, es = int(meta["ed"]), int(meta["es"])
    spacing = np.asarray(meta["spacing_mm"], np.float64)
    design = {k: v for k, v in (design or {"phenotype": meta["phenotype"], "model": meta["model"],
                                           "slice_order": meta["slice_order"], "snr": meta["snr_myo"]}).items()
              if isinstance(v, (str, int, float, bool))}   # the design's nested draws stay in the phantom's sidecar
    row = {"subject": Path(folder).name, **design}
    seg, truth_labels = result.segmentation, arrays["labels"]
    for phase, t in (("ed", ed), ("es", es)):
        dice = metrics.dice(seg[..., t], truth_labels[..., t])
        surf = metrics.surface_metrics(seg[..., t], truth_labels[..., t], spacing, on_empty="nan")
        for k, (_, name) in enumerate(LABELS):
            row[f"dice_{name}_{phase}"] = float(dice[k])
            row[f"hd_{name}_{phase}_mm"] = float(surf.hd_mm[k])

    exact = meta["curves"]["volumes_ml"]
    lv, myo = np.asarray(exact["lv_cavity_ml"]), np.asarray(exact["lv_myocardium_ml"])
    v = r["volumes"]
    truth_v = {"lv_edv_ml": lv[ed], "lv_esv_ml": lv[es], "lv_ef_pct": 100 * (lv[ed] - lv[es]) / lv[ed],
               "lv_mass_g": 1.05 * myo[ed]}
    for key, value in truth_v.items():
        row[f"{key}_true"], row[f"{key}_pred"] = float(value), v[key]

    affine = result.affine
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    u_pred = result.displacement_mm @ direction  # world -> file array axes (direction orthonormal)
    u_pred = np.moveaxis(u_pred, 3, 0)           # (T, X, Y, Z, 3)
    myo_mask = arrays["myo_mask"]
    epe = metrics.dense_epe(u_pred, arrays["u_mm"], myo_mask)
    parts = metrics.epe_components(u_pred[es], arrays["u_mm"][es], myo_mask)
    row["epe_per_frame_mm"] = np.asarray(epe.mean_mm)
    row["epe_es_mm"] = float(epe.mean_mm[es])
    row["epe_es_inplane_mm"] = float(parts.in_plane.mean_mm)
    row["epe_es_throughplane_mm"] = float(parts.through_plane.mean_mm)
    seg_epe = segment_means(np.where(myo_mask, epe.error_mm[es], np.nan), arrays["aha"], 17)
    row["epe_es_segment_mm"] = seg_epe
    row["epe_es_segment_max_mm"] = float(np.nanmax(seg_epe)) if np.isfinite(seg_epe).any() else math.nan
    try:
        marks = metrics.landmark_epe(u_pred[es], arrays["landmarks_vox"],
                                     arrays["landmark_trajectories_vox"][es] * spacing, spacing)
        row["landmark_epe_es_mm"] = float(marks.mean_mm)
    except ValueError:  # a landmark outside the stack (short coverage): no landmark error for this subject
        row["landmark_epe_es_mm"] = math.nan
    row["truth_motion_es_mm"] = float(np.linalg.norm(arrays["u_mm"][es], axis=-1)[myo_mask].mean())

    rows, segments = phantom_check.compare(r, folder)
    for c in rows:
        if c.quantity.startswith("global"):
            key = c.quantity.replace("global ", "").replace(" ", "_").lower()
            row[f"{key}_true"], row[f"{key}_pred"] = c.true, c.measured
    row["segment_error_pp"] = {d: s["measured"] - s["true"] for d, s in segments.items()}
    for d, s in segments.items():
        row[f"segment_{d}_mae_pp"] = s["mean_abs_error_pp"]

    # ESS error split on the network grid.
    g = result.grid
    u_true_net, labels_net = _on_network_grid(result, arrays)
    s_disc = _global_strain(u_true_net, labels_net[ed], g.spacing_mm, es)
    s_motion = _global_strain(g.u_vox, labels_net[ed], g.spacing_mm, es)
    s_full = _global_strain(g.u_vox, g.segmentation[ed], g.spacing_mm, es)
    for name, c in DIRECTIONS:
        exact_ess = 100.0 * meta["curves"]["global_strain"][c][es]
        row[f"{name}_ess_error_discretisation_pp"] = s_disc[c] - exact_ess
        row[f"{name}_ess_error_motion_pp"] = s_motion[c] - s_disc[c]
        row[f"{name}_ess_error_segmentation_pp"] = s_full[c] - s_motion[c]
    row["qc_folded_fraction"] = r["qc"]["folded_fraction"]
    closure = r["qc"]["cycle_closure_mm"]
    row["qc_cycle_closure_mm"] = closure["mean"]
    row["qc_cycle_closure_in_plane_mm"] = closure["in_plane_mean"]
    row["qc_cycle_closure_through_plane_mm"] = closure["through_plane_mean"]
    return row
