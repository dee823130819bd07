"""`python -m eval.main` on the :smoke config: the whole report from two tiny phantoms, then a resumed re-run."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(workdir, out):
    return subprocess.run([sys.executable, "-m", "eval.main", "--config=configs/eval.py:smoke",
                           f"--workdir={workdir}", f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def test_smoke_report_is_complete_and_resumes(tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "docs" / "validation.md"
    first = _run(workdir, out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[study 2/2]" in first.stderr
    text = out.read_text()
    for heading in ("## 1. Phantom study", "### Table I", "### Table II", "### Table III", "### By factor",
                    "### The family no network was trained on", "### Table II: volumes (against the exact phantom "
                    "volumes) and motion, family C", "2 phantoms of family C",
                    "## 2. Repeatability", "ICC", "## 3. Classical baselines", "CarMEN (shipped)", "optical_flow"):
        assert heading in text, heading
    for name in ("phantom_bland_altman.png", "phantom_segment_error.png", "phantom_epe_cycle.png",
                 "phantom_epe_segments.png", "repeatability_segments.png"):
        assert (tmp_path / "docs" / "validation_figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"validation_figures/{name}" in text
    rows = list(csv.DictReader((workdir / "study.csv").open()))
    assert len(rows) == 2 and {r["slice_order"] for r in rows} == {"base_to_apex", "apex_to_base"}
    assert all(0.0 <= float(r["dice_LV_ed"]) <= 1.0 for r in rows)
    cached = sorted(p.name for p in (workdir / "rows").iterdir())
    assert [n[0] for n in cached] == ["c", "c", "s", "s"]      # family C's two phantoms and the study's two
    stamps = [(workdir / "rows" / n).stat().st_mtime_ns for n in cached]
    second = _run(workdir, out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [(workdir / "rows" / n).stat().st_mtime_ns for n in cached] == stamps  # rows reused, not recomputed
    table = text[text.index("### Table I"):text.index("### Table II")]
    assert table in out.read_text()
