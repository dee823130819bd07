"""Analyse a folder of subjects: one output folder each, a ``cohort.csv``, resume, and failures that stay local.

``run_cohort(folder, out)`` analyses every subject :func:`deepstrain_jax.analysis.discovery.discover` finds into
``out/<subject>/``. A subject whose folder already holds a valid ``results.json`` is skipped (resume after an
interruption: each subject folder appears complete or not at all). A subject that fails (bad input, no LV
found) is recorded in ``cohort.csv`` with its error and the others go on. ``cohort.csv`` is rewritten
atomically after every subject, so it always reflects the finished work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from deepstrain_jax.errors import InputError, check_type

COLUMNS = ("subject", "status", "error", "group", "n_frames", "ed", "es", "lv_edv_ml", "lv_esv_ml", "lv_ef_pct",
           "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "gcs_ess_pct", "grs_ess_pct", "gls_ess_pct",
           "gcs_srs_per_s", "gcs_sre_per_s", "grs_srs_per_s", "grs_sre_per_s", "gls_srs_per_s", "gls_sre_per_s",
           "folded_fraction", "n_warnings", "seconds")


@dataclasses.dataclass
class CohortRow:
    subject: str
    status: str  # "done", "skipped" (finished earlier) or "failed"
    error: str = ""
    results: dict | None = None
    seconds: float | None = None

    def cells(self) -> list:
        r = self.results
        row = {"subject": self.subject, "status": self.status, "error": self.error,
               "seconds": None if self.seconds is None else round(self.seconds, 1)}
        if r is not None:
            ind = r["strain"]["indices"]
            v = r["volumes"]
            row.update(group=r["input"]["group"], n_frames=r["frames"]["n"], ed=r["frames"]["ed"],
                       es=r["frames"]["es"], folded_fraction=r["qc"]["folded_fraction"],
                       n_warnings=len(r["qc"]["warnings"]),
                       **{k: v[k] for k in ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml",
                                            "rv_esv_ml", "rv_ef_pct")})
            for short, d in (("gcs", "circumferential"), ("grs", "radial"), ("gls", "longitudinal")):
                row[f"{short}_ess_pct"] = ind[d]["ess_pct"]
                row[f"{short}_srs_per_s"] = ind[d]["srs_per_s"]
                row[f"{short}_sre_per_s"] = ind[d]["sre_per_s"]
        return [row.get(c) for c in COLUMNS]


def finished_results(folder: Path) -> dict | None:
    """The ``results.json`` of a finished subject folder, or ``None`` (absent, unreadable or invalid)."""
    from deepstrain_jax.analysis.results import check_results

    try:
        d = json.loads((folder / "results.json").read_text())
        check_results(d)
        return d
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cohort_csv(path: Path, rows: list[CohortRow]) -> None:
    from deepstrain_jax.analysis.outputs import csv_text
    from deepstrain_jax.io.atomic import write_text

    write_text(path, csv_text(list(COLUMNS), [r.cells() for r in rows]))


class Progress:
    """``[k/n] subject: status (s)`` lines on stderr, with elapsed time and ETA."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream

    def __call__(self, row: CohortRow) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        what = row.status if row.status != "failed" else f"FAILED: {row.error}"
        took = "" if row.seconds is None else f" in {row.seconds:.1f} s"
        print(f"[{self.done}/{self.total}] {row.subject}: {what}{took} (elapsed {elapsed:.0f} s, "
              f"ETA {eta:.0f} s)", file=self.stream, flush=True)


def run_cohort(folder: str | os.PathLike, out: str | os.PathLike, *, networks=None, options=None,
               overwrite: bool = False, progress: Callable[[CohortRow], None] | None = None) -> list[CohortRow]:
    """Analyse every subject of ``folder`` into ``out/<subject>/`` (module docstring).

    Args:
      folder: the cohort folder; out: the output root (created).
      networks: :class:`deepstrain_jax.analysis.networks.Networks` (default: the shipped models, loaded once).
      options: :class:`deepstrain_jax.pipeline.AnalysisOptions` shared by every subject.
      overwrite: re-analyse subjects that are already done.
      progress: called with each subject's :class:`CohortRow` (default: a line on stderr).
    Returns:
      the rows written to ``out/cohort.csv``.
    Raises:
      InputError: the cohort folder has no subject, or ``out`` cannot be written.
    """
    from deepstrain_jax.analysis import inputs
    from deepstrain_jax.analysis.networks import check_networks
    from deepstrain_jax.io.atomic import claim
    from deepstrain_jax.pipeline import AnalysisOptions

    check_type("run_cohort", "folder", folder, (str, os.PathLike), "a cohort folder path")
    check_type("run_cohort", "out", out, (str, os.PathLike), "an output folder path")
    check_networks("run_cohort", networks)
    check_type("run_cohort", "options", options, (AnalysisOptions, type(None)), "an AnalysisOptions or None")
    if progress is not None and not callable(progress):
        raise TypeError(f"run_cohort(): progress must be a callable taking a CohortRow, got {type(progress).__name__}")
    subjects = inputs.list_subjects(folder)
    out = Path(out)
    with claim(out):  # one cohort run per output folder; subject folders are claimed one by one inside
        return _run_claimed(folder, subjects, out, networks, options, overwrite, progress)


def _run_claimed(folder, subjects, out: Path, networks, options, overwrite, progress) -> list[CohortRow]:
    from deepstrain_jax.analysis import inputs
    from deepstrain_jax.analysis.networks import Networks
    from deepstrain_jax.io.atomic import remove_stale
    from deepstrain_jax.pipeline import AnalysisOptions, analyze

    try:
        out.mkdir(parents=True, exist_ok=True)
        write_cohort_csv(out / "cohort.csv", [])
    except OSError as e:
        raise InputError(f"cannot write the output folder ({e.strerror or e})", out) from None
    remove_stale(out)  # subject folders half-written by a killed run
    options = options or AnalysisOptions()
    progress = progress or Progress(len(subjects))
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"subjects with the same name {dup} would share an output folder", folder)
    rows = []
    for subject, name in zip(subjects, names):
        target = out / name
        done = None if overwrite else finished_results(target)
        if done is not None:
            row = CohortRow(name, "skipped", results=done)
        else:
            t0 = time.perf_counter()
            try:
                if networks is None:
                    networks = Networks.load(use_vcn=options.use_vcn)
                result = analyze(inputs.read_subject(subject), target, networks=networks, options=options,
                                 overwrite=True)
                row = CohortRow(name, "done", results=result.results, seconds=time.perf_counter() - t0)
            except InputError as e:
                row = CohortRow(name, "failed", error=str(e), seconds=time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - one subject's crash must not stop a cohort
                row = CohortRow(name, "failed", error=f"{type(e).__name__}: {' '.join(str(e).split())}",
                                seconds=time.perf_counter() - t0)
        rows.append(row)
        write_cohort_csv(out / "cohort.csv", rows)
        progress(row)
    return rows
