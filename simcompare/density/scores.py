"""Local fine-structure scores: the likelihood ratio per flow level and inside the footprint.

The multiscale Glow's log-likelihood is a sum of local terms (see
:meth:`simcompare.density.frozen.FrozenFlow.level_maps`): per level k (0 = finest, on a
grid of ``size / 2**(k+1)`` latent pixels) the couplings' log|det| at each position and
the log-density of the latents factored out there. The ratio of two flows with the same
architecture and preprocessing can therefore be taken per level and per latent pixel, and
summed over any part of the stamp. Summing it over the galaxy's footprint only drops the
sky pixels, whose terms carry nothing but the two models' different takes on the noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["ORIENTATIONS", "PEAK_FRACTION", "footprint_mask", "local_scores", "orient",
           "oriented_log_prob", "peak_of_map", "peak_ratio", "pool_mask", "ratio_map",
           "unorient"]

#: Share of the finest-grid cells whose ratio the peak score adds up (1/32: 18 cells of a
#: 48-pixel stamp, 32 of a 64-pixel one; a few PSF areas).
PEAK_FRACTION = 1.0 / 32.0


def footprint_mask(x: np.ndarray, *, sigma: Any, smooth: float = 1.0, threshold: float = 2.0,
                   grow: int = 2) -> np.ndarray:
    """The galaxy's footprint in each stamp, boolean (N, H, W).

    Pixels where the band-summed S/N map, smoothed with a Gaussian of ``smooth`` pixels,
    exceeds ``threshold`` times its own noise; the connected region closest to the stamp
    centre is kept and grown by ``grow`` pixels. A stamp with no such region gets a disc
    of radius ``H/8`` about the centre.

    Parameters
    ----------
    x : ndarray, shape (N, B, H, W)
        Stamps (sky-subtracted, masked pixels filled).
    sigma : array-like, shape (B,)
        Sky noise per band.
    smooth : float
        Gaussian smoothing of the S/N map [pixels]; 0 for none.
    threshold : float
        Detection threshold in units of the smoothed map's noise.
    grow : int
        Pixels the footprint is grown by.

    Returns
    -------
    ndarray of bool, shape (N, H, W)
        The footprint of each stamp.
    """
    from scipy import ndimage

    x = np.asarray(x, np.float32)
    n, nb, h, w = x.shape
    sig = np.asarray(sigma, np.float32).reshape(1, nb, 1, 1)
    snr = (x / sig).sum(1) / np.sqrt(nb)
    noise = 1.0 / (2.0 * np.sqrt(np.pi) * smooth) if smooth > 0 else 1.0
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    fallback = r2 <= (h / 8) ** 2
    struct = ndimage.generate_binary_structure(2, 1)
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        m = ndimage.gaussian_filter(snr[i], smooth) if smooth > 0 else snr[i]
        lab, k = ndimage.label(m > threshold * noise)
        if k == 0:
            out[i] = fallback
            continue
        idx = np.arange(1, k + 1)
        dist = ndimage.minimum(r2, lab, idx)
        sel = lab == idx[int(np.argmin(dist))]
        out[i] = ndimage.binary_dilation(sel, struct, iterations=grow) if grow else sel
    return out


#: Orientation counts a score may average over: the image as it is; its four rotations by
#: 90 degrees; those and their mirror images (the dihedral group of the square).
ORIENTATIONS = (1, 4, 8)


def _check_orientations(orientations: int) -> int:
    if int(orientations) not in ORIENTATIONS:
        msg = f"orientations must be one of {ORIENTATIONS}, got {orientations!r}"
        raise ConfigError(msg)
    return int(orientations)


def orient(x: np.ndarray, j: int) -> np.ndarray:
    """Orientation ``j`` (0-7) of images or maps ``x`` (..., H, W).

    ``j % 4`` quarter turns (``np.rot90`` on the last two axes), mirrored left-right first
    when ``j >= 4``. ``j = 0`` is ``x`` itself.
    """
    y = x[..., ::-1] if j >= 4 else x
    return np.rot90(y, j % 4, axes=(-2, -1))


def unorient(m: np.ndarray, j: int) -> np.ndarray:
    """The inverse of :func:`orient`: a map of orientation ``j`` back on the image's own grid."""
    y = np.rot90(m, -(j % 4), axes=(-2, -1))
    return y[..., ::-1] if j >= 4 else y


