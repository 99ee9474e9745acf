"""Observed cutouts on disk: the HSC cutout layout, the manifest layout, and ingestion.

HSC cutout layout (one folder per object)::

    <cutout_dir>/<object_id>/<band>.fits      primary HDU empty; IMAGE (float32),
                                              MASK (int32, MP_<PLANE> bit keywords),
                                              VARIANCE (float32) extensions
    <cutout_dir>/<object_id>/psf_<band>.fits  PSF in the primary (or first image) HDU

as the HSC-SSP cutout service and PSF picker write them, plus a catalogue (CSV or
Parquet) with an ``object_id`` column and any catalogue columns (``ra``, ``dec``,
``redshift``, ``stellar_mass_msun``, ``half_light_radius_arcsec``, ...).

Manifest layout: a CSV or Parquet with one row per object and band (see
:func:`read_manifest`).

:func:`ingest` reads either layout, applies :func:`simcompare.preprocess.preprocess_stamp`
(the same preprocessing as the mocks) and writes an "observed" ImageSet. Per-object
problems (missing or unreadable file, missing extension, band mismatch, all-masked
stamp, ...) exclude the object and are counted by reason in the provenance
(``exclusions`` and ``excluded_ids``); with ``strict=True`` they raise instead. Problems
with the sample as a whole (no catalogue, no ``object_id`` column, unknown band) always
raise a typed error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import progress as _progress
from .._version import __version__
from ..cluster import Cluster, as_cluster
from ..config import SurveyDescriptor
from ..errors import ConfigError, DataFormatError, DataNotFoundError, SimcompareError
from ..imageset import part_provenance
from ..preprocess import HSC_BAD_PLANES, HSC_MASK_PLANES, NeighbourConfig, prepare_psf, preprocess_stamp
from ._fits import Truncated, Unsupported, read_simple, write_simple

__all__ = [
    "Cutout",
    "ExcludedObject",
    "apply_cuts",
    "ingest",
    "iter_hsc_cutouts",
    "iter_manifest_cutouts",
    "read_catalog_table",
    "read_hsc_band",
    "read_manifest",
    "read_psf",
    "write_hsc_band",
    "write_psf",
]

log = logging.getLogger(__name__)

_MANIFEST_RESERVED = {
    "object_id", "band", "image", "image_hdu", "variance", "variance_hdu", "sigma", "sigma_hdu",
    "mask", "mask_hdu", "psf", "psf_hdu", "psf_pixel_scale_arcsec", "plane",
}


class ExcludedObject(Exception):
    """Internal: one object cannot be used; ``reason`` is the ledger key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _excluded(message: str, reason: str) -> ExcludedObject:
    return ExcludedObject(reason, message)


@dataclass
class Cutout:
    """One object's raw multi-band cutout as read from disk (before preprocessing).

    Attributes
    ----------
    object_id : int
    image, variance : ndarray, float64, (B, H, W)
    mask : ndarray, int64, (B, H, W) or None
    mask_planes : dict or None
        Bit planes of ``mask`` (None: non-zero = bad).
    psf : list of ndarray or None
        One PSF image per band (None where absent).
    center : (x, y) or None
        Target position in pixels (from the WCS and the catalogue ra/dec), or None for
        the array centre.
    row : dict
        Catalogue columns.
    files : tuple of str
        The image file of each band (for messages).
    psf_missing : tuple of str
        PSF files that were looked for and not found (the survey's PSF model stands in).
    """

    object_id: int
    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray | None
    mask_planes: dict[str, int] | None
    psf: list[np.ndarray | None]
    center: tuple[float, float] | None
    row: dict[str, Any] = field(default_factory=dict)
    psf_pixel_scale_arcsec: float | None = None
    files: tuple[str, ...] = ()
    psf_missing: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Writing the HSC layout (demo samples and tests)
# ---------------------------------------------------------------------------
def _wcs_cards(ra: float, dec: float, size_xy: tuple[int, int], pixel_scale_arcsec: float) -> dict:
    w, h = size_xy
    s = pixel_scale_arcsec / 3600.0
    return {
        "WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": (w + 1) / 2.0, "CRPIX2": (h + 1) / 2.0, "CRVAL1": float(ra), "CRVAL2": float(dec),
        "CD1_1": -s, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": s, "RADESYS": "ICRS",
    }


def write_hsc_band(
    path: str | os.PathLike, *, image: np.ndarray, variance: np.ndarray, mask: np.ndarray,
    band: str, mask_planes: Mapping[str, int] = HSC_MASK_PLANES, ra: float | None = None,
    dec: float | None = None, pixel_scale_arcsec: float = 0.168, zero_point: float = 27.0,
    filter_name: str | None = None,
) -> Path:
    """Write one band of one object in the HSC cutout format.

    Parameters
    ----------
    path : path
        Output ``<cutout_dir>/<object_id>/<band>.fits``.
    image, variance : ndarray, shape (H, W)
        Flux (counts) and variance (counts^2) per pixel.
    mask : ndarray of int, shape (H, W)
        HSC bit mask.
    band : str
        Band name; written as ``FILTER`` = ``HSC-<BAND>`` unless ``filter_name`` is given.
    mask_planes : mapping
        Bit planes, written as ``MP_<NAME>`` keywords of the MASK header.
    ra, dec : float, optional
        Sky position [deg] of the cutout centre; when given, a TAN WCS with
        ``pixel_scale_arcsec`` is written into every extension.
    pixel_scale_arcsec, zero_point : float
        Pixel scale and ``FLUXMAG0`` (= 10**(0.4 zero_point)).
    filter_name : str, optional

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wcs = [] if ra is None or dec is None else list(
        _wcs_cards(ra, dec, np.shape(image)[::-1], pixel_scale_arcsec).items())
    planes = [(f"MP_{plane}", int(bit)) for plane, bit in mask_planes.items()]
    hdus = [
        ([("FILTER", filter_name or f"HSC-{band.upper()}")], None),
        ([("EXTNAME", "IMAGE"), *wcs, ("FLUXMAG0", 10 ** (0.4 * zero_point)), ("BUNIT", "count")],
         np.asarray(image, np.float32)),
        ([("EXTNAME", "MASK"), *wcs, *planes], np.asarray(mask, np.int32)),
        ([("EXTNAME", "VARIANCE"), *wcs], np.asarray(variance, np.float32)),
    ]
    write_simple(path, hdus)
    return path


def write_psf(path: str | os.PathLike, psf: np.ndarray) -> Path:
    """Write a PSF image in the primary HDU, as HSC's PSF picker does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_simple(path, [([], np.asarray(psf, np.float32))])
    return path


