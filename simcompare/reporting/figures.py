"""Figures of the report: deterministic PNG files from serialised results.

Every function here is pure: it takes arrays or tables and writes one PNG. Plots go
through matplotlib's Agg backend (imported lazily) with the PNG metadata switched off,
so the same inputs give byte-identical files. Image stamps are written by a small
stand-alone PNG encoder (:func:`write_png`), which is deterministic by construction.

Colour composites follow Lupton et al. (2004, PASP 116, 133): the mean intensity
``I = (R + G + B) / 3`` is mapped through ``f(I) = asinh(Q I / s) / Q`` and each channel
is scaled by ``f(I) / I`` (colours are kept; a pixel whose brightest channel exceeds 1
is scaled down as a whole). :func:`asinh_scale` chooses ``s`` so that a given
intensity (e.g. the 99.5th percentile of the observed stamps) maps to 1.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LUPTON_Q",
    "asinh_calibration",
    "asinh_grey",
    "asinh_scale",
    "diverging_rgb",
    "embedding_map",
    "histogram_panels",
    "lupton_rgb",
    "rgb_band_choice",
    "save_figure",
    "training_curves",
    "trend_panels",
    "write_png",
]

log = logging.getLogger(__name__)

#: Softening parameter Q of the asinh stretch used for every composite and stamp.
LUPTON_Q = 8.0

_SIM_COLOUR = "#c0392b"
_OBS_COLOUR = "#2471a3"


# --------------------------------------------------------------------------- PNG output


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an 8-bit greyscale ``(H, W)`` or RGB ``(H, W, 3)`` array as a PNG file.

    The encoder writes only the IHDR, IDAT and IEND chunks (no time, no software
    tag), so identical arrays give identical bytes.

    Parameters
    ----------
    path : str or Path
        Output file.
    rgb : ndarray of uint8, shape (H, W) or (H, W, 3)
        Pixel values; row 0 is the top of the image.

    Returns
    -------
    Path
        ``path``.
    """
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim == 2:
        colour_type, channels = 0, 1
    elif arr.ndim == 3 and arr.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        msg = f"write_png needs an (H, W) or (H, W, 3) uint8 array, got shape {arr.shape}"
        raise ValueError(msg)
    h, w = arr.shape[:2]
    rows = arr.reshape(h, w * channels)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.write_bytes(png)
    return path


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG without metadata and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or Path
    dpi : int, optional
        Resolution in dots per inch (default 100).

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


_STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7,
          "xtick.labelsize": 8, "ytick.labelsize": 8}


def _style() -> Any:
    """A context manager applying the report's matplotlib style locally."""
    return _pyplot().rc_context(_STYLE)


def _figure(nrows: int, ncols: int, *, width: float, height: float) -> tuple[Any, np.ndarray]:
    """A grid of axes with fixed margins in inches (cheaper than constrained layout)."""
    fig, axes = _pyplot().subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.6 / width, right=1.0 - 0.15 / width, bottom=0.5 / height, top=1.0 - 0.3 / height,
        wspace=0.75 * ncols / width if ncols > 1 else 0.2,
        hspace=0.8 * nrows / height if nrows > 1 else 0.2,
    )
    return fig, axes


# --------------------------------------------------------------------------- stretches


def rgb_band_choice(bands: Sequence[str]) -> tuple[int, int, int] | None:
    """Indices of the bands shown as red, green and blue in colour composites.

    ``(i, r, g)`` when the set has those three bands; otherwise the first three bands
    in the order stored, reddest last, i.e. ``(bands[2], bands[1], bands[0])``.

    Parameters
    ----------
    bands : sequence of str
        Band names in storage order (blue to red).

    Returns
    -------
    tuple of int or None
        ``(red, green, blue)`` indices, or None for fewer than three bands (grey).
    """
    names = [b.lower() for b in bands]
    if all(b in names for b in ("i", "r", "g")):
        return names.index("i"), names.index("r"), names.index("g")
    if len(bands) >= 3:
        return 2, 1, 0
    return None


