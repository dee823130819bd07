"""Phantom populations: parameters of the ACDC groups drawn from ranges by a seed.

``sample_params(seed, phenotype, model)`` draws every parameter uniformly from the phenotype's range
(ACDC diagnostic criteria), so a data set is a population, not copies.
The same (seed, phenotype, model) always gives the same parameters (JAX threefry stream, float32 draws,
independent of the x64 setting); different seeds give different ones.

LV (Model A slab EF = 1 - rho_es_frac^2 lambda_es for a uniform wall):

    group  R_i (mm)  wall (mm)             rho_es_frac  lambda_es   twist (deg)  regional disease
    NOR    23-26     8-10                  0.65-0.71    0.83-0.87   10-15        none
    DCM    30-35     6-8                   0.86-0.90    0.93-0.95   3-5          none
    HCM    18-21     13-16, septum +3-6    0.53-0.58    0.88-0.92   12-16        septal territory, a = 0.3-0.5
    MINF   25-29     8-10, infarct 5-6     0.80-0.85    0.90-0.93   6-10         LAD / RCA / LCx territory, a = 0.9-1.2
    ARV    as NOR                                                                dilated, hypokinetic RV

All groups: heart rate 55-85 bpm (DCM 65-95), early filling f_E 0.65-0.75 (DCM, MINF 0.60-0.70; HCM 0.45-0.60,
impaired relaxation), diastasis f_D 0.03-0.08, L 75-90 mm (DCM 85-100, HCM 70-85), Model A j_es 0.95-1
(systolic loss of myocardial blood volume), twist base share 0.2-0.3, papillary diameter 8-10 mm (HCM 9-11),
territory edges 10-15 deg and 3-5 mm, Model B base angle 115-125 deg, RV crescent closing level -0.6 to -0.4
(Model A, past the apical end) or 0.1-0.2 (Model B).

RV: the crescent depth is solved so that the RV EDV is 1.0-1.2 (ARV: 1.4-1.7) times the EDV of a reference
normal LV of the same length (R_i = 24.5 mm), and the squeeze so that the RV EF is 0.50-0.60 (ARV:
0.25-0.38); both are exact because the RV volume is a quadratic in depth and squeeze.
Model B uses the same LV ranges (its K_ES matches Model A's volume ratio), ``j_es = 1`` and no nuisance
motion; use ``dataclasses.replace`` to add nuisance motion.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.phantom.anatomy import rv_cavity_volume_ml
from deepstrain_jax.phantom.params import MODELS, PHENOTYPES, PhantomParams, validate_params

_REF_NORMAL_R_I = 24.5

_COMMON = {
    "heart_rate_bpm": (55.0, 85.0),
    "early_filling_frac": (0.65, 0.75),
    "diastasis_frac": (0.03, 0.08),
    "twist_base_frac": (0.2, 0.3),
    "base_angle_deg": (115.0, 125.0),
    "length_mm": (75.0, 90.0),
    "j_es": (0.95, 1.0),
    "papillary_diameter_mm": (8.0, 10.0),
    "papillary_al_deg": (120.0, 140.0),
    "papillary_pm_deg": (-120.0, -100.0),
    "territory_edge_deg": (10.0, 15.0),
    "territory_edge_mm": (3.0, 5.0),
    "rv_wall_mm": (3.0, 4.0),
    "rv_edv_ratio": (1.0, 1.2),
    "rv_ef": (0.50, 0.60),
}

_GROUPS = {
    "NOR": {"r_endo_mm": (23.0, 26.0), "wall_mm": (8.0, 10.0), "rho_es_frac": (0.65, 0.71),
            "lambda_es": (0.83, 0.87), "twist_deg": (10.0, 15.0)},
    "DCM": {"r_endo_mm": (30.0, 35.0), "wall_mm": (6.0, 8.0), "rho_es_frac": (0.86, 0.90),
            "lambda_es": (0.93, 0.95), "twist_deg": (3.0, 5.0), "length_mm": (85.0, 100.0),
            "heart_rate_bpm": (65.0, 95.0), "early_filling_frac": (0.60, 0.70)},
    "HCM": {"r_endo_mm": (18.0, 21.0), "wall_mm": (13.0, 16.0), "rho_es_frac": (0.53, 0.58),
            "lambda_es": (0.88, 0.92), "twist_deg": (12.0, 16.0), "length_mm": (70.0, 85.0),
            "early_filling_frac": (0.45, 0.60), "papillary_diameter_mm": (9.0, 11.0),
            "territory_center_deg": (-10.0, 10.0), "territory_halfwidth_deg": (55.0, 70.0),
            "territory_level_lo": (0.0, 0.2), "territory_level_hi": (0.9, 1.0), "severity": (0.3, 0.5),
            "wall_delta_mm": (3.0, 6.0)},
    "MINF": {"r_endo_mm": (25.0, 29.0), "wall_mm": (8.0, 10.0), "rho_es_frac": (0.80, 0.85),
             "lambda_es": (0.90, 0.93), "twist_deg": (6.0, 10.0), "early_filling_frac": (0.60, 0.70),
             "territory_halfwidth_deg": (55.0, 70.0), "territory_level_lo": (0.0, 0.1),
             "territory_level_hi": (0.8, 1.0), "severity": (0.9, 1.2), "infarct_wall_mm": (5.0, 6.0)},
    "ARV": {"r_endo_mm": (23.0, 26.0), "wall_mm": (8.0, 10.0), "rho_es_frac": (0.65, 0.71),
            "lambda_es": (0.83, 0.87), "twist_deg": (10.0, 15.0), "rv_edv_ratio": (1.4, 1.7),
            "rv_ef": (0.25, 0.38)},
}

# Coronary territories (centre of the angular box, deg): LAD segments 1, 2, 7, 8, 13, 14; RCA 3, 4, 9, 10, 15;
# LCx 5, 6, 11, 12, 16.
MINF_TERRITORIES = (("LAD", 60.0), ("RCA", -60.0), ("LCx", 180.0))

_N_DRAWS = 48


def _reference_lv_edv_ml(model, length_mm, base_angle_deg):
    a = _REF_NORMAL_R_I
    if model == "A":
        return math.pi * a ** 2 * length_mm / 1000.0
    c = length_mm / (1.0 - math.cos(math.radians(base_angle_deg)))
    zb = length_mm - c
    return math.pi * a ** 2 * (zb - zb ** 3 / (3.0 * c ** 2) + 2.0 * c / 3.0) / 1000.0


def _solve_rv(params, edv_ml, ef):
    """Crescent depth H and squeeze c giving RV EDV ``edv_ml`` and RV EF ``ef`` (V = alpha H x + beta H^2 x^2)."""
    v1 = float(rv_cavity_volume_ml(0.0, dataclasses.replace(params, rv_depth_mm=1.0)))
    v2 = float(rv_cavity_volume_ml(0.0, dataclasses.replace(params, rv_depth_mm=2.0)))
    beta = 0.5 * (v2 - 2.0 * v1)
    alpha = v1 - beta
    h = (-alpha + math.sqrt(alpha ** 2 + 4.0 * beta * edv_ml)) / (2.0 * beta)
    j_es = float(params.j_es) if params.model == "A" else 1.0
    a2, a1 = beta * h * h, alpha * h
    x = (-a1 + math.sqrt(a1 ** 2 + 4.0 * a2 * (1.0 - ef) * edv_ml / j_es)) / (2.0 * a2)
    return h, 1.0 - x


def sample_params(seed: int, phenotype: str = "NOR", model: str = "A", n_frames: int = 25,
                  heart_rate_bpm=None) -> PhantomParams:
    """Draw one phantom of a group (module docstring for the ranges).

    Args:
      seed: non-negative int; the same (seed, phenotype, model) gives the same parameters.
      phenotype: "NOR", "DCM", "HCM", "MINF" or "ARV".
      model: "A" (cylinder) or "B" (prolate spheroid).
      n_frames: frames per cycle (static field).
      heart_rate_bpm: fixed heart rate, or None to draw it from the group's range.
    Returns:
      A validated PhantomParams with Python-float leaves.
    """
    if phenotype not in PHENOTYPES:
        raise ValueError(f"phenotype must be one of {PHENOTYPES}, got {phenotype!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    key = jax.random.fold_in(jax.random.key(int(seed)), 2 * PHENOTYPES.index(phenotype) + MODELS.index(model))
    u = iter(np.asarray(jax.random.uniform(key, (_N_DRAWS,), dtype=jnp.float32), dtype=np.float64))
    ranges = {**_COMMON, **_GROUPS[phenotype]}
    # Draw every name in a fixed order so that a value does not depend on which others a group overrides.
    names = sorted(set(_COMMON) | set().union(*(g.keys() for g in _GROUPS.values())))
    draws = {}
    for name in names:
        ui = next(u)
        if name in ranges:
            lo, hi = ranges[name]
            draws[name] = lo + (hi - lo) * ui
    territory = int(next(u) * len(MINF_TERRITORIES)) % len(MINF_TERRITORIES)

    fields = {f.name for f in dataclasses.fields(PhantomParams)}
    kw = {k: float(v) for k, v in draws.items() if k in fields}
    if model == "B":
        kw["j_es"] = 1.0
    else:
        kw.pop("base_angle_deg")
    if phenotype == "MINF":
        kw["territory_center_deg"] = MINF_TERRITORIES[territory][1]
        kw["wall_delta_mm"] = draws["infarct_wall_mm"] - draws["wall_mm"]
    if phenotype not in ("HCM", "MINF"):
        kw["severity"] = 0.0
        kw["wall_delta_mm"] = 0.0
    if heart_rate_bpm is not None:
        kw["heart_rate_bpm"] = float(heart_rate_bpm)
    kw["rv_apex_level"] = -0.5 + 0.2 * (next(u) - 0.5) if model == "A" else 0.1 + 0.1 * next(u)
    # Python floats throughout: weakly typed leaves follow the caller's precision and keep one jit signature.
    kw = {k: float(v) for k, v in kw.items()}
    params = PhantomParams(model=model, phenotype=phenotype, n_frames=int(n_frames), **kw)
    edv = draws["rv_edv_ratio"] * _reference_lv_edv_ml(model, params.length_mm, params.base_angle_deg)
    depth, squeeze = _solve_rv(params, edv, draws["rv_ef"])
    return validate_params(dataclasses.replace(params, rv_depth_mm=float(depth), rv_contraction=float(squeeze)))
