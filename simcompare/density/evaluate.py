"""Score an ImageSet with a trained model folder: log p, bits/dim, ratio, percentile.

Columns of the result (one row per image):

``object_id``
``log_prob_nats``            log-density of the image in flux units (nats), ensemble mean
``bits_per_dim``             ``-log_prob_nats / (D ln 2)``
``log_prob_background_nats`` same under the background model (NaN when ``background="none"``)
``llr_nats``                 ``log_prob_nats - log_prob_background_nats`` (NaN without background)
``llr_footprint_nats``       the ratio summed over the galaxy's footprint only
                             (:mod:`simcompare.density.scores`)
``llr_peak_nats``            the largest eighth of the ratio map's cells on the coarsest flow
                             grid, summed (:func:`simcompare.density.scores.peak_ratio`): the
                             default fine-structure score
``llr_level<k>_nats``        the ratio of flow level k alone (0 = finest scale); the levels
                             sum to ``llr_nats``
``percentile``               percent of the model's held-out observed test-split scores below
                             this image's score (ties count half); the score is
                             ``llr_peak_nats``, or ``log_prob_nats`` when the model has
                             no background
``*_std``                    spread (sample standard deviation) across ensemble members;
                             NaN for a single model
``n_members``, ``score_flag`` (0 = finite score, 1 = non-finite main score, 2 = non-finite
                             background score), then the ImageSet's catalogue columns
                             (prefixed ``catalog_`` where a name collides).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import imageset as _imageset
from .._io import check_output_file, write_parquet_atomic
from ..comparison import FINE_STRUCTURE_COLUMN
from ..errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["SCORE_COLUMNS", "evaluate", "percentile_of"]

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("object_id", "log_prob_nats", "bits_per_dim", "log_prob_background_nats",
                 "llr_nats", "llr_footprint_nats", "llr_peak_nats", "percentile")


def percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percent of finite ``reference`` values below each value (ties count half); NaN stays NaN."""
    ref = np.sort(np.asarray(reference, float)[np.isfinite(reference)])
    values = np.asarray(values, float)
    out = np.full(values.shape, np.nan)
    if ref.size == 0:
        return out
    ok = np.isfinite(values)
    lo = np.searchsorted(ref, values[ok], side="left")
    hi = np.searchsorted(ref, values[ok], side="right")
    out[ok] = 100.0 * (lo + 0.5 * (hi - lo)) / ref.size
    return out


def _load_training(model: Path) -> dict[str, Any]:
    path = model / "training.json"
    if not path.exists():
        msg = f"{model}: not a trained model folder (no training.json); run 'simcompare train'"
        raise DataNotFoundError(msg)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        msg = f"{path}: damaged ({exc}); retrain the model"
        raise DataFormatError(msg) from None


