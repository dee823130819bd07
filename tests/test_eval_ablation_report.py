"""Ablation report on hand-written ablation.csv tables: order, best/paper markers, figure, gaps, bad files, CLI."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import pytest

from deepstrain_jax.errors import InputError
from eval import ablation_report as ar

HEADER = "lambda_a,lambda_s,epe_mm,angle_deg,magnitude_mm\n"
# A 3 x 2 grid as train/ablation.py writes it (grid order, not EPE order).
FULL = HEADER + """0.0,0.01,1.90,35.0,0.90
0.0,0.1,1.70,31.0,0.80
0.5,0.01,1.40,25.0,0.70
0.5,0.1,1.20,22.0,0.60
0.8,0.01,1.10,24.0,0.55
0.8,0.1,1.30,23.5,0.65
"""


def _write(tmp_path, text, name="ablation.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _table_rows(markdown):
    """(lambda_a, lambda_s, marks) of each table row, in order."""
    out = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("Rank", "---:"):
            out.append((float(cells[1]), float(cells[2]), cells[6]))
    return out


def test_table_sorted_by_epe_with_best_and_paper_marked(tmp_path):
    md, png = ar.ablation_report(_write(tmp_path, FULL))
    rows = _table_rows(md)
    assert [(a, s) for a, s, _ in rows] == [(0.8, 0.01), (0.5, 0.1), (0.8, 0.1), (0.5, 0.01), (0.0, 0.1),
                                            (0.0, 0.01)]
    assert rows[0][2] == "**best**" and rows[1][2] == "paper"
    assert all(m == "" for _, _, m in rows[2:])
    assert "| 1 | 0.8 | 0.01 | 1.100 | 24.00 | 0.550 |" in md
    assert "missing" not in md.lower() and "not in this grid" not in md


def test_best_and_paper_in_one_cell(tmp_path):
    text = FULL.replace("0.5,0.1,1.20", "0.5,0.1,1.00")
    rows = _table_rows(ar.ablation_report(_write(tmp_path, text))[0])
    assert rows[0][:2] == (0.5, 0.1) and rows[0][2] == "**best**, paper"


def test_figure_decodes_and_is_deterministic(tmp_path):
    path = _write(tmp_path, FULL)
    _, png = ar.ablation_report(path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (540, 700)
    assert image[..., :3].std() > 0.05  # something is drawn
    assert ar.ablation_report(path)[1] == png


def test_partial_grid_and_missing_values_are_tolerated(tmp_path):
    lines = FULL.splitlines(keepends=True)
    # Drop the paper's cell (0.5, 0.1); blank out one EPE and one angle.
    text = "".join(ln for ln in lines if not ln.startswith("0.5,0.1,"))
    text = text.replace("0.8,0.01,1.10,24.0", "0.8,0.01,nan,24.0").replace("0.0,0.1,1.70,31.0", "0.0,0.1,1.70,")
    md, png = ar.ablation_report(_write(tmp_path, text))
    rows = _table_rows(md)
    assert [(a, s) for a, s, _ in rows] == [(0.8, 0.1), (0.5, 0.01), (0.0, 0.1), (0.0, 0.01), (0.8, 0.01)]
    assert rows[0][2] == "**best**"  # the NaN-EPE cell cannot be best and sorts last
    assert "| - | 0.8 | 0.01 | n/a | 24.00 | 0.550 |" in md
    assert "| 3 | 0 | 0.1 | 1.700 | n/a | 0.800 |" in md
    assert "Cells missing from the grid: (0.5, 0.1)." in md
    assert "not in this grid" in md
    assert "Cells with missing values: (0, 0.1), (0.8, 0.01)." in md
    mpimg.imread(io.BytesIO(png), format="png")


def test_all_values_missing_still_reports(tmp_path):
    md, png = ar.ablation_report(_write(tmp_path, HEADER + "0.5,0.1,,,\n0,0.01,nan,nan,nan\n"))
    assert "No cell has a finite EPE." in md and "**best**" not in md
    assert _table_rows(md)[1][2] == "paper"
    mpimg.imread(io.BytesIO(png), format="png")


@pytest.mark.parametrize("text, match", [
    ("", "missing column"),
    ("lambda_a,lambda_s,epe_mm\n0.5,0.1,1.2\n", "angle_deg, magnitude_mm"),
    (HEADER, "no rows"),
    (HEADER + "0.5,0.1,abc,1,1\n", "line 2, epe_mm: 'abc' is not a number"),
    (HEADER + "0.5,,1,1,1\n", "line 2: lambda_a and lambda_s must be finite"),
    (HEADER + "0.5,0.1,1,1,1\n0.5,0.1,2,2,2\n", "appears twice"),
])
def test_bad_tables_raise_a_clear_error(tmp_path, text, match):
    with pytest.raises(InputError, match=match) as info:
        ar.ablation_report(_write(tmp_path, text))
    assert str(tmp_path / "ablation.csv") in str(info.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ar.ablation_report(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(InputError, match="unreadable"):
        ar.ablation_report(p)


def test_cli_writes_both_files(tmp_path, capsys):
    csv_path = _write(tmp_path, FULL)
    out = tmp_path / "report"
    assert ar.main(["--csv", str(csv_path), "--out", str(out)]) == 0
    md = (out / "ablation.md").read_text()
    assert md == ar.ablation_report(csv_path)[0]
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["ablation.md", "ablation.png"]  # no temporaries left
    assert ar.main(["--csv", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
