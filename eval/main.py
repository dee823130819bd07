"""Regenerate the validation report: ``python -m eval.main --config=configs/eval.py:full --workdir=runs/eval
--out=docs/validation.md``.

Sections (each with the numbers of the models in ``config.models``, the shipped ones by default):

1. Phantom study (:mod:`eval.phantom_study`, :mod:`eval.study_report`): the full analysis on a held-out
   population, Tables I-III, breakdown by factor, figures.
2. Repeatability on scan-rescan phantom pairs (:mod:`eval.repeatability`), when ``config.repeatability.n > 0``.
3. Classical baselines (:mod:`eval.baselines`) side by side with CarMEN (:func:`deepstrain_jax.analysis.pipeline.motion_between`)
   on the first ``config.baselines.n_cases`` phantoms of the study: end-point error, strain error, time.
4. The lambda ablation (:mod:`eval.ablation_report`) when ``config.ablation_csv`` names train/ablation.py's table.
5. Real cine-MRI segmentation on the held-out ACDC patients (:mod:`eval.real_data`), when ``config.real.enabled``.
6. Motion on the held-out real cines (:mod:`eval.real_motion`: label propagation, cycle closure, folding) and
7. the global strain curves of the 40 real cines by group (:mod:`eval.real_cines_figure`), when
   ``config.real.motion``.

Everything is written under ``--workdir`` (phantoms, one JSON row per analysed subject, so an interrupted run
resumes where it stopped, ``validation.md``, ``study.csv``, ``figures/``); ``--out`` also copies the report and its
figures (into ``<out stem>_figures/``) for committing. Progress goes to stderr. This module is the flags; the
report is :func:`eval.validation_report.build`.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/eval.py:full", "Validation config.", lock_config=False)
flags.DEFINE_string("workdir", None, "Working folder (phantoms, cached rows, report).")
flags.DEFINE_string("out", None, "Also write the report here (e.g. docs/validation.md), figures beside it.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    from deepstrain_jax import console
    from deepstrain_jax.xla_flags import use_fast_cpu_convolutions
    from eval import validation_report

    use_fast_cpu_convolutions()
    console.set_verbosity(console.VERBOSE if FLAGS.verbosity >= 1 else console.DEFAULT)
    print(validation_report.build(FLAGS.config, FLAGS.workdir, FLAGS.out))


if __name__ == "__main__":
    app.run(main)
