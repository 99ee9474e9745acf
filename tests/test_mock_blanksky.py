"""Tests of blank-sky insertion (simcompare.mock.blanksky and render(noise="blank-sky"))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _demo_descriptor import tiny_demo_toml
from conftest import Z_OBS  # the shared table's redshift

from simcompare import imageset
from simcompare.config import Cosmology
from simcompare.errors import ConfigError, DataFormatError, DataNotFoundError
from simcompare.mock import PSF, BlankSky, Camera, NoiseModel, RenderSpec, render, render_galaxy
from simcompare.observed.cutouts import write_hsc_band
from simcompare.sims.base import StarParticles
from simcompare.stamps import HSC_MASK_PLANES, StampMask, bad_pixels

BANDS = ("g", "r", "i", "z", "y")
SIGMA = {"g": 0.03, "r": 0.04, "i": 0.05, "z": 0.1, "y": 0.2}
STAMP = 32
FIELD = (40, 44)  # (H, W): every 32-pixel region covers the defect below
DEFECT = (slice(15, 20), slice(17, 23))  # rows, columns of a masked CR + BAD block


def write_fields(root, *, n_fields=2, scale=0.168, bands=BANDS, seed=0):
    rng = np.random.default_rng(seed)
    bit = (1 << HSC_MASK_PLANES["CR"]) | (1 << HSC_MASK_PLANES["BAD"])
    truth = {}
    for f in range(n_fields):
        fid = f"field{f}"
        for band in bands:
            img = SIGMA[band] * rng.standard_normal(FIELD)
            img[DEFECT] = 500.0  # a cosmic ray: huge values, masked
            var = np.full(FIELD, SIGMA[band] ** 2)
            mask = np.zeros(FIELD, np.int32)
            mask[DEFECT] = bit
            mask[0, :] |= 1 << HSC_MASK_PLANES["DETECTED"]  # informational, not bad
            write_hsc_band(root / fid / f"{band}.fits", image=img, variance=var, mask=mask,
                           band=band, ra=150.0 + f, dec=2.0, pixel_scale_arcsec=scale)
            truth[fid, band] = (img.astype(np.float32), var.astype(np.float32), mask)
    return truth


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("blank")
    truth = write_fields(root)
    return root, truth


def galaxy(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    r = rng.exponential(2.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.c_[r * np.cos(phi), r * np.sin(phi), rng.normal(0, 0.2, n)]
    m = np.full(n, 1e10 / n)
    return StarParticles(positions_kpc=pos, mass_msun=m, initial_mass_msun=m,
                         age_gyr=np.full(n, 3.0), metallicity=np.full(n, 0.02),
                         hsml_kpc=np.full(n, 0.4))


def make_spec(hsc, table, blank, *, gain=True, preprocess=False, seed=0):
    cam = Camera.at_redshift(stamp_size=STAMP, pixel_scale_arcsec=hsc.pixel_scale_arcsec,
                             redshift=Z_OBS, cosmology=Cosmology())
    noise = NoiseModel.from_survey(hsc, bands=BANDS, mode="blank-sky")
    if not gain:
        noise = NoiseModel(sky_sigma=noise.sky_sigma, gain=(0.0,) * 5, mode="blank-sky")
    return RenderSpec(bands=BANDS, camera=cam, table=table,
                      psf=PSF.from_survey(hsc, bands=BANDS).image, noise=noise, projection="z",
                      preprocess=preprocess, blank_sky=blank, seed=seed)


def region(truth, fid, x0, y0, plane):
    sl = (slice(y0, y0 + STAMP), slice(x0, x0 + STAMP))
    return np.stack([truth[fid, b][plane][sl] for b in BANDS])


def test_loads_hsc_layout_fields_in_band_order(fields):
    root, truth = fields
    blank = BlankSky.load(root, bands=("i", "g"), pixel_scale_arcsec=0.168, stamp_size=STAMP)
    assert blank.field_ids == ("field0", "field1")
    assert blank.images[0].shape == (2, *FIELD)
    np.testing.assert_array_equal(blank.images[1][0], truth["field1", "i"][0])
    np.testing.assert_array_equal(blank.variances[0][1], truth["field0", "g"][1])
    assert blank.mask_planes[0]["CR"] == HSC_MASK_PLANES["CR"]
    assert blank.files[0][0].endswith("i.fits")


def test_stamp_is_model_plus_the_real_field_pixels(hsc, table, fields):
    root, truth = fields
    blank = BlankSky.load(root, bands=BANDS, pixel_scale_arcsec=0.168, stamp_size=STAMP)
    st = render_galaxy(galaxy(), make_spec(hsc, table, blank, gain=False), object_id=7)
    fid, x0, y0 = (st.info["blank_sky_field"], st.info["blank_sky_x"], st.info["blank_sky_y"])
    assert fid in ("field0", "field1")
    assert 0 <= x0 <= FIELD[1] - STAMP and 0 <= y0 <= FIELD[0] - STAMP
    sky = region(truth, fid, x0, y0, 0)
    # no source noise (gain 0): image - noise-free model is the field's pixels
    expected = (st.model + sky.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(st.image, expected)
    np.testing.assert_allclose(st.image - st.model, sky, rtol=0,
                               atol=4 * np.finfo(np.float32).eps * np.abs(st.image).max())
    np.testing.assert_array_equal(st.variance, region(truth, fid, x0, y0, 1))
    assert st.model.sum() > 100 * SIGMA["i"]  # a real galaxy sits on top of the sky


def test_variance_adds_source_noise_and_masks_are_carried(hsc, table, fields):
    root, truth = fields
    blank = BlankSky.load(root, bands=BANDS, pixel_scale_arcsec=0.168, stamp_size=STAMP)
    st = render_galaxy(galaxy(), make_spec(hsc, table, blank), object_id=11)
    fid, x0, y0 = (st.info["blank_sky_field"], st.info["blank_sky_x"], st.info["blank_sky_y"])
    gain = np.asarray(hsc.band_values(hsc.noise.gain, "noise.gain"))[:, None, None]
    var = region(truth, fid, x0, y0, 1).astype(np.float64) + np.clip(st.model, 0, None) / gain
    np.testing.assert_allclose(st.variance, var, rtol=1e-6)
    # the source's own Poisson noise is there: the residual over the field is not zero
    # where the galaxy is bright, and has the source variance
    resid = st.image - st.model - region(truth, fid, x0, y0, 0)
    bright = st.model[2] > 0.5 * st.model[2].max()
    assert np.any(resid[2][bright] != 0)
    # masks: exactly the defect pixels (not the informational DETECTED row) are BAD
    raw = region(truth, fid, x0, y0, 2)
    expected = np.where(bad_pixels(raw, planes=HSC_MASK_PLANES), np.uint8(StampMask.BAD), 0)
    np.testing.assert_array_equal(st.mask, expected)
    assert st.mask.any()
    assert (st.mask != 0).sum() == 5 * 5 * 6


def test_same_seed_same_placement_and_placements_vary(hsc, table, fields):
    root, _ = fields
    blank = BlankSky.load(root, bands=BANDS, pixel_scale_arcsec=0.168, stamp_size=STAMP)
    spec = make_spec(hsc, table, blank, seed=5)
    gal = galaxy(800)
    a = render_galaxy(gal, spec, object_id=3)
    b = render_galaxy(gal, spec, object_id=3)
    key = ("blank_sky_field", "blank_sky_x", "blank_sky_y")
    assert [a.info[k] for k in key] == [b.info[k] for k in key]
    np.testing.assert_array_equal(a.image, b.image)
    places = {tuple(render_galaxy(gal, spec, object_id=i).info[k] for k in key) for i in range(12)}
    assert len(places) > 3
    assert {p[0] for p in places} == {"field0", "field1"}
    # the placement stream is separate: the orientation/noise stream is unchanged
    other = render_galaxy(gal, make_spec(hsc, table, blank, seed=6), object_id=3)
    assert [other.info[k] for k in key] != [a.info[k] for k in key]


def test_preprocessing_fills_the_masked_defect(hsc, table, fields):
    root, _ = fields
    blank = BlankSky.load(root, bands=BANDS, pixel_scale_arcsec=0.168, stamp_size=STAMP)
    st = render_galaxy(galaxy(), make_spec(hsc, table, blank, preprocess=True), object_id=2)
    assert st.mask is not None and st.mask.dtype == np.uint8
    bad = (st.mask & np.uint8(StampMask.BAD)) != 0
    assert bad.sum() == 5 * 5 * 6
    assert np.all(np.abs(st.image[bad]) < 50)  # the 500-count cosmic ray is gone
    assert np.all(np.isfinite(st.image))


def test_field_errors_name_the_file(tmp_path):
    write_fields(tmp_path / "wrongscale", n_fields=1, scale=0.2)
    with pytest.raises(DataFormatError, match=r"field0.g\.fits.*pixel scale"):
        BlankSky.load(tmp_path / "wrongscale", bands=BANDS, pixel_scale_arcsec=0.168,
                      stamp_size=STAMP)
    write_fields(tmp_path / "fewbands", n_fields=1, bands=("g", "r"))
    with pytest.raises(DataNotFoundError, match=r"i\.fits.*no band 'i'"):
        BlankSky.load(tmp_path / "fewbands", bands=BANDS, pixel_scale_arcsec=0.168,
                      stamp_size=STAMP)
    with pytest.raises(DataFormatError, match="smaller than the 64-pixel stamp"):
        BlankSky.load(tmp_path / "fewbands", bands=("g",), pixel_scale_arcsec=0.168,
                      stamp_size=64)


def test_cube_file_layout(tmp_path):
    from astropy.io import fits

    rng = np.random.default_rng(3)
    img = rng.normal(0, 0.05, (3, 36, 36)).astype(np.float32)
    var = np.full_like(img, 0.0025)
    mask = np.zeros(img.shape, np.int32)
    mask[1, 5, 5] = 1
    cd = {"CD1_1": -0.168 / 3600, "CD2_2": 0.168 / 3600, "CD1_2": 0.0, "CD2_1": 0.0}
    hdus = fits.HDUList([fits.PrimaryHDU(header=fits.Header({"BANDS": "r,i,g"})),
                         fits.ImageHDU(img, header=fits.Header(cd), name="IMAGE"),
                         fits.ImageHDU(mask, name="MASK"), fits.ImageHDU(var, name="VARIANCE")])
    hdus.writeto(tmp_path / "deep1.fits")
    blank = BlankSky.load(tmp_path / "deep1.fits", bands=("g", "r"), pixel_scale_arcsec=0.168,
                          stamp_size=STAMP)
    assert blank.field_ids == ("deep1",)
    np.testing.assert_array_equal(blank.images[0], img[[2, 0]])
    assert blank.mask_planes[0] is None
    with pytest.raises(DataFormatError, match=r"deep1\.fits.*lacks band"):
        BlankSky.load(tmp_path / "deep1.fits", bands=("z",), pixel_scale_arcsec=0.168,
                      stamp_size=STAMP)


def test_blank_sky_mode_without_fields_is_an_error(hsc, table):
    spec = make_spec(hsc, table, None)
    with pytest.raises(ConfigError, match="blank_sky"):
        render_galaxy(galaxy(200), spec, object_id=1)


DEMO_TOML = tiny_demo_toml(n_galaxies=4)


def test_render_with_blank_sky_writes_fields_masks_and_provenance(tmp_path, hsc):
    ws = tmp_path
    (ws / "sims").mkdir()
    (ws / "sims" / "tinydemo.toml").write_text(DEMO_TOML)
    write_fields(ws / "blank")
    src = Path(hsc.source).read_text()
    (ws / "observed").mkdir()
    (ws / "observed" / "hscblank.toml").write_text(
        src.replace('name = "hsc"', 'name = "hscblank"')
           .replace("[noise]\n", '[noise]\nblank_sky = "blank"\n'))
    with pytest.raises(ConfigError, match="blank_sky"):
        render("tinydemo", "hsc", out=ws / "x.h5", workspace=ws, stamp_size=STAMP,
               noise="blank-sky")
    out = render("tinydemo", "hscblank", out=ws / "b.h5", workspace=ws, stamp_size=STAMP,
                 noise="blank-sky", seed=1)
    s = imageset.read(out)
    n = len(s)
    assert n >= 2
    cat = s.catalog
    assert set(cat["blank_sky_field"]) <= {"field0", "field1"}
    assert np.all((cat["blank_sky_x"] >= 0) & (cat["blank_sky_x"] <= FIELD[1] - STAMP))
    assert s.mask is not None and s.mask.shape == s.images.shape
    assert np.all(((s.mask & StampMask.BAD) != 0).sum(axis=(1, 2, 3)) == 5 * 5 * 6)
    prov = s.provenance
    assert prov["noise"]["mode"] == "blank-sky"
    assert [f["id"] for f in prov["noise"]["blank_sky"]["fields"]] == ["field0", "field1"]
    assert "real blank-sky insertion" not in prov["not_modelled"]
    # the sky is the field's: far from the galaxy the variance is the field's variance
    np.testing.assert_allclose(s.variance[:, 4, 0, 0], SIGMA["y"] ** 2, rtol=1e-3)


def test_real_hsc_pixels_as_blank_sky(shared_data, hsc, table, tmp_path):
    d = np.load(shared_data / "scarlet-hsc" / "hsc_cosmos_35.npz")
    filters = [str(f).lower() for f in d["filters"]]
    for b, band in enumerate(filters):
        write_hsc_band(tmp_path / "cosmos35" / f"{band}.fits", image=d["images"][b],
                       variance=d["variance"][b], mask=d["mask"][b], band=band, ra=150.2,
                       dec=2.0)
    blank = BlankSky.load(tmp_path, bands=BANDS, pixel_scale_arcsec=0.168, stamp_size=STAMP)
    st = render_galaxy(galaxy(), make_spec(hsc, table, blank, gain=False), object_id=4)
    x0, y0 = st.info["blank_sky_x"], st.info["blank_sky_y"]
    idx = [filters.index(b) for b in BANDS]
    sl = (idx, slice(y0, y0 + STAMP), slice(x0, x0 + STAMP))
    sky = d["images"][sl].astype(np.float32)
    np.testing.assert_array_equal(st.image, (st.model + sky.astype(np.float64)).astype(np.float32))
    np.testing.assert_array_equal(st.variance, d["variance"][sl].astype(np.float32))
    bad = bad_pixels(d["mask"][sl], planes=HSC_MASK_PLANES)
    np.testing.assert_array_equal(st.mask != 0, bad)
