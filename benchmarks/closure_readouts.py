"""Read-outs of the fine-structure flows on closure workspaces: one AUROC per score (JSON).

Usage: python benchmarks/closure_readouts.py --work DIR [--seeds 0,1,2] [--particles 20000]
       [--variants same,noclumps,larger] [--orientations 1,4,8] [--n-bootstrap 300] [--max N]

``DIR`` is a ``benchmarks/closure.py --work DIR`` folder: per seed a workspace whose
trained model (three flows and their Sersic backgrounds, trained by the closure run) is
re-read here. For each variant the simulated population is rendered as the ``score``
render stage renders it (same descriptor, seed and noise; cached under
``<seed>/readouts/``), and the held-out observed test split of the model is the
reference. Every row of the output is a different way of turning the same flows' local
log-likelihood terms into one number per image; the training is the same for all rows,
so the rows differ only in the read-out:

``peak_o<k>``             sum of the largest 1/32 of the cells of the members' mean ratio
                          map on the finest grid, maps averaged over k orientations (the
                          default of ``score``: k = 4; :func:`scores.peak_of_map`)
``peak_frac<f>_o<k>``     the same with 1/f of the cells
``cell_max_o<k>``         the largest single cell
``member<m>_peak_o<k>``   one member's own map
``llr_o<k>``              the whole-stamp ratio (``llr_nats``)
``llr_footprint_o<k>``    the ratio over the galaxy's footprint
``llr_level<l>_o<k>``     one flow level's ratio (0 = finest)
``log_p_o<k>``            the raw log-likelihood (fine and global structure mixed)

AUROC = P(reference score > simulated score), with a bootstrap 95% interval over
galaxies; 0.5 is chance, above 0.5 the simulated images read less like the sky (clump
removal), below 0.5 more. ``aggregate`` gives the mean and standard deviation over seeds.
Scoring cost: every orientation is one pass of the three flows and their backgrounds
over the reference and each variant (about a minute per pass on 2 cores at 48 pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import closure_population as cp
from closure import over_seeds


def _model_and_observed(ws: Path) -> tuple[Path, Path]:
    """The seed's trained model folder and observed image set (from any run of the seed)."""
    runs = sorted((ws / ".simcompare" / "runs").glob("*/run.json"))
    if not runs:
        msg = f"{ws}: no score run (run benchmarks/closure.py --work on this folder first)"
        raise SystemExit(msg)
    paths = json.loads(runs[0].read_text())["paths"]
    return Path(paths["model"]), Path(paths["observed"])


def _mocks(ws: Path, info: dict, variant: str, n_part: int, seed: int, n_max: int | None) -> Path:
    from simcompare.mock import render
    from simcompare.registry import find_sim, find_survey

    spec = info["sims"][f"{variant}-{n_part}"]
    out = ws / "readouts" / f"mocks_{variant}_{n_part}{'' if n_max is None else f'_first{n_max}'}.h5"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        render(find_sim(spec["sim"], workspace=ws), find_survey(spec["survey"], workspace=ws),
               out=out, workspace=ws, stamp_size=info["stamp"], bands=tuple(info["bands"]),
               noise="survey", seed=seed, workers=2, n_galaxies=n_max)
    return out


def _members(model: Path, info: dict) -> list[tuple]:
    """Each member's frozen flow and background (loaded once per seed)."""
    from simcompare.density.model import DensityModel

    return [(DensityModel.load(model / m["model"]).freeze(device="cpu"),
             DensityModel.load(model / m["background"]).freeze(device="cpu"))
            for m in info["members"]]


