"""Cohorts on Dask: the same per-subject analysis on a laptop's local cluster, a running scheduler, or SLURM.

``analyze_cohort(paths, out, client=...)`` sends one task per subject to a ``distributed`` cluster and keeps
everything else on the client: it claims ``out`` (:func:`deepstrain_jax.io.atomic.claim`), skips finished
subjects (resume), writes ``cohort.csv`` alone, in subject order, after every completed subject, and shows
progress with an ETA across workers. Without a client nothing of this module is used (one process, as
:func:`deepstrain_jax.analysis.cohort.run_cohort`).

Workers:

* each process loads and compiles the networks once and keeps them (:func:`worker_networks`, a per-process
  cache keyed by the model specs), with JAX's persistent compilation cache on, so a worker pays the start-up once
  and a restarted worker mostly reads compiled programs from disk;
* local workers get one Dask thread each, with OpenMP, BLAS and Eigen single-threaded (:func:`worker_env`;
  XLA's intra-op pool keeps its size, so the numbers are those of the one-process runner to the byte); with
  GPUs present (``nvidia-smi -L``) :func:`make_client` starts one worker per device instead, each seeing only
  its own (``CUDA_VISIBLE_DEVICES``; not exercised here: no GPU in this project's CI);
* a subject's folder is written all-or-nothing by the worker itself (:func:`deepstrain_jax.analysis.outputs`),
  so a worker that dies mid-subject leaves only a temporary ``.NAME.p<pid>h<host>.*.partial`` folder, removed
  when the subject is retried (the dead owner is detected) or on the next run. The scheduler reassigns the task
  of a dead worker; after ``retries`` deaths (``distributed.scheduler.allowed-failures``) the subject is recorded
  as failed with the error, and the others go on. Errors inside a subject (bad input, no LV) are results, not
  retries: the task returns a failed row.

:func:`make_client` builds the client the CLI uses: ``--workers N`` (a ``LocalCluster`` of N processes),
``--scheduler ADDRESS`` (an existing scheduler) or ``--slurm CONFIG.yaml`` (``dask_jobqueue.SLURMCluster``
with the YAML's settings, ``jobs`` of them started). ``distributed`` and ``dask-jobqueue`` are optional
dependencies (``pip install -e .[dask]``, ``.[slurm]``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from deepstrain_jax.analysis import cohort, discovery
from deepstrain_jax.analysis.cohort import CohortRow
from deepstrain_jax.analysis.networks import Networks, enable_compilation_cache
from deepstrain_jax.analysis.pipeline import AnalysisOptions
from deepstrain_jax.errors import InputError
from deepstrain_jax.xla_flags import RECOMMENDED_CPU_XLA_FLAGS, use_fast_cpu_convolutions

# Threads of a local worker. Eigen, OpenMP and BLAS get one thread each. XLA:CPU's own intra-op pool keeps its
# default size (one thread per core): its size changes how the networks' sums are split, and so the float32
# rounding of the results (1e-7 relative, measured), while turning Eigen's threading off changes nothing. So a
# worker gives the one-process runner's numbers to the byte, and N workers share the cores through the OS.
_SERIAL_LIBS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker_env() -> dict:
    """Environment of a local worker process: this process's ``XLA_FLAGS`` plus the fast convolution flag and
    Eigen single-threaded, and one-thread OpenMP/BLAS (see the comment above)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if RECOMMENDED_CPU_XLA_FLAGS.split("=")[0] not in flags:
        flags = f"{flags} {RECOMMENDED_CPU_XLA_FLAGS}"
    return {"XLA_FLAGS": f"{flags} --xla_cpu_multi_thread_eigen=false".strip(), **_SERIAL_LIBS}


@dataclasses.dataclass(frozen=True)
class ModelSpecs:
    """Which networks the workers load (``None``: the shipped model); hashable, so it keys the worker cache."""

    vcn: str | None = None
    carson: str | None = None
    carmen: str | None = None
    use_vcn: bool = True
    pair_batch: int = 2
    precision: str = "float32"


_WORKER_NETWORKS: dict = {}


def worker_networks(specs: ModelSpecs):
    """The networks of ``specs`` in this process: loaded and compiled on first use, then kept."""
    if specs not in _WORKER_NETWORKS:
        use_fast_cpu_convolutions()
        enable_compilation_cache()
        _WORKER_NETWORKS[specs] = Networks.load(vcn=specs.vcn, carson=specs.carson, carmen=specs.carmen,
                                                use_vcn=specs.use_vcn, pair_batch=specs.pair_batch,
                                                precision=specs.precision)
    return _WORKER_NETWORKS[specs]


def _task(subject, target: str, specs: ModelSpecs, options) -> CohortRow:
    """One subject on a worker (module docstring); never raises for the subject's own problems."""
    return cohort.analyze_subject(subject, Path(target), lambda: worker_networks(specs), options)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("running on Dask needs the 'distributed' package: pip install deepstrain-jax[dask]") from None
    return distributed


