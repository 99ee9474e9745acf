"""Tests of the shared stamp preprocessing (simcompare.stamps)."""

from __future__ import annotations

import numpy as np
import pytest

from simcompare.errors import ConfigError, DataFormatError, RangeError
from simcompare.stamps import (
    HSC_MASK_PLANES,
    NeighbourConfig,
    StampMask,
    bad_pixels,
    crop_or_pad,
    prepare_psf,
    preprocess_stamp,
)


def _gauss(size: int, x: float, y: float, sigma: float, flux: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    g = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)
    return flux * g / g.sum()


def _scene(rng: np.random.Generator, *, size: int = 48, neighbour: bool = True, bands: int = 3):
    img = np.zeros((bands, size, size))
    c = (size - 1) / 2
    for b in range(bands):
        img[b] += _gauss(size, c, c, 2.5, 400.0)
        if neighbour:
            img[b] += _gauss(size, c + 13, c + 9, 1.8, 250.0)
    var = np.full(img.shape, 1.0)
    return img + rng.standard_normal(img.shape), var


def test_bad_pixels_uses_only_bad_planes():
    m = np.array([1 << HSC_MASK_PLANES["DETECTED"], 1 << HSC_MASK_PLANES["CR"],
                  (1 << HSC_MASK_PLANES["NO_DATA"]) | (1 << HSC_MASK_PLANES["DETECTED"]),
                  1 << HSC_MASK_PLANES["INEXACT_PSF"], 0])
    assert bad_pixels(m, planes=HSC_MASK_PLANES).tolist() == [False, True, True, False, False]
    # generic convention: any non-zero is bad
    assert bad_pixels(m).tolist() == [True, True, True, True, False]


def test_crop_or_pad_geometry():
    a = np.arange(25.0).reshape(5, 5)
    out, inside = crop_or_pad(a, size=7, x0=-1, y0=-1, fill=-1.0)
    assert out[1, 1] == a[0, 0] and out[5, 5] == a[4, 4]
    assert out[0, 0] == -1.0 and not inside[0, 0] and inside[1:6, 1:6].all()
    assert inside.sum() == 25


def test_recentring_puts_target_at_stamp_centre():
    rng = np.random.default_rng(0)
    size_in, size = 60, 32
    img = np.zeros((1, size_in, size_in))
    img[0] += _gauss(size_in, 20.0, 37.0, 1.5, 1000.0)
    var = np.full(img.shape, 1e-4)
    p = preprocess_stamp(img, variance=var, stamp_size=size, center=(20.0, 37.0), rng=rng,
                         mask_neighbours=False)
    peak = np.unravel_index(np.argmax(p.image[0]), p.image[0].shape)
    # even stamp: centre (15.5, 15.5); a whole-pixel shift (halves rounded up) puts the
    # peak on pixel 15, half a pixel below the centre
    assert peak == (15, 15)
    assert p.info["shift_pix"] == (5, 22)
    assert p.info["centre_offset_pix"] == (-0.5, -0.5)
    np.testing.assert_allclose(p.image.sum(), 1000.0, rtol=1e-3)  # flux kept (noise var 1e-4)


def test_padding_is_masked_and_filled_with_median_variance_noise():
    rng = np.random.default_rng(1)
    img = rng.normal(0, 2.0, (2, 20, 20))
    var = np.full(img.shape, 4.0)
    p = preprocess_stamp(img, variance=var, stamp_size=40, rng=rng, mask_neighbours=False)
    pad = (p.mask & StampMask.PADDED) != 0
    assert pad.sum() == 2 * (40 * 40 - 20 * 20)
    assert np.all(p.variance[pad] == 4.0)
    assert 1.8 < p.image[pad].std() < 2.2
    assert np.all(np.isfinite(p.image))
    assert p.image.dtype == np.float32 and p.mask.dtype == np.uint8


def test_nan_and_mask_bits_are_replaced_without_holes():
    rng = np.random.default_rng(2)
    size = 32
    img = np.zeros((1, size, size)) + _gauss(size, 15.5, 15.5, 3.0, 5000.0)
    var = np.full(img.shape, 0.01)
    mask = np.zeros(img.shape, np.int32)
    img[0, 15, 14] = np.nan                                   # NaN inside the galaxy
    mask[0, 16, 16] = 1 << HSC_MASK_PLANES["CR"]              # cosmic ray
    img[0, 16, 16] = 1e6
    mask[0, 3, 3] = 1 << HSC_MASK_PLANES["DETECTED"]          # informational only
    p = preprocess_stamp(img, variance=var, mask=mask, stamp_size=size, rng=rng,
                         mask_planes=HSC_MASK_PLANES, mask_neighbours=False)
    assert p.mask[0, 15, 14] == StampMask.BAD and p.mask[0, 16, 16] == StampMask.BAD
    assert p.mask[0, 3, 3] == 0
    # replaced by the local light (+ small noise), not by an empty hole or the spike
    truth = _gauss(size, 15.5, 15.5, 3.0, 5000.0)
    for y, x in ((15, 14), (16, 16)):
        assert abs(p.image[0, y, x] - truth[y, x]) < 0.3 * truth[y, x]  # smoothing bias at the peak


