"""Training subjects on the network grid: one cine, resampled, centred, cropped and z-scored, with its truth.

A :class:`Subject` is what the batch samplers (:mod:`deepstrain_jax.training_data.batches`) draw from. It is built once per
patient (a phantom rendered on the fly, or an ACDC-layout folder) and cached by the pools
(:mod:`deepstrain_jax.training_data.pools`). Conventions:

* **Network grid** (``cfg``: :class:`SubjectConfig`): the cine is resampled to ``inplane_mm`` in-plane and
  ``n_slices`` slices spanning the stack (:func:`deepstrain_jax.data.preprocessing.plan_resampling`, ``align``
  ``"centre"`` by default: the field of view stays centred, and reversing the slice order commutes with the
  resampling), then an ``crop x crop`` in-plane window is cut around the centre (padding with 0 where it
  overhangs). Images resample linearly (order 1), labels by nearest neighbour (order 0), both clamp-to-edge.
* **Arrays**: time first, then the three spatial axes: ``image (T, N, N, Z)``; ``u_vox (T, N, N, Z, 3)`` with
  component ``c`` along array axis ``c``, in voxels of the network grid (``u_mm = u_vox * spacing_mm``).
* **Slice order**: the networks expect base -> apex (slice 0 basal). Arrays handed to :func:`make_subject` are
  reversed along the slice axis when ``slice_order="apex_to_base"`` (``u[..., 2]`` changes sign). Phantom
  renders are base -> apex; written phantoms record their order in the truth JSON; ACDC folders are taken as
  stored (ACDC is stored base -> apex, which is what the original networks were trained on) unless a
  ``slice_order`` hint is given.
* **Centre** (``cfg.centre``): ``"labels"`` puts the in-plane centre of mass of the ED LV myocardium (label 2,
  all slices, on the resampled grid; :func:`myocardium_centroid`) at the crop centre, optionally moved by a
  seeded jitter uniform in a disc of radius ``centre_jitter_mm``; ``"fov"`` uses the centre of the field of view
  (the original ``test.py``).
* **Intensities**: each cropped frame volume is z-scored, ``(x - mean) / (std + 1e-8)`` over ``(N, N, Z)``
  (:func:`deepstrain_jax.data.preprocessing.zscore`, the original's per-volume normalisation).
* **Displacement truth** (phantoms): ``u_mm`` is a vector field sampled at the native ED voxel centres and known
  on ``u_mask``. Each component is resampled by normalised linear interpolation,
  ``u(x) = L[m u](x) / L[m](x)`` with ``L`` the order-1 resampling and ``m`` the mask, so values next to the
  mask's edge are not pulled towards the zeros outside it; the network-grid mask is ``L[m] >= 1 - 1e-6``
  (every interpolation neighbour known: there ``u`` is the exact linear interpolant of the truth). Then
  ``u_vox = u_mm / spacing_mm`` of the network grid. A backward warp ``V_t(X + u_vox(X))`` maps frame t onto
  ED (:func:`deepstrain_jax.ops.warp.warp`).
* **VCN view**: the ED and ES frames of the resampled (uncropped) stack on a ``vcn_canvas`` canvas centred on the
  field of view, block-averaged by ``vcn_factor`` (:func:`make_vcn_input`), with the myocardium centre of mass of
  each frame in the canvas' heat-map pixel coordinates (:func:`deepstrain_jax.models.vcn.to_heatmap_coords`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from deepstrain_jax.data import acdc
from deepstrain_jax.data import preprocessing as pp
from deepstrain_jax.data.preprocessing import (  # noqa: F401
    block_mean_zscore,
    make_vcn_input,
    myocardium_centroid,
    resample_displacement,
    resample_window,
)
from deepstrain_jax.errors import InputError
from deepstrain_jax.labels import LV_MYOCARDIUM
from deepstrain_jax.phantom import dataset

MYOCARDIUM = LV_MYOCARDIUM
SLICE_ORDERS = ("base_to_apex", "apex_to_base")


class SubjectConfig(NamedTuple):
    """How a cine is brought onto the network grid (module docstring).

    Attributes:
      inplane_mm: in-plane voxel size of the network grid, mm.
      n_slices: number of slices of the network grid (they span the acquired stack).
      crop: in-plane size ``N`` of the square crop.
      centre: ``"labels"`` (ED myocardium centre of mass) or ``"fov"`` (field-of-view centre).
      centre_jitter_mm: radius of the seeded random offset added to the centre (0 disables), mm.
      align: resampling alignment, ``"centre"`` or ``"corner"`` (dipy, as the original).
      vcn_canvas: in-plane size of the VCN canvas on the network grid (``vcn_canvas / vcn_factor`` VCN pixels).
      vcn_factor: block-averaging factor from the network grid to the VCN grid.
    """

    inplane_mm: float = 1.25
    n_slices: int = 16
    crop: int = 128
    centre: str = "labels"
    centre_jitter_mm: float = 0.0
    align: str = "centre"
    vcn_canvas: int = 256
    vcn_factor: int = 2


def check_config(cfg: SubjectConfig) -> SubjectConfig:
    """Validate ``cfg`` (a :class:`SubjectConfig` or a mapping of its fields); raises ValueError naming the field."""
    if not isinstance(cfg, SubjectConfig):
        cfg = SubjectConfig(**dict(cfg))
    if not (np.isfinite(cfg.inplane_mm) and cfg.inplane_mm > 0):
        raise ValueError(f"inplane_mm must be positive, got {cfg.inplane_mm}")
    for name in ("n_slices", "crop", "vcn_canvas", "vcn_factor"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(cfg, name)}")
    if cfg.vcn_canvas % cfg.vcn_factor:
        raise ValueError(f"vcn_canvas ({cfg.vcn_canvas}) must be divisible by vcn_factor ({cfg.vcn_factor})")
    if cfg.centre not in ("labels", "fov"):
        raise ValueError(f"centre must be 'labels' or 'fov', got {cfg.centre!r}")
    if not (np.isfinite(cfg.centre_jitter_mm) and cfg.centre_jitter_mm >= 0):
        raise ValueError(f"centre_jitter_mm must be >= 0, got {cfg.centre_jitter_mm}")
    if cfg.align not in ("centre", "corner"):
        raise ValueError(f"align must be 'centre' or 'corner', got {cfg.align!r}")
    return cfg


class Subject(NamedTuple):
    """One cine on the network grid (module docstring). ``N = cfg.crop``, ``Z = cfg.n_slices``, ``M`` the VCN size.

    Attributes:
      image: ``(T, N, N, Z)`` float32, each frame volume z-scored.
      labels: ``(T, N, N, Z)`` uint8 ACDC labels, 0 where not ``labelled``.
      labelled: ``(T,)`` bool, frames whose labels are known (phantoms: all; ACDC: the ``_gt`` frames).
      u_vox: ``(T, N, N, Z, 3)`` float32 truth displacement ED -> t in network voxels, or ``None``.
      u_mask: ``(N, N, Z)`` bool, ED-grid voxels where ``u_vox`` is known, or ``None``.
      spacing_mm: ``(3,)`` float64 network-grid voxel size, mm.
      ed, es: 0-based frames; frame_interval_s: seconds between frames (NaN when unknown).
      vcn_image: ``(2, M, M, Z)`` float32 ED and ES on the VCN grid, each slice z-scored.
      vcn_centre: ``(2, 2)`` float32 myocardium centre of mass of ED and ES in VCN pixels (NaN when unlabelled).
      intensity_mean, intensity_scale: ``(T,)`` float32: ``image = (x - mean) / scale`` on the cropped frames.
      resampling: the :class:`~deepstrain_jax.data.preprocessing.Resampling` from the (slice-ordered) native grid.
      crop: the :class:`~deepstrain_jax.data.preprocessing.Crop` of the network window on the resampled grid.
      vcn_crop: the :class:`~deepstrain_jax.data.preprocessing.Crop` of the VCN canvas on the resampled grid.
      centre_vox: ``(2,)`` float64 crop centre on the resampled grid (jitter included).
      slices_reversed: whether the native slice axis was reversed to make it base -> apex.
      name: a label for messages.
    """

    image: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    u_vox: np.ndarray | None
    u_mask: np.ndarray | None
    spacing_mm: np.ndarray
    ed: int
    es: int
    frame_interval_s: float
    vcn_image: np.ndarray
    vcn_centre: np.ndarray
    intensity_mean: np.ndarray
    intensity_scale: np.ndarray
    resampling: pp.Resampling
    crop: pp.Crop
    vcn_crop: pp.Crop
    centre_vox: np.ndarray
    slices_reversed: bool
    name: str

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[0])


def _as_frames(labels, shape4, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels as ``(X, Y, Z, T)`` uint8 plus a ``(T,)`` known-mask, from an array or a {frame: volume} dict."""
    t = shape4[3]
    out = np.zeros(shape4, dtype=np.uint8)
    known = np.zeros(t, dtype=bool)
    if labels is None:
        return out, known
    if isinstance(labels, dict):
        items = labels.items()
    else:
        arr = np.asarray(labels)
        if arr.shape != tuple(shape4):
            raise ValueError(f"{name}: labels of shape {arr.shape} do not match the cine {tuple(shape4)}")
        items = ((k, arr[..., k]) for k in range(t))
    for frame, lab in items:
        lab = np.asarray(lab)
        if not 0 <= int(frame) < t:
            raise ValueError(f"{name}: label frame {frame} outside [0, {t})")
        if lab.shape != tuple(shape4[:3]):
            raise ValueError(f"{name}: labels of frame {frame} have shape {lab.shape}, expected {shape4[:3]}")
        if lab.size and (lab.min() < 0 or lab.max() > 3):
            raise ValueError(f"{name}: labels of frame {frame} have values outside {{0, 1, 2, 3}}")
        out[..., int(frame)] = lab
        known[int(frame)] = True
    return out, known