def oriented_log_prob(model: Any, x: np.ndarray, orientations: int, **kw: Any) -> np.ndarray:
    """``log p`` of images ``x`` averaged over ``orientations`` of each (:func:`orient`).

    Parameters
    ----------
    model : DensityModel or FrozenDensity
    x : ndarray (N, B, H, W)
        Filled flux images.
    orientations : {1, 4, 8}
    **kw
        Passed to :func:`simcompare.inference.log_prob_batched` (batch size, device,
        progress).
    """
    from ..inference import log_prob_batched

    return np.mean([log_prob_batched(model, np.ascontiguousarray(orient(x, j), np.float32), **kw)
                    for j in range(_check_orientations(orientations))], axis=0)


def pool_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """A (N, H, W) mask on a coarser (N, side, side) grid: a cell is in if any pixel is."""
    n, h, w = mask.shape
    if h % side or w % side:
        msg = f"mask of {h}x{w} pixels cannot be pooled onto a {side}x{side} grid"
        raise ConfigError(msg)
    f = h // side
    return mask.reshape(n, side, f, side, f).any(axis=(2, 4))


def _maps(model: Any, x: np.ndarray, batch: int, orientations: int = 1, bar: Any = None,
          ) -> tuple[list[np.ndarray], np.ndarray]:
    """Level maps of ``x``, averaged over ``orientations`` of every image.

    Each orientation (:func:`orient`) is scored and its maps are turned back onto the
    image's grid (:func:`unorient`; exact, as every level's cells are blocks of
    ``2**(k+1)`` pixels of a stamp that the squeezes divide) before averaging, so the
    maps stay where the light is. A flow trained on rotated and mirrored images is
    still not exactly invariant; the average is the model's estimate with that part of
    its error averaged out.
    """
    orientations = _check_orientations(orientations)
    maps: list[np.ndarray] | None = None
    pre = None
    for j in range(orientations):
        xj = np.ascontiguousarray(orient(x, j)) if j else x
        mj, pj = _maps_once(model, xj, batch, bar)
        mj = [unorient(m, j) for m in mj] if j else mj
        maps = mj if maps is None else [a + b for a, b in zip(maps, mj, strict=True)]
        pre = pj if pre is None else pre + pj
    return [np.ascontiguousarray(m / orientations) for m in maps], pre / orientations


