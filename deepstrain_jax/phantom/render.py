"""Render bSSFP-like short-axis cine stacks of a phantom.

Frames, geometry and the breath-hold shift convention are those of :mod:`deepstrain_jax.phantom.scanner`:
voxel ``(i, j, k)`` images the heart-frame point :func:`~deepstrain_jax.phantom.scanner.voxel_heart_positions`.

Acquisition model, per frame t (section 6.3):

1. **Scene**: the tissue class ``kinematics.scene(h, t, params)`` (Eulerian, through the inverse motion) at
   ``n_ip x n_ip`` in-plane sub-samples (pixel-centred grid, i.e. a box average over the pixel) times ``n_sl``
   through-plane sub-planes, weighted by the slice profile: rectangular of width ``slice_thickness_mm``
   (uniform weights), or Gaussian of FWHM ``slice_thickness_mm`` sampled over +-1 FWHM.
2. **Signal**: each sub-sample carries the complex bSSFP steady-state signal of its tissue
   (:func:`bssfp_signal`, ``TISSUE_PROPERTIES``), on resonance, or with ``banding`` at the off-resonance of a
   smooth B0 map in the heart frame (:func:`b0_map_hz`). The voxel value is the weighted mean (partial volume).
3. **Coil shading**: multiplication by :func:`coil_shading`, a smooth world-fixed field in
   ``[1/(1+a), 1+a]``.
4. **Scaling and noise**: intensities are scaled so that the mean noise-free ED myocardial voxel (label 2) is
   ``myo_level``; complex Gaussian noise of standard deviation ``sigma = myo_level / snr_myo`` per channel is
   added and the magnitude taken (Rician; pure-noise background is Rayleigh with mean
   ``sigma sqrt(pi/2) = 1.2533 sigma`` and SD ``0.6551 sigma``), rounded and clipped to ``[0, 32767]`` (int16).
5. **Labels** (ACDC, 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity): the label with the largest
   weighted share of the same sub-samples (ties to the lower label), mapping tissues through
   ``kinematics.TISSUE_TO_LABEL`` (papillary muscles: myocardial signal, LV cavity label 3).

ED is frame 0 (activation 0 at ``t = 0``); ES is ``kinematics.es_frame(params)``. Slices are rendered by one
jitted function, compiled once per (in-plane matrix, supersampling, banding, adaptive, phantom model).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from deepstrain_jax.labels import N_LABELS
from deepstrain_jax.phantom import kinematics as kin
from deepstrain_jax.phantom import scanner
from deepstrain_jax.phantom.scanner import Acquisition, Geometry

# Tissue relaxation properties at 1.5 T, keyed by ``kinematics.Tissue`` name: PD (a.u.), T1 (ms), T2 (ms). The
# "realistic" set of section 6.2 (MRXCAT2_python "ours") gives blood/myocardium ~ 3 at 60 degrees, as in real
# bSSFP. OTHER (background, mediastinum, air) is rendered as air (no signal), which leaves pure-noise background
# for noise estimates; lung gets a near-zero PD (its tabulated PD is for tissue, the air-filled organ shows almost
# no signal); papillary muscles, RV wall and chest-wall muscle get myocardial properties.
_MYO, _BLOOD, _FAT, _LIVER = (88.0, 1000.0, 43.0), (79.0, 1387.0, 280.0), (60.0, 250.0, 70.0), (87.0, 661.0, 57.0)
_AIR, _LUNG = (0.0, 1000.0, 50.0), (3.0, 1171.0, 61.0)
TISSUE_PROPERTIES = {
    "OTHER": _AIR, "RV_BLOOD": _BLOOD, "LV_MYOCARDIUM": _MYO, "LV_BLOOD": _BLOOD, "PAPILLARY": _MYO,
    "RV_WALL": _MYO, "FAT": _FAT, "LUNG": _LUNG, "LIVER": _LIVER, "CHEST_WALL": _MYO,
}
RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)  # mean of |sigma (N1 + i N2)| / sigma
RAYLEIGH_SD = math.sqrt(2.0 - math.pi / 2.0)


def bssfp_signal(pd, t1_ms, t2_ms, flip_deg, tr_ms, df_hz=0.0, te_ms=None):
    """Complex steady-state bSSFP signal with alternating-phase RF (Freeman-Hill form, section 6.2).

        E1 = exp(-TR/T1), E2 = exp(-TR/T2), theta = pi + 2 pi df TR,
        C = E2 (E1 - 1)(1 + cos a),  D = (1 - E1 cos a) - (E1 - cos a) E2^2,
        M = PD (1 - E1) sin a (1 - E2 exp(-i theta)) / (C cos theta + D) * exp(-TE/T2),  TE = TR/2.

    ``M`` is the transverse magnetisation right after the pulse (relative to the equilibrium ``PD``) decayed to
    the echo. On resonance (``df = 0``) it is real and positive; signal nulls (dark bands) fall at
    ``df = +-1/(2 TR) + k/TR``. Broadcasts over all arguments; jittable.

    Args:
      pd: proton density (arbitrary units); t1_ms, t2_ms: relaxation times (ms, > 0).
      flip_deg: flip angle in degrees; tr_ms: repetition time (ms); df_hz: off-resonance (Hz).
      te_ms: echo time (ms), default ``TR/2``.
    Returns:
      complex array, broadcast shape of the inputs.
    """
    tr_ms = jnp.asarray(tr_ms)
    te_ms = 0.5 * tr_ms if te_ms is None else jnp.asarray(te_ms)
    alpha = jnp.deg2rad(flip_deg)
    e1 = jnp.exp(-tr_ms / jnp.asarray(t1_ms))
    e2 = jnp.exp(-tr_ms / jnp.asarray(t2_ms))
    theta = jnp.pi + 2.0 * jnp.pi * df_hz * tr_ms * 1e-3
    c = e2 * (e1 - 1.0) * (1.0 + jnp.cos(alpha))
    d = (1.0 - e1 * jnp.cos(alpha)) - (e1 - jnp.cos(alpha)) * e2**2
    num = pd * (1.0 - e1) * jnp.sin(alpha) * (1.0 - e2 * jnp.exp(-1j * theta))
    return num / (c * jnp.cos(theta) + d) * jnp.exp(-te_ms / jnp.asarray(t2_ms))


def tissue_tables() -> dict:
    """Per tissue code (``kinematics.Tissue``): ``pd``, ``t1_ms``, ``t2_ms`` and ACDC ``label``, numpy arrays."""
    codes = {t.name: int(t) for t in kin.Tissue}
    missing = sorted(set(codes) - set(TISSUE_PROPERTIES))
    if missing:
        raise ValueError(f"no relaxation properties for tissue(s) {missing}; add them to TISSUE_PROPERTIES")
    n = max(codes.values()) + 1
    props = np.tile(np.asarray(_AIR), (n, 1))
    for name, code in codes.items():
        props[code] = TISSUE_PROPERTIES[name]
    labels = np.asarray(kin.TISSUE_TO_LABEL, dtype=np.int32)
    if labels.shape != (n,):
        raise ValueError(f"TISSUE_TO_LABEL has {labels.shape} entries for {n} tissue codes")
    return {"pd": props[:, 0], "t1_ms": props[:, 1], "t2_ms": props[:, 2], "label": labels}


def coil_shading(geometry: Geometry, amplitude: float) -> np.ndarray:
    """Smooth receive-coil shading at the voxel centres (world-fixed: breath-hold shifts do not move it).

    Each loop of radius ``a = 100`` mm at ``p_c`` has the on-axis Biot-Savart fall-off
    ``b_c(w) = (a^2 / (a^2 + |w - p_c|^2))^(3/2)``; the combined field is the root-sum-of-squares ``B``. With
    ``f = log B - mean(log B)`` over the FOV, the shading is ``exp(log(1 + amplitude) f / max|f|)`` in
    ``[1/(1+amplitude), 1+amplitude]``.

    Returns:
      ``(nx, ny, nz)`` float64 positive field (all ones for ``amplitude = 0``).
    """
    nx, ny, nz = geometry.shape
    if amplitude == 0:
        return np.ones((nx, ny, nz))
    q = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in (nx, ny, nz)], indexing="ij"), axis=-1)
    w = q @ geometry.affine[:3, :3].T + geometry.affine[:3, 3]
    d2 = np.sum((w[..., None, :] - geometry.coil_positions_mm) ** 2, axis=-1)
    b = np.sqrt(np.sum((1e4 / (1e4 + d2)) ** 3, axis=-1))
    f = np.log(b)
    f -= f.mean()
    peak = np.abs(f).max()
    return np.exp(math.log1p(amplitude) * f / peak) if peak > 0 else np.ones_like(f)


def b0_map_hz(h_mm, gradient_hz_per_mm, hotspot_mm, width_mm, peak_hz):
    """Off-resonance in the heart frame: a linear term plus a Gaussian hot spot (section 6.2, banding).

        df(h) = g . (h - h0) + peak exp(-|h - h0|^2 / (2 width^2))   (Hz)

    Args:
      h_mm: ``(..., 3)`` heart-frame positions; gradient_hz_per_mm: ``(3,)``; hotspot_mm: ``(3,)`` centre h0;
      width_mm, peak_hz: scalars.
    Returns:
      ``(...)`` off-resonance in Hz. Jittable.
    """
    d = h_mm - hotspot_mm
    return d @ gradient_hz_per_mm + peak_hz * jnp.exp(-jnp.sum(d * d, axis=-1) / (2.0 * width_mm**2))


def subsample_offsets(acquisition: Acquisition):
    """In-plane offsets (voxel units, ``(n_ip^2, 2)``) and through-plane offsets (mm, ``(n_sl,)``) with weights.

    In-plane: ``((m + 1/2)/n_ip - 1/2)`` per axis, equal weights. Through-plane, rectangular profile:
    ``((m + 1/2)/n_sl - 1/2) * thickness``, equal weights; Gaussian profile (FWHM = thickness): the same
    points spread over +-thickness, weights ``exp(-o^2 / (2 s^2))`` with ``s = thickness / 2.3548``.
    Weights sum to 1.
    """
    n_ip, n_sl, th = acquisition.supersample_inplane, acquisition.supersample_slice, acquisition.slice_thickness_mm
    o = (np.arange(n_ip) + 0.5) / n_ip - 0.5
    offs_ip = np.stack(np.meshgrid(o, o, indexing="ij"), axis=-1).reshape(-1, 2)
    u = (np.arange(n_sl) + 0.5) / n_sl - 0.5
    if acquisition.slice_profile == "rect":
        offs_sl, w = u * th, np.ones(n_sl)
    else:
        offs_sl = 2.0 * u * th
        w = np.exp(-0.5 * (offs_sl / (th / (2.0 * math.sqrt(2.0 * math.log(2.0))))) ** 2)
    return offs_ip, offs_sl, w / w.sum()


_CHUNK = 1024  # mixed (pixel, sub-plane) entries supersampled per step of the adaptive path


@functools.partial(jax.jit, static_argnames=("matrix", "banding", "adaptive"))
def _render_slice(params, t_frac, k, s, g_mat, h0, spacing, offs_ip, offs_sl, w_sl, tables, b0, seq, *,
                  matrix, banding, adaptive):
    # One slice k (with its breath-hold shift s) of one frame; compiled once per in-plane matrix.
    nx, ny = matrix
    n_ip2, n_sl = offs_ip.shape[0], offs_sl.shape[0]
    n_entries = nx * ny * n_sl
    n_padded = -(-n_entries // _CHUNK) * _CHUNK
    dtype = jnp.float32
    on_resonance = bssfp_signal(tables["pd"], tables["t1_ms"], tables["t2_ms"], seq[0], seq[1]).real

    def positions(i, j, k, o_sl, s):
        # Array-frame mm of (continuous) in-plane indices i, j on slice k at through-plane offset o_sl, shifted
        # by the slice's breath-hold shift s, mapped to the heart frame: h = G a + h0.
        a = jnp.stack(jnp.broadcast_arrays(i * spacing[0] + s[0], j * spacing[1] + s[1], k * spacing[2] + o_sl),
                      axis=-1)
        return a @ g_mat.T + h0

    def signal(cls, h):
        if banding:
            df = b0_map_hz(h, b0["gradient"], b0["hotspot"], b0["width"], b0["peak"])
            return bssfp_signal(tables["pd"][cls], tables["t1_ms"][cls], tables["t2_ms"][cls], seq[0], seq[1], df)
        return on_resonance[cls].astype(jnp.complex64)

    def onehot(cls):
        return jax.nn.one_hot(tables["label"][cls], N_LABELS, dtype=dtype)

    def full_slice(k, s):
        i = jnp.arange(nx, dtype=dtype)[:, None, None, None] + offs_ip[None, None, :, 0, None]
        j = jnp.arange(ny, dtype=dtype)[None, :, None, None] + offs_ip[None, None, :, 1, None]
        h = positions(i, j, k, offs_sl[None, None, None, :], s)          # (nx, ny, n_ip2, n_sl, 3)
        cls = kin.scene(h, t_frac, params)
        w = w_sl / n_ip2
        return (jnp.sum(w * signal(cls, h), axis=(2, 3)),
                jnp.sum(w[:, None] * onehot(cls), axis=(2, 3)))

    def adaptive_slice(k, s):
        # Classify the pixel corners of every sub-plane; a (pixel, sub-plane) entry whose four corners agree is
        # taken as pure, the others are supersampled n_ip x n_ip like the full path.
        ic = jnp.arange(nx + 1, dtype=dtype)[:, None, None] - 0.5
        jc = jnp.arange(ny + 1, dtype=dtype)[None, :, None] - 0.5
        corners = kin.scene(positions(ic, jc, k, offs_sl[None, None, :], s), t_frac, params)
        c00 = corners[:-1, :-1]
        mixed = (c00 != corners[1:, :-1]) | (c00 != corners[:-1, 1:]) | (c00 != corners[1:, 1:])
        centres = positions(jnp.arange(nx, dtype=dtype)[:, None, None], jnp.arange(ny, dtype=dtype)[None, :, None],
                            k, offs_sl[None, None, :], s)                 # (nx, ny, n_sl, 3)
        sig = signal(c00, centres).reshape(-1)
        lab = onehot(c00).reshape(-1, N_LABELS)
        # Supersample the mixed entries in chunks of a fixed size, as many chunks as there are mixed entries:
        # the cost follows the boundary length, with one compilation.
        n_mixed = jnp.sum(mixed)
        flat = jnp.nonzero(mixed.reshape(-1), size=n_padded, fill_value=n_entries)[0]

        def chunk(c, carry):
            sig, lab = carry
            sel = jax.lax.dynamic_slice(flat, (c * _CHUNK,), (_CHUNK,))
            idx = jnp.minimum(sel, n_entries - 1)
            i = (idx // (ny * n_sl)).astype(dtype)[:, None] + offs_ip[None, :, 0]
            j = ((idx // n_sl) % ny).astype(dtype)[:, None] + offs_ip[None, :, 1]
            h = positions(i, j, k, offs_sl[idx % n_sl][:, None], s)         # (_CHUNK, n_ip2, 3)
            cls = kin.scene(h, t_frac, params)
            sig = sig.at[sel].set(jnp.mean(signal(cls, h), axis=1), mode="drop")
            lab = lab.at[sel].set(jnp.mean(onehot(cls), axis=1), mode="drop")
            return sig, lab

        sig, lab = jax.lax.fori_loop(0, (n_mixed + _CHUNK - 1) // _CHUNK, chunk, (sig, lab))
        sig, lab = sig.reshape(nx, ny, n_sl), lab.reshape(nx, ny, n_sl, N_LABELS)
        return jnp.sum(w_sl * sig, axis=-1), jnp.sum(w_sl[:, None] * lab, axis=-2)

    return adaptive_slice(k, s) if adaptive else full_slice(k, s)


def compile_params(params):
    """``params`` with the static fields that enter no per-point computation fixed (phenotype "NOR", n_frames 2).

    ``scene``, ``displacement``, ``strain_rcl`` and ``aha_truth`` take the time explicitly and never read
    ``n_frames``; the phenotype is a label. Passing this copy to jitted functions compiles them once per model
    instead of once per (phenotype, frame count).
    """
    return dataclasses.replace(params, phenotype="NOR", n_frames=2)


def frame_fractions(params) -> np.ndarray:
    """Cycle fraction ``t / RR = k / T`` of every frame k (uniform sampling from ED, section 5), ``(T,)``."""
    n = int(np.asarray(kin.frame_times_s(params)).shape[0])
    return np.arange(n, dtype=np.float64) / n


def render_noise_free(params, geometry: Geometry, acquisition: Acquisition, frames=None):
    """Noise-free complex signal and label shares of every frame, before shading and scaling.

    Args:
      params: ``kinematics.PhantomParams``.
      geometry, acquisition: from :mod:`deepstrain_jax.phantom.scanner`.
      frames: 0-based frame indices to render (default all).
    Returns:
      ``signal`` ``(nx, ny, nz, F)`` complex64 (real-valued without banding) and ``fractions``
      ``(nx, ny, nz, F, 4)`` float32 label shares (they sum to 1 over the last axis).
    """
    t_all = frame_fractions(params)
    frames = range(len(t_all)) if frames is None else frames
    tab = tissue_tables()
    tables = {k: jnp.asarray(v, jnp.int32 if k == "label" else jnp.float32) for k, v in tab.items()}
    offs_ip, offs_sl, w_sl = subsample_offsets(acquisition)
    rot, d = geometry.rotation, geometry.direction
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    args = dict(g_mat=f32(rot.T @ d), h0=f32(rot.T @ (geometry.affine[:3, 3] - geometry.translation_mm)),
                spacing=f32(geometry.spacing_mm), offs_ip=f32(offs_ip),
                offs_sl=f32(offs_sl), w_sl=f32(w_sl), tables=tables,
                b0={"gradient": f32(geometry.b0_gradient_hz_per_mm), "hotspot": f32(geometry.b0_hotspot_mm),
                    "width": f32(geometry.b0_hotspot_width_mm), "peak": f32(geometry.b0_peak_hz)},
                seq=f32([acquisition.flip_deg, acquisition.tr_ms]))
    nx, ny, nz = geometry.shape
    core = compile_params(params)
    sig = np.zeros((nx, ny, nz, len(frames)), np.complex64)
    frac = np.zeros((nx, ny, nz, len(frames), N_LABELS), np.float32)
    for n, f in enumerate(frames):
        for k in range(nz):
            out = _render_slice(core, jnp.float32(t_all[f]), jnp.float32(k), f32(geometry.slice_shift_mm[k]), **args,
                                matrix=(nx, ny), banding=bool(acquisition.banding), adaptive=bool(acquisition.adaptive))
            sig[:, :, k, n], frac[:, :, k, n] = out
    return sig, frac


def labels_from_fractions(fractions) -> np.ndarray:
    """Majority label: ``argmax`` over the last axis (ties to the lower label), uint8."""
    return np.argmax(np.asarray(fractions), axis=-1).astype(np.uint8)


def add_rician_noise(clean, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``clean + sigma (N1 + i N2)`` with independent standard normals ``N1, N2``.

    Args:
      clean: real or complex noise-free signal, any shape.
      sigma: noise standard deviation per channel (>= 0).
      rng: numpy Generator.
    Returns:
      float32 magnitude, shape of ``clean`` (Rician; Rayleigh where ``clean = 0``).
    """
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    clean = np.asarray(clean)
    if sigma == 0:
        return np.abs(clean).astype(np.float32)
    noise = rng.standard_normal((2, *clean.shape), dtype=np.float32)
    return np.abs(clean + sigma * (noise[0] + 1j * noise[1])).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RenderedCine:
    """One rendered cine.

    Attributes:
      image: ``(nx, ny, nz, T)`` int16 magnitude images.
      labels: ``(nx, ny, nz, T)`` uint8 ACDC labels of every frame.
      clean: ``(nx, ny, nz, T)`` float32 noise-free magnitude in the same units as ``image``.
      sigma: noise standard deviation per channel, image units.
      scale: image units per unit of :func:`bssfp_signal` (before shading).
      shading: ``(nx, ny, nz)`` coil shading field.
      geometry, acquisition: what was rendered.
      ed, es: 0-based ED and ES frames; frame_interval_s: frame interval (s); t_frac: ``(T,)`` cycle fractions.
    """

    image: np.ndarray
    labels: np.ndarray
    clean: np.ndarray
    sigma: float
    scale: float
    shading: np.ndarray
    geometry: Geometry
    acquisition: Acquisition
    ed: int
    es: int
    frame_interval_s: float
    t_frac: np.ndarray


