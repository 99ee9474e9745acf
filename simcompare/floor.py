"""The pipeline's own floor: a self-simulation of the observed sample.

A simulation rendered by :mod:`simcompare.mock` and a survey sample ingested by
:mod:`simcompare.observed` reach the comparison through different paths (particles,
smoothing and a noise model on one side; real pixels on the other). Those paths alone
can move every axis off 0.5, even for a simulation of the very population the survey
observed. The floor measures how far:

1. **The galaxies.** The held-out observed test split (at most ``max_galaxies`` of it,
   a seeded random subset), masked pixels filled as for training, split at random into
   two disjoint halves: the first is self-simulated, the second re-rendered
   analytically. Disjoint halves keep the floor a comparison of two populations, as
   the real one is: with the same galaxies on both sides the cross-validated classifier
   of the global axis sees each galaxy's twin in its training folds with the other
   label and falls far below 0.5 (0.07 on 25 demo pairs).
2. **Their smooth fits.** One elliptical Sersic profile per galaxy, fitted and
   re-rendered with fresh noise drawn from the image's variance by
   :func:`simcompare.density.background.sersic_background_images` with the survey's
   own PSF and noise (the background stage's method, ``SURVEY_CONDITIONS``). These
   *analytic re-renderings* are the floor's reference side.
3. **The self-simulation.** Each fit turned into ``n_particles`` equal-flux star
   particles: projected radii drawn exactly from the Sersic profile (the enclosed-light
   fraction of a 2-D Sersic profile is ``P(2n, b_n (R/r_e)^(1/n))``, so
   ``b_n (R/r_e)^(1/n)`` is Gamma(2n)-distributed; truncated at 8 r_e like the analytic
   mixture), the fit's axis ratio and position angle, its centre; a line-of-sight depth
   drawn from a Gaussian whose sigma is the projected minor-axis half-light radius
   ``r_e sqrt(q)`` (it only sets the nearest-neighbour smoothing lengths); per-band
   fluxes the fit's. The particles are placed at the mocks' observation redshift
   (their ``kpc_per_arcsec``) and rendered by
   :func:`simcompare.mock.render.render_galaxy`, the function the ``render`` stage uses:
   the simulation's softening floor and nearest-neighbour smoothing (the ``knn_k`` of
   the render), the pixel-integrated deposit, the mocks' effective PSF, the mocks'
   noise model and the shared stamp preprocessing.
4. **The axes.** Both sets are scored by the trained model(s) and measured by
   :func:`simcompare.morphology.measure`; :func:`simcompare.stats.compare.compare_tables` then
   gives every axis (the fine-structure AUROC, the global-structure classifier AUROC,
   the per-parameter statistics) with the CIs of the real comparison, the self-simulation
   in the simulation's place and the analytic re-renderings in the reference's.

The particle count is by default the median ``n_star_particles`` of the rendered
mocks (what the simulation itself gives a typical galaxy). A simulation of published
images has no particles; its floor is skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import imageset
from ._io import write_json_atomic
from .errors import DataFormatError
from .stats.verdict import vanishing_particles  # the floor curve's rule, also importable from here

__all__ = [
    "CURVE_PARTICLES",
    "analytic_rerenderings",
    "measure_floor",
    "sample_sersic_particles",
    "self_simulation",
    "typical_particle_count",
    "vanishing_particles",
]

log = logging.getLogger(__name__)

#: Particle counts of the floor-vs-particle-count curve (``--floor-curve``).
CURVE_PARTICLES = (1000, 4000, 20000, 100000)
#: Sersic profiles are truncated at this many r_e (as the analytic Gaussian mixture is).
TRUNCATION_RE = 8.0
# a separate random stream of the floor (the analytic noise and the particle draws)
_FLOOR_STREAM = 0xF100


def typical_particle_count(mocks: str | os.PathLike) -> tuple[int | None, str]:
    """The median star-particle count of the rendered galaxies and where it came from."""
    cat = imageset.read_catalog(mocks)
    counts = np.asarray(cat.get("n_star_particles", []), float)
    counts = counts[np.isfinite(counts) & (counts > 0)]
    if counts.size == 0:
        return None, "the mocks carry no star-particle counts (a simulation of images)"
    return round(float(np.median(counts))), (
        f"median n_star_particles of the {counts.size} rendered galaxies")


def sample_sersic_particles(
    *, r_e_pix: float, sersic_n: float, axis_ratio: float, pa_rad: float, x0: float,
    y0: float, n_particles: int, kpc_per_pixel: float, center_pix: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions (N, 3) [kpc, relative to the stamp centre] drawn from a Sersic profile.

    ``r_e_pix`` is the geometric-mean half-light radius in pixels, ``pa_rad`` the angle
    of the major axis from the pixel x axis (as in
    :func:`simcompare.density.background.render_sersic`), ``x0, y0`` the centre (array
    indices). The line-of-sight coordinate is Gaussian with sigma ``r_e sqrt(q)``.

    Parameters
    ----------
    r_e_pix : float
        Geometric-mean half-light radius [pixels].
    sersic_n : float
        Sersic index (clipped to 0.2-10).
    axis_ratio : float
        Minor over major axis.
    pa_rad : float
        Angle of the major axis from the pixel x axis [radians].
    x0, y0 : float
        Profile centre [array indices].
    n_particles : int
        Particles to draw.
    kpc_per_pixel : float
        Physical size of one pixel at the galaxy [kpc].
    center_pix : float
        Stamp centre [array index] the positions are relative to.
    rng : numpy.random.Generator
        Random stream.

    Returns
    -------
    ndarray, shape (N, 3)
        Positions [kpc] relative to the stamp centre; the profile is cut at
        ``TRUNCATION_RE`` half-light radii.
    """
    from scipy.special import gammainc, gammaincinv

    from .density.background import sersic_bn

    n = float(np.clip(sersic_n, 0.2, 10.0))
    q = float(np.clip(axis_ratio, 1e-3, 1.0))
    b = sersic_bn(n)
    u_max = float(gammainc(2 * n, b * TRUNCATION_RE ** (1 / n)))
    u = rng.uniform(0.0, u_max, n_particles)
    radius = r_e_pix * (gammaincinv(2 * n, u) / b) ** n
    theta = rng.uniform(0.0, 2 * math.pi, n_particles)
    xp = radius * np.cos(theta) / math.sqrt(q)
    yp = radius * np.sin(theta) * math.sqrt(q)
    c, s = math.cos(pa_rad), math.sin(pa_rad)
    x = c * xp - s * yp + (x0 - center_pix)
    y = s * xp + c * yp + (y0 - center_pix)
    z = rng.standard_normal(n_particles) * r_e_pix * math.sqrt(q)
    return np.column_stack([x, y, z]) * kpc_per_pixel


