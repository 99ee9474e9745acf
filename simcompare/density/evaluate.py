"""Score an ImageSet with a trained model folder: log p, bits/dim, ratio, percentile.

Columns of the result (one row per image). Every score is each member's average over the
image's ``orientations`` (default the model's, 4 quarter turns for models trained now; the
maps turned back onto the image's grid before averaging), then the members' mean:

``object_id``
``log_prob_nats``            log-density of the image in flux units (nats), ensemble mean
``bits_per_dim``             ``-log_prob_nats / (D ln 2)``
``log_prob_background_nats`` same under the background model (NaN when ``background="none"``)
``llr_nats``                 ``log_prob_nats - log_prob_background_nats`` (NaN without background)
``llr_footprint_nats``       the ratio summed over the galaxy's footprint only
                             (:mod:`simcompare.density.scores`)
``llr_peak_nats``            the ratio map of every level spread onto the finest flow grid
                             (``size / 2`` cells a side), averaged over the ensemble members,
                             and its largest 1/32 of cells summed
                             (:func:`simcompare.density.scores.ratio_map`,
                             :func:`~simcompare.density.scores.peak_of_map`): the default
                             fine-structure score; its ``_std`` is the spread of the members'
                             own peak scores
``llr_level<k>_nats``        the ratio of flow level k alone (0 = finest scale); the levels
                             sum to ``llr_nats``
``percentile``               percent of the model's held-out observed test-split scores below
                             this image's score (ties count half); the score is the
                             whole-image ratio ``llr_nats`` (``log_prob_nats`` when the model
                             has no background): read one-sidedly, low = unlike the sky. The
                             peak score is not used here as it is one-sided the other way
                             for some errors (a too-sharp PSF raises the peak; see
                             docs/statistics.md)
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
from ..errors import ConfigError, DataFormatError, DataNotFoundError
from .scores import _check_orientations

__all__ = ["PERCENTILE_COLUMN", "SCORE_COLUMNS", "evaluate", "percentile_of", "reference_table"]

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("object_id", "log_prob_nats", "bits_per_dim", "log_prob_background_nats",
                 "llr_nats", "llr_footprint_nats", "llr_peak_nats", "percentile")

#: The score the ``percentile`` column is of (with a background model). The whole-image
#: ratio is the score that reads one way for every error measured: images with doubled
#: noise, a PSF 0.6 or 2 times as wide score median percentiles 0-30 over three training
#: seeds, where the peak ratio gives 74-83 (higher than the sky) for the too-sharp PSF.
PERCENTILE_COLUMN = "llr_nats"


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


#: Smallest and largest chunk of images one cluster task scores (see :func:`_score`):
#: one CPU batch (:data:`simcompare.inference.CPU_BATCH_LIMIT`) at least, so a task is
#: tens of milliseconds of scoring or more, and at most 1024 images (80 MB at 5 x 64 x 64).
_CHUNK_MIN = 32
_CHUNK_MAX = 1024

#: Scorers loaded by cluster tasks, kept per worker process: key -> members.
_SCORER_CACHE: dict[tuple, list[tuple[str, Any, Any]]] = {}
_SCORER_CACHE_SIZE = 2


def _load_scorers(model: Path, info: dict[str, Any], dev: Any, precision: str,
                  calib: np.ndarray, use_torch_compile: bool = False,
                  ) -> list[tuple[str, Any, Any]]:
    """``(name, frozen model, frozen background or None)`` per member, precision calibrated."""
    from ..inference import calibrate_precision
    from .model import DensityModel

    out = []
    for member in info["members"]:
        frozen = []
        for key in ("model", "background"):
            if key not in member:
                frozen.append(None)
                continue
            f = DensityModel.load(model / member[key], device=dev).freeze(device=dev)
            if use_torch_compile:
                f.enable_compile()
            if len(calib):
                calibrate_precision(f, calib, precision)
            frozen.append(f)
        out.append((member["model"], frozen[0], frozen[1]))
    return out


def _score_members(scorers: list[tuple[str, Any, Any]], x: np.ndarray,
                   footprint: np.ndarray | None, batch_size: int | str,
                   progress: bool = False, orientations: int = 1) -> dict[str, np.ndarray]:
    """Per-member scores of ``x``: arrays of shape (members, N) (levels: (members, L, N)).

    Each member's scores are its averages over ``orientations`` of every image
    (:func:`simcompare.density.scores.orient`).
    """
    from ..inference import resolve_batch_size
    from .scores import local_scores, oriented_log_prob, peak_of_map

    orientations = _check_orientations(orientations)

    main, back, foot, peak, levels = [], [], [], [], []
    map_sum = None
    for name, m, b in scorers:
        if b is None:
            main.append(oriented_log_prob(m, x, orientations, batch_size=batch_size,
                                          progress=progress, desc=name))
            continue
        bs = resolve_batch_size(batch_size, m, x, m.device)
        sc = local_scores(m, b, x, footprint=footprint, batch=bs, orientations=orientations,
                          progress=progress, desc=name)
        main.append(sc["log_p"])
        back.append(sc["log_p_background"])
        foot.append(sc["llr_footprint"])
        peak.append(sc["llr_peak"])
        map_sum = sc["llr_map"] if map_sum is None else map_sum + sc["llr_map"]
        n_levels = sum(1 for k in sc if k.startswith("llr_level"))
        levels.append([sc[f"llr_level{k}"] for k in range(n_levels)])
    out = {"main": np.vstack(main)}
    if back:
        out.update(back=np.vstack(back), foot=np.vstack(foot), peak=np.vstack(peak),
                   levels=np.asarray(levels, float),
                   # the members' mean ratio map: its peak is steadier than the mean peak
                   peak_mean_map=peak_of_map(map_sum / len(back)))
    return out


def _score_chunk(chunk: tuple[np.ndarray, np.ndarray | None] | dict[str, Any], model: str,
                 stamp: int,
                 device: str, batch_size: int | str, precision: str, calib: np.ndarray,
                 use_torch_compile: bool = False,
                 footprint_sigma: np.ndarray | None = None,
                 orientations: int = 1) -> dict[str, np.ndarray]:
    """Cluster task: score one chunk of images with the model folder ``model``.

    ``chunk`` is ``(prepared images, footprints or None)``, or a slice of an ImageSet
    file, ``{"path", "rows", "sigma", "seed"}``, that the task reads and prepares itself
    (the masked-pixel fill is seeded per object, so the same as for the whole set); then
    only the file name and row numbers travel with the task. The members are loaded once
    per worker process (cached by folder, training.json
    modification time, device and precision) on CUDA when this worker has it. With
    ``footprint_sigma`` (and no footprints in ``chunk``) the chunk's footprints are found
    here (:func:`~simcompare.density.scores.footprint_mask`, image by image, so the same
    as for the whole set at once).
    """
    import hashlib

    from ..cluster import _cuda_available
    from ..inference import resolve_device

    path = Path(model)
    if str(device).lower() == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    dev = resolve_device(device)
    key = (str(path.resolve()), stamp, str(dev), precision, use_torch_compile,
           hashlib.sha256(calib.tobytes()).hexdigest())
    scorers = _SCORER_CACHE.get(key)
    if scorers is None:
        scorers = _load_scorers(path, _load_training(path), dev, precision, calib,
                                use_torch_compile)
        while len(_SCORER_CACHE) >= _SCORER_CACHE_SIZE:
            _SCORER_CACHE.pop(next(iter(_SCORER_CACHE)))
        _SCORER_CACHE[key] = scorers
    if isinstance(chunk, dict):
        from .data import prepared_images

        part = _imageset.read(chunk["path"], index=np.asarray(chunk["rows"]))
        x = prepared_images(part, sigma=np.asarray(chunk["sigma"]), seed=int(chunk["seed"]))
        footprint = None
    else:
        x, footprint = chunk
    if footprint is None and footprint_sigma is not None:
        from .scores import footprint_mask

        footprint = footprint_mask(x, sigma=footprint_sigma)
    return _score_members(scorers, x, footprint, batch_size, orientations=orientations)


def _check_device_name(device: str) -> None:
    name = str(device).lower()
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        msg = f"unknown device {device!r}; use auto, cpu or cuda"
        raise ConfigError(msg)


def evaluate(
    model: str | os.PathLike, images: str | os.PathLike, *, out: str | os.PathLike | None,
    split: str | None = None, device: str = "auto", batch_size: int | str = "auto",
    progress: bool = False, precision: str = "auto", use_torch_compile: bool = False,
    cluster: Any = None, orientations: int | None = None,
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
        On a distributed ``cluster``, ``auto`` is decided on each worker (CUDA where
        that worker has a GPU).
    batch_size : int or "auto"
        Starting batch size (halved automatically on out-of-memory); ``auto`` sizes it
        from the free GPU memory on CUDA (:func:`simcompare.inference.auto_batch_size`)
        and uses :data:`simcompare.inference.CPU_BATCH_LIMIT` on CPU.
    progress : bool
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast precision, kept per member only if the first images score within
        1e-3 relative of float32 (:func:`simcompare.inference.calibrate_precision`);
        ``auto`` is float32 on CPU.
    use_torch_compile : bool
        Run the flows through ``torch.compile`` (pays only on a GPU with many
        thousands of images; see :func:`simcompare.inference.compile_for_inference`).
    cluster : simcompare.cluster.Cluster, optional
        When distributed, the images are cut into slices of the file that the cluster's
        workers read, prepare and score themselves (they must see the model folder and
        ``images`` at the same paths), each loading the members once per worker
        process; the scores are the same as in this process.
    orientations : {1, 4, 8}, optional
        Score every image in this many orientations (quarter turns, then mirrored) and
        average each member's maps on the image's grid
        (:func:`simcompare.density.scores.orient`): the model's own error under
        rotation averages out (docs/statistics.md, "Power of the fine-structure
        scores"). Default: the model's (``score_orientations`` in training.json, 1 for
        models trained before it existed). Another count than the model's re-scores its
        held-out test split in the same way for the percentiles.

    Notes
    -----
    Each member is scored through a frozen inference copy
    (:func:`simcompare.inference.compile_for_inference`): the same log-densities as
    ``DensityModel.log_prob`` to float32 rounding, computed with pre-folded weights.
    The percentiles are of the model's own reference scores (reference_scores.parquet).

    Returns
    -------
    pandas.DataFrame
        Columns described in the module docstring.
    """
    return _evaluate(Path(model), images, out=out, split=split, device=device,
                     batch_size=batch_size, progress=progress, precision=precision,
                     use_torch_compile=use_torch_compile, cluster=cluster,
                     self_reference=False, orientations=orientations)


