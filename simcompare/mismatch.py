"""Mismatch maps by occlusion: where on a stamp the density model's score is decided.

For a stamp ``x`` with score ``s(x)`` (the likelihood ratio ``log p_obs - log p_bg``, or
``log p_obs`` without a background model) the stamp is cut into a coarse ``grid x grid``
set of patches. Each patch in turn is replaced by the same patch of the galaxy's smooth
Sersic re-rendering with fresh noise (the re-rendering the background model is trained
on, :func:`simcompare.density.background.sersic_background_images`, with the survey's
own PSF and noise), and the stamp is scored again. The map holds, per patch,

    m = s(x with the patch smoothed) - s(x)      [nats]

positive where smoothing the patch *raises* the score, i.e. where the galaxy looks less
like observed galaxies than its smooth version does (a clump the sky's galaxies do not
have), negative where the patch's structure is what makes the galaxy look observed-like.
All patches of one stamp share one re-rendering (common random numbers), so the noise
draw cancels between patches to first order; with the ratio it also largely cancels
between the two models. Unlike gradient x input, each value is an actual change of the
score, in nats, for a finite, visible change of the image.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataNotFoundError
from .imageset import ImageSet

__all__ = ["density_score", "occlusion_maps"]

log = logging.getLogger(__name__)


def density_score(model_dir: str | os.PathLike, *, device: str = "cpu",
                  orientations: int | None = None,
                  ) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The score of a trained model folder as a function of filled flux images.

    Returns ``(score, what)``: ``score(images (N, B, H, W)) -> (N,)`` nats, the mean over
    ensemble members of ``log p_obs - log p_bg`` (or ``log p_obs`` without background),
    each averaged over ``orientations`` of the image (default the model's), as
    :func:`simcompare.density.evaluate` computes it; ``what`` names it.

    Parameters
    ----------
    model_dir : path
        The trained model folder.
    device : str
        Device of the flows (default cpu).
    orientations : {1, 4, 8}, optional
        Orientations each image is scored in (:func:`simcompare.density.scores.orient`);
        default the model's ``score_orientations``.
    """
    from .density import DensityModel
    from .density.evaluate import _own_orientations
    from .density.scores import _check_orientations, oriented_log_prob
    from .inference import resolve_device

    model_dir = Path(model_dir)
    try:
        info = json.loads((model_dir / "training.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"{model_dir}: no readable training.json ({exc}); train the model first"
        raise DataNotFoundError(msg) from None
    dev = resolve_device(device)
    turns = _check_orientations(_own_orientations(info) if orientations is None
                                else orientations)
    members = info["members"]
    mains = [DensityModel.load(model_dir / m["model"], device=dev).freeze() for m in members]
    backs = [DensityModel.load(model_dir / m["background"], device=dev).freeze()
             for m in members if "background" in m]

    def mean_log_prob(models: list, images: np.ndarray) -> np.ndarray:
        return np.mean([oriented_log_prob(m, images, turns, device=dev) for m in models],
                       axis=0)

    def score(images: np.ndarray) -> np.ndarray:
        lp = mean_log_prob(mains, images)
        if backs:
            lp = lp - mean_log_prob(backs, images)
        return lp

    over = ([f"{len(mains)} ensemble members"] if len(mains) > 1 else []) + (
        [f"{turns} orientations"] if turns > 1 else [])
    ens = f", mean over {' and '.join(over)}" if over else ""
    what = ("log p_obs − log p_bg (observed model over the smooth-Sérsic background model"
            f"{ens})" if backs else f"log p_obs (no background model{ens})")
    return score, what


def occlusion_maps(s: ImageSet, filled: np.ndarray, *, score: Callable[[np.ndarray], np.ndarray],
                   grid: int = 8, seed: int = 0) -> dict[str, Any]:
    """Occlusion maps of every stamp of ``s`` (see the module notes).

    Parameters
    ----------
    s : ImageSet
        The stamps (needs a PSF for the smooth re-rendering).
    filled : ndarray (N, B, H, W)
        Its images with masked pixels filled (flux units), as the scorer sees them.
    score : callable
        Maps (M, B, H, W) float32 flux images to (M,) nats.
    grid : int
        Patches per side (default 8; H must be divisible by it).
    seed : int
        Seeds the smooth re-renderings.

    Returns
    -------
    dict
        ``maps`` (N, grid, grid) nats, ``score`` (N,) nats of the unchanged stamps,
        ``patch`` (pixels per patch side), ``object_id`` (N,).
    """
    from .density.background import SURVEY_CONDITIONS, sersic_background_images

    n, _, h, w = filled.shape
    if h != w or h % grid:
        msg = f"stamp side {h} must be square and divisible by the map grid {grid}"
        raise ConfigError(msg)
    patch = h // grid
    smooth, _ = sersic_background_images(s, filled, rng=np.random.default_rng([seed, 44]),
                                         conditions=SURVEY_CONDITIONS)
    maps = np.empty((n, grid, grid))
    base = np.empty(n)
    for i in range(n):
        batch = np.repeat(filled[i:i + 1], grid * grid + 1, axis=0)
        for gy in range(grid):
            for gx in range(grid):
                sl = (gy * grid + gx, slice(None), slice(gy * patch, (gy + 1) * patch),
                      slice(gx * patch, (gx + 1) * patch))
                batch[sl] = smooth[i][:, sl[2], sl[3]]
        sc = np.asarray(score(batch), float)
        base[i] = sc[-1]
        maps[i] = (sc[:-1] - sc[-1]).reshape(grid, grid)
    return {"maps": maps, "score": base, "patch": patch,
            "object_id": np.asarray(s.object_id, np.int64)}
