"""Score a motion baseline on a phantom against its exact truth.

Definitions:

* Dense end-point error at frame t: ``EPE(t) = mean_{X in ED myocardium} ||u_pred(X, t) - u_true(X, t)||_2``
  in mm (:func:`deepstrain_jax.metrics.dense_epe`), ``u_true`` the phantom's exact Lagrangian displacement
  sampled at the ED voxel centres, ``u_pred = u_vox * spacing_mm``.
* Global strain error at frame t, in percentage points: ``100 (E_pred(t) - E_true(t))`` with ``E_pred`` the
  global circumferential (or radial) Green-Lagrange strain of ``u_pred`` by
  :func:`deepstrain_jax.ops.strain.cardiac_strain` on the **true** ED labels (mean over the ED myocardium)
  and ``E_true`` the phantom's exact global strain (``case.curves["global_strain"]``). The same strain of the
  sampled true field, ``truth_field_*``, is the floor set by finite differences on the grid.
* ESS: the value at the ES frame; "per pair" timings are wall-clock seconds of one ED -> t estimate.
"""

from __future__ import annotations

import time

import numpy as np

from deepstrain_jax.metrics import dense_epe, epe_components
from deepstrain_jax.ops.strain import cardiac_strain
from eval.baselines import METHODS


def _method_fn(method):
    if callable(method):
        return getattr(method, "__name__", "custom"), method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method, METHODS[method]


def run_baseline_on_case(case, method, *, frames=None, **options) -> dict:
    """Estimate ED -> t motion on a phantom with ``method`` and measure it against the truth.

    Args:
      case: a :class:`deepstrain_jax.phantom.dataset.PhantomCase` (``cine.image`` ``(X, Y, Z, T)``,
        ``arrays["u_mm"]``, ``arrays["myo_mask"]``, ``curves["global_strain"]``).
      method: a name in :data:`eval.baselines.METHODS` or a function with the baseline signature.
      frames: 0-based frames to estimate (default: all); ES is always added. At ED ``u = 0`` without a call.
      **options: passed to the method.
    Returns:
      dict with ``method``, ``seed``, ``phenotype``, ``ed``, ``es``, ``frames`` (sorted list);
      per frame (lists aligned with ``frames``): ``epe_mm``, ``epe_in_plane_mm`` (array axes 0, 1 only),
      ``gcs_pred``, ``grs_pred``, ``gcs_true``, ``grs_true`` (fractions), ``gcs_error_pp``, ``grs_error_pp``,
      ``truth_field_gcs_error_pp``, ``truth_field_grs_error_pp``;
      at ES: ``epe_es_mm``, ``epe_in_plane_es_mm``, ``gcs_error_es_pp``, ``grs_error_es_pp``,
      ``truth_field_gcs_error_es_pp``, ``truth_field_grs_error_es_pp``;
      timing: ``seconds_per_pair`` (mean over the estimated pairs), ``seconds_total`` and ``n_pairs``.
    """
    name, fn = _method_fn(method)
    cine = case.cine
    ed, es = int(cine.ed), int(cine.es)
    n_t = cine.image.shape[3]
    frames = sorted({int(t) for t in (range(n_t) if frames is None else frames)} | {es})
    if frames[0] < 0 or frames[-1] >= n_t:
        raise ValueError(f"frames must lie in [0, {n_t}), got {frames}")
    spacing = np.asarray(cine.geometry.spacing_mm, dtype=np.float64)
    image = np.asarray(cine.image, dtype=np.float64)
    labels_ed = np.asarray(cine.labels[..., ed])
    u_true = np.asarray(case.arrays["u_mm"], dtype=np.float64)[frames]

    u_pred = np.zeros_like(u_true)
    seconds = []
    for i, t in enumerate(frames):
        if t == ed:
            continue
        start = time.perf_counter()
        u_vox = np.asarray(fn(image[..., ed], image[..., t], spacing, **options), dtype=np.float64)
        seconds.append(time.perf_counter() - start)
        if u_vox.shape != (*image.shape[:3], 3):
            raise ValueError(f"{name} returned shape {u_vox.shape}, expected {(*image.shape[:3], 3)}")
        u_pred[i] = u_vox * spacing

    myo = np.asarray(case.arrays["myo_mask"], dtype=bool)
    epe = dense_epe(u_pred, u_true, mask=myo).mean_mm
    in_plane = epe_components(u_pred, u_true, mask=myo).in_plane.mean_mm
    pred = cardiac_strain(u_pred.astype(np.float32), labels_ed, spacing).global_mean
    field = cardiac_strain(u_true.astype(np.float32), labels_ed, spacing).global_mean
    truth = {k: np.asarray(case.curves["global_strain"][k], dtype=np.float64)[frames] for k in ("cc", "rr")}
    at_es = frames.index(es)
    out = {"method": name, "seed": int(case.seed), "phenotype": str(case.params.phenotype), "ed": ed, "es": es,
           "frames": frames, "epe_mm": np.asarray(epe).tolist(), "n_pairs": len(seconds),
           "seconds_total": float(np.sum(seconds)),
           "seconds_per_pair": float(np.mean(seconds)) if seconds else 0.0,
           "epe_in_plane_mm": np.asarray(in_plane).tolist(), "epe_es_mm": float(np.asarray(epe)[at_es]),
           "epe_in_plane_es_mm": float(np.asarray(in_plane)[at_es])}
    for key, comp in (("gcs", "cc"), ("grs", "rr")):
        p = np.asarray(getattr(pred, comp), dtype=np.float64)
        f = np.asarray(getattr(field, comp), dtype=np.float64)
        out[f"{key}_pred"] = p.tolist()
        out[f"{key}_true"] = truth[comp].tolist()
        out[f"{key}_error_pp"] = (100.0 * (p - truth[comp])).tolist()
        out[f"truth_field_{key}_error_pp"] = (100.0 * (f - truth[comp])).tolist()
        out[f"{key}_error_es_pp"] = out[f"{key}_error_pp"][at_es]
        out[f"truth_field_{key}_error_es_pp"] = out[f"truth_field_{key}_error_pp"][at_es]
    return out


