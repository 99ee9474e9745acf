"""Real blank-sky fields into which noise-free mock stamps are inserted.

A survey descriptor may name blank-sky cutouts in its ``[noise]`` table
(``blank_sky = "path"``, relative to the workspace or to the descriptor's folder). The
path is either

* a folder of fields in the HSC cutout layout, ``<path>/<field_id>/<band>.fits`` (each
  file with IMAGE, MASK and VARIANCE extensions, read by
  :func:`simcompare.observed.cutouts.read_hsc_band`); or
* one multi-extension FITS file (or a folder of them) with IMAGE, MASK and VARIANCE
  extensions that each hold a (B, H, W) cube, and a ``BANDS`` header keyword (primary or
  IMAGE) listing the band of each plane, e.g. ``BANDS = 'g,r,i,z,y'``; the field id is
  the file name without ``.fits``.

With ``render(..., noise="blank-sky")`` each galaxy's noise-free stamp (PSF-convolved,
plus the source's own Poisson noise from the gain) is added to a stamp-sized region of a
field drawn from the galaxy's own random stream: the field with probability proportional
to its number of possible placements, then the region's lower-left corner uniformly.
The variance is the field's VARIANCE plus the source's; the field's mask comes along.

Fields whose pixel scale (from the WCS ``CD``/``CDELT`` keywords or ``PIXSCALE``) differs
from the survey's by more than 1%, that lack one of the rendered bands, or that are
smaller than the stamp are errors naming the file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["BLANK_SKY_STREAM", "BlankSky", "header_pixel_scale_arcsec", "resolve_blank_sky_path"]

log = logging.getLogger(__name__)

#: Third seed word of the placement stream: ``default_rng([seed, object_id, BLANK_SKY_STREAM])``
#: (separate from the orientation/noise stream, so that the same galaxy keeps its
#: orientation and source noise whatever the noise mode).
BLANK_SKY_STREAM = 0xB1A4
_SCALE_RTOL = 0.01


def header_pixel_scale_arcsec(header: Mapping[str, Any]) -> float | None:
    """Pixel scale [arcsec] from a FITS header (CD matrix, CDELT or PIXSCALE), else None."""
    try:
        if "CD1_1" in header or "CD2_2" in header:
            cd = np.array([[float(header.get("CD1_1", 0.0)), float(header.get("CD1_2", 0.0))],
                           [float(header.get("CD2_1", 0.0)), float(header.get("CD2_2", 0.0))]])
            det = abs(float(np.linalg.det(cd)))
            return math.sqrt(det) * 3600.0 if det > 0 else None
        if "CDELT1" in header and "CDELT2" in header:
            return math.sqrt(abs(float(header["CDELT1"]) * float(header["CDELT2"]))) * 3600.0
        if "PIXSCALE" in header:
            return abs(float(header["PIXSCALE"]))
    except (TypeError, ValueError):
        return None
    return None


def resolve_blank_sky_path(
    value: str, *, workspace: str | os.PathLike = ".", descriptor_source: str = "",
) -> Path:
    """Where the descriptor's ``noise.blank_sky`` points (absolute, workspace, descriptor dir).

    Parameters
    ----------
    value : str
        The descriptor's ``noise.blank_sky`` (a file or folder, absolute or relative).
    workspace : str or os.PathLike, optional
        Workspace folder tried for a relative path (default ``"."``).
    descriptor_source : str, optional
        Path of the descriptor file, whose folder is tried last (default none).

    Returns
    -------
    Path
        The existing file or folder.

    Raises
    ------
    DataNotFoundError
        When no candidate exists.
    """
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [Path(workspace) / p]
    if not p.is_absolute() and descriptor_source:
        candidates.append(Path(descriptor_source).parent / p)
    for c in candidates:
        if c.exists():
            return c
    msg = (f"blank-sky fields {value!r} not found (looked at "
           f"{', '.join(str(c) for c in candidates)}); fix noise.blank_sky in the survey "
           "descriptor")
    raise DataNotFoundError(msg)


@dataclass(frozen=True, eq=False)
class BlankSky:
    """Blank-sky fields in the rendered bands.

    Attributes
    ----------
    field_ids : tuple of str
    images, variances : tuple of ndarray, float32, shape (B, H, W)
        Flux and variance per pixel [survey flux units, and squared].
    masks : tuple of ndarray, int32, shape (B, H, W)
        Bit masks as read.
    mask_planes : tuple of (dict or None)
        Bit planes of each field's mask (``MP_*`` keywords), None = any non-zero is bad.
    files : tuple of tuple of str
        Files each field was read from.
    source : str
        The folder or file given.
    """

    field_ids: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    variances: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    mask_planes: tuple[dict[str, int] | None, ...]
    files: tuple[tuple[str, ...], ...]
    source: str

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def for_survey(cls, survey: Any, *, bands: Sequence[str], stamp_size: int,
                   workspace: str | os.PathLike = ".") -> BlankSky:
        """The fields the survey descriptor's ``noise.blank_sky`` names (``--noise blank-sky``).

        Parameters
        ----------
        survey : SurveyDescriptor
            Names the fields (resolved by :func:`resolve_blank_sky_path`) and the pixel scale.
        bands : sequence of str
            Rendered bands, in order.
        stamp_size : int
            Stamp side [pixels].
        workspace : str or os.PathLike, optional
            Workspace folder for a relative path (default ``"."``).

        Returns
        -------
        BlankSky
            The loaded fields (:meth:`load`).

        Raises
        ------
        ConfigError
            The descriptor names no blank-sky fields.
        """
        if not survey.noise.blank_sky:
            msg = (f"noise='blank-sky' needs blank-sky fields: set [noise] blank_sky = "
                   f"\"<folder or FITS cube>\" in the survey descriptor {survey.name!r}")
            raise ConfigError(msg)
        return cls.load(resolve_blank_sky_path(survey.noise.blank_sky, workspace=workspace,
                                               descriptor_source=survey.source),
                        bands=bands, pixel_scale_arcsec=survey.pixel_scale_arcsec,
                        stamp_size=stamp_size)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, bands: Sequence[str], pixel_scale_arcsec: float,
        stamp_size: int,
    ) -> BlankSky:
        """Read the blank-sky fields at ``path`` for ``bands``.

        Parameters
        ----------
        path : path
            Folder of ``<field_id>/<band>.fits`` fields, a cube FITS file, or a folder of
            cube files.
        bands : sequence of str
            Rendered bands, in order.
        pixel_scale_arcsec : float
            The survey's pixel scale; fields must agree within 1%.
        stamp_size : int
            Stamp side P [pixels]; every field must be at least P x P.

        Raises
        ------
        DataNotFoundError
            No field at ``path``, or a band file missing.
        DataFormatError
            A file that cannot be read, lacks a band, has another pixel scale or is
            smaller than the stamp (the message names the file).
        """
        path = Path(path)
        bands = tuple(bands)
        fields: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict | None, tuple[str, ...]]] = []
        if path.is_file():
            fields.append(_read_cube(path, bands=bands, pixel_scale_arcsec=pixel_scale_arcsec))
        elif path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.is_dir() and any(entry.glob("*.fits")):
                    fields.append(_read_hsc_field(entry, bands=bands,
                                                  pixel_scale_arcsec=pixel_scale_arcsec))
                elif entry.is_file() and entry.suffix.lower() in (".fits", ".fit", ".fz"):
                    fields.append(_read_cube(entry, bands=bands,
                                             pixel_scale_arcsec=pixel_scale_arcsec))
        else:
            msg = f"blank-sky fields {path} not found; fix noise.blank_sky in the survey descriptor"
            raise DataNotFoundError(msg)
        if not fields:
            msg = (f"{path}: no blank-sky field found (expected <field_id>/<band>.fits folders "
                   "or FITS cubes with IMAGE/MASK/VARIANCE extensions)")
            raise DataNotFoundError(msg)
        for fid, img, _v, _m, _p, files in fields:
            h, w = img.shape[-2:]
            if h < stamp_size or w < stamp_size:
                msg = (f"{files[0]}: blank-sky field {fid!r} is {h}x{w} pixels, smaller than the "
                       f"{stamp_size}-pixel stamp; use larger fields or a smaller stamp_size")
                raise DataFormatError(msg)
        return cls(field_ids=tuple(f[0] for f in fields), images=tuple(f[1] for f in fields),
                   variances=tuple(f[2] for f in fields), masks=tuple(f[3] for f in fields),
                   mask_planes=tuple(f[4] for f in fields), files=tuple(f[5] for f in fields),
                   source=str(path))

    # -- placement ------------------------------------------------------------------------
    def place(self, rng: np.random.Generator, stamp_size: int) -> tuple[int, int, int]:
        """Draw a field index and the region's lower-left corner ``(k, x0, y0)`` [pixels].

        The field is chosen with probability proportional to its number of possible
        placements, so that every placement over all fields is equally likely.
        """
        counts = np.array([(im.shape[-1] - stamp_size + 1) * (im.shape[-2] - stamp_size + 1)
                           for im in self.images], np.float64)
        k = int(rng.choice(len(counts), p=counts / counts.sum())) if len(counts) > 1 else 0
        h, w = self.images[k].shape[-2:]
        x0 = int(rng.integers(0, w - stamp_size + 1))
        y0 = int(rng.integers(0, h - stamp_size + 1))
        return k, x0, y0

    def region(
        self, k: int, x0: int, y0: int, stamp_size: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, variance (float64) and mask (int32) of a (B, P, P) region of field ``k``.

        Parameters
        ----------
        k : int
            Field index.
        x0, y0 : int
            Lower-left corner of the region in the field [pixels].
        stamp_size : int
            Side P of the region [pixels].

        Returns
        -------
        (ndarray, ndarray, ndarray)
            Image, variance and mask, each of shape (B, P, P).
        """
        sl = (slice(None), slice(y0, y0 + stamp_size), slice(x0, x0 + stamp_size))
        return (self.images[k][sl].astype(np.float64), self.variances[k][sl].astype(np.float64),
                self.masks[k][sl].copy())

    @property
    def description(self) -> dict[str, Any]:
        """Provenance record: source, fields (id, shape, files) and the placement rule."""
        return {
            "source": self.source,
            "fields": [{"id": fid, "shape": list(im.shape), "files": list(files)}
                       for fid, im, files in zip(self.field_ids, self.images, self.files,
                                                 strict=True)],
            "placement": "field drawn with probability proportional to its number of "
                         "placements, lower-left corner (blank_sky_x, blank_sky_y) uniform; "
                         f"numpy default_rng([seed, object_id, {BLANK_SKY_STREAM}])",
            "image": "noise-free mock (PSF-convolved, + source Poisson noise) + field pixels",
            "variance": "field VARIANCE + model / gain",
        }


