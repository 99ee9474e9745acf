"""TNG web API: download subhalo star cutouts (:func:`fetch`) and read them (:class:`TNGAPIReader`).

``fetch`` asks the API for the subhalos of a snapshot above a stellar mass, then
downloads one star cutout per subhalo into a folder::

    <out>/manifest.json         the query, the cosmology and the resume ledger
    <out>/subhalo_<id>.json     the API's subhalo record (centre, masses, SFR, ...)
    <out>/cutout_<id>.hdf5      PartType4 with the requested fields (absolute coordinates)

Downloads are resumable: a cutout that exists and passes the HDF5 check is skipped;
others stream to ``cutout_<id>.hdf5.part``, are checked against Content-Length, opened
with h5py and checked for the requested fields, then renamed into place. HTTP 429 and
5xx answers and broken connections are retried with exponential back-off, honouring
``Retry-After``. The API key comes from ``api_key=``, the ``TNG_API_KEY`` environment
variable or ``~/.config/simcompare/config.toml`` (``[tng] api_key = "..."``); it is sent
only as the ``api-key`` header and never logged, printed or written anywhere.
Only the standard library (urllib) talks HTTP.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .._io import write_json_atomic
from .._progress import progress as _progress
from ..config import Cosmology, SelectionConfig, SimDescriptor
from ..errors import ConfigError, DataFormatError, DataNotFoundError
from .base import Galaxy, SimReader, apply_selection, select_rows
from .units import TNG_HSML_FIELDS, TNG_STAR_FIELDS, conversion_table, tng_star_particles, tng_to_physical

__all__ = [
    "API_NAMES",
    "DEFAULT_BASE_URL",
    "DEFAULT_FIELDS",
    "TNGAPIReader",
    "api_key_from_config",
    "fetch",
    "verify_cutout",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.tng-project.org/api/"
#: Star fields requested by default (stars only keeps the transfer small).
DEFAULT_FIELDS = (*TNG_STAR_FIELDS, "StellarHsml")
#: Descriptor name -> simulation name on the API.
API_NAMES = {"tng50": "TNG50-1", "tng100": "TNG100-1", "tng300": "TNG300-1",
             "illustris1": "Illustris-1", "tng100-api": "TNG100-1"}
MANIFEST = "manifest.json"
_SCHEMA = "simcompare.tng-api"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_KEY_HELP = ("set the TNG_API_KEY environment variable or add [tng] api_key = \"...\" to "
             "~/.config/simcompare/config.toml (your key is on your profile page at "
             "https://www.tng-project.org/users/profile/)")


def _config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "simcompare" / "config.toml"


def _user_config(path: Path | None = None) -> dict[str, Any]:
    path = path or _config_path()
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML ({exc}); fix the file"
        raise ConfigError(msg) from None
    tng = data.get("tng", {})
    return tng if isinstance(tng, dict) else {}


def api_key_from_config(*, config_path: str | Path | None = None) -> str | None:
    """The API key from ``TNG_API_KEY`` or the user config file, or None."""
    key = os.environ.get("TNG_API_KEY", "").strip()
    if key:
        return key
    key = str(_user_config(Path(config_path) if config_path else None).get("api_key", "")).strip()
    return key or None


def _api_name(sim: SimDescriptor | str) -> str:
    name = sim.name if isinstance(sim, SimDescriptor) else str(sim)
    if name in API_NAMES:
        return API_NAMES[name]
    if "-" in name and name[0].isupper():  # already an API name such as "TNG100-1"
        return name
    msg = (f"no TNG web-API simulation known for {name!r}; use one of {sorted(API_NAMES)} "
           "or an API name such as 'TNG100-1'")
    raise ConfigError(msg)


def verify_cutout(path: str | Path, fields: Sequence[str]) -> str | None:
    """Why the cutout file is unusable, or None when it opens and holds ``fields``."""
    try:
        with h5py.File(path, "r") as f:
            if "Header" not in f:
                return "no Header group"
            if "PartType4" not in f:
                n = f["Header"].attrs.get("NumPart_ThisFile", np.zeros(6))
                return None if int(np.asarray(n)[4]) == 0 else "no PartType4 group"
            grp = f["PartType4"]
            lacking = [x for x in fields if x not in grp]
            if lacking:
                return f"PartType4 lacks {lacking}"
            lengths = {len(grp[x]) for x in fields}
            if len(lengths) > 1:
                return "PartType4 datasets differ in length"
    except OSError as exc:
        return f"does not open as HDF5 ({str(exc).splitlines()[0]})"
    return None


class _Client:
    """Minimal urllib client: api-key header, retries with back-off, verified downloads."""

    def __init__(self, api_key: str, *, retries: int, backoff_s: float, timeout_s: float,
                 sleep: Callable[[float], None]) -> None:
        self._key = api_key
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.sleep = sleep

    def _request(self, url: str) -> urllib.request.Request:
        return urllib.request.Request(url, headers={"api-key": self._key,
                                                    "Accept": "application/json, */*",
                                                    "User-Agent": "simcompare"})

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                pass
        return self.backoff_s * 2**attempt

    def _fail(self, url: str, what: str) -> DataNotFoundError:
        msg = (f"TNG web API request {url} failed after {self.retries + 1} attempts ({what}); "
               "check the network and try again later")
        return DataNotFoundError(msg)

    def open(self, url: str, attempt_from: int = 0) -> tuple[Any, int]:
        """Open ``url``; returns (response, attempts used). Retries transient failures."""
        attempt = attempt_from
        while True:
            try:
                return urllib.request.urlopen(self._request(url), timeout=self.timeout_s), attempt
            except urllib.error.HTTPError as exc:
                code = exc.code
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                exc.close()
                if code in (401, 403):
                    msg = f"the TNG web API rejected the API key (HTTP {code}); {_KEY_HELP}"
                    raise ConfigError(msg) from None
                if code == 404:
                    msg = (f"the TNG web API has no {url} (HTTP 404); check the simulation "
                           "name and snapshot")
                    raise DataNotFoundError(msg) from None
                if code not in _RETRY_STATUS or attempt >= self.retries:
                    raise self._fail(url, f"HTTP {code}") from None
                wait = self._wait(attempt, retry_after)
                log.info("HTTP %d from %s; retrying in %.1f s", code, url, wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
                if refused or attempt >= self.retries:  # nothing listens there: no point waiting
                    raise self._fail(url, type(exc).__name__) from None
                wait = self._wait(attempt, None)
                log.info("%s for %s; retrying in %.1f s", type(exc).__name__, url, wait)
            self.sleep(wait)
            attempt += 1

    def get_json(self, url: str) -> Any:
        attempt = 0
        while True:
            resp, attempt = self.open(url, attempt)
            try:
                with resp:
                    body = resp.read()
                return json.loads(body)
            except (http.client.HTTPException, ConnectionError, TimeoutError,
                    json.JSONDecodeError) as exc:
                if attempt >= self.retries:
                    msg = (f"TNG web API answered {url} with an unreadable body "
                           f"({type(exc).__name__}); try again later")
                    raise DataFormatError(msg) from None
                self.sleep(self._wait(attempt, None))
                attempt += 1

    def download(self, url: str, dest: Path, *, fields: Sequence[str]) -> int:
        """Stream ``url`` to ``dest.part``, verify, rename to ``dest``; return bytes written."""
        part = dest.with_name(dest.name + ".part")
        attempt = 0
        while True:
            resp, attempt = self.open(url, attempt)
            problem = None
            size = 0
            try:
                with resp, open(part, "wb") as fh:
                    expected = resp.headers.get("Content-Length")
                    while chunk := resp.read(1 << 20):
                        fh.write(chunk)
                        size += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                if expected is not None and int(expected) != size:
                    problem = f"truncated download ({size} of {expected} bytes)"
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
                problem = f"connection broke during download ({type(exc).__name__})"
            if problem is None:
                problem = verify_cutout(part, fields)
            if problem is None:
                os.replace(part, dest)
                return size
            log.info("%s: %s", dest.name, problem)
            if attempt >= self.retries:
                part.unlink(missing_ok=True)
                msg = (f"could not download a valid {dest.name} from {url} after "
                       f"{self.retries + 1} attempts ({problem}); run fetch again later")
                raise DataFormatError(msg)
            self.sleep(self._wait(attempt, None))
            attempt += 1


def _load_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        log.warning("%s is unreadable (an interrupted run?); it will be rebuilt", path)
        return None
    if not isinstance(data, dict) or data.get("schema") != _SCHEMA or not isinstance(
            data.get("subhalos"), list):
        log.warning("%s is not a simcompare fetch manifest; it will be rebuilt", path)
        return None
    return data


def fetch(
    sim: SimDescriptor | str,
    *,
    snapshot: int,
    min_stellar_mass: float,
    limit: int | None = None,
    out: str | Path | None = None,
    workspace: str | Path = ".",
    api_key: str | None = None,
    base_url: str | None = None,
    fields: Sequence[str] = DEFAULT_FIELDS,
    max_stellar_mass: float | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 300.0,
    progress: bool = False,
    config_path: str | Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download star cutouts of all subhalos above a stellar mass from the TNG web API.

    Parameters
    ----------
    sim : SimDescriptor or str
        ``tng50``, ``tng100``, ``tng300``, ``illustris1`` (or an API name, ``TNG100-1``).
    snapshot : int
        Snapshot number.
    min_stellar_mass : float
        Lower limit of the subhalo's total stellar mass [physical Msun].
    limit : int, optional
        Fetch at most this many subhalos (the first ones the API lists).
    out : path, optional
        Output folder (created); re-running resumes. Default:
        ``<workspace>/tng-api/<sim>_<snapshot>``.
    workspace : path
        The workspace (default: the current folder); gives the default ``out``.
    api_key : str, optional
        Defaults to ``TNG_API_KEY`` or the user config file.
    base_url : str, optional
        API root; defaults to ``SIMCOMPARE_TNG_API_URL``, the config file's
        ``[tng] base_url``, then https://www.tng-project.org/api/.
    fields : sequence of str
        ``PartType4`` fields to request.
    max_stellar_mass : float, optional
        Upper limit [physical Msun].
    retries, backoff_s, timeout_s : int, float, float
        Retries per request, first back-off [s] (doubling), socket timeout [s].
    progress : bool
        Show a progress bar.
    config_path : path, optional
        User config file (default ``~/.config/simcompare/config.toml``).
    sleep : callable
        Waits between retries (tests pass a recorder).

    Returns
    -------
    Path
        ``out``, ready for ``reader = "tng-api"``.
    """
    api_name = _api_name(sim)
    user = _user_config(Path(config_path) if config_path else None)
    key = api_key or api_key_from_config(config_path=config_path)
    if not key:
        msg = f"no TNG web-API key found; {_KEY_HELP}"
        raise ConfigError(msg)
    base = base_url or os.environ.get("SIMCOMPARE_TNG_API_URL") or user.get("base_url") \
        or DEFAULT_BASE_URL
    base = str(base).rstrip("/") + "/"
    if min_stellar_mass < 0:
        msg = f"min_stellar_mass must be >= 0 Msun, got {min_stellar_mass}"
        raise ConfigError(msg)
    fields = list(fields)
    client = _Client(key, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, sleep=sleep)
    if out is None:
        label = getattr(sim, "name", str(sim))
        out = Path(workspace) / "tng-api" / f"{label}_{int(snapshot):03d}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    sim_url = f"{base}{api_name}/"
    info = client.get_json(sim_url)  # one cheap authenticated call: a bad key stops here
    snap_info = client.get_json(f"{sim_url}snapshots/{snapshot}/")
    h = float(info["hubble"])
    query = {"min_stellar_mass_msun": float(min_stellar_mass),
             "max_stellar_mass_msun": None if max_stellar_mass is None else float(max_stellar_mass),
             "limit": limit, "fields": fields}
    manifest = _load_manifest(out)
    if manifest and (manifest.get("sim") != api_name or manifest.get("snapshot") != snapshot):
        msg = (f"{out} holds cutouts of {manifest.get('sim')} snapshot "
               f"{manifest.get('snapshot')}; use another --out folder")
        raise ConfigError(msg)
    if not manifest or manifest.get("query") != query:
        ids = _search(client, f"{sim_url}snapshots/{snapshot}/subhalos/",
                      lo=min_stellar_mass * h / 1e10,
                      hi=None if max_stellar_mass is None else max_stellar_mass * h / 1e10,
                      limit=limit)
        done = manifest.get("complete", []) if manifest else []
        manifest = {
            "schema": _SCHEMA, "schema_version": 1, "sim": api_name, "snapshot": int(snapshot),
            "redshift": float(snap_info["redshift"]), "base_url": base, "query": query,
            "hubble": h, "omega_0": float(info["omega_0"]),
            "omega_b": float(info.get("omega_B", info.get("omega_b", 0.0486))),
            "box_size_ckpc_h": float(info["boxsize"]), "subhalos": ids,
            "complete": [i for i in done if i in set(ids)],
        }
        write_json_atomic(out / MANIFEST, manifest, indent=1, fsync=True)
    ids = list(manifest["subhalos"])
    log.info("fetching %d %s snapshot %d cutouts into %s (fields %s)", len(ids), api_name,
             snapshot, out, ",".join(fields))
    complete = set(manifest["complete"])
    n_bytes = 0
    for sid in _progress(ids, desc=f"fetch {api_name}", total=len(ids), enable=progress,
                         unit="cutout"):
        sub_url = f"{sim_url}snapshots/{snapshot}/subhalos/{sid}/"
        json_path = out / f"subhalo_{sid}.json"
        cutout = out / f"cutout_{sid}.hdf5"
        if json_path.is_file() and cutout.is_file() and verify_cutout(cutout, fields) is None:
            complete.add(sid)
            continue
        if not json_path.is_file():
            write_json_atomic(json_path, client.get_json(sub_url), indent=1, fsync=True)
        query_s = urllib.parse.urlencode({"stars": ",".join(fields)}, safe=",")
        n_bytes += client.download(f"{sub_url}cutout.hdf5?{query_s}", cutout, fields=fields)
        complete.add(sid)
        manifest["complete"] = [i for i in ids if i in complete]
        write_json_atomic(out / MANIFEST, manifest, indent=1, fsync=True)
    manifest["complete"] = [i for i in ids if i in complete]
    write_json_atomic(out / MANIFEST, manifest, indent=1, fsync=True)
    log.info("fetch complete: %d cutouts (%.1f MB downloaded now)", len(complete), n_bytes / 1e6)
    return out


