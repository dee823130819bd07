"""The analysis workflow behind ``deepstrain analyze``: inputs, networks, QC, results, outputs and cohorts.

The data flow itself is :func:`deepstrain_jax.analysis.pipeline.analyze` (also ``deepstrain_jax.analyze``).
"""
