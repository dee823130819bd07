"""CarMEN on real cines (issue 12): label propagation, reverse pairs, pseudo-labels, the split, a tiny mixed run.

Real cines are read in place from ``../shared/data/acdc`` (CI has it); one or two patients only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from deepstrain_jax.data import acdc_real as ar
from deepstrain_jax.metrics import propagate_labels
from deepstrain_jax.ops.warp import warp
from deepstrain_jax.training_data import batches, pools
from deepstrain_jax.training_data import subjects as sj

ROOT = ar.default_root()
needs_data = pytest.mark.skipif(not ROOT.is_dir(), reason="../shared/data/acdc is not beside the repository")


def _ring_labels(shape=(40, 36, 6)):
    x, y = np.meshgrid(np.arange(shape[0]) - 19.5, np.arange(shape[1]) - 17.0, indexing="ij")
    r = np.hypot(x, y)
    lab2d = np.where(r < 6, 3, np.where(r < 10, 2, 0)).astype(np.uint8)
    lab2d[(x > 9) & (x < 15) & (np.abs(y) < 8)] = 1
    lab = np.repeat(lab2d[..., None], shape[2], axis=2)
    lab[..., 0] = 0
    return lab


def test_propagation_by_an_integer_shift_is_exact():
    lab = _ring_labels()
    shift = np.array([3.0, -2.0, 1.0])
    u = np.broadcast_to(shift, (*lab.shape, 3)).astype(np.float32)
    out = propagate_labels(lab, u)
    # out(X) = lab(X + shift): scipy's shift by -shift (order 0) is the same map; compare away from the clamped edge.
    expected = ndimage.shift(lab, -shift, order=0, mode="nearest")
    inner = (slice(4, -4), slice(4, -4), slice(1, -2))
    np.testing.assert_array_equal(out[inner], expected[inner])
    assert out.dtype == lab.dtype


def test_propagation_undoes_a_known_smooth_warp():
    """Labels moved by a smooth field come back with that field's inverse up to interpolation: the Dice with the
    original stays near 1 while the moved labels differ."""
    from deepstrain_jax.metrics import dice

    lab = _ring_labels((48, 48, 4))
    x = np.arange(48, dtype=np.float32)
    u = np.zeros((48, 48, 4, 3), np.float32)
    u[..., 0] = 1.5 * np.sin(2 * np.pi * x / 48)[None, :, None]  # x-displacement varying along y
    moved = propagate_labels(lab, u)
    back = propagate_labels(moved, -u)  # small, smooth: -u is the inverse to first order
    d_moved = dice(moved, lab, labels=[1, 2, 3])
    d_back = dice(back, lab, labels=[1, 2, 3])
    assert np.all(d_back > 0.95) and np.all(d_back >= d_moved - 1e-9)
    with pytest.raises(ValueError, match="same grid"):
        propagate_labels(lab, u[:-1])


def test_propagation_agrees_with_the_image_warp():
    """propagate_labels is warp() of each label's indicator, then the arg-max (the same backward-warp convention)."""
    rng = np.random.default_rng(0)
    lab = _ring_labels((32, 32, 5))
    u = rng.uniform(-1.5, 1.5, size=(*lab.shape, 3)).astype(np.float32)
    u = ndimage.gaussian_filter(u, (3, 3, 1, 0))
    onehot = (lab[..., None] == np.arange(4)).astype(np.float32)
    expected = np.asarray(warp(onehot[None], u[None]))[0].argmax(-1)
    np.testing.assert_array_equal(propagate_labels(lab, u), expected)


def _toy_subject(n_frames=5, truth=True):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(24, 24, 4, n_frames)).astype(np.float32)
    lab = {0: _ring_labels((24, 24, 4))}
    u = rng.normal(size=(n_frames, 24, 24, 4, 3)).astype(np.float32) if truth else None
    cfg = sj.SubjectConfig(inplane_mm=2.0, n_slices=4, crop=16, centre="fov", vcn_canvas=16)
    return sj.make_subject(image, (2.0, 2.0, 8.0), labels=lab, u_mm=u, ed=0, es=2, cfg=cfg)


