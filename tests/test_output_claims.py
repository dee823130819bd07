"""One writer per output, and nothing left behind by a killed one: claims, concurrent writers, stale folders,
and the public API's type errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_analyze import SMALL

from deepstrain_jax.analysis import cohort
from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.results import check_results
from deepstrain_jax.errors import OutputBusyError
from deepstrain_jax.io import atomic
from deepstrain_jax.phantom import dataset
from deepstrain_jax.pipeline import AnalysisOptions, analyze

REPO = Path(__file__).resolve().parents[1]


def _holder(path: Path) -> subprocess.Popen:
    """A separate process that holds the claim on ``path`` until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from deepstrain_jax.io.atomic import claim
        with claim({str(path)!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_excludes_another_process_until_it_ends_or_dies(tmp_path):
    target = tmp_path / "out"
    holder = _holder(target)
    with pytest.raises(OutputBusyError, match=rf"out: being written by another deepstrain process \(pid {holder.pid}"):
        with atomic.claim(target):
            pass
    holder.stdin.close()
    holder.wait()
    with atomic.claim(target):  # released and its lock file removed on exit
        with atomic.claim(target):  # re-entrant in one thread
            pass
    assert list(tmp_path.iterdir()) == []

    holder = _holder(target)
    holder.send_signal(signal.SIGKILL)  # a killed owner never blocks the next run: the kernel drops its lock
    holder.wait()
    assert (tmp_path / ".out.lock").exists()
    with atomic.claim(target):
        pass
    assert not (tmp_path / ".out.lock").exists()


def test_remove_stale_takes_only_dead_owners_on_this_host(tmp_path):
    host = atomic.owner_tag().split("h")[-1]
    dead, live = _dead_pid(), os.getppid()
    names = {f".subject.p{dead}h{host}.ab12cd.partial": True,         # dead owner: removed
             f".subject.p{dead}h{host}.ab12cd.tmp.nii.gz": True,     # a temporary file of a dead owner
             f".subject.p{live}h{host}.ef34gh.partial": False,       # live owner: kept
             f".subject.p{dead}h00000000.ij56kl.partial": False,     # another host's: kept
             f".other.p{dead}h{host}.mn78op.partial": False,         # another name (when one is given): kept
             ".subject.qr90st.partial": False}                       # no owner tag: not ours to judge
    for name in names:
        (tmp_path / name).mkdir() if name.endswith(".partial") else (tmp_path / name).write_bytes(b"x")
    removed = atomic.remove_stale(tmp_path, "subject")
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return dataset.save_case(tmp_path_factory.mktemp("claims") / "patient001", dataset.make_case(11, "NOR", **SMALL))


@pytest.fixture(scope="module")
def networks():
    return Networks.load()


def test_analyze_refuses_an_output_claimed_by_another_process(phantom, networks, tmp_path):
    out = tmp_path / "res"
    holder = _holder(out)
    try:
        with pytest.raises(OutputBusyError, match="being written by another"):
            analyze(phantom, out, networks=networks)
        assert not out.exists()
    finally:
        holder.stdin.close()
        holder.wait()


def test_two_concurrent_cli_writers_one_wins_the_other_exits_2(phantom, tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "deepstrain_jax", "analyze", str(phantom), "--out", str(out), "--no-cache"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
    assert [rc for rc, _ in outcomes] == [0, 2]
    loser = outcomes[1][1].strip().splitlines()
    assert len(loser) == 1 and str(out) in loser[0]
    assert "being written by another" in loser[0] or "exists and is not empty" in loser[0]
    check_results(json.loads((out / "results.json").read_text()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_a_writer_killed_mid_write_leaves_a_partial_that_the_next_run_removes(phantom, networks, tmp_path):
    out = tmp_path / "res"
    code = textwrap.dedent(f"""
        import os, signal
        import deepstrain_jax.analysis.outputs as outputs
        from deepstrain_jax.pipeline import analyze

        def die(*args, **kwargs):  # the report is the last file written: every NIfTI is already in the folder
            os.kill(os.getpid(), signal.SIGKILL)

        outputs.render_report = die  # the name the writer calls
        analyze({str(phantom)!r}, {str(out)!r})
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr
    partials = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partials) == 1 and any(partials[0].glob("*.nii.gz")) and not out.exists()

    analyze(phantom, out, networks=networks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]

    # The same inside a cohort's output folder, for a subject that is already finished.
    stale = out.parent / f".res.p{_dead_pid()}h{atomic.owner_tag().split('h')[-1]}.zz99yy.partial"
    stale.mkdir()
    (stale / "segmentation.nii.gz").write_bytes(b"half")
    cohort_dir = tmp_path / "cohort"
    cohort_dir.mkdir()
    os.symlink(phantom, cohort_dir / "res")
    rows = cohort.run_cohort(cohort_dir, tmp_path, networks=networks)
    assert [(r.subject, r.status) for r in rows] == [("res", "skipped")] and not stale.exists()


@pytest.mark.parametrize("call, message", [
    (lambda p, n: analyze(p, options="fast"), r"analyze\(\): options must be an AnalysisOptions or None, got str"),
    (lambda p, n: analyze(p, networks="shipped"), r"networks must be a Networks object .*got str 'shipped'; load "
                                                  r"models with Networks.load"),
    (lambda p, n: analyze([[1.0, 2.0]], networks=n), r"source must be a path .*numpy array, got list"),
    (lambda p, n: analyze(p, networks=n, spacing_mm=(1, 1, 8)), r"spacing_mm, affine and name go with an array"),
    (lambda p, n: analyze(p, 7, networks=n), r"out must be an output folder path or None, got int 7"),
    (lambda p, n: analyze(p, options=AnalysisOptions(), es=3), r"not both"),
    (lambda p, n: analyze(p, es="10"), r"AnalysisOptions\(\): es must be a 0-based frame index \(int\) or None"),
    (lambda p, n: analyze(p, legacy="yes"), r"legacy must be True or False, got str 'yes'"),
    (lambda p, n: analyze(p, heart_rate_bpm="60"), r"heart_rate_bpm must be a positive number or None"),
    (lambda p, n: cohort.run_cohort(p, "out", networks="shipped"), r"run_cohort\(\): networks must be"),
    (lambda p, n: cohort.run_cohort(p, "out", progress="bar"), r"progress must be a callable"),
    (lambda p, n: Networks.load(carson=3), r"Networks.load\(\): carson must be a model folder"),
    (lambda p, n: Networks.load(pair_batch=2.5), r"pair_batch must be an int >= 1, got float 2.5"),
])
def test_public_api_misuse_is_a_type_error_naming_the_argument(phantom, networks, call, message):
    with pytest.raises(TypeError, match=message):
        call(phantom, networks)
