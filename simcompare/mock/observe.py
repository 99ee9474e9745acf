"""Camera, cosmology, PSF and noise: from a deposited flux map to a survey image.

* :class:`Camera`: stamp size, pixel scale and the physical size of a pixel at the
  observation redshift (angular-diameter distance of the simulation's cosmology).
  Fluxes already carry the luminosity distance (see :mod:`simcompare.sps`).
* :class:`PSF`: the per-band *effective* PSF (atmosphere/optics convolved with the pixel
  response), sampled at pixel centres, odd-sized, centred and normalised to sum 1, the
  convention of every ImageSet. The particle map is pixel-integrated by the deposit, so
  convolving it with this PSF counts the pixel response exactly once.
* :class:`NoiseModel`: sky Gaussian noise from the descriptor's per-pixel ``sky_sigma``
  plus source Poisson noise through the gain (electrons per flux unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Cosmology, SurveyDescriptor
from ..errors import ConfigError, DataFormatError, DataNotFoundError, RangeError

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


@dataclass(frozen=True, eq=False)
class PSF:
    """Per-band effective PSF images.

    ``image`` is (B, Q, Q), Q odd, each band normalised to sum 1 and centred on pixel
    ``(Q - 1) / 2``. It is the *effective* PSF: it includes the pixel response
    (``includes_pixel`` is always True); it is what the ImageSet records and what the
    measurements downstream (statmorph, the Sersic background) fit with.

    ``kernel`` is what the renderer convolves its particle map with. The map
    (:func:`simcompare.mock.project.deposit`) is already integrated over pixels, i.e.
    it is the light convolved with the pixel box; convolving it with the effective PSF
    would apply the box a second time (an extra blur of 1/12 px^2 in variance, which
    left the peaks of compact bulges 2.5% low at any particle count in the closure
    benchmark). For analytic PSFs the kernel is therefore the optical PSF sampled at
    pixel centres without the pixel (galsim ``method="no_pixel"``), so the pixel is
    counted once. For PSF images (which include the pixel and cannot be undone) the
    kernel is the image itself and the extra box remains.

    Parameters
    ----------
    image : ndarray, float64, shape (B, Q, Q)
    description : dict
        What it is: kind, FWHM per band [arcsec], beta, source file.
    kernel : ndarray, float64, shape (B, Q, Q), optional
        Convolution kernel of the pixel-integrated particle map (default ``image``).
    """

    image: np.ndarray
    description: dict
    includes_pixel: bool = True
    kernel: np.ndarray | None = None

    def render_kernel(self) -> np.ndarray:
        """The kernel the pixel-integrated particle map is convolved with (see the class)."""
        return self.image if self.kernel is None else self.kernel

    @classmethod
    def from_survey(
        cls, survey: SurveyDescriptor, *, bands: Sequence[str], workspace: str | Path = ".",
        kernel_size: int | None = None,
    ) -> PSF:
        """Build the PSF the survey descriptor describes (``[psf]`` table).

        ``kernel_size`` (analytic PSFs): side of the render kernel, default ``psf.size``.
        A renderer should pass ``2 * stamp_size + 1``: a kernel cut at ``psf.size`` and
        renormalised moves the PSF wings into the core (band-dependently, since the
        FWHM differs), which shifted aperture colours by a few mmag against images
        drawn with the whole PSF and put the global axis of the closure benchmark at
        0.8 on a population against itself.

        Parameters
        ----------
        survey : SurveyDescriptor
            Survey whose ``[psf]`` table is built (analytic kind or ``image`` files).
        bands : sequence of str
            Bands, in the order of the PSF cube.
        workspace : str or Path, optional
            Folder against which relative PSF image paths resolve (default ``"."``).
        kernel_size : int, optional
            Side of the render kernel of an analytic PSF (default ``psf.size``).

        Returns
        -------
        PSF
            Effective PSF images, odd size, each band summing to 1.
        """
        cfg = survey.psf
        size = int(cfg.size) | 1  # odd
        if cfg.kind == "image":
            return cls._from_file(survey, bands=bands, size=size, workspace=workspace)
        profiles = survey_psf_profiles(survey, bands)
        imgs = [_draw_effective(p, pixel_scale_arcsec=survey.pixel_scale_arcsec, size=size)
                for p in profiles]
        fwhm = {b: float(v) for b, v in cfg.fwhm_arcsec.items()}
        ksize = max(size, int(kernel_size or size)) | 1
        kern = [_draw_effective(p, pixel_scale_arcsec=survey.pixel_scale_arcsec, size=ksize,
                                pixel=False) for p in profiles]
        desc = {"kind": cfg.kind, "fwhm_arcsec": {b: fwhm[b] for b in bands},
                "beta": cfg.beta if cfg.kind == "moffat" else None, "size": size,
                "includes_pixel": True,
                "method": "galsim profile drawn with its pixel response, sampled at pixel centres",
                "render_kernel": "the same profile without the pixel response (the particle map is "
                                 "already integrated over pixels)", "render_kernel_size": ksize}
        return cls(image=np.stack(imgs), description=desc, kernel=np.stack(kern))

    @classmethod
    def _from_file(
        cls, survey: SurveyDescriptor, *, bands: Sequence[str], size: int, workspace: str | Path,
    ) -> PSF:
        from astropy.io import fits

        imgs = []
        files = []
        for i, b in enumerate(bands):
            path = Path(survey.psf.image.replace("{band}", b))
            if not path.is_absolute():
                path = Path(workspace) / path
            if not path.is_file():
                msg = f"survey {survey.name!r}: PSF image {path} not found; fix psf.image"
                raise DataNotFoundError(msg)
            with fits.open(path) as hdul:
                data = [h.data for h in hdul if getattr(h, "data", None) is not None]
            if not data:
                msg = f"{path}: no image data in the PSF file"
                raise DataFormatError(msg)
            arr = np.asarray(data[0], np.float64)
            if arr.ndim == 3:  # a (B, Q, Q) cube in band order of the descriptor
                arr = arr[list(survey.bands).index(b)]
            elif len(data) > 1 and "{band}" not in survey.psf.image:
                arr = np.asarray(data[list(survey.bands).index(b)], np.float64)
            imgs.append(_fit_size(arr, size))
            files.append(str(path))
            del i
        desc = {"kind": "image", "files": files, "size": size, "includes_pixel": True}
        return cls(image=np.stack(imgs), description=desc)


def psf_profile(kind: str, *, fwhm_arcsec: float, beta: float = 3.5) -> Any:
    """The galsim profile of an analytic PSF (atmosphere/optics, before the pixel).

    The one place where a PSF descriptor becomes a profile: :func:`effective_psf`, the
    mock's :class:`PSF`, the demo samples and the survey-model PSF that stands in for a
    cutout without PSF file all draw it.

    Parameters
    ----------
    kind : {"moffat", "kolmogorov", "gaussian"}
        Profile family (the descriptor's ``psf.kind``).
    fwhm_arcsec : float
        FWHM of the profile [arcsec], positive.
    beta : float, optional
        Moffat index (default 3.5; ignored by the other kinds).

    Returns
    -------
    galsim.GSObject
        The profile, not yet convolved with the pixel.
    """
    import galsim

    if not (fwhm_arcsec > 0):
        msg = f"PSF FWHM must be positive, got {fwhm_arcsec}"
        raise RangeError(msg, value=fwhm_arcsec, min=0.0)
    if kind == "moffat":
        return galsim.Moffat(beta=beta, fwhm=fwhm_arcsec)
    if kind == "kolmogorov":
        return galsim.Kolmogorov(fwhm=fwhm_arcsec)
    if kind == "gaussian":
        return galsim.Gaussian(fwhm=fwhm_arcsec)
    msg = f"psf.kind must be moffat, kolmogorov, gaussian or image, got {kind!r}"
    raise ConfigError(msg)


def survey_psf_profiles(survey: SurveyDescriptor, bands: Sequence[str]) -> list[Any]:
    """The galsim profile of the survey's analytic PSF model in each of ``bands``.

    Parameters
    ----------
    survey : SurveyDescriptor
        Survey whose ``[psf]`` table is read (``kind`` moffat, kolmogorov or gaussian).
    bands : sequence of str
        Bands, each needing a ``psf.fwhm_arcsec`` value.

    Returns
    -------
    list of galsim.GSObject
        One profile per band, before the pixel.
    """
    cfg = survey.psf
    if cfg.kind == "image":
        msg = (f"survey {survey.name!r}: an analytic PSF model (moffat, kolmogorov, gaussian) is "
               "needed here, not psf.kind = 'image'")
        raise ConfigError(msg)
    fwhm = {b: float(v) for b, v in cfg.fwhm_arcsec.items()}
    missing = [b for b in bands if b not in fwhm]
    if missing:
        msg = f"survey {survey.name!r}: psf.fwhm_arcsec lacks band(s) {missing}"
        raise ConfigError(msg)
    return [psf_profile(cfg.kind, fwhm_arcsec=fwhm[b], beta=cfg.beta) for b in bands]


def effective_psf(
    kind: str, *, fwhm_arcsec: float, pixel_scale_arcsec: float, size: int, beta: float = 3.5,
    pixel: bool = True,
) -> np.ndarray:
    """Pixel-convolved PSF sampled at pixel centres (galsim), normalised to sum 1.

    Parameters
    ----------
    kind : {"moffat", "kolmogorov", "gaussian"}
        Profile family.
    fwhm_arcsec : float
        FWHM of the atmospheric/optical PSF (before the pixel) [arcsec].
    pixel_scale_arcsec : float
        Pixel side [arcsec].
    size : int
        Odd stamp side [pixels].
    beta : float, optional
        Moffat index (default 3.5).
    pixel : bool, optional
        Include the pixel response (default True); False samples the optical PSF itself
        at pixel centres (the kernel for maps already integrated over pixels).

    Returns
    -------
    ndarray, shape (size, size)
        The effective PSF, summing to 1.
    """
    prof = psf_profile(kind, fwhm_arcsec=fwhm_arcsec, beta=beta)
    return _draw_effective(prof, pixel_scale_arcsec=pixel_scale_arcsec, size=size, pixel=pixel)


def _draw_effective(prof: Any, *, pixel_scale_arcsec: float, size: int,
                    pixel: bool = True) -> np.ndarray:
    # method="auto" convolves with the pixel: the result is the effective PSF; "no_pixel"
    # samples the profile itself (the kernel of maps already integrated over pixels).
    img = prof.drawImage(nx=size, ny=size, scale=pixel_scale_arcsec,
                         method="auto" if pixel else "no_pixel").array
    img = np.asarray(img, np.float64)
    return img / img.sum()


def survey_psf_images(
    survey: SurveyDescriptor, *, bands: Sequence[str] | None = None, size: int | None = None,
) -> np.ndarray:
    """Effective PSF images of the survey's analytic PSF model (pixel response included).

    Parameters
    ----------
    survey : SurveyDescriptor
        Survey whose ``[psf]`` table is drawn.
    bands : sequence of str, optional
        Default all survey bands.
    size : int, optional
        Odd side length (pixels); default ``survey.psf.size``.

    Returns
    -------
    ndarray, float32, shape (B, size, size)
        One effective PSF per band, each summing to 1.
    """
    bands = tuple(bands or survey.bands)
    size = int(size or survey.psf.size)
    return np.stack([_draw_effective(p, pixel_scale_arcsec=survey.pixel_scale_arcsec, size=size)
                     for p in survey_psf_profiles(survey, bands)]).astype(np.float32)


def _fit_size(arr: np.ndarray, size: int) -> np.ndarray:
    """Crop or zero-pad a PSF image to (size, size) about its centre and renormalise."""
    arr = np.asarray(arr, np.float64)
    if arr.ndim != 2:
        msg = f"a PSF image must be 2-D, got shape {arr.shape}"
        raise DataFormatError(msg)
    out = np.zeros((size, size))
    h, w = arr.shape
    cy, cx = (h - 1) // 2, (w - 1) // 2
    c = (size - 1) // 2
    r = min(c, cy, cx, h - 1 - cy, w - 1 - cx)
    out[c - r:c + r + 1, c - r:c + r + 1] = arr[cy - r:cy + r + 1, cx - r:cx + r + 1]
    total = out.sum()
    if not (np.isfinite(total) and total > 0):
        msg = "PSF image has no positive flux"
        raise DataFormatError(msg)
    return out / total


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