def _mean_sd(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def markdown_table(results) -> str:
    """A markdown table of :func:`run_baseline_on_case` results: one row per method, mean ± SD over cases.

    Columns: EPE at ES (mm, ED myocardium), its in-plane part, the signed GCS and GRS errors at ES (pp) and
    seconds per ED -> t pair. A last row, "truth field (grid floor)", gives the strain errors of the sampled
    true displacement: what finite differences on the grid cost before any motion estimate.
    """
    by_method: dict[str, list[dict]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)
    lines = ["| method | EPE at ES (mm) | in-plane EPE at ES (mm) | GCS error at ES (pp) | GRS error at ES (pp) "
             "| s per pair |", "|---|---|---|---|---|---|"]
    for method, rows in by_method.items():
        lines.append(f"| {method} | {_mean_sd([r['epe_es_mm'] for r in rows])} "
                     f"| {_mean_sd([r['epe_in_plane_es_mm'] for r in rows])} "
                     f"| {_mean_sd([r['gcs_error_es_pp'] for r in rows])} "
                     f"| {_mean_sd([r['grs_error_es_pp'] for r in rows])} "
                     f"| {_mean_sd([r['seconds_per_pair'] for r in rows])} |")
    if results:
        rows = next(iter(by_method.values()))
        gcs = _mean_sd([r["truth_field_gcs_error_es_pp"] for r in rows])
        grs = _mean_sd([r["truth_field_grs_error_es_pp"] for r in rows])
        lines.append(f"| truth field (grid floor) | 0 | 0 | {gcs} | {grs} | - |")
    return "\n".join(lines)
