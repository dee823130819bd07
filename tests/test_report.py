"""Report figures (bull's-eye, curves, Bland-Altman) and the self-contained HTML page."""

import base64
import copy
import io
import math
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from deepstrain_jax.report import (
    AHA_SEGMENT_NAMES,
    bland_altman_png,
    bullseye_png,
    curves_png,
    draw_bland_altman,
    draw_bullseye,
    render_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec puts first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def decode(data: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")


def agg_axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_axes((0.0, 0.0, 1.0, 1.0))


def rendered_pixel(fig, ax, xy) -> np.ndarray:
    """RGB in [0, 1] of the rendered pixel under data point ``xy``."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())
    x, y = ax.transData.transform(xy)
    return image[image.shape[0] - 1 - int(y), int(x), :3] / 255.0


# ----------------------------------------------------------------------------------------------- bull's-eye


def test_bullseye_png_decodes_at_its_fixed_size():
    data = bullseye_png(np.linspace(-20.0, 20.0, 17), title="radial ESS")
    width, height = png_size(data)
    assert (width, height) == (520, 460)
    assert decode(data).shape[:2] == (height, width)
    assert png_size(bullseye_png(np.zeros(16), title="16 segments")) == (520, 460)


def test_bullseye_png_is_deterministic():
    values = np.linspace(-20.0, 20.0, 17)
    assert bullseye_png(values, title="t") == bullseye_png(values.copy(), title="t")
    assert bullseye_png(values, title="t") != bullseye_png(values[::-1], title="t")


def test_uniform_bullseye_is_one_colormap_colour():
    import matplotlib

    # 5 on limits [-10, 10] is 3/4 up the colormap
    image = decode(bullseye_png(np.full(17, 5.0), title="", vmin=-10.0, vmax=10.0))[..., :3]
    expected = np.asarray(matplotlib.colormaps["RdBu_r"](0.75)[:3])
    matches = np.all(np.abs(image - expected) < 2.5 / 255, axis=-1).sum()
    # the disc of radius 4 data units spans ~2 * 165 px: most of its ~85k pixels carry the one colour
    assert matches > 50_000
    opposite = np.asarray(matplotlib.colormaps["RdBu_r"](0.25)[:3])
    assert np.all(np.abs(image - opposite) < 2.5 / 255, axis=-1).sum() < 2_000  # only the colorbar band


# AHA convention seen from the apex, anterior up and septum left: (segment, centre angle deg, ring inner radius)
ANATOMY = [(1, 90, 3.0), (4, 270, 3.0), (3, 210, 3.0), (6, 30, 3.0), (8, 150, 2.0), (11, 330, 2.0),
           (13, 90, 1.0), (14, 180, 1.0), (15, 270, 1.0), (16, 0, 1.0)]


def test_bullseye_wedges_take_the_colour_of_their_value_in_anatomical_position():
    import matplotlib

    values = np.linspace(-16.0, 16.0, 17)
    values[9] = np.nan  # segment 10, mid inferior
    fig, ax = agg_axes()
    mappable = draw_bullseye(ax, values, cmap="viridis")
    assert (mappable.norm.vmin, mappable.norm.vmax) == (-16.0, 16.0)
    cmap = matplotlib.colormaps["viridis"]
    for seg, centre_deg, r_inner in ANATOMY:
        width = 60.0 if seg <= 12 else 90.0
        theta = math.radians(centre_deg + 0.3 * width)  # off-centre, clear of the value label
        xy = ((r_inner + 0.5) * math.cos(theta), (r_inner + 0.5) * math.sin(theta))
        expected = np.asarray(cmap((values[seg - 1] + 16.0) / 32.0)[:3])
        np.testing.assert_allclose(rendered_pixel(fig, ax, xy), expected, atol=2.5 / 255, err_msg=f"seg {seg}")
    np.testing.assert_allclose(rendered_pixel(fig, ax, (0.0, -0.6)), cmap(1.0)[:3], atol=2.5 / 255)  # apex
    grey = np.full(3, 0xBF / 255)
    np.testing.assert_allclose(rendered_pixel(fig, ax, (0.4, -2.3)), grey, atol=1.5 / 255)
    texts = [t.get_text() for t in ax.texts]
    assert "n/a" in texts and "-16.0" in texts and "16.0" in texts
    assert {"Anterior", "Septal", "Inferior", "Lateral"} <= set(texts)


def test_bullseye_colour_limits():
    fig, ax = agg_axes()
    norm = draw_bullseye(ax, [-5.0, 20.0] + [None] * 15).norm  # None counts as NaN
    assert (norm.vmin, norm.vmax) == (-20.0, 20.0)
    assert (lambda n: (n.vmin, n.vmax))(draw_bullseye(ax, np.ones(17), vmax=8.0).norm) == (-8.0, 8.0)
    assert (lambda n: (n.vmin, n.vmax))(draw_bullseye(ax, np.ones(17), vmin=0, vmax=3).norm) == (0.0, 3.0)
    assert (lambda n: (n.vmin, n.vmax))(draw_bullseye(ax, np.full(17, np.nan)).norm) == (-1.0, 1.0)


def test_bullseye_rejects_bad_input():
    with pytest.raises(ValueError, match="16 or 17"):
        bullseye_png(np.zeros(15), title="t")
    with pytest.raises(ValueError, match="16 or 17"):
        bullseye_png(np.zeros((17, 2)), title="t")
    with pytest.raises(ValueError, match="vmin < vmax"):
        bullseye_png(np.zeros(17), title="t", vmin=3.0, vmax=1.0)


# --------------------------------------------------------------------------------------------------- curves


def cycle(n=20):
    s = np.sin(np.pi * np.arange(n) / n)
    return {"radial": 30.0 * s, "circumferential": -18.0 * s, "longitudinal": -15.0 * s}


def test_curves_png_panels_and_determinism():
    n = 20
    strain = cycle(n)
    one = curves_png(None, strain, ed=0, es=8)
    three = curves_png(np.arange(n) * 0.03, strain, strain_rate_per_s={"radial": np.gradient(strain["radial"])},
                       volumes_ml={"LV": 150 - 90 * np.sin(np.pi * np.arange(n) / n), "RV": np.full(n, 140.0)},
                       ed=0, es=8, title="patient001")
    w1, h1 = png_size(one)
    w3, h3 = png_size(three)
    assert w1 == w3 == 700
    assert h3 - h1 == pytest.approx(2 * 240, abs=40)  # one more strip per panel (and a title band)
    assert decode(three).shape[:2] == (h3, w3)
    assert one == curves_png(None, cycle(n), ed=0, es=8)
    assert one != curves_png(None, strain, ed=0, es=9)


def test_curves_png_rejects_bad_input():
    strain = cycle(20)
    with pytest.raises(ValueError, match="shape"):
        curves_png(None, {**strain, "longitudinal": np.zeros(19)}, ed=0, es=5)
    with pytest.raises(ValueError, match="time_s"):
        curves_png(np.arange(19) * 0.03, strain, ed=0, es=5)
    with pytest.raises(ValueError, match="volumes_ml"):
        curves_png(None, strain, volumes_ml={"LV": np.zeros(21)}, ed=0, es=5)
    with pytest.raises(ValueError, match="es"):
        curves_png(None, strain, ed=0, es=20)
    with pytest.raises(ValueError, match="non-empty"):
        curves_png(None, {}, ed=0, es=5)


# --------------------------------------------------------------------------------------------- Bland-Altman


def test_bland_altman_lines_and_annotations_by_hand():
    reference = [1.0, 2.0, 3.0, 4.0]
    measured = [2.0, 2.0, 5.0, 5.0]
    # d = [1, 0, 2, 1]: bias 1, sample SD sqrt(2/3) = 0.81650, limits 1 -+ 1.6003
    bias, sd = 1.0, math.sqrt(2.0 / 3.0)
    fig, ax = agg_axes()
    stats = draw_bland_altman(ax, reference, measured, unit="mL")
    assert stats.bias == pytest.approx(bias)
    assert stats.sd == pytest.approx(sd)
    assert (stats.lower_loa, stats.upper_loa) == pytest.approx((bias - 1.96 * sd, bias + 1.96 * sd))
    texts = {t.get_text() for t in ax.texts}
    assert {"bias 1.00 mL", "+1.96 SD 2.60 mL", "-1.96 SD -0.60 mL"} <= texts
    horizontal = {round(float(line.get_ydata()[0]), 6) for line in ax.lines}
    assert {round(bias, 6), round(bias + 1.96 * sd, 6), round(bias - 1.96 * sd, 6)} <= horizontal
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1.5, 1], [2, 0], [4, 2], [4.5, 1]])


def test_bland_altman_png_and_errors():
    data = bland_altman_png([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0], title="LV EDV", unit="mL")
    assert png_size(data) == (600, 450)
    assert data == bland_altman_png([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0], title="LV EDV", unit="mL")
    with pytest.raises(ValueError, match="same shape"):
        bland_altman_png([1.0, 2.0, 3.0], [1.0, 2.0], title="t", unit="mL")


# ----------------------------------------------------------------------------------------------------- HTML


def sample_results():
    t = 4
    return {
        "schema": "deepstrain-jax/results", "schema_version": 1,
        "software": {"name": "deepstrain-jax", "version": "0.1.0"},
        "subject": "<script>alert('x')</script>&co",
        "input": {"path": "/data/p1/4d.nii.gz", "kind": "nifti", "shape": [8, 8, 3, t],
                  "spacing_mm": [1.4, 1.4, 10.0], "frame_interval_s": None, "frame_interval_source": None,
                  "slice_axis": 2, "slice_order": "base_to_apex", "group": None},
        "models": {"vcn": {"source": "shipped", "family": "v2"}, "carson": {"source": "shipped", "family": "v2"},
                   "carmen": {"source": "shipped", "family": "v2"}},
        "frames": {"n": t, "ed": 0, "es": 2, "ed_source": "first", "es_source": "min_lv_volume",
                   "time_s": None},
        "volumes": {"lv_edv_ml": 150.25, "lv_esv_ml": 60.1, "lv_sv_ml": 90.15, "lv_ef_pct": 60.0,
                    "lv_mass_g": None, "rv_edv_ml": float("nan"), "rv_esv_ml": None, "rv_sv_ml": None,
                    "rv_ef_pct": None, "curves_ml": {"lv": [150.25, 100.0, 60.1, 120.0], "rv": None, "myo": None}},
        "strain": {"global_pct": {"radial": [0, 20, 30, 10], "circumferential": [0, -10, -18, -5],
                                  "longitudinal": [0, -8, -15, -4]},
                   "strain_rate_per_s": None,
                   "indices": {"radial": {"ess_pct": 30.14, "peak_pct": 31.0, "time_to_peak_s": None,
                                          "srs_per_s": None, "time_srs_s": None, "sre_per_s": None,
                                          "time_sre_s": None},
                               "circumferential": {"ess_pct": -18.0}, "longitudinal": None}},
        "aha": None,
        "qc": {"folded_fraction": 0.0, "det_f": {"min": 0.7, "p01": 0.8, "median": 1.0, "p99": 1.2, "max": 1.4},
               "cycle_closure_mm": {"mean": 0.4, "p95": 0.9}, "centre_source": "vcn", "crop_overhang_fraction": 0.0,
               "warnings": ["ES frame < 3 frames after ED", "<b>bold</b>"]},
        "outputs": {"segmentation": "segmentation.nii.gz", "report": "report.html"},
    }


def test_render_report_escapes_embeds_and_is_self_contained():
    results = sample_results()
    images = {"bull's-eye <radial>": bullseye_png(np.arange(17.0), title="radial"),
              "curves": curves_png(None, {"radial": [0, 20, 30, 10]}, ed=0, es=2)}
    page = render_report(results, images)
    assert "<script" not in page.lower() and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;co" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "ES frame &lt; 3 frames after ED" in page
    for png in images.values():
        assert f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" in page
    assert "bull&#x27;s-eye &lt;radial&gt;" in page  # caption
    assert len(re.findall(r"<img ", page)) == 2
    outside_data = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|//[a-z]|<link|<script|@import|url\(", outside_data, re.IGNORECASE)
    assert "150.2" in page and "60.0" in page and "30.1" in page and "0.1.0" in page
    assert page == render_report(copy.deepcopy(results), dict(images))  # no date or other varying field


def test_render_report_shows_na_and_tolerates_missing_sections():
    results = sample_results()
    page = render_report(results, {})
    rv_row = re.search(r"<tr><td>RV</td>(.*?)</tr>", page).group(1)
    assert rv_row.count("n/a") == 5  # NaN EDV, None ESV/SV/EF, no RV mass
    assert "AHA segment analysis: n/a" in page and "Strain-rate curves: n/a" in page
    assert "<h2>Warnings (3)</h2>" in page
    # a bare dict and an empty one still render
    assert "n/a" in render_report({"subject": "s"}, {}, title="T")
    assert "<title>T</title>" in render_report({}, {}, title="T")
    with pytest.raises(ValueError, match="PNG"):
        render_report(results, {"x": b"GIF89a"})


def test_render_report_aha_table():
    results = sample_results()
    radial = [float(i) for i in range(1, 17)] + [None]
    results["aha"] = {"n_segments": 17, "voxels": list(range(100, 117)),
                      "ess_pct": {"radial": radial, "circumferential": [-1.0] * 17, "longitudinal": None}}
    results["qc"]["warnings"] = []
    page = render_report(results, {})
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td>(.*?)</tr>", page)
    assert [int(r[0]) for r in rows] == list(range(1, 18))
    assert [r[1] for r in rows] == list(AHA_SEGMENT_NAMES)
    assert re.findall(r">([^<]*)<", rows[1][2]) == ["101", "", "2.0", "", "-1.0", "", "n/a"]
    assert "n/a" in rows[16][2] and "Warnings (" not in page


def test_aha_segment_names():
    assert len(AHA_SEGMENT_NAMES) == 17
    assert AHA_SEGMENT_NAMES[1] == "basal anteroseptal" and AHA_SEGMENT_NAMES[7] == "mid anteroseptal"
    assert AHA_SEGMENT_NAMES[13] == "apical septal" and AHA_SEGMENT_NAMES[16] == "apex"


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, deepstrain_jax.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_strain_polar_maps_fixed_limits_numbers_and_vector_formats():
    import matplotlib

    from deepstrain_jax.report.plots import STRAIN_LIMITS_PCT, strain_polar_maps

    normal = {"circumferential": np.full(17, -16.0), "radial": np.full(17, 40.0), "longitudinal": np.full(17, -18.0)}
    dcm = {"circumferential": np.full(17, -8.0), "radial": np.full(17, 15.0), "longitudinal": np.full(17, -7.0)}
    a = strain_polar_maps(normal, title="normal")
    b = strain_polar_maps(dcm, title="DCM")
    # 300 dpi PNG of the 13.2 x 4.6 inch figure; byte-identical on a second call; SVG and PDF beside it.
    assert png_size(a["png"]) == (3960, 1380)
    assert strain_polar_maps(normal, title="normal") == a
    assert a["pdf"].startswith(b"%PDF") and b"<svg" in a["svg"]
    svg = a["svg"].decode()
    assert ">17<" in svg and ">-16.0<" in svg and "circumferential strain (%)" in svg  # numbers and units as text
    # Fixed limits: the normal and the DCM heart get different blues (with per-subject limits both would be the
    # darkest blue), the colour of -16 % on (-30, 30).
    lo, hi = STRAIN_LIMITS_PCT["circumferential"]
    cmap = matplotlib.colormaps["RdBu_r"]
    want_normal = np.asarray(cmap((-16.0 - lo) / (hi - lo))[:3])
    want_dcm = np.asarray(cmap((-8.0 - lo) / (hi - lo))[:3])
    for maps, want in ((a, want_normal), (b, want_dcm)):
        image = decode(maps["png"])[..., :3]
        left = image[:, : image.shape[1] // 3]  # the circumferential panel
        assert np.all(np.abs(left - want) < 2.5 / 255, axis=-1).sum() > 100_000
    assert np.abs(want_normal - want_dcm).max() > 0.1
    # The limits can be set.
    c = strain_polar_maps(normal, title="normal", limits={"circumferential": (-20.0, 20.0)})
    image = decode(c["png"])[..., :3][:, : 1320]
    assert np.all(np.abs(image - np.asarray(cmap(0.1)[:3])) < 2.5 / 255, axis=-1).sum() > 100_000


def test_qc_checks_colour_the_report_with_written_thresholds():
    from deepstrain_jax.report.html import qc_checks

    results = sample_results()
    results["qc"]["warnings"] = []
    results["aha"] = {"n_segments": 17}
    results["volumes"]["rv_edv_ml"] = 140.0
    status = {c: s for c, _, _, s in qc_checks(results)}
    assert set(status.values()) == {"green"}
    page = render_report(results, {})
    assert '<span class="ok">none</span>' in page and 'class="warnings' not in page
    # A cycle closure of 9.7 mm is red, whatever the warnings list says, with its threshold on the page.
    results["qc"]["cycle_closure_mm"] = {"mean": 9.7, "p95": 16.9}
    results["qc"]["folded_fraction"] = 0.004
    status = {c: s for c, _, _, s in qc_checks(results)}
    assert status["cycle closure ED -> ES -> ED (mean)"] == "red"
    assert status["folded myocardium (det F <= 0)"] == "amber"
    page = render_report(results, {})
    assert '<span class="ok">none</span>' not in page and "amber &gt; 2 mm, red &gt; 4 mm" in page
    assert '<div class="warnings">' in page and "QC red: cycle closure" in page  # a red box at the top
    results["qc"]["cycle_closure_mm"] = {"mean": 1.0, "p95": 2.0}
    assert '<div class="warnings amber">' in render_report(results, {})


def test_qc_montage_draws_each_label_contour_on_every_slice_and_the_aha_panel():
    from deepstrain_jax.report.plots import LABEL_COLOURS, qc_montage_png

    n, z = 40, 3
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(xx - 20, yy - 20)
    labels = np.zeros((2, n, n, z), np.uint8)
    labels[:, r < 12] = 2
    labels[:, r < 7] = 3
    labels[:, (np.abs(xx - 6) < 3) & (np.abs(yy - 20) < 8)] = 1  # touches the ring at x = 8 | 9
    image = np.random.default_rng(0).uniform(0, 1, (2, n, n, z)).astype(np.float32) + (labels == 3)
    aha = np.where(labels[0] == 2, 7 + (np.arctan2(yy - 20, xx - 20)[..., None] > 0), 0).astype(np.int32)
    data = qc_montage_png(image, labels, ed=0, es=1, aha=aha, title="t")
    assert data == qc_montage_png(image.copy(), labels.copy(), ed=0, es=1, aha=aha, title="t")
    pixels = decode(data)[..., :3]
    for label, colour in LABEL_COLOURS.items():
        want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
        assert np.all(np.abs(pixels - want) < 0.08, axis=-1).sum() > 50, label  # each contour is drawn
    # 3 slices x (ED, ES) + the AHA panel fit one row of 4 pairs; without segments no AHA panel.
    assert png_size(data) == png_size(qc_montage_png(image, labels, ed=0, es=1, aha=None, title="t"))
    # The RV insertion points of the ED labels (the RV blob touches the ring on the left) drawn as cyan markers.
    from deepstrain_jax.cardiac.aha import rv_insertion_points

    ins = rv_insertion_points(labels[0], (1.25, 1.25, 8.0), base_first=True)
    with_points = decode(qc_montage_png(image, labels, ed=0, es=1, aha=aha, insertions=ins, title="t"))[..., :3]
    cyan = np.all(np.abs(with_points - np.array([0.0, 1.0, 1.0])) < 0.1, axis=-1)
    assert cyan.sum() > 4 and not np.all(np.abs(pixels - np.array([0.0, 1.0, 1.0])) < 0.1, axis=-1).any()


def test_cohort_bullseyes_show_group_mean_and_sd():
    """Mean and SD per segment, from values whose statistics are known by hand; NaN segments are left out of
    the statistics; the SVG keeps the wedge labels as text, so the printed numbers can be read back."""
    from deepstrain_jax.analysis.cohort import CohortRow, group_strain
    from deepstrain_jax.report.plots import cohort_polar_maps

    def results(group, circ):
        return {"input": {"group": group}, "aha": {"ess_pct": {"circumferential": circ, "radial": [30.0] * 17,
                                                               "longitudinal": [-10.0] * 17}}}

    a = [-14.0] * 16 + [None]
    b = [-18.0] * 15 + [None, None]
    c = [-6.0] * 17
    rows = [CohortRow("s1", "done", results=results("NOR", a)), CohortRow("s2", "done", results=results("NOR", b)),
            CohortRow("s3", "done", results=results("DCM", c)), CohortRow("s4", "failed")]
    groups = group_strain(rows)
    assert list(groups) == ["DCM", "NOR"] and len(groups["NOR"]["circumferential"]) == 2
    maps = cohort_polar_maps(groups, title="t", experimental=("radial", "longitudinal"))
    svg = maps["svg"].decode()
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    # NOR segments 1-15: mean -16.0, SD sqrt(((-14+16)^2 + (-18+16)^2) / 1) = 2.83; segment 16 has one value
    # (-14.0, SD n/a); segment 17 none. DCM: one subject, mean -6.0, no SD. Radial and longitudinal: every
    # subject alike.
    assert texts.count("-16.0") == 15 and texts.count("2.8") == 15 and texts.count("-14.0") == 1
    assert texts.count("-6.0") == 17
    assert "NOR (n = 2): circumferential mean" in texts and "NOR (n = 2): radial (experimental) SD" in texts
    assert maps["png"][:8] == b"\x89PNG\r\n\x1a\n" and maps["pdf"][:4] == b"%PDF"
    assert cohort_polar_maps(groups, title="t")["png"] == cohort_polar_maps(groups, title="t")["png"]
    assert group_strain([CohortRow("x", "failed")]) == {}
