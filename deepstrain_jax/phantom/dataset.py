"""Synthetic cohorts in the ACDC layout with an exact-truth sidecar.

One patient folder ``patientNNN/``:

* the ACDC files (:mod:`deepstrain_jax.data.acdc`): ``Info.cfg`` (``ED: 1``, ``ES`` 1-based, ``Group`` NOR, DCM,
  HCM, MINF or RV, ``Height`` cm, ``NbFrame``, ``Weight`` kg), ``patientNNN_4d.nii.gz`` (int16), and
  ``patientNNN_frameXX.nii.gz`` / ``patientNNN_frameXX_gt.nii.gz`` (uint8 labels) at ED and ES. Every file has
  the same affine (qform = sform, code 1) and the cine's ``pixdim[4]`` is the frame interval in seconds.
* ``patientNNN_truth.npz``: the arrays of :mod:`deepstrain_jax.phantom.truth` (``u_mm`` ``(T, X, Y, Z, 3)`` in
  mm along the **array axes of the stored ED image**, ``u_mask``, ``strain_rr/cc/ll`` ``(T, X, Y, Z)``,
  ``myo_mask``, ``aha``, ``labels`` ``(X, Y, Z, T)``, landmarks and trajectories in world mm and image indices)
  plus ``affine`` and ``slice_shift_mm`` ``(Z, 2)``.
* ``patientNNN_truth.json``: format tag, seeds, phenotype, model, slice order, shape, spacing, ED/ES (0-based),
  frame interval, cycle fractions, noise sigma and scaling, every phantom/acquisition/geometry parameter, and
  the curves (exact global strain and strain rate, voxel-mean strain over the ED myocardium, exact and
  label-count volumes).

Slice order: renders are base -> apex (slice 0 basal, det(affine) > 0 for the default axis-aligned stack).
``slice_order="apex_to_base"`` reverses axis 2 of every image and truth array, replaces the affine by
``A @ F`` with ``F`` the index flip ``k -> Z - 1 - k`` (so each voxel keeps its world position and det changes
sign), negates ``u_mm[..., 2]`` and reflects the slice index of the landmark positions. The world-frame
content (landmarks in mm, curves) does not change.

Cohorts (:func:`generate_dataset`): patient ``i`` (0-based) is named ``patient{i+1:03d}``, has seed
``SeedSequence([seed, i])`` and phenotype ``phenotypes[i % len(phenotypes)]``, so it does not depend on ``n``.
Each patient folder is written atomically; a re-run skips finished patients. ``dataset.json`` records the
settings, and a re-run with other settings into the same folder is refused. With ``rescan=True`` the layout is
``out/scan/patientNNN`` and ``out/rescan/patientNNN`` (same heart, independent noise, breath-hold shifts and
a small pose change).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deepstrain_jax.data import acdc
from deepstrain_jax.errors import InputError
from deepstrain_jax.io.atomic import atomic_directory, atomic_path, write_text
from deepstrain_jax.phantom import kinematics as kin
from deepstrain_jax.phantom import render, scanner, truth
from deepstrain_jax.phantom.params import PHENOTYPES, check_phenotype, validate_params  # noqa: F401

FORMAT = "deepstrain-phantom-truth/1"
ACDC_GROUP = {"NOR": "NOR", "DCM": "DCM", "HCM": "HCM", "MINF": "MINF", "ARV": "RV"}
SLICE_ORDERS = ("base_to_apex", "apex_to_base")
MODELS = ("A", "B")


@dataclasses.dataclass(frozen=True)
class PhantomCase:
    """A rendered phantom patient with its truth (render order: base -> apex)."""

    seed: int
    noise_seed: int
    params: object
    cine: render.RenderedCine
    arrays: dict
    curves: dict
    info: acdc.AcdcInfo
    rescan_of: int | None = None


def patient_seed(seed: int, index: int) -> int:
    """Seed of patient ``index`` (0-based) of a cohort with master ``seed``: ``SeedSequence([seed, index])``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _subject(seed: int, n_frames: int | None):
    rng = scanner.stream(seed, "subject")
    height = float(np.clip(rng.normal(170.0, 9.0), 150.0, 200.0))
    weight = rng.uniform(19.0, 30.0) * (height / 100.0) ** 2
    frames = int(rng.integers(25, 31)) if n_frames is None else int(n_frames)
    return round(height, 1), round(float(weight), 1), frames, rng


