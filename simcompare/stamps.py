"""Stamp preprocessing shared by mock and observed images.

Every stamp that enters an ImageSet, rendered or observed, goes through
:func:`preprocess_stamp`, so segmentation, neighbour replacement and bad-pixel handling
are identical on both sides of a comparison.

Pixel coordinates are 0-based with pixel ``(0, 0)`` centred at ``(0.0, 0.0)``; ``x`` runs
along the last axis. The centre of an ``S x S`` stamp is ``((S - 1) / 2, (S - 1) / 2)``,
galsim's ``true_center`` convention, so a galaxy drawn by galsim at the centre of the
stamp and an observed cutout centred on the catalogue position line up.

Output masks are ``uint8`` with bits from :class:`StampMask`: non-zero means the pixel
value is not the original measurement (a bad input pixel, padding, or a neighbour
replaced by noise). Masked pixels always hold finite values (noise drawn from the
variance), so downstream stages may use the image as it is.
"""

from __future__ import annotations

import enum
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, DataFormatError, RangeError
from .segmentation import central_label

__all__ = [
    "HSC_BAD_PLANES",
    "HSC_MASK_PLANES",
    "NeighbourConfig",
    "PreparedStamp",
    "StampMask",
    "bad_pixels",
    "crop_or_pad",
    "detection_image",
    "find_neighbours",
    "prepare_psf",
    "preprocess_mock",
    "preprocess_stamp",
]

log = logging.getLogger(__name__)

#: HSC-SSP coadd mask planes (bit index), as the HSC cutout service writes them in the
#: ``MP_<NAME>`` keywords of the MASK header (PDR1/PDR2 coadds). Readers should prefer the
#: keywords of the file itself; this table is the fallback.
HSC_MASK_PLANES: Mapping[str, int] = {
    "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
    "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8, "BRIGHT_OBJECT": 9,
    "CLIPPED": 10, "CROSSTALK": 11, "INEXACT_PSF": 12, "NOT_DEBLENDED": 13,
    "REJECTED": 14, "SENSOR_EDGE": 15, "UNMASKEDNAN": 16,
}

#: Planes that make a pixel unusable. ``DETECTED``, ``CLIPPED``, ``REJECTED``,
#: ``INEXACT_PSF``, ``NOT_DEBLENDED`` and, in coadds, ``SENSOR_EDGE`` (one input
#: exposure had a sensor edge there) are informational (the pixel value is fine),
#: and ``BRIGHT_OBJECT`` marks wide halos around bright stars where the pixels are still
#: measured; neither makes a pixel bad here.
HSC_BAD_PLANES: tuple[str, ...] = (
    "BAD", "SAT", "INTRP", "CR", "EDGE", "SUSPECT", "NO_DATA", "CROSSTALK", "UNMASKEDNAN",
)


class StampMask(enum.IntFlag):
    """Bits of the ``uint8`` mask of a prepared stamp (non-zero = not the original value).

    ``BAD``: bad input pixel (mask plane or NaN/inf), replaced by noise.
    ``PADDED``: outside the input cutout, filled with noise of the median variance.
    ``NEIGHBOUR``: belongs to another source, replaced by noise from the variance.
    """

    BAD = 1
    PADDED = 2
    NEIGHBOUR = 4


