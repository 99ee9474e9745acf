"""The pipeline floor: Sersic particles, the self-simulation's render path, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simcompare.comparison import attach_floor, compare
from simcompare.floor import (
    _FixedFluxes,
    sample_sersic_particles,
    self_simulation,
    vanishing_particles,
)
from simcompare.mock.observe import Camera, NoiseModel


def _moments(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Axis ratio and major-axis angle of a point cloud from its second moments."""
    cov = np.cov(np.vstack([x, y]))
    w, v = np.linalg.eigh(cov)
    return math.sqrt(w[0] / w[1]), math.atan2(v[1, 1], v[0, 1])


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_sersic_particles_have_the_profile_half_light_radius(n):
    from scipy.special import gammainc, gammaincinv

    from simcompare.density.background import sersic_bn

    rng = np.random.default_rng(1)
    pos = sample_sersic_particles(r_e_pix=5.0, sersic_n=n, axis_ratio=1.0, pa_rad=0.0, x0=10.0,
                                  y0=10.0, n_particles=200_000, kpc_per_pixel=2.0,
                                  center_pix=10.0, rng=rng)
    r = np.hypot(pos[:, 0], pos[:, 1]) / 2.0  # pixels
    # half the light of the profile truncated at 8 r_e lies within this radius
    b = sersic_bn(n)
    u_max = gammainc(2 * n, b * 8.0 ** (1 / n))
    expected = 5.0 * (gammaincinv(2 * n, 0.5 * u_max) / b) ** n
    assert np.median(r) == pytest.approx(expected, rel=0.01)
    assert r.max() <= 8.0 * 5.0 + 1e-9
    assert np.mean(np.abs(pos[:, 2]) / 2.0) == pytest.approx(5.0 * math.sqrt(2 / math.pi), rel=0.02)


def test_sersic_particles_follow_axis_ratio_angle_and_centre():
    rng = np.random.default_rng(2)
    pos = sample_sersic_particles(r_e_pix=4.0, sersic_n=0.5, axis_ratio=0.4, pa_rad=0.6,
                                  x0=18.0, y0=13.0, n_particles=100_000, kpc_per_pixel=1.0,
                                  center_pix=15.5, rng=rng)
    assert np.mean(pos[:, 0]) == pytest.approx(18.0 - 15.5, abs=0.05)
    assert np.mean(pos[:, 1]) == pytest.approx(13.0 - 15.5, abs=0.05)
    q, angle = _moments(pos[:, 0], pos[:, 1])
    assert q == pytest.approx(0.4, rel=0.02)
    assert (angle - 0.6 + math.pi / 2) % math.pi - math.pi / 2 == pytest.approx(0.0, abs=0.02)


def test_fixed_fluxes_split_the_fit_flux_over_the_particles():
    table = _FixedFluxes(np.array([10.0, 20.0, -1.0]), 27.0)
    f = table.flux(age_gyr=None, metallicity=None, initial_mass_msun=np.full(4, 0.25))
    np.testing.assert_allclose(f.sum(axis=0), [10.0, 20.0, 0.0])


