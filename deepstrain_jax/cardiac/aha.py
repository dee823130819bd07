"""AHA 17-segment model (Cerqueira et al., Circulation 2002) on a short-axis ED label volume.

Frame, angles and handedness
----------------------------
Labels are ACDC (0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity) on an array ``(X, Y, Z)`` whose axis
2 is the slice axis of a short-axis stack. Positions are array-frame millimetres, ``index * spacing_mm``, so
angles are physical angles even for anisotropic voxels. The in-plane angle of a voxel ``(i, j)`` of slice ``z``
is measured about that slice's LV centre ``c_z`` (the LV-cavity centroid; where a slice has no cavity, the
centroid of its filled epicardium) from array axis 0 towards array axis 1::

    theta = atan2((j - c_y) dy, (i - c_x) dx)   in degrees; returned angles are wrapped to [-180, 180).

The caller says which end of the stack is the base: ``base_first=True`` means slice 0 is basal, so the
base -> apex unit vector is ``l = l_z e_Z`` with ``l_z = +1`` (``-1`` when ``base_first=False``). The heart is
right-handed: with ``a`` anterior, ``s`` septal (LV centre -> septum) and ``l`` base -> apex,

    a = s x l        (equivalently l = a x s).

A NIfTI affine ``A`` with ``det A[:3, :3] < 0`` makes the array frame mirrored in the world, which flips the
sign of cross products computed on array coordinates. For an in-plane ``s`` at angle ``theta_s`` this gives

    theta_a = theta_s - sigma * 90 deg,   sigma = h * l_z,   h = sign(det A[:3, :3])  (h = +1 without affine),

and the AHA order anterior -> septal -> inferior -> lateral runs towards increasing ``sigma * theta``.
Consequences: reversing an array's slice order mirrors it, so pass the matching affine (third column negated)
to keep anterior and inferior; flipping only ``base_first`` on the same array asserts the opposite anatomy and
swaps anterior with inferior as well as basal with apical.

Reference directions
--------------------
``rv_insertion_points``: on each slice, contact points are midpoints of (LV myocardium voxel, RV cavity voxel)
pairs closer than ``contact_mm`` in-plane (each voxel paired with its nearest voxel of the other label; only the
RV connected component with the most contacts counts). Their angles span an arc (found as the complement of the
largest angular gap, so it may cross +-180 deg); its two ends are the RV insertions, the anterior one being the
end reached from the arc's middle (the septal midline) by turning towards ``-sigma``. The reference used for
segmentation pools the per-slice ends by circular mean over the mid-ventricular slices (falling back to all
slices with contact).

Levels and sectors (``aha_segments``)
-------------------------------------
* Full ring: a slice whose every LV-cavity voxel lies in a hole of the myocardium, i.e. in
  ``binary_fill_holes(myocardium)`` with a 4-connected background, so an 8-connected myocardial loop closes it.
* The ``n`` slices from the first to the last full-ring slice (base -> apex) are split by thirds: basal = the
  first ``ceil(n/3)``, mid up to ``ceil(2n/3)``, apical the rest (non-ring slices inside that span follow the
  same rule). Myocardium basal to the first full ring (the LVOT region, an open ring) is basal. Slices apical
  to the last full ring that still hold cavity are apical; myocardial slices beyond the last cavity slice are
  the apical cap, segment 17 (``n_segments=17``) or merged by angle into 13-16 (``n_segments=16``).
* Basal/mid (``sector_layout="insertions"``, default): the septal arc between the anterior and inferior
  insertions is halved (2|3, 8|9, septal midline between), and the free wall from the inferior insertion round
  to the anterior one is cut into four equal arcs (4, 5, 6, 1 and 10, 11, 12, 7), so the insertions are exactly
  the 1|2 and 3|4 boundaries. ``"fixed"``: six 60 deg sectors anchored on the septal midline (UK Biobank style;
  the insertions are used only for the midline).
* Apical: four 90 deg sectors centred on anterior (13), septal midline (14), inferior (15), lateral (16).

Display (``bullseye``): the heart seen from the apex, anterior up, septum left, inferior down, lateral right;
apex at the centre, base outermost. Seen from the apex (line of sight -l, up a) the viewer's right is
(-l) x a = -s, the lateral wall, which is the same handedness as ``a = s x l``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from deepstrain_jax.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY, check_labels, check_spacing

# slice_levels codes
NO_MYOCARDIUM, BASAL, MID, APICAL, APICAL_CAP = 0, 1, 2, 3, 4


def _wrap_deg(a):
    return np.mod(np.asarray(a, dtype=np.float64) + 180.0, 360.0) - 180.0


def _circular_mean_deg(a) -> float:
    r = np.deg2rad(np.asarray(a, dtype=np.float64))
    return float(_wrap_deg(np.rad2deg(np.arctan2(np.mean(np.sin(r)), np.mean(np.cos(r))))))


def _orientation(base_first: bool, affine) -> int:
    l_z = 1 if base_first else -1
    if affine is None:
        return l_z
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {a.shape}")
    det = np.linalg.det(a[:3, :3])
    if det == 0:
        raise ValueError("affine[:3, :3] is singular; cannot tell the world handedness of the array frame")
    return l_z * int(np.sign(det))


def full_ring_slices(labels_ed) -> np.ndarray:
    """Which slices hold a full myocardial ring: ``(Z,)`` bool.

    A slice is a full ring when it has LV cavity (3) and every cavity voxel lies in a hole of the myocardium
    (2): ``cavity ⊆ binary_fill_holes(myocardium)``, holes defined with a 4-connected background so that an
    8-connected myocardial loop closes the ring. A cavity that touches background, RV or the array edge in-plane
    without crossing myocardium (the LVOT at the base) is not a full ring.

    Args:
      labels_ed: ``(X, Y, Z)`` ACDC labels.
    Returns:
      ``(Z,)`` bool.
    """
    labels = check_labels(labels_ed, (3,), "labels_ed")
    out = np.zeros(labels.shape[2], dtype=bool)
    for z in range(labels.shape[2]):
        cav = labels[:, :, z] == LV_CAVITY
        if cav.any():
            out[z] = bool(np.all(ndimage.binary_fill_holes(labels[:, :, z] == LV_MYOCARDIUM)[cav]))
    return out


def slice_levels(labels_ed, *, base_first: bool = True) -> np.ndarray:
    """AHA level of every slice: ``(Z,)`` int, 0 no myocardium, 1 basal, 2 mid, 3 apical, 4 apical cap.

    With slices ordered base -> apex (``k``), ``b``/``e`` the first/last full-ring slice (see
    :func:`full_ring_slices`) and ``n = e - b + 1``: ``k - b < ceil(n/3)`` basal (this includes the LVOT slices
    ``k < b``), ``k - b < ceil(2n/3)`` mid, otherwise apical; slices beyond the last cavity slice are the cap.
    Slices without myocardium get 0. With ``n < 3`` some levels are empty.

    Args:
      labels_ed: ``(X, Y, Z)`` ACDC labels at ED.
      base_first: slice 0 is basal (else slice ``Z - 1`` is).
    Returns:
      ``(Z,)`` int64 level codes (module constants ``BASAL``, ``MID``, ``APICAL``, ``APICAL_CAP``).
    Raises:
      ValueError: no slice holds a full myocardial ring.
    """
    labels = check_labels(labels_ed, (3,), "labels_ed")
    nz = labels.shape[2]
    order = np.arange(nz) if base_first else np.arange(nz)[::-1]  # order[k]: array index of k-th from base
    ring = full_ring_slices(labels)[order]
    has_myo = (labels == LV_MYOCARDIUM).any(axis=(0, 1))[order]
    has_cav = (labels == LV_CAVITY).any(axis=(0, 1))[order]
    if not ring.any():
        raise ValueError("no slice has a full myocardial ring (LV cavity enclosed by myocardium); "
                         "cannot set AHA levels")
    k_ring = np.flatnonzero(ring)
    b, e = int(k_ring[0]), int(k_ring[-1])
    n = e - b + 1
    last_cav = int(np.flatnonzero(has_cav)[-1])
    k = np.arange(nz)
    level = np.where(k - b < -(-n // 3), BASAL, np.where(k - b < -(-2 * n // 3), MID, APICAL))
    level = np.where((k > e) & (k <= last_cav), APICAL, level)
    level = np.where(k > last_cav, APICAL_CAP, level)
    level = np.where(has_myo, level, NO_MYOCARDIUM)
    out = np.empty(nz, dtype=np.int64)
    out[order] = level
    return out


def _slice_centres_vox(labels: np.ndarray) -> np.ndarray:
    """(Z, 2) in-plane LV centre per slice in voxel indices: cavity centroid, else filled-epicardium centroid."""
    centres = np.full((labels.shape[2], 2), np.nan)
    for z in range(labels.shape[2]):
        sl = labels[:, :, z]
        region = sl == LV_CAVITY
        if not region.any():
            region = ndimage.binary_fill_holes((sl == LV_MYOCARDIUM) | (sl == LV_CAVITY))
        if region.any():
            centres[z] = np.argwhere(region).mean(axis=0)
    return centres


def _angles_deg(points_vox, centre_vox, spacing2) -> np.ndarray:
    d = (np.asarray(points_vox, dtype=np.float64) - centre_vox) * spacing2
    return np.rad2deg(np.arctan2(d[..., 1], d[..., 0]))


def _contact_points_vox(sl: np.ndarray, spacing2: np.ndarray, contact_mm: float) -> np.ndarray:
    """(N, 2) midpoints of myocardium/RV voxel pairs closer than contact_mm, on the most-touching RV component."""
    myo, rv = sl == LV_MYOCARDIUM, sl == RV_CAVITY
    if not myo.any() or not rv.any():
        return np.zeros((0, 2))
    d_to_rv, near_rv = ndimage.distance_transform_edt(~rv, sampling=spacing2, return_indices=True)
    d_to_myo, near_myo = ndimage.distance_transform_edt(~myo, sampling=spacing2, return_indices=True)
    m_sel = myo & (d_to_rv <= contact_mm)
    r_sel = rv & (d_to_myo <= contact_mm)
    p = np.concatenate([np.argwhere(m_sel), near_myo[:, r_sel].T])  # myocardium ends of the pairs
    q = np.concatenate([near_rv[:, m_sel].T, np.argwhere(r_sel)])  # RV ends
    if len(p) == 0:
        return np.zeros((0, 2))
    components, _ = ndimage.label(rv, structure=np.ones((3, 3)))
    comp = components[q[:, 0], q[:, 1]]
    keep = comp == np.bincount(comp).argmax()
    return 0.5 * (p[keep] + q[keep])


def _arc(angles_deg) -> tuple[float, float]:
    """(start, span) of the smallest arc, counter-clockwise from start, holding all angles."""
    a = np.sort(np.mod(angles_deg, 360.0))
    gaps = np.diff(np.concatenate([a, a[:1] + 360.0]))
    g = int(np.argmax(gaps))
    start = a[(g + 1) % len(a)]
    return float(start), float(np.mod(a[g] - start, 360.0))


class RVInsertions(NamedTuple):
    """RV insertion angles (degrees, module convention) per slice and pooled.

    Per-slice arrays are ``(Z,)``, NaN where a slice has no RV/myocardium contact (fewer than two contact
    points or a zero-width arc). ``centre_vox`` ``(Z, 2)`` is the LV centre the angles are measured about.
    """

    anterior_deg: np.ndarray
    inferior_deg: np.ndarray
    septal_deg: np.ndarray
    centre_vox: np.ndarray
    pooled_anterior_deg: float
    pooled_inferior_deg: float
    pooled_septal_deg: float
    pooled_slices: np.ndarray


def rv_insertion_points(labels_ed, spacing_mm, *, base_first: bool = True, affine=None,
                        contact_mm: float | None = None) -> RVInsertions:
    """Anterior and inferior RV insertion angles from where the RV cavity (1) meets the LV myocardium (2).

    Per slice ``z``, contact points (module docstring) have angles ``theta`` about ``c_z``; the smallest arc
    holding them, ``[t0, t0 + w]`` counter-clockwise, gives

        septal = t0 + w/2,  anterior = septal - sigma w/2,  inferior = septal + sigma w/2,

    with ``sigma = sign(det A[:3,:3]) * (+1 if base_first else -1)`` from the right-handed anatomy
    ``a = s x l``. Pooled angles are circular means of the per-slice anterior and inferior angles over the mid
    level of :func:`slice_levels` (all slices with contact when no mid slice has any); the pooled septal angle
    is the midpoint of the pooled septal arc, ``anterior + sigma * (sigma (inferior - anterior) mod 360) / 2``.

    Args:
      labels_ed: ``(X, Y, Z)`` ACDC labels at ED.
      spacing_mm: ``(3,)`` voxel size in mm per array axis.
      base_first: slice 0 is basal.
      affine: optional ``(4, 4)`` voxel-to-world matrix; only the sign of ``det(affine[:3, :3])`` is used.
      contact_mm: in-plane distance under which a myocardium and an RV voxel touch; default
        ``1.01 * max(dx, dy)`` (face neighbours, and diagonal ones only when much thinner along one axis).
    Returns:
      :class:`RVInsertions`, angles in degrees in [-180, 180).
    Raises:
      ValueError: no full myocardial ring, no slice with RV cavity touching the LV myocardium, or bad arguments.
    """
    labels = check_labels(labels_ed, (3,), "labels_ed")
    spacing = check_spacing(spacing_mm)
    sigma = _orientation(base_first, affine)
    spacing2 = spacing[:2]
    if contact_mm is None:
        contact_mm = 1.01 * float(spacing2.max())
    if not np.isfinite(contact_mm) or contact_mm <= 0:
        raise ValueError(f"contact_mm must be finite and positive, got {contact_mm}")
    levels = slice_levels(labels, base_first=base_first)
    centres = _slice_centres_vox(labels)
    nz = labels.shape[2]
    ant, inf, sep = (np.full(nz, np.nan) for _ in range(3))
    for z in range(nz):
        if np.isnan(centres[z, 0]):
            continue
        pts = _contact_points_vox(labels[:, :, z], spacing2, contact_mm)
        if len(pts) < 2:
            continue
        t0, w = _arc(_angles_deg(pts, centres[z], spacing2))
        if w <= 0:
            continue
        sep[z] = t0 + w / 2
        ant[z] = sep[z] - sigma * w / 2
        inf[z] = sep[z] + sigma * w / 2
    has = ~np.isnan(sep)
    if not has.any():
        raise ValueError("no slice has RV cavity (label 1) touching the LV myocardium (label 2); "
                         "cannot place the RV insertion points")
    pooled = np.flatnonzero(has & (levels == MID))
    if pooled.size == 0:
        pooled = np.flatnonzero(has)
    p_ant = _circular_mean_deg(ant[pooled])
    p_inf = _circular_mean_deg(inf[pooled])
    w_s = np.mod(sigma * (p_inf - p_ant), 360.0)
    return RVInsertions(
        anterior_deg=_wrap_deg(ant), inferior_deg=_wrap_deg(inf), septal_deg=_wrap_deg(sep),
        centre_vox=centres, pooled_anterior_deg=p_ant, pooled_inferior_deg=p_inf,
        pooled_septal_deg=float(_wrap_deg(p_ant + sigma * w_s / 2)), pooled_slices=pooled)


def _ring6(psi, w_s):
    """Basal-ring segment 1..6 from psi (deg from the anterior insertion towards septum) and septal width."""
    quarter = (360.0 - w_s) / 4.0
    free = np.array([4, 5, 6, 1])[np.clip(np.floor((psi - w_s) / quarter), 0, 3).astype(int)]
    return np.where(psi < w_s / 2, 2, np.where(psi < w_s, 3, free))


def _apical4(psi, w_s):
    """Apical segment 13..16: 90 deg sectors centred on the septal midline psi = w_s / 2 and its quadrants."""
    q = np.clip(np.floor(np.mod(psi - w_s / 2 + 45.0, 360.0) / 90.0), 0, 3).astype(int)
    return np.array([14, 15, 16, 13])[q]


def aha_segments(labels_ed, spacing_mm, *, base_first: bool = True, affine=None, n_segments: int = 17,
                 sector_layout: str = "insertions", insertions_deg=None,
                 contact_mm: float | None = None) -> np.ndarray:
    """AHA segment (1..17, or 1..16) of every LV myocardium voxel; 0 elsewhere.

    Levels from :func:`slice_levels`; angles from the pooled RV insertions of :func:`rv_insertion_points`
    (or ``insertions_deg``). With ``theta_a``/``theta_i`` the anterior/inferior insertion angles and
    ``psi = sigma (theta - theta_a) mod 360`` (degrees from the anterior insertion towards the septum), the
    septal width is ``w_s = sigma (theta_i - theta_a) mod 360`` and, for a basal voxel,

        psi in [0, w_s/2) -> 2,  [w_s/2, w_s) -> 3,  then (360 - w_s)/4 wide arcs -> 4, 5, 6, 1;

    mid adds 6. ``sector_layout="fixed"`` uses ``w_s = 120`` about the septal midline ``theta_a + sigma w_s/2``.
    Apical: ``(psi - w_s/2 + 45) mod 360`` in [0, 90) -> 14 septal, [90, 180) -> 15 inferior,
    [180, 270) -> 16 lateral, [270, 360) -> 13 anterior. Cap slices -> 17 (``n_segments=17``) or 13..16 by
    angle about the cap's own centre (``n_segments=16``). The same reference angles apply to every slice, each
    about its own LV centre. Orientation: module docstring (``sigma`` from ``base_first`` and ``affine``).

    Args:
      labels_ed: ``(X, Y, Z)`` ACDC labels at ED.
      spacing_mm: ``(3,)`` mm per array axis.
      base_first: slice 0 is basal.
      affine: optional ``(4, 4)`` voxel-to-world matrix (only the sign of its determinant is used).
      n_segments: 17 (apical cap separate) or 16 (cap merged into 13-16).
      sector_layout: ``"insertions"`` or ``"fixed"`` (see module docstring).
      insertions_deg: optional ``(anterior, inferior)`` angles in degrees (module convention) to use instead
        of detecting them; needed when the labels have no RV.
      contact_mm: passed to :func:`rv_insertion_points`.
    Returns:
      ``(X, Y, Z)`` int32 segment map.
    Raises:
      ValueError: no full myocardial ring, no RV contact (without ``insertions_deg``), or bad arguments.
    """
    labels = check_labels(labels_ed, (3,), "labels_ed")
    spacing = check_spacing(spacing_mm)
    if n_segments not in (16, 17):
        raise ValueError(f"n_segments must be 16 or 17, got {n_segments}")
    if sector_layout not in ("insertions", "fixed"):
        raise ValueError(f"sector_layout must be 'insertions' or 'fixed', got {sector_layout!r}")
    sigma = _orientation(base_first, affine)
    levels = slice_levels(labels, base_first=base_first)
    if insertions_deg is None:
        ins = rv_insertion_points(labels, spacing, base_first=base_first, affine=affine, contact_mm=contact_mm)
        theta_a, theta_i = ins.pooled_anterior_deg, ins.pooled_inferior_deg
    else:
        theta_a, theta_i = (float(v) for v in np.asarray(insertions_deg, dtype=np.float64).reshape(2))
        if not (np.isfinite(theta_a) and np.isfinite(theta_i)):
            raise ValueError(f"insertions_deg must be finite, got {insertions_deg}")
    w_s = float(np.mod(sigma * (theta_i - theta_a), 360.0))
    if w_s <= 0:
        raise ValueError(f"anterior and inferior insertions coincide ({theta_a:.3f} deg); no septal arc")
    if sector_layout == "fixed":
        theta_a, w_s = theta_a + sigma * (w_s / 2 - 60.0), 120.0
    centres = _slice_centres_vox(labels)
    seg = np.zeros(labels.shape, dtype=np.int32)
    for z in range(labels.shape[2]):
        myo = labels[:, :, z] == LV_MYOCARDIUM
        if levels[z] == NO_MYOCARDIUM or not myo.any():
            continue
        if levels[z] == APICAL_CAP and n_segments == 17:
            seg[:, :, z][myo] = 17
            continue
        ij = np.argwhere(myo)
        psi = np.mod(sigma * (_angles_deg(ij, centres[z], spacing[:2]) - theta_a), 360.0)
        if levels[z] in (BASAL, MID):
            ids = _ring6(psi, w_s) + 6 * (levels[z] - BASAL)
        else:
            ids = _apical4(psi, w_s)
        seg[ij[:, 0], ij[:, 1], z] = ids
    return seg


# Per-segment reductions and the bull's-eye layout live in polar_map; re-exported here for convenience.
from deepstrain_jax.cardiac.polar_map import Bullseye, bullseye, segment_means, segment_reduce  # noqa: E402,F401
