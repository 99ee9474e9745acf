"""Power of the fine-structure scores on a controlled clumpy population (prints one JSON).

A population of disc + bulge galaxies with compact clumps holding ``--clump-fraction`` of
the light (default 20%) is drawn with galsim at z = 0.1 in the HSC i band (pixel 0.168",
the Moffat PSF and sky noise of ``observed/hsc.toml``). Image sets:

* observed: ``--n-train`` training galaxies (10% of them for validation) plus ``--n-ref``
  held out as the model's own test split (its percentiles);
* reference: a fresh draw of ``--n-ref`` observed galaxies that no seed's model has seen
  (the same sample for every seed, so the ensemble mean over seeds is well defined);
* test sets of ``--n-test``: the same population (null), the clumps removed (same total
  flux), and 1.5x larger clumpy galaxies.

For each training seed the density model and its Sersic background are trained with
:func:`simcompare.density.train`; every score is then computed on the reference and the
test sets and compared by AUROC = P(score_reference > score_test) with a bootstrap 95% CI.
Scores (higher = more like the observed galaxies):

* ``llr``: log p_obs - log p_bg (the classic ratio);
* ``llr_level<k>``: the ratio restricted to flow level k (0 = finest);
* ``llr_footprint`` and ``llr_footprint_level<k>``: the ratio summed over the latent
  pixels inside the galaxy's footprint only;
* ``log_p``: the raw log-likelihood; ``complexity``: log p + L(x) ln 2 with L the PNG
  length in bits of the 8-bit quantised flow input (Serra et al. 2020);
* ``llr_peak``: the largest eighth of the ratio map's cells on the coarsest grid, summed;
* ``ensemble_*``: the mean of a score over all seeds' models (one value, no spread);
  with ``--ensemble-groups G`` also over G disjoint groups of seeds (their spread);
* ``asymmetry`` (``--statmorph``): statmorph's asymmetry; ``statmorph_classifier``: the
  cross-validated classifier AUROC on all statmorph parameters (the project's
  global-structure axis).

Run: ``python benchmarks/fine_structure_power.py [--quick]``. The figures of
docs/statistics.md came from one process per seed sharing a work folder (each caches its
scores there), then one run over all of them::

    for s in 0 1 2 3 4 5 6 7 8; do python benchmarks/fine_structure_power.py \
        --workdir W --seeds $s & done; wait
    python benchmarks/fine_structure_power.py --workdir W --statmorph --statmorph-only \
        --n-ref 150 --n-test 150 --statmorph-sets no_clumps same
    python benchmarks/fine_structure_power.py --workdir W --seeds 0 1 2 3 4 5 6 7 8 \
        --ensemble-groups 3 --statmorph --statmorph-sets no_clumps same

(the statmorph tables cached by the second command hold the first 150 galaxies of each
set). Wall times on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _survey():
    from simcompare.config import load_survey_descriptor

    return load_survey_descriptor(ROOT / "observed" / "hsc.toml")


def draw_population(n: int, *, seed: int, size: int, clumps: bool, size_scale: float = 1.0,
                    clump_fraction: float = 0.2, redshift: float = 0.1):
    """Galaxies drawn with galsim (i band, HSC PSF and sky noise); returns an ImageSet."""
    import galsim

    from simcompare.config import Cosmology
    from simcompare.imageset import ImageSet
    from simcompare.observed.demo import survey_psf_images

    sv = _survey()
    band = "i"
    scale = sv.pixel_scale_arcsec
    sigma = float(sv.noise.sky_sigma[band])
    psf = galsim.Moffat(beta=sv.psf.beta, fwhm=sv.psf.fwhm_arcsec[band])
    kpc = 1.0 / Cosmology().kpc_per_arcsec(redshift)  # arcsec per kpc
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, 1, size, size), np.float32)
    cat = {k: np.empty(n) for k in ("r_disc_arcsec", "bulge_fraction", "mag_i", "n_clumps")}
    for i in range(n):
        r_d = 1.5 * kpc * 10 ** rng.normal(0, 0.12) * size_scale
        bt = rng.uniform(0.0, 0.3)
        mag = rng.uniform(20.0, 22.5)
        flux = 10 ** (-0.4 * (mag - sv.zero_point))
        q = rng.uniform(0.35, 1.0)
        beta = rng.uniform(0, np.pi) * galsim.radians
        nc = 1 + rng.poisson(3) if clumps else 0
        smooth = flux * (1 - clump_fraction) if clumps else flux
        disc = galsim.Exponential(half_light_radius=r_d, flux=smooth * (1 - bt)).shear(
            q=q, beta=beta)
        bulge = galsim.DeVaucouleurs(half_light_radius=0.35 * r_d, flux=smooth * bt).shear(
            q=0.8, beta=beta)
        gal = disc + bulge
        if nc:
            # clump positions from the disc profile (exponential in radius, in the disc plane)
            rs = rng.gamma(2.0, r_d / 1.678, nc)
            ph = rng.uniform(0, 2 * np.pi, nc)
            w = rng.dirichlet(np.ones(nc)) * flux * clump_fraction
            ca, sa = math.cos(beta.rad), math.sin(beta.rad)
            for k in range(nc):
                u, v = rs[k] * math.cos(ph[k]), rs[k] * math.sin(ph[k]) * q
                gal += galsim.Gaussian(sigma=0.3 * kpc, flux=float(w[k])).shift(
                    u * ca - v * sa, u * sa + v * ca)
        off = rng.uniform(-0.5, 0.5, 2) * scale
        im = galsim.Convolve(gal, psf).shift(*off).drawImage(nx=size, ny=size, scale=scale)
        imgs[i, 0] = im.array + rng.normal(0, sigma, (size, size))
        for key, val in (("r_disc_arcsec", r_d), ("bulge_fraction", bt), ("mag_i", mag),
                         ("n_clumps", nc)):
            cat[key][i] = val
    catalog = {"object_id": np.arange(seed * 100000, seed * 100000 + n, dtype=np.int64),
               "redshift": np.full(n, redshift), **cat}
    return ImageSet(images=imgs, catalog=catalog, kind="observed", survey="hsc", bands=(band,),
                    pixel_scale_arcsec=scale, zero_point=sv.zero_point, flux_unit="counts",
                    variance=np.full(imgs.shape, sigma**2, np.float32),
                    psf=survey_psf_images(sv, bands=[band]))


def auroc_ci(test: np.ndarray, ref: np.ndarray, *, n_boot: int = 500, seed: int = 0):
    """AUROC = P(ref > test) (ties half) and its percentile bootstrap 95% CI."""
    from simcompare.stats.metrics import auroc

    test, ref = test[np.isfinite(test)], ref[np.isfinite(ref)]
    value = float(auroc(test, ref))
    rng = np.random.default_rng(seed)
    draws = [float(auroc(test[rng.integers(0, len(test), len(test))],
                         ref[rng.integers(0, len(ref), len(ref))])) for _ in range(n_boot)]
    return value, [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def png_bits(x: np.ndarray) -> np.ndarray:
    """PNG length in bits of each stamp's flow input quantised to 8 bits (Serra et al.)."""
    from PIL import Image

    out = np.empty(len(x))
    for i, img in enumerate(x):
        q = np.clip(np.round((img[0] + 5.0) / 45.0 * 255.0), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(q).save(buf, format="PNG", optimize=True)
        out[i] = 8 * len(buf.getvalue())
    return out


def _train_and_score(args, obs_path, out, seed, opts, sets):
    """Train one seed's model and background; all scores of the reference and test sets."""
    import torch

    from simcompare.density import train
    from simcompare.density.background import SURVEY_CONDITIONS, sersic_background_images
    from simcompare.density.data import prepared_images
    from simcompare.density.model import DensityModel
    from simcompare.density.scores import footprint_mask, local_scores

    t1 = time.perf_counter()
    train(obs_path, out=out, levels=args.levels, blocks=args.blocks, hidden=args.hidden,
          epochs=args.epochs, seed=seed, options=opts, resume=out.exists())
    train_s = time.perf_counter() - t1
    info = json.loads((out / "training.json").read_text())
    ref_set = sets["reference"]
    main = DensityModel.load(out / info["members"][0]["model"]).freeze()
    back = DensityModel.load(out / info["members"][0]["background"]).freeze()
    sigma = np.asarray(info["noise_sigma"])
    t2 = time.perf_counter()
    result: dict[str, dict[str, np.ndarray]] = {}
    for name, s in [("reference", ref_set), *[(k, sets[k]) for k in
                                              ("same", "no_clumps", "larger")]]:
        x = prepared_images(s, sigma=sigma, seed=seed)
        fp = footprint_mask(x, sigma=sigma)
        scores = local_scores(main, back, x, footprint=fp)
        area = np.maximum(fp.sum((1, 2)), 1)
        scores["llr_footprint_per_pixel"] = scores["llr_footprint"] / area
        # the image's own smooth twin: its Sersic fit re-rendered with fresh noise
        twin, _ = sersic_background_images(s, x, rng=np.random.default_rng(seed + 7),
                                           conditions=SURVEY_CONDITIONS)
        tw = local_scores(main, back, twin, footprint=fp)
        scores["llr_paired"] = scores["llr"] - tw["llr"]
        scores["llr_footprint_paired"] = scores["llr_footprint"] - tw["llr_footprint"]
        y = np.asarray(main.transform.forward_and_log_det(torch.from_numpy(x))[0])
        scores["complexity"] = scores["log_p"] + png_bits(y) * math.log(2)
        result[name] = scores
    score_s = time.perf_counter() - t2
    cost = {"seed": seed, "train_s": train_s, "score_s": score_s,
            "train_epochs_s": float(sum(m["seconds"] for m in info["models"])),
            "epochs_run": [m["epochs_run"] for m in info["models"]],
            "best_epoch": [m["best_epoch"] for m in info["models"]],
            "best_val_bits_per_dim": [m["best_val_bits_per_dim"] for m in info["models"]]}
    return result, cost


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-ref", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--clump-fraction", type=float, default=0.2)
    ap.add_argument("--statmorph", action="store_true", help="also statmorph asymmetry")
    ap.add_argument("--statmorph-sets", nargs="+", default=["no_clumps", "same", "larger"],
                    help="test sets measured with statmorph (it is slow)")
    ap.add_argument("--ensemble-groups", type=int, default=1,
                    help="split the seeds into this many disjoint ensembles")
    ap.add_argument("--workdir", default=None, help="keep the image sets and models here")
    ap.add_argument("--quick", action="store_true", help="tiny run to check the harness")
    ap.add_argument("--statmorph-only", action="store_true",
                    help="only measure (and cache) statmorph on the seed-0 split")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_ref, args.n_test, args.epochs = 200, 100, 100, 2
        args.seeds = args.seeds[:2]
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import logging

    logging.disable(logging.WARNING)
    import torch

    from simcompare import imageset
    from simcompare.density.train import TrainOptions

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fsp-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_obs = args.n_train + args.n_ref
    sets = {
        "observed": draw_population(n_obs, seed=1, size=args.size, clumps=True,
                                    clump_fraction=args.clump_fraction),
        # a fresh draw of the observed population: never seen in training by any seed's
        # model, so the scores of all seeds (and their ensemble mean) refer to one sample
        "reference": draw_population(args.n_ref, seed=5, size=args.size, clumps=True,
                                     clump_fraction=args.clump_fraction),
        "same": draw_population(args.n_test, seed=2, size=args.size, clumps=True,
                                clump_fraction=args.clump_fraction),
        "no_clumps": draw_population(args.n_test, seed=3, size=args.size, clumps=False),
        "larger": draw_population(args.n_test, seed=4, size=args.size, clumps=True,
                                  size_scale=1.5, clump_fraction=args.clump_fraction),
    }
    draw_s = time.perf_counter() - t0
    obs_path = work / "observed.h5"
    if not obs_path.exists():
        imageset.write(obs_path, sets["observed"])
    opts = TrainOptions(test_fraction=args.n_ref / n_obs, patience=args.patience)
    results: dict[str, dict[str, list]] = {}
    per_seed_scores: dict[str, dict[str, list[np.ndarray]]] = {}
    costs = []
    for seed in [] if args.statmorph_only else args.seeds:
        out = work / f"model_s{seed}"
        cache = work / f"scores_s{seed}.npz"
        if cache.exists() and (work / f"cost_s{seed}.json").exists():
            loaded = np.load(cache)
            for full in loaded.files:
                name, key = full.split("/")
                per_seed_scores.setdefault(name, {}).setdefault(key, []).append(loaded[full])
            costs.append(json.loads((work / f"cost_s{seed}.json").read_text()))
        else:
            scored = _train_and_score(args, obs_path, out, seed, opts, sets)
            np.savez(cache, **{f"{n}/{k}": v for n, sc in scored[0].items() for k, v in sc.items()})
            (work / f"cost_s{seed}.json").write_text(json.dumps(scored[1]))
            for name, sc in scored[0].items():
                for key, val in sc.items():
                    per_seed_scores.setdefault(name, {}).setdefault(key, []).append(val)
            costs.append(scored[1])
        for key in per_seed_scores["reference"]:
            for test in ("same", "no_clumps", "larger"):
                v, ci = auroc_ci(per_seed_scores[test][key][-1],
                                 per_seed_scores["reference"][key][-1])
                results.setdefault(key, {}).setdefault(test, []).append(
                    {"seed": seed, "auroc": v, "ci": ci})
    summary: dict = {}
    for key, tests in results.items():
        row = {}
        for test, entries in tests.items():
            vals = [e["auroc"] for e in entries]
            row[test] = {"auroc": vals, "mean": float(np.mean(vals)),
                         "spread": float(np.ptp(vals)),
                         "ci_first": entries[0]["ci"]}
        summary[key] = row
    if len(args.seeds) > 1 and not args.statmorph_only:
        groups = [list(range(len(args.seeds)))]
        if args.ensemble_groups > 1:
            size = len(args.seeds) // args.ensemble_groups
            groups = [list(range(g * size, (g + 1) * size)) for g in range(args.ensemble_groups)]
        for key in per_seed_scores["reference"]:
            row = {}
            for test in ("same", "no_clumps", "larger"):
                vals, cis = [], []
                for members in groups:
                    ref = np.mean([per_seed_scores["reference"][key][j] for j in members], 0)
                    v, ci = auroc_ci(np.mean([per_seed_scores[test][key][j] for j in members],
                                             0), ref)
                    vals.append(v)
                    cis.append(ci)
                row[test] = {"auroc": vals, "mean": float(np.mean(vals)),
                             "spread": float(np.ptp(vals)) if len(vals) > 1 else None,
                             "ci_first": cis[0]}
            summary[f"ensemble_{key}"] = row
        summary["ensemble_groups"] = [[args.seeds[j] for j in g] for g in groups]
    if args.statmorph:
        import pandas as pd

        from simcompare.morphology import measure_imageset

        ref_set = sets["reference"]

        t3 = time.perf_counter()
        morph = {}
        for name, s in [("reference", ref_set), *[(k, sets[k]) for k in args.statmorph_sets]]:
            path = work / f"morphology_{name}.parquet"
            if not path.exists():
                measure_imageset(s, band="i").to_parquet(path)
            morph[name] = pd.read_parquet(path)
        row = {}
        for test in args.statmorph_sets:
            v, ci = auroc_ci(morph[test]["asymmetry"].to_numpy(float),
                             morph["reference"]["asymmetry"].to_numpy(float))
            row[test] = {"auroc": [v], "mean": v, "spread": None, "ci_first": ci}
        row["n_per_set"] = {k: len(v) for k, v in morph.items()}
        summary["asymmetry"] = row
        # the project's global-structure axis: cross-validated classifier on all parameters
        from simcompare.stats.classifier import cross_validated_auroc
        from simcompare.stats.morphology import _LOG_PARAMETERS, MORPHOLOGY_PARAMETERS

        def features(d):
            d = d[d["flag"] < 2]
            x = np.column_stack([np.log10(d[c]) if c in _LOG_PARAMETERS else d[c]
                                 for c in MORPHOLOGY_PARAMETERS]).astype(float)
            return x[np.isfinite(x).all(1)]

        crow = {}
        for test in args.statmorph_sets:
            res = cross_validated_auroc(features(morph[test]), features(morph["reference"]),
                                        n_bootstrap=300, n_null=3,
                                        rng=np.random.default_rng(0))
            crow[test] = {"auroc": [res["value"]], "mean": res["value"], "spread": None,
                          "ci_first": res["ci"]}
        summary["statmorph_classifier"] = crow
        summary["asymmetry"]["seconds"] = time.perf_counter() - t3
    print(json.dumps({
        "benchmark": "fine_structure_power",
        "setup": {"bands": ["i"], "stamp": args.size, "n_train": args.n_train,
                  "n_ref": args.n_ref, "n_test": args.n_test, "levels": args.levels,
                  "blocks": args.blocks, "hidden": args.hidden, "epochs": args.epochs,
                  "patience": args.patience, "clump_fraction": args.clump_fraction,
                  "seeds": args.seeds, "mag_i": [20.0, 22.5], "redshift": 0.1,
                  "threads": int(os.environ["OMP_NUM_THREADS"])},
        "draw_seconds": draw_s, "costs": costs, "auroc": summary,
        "note": "AUROC = P(score_reference > score_test); 0.5 = no difference; wall times "
                "on a shared 2-core machine are noisy",
    }))


if __name__ == "__main__":
    main()
