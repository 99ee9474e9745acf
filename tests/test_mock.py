"""Tests of simcompare.mock: deposit, flux conservation, PSF, noise, projections, Sersic oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Z_OBS  # the shared table's redshift

from simcompare.config import Cosmology
from simcompare.errors import ConfigError, RangeError
from simcompare.mock import (
    PSF,
    Camera,
    GalaxyExcluded,
    NoiseModel,
    RenderSpec,
    choose_redshift,
    deposit,
    deposit_numpy,
    effective_psf,
    projection_matrix,
    render_galaxy,
)
from simcompare.mock.project import knn_smoothing_length
from simcompare.sims.base import StarParticles


def make_spec(hsc, table, *, stamp=64, noise="none", projection="z", psf=None, **kw):
    cam = Camera.at_redshift(stamp_size=stamp, pixel_scale_arcsec=hsc.pixel_scale_arcsec,
                             redshift=Z_OBS, cosmology=Cosmology())
    if psf is None:
        psf = PSF.from_survey(hsc, bands=hsc.bands).image
    return RenderSpec(bands=hsc.bands, camera=cam, table=table, psf=psf,
                      noise=NoiseModel.from_survey(hsc, bands=hsc.bands, mode=noise),
                      projection=projection, preprocess=False, **kw)


def particles(pos, *, mass=1e6, hsml=None, age=5.0, z=0.02):
    n = len(pos)
    m = np.full(n, float(mass))
    return StarParticles(positions_kpc=np.asarray(pos, float), mass_msun=m, initial_mass_msun=m,
                         age_gyr=np.full(n, age), metallicity=np.full(n, z),
                         hsml_kpc=None if hsml is None else np.full(n, float(hsml)))


def test_numba_deposit_matches_numpy_reference():
    rng = np.random.default_rng(1)
    n, p = 3000, 40
    px, py = rng.uniform(-8, p + 8, n), rng.uniform(-8, p + 8, n)
    flux = rng.uniform(0, 1, (n, 3))
    sig = rng.uniform(0.01, 6.0, n)
    sig[:3] = [60.0, 0.001, 25.0]  # kernels wider than the stamp and point-like
    fast = deposit(px, py, flux, sig, p)
    ref = deposit_numpy(px, py, flux, sig, p)
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-13 * ref.max())


def test_deposit_conserves_flux_of_particles_in_view():
    rng = np.random.default_rng(2)
    px, py = rng.uniform(10, 30, 500), rng.uniform(10, 30, 500)
    f = rng.uniform(0, 1, (500, 2))
    img = deposit(px, py, f, rng.uniform(0.05, 2.0, 500), 40)
    np.testing.assert_allclose(img.sum(axis=(1, 2)), f.sum(axis=0), rtol=1e-12)
    # a pixel-integrated Gaussian centred on a pixel: the centre pixel holds
    # erf(0.5/(sqrt(2) sigma))**2 of the flux
    from scipy.special import erf

    one = deposit(np.array([20.0]), np.array([20.0]), np.ones((1, 1)), np.array([1.0]), 40)
    assert one[0, 20, 20] == pytest.approx(erf(0.5 / np.sqrt(2)) ** 2, rel=1e-3)


def test_noise_free_stamp_flux_equals_particle_flux_in_view(hsc, table):
    spec = make_spec(hsc, table)
    rng = np.random.default_rng(3)
    core = rng.normal(0, 2.0, (4000, 3))  # ~2 kpc blob, well inside a 64 px x 0.77 kpc stamp
    far = rng.normal(0, 1.0, (500, 3)) + np.array([300.0, 0.0, 0.0])  # a satellite out of view
    gal = particles(np.vstack([core, far]), hsml=0.3)
    st = render_galaxy(gal, spec, object_id=1)
    expect = table.flux(age_gyr=gal.age_gyr[:4000], metallicity=gal.metallicity[:4000],
                        initial_mass_msun=gal.initial_mass_msun[:4000]).sum(axis=0)
    np.testing.assert_allclose(st.image.astype(float).sum(axis=(1, 2)), expect, rtol=1e-4)
    np.testing.assert_allclose(st.model.sum(axis=(1, 2)), expect, rtol=1e-4)
    assert st.info["flux_fraction_in_stamp"] == pytest.approx(4000 / 4500, rel=1e-6)
    assert st.info["n_star_particles"] == 4500


def test_subpixel_offset_moves_the_light_by_the_recorded_offset(hsc, table):
    rng = np.random.default_rng(9)
    gal = particles(rng.normal(0, 1.5, (6000, 3)), hsml=0.3)
    yy, xx = np.mgrid[:64, :64]

    def centroid(st):
        img = st.model[3]
        return np.array([(img * xx).sum(), (img * yy).sum()]) / img.sum()

    exact = render_galaxy(gal, make_spec(hsc, table), object_id=5)
    assert exact.info["centre_offset_x_pix"] == 0.0 and exact.info["centre_offset_y_pix"] == 0.0
    offsets = []
    for oid in range(5, 11):
        st = render_galaxy(gal, make_spec(hsc, table, subpixel_offset=True), object_id=oid)
        off = np.array([st.info["centre_offset_x_pix"], st.info["centre_offset_y_pix"]])
        assert np.all((off >= -0.5) & (off < 0.5))
        np.testing.assert_allclose(centroid(st) - centroid(exact), off, atol=0.01)
        offsets.append(off)
    # the offset has its own stream: the same galaxy gets the same offset, others differ
    again = render_galaxy(gal, make_spec(hsc, table, subpixel_offset=True), object_id=5)
    assert again.info["centre_offset_x_pix"] == offsets[0][0]
    assert len({round(o[0], 6) for o in offsets}) == len(offsets)


def test_effective_psf_is_normalised_and_counts_the_pixel_once(hsc, table):
    import galsim

    ps = hsc.pixel_scale_arcsec
    psf = effective_psf("moffat", fwhm_arcsec=0.7, pixel_scale_arcsec=ps, size=25, beta=3.5)
    assert psf.shape == (25, 25) and psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (12, 12)
    # render a point-like particle sitting on a pixel centre: the stamp must be the
    # effective PSF itself, i.e. Moffat x pixel once, not Moffat x pixel x pixel
    spec = make_spec(hsc, table, stamp=33, psf=np.stack([psf] * 5), softening_kpc=0.0)
    gal = particles(np.zeros((1, 3)), hsml=1e-6)
    st = render_galaxy(gal, spec, object_id=1)
    img = st.model[2] / st.model[2].sum()
    moffat = galsim.Moffat(beta=3.5, fwhm=0.7)
    once = moffat.drawImage(nx=33, ny=33, scale=ps, method="auto").array
    twice = galsim.Convolve(moffat, galsim.Pixel(ps)).drawImage(nx=33, ny=33, scale=ps,
                                                                method="fft").array
    # the stamp is exactly the effective PSF (no further pixel convolution) ...
    padded = np.zeros((33, 33))
    padded[4:29, 4:29] = psf
    assert np.abs(img - padded).sum() < 1e-6
    # ... and that PSF is Moffat x pixel once (compared on the same 25x25 footprint)
    once, twice = once[4:29, 4:29], twice[4:29, 4:29]
    once, twice = once / once.sum(), twice / twice.sum()
    assert np.abs(psf - once).sum() < 1e-4
    assert np.abs(psf - twice).sum() > 0.01
    # the ImageSet PSF that goes with the mocks is the same normalised array
    full = PSF.from_survey(hsc, bands=hsc.bands)
    np.testing.assert_allclose(full.image.sum(axis=(1, 2)), 1.0, atol=1e-12)
    assert full.includes_pixel and full.description["includes_pixel"]


def test_sersic_particles_match_galsim_sersic_convolved_with_psf(hsc, table):
    """A particle realisation of a Sersic profile vs galsim's analytic profile.

    Radii follow the exact Sersic enclosed-light curve at stratified quantiles and angles
    follow the golden angle (a low-discrepancy sample, so shot noise is far below 1%).
    Criterion: summed absolute residual < 1% of the total flux.
    """
    import galsim
    from scipy.special import gammaincinv

    n_sersic, hlr_arcsec, npart = 1.5, 0.6, 40000
    spec = make_spec(hsc, table, softening_kpc=0.0)
    kpc_per_arcsec = spec.camera.kpc_per_arcsec
    b_n = gammaincinv(2 * n_sersic, 0.5)
    u = (np.arange(npart) + 0.5) / npart * 0.999  # drop the last 0.1% (beyond the stamp)
    r = hlr_arcsec * (gammaincinv(2 * n_sersic, u) / b_n) ** n_sersic * kpc_per_arcsec
    phi = np.arange(npart) * np.pi * (3 - np.sqrt(5))
    pos = np.c_[r * np.cos(phi), r * np.sin(phi), np.zeros(npart)]
    gal = particles(pos, hsml=1e-4)
    st = render_galaxy(gal, spec, object_id=7)
    ps = hsc.pixel_scale_arcsec
    for b, band in enumerate(hsc.bands):
        total = st.model[b].sum()
        fwhm = hsc.psf.fwhm_arcsec[band]
        prof = galsim.Convolve(
            galsim.Sersic(n=n_sersic, half_light_radius=hlr_arcsec, flux=total / 0.999 * 0.999),
            galsim.Moffat(beta=hsc.psf.beta, fwhm=fwhm))
        ref = prof.drawImage(nx=64, ny=64, scale=ps, method="auto").array
        ref *= total / ref.sum()
        resid = np.abs(st.model[b] - ref).sum() / total
        assert resid < 0.01, (band, resid)


def test_sky_noise_matches_descriptor_and_variance_plane(hsc, table):
    spec = make_spec(hsc, table, noise="survey")
    rng = np.random.default_rng(4)
    gal = particles(rng.normal(0, 1.5, (3000, 3)), mass=3e6, hsml=0.3)
    resid, var, bright = [], [], []
    for oid in range(40):
        st = render_galaxy(gal, spec, object_id=oid)
        resid.append(st.image - st.model)
        var.append(st.variance)
        bright.append(st.model)
    resid, var, model = np.array(resid), np.array(var), np.array(bright)
    sky = np.asarray(spec.noise.sky_sigma)
    for b in range(5):
        faint = model[:, b] < 0.01 * sky[b]
        assert faint.sum() > 20000
        assert resid[:, b][faint].std() == pytest.approx(sky[b], rel=0.02)
        np.testing.assert_allclose(var[:, b][faint], sky[b] ** 2, rtol=1e-3)
        # where the source dominates, the scatter follows sky + source / gain
        src = model[0, b] > 20 * sky[b] ** 2 * hsc.noise.gain[hsc.bands[b]]
        if src.sum() >= 4:
            ratio = resid[:, b][:, src].var(axis=0) / var[0, b][src]
            assert np.median(ratio) == pytest.approx(1.0, abs=0.25)
    # idealised images carry no noise at all
    quiet = render_galaxy(gal, make_spec(hsc, table, noise="none"), object_id=0)
    np.testing.assert_array_equal(quiet.image, quiet.model.astype(np.float32))


def test_noise_model_rejects_unknown_mode(hsc):
    with pytest.raises(ConfigError, match="noise"):
        NoiseModel.from_survey(hsc, bands=hsc.bands, mode="loud")


def test_projection_matrices():
    rng = np.random.default_rng(5)
    for name in ("x", "y", "z", "random"):
        rot = projection_matrix(name, rng=rng)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
    # a thin disc tilted in space: face-on sees it round, edge-on sees it thin
    n = 5000
    rr, ph = rng.exponential(3.0, n), rng.uniform(0, 2 * np.pi, n)
    disc = np.c_[rr * np.cos(ph), rr * np.sin(ph), rng.normal(0, 0.1, n)]
    tilt = projection_matrix("random", rng=np.random.default_rng(9))
    pos = disc @ tilt
    m = np.ones(n)
    face = pos @ projection_matrix("face-on", positions_kpc=pos, mass_msun=m).T
    edge = pos @ projection_matrix("edge-on", positions_kpc=pos, mass_msun=m).T
    assert face[:, :2].std(axis=0).min() / face[:, :2].std(axis=0).max() > 0.9
    assert face[:, 2].std() < 0.15
    assert edge[:, 1].std() < 0.15 and edge[:, 0].std() > 2.0
    # random orientations are reproducible per seed and differ between seeds
    a = projection_matrix("random", rng=np.random.default_rng([0, 17]))
    b = projection_matrix("random", rng=np.random.default_rng([0, 17]))
    c = projection_matrix("random", rng=np.random.default_rng([0, 18]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ConfigError, match="projection"):
        projection_matrix("diagonal")


def test_knn_smoothing_lengths_on_a_lattice():
    g = np.arange(12, dtype=float)
    lattice = np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3)
    h6 = knn_smoothing_length(lattice, k=6)
    inner = np.all((lattice > 1) & (lattice < 10), axis=1)
    np.testing.assert_allclose(h6[inner], 1.0)
    h18 = knn_smoothing_length(lattice, k=18)
    np.testing.assert_allclose(h18[inner], np.sqrt(2.0))
    rng = np.random.default_rng(6)
    cloud = rng.normal(0, 1, (20000, 3))
    exact = knn_smoothing_length(cloud, k=16)
    thin = knn_smoothing_length(cloud, k=16, thin=4)
    assert np.median(thin / exact) == pytest.approx(1.0, abs=0.05)


def test_camera_and_redshift_choice():
    cos = Cosmology()
    cam = Camera.at_redshift(stamp_size=64, pixel_scale_arcsec=0.168, redshift=0.3, cosmology=cos)
    d_a = cos.astropy().angular_diameter_distance(0.3).to("kpc").value
    assert cam.kpc_per_arcsec == pytest.approx(d_a / 206264.806, rel=1e-6)
    assert 4.4 < cam.kpc_per_arcsec < 4.7  # ~4.6 kpc/" at z = 0.3 for Planck cosmology
    kw = {"snapshot_redshift": 0.0, "survey_default": 0.1}
    assert choose_redshift(explicit=0.2, sim_observation_redshift=0.05, **kw) == (0.2, "explicit")
    assert choose_redshift(explicit=None, sim_observation_redshift=0.05, **kw) == (0.05, "simulation")
    assert choose_redshift(explicit=None, sim_observation_redshift=None, **kw) == (0.1, "survey_default")
    assert choose_redshift(explicit=None, sim_observation_redshift=None, snapshot_redshift=0.5,
                           survey_default=0.1) == (0.5, "snapshot")
    with pytest.raises(RangeError):
        choose_redshift(explicit=0.001, sim_observation_redshift=None, **kw)


def test_exclusions_have_reasons(hsc, table):
    spec = make_spec(hsc, table, stamp=32)
    rng = np.random.default_rng(8)
    with pytest.raises(GalaxyExcluded) as exc:
        render_galaxy(particles(np.zeros((0, 3))), spec, object_id=1)
    assert exc.value.reason == "no_particles"
    with pytest.raises(GalaxyExcluded) as exc:
        render_galaxy(particles(rng.normal(0, 1, (100, 3)) + 500.0, hsml=0.3), spec, object_id=2)
    assert exc.value.reason == "no_flux_in_view"
    with pytest.raises(GalaxyExcluded) as exc:
        render_galaxy(particles(rng.normal(0, 60.0, (2000, 3)), hsml=0.3), spec, object_id=3)
    assert exc.value.reason == "larger_than_stamp"
    bad = particles(rng.normal(0, 1, (10, 3)), hsml=0.3)
    bad.age_gyr[0] = np.nan
    with pytest.raises(GalaxyExcluded) as exc:
        render_galaxy(bad, spec, object_id=4)
    assert exc.value.reason == "invalid_particles"


def test_clean_stamp_shortcut_matches_the_shared_preprocessing():
    from simcompare.stamps import preprocess_mock, preprocess_stamp

    rng = np.random.default_rng(4)
    img = rng.normal(0.0, 0.05, (3, 24, 24))
    img[:, 10:14, 10:14] += 5.0
    var = np.full(img.shape, 0.0025) + np.clip(img, 0, None) / 1000.0
    fast_img, fast_var, fast_info, fast_mask = preprocess_mock(img, var, stamp_size=24,
                                                                   rng=np.random.default_rng(0))
    ref = preprocess_stamp(img, variance=var, mask=None, stamp_size=24,
                           rng=np.random.default_rng(0), mask_neighbours=False, band_axis=0)
    np.testing.assert_array_equal(fast_img, ref.image)
    np.testing.assert_array_equal(fast_var, ref.variance)
    np.testing.assert_array_equal(fast_mask, ref.mask)
    assert fast_info == ref.info
    # a non-finite pixel takes the full path (it must be filled)
    img[1, 3, 3] = np.nan
    out_img, _, info, mask = preprocess_mock(img, var, stamp_size=24, rng=np.random.default_rng(0))
    assert np.isfinite(out_img).all() and mask[1, 3, 3] != 0 and info["bad_fraction"] > 0


def test_mock_preprocessing_runs_the_ingest_neighbour_search():
    """With a NeighbourConfig the mock path replaces exactly what ingest's search replaces."""
    from simcompare.stamps import NeighbourConfig, StampMask, preprocess_mock, preprocess_stamp

    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:40, :40]
    galaxy = 40.0 * np.exp(-np.hypot(xx - 19.5, yy - 19.5) / 3.0)
    companion = 30.0 * np.exp(-np.hypot(xx - 33.0, yy - 8.0) / 1.5)
    img = np.stack([galaxy + companion] * 2) + rng.normal(0.0, 0.3, (2, 40, 40))
    var = np.full(img.shape, 0.09)
    cfg = NeighbourConfig()
    out_img, out_var, info, mask = preprocess_mock(img, var, stamp_size=40, rng=np.random.default_rng(1),
                                                   neighbours=cfg)
    ref = preprocess_stamp(img, variance=var, stamp_size=40, rng=np.random.default_rng(1),
                           mask_neighbours=True, neighbours=cfg)
    np.testing.assert_array_equal(out_img, ref.image)
    np.testing.assert_array_equal(out_var, ref.variance)
    np.testing.assert_array_equal(mask, ref.mask)
    assert info["n_neighbours"] >= 1
    assert (mask[:, 8, 33] & StampMask.NEIGHBOUR).all() and not mask[:, 20, 20].any()
    # without a search the companion stays
    _, _, info0, mask0 = preprocess_mock(img, var, stamp_size=40, rng=np.random.default_rng(1))
    assert info0["n_neighbours"] == 0 and not mask0.any()


