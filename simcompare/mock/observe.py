"""Camera, cosmology, PSF and noise: from a deposited flux map to a survey image.

* :class:`Camera`: stamp size, pixel scale and the physical size of a pixel at the
  observation redshift (angular-diameter distance of the simulation's cosmology).
  Fluxes already carry the luminosity distance (see :mod:`simcompare.sps`).
* :class:`~simcompare.psf.PSF` (from :mod:`simcompare.psf`, the package's one PSF
  builder, re-exported here): the per-band *effective* PSF, and the render kernel that
  :func:`convolve` applies to the pixel-integrated particle map, so that the pixel
  response is counted exactly once.
* :class:`NoiseModel`: sky Gaussian noise from the descriptor's per-pixel ``sky_sigma``
  plus source Poisson noise through the gain (electrons per flux unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import Cosmology, SurveyDescriptor
from ..errors import ConfigError, RangeError
from ..psf import PSF, effective_psf, psf_profile, survey_psf_images, survey_psf_profiles

__all__ = [
    "NOISE_MODES",
    "PSF",
    "Camera",
    "NoiseModel",
    "choose_redshift",
    "convolve",
    "effective_psf",
    "psf_profile",
    "survey_psf_images",
    "survey_psf_profiles",
]

NOISE_MODES = ("survey", "sky", "none", "blank-sky")
_MIN_REDSHIFT = 0.01


def choose_redshift(
    *, explicit: float | None, sim_observation_redshift: float | None, snapshot_redshift: float,
    survey_default: float,
) -> tuple[float, str]:
    """The observation redshift and where it came from.

    Precedence: ``explicit`` > the simulation descriptor's ``observation_redshift`` > the
    snapshot redshift; a value below 0.01 (a z=0 snapshot) is replaced by the survey's
    ``default_redshift``.

    Parameters
    ----------
    explicit : float or None
        Redshift given by the caller (``--redshift``).
    sim_observation_redshift : float or None
        The simulation descriptor's ``observation_redshift``.
    snapshot_redshift : float
        Redshift of the snapshot being rendered.
    survey_default : float
        The survey descriptor's ``default_redshift``.

    Returns
    -------
    (float, str)
        Redshift and one of ``"explicit"``, ``"simulation"``, ``"snapshot"``,
        ``"survey_default"``.
    """
    if explicit is not None:
        z, source = float(explicit), "explicit"
    elif sim_observation_redshift is not None:
        z, source = float(sim_observation_redshift), "simulation"
    else:
        z, source = float(snapshot_redshift), "snapshot"
    if not np.isfinite(z) or z < _MIN_REDSHIFT:
        if source == "explicit":
            msg = (f"observation redshift {z} is below {_MIN_REDSHIFT}: a galaxy that close "
                   "has no meaningful angular size; give redshift >= 0.01")
            raise RangeError(msg, value=z, min=_MIN_REDSHIFT)
        z, source = float(survey_default), "survey_default"
    return z, source


@dataclass(frozen=True)
class Camera:
    """Pixel grid of a stamp at the observation redshift.

    Parameters
    ----------
    stamp_size : int
        Stamp side P [pixels].
    pixel_scale_arcsec : float
        Pixel side [arcsec].
    redshift : float
        Observation redshift.
    kpc_per_arcsec : float
        Physical (proper) kpc per arcsec at ``redshift`` from the angular-diameter
        distance.
    """

    stamp_size: int
    pixel_scale_arcsec: float
    redshift: float
    kpc_per_arcsec: float

    @classmethod
    def at_redshift(
        cls, *, stamp_size: int, pixel_scale_arcsec: float, redshift: float,
        cosmology: Cosmology,
    ) -> Camera:
        """Camera for a stamp observed at ``redshift`` in ``cosmology`` (astropy).

        Parameters
        ----------
        stamp_size : int
            Stamp side P [pixels], at least 4.
        pixel_scale_arcsec : float
            Pixel side [arcsec].
        redshift : float
            Observation redshift.
        cosmology : Cosmology
            Cosmology of the angular-diameter distance.

        Returns
        -------
        Camera
            The pixel grid; ``kpc_per_arcsec`` from :meth:`Cosmology.kpc_per_arcsec`.
        """
        if stamp_size < 4:
            msg = f"stamp_size must be at least 4 pixels, got {stamp_size}"
            raise ConfigError(msg)
        return cls(stamp_size=int(stamp_size), pixel_scale_arcsec=float(pixel_scale_arcsec),
                   redshift=float(redshift), kpc_per_arcsec=cosmology.kpc_per_arcsec(redshift))

    @property
    def kpc_per_pixel(self) -> float:
        """Physical kpc per pixel."""
        return self.kpc_per_arcsec * self.pixel_scale_arcsec

    @property
    def center_pix(self) -> float:
        """Pixel coordinate of the stamp centre, ``(P - 1) / 2``."""
        return (self.stamp_size - 1) / 2.0

    def to_pixels(self, xy_kpc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projected (N, 2) kpc offsets from the galaxy centre -> pixel x, y coordinates."""
        s = 1.0 / self.kpc_per_pixel
        return xy_kpc[:, 0] * s + self.center_pix, xy_kpc[:, 1] * s + self.center_pix


