"""Population statistics between simulated and observed galaxies, with bootstrap CIs.

:func:`compare` turns two per-image score tables (the output of
``simcompare.density.evaluate``: one for the simulated galaxies, one for the held-out
observed test split) and, optionally, two morphology tables (the output of
:func:`simcompare.morphology.measure`) into the JSON-serialisable ``summary.json``
record described in ``docs/ARCHITECTURE.md`` and ``docs/statistics.md``.

Directions
----------
* ``auroc`` = P(reference score > simulated score) + 0.5 P(tie). 0.5 means the two
  score distributions are indistinguishable; above 0.5 the simulated galaxies score
  *lower* than observed ones, i.e. the simulation is less typical of the survey.
* ``median_shift`` = median(sim) - median(reference), in the score's unit (nats).
* ``wasserstein`` = Wasserstein-1 distance between the two score distributions (nats).
* ``typical_fraction`` = share of simulated galaxies scoring above the reference's 5th
  percentile (0.95 when the populations agree).

Every metric carries a bootstrap CI (galaxies resampled with replacement within each
population) and the same metric on observed-vs-observed half splits of the reference
(the null test). Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_path, write_text_atomic
from .errors import ConfigError, DataFormatError, DataNotFoundError
from .stats.classifier import (
    _LOG_COLUMNS,
    _bin_edges,
    _bin_index,
    _jsonable_edges,
    _match_columns,
    _observed_redshift,
    _transform,
    cross_validated_auroc,
    matched_indices,
)
from .stats.metrics import (
    FINE_STRUCTURE_COLUMN,
    MIN_GALAXIES,
    _ci,
    _finite,
    auroc,
    bootstrap_metrics,
    typical_fraction,
    wasserstein1,
)
from .stats.verdict import _verdict, attach_floor

__all__ = [
    "DEFAULT_MATCH_COLUMNS",
    "FINE_STRUCTURE_COLUMN",
    "MIN_GALAXIES",
    "MORPHOLOGY_PARAMETERS",
    "attach_floor",
    "auroc",
    "bootstrap_metrics",
    "compare",
    "compare_files",
    "cross_validated_auroc",
    "league_table",
    "load_table",
    "typical_fraction",
    "wasserstein1",
    "write_summary",
]


log = logging.getLogger(__name__)


SCHEMA = "simcompare.summary"


SCHEMA_VERSION = 1


#: Score columns tried in turn when the default one is missing or all-NaN (tables of an
#: older simcompare; models without a background).
_FALLBACKS = {FINE_STRUCTURE_COLUMN: ("llr_nats", "log_prob_nats"), "llr_nats": ("log_prob_nats",)}


#: Fewer galaxies than this per side in a bin and the bin is reported as skipped.
MIN_PER_BIN = 10


#: Catalogue columns used for matching, when both tables carry them (finite values).
DEFAULT_MATCH_COLUMNS = ("stellar_mass_msun", "redshift", "half_mass_radius_kpc")


#: Morphology parameters compared one by one and fed to the global-structure classifier.
MORPHOLOGY_PARAMETERS = (
    "r_half_arcsec", "sersic_n", "concentration", "asymmetry", "smoothness", "gini", "m20",
    "ellipticity", "snr",
)


# parameters that enter the classifier as log10 (positive, multiplicative spread)
_LOG_PARAMETERS = ("r_half_arcsec", "sersic_n", "snr")


# ----------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------
def load_table(table: Any, *, what: str = "table"):
    """Return a :class:`pandas.DataFrame` from a DataFrame or a Parquet/CSV path.

    Parameters
    ----------
    table : DataFrame or path-like
        The table itself, or a ``.parquet`` / ``.csv`` file.
    what : str
        Name used in error messages.
    """
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.exists():
        msg = f"{what} {path} does not exist; create it with 'simcompare evaluate' or pass a DataFrame"
        raise DataNotFoundError(msg)
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        msg = f"{what} {path} is not a readable Parquet/CSV table ({exc}); regenerate it"
        raise DataFormatError(msg) from None


# ----------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------
def _choose_column(sim_df, ref_df, column: str) -> tuple[str, str | None]:
    fallbacks = _FALLBACKS.get(column, ())
    for df, what in ((sim_df, "simulated"), (ref_df, "reference")):
        if column not in df.columns and not fallbacks:
            msg = (f"the {what} score table has no column {column!r}; choose one of "
                   f"{sorted(df.columns)}")
            raise ConfigError(msg)

    def empty(df, col: str) -> bool:
        return col not in df.columns or not np.isfinite(np.asarray(df[col], float)).any()

    if fallbacks and (empty(sim_df, column) or empty(ref_df, column)):
        for fallback in fallbacks:
            if empty(sim_df, fallback) or empty(ref_df, fallback):
                continue
            if fallback == "log_prob_nats":
                reason = (f"{column} is missing or all-NaN (no background model); the raw "
                          "log-likelihood log_prob_nats is compared instead, which mixes fine "
                          "and global structure")
            else:
                reason = (f"{column} is missing or all-NaN (a score table of an older "
                          f"simcompare); {fallback} is compared instead")
            log.warning(reason)
            return fallback, reason
        msg = (f"the score tables have no finite {column} nor any of {list(fallbacks)}; "
               "regenerate them with 'simcompare evaluate'")
        raise DataFormatError(msg)
    if empty(sim_df, column) or empty(ref_df, column):
        msg = f"column {column!r} has no finite values; choose another score column"
        raise DataFormatError(msg)
    return column, None


def _morphology_block(
    morph_sim, morph_ref, sim_df, ref_df, *, n_bootstrap: int, n_null: int,
    rng: np.random.Generator, confidence: float, match_columns: Sequence[str],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per-parameter statistics, flag counts and the global-structure axis."""
    ms = load_table(morph_sim, what="simulated morphology table")
    mr = load_table(morph_ref, what="reference morphology table")
    # restrict the reference to the held-out objects that were scored, when they overlap
    if "object_id" in mr.columns and "object_id" in ref_df.columns:
        keep = mr["object_id"].isin(ref_df["object_id"])
        if keep.any() and not keep.all():
            mr = mr[keep]
    flags = {"sim": _flag_summary(ms), "reference": _flag_summary(mr)}
    ms_good = _usable_rows(ms)
    mr_good = _usable_rows(mr)
    params = [p for p in MORPHOLOGY_PARAMETERS if p in ms.columns and p in mr.columns]
    params += sorted(c for c in ms.columns if c.startswith("colour_") and c in mr.columns)

    # attach catalogue columns (from the score tables) for matching
    def with_cat(m, scores):
        cols = [c for c in match_columns if c in scores.columns and c not in m.columns]
        if not cols or "object_id" not in scores.columns:
            return m
        return m.merge(scores[["object_id", *cols]].drop_duplicates("object_id"),
                       on="object_id", how="left")

    ms_good = with_cat(ms_good, sim_df)
    mr_good = with_cat(mr_good, ref_df)
    rng_par, rng_match, rng_glob = rng.spawn(3)
    mcols = _match_columns(ms_good, mr_good, match_columns)
    match = None
    if mcols:
        match = matched_indices(ms_good, mr_good, columns=mcols, rng=rng_match)

    per_param: dict[str, Any] = {}
    for p, prng in zip(params, rng_par.spawn(len(params)), strict=True):
        a = np.asarray(ms_good[p], float)
        b = np.asarray(mr_good[p], float)
        entry = _param_stats(a, b, n_bootstrap=n_bootstrap, n_null=n_null, rng=prng,
                             confidence=confidence)
        if match is not None and match["sim_index"].size >= MIN_PER_BIN:
            entry["matched"] = _param_stats(
                a[match["sim_index"]], b[match["ref_index"]], n_bootstrap=n_bootstrap,
                n_null=n_null, rng=prng, confidence=confidence)
            entry["matched"]["columns"] = mcols
        per_param[p] = entry

    # global axis: cross-validated classifier on the parameter vector
    feats = [p for p in params if np.isfinite(np.asarray(ms_good[p], float)).mean() > 0.5
             and np.isfinite(np.asarray(mr_good[p], float)).mean() > 0.5]

    # with matching columns, compare at fixed mass/redshift: matched samples, and the
    # matching columns enter the classifier as covariates (they carry no information on
    # their own after matching, but let it use e.g. the size-mass or S/N-mass relation)
    covariates = mcols if match is not None and match["sim_index"].size >= MIN_PER_BIN else []

    def matrix(df, rows: np.ndarray | None) -> np.ndarray:
        if rows is not None:
            df = df.iloc[rows]
        cols = []
        for p in feats:
            v = np.asarray(df[p], float)
            if p in _LOG_PARAMETERS:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.log10(v)
            cols.append(v)
        cols += [_transform(c, np.asarray(df[c], float)) for c in covariates]
        m = np.column_stack(cols) if cols else np.zeros((len(df), 0))
        return m[np.all(np.isfinite(m), axis=1)]

    if covariates:
        xs, xr = matrix(ms_good, match["sim_index"]), matrix(mr_good, match["ref_index"])
    else:
        xs, xr = matrix(ms_good, None), matrix(mr_good, None)
    glob: dict[str, Any] = {"metric": "classifier_auroc", "parameters": feats,
                            "conditioned_on": list(covariates), "matched": bool(covariates),
                            "n": {"sim": len(xs), "reference": len(xr)}}
    if feats and len(xs) >= 2 and len(xr) >= 4:
        glob |= cross_validated_auroc(xs, xr, n_bootstrap=n_bootstrap,
                                      n_null=max(1, min(n_null, 10)), rng=rng_glob,
                                      confidence=confidence)
    else:
        glob |= {"value": None, "ci": None, "null": None,
                 "skipped": "too few galaxies with usable morphology"}
    return per_param, flags, glob


