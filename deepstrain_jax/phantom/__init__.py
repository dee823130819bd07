"""Synthetic cardiac phantoms with exact motion and strain.

Phantom contract (shared by kinematics and rendering; every name below imports from
``deepstrain_jax.phantom`` and from ``deepstrain_jax.phantom.kinematics``):

Heart frame (mm). x_hat = septal (from the LV long axis towards the septal midline / RV), y_hat = anterior,
z_hat = x_hat cross y_hat = apex -> base (right-handed, anatomically correct: seen from the apex, as in a
standard short-axis view, anterior is up and the septum left). Origin on the LV long axis: Model A at the
apical end of the modelled segment (0 <= Z <= L); Model B at the endocardial apex (spheroid centre at
Z = c_i, base plane Z = L, apical-cap myocardium down to Z = c_i - c_o < 0). Cylindrical (R, Theta, Z),
Theta = atan2(y, x) from the septal midline, positive towards anterior; anterior RV insertion at +60 deg,
inferior at -60 deg. Level zeta = Z / L (0 apical end, 1 base).

Time. ``t_frac`` is the fraction of the RR interval (frame k at k / n_frames, frame 0 = ED); the activation
s = activation(t_frac, params) is 0 at ED and 1 at ES (35% of RR); seconds t_s = t_frac * 60 / heart_rate_bpm.

API:
  PhantomParams                      frozen dataclass pytree; static fields model, phenotype, n_frames
  sample_params(seed, phenotype="NOR", model="A", n_frames=25, heart_rate_bpm=None) -> PhantomParams
  activation(t_frac, params) -> s;  es_frame(params) -> int (0-based);  frame_times_s(params) -> (T,)
  motion(X_mm, s, params) -> x_mm;  inverse_motion(x_mm, s, params) -> X_mm   (closed form, both models)
  displacement(X_mm, t_frac, params) -> u_mm = motion(X, activation(t)) - X
  strain_rcl(X_mm, t_frac, params) -> (..., 3, 3) Green-Lagrange E in the reference (r, c, l) basis:
      r_hat radial outward from the long axis, l_hat = base -> apex = -z_hat, c_hat = l_hat x r_hat
      (anticlockwise seen from the apex, i.e. towards decreasing Theta)
  strain_rate_rcl(X_mm, t_frac, params) -> (..., 3, 3) in 1/s
  global_strain_truth(params, t_frac) -> {"rr", "cc", "ll"}  volume mean over the ED myocardium
  strain_rate_truth(params, t_frac) -> {"rr", "cc", "ll"}    its time derivative, 1/s
  tissue_reference(X_mm, params) -> int32 tissue code at ED;  scene(x_mm, t_frac, params) -> code at time t
  Tissue (IntEnum) and TISSUE_TO_LABEL (ACDC label per code):
      0 other -> 0, 1 RV blood -> 1, 2 LV myocardium -> 2, 3 LV blood -> 3, 4 papillary -> 3,
      5 RV wall -> 0, 6 epicardial fat -> 0, 7 lung -> 0, 8 liver -> 0, 9 chest wall -> 0
  aha_truth(X_mm, params) -> int32 0..17 (0 off the ED myocardium). Sectors anchored on the septal midline:
      basal/mid 2|8 [0, 60), 1|7 [60, 120), 6|12 [120, 180), 5|11 [-180, -120), 4|10 [-120, -60),
      3|9 [-60, 0); apical 14 [-45, 45), 13 [45, 135), 16 |Theta| >= 135, 15 [-135, -45); levels by thirds
      of L from the base; 17 = Model B apical cap (Z < 0)
  landmarks(params) -> (12, 3) midwall ED points (basal, mid, apical x septal, anterior, lateral, inferior)
  landmark_trajectories(params) -> (T, 12, 3)
  volumes_truth(params) -> {"lv_cavity_ml", "lv_myocardium_ml", "rv_cavity_ml"}, each (T,)

Models: A = thick-walled cylinder (``model_a``), B = Arts/Waks prolate spheroid (``model_b``); anatomy and
moving scene in ``anatomy``; population ranges in ``phenotypes``; time course in ``timecourse``.
"""

from deepstrain_jax.phantom.kinematics import (
                                               STRAIN_KEYS,
                                               TISSUE_TO_LABEL,
                                               PhantomParams,
                                               Tissue,
                                               activation,
                                               aha_truth,
                                               displacement,
                                               es_frame,
                                               frame_times_s,
                                               global_strain_truth,
                                               heart_motion,
                                               inverse_motion,
                                               landmark_trajectories,
                                               landmarks,
                                               motion,
                                               myocardium_quadrature,
                                               params_from_dict,
                                               params_to_dict,
                                               rcl_basis,
                                               sample_params,
                                               scene,
                                               strain_rate_rcl,
                                               strain_rate_truth,
                                               strain_rcl,
                                               tissue_reference,
                                               validate_params,
                                               volumes_truth,
)

__all__ = [
    "PhantomParams", "STRAIN_KEYS", "TISSUE_TO_LABEL", "Tissue", "activation", "aha_truth", "displacement",
    "es_frame", "frame_times_s", "global_strain_truth", "heart_motion", "inverse_motion",
    "landmark_trajectories", "landmarks", "motion", "myocardium_quadrature", "params_from_dict",
    "params_to_dict", "rcl_basis", "sample_params", "scene", "strain_rate_rcl", "strain_rate_truth",
    "strain_rcl", "tissue_reference", "validate_params", "volumes_truth",
]
