import sys

from deepstrain_jax.cli import main

sys.exit(main())
