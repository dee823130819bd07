"""Phantom anatomy: tissue classes at ED, the moving scene, ACDC labels and AHA segments.

Tissue codes (``Tissue``) and their ACDC labels (``TISSUE_TO_LABEL``):

    0 OTHER (background, mediastinum, air) -> 0     5 RV_WALL -> 0
    1 RV_BLOOD -> 1 (RV cavity)                     6 FAT (epicardial) -> 0
    2 LV_MYOCARDIUM -> 2                            7 LUNG -> 0
    3 LV_BLOOD -> 3 (LV cavity)                     8 LIVER -> 0
    4 PAPILLARY (myocardial signal) -> 3            9 CHEST_WALL -> 0

Structures (heart frame and cylindrical (R, Theta, Z), level zeta = Z / L; see ``geometry``):

* LV myocardium and cavity: ``geometry``. Papillary muscles: two columns of diameter d attached to the
  endocardium at ``papillary_al_deg`` (anterolateral) and ``papillary_pm_deg`` (posteromedial) between levels
  0.15 and 0.65; their axis follows the current endocardial points at those angles, moved 0.4 d towards the
  long axis. They carry label 3 (ACDC keeps them in the cavity) and count in the LV cavity volume. The
  sampled angles (120-140 deg and -120 to -100 deg in this frame: the anterolateral and inferior walls) are
  placed anatomically; the phantom specification quotes 60-90 and 200-240 deg without stating the
  direction of its angle, which in this frame would put the anterolateral muscle on the anterior septum.
* RV crescent on the septal epicardium, insertion points at Theta = +-60 deg. With D = R - R_epi(Theta, Z)
  the outward distance from the LV epicardium, the ED cavity is 0 < D <= D_o(Theta, Z),
  D_o = H sqrt(1 - (Theta / 60 deg)^2) sqrt(clip((zeta - zeta0) / (1 - zeta0), 0, 1)), 0 <= zeta <= 1, and the
  free wall is D_o < D <= D_o + w_rv (its thickness tapering to 0 over 8 deg past the insertions and over 0.05
  in level below zeta0).
* Epicardial fat: a rim outside the LV epicardium (or outside the RV free wall over the crescent), 2 mm thick,
  5 mm in the interventricular grooves at the insertion points (Gaussian in angle, 15 deg).
* Lung, liver, chest wall: static half-spaces (they do not move) at 5 mm beyond the ED heart: lung lateral
  (direction Theta = 160 deg), liver inferior (Theta = -100 deg, zeta <= 0.6), chest-wall muscle 12 mm thick
  in front of the RV (Theta = 40 deg). Priority: heart > chest wall > liver > lung.

Motion of the scene: the LV tissue moves with ``motion``. The RV and the fat move with the same map applied
after the RV squeeze psi, which acts on D along the reference radius: D -> D (1 - k) inside the cavity,
D -> D - k D_o l / (l + D - D_o) beyond it (l = 10 mm: the free wall moves in by k D_o and the effect fades
outwards), identity inside the LV; k = rv_contraction * s. psi has a closed-form inverse. In the current
frame, a point is LV blood when its preimage lies inside the reference endocardium (Model A: r < rho; Model B:
inside the closed endocardial spheroid and below the current base lid, the plane through the mean height of
the deformed endocardial base ring).
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.phantom import model_a, model_b
from deepstrain_jax.phantom.deformation import check_points, motion
from deepstrain_jax.phantom.geometry import (
    cylindrical,
    endo_radius,
    endo_radius_sq,
    epi_radius,
    in_myocardium_polar,
    myocardium_z_range,
    polar_angle,
    wrap_angle,
)
from deepstrain_jax.phantom.params import with_neutral_phenotype
from deepstrain_jax.phantom.timecourse import activation


class Tissue(enum.IntEnum):
    """Tissue codes returned by ``tissue_reference`` and ``scene`` (ACDC labels in ``TISSUE_TO_LABEL``)."""

    OTHER = 0
    RV_BLOOD = 1
    LV_MYOCARDIUM = 2
    LV_BLOOD = 3
    PAPILLARY = 4
    RV_WALL = 5
    FAT = 6
    LUNG = 7
    LIVER = 8
    CHEST_WALL = 9


TISSUE_TO_LABEL = np.array([0, 1, 2, 3, 3, 0, 0, 0, 0, 0], dtype=np.uint8)
TISSUE_TO_LABEL.flags.writeable = False

RV_INSERTION_DEG = 60.0
_RV_WALL_OVERHANG_DEG = 8.0
_RV_WALL_LEVEL_TAPER = 0.05
_RV_DECAY_MM = 10.0
FAT_RIM_MM = 2.0
FAT_GROOVE_MM = 5.0
_FAT_GROOVE_WIDTH_DEG = 15.0
_GAP_MM = 5.0
_CHEST_WALL_MM = 12.0
_CHEST_WALL_DEG, _LIVER_DEG, _LUNG_DEG = 40.0, -100.0, 160.0
_LIVER_TOP_LEVEL = 0.6
PAPILLARY_LEVELS = (0.15, 0.65)
_PAPILLARY_INSET = 0.4
_PAPILLARY_NODES = 6


# ---------------------------------------------------------------- right ventricle

def rv_depth(theta, Z, params):
    """ED RV cavity depth D_o(Theta, Z) in mm (0 outside the crescent)."""
    zeta = Z / params.length_mm
    zeta0 = params.rv_apex_level
    ang = jnp.sqrt(jnp.maximum(1.0 - (theta / np.deg2rad(RV_INSERTION_DEG)) ** 2, 0.0))
    lev = jnp.sqrt(jnp.clip((zeta - zeta0) / (1.0 - zeta0), 0.0, 1.0))
    return jnp.where((zeta >= 0.0) & (zeta <= 1.0), params.rv_depth_mm * ang * lev, 0.0)


def _rv_wall_thickness(theta, Z, params):
    zeta = Z / params.length_mm
    ang = jnp.clip((RV_INSERTION_DEG + _RV_WALL_OVERHANG_DEG - jnp.abs(jnp.rad2deg(theta)))
                   / _RV_WALL_OVERHANG_DEG, 0.0, 1.0)
    lev = jnp.clip((zeta - params.rv_apex_level + _RV_WALL_LEVEL_TAPER) / _RV_WALL_LEVEL_TAPER, 0.0, 1.0)
    return jnp.where((zeta >= 0.0) & (zeta <= 1.0), params.rv_wall_mm * ang * lev, 0.0)


def rv_squeeze(D, d_o, k):
    """psi on the epicardial distance D (mm) for crescent depth d_o and squeeze k = rv_contraction * s."""
    far = D - k * d_o * _RV_DECAY_MM / (_RV_DECAY_MM + jnp.maximum(D - d_o, 0.0))
    return jnp.where(D <= 0.0, D, jnp.where(D <= d_o, D * (1.0 - k), far))


def rv_unsqueeze(Dc, d_o, k):
    """Inverse of :func:`rv_squeeze` (closed form: a quadratic beyond the cavity)."""
    ell = _RV_DECAY_MM
    y = Dc - d_o
    kk = k * d_o
    root = jnp.sqrt((ell + y) ** 2 + 4.0 * ell * kk)
    # Two algebraically equal forms of the positive root of e^2 + (l - y) e - l (y + k d_o) = 0, each free of
    # cancellation on its side of y = l.
    e = jnp.where(y < ell, 2.0 * ell * (y + kk) / jnp.maximum((ell - y) + root, 1e-30), 0.5 * ((y - ell) + root))
    inner = Dc / (1.0 - k)
    return jnp.where(Dc <= 0.0, Dc, jnp.where(Dc <= d_o * (1.0 - k), inner, d_o + e))


def heart_motion(X_mm, s, params):
    """Motion of any heart-frame tissue: ``motion`` after the RV squeeze psi (identity inside the LV).

    This is how the RV, the epicardial fat and the RV side of the heart move; for points inside the LV
    epicardium it equals ``motion(X_mm, s, params)``. Shapes as ``motion``.
    """
    X = check_points(X_mm, "X_mm")
    R, theta, Z = cylindrical(X)
    epi = epi_radius(theta, Z, params)
    R_new = epi + rv_squeeze(R - epi, rv_depth(theta, Z, params), params.rv_contraction * s)
    scale = jnp.where(R > 0, R_new / jnp.where(R > 0, R, 1.0), 1.0)
    return motion(jnp.stack([X[..., 0] * scale, X[..., 1] * scale, X[..., 2]], axis=-1), s, params)


def rv_cavity_volume_ml(s, params, n_angle: int = 48, n_level: int = 48):
    """Exact RV cavity volume (mL) at activation s (scalar), by Gauss quadrature of the crescent's area.

        V = J(s) int_{zeta} int_{|Theta| < 60 deg} [R_epi D + D^2 / 2] dTheta L dzeta,  D = D_o (1 - k),

    using det(grad phi) = J (Model A) or 1 (Model B) and substitutions Theta = 60 deg sin(alpha),
    zeta = zeta_s + (1 - zeta_s) w^2 that remove the square-root edges of the crescent profile.
    """
    a, wa = np.polynomial.legendre.leggauss(n_angle)
    a, wa = a * np.pi / 2, wa * np.pi / 2
    w, ww = np.polynomial.legendre.leggauss(n_level)
    w, ww = 0.5 * (w + 1.0), 0.5 * ww
    th_i = np.deg2rad(RV_INSERTION_DEG)
    zeta_s = jnp.maximum(params.rv_apex_level, 0.0)
    theta = th_i * jnp.sin(a)[:, None]
    zeta = zeta_s + (1.0 - zeta_s) * w[None, :] ** 2
    Z = zeta * params.length_mm
    depth = rv_depth(theta, Z, params) * (1.0 - params.rv_contraction * s)
    area = epi_radius(theta, Z, params) * depth + 0.5 * depth ** 2
    weight = (wa * th_i * np.cos(a))[:, None] * (ww * 2.0 * w)[None, :] * (1.0 - zeta_s) * params.length_mm
    jac = model_a.volume_factor(s, params) if params.model == "A" else 1.0
    return jac * jnp.sum(weight * area) / 1000.0


# ---------------------------------------------------------------- classification

def _papillary(x, s, params):
    """Boolean mask of current points x inside a papillary column at activation s (scalar)."""
    lv = jnp.linspace(PAPILLARY_LEVELS[0], PAPILLARY_LEVELS[1], _PAPILLARY_NODES, dtype=x.dtype)
    Z = lv * params.length_mm
    ang = jnp.deg2rad(jnp.stack([jnp.asarray(params.papillary_al_deg, x.dtype),
                                 jnp.asarray(params.papillary_pm_deg, x.dtype)]))[:, None]
    R = endo_radius(Z, params)[None, :]
    Xe = jnp.stack([R * jnp.cos(ang), R * jnp.sin(ang), jnp.broadcast_to(Z, (2, _PAPILLARY_NODES))], axis=-1)
    xe = motion(Xe, s, params)
    rxy = jnp.hypot(xe[..., 0], xe[..., 1])
    keep = 1.0 - _PAPILLARY_INSET * params.papillary_diameter_mm / jnp.maximum(rxy, 1e-6)
    cx, cy, cz = xe[..., 0] * keep, xe[..., 1] * keep, xe[..., 2]
    inside = jnp.zeros(x.shape[:-1], dtype=bool)
    for p in range(2):
        z = x[..., 2]
        px = jnp.interp(z, cz[p], cx[p])
        py = jnp.interp(z, cz[p], cy[p])
        disk = (x[..., 0] - px) ** 2 + (x[..., 1] - py) ** 2 <= (0.5 * params.papillary_diameter_mm) ** 2
        inside = inside | (disk & (z >= cz[p, 0]) & (z <= cz[p, -1]))
    return inside


def _surroundings(x, params):
    """Static lung / liver / chest-wall classes of current points x (identity motion)."""
    ext_lv = params.r_endo_mm + params.wall_mm + jnp.maximum(params.wall_delta_mm, 0.0) + FAT_GROOVE_MM + _GAP_MM
    ext_heart = ext_lv + params.rv_depth_mm + params.rv_wall_mm

    def along(deg):
        a = np.deg2rad(deg)
        return x[..., 0] * np.cos(a) + x[..., 1] * np.sin(a)

    out = jnp.where(along(_LUNG_DEG) >= ext_lv, int(Tissue.LUNG), int(Tissue.OTHER))
    liver = (along(_LIVER_DEG) >= ext_lv) & (x[..., 2] <= _LIVER_TOP_LEVEL * params.length_mm)
    out = jnp.where(liver, int(Tissue.LIVER), out)
    d_cw = along(_CHEST_WALL_DEG)
    out = jnp.where((d_cw >= ext_heart) & (d_cw <= ext_heart + _CHEST_WALL_MM), int(Tissue.CHEST_WALL), out)
    return out


def _classify(R2, theta, Z, below_lid, x, s, params):
    """Tissue code from the reference cylindrical coordinates of a point's preimage and its current position."""
    z_lo, z_hi = myocardium_z_range(params)
    endo2 = endo_radius_sq(Z, params)
    epi = epi_radius(theta, Z, params)
    myo = in_myocardium_polar(R2, theta, Z, params)
    if params.model == "A":
        cav = (R2 < endo2) & (Z >= 0.0) & (Z <= params.length_mm)
    else:
        # Model B's cavity core collapses at ES: current points near the axis have preimages high inside the
        # closed endocardial spheroid, so the base is the current lid, not the reference plane Z = L.
        cav = (R2 < endo2) & below_lid
    pap = cav & _papillary(x, s, params)

    D = jnp.sqrt(jnp.maximum(R2, 0.0)) - epi
    d_o = rv_depth(theta, Z, params)
    D_ref = rv_unsqueeze(D, d_o, params.rv_contraction * s)
    t_w = _rv_wall_thickness(theta, Z, params)
    rv_cav = (D_ref > 0.0) & (D_ref <= d_o)
    rv_wall = (D_ref > d_o) & (D_ref <= d_o + t_w)
    d_out = jnp.where(t_w > 0.0, D_ref - d_o - t_w, D_ref)
    groove = jnp.exp(-((jnp.abs(jnp.rad2deg(theta)) - RV_INSERTION_DEG) / _FAT_GROOVE_WIDTH_DEG) ** 2)
    fat_mm = FAT_RIM_MM + (FAT_GROOVE_MM - FAT_RIM_MM) * groove
    fat = (d_out > 0.0) & (d_out <= fat_mm) & (Z >= z_lo) & (Z <= z_hi) & (R2 > 0.0)

    out = _surroundings(x, params)
    out = jnp.where(fat, int(Tissue.FAT), out)
    out = jnp.where(rv_cav, int(Tissue.RV_BLOOD), out)
    out = jnp.where(rv_wall, int(Tissue.RV_WALL), out)
    out = jnp.where(cav, int(Tissue.LV_BLOOD), out)
    out = jnp.where(pap, int(Tissue.PAPILLARY), out)
    out = jnp.where(myo, int(Tissue.LV_MYOCARDIUM), out)
    return out.astype(jnp.int32)