def asinh_scale(reference: np.ndarray, *, q: float = LUPTON_Q, percentile: float = 99.5) -> float:
    """The stretch ``s`` that maps the ``percentile`` of ``reference`` to 1.

    Solves ``asinh(Q p / s) / Q = 1`` for ``s``, i.e. ``s = Q p / sinh(Q)``.

    Parameters
    ----------
    reference : ndarray
        Intensities (flux units) the stretch is calibrated on; non-finite values ignored.
    q : float, optional
        Asinh softening ``Q`` (default :data:`LUPTON_Q`).
    percentile : float, optional
        Percentile of ``reference`` that maps to full brightness (default 99.5).

    Returns
    -------
    float
        ``s`` in flux units (1.0 when ``reference`` has no positive finite value).
    """
    vals = np.asarray(reference, float)
    vals = vals[np.isfinite(vals)]
    p = float(np.percentile(vals, percentile)) if vals.size else 0.0
    if not p > 0:
        return 1.0
    return q * p / float(np.sinh(q))


def asinh_calibration(
    intensity: np.ndarray, *, noise_brightness: float = 0.08, percentile: float = 99.9,
    border: int = 2,
) -> tuple[float, float]:
    """``(Q, s)`` of the asinh stretch from two anchors on a set of stamps.

    The sky noise (1 sigma, from the median absolute deviation of the pixels within
    ``border`` pixels of the stamp edges) is shown at ``noise_brightness`` of full
    scale, and the ``percentile`` of all pixels at full scale:
    ``asinh(Q sigma / s) / Q = noise_brightness`` and ``asinh(Q p / s) / Q = 1``.
    When the stamps are too faint for both (``p <= sigma / noise_brightness``) the
    stretch is linear (``Q -> 0``) with ``p`` at full scale.

    Parameters
    ----------
    intensity : ndarray, shape (N, H, W)
        Intensity stamps in flux units (e.g. the mean of the three composite bands).
    noise_brightness : float, optional
        Brightness of a 1-sigma sky pixel, fraction of full scale (default 0.08).
    percentile : float, optional
        Percentile of the pixel values shown at full scale (default 99.9).
    border : int, optional
        Width of the edge region used to measure the sky noise, pixels (default 2).

    Returns
    -------
    Q : float
        Asinh softening (dimensionless).
    s : float
        Linear scale, flux units.
    """
    stamps = np.asarray(intensity, float)
    if stamps.ndim == 2:
        stamps = stamps[None]
    finite = stamps[np.isfinite(stamps)]
    if finite.size == 0:
        return LUPTON_Q, 1.0
    p = float(np.percentile(finite, percentile))
    edge = np.concatenate([stamps[:, :border].ravel(), stamps[:, -border:].ravel(),
                           stamps[:, :, :border].ravel(), stamps[:, :, -border:].ravel()])
    edge = edge[np.isfinite(edge)]
    sigma = 1.4826 * float(np.median(np.abs(edge - np.median(edge)))) if edge.size else 0.0
    if not p > 0:
        return LUPTON_Q, 1.0
    if not sigma > 0 or p <= sigma / noise_brightness * 1.01:
        return 1e-3, p
    # solve asinh(u sigma) = a asinh(u p) for u = Q / s by bisection in log u
    lo, hi = np.log(1e-6 / p), np.log(1e6 / sigma)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        u = np.exp(mid)
        if np.arcsinh(u * sigma) - noise_brightness * np.arcsinh(u * p) < 0:
            lo = mid
        else:
            hi = mid
    u = float(np.exp(0.5 * (lo + hi)))
    q = float(np.arcsinh(u * p))
    return q, q / u


