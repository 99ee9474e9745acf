"""The ``appearance`` stage: classifier test, appearance embedding and mismatch maps.

Reads the mocks, the observed sample, the trained model folder and the evaluate stage's
score tables; writes into one folder

``appearance.json``          the classifier test (``any_difference`` axis) with its null,
                             the alignment fraction with its null, the embedding's
                             definition, the look-alike definition, timings
``appearance.npz``           arrays the report draws: 2-D map coordinates of every
                             simulated and observed galaxy, the ``k`` nearest observed
                             look-alikes of every simulated galaxy and their distances,
                             occlusion mismatch maps of the least typical simulated galaxies
``sim_scores.parquet``       the evaluate table plus ``p_simulated`` (out-of-fold
                             probability of being simulated; NaN for galaxies outside the
                             test's random subset), ``c2st_fold`` and the nearest look-alike
``reference_scores.parquet`` the held-out observed table plus the same columns

The report reads these files only; nothing here is computed when the report is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import imageset
from ._io import write_json_atomic, write_parquet_atomic
from .stats.metrics import by_typicality

__all__ = ["LOOKALIKE_K", "MAP_GRID", "MAX_IMAGES", "N_MAPS", "add_to_summary", "least_typical", "run"]

log = logging.getLogger(__name__)

#: Observed look-alikes kept per simulated galaxy.
LOOKALIKE_K = 3
#: Patches per side of a mismatch map.
MAP_GRID = 8
#: Least typical simulated galaxies that get a mismatch map (the report's gallery size).
N_MAPS = 12
#: At most this many galaxies per sample enter the stage (embedding, look-alike pool).
MAX_IMAGES = 5000


def least_typical(score: np.ndarray, reference: np.ndarray | None, n: int) -> np.ndarray:
    """Rows of the ``n`` simulated galaxies furthest from the observed median score.

    The rule of the report's galleries: distance from the median of the held-out observed
    scores on either side, ties broken by row order; non-finite scores are not ranked.

    Parameters
    ----------
    score : ndarray
        The simulated galaxies' scores.
    reference : ndarray or None
        The held-out observed scores (None: the simulated median).
    n : int
        How many rows to return.

    Returns
    -------
    ndarray of int
        Row positions, least typical first.
    """
    good = np.flatnonzero(np.isfinite(np.asarray(score, float)))
    if good.size == 0:
        return good
    order, _ = by_typicality(score, reference, candidates=good)
    return order[::-1][:n]


def _table_with(df: Any, ids: np.ndarray, columns: dict[str, np.ndarray]) -> Any:
    """``df`` with extra per-object columns looked up by object_id (NaN / -1 where absent)."""
    import pandas as pd

    out = df.copy()
    index = pd.Index(np.asarray(ids, np.int64))
    pos = index.get_indexer(out["object_id"].to_numpy(np.int64))
    for name, values in columns.items():
        values = np.asarray(values)
        fill = -1 if values.dtype.kind in "iu" else np.nan
        col = np.full(len(out), fill, dtype=values.dtype if values.dtype.kind in "iu" else float)
        col[pos >= 0] = values[pos[pos >= 0]]
        out[name] = col
    return out


def run(*, mocks: str | os.PathLike, observed: str | os.PathLike, model: str | os.PathLike,
        sim_scores: str | os.PathLike, reference_scores: str | os.PathLike,
        out: str | os.PathLike, seed: int = 0, n_bootstrap: int = 500, device: str = "cpu",
        mass_window_dex: float | None = None, classifier_epochs: int = 50,
        orientations: int | None = None, progress: bool = False) -> Path:
    """Run the stage (see the module notes) and write its files into ``out``.

    Parameters
    ----------
    mocks, observed : path
        The simulated and observed ImageSets.
    model : path
        The trained model folder (its preprocessing and scorers are used).
    sim_scores, reference_scores : path
        The evaluate stage's simulated table and the model's held-out observed table.
    out : path
        Folder to write (created).
    seed : int
    n_bootstrap : int
        Bootstrap resamples of the intervals (default 500).
    device : str
        Device of the density model for the mismatch maps (default cpu).
    mass_window_dex : float, optional
        Look-alikes only within this many dex of stellar mass (when both catalogues have
        ``stellar_mass_msun``); default None: by appearance alone.
    classifier_epochs : int
        Training epochs per fold of the image classifier (default 50, as
        :class:`simcompare.c2st.C2STOptions`).
    orientations : {1, 4, 8}, optional
        Orientations the mismatch maps' scores average over, as the run's scores
        (default the model's).
    progress : bool
        Show a bar of the stage's three steps (classifier, embedding, maps).
    """
    import pandas as pd

    from ._progress import bar as _bar
    from .c2st import C2STOptions, classifier_two_sample_test, model_views
    from .embedding import EmbeddingOptions, alignment_fraction, embed, nearest_observed, pca_2d
    from .mismatch import density_score, occlusion_maps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(model)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    # at most MAX_IMAGES per sample are read (a seeded random subset, in file order)
    pick_rng = np.random.default_rng([seed, 5000])
    subsets = []
    for path in (mocks, observed):
        n_all = len(imageset.read_catalog(path)["object_id"])
        subsets.append(None if n_all <= MAX_IMAGES
                       else np.sort(pick_rng.permutation(n_all)[:MAX_IMAGES]))
    s_sim = imageset.read(mocks, index=subsets[0])
    s_obs = imageset.read(observed, index=subsets[1])
    (f_sim, x_sim), (_, x_obs) = model_views(model, s_sim, s_obs)
    sim_ids, obs_ids = s_sim.object_id.astype(np.int64), s_obs.object_id.astype(np.int64)
    timings["prepare"] = round(time.perf_counter() - t, 3)

    steps = _bar(desc="appearance", total=3, enable=progress, unit="step")
    steps.set_postfix_str("classifier")
    # 1. classifier two-sample test
    c2 = classifier_two_sample_test(x_sim, x_obs, sim_ids=sim_ids, obs_ids=obs_ids,
                                    opts=C2STOptions(epochs=classifier_epochs),
                                    n_bootstrap=n_bootstrap, seed=seed)
    timings["classifier"] = c2["seconds"]
    per = c2.pop("per_galaxy")
    steps.update()
    steps.set_postfix_str("embedding")

    # 2. appearance embedding, look-alikes, alignment fraction, 2-D map
    t = time.perf_counter()
    emb = embed(np.concatenate([x_sim, x_obs]), opts=EmbeddingOptions(), seed=seed)
    z = emb["dihedral"]
    z_sim, z_obs = z[:, :len(x_sim)], z[:, len(x_sim):]
    mass_s = s_sim.catalog.get("stellar_mass_msun")
    mass_o = s_obs.catalog.get("stellar_mass_msun")
    window = mass_window_dex if (mass_s is not None and mass_o is not None) else None
    look_idx, look_d = nearest_observed(z_sim, z_obs[0], k=LOOKALIKE_K, query_mass=mass_s,
                                        pool_mass=mass_o, mass_window_dex=window)
    look_ids = np.where(look_idx >= 0, obs_ids[np.clip(look_idx, 0, None)], -1)
    align = alignment_fraction(z_sim, z_obs, k=10, n_bootstrap=n_bootstrap, seed=seed)
    coords, share = pca_2d(z[0])
    timings["embedding"] = round(time.perf_counter() - t, 3)
    steps.update()
    steps.set_postfix_str("mismatch maps")

    # 3. occlusion maps of the least typical simulated galaxies
    t = time.perf_counter()
    sim_df = pd.read_parquet(sim_scores)
    ref_df = pd.read_parquet(reference_scores)
    column = "llr_nats" if np.isfinite(sim_df["llr_nats"].to_numpy(float)).any() else "log_prob_nats"
    row_of = pd.Index(sim_ids).get_indexer(sim_df["object_id"].to_numpy(np.int64))
    score_v = np.where(row_of >= 0, sim_df[column].to_numpy(float), np.nan)
    picked = least_typical(score_v, ref_df[column].to_numpy(float) if column in ref_df else None,
                           N_MAPS)
    rows = row_of[picked]
    maps = {"maps": np.zeros((0, MAP_GRID, MAP_GRID)), "score": np.zeros(0), "patch": 0,
            "object_id": np.zeros(0, np.int64)}
    maps_note = None
    if rows.size and s_sim.psf is not None and s_sim.images.shape[-1] % MAP_GRID == 0:
        score_fn, what = density_score(model, device=device, orientations=orientations)
        sub = s_sim.subset(np.isin(np.arange(len(s_sim)), rows))
        order = np.argsort(rows)  # subset keeps file order
        maps = occlusion_maps(sub, f_sim[np.sort(rows)], score=score_fn, grid=MAP_GRID, seed=seed)
        back = np.argsort(order)  # back to least-typical order
        maps = {k: (v[back] if isinstance(v, np.ndarray) else v) for k, v in maps.items()}
    else:
        what = None
        maps_note = ("no mismatch maps: the mock ImageSet has no PSF or the stamp side is not "
                     f"divisible by {MAP_GRID}") if rows.size else "no ranked simulated galaxy"
    timings["maps"] = round(time.perf_counter() - t, 3)
    steps.update()
    steps.close()

    # 4. files
    p_ids = per["object_id"]
    is_sim = per["sample"] == "sim"
    extra_sim = {"p_simulated": per["p_simulated"][is_sim],
                 "c2st_fold": per["fold"][is_sim].astype(np.int64)}
    look_cols = {"lookalike_object_id": look_ids[:, 0].astype(np.int64),
                 "lookalike_distance": look_d[:, 0]}
    write_parquet_atomic(_table_with(_table_with(sim_df, p_ids[is_sim], extra_sim), sim_ids,
                                     look_cols), out / "sim_scores.parquet")
    write_parquet_atomic(_table_with(ref_df, p_ids[~is_sim],
                                     {"p_simulated": per["p_simulated"][~is_sim],
                                      "c2st_fold": per["fold"][~is_sim].astype(np.int64)}),
                         out / "reference_scores.parquet")
    np.savez_compressed(
        out / "appearance.npz",
        sim_object_id=sim_ids, obs_object_id=obs_ids,
        sim_xy=coords[:len(x_sim)], obs_xy=coords[len(x_sim):], pca_variance_share=share,
        lookalike_object_id=look_ids, lookalike_row=look_idx, lookalike_distance=look_d,
        map_object_id=maps["object_id"], maps=maps["maps"], map_score=maps["score"],
        map_patch=np.int64(maps["patch"]))
    summary = {
        "schema": "simcompare.appearance", "schema_version": 1,
        "any_difference": c2,
        "alignment": align,
        "embedding": {"method": emb["method"], "options": emb["options"],
                      "seconds": emb["seconds"], "map": "first two principal components of "
                      "the embedding (shares of its variance: "
                      + ", ".join(f"{100 * v:.0f}%" for v in share) + ")"},
        "lookalikes": {"k": LOOKALIKE_K, "mass_window_dex": window,
                       "definition": ("nearest observed galaxies by appearance: " + emb["method"]
                                      + (f"; within {window} dex of stellar mass" if window else "")),
                       "pool": ("all observed galaxies of the sample" if subsets[1] is None
                                else f"a random {MAX_IMAGES} of the observed galaxies")},
        "maps": {"grid": MAP_GRID, "patch_pixels": int(maps["patch"]), "score": what,
                 "column": column, "n": len(maps["object_id"]), "note": maps_note},
        "seed": int(seed), "timings_s": timings,
    }
    write_json_atomic(out / "appearance.json", summary)
    log.info("appearance: classifier AUROC %.3f %s (null %s), alignment %.2f",
             c2["value"], c2["ci"], c2["null"].get("value"), align["value"])
    return out


def _captured(axis: Any, total: float) -> float | None:
    if not isinstance(axis, dict) or axis.get("value") is None or total <= 0:
        return None
    return float(min(1.0, abs(float(axis["value"]) - 0.5) / total))


def add_to_summary(summary: dict[str, Any], appearance_json: str | os.PathLike) -> dict[str, Any]:
    """Put the stage's results into a comparison summary: ``axes.any_difference``, ``alignment``.

    ``any_difference`` also says how much of the separable difference each of the other
    axes captures: ``|AUROC_axis - 0.5| / |AUROC_classifier - 0.5|``, capped at 1 (None
    when the classifier finds no separation).
    """
    data = json.loads(Path(appearance_json).read_text())
    c2 = data["any_difference"]
    total = abs(float(c2["value"]) - 0.5)
    axes = summary.setdefault("axes", {})
    entry = {k: c2[k] for k in ("metric", "value", "ci", "ci_contains_null_value", "detected",
                                "null", "n", "method", "options")}
    entry["captured"] = {
        "fine_structure": _captured(axes.get("fine_structure"), total),
        "global_structure": _captured(axes.get("global_structure"), total),
        "definition": ("|AUROC of the axis - 0.5| / |AUROC of the classifier - 0.5|, capped at 1: "
                       "the share of the separation the image classifier finds that the axis "
                       "also finds"),
    }
    axes["any_difference"] = entry
    summary["alignment"] = data["alignment"]
    summary["lookalikes"] = data["lookalikes"]
    return summary
