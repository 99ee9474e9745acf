"""EAGLE reader (h5py): subfind catalogue selection and star particles from particledata files.

Layout of a public EAGLE snapshot (tag e.g. ``028_z000p000``)::

    <base>/groups_<tag>/eagle_subfind_tab_<tag>.<M>.hdf5              Subhalo/ table
    <base>/particledata_<tag>/eagle_subfind_particles_<tag>.<M>.hdf5  PartType4/ in FoF groups

A galaxy is a (GroupNumber, SubGroupNumber) pair; its ``object_id`` is its row in the
concatenated ``Subhalo`` table. Units are converted in :func:`eagle_to_physical` from
each dataset's own ``h-scale-exponent``, ``aexp-scale-exponent`` and
``CGSConversionFactor`` attributes (never hard-coded factors), with the cgs->kpc/Msun
constants taken from the file's ``Constants`` group when it has one.

Star particles of the selected galaxies are located once by scanning the
``GroupNumber``/``SubGroupNumber`` arrays file by file (only the index arrays of the
selected galaxies are kept); particles are then read one galaxy at a time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .._progress import progress as _progress
from ..config import Cosmology, SelectionConfig
from ..errors import ConfigError, DataFormatError, DataNotFoundError
from .base import Galaxy, SimReader, StarParticles, apply_selection, select_rows
from .units import cosmic_time_gyr, unwrap_periodic

__all__ = ["EAGLE_STAR_FIELDS", "EagleReader", "eagle_to_physical", "find_eagle_tag"]

log = logging.getLogger(__name__)

EAGLE_STAR_FIELDS = ("Coordinates", "Mass", "InitialMass", "StellarFormationTime",
                     "SmoothedMetallicity")
_CATALOGUE = ("GroupNumber", "SubGroupNumber", "CentreOfPotential", "MassType", "HalfMassRad",
              "StarFormationRate")
_APERTURE = "ApertureMeasurements/Mass/030kpc"

#: physical kind of each field simcompare converts (target unit follows from it)
_KIND = {"Coordinates": "length", "SmoothingLength": "length", "CentreOfPotential": "length",
         "HalfMassRad": "length", "Mass": "mass", "InitialMass": "mass", "MassType": "mass",
         _APERTURE: "mass", "StarFormationRate": "sfr", "StellarFormationTime": "none",
         "SmoothedMetallicity": "none", "Metallicity": "none"}
#: EAGLE's own ``Constants`` values, used when a file lacks that group: the files'
#: ``CGSConversionFactor`` attributes were computed with them, so converting back with the
#: same numbers is exact (they are a file convention, not this package's physical constants).
_DEFAULT_CONSTANTS = {"CM_PER_MPC": 3.085678e24, "SOLAR_MASS": 1.989e33,
                      "SEC_PER_YEAR": 3.15569e7}


def find_eagle_tag(base_path: str | Path, snapshot: int) -> str:
    """The snapshot tag (``028_z000p000``) of ``snapshot`` found in ``base_path``."""
    bp = Path(base_path)
    if not bp.is_dir():
        msg = (f"EAGLE data folder {bp} does not exist; set base_path in the descriptor, "
               "SIMCOMPARE_<SIM>_PATH or --base-path to the folder holding particledata_*/")
        raise DataNotFoundError(msg)
    tags = sorted(p.name[len("particledata_"):] for p in bp.glob(f"particledata_{snapshot:03d}_z*")
                  if re.fullmatch(r"\d{3}_z\d{3}p\d{3}", p.name[len("particledata_"):]))
    if not tags:
        have = sorted(p.name for p in bp.glob("particledata_*"))
        msg = (f"no particledata_{snapshot:03d}_z*/ folder in {bp} (found: {have or 'none'}); "
               "download the snapshot's particle data and subfind catalogue")
        raise DataNotFoundError(msg)
    return tags[0]


def eagle_to_physical(
    name: str,
    data: np.ndarray,
    attrs: Mapping[str, Any],
    *,
    h: float,
    a: float,
    constants: Mapping[str, float],
) -> np.ndarray:
    """Convert one EAGLE dataset to physical kpc, Msun, Msun/yr or leave it dimensionless.

    ``physical_cgs = data * h**h-scale-exponent * a**aexp-scale-exponent * CGSConversionFactor``
    then cgs -> kpc (CM_PER_MPC / 1000), Msun (SOLAR_MASS) or Msun/yr.

    Parameters
    ----------
    name : str
        Dataset name (``Coordinates``, ``Mass``, ...; the catalogue's aperture mass as
        ``ApertureMeasurements/Mass/030kpc``).
    data : ndarray
        Stored values.
    attrs : mapping
        The dataset's attributes.
    h, a : float
        Hubble parameter and expansion factor from the file header.
    constants : mapping
        ``CM_PER_MPC``, ``SOLAR_MASS``, ``SEC_PER_YEAR``.
    """
    kind = _KIND.get(name)
    if kind is None:
        msg = f"no physical kind known for EAGLE field {name!r}; add it to simcompare.sims.eagle._KIND"
        raise DataFormatError(msg)
    try:
        hexp = float(attrs["h-scale-exponent"])
        aexp = float(attrs["aexp-scale-exponent"])
        cgs = float(attrs["CGSConversionFactor"])
    except KeyError as exc:
        msg = (f"EAGLE dataset {name!r} lacks the unit attribute {exc.args[0]!r}; the file is "
               "not in the public EAGLE format")
        raise DataFormatError(msg) from None
    x = np.asarray(data, dtype=np.float64) * (h**hexp * a**aexp * cgs)
    if kind == "length":
        return x / (float(constants["CM_PER_MPC"]) / 1e3)
    if kind == "mass":
        return x / float(constants["SOLAR_MASS"])
    if kind == "sfr":
        return x * float(constants["SEC_PER_YEAR"]) / float(constants["SOLAR_MASS"])
    return x


@contextmanager
def _eagle_file(p: Path) -> Iterator[h5py.File]:
    """An EAGLE HDF5 file open for reading; a read error is a DataFormatError naming the file."""
    try:
        with h5py.File(p, "r") as f:
            yield f
    except OSError as exc:
        msg = f"{p} is corrupt or truncated ({str(exc).splitlines()[0]}); download it again"
        raise DataFormatError(msg) from None


def _chunks(folder: Path, stem: str, tag: str) -> list[Path]:
    first = folder / f"{stem}_{tag}.0.hdf5"
    if not first.is_file():
        msg = f"{first} is missing; download the EAGLE {stem} files of snapshot {tag}"
        raise DataNotFoundError(msg)
    try:
        with h5py.File(first, "r") as f:
            n = int(f["Header"].attrs.get("NumFilesPerSnapshot", 0))
    except (OSError, KeyError) as exc:
        msg = f"{first} is corrupt or truncated ({str(exc).splitlines()[0]}); download it again"
        raise DataFormatError(msg) from None
    if n <= 0:  # no count in the header: take the consecutive files that exist
        n = 0
        while (folder / f"{stem}_{tag}.{n}.hdf5").is_file():
            n += 1
    paths = [folder / f"{stem}_{tag}.{i}.hdf5" for i in range(n)]
    gone = [p.name for p in paths if not p.is_file()]
    if gone:
        msg = f"EAGLE {stem} files missing in {folder}: {', '.join(gone)}; download them"
        raise DataNotFoundError(msg)
    return paths


class EagleReader(SimReader):
    """Read EAGLE galaxies from subfind catalogue and particledata files.

    Parameters
    ----------
    base_path : path
        Folder holding ``particledata_<tag>/`` and ``groups_<tag>/``.
    snapshot : int
        Snapshot number (28 is z = 0 in the public runs).
    selection : SelectionConfig
        ``mass_definition = "in_rad"`` uses the 30 pkpc aperture stellar mass
        (EAGLE's convention), ``"total"`` all bound stars (``MassType[4]``).
    """

    def __init__(
        self,
        base_path: str | Path,
        *,
        snapshot: int,
        selection: SelectionConfig | None = None,
        name: str = "eagle",
        cosmology: Cosmology | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.base_path = Path(base_path)
        self.tag = find_eagle_tag(self.base_path, snapshot)
        self.name = name
        self.snapshot = int(snapshot)
        self.selection = selection or SelectionConfig()
        self.progress = progress
        self.particle_files = _chunks(self.base_path / f"particledata_{self.tag}",
                                      "eagle_subfind_particles", self.tag)
        self.catalogue_files = _chunks(self.base_path / f"groups_{self.tag}",
                                       "eagle_subfind_tab", self.tag)
        bad = []
        for p in [*self.particle_files, *self.catalogue_files]:
            try:
                with h5py.File(p, "r"):
                    pass
            except OSError as exc:
                bad.append(f"{p} ({str(exc).splitlines()[0]})")
        if bad:
            msg = f"corrupt or truncated EAGLE files: {'; '.join(bad)}; download them again"
            raise DataFormatError(msg)
        with h5py.File(self.particle_files[0], "r") as f:
            hd = dict(f["Header"].attrs)
            consts = dict(f["Constants"].attrs) if "Constants" in f else {}
            fields = set(f["PartType4"].keys()) if "PartType4" in f else None
        self.constants = {k: float(consts.get(k, v)) for k, v in _DEFAULT_CONSTANTS.items()}
        self.h = float(hd["HubbleParam"])
        self.scale_factor = float(hd.get("ExpansionFactor", hd.get("Time")))
        self.redshift = max(float(hd["Redshift"]), 0.0)  # from the header, not the tag
        ob0 = float(hd.get("OmegaBaryon", cosmology.Ob0 if cosmology else 0.04825))
        self.cosmology = Cosmology(H0=100 * self.h, Om0=float(hd["Omega0"]), Ob0=ob0)
        self.box_size_ckpc_h = float(hd["BoxSize"]) * 1e3  # cMpc/h in the file
        self._box_code = float(hd["BoxSize"])
        if fields is not None:
            lacking = [x for x in EAGLE_STAR_FIELDS if x not in fields]
            if lacking:
                msg = (f"{self.particle_files[0]}: PartType4 lacks {lacking}; these EAGLE "
                       "particle files cannot be used (download the full particledata)")
                raise DataFormatError(msg)
        self._hsml = fields is not None and "SmoothingLength" in fields
        self._table: pd.DataFrame | None = None
        self._centres: np.ndarray | None = None
        self._index: dict[int, list[tuple[int, np.ndarray]]] = {}
        self._rows: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ catalogue
    def _read_catalogue(self) -> tuple[pd.DataFrame, np.ndarray]:
        if self._table is not None and self._centres is not None:
            return self._table, self._centres
        cols: dict[str, list[np.ndarray]] = {k: [] for k in (*_CATALOGUE, _APERTURE)}
        for p in self.catalogue_files:
            with _eagle_file(p) as f:
                if "Subhalo" not in f or "GroupNumber" not in f["Subhalo"]:
                    continue  # a chunk without subhalos
                sub = f["Subhalo"]
                for k in cols:
                    if k == _APERTURE and k not in sub:
                        continue
                    if k not in sub:
                        msg = f"{p}: Subhalo/{k} is missing; download the file again"
                        raise DataFormatError(msg)
                    ds = sub[k]
                    arr = ds[()]
                    if k in ("GroupNumber", "SubGroupNumber"):
                        cols[k].append(np.asarray(arr, np.int64))
                    elif k == "CentreOfPotential":
                        cols[k].append(np.asarray(arr, np.float64))  # code units, unwrap later
                    else:
                        cols[k].append(eagle_to_physical(k, arr, ds.attrs, h=self.h,
                                                         a=self.scale_factor,
                                                         constants=self.constants))
        if not cols["GroupNumber"]:
            msg = f"the EAGLE catalogue in {self.base_path / f'groups_{self.tag}'} holds no subhalos"
            raise DataFormatError(msg)
        cat = {k: np.concatenate(v) for k, v in cols.items() if v}
        n = len(cat["GroupNumber"])
        total = cat["MassType"][:, 4]
        aperture = cat[_APERTURE][:, 4] if _APERTURE in cat else np.full(n, np.nan)
        if self.selection.mass_definition == "in_rad" and _APERTURE not in cat:
            msg = (f"the EAGLE catalogue lacks {_APERTURE}; use mass_definition = \"total\" "
                   "in [selection]")
            raise ConfigError(msg)
        table = pd.DataFrame({
            "object_id": np.arange(n, dtype=np.int64),
            "snapshot": np.full(n, self.snapshot, np.int64),
            "redshift": np.full(n, self.redshift),
            "stellar_mass_msun": aperture if self.selection.mass_definition == "in_rad" else total,
            "half_mass_radius_kpc": cat["HalfMassRad"][:, 4],
            "sfr_msun_per_yr": cat["StarFormationRate"],
            "is_central": cat["SubGroupNumber"] == 0,
            "n_star_particles": np.zeros(n, np.int64),
            "stellar_mass_total_msun": total,
            "stellar_mass_aperture_30kpc_msun": aperture,
            "group_id": cat["GroupNumber"],
            "subgroup_number": cat["SubGroupNumber"],
        })
        self._table, self._centres = table, cat["CentreOfPotential"]
        return table, self._centres

    def _build_index(self, ids: Sequence[int]) -> None:
        """Locate the star particles of ``ids`` in the particledata files."""
        table, _ = self._read_catalogue()
        todo = [int(i) for i in ids if int(i) not in self._index]
        if not todo:
            return
        gn = table["group_id"].to_numpy()[todo]
        sgn = table["subgroup_number"].to_numpy()[todo]
        want = gn * (1 << 31) + sgn
        order_want = np.argsort(want)
        found: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in todo}
        for fi, p in enumerate(_progress(self.particle_files, desc="indexing EAGLE particles",
                                         enable=self.progress, unit="file")):
            with h5py.File(p, "r") as f:
                if "PartType4" not in f:
                    continue
                pg = np.asarray(f["PartType4/GroupNumber"][()], np.int64)
                ps = np.asarray(f["PartType4/SubGroupNumber"][()], np.int64)
            key = pg * (1 << 31) + ps
            order = np.argsort(key, kind="stable")
            skey = key[order]
            lo = np.searchsorted(skey, want[order_want], side="left")
            hi = np.searchsorted(skey, want[order_want], side="right")
            for k, a_, b_ in zip(order_want, lo, hi, strict=True):
                if b_ > a_:
                    found[todo[k]].append((fi, np.sort(order[a_:b_])))
            del pg, ps, key, order, skey
        self._index.update(found)

    def select(self, *, n_galaxies: int | None = None, seed: int = 0) -> pd.DataFrame:
        """Select galaxies from the subfind catalogue (see :meth:`TNGReader.select`)."""
        sel = self.selection
        self._clear_exclusions(("subhalo_flag", "too_few_star_particles"))
        table, _ = self._read_catalogue()
        ids = np.unique(np.asarray(sel.ids, np.int64)) if sel.ids else None
        if ids is not None:
            bad = ids[(ids < 0) | (ids >= len(table))]
            if bad.size:
                msg = (f"[selection] ids {bad[:10].tolist()} do not exist in {self.name} "
                       f"snapshot {self.snapshot} (rows 0 to {len(table) - 1})")
                raise ConfigError(msg)
            cand = table.iloc[ids].copy()
        else:
            m = table["stellar_mass_msun"].to_numpy()
            ok = (m >= sel.min_stellar_mass_msun) & (m <= sel.max_stellar_mass_msun)
            cand = table[ok].copy()
        self._build_index(cand["object_id"].tolist())
        cand["n_star_particles"] = [sum(len(ix) for _, ix in self._index[int(i)])
                                    for i in cand["object_id"]]
        keep, funnel = apply_selection(cand, sel, ids_given=ids is not None,
                                       exclude=self._exclude, n_total=len(table),
                                       name=f"{self.name} snapshot {self.snapshot}")
        out = select_rows(cand[keep], sel, n_galaxies=n_galaxies, seed=seed)
        for rec in out.to_dict("records"):
            self._rows[int(rec["object_id"])] = {
                k: v.item() if isinstance(v, np.generic) else v for k, v in rec.items()}
        log.info("%s snapshot %d: selected %d galaxies (%s)", self.name, self.snapshot,
                 len(out), ", ".join(funnel))
        return out

    # ------------------------------------------------------------------ particles
    def _read_stars(self, oid: int) -> tuple[dict[str, np.ndarray], int]:
        names = [*EAGLE_STAR_FIELDS, *(["SmoothingLength"] if self._hsml else [])]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for fi, ix in self._index[oid]:
            p = self.particle_files[fi]
            with _eagle_file(p) as f:
                grp = f["PartType4"]
                lacking = [k for k in names if k not in grp]
                if lacking:
                    msg = f"{p}: PartType4 lacks {lacking}; download the file again"
                    raise DataFormatError(msg)
                for k in names:
                    ds = grp[k]
                    sel = (slice(int(ix[0]), int(ix[-1]) + 1)
                           if ix[-1] - ix[0] + 1 == len(ix) else ix)
                    raw = ds[sel]
                    if k == "Coordinates":
                        parts[k].append(np.asarray(raw, np.float64))
                        parts.setdefault("_coord_attrs", [dict(ds.attrs)])
                    else:
                        parts[k].append(eagle_to_physical(k, raw, ds.attrs, h=self.h,
                                                          a=self.scale_factor,
                                                          constants=self.constants))
        attrs = parts.pop("_coord_attrs", [{}])[0]
        out = {k: (np.concatenate(v) if v else np.zeros((0, 3) if k == "Coordinates" else 0))
               for k, v in parts.items()}
        out["_coord_attrs"] = attrs  # type: ignore[assignment]
        return out, sum(len(ix) for _, ix in self._index[oid])

    def galaxies(self, ids: Sequence[int]) -> Iterator[Galaxy]:
        """Yield galaxies one at a time; empty ones are skipped and counted."""
        ids = [int(i) for i in ids]
        table, centres = self._read_catalogue()
        bad = [i for i in ids if not 0 <= i < len(table)]
        if bad:
            msg = f"EAGLE galaxies {bad[:10]} do not exist (rows 0 to {len(table) - 1})"
            raise ConfigError(msg)
        self._build_index(ids)
        t_snap = float(cosmic_time_gyr(self.scale_factor, cosmology=self.cosmology))
        for oid in _progress(ids, desc=f"reading {self.name}", total=len(ids),
                             enable=self.progress, unit="galaxy"):
            raw, n = self._read_stars(oid)
            if n == 0:
                self._exclude("no_star_particles", oid)
                continue
            attrs = raw.pop("_coord_attrs")
            rel = unwrap_periodic(raw["Coordinates"], centres[oid], box_size=self._box_code)
            pos = eagle_to_physical("Coordinates", rel, attrs, h=self.h, a=self.scale_factor,
                                    constants=self.constants)
            born = raw["StellarFormationTime"]
            star = born > 0
            age = t_snap - cosmic_time_gyr(np.where(star, born, 1.0), cosmology=self.cosmology)
            parts = StarParticles(
                positions_kpc=pos[star], mass_msun=raw["Mass"][star],
                initial_mass_msun=raw["InitialMass"][star],
                age_gyr=np.maximum(age[star], 0.0), metallicity=raw["SmoothedMetallicity"][star],
                hsml_kpc=raw["SmoothingLength"][star] if "SmoothingLength" in raw else None)
            if not self._screen(parts, oid, where=f"{self.name} galaxy {oid}"):
                continue
            row = dict(self._rows.get(oid) or {
                k: v.item() if isinstance(v, np.generic) else v
                for k, v in table.iloc[oid].to_dict().items()})
            row["n_star_particles"] = len(parts)
            yield Galaxy(object_id=oid, particles=parts, row=row)
