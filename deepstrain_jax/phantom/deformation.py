"""Forward and inverse phantom motion x = phi(X, s), dispatched on ``params.model`` (static).

Points live in the heart frame (mm; see ``deepstrain_jax.phantom``), with the coordinate as the last axis.
``X_mm`` are reference (ED) positions, ``x_mm`` current positions at activation ``s`` (0 at ED, 1 at ES).
"""

from __future__ import annotations

import jax.numpy as jnp

from deepstrain_jax.phantom import model_a, model_b
from deepstrain_jax.phantom.timecourse import activation


def check_points(P, name):
    """``P`` as a floating array of points (..., 3); ValueError naming ``name`` otherwise."""
    P = jnp.asarray(P)
    if P.ndim < 1 or P.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., 3), got {P.shape}")
    if not jnp.issubdtype(P.dtype, jnp.floating):
        P = P.astype(jnp.result_type(float))
    return P


def _activation_value(s, P):
    s = jnp.asarray(s)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(P.dtype)
    try:
        jnp.broadcast_shapes(jnp.shape(s), P.shape[:-1])
    except ValueError as e:
        raise ValueError(f"activation of shape {jnp.shape(s)} does not broadcast to points {P.shape[:-1]}") from e
    return s


def motion(X_mm, s, params):
    """Forward map x = phi(X, s) (Model A: §2 equations A1-A3; Model B: the Arts/Waks chain, §4).

    Args:
      X_mm: (..., 3) reference (ED) heart-frame positions, mm.
      s: activation in [0, 1] (see ``activation``), broadcastable to X_mm.shape[:-1].
      params: PhantomParams.
    Returns:
      (..., 3) current positions, mm. ``s = 0`` gives ``X_mm`` exactly. Differentiable in X and s.
    """
    X = check_points(X_mm, "X_mm")
    s = _activation_value(s, X)
    if params.model == "A":
        return model_a.forward(X, s, params)
    return model_b.forward(X, s, params)


def inverse_motion(x_mm, s, params):
    """Inverse map X = phi^-1(x, s), closed form for both models.

    Model A: Z = z / lambda, Theta = theta - phi(Z), R^2 = R_i^2 + lambda (r^2 - rho^2) / J. Model B: the chain
    undone step by step (|p0|^3 = |p1|^3 - K along the same ray). Exact on the image of the forward map; where
    a current point has no preimage (inside the collapsed cavity core of Model A, R^2 < 0) R is clamped at 0.

    Args:
      x_mm: (..., 3) current heart-frame positions, mm.
      s: activation, broadcastable to x_mm.shape[:-1].
      params: PhantomParams.
    Returns:
      (..., 3) reference positions, mm.
    """
    x = check_points(x_mm, "x_mm")
    s = _activation_value(s, x)
    if params.model == "A":
        return model_a.inverse(x, s, params)
    return model_b.inverse(x, s, params)


def displacement(X_mm, t_frac, params):
    """Lagrangian displacement u(X, t) = phi(X, s(t)) - X in mm, shape (..., 3).

    Args:
      X_mm: (..., 3) reference positions, mm.
      t_frac: time as a fraction of RR, broadcastable to X_mm.shape[:-1].
      params: PhantomParams.
    """
    X = check_points(X_mm, "X_mm")
    return motion(X, activation(t_frac, params), params) - X
