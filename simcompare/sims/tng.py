"""IllustrisTNG / Illustris reader: group-catalogue selection, per-subhalo star particles.

The catalogue is scanned chunk by chunk with h5py (memory stays bounded for TNG300's
15 million subhalos, and empty chunks are skipped); star particles are loaded one
subhalo at a time through ``illustris_python.snapshot.loadSubhalo``. Code units are
converted in :func:`simcompare.sims.units.tng_to_physical` only.

A basePath is checked once before any work (:func:`preflight_tng`): every missing
catalogue chunk, snapshot chunk or offsets file, every file that does not open
(truncated downloads), and missing star fields (mini snapshots) are listed in one
message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .._progress import progress as _progress
from ..config import Cosmology, SelectionConfig
from ..errors import ConfigError, DataFormatError, RangeError
from .base import Galaxy, SimReader, apply_selection, select_rows
from .tng_layout import (
    _OPTIONAL_CATALOGUE_FIELDS,
    CATALOGUE_FIELDS,
    FULL_SNAPSHOTS_TNG,
    TNGLayout,
    _short,
    groupcat_path,
    preflight_tng,
    snapshot_path,
)
from .units import (
    TNG_HSML_FIELDS,
    TNG_STAR_FIELDS,
    conversion_table,
    tng_star_particles,
    tng_to_physical,
)

log = logging.getLogger(__name__)


__all__ = [
    "CATALOGUE_FIELDS",
    "FULL_SNAPSHOTS_TNG",
    "TNGLayout",
    "TNGReader",
    "apply_selection",
    "groupcat_path",
    "preflight_tng",
    "read_groupcat_chunk",
    "select_rows",
    "snapshot_path",
    "subhalo_table",
]


_SELECT_REASONS = ("subhalo_flag", "too_few_star_particles")


def read_groupcat_chunk(
    path: str | Path,
    fields: Sequence[str],
    *,
    optional: Sequence[str] = (),
    group: str = "Subhalo",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read raw datasets of one group-catalogue chunk (code units).

    Parameters
    ----------
    path : path
        A ``fof_subhalo_tab_NNN.M.hdf5`` or ``groups_NNN.M.hdf5`` file.
    fields : sequence of str
        Datasets that must exist in ``group`` (unless the chunk is empty).
    optional : sequence of str
        Datasets read when present.
    group : {"Subhalo", "Group"}

    Returns
    -------
    header : dict
        The chunk's Header attributes.
    data : dict of str to ndarray
        Empty for an empty chunk (real TNG chunks with no objects hold no datasets).
    """
    count_key = "Nsubgroups_ThisFile" if group == "Subhalo" else "Ngroups_ThisFile"
    try:
        with h5py.File(path, "r") as f:
            header = dict(f["Header"].attrs)
            if int(header.get(count_key, 0)) == 0:
                return header, {}
            grp = f[group]
            lacking = [x for x in fields if x not in grp]
            if lacking:
                msg = (f"{path}: {group} lacks field(s) {lacking}; this is not a complete "
                       "group-catalogue chunk, download it again")
                raise DataFormatError(msg)
            data = {x: grp[x][()] for x in [*fields, *(o for o in optional if o in grp)]}
    except (OSError, KeyError) as exc:
        msg = f"{path}: cannot read the group catalogue ({_short(exc)}); download the chunk again"
        raise DataFormatError(msg) from None
    return header, data


