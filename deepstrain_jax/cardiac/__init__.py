"""Cardiac analysis on label volumes: AHA segments and polar-map geometry (``aha``), volumes and clinical
indices (``volumetrics``).

Labels follow ACDC everywhere (``labels``): 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity. These
modules work on NumPy arrays (their outputs have data-dependent shapes) and are pure: arrays in, arrays out.
"""
