"""Test-session set-up.

Four CPU devices are forced before JAX initialises so that multi-device code (mesh-jit and pmap training
steps) is exercised without accelerators. Nothing else in the suite depends on the device count.
"""

import os

_flag = "--xla_force_host_platform_device_count=4"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