# ---------------------------------------------------------------------------
# Catalogues
# ---------------------------------------------------------------------------
def read_catalog_table(path: str | os.PathLike):
    """Read a CSV or Parquet catalogue into a DataFrame; needs an integer ``object_id``.

    Raises
    ------
    DataNotFoundError, DataFormatError
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: catalogue not found; pass --catalog with an existing CSV or Parquet file"
        raise DataNotFoundError(msg)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except Exception as exc:
        msg = f"{path}: cannot read the catalogue ({type(exc).__name__}: {exc}); it must be CSV or Parquet"
        raise DataFormatError(msg) from None
    if "object_id" not in df.columns:
        msg = (f"{path}: catalogue has no 'object_id' column (columns: {list(df.columns)[:12]}); "
               "add one (or rename the id column to object_id)")
        raise DataFormatError(msg)
    try:
        ids = df["object_id"].to_numpy()
        if ids.dtype.kind == "f" and not np.all(np.isfinite(ids) & (ids == np.round(ids))):
            bad = "non-integer values"
            raise ValueError(bad)
        df["object_id"] = ids.astype(np.int64)
    except (ValueError, TypeError) as exc:
        msg = f"{path}: object_id must be integers ({exc})"
        raise DataFormatError(msg) from None
    dup = df["object_id"].duplicated()
    if dup.any():
        msg = f"{path}: duplicate object_id values, e.g. {df['object_id'][dup].iloc[0]}; make them unique"
        raise DataFormatError(msg)
    return df


def apply_cuts(df, cuts: Mapping[str, Sequence[float | None]] | None):
    """Select catalogue rows inside ``cuts`` = {column: (min, max)}; ``None`` = open end.

    Rows with NaN in a cut column fail the cut. Returns ``(selected, n_removed_by_column)``.
    """
    removed: dict[str, int] = {}
    if not cuts:
        return df, removed
    keep = np.ones(len(df), bool)
    for col, bounds in cuts.items():
        if col not in df.columns:
            msg = f"cut on {col!r}, but the catalogue has no such column (columns: {list(df.columns)[:12]})"
            raise ConfigError(msg)
        if len(bounds) != 2:
            msg = f"cut {col!r} must be [min, max] (use null/None for an open end), got {bounds!r}"
            raise ConfigError(msg)
        lo, hi = bounds
        vals = df[col].to_numpy(dtype=float)
        ok = np.isfinite(vals)
        if lo is not None:
            ok &= vals >= float(lo)
        if hi is not None:
            ok &= vals <= float(hi)
        removed[col] = int(np.count_nonzero(keep & ~ok))
        keep &= ok
    return df[keep].reset_index(drop=True), removed


# ---------------------------------------------------------------------------
# Reading FITS
# ---------------------------------------------------------------------------
@dataclass
class _HDU:
    name: str
    header: dict[str, Any]
    data: np.ndarray | None


def _load_hdus(path: Path) -> list[_HDU]:
    """All HDUs of a FITS file (fast path for simple files, astropy otherwise)."""
    if not path.is_file():
        msg = f"{path}: file not found"
        raise _excluded(msg, "missing_file")
    try:
        raw = read_simple(path)
    except Truncated:
        msg = f"{path}: truncated FITS file (ends before its data); download it again"
        raise _excluded(msg, "unreadable_file") from None
    except (Unsupported, UnicodeDecodeError, ValueError, KeyError):
        return _load_hdus_astropy(path)
    except OSError as exc:
        msg = f"{path}: cannot read ({exc})"
        raise _excluded(msg, "unreadable_file") from None
    return [_HDU(name=str(h.get("EXTNAME", "PRIMARY" if i == 0 else "")).strip().upper(), header=h, data=d)
            for i, (h, d) in enumerate(raw)]


def _load_hdus_astropy(path: Path) -> list[_HDU]:
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                out = []
                for h in hdul:
                    data = h.data
                    if data is not None and not isinstance(data, np.ndarray):
                        data = None  # tables are not images
                    out.append(_HDU(name=h.name.upper(), header=dict(h.header.items()),
                                    data=None if data is None else np.array(data)))
    except (OSError, ValueError, TypeError, IndexError) as exc:
        msg = f"{path}: not a readable FITS file ({exc}); download it again"
        raise _excluded(msg, "unreadable_file") from None
    if not out:
        msg = f"{path}: FITS file holds no HDU"
        raise _excluded(msg, "unreadable_file")
    return out


def _planes_from_header(header: Mapping[str, Any]) -> dict[str, int] | None:
    planes = {}
    for key in header:
        if key.startswith("MP_"):
            try:
                planes[key[3:]] = int(header[key])
            except (TypeError, ValueError):
                continue
    return planes or None


def read_hsc_band(path: str | os.PathLike, *, band: str | None = None) -> dict[str, Any]:
    """Read one HSC-layout band file.

    Returns
    -------
    dict
        ``image``, ``variance`` (float64), ``mask`` (int64), ``mask_planes``, ``header``
        (of IMAGE).

    Raises
    ------
    ExcludedObject
        With reason ``missing_file``, ``unreadable_file``, ``missing_extension``,
        ``band_mismatch`` or ``shape_mismatch``.
    """
    path = Path(path)
    hdus = _load_hdus(path)
    by_name = {h.name: h for h in hdus}
    missing = [n for n in ("IMAGE", "MASK", "VARIANCE") if n not in by_name or by_name[n].data is None]
    if missing:
        msg = f"{path}: no {'/'.join(missing)} extension (has {[h.name for h in hdus]})"
        raise _excluded(msg, "missing_extension")
    hdr = by_name["IMAGE"].header
    filt = hdus[0].header.get("FILTER", hdr.get("FILTER"))
    if band is not None and filt is not None and _band_of_filter(str(filt)) != band.lower():
        msg = (f"{path}: FILTER keyword is {filt!r} but the file is band {band!r}; file it under "
               "the right band or fix its FILTER keyword")
        raise _excluded(msg, "band_mismatch")
    image = np.asarray(by_name["IMAGE"].data, np.float64)
    mask = np.asarray(by_name["MASK"].data)
    variance = np.asarray(by_name["VARIANCE"].data, np.float64)
    planes = _planes_from_header(by_name["MASK"].header)
    header = hdr
    if image.ndim != 2 or mask.shape != image.shape or variance.shape != image.shape:
        msg = (f"{path}: IMAGE {image.shape}, MASK {mask.shape}, VARIANCE {variance.shape} "
               "must be equal 2-D arrays")
        raise _excluded(msg, "shape_mismatch")
    return {"image": image, "variance": variance, "mask": mask.astype(np.int64),
            "mask_planes": planes, "header": header}


def _band_of_filter(filt: str) -> str:
    f = filt.strip().lower()
    for prefix in ("hsc-", "hsc_"):
        if f.startswith(prefix):
            f = f[len(prefix):]
    # HSC narrow-band / renamed filters: "r2" -> "r", "i2" -> "i"
    return f[:-1] if len(f) == 2 and f[1] == "2" else f


def read_psf(
    path: str | os.PathLike, *, hdu: str | int | None = None, plane: int | None = None,
) -> np.ndarray:
    """Read a PSF image from the primary HDU or the first image HDU (or ``hdu``).

    ``plane`` selects one image of a 3-D cube (e.g. one band of a grizy PSF cube).

    Parameters
    ----------
    path : str or os.PathLike
        FITS file.
    hdu : str or int, optional
        HDU name or index (default the primary, else the first image HDU).
    plane : int, optional
        Index of the image in a 3-D cube.

    Returns
    -------
    ndarray, float64, shape (Q, Q)
        The PSF image as stored.
    """
    path = Path(path)
    data = _select_hdu(path, _load_hdus(path), hdu)
    arr = _plane(path, np.asarray(data, np.float64), plane)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        msg = f"{path}: PSF must be a 2-D image, got shape {arr.shape}"
        raise _excluded(msg, "bad_psf")
    return arr


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


def iter_hsc_cutouts(
    cutout_dir: Path, catalog, bands: Sequence[str],
) -> Iterator[Cutout | tuple[int, ExcludedObject]]:
    """Yield a :class:`Cutout` per catalogue row, or ``(object_id, ExcludedObject)``.

    Parameters
    ----------
    cutout_dir : Path
        Folder of ``<object_id>/<band>.fits`` cutouts.
    catalog : pandas.DataFrame
        Catalogue rows (after the cuts).
    bands : sequence of str
        Bands to read, in order.
    """
    for row in catalog.to_dict("records"):
        oid = int(row["object_id"])
        folder = cutout_dir / str(oid)
        try:
            if not folder.is_dir():
                msg = f"{folder}: no cutout folder for object {oid}"
                raise _excluded(msg, "missing_file")
            per = []
            for b in bands:
                path = folder / f"{b}.fits"
                if not path.is_file():
                    msg = (f"{path}: band {b!r} missing for object {oid}; add the file or leave "
                           "the band out with --bands")
                    raise _excluded(msg, "missing_band")
                per.append(read_hsc_band(path, band=b))
            shapes = {p["image"].shape for p in per}
            if len(shapes) != 1:
                msg = f"{folder}: bands have different shapes {sorted(shapes)}"
                raise _excluded(msg, "shape_mismatch")
            psfs, psf_missing = [], []
            for b in bands:
                p = folder / f"psf_{b}.fits"
                psfs.append(read_psf(p) if p.is_file() else None)
                if not p.is_file():
                    psf_missing.append(str(p))
            planes = per[0]["mask_planes"]
            yield Cutout(
                object_id=oid, image=np.stack([p["image"] for p in per]),
                variance=np.stack([p["variance"] for p in per]), mask=np.stack([p["mask"] for p in per]),
                mask_planes=planes if planes is not None else dict(HSC_MASK_PLANES), psf=psfs,
                center=_center_from_wcs(per[0]["header"], row), row=row,
                files=tuple(str(folder / f"{b}.fits") for b in bands), psf_missing=tuple(psf_missing),
            )
        except ExcludedObject as exc:
            yield oid, exc


# ---------------------------------------------------------------------------
# Manifest layout
# ---------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike):
    """Read a manifest (CSV or Parquet): one row per object and band.

    Columns: ``object_id``, ``band``, ``image`` (path relative to the manifest),
    optional ``image_hdu`` (name or index; default the first image HDU), ``variance`` /
    ``variance_hdu`` or ``sigma`` / ``sigma_hdu`` (1-sigma map), ``mask`` / ``mask_hdu``
    (non-zero = bad), ``psf`` / ``psf_hdu``, ``psf_pixel_scale_arcsec``, ``plane`` (index
    of the band's image when files hold a cube of all bands), and catalogue
    columns (``ra``, ``dec``, ``redshift``, ...), which must agree between the rows of
    one object.

    Returns
    -------
    (rows, catalog) : DataFrames
        The band rows and one catalogue row per object.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: manifest not found; pass --manifest with an existing CSV or Parquet file"
        raise DataNotFoundError(msg)
    try:
        df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:
        msg = f"{path}: cannot read the manifest ({type(exc).__name__}: {exc})"
        raise DataFormatError(msg) from None
    need = {"object_id", "band", "image"}
    if not need <= set(df.columns):
        msg = (f"{path}: manifest needs columns {sorted(need)}; it has {list(df.columns)}; add "
               f"column(s) {sorted(need - set(df.columns))}")
        raise DataFormatError(msg)
    df["object_id"] = df["object_id"].astype(np.int64)
    df["band"] = df["band"].astype(str)
    dup = df.duplicated(["object_id", "band"])
    if dup.any():
        r = df[dup].iloc[0]
        msg = (f"{path}: object {r['object_id']} has more than one row for band {r['band']!r}; "
               "remove the duplicate row")
        raise DataFormatError(msg)
    cat_cols = [c for c in df.columns if c not in _MANIFEST_RESERVED]
    cat = df.groupby("object_id", sort=False)[cat_cols].nunique(dropna=False) if cat_cols else None
    if cat is not None:
        bad = cat.columns[(cat > 1).any(axis=0)].tolist()
        if bad:
            oid = cat.index[(cat[bad] > 1).any(axis=1)][0]
            msg = f"{path}: catalogue column(s) {bad} differ between the band rows of object {oid}"
            raise DataFormatError(msg)
    catalog = df.drop_duplicates("object_id")[["object_id", *cat_cols]].reset_index(drop=True)
    return df, catalog


def _hdu_arg(value: Any) -> str | int | None:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, str):
        v = value.strip()
        if not v:
            return None
        return int(v) if v.lstrip("-").isdigit() else v
    return int(value)