def _check_scale(path: Path, header: Mapping[str, Any], pixel_scale_arcsec: float) -> None:
    scale = header_pixel_scale_arcsec(header)
    if scale is None:
        log.info("%s: no pixel scale in the header; assuming the survey's %.4g arcsec",
                 path, pixel_scale_arcsec)
        return
    if abs(scale / pixel_scale_arcsec - 1.0) > _SCALE_RTOL:
        msg = (f"{path}: blank-sky pixel scale is {scale:.4g} arcsec but the survey's is "
               f"{pixel_scale_arcsec:.4g} arcsec; use fields at the survey's pixel scale")
        raise DataFormatError(msg)


def _read_hsc_field(
    folder: Path, *, bands: tuple[str, ...], pixel_scale_arcsec: float,
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, dict | None, tuple[str, ...]]:
    from ..observed.cutouts import ExcludedObject, read_hsc_band

    imgs, vars_, masks, files = [], [], [], []
    planes: dict | None = None
    for band in bands:
        f = folder / f"{band}.fits"
        if not f.is_file():
            have = sorted(p.stem for p in folder.glob("*.fits"))
            msg = (f"{f}: blank-sky field {folder.name!r} has no band {band!r} (has {have}); "
                   "every field needs one file per rendered band")
            raise DataNotFoundError(msg)
        try:
            d = read_hsc_band(f, band=band)
        except ExcludedObject as exc:
            msg = f"{f}: cannot use this blank-sky file ({exc})"
            raise DataFormatError(msg) from None
        _check_scale(f, d["header"], pixel_scale_arcsec)
        if imgs and d["image"].shape != imgs[0].shape:
            msg = (f"{f}: shape {d['image'].shape} differs from the field's other bands "
                   f"{imgs[0].shape}")
            raise DataFormatError(msg)
        imgs.append(d["image"])
        vars_.append(d["variance"])
        masks.append(d["mask"])
        planes = planes or d["mask_planes"]
        files.append(str(f))
    return (folder.name, np.stack(imgs).astype(np.float32), np.stack(vars_).astype(np.float32),
            np.stack(masks).astype(np.int32), planes, tuple(files))


