"""Simulated images people already have (kind = "images"): units, pixel scales, bands, PSFs, masks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _image_fixtures import (
    AB_JY,
    HSC_FILTERS,
    MAGS,
    images_descriptor,
    write_realsim_hsc,
    write_realsim_idealised,
    write_skirt_cube,
)

from simcompare import imageset
from simcompare.cli import main
from simcompare.config import Cosmology
from simcompare.errors import ConfigError, SimcompareError
from simcompare.mock import render
from simcompare.mock.images import resample_flux
from simcompare.registry import find_sim, find_survey
from simcompare.sims.image_units import flux_unit_name, to_survey_flux

ZP = 27.0
SKIRT_FILTERS = ["HSC_G", "HSC_R", "HSC_I", "HSC_Z", "HSC_Y"]
NMGY_TO_COUNTS = 10 ** (0.4 * (ZP - 22.5))


def _counts(jy: float) -> float:
    return jy / AB_JY * 10 ** (0.4 * ZP)


def _skirt_workspace(ws: Path, n: int = 3, **kw) -> dict[int, dict[str, float]]:
    (ws / "sims").mkdir(parents=True, exist_ok=True)
    (ws / "cubes").mkdir(exist_ok=True)
    jy = {}
    for k in range(n):
        jy[100 + k] = write_skirt_cube(ws / "cubes" / f"subhalo_{100 + k}_v0.fits", filters=SKIRT_FILTERS,
                                       mags=[MAGS[b] + 0.1 * k for b in "grizy"], subhalo=100 + k, **kw)
    (ws / "sims" / "skirt.toml").write_text(images_descriptor(
        name="skirt", path="cubes", pattern="*.fits", bands=dict(zip("grizy", SKIRT_FILTERS, strict=True))))
    return jy


# ---------------------------------------------------------------------------------------
# Units, in one place
# ---------------------------------------------------------------------------------------
def test_unit_conversions_by_hand():
    one = np.ones(1)
    # 1 nanomaggy is AB mag 22.5
    assert to_survey_flux(one, unit="nanomaggies", pixel_scale_arcsec=0.168, zero_point=ZP)[0] == \
        pytest.approx(NMGY_TO_COUNTS)
    assert to_survey_flux(one, unit="maggies", pixel_scale_arcsec=0.168, zero_point=ZP)[0] == \
        pytest.approx(10 ** (0.4 * ZP))
    # 3631 Jy is mag 0
    assert to_survey_flux(one * AB_JY, unit="Jy", pixel_scale_arcsec=1.0, zero_point=ZP)[0] == \
        pytest.approx(10 ** (0.4 * ZP))
    # 1 MJy/sr over a 1" pixel: 1e6 Jy/sr * (pi/648000)^2 sr
    sr = (math.pi / 648000.0) ** 2
    assert to_survey_flux(one, unit="MJy/sr", pixel_scale_arcsec=1.0, zero_point=ZP)[0] == \
        pytest.approx(1e6 * sr / AB_JY * 10 ** (0.4 * ZP))
    # mu = 20 mag/arcsec^2 over 0.5" pixels: 10^(-0.4 (20 - 27)) * 0.25
    sb = np.array([20.0, np.inf, np.nan, 99.0])
    out = to_survey_flux(sb, unit="mag/arcsec2", pixel_scale_arcsec=0.5, zero_point=ZP)
    np.testing.assert_allclose(out, [10 ** 2.8 * 0.25, 0, 0, 0])
    assert flux_unit_name("MJy / sr") == "MJy/sr"
    assert flux_unit_name("AB mag/arcsec2") == "mag/arcsec2"
    assert flux_unit_name("nanomaggy") == "nanomaggies"
    for bad in ("erg/s/cm2/A", "mJy/sr", "W/m2"):
        with pytest.raises(ConfigError, match="unknown flux unit"):
            flux_unit_name(bad)
    with pytest.raises(ConfigError, match="counts"):
        to_survey_flux(one, unit="counts", pixel_scale_arcsec=1.0, zero_point=ZP, survey_flux_unit="nJy")


def test_resampling_conserves_flux():
    rng = np.random.default_rng(0)
    img = rng.random((2, 101, 101))
    for scale_in, size in ((0.05, 64), (0.2, 200), (0.168, 101)):
        out = resample_flux(img, scale_in_arcsec=scale_in, scale_out_arcsec=0.168, size=size)
        # every input pixel lies inside the output stamp here
        assert 101 * scale_in <= size * 0.168
        np.testing.assert_allclose(out.sum(axis=(1, 2)), img.sum(axis=(1, 2)), rtol=1e-10)
    same = resample_flux(img, scale_in_arcsec=0.168, scale_out_arcsec=0.168, size=101)
    np.testing.assert_allclose(same, img, atol=1e-12)
    # the input centre lands on the stamp centre
    point = np.zeros((1, 41, 41))
    point[0, 20, 20] = 1.0
    out = resample_flux(point, scale_in_arcsec=0.01, scale_out_arcsec=0.168, size=33)
    assert np.unravel_index(out[0].argmax(), out[0].shape) == (16, 16)


# ---------------------------------------------------------------------------------------
# Idealised images: SKIRT cube, RealSim idealised planes
# ---------------------------------------------------------------------------------------
def test_skirt_cube_flux_pixel_scale_and_header_mags(tmp_path):
    jy = _skirt_workspace(tmp_path)
    out = render("skirt", "hsc", out=tmp_path / "m.h5", workspace=tmp_path, noise="none")
    s = imageset.read(out)
    assert s.kind == "mock" and s.images.shape == (3, 5, 64, 64)
    cat = s.catalog
    assert list(cat["object_id"]) == [100, 101, 102] and list(cat["view"]) == ["v0"] * 3
    np.testing.assert_allclose(cat["source_pixel_scale_arcsec"], 0.05, rtol=1e-9)  # CDELT in degrees
    for i, oid in enumerate(cat["object_id"]):
        for b, band in enumerate("grizy"):
            expected = _counts(jy[int(oid)][SKIRT_FILTERS[b]])
            assert cat[f"file_flux_{band}"][i] == pytest.approx(expected, rel=1e-6)
            assert s.images[i, b].sum() == pytest.approx(expected, rel=0.01)
            # MAGn recorded with its difference from the pixels' magnitude
            assert cat[f"header_mag_{band}"][i] == pytest.approx(MAGS[band] + 0.1 * i, abs=1e-6)
            assert abs(cat[f"mag_difference_{band}"][i]) < 0.01
    # the survey PSF was applied: the idealised image is broader than its plain resampling
    from astropy.io import fits

    cube = fits.getdata(tmp_path / "cubes" / "subhalo_100_v0.fits").astype(np.float64)
    plain = resample_flux(cube, scale_in_arcsec=0.05, scale_out_arcsec=0.168, size=64)
    assert s.images[0, 2].max() < 0.8 * plain[2].max() * (s.images[0, 2].sum() / plain[2].sum())
    prov = json.loads(json.dumps(s.provenance))
    assert prov["source"] == "images" and prov["exclusions"] == {}
    assert np.allclose(s.psf.sum(axis=(-1, -2)), 1.0, atol=1e-5)


def test_cli_render_skirt_cube_noise_none(tmp_path):
    jy = _skirt_workspace(tmp_path, n=2)
    out = tmp_path / "mocks.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "simcompare", "render", "--sim", "skirt", "--survey", "hsc",
         "--noise", "none", "--out", str(out), "--workspace", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("mocks.h5")
    s = imageset.read(out)
    for i, oid in enumerate(s.catalog["object_id"]):
        got = s.images[i].sum(axis=(1, 2))
        want = np.array([_counts(jy[int(oid)][f]) for f in SKIRT_FILTERS])
        np.testing.assert_allclose(got, want, rtol=0.01)


def test_realsim_idealised_kpc_scale_and_band_mapping(tmp_path):
    z, kpp = 0.05, 0.1
    d_a = Cosmology().astropy().angular_diameter_distance(z).to("kpc").value
    kpc_per_arcsec = d_a * math.pi / 648000.0
    (tmp_path / "sims").mkdir()
    (tmp_path / "ideal").mkdir()
    maggies = write_realsim_idealised(tmp_path / "ideal" / "broadband_4242.fits", redshift=z,
                                      kpc_per_pixel=kpp, kpc_per_arcsec=kpc_per_arcsec)
    (tmp_path / "sims" / "realsim.toml").write_text(images_descriptor(
        name="realsim", path="ideal", pattern="broadband_*.fits", bands=HSC_FILTERS))
    s = imageset.read(render("realsim", "hsc", out=tmp_path / "m.h5", workspace=tmp_path,
                             noise="none", stamp_size=96))
    cat = s.catalog
    assert int(cat["object_id"][0]) == 4242 and cat["redshift"][0] == pytest.approx(z)
    assert cat["source_pixel_scale_arcsec"][0] == pytest.approx(kpp / kpc_per_arcsec, rel=1e-6)
    for b, band in enumerate("grizy"):
        want = maggies[band] * 10 ** (0.4 * ZP)
        assert s.images[0, b].sum() == pytest.approx(want, rel=0.01)
        assert abs(cat[f"mag_difference_{band}"][0]) < 0.01  # APMAG vs the pixels
    # swapping the mapping swaps the planes: g now reads the y plane
    swapped = dict(HSC_FILTERS, g=HSC_FILTERS["y"], y=HSC_FILTERS["g"])
    (tmp_path / "sims" / "realsim.toml").write_text(images_descriptor(
        name="realsim", path="ideal", pattern="broadband_*.fits", bands=swapped))
    s2 = imageset.read(render("realsim", "hsc", out=tmp_path / "m2.h5", workspace=tmp_path,
                              noise="none", stamp_size=96))
    assert s2.images[0, 0].sum() == pytest.approx(maggies["y"] * 10 ** (0.4 * ZP), rel=0.01)
    assert s2.images[0, 4].sum() == pytest.approx(maggies["g"] * 10 ** (0.4 * ZP), rel=0.01)


def test_noise_and_descriptor_overrides(tmp_path):
    jy = _skirt_workspace(tmp_path, n=1)
    noisy = imageset.read(render("skirt", "hsc", out=tmp_path / "n.h5", workspace=tmp_path,
                                 noise="survey", seed=1))
    quiet = imageset.read(render("skirt", "hsc", out=tmp_path / "q.h5", workspace=tmp_path, noise="none"))
    resid = noisy.images[0, 0] - quiet.images[0, 0]
    sky = find_survey("hsc").noise.sky_sigma["g"]
    assert 0.8 * sky < resid[:10, :10].std() < 1.25 * sky
    # pixel_scale_arcsec overrides CDELT: half the scale, a quarter of the surface-brightness flux
    text = (tmp_path / "sims" / "skirt.toml").read_text()
    (tmp_path / "sims" / "skirt.toml").write_text(
        text.replace("[bands]", "pixel_scale_arcsec = 0.025\n[bands]"))
    half = imageset.read(render("skirt", "hsc", out=tmp_path / "h.h5", workspace=tmp_path, noise="none"))
    assert half.catalog["source_pixel_scale_arcsec"][0] == pytest.approx(0.025)
    assert half.images[0, 0].sum() == pytest.approx(_counts(jy[100]["HSC_G"]) / 4, rel=0.01)
    # a wrong unit named in the descriptor is a ConfigError that names the key
    (tmp_path / "sims" / "skirt.toml").write_text(text.replace("[bands]", 'flux_unit = "erg/s/A"\n[bands]'))
    with pytest.raises(ConfigError, match="flux_unit"):
        render("skirt", "hsc", out=tmp_path / "w.h5", workspace=tmp_path, noise="none")


def test_damaged_file_missing_band_and_wrong_unit_are_exclusions(tmp_path):
    _skirt_workspace(tmp_path, n=1)
    cubes = tmp_path / "cubes"
    good = (cubes / "subhalo_100_v0.fits").read_bytes()
    (cubes / "subhalo_200_v0.fits").write_bytes(good[: len(good) // 2])  # truncated
    (cubes / "subhalo_201_v0.fits").write_bytes(b"not a FITS file at all")
    write_skirt_cube(cubes / "subhalo_300_v0.fits", filters=SKIRT_FILTERS[:4], mags=[20.0] * 4)
    write_skirt_cube(cubes / "subhalo_400_v0.fits", filters=SKIRT_FILTERS, mags=[20.0] * 5,
                     bunit="erg/s/cm2/A")
    s = imageset.read(render("skirt", "hsc", out=tmp_path / "m.h5", workspace=tmp_path, noise="none"))
    assert list(s.catalog["object_id"]) == [100]
    prov = s.provenance
    assert prov["exclusions"] == {"unreadable": 2, "missing_band": 1, "unknown_unit": 1}
    assert prov["excluded_files"]["subhalo_300_v0.fits"] == "missing_band"
    assert prov["excluded_files"]["subhalo_400_v0.fits"] == "unknown_unit"
    # only bad files: one clear error
    (cubes / "subhalo_100_v0.fits").unlink()
    with pytest.raises(SimcompareError, match="no image of simulation 'skirt' could be used"):
        render("skirt", "hsc", out=tmp_path / "m2.h5", workspace=tmp_path, noise="none")


def test_descriptor_errors(tmp_path):
    (tmp_path / "sims").mkdir()
    p = tmp_path / "sims" / "x.toml"
    p.write_text('name = "x"\ntitle = "x"\nkind = "images"\n[bands]\ng = "G"\n')
    with pytest.raises(ConfigError, match="needs path"):
        find_sim("x", workspace=tmp_path)
    p.write_text('name = "x"\ntitle = "x"\nkind = "images"\npath = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"\[bands\]"):
        find_sim("x", workspace=tmp_path)
    p.write_text('name = "x"\ntitle = "x"\nkind = "pictures"\npath = "a"\n')
    with pytest.raises(ConfigError, match="kind must be"):
        find_sim("x", workspace=tmp_path)
    p.write_text(images_descriptor(name="x", path="nowhere", pattern="*.fits", bands={"g": "G"}))
    code = main(["render", "--sim", "x", "--survey", "hsc", "--out", str(tmp_path / "o.h5"),
                 "--workspace", str(tmp_path), "--bands", "g"])
    assert code == 2 and not (tmp_path / "o.h5").exists()
    # a band the descriptor does not map
    (tmp_path / "nowhere").mkdir()
    write_skirt_cube(tmp_path / "nowhere" / "a_1.fits", filters=["G"], mags=[20.0])
    with pytest.raises(ConfigError, match=r"maps no plane to survey band\(s\) \['r'\]"):
        render("x", "hsc", out=tmp_path / "o.h5", workspace=tmp_path, bands=("g", "r"))
    s = imageset.read(render("x", "hsc", out=tmp_path / "o.h5", workspace=tmp_path, bands=("g",),
                             noise="none"))
    assert s.bands == ("g",)


def test_catalogue_beside_the_images(tmp_path):
    _skirt_workspace(tmp_path, n=2)
    (tmp_path / "cubes" / "cat.csv").write_text(
        "file,object_id,view,redshift,stellar_mass_msun\n"
        "subhalo_100_v0.fits,7,xy,0.2,3e10\nsubhalo_101_v0.fits,7,yz,0.21,3e10\n")
    text = (tmp_path / "sims" / "skirt.toml").read_text()
    (tmp_path / "sims" / "skirt.toml").write_text(text.replace("[bands]", 'catalog = "cat.csv"\n[bands]'))
    s = imageset.read(render("skirt", "hsc", out=tmp_path / "m.h5", workspace=tmp_path, noise="none"))
    cat = s.catalog
    # two views of one subhalo get distinct object ids and keep subhalo_id and view
    assert list(cat["subhalo_id"]) == [7, 7] and list(cat["view"]) == ["xy", "yz"]
    assert list(cat["object_id"]) == [7000, 7001]
    np.testing.assert_allclose(cat["redshift"], [0.2, 0.21])
    np.testing.assert_allclose(cat["stellar_mass_msun"], 3e10)


# ---------------------------------------------------------------------------------------
# Survey-realistic images (RealSim-HSC layout)
# ---------------------------------------------------------------------------------------
def _realsim_hsc_workspace(ws: Path, n: int, **kw) -> dict[int, dict[str, float]]:
    (ws / "sims").mkdir(parents=True, exist_ok=True)
    (ws / "hsc").mkdir(exist_ok=True)
    rng = np.random.default_rng(4)
    out = {}
    for k in range(n):
        out[k] = write_realsim_hsc(ws / "hsc" / f"realsim_{500 + k}_v0.fits", rng=rng,
                                   hlr_arcsec=0.5 + 0.01 * k, **kw)
    (ws / "sims" / "realsim-hsc.toml").write_text(images_descriptor(
        name="realsim-hsc", path="hsc", pattern="realsim_*.fits", bands=HSC_FILTERS, psf_convolved=True))
    return out


def test_realsim_hsc_masks_variance_and_psf(tmp_path):
    from astropy.io import fits

    _realsim_hsc_workspace(tmp_path, n=2, bad_box=True)
    s = imageset.read(render("realsim-hsc", "hsc", out=tmp_path / "m.h5", workspace=tmp_path))
    assert s.images.shape == (2, 5, 64, 64) and s.mask is not None and s.variance is not None
    with fits.open(tmp_path / "hsc" / "realsim_500_v0.fits") as hdul:
        img = hdul["SUBARU_HSC.I"].data.astype(np.float64)
        var = hdul["SUBARU_HSC.I VARIANCE"].data.astype(np.float64)
        psf = hdul["SUBARU_HSC.I PSF"].data.astype(np.float64)
    # 80 -> 64 pixels, centred: an 8-pixel offset; nanomaggies -> counts; variance by the square
    core = (slice(24, 40), slice(24, 40))
    np.testing.assert_allclose(s.images[0, 2][core], (img[8:72, 8:72] * NMGY_TO_COUNTS)[core], rtol=1e-5)
    np.testing.assert_allclose(s.variance[0, 2][core], (var[8:72, 8:72] * NMGY_TO_COUNTS**2)[core],
                               rtol=1e-5)
    # the bad box (MP_BAD, NaN pixels) at the file's [10:16, 10:16] -> stamp [2:8]; DETECTED is not bad
    assert (s.mask[0, :, 2:8, 2:8] != 0).all()
    assert (s.mask[0, :, 30:34, 30:34] == 0).all()
    assert np.isfinite(s.images).all()
    # per-image PSFs from the files, normalised, centred
    assert s.psf.shape[-2:] == (25, 25)
    p = s.psf[0, 2] if s.psf.ndim == 4 else s.psf[2]
    c = psf[8:33, 8:33]
    np.testing.assert_allclose(p, c / c.sum(), rtol=1e-4, atol=1e-7)
    # neither PSF nor noise was added again: pixel noise equals the file's
    assert np.std(s.images[0, 0][:5, 40:]) == pytest.approx(0.02 * NMGY_TO_COUNTS, rel=0.35)
    assert s.provenance["noise"] is None and "survey-realistic" in s.provenance["path"]


def test_realsim_hsc_without_variance_or_on_other_pixels_is_excluded(tmp_path):
    _realsim_hsc_workspace(tmp_path, n=1)
    write_realsim_hsc(tmp_path / "hsc" / "realsim_900_v0.fits", rng=np.random.default_rng(1),
                      with_variance=False)
    s = imageset.read(render("realsim-hsc", "hsc", out=tmp_path / "m.h5", workspace=tmp_path))
    assert list(s.catalog["object_id"]) == [500]
    assert s.provenance["excluded_files"] == {"realsim_900_v0.fits": "no_variance"}
    text = (tmp_path / "sims" / "realsim-hsc.toml").read_text()
    (tmp_path / "sims" / "realsim-hsc.toml").write_text(
        text.replace("[bands]", "pixel_scale_arcsec = 0.2\n[bands]"))
    with pytest.raises(SimcompareError, match="pixel_scale_mismatch"):
        render("realsim-hsc", "hsc", out=tmp_path / "m2.h5", workspace=tmp_path)


def test_real_hsc_cutouts_in_the_realsim_layout(tmp_path, shared_data):
    """Real HSC-SSP pixels, masks, variances and PSFs written as RealSim-HSC writes them."""
    from astropy.io import fits

    from simcompare.stamps import HSC_MASK_PLANES

    d = np.load(shared_data / "scarlet-hsc" / "hsc_cosmos_35.npz")
    images, variance, mask, psfs = d["images"], d["variance"], d["mask"], d["psfs"]
    filters = [str(f) for f in d["filters"]]
    assert filters == ["g", "r", "i", "z", "y"]
    (tmp_path / "hsc").mkdir()
    (tmp_path / "sims").mkdir()
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["SUBHALO"] = 35
    for b, band in enumerate(filters):
        name = HSC_FILTERS[band]
        h = fits.ImageHDU((images[b] / NMGY_TO_COUNTS).astype(np.float32), name=name)
        h.header["BUNIT"] = "nanomaggies"
        h.header["CDELT1"] = (0.168 / 3600, "deg/pixel")
        hdus.append(h)
        mh = fits.ImageHDU(mask[b].astype(np.int32), name=f"{name} MASK")
        for plane, bit in HSC_MASK_PLANES.items():
            mh.header[f"HIERARCH MP_{plane}"] = bit
        hdus += [mh, fits.ImageHDU((variance[b] / NMGY_TO_COUNTS**2).astype(np.float32),
                                   name=f"{name} VARIANCE"),
                 fits.ImageHDU(psfs[b].astype(np.float32), name=f"{name} PSF")]
    fits.HDUList(hdus).writeto(tmp_path / "hsc" / "cosmos_35.fits")
    (tmp_path / "sims" / "real.toml").write_text(images_descriptor(
        name="real", path="hsc", pattern="*.fits", bands=HSC_FILTERS, psf_convolved=True))
    s = imageset.read(render("real", "hsc", out=tmp_path / "m.h5", workspace=tmp_path, stamp_size=48))
    assert s.pixel_scale_arcsec == pytest.approx(0.168)
    assert int(s.catalog["object_id"][0]) == 35
    assert s.catalog["source_pixel_scale_arcsec"][0] == pytest.approx(0.168, rel=1e-6)
    # flux in the file's pixels (nanomaggies) comes back as the original counts
    for b, band in enumerate(filters):
        assert s.catalog[f"file_flux_{band}"][0] == pytest.approx(float(np.nansum(images[b])), rel=1e-4)
    # 58x48 -> 48x48: rows shifted by 5; pixels that stay good are unchanged, bad planes masked
    good = s.mask[0] == 0
    src = images[:, 5:53, :].astype(np.float64)
    assert good.mean() > 0.5
    from simcompare.stamps import bad_pixels

    bad_in = bad_pixels(mask[:, 5:53, :], planes=HSC_MASK_PLANES) | ~(variance[:, 5:53, :] > 0)
    assert (s.mask[0][bad_in] != 0).all()
    frac_same = np.isclose(s.images[0], src, rtol=1e-4, atol=1e-6)[good].mean()
    assert frac_same > 0.5  # neighbours are replaced by noise, the rest is the file's pixels
    p = s.psf[2] if s.psf.ndim == 3 else s.psf[0, 2]
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    peak = np.unravel_index(p.argmax(), p.shape)
    assert peak == (12, 12)


# ---------------------------------------------------------------------------------------
# Survey descriptors without SPS filter curves
# ---------------------------------------------------------------------------------------
JWST = """
name = "ceers"
title = "JWST NIRCam (test)"
bands = ["F150W", "F200W"]
pixel_scale_arcsec = 0.03
zero_point = 28.9
stamp_size = 64
[psf]
kind = "gaussian"
fwhm_arcsec = { F150W = 0.05, F200W = 0.066 }
[noise]
sky_sigma = { F150W = 0.01, F200W = 0.01 }
"""


def test_survey_without_filters_scores_images_not_particles(tmp_path):
    (tmp_path / "observed").mkdir()
    (tmp_path / "observed" / "ceers.toml").write_text(JWST)
    (tmp_path / "sims").mkdir()
    (tmp_path / "cubes").mkdir()
    jy = write_skirt_cube(tmp_path / "cubes" / "TNG50_77_NIRCam.fits", filters=["F150W", "F200W"],
                          mags=[22.0, 21.8], scale_arcsec=0.015, size=161, hlr_arcsec=0.2)
    (tmp_path / "sims" / "ceers-mocks.toml").write_text(images_descriptor(
        name="ceers-mocks", path="cubes", pattern="*_NIRCam.fits",
        bands={"F150W": "F150W", "F200W": "F200W"}))
    s = imageset.read(render("ceers-mocks", "ceers", out=tmp_path / "m.h5", workspace=tmp_path,
                             noise="none"))
    zp = 10 ** (0.4 * 28.9)
    np.testing.assert_allclose(s.images[0].sum(axis=(1, 2)),
                               [jy["F150W"] / AB_JY * zp, jy["F200W"] / AB_JY * zp], rtol=0.01)
    # star particles need the filter curves, and the error says so
    from _demo_descriptor import tiny_demo_toml

    (tmp_path / "sims" / "tinydemo.toml").write_text(tiny_demo_toml(n_galaxies=4))
    with pytest.raises(ConfigError, match=r"no 'filters'.*needed to render star particles"):
        render("tinydemo", "ceers", out=tmp_path / "p.h5", workspace=tmp_path)
    code = main(["render", "--sim", "tinydemo", "--survey", "ceers", "--out", str(tmp_path / "p.h5"),
                 "--workspace", str(tmp_path)])
    assert code == 2 and not (tmp_path / "p.h5").exists()
