"""Closure and cost of the classifier two-sample test and of the appearance embedding.

A clumpy galaxy population is drawn with galsim through the HSC i-band PSF and noise of
``observed/hsc.toml`` (projected Plummer = Moffat beta 2 profiles, scale a = 2 kpc x
10^N(0, 0.15), plus 1 + Poisson(3) Gaussian clumps of sigma 0.3 kpc holding 20% of the
light, z = 0.1, i = 20-22 mag, 32x32 stamps). Against an "observed" sample of it, three
test samples are scored by the classifier test of :mod:`simcompare.c2st`: the same
population (fresh draws), the same galaxies with the clumps removed (their light put back
into the smooth profile), and the same population 1.5x larger; and, for every count of
``--particles``, the same population made of that many star particles per galaxy and
rendered by the package's particle renderer (k-NN smoothing, sub-pixel light map): the
closure of the render path at high particle count. The embeddings of
:mod:`simcompare.embedding` (principal components; autoencoder) are timed on the joint
sample and checked on twins (each clumpy test galaxy's noise-free rendering, randomly
rotated or reflected, must be its nearest observed look-alike).

Usage: python benchmarks/c2st.py [--n 400] [--seed 0] [--particles 20000,100000]
       [--epochs N] [--skip-embedding]
Prints one JSON object (timings on a shared 2-core machine are noisy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np

KPC_PER_ARCSEC_Z01 = 1.8445  # Planck15 angular scale at z = 0.1
PIXEL = 0.168
STAMP = 32
SKY_SIGMA_I = 0.0396
FWHM_I = 0.58


def _draw_params(rng: np.random.Generator, size_dex: float) -> tuple:
    """One galaxy of the population: scale [kpc], i mag, axis ratio, angle, clumps."""
    a_kpc = 2.0 * 10 ** rng.normal(0, size_dex)
    mag = rng.uniform(20.0, 22.0)
    q = rng.uniform(0.5, 1.0)
    beta = rng.uniform(0, np.pi)
    n_cl = 1 + rng.poisson(3)
    cl = rng.normal(0, 1.0, (n_cl, 2)) * a_kpc
    w = rng.dirichlet(np.ones(n_cl))
    return a_kpc, mag, q, beta, cl, w


def population(n: int, *, rng: np.random.Generator, clumps: bool = True, scale: float = 1.0,
               noise: bool = True, params: list | None = None, size_dex: float = 0.15,
               ) -> tuple[np.ndarray, list]:
    """``n`` i-band stamps (counts) of the clumpy population and their parameters."""
    import galsim

    psf = galsim.Moffat(beta=3.5, fwhm=FWHM_I)
    out = np.empty((n, 1, STAMP, STAMP), np.float32)
    drawn = []
    for k in range(n):
        p = _draw_params(rng, size_dex) if params is None else params[k]
        drawn.append(p)
        a_kpc, mag, q, beta, cl, w = p
        flux = 10 ** (-0.4 * (mag - 27.0))
        a = a_kpc * scale / KPC_PER_ARCSEC_Z01
        frac = 0.2 if clumps else 0.0
        gal = galsim.Moffat(beta=2.0, scale_radius=a, trunc=8 * a).withFlux((1 - frac) * flux)
        gal = gal.shear(q=q, beta=beta * galsim.radians)
        parts = [gal]
        if clumps:
            sig = 0.3 * scale / KPC_PER_ARCSEC_Z01
            for (dx, dy), wk in zip(cl, w, strict=True):
                parts.append(galsim.Gaussian(sigma=sig, flux=frac * flux * wk).shift(
                    dx * scale / KPC_PER_ARCSEC_Z01, dy * scale / KPC_PER_ARCSEC_Z01))
        img = galsim.Convolve(galsim.Add(parts), psf).drawImage(
            nx=STAMP, ny=STAMP, scale=PIXEL).array
        if noise:
            img = img + rng.normal(0, SKY_SIGMA_I, img.shape)
        out[k, 0] = img
    return out, drawn


def particle_population(n: int, *, rng: np.random.Generator, n_part: int,
                        size_dex: float = 0.15, noise: bool = True,
                        params: list | None = None) -> np.ndarray:
    """``n`` stamps of the same population made of ``n_part`` equal-flux star particles.

    Each galaxy is drawn as :func:`population` draws it, then realised as particles (a
    3-D Plummer sphere, whose projection is the Moffat beta 2 profile, cut at a projected
    8 scale radii and sheared as galsim shears it; each clump a 3-D Gaussian of sigma
    0.3 kpc) and rendered by the package's particle renderer: k-nearest-neighbour
    smoothing lengths (:func:`simcompare.mock.project.smoothing_sigma_kpc`, the
    renderer's default k and a 0.05 kpc softening) and the sub-pixel light map
    (:func:`simcompare.mock.project.light_map`) with the survey's PSF kernel; then the
    same sky noise as the galsim stamps.
    """
    from simcompare.mock.galaxy import RENDER_OVERSAMPLE, RenderSpec
    from simcompare.mock.project import light_map, smoothing_sigma_kpc
    from simcompare.psf import PSF
    from simcompare.registry import find_survey

    defaults = {f.name: f.default for f in dataclasses.fields(RenderSpec)}
    kernel = PSF.from_survey(find_survey("hsc", workspace=None), bands=("i",),
                             kernel_size=2 * STAMP + 1,
                             oversample=RENDER_OVERSAMPLE).render_kernel()
    out = np.empty((n, 1, STAMP, STAMP), np.float32)
    centre = (STAMP - 1) / 2  # galsim's true centre of an even stamp, in pixel centres
    for k in range(n):
        a_kpc, mag, q, beta, cl, w = _draw_params(rng, size_dex) if params is None else params[k]
        flux = 10 ** (-0.4 * (mag - 27.0))
        n_clump = rng.multinomial(round(0.2 * n_part), w)
        n_disc = n_part - int(n_clump.sum())
        disc = np.empty((0, 3))
        while len(disc) < n_disc:  # Plummer radii, isotropic, projected R < 8 a kept
            u = rng.uniform(0.0, 1.0, n_disc)
            r = a_kpc / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
            v = rng.normal(size=(n_disc, 3))
            xyz = v / np.linalg.norm(v, axis=1)[:, None] * r[:, None]
            disc = np.concatenate([disc, xyz[np.hypot(xyz[:, 0], xyz[:, 1]) < 8 * a_kpc]])
        disc = disc[:n_disc]
        # galsim's shear(q, beta): major axis x 1/sqrt(q), minor x sqrt(q), turned by beta
        disc[:, 0] /= np.sqrt(q)
        disc[:, 1] *= np.sqrt(q)
        c, s_ = np.cos(beta), np.sin(beta)
        disc[:, :2] = disc[:, :2] @ np.array([[c, s_], [-s_, c]])
        clumps = [rng.normal(0.0, 0.3, (m, 3)) + np.array([dx, dy, 0.0])
                  for (dx, dy), m in zip(cl, n_clump, strict=True)]
        pos = np.concatenate([disc, *clumps])
        sigma_kpc, _ = smoothing_sigma_kpc(pos, hsml_kpc=None, softening_kpc=0.05,
                                           k=defaults["knn_k"],
                                           thin=1 if len(pos) <= defaults["knn_exact_max"]
                                           else defaults["knn_thin"])
        to_pix = 1.0 / KPC_PER_ARCSEC_Z01 / PIXEL
        img, _ = light_map(centre + pos[:, 0] * to_pix, centre + pos[:, 1] * to_pix,
                           np.full((len(pos), 1), flux / len(pos)), sigma_kpc * to_pix, STAMP,
                           kernel, oversample=RENDER_OVERSAMPLE)
        out[k, 0] = img[0] + (rng.normal(0, SKY_SIGMA_I, img.shape[1:]) if noise else 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="galaxies per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size-dex", type=float, default=0.15,
                        help="scatter of log10 galaxy size (default 0.15, as in MEASURED.md)")
    parser.add_argument("--particles", default="20000,100000",
                        help="particles per galaxy of the particle-rendered same-population "
                             "cases (comma-separated; empty: none)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="classifier epochs per fold (default: the package's)")
    parser.add_argument("--skip-embedding", action="store_true")
    args = parser.parse_args()

    from simcompare.c2st import C2STOptions, classifier_two_sample_test, preprocess

    spec = {"kind": "chain", "steps": [
        {"kind": "band_scale", "scale": [SKY_SIGMA_I], "shift": [0.0]},
        {"kind": "asinh", "softening": 10.0}]}
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    # twice the observed sample: the null test draws its own disjoint observed halves
    kw = {"size_dex": args.size_dex}
    obs, _ = population(2 * args.n, rng=rng, **kw)
    same, _ = population(args.n, rng=rng, **kw)
    clumpy, params = population(args.n, rng=rng, **kw)
    smooth, _ = population(args.n, rng=rng, clumps=False, params=params)
    larger, _ = population(args.n, rng=rng, scale=1.5, **kw)
    t_draw = time.perf_counter() - t0
    counts = [int(float(c)) for c in args.particles.split(",") if c.strip()]
    particles, t_part = {}, {}
    for n_part in counts:
        t = time.perf_counter()
        particles[n_part] = particle_population(args.n, rng=np.random.default_rng([args.seed, n_part]),
                                                n_part=n_part, size_dex=args.size_dex)
        t_part[n_part] = round(time.perf_counter() - t, 2)
    x_obs = preprocess(obs, spec)
    opts = C2STOptions(max_per_class=args.n,
                       **({"epochs": args.epochs} if args.epochs is not None else {}))
    from scipy.stats import norm

    # the best AUROC size alone can reach for 1.5x larger (Gaussian log sizes)
    size_only = float(norm.cdf(np.log10(1.5) / args.size_dex / np.sqrt(2)))
    result: dict = {"benchmark": "c2st", "n_per_sample": args.n, "size_dex": args.size_dex,
                    "size_only_auroc_bound_1.5x": round(size_only, 4), "stamp": STAMP, "bands": 1,
                    "options": opts.describe(), "draw_s": round(t_draw, 2),
                    "particle_render_s": {str(k): v for k, v in t_part.items()},
                    "python": platform.python_version(), "cases": {}}
    ids_o = np.arange(len(obs))
    cases = [("same_population", same), ("clumps_removed", smooth), ("larger_1.5x", larger)]
    cases += [(f"same_population_particles_{n_part}", particles[n_part]) for n_part in counts]
    for name, imgs in cases:
        x = preprocess(imgs, spec)
        t = time.perf_counter()
        res = classifier_two_sample_test(x, x_obs, sim_ids=np.arange(len(x)) + 10**6,
                                         obs_ids=ids_o, opts=opts, n_bootstrap=500,
                                         seed=args.seed)
        dt = time.perf_counter() - t
        n_img = res["n"]["sim"] + res["n"]["observed"]
        result["cases"][name] = {
            "auroc": round(res["value"], 4), "ci": [round(v, 4) for v in res["ci"]],
            "null_auroc": res["null"]["value"] and round(res["null"]["value"], 4),
            "null_ci": res["null"]["ci"] and [round(v, 4) for v in res["null"]["ci"]],
            "detected": res["detected"], "seconds": round(dt, 2),
            "seconds_per_image": round(dt / (2 * n_img), 5),
        }
    if not args.skip_embedding:
        from simcompare.embedding import EmbeddingOptions, embed, nearest_observed

        twins, _ = population(args.n, rng=rng, noise=False, params=params)
        x_sim = preprocess(clumpy, spec)
        # each twin turned by a random rotation/reflection: look-alikes must not need the
        # same orientation
        x_twin = preprocess(twins, spec)
        turns = rng.integers(0, 8, len(x_twin))
        for i, k in enumerate(turns):
            y = np.rot90(x_twin[i], k % 4, axes=(1, 2))
            x_twin[i] = np.flip(y, axis=2) if k >= 4 else y
        x_pool = np.concatenate([x_twin, x_obs])
        truth = np.arange(len(x_sim))
        result["embedding"] = {
            "pool": f"{len(x_twin)} noise-free twins (randomly rotated/reflected) + "
                    f"{len(x_obs)} other observed galaxies",
            "n_images": int(len(x_sim) + len(x_pool))}
        for method in ("pca", "autoencoder"):
            t = time.perf_counter()
            emb = embed(np.concatenate([x_sim, x_pool]), opts=EmbeddingOptions(method=method),
                        seed=args.seed)
            dt = time.perf_counter() - t
            z = emb["dihedral"]
            nn_idx, _ = nearest_observed(z[:, :len(x_sim)], z[0, len(x_sim):], k=1)
            result["embedding"][method] = {
                "method": emb["method"], "seconds": round(dt, 2),
                "seconds_per_image": round(dt / (len(x_sim) + len(x_pool)), 6),
                "twin_retrieval": round(float(np.mean(nn_idx[:, 0] == truth)), 4)}
        pix_idx, _ = nearest_observed(x_sim.reshape(len(x_sim), -1),
                                      x_pool.reshape(len(x_pool), -1), k=1)
        result["embedding"]["pixels_twin_retrieval_no_rotation_search"] = round(
            float(np.mean(pix_idx[:, 0] == truth)), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