def _read_cube(
    path: Path, *, bands: tuple[str, ...], pixel_scale_arcsec: float,
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, dict | None, tuple[str, ...]]:
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            by_name = {h.name: h for h in hdul}
            missing = [n for n in ("IMAGE", "MASK", "VARIANCE")
                       if n not in by_name or by_name[n].data is None]
            if missing:
                msg = (f"{path}: a blank-sky cube needs IMAGE, MASK and VARIANCE extensions; "
                       f"{'/'.join(missing)} missing (has {[h.name for h in hdul]})")
                raise DataFormatError(msg)
            hdr = by_name["IMAGE"].header
            raw = hdul[0].header.get("BANDS", hdr.get("BANDS"))
            image = np.asarray(by_name["IMAGE"].data, np.float32)
            variance = np.asarray(by_name["VARIANCE"].data, np.float32)
            mask = np.asarray(by_name["MASK"].data).astype(np.int32)
            mhdr = dict(by_name["MASK"].header)
            hdr = dict(hdr)
    except OSError as exc:
        msg = f"{path}: not a readable FITS file ({exc})"
        raise DataFormatError(msg) from None
    if raw is None:
        msg = f"{path}: no BANDS header keyword (e.g. BANDS = 'g,r,i,z,y') naming the cube planes"
        raise DataFormatError(msg)
    have = [b.strip() for b in str(raw).split(",") if b.strip()]
    if image.ndim != 3 or image.shape[0] != len(have):
        msg = f"{path}: IMAGE has shape {image.shape}, expected ({len(have)}, H, W) for BANDS {have}"
        raise DataFormatError(msg)
    if variance.shape != image.shape or mask.shape != image.shape:
        msg = f"{path}: IMAGE {image.shape}, MASK {mask.shape}, VARIANCE {variance.shape} must match"
        raise DataFormatError(msg)
    lacking = [b for b in bands if b not in have]
    if lacking:
        msg = f"{path}: blank-sky cube lacks band(s) {lacking} (BANDS = {have})"
        raise DataFormatError(msg)
    _check_scale(path, hdr, pixel_scale_arcsec)
    idx = [have.index(b) for b in bands]
    planes = {k[3:]: int(v) for k, v in mhdr.items() if str(k).startswith("MP_")} or None
    return (path.name.split(".")[0], image[idx], variance[idx], mask[idx], planes, (str(path),))

