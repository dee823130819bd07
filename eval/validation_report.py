"""The validation report behind ``python -m eval.main`` (:func:`build`): every section, written under a work
folder (phantoms, cached rows, ``validation.md``, ``study.csv``, ``figures/``) and optionally copied for
committing. Sections: see :mod:`eval.main`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _progress(what: str):
    """``report(done, total, name)``: a progress bar on a terminal and one line per item."""
    from deepstrain_jax import console

    start = time.perf_counter()
    bar = {}

    def report(done: int, total: int, name: str, *_) -> None:
        if "bar" not in bar:
            bar["bar"] = console.progress(total=total, desc=what, unit="item")
        bar["bar"].update(1)
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done)
        console.info("[%s %d/%d] %s (elapsed %.0f s, ETA %.0f s)", what, done, total, name, elapsed, eta)
        if done == total:
            bar["bar"].close()

    return report


def _to_json(row: dict) -> dict:
    def conv(v):
        if isinstance(v, np.ndarray):
            return [None if not np.isfinite(x) else float(x) for x in v.ravel()]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        return v

    return {k: conv(v) for k, v in row.items()}


def _from_json(row: dict) -> dict:
    def arr(v):
        return np.array([np.nan if x is None else x for x in v], np.float64)

    out = {k: (np.nan if v is None else v) for k, v in row.items()}
    out["epe_per_frame_mm"] = arr(row["epe_per_frame_mm"])
    out["epe_es_segment_mm"] = arr(row["epe_es_segment_mm"])
    out["segment_error_pp"] = {d: arr(v) for d, v in row["segment_error_pp"].items()}
    return out


def run_study(config, workdir: Path, networks, family_c: bool = False) -> list[dict]:
    """The study's rows (``family_c``: those of the never-trained family C, ``config.study.family_c``)."""
    from deepstrain_jax.io.atomic import write_text
    from eval import phantom_study as ps

    s = config.study
    if family_c:
        c = s.family_c
        design = ps.family_c_population(n=c.n, phenotypes=tuple(s.phenotypes), snrs=tuple(c.snrs),
                                        slice_orders=tuple(s.slice_orders))
    else:
        design = ps.population(n=s.n, phenotypes=tuple(s.phenotypes), snrs=tuple(s.snrs), models=tuple(s.models),
                               slice_orders=tuple(s.slice_orders))
    folders = ps.make_population(workdir / "phantoms", design, n_frames=s.n_frames or None,
                                 progress=_progress("phantom"), **dict(s.acquisition))
    rows, report = [], _progress("study")
    for i, (folder, d) in enumerate(zip(folders, design)):
        cache = workdir / "rows" / f"{d['name']}.json"
        if cache.is_file():
            rows.append(_from_json(json.loads(cache.read_text())))
        else:
            row = ps.evaluate_subject(folder, networks, d)
            write_text(cache, json.dumps(_to_json(row)))
            rows.append(row)
        report(i + 1, len(folders), d["name"])
    return rows


def run_baselines(config, networks, design_rows: list[dict]) -> str:
    from deepstrain_jax.analysis.pipeline import motion_between
    from deepstrain_jax.phantom import dataset
    from eval.baselines import run

    def carmen(image_ed, image_t, spacing_mm):
        return motion_between(image_ed, image_t, spacing_mm, networks=networks)

    carmen.__name__ = "CarMEN (shipped)"
    results, report = [], _progress("baselines")
    chosen = design_rows[: config.baselines.n_cases]
    for i, d in enumerate(chosen):
        case = dataset.make_case(d["seed"], d["phenotype"], model=d["model"], n_frames=config.study.n_frames or None,
                                 snr=d["snr"], **dict(config.study.acquisition))
        frames = [case.cine.es] if config.baselines.frames == "es" else None
        if i == 0:  # compile CarMEN's shapes outside the timed calls, as the classical methods need no compiling
            carmen(case.cine.image[..., case.cine.ed], case.cine.image[..., case.cine.es],
                   case.cine.geometry.spacing_mm)
        for method in (carmen, *config.baselines.methods):
            results.append(run.run_baseline_on_case(case, method, frames=frames))
        report(i + 1, len(chosen), d["name"])
    return run.markdown_table(results)


