"""Unit conversion for IllustrisTNG / Illustris data: the one place code units become physical.

TNG stores lengths in comoving kpc/h, masses in 1e10 Msun/h and stellar birth times as
the scale factor at formation (values <= 0 mark stellar *wind cells*, which are not
stars). :func:`tng_to_physical` converts any field named in :data:`TNG_UNITS` to
physical kpc, Msun or Gyr. The local-basePath reader and the web-API cutout reader both
go through it (the API's cutout files carry no unit attributes, so the table is keyed by
field name). EAGLE files describe their own units and are converted in
:mod:`simcompare.sims.eagle` from each dataset's attributes.

Cosmic time in a flat LambdaCDM universe without radiation (what
:meth:`simcompare.config.Cosmology.astropy` builds) has the closed form

    t(a) = 2 / (3 H0 sqrt(OL)) * asinh( sqrt(OL / Om) * a**1.5 ),

so ages are exact and vectorised; the tests compare them with astropy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from astropy import constants as _const

from ..config import Cosmology
from ..errors import DataFormatError
from .base import StarParticles

__all__ = [
    "GYR_S",
    "KPC_KM",
    "TNG_HSML_FIELDS",
    "TNG_STAR_FIELDS",
    "TNG_UNITS",
    "check_fields",
    "conversion_table",
    "cosmic_time_gyr",
    "scale_factor_at_time",
    "tng_star_particles",
    "tng_to_physical",
    "unwrap_periodic",
]

KPC_KM = float(_const.pc.to_value("km")) * 1e3  # km in one kpc (IAU 2015 parsec, astropy)
GYR_S = 3.15576e16  # seconds in one Gyr (Julian years)

#: Stored unit of every TNG/Illustris field simcompare converts, keyed by field name.
#: Snapshot fields, group-catalogue fields and the web API's JSON keys share the table.
TNG_UNITS: dict[str, str] = {
    # snapshot PartType4
    "Coordinates": "ckpc/h",
    "Masses": "1e10 Msun/h",
    "GFM_InitialMass": "1e10 Msun/h",
    "GFM_StellarFormationTime": "a",
    "GFM_Metallicity": "1",
    "StellarHsml": "ckpc/h",
    "SubfindHsml": "ckpc/h",
    # group catalogue
    "SubhaloPos": "ckpc/h",
    "SubhaloCM": "ckpc/h",
    "SubhaloMassType": "1e10 Msun/h",
    "SubhaloMassInRadType": "1e10 Msun/h",
    "SubhaloHalfmassRadType": "ckpc/h",
    "SubhaloSFR": "Msun/yr",
    "GroupPos": "ckpc/h",
    "GroupMassType": "1e10 Msun/h",
    # web-API subhalo JSON
    "pos_x": "ckpc/h",
    "pos_y": "ckpc/h",
    "pos_z": "ckpc/h",
    "mass_stars": "1e10 Msun/h",
    "massinrad_stars": "1e10 Msun/h",
    "halfmassrad_stars": "ckpc/h",
    "sfr": "Msun/yr",
}

_PHYSICAL_UNIT = {"ckpc/h": "kpc", "1e10 Msun/h": "Msun", "a": "Gyr (age)", "1": "1",
                  "Msun/yr": "Msun/yr"}


def cosmic_time_gyr(a: np.ndarray | float, *, cosmology: Cosmology) -> np.ndarray:
    """Cosmic time since the Big Bang [Gyr] at scale factor ``a`` (flat LambdaCDM).

    Parameters
    ----------
    a : array_like
        Scale factor(s), > 0.
    cosmology : Cosmology
        H0 [km/s/Mpc] and Om0; the dark-energy density is 1 - Om0, radiation is ignored.
    """
    a = np.asarray(a, dtype=np.float64)
    om = cosmology.Om0
    ol = 1.0 - om
    h0_per_gyr = cosmology.H0 / (KPC_KM * 1e3) * GYR_S  # H0 in 1/Gyr
    return 2.0 / (3.0 * h0_per_gyr * np.sqrt(ol)) * np.arcsinh(np.sqrt(ol / om) * a**1.5)


def scale_factor_at_time(t_gyr: np.ndarray | float, *, cosmology: Cosmology) -> np.ndarray:
    """Inverse of :func:`cosmic_time_gyr`: scale factor at cosmic time ``t_gyr`` [Gyr]."""
    t = np.asarray(t_gyr, dtype=np.float64)
    om = cosmology.Om0
    ol = 1.0 - om
    h0_per_gyr = cosmology.H0 / (KPC_KM * 1e3) * GYR_S
    return (np.sinh(1.5 * h0_per_gyr * np.sqrt(ol) * t) / np.sqrt(ol / om)) ** (2.0 / 3.0)


def unwrap_periodic(
    positions: np.ndarray, centre: np.ndarray, *, box_size: float | None,
) -> np.ndarray:
    """Positions relative to ``centre``, taking the nearest periodic image.

    Works in whatever unit ``positions``, ``centre`` and ``box_size`` share (TNG: ckpc/h).
    Offsets end up in [-box_size/2, box_size/2); with ``box_size`` None nothing is wrapped.

    Parameters
    ----------
    positions : ndarray, shape (N, 3)
        Absolute positions.
    centre : ndarray, shape (3,)
        The reference point.
    box_size : float or None
        Periodic box side; None for no wrapping.

    Returns
    -------
    ndarray, shape (N, 3)
        Offsets from ``centre``.
    """
    d = np.asarray(positions, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    if box_size:
        d = (d + 0.5 * box_size) % box_size - 0.5 * box_size
    return d


def tng_to_physical(
    field: str,
    values: np.ndarray | float,
    *,
    scale_factor: float,
    h: float,
    cosmology: Cosmology | None = None,
) -> np.ndarray:
    """Convert one TNG/Illustris field from code units to physical units.

    This is the single conversion point for TNG-layout data (local basePath, web-API
    cutouts and the demo simulation).

    ==================  ===============  =======================================
    stored unit         physical unit    conversion
    ==================  ===============  =======================================
    ckpc/h              kpc              x * a / h
    1e10 Msun/h         Msun             x * 1e10 / h
    a (birth)           Gyr (age)        t(a_snapshot) - t(x); NaN where x <= 0 (wind)
    1, Msun/yr          unchanged
    ==================  ===============  =======================================

    Parameters
    ----------
    field : str
        Field name, a key of :data:`TNG_UNITS`.
    values : array_like
        Values in code units.
    scale_factor : float
        Scale factor a of the snapshot (header ``Time``).
    h : float
        Dimensionless Hubble parameter (header ``HubbleParam``).
    cosmology : Cosmology, optional
        Needed for birth times -> ages.

    Returns
    -------
    ndarray (float64)
        Physical values; wind cells' ages are NaN (the caller drops them).
    """
    unit = TNG_UNITS.get(field)
    if unit is None:
        msg = (f"no unit known for TNG field {field!r}; known fields are "
               f"{sorted(TNG_UNITS)} (add it to simcompare.sims.units.TNG_UNITS)")
        raise DataFormatError(msg)
    x = np.asarray(values, dtype=np.float64)
    if unit == "ckpc/h":
        return x * (scale_factor / h)
    if unit == "1e10 Msun/h":
        return x * (1e10 / h)
    if unit == "a":
        if cosmology is None:
            msg = f"converting {field} to ages needs the cosmology"
            raise DataFormatError(msg)
        age = np.full(x.shape, np.nan)
        star = x > 0
        t_snap = cosmic_time_gyr(scale_factor, cosmology=cosmology)
        age[star] = t_snap - cosmic_time_gyr(x[star], cosmology=cosmology)
        # birth times equal to the snapshot time can come out at -1e-16 Gyr
        return np.where(star, np.maximum(age, 0.0), np.nan)
    return x


def conversion_table(
    fields: list[str] | tuple[str, ...], *, scale_factor: float, h: float,
) -> list[dict[str, object]]:
    """The conversions actually applied, one row per field, for logs and provenance.

    Parameters
    ----------
    fields : list or tuple of str
        Field names (keys of :data:`TNG_UNITS`).
    scale_factor : float
        Snapshot scale factor a.
    h : float
        Dimensionless Hubble parameter.

    Returns
    -------
    list of dict
        Per field: stored unit, target unit and the factor applied.
    """
    rows = []
    for f in fields:
        unit = TNG_UNITS[f]
        factor: float | str
        if unit == "ckpc/h":
            factor = scale_factor / h
        elif unit == "1e10 Msun/h":
            factor = 1e10 / h
        elif unit == "a":
            factor = "age = t(a_snap) - t(a_birth); a_birth <= 0 dropped (wind)"
        else:
            factor = 1.0
        rows.append({"field": f, "stored_unit": unit, "physical_unit": _PHYSICAL_UNIT[unit],
                     "factor": factor})
    return rows


def check_fields(available: Mapping[str, object] | list[str], required: list[str], *,
                 where: str, hint: str) -> None:
    """Raise DataFormatError listing every required field missing from ``available``.

    Parameters
    ----------
    available : mapping or list of str
        What the file or record has.
    required : list of str
        What the reader needs.
    where : str
        The file or record, named in the message.
    hint : str
        What to do about it, appended to the message.
    """
    missing = [f for f in required if f not in available]
    if missing:
        msg = f"{where}: missing field(s) {missing}; {hint}"
        raise DataFormatError(msg)


#: Star-particle fields every TNG-layout reader needs, and the optional ones.
TNG_STAR_FIELDS = ("Coordinates", "Masses", "GFM_InitialMass", "GFM_StellarFormationTime",
                   "GFM_Metallicity")
TNG_HSML_FIELDS = ("StellarHsml", "SubfindHsml")


def tng_star_particles(
    raw: Mapping[str, np.ndarray],
    *,
    centre_ckpc_h: np.ndarray,
    box_size_ckpc_h: float | None,
    scale_factor: float,
    h: float,
    cosmology: Cosmology,
) -> tuple[StarParticles, int, float]:
    """Build physical :class:`StarParticles` from raw TNG ``PartType4`` arrays.

    Wind cells (``GFM_StellarFormationTime <= 0``) are dropped; positions are taken
    relative to ``centre_ckpc_h`` across the periodic box, then every field goes
    through :func:`tng_to_physical`. ``StellarHsml`` is preferred to ``SubfindHsml``
    when both are present.

    Parameters
    ----------
    raw : mapping of str to ndarray
        ``PartType4`` fields in code units (absolute comoving positions).
    centre_ckpc_h : ndarray, shape (3,)
        Subhalo centre [ckpc/h].
    box_size_ckpc_h : float or None
        Periodic box size [ckpc/h]; None for no wrapping.
    scale_factor : float
        Snapshot scale factor a.
    h : float
        Dimensionless Hubble parameter.
    cosmology : Cosmology
        Cosmology of the stellar ages (formation scale factor -> age).

    Returns
    -------
    particles : StarParticles
        Stars only, physical units.
    n_wind : int
        Number of wind cells dropped.
    wind_mass_msun : float
        Their total current mass [Msun].
    """
    check_fields(raw, list(TNG_STAR_FIELDS), where="PartType4",
                 hint="a full snapshot (or cutout) with the GFM fields is needed")
    sft = np.asarray(raw["GFM_StellarFormationTime"])
    star = sft > 0
    n_wind = int((~star).sum())
    conv = {"scale_factor": scale_factor, "h": h}
    wind_mass = float(tng_to_physical("Masses", np.asarray(raw["Masses"])[~star], **conv).sum())
    rel = unwrap_periodic(np.asarray(raw["Coordinates"])[star], centre_ckpc_h,
                          box_size=box_size_ckpc_h)
    hsml = None
    for name in TNG_HSML_FIELDS:
        if name in raw:
            hsml = tng_to_physical(name, np.asarray(raw[name])[star], **conv)
            break
    particles = StarParticles(
        positions_kpc=tng_to_physical("Coordinates", rel, **conv),
        mass_msun=tng_to_physical("Masses", np.asarray(raw["Masses"])[star], **conv),
        initial_mass_msun=tng_to_physical("GFM_InitialMass",
                                          np.asarray(raw["GFM_InitialMass"])[star], **conv),
        age_gyr=tng_to_physical("GFM_StellarFormationTime", sft[star], cosmology=cosmology,
                                **conv),
        metallicity=tng_to_physical("GFM_Metallicity",
                                    np.asarray(raw["GFM_Metallicity"])[star], **conv),
        hsml_kpc=hsml,
    )
    return particles, n_wind, wind_mass
