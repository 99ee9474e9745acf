"""The ImageSet: one HDF5 schema for mock and observed images alike.

Layout (schema version 1)::

    /            attrs: schema, schema_version, kind ("mock" | "observed"), survey,
                        bands, pixel_scale_arcsec, zero_point, flux_unit, provenance (JSON)
    /images      float32 (N, B, H, W)   flux per pixel in flux_unit
    /variance    float32 (N, B, H, W)   optional per-pixel noise variance
    /mask        uint8   (N, B, H, W)   optional; non-zero = bad pixel
    /psf         float32 (B, P, P) or (N, B, P, P), each normalised to sum 1
    /catalog/<column>   1-D, length N; object_id (int64) is required

:func:`write` goes through a temporary file in the same folder renamed into place, so a
crash never leaves a partial file. :func:`read` validates everything and raises one
:class:`~simcompare.errors.DataFormatError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_path
from .errors import DataFormatError, DataNotFoundError

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ImageSet",
    "ImageSetWriter",
    "read",
    "read_catalog",
    "write",
]

SCHEMA = "simcompare.imageset"
SCHEMA_VERSION = 1


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images of N galaxies in B bands, with optional variance, mask and PSFs.

    Parameters
    ----------
    images : ndarray, float32, shape (N, B, H, W)
        Flux per pixel in ``flux_unit`` (magnitude = zero_point - 2.5 log10 flux).
    catalog : dict of str to 1-D ndarray
        Per-image columns; ``object_id`` (int64) is required.
    kind : {"mock", "observed"}
    survey : str
        Survey descriptor name.
    bands : tuple of str
    pixel_scale_arcsec : float
    zero_point : float
    flux_unit : str
    variance, mask : ndarray, optional
        Same shape as ``images``; mask non-zero marks bad pixels.
    psf : ndarray, optional
        (B, P, P) or (N, B, P, P), each normalised to sum 1.
    provenance : dict
        JSON-serialisable record of versions, config, seeds and input hashes.
    """

    images: np.ndarray
    catalog: Mapping[str, np.ndarray]
    kind: str
    survey: str
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    zero_point: float
    flux_unit: str = "counts"
    variance: np.ndarray | None = None
    mask: np.ndarray | None = None
    psf: np.ndarray | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self, where="ImageSet")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def object_id(self) -> np.ndarray:
        """The ``object_id`` catalogue column (int64)."""
        return np.asarray(self.catalog["object_id"])

    def catalog_frame(self):
        """The catalogue as a :class:`pandas.DataFrame`."""
        import pandas as pd

        return pd.DataFrame({k: np.asarray(v) for k, v in self.catalog.items()})

    def subset(self, index: np.ndarray) -> ImageSet:
        """A new ImageSet holding the images selected by ``index`` (int or bool array)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        psf = self.psf
        if psf is not None and psf.ndim == 4:
            psf = psf[index]
        return replace(
            self,
            images=self.images[index],
            catalog={k: np.asarray(v)[index] for k, v in self.catalog.items()},
            variance=None if self.variance is None else self.variance[index],
            mask=None if self.mask is None else self.mask[index],
            psf=psf,
        )


def _validate(s: ImageSet, *, where: str) -> None:
    def fail(problem: str) -> None:
        msg = f"{where}: {problem}"
        raise DataFormatError(msg)

    if s.kind not in ("mock", "observed"):
        fail(f"kind must be 'mock' or 'observed', got {s.kind!r}")
    img = s.images
    if not isinstance(img, np.ndarray) or img.ndim != 4:
        fail(f"images must be a 4-D array (N, B, H, W), got shape {getattr(img, 'shape', None)}")
    if img.dtype != np.float32:
        fail(f"images must be float32, got {img.dtype}")
    n, b = img.shape[:2]
    if b != len(s.bands):
        fail(f"images have {b} bands but bands lists {len(s.bands)}: {list(s.bands)}")
    for name, arr, dtype in (("variance", s.variance, np.float32), ("mask", s.mask, np.uint8)):
        if arr is None:
            continue
        if arr.shape != img.shape:
            fail(f"{name} has shape {arr.shape}, expected {img.shape}")
        if arr.dtype != dtype:
            fail(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
    good = np.ones(img.shape, bool) if s.mask is None else (s.mask == 0)
    if not np.all(np.isfinite(img[good])):
        fail("images hold NaN or inf in unmasked pixels; mask them (mask != 0) or fix the input")
    if s.psf is not None:
        psf = s.psf
        if psf.ndim not in (3, 4) or psf.shape[-3] != b or psf.shape[-1] != psf.shape[-2]:
            fail(f"psf must be (B, P, P) or (N, B, P, P) with B={b}, got {psf.shape}")
        if psf.ndim == 4 and psf.shape[0] != n:
            fail(f"per-image psf has {psf.shape[0]} entries for {n} images")
        sums = psf.sum(axis=(-1, -2))
        if not np.allclose(sums, 1.0, atol=1e-3):
            fail(f"every PSF must be normalised to sum 1 (sums range {sums.min():.4g}-{sums.max():.4g})")
    if "object_id" not in s.catalog:
        fail("catalog has no object_id column")
    for key, col in s.catalog.items():
        col = np.asarray(col)
        if col.ndim != 1 or col.shape[0] != n:
            fail(f"catalog column {key!r} has shape {col.shape}, expected ({n},)")
    if not np.issubdtype(np.asarray(s.catalog["object_id"]).dtype, np.integer):
        fail("catalog object_id must be integer")
    if not (np.isfinite(s.pixel_scale_arcsec) and s.pixel_scale_arcsec > 0):
        fail(f"pixel_scale_arcsec must be positive, got {s.pixel_scale_arcsec}")


def _attrs(s: ImageSet) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": s.kind,
        "survey": s.survey,
        "bands": json.dumps(list(s.bands)),
        "pixel_scale_arcsec": float(s.pixel_scale_arcsec),
        "zero_point": float(s.zero_point),
        "flux_unit": s.flux_unit,
        "provenance": json.dumps(dict(s.provenance), sort_keys=True, default=str),
    }


def _catalog_array(col: np.ndarray) -> np.ndarray:
    col = np.asarray(col)
    if col.dtype.kind in ("U", "O"):
        return np.asarray([str(v) for v in col], dtype=object)
    return col


def write(path: str | os.PathLike, imageset: ImageSet, *, compression: str | None = "gzip") -> Path:
    """Write ``imageset`` to ``path`` atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or os.PathLike
        Output HDF5 file; written as a temporary file, then renamed.
    imageset : ImageSet
        The validated set to write.
    compression : str or None, optional
        HDF5 filter of the image datasets (default ``"gzip"``; None for none).

    Returns
    -------
    Path
        ``path``.
    """
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in _attrs(imageset).items():
                f.attrs[k] = v
            opts = {"compression": compression, "shuffle": True} if compression else {}
            chunk = (1, *imageset.images.shape[1:])
            f.create_dataset("images", data=imageset.images, chunks=chunk, **opts)
            if imageset.variance is not None:
                f.create_dataset("variance", data=imageset.variance, chunks=chunk, **opts)
            if imageset.mask is not None:
                f.create_dataset("mask", data=imageset.mask, chunks=chunk, **opts)
            if imageset.psf is not None:
                f.create_dataset("psf", data=imageset.psf.astype(np.float32))
            cat = f.create_group("catalog")
            for key, col in imageset.catalog.items():
                arr = _catalog_array(col)
                if arr.dtype == object:
                    cat.create_dataset(key, data=arr, dtype=h5py.string_dtype())
                else:
                    cat.create_dataset(key, data=arr)
    return path


def _open(path: Path):
    import h5py

    if not path.exists():
        msg = f"{path}: no such image set; create it with 'simcompare render' or 'simcompare ingest'"
        raise DataNotFoundError(msg)
    if path.is_dir():
        msg = f"{path}: is a directory, not an image set file; pass the .h5 file itself"
        raise DataFormatError(msg)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        msg = f"{path}: not a readable HDF5 image set ({exc}); delete it and regenerate it"
        raise DataFormatError(msg) from None


def _text(value: Any) -> str:
    """An HDF5 string attribute as ``str`` (h5py returns str, bytes or a 0-d array)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode()
    return str(value)


