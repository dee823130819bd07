"""SimpleITK registration baselines: B-spline free-form deformation and ITK's symmetric-forces demons.

Fixed image = ED, moving image = frame t. Both are handed to SimpleITK with origin 0, identity direction and
spacing ``spacing_mm``, and with the array transposed (``sitk.GetImageFromArray`` reads numpy axis 0 as the
*last* ITK index), so ITK index ``(i, j, k)`` is our voxel ``(i, j, k)`` and ITK physical points are our
array-frame millimetres ``X_mm = index * spacing_mm``.

ITK registration returns a transform ``T`` from fixed-image points to moving-image points: the metric
compares ``F(p)`` with ``M(T(p))``. With the fixed image at ED this is our backward warp
``warp(V_t, u)(X) = V_t(X + u(X))``, so ``u_mm(p) = T(p) - p`` sampled on the fixed grid
(``sitk.TransformToDisplacementField``), and ``u_vox = u_mm / spacing_mm`` once the vector image is transposed
back to ``(X, Y, Z, 3)`` (its components are already ordered x, y, z = array axes 0, 1, 2). The demons filter
returns that displacement field directly, in the same physical convention.

SimpleITK is optional: ``pip install -e ".[baselines]"``.
"""

from __future__ import annotations

import numpy as np

from eval.baselines import multiscale as ms


def import_simpleitk():
    """``import SimpleITK``, or an ImportError saying how to install it."""
    try:
        import SimpleITK as sitk
    except ImportError as e:
        raise ImportError('the SimpleITK baselines need SimpleITK: pip install -e ".[baselines]" '
                          '(or pip install "simpleitk>=2.5,<3")') from e
    return sitk


def to_sitk(array: np.ndarray, spacing_mm):
    """A SimpleITK image of ``array`` (``(X, Y)`` or ``(X, Y, Z)``), ITK index = numpy index, origin 0."""
    sitk = import_simpleitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).T))
    image.SetSpacing([float(s) for s in spacing_mm])
    return image


def field_to_u_vox(field, spacing_mm) -> np.ndarray:
    """A SimpleITK displacement field (physical mm on the fixed grid) as ``(*S, D)`` voxels along array axes."""
    sitk = import_simpleitk()
    u_mm = sitk.GetArrayFromImage(field)  # (*reversed S, D), components in ITK (x, y, z) order
    u_mm = np.transpose(u_mm, (*range(u_mm.ndim - 2, -1, -1), u_mm.ndim - 1))
    return u_mm.astype(np.float64) / np.asarray(spacing_mm, dtype=np.float64)


def transform_to_u_vox(transform, reference) -> np.ndarray:
    """Dense ``u_vox`` of a fixed -> moving transform sampled at the voxel centres of ``reference``."""
    sitk = import_simpleitk()
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                              reference.GetOrigin(), reference.GetSpacing(),
                                              reference.GetDirection())
    return field_to_u_vox(field, reference.GetSpacing())


def _per_slice(fixed, moving, spacing, mode, register_fn) -> np.ndarray:
    """Apply ``register_fn(fixed, moving, spacing) -> u_vox`` per slice (2D) or to the volume (3D)."""
    if mode == "3d":
        return register_fn(fixed, moving, spacing)
    u = np.zeros((*fixed.shape, 3))
    for k in range(fixed.shape[2]):
        u[:, :, k, :2] = register_fn(fixed[:, :, k], moving[:, :, k], spacing[:2])
    return u


