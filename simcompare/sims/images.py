"""Simulated images people already have: FITS releases read per file, one galaxy and view each.

A simulation descriptor with ``kind = "images"`` names a folder (``path``) and a glob
(``pattern``) of FITS files. Two layouts are read:

*planes as HDUs named by filter*
    e.g. RealSim-HSC's ``SUBARU_HSC.G``, ``SUBARU_HSC.R``, ... (idealised images in AB
    mag/arcsec^2, ``CDELT1`` in kpc/pixel and a ``Redshift`` keyword; survey-realistic
    images in nanomaggies with ``SUBARU_HSC.G MASK``, ``... VARIANCE`` and ``... PSF``
    companions; ``_MASK``/``.MASK`` spellings are accepted too). An HDU whose
    ``EXTNAME`` is not a filter may carry the filter in ``FILTER``.
*a cube with per-plane filter keywords*
    e.g. a SKIRT instrument cube: ``EXT1 = 'F070W'``, ``EXT2 = ...`` (or ``FILTER1``...),
    ``BUNIT = 'MJy / sr'``, ``CDELT1/2`` in degrees, per-plane magnitudes ``MAG1``...

The descriptor's ``[bands]`` table maps each survey band to a plane by filter name
(case-insensitive). The unit comes from ``BUNIT`` (plane HDU, then primary) unless the
descriptor sets ``flux_unit``; the pixel scale from ``CDELT1`` (or ``CD1_1``) with
``CUNIT1`` (``deg``, ``arcsec`` or ``kpc``; without ``CUNIT1`` a comment naming kpc or
arcsec decides, else degrees, the FITS default) unless the descriptor sets
``pixel_scale_arcsec`` or ``kpc_per_pixel``. kpc become arcsec through the angular
diameter distance at the image's redshift in the descriptor's cosmology. Pixel values
become survey flux per pixel in :func:`simcompare.sims.image_units.to_survey_flux`, the
one conversion point.

The catalogue row of each file (``object_id``, ``view``, ``redshift``,
``stellar_mass_msun``, ...) comes from a table beside the images (descriptor
``catalog``: CSV or Parquet with a ``file`` column naming the file, or ``object_id`` and
optionally ``view``) and else from the headers (``SUBHALO``/``SUBHALOID``/``OBJID``,
``VIEW``/``CAMERA``, ``REDSHIFT``/``Z``, ``MSTAR``/``LOGMSTAR``) and the file name (the
first integer of the name is the object id, ``_v<k>`` the view). A file that cannot be
used raises :class:`ImageFileExcluded` with one of :data:`IMAGE_EXCLUSION_REASONS`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_csv_or_parquet
from ..config import Cosmology, SimDescriptor
from ..errors import ConfigError, DataFormatError, DataNotFoundError
from .image_units import flux_unit_name, to_survey_flux

__all__ = [
    "IMAGE_EXCLUSION_REASONS",
    "ImageFileExcluded",
    "SimImage",
    "catalog_columns",
    "image_catalog",
    "image_files",
    "image_fingerprint",
    "image_folder",
    "read_image_file",
]

#: Why a file can be left out (counted in the ImageSet's provenance).
IMAGE_EXCLUSION_REASONS = (
    "unreadable",          # not a FITS file, truncated or damaged
    "missing_band",        # no plane for one of the descriptor's bands
    "unknown_unit",        # BUNIT absent or not a known unit
    "no_pixel_scale",      # no CDELT/CD and none in the descriptor
    "no_redshift",         # a kpc pixel scale but no redshift to turn it into arcsec
    "no_object_id",        # neither catalogue, header nor file name gives an id
    "bad_data",            # planes of different shapes, non-linear unit with variance, ...
    "no_variance",         # a survey-realistic file without a VARIANCE plane
    "pixel_scale_mismatch",  # survey-realistic pixels differ from the survey's
    "larger_than_stamp",   # more than half of the light falls outside the stamp
)

_ID_KEYS = ("SUBHALO", "SUBHALOID", "SUBHALO_ID", "SUBFINDID", "SUBID", "OBJID", "OBJECT_ID")
_VIEW_KEYS = ("VIEW", "CAMERA", "CAMERAID", "CAMERA_ID", "PROJECT", "ORIENT")
_Z_KEYS = ("REDSHIFT", "Z", "Z_OBS", "ZOBS")
_COMPANIONS = ("MASK", "VARIANCE", "PSF")
_SEP = (" ", "_", ".", "-")


class ImageFileExcluded(Exception):
    """A file cannot be used; ``reason`` is one of :data:`IMAGE_EXCLUSION_REASONS`."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class SimImage:
    """One file's planes in survey flux per pixel, at the file's own pixel scale.

    Parameters
    ----------
    path : Path
    image : ndarray, float64, shape (B, H, W)
        Survey flux per pixel, bands in the order asked for.
    pixel_scale_arcsec : float
        Side of the file's pixels [arcsec].
    row : dict
        Catalogue row: ``subhalo_id``, ``view``, ``redshift``, ``file``, ``flux_unit_file``,
        ``file_flux_<band>`` (flux summed over the file's pixels, survey units),
        ``header_mag_<band>`` where the header gives one, ...
    variance, mask : ndarray, shape (B, H, W), optional
        Survey-realistic files: variance [survey flux^2] and the integer mask.
    mask_planes : dict, optional
        Bit planes of the mask from ``MP_*`` keywords (HSC convention).
    psf : list of ndarray or None
        Per band, the file's PSF image (None where the file has none).
    """

    path: Path
    image: np.ndarray
    pixel_scale_arcsec: float
    row: dict[str, Any] = field(default_factory=dict)
    variance: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_planes: dict[str, int] | None = None
    psf: list[np.ndarray | None] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Where the files are
