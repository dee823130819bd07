"""CMAC-style landmark evaluation of a predicted displacement field, with a simple documented layout.

CMAC (Tobon-Gomez et al., MedIA 2013) distributes landmark tracks from two observers as per-frame VTK files
whose layout we could not verify. This evaluator reads a plain layout
instead; convert the VTK points into it once (world millimetres, CMAC's tag frame negates x and y)::

    <root>/metadata.csv                      columns: subject, ed, es   (0-based frames of the cine)
    <root>/<subject>/landmarks_obs1.csv      columns: frame, landmark, x_mm, y_mm, z_mm
    <root>/<subject>/landmarks_obs2.csv      (one file per observer; at least one; every landmark at ED and ES)

Coordinates are world (scanner) millimetres in the frame of the NIfTI affine of the predicted field.

Prediction: ``<pred>/<subject>/displacement.nii.gz`` (the ``analyze`` output): a 5D NIfTI ``(X, Y, Z, T, 3)``
float32, the Lagrangian displacement ED -> t in mm on the subject's ED grid, with its affine. Components are
along the **array axes** (``u_mm[..., c]`` along axis ``c``), unless ``components="world"`` or the header's
``descrip`` says ``components=world`` (then they are world-frame vectors).

Error, per observer and landmark ``j`` (world frame; ``D`` the affine's direction cosines, ``X_j`` the voxel
position of the observer's ED landmark, ``u`` trilinearly interpolated, clamp-to-edge):

    e_j = || x_j(ED) + D u(X_j, ES) - x_j(ES) ||_2   (mm).

A zero field gives ``||x_j(ES) - x_j(ED)||``, the landmark's true displacement. The inter-observer distance at
ES, ``||x_j^obs1(ES) - x_j^obs2(ES)||``, bounds the achievable error.
"""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import numpy as np

from deepstrain_jax.errors import InputError
from deepstrain_jax.ops.grid import direction_from_affine, mm_to_voxel
from deepstrain_jax.ops.warp import interpolate
from eval.datasets.label_files import check_folder

OBSERVERS = ("obs1", "obs2")
LANDMARK_COLUMNS = ("frame", "landmark", "x_mm", "y_mm", "z_mm")


def _read_csv(path: Path, required) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    if not rows:
        raise InputError("no rows", path)
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", path)
    return rows


def read_metadata(root) -> dict[str, tuple[int, int]]:
    """``metadata.csv`` -> ``{subject: (ed, es)}`` (0-based frames)."""
    path = Path(root) / "metadata.csv"
    out = {}
    for n, row in enumerate(_read_csv(path, ("subject", "ed", "es")), start=2):
        try:
            out[row["subject"].strip()] = (int(row["ed"]), int(row["es"]))
        except ValueError:
            raise InputError(f"line {n}: ed and es must be integers", path) from None
    return out


def read_landmarks(path) -> dict[int, np.ndarray]:
    """A landmark CSV -> ``{frame: (L, 3) world mm}``, landmarks ordered by their id."""
    path = Path(path)
    by_frame: dict[int, dict[int, list[float]]] = {}
    for n, row in enumerate(_read_csv(path, LANDMARK_COLUMNS), start=2):
        try:
            frame, landmark = int(row["frame"]), int(row["landmark"])
            xyz = [float(row[c]) for c in ("x_mm", "y_mm", "z_mm")]
        except ValueError:
            raise InputError(f"line {n}: frame and landmark must be integers, coordinates numbers", path) from None
        if not np.all(np.isfinite(xyz)):
            raise InputError(f"line {n}: coordinates must be finite", path)
        by_frame.setdefault(frame, {})[landmark] = xyz
    ids = sorted(next(iter(by_frame.values())))
    for frame, pts in by_frame.items():
        if sorted(pts) != ids:
            raise InputError(f"frame {frame} has landmarks {sorted(pts)}, frame-wise sets must agree ({ids})", path)
    return {frame: np.asarray([pts[i] for i in ids], dtype=np.float64) for frame, pts in sorted(by_frame.items())}


