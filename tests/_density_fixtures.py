"""Small synthetic ImageSets for the density-model tests (built in memory, no data files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simcompare import imageset


def gaussian_psf(size: int = 7, sigma: float = 1.0) -> np.ndarray:
    """A centred, normalised Gaussian PSF sampled at pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    psf = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return (psf / psf.sum()).astype(np.float32)


def galaxy_imageset(
    path: Path, *, n: int = 64, bands: int = 2, size: int = 16, sky_sigma: float = 1.0,
    psf_sigma: float = 1.0, seed: int = 0, noise_scale: float = 1.0, mask_fraction: float = 0.0,
    id_offset: int = 0, point_fraction: float = 0.0,
) -> Path:
    """Smooth elliptical blobs (PSF-convolved Gaussians) plus Gaussian noise.

    ``point_fraction`` of each galaxy's flux is put in an unresolved nucleus at its
    centre, imaged as the PSF itself, so the images show the PSF's width directly.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    imgs = np.empty((n, bands, size, size), np.float32)
    c = (size - 1) / 2
    for i in range(n):
        flux = rng.uniform(80, 300)
        r = rng.uniform(1.0, 2.5)
        q = rng.uniform(0.5, 1.0)
        ang = rng.uniform(0, np.pi)
        dx, dy = xx - c - rng.uniform(-0.5, 0.5), yy - c - rng.uniform(-0.5, 0.5)
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        s2 = r**2 + psf_sigma**2
        prof = np.exp(-(u**2 / (s2 / q) + v**2 / (s2 * q)) / 2)
        prof /= prof.sum()
        if point_fraction:
            point = np.exp(-(dx**2 + dy**2) / (2 * psf_sigma**2))
            prof = (1 - point_fraction) * prof + point_fraction * point / point.sum()
        for b in range(bands):
            imgs[i, b] = flux * (0.6 + 0.4 * b) * prof
    var = np.full(imgs.shape, sky_sigma**2, np.float32)
    imgs += (rng.standard_normal(imgs.shape) * sky_sigma * noise_scale).astype(np.float32)
    mask = None
    if mask_fraction:
        mask = (rng.random(imgs.shape) < mask_fraction).astype(np.uint8)
        imgs[mask != 0] = np.nan
    s = imageset.ImageSet(
        images=imgs, catalog={"object_id": np.arange(n, dtype=np.int64) + id_offset,
                              "stellar_mass_msun": rng.uniform(1e9, 1e11, n)},
        kind="observed", survey="test", bands=tuple("gri"[:bands]), pixel_scale_arcsec=0.2,
        zero_point=27.0, variance=var, mask=mask,
        psf=np.stack([gaussian_psf(7, psf_sigma)] * bands),
    )
    return imageset.write(path, s)