# ---------------------------------------------------------------------------------------
def image_folder(sim: SimDescriptor, *, workspace: str | os.PathLike = ".") -> Path:
    """The descriptor's ``path``.

    The environment variable ``SIMCOMPARE_<NAME>_PATH`` when set, else ``path`` relative
    to the descriptor's folder when it exists there, else relative to the workspace.
    """
    from . import _env_name

    env = os.environ.get(_env_name(sim.name))
    if env:
        return Path(env).expanduser()
    p = Path(sim.path).expanduser()
    if p.is_absolute():
        return p
    if sim.source:
        beside = Path(sim.source).parent / p
        if beside.exists():
            return beside
    return Path(workspace) / p


def image_files(sim: SimDescriptor, *, workspace: str | os.PathLike = ".") -> list[Path]:
    """The descriptor's FITS files, sorted by name; a DataNotFoundError when there are none."""
    folder = image_folder(sim, workspace=workspace)
    if not folder.is_dir():
        msg = (f"simulation {sim.name!r}: image folder {folder} not found; fix path in "
               f"{sim.source or 'the descriptor'} or set {_env(sim)}")
        raise DataNotFoundError(msg)
    files = sorted(p for p in folder.glob(sim.pattern) if p.is_file())
    if not files:
        msg = (f"simulation {sim.name!r}: no file in {folder} matches pattern {sim.pattern!r}; "
               "fix pattern in the descriptor")
        raise DataNotFoundError(msg)
    return files


def image_fingerprint(sim: SimDescriptor, *, workspace: str | os.PathLike = ".") -> str:
    """A short hash of the image files' names, sizes and modification times (cache keys)."""
    import hashlib

    files = image_files(sim, workspace=workspace)
    if sim.catalog:
        cat = Path(sim.catalog)
        files.append(cat if cat.is_absolute() else image_folder(sim, workspace=workspace) / cat)
    h = hashlib.sha256()
    for p in files:
        st = p.stat() if p.exists() else None
        h.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()[:16]


def _env(sim: SimDescriptor) -> str:
    from . import _env_name

    return _env_name(sim.name)


def image_catalog(sim: SimDescriptor, *, workspace: str | os.PathLike = "."):
    """The table beside the images (descriptor ``catalog``) as a DataFrame, or None."""
    if not sim.catalog:
        return None

    p = Path(sim.catalog).expanduser()
    if not p.is_absolute():
        p = image_folder(sim, workspace=workspace) / p
        if not p.is_file() and sim.source:
            p = Path(sim.source).parent / sim.catalog
    if not p.is_file():
        msg = f"simulation {sim.name!r}: catalogue {sim.catalog!r} not found (looked for {p})"
        raise DataNotFoundError(msg)
    df = read_csv_or_parquet(p, what="catalogue")
    if "file" not in df.columns and "object_id" not in df.columns:
        msg = f"{p}: the catalogue needs a 'file' or an 'object_id' column (columns: {list(df.columns)[:12]})"
        raise DataFormatError(msg)
    return df


def _catalog_row(df: Any, path: Path, object_id: int | None, view: str) -> dict[str, Any]:
    if df is None:
        return {}
    if "file" in df.columns:
        hit = df[df["file"].astype(str).map(lambda s: Path(s).name) == path.name]
    elif object_id is not None:
        hit = df[df["object_id"].astype(np.int64) == int(object_id)]
        if "view" in df.columns and len(hit) > 1:
            hit = hit[hit["view"].astype(str) == view]
    else:
        return {}
    if len(hit) == 0:
        return {}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in hit.iloc[0].to_dict().items()
            if k != "file"}