def gpu_count() -> int:
    """NVIDIA GPUs on this machine (``nvidia-smi -L``), 0 without the tool."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def make_client(*, workers: int | None = None, scheduler: str | None = None, slurm: str | os.PathLike | None = None,
                allowed_failures: int = 2):
    """A ``distributed.Client`` for one of: ``workers`` local processes, a ``scheduler`` address, or a SLURM
    cluster from the YAML file ``slurm`` (dask-jobqueue ``SLURMCluster`` keyword arguments, plus ``jobs``: how
    many to start, default 1). ``allowed_failures``: worker deaths a subject may cause before it is recorded
    as failed (local and SLURM clusters; an existing scheduler keeps its own setting)."""
    distributed = _import_distributed()
    import dask

    chosen = [k for k, v in (("--workers", workers), ("--scheduler", scheduler), ("--slurm", slurm)) if v]
    if len(chosen) != 1:
        raise InputError(f"choose one of --workers, --scheduler, --slurm (got {', '.join(chosen) or 'none'})")
    dask.config.set({"distributed.scheduler.allowed-failures": int(allowed_failures)})
    if scheduler:
        return distributed.Client(scheduler)
    if slurm:
        cluster, jobs = slurm_cluster(slurm)
        cluster.scale(jobs=jobs)
        return distributed.Client(cluster)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    gpus = gpu_count()
    if gpus:  # one worker per device, each seeing only its own
        from distributed import Nanny, Scheduler, SpecCluster

        spec = {i: {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i),
                                                                     "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}}
                for i in range(gpus)}
        cluster = SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})
        return distributed.Client(cluster)
    cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                       dashboard_address=None, env=worker_env())
    return distributed.Client(cluster)


def slurm_cluster(config: str | os.PathLike):
    """``(dask_jobqueue.SLURMCluster, jobs)`` from a YAML file of SLURMCluster keyword arguments and ``jobs``."""
    import yaml

    path = Path(config)
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"unreadable SLURM settings ({' '.join(str(e).split())})", path) from None
    if not isinstance(settings, dict):
        raise InputError("SLURM settings must be a YAML mapping of dask_jobqueue.SLURMCluster arguments", path)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError("--slurm needs dask-jobqueue: pip install deepstrain-jax[slurm]", path) from None
    settings = dict(settings)
    jobs = int(settings.pop("jobs", 1))
    env = [f"export {k}='{v}'" if " " in v else f"export {k}={v}" for k, v in worker_env().items()]
    settings["job_script_prologue"] = list(settings.get("job_script_prologue", [])) + env
    try:
        return SLURMCluster(**settings), jobs
    except (TypeError, ValueError) as e:
        raise InputError(f"bad SLURM settings ({e})", path) from None


def analyze_cohort(paths, out: str | os.PathLike, *, client, specs: ModelSpecs | None = None, options=None,
                   overwrite: bool = False, progress: Callable[[CohortRow], None] | None = None) -> list[CohortRow]:
    """Analyse subjects on a Dask ``client`` into ``out/<subject>/`` (module docstring).

    Args:
      paths: a cohort folder, or a list of subject paths (each one subject in any layout).
      out: the output root (claimed for the run; ``cohort.csv`` written there by this process only).
      client: a ``distributed.Client`` (e.g. :func:`make_client`).
      specs: :class:`ModelSpecs` of the networks the workers load (default: the shipped models).
      options: :class:`deepstrain_jax.analysis.pipeline.AnalysisOptions`; overwrite: re-analyse finished subjects.
      progress: called with each subject's :class:`~deepstrain_jax.analysis.cohort.CohortRow` as it completes.
    Returns:
      the rows of ``cohort.csv``, in subject order.
    """
    distributed = _import_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"analyze_cohort(): client must be a distributed.Client, got {type(client).__name__}")
    if isinstance(paths, (str, os.PathLike)):
        subjects = list(discovery.discover(paths).subjects)
    else:
        subjects = [s for p in paths for s in discovery.discover(p).subjects]
    options = options or AnalysisOptions()
    specs = specs or ModelSpecs(use_vcn=options.use_vcn)

    def run(subjects, out, names, rows, progress):
        todo = [(i, s) for i, s in enumerate(subjects) if rows[i] is None]
        futures = {client.submit(_task, s, os.fspath(out / names[i]), specs, options, pure=False,
                                 key=f"deepstrain-{names[i]}-{time.time_ns()}"): i for i, s in todo}
        for future in distributed.as_completed(list(futures)):
            i = futures[future]
            try:
                row = future.result()
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker after the allowed worker deaths
                row = CohortRow(names[i], "failed", error=f"{type(e).__name__}: {' '.join(str(e).split())}")
            rows[i] = row
            cohort.write_cohort_csv(out / "cohort.csv", [r for r in rows if r is not None])
            progress(row)

    return cohort.run_subjects(subjects, Path(out), run, overwrite=overwrite, progress=progress)
