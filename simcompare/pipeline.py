"""``simcompare score``: render -> ingest -> train -> evaluate -> measure -> compare -> report.

Every stage writes into ``<workspace>/.simcompare/cache/<stage>/<key>/``, where ``key``
hashes the stage's own configuration together with the keys of the stages it reads
from. A stage whose output is complete is reused, so a second identical run only
re-links the run folder and rewrites the report. The run folder
``<workspace>/.simcompare/runs/<sim>_<survey>/run.json`` names every artefact; the
report reads nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._io import write_json_atomic
from ._version import __version__
from .config import ScoreConfig, SimDescriptor, SurveyDescriptor
from .errors import ConfigError
from .registry import find_sim, find_survey, list_sims, list_surveys

__all__ = ["cache_root", "file_sha256", "list_all", "score", "stage_key"]

log = logging.getLogger(__name__)

#: Packages whose versions every run records.
VERSIONED_PACKAGES = (
    "numpy", "scipy", "torch", "normflows", "illustris_python", "galsim", "speclite",
    "bagpipes", "statmorph", "photutils", "astropy", "h5py", "pandas", "pyarrow",
    "matplotlib", "jinja2", "numba", "dask",
)


def cache_root(workspace: str | os.PathLike) -> Path:
    """The cache folder of a workspace (``<workspace>/.simcompare``)."""
    return Path(workspace) / ".simcompare"


def stage_key(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable stage configuration."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _descriptor_text(desc: SimDescriptor | SurveyDescriptor) -> str:
    try:
        return Path(desc.source).read_text()
    except OSError:
        return json.dumps(dataclasses.asdict(desc), sort_keys=True, default=str)


def package_versions() -> dict[str, str]:
    """Installed versions of simcompare's main dependencies (without importing them)."""
    from importlib import metadata

    names = {"illustris_python": "illustris-python", "dask": "dask"}
    out = {"python": platform.python_version(), "simcompare": __version__}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(names.get(pkg, pkg))
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@contextmanager
def _stage(
    name: str, timings: dict[str, float], cached: Callable[[], bool],
    reused: dict[str, bool] | None = None,
) -> Iterator[bool]:
    """Time one stage and log its duration; yields whether its output is cached."""
    t0 = time.perf_counter()
    is_cached = cached()
    if reused is not None:
        reused[name] = is_cached
    yield is_cached
    dt = time.perf_counter() - t0
    timings[name] = round(dt, 3)
    log.info("stage %-10s %7.1f s%s", name, dt, "  (cached)" if is_cached else "")


def _complete(marker: Path) -> bool:
    return marker.exists()


def _mark_complete(marker: Path, info: Mapping[str, Any]) -> None:
    write_json_atomic(marker, info)




