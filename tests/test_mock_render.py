"""End-to-end tests of simcompare.mock.render on a small demo simulation (TNG layout)."""

from __future__ import annotations

import numpy as np
import pytest
from _demo_descriptor import tiny_demo_toml

from simcompare import imageset
from simcompare.mock import render

DEMO_TOML = tiny_demo_toml(n_galaxies=10)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    (ws / "sims").mkdir()
    (ws / "sims" / "tinydemo.toml").write_text(DEMO_TOML)
    return ws


@pytest.fixture(scope="module")
def reference(workspace):
    out = render("tinydemo", "hsc", out=workspace / "ref.h5", workspace=workspace, stamp_size=32,
                 seed=3, batch_size=3)
    return imageset.read(out)


def test_render_writes_a_complete_mock_imageset(reference):
    s = reference
    assert s.kind == "mock" and s.survey == "hsc" and s.bands == ("g", "r", "i", "z", "y")
    n = len(s)
    assert n >= 5
    assert s.images.shape == (n, 5, 32, 32) and s.variance.shape == s.images.shape
    assert s.psf.shape == (5, 25, 25)
    np.testing.assert_allclose(s.psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.all(s.variance > 0)
    cat = s.catalog
    assert len(set(cat["object_id"].tolist())) == n
    assert set(cat["projection"]) == {"random"}
    assert np.all(cat["n_star_particles"] >= 100)
    for col in ("stellar_mass_msun", "redshift", "mag_i", "view_z", "smoothing_median_arcsec"):
        assert col in cat
    prov = s.provenance
    assert prov["observation_redshift"] == pytest.approx(0.3)
    assert prov["redshift_source"] == "simulation"
    assert prov["sps"]["filters"] == ["hsc2017-g", "hsc2017-r", "hsc2017-i", "hsc2017-z",
                                      "hsc2017-y"]
    assert prov["seeds"]["render"] == 3
    # every selected galaxy is either rendered or counted by reason
    assert prov["n_rendered"] + sum(prov["exclusions"].values()) == prov["n_selected"]
    # a 1e10 Msun galaxy at z=0.3 is a i ~ 19-21 mag source
    assert np.all((cat["mag_i"] > 16) & (cat["mag_i"] < 24))
    # images are noisy around a positive galaxy: the centre is well above the sky
    centre = s.images[:, 2, 14:18, 14:18].mean(axis=(1, 2))
    assert np.all(centre > 5 * np.sqrt(s.variance[:, 2, 0, 0]))


def test_interrupted_render_resumes_without_loss_or_duplicates(workspace, reference, monkeypatch):
    import importlib

    mod = importlib.import_module("simcompare.mock.render")  # the module, not the function
    real = mod._render_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = workspace / "resumed.h5"
    monkeypatch.setattr(mod, "_render_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        render("tinydemo", "hsc", out=out, workspace=workspace, stamp_size=32, seed=3,
               batch_size=3)
    part = out.with_name(out.name + ".part")
    assert part.exists() and not out.exists()
    monkeypatch.setattr(mod, "_render_batch", real)
    render("tinydemo", "hsc", out=out, workspace=workspace, stamp_size=32, seed=3, batch_size=3)
    assert not part.exists()
    got = imageset.read(out)
    ids = got.catalog["object_id"]
    assert len(ids) == len(set(ids.tolist()))
    assert sorted(ids.tolist()) == sorted(reference.catalog["object_id"].tolist())
    order = np.argsort(ids)
    ref_order = np.argsort(reference.catalog["object_id"])
    np.testing.assert_array_equal(got.images[order], reference.images[ref_order])
    assert got.provenance["exclusions"] == reference.provenance["exclusions"]


def test_dask_scheduler_gives_the_same_images(workspace, reference):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        out = render("tinydemo", "hsc", out=workspace / "dask.h5", workspace=workspace,
                     stamp_size=32, seed=3, batch_size=3, scheduler=cluster.scheduler_address)
    got = imageset.read(out)
    np.testing.assert_array_equal(got.catalog["object_id"], reference.catalog["object_id"])
    np.testing.assert_array_equal(got.images, reference.images)


def test_noise_free_face_on_render_and_options(workspace):
    out = render("tinydemo", "hsc", out=workspace / "clean.h5", workspace=workspace,
                 stamp_size=32, noise="none", projection="face-on", bands=("r", "i"),
                 redshift=0.2, n_galaxies=3)
    s = imageset.read(out)
    assert s.bands == ("r", "i") and len(s) <= 3
    assert s.provenance["observation_redshift"] == pytest.approx(0.2)
    assert s.provenance["redshift_source"] == "explicit"
    assert set(s.catalog["projection"]) == {"face-on"}
    # noise-free stamps hold the deposited flux less what the PSF scatters off the edges,
    # plus what it scatters in from just outside them (never more than all the light)
    deposited = s.catalog["flux_i"] * s.catalog["flux_fraction_in_stamp"]
    held = s.images[:, 1].sum(axis=(1, 2))
    assert np.all(held > 0.95 * deposited)
    assert np.all(held < s.catalog["flux_i"] * (1.0 + 1e-4))


def test_render_centres_and_masks_like_the_ingest_path(workspace, reference):
    """Random sub-pixel centres (as whole-pixel recentring leaves cutouts) and the shared mask."""
    cat = reference.catalog
    dx, dy = np.asarray(cat["centre_offset_x_pix"]), np.asarray(cat["centre_offset_y_pix"])
    assert np.all((dx >= -0.5) & (dx < 0.5) & (dy >= -0.5) & (dy < 0.5))
    assert np.std(dx) > 0.1 and np.std(dy) > 0.1
    assert reference.provenance["config"]["centring"].startswith("random sub-pixel offset")
    # the mask comes with the ingest path's neighbour search; its counts are in the catalogue
    assert reference.mask is not None and reference.mask.shape == reference.images.shape
    assert "prep_n_neighbour_pixels" in cat
    assert reference.provenance["config"]["neighbours"]["own_radius"] == 1.5


def test_bad_options_raise(workspace):
    from simcompare.errors import ConfigError

    with pytest.raises(ConfigError, match="projection"):
        render("tinydemo", "hsc", out=workspace / "x.h5", workspace=workspace, projection="top")
    with pytest.raises(ConfigError, match="band"):
        render("tinydemo", "hsc", out=workspace / "x.h5", workspace=workspace, bands=("q",))


@pytest.mark.slow
def test_process_pool_gives_the_same_images(workspace, reference):
    out = render("tinydemo", "hsc", out=workspace / "pool.h5", workspace=workspace,
                 stamp_size=32, seed=3, batch_size=3, workers=2)
    got = imageset.read(out)
    np.testing.assert_array_equal(got.images, reference.images)


def test_render_on_a_cluster_whose_worker_is_killed_matches_a_serial_render(
        workspace, reference, worker_killing_cluster):
    """A dask worker killed mid-render: the stage completes with identical output."""
    with worker_killing_cluster(workers=2) as cluster:
        out = render("tinydemo", "hsc", out=workspace / "killed.h5", workspace=workspace,
                     stamp_size=32, seed=3, batch_size=1, cluster=cluster)
        assert len(cluster.killed) == 1
    got = imageset.read(out)
    np.testing.assert_array_equal(got.catalog["object_id"], reference.catalog["object_id"])
    np.testing.assert_array_equal(got.images, reference.images)