def make_case(seed: int, phenotype: str = "NOR", model: str = "A", n_frames: int | None = None, *,
              snr=None, oblique: bool = False, tilt_deg: float = 0.0, heart_rate_bpm: float | None = None,
              params_update: dict | None = None, **acquisition_fields) -> PhantomCase:
    """Sample, render and measure one phantom patient.

    Args:
      seed: integer seed; it fixes the heart (``kinematics.sample_params``), the protocol, the placement and
        the noise.
      phenotype: one of ``PHENOTYPES``; model: ``"A"`` or ``"B"``.
      n_frames: frames per cycle (default drawn from 25-30).
      snr: myocardial SNR: ``None`` (drawn U[10, 40]), a number, or a ``(low, high)`` range.
      oblique, tilt_deg: see :func:`deepstrain_jax.phantom.scanner.sample_geometry`.
      heart_rate_bpm: passed to ``sample_params`` (default: its own draw).
      params_update: fields of :class:`~deepstrain_jax.phantom.params.PhantomParams` that replace the drawn ones
        (e.g. ``nuisance``, ``base_angle_deg``), before the protocol is planned; the result is validated.
      **acquisition_fields: fixed :class:`~deepstrain_jax.phantom.scanner.Acquisition` fields.
    Returns:
      :class:`PhantomCase`.
    """
    phenotype = check_phenotype(phenotype)
    height, weight, frames, rng = _subject(seed, n_frames)
    if snr is not None:
        acquisition_fields["snr_myo"] = _draw_snr(snr, rng)
    params = kin.sample_params(int(seed), phenotype=phenotype, model=model, n_frames=frames,
                               heart_rate_bpm=heart_rate_bpm)
    if params_update:  # params_from_dict: unknown names refused, nuisance as a tuple of floats
        params = validate_params(kin.params_from_dict({**kin.params_to_dict(params), **params_update}))
    acq = scanner.sample_acquisition(seed, params, **acquisition_fields)
    geometry = scanner.sample_geometry(seed, params, acq, oblique=oblique, tilt_deg=tilt_deg)
    return _finish(seed, seed, params, geometry, acq, phenotype, height, weight)


def _finish(seed, noise_seed, params, geometry, acq, phenotype, height, weight, rescan_of=None) -> PhantomCase:
    cine = render.render_cine(params, geometry, acq, noise_seed)
    arrays, curves = truth.compute_truth(params, cine)
    info = acdc.AcdcInfo(ed=cine.ed, es=cine.es, group=ACDC_GROUP[phenotype], height_cm=height,
                         nb_frame=cine.image.shape[3], weight_kg=weight)
    return PhantomCase(seed=seed, noise_seed=noise_seed, params=params, cine=cine, arrays=arrays, curves=curves,
                       info=info, rescan_of=rescan_of)


def make_rescan(case: PhantomCase, *, rotation_deg: float = 3.0, shift_mm: float = 2.0,
                tilt_deg: float = 2.0) -> PhantomCase:
    """The same heart and protocol rendered again: independent noise and breath-hold shifts, small pose change.

    The pose change (:func:`deepstrain_jax.phantom.scanner.perturb_geometry`) is drawn from the case seed's
    ``rescan`` stream; the noise seed is ``SeedSequence([seed, 1])``.
    """
    geometry = scanner.perturb_geometry(case.cine.geometry, case.seed, case.cine.acquisition,
                                        rotation_deg=rotation_deg, shift_mm=shift_mm, tilt_deg=tilt_deg)
    noise_seed = int(np.random.SeedSequence([case.seed, 1]).generate_state(1)[0])
    return _finish(case.seed, noise_seed, case.params, geometry, case.cine.acquisition, case.params.phenotype,
                   case.info.height_cm, case.info.weight_kg, rescan_of=case.seed)


def scan_rescan_pair(seed: int, **kwargs) -> tuple[PhantomCase, PhantomCase]:
    """``(make_case(seed, **kwargs), make_rescan(that case))``."""
    case = make_case(seed, **kwargs)
    return case, make_rescan(case)


