"""End to end: the demo at tiny size through every real stage, via the CLI and the API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcompare import imageset, registry
from simcompare.cli import main
from simcompare.config import ScoreConfig
from simcompare.pipeline import score

TINY = ["--n-galaxies", "60", "--stamp-size", "32", "--levels", "2", "--blocks", "2",
        "--hidden", "16", "--epochs", "2", "--batch-size", "32", "--n-bootstrap", "100",
        "--morphology-max", "25", "--seed", "3",
        "--classifier-epochs", "5"]


def _workspace(root: Path) -> Path:
    """A workspace whose own hsc descriptor asks for a small demo observed sample."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "observed").mkdir(exist_ok=True)
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    text = text.replace("demo_n_galaxies = 1500", "demo_n_galaxies = 240")
    assert "demo_n_galaxies = 240" in text
    (root / "observed" / "hsc.toml").write_text(text)
    return root


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    ws = _workspace(tmp_path_factory.mktemp("ws_cli"))
    code = main(["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY])
    assert code == 0
    return ws, code


def test_demo_runs_every_stage(cli_run):
    ws, _ = cli_run
    report = ws / "reports" / "demo_hsc"
    html = (report / "index.html").read_text()
    assert "<html" in html.lower() and "http://" not in html and "https://" not in html
    assert (ws / "reports" / "index.html").exists()
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    for stage in ("render", "observed", "train", "evaluate", "appearance", "morphology", "floor",
                  "compare", "report"):
        assert stage in run["timings_s"], stage
    # --classifier-epochs reached the classifier test and the report says which size ran
    assert run["config"]["classifier_epochs"] == 5
    assert "5 epochs per fold" in html

    # the demo simulation went through the TNG reader: TNG-layout files exist
    sim_roots = list((ws / ".simcompare" / "sims").glob("demo-*/output"))
    assert sim_roots, "demo simulation not written in the TNG layout"
    assert list(sim_roots[0].glob("groups_*/fof_subhalo_tab_*.0.hdf5"))
    assert list(sim_roots[0].glob("snapdir_*/snap_*.0.hdf5"))
    assert list(sim_roots[0].parent.glob("postprocessing/offsets/offsets_*.hdf5"))

    mocks = imageset.read(run["paths"]["mocks"])
    observed = imageset.read(run["paths"]["observed"])
    assert mocks.kind == "mock" and observed.kind == "observed"
    assert mocks.images.shape[1:] == (5, 32, 32) == observed.images.shape[1:]
    assert 0 < len(mocks) <= 60
    assert mocks.pixel_scale_arcsec == observed.pixel_scale_arcsec == pytest.approx(0.168)

    scores = pd.read_parquet(report / "scores.parquet")
    assert len(scores) == len(mocks)
    for col in ("object_id", "log_prob_nats", "bits_per_dim", "llr_nats"):
        assert col in scores.columns
    assert np.isfinite(scores["log_prob_nats"]).all()
    d = 5 * 32 * 32
    np.testing.assert_allclose(scores["bits_per_dim"], -scores["log_prob_nats"] / (d * np.log(2)),
                               rtol=1e-5)

    summary = json.loads((report / "summary.json").read_text())
    # the classifier axis, its null, the alignment fraction and the per-galaxy probability
    anyd = summary["axes"]["any_difference"]
    assert anyd["ci"][0] <= anyd["value"] <= anyd["ci"][1]
    assert len(anyd["null"]["ci"]) == 2 and "fine_structure" in anyd["captured"]
    assert 0.0 <= summary["alignment"]["value"] <= 1.0 and summary["alignment"]["null"] is not None
    assert "p_simulated" in scores.columns and scores["p_simulated"].between(0, 1).all()
    for sid in ("appearance", "mismatch", "anomalies"):
        block = html.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert 'class="missing"' not in block, sid
    assert "nearest observed galaxies by appearance" in html
    auroc = summary["metrics"]["auroc"]
    assert 0.0 <= auroc["value"] <= 1.0
    assert auroc["ci"][0] <= auroc["value"] <= auroc["ci"][1]
    assert "null" in auroc and len(auroc["null"]["ci"]) == 2


def test_second_run_is_cached(cli_run):
    ws, _ = cli_run
    run_json = ws / ".simcompare" / "runs" / "demo_hsc" / "run.json"
    first = json.loads(run_json.read_text())
    assert not any(first["cached"].values()), first["cached"]
    outputs = [Path(p) for k, p in first["paths"].items() if k != "model"]
    mtimes = {p: p.stat().st_mtime_ns for p in outputs if p.exists()}
    assert main(["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY]) == 0
    second = json.loads(run_json.read_text())
    stages = ("render", "observed", "train", "evaluate", "appearance", "morphology", "floor",
              "compare")
    assert all(second["cached"][s] for s in stages), second["cached"]
    assert second["stage_keys"] == first["stage_keys"]
    for path, mtime in mtimes.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"


def test_cli_and_api_give_identical_scores(cli_run, tmp_path, monkeypatch):
    """The API run, with progress bars on: the same scores as the CLI, a bar for every stage."""
    import tqdm.auto

    shown = []

    class Recorded(tqdm.auto.tqdm):
        def close(self):
            if not self.disable:  # tqdm closes again when collected
                shown.append((self.desc.rstrip(": "), self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    ws_cli, _ = cli_run
    ws = _workspace(tmp_path / "ws_api")
    cfg = ScoreConfig(sim="demo", survey="hsc", workspace=str(ws), n_galaxies=60, stamp_size=32,
                      levels=2, blocks=2, hidden=16, epochs=2, batch_size=32, n_bootstrap=100,
                      morphology_max=25, seed=3, classifier_epochs=5, progress=True)
    report = score(cfg)
    # every stage's bar ran to its end: render, observed, train (a bar per model), evaluate,
    # appearance, morphology (the mocks and the test split), floor (analytic, one count)
    ended = {desc for desc, n, total in shown if n == total}
    assert {"render", "ingest", "model", "background", "evaluate", "appearance", "morphology",
            "floor"} <= ended, shown
    assert ("appearance", 3, 3) in shown and ("floor", 2, 2) in shown
    a = pd.read_parquet(ws_cli / "reports" / "demo_hsc" / "scores.parquet")
    b = pd.read_parquet(report / "scores.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_ensemble_and_background_options_reuse_the_other_stages(cli_run, tmp_path):
    import shutil

    ws = tmp_path / "ws_ens"
    shutil.copytree(cli_run[0], ws)
    args = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY,
            "--ensemble", "2", "--background-conditions", "survey"]
    assert main(args) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    # a new model; the mocks, the observed sample and the morphology (same test split) reused
    assert not run["cached"]["train"] and not run["cached"]["evaluate"]
    assert all(run["cached"][s] for s in ("render", "observed", "morphology")), run["cached"]
    training = json.loads((Path(run["paths"]["model"]) / "training.json").read_text())
    assert len(training["members"]) == 2
    assert training["background_info"]["conditions"] == "survey"
    scores = pd.read_parquet(ws / "reports" / "demo_hsc" / "scores.parquet")
    assert (scores["n_members"] == 2).all()
    assert np.isfinite(scores["llr_nats_std"]).all() and (scores["llr_nats_std"] > 0).all()
    html = (ws / "reports" / "demo_hsc" / "index.html").read_text()
    assert "2 ensemble members" in html
    assert "with the survey&#39;s PSF and noise" in html or "with the survey's PSF and noise" in html


def test_report_verb_rewrites_the_report_of_a_run(cli_run, tmp_path):
    """`simcompare report` turns a finished run folder into the same report `score` wrote."""
    ws, _ = cli_run
    out = tmp_path / "again"
    run_dir = ws / ".simcompare" / "runs" / "demo_hsc"
    assert main(["--no-progress", "report", "--run", str(run_dir), "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    summary = json.loads((ws / "reports" / "demo_hsc" / "summary.json").read_text())
    assert json.loads((out / "summary.json").read_text())["verdict"] == summary["verdict"]
    assert "On fine structure" in html and "http://" not in html
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"),
                                  pd.read_parquet(ws / "reports" / "demo_hsc" / "scores.parquet"))


def test_every_axis_carries_the_pipeline_floor(cli_run):
    ws, _ = cli_run
    report = ws / "reports" / "demo_hsc"
    summary = json.loads((report / "summary.json").read_text())
    block = summary["pipeline_floor"]
    paths = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())["paths"]
    mocks = imageset.read_catalog(paths["mocks"])
    n_test = len(json.loads((Path(paths["model"]) / "split.json").read_text())["test"])
    # the simulation's typical particle count, on half of the held-out galaxies (at most
    # twice --morphology-max of them)
    assert block["particles"] == round(float(np.median(mocks["n_star_particles"])))
    assert block["n_galaxies"] + sum(block["exclusions"].values()) == (min(n_test, 50) + 1) // 2
    for axis in ("fine_structure", "global_structure", "any_difference"):
        pf = summary["axes"][axis]["pipeline_floor"]
        assert pf is not None, axis
        assert pf["ci"][0] <= pf["value"] <= pf["ci"][1]
        assert pf["particles"] == block["particles"]
        d = pf["difference"]
        assert d["ci"][0] <= d["value"] <= d["ci"][1]
        assert d["value"] == pytest.approx(summary["axes"][axis]["value"] - pf["value"])
    assert summary["verdict"]["against_pipeline_floor"] == {"fine_structure": True,
                                                            "global_structure": True}
    assert "pipeline floor" in summary["verdict"]["text"]
    html = (report / "index.html").read_text()
    assert 'id="floor"' in html and "simulation − floor" in html
    # the image classifier's own floor: trained on the floor's two halves
    ad = summary["axes"]["any_difference"]
    assert ad["pipeline_floor"]["n"]["sim"] == block["n_galaxies"]
    assert ad["floor_verdict"] in ("indistinguishable", "within the pipeline floor",
                                   "differs beyond the pipeline floor")
    assert html.count("pipeline floor (observed galaxies self-simulated at") == 3
    assert "any difference (image classifier)" in html
    assert "run &#39;simcompare score&#39; with --floor-curve" in html or \
        "run 'simcompare score' with --floor-curve" in html


def test_no_floor_and_floor_curve_options(cli_run, tmp_path):
    import shutil

    ws = tmp_path / "ws_floor"
    shutil.copytree(cli_run[0], ws)
    base = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY]
    assert main([*base, "--no-floor"]) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    assert "floor" not in run["timings_s"] and run["stage_keys"]["floor"] is None
    assert all(run["cached"][s] for s in ("render", "train", "evaluate", "morphology"))
    summary = json.loads((ws / "reports" / "demo_hsc" / "summary.json").read_text())
    assert summary["pipeline_floor"]["skipped"] == "switched off with --no-floor"
    assert summary["axes"]["fine_structure"]["pipeline_floor"] is None
    assert "not measured (switched off with --no-floor)" in summary["verdict"]["text"]
    html = (ws / "reports" / "demo_hsc" / "index.html").read_text()
    assert "the pipeline floor was not measured: switched off with --no-floor" in html

    assert main([*base, "--floor-curve", "300,1000", "--floor-particles", "600"]) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    assert not run["cached"]["floor"] and run["cached"]["morphology"]
    summary = json.loads((ws / "reports" / "demo_hsc" / "summary.json").read_text())
    block = summary["pipeline_floor"]
    assert block["particles"] == 600 and block["particles_source"] == "set with --floor-particles"
    assert [p["particles"] for p in block["curve"]] == [300, 1000]
    for p in block["curve"]:
        assert p["fine_structure"]["ci"][0] <= p["fine_structure"]["value"] <= \
            p["fine_structure"]["ci"][1]
    report = ws / "reports" / "demo_hsc"
    assert (report / "figures" / "floor_curve.png").stat().st_size > 1000
    assert "figures/floor_curve.png" in (report / "index.html").read_text()


def test_evaluate_stage_on_two_workers_gives_the_same_scores(cli_run, tmp_path):
    """`score --workers 2` scores the mocks on the cluster's workers: same table as one process."""
    import shutil

    ws = tmp_path / "ws_workers"
    shutil.copytree(cli_run[0], ws)
    (done,) = (ws / ".simcompare" / "cache" / "evaluate").glob("*/sim_scores.parquet")
    before = pd.read_parquet(done)
    # the stage scores the held-out reference as it scores the mocks (on the cluster too)
    ref_before = pd.read_parquet(done.parent / "reference_scores.parquet")
    shutil.rmtree(done.parent)
    args = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY,
            "--workers", "2"]
    assert main(args) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    assert not run["cached"]["evaluate"] and run["cached"]["train"]
    pd.testing.assert_frame_equal(pd.read_parquet(done), before)
    pd.testing.assert_frame_equal(pd.read_parquet(done.parent / "reference_scores.parquet"),
                                  ref_before)
    # a named precision is part of the evaluate stage's key: float32 is scored anew, same table
    assert main([*args, "--precision", "float32"]) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    assert not run["cached"]["evaluate"] and run["cached"]["train"]
    tables = sorted((ws / ".simcompare" / "cache" / "evaluate").glob("*/sim_scores.parquet"))
    assert len(tables) == 2
    for table in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(table), before)


def test_lookalike_mass_window_option(cli_run, tmp_path):
    """`score --lookalike-mass-window DEX`: every look-alike lies within DEX of its galaxy's mass."""
    import shutil

    ws = tmp_path / "ws_window"
    shutil.copytree(cli_run[0], ws)
    base = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY]
    assert main([*base, "--lookalike-mass-window", "0.1"]) == 0
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    assert not run["cached"]["appearance"] and run["cached"]["evaluate"] and run["cached"]["train"]
    info = json.loads(Path(run["paths"]["appearance"]).read_text())
    assert info["lookalikes"]["mass_window_dex"] == 0.1
    arrays = np.load(run["paths"]["appearance_arrays"])
    mocks = imageset.read_catalog(run["paths"]["mocks"])
    observed = imageset.read_catalog(run["paths"]["observed"])
    m_sim = dict(zip(mocks["object_id"].tolist(), np.log10(mocks["stellar_mass_msun"]).tolist(), strict=True))
    m_obs = dict(zip(observed["object_id"].tolist(), np.log10(observed["stellar_mass_msun"]).tolist(),
                     strict=True))
    look = arrays["lookalike_object_id"]
    found = look[:, 0] >= 0
    assert found.sum() >= len(look) // 2  # most galaxies have a look-alike within 0.1 dex
    for sid, row in zip(arrays["sim_object_id"][found].tolist(), look[found], strict=True):
        for oid in row[row >= 0].tolist():
            assert abs(m_sim[sid] - m_obs[oid]) <= 0.1 + 1e-9


def test_mock_survey_renders_through_another_descriptor(cli_run, tmp_path):
    """`score --mock-survey NAME`: mocks rendered with NAME, observed side and model reused."""
    import shutil

    ws = tmp_path / "ws_mock_survey"
    shutil.copytree(cli_run[0], ws)
    text = (ws / "observed" / "hsc.toml").read_text()
    wide = text.replace('name = "hsc"', 'name = "hscwide"').replace(
        "fwhm_arcsec = { g = 0.77, r = 0.76, i = 0.58, z = 0.68, y = 0.68 }",
        "fwhm_arcsec = { g = 0.924, r = 0.912, i = 0.696, z = 0.816, y = 0.816 }")
    assert wide.count("hscwide") == 1 and "0.696" in wide
    (ws / "observed" / "hscwide.toml").write_text(wide)
    base = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY]
    assert main([*base, "--mock-survey", "hscwide"]) == 0
    run_dir = ws / ".simcompare" / "runs" / "demo_hsc_mocks-hscwide"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["mock_survey"] == "hscwide"
    assert not run["cached"]["render"]
    assert all(run["cached"][s] for s in ("observed", "train")), run["cached"]
    assert (ws / "reports" / "demo_hsc_mocks-hscwide" / "index.html").exists()
    plain = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    wide_psf = imageset.read(run["paths"]["mocks"]).psf
    plain_psf = imageset.read(plain["paths"]["mocks"]).psf
    # the wider PSF puts less of its light in the central pixel, band by band
    c = wide_psf.shape[-1] // 2
    assert (wide_psf[:, c, c] < 0.8 * plain_psf[:, c, c]).all()
    # the floor's self-simulations take the observed survey's PSF, not the mock descriptor's:
    # a wrong mock PSF is a difference for the axes to find, not part of the pipeline's floor
    floor_dir = Path(run["paths"]["floor"]).parent
    self_psf = imageset.read(floor_dir / "self_simulation.h5").psf
    k = self_psf.shape[-1] // 2
    np.testing.assert_allclose(self_psf[:, k, k], plain_psf[:, c, c], rtol=1e-5)
    plain_self = imageset.read(Path(plain["paths"]["floor"]).parent / "self_simulation.h5")
    np.testing.assert_allclose(self_psf, plain_self.psf, rtol=1e-5, atol=1e-8)
    # a descriptor with other pixels cannot stand in for the survey
    (ws / "observed" / "hscpix.toml").write_text(
        text.replace('name = "hsc"', 'name = "hscpix"').replace("pixel_scale_arcsec = 0.168",
                                                                "pixel_scale_arcsec = 0.2"))
    assert main([*base, "--mock-survey", "hscpix"]) == 2


def test_mocks_and_floor_render_on_the_same_oversampled_kernel(cli_run):
    """The mocks record the sub-pixel grid they were drawn on; the floor renders on it too."""
    from simcompare.floor import _mock_setup
    from simcompare.mock.render import RENDER_OVERSAMPLE
    from simcompare.psf import PSF

    ws = cli_run[0]
    run = json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())
    mocks = imageset.read(run["paths"]["mocks"], index=np.zeros(1, np.int64))
    config = mocks.provenance["config"]
    assert RENDER_OVERSAMPLE == 3 and config["oversample"] == 3
    assert "3 x 3 sub-pixels" in mocks.provenance["pixel_response"]
    survey = registry.find_survey("hsc", workspace=ws)
    setup = _mock_setup(Path(run["paths"]["mocks"]), survey=survey, workspace=ws)
    want = PSF.from_survey(survey, bands=mocks.bands, workspace=ws,
                           kernel_size=2 * config["stamp_size"] + 1, oversample=3)
    assert setup["oversample"] == 3
    # the kernel is the optical PSF on the sub-pixel grid, not the effective PSF the
    # ImageSet records (which holds the pixel response that the deposit already applies)
    np.testing.assert_array_equal(setup["kernel"], want.render_kernel())
    np.testing.assert_allclose(setup["psf"], mocks.psf, rtol=1e-6, atol=1e-9)