def test_neighbour_is_replaced_and_target_kept():
    rng = np.random.default_rng(3)
    img, var = _scene(rng)
    p = preprocess_stamp(img, variance=var, stamp_size=48, rng=rng)
    nb = (p.mask[0] & StampMask.NEIGHBOUR) != 0
    c = 23.5
    assert nb[int(c + 9), int(c + 13)]            # neighbour centre replaced
    assert not nb[23, 23] and not nb[24, 24]      # target untouched
    assert p.info["n_neighbours"] == 1
    # after replacement the neighbour region is pure noise (sigma 1)
    assert abs(p.image[:, nb].mean()) < 0.2
    assert 0.8 < p.image[:, nb].std() < 1.2
    np.testing.assert_array_equal(p.image[:, 23, 23], img[:, 23, 23].astype(np.float32))


def test_neighbour_variance_is_capped_at_the_sky_level():
    rng = np.random.default_rng(8)
    img, _ = _scene(rng)
    var = np.full(img.shape, 1.0) + np.clip(img, 0, None) / 5.0  # sky + source/gain
    p = preprocess_stamp(img, variance=var, stamp_size=48, rng=rng)
    nb = (p.mask[0] & StampMask.NEIGHBOUR) != 0
    assert nb.any() and np.all(p.variance[0][nb] <= np.median(var[0]) + 1e-6)
    assert p.variance[0][nb].max() < var[0][nb].max()
    keep = p.mask[0] == 0
    np.testing.assert_allclose(p.variance[0][keep], var[0][keep], rtol=1e-6)


def test_no_neighbour_means_nothing_replaced():
    rng = np.random.default_rng(4)
    img, var = _scene(rng, neighbour=False)
    p = preprocess_stamp(img, variance=var, stamp_size=48, rng=rng)
    assert p.info["n_neighbour_pixels"] == 0
    np.testing.assert_array_equal(p.image, img.astype(np.float32))


def test_clumps_inside_a_galaxy_are_not_cut_off():
    """Star-forming clumps (a few % of the light each) stay with their galaxy."""
    size = 48
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - c, yy - c)
    disc = np.exp(-r / 4.0)
    disc *= 3000.0 / disc.sum()
    clumps = sum(_gauss(size, c + dx, c + dy, 1.2, 150.0) for dx, dy in ((5, 2), (-4, 5), (2, -6)))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        img = (disc + clumps)[None] + rng.standard_normal((1, size, size))
        p = preprocess_stamp(img, variance=np.ones_like(img), stamp_size=size, rng=rng)
        assert p.info["n_neighbour_pixels"] == 0, seed
        # ... while a detached companion of the same brightness as a clump is removed
        img2 = img + _gauss(size, c + 17, c - 15, 1.2, 150.0)[None]
        p2 = preprocess_stamp(img2, variance=np.ones_like(img), stamp_size=size, rng=rng)
        assert (p2.mask[0, int(c - 15), int(c + 17)] & StampMask.NEIGHBOUR) != 0, seed


def test_deblended_clumps_stay_with_their_galaxy_and_blended_companions_go():
    """Clumps bright enough for the deblender to split off are the galaxy's own structure.

    Three clumps holding 23% of the light, 6-8 px from the centre of a disc of scale 4 px:
    the deblender cuts them off the galaxy; they are fainter than its core and lie
    within ``own_radius`` half-light radii, so they stay. With ``own_radius = 0`` (every
    deblended piece a neighbour) they are replaced by noise, which is what the closure
    benchmark found on isolated clumpy galaxies. A blended companion (60% of the disc's
    light, 16 px out) is still removed.
    """
    size = 48
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    disc = np.exp(-np.hypot(xx - c, yy - c) / 4.0)
    disc *= 3000.0 / disc.sum()
    clumps = sum(_gauss(size, c + dx, c + dy, 1.2, 300.0) for dx, dy in ((6, 2), (-5, 6), (2, -8)))
    comp = np.exp(-np.hypot(xx - c - 13, yy - c + 9) / 2.0)
    comp *= 1800.0 / comp.sum()
    # own_radius 3 (the default, 1.5, is set by the demo's neighbours in 32-pixel stamps)
    own = NeighbourConfig(own_radius=3.0)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        img = (disc + clumps)[None] + rng.standard_normal((1, size, size))
        var = np.ones_like(img)
        p = preprocess_stamp(img, variance=var, stamp_size=size, rng=np.random.default_rng(0),
                             neighbours=own)
        assert p.info["n_neighbour_pixels"] == 0, seed
        old = preprocess_stamp(img, variance=var, stamp_size=size, rng=np.random.default_rng(0),
                               neighbours=NeighbourConfig(own_radius=0.0))
        assert old.info["n_neighbour_pixels"] > 200, seed
        p2 = preprocess_stamp(img + comp[None], variance=var, stamp_size=size, rng=np.random.default_rng(0),
                              neighbours=own)
        assert (p2.mask[0, int(c - 9), int(c + 13)] & StampMask.NEIGHBOUR) != 0, seed
        assert not (p2.mask[0, int(c + 2), int(c + 6)] & StampMask.NEIGHBOUR), seed  # a clump


