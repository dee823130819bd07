"""One subject's ``results.json`` as a single self-contained HTML page.

The page has inline CSS, PNG figures embedded as ``data:image/png;base64,...``, no JavaScript and no
external URLs, so it can be mailed or archived as one file. Every string taken from ``results`` is
HTML-escaped. No date or other varying field is written: equal inputs give an identical page. Missing, None,
NaN or infinite values show as "n/a"; optional sections that are None (``strain.strain_rate_per_s``,
``aha`` when segmentation failed, ...) or absent do not break the page.
"""

from __future__ import annotations

import base64
import html
import math
import numbers

AHA_SEGMENT_NAMES = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal",
    "basal inferior", "basal inferolateral", "basal anterolateral",
    "mid anterior", "mid anteroseptal", "mid inferoseptal",
    "mid inferior", "mid inferolateral", "mid anterolateral",
    "apical anterior", "apical septal", "apical inferior", "apical lateral",
    "apex",
)  # AHA 17-segment model, Cerqueira et al., Circulation 2002; index i is segment i + 1

NA = "n/a"
DIRECTIONS = ("radial", "circumferential", "longitudinal")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 62em;
       color: #222; line-height: 1.35; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; padding-bottom: 0.15em; margin-top: 1.6em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
.warnings { border: 2px solid #c0392b; background: #fdecea; padding: 0.5em 1em; margin: 1em 0; }
.warnings h2 { border: none; margin: 0.2em 0; color: #c0392b; }
.ok { color: #2e7d32; }
.qc-green { background: #e8f5e9; color: #1b5e20; font-weight: bold; }
.qc-amber { background: #fff4e0; color: #8a5a00; font-weight: bold; }
.qc-red { background: #fdecea; color: #b71c1c; font-weight: bold; }
.warnings.amber { border-color: #e69500; background: #fff8ec; }
.warnings.amber h2 { color: #8a5a00; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e0e0e0; }
figcaption { font-size: 0.9em; color: #555; text-align: center; }
"""


# ------------------------------------------------------------------------------------------ formatting


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fmt(value, decimals: int = 2) -> str:
    """Escaped HTML text of one value: numbers with ``decimals`` digits, None/NaN/inf as "n/a"."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return f"{v:.{decimals}f}" if math.isfinite(v) else NA
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, decimals) for v in value) if value else NA
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v, decimals)}" for k, v in value.items()) or NA
    return html.escape(str(value)) or NA


def _fmt_dims(values) -> str:
    """``[a, b, c]`` as ``a &times; b &times; c`` (shapes, spacings), numbers in ``%g`` form."""
    if not isinstance(values, (list, tuple)) or not values:
        return _fmt(values)
    return " &times; ".join(f"{v:g}" if _is_number(v) and math.isfinite(v) else _fmt(v) for v in values)


def _cell(text: str, numeric: bool = False) -> str:
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """A table; ``header`` is plain text (escaped here), ``rows`` are escaped cell texts."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c, i >= numeric_from) for i, c in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """Two-column table of (plain-text label, escaped value)."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>\n" for k, v in rows)
    return f"<table>\n{body}</table>\n"


def _dict(parent, key: str) -> dict:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def _item(values, index: int):
    if hasattr(values, "__len__") and not isinstance(values, (str, bytes, dict)) and 0 <= index < len(values):
        return values[index]
    return None


# ------------------------------------------------------------------------------------------- sections


def _warnings_box(results: dict) -> str:
    """The box at the top: the warnings, red when a QC check is red, amber otherwise (none: no box unless a
    check failed)."""
    warnings = _dict(results, "qc").get("warnings") or []
    if isinstance(warnings, str):
        warnings = [warnings]
    checks = qc_checks(results)
    failed = [f"QC {s}: {c} = {html.unescape(v)} ({t})" for c, v, t, s in checks if s in ("amber", "red")]
    items = list(warnings) + failed
    if not items:
        return ""
    level = "red" if _worst(checks) == "red" else "amber"
    body = "".join(f"<li>{_fmt(w)}</li>\n" for w in items)
    return (f'<div class="warnings{" amber" if level == "amber" else ""}">\n<h2>Warnings ({len(items)})</h2>\n'
            f"<ul>\n{body}</ul>\n</div>\n")


def _input_section(results: dict) -> str:
    inp = _dict(results, "input")
    interval = _fmt(inp.get("frame_interval_s"), 4)
    if inp.get("frame_interval_source") is not None:
        interval += f" (from {_fmt(inp.get('frame_interval_source'))})"
    rows = [("path", _fmt(inp.get("path"))), ("kind", _fmt(inp.get("kind"))),
            ("shape (X, Y, Z, T)", _fmt_dims(inp.get("shape"))),
            ("spacing (mm)", _fmt_dims(inp.get("spacing_mm"))),
            ("frame interval (s)", interval), ("slice axis", _fmt(inp.get("slice_axis"))),
            ("slice order", _fmt(inp.get("slice_order"))), ("group", _fmt(inp.get("group")))]
    out = "<h2>Input</h2>\n" + _kv_table(rows)
    models = _dict(results, "models")
    if models:
        model_rows = []
        for name, info in models.items():
            info = info if isinstance(info, dict) else {}
            extra = {k: v for k, v in info.items() if k not in ("source", "family")}
            model_rows.append([_fmt(name), _fmt(info.get("source")), _fmt(info.get("family")),
                               _fmt(extra) if extra else ""])
        out += "<h3>Models</h3>\n" + _table(["model", "source", "family", "other"], model_rows, numeric_from=9)
    return out


def _frame_text(frame, source, time_s) -> str:
    text = _fmt(frame)
    if isinstance(frame, numbers.Integral) and not isinstance(frame, bool):
        t = _item(time_s, int(frame))
        if _is_number(t) and math.isfinite(t):
            text += f" (t = {_fmt(t, 3)} s)"
    if source is not None:
        text += f", from {_fmt(source)}"
    return text


def _frames_section(results: dict) -> str:
    frames = _dict(results, "frames")
    time_s = frames.get("time_s")
    rows = [("frames", _fmt(frames.get("n"))),
            ("end-diastole (ED)", _frame_text(frames.get("ed"), frames.get("ed_source"), time_s)),
            ("end-systole (ES)", _frame_text(frames.get("es"), frames.get("es_source"), time_s))]
    return "<h2>Cardiac phases</h2>\n" + _kv_table(rows)


def _volumes_section(results: dict) -> str:
    vol = _dict(results, "volumes")
    rows = []
    for name, prefix in (("LV", "lv"), ("RV", "rv")):
        rows.append([name] + [_fmt(vol.get(f"{prefix}_{k}"), 1)
                              for k in ("edv_ml", "esv_ml", "sv_ml", "ef_pct", "mass_g")])
    return "<h2>Volumes</h2>\n" + _table(["", "EDV (mL)", "ESV (mL)", "SV (mL)", "EF (%)", "mass (g)"], rows)


def _experimental(results: dict) -> set:
    """The strain directions ``results.json`` marks experimental (``strain.experimental.directions``)."""
    return set(_dict(_dict(results, "strain"), "experimental").get("directions") or ())


def _strain_section(results: dict) -> str:
    strain = _dict(results, "strain")
    indices = _dict(strain, "indices")
    names = list(DIRECTIONS) + [k for k in indices if k not in DIRECTIONS]
    columns = (("ess_pct", 1), ("peak_pct", 1), ("time_to_peak_s", 3), ("srs_per_s", 2), ("time_srs_s", 3),
               ("sre_per_s", 2), ("time_sre_s", 3))
    experimental = _dict(strain, "experimental")
    marked = _experimental(results)
    rows = []
    for name in names:
        idx = _dict(indices, name)
        rows.append([_fmt(name) + (" (experimental)" if name in marked else "")]
                    + [_fmt(idx.get(key), d) for key, d in columns])
    header = ["direction", "ESS (%)", "peak (%)", "time to peak (s)", "SRs (1/s)", "time SRs (s)",
              "SRe (1/s)", "time SRe (s)"]
    out = "<h2>Global strain</h2>\n" + _table(header, rows)
    if marked:
        out += f"<p class=\"note\">{html.escape(str(experimental.get('note') or ''))}</p>\n"
    tw = _dict(strain, "twist")
    if tw:
        out += _kv_table([("peak twist (deg, apical minus basal rotation; + counter-clockwise from the apex)",
                           _fmt(tw.get("peak_twist_deg"), 1)),
                          ("torsion (deg/cm)", _fmt(tw.get("torsion_deg_per_cm"), 2))])
    if strain.get("strain_rate_per_s") is None:
        out += "<p>Strain-rate curves: n/a.</p>\n"
    return out


def _aha_section(results: dict) -> str:
    aha = results.get("aha")
    if not isinstance(aha, dict):
        return "<h2>AHA segments</h2>\n<p>AHA segment analysis: n/a.</p>\n"
    n = aha.get("n_segments")
    n = n if isinstance(n, numbers.Integral) and 1 <= n <= 17 else 17
    ess = _dict(aha, "ess_pct")
    rows = []
    for i in range(n):
        rows.append([str(i + 1), AHA_SEGMENT_NAMES[i], _fmt(_item(aha.get("voxels"), i))]
                    + [_fmt(_item(ess.get(d), i), 1) for d in DIRECTIONS])
    marked = _experimental(results)
    header = ["segment", "name", "voxels"] + [f"{d} ESS (%)" + (" (experimental)" if d in marked else "")
                                              for d in DIRECTIONS]
    return "<h2>AHA segments</h2>\n" + _table(header, rows, numeric_from=2)


def _figures_section(images: dict) -> str:
    if not images:
        return ""
    figures = []
    for key, png in images.items():
        if not isinstance(png, (bytes, bytearray, memoryview)) or not bytes(png[:8]) == _PNG_SIGNATURE:
            raise ValueError(f"images[{key!r}] must be PNG bytes")
        caption = html.escape(str(key))
        data = base64.b64encode(bytes(png)).decode("ascii")
        figures.append(f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>\n")
    return "<h2>Figures</h2>\n" + "".join(figures)


# QC thresholds shown in the report: (amber above, red above). Cycle closure and folding measure the motion's
# self-consistency (ED -> ES -> ED should come back; det F <= 0 is a folded, impossible deformation).
QC_THRESHOLDS = {"cycle_closure_mean_mm": (2.0, 4.0), "folded_fraction": (0.0, 0.01)}
QC_EF_RANGE_PCT = (10.0, 85.0)


def qc_checks(results: dict) -> list[tuple[str, str, str, str]]:
    """``(check, value, threshold, status)`` rows of the report's QC table; status ``green``, ``amber`` or
    ``red`` (``n/a`` when the value is missing). Thresholds: :data:`QC_THRESHOLDS`, :data:`QC_EF_RANGE_PCT`."""
    qc = _dict(results, "qc")
    rows = []

    def graded(name, value, key, unit, fmt):
        amber, red = QC_THRESHOLDS[key]
        status = "n/a" if not _is_number(value) else ("red" if value > red else "amber" if value > amber else "green")
        rows.append((name, _fmt(value, fmt) + unit, f"amber > {amber:g}{unit}, red > {red:g}{unit}", status))

    graded("cycle closure ED -> ES -> ED (mean)", _dict(qc, "cycle_closure_mm").get("mean"), "cycle_closure_mean_mm",
           " mm", 2)
    graded("folded myocardium (det F <= 0)", qc.get("folded_fraction"), "folded_fraction", "", 4)
    ef = _dict(results, "volumes").get("lv_ef_pct")
    lo, hi = QC_EF_RANGE_PCT
    rows.append(("LV ejection fraction in range", _fmt(ef, 1) + " %", f"red outside {lo:g}-{hi:g} %",
                 "n/a" if not _is_number(ef) else ("green" if lo <= ef <= hi else "red")))
    cov = _dict(qc, "coverage")
    if cov:
        ok = bool(cov.get("apex_covered")) and (cov.get("n_slices") or 0) >= 5
        rows.append(("stack covers the LV base to apex", f"{_fmt(cov.get('n_slices'))} slices, apex "
                     f"{'covered' if cov.get('apex_covered') else 'not covered'}", ">= 5 slices and the apex",
                     "green" if ok else "amber"))
    aha_ok = results.get("aha") is not None
    rv_ok = _is_number(_dict(results, "volumes").get("rv_edv_ml"))
    rows.append(("segmentation: RV found, AHA segments placed", f"RV {'yes' if rv_ok else 'no'}, AHA "
                 f"{'yes' if aha_ok else 'no'}", "both", "green" if rv_ok and aha_ok else "amber"))
    return rows


def _worst(rows) -> str:
    statuses = {r[3] for r in rows}
    return "red" if "red" in statuses else "amber" if "amber" in statuses else "green"


def _qc_section(results: dict) -> str:
    qc = _dict(results, "qc")
    det_f = _dict(qc, "det_f")
    closure = _dict(qc, "cycle_closure_mm")
    checks = qc_checks(results)
    # Values come escaped from _fmt; check names and thresholds are plain text.
    body = "".join(f"<tr><td>{html.escape(c)}</td><td>{v}</td><td>{html.escape(t)}</td>"
                   f'<td class="qc-{st if st != "n/a" else "amber"}">{st}</td></tr>\n' for c, v, t, st in checks)
    table = f"<table>\n<tr><th>check</th><th>value</th><th>threshold</th><th>status</th></tr>\n{body}</table>\n"
    rows = [("folded fraction", _fmt(qc.get("folded_fraction"), 4)),
            ("det F (min / p01 / median / p99 / max)",
             " / ".join(_fmt(det_f.get(k), 3) for k in ("min", "p01", "median", "p99", "max"))),
            ("cycle closure (mm, mean / p95)", " / ".join(_fmt(closure.get(k), 2) for k in ("mean", "p95"))),
            ("cycle closure in-plane / through-plane (mm, mean)",
             " / ".join(_fmt(closure.get(k), 2) for k in ("in_plane_mean", "through_plane_mean"))),
            ("LV centre from", _fmt(qc.get("centre_source"))),
            ("crop outside the field of view (fraction)", _fmt(qc.get("crop_overhang_fraction")))]
    known = {"folded_fraction", "det_f", "cycle_closure_mm", "centre_source", "crop_overhang_fraction", "warnings"}
    rows += [(str(k), _fmt(v, 3)) for k, v in qc.items() if k not in known]
    warnings = qc.get("warnings")
    worst = _worst(checks)
    if warnings:
        warnings = [warnings] if isinstance(warnings, str) else warnings
        rows.append(("warnings", "<ul>" + "".join(f"<li>{_fmt(w)}</li>" for w in warnings) + "</ul>"))
    elif worst == "green":
        rows.append(("warnings", '<span class="ok">none</span>'))
    else:
        rows.append(("warnings", f'<span class="qc-{worst}">none written, but a QC check is {worst}</span>'))
    return "<h2>Quality control</h2>\n" + table + _kv_table(rows)


def _outputs_section(results: dict) -> str:
    outputs = _dict(results, "outputs")
    if not outputs:
        return ""
    return "<h2>Output files</h2>\n" + _kv_table([(str(k), _fmt(v)) for k, v in outputs.items()])


# ----------------------------------------------------------------------------------------------- page


def render_report(results: dict, images: dict[str, bytes], *, title: str | None = None) -> str:
    """Render one subject's results as a self-contained HTML page.

    Sections: header (subject, software name and version, results schema), a warnings box when
    ``qc.warnings`` is non-empty, input and models, ED/ES frames, volumes, global strain indices, AHA
    segment table (:data:`AHA_SEGMENT_NAMES`), the figures (``images`` in insertion order, captioned with
    their key), quality control and output files.

    Args:
      results: the ``results.json`` dict of one subject (schema ``deepstrain-jax/results`` version 1);
        missing keys and None sections are shown as "n/a".
      images: ``{caption: PNG bytes}``, embedded as base64 data URIs.
      title: page title; default ``"DeepStrain report: {subject}"``.
    Returns:
      the HTML page (str). No date is included, so the output depends only on the arguments.
    Raises:
      TypeError: ``results`` is not a dict.
      ValueError: an image is not PNG bytes.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    subject = results.get("subject")
    if title is None:
        title = "DeepStrain report" if subject is None else f"DeepStrain report: {subject}"
    software = _dict(results, "software")
    meta = [f"subject: {_fmt(subject)}",
            f"software: {_fmt(software.get('name'))} {_fmt(software.get('version'))}",
            f"results schema: {_fmt(results.get('schema'))} v{_fmt(results.get('schema_version'))}"]
    body = [f"<h1>{html.escape(title)}</h1>\n", f'<p class="meta">{" &middot; ".join(meta)}</p>\n',
            _warnings_box(results), _input_section(results), _frames_section(results),
            _volumes_section(results), _strain_section(results), _aha_section(results),
            _figures_section(images), _qc_section(results), _outputs_section(results)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "".join(body) + "</body>\n</html>\n")