def make_subject(image, spacing_mm, *, labels=None, u_mm=None, u_mask=None, ed: int = 0, es: int | None = None,
                 frame_interval_s: float | None = None, cfg: SubjectConfig = SubjectConfig(),
                 slice_order: str = "base_to_apex", jitter_seed=None, name: str = "") -> Subject:
    """Bring a native cine and its truth onto the network grid (module docstring for every step).

    Args:
      image: ``(X, Y, Z, T)`` native cine (any real dtype); axes 0, 1 in-plane, axis 2 the slice axis.
      spacing_mm: ``(3,)`` native voxel size, mm.
      labels: ``(X, Y, Z, T)`` labels of every frame, or ``{frame: (X, Y, Z)}`` for some frames, or ``None``.
      u_mm: ``(T, X, Y, Z, 3)`` Lagrangian displacement ED -> t on the native ED grid, mm, component ``c``
        along array axis ``c``; u_mask: ``(X, Y, Z)`` where it is known (all voxels when ``None``).
      ed, es: 0-based frames (``es`` defaults to ``ed``); frame_interval_s: seconds, or ``None``.
      cfg: :class:`SubjectConfig`.
      slice_order: order of the given slice axis, ``"base_to_apex"`` or ``"apex_to_base"`` (then reversed).
      jitter_seed: seed of the centre jitter (required when ``cfg.centre_jitter_mm > 0``).
      name: a label for messages.
    Returns:
      :class:`Subject`.
    Raises:
      ValueError: shapes that disagree, bad spacing or frames, ``cfg.centre = "labels"`` without ED
        myocardium labels, non-finite images or displacements.
    """
    cfg = check_config(cfg)
    image = np.asarray(image)
    if image.ndim != 4 or min(image.shape) < 1:
        raise ValueError(f"{name}: image must be a non-empty (X, Y, Z, T) cine, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name}: the image has NaN or Inf voxels")
    t = image.shape[3]
    es = ed if es is None else es
    for key, v in (("ed", ed), ("es", es)):
        if not 0 <= int(v) < t:
            raise ValueError(f"{name}: {key} = {v} outside [0, {t})")
    if slice_order not in SLICE_ORDERS:
        raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {slice_order!r}")
    lab, labelled = _as_frames(labels, image.shape, name)
    if u_mm is not None:
        u_mm = np.asarray(u_mm, dtype=np.float32)
        if u_mm.shape != (t, *image.shape[:3], 3):
            raise ValueError(f"{name}: u_mm must have shape {(t, *image.shape[:3], 3)}, got {u_mm.shape}")
        u_mask = np.ones(image.shape[:3], bool) if u_mask is None else np.asarray(u_mask, bool)
        if u_mask.shape != image.shape[:3]:
            raise ValueError(f"{name}: u_mask must have shape {image.shape[:3]}, got {u_mask.shape}")
        if not np.all(np.isfinite(u_mm[:, u_mask])):
            raise ValueError(f"{name}: u_mm has NaN or Inf values inside u_mask")
    reverse = slice_order == "apex_to_base"
    if reverse:
        image, lab = image[:, :, ::-1], lab[:, :, ::-1]
        if u_mm is not None:
            u_mm = u_mm[:, :, :, ::-1] * np.array([1.0, 1.0, -1.0], np.float32)
            u_mask = u_mask[:, :, ::-1]

    plan = pp.plan_resampling(image.shape[:3], spacing_mm, inplane_mm=cfg.inplane_mm, n_slices=cfg.n_slices,
                              align=cfg.align)
    if cfg.centre == "labels":
        centre = myocardium_centroid(resample_window(lab[..., ed], plan, None, 0)) if labelled[ed] else None
        if centre is None:
            raise ValueError(f"{name}: centre='labels' needs LV myocardium (label 2) in the ED labels (frame {ed})")
    else:
        centre = (np.asarray(plan.out_shape[:2], np.float64) - 1.0) / 2.0
    if cfg.centre_jitter_mm > 0:
        if jitter_seed is None:
            raise ValueError("centre_jitter_mm > 0 needs a jitter_seed")
        rng = np.random.default_rng(jitter_seed)
        r = cfg.centre_jitter_mm / cfg.inplane_mm * np.sqrt(rng.uniform())
        a = rng.uniform(0.0, 2.0 * np.pi)
        centre = centre + r * np.array([np.cos(a), np.sin(a)])
    crop = pp.plan_crop(plan.out_shape, centre, cfg.crop)

    raw = np.moveaxis(resample_window(image, plan, crop, 1), 3, 0)
    mean = raw.mean(axis=(1, 2, 3))
    scale = raw.std(axis=(1, 2, 3)) + 1e-8
    labels_net = np.ascontiguousarray(np.moveaxis(resample_window(lab, plan, crop, 0), 3, 0))
    u_vox = mask = None
    if u_mm is not None:
        u_vox, mask = resample_displacement(u_mm, u_mask, plan, crop)

    # The VCN canvas is centred on the field of view; only ED and ES are kept (the targets need labels).
    vcn_crop = pp.plan_crop(plan.out_shape, (np.asarray(plan.out_shape[:2]) - 1.0) / 2.0, cfg.vcn_canvas)
    canvas = resample_window(image[..., [ed, es]], plan, vcn_crop, 1)
    canvas_lab = resample_window(lab[..., [ed, es]], plan, vcn_crop, 0)
    vcn_image, vcn_centre = [], []
    for k, frame in enumerate((ed, es)):
        vcn_image.append(block_mean_zscore(canvas[..., k], cfg.vcn_factor))
        c = myocardium_centroid(canvas_lab[..., k]) if labelled[frame] else None
        vcn_centre.append(np.full(2, np.nan) if c is None else (c - (cfg.vcn_factor - 1) / 2) / cfg.vcn_factor)
    dt = float("nan") if frame_interval_s is None else float(frame_interval_s)
    return Subject(
        image=pp.zscore(raw, axes=(1, 2, 3)), labels=labels_net,
        labelled=labelled, u_vox=u_vox, u_mask=mask, spacing_mm=np.asarray(plan.out_spacing_mm, np.float64),
        ed=int(ed), es=int(es), frame_interval_s=dt, vcn_image=np.stack(vcn_image).astype(np.float32),
        vcn_centre=np.stack(vcn_centre).astype(np.float32), intensity_mean=mean.astype(np.float32),
        intensity_scale=scale.astype(np.float32), resampling=plan, crop=crop, vcn_crop=vcn_crop,
        centre_vox=np.asarray(centre, np.float64), slices_reversed=bool(reverse), name=str(name))


