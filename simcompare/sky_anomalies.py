"""``simcompare anomalies``: the observed galaxies a survey's density model finds least typical.

For survey users without a simulation. The survey's sample is ingested (as ``score``
does), and either scored by a given model folder (``model``: every galaxy of the sample)
or used to train a model, in which case the galaxies of the model's held-out test split
are ranked (the model never trained on them). The galaxies with the lowest scores (the
likelihood ratio ``llr_nats`` when the model has a background model, else
``log_prob_nats``) are written as ``anomalies.parquet`` (all score columns, with ``rank``)
and a gallery page ``index.html`` in the output folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._io import write_parquet_atomic
from .errors import ConfigError

__all__ = ["anomalies"]

log = logging.getLogger(__name__)


def anomalies(
    survey: str, *, model: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
    workspace: str | os.PathLike = ".", n: int = 24, stamp_size: int | None = None,
    bands: Sequence[str] = (), levels: int = 3, blocks: int = 16, hidden: int = 128,
    epochs: int = 20, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    device: str = "auto", background: str = "sersic", progress: bool = False,
) -> Path:
    """Rank a survey's observed galaxies by how untypical its density model finds them.

    Parameters
    ----------
    survey : str
        Survey descriptor name (its ``[sample]`` says where the cutouts are).
    model : path, optional
        A trained model folder; default: train one on the sample (options below).
    out : path, optional
        Output folder (default ``<workspace>/reports/anomalies_<survey>/``).
    workspace : path
    n : int
        Galaxies in the gallery and table (default 24).
    stamp_size, bands
        As for ``ingest`` (default: the descriptor's, or the model's when given).
    levels, blocks, hidden, epochs, batch_size, lr, seed, device, background
        Training options when no model is given (as for ``train``).
    progress : bool

    Returns
    -------
    Path
        The written ``index.html``.
    """
    import json

    import pandas as pd

    from . import imageset
    from .density import evaluate, train
    from .observed import load_sample
    from .registry import find_survey
    from .reporting.html import ANOMALY_RULE, anomaly_rows, write_anomaly_page

    if n < 1:
        msg = f"--n must be at least 1 (got {n})"
        raise ConfigError(msg)
    workspace = Path(workspace).resolve()
    desc = find_survey(survey, workspace=workspace)
    out = Path(out) if out is not None else workspace / "reports" / f"anomalies_{desc.name}"
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        info_path = Path(model) / "training.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            stamp_size = stamp_size or info.get("stamp_size")
            bands = tuple(bands) or tuple(info.get("bands") or ())
    observed = out / "observed.h5"
    load_sample(desc, out=observed, workspace=workspace, stamp_size=stamp_size, bands=bands,
                progress=progress)
    if model is None:
        model = train(observed, out=out / "model", levels=levels, blocks=blocks, hidden=hidden,
                      epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      background=background, progress=progress)
        table = pd.read_parquet(Path(model) / "reference_scores.parquet")
        scope = "the held-out test split of the model trained here"
    else:
        table = evaluate(model, observed, out=None, device=device, progress=progress)
        scope = f"every galaxy of the sample, scored by the model {model}"
    column = "llr_nats" if np.isfinite(table["llr_nats"].to_numpy(float)).any() else "log_prob_nats"
    rows, display = anomaly_rows(table, column=column, n=n)
    ranked = table.iloc[rows].copy()
    ranked.insert(0, "rank", np.arange(1, len(rows) + 1))
    write_parquet_atomic(ranked, out / "anomalies.parquet")
    s = imageset.read(observed)
    obs_ids = s.object_id.astype(np.int64)
    where = {int(o): i for i, o in enumerate(obs_ids.tolist())}
    pick = np.array([where[int(o)] for o in ranked["object_id"]], int)
    images = np.where(s.mask[pick] == 0, s.images[pick], 0.0) if s.mask is not None else s.images[pick]
    page = write_anomaly_page(out, survey=desc.title or desc.name, rows=display, images=images,
                              bands=tuple(s.bands), column=column,
                              rule=f"{ANOMALY_RULE}; ranked: {scope}", n_ranked=len(table))
    log.info("%d anomalies of %s written to %s", len(rows), desc.name, page)
    return page