class _FixedFluxes:
    """Stands in for the SPS table: every particle carries its share of the fit's fluxes."""

    def __init__(self, fluxes: np.ndarray, zero_point: float) -> None:
        self.per_unit = np.clip(np.asarray(fluxes, np.float64), 0.0, None)
        self.zero_point = float(zero_point)

    def flux(self, *, age_gyr: Any, metallicity: Any, initial_mass_msun: Any) -> np.ndarray:
        m = np.asarray(initial_mass_msun, np.float64)
        return m[:, None] * self.per_unit[None, :]


def _mock_setup(mocks: Path, *, survey: Any, workspace: Path) -> dict[str, Any]:
    """Camera, PSF, noise model and render options of the mocks (from their provenance).

    The PSF and the noise are ``survey``'s: the mocks' own when they were rendered through
    it, else (``score --mock-survey``) drawn from ``survey``'s descriptor as the render
    stage draws them, so that the floor holds what the render path does to the observed
    survey's galaxies (particles, smoothing, centring) and not a mock descriptor's own
    departure from that survey, which is for the axes to see.
    """
    from .mock.observe import Camera, NoiseModel

    s = imageset.read(mocks, index=np.zeros(1, np.int64))
    prov = dict(s.provenance)
    cfg = dict(prov.get("config", {}))
    need = ("observation_redshift", "stamp_size", "sky_sigma", "gain", "noise")
    missing = [k for k in need if k not in cfg] + ([] if "kpc_per_arcsec" in prov
                                                   else ["kpc_per_arcsec"])
    if missing or s.psf is None:
        msg = (f"{mocks}: the mocks' provenance lacks {missing or ['psf']}; render them again "
               "with this version")
        raise DataFormatError(msg)
    camera = Camera(stamp_size=int(cfg["stamp_size"]), pixel_scale_arcsec=s.pixel_scale_arcsec,
                    redshift=float(cfg["observation_redshift"]),
                    kpc_per_arcsec=float(prov["kpc_per_arcsec"]))
    noise = NoiseModel(sky_sigma=tuple(cfg["sky_sigma"]), gain=tuple(cfg["gain"]),
                       mode=str(cfg["noise"]))
    blank_sky = None
    if noise.mode == "blank-sky":
        from .mock.blanksky import BlankSky, resolve_blank_sky_path

        blank_sky = BlankSky.load(
            resolve_blank_sky_path(survey.noise.blank_sky, workspace=workspace,
                                   descriptor_source=survey.source),
            bands=s.bands, pixel_scale_arcsec=s.pixel_scale_arcsec,
            stamp_size=camera.stamp_size)
    if cfg.get("survey", survey.name) != survey.name:  # rendered through another descriptor
        noise = NoiseModel.from_survey(survey, bands=s.bands, mode=str(cfg["noise"]))
    # the renderer's kernel (the optical PSF on the mocks' sub-pixel grid), not the
    # effective PSF the ImageSet records: that one holds the pixel response, which the
    # deposit already applies, and would blur the self-simulations twice by the pixel
    from .psf import PSF

    psf = PSF.from_survey(survey, bands=s.bands, workspace=workspace,
                          kernel_size=2 * camera.stamp_size + 1,
                          oversample=int(cfg.get("oversample", 1)))
    return {"camera": camera, "noise": noise, "psf": psf.image, "kernel": psf.render_kernel(),
            "oversample": psf.oversample,
            "bands": tuple(s.bands), "zero_point": s.zero_point, "flux_unit": s.flux_unit,
            "survey": s.survey, "pixel_scale": s.pixel_scale_arcsec,
            "softening_kpc": float(cfg.get("softening_kpc", 0.5)),
            "knn_k": int(cfg.get("knn_k", 16)),
            "max_flux_outside": float(cfg.get("max_flux_outside", 0.5)),
            "blank_sky": blank_sky, "neighbours": _neighbour_config(cfg.get("neighbours"))}