def test_band_axis_and_input_checks():
    rng = np.random.default_rng(6)
    img, var = _scene(rng, neighbour=False)
    p0 = preprocess_stamp(img, variance=var, stamp_size=40, rng=np.random.default_rng(1))
    p2 = preprocess_stamp(np.moveaxis(img, 0, 2), variance=np.moveaxis(var, 0, 2), stamp_size=40,
                          rng=np.random.default_rng(1), band_axis=2)
    np.testing.assert_array_equal(np.moveaxis(p2.image, 2, 0), p0.image)
    with pytest.raises(ConfigError, match="Generator"):
        preprocess_stamp(img, variance=var, stamp_size=40, rng=0)
    with pytest.raises(DataFormatError, match="variance"):
        preprocess_stamp(img, variance=var[:, :10], stamp_size=40, rng=rng)
    with pytest.raises(RangeError):
        preprocess_stamp(img, variance=var, stamp_size=2, rng=rng)


def test_all_bad_band_is_reported():
    rng = np.random.default_rng(7)
    img, var = _scene(rng, neighbour=False, bands=2)
    img[1] = np.nan
    p = preprocess_stamp(img, variance=var, stamp_size=48, rng=rng)
    assert p.info["all_bad_bands"] == [1]
    assert np.all(p.mask[1] != 0) and np.all(np.isfinite(p.image))


def test_prepare_psf_centres_normalises_and_resamples():
    import galsim

    moff = galsim.Moffat(beta=3.5, fwhm=0.7)
    ref = moff.drawImage(nx=41, ny=41, scale=0.168).array
    out = prepare_psf(ref, size=25)
    assert out.shape == (25, 25) and out.dtype == np.float32
    assert np.unravel_index(np.argmax(out), out.shape) == (12, 12)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-6)
    # an even-sized, off-centre PSF is re-centred on its centroid
    even = moff.drawImage(nx=40, ny=40, scale=0.168, offset=(0.5, 0.5)).array
    out2 = prepare_psf(even, size=25)
    assert np.unravel_index(np.argmax(out2), out2.shape) == (12, 12)
    np.testing.assert_allclose(out2, out, atol=2e-3)
    # a PSF sampled at 0.084"/px resampled to 0.168"/px matches the direct drawing
    fine = moff.drawImage(nx=81, ny=81, scale=0.084).array
    out3 = prepare_psf(fine, size=25, psf_pixel_scale_arcsec=0.084, pixel_scale_arcsec=0.168)
    np.testing.assert_allclose(out3, out, atol=3e-3)
    with pytest.raises(RangeError):
        prepare_psf(ref, size=24)
    with pytest.raises(DataFormatError):
        prepare_psf(np.zeros((11, 11)), size=11)


def test_real_hsc_blend_neighbours_masked(shared_data):
    """hsc_cosmos_35: the bright galaxy at (31, 36) keeps itself and loses its neighbour."""
    d = np.load(shared_data / "scarlet-hsc" / "hsc_cosmos_35.npz")
    rng = np.random.default_rng(0)
    p = preprocess_stamp(d["images"], variance=d["variance"], mask=d["mask"], stamp_size=48,
                         center=(31.0, 36.0), rng=rng, mask_planes=HSC_MASK_PLANES)
    x0, y0 = p.info["shift_pix"]
    nb = (p.mask[2] & StampMask.NEIGHBOUR) != 0
    # the other bright galaxy (catalogue x=14, y=33) is replaced, the target centre kept
    assert nb[33 - y0, 14 - x0]
    assert not nb[36 - y0, 31 - x0]
    assert p.info["n_neighbours"] >= 1
    np.testing.assert_allclose(p.image[2, 36 - y0, 31 - x0], d["images"][2, 36, 31], rtol=1e-6)
    # the HSC INTRP/CR pixels of the input are flagged bad
    bad_in = ((d["mask"] & ((1 << 2) | (1 << 3))) != 0).sum()
    assert bad_in > 0 and ((p.mask & StampMask.BAD) != 0).sum() > 0
