"""Subjects on the network grid: resampling/cropping against the scipy path and analytic fields, slice order,
centring, z-scoring, the VCN view, the .npz cache format, and an end-to-end check on a rendered phantom (u_vox
warps frame t onto ED) with the phantom and ACDC-folder pools."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrain_jax.data import preprocessing as pp
from deepstrain_jax.training_data import pools
from deepstrain_jax.training_data import subjects as sj

SPACING = (2.5, 2.5, 8.0)
CFG = sj.SubjectConfig(inplane_mm=1.25, n_slices=8, crop=16, vcn_canvas=24, vcn_factor=2)


def _ring_labels(shape=(12, 12, 4), centre=(5.3, 6.1), t_frames=3):
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    out = np.zeros(shape + (t_frames,), np.uint8)
    for t in range(t_frames):
        r = np.hypot(i - centre[0] - 0.3 * t, j - centre[1])
        lab = np.where(r < 1.6, 3, np.where(r < 3.2, 2, 0))
        lab[(i < 3) & (j < 4) & (lab == 0)] = 1
        out[..., t] = lab[..., None]
    out[:, :, 0, :][out[:, :, 0, :] == 2] = 0  # one slice without myocardium
    return out


def _ramp(shape=(12, 12, 4, 3)):
    i, j, k, t = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return 3.0 * i + 2.0 * j + 5.0 * k + 10.0 * t + 100.0


def test_image_and_labels_equal_the_scipy_resample_then_crop_path():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 500, (12, 12, 4, 3)).astype(np.int16)
    labels = _ring_labels()
    for align in ("centre", "corner"):
        cfg = CFG._replace(align=align)
        s = sj.make_subject(image, SPACING, labels=labels, ed=0, es=2, cfg=cfg)
        plan = pp.plan_resampling(image.shape[:3], SPACING, inplane_mm=1.25, n_slices=8, align=align)
        for got, want in zip(s.resampling, plan):
            np.testing.assert_array_equal(got, want)
        raw = pp.apply_crop(pp.apply_resampling(image.astype(np.float32), plan, order=1), s.crop)
        ref = pp.zscore(np.moveaxis(raw, 3, 0), axes=(1, 2, 3))
        np.testing.assert_allclose(s.image, ref, atol=1e-5)
        ref_lab = pp.apply_crop(pp.apply_resampling(labels, plan, order=0), s.crop)
        np.testing.assert_array_equal(s.labels, np.moveaxis(ref_lab, 3, 0))
        assert s.image.dtype == np.float32 and s.labels.dtype == np.uint8
        np.testing.assert_allclose(s.image.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
        np.testing.assert_allclose(s.image.std(axis=(1, 2, 3)), 1.0, atol=1e-4)
        np.testing.assert_allclose(s.spacing_mm, [1.25, 1.25, 4.0])


def test_linear_image_and_labels_round_trip_through_the_inverse_transforms():
    image = _ramp()
    labels = _ring_labels()
    cfg = CFG._replace(crop=24, centre="fov")  # the whole resampled grid, so nothing is cut away
    s = sj.make_subject(image, SPACING, labels=labels, ed=0, es=1, cfg=cfg)
    raw = s.image * s.intensity_scale[:, None, None, None] + s.intensity_mean[:, None, None, None]
    back = pp.invert_resampling(pp.invert_crop(np.moveaxis(raw, 0, 3), s.crop), s.resampling, order=1)
    # Exact for a linear image away from the first and last voxel of each axis (clamped there).
    np.testing.assert_allclose(back[1:-1, 1:-1, 1:-1], image[1:-1, 1:-1, 1:-1], rtol=1e-5, atol=1e-3)
    lab_back = pp.invert_resampling(pp.invert_crop(np.moveaxis(s.labels, 0, 3), s.crop), s.resampling, order=0)
    np.testing.assert_array_equal(lab_back, labels)


def _network_positions_mm(s: sj.Subject, native_spacing):
    """Native array-frame mm of every network voxel centre, from the plan formula x_in = offset + ratio * i."""
    plan, crop = s.resampling, s.crop
    axes = [plan.offset[d] + plan.ratio[d] * (crop.start[d] + np.arange(crop.size)) for d in range(2)]
    axes.append(plan.offset[2] + plan.ratio[2] * np.arange(plan.out_shape[2]))
    x_in = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return x_in, x_in * np.asarray(native_spacing)


def test_u_vox_of_a_linear_field_is_the_field_at_the_network_positions_in_network_voxels():
    shape = (12, 12, 4)
    a = np.array([[0.02, -0.05, 0.01], [0.04, 0.01, -0.02], [0.0, 0.03, 0.05]])
    b = np.array([1.0, -2.0, 0.5])
    x_mm = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) * np.asarray(SPACING)
    u_mm = (x_mm @ a.T + b)[None].repeat(2, axis=0)
    u_mm[0] = 0.0
    labels = _ring_labels(t_frames=2)
    s = sj.make_subject(np.ones(shape + (2,)), SPACING, labels=labels, u_mm=u_mm, cfg=CFG)
    x_in, x_net_mm = _network_positions_mm(s, SPACING)
    expect = (x_net_mm @ a.T + b) / s.spacing_mm
    inside = np.all((x_in >= 0) & (x_in <= np.asarray(shape) - 1), axis=-1)
    assert inside.sum() > 100
    np.testing.assert_allclose(s.u_vox[1][inside], expect[inside], atol=1e-4)
    np.testing.assert_array_equal(s.u_vox[0], 0.0)
    assert s.u_vox.shape == (2, 16, 16, 8, 3) and s.u_vox.dtype == np.float32
    # Known on a box only: exact inside the network mask, and the mask is "every neighbour with weight in the box".
    box = np.zeros(shape, bool)
    box[3:10, 2:9, 1:3] = True
    s2 = sj.make_subject(np.ones(shape + (2,)), SPACING, labels=labels, u_mm=u_mm * box[None, ..., None],
                         u_mask=box, cfg=CFG)
    lo = np.floor(x_in)
    hi = np.where(x_in > lo, lo + 1, lo)
    want = np.all((lo >= [3, 2, 1]) & (hi <= [9, 8, 2]), axis=-1) & inside
    np.testing.assert_array_equal(s2.u_mask, want)
    assert want.sum() > 20
    np.testing.assert_allclose(s2.u_vox[1][want], expect[want], atol=1e-4)


def test_apex_to_base_input_gives_the_same_subject():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 100, (12, 12, 4, 3))
    labels = _ring_labels()
    u_mm = rng.normal(size=(3, 12, 12, 4, 3))
    a = sj.make_subject(image, SPACING, labels=labels, u_mm=u_mm, ed=0, es=2, cfg=CFG)
    b = sj.make_subject(image[:, :, ::-1], SPACING, labels=labels[:, :, ::-1],
                        u_mm=u_mm[:, :, :, ::-1] * [1, 1, -1], ed=0, es=2, cfg=CFG, slice_order="apex_to_base")
    assert b.slices_reversed and not a.slices_reversed
    np.testing.assert_allclose(b.image, a.image, atol=1e-6)
    np.testing.assert_array_equal(b.labels, a.labels)
    np.testing.assert_allclose(b.u_vox, a.u_vox, atol=1e-6)


def test_centre_on_ed_myocardium_fov_and_jitter():
    labels = _ring_labels()
    image = np.random.default_rng(2).uniform(0, 100, (12, 12, 4, 3))
    s = sj.make_subject(image, SPACING, labels=labels, ed=1, es=2, cfg=CFG)
    myo = np.argwhere(s.labels[1] == 2)[:, :2].mean(axis=0)
    assert np.all(np.abs(myo - CFG.crop / 2) <= 0.5 + 1e-9)
    assert s.labelled.all()
    f = sj.make_subject(image, SPACING, labels=labels, cfg=CFG._replace(centre="fov"))
    np.testing.assert_allclose(f.centre_vox, [11.5, 11.5])
    assert f.crop.start == (4, 4)
    j = [sj.make_subject(image, SPACING, labels=labels, cfg=CFG._replace(centre_jitter_mm=3.0), jitter_seed=k)
         for k in (0, 0, 1)]
    base = sj.make_subject(image, SPACING, labels=labels, cfg=CFG).centre_vox
    np.testing.assert_array_equal(j[0].centre_vox, j[1].centre_vox)
    assert not np.allclose(j[0].centre_vox, j[2].centre_vox)
    for x in j:
        assert np.linalg.norm(x.centre_vox - base) <= 3.0 / 1.25 + 1e-9
    with pytest.raises(ValueError, match="jitter_seed"):
        sj.make_subject(image, SPACING, labels=labels, cfg=CFG._replace(centre_jitter_mm=3.0))


def test_vcn_view_matches_the_vcn_module():
    from deepstrain_jax.models import vcn

    rng = np.random.default_rng(3)
    image = rng.uniform(0, 100, (12, 12, 4, 3))
    labels = _ring_labels()
    s = sj.make_subject(image, SPACING, labels={0: labels[..., 0], 2: labels[..., 2]}, ed=0, es=2, cfg=CFG)
    assert s.labelled.tolist() == [True, False, True]
    plan = s.resampling
    for k, frame in enumerate((0, 2)):
        canvas = pp.apply_crop(pp.apply_resampling(image[..., frame].astype(np.float32), plan, order=1), s.vcn_crop)
        down = np.asarray(vcn.downsample_mean(np.moveaxis(canvas, 2, 0)[..., None]))[..., 0]
        np.testing.assert_allclose(s.vcn_image[k], pp.zscore(np.moveaxis(down, 0, 2), axes=(0, 1)), atol=1e-5)
        canvas_lab = pp.apply_crop(pp.apply_resampling(labels[..., frame], plan, order=0), s.vcn_crop)
        target = np.asarray(vcn.heatmap_target(canvas_lab))[..., 0]
        np.testing.assert_allclose(np.asarray(vcn.gaussian_heatmap(s.vcn_centre[k], target.shape)), target,
                                   atol=1e-5)
    assert s.vcn_image.shape == (2, 12, 12, 8)
    # ES unlabelled -> NaN centre.
    u = sj.make_subject(image, SPACING, labels={0: labels[..., 0]}, ed=0, es=2, cfg=CFG)
    assert np.all(np.isnan(u.vcn_centre[1])) and np.all(np.isfinite(u.vcn_centre[0]))


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    s = sj.make_subject(rng.uniform(0, 100, (12, 12, 4, 3)), SPACING, labels=_ring_labels(),
                        u_mm=rng.normal(size=(3, 12, 12, 4, 3)), es=2, frame_interval_s=0.04, cfg=CFG, name="x")
    np.savez(tmp_path / "s.npz", **sj.subject_to_arrays(s))
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        r = sj.subject_from_arrays({k: z[k] for k in z.files})
    for key, v in s._asdict().items():
        w = getattr(r, key)
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(w, v)
            assert w.dtype == v.dtype
        elif isinstance(v, pp.Resampling):
            for got, want in zip(w, v):
                np.testing.assert_array_equal(got, want)
        else:
            assert w == v, key
    n = sj.make_subject(rng.uniform(0, 100, (12, 12, 4, 3)), SPACING, labels=_ring_labels(), cfg=CFG)
    assert sj.subject_from_arrays(sj.subject_to_arrays(n)).u_vox is None


def test_bad_inputs_raise_clear_errors():
    labels = _ring_labels()
    image = np.ones((12, 12, 4, 3))
    with pytest.raises(ValueError, match="myocardium"):
        sj.make_subject(image, SPACING, labels={1: labels[..., 1]}, ed=0, cfg=CFG)
    with pytest.raises(ValueError, match="spacing"):
        sj.make_subject(image, (2.5, 0.0, 8.0), labels=labels, cfg=CFG)
    with pytest.raises(ValueError, match="u_mm"):
        sj.make_subject(image, SPACING, labels=labels, u_mm=np.zeros((3, 12, 12, 4, 2)), cfg=CFG)
    with pytest.raises(ValueError, match="NaN"):
        sj.make_subject(image * np.nan, SPACING, labels=labels, cfg=CFG)
    with pytest.raises(ValueError, match="es"):
        sj.make_subject(image, SPACING, labels=labels, es=3, cfg=CFG)
    with pytest.raises(ValueError, match="outside"):
        sj.make_subject(image, SPACING, labels=labels + 3, cfg=CFG)
    with pytest.raises(ValueError, match="centre"):
        sj.check_config(CFG._replace(centre="middle"))


class SyntheticPool(pools.CachedPool):
    """A cheap pool (module level so that prefetch workers can unpickle it)."""

    kind = "synthetic"

    def __init__(self, n, **kw):
        self.n = n
        super().__init__(CFG, **kw)

    def __len__(self):
        return self.n

    def _settings(self):
        return {"n": self.n}

    def _build(self, i):
        rng = np.random.default_rng(i)
        return sj.make_subject(rng.uniform(0, 100, (12, 12, 4, 3)), SPACING, labels=_ring_labels(),
                               u_mm=rng.normal(size=(3, 12, 12, 4, 3)), cfg=CFG, name=f"synthetic {i}")


def test_pool_lru_disk_cache_and_workers(tmp_path):
    one = pools._nbytes(SyntheticPool(1)._build(0))
    pool = SyntheticPool(4, cache_dir=tmp_path, cache_mb=2.5 * one / 2 ** 20)
    first = [pool[i] for i in range(4)]
    assert list(pool._lru) == [2, 3]  # bounded by bytes, least recently used dropped
    assert len(pool.build_seconds) == 4
    again = pool[0]  # evicted from memory, read back from disk
    assert len(pool.build_seconds) == 4 and list(pool._lru) == [3, 0]
    for key in ("image", "labels", "u_vox", "u_mask", "vcn_image"):
        np.testing.assert_array_equal(getattr(again, key), getattr(first[0], key))
    assert pool[-1] is pool[3]
    assert not any(p.name.endswith(".tmp") or p.name.startswith(".") for p in pool.cache_dir.iterdir())
    # Workers in spawned processes fill another cache; the parent builds nothing and reads identical subjects.
    par = SyntheticPool(3, cache_dir=tmp_path / "par")
    seen = []
    par.prefetch(progress=lambda done, total, sec: seen.append((done, total)), workers=2)
    assert seen[-1] == (3, 3) and par.build_seconds == []
    assert sorted(p.name for p in par.cache_dir.glob("*.npz")) == [f"subject_{i:07d}.npz" for i in range(3)]
    np.testing.assert_array_equal(par[1].u_vox, SyntheticPool(3)._build(1).u_vox)
    assert par.build_seconds == []
    with pytest.raises(ValueError, match="cache_dir"):
        SyntheticPool(2).prefetch(workers=2)


# --- rendered phantoms (one JAX compilation of the renderer for the whole module) ---------------------------------

TINY = dict(n_frames=6, snr=30.0, supersample_inplane=1, supersample_slice=1, matrix=(64, 64), pixel_mm=2.5,
            n_slices=8)
PCFG = sj.SubjectConfig(inplane_mm=2.5, n_slices=8, crop=48, vcn_canvas=64, vcn_factor=2)


@pytest.fixture(scope="module")
def phantom_case():
    from deepstrain_jax.phantom import dataset

    return dataset.make_case(dataset.patient_seed(0, 0), "NOR", **TINY)


@pytest.mark.slow  # the first phantom render compiles the renderer (about 20 s on 2 cores)
def test_phantom_u_vox_warps_frame_t_onto_ed(phantom_case):
    """End-to-end sign and units: warp(V_t, u_vox[t]) matches V_ED inside the ED myocardium; -u does not, and
    neither does u with its through-plane component reversed.

    Intensities are compared before the per-frame z-scoring (``image * scale + mean``): z-scoring each frame on
    its own changes the intensities of ED and t differently, which would blur the through-plane comparison.
    """
    from deepstrain_jax.ops.warp import warp

    s = sj.subject_from_phantom(phantom_case, PCFG)
    assert s.labelled.all() and s.u_vox.shape == (6, 48, 48, 8, 3)
    myo = s.labels[s.ed] == 2
    assert np.all(s.u_mask[myo])
    t = s.es
    raw = s.image * s.intensity_scale[:, None, None, None] + s.intensity_mean[:, None, None, None]
    fields = np.stack([s.u_vox[t], -s.u_vox[t], s.u_vox[t] * np.float32([1, 1, -1])])
    moved = np.asarray(warp(np.repeat(raw[t][None, ..., None], 3, axis=0), fields))[..., 0]
    err = [np.mean((x - raw[s.ed])[myo] ** 2) for x in (raw[t], *moved)]
    assert np.abs(s.u_vox[t][myo]).max() > 1.0 and np.abs(s.u_vox[t][..., 2][myo]).max() > 0.5  # real motion
    assert err[1] < 0.2 * err[0]
    assert err[2] > 5 * err[1]
    assert err[3] > 1.5 * err[1]


@pytest.mark.slow
def test_acdc_and_phantom_pools_agree_and_cache(phantom_case, tmp_path):
    from deepstrain_jax.phantom import dataset

    dataset.generate_dataset(tmp_path / "b2a", 2, seed=0, phenotypes=["NOR", "HCM"], snr=30.0, n_frames=6,
                             **{k: v for k, v in TINY.items() if k not in ("n_frames", "snr")})
    dataset.generate_dataset(tmp_path / "a2b", 1, seed=0, phenotypes=["NOR"], snr=30.0, n_frames=6,
                             slice_order="apex_to_base",
                             **{k: v for k, v in TINY.items() if k not in ("n_frames", "snr")})
    direct = sj.subject_from_phantom(phantom_case, PCFG)
    acdc_pool = pools.AcdcPool(tmp_path / "b2a", cfg=PCFG)
    assert len(acdc_pool) == 2 and acdc_pool.has_motion_truth
    a = acdc_pool[0]
    flipped = pools.AcdcPool(tmp_path / "a2b", cfg=PCFG)[0]
    assert flipped.slices_reversed and not a.slices_reversed
    for other in (a, flipped):
        np.testing.assert_allclose(other.image, direct.image, atol=1e-5)
        np.testing.assert_array_equal(other.labels, direct.labels)
        np.testing.assert_allclose(other.u_vox, direct.u_vox, atol=1e-5)
    plain = pools.AcdcPool(tmp_path / "b2a", cfg=PCFG, use_truth=False)
    p0 = plain[0]
    assert not plain.has_motion_truth and p0.u_vox is None
    assert p0.labelled.tolist() == [i in (p0.ed, p0.es) for i in range(6)]
    # Without the truth the recorded slice order still applies.
    f0 = pools.AcdcPool(tmp_path / "a2b", cfg=PCFG, use_truth=False)[0]
    np.testing.assert_allclose(f0.image, direct.image, atol=1e-5)
    np.testing.assert_array_equal(f0.labels[[f0.ed, f0.es]], direct.labels[[f0.ed, f0.es]])

    cache = tmp_path / "cache"
    pool = pools.PhantomPool(0, 2, cfg=PCFG, phenotypes=["NOR", "HCM"], cache_dir=cache, **TINY)
    pool.prefetch([1], progress=False)
    np.testing.assert_allclose(pool[1].image, acdc_pool[1].image, atol=1e-5)
    assert len(pool.build_seconds) == 1
    again = pools.PhantomPool(0, 5, cfg=PCFG, phenotypes=["NOR", "HCM"], cache_dir=cache, **TINY)
    np.testing.assert_array_equal(again[1].u_vox, pool[1].u_vox)
    assert again.build_seconds == []  # read from disk
    files = sorted(p.name for p in pool.cache_dir.iterdir())
    assert files == ["pool.json", "subject_0000001.npz"]
    other = pools.PhantomPool(1, 2, cfg=PCFG, cache_dir=cache, **TINY)
    assert other.cache_dir != pool.cache_dir
    with pytest.raises(IndexError):
        pool[2]