def _neighbour_config(d: dict[str, Any] | None) -> Any:
    """The mocks' neighbour search (None when they were rendered without one)."""
    if not d:
        return None
    from .stamps import NeighbourConfig

    return NeighbourConfig(**d)


def _mask_like_ingest(s: imageset.ImageSet, neighbours: Any, *, seed: int) -> imageset.ImageSet:
    """``s`` with other sources and deblended pieces replaced as ``ingest`` replaces them."""
    from .stamps import preprocess_mock

    images, variances, masks = [], [], []
    for i, oid in enumerate(np.asarray(s.object_id)):
        image, variance, _, mask = preprocess_mock(
            s.images[i], s.variance[i], stamp_size=s.images.shape[-1],
            rng=np.random.default_rng([seed, int(oid) & 0xFFFFFFFFFFFF, 3]), neighbours=neighbours)
        images.append(image)
        variances.append(variance)
        masks.append(mask)
    return replace(s, images=np.stack(images), variance=np.stack(variances), mask=np.stack(masks))


#: The Sersic indices galsim draws (the fits are clipped to it on both sides of the floor).
GALSIM_SERSIC_N = (0.3, 6.2)


def galsim_sersic_images(fits: Any, *, psf: np.ndarray | None, bands: Any, size: int,
                         pixel_scale: float, profiles: list | None = None) -> np.ndarray:
    """Noise-free images (N, B, size, size) of the fitted Sersic profiles, drawn by galsim.

    Each profile is the fit's (``r_e_pixels`` the geometric-mean half-light radius,
    ``axis_ratio``, ``pa_rad`` from the pixel x axis, centre ``x0, y0`` in array
    indices), cut at :data:`TRUNCATION_RE` half-light radii and carrying the fit's flux
    per band inside the cut, as :func:`sample_sersic_particles` draws it; convolved with
    ``profiles`` (galsim PSF profiles per band, before the pixel: the survey's analytic
    PSF, drawn with the pixel) or else with the effective PSF images ``psf`` ((B, Q, Q)
    or per object (N, B, Q, Q); pixel response included, so drawn without a second
    pixel). The Gaussian-mixture Sersic the fits use is 1.7% (n = 2.5) to 5.6% (n = 4)
    low at the peak, which the self-simulations' exact profiles would read as a pipeline
    difference.

    Parameters
    ----------
    fits : pandas.DataFrame
        One row per galaxy: ``x0, y0, r_e_pixels, sersic_n, axis_ratio, pa_rad`` and
        ``flux_<band>`` for every band.
    psf : ndarray or None
        Effective PSF images, (B, Q, Q) or (N, B, Q, Q); unused with ``profiles``.
    bands : sequence of str
        Band names, in the order of the output.
    size : int
        Stamp side [pixels].
    pixel_scale : float
        Pixel side [arcsec].
    profiles : list of galsim profiles, optional
        The PSF of every band before the pixel response.

    Returns
    -------
    ndarray, float64, shape (N, B, size, size)
    """
    import galsim

    n_obj, nb = len(fits), len(bands)
    out = np.zeros((n_obj, nb, size, size))
    psf_objs, method = None, "no_pixel"
    if profiles is not None:
        psf_objs, method = list(profiles), "auto"
    elif psf.ndim == 3:
        psf_objs = [galsim.InterpolatedImage(galsim.Image(psf[b] / psf[b].sum(), scale=pixel_scale))
                    for b in range(nb)]
    centre = (size - 1) / 2
    for i, fit in enumerate(fits.itertuples(index=False)):
        n = float(np.clip(fit.sersic_n, *GALSIM_SERSIC_N))
        r = float(fit.r_e_pixels) * pixel_scale
        # r_e of the untruncated profile, as the particles are drawn; withFlux below
        # sets the flux inside the cut
        gal = galsim.Sersic(n, half_light_radius=r, trunc=TRUNCATION_RE * r,
                            flux_untruncated=True)
        gal = gal.shear(q=float(np.clip(fit.axis_ratio, 1e-3, 1.0)),
                        beta=float(fit.pa_rad) * galsim.radians)
        for b, band in enumerate(bands):
            p = psf_objs[b] if psf_objs is not None else galsim.InterpolatedImage(
                galsim.Image(psf[i, b] / psf[i, b].sum(), scale=pixel_scale))
            flux = max(float(getattr(fit, f"flux_{band}")), 0.0)
            out[i, b] = galsim.Convolve(gal.withFlux(flux), p).drawImage(
                nx=size, ny=size, scale=pixel_scale, method=method,
                offset=(float(fit.x0) - centre, float(fit.y0) - centre)).array
    return out


