"""simcompare.morphology: statmorph measurements on galsim stamps with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simcompare.errors import ConfigError
from simcompare.imageset import ImageSet, write
from simcompare.morphology import failure_counts, measure, measure_stamp

SCALE = 0.168
BANDS = ("g", "r", "i")
COLOUR_WEIGHTS = (0.6, 0.8, 1.0)  # flux ratio of the bands


def render_galaxy(*, hlr: float, n: float = 1.0, flux: float = 3000.0, q: float = 0.7,
                  beta: float = 0.4, psf_fwhm: float = 0.7, sky_sigma: float = 1.0,
                  stamp: int = 32, offset: tuple[float, float] = (0.0, 0.0),
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, H, W) noisy image, its variance and the (B, P, P) effective PSF."""
    import galsim

    psf = galsim.Moffat(beta=3.0, fwhm=psf_fwhm)
    gal = galsim.Sersic(n=n, half_light_radius=hlr).shear(q=q, beta=beta * galsim.radians)
    img = np.empty((len(BANDS), stamp, stamp), np.float32)
    for b, w in enumerate(COLOUR_WEIGHTS):
        prof = galsim.Convolve(gal.withFlux(flux * w), psf)
        arr = prof.drawImage(nx=stamp, ny=stamp, scale=SCALE, offset=offset).array
        img[b] = arr + rng.normal(0.0, sky_sigma, arr.shape)
    psf_img = psf.drawImage(nx=15, ny=15, scale=SCALE).array
    psf_img = np.repeat((psf_img / psf_img.sum())[None], len(BANDS), axis=0).astype(np.float32)
    return img, np.full(img.shape, sky_sigma**2, np.float32), psf_img


def make_population(n: int, *, seed: int, size_scale: float = 1.0, psf_fwhm: float = 0.7,
                    sky_sigma: float = 1.0, stamp: int = 32) -> ImageSet:
    """A demo-like population: log M* uniform in [9.5, 11.5], size-mass relation, Sersic discs.

    Everything but ``size_scale``, ``psf_fwhm`` and ``sky_sigma`` is drawn from the
    seed in the same way, so populations differ only in the controlled property.
    """
    rng = np.random.default_rng(seed)
    logm = rng.uniform(9.5, 11.5, n)
    images, psf = [], None
    for lm in logm:
        hlr = 0.45 * 10 ** (0.25 * (lm - 10.5)) * 10 ** rng.normal(0, 0.08) * size_scale
        img, _, psf = render_galaxy(
            hlr=hlr, n=rng.uniform(0.8, 2.0), flux=600 * 10 ** (0.4 * (lm - 9.5)),
            q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, np.pi), psf_fwhm=psf_fwhm,
            sky_sigma=sky_sigma, stamp=stamp, rng=rng)
        images.append(img)
    images = np.stack(images)
    return ImageSet(
        images=images, catalog={"object_id": np.arange(n, dtype=np.int64) + 1000 * seed,
                                "stellar_mass_msun": 10**logm, "redshift": np.full(n, 0.3)},
        kind="observed", survey="test", bands=BANDS, pixel_scale_arcsec=SCALE, zero_point=27.0,
        variance=np.full(images.shape, sky_sigma**2, np.float32), psf=psf,
    )


def stamp_kw() -> dict:
    return {"bands": BANDS, "band": "i", "pixel_scale_arcsec": SCALE}


def test_half_light_radius_sersic_index_and_colour_recovered() -> None:
    rng = np.random.default_rng(0)
    rows = {}
    for hlr, n in ((0.4, 1.0), (1.0, 1.0), (0.7, 4.0)):
        img, var, psf = render_galaxy(hlr=hlr, n=n, flux=20000.0, psf_fwhm=0.5, rng=rng,
                                      stamp=48)
        rows[(hlr, n)] = measure_stamp(img, variance=var, psf=psf, **stamp_kw())
    for row in rows.values():
        assert row["failure_reason"] == "" and row["flag"] <= 1
        assert row["snr"] > 100
    small, large, dev = rows[(0.4, 1.0)], rows[(1.0, 1.0)], rows[(0.7, 4.0)]
    # circular r50 of an elliptical (q=0.7) profile convolved with a 0.5" PSF
    assert large["r_half_arcsec"] == pytest.approx(1.0, rel=0.2)
    assert small["r_half_arcsec"] < 0.75 * large["r_half_arcsec"]
    # Sersic fit with the PSF recovers the profile shape; concentration follows it
    assert small["sersic_n"] == pytest.approx(1.0, abs=0.4)
    assert dev["sersic_n"] > 2.5
    assert dev["concentration"] > large["concentration"] + 0.4
    assert large["ellipticity"] == pytest.approx(0.3, abs=0.1)  # 1 - q
    # aperture colour: F_g / F_r = 0.6 / 0.8
    assert large["colour_g_r"] == pytest.approx(-2.5 * math.log10(0.6 / 0.8), abs=0.05)
    assert large["colour_r_i"] == pytest.approx(-2.5 * math.log10(0.8 / 1.0), abs=0.05)


