"""Render a simulation's galaxies as survey images, in batches, into a mock ImageSet.

:func:`render` is the public entry point (``simcompare render``). Per galaxy
(:func:`render_galaxy`): SPS fluxes per particle (initial mass x BC03 SSP through the
survey filters at the observation redshift), orientation, adaptive smoothing, a
flux-conserving deposit integrated over sub-pixels, convolution with the optical PSF
sampled at their centres, summed back onto pixels, the shared stamp preprocessing, and
noise. Galaxies are rendered in batches (each task several
galaxies, so that a task costs well over the ~3 ms scheduling overhead) on a
local dask cluster (``workers=N``) or on a running one (``scheduler=ADDRESS``);
finished batches stream in submission order into an
:class:`~simcompare.imageset.ImageSetWriter`, so memory stays flat in the sample size.
An interrupted render leaves ``<out>.part``; running the same command again resumes it,
skipping galaxies already written (``done_ids``), never duplicating or losing any.

Per-galaxy random streams come from ``numpy.random.default_rng([seed, object_id])``,
so results do not depend on batching, worker count or resumption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as _progress
from .._version import __version__
from ..cluster import Cluster, as_cluster
from ..config import SimDescriptor, SurveyDescriptor
from ..errors import ConfigError, SimcompareError
from ..imageset import part_provenance
from ..psf import PSF
from ..sims.base import Galaxy
from ..sps import BandFluxTable
from ..stamps import NeighbourConfig
from .blanksky import BlankSky
from .exclusions import explain_exclusions
from .galaxy import (  # the per-galaxy renderer, re-exported here
    CENTRING_STREAM,
    EXCLUSION_REASONS,
    RENDER_OVERSAMPLE,
    GalaxyExcluded,
    RenderedStamp,
    RenderSpec,
    render_galaxy,
)
from .observe import Camera, NoiseModel, choose_redshift
from .project import (
    LIGHT_MAP_MARGIN,
    PROJECTIONS,
)

__all__ = [
    "CENTRING_STREAM",
    "EXCLUSION_REASONS",
    "GalaxyExcluded",
    "RenderSpec",
    "RenderedStamp",
    "render",
    "render_galaxy",
]

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------
# Batches and workers
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ReaderArgs:
    sim: SimDescriptor
    snapshot: int | None
    base_path: str | None
    workspace: str


_READERS: dict[Any, Any] = {}


def _worker_reader(args: _ReaderArgs) -> Any:
    key = (args.sim.name, args.sim.source, args.snapshot, args.base_path, args.workspace)
    if key not in _READERS:
        from ..sims import open_reader

        _READERS.clear()
        _READERS[key] = open_reader(args.sim, snapshot=args.snapshot, base_path=args.base_path,
                                    workspace=args.workspace, progress=False)
    return _READERS[key]


@dataclass
class _BatchResult:
    ids: list[int]
    images: np.ndarray | None
    variance: np.ndarray | None
    rows: list[dict[str, Any]]
    excluded: dict[int, str]
    seconds: float
    mask: np.ndarray | None = None


def _render_batch(
    galaxies: Iterable[Galaxy], spec: RenderSpec, expected: Sequence[int] = (),
    reader: Any = None,
) -> _BatchResult:
    t0 = time.perf_counter()
    imgs, vars_, masks, rows, ids = [], [], [], [], []
    excluded: dict[int, str] = {}
    seen: set[int] = set()
    for gal in galaxies:
        oid = int(gal.object_id)
        seen.add(oid)
        try:
            st = render_galaxy(gal.particles, spec, object_id=oid)
        except GalaxyExcluded as exc:
            log.info("galaxy %d excluded (%s): %s", oid, exc.reason, exc)
            excluded[oid] = exc.reason
            continue
        except (ValueError, FloatingPointError, MemoryError, SimcompareError) as exc:
            log.warning("galaxy %d failed to render: %s", oid, exc)
            excluded[oid] = "render_error"
            continue
        row = {k: v for k, v in gal.row.items() if _is_scalar(v)}
        row.update(st.info)
        row["object_id"] = oid
        ids.append(oid)
        imgs.append(st.image)
        vars_.append(st.variance)
        masks.append(st.mask)
        rows.append(row)
    missing = [int(o) for o in expected if int(o) not in seen]
    if missing:
        by_reader = {}
        for reason, oids in (getattr(reader, "exclusion_ids", None) or {}).items():
            by_reader.update({int(o): f"reader_{reason}" for o in oids})
        for oid in missing:
            excluded[oid] = by_reader.get(oid, "not_returned_by_reader")
    with_mask = bool(masks) and all(m is not None for m in masks)
    return _BatchResult(ids=ids, images=np.stack(imgs) if imgs else None,
                        variance=np.stack(vars_) if vars_ else None, rows=rows,
                        excluded=excluded, seconds=time.perf_counter() - t0,
                        mask=np.stack(masks) if with_mask else None)


def _render_batch_from_reader(ids: list[int], reader_args: _ReaderArgs, spec: RenderSpec) -> _BatchResult:
    """One task on a worker: read the batch's galaxies with the worker's own reader, render."""
    reader = _worker_reader(reader_args)
    return _render_batch(reader.galaxies(ids), spec, expected=ids, reader=reader)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool | np.integer | np.floating | np.bool_)


# ---------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------
def render(
    sim: SimDescriptor | str, survey: SurveyDescriptor | str, *, out: Path,
    snapshot: int | None = None, n_galaxies: int | None = None, base_path: str | None = None,
    workspace: str | Path = ".", stamp_size: int | None = None, bands: Sequence[str] = (),
    noise: str = "survey", projection: str = "random", redshift: float | None = None,
    seed: int = 0, workers: int = 1, scheduler: str | None = None, progress: bool = False,
    batch_size: int | None = None, dust_av: float = 0.0, knn_k: int = 16,
    max_flux_outside: float = 0.5, cluster: Cluster | None = None,
    mask_neighbours: bool = True, neighbours: NeighbourConfig | None = None,
) -> Path:
    """Render mock images of a simulation's galaxies as a survey sees them.

    Parameters
    ----------
    sim : SimDescriptor or str
        Simulation descriptor or its name (looked up in the workspace, then built-ins).
    survey : SurveyDescriptor or str
        Survey descriptor or its name.
    out : Path
        Output ImageSet (HDF5, kind "mock"). A leftover ``<out>.part`` from an
        interrupted run with the same configuration is resumed.
    snapshot : int, optional
        Snapshot number (default: the descriptor's).
    n_galaxies : int, optional
        Render at most this many of the selected galaxies.
    base_path : str, optional
        Simulation output folder, overriding the descriptor.
    workspace : path, optional
        Workspace folder (caches under ``<workspace>/.simcompare``).
    stamp_size : int, optional
        Stamp side [pixels]; default the survey's.
    bands : sequence of str, optional
        Subset of the survey's bands; default all.
    noise : {"survey", "sky", "none", "blank-sky"}
        Noise model (see :class:`~simcompare.mock.observe.NoiseModel`). ``blank-sky``
        inserts each noise-free stamp (plus source Poisson noise) into a real blank-sky
        field named by the survey descriptor's ``noise.blank_sky`` (see
        :mod:`simcompare.mock.blanksky`); the catalogue records ``blank_sky_field``,
        ``blank_sky_x`` and ``blank_sky_y`` (lower-left corner of the region [pixels])
        and the ImageSet gets the field's mask.
    projection : {"x", "y", "z", "face-on", "edge-on", "random"}
        Viewing direction; ``random`` is seeded per galaxy.
    redshift : float, optional
        Observation redshift; default the descriptor's ``observation_redshift``, else the
        snapshot redshift; a z < 0.01 snapshot uses the survey's ``default_redshift``.
    seed : int
        Base seed (orientation and noise per galaxy: ``default_rng([seed, object_id])``).
    workers : int
        Local worker processes (1 = in this process; more start a local dask cluster).
    scheduler : str, optional
        dask.distributed scheduler address; overrides ``workers``.
    progress : bool
        Show a progress bar.
    batch_size : int, optional
        Galaxies per task; default chosen so that each task takes ~0.1-1 s.
    dust_av : float
        V-band attenuation of a uniform Calzetti screen [mag]; default 0 (no dust).
    knn_k : int
        Neighbour rank for smoothing lengths when the simulation has none.
    max_flux_outside : float
        Exclude galaxies with more than this fraction of their light outside the stamp.
    cluster : Cluster, optional
        The workers to render on (see :mod:`simcompare.cluster`), shared with the other
        stages of a run; overrides ``workers`` and ``scheduler``.
    mask_neighbours : bool
        Run the neighbour search of ``ingest`` on every noisy stamp and replace what it
        finds by noise (default True, as ``ingest``). A mock has no neighbour, but the
        deblender also cuts bright clumps and outskirts off a galaxy; applying the same
        rule to both paths makes that a property of the pipeline, not a difference between
        the populations. The ImageSet then carries the mask (``NEIGHBOUR`` bits).
    neighbours : NeighbourConfig, optional
        Detection and deblending parameters; use the ones the observed sample was
        ingested with (default: both use :class:`~simcompare.stamps.NeighbourConfig()`).

    Returns
    -------
    Path
        ``out``.
    """
    from ..registry import as_sim, as_survey

    workspace = Path(workspace)
    sim = as_sim(sim, workspace=workspace)
    survey = as_survey(survey, workspace=workspace)
    if projection not in PROJECTIONS:
        msg = f"unknown projection {projection!r}; use one of {', '.join(PROJECTIONS)}"
        raise ConfigError(msg)
    if workers < 1:
        msg = f"workers must be at least 1, got {workers}"
        raise ConfigError(msg)
    bands = survey.select_bands(bands)
    stamp = int(stamp_size or survey.stamp_size)
    from .._io import check_output_file

    out = check_output_file(out)
    if sim.kind == "images":  # published mock images: no particles, no SPS
        from .images import render_images

        return render_images(sim, survey, out=out, workspace=workspace, stamp_size=stamp,
                             bands=bands, noise=noise, seed=seed, n_galaxies=n_galaxies,
                             progress=progress, mask_neighbours=mask_neighbours)
    filters = survey.filters_for(bands)

    from ..sims import open_reader

    reader = open_reader(sim, snapshot=snapshot, base_path=base_path, workspace=workspace,
                         progress=progress)
    z, z_source = choose_redshift(explicit=redshift, sim_observation_redshift=sim.observation_redshift,
                                  snapshot_redshift=float(reader.redshift),
                                  survey_default=survey.default_redshift)
    cosmo = reader.cosmology if getattr(reader, "cosmology", None) is not None else sim.cosmology
    camera = Camera.at_redshift(stamp_size=stamp, pixel_scale_arcsec=survey.pixel_scale_arcsec,
                                redshift=z, cosmology=cosmo)
    table = BandFluxTable.build(filters=filters, redshift=z, cosmology=cosmo,
                                zero_point=survey.zero_point, dust_av=dust_av,
                                cache_dir=workspace / ".simcompare" / "cache" / "sps")
    psf = PSF.from_survey(survey, bands=bands, workspace=workspace, kernel_size=2 * stamp + 1,
                          oversample=RENDER_OVERSAMPLE)
    noise_model = NoiseModel.from_survey(survey, bands=bands, mode=noise)
    blank_sky = (BlankSky.for_survey(survey, bands=bands, stamp_size=stamp, workspace=workspace)
                 if noise == "blank-sky" else None)
    spec = RenderSpec(bands=bands, camera=camera, table=table, psf=psf.render_kernel(),
                      noise=noise_model,
                      projection=projection, softening_kpc=sim.softening_kpc, knn_k=knn_k,
                      seed=int(seed), max_flux_outside=max_flux_outside, blank_sky=blank_sky,
                      neighbours=(neighbours or NeighbourConfig()) if mask_neighbours else None,
                      subpixel_offset=True, oversample=psf.oversample)

    selection = reader.select(n_galaxies=n_galaxies)
    ids = [int(i) for i in np.asarray(selection["object_id"])]
    config = {
        "sim": sim.name, "survey": survey.name, "snapshot": int(reader.snapshot),
        "n_galaxies": n_galaxies, "stamp_size": stamp, "bands": list(bands),
        "filters": list(filters), "noise": noise, "projection": projection,
        "observation_redshift": z, "redshift_source": z_source, "seed": int(seed),
        "dust_av": dust_av, "knn_k": knn_k, "max_flux_outside": max_flux_outside,
        "neighbours": None if spec.neighbours is None else asdict(spec.neighbours),
        "centring": "random sub-pixel offset, uniform in [-0.5, 0.5) px",
        "softening_kpc": sim.softening_kpc, "pixel_scale_arcsec": survey.pixel_scale_arcsec,
        "zero_point": survey.zero_point, "psf": psf.description, "oversample": psf.oversample,
        "light_map_margin": LIGHT_MAP_MARGIN,
        "sky_sigma": list(noise_model.sky_sigma), "gain": list(noise_model.gain),
        "cosmology": asdict(cosmo) if hasattr(cosmo, "__dataclass_fields__") else str(cosmo),
        "ids_hash": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16],
        "version": __version__,
    }
    if blank_sky is not None:
        config["blank_sky"] = blank_sky.description
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    provenance: dict[str, Any] = {
        "simcompare": __version__, "stage": "render", "config": config, "config_hash": config_hash,
        "seeds": {"render": int(seed), "per_galaxy": "numpy default_rng([seed, object_id])"},
        "observation_redshift": z, "redshift_source": z_source,
        "kpc_per_arcsec": camera.kpc_per_arcsec,
        "sps": table.meta, "filters": list(filters),
        "smoothing": {"sigma": "0.5 x max(h, softening_kpc)", "h": "simulation smoothing length "
                      f"when present, else distance to the {knn_k}th nearest neighbour (3-D); "
                      f"above {spec.knn_exact_max} particles estimated as the "
                      f"{knn_k // spec.knn_thin}th neighbour among every {spec.knn_thin}th "
                      "particle",
                      "kernel": "Gaussian integrated over pixels (erf), truncated at 3 sigma "
                                "and renormalised"},
        "psf": psf.description, "noise": {"mode": noise, "sky_sigma": list(noise_model.sky_sigma),
                                          "gain": list(noise_model.gain),
                                          "blank_sky": None if blank_sky is None
                                          else blank_sky.description},
        "pixel_response": ("counted once: the deposit integrated over sub-pixels, convolved with "
                           "the optical PSF sampled at their centres and summed onto pixels "
                           f"({psf.oversample} x {psf.oversample} sub-pixels per pixel)"
                           if psf.oversample > 1 else "counted once: pixel-integrated deposit "
                           "convolved with the optical PSF (a PSF image: its pixel response "
                           "is applied a second time)"),
        "reader_exclusions": dict(getattr(reader, "exclusions", {}) or {}),
        "preprocess": ("simcompare.stamps.preprocess_stamp(mask_neighbours=True): the neighbour "
                       "search and replacement of ingest, same parameters"
                       if spec.neighbours is not None else
                       "simcompare.stamps.preprocess_stamp(mask_neighbours=False)"),
        "not_modelled": ["IGM absorption", "nebular emission", "neighbours / intra-halo light "
                         "of other subhalos (isolated renders)"]
                        + ([] if blank_sky is not None else ["real blank-sky insertion"]),
    }

    part = out.with_name(out.name + ".part")
    resume = False
    prior_excluded: dict[str, int] = {}
    if part.exists():
        resume = _part_matches(part, config_hash)
        if not resume:
            log.warning("discarding %s: it was written with a different configuration", part)
            part.unlink()
    from ..imageset import ImageSetWriter

    writer = ImageSetWriter(out, kind="mock", survey=survey.name, bands=bands,
                            pixel_scale_arcsec=survey.pixel_scale_arcsec,
                            zero_point=survey.zero_point, stamp_size=stamp,
                            flux_unit=survey.flux_unit, with_variance=True,
                            with_mask=blank_sky is not None or spec.neighbours is not None,
                            psf=psf.image.astype(np.float32), provenance=provenance, resume=resume)
    cluster, own_cluster = as_cluster(cluster, workers=workers, scheduler=scheduler)
    try:
        done: set[int] = set()
        if resume:
            writer.truncate_to_catalog()
            done = {int(i) for i in writer.done_ids()}
            prior = part_provenance(part)
            prior_excluded = dict(prior.get("excluded_ids", {}))
            done |= {int(i) for i in prior_excluded}
            log.info("resuming %s: %d galaxies already done", part, len(done))
        todo = [i for i in ids if i not in done]
        excluded_ids: dict[str, str] = {str(k): v for k, v in prior_excluded.items()}
        if batch_size is None:
            batch_size = _auto_batch(len(todo), cluster.n_workers if cluster.distributed else 1)
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        t0 = time.perf_counter()
        n_written = len(writer)
        for res in _progress(_run_batches(batches, spec, reader, sim=sim, snapshot=snapshot,
                                          base_path=base_path, workspace=str(workspace),
                                          cluster=cluster),
                             desc="render", total=len(batches), enable=progress, unit="batch"):
            if res.images is not None:
                cat = _rows_to_columns(res.rows, writer)
                writer.append(res.images, catalog=cat, variance=res.variance, mask=res.mask)
                n_written += len(res.ids)
            excluded_ids.update({str(k): v for k, v in res.excluded.items()})
            provenance["excluded_ids"] = excluded_ids
            provenance["exclusions"] = dict(Counter(excluded_ids.values()))
            writer.set_provenance(provenance)
        provenance["n_rendered"] = n_written
        provenance["n_selected"] = len(ids)
        provenance["exclusions"] = dict(Counter(excluded_ids.values()))
        provenance["timings_s"] = {"render": time.perf_counter() - t0}
        if n_written == 0:
            writer.abort()
            part.unlink(missing_ok=True)  # nothing to resume
            where = getattr(reader, "base_path", None) or sim.name
            msg = (f"no galaxy of {sim.name} snapshot {int(reader.snapshot)} ({where}) could be "
                   f"rendered: {explain_exclusions(provenance['exclusions'], sim)}")
            raise SimcompareError(msg)
        writer.set_provenance(provenance)
    except BaseException:
        writer.abort()
        raise
    finally:
        if own_cluster:
            cluster.close()
    writer.close()
    log.info("rendered %d galaxies into %s (excluded: %s)", n_written, out,
             provenance["exclusions"])
    return out


def _auto_batch(n: int, workers: int) -> int:
    # ~20-50 ms per galaxy: 8-32 galaxies per task keeps tasks >= ~0.2 s while giving
    # every worker several tasks.
    if n <= 0:
        return 1
    per_worker = max(1, math.ceil(n / max(1, workers * 4)))
    return int(min(32, max(8, per_worker)))


def _rows_to_columns(rows: list[dict[str, Any]], writer: Any) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    existing = None
    if len(writer):
        existing = set(writer._f["catalog"].keys())
        keys = [k for k in keys if k in existing] + [k for k in existing if k not in keys]
    cols: dict[str, np.ndarray] = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if all(isinstance(v, str) for v in vals if v is not None) and any(
                isinstance(v, str) for v in vals):
            cols[k] = np.asarray(["" if v is None else v for v in vals], dtype=object)
        elif k == "object_id" or all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                                      for v in vals):
            cols[k] = np.asarray(vals, np.int64)
        else:
            cols[k] = np.asarray([np.nan if v is None else float(v) for v in vals], np.float64)
    return cols


def _part_matches(part: Path, config_hash: str) -> bool:
    prov = part_provenance(part)
    return prov.get("config_hash") == config_hash


def _run_batches(
    batches: list[list[int]], spec: RenderSpec, reader: Any, *, sim: SimDescriptor,
    snapshot: int | None, base_path: str | None, workspace: str, cluster: Cluster,
) -> Iterator[_BatchResult]:
    """Yield batch results in submission order, with a bounded number in flight."""
    if not batches:
        return
    if not cluster.distributed:
        for ids in batches:
            yield _render_batch(reader.galaxies(ids), spec, expected=ids, reader=reader)
        return
    rargs = _ReaderArgs(sim=sim, snapshot=snapshot, base_path=base_path, workspace=workspace)
    yield from cluster.map(_render_batch_from_reader, batches, rargs, spec, name="render")