def tissue_reference(X_mm, params):
    """Tissue code (``Tissue``) of ED reference positions X_mm (..., 3) -> int32 (...,). Jitted internally."""
    return _tissue_reference_jit(check_points(X_mm, "X_mm"), with_neutral_phenotype(params))


@jax.jit
def _tissue_reference_jit(X, params):
    R2 = X[..., 0] ** 2 + X[..., 1] ** 2
    theta = polar_angle(X[..., 0], X[..., 1])
    zero = jnp.zeros((), X.dtype)
    return _classify(R2, theta, X[..., 2], X[..., 2] <= params.length_mm, X, zero, params)


def _base_lid(s, params, dtype):
    """Model B: pre-rigid height of the deformed endocardial base ring, mean over 64 angles."""
    th = jnp.linspace(0.0, 2.0 * np.pi, 64, endpoint=False, dtype=dtype)
    L = jnp.asarray(params.length_mm, dtype)
    R = endo_radius(L, params)
    ring = jnp.stack([R * jnp.cos(th), R * jnp.sin(th), jnp.broadcast_to(L, th.shape)], axis=-1)
    return jnp.mean(model_b.forward_pre_rigid(ring, s, params)[..., 2])


def scene(x_mm, t_frac, params):
    """Eulerian tissue code at current positions x_mm (..., 3) and time t_frac (scalar) -> int32 (...,).

    The preimage of x under the LV map (``inverse_motion``, closed form) and the inverse RV squeeze locate the
    point in the reference anatomy; lung, liver and chest wall are static. ``scene(X, 0) ==
    tissue_reference(X)``. Jitted internally (compiled once per model, n_frames and input shape); not
    differentiable (integer output).
    """
    x = check_points(x_mm, "x_mm")
    if jnp.ndim(t_frac) != 0:
        raise ValueError(f"scene takes one time (a scalar t_frac), got shape {jnp.shape(t_frac)}")
    return _scene_jit(x, jnp.asarray(t_frac, dtype=x.dtype), with_neutral_phenotype(params))