def _search(client: _Client, url: str, *, lo: float, hi: float | None,
            limit: int | None) -> list[int]:
    params = {"mass_stars__gt": f"{lo:.8g}", "limit": str(min(limit or 100, 100))}
    if hi is not None:
        params["mass_stars__lt"] = f"{hi:.8g}"
    next_url: str | None = f"{url}?{urllib.parse.urlencode(params)}"
    ids: list[int] = []
    while next_url and (limit is None or len(ids) < limit):
        page = client.get_json(next_url)
        ids.extend(int(r["id"]) for r in page.get("results", []))
        next_url = page.get("next")
    return ids[:limit] if limit is not None else ids


# ---------------------------------------------------------------------------------- reader
class TNGAPIReader(SimReader):
    """Read a folder written by :func:`fetch`.

    The subhalo centre is the API record's ``pos_x/pos_y/pos_z`` (cutout coordinates are
    absolute box coordinates); units come from :data:`simcompare.sims.units.TNG_UNITS`
    by field name, because cutout files carry no unit attributes.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        snapshot: int | None = None,
        selection: SelectionConfig | None = None,
        name: str = "tng-api",
        cosmology: Cosmology | None = None,
        box_size_ckpc_h: float | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        manifest = _load_manifest(self.folder)
        if manifest is None:
            msg = (f"{self.folder} holds no cutouts fetched by simcompare ({MANIFEST} missing "
                   "or unreadable); run `simcompare fetch --sim ... --snapshot ... --out "
                   f"{self.folder}` first")
            raise DataNotFoundError(msg)
        if snapshot is not None and int(snapshot) != int(manifest["snapshot"]):
            msg = (f"{self.folder} holds snapshot {manifest['snapshot']}, not {snapshot}; "
                   "fetch that snapshot into another folder")
            raise ConfigError(msg)
        self.manifest = manifest
        self.name = name
        self.snapshot = int(manifest["snapshot"])
        self.redshift = float(manifest["redshift"])
        self.scale_factor = 1.0 / (1.0 + self.redshift)
        self.h = float(manifest["hubble"])
        self.cosmology = Cosmology(H0=100 * self.h, Om0=float(manifest["omega_0"]),
                                   Ob0=float(manifest.get("omega_b") or
                                             (cosmology.Ob0 if cosmology else 0.0486)))
        self.box_size_ckpc_h = float(manifest.get("box_size_ckpc_h") or box_size_ckpc_h or 0) or None
        self.selection = selection or SelectionConfig()
        self.progress = progress
        self._rows: dict[int, dict[str, Any]] = {}
        self._centres: dict[int, np.ndarray] = {}

    @property
    def units(self) -> list[dict[str, object]]:
        """The unit conversions this reader applies."""
        return conversion_table([*TNG_STAR_FIELDS, "StellarHsml", "mass_stars",
                                 "halfmassrad_stars", "pos_x"],
                                scale_factor=self.scale_factor, h=self.h)

    def _record(self, sid: int) -> dict[str, Any]:
        path = self.folder / f"subhalo_{sid}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            msg = f"{path} is missing; run fetch again to complete {self.folder}"
            raise DataNotFoundError(msg) from None
        except json.JSONDecodeError:
            msg = f"{path} is not valid JSON; delete it and run fetch again"
            raise DataFormatError(msg) from None

    def _row_from_record(self, rec: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
        conv = {"scale_factor": self.scale_factor, "h": self.h}

        def phys(key: str) -> float:
            return float(tng_to_physical(key, float(rec.get(key, np.nan)), **conv))

        total, in_rad = phys("mass_stars"), phys("massinrad_stars")
        row = {
            "object_id": int(rec["id"]), "snapshot": self.snapshot, "redshift": self.redshift,
            "stellar_mass_msun": in_rad if self.selection.mass_definition == "in_rad" else total,
            "half_mass_radius_kpc": phys("halfmassrad_stars"),
            "sfr_msun_per_yr": phys("sfr"),
            "is_central": bool(int(rec.get("primary_flag", 0))),
            "n_star_particles": int(rec.get("len_stars", 0)),
            "stellar_mass_total_msun": total, "stellar_mass_in_rad_msun": in_rad,
            "group_id": int(rec.get("grnr", -1)),
            "subhalo_flag": bool(int(rec.get("subhaloflag", 1))),
        }
        centre = np.array([float(rec["pos_x"]), float(rec["pos_y"]), float(rec["pos_z"])])
        return row, centre

    def select(self, *, n_galaxies: int | None = None, seed: int = 0) -> pd.DataFrame:
        """Apply the descriptor's selection to the fetched subhalos (complete cutouts only)."""
        self._clear_exclusions(("subhalo_flag", "too_few_star_particles"))
        ids = [int(i) for i in self.manifest.get("complete", [])]
        missing = [i for i in self.manifest["subhalos"] if i not in set(ids)]
        if missing:
            log.warning("%d of %d cutouts in %s are not downloaded yet; run fetch again",
                        len(missing), len(self.manifest["subhalos"]), self.folder)
        rows = []
        for sid in ids:
            row, centre = self._row_from_record(self._record(sid))
            self._centres[sid] = centre
            rows.append(row)
        if not rows:
            msg = f"{self.folder} holds no complete cutouts; run fetch again"
            raise DataNotFoundError(msg)
        table = pd.DataFrame(rows)
        wanted = set(self.selection.ids)
        if wanted:
            table = table[table["object_id"].isin(wanted)].reset_index(drop=True)
        keep, funnel = apply_selection(table, self.selection, ids_given=bool(wanted),
                                       exclude=self._exclude, n_total=len(ids),
                                       name=f"{self.name} ({self.folder})")
        out = select_rows(table[keep], self.selection, n_galaxies=n_galaxies, seed=seed)
        for rec in out.to_dict("records"):
            self._rows[int(rec["object_id"])] = {
                k: v.item() if isinstance(v, np.generic) else v for k, v in rec.items()}
        log.info("%s: selected %d cutouts (%s)", self.name, len(out), ", ".join(funnel))
        return out

    def galaxies(self, ids: Sequence[int]) -> Iterator[Galaxy]:
        """Yield the galaxies of the cutouts ``ids`` one at a time."""
        ids = [int(i) for i in ids]
        for sid in _progress(ids, desc=f"reading {self.name}", total=len(ids),
                             enable=self.progress, unit="galaxy"):
            if sid not in self._rows:
                self._rows[sid], self._centres[sid] = self._row_from_record(self._record(sid))
            row, centre = self._rows[sid], self._centres[sid]
            path = self.folder / f"cutout_{sid}.hdf5"
            if not path.is_file():
                msg = f"{path} is missing; run fetch again to complete {self.folder}"
                raise DataNotFoundError(msg)
            try:
                with h5py.File(path, "r") as f:
                    hd = f["Header"].attrs
                    a = float(hd.get("Time", self.scale_factor))
                    h = float(hd.get("HubbleParam", self.h))
                    if "PartType4" not in f:
                        self._exclude("no_star_particles", sid)
                        continue
                    grp = f["PartType4"]
                    names = [*TNG_STAR_FIELDS,
                             *[x for x in TNG_HSML_FIELDS if x in grp][:1]]
                    lacking = [x for x in TNG_STAR_FIELDS if x not in grp]
                    if lacking:
                        msg = (f"{path}: PartType4 lacks {lacking}; fetch again with those "
                               "fields (a mini snapshot does not have them)")
                        raise DataFormatError(msg)
                    raw = {x: grp[x][()] for x in names}
            except OSError as exc:
                msg = (f"{path} is corrupt or truncated ({str(exc).splitlines()[0]}); delete "
                       "it and run fetch again")
                raise DataFormatError(msg) from None
            parts, n_wind, wind_mass = tng_star_particles(
                raw, centre_ckpc_h=centre, box_size_ckpc_h=self.box_size_ckpc_h,
                scale_factor=a, h=h, cosmology=self.cosmology)
            del raw
            if not self._screen(parts, sid, where=f"{path.name}", wind_only=True):
                continue
            out = dict(row)
            out.update(n_star_particles=len(parts), n_wind_cells=n_wind, wind_mass_msun=wind_mass)
            yield Galaxy(object_id=sid, particles=parts, row=out)