def analytic_rerenderings(
    test: imageset.ImageSet, *, noise_sigma: np.ndarray, fill_seed: int, seed: int,
    survey: Any = None,
) -> tuple[imageset.ImageSet, Any]:
    """Sersic fits of ``test`` and their re-renderings with the survey's PSF and noise.

    The fits are the background model's (:func:`~simcompare.density.background.
    sersic_background_images`); the re-renderings are galsim's exact drawings of them
    (:func:`galsim_sersic_images`) plus noise from the test set's pixel variance.

    Parameters
    ----------
    test : ImageSet
        Held-out observed galaxies.
    noise_sigma : ndarray
        Per-band sky sigma of the model's preprocessing (fills masked pixels).
    fill_seed : int
        Seed of the masked-pixel fill (the model's own).
    seed : int
        Seed of the re-renderings' noise.
    survey : SurveyDescriptor, optional
        With an analytic PSF, the re-renderings are convolved with it (as the mocks
        are, whole wings included); otherwise, and for PSF images, with the test set's
        PSF images.

    Returns
    -------
    (ImageSet, DataFrame)
        The re-renderings (the test set's catalogue, PSF and the variance the noise was
        drawn from) and the fits table.
    """
    from .density.background import SURVEY_CONDITIONS, sersic_background_images
    from .density.data import pixel_variance, prepared_images

    filled = prepared_images(test, sigma=noise_sigma, seed=fill_seed)
    _, fits = sersic_background_images(
        test, filled, rng=np.random.default_rng([seed, _FLOOR_STREAM]),
        conditions=SURVEY_CONDITIONS)
    # galsim's Sersic range; the self-simulations draw the same clipped index
    fits["sersic_n"] = np.clip(fits["sersic_n"].to_numpy(float), *GALSIM_SERSIC_N)
    var = pixel_variance(filled, variance=test.variance, mask=test.mask)
    profiles = None
    if survey is not None and survey.psf.kind != "image":
        from .psf import survey_psf_profiles

        profiles = survey_psf_profiles(survey, test.bands)
    models = galsim_sersic_images(fits, psf=np.asarray(test.psf, np.float64), bands=test.bands,
                                  size=filled.shape[-1], pixel_scale=test.pixel_scale_arcsec,
                                  profiles=profiles)
    noise = np.random.default_rng([seed, _FLOOR_STREAM, 4]).standard_normal(models.shape)
    images = models + noise * np.sqrt(var)
    out = imageset.ImageSet(
        images=images.astype(np.float32), catalog=dict(test.catalog), kind="observed",
        survey=test.survey, bands=test.bands, pixel_scale_arcsec=test.pixel_scale_arcsec,
        zero_point=test.zero_point, flux_unit=test.flux_unit, variance=var, psf=test.psf,
        provenance={"stage": "floor", "what": "analytic Sersic re-renderings of the held-out "
                    "observed galaxies (survey PSF and noise)", "seed": seed})
    return out, fits