def subject_from_phantom(case, cfg: SubjectConfig = SubjectConfig(), *, jitter_seed=None,
                         name: str | None = None) -> Subject:
    """A :class:`Subject` from an in-memory :class:`deepstrain_jax.phantom.dataset.PhantomCase` (base -> apex).

    Uses the labels of every frame, ``u_mm``/``u_mask`` from the case's truth arrays, the render's spacing,
    ED/ES and frame interval. ``jitter_seed`` defaults to the case seed.
    """
    cine = case.cine
    return make_subject(cine.image, cine.geometry.spacing_mm, labels=cine.labels, u_mm=case.arrays["u_mm"],
                        u_mask=case.arrays["u_mask"], ed=cine.ed, es=cine.es,
                        frame_interval_s=cine.frame_interval_s, cfg=cfg,
                        jitter_seed=case.seed if jitter_seed is None else jitter_seed,
                        name=f"phantom seed {case.seed}" if name is None else name)


def has_phantom_truth(folder) -> bool:
    """Whether ``folder`` holds a phantom truth sidecar (``{name}_truth.json``)."""
    folder = Path(folder)
    return (folder / f"{folder.resolve().name}_truth.json").is_file()


def subject_from_acdc(folder: str | os.PathLike, cfg: SubjectConfig = SubjectConfig(), *,
                      slice_order: str | None = None, use_truth: bool = True, jitter_seed=None) -> Subject:
    """A :class:`Subject` from an ACDC-layout patient folder (real ACDC or a written phantom).

    Labels come from the ``_frameXX_gt`` files (usually ED and ES). When ``use_truth`` and the folder holds a
    phantom truth sidecar (:mod:`deepstrain_jax.phantom.dataset`), the labels of every frame and
    ``u_mm``/``u_mask`` are taken from it, and its recorded slice order is used.

    Args:
      folder: the patient folder.
      cfg: :class:`SubjectConfig`.
      slice_order: ``"base_to_apex"`` or ``"apex_to_base"``: the order of the stored slices. ``None``: the
        sidecar's order for a phantom (with or without ``use_truth``), otherwise as stored (taken to be base ->
        apex).
      use_truth: take labels and displacements from the phantom sidecar when present (``False`` trains on a
        written phantom as on real ACDC: labels at ED and ES only, no ``u_vox``).
      jitter_seed: seed of the centre jitter.
    Raises:
      InputError: unreadable files, missing ED labels with ``cfg.centre = "labels"``, inconsistent sidecar.
    """
    patient = acdc.load_patient(folder)
    cine = patient.cine
    labels = {k: v.array for k, v in patient.labels.items()}
    u_mm = u_mask = None
    order = slice_order
    if has_phantom_truth(folder):
        # The slice order is a fact about the stored arrays, so it is honoured even without the truth.
        arrays, meta = dataset.load_truth(folder)
        order = meta.get("slice_order", "base_to_apex") if slice_order is None else slice_order
    if use_truth and has_phantom_truth(folder):
        expect = (cine.array.shape[3], *cine.array.shape[:3], 3)
        if arrays["u_mm"].shape != expect or arrays["labels"].shape != cine.array.shape:
            raise InputError(f"truth arrays u_mm {arrays['u_mm'].shape} / labels {arrays['labels'].shape} do not "
                             f"match the cine {cine.array.shape}", folder)
        labels, u_mm, u_mask = arrays["labels"], arrays["u_mm"], arrays["u_mask"]
    try:
        return make_subject(cine.array, cine.spacing_mm, labels=labels, u_mm=u_mm, u_mask=u_mask,
                            ed=patient.info.ed, es=patient.info.es, frame_interval_s=cine.frame_interval_s,
                            cfg=cfg, slice_order=order or "base_to_apex", jitter_seed=jitter_seed,
                            name=patient.name)
    except ValueError as e:
        raise InputError(str(e), folder) from None