def test_reverse_pairs_swap_frames_and_drop_the_truth():
    s = _toy_subject()
    pool = [s]

    class Pool(list):
        has_motion_truth = True

    pool = Pool(pool)
    b0 = batches.carmen_batch(pool, 0, 0, 8, augment=None, identity_prob=0.0)
    np.testing.assert_array_equal(batches.carmen_batch(pool, 0, 0, 8, augment=None, identity_prob=0.0,
                                                       reverse_prob=0.0)["inputs"], b0["inputs"])
    assert not b0["reversed"].any()
    b1 = batches.carmen_batch(pool, 0, 0, 8, augment=None, identity_prob=0.0, reverse_prob=1.0)
    assert b1["reversed"].all()
    for k in range(8):
        t = b1["frame"][k]
        # [t, ED], each channel z-scored: channel 0 is frame t, channel 1 is ED.
        np.testing.assert_allclose(b1["inputs"][k, ..., 0], b0_frame(s, t), atol=1e-5)
        np.testing.assert_allclose(b1["inputs"][k, ..., 1], b0_frame(s, s.ed), atol=1e-5)
        assert not b1["u_mask"][k].any() and not b1["u_vox"][k].any()
    assert b0["u_mask"].any()
    with pytest.raises(ValueError, match="reverse_prob"):
        batches.carmen_batch(pool, 0, 0, 2, reverse_prob=1.5)


def b0_frame(s, t):
    x = s.image[t]
    return (x - x.mean()) / (x.std() + 1e-8)


def _affine_field(shape, A, b, centre):
    """``u(X) = A (X - c) + c + b - X`` on the voxel grid and its exact inverse ``v(x) = A^-1 (x - c - b) + c - x``."""
    g = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"), axis=-1)
    u = (g - centre) @ np.asarray(A).T + centre + b - g
    v = (g - centre - b) @ np.linalg.inv(A).T + centre - g
    return u.astype(np.float32), v


def test_inverse_displacement_of_an_affine_motion_is_exact():
    """An affine motion (in-plane rotation and contraction, through-plane shortening and descent) is its own linear
    interpolant, so the inverse is exact, and known exactly where the preimage has all eight neighbours in the mask."""
    shape = (48, 44, 10)
    th = np.deg2rad(9.0)
    A = np.array([[0.85 * np.cos(th), -0.85 * np.sin(th), 0.0], [0.85 * np.sin(th), 0.85 * np.cos(th), 0.0],
                  [0.0, 0.0, 0.9]])
    c, b = np.array([23.0, 21.5, 4.5]), np.array([1.2, -0.7, 1.3])
    u, v_true = _affine_field(shape, A, b, c)
    g = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    mask = (np.hypot(g[..., 0] - c[0], g[..., 1] - c[1]) < 15) & (g[..., 2] >= 1) & (g[..., 2] <= 8)
    v, v_mask = sj.inverse_displacement(u, mask)
    pre = g + v_true  # the preimage X of every voxel x
    expected = (ndimage.map_coordinates(mask.astype(np.float32), np.moveaxis(pre, -1, 0), order=1, mode="nearest")
                >= 1 - 1e-6) & np.all((pre >= 0) & (pre <= np.asarray(shape) - 1), axis=-1)
    np.testing.assert_array_equal(v_mask, expected)
    assert v_mask.sum() > 1000
    np.testing.assert_allclose(v[v_mask], v_true[v_mask], atol=2e-3)
    assert not v[~v_mask].any()
    # Nothing known, nothing returned; a field off the mask's grid is refused.
    v0, m0 = sj.inverse_displacement(u, np.zeros(shape, bool))
    assert not m0.any() and not v0.any()
    with pytest.raises(ValueError, match="u_vox"):
        sj.inverse_displacement(u[:-1], mask)