def _check_options(cfg: ScoreConfig, survey: SurveyDescriptor) -> None:
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        msg = f"--device must be auto, cpu or cuda (got {cfg.device!r})"
        raise ConfigError(msg)
    if cfg.background not in ("sersic", "none"):
        msg = f"--background must be 'sersic' or 'none' (got {cfg.background!r})"
        raise ConfigError(msg)
    if cfg.background_conditions not in ("broad", "survey"):
        msg = ("--background-conditions must be 'broad' or 'survey' "
               f"(got {cfg.background_conditions!r})")
        raise ConfigError(msg)
    if cfg.noise not in ("survey", "none", "blank-sky"):
        msg = f"--noise must be 'survey', 'none' or 'blank-sky' (got {cfg.noise!r})"
        raise ConfigError(msg)
    unknown = [b for b in cfg.bands if b not in survey.bands]
    if unknown:
        msg = f"band(s) {unknown} are not bands of survey {survey.name!r} ({', '.join(survey.bands)})"
        raise ConfigError(msg)
    for name in ("epochs", "batch_size", "levels", "blocks", "hidden", "workers", "n_bootstrap",
                 "ensemble"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            msg = f"--{name.replace('_', '-')} must be at least 1 (got {value})"
            raise ConfigError(msg)
    stamp = cfg.stamp_size or survey.stamp_size
    if stamp % (2 ** (cfg.levels or 1)):
        msg = (f"stamp size {stamp} must be divisible by 2**levels = {2 ** cfg.levels}; "
               "change --stamp-size or --levels")
        raise ConfigError(msg)
    if cfg.n_galaxies is not None and cfg.n_galaxies < 1:
        msg = f"--n-galaxies must be at least 1 (got {cfg.n_galaxies})"
        raise ConfigError(msg)


def score(config: ScoreConfig) -> Path:
    """Run the whole comparison of one simulation against one survey.

    Parameters
    ----------
    config : ScoreConfig
        Options; ``None`` values take the simulation's ``[score_defaults]`` and then the
        real defaults.

    Returns
    -------
    Path
        The report folder, ``<workspace>/reports/<sim>_<survey>/``.
    """
    workspace = Path(config.workspace).resolve()
    sim = find_sim(config.sim, workspace=workspace)
    survey = find_survey(config.survey, workspace=workspace)
    cfg = config.resolved(sim.score_defaults)
    _check_options(cfg, survey)
    stamp = cfg.stamp_size or survey.stamp_size
    bands = tuple(cfg.bands) or survey.bands
    root = cache_root(workspace)
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}
    t_start = time.perf_counter()
    versions = package_versions()

    # 1. render the simulation ------------------------------------------------------
    render_cfg = {
        "stage": "render", "version": __version__, "sim": _descriptor_text(sim),
        "survey": _descriptor_text(survey), "snapshot": cfg.snapshot, "n_galaxies": cfg.n_galaxies,
        "base_path": cfg.base_path, "stamp": stamp, "bands": bands, "noise": cfg.noise,
        "seed": cfg.seed,
    }
    if sim.kind == "images":  # published images: the files themselves are the input
        from .sims.images import image_fingerprint

        render_cfg["images"] = image_fingerprint(sim, workspace=workspace)
    render_key = stage_key(render_cfg)
    render_dir = root / "cache" / "render" / render_key
    mocks = render_dir / "mocks.h5"
    with _stage("render", timings, lambda: _complete(render_dir / "done.json"), reused) as cached:
        if not cached:
            from .mock import render

            render(
                sim, survey, out=mocks, snapshot=cfg.snapshot, n_galaxies=cfg.n_galaxies,
                base_path=cfg.base_path, workspace=workspace, stamp_size=stamp, bands=bands,
                noise=cfg.noise, seed=cfg.seed, workers=cfg.workers, scheduler=cfg.scheduler,
                progress=cfg.progress,
            )
            _mark_complete(render_dir / "done.json", render_cfg)

    # 2. the observed sample --------------------------------------------------------
    obs_cfg = {
        "stage": "observed", "version": __version__, "survey": _descriptor_text(survey),
        "stamp": stamp, "bands": bands,
    }
    obs_key = stage_key(obs_cfg)
    obs_dir = root / "cache" / "observed" / obs_key
    observed = obs_dir / "observed.h5"
    with _stage("observed", timings, lambda: _complete(obs_dir / "done.json"), reused) as cached:
        if not cached:
            from .observed import load_sample

            load_sample(survey, out=observed, workspace=workspace, stamp_size=stamp, bands=bands,
                        progress=cfg.progress)
            _mark_complete(obs_dir / "done.json", obs_cfg)

    # 3. train the density model (and the background model) -------------------------
    train_cfg = {
        "stage": "train", "version": __version__, "observed": obs_key, "levels": cfg.levels,
        "blocks": cfg.blocks, "hidden": cfg.hidden, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "background": cfg.background,
        "background_conditions": cfg.background_conditions, "ensemble": cfg.ensemble,
    }
    train_key = stage_key(train_cfg)
    model_dir = root / "cache" / "train" / train_key
    with _stage("train", timings, lambda: _complete(model_dir / "done.json"), reused) as cached:
        if not cached:
            from .density import train

            train(
                observed, out=model_dir, levels=cfg.levels, blocks=cfg.blocks, hidden=cfg.hidden,
                epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                device=cfg.device, background=cfg.background,
                background_conditions=cfg.background_conditions, ensemble=cfg.ensemble,
                resume=model_dir.exists(),
                progress=cfg.progress,
            )
            _mark_complete(model_dir / "done.json", train_cfg)

    # 4. score simulated and held-out observed images --------------------------------
    eval_key = stage_key({"stage": "evaluate", "train": train_key, "render": render_key})
    eval_dir = root / "cache" / "evaluate" / eval_key
    sim_scores = eval_dir / "sim_scores.parquet"
    # train() already scored the held-out observed test split (for percentiles)
    ref_scores = model_dir / "reference_scores.parquet"
    with _stage("evaluate", timings, lambda: _complete(eval_dir / "done.json"), reused) as cached:
        if not cached:
            from .density import evaluate

            evaluate(model_dir, mocks, out=sim_scores, device=cfg.device, progress=cfg.progress)
            _mark_complete(eval_dir / "done.json", {"train": train_key, "render": render_key})

    # 5. classical morphology on the same stamps -------------------------------------
    # keyed on the held-out test ids, not the whole training stage: another background or
    # architecture with the same split reuses the measurements
    test_ids = sorted(json.loads((model_dir / "split.json").read_text())["test"])
    morph_key = stage_key({"stage": "morphology", "version": __version__, "render": render_key,
                           "observed": obs_key, "test_ids": stage_key({"ids": test_ids}),
                           "max": cfg.morphology_max, "seed": cfg.seed})
    morph_dir = root / "cache" / "morphology" / morph_key
    morph_sim = morph_dir / "morphology_sim.parquet"
    morph_ref = morph_dir / "morphology_reference.parquet"
    observed_test = morph_dir / "observed_test.h5"
    with _stage("morphology", timings, lambda: _complete(morph_dir / "done.json"), reused) as cached:
        if not cached:
            from .morphology import measure

            _write_test_split(observed, model_dir / "split.json", observed_test)
            measure(mocks, out=morph_sim, max_images=cfg.morphology_max, workers=cfg.workers,
                    seed=cfg.seed, progress=cfg.progress)
            measure(observed_test, out=morph_ref, max_images=cfg.morphology_max,
                    workers=cfg.workers, seed=cfg.seed, progress=cfg.progress)
            _mark_complete(morph_dir / "done.json", {"key": morph_key})

    # 6. population statistics -------------------------------------------------------
    cmp_cfg = {"stage": "compare", "version": __version__, "evaluate": eval_key,
               "morphology": morph_key, "n_bootstrap": cfg.n_bootstrap, "n_null": cfg.n_null,
               "seed": cfg.seed}
    cmp_key = stage_key(cmp_cfg)
    cmp_dir = root / "cache" / "compare" / cmp_key
    summary_path = cmp_dir / "summary.json"
    with _stage("compare", timings, lambda: _complete(cmp_dir / "done.json"), reused) as cached:
        if not cached:
            from .comparison import compare

            column = "llr_nats" if cfg.background != "none" else "log_prob_nats"
            summary = compare(
                sim_scores, ref_scores, column=column, n_bootstrap=cfg.n_bootstrap,
                n_null=cfg.n_null, seed=cfg.seed, morphology=morph_sim,
                morphology_reference=morph_ref,
            )
            write_json_atomic(summary_path, summary)
            _mark_complete(cmp_dir / "done.json", cmp_cfg)

    # 7. the run folder and the report ----------------------------------------------
    run_dir = root / "runs" / f"{sim.name}_{survey.name}"
    report_dir = workspace / "reports" / f"{sim.name}_{survey.name}"
    hashes = {
        "sim_descriptor": hashlib.sha256(_descriptor_text(sim).encode()).hexdigest(),
        "survey_descriptor": hashlib.sha256(_descriptor_text(survey).encode()).hexdigest(),
        "mocks": _cached_sha(mocks), "observed": _cached_sha(observed),
    }
    run = {
        "schema": "simcompare.run", "schema_version": 1,
        "sim": sim.name, "sim_title": sim.title, "survey": survey.name, "survey_title": survey.title,
        "config": dataclasses.asdict(cfg) | {"workspace": "."},
        "stage_keys": {"render": render_key, "observed": obs_key, "train": train_key,
                       "evaluate": eval_key, "morphology": morph_key, "compare": cmp_key},
        "paths": {
            "mocks": str(mocks), "observed": str(observed), "observed_test": str(observed_test),
            "model": str(model_dir), "sim_scores": str(sim_scores),
            "reference_scores": str(ref_scores), "summary": str(summary_path),
            "morphology_sim": str(morph_sim), "morphology_reference": str(morph_ref),
        },
        "timings_s": timings,
        "cached": reused,
        "provenance": {"simcompare": __version__, "versions": versions, "input_hashes": hashes,
                       "seeds": {"global": cfg.seed, "bootstrap": cfg.seed}},
    }
    write_json_atomic(run_dir / "run.json", run)
    with _stage("report", timings, lambda: False):
        from .reporting import write_index, write_report

        write_report(run_dir, out=report_dir)
        write_index(workspace / "reports")
    timings["total"] = round(time.perf_counter() - t_start, 3)
    run["timings_s"] = timings
    write_json_atomic(run_dir / "run.json", run)
    log.info("report written to %s", report_dir / "index.html")
    return report_dir