# ---------------------------------------------------------------------------------------
# FITS reading
# ---------------------------------------------------------------------------------------
@dataclass
class _Plane:
    name: str
    data: np.ndarray          # 2-D
    header: Any               # the HDU's header
    index: int | None = None  # 1-based plane number in a cube
    companions: dict[str, np.ndarray] = field(default_factory=dict)
    companion_headers: dict[str, Any] = field(default_factory=dict)


def _load(path: Path) -> list[tuple[Any, np.ndarray | None]]:
    from astropy.io import fits

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # astropy only warns on truncated files
            with fits.open(path, memmap=False) as hdul:
                out = []
                for h in hdul:
                    data = h.data if h.is_image else None
                    out.append((h.header.copy(), None if data is None else np.array(data)))
    except Exception as exc:  # any failure to read is the same exclusion
        msg = f"{path.name}: cannot read it as FITS ({type(exc).__name__}: {exc})"
        raise ImageFileExcluded(msg, reason="unreadable") from None
    damaged = [str(w.message) for w in caught
               if any(word in str(w.message).lower() for word in ("truncated", "corrupt"))]
    if damaged:
        msg = f"{path.name}: damaged FITS file ({damaged[0]})"
        raise ImageFileExcluded(msg, reason="unreadable")
    if not out:
        msg = f"{path.name}: no HDU"
        raise ImageFileExcluded(msg, reason="unreadable")
    return out


def _split_companion(name: str) -> tuple[str, str | None]:
    up = name.upper()
    for comp in _COMPANIONS:
        for sep in _SEP:
            if up.endswith(sep + comp):
                return name[: -len(comp) - 1], comp
    return name, None


def _planes(path: Path, hdus: list[tuple[Any, np.ndarray | None]]) -> tuple[dict[str, _Plane], Any]:
    """Filter name (upper case) -> plane; also returns the primary header."""
    primary = hdus[0][0]
    planes: dict[str, _Plane] = {}
    companions: list[tuple[str, str, np.ndarray, Any]] = []
    for header, data in hdus:
        if data is None or data.size == 0:
            continue
        if data.ndim == 3:
            for n in range(1, data.shape[0] + 1):
                name = None
                for key in (f"EXT{n}", f"FILTER{n}", f"FILT{n}", f"BAND{n}"):
                    name = header.get(key, primary.get(key))
                    if name:
                        break
                if name:
                    planes.setdefault(str(name).strip().upper(),
                                      _Plane(str(name).strip(), data[n - 1], header, index=n))
            continue
        if data.ndim != 2:
            continue
        extname = str(header.get("EXTNAME", "")).strip()
        base, comp = _split_companion(extname)
        if comp is not None:
            companions.append((base.upper(), comp, data, header))
            continue
        names = [n for n in (extname, str(header.get("FILTER", "")).strip()) if n]
        for name in names:
            planes.setdefault(name.upper(), _Plane(name, data, header))
    for base, comp, data, header in companions:
        if base in planes:
            planes[base].companions[comp] = data
            planes[base].companion_headers[comp] = header
    if not planes:
        msg = f"{path.name}: no image plane named by filter (EXTNAME, FILTER or EXTn keywords)"
        raise ImageFileExcluded(msg, reason="missing_band")
    return planes, primary


def _get(headers: Sequence[Any], keys: Sequence[str]) -> Any:
    for h in headers:
        for k in keys:
            if k in h and h[k] not in (None, ""):
                return h[k]
    return None