def _scores(members: list[tuple], sigma: np.ndarray, x: np.ndarray,
            orientations: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every read-out of the prepared images ``x`` (N, B, H, W)."""
    from simcompare.density.scores import footprint_mask, local_scores, peak_of_map

    foot = footprint_mask(x, sigma=sigma)
    out: dict[str, np.ndarray] = {}
    for o in orientations:
        per = [local_scores(a, b, x, footprint=foot, batch=64, orientations=o) for a, b in members]
        mean_map = np.mean([p["llr_map"] for p in per], axis=0)
        out[f"peak_o{o}"] = peak_of_map(mean_map)
        for f in (8, 128):
            out[f"peak_frac{f}_o{o}"] = peak_of_map(mean_map, fraction=1.0 / f)
        out[f"cell_max_o{o}"] = mean_map.reshape(len(x), -1).max(axis=1)
        for m, p in enumerate(per):
            out[f"member{m}_peak_o{o}"] = peak_of_map(p["llr_map"])
        for key in ("llr", "llr_footprint", "log_p"):
            out[f"{key}_o{o}"] = np.mean([p[key] for p in per], axis=0)
        for lev in range(sum(1 for k in per[0] if k.startswith("llr_level"))):
            out[f"llr_level{lev}_o{o}"] = np.mean([p[f"llr_level{lev}"] for p in per], axis=0)
    return out


def _auroc_ci(sim: np.ndarray, ref: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    from simcompare.stats.metrics import auroc

    value = auroc(sim, ref)
    bs = auroc(sim[rng.integers(0, len(sim), (n_boot, len(sim)))],
               ref[rng.integers(0, len(ref), (n_boot, len(ref)))])
    lo, hi = np.quantile(bs, [0.025, 0.975])
    return {"value": round(float(value), 4), "ci": [round(float(lo), 4), round(float(hi), 4)]}


def run_seed(ws: Path, *, seed: int, variants: tuple[str, ...], n_part: int,
             orientations: tuple[int, ...], n_boot: int, n_max: int | None = None) -> dict:
    from simcompare import imageset
    from simcompare.density.evaluate import _prepare, _split_rows

    info = json.loads((ws / "population.json").read_text())
    missing = [v for v in variants if f"{v}-{n_part}" not in info["sims"]]
    if missing:  # write the particles of the variants the closure run did not ask for
        info = cp.write_all(ws, n_obs=info["n_obs"], n_sim=info["n_sim"], seed=seed,
                            particles=(n_part,), variants=tuple(variants), stamp=info["stamp"],
                            bands=tuple(info["bands"]))
    model, observed = _model_and_observed(ws)
    tinfo = json.loads((model / "training.json").read_text())
    sigma = np.asarray(tinfo["noise_sigma"])
    rows = _split_rows(model, observed, "test")[1][:n_max]  # the evaluate stage's test split
    t0 = time.perf_counter()
    members = _members(model, tinfo)
    ref = _scores(members, sigma, _prepare(imageset.read(observed, index=rows), tinfo), orientations)
    out: dict = {"n_reference": len(rows), "variants": {}}
    rng = np.random.default_rng([seed, 31])
    for v in variants:
        mocks = _mocks(ws, info, v, n_part, seed, n_max)
        sim = _scores(members, sigma, _prepare(imageset.read(mocks), tinfo), orientations)
        out["variants"][v] = {"n": len(next(iter(sim.values()))),
                              **{k: _auroc_ci(sim[k], ref[k], n_boot, rng) for k in sim}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def aggregate(per_seed: dict[int, dict]) -> dict:
    agg: dict = {}
    for res in per_seed.values():
        for v, scores in res["variants"].items():
            for k, e in scores.items():
                if isinstance(e, dict):
                    agg.setdefault(v, {}).setdefault(k, []).append(e["value"])
    for scores in agg.values():
        for k, vals in scores.items():
            scores[k] = over_seeds(vals, spread="sd")
    return agg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="a benchmarks/closure.py --work folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--particles", type=int, default=20000)
    ap.add_argument("--variants", default="same,noclumps,larger")
    ap.add_argument("--orientations", default="1,4,8")
    ap.add_argument("--n-bootstrap", type=int, default=300)
    ap.add_argument("--max", type=int, default=None,
                    help="at most this many galaxies per side (a quick check; default all)")
    args = ap.parse_args(argv)
    variants = tuple(args.variants.split(","))
    orientations = tuple(int(o) for o in args.orientations.split(","))
    t0 = time.perf_counter()
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        per_seed[seed] = run_seed(args.work / f"seed{seed}", seed=seed, variants=variants,
                                  n_part=args.particles, orientations=orientations,
                                  n_boot=args.n_bootstrap, n_max=args.max)
        print(json.dumps({"progress": seed, "seconds": per_seed[seed]["seconds"]}), file=sys.stderr,
              flush=True)
    out = {"benchmark": "closure_readouts", "options": {k: str(v) for k, v in vars(args).items()},
           "wall_s": round(time.perf_counter() - t0, 1), "aggregate": aggregate(per_seed),
           "seeds": per_seed}
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
