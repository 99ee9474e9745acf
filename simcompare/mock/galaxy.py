"""Render one galaxy's star particles as a survey stamp (:func:`render_galaxy`).

SPS fluxes per particle, orientation, adaptive smoothing, the sub-pixel light map
(:func:`simcompare.mock.project.light_map`), the shared stamp preprocessing and noise.
:mod:`simcompare.mock.render` runs it over a simulation in batches; the floor
(:mod:`simcompare.floor`) runs it on its self-simulated galaxies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataFormatError, SimcompareError
from ..sims.base import StarParticles
from ..sps import BandFluxTable
from ..stamps import NeighbourConfig, preprocess_mock
from .blanksky import BLANK_SKY_STREAM, BlankSky
from .observe import Camera, NoiseModel
from .project import light_map, projection_matrix, smoothing_sigma_kpc

__all__ = [
    "CENTRING_STREAM",
    "EXCLUSION_REASONS",
    "RENDER_OVERSAMPLE",
    "GalaxyExcluded",
    "RenderSpec",
    "RenderedStamp",
    "render_galaxy",
]


#: Stream id of a galaxy's sub-pixel centring offset (see ``RenderSpec.subpixel_offset``).
CENTRING_STREAM = 0xCE27

#: Sub-pixels per pixel side of the particle map and of the PSF kernel it is convolved
#: with (analytic PSFs): a compact bulge's peak agrees with galsim within 0.2% at any
#: sub-pixel position, against 1.5% low (and a point source's -7% to +4%) at 1
#: (:func:`simcompare.mock.project.light_map`).
RENDER_OVERSAMPLE = 3

#: Reasons a galaxy can be left out of a mock ImageSet (counted in provenance).
EXCLUSION_REASONS = (
    "invalid_particles",   # non-finite / unphysical particle data
    "no_particles",        # the galaxy has no star particles
    "no_flux_in_view",     # no light lands in the stamp
    "larger_than_stamp",   # more than max_flux_outside of the light falls outside the stamp
    "render_error",        # any other per-galaxy failure (message logged)
)


class GalaxyExcluded(SimcompareError):
    """A galaxy cannot be rendered; ``reason`` is one of :data:`EXCLUSION_REASONS`."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class RenderSpec:
    """Everything a worker needs to render galaxies (picklable, immutable).

    Parameters
    ----------
    bands : tuple of str
    camera : Camera
    table : BandFluxTable
        Flux per formed Msun in these bands at the camera's redshift.
    psf : ndarray, shape (B, Q, Q)
        The render kernel (:meth:`simcompare.psf.PSF.render_kernel`): the optical PSF
        sampled at the centres of the ``oversample`` x ``oversample`` sub-pixels, or a
        PSF image (pixel response included) with ``oversample`` 1.
    noise : NoiseModel
    projection : str
        One of :data:`~simcompare.mock.project.PROJECTIONS`.
    softening_kpc : float
        Floor of the smoothing length [physical kpc].
    knn_k : int
        Neighbour rank for smoothing lengths when the simulation has none.
    knn_thin : int
        Thinning factor of the neighbour search for galaxies of more than
        ``knn_exact_max`` particles (see
        :func:`~simcompare.mock.project.knn_smoothing_length`); 1 = exact.
    knn_exact_max : int
        Galaxies with at most this many particles always use the exact search.
    seed : int
        Base seed; each galaxy uses ``default_rng([seed, object_id])``.
    max_flux_outside : float
        Exclude a galaxy when more than this fraction of its particle flux (summed over
        bands) falls outside the stamp.
    preprocess : bool
        Apply :func:`simcompare.stamps.preprocess_stamp` (when available).
    subpixel_offset : bool
        Place each galaxy's centre at a random offset, uniform in [-0.5, 0.5) pixels in x
        and y, from the stamp centre (its own stream, ``default_rng([seed, object_id,
        CENTRING_STREAM])``), as the whole-pixel recentring of observed cutouts leaves
        them; False (the default here) centres it exactly. :func:`render` sets it.
    neighbours : NeighbourConfig, optional
        Find other sources and deblended pieces on the noisy stamp and replace them by
        noise exactly as ``ingest`` does for observed cutouts (same rule, same
        parameters); None (the default here) skips the search. :func:`render` sets it by
        default: an isolated galaxy has no neighbour, but the deblender cuts bright clumps
        and outskirts off observed and mock galaxies alike, and only the same treatment of
        both keeps that from reading as a difference between the populations.
    blank_sky : BlankSky, optional
        Real blank-sky fields; with ``noise.mode == "blank-sky"`` each noise-free stamp is
        added to a region of one (see :mod:`simcompare.mock.blanksky`).
    oversample : int
        Sub-pixels per pixel side of the particle map, as of ``psf`` (default 1;
        :func:`render` uses :data:`RENDER_OVERSAMPLE` with analytic PSFs).
    """

    bands: tuple[str, ...]
    camera: Camera
    table: BandFluxTable
    psf: np.ndarray
    noise: NoiseModel
    projection: str = "random"
    softening_kpc: float = 0.5
    knn_k: int = 16
    knn_thin: int = 4
    knn_exact_max: int = 4000
    seed: int = 0
    max_flux_outside: float = 0.5
    preprocess: bool = True
    blank_sky: BlankSky | None = None
    neighbours: NeighbourConfig | None = None
    subpixel_offset: bool = False
    oversample: int = 1