def _pixel_scale(
    path: Path, headers: Sequence[Any], sim: SimDescriptor, redshift: float | None,
    cosmology: Cosmology,
) -> tuple[float, str]:
    """[arcsec] and where it came from."""
    if sim.pixel_scale_arcsec is not None:
        return float(sim.pixel_scale_arcsec), "descriptor pixel_scale_arcsec"
    if sim.kpc_per_pixel is not None:
        kpc, source = float(sim.kpc_per_pixel), "descriptor kpc_per_pixel"
        unit = "kpc"
    else:
        value = unit = None
        for h in headers:
            for key, ukey in (("CDELT1", "CUNIT1"), ("CD1_1", "CUNIT1"), ("PIXSCALE", "PIXUNIT")):
                if key in h:
                    value = abs(float(h[key]))
                    unit = str(h.get(ukey, "")).strip().lower()
                    if not unit:
                        comment = str(h.comments[key]).lower()
                        unit = "kpc" if "kpc" in comment else "arcsec" if "arcsec" in comment \
                            else "arcsec" if key == "PIXSCALE" else "deg"
                    break
            if value is not None:
                break
        if value is None or not value > 0:
            msg = (f"{path.name}: no pixel scale (CDELT1 or CD1_1); set pixel_scale_arcsec or "
                   "kpc_per_pixel in the simulation descriptor")
            raise ImageFileExcluded(msg, reason="no_pixel_scale")
        if unit.startswith("deg"):
            return value * 3600.0, "header CDELT1 [deg]"
        if unit.startswith("arcsec"):
            return value, "header CDELT1 [arcsec]"
        if unit.startswith("kpc"):
            kpc, source = value, "header CDELT1 [kpc]"
        else:
            msg = f"{path.name}: pixel-scale unit {unit!r} unknown; use deg, arcsec or kpc (CUNIT1)"
            raise ImageFileExcluded(msg, reason="no_pixel_scale")
    if redshift is None or not redshift > 0:
        msg = (f"{path.name}: the pixel scale is in kpc but no redshift is known; add a Redshift "
               "keyword, a redshift column in the catalogue, or observation_redshift to the descriptor")
        raise ImageFileExcluded(msg, reason="no_redshift")
    return kpc / cosmology.kpc_per_arcsec(redshift), f"{source} at z={redshift:g}"


def _object_id(path: Path, headers: Sequence[Any]) -> int | None:
    v = _get(headers, _ID_KEYS)
    if v is not None:
        try:
            return int(v)
        except (TypeError, ValueError):
            pass
    m = re.search(r"\d+", path.stem)
    return int(m.group()) if m else None


def _view(path: Path, headers: Sequence[Any]) -> str:
    v = _get(headers, _VIEW_KEYS)
    if v is not None:
        return str(v).strip()
    m = re.search(r"[_-](v\d+)(?=[_.-]|$)", path.stem)
    return m.group(1) if m else ""