def _select_hdu(path: Path, hdus: list[_HDU], hdu: str | int | None) -> np.ndarray:
    if hdu is None:
        h = next((h for h in hdus if h.data is not None and h.data.ndim >= 2), None)
        if h is None:
            msg = f"{path}: no image HDU"
            raise _excluded(msg, "missing_extension")
        return h.data
    if isinstance(hdu, int):
        if not -len(hdus) <= hdu < len(hdus):
            msg = f"{path}: no HDU {hdu} (the file has {len(hdus)})"
            raise _excluded(msg, "missing_extension")
        h = hdus[hdu]
    else:
        h = next((x for x in hdus if x.name == hdu.upper()), None)
        if h is None:
            msg = f"{path}: no HDU {hdu!r} (has {[x.name for x in hdus]})"
            raise _excluded(msg, "missing_extension")
    if h.data is None:
        msg = f"{path}: HDU {hdu!r} holds no image data"
        raise _excluded(msg, "missing_extension")
    return h.data


def _plane(path: Path, arr: np.ndarray, plane: int | None) -> np.ndarray:
    """Select ``plane`` of a 3-D cube; 2-D arrays pass through."""
    if arr.ndim == 3 and plane is not None:
        if not -arr.shape[0] <= plane < arr.shape[0]:
            msg = (f"{path}: plane {plane} out of range for a cube of {arr.shape[0]} images; "
                   "give one plane per band (fix the manifest's 'plane' column or the file)")
            raise _excluded(msg, "missing_extension")
        return arr[plane]
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    return arr