@dataclass(frozen=True)
class NeighbourConfig:
    """How neighbours are found (photutils segmentation + deblending).

    Parameters
    ----------
    nsigma : float
        Detection threshold on the smoothed band-summed S/N image, in units of its own
        noise (default 3).
    npixels : int
        Minimum connected pixels of a source (default 10; the smoothing correlates the
        noise, and smaller footprints let noise peaks through).
    smooth_fwhm_pix : float
        FWHM (pixels) of the Gaussian detection kernel (default 2.0; 0 disables).
    contrast : float
        photutils deblending contrast: a peak becomes its own source only if it holds at
        least this fraction of its blend's flux. The default 0.1 is deliberately higher
        than photutils' 0.001 so that star-forming clumps and spiral arms are not cut off
        the galaxy they belong to (they would be replaced by noise, erasing the very
        fine structure the comparison looks for); real neighbours of comparable
        brightness are still split off, and detached neighbours are always removed.
    center_radius_pix : float
        A source within this distance (pixels) of the stamp centre is the target when no
        source covers the centre pixel itself (default 3).
    dilate_pix : int
        Neighbour footprints are grown by this many pixels (default 2) to catch their
        wings, never into the target's footprint.
    own_flux_ratio : float
        See ``own_radius`` (default 1.0).
    own_radius : float
        Deblended pieces of the target's own blend that hold less than ``own_flux_ratio``
        times the flux of the target's central piece and whose centroid lies within
        ``own_radius`` half-light radii of that central piece are the galaxy's own
        structure (clumps, arm segments, bulge/disc breaks) and stay with it (default
        1.5; 0 treats every deblended piece as a neighbour). A star-forming clump sits on its
        galaxy's disc,
        inside a few half-light radii, and is fainter than the galaxy's core; a blended
        companion lies further out or outshines what the deblender left at the centre.
        On isolated clumpy galaxies the deblender alone cut off (and replaced by noise)
        clumps on 10-30% of the stamps; 3.0 keeps nearly all of them but also keeps
        the demo's neighbours in 32-pixel stamps (they sit 10-13 px out), so the
        default is 1.5 (see docs/statistics.md, "Closure benchmark").
    """

    nsigma: float = 3.0
    npixels: int = 10
    smooth_fwhm_pix: float = 2.0
    contrast: float = 0.1
    center_radius_pix: float = 3.0
    dilate_pix: int = 2
    own_radius: float = 1.5
    own_flux_ratio: float = 1.0


@dataclass(frozen=True, eq=False)
class PreparedStamp:
    """A preprocessed multi-band stamp.

    Attributes
    ----------
    image, variance : ndarray, float32, shape (B, S, S)
        Flux and noise variance per pixel (flux units); finite everywhere.
    mask : ndarray, uint8, shape (B, S, S)
        :class:`StampMask` bits; 0 = original measured pixel.
    info : dict
        ``n_neighbour_pixels`` (per band, pixels replaced because of neighbours),
        ``n_neighbours``, ``masked_fraction`` (non-zero mask, all bands),
        ``bad_fraction`` (bad input pixels inside the input footprint),
        ``shift_pix`` (integer (dx, dy) applied), ``centre_offset_pix`` (residual
        sub-pixel (dx, dy) of the requested centre from the stamp centre).
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Mask planes
# ---------------------------------------------------------------------------
def bad_pixels(
    mask: np.ndarray, *, planes: Mapping[str, int] | None = None,
    bad_planes: Sequence[str] = HSC_BAD_PLANES,
) -> np.ndarray:
    """Boolean map of unusable pixels from an integer mask.

    Parameters
    ----------
    mask : ndarray of int or bool
        The input mask.
    planes : mapping of str to int, optional
        Bit-plane definitions (plane name -> bit index), e.g. :data:`HSC_MASK_PLANES` or
        the ``MP_*`` keywords of an HSC MASK header. When ``None`` every non-zero pixel
        is bad (the generic convention).
    bad_planes : sequence of str
        Plane names that make a pixel bad (default :data:`HSC_BAD_PLANES`); names absent
        from ``planes`` are ignored.

    Returns
    -------
    ndarray of bool
    """
    mask = np.asarray(mask)
    if planes is None or mask.dtype == bool:
        return mask != 0
    bits = 0
    for name in bad_planes:
        if name in planes:
            bits |= 1 << int(planes[name])
    return (mask.astype(np.int64) & bits) != 0


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------
def _shift_for(center: tuple[float, float] | None, shape: tuple[int, int], size: int) -> tuple:
    h, w = shape
    cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    if not (np.isfinite(cx) and np.isfinite(cy)):
        msg = f"stamp centre must be finite pixel coordinates, got {center!r}"
        raise RangeError(msg)
    target = (size - 1) / 2.0
    # integer shift (no resampling: it would correlate the noise); floor(x + 0.5)
    # rounds halves consistently upwards
    x0 = int(np.floor(cx - target + 0.5))
    y0 = int(np.floor(cy - target + 0.5))
    return x0, y0, (cx - x0 - target, cy - y0 - target)


def crop_or_pad(
    array: np.ndarray, *, size: int, x0: int, y0: int, fill: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the window ``[y0:y0+size, x0:x0+size]`` of the last two axes, padding outside.

    Parameters
    ----------
    array : ndarray, shape (..., H, W)
    size : int
        Output side length (pixels).
    x0, y0 : int
        Input pixel that lands on output pixel ``(0, 0)``; may be negative.
    fill : float
        Value of padded pixels.

    Returns
    -------
    out : ndarray, shape (..., size, size)
    inside : ndarray of bool, shape (size, size)
        True where the output pixel comes from the input.
    """
    h, w = array.shape[-2:]
    out = np.full((*array.shape[:-2], size, size), fill, dtype=array.dtype)
    inside = np.zeros((size, size), bool)
    ys, ye = max(y0, 0), min(y0 + size, h)
    xs, xe = max(x0, 0), min(x0 + size, w)
    if ys < ye and xs < xe:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = array[..., ys:ye, xs:xe]
        inside[ys - y0:ye - y0, xs - x0:xe - x0] = True
    return out, inside


