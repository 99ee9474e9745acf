"""Where a TNG or Illustris basePath keeps its files, and the check made once before any read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from ..errors import DataFormatError, DataNotFoundError
from .units import (
    TNG_STAR_FIELDS,
)

log = logging.getLogger(__name__)


#: Group-catalogue fields the reader needs (SubhaloFlag and SubhaloWindMass are optional:
#: Illustris-1 has neither).
CATALOGUE_FIELDS = ("SubhaloMassType", "SubhaloMassInRadType", "SubhaloLenType",
                    "SubhaloHalfmassRadType", "SubhaloSFR", "SubhaloGrNr", "SubhaloPos")


_OPTIONAL_CATALOGUE_FIELDS = ("SubhaloFlag", "SubhaloWindMass")


#: The 20 full TNG snapshots; the others are "mini" snapshots without most GFM fields.
FULL_SNAPSHOTS_TNG = (2, 3, 4, 6, 8, 11, 13, 17, 21, 25, 33, 40, 50, 59, 67, 72, 78, 84, 91, 99)


_DOWNLOAD_HINT = ("download them from https://www.tng-project.org/data/ (group catalogue, "
                  "snapshot chunks and postprocessing/offsets) and point base_path at the "
                  "run's output/ folder")


def groupcat_path(base_path: str | Path, snapshot: int, chunk: int) -> Path:
    """Path of a group-catalogue chunk (Illustris ``groups_`` or TNG ``fof_subhalo_tab_``).

    Parameters
    ----------
    base_path : str or Path
        The simulation's ``output`` folder.
    snapshot : int
        Snapshot number.
    chunk : int
        Chunk number.

    Returns
    -------
    Path
        The chunk's path, whichever naming exists (TNG's when neither does).
    """
    folder = Path(base_path) / f"groups_{snapshot:03d}"
    old = folder / f"groups_{snapshot:03d}.{chunk}.hdf5"
    return old if old.is_file() else folder / f"fof_subhalo_tab_{snapshot:03d}.{chunk}.hdf5"


def snapshot_path(base_path: str | Path, snapshot: int, chunk: int) -> Path:
    """Path of a snapshot chunk (``snap_`` or the older ``snapshot_`` naming).

    Parameters
    ----------
    base_path : str or Path
        The simulation's ``output`` folder.
    snapshot : int
        Snapshot number.
    chunk : int
        Chunk number.

    Returns
    -------
    Path
        The ``snap_`` path, or the older ``snapshot_`` one when only that exists.
    """
    folder = Path(base_path) / f"snapdir_{snapshot:03d}"
    new = folder / f"snap_{snapshot:03d}.{chunk}.hdf5"
    old = folder / f"snapshot_{snapshot:03d}.{chunk}.hdf5"
    return old if old.is_file() and not new.is_file() else new


def _ranges(values: Sequence[int]) -> str:
    """Compress [1, 2, 3, 7] into '1-3, 7'."""
    out, start, prev = [], None, None
    for v in [*values, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(out)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class TNGLayout:
    """What :func:`preflight_tng` found in a basePath."""

    base_path: Path
    snapshot: int
    naming: str  # "tng" (fof_subhalo_tab + offsets file) or "illustris" (groups_ + header offsets)
    groupcat_chunks: tuple[Path, ...]
    snapshot_chunks: tuple[Path, ...]
    offsets: Path | None
    header: dict[str, Any] = field(default_factory=dict)  # snapshot chunk 0 Header
    star_fields: tuple[str, ...] = ()


def preflight_tng(
    base_path: str | Path,
    snapshot: int,
    *,
    required_fields: Sequence[str] = TNG_STAR_FIELDS,
    check_files: bool = True,
) -> TNGLayout:
    """Check a TNG/Illustris basePath before reading and describe its layout.

    Parameters
    ----------
    base_path : path
        The run's ``output/`` folder.
    snapshot : int
        Snapshot number.
    required_fields : sequence of str
        ``PartType4`` datasets that must exist.
    check_files : bool
        Open every chunk (catches truncated or corrupt downloads).

    Raises
    ------
    DataNotFoundError
        When anything is missing: one message lists every missing piece.
    DataFormatError
        When every file is there but some do not open or lack required fields.
    """
    bp = Path(base_path)
    if not bp.is_dir():
        msg = (f"simulation basePath {bp} does not exist; set base_path in the descriptor, "
               "the SIMCOMPARE_<SIM>_PATH environment variable or --base-path to the run's "
               "output/ folder")
        raise DataNotFoundError(msg)
    missing: list[str] = []
    bad: list[str] = []
    header: dict[str, Any] = {}

    gc0 = groupcat_path(bp, snapshot, 0)
    naming = "illustris" if gc0.name.startswith("groups_") else "tng"
    gc_paths: list[Path] = []
    if not gc0.is_file():
        missing.append(f"group catalogue {gc0} (no chunk 0 in {gc0.parent})")
    else:
        try:
            with h5py.File(gc0, "r") as f:
                n_gc = int(f["Header"].attrs["NumFiles"])
            gc_paths = [groupcat_path(bp, snapshot, i) for i in range(n_gc)]
        except (OSError, KeyError) as exc:
            bad.append(f"{gc0} does not open as a group catalogue ({_short(exc)}); download it again")
    gone = [i for i, p in enumerate(gc_paths) if not p.is_file()]
    if gone:
        missing.append(f"group-catalogue chunks {_ranges(gone)} of {len(gc_paths)} in "
                       f"{gc0.parent} (e.g. {gc_paths[gone[0]].name})")

    sn0 = snapshot_path(bp, snapshot, 0)
    sn_paths: list[Path] = []
    if not sn0.is_file():
        missing.append(f"snapshot {sn0} (no chunk 0 in {sn0.parent})")
    else:
        try:
            with h5py.File(sn0, "r") as f:
                header = dict(f["Header"].attrs)
            sn_paths = [snapshot_path(bp, snapshot, i)
                        for i in range(int(header["NumFilesPerSnapshot"]))]
        except (OSError, KeyError) as exc:
            bad.append(f"{sn0} does not open as a snapshot chunk ({_short(exc)}); download it again")
    gone = [i for i, p in enumerate(sn_paths) if not p.is_file()]
    if gone:
        missing.append(f"snapshot chunks {_ranges(gone)} of {len(sn_paths)} in {sn0.parent} "
                       f"(e.g. {sn_paths[gone[0]].name})")

    offsets = None
    if naming == "tng":
        offsets = bp.parent / "postprocessing" / "offsets" / f"offsets_{snapshot:03d}.hdf5"
        if not offsets.is_file():
            missing.append(f"offsets file {offsets} (postprocessing/offsets, a separate "
                           "download beside output/)")

    present = [p for p in [*gc_paths, *sn_paths, *([offsets] if offsets else [])]
               if p.is_file()]
    if check_files:
        for p in present:
            try:
                with h5py.File(p, "r"):
                    pass
            except OSError as exc:
                bad.append(f"{p} is corrupt or truncated ({_short(exc)}); download it again")

    star_fields: tuple[str, ...] = ()
    for p in sn_paths:
        if not p.is_file():
            continue
        try:
            with h5py.File(p, "r") as f:
                if "PartType4" not in f:
                    continue
                star_fields = tuple(f["PartType4"].keys())
        except OSError:
            continue
        lacking = [x for x in required_fields if x not in star_fields]
        if lacking:
            mini = (f" (snapshot {snapshot} is a mini snapshot; full snapshots are "
                    f"{', '.join(map(str, FULL_SNAPSHOTS_TNG))})"
                    if naming == "tng" and snapshot not in FULL_SNAPSHOTS_TNG else "")
            fix = ("use a snapshot that has them" if mini
                   else "the file is incomplete: download it again")
            bad.append(f"{p} has no PartType4 field(s) {lacking}{mini}; {fix}")
        break
    else:
        if sn_paths and not missing:
            bad.append(f"no chunk of snapshot {snapshot} in {sn0.parent} holds star "
                       "particles (PartType4)")

    if missing or bad:
        pieces = "; ".join(missing + bad)
        if missing:
            msg = f"basePath {bp} snapshot {snapshot} is incomplete: missing {pieces}; {_DOWNLOAD_HINT}"
            raise DataNotFoundError(msg)
        msg = f"basePath {bp} snapshot {snapshot} has unreadable data: {pieces}"
        raise DataFormatError(msg)
    return TNGLayout(bp, snapshot, naming, tuple(gc_paths), tuple(sn_paths), offsets, header,
                     star_fields)
