"""Write catalogue and star-particle arrays in the IllustrisTNG (or Illustris-1) on-disk layout.

Used by the demo simulation, the tests and the benchmarks to build basePaths that
``illustris_python`` reads exactly as it reads a real run. Arrays are given in code
units and in Subfind order (FoF groups in order; inside a group its subhalos in order,
then the group's inner fuzz; the outer fuzz last); the offsets are derived from
``GroupLenType``, ``GroupFirstSub``, ``GroupNsubs`` and ``SubhaloLenType``.

Layouts (``naming``):

``"tng"``
    ``output/groups_NNN/fof_subhalo_tab_NNN.<M>.hdf5``, ``output/snapdir_NNN/snap_NNN.<M>.hdf5``
    and ``postprocessing/offsets/offsets_NNN.hdf5``.
``"illustris"``
    ``output/groups_NNN/groups_NNN.<M>.hdf5`` with the chunk offsets in the catalogue
    header (``FileOffsets_Subhalo``, ``FileOffsets_Group``, ``FileOffsets_Snap``) and
    ``Offsets/Subhalo_SnapByType`` in every chunk; no separate offsets file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataFormatError

__all__ = ["subfind_offsets", "write_tng_layout"]

_UNIT_ATTRS = {"UnitLength_in_cm": 3.085678e21, "UnitMass_in_g": 1.989e43,
               "UnitVelocity_in_cm_per_s": 1e5}


def subfind_offsets(
    group_len: np.ndarray, group_first_sub: np.ndarray, group_nsubs: np.ndarray,
    subhalo_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """First particle index of every group and subhalo (one particle type), Subfind order.

    Parameters
    ----------
    group_len : ndarray of int
        Particles of the type in each FoF group.
    group_first_sub : ndarray of int
        Index of each group's first subhalo (-1 when it has none).
    group_nsubs : ndarray of int
        Number of subhalos of each group.
    subhalo_len : ndarray of int
        Particles of the type in each subhalo.

    Returns
    -------
    group_offsets, subhalo_offsets : ndarray of int64
    """
    group_len = np.asarray(group_len, dtype=np.int64)
    subhalo_len = np.asarray(subhalo_len, dtype=np.int64)
    g_off = np.concatenate([[0], np.cumsum(group_len)[:-1]]).astype(np.int64)
    s_off = np.zeros(len(subhalo_len), np.int64)
    for g, (first, n) in enumerate(zip(group_first_sub, group_nsubs, strict=True)):
        if n <= 0 or first < 0:
            continue
        lens = subhalo_len[first:first + n]
        s_off[first:first + n] = g_off[g] + np.concatenate([[0], np.cumsum(lens)[:-1]])
    return g_off, s_off


def _split(n: int, n_chunks: int, *, empty_chunk: int | None) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges; ``empty_chunk`` (if any) gets nothing."""
    full = [c for c in range(n_chunks) if c != empty_chunk]
    cuts = np.linspace(0, n, len(full) + 1).round().astype(int)
    bounds, k = [], 0
    for c in range(n_chunks):
        if c == empty_chunk:
            bounds.append((int(cuts[k]), int(cuts[k])))
        else:
            bounds.append((int(cuts[k]), int(cuts[k + 1])))
            k += 1
    return bounds