def _header_mag(plane: _Plane, primary: Any) -> float | None:
    keys = [f"MAG{plane.index}"] if plane.index is not None else []
    keys += ["APMAG", "MAG", "AB_MAG"]
    v = _get([plane.header, primary] if plane.index is not None else [plane.header], keys)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def read_image_file(
    path: str | os.PathLike, sim: SimDescriptor, *, bands: Sequence[str], zero_point: float,
    survey_flux_unit: str = "counts", catalog: Any = None, cosmology: Cosmology | None = None,
) -> SimImage:
    """Read one file's planes for ``bands`` (survey band names) in survey flux per pixel.

    Parameters
    ----------
    path : path
    sim : SimDescriptor
        ``kind = "images"`` descriptor (``[bands]``, overrides, ``psf_convolved``).
    bands : sequence of str
        Survey bands, each mapped to a plane by ``sim.bands``.
    zero_point : float
        The survey's AB zero point.
    survey_flux_unit : str
        The survey's flux unit.
    catalog : DataFrame, optional
        :func:`image_catalog`'s table.
    cosmology : Cosmology, optional
        For kpc pixel scales (default the descriptor's).

    Raises
    ------
    ImageFileExcluded
    """
    path = Path(path)
    cosmology = cosmology or sim.cosmology
    hdus = _load(path)
    planes, primary = _planes(path, hdus)
    missing = [b for b in bands if b not in sim.bands]
    if missing:
        msg = (f"simulation {sim.name!r}: [bands] maps no plane to survey band(s) {missing}; "
               f"add them to {sim.source or 'the descriptor'} or pass --bands")
        raise ConfigError(msg)
    chosen: list[_Plane] = []
    for b in bands:
        plane = planes.get(sim.bands[b].upper())
        if plane is None:
            msg = (f"{path.name}: no plane {sim.bands[b]!r} for band {b} "
                   f"(planes: {sorted(p.name for p in planes.values())})")
            raise ImageFileExcluded(msg, reason="missing_band")
        chosen.append(plane)
    shapes = {p.data.shape for p in chosen}
    if len(shapes) != 1:
        msg = f"{path.name}: the planes have different shapes {sorted(shapes)}"
        raise ImageFileExcluded(msg, reason="bad_data")
    headers = [chosen[0].header, primary]

    object_id = _object_id(path, headers)
    view = _view(path, headers)
    cat = _catalog_row(catalog, path, object_id, view)
    if "object_id" in cat:
        object_id = int(cat.pop("object_id"))
    if "view" in cat:
        view = str(cat.pop("view"))
    if object_id is None:
        msg = f"{path.name}: no object id in the catalogue, the headers ({', '.join(_ID_KEYS)}) or the name"
        raise ImageFileExcluded(msg, reason="no_object_id")
    z = cat.get("redshift")
    z_source = "catalogue"
    if z is None or not np.isfinite(float(z)):
        z, z_source = _get(headers, _Z_KEYS), "header"
    if z is None and sim.observation_redshift is not None:
        z, z_source = sim.observation_redshift, "descriptor observation_redshift"
    z = None if z is None else float(z)
    scale, scale_source = _pixel_scale(path, headers, sim, z, cosmology)

    row: dict[str, Any] = {"subhalo_id": int(object_id), "view": view, "file": path.name}
    if z is not None:
        row["redshift"] = z
        row["redshift_source"] = z_source
    if "stellar_mass_msun" not in cat:
        m = _get(headers, ("MSTAR", "STELMASS", "STELLAR_MASS"))
        lm = _get(headers, ("LOGMSTAR", "LOG_MSTAR"))
        if m is not None:
            row["stellar_mass_msun"] = float(m)
        elif lm is not None:
            row["stellar_mass_msun"] = float(10.0 ** float(lm))
    row.update({k: v for k, v in cat.items() if isinstance(v, int | float | str | np.number)})
    row["source_pixel_scale_arcsec"] = scale
    row["pixel_scale_source"] = scale_source

    image, variance, mask, psfs = [], [], [], []
    units = []
    mask_planes = None
    for b, plane in zip(bands, chosen, strict=True):
        unit_text = sim.flux_unit or _get([plane.header, primary], ("BUNIT",))
        if unit_text is None:
            msg = f"{path.name}: plane {plane.name!r} has no BUNIT; set flux_unit in the descriptor"
            raise ImageFileExcluded(msg, reason="unknown_unit")
        try:
            unit = flux_unit_name(str(unit_text), where=f"{path.name} plane {plane.name!r}")
        except ConfigError as exc:
            raise ImageFileExcluded(str(exc), reason="unknown_unit") from None
        units.append(unit)
        data = to_survey_flux(plane.data, unit=unit, pixel_scale_arcsec=scale, zero_point=zero_point,
                              survey_flux_unit=survey_flux_unit)
        total = float(np.nansum(data))
        row[f"file_flux_{b}"] = total
        row[f"file_mag_{b}"] = zero_point - 2.5 * math.log10(total) if total > 0 else float("nan")
        hmag = _header_mag(plane, primary)
        if hmag is not None:
            row[f"header_mag_{b}"] = hmag
            row[f"mag_difference_{b}"] = hmag - row[f"file_mag_{b}"]
        image.append(data)
        if sim.psf_convolved:
            var = plane.companions.get("VARIANCE")
            if var is None:
                msg = (f"{path.name}: survey-realistic plane {plane.name!r} has no VARIANCE plane "
                       f"('{plane.name} VARIANCE')")
                raise ImageFileExcluded(msg, reason="no_variance")
            if unit == "mag/arcsec2":
                msg = f"{path.name}: survey-realistic planes must be in a linear flux unit, not {unit}"
                raise ImageFileExcluded(msg, reason="bad_data")
            factor = float(to_survey_flux(np.ones(1), unit=unit, pixel_scale_arcsec=scale,
                                          zero_point=zero_point, survey_flux_unit=survey_flux_unit)[0])
            variance.append(np.asarray(var, np.float64) * factor**2)
            m = plane.companions.get("MASK")
            if m is not None:
                from ..observed.cutouts import _planes_from_header

                mask.append(np.asarray(m))
                mask_planes = mask_planes or _planes_from_header(plane.companion_headers["MASK"])
            else:
                mask.append(np.zeros(plane.data.shape, np.int32))
            p = plane.companions.get("PSF")
            psfs.append(None if p is None else np.asarray(p, np.float64))
    row["flux_unit_file"] = ",".join(sorted(set(units)))
    return SimImage(path=path, image=np.stack(image), pixel_scale_arcsec=scale, row=row,
                    variance=np.stack(variance) if variance else None,
                    mask=np.stack(mask) if mask else None, mask_planes=mask_planes,
                    psf=psfs if sim.psf_convolved else [])


def catalog_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-image rows -> catalogue columns (strings stay strings, ints int64, else float)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cols: dict[str, np.ndarray] = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if any(isinstance(v, str) for v in vals):
            cols[k] = np.asarray(["" if v is None else str(v) for v in vals], dtype=object)
        elif all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in vals):
            cols[k] = np.asarray(vals, np.int64)
        else:
            cols[k] = np.asarray([np.nan if v is None else float(v) for v in vals], np.float64)
    return cols
