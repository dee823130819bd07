"""Train VCN, CarSON or CarMEN: ``python -m train.main --config=configs/carmen.py:cpu --workdir=runs/carmen``.

Any config field can be overridden on the command line, e.g. ``--config.loss.lambda_s=0.01``. Re-running with the
same ``--workdir`` resumes from its latest checkpoint. Multi-host: set ``--multihost`` on every host (it calls
``jax.distributed.initialize()`` before anything else touches JAX).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file, e.g. configs/carmen.py:cpu.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the exported model.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (one process per host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from deepstrain_jax.xla_flags import use_fast_cpu_convolutions

    use_fast_cpu_convolutions()
    # Plain progress lines; Orbax's INFO messages about every file operation show only with --verbosity=1.
    from deepstrain_jax import console

    console.set_verbosity(console.VERBOSE if FLAGS.verbosity >= 1 else console.DEFAULT)
    if FLAGS.multihost:
        import jax

        jax.distributed.initialize()
    from deepstrain_jax.errors import InputError
    from train import trainer

    try:
        trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except InputError as e:  # e.g. every checkpoint of the workdir damaged: one line, exit 2
        print(f"train.main: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