def write_tng_layout(
    root: str | Path,
    *,
    snapshot: int,
    header: Mapping[str, float],
    subhalos: Mapping[str, np.ndarray],
    groups: Mapping[str, np.ndarray],
    stars: Mapping[str, np.ndarray],
    n_groupcat_chunks: int = 3,
    snapshot_cuts: Sequence[float] = (0.37, 0.71),
    naming: str = "tng",
    parameters: Mapping[str, float] | None = None,
) -> Path:
    """Write a TNG-layout basePath below ``root`` and return ``<root>/output``.

    Parameters
    ----------
    root : path
        Simulation folder; receives ``output/`` (and ``postprocessing/`` for ``"tng"``).
    snapshot : int
        Snapshot number (zero-padded to three digits in file names).
    header : mapping
        Cosmology/time attributes shared by all headers: ``BoxSize`` [ckpc/h],
        ``HubbleParam``, ``Omega0``, ``OmegaLambda``, ``OmegaBaryon``, ``Redshift``, ``Time``.
    subhalos, groups : mapping of str to ndarray
        ``Subhalo/*`` and ``Group/*`` datasets over all rows. ``SubhaloLenType``,
        ``GroupLenType``, ``GroupFirstSub`` and ``GroupNsubs`` are required.
    stars : mapping of str to ndarray
        ``PartType4/*`` datasets over all star particles (and wind cells), Subfind order.
    n_groupcat_chunks : int
        Number of catalogue chunks; with 3 or more, chunk 1 is left empty (as many real
        TNG chunks are).
    snapshot_cuts : sequence of float
        Fractions of the particle list where snapshot chunks end (chunks = len + 1).
    naming : {"tng", "illustris"}
        File naming and offset convention (see the module docstring).
    parameters : mapping, optional
        Attributes of the catalogue's ``Parameters`` group (e.g. softenings).
    """
    if naming not in ("tng", "illustris"):
        msg = f"naming must be 'tng' or 'illustris', got {naming!r}"
        raise DataFormatError(msg)
    for key in ("SubhaloLenType",):
        if key not in subhalos:
            msg = f"subhalos needs {key!r}"
            raise DataFormatError(msg)
    for key in ("GroupLenType", "GroupFirstSub", "GroupNsubs"):
        if key not in groups:
            msg = f"groups needs {key!r}"
            raise DataFormatError(msg)
    root = Path(root)
    out = root / "output"
    n_star = len(next(iter(stars.values())))
    ns = len(subhalos["SubhaloLenType"])
    ng = len(groups["GroupLenType"])
    g_off, s_off = subfind_offsets(groups["GroupLenType"][:, 4], groups["GroupFirstSub"],
                                   groups["GroupNsubs"], subhalos["SubhaloLenType"][:, 4])
    if ng and g_off[-1] + groups["GroupLenType"][-1, 4] > n_star:
        msg = "GroupLenType sums to more star particles than were given"
        raise DataFormatError(msg)
    g_off6 = np.zeros((ng, 6), np.int64)
    g_off6[:, 4] = g_off
    s_off6 = np.zeros((ns, 6), np.int64)
    s_off6[:, 4] = s_off

    # --- snapshot chunks -------------------------------------------------------
    cuts = [0, *(int(f * n_star) for f in snapshot_cuts), n_star]
    n_snap = len(cuts) - 1
    snap_first = np.zeros((n_snap, 6), np.int64)
    snap_first[:, 4] = cuts[:-1]
    total = np.zeros(6, np.uint32)
    total[4] = np.uint32(n_star & 0xFFFFFFFF)
    high = np.zeros(6, np.uint32)
    high[4] = np.uint32(n_star >> 32)
    folder = out / f"snapdir_{snapshot:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(n_snap):
        lo, hi = cuts[c], cuts[c + 1]
        this = np.zeros(6, np.int32)
        this[4] = hi - lo
        with h5py.File(folder / f"snap_{snapshot:03d}.{c}.hdf5", "w") as f:
            hd = f.create_group("Header")
            hd.attrs.update(header)
            hd.attrs.update(_UNIT_ATTRS)
            hd.attrs["NumPart_ThisFile"] = this
            hd.attrs["NumPart_Total"] = total  # uint32 + HighWord, as TNG writes them
            hd.attrs["NumPart_Total_HighWord"] = high
            hd.attrs["NumFilesPerSnapshot"] = np.int32(n_snap)
            hd.attrs["MassTable"] = np.zeros(6)
            for flag in ("Flag_Sfr", "Flag_Cooling", "Flag_StellarAge", "Flag_Metals",
                         "Flag_Feedback", "Flag_DoublePrecision"):
                hd.attrs[flag] = np.int32(1)
            hd.attrs["Git_commit"] = np.bytes_(b"simcompare")
            f.create_group("Config")
            f.create_group("Parameters")
            if hi > lo:  # a chunk without stars has no PartType4 group at all
                pt = f.create_group("PartType4")
                for name, arr in stars.items():
                    pt.create_dataset(name, data=arr[lo:hi])

    # --- group-catalogue chunks -------------------------------------------------
    empty = 1 if n_groupcat_chunks >= 3 else None
    g_bounds = _split(ng, n_groupcat_chunks, empty_chunk=empty)
    s_bounds = _split(ns, n_groupcat_chunks, empty_chunk=empty)
    folder = out / f"groups_{snapshot:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    stem = "fof_subhalo_tab" if naming == "tng" else "groups"
    for c in range(n_groupcat_chunks):
        (g0, g1), (s0, s1) = g_bounds[c], s_bounds[c]
        with h5py.File(folder / f"{stem}_{snapshot:03d}.{c}.hdf5", "w") as f:
            hd = f.create_group("Header")
            hd.attrs.update({k: v for k, v in header.items() if k != "OmegaBaryon"})
            hd.attrs.update({
                "Ngroups_ThisFile": np.int32(g1 - g0), "Ngroups_Total": np.int32(ng),
                "Nsubgroups_ThisFile": np.int32(s1 - s0), "Nsubgroups_Total": np.int32(ns),
                "Nids_ThisFile": np.int32(0), "Nids_Total": np.int32(0),
                "NumFiles": np.int32(n_groupcat_chunks), "FlagDoubleprecision": np.int32(0),
                "Git_commit": np.bytes_(b"simcompare"),
            })
            if naming == "illustris":
                hd.attrs["FileOffsets_Group"] = np.array([b[0] for b in g_bounds], np.int64)
                hd.attrs["FileOffsets_Subhalo"] = np.array([b[0] for b in s_bounds], np.int64)
                hd.attrs["FileOffsets_Snap"] = snap_first.T.copy()  # (6, n_snap) here
                off = f.create_group("Offsets")
                off.create_dataset("Subhalo_SnapByType", data=s_off6[s0:s1])
                off.create_dataset("Group_SnapByType", data=g_off6[g0:g1])
            f.create_group("Config")
            par = f.create_group("Parameters")
            par.attrs.update(parameters or {})
            f.create_group("IDs")
            gg, sg = f.create_group("Group"), f.create_group("Subhalo")
            if g1 > g0:
                for name, arr in groups.items():
                    gg.create_dataset(name, data=arr[g0:g1])
            if s1 > s0:
                for name, arr in subhalos.items():
                    sg.create_dataset(name, data=arr[s0:s1])

    # --- offsets file (TNG naming only) --------------------------------------------
    if naming == "tng":
        folder = root / "postprocessing" / "offsets"
        folder.mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / f"offsets_{snapshot:03d}.hdf5", "w") as f:
            f["FileOffsets/Group"] = np.array([b[0] for b in g_bounds], np.int64)
            f["FileOffsets/Subhalo"] = np.array([b[0] for b in s_bounds], np.int64)
            f["FileOffsets/SnapByType"] = snap_first  # (n_snap, 6); illustris_python transposes
            f["Group/SnapByType"] = g_off6
            f["Subhalo/SnapByType"] = s_off6
    return out
