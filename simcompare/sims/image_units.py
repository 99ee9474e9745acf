"""Image units: the one place a simulated image's pixels become survey flux per pixel.

Published mock images come in surface-brightness or flux units that differ from the
survey's (HSC: counts with zero point 27, ``mag_AB = 27 - 2.5 log10(counts)``).
:func:`to_survey_flux` converts a plane in any of :data:`FLUX_UNITS` to flux per pixel
in the survey's unit, given the plane's pixel scale; :func:`flux_unit_name` reads a
``BUNIT`` string. Every AB-based unit goes through the AB zero point, 3631 Jy:

============================  ================================================
unit (canonical name)         survey flux per pixel
============================  ================================================
``mag/arcsec2`` (AB)          ``10**(-0.4 (mu - zp)) * pixel_area_arcsec2``
``nanomaggies``               ``f * 10**(0.4 (zp - 22.5))`` (per pixel)
``maggies``                   ``f * 10**(0.4 zp)`` (per pixel)
``MJy/sr``                    ``f * 1e6 * pixel_area_sr / 3631 * 10**(0.4 zp)``
``Jy``                        ``f / 3631 * 10**(0.4 zp)`` (per pixel)
``uJy``, ``nJy``              as Jy, scaled
``counts``                    unchanged; only when the file's zero point is the survey's
============================  ================================================

Surface-brightness pixels that hold no light (``mu`` = inf, NaN, or the releases'
"empty" sentinels of 99 mag/arcsec^2 and fainter) become zero flux.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import ConfigError

__all__ = ["AB_JY", "EMPTY_SB_MAG", "FLUX_UNITS", "flux_unit_name", "to_survey_flux"]

#: AB zero point [Jy].
AB_JY = 3631.0
#: Surface brightness at and beyond which a pixel holds no light [AB mag/arcsec^2].
EMPTY_SB_MAG = 99.0
#: Canonical names of the units :func:`to_survey_flux` knows.
FLUX_UNITS = ("mag/arcsec2", "nanomaggies", "maggies", "MJy/sr", "Jy", "uJy", "nJy", "counts")

_ALIASES = {
    "mag/arcsec2": "mag/arcsec2", "mag/arcsec^2": "mag/arcsec2", "mag/arcsec**2": "mag/arcsec2",
    "magarcsec-2": "mag/arcsec2", "abmag/arcsec2": "mag/arcsec2", "abmag/arcsec^2": "mag/arcsec2",
    "mag(ab)/arcsec2": "mag/arcsec2", "magab/arcsec2": "mag/arcsec2",
    "nanomaggies": "nanomaggies", "nanomaggy": "nanomaggies", "nmgy": "nanomaggies",
    "maggies": "maggies", "maggy": "maggies",
    "mjy/sr": "MJy/sr", "mjysr-1": "MJy/sr", "mjy/steradian": "MJy/sr",
    "jy": "Jy", "jy/pixel": "Jy", "jy/pix": "Jy",
    "ujy": "uJy", "microjy": "uJy", "ujy/pixel": "uJy", "njy": "nJy", "njy/pixel": "nJy",
    "counts": "counts", "count": "counts", "adu": "counts",
}


def flux_unit_name(text: str, *, where: str = "image") -> str:
    """Canonical unit name of a ``BUNIT``-style string; a ConfigError for unknown units.

    The case of ``MJy`` vs ``mJy`` matters: ``mJy/sr`` (milli) is not accepted.
    """
    raw = str(text).strip()
    if raw.startswith("mJy"):
        key = "millijy"
    else:
        key = re.sub(r"\s+", "", raw).lower().replace("sr^-1", "sr-1")
    unit = _ALIASES.get(key)
    if unit is None:
        msg = (f"{where}: unknown flux unit {raw!r}; known units are {', '.join(FLUX_UNITS)} "
               "(set flux_unit in the simulation descriptor if the header is wrong)")
        raise ConfigError(msg)
    return unit


def to_survey_flux(
    data: np.ndarray, *, unit: str, pixel_scale_arcsec: float, zero_point: float,
    survey_flux_unit: str = "counts",
) -> np.ndarray:
    """Convert a plane to survey flux per pixel (float64).

    Parameters
    ----------
    data : ndarray
        Pixel values in ``unit``.
    unit : str
        One of :data:`FLUX_UNITS` (see :func:`flux_unit_name`).
    pixel_scale_arcsec : float
        Side of the plane's pixels [arcsec] (surface-brightness units need it).
    zero_point : float
        The survey's AB zero point: ``mag_AB = zero_point - 2.5 log10(flux)``.
    survey_flux_unit : str
        The survey's flux unit; ``counts`` files pass only into a ``counts`` survey.

    Returns
    -------
    ndarray, float64, same shape
    """
    data = np.asarray(data, np.float64)
    area_arcsec2 = float(pixel_scale_arcsec) ** 2
    to_zp = 10.0 ** (0.4 * float(zero_point))
    if unit == "mag/arcsec2":
        with np.errstate(over="ignore", invalid="ignore"):
            flux = 10.0 ** (-0.4 * (data - float(zero_point))) * area_arcsec2
        return np.where(np.isfinite(data) & (data < EMPTY_SB_MAG), flux, 0.0)
    if unit == "nanomaggies":
        return data * 10.0 ** (0.4 * (float(zero_point) - 22.5))
    if unit == "maggies":
        return data * to_zp
    if unit == "MJy/sr":
        sr = area_arcsec2 * (math.pi / 180.0 / 3600.0) ** 2
        return data * 1e6 * sr / AB_JY * to_zp
    if unit in ("Jy", "uJy", "nJy"):
        scale = {"Jy": 1.0, "uJy": 1e-6, "nJy": 1e-9}[unit]
        return data * scale / AB_JY * to_zp
    if unit == "counts":
        if survey_flux_unit != "counts":
            msg = ("images in counts can only enter a survey whose flux_unit is counts "
                   f"(got {survey_flux_unit!r})")
            raise ConfigError(msg)
        return data.copy()
    msg = f"unknown flux unit {unit!r}; known units are {', '.join(FLUX_UNITS)}"
    raise ConfigError(msg)
