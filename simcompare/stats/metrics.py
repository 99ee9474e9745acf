"""Two-sample metrics of score distributions with bootstrap CIs and null tests.

AUROC, Wasserstein-1 and the typical fraction, their bootstrap intervals and p-values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

#: The default fine-structure score: the peak likelihood ratio, the largest 1/32 of the
#: cells of the ratio map on the finest flow grid (``docs/statistics.md``, "Power of the
#: fine-structure scores").
FINE_STRUCTURE_COLUMN = "llr_peak_nats"


#: Fewer galaxies than this on either side and no verdict is given.
MIN_GALAXIES = 20


#: Fewer galaxies than this per side in a bin (or a matched sample) and it is reported as skipped.
MIN_PER_BIN = 10


_BOOT_METRICS = ("auroc", "wasserstein", "median_shift", "typical_fraction")


_NULL_VALUES = {"auroc": 0.5, "wasserstein": 0.0, "median_shift": 0.0, "typical_fraction": 0.95}


# the CI method per metric: "percentile" or "basic" (reverse percentile, which removes the
# first-order bias of a distance that is >= 0 by construction; see docs/statistics.md)
_CI_METHOD = {"auroc": "percentile", "wasserstein": "basic", "median_shift": "percentile",
              "typical_fraction": "percentile", "ks_statistic": "basic"}


_CHUNK = 128  # bootstrap draws evaluated per vectorised block (bounds memory)


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


# ----------------------------------------------------------------------------------
# the statistics (vectorised over bootstrap draws: inputs of shape (..., n))
# ----------------------------------------------------------------------------------
def auroc(sim: np.ndarray, ref: np.ndarray) -> np.ndarray | float:
    """Area under the ROC curve, P(reference > sim) + 0.5 P(tie).

    Parameters
    ----------
    sim, ref : ndarray, shape (..., n_sim) and (..., n_ref)
        Scores; leading axes are batch axes (e.g. bootstrap draws).

    Returns
    -------
    float or ndarray
        0.5 when the distributions agree; > 0.5 when the simulated scores are lower.
    """
    from scipy.stats import rankdata

    sim = np.asarray(sim, float)
    ref = np.asarray(ref, float)
    n_s, n_r = sim.shape[-1], ref.shape[-1]
    ranks = rankdata(np.concatenate([sim, ref], axis=-1), axis=-1)
    u_ref = ranks[..., n_s:].sum(axis=-1) - n_r * (n_r + 1) / 2.0
    out = u_ref / (n_s * n_r)
    return float(out) if np.ndim(out) == 0 else out


def wasserstein1(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Wasserstein-1 distance between empirical distributions (same unit as the data).

    Computed as the integral over u in (0, 1) of ``|Q_a(u) - Q_b(u)|`` with the empirical
    quantile functions, on the union of both step grids, so that it vectorises over
    leading (bootstrap) axes. Equals :func:`scipy.stats.wasserstein_distance`.
    """
    a = np.sort(np.asarray(a, float), axis=-1)
    b = np.sort(np.asarray(b, float), axis=-1)
    n_a, n_b = a.shape[-1], b.shape[-1]
    grid = np.union1d(np.arange(1, n_a + 1) / n_a, np.arange(1, n_b + 1) / n_b)
    grid = np.concatenate([[0.0], grid])
    du = np.diff(grid)
    mid = 0.5 * (grid[1:] + grid[:-1])
    ia = np.minimum(np.floor(mid * n_a).astype(int), n_a - 1)
    ib = np.minimum(np.floor(mid * n_b).astype(int), n_b - 1)
    out = np.sum(du * np.abs(a[..., ia] - b[..., ib]), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def typical_fraction(sim: np.ndarray, ref: np.ndarray, *, quantile: float = 0.05
                     ) -> np.ndarray | float:
    """Share of simulated scores above the reference's ``quantile`` (default 5th percentile).

    Parameters
    ----------
    sim : ndarray
        Scores of the simulated galaxies (last axis: galaxies; leading axes are bootstrap draws).
    ref : ndarray
        Scores of the reference (observed) galaxies, same layout.
    quantile : float, optional
        Reference quantile that defines "typical" (default 0.05).

    Returns
    -------
    ndarray or float
        Fraction of simulated scores above the reference quantile.
    """
    sim = np.asarray(sim, float)
    ref = np.asarray(ref, float)
    q = np.quantile(ref, quantile, axis=-1)
    out = np.mean(sim > np.expand_dims(q, -1), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def _metric_values(sim: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "auroc": np.asarray(auroc(sim, ref)),
        "wasserstein": np.asarray(wasserstein1(sim, ref)),
        "median_shift": np.median(sim, axis=-1) - np.median(ref, axis=-1),
        "typical_fraction": np.asarray(typical_fraction(sim, ref)),
    }


def _ci(value: float, draws: np.ndarray, *, confidence: float, method: str) -> list[float]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or not np.isfinite(value):
        return [math.nan, math.nan]
    alpha = 1.0 - confidence
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    if method == "basic":
        lo, hi = 2 * value - hi, 2 * value - lo
        lo = max(lo, 0.0)  # the distances are >= 0 by construction
    return [float(lo), float(hi)]


def _auroc_from_ranks(s_rank: np.ndarray, r_rank: np.ndarray) -> np.ndarray:
    """Row-wise AUROC from integer ranks (k, n_s) and (k, n_r) via one global searchsorted."""
    k, n_s = s_rank.shape
    n_r = r_rank.shape[1]
    big = int(max(s_rank.max(initial=0), r_rank.max(initial=0))) + 1
    off = (np.arange(k, dtype=np.int64) * big)[:, None]
    flat = np.sort(s_rank, axis=1).astype(np.int64) + off
    q = r_rank.astype(np.int64) + off
    base = (np.arange(k, dtype=np.int64) * n_s)[:, None]
    lt = np.searchsorted(flat.ravel(), q.ravel(), side="left").reshape(k, n_r) - base
    le = np.searchsorted(flat.ravel(), q.ravel(), side="right").reshape(k, n_r) - base
    return (lt + 0.5 * (le - lt)).sum(axis=1) / (n_s * n_r)


def _boot_draws(sim: np.ndarray, ref: np.ndarray, *, n_bootstrap: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    # integer ranks of the pooled values: bootstrap draws only reuse these values, so the
    # AUROC of a draw follows exactly from counts on ranks (ties count one half)
    _, inv = np.unique(np.concatenate([sim, ref]), return_inverse=True)
    sim_rank, ref_rank = inv[: sim.size], inv[sim.size:]
    out: dict[str, list[np.ndarray]] = {k: [] for k in _BOOT_METRICS}
    done = 0
    while done < n_bootstrap:
        k = min(_CHUNK, n_bootstrap - done)
        si = rng.integers(0, sim.size, size=(k, sim.size))
        ri = rng.integers(0, ref.size, size=(k, ref.size))
        s, r = sim[si], ref[ri]
        out["auroc"].append(_auroc_from_ranks(sim_rank[si], ref_rank[ri]))
        out["wasserstein"].append(np.asarray(wasserstein1(s, r)))
        out["median_shift"].append(np.median(s, axis=-1) - np.median(r, axis=-1))
        out["typical_fraction"].append(np.asarray(typical_fraction(s, r)))
        done += k
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _pvalues(sim: np.ndarray, ref: np.ndarray) -> dict[str, dict[str, Any]]:
    from scipy import stats

    with warnings.catch_warnings():
        # scipy falls back from the exact to the asymptotic p-value for some sizes
        warnings.filterwarnings("ignore", message=".*Exact calculation unsuccessful.*",
                                category=RuntimeWarning)
        ks = stats.ks_2samp(sim, ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ad = stats.anderson_ksamp([sim, ref])
    capped = any("capped" in str(w.message) or "floored" in str(w.message) for w in caught)
    return {
        "ks": {"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)},
        "ad": {"statistic": float(ad.statistic), "pvalue": float(ad.pvalue),
               "pvalue_clipped_to_range": [0.001, 0.25] if capped else None},
    }


def bootstrap_metrics(
    sim: Sequence[float], ref: Sequence[float], *, n_bootstrap: int = 1000, n_null: int = 50,
    rng: np.random.Generator, confidence: float = 0.95,
) -> dict[str, Any]:
    """All one-dimensional metrics between two samples, with bootstrap CIs and null test.

    Parameters
    ----------
    sim, ref : array-like of float
        Simulated and reference values (non-finite values are dropped and counted).
    n_bootstrap : int
        Bootstrap draws (galaxies resampled with replacement within each sample).
    n_null : int
        Random half splits of the reference for the null test (0: no null test; the
        ``null`` entries are then None).
    rng : numpy.random.Generator
        Source of all randomness.
    confidence : float
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``{name: {"value", "ci", "null_value", "ci_contains_null_value", "null": {...}}}``
        for auroc, wasserstein, median_shift, typical_fraction, ks_pvalue, ad_pvalue, plus
        ``"n"``. ``null`` holds the metric and its bootstrap CI on one random half split of
        the reference, and ``null.splits`` the median and central interval of the metric
        over all ``n_null`` splits.
    """
    if n_bootstrap < 10:
        msg = f"n_bootstrap={n_bootstrap} is too small for a CI; use at least 10 (default 1000)"
        raise ConfigError(msg)
    if not 0.5 < confidence < 1.0:
        msg = f"confidence={confidence} must lie between 0.5 and 1 (e.g. 0.95)"
        raise ConfigError(msg)
    sim_all = np.asarray(sim, float)
    ref_all = np.asarray(ref, float)
    sim = sim_all[np.isfinite(sim_all)]
    ref = ref_all[np.isfinite(ref_all)]
    n = {"sim": int(sim.size), "reference": int(ref.size),
         "sim_nonfinite": int(sim_all.size - sim.size),
         "reference_nonfinite": int(ref_all.size - ref.size)}
    if sim.size < 2 or ref.size < 2:
        return {"n": n, "skipped": "too few galaxies (fewer than 2 finite values on a side)"}

    rng_boot, rng_null = rng.spawn(2)
    values = {k: float(v) for k, v in _metric_values(sim, ref).items()}
    draws = _boot_draws(sim, ref, n_bootstrap=n_bootstrap, rng=rng_boot)
    pv = _pvalues(sim, ref)

    # null test: observed vs observed, random half splits of the reference
    null_ok = ref.size >= 4 and n_null >= 1
    split_vals: dict[str, list[float]] = {k: [] for k in (*_BOOT_METRICS, "ks_pvalue", "ad_pvalue")}
    null0: dict[str, Any] = {}
    if null_ok:
        half = ref.size // 2
        for i in range(n_null):
            perm = rng_null.permutation(ref.size)
            a, b = ref[perm[:half]], ref[perm[half:2 * half]]
            vals = _metric_values(a, b)
            p = _pvalues(a, b)
            for k in _BOOT_METRICS:
                split_vals[k].append(float(vals[k]))
            split_vals["ks_pvalue"].append(p["ks"]["pvalue"])
            split_vals["ad_pvalue"].append(p["ad"]["pvalue"])
            if i == 0:
                d0 = _boot_draws(a, b, n_bootstrap=n_bootstrap, rng=rng_null)
                null0 = {k: (float(vals[k]), d0[k]) for k in _BOOT_METRICS}
                null0["ks_pvalue"] = (p["ks"]["pvalue"], None)
                null0["ad_pvalue"] = (p["ad"]["pvalue"], None)

    alpha = 1.0 - confidence
    out: dict[str, Any] = {"n": n}
    for k in _BOOT_METRICS:
        method = _CI_METHOD[k]
        ci = _ci(values[k], draws[k], confidence=confidence, method=method)
        entry = {"value": values[k], "ci": ci, "ci_method": method,
                 "null_value": _NULL_VALUES[k],
                 "ci_contains_null_value": bool(ci[0] <= _NULL_VALUES[k] <= ci[1])}
        entry["null"] = _null_entry(null0.get(k), split_vals[k], alpha=alpha,
                                    confidence=confidence, method=method, null_value=_NULL_VALUES[k])
        out[k] = entry
    for k, src in (("ks_pvalue", pv["ks"]), ("ad_pvalue", pv["ad"])):
        entry = {"value": src["pvalue"], "statistic": src["statistic"], "ci": None,
                 "null_value": None, "ci_contains_null_value": None}
        if k == "ad_pvalue":
            entry["pvalue_clipped_to_range"] = src["pvalue_clipped_to_range"]
        entry["null"] = _null_entry(null0.get(k), split_vals[k], alpha=alpha,
                                    confidence=confidence, method=None, null_value=None)
        out[k] = entry
    return out


def _null_entry(first: tuple[float, np.ndarray | None] | None, splits: list[float], *,
                alpha: float, confidence: float, method: str | None,
                null_value: float | None) -> dict[str, Any] | None:
    if first is None:
        return None
    value, draws = first
    ci = None if draws is None else _ci(value, draws, confidence=confidence, method=method)
    arr = np.asarray(splits, float)
    entry: dict[str, Any] = {"value": float(value), "ci": ci}
    if ci is not None and null_value is not None:
        entry["ci_contains_null_value"] = bool(ci[0] <= null_value <= ci[1])
    entry["splits"] = {
        "n": int(arr.size), "median": float(np.median(arr)),
        "interval": [float(np.quantile(arr, alpha / 2)), float(np.quantile(arr, 1 - alpha / 2))],
    }
    return entry


def by_typicality(score: np.ndarray, reference: np.ndarray | None = None, *,
                  candidates: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Positions of ``score`` from the most to the least typical, and the centre used.

    Typical means close to the median of the ``reference`` scores (the held-out observed
    galaxies), on either side; without finite reference scores, close to the median of
    the ranked scores themselves. Ties keep position order.

    Parameters
    ----------
    score : ndarray
        Scores of the galaxies to rank.
    reference : ndarray, optional
        Scores that define typical.
    candidates : ndarray of int, optional
        Positions to rank, with finite scores (default every finite score).

    Returns
    -------
    order : ndarray of int
        ``candidates``, most typical first.
    centre : float
        The median the distances are taken from.
    """
    score = np.asarray(score, float)
    good = np.flatnonzero(np.isfinite(score)) if candidates is None else np.asarray(candidates)
    ref = None if reference is None else np.asarray(reference, float)
    centre = (float(np.nanmedian(ref)) if ref is not None and np.isfinite(ref).any()
              else float(np.median(score[good])))
    distance = np.abs(score[good] - centre)
    return good[np.lexsort((np.arange(good.size), distance))], centre


def quantile_bin_edges(x: np.ndarray, n_bins: int) -> np.ndarray | None:
    """Edges of up to ``n_bins`` bins holding equal shares of the finite values of ``x``.

    Parameters
    ----------
    x : ndarray
        Values; non-finite ones are ignored.
    n_bins : int
        Bins wanted; tied quantiles merge, so there may be fewer.

    Returns
    -------
    ndarray or None
        The distinct quantile edges (first = minimum, last = maximum), or None with fewer
        than 3 finite values or fewer than 2 distinct edges.
    """
    x = x[np.isfinite(x)]
    if x.size < 3:
        return None
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    return edges if edges.size >= 2 else None


def binned_medians(
    x: np.ndarray, y: np.ndarray, *, edges: np.ndarray, rng: np.random.Generator,
    n_bootstrap: int = 200, confidence: float = 0.95, min_count: int = 3,
) -> dict[str, np.ndarray]:
    """Median of ``y`` in bins of ``x`` with percentile-bootstrap confidence intervals.

    Parameters
    ----------
    x, y : ndarray, shape (N,)
        Non-finite pairs are dropped.
    edges : ndarray, shape (K + 1,)
        Bin edges in the units of ``x``; the last bin includes its right edge.
    rng : numpy.random.Generator
        Drives the bootstrap.
    n_bootstrap : int, optional
        Bootstrap resamples per bin (default 200).
    confidence : float, optional
        Two-sided confidence level of the interval (default 0.95).
    min_count : int, optional
        Bins with fewer points get NaN (default 3).

    Returns
    -------
    dict
        ``centre``, ``median``, ``lo``, ``hi`` (shape (K,)) and ``count`` (int, (K,)).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    k = len(edges) - 1
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, k - 1)
    inside = (x >= edges[0]) & (x <= edges[-1])
    out = {name: np.full(k, np.nan) for name in ("median", "lo", "hi")}
    out["centre"] = 0.5 * (np.asarray(edges[:-1], float) + np.asarray(edges[1:], float))
    out["count"] = np.zeros(k, int)
    alpha = 0.5 * (1.0 - confidence)
    for j in range(k):
        vals = y[inside & (which == j)]
        out["count"][j] = vals.size
        if vals.size < min_count:
            continue
        out["median"][j] = np.median(vals)
        boots = np.median(rng.choice(vals, size=(n_bootstrap, vals.size), replace=True), axis=1)
        out["lo"][j], out["hi"][j] = np.quantile(boots, [alpha, 1.0 - alpha])
    return out
