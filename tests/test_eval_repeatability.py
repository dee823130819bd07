"""Scan-rescan repeatability: statistics on hand-made tables against hand-computed ICC(A,1), RC and aRC, the
tables and figure, and one small end-to-end run on two phantom pairs with the shipped networks."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from deepstrain_jax.errors import InputError
from eval import repeatability as rep

N_GLOBAL = 16  # 7 volumes + 3 directions x (ESS, SRs, SRe)
N_ROWS = N_GLOBAL + 2 * 16


def _icc_a1_by_hand(a, b):
    """ICC(A,1) for k = 2 written out from the ANOVA sums (McGraw & Wong 1996)."""
    x = np.stack([a, b], 1).astype(float)
    n = len(a)
    g = x.mean()
    msr = 2 * np.sum((x.mean(1) - g) ** 2) / (n - 1)
    msc = n * np.sum((x.mean(0) - g) ** 2) / 1
    mse = np.sum((x - x.mean(1)[:, None] - x.mean(0)[None, :] + g) ** 2) / (n - 1)
    return (msr - mse) / (msr + mse + 2 * (msc - mse) / n)


def test_identical_scan_and_rescan_agree_perfectly():
    a = np.array([60.0, 55.0, 42.0, 71.0])
    s = rep.pair_statistics(a, a.copy())
    assert s["n"] == 4
    assert s["icc"] == pytest.approx(1.0)
    assert s["rc"] == 0.0 and s["rc_sigma_w"] == 0.0 and s["bias"] == 0.0 and s["arc_pct"] == 0.0
    assert math.isnan(s["icc_ci_low"]) and math.isnan(s["icc_ci_high"])  # no residual: no interval


def test_constant_offset_lowers_icc_but_not_the_bias_free_rc():
    x = np.array([1.0, 2.0, 3.0, 5.0])
    c = 1.0
    s = rep.pair_statistics(x + c, x)  # scan = rescan + 1
    var = np.var(x, ddof=1)  # 8.75 / 3
    # MSR = 2 var, MSC = n c^2 / 2, MSE = 0  ->  ICC(A,1) = 2 var / (2 var + c^2) = 0.8537
    assert s["icc"] == pytest.approx(2 * var / (2 * var + c * c)) == pytest.approx(0.853658, abs=1e-6)
    assert s["icc"] < 1.0
    assert s["bias"] == pytest.approx(1.0)
    assert s["rc"] == pytest.approx(0.0, abs=1e-12)              # 1.96 SD(d), SD(d) = 0
    assert s["rc_sigma_w"] == pytest.approx(1.96 * c)             # 1.96 sqrt(2) * (c / sqrt 2)
    assert s["arc_pct"] == pytest.approx(100 * np.mean(c / x))    # |a - b| / |b|, b = rescan
    sym = rep.pair_statistics(x + c, x, arc_reference="mean")
    assert sym["arc_pct"] == pytest.approx(100 * np.mean(c / (x + c / 2)))


def test_scattered_pairs_against_hand_computation():
    a = np.array([10.0, 12.0, 14.0, 16.0, 9.0])
    b = np.array([11.0, 11.0, 15.0, 15.0, 9.5])
    s = rep.pair_statistics(a, b)
    d = a - b
    assert s["bias"] == pytest.approx(d.mean())
    assert s["sd_diff"] == pytest.approx(np.std(d, ddof=1))
    assert s["rc"] == pytest.approx(1.96 * np.std(d, ddof=1))
    assert s["rc_sigma_w"] == pytest.approx(1.96 * np.sqrt(2) * np.sqrt(np.sum(d * d) / (2 * 5)))
    assert s["icc"] == pytest.approx(_icc_a1_by_hand(a, b))
    assert s["icc_ci_low"] < s["icc"] < s["icc_ci_high"] <= 1.0
    assert s["arc_pct"] == pytest.approx(100 * np.mean(np.abs(d) / b))
    assert s["mean_scan"] == pytest.approx(12.2) and s["mean_rescan"] == pytest.approx(12.3)


def test_incomplete_pairs_are_dropped_and_too_few_give_nan():
    s = rep.pair_statistics([1.0, np.nan, 3.0, 4.0], [1.5, 2.0, np.nan, 4.5])
    assert s["n"] == 2 and s["bias"] == pytest.approx(-0.5)
    one = rep.pair_statistics([1.0, np.nan], [1.5, 2.0])
    assert one["n"] == 1 and math.isnan(one["icc"]) and math.isnan(one["rc"]) and one["bias"] == -0.5
    none = rep.pair_statistics([np.nan], [np.nan])
    assert none["n"] == 0 and all(math.isnan(v) for k, v in none.items() if k != "n")
    zero_ref = rep.pair_statistics([1.0, 2.0, 3.0], [0.0, 2.5, 3.0])  # the zero reference is left out of aRC
    assert zero_ref["arc_pct"] == pytest.approx(100 * np.mean([0.5 / 2.5, 0.0]))
    with pytest.raises(ValueError, match="arc_reference"):
        rep.pair_statistics([1.0, 2.0], [1.0, 2.0], arc_reference="first")


def _results(edv, ess_cc, segments=True):
    """A minimal results.json dict holding what subject_values reads."""
    vols = {k: edv * f for k, f in (("lv_edv_ml", 1.0), ("lv_esv_ml", 0.4), ("lv_ef_pct", 0.6),
                                      ("lv_mass_g", 1.1), ("rv_edv_ml", 1.2), ("rv_esv_ml", 0.5),
                                      ("rv_ef_pct", 0.55))}
    ind = {d: {"ess_pct": ess_cc * f, "srs_per_s": ess_cc / 15 * f,
               "sre_per_s": -ess_cc / 20 * f}
           for d, f in (("radial", -2.0), ("circumferential", 1.0), ("longitudinal", 0.8))}
    aha = None
    if segments:
        cc = [ess_cc + 0.1 * s for s in range(16)] + [None]
        aha = {"ess_pct": {"circumferential": cc, "radial": [-2 * v if v is not None else None for v in cc],
                           "longitudinal": [None] * 17}}
    return {"volumes": vols, "strain": {"indices": ind}, "aha": aha}


def test_subject_values_reads_globals_and_segments():
    v = rep.subject_values(_results(100.0, -18.0))
    assert v["lv_edv_ml"] == 100.0 and v["rv_ef_pct"] == pytest.approx(55.0)
    assert v["circumferential_ess_pct"] == -18.0 and v["radial_srs_per_s"] == pytest.approx(2.4)
    assert v[rep.segment_key("circumferential", 1)] == -18.0
    assert v[rep.segment_key("radial", 16)] == pytest.approx(-2 * (-18.0 + 1.5))
    assert len(v) == N_GLOBAL + 32
    empty = rep.subject_values(_results(100.0, -18.0, segments=False))
    assert math.isnan(empty[rep.segment_key("radial", 3)])
    assert all(math.isnan(x) for x in rep.subject_values({}).values())


def test_summary_tables_and_figure():
    rng = np.random.default_rng(0)
    edv = rng.uniform(90, 180, 6)
    ess = rng.uniform(-22, -12, 6)
    values = {"subjects": [f"p{i}" for i in range(6)],
              "scan": [rep.subject_values(_results(e, s)) for e, s in zip(edv, ess)],
              "rescan": [rep.subject_values(_results(e + rng.normal(0, 3), s + rng.normal(0, 0.5)))
                         for e, s in zip(edv, ess)]}
    values["rescan"][2][rep.segment_key("radial", 5)] = float("nan")  # one missing segment value
    md, rows, png = rep.summarise_repeatability(values)
    assert png == rep.repeatability_png(rows)
    assert len(rows) == N_ROWS
    assert [r["measure"] for r in rows[:3]] == ["lv_edv_ml", "lv_esv_ml", "lv_ef_pct"]
    assert rows[N_GLOBAL]["measure"] == "circumferential_ess_pct_seg01"
    assert rows[-1]["measure"] == "radial_ess_pct_seg16"
    assert all(set(rep.CSV_FIELDS) == set(r) for r in rows)
    seg5 = next(r for r in rows if r["measure"] == rep.segment_key("radial", 5))
    assert seg5["n"] == 5
    for r in rows:
        assert math.isfinite(r["icc"]) and r["icc"] <= 1.0 and r["rc"] >= 0 and r["arc_pct"] >= 0
    assert "ICC(A,1)" in md and "| LV EDV | mL | 6 |" in md and "| 16 | 6 |" in md
    parsed = list(csv.DictReader(io.StringIO(rep.rows_to_csv(rows))))
    assert len(parsed) == N_ROWS and float(parsed[0]["icc"]) == pytest.approx(rows[0]["icc"])
    png = rep.repeatability_png(rows)
    import matplotlib.image as mpimg

    image = mpimg.imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 500 and image.shape[1] > 700
    assert png == rep.repeatability_png(rows)  # deterministic
    with pytest.raises(ValueError, match="rescans"):
        rep.summarise_repeatability({"scan": values["scan"], "rescan": values["rescan"][:-1]})


def test_find_pairs_needs_a_scan_rescan_cohort(tmp_path):
    with pytest.raises(InputError, match="scan/"):
        rep.find_pairs(tmp_path)
    (tmp_path / "scan" / "patient001").mkdir(parents=True)
    (tmp_path / "rescan" / "patient002").mkdir(parents=True)
    with pytest.raises(InputError, match="both"):
        rep.find_pairs(tmp_path)


# ------------------------------------------------------------------------------------------ end to end

TINY = dict(n_frames=6, snr=30.0, matrix=(112, 112), pixel_mm=1.6, n_slices=8, slice_thickness_mm=8.0,
            slice_spacing_mm=10.0, supersample_inplane=2, supersample_slice=3)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from deepstrain_jax.analysis.networks import Networks

    root = tmp_path_factory.mktemp("pairs")
    pairs = rep.make_pairs(root, 2, seed=3, phenotypes=["NOR", "DCM"], **TINY)
    assert rep.make_pairs(root, 2, seed=3, phenotypes=["NOR", "DCM"], **TINY) == pairs  # resumes
    cache = tmp_path_factory.mktemp("cache")
    calls = []
    values = rep.run_repeatability(root, Networks.load(), cache_dir=cache, progress=lambda *a: calls.append(a))
    return root, cache, values, calls, pairs


def test_end_to_end_on_two_phantom_pairs(study, tmp_path):
    root, cache, values, calls, pairs = study
    assert [p.name for p, _ in pairs] == ["patient001", "patient002"]
    assert values["subjects"] == ["patient001", "patient002"] and values["failed"] == {}
    assert [c[:3] for c in calls] == [(1, 2, "patient001"), (2, 2, "patient002")]
    for side in ("scan", "rescan"):
        for v in values[side]:
            for m in rep.GLOBAL_MEASURES:
                assert math.isfinite(v[m.key]), m.key
            assert sum(math.isfinite(v[rep.segment_key("circumferential", s)]) for s in range(1, 17)) >= 12
    md, rows, _ = rep.summarise_repeatability(values)
    assert len(rows) == N_ROWS
    for r in rows[:N_GLOBAL]:
        assert r["n"] == 2, r["measure"]
        for key in ("bias", "rc", "rc_sigma_w", "arc_pct", "icc"):
            assert math.isfinite(r[key]), (r["measure"], key)
    g = {r["measure"]: r for r in rows}
    # The same heart imaged twice: EF and global strain within a few units, volumes within ~15%.
    assert abs(g["lv_ef_pct"]["bias"]) < 5 and g["lv_edv_ml"]["arc_pct"] < 15
    assert abs(g["circumferential_ess_pct"]["bias"]) < 2
    # The NOR and DCM hearts differ far more than their scan and rescan: ICC near 1 for EF and GCS.
    assert g["lv_ef_pct"]["icc"] > 0.9 and g["circumferential_ess_pct"]["icc"] > 0.9
    print("\n" + md)

    paths = rep.write_repeatability(tmp_path, values)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths["csv"].read_text().splitlines()) == N_ROWS + 1
    assert json.loads(paths["values"].read_text())["subjects"] == values["subjects"]
    # Resume from the cached results.json (no networks needed), here from make_pairs' list of folders.
    again = rep.run_repeatability(pairs, None, cache_dir=cache)
    assert again["subjects"] == values["subjects"]
    for side in ("scan", "rescan"):
        for v0, v1 in zip(values[side], again[side]):
            assert v0.keys() == v1.keys()
            np.testing.assert_array_equal(list(v0.values()), list(v1.values()))  # NaN == NaN here