def flip_affine(affine, n_slices: int) -> np.ndarray:
    """Affine of the slice-reversed array: ``A @ F`` with ``F`` mapping ``k -> n_slices - 1 - k``."""
    f = np.eye(4)
    f[2, 2] = -1.0
    f[2, 3] = n_slices - 1
    return np.asarray(affine, np.float64) @ f


def _stored(case: PhantomCase, slice_order: str):
    """Images, labels, affine and truth arrays in the requested slice order."""
    cine, arrays = case.cine, dict(case.arrays)
    geometry = cine.geometry
    image, labels, affine = cine.image, cine.labels, geometry.affine
    arrays["affine"] = affine
    arrays["slice_shift_mm"] = geometry.slice_shift_mm
    if slice_order == "base_to_apex":
        return image, labels, affine, arrays
    nz = geometry.shape[2]
    flipped = {}
    for key, a in arrays.items():
        if key in ("u_mm", "strain_rr", "strain_cc", "strain_ll"):
            a = a[:, :, :, ::-1]
        elif key in ("u_mask", "myo_mask", "aha", "labels"):
            a = a[:, :, ::-1]
        elif key == "slice_shift_mm":
            a = a[::-1]
        elif key in ("landmarks_vox", "landmark_trajectories_vox"):
            a = a.copy()
            a[..., 2] = nz - 1 - a[..., 2]
        flipped[key] = np.ascontiguousarray(a)
    flipped["u_mm"][..., 2] *= -1.0
    flipped["affine"] = flip_affine(affine, nz)
    return (np.ascontiguousarray(image[:, :, ::-1]), np.ascontiguousarray(labels[:, :, ::-1]), flipped["affine"],
            flipped)


def _jsonable(x):
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, bool, int)) or x is None:
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    a = np.asarray(x)
    return _jsonable(a.tolist()) if a.ndim else _jsonable(a.item())


def write_case(folder, name: str, case: PhantomCase, slice_order: str = "base_to_apex") -> None:
    """Write ``case`` into ``folder`` as ACDC files plus ``{name}_truth.npz`` and ``{name}_truth.json``.

    Not atomic by itself: :func:`save_case` wraps it in an atomic folder.
    """
    if slice_order not in SLICE_ORDERS:
        raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {slice_order!r}")
    folder = Path(folder)
    image, labels, affine, arrays = _stored(case, slice_order)
    cine = case.cine
    acdc.write_patient(folder, name, image, affine, case.info,
                       {cine.ed: labels[..., cine.ed], cine.es: labels[..., cine.es]},
                       frame_interval_s=cine.frame_interval_s)
    with atomic_path(folder / f"{name}_truth.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    meta = {
        "format": FORMAT, "name": name, "seed": case.seed, "noise_seed": case.noise_seed,
        "rescan_of": case.rescan_of, "phenotype": case.params.phenotype, "model": case.params.model,
        "group": case.info.group, "slice_order": slice_order, "shape": list(image.shape),
        "spacing_mm": cine.geometry.spacing_mm, "affine": affine, "ed": cine.ed, "es": cine.es,
        "frame_interval_s": cine.frame_interval_s, "frame_times_s": kin.frame_times_s(case.params),
        "t_frac": cine.t_frac, "noise_sigma": cine.sigma, "intensity_scale": cine.scale,
        "snr_myo": cine.acquisition.snr_myo, "params": case.params, "acquisition": cine.acquisition,
        "geometry_render_order": cine.geometry.to_json(), "curves": case.curves,
        "conventions": {
            "u_mm": "(T, X, Y, Z, 3) Lagrangian displacement in mm on the stored ED grid; component c along array "
                    "axis c; u_vox = u_mm / spacing_mm; valid where u_mask",
            "voxel_position": "voxel (i, j, k) images world point affine @ (i, j, k, 1) + D[:, :2] @ slice_shift_mm[k]"
                              " (D = direction cosines of the affine)",
            "frames": "0-based; ED = frame 0", "strain": "Green-Lagrange, (r, c, l) basis of kinematics.strain_rcl",
        },
    }
    write_text(folder / f"{name}_truth.json", json.dumps(_jsonable(meta), indent=1) + "\n")


