"""Classical morphology of every stamp in an ImageSet (statmorph's definitions), one code path.

Mock and observed image sets go through exactly the same steps, on the same
(preprocessed) stamps:

1. **Detection image**: the band-summed flux divided by the band-summed noise, smoothed
   with a Gaussian of 1 pixel (the noise of the smoothed map is propagated exactly for
   a white-noise map). Pixels masked in the ImageSet are excluded.
2. **Segmentation**: :func:`photutils.segmentation.detect_sources` at S/N >=
   ``detect_snr`` with at least ``detect_npixels`` connected pixels; the segment
   covering the stamp centre (or the nearest one within 3 pixels) is the galaxy;
   every other segment is masked.
3. **S/N**: band-summed flux in the segment over the square root of its summed
   variance. Stamps below ``min_snr`` are not measured (``failure_reason = "low_snr"``).
4. **Morphology** of the measurement band: half-light radius, Sersic index and
   half-light semi-major axis, concentration, asymmetry, smoothness, Gini, M20,
   ellipticity, and statmorph's ``flag`` (0 good, 1 suspect, 2 bad, 4 catastrophic) and
   ``flag_sersic``. ``method="fast"`` (default) computes the non-parametric statistics
   with :func:`simcompare.morphometry.nonparametric` (statmorph's definitions,
   vectorised) and fits all Sersic profiles of a chunk at once with the background
   stage's torch fitter (:func:`simcompare.density.background.fit_sersic`, PSF-convolved,
   inverse-variance weights); ``method="statmorph"`` runs statmorph's
   ``SourceMorphology`` with ``weightmap = sqrt(variance)`` and the band's PSF, the
   reference. The agreement between the two is in docs/morphology.md.
5. **Aperture colours** between adjacent bands in a circular aperture of radius
   max(2 r_half, 3 px) around the asymmetry centre: ``colour_<b1>_<b2>`` =
   -2.5 log10(F_b1 / F_b2) (magnitudes; NaN when a flux is not positive).

No row is ever dropped: a stamp that cannot be measured keeps its row with NaN values,
``flag = 4`` and a ``failure_reason``; :func:`failure_counts` tallies them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_parquet_atomic
from ._progress import progress as _progress
from .errors import ConfigError
from .segmentation import central_label

__all__ = [
    "MEASUREMENT_COLUMNS",
    "failure_counts",
    "measure",
    "measure_imageset",
    "measure_stamp",
]

log = logging.getLogger(__name__)

#: Columns every measurement row carries (plus ``colour_<b1>_<b2>`` per adjacent pair).
MEASUREMENT_COLUMNS = (
    "object_id", "flag", "flag_sersic", "failure_reason", "r_half_arcsec", "sersic_n",
    "sersic_r_half_arcsec", "concentration", "asymmetry", "smoothness", "gini", "m20",
    "ellipticity", "snr", "compact", "n_warnings",
)
_STATMORPH = {
    "r_half_arcsec": "r50", "sersic_n": "sersic_n", "sersic_r_half_arcsec": "sersic_rhalf",
    "concentration": "concentration", "asymmetry": "asymmetry", "smoothness": "smoothness",
    "gini": "gini", "m20": "m20", "ellipticity": "ellipticity_asymmetry",
}
_ARCSEC = ("r_half_arcsec", "sersic_r_half_arcsec")
_FLAG_CATASTROPHIC = 4
_SMOOTH_SIGMA_PX = 1.0
_SEARCH_RADIUS_PX = 3.0
_COMPACT_RPETRO_PX = 8.0  # statmorph#2: smoothness is meaningless below ~8 px
_SERSIC_ITERATIONS = 8


def _empty_row(bands: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: math.nan for k in MEASUREMENT_COLUMNS}
    row |= {"flag": _FLAG_CATASTROPHIC, "flag_sersic": 1, "failure_reason": "",
            "compact": False, "n_warnings": 0}
    for b1, b2 in itertools.pairwise(bands):
        row[f"colour_{b1}_{b2}"] = math.nan
    return row


def _sky_variance(img: np.ndarray, good: np.ndarray) -> float:
    """Robust sky variance from the stamp border (used only without a variance map)."""
    border = np.zeros(img.shape, bool)
    w = max(2, img.shape[0] // 8)
    border[:w, :] = border[-w:, :] = border[:, :w] = border[:, -w:] = True
    vals = img[border & good]
    if vals.size < 10:
        vals = img[good]
    mad = np.median(np.abs(vals - np.median(vals)))
    return float((1.4826 * mad) ** 2) if mad > 0 else float(np.var(vals))


def measure_stamp(
    image: np.ndarray, *, variance: np.ndarray | None = None, mask: np.ndarray | None = None,
    psf: np.ndarray | None = None, bands: Sequence[str], band: str, pixel_scale_arcsec: float,
    detect_snr: float = 2.0, detect_npixels: int = 5, min_snr: float = 5.0,
    method: str = "fast",
) -> dict[str, Any]:
    """Measure one multi-band stamp.

    Parameters
    ----------
    image : ndarray, shape (B, H, W)
        Flux per pixel (survey flux unit).
    variance : ndarray, shape (B, H, W), optional
        Per-pixel noise variance; without it a constant sky variance is estimated from
        the stamp border (robust MAD).
    mask : ndarray, shape (B, H, W), optional
        Non-zero marks bad pixels.
    psf : ndarray, shape (B, P, P), optional
        Effective PSF per band (sum 1); used for the Sersic fit.
    bands : sequence of str
        Band names, in the order of the first axis.
    band : str
        The band that is measured.
    pixel_scale_arcsec : float
        Pixel scale (arcsec / pixel) to convert radii.
    detect_snr : float
        Detection threshold on the smoothed band-summed S/N map.
    detect_npixels : int
        Minimum connected pixels of a segment.
    min_snr : float
        Stamps whose segment S/N is below this are not measured (``low_snr``).
    method : {"fast", "statmorph"}
        ``"fast"``: :func:`simcompare.morphometry.nonparametric` and the batched torch
        Sersic fit; ``"statmorph"``: statmorph's ``SourceMorphology`` (the reference).

    Returns
    -------
    dict
        One row: see :data:`MEASUREMENT_COLUMNS`; ``snr`` is dimensionless, radii are
        in arcsec, colours in magnitudes.
    """
    _check_method(method)
    row, ctx = _prepare(image, variance=variance, mask=mask, psf=psf, bands=bands, band=band,
                        detect_snr=detect_snr, detect_npixels=detect_npixels, min_snr=min_snr)
    if ctx is None:
        return row
    if method == "statmorph":
        _statmorph_row(row, ctx, pixel_scale_arcsec)
    else:
        fit = _fast_row(row, ctx, pixel_scale_arcsec)
        if fit is not None:
            _sersic_rows([row], [fit], pixel_scale_arcsec)
    return row


METHODS = ("fast", "statmorph")


def _check_method(method: str) -> None:
    if method not in METHODS:
        msg = f"method={method!r}: choose one of {list(METHODS)}"
        raise ConfigError(msg)


def _prepare(
    image: np.ndarray, *, variance: np.ndarray | None, mask: np.ndarray | None,
    psf: np.ndarray | None, bands: Sequence[str], band: str, detect_snr: float = 2.0,
    detect_npixels: int = 5, min_snr: float = 5.0,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Steps 1-3 (detection, central segment, S/N): the row and what measuring needs."""
    from photutils.segmentation import detect_sources
    from scipy.ndimage import gaussian_filter

    row = _empty_row(bands)
    img = np.asarray(image, np.float64)
    nb, ny, nx = img.shape
    bi = list(bands).index(band)
    good = np.ones(img.shape, bool) if mask is None else (np.asarray(mask) == 0)
    good &= np.isfinite(img)
    if variance is None:
        var = np.stack([np.full((ny, nx), _sky_variance(img[b], good[b])) for b in range(nb)])
    else:
        var = np.asarray(variance, np.float64).copy()
    good &= np.isfinite(var) & (var > 0)
    if not good[bi].any():
        row["failure_reason"] = "all_masked"
        return row, None
    img = np.where(good, img, 0.0)
    var = np.where(good, var, 0.0)
    any_good = good.any(axis=0)

    # detection on the smoothed band-summed S/N map (white-noise propagation)
    s_sum = img.sum(axis=0)
    v_sum = var.sum(axis=0)
    k2 = 1.0 / (4.0 * np.pi * _SMOOTH_SIGMA_PX**2)  # sum of squared Gaussian weights
    s_sm = gaussian_filter(s_sum, _SMOOTH_SIGMA_PX, mode="constant")
    v_sm = gaussian_filter(v_sum, _SMOOTH_SIGMA_PX, mode="constant") * k2
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_map = np.where(v_sm > 0, s_sm / np.sqrt(v_sm), 0.0)
    from photutils.utils.exceptions import NoDetectionsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # recorded as "no_detection"
        seg = detect_sources(snr_map, detect_snr, detect_npixels, mask=~any_good)
    if seg is None:
        row["failure_reason"] = "no_detection"
        return row, None
    segmap = seg.data
    cy, cx = ny // 2, nx // 2
    label = central_label(segmap, (cx, cy), max_radius=_SEARCH_RADIUS_PX)
    if label == 0:
        row["failure_reason"] = "no_central_segment"
        return row, None
    central = segmap == label
    tot_var = v_sum[central].sum()
    snr = float(s_sum[central].sum() / math.sqrt(tot_var)) if tot_var > 0 else math.nan
    row["snr"] = snr
    if not (snr >= min_snr):
        row["failure_reason"] = "low_snr"
        return row, None
    smask = ((segmap > 0) & ~central) | ~good[bi]
    psf_b = None if psf is None else np.asarray(psf[bi], np.float64)
    return row, {"img": img, "var": var, "good": good, "bi": bi, "central": central,
                 "smask": smask, "psf": psf_b, "bands": tuple(bands)}