def test_self_simulation_matches_the_analytic_rendering_noise_free():
    """Many particles, no noise, a tiny softening: the mock path draws the fit's profile."""
    import torch

    from simcompare.density.background import _fft_size, _psf_hat, render_sersic

    size, bands = 32, ("g", "i")
    yy, xx = np.mgrid[-7:8, -7:8]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 1.2**2))
    psf = np.stack([psf / psf.sum()] * 2)
    cam = Camera(stamp_size=size, pixel_scale_arcsec=0.2, redshift=0.1, kpc_per_arcsec=1.0)
    setup = {"camera": cam, "noise": NoiseModel(sky_sigma=(0.01, 0.01), gain=(0.0, 0.0),
                                                mode="none"),
             "psf": psf, "bands": bands, "zero_point": 27.0, "flux_unit": "counts",
             "survey": "test", "pixel_scale": 0.2, "softening_kpc": 0.02, "knn_k": 16,
             "max_flux_outside": 0.5, "blank_sky": None}
    fits = pd.DataFrame({"object_id": [7], "x0": [16.2], "y0": [14.7], "r_e_pixels": [3.5],
                         "sersic_n": [1.0], "axis_ratio": [0.6], "pa_rad": [0.5],
                         "flux_g": [100.0], "flux_i": [250.0]})
    s, kept, excluded = self_simulation(fits, {"object_id": np.array([7])}, setup,
                                        n_particles=200_000, seed=0)
    assert s is not None and kept.tolist() == [0] and excluded == {}
    assert s.catalog["floor_n_star_particles"][0] == 200_000
    g = math.log(1.0 / 0.6) / 2  # |g| with e = tanh|g| = (1 - q) / (1 + q)
    params = torch.tensor([[16.2, 14.7, math.log(3.5), g * math.cos(1.0), g * math.sin(1.0), 1.0]])
    nf = _fft_size(size, psf.shape[-1])
    for b, flux in enumerate((100.0, 250.0)):
        model = flux * render_sersic(params, _psf_hat(psf[b][None], nf), size=size, nf=nf)[0].numpy()
        img = s.images[0, b]
        assert img.sum() == pytest.approx(model.sum(), rel=0.02)
        l1 = np.abs(img - model).sum() / model.sum()
        assert l1 < 0.05, l1


def _scores(values: np.ndarray, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"object_id": np.arange(start, start + len(values)),
                         "llr_nats": values, "log_prob_nats": values})


def _floor_record(shift: float, *, n: int = 300, seed: int = 5) -> dict:
    """A floor whose self-simulation scores ``shift`` lower than its analytic side."""
    rng = np.random.default_rng(seed)
    fs = compare(_scores(rng.normal(-shift, 1.0, n)), _scores(rng.normal(0.0, 1.0, n), 10_000),
                 n_bootstrap=200, n_null=5, seed=1)
    return {"particles": 4000, "particles_source": "test", "n_galaxies": n, "summary": fs,
            "curve": []}


def test_a_far_floor_turns_less_typical_into_within_the_floor():
    rng = np.random.default_rng(0)
    sim, ref = _scores(rng.normal(-0.8, 1.0, 300)), _scores(rng.normal(0.0, 1.0, 300), 10_000)
    plain = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1)
    assert plain["verdict"]["fine_structure"] == "less typical"
    floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, floor=_floor_record(0.8))
    pf = floored["axes"]["fine_structure"]["pipeline_floor"]
    assert pf["value"] > 0.6 and pf["particles"] == 4000 and pf["n"]["sim"] == 300
    assert pf["difference"]["ci_contains_zero"]
    assert floored["verdict"]["fine_structure"] == "within the pipeline floor"
    assert "within the pipeline floor" in floored["verdict"]["text"]
    assert "the pipeline alone makes" in floored["verdict"]["text"]
    # the same metrics as without the floor: only the verdict's reference point moved
    assert floored["metrics"]["auroc"] == plain["metrics"]["auroc"]


def test_a_far_floor_never_turns_indistinguishable_into_a_difference():
    """The closure benchmark's same population sat at chance with its floor at 0.36-0.42
    (fine) and 0.74-0.78 (global); calling it different would blame the simulation for
    what the pipeline does to smooth self-simulations."""
    rng = np.random.default_rng(3)
    sim, ref = _scores(rng.normal(0.0, 1.0, 300)), _scores(rng.normal(0.0, 1.0, 300), 10_000)
    plain = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1)
    assert plain["verdict"]["fine_structure"] == "indistinguishable"
    for shift in (0.8, -0.8):
        floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1,
                          floor=_floor_record(shift))
        pf = floored["axes"]["fine_structure"]["pipeline_floor"]
        assert not pf["difference"]["ci_contains_zero"]      # far from the simulation
        assert floored["verdict"]["fine_structure"] == "indistinguishable"
        assert "floor only explains departures away" in floored["verdict"]["text"]