def _string_list(value: Any, *, name: str) -> tuple[str, ...]:
    """A list-of-strings attribute in any of its natural h5py spellings.

    Accepts the JSON text this package writes (``'["g", "r"]'``), an HDF5 array of strings
    or bytes (what ``f.attrs["bands"] = ["g", "r"]`` stores), or one plain name (``"i"``).
    """
    if (isinstance(value, np.ndarray) and value.ndim >= 1) or isinstance(value, list | tuple):
        items = [_text(v) for v in np.asarray(value, dtype=object).ravel()]
    else:
        text = _text(value).strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                msg = f"attribute {name!r} is not valid JSON ({exc.msg}): {text!r}"
                raise DataFormatError(msg) from None
            if not isinstance(parsed, list):
                msg = f"attribute {name!r} must be a list of strings, got {text!r}"
                raise DataFormatError(msg)
            items = [str(v) for v in parsed]
        else:
            items = [t.strip() for t in text.split(",")] if text else []
    if not items or any(not t for t in items):
        msg = f"attribute {name!r} must name at least one band, got {value!r}"
        raise DataFormatError(msg)
    return tuple(items)


def _json_mapping(value: Any, *, name: str) -> dict[str, Any]:
    """A JSON-object attribute (provenance); an empty string counts as ``{}``."""
    text = _text(value).strip() or "{}"
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"attribute {name!r} is not valid JSON ({exc.msg})"
        raise DataFormatError(msg) from None
    if not isinstance(parsed, dict):
        msg = f"attribute {name!r} must be a JSON object, got {type(parsed).__name__}"
        raise DataFormatError(msg)
    return parsed