def self_simulation(
    fits: Any, catalog: dict[str, np.ndarray], setup: dict[str, Any], *, n_particles: int,
    seed: int,
) -> tuple[imageset.ImageSet | None, np.ndarray, dict[str, int]]:
    """Render every fit as ``n_particles`` star particles through the mock path.

    Parameters
    ----------
    fits : DataFrame
        Sersic fits (:func:`analytic_rerenderings`), one row per galaxy.
    catalog : dict of ndarray
        The galaxies' catalogue columns (copied to the output).
    setup : dict
        The mocks' rendering set-up (:func:`_mock_setup`): camera, PSF (``psf``, recorded;
        ``kernel`` and ``oversample``, rendered with: default ``psf`` and 1), noise,
        softening and smoothing.
    n_particles : int
        Star particles per galaxy.
    seed : int
        Seed of the particle draws and the noise.

    Returns
    -------
    (ImageSet or None, ndarray, dict)
        The ImageSet (None when nothing rendered), the row positions of ``fits`` that
        were rendered and the exclusion counts.
    """
    from .mock.render import GalaxyExcluded, RenderSpec, render_galaxy
    from .sims.base import StarParticles

    cam = setup["camera"]
    bands = setup["bands"]
    images, variances, masks, rows, kept = [], [], [], [], []
    excluded: dict[str, int] = {}
    flux_cols = [f"flux_{b}" for b in bands]
    for i, fit in enumerate(fits.itertuples(index=False)):
        oid = int(fit.object_id)
        rng = np.random.default_rng([int(seed), oid & 0xFFFFFFFFFFFF, _FLOOR_STREAM,
                                     int(n_particles)])
        pos = sample_sersic_particles(
            r_e_pix=float(fit.r_e_pixels), sersic_n=float(fit.sersic_n),
            axis_ratio=float(fit.axis_ratio), pa_rad=float(fit.pa_rad), x0=float(fit.x0),
            y0=float(fit.y0), n_particles=n_particles, kpc_per_pixel=cam.kpc_per_pixel,
            center_pix=cam.center_pix, rng=rng)
        ones = np.full(n_particles, 1.0 / n_particles)
        particles = StarParticles(positions_kpc=pos, mass_msun=ones, initial_mass_msun=ones,
                                  age_gyr=np.ones(n_particles),
                                  metallicity=np.full(n_particles, 0.02))
        fluxes = np.array([getattr(fit, c) for c in flux_cols], np.float64)
        spec = RenderSpec(bands=bands, camera=cam, table=_FixedFluxes(fluxes, setup["zero_point"]),
                          psf=setup.get("kernel", setup["psf"]), noise=setup["noise"],
                          projection="z",
                          softening_kpc=setup["softening_kpc"], knn_k=setup["knn_k"],
                          seed=int(seed), max_flux_outside=setup["max_flux_outside"],
                          blank_sky=setup["blank_sky"], neighbours=setup.get("neighbours"),
                          oversample=setup.get("oversample", 1))
        try:
            st = render_galaxy(particles, spec, object_id=oid, rng=rng)
        except GalaxyExcluded as exc:
            excluded[exc.reason] = excluded.get(exc.reason, 0) + 1
            continue
        images.append(st.image)
        variances.append(st.variance)
        masks.append(st.mask)
        rows.append(st.info)
        kept.append(i)
    if not images:
        return None, np.zeros(0, np.int64), excluded
    kept_a = np.asarray(kept, np.int64)
    cat = {k: np.asarray(v)[kept_a] for k, v in catalog.items()}
    for key in ("n_star_particles", "smoothing_median_arcsec", "flux_fraction_in_stamp"):
        cat[f"floor_{key}"] = np.asarray([float(r[key]) for r in rows])
    with_mask = all(m is not None for m in masks)
    out = imageset.ImageSet(
        images=np.stack(images).astype(np.float32), catalog=cat, kind="mock",
        survey=setup["survey"], bands=bands, pixel_scale_arcsec=setup["pixel_scale"],
        zero_point=setup["zero_point"], flux_unit=setup["flux_unit"],
        variance=np.stack(variances).astype(np.float32),
        mask=np.stack(masks) if with_mask else None, psf=setup["psf"].astype(np.float32),
        provenance={"stage": "floor", "what": "self-simulation of the held-out observed "
                    "galaxies' Sersic fits as star particles, rendered through the mock path",
                    "n_particles": int(n_particles), "seed": int(seed),
                    "softening_kpc": setup["softening_kpc"], "knn_k": setup["knn_k"],
                    "exclusions": excluded})
    return out, kept_a, excluded


