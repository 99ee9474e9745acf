"""Closure inputs: one analytic clumpy population on both paths (observed cutouts and star particles).

Usage: python benchmarks/closure_population.py OUT [--n-obs 500] [--n-sim 250] [--seed 0]
       [--particles 4000,20000] [--variants same,noclumps,larger,psfwide,noisy]
       [--stamp-size 48] [--bands g,r,i]

Writes below ``OUT`` (a workspace: ``sims/`` and ``observed/`` hold the descriptors):

``observed/sample/``     the "observed" path: galsim images in the HSC cutout layout
                         (``cutouts/<object_id>/<band>.fits`` with IMAGE / MASK / VARIANCE,
                         ``psf_<band>.fits``) and ``catalog.parquet``;
``observed/closure.toml``  survey descriptor naming that sample (``[sample] cutout_dir``);
``observed/closure_psfwide.toml``, ``closure_noisy.toml``  the same survey with the PSF FWHM and the
                         sky sigma 20% too large (only the render reads those: ingest takes
                         the cutouts' own PSF files and variance planes);
``particles/sim-<variant>-<N>/``  the "mock" path: TNG-layout group catalogue, snapshot and offsets
                         (``output/``) of an independent draw of the same population with
                         ``N`` star particles per galaxy; its descriptor ``sims/sim_<variant>_<N>.toml``;
``population.json``      the parameters.

Population (physical units, observed at z = 0.1; both paths draw from one model):

* log10(M*/Msun) uniform in [9.5, 11.2]; every star has one SSP (age 3 Gyr, Z = 0.02),
  so colours carry nothing and band fluxes are the initial mass times the BC03 flux
  per Msun of :class:`simcompare.sps.BandFluxTable` (the table the renderer uses);
* disc: Sersic n = 1, half-light radius r_d = 1.2 kpc (M*/1e10)^0.25 10^N(0, 0.1)
  (x1.5 in the ``larger`` variant), holding 1 - B/T - f_c of the light;
* bulge: Sersic n = 4, r_b = 0.3 r_d, B/T = clip(0.1 + 0.25 (log M* - 9.5), 0.05, 0.5);
* clumps: 2 + Poisson(3) Gaussians of sigma 0.3 kpc with f_c = 20% of the light (Dirichlet
  weights), in the disc plane at radii Gamma(2, r_d / 1.678) (exponential-disc light);
  the ``noclumps`` variant gives their light to the disc (same total flux);
* 3-D shapes whose projections are exact: each Sersic component is the Abel
  deprojection of its profile (a sphere), the disc flattened to an oblate spheroid of
  axis ratio q0 = 0.25. An oblate spheroid of a sphere's density viewed at inclination
  i projects to the sphere's projection stretched along the minor axis by
  q = sqrt(cos^2 i + q0^2 sin^2 i), so a randomly oriented particle galaxy (what
  ``score`` renders) and a galsim image of the sheared Sersic with cos i ~ U(0, 1)
  and a uniform position angle have the same distribution. Clumps are spheres, so
  they project to Gaussians of the same sigma at the projected clump positions;
* observed stamps: the galaxy centre offset U(-0.5, 0.5) px from the cutout centre (the
  catalogue RA/Dec give it), the survey's Moffat PSF, sky + source noise with the
  survey's sky sigma and gain (``psfwide`` / ``noisy`` keep these and change the
  descriptor the render reads instead);
* particles: N per galaxy of equal mass, no smoothing lengths (the renderer's 16-th
  neighbour distance), descriptor softening 0.05 kpc (below the clumps).

The observed and simulated galaxies are independent draws (seeds ``seed`` and
``seed + 1000``): the flow is trained on observed images, and the same individual galaxies
on the mock side would be scored by a model that saw them. The ``twins`` variant (not in
the default list) is the exception: the first N observed galaxies themselves as
particles, seen at the render's random orientations. It separates what the render and
ingest paths do from the sampling of two independent draws, on the global axis
(``closure.py --global-only``); the flow and the image classifier saw some of them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

Z_OBS = 0.1
AGE_GYR = 3.0
METALLICITY = 0.02
SURVIVING = 0.6          # current / initial stellar mass of the SSP (any value: used on both paths)
CLUMP_FRACTION = 0.2
CLUMP_SIGMA_KPC = 0.3
Q0_DISC = 0.25
SOFTENING_KPC = 0.05
SIZE_SCATTER_DEX = 0.1   # scatter of the disc scale length at fixed stellar mass
LARGER_FACTOR = 1.5      # the "larger" variant's discs (and bulges) against the population's
VARIANTS = ("same", "noclumps", "larger", "psfwide", "noisy")
BOX_CKPC_H = 100000.0
SNAPSHOT = 99
_B_N = {1.0: 1.6783469900166612, 4.0: 7.669249442500805}


# ---------------------------------------------------------------------------------------
# population model
# ---------------------------------------------------------------------------------------
def larger_ceiling_auroc() -> float:
    """The highest AUROC any test can reach between the "same" and "larger" populations.

    At fixed stellar mass the log size of both populations is normal with the same
    scatter (``SIZE_SCATTER_DEX``) and means ``log10(LARGER_FACTOR)`` apart; a test that
    knew each galaxy's true size and mass would separate them at
    Phi(log10(factor) / (scatter * sqrt 2)) (0.893 for 1.5x and 0.1 dex). A classifier on
    images that must also infer the mass and the size through the noise can only do worse.
    """
    from scipy.stats import norm

    return float(norm.cdf(np.log10(LARGER_FACTOR) / (SIZE_SCATTER_DEX * np.sqrt(2.0))))


def draw_population(n: int, seed: int, *, variant: str = "same") -> dict[str, np.ndarray | list]:
    """Per-galaxy parameters (physical kpc, Msun) of ``n`` galaxies."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(9.5, 11.2, n)
    mass = 10.0**logm
    r_d = 1.2 * (mass / 1e10) ** 0.25 * 10 ** rng.normal(0.0, SIZE_SCATTER_DEX, n)
    if variant == "larger":
        r_d = r_d * LARGER_FACTOR
    bt = np.clip(0.1 + 0.25 * (logm - 9.5), 0.05, 0.5)
    n_cl = 2 + rng.poisson(3.0, n)
    clumps = []
    for i in range(n):
        rad = rng.gamma(2.0, r_d[i] / _B_N[1.0], n_cl[i])
        phi = rng.uniform(0, 2 * np.pi, n_cl[i])
        w = rng.dirichlet(np.ones(n_cl[i]))
        clumps.append(np.column_stack([rad * np.cos(phi), rad * np.sin(phi), w]))
    fc = np.full(n, 0.0 if variant == "noclumps" else CLUMP_FRACTION)
    return {"logm": logm, "mass": mass, "r_d": r_d, "r_b": 0.3 * r_d, "bt": bt, "fc": fc,
            "clumps": clumps, "cos_i": rng.uniform(0.0, 1.0, n), "pa": rng.uniform(0.0, np.pi, n),
            "dxy": rng.uniform(-0.5, 0.5, (n, 2))}