def _asinh_factor(intensity: np.ndarray, *, stretch: float, q: float) -> np.ndarray:
    x = np.clip(intensity, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.arcsinh(q * x / stretch) / q
        factor = np.where(x > 0, f / x, 0.0)
    return factor


def lupton_rgb(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, *, stretch: float, q: float = LUPTON_Q,
) -> np.ndarray:
    """Lupton et al. (2004) asinh colour composite.

    Parameters
    ----------
    red, green, blue : ndarray, shape (H, W)
        Images in flux units (sky-subtracted); negative values show as black.
    stretch : float
        Linear scale ``s`` of the asinh stretch, flux units (see :func:`asinh_scale`).
    q : float, optional
        Softening ``Q`` (default :data:`LUPTON_Q`).

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    rgb = np.stack([np.asarray(c, float) for c in (red, green, blue)], axis=-1)
    rgb = np.where(np.isfinite(rgb), rgb, 0.0)
    rgb = np.clip(rgb, 0.0, None)
    intensity = rgb.mean(axis=-1)
    out = rgb * _asinh_factor(intensity, stretch=stretch, q=q)[..., None]
    peak = out.max(axis=-1, keepdims=True)
    out = np.where(peak > 1.0, out / np.where(peak > 0, peak, 1.0), out)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def asinh_grey(image: np.ndarray, *, stretch: float, q: float = LUPTON_Q) -> np.ndarray:
    """One band shown with the same asinh stretch as the composites.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Flux units.
    stretch : float
        Linear scale ``s`` (flux units).
    q : float, optional
        Softening ``Q``.

    Returns
    -------
    ndarray of uint8, shape (H, W)
    """
    x = np.asarray(image, float)
    x = np.where(np.isfinite(x), x, 0.0)
    f = np.arcsinh(q * np.clip(x, 0.0, None) / stretch) / q
    return np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)


def diverging_rgb(values: np.ndarray, *, limit: float | None = None) -> np.ndarray:
    """Map a signed map to RGB with matplotlib's ``RdBu_r`` (red positive, blue negative).

    Parameters
    ----------
    values : ndarray, shape (H, W)
    limit : float, optional
        Symmetric colour limit; default the maximum of ``|values|``.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    from matplotlib import colormaps

    v = np.asarray(values, float)
    v = np.where(np.isfinite(v), v, 0.0)
    lim = float(np.max(np.abs(v))) if limit is None else float(limit)
    if not lim > 0:
        lim = 1.0
    rgba = colormaps["RdBu_r"](np.clip(0.5 + 0.5 * v / lim, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- plots


def histogram_panels(
    panels: Sequence[Mapping[str, Any]], *, path: str | Path, ncols: int = 2,
    sim_label: str = "simulated", ref_label: str = "observed (held out)",
) -> Path:
    """Overlaid normalised histograms of simulated and observed values, one panel each.

    Parameters
    ----------
    panels : sequence of mapping
        Each with ``title`` (str, may be empty), ``xlabel`` (str), ``sim`` and ``ref``
        (1-D arrays; ``ref`` may be None). Non-finite values are dropped; the range is
        the 2nd-98th percentile of both samples, values beyond it are counted in the edge
        bins. The legend
        (with sample sizes) is drawn in the first panel and in panels with ``legend``.
    path : str or Path
        Output PNG.
    ncols : int, optional
        Panels per row (default 2).
    sim_label, ref_label : str, optional
        Legend labels.

    Returns
    -------
    Path
    """
    with _style():
        return _histogram_panels(panels, path=path, ncols=ncols, sim_label=sim_label,
                                 ref_label=ref_label)


def _histogram_panels(
    panels: Sequence[Mapping[str, Any]], *, path: str | Path, ncols: int, sim_label: str,
    ref_label: str,
) -> Path:
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    titled = any(p.get("title") for p in panels)
    fig, axes = _figure(nrows, ncols, width=3.2 * ncols, height=(2.6 if titled else 2.4) * nrows)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for k, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
        sim = _finite(panel["sim"])
        ref = None if panel.get("ref") is None else _finite(panel["ref"])
        both = sim if ref is None else np.concatenate([sim, ref])
        if both.size == 0:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            lo, hi = np.percentile(both, [2.0, 98.0])  # outliers go into the edge bins
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            # Rice rule on the larger sample, between 8 and 40 bins
            n_bins = int(np.clip(2.0 * max(sim.size, 0 if ref is None else ref.size) ** (1 / 3), 8, 40))
            bins = np.linspace(lo, hi, n_bins + 1)
            if sim.size:
                ax.hist(np.clip(sim, lo, hi), bins=bins, density=True, histtype="stepfilled",
                        alpha=0.35, color=_SIM_COLOUR, label=f"{sim_label} (N={sim.size})")
            if ref is not None and ref.size:
                ax.hist(np.clip(ref, lo, hi), bins=bins, density=True, histtype="step",
                        linewidth=1.6, color=_OBS_COLOUR, label=f"{ref_label} (N={ref.size})")
            if k == 0 or panel.get("legend", False):
                ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(0.0, 1.0))
            ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        if panel.get("title"):
            ax.set_title(panel["title"])
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel("density")
    return save_figure(fig, path)


def trend_panels(panels: Sequence[Mapping[str, Any]], *, path: str | Path) -> Path:
    """Binned medians with confidence intervals of the score against galaxy properties.

    Parameters
    ----------
    panels : sequence of mapping
        Each with ``xlabel``, ``ylabel`` and ``series``: a list of mappings with
        ``label``, ``kind`` ("sim" or "ref") and the output of :func:`simcompare.stats.metrics.binned_medians`
        under ``bins``, plus the raw ``x`` and ``y`` (drawn as faint points).
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
    """
    with _style():
        return _trend_panels(panels, path=path)


def _trend_panels(panels: Sequence[Mapping[str, Any]], *, path: str | Path) -> Path:
    n = len(panels)
    fig, axes = _figure(1, n, width=3.4 * n, height=2.8)
    for ax, panel in zip(axes.flat, panels, strict=True):
        for k, series in enumerate(panel["series"]):
            colour = _SIM_COLOUR if series["kind"] == "sim" else _OBS_COLOUR
            ax.scatter(series["x"], series["y"], s=3, alpha=0.15, color=colour, linewidths=0)
            b = series["bins"]
            good = np.isfinite(b["median"])
            offset = (k - 0.5) * 0.02 * (np.nanmax(b["centre"]) - np.nanmin(b["centre"]) + 1e-12)
            ax.errorbar(
                b["centre"][good] + offset, b["median"][good],
                yerr=np.vstack([b["median"][good] - b["lo"][good],
                                b["hi"][good] - b["median"][good]]),
                fmt="o-" if series["kind"] == "sim" else "s--", color=colour, markersize=4,
                capsize=2, linewidth=1.2, label=series["label"],
            )
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.legend(fontsize=7, frameon=False)
    return save_figure(fig, path)


def training_curves(curves: Sequence[Mapping[str, Any]], *, path: str | Path) -> Path:
    """Training and validation bits/dim per epoch, one line pair per trained model.

    Parameters
    ----------
    curves : sequence of mapping
        Each with ``label`` and arrays ``epoch``, ``train`` and ``val`` (bits/dim).
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
    """
    with _style():
        plt = _pyplot()
        fig, axes = _figure(1, 1, width=6.0, height=3.0)
        ax = axes[0, 0]
        colours = plt.get_cmap("tab10")
        for k, c in enumerate(curves):
            colour = colours(k % 10)
            ax.plot(c["epoch"], c["train"], "-", color=colour, linewidth=1.2,
                    label=f"{c['label']}: training")
            ax.plot(c["epoch"], c["val"], "o--", color=colour, markersize=3, linewidth=1.2,
                    label=f"{c['label']}: validation (held out)")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("bits per dimension")
        ax.legend(frameon=False, fontsize=7)
        return save_figure(fig, path)


def floor_curve(curve: Sequence[Mapping[str, Any]], *, path: str | Path,
                marks: Mapping[str, Any] | None = None) -> Path:
    """The pipeline floor of both axes against the particle count per galaxy.

    Parameters
    ----------
    curve : sequence of mapping
        Each with ``particles`` and, per axis (``fine_structure``, ``global_structure``),
        ``{"value", "ci"}``.
    path : str or Path
        Output PNG.
    marks : mapping of label to particle count, optional
        Vertical lines (e.g. the simulation's own count).
    """
    pts = sorted((p for p in curve if "particles" in p), key=lambda p: float(p["particles"]))
    with _style():
        _pyplot()
        fig, axes = _figure(1, 1, width=6.0, height=3.0)
        ax = axes[0, 0]
        for k, (key, label) in enumerate((("fine_structure", "fine structure (ratio AUROC)"),
                                          ("global_structure", "global structure (classifier)"))):
            xs, ys, lo, hi = [], [], [], []
            for p in pts:
                e = p.get(key) or {}
                if e.get("value") is None or e.get("ci") is None:
                    continue
                xs.append(float(p["particles"]))
                ys.append(float(e["value"]))
                lo.append(float(e["value"]) - float(e["ci"][0]))
                hi.append(float(e["ci"][1]) - float(e["value"]))
            if xs:
                shift = 1.0 + 0.04 * (k - 0.5)  # side by side in log x
                ax.errorbar(np.asarray(xs) * shift, ys, yerr=[lo, hi], fmt="o-", capsize=3,
                            linewidth=1.2, markersize=4, label=label)
        ax.axhline(0.5, color="0.4", linewidth=0.8, linestyle=":")
        for text, value in (marks or {}).items():
            if value:
                ax.axvline(float(value), color="0.6", linewidth=0.8, linestyle="--")
                ax.annotate(text, (float(value), 0.02), xycoords=("data", "axes fraction"),
                            fontsize=7, color="0.4", rotation=90, ha="right", va="bottom")
        ax.set_xscale("log")
        ax.set_xlabel("star particles per self-simulated galaxy")
        ax.set_ylabel("AUROC: self-simulation vs analytic")
        ax.legend(frameon=False, fontsize=7)
        return save_figure(fig, path)


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, float).ravel()
    return arr[np.isfinite(arr)]


# --------------------------------------------------------------------------- attribution


def embedding_map(sim_xy: np.ndarray, obs_xy: np.ndarray,
                  stamps: Sequence[tuple[float, float, np.ndarray, str]], *, cell: np.ndarray,
                  path: str | Path) -> Path:
    """Scatter of simulated and observed galaxies in a 2-D map, stamps at grid points.

    Parameters
    ----------
    sim_xy, obs_xy : ndarray (N, 2)
        Map coordinates.
    stamps : sequence of (x, y, rgb, kind)
        A stamp image (H, W, 3 uint8) drawn centred on (x, y); ``kind`` "sim" or "obs"
        sets the frame colour.
    cell : ndarray (2,)
        Grid spacing in map units (a stamp covers 0.9 of a cell).
    path : str or Path
        Output PNG.
    """
    with _style():
        fig, axes = _figure(1, 2, width=10.0, height=4.8)
        ax0, ax1 = axes[0]
        for ax in (ax0, ax1):
            ax.scatter(obs_xy[:, 0], obs_xy[:, 1], s=3, c="#1f77b4", alpha=0.35, label="observed")
            ax.scatter(sim_xy[:, 0], sim_xy[:, 1], s=3, c="#d62728", alpha=0.5, label="simulated")
            ax.set_xlabel("component 1")
            ax.set_ylabel("component 2")
        ax0.legend(loc="best", markerscale=3)
        ax0.set_title("galaxies")
        ax1.set_title("stamps at grid points (red frame: simulated, blue: observed)")
        hw = 0.45 * np.asarray(cell, float)
        for x, y, rgb, kind in stamps:
            ax1.imshow(rgb, extent=(x - hw[0], x + hw[0], y - hw[1], y + hw[1]), origin="lower",
                       zorder=3, interpolation="nearest")
            ax1.add_patch(_pyplot().Rectangle((x - hw[0], y - hw[1]), 2 * hw[0], 2 * hw[1],
                                              fill=False, lw=1.2, zorder=4,
                                              ec="#d62728" if kind == "sim" else "#1f77b4"))
        if stamps:
            xs = [s[0] for s in stamps]
            ys = [s[1] for s in stamps]
            ax1.set_xlim(min(xs) - 1.2 * hw[0], max(xs) + 1.2 * hw[0])
            ax1.set_ylim(min(ys) - 1.2 * hw[1], max(ys) + 1.2 * hw[1])
        ax1.set_aspect("auto")
        return save_figure(fig, path)