def _param_stats(a: np.ndarray, b: np.ndarray, *, n_bootstrap: int, n_null: int,
                 rng: np.random.Generator, confidence: float) -> dict[str, Any]:
    from scipy import stats

    full = bootstrap_metrics(a, b, n_bootstrap=n_bootstrap, n_null=n_null, rng=rng,
                             confidence=confidence)
    if "skipped" in full:
        return full
    fa, fb = _finite(a), _finite(b)
    # KS statistic with a (basic) bootstrap CI
    rb = rng.spawn(1)[0]
    d = float(full["ks_pvalue"]["statistic"])
    dd = np.array([stats.ks_2samp(fa[rb.integers(0, fa.size, fa.size)],
                                  fb[rb.integers(0, fb.size, fb.size)], method="asymp").statistic
                   for _ in range(min(n_bootstrap, 300))])
    ci = _ci(d, dd, confidence=confidence, method="basic")
    ks = {"value": d, "ci": ci, "ci_method": "basic", "pvalue": full["ks_pvalue"]["value"],
          "null_value": 0.0, "ci_contains_null_value": bool(ci[0] <= 0.0 <= ci[1]),
          "null": {"pvalue": full["ks_pvalue"]["null"]} if full["ks_pvalue"]["null"] else None}
    return {"n": full["n"],
            "median": {"sim": float(np.median(fa)), "reference": float(np.median(fb))},
            "median_shift": full["median_shift"], "wasserstein": full["wasserstein"],
            "ks": ks, "auroc": full["auroc"]}


