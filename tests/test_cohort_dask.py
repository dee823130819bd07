"""Cohorts on Dask (`deepstrain_jax.analysis.distributed`) with a LocalCluster of 2 processes: byte-identical
subject results to the one-process runner, a corrupt subject recorded while the others finish, a worker killed
mid-run losing nothing, and the SLURM example job script."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from test_analyze import SMALL  # noqa: E402

from deepstrain_jax.analysis import distributed as dist  # noqa: E402
from deepstrain_jax.phantom import dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask") / "cohort"
    for i, phenotype in enumerate(("NOR", "DCM", "HCM")):
        dataset.save_case(root / f"patient{i + 1:03d}", dataset.make_case(30 + i, phenotype, **SMALL))
    (root / "broken_4d.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not a gzip stream")
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    os.environ.setdefault("DEEPSTRAIN_JAX_CACHE", str(tmp_path_factory.mktemp("xla_cache")))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env=dist.worker_env())
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _contents(folder: Path) -> dict:
    """Every output file's bytes (gzip NIfTIs decompressed: the gzip header holds the temporary file's name), but
    ``run.json``, which records the run itself (start time, duration, command)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name == "run.json":
            continue
        data = p.read_bytes()
        out[p.name] = gzip.decompress(data) if p.name.endswith(".gz") else data
    return out


def test_two_workers_give_byte_identical_results_and_record_the_corrupt_subject(cohort_dir, client, tmp_path):
    # The one-process runner is the CLI in its own process (the XLA settings of a user's run).
    r = subprocess.run([sys.executable, "-m", "deepstrain_jax", "analyze", str(cohort_dir), "--out",
                        str(tmp_path / "serial")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "broken_4d" in r.stderr, r.stderr  # the broken subject, recorded
    seen = []
    rows = dist.analyze_cohort(cohort_dir, tmp_path / "dask", client=client, progress=seen.append)
    assert [(r.subject, r.status) for r in rows] == [
        ("broken_4d", "failed"), ("patient001", "done"), ("patient002", "done"), ("patient003", "done")]
    assert "truncated or corrupt" in rows[0].error or "not a readable NIfTI" in rows[0].error
    assert len(seen) == 4
    for name in ("patient001", "patient002", "patient003"):
        assert _contents(tmp_path / "dask" / name) == _contents(tmp_path / "serial" / name), name
    # cohort.csv is the client's, in subject order, with every subject's numbers.
    lines = (tmp_path / "dask" / "cohort.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [["broken_4d", "failed"], ["patient001", "done"],
                                                            ["patient002", "done"], ["patient003", "done"]]
    # Re-running resumes: the finished subjects are skipped, the broken one is tried again.
    rows = dist.analyze_cohort(cohort_dir, tmp_path / "dask", client=client, progress=lambda r: None)
    assert [r.status for r in rows] == ["failed", "skipped", "skipped", "skipped"]


def test_a_worker_killed_mid_run_loses_nothing(cohort_dir, client, tmp_path):
    out = tmp_path / "killed"
    pids = client.run(os.getpid)  # {worker address: pid}
    result = {}

    def go():
        result["rows"] = dist.analyze_cohort([cohort_dir / f"patient00{k}" for k in (1, 2, 3)], out, client=client,
                                             progress=lambda r: None)

    runner = threading.Thread(target=go)
    runner.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any(client.processing().values()):
        time.sleep(0.05)
    busy = [address for address, tasks in client.processing().items() if tasks]
    assert busy, "no task started"
    time.sleep(1.0)  # inside the subject: reading, networks, outputs
    os.kill(pids[busy[0]], signal.SIGKILL)
    runner.join(timeout=600)
    assert not runner.is_alive()
    rows = result["rows"]
    assert [(r.subject, r.status) for r in rows] == [(f"patient00{k}", "done") for k in (1, 2, 3)]
    figure = {f"cohort_polar_map.{fmt}" for fmt in ("pdf", "png", "svg")}
    names = {p.name for p in out.iterdir()}
    assert names - figure == {"cohort.csv", "patient001", "patient002", "patient003"}
    assert names & figure in (set(), figure)  # all three formats, or none when no subject has AHA segments
    for name in ("patient001", "patient002", "patient003"):
        json.loads((out / name / "results.json").read_text())


def test_the_slurm_example_makes_a_job_script():
    pytest.importorskip("dask_jobqueue")
    cluster, jobs = dist.slurm_cluster(REPO / "docs" / "slurm.yaml")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert jobs == 20
    assert "#SBATCH -p cpu" in script and "#SBATCH -A my-lab" in script and "#SBATCH -t 04:00:00" in script
    assert "--xla_cpu_multi_thread_eigen=false" in script and "export OMP_NUM_THREADS=1" in script
    assert "source ~/venvs/deepstrain/bin/activate" in script and "distributed.cli.dask_worker" in script