def build(config, workdir, out: str | None = None) -> str:
    """Run every section of ``config`` (module docstring) and write the report under ``workdir`` (and ``out``
    with its figures beside it); returns the markdown text."""
    from deepstrain_jax import console
    from deepstrain_jax.analysis.networks import Networks
    from deepstrain_jax.io import atomic
    from eval import study_report

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    m = config.models
    networks = Networks.load(vcn=m.vcn or None, carson=m.carson or None, carmen=m.carmen or None)
    t0 = time.perf_counter()
    rows = run_study(config, workdir, networks)
    figures = study_report.figures(rows)
    s = config.study
    sections = [
        "# Validation of the shipped models",
        "",
        f"Regenerate: `python -m eval.main --config=configs/eval.py:{config.variant} --workdir=runs/eval"
        f"{' --out=' + out if out else ''}"
        f"{' --config.ablation_csv=' + config.ablation_csv if config.ablation_csv else ''}"
        f"{' --config.real.previous=OLD_MODELS' if config.real.enabled and config.real.previous else ''}"
        f"{' --config.real.previous_carmen=OLD_CARMEN' if config.real.get('previous_carmen') else ''}`. Models: "
        + ", ".join(f"{k} {v['source']} ({v['family']}, gf {v['gf']})" for k, v in networks.describe().items() if v)
        + ".",
        "",
        f"## 1. Phantom study\n\n{len(rows)} held-out phantoms (seeds from 900000, never used in training): "
        f"phenotypes {', '.join(s.phenotypes)} x SNR {', '.join(f'{v:g}' for v in s.snrs)} x geometry "
        f"{', '.join(s.models)} (A: cylinder; B: ellipsoid with an apex; the shipped networks saw other phantoms of both) x stored "
        f"slice order {', '.join(s.slice_orders)}; {s.n_frames} frames. Each is analysed from its ACDC folder by "
        "`deepstrain_jax.analysis.pipeline.analyze` exactly as `deepstrain analyze` does and compared with its exact truth.",
        "",
        study_report.tables(rows),
    ]
    sections += ["![Bland-Altman](FIGURES/phantom_bland_altman.png)", "",
                 "![Per-segment ESS error](FIGURES/phantom_segment_error.png)", "",
                 "![EPE over the cycle](FIGURES/phantom_epe_cycle.png)", "",
                 "![EPE per AHA segment](FIGURES/phantom_epe_segments.png)", ""]
    if s.family_c.n > 0:
        from eval.phantom_study import FAMILY_C

        rows_c = run_study(config, workdir, networks, family_c=True)
        sections += ["### The family no network was trained on", "",
                     f"{len(rows_c)} phantoms of family {FAMILY_C}; phenotypes {', '.join(s.phenotypes)} x SNR "
                     f"{', '.join(f'{v:g}' for v in s.family_c.snrs)} x stored slice order; seeds from 960000. "
                     "Analysed and measured exactly as the study above.", "",
                     study_report.tables(rows_c, factors=("phenotype", "slice_order"), suffix=", family C"), ""]
    if config.repeatability.n > 0:
        from eval import repeatability

        r = config.repeatability
        pairs = repeatability.make_pairs(workdir / "pairs", r.n, r.seed, n_frames=r.n_frames or None,
                                         **dict(r.acquisition))
        values = repeatability.run_repeatability(pairs, networks, progress=_progress("repeatability"),
                                                 cache_dir=workdir / "repeatability_cache")
        text, _, png = repeatability.summarise_repeatability(values)
        figures["repeatability_segments.png"] = png
        sections += [f"## 2. Repeatability (scan-rescan phantom pairs, n = {r.n})", "", text, "",
                     "![Per-segment repeatability](FIGURES/repeatability_segments.png)", ""]
    if config.baselines.methods:
        sections += ["## 3. Classical baselines and CarMEN on the same phantoms", "",
                     f"First {config.baselines.n_cases} phantoms of the study, frame pair (ED, "
                     f"{'ES' if config.baselines.frames == 'es' else 'every frame'}), base -> apex stacks; strain "
                     "from each method's displacement with the true ED labels.", "",
                     run_baselines(config, networks, rows), ""]
    if config.ablation_csv:
        from eval import ablation_report

        text, png = ablation_report.ablation_report(config.ablation_csv)
        figures["ablation.png"] = png
        readme = Path(config.ablation_csv).parent / "README.md"
        provenance = (f"From `{config.ablation_csv}`, written by `python -m train.ablation`"
                      + (f"; how it was run and what it shows: `{readme}`." if readme.is_file() else "."))
        sections += ["## 4. Lambda ablation (CarMEN)", "", provenance, "", text, "",
                     "![Ablation](FIGURES/ablation.png)", ""]
    if config.real.enabled:
        from deepstrain_jax.data import acdc_real
        from eval import real_data

        root = acdc_real.resolve_root(config.real.root)
        sets = {"current": networks}
        if config.real.previous:
            p = Path(config.real.previous)
            sets["previous"] = Networks.load(vcn=p / "vcn", carson=p / "carson")
        text_real, results_real = real_data.report(sets, root, acdc_real.HELD_OUT, workdir / "figures",
                                                   progress=console.info)
        for name in ("best", "median", "worst"):
            figures[f"real_overlay_{name}.png"] = (workdir / "figures" / f"real_overlay_{name}.png").read_bytes()
        atomic.write_text(workdir / "real.json", json.dumps(results_real, indent=1, sort_keys=True) + "\n")
        sections += ["## 5. Real cine-MRI: the held-out ACDC patients", "",
                     f"Patients {', '.join(acdc_real.HELD_OUT)} (never trained on, never used to pick a checkpoint), "
                     "ED and ES segmented as `deepstrain analyze` does and compared with the manual labels "
                     "(`eval.real_data`)." + (f" **previous**: {config.real.previous_note}."
                                             if config.real.previous_note else ""), "",
                     text_real.replace("figures/", "FIGURES/"), ""]
    if config.real.enabled and config.real.get("motion", False):
        from deepstrain_jax.data import acdc_real
        from eval import real_cines_figure, real_motion

        root = acdc_real.resolve_root(config.real.root)
        sets = {"current": networks}
        if config.real.get("previous_carmen", ""):
            sets["previous"] = Networks.load(vcn=m.vcn or None, carson=m.carson or None,
                                             carmen=config.real.previous_carmen)
        text_m, data_m = real_motion.report(sets, root, progress=console.info)
        atomic.write_text(workdir / "real_motion.json", json.dumps(data_m, indent=1) + "\n")
        sections += ["## 6. Motion on real cines: the held-out ACDC cines", "",
                     "No true motion is known on real cines, so motion is checked by carrying manual labels from one "
                     "frame to the other with the estimated displacement (`eval.real_motion`): ED -> ES carries the "
                     "manual ED labels onto the ES frame with the motion ES -> ED (the pair given the other way "
                     "round) and compares them with the manual ES labels; ES -> ED the reverse. References in the same "
                     "table: no motion, the classical baselines, the previous shipped CarMEN"
                     + (f" ({config.real.previous_note})" if config.real.get("previous_note") else "") + ". "
                     "Patients 006, 007, 008 have manual ED/ES labels on the cine crops; 087 (no labels) is in the "
                     "QC table only.", "", text_m, ""]
        text_c, png_c, _ = real_cines_figure.report(networks, root, progress=console.info)
        figures["real_cines_strain.png"] = png_c
        sections += ["## 7. Global strain and strain rate of the 40 real ACDC cines by group", "",
                     "The paper's clinical figure on real data (`eval.real_cines_figure`): every full-cycle cine of "
                     "`data/acdc/cine` analysed as `deepstrain analyze` does, time as a fraction of the cycle (ACDC "
                     "stores no frame interval; rates per cycle). A description of the cohort, not a validation: 36 "
                     "of the 40 cines were CarMEN training pairs (without any motion truth).", "", text_c, "",
                     "![Strain by group](FIGURES/real_cines_strain.png)", ""]
    sections.append(f"_Wall time of this report: {(time.perf_counter() - t0) / 60:.1f} min._")
    text = "\n".join(sections) + "\n"

    def write(md_path: Path, fig_dir: Path):
        for name, data in figures.items():
            atomic.write_bytes(fig_dir / name, data)
        atomic.write_text(md_path, text.replace("FIGURES/", f"{fig_dir.name}/"))

    atomic.write_text(workdir / "study.csv", study_report.rows_csv(rows))
    write(workdir / "validation.md", workdir / "figures")
    if out:
        out = Path(out)
        write(out, out.parent / f"{out.stem}_figures")
    return text


