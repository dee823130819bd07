"""Ventricular volumes over the cardiac cycle, ED/ES frames and clinical indices from ACDC label maps.

Conventions:

* Labels are ACDC: 1 RV cavity, 2 LV myocardium, 3 LV cavity (0 background). A label series is time-first,
  ``(T, X, Y, Z)``; a single frame is ``(X, Y, Z)``. (A NIfTI cine loads as ``(X, Y, Z, T)``: move the last
  axis first, ``np.moveaxis(a, -1, 0)``.)
* Volumes in mL: ``V = N_voxels * prod(spacing_mm) / 1000`` (1 mL = 1000 mm^3), as in the ACDC evaluation code.
* Frames are 0-based indices into the time axis (ACDC ``Info.cfg`` ED/ES are 1-based: subtract 1).
* Clinical indices (Bernard et al., IEEE TMI 2018): ``SV = EDV - ESV``, ``EF = 100 SV / EDV`` (%),
  LV mass (g) = ED myocardial volume (mL) x 1.05 g/mL; RV volumes and EF likewise from label 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from deepstrain_jax.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY, check_labels, check_spacing

MYOCARDIAL_DENSITY_G_PER_ML = 1.05


class LabelVolumes(NamedTuple):
    """Volumes in mL per frame: shape ``(T,)`` for a series, ``()`` for one frame."""

    lv_ml: np.ndarray
    myo_ml: np.ndarray
    rv_ml: np.ndarray


def label_volumes_ml(labels, spacing_mm) -> LabelVolumes:
    """LV cavity (3), LV myocardium (2) and RV cavity (1) volumes: ``V_l = #{x : labels[x] = l} prod(s) / 1000``.

    Args:
      labels: ``(T, X, Y, Z)`` or ``(X, Y, Z)`` ACDC labels.
      spacing_mm: ``(3,)`` voxel size in mm along X, Y, Z.
    Returns:
      :class:`LabelVolumes` of float64 arrays in mL, ``(T,)`` or ``()``.
    """
    a = check_labels(labels, (3, 4))
    voxel_ml = float(np.prod(check_spacing(spacing_mm))) / 1000.0

    def volume_ml(value: int) -> np.ndarray:
        return np.asarray(np.sum(a == value, axis=(-3, -2, -1)), dtype=np.float64) * voxel_ml

    return LabelVolumes(lv_ml=volume_ml(LV_CAVITY), myo_ml=volume_ml(LV_MYOCARDIUM), rv_ml=volume_ml(RV_CAVITY))


def _check_frame(name: str, frame, n: int) -> int:
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise ValueError(f"{name} must be an integer frame index, got {frame!r}")
    if not 0 <= int(frame) < n:
        raise ValueError(f"{name}={int(frame)} is outside the {n} frames (0-based; ACDC Info.cfg is 1-based)")
    return int(frame)


def select_ed_es(lv_volume_ml, ed: int | None = None, es: int | None = None) -> tuple[int, int]:
    """End-diastolic and end-systolic frames: ``ED = argmax_t V_LV(t)``, ``ES = argmin_t V_LV(t)``.

    Frames that are given are only checked. ES is searched over all frames, not only after ED (a cine need not
    start at ED). Ties go to the earliest frame (``np.argmax``/``np.argmin``); a constant curve gives
    ``ED = ES = 0``.

    Args:
      lv_volume_ml: ``(T,)`` LV cavity volume per frame.
      ed, es: optional 0-based frame indices.
    Returns:
      ``(ed, es)`` Python ints.
    """
    v = np.asarray(lv_volume_ml, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"lv_volume_ml must be a non-empty 1-D curve (T,), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("lv_volume_ml contains NaN or infinite values")
    ed = int(np.argmax(v)) if ed is None else _check_frame("ed", ed, v.size)
    es = int(np.argmin(v)) if es is None else _check_frame("es", es, v.size)
    return ed, es


class ClinicalIndices(NamedTuple):
    """Clinical indices (mL, %, g) with the frames used and the volume curves (``(T,)``, mL)."""

    ed: int
    es: int
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_pct: float
    lv_mass_g: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_pct: float
    lv_volume_ml: np.ndarray
    myo_volume_ml: np.ndarray
    rv_volume_ml: np.ndarray


def _ejection_fraction_pct(edv: float, esv: float, what: str, ed: int) -> float:
    if edv <= 0:
        raise ValueError(f"{what} EDV is zero (no {what} cavity voxels in ED frame {ed}); ejection fraction undefined")
    return 100.0 * (edv - esv) / edv


def clinical_indices(labels, spacing_mm, ed: int | None = None, es: int | None = None, *,
                     include_rv: bool = True) -> ClinicalIndices:
    """LV and RV volumes, SV, EF and LV mass from a label series.

        EDV = V(ED), ESV = V(ES), SV = EDV - ESV, EF = 100 SV / EDV,  LV mass = 1.05 g/mL x V_myo(ED).

    ED/ES come from the LV cavity curve (:func:`select_ed_es`) unless given; the same frames serve the RV.

    Args:
      labels: ``(T, X, Y, Z)`` ACDC labels (T >= 1).
      spacing_mm: ``(3,)`` mm along X, Y, Z.
      ed, es: optional 0-based frames.
      include_rv: if False, the RV fields are NaN (for LV-only segmentations).
    Returns:
      :class:`ClinicalIndices`.
    Raises:
      ValueError: a zero EDV (EF undefined), bad frames, labels or spacing.
    """
    a = check_labels(labels, (4,))
    vol = label_volumes_ml(a, spacing_mm)
    ed, es = select_ed_es(vol.lv_ml, ed, es)
    lv_edv, lv_esv = float(vol.lv_ml[ed]), float(vol.lv_ml[es])
    lv_ef = _ejection_fraction_pct(lv_edv, lv_esv, "LV", ed)
    if include_rv:
        rv_edv, rv_esv = float(vol.rv_ml[ed]), float(vol.rv_ml[es])
        rv_ef = _ejection_fraction_pct(rv_edv, rv_esv, "RV", ed)
    else:
        rv_edv = rv_esv = rv_ef = float("nan")
    return ClinicalIndices(
        ed=ed, es=es, lv_edv_ml=lv_edv, lv_esv_ml=lv_esv, lv_sv_ml=lv_edv - lv_esv, lv_ef_pct=lv_ef,
        lv_mass_g=MYOCARDIAL_DENSITY_G_PER_ML * float(vol.myo_ml[ed]),
        rv_edv_ml=rv_edv, rv_esv_ml=rv_esv, rv_sv_ml=rv_edv - rv_esv, rv_ef_pct=rv_ef,
        lv_volume_ml=vol.lv_ml, myo_volume_ml=vol.myo_ml, rv_volume_ml=vol.rv_ml)