def _own_orientations(info: dict[str, Any]) -> int:
    """The orientations a model's reference scores were averaged over (1 if unrecorded)."""
    return int(info.get("score_orientations", 1))


def _reference_scores(model: str | os.PathLike, images: str | os.PathLike, *,
                      out: str | os.PathLike | None, device: str, orientations: int | None = None,
                      cluster: Any = None, progress: bool = False) -> Any:
    """Score the model's held-out observed test split against itself (the train stage).

    The same table as :func:`evaluate` with ``split="test"``, except that the
    percentiles are of these scores themselves: this is what ``train`` writes to
    reference_scores.parquet, the reference of every later :func:`evaluate`.
    """
    return _evaluate(Path(model), images, out=out, split="test", device=device,
                     self_reference=True, orientations=orientations, cluster=cluster,
                     progress=progress)


def _evaluate(
    model: Path, images: str | os.PathLike, *, out: str | os.PathLike | None,
    split: str | None, device: str, batch_size: int | str = "auto", progress: bool = False,
    precision: str = "auto", use_torch_compile: bool = False, cluster: Any = None,
    self_reference: bool, orientations: int | None = None,
) -> Any:
    """:func:`evaluate`, with the percentile reference read from the model or the scores."""
    from types import SimpleNamespace

    from ..inference import CALIBRATION_IMAGES

    if out is not None:
        check_output_file(out)
    info = _load_training(model)
    own = _own_orientations(info)
    orientations = own if orientations is None else _check_orientations(orientations)
    kw = {"device": device, "batch_size": batch_size, "progress": progress,
          "precision": precision, "use_torch_compile": use_torch_compile,
          "orientations": orientations}
    catalog, rows = _split_rows(model, images, split)
    if cluster is not None and cluster.distributed and rows.size:
        # the workers read their own slices of the file; here the catalogue and the few
        # images the precision is calibrated on
        head = _read_checked(images, info, rows[:CALIBRATION_IMAGES])
        scores = _score_rows(model, info, Path(images), rows, head=head, cluster=cluster, **kw)
        cat = {k: np.asarray(v)[rows] for k, v in catalog.items()}
        s = SimpleNamespace(object_id=cat["object_id"], catalog=cat)
    else:
        s = _read_checked(images, info, None if split is None else rows)
        scores = _score(model, info, _prepare(s, info), **kw)
    n_dim = len(info["bands"]) * int(info["stamp_size"]) ** 2
    means, spreads, column = _ensemble_columns(scores, n_dim=n_dim)
    score = means[column]
    if self_reference:
        reference = score
    elif orientations == own:
        reference = _stored_reference(model, column)
    else:  # the stored reference was scored otherwise: score the test split this way
        reference = np.asarray(reference_table(model, orientations, device=device,
                                               cluster=cluster)[column], float)
    df = _table(s, means, percentile_of(score, reference), spreads)
    if out is not None:
        write_parquet_atomic(df, Path(out))
    return df