def test_a_departure_smaller_than_the_floor_is_within_it_and_the_other_side_is_not():
    rng = np.random.default_rng(0)
    ref = _scores(rng.normal(0.0, 1.0, 300), 10_000)
    sim = _scores(rng.normal(-0.35, 1.0, 300))          # less typical, AUROC about 0.6
    plain = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1)
    assert plain["verdict"]["fine_structure"] == "less typical"
    floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, floor=_floor_record(1.2))
    pf = floored["axes"]["fine_structure"]["pipeline_floor"]
    assert pf["value"] > floored["axes"]["fine_structure"]["ci"][1]  # the floor departs more
    assert not pf["difference"]["ci_contains_zero"]
    assert floored["verdict"]["fine_structure"] == "within the pipeline floor"
    # the same departure against a floor on the other side of 0.5 is a difference
    other = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, floor=_floor_record(-1.2))
    assert other["verdict"]["fine_structure"] == "less typical"
    assert "beyond the pipeline floor" in other["verdict"]["text"]


def test_a_floor_at_chance_keeps_the_verdict():
    rng = np.random.default_rng(0)
    sim, ref = _scores(rng.normal(-0.8, 1.0, 300)), _scores(rng.normal(0.0, 1.0, 300), 10_000)
    floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, floor=_floor_record(0.0))
    assert floored["verdict"]["fine_structure"] == "less typical"
    assert "beyond the pipeline floor" in floored["verdict"]["text"]


def _morph(r_half: np.ndarray, rng: np.random.Generator, start: int) -> pd.DataFrame:
    n = len(r_half)
    return pd.DataFrame({"object_id": np.arange(start, start + n), "flag": np.zeros(n),
                         "failure_reason": [""] * n, "r_half_arcsec": r_half,
                         "sersic_n": np.exp(rng.normal(0.3, 0.3, n)),
                         "concentration": rng.normal(3.0, 0.3, n),
                         "gini": rng.normal(0.5, 0.05, n)})


def test_global_axis_against_a_far_floor():
    rng = np.random.default_rng(4)
    n = 200
    sim, ref = _scores(rng.normal(0, 1, n)), _scores(rng.normal(0, 1, n), 10_000)
    ms = _morph(np.exp(rng.normal(np.log(1.3), 0.2, n)), rng, 0)
    mr = _morph(np.exp(rng.normal(0.0, 0.2, n)), rng, 10_000)
    plain = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, morphology=ms,
                    morphology_reference=mr)
    assert plain["verdict"]["global_structure"] == "differs"
    # a floor whose self-simulation is as much larger than its analytic side
    fs_m = _morph(np.exp(rng.normal(np.log(1.3), 0.2, n)), rng, 0)
    fr_m = _morph(np.exp(rng.normal(0.0, 0.2, n)), rng, 10_000)
    fsum = compare(_scores(rng.normal(0, 1, n)), _scores(rng.normal(0, 1, n), 10_000),
                   n_bootstrap=200, n_null=5, seed=1, morphology=fs_m, morphology_reference=fr_m)
    floor = {"particles": 1000, "n_galaxies": n, "summary": fsum, "curve": []}
    floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, morphology=ms,
                      morphology_reference=mr, floor=floor)
    assert floored["verdict"]["global_structure"] == "within the pipeline floor"
    pf = floored["morphology"]["r_half_arcsec"]["pipeline_floor"]
    assert pf["auroc"]["value"] < 0.35 and pf["auroc"]["difference"]["ci_contains_zero"]
    # and a floor at chance: the difference stands
    same = compare(_scores(rng.normal(0, 1, n)), _scores(rng.normal(0, 1, n), 10_000),
                   n_bootstrap=200, n_null=5, seed=1, morphology=_morph(
                       np.exp(rng.normal(0, 0.2, n)), rng, 0),
                   morphology_reference=_morph(np.exp(rng.normal(0, 0.2, n)), rng, 10_000))
    floored = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1, morphology=ms,
                      morphology_reference=mr,
                      floor={"particles": 1000, "n_galaxies": n, "summary": same, "curve": []})
    assert floored["verdict"]["global_structure"] == "differs"
    assert "beyond the pipeline floor" in floored["verdict"]["text"]
    # a simulation the classifier cannot separate matches, however far the floor
    alike = compare(sim, ref, n_bootstrap=200, n_null=5, seed=1,
                    morphology=_morph(np.exp(rng.normal(0.0, 0.2, n)), rng, 0),
                    morphology_reference=mr, floor=floor)
    assert not alike["axes"]["global_structure"]["pipeline_floor"]["difference"]["ci_contains_zero"]
    assert alike["verdict"]["global_structure"] == "indistinguishable"
    assert "global structure matches" in alike["verdict"]["text"]


