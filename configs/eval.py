"""Validation report config: ``python -m eval.main --config=configs/eval.py:full --workdir=runs/eval``.

``:smoke`` (tests): two tiny phantoms, two tiny scan-rescan pairs, one baseline. ``:full``: the population behind
docs/validation.md: every phenotype x SNR {10, 30} x geometry {A, B} x slice order, scan-rescan pairs, the
classical baselines side by side with CarMEN.
"""

import ml_collections

from deepstrain_jax.phantom.params import PHENOTYPES


def get_config(arg: str = "full"):
    if arg not in ("smoke", "full"):
        raise ValueError(f"config argument must be 'smoke' or 'full', got {arg!r}")
    c = ml_collections.ConfigDict()
    c.variant = arg
    c.models = ml_collections.ConfigDict({"vcn": "", "carson": "", "carmen": ""})  # "" -> shipped
    c.study = ml_collections.ConfigDict({
        "n": 1, "phenotypes": PHENOTYPES, "snrs": (10.0, 30.0), "models": ("A", "B"),
        "slice_orders": ("base_to_apex", "apex_to_base"), "n_frames": 20, "acquisition": {}})
    # The family no network was trained on (eval.phantom_study.FAMILY_C): n per phenotype x SNR x slice order.
    c.study.family_c = ml_collections.ConfigDict({"n": 1, "snrs": (15.0,)})
    c.repeatability = ml_collections.ConfigDict({"n": 5, "seed": 950_000, "n_frames": 20, "acquisition": {}})
    c.baselines = ml_collections.ConfigDict({
        "methods": ("demons", "optical_flow", "simpleitk_bspline"), "n_cases": 5, "frames": "es"})
    c.ablation_csv = ""  # train/ablation.py's ablation.csv, when the study has been run
    # Real cine-MRI: the held-out ACDC patients (eval.real_data); "" root -> ../shared/data/acdc. previous: a
    # folder with vcn/ and carson/ model folders to show side by side (e.g. the models shipped before).
    c.real = ml_collections.ConfigDict({"enabled": arg == "full", "root": "", "previous": "", "previous_note": ""})
    # Motion on real cines (eval.real_motion) and the group figure of the 40 cines (eval.real_cines_figure);
    # previous_carmen: the CarMEN shipped before, side by side.
    c.real.motion = arg == "full"
    c.real.previous_carmen = ""
    if arg == "smoke":
        small = {"matrix": (112, 112), "pixel_mm": 1.6, "n_slices": 8, "slice_thickness_mm": 8.0,
                 "slice_spacing_mm": 10.0, "supersample_inplane": 2, "supersample_slice": 3}
        c.study.update({"phenotypes": ("NOR",), "snrs": (30.0,), "models": ("A",),
                        "slice_orders": ("base_to_apex", "apex_to_base"), "n_frames": 6, "acquisition": small})
        c.repeatability.update({"n": 2, "n_frames": 6, "acquisition": small})
        c.study.family_c.update({"snrs": (30.0,)})
        c.baselines.update({"methods": ("optical_flow",), "n_cases": 1})
    return c