def test_failures_are_kept_with_reasons() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, (3, 32, 32)).astype(np.float32)
    var = np.ones_like(noise)
    blank = measure_stamp(noise, variance=var, **stamp_kw())
    assert blank["failure_reason"] in ("no_detection", "no_central_segment", "low_snr")
    assert blank["flag"] == 4 and math.isnan(blank["r_half_arcsec"])
    masked = measure_stamp(noise, variance=var, mask=np.ones(noise.shape, np.uint8), **stamp_kw())
    assert masked["failure_reason"] == "all_masked"
    img, var, psf = render_galaxy(hlr=0.3, flux=1500.0, offset=(12.0, 12.0), rng=rng)
    off = measure_stamp(img, variance=var, psf=psf, **stamp_kw())
    assert off["failure_reason"] == "no_central_segment"
    faint, var, psf = render_galaxy(hlr=0.5, flux=25.0, rng=rng)
    low = measure_stamp(faint, variance=var, psf=psf, min_snr=5.0, **stamp_kw())
    assert low["failure_reason"] in ("low_snr", "no_detection", "no_central_segment")


def test_masked_neighbour_pixels_do_not_break_measurement() -> None:
    rng = np.random.default_rng(2)
    img, var, psf = render_galaxy(hlr=0.6, flux=8000.0, rng=rng)
    ref = measure_stamp(img, variance=var, psf=psf, **stamp_kw())
    mask = np.zeros(img.shape, np.uint8)
    mask[:, 0:6, 0:6] = 1
    img2 = img.copy()
    img2[:, 0:6, 0:6] = np.nan  # bad pixels may hold anything when masked
    got = measure_stamp(img2, variance=var, mask=mask, psf=psf, **stamp_kw())
    assert got["failure_reason"] == ""
    assert got["r_half_arcsec"] == pytest.approx(ref["r_half_arcsec"], rel=0.05)


def test_measure_writes_parquet_and_keeps_every_row(tmp_path) -> None:
    iset = make_population(6, seed=3)
    blank = iset.images.copy()
    blank[2] = np.random.default_rng(0).normal(0, 1, blank[2].shape)  # an empty stamp
    iset = ImageSet(images=blank, catalog=iset.catalog, kind="mock", survey="test",
                    bands=BANDS, pixel_scale_arcsec=SCALE, zero_point=27.0,
                    variance=iset.variance, psf=iset.psf)
    path = write(tmp_path / "set.h5", iset)
    df = measure(path, out=tmp_path / "morph.parquet")
    back = pd.read_parquet(tmp_path / "morph.parquet")
    assert len(df) == len(back) == 6
    assert list(back["object_id"]) == list(iset.object_id)
    assert {"flag", "failure_reason", "r_half_arcsec", "sersic_n", "concentration", "asymmetry",
            "smoothness", "gini", "m20", "ellipticity", "snr", "colour_g_r", "colour_r_i",
            "stellar_mass_msun"} <= set(back.columns)
    assert back.loc[2, "failure_reason"] != "" and back.loc[2, "flag"] == 4
    counts = failure_counts(back)
    assert counts["measured"] == 5 and sum(v for k, v in counts.items()
                                          if not k.startswith("flag_")) == 6
    # a seeded subset is reproducible
    a = measure(path, out=None, max_images=3, seed=5)
    b = measure(path, out=None, max_images=3, seed=5)
    assert list(a["object_id"]) == list(b["object_id"]) and len(a) == 3
    with pytest.raises(ConfigError, match="band 'u'"):
        measure(path, out=None, band="u")
    with pytest.raises(ConfigError, match="max_images"):
        measure(path, out=None, max_images=0)


@pytest.mark.slow  # spawning workers re-imports statmorph (~3 s each)
def test_process_pool_gives_the_same_table() -> None:
    iset = make_population(4, seed=4)
    one = measure(iset, out=None, workers=1)
    two = measure(iset, out=None, workers=2, chunk_size=2)
    pd.testing.assert_frame_equal(one, two)


def test_morphology_on_a_cluster_with_a_killed_worker_matches_one_process(
        worker_killing_cluster) -> None:
    """A dask worker killed mid-stage: the table is that of an undisturbed run."""
    iset = make_population(24, seed=6)
    one = measure(iset, out=None, workers=1, chunk_size=4)
    with worker_killing_cluster(workers=2) as cluster:
        two = measure(iset, out=None, cluster=cluster, chunk_size=4)  # six tasks
        assert len(cluster.killed) == 1
    pd.testing.assert_frame_equal(one, two)


class _Workers:
    """A stand-in cluster: only what the task sizing reads."""

    def __init__(self, n: int | None) -> None:
        self.distributed, self.n_workers = n is not None, n or 1


def test_tasks_are_sized_to_the_workers() -> None:
    from simcompare.morphology import _chunk_size

    assert _chunk_size(384, "fast", _Workers(2)) == 48  # four tasks per worker
    assert _chunk_size(384, "fast", _Workers(1)) == 64  # at most 64 (one Sersic batch)
    assert _chunk_size(40, "fast", _Workers(4)) == 16  # at least 16 stamps a task
    assert _chunk_size(384, "fast", _Workers(None)) == 64  # in this process
    assert _chunk_size(20, "statmorph", _Workers(2)) == 3
    assert _chunk_size(10**5, "statmorph", _Workers(16)) == 8
