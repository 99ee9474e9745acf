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
        "--morphology-max", "25", "--seed", "3"]


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
    for stage in ("render", "observed", "train", "evaluate", "appearance", "morphology", "compare",
                  "report"):
        assert stage in run["timings_s"], stage

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
    stages = ("render", "observed", "train", "evaluate", "appearance", "morphology", "compare")
    assert all(second["cached"][s] for s in stages), second["cached"]
    assert second["stage_keys"] == first["stage_keys"]
    for path, mtime in mtimes.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"


def test_cli_and_api_give_identical_scores(cli_run, tmp_path):
    ws_cli, _ = cli_run
    ws = _workspace(tmp_path / "ws_api")
    cfg = ScoreConfig(sim="demo", survey="hsc", workspace=str(ws), n_galaxies=60, stamp_size=32,
                      levels=2, blocks=2, hidden=16, epochs=2, batch_size=32, n_bootstrap=100,
                      morphology_max=25, seed=3)
    report = score(cfg)
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