def _cached_sha(path: Path) -> str:
    """sha256 of ``path``, cached beside it keyed by size and mtime."""
    stat = path.stat()
    memo = path.with_name(path.name + ".sha256.json")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if memo.exists():
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp:
            return data["sha256"]
    digest = file_sha256(path)
    memo.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def _write_test_split(observed: Path, split_json: Path, out: Path) -> None:
    """Write the held-out observed test split as its own ImageSet (for morphology, galleries)."""
    import numpy as np

    from . import imageset

    split = json.loads(split_json.read_text())
    test_ids = np.asarray(split["test"], dtype=np.int64)
    ids = imageset.read_catalog(observed)["object_id"]
    index = np.flatnonzero(np.isin(ids, test_ids))
    imageset.write(out, imageset.read(observed, index=index))


def list_all(*, workspace: str | os.PathLike = ".") -> dict[str, Any]:
    """Simulations, surveys and cached runs visible from ``workspace``."""
    workspace = Path(workspace)
    runs = {}
    runs_dir = cache_root(workspace) / "runs"
    if runs_dir.is_dir():
        for run_json in sorted(runs_dir.glob("*/run.json")):
            try:
                data = json.loads(run_json.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            runs[run_json.parent.name] = {
                "sim": data.get("sim"), "survey": data.get("survey"),
                "total_s": data.get("timings_s", {}).get("total"),
            }
    return {
        "sims": {k: str(v) for k, v in list_sims(workspace=workspace).items()},
        "surveys": {k: str(v) for k, v in list_surveys(workspace=workspace).items()},
        "runs": runs,
    }


def clear_cache(*, workspace: str | os.PathLike = ".") -> None:
    """Delete every cached stage of ``workspace`` (the reports stay)."""
    shutil.rmtree(cache_root(workspace) / "cache", ignore_errors=True)