def estimate_motion_simpleitk_bspline(image_ed, image_t, spacing_mm, *, mode: str = "2d",
                                      grid_spacing_mm: float = 16.0, levels: int = 3, iterations: int = 100,
                                      presmooth: float = 0.5, threads: int | None = 1) -> np.ndarray:
    """B-spline FFD registration (``sitk.ImageRegistrationMethod``) of frame t onto ED, in voxels.

    Mean-squares metric on all voxels (no random sampling, so runs are reproducible), L-BFGS (``LBFGS2``),
    linear interpolation; the control-point grid is refined by 2 per level up to ``grid_spacing_mm`` at the
    last level. In 2D each level also works on an image pyramid (shrink ``2^(levels-1) ... 1``, Gaussian
    smoothing of ``shrink / 2`` voxels); in 3D the images stay at full resolution (SimpleITK shrinks every axis
    alike, and a stack has few slices).

    Args:
      image_ed, image_t: ``(X, Y, Z)`` images on one grid.
      spacing_mm: ``(3,)`` voxel size in mm.
      mode: ``"2d"`` (default, per slice, ``u[..., 2] = 0``) or ``"3d"``.
      grid_spacing_mm: control-point spacing at the finest level.
      levels: pyramid levels; iterations: L-BFGS-B iterations per level.
      presmooth: Gaussian sigma (voxels, in-plane) applied to both images first.
      threads: ITK threads for the registration (1 by default: bit-reproducible); ``None`` keeps ITK's default.
    Returns:
      ``(X, Y, Z, 3)`` float64 ``u_vox`` with ``image_t(X + u(X)) ≈ image_ed(X)``.
    """
    sitk = import_simpleitk()
    fixed, moving, spacing = ms.check_pair(image_ed, image_t, spacing_mm)
    ms.check_mode(mode)
    if grid_spacing_mm <= 0 or levels < 1 or iterations < 1:
        raise ValueError("grid_spacing_mm must be > 0, levels and iterations >= 1")
    fixed, moving = ms.normalise(fixed, moving)
    fixed, moving = ms.blur(fixed, presmooth, ms.IN_PLANE), ms.blur(moving, presmooth, ms.IN_PLANE)

    def register(f, m, sp):
        f_img, m_img = to_sitk(f, sp), to_sitk(m, sp)
        extent = (np.asarray(f.shape) - 1) * np.asarray(sp)
        finest = np.maximum(1, np.round(extent / grid_spacing_mm)).astype(int)
        coarse = [max(1, int(n) // 2 ** (levels - 1)) for n in finest]
        initial = sitk.BSplineTransformInitializer(f_img, coarse, 3)
        # SimpleITK shrinks and smooths every axis alike: in 3D (few thick slices) only the grid is refined.
        shrink = [2 ** (levels - 1 - i) if f.ndim == 2 else 1 for i in range(levels)]
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMeanSquares()
        reg.SetMetricSamplingStrategy(reg.NONE)
        # Image gradients by central differences: ITK's default recursive-Gaussian gradient filter needs at
        # least 4 voxels along every axis, more slices than a 3D stack may have.
        reg.SetMetricUseFixedImageGradientFilter(False)
        reg.SetMetricUseMovingImageGradientFilter(False)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsLBFGS2(solutionAccuracy=1e-6, numberOfIterations=iterations)
        reg.SetInitialTransformAsBSpline(initial, inPlace=True, scaleFactors=[1] + [2] * (levels - 1))
        reg.SetShrinkFactorsPerLevel(shrink)
        reg.SetSmoothingSigmasPerLevel([0.5 * s if s > 1 else 0.0 for s in shrink])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        if threads is not None:
            reg.SetNumberOfThreads(int(threads))
        transform = reg.Execute(f_img, m_img)
        return transform_to_u_vox(transform, f_img)

    return _per_slice(fixed, moving, spacing, mode, register)


def estimate_motion_simpleitk_demons(image_ed, image_t, spacing_mm, *, mode: str = "2d", levels: int = 3,
                                     iterations: int = 50, sigma_fluid: float = 1.0, sigma_diffusion: float = 1.5,
                                     presmooth: float = 0.5, threads: int | None = 1) -> np.ndarray:
    """ITK's ``FastSymmetricForcesDemonsRegistrationFilter`` in our coarse-to-fine pyramid, in voxels.

    The same pyramid and parameters as :func:`eval.baselines.demons.estimate_motion_demons` (sigmas in voxels
    of each level, ``UseImageSpacing`` off), with ITK's update rule: an independent implementation of the
    same method.

    Returns:
      ``(X, Y, Z, 3)`` float64 ``u_vox`` with ``image_t(X + u(X)) ≈ image_ed(X)``.
    """
    sitk = import_simpleitk()
    fixed, moving, spacing = ms.check_pair(image_ed, image_t, spacing_mm)
    ms.check_mode(mode)
    if levels < 1 or iterations < 1 or sigma_fluid < 0 or sigma_diffusion < 0:
        raise ValueError("levels and iterations must be >= 1, sigmas >= 0")
    fixed, moving = ms.normalise(fixed, moving)
    fixed, moving = ms.blur(fixed, presmooth, ms.IN_PLANE), ms.blur(moving, presmooth, ms.IN_PLANE)
    through = spacing[0] / spacing[2]  # 3D: the same mm through-plane as in-plane at full resolution

    def register(f, m, sp):
        del sp  # the filter works in voxels (UseImageSpacing off)
        ndim = f.ndim
        fluid = [sigma_fluid, sigma_fluid, sigma_fluid * through][:ndim]
        diffusion = [sigma_diffusion, sigma_diffusion, sigma_diffusion * through][:ndim]
        # In 3D the pyramid works on (X, Y, Z); a 2D slice is given a unit slice axis for it and dropped after.
        f3, m3 = (f, m) if ndim == 3 else (f[..., None], m[..., None])

        def solve_level(level, f_l, m_l, u):
            del level
            demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
            demons.SetNumberOfIterations(iterations)
            demons.SetUseImageSpacing(False)
            demons.SetSmoothUpdateField(sigma_fluid > 0)
            demons.SetUpdateFieldStandardDeviations([max(s, 1e-6) for s in fluid])
            demons.SetSmoothDisplacementField(sigma_diffusion > 0)
            demons.SetStandardDeviations([max(s, 1e-6) for s in diffusion])
            if threads is not None:
                demons.SetNumberOfThreads(int(threads))
            take = (slice(None),) * 3 if ndim == 3 else (slice(None), slice(None), 0)
            # Unit spacing: with UseImageSpacing off the filter works in voxels; u is kept in voxels too.
            initial = sitk.GetImageFromArray(np.ascontiguousarray(
                np.transpose(u[take][..., :ndim], (*range(ndim - 1, -1, -1), ndim))), isVector=True)
            field = demons.Execute(to_sitk(f_l[take], [1.0] * ndim), to_sitk(m_l[take], [1.0] * ndim), initial)
            out = np.zeros_like(u)
            out[take][..., :ndim] = field_to_u_vox(field, [1.0] * ndim)
            return out

        u = ms.coarse_to_fine(f3, m3, levels, solve_level)
        return u if ndim == 3 else u[:, :, 0, :2]

    return _per_slice(fixed, moving, spacing, mode, register)