def test_psf_convolution_matches_direct_fft_convolution():
    from scipy.signal import fftconvolve

    from simcompare.mock.observe import convolve

    rng = np.random.default_rng(5)
    psf = rng.uniform(0, 1, (2, 9, 9))
    for p in (16, 33):
        img = rng.uniform(0, 1, (2, p, p))
        ref = fftconvolve(img, psf, mode="same", axes=(1, 2))
        np.testing.assert_allclose(convolve(img, psf), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(convolve(img, psf), ref, rtol=1e-12, atol=1e-12)  # cached


@pytest.mark.parametrize(("oversample", "tolerance"), [(3, 0.001), (1, None)])
def test_light_map_of_a_compact_source_matches_galsim_at_any_subpixel_position(
        hsc, oversample, tolerance):
    """One particle of Gaussian sigma 0.4 px (a compact bulge's core) under the i-band PSF.

    The map on 3 x 3 sub-pixels matches galsim's drawing (the Gaussian convolved with the
    PSF and integrated over pixels) within 0.1% of the peak (0.02% measured) wherever the
    source sits in its pixel; the map on whole pixels misses by 2% at some positions.
    """
    import galsim

    from simcompare.mock.project import light_map
    from simcompare.psf import survey_psf_profiles

    stamp, sigma = 32, 0.4
    psf = PSF.from_survey(hsc, bands=("i",), kernel_size=2 * stamp + 1, oversample=oversample)
    assert psf.oversample == oversample
    optical = survey_psf_profiles(hsc, ("i",))[0]
    scale = hsc.pixel_scale_arcsec
    worst = 0.0
    for dx, dy in ((0.0, 0.0), (0.5, 0.5), (0.5, 0.0), (0.25, -0.4), (-0.1, 0.3)):
        c = (stamp - 1) / 2
        image, deposited = light_map(np.array([c + dx]), np.array([c + dy]), np.ones((1, 1)),
                                     np.array([sigma]), stamp, psf.render_kernel(),
                                     oversample=oversample)
        truth = galsim.Convolve(galsim.Gaussian(sigma=sigma * scale), optical).drawImage(
            nx=stamp, ny=stamp, scale=scale, offset=(dx, dy)).array
        assert deposited == pytest.approx(1.0, rel=1e-9)
        worst = max(worst, float(np.abs(image[0] - truth).max() / truth.max()))
    if tolerance is not None:
        assert worst < tolerance
    else:
        assert worst > 0.015


def test_render_uses_the_oversampled_kernel_and_records_it(hsc):
    psf = PSF.from_survey(hsc, bands=hsc.bands, kernel_size=65, oversample=3)
    assert psf.render_kernel().shape == (len(hsc.bands), 195, 195)
    np.testing.assert_allclose(psf.render_kernel().sum(axis=(1, 2)), 1.0, rtol=1e-12)
    assert psf.description["render_kernel_oversample"] == 3
    with pytest.raises(ConfigError, match="odd positive"):
        PSF.from_survey(hsc, bands=hsc.bands, oversample=2)