def _affine_subject(n_frames=4, shape=(24, 24, 4)):
    """A subject whose motion ED -> t is affine (rotation, contraction, descent): its inverse is known exactly."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=(*shape, n_frames)).astype(np.float32)
    u_mm = np.zeros((n_frames, *shape, 3), np.float32)
    for t in range(1, n_frames):
        th = np.deg2rad(4.0 * t)
        A = np.array([[0.95 * np.cos(th), -0.95 * np.sin(th), 0], [0.95 * np.sin(th), 0.95 * np.cos(th), 0],
                      [0, 0, 1.0]])
        u_vox, _ = _affine_field(shape, A, np.array([0.3 * t, -0.2 * t, 0.25 * t]), np.array([11.5, 11.5, 1.5]))
        u_mm[t] = u_vox * np.array([2.0, 2.0, 8.0], np.float32)
    cfg = sj.SubjectConfig(inplane_mm=2.0, n_slices=4, crop=24, centre="fov", vcn_canvas=16)
    return sj.make_subject(image, (2.0, 2.0, 8.0), labels={0: _ring_labels(shape)}, u_mm=u_mm, ed=0, es=2, cfg=cfg)


class _TruthPool(list):
    has_motion_truth = True


def test_reverse_pairs_carry_the_inverse_truth_when_asked():
    """``reverse_truth``: a reversed phantom pair [t, ED] is supervised by the inverse field on the frame-t grid;
    sampled with the forward field it closes the cycle, ``v(x) + u(x + v(x)) = 0``."""
    shape = (24, 24, 4)
    s = _affine_subject(shape=shape)
    pool = _TruthPool([s])
    plain = batches.carmen_batch(pool, 0, 0, 6, augment=None, identity_prob=0.0, reverse_prob=1.0)
    assert not plain["u_mask"].any()
    b = batches.carmen_batch(pool, 0, 0, 6, augment=None, identity_prob=0.0, reverse_prob=1.0, reverse_truth=True)
    np.testing.assert_array_equal(b["inputs"], plain["inputs"])  # the same pairs, now with their truth
    for k in range(6):
        t, m, v = b["frame"][k], b["u_mask"][k], b["u_vox"][k]
        assert b["reversed"][k] and m.sum() > 100
        fwd = s.u_vox[t]
        pts = np.moveaxis(np.indices(shape, dtype=np.float32) + np.moveaxis(v, -1, 0), 0, -1)[m]
        back = np.stack([ndimage.map_coordinates(fwd[..., c], pts.T, order=1, mode="nearest") for c in range(3)], -1)
        np.testing.assert_allclose(v[m] + back, 0.0, atol=3e-3)
    # Forward pairs are unchanged by the option.
    fwd_b = batches.carmen_batch(pool, 0, 0, 6, augment=None, identity_prob=0.0, reverse_truth=True)
    np.testing.assert_array_equal(fwd_b["u_vox"], batches.carmen_batch(pool, 0, 0, 6, augment=None,
                                                                       identity_prob=0.0)["u_vox"])


@needs_data
def test_pseudo_labels_fill_only_the_unlabelled_frames():
    from train.pseudo_labels import CarsonLabeller

    (ref,) = ar.find_cases(ROOT, "cine", include=["001"])
    case = ar.read_case(ref)
    case = case._replace(image=case.image[..., :4])  # ED (0) and three more frames keep it quick
    lab = CarsonLabeller()
    auto = lab(case)
    assert sorted(auto) == [1, 2, 3] and case.ed == 0 and 0 in case.labels
    for t, v in auto.items():
        assert v.shape == case.image.shape[:3] and v.dtype == np.uint8 and set(np.unique(v)) <= {0, 1, 2, 3}
    # Next to ED the automatic labels agree with the manual ED labels on the LV (same heart, 1 frame later).
    from deepstrain_jax.metrics import dice

    assert dice(auto[1], case.labels[0], labels=[3])[0] > 0.8
    # The pool uses them, keeps the manual ones, and keys its cache by the labeller.
    p = pools.RealAcdcPool([ref], held_out=ar.HELD_OUT, labeller=lab)
    assert "labeller" in p._settings() and "labeller" not in pools.RealAcdcPool([ref])._settings()


@needs_data
@pytest.mark.parametrize("variant", ["real", "real_v2", "real_v3", "real_inverse"])
def test_carmen_real_config_never_reaches_a_held_out_patient(tmp_path, variant):
    from configs import carmen
    from train import trainer

    c = carmen.get_config(variant)
    assert tuple(c.data.real.held_out) == ar.HELD_OUT
    refs = trainer.real_training_refs(c)
    names = {r.number for r in refs}
    assert len(refs) == 36 and not names & set(ar.HELD_OUT)
    assert {r.form for r in refs} == {"cine"}
    # Every subject index of many steps maps to a training cine or a phantom.
    c.data.real.pseudo_labels = ""  # the split, not the labelling, is under test
    train, _ = trainer.make_pools(c, tmp_path)
    for step in range(0, 300, 7):
        for i in batches.subject_indices(len(train), c.seed, step, c.train.batch_size):
            k, j = train.locate(int(i))
            if isinstance(train.pools[k], pools.RealAcdcPool):
                assert train.pools[k].refs[j].number not in ar.HELD_OUT


def test_real_inverse_config_samples_reversed_pairs_with_their_truth():
    """The config reaches the sampler: ``:real_inverse`` gives reversed pairs with the inverse truth, ``:real_v3``
    (the shipped model's run) reversed pairs without any."""
    from configs import carmen
    from train import trainer

    pool = _TruthPool([_affine_subject()])
    seen = {}
    for variant in ("real_inverse", "real_v3"):
        c = carmen.get_config(variant)
        c.augment.enabled = False
        c.train.batch_size = 8
        sample, _ = trainer.make_samplers(c)
        b = sample(pool, 0)
        rev = b["reversed"] & (b["frame"] != 0)
        assert rev.any() and (~rev).any()
        seen[variant] = b["u_mask"][rev].reshape(rev.sum(), -1).any(axis=1)
    assert seen["real_inverse"].all() and not seen["real_v3"].any()


@needs_data
def test_tiny_mixed_real_and_phantom_training_lowers_both_losses(tmp_path):
    """Real cines (unsupervised + pseudo-labels) and phantoms (with the end-point error) in one run."""
    from configs import carmen
    from train import trainer

    c = carmen.get_config("real_smoke")
    c.data.phantom_models = ("A",)
    c.data.real.limit = 1
    c.data.cache_dir = str(tmp_path / "cache")
    c.augment.enabled = False
    c.loss.lambda_epe = 0.1
    c.train.steps, c.train.lr = 24, 3e-3
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 4, 24, 24
    trainer.train_and_evaluate(c, tmp_path / "run")
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 6
    first, last = train_rows[0], train_rows[-1]
    assert last["loss"] < first["loss"], (first, last)
    assert last["epe_mm"] < first["epe_mm"], (first, last)


def test_clinical_figure_interpretation_follows_the_numbers():
    from eval.real_cines_figure import green_lagrange_pct, interpretation

    assert green_lagrange_pct(-23.0) == pytest.approx(-23.0 + 0.5 * 23.0 ** 2 / 100.0)  # E = e + e^2 / 2

    def row(group, sre, ef, gcs=-10.0):
        return {"group": group, "radial_sre": sre, "lv_ef_pct": ef, "circumferential_ess_pct": gcs,
                "radial_ess_pct": 30.0, "longitudinal_ess_pct": -5.0}

    rows = [row("NOR", -2.0, 60), row("NOR", -2.0, 62), row("HCM", -1.0, 70), row("RV", -3.0, 55)]
    text = interpretation(rows)
    assert "NOR -2.00 (n = 2)" in text and "HCM -1.00 (50 % of NOR" in text
    assert "lower in magnitude than NOR's in HCM patients with normal EF" in text  # RV is faster here
    assert "circumferential -10.0 % against -20 %" in text
    rows = [row("NOR", -2.0, 60), row("HCM", -3.0, 70), row("RV", -2.5, 40)]
    assert "not lower than NOR's in HCM or RV" in interpretation(rows)


def test_propagation_table_reports_the_closure_and_its_parts(monkeypatch):
    """eval.real_motion on a cine whose ES labels are its ED labels shifted by a whole voxel: no motion gives the
    Dice of the shift; an estimator returning the exact shift (and its inverse) gives Dice 1 and closure 0; one
    whose backward motion forgets the through-plane part closes in-plane only; the table shows both parts."""
    import types

    from eval import real_motion

    lab_ed = _ring_labels((40, 36, 6))
    lab_ed[..., -2:] = 0  # empty end slices: the roll wraps nothing round, the clamped edge sees no label
    shift = np.array([2, -1, 1])
    lab_es = np.roll(lab_ed, tuple(shift), axis=(0, 1, 2))  # ES(x) = ED(x - shift): the heart moved by +shift
    case = types.SimpleNamespace(image=np.zeros((40, 36, 6, 5), np.float32), ed=0, es=2,
                                 labels={0: lab_ed, 2: lab_es}, spacing_mm=np.array([1.5, 1.5, 8.0]),
                                 name="toy", group="NOR")
    # The ED -> ES motion on the ED grid is +shift (V_ES(X + shift) = V_ED(X)); the ES -> ED motion is -shift.
    def field(back):
        def estimate(a, b, s):
            u = shift if np.array_equal(a, case.image[..., case.ed]) else back
            return np.broadcast_to(u.astype(np.float32), (*a.shape, 3)).copy()
        return estimate

    exact = {"exact": field(-shift), "no_z_back": field(-shift * np.array([1, 1, 0]))}
    base = real_motion._estimator
    monkeypatch.setattr(real_motion, "_estimator", lambda m, n: exact[m] if m in exact else base(m, n))
    case.image = np.random.default_rng(0).normal(size=case.image.shape).astype(np.float32)
    none = real_motion.propagation_case(case, "none")
    assert none["closure_mean_mm"] == 0.0 and none["ed2es_dice_myo"] < 0.8
    good = real_motion.propagation_case(case, "exact")
    assert good["ed2es_dice_myo"] == good["es2ed_dice_myo"] == good["ed2es_dice_lv"] == 1.0
    assert good["closure_mean_mm"] == pytest.approx(0.0, abs=1e-6)
    half = real_motion.propagation_case(case, "no_z_back")
    assert half["closure_in_plane_mm"] == pytest.approx(0.0, abs=1e-6)
    assert half["closure_through_plane_mm"] == pytest.approx(8.0, rel=1e-5)  # one 8 mm slice short
    assert half["closure_mean_mm"] == pytest.approx(8.0, rel=1e-5)
    ana = [{"patient": "toy", "group": "NOR", "model": "m", "folded_fraction": 0.0, "closure_mean_mm": 8.0,
            "closure_in_plane_mm": 0.0, "closure_through_plane_mm": 8.0, "radial_ess_pct": 30.0,
            "circumferential_ess_pct": -15.0, "longitudinal_ess_pct": None}]
    table = real_motion.markdown([none, good, half], ana, {"m": "x"})
    assert "| toy | NOR | m | 0.0000 | 8.00 | 0.00 / 8.00 | 30.0 | -15.0 | – |" in table
    assert "| no_z_back |" in table and "| exact |" in table