def subject_from_real_case(case, cfg: SubjectConfig = SubjectConfig(), *, jitter_seed=None) -> Subject:
    """:func:`make_subject` of a :class:`deepstrain_jax.data.acdc_real.RealCase` (stored base -> apex, as ACDC);
    a case that cannot be brought onto the grid is an InputError naming it."""
    try:
        return make_subject(case.image, case.spacing_mm, labels=case.labels, ed=case.ed, es=case.es, cfg=cfg,
                               jitter_seed=jitter_seed, name=f"{case.name} ({case.form})")
    except ValueError as e:
        raise InputError(str(e), case.name) from None


# ---- A subject as flat arrays (the pools' disk cache) and back. ----

_SCALARS = ("ed", "es", "frame_interval_s", "slices_reversed", "name")


def subject_to_arrays(s: Subject) -> dict:
    """A flat ``{name: ndarray}`` view of ``s`` for ``np.savez`` (``None`` fields are left out)."""
    out = {}
    for key, v in s._asdict().items():
        if v is None:
            continue
        if isinstance(v, pp.Resampling):
            for k, a in v._asdict().items():
                out[f"resampling.{k}"] = np.asarray(a)
        elif isinstance(v, pp.Crop):
            out[f"{key}.start"] = np.asarray(v.start)
            out[f"{key}.size"] = np.asarray(v.size)
            out[f"{key}.full_shape"] = np.asarray(v.full_shape)
        else:
            out[key] = np.asarray(v)
    return out