def convolve(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve each band of a (B, P, P) pixel-integrated map with a (B, Q, Q) PSF (FFT).

    Output has the input's shape (``mode="same"``, PSF centre on its middle pixel);
    light scattered beyond the stamp is lost, as in a real cutout. All bands are
    transformed at once (real FFTs), and the PSF's transform is cached per PSF array and
    stamp shape, so rendering many stamps with one PSF transforms it once.
    """
    from scipy import fft

    image = np.asarray(image, np.float64)
    p_y, p_x = image.shape[-2:]
    q_y, q_x = psf.shape[-2:]
    shape = (fft.next_fast_len(p_y + q_y - 1, real=True),
             fft.next_fast_len(p_x + q_x - 1, real=True))
    key = (id(psf), psf.shape, shape)
    hit = _PSF_FFT_CACHE.get(key)
    if hit is None or hit[0] is not psf:
        if len(_PSF_FFT_CACHE) >= 8:
            _PSF_FFT_CACHE.clear()
        hit = (psf, fft.rfft2(np.asarray(psf, np.float64), s=shape, axes=(-2, -1)))
        _PSF_FFT_CACHE[key] = hit
    full = fft.irfft2(fft.rfft2(image, s=shape, axes=(-2, -1)) * hit[1], s=shape, axes=(-2, -1))
    y0, x0 = (q_y - 1) // 2, (q_x - 1) // 2
    return full[..., y0:y0 + p_y, x0:x0 + p_x].copy()


# PSF array -> its FFT; the array itself is kept in the value so that its id stays valid.
_PSF_FFT_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class NoiseModel:
    """Sky and source noise per band.

    Parameters
    ----------
    sky_sigma : tuple of float
        Per-pixel sky standard deviation per band [flux units].
    gain : tuple of float
        Electrons per flux unit per band; 0 disables source Poisson noise in that band.
    mode : {"survey", "sky", "none", "blank-sky"}
        ``survey``: sky + source Poisson; ``sky``: sky only; ``none``: noise-free images
        (the variance still describes the survey noise the image would have);
        ``blank-sky``: source Poisson only, with variance ``model / gain`` (the sky and
        its variance come from a real blank-sky field, see
        :mod:`simcompare.mock.blanksky`).
    """

    sky_sigma: tuple[float, ...]
    gain: tuple[float, ...]
    mode: str = "survey"

    def __post_init__(self) -> None:
        if self.mode not in NOISE_MODES:
            msg = f"noise must be one of {', '.join(NOISE_MODES)}, got {self.mode!r}"
            raise ConfigError(msg)

    @classmethod
    def from_survey(cls, survey: SurveyDescriptor, *, bands: Sequence[str], mode: str) -> NoiseModel:
        """The descriptor's ``[noise]`` table for ``bands``.

        Parameters
        ----------
        survey : SurveyDescriptor
            Survey whose ``[noise]`` table is read.
        bands : sequence of str
            Bands, in image order.
        mode : str
            One of :data:`NOISE_MODES`.

        Returns
        -------
        NoiseModel
            Sky sigma and gain per band.
        """
        sky = {b: float(v) for b, v in survey.noise.sky_sigma.items()}
        gain = {b: float(v) for b, v in survey.noise.gain.items()}
        missing = [b for b in bands if b not in sky]
        if missing:
            msg = f"survey {survey.name!r}: noise.sky_sigma lacks band(s) {missing}"
            raise ConfigError(msg)
        return cls(sky_sigma=tuple(sky[b] for b in bands),
                   gain=tuple(gain.get(b, 0.0) for b in bands), mode=mode)

    def variance(self, model: np.ndarray) -> np.ndarray:
        """Per-pixel variance [flux units^2] of a noise-free (B, P, P) model image."""
        sky = np.asarray(self.sky_sigma)[:, None, None] ** 2
        gain = np.asarray(self.gain)[:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            src = np.where(gain > 0, np.clip(model, 0.0, None) / np.where(gain > 0, gain, 1.0), 0.0)
        if self.mode == "sky":
            src = np.zeros_like(src)
        if self.mode == "blank-sky":
            return src
        return sky + src

    def apply(self, model: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        """Return ``model`` plus a noise realisation (a new array)."""
        if self.mode == "none":
            return model.copy()
        if self.mode == "blank-sky":
            out = model.copy()
        else:
            sky = np.asarray(self.sky_sigma)[:, None, None]
            out = model + sky * rng.standard_normal(model.shape)
        if self.mode in ("survey", "blank-sky"):
            gain = np.asarray(self.gain)
            for b in np.flatnonzero(gain > 0):
                lam = np.clip(model[b], 0.0, None) * gain[b]
                out[b] += (rng.poisson(lam) - lam) / gain[b]
        return out
