"""Measured against true: an analysed phantom's ``results.json`` next to the exact values of its truth sidecar.

Truth (:mod:`deepstrain_jax.phantom.truth`): the exact LV cavity volume curve gives EF; the exact global strain
curves give ESS at the phantom's ES frame, and SRs / SRe through the same
:func:`deepstrain_jax.ops.strain_rate.strain_indices` the analysis uses; per AHA segment, the exact strain maps
at ES averaged over the truth's segment labels. Used by ``deepstrain demo`` and the end-to-end tests.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from deepstrain_jax.cardiac.polar_map import segment_means
from deepstrain_jax.ops.strain_rate import strain_indices
from deepstrain_jax.phantom.dataset import load_truth

COMPONENTS = (("circumferential", "cc"), ("radial", "rr"), ("longitudinal", "ll"))


class Comparison(NamedTuple):
    quantity: str
    unit: str
    true: float
    measured: float | None

    @property
    def error(self) -> float | None:
        return None if self.measured is None else self.measured - self.true


def compare(results: dict, phantom_folder) -> tuple[list[Comparison], dict]:
    """Rows ``(quantity, unit, true, measured)`` for EF, global ESS, SRs and SRe, and the per-segment ESS.

    Returns:
      ``(rows, segments)`` with ``segments[direction] = {"true": (17,), "measured": (17,), "mean_abs_error_pp":
      float}`` (NaN for segments missing on either side; mean over segments present on both).
    """
    arrays, meta = load_truth(phantom_folder)
    curves = meta["curves"]
    ed, es, dt = int(meta["ed"]), int(meta["es"]), float(meta["frame_interval_s"])
    lv = np.asarray(curves["volumes_ml"]["lv_cavity_ml"], np.float64)
    rows = [Comparison("LV EF", "%", 100.0 * (lv[ed] - lv[es]) / lv[ed], results["volumes"]["lv_ef_pct"])]
    ind = results["strain"]["indices"]
    for name, c in COMPONENTS:
        curve = np.roll(np.asarray(curves["global_strain"][c], np.float64), -ed)
        truth = strain_indices(curve, dt, es_frame=(es - ed) % curve.size)
        rows.append(Comparison(f"global {name} ESS", "%", 100.0 * truth.ess, ind[name]["ess_pct"]))
        rows.append(Comparison(f"global {name} SRs", "1/s", truth.srs, ind[name]["srs_per_s"]))
        rows.append(Comparison(f"global {name} SRe", "1/s", truth.sre, ind[name]["sre_per_s"]))
    segments = {}
    aha = results["aha"]
    for name, c in COMPONENTS:
        true = 100.0 * segment_means(arrays[f"strain_{c}"][es], arrays["aha"], 17)
        measured = np.full(17, np.nan) if aha is None else np.array(
            [np.nan if v is None else v for v in aha["ess_pct"][name]], np.float64)
        both = np.isfinite(true) & np.isfinite(measured)
        mae = float(np.mean(np.abs(measured[both] - true[both]))) if both.any() else float("nan")
        segments[name] = {"true": true, "measured": measured, "mean_abs_error_pp": mae}
    return rows, segments


def format_table(rows: list[Comparison], segments: dict) -> str:
    """A plain-text table of :func:`compare`'s output."""
    lines = [f"{'quantity':<30} {'true':>9} {'measured':>9} {'error':>9}  unit"]
    for r in rows:
        m = "n/a" if r.measured is None else f"{r.measured:9.2f}"
        e = "n/a" if r.error is None else f"{r.error:+9.2f}"
        lines.append(f"{r.quantity:<30} {r.true:9.2f} {m:>9} {e:>9}  {r.unit}")
    for name, s in segments.items():
        n = int(np.sum(np.isfinite(s["true"]) & np.isfinite(s["measured"])))
        lines.append(f"{'AHA ' + name + ' ESS':<30} mean |error| over {n} segments: "
                     f"{s['mean_abs_error_pp']:.2f} percentage points")
    return "\n".join(lines)
