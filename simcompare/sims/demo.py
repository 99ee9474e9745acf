"""The built-in synthetic simulation, written in the IllustrisTNG on-disk layout.

:func:`write_demo_sim` draws a population of disc + bulge + clump galaxies (the model of
``docs/ARCHITECTURE.md``, "The demo populations") and writes it exactly as a TNG run
lays out its data, so that the demo is read by the real TNG reader
(:mod:`simcompare.sims.tng`, through ``illustris_python``)::

    <root>/output/groups_NNN/fof_subhalo_tab_NNN.<M>.hdf5    3 chunks, chunk 1 empty
    <root>/output/snapdir_NNN/snap_NNN.<M>.hdf5               3 chunks
    <root>/postprocessing/offsets/offsets_NNN.hdf5

Everything is in TNG code units (comoving ckpc/h, 1e10 Msun/h, birth scale factors).
Particles follow Subfind's order: FoF groups by decreasing length; inside a group the
central, then the satellites, then the group's inner fuzz; the outer fuzz at the end.
Snapshot chunk boundaries cut through subhalos, as in real runs.

Population model (physical units before conversion):

* stellar mass: log10(M*/Msun) uniform in [min_log_mass, max_log_mass];
  star particles per galaxy clip(M*/5e6 Msun, 300, 8000), equal current masses;
* disc: exponential, half-mass radius r_d = 3.0 kpc (M*/1e10)^0.25 10^N(0, 0.12)
  x size_scale, exponential vertical profile with scale height 0.1 r_d;
  ages uniform in 0.5-8 Gyr, Z = 0.015;
* bulge: B/T = clip(0.15 + 0.25 (log M* - 9.5), 0.05, 0.8), Hernquist sphere whose
  projection matches a de Vaucouleurs profile of r_e = 0.35 r_d; ages uniform in
  8-11 Gyr, Z = 0.02 (ages are capped at the age of the universe minus 50 Myr);
* clumps: clump_fraction of the disc mass in 3-8 Plummer spheres (scale 0.3 kpc)
  placed in the disc plane; ages uniform in 0.05-0.3 Gyr, Z = 0.015;
* initial masses: current mass / (1 - 0.4 age / (age + 0.5 Gyr)) (stellar mass loss);
* smoothing lengths (``StellarHsml``): the radius of the sphere that holds 32
  particles at the analytic density of the galaxy's components at each particle,
  as TNG's StellarHsml holds the 32 nearest neighbours (no neighbour search needed);
* random orientation; FoF groups of a central and 0-2 satellites 60-300 kpc away;
  about a tenth of the groups sit within 3 ckpc/h of a box face, so their galaxies
  straddle the periodic boundary;
* SubhaloSFR is the initial mass formed in the last 300 Myr over 300 Myr (there is no
  gas); SubhaloHalfmassRadType / SubhaloMassInRadType are measured from the particles.

Deliberate defects exercise the exclusion ledger: a few galaxies carry stellar wind
cells (``GFM_StellarFormationTime < 0``); two subhalos above the mass cut have only 40
star particles each; one subhalo holds only wind cells; one has ``SubhaloFlag = 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Cosmology, DemoSimConfig
from ..errors import RangeError
from .layout import write_tng_layout
from .units import cosmic_time_gyr, scale_factor_at_time, unwrap_periodic

__all__ = ["WRITER_VERSION", "demo_key", "write_demo_sim"]

log = logging.getLogger(__name__)

#: Bump whenever the written population or layout changes (invalidates cached demos).
WRITER_VERSION = 2

_SNAP_CHUNK_FRACTIONS = (0.37, 0.71)  # cut points of the 3 snapshot chunks
_MASS_PER_PARTICLE = 5e6  # Msun
_N_MIN, _N_MAX = 300, 8000
_N_NGB = 32  # neighbours inside StellarHsml, as in TNG
_HALF_MASS_EXP = 1.678347  # half-mass radius / scale length of an exponential disc
_HERNQUIST_RE = 1.8153  # projected half-mass radius / Hernquist scale radius
_SFR_WINDOW_GYR = 0.3


def demo_key(
    config: DemoSimConfig, *, cosmology: Cosmology, box_size_ckpc_h: float, softening_kpc: float,
) -> str:
    """Short hash of everything that determines the written demo simulation.

    Parameters
    ----------
    config : DemoSimConfig
        The population parameters.
    cosmology : Cosmology
        Cosmology written into the headers.
    box_size_ckpc_h : float
        Periodic box size [ckpc/h].
    softening_kpc : float
        Gravitational softening [kpc].

    Returns
    -------
    str
        Hex digest naming the demo's cache folder.
    """
    payload = {
        "writer": WRITER_VERSION,
        "demo": dataclasses.asdict(config),
        "cosmology": dataclasses.asdict(cosmology),
        "box_size_ckpc_h": float(box_size_ckpc_h),
        "softening_kpc": float(softening_kpc),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class _Block:
    """Particles of one subhalo or fuzz block, in physical units relative to a centre."""

    pos_kpc: np.ndarray
    mass_msun: np.ndarray
    init_msun: np.ndarray
    age_gyr: np.ndarray  # NaN for wind cells
    metallicity: np.ndarray
    hsml_kpc: np.ndarray  # radius holding _N_NGB particles at the analytic density


@dataclass
class _Subhalo:
    stars: _Block
    flag: bool = True
    kind: str = "galaxy"
    centre: np.ndarray | None = None  # ckpc/h, set when the group is placed


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _isotropic(rng: np.random.Generator, r: np.ndarray) -> np.ndarray:
    v = rng.normal(size=(r.size, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * r[:, None]


def _hsml(density_msun_kpc3: np.ndarray, particle_mass: float) -> np.ndarray:
    """Radius of the sphere holding ``_N_NGB`` particles at the given density [kpc]."""
    rho = np.maximum(density_msun_kpc3, 1e-12)
    return (3.0 * _N_NGB * particle_mass / (4.0 * np.pi * rho)) ** (1.0 / 3.0)


def _initial_mass(mass: np.ndarray, age: np.ndarray) -> np.ndarray:
    return mass / (1.0 - 0.4 * age / (age + 0.5))


def _galaxy(logm: float, rng: np.random.Generator, config: DemoSimConfig, t_max: float) -> _Block:
    m_star = 10.0**logm
    n = int(np.clip(round(m_star / _MASS_PER_PARTICLE), _N_MIN, _N_MAX))
    bt = float(np.clip(0.15 + 0.25 * (logm - 9.5), 0.05, 0.8))
    r_d = 3.0 * (m_star / 1e10) ** 0.25 * 10 ** rng.normal(0.0, 0.12) * config.size_scale
    n_bulge = round(n * bt)
    n_disc_all = n - n_bulge
    n_clump = round(n_disc_all * config.clump_fraction)
    n_disc = n_disc_all - n_clump

    # disc: exponential in R (Gamma(2) radii), exponential in z
    r_s = r_d / _HALF_MASS_EXP
    radius = rng.gamma(2.0, r_s, n_disc)
    phi = rng.uniform(0, 2 * np.pi, n_disc)
    disc = np.column_stack([radius * np.cos(phi), radius * np.sin(phi),
                            rng.laplace(0.0, 0.1 * r_d, n_disc)])
    # bulge: Hernquist, M(<r) = r^2 / (r + a)^2
    a_h = 0.35 * r_d / _HERNQUIST_RE
    su = np.sqrt(rng.uniform(0.0, 0.98, n_bulge))
    bulge = _isotropic(rng, a_h * su / (1.0 - su))
    # clumps: Plummer spheres in the disc plane
    n_clumps = int(rng.integers(3, 9))
    per_clump = rng.multinomial(n_clump, np.full(n_clumps, 1.0 / n_clumps))
    rc = np.minimum(rng.gamma(2.0, r_s, n_clumps), 2.5 * r_d)
    pc = rng.uniform(0, 2 * np.pi, n_clumps)
    centres = np.column_stack([rc * np.cos(pc), rc * np.sin(pc), np.zeros(n_clumps)])
    u = rng.uniform(0.0, 0.95, n_clump)
    clump_r = 0.3 / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
    clumps = _isotropic(rng, clump_r) + np.repeat(centres, per_clump, axis=0)

    # analytic density of disc + bulge (+ the particle's own clump) at every particle
    local = np.concatenate([disc, bulge, clumps])
    m_part = m_star / n
    cyl = np.hypot(local[:, 0], local[:, 1])
    b_z = 0.1 * r_d
    rho = (n_disc * m_part / (2 * np.pi * r_s**2) * np.exp(-cyl / r_s)
           * np.exp(-np.abs(local[:, 2]) / b_z) / (2 * b_z))
    r3 = np.maximum(np.linalg.norm(local, axis=1), 1e-3)
    rho += n_bulge * m_part * a_h / (2 * np.pi * r3 * (r3 + a_h) ** 3)
    clump_mass = np.repeat(per_clump * m_part, per_clump)
    rho[n_disc + n_bulge:] += (3 * clump_mass / (4 * np.pi * 0.3**3)
                               * (1 + (clump_r / 0.3) ** 2) ** -2.5)
    pos = local @ _random_rotation(rng).T
    age = np.concatenate([rng.uniform(0.5, 8.0, n_disc), rng.uniform(8.0, 11.0, n_bulge),
                          rng.uniform(0.05, 0.3, n_clump)])
    age = np.minimum(age, t_max)
    z_met = np.concatenate([np.full(n_disc, 0.015), np.full(n_bulge, 0.02),
                            np.full(n_clump, 0.015)])
    mass = np.full(n, m_part)
    return _Block(pos, mass, _initial_mass(mass, age), age, z_met, _hsml(rho, m_part))


def _compact(m_star: float, n: int, r_kpc: float, rng: np.random.Generator,
             ages: tuple[float, float], t_max: float) -> _Block:
    pos = _isotropic(rng, r_kpc * rng.uniform(0, 1, n) ** (1 / 3))
    age = np.minimum(rng.uniform(*ages, n), t_max)
    mass = np.full(n, m_star / n)
    rho = np.full(n, m_star / (4.0 / 3.0 * np.pi * r_kpc**3))
    return _Block(pos, mass, _initial_mass(mass, age), age, np.full(n, 0.015),
                  _hsml(rho, m_star / n))


def _wind(m_total: float, n: int, r_kpc: float, rng: np.random.Generator) -> _Block:
    pos = _isotropic(rng, r_kpc * rng.uniform(0, 1, n))
    mass = np.full(n, m_total / n)
    rho = np.full(n, m_total / (4.0 / 3.0 * np.pi * r_kpc**3))
    return _Block(pos, mass, mass.copy(), np.full(n, np.nan), np.full(n, 0.01),
                  _hsml(rho, m_total / n))


def _cat(blocks: list[_Block]) -> _Block:
    return _Block(*(np.concatenate([getattr(b, f.name) for b in blocks])
                    for f in dataclasses.fields(_Block)))


def _population(config: DemoSimConfig, rng: np.random.Generator, t_max: float) -> list[list[_Subhalo]]:
    """FoF groups (lists of subhalos, central first), sorted as Subfind sorts them."""
    n = config.n_galaxies
    logm = rng.uniform(config.min_log_mass, config.max_log_mass, n)
    subs = []
    for i in range(n):
        blk = _galaxy(float(logm[i]), rng, config, t_max)
        if i % 20 == 3:  # a few galaxies carry stellar wind cells
            blk = _cat([blk, _wind(2e-4 * 10 ** logm[i], 12, 2.0, rng)])
        subs.append(_Subhalo(blk))
    # group them: a central and sometimes one or two satellites
    order = rng.permutation(n)
    groups: list[list[_Subhalo]] = []
    for i in order:
        if groups and len(groups[-1]) < 3 and rng.uniform() < 0.3:
            groups[-1].append(subs[i])
        else:
            groups.append([subs[i]])
    # deliberate defects: unresolved, wind-only, non-cosmological (SubhaloFlag = 0)
    for _ in range(2):
        groups.append([_Subhalo(_compact(4e9, 40, 1.0, rng, (1.0, 9.0), t_max), kind="unresolved")])
    groups.append([_Subhalo(_wind(3.5e9, 150, 3.0, rng), kind="wind_only")])
    groups[0].append(_Subhalo(_compact(5e9, 400, 0.5, rng, (0.05, 1.0), t_max), flag=False,
                              kind="flagged"))
    for g in groups:  # central (the most massive) first, satellites by decreasing length
        g.sort(key=lambda s: -float(s.stars.mass_msun.sum()))
        g[1:] = sorted(g[1:], key=lambda s: -len(s.stars.mass_msun))
    groups.sort(key=lambda g: -sum(len(s.stars.mass_msun) for s in g))
    return groups


def write_demo_sim(
    root: str | Path,
    config: DemoSimConfig,
    *,
    cosmology: Cosmology,
    box_size_ckpc_h: float,
    softening_kpc: float,
) -> Path:
    """Write the demo population in the IllustrisTNG layout below ``root``.

    Parameters
    ----------
    root : path
        Folder that receives ``output/`` and ``postprocessing/`` (created if needed).
    config : DemoSimConfig
        Population parameters (``[demo]`` of ``sims/demo.toml``); ``seed`` makes the
        files deterministic.
    cosmology : Cosmology
        Written into the headers and used for birth times.
    box_size_ckpc_h : float
        Periodic box size [ckpc/h].
    softening_kpc : float
        Stellar softening [physical kpc], recorded in the ``Parameters`` attributes.

    Returns
    -------
    Path
        The basePath ``<root>/output`` (what ``illustris_python`` expects).
    """
    if config.n_galaxies < 1:
        msg = f"[demo] n_galaxies must be at least 1, got {config.n_galaxies}"
        raise RangeError(msg, value=config.n_galaxies, min=1)
    if not config.min_log_mass < config.max_log_mass:
        msg = (f"[demo] min_log_mass ({config.min_log_mass}) must be below max_log_mass "
               f"({config.max_log_mass})")
        raise RangeError(msg, value=config.min_log_mass, max=config.max_log_mass)
    if config.redshift < 0:
        msg = f"[demo] redshift must be >= 0, got {config.redshift}"
        raise RangeError(msg, value=config.redshift, min=0.0)
    if not 0 <= config.clump_fraction < 1:
        msg = f"[demo] clump_fraction must lie in [0, 1), got {config.clump_fraction}"
        raise RangeError(msg, value=config.clump_fraction, min=0.0, max=1.0)
    if box_size_ckpc_h <= 0:
        msg = f"box_size_ckpc_h must be positive, got {box_size_ckpc_h}"
        raise RangeError(msg, value=box_size_ckpc_h, min=0.0)

    root = Path(root)
    rng = np.random.default_rng(config.seed)
    h = cosmology.h
    a = 1.0 / (1.0 + config.redshift)
    box = float(box_size_ckpc_h)
    t_snap = float(cosmic_time_gyr(a, cosmology=cosmology))
    to_code_len = h / a  # physical kpc -> ckpc/h
    to_code_mass = h / 1e10  # Msun -> 1e10 Msun/h

    groups = _population(config, rng, t_max=t_snap - 0.05)

    # --- place groups; assemble particles in Subfind order ------------------------
    coords, masses, init, sft, metal, hsml = [], [], [], [], [], []
    sub_rows: list[dict] = []
    grp_rows: list[dict] = []
    cursor = 0
    for gi, g in enumerate(groups):
        centre = rng.uniform(0.0, box, 3)
        if gi % 10 == 1:  # straddle the periodic boundary
            axis = int(rng.integers(0, 3))
            u = rng.uniform(0.0, 3.0)
            centre[axis] = u if rng.uniform() < 0.5 else box - u
        g_start = cursor
        first_sub = len(sub_rows)
        for si, sub in enumerate(g):
            if si == 0:
                sub.centre = centre
            else:
                d = _isotropic(rng, rng.uniform(60.0, 300.0, 1))[0] * to_code_len
                sub.centre = (centre + d) % box
            blk = sub.stars
            n = len(blk.mass_msun)
            xyz = (sub.centre + blk.pos_kpc * to_code_len) % box
            m32 = (blk.mass_msun * to_code_mass).astype(np.float32)
            birth = np.where(np.isnan(blk.age_gyr), -rng.uniform(0.05, 0.9, n),
                             scale_factor_at_time(t_snap - np.nan_to_num(blk.age_gyr),
                                                  cosmology=cosmology))
            coords.append(xyz)
            masses.append(m32)
            init.append((blk.init_msun * to_code_mass).astype(np.float32))
            sft.append(birth.astype(np.float32))
            metal.append(blk.metallicity.astype(np.float32))
            hsml.append((blk.hsml_kpc * to_code_len).astype(np.float32))
            # catalogue quantities measured from what is written
            d = unwrap_periodic(xyz, sub.centre, box_size=box)
            m64 = m32.astype(np.float64)
            r = np.linalg.norm(d, axis=1)
            srt = np.argsort(r)
            cum = np.cumsum(m64[srt])
            r_half = float(r[srt][np.searchsorted(cum, 0.5 * cum[-1])])
            young = np.nan_to_num(blk.age_gyr, nan=np.inf) < _SFR_WINDOW_GYR
            sub_rows.append({
                "start": cursor, "n": n, "grnr": gi, "pos": sub.centre,
                "cm": (sub.centre + (d * m64[:, None]).sum(0) / m64.sum()) % box,
                "mass": m64.sum(), "mass_in_rad": m64[r < 2 * r_half].sum(),
                "wind_mass": m64[np.isnan(blk.age_gyr)].sum(),
                "r_half": r_half, "flag": sub.flag, "kind": sub.kind,
                "sfr": float(blk.init_msun[young].sum() / (_SFR_WINDOW_GYR * 1e9)),
            })
            cursor += n
        # inner fuzz: old stars bound to the group but to no subhalo
        fuzz = _compact(2e7, 10, 30.0, rng, (5.0, 10.0), t_snap - 0.05)
        xyz = (centre + fuzz.pos_kpc * to_code_len) % box
        coords.append(xyz)
        masses.append((fuzz.mass_msun * to_code_mass).astype(np.float32))
        init.append((fuzz.init_msun * to_code_mass).astype(np.float32))
        sft.append(scale_factor_at_time(t_snap - fuzz.age_gyr, cosmology=cosmology)
                   .astype(np.float32))
        metal.append(fuzz.metallicity.astype(np.float32))
        hsml.append((fuzz.hsml_kpc * to_code_len).astype(np.float32))
        cursor += 10
        g_n = cursor - g_start
        grp_rows.append({"start": g_start, "n": g_n, "first_sub": first_sub, "nsubs": len(g),
                         "pos": centre,
                         "mass": float(np.concatenate(masses[-len(g) - 1:]).astype(np.float64)
                                       .sum())})
    # outer fuzz: stars in no FoF group
    n_outer = 100
    outer_age = rng.uniform(1.0, 10.0, n_outer)
    coords.append(rng.uniform(0.0, box, (n_outer, 3)))
    m_outer = np.full(n_outer, 1e6)
    masses.append((m_outer * to_code_mass).astype(np.float32))
    init.append((_initial_mass(m_outer, outer_age) * to_code_mass).astype(np.float32))
    sft.append(scale_factor_at_time(t_snap - outer_age, cosmology=cosmology).astype(np.float32))
    metal.append(np.full(n_outer, 0.01, np.float32))
    hsml.append(np.full(n_outer, 50.0 * to_code_len, np.float32))
    cursor += n_outer

    parts = {
        "Coordinates": np.concatenate(coords),
        "Masses": np.concatenate(masses),
        "GFM_InitialMass": np.concatenate(init),
        "GFM_StellarFormationTime": np.concatenate(sft),
        "GFM_Metallicity": np.concatenate(metal),
        "StellarHsml": np.concatenate(hsml),
        "ParticleIDs": np.arange(1, cursor + 1, dtype=np.uint64),
    }
    n_total = cursor

    header = {
        "BoxSize": box, "HubbleParam": h, "Omega0": cosmology.Om0,
        "OmegaLambda": 1.0 - cosmology.Om0, "OmegaBaryon": cosmology.Ob0,
        "Redshift": float(config.redshift), "Time": a,
    }
    subhalos, groups_ds = _catalogue_arrays(sub_rows, grp_rows)
    out = write_tng_layout(
        root, snapshot=config.snapshot, header=header, subhalos=subhalos, groups=groups_ds,
        stars=parts, n_groupcat_chunks=3, snapshot_cuts=_SNAP_CHUNK_FRACTIONS,
        parameters={"SofteningMaxPhysType4": softening_kpc * h,
                    "SofteningComovingType4": 2.0 * softening_kpc * h},
    )
    info = {"writer": WRITER_VERSION, "config": dataclasses.asdict(config),
            "cosmology": dataclasses.asdict(cosmology), "box_size_ckpc_h": box,
            "softening_kpc": softening_kpc, "n_subhalos": len(sub_rows),
            "n_groups": len(grp_rows), "n_star_particles": n_total,
            "kinds": {k: sum(r["kind"] == k for r in sub_rows)
                      for k in ("galaxy", "unresolved", "wind_only", "flagged")}}
    (root / "demo.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    log.info("wrote demo simulation: %d subhalos, %d groups, %d star particles in %s",
             len(sub_rows), len(grp_rows), n_total, out)
    return out


def _catalogue_arrays(subs: list[dict], grps: list[dict]) -> tuple[dict, dict]:
    ns, ng = len(subs), len(grps)
    sub = {
        "SubhaloPos": np.array([s["pos"] for s in subs], np.float32),
        "SubhaloCM": np.array([s["cm"] for s in subs], np.float32),
        "SubhaloGrNr": np.array([s["grnr"] for s in subs], np.int32),
        "SubhaloParent": np.zeros(ns, np.int32),
        "SubhaloFlag": np.array([s["flag"] for s in subs], bool),
        "SubhaloWindMass": np.array([s["wind_mass"] for s in subs], np.float32),
        "SubhaloSFR": np.array([s["sfr"] for s in subs], np.float32),
        "SubhaloIDMostbound": np.array([s["start"] + 1 for s in subs], np.uint64),
    }
    for name, key in (("SubhaloLenType", "n"), ("SubhaloMassType", "mass"),
                      ("SubhaloMassInRadType", "mass_in_rad"),
                      ("SubhaloHalfmassRadType", "r_half")):
        arr = np.zeros((ns, 6), np.int32 if key == "n" else np.float32)
        arr[:, 4] = [s[key] for s in subs]
        sub[name] = arr
    sub["SubhaloLen"] = sub["SubhaloLenType"].sum(1).astype(np.int32)
    sub["SubhaloMass"] = sub["SubhaloMassType"].sum(1).astype(np.float32)
    sub["SubhaloHalfmassRad"] = sub["SubhaloHalfmassRadType"][:, 4].copy()
    glt = np.zeros((ng, 6), np.int32)
    glt[:, 4] = [g["n"] for g in grps]
    gmt = np.zeros((ng, 6), np.float32)
    gmt[:, 4] = [g["mass"] for g in grps]
    grp = {
        "GroupFirstSub": np.array([g["first_sub"] for g in grps], np.int32),
        "GroupNsubs": np.array([g["nsubs"] for g in grps], np.int32),
        "GroupPos": np.array([g["pos"] for g in grps], np.float32),
        "GroupLenType": glt, "GroupLen": glt.sum(1).astype(np.int32),
        "GroupMassType": gmt, "GroupMass": gmt.sum(1).astype(np.float32),
    }
    return sub, grp