def load_displacement(path, components: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Load a 5D displacement NIfTI: ``(u_mm (T, X, Y, Z, 3) along array axes, affine (4, 4))``.

    ``components``: ``"array"``, ``"world"`` (converted to array axes with the affine's direction cosines), or
    ``"auto"``: ``world`` if the header ``descrip`` contains ``components=world``, else ``array``.
    """
    import nibabel as nib

    path = Path(path)
    if components not in ("auto", "array", "world"):
        raise ValueError(f"components must be 'auto', 'array' or 'world', got {components!r}")
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        img = nib.load(str(path))
        u = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as e:  # nibabel raises many types for corrupt files
        raise InputError(f"not a readable NIfTI image ({type(e).__name__}: {' '.join(str(e).split())})",
                         path) from None
    if u.ndim != 5 or u.shape[-1] != 3:
        raise InputError(f"expected a 5D (X, Y, Z, T, 3) displacement, got shape {u.shape}", path)
    if not np.all(np.isfinite(u)):
        raise InputError("displacement contains NaN or Inf", path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if components == "auto":
        descrip = np.asarray(img.header["descrip"]).item()
        descrip = descrip.decode("latin-1") if isinstance(descrip, bytes) else str(descrip)
        components = "world" if "components=world" in descrip else "array"
    u = np.moveaxis(u, 3, 0)
    if components == "world":
        u = u @ np.linalg.inv(direction_from_affine(affine)).T
    return u, affine


def save_displacement(path, u_mm, affine, components: str = "array") -> None:
    """Write ``u_mm`` ``(T, X, Y, Z, 3)`` as the 5D ``(X, Y, Z, T, 3)`` float32 NIfTI of :func:`load_displacement`.

    The header's ``descrip`` records ``components=<components>`` (``array`` or ``world``), intent ``vector``.
    """
    import nibabel as nib

    from deepstrain_jax.io.atomic import atomic_path

    u = np.moveaxis(np.asarray(u_mm, dtype=np.float32), 0, 3)
    img = nib.Nifti1Image(u, np.asarray(affine, dtype=np.float64))
    img.header.set_intent("vector")
    img.header["descrip"] = f"displacement mm components={components}".encode()
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def landmark_errors(u_es_mm, affine, ed_world, es_world) -> np.ndarray:
    """``(L,)`` errors ``||x(ED) + D u(X, ES) - x(ES)||`` in mm (module docstring); ``u_es_mm`` ``(X, Y, Z, 3)``."""
    u = np.asarray(u_es_mm, dtype=np.float64)
    pts = np.asarray(mm_to_voxel(ed_world, affine), dtype=np.float64)
    outside = np.any((pts < -1e-6) | (pts > np.asarray(u.shape[:3]) - 1 + 1e-6), axis=1)
    if outside.any():
        raise ValueError(f"landmarks {np.flatnonzero(outside).tolist()} lie outside the displacement grid")
    with jax.enable_x64(True):
        sampled = np.asarray(interpolate(u, np.clip(pts, 0, np.asarray(u.shape[:3]) - 1)), dtype=np.float64)
    moved = ed_world + sampled @ direction_from_affine(affine).T
    return np.linalg.norm(moved - es_world, axis=-1)


def evaluate_subject(subject_dir, pred_dir, ed: int, es: int, components: str = "auto") -> list[dict]:
    """Rows ``{"subject", "observer", "landmark", "error_mm", "motion_mm", "interobserver_mm"}`` at ES."""
    subject_dir = Path(subject_dir)
    subject = subject_dir.name
    tracks = {}
    for obs in OBSERVERS:
        path = subject_dir / f"landmarks_{obs}.csv"
        if path.is_file():
            tracks[obs] = (path, read_landmarks(path))
    if not tracks:
        raise InputError(f"no landmarks_{OBSERVERS[0]}.csv or landmarks_{OBSERVERS[1]}.csv", subject_dir)
    disp_path = Path(pred_dir) / subject / "displacement.nii.gz"
    u, affine = load_displacement(disp_path, components)
    if es >= u.shape[0]:
        raise InputError(f"has {u.shape[0]} frames; ES is frame {es} (0-based)", disp_path)
    es_points = {}
    for obs, (path, track) in tracks.items():
        if ed not in track or es not in track:
            raise InputError(f"needs landmarks at ED (frame {ed}) and ES (frame {es})", path)
        es_points[obs] = track[es]
    inter = (np.linalg.norm(es_points["obs1"] - es_points["obs2"], axis=-1)
             if len(es_points) == 2 and es_points["obs1"].shape == es_points["obs2"].shape else None)
    rows = []
    for obs, (path, track) in tracks.items():
        try:
            err = landmark_errors(u[es], affine, track[ed], track[es])
        except ValueError as e:
            raise InputError(f"{e} of {disp_path}", path) from None
        motion = np.linalg.norm(track[es] - track[ed], axis=-1)
        for j in range(err.size):
            rows.append({"subject": subject, "observer": obs, "landmark": j, "error_mm": float(err[j]),
                         "motion_mm": float(motion[j]),
                         "interobserver_mm": float(inter[j]) if inter is not None else float("nan")})
    return rows


def evaluate_cmac(root, pred_dir, components: str = "auto", progress_fn=None) -> list[dict]:
    """Landmark rows of every subject in ``metadata.csv`` (see :func:`evaluate_subject`)."""
    root = check_folder(root, "CMAC landmarks root")
    pred_dir = check_folder(pred_dir, "predictions")
    meta = read_metadata(root)
    rows = []
    for i, (subject, (ed, es)) in enumerate(sorted(meta.items())):
        if progress_fn is not None:
            progress_fn(i, len(meta), subject)
        rows += evaluate_subject(check_folder(root / subject, "subject"), pred_dir, ed, es, components)
    return rows


def markdown_summary(rows: list[dict]) -> str:
    """Per subject and observer, and pooled over all landmarks: mean ± SD of the ES error (mm)."""
    lines = ["# CMAC landmarks: end-point error at ES (mm)", "",
             "| subject | observer | n | error mean ± SD | true motion mean | inter-observer mean |",
             "|---|---|---|---|---|---|"]
    keys = sorted({(r["subject"], r["observer"]) for r in rows}) + [("all", obs) for obs in OBSERVERS]
    for subject, obs in keys:
        sel = [r for r in rows if r["observer"] == obs and subject in ("all", r["subject"])]
        if not sel:
            continue
        e = np.asarray([r["error_mm"] for r in sel])
        sd = f" ± {e.std(ddof=1):.2f}" if e.size > 1 else ""
        inter = np.asarray([r["interobserver_mm"] for r in sel])
        inter_text = f"{np.nanmean(inter):.2f}" if np.any(np.isfinite(inter)) else "n/a"
        lines.append(f"| {subject} | {obs} | {e.size} | {e.mean():.2f}{sd} "
                     f"| {np.mean([r['motion_mm'] for r in sel]):.2f} | {inter_text} |")
    return "\n".join(lines) + "\n"


def write_cmac_subject(root, subject: str, tracks_world_mm: dict) -> Path:
    """Write ``<root>/<subject>/landmarks_<obs>.csv`` from ``{obs: (T, L, 3) world mm}`` (all frames)."""
    from deepstrain_jax.io.atomic import write_text

    folder = Path(root) / subject
    folder.mkdir(parents=True, exist_ok=True)
    for obs, track in tracks_world_mm.items():
        if obs not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {obs!r}")
        track = np.asarray(track, dtype=np.float64)
        lines = [",".join(LANDMARK_COLUMNS)]
        for t in range(track.shape[0]):
            for j in range(track.shape[1]):
                lines.append(f"{t},{j}," + ",".join(repr(float(v)) for v in track[t, j]))
        write_text(folder / f"landmarks_{obs}.csv", "\n".join(lines) + "\n")
    return folder


def write_cmac_metadata(root, frames: dict) -> Path:
    """Write ``<root>/metadata.csv`` from ``{subject: (ed, es)}`` (0-based)."""
    from deepstrain_jax.io.atomic import write_text

    lines = ["subject,ed,es"] + [f"{s},{int(ed)},{int(es)}" for s, (ed, es) in sorted(frames.items())]
    path = Path(root) / "metadata.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    return path
