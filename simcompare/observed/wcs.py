"""Where the target sits in a cutout: the catalogue's ra/dec through the FITS TAN WCS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__: list[str] = []


def _center_from_wcs(header: Any, row: Mapping[str, Any]) -> tuple[float, float] | None:
    ra, dec = row.get("ra"), row.get("dec")
    if ra is None or dec is None or "CTYPE1" not in header:
        return None
    try:
        ra, dec = float(ra), float(dec)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    fast = _tan_world2pix(header, ra, dec)
    if fast is not None:
        return fast
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    hdr = fits.Header([(k, v) for k, v in header.items()
                       if not k.startswith(("NAXIS", "XTENSION", "SIMPLE", "BITPIX", "EXTEND"))
                       and len(k) <= 8])
    hdr["NAXIS"] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr, naxis=2)
    x, y = wcs.all_world2pix(ra, dec, 0)
    return float(x), float(y)


def _tan_world2pix(header: Mapping[str, Any], ra: float, dec: float) -> tuple[float, float] | None:
    """Pixel position (0-based) of (ra, dec) [deg] for a plain TAN WCS; None for anything else.

    Handles CD or PC + CDELT matrices without distortion terms (the HSC coadd cutouts);
    headers with SIP or other projections go through astropy.
    """
    if (str(header.get("CTYPE1", "")).strip() != "RA---TAN"
            or str(header.get("CTYPE2", "")).strip() != "DEC--TAN"
            or float(header.get("LONPOLE", 180.0)) != 180.0
            or any(k.startswith(("A_", "B_", "AP_", "BP_", "PV")) for k in header)):
        return None
    try:
        crpix = np.array([float(header["CRPIX1"]), float(header["CRPIX2"])])
        ra0, dec0 = np.radians(float(header["CRVAL1"])), np.radians(float(header["CRVAL2"]))
        if "CD1_1" in header:
            cd = np.array([[float(header.get("CD1_1", 0.0)), float(header.get("CD1_2", 0.0))],
                           [float(header.get("CD2_1", 0.0)), float(header.get("CD2_2", 0.0))]])
        else:
            pc = np.array([[float(header.get("PC1_1", 1.0)), float(header.get("PC1_2", 0.0))],
                           [float(header.get("PC2_1", 0.0)), float(header.get("PC2_2", 1.0))]])
            cd = pc * np.array([[float(header.get("CDELT1", 1.0))], [float(header.get("CDELT2", 1.0))]])
    except (KeyError, TypeError, ValueError):
        return None
    a, d = np.radians(ra), np.radians(dec)
    cos_c = np.sin(d) * np.sin(dec0) + np.cos(d) * np.cos(dec0) * np.cos(a - ra0)
    if not cos_c > 0:
        return None
    # gnomonic projection: standard coordinates in degrees (x towards east = +RA)
    xi = np.degrees(np.cos(d) * np.sin(a - ra0) / cos_c)
    eta = np.degrees((np.sin(d) * np.cos(dec0) - np.cos(d) * np.sin(dec0) * np.cos(a - ra0)) / cos_c)
    try:
        # intermediate world coordinates (x = -xi for RA increasing to the left is in CD)
        dx, dy = np.linalg.solve(cd, np.array([xi, eta]))
    except np.linalg.LinAlgError:
        return None
    return float(dx + crpix[0] - 1.0), float(dy + crpix[1] - 1.0)
