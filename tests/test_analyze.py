"""End-to-end `deepstrain analyze` on a small phantom with the shipped models: outputs, values against the
exact truth, determinism, slice-order detection, cohorts with a corrupt subject, and resume."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from deepstrain_jax.analysis import cohort, phantom_check
from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.analysis.results import OUTPUT_FILES, check_results
from deepstrain_jax.cli import main
from deepstrain_jax.phantom import dataset
from deepstrain_jax.pipeline import analyze

SMALL = dict(n_frames=6, snr=30.0, matrix=(112, 112), pixel_mm=1.6, n_slices=8, slice_thickness_mm=8.0,
             slice_spacing_mm=10.0, supersample_inplane=2, supersample_slice=3)


@pytest.fixture(scope="module")
def case():
    return dataset.make_case(11, "NOR", **SMALL)


@pytest.fixture(scope="module")
def phantom(case, tmp_path_factory):
    return dataset.save_case(tmp_path_factory.mktemp("phantoms") / "patient001", case)


@pytest.fixture(scope="module")
def networks():
    return Networks.load()


@pytest.fixture(scope="module")
def analysed(phantom, networks, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "patient001"
    return analyze(phantom, out, networks=networks), out


def _world_to_axes(u_world, affine):
    d = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return u_world @ d  # u_axes_j = sum_i d_ij u_world_i (d orthonormal)


def test_every_output_file_is_written_with_the_input_geometry(analysed, phantom):
    result, out = analysed
    for key, name in OUTPUT_FILES.items():
        # The vector bull's-eyes only with publication_figures (test_publication_figures_only_on_request).
        assert (out / name).is_file() == (key not in ("polar_map_svg", "polar_map_pdf")), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    cine = nib.load(phantom / "patient001_4d.nii.gz")
    x, y, z, t = cine.shape
    n, m = result.grid.segmentation.shape[1], result.grid.segmentation.shape[3]
    expect = {"segmentation": (x, y, z, t), "displacement": (n, n, m, t, 3), "strain_radial": (x, y, z, t),
              "strain_circumferential": (x, y, z, t), "strain_longitudinal": (x, y, z, t)}
    for key, shape in expect.items():
        img = nib.load(out / OUTPUT_FILES[key])
        assert img.shape == shape, key
        # The displacement is on the network grid by default, placed in the scanner frame by its own affine.
        np.testing.assert_allclose(img.affine, result.grid.affine if key == "displacement" else cine.affine,
                                   atol=1e-4)
        assert img.header.get_zooms()[3] == pytest.approx(cine.header.get_zooms()[3], rel=1e-5)
    seg = np.asarray(nib.load(out / OUTPUT_FILES["segmentation"]).dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 3}
    assert nib.load(out / OUTPUT_FILES["displacement"]).header["intent_code"] == 1006
    # Strain maps live on the ED myocardium of the written segmentation only.
    ed = result.results["frames"]["ed"]
    strain = np.asarray(nib.load(out / OUTPUT_FILES["strain_circumferential"]).dataobj)
    assert np.all(np.isnan(strain[seg[..., ed] != 2])) and np.all(np.isfinite(strain[seg[..., ed] == 2]))
    assert np.any(strain[seg[..., ed] == 2] != 0)
    header = nib.load(out / OUTPUT_FILES["strain_circumferential"]).header
    assert b"unit=mm/mm" in header["descrip"].tobytes() and header["intent_code"] == 1001


def test_results_json_schema_and_csvs(analysed):
    result, out = analysed
    d = json.loads((out / "results.json").read_text())
    check_results(d)
    assert d == json.loads(json.dumps(result.results))
    assert d["input"]["kind"] == "acdc" and d["input"]["slice_order_source"] == "sidecar"
    assert d["frames"]["n"] == 6 and d["frames"]["ed_source"] == "info_cfg"
    curves = (out / "curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 6 and curves[0].startswith("subject,frame,time_s,lv_volume_ml")
    row = curves[1 + d["frames"]["es"]].split(",")
    assert row[0] == "patient001" and int(row[1]) == d["frames"]["es"]
    assert float(row[7]) == pytest.approx(d["strain"]["global_pct"]["circumferential"][d["frames"]["es"]],
                                          rel=1e-5)
    aha = (out / "aha_segments.csv").read_text().splitlines()
    assert len(aha) == 18 and aha[0].startswith("subject,segment,name")
    assert aha[1].startswith("patient001,1,basal anterior")
    html = (out / "report.html").read_text()
    assert "patient001" in html and "data:image/png;base64," in html
    # Self-contained: no link out (the embedded PNGs' base64 text is left out: it may spell "http" by chance).
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def test_regional_curves_and_tables_agree_with_results_json(analysed):
    result, out = analysed
    d = json.loads((out / "results.json").read_text())
    aha, t, es = d["aha"], d["frames"]["n"], d["frames"]["es"]
    rows = [line.split(",") for line in (out / OUTPUT_FILES["aha_curves"]).read_text().splitlines()]
    assert rows[0] == ["subject", "segment", "frame", "time_s", "direction", "strain_pct", "strain_rate_per_s",
                       "experimental"]
    assert len(rows) == 1 + 17 * t * 3 and {r[0] for r in rows[1:]} == {"patient001"}
    # Radial and longitudinal strain are marked experimental in every table (issue 12).
    assert {(r[4], r[7]) for r in rows[1:]} == {("radial", "true"), ("circumferential", "false"),
                                                ("longitudinal", "true")}
    assert d["strain"]["experimental"]["directions"] == ["radial", "longitudinal"]
    curves_header = (out / OUTPUT_FILES["curves"]).read_text().splitlines()[0].split(",")
    assert "circumferential_strain_pct" in curves_header and "longitudinal_strain_pct_experimental" in curves_header
    assert "radial_strain_pct" not in curves_header
    assert "(experimental)" in (out / OUTPUT_FILES["report"]).read_text()
    for r in rows[1:]:
        if int(r[2]) == es and r[5]:
            assert float(r[5]) == pytest.approx(aha["ess_pct"][r[4]][int(r[1]) - 1], rel=1e-5, abs=1e-6)
    for direction in ("circumferential", "longitudinal"):
        curves = np.array([[np.nan if v is None else v for v in row] for row in aha["curves_pct"][direction]])
        placed = np.isfinite(curves).all(axis=0)
        np.testing.assert_allclose(np.array(aha["peak_pct"][direction], float)[placed], curves[:, placed].min(0))
    assert aha["dyssynchrony_ms"]["circumferential"] is not None
    table = [line.split(",") for line in (out / OUTPUT_FILES["aha_segments"]).read_text().splitlines()]
    assert "circumferential_peak_pct" in table[0] and "circumferential_time_to_peak_s" in table[0]
    assert "radial_ess_pct_experimental" in table[0] and "longitudinal_peak_pct_experimental" in table[0]


def test_provenance_in_results_and_run_json(analysed):
    """results.json names the software and models (deterministic); run.json how the folder was made."""
    import jax

    from deepstrain_jax import __version__

    result, out = analysed
    d = json.loads((out / "results.json").read_text())
    assert d["software"] == {"name": "deepstrain-jax", "version": __version__, "jax_version": jax.__version__,
                             "jaxlib_version": d["software"]["jaxlib_version"], "jax_backend": "cpu",
                             "numpy_version": np.__version__}
    for name in ("vcn", "carson", "carmen"):
        assert len(d["models"][name]["sha256"]) == 64 and d["models"][name]["name"]
    run = json.loads((out / "run.json").read_text())
    assert set(run) == {"command", "started_utc", "seconds", "stages_s", "networks_s", "write_parts_s"}
    assert run["seconds"] > 0
    assert run["started_utc"].endswith("+00:00")
    stages = run["stages_s"]
    analysis = ["read", "frames", "segmentation", "volumes", "motion", "strain", "results"]
    assert list(stages) == analysis + ["write"]
    # Figures and tables are drawn while a worker thread writes the NIfTI maps: the parts overlap.
    parts = run["write_parts_s"]
    assert set(parts) == {"figures", "tables", "nifti"} and parts["figures"] + parts["tables"] <= stages["write"]
    assert all(v >= 0 for v in stages.values())
    assert sum(stages[k] for k in analysis) <= run["seconds"] + 1e-3 * len(analysis)
    # The networks run inside the segmentation (VCN, CarSON) and motion (CarMEN) stages.
    nets = run["networks_s"]
    assert set(nets) == {"vcn", "carson", "carmen"} and all(v > 0 for v in nets.values())
    assert nets["vcn"] + nets["carson"] <= stages["segmentation"] and nets["carmen"] <= stages["motion"]


def test_values_against_the_phantom_truth(analysed, phantom, case):
    """Tolerances: what a small, phantom-trained model on a coarse 6-frame phantom must reach."""
    result, out = analysed
    rows, segments = phantom_check.compare(result.results, phantom)
    by = {r.quantity: r for r in rows}
    assert abs(by["LV EF"].error) < 8.0
    assert abs(by["global circumferential ESS"].error) < 4.0
    assert abs(by["global radial ESS"].error) < 20.0
    assert segments["circumferential"]["mean_abs_error_pp"] < 6.0
    # Segmentation on the native grid against the rendered labels.
    arrays, _ = dataset.load_truth(phantom)
    seg = result.segmentation
    for t in (case.cine.ed, case.cine.es):
        for label, floor in ((3, 0.85), (2, 0.7), (1, 0.8)):
            a, b = seg[..., t] == label, arrays["labels"][..., t] == label
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > floor, (t, label)
    # Motion at ES on the native grid, in the file's array axes, against the exact displacement.
    u = _world_to_axes(result.displacement_mm[..., case.cine.es, :], result.affine)
    truth = arrays["u_mm"][case.cine.es]
    myo = arrays["myo_mask"]
    epe = np.linalg.norm(u - truth, axis=-1)[myo].mean()
    assert epe < 0.4 * np.linalg.norm(truth, axis=-1)[myo].mean()
    assert epe < 3.0
    # The ED frame is the reference: zero displacement.
    assert np.all(result.displacement_mm[..., case.cine.ed, :] == 0)


def test_two_runs_give_identical_outputs(analysed, phantom, networks, tmp_path):
    result, out = analysed
    again = analyze(phantom, tmp_path / "again", networks=networks)
    assert json.dumps(again.results) == json.dumps(result.results)
    np.testing.assert_array_equal(again.segmentation, result.segmentation)
    np.testing.assert_array_equal(again.displacement_mm, result.displacement_mm)
    for name in ("results.json", "curves.csv", "aha_segments.csv", "polar_map.png", "curves.png", "report.html",
                 "segmentation.nii.gz", "displacement.nii.gz", "strain_radial.nii.gz"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    # run.json is the one file that records the run itself (its start time and duration).
    assert json.loads((tmp_path / "again" / "run.json").read_text())["started_utc"]


def test_displacement_grids_native_network_and_none(analysed, phantom, networks, tmp_path):
    """``native`` writes exactly the API's native-grid field; the default network-grid file, read through its
    own affine at the native voxel centres, gives the same field (linear interpolation both ways); ``none``
    writes no file."""
    from scipy import ndimage

    result, out = analysed
    native = analyze(phantom, tmp_path / "native", networks=networks, displacement="native")
    img = nib.load(tmp_path / "native" / OUTPUT_FILES["displacement"])
    np.testing.assert_array_equal(np.asarray(img.dataobj), result.displacement_mm)
    assert b"grid=native" in img.header["descrip"].tobytes()
    assert native.results["options"]["displacement"] == "native"

    net = nib.load(out / OUTPUT_FILES["displacement"])
    u_net = np.asarray(net.dataobj)
    assert b"grid=network" in net.header["descrip"].tobytes()
    es, ed = result.results["frames"]["es"], result.results["frames"]["ed"]
    myo = result.segmentation[..., ed] == 2
    vox = np.argwhere(myo)
    world = nib.affines.apply_affine(result.affine, vox)
    at = nib.affines.apply_affine(np.linalg.inv(net.affine), world).T
    sampled = np.stack([ndimage.map_coordinates(u_net[..., es, c], at, order=1, mode="nearest")
                        for c in range(3)], axis=-1)
    np.testing.assert_allclose(sampled, result.displacement_mm[..., es, :][myo], atol=1e-3)
    assert np.abs(sampled).max() > 1.0  # a real motion, not zeros on both sides

    analyze(phantom, tmp_path / "none", networks=networks, displacement="none")
    assert not (tmp_path / "none" / OUTPUT_FILES["displacement"]).exists()
    d = json.loads((tmp_path / "none" / "results.json").read_text())
    assert "displacement" not in d["outputs"] and (tmp_path / "none" / OUTPUT_FILES["strain_radial"]).is_file()


def test_reversed_stack_from_a_bare_nifti_is_detected_and_gives_the_same_strain(analysed, case, networks,
                                                                                tmp_path):
    result, _ = analysed
    folder = tmp_path / "patient009"
    dataset.save_case(folder, case, slice_order="apex_to_base")
    nifti = tmp_path / "cine.nii.gz"
    shutil.copy(folder / "patient009_4d.nii.gz", nifti)
    rev = analyze(nifti, networks=networks, es=case.cine.es)
    r = rev.results
    assert r["input"]["kind"] == "nifti" and r["input"]["slice_order_source"] == "detected"
    assert r["input"]["slice_order"] == "apex_to_base"
    for d in ("circumferential", "longitudinal"):
        assert r["strain"]["indices"][d]["ess_pct"] == pytest.approx(
            result.results["strain"]["indices"][d]["ess_pct"], abs=1.5)
    # Voxel outputs come back in the file's (reversed) slice order.
    np.testing.assert_array_equal(rev.segmentation[..., ::-1, :].shape, result.segmentation.shape)
    agree = (rev.segmentation[:, :, ::-1] == result.segmentation).mean()
    assert agree > 0.97


def test_cli_cohort_with_a_corrupt_subject_finishes_the_others_and_resumes(phantom, tmp_path, capsys):
    cohort_dir = tmp_path / "cohort"
    cohort_dir.mkdir()
    shutil.copytree(phantom, cohort_dir / "patient001")
    (cohort_dir / "broken_4d.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really a gzip stream")
    out = tmp_path / "out"
    assert main(["analyze", str(cohort_dir), "--out", str(out), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "broken_4d" in err and "failed" in err
    rows = (out / "cohort.csv").read_text().splitlines()
    assert len(rows) == 3
    status = {r.split(",")[0]: r.split(",")[1] for r in rows[1:]}
    assert status == {"broken_4d": "failed", "patient001": "done"}
    assert "truncated or corrupt" in rows[1] or "not a readable NIfTI" in rows[1]
    assert (out / "patient001" / "results.json").is_file() and not (out / "broken_4d").exists()
    stamp = (out / "patient001" / "results.json").stat().st_mtime_ns

    # Resume: the finished subject is skipped (not rewritten), the broken one is tried again.
    seen = []
    rows2 = cohort.run_cohort(cohort_dir, out, progress=seen.append)
    assert [(r.subject, r.status) for r in rows2] == [("broken_4d", "failed"), ("patient001", "skipped")]
    assert (out / "patient001" / "results.json").stat().st_mtime_ns == stamp
    assert len(seen) == 2
    csv_rows = (out / "cohort.csv").read_text().splitlines()
    assert csv_rows[2].startswith("patient001,skipped,,NOR,6,")


def test_legacy_mode_centres_on_the_field_of_view_and_adds_the_original_strain(analysed, phantom, networks):
    result, _ = analysed
    legacy = analyze(phantom, networks=networks, legacy=True).results
    assert legacy["qc"]["centre_source"] == "fov" and legacy["options"]["legacy"] is True
    es = legacy["frames"]["es"]
    ours = legacy["strain"]["global_pct"]["circumferential"][es]
    original = legacy["strain"]["legacy"]["global_circumferential"][es]
    # In-plane polar strain about one stack centre against the 3D basis about the fitted LV axis: for this
    # straight, untilted phantom they agree to a few percentage points.
    assert original == pytest.approx(ours, abs=3.0)
    assert result.results["strain"]["legacy"] is None
    assert legacy["strain"]["indices"]["circumferential"]["ess_pct"] == pytest.approx(
        result.results["strain"]["indices"]["circumferential"]["ess_pct"], abs=2.0)


def test_oblique_stack_with_regional_dysfunction(networks, tmp_path):
    """An oblique scanner orientation and an infarct: world-frame displacement back to the array axes matches
    the truth, and the per-segment strain (which a wrongly oriented AHA model would scramble) follows the
    exact regional pattern."""
    case = dataset.make_case(12, "MINF", oblique=True, **SMALL)
    folder = dataset.save_case(tmp_path / "patient002", case)
    result = analyze(folder, networks=networks)
    assert not np.allclose(result.affine[:3, :3], np.diag(np.diag(result.affine[:3, :3])))  # really oblique
    arrays, _ = dataset.load_truth(folder)
    es = case.cine.es
    u = _world_to_axes(result.displacement_mm[..., es, :], result.affine)
    myo = arrays["myo_mask"]
    truth = arrays["u_mm"][es]
    assert np.linalg.norm(u - truth, axis=-1)[myo].mean() < 0.4 * np.linalg.norm(truth, axis=-1)[myo].mean()
    _, segments = phantom_check.compare(result.results, folder)
    cc = segments["circumferential"]
    both = np.isfinite(cc["true"]) & np.isfinite(cc["measured"])
    assert both.sum() >= 12
    # Measured here: r = 0.90; the septal-lateral mirror of the same values gives r = 0.53.
    assert np.corrcoef(cc["true"][both], cc["measured"][both])[0, 1] > 0.75
    assert cc["mean_abs_error_pp"] < 5.0


def test_demo_command_prints_measured_against_true_and_reuses_its_phantom(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "6", "--seed", "3", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "written to" in text and (out / "analysis" / "report.html").is_file()
    for quantity in ("LV EF", "global circumferential ESS", "global radial SRs", "global longitudinal SRe",
                     "AHA circumferential ESS"):
        assert quantity in text, quantity
    ef = next(line for line in text.splitlines() if line.startswith("LV EF")).split()
    assert abs(float(ef[4])) < 10.0  # the error column, percentage points
    assert main(["demo", "--out", str(out), "--frames", "6", "--seed", "3", "--no-cache"]) == 0
    assert "written to" not in capsys.readouterr().out  # the phantom is reused, the analysis replaced
    assert main(["demo", "--out", str(out), "--frames", "2"]) == 2


def test_bfloat16_networks_analyse_like_float32(analysed, phantom):
    # bfloat16 convolutions (float32 accumulation) change the analysis by rounding only: the segmentation agrees
    # with the float32 one on nearly every heart voxel, global strain moves by a fraction of a point, and
    # results.json says which precision ran.
    from deepstrain_jax.metrics import dice

    result32, _ = analysed
    bf16 = Networks.load(precision="bfloat16")
    result16 = analyze(phantom, networks=bf16)
    assert {m["precision"] for m in result16.results["models"].values() if m} == {"bfloat16"}
    assert {m["precision"] for m in result32.results["models"].values() if m} == {"float32"}
    assert np.all(dice(result16.segmentation, result32.segmentation) > 0.98)
    for d in ("radial", "circumferential", "longitudinal"):
        a = result32.results["strain"]["indices"][d]["ess_pct"]
        b = result16.results["strain"]["indices"][d]["ess_pct"]
        assert abs(a - b) < 1.0, d
    with pytest.raises(ValueError, match="precision must be one of"):
        Networks.load(precision="float16x")


def test_cli_precision_choices_are_the_libraries():
    # The CLI restates the choices to stay JAX-free at start-up; they must be Networks.load's.
    import argparse

    from deepstrain_jax.analysis.networks import PRECISIONS
    from deepstrain_jax.commands.analyze import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS and action.default == "float32"


def test_publication_figures_only_on_request(analysed, tmp_path):
    """By default one 150 dpi polar_map.png (no SVG or PDF, none listed in results.json); with
    publication_figures a 300 dpi PNG, an SVG and a PDF, listed in results.json."""
    import dataclasses

    from PIL import Image

    from deepstrain_jax.analysis import outputs

    result, out = analysed
    assert not (out / "polar_map.svg").exists() and not (out / "polar_map.pdf").exists()
    assert {"polar_map_svg", "polar_map_pdf"}.isdisjoint(json.loads((out / "results.json").read_text())["outputs"])
    n_panels = 3
    assert Image.open(out / "polar_map.png").size[0] == round(4.4 * n_panels * 150)

    # What build_results gives with the option on: the option set, every output file listed.
    results = {**result.results, "options": {**result.results["options"], "publication_figures": True},
               "outputs": dict(OUTPUT_FILES)}
    folder = outputs.write_subject(dataclasses.replace(result, results=results), tmp_path / "print")
    assert Image.open(folder / "polar_map.png").size[0] == round(4.4 * n_panels * 300)
    assert (folder / "polar_map.svg").read_bytes().startswith(b"<?xml")
    assert (folder / "polar_map.pdf").read_bytes().startswith(b"%PDF")
    listed = json.loads((folder / "results.json").read_text())["outputs"]
    assert listed["polar_map_svg"] == "polar_map.svg" and listed["polar_map_pdf"] == "polar_map.pdf"


def test_cli_publication_figures_flag_reaches_the_options():
    import argparse

    from deepstrain_jax.commands.analyze import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args(["in", "--out", "o"])).publication_figures is False
    assert options_from_args(parser.parse_args(["in", "--out", "o", "--publication-figures"])).publication_figures is True


def test_motion_fills_out_at_out_index_with_the_fields_of_separate_calls(networks):
    n, z = networks.grid
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(n, n, z)).astype(np.float32)
    moving = rng.normal(size=(3, n, n, z)).astype(np.float32)
    plain = networks.motion(fixed, moving)           # pairs 0, 1 in one batch, pair 2 padded
    out = np.full((5, n, n, z, 3), 7.0, np.float32)
    assert networks.motion(fixed, moving, out=out, out_index=[4, 0, 2]) is out
    for k, i in enumerate((4, 0, 2)):
        np.testing.assert_array_equal(out[i], plain[k])
    np.testing.assert_array_equal(out[[1, 3]], 7.0)
    # Each pair on its own gives its field: nothing of a batch neighbour or of the padding leaks in.
    for k in range(3):
        np.testing.assert_allclose(networks.motion(fixed, moving[k:k + 1])[0], plain[k], atol=1e-5)
    with pytest.raises(ValueError, match="out_index has 2 entries for 3"):
        networks.motion(fixed, moving, out=out, out_index=[0, 1])