def subhalo_table(
    data: dict[str, np.ndarray],
    *,
    first_id: int,
    snapshot: int,
    redshift: float,
    scale_factor: float,
    h: float,
    mass_definition: str = "in_rad",
) -> pd.DataFrame:
    """Physical catalogue columns from raw ``Subhalo`` datasets of consecutive rows.

    Columns: ``object_id`` (subhalo id), ``snapshot``, ``redshift``,
    ``stellar_mass_msun`` (per ``mass_definition``), ``half_mass_radius_kpc`` (stellar),
    ``sfr_msun_per_yr``, ``n_star_particles`` (``SubhaloLenType[4]``, wind cells
    included), ``stellar_mass_total_msun``, ``stellar_mass_in_rad_msun``
    (within 2 stellar half-mass radii), ``wind_mass_msun`` (NaN when unknown),
    ``group_id`` and ``subhalo_flag`` (True where the field is absent).

    Parameters
    ----------
    data : dict of str to ndarray
        Raw ``Subhalo`` datasets (code units) of consecutive rows.
    first_id : int
        Subhalo id of the first row.
    snapshot : int
        Snapshot number.
    redshift : float
        Snapshot redshift.
    scale_factor : float
        Snapshot scale factor a.
    h : float
        Dimensionless Hubble parameter.
    mass_definition : {"in_rad", "total"}, optional
        Which stellar mass fills ``stellar_mass_msun`` (default ``"in_rad"``).

    Returns
    -------
    pandas.DataFrame
        One row per subhalo, the columns above.
    """
    if mass_definition not in ("in_rad", "total"):
        msg = f"[selection] mass_definition must be 'in_rad' or 'total', got {mass_definition!r}"
        raise ConfigError(msg)
    conv = {"scale_factor": scale_factor, "h": h}
    n = len(data["SubhaloLenType"])
    total = tng_to_physical("SubhaloMassType", data["SubhaloMassType"][:, 4], **conv)
    in_rad = tng_to_physical("SubhaloMassInRadType", data["SubhaloMassInRadType"][:, 4], **conv)
    wind = (tng_to_physical("SubhaloMassType", data["SubhaloWindMass"], **conv)
            if "SubhaloWindMass" in data else np.full(n, np.nan))
    flag = (np.asarray(data["SubhaloFlag"]).astype(bool) if "SubhaloFlag" in data
            else np.ones(n, bool))
    return pd.DataFrame({
        "object_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "snapshot": np.full(n, snapshot, np.int64),
        "redshift": np.full(n, redshift, np.float64),
        "stellar_mass_msun": in_rad if mass_definition == "in_rad" else total,
        "half_mass_radius_kpc": tng_to_physical(
            "SubhaloHalfmassRadType", data["SubhaloHalfmassRadType"][:, 4], **conv),
        "sfr_msun_per_yr": tng_to_physical("SubhaloSFR", data["SubhaloSFR"], **conv),
        "n_star_particles": np.asarray(data["SubhaloLenType"][:, 4], np.int64),
        "stellar_mass_total_msun": total,
        "stellar_mass_in_rad_msun": in_rad,
        "wind_mass_msun": wind,
        "group_id": np.asarray(data["SubhaloGrNr"], np.int64),
        "subhalo_flag": flag,
    })


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class TNGReader(SimReader):
    """Read an IllustrisTNG or Illustris basePath (``<run>/output``).

    Parameters
    ----------
    base_path : path
        The run's ``output/`` folder.
    snapshot : int
        Snapshot number.
    selection : SelectionConfig
        Catalogue cuts (physical Msun); see :meth:`select`.
    name : str
        Simulation name, for messages.
    cosmology : Cosmology, optional
        The descriptor's cosmology; the data's own header wins (a mismatch is logged).
    progress : bool
        Show progress bars.
    check_files : bool
        Open every chunk during the preflight check.
    """

    def __init__(
        self,
        base_path: str | Path,
        *,
        snapshot: int,
        selection: SelectionConfig | None = None,
        name: str = "tng",
        cosmology: Cosmology | None = None,
        progress: bool = False,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        self.layout = preflight_tng(base_path, snapshot, check_files=check_files)
        self.base_path = self.layout.base_path
        self.name = name
        self.snapshot = int(snapshot)
        self.selection = selection or SelectionConfig()
        self.progress = progress
        hdr = self.layout.header
        self.scale_factor = float(hdr["Time"])
        self.redshift = max(float(hdr["Redshift"]), 0.0)
        self.h = float(hdr["HubbleParam"])
        ob0 = float(hdr.get("OmegaBaryon", cosmology.Ob0 if cosmology else Cosmology().Ob0))
        self.cosmology = Cosmology(H0=100.0 * self.h, Om0=float(hdr["Omega0"]), Ob0=ob0)
        if cosmology is not None and (abs(cosmology.h - self.h) > 1e-3
                                      or abs(cosmology.Om0 - self.cosmology.Om0) > 1e-3):
            log.warning("%s: descriptor cosmology %s differs from the snapshot header %s; "
                        "using the header", name, cosmology, self.cosmology)
        self.box_size_ckpc_h = float(hdr["BoxSize"])
        hsml = [f for f in TNG_HSML_FIELDS if f in self.layout.star_fields][:1]
        self.star_fields = [*TNG_STAR_FIELDS, *hsml]
        self._rows: dict[int, dict[str, Any]] = {}
        self._centres: dict[int, np.ndarray] = {}
        self._index: list[tuple[Path, int, int]] | None = None
        self._first_sub: np.ndarray | None = None
        self._n_subhalos: int | None = None

    # ------------------------------------------------------------------ catalogue
    @property
    def units(self) -> list[dict[str, object]]:
        """The unit conversions this reader applies (for logs and provenance)."""
        return conversion_table([*self.star_fields, *CATALOGUE_FIELDS[:-1]],
                                scale_factor=self.scale_factor, h=self.h)

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description of the data read."""
        return {"reader": "tng", "name": self.name, "base_path": str(self.base_path),
                "snapshot": self.snapshot, "redshift": self.redshift,
                "scale_factor": self.scale_factor, "layout": self.layout.naming,
                "box_size_ckpc_h": self.box_size_ckpc_h,
                "cosmology": {"H0": self.cosmology.H0, "Om0": self.cosmology.Om0,
                              "Ob0": self.cosmology.Ob0},
                "star_fields": self.star_fields, "units": self.units,
                "exclusions": self.exclusions}

    def _chunk_index(self) -> list[tuple[Path, int, int]]:
        """(path, first subhalo id, number of subhalos) per catalogue chunk."""
        if self._index is None:
            index, first = [], 0
            for p in self.layout.groupcat_chunks:
                with h5py.File(p, "r") as f:
                    n = int(f["Header"].attrs["Nsubgroups_ThisFile"])
                    if self._n_subhalos is None:
                        self._n_subhalos = int(f["Header"].attrs["Nsubgroups_Total"])
                index.append((p, first, n))
                first += n
            self._index = index
        return self._index

    def _group_first_sub(self) -> np.ndarray:
        if self._first_sub is None:
            parts = []
            for p in self.layout.groupcat_chunks:
                _, data = read_groupcat_chunk(p, ["GroupFirstSub"], group="Group")
                if data:
                    parts.append(np.asarray(data["GroupFirstSub"]).astype(np.int64))
            fs = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            # Illustris-1 stores "no subhalo" (-1) as uint32 max (illustris_python#9)
            self._chunk_index()
            fs[(fs < 0) | (fs >= (self._n_subhalos or 0))] = -1
            self._first_sub = fs
        return self._first_sub

    def _table(self, data: dict[str, np.ndarray], first: int) -> pd.DataFrame:
        df = subhalo_table(data, first_id=first, snapshot=self.snapshot, redshift=self.redshift,
                           scale_factor=self.scale_factor, h=self.h,
                           mass_definition=self.selection.mass_definition)
        fs = self._group_first_sub()
        gid = df["group_id"].to_numpy()
        ok = (gid >= 0) & (gid < len(fs))
        central = np.zeros(len(df), bool)
        central[ok] = fs[gid[ok]] == df["object_id"].to_numpy()[ok]
        df.insert(6, "is_central", central)
        return df

    def select(self, *, n_galaxies: int | None = None, seed: int = 0) -> pd.DataFrame:
        """Select subhalos from the group catalogue.

        Cuts, in order: explicit ``ids`` (which replace the mass cut and the
        central/satellite choice) or the stellar-mass range (``mass_definition``:
        within twice the stellar half-mass radius, or all bound stars) and
        ``centrals``; then ``SubhaloFlag`` (where present) and ``min_star_particles``,
        whose failures are counted in :attr:`exclusions`.

        Parameters
        ----------
        n_galaxies : int, optional
            Keep a seeded random subset of this size (all when None).
        seed : int
            Seed of that subset.

        Returns
        -------
        DataFrame
            One row per subhalo, sorted by ``object_id``.
        """
        sel = self.selection
        if sel.centrals not in ("all", "centrals", "satellites"):
            msg = f"[selection] centrals must be 'all', 'centrals' or 'satellites', got {sel.centrals!r}"
            raise ConfigError(msg)
        self._clear_exclusions(_SELECT_REASONS)
        index = self._chunk_index()
        n_total = self._n_subhalos or 0
        ids = np.unique(np.asarray(sel.ids, np.int64)) if sel.ids else None
        if ids is not None:
            bad = ids[(ids < 0) | (ids >= n_total)]
            if bad.size:
                msg = (f"[selection] ids {bad[:10].tolist()} do not exist in {self.name} "
                       f"snapshot {self.snapshot} (subhalo ids run from 0 to {n_total - 1})")
                raise RangeError(msg, value=float(bad[0]), min=0, max=n_total - 1)
        frames, centres = [], []
        for path, first, n in _progress([c for c in index if c[2] > 0], desc="group catalogue",
                                        enable=self.progress, unit="chunk"):
            if ids is not None and not np.any((ids >= first) & (ids < first + n)):
                continue
            _, data = read_groupcat_chunk(path, CATALOGUE_FIELDS,
                                          optional=_OPTIONAL_CATALOGUE_FIELDS)
            df = self._table(data, first)
            if ids is not None:
                keep = np.isin(df["object_id"].to_numpy(), ids)
            else:
                m = df["stellar_mass_msun"].to_numpy()
                keep = (m >= sel.min_stellar_mass_msun) & (m <= sel.max_stellar_mass_msun)
            frames.append(df[keep])
            centres.append(np.asarray(data["SubhaloPos"], np.float64)[keep])
        if not frames:
            msg = (f"the group catalogue of {self.name} snapshot {self.snapshot} in "
                   f"{self.base_path} holds no subhalos; check base_path and snapshot")
            raise ConfigError(msg)
        table = pd.concat(frames, ignore_index=True)
        pos = np.concatenate(centres)
        keep, funnel = apply_selection(table, sel, ids_given=ids is not None, exclude=self._exclude,
                                       n_total=n_total, name=f"{self.name} snapshot {self.snapshot}")
        table, pos = table[keep].reset_index(drop=True), pos[keep]
        for oid, centre in zip(table["object_id"].to_numpy(), pos, strict=True):
            self._centres[int(oid)] = centre
        out = select_rows(table, sel, n_galaxies=n_galaxies, seed=seed)
        for rec in out.to_dict("records"):
            self._rows[int(rec["object_id"])] = {k: _py(v) for k, v in rec.items()}
        log.info("%s snapshot %d: selected %d subhalos (%s); excluded %s", self.name,
                 self.snapshot, len(out), ", ".join(funnel), self.exclusions)
        return out

    def _row(self, oid: int) -> tuple[dict[str, Any], np.ndarray]:
        if oid in self._rows and oid in self._centres:
            return self._rows[oid], self._centres[oid]
        index = self._chunk_index()
        n_total = self._n_subhalos or 0
        if not 0 <= oid < n_total:
            msg = (f"subhalo {oid} does not exist in {self.name} snapshot {self.snapshot} "
                   f"(ids run from 0 to {n_total - 1})")
            raise RangeError(msg, value=oid, min=0, max=n_total - 1)
        for path, first, n in index:
            if first <= oid < first + n:
                try:
                    with h5py.File(path, "r") as f:
                        grp = f["Subhalo"]
                        data = {k: grp[k][oid - first:oid - first + 1]
                                for k in (*CATALOGUE_FIELDS, *_OPTIONAL_CATALOGUE_FIELDS)
                                if k in grp}
                except (OSError, KeyError) as exc:
                    msg = f"{path}: cannot read subhalo {oid} ({_short(exc)}); download the chunk again"
                    raise DataFormatError(msg) from None
                rec = self._table(data, oid).to_dict("records")[0]
                self._rows[oid] = {k: _py(v) for k, v in rec.items()}
                self._centres[oid] = np.asarray(data["SubhaloPos"][0], np.float64)
                return self._rows[oid], self._centres[oid]
        msg = f"subhalo {oid} is in no group-catalogue chunk of {self.base_path}"  # pragma: no cover
        raise DataFormatError(msg)  # pragma: no cover

    # ------------------------------------------------------------------ particles
    def _load_stars(self, oid: int) -> dict[str, Any]:
        import illustris_python as il

        try:
            raw = il.snapshot.loadSubhalo(str(self.base_path), self.snapshot, oid, 4,
                                          fields=list(self.star_fields))
        except Exception as exc:  # illustris_python raises bare Exception, OSError, KeyError
            broken = self._unreadable_files()
            which = (f"unreadable file(s): {', '.join(map(str, broken))}; download them again"
                     if broken else "re-download the chunks of this snapshot")
            msg = (f"reading the star particles of subhalo {oid} from {self.base_path} "
                   f"(snapshot {self.snapshot}) failed: {type(exc).__name__}: {_short(exc)}; "
                   f"{which}")
            raise DataFormatError(msg) from exc
        return raw

    def _unreadable_files(self) -> list[Path]:
        """Chunks (and offsets file) that are missing or do not open, for error messages."""
        paths = [*self.layout.snapshot_chunks, *self.layout.groupcat_chunks]
        if self.layout.offsets is not None:
            paths.append(self.layout.offsets)
        broken = []
        for p in paths:
            try:
                with h5py.File(p, "r"):
                    pass
            except OSError:
                broken.append(p)
        return broken

    def galaxies(self, ids: Sequence[int]) -> Iterator[Galaxy]:
        """Yield galaxies one at a time, in the order of ``ids``.

        Subhalos without star particles, with only wind cells, with fewer stars than
        ``min_star_particles`` after dropping wind cells, or with non-finite particle
        data are skipped and counted in :attr:`exclusions`.
        """
        ids = [int(i) for i in ids]
        for oid in _progress(ids, desc=f"reading {self.name}", total=len(ids),
                             enable=self.progress, unit="galaxy"):
            row, centre = self._row(oid)
            raw = self._load_stars(oid)
            if int(raw.get("count", 0)) == 0:
                self._exclude("no_star_particles", oid)
                continue
            parts, n_wind, wind_mass = tng_star_particles(
                raw, centre_ckpc_h=centre, box_size_ckpc_h=self.box_size_ckpc_h,
                scale_factor=self.scale_factor, h=self.h, cosmology=self.cosmology)
            del raw
            if not self._screen(parts, oid, where=f"{self.name} subhalo {oid}", wind_only=True):
                continue
            out = dict(row)
            out.update(n_star_particles=len(parts), n_wind_cells=n_wind,
                       wind_mass_msun=wind_mass)
            yield Galaxy(object_id=oid, particles=parts, row=out)
