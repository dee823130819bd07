"""eval.precision: the bfloat16-against-float32 summary, from hand-computed rows."""

import numpy as np
import pytest

from eval import precision


def test_summary_means_changes_and_bounds():
    entries = [{"subject": "a", "float32": {"dice_lv_ed": 0.90, "radial_ess_pct": 30.0},
                "bfloat16": {"dice_lv_ed": 0.901, "radial_ess_pct": 30.05}},
               {"subject": "b", "float32": {"dice_lv_ed": 0.80, "radial_ess_pct": 20.0},
                "bfloat16": {"dice_lv_ed": 0.80, "radial_ess_pct": 19.65}}]
    s = precision.summarise(entries)
    assert s["dice_lv_ed"]["float32"] == pytest.approx(0.85)
    assert s["dice_lv_ed"]["mean_change"] == pytest.approx(0.0005)
    assert s["dice_lv_ed"]["max_abs_change"] == pytest.approx(0.001)
    assert s["radial_ess_pct"]["mean_change"] == pytest.approx(-0.15)
    assert s["radial_ess_pct"]["max_abs_change"] == pytest.approx(0.35)
    text = precision.markdown({"set": s}, {"float32": 2.0, "bfloat16": 3.0})
    row = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "within 0.001" in row["dice_lv_ed"]               # |+0.0005| <= 1e-3
    assert "**beyond** 0.1" in row["radial_ess_pct"]         # |-0.15| > 0.1 points
    assert "bfloat16 / float32 = 1.50" in text


def test_summary_skips_subjects_without_a_value():
    entries = [{"subject": "a", "float32": {"dice_rv_es": 0.5}, "bfloat16": {"dice_rv_es": np.nan}},
               {"subject": "b", "float32": {"dice_rv_es": 0.7}, "bfloat16": {"dice_rv_es": 0.71}}]
    s = precision.summarise(entries)
    assert s["dice_rv_es"]["n"] == 1 and s["dice_rv_es"]["mean_change"] == pytest.approx(0.01)
