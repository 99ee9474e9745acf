"""Data types every simulation reader returns: star particles in physical units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataFormatError

__all__ = ["Galaxy", "StarParticles"]


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