def _maps_once(model: Any, x: np.ndarray, batch: int, bar: Any = None,
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Level maps of ``x`` in batches; the batch is halved on out-of-memory errors.

    ``bar`` (a progress bar, optional) is advanced by the images of every batch.
    """
    import logging

    import torch

    from ..errors import SimcompareError
    from ..inference import is_out_of_memory

    maps: list[list[np.ndarray]] = []
    pre = []
    a, batch = 0, max(1, int(batch))
    while a < len(x):
        xb = torch.from_numpy(np.ascontiguousarray(x[a:a + batch], np.float32))
        try:
            m, ld = model.level_maps(xb)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch == 1:
                msg = "out of memory scoring a single image; use a smaller model or the CPU"
                raise SimcompareError(msg) from None
            batch = max(1, batch // 2)
            logging.getLogger(__name__).warning(
                "out of memory at batch size %d; retrying with %d", batch * 2, batch)
            continue
        a += len(xb)
        if bar is not None:
            bar.update(len(xb))
        if not maps:
            maps = [[] for _ in m]
        for k, mk in enumerate(m):
            maps[k].append(mk.double().cpu().numpy())
        pre.append(ld.double().cpu().numpy())
    return [np.concatenate(m) for m in maps], np.concatenate(pre)


def local_scores(main: Any, background: Any, x: np.ndarray, *, footprint: np.ndarray | None,
                 batch: int = 64, orientations: int = 1, progress: bool = False,
                 desc: str = "") -> dict[str, np.ndarray]:
    """Total, per-level and footprint-restricted log-likelihood ratios of images ``x``.

    Parameters
    ----------
    main, background : FrozenDensity
        The observed-galaxy model and its background (same stamp size and levels).
    x : ndarray (N, B, H, W)
        Prepared images (flux units, masked pixels filled).
    footprint : ndarray (N, H, W) of bool, optional
        The galaxy footprints (:func:`footprint_mask`); without it the footprint scores
        are left out.
    batch : int
        Images per forward pass (halved on out-of-memory errors).
    orientations : {1, 4, 8}
        Score every image in this many orientations (:func:`orient`) and average the
        maps on the image's own grid (every score below is of the average).
    progress : bool
        Show a bar of the images scored (both models, every orientation).
    desc : str
        Label of the bar.

    Returns
    -------
    dict of str to ndarray (N,)
        ``log_p``, ``log_p_background``, ``llr`` (= log_p - log_p_background),
        ``llr_level<k>`` (k = 0 finest; they sum to ``llr`` up to the preprocessing
        term, identical in both models when they share it), ``llr_footprint`` and
        ``llr_footprint_level<k>``, all in nats.
    """
    from .._progress import bar as _bar

    orientations = _check_orientations(orientations)
    bar = _bar(desc=desc, total=2 * orientations * len(x), enable=progress, unit="img")
    try:
        m_main, pre_main = _maps(main, x, batch, orientations, bar)
        m_back, pre_back = _maps(background, x, batch, orientations, bar)
    finally:
        bar.close()
    if len(m_main) != len(m_back) or any(a.shape != b.shape for a, b in zip(m_main, m_back,
                                                                           strict=True)):
        msg = "the model and its background have different levels or stamp sizes"
        raise ConfigError(msg)
    lp = sum(m.sum((1, 2)) for m in m_main) + pre_main
    lpb = sum(m.sum((1, 2)) for m in m_back) + pre_back
    out = {"log_p": lp, "log_p_background": lpb, "llr": lp - lpb}
    fp_total = np.zeros(len(x))
    for k, (a, b) in enumerate(zip(m_main, m_back, strict=True)):
        d = a - b
        out[f"llr_level{k}"] = d.sum((1, 2))
        if footprint is not None:
            f = pool_mask(footprint, d.shape[-1])
            out[f"llr_footprint_level{k}"] = (d * f).sum((1, 2))
            fp_total += out[f"llr_footprint_level{k}"]
    if footprint is not None:
        out["llr_footprint"] = fp_total + (pre_main - pre_back)
    out["llr_map"] = ratio_map([a - b for a, b in zip(m_main, m_back, strict=True)])
    out["llr_peak"] = peak_of_map(out["llr_map"])
    return out


def ratio_map(diff_maps: list[np.ndarray]) -> np.ndarray:
    """Every level's ratio map on the finest level's grid, (N, S, S) with S = size / 2.

    A coarser level's cell is shared equally by the finest cells under it, so the map
    sums to the stamp's ratio (less the preprocessing term) and a localised excess stays
    as small as the finest scale allows.
    """
    side = diff_maps[0].shape[-1]
    total = np.zeros((len(diff_maps[0]), side, side))
    for d in diff_maps:
        f = side // d.shape[-1]
        total += np.repeat(np.repeat(d, f, axis=1), f, axis=2) / (f * f)
    return total


def peak_of_map(ratio: np.ndarray, *, fraction: float = PEAK_FRACTION) -> np.ndarray:
    """Sum of the largest ``fraction`` of the cells of each (S, S) ratio map in ``ratio``."""
    n = len(ratio)
    k = max(1, round(fraction * ratio.shape[-1] * ratio.shape[-2]))
    flat = np.sort(ratio.reshape(n, -1), axis=1)
    return flat[:, -k:].sum(axis=1)


def peak_ratio(diff_maps: list[np.ndarray], *, fraction: float = 0.125) -> np.ndarray:
    """Sum of the largest ``fraction`` of cells of the ratio map on the coarsest grid.

    Every level's ratio map is summed onto the coarsest level's grid (``size / 2**L``
    cells a side) and the cells are added from the largest down; a localised excess
    (a clump) then counts fully without the rest of the stamp diluting it. This was the
    default score before the finest-grid peak (:func:`ratio_map`, :func:`peak_of_map`),
    which localises a clump four times better and detects clump removal more often
    (docs/statistics.md, "Power of the fine-structure scores").
    """
    side = diff_maps[-1].shape[-1]
    n = len(diff_maps[-1])
    total = np.zeros((n, side, side))
    for d in diff_maps:
        f = d.shape[-1] // side
        total += d.reshape(n, side, f, side, f).sum(axis=(2, 4))
    return peak_of_map(total, fraction=fraction)