def _flag_summary(m) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(m)}
    if "flag" in m.columns:
        f = np.asarray(m["flag"], float)
        out["flag_counts"] = {str(int(v)): int(np.sum(f == v)) for v in np.unique(f[np.isfinite(f)])}
    if "failure_reason" in m.columns:
        r = m["failure_reason"].fillna("").astype(str)
        out["failures"] = {k: int(v) for k, v in r[r != ""].value_counts().items()}
    return out


def _usable_rows(m):
    keep = np.ones(len(m), bool)
    if "failure_reason" in m.columns:
        keep &= (m["failure_reason"].fillna("").astype(str) == "").to_numpy()
    if "flag" in m.columns:
        keep &= (np.asarray(m["flag"], float) <= 1)  # statmorph: 0 good, 1 suspect
    return m[keep].reset_index(drop=True)


def compare(
    scores: Any, reference: Any, *, column: str = FINE_STRUCTURE_COLUMN, n_bootstrap: int = 1000,
    n_null: int = 50, seed: int = 0, morphology: Any = None, morphology_reference: Any = None,
    confidence: float = 0.95, match_columns: Sequence[str] = DEFAULT_MATCH_COLUMNS,
    n_bins: int = 4, min_galaxies: int = MIN_GALAXIES, floor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare simulated with reference (held-out observed) galaxies; the summary.json record.

    Parameters
    ----------
    scores, reference : DataFrame or path-like
        Score tables from ``simcompare.density.evaluate`` (Parquet or CSV): simulated
        galaxies and the held-out observed test split.
    column : str
        Score column compared (default :data:`FINE_STRUCTURE_COLUMN`,
        ``"llr_peak_nats"``: the log-likelihood ratio summed over the eighth of the stamp
        where it is largest, in nats). When it is missing or all-NaN, ``llr_nats`` (a table of an older
        simcompare) or ``log_prob_nats`` (no background model) is used instead and the
        summary says so (``column_requested``, ``column_fallback_reason``).
    n_bootstrap : int
        Bootstrap draws per CI.
    n_null : int
        Half splits of the reference for the null test.
    seed : int
        Seed of every random choice (bootstrap, splits, matching, cross-validation).
    morphology, morphology_reference : DataFrame or path-like, optional
        Tables from :func:`simcompare.morphology.measure` for the simulated and the
        reference galaxies; they give the global-structure axis.
    confidence : float
        Confidence level of every interval.
    match_columns : sequence of str
        Catalogue columns to match on when both tables carry them.
    n_bins : int
        Quantile bins (of the reference) per matching column.
    min_galaxies : int
        Below this many galaxies on either side the verdict is "too few galaxies".
    floor : dict, optional
        The pipeline floor (:func:`simcompare.floor.measure_floor`'s record). Each axis
        then gets ``pipeline_floor`` and the verdict compares the simulation with the
        floor instead of with 0.5 (see :func:`attach_floor`).

    Returns
    -------
    dict
        JSON-serialisable summary (schema ``simcompare.summary`` version 1).
    """
    if n_null < 1:
        msg = f"n_null={n_null}: the null test needs at least 1 split (default 50)"
        raise ConfigError(msg)
    sim_df = _observed_redshift(load_table(scores, what="simulated score table"))
    ref_df = _observed_redshift(load_table(reference, what="reference score table"))
    used, fallback = _choose_column(sim_df, ref_df, column)
    root = np.random.default_rng(seed)
    rng_main, rng_match, rng_bins, rng_morph = root.spawn(4)

    sim = np.asarray(sim_df[used], float)
    ref = np.asarray(ref_df[used], float)
    main = bootstrap_metrics(sim, ref, n_bootstrap=n_bootstrap, n_null=n_null, rng=rng_main,
                             confidence=confidence)
    n = main["n"]
    summary: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "column": used, "column_requested": column, "column_fallback_reason": fallback,
        "n": {"sim": n["sim"], "reference": n["reference"],
              "sim_rows": len(sim_df), "reference_rows": len(ref_df)},
        "seeds": {"bootstrap": seed, "null": seed, "matching": seed, "cross_validation": seed},
        "n_bootstrap": n_bootstrap, "n_null": n_null, "confidence": confidence,
        "min_galaxies": min_galaxies,
        "directions": {
            "auroc": "P(reference score > simulated score); > 0.5: simulation less typical",
            "median_shift": "median(sim) - median(reference), score units",
            "wasserstein": "Wasserstein-1 distance, score units",
            "typical_fraction": "share of simulated galaxies above the reference 5th percentile",
        },
        "metrics": {k: v for k, v in main.items() if k != "n"},
    }

    # matched comparison and per-bin results
    mcols = _match_columns(sim_df, ref_df, match_columns)
    summary["matched"] = {"columns": mcols}
    summary["per_bin"] = []
    if mcols:
        m = matched_indices(sim_df, ref_df, columns=mcols, n_bins=n_bins, rng=rng_match)
        s_m, r_m = sim[m["sim_index"]], ref[m["ref_index"]]
        summary["matched"] |= {
            "method": "joint quantile bins of the reference; larger side subsampled per bin",
            "edges": {c: _jsonable_edges(e) for c, e in m["edges"].items()},
            "transform": {c: "log10" if c in _LOG_COLUMNS else "none" for c in mcols},
            "n": {"sim": int(s_m.size), "reference": int(r_m.size)},
            "n_bins_used": m["n_bins_used"],
        }
        if min(s_m.size, r_m.size) >= MIN_PER_BIN:
            mm = bootstrap_metrics(s_m, r_m, n_bootstrap=n_bootstrap, n_null=n_null,
                                   rng=rng_match, confidence=confidence)
            summary["matched"]["metrics"] = {k: v for k, v in mm.items() if k != "n"}
        else:
            summary["matched"]["skipped"] = f"fewer than {MIN_PER_BIN} matched galaxies per side"
        summary["per_bin"] = _per_bin(sim_df, ref_df, sim, ref, mcols[0], n_bins=n_bins,
                                      n_bootstrap=n_bootstrap, n_null=n_null, rng=rng_bins,
                                      confidence=confidence)
    else:
        summary["matched"]["skipped"] = ("no catalogue column present (with finite, varying "
                                         f"values) in both tables among {list(match_columns)}")

    # morphology and the global axis
    glob = None
    if morphology is not None and morphology_reference is not None:
        per_param, flags, glob = _morphology_block(
            morphology, morphology_reference, sim_df, ref_df, n_bootstrap=n_bootstrap,
            n_null=n_null, rng=rng_morph, confidence=confidence, match_columns=match_columns)
        summary["morphology"] = per_param
        summary["morphology_flags"] = flags
    else:
        summary["morphology"] = {}
    fine = summary["metrics"].get("auroc")
    summary["axes"] = {
        "fine_structure": None if fine is None else {
            "metric": "auroc", "column": used, "value": fine["value"], "ci": fine["ci"],
            "ci_contains_null_value": fine["ci_contains_null_value"],
            "null": None if fine["null"] is None else
            {"value": fine["null"]["value"], "ci": fine["null"]["ci"]}},
        "global_structure": glob if glob is not None else {
            "metric": None, "value": None, "ci": None, "null": None,
            "skipped": "no morphology tables given"},
    }
    if floor is not None:
        attach_floor(summary, floor, confidence=confidence)
    summary["verdict"] = _verdict(summary, min_galaxies=min_galaxies)
    return _jsonable(summary)


def _per_bin(sim_df, ref_df, sim, ref, col: str, *, n_bins: int, n_bootstrap: int,
             n_null: int, rng: np.random.Generator, confidence: float) -> list[dict[str, Any]]:
    a = _transform(col, np.asarray(sim_df[col], float))
    b = _transform(col, np.asarray(ref_df[col], float))
    edges = _bin_edges(b[np.isfinite(b)], n_bins)
    ia = np.where(np.isfinite(a), _bin_index(a, edges), -1)
    ib = np.where(np.isfinite(b), _bin_index(b, edges), -1)
    out = []
    finite_edges = [float(np.nanmin(b)), *edges[1:-1].tolist(), float(np.nanmax(b))]
    for i, brng in zip(range(len(edges) - 1), rng.spawn(len(edges) - 1), strict=True):
        s, r = sim[ia == i], ref[ib == i]
        entry: dict[str, Any] = {
            "column": col, "transform": "log10" if col in _LOG_COLUMNS else "none",
            "bin": [finite_edges[i], finite_edges[i + 1]],
            "n": {"sim": int(np.isfinite(s).sum()), "reference": int(np.isfinite(r).sum())},
        }
        if min(entry["n"].values()) < MIN_PER_BIN:
            entry["skipped"] = f"fewer than {MIN_PER_BIN} galaxies per side"
        else:
            res = bootstrap_metrics(s, r, n_bootstrap=n_bootstrap, n_null=n_null, rng=brng,
                                    confidence=confidence)
            entry["metrics"] = {k: v for k, v in res.items() if k != "n"}
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------
# files and league table
# ----------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_summary(summary: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write a summary record to ``out`` as JSON (atomically); returns the path."""
    path = Path(out)
    write_text_atomic(path, json.dumps(_jsonable(summary), indent=2, sort_keys=False) + "\n")
    return path


def compare_files(
    scores_path: str | os.PathLike, reference_path: str | os.PathLike, *,
    out: str | os.PathLike, column: str = FINE_STRUCTURE_COLUMN, **kwargs: Any,
) -> dict[str, Any]:
    """:func:`compare` two score files and write ``summary.json`` to ``out``.

    Extra keyword options (``n_bootstrap``, ``n_null``, ``seed``, ``morphology``,
    ``morphology_reference``, ...) are passed to :func:`compare`. Returns the summary.

    Parameters
    ----------
    scores_path : str or os.PathLike
        Scores of the simulated galaxies (Parquet).
    reference_path : str or os.PathLike
        Scores of the reference galaxies (Parquet).
    out : str or os.PathLike
        Path of the ``summary.json`` to write.
    column : str, optional
        Score column compared (default ``"llr_nats"``).
    **kwargs
        Passed to :func:`compare`.
    """
    summary = compare(scores_path, reference_path, column=column, **kwargs)
    summary["inputs"] = {"scores": str(scores_path), "reference": str(reference_path)}
    write_summary(summary, out)
    return summary


_LEAGUE_FIELDS = (
    "rank", "name", "n_sim", "n_reference", "column",
    "fine_auroc", "fine_ci_low", "fine_ci_high", "fine_null", "fine_ci_contains_0.5",
    "global_auroc", "global_ci_low", "global_ci_high", "global_null", "global_ci_contains_0.5",
    "departure", "verdict",
)


def league_table(summaries: Mapping[str, Any], *, out_dir: str | os.PathLike) -> list[dict]:
    """Rank several simulations scored against one survey; writes JSON and CSV.

    Ranking: by the larger of ``|AUROC - 0.5|`` over the two axes (fine structure and,
    when measured, global structure), smallest first, ties broken by the fine-structure
    departure. Summaries with too few galaxies rank last.

    Parameters
    ----------
    summaries : mapping of name to summary dict or path of a summary.json
    out_dir : path-like
        Folder receiving ``league_table.json`` and ``league_table.csv``.

    Returns
    -------
    list of dict
        The rows in rank order (the fields of the CSV).
    """
    rows = []
    for name, s in summaries.items():
        if not isinstance(s, Mapping):
            p = Path(s)
            if not p.exists():
                msg = f"summary {p} for {name!r} does not exist; run 'simcompare compare' first"
                raise DataNotFoundError(msg)
            s = json.loads(p.read_text())
        if s.get("schema") != SCHEMA:
            msg = f"summary for {name!r} is not a simcompare summary (schema {s.get('schema')!r})"
            raise DataFormatError(msg)
        fine = s["axes"]["fine_structure"] or {}
        glob = s["axes"].get("global_structure") or {}

        def part(e: Mapping[str, Any]) -> tuple:
            if e.get("value") is None or e.get("ci") is None:
                return (None, None, None, None, None)
            null = (e.get("null") or {}).get("value")
            return (e["value"], e["ci"][0], e["ci"][1], null, e.get("ci_contains_null_value"))

        f, g = part(fine), part(glob)
        deps = [abs(f[0] - 0.5)] if f[0] is not None else []
        if g[0] is not None:  # a classifier AUROC below 0.5 is chance, not a departure
            deps.append(max(g[0] - 0.5, 0.0))
        too_few = bool(s.get("verdict", {}).get("too_few_galaxies"))
        departure = max(deps) if deps and not too_few else None
        rows.append(dict(zip(_LEAGUE_FIELDS, (
            None, name, s["n"]["sim"], s["n"]["reference"], s["column"], *f, *g, departure,
            s.get("verdict", {}).get("text", "")), strict=True)))
    rows.sort(key=lambda r: (r["departure"] is None, r["departure"] or 0.0,
                             abs((r["fine_auroc"] or 0.5) - 0.5), r["name"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "simcompare.league", "schema_version": 1,
           "ranking": "max over axes of |AUROC - 0.5|, smallest first", "rows": rows}
    write_text_atomic(out / "league_table.json", json.dumps(_jsonable(doc), indent=2) + "\n")
    with atomic_path(out / "league_table.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(_LEAGUE_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return rows