def subject_from_arrays(d) -> Subject:
    """Inverse of :func:`subject_to_arrays` (from a dict or an open ``NpzFile``)."""
    def tup(a):
        return tuple(int(x) for x in np.asarray(a))

    plan = pp.Resampling(tup(d["resampling.in_shape"]), tup(d["resampling.out_shape"]),
                         *(np.asarray(d[f"resampling.{k}"]) for k in ("in_spacing_mm", "out_spacing_mm", "ratio",
                                                                       "offset")))
    crops = {k: pp.Crop(tup(d[f"{k}.start"]), int(d[f"{k}.size"]), tup(d[f"{k}.full_shape"]))
             for k in ("crop", "vcn_crop")}
    fields = {}
    for key in Subject._fields:
        if key == "resampling":
            fields[key] = plan
        elif key in crops:
            fields[key] = crops[key]
        elif key in _SCALARS:
            fields[key] = np.asarray(d[key]).item()
        else:
            fields[key] = np.asarray(d[key]) if key in d else None
    fields["ed"], fields["es"] = int(fields["ed"]), int(fields["es"])
    fields["slices_reversed"] = bool(fields["slices_reversed"])
    fields["name"] = str(fields["name"])
    fields["frame_interval_s"] = float(fields["frame_interval_s"])
    return Subject(**fields)


