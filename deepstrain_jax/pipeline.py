"""``deepstrain_jax.pipeline``: the analysis entry points, kept importable here (they live in
:mod:`deepstrain_jax.analysis.pipeline`)."""

from deepstrain_jax.analysis.pipeline import (  # noqa: F401
    CENTRES,
    DEFAULT_CROP,
    DISPLACEMENT_GRIDS,
    IMPLAUSIBLE_HR_BPM,
    SLICE_ORDERS,
    AnalysisOptions,
    AnalysisResult,
    NetworkGrid,
    StackSegmentation,
    analyze,
    motion_between,
    read_checked,
    segment_stack,
)
