"""Simulated-image release fixtures written with astropy the way the releases lay them out.

* :func:`write_skirt_cube`: a SKIRT instrument cube, planes in the primary HDU with
  ``EXTn`` filter keywords, per-plane ``MAGn`` magnitudes, ``BUNIT = 'MJy / sr'`` and
  ``CDELT1/2`` in degrees.
* :func:`write_realsim_idealised`: RealSim-style idealised planes, one image HDU per
  filter named ``SUBARU_HSC.<F>``, AB mag/arcsec^2, ``CDELT1`` in kpc/pixel and a
  ``Redshift`` keyword.
* :func:`write_realsim_hsc`: RealSim-HSC survey-realistic files: ``SUBARU_HSC.<F>`` in
  nanomaggies with ``... MASK`` (HSC bit planes, ``MP_*`` keywords), ``... VARIANCE``
  and ``... PSF`` HDUs.

Galaxies are galsim Sersic profiles drawn with their pixel response, so the flux in the
pixels is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

AB_JY = 3631.0
HSC_FILTERS = {"g": "SUBARU_HSC.G", "r": "SUBARU_HSC.R", "i": "SUBARU_HSC.I",
               "z": "SUBARU_HSC.Z", "y": "SUBARU_HSC.Y"}
#: Total AB magnitudes of the fixture galaxy per HSC band.
MAGS = {"g": 19.6, "r": 19.0, "i": 18.7, "z": 18.5, "y": 18.4}


def sersic_plane(*, flux: float, hlr_arcsec: float, scale_arcsec: float, size: int, n: float = 1.0,
                 q: float = 0.7, beta_deg: float = 30.0, psf_fwhm_arcsec: float | None = None,
                 offset_pix: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A pixel-integrated Sersic of total ``flux`` on a size x size grid (galsim)."""
    import galsim

    prof = galsim.Sersic(n=n, half_light_radius=hlr_arcsec, flux=flux).shear(
        q=q, beta=beta_deg * galsim.degrees)
    if psf_fwhm_arcsec:
        prof = galsim.Convolve(prof, galsim.Moffat(beta=3.5, fwhm=psf_fwhm_arcsec))
    img = prof.drawImage(nx=size, ny=size, scale=scale_arcsec, method="auto",
                         offset=galsim.PositionD(*offset_pix)).array
    return np.asarray(img, np.float64)


def write_skirt_cube(path: Path, *, filters: Sequence[str], mags: Sequence[float], size: int = 161,
                     scale_arcsec: float = 0.05, hlr_arcsec: float = 0.5, subhalo: int | None = None,
                     bunit: str = "MJy / sr", redshift: float | None = 0.1) -> dict[str, float]:
    """A SKIRT-style cube; returns the Jy in the pixels per filter."""
    from astropy.io import fits

    sr = (scale_arcsec * math.pi / 180.0 / 3600.0) ** 2
    planes, jy = [], {}
    for f, m in zip(filters, mags, strict=True):
        img_jy = sersic_plane(flux=AB_JY * 10 ** (-0.4 * m), hlr_arcsec=hlr_arcsec,
                              scale_arcsec=scale_arcsec, size=size)
        jy[f] = float(img_jy.sum())
        planes.append(img_jy / sr / 1e6)  # Jy per pixel -> MJy/sr
    hdu = fits.PrimaryHDU(np.stack(planes).astype(np.float32))
    h = hdu.header
    h["BUNIT"] = bunit
    h["CDELT1"] = (scale_arcsec / 3600.0, "deg/pixel")
    h["CDELT2"] = (scale_arcsec / 3600.0, "deg/pixel")
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    for n, (f, m) in enumerate(zip(filters, mags, strict=True), start=1):
        h[f"EXT{n}"] = (f, "filter of plane")
        h[f"MAG{n}"] = (m, "AB apparent magnitude of the instrument frame")
    if subhalo is not None:
        h["SUBHALO"] = subhalo
    if redshift is not None:
        h["REDSHIFT"] = redshift
    hdu.writeto(path, overwrite=True)
    return jy