@dataclass(frozen=True, eq=False)
class RenderedStamp:
    """One rendered galaxy: image, variance, noise-free model, catalogue extras and mask.

    ``mask`` (uint8 :class:`~simcompare.stamps.StampMask` bits, (B, P, P)) is set for
    blank-sky renders (the field's bad pixels) and when neighbours are searched (pixels
    replaced as neighbours), None otherwise.
    """

    object_id: int
    image: np.ndarray       # (B, P, P) float32, with noise
    variance: np.ndarray    # (B, P, P) float32
    model: np.ndarray       # (B, P, P) float64, noise-free, after PSF
    info: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None


def render_galaxy(
    particles: StarParticles, spec: RenderSpec, *, object_id: int,
    rng: np.random.Generator | None = None,
) -> RenderedStamp:
    """Render one galaxy's star particles as a survey stamp.

    Parameters
    ----------
    particles : StarParticles
        Physical units, positions relative to the galaxy centre.
    spec : RenderSpec
    object_id : int
        Identifier (also seeds the galaxy's random stream when ``rng`` is None).
    rng : numpy.random.Generator, optional
        Random stream for the orientation and noise; default
        ``default_rng([spec.seed, object_id])``. The blank-sky placement has its own
        stream, ``default_rng([spec.seed, object_id, BLANK_SKY_STREAM])``.

    Returns
    -------
    RenderedStamp

    Raises
    ------
    GalaxyExcluded
        With a reason from :data:`EXCLUSION_REASONS`.
    """
    if rng is None:
        rng = np.random.default_rng([int(spec.seed), int(object_id) & 0xFFFFFFFFFFFF])
    n = len(particles)
    if n == 0:
        msg = f"galaxy {object_id} has no star particles"
        raise GalaxyExcluded(msg, reason="no_particles")
    try:
        particles.validate(where=f"galaxy {object_id}")
    except DataFormatError as exc:
        raise GalaxyExcluded(str(exc), reason="invalid_particles") from None
    cam = spec.camera
    p_size = cam.stamp_size
    flux = spec.table.flux(age_gyr=particles.age_gyr, metallicity=particles.metallicity,
                           initial_mass_msun=particles.initial_mass_msun)  # (N, B)
    rot = projection_matrix(spec.projection, positions_kpc=particles.positions_kpc,
                            mass_msun=particles.mass_msun, rng=rng)
    xyz = particles.positions_kpc @ rot.T
    sigma_kpc, smoothing = smoothing_sigma_kpc(
        particles.positions_kpc, hsml_kpc=particles.hsml_kpc, softening_kpc=spec.softening_kpc,
        k=spec.knn_k, thin=1 if n <= spec.knn_exact_max else spec.knn_thin)
    px, py = cam.to_pixels(xyz[:, :2])
    offset = (0.0, 0.0)
    if spec.subpixel_offset:
        orng = np.random.default_rng([int(spec.seed), int(object_id) & 0xFFFFFFFFFFFF,
                                      CENTRING_STREAM])
        offset = tuple(float(v) for v in orng.uniform(-0.5, 0.5, 2))
        px, py = px + offset[0], py + offset[1]
    sigma_pix = sigma_kpc / cam.kpc_per_pixel
    model, in_stamp = light_map(px, py, flux, sigma_pix, p_size, spec.psf,
                                oversample=spec.oversample)
    total = flux.sum(axis=0)
    grand = float(total.sum())
    if not (grand > 0) or not (in_stamp > 0):
        msg = f"galaxy {object_id}: no light in the stamp"
        raise GalaxyExcluded(msg, reason="no_flux_in_view")
    outside = 1.0 - in_stamp / grand
    if outside > spec.max_flux_outside:
        msg = (f"galaxy {object_id}: {outside:.0%} of its light falls outside the "
               f"{p_size}-pixel stamp; use a larger stamp_size")
        raise GalaxyExcluded(msg, reason="larger_than_stamp")
    variance = spec.noise.variance(model)
    image = spec.noise.apply(model, rng=rng)
    info: dict[str, Any] = {}
    sky_row: dict[str, Any] = {}
    raw_mask = planes = mask = None
    if spec.noise.mode == "blank-sky":
        if spec.blank_sky is None:
            msg = ("noise='blank-sky' needs blank-sky fields: set [noise] blank_sky in the "
                   "survey descriptor")
            raise ConfigError(msg)
        prng = np.random.default_rng([int(spec.seed), int(object_id) & 0xFFFFFFFFFFFF,
                                      BLANK_SKY_STREAM])
        k, x0, y0 = spec.blank_sky.place(prng, p_size)
        sky_img, sky_var, raw_mask = spec.blank_sky.region(k, x0, y0, p_size)
        planes = spec.blank_sky.mask_planes[k]
        image = image + sky_img
        variance = variance + sky_var
        sky_row = {"blank_sky_field": spec.blank_sky.field_ids[k], "blank_sky_x": x0,
                   "blank_sky_y": y0}
    if spec.preprocess:
        image, variance, info, mask = preprocess_mock(image, variance, stamp_size=p_size, rng=rng,
                                                      mask=raw_mask, mask_planes=planes,
                                                      neighbours=spec.neighbours)
    elif raw_mask is not None:
        from ..stamps import StampMask, bad_pixels

        bad = bad_pixels(raw_mask, planes=planes) | ~np.isfinite(image) | ~(variance > 0)
        mask = np.where(bad, np.uint8(StampMask.BAD), np.uint8(0))
    if spec.noise.mode != "blank-sky" and spec.neighbours is None:
        mask = None
    r_half_kpc = _half_light_radius(xyz[:, :2], flux.sum(axis=1))
    row = {
        "projection": spec.projection,
        "view_x": float(rot[2, 0]), "view_y": float(rot[2, 1]), "view_z": float(rot[2, 2]),
        "n_star_particles": int(n),
        "smoothing": smoothing,
        "smoothing_median_arcsec": float(np.median(sigma_kpc) / cam.kpc_per_arcsec),
        "flux_fraction_in_stamp": in_stamp / grand,
        "half_light_radius_projected_kpc": r_half_kpc,
        "half_light_radius_projected_arcsec": r_half_kpc / cam.kpc_per_arcsec,
        "observation_redshift": cam.redshift,
        "centre_offset_x_pix": offset[0], "centre_offset_y_pix": offset[1],
        **sky_row,
    }
    for b, band in enumerate(spec.bands):
        row[f"flux_{band}"] = float(total[b])
        row[f"mag_{band}"] = float(spec.table.zero_point - 2.5 * math.log10(total[b])) \
            if total[b] > 0 else float("nan")
    for k, v in info.items():
        if isinstance(v, int | float | np.integer | np.floating):
            row[f"prep_{k}"] = float(v)
    return RenderedStamp(object_id=int(object_id), image=image.astype(np.float32),
                         variance=variance.astype(np.float32), model=model, info=row,
                         mask=mask)


def _half_light_radius(xy: np.ndarray, f: np.ndarray) -> float:
    r = np.sqrt((xy**2).sum(axis=1))
    order = np.argsort(r)
    c = np.cumsum(f[order])
    if c[-1] <= 0:
        return float("nan")
    return float(r[order][np.searchsorted(c, 0.5 * c[-1])])
