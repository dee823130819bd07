"""Training losses of CarSON and CarMEN: soft Dice, intensity, anatomical and diffusion smoothness terms.

Conventions:

* Images and label maps are channels last, ``(B, X, Y, C)`` or ``(B, X, Y, Z, C)``. Label maps are one-hot or
  probability maps over ACDC classes (channel 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity).
* Displacements ``u_vox`` are ``(B, *S, D)``, ``D = len(S)``, component ``d`` along array axis ``d``, in voxels
  of the ED grid; the warp is backward (``warp(V_t, u)(X) = V_t(X + u(X))``, see :mod:`deepstrain_jax.ops.warp`).
* ``spacing_mm`` is the voxel size along each array axis, ``(D,)`` or per example ``(B, D)``.
* Every loss returns **per-example values of shape** ``(B,)``; the caller averages (or weights) over the batch.
  The original averaged over the batch inside the loss, so ``loss.mean()`` reproduces it.

The forms follow the original DeepStrain (Morales et al., Front Cardiovasc Med 2021; ``models/networks.py``,
VoxelMorph-style Dice and Grad): Dice is negated (range ``[-1, 0]``, lower is better) and averaged over all
channels including background, and the smoothness term differences the displacement in mm without dividing by
the spacing. Options that depart from the original (``epsilon > 0``, ``include_background=False``,
``normalize_by_spacing=True``) are off by default; the original's softmax of the warped one-hot maps in the
anatomical term, a defect, is reproduced only on request (``legacy_softmax=True``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.ops.warp import warp


def _check_image_pair(a, b, names: tuple[str, str]):
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (4, 5):
        raise ValueError(f"{names[0]} must be (B, X, Y, C) or (B, X, Y, Z, C), got shape {a.shape}")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def dice_loss(y_true, y_pred, *, epsilon: float = 0.0, include_background: bool = True):
    """Negative multi-class soft Dice, per example.

    For example ``b`` and channel ``c``, with sums over all voxels ``v``,

        dice_{b,c} = (2 sum_v y_{b,v,c} yhat_{b,v,c} + eps) / (sum_v (y_{b,v,c} + yhat_{b,v,c}) + eps),

        loss_b = -mean_c dice_{b,c},

    the mean over all ``C`` channels (``include_background=True``, the original) or over channels ``1..C-1``.
    With ``eps = 0`` (the original's form) a channel empty in both maps gives ``0 / 0``, which is defined as
    ``0``: an absent class that is correctly predicted absent counts as a complete miss, so a perfect
    prediction reaches ``-1`` only when every channel is present. With ``eps > 0`` the same channel scores
    ``eps / eps = 1``. Both forms return ``-dice`` (not ``1 - dice``) so they differ only by ``eps``; the range
    is ``[-1, 0]`` for maps with values in ``[0, 1]``.

    Args:
      y_true: ``(B, *S, C)`` one-hot or probability map, ``S`` 2 or 3 spatial sizes.
      y_pred: same shape as ``y_true``; probabilities (e.g. a softmax output).
      epsilon: non-negative smoothing added to numerator and denominator (dimensionless).
      include_background: if False, channel 0 is left out of the mean (needs ``C >= 2``).
    Returns:
      ``(B,)`` losses in ``[-1, 0]``.

    References:
      Milletari et al., V-Net, 3DV 2016 (soft Dice); DeepStrain ``models/networks.py`` (VoxelMorph ``Dice``).
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    _check_image_pair(y_true, y_pred, ("y_true", "y_pred"))
    if _is_concrete(epsilon) and not float(epsilon) >= 0.0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    if not include_background:
        if y_true.shape[-1] < 2:
            raise ValueError(f"include_background=False needs at least 2 channels, got shape {y_true.shape}")
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    axes = tuple(range(1, y_true.ndim - 1))
    num = 2.0 * jnp.sum(y_true * y_pred, axis=axes) + epsilon
    den = jnp.sum(y_true + y_pred, axis=axes) + epsilon
    empty = den == 0
    # Double `where` keeps the 0/0 branch out of the gradient (no NaN from the discarded division).
    dice = jnp.where(empty, 0.0, num / jnp.where(empty, 1.0, den))
    return -jnp.mean(dice, axis=-1)


def mse_loss(a, b):
    """Mean squared error per example: ``loss_b = mean_{v,c} (a_{b,v,c} - b_{b,v,c})^2``.

    Args:
      a, b: arrays of equal shape ``(B, ...)``; the mean runs over every non-batch axis.
    Returns:
      ``(B,)`` losses, in the squared unit of the inputs.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_batched_pair(a, b)
    return jnp.mean(jnp.square(a - b), axis=tuple(range(1, a.ndim)))


def mae_loss(a, b):
    """Mean absolute error per example: ``loss_b = mean_{v,c} |a_{b,v,c} - b_{b,v,c}|``.

    Args:
      a, b: arrays of equal shape ``(B, ...)``; the mean runs over every non-batch axis.
    Returns:
      ``(B,)`` losses, in the unit of the inputs.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_batched_pair(a, b)
    return jnp.mean(jnp.abs(a - b), axis=tuple(range(1, a.ndim)))


def _check_batched_pair(a, b):
    if a.shape != b.shape:
        raise ValueError(f"inputs must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"inputs must be (B, ...) with at least one non-batch axis, got shape {a.shape}")


def anatomical_loss(labels_ed_onehot, labels_t_onehot, u_vox, *, legacy_softmax: bool = False,
                    epsilon: float = 0.0):
    """Dice between the ED labels and the frame-t labels warped onto the ED grid.

        M_hat = warp(M_t, u)              (each channel, linear, clamp-to-edge)
        M_hat = softmax_c(M_hat)          (only if ``legacy_softmax``)
        loss_b = dice_loss(M_ED, M_hat)_b

    ``legacy_softmax=True`` reproduces the original CarMEN loss, which applies a channel softmax to the warped
    one-hot maps (values in ``[0, 1]``): a perfect ``[1, 0, 0, 0]`` becomes
    ``[e, 1, 1, 1] / (e + 3) = [0.475, 0.175, 0.175, 0.175]``, so the Dice can never reach 1 and its gradients
    are damped (DeepStrain quirk 4). The default uses the warped maps directly, which are already a partition
    of unity for one-hot input.

    Args:
      labels_ed_onehot: ``(B, *S, C)`` ED (reference) one-hot labels.
      labels_t_onehot: ``(B, *S, C)`` frame-t one-hot labels.
      u_vox: ``(B, *S, D)`` Lagrangian displacement ED -> t in voxels of this grid.
      legacy_softmax: apply the original's softmax over channels after warping.
      epsilon: Dice smoothing, see :func:`dice_loss`.
    Returns:
      ``(B,)`` losses in ``[-1, 0]`` (background included, as in the original).
    """
    labels_ed_onehot = jnp.asarray(labels_ed_onehot)
    labels_t_onehot = jnp.asarray(labels_t_onehot)
    _check_image_pair(labels_ed_onehot, labels_t_onehot, ("labels_ed_onehot", "labels_t_onehot"))
    warped = warp(labels_t_onehot, u_vox, "linear")
    if legacy_softmax:
        warped = jax.nn.softmax(warped, axis=-1)
    return dice_loss(labels_ed_onehot, warped, epsilon=epsilon)


def _spacing_for_batch(spacing_mm, batch: int, ndim: int, dtype):
    """``spacing_mm`` (D,) or (B, D) -> broadcastable ``(B or 1, 1, ..., 1, D)``, validated."""
    spacing = jnp.asarray(spacing_mm, dtype=dtype)
    if spacing.shape not in ((ndim,), (batch, ndim)):
        raise ValueError(f"spacing_mm must have shape ({ndim},) or ({batch}, {ndim}), got {tuple(spacing.shape)}")
    if _is_concrete(spacing_mm):
        s = np.asarray(spacing_mm, dtype=np.float64)
        if not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError(f"spacing_mm must be positive and finite, got {s.tolist()}")
    lead = (1,) if spacing.ndim == 1 else (batch,)
    return spacing.reshape(lead + (1,) * ndim + (ndim,))


def smoothness_loss(u_vox, spacing_mm, *, penalty: str = "l2", normalize_by_spacing: bool = False):
    """Diffusion regulariser on the displacement in mm: mean penalised forward differences, per example.

    With ``u_mm = u_vox * spacing_mm`` (component ``c`` times the spacing of axis ``c``) and forward differences
    along spatial axis ``j``, ``delta_j u_mm[i] = u_mm[i + e_j] - u_mm[i]`` (one fewer sample along ``j``),

        loss_b = (1 / D) sum_j mean_{i,c} rho(delta_j u_mm_{b,i,c} / h_j),

    with ``rho(d) = d^2`` (``"l2"``) or ``|d|`` (``"l1"``), and ``h_j = 1`` by default: exactly the original's
    ``Grad(penalty)(u * res)``, whose differences are in mm per voxel step (so the term grows with the spacing
    of an axis). ``normalize_by_spacing=True`` sets ``h_j = spacing_mm[j]``, making ``delta_j u_mm / h_j`` a
    forward-difference derivative ``du/dX`` in mm/mm, independent of the grid.

    Args:
      u_vox: ``(B, *S, D)`` displacement in voxels, ``D = len(S)`` in {2, 3}, every spatial size >= 2.
      spacing_mm: ``(D,)`` or ``(B, D)`` voxel size in mm per array axis, positive.
      penalty: ``"l2"`` or ``"l1"``.
      normalize_by_spacing: divide the differences along axis ``j`` by ``spacing_mm[j]``.
    Returns:
      ``(B,)`` losses, in mm^2 (``"l2"``) or mm (``"l1"``), or dimensionless when normalised.

    References:
      DeepStrain ``models/networks.py`` (VoxelMorph ``Grad``); Balakrishnan et al., IEEE TMI 2019.
    """
    u_vox = jnp.asarray(u_vox)
    spatial = u_vox.shape[1:-1]
    ndim = len(spatial)
    if ndim not in (2, 3) or u_vox.shape[-1] != ndim:
        raise ValueError(f"u_vox must be (B, X, Y, 2) or (B, X, Y, Z, 3), got shape {u_vox.shape}")
    if min(spatial) < 2:
        raise ValueError(f"every spatial size of u_vox must be >= 2 for forward differences, got {u_vox.shape}")
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    if not jnp.issubdtype(u_vox.dtype, jnp.floating):
        u_vox = u_vox.astype(jnp.float32)
    spacing = _spacing_for_batch(spacing_mm, u_vox.shape[0], ndim, u_vox.dtype)
    u_mm = u_vox * spacing
    terms = []
    for j in range(ndim):
        d = jnp.diff(u_mm, axis=1 + j)
        if normalize_by_spacing:
            d = d / spacing[..., j:j + 1]
        rho = jnp.square(d) if penalty == "l2" else jnp.abs(d)
        terms.append(jnp.mean(rho, axis=tuple(range(1, rho.ndim))))
    return sum(terms) / ndim


def carmen_loss(v_ed, v_t, u_vox, spacing_mm, labels_ed_onehot=None, labels_t_onehot=None, *,
                lambda_i: float = 0.01, lambda_a: float = 0.5, lambda_s: float = 0.1, intensity: str = "mse",
                legacy_softmax: bool = False, penalty: str = "l2"):
    """CarMEN's composite unsupervised motion loss, per example.

        L_b = lambda_i L_i(V_ED, warp(V_t, u))_b + lambda_a L_a(M_ED, M_t, u)_b + lambda_s L_s(u)_b

    with ``L_i`` :func:`mse_loss` or :func:`mae_loss`, ``L_a`` :func:`anatomical_loss` (negative Dice, so a
    better overlap lowers the total) and ``L_s`` :func:`smoothness_loss` on ``u_mm = u_vox * spacing_mm``
    without spacing normalisation (the original's ``Grad(u * res)``). Default weights are the author's
    (lambda_i = 0.01, lambda_a = 0.5, lambda_s = 0.1); which intensity loss and penalty the release used is not
    known (MSE and l2 here by default). ``L_a`` is skipped (reported as 0) when both label maps are None or
    ``lambda_a == 0`` (a Python number; the label maps are then ignored); otherwise giving only one of the two
    label maps is an error.

    Args:
      v_ed: ``(B, *S, C)`` reference (ED) image, ``S`` 2 or 3 spatial sizes.
      v_t: ``(B, *S, C)`` moving image at frame t.
      u_vox: ``(B, *S, D)`` Lagrangian displacement ED -> t in voxels, ``D = len(S)``.
      spacing_mm: ``(D,)`` or ``(B, D)`` voxel size in mm.
      labels_ed_onehot, labels_t_onehot: ``(B, *S, K)`` one-hot labels at ED and frame t, or both None.
      lambda_i, lambda_a, lambda_s: weights of the intensity, anatomical and smoothness terms.
      intensity: ``"mse"`` or ``"mae"``.
      legacy_softmax: see :func:`anatomical_loss`.
      penalty: ``"l2"`` or ``"l1"``, see :func:`smoothness_loss`.
    Returns:
      ``(total, terms)``: ``total`` ``(B,)``; ``terms`` a dict with the unweighted ``(B,)`` terms
      ``"intensity"``, ``"anatomical"`` and ``"smoothness"``.
    """
    v_ed, v_t, u_vox = jnp.asarray(v_ed), jnp.asarray(v_t), jnp.asarray(u_vox)
    _check_image_pair(v_ed, v_t, ("v_ed", "v_t"))
    if intensity not in ("mse", "mae"):
        raise ValueError(f"intensity must be 'mse' or 'mae', got {intensity!r}")
    skip_anatomical = isinstance(lambda_a, (int, float)) and lambda_a == 0
    if not skip_anatomical and (labels_ed_onehot is None) != (labels_t_onehot is None):
        raise ValueError("labels_ed_onehot and labels_t_onehot must both be given or both be None")
    skip_anatomical = skip_anatomical or labels_ed_onehot is None
    warped = warp(v_t, u_vox, "linear")
    l_i = (mse_loss if intensity == "mse" else mae_loss)(v_ed, warped)
    if skip_anatomical:
        l_a = jnp.zeros_like(l_i)
    else:
        labels_ed_onehot = jnp.asarray(labels_ed_onehot)
        if labels_ed_onehot.shape[:-1] != v_ed.shape[:-1]:
            raise ValueError(f"label maps must share the image grid {v_ed.shape[:-1]}, got shape "
                             f"{labels_ed_onehot.shape}")
        l_a = anatomical_loss(labels_ed_onehot, labels_t_onehot, u_vox, legacy_softmax=legacy_softmax)
    l_s = smoothness_loss(u_vox, spacing_mm, penalty=penalty)
    total = lambda_i * l_i + lambda_a * l_a + lambda_s * l_s
    return total, {"intensity": l_i, "anatomical": l_a, "smoothness": l_s}