def save_case(path, case: PhantomCase, slice_order: str = "base_to_apex") -> Path:
    """Write ``case`` atomically to the folder ``path`` (its name is the patient name); returns ``path``."""
    path = Path(path)
    with atomic_directory(path) as tmp:
        write_case(tmp, path.name, case, slice_order)
    return path


def load_truth(folder) -> tuple[dict, dict]:
    """Read a patient's sidecar: ``(arrays, meta)`` from ``{name}_truth.npz`` and ``{name}_truth.json``.

    Raises:
      InputError: missing or unreadable sidecar files, or an unknown format tag.
    """
    folder = Path(folder)
    name = folder.resolve().name
    npz, js = folder / f"{name}_truth.npz", folder / f"{name}_truth.json"
    for p in (npz, js):
        if not p.is_file():
            raise InputError("missing phantom truth file", p)
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable truth JSON ({type(e).__name__}: {e})", js) from None
    if meta.get("format") != FORMAT:
        raise InputError(f"unknown truth format {meta.get('format')!r} (expected {FORMAT!r})", js)
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/zlib/ValueError on a damaged file
        raise InputError(f"unreadable truth arrays ({type(e).__name__}: {e})", npz) from None
    return arrays, meta


def render_inputs(meta: dict):
    """Rebuild ``(params, acquisition, geometry)`` of a patient from its truth JSON (:func:`load_truth`).

    ``render.render_cine(params, acquisition, geometry, meta["noise_seed"])`` then reproduces the stored cine
    (in render order, base -> apex) on the same machine, and ``params`` evaluates the exact kinematics anywhere.
    """
    params = kin.params_from_dict(meta["params"])
    # JSON has no infinity: an SNR of inf (no noise) is stored as the string "inf".
    acquisition = scanner.Acquisition(**{k: float(v) if isinstance(v, str) and k != "slice_profile" else v
                                         for k, v in meta["acquisition"].items()})
    g = meta["geometry_render_order"]
    geometry = scanner.Geometry(**{k: (tuple(v) if k == "shape" else
                                       float(v) if k in ("b0_hotspot_width_mm", "b0_peak_hz") else
                                       np.asarray(v, np.float64)) for k, v in g.items()})
    return params, acquisition, geometry


def load_case(folder) -> tuple[acdc.AcdcPatient, dict, dict]:
    """Load a phantom patient folder: ``(acdc.load_patient(folder), arrays, meta)``."""
    return acdc.load_patient(folder), *load_truth(folder)


def _draw_snr(snr, rng: np.random.Generator) -> float:
    if isinstance(snr, (list, tuple)):
        lo, hi = (float(v) for v in snr)
        return float(rng.uniform(lo, hi))
    return float(snr)


