"""LV rotation, twist and torsion from a displacement field on a short-axis stack.

Convention (echocardiography's, Notomi et al. 2005): a rotation is positive when it is counter-clockwise as
seen from the apex looking towards the base, i.e. right-handed about the base -> apex axis. A normal LV rotates
clockwise at the base (negative) and counter-clockwise at the apex (positive) in systole.

* **rotation of a slice** at frame ``t``: the mean signed angle between each ED myocardial voxel's in-plane
  position about the slice's ED myocardial centroid and its displaced position about the displaced centroid
  (so an in-plane translation of the slice is not a rotation; through-plane motion is ignored). The slice
  plane is the stack's; its normal is taken as the long axis.
* **twist** ``(t) = rotation(apical slice) - rotation(basal slice)``, the basal and apical slices being the first
  and last slices (base -> apex) holding at least ``min_voxels`` ED myocardial voxels; **peak twist** the value
  of largest magnitude over the cycle; **torsion** = peak twist / the distance between those two slices, in
  degrees per centimetre.
"""

from __future__ import annotations

import numpy as np


def slice_rotation_deg(u_mm, myocardium, spacing_mm, direction, *, base_first: bool = True,
                       min_voxels: int = 20, u_scale=None) -> np.ndarray:
    """``(T, Z)`` rotation (degrees, module convention) of each slice's ED myocardium; NaN for slices with fewer
    than ``min_voxels`` voxels.

    Args:
      u_mm: ``(T, X, Y, Z, 3)`` displacement ED -> t in mm along the array axes.
      myocardium: ``(X, Y, Z)`` bool ED myocardium.
      spacing_mm: ``(3,)`` voxel size; direction: ``(3, 3)`` direction cosines of the array axes in world
        (the affine's columns normalised), whose determinant's sign is the frame's handedness.
      base_first: slice 0 is basal.
      u_scale: ``(3,)`` factors applied to the components of ``u_mm`` as they are read (e.g. the voxel size,
        when ``u_mm`` holds displacements in voxels), so that the whole field is never scaled.
    """
    u = np.asarray(u_mm)  # only the myocardial voxels are converted to float64, below
    scale = None if u_scale is None else np.asarray(u_scale)[:2]  # its dtype kept: float32 x float32 stays float32
    myo = np.asarray(myocardium, bool)
    s = np.asarray(spacing_mm, np.float64)
    handed = float(np.sign(np.linalg.det(np.asarray(direction, np.float64))))
    sense = handed * (1.0 if base_first else -1.0)
    out = np.full((u.shape[0], myo.shape[2]), np.nan)
    for k in range(myo.shape[2]):
        ii, jj = np.nonzero(myo[:, :, k])
        if ii.size < min_voxels:
            continue
        p = np.stack([ii * s[0], jj * s[1]], axis=-1)                   # (n, 2)
        r0 = p - p.mean(axis=0)
        uk = u[:, ii, jj, k, :2] if scale is None else u[:, ii, jj, k, :2] * scale
        q = p + uk.astype(np.float64)                                    # (T, n, 2): every frame at once
        r1 = q - q.mean(axis=1, keepdims=True)
        angle = np.arctan2(r0[:, 0] * r1[..., 1] - r0[:, 1] * r1[..., 0], (r0 * r1).sum(axis=-1))
        out[:, k] = sense * np.degrees(angle.mean(axis=1))
    return out


def twist_torsion(rotation_deg, spacing_mm, *, base_first: bool = True) -> dict:
    """Basal and apical rotation curves, twist curve, peak twist and torsion from :func:`slice_rotation_deg`.

    Returns:
      ``{"basal_slice", "apical_slice", "basal_rotation_deg" (T,), "apical_rotation_deg" (T,), "twist_deg" (T,),
      "peak_twist_deg", "torsion_deg_per_cm"}``; the curves and values are None with fewer than 2 slices.
    """
    rot = np.asarray(rotation_deg, np.float64)
    valid = np.flatnonzero(np.all(np.isfinite(rot), axis=0))
    none = {"basal_slice": None, "apical_slice": None, "basal_rotation_deg": None, "apical_rotation_deg": None,
            "twist_deg": None, "peak_twist_deg": None, "torsion_deg_per_cm": None}
    if valid.size < 2:
        return none
    base, apex = (valid[0], valid[-1]) if base_first else (valid[-1], valid[0])
    twist = rot[:, apex] - rot[:, base]
    peak = float(twist[int(np.argmax(np.abs(twist)))])
    distance_cm = abs(int(apex) - int(base)) * float(np.asarray(spacing_mm)[2]) / 10.0
    return {"basal_slice": int(base), "apical_slice": int(apex), "basal_rotation_deg": rot[:, base],
            "apical_rotation_deg": rot[:, apex], "twist_deg": twist, "peak_twist_deg": peak,
            "torsion_deg_per_cm": peak / distance_cm}
