"""Ingestion: observed cutouts (either layout) preprocessed like the mocks into an ImageSet.

:func:`ingest` reads the HSC cutout layout or a manifest (readers in
:mod:`simcompare.observed.cutouts`), applies :func:`simcompare.stamps.preprocess_stamp`
(the same preprocessing as the mocks) and streams an "observed" ImageSet to disk, batch by
batch, on a :class:`~simcompare.cluster.Cluster`. Per-object problems exclude the object
and are counted by reason in the provenance (``exclusions`` and ``excluded_ids``); with
``strict=True`` they raise instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as _progress
from .._version import __version__
from ..cluster import Cluster, as_cluster
from ..config import SurveyDescriptor
from ..errors import ConfigError, DataFormatError, DataNotFoundError, SimcompareError
from ..imageset import part_provenance
from ..registry import as_survey
from ..stamps import HSC_BAD_PLANES, NeighbourConfig, prepare_psf, preprocess_stamp
from .cutouts import (
    Cutout,
    apply_cuts,
    iter_hsc_cutouts,
    iter_manifest_cutouts,
    read_catalog_table,
    read_manifest,
)

__all__ = ["ingest"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Ingestion
# ---------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    sv = as_survey(survey, workspace=workspace)
    out = check_output_file(out)
    bands = sv.select_bands(bands)
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
        "preprocess": {"function": "simcompare.stamps.preprocess_stamp",
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

#: Objects per task (None: sized by :func:`_batch_size`).
_INGEST_BATCH: int | None = None

#: Objects per task on several workers, fewest and most: 16 objects are a few tenths of a
#: second of reading and preprocessing; 64 at most, in this process too (each batch is one
#: write of the output, whose cost per write does not grow with the objects in it).
_BATCH_RANGE = (16, 64)


def _batch_size(n: int, cluster: Cluster) -> int:
    """Objects per task: about four tasks per worker on several, the most in this process."""
    if _INGEST_BATCH is not None:
        return int(_INGEST_BATCH)
    lo, hi = _BATCH_RANGE
    if n <= lo or not cluster.distributed:
        return hi
    return int(min(hi, max(lo, -(-n // (4 * cluster.n_workers)))))


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
        tasks = _Batches(cat, rows, _batch_size(len(cat), cluster))
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
                        from ..psf import survey_psf_images

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