def write_realsim_idealised(path: Path, *, bands: Sequence[str] = ("g", "r", "i", "z", "y"),
                            kpc_per_pixel: float = 0.1, redshift: float = 0.05, size: int = 201,
                            hlr_kpc: float = 1.5, mags: Mapping[str, float] = MAGS,
                            kpc_per_arcsec: float) -> dict[str, float]:
    """RealSim-style idealised planes in AB mag/arcsec^2; returns maggies per band."""
    from astropy.io import fits

    scale_arcsec = kpc_per_pixel / kpc_per_arcsec
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["Redshift"] = redshift
    maggies = {}
    for b in bands:
        img = sersic_plane(flux=10 ** (-0.4 * mags[b]), hlr_arcsec=hlr_kpc / kpc_per_arcsec,
                           scale_arcsec=scale_arcsec, size=size)
        img = np.clip(img, 0.0, None)  # galsim's k-space drawing leaves tiny negative wings
        maggies[b] = float(img.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            sb = np.where(img > 0, -2.5 * np.log10(img / scale_arcsec**2), 99.0)
        hdu = fits.ImageHDU(sb.astype(np.float32), name=HSC_FILTERS[b])
        hdu.header["BUNIT"] = "AB mag/arcsec2"
        hdu.header["CDELT1"] = (kpc_per_pixel, "kpc/pixel")
        hdu.header["CDELT2"] = (kpc_per_pixel, "kpc/pixel")
        hdu.header["Redshift"] = redshift
        hdu.header["APMAG"] = (mags[b], "AB apparent magnitude")
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return maggies


HSC_MP = {"MP_BAD": 0, "MP_SAT": 1, "MP_INTRP": 2, "MP_CR": 3, "MP_EDGE": 4, "MP_DETECTED": 5,
          "MP_NO_DATA": 8}


def write_realsim_hsc(path: Path, *, rng: np.random.Generator,
                      bands: Sequence[str] = ("g", "r", "i", "z", "y"),
                      size: int = 80, mags: Mapping[str, float] = MAGS, hlr_arcsec: float = 0.8,
                      sigma_nmgy: float = 0.02, psf_fwhm: float = 0.7, bad_box: bool = False,
                      with_variance: bool = True) -> dict[str, float]:
    """RealSim-HSC survey-realistic planes (nanomaggies); returns the noise-free nmgy per band."""
    from astropy.io import fits

    scale = 0.168
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["SUBHALO"] = int(path.stem.split("_")[1])
    hdus[0].header["REDSHIFT"] = 0.3
    nmgy = {}
    for b in bands:
        model = sersic_plane(flux=10 ** (-0.4 * (mags[b] - 22.5)), hlr_arcsec=hlr_arcsec,
                             scale_arcsec=scale, size=size, psf_fwhm_arcsec=psf_fwhm)
        nmgy[b] = float(model.sum())
        img = model + sigma_nmgy * rng.standard_normal(model.shape)
        mask = np.zeros(model.shape, np.int32)
        if bad_box:
            mask[10:16, 10:16] |= 1 << HSC_MP["MP_BAD"]
            img[10:16, 10:16] = np.nan
        mask[model > 3 * sigma_nmgy] |= 1 << HSC_MP["MP_DETECTED"]
        name = HSC_FILTERS[b]
        h = fits.ImageHDU(img.astype(np.float32), name=name)
        h.header["BUNIT"] = "nanomaggy"
        h.header["CDELT1"] = (scale / 3600.0, "deg/pixel")
        h.header["CDELT2"] = (scale / 3600.0, "deg/pixel")
        h.header["CUNIT1"] = "deg"
        hdus.append(h)
        mh = fits.ImageHDU(mask, name=f"{name} MASK")
        for k, v in HSC_MP.items():
            mh.header[f"HIERARCH {k}"] = v
        hdus.append(mh)
        if with_variance:
            hdus.append(fits.ImageHDU(np.full(model.shape, sigma_nmgy**2, np.float32),
                                      name=f"{name} VARIANCE"))
        import galsim

        psf = galsim.Moffat(beta=3.5, fwhm=psf_fwhm).drawImage(nx=41, ny=41, scale=scale).array
        hdus.append(fits.ImageHDU((psf / psf.sum()).astype(np.float32), name=f"{name} PSF"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return nmgy


def images_descriptor(*, name: str, path: str, pattern: str, bands: Mapping[str, str],
                      psf_convolved: bool = False, extra: str = "") -> str:
    """TOML text of a ``kind = "images"`` simulation descriptor."""
    lines = [f'name = "{name}"', f'title = "{name} (test images)"', 'kind = "images"',
             f'path = "{path}"', f'pattern = "{pattern}"',
             f"psf_convolved = {'true' if psf_convolved else 'false'}", extra, "[bands]"]
    lines += [f'{b} = "{p}"' for b, p in bands.items()]
    return "\n".join(lines) + "\n"
