"""deepstrain-jax: myocardial strain from cardiac cine-MRI in JAX/Flax.

The library is pure functions on arrays (``ops``, ``losses``, ``metrics``, ``cardiac``); only the CLI,
trainer, checkpoint and report modules touch disk. Conventions (units, axes, labels, strain definitions) are
in the README and in each module's docstring.
"""

__version__ = "0.1.0"
