"""The XLA:CPU option under which the networks' convolutions (:mod:`deepstrain_jax.models.conv`) run fastest.

JAX-free, so the command line can set it before JAX starts (XLA reads ``XLA_FLAGS`` when its backend starts,
at the first computation).

Measured on a 2-core AMD EPYC with jax 0.10.2: XLA's default hands convolutions to YNNPACK, which is slow on
stride-2 and 2 x 2 kernels here; without it they go to Eigen, ~10% faster over the whole network (legacy CarMEN
1.44x). Library users get it by calling :func:`use_fast_cpu_convolutions` before their first JAX computation.
"""

from __future__ import annotations

import os

RECOMMENDED_CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


def use_fast_cpu_convolutions() -> None:
    """Add :data:`RECOMMENDED_CPU_XLA_FLAGS` to ``XLA_FLAGS`` unless the user set that flag. Must run before
    JAX's first computation; later it has no effect."""
    flags = os.environ.get("XLA_FLAGS", "")
    name = RECOMMENDED_CPU_XLA_FLAGS.split("=")[0]
    if name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {RECOMMENDED_CPU_XLA_FLAGS}".strip()