# ---------------------------------------------------------------------------
# Neighbours
# ---------------------------------------------------------------------------
def _gaussian_kernel(fwhm: float) -> np.ndarray:
    sigma = fwhm / 2.3548
    r = max(1, int(np.ceil(2.5 * sigma)))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.exp(-0.5 * (x * x + y * y) / sigma**2)
    return k / k.sum()


def detection_image(image: np.ndarray, variance: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Band-summed S/N image ``sum(I/V) / sqrt(sum(1/V))`` (unit noise), bad pixels 0.

    Parameters
    ----------
    image, variance : ndarray, shape (B, H, W)
    bad : ndarray of bool, shape (B, H, W)

    Returns
    -------
    ndarray, float64, shape (H, W)
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(bad | ~(variance > 0), 0.0, 1.0 / variance)
        num = np.sum(np.where(w > 0, image, 0.0) * w, axis=0)
        den = np.sqrt(np.sum(w, axis=0))
        det = np.where(den > 0, num / den, 0.0)
    return np.nan_to_num(det, nan=0.0, posinf=0.0, neginf=0.0)


def find_neighbours(
    det: np.ndarray, *, config: NeighbourConfig | None = None,
    center: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Segment a unit-noise detection image and split target from neighbours.

    Parameters
    ----------
    det : ndarray, shape (H, W)
        S/N image with unit noise (see :func:`detection_image`).
    config : NeighbourConfig, optional
    center : (x, y), optional
        Target position in pixels; default the array centre.

    Returns
    -------
    neighbours : ndarray of bool, shape (H, W)
        Pixels of other sources (dilated, never overlapping the target).
    target : ndarray of bool, shape (H, W)
        Footprint of the target source (empty if none was detected near the centre).
    n_neighbours : int
    """
    from photutils.segmentation import deblend_sources, detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning
    from scipy import ndimage, signal

    cfg = config or NeighbourConfig()
    h, w = det.shape
    cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if center is None else center
    empty = np.zeros((h, w), bool)
    if cfg.smooth_fwhm_pix > 0:
        kern = _gaussian_kernel(cfg.smooth_fwhm_pix)
        sm = signal.fftconvolve(det, kern, mode="same")
        noise = float(np.sqrt(np.sum(kern * kern)))
    else:
        sm, noise = det, 1.0
    with warnings.catch_warnings():  # an empty stamp is a normal outcome here
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(sm, cfg.nsigma * noise, cfg.npixels)
    if segm is None:
        return empty, empty.copy(), 0
    labels = segm.data
    central = central_label(labels, (cx, cy), max_radius=cfg.center_radius_pix)
    if central and np.count_nonzero(labels == central) >= 2 * cfg.npixels:
        try:
            deb = deblend_sources(sm, segm, cfg.npixels, labels=[central],
                                  contrast=cfg.contrast, progress_bar=False)
        except ValueError as exc:  # photutils refuses odd footprints; keep the blend
            log.debug("deblending skipped: %s", exc)
        else:
            parent = segm.data == central
            labels = deb.data
            # the child under the centre pixel, else (the centre fell between children)
            # the nearest child of the deblended parent
            central = central_label(labels * parent, (cx, cy))
            if central and cfg.own_radius > 0:
                labels = _keep_own_structure(sm, labels, parent, central, (cx, cy), cfg.own_radius,
                                             cfg.own_flux_ratio)
    target = labels == central if central else empty.copy()
    others = (labels != 0) & ~target
    n_nb = len(np.unique(labels[others]))
    if cfg.dilate_pix > 0 and others.any():
        others = ndimage.binary_dilation(others, iterations=cfg.dilate_pix) & ~target
    return others, target, n_nb


def _keep_own_structure(sm: np.ndarray, labels: np.ndarray, parent: np.ndarray, central: int,
                        center: tuple[float, float], own_radius: float,
                        own_flux_ratio: float) -> np.ndarray:
    """Give the deblended pieces of the target's blend that are its own structure back to it.

    A piece stays with the target when it holds less than ``own_flux_ratio`` of the flux
    of the target's central piece and
    its flux-weighted centroid lies within ``own_radius`` times the blend's half-light
    radius (circular, around ``center``, from the positive smoothed S/N in the blend).
    """
    cx, cy = center
    yy, xx = np.nonzero(parent)
    f = np.clip(sm[yy, xx], 0.0, None)
    if not f.sum() > 0:
        return labels
    r = np.hypot(xx - cx, yy - cy)
    lab = labels[yy, xx]
    own = lab == central
    f_central = float(f[own].sum())
    if not f_central > 0:
        return labels
    order = np.argsort(r[own])
    cum = np.cumsum(f[own][order])
    r50 = float(r[own][order][np.searchsorted(cum, 0.5 * cum[-1])])
    out = labels.copy()
    for child in np.unique(lab):
        if child in (0, central):
            continue
        sel = lab == child
        fc = float(f[sel].sum())
        if not fc > 0:
            continue
        x_c = float((xx[sel] * f[sel]).sum() / fc)
        y_c = float((yy[sel] * f[sel]).sum() / fc)
        if fc < own_flux_ratio * f_central and np.hypot(x_c - cx, y_c - cy) <= own_radius * max(r50, 1.0):
            out[labels == child] = central
    return out


# ---------------------------------------------------------------------------
# The stamp
# ---------------------------------------------------------------------------
def _fill_from_good(img: np.ndarray, good: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Smooth estimate of the signal at ``where`` from good pixels (normalised convolution).

    Bad pixels inside a galaxy get its local light plus noise instead of leaving a hole.
    """
    from scipy import ndimage

    out = np.zeros_like(img)
    for b in range(img.shape[0]):
        if not where[b].any():
            continue
        g = good[b].astype(np.float64)
        num = ndimage.gaussian_filter(np.where(good[b], img[b], 0.0), 1.5, mode="constant")
        den = ndimage.gaussian_filter(g, 1.5, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            est = np.where(den > 0.05, num / den, 0.0)
        out[b] = np.where(where[b], est, 0.0)
    return out


def _as_bands(arr: np.ndarray | None, band_axis: int, name: str) -> np.ndarray | None:
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        msg = f"{name} must be (B, H, W) or (H, W), got shape {arr.shape}"
        raise DataFormatError(msg)
    return np.moveaxis(arr, band_axis, 0) if band_axis != 0 else arr


def preprocess_stamp(
    image: np.ndarray, *, variance: np.ndarray, mask: np.ndarray | None = None,
    stamp_size: int, center: tuple[float, float] | None = None, rng: np.random.Generator,
    mask_neighbours: bool = True, band_axis: int = 0,
    mask_planes: Mapping[str, int] | None = None, bad_planes: Sequence[str] = HSC_BAD_PLANES,
    neighbours: NeighbourConfig | None = None,
) -> PreparedStamp:
    """Recentre, crop/pad, clean bad pixels and replace neighbours by noise.

    Parameters
    ----------
    image : ndarray, shape (B, H, W)
        Flux per pixel (any float dtype); (H, W) is taken as one band.
    variance : ndarray, shape (B, H, W)
        Noise variance per pixel (flux units squared). Non-finite or non-positive values
        mark the pixel bad.
    mask : ndarray, shape (B, H, W), optional
        Input mask. With ``mask_planes`` it is an HSC-style bit mask and only
        ``bad_planes`` make a pixel bad; without, any non-zero pixel is bad.
    stamp_size : int
        Output side length (pixels).
    center : (x, y), optional
        Target position in input pixel coordinates (0-based, pixel centres at integers);
        default the array centre. The stamp is shifted by whole pixels (no resampling),
        so the target lands within half a pixel of the stamp centre.
    rng : numpy.random.Generator
        Draws the replacement noise.
    mask_neighbours : bool
        Find other sources (photutils segmentation + deblending on the band-summed S/N
        image) and replace their pixels by noise drawn from the variance (default True).
    band_axis : int
        Axis of ``image``/``variance``/``mask`` that indexes bands (default 0).
    mask_planes : mapping of str to int, optional
        Bit planes of ``mask`` (e.g. the ``MP_*`` header keywords, or
        :data:`HSC_MASK_PLANES`).
    bad_planes : sequence of str
        Planes that make a pixel bad (default :data:`HSC_BAD_PLANES`).
    neighbours : NeighbourConfig, optional
        Detection and deblending parameters.

    Returns
    -------
    PreparedStamp
        float32 image and variance, uint8 :class:`StampMask` mask, and ``info``.
        Padded pixels get the median variance of the valid input pixels of their band
        and noise drawn from it; bad pixels get their own variance when it is valid and
        the median otherwise. Bad pixels inside the input are filled with a smooth
        estimate from the surrounding good pixels (Gaussian-weighted, 1.5 px) plus noise,
        so that a masked cosmic ray on a galaxy does not leave a hole. Neighbours and
        padding get noise alone; neighbour pixels have their variance capped at the
        band's median (the neighbour's own source noise leaves with it).
    """
    if not isinstance(rng, np.random.Generator):
        msg = f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        raise ConfigError(msg)
    if int(stamp_size) != stamp_size or stamp_size < 4:
        msg = f"stamp_size must be an integer of at least 4 pixels, got {stamp_size!r}"
        raise RangeError(msg, value=stamp_size, min=4)
    size = int(stamp_size)
    img = _as_bands(image, band_axis, "image").astype(np.float64)
    var = _as_bands(variance, band_axis, "variance").astype(np.float64)
    msk = _as_bands(mask, band_axis, "mask")
    if var.shape != img.shape:
        msg = f"variance has shape {var.shape}, image {img.shape}; they must match"
        raise DataFormatError(msg)
    if msk is not None and msk.shape != img.shape:
        msg = f"mask has shape {msk.shape}, image {img.shape}; they must match"
        raise DataFormatError(msg)
    nb = img.shape[0]

    bad = ~np.isfinite(img) | ~np.isfinite(var) | ~(var > 0)
    if msk is not None:
        bad |= bad_pixels(msk, planes=mask_planes, bad_planes=bad_planes)

    x0, y0, offset = _shift_for(center, img.shape[-2:], size)
    img_c, inside = crop_or_pad(img, size=size, x0=x0, y0=y0, fill=0.0)
    var_c, _ = crop_or_pad(var, size=size, x0=x0, y0=y0, fill=np.nan)
    bad_c, _ = crop_or_pad(bad, size=size, x0=x0, y0=y0, fill=True)

    out_mask = np.zeros((nb, size, size), np.uint8)
    out_mask[:, ~inside] |= np.uint8(StampMask.PADDED)
    bad_in = bad_c & inside[None]
    out_mask[bad_in] |= np.uint8(StampMask.BAD)

    # median variance of each band's good input pixels, for padding and bad pixels
    med = np.empty(nb)
    for b in range(nb):
        good_v = var[b][~bad[b]]
        med[b] = float(np.median(good_v)) if good_v.size else np.nan
    fill_var = np.where(np.isfinite(var_c) & (var_c > 0), var_c, med[:, None, None])
    all_bad = ~np.isfinite(med)

    # neighbours: segmentation on the band-summed S/N image of the cropped stamp
    neighbour_pix = np.zeros((size, size), bool)
    target = np.zeros((size, size), bool)
    n_nb = 0
    if mask_neighbours and not all_bad.all():
        det = detection_image(img_c, var_c, bad_c)
        neighbour_pix, target, n_nb = find_neighbours(det, config=neighbours)
        neighbour_pix &= inside
    replace = out_mask != 0
    replace |= neighbour_pix[None] & ~replace
    out_mask[:, neighbour_pix] |= np.uint8(StampMask.NEIGHBOUR)
    # a replaced neighbour pixel holds sky noise only: cap its variance at the band median
    fill_var = np.where(neighbour_pix[None], np.minimum(fill_var, med[:, None, None]), fill_var)

    noise = rng.standard_normal((nb, size, size))
    with np.errstate(invalid="ignore"):
        sig = np.sqrt(fill_var)
    base = np.zeros_like(img_c)
    if bad_in.any():
        base = _fill_from_good(img_c, ~bad_c & inside[None], bad_in)
    out_img = np.where(replace, base + noise * sig, img_c)
    out_img[:, neighbour_pix] = (noise * sig)[:, neighbour_pix]
    out_var = fill_var
    # a band with no valid pixel at all stays masked and zero (caller decides)
    for b in np.flatnonzero(all_bad):
        out_img[b] = 0.0
        out_var[b] = np.inf
        out_mask[b] |= np.uint8(StampMask.BAD)
    info = {
        "n_neighbours": int(n_nb),
        "n_neighbour_pixels": int(np.count_nonzero(neighbour_pix)),
        "masked_fraction": float(np.count_nonzero(out_mask) / out_mask.size),
        "bad_fraction": float(np.count_nonzero(bad_in) / max(1, nb * np.count_nonzero(inside))),
        "padded_fraction": float(1.0 - np.count_nonzero(inside) / inside.size),
        "target_pixels": int(np.count_nonzero(target)),
        "all_bad_bands": [int(b) for b in np.flatnonzero(all_bad)],
        "shift_pix": (int(x0), int(y0)),
        "centre_offset_pix": (float(offset[0]), float(offset[1])),
    }
    if band_axis != 0:
        out_img = np.moveaxis(out_img, 0, band_axis)
        out_var = np.moveaxis(out_var, 0, band_axis)
        out_mask = np.moveaxis(out_mask, 0, band_axis)
    return PreparedStamp(image=out_img.astype(np.float32), variance=out_var.astype(np.float32),
                         mask=out_mask, info=info)


def preprocess_mock(
    image: np.ndarray, variance: np.ndarray, *, stamp_size: int, rng: np.random.Generator,
    mask: np.ndarray | None = None, mask_planes: dict[str, int] | None = None,
    neighbours: NeighbourConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """:func:`preprocess_stamp` for a rendered galaxy (a mock).

    With ``neighbours`` (the rule ``ingest`` applied to the observed cutouts) the same
    search replaces other sources and deblended pieces by noise; None skips it. ``mask``
    (a blank-sky field's bit mask, with its ``mask_planes``) marks bad pixels, which are
    filled as in observed stamps. Without a search, a stamp of the stamp size with no bad
    pixel skips the work (preprocessing would neither shift, pad, mask nor fill anything)
    and gets the same output and info.

    Parameters
    ----------
    image, variance : ndarray, shape (B, H, W)
        The rendered stamp and its variance.
    stamp_size : int
        Output side [pixels].
    rng : numpy.random.Generator
        Draws the fill of bad pixels.
    mask : ndarray, optional
        Bit mask, same shape.
    mask_planes : dict, optional
        Bit planes of ``mask``.
    neighbours : NeighbourConfig, optional
        The neighbour search of the observed sample's ingest; None: no search.

    Returns
    -------
    image, variance, info, mask
        float32 image and variance, the info dict and the uint8 stamp mask.
    """
    if mask is None and neighbours is None and image.shape[-2:] == (stamp_size, stamp_size) \
            and np.isfinite(image).all() and np.isfinite(variance).all() and (variance > 0).all():
        return (image.astype(np.float32), variance.astype(np.float32), _clean_prep_info(),
                np.zeros(image.shape, np.uint8))
    prepared = preprocess_stamp(image, variance=variance, mask=mask, stamp_size=stamp_size,
                                rng=rng, mask_neighbours=neighbours is not None, band_axis=0,
                                mask_planes=mask_planes, neighbours=neighbours)
    return (np.asarray(prepared.image), np.asarray(prepared.variance),
            dict(prepared.info), np.asarray(prepared.mask))


def _clean_prep_info() -> dict[str, Any]:
    """What :func:`preprocess_stamp` reports for a clean centred stamp."""
    return {"n_neighbours": 0, "n_neighbour_pixels": 0, "masked_fraction": 0.0,
            "bad_fraction": 0.0, "padded_fraction": 0.0, "target_pixels": 0,
            "all_bad_bands": [], "shift_pix": (0, 0), "centre_offset_pix": (0.0, 0.0)}


# ---------------------------------------------------------------------------
# PSFs
# ---------------------------------------------------------------------------
def prepare_psf(
    psf: np.ndarray, *, size: int, psf_pixel_scale_arcsec: float | None = None,
    pixel_scale_arcsec: float | None = None,
) -> np.ndarray:
    """Normalise, resample and crop/pad a PSF image to an odd ``size`` x ``size``, centred.

    Parameters
    ----------
    psf : ndarray, shape (P, P) or (B, P, P)
        PSF image(s) sampled at pixel centres (the effective PSF, pixel response
        included, as HSC's PSF picker writes it).
    size : int
        Output side length, odd (pixels).
    psf_pixel_scale_arcsec, pixel_scale_arcsec : float, optional
        Pixel scale of the input PSF and of the stamps; when both are given and differ
        by more than 0.1 %, the PSF is resampled (galsim interpolation, flux kept).

    Returns
    -------
    ndarray, float32, shape (size, size) or (B, size, size), each summing to 1

    Notes
    -----
    An odd input whose peak sits at its central pixel is cropped or padded around that
    pixel; any other PSF (even size, off-centre) is re-centred on its centroid by galsim
    interpolation.
    """
    if size % 2 != 1 or size < 3:
        msg = f"PSF size must be odd and at least 3 pixels, got {size}"
        raise RangeError(msg, value=size, min=3)
    arr = np.asarray(psf, dtype=np.float64)
    if arr.ndim == 3:
        return np.stack([prepare_psf(p, size=size, psf_pixel_scale_arcsec=psf_pixel_scale_arcsec,
                                     pixel_scale_arcsec=pixel_scale_arcsec) for p in arr])
    if arr.ndim != 2:
        msg = f"PSF must be a 2-D image (or a stack of them), got shape {arr.shape}"
        raise DataFormatError(msg)
    if not np.all(np.isfinite(arr)):
        msg = "PSF image holds NaN or inf; supply a finite PSF"
        raise DataFormatError(msg)
    total = arr.sum()
    if not total > 0:
        msg = f"PSF image sums to {total:.3g}; it must have positive total flux"
        raise DataFormatError(msg)
    arr = arr / total
    h, w = arr.shape
    resample = (psf_pixel_scale_arcsec is not None and pixel_scale_arcsec is not None
                and abs(psf_pixel_scale_arcsec / pixel_scale_arcsec - 1.0) > 1e-3)
    peak = np.unravel_index(np.argmax(arr), arr.shape)
    centred = h % 2 == 1 and w % 2 == 1 and peak == (h // 2, w // 2)
    if not resample and centred:
        half = size // 2
        out, _ = crop_or_pad(arr, size=size, x0=w // 2 - half, y0=h // 2 - half, fill=0.0)
    else:
        import galsim

        scale_in = psf_pixel_scale_arcsec if resample else 1.0
        scale_out = pixel_scale_arcsec if resample else 1.0
        yy, xx = np.mgrid[0:h, 0:w]
        pos = np.clip(arr, 0, None)
        cx = float((pos * xx).sum() / pos.sum())
        cy = float((pos * yy).sum() / pos.sum())
        # galsim's image origin is pixel (1, 1); offset the profile so the centroid is at 0
        ii = galsim.InterpolatedImage(galsim.Image(arr, scale=scale_in), x_interpolant="lanczos5",
                                      normalization="flux", use_true_center=True,
                                      offset=galsim.PositionD(cx - (w - 1) / 2.0, cy - (h - 1) / 2.0))
        # input samples already include the pixel response: draw without another pixel;
        # when resampling to coarser pixels, flux per output pixel is the surface
        # brightness times the output pixel area
        out = ii.drawImage(nx=size, ny=size, scale=scale_out, method="no_pixel").array.astype(np.float64)
    out_total = out.sum()
    if not out_total > 0:
        msg = "PSF has no positive flux inside the requested size; increase the PSF size"
        raise DataFormatError(msg)
    return (out / out_total).astype(np.float32)