def _sersic_deprojected_cdf(n_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Enclosed-mass fraction of the sphere whose projection is a Sersic n (r in units of r_e).

    Abel inversion ``rho(r) = -1/pi int_0^inf Sigma'(r cosh t) dt`` on a log grid.
    """
    b = _B_N[n_s]
    r = np.geomspace(1e-5, 40.0, 1500)
    t = np.linspace(0.0, 12.0, 3000)[None, :]
    rr = r[:, None] * np.cosh(t)

    def dsigma(x: np.ndarray) -> np.ndarray:
        return -b / n_s * x ** (1.0 / n_s - 1.0) * np.exp(-b * x ** (1.0 / n_s))

    rho = -np.trapezoid(dsigma(rr), t, axis=1) / np.pi
    dm = 4 * np.pi * r**2 * rho
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dm[1:] + dm[:-1]) * np.diff(r))])
    return r, cdf / cdf[-1]


_CDF: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def sample_sersic_sphere(n_s: float, r_e: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, 3) positions of a sphere whose projection is a Sersic n of half-light radius r_e."""
    if n_s not in _CDF:
        _CDF[n_s] = _sersic_deprojected_cdf(n_s)
    r_grid, cdf = _CDF[n_s]
    r = np.interp(rng.uniform(0, 1, size), cdf, r_grid) * r_e
    v = rng.standard_normal((size, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * r[:, None]


def galaxy_particles(pop: dict, i: int, n_part: int, rng: np.random.Generator) -> np.ndarray:
    """(n_part, 3) star positions [kpc] of galaxy ``i``; the disc lies in the x-y plane."""
    bt, fc = pop["bt"][i], pop["fc"][i]
    counts = rng.multinomial(n_part, [bt, fc, 1.0 - bt - fc])
    bulge = sample_sersic_sphere(4.0, pop["r_b"][i], counts[0], rng)
    disc = sample_sersic_sphere(1.0, pop["r_d"][i], counts[2], rng)
    disc[:, 2] *= Q0_DISC
    cl = pop["clumps"][i]
    which = rng.choice(len(cl), size=counts[1], p=cl[:, 2])
    clumps = rng.standard_normal((counts[1], 3)) * CLUMP_SIGMA_KPC
    clumps[:, 0] += cl[which, 0]
    clumps[:, 1] += cl[which, 1]
    return np.concatenate([bulge, clumps, disc])


def flux_per_initial_msun(survey, bands) -> np.ndarray:
    """Band flux (survey units) per Msun of initial mass of the SSP, at Z_OBS."""
    from simcompare.config import Cosmology
    from simcompare.sps import BandFluxTable

    table = BandFluxTable.build(filters=list(survey.filters_for(tuple(bands))), redshift=Z_OBS,
                                cosmology=Cosmology(), zero_point=survey.zero_point)
    return table.flux(age_gyr=np.array([AGE_GYR]), metallicity=np.array([METALLICITY]),
                      initial_mass_msun=np.ones(1))[0]


# ---------------------------------------------------------------------------------------
# the observed path: galsim images in the HSC cutout layout
# ---------------------------------------------------------------------------------------
def write_observed(root: Path, survey, *, n: int, seed: int, stamp: int, bands: tuple[str, ...],
                   flux_per_msun: np.ndarray) -> Path:
    import galsim

    from simcompare.config import Cosmology
    from simcompare.mock.observe import survey_psf_profiles
    from simcompare.observed.demo import _write_catalog, _Writer

    pop = draw_population(n, seed)
    rng = np.random.default_rng([seed, 1])
    kpc = 1.0 / Cosmology().kpc_per_arcsec(Z_OBS)  # arcsec per kpc, the mock side's cosmology
    scale = survey.pixel_scale_arcsec
    writer = _Writer(survey, bands, stamp, root)
    psfs = survey_psf_profiles(survey, bands)
    gsp = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=1e-3)
    ids = 2_000_000 + np.arange(n, dtype=np.int64)
    ra = rng.uniform(149.5, 150.5, n)
    dec = rng.uniform(1.7, 2.7, n)
    cols: dict[str, list] = {k: [] for k in ("object_id", "ra", "dec", "redshift", "stellar_mass_msun",
                                             "log_stellar_mass", "disc_half_light_radius_kpc",
                                             "bulge_to_total", "clump_fraction", "n_clumps",
                                             "cos_inclination")}
    from simcompare.observed.demo import _offset_radec

    for i in range(n):
        init = pop["mass"][i] / SURVIVING
        ci = pop["cos_i"][i]
        q = math.sqrt(ci * ci + Q0_DISC**2 * (1 - ci * ci))
        beta = pop["pa"][i] * galsim.radians
        c, s = math.cos(pop["pa"][i]), math.sin(pop["pa"][i])
        bt, fc = pop["bt"][i], pop["fc"][i]
        # galsim's shear keeps the area: the major axis of the sheared profile is hlr / sqrt(q)
        disc = galsim.Exponential(half_light_radius=pop["r_d"][i] * kpc * math.sqrt(q),
                                  gsparams=gsp).shear(q=q, beta=beta)
        bulge = galsim.DeVaucouleurs(half_light_radius=pop["r_b"][i] * kpc, gsparams=gsp)
        parts = [disc.withFlux(1.0 - bt - fc), bulge.withFlux(bt)]
        if fc > 0:
            for x, y, w in pop["clumps"][i]:
                xp, yp = x, y * ci  # the in-plane position seen at inclination i, major axis along x
                parts.append(galsim.Gaussian(sigma=CLUMP_SIGMA_KPC * kpc, flux=fc * w, gsparams=gsp)
                             .shift((xp * c - yp * s) * kpc, (xp * s + yp * c) * kpc))
        gal = galsim.Add(parts)
        model = np.empty((len(bands), stamp, stamp))
        for k in range(len(bands)):
            img = galsim.Convolve(gal.withFlux(init * flux_per_msun[k]), psfs[k], gsparams=gsp)
            model[k] = img.drawImage(nx=stamp, ny=stamp, scale=scale,
                                     offset=(pop["dxy"][i, 0], pop["dxy"][i, 1])).array
        ra_i, dec_i = _offset_radec(ra[i], dec[i], pop["dxy"][i, 0], pop["dxy"][i, 1], scale)
        writer.write(int(ids[i]), model, rng=rng, ra=ra[i], dec=dec[i], defects=None)
        for k2, v in (("object_id", int(ids[i])), ("ra", ra_i), ("dec", dec_i), ("redshift", Z_OBS),
                      ("stellar_mass_msun", float(pop["mass"][i])),
                      ("log_stellar_mass", float(pop["logm"][i])),
                      ("disc_half_light_radius_kpc", float(pop["r_d"][i])), ("bulge_to_total", float(bt)),
                      ("clump_fraction", float(fc)), ("n_clumps", len(pop["clumps"][i])),
                      ("cos_inclination", float(ci))):
            cols[k2].append(v)
    return _write_catalog(root, cols)


def survey_toml(survey, *, name: str, bands: tuple[str, ...], stamp: int, psf_scale: float = 1.0,
                noise_scale: float = 1.0, sample: Path | None = None) -> str:
    """A survey descriptor: the built-in HSC one, optionally with a wider PSF / more sky noise."""
    idx = [survey.bands.index(b) for b in bands]
    filters = [survey.filters[j] for j in idx]
    fwhm = dict(survey.psf.fwhm_arcsec)
    sky = dict(survey.noise.sky_sigma)
    gain = dict(survey.noise.gain)

    def table(d: dict, f: float = 1.0) -> str:
        return "{ " + ", ".join(f"{b} = {d[b] * f:.6g}" for b in bands) + " }"

    lines = [
        f'name = "{name}"', f'title = "closure benchmark survey ({name})"',
        "bands = [" + ", ".join(f'"{b}"' for b in bands) + "]",
        "filters = [" + ", ".join(f'"{f}"' for f in filters) + "]",
        f"pixel_scale_arcsec = {survey.pixel_scale_arcsec}", f"zero_point = {survey.zero_point}",
        f'flux_unit = "{survey.flux_unit}"', f"stamp_size = {stamp}", f"default_redshift = {Z_OBS}",
        "", "[psf]", f'kind = "{survey.psf.kind}"', f"beta = {survey.psf.beta}",
        f"fwhm_arcsec = {table(fwhm, psf_scale)}", f"size = {survey.psf.size}",
        "", "[noise]", f"sky_sigma = {table(sky, noise_scale)}", f"gain = {table(gain)}",
    ]
    if sample is not None:
        lines += ["", "[sample]", f'cutout_dir = "{sample / "cutouts"}"',
                  f'catalog = "{sample / "catalog.parquet"}"']
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# the mock path: star particles in the TNG layout
# ---------------------------------------------------------------------------------------
def write_sim(root: Path, *, n: int, seed: int, n_part: int, variant: str,
              n_obs: int | None = None) -> Path:
    from simcompare.config import Cosmology
    from simcompare.sims.demo import _catalogue_arrays
    from simcompare.sims.layout import write_tng_layout
    from simcompare.sims.units import cosmic_time_gyr, scale_factor_at_time

    cosmo = Cosmology()
    h = cosmo.h
    a = 1.0 / (1.0 + Z_OBS)
    to_len, to_mass = h / a, h / 1e10
    if variant == "twins":  # the first n observed galaxies themselves (seed = the observed seed)
        full = draw_population(int(n_obs), seed)
        pop = {k: v[:n] for k, v in full.items()}
    else:
        pop = draw_population(n, seed, variant="noclumps" if variant == "noclumps" else
                              "larger" if variant == "larger" else "same")
    rng = np.random.default_rng([seed, n_part, 2])
    t_snap = float(cosmic_time_gyr(a, cosmology=cosmo))
    birth = float(scale_factor_at_time(np.array([t_snap - AGE_GYR]), cosmology=cosmo)[0])
    coords, masses, subs, grps = [], [], [], []
    cursor = 0
    spacing = BOX_CKPC_H / (int(np.ceil(n ** (1 / 3))) + 1)
    for i in range(n):
        g = np.array(np.unravel_index(i, (int(np.ceil(n ** (1 / 3))),) * 3), float)
        centre = (g + 1) * spacing
        pos = galaxy_particles(pop, i, n_part, rng)
        xyz = centre + pos * to_len
        m = np.full(n_part, pop["mass"][i] / n_part)
        coords.append(xyz)
        masses.append(m)
        r = np.linalg.norm(pos, axis=1)
        r_half = float(np.median(r)) * to_len
        subs.append({"start": cursor, "n": n_part, "grnr": i, "pos": centre, "cm": centre,
                     "mass": m.sum() * to_mass, "mass_in_rad": m[r < 2 * np.median(r)].sum() * to_mass,
                     "wind_mass": 0.0, "r_half": r_half, "flag": True, "sfr": 0.0})
        grps.append({"start": cursor, "n": n_part, "first_sub": i, "nsubs": 1, "pos": centre,
                     "mass": m.sum() * to_mass})
        cursor += n_part
    mass_all = np.concatenate(masses)
    stars = {
        "Coordinates": np.concatenate(coords),
        "Masses": (mass_all * to_mass).astype(np.float32),
        "GFM_InitialMass": (mass_all / SURVIVING * to_mass).astype(np.float32),
        "GFM_StellarFormationTime": np.full(cursor, birth, np.float32),
        "GFM_Metallicity": np.full(cursor, METALLICITY, np.float32),
        "ParticleIDs": np.arange(1, cursor + 1, dtype=np.uint64),
    }
    header = {"BoxSize": BOX_CKPC_H, "HubbleParam": h, "Omega0": cosmo.Om0,
              "OmegaLambda": 1.0 - cosmo.Om0, "OmegaBaryon": cosmo.Ob0, "Redshift": Z_OBS, "Time": a}
    subhalos, groups = _catalogue_arrays(subs, grps)
    out = write_tng_layout(root, snapshot=SNAPSHOT, header=header, subhalos=subhalos, groups=groups,
                           stars=stars, n_groupcat_chunks=2, snapshot_cuts=(0.5,),
                           parameters={"SofteningMaxPhysType4": SOFTENING_KPC * h,
                                       "SofteningComovingType4": 2 * SOFTENING_KPC * h})
    name = root.name.replace("-", "_")
    desc = root.parent.parent / "sims" / f"{name}.toml"
    desc.parent.mkdir(parents=True, exist_ok=True)
    desc.write_text(
        f'name = "{name}"\ntitle = "closure benchmark particles ({variant}, {n_part} per galaxy)"\n'
        f'reader = "tng"\nbase_path = "{out}"\nsnapshots = [{SNAPSHOT}]\ndefault_snapshot = {SNAPSHOT}\n'
        f"box_size_ckpc_h = {BOX_CKPC_H}\nsoftening_kpc = {SOFTENING_KPC}\nobservation_redshift = {Z_OBS}\n\n"
        f"[cosmology]\nH0 = {cosmo.H0}\nOm0 = {cosmo.Om0}\nOb0 = {cosmo.Ob0}\n\n"
        "[selection]\nmin_stellar_mass_msun = 1.0e9\nmass_definition = \"total\"\n"
        "min_star_particles = 100\nrequire_subhalo_flag = true\n")
    return desc


# ---------------------------------------------------------------------------------------
def write_all(out: Path, *, n_obs: int, n_sim: int, seed: int, particles: tuple[int, ...],
              variants: tuple[str, ...], stamp: int, bands: tuple[str, ...]) -> dict:
    """Write every input of one seed below ``out``; returns the paths (reused when present)."""
    from simcompare.registry import find_survey

    out.mkdir(parents=True, exist_ok=True)
    hsc = find_survey("hsc", workspace=None)
    info: dict = {"observed": str(out / "observed" / "sample"), "sims": {}, "surveys": {}}
    t0 = time.perf_counter()
    obs = out / "observed" / "sample"
    if not (obs / "catalog.parquet").is_file():
        fpm = flux_per_initial_msun(hsc, bands)
        write_observed(obs, hsc, n=n_obs, seed=seed, stamp=stamp, bands=bands, flux_per_msun=fpm)
    (out / "observed").mkdir(exist_ok=True)
    for name, ps, ns in (("closure", 1.0, 1.0), ("closure_psfwide", 1.2, 1.0), ("closure_noisy", 1.0, 1.2)):
        p = out / "observed" / f"{name}.toml"
        p.write_text(survey_toml(hsc, name=name, bands=bands, stamp=stamp, psf_scale=ps, noise_scale=ns,
                                 sample=obs))
        info["surveys"][name] = str(p)
    t_obs = time.perf_counter() - t0
    for v in variants:
        for n_part in particles:
            # psfwide / noisy render the reference population through another descriptor
            pop_variant = v if v in ("same", "noclumps", "larger", "twins") else "same"
            folder = out / "particles" / f"sim-{pop_variant}-{n_part}"
            desc = out / "sims" / f"sim_{pop_variant}_{n_part}.toml"
            if not desc.is_file():
                if pop_variant == "twins":
                    write_sim(folder, n=min(n_sim, n_obs), seed=seed, n_part=n_part, variant="twins",
                              n_obs=n_obs)
                else:
                    write_sim(folder, n=n_sim, seed=seed + 1000, n_part=n_part, variant=pop_variant)
            info["sims"][f"{v}-{n_part}"] = {"sim": desc.stem,
                                             "survey": {"psfwide": "closure_psfwide",
                                                        "noisy": "closure_noisy"}.get(v, "closure")}
    info |= {"seed": seed, "n_obs": n_obs, "n_sim": n_sim, "stamp": stamp, "bands": list(bands),
             "write_s": {"observed": round(t_obs, 2), "total": round(time.perf_counter() - t0, 2)}}
    (out / "population.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-obs", type=int, default=500)
    ap.add_argument("--n-sim", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--particles", default="4000,20000")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--stamp-size", type=int, default=48)
    ap.add_argument("--bands", default="g,r,i")
    a = ap.parse_args(argv)
    info = write_all(a.out, n_obs=a.n_obs, n_sim=a.n_sim, seed=a.seed,
                     particles=tuple(int(p) for p in a.particles.split(",")),
                     variants=tuple(a.variants.split(",")), stamp=a.stamp_size,
                     bands=tuple(a.bands.split(",")))
    json.dump(info, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
