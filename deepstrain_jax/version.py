"""The package version, in a module that imports nothing (read by setup.cfg, the CLI and results.json)."""

__version__ = "0.1.0"
