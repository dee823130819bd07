"""The simulated scanner: protocol, stack placement and smooth fields of a phantom render.

Frames (all in mm), shared with :mod:`deepstrain_jax.phantom.render`:

* **heart frame** ``h``: the kinematics' frame (:mod:`deepstrain_jax.phantom.kinematics`): origin on the LV long
  axis, ``x_hat`` septal, ``y_hat`` anterior, ``z_hat`` apex -> base.
* **world frame** ``w``: scanner/NIfTI mm. The heart sits in it under a proper rigid transform
  ``w = R h + t`` (:class:`Geometry`: ``rotation`` R with det +1, ``translation_mm`` t).
* **array indices** ``q = (i, j, k)``: ``w = A[:3, :3] q + A[:3, 3]`` with the 4x4 ``affine`` A, whose entries are
  float32-representable so that a NIfTI round trip is exact. Axes 0 and 1 are in-plane, axis 2 is the slice
  axis. Stacks are placed **base -> apex** (slice 0 basal: the heart's ``z_hat`` points towards decreasing k).
* **breath-hold shifts**: slice k was acquired with the heart displaced, so its voxel ``(i, j, k)`` images the
  scene at ``w = A q + A[:3, 3] + D[:, 0] s_k0 + D[:, 1] s_k1`` (``D`` the direction cosines of A, ``s_k`` =
  ``Geometry.slice_shift_mm[k]``, in-plane, mm). With zero shifts the image is exactly where the affine says.

Randomness: an integer seed feeds independent ``numpy.random.SeedSequence`` streams (acquisition, geometry,
rescan, noise), so a seed reproduces a render bit for bit on one machine.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from deepstrain_jax.phantom import kinematics as kin

_STREAMS = {"acquisition": 1, "geometry": 2, "noise": 3, "rescan": 4, "subject": 5}


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """Protocol and degradation settings of one render (section 6.3/6.4).

    Attributes:
      matrix: in-plane matrix ``(nx, ny)``; the FOV is ``matrix * pixel_mm``.
      pixel_mm: in-plane voxel size (square pixels), mm.
      n_slices: number of short-axis slices.
      slice_thickness_mm: nominal slice thickness (profile width or FWHM), mm.
      slice_spacing_mm: centre-to-centre slice distance (>= thickness; gap = spacing - thickness), mm.
      slice_profile: ``"rect"`` or ``"gauss"``.
      supersample_inplane: sub-samples per pixel side (``n_ip``); supersample_slice: sub-planes per slice.
      adaptive: supersample in-plane only where the tissue class differs between the four pixel corners of a
        sub-plane (pure entries take the corner class, with banding the off-resonance at the pixel centre);
        ``False`` supersamples every pixel. Structures thinner than a pixel that touch no corner can be missed
        by the adaptive path.
      snr_myo: mean myocardial signal / noise sigma; ``math.inf`` renders without noise.
      coil_shading: shading amplitude ``a``: the field spans ``[1/(1+a), 1+a]`` over the FOV (0 disables).
      slice_shift_mm: maximum in-plane breath-hold shift per slice (uniform in a disc), mm.
      banding: add off-resonance from a B0 map (dark bands where ``df`` nears +-1/(2 TR)).
      b0_peak_hz: peak of the B0 hot spot near the lateral heart-lung interface, Hz.
      flip_deg, tr_ms: bSSFP flip angle (deg) and repetition time (ms); TE = TR/2.
      myo_level: int16 value of the mean noise-free myocardial voxel at ED.
    """

    matrix: tuple = (128, 128)
    pixel_mm: float = 1.5
    n_slices: int = 9
    slice_thickness_mm: float = 8.0
    slice_spacing_mm: float = 10.0
    slice_profile: str = "rect"
    supersample_inplane: int = 3
    supersample_slice: int = 5
    adaptive: bool = True
    snr_myo: float = 20.0
    coil_shading: float = 0.25
    slice_shift_mm: float = 2.0
    banding: bool = False
    b0_peak_hz: float = 150.0
    flip_deg: float = 60.0
    tr_ms: float = 3.0
    myo_level: float = 400.0

    def __post_init__(self):
        object.__setattr__(self, "matrix", tuple(int(m) for m in self.matrix))
        if len(self.matrix) != 2 or min(self.matrix) < 2:
            raise ValueError(f"matrix must be two sizes >= 2, got {self.matrix}")
        positive = ("pixel_mm", "slice_thickness_mm", "slice_spacing_mm", "snr_myo", "flip_deg", "tr_ms", "myo_level")
        for name in positive:
            v = float(getattr(self, name))
            if not v > 0 or math.isnan(v) or (math.isinf(v) and name != "snr_myo"):
                raise ValueError(f"{name} must be positive and finite, got {v}")
        for name in ("coil_shading", "slice_shift_mm", "b0_peak_hz"):
            v = float(getattr(self, name))
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be >= 0, got {v}")
        for name in ("n_slices", "supersample_inplane", "supersample_slice"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.slice_spacing_mm < self.slice_thickness_mm:
            raise ValueError(f"slice_spacing_mm ({self.slice_spacing_mm}) must be >= slice_thickness_mm "
                             f"({self.slice_thickness_mm}): slices may not overlap")
        if self.slice_profile not in ("rect", "gauss"):
            raise ValueError(f"slice_profile must be 'rect' or 'gauss', got {self.slice_profile!r}")
        if not 0 < self.flip_deg < 180:
            raise ValueError(f"flip_deg must be in (0, 180), got {self.flip_deg}")

    @property
    def spacing_mm(self) -> np.ndarray:
        """``(3,)`` voxel spacing: ``(pixel, pixel, slice spacing)`` in mm."""
        return np.array([self.pixel_mm, self.pixel_mm, self.slice_spacing_mm], dtype=np.float64)

    @property
    def shape(self) -> tuple:
        """``(nx, ny, nz)``."""
        return (*self.matrix, int(self.n_slices))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the heart is, how the stack is placed, and the scanner's smooth fields.

    Attributes:
      shape: ``(nx, ny, nz)``.
      affine: ``(4, 4)`` voxel-to-world matrix of the base -> apex stack, float32-representable entries.
      rotation: ``(3, 3)`` heart -> world rotation R (det +1); translation_mm: ``(3,)`` t; ``w = R h + t``.
      slice_shift_mm: ``(nz, 2)`` in-plane breath-hold shift of each slice along array axes 0 and 1, mm.
      coil_positions_mm: ``(n_coils, 3)`` world positions of the receive loops.
      b0_gradient_hz_per_mm: ``(3,)`` linear B0 term in the heart frame; b0_hotspot_mm: ``(3,)`` heart-frame
        centre of the Gaussian hot spot; b0_hotspot_width_mm: its sigma; b0_peak_hz: its peak.
    """

    shape: tuple
    affine: np.ndarray
    rotation: np.ndarray
    translation_mm: np.ndarray
    slice_shift_mm: np.ndarray
    coil_positions_mm: np.ndarray
    b0_gradient_hz_per_mm: np.ndarray
    b0_hotspot_mm: np.ndarray
    b0_hotspot_width_mm: float
    b0_peak_hz: float

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` direction cosines: column c is the world unit vector of array axis c."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def spacing_mm(self) -> np.ndarray:
        """``(3,)`` voxel size in mm (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def to_json(self) -> dict:
        """Plain-Python (JSON-ready) view of every field."""
        return {f.name: (np.asarray(getattr(self, f.name)).tolist()) for f in dataclasses.fields(self)}


def stream(seed: int, name: str) -> np.random.Generator:
    """The numpy Generator of one named random stream (acquisition, geometry, noise, rescan, subject) of ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAMS[name]]))


_tissue_reference = jax.jit(kin.tissue_reference)


def heart_extent(params) -> dict:
    """Extent of the heart in the heart frame from ``kinematics.tissue_reference`` on a 2.5 mm grid.

    Returns ``{"z_apex", "z_base"}`` (range of LV myocardium along ``z_hat``, mm) and ``"r_max"`` (largest
    distance from the LV axis of any tissue with a non-zero ACDC label or RV wall, mm).
    """
    xs = np.arange(-120.0, 120.01, 2.5)
    zs = np.arange(-80.0, 180.01, 2.5)
    grid = np.stack(np.meshgrid(xs, xs, zs, indexing="ij"), axis=-1).astype(np.float32)
    tissue = np.asarray(_tissue_reference(grid, dataclasses.replace(params, phenotype="NOR", n_frames=2)))
    labels = np.asarray(kin.TISSUE_TO_LABEL)[tissue]
    myo = labels == 2
    if not myo.any():
        raise ValueError("the phantom has no LV myocardium inside the 240 x 240 x 260 mm search box")
    z = grid[..., 2][myo]
    heart = (labels > 0) | (tissue == int(kin.Tissue.RV_WALL))
    r = np.hypot(grid[..., 0], grid[..., 1])[heart]
    return {"z_apex": float(z.min()), "z_base": float(z.max()), "r_max": float(r.max())}


def _round_to(x: float, step: float) -> float:
    return float(np.round(x / step) * step)


def sample_acquisition(seed: int, params, **fixed) -> Acquisition:
    """Draw a realistic protocol for ``params`` (fields in ``fixed`` are used as given).

    Draws: pixel ~ U[1.25, 2.0] mm (1/16 mm steps); FOV ~ U[170, 210] mm, matrix = FOV/pixel rounded up to a
    multiple of 16 (FOV >= 170 mm; few distinct matrices, and the renderer compiles once per matrix);
    n_slices in {8, 9, 10}; thickness ~ U[6, 10] mm (0.5 mm steps); spacing = LV length / (n_slices - 1) clipped
    to [thickness, thickness + 4], so the stack spans base to apex where the clip allows; SNR ~ U[10, 40]; coil
    shading ~ U[0.15, 0.3]; B0 peak ~ U[100, 200] Hz. Supersampling defaults to 3 x 3 x 5 (adaptive).
    """
    unknown = set(fixed) - {f.name for f in dataclasses.fields(Acquisition)}
    if unknown:
        raise ValueError(f"unknown acquisition field(s): {sorted(unknown)}")
    rng = stream(seed, "acquisition")
    pixel = _round_to(rng.uniform(1.25, 2.0), 1 / 16)
    fov = rng.uniform(170.0, 210.0)
    n_slices = int(rng.integers(8, 11))
    thickness = _round_to(rng.uniform(6.0, 10.0), 0.5)
    snr = float(rng.uniform(10.0, 40.0))
    shading = float(rng.uniform(0.15, 0.3))
    b0 = float(rng.uniform(100.0, 200.0))
    pixel = float(fixed.get("pixel_mm", pixel))
    n_slices = int(fixed.get("n_slices", n_slices))
    thickness = float(fixed.get("slice_thickness_mm", thickness))
    if "slice_spacing_mm" not in fixed:
        ext = heart_extent(params)
        spacing = (ext["z_base"] - ext["z_apex"]) / max(n_slices - 1, 1)
        fixed["slice_spacing_mm"] = float(np.clip(_round_to(spacing, 0.5), thickness, thickness + 4.0))
    m = int(math.ceil(fov / pixel / 16.0) * 16)
    drawn = dict(matrix=(m, m), pixel_mm=pixel, n_slices=n_slices, slice_thickness_mm=thickness, snr_myo=snr,
                 coil_shading=shading, b0_peak_hz=b0)
    drawn.update(fixed)
    return Acquisition(**drawn)


def _rotation(axis, angle_rad) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def _f32(a) -> np.ndarray:
    # NIfTI stores affines in float32: keep every geometric quantity exactly representable there.
    return np.asarray(np.asarray(a, np.float32), np.float64)


def sample_geometry(seed: int, params, acquisition: Acquisition, *, oblique: bool = False,
                    rotation_deg: float = 180.0, offset_mm: float = 20.0, tilt_deg: float = 0.0) -> Geometry:
    """Place the heart and the stack (random but reproducible from ``seed``).

    * Affine: ``diag(pixel, pixel, spacing)`` with the array centre at the world origin (``oblique=False``, the
      ACDC-like default) or premultiplied by a random rotation (an oblique SAX stack in scanner coordinates).
    * Heart pose: long axis along the slice normal (``z_hat = -D[:, 2]``, base -> apex = +k), optionally tilted
      by ``tilt_deg`` about a random in-plane axis; septal direction at a uniform random angle in
      ``[-rotation_deg, rotation_deg]`` from array axis 0; LV mid-length placed ``<= offset_mm`` off the FOV
      centre in-plane (less if the heart would leave the FOV) and within a quarter slice of the stack centre.
    * Slice shifts: uniform in a disc of radius ``acquisition.slice_shift_mm`` per slice.
    * Coils: 6-8 loops (radius 100 mm) on a 225 mm world ring at a random phase; B0: gradient up to 0.3 Hz/mm
      and a hot spot of sigma 20 mm at the lateral/inferolateral epicardium (Theta in [150, 240] deg).
    """
    rng = stream(seed, "geometry")
    nx, ny, nz = acquisition.shape
    sp = acquisition.spacing_mm
    q = _rotation(rng.normal(size=3), rng.uniform(0.3, 1.0)) if oblique else np.eye(3)
    centre_idx = (np.array([nx, ny, nz], np.float64) - 1.0) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = q * sp[None, :]
    affine[:3, 3] = -affine[:3, :3] @ centre_idx
    affine = _f32(affine)
    d = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    psi = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    z_hat = -d[:, 2]
    x_hat = math.cos(psi) * d[:, 0] + math.sin(psi) * d[:, 1]
    x_hat -= (x_hat @ z_hat) * z_hat
    x_hat /= np.linalg.norm(x_hat)
    rot = np.stack([x_hat, np.cross(z_hat, x_hat), z_hat], axis=1)
    tilt_axis = rng.normal(size=2)
    tilt = rng.uniform(-tilt_deg, tilt_deg)
    rot = _rotation(tilt_axis[0] * d[:, 0] + tilt_axis[1] * d[:, 1], math.radians(tilt)) @ rot
    ext = heart_extent(params)
    fov_half = 0.5 * min(nx, ny) * acquisition.pixel_mm
    max_off = float(np.clip(fov_half - ext["r_max"] - 5.0, 0.0, offset_mm))
    r_off = max_off * math.sqrt(rng.uniform())
    a_off = rng.uniform(0, 2 * math.pi)
    z_jit = rng.uniform(-0.25, 0.25) * acquisition.slice_spacing_mm
    target = (affine[:3, :3] @ centre_idx + affine[:3, 3] + r_off * (math.cos(a_off) * d[:, 0] + math.sin(a_off)
              * d[:, 1]) + z_jit * d[:, 2])
    z_mid = 0.5 * (ext["z_apex"] + ext["z_base"])
    translation = target - rot @ np.array([0.0, 0.0, z_mid])
    shifts = _disc(rng, nz, acquisition.slice_shift_mm)
    n_coils = int(rng.integers(6, 9))
    ang = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(n_coils) / n_coils
    coils = np.stack([225.0 * np.cos(ang), 225.0 * np.sin(ang), rng.uniform(-40, 40, n_coils)], axis=1)
    theta_hot = math.radians(rng.uniform(150.0, 240.0))
    r_hot = ext["r_max"] * 0.55
    hot = np.array([r_hot * math.cos(theta_hot), r_hot * math.sin(theta_hot), z_mid + rng.uniform(-10, 10)])
    grad = rng.normal(size=3)
    grad *= rng.uniform(0.0, 0.3) / np.linalg.norm(grad)
    return Geometry(shape=(nx, ny, nz), affine=affine, rotation=rot, translation_mm=translation,
                    slice_shift_mm=shifts, coil_positions_mm=coils, b0_gradient_hz_per_mm=grad,
                    b0_hotspot_mm=hot, b0_hotspot_width_mm=20.0, b0_peak_hz=float(acquisition.b0_peak_hz))


def _disc(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0, 2 * math.pi, size=n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def perturb_geometry(geometry: Geometry, seed: int, acquisition: Acquisition, *, rotation_deg: float = 3.0,
                     shift_mm: float = 2.0, tilt_deg: float = 2.0) -> Geometry:
    """A rescan of the same heart: same stack, coils and B0; new breath-hold shifts and a small pose change.

    The heart is rotated about its LV mid-point by up to ``rotation_deg`` about its long axis and ``tilt_deg``
    about a random in-plane axis, and translated by up to ``shift_mm`` (uniform in a ball).
    """
    rng = stream(seed, "rescan")
    z_axis = geometry.rotation[:, 2]
    d = geometry.direction
    spin = _rotation(z_axis, math.radians(rng.uniform(-rotation_deg, rotation_deg)))
    axis = rng.normal(size=2)
    tilt = _rotation(axis[0] * d[:, 0] + axis[1] * d[:, 1], math.radians(rng.uniform(-tilt_deg, tilt_deg)))
    delta = tilt @ spin
    # Rotate about the point the FOV centre maps to, so the heart stays where it was.
    centre = geometry.affine[:3, :3] @ ((np.array(geometry.shape) - 1) / 2.0) + geometry.affine[:3, 3]
    v = rng.normal(size=3)
    v *= shift_mm * rng.uniform() ** (1 / 3) / np.linalg.norm(v)
    rot = delta @ geometry.rotation
    translation = delta @ (geometry.translation_mm - centre) + centre + v
    shifts = _disc(rng, geometry.shape[2], acquisition.slice_shift_mm)
    return dataclasses.replace(geometry, rotation=rot, translation_mm=translation, slice_shift_mm=shifts)


def voxel_heart_positions(geometry: Geometry, index=None) -> np.ndarray:
    """Heart-frame positions (mm) imaged at voxel indices, including each slice's breath-hold shift.

        h = R^T (A[:3, :3] q + A[:3, 3] + D[:, :2] s(q_k) - t),

    with ``s(q_k)`` the slice shift linearly interpolated in ``k`` (clamped; exact at integer k).

    Args:
      geometry: the render geometry.
      index: ``(..., 3)`` continuous voxel indices; default every voxel centre, ``(nx, ny, nz, 3)``.
    Returns:
      ``(..., 3)`` float64 heart-frame mm.
    """
    if index is None:
        index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in geometry.shape], indexing="ij"),
                         axis=-1)
    index = np.asarray(index, np.float64)
    ks = np.arange(geometry.shape[2], dtype=np.float64)
    s = np.stack([np.interp(index[..., 2], ks, geometry.slice_shift_mm[:, c]) for c in range(2)], axis=-1)
    w = index @ geometry.affine[:3, :3].T + geometry.affine[:3, 3] + s @ geometry.direction[:, :2].T
    return (w - geometry.translation_mm) @ geometry.rotation


def heart_to_array_vectors(geometry: Geometry, v_heart) -> np.ndarray:
    """Heart-frame vectors (mm) -> components along the array axes (mm): ``D^-1 R v``."""
    return np.asarray(v_heart) @ (np.linalg.inv(geometry.direction) @ geometry.rotation).T


def world_to_image_index(geometry: Geometry, w) -> np.ndarray:
    """Continuous voxel indices at which world points appear in the image (undoing the slice shifts).

    Inverts ``w = A q + A[:3, 3] + D[:, :2] s(q_k)``: the shift is in-plane, so ``q_k`` comes straight from
    ``A^-1 (w - A[:3, 3])`` and then ``q = A^-1 (w - A[:3, 3] - D[:, :2] s(q_k))``.
    """
    w = np.asarray(w, np.float64)
    a_inv = np.linalg.inv(geometry.affine[:3, :3])
    q = (w - geometry.affine[:3, 3]) @ a_inv.T
    ks = np.arange(geometry.shape[2], dtype=np.float64)
    s = np.stack([np.interp(q[..., 2], ks, geometry.slice_shift_mm[:, c]) for c in range(2)], axis=-1)
    return (w - geometry.affine[:3, 3] - s @ geometry.direction[:, :2].T) @ a_inv.T
