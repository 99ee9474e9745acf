"""Simulation readers: star particles in physical units, one galaxy at a time.

:func:`open_reader` turns a simulation descriptor into a :class:`SimReader`:

``reader = "tng"``
    IllustrisTNG / Illustris basePath through ``illustris_python``
    (:class:`~simcompare.sims.tng.TNGReader`).
``reader = "tng-api"``
    A folder of web-API subhalo cutouts written by :func:`simcompare.sims.tng_api.fetch`
    (:class:`~simcompare.sims.tng_api.TNGAPIReader`).
``reader = "eagle"``
    EAGLE particledata + subfind files (:class:`~simcompare.sims.eagle.EagleReader`).
``reader = "demo"``
    The synthetic population of :mod:`simcompare.sims.demo`, written once in the TNG
    layout into ``<workspace>/.simcompare/sims/demo-<hash>/`` and read by the TNG reader.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from ..config import SimDescriptor
from ..errors import ConfigError, RangeError
from .base import Galaxy, SimReader, StarParticles

__all__ = ["Galaxy", "SimReader", "StarParticles", "ensure_demo", "input_files", "open_reader",
           "resolve_base_path"]

log = logging.getLogger(__name__)


def _env_name(name: str) -> str:
    return "SIMCOMPARE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_PATH"


def resolve_base_path(
    sim: SimDescriptor, *, base_path: str | os.PathLike | None = None,
    workspace: str | os.PathLike = ".",
) -> Path:
    """Where the simulation's data lives.

    Order: the explicit ``base_path`` (``--base-path``), the environment variable
    ``SIMCOMPARE_<NAME>_PATH`` (e.g. ``SIMCOMPARE_TNG100_PATH``), then the descriptor's
    ``base_path`` (relative paths there are relative to the workspace).

    Parameters
    ----------
    sim : SimDescriptor
        The simulation.
    base_path : str or os.PathLike, optional
        Explicit data folder; wins over everything else.
    workspace : str or os.PathLike, optional
        Folder against which a relative descriptor ``base_path`` resolves (default ``"."``).

    Returns
    -------
    Path
        The data folder (not checked for existence).
    """
    if base_path:
        return Path(base_path).expanduser()
    env = _env_name(sim.name)
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    if sim.base_path:
        p = Path(sim.base_path).expanduser()
        return p if p.is_absolute() else Path(workspace) / p
    where = sim.source or f"sims/{sim.name}.toml"
    msg = (f"no data folder for simulation {sim.name!r}: pass --base-path, set {env}, or set "
           f"base_path in {where}")
    raise ConfigError(msg)


def ensure_demo(sim: SimDescriptor, *, workspace: str | os.PathLike = ".") -> Path:
    """Write the demo simulation into the workspace cache once; return its basePath.

    The folder ``<workspace>/.simcompare/sims/demo-<hash>/`` is keyed by a hash of the
    ``[demo]`` table, the cosmology, box size, softening and the writer version. It is
    written under a temporary name and renamed into place when complete, so an
    interrupted run never leaves a half-written demo behind.
    """
    from .demo import demo_key, write_demo_sim

    box = sim.box_size_ckpc_h or 75000.0
    key = demo_key(sim.demo, cosmology=sim.cosmology, box_size_ckpc_h=box,
                   softening_kpc=sim.softening_kpc)
    cache = Path(workspace) / ".simcompare" / "sims"
    final = cache / f"demo-{key}"
    marker = final / "COMPLETE"
    if marker.is_file():
        return final / "output"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".demo-{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        log.info("writing the demo simulation into %s", final)
        write_demo_sim(tmp, sim.demo, cosmology=sim.cosmology, box_size_ckpc_h=box,
                       softening_kpc=sim.softening_kpc)
        (tmp / "COMPLETE").write_text(json.dumps({"key": key}))
        if final.exists() and not marker.is_file():
            shutil.rmtree(final)  # left over by an older, interrupted layout
        try:
            os.rename(tmp, final)
        except OSError:
            if not marker.is_file():  # someone else finished first otherwise
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "output"


def open_reader(
    sim: SimDescriptor | str,
    *,
    snapshot: int | None = None,
    base_path: str | os.PathLike | None = None,
    workspace: str | os.PathLike = ".",
    progress: bool = False,
) -> SimReader:
    """Open the reader the descriptor names.

    Parameters
    ----------
    sim : SimDescriptor or str
        A descriptor or its name (looked up in ``<workspace>/sims`` first, then the
        built-in ones).
    snapshot : int, optional
        Snapshot number; defaults to the descriptor's ``default_snapshot`` (the demo's
        ``[demo] snapshot``).
    base_path : path, optional
        Overrides the descriptor's data folder (see :func:`resolve_base_path`).
    workspace : path
        The workspace folder (caches live in ``<workspace>/.simcompare``).
    progress : bool
        Show progress bars.
    """
    from ..registry import as_sim

    sim = as_sim(sim, workspace=workspace)
    if sim.reader == "demo":
        from .tng import TNGReader

        snap = sim.demo.snapshot if snapshot is None else int(snapshot)
        if snap != sim.demo.snapshot:
            msg = (f"the demo simulation has only snapshot {sim.demo.snapshot}; "
                   f"got snapshot {snap}")
            raise RangeError(msg, value=snap, min=sim.demo.snapshot, max=sim.demo.snapshot)
        bp = Path(base_path) if base_path else ensure_demo(sim, workspace=workspace)
        return TNGReader(bp, snapshot=snap, selection=sim.selection, name=sim.name,
                         cosmology=sim.cosmology, progress=progress)
    snap = snapshot if snapshot is not None else sim.default_snapshot
    if snap is None:
        msg = (f"simulation {sim.name!r} has no default_snapshot; pass --snapshot "
               f"(known: {list(sim.snapshots)})")
        raise ConfigError(msg)
    bp = resolve_base_path(sim, base_path=base_path, workspace=workspace)
    if sim.reader == "tng":
        from .tng import TNGReader

        return TNGReader(bp, snapshot=int(snap), selection=sim.selection, name=sim.name,
                         cosmology=sim.cosmology, progress=progress)
    if sim.reader == "tng-api":
        from .tng_api import TNGAPIReader

        return TNGAPIReader(bp, snapshot=int(snap), selection=sim.selection, name=sim.name,
                            cosmology=sim.cosmology, box_size_ckpc_h=sim.box_size_ckpc_h,
                            progress=progress)
    if sim.reader == "eagle":
        from .eagle import EagleReader

        return EagleReader(bp, snapshot=int(snap), selection=sim.selection, name=sim.name,
                           cosmology=sim.cosmology, progress=progress)
    msg = f"unknown reader {sim.reader!r} for simulation {sim.name!r}"
    raise ConfigError(msg)


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def input_files(
    sim: SimDescriptor, *, snapshot: int | None = None, base_path: str | os.PathLike | None = None,
    workspace: str | os.PathLike = ".",
) -> list[tuple[Path, bool]]:
    """The files a reader of ``sim`` reads for one snapshot, for the render stage's cache key.

    TNG (and the demo, whose TNG-layout files are written first with :func:`ensure_demo`):
    the group-catalogue and snapshot chunks and the offsets file; EAGLE: the subfind and
    particledata files of the snapshot's tag; web-API cutouts: every cutout and record of
    the folder.

    Parameters
    ----------
    sim : SimDescriptor
        The simulation.
    snapshot : int, optional
        Snapshot number (default the descriptor's ``default_snapshot``).
    base_path : str or os.PathLike, optional
        Explicit data folder (see :func:`resolve_base_path`).
    workspace : str or os.PathLike, optional
        Workspace folder (default ``"."``).

    Returns
    -------
    list of (Path, bool)
        Each file and whether it is hashed in full (JSON records), else by its headers,
        size and modification time (see :mod:`simcompare._fingerprint`).
    """
    if getattr(sim, "kind", None) == "images":
        return []  # the image files are fingerprinted by the render stage itself
    if sim.reader == "demo":
        bp = Path(base_path) if base_path else ensure_demo(sim, workspace=workspace)
        snap = sim.demo.snapshot if snapshot is None else int(snapshot)
    else:
        snap = snapshot if snapshot is not None else sim.default_snapshot
        if snap is None:
            return []  # open_reader says what to pass
        bp = resolve_base_path(sim, base_path=base_path, workspace=workspace)
    snap = int(snap)
    if sim.reader in ("tng", "demo"):
        files = (_files(bp / f"groups_{snap:03d}", "*.hdf5") + _files(bp / f"snapdir_{snap:03d}", "*.hdf5")
                 + _files(bp.parent / "postprocessing" / "offsets", f"offsets_{snap:03d}.hdf5"))
        return [(p, False) for p in files]
    if sim.reader == "eagle":
        files = (_files(bp, f"groups_{snap:03d}_z*/*.hdf5")
                 + _files(bp, f"particledata_{snap:03d}_z*/*.hdf5"))
        return [(p, False) for p in files]
    if sim.reader == "tng-api":
        return [(p, False) for p in _files(bp, "*.hdf5")] + [(p, True) for p in _files(bp, "*.json")]
    return []