@jax.jit
def _scene_jit(x, t_frac, params):
    s = activation(t_frac, params).astype(x.dtype)
    if params.model == "A":
        R2, theta, Z = model_a.inverse_polar(x, s, params)
        below_lid = jnp.ones(x.shape[:-1], dtype=bool)
    else:
        y = model_b.undo_rigid(x, s, params)
        X = model_b.inverse_pre_rigid(y, s, params)
        R2 = X[..., 0] ** 2 + X[..., 1] ** 2
        theta, Z = polar_angle(X[..., 0], X[..., 1]), X[..., 2]
        below_lid = y[..., 2] <= _base_lid(s, params, x.dtype)
    return _classify(R2, wrap_angle(theta), Z, below_lid, x, s, params)


# ---------------------------------------------------------------- AHA segments

_BASAL_BY_SECTOR = np.array([2, 1, 6, 5, 4, 3], dtype=np.int32)   # floor(Theta / 60 deg) mod 6
_APICAL_BY_SECTOR = np.array([14, 13, 16, 15], dtype=np.int32)    # floor((Theta + 45 deg) / 90 deg) mod 4


def aha_truth(X_mm, params):
    """AHA 17-segment number of reference points (0 outside the ED myocardium) -> int32 (...,).

    Sectors anchored on the septal midline (Theta = 0; RV insertions at +-60 deg), Theta in degrees:
    basal / mid 2|8 [0, 60), 1|7 [60, 120), 6|12 [120, 180), 5|11 [-180, -120), 4|10 [-120, -60), 3|9 [-60, 0);
    apical 14 [-45, 45), 13 [45, 135), 16 |Theta| >= 135, 15 [-135, -45). Levels by thirds of the LV length
    from the base: basal zeta >= 2/3, mid 1/3 <= zeta < 2/3, apical 0 <= zeta < 1/3; segment 17 is the Model B
    apical cap (Z < 0, apical of the cavity). Model A has no segment 17. Jitted internally.
    """
    return _aha_jit(check_points(X_mm, "X_mm"), with_neutral_phenotype(params))


@jax.jit
def _aha_jit(X, params):
    R2 = X[..., 0] ** 2 + X[..., 1] ** 2
    theta = polar_angle(X[..., 0], X[..., 1])
    Z = X[..., 2]
    myo = in_myocardium_polar(R2, theta, Z, params)
    deg = jnp.mod(jnp.rad2deg(theta) + 180.0, 360.0) - 180.0
    six = jnp.mod(jnp.floor(deg / 60.0), 6).astype(jnp.int32)
    four = jnp.mod(jnp.floor((deg + 45.0) / 90.0), 4).astype(jnp.int32)
    basal = jnp.asarray(_BASAL_BY_SECTOR)[six]
    apical = jnp.asarray(_APICAL_BY_SECTOR)[four]
    zeta = Z / params.length_mm
    seg = jnp.where(zeta >= 2.0 / 3.0, basal,
                    jnp.where(zeta >= 1.0 / 3.0, basal + 6, jnp.where(zeta >= 0.0, apical, 17)))
    return jnp.where(myo, seg, 0).astype(jnp.int32)

