"""RealSim-style files score through `score` with both axes; `measure` and `compare --morphology`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from _image_fixtures import HSC_FILTERS, images_descriptor, write_realsim_hsc

from simcompare import registry
from simcompare.cli import main

TINY = ["--stamp-size", "32", "--levels", "2", "--blocks", "2", "--hidden", "16", "--epochs", "2",
        "--batch-size", "32", "--n-bootstrap", "50", "--morphology-max", "20", "--seed", "3",
        "--classifier-epochs", "5"]


def test_realsim_hsc_files_score_with_both_axes_and_verbs(tmp_path):
    ws = tmp_path
    (ws / "observed").mkdir()
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    (ws / "observed" / "hsc.toml").write_text(text.replace("demo_n_galaxies = 1500", "demo_n_galaxies = 100"))
    (ws / "sims").mkdir()
    (ws / "hsc").mkdir()
    rng = np.random.default_rng(2)
    for k in range(12):
        write_realsim_hsc(ws / "hsc" / f"realsim_{600 + k}_v0.fits", rng=rng, size=48,
                          hlr_arcsec=0.4 + 0.05 * k, sigma_nmgy=0.005,
                          mags={b: m + 0.1 * (k % 4) for b, m in
                                {"g": 21.6, "r": 21.0, "i": 20.7, "z": 20.5, "y": 20.4}.items()})
    (ws / "sims" / "realsim-hsc.toml").write_text(images_descriptor(
        name="realsim-hsc", path="hsc", pattern="realsim_*.fits", bands=HSC_FILTERS, psf_convolved=True))

    code = main(["score", "--sim", "realsim-hsc", "--survey", "hsc", "--workspace", str(ws), *TINY])
    assert code == 0
    run = json.loads((ws / ".simcompare" / "runs" / "realsim-hsc_hsc" / "run.json").read_text())
    report = ws / "reports" / "realsim-hsc_hsc"
    assert (report / "index.html").is_file()
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n"]["sim"] == 12
    axes = summary["axes"]
    assert "fine_structure" in axes and "global_structure" in axes
    assert axes["global_structure"].get("value") is not None
    morph = pd.read_parquet(run["paths"]["morphology_sim"])
    assert len(morph) == 12

    # the verbs alone give both axes: measure both image sets, compare with --morphology
    sim_m, ref_m = ws / "sim_morph.parquet", ws / "ref_morph.parquet"
    assert main(["measure", "--images", run["paths"]["mocks"], "--out", str(sim_m), "--seed", "3"]) == 0
    assert main(["measure", "--images", run["paths"]["observed_test"], "--out", str(ref_m),
                 "--max-images", "20", "--seed", "3"]) == 0
    m = pd.read_parquet(sim_m)
    assert len(m) == 12 and {"object_id", "r_half_arcsec", "sersic_n", "gini"} <= set(m.columns)
    assert np.isfinite(m["r_half_arcsec"]).sum() >= 6
    out = ws / "verb_summary.json"
    assert main(["compare", "--scores", run["paths"]["sim_scores"], "--reference",
                 run["paths"]["reference_scores"], "--morphology", str(sim_m),
                 "--morphology-reference", str(ref_m), "--n-bootstrap", "50", "--out", str(out)]) == 0
    verb = json.loads(out.read_text())
    assert verb["axes"]["global_structure"].get("value") is not None
    assert "r_half_arcsec" in verb["morphology"]
    # one of the two morphology tables alone is a one-line error
    assert main(["compare", "--scores", run["paths"]["sim_scores"], "--reference",
                 run["paths"]["reference_scores"], "--morphology", str(sim_m),
                 "--out", str(ws / "x.json")]) == 2
    assert not (ws / "x.json").exists()
