"""Training plumbing: array-only train state, pure step factories, multi-device compilation, checkpoints.

The trainer loop itself lives in ``train/trainer.py`` at the repository root; everything here is a library of
pure functions (plus the one checkpoint module that touches disk).
"""
