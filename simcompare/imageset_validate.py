"""Check an image set file a user wrote by hand: every problem, by dataset and attribute.

``simcompare validate FILE``; the layout is documented in ``docs/imageset.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataFormatError
from .imageset import _REQUIRED_ATTRS, SCHEMA, SCHEMA_VERSION, _json_mapping, _string_list, _text

__all__ = ["validate"]


def validate(path: str | os.PathLike) -> list[str]:
    """Check an image set file and return every problem found (an empty list: valid).

    Unlike :func:`read`, which stops at the first problem, this names each one, so a file
    written by hand (see ``docs/imageset.md``) can be fixed in one pass. Pixels are read
    one image at a time, so memory stays flat in N.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.

    Returns
    -------
    list of str
        One sentence per problem, each naming the dataset or attribute.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such file"]
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        return [f"{path}: not a readable HDF5 file ({exc})"]
    problems: list[str] = []
    with f:
        _validate_attrs(f, problems)
        _validate_datasets(f, problems)
    return problems


def _validate_attrs(f: Any, problems: list[str]) -> None:
    attrs = dict(f.attrs)
    for key in _REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(f"root attribute {key!r} is missing")
    if "schema" in attrs and _text(attrs["schema"]) != SCHEMA:
        problems.append(f"root attribute 'schema' must be {SCHEMA!r}, got {_text(attrs['schema'])!r}")
    if "schema_version" in attrs:
        try:
            version = int(np.asarray(attrs["schema_version"]).ravel()[0])
        except (TypeError, ValueError, IndexError):
            version = None
        if version != SCHEMA_VERSION:
            problems.append(f"root attribute 'schema_version' must be {SCHEMA_VERSION}, "
                            f"got {attrs['schema_version']!r}")
    if "kind" in attrs and _text(attrs["kind"]) not in ("mock", "observed"):
        problems.append(f"root attribute 'kind' must be 'mock' or 'observed', got {_text(attrs['kind'])!r}")
    for key in ("pixel_scale_arcsec", "zero_point"):
        if key in attrs:
            try:
                value = float(np.asarray(attrs[key]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                value = float("nan")
            if not np.isfinite(value) or (key == "pixel_scale_arcsec" and value <= 0):
                problems.append(f"root attribute {key!r} must be a finite"
                                f"{' positive' if key == 'pixel_scale_arcsec' else ''} number, "
                                f"got {attrs[key]!r}")
    for key, parse in (("bands", _string_list), ("provenance", _json_mapping)):
        if key in attrs:
            try:
                parse(attrs[key], name=key)
            except DataFormatError as exc:
                problems.append(f"root {exc}")


def _validate_datasets(f: Any, problems: list[str]) -> None:
    try:
        n_bands = len(_string_list(f.attrs["bands"], name="bands"))
    except (KeyError, DataFormatError):
        n_bands = None
    if "images" not in f:
        problems.append("dataset 'images' is missing: float32 (N, B, H, W)")
        shape = None
    else:
        ds = f["images"]
        shape = ds.shape
        if ds.ndim != 4:
            problems.append(f"dataset 'images' must be 4-D (N, B, H, W), got shape {ds.shape}")
            shape = None
        if ds.dtype != np.float32:
            problems.append(f"dataset 'images' must be float32, got {ds.dtype}")
        if shape is not None and n_bands is not None and shape[1] != n_bands:
            problems.append(f"dataset 'images' has {shape[1]} band planes but attribute 'bands' "
                            f"names {n_bands}")
    for name, dtype in (("variance", np.float32), ("mask", np.uint8)):
        if name in f:
            ds = f[name]
            if shape is not None and ds.shape != shape:
                problems.append(f"dataset {name!r} has shape {ds.shape}, expected {shape} (as 'images')")
            if ds.dtype != dtype:
                problems.append(f"dataset {name!r} must be {np.dtype(dtype).name}, got {ds.dtype}")
    if shape is not None:
        _validate_pixels(f, shape, problems)
    _validate_psf(f, shape, n_bands, problems)
    _validate_catalog(f, shape, problems)


def _validate_pixels(f: Any, shape: tuple[int, ...], problems: list[str]) -> None:
    images = f["images"]
    mask = f["mask"] if "mask" in f and f["mask"].shape == shape else None
    variance = f["variance"] if "variance" in f and f["variance"].shape == shape else None
    bad_pixels, bad_variance, blank = [], [], []
    for i in range(shape[0]):
        img = np.asarray(images[i], dtype=np.float64)
        good = np.ones(img.shape, bool) if mask is None else np.asarray(mask[i]) == 0
        if not np.all(np.isfinite(img[good])):
            bad_pixels.append(i)
        elif not np.any(img[good] != 0):
            blank.append(i)
        if variance is not None:
            var = np.asarray(variance[i])[good]
            if not np.all(np.isfinite(var) & (var >= 0)):
                bad_variance.append(i)
    if bad_pixels:
        problems.append(f"dataset 'images' holds NaN or inf in unmasked pixels of {len(bad_pixels)} "
                        f"image(s) (first rows {bad_pixels[:5]}); mask them (mask != 0) or fix them")
    if bad_variance:
        problems.append(f"dataset 'variance' holds negative or non-finite values in unmasked pixels of "
                        f"{len(bad_variance)} image(s) (first rows {bad_variance[:5]})")
    if blank:
        problems.append(f"dataset 'images' has {len(blank)} image(s) that are zero in every unmasked "
                        f"pixel (first rows {blank[:5]})")


def _validate_psf(f: Any, shape: tuple[int, ...] | None, n_bands: int | None, problems: list[str]) -> None:
    if "psf" not in f:
        return  # optional; the background model (and so a likelihood ratio) needs one
    psf = np.asarray(f["psf"][()], dtype=np.float64)
    b = shape[1] if shape is not None else n_bands
    if psf.ndim not in (3, 4) or psf.shape[-1] != psf.shape[-2] or (b is not None and psf.shape[-3] != b):
        problems.append(f"dataset 'psf' must be (B, P, P) or (N, B, P, P) with B={b}, got {psf.shape}")
        return
    if psf.ndim == 4 and shape is not None and psf.shape[0] != shape[0]:
        problems.append(f"dataset 'psf' has {psf.shape[0]} per-image entries for {shape[0]} images")
    sums = psf.sum(axis=(-1, -2))
    if not np.all(np.isfinite(sums)) or not np.allclose(sums, 1.0, atol=1e-3):
        problems.append(f"dataset 'psf': every PSF must be normalised to sum 1 "
                        f"(sums range {np.nanmin(sums):.4g}-{np.nanmax(sums):.4g})")


def _validate_catalog(f: Any, shape: tuple[int, ...] | None, problems: list[str]) -> None:
    if "catalog" not in f:
        problems.append("group 'catalog' is missing: 1-D columns of length N, object_id (int64) required")
        return
    cat = f["catalog"]
    if "object_id" not in cat:
        problems.append("dataset 'catalog/object_id' is missing (int64, one per image)")
    else:
        ids = cat["object_id"]
        if not np.issubdtype(ids.dtype, np.integer):
            problems.append(f"dataset 'catalog/object_id' must be integer, got {ids.dtype}")
        elif ids.ndim == 1:
            values, counts = np.unique(ids[()], return_counts=True)
            if np.any(counts > 1):
                problems.append(f"dataset 'catalog/object_id' repeats {int(np.sum(counts > 1))} id(s) "
                                f"(e.g. {values[counts > 1][:3].tolist()}); ids must be unique")
    n = shape[0] if shape is not None else None
    for key, ds in cat.items():
        if not hasattr(ds, "shape"):
            problems.append(f"'catalog/{key}' must be a dataset, not a group")
        elif ds.ndim != 1 or (n is not None and ds.shape[0] != n):
            problems.append(f"dataset 'catalog/{key}' has shape {ds.shape}, expected ({n},)")
