"""Phantom parameters: one frozen dataclass registered as a JAX pytree.

Every numeric field is a pytree leaf (a Python float by default, any scalar array when traced or vmapped), so
functions taking ``params`` can be jitted, differentiated and vmapped over parameter populations. The fields
``model``, ``phenotype`` and ``n_frames`` are static (pytree auxiliary data): they pick code paths and array
shapes, and changing them recompiles.

The defaults are the healthy reference case (Model A, R_i = 25 mm, wall 9 mm,
L = 80 mm, rho_ES = 17 mm, lambda_ES = 0.85, twist 12 deg, J = 1), with no regional disease.

Angles are in degrees, lengths in mm, levels are fractions ``zeta = Z / L`` of the LV length measured from the
apical end (0) to the base (1), and "ES" values are the amplitudes reached at activation ``s = 1``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

MODELS = ("A", "B")
PHENOTYPES = ("NOR", "DCM", "HCM", "MINF", "ARV")

_STATIC_FIELDS = ("model", "phenotype", "n_frames")


@dataclasses.dataclass(frozen=True)
class PhantomParams:
    """Geometry, motion, disease, RV, papillary and time-course parameters of one phantom.

    ED geometry (mm):
      r_endo_mm: R_i. Model A: endocardial cylinder radius. Model B: endocardial equatorial semi-axis a_i.
      wall_mm: ED wall thickness outside the territory (Model B: at the equator, confocal epicardium).
      length_mm: L. Model A: length of the modelled segment (apical end Z = 0 to base Z = L). Model B: cavity
        length from the endocardial apex (Z = 0) to the base plane (Z = L).
      base_angle_deg: Model B only: prolate angle of the endocardial base ring from the apex; sets the
        endocardial semi-major axis c_i = L / (1 - cos(base_angle)).

    Healthy systolic motion (amplitudes at s = 1):
      rho_es_frac: rho_h / R_i, healthy ES endocardial radius (Model A). Model B contracts its closed
        endocardial spheroid to the same volume ratio rho_es_frac**2 * lambda_es.
      lambda_es: long-axis stretch at ES (Model A: z = lambda Z everywhere; Model B: at the equatorial
        midwall, see model_b).
      twist_deg: apex-to-base rotation difference at ES (positive: base turns clockwise, apex anticlockwise
        seen from the apex, i.e. the rotation angle grows from apex to base in the heart frame).
      twist_base_frac: Model A: share of the twist carried by the base (base +f*twist, apical end
        -(1-f)*twist).
      j_es: Model A: myocardial volume ratio det F at ES (1 = incompressible). Model B is always det F = 1.

    Regional disease (one smooth territory):
      territory_center_deg, territory_halfwidth_deg: angular box [c - h, c + h] (Theta from the septal midline).
      territory_level_lo, territory_level_hi: level box [lo, hi] in zeta = Z / L.
      territory_edge_deg, territory_edge_mm: tanh edge widths w (deg) and w_z (mm).
      severity: a in rho_ES = R_i - (R_i - rho_h)(1 - a g); 0 normal, 0.5 hypokinetic, 1 akinetic, > 1
        dyskinetic (Model B scales its radial volume change k1 by (1 - a g) instead).
      wall_delta_mm: ED wall thickness change in the territory (negative: infarct thinning, positive:
        hypertrophy), R_o = R_i + wall + wall_delta * g.

    Right ventricle (anatomy.py):
      rv_depth_mm: ED crescent depth H at the septal midline and full height.
      rv_wall_mm: RV free-wall thickness.
      rv_contraction: fraction c of the crescent depth lost at s = 1.
      rv_apex_level: zeta0 where the crescent closes (negative: it runs past the apical end of Model A).

    Papillary muscles: papillary_diameter_mm and their angles papillary_al_deg (anterolateral) and
    papillary_pm_deg (posteromedial).

    Time course (timecourse.py): heart_rate_bpm, early_filling_frac f_E, diastasis_frac f_D.

    Model B nuisance motion: nuisance = (k4, ..., k13), ES values scaled by s: k4 ellipticalisation, k5-k7
    shears (xy, xz, yz), k8-k10 rotations about x, y, z (rad), k11-k13 translation (mm).

    Static (pytree auxiliary data): model "A" | "B", phenotype "NOR" | "DCM" | "HCM" | "MINF" | "ARV",
    n_frames (frames per cardiac cycle).
    """

    r_endo_mm: Any = 25.0
    wall_mm: Any = 9.0
    length_mm: Any = 80.0
    base_angle_deg: Any = 120.0
    rho_es_frac: Any = 0.68
    lambda_es: Any = 0.85
    twist_deg: Any = 12.0
    twist_base_frac: Any = 0.25
    j_es: Any = 1.0
    territory_center_deg: Any = 60.0
    territory_halfwidth_deg: Any = 60.0
    territory_level_lo: Any = 0.0
    territory_level_hi: Any = 1.0
    territory_edge_deg: Any = 12.0
    territory_edge_mm: Any = 4.0
    severity: Any = 0.0
    wall_delta_mm: Any = 0.0
    rv_depth_mm: Any = 28.0
    rv_wall_mm: Any = 3.5
    rv_contraction: Any = 0.45
    rv_apex_level: Any = -0.5
    papillary_diameter_mm: Any = 9.0
    papillary_al_deg: Any = 130.0
    papillary_pm_deg: Any = -110.0
    heart_rate_bpm: Any = 60.0
    early_filling_frac: Any = 0.70
    diastasis_frac: Any = 0.05
    nuisance: Any = (0.0,) * 10
    model: str = "A"
    phenotype: str = "NOR"
    n_frames: int = 25

    def __post_init__(self):
        # Only the static fields are checked here: JAX rebuilds instances with tracers or placeholders as
        # leaves, so numeric checks live in validate_params.
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.phenotype not in PHENOTYPES:
            raise ValueError(f"phenotype must be one of {PHENOTYPES}, got {self.phenotype!r}")
        if not isinstance(self.n_frames, int) or isinstance(self.n_frames, bool) or self.n_frames < 2:
            raise ValueError(f"n_frames must be an int >= 2, got {self.n_frames!r}")


_DATA_FIELDS = tuple(f.name for f in dataclasses.fields(PhantomParams) if f.name not in _STATIC_FIELDS)
jax.tree_util.register_dataclass(PhantomParams, data_fields=list(_DATA_FIELDS), meta_fields=list(_STATIC_FIELDS))


def validate_params(params: PhantomParams) -> PhantomParams:
    """Check concrete parameter values; raises ValueError naming the problem, returns ``params``.

    Not callable under ``jit`` (it reads values). Checks positivity of lengths and stretches, the Model B
    prolate condition c_i > a_i, and that the territory thinning leaves a positive wall.
    """
    def val(name):
        v = getattr(params, name)
        try:
            v = float(v)
        except TypeError as e:
            raise ValueError(f"{name} must be a scalar, got {v!r}") from e
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        return v

    for name in ("r_endo_mm", "wall_mm", "length_mm", "lambda_es", "rho_es_frac", "j_es", "heart_rate_bpm",
                 "territory_edge_deg", "territory_edge_mm", "rv_wall_mm", "papillary_diameter_mm"):
        if val(name) <= 0:
            raise ValueError(f"{name} must be positive, got {val(name)}")
    for name in _DATA_FIELDS:
        if name != "nuisance":
            val(name)
    if len(params.nuisance) != 10:
        raise ValueError(f"nuisance must hold 10 values (k4..k13), got {len(params.nuisance)}")
    if val("wall_mm") + min(val("wall_delta_mm"), 0.0) <= 0:
        raise ValueError("wall_mm + wall_delta_mm must stay positive in the territory")
    if not 0.0 <= val("rv_contraction") < 1.0:
        raise ValueError(f"rv_contraction must be in [0, 1), got {val('rv_contraction')}")
    if val("rv_depth_mm") < 0 or val("rv_apex_level") >= 1.0:
        raise ValueError("rv_depth_mm must be >= 0 and rv_apex_level < 1")
    fe, fd = val("early_filling_frac"), val("diastasis_frac")
    if fe < 0 or fd < 0 or fe + fd > 1:
        raise ValueError(f"need early_filling_frac, diastasis_frac >= 0 with sum <= 1, got {fe}, {fd}")
    if params.model == "B":
        nu = math.radians(val("base_angle_deg"))
        if not 0 < nu < math.pi:
            raise ValueError(f"base_angle_deg must be in (0, 180), got {val('base_angle_deg')}")
        c_i = val("length_mm") / (1.0 - math.cos(nu))
        if c_i <= val("r_endo_mm"):
            raise ValueError(f"Model B needs a prolate cavity: c_i = {c_i:.1f} mm must exceed "
                             f"r_endo_mm = {val('r_endo_mm')} (longer length_mm or smaller base_angle_deg)")
    return params


def with_neutral_phenotype(params: PhantomParams) -> PhantomParams:
    """``params`` relabelled "NOR": the phenotype is a label that enters no computation, so jitted functions
    call their compiled core with it fixed and do not recompile per group."""
    return params if params.phenotype == "NOR" else dataclasses.replace(params, phenotype="NOR")


def params_to_dict(params: PhantomParams) -> dict:
    """Plain-Python dict of every field (floats, a list for ``nuisance``, strings, int): JSON-ready."""
    out = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if f.name == "nuisance":
            out[f.name] = [float(x) for x in v]
        elif f.name in _STATIC_FIELDS:
            out[f.name] = v
        else:
            out[f.name] = float(v)
    return out


def params_from_dict(d: dict) -> PhantomParams:
    """Inverse of :func:`params_to_dict`; unknown keys raise ValueError, missing keys take the defaults."""
    names = {f.name for f in dataclasses.fields(PhantomParams)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown phantom parameter(s): {sorted(unknown)}")
    kw = dict(d)
    if "nuisance" in kw:
        kw["nuisance"] = tuple(float(x) for x in kw["nuisance"])
    if "n_frames" in kw:
        kw["n_frames"] = int(kw["n_frames"])
    return PhantomParams(**kw)


def check_phenotype(p: str) -> str:
    """``p`` upper-cased as one of :data:`PHENOTYPES` (``RV`` is taken as ``ARV``); ValueError otherwise."""
    p = {"RV": "ARV"}.get(str(p).upper(), str(p).upper())
    if p not in PHENOTYPES:
        raise ValueError(f"unknown phenotype {p!r}; choose from {', '.join(PHENOTYPES)} (RV = ARV)")
    return p