def test_skipped_floor_keeps_the_plain_verdict_and_says_why():
    rng = np.random.default_rng(0)
    sim, ref = _scores(rng.normal(-0.8, 1.0, 100)), _scores(rng.normal(0.0, 1.0, 100), 10_000)
    plain = compare(sim, ref, n_bootstrap=100, n_null=5, seed=1)
    skipped = compare(sim, ref, n_bootstrap=100, n_null=5, seed=1,
                      floor={"skipped": "switched off with --no-floor"})
    assert skipped["pipeline_floor"]["skipped"] == "switched off with --no-floor"
    assert skipped["axes"]["fine_structure"]["pipeline_floor"] is None
    assert skipped["verdict"]["fine_structure"] == plain["verdict"]["fine_structure"]
    assert skipped["verdict"]["text"].startswith(plain["verdict"]["text"])
    assert "not measured (switched off with --no-floor)" in skipped["verdict"]["text"]


def test_difference_ci_combines_both_intervals():
    summary = {"axes": {"fine_structure": {"value": 0.7, "ci": [0.6, 0.8]},
                        "global_structure": {"value": None}}, "morphology": {}}
    fs = {"n": {"sim": 50, "reference": 50}, "verdict": {"too_few_galaxies": False},
          "axes": {"fine_structure": {"value": 0.6, "ci": [0.45, 0.75]},
                   "global_structure": {"value": None}}}
    attach_floor(summary, {"particles": 100, "summary": fs})
    d = summary["axes"]["fine_structure"]["pipeline_floor"]["difference"]
    assert d["value"] == pytest.approx(0.1)
    half = math.hypot(0.1, 0.15)  # z * se = half-width of each CI
    assert d["ci"] == pytest.approx([0.1 - half, 0.1 + half])
    share = summary["axes"]["fine_structure"]["pipeline_floor"]["share_of_distance"]
    assert share == pytest.approx(0.5)
    assert summary["axes"]["global_structure"]["pipeline_floor"] is None


def test_vanishing_particles_is_the_count_from_which_every_axis_holds_chance():
    def pt(n, fine, glob):
        return {"particles": n, "n_galaxies": 50,
                "fine_structure": {"value": sum(fine) / 2, "ci": fine},
                "global_structure": {"value": sum(glob) / 2, "ci": glob}}

    curve = [pt(1000, [0.6, 0.7], [0.55, 0.7]), pt(4000, [0.45, 0.6], [0.52, 0.6]),
             pt(20000, [0.4, 0.6], [0.45, 0.6]), pt(100000, [0.42, 0.58], [0.3, 0.55])]
    assert vanishing_particles(curve) == 20000
    assert vanishing_particles(curve[:2]) is None