def _read_hdu(
    path: Path, hdu: str | int | None, plane: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    hdus = _load_hdus(path)
    data = _select_hdu(path, hdus, hdu)
    header = next((h.header for h in hdus if h.data is data), hdus[0].header)
    arr = _plane(path, np.asarray(data), plane)
    if arr.ndim != 2:
        msg = f"{path}: expected a 2-D image, got shape {arr.shape} (give a 'plane' column for cubes)"
        raise _excluded(msg, "shape_mismatch")
    return arr, header


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and not np.isfinite(v)) and str(v).strip() != ""


def iter_manifest_cutouts(
    manifest: Path, rows, catalog, bands: Sequence[str],
) -> Iterator[Cutout | tuple[int, ExcludedObject]]:
    """Yield a :class:`Cutout` per object of a manifest, or ``(object_id, ExcludedObject)``.

    Parameters
    ----------
    manifest : Path
        The manifest file (named in messages).
    rows : pandas.DataFrame
        Its rows: one per object and band, with the file columns.
    catalog : pandas.DataFrame
        One row per object (after the cuts).
    bands : sequence of str
        Bands to read, in order.
    """
    base = manifest.parent
    by_obj = {oid: g for oid, g in rows.groupby("object_id", sort=False)}
    for row in catalog.to_dict("records"):
        oid = int(row["object_id"])
        try:
            g = by_obj.get(oid)
            have = {} if g is None else {r["band"]: r for r in g.to_dict("records")}
            missing = [b for b in bands if b not in have]
            if missing:
                msg = f"{manifest}: object {oid} has no row for band(s) {missing}"
                raise _excluded(msg, "missing_band")
            imgs, vars_, masks, psfs, header, psf_scale = [], [], [], [], None, None
            files: list[str] = []
            for b in bands:
                r = have[b]
                plane = _hdu_arg(r.get("plane"))
                if isinstance(plane, str):
                    msg = f"{manifest}: object {oid} band {b!r}: plane must be an integer, got {plane!r}"
                    raise _excluded(msg, "bad_manifest_row")
                img, hdr = _read_hdu(base / str(r["image"]), _hdu_arg(r.get("image_hdu")), plane)
                files.append(str(base / str(r["image"])))
                header = header if header is not None else hdr
                if _present(r.get("variance")):
                    var, _ = _read_hdu(base / str(r["variance"]), _hdu_arg(r.get("variance_hdu")), plane)
                elif _present(r.get("sigma")):
                    sig, _ = _read_hdu(base / str(r["sigma"]), _hdu_arg(r.get("sigma_hdu")), plane)
                    var = np.asarray(sig, np.float64) ** 2
                else:
                    msg = f"{manifest}: object {oid} band {b!r} names no variance or sigma map"
                    raise _excluded(msg, "missing_variance")
                m = None
                if _present(r.get("mask")):
                    m, _ = _read_hdu(base / str(r["mask"]), _hdu_arg(r.get("mask_hdu")), plane)
                if np.shape(var) != np.shape(img) or (m is not None and np.shape(m) != np.shape(img)):
                    msg = (f"{manifest}: object {oid} band {b!r}: image {np.shape(img)}, "
                           f"variance {np.shape(var)}, mask {np.shape(m)}")
                    raise _excluded(msg, "shape_mismatch")
                imgs.append(np.asarray(img, np.float64))
                vars_.append(np.asarray(var, np.float64))
                masks.append(np.zeros(np.shape(img), np.int64) if m is None
                             else np.asarray(m).astype(np.int64))
                psfs.append(read_psf(base / str(r["psf"]), hdu=_hdu_arg(r.get("psf_hdu")), plane=plane)
                            if _present(r.get("psf")) else None)
                if _present(r.get("psf_pixel_scale_arcsec")):
                    psf_scale = float(r["psf_pixel_scale_arcsec"])
            if len({i.shape for i in imgs}) != 1:
                msg = f"{manifest}: object {oid}: bands have different shapes"
                raise _excluded(msg, "shape_mismatch")
            yield Cutout(object_id=oid, image=np.stack(imgs), variance=np.stack(vars_),
                         mask=np.stack(masks), mask_planes=None, psf=psfs,
                         center=_center_from_wcs(header, row), row=row, psf_pixel_scale_arcsec=psf_scale,
                         files=tuple(files))
        except ExcludedObject as exc:
            if exc.reason == "missing_file":
                exc = _excluded(f"{exc}, named in {manifest}; fix the path (relative to the "
                                "manifest's folder)", exc.reason)
            yield oid, exc