def check_options(n: int, seed: int, phenotypes, snr, model: str, n_frames, slice_order: str) -> dict:
    """Validate :func:`generate_dataset` options; returns them normalised. Raises ValueError naming the problem."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    phenotypes = list(PHENOTYPES) if not phenotypes else [check_phenotype(p) for p in phenotypes]
    if snr is not None:
        values = list(snr) if isinstance(snr, (list, tuple)) else [snr]
        if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                                for v in values):
            raise ValueError(f"snr must be a positive number or a (low, high) pair, got {snr!r}")
        if len(values) == 2 and values[0] > values[1]:
            raise ValueError(f"snr range must be (low, high), got {snr!r}")
        snr = values[0] if len(values) == 1 else tuple(values)
    if model not in MODELS:
        raise ValueError(f"model must be 'A' or 'B', got {model!r}")
    if n_frames is not None and (not isinstance(n_frames, (int, np.integer)) or not 2 <= n_frames <= 200):
        raise ValueError(f"n_frames must be an integer in [2, 200], got {n_frames!r}")
    if slice_order not in SLICE_ORDERS:
        raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {slice_order!r}")
    return dict(n=int(n), seed=int(seed), phenotypes=phenotypes, snr=snr, model=model, n_frames=n_frames,
                slice_order=slice_order)


def generate_dataset(out_dir, n: int, seed: int = 0, *, phenotypes: Sequence[str] | None = None, snr=None,
                     model: str = "A", n_frames: int | None = None, slice_order: str = "base_to_apex",
                     rescan: bool = False, oblique: bool = False,
                     progress: Callable[[int, int, str, bool, float], None] | None = None,
                     **acquisition_fields) -> list[Path]:
    """Generate (or finish) a cohort of ``n`` phantom patients in ``out_dir`` (module docstring for the layout).

    Args:
      out_dir: destination folder (created).
      n: number of patients; seed: master seed (>= 0).
      phenotypes: cycle of phenotypes assigned in order (default all five).
      snr: myocardial SNR: ``None`` (each patient draws U[10, 40]), a number, or a ``(low, high)`` range.
      model: ``"A"`` (cylinder) or ``"B"`` (ellipsoid); n_frames: frames per cycle (default 25-30 per patient).
      slice_order: ``"base_to_apex"`` (default) or ``"apex_to_base"``.
      rescan: also write a rescan of every patient (``scan/`` and ``rescan/`` sub-folders).
      oblique: oblique stack orientation in scanner coordinates.
      progress: called after each patient as ``progress(done, n, name, skipped, seconds)``.
      **acquisition_fields: fixed acquisition fields (e.g. ``supersample_inplane=2``).
    Returns:
      the patient folders (scan folders first, then rescans when ``rescan``).
    Raises:
      ValueError: bad options. InputError: ``out_dir`` holds a cohort made with other settings.
    """
    opts = check_options(n, seed, phenotypes, snr, model, n_frames, slice_order)
    fields = {f.name for f in dataclasses.fields(scanner.Acquisition)}
    unknown = set(acquisition_fields) - fields
    if unknown:
        raise ValueError(f"unknown acquisition field(s) {sorted(unknown)}; known: {sorted(fields)}")
    # Check the fixed fields now, not after the manifest is written (the spacing default must not clash).
    probe = dict(acquisition_fields)
    probe.setdefault("slice_spacing_mm", max(10.0, float(probe.get("slice_thickness_mm", 8.0))))
    probe.setdefault("slice_thickness_mm", min(8.0, float(probe["slice_spacing_mm"])))
    scanner.Acquisition(**probe)
    out = Path(out_dir)
    settings = {k: v for k, v in opts.items() if k != "n"}
    settings.update(rescan=bool(rescan), oblique=bool(oblique), acquisition=acquisition_fields, format=FORMAT)
    settings = _jsonable(settings)
    manifest = out / "dataset.json"
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a folder", out)
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable dataset manifest ({type(e).__name__}: {e})", manifest) from None
        old_settings = {k: v for k, v in old.items() if k != "n"}
        if old_settings != settings:
            diff = sorted(k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k))
            raise InputError(f"the folder holds a cohort generated with other settings ({', '.join(diff)}); "
                             f"use a new folder or the same settings", manifest)
        n_total = max(int(old.get("n", 0)), opts["n"])
    elif out.exists() and any(p.name.startswith("patient") for p in out.iterdir()):
        raise InputError("the folder holds patient folders but no dataset.json; use a new folder", out)
    else:
        n_total = opts["n"]
    out.mkdir(parents=True, exist_ok=True)
    write_text(manifest, json.dumps({**settings, "n": n_total}, indent=1) + "\n")
    for stale in out.rglob(".patient*.partial"):  # left by a killed run (atomic_directory's temporary folders)
        shutil.rmtree(stale, ignore_errors=True)

    folders, rescans = [], []
    for i in range(opts["n"]):
        name = f"patient{i + 1:03d}"
        scan_dir = out / "scan" / name if rescan else out / name
        rescan_dir = out / "rescan" / name
        todo = [p for p in ([scan_dir, rescan_dir] if rescan else [scan_dir]) if not p.is_dir()]
        start = time.perf_counter()
        if todo:
            case = make_case(patient_seed(opts["seed"], i), opts["phenotypes"][i % len(opts["phenotypes"])],
                             opts["model"], opts["n_frames"], snr=opts["snr"], oblique=oblique, **acquisition_fields)
            if scan_dir in todo:
                save_case(scan_dir, case, opts["slice_order"])
            if rescan_dir in todo:
                save_case(rescan_dir, make_rescan(case), opts["slice_order"])
        folders.append(scan_dir)
        rescans.append(rescan_dir)
        if progress is not None:
            progress(i + 1, opts["n"], name, not todo, time.perf_counter() - start)
    return folders + (rescans if rescan else [])