def test_the_image_classifier_gets_its_floor_one_sided():
    from simcompare.stats.verdict import attach_any_difference_floor

    def summary(value, ci, detected):
        return {"axes": {"any_difference": {"value": value, "ci": ci, "detected": detected}}}

    floor = {"particles": 2000, "any_difference": {"value": 0.75, "ci": [0.68, 0.82],
                                                   "n": {"sim": 100, "reference": 100}}}
    s = attach_any_difference_floor(summary(0.62, [0.57, 0.67], True), floor)
    ax = s["axes"]["any_difference"]
    assert ax["pipeline_floor"]["value"] == 0.75 and ax["pipeline_floor"]["particles"] == 2000
    assert ax["pipeline_floor"]["difference"]["value"] == pytest.approx(-0.13)
    assert ax["floor_verdict"] == "within the pipeline floor"      # below its floor
    far = attach_any_difference_floor(summary(0.95, [0.92, 0.97], True), floor)
    assert far["axes"]["any_difference"]["floor_verdict"] == "differs beyond the pipeline floor"
    chance = attach_any_difference_floor(summary(0.52, [0.47, 0.57], False), floor)
    assert chance["axes"]["any_difference"]["floor_verdict"] == "indistinguishable"
    none = attach_any_difference_floor(summary(0.95, [0.92, 0.97], True),
                                       {"skipped": "switched off with --no-floor"})
    assert none["axes"]["any_difference"]["pipeline_floor"] is None
    assert "floor_verdict" not in none["axes"]["any_difference"]


@pytest.mark.parametrize("sersic_n", [1.0, 4.0])
def test_self_simulation_matches_galsims_drawing_of_the_fit_noise_free(hsc, sersic_n):
    """The floor's two sides draw one profile alike: particles on the mocks' sub-pixel kernel
    against galsim's exact Sersic (the analytic side), noise-free, 4e5 particles.

    The light just outside the stamp counts: without the light map's margin the n = 4
    profile's stamp flux was 0.7% short of galsim's.
    """
    from simcompare.floor import galsim_sersic_images
    from simcompare.psf import PSF

    size, bands = 32, ("g", "i")
    psf = PSF.from_survey(hsc, bands=bands, kernel_size=2 * size + 1, oversample=3)
    cam = Camera(stamp_size=size, pixel_scale_arcsec=hsc.pixel_scale_arcsec, redshift=0.1,
                 kpc_per_arcsec=1.0)
    setup = {"camera": cam, "noise": NoiseModel(sky_sigma=(0.01, 0.01), gain=(0.0, 0.0),
                                                mode="none"),
             "psf": psf.image, "kernel": psf.render_kernel(), "oversample": 3, "bands": bands,
             "zero_point": 27.0, "flux_unit": "counts", "survey": "test",
             "pixel_scale": hsc.pixel_scale_arcsec, "softening_kpc": 0.001, "knn_k": 16,
             "max_flux_outside": 0.5, "blank_sky": None}
    fits = pd.DataFrame({"object_id": [7], "x0": [16.2], "y0": [14.7], "r_e_pixels": [3.0],
                         "sersic_n": [sersic_n], "axis_ratio": [0.6], "pa_rad": [0.5],
                         "flux_g": [100.0], "flux_i": [250.0]})
    s, kept, _ = self_simulation(fits, {"object_id": np.array([7])}, setup,
                                 n_particles=400_000, seed=0)
    assert kept.tolist() == [0]
    from simcompare.psf import survey_psf_profiles

    exact = galsim_sersic_images(fits, psf=None, bands=bands, size=size,
                                 pixel_scale=hsc.pixel_scale_arcsec,
                                 profiles=survey_psf_profiles(hsc, bands))
    for b in range(2):
        img, ref = s.images[0, b], exact[0, b]
        # measured: flux 1.0000, peak 0.997-0.998, L1 0.25-0.46% (particle noise)
        assert img.sum() == pytest.approx(ref.sum(), rel=0.001)
        assert img.max() == pytest.approx(ref.max(), rel=0.005)
        assert np.abs(img - ref).sum() / ref.sum() < 0.01
