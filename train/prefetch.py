"""Fill a config's subject cache before training: ``python -m train.prefetch --config=... --cache_dir=DIR``.

Phantom subjects are rendered in ``--workers`` processes (CPU) and written to the disk cache that training
runs with the same data settings (and ``--config.data.cache_dir=DIR``) then read instead of rendering.
"""

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=False)
flags.DEFINE_string("cache_dir", None, "Subject cache folder.")
flags.DEFINE_integer("workers", 1, "Processes rendering subjects.")
flags.mark_flags_as_required(["config", "cache_dir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from train import trainer

    config = FLAGS.config
    config.data.cache_dir = FLAGS.cache_dir
    for pool in trainer.make_pools(config, Path(FLAGS.cache_dir)):
        pool.prefetch(workers=FLAGS.workers)


if __name__ == "__main__":
    app.run(main)