# ---- The inverse of a known displacement (truth for the reversed pairs t -> ED). ----

def inverse_displacement(u_vox, mask, *, max_iterations: int = 60, tol_vox: float = 1e-3
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of a displacement field known on ``mask``, on the same grid: the truth of the pair ``[t, ED]``.

    ``u`` maps the ED grid to frame t: the point ``X`` is at ``x = X + u(X)`` in frame t (the backward warp
    ``V_t(X + u(X))`` maps frame t onto ED). Its inverse ``v`` on the frame-t grid maps back: ``x + v(x) = X``,
    so ``V_ED(x + v(x))`` is frame t. Solved per voxel ``x`` by the fixed point ``X <- x - u(X)`` with ``u``
    sampled trilinearly (clamp to the edge, :func:`deepstrain_jax.ops.warp.warp`'s rule), which contracts where
    ``|du/dX| < 1`` (any deformation without folding that is not too strong). It is the exact inverse of the
    linear interpolant of ``u``: the same field the forward truth is on the network grid.

    Args:
      u_vox: ``(X, Y, Z, 3)`` displacement ED -> t on the ED grid, voxels (component c along axis c).
      mask: ``(X, Y, Z)`` bool, where ``u_vox`` is known.
      max_iterations, tol_vox: the fixed point stops when every point moves less than ``tol_vox``.
    Returns:
      ``(v_vox (X, Y, Z, 3) float32, v_mask (X, Y, Z) bool)``: ``v_mask`` where the iteration converged to a
      point ``X`` whose every trilinear neighbour lies in ``mask`` (there ``|X + u(X) - x| <= tol_vox``); ``v``
      is 0 elsewhere.
    """
    u = np.asarray(u_vox, np.float32)
    mask = np.asarray(mask, bool)
    if u.ndim != 4 or u.shape[-1] != 3 or u.shape[:3] != mask.shape:
        raise ValueError(f"u_vox must be (X, Y, Z, 3) on mask's grid {mask.shape}, got {u.shape}")
    v = np.zeros_like(u)
    v_mask = np.zeros(mask.shape, bool)
    if not mask.any():
        return v, v_mask
    shape = np.asarray(mask.shape)
    # Candidates: the box around the image of the mask, x = X + u(X), one voxel wider.
    image = np.argwhere(mask) + u[mask]
    lo = np.maximum(np.floor(image.min(axis=0)) - 1, 0).astype(int)
    hi = np.minimum(np.ceil(image.max(axis=0)) + 2, shape).astype(int)
    if np.any(hi <= lo):
        return v, v_mask
    x = np.stack(np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)), indexing="ij"),
                 axis=-1).reshape(-1, 3)

    def sample(field, points):  # trilinear, clamp to the edge (mode "nearest": the warp's rule)
        return ndimage.map_coordinates(field, points.T, order=1, mode="nearest", output=np.float32)

    comps = [np.ascontiguousarray(u[..., c]) for c in range(3)]
    X = x.copy()
    active = np.arange(len(x))
    for _ in range(max_iterations):
        p = X[active]
        new = x[active] - np.stack([sample(f, p) for f in comps], axis=-1)
        moved = np.abs(new - p).max(axis=1)
        X[active] = new
        active = active[moved >= tol_vox]
        if active.size == 0:
            break
    converged = np.ones(len(x), bool)
    converged[active] = False
    inside = np.all((X >= 0) & (X <= shape - 1), axis=1)
    known = sample(mask.astype(np.float32), X) >= 1.0 - 1e-6
    residual = np.abs(X + np.stack([sample(f, X) for f in comps], axis=-1) - x).max(axis=1)
    ok = converged & inside & known & (residual <= 2 * tol_vox)
    idx = tuple(x[ok].astype(int).T)
    v[idx] = X[ok] - x[ok]
    v_mask[idx] = True
    return v, v_mask