#: Test-split score tables of a model in orientations other than its own, kept per
#: process so that the split is scored once however often it is needed (the floor's
#: evaluate calls, the evaluate stage's reference): (folder, training.json mtime,
#: orientations) -> table.
_REFERENCE_CACHE: dict[tuple, Any] = {}


def reference_table(model: str | os.PathLike, orientations: int, *, device: str = "auto",
                    cluster: Any = None) -> Any:
    """The model's held-out test split scored in ``orientations`` (the reference table).

    The model's own reference_scores.parquet when it was scored that way; otherwise the
    split is scored here (once per process and model).

    Parameters
    ----------
    model : path
        The trained model folder.
    orientations : {1, 4, 8}
        Orientations each image is scored in.
    device : {"auto", "cpu", "cuda"}
    cluster : simcompare.cluster.Cluster, optional
        Workers to score on (see :func:`evaluate`).
    """
    model = Path(model)
    info = _load_training(model)
    if _check_orientations(orientations) == _own_orientations(info):
        import pandas as pd

        return pd.read_parquet(model / "reference_scores.parquet")
    key = (str(model.resolve()), (model / "training.json").stat().st_mtime_ns, orientations)
    if key not in _REFERENCE_CACHE:
        log.info("scoring the model's test split in %d orientations for the percentiles",
                 orientations)
        table = _reference_scores(model, info["images"], out=None, device=device,
                                  orientations=orientations, cluster=cluster)
        _REFERENCE_CACHE.clear()
        _REFERENCE_CACHE[key] = table
    return _REFERENCE_CACHE[key]


