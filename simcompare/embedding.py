"""An appearance representation of stamps: look-alikes, an alignment fraction, a 2-D map.

Representation
--------------
The stamps (simulated and observed, in the density model's preprocessing: sky sigma
units, asinh stretch) are projected on the first ``dim`` principal components of the
joint sample (a linear autoencoder), fitted on the stamps under random rotations and
reflections. The distance between two galaxies is the smallest Euclidean distance in
that space over the 8 rotations/reflections of the first, so look-alikes do not depend
on orientation.

Why this representation (measured, ``benchmarks/c2st.py``, twin test: noisy stamps
against a pool of their own noise-free renderings plus other galaxies): the projection
finds each galaxy's twin as its nearest look-alike, while a small convolutional
autoencoder trained within the same time budget on a 2-core CPU (:func:`embed` with
``method="autoencoder"``) did not (figures in ``docs/statistics.md``). The classifier's
penultimate layer (:mod:`simcompare.c2st`) is trained to pull simulated and observed
galaxies apart, so look-alikes and the alignment fraction would measure the difference
itself; the flow's latents are whitened and carry the stamp's sky noise.

The alignment fraction, which counts observed galaxies among each simulated galaxy's
nearest neighbours in this space, is a statistic: :mod:`simcompare.stats.alignment`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .c2st import dihedral
from .errors import ConfigError
from .stats.alignment import alignment_fraction, dihedral_distances

__all__ = ["EmbeddingOptions", "alignment_fraction", "dihedral_distances", "embed",
           "nearest_observed", "pca_2d"]

log = logging.getLogger(__name__)


class EmbeddingOptions:
    """Options of the autoencoder embedding (defaults sized for a 2-core CPU).

    Parameters
    ----------
    method : {"pca", "autoencoder"}
        Linear projection (default) or the convolutional autoencoder.
    dim : int
        Components / bottleneck dimension (default 32).
    epochs : int
        Training epochs (default 10).
    batch_size : int
        Default 64.
    lr : float
        Adam learning rate (default 3e-3, cosine-decayed).
    width : int
        Channels of the first convolution (default 8).
    max_train : int
        At most this many stamps train the autoencoder (random subset; all are embedded;
        default 1000).
    """

    def __init__(self, *, method: str = "pca", dim: int = 32, epochs: int = 10, batch_size: int = 64,
                 lr: float = 3e-3, width: int = 8, max_train: int = 1000) -> None:
        for name, value in (("dim", dim), ("epochs", epochs), ("batch_size", batch_size),
                            ("width", width), ("max_train", max_train)):
            if int(value) < 1:
                msg = f"EmbeddingOptions {name} must be at least 1 (got {value})"
                raise ConfigError(msg)
        if method not in ("pca", "autoencoder"):
            msg = f"EmbeddingOptions method must be 'pca' or 'autoencoder' (got {method!r})"
            raise ConfigError(msg)
        self.method = method
        self.dim, self.epochs, self.batch_size = int(dim), int(epochs), int(batch_size)
        self.lr, self.width, self.max_train = float(lr), int(width), int(max_train)

    def describe(self) -> dict[str, Any]:
        """The options as a JSON-able dict."""
        return dict(vars(self))


def _autoencoder(bands: int, size: int, opts: EmbeddingOptions) -> Any:
    import torch
    from torch import nn

    w, s4 = opts.width, size // 4

    class AE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(bands, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(2 * w * s4 * s4, opts.dim))
            self.dec_in = nn.Linear(opts.dim, 2 * w * s4 * s4)
            self.dec = nn.Sequential(
                nn.ReLU(), nn.Upsample(scale_factor=2),
                nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                nn.Conv2d(w, bands, 3, padding=1))

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.dec_in(self.enc(x)).view(len(x), 2 * w, s4, s4)
            return self.dec(h)

    return AE()


def _embed_autoencoder(x: np.ndarray, *, opts: EmbeddingOptions, seed: int) -> dict[str, Any]:
    """Train the autoencoder on ``x`` and embed every stamp.

    Parameters
    ----------
    x : ndarray (N, B, H, W)
        Preprocessed stamps (:func:`simcompare.c2st.preprocess`); H divisible by 4.
    opts : EmbeddingOptions, optional
    seed : int

    Returns
    -------
    dict
        ``embedding`` (N, dim) standardised, ``method`` (text), ``seconds``,
        ``final_loss`` (mean squared reconstruction error per pixel, sky sigma units
        after the stretch) and ``options``.
    """
    import torch

    opts = opts or EmbeddingOptions()
    if x.shape[2] % 4:
        msg = f"the autoencoder needs a stamp side divisible by 4, got shape {x.shape}"
        raise ConfigError(msg)
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 2024])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    with torch.random.fork_rng():
        torch.manual_seed(int(rng.integers(2**31)))
        net = _autoencoder(x.shape[1], x.shape[2], opts)
    train_idx = rng.permutation(len(x))[:opts.max_train]
    xt = torch.as_tensor(np.ascontiguousarray(x[train_idx], np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
    steps = opts.epochs * max(1, int(np.ceil(len(xt) / opts.batch_size)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_v = float("nan")
    for _ in range(opts.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total, count = 0.0, 0
        for a in range(0, len(xt), opts.batch_size):
            xb = dihedral(xt[perm[a:a + opts.batch_size]], int(torch.randint(8, (1,), generator=gen)))
            loss = torch.mean((net(xb) - xb) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
        loss_v = total / max(count, 1)
    net.eval()
    out = []
    with torch.no_grad():
        for a in range(0, len(x), 256):
            xb = torch.as_tensor(np.ascontiguousarray(x[a:a + 256], np.float32))
            out.append(torch.stack([net.encode(dihedral(xb, k)) for k in range(8)]).numpy())
    z = np.concatenate(out, axis=1).astype(np.float64)
    return {"embedding": z[0], "dihedral": z, "seconds": round(time.perf_counter() - t0, 3),
            "final_loss": loss_v, "options": opts.describe(),
            "method": (f"convolutional autoencoder ({opts.dim}-d bottleneck) trained on the joint "
                       "simulated + observed sample in the density model's preprocessing; "
                       "distance: smallest Euclidean distance over 8 rotations/reflections")}


def _dihedral_np(x: np.ndarray, k: int) -> np.ndarray:
    y = np.rot90(x, k % 4, axes=(2, 3))
    return np.flip(y, axis=3) if k >= 4 else y


def _embed_pca(x: np.ndarray, *, opts: EmbeddingOptions, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 2024])
    n = len(x)
    fit = rng.permutation(n)[:opts.max_train]
    ks = rng.integers(0, 8, len(fit))
    sample = np.stack([_dihedral_np(x[i:i + 1], int(k))[0] for i, k in zip(fit, ks, strict=True)])
    flat = sample.reshape(len(sample), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    dim = min(opts.dim, vt.shape[0])
    basis = vt[:dim]
    z = np.stack([(_dihedral_np(x, k).reshape(n, -1) - mean) @ basis.T for k in range(8)])
    share = float((s[:dim] ** 2).sum() / max(float((s**2).sum()), 1e-300))
    return {"embedding": z[0], "dihedral": z, "seconds": round(time.perf_counter() - t0, 3),
            "variance_share": share, "options": opts.describe(),
            "method": (f"projection on the first {dim} principal components of the joint "
                       "simulated + observed sample (density-model preprocessing, fitted under "
                       f"random rotations/reflections; {100 * share:.0f}% of the variance); "
                       "distance: smallest Euclidean distance over 8 rotations/reflections")}


def embed(x: np.ndarray, *, opts: EmbeddingOptions | None = None, seed: int = 0) -> dict[str, Any]:
    """Embed every stamp of ``x`` (see the module notes).

    Parameters
    ----------
    x : ndarray (N, B, H, W)
        Preprocessed stamps (:func:`simcompare.c2st.preprocess`).
    opts : EmbeddingOptions, optional
    seed : int

    Returns
    -------
    dict
        ``embedding`` (N, dim), ``dihedral`` (8, N, dim): the embeddings of the 8
        rotations/reflections of every stamp (index 0 = as given), ``method`` (text),
        ``seconds`` and ``options``.
    """
    opts = opts or EmbeddingOptions()
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        msg = f"embedding needs square stamps (N, B, H, H), got shape {x.shape}"
        raise ConfigError(msg)
    if opts.method == "autoencoder":
        return _embed_autoencoder(x, opts=opts, seed=seed)
    return _embed_pca(x, opts=opts, seed=seed)


def nearest_observed(query: np.ndarray, pool: np.ndarray, *, k: int = 3,
                     query_mass: np.ndarray | None = None, pool_mass: np.ndarray | None = None,
                     mass_window_dex: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``pool`` to each row of ``query`` and their distances.

    ``query`` is (Nq, d), or (8, Nq, d) with the embeddings of each query's 8
    rotations/reflections (the ``dihedral`` entry of :func:`embed`): the distance is then
    the smallest over them.

    With ``mass_window_dex`` (and both stellar masses in Msun), only pool galaxies within
    that many dex of the query's stellar mass count; missing neighbours are -1 / NaN.

    Parameters
    ----------
    query : ndarray, shape (Nq, d) or (8, Nq, d)
        Embeddings of the galaxies to match.
    pool : ndarray, shape (Np, d)
        Embeddings of the observed galaxies.
    k : int
        Neighbours per query.
    query_mass, pool_mass : ndarray, optional
        Stellar masses [Msun] (for ``mass_window_dex``).
    mass_window_dex : float, optional
        Largest stellar-mass difference of a neighbour [dex].

    Returns
    -------
    (ndarray, ndarray)
        Pool rows (Nq, k) and distances (Nq, k), nearest first.
    """
    b = np.asarray(pool, np.float64).reshape(len(pool), -1)
    d2 = dihedral_distances(query, b)
    if mass_window_dex is not None:
        if query_mass is None or pool_mass is None:
            msg = "a stellar-mass window needs the stellar masses of both samples"
            raise ConfigError(msg)
        with np.errstate(divide="ignore", invalid="ignore"):
            lq, lp = np.log10(np.asarray(query_mass, float)), np.log10(np.asarray(pool_mass, float))
        outside = ~(np.abs(lq[:, None] - lp[None, :]) <= mass_window_dex)
        d2 = np.where(outside, np.inf, d2)
    k = min(k, len(b))
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, idx, axis=1))
    idx = np.where(np.isfinite(dist), idx, -1)
    return idx, np.where(np.isfinite(dist), dist, np.nan)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of ``z`` (N, d): coordinates (N, 2) and variance shares."""
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    share = (s**2) / max(float((s**2).sum()), 1e-300)
    return zc @ vt[:2].T, share[:2]
