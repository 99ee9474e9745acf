"""Classifier two-sample test, appearance embedding, alignment fraction, occlusion maps."""

from __future__ import annotations

import numpy as np
import pytest

from simcompare.c2st import C2STOptions, auroc_with_ci, classifier_two_sample_test, preprocess
from simcompare.embedding import EmbeddingOptions, alignment_fraction, embed, nearest_observed
from simcompare.errors import ConfigError

SIZE = 16
SPEC = {"kind": "chain", "steps": [{"kind": "band_scale", "scale": [1.0], "shift": [0.0]},
                                   {"kind": "asinh", "softening": 10.0}]}


def _galaxies(n: int, rng: np.random.Generator, *, clump: float = 0.0, scale: float = 1.0,
              noise: bool = True, params: np.ndarray | None = None, flux: tuple = (150, 400)):
    """1-band elliptical Gaussians (sky sigma 1) with an optional off-centre clump."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float) - (SIZE - 1) / 2
    if params is None:
        params = np.column_stack([rng.uniform(*flux, n), rng.uniform(1.2, 3.0, n),
                                  rng.uniform(0.4, 1.0, n), rng.uniform(0, np.pi, n),
                                  rng.uniform(-3, 3, n), rng.uniform(-3, 3, n)])
    out = np.empty((len(params), 1, SIZE, SIZE), np.float32)
    for i, (flux, r, q, ang, cx, cy) in enumerate(params):
        r = r * scale
        u = xx * np.cos(ang) + yy * np.sin(ang)
        v = -xx * np.sin(ang) + yy * np.cos(ang)
        prof = np.exp(-0.5 * (u**2 / (r**2 / q) + v**2 / (r**2 * q)))
        img = (1 - clump) * flux * prof / prof.sum()
        if clump:
            c = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / 0.8**2)
            img = img + clump * flux * c / c.sum()
        out[i, 0] = img + (rng.standard_normal(img.shape) if noise else 0.0)
    return out, params


FAST = C2STOptions(n_folds=4, epochs=6, width=8, max_per_class=120)


def test_classifier_test_detects_clumps_and_not_the_same_population():
    rng = np.random.default_rng(0)
    obs, _ = _galaxies(240, rng)
    same, _ = _galaxies(120, rng)
    clumpy, _ = _galaxies(120, rng, clump=0.3)
    x_obs = preprocess(obs, SPEC)
    kw = {"obs_ids": np.arange(240), "opts": FAST, "n_bootstrap": 200, "seed": 1}
    res = classifier_two_sample_test(preprocess(clumpy, SPEC), x_obs, sim_ids=np.arange(120) + 1000,
                                     **kw)
    assert res["value"] > 0.9 and res["detected"]
    assert res["ci"][0] <= res["value"] <= res["ci"][1]
    assert res["null"]["ci"][0] < 0.5 < res["null"]["ci"][1] or abs(res["null"]["value"] - 0.5) < 0.1
    per = res["per_galaxy"]
    assert len(per["p_simulated"]) == res["n"]["sim"] + res["n"]["observed"] == 240
    assert np.isfinite(per["p_simulated"]).all() and set(np.unique(per["fold"])) == {0, 1, 2, 3}
    # the simulated galaxies get the higher out-of-fold probabilities
    is_sim = per["sample"] == "sim"
    assert per["p_simulated"][is_sim].mean() > per["p_simulated"][~is_sim].mean()
    res_same = classifier_two_sample_test(preprocess(same, SPEC), x_obs,
                                          sim_ids=np.arange(120) + 1000, **kw)
    assert abs(res_same["value"] - 0.5) < 0.12
    assert not res_same["detected"]


def test_auroc_with_ci_direction_and_folds():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    p = np.r_[np.full(50, 0.9), np.full(50, 0.1)]
    assert auroc_with_ci(p, y, n_bootstrap=50, rng=rng)["value"] == 1.0
    assert auroc_with_ci(1 - p, y, n_bootstrap=50, rng=rng)["value"] == 0.0
    fold = np.arange(100) % 2
    r = auroc_with_ci(rng.random(100), y, n_bootstrap=200, rng=rng, fold=fold)
    assert len(r["per_fold"]) == 2 and r["value"] == pytest.approx(np.mean(r["per_fold"]))


def test_classifier_test_needs_enough_galaxies():
    x = np.zeros((6, 1, SIZE, SIZE), np.float32)
    with pytest.raises(ConfigError, match="at least 4 galaxies per sample"):
        classifier_two_sample_test(x[:3], x, sim_ids=np.arange(3), obs_ids=np.arange(6),
                                   opts=FAST, n_bootstrap=10)


def test_nearest_lookalike_by_appearance_is_the_noise_free_twin():
    """Each noisy simulated galaxy's nearest observed look-alike is its own noise-free twin,
    turned by a rotation or reflection, among twins and other observed galaxies."""
    rng = np.random.default_rng(5)
    sim, params = _galaxies(60, rng, clump=0.2, flux=(800, 2000))
    twins, _ = _galaxies(60, rng, clump=0.2, noise=False, params=params)
    for i, k in enumerate(rng.integers(0, 8, 60)):
        t = np.rot90(twins[i], k % 4, axes=(1, 2))
        twins[i] = np.flip(t, axis=2) if k >= 4 else t
    others, _ = _galaxies(200, rng, clump=0.2, flux=(800, 2000))
    x_sim, x_pool = preprocess(sim, SPEC), preprocess(np.concatenate([twins, others]), SPEC)
    emb = embed(np.concatenate([x_sim, x_pool]), opts=EmbeddingOptions(), seed=0)
    z = emb["dihedral"]
    idx, dist = nearest_observed(z[:, :60], z[0, 60:], k=3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(60))
    assert (np.diff(dist, axis=1) >= 0).all()
    # a stellar-mass window excludes look-alikes outside it
    mass_q = np.full(60, 1e10)
    mass_p = np.r_[np.full(60, 1e12), np.full(200, 1e10)]
    idx_w, _ = nearest_observed(z[:, :60], z[0, 60:], k=1, query_mass=mass_q, pool_mass=mass_p,
                                mass_window_dex=0.5)
    assert (idx_w[:, 0] >= 60).all()


def test_alignment_fraction_same_and_different_populations():
    rng = np.random.default_rng(7)
    obs, _ = _galaxies(300, rng)
    same, _ = _galaxies(80, rng)
    big, _ = _galaxies(80, rng, scale=2.0)
    xs = [preprocess(a, SPEC) for a in (same, big, obs)]
    z = embed(np.concatenate(xs), seed=0)["dihedral"]
    z_same, z_big, z_obs = z[:, :80], z[:, 80:160], z[:, 160:]
    a_same = alignment_fraction(z_same, z_obs, k=10, n_bootstrap=200, n_null=10)
    a_big = alignment_fraction(z_big, z_obs, k=10, n_bootstrap=200, n_null=10)
    assert a_same["value"] > 0.85 and a_same["null"]["value"] > 0.85
    assert a_big["value"] < 0.5
    assert a_big["ci"][1] < a_big["null"]["ci"][0]
    assert a_same["expected_rate"] == pytest.approx(300 / 379)


def test_occlusion_map_peaks_on_an_added_clump(tmp_path):
    """A density model trained on smooth galaxies; one galaxy gets one compact clump: the
    patch where smoothing raises the score most is the clump's."""
    from _density_fixtures import galaxy_imageset

    from simcompare import imageset
    from simcompare.density import train
    from simcompare.density.data import prepared_images
    from simcompare.mismatch import density_score, occlusion_maps

    obs = galaxy_imageset(tmp_path / "obs.h5", n=256, bands=1, size=16, seed=0)
    model = train(obs, out=tmp_path / "model", levels=2, blocks=2, hidden=16, epochs=4,
                  batch_size=32, background="none", device="cpu", seed=0)
    s = imageset.read(obs, index=np.arange(4))
    imgs = np.array(s.images)
    yy, xx = np.mgrid[0:16, 0:16]
    cy, cx = 5.5, 13.5  # centre of the patch (row 1, column 3) of a 4 x 4 grid (4 px patches)
    clump = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / 0.7**2)
    imgs[:, 0] += (40.0 * clump / clump.sum()).astype(np.float32)
    s = imageset.ImageSet(images=imgs, catalog=s.catalog, kind="mock", survey=s.survey,
                          bands=s.bands, pixel_scale_arcsec=s.pixel_scale_arcsec,
                          zero_point=s.zero_point, variance=s.variance, psf=s.psf)
    score, what = density_score(model)
    assert "log p_obs" in what
    filled = prepared_images(s, sigma=[1.0], seed=0)
    res = occlusion_maps(s, filled, score=score, grid=4, seed=0)
    assert res["maps"].shape == (4, 4, 4) and res["patch"] == 4
    np.testing.assert_allclose(res["score"], score(filled), rtol=1e-5, atol=1e-3)
    for m in res["maps"]:
        assert np.unravel_index(np.argmax(m), m.shape) == (1, 3), np.round(m, 1)
        assert m[1, 3] > 0


