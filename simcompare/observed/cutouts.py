"""Observed cutouts on disk: the HSC cutout layout and the manifest layout.

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

The iterators yield one :class:`Cutout` per object, or ``(object_id, ExcludedObject)``
for an object that cannot be used (missing or unreadable file, missing extension, band
mismatch, ...); :func:`simcompare.observed.ingestion.ingest` turns them into an "observed"
ImageSet. Problems with the sample as a whole (no catalogue, no ``object_id`` column,
unknown band) always raise a typed error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_csv_or_parquet
from ..errors import ConfigError, DataFormatError, DataNotFoundError
from ..stamps import HSC_MASK_PLANES
from ._fits import Truncated, Unsupported, read_simple, write_simple
from .wcs import _center_from_wcs

__all__ = [
    "Cutout",
    "ExcludedObject",
    "apply_cuts",
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
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: catalogue not found; pass --catalog with an existing CSV or Parquet file"
        raise DataNotFoundError(msg)
    df = read_csv_or_parquet(path, what="catalogue")
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
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: manifest not found; pass --manifest with an existing CSV or Parquet file"
        raise DataNotFoundError(msg)
    df = read_csv_or_parquet(path, what="manifest")
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
