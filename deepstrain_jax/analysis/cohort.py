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
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deepstrain_jax import console
from deepstrain_jax.analysis import inputs
from deepstrain_jax.analysis.networks import Networks, check_networks
from deepstrain_jax.analysis.outputs import csv_text
from deepstrain_jax.analysis.pipeline import AnalysisOptions, analyze
from deepstrain_jax.analysis.results import EXPERIMENTAL, check_results
from deepstrain_jax.errors import InputError, check_type
from deepstrain_jax.io.atomic import claim, remove_stale, write_bytes, write_text
from deepstrain_jax.report import plots

# Global strain columns: gcs / grs / gls; the directions of deepstrain_jax.analysis.results.EXPERIMENTAL (not
# validated) say so in their names.
_GLOBAL = (("gcs", "circumferential"), ("grs", "radial"), ("gls", "longitudinal"))
_SUFFIX = {short: "_experimental" if d in EXPERIMENTAL else "" for short, d in _GLOBAL}
COLUMNS = ("subject", "status", "error", "group", "n_frames", "ed", "es", "lv_edv_ml", "lv_esv_ml", "lv_ef_pct",
           "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct",
           *(f"{short}_ess_pct{_SUFFIX[short]}" for short, _ in _GLOBAL),
           *(f"{short}_{key}{_SUFFIX[short]}" for short, _ in _GLOBAL for key in ("srs_per_s", "sre_per_s")),
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
            for short, d in _GLOBAL:
                for key in ("ess_pct", "srs_per_s", "sre_per_s"):
                    row[f"{short}_{key}{_SUFFIX[short]}"] = ind[d][key]
        return [row.get(c) for c in COLUMNS]


def finished_results(folder: Path) -> dict | None:
    """The ``results.json`` of a finished subject folder, or ``None`` (absent, unreadable or invalid)."""
    try:
        d = json.loads((folder / "results.json").read_text())
        check_results(d)
        return d
    except (OSError, ValueError, KeyError, TypeError):
        return None


COHORT_FIGURE = "cohort_polar_map"  # .png, .svg, .pdf in the cohort's output folder


def group_strain(rows: list[CohortRow]) -> dict:
    """``{group: {direction: [17 ESS values in %] per subject}}`` of the analysed subjects with AHA segments;
    the group from ``Info.cfg`` / metadata, ``"all"`` when no subject has one (``"unknown"`` for the rest when
    some do). Directions: circumferential, radial, longitudinal."""
    with_aha = [r.results for r in rows if r.results is not None and r.results.get("aha")]
    known = any(res["input"].get("group") for res in with_aha)
    groups: dict = {}
    for res in with_aha:
        g = res["input"].get("group") or ("unknown" if known else "all")
        by = groups.setdefault(g, {d: [] for d in ("circumferential", "radial", "longitudinal")})
        for d in by:
            by[d].append(res["aha"]["ess_pct"][d])
    return dict(sorted(groups.items()))


def write_cohort_figure(out: Path, rows: list[CohortRow]) -> list[Path]:
    """The cohort bull's-eyes (:func:`deepstrain_jax.report.plots.cohort_polar_maps`: mean and SD of the
    end-systolic strain per AHA segment, one row per group) as ``cohort_polar_map.{png,svg,pdf}``; nothing
    when no subject has AHA segments. Returns the paths written."""
    groups = group_strain(rows)
    if not groups:
        return []
    n = sum(len(g["circumferential"]) for g in groups.values())
    maps = plots.cohort_polar_maps(groups, experimental=EXPERIMENTAL,
                                   title=f"End-systolic strain by AHA segment: mean and SD over {n} subjects")
    paths = []
    for fmt, data in maps.items():
        path = out / f"{COHORT_FIGURE}.{fmt}"
        write_bytes(path, data)
        paths.append(path)
    return paths


def summary_table(rows: list[CohortRow]) -> str:
    """A plain-text table per group: subjects analysed, LV EF and global circumferential ESS (mean ± SD)."""
    groups: dict = {}
    for r in rows:
        if r.results is not None:
            groups.setdefault(r.results["input"].get("group") or "-", []).append(r.results)
    lines = [f"{'group':<10}{'n':>4}  {'LV EF (%)':>14}  {'GCS ESS (%)':>14}"]
    for g, res in sorted(groups.items()):
        def ms(values):
            v = np.array([x for x in values if x is not None], float)
            if not len(v):
                return "n/a"
            return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

        ef = ms(x["volumes"]["lv_ef_pct"] for x in res)
        gcs = ms(x["strain"]["indices"]["circumferential"]["ess_pct"] for x in res)
        lines.append(f"{g:<10}{len(res):>4}  {ef:>14}  {gcs:>14}")
    return "\n".join(lines)


def write_cohort_csv(path: Path, rows: list[CohortRow]) -> None:
    write_text(path, csv_text(list(COLUMNS), [r.cells() for r in rows]))


class Progress:
    """A progress bar (on a terminal, :func:`deepstrain_jax.console.progress`) and one ``[k/n] subject: status
    (s)`` line per subject (``absl.logging`` info; a failure is a warning), with elapsed time and an ETA from the
    subjects analysed so far (skipped ones cost nothing), and a closing :meth:`summary`. ``stream``: write the
    lines there instead of logging them (and draw no bar)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.worked, self.start = total, 0, 0, time.perf_counter()
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.stream = stream
        self.bar = console.progress(total=total, desc="subjects", unit="subject") if stream is None else None

    def __call__(self, row: CohortRow) -> None:
        self.done += 1
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        self.worked += row.status != "skipped"
        elapsed = time.perf_counter() - self.start
        left = self.total - self.done
        eta = f"ETA {elapsed / self.worked * left:.0f} s" if self.worked else "ETA -"
        what = row.status if row.status != "failed" else f"FAILED: {row.error}"
        took = "" if row.seconds is None else f" in {row.seconds:.1f} s"
        line = f"[{self.done}/{self.total}] {row.subject}: {what}{took} (elapsed {elapsed:.0f} s, {eta})"
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
            return
        self.bar.update(1)
        self.bar.set_postfix_str(f"{row.subject}: {row.status}", refresh=False)
        (console.warning if row.status == "failed" else console.info)("%s", line)

    def summary(self) -> str:
        """One line: counts by status, wall time, and analysed subjects per minute (closes the bar)."""
        if self.bar is not None:
            self.bar.close()
        elapsed = time.perf_counter() - self.start
        rate = 60.0 * self.worked / elapsed if elapsed > 0 else 0.0
        return (f"{self.counts['done']} analysed, {self.counts['skipped']} already done, {self.counts['failed']} "
                f"failed, in {elapsed:.0f} s ({rate:.2f} subjects/min)")


def analyze_subject(subject, target: Path, get_networks: Callable, options) -> CohortRow:
    """Read and analyse one subject into ``target`` (all or nothing); its own failures become a failed row."""
    t0 = time.perf_counter()
    try:
        result = analyze(inputs.read_subject(subject), target, networks=get_networks(), options=options,
                         overwrite=True)
        return CohortRow(subject.name, "done", results=result.results, seconds=time.perf_counter() - t0)
    except InputError as e:
        return CohortRow(subject.name, "failed", error=str(e), seconds=time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - one subject's crash must not stop a cohort
        return CohortRow(subject.name, "failed", error=f"{type(e).__name__}: {' '.join(str(e).split())}",
                         seconds=time.perf_counter() - t0)


def run_cohort(folder: str | os.PathLike, out: str | os.PathLike, *, networks=None, options=None,
               overwrite: bool = False, progress: Callable[[CohortRow], None] | None = None) -> list[CohortRow]:
    """Analyse every subject of ``folder`` into ``out/<subject>/``, one after the other in this process (module
    docstring; :func:`deepstrain_jax.analysis.distributed.analyze_cohort` is the same on Dask workers).

    Args:
      folder: the cohort folder; out: the output root (created).
      networks: :class:`deepstrain_jax.analysis.networks.Networks` (default: the shipped models, loaded once).
      options: :class:`deepstrain_jax.analysis.pipeline.AnalysisOptions` shared by every subject.
      overwrite: re-analyse subjects that are already done.
      progress: called with each subject's :class:`CohortRow` (default: a line on stderr).
    Returns:
      the rows written to ``out/cohort.csv``.
    Raises:
      InputError: the cohort folder has no subject, ``out`` cannot be written or is being written by another
        process.
    """
    check_type("run_cohort", "folder", folder, (str, os.PathLike), "a cohort folder path")
    check_type("run_cohort", "out", out, (str, os.PathLike), "an output folder path")
    check_networks("run_cohort", networks)
    check_type("run_cohort", "options", options, (AnalysisOptions, type(None)), "an AnalysisOptions or None")
    if progress is not None and not callable(progress):
        raise TypeError(f"run_cohort(): progress must be a callable taking a CohortRow, got {type(progress).__name__}")
    subjects = inputs.list_subjects(folder)
    options = options or AnalysisOptions()
    loaded = [networks]

    def get_networks():
        if loaded[0] is None:
            loaded[0] = Networks.load(use_vcn=options.use_vcn)
        return loaded[0]

    def serial(subjects, out, names, rows, progress):
        for i, subject in enumerate(subjects):
            if rows[i] is None:
                rows[i] = analyze_subject(subject, out / names[i], get_networks, options)
                write_cohort_csv(out / "cohort.csv", [r for r in rows if r is not None])
                progress(rows[i])

    return run_subjects(subjects, Path(out), serial, overwrite=overwrite, progress=progress)


def run_subjects(subjects: list, out: Path, runner: Callable, *, overwrite: bool = False,
                 progress: Callable[[CohortRow], None] | None = None) -> list[CohortRow]:
    """The client side of a cohort run, whatever runs the subjects: claim ``out``, remove temporary folders of
    killed runs, refuse clashing names, skip finished subjects, then ``runner(subjects, out, names, rows,
    progress)`` fills the missing rows (writing ``cohort.csv`` as they come). Returns the rows in subject order."""
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"subjects with the same name {dup} would share an output folder", out)
    progress = progress or Progress(len(subjects))
    with claim(out):  # one cohort run per output folder; subject folders are claimed one by one inside
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_cohort_csv(out / "cohort.csv", [])
        except OSError as e:
            raise InputError(f"cannot write the output folder ({e.strerror or e})", out) from None
        remove_stale(out)  # subject folders half-written by a killed run
        rows: list = [None] * len(subjects)
        for i, name in enumerate(names):
            done = None if overwrite else finished_results(out / name)
            if done is not None:
                rows[i] = CohortRow(name, "skipped", results=done)
                progress(rows[i])
        write_cohort_csv(out / "cohort.csv", [r for r in rows if r is not None])
        runner(subjects, out, names, rows, progress)
        write_cohort_figure(out, [r for r in rows if r is not None])
    return rows
