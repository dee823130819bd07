"""Disk helpers shared by the writers (phantom datasets, analysis outputs, checkpoints)."""