def render_cine(params, geometry: Geometry, acquisition: Acquisition, noise_seed: int) -> RenderedCine:
    """Render the full cine of ``params`` with ``geometry`` and ``acquisition`` (module docstring, steps 1-5).

    Args:
      params: ``kinematics.PhantomParams``.
      geometry, acquisition: see :mod:`deepstrain_jax.phantom.scanner`.
      noise_seed: integer seed of the noise stream (independent of the geometry and acquisition seeds).
    Returns:
      :class:`RenderedCine`.
    Raises:
      ValueError: no voxel is labelled myocardium at ED (the SNR would be undefined).
    """
    signal, fractions = render_noise_free(params, geometry, acquisition)
    labels = labels_from_fractions(fractions)
    shading = coil_shading(geometry, acquisition.coil_shading)
    shaded = signal * shading[..., None].astype(np.float32)
    ed = 0
    myo = labels[..., ed] == 2
    if not myo.any():
        raise ValueError("no voxel is labelled LV myocardium at ED: check the FOV, slices and heart placement")
    scale = acquisition.myo_level / float(np.mean(np.abs(shaded[..., ed][myo])))
    clean = scale * shaded
    sigma = 0.0 if math.isinf(acquisition.snr_myo) else acquisition.myo_level / acquisition.snr_myo
    magnitude = add_rician_noise(clean, sigma, scanner.stream(noise_seed, "noise"))
    image = np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
    times = np.asarray(kin.frame_times_s(params), dtype=np.float64)
    dt = float(times[1] - times[0]) if times.size > 1 else float("nan")
    return RenderedCine(image=image, labels=labels, clean=np.abs(clean).astype(np.float32), sigma=sigma,
                        scale=scale, shading=shading, geometry=geometry, acquisition=acquisition, ed=ed,
                        es=int(kin.es_frame(params)), frame_interval_s=dt, t_frac=frame_fractions(params))
