"""The alignment fraction: how many simulated galaxies have observed galaxies nearby.

In the style of Eisert et al. 2024 (arXiv:2310.19904): in the joint sample of
``n_sim`` simulated and ``n_obs`` observed galaxies, each simulated galaxy's ``k``
nearest neighbours (itself excluded) would, for one population, include observed
galaxies at the rate ``p = n_obs / (n_sim + n_obs - 1)``. A simulated galaxy is
*aligned* when its count of observed neighbours is at least the 5th percentile of
Binomial(k, p); under one population about 95% or more are aligned. The fraction comes
with a bootstrap CI over simulated galaxies, and with a null: the same statistic with a
part of the observed sample, of the simulated sample's size, in the simulated role.

The neighbours are found with :func:`dihedral_distances`, the distance of the
appearance representation (:mod:`simcompare.embedding`): the smallest Euclidean distance
over the 8 rotations/reflections of a galaxy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["alignment_fraction", "dihedral_distances"]


def dihedral_distances(query_dihedral: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Squared distances (Nq, Np): min over the 8 versions of each query to each pool row."""
    q = np.asarray(query_dihedral, np.float64)
    if q.ndim == 2:
        q = q[None]
    b = np.asarray(pool, np.float64).reshape(len(pool), -1)
    return np.min(np.stack([_sq_dist(qk.reshape(len(qk), -1), b) for qk in q]), axis=0)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _aligned(z_sim: np.ndarray, z_obs: np.ndarray, k: int) -> tuple[np.ndarray, float, int, np.ndarray]:
    """``z_*`` are (8, N, d) (all rotations/reflections) or (N, d)."""
    from scipy import stats

    z_sim = z_sim if z_sim.ndim == 3 else z_sim[None]
    z_obs = z_obs if z_obs.ndim == 3 else z_obs[None]
    z = np.concatenate([z_sim[0], z_obs[0]])
    d2 = dihedral_distances(z_sim, z)
    z_sim, z_obs = z_sim[0], z_obs[0]
    d2[np.arange(len(z_sim)), np.arange(len(z_sim))] = np.inf  # itself
    nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
    n_obs_nn = (nn >= len(z_sim)).sum(axis=1)
    p = len(z_obs) / (len(z) - 1)
    threshold = int(stats.binom.ppf(0.05, k, p))
    return n_obs_nn >= threshold, p, threshold, n_obs_nn


def alignment_fraction(z_sim: np.ndarray, z_obs: np.ndarray, *, k: int = 10, n_bootstrap: int = 500,
                       n_null: int = 20, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Share of simulated galaxies whose neighbourhood holds observed galaxies at the expected rate.

    See the module notes. Returns ``value``, ``ci``, ``expected_rate`` p, ``threshold``
    (observed neighbours out of ``k`` needed), ``mean_observed_share`` of the
    neighbours, and ``null`` (median and central interval over ``n_null`` random
    observed parts of the simulated sample's size; None when the observed sample is
    too small).

    Parameters
    ----------
    z_sim, z_obs : ndarray
        Embeddings of the simulated and observed galaxies (last two axes: galaxy, feature).
    k : int
        Neighbours per galaxy in the joint sample.
    n_bootstrap : int
        Bootstrap draws of the CI.
    n_null : int
        Random observed parts for the null.
    confidence : float
        Level of the intervals.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        The fields listed above.
    """
    n_sim, n_obs = z_sim.shape[-2], z_obs.shape[-2]
    k = int(min(k, n_sim + n_obs - 1))
    if k < 1 or n_sim < 2 or n_obs < 2:
        msg = "the alignment fraction needs at least 2 simulated and 2 observed galaxies"
        raise ConfigError(msg)
    rng = np.random.default_rng([seed, 2310])
    aligned, p, threshold, n_obs_nn = _aligned(z_sim, z_obs, k)
    draws = aligned[rng.integers(0, len(aligned), (n_bootstrap, len(aligned)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    null: dict[str, Any] | None = None
    n_a = min(n_sim, n_obs // 2)
    if n_a >= 2:
        vals = []
        for _ in range(n_null):
            perm = rng.permutation(n_obs)
            # pseudo-simulated part of size n_a against the remaining observed galaxies,
            # thinned so the ratio of the sample sizes is that of the real test
            n_b = min(n_obs - n_a, max(2, round(n_a * n_obs / n_sim)))
            a_, b_ = z_obs[..., perm[:n_a], :], z_obs[..., perm[n_a:n_a + n_b], :]
            vals.append(float(_aligned(a_, b_, min(k, n_a + n_b - 1))[0].mean()))
        nlo, nhi = np.quantile(vals, [alpha, 1 - alpha])
        null = {"value": float(np.median(vals)), "ci": [float(nlo), float(nhi)],
                "n_splits": int(n_null), "n": {"a": int(n_a), "b": int(n_b)}}
    return {"value": float(aligned.mean()), "ci": [float(lo), float(hi)], "k": k,
            "expected_rate": float(p), "threshold": threshold,
            "mean_observed_share": float(n_obs_nn.mean() / k), "null": null,
            "n": {"sim": int(n_sim), "observed": int(n_obs)},
            "definition": (f"share of simulated galaxies with at least {threshold} observed "
                           f"galaxies among their {k} nearest neighbours in the joint sample "
                           f"(the 5th percentile of Binomial({k}, {p:.3f}), the rate for one "
                           "population)")}
