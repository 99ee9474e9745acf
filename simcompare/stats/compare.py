"""The summary.json statistics of two score tables: :func:`compare_tables`.

:func:`compare_tables` turns two per-image score tables (the output of
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

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._io import load_table
from ..errors import ConfigError, DataFormatError
from .classifier import (
    _LOG_COLUMNS,
    _bin_edges,
    _bin_index,
    _jsonable_edges,
    _match_columns,
    _observed_redshift,
    _transform,
    matched_indices,
)
from .metrics import FINE_STRUCTURE_COLUMN, MIN_GALAXIES, MIN_PER_BIN, bootstrap_metrics
from .morphology import _morphology_block
from .verdict import _verdict, attach_floor

__all__ = ["DEFAULT_MATCH_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "compare_tables"]


log = logging.getLogger(__name__)


SCHEMA = "simcompare.summary"


SCHEMA_VERSION = 1


#: Score columns tried in turn when the default one is missing or all-NaN (tables of an
#: older simcompare; models without a background).
_FALLBACKS = {FINE_STRUCTURE_COLUMN: ("llr_nats", "log_prob_nats"), "llr_nats": ("log_prob_nats",)}


#: Catalogue columns used for matching, when both tables carry them (finite values).
DEFAULT_MATCH_COLUMNS = ("stellar_mass_msun", "redshift", "half_mass_radius_kpc")


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


def compare_tables(
    scores: Any, reference: Any, *, column: str = FINE_STRUCTURE_COLUMN, n_bootstrap: int = 1000,
    n_null: int = 50, seed: int = 0, morphology: Any = None, morphology_reference: Any = None,
    confidence: float = 0.95, match_columns: Sequence[str] = DEFAULT_MATCH_COLUMNS,
    n_bins: int = 4, min_galaxies: int = MIN_GALAXIES, floor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare simulated with reference (held-out observed) galaxies; the summary.json record.

    The in-memory statistics behind the ``compare`` verb (:func:`simcompare.comparison.compare_files`,
    which also writes the file); ``simcompare.comparison.compare`` is the old name of this function.

    Parameters
    ----------
    scores, reference : DataFrame or path-like
        Score tables from ``simcompare.density.evaluate`` (Parquet or CSV): simulated
        galaxies and the held-out observed test split.
    column : str
        Score column compared (default :data:`FINE_STRUCTURE_COLUMN`,
        ``"llr_peak_nats"``: the log-likelihood ratio summed over the 1/32 of the finest flow
        grid where it is largest, in nats). When it is missing or all-NaN, ``llr_nats`` (a table of an older
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