# ---------------------------------------------------------------------------
# Ingestion
# ---------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _survey(survey: SurveyDescriptor | str, workspace: str | Path) -> SurveyDescriptor:
    if isinstance(survey, SurveyDescriptor):
        return survey
    from ..registry import find_survey

    return find_survey(str(survey), workspace=workspace)


def _resolve(path: str | os.PathLike | None, base: Path | None) -> Path | None:
    if path is None or str(path) == "":
        return None
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute() and base is not None:
        p = base / p
    return p


def _catalog_column(values: list[Any]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr
    if arr.dtype == bool:
        return arr
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([str(v) for v in values])


def _descriptor_cuts(sv: SurveyDescriptor) -> dict[str, Sequence[float | None]]:
    raw = getattr(sv.sample, "cuts", None) or {}
    if not isinstance(raw, Mapping):
        msg = f"{sv.source or sv.name}: [sample] cuts must be a table such as {{redshift = [0.1, 0.5]}}"
        raise ConfigError(msg)
    return {str(k): v for k, v in raw.items()}


def ingest(
    survey: SurveyDescriptor | str, *, out: str | os.PathLike, cutouts: str | os.PathLike | None = None,
    catalog: str | os.PathLike | None = None, manifest: str | os.PathLike | None = None,
    workspace: str | os.PathLike = ".", stamp_size: int | None = None, bands: Sequence[str] = (),
    progress: bool = False, cuts: Mapping[str, Sequence[float | None]] | None = None,
    mask_neighbours: bool = True, seed: int = 0, psf_size: int | None = None,
    neighbours: NeighbourConfig | None = None, bad_planes: Sequence[str] = HSC_BAD_PLANES,
    max_masked_fraction: float = 0.5, strict: bool = False, workers: int = 1,
    scheduler: Any = None, cluster: Cluster | None = None,
) -> Path:
    """Read observed cutouts, preprocess them like the mocks and write an ImageSet.

    Parameters
    ----------
    survey : SurveyDescriptor or str
        The survey (bands, pixel scale, zero point, PSF size, default sample).
    out : path
        Output ImageSet (HDF5), written atomically.
    cutouts, catalog : path, optional
        HSC cutout folder and its catalogue (CSV or Parquet).
    manifest : path, optional
        Manifest layout instead of ``cutouts`` + ``catalog``. When none of the three is
        given, the survey's ``[sample]`` section is used (paths relative to the
        descriptor's folder).
    workspace : path
        Folder for descriptor look-up by name.
    stamp_size : int, optional
        Output stamp side (pixels); default the survey's ``stamp_size``.
    bands : sequence of str, optional
        Subset of the survey's bands (default all).
    progress : bool
        Show a progress bar.
    cuts : mapping of str to (min, max), optional
        Catalogue selection, e.g. ``{"redshift": [0.1, 0.5]}``; ``None`` is an open end.
        Added to the descriptor's ``[sample] cuts`` (these win for the same column).
    mask_neighbours : bool
        Replace other sources by noise (default True).
    seed : int
        Seed of the replacement noise (recorded in the provenance).
    psf_size : int, optional
        Odd PSF side (pixels); default the survey's ``psf.size``.
    neighbours : NeighbourConfig, optional
        Neighbour detection parameters.
    bad_planes : sequence of str
        HSC mask planes that make a pixel bad.
    max_masked_fraction : float
        Objects whose central region (the inner half of the stamp) has more than this
        fraction of bad or padded pixels in any band are excluded (``mostly_masked``);
        default 0.5. Objects with no valid pixel in a band are excluded as ``all_masked``.
    strict : bool
        Raise a :class:`~simcompare.errors.DataFormatError` naming the file for the first
        per-object problem instead of excluding the object.
    workers : int
        Worker processes (1 = in this process; more start a local dask cluster).
    scheduler : str, optional
        A running dask scheduler's address; overrides ``workers``.
    cluster : Cluster, optional
        The workers to ingest on (shared with the other stages of a run); overrides
        ``workers`` and ``scheduler``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError, DataNotFoundError, DataFormatError
    """
    from .._io import check_output_file

    workspace = Path(workspace)
    sv = _survey(survey, workspace)
    out = check_output_file(out)
    bands = tuple(bands) if bands else tuple(sv.bands)
    unknown = [b for b in bands if b not in sv.bands]
    if unknown:
        msg = f"band(s) {unknown} are not bands of survey {sv.name!r} ({list(sv.bands)})"
        raise ConfigError(msg)
    size = int(stamp_size or sv.stamp_size)
    psize = int(psf_size or sv.psf.size)
    if psize % 2 == 0:
        psize += 1
    desc_dir = Path(sv.source).parent if sv.source else workspace
    if cutouts is None and catalog is None and manifest is None:
        s = sv.sample
        cutouts, catalog, manifest = s.cutout_dir or None, s.catalog or None, s.manifest or None
        base = desc_dir
        if cutouts is None and manifest is None:
            msg = (f"survey {sv.name!r} names no observed sample; pass cutouts + catalog or a manifest, "
                   f"or set [sample] cutout_dir/catalog or manifest in {sv.source or 'its descriptor'}")
            raise ConfigError(msg)
    else:
        base = None
    cutouts, catalog, manifest = _resolve(cutouts, base), _resolve(catalog, base), _resolve(manifest, base)
    inputs: dict[str, Any] = {}
    if manifest is not None:
        if cutouts is not None:
            msg = "give either a manifest or cutouts + catalog, not both"
            raise ConfigError(msg)
        rows, cat = read_manifest(manifest)
        inputs = {"layout": "manifest", "manifest": str(manifest), "manifest_sha256": _sha256(manifest)}
    else:
        if cutouts is None or catalog is None:
            msg = "the HSC cutout layout needs both a cutout folder (--cutouts) and a catalogue (--catalog)"
            raise ConfigError(msg)
        if not cutouts.is_dir():
            msg = (f"{cutouts}: cutout folder not found; point --cutouts at a folder of "
                   "<object_id>/<band>.fits")
            raise DataNotFoundError(msg)
        cat = read_catalog_table(catalog)
        rows = None
        inputs = {"layout": "hsc", "cutout_dir": str(cutouts), "catalog": str(catalog),
                  "catalog_sha256": _sha256(catalog)}
    n_catalog = len(cat)
    cuts = {**_descriptor_cuts(sv), **dict(cuts or {})}  # explicit cuts win per column
    cat, removed_by_cut = apply_cuts(cat, cuts)
    spec = _IngestSpec(
        bands=bands, size=size, psize=psize, pixel_scale_arcsec=float(sv.pixel_scale_arcsec),
        mask_neighbours=bool(mask_neighbours), neighbours=neighbours, bad_planes=tuple(bad_planes),
        max_masked_fraction=float(max_masked_fraction), seed=int(seed),
        cutouts=cutouts if manifest is None else None, manifest=manifest)
    prov = {
        "simcompare": __version__, "kind": "observed", "survey": sv.name, "inputs": inputs,
        "seeds": {"replacement_noise": int(seed)}, "stamp_size": size, "psf_size": psize,
        "bands": list(bands), "cuts": {k: list(v) for k, v in (cuts or {}).items()},
        "n_catalog": n_catalog, "removed_by_cuts": removed_by_cut,
        "preprocess": {"function": "simcompare.preprocess.preprocess_stamp",
                       "mask_neighbours": bool(mask_neighbours),
                       "neighbours": (neighbours or NeighbourConfig()).__dict__,
                       "bad_planes": list(bad_planes), "max_masked_fraction": max_masked_fraction},
    }
    prov["config_hash"] = hashlib.sha256(json.dumps(
        {k: v for k, v in prov.items() if k != "simcompare"} | {"version": __version__,
                                                                "n_selected": len(cat)},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    cluster, own_cluster = as_cluster(cluster, workers=workers, scheduler=scheduler)
    try:
        n, exclusions, _ = _ingest_stream(
            sv, cat, rows, spec, out=Path(out), prov=prov, cluster=cluster, progress=progress,
            strict=strict, n_catalog=n_catalog, removed_by_cut=removed_by_cut)
    finally:
        if own_cluster:
            cluster.close()
    log.info("ingested %d of %d objects into %s (exclusions: %s)", n, n_catalog, out, exclusions)
    return Path(out)


@dataclass(frozen=True)
class _IngestSpec:
    """Everything a worker needs to read and preprocess one batch of objects."""

    bands: tuple[str, ...]
    size: int
    psize: int
    pixel_scale_arcsec: float
    mask_neighbours: bool
    neighbours: NeighbourConfig | None
    bad_planes: tuple[str, ...]
    max_masked_fraction: float
    seed: int
    cutouts: Path | None
    manifest: Path | None


@dataclass
class _Prepared:
    """One object ready to be written (or, with ``reason`` set, excluded)."""

    object_id: int
    reason: str | None = None
    message: str = ""
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    mask: np.ndarray | None = None
    psf: list[np.ndarray | None] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)
    psf_missing: tuple[str, ...] = ()


def _ingest_batch(task: tuple[Any, Any], spec: _IngestSpec) -> list[_Prepared]:
    """One task: read the batch's cutouts from disk and preprocess them (runs on a worker)."""
    cat, rows = task
    it = (iter_manifest_cutouts(spec.manifest, rows, cat, spec.bands) if spec.manifest is not None
          else iter_hsc_cutouts(spec.cutouts, cat, spec.bands))
    out = []
    for item in it:
        if isinstance(item, tuple):
            out.append(_Prepared(int(item[0]), reason=item[1].reason, message=str(item[1])))
        else:
            out.append(_prepare_cutout(item, spec))
    return out


def _prepare_cutout(c: Cutout, spec: _IngestSpec) -> _Prepared:
    """Check, preprocess and cut one object's stamp; the replacement noise is seeded per object."""
    bands, size = spec.bands, spec.size
    oid = int(c.object_id)
    where = c.files or (f"object {oid}",) * len(bands)
    blank = [b for b in range(len(bands)) if np.all(c.image[b] == 0)]
    if blank:
        return _Prepared(oid, "blank_image",
                         f"{where[blank[0]]}: band {bands[blank[0]]!r} of object {oid} is all zeros "
                         "(no data); download the cutout again or drop the object from the catalogue")
    h_in, w_in = c.image.shape[-2:]
    if h_in * w_in < 0.5 * size * size:
        return _Prepared(oid, "smaller_than_stamp",
                         f"{where[0]}: cutout {h_in}x{w_in} is much smaller than the {size}x{size} "
                         "stamp (more than half of it would be padding); use a smaller --stamp-size "
                         "or larger cutouts")
    rng = np.random.default_rng([spec.seed, oid])
    try:
        prep = preprocess_stamp(
            c.image, variance=c.variance, mask=c.mask, stamp_size=size, center=c.center, rng=rng,
            mask_neighbours=spec.mask_neighbours, mask_planes=c.mask_planes,
            bad_planes=spec.bad_planes, neighbours=spec.neighbours)
    except DataFormatError as exc:
        return _Prepared(oid, "bad_data", f"object {oid}: {exc}")
    if prep.info["all_bad_bands"]:
        bnames = [bands[b] for b in prep.info["all_bad_bands"]]
        return _Prepared(oid, "all_masked",
                         f"{where[prep.info['all_bad_bands'][0]]}: every pixel of band(s) {bnames} of "
                         f"object {oid} is masked or not finite (NaN/inf); download the cutout again "
                         "or drop the object from the catalogue")
    q0, q1 = size // 4, size - size // 4
    core = (prep.mask[:, q0:q1, q0:q1] & 3) != 0
    worst = float(core.mean(axis=(1, 2)).max())
    if worst > spec.max_masked_fraction:
        return _Prepared(oid, "mostly_masked",
                         f"{where[0]}: {worst:.0%} of the central pixels of object {oid} are bad or "
                         "outside the cutout; use a smaller --stamp-size or check the mask")
    try:
        psf = [None if p is None else prepare_psf(
            p, size=spec.psize, psf_pixel_scale_arcsec=c.psf_pixel_scale_arcsec,
            pixel_scale_arcsec=spec.pixel_scale_arcsec) for p in c.psf]
    except DataFormatError as exc:
        return _Prepared(oid, "bad_psf", f"object {oid}: {exc}")
    cx, cy = c.center if c.center is not None else ((w_in - 1) / 2, (h_in - 1) / 2)
    row = dict(c.row) | {
        "n_neighbour_pixels": prep.info["n_neighbour_pixels"],
        "masked_fraction": prep.info["masked_fraction"], "center_x_pix": cx, "center_y_pix": cy}
    for k in _EXTRA_COLUMNS:  # a catalogue column of the same name wins, as it always has
        if k in c.row:
            row[k] = c.row[k]
    return _Prepared(oid, image=prep.image, variance=prep.variance, mask=prep.mask, psf=psf,
                     row=row, psf_missing=tuple(c.psf_missing))


_EXTRA_COLUMNS = ("n_neighbour_pixels", "masked_fraction", "center_x_pix", "center_y_pix")

#: Objects per task: a few tenths of a second of reading and preprocessing.
_INGEST_BATCH = 16


class _Batches(Sequence):
    """The ingest tasks, ``(catalogue rows, manifest rows)`` per batch, cut when asked for.

    Nothing per batch is held beforehand, so the task list does not grow with the sample.
    """

    def __init__(self, cat: Any, rows: Any, size: int) -> None:
        self.cat, self.rows, self.size = cat, rows, int(size)

    def __len__(self) -> int:
        return -(-len(self.cat) // self.size)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        part_cat = self.cat.iloc[i * self.size:(i + 1) * self.size]
        part_rows = (None if self.rows is None
                     else self.rows[self.rows["object_id"].isin(part_cat["object_id"])])
        return part_cat, part_rows


def _ingest_stream(
    sv: SurveyDescriptor, cat: Any, rows: Any, spec: _IngestSpec, *, out: Path,
    prov: dict[str, Any], cluster: Cluster, progress: bool, strict: bool, n_catalog: int,
    removed_by_cut: Any,
) -> tuple[int, dict[str, int], dict[str, list[int]]]:
    """Run the batches on ``cluster`` and stream the objects, in catalogue order, into ``out``.

    Memory stays flat in the sample size: each batch is written as it arrives. A killed
    run leaves ``<out>.part``; the same call resumes it, skipping the objects already
    written or excluded.
    """
    from ..imageset import ImageSetWriter

    bands = spec.bands
    part = out.with_name(out.name + ".part")
    resume = False
    if part.exists():
        resume = part_provenance(part).get("config_hash") == prov["config_hash"]
        if not resume:
            log.warning("discarding %s: it was written with a different configuration", part)
            part.unlink()
    dtypes = _catalog_dtypes(cat)
    writer = ImageSetWriter(out, kind="observed", survey=sv.name, bands=bands,
                            pixel_scale_arcsec=sv.pixel_scale_arcsec, zero_point=sv.zero_point,
                            stamp_size=spec.size, flux_unit=sv.flux_unit, with_variance=True,
                            with_mask=True, provenance=prov, resume=resume)
    exclusions: dict[str, int] = {}
    excluded_ids: dict[str, list[int]] = {}
    first_problem: list[str] = []
    psf_missing: list[str] = []  # the first missing PSF file, for the warning
    n_psf_missing = 0  # a count, not a list: memory stays flat when a sample has no PSFs
    model_psf: np.ndarray | None = None
    try:
        done: set[int] = set()
        if resume:
            writer.truncate_to_catalog()
            done = {int(i) for i in writer.done_ids()}
            prior = part_provenance(part)
            excluded_ids = {k: list(v) for k, v in prior.get("excluded_ids", {}).items()}
            exclusions = {k: len(v) for k, v in excluded_ids.items()}
            done |= {int(i) for v in excluded_ids.values() for i in v}
            log.info("resuming %s: %d objects already done", part, len(done))
        if done:
            cat = cat[~cat["object_id"].astype(np.int64).isin(done)]
        tasks = _Batches(cat, rows, _INGEST_BATCH)
        for batch in _progress(cluster.map(_ingest_batch, tasks, spec, name="ingest"),
                               desc="ingest", total=len(tasks), enable=progress, unit="batch"):
            keep = []
            for obj in batch:
                if obj.reason is not None:
                    if strict:
                        raise DataFormatError(obj.message)
                    first_problem[:1] = first_problem[:1] or [obj.message]
                    log.warning("excluding object %d (%s): %s", obj.object_id, obj.reason,
                                obj.message)
                    exclusions[obj.reason] = exclusions.get(obj.reason, 0) + 1
                    excluded_ids.setdefault(obj.reason, []).append(obj.object_id)
                    continue
                n_psf_missing += len(obj.psf_missing)
                psf_missing[:1] = psf_missing[:1] or list(obj.psf_missing[:1])
                if any(p is None for p in obj.psf):
                    if model_psf is None:
                        from ..mock.observe import survey_psf_images

                        model_psf = survey_psf_images(sv, bands=bands, size=spec.psize)
                    obj.psf = [model_psf[b] if p is None else p for b, p in enumerate(obj.psf)]
                keep.append(obj)
            if keep:
                cols = {k: _column(dtypes.get(k), [o.row.get(k) for o in keep])
                        for k in _row_keys(keep, dtypes)}
                cols["object_id"] = np.asarray([o.object_id for o in keep], np.int64)
                writer.append(np.stack([o.image for o in keep]).astype(np.float32), catalog=cols,
                              variance=np.stack([o.variance for o in keep]).astype(np.float32),
                              mask=np.stack([o.mask for o in keep]),
                              psf=np.stack([np.stack(o.psf) for o in keep]).astype(np.float32))
            writer.set_provenance(prov | {"exclusions": exclusions, "excluded_ids": excluded_ids})
        n = len(writer)
        if n == 0:
            msg = (f"no usable object in the observed sample ({n_catalog} catalogue rows; "
                   f"exclusions: {exclusions or 'none'}; removed by cuts: {removed_by_cut or 'none'})"
                   + (f"; first: {first_problem[0]}" if first_problem else "; check the paths and cuts"))
            raise DataFormatError(msg)
        if n_psf_missing:
            log.warning("%d PSF file(s) not found (e.g. %s); the survey's PSF model stands in for "
                        "them", n_psf_missing, psf_missing[0])
        writer.set_provenance(prov | {"n_written": n, "exclusions": exclusions,
                                      "excluded_ids": excluded_ids})
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, SimcompareError):
            part.unlink(missing_ok=True)  # a bad input, not an interruption: nothing to resume
        raise
    writer.close()
    return n, exclusions, excluded_ids


def _catalog_dtypes(cat: Any) -> dict[str, np.dtype]:
    """One dtype per catalogue column, decided on the whole column (as a single write did)."""
    return {str(k): _catalog_column(cat[k].tolist()).dtype for k in cat.columns}


def _row_keys(objs: list[_Prepared], dtypes: Mapping[str, Any]) -> list[str]:
    keys = list(dtypes)
    for o in objs:
        keys.extend(k for k in o.row if k not in keys)
    return keys


def _column(dtype: Any, values: list[Any]) -> np.ndarray:
    if dtype is None:
        return _catalog_column(values)
    if dtype.kind in "US":
        return np.asarray([str(v) for v in values])
    return np.asarray(values, dtype=dtype)
