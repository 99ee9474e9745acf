"""Sersic background: mixture accuracy, rendering against galsim (no_pixel), fit recovery."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import gammainc

from simcompare import imageset
from simcompare.density.background import (
    BROAD_CONDITIONS,
    SURVEY_CONDITIONS,
    ObservingConditions,
    _fft_size,
    _psf_hat,
    fit_sersic,
    render_sersic,
    scaled_psf,
    sersic_background_images,
    sersic_bn,
    sersic_mixture,
)
from simcompare.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0, 6.0])
def test_mixture_enclosed_flux(n: float) -> None:
    amp, var = sersic_mixture(n)
    b = sersic_bn(n)
    for r in (0.1, 0.3, 1.0, 2.0, 4.0):
        exact = gammainc(2 * n, b * r ** (1 / n))
        mix = float((amp * (1 - np.exp(-(r**2) / (2 * var)))).sum())
        assert mix == pytest.approx(exact, abs=5e-3)


def _galsim_case(n: float, re: float, q: float, pa: float, size: int = 32):
    galsim = pytest.importorskip("galsim")
    psf = galsim.Convolve(galsim.Moffat(beta=3, fwhm=3.0), galsim.Pixel(1.0)).drawImage(
        nx=21, ny=21, scale=1.0, method="no_pixel").array
    psf = (psf / psf.sum()).astype(np.float32)
    gal = galsim.Sersic(n=n, half_light_radius=re).shear(q=q, beta=pa * galsim.radians)
    img = galsim.Convolve(gal, galsim.InterpolatedImage(galsim.Image(psf, scale=1.0))).drawImage(
        nx=size, ny=size, scale=1.0, method="no_pixel", offset=(0.3, -0.2)).array
    g = math.atanh((1 - q) / (1 + q))
    # galsim's centre of an even image is at (size+1)/2 in 1-based pixels -> size/2 - 0.5
    params = [size / 2 - 0.5 + 0.3, size / 2 - 0.5 - 0.2, math.log(re),
              g * math.cos(2 * pa), g * math.sin(2 * pa), n]
    return img.astype(np.float32), psf, params


@pytest.mark.parametrize(("n", "re", "q", "pa"), [(1.0, 3.0, 0.6, 0.5), (4.0, 2.0, 0.8, 1.2)])
def test_render_matches_galsim_no_pixel(n, re, q, pa) -> None:
    """The effective PSF carries the pixel: the render equals galsim method='no_pixel'."""
    img, psf, params = _galsim_case(n, re, q, pa)
    nf = _fft_size(32, 21)
    model = render_sersic(torch.tensor([params]), _psf_hat(psf[None], nf), size=32, nf=nf)[0]
    assert np.abs(model.numpy() - img).max() < 0.01 * img.max()
    # an extra pixel convolution (pixel counted twice) would be visibly different
    import galsim

    doubled = galsim.Convolve(galsim.InterpolatedImage(galsim.Image(img, scale=1.0)),
                              galsim.Pixel(1.0)).drawImage(nx=32, ny=32, scale=1.0,
                                                           method="no_pixel").array
    assert np.abs(doubled - img).max() > 3 * np.abs(model.numpy() - img).max()


def test_fit_recovers_parameters() -> None:
    img, psf, truth = _galsim_case(2.5, 4.0, 0.5, -0.3)
    rng = np.random.default_rng(0)
    stack = np.stack([img * 500 + rng.normal(0, 1, img.shape) for _ in range(40)]).astype(np.float32)
    pars = fit_sersic(stack, np.ones_like(stack), psf)
    med = np.median(pars, axis=0)
    assert med[0] == pytest.approx(truth[0], abs=0.05)
    assert med[1] == pytest.approx(truth[1], abs=0.05)
    assert math.exp(med[2]) == pytest.approx(4.0, rel=0.1)
    assert med[5] == pytest.approx(2.5, abs=0.5)
    assert med[6] == pytest.approx(500.0, rel=0.05)  # total flux, including beyond the stamp


def test_background_images_keep_flux_and_noise(tmp_path) -> None:
    path = galaxy_imageset(tmp_path / "obs.h5", n=30, size=16, sky_sigma=2.0)
    s = imageset.read(path)
    bg, fits = sersic_background_images(s, s.images, rng=np.random.default_rng(1))
    assert bg.shape == s.images.shape and bg.dtype == np.float32
    assert list(fits["object_id"]) == list(s.object_id)
    # total flux is kept (sky noise averages out over the stamp) and the noise level too
    np.testing.assert_allclose(bg.sum((1, 2, 3)), s.images.sum((1, 2, 3)),
                               atol=6 * 2.0 * 16 * np.sqrt(2))
    edge = np.concatenate([bg[:, :, :2].ravel(), bg[:, :, -2:].ravel()])
    assert np.std(edge) == pytest.approx(2.0, rel=0.1)
    assert (fits["noise_scale"] == 1.0).all() and (fits["psf_scale"] == 1.0).all()


def _second_moment(img: np.ndarray) -> float:
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] - img.shape[0] // 2
    return float((img * (xx**2 + yy**2)).sum() / img.sum())


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.5])
def test_scaled_psf_width(scale: float) -> None:
    from _density_fixtures import gaussian_psf

    psf = gaussian_psf(21, 2.0)
    out = scaled_psf(psf, scale, 33)
    assert out.shape == (33, 33) and out.sum() == pytest.approx(1.0, abs=1e-6)
    assert (out >= 0).all()
    # a Gaussian of sigma 2 scaled by s has second moment 2 (2 s)^2 (+ interpolation blur)
    assert _second_moment(out) == pytest.approx(2 * (2.0 * scale) ** 2, rel=0.05)
    assert np.unravel_index(out.argmax(), out.shape) == (16, 16)


def test_conditions_draw_and_validation() -> None:
    noise, psf = BROAD_CONDITIONS.draw(30000, np.random.default_rng(0))
    changed_noise, changed_psf = noise != 1.0, psf != 1.0
    assert changed_noise.mean() == pytest.approx(1 / 3, abs=0.01)
    assert changed_psf.mean() == pytest.approx(1 / 3, abs=0.01)
    # independent: both changed in about 1/9 of the renderings
    assert (changed_noise & changed_psf).mean() == pytest.approx(1 / 9, abs=0.01)
    assert noise.min() >= 0.5 and noise.max() <= 2.5
    assert psf.min() >= 0.7 and psf.max() <= 1.5
    # log-uniform: the median of the changed factors is the geometric mean of the range
    assert np.median(noise[changed_noise]) == pytest.approx(math.sqrt(0.5 * 2.5), rel=0.03)
    n0, p0 = SURVEY_CONDITIONS.draw(100, np.random.default_rng(0))
    assert (n0 == 1).all() and (p0 == 1).all()
    with pytest.raises(ConfigError, match="noise_probability"):
        ObservingConditions(noise_probability=1.5)
    with pytest.raises(ConfigError, match="psf_scale"):
        ObservingConditions(psf_scale=(1.5, 0.7))


def test_broad_background_varies_noise_and_psf(tmp_path) -> None:
    path = galaxy_imageset(tmp_path / "obs.h5", n=300, size=24, sky_sigma=2.0, psf_sigma=1.2)
    s = imageset.read(path)
    bg, fits = sersic_background_images(s, s.images, rng=np.random.default_rng(3),
                                        conditions=BROAD_CONDITIONS)
    noise, psf = fits["noise_scale"].to_numpy(), fits["psf_scale"].to_numpy()
    assert 0.2 < (noise != 1).mean() < 0.47 and 0.2 < (psf != 1).mean() < 0.47
    # edge pixels are sky: their scatter follows each rendering's noise factor
    edge = np.concatenate([bg[:, :, :2].reshape(len(bg), -1), bg[:, :, -2:].reshape(len(bg), -1)],
                          axis=1)
    ratio = edge.std(1) / (2.0 * noise)
    assert np.median(ratio) == pytest.approx(1.0, rel=0.05)
    assert np.corrcoef(edge.std(1), noise)[0, 1] > 0.9
    # the PSF factor widens or narrows the rendering; flux is unchanged
    same_noise = noise == 1.0
    ref, _ = sersic_background_images(s, s.images, rng=np.random.default_rng(3),
                                      conditions=SURVEY_CONDITIONS)
    np.testing.assert_allclose(bg.sum((1, 2, 3))[same_noise], ref.sum((1, 2, 3))[same_noise],
                               atol=6 * 2.0 * 24 * np.sqrt(2))
    wide, narrow = same_noise & (psf > 1.3), same_noise & (psf < 0.8)
    peak = bg.max((1, 2, 3)) / np.clip(ref.max((1, 2, 3)), 1e-6, None)
    assert wide.any() and narrow.any()
    assert np.median(peak[wide]) < 0.95 < 1.0 < np.median(peak[narrow])


def test_broad_background_with_per_image_psfs(tmp_path) -> None:
    import dataclasses

    from _density_fixtures import gaussian_psf

    s = imageset.read(galaxy_imageset(tmp_path / "obs.h5", n=40, size=16))
    psf = np.stack([np.stack([gaussian_psf(7, 0.9 + 0.01 * i)] * 2) for i in range(40)])
    s = dataclasses.replace(s, psf=psf.astype(np.float32))
    bg, fits = sersic_background_images(s, s.images, rng=np.random.default_rng(0),
                                        conditions=BROAD_CONDITIONS)
    assert bg.shape == s.images.shape and np.isfinite(bg).all()
    assert (fits["psf_scale"] != 1).any()
    # each image is rendered with its own PSF: same fit and noise, only the PSF rescaled
    ref, _ = sersic_background_images(s, s.images, rng=np.random.default_rng(0),
                                      conditions=SURVEY_CONDITIONS)
    same = (fits["psf_scale"] == 1.0).to_numpy() & (fits["noise_scale"] == 1.0).to_numpy()
    # (the broad set renders on a larger FFT grid for the widened PSFs, so the periodic
    # wrap-around of the profiles' wings differs: ~1e-3 in pixels of flux up to ~20)
    np.testing.assert_allclose(bg[same], ref[same], rtol=1e-5, atol=3e-3)
    assert not np.allclose(bg[~same], ref[~same], atol=1e-2)
