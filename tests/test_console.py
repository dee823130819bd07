"""Console output (deepstrain_jax.console): verbosity, foreign absl messages, bars only on a terminal, -v/-q."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from absl import logging

from deepstrain_jax import console

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore():
    yield
    console.set_verbosity(console.DEFAULT)


def test_levels_and_foreign_messages(capsys):
    console.set_verbosity(console.DEFAULT)
    console.info("own %d", 1)
    logging.info("orbax-like chatter")       # another library on the same absl logger, at INFO
    logging.warning("foreign warning")
    console.debug("hidden debug")
    err = capsys.readouterr().err.splitlines()
    assert err == ["own 1", "foreign warning"]
    console.set_verbosity(console.QUIET)
    console.info("own 2")
    console.warning("still shown")
    assert capsys.readouterr().err.splitlines() == ["still shown"]
    console.set_verbosity(console.VERBOSE)
    console.debug("shown debug")
    logging.info("orbax-like chatter")
    assert capsys.readouterr().err.splitlines() == ["shown debug", "orbax-like chatter"]
    with pytest.raises(ValueError, match="verbosity"):
        console.set_verbosity(2)


def test_no_bar_off_a_terminal_but_it_counts(capsys):
    console.set_verbosity(console.DEFAULT)
    with console.progress(total=3, desc="x") as bar:   # pytest's stderr is not a terminal
        for _ in range(3):
            bar.update(1)
        console.info("line while the bar is open")
        assert bar.n == 3
    assert capsys.readouterr().err == "line while the bar is open\n"
    assert list(console.progress(range(4))) == [0, 1, 2, 3]


def test_cli_quiet_and_verbose_flags(tmp_path):
    """-q: the cohort's per-subject lines and the skipped-file notes are gone, the result line stays; -v and -q
    together are refused."""
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "notes.txt").write_text("not a cine")
    r = subprocess.run([sys.executable, "-m", "deepstrain_jax", "analyze", str(tmp_path / "cohort"), "--out",
                        str(tmp_path / "out"), "-q", "-v"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    loud = subprocess.run([sys.executable, "-m", "deepstrain_jax", "analyze", str(tmp_path / "cohort"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    quiet = subprocess.run([sys.executable, "-m", "deepstrain_jax", "analyze", str(tmp_path / "cohort"), "--out",
                            str(tmp_path / "out"), "-q"], capture_output=True, text=True, cwd=REPO)
    assert loud.returncode == quiet.returncode == 2          # nothing to analyse: one clear error
    assert "error" in quiet.stderr and "error" in loud.stderr


def test_library_users_get_the_fast_cpu_convolutions_in_one_call():
    """use_fast_cpu_convolutions() adds the XLA:CPU flag once (and keeps what the user set), before JAX starts."""
    code = ("import os; os.environ['XLA_FLAGS'] = '--xla_dump_to=/nonexistent_not_used'; "
            "from deepstrain_jax.xla_flags import RECOMMENDED_CPU_XLA_FLAGS as F, use_fast_cpu_convolutions as u; "
            "u(); u(); v = os.environ['XLA_FLAGS']; assert v.count(F) == 1 and v.startswith('--xla_dump_to'), v; "
            "import sys; assert 'jax' not in sys.modules; "
            "os.environ['XLA_FLAGS'] = F.split('=')[0] + '=custom'; u(); assert os.environ['XLA_FLAGS'].endswith('custom')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
