"""Particle renders vs published images of the same galaxies, band by band.

:func:`crosscheck` takes two mock ImageSets of one survey: one rendered from star
particles (``simcompare render --sim tng50``) and one from the simulation's published
images of the same subhalos (``simcompare render --sim <kind = "images" descriptor>``,
e.g. SKIRT cubes), matches them on ``subhalo_id`` (else ``object_id``) and, where both
carry it, ``view``, and writes one row per matched galaxy: per band the flux of each
(noise-free catalogue ``flux_<band>`` when present, else the stamp sum), their ratio,
the half-light radius of each stamp (curve of growth about the flux-weighted centre)
and its difference, and every adjacent colour and its difference. With ``figure`` it
also draws the two side by side per band (PNG).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataFormatError

__all__ = ["crosscheck", "half_light_radius_pix"]


def half_light_radius_pix(image: np.ndarray) -> float:
    """Radius [pixels] holding half the positive flux, about the flux-weighted centre."""
    img = np.clip(np.nan_to_num(np.asarray(image, np.float64)), 0.0, None)
    total = img.sum()
    if not total > 0:
        return float("nan")
    yy, xx = np.indices(img.shape)
    cy, cx = (img * yy).sum() / total, (img * xx).sum() / total
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    c = np.cumsum(img.ravel()[order])
    return float(r[order][np.searchsorted(c, 0.5 * c[-1])])


def _keys(cat: dict[str, np.ndarray]) -> list[tuple[int, str]]:
    ids = cat.get("subhalo_id", cat["object_id"])
    views = cat.get("view")
    return [(int(i), "" if views is None else str(v))
            for i, v in zip(ids, views if views is not None else [""] * len(ids), strict=True)]


def crosscheck(
    particles: str | os.PathLike, images: str | os.PathLike, *, out: str | os.PathLike,
    figure: str | os.PathLike | None = None, match_view: bool = True,
) -> Any:
    """Per-galaxy, per-band flux, size and colour differences of two mock ImageSets.

    Parameters
    ----------
    particles, images : path
        Mock ImageSets of the same survey and bands: particle renders and image renders.
    out : path
        Parquet table (one row per matched galaxy), written atomically.
    figure : path, optional
        PNG with the matched galaxies side by side per band (at most 6 rows).
    match_view : bool
        Also match on ``view`` when both catalogues have it (default True).

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    from . import imageset
    from ._io import write_parquet_atomic

    a, b = imageset.read(particles), imageset.read(images)
    if a.bands != b.bands or not math.isclose(a.pixel_scale_arcsec, b.pixel_scale_arcsec, rel_tol=1e-6):
        msg = (f"the two image sets differ in bands ({list(a.bands)} vs {list(b.bands)}) or pixel scale "
               f"({a.pixel_scale_arcsec} vs {b.pixel_scale_arcsec}); render both for the same survey "
               "and bands")
        raise ConfigError(msg)
    ka, kb = _keys(a.catalog), _keys(b.catalog)
    use_view = match_view and "view" in a.catalog and "view" in b.catalog
    index_b = {(k if use_view else (k[0], "")): j for j, k in enumerate(kb)}
    pairs = [(i, index_b[k if use_view else (k[0], "")]) for i, k in enumerate(ka)
             if (k if use_view else (k[0], "")) in index_b]
    if not pairs:
        msg = ("no galaxy appears in both image sets (matched on subhalo_id/object_id"
               + (" and view" if use_view else "") + "); render the same subhalos")
        raise DataFormatError(msg)
    scale = a.pixel_scale_arcsec
    rows = []
    for i, j in pairs:
        row: dict[str, Any] = {"subhalo_id": ka[i][0], "view": ka[i][1],
                               "object_id_particles": int(a.catalog["object_id"][i]),
                               "object_id_images": int(b.catalog["object_id"][j])}
        mags: dict[str, tuple[float, float]] = {}
        for k, band in enumerate(a.bands):
            fa = float(a.catalog.get(f"flux_{band}", a.images[:, k].sum(axis=(1, 2)))[i])
            fb = float(b.catalog.get(f"flux_{band}", b.images[:, k].sum(axis=(1, 2)))[j])
            ra = half_light_radius_pix(a.images[i, k]) * scale
            rb = half_light_radius_pix(b.images[j, k]) * scale
            row |= {f"flux_particles_{band}": fa, f"flux_images_{band}": fb,
                    f"flux_ratio_{band}": fa / fb if fb > 0 else float("nan"),
                    f"r_half_particles_arcsec_{band}": ra, f"r_half_images_arcsec_{band}": rb,
                    f"r_half_difference_arcsec_{band}": ra - rb}
            mags[band] = tuple(a.zero_point - 2.5 * math.log10(f) if f > 0 else float("nan")
                               for f in (fa, fb))
        for b1, b2 in zip(a.bands[:-1], a.bands[1:], strict=True):
            ca, cb = mags[b1][0] - mags[b2][0], mags[b1][1] - mags[b2][1]
            row |= {f"colour_particles_{b1}_{b2}": ca, f"colour_images_{b1}_{b2}": cb,
                    f"colour_difference_{b1}_{b2}": ca - cb}
        rows.append(row)
    df = pd.DataFrame(rows)
    write_parquet_atomic(df, Path(out))
    if figure is not None:
        _figure(a, b, pairs[:6], Path(figure))
    return df


def _figure(a: Any, b: Any, pairs: list[tuple[int, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = len(a.bands)
    fig, axes = plt.subplots(len(pairs), 2 * nb, figsize=(1.6 * 2 * nb, 1.7 * len(pairs)), squeeze=False)
    for r, (i, j) in enumerate(pairs):
        for k, band in enumerate(a.bands):
            hi = max(np.nanpercentile(a.images[i, k], 99.5), np.nanpercentile(b.images[j, k], 99.5), 1e-12)
            for c, (img, who) in enumerate(((a.images[i, k], "particles"), (b.images[j, k], "images"))):
                ax = axes[r, 2 * k + c]
                ax.imshow(np.arcsinh(img / (0.05 * hi)), origin="lower", cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{band} {who}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
