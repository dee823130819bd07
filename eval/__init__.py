"""Validation: phantom study, classical motion baselines, evaluators for ACDC, M&Ms and CMAC."""
