"""Scoring a baseline on a phantom (eval.baselines.run) and the ``python -m eval.baselines`` table."""

import numpy as np
import pytest

from eval.baselines import __main__ as cli
from eval.baselines import run_baseline_on_case

COARSE = cli.COARSE


@pytest.fixture(scope="module")
def case():
    from deepstrain_jax.phantom import dataset

    return dataset.make_case(900000, "NOR", n_frames=4, snr=30.0, **COARSE)


def oracle_for(case):
    """A 'method' returning the exact displacement of whichever frame it is handed."""
    image = np.asarray(case.cine.image, dtype=np.float64)
    spacing = np.asarray(case.cine.geometry.spacing_mm, dtype=np.float64)

    def oracle(image_ed, image_t, spacing_mm):
        t = next(k for k in range(image.shape[3]) if np.array_equal(image[..., k], image_t))
        return np.asarray(case.arrays["u_mm"][t], dtype=np.float64) / spacing

    return oracle


def test_zero_field_scores_the_true_motion(case):
    r = run_baseline_on_case(case, "zero")
    es, myo = case.cine.es, case.arrays["myo_mask"]
    assert r["frames"] == list(range(4)) and r["n_pairs"] == 3  # ED is not estimated
    true_es = np.asarray(case.arrays["u_mm"][es], dtype=np.float64)
    np.testing.assert_allclose(r["epe_es_mm"], np.linalg.norm(true_es, axis=-1)[myo].mean(), rtol=1e-6)
    gcs_true = case.curves["global_strain"]["cc"][es]
    np.testing.assert_allclose(r["gcs_error_es_pp"], -100.0 * gcs_true, atol=1e-4)
    assert r["gcs_true"][es] == pytest.approx(gcs_true)
    assert r["epe_mm"][case.cine.ed] < 1e-5  # the truth at ED is 0 up to float32 rounding


def test_oracle_field_has_zero_epe_and_the_grid_floor_strain_error(case):
    r = run_baseline_on_case(case, oracle_for(case), frames=[case.cine.es])
    assert r["frames"] == [case.cine.es] and r["method"] == "oracle"
    assert r["epe_es_mm"] < 1e-4
    assert r["gcs_error_es_pp"] == pytest.approx(r["truth_field_gcs_error_es_pp"], abs=1e-3)
    assert r["grs_error_es_pp"] == pytest.approx(r["truth_field_grs_error_es_pp"], abs=1e-3)
    assert abs(r["truth_field_gcs_error_es_pp"]) < 2.0


def test_unknown_method(case):
    with pytest.raises(ValueError, match="unknown method"):
        run_baseline_on_case(case, "snakes")


def test_cli_prints_a_markdown_table(case, monkeypatch, capsys):
    from deepstrain_jax.phantom import dataset

    monkeypatch.setattr(dataset, "make_case", lambda *a, **k: case)
    assert cli.main(["--n", "1", "--methods", "zero,demons", "--frames", "es", "--coarse"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("| method | EPE at ES (mm) |")
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["zero", "demons", "truth field (grid floor)"]
    assert "rendering phantom seed 900000" in err


def test_cli_rejects_unknown_methods(capsys):
    assert cli.main(["--methods", "demons,snakes"]) == 2
    assert "snakes" in capsys.readouterr().err
