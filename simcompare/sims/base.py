"""What every simulation reader shares: its data types, catalogue cuts and particle screening.

The types it returns (star particles in physical units), the catalogue cuts and draw
(:func:`apply_selection`, :func:`select_rows`) and the particle screening
(:meth:`SimReader._screen`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DataFormatError, RangeError

if TYPE_CHECKING:
    import pandas as pd

    from ..config import Cosmology, SelectionConfig

__all__ = ["Galaxy", "SimReader", "StarParticles", "apply_selection", "select_rows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class StarParticles:
    """Star particles of one galaxy, in physical units.

    Parameters
    ----------
    positions_kpc : ndarray, shape (N, 3)
        Physical kpc relative to the galaxy centre, unwrapped across periodic boundaries.
    mass_msun : ndarray, shape (N,)
        Current stellar mass [Msun] (used for stellar-mass selection).
    initial_mass_msun : ndarray, shape (N,)
        Mass at birth [Msun] (the SSP tables are normalised per formed mass).
    age_gyr : ndarray, shape (N,)
        Age at the snapshot time [Gyr], >= 0.
    metallicity : ndarray, shape (N,)
        Metal mass fraction Z (solar ~ 0.0127 in TNG's convention, 0.02 in BC03's).
    hsml_kpc : ndarray, shape (N,), optional
        Smoothing length [physical kpc] when the simulation provides one.
    """

    positions_kpc: np.ndarray
    mass_msun: np.ndarray
    initial_mass_msun: np.ndarray
    age_gyr: np.ndarray
    metallicity: np.ndarray
    hsml_kpc: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.positions_kpc.shape[0] if self.positions_kpc.ndim == 2 else -1
        if self.positions_kpc.ndim != 2 or self.positions_kpc.shape[1] != 3:
            msg = f"positions_kpc must have shape (N, 3), got {self.positions_kpc.shape}"
            raise DataFormatError(msg)
        for name in ("mass_msun", "initial_mass_msun", "age_gyr", "metallicity", "hsml_kpc"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != (n,):
                msg = f"{name} must have shape ({n},), got {arr.shape}"
                raise DataFormatError(msg)

    def __len__(self) -> int:
        return int(self.positions_kpc.shape[0])

    def validate(self, *, where: str = "star particles") -> None:
        """Raise DataFormatError when values are non-finite or unphysical."""
        checks = {
            "positions_kpc": np.isfinite(self.positions_kpc).all(),
            "mass_msun": np.isfinite(self.mass_msun).all() and (self.mass_msun >= 0).all(),
            "initial_mass_msun": np.isfinite(self.initial_mass_msun).all()
            and (self.initial_mass_msun >= 0).all(),
            "age_gyr": np.isfinite(self.age_gyr).all() and (self.age_gyr >= 0).all(),
            "metallicity": np.isfinite(self.metallicity).all()
            and ((self.metallicity >= 0) & (self.metallicity <= 1)).all(),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            msg = f"{where}: non-finite or unphysical values in {bad}"
            raise DataFormatError(msg)


@dataclass(frozen=True, eq=False)
class Galaxy:
    """One selected galaxy: its id, star particles and catalogue row."""

    object_id: int
    particles: StarParticles
    row: dict[str, Any] = field(default_factory=dict)


class SimReader(ABC):
    """What every simulation reader offers (see ``docs/ARCHITECTURE.md``).

    Attributes
    ----------
    name : str
        Simulation name (descriptor name).
    snapshot : int
        Snapshot number being read.
    redshift : float
        Redshift of that snapshot (from the data's own header).
    cosmology : Cosmology
        Cosmology of the data.
    box_size_ckpc_h : float or None
        Periodic box size [ckpc/h], None when unknown (API cutouts without it).
    exclusion_ids : dict of str to list of int
        Object ids skipped, by reason; :attr:`exclusions` counts them.
    """

    name: str = ""
    snapshot: int = -1
    redshift: float = float("nan")
    cosmology: Cosmology
    box_size_ckpc_h: float | None = None

    def __init__(self) -> None:
        self._excluded: dict[str, dict[int, None]] = {}

    @property
    def exclusions(self) -> dict[str, int]:
        """Number of skipped objects per reason (wind-only, too few particles, ...)."""
        return {reason: len(ids) for reason, ids in self._excluded.items()}

    @property
    def exclusion_ids(self) -> dict[str, list[int]]:
        """Ids of the skipped objects per reason, in the order they were met."""
        return {reason: list(ids) for reason, ids in self._excluded.items()}

    def _exclude(self, reason: str, object_id: int) -> None:
        self._excluded.setdefault(reason, {})[int(object_id)] = None

    def _clear_exclusions(self, reasons: Sequence[str]) -> None:
        for reason in reasons:
            self._excluded.pop(reason, None)

    def _screen(
        self, parts: StarParticles, object_id: int, *, where: str, wind_only: bool = False,
    ) -> bool:
        """Whether a galaxy's star particles pass the reader-level screening.

        The one screening of every reader, in this order: no star left after dropping
        wind cells (``wind_only``, when ``wind_only`` is set), fewer stars than
        ``selection.min_star_particles`` (``too_few_star_particles``), non-finite or
        unphysical particle data (``non_finite_particle_data``, logged as a warning). A
        failing galaxy is counted under its reason in :attr:`exclusions`.

        Parameters
        ----------
        parts : StarParticles
            The galaxy's star particles in physical units.
        object_id : int
            Its id, recorded with the exclusion.
        where : str
            What names the galaxy in the warning (file or simulation and id).
        wind_only : bool, optional
            Count an empty ``parts`` as ``wind_only`` (TNG-like data whose wind cells
            were dropped) rather than as too few particles (default False).

        Returns
        -------
        bool
            True when the galaxy is kept.
        """
        if wind_only and len(parts) == 0:
            self._exclude("wind_only", object_id)
            return False
        if len(parts) < self.selection.min_star_particles:  # type: ignore[attr-defined]
            self._exclude("too_few_star_particles", object_id)
            return False
        try:
            parts.validate(where=where)
        except DataFormatError as exc:
            # logged under the reader's own module, as before the screening was shared
            logging.getLogger(type(self).__module__).warning("skipping: %s", exc)
            self._exclude("non_finite_particle_data", object_id)
            return False
        return True

    @abstractmethod
    def select(self, *, n_galaxies: int | None = None) -> pd.DataFrame:
        """One catalogue row per selected object, sorted by ``object_id``."""

    @abstractmethod
    def galaxies(self, ids: Sequence[int]) -> Iterator[Galaxy]:
        """Yield the galaxies ``ids`` one at a time (excluded ones are skipped and counted)."""


def select_rows(
    table: pd.DataFrame, selection: SelectionConfig, *, n_galaxies: int | None, seed: int = 0,
) -> pd.DataFrame:
    """Deterministic subset of ``table`` (a seeded random draw of ``n_galaxies`` rows).

    A random draw rather than the first N ids, because low subhalo ids are the most
    massive haloes. Returns rows sorted by ``object_id``.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows that passed the cuts.
    selection : SelectionConfig
        The descriptor's selection (not used by the draw; kept for the readers' common call).
    n_galaxies : int or None
        How many rows to draw; None keeps all.
    seed : int, optional
        Seed of the draw (default 0).
    """
    del selection
    table = table.sort_values("object_id", kind="stable").reset_index(drop=True)
    if n_galaxies is None or n_galaxies >= len(table):
        if n_galaxies is not None and n_galaxies > len(table):
            log.warning("asked for %d galaxies, only %d pass the selection", n_galaxies,
                        len(table))
        return table
    if n_galaxies < 1:
        msg = f"n_galaxies must be at least 1, got {n_galaxies}"
        raise RangeError(msg, value=n_galaxies, min=1)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(table), size=n_galaxies, replace=False))
    return table.iloc[pick].reset_index(drop=True)


def apply_selection(
    table: pd.DataFrame,
    selection: SelectionConfig,
    *,
    ids_given: bool,
    exclude: Any,
    n_total: int,
    name: str,
) -> tuple[np.ndarray, list[str]]:
    """Apply the catalogue cuts shared by all readers to a physical-unit table.

    Mass range and ``centrals`` apply unless explicit ids were given; ``SubhaloFlag``
    (``subhalo_flag`` column) and ``min_star_particles`` failures are passed to
    ``exclude(reason, object_id)``. Raises ConfigError, with the count after every cut,
    when nothing is left.

    Parameters
    ----------
    table : pandas.DataFrame
        Physical-unit catalogue of every candidate.
    selection : SelectionConfig
        The cuts.
    ids_given : bool
        Explicit ids were asked for: the mass and centrals cuts are skipped.
    exclude : callable
        ``exclude(reason, object_id)`` records a rejected object.
    n_total : int
        Number of objects before any cut (for the funnel).
    name : str
        Simulation name, for the error message.

    Returns
    -------
    keep : ndarray of bool
    funnel : list of str
        Human-readable counts after each cut.
    """
    sel = selection
    oid = table["object_id"].to_numpy()
    keep = np.ones(len(table), bool)
    funnel = [f"{n_total} objects"]
    if ids_given:
        funnel.append(f"{len(table)} of the requested ids")
    else:
        m = table["stellar_mass_msun"].to_numpy()
        keep &= (m >= sel.min_stellar_mass_msun) & (m <= sel.max_stellar_mass_msun)
        funnel.append(f"{int(keep.sum())} with {sel.mass_definition} stellar mass in "
                      f"[{sel.min_stellar_mass_msun:.3g}, {sel.max_stellar_mass_msun:.3g}] Msun")
        if sel.centrals != "all":
            keep &= table["is_central"].to_numpy() == (sel.centrals == "centrals")
            funnel.append(f"{int(keep.sum())} {sel.centrals}")
    if sel.require_subhalo_flag and "subhalo_flag" in table:
        flagged = keep & ~table["subhalo_flag"].to_numpy().astype(bool)
        for i in oid[flagged]:
            exclude("subhalo_flag", i)
        keep &= ~flagged
        funnel.append(f"{int(keep.sum())} with SubhaloFlag = 1")
    few = keep & (table["n_star_particles"].to_numpy() < sel.min_star_particles)
    for i in oid[few]:
        exclude("too_few_star_particles", i)
    keep &= ~few
    funnel.append(f"{int(keep.sum())} with >= {sel.min_star_particles} star particles")
    if not keep.any():
        msg = (f"the selection of {name} matched no galaxy: {', '.join(funnel)}; loosen "
               "[selection] (min_stellar_mass_msun, min_star_particles, centrals, ids) in the "
               "simulation descriptor")
        raise ConfigError(msg)
    return keep, funnel