def _test_subset(observed_test: Path, *, max_galaxies: int | None, seed: int) -> imageset.ImageSet:
    cat = imageset.read_catalog(observed_test)
    n = len(cat["object_id"])
    if max_galaxies is not None and n > max_galaxies:
        rng = np.random.default_rng([seed, _FLOOR_STREAM, 1])
        index = np.sort(rng.choice(n, size=max_galaxies, replace=False))
        return imageset.read(observed_test, index=index)
    return imageset.read(observed_test)


def measure_floor(
    *, observed_test: Path, mocks: Path, model: Path, out: Path, survey: Any,
    workspace: Path, column: str, n_particles: int | None = None,
    curve: tuple[int, ...] = (), max_galaxies: int | None = None, n_bootstrap: int = 1000,
    n_null: int = 10, seed: int = 0, device: str = "auto", workers: int = 1,
    progress: bool = False, cluster: Any = None, orientations: int | None = None,
    classifier_epochs: int | None = None,
) -> dict[str, Any]:
    """Measure the pipeline floor; writes ``floor.json`` (and the floor's sets) into ``out``.

    Parameters
    ----------
    observed_test : path
        The held-out observed test split (ImageSet).
    mocks : path
        The rendered simulation (ImageSet; its provenance gives camera, smoothing and
        neighbour search, and the PSF and noise when it was rendered through ``survey``).
    survey : SurveyDescriptor
        The observed survey: its PSF and noise are the self-simulations' (also when the
        mocks went through another descriptor, ``score --mock-survey``).
    model : path
        The trained model folder (``training.json``).
    out : path
        Folder receiving ``floor.json``, the two image sets, score and morphology tables.
    column : str
        The score column the comparison uses.
    n_particles : int, optional
        Particles per self-simulated galaxy; default the mocks' median count.
    curve : tuple of int
        Further particle counts at which to measure the floor (the floor-vs-particle-count
        curve); empty: none.
    max_galaxies : int, optional
        At most this many test galaxies (a seeded random subset).
    cluster : Cluster, optional
        The run's workers (morphology of the floor's sets runs on them); default
        ``workers`` local processes.
    orientations : {1, 4, 8}, optional
        Orientations every image is scored in (as the run's own scores;
        :func:`simcompare.density.evaluate`); default the model's.
    classifier_epochs : int, optional
        Also the any-difference axis' floor at the simulation's count: the image
        classifier of :mod:`simcompare.c2st` (this many epochs per fold, as the run's own)
        trained to tell the self-simulated from the analytic stamps, out-of-fold AUROC
        with its bootstrap CI (``any_difference`` in the record). None: not measured.

    Returns
    -------
    dict
        ``{"particles", "particles_source", "n_galaxies", "exclusions", "summary"}`` where
        ``summary`` is :func:`simcompare.stats.compare.compare_tables`'s record of the self-simulation
        against the analytic re-renderings, plus ``curve`` (one entry per count) and, when
        the floor cannot be measured, ``skipped``.
    """
    from ._progress import bar as _bar
    from .density import evaluate
    from .morphology import measure
    from .stats.compare import compare_tables

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    typical, source = typical_particle_count(mocks)
    if n_particles is None:
        n_particles = typical
    else:
        source = "set with --floor-particles"
    record: dict[str, Any] = {"schema": "simcompare.floor", "schema_version": 1,
                              "particles": n_particles, "particles_source": source,
                              "typical_particles": typical, "seed": seed}
    if n_particles is None:
        record["skipped"] = f"no particle count: {source}"
        write_json_atomic(out / "floor.json", record)
        return record
    info = json.loads((Path(model) / "training.json").read_text())
    test = _test_subset(observed_test, max_galaxies=max_galaxies, seed=seed)
    setup = _mock_setup(mocks, survey=survey, workspace=workspace)
    if list(test.bands) != list(setup["bands"]):
        record["skipped"] = (f"the mocks' bands {list(setup['bands'])} differ from the observed "
                             f"bands {list(test.bands)}")
        write_json_atomic(out / "floor.json", record)
        return record
    analytic, fits = analytic_rerenderings(test, noise_sigma=np.asarray(info["noise_sigma"]),
                                           fill_seed=int(info["seed"]), seed=seed, survey=survey)
    fits.to_parquet(out / "fits.parquet")
    if setup["neighbours"] is not None:  # the observed path's neighbour search, as the mocks had
        analytic = _mask_like_ingest(analytic, setup["neighbours"], seed=seed)
    # one bar for the stage: the analytic reference, then every particle count
    counts = [int(n_particles)] + [int(c) for c in curve if int(c) != int(n_particles)]
    steps = _bar(desc="floor", total=1 + len(counts), enable=progress, unit="set")
    steps.set_postfix_str("analytic re-renderings")
    order = np.random.default_rng([seed, _FLOOR_STREAM, 2]).permutation(len(test))
    half_sim = np.sort(order[: (len(order) + 1) // 2])
    half_ref = np.sort(order[(len(order) + 1) // 2:])
    record["halves"] = {"self_simulated": int(half_sim.size), "analytic": int(half_ref.size)}
    sim_fits = fits.iloc[half_sim].reset_index(drop=True)
    sim_cat = {k: np.asarray(v)[half_sim] for k, v in test.catalog.items()}
    ref_set = analytic.subset(half_ref)
    ref_path = imageset.write(out / "analytic.h5", ref_set)
    ref_scores = evaluate(model, ref_path, out=out / "analytic_scores.parquet", device=device,
                          progress=progress, orientations=orientations)
    ref_morph = measure(ref_path, out=out / "analytic_morphology.parquet",
                        **_pool(workers, cluster, half_ref.size), seed=seed, progress=progress)
    steps.update()

    def one(count: int, name: str, classify: bool = False) -> dict[str, Any]:
        steps.set_postfix_str(f"{count} particles")
        t0 = time.perf_counter()
        sset, kept, excluded = self_simulation(sim_fits, sim_cat, setup,
                                               n_particles=int(count), seed=seed)
        entry: dict[str, Any] = {"particles": int(count), "exclusions": excluded,
                                 "n_galaxies": int(kept.size)}
        if sset is None:
            entry["skipped"] = f"no self-simulated galaxy could be rendered ({excluded})"
            return entry
        path = imageset.write(out / f"{name}.h5", sset)
        t1 = time.perf_counter()
        scores = evaluate(model, path, out=out / f"{name}_scores.parquet", device=device,
                          progress=progress, orientations=orientations)
        morph = measure(path, out=out / f"{name}_morphology.parquet",
                        **_pool(workers, cluster, len(sset)), seed=seed, progress=progress)
        t2 = time.perf_counter()
        entry["summary"] = compare_tables(scores, ref_scores, column=column, n_bootstrap=n_bootstrap,
                                   n_null=max(1, n_null), seed=seed, morphology=morph,
                                   morphology_reference=ref_morph)
        if classify:  # the image classifier's floor, on the sets in memory
            entry["any_difference"] = _classifier_floor(
                sset, ref_set, model=Path(model), epochs=int(classifier_epochs),
                n_bootstrap=n_bootstrap, seed=seed)
        entry["seconds"] = {"render": round(t1 - t0, 2), "score_and_measure": round(t2 - t1, 2),
                            "compare": round(time.perf_counter() - t2, 2)}
        log.info("floor at %d particles: %d galaxies, %s", count, kept.size, entry["seconds"])
        steps.update()
        return entry

    main = one(n_particles, "self_simulation", classify=classifier_epochs is not None)
    record.update(main)
    record["particles"] = int(n_particles)
    record["curve"] = []
    for count in curve:
        entry = main if int(count) == int(n_particles) else one(int(count), f"self_simulation_{count}")
        record["curve"].append(_curve_point(entry))
    steps.close()
    write_json_atomic(out / "floor.json", record)
    return record


def _classifier_floor(sim: imageset.ImageSet, ref: imageset.ImageSet, *, model: Path,
                      epochs: int, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The image classifier between the self-simulated and the analytic stamps.

    The stamps are prepared as the appearance stage prepares the run's (masked pixels
    filled, then the flow's preprocessing) and cross-fitted in the same way
    (:func:`simcompare.c2st.out_of_fold_probabilities`); the AUROC with its bootstrap CI
    over galaxies. No observed-vs-observed null here: the run's own axis has it.
    """
    from .c2st import C2STOptions, model_views, out_of_fold_probabilities
    from .stats.classifier import auroc_with_ci

    t0 = time.perf_counter()
    xs = [x for _, x in model_views(model, sim, ref)]
    opts = C2STOptions(epochs=epochs)
    if min(len(x) for x in xs) < opts.n_folds:
        return {"value": None, "ci": None,
                "skipped": f"fewer than {opts.n_folds} stamps on a side"}
    x = np.concatenate(xs)
    y = np.concatenate([np.ones(len(xs[0]), np.int64), np.zeros(len(xs[1]), np.int64)])
    p, fold = out_of_fold_probabilities(x, y, opts=opts, seed=seed)
    res = auroc_with_ci(p, y, n_bootstrap=n_bootstrap,
                        rng=np.random.default_rng([seed, _FLOOR_STREAM, 3]), fold=fold)
    return {"value": res["value"], "ci": res["ci"],
            "n": {"sim": len(xs[0]), "reference": len(xs[1])},
            "method": f"out-of-fold AUROC of the image classifier ({opts.n_folds}-fold, "
                      f"{epochs} epochs per fold), self-simulated against analytic stamps",
            "seconds": round(time.perf_counter() - t0, 2)}


def _pool(workers: int, cluster: Any, n_images: int) -> dict[str, Any]:
    """Workers for one morphology call: only beyond a few dozen stamps do they pay."""
    if n_images < 64:
        return {"workers": 1}
    return {"cluster": cluster} if cluster is not None else {"workers": int(workers)}


def _curve_point(entry: dict[str, Any]) -> dict[str, Any]:
    """One point of the floor curve: both axes' values and CIs at one particle count."""
    point: dict[str, Any] = {"particles": entry["particles"], "n_galaxies": entry["n_galaxies"],
                             "seconds": entry.get("seconds")}
    if "summary" not in entry:
        point["skipped"] = entry.get("skipped")
        return point
    axes = entry["summary"]["axes"]
    for axis in ("fine_structure", "global_structure"):
        a = axes.get(axis) or {}
        point[axis] = {"value": a.get("value"), "ci": a.get("ci")}
    return point