def _statmorph_row(row: dict[str, Any], ctx: dict[str, Any], pixel_scale_arcsec: float
                   ) -> None:
    """Step 4 with statmorph (the reference implementation), then the colours."""
    import statmorph

    img, var, good, bi = ctx["img"], ctx["var"], ctx["good"], ctx["bi"]
    weight = np.sqrt(np.where(good[bi], var[bi], np.nanmedian(var[bi][good[bi]])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = statmorph.SourceMorphology(img[bi], ctx["central"].astype(np.int32), 1,
                                           mask=ctx["smask"], weightmap=weight, psf=ctx["psf"])
        except Exception as exc:  # statmorph raises bare exceptions on odd inputs
            row["failure_reason"] = f"statmorph_error:{type(exc).__name__}"
            row["n_warnings"] = len(caught)
            return
    row["n_warnings"] = len(caught)
    row["flag"] = int(m.flag)
    row["flag_sersic"] = int(m.flag_sersic)
    for col, attr in _STATMORPH.items():
        v = float(getattr(m, attr, math.nan))
        if not math.isfinite(v) or v == -99.0:
            v = math.nan
        row[col] = v * pixel_scale_arcsec if col in _ARCSEC else v
    if row["flag"] >= _FLAG_CATASTROPHIC:
        row["failure_reason"] = "statmorph_catastrophic"
    rpetro = float(getattr(m, "rpetro_circ", math.nan))
    row["compact"] = bool(math.isfinite(rpetro) and rpetro < _COMPACT_RPETRO_PX)
    _colours(row, ctx, float(getattr(m, "xc_asymmetry", math.nan)),
             float(getattr(m, "yc_asymmetry", math.nan)), pixel_scale_arcsec)


def _fast_row(row: dict[str, Any], ctx: dict[str, Any], pixel_scale_arcsec: float
              ) -> tuple | None:
    """Step 4 with the vectorised statistics; returns the Sersic-fit inputs (or None)."""
    from .morphometry import nonparametric

    img, var, good, bi = ctx["img"], ctx["var"], ctx["good"], ctx["bi"]
    try:
        m = nonparametric(img[bi], ctx["central"], ctx["smask"])
    except (ValueError, FloatingPointError, IndexError, np.linalg.LinAlgError) as exc:
        # degenerate inputs (as statmorph raises on them): the row stays, unmeasured
        row["failure_reason"] = f"morphometry_error:{type(exc).__name__}"
        return None
    row["flag"] = int(m["flag"])
    if row["flag"] >= _FLAG_CATASTROPHIC:
        row["failure_reason"] = "statmorph_catastrophic"
        return None
    for col, attr in _STATMORPH.items():
        if attr.startswith("sersic_"):
            continue
        v = float(m[attr])
        row[col] = v * pixel_scale_arcsec if col in _ARCSEC else v
    rpetro = float(m["rpetro_circ"])
    row["compact"] = bool(math.isfinite(rpetro) and rpetro < _COMPACT_RPETRO_PX)
    _colours(row, ctx, float(m["xc_asymmetry"]), float(m["yc_asymmetry"]), pixel_scale_arcsec)
    # the Sersic fit sees what statmorph's does: the measured band with other sources,
    # bad and outlier pixels removed, inverse-variance weights, zero-valued pixels left out
    data = np.zeros(img[bi].shape)
    sl = m["slice_stamp"]
    keep = np.zeros(img[bi].shape, bool)
    keep[sl] = ~m["mask_stamp"]
    keep &= good[bi] & (img[bi] != 0)
    data[keep] = img[bi][keep]
    wts = np.where(keep, 1.0 / np.where(var[bi] > 0, var[bi], 1.0), 0.0)
    return data, wts, ctx["psf"], sl


def _sersic_rows(rows: list[dict[str, Any]], fits: list[tuple], pixel_scale_arcsec: float,
                 ) -> None:
    """Batched torch Sersic fits (the background stage's fitter) for many stamps.

    Each stamp is fitted on a square window around its statmorph cutout (side rounded up
    to 8 px; the fit's cost grows with the window's area and pixels outside the cutout
    carry no light of the galaxy); stamps with equal windows are fitted in one batch, so
    a stamp's result does not depend on which other stamps share its chunk.
    """
    if not fits:
        return
    ny, nx = fits[0][0].shape
    sides = [min(ny, nx, -(-max(f[3][0].stop - f[3][0].start,
                                f[3][1].stop - f[3][1].start) // 8) * 8) for f in fits]
    for side in sorted(set(sides)):
        idx = [i for i, s in enumerate(sides) if s == side]
        _sersic_batch([rows[i] for i in idx], [fits[i] for i in idx], side, pixel_scale_arcsec)


def _sersic_batch(rows: list[dict[str, Any]], fits: list[tuple], side: int,
                  pixel_scale_arcsec: float) -> None:
    from .density.background import N_MAX, N_MIN, fit_sersic

    ny, nx = fits[0][0].shape
    data = np.empty((len(fits), side, side), np.float32)
    wts = np.empty((len(fits), side, side), np.float32)
    for i, f in enumerate(fits):
        (sy, sx) = f[3]
        y0 = min(max(0, (sy.start + sy.stop - side) // 2), ny - side)
        x0 = min(max(0, (sx.start + sx.stop - side) // 2), nx - side)
        data[i] = f[0][y0:y0 + side, x0:x0 + side]
        wts[i] = f[1][y0:y0 + side, x0:x0 + side]
    psfs = [np.ones((1, 1)) if f[2] is None else f[2] for f in fits]
    size = max(p.shape[-1] for p in psfs)
    psf = np.zeros((len(psfs), size, size), np.float32)
    for i, p in enumerate(psfs):
        o = (size - p.shape[-1]) // 2
        psf[i, o:o + p.shape[-1], o:o + p.shape[-1]] = p / p.sum()
    par = fit_sersic(data, wts, psf, iterations=_SERSIC_ITERATIONS)
    for row, p in zip(rows, par, strict=True):
        g = math.hypot(float(p[3]), float(p[4]))
        e = math.tanh(g)
        q = (1 - e) / (1 + e)
        n = float(p[5])
        re_major = math.exp(float(p[2])) / math.sqrt(q)  # statmorph: semi-major axis
        ok = math.isfinite(n) and math.isfinite(re_major) and float(p[6]) > 0
        row["sersic_n"] = n if ok else math.nan
        row["sersic_r_half_arcsec"] = re_major * pixel_scale_arcsec if ok else math.nan
        at_bound = not ok or n <= N_MIN + 1e-3 or n >= N_MAX - 1e-3
        row["flag_sersic"] = 1 if at_bound else 0


def _colours(row: dict[str, Any], ctx: dict[str, Any], xc: float, yc: float,
             pixel_scale_arcsec: float) -> None:
    """Step 5: aperture colours between adjacent bands around the asymmetry centre."""
    img, good, bands = ctx["img"], ctx["good"], ctx["bands"]
    nb, ny, nx = img.shape
    r50 = row["r_half_arcsec"] / pixel_scale_arcsec if math.isfinite(row["r_half_arcsec"]) else 3.0
    radius = min(max(2.0 * r50, 3.0), 0.5 * min(ny, nx))
    if not (math.isfinite(xc) and math.isfinite(yc)) or xc == -99.0:
        xc, yc = float(nx // 2), float(ny // 2)
    yy, xx = np.mgrid[0:ny, 0:nx]
    aper = np.hypot(xx - xc, yy - yc) <= radius
    flux = []
    for b in range(nb):
        inside = aper & good[b]
        ok = inside.sum() >= 0.8 * aper.sum()
        flux.append(float(img[b][inside].sum()) if ok else math.nan)
    for i, (b1, b2) in enumerate(itertools.pairwise(bands)):
        f1, f2 = flux[i], flux[i + 1]
        row[f"colour_{b1}_{b2}"] = (-2.5 * math.log10(f1 / f2)
                                   if f1 > 0 and f2 > 0 else math.nan)


def _measure_chunk(args: tuple) -> list[dict[str, Any]]:
    images, variance, mask, psf, kw = args
    kw = dict(kw)
    method = kw.pop("method", "fast")
    scale = kw.pop("pixel_scale_arcsec")
    out, pending, fits = [], [], []
    for i in range(images.shape[0]):
        p = psf if psf is None or psf.ndim == 3 else psf[i]
        row, ctx = _prepare(images[i], variance=None if variance is None else variance[i],
                            mask=None if mask is None else mask[i], psf=p, **kw)
        out.append(row)
        if ctx is None:
            continue
        if method == "statmorph":
            _statmorph_row(row, ctx, scale)
        else:
            fit = _fast_row(row, ctx, scale)
            if fit is not None:
                pending.append(row)
                fits.append(fit)
    _sersic_rows(pending, fits, scale)
    return out


#: Stamps per task: (fewest on several workers, most), by method (see measure_imageset).
_CHUNK = {"fast": (16, 64), "statmorph": (1, 8)}


def _chunk_size(n: int, method: str, cluster: Any) -> int:
    """Stamps per task: the most in this process, about four tasks per worker on several."""
    lo, hi = _CHUNK[method]
    if n <= lo or not cluster.distributed:  # one task, or no workers to share it with
        return hi
    return int(min(hi, max(lo, -(-n // (4 * cluster.n_workers)))))


def _default_band(bands: Sequence[str]) -> str:
    for b in ("i", "r", "HSC-I", "HSC-R"):
        if b in bands:
            return b
    return bands[len(bands) // 2]


def measure_imageset(
    imageset: Any, *, band: str | None = None, workers: int = 1, progress: bool = False,
    chunk_size: int | None = None, method: str = "fast", cluster: Any = None, **options: Any,
) -> Any:
    """Measure every stamp of an in-memory :class:`~simcompare.imageset.ImageSet`.

    Parameters
    ----------
    imageset : ImageSet
    band : str, optional
        Measurement band (default: ``i``, else ``r``, else the middle band).
    workers : int
        Worker processes (more than 1 start a local dask cluster).
    progress : bool
        Show a progress bar.
    chunk_size : int, optional
        Stamps per task sent to a worker (and per batched Sersic fit). Default: 64 for
        ``method="fast"``, 8 for ``"statmorph"``; on several workers, about four tasks
        per worker (``ceil(n / (4 x workers))``), at least 16 (``"fast"``) or 1 and at most
        those defaults. The results do not depend on it.
    method : {"fast", "statmorph"}
        See :func:`measure_stamp`.
    cluster : Cluster, optional
        The workers to measure on (:mod:`simcompare.cluster`, shared with the other stages
        of a run); overrides ``workers``.
    **options
        Passed to :func:`measure_stamp` (``detect_snr``, ``detect_npixels``, ``min_snr``).

    Returns
    -------
    pandas.DataFrame
        One row per image, in ImageSet order, with the catalogue columns appended.
    """
    import pandas as pd

    bands = tuple(imageset.bands)
    band = band or _default_band(bands)
    if band not in bands:
        msg = f"band {band!r} is not in this image set; choose one of {list(bands)}"
        raise ConfigError(msg)
    if workers < 1:
        msg = f"workers={workers}: use 1 or more processes"
        raise ConfigError(msg)
    _check_method(method)
    from .cluster import as_cluster

    n = len(imageset)
    kw = {"bands": bands, "band": band, "pixel_scale_arcsec": float(imageset.pixel_scale_arcsec),
          "method": method, **options}
    psf = imageset.psf
    rows: list[dict[str, Any]] = []
    cluster, own_cluster = as_cluster(cluster, workers=workers)
    try:
        if chunk_size is None:
            chunk_size = _chunk_size(n, method, cluster)
        tasks = []
        for s in range(0, n, chunk_size):
            sl = slice(s, min(n, s + chunk_size))
            tasks.append((
                imageset.images[sl], None if imageset.variance is None else imageset.variance[sl],
                None if imageset.mask is None else imageset.mask[sl],
                None if psf is None else (psf if psf.ndim == 3 else psf[sl]), kw))
        results = (map(_measure_chunk, tasks) if len(tasks) <= 1
                   else cluster.map(_measure_chunk, tasks, name="morphology"))
        for res in _progress(results, desc="morphology", total=len(tasks), enable=progress,
                             unit="chunk"):
            rows.extend(res)
    finally:
        if own_cluster:
            cluster.close()
    df = pd.DataFrame(rows)
    df["object_id"] = imageset.object_id.astype(np.int64)
    for key, col in imageset.catalog.items():
        if key not in df.columns:
            df[key] = np.asarray(col)
    df["failure_reason"] = df["failure_reason"].astype(str)
    df.attrs = {"band": band, "bands": list(bands), "n_images": n, "method": method,
                "failures": failure_counts(df)}
    return df


def failure_counts(table: Any) -> dict[str, int]:
    """Count rows by ``failure_reason`` and by statmorph ``flag`` value.

    Returns
    -------
    dict of str to int
        ``{"measured": ..., "<reason>": ..., "flag_<k>": ...}``.
    """
    reasons = table["failure_reason"].fillna("").astype(str)
    out = {"measured": int((reasons == "").sum())}
    for r, c in reasons[reasons != ""].value_counts().items():
        out[str(r)] = int(c)
    for f, c in table["flag"].value_counts().sort_index().items():
        out[f"flag_{int(f)}"] = int(c)
    return out


def measure(
    images: str | os.PathLike | Any, *, out: str | os.PathLike | None, band: str | None = None,
    max_images: int | None = None, workers: int = 1, seed: int = 0, progress: bool = False,
    method: str = "fast", cluster: Any = None, **options: Any,
) -> Any:
    """Measure the morphology of the stamps of an ImageSet file and write a Parquet table.

    Parameters
    ----------
    images : path-like or ImageSet
        The image set (mock or observed alike).
    out : path-like or None
        Parquet file written atomically (``None``: do not write).
    band : str, optional
        Measurement band (default ``i``, else ``r``, else the middle band).
    max_images : int, optional
        Measure a random subset of this many images (chosen with ``seed``, kept in file
        order); all images when None.
    workers : int
        Worker processes (more than 1 start a local dask cluster).
    cluster : Cluster, optional
        Workers shared with the other stages of a run; overrides ``workers``.
    seed : int
        Seed of the subset choice.
    progress : bool
        Progress bar.
    method : {"fast", "statmorph"}
        ``"fast"`` (default): vectorised statistics with statmorph's definitions and one
        batched Sersic fit; ``"statmorph"``: statmorph itself, the reference (about 7
        times slower per core). Agreement: docs/morphology.md.
    **options
        Passed to :func:`measure_stamp`.

    Returns
    -------
    pandas.DataFrame
        object_id, flag, flag_sersic, failure_reason, r_half_arcsec, sersic_n,
        sersic_r_half_arcsec, concentration, asymmetry, smoothness, gini, m20,
        ellipticity, snr, compact, n_warnings, colour_<b1>_<b2>, catalogue columns.
    """
    from . import imageset as _imageset

    _check_method(method)
    if max_images is not None and max_images < 1:
        msg = f"max_images={max_images}: use a positive number or None for all images"
        raise ConfigError(msg)
    if isinstance(images, (str, os.PathLike)):
        cat = _imageset.read_catalog(images)
        n = len(cat["object_id"])
        index = None
        if max_images is not None and max_images < n:
            rng = np.random.default_rng(seed)
            index = np.sort(rng.choice(n, size=int(max_images), replace=False))
        iset = _imageset.read(images, index=index)
    else:
        iset = images
        if max_images is not None and max_images < len(iset):
            rng = np.random.default_rng(seed)
            iset = iset.subset(np.sort(rng.choice(len(iset), size=int(max_images), replace=False)))
    df = measure_imageset(iset, band=band, workers=workers, progress=progress, method=method,
                          cluster=cluster, **options)
    df.attrs |= {"seed": seed, "max_images": max_images, "kind": iset.kind,
                 "survey": iset.survey}
    counts = df.attrs["failures"]
    log.info("morphology of %d images (%s): %s", len(df), iset.kind, counts)
    if out is not None:
        write_parquet_atomic(df, Path(out))
    return df