def _split_rows(model: Path, images: str | os.PathLike, split: str | None,
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The catalogue of ``images`` and the rows to score, without reading any image.

    All rows, or only those of ``split`` of the model's own split when given.
    """
    catalog = _imageset.read_catalog(images)
    ids = np.asarray(catalog["object_id"])
    if split is None:
        return catalog, np.arange(len(ids))
    if split not in ("train", "validation", "test"):
        msg = f"split must be train, validation or test, got {split!r}"
        raise ConfigError(msg)
    wanted = set(json.loads((model / "split.json").read_text())[split])
    rows = np.flatnonzero([int(i) in wanted for i in ids])
    if not rows.size:
        msg = f"{images} holds none of the model's {split} split; pass the training image set"
        raise ConfigError(msg)
    return catalog, rows


def _read_checked(images: str | os.PathLike, info: dict[str, Any],
                  rows: np.ndarray | None) -> Any:
    """Rows ``rows`` of ``images`` (all when None), checked against the model's bands and stamp."""
    s = _imageset.read(images, index=rows)
    if list(s.bands) != list(info["bands"]) or s.images.shape[-1] != info["stamp_size"]:
        msg = (f"{images}: bands {list(s.bands)} / stamp {s.images.shape[-1]} differ from the "
               f"model's {info['bands']} / {info['stamp_size']}; render with the same survey "
               "bands and stamp size")
        raise ConfigError(msg)
    return s


def _prepare(s: Any, info: dict[str, Any]) -> np.ndarray:
    """The model's view of the images (masked pixels filled)."""
    from .data import prepared_images

    return prepared_images(s, sigma=np.asarray(info["noise_sigma"]), seed=int(info["seed"]))


def _chunk_size(n: int, workers: int) -> int:
    """Images per cluster task: four tasks per worker, within the chunk limits."""
    return int(min(_CHUNK_MAX, max(_CHUNK_MIN, -(-n // (4 * max(1, workers))))))


def _score(model: Path, info: dict[str, Any], x: np.ndarray, *,
           device: str, batch_size: int | str, progress: bool, precision: str,
           use_torch_compile: bool, orientations: int = 1) -> dict[str, np.ndarray]:
    """Per-member scores of the prepared images ``x``, in this process.

    A model with a background also needs each image's footprint
    (:func:`~simcompare.density.scores.footprint_mask`), found here for the whole set; a
    distributed run scores file slices instead (:func:`_score_rows`).
    """
    from ..inference import CALIBRATION_IMAGES, resolve_device
    from .scores import footprint_mask

    sigma = np.asarray(info["noise_sigma"])
    with_footprint = any("background" in m for m in info["members"])
    calib = np.ascontiguousarray(x[:CALIBRATION_IMAGES])
    footprint = footprint_mask(x, sigma=sigma) if with_footprint else None
    dev = resolve_device(device)
    scorers = _load_scorers(model, info, dev, precision, calib, use_torch_compile)
    return _score_members(scorers, x, footprint, batch_size, progress, orientations)


def _score_rows(model: Path, info: dict[str, Any], images: Path, rows: np.ndarray, *,
                head: Any, device: str, batch_size: int | str, progress: bool, precision: str,
                use_torch_compile: bool, cluster: Any, orientations: int = 1,
                ) -> dict[str, np.ndarray]:
    """Per-member scores of ``rows`` (not empty) of the file ``images``, on the cluster.

    Each task reads and prepares its own slice of the file (:func:`_score_chunk`), so no
    image travels through the scheduler; this process holds only ``head``, the first
    rows' ImageSet, on which the precision is calibrated.
    """
    from .._progress import progress as _progress
    from ..cluster import batched

    _check_device_name(device)
    sigma = np.asarray(info["noise_sigma"])
    seed = int(info["seed"])
    with_footprint = any("background" in m for m in info["members"])
    calib = np.ascontiguousarray(_prepare(head, info))
    size = _chunk_size(len(rows), cluster.n_workers)
    path = str(Path(images).resolve())
    chunks = [{"path": path, "rows": np.asarray(c), "sigma": sigma, "seed": seed}
              for c in batched(rows.tolist(), size)]
    stamp = (model / "training.json").stat().st_mtime_ns
    log.info("scoring %d images in %d file slices on %d workers (%d with a GPU)", len(rows),
             len(chunks), cluster.n_workers, cluster.gpu_workers())
    parts = list(_progress(
        cluster.map(_score_chunk, chunks, str(model), stamp, str(device), batch_size, precision,
                    calib, use_torch_compile, sigma if with_footprint else None, orientations,
                    name="evaluate"),
        desc="evaluate", total=len(chunks), enable=progress, unit="slice"))
    return {key: np.concatenate([p[key] for p in parts], axis=-1) for key in parts[0]}


def _spread(a: np.ndarray) -> np.ndarray:
    """Sample standard deviation across members (axis 0); NaN for a single member."""
    return a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1], np.nan)


def _finite(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


def _ensemble_columns(scores: dict[str, np.ndarray], *, n_dim: int,
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Ensemble means and spreads of the members' scores; the name of the percentile score.

    Returns ``(means, spreads, column)``: the score columns before ``percentile`` and
    those after it, in table order, and the column the percentile is of.
    """
    main_a = scores["main"]
    lp = _finite(main_a.mean(axis=0))
    nan = np.full(len(lp), np.nan)
    lpb = llr = llr_fp = llr_pk = nan
    lpb_std = llr_std = llr_fp_std = llr_pk_std = nan
    level_cols: dict[str, np.ndarray] = {}
    back = "back" in scores
    if back:
        back_a = scores["back"]
        llr_a = main_a - back_a
        foot_a, peak_a = scores["foot"], scores["peak"]
        lpb, llr, llr_fp = (_finite(a.mean(axis=0)) for a in (back_a, llr_a, foot_a))
        llr_pk = _finite(scores["peak_mean_map"])
        lpb_std, llr_std, llr_fp_std = _spread(back_a), _spread(llr_a), _spread(foot_a)
        llr_pk_std = _spread(peak_a)
        levels = scores["levels"]
        for j in range(levels.shape[1]):
            level_cols[f"llr_level{j}_nats"] = _finite(levels[:, j].mean(axis=0))
    flag = np.zeros(len(lp), np.int64)
    if back:
        flag[~np.isfinite(lpb)] = 2
    flag[~np.isfinite(lp)] = 1
    means = {"log_prob_nats": lp, "bits_per_dim": -lp / (n_dim * np.log(2.0)),
             "log_prob_background_nats": lpb, "llr_nats": llr, "llr_footprint_nats": llr_fp,
             "llr_peak_nats": llr_pk, **level_cols}
    spreads = {"log_prob_nats_std": _spread(main_a),
               "bits_per_dim_std": _spread(main_a) / (n_dim * np.log(2.0)),
               "log_prob_background_nats_std": lpb_std, "llr_nats_std": llr_std,
               "llr_footprint_nats_std": llr_fp_std, "llr_peak_nats_std": llr_pk_std,
               "n_members": np.full(len(lp), main_a.shape[0], np.int64),
               "score_flag": flag.astype(np.int64)}
    return means, spreads, PERCENTILE_COLUMN if back else "log_prob_nats"


def _stored_reference(model: Path, column: str) -> np.ndarray:
    """The model's reference scores (its held-out test split) of ``column``."""
    import pandas as pd

    ref_path = model / "reference_scores.parquet"
    if not ref_path.exists():
        msg = f"{ref_path} is missing; retrain the model (train writes it)"
        raise DataNotFoundError(msg)
    ref = pd.read_parquet(ref_path)
    if column not in ref.columns:
        msg = (f"{ref_path} has no {column} column (written by an older simcompare); "
               "retrain the model")
        raise DataFormatError(msg)
    return ref[column].to_numpy()


def _table(s: Any, means: dict[str, np.ndarray], percentile: np.ndarray,
           spreads: dict[str, np.ndarray]) -> Any:
    """The score table: ids, scores, percentile, spreads, then the catalogue columns."""
    import pandas as pd

    df = pd.DataFrame({"object_id": s.object_id.astype(np.int64), **means,
                       "percentile": percentile, **spreads})
    for key, col in s.catalog.items():
        if key == "object_id":
            continue
        name = key if key not in df.columns else f"catalog_{key}"
        df[name] = np.asarray(col)
    flag = spreads["score_flag"]
    n_bad = int((flag != 0).sum())
    if n_bad:
        log.warning("%d of %d images have non-finite scores (score_flag != 0)", n_bad, len(df))
    return df
