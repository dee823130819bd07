"""deepstrain-jax: myocardial strain from cardiac cine-MRI in JAX/Flax.

The library is pure functions on arrays (``ops``, ``losses``, ``metrics``, ``cardiac``); only the CLI,
trainer, checkpoint and report modules touch disk. Conventions (units, axes, labels, strain definitions) are
in the README and in each module's docstring.
"""

from deepstrain_jax.version import __version__

__all__ = ["__version__", "analyze", "AnalysisOptions", "AnalysisResult"]


def __getattr__(name):
    # ``deepstrain_jax.analyze`` without importing JAX at package import time.
    if name in ("analyze", "AnalysisOptions", "AnalysisResult"):
        from deepstrain_jax.analysis import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'deepstrain_jax' has no attribute {name!r}")
