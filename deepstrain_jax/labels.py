"""The label values used everywhere, their names, and the checks of label maps and voxel sizes.

Labels (ACDC, Bernard et al. 2018): 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity. Other datasets
are remapped to these values when loaded (M&Ms: {1 -> 3, 2 -> 2, 3 -> 1}). This module imports only numpy, so
every layer of the package can use it.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
RV_CAVITY = 1
LV_MYOCARDIUM = 2
LV_CAVITY = 3
N_LABELS = 4                                   # classes of CarSON's output, background included
HEART = (RV_CAVITY, LV_MYOCARDIUM, LV_CAVITY)  # the labelled structures, in label order
NAMES = {BACKGROUND: "background", RV_CAVITY: "RV cavity", LV_MYOCARDIUM: "LV myocardium", LV_CAVITY: "LV cavity"}
SHORT_NAMES = {RV_CAVITY: "rv", LV_MYOCARDIUM: "myo", LV_CAVITY: "lv"}  # keys of tables and JSON rows


def check_labels(labels, ndims: tuple[int, ...], name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a uint8 array after checking its rank and that it holds only values 0..3.

    Float arrays are accepted when every value is an integer (labels read from NIfTI often are floats). A uint8
    input is returned as it is (no copy): the checks use a min/max pass, not a sort, so a cine-sized label
    series costs no more than its own size.
    """
    a = np.asarray(labels)
    if a.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer label values 0..3, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise ValueError(f"{name} contains non-integer values; expected ACDC labels 0..3")
    if a.min() < BACKGROUND or a.max() > LV_CAVITY:
        bad = np.unique(a[(a < BACKGROUND) | (a > LV_CAVITY)]).astype(np.int64)
        raise ValueError(
            f"{name} contains values {bad.tolist()} outside the ACDC labels 0 background, 1 RV cavity, "
            "2 LV myocardium, 3 LV cavity; remap them first"
        )
    return a.astype(np.uint8, copy=False)


def check_spacing(spacing_mm, n: int = 3) -> np.ndarray:
    """Return ``spacing_mm`` as a float64 ``(n,)`` array after checking it is finite and positive."""
    s = np.asarray(spacing_mm, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"spacing_mm must have {n} entries, one entry per array axis (mm), got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing_mm must be positive and finite, got {s.tolist()}")
    return s