def evaluate(
    model: str | os.PathLike, images: str | os.PathLike, *, out: str | os.PathLike | None,
    split: str | None = None, device: str = "auto", batch_size: int = 64,
    progress: bool = False, _reference: bool = False,
) -> Any:
    """Score every image of ``images`` with the trained model folder ``model``.

    Parameters
    ----------
    model : path
        Folder written by :func:`simcompare.density.train`.
    images : path
        Any ImageSet with the model's bands and stamp size (mock or observed).
    out : path or None
        Parquet file to write (atomically); None writes nothing.
    split : {None, "train", "validation", "test"}
        Score only that part of the model's own training split (ids from split.json).
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Starting batch size (halved automatically on out-of-memory).
    progress : bool

    Notes
    -----
    Each member is scored through a frozen inference copy
    (:func:`simcompare.scoring.compile_for_inference`): the same log-densities as
    ``DensityModel.log_prob`` to float32 rounding, computed with pre-folded weights.

    Returns
    -------
    pandas.DataFrame
        Columns described in the module docstring.
    """
    import pandas as pd

    from ..scoring import CPU_BATCH_LIMIT, log_prob_batched, resolve_device
    from .data import prepared_images
    from .model import DensityModel
    from .scores import footprint_mask, local_scores

    model = Path(model)
    if out is not None:
        check_output_file(out)
    info = _load_training(model)
    dev = resolve_device(device)
    s = _imageset.read(images)
    if split is not None:
        if split not in ("train", "validation", "test"):
            msg = f"split must be train, validation or test, got {split!r}"
            raise ConfigError(msg)
        ids_wanted = set(json.loads((model / "split.json").read_text())[split])
        keep = np.array([int(i) in ids_wanted for i in s.object_id])
        if not keep.any():
            msg = f"{images} holds none of the model's {split} split; pass the training image set"
            raise ConfigError(msg)
        s = s.subset(keep)
    if list(s.bands) != list(info["bands"]) or s.images.shape[-1] != info["stamp_size"]:
        msg = (f"{images}: bands {list(s.bands)} / stamp {s.images.shape[-1]} differ from the "
               f"model's {info['bands']} / {info['stamp_size']}; render with the same survey "
               "bands and stamp size")
        raise ConfigError(msg)
    sigma = np.asarray(info["noise_sigma"])
    x = prepared_images(s, sigma=sigma, seed=int(info["seed"]))
    d = x.shape[1] * x.shape[2] * x.shape[3]
    footprint = footprint_mask(x, sigma=sigma) if any(
        "background" in m for m in info["members"]) else None
    main, back, foot, peak = [], [], [], []
    levels: list[list[np.ndarray]] = []
    for member in info["members"]:
        m = DensityModel.load(model / member["model"], device=dev)
        if "background" not in member:
            main.append(log_prob_batched(m, x, batch_size=batch_size, device=dev,
                                         progress=progress, desc=member["model"]))
            continue
        b = DensityModel.load(model / member["background"], device=dev)
        sc = local_scores(m.freeze(device=dev), b.freeze(device=dev), x, footprint=footprint,
                          batch=min(batch_size, CPU_BATCH_LIMIT) if dev.type == "cpu"
                          else batch_size)
        main.append(sc["log_p"])
        back.append(sc["log_p_background"])
        foot.append(sc["llr_footprint"])
        peak.append(sc["llr_peak"])
        levels.append([sc[f"llr_level{k}"] for k in range(m.levels)])
    main_a = np.vstack(main)
    k = main_a.shape[0]

    def spread(a: np.ndarray) -> np.ndarray:
        return a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1], np.nan)

    def finite(a: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(a), a, np.nan)

    lp = finite(main_a.mean(axis=0))
    level_cols: dict[str, np.ndarray] = {}
    if back:
        back_a = np.vstack(back)
        llr_a = main_a - back_a
        foot_a, peak_a = np.vstack(foot), np.vstack(peak)
        lpb, llr, llr_fp, llr_pk = (finite(a.mean(axis=0))
                                    for a in (back_a, llr_a, foot_a, peak_a))
        lpb_std, llr_std, llr_fp_std = spread(back_a), spread(llr_a), spread(foot_a)
        llr_pk_std = spread(peak_a)
        for j in range(len(levels[0])):
            level_cols[f"llr_level{j}_nats"] = finite(np.mean([lv[j] for lv in levels], 0))
    else:
        lpb = llr = llr_fp = llr_pk = np.full(len(lp), np.nan)
        lpb_std = llr_std = llr_fp_std = llr_pk_std = lpb
    column = FINE_STRUCTURE_COLUMN if back else "log_prob_nats"
    score = ({"llr_nats": llr, "llr_footprint_nats": llr_fp, "llr_peak_nats": llr_pk}[column]
             if back else lp)
    flag = np.zeros(len(lp), np.int64)
    if back:
        flag[~np.isfinite(lpb)] = 2
    flag[~np.isfinite(lp)] = 1
    if _reference:
        reference = score
    else:
        ref_path = model / "reference_scores.parquet"
        if not ref_path.exists():
            msg = f"{ref_path} is missing; retrain the model (train writes it)"
            raise DataNotFoundError(msg)
        ref = pd.read_parquet(ref_path)
        if column not in ref.columns:
            msg = (f"{ref_path} has no {column} column (written by an older simcompare); "
                   "retrain the model")
            raise DataFormatError(msg)
        reference = ref[column].to_numpy()
    df = pd.DataFrame({
        "object_id": s.object_id.astype(np.int64),
        "log_prob_nats": lp,
        "bits_per_dim": -lp / (d * np.log(2.0)),
        "log_prob_background_nats": lpb,
        "llr_nats": llr,
        "llr_footprint_nats": llr_fp,
        "llr_peak_nats": llr_pk,
        **level_cols,
        "percentile": percentile_of(score, reference),
        "log_prob_nats_std": spread(main_a),
        "bits_per_dim_std": spread(main_a) / (d * np.log(2.0)),
        "log_prob_background_nats_std": lpb_std,
        "llr_nats_std": llr_std,
        "llr_footprint_nats_std": llr_fp_std,
        "llr_peak_nats_std": llr_pk_std,
        "n_members": np.full(len(lp), k, np.int64),
        "score_flag": flag.astype(np.int64),
    })
    for key, col in s.catalog.items():
        if key == "object_id":
            continue
        name = key if key not in df.columns else f"catalog_{key}"
        df[name] = np.asarray(col)
    n_bad = int((flag != 0).sum())
    if n_bad:
        log.warning("%d of %d images have non-finite scores (score_flag != 0)", n_bad, len(df))
    if out is not None:
        write_parquet_atomic(df, Path(out))
    return df