def _check_header(f: Any, path: Path) -> dict[str, Any]:
    attrs = dict(f.attrs)
    if "schema" in attrs:
        attrs["schema"] = _text(attrs["schema"])
    if attrs.get("schema") != SCHEMA:
        msg = f"{path}: not a simcompare image set (schema attribute {attrs.get('schema')!r})"
        raise DataFormatError(msg)
    version = int(attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        msg = (f"{path}: image set schema version {version}, this simcompare reads version "
               f"{SCHEMA_VERSION}; regenerate the file with this version")
        raise DataFormatError(msg)
    return attrs


def read_catalog(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read only the catalogue of an image set (cheap)."""
    path = Path(path)
    with _open(path) as f:
        _check_header(f, path)
        return _read_catalog_group(f)


def _read_catalog_group(f: Any) -> dict[str, np.ndarray]:
    out = {}
    if "catalog" in f:
        for key, ds in f["catalog"].items():
            arr = ds[()]
            if arr.dtype == object or arr.dtype.kind == "S":
                arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr])
            out[key] = arr
    return out


def read(path: str | os.PathLike, *, index: np.ndarray | None = None) -> ImageSet:
    """Read and validate an image set; ``index`` selects a subset of rows."""
    path = Path(path)
    with _open(path) as f:
        attrs = _check_header(f, path)
        try:
            sel = slice(None) if index is None else np.sort(np.asarray(index))
            images = f["images"][sel]
            variance = f["variance"][sel] if "variance" in f else None
            mask = f["mask"][sel] if "mask" in f else None
            psf = f["psf"][()] if "psf" in f else None
            if psf is not None and psf.ndim == 4 and index is not None:
                psf = psf[sel]
            catalog = _read_catalog_group(f)
            if index is not None:
                catalog = {k: v[sel] for k, v in catalog.items()}
            bands = _string_list(attrs["bands"], name="bands")
            prov = _json_mapping(attrs.get("provenance", "{}"), name="provenance")
            return ImageSet(
                images=images, catalog=catalog, kind=_text(attrs["kind"]), survey=_text(attrs["survey"]),
                bands=bands, pixel_scale_arcsec=float(attrs["pixel_scale_arcsec"]),
                zero_point=float(attrs["zero_point"]), flux_unit=_text(attrs["flux_unit"]),
                variance=variance, mask=mask, psf=psf, provenance=prov,
            )
        except DataFormatError as exc:
            msg = (f"{path}: {exc}".replace("ImageSet: ", "")
                   + "; fix the file (layout: docs/imageset.md) or regenerate it")
            raise DataFormatError(msg) from None
        except (KeyError, OSError, ValueError, TypeError) as exc:
            msg = f"{path}: damaged image set ({exc}); regenerate it"
            raise DataFormatError(msg) from None


_REQUIRED_ATTRS = ("schema", "schema_version", "kind", "survey", "bands", "pixel_scale_arcsec",
                   "zero_point", "flux_unit")


_PENDING_PSF = "_psf_shared_pending"


def part_provenance(part: str | os.PathLike) -> dict[str, Any]:
    """The provenance of an interrupted writer's ``<out>.part`` file ({} when unreadable)."""
    import h5py

    try:
        with h5py.File(part, "r") as f:
            return json.loads(f.attrs.get("provenance", "{}"))
    except (OSError, ValueError):
        return {}


def _check_written(path: Path) -> None:
    """Header, shapes and catalogue lengths of a file just written (no pixels read)."""
    with _open(path) as f:
        _check_header(f, path)
        n = f["images"].shape[0]
        bad = [name for name in ("variance", "mask") if name in f and f[name].shape != f["images"].shape]
        bad += [f"catalog/{k}" for k, ds in f["catalog"].items() if ds.shape[0] != n]
        if "psf" in f and f["psf"].ndim == 4 and f["psf"].shape[0] != n:
            bad.append("psf")
        if bad:
            msg = f"{path}: dataset(s) {bad} do not match the {n} images; regenerate the file"
            raise DataFormatError(msg)


class ImageSetWriter:
    """Stream images into an ImageSet file batch by batch (flat memory in N).

    Writes to ``<path>.part`` and renames into place on :meth:`close`; an interrupted
    writer leaves the ``.part`` file, which :meth:`open_resume` can continue.

    Examples
    --------
    >>> with ImageSetWriter(path, kind="mock", survey="hsc", bands=("g",), pixel_scale_arcsec=0.168,
    ...                     zero_point=27.0, stamp_size=32) as w:            # doctest: +SKIP
    ...     w.append(images, catalog={"object_id": ids})
    """

    def __init__(
        self, path: str | os.PathLike, *, kind: str, survey: str, bands: tuple[str, ...],
        pixel_scale_arcsec: float, zero_point: float, stamp_size: int, flux_unit: str = "counts",
        with_variance: bool = False, with_mask: bool = False, psf: np.ndarray | None = None,
        provenance: Mapping[str, Any] | None = None, resume: bool = False,
    ) -> None:
        import h5py

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        from ._io import check_output_file

        check_output_file(self.path)
        b, h = len(bands), stamp_size
        if resume and self.part.exists():
            self._f = h5py.File(self.part, "a")
            return
        self._f = h5py.File(self.part, "w")
        header = ImageSet(
            images=np.zeros((0, b, h, h), np.float32), catalog={"object_id": np.zeros(0, np.int64)},
            kind=kind, survey=survey, bands=tuple(bands), pixel_scale_arcsec=pixel_scale_arcsec,
            zero_point=zero_point, flux_unit=flux_unit, psf=psf, provenance=provenance or {},
        )
        for k, v in _attrs(header).items():
            self._f.attrs[k] = v
        shape, maxshape, chunk = (0, b, h, h), (None, b, h, h), (1, b, h, h)
        self._f.create_dataset("images", shape=shape, maxshape=maxshape, dtype="f4", chunks=chunk)
        if with_variance:
            self._f.create_dataset("variance", shape=shape, maxshape=maxshape, dtype="f4", chunks=chunk)
        if with_mask:
            self._f.create_dataset("mask", shape=shape, maxshape=maxshape, dtype="u1", chunks=chunk)
        if psf is not None:
            self._f.create_dataset("psf", data=np.asarray(psf, np.float32))
        self._f.create_group("catalog")

    def __len__(self) -> int:
        return int(self._f["images"].shape[0])

    def done_ids(self) -> np.ndarray:
        """object_ids already written (for resuming)."""
        cat = self._f["catalog"]
        return cat["object_id"][()] if "object_id" in cat else np.zeros(0, np.int64)

    def append(
        self, images: np.ndarray, *, catalog: Mapping[str, np.ndarray],
        variance: np.ndarray | None = None, mask: np.ndarray | None = None,
        psf: np.ndarray | None = None,
    ) -> None:
        """Append a batch of images and their catalogue rows.

        Parameters
        ----------
        images : ndarray, shape (N, B, P, P)
            A batch of images in the set's flux unit.
        catalog : mapping of str to ndarray
            One value per image for every catalogue column.
        variance : ndarray, shape (N, B, P, P), optional
            Per-pixel variance, when the set has one.
        mask : ndarray, shape (N, B, P, P), optional
            Per-pixel mask, when the set has one.
        psf : ndarray, shape (N, B, Q, Q), optional
            Each image's own PSF (for a writer made without a shared ``psf``). While
            every PSF so far is the same one it is kept once; the file switches to
            per-image PSFs at the first that differs.
        """
        import h5py

        n0, k = len(self), images.shape[0]
        if psf is not None:
            self._append_psf(np.asarray(psf, np.float32), n0)
        for name, arr in (("images", images), ("variance", variance), ("mask", mask)):
            if name in self._f:
                if arr is None:
                    msg = f"{self.path}: batch lacks {name}, which this image set stores"
                    raise DataFormatError(msg)
                ds = self._f[name]
                ds.resize(n0 + k, axis=0)
                ds[n0:] = arr
        cat = self._f["catalog"]
        for key, col in catalog.items():
            arr = _catalog_array(col)
            if key not in cat:
                if n0:
                    msg = f"{self.path}: new catalog column {key!r} after {n0} rows"
                    raise DataFormatError(msg)
                dtype = h5py.string_dtype() if arr.dtype == object else arr.dtype
                cat.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
            ds = cat[key]
            ds.resize(n0 + k, axis=0)
            ds[n0:] = arr
        self._f.flush()

    def set_provenance(self, provenance: Mapping[str, Any]) -> None:
        """Replace the provenance record."""
        self._f.attrs["provenance"] = json.dumps(dict(provenance), sort_keys=True, default=str)

    def _append_psf(self, psf: np.ndarray, n0: int) -> None:
        f = self._f
        if "psf" in f and f["psf"].ndim == 3:
            msg = f"{self.path}: this image set has one shared PSF; per-image PSFs cannot be added"
            raise DataFormatError(msg)
        if "psf" not in f:
            if _PENDING_PSF not in f:
                f.create_dataset(_PENDING_PSF, data=psf[0])
            common = f[_PENDING_PSF][()]
            if common.shape == psf.shape[1:] and np.array_equal(psf, np.broadcast_to(common, psf.shape)):
                return
            # the first PSF that differs: every earlier image gets the shared one
            ds = f.create_dataset("psf", shape=(n0, *common.shape), maxshape=(None, *common.shape),
                                  dtype="f4", chunks=(1, *common.shape))
            for i in range(0, n0, 1024):
                ds[i:min(n0, i + 1024)] = common
            del f[_PENDING_PSF]
        ds = f["psf"]
        ds.resize(n0 + psf.shape[0], axis=0)
        ds[n0:] = psf

    def truncate_to_catalog(self) -> None:
        """Drop rows of a batch cut off between images and catalogue (a crash mid-append)."""
        f = self._f
        cat = f["catalog"]
        n = int(cat["object_id"].shape[0]) if "object_id" in cat else 0
        for name in ("images", "variance", "mask"):
            if name in f and f[name].shape[0] != n:
                f[name].resize(n, axis=0)
        if "psf" in f and f["psf"].ndim == 4 and f["psf"].shape[0] != n:
            f["psf"].resize(n, axis=0)
        for key in list(cat.keys()):
            if cat[key].shape[0] != n:
                cat[key].resize(n, axis=0)

    def close(self) -> Path:
        """Finish the file and rename it into place; returns the final path.

        The file is checked (header, dataset shapes, catalogue lengths) without reading
        its pixels, so memory stays flat in N.
        """
        if _PENDING_PSF in self._f:
            self._f.move(_PENDING_PSF, "psf")
        self._f.close()
        os.replace(self.part, self.path)
        _check_written(self.path)
        return self.path

    def abort(self) -> None:
        """Close without renaming (the .part file stays for a resume)."""
        self._f.close()

    def __enter__(self) -> ImageSetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def __getattr__(name: str) -> Any:
    # validate() lives in simcompare.imageset_validate (it reads files without loading them)
    if name == "validate":
        from .imageset_validate import validate

        return validate
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
