"""Data handling for the density model: masked-pixel filling, noise levels, splits.

Masked pixels
-------------
A flow needs a value in every pixel. Before training *and* before scoring, every pixel
with ``mask != 0`` is replaced by a draw from ``N(0, variance)`` of that pixel (the sky
is background-subtracted), or, where the variance is missing or not finite, from
``N(0, sigma_b^2)`` with ``sigma_b`` the band's robust sky sigma. The draw uses an
explicit seeded generator, so scores are reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataFormatError
from ..imageset import ImageSet

__all__ = ["fill_masked", "make_split", "pixel_variance", "prepared_images", "sky_sigma"]

log = logging.getLogger(__name__)


def sky_sigma(images: np.ndarray, *, variance: np.ndarray | None = None,
              mask: np.ndarray | None = None) -> np.ndarray:
    """Typical per-band sky-noise sigma in flux units, shape ``(B,)``.

    The median of ``sqrt(variance)`` over good pixels when a variance is given, else
    1.4826 x the median absolute deviation of the good pixels (robust to the galaxy,
    which fills a small part of each stamp).

    Parameters
    ----------
    images : ndarray, shape (N, B, H, W)
        Images in flux units.
    variance : ndarray, optional
        Per-pixel variance, same shape.
    mask : ndarray, optional
        Per-pixel mask, same shape (non-zero is bad).
    """
    b = images.shape[1]
    out = np.empty(b)
    for k in range(b):
        good = np.ones(images[:, k].shape, bool) if mask is None else mask[:, k] == 0
        if variance is not None:
            v = variance[:, k][good & np.isfinite(variance[:, k]) & (variance[:, k] > 0)]
            if v.size:
                out[k] = float(np.sqrt(np.median(v)))
                continue
        px = images[:, k][good & np.isfinite(images[:, k])]
        if px.size == 0:
            msg = f"band {k} has no good pixels; check the mask of the image set"
            raise DataFormatError(msg)
        out[k] = 1.4826 * float(np.median(np.abs(px - np.median(px))))
    if not np.all(out > 0):
        msg = f"sky sigma must be positive in every band, got {out.tolist()}; the images look blank"
        raise DataFormatError(msg)
    return out


def pixel_variance(images: np.ndarray, *, variance: np.ndarray | None = None,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel variance, float32, shape of ``images``: ``variance`` where finite and positive.

    Elsewhere, and everywhere without a ``variance``, the band's :func:`sky_sigma` squared.

    Parameters
    ----------
    images : ndarray, shape (N, B, H, W)
        Images in flux units (for :func:`sky_sigma`).
    variance : ndarray, optional
        Per-pixel variance, same shape.
    mask : ndarray, optional
        Per-pixel mask, same shape (non-zero is bad).
    """
    sigma = sky_sigma(images, variance=variance, mask=mask)
    if variance is not None:
        return np.where(np.isfinite(variance) & (variance > 0), variance,
                        (sigma**2)[None, :, None, None]).astype(np.float32)
    return np.broadcast_to((sigma**2).astype(np.float32)[None, :, None, None], images.shape).copy()


def fill_masked(images: np.ndarray, *, mask: np.ndarray | None, variance: np.ndarray | None,
                sigma: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Copy of ``images`` with masked (and non-finite) pixels replaced by noise.

    Parameters
    ----------
    images, mask, variance : ndarray (N, B, H, W)
        Flux units; ``mask`` non-zero marks bad pixels.
    sigma : sequence of float
        Per-band fallback sigma (flux units) where the variance is unusable.
    rng : numpy.random.Generator
    """
    out = np.array(images, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if mask is not None:
        bad |= mask != 0
    if not bad.any():
        return out
    sig = np.broadcast_to(np.asarray(sigma, np.float32)[None, :, None, None], out.shape)
    if variance is not None:
        v = np.where(np.isfinite(variance) & (variance > 0), variance, sig**2)
        sd = np.sqrt(v)
    else:
        sd = sig
    idx = np.nonzero(bad)
    out[idx] = (rng.standard_normal(idx[0].size) * sd[idx]).astype(np.float32)
    return out


def prepared_images(s: ImageSet, *, sigma: Sequence[float], seed: int) -> np.ndarray:
    """The ImageSet's images with masked pixels filled (see module notes), float32.

    Each image with bad pixels draws its fill from a generator seeded by
    ``(seed, object_id)``, so an image gets the same fill whichever subset it is in.

    Parameters
    ----------
    s : ImageSet
        The images, with mask and variance when present.
    sigma : sequence of float
        Per-band sky sigma (flux units) of the fill noise.
    seed : int
        Base seed of the per-object fill generators.
    """
    out = np.array(s.images, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if s.mask is not None:
        bad |= s.mask != 0
    rows = np.flatnonzero(bad.reshape(len(out), -1).any(axis=1))
    ids = s.object_id.astype(np.int64)
    for i in rows:
        rng = np.random.default_rng([seed, int(ids[i]) % (2**63)])
        out[i] = fill_masked(out[i:i + 1], mask=bad[i:i + 1].astype(np.uint8),
                             variance=None if s.variance is None else s.variance[i:i + 1],
                             sigma=sigma, rng=rng)[0]
    return out


def make_split(object_ids: np.ndarray, *, seed: int, val_fraction: float = 0.1,
               test_fraction: float = 0.2) -> dict[str, list[int]]:
    """Train / validation / test object ids, fixed by ``seed``.

    Parameters
    ----------
    object_ids : ndarray of int
        Ids of every image.
    seed : int
        Seed of the shuffle.
    val_fraction : float, optional
        Validation share (default 0.1).
    test_fraction : float, optional
        Test share (default 0.2).

    Returns
    -------
    dict of str to list of int
        ``train``, ``validation`` and ``test`` ids.

    Raises
    ------
    ConfigError
        If the fractions are out of range or a part would be empty.
    """
    ids = np.asarray(object_ids, np.int64)
    if len(np.unique(ids)) != len(ids):
        msg = "object_id values must be unique to split the image set; fix the catalogue"
        raise DataFormatError(msg)
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        msg = f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) with sum < 1"
        raise ConfigError(msg)
    n = len(ids)
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    if n - n_test - n_val < 2:
        msg = f"{n} images are too few to split into train/validation/test; give at least 8"
        raise ConfigError(msg)
    perm = np.random.default_rng(seed).permutation(n)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return {"train": sorted(ids[train].tolist()), "validation": sorted(ids[val].tolist()),
            "test": sorted(ids[test].tolist())}