def test_least_typical_follows_the_gallery_rule():
    from simcompare.appearance import least_typical

    score = np.array([0.0, 5.0, -7.0, np.nan, 1.0])
    np.testing.assert_array_equal(least_typical(score, np.array([0.0, 0.0]), 3), [2, 1, 4])


def test_anomalies_cli_end_to_end(tmp_path):
    """``simcompare anomalies`` on the demo survey sample: train-and-rank, then with --model."""
    import re

    import pandas as pd

    from simcompare import registry
    from simcompare.cli import main
    from simcompare.density import evaluate

    ws = tmp_path / "ws"
    (ws / "observed").mkdir(parents=True)
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    (ws / "observed" / "hsc.toml").write_text(text.replace("demo_n_galaxies = 1500",
                                                           "demo_n_galaxies = 120"))
    tiny = ["--stamp-size", "32", "--levels", "2", "--blocks", "2", "--hidden", "16",
            "--epochs", "2", "--n", "8", "--device", "cpu"]
    assert main(["anomalies", "--survey", "hsc", "--workspace", str(ws), *tiny]) == 0
    out = ws / "reports" / "anomalies_hsc"
    table = pd.read_parquet(out / "anomalies.parquet")
    ref = pd.read_parquet(out / "model" / "reference_scores.parquet")
    assert table["rank"].tolist() == list(range(1, 9))
    assert table["object_id"].tolist() == ref.sort_values("llr_nats", kind="stable")["object_id"].tolist()[:8]
    page = (out / "index.html").read_text()
    shown = [int(i) for i in re.findall(r'alt="anomalous observed galaxy (\d+)"', page)]
    assert shown == table["object_id"].tolist()
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', page))
    # with a given model every galaxy of the sample is ranked
    out2 = tmp_path / "with_model"
    assert main(["anomalies", "--survey", "hsc", "--workspace", str(ws), "--model", str(out / "model"),
                 "--out", str(out2), "--n", "5", "--device", "cpu"]) == 0
    scored = evaluate(out / "model", out2 / "observed.h5", out=None, device="cpu")
    assert len(scored) == 120
    expected = scored.sort_values("llr_nats", kind="stable")["object_id"].tolist()[:5]
    assert pd.read_parquet(out2 / "anomalies.parquet")["object_id"].tolist() == expected
