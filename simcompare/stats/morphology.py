"""Morphology statistics: per-parameter comparisons, flag counts and the global-structure axis.

:func:`_morphology_block` is the ``morphology`` / ``morphology_flags`` /
``axes.global_structure`` part of the summary (:func:`simcompare.stats.compare.compare_tables`):
every parameter of :data:`MORPHOLOGY_PARAMETERS` (and every colour) compared with bootstrap
CIs, KS and the null test, on all galaxies and on covariate-matched samples, and the
cross-validated classifier AUROC on the parameter vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._io import load_table
from .classifier import _match_columns, _transform, cross_validated_auroc, matched_indices
from .metrics import MIN_PER_BIN, _ci, _finite, bootstrap_metrics

__all__ = ["MORPHOLOGY_PARAMETERS"]


#: Morphology parameters compared one by one and fed to the global-structure classifier.
MORPHOLOGY_PARAMETERS = (
    "r_half_arcsec", "sersic_n", "concentration", "asymmetry", "smoothness", "gini", "m20",
    "ellipticity", "snr",
)


# parameters that enter the classifier as log10 (positive, multiplicative spread)
_LOG_PARAMETERS = ("r_half_arcsec", "sersic_n", "snr")


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

    def matrix(df, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
        finite = np.all(np.isfinite(m), axis=1)
        return m[finite], finite

    strata = None
    if covariates:
        (xs, fs), (xr, fr) = matrix(ms_good, match["sim_index"]), matrix(mr_good, match["ref_index"])
        # folds balanced per matching bin (see stats.classifier.stratified_folds)
        strata = (match["sim_bin"][fs], match["ref_bin"][fr])
    else:
        (xs, _), (xr, _) = matrix(ms_good, None), matrix(mr_good, None)
    glob: dict[str, Any] = {"metric": "classifier_auroc", "parameters": feats,
                            "conditioned_on": list(covariates), "matched": bool(covariates),
                            "n": {"sim": len(xs), "reference": len(xr)}}
    if feats and len(xs) >= 2 and len(xr) >= 4:
        glob |= cross_validated_auroc(xs, xr, n_bootstrap=n_bootstrap,
                                      n_null=max(1, min(n_null, 10)), rng=rng_glob,
                                      confidence=confidence, strata=strata)
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
